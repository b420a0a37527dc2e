/* test_engine_infer.c - generation and embedding on the CPU backend: the KV
 * cache against full forwards, chunked prefill and batched decode, sampling
 * (greedy, top-k, top-p, temperature, seeds) and sentence embeddings. */
#include "engine.h"
#include "fw_err.h"
#include "fw_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const fw_model_config k_cfg = {.n_layer = 2, .n_head = 4, .n_embd = 32, .n_ctx = 24,
                                      .vocab_size = 50, .layer_norm_eps = 1e-5f};
enum { V = 50 };

static fw_model *s_model(void) {
    fw_model *m = fw_model_new(&k_cfg, "cpu");
    if (!m) return NULL;
    fw_model_init_random(m, 8);
    /* Larger weights than GPT-2's init so that logits vary with the context
     * and a wrong cache entry shows. Not much larger: at 8x the full forward
     * itself changes by 1e-4 between T and T+4 rows (sgemm blocks rows
     * differently), at 3x by 1e-6, which leaves the 1e-5 check meaningful. */
    size_t np;
    float *p = fw_model_params(m, &np);
    for (size_t i = 0; i < np; i++) p[i] *= 3.0f;
    return m;
}

static double s_maxdiff(const float *a, const float *b, size_t n) {
    double d = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs(a[i] - b[i]) > d) d = fabs(a[i] - b[i]);
    return d;
}

/* Logits of the last position of ids[0..n) by a full forward. */
static void s_full_last(fw_model *m, const int32_t *ids, int n, float *out) {
    REQUIRE(fw_model_forward(m, ids, NULL, 1, n, NULL) == 0);
    REQUIRE(fw_model_get_logits(m, (size_t)n - 1, 1, out) == 0);
}

static void test_kv_matches_full_forward(void) {
    fw_model *m = s_model();
    REQUIRE(m);
    int32_t ids[24];
    uint64_t s = 3;
    for (int i = 0; i < 24; i++) ids[i] = (int32_t)(fw_test_rand(&s) % V);
    fw_kv_cache *c = fw_kv_cache_new(m, 1, 24);
    REQUIRE(c);
    float kv[V], full[V];
    REQUIRE(fw_model_prefill(m, c, 0, ids, 6, kv) == 0);
    CHECK_EQ_INT(fw_kv_cache_len(c, 0), 6);
    s_full_last(m, ids, 6, full);
    double worst = s_maxdiff(kv, full, V), spread = 0;
    for (int n = 7; n <= 24; n++) {
        REQUIRE(fw_model_decode(m, c, &ids[n - 1], NULL, kv) == 0);
        s_full_last(m, ids, n, full);
        double d = s_maxdiff(kv, full, V);
        if (d > worst) worst = d;
        for (int i = 0; i < V; i++)
            if (fabs(full[i]) > spread) spread = fabs(full[i]);
    }
    fprintf(stderr, "  kv vs full: max |diff| %.3g (logits up to %.3g)\n", worst, spread);
    CHECK(worst < 1e-5);
    CHECK(spread > 1.0); /* the test is not comparing near-zero numbers */
    /* the row is full now */
    CHECK(fw_model_decode(m, c, &ids[0], NULL, kv) == FW_ERESOURCE);
    CHECK(fw_model_prefill(m, c, 0, ids, 1, kv) == FW_ERESOURCE);
    fw_kv_cache_destroy(&c);
    CHECK(c == NULL);
    fw_model_destroy(&m);
}

static void test_chunked_prefill_and_batch(void) {
    fw_model *m = s_model();
    REQUIRE(m);
    int32_t a[10] = {1, 5, 9, 2, 7, 3, 3, 8, 0, 4}, b[6] = {11, 12, 13, 40, 41, 42};
    fw_kv_cache *c = fw_kv_cache_new(m, 3, 16);
    REQUIRE(c);
    float one[V], two[V], full[V];
    /* row 0: 4 + 3 + 3 tokens in chunks; row 2: 6 at once; row 1 unused */
    REQUIRE(fw_model_prefill(m, c, 0, a, 4, NULL) == 0);
    REQUIRE(fw_model_prefill(m, c, 0, a + 4, 3, one) == 0);
    s_full_last(m, a, 7, full);
    CHECK(s_maxdiff(one, full, V) < 1e-5);
    REQUIRE(fw_model_prefill(m, c, 0, a + 7, 3, one) == 0);
    REQUIRE(fw_model_prefill(m, c, 2, b, 6, two) == 0);
    s_full_last(m, b, 6, full);
    CHECK(s_maxdiff(two, full, V) < 1e-5);
    /* decoding row 1 while it is empty is an error; leave it inactive */
    int32_t next[3] = {6, 0, 14};
    float lg[3 * V];
    CHECK(fw_model_decode(m, c, next, NULL, lg) == FW_ESTATE);
    uint8_t active[3] = {1, 0, 1};
    REQUIRE(fw_model_decode(m, c, next, active, lg) == 0);
    CHECK_EQ_INT(fw_kv_cache_len(c, 0), 11);
    CHECK_EQ_INT(fw_kv_cache_len(c, 1), 0);
    CHECK_EQ_INT(fw_kv_cache_len(c, 2), 7);
    int32_t a2[11], b2[7];
    memcpy(a2, a, sizeof a);
    a2[10] = 6;
    memcpy(b2, b, sizeof b);
    b2[6] = 14;
    s_full_last(m, a2, 11, full);
    CHECK(s_maxdiff(lg, full, V) < 1e-5);
    s_full_last(m, b2, 7, full);
    CHECK(s_maxdiff(lg + 2 * V, full, V) < 1e-5);
    /* reset a row and reuse it for another sequence */
    fw_kv_cache_reset(c, 0);
    CHECK_EQ_INT(fw_kv_cache_len(c, 0), 0);
    REQUIRE(fw_model_prefill(m, c, 0, b, 6, one) == 0);
    s_full_last(m, b, 6, full);
    CHECK(s_maxdiff(one, full, V) < 1e-5);
    /* argument checks */
    CHECK(fw_model_prefill(m, c, 3, b, 1, one) == FW_EINVAL);
    int32_t badid = V;
    CHECK(fw_model_prefill(m, c, 1, &badid, 1, one) == FW_EINVAL);
    CHECK(fw_kv_cache_new(m, 1, 25) == NULL); /* beyond n_ctx */
    fw_kv_cache_destroy(&c);
    fw_model_destroy(&m);
}

/* Greedy generation twice from the same prompt gives the same tokens. */
static void test_greedy_deterministic(void) {
    fw_model *m = s_model();
    REQUIRE(m);
    int32_t out[2][12];
    for (int r = 0; r < 2; r++) {
        fw_kv_cache *c = fw_kv_cache_new(m, 1, 24);
        REQUIRE(c);
        int32_t prompt[4] = {3, 1, 4, 1};
        float lg[V];
        REQUIRE(fw_model_prefill(m, c, 0, prompt, 4, lg) == 0);
        fw_sampler g = {.temperature = 0};
        fw_rng rng;
        fw_rng_seed(&rng, (uint64_t)r + 100); /* greedy ignores the rng */
        for (int i = 0; i < 12; i++) {
            int id = fw_sample(lg, V, &g, &rng);
            REQUIRE(id >= 0);
            out[r][i] = id;
            if (i < 11) REQUIRE(fw_model_decode(m, c, &out[r][i], NULL, lg) == 0);
        }
        fw_kv_cache_destroy(&c);
    }
    CHECK(memcmp(out[0], out[1], sizeof out[0]) == 0);
    fw_model_destroy(&m);
}

static void test_sampling(void) {
    float lg[8] = {1.0f, 3.0f, 0.5f, 2.0f, 2.0f, -1.0f, 0.0f, 2.5f};
    fw_rng r;
    fw_rng_seed(&r, 1);
    fw_sampler greedy = {.temperature = 0};
    CHECK_EQ_INT(fw_sample(lg, 8, &greedy, &r), 1);
    fw_sampler k1 = {.temperature = 1.0f, .top_k = 1};
    CHECK_EQ_INT(fw_sample(lg, 8, &k1, &r), 1);
    float tie[3] = {2.0f, 5.0f, 5.0f};
    CHECK_EQ_INT(fw_sample(tie, 3, &greedy, &r), 1); /* lowest id among ties */

    /* top-k = 3: only ids 1, 7 and one of the 2.0s (id 3, ordered by id) */
    fw_sampler k3 = {.temperature = 1.0f, .top_k = 3};
    int seen[8] = {0};
    for (int i = 0; i < 3000; i++) seen[fw_sample(lg, 8, &k3, &r)]++;
    CHECK(seen[1] > 0 && seen[7] > 0 && seen[3] > 0);
    CHECK(seen[0] + seen[2] + seen[4] + seen[5] + seen[6] == 0);

    /* top-p on probabilities 0.5, 0.3, 0.15, 0.05 */
    float pl[4] = {logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f)};
    fw_sampler p7 = {.temperature = 1.0f, .top_p = 0.7f};
    fw_sampler p85 = {.temperature = 1.0f, .top_p = 0.85f};
    fw_sampler all = {.temperature = 1.0f};
    int s7[4] = {0}, s85[4] = {0}, sall[4] = {0};
    for (int i = 0; i < 4000; i++) {
        s7[fw_sample(pl, 4, &p7, &r)]++;
        s85[fw_sample(pl, 4, &p85, &r)]++;
        sall[fw_sample(pl, 4, &all, &r)]++;
    }
    CHECK(s7[2] == 0 && s7[3] == 0 && s7[0] > 0 && s7[1] > 0);
    CHECK(s85[3] == 0 && s85[2] > 0);
    /* plain sampling follows the probabilities (4000 draws: +-0.03 is > 4 sigma) */
    CHECK_NEAR(sall[0] / 4000.0, 0.5, 0.03);
    CHECK_NEAR(sall[1] / 4000.0, 0.3, 0.03);
    CHECK_NEAR(sall[3] / 4000.0, 0.05, 0.015);
    /* renormalised within the nucleus: 0.5 / 0.8 */
    CHECK_NEAR(s7[0] / 4000.0, 0.625, 0.03);
    /* low temperature sharpens */
    fw_sampler cold = {.temperature = 0.1f};
    int scold = 0;
    for (int i = 0; i < 500; i++) scold += fw_sample(pl, 4, &cold, &r) == 0;
    CHECK(scold > 495);

    /* seeds: same seed, same draws; different seed, different draws */
    fw_rng a, b;
    fw_rng_seed(&a, 42);
    fw_rng_seed(&b, 42);
    int same = 1, diff = 0;
    for (int i = 0; i < 200; i++) same &= fw_sample(lg, 8, &all, &a) == fw_sample(lg, 8, &all, &b);
    CHECK(same);
    fw_rng_seed(&a, 42);
    fw_rng_seed(&b, 43);
    for (int i = 0; i < 200; i++) diff += fw_sample(lg, 8, &all, &a) != fw_sample(lg, 8, &all, &b);
    CHECK(diff > 20);
    float nan_lg[2] = {0.0f, NAN};
    CHECK(fw_sample(nan_lg, 2, &all, &a) == FW_EINVAL);
    CHECK(fw_sample(lg, 0, &all, &a) == FW_EINVAL);
}

static int s_desc_then_id(const void *a, const void *b) {
    const float *x = a, *y = b; /* {logit, id} pairs */
    if (x[0] != y[0]) return x[0] > y[0] ? -1 : 1;
    return (x[1] > y[1]) - (x[1] < y[1]);
}

/* fw_sample selects and sorts only the candidates that can be drawn
 * (quickselect): on a large vocabulary with many tied logits, the tokens it
 * draws must be exactly the top-k / the nucleus of a full sort. */
static void test_sampling_large_vocab(void) {
    enum { NV = 2000 };
    static float lg[NV], pairs[NV][2];
    static int seen[NV];
    uint64_t x = 77;
    for (int i = 0; i < NV; i++) lg[i] = (float)(fw_test_rand(&x) % 50) * 0.25f; /* ~40 ties each */
    for (int i = 0; i < NV; i++) {
        pairs[i][0] = lg[i];
        pairs[i][1] = (float)i;
    }
    qsort(pairs, NV, sizeof pairs[0], s_desc_then_id);
    fw_rng r;
    fw_rng_seed(&r, 3);
    /* top-k 100 at a huge temperature: the 100 are near-uniform, so 6000
     * draws see every one of them (60 expected each) and nothing else */
    fw_sampler k100 = {.temperature = 1e4f, .top_k = 100};
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < 6000; i++) {
        int id = fw_sample(lg, NV, &k100, &r);
        REQUIRE(id >= 0 && id < NV);
        seen[id]++;
    }
    int in_topk = 0, outside = 0;
    for (int i = 0; i < NV; i++) {
        int rank_ok = 0;
        for (int j = 0; j < 100; j++) rank_ok |= (int)pairs[j][1] == i;
        if (rank_ok) in_topk += seen[i] > 0;
        else outside += seen[i];
    }
    CHECK_EQ_INT(in_topk, 100);
    CHECK_EQ_INT(outside, 0);
    /* top-p: 300 tokens at logit 0, the rest at -30 (mass ~1e-10): p = 0.499
     * keeps the 150 lowest ids of the 300 (ties go by id), past the first
     * 64-candidate selection */
    uint64_t y = 5;
    int n_hot = 0;
    for (int i = 0; i < NV; i++) {
        lg[i] = -30.0f;
        if (fw_test_rand(&y) % 6 == 0 && n_hot < 300) {
            lg[i] = 0.0f;
            n_hot++;
        }
    }
    REQUIRE(n_hot == 300);
    fw_sampler p499 = {.temperature = 1.0f, .top_p = 0.499f};
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < 8000; i++) seen[fw_sample(lg, NV, &p499, &r)]++;
    int hot = 0, kept = 0, wrong = 0;
    for (int i = 0; i < NV; i++) {
        int want = lg[i] == 0.0f && hot++ < 150;
        if (want) kept += seen[i] > 0;
        else wrong += seen[i];
    }
    CHECK_EQ_INT(kept, 150);
    CHECK_EQ_INT(wrong, 0);
}

static void test_rng(void) {
    fw_rng r;
    fw_rng_seed(&r, 7);
    double s = 0, s2 = 0, umin = 1, umax = 0;
    for (int i = 0; i < 20000; i++) {
        double u = fw_rng_uniform(&r);
        if (u < umin) umin = u;
        if (u > umax) umax = u;
        double z = fw_rng_normal(&r);
        s += z;
        s2 += z * z;
    }
    CHECK(umin >= 0.0 && umax < 1.0 && umin < 0.001 && umax > 0.999);
    CHECK_NEAR(s / 20000, 0.0, 0.03);
    CHECK_NEAR(s2 / 20000, 1.0, 0.04);
}

static void test_embedding(void) {
    fw_model *m = s_model();
    REQUIRE(m);
    enum { B = 3, T = 8, C = 32 };
    int32_t ids[B * T] = {1, 2, 3, 4, 5, 0, 0, 0,       /* len 5, padded with 0 */
                          1, 2, 3, 4, 5, 49, 48, 47,    /* same 5 tokens, other padding */
                          9, 8, 7, 6, 5, 4, 3, 2};      /* len 8 */
    int32_t lens[B] = {5, 5, 8};
    float e[B * C];
    REQUIRE(fw_model_embed(m, ids, lens, B, T, e) == 0);
    for (int b = 0; b < B; b++) {
        double n = 0;
        for (int c = 0; c < C; c++) n += (double)e[b * C + c] * e[b * C + c];
        CHECK_NEAR(sqrt(n), 1.0, 1e-6);
    }
    CHECK(s_maxdiff(e, e + C, C) < 1e-6);      /* padding ignored */
    CHECK(s_maxdiff(e, e + 2 * C, C) > 1e-2);  /* different text, different vector */
    /* the same row alone without any padding */
    int32_t lone[5] = {1, 2, 3, 4, 5}, l5 = 5;
    float e1[C];
    REQUIRE(fw_model_embed(m, lone, &l5, 1, 5, e1) == 0);
    CHECK(s_maxdiff(e, e1, C) < 1e-6);
    /* padding ids may be anything, even out of range: they are never read */
    ids[6] = -7;
    float e3[B * C];
    CHECK(fw_model_embed(m, ids, lens, B, T, e3) == 0);
    CHECK(s_maxdiff(e, e3, B * C) < 1e-6);
    /* bad lengths and ids are refused */
    int32_t bad_lens[B] = {5, 0, 8};
    CHECK(fw_model_embed(m, ids, bad_lens, B, T, e3) == FW_EINVAL);
    CHECK(strstr(fw_err_detail(), "lens[1]") != NULL);
    ids[2] = V;
    CHECK(fw_model_embed(m, ids, lens, B, T, e3) == FW_EINVAL);
    /* embedding does not disturb a later training forward/backward */
    int32_t in[8] = {1, 2, 3, 4, 5, 6, 7, 8}, tg[8] = {2, 3, 4, 5, 6, 7, 8, 9};
    float l1, l2;
    REQUIRE(fw_model_forward(m, in, tg, 1, 8, &l1) == 0);
    REQUIRE(fw_model_embed(m, lone, &l5, 1, 5, e1) == 0);
    CHECK(fw_model_backward(m, 0.0f) == FW_ESTATE); /* the forward's activations are gone */
    REQUIRE(fw_model_forward(m, in, tg, 1, 8, &l2) == 0);
    CHECK(l1 == l2);
    fw_model_destroy(&m);
}

int main(void) {
    fw_engine_set_threads(2);
    RUN(test_kv_matches_full_forward);
    RUN(test_chunked_prefill_and_batch);
    RUN(test_greedy_deterministic);
    RUN(test_sampling);
    RUN(test_sampling_large_vocab);
    RUN(test_rng);
    RUN(test_embedding);
    return fw_test_summary();
}
