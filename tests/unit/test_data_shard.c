/* Token shards and the loader, on shards this test writes itself from the
 * format description in docs/file-formats.md (so the reader is checked
 * against the document, not against its own writer).
 *
 * Proves: a well-formed shard opens and its documents read back; every
 * single-byte change of the header, a flipped bit anywhere in the payload,
 * truncation at any of many lengths and trailing bytes are refused with a
 * reason (and never crash); the loader cuts (N-1)/T windows, visits each
 * once per epoch in a seeded order that differs between epochs and seeds,
 * masks targets exactly where the mask is 0; w ranks of B rows read exactly
 * the rows 1 rank of w*B reads, across epoch boundaries; a saved state
 * resumes the exact same stream; data smaller than a window is an error. */
#include "data.h"
#include "fw_err.h"
#include "fw_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- an independent writer, straight from docs/file-formats.md ---- */

static uint64_t s_doc_hash(const unsigned char *b, size_t L) {
    uint64_t h = 0x0046575348415244ull;
    for (size_t i = 0; i < L; i += 8) {
        uint64_t w = 0;
        for (size_t k = 0; k < 8 && i + k < L; k++) w |= (uint64_t)b[i + k] << (8 * k);
        h ^= w, h *= 0x9E3779B97F4A7C15ull, h ^= h >> 29;
    }
    h ^= (uint64_t)L;
    h ^= h >> 33, h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 33, h *= 0xC4CEB9FE1A85EC53ull;
    return h ^ (h >> 33);
}

static void s_le(unsigned char *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* Build a shard image in memory; caller frees. */
static unsigned char *s_build(const int32_t *tok, const uint8_t *mask, size_t n,
                              const uint64_t *offs, size_t ndocs, uint32_t vocab, int32_t eot,
                              size_t *len) {
    size_t mask_off = 96 + 4 * n, offs_off = (mask_off + n + 7) / 8 * 8;
    size_t total = offs_off + 8 * (ndocs + 1);
    unsigned char *b = calloc(1, total);
    memcpy(b, "FWSHARD\0", 8);
    s_le(b + 8, 1, 4);
    s_le(b + 12, 96, 4);
    s_le(b + 16, ndocs, 8);
    s_le(b + 24, n, 8);
    s_le(b + 32, vocab, 4);
    s_le(b + 36, (uint32_t)eot, 4);
    s_le(b + 40, 96, 8);
    s_le(b + 48, mask_off, 8);
    s_le(b + 56, offs_off, 8);
    s_le(b + 64, total, 8);
    uint64_t loss = 0;
    for (size_t i = 0; i < n; i++) {
        s_le(b + 96 + 4 * i, (uint32_t)tok[i], 4);
        b[mask_off + i] = mask[i];
        loss += mask[i];
    }
    s_le(b + 72, loss, 8);
    for (size_t d = 0; d <= ndocs; d++) s_le(b + offs_off + 8 * d, offs[d], 8);
    /* checksum: payload, then header bytes 0..79 */
    size_t L = total - 96 + 80;
    unsigned char *stream = malloc(L);
    memcpy(stream, b + 96, total - 96);
    memcpy(stream + total - 96, b, 80);
    s_le(b + 80, s_doc_hash(stream, L), 8);
    free(stream);
    *len = total;
    return b;
}

static void s_put(const char *path, const unsigned char *b, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    if (len) fwrite(b, 1, len, f);
    fclose(f);
}

static char *g_dir;
static char g_path[600];

/* N tokens 0..N-1 (the id is the position, vocab N+1), docs of 7 tokens. */
static unsigned char *s_counting_shard(size_t n, int mask_every, size_t *len) {
    int32_t *tok = malloc(n * sizeof *tok);
    uint8_t *mask = malloc(n);
    size_t ndocs = (n + 6) / 7;
    uint64_t *offs = malloc((ndocs + 1) * sizeof *offs);
    for (size_t i = 0; i < n; i++) {
        tok[i] = (int32_t)i;
        mask[i] = mask_every && i % (size_t)mask_every == 0 ? 0 : 1;
    }
    for (size_t d = 0; d <= ndocs; d++) offs[d] = d * 7 < n ? d * 7 : n;
    unsigned char *b = s_build(tok, mask, n, offs, ndocs, (uint32_t)n + 1, -1, len);
    free(tok), free(mask), free(offs);
    return b;
}

static fw_shard *s_open_image(const unsigned char *b, size_t len) {
    s_put(g_path, b, len);
    fw_err_clear();
    return fw_shard_open(g_path);
}

static void test_open_and_docs(void) {
    size_t len;
    unsigned char *b = s_counting_shard(100, 0, &len);
    fw_shard *s = s_open_image(b, len);
    REQUIRE(s);
    CHECK_EQ_INT(fw_shard_ntokens(s), 100);
    CHECK_EQ_INT(fw_shard_ndocs(s), 15);
    const int32_t *ids;
    const uint8_t *mask;
    size_t n;
    CHECK_EQ_INT(fw_shard_doc(s, 3, &ids, &mask, &n), 0);
    CHECK_EQ_INT(n, 7);
    CHECK_EQ_INT(ids[0], 21);
    CHECK_EQ_INT(mask[0], 1);
    CHECK_EQ_INT(fw_shard_doc(s, 14, &ids, &mask, &n), 0);
    CHECK_EQ_INT(n, 2); /* 98, 99 */
    CHECK_EQ_INT(ids[1], 99);
    CHECK_EQ_INT(fw_shard_doc(s, 15, &ids, &mask, &n), FW_EINVAL);
    fw_shard_close(&s);
    CHECK(s == NULL);
    fw_shard_close(&s);
    free(b);
    CHECK(fw_shard_open("/nonexistent/shard.bin") == NULL);
    CHECK(strstr(fw_err_detail(), "/nonexistent/shard.bin") != NULL);
}

static void s_refused(const unsigned char *b, size_t len, const char *needle, const char *what) {
    fw_shard *s = s_open_image(b, len);
    CHECKF(s == NULL, "%s: accepted", what);
    if (needle)
        CHECKF(strstr(fw_err_detail(), needle) != NULL, "%s: detail \"%s\" lacks \"%s\"", what,
               fw_err_detail(), needle);
    fw_shard_close(&s);
}

static void test_corruption(void) {
    size_t len;
    unsigned char *good = s_counting_shard(100, 3, &len);
    unsigned char *b = malloc(len + 16);
    char what[64];

    /* Every byte of the header, changed, is noticed. */
    for (size_t i = 0; i < 96; i++) {
        memcpy(b, good, len);
        b[i] ^= 0x40;
        snprintf(what, sizeof what, "header byte %zu", i);
        s_refused(b, len, NULL, what);
    }
    /* A flipped bit anywhere in the payload: a token still in range, a mask
     * byte, padding, an offset. */
    for (size_t i = 96; i < len; i += 5) {
        memcpy(b, good, len);
        b[i] ^= 0x01;
        snprintf(what, sizeof what, "payload byte %zu", i);
        s_refused(b, len, NULL, what);
    }
    memcpy(b, good, len);
    b[96 + 4 * 10] ^= 0x01; /* token 10 -> 11: valid id, wrong data */
    s_refused(b, len, "checksum", "token bit");
    /* Specific reasons. */
    memcpy(b, good, len);
    memcpy(b, "FWSHARX\0", 8);
    s_refused(b, len, "bad magic", "magic");
    memcpy(b, good, len);
    b[8] = 2;
    s_refused(b, len, "version 2", "version");
    memcpy(b, good, len);
    s_le(b + 96 + 4 * 5, 5000, 4);
    s_refused(b, len, "token 5 has id 5000", "id");
    memcpy(b, good, len);
    s_le(b + 96 + 4 * 5, (uint64_t)(uint32_t)-3, 4);
    s_refused(b, len, "token 5 has id -3", "negative id");
    memcpy(b, good, len);
    b[96 + 400 + 7] = 2;
    s_refused(b, len, "mask of token 7", "mask");
    memcpy(b, good, len);
    size_t offs_off = (96 + 500 + 7) / 8 * 8;
    s_le(b + offs_off + 8 * 3, 30, 8); /* doc 3 starts after doc 4 (28) */
    s_refused(b, len, "goes backwards", "offsets");
    memcpy(b, good, len);
    s_le(b + 24, 101, 8); /* ntokens off by one */
    s_refused(b, len, "do not match", "ntokens");
    memcpy(b, good, len);
    s_le(b + 16, (uint64_t)1 << 62, 8);
    s_refused(b, len, "do not match", "huge ndocs");
    /* Truncation at many lengths, and trailing bytes. */
    for (size_t cut = 0; cut < len; cut += (cut < 100 ? 1 : 37)) {
        snprintf(what, sizeof what, "cut at %zu", cut);
        s_refused(good, cut, cut < 96 ? "shorter than" : "truncated", what);
    }
    memcpy(b, good, len);
    memset(b + len, 0, 16);
    s_refused(b, len + 8, "trailing bytes", "trailing");
    /* And the untouched image still opens (the loop above did not lie). */
    fw_shard *s = s_open_image(good, len);
    CHECK(s != NULL);
    fw_shard_close(&s);
    free(b), free(good);
}

/* ---- loader ---- */

static fw_shard *s_counting(size_t n, int mask_every) {
    size_t len;
    unsigned char *b = s_counting_shard(n, mask_every, &len);
    fw_shard *s = s_open_image(b, len);
    free(b);
    return s;
}

static void test_windows_and_targets(void) {
    const int T = 8, B = 3;
    fw_shard *s = s_counting(1000, 5); /* mask 0 at multiples of 5 */
    REQUIRE(s);
    fw_loader *l = fw_loader_new(s, B, T, 42, 0, 1);
    REQUIRE(l);
    size_t nwin = fw_loader_windows(l);
    CHECK_EQ_INT(nwin, 999 / 8); /* 124 */
    int32_t in[3 * 8], tg[3 * 8];
    char *seen = calloc(nwin, 1);
    size_t rows = 0, bad = 0;
    /* 124 windows / 3 rows: 41 full batches in epoch 0, the 42nd crosses. */
    for (int step = 0; step < 41; step++) {
        CHECK_EQ_INT(fw_loader_next(l, in, tg), 0);
        for (int b = 0; b < B; b++, rows++) {
            int32_t start = in[b * T];
            if (start % T != 0 || (size_t)(start / T) >= nwin) {
                bad++;
                continue;
            }
            seen[start / T]++;
            for (int t = 0; t < T; t++) {
                int32_t nx = start + t + 1;
                bad += in[b * T + t] != start + t;
                bad += tg[b * T + t] != (nx % 5 == 0 ? -1 : nx);
            }
        }
    }
    CHECK_EQ_INT(bad, 0);
    size_t once = 0;
    for (size_t i = 0; i < nwin; i++) once += seen[i] == 1;
    CHECK_EQ_INT(once, 123); /* all but one window, none twice */
    fw_loader_state st = fw_loader_get_state(l);
    CHECK(st.seed == 42 && st.epoch == 0 && st.cursor == 123);
    CHECK_EQ_INT(fw_loader_next(l, in, tg), 0); /* last window of epoch 0 + 2 of epoch 1 */
    CHECK_EQ_INT(seen[in[0] / T], 0);
    st = fw_loader_get_state(l);
    CHECK(st.epoch == 1 && st.cursor == 2);
    free(seen);
    fw_loader_destroy(&l);
    CHECK(l == NULL);
    fw_shard_close(&s);
}

/* Window order of a whole epoch. */
static void s_epoch_order(const fw_shard *s, uint64_t seed, uint64_t epoch, int32_t *order) {
    fw_loader *l = fw_loader_new(s, 1, 4, seed, 0, 1);
    fw_loader_state st = {seed, epoch, 0};
    fw_loader_set_state(l, &st);
    int32_t in[4], tg[4];
    for (size_t i = 0; i < fw_loader_windows(l); i++) {
        fw_loader_next(l, in, tg);
        order[i] = in[0] / 4;
    }
    fw_loader_destroy(&l);
}

static void test_shuffle(void) {
    fw_shard *s = s_counting(401, 0); /* 100 windows of T=4 */
    REQUIRE(s);
    int32_t a[100], b[100], c[100], d[100];
    s_epoch_order(s, 7, 0, a);
    s_epoch_order(s, 7, 0, b);
    s_epoch_order(s, 7, 1, c);
    s_epoch_order(s, 8, 0, d);
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(memcmp(a, c, sizeof a) != 0);
    CHECK(memcmp(a, d, sizeof a) != 0);
    int sorted = 1;
    for (int i = 0; i < 100; i++) sorted &= a[i] == i;
    CHECK(!sorted);
    fw_shard_close(&s);
}

static void test_ranks_match_single(void) {
    /* 3 ranks x B=4 vs 1 rank x 12 over 5 epochs of 37 windows (37 is not
     * a multiple of 12, so global batches straddle epochs). */
    const int T = 5, B = 4, W = 3;
    fw_shard *s = s_counting(37 * 5 + 1, 4);
    REQUIRE(s);
    fw_loader *one = fw_loader_new(s, W * B, T, 99, 0, 1);
    fw_loader *r[3];
    for (int i = 0; i < W; i++) r[i] = fw_loader_new(s, B, T, 99, i, W);
    REQUIRE(one && r[0] && r[1] && r[2]);
    CHECK_EQ_INT(fw_loader_windows(one), 37);
    int32_t gi[60], gt[60], ri[20], rt[20];
    size_t diff = 0;
    for (int step = 0; step < 16; step++) {
        fw_loader_next(one, gi, gt);
        for (int k = 0; k < W; k++) {
            fw_loader_next(r[k], ri, rt);
            diff += memcmp(ri, gi + k * B * T, sizeof ri) != 0;
            diff += memcmp(rt, gt + k * B * T, sizeof rt) != 0;
        }
    }
    CHECK_EQ_INT(diff, 0);
    fw_loader_state a = fw_loader_get_state(one), b = fw_loader_get_state(r[2]);
    CHECK(a.epoch == b.epoch && a.cursor == b.cursor && a.epoch == 16 * 12 / 37);
    fw_loader_destroy(&one);
    for (int i = 0; i < W; i++) fw_loader_destroy(&r[i]);
    fw_shard_close(&s);
}

static void test_resume(void) {
    const int T = 6, B = 5;
    fw_shard *s = s_counting(301, 0); /* 50 windows */
    REQUIRE(s);
    int32_t in[30], tg[30], in2[30], tg2[30];
    for (int k = 3; k <= 12; k += 9) { /* resume inside epoch 0 and inside epoch 1 */
        fw_loader *a = fw_loader_new(s, B, T, 1234, 0, 1);
        REQUIRE(a);
        for (int i = 0; i < k; i++) fw_loader_next(a, in, tg);
        fw_loader_state st = fw_loader_get_state(a);
        fw_loader *b = fw_loader_new(s, B, T, 555 /* overwritten by the state */, 0, 1);
        REQUIRE(b);
        CHECK_EQ_INT(fw_loader_set_state(b, &st), 0);
        size_t diff = 0;
        for (int i = 0; i < 25; i++) {
            fw_loader_next(a, in, tg);
            fw_loader_next(b, in2, tg2);
            diff += memcmp(in, in2, sizeof in) != 0 || memcmp(tg, tg2, sizeof tg) != 0;
        }
        CHECKF(diff == 0, "k=%d: %zu batches differ after resume", k, diff);
        fw_loader_state bad = {st.seed, st.epoch, 50};
        CHECK_EQ_INT(fw_loader_set_state(b, &bad), FW_EINVAL);
        CHECK(strstr(fw_err_detail(), "cursor 50") != NULL);
        fw_loader_destroy(&a);
        fw_loader_destroy(&b);
    }
    fw_shard_close(&s);
}

static void test_too_small_and_args(void) {
    fw_shard *s = s_counting(8, 0);
    REQUIRE(s);
    CHECK(fw_loader_new(s, 1, 8, 0, 0, 1) == NULL); /* needs 9 tokens */
    CHECK(strstr(fw_err_detail(), "fewer than one window") != NULL);
    fw_loader *l = fw_loader_new(s, 4, 7, 0, 0, 1); /* exactly one window, B > windows */
    REQUIRE(l);
    CHECK_EQ_INT(fw_loader_windows(l), 1);
    int32_t in[28], tg[28];
    CHECK_EQ_INT(fw_loader_next(l, in, tg), 0);
    CHECK(in[0] == 0 && in[7] == 0 && tg[6] == 7); /* the one window, four times */
    CHECK_EQ_INT(fw_loader_get_state(l).epoch, 4);
    fw_loader_destroy(&l);
    CHECK(fw_loader_new(s, 0, 4, 0, 0, 1) == NULL);
    CHECK(fw_loader_new(s, 1, 0, 0, 0, 1) == NULL);
    CHECK(fw_loader_new(s, 1, 4, 0, 2, 2) == NULL);
    CHECK(fw_loader_new(s, 1, 4, 0, 0, 0) == NULL);
    CHECK(fw_loader_new(NULL, 1, 4, 0, 0, 1) == NULL);
    fw_shard_close(&s);
}

int main(void) {
    g_dir = fw_test_tmpdir("data-shard");
    if (!g_dir) return 1;
    snprintf(g_path, sizeof g_path, "%s/s.bin", g_dir);
    RUN(test_open_and_docs);
    RUN(test_corruption);
    RUN(test_windows_and_targets);
    RUN(test_shuffle);
    RUN(test_ranks_match_single);
    RUN(test_resume);
    RUN(test_too_small_and_args);
    fw_test_rmtree(g_dir);
    free(g_dir);
    return fw_test_summary();
}
