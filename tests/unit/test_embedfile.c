/* test_embedfile - the FWEMBED v1 header: what the writer puts where, and
 * that readers refuse anything else with FW_ECORRUPT naming the file. */
#include "fw_embedfile.h"
#include "fw_err.h"
#include "fw_test.h"

#include <string.h>

static void test_roundtrip(void) {
    unsigned char h[FW_EMBED_HDR];
    fw_embed_hdr_write(h, 768, 3);
    CHECK(memcmp(h, "FWEMBED\0", 8) == 0);
    CHECK_EQ_INT(h[8], 1);   /* version, little-endian */
    CHECK_EQ_INT(h[12], 0);  /* 768 = 0x300 */
    CHECK_EQ_INT(h[13], 3);
    CHECK_EQ_INT(h[16], 3);  /* rows */
    CHECK_EQ_INT(h[24], 56); /* data_off = 32 + 8 * 3 */
    fw_embed_hdr e;
    REQUIRE(fw_embed_hdr_read(h, 0, "m", &e) == 0);
    CHECK_EQ_INT(e.dim, 768);
    CHECK_EQ_INT(e.rows, 3);
    /* The exact size of 3 x 768 floats after the ids, and one byte off. */
    CHECK(fw_embed_hdr_read(h, 56 + 3 * 768 * 4, "m", &e) == 0);
    CHECK_EQ_INT(fw_embed_hdr_read(h, 56 + 3 * 768 * 4 - 1, "m.fwembed", &e), FW_ECORRUPT);
    CHECK(strstr(fw_err_detail(), "m.fwembed: 3 rows x 768 need 9272 bytes") != NULL);
}

static void test_refusals(void) {
    unsigned char h[FW_EMBED_HDR];
    fw_embed_hdr e;
    fw_embed_hdr_write(h, 4, 2);
    h[0] = 'X'; /* magic */
    CHECK_EQ_INT(fw_embed_hdr_read(h, 0, "a", &e), FW_ECORRUPT);
    CHECK(strstr(fw_err_detail(), "a: not an FWEMBED v1 file") != NULL);
    fw_embed_hdr_write(h, 4, 2);
    h[8] = 2; /* version */
    CHECK_EQ_INT(fw_embed_hdr_read(h, 0, "a", &e), FW_ECORRUPT);
    fw_embed_hdr_write(h, 4, 2);
    h[24] = 41; /* data_off that does not follow from rows */
    CHECK_EQ_INT(fw_embed_hdr_read(h, 0, "a", &e), FW_ECORRUPT);
}

int main(void) {
    RUN(test_roundtrip);
    RUN(test_refusals);
    return fw_test_summary();
}
