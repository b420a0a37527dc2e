/* coord_lineage.c - LINEAGE_GET (placeholder until the graph is built). */
#include "coord.h"

#include "fw_err.h"

void coord_lineage_handle(coord_t *c, zframe_t *identity, const fw_msg_t *m,
                          const coord_token_t *tok) {
    (void)tok;
    coord_client_error(c, identity, m, FW_EUNSUPPORTED, 0, "lineage: not built yet");
}
