/* fw_embedfile.c - the FWEMBED v1 header (fw_embedfile.h). */
#include "fw_embedfile.h"

#include "fw_err.h"

#include <inttypes.h>
#include <string.h>

#define S_MAGIC "FWEMBED\0"

static void s_put(unsigned char *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t s_get(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

void fw_embed_hdr_write(unsigned char out[FW_EMBED_HDR], uint32_t dim, uint64_t rows) {
    memcpy(out, S_MAGIC, 8);
    s_put(out + 8, 1, 4);
    s_put(out + 12, dim, 4);
    s_put(out + 16, rows, 8);
    s_put(out + 24, FW_EMBED_HDR + 8 * rows, 8);
}

int fw_embed_hdr_read(const unsigned char in[FW_EMBED_HDR], uint64_t file_size, const char *what,
                      fw_embed_hdr *out) {
    uint32_t version = (uint32_t)s_get(in + 8, 4);
    uint64_t rows = s_get(in + 16, 8), data_off = s_get(in + 24, 8);
    if (memcmp(in, S_MAGIC, 8) != 0 || version != 1 || rows > FW_EMBED_MAX_ROWS ||
        data_off != FW_EMBED_HDR + 8 * rows)
        return fw_err_set(FW_ECORRUPT, "%s: not an FWEMBED v1 file", what);
    out->dim = (uint32_t)s_get(in + 12, 4);
    out->rows = rows;
    uint64_t need = data_off + rows * (uint64_t)out->dim * 4;
    if (file_size && file_size != need)
        return fw_err_set(FW_ECORRUPT, "%s: %" PRIu64 " rows x %u need %" PRIu64 " bytes, the "
                          "file has %" PRIu64, what, rows, out->dim, need, file_size);
    return 0;
}
