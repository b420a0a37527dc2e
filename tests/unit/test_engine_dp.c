/* test_engine_dp.c - the engine's data-parallel hooks on the CPU backend,
 * all in one process (no network: the ranks are models side by side).
 *
 * Proves:
 *   - gradient buckets: L+1 of them, bucket b < L is exactly layer L-1-b's
 *     slice of the 12 stacked tensors, bucket L is wte, wpe, ln_f; disjoint,
 *     sorted, covering the gradient buffer; bad b is FW_EINVAL;
 *   - fw_model_backward_sync calls ready once per bucket, in bucket order,
 *     with those ranges and stream NULL, each bucket's gradients already
 *     final when it is handed out, then finish once; the gradients are the
 *     plain backward's bit for bit; a callback error ends the backward with
 *     that error; a sync without callbacks is FW_EINVAL;
 *   - ZeRO-1: two models sharded into complementary ranges (split inside a
 *     tensor), stepped with the unsharded model's global norm, update
 *     exactly their range, bit-identical to the unsharded step, for several
 *     steps; their AdamW state is the unsharded one's cut in two (zeros
 *     outside); resharding keeps the state held for the new range; bad
 *     ranges are refused; per-range sums of squares add up to the whole;
 *   - a checkpoint written from the assembled state of the shards loads into
 *     an unsharded (or differently sharded) model with the unsharded state. */
#include "checkpoint.h"
#include "engine.h"
#include "fw_err.h"
#include "fw_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { VOCAB = 384, B = 2, T = 16, STEPS = 3 };

static fw_model *s_model(uint64_t seed) {
    fw_model_config cfg;
    if (fw_model_config_preset("tiny", VOCAB, &cfg) != 0) return NULL;
    fw_model *m = fw_model_new(&cfg, "cpu");
    if (m && fw_model_init_random(m, seed) != 0) fw_model_destroy(&m);
    return m;
}

/* A deterministic batch per `k`; every fifth target ignored. */
static void s_batch(int k, int32_t *in, int32_t *tg) {
    uint64_t s = 7000 + (uint64_t)k;
    for (int i = 0; i < B * T; i++) {
        in[i] = (int32_t)(fw_test_rand(&s) % VOCAB);
        tg[i] = i % 5 == 4 ? -1 : (int32_t)(fw_test_rand(&s) % VOCAB);
    }
}

static int s_forward(fw_model *m, int k) {
    int32_t in[B * T], tg[B * T];
    s_batch(k, in, tg);
    int rc = fw_model_zero_grad(m);
    return rc ? rc : fw_model_forward(m, in, tg, B, T, NULL);
}

/* ---- (a) buckets ------------------------------------------------------ */

static void test_buckets(void) {
    fw_model_config cfg;
    REQUIRE(fw_model_config_preset("tiny", VOCAB, &cfg) == 0);
    REQUIRE(fw_model_config_check(&cfg) == 0);
    fw_param_tensor t[FW_NUM_PARAM_TENSORS];
    size_t np = fw_model_param_layout(&cfg, t);
    int L = cfg.n_layer;
    CHECK_EQ_INT(fw_model_grad_buckets(&cfg), L + 1);
    unsigned char *cover = calloc(np, 1);
    REQUIRE(cover);
    for (int b = 0; b <= L; b++) {
        size_t offs[FW_BUCKET_MAX_RANGES], lens[FW_BUCKET_MAX_RANGES];
        int n = fw_model_grad_bucket(&cfg, b, offs, lens);
        CHECKF(n >= 1 && n <= FW_BUCKET_MAX_RANGES, "bucket %d: %d ranges", b, n);
        if (n < 1 || n > FW_BUCKET_MAX_RANGES) continue;
        for (int i = 0; i < n; i++) {
            CHECKF(lens[i] > 0 && offs[i] + lens[i] <= np, "bucket %d range %d", b, i);
            if (i) CHECKF(offs[i - 1] + lens[i - 1] <= offs[i], "bucket %d not sorted at %d", b, i);
            for (size_t j = offs[i]; j < offs[i] + lens[i] && j < np; j++) cover[j]++;
        }
        if (b < L) {
            /* Layer L-1-b's slice of each stacked tensor, in buffer order. */
            CHECK_EQ_INT(n, FW_P_FCPROJB - FW_P_LN1W + 1);
            for (int i = 0; i < n && i <= FW_P_FCPROJB - FW_P_LN1W; i++) {
                const fw_param_tensor *p = &t[FW_P_LN1W + i];
                size_t per = p->numel / (size_t)L;
                CHECKF(offs[i] == p->offset + (size_t)(L - 1 - b) * per && lens[i] == per,
                       "bucket %d range %d (%s): [%zu, +%zu)", b, i, p->name, offs[i], lens[i]);
            }
        } else {
            const int rest[] = {FW_P_WTE, FW_P_WPE, FW_P_LNFW, FW_P_LNFB};
            CHECK_EQ_INT(n, 4);
            for (int i = 0; i < n && i < 4; i++)
                CHECKF(offs[i] == t[rest[i]].offset && lens[i] == t[rest[i]].numel,
                       "last bucket range %d: [%zu, +%zu)", i, offs[i], lens[i]);
        }
    }
    size_t bad = 0;
    for (size_t j = 0; j < np; j++) bad += cover[j] != 1;
    CHECKF(bad == 0, "%zu of %zu gradient floats covered other than exactly once", bad, np);
    free(cover);
    size_t offs[FW_BUCKET_MAX_RANGES], lens[FW_BUCKET_MAX_RANGES];
    CHECK_EQ_INT(fw_model_grad_bucket(&cfg, -1, offs, lens), FW_EINVAL);
    CHECK_EQ_INT(fw_model_grad_bucket(&cfg, L + 1, offs, lens), FW_EINVAL);
    CHECK_EQ_INT(fw_model_grad_bucket(&cfg, 1 << 30, offs, lens), FW_EINVAL);
}

/* ---- (b) backward_sync ------------------------------------------------ */

#define MAXCALLS 16

typedef struct {
    const float *grads;             /* the model's gradient buffer (host: CPU backend) */
    float *snap;                    /* grads as they were when each range was handed out */
    int nready, nfinish, finish_at; /* finish_at: nready when finish came */
    int n[MAXCALLS];
    size_t offs[MAXCALLS][FW_BUCKET_MAX_RANGES], lens[MAXCALLS][FW_BUCKET_MAX_RANGES];
    int stream_null[MAXCALLS], finish_stream_null;
    int fail_ready_at; /* ready number that returns fail_rc (-1: never) */
    int fail_finish;
    int fail_rc;
} s_rec;

static int s_ready(void *ctx, const size_t *offs, const size_t *lens, int n, void *stream) {
    s_rec *r = ctx;
    int k = r->nready++;
    if (k == r->fail_ready_at) return r->fail_rc;
    if (k >= MAXCALLS || n < 0 || n > FW_BUCKET_MAX_RANGES) return 0;
    r->n[k] = n;
    r->stream_null[k] = stream == NULL;
    for (int i = 0; i < n; i++) {
        r->offs[k][i] = offs[i], r->lens[k][i] = lens[i];
        if (r->snap) memcpy(r->snap + offs[i], r->grads + offs[i], lens[i] * sizeof(float));
    }
    return 0;
}

static int s_finish(void *ctx, void *stream) {
    s_rec *r = ctx;
    r->nfinish++;
    r->finish_at = r->nready;
    r->finish_stream_null = stream == NULL;
    return r->fail_finish ? r->fail_rc : 0;
}

static void test_backward_sync(void) {
    fw_engine_set_threads(1);
    fw_model *a = s_model(11), *m = s_model(11);
    REQUIRE(a && m);
    const fw_model_config *cfg = fw_model_config_get(m);
    int L = cfg->n_layer;
    size_t np = 0;
    float *ga = fw_model_grads(a, &np), *gm = fw_model_grads(m, NULL);
    REQUIRE(ga && gm && np == fw_model_num_params(m));

    /* Plain backward on A, synced backward on M, on the same forward. The
     * gradients are accumulated onto a non-zero start to show nothing is
     * reset per bucket. */
    REQUIRE(s_forward(a, 1) == 0 && fw_model_backward(a, 0) == 0);
    REQUIRE(s_forward(m, 1) == 0 && fw_model_backward(m, 0) == 0);
    REQUIRE(s_forward(a, 2) == 0 && s_forward(m, 2) == 0);
    for (size_t i = 0; i < np; i++) ga[i] = gm[i] = (float)(i % 13) * 1e-3f;
    REQUIRE(fw_model_backward(a, 0.01f) == 0);
    s_rec r = {.grads = gm, .snap = calloc(np, sizeof(float)), .fail_ready_at = -1};
    REQUIRE(r.snap);
    fw_grad_sync sync = {.ready = s_ready, .finish = s_finish, .ctx = &r};
    CHECKF(fw_model_backward_sync(m, 0.01f, &sync) == 0, "%s", fw_err_detail());

    CHECK_EQ_INT(r.nready, L + 1);
    CHECK_EQ_INT(r.nfinish, 1);
    CHECK_EQ_INT(r.finish_at, L + 1);
    CHECK(r.finish_stream_null);
    for (int k = 0; k < r.nready && k <= L && k < MAXCALLS; k++) {
        size_t offs[FW_BUCKET_MAX_RANGES], lens[FW_BUCKET_MAX_RANGES];
        int n = fw_model_grad_bucket(cfg, k, offs, lens);
        CHECKF(r.n[k] == n, "ready #%d: %d ranges, bucket %d has %d", k, r.n[k], k, n);
        CHECKF(r.stream_null[k], "ready #%d: stream not NULL on the CPU", k);
        for (int i = 0; i < n && i < r.n[k]; i++)
            CHECKF(r.offs[k][i] == offs[i] && r.lens[k][i] == lens[i],
                   "ready #%d range %d: [%zu, +%zu), bucket has [%zu, +%zu)", k, i, r.offs[k][i],
                   r.lens[k][i], offs[i], lens[i]);
    }
    /* Bit-identical to plain backward, and every bucket was final when its
     * ready came (the snapshot taken then equals the end result). */
    size_t diff = 0, early = 0;
    for (size_t i = 0; i < np; i++) {
        diff += memcmp(&ga[i], &gm[i], sizeof(float)) != 0;
        early += memcmp(&r.snap[i], &gm[i], sizeof(float)) != 0;
    }
    CHECKF(diff == 0, "%zu gradients differ from plain backward", diff);
    CHECKF(early == 0, "%zu gradients changed after their bucket was handed out", early);
    free(r.snap);

    /* A failing ready ends the backward with its error, at once. */
    REQUIRE(s_forward(m, 3) == 0);
    s_rec f = {.fail_ready_at = 1, .fail_rc = FW_EIO};
    sync.ctx = &f;
    CHECK_EQ_INT(fw_model_backward_sync(m, 0, &sync), FW_EIO);
    CHECK_EQ_INT(f.nready, 2);
    CHECK_EQ_INT(f.nfinish, 0);
    /* ... so does the last bucket's ready, and a failing finish. */
    REQUIRE(s_forward(m, 3) == 0);
    s_rec f2 = {.fail_ready_at = L, .fail_rc = FW_ETIMEDOUT};
    sync.ctx = &f2;
    CHECK_EQ_INT(fw_model_backward_sync(m, 0, &sync), FW_ETIMEDOUT);
    CHECK_EQ_INT(f2.nfinish, 0);
    REQUIRE(s_forward(m, 3) == 0);
    s_rec f3 = {.fail_ready_at = -1, .fail_finish = 1, .fail_rc = FW_EPROTO};
    sync.ctx = &f3;
    CHECK_EQ_INT(fw_model_backward_sync(m, 0, &sync), FW_EPROTO);
    CHECK_EQ_INT(f3.nready, L + 1);
    CHECK_EQ_INT(f3.nfinish, 1);

    /* Callbacks missing: refused before any work. */
    REQUIRE(s_forward(m, 4) == 0);
    s_rec z = {.fail_ready_at = -1};
    fw_grad_sync no_ready = {.ready = NULL, .finish = s_finish, .ctx = &z};
    fw_grad_sync no_finish = {.ready = s_ready, .finish = NULL, .ctx = &z};
    CHECK_EQ_INT(fw_model_backward_sync(m, 0, &no_ready), FW_EINVAL);
    CHECK_EQ_INT(fw_model_backward_sync(m, 0, &no_finish), FW_EINVAL);
    CHECK_EQ_INT(z.nready + z.nfinish, 0);
    /* sync NULL is plain backward. */
    CHECK_EQ_INT(fw_model_backward_sync(m, 0, NULL), 0);
    fw_model_destroy(&a);
    fw_model_destroy(&m);
}

/* ---- (c) ZeRO-1 in one process ---------------------------------------- */

/* Split point inside a tensor (qkvw, off its middle), not at a boundary. */
static size_t s_split(const fw_model *m) {
    fw_param_tensor t[FW_NUM_PARAM_TENSORS];
    fw_model_param_layout(fw_model_config_get(m), t);
    return t[FW_P_QKVW].offset + t[FW_P_QKVW].numel / 2 + 7;
}

static size_t s_count_diff(const float *x, const float *y, size_t lo, size_t hi) {
    size_t d = 0;
    for (size_t i = lo; i < hi; i++) d += memcmp(&x[i], &y[i], sizeof(float)) != 0;
    return d;
}

static size_t s_count_nonzero(const float *x, size_t lo, size_t hi) {
    size_t d = 0;
    for (size_t i = lo; i < hi; i++) d += x[i] != 0.0f;
    return d;
}

typedef struct {
    fw_model *a, *b[2];
    size_t np, off[2], len[2];
    float *am1, *am2, *bm1[2], *bm2[2]; /* last read opt state */
} s_zero;

static void s_zero_free(s_zero *z) {
    fw_model_destroy(&z->a);
    for (int k = 0; k < 2; k++) {
        fw_model_destroy(&z->b[k]);
        free(z->bm1[k]);
        free(z->bm2[k]);
    }
    free(z->am1);
    free(z->am2);
}

static fw_adamw s_opt(void) {
    fw_adamw o = fw_adamw_defaults();
    o.lr = 1e-2f;
    o.grad_clip = 0.25f; /* below the tiny model's norm: clipping by the given norm matters */
    return o;
}

/* Run STEPS steps of A (unsharded) and B0/B1 (sharded halves) on the same
 * gradients; checks everything per step. Leaves the state in *z. */
static void s_zero_run(s_zero *z) {
    fw_engine_set_threads(1);
    z->a = s_model(21), z->b[0] = s_model(21), z->b[1] = s_model(21);
    REQUIRE(z->a && z->b[0] && z->b[1]);
    size_t np = z->np = fw_model_num_params(z->a);
    size_t s = s_split(z->a);
    z->off[0] = 0, z->len[0] = s, z->off[1] = s, z->len[1] = np - s;
    for (int k = 0; k < 2; k++)
        CHECKF(fw_model_shard_optimizer(z->b[k], z->off[k], z->len[k]) == 0, "%s", fw_err_detail());
    z->am1 = malloc(np * 4), z->am2 = malloc(np * 4);
    for (int k = 0; k < 2; k++) z->bm1[k] = malloc(np * 4), z->bm2[k] = malloc(np * 4);
    float *pa = malloc(np * 4), *pre = malloc(np * 4), *pb = malloc(np * 4),
          *gather = malloc(np * 4);
    REQUIRE(z->am1 && z->am2 && z->bm1[1] && z->bm2[1] && pa && pre && pb && gather);
    fw_adamw opt = s_opt();

    /* Before any step the sharded state reads as all zeros. */
    CHECK(fw_model_read_opt_state(z->b[0], z->bm1[0], z->bm2[0]) == 0);
    CHECK_EQ_INT(s_count_nonzero(z->bm1[0], 0, np) + s_count_nonzero(z->bm2[0], 0, np), 0);

    for (int step = 1; step <= STEPS; step++) {
        REQUIRE(s_forward(z->a, 100 + step) == 0 && fw_model_backward(z->a, 0) == 0);
        float norm = 0;
        REQUIRE(fw_model_grad_norm(z->a, &norm) == 0);
        if (step == 1) CHECKF(norm > opt.grad_clip, "norm %g: clipping not exercised", norm);
        const float *ga = fw_model_grads(z->a, NULL);
        for (int k = 0; k < 2; k++) {
            float *gb = fw_model_grads(z->b[k], NULL);
            REQUIRE(gb);
            memcpy(gb, ga, np * 4);
        }
        float got = -1;
        REQUIRE(fw_model_step_adamw(z->a, &opt, step, &got) == 0);
        CHECK(got == norm);
        REQUIRE(fw_model_read_params(z->a, pa) == 0);
        REQUIRE(fw_model_read_opt_state(z->a, z->am1, z->am2) == 0);
        for (int k = 0; k < 2; k++) {
            fw_model *b = z->b[k];
            size_t lo = z->off[k], hi = z->off[k] + z->len[k];
            CHECK_EQ_INT(fw_model_step_adamw(b, &opt, step, NULL), FW_ESTATE);
            REQUIRE(fw_model_read_params(b, pre) == 0);
            CHECKF(fw_model_step_adamw_norm(b, &opt, step, norm) == 0, "%s", fw_err_detail());
            REQUIRE(fw_model_read_params(b, pb) == 0);
            CHECKF(s_count_diff(pb, pa, lo, hi) == 0,
                   "step %d shard %d: %zu params in [%zu, %zu) differ from unsharded", step, k,
                   s_count_diff(pb, pa, lo, hi), lo, hi);
            size_t out = s_count_diff(pb, pre, 0, lo) + s_count_diff(pb, pre, hi, np);
            CHECKF(out == 0, "step %d shard %d: %zu params outside its range changed", step, k,
                   out);
            /* The range did move (the check above is not vacuous). */
            CHECKF(s_count_diff(pb, pre, lo, hi) > (hi - lo) / 2, "step %d shard %d: no update",
                   step, k);
            memcpy(gather + lo, pb + lo, (hi - lo) * 4); /* what an all-gather assembles */
            REQUIRE(fw_model_read_opt_state(b, z->bm1[k], z->bm2[k]) == 0);
            size_t zout = s_count_nonzero(z->bm1[k], 0, lo) + s_count_nonzero(z->bm1[k], hi, np) +
                          s_count_nonzero(z->bm2[k], 0, lo) + s_count_nonzero(z->bm2[k], hi, np);
            CHECKF(zout == 0, "step %d shard %d: %zu opt floats outside the range not 0", step, k,
                   zout);
            size_t sd =
                s_count_diff(z->bm1[k], z->am1, lo, hi) + s_count_diff(z->bm2[k], z->am2, lo, hi);
            CHECKF(sd == 0, "step %d shard %d: %zu opt floats differ from unsharded", step, k, sd);
        }
        size_t sum_bad = 0;
        for (size_t i = 0; i < np; i++)
            sum_bad += z->bm1[0][i] + z->bm1[1][i] != z->am1[i] ||
                       z->bm2[0][i] + z->bm2[1][i] != z->am2[i];
        CHECKF(sum_bad == 0, "step %d: %zu floats of B0+B1 opt state differ from A's", step,
               sum_bad);
        CHECKF(s_count_diff(gather, pa, 0, np) == 0, "step %d: gathered params differ", step);
        for (int k = 0; k < 2; k++) REQUIRE(fw_model_write_params(z->b[k], gather) == 0);
    }
    free(pa), free(pre), free(pb), free(gather);
}

static void test_zero1(void) {
    s_zero z = {0};
    s_zero_run(&z);
    if (!z.a || !z.b[1] || !z.bm2[1]) {
        s_zero_free(&z);
        return;
    }
    size_t np = z.np;
    fw_model *a = z.a;

    /* Sum of squares per range adds up to the whole; and it is the sum. */
    double whole = 0, part[2] = {0, 0};
    CHECK(fw_model_grad_sumsq(a, 0, np, &whole) == 0);
    for (int k = 0; k < 2; k++) CHECK(fw_model_grad_sumsq(a, z.off[k], z.len[k], &part[k]) == 0);
    CHECKF(whole > 0 && fabs(part[0] + part[1] - whole) <= 1e-12 * whole, "%.17g + %.17g vs %.17g",
           part[0], part[1], whole);
    const float *g = fw_model_grads(a, NULL);
    double naive = 0;
    for (size_t i = z.off[1]; i < np; i++) naive += (double)g[i] * g[i];
    CHECKF(fabs(naive - part[1]) <= 1e-9 * naive, "sumsq %.17g, naive %.17g", part[1], naive);
    float norm = 0;
    CHECK(fw_model_grad_norm(a, &norm) == 0);
    CHECK_NEAR(norm, sqrt(whole), 1e-6 * sqrt(whole));
    double d = 0;
    CHECK_EQ_INT(fw_model_grad_sumsq(a, np, 1, &d), FW_EINVAL);
    CHECK_EQ_INT(fw_model_grad_sumsq(a, 0, np + 1, &d), FW_EINVAL);
    CHECK_EQ_INT(fw_model_grad_sumsq(a, z.off[1], np, &d), FW_EINVAL);
    CHECK_EQ_INT(fw_model_grad_sumsq(a, (size_t)-1, 2, &d), FW_EINVAL);
    CHECK_EQ_INT(fw_model_grad_sumsq(a, 0, np, NULL), FW_EINVAL);

    /* Bad shard ranges, on a model whose state must survive them. */
    CHECK_EQ_INT(fw_model_shard_optimizer(a, 0, 0), FW_EINVAL);
    CHECK_EQ_INT(fw_model_shard_optimizer(a, 5, 0), FW_EINVAL);
    CHECK_EQ_INT(fw_model_shard_optimizer(a, 1, np), FW_EINVAL);
    CHECK_EQ_INT(fw_model_shard_optimizer(a, np, 1), FW_EINVAL);
    CHECK_EQ_INT(fw_model_shard_optimizer(a, (size_t)-1, 2), FW_EINVAL);
    float *m1 = malloc(np * 4), *m2 = malloc(np * 4);
    REQUIRE(m1 && m2);
    CHECK(fw_model_read_opt_state(a, m1, m2) == 0);
    CHECK(s_count_diff(m1, z.am1, 0, np) + s_count_diff(m2, z.am2, 0, np) == 0);
    /* Still unsharded: the plain step is allowed. */
    REQUIRE(s_forward(a, 200) == 0 && fw_model_backward(a, 0) == 0);
    fw_adamw opt = s_opt();
    float *p0 = malloc(np * 4), *p1 = malloc(np * 4);
    REQUIRE(p0 && p1);
    REQUIRE(fw_model_read_params(a, p0) == 0);
    CHECK_EQ_INT(fw_model_step_adamw(a, &opt, STEPS + 1, NULL), 0);
    CHECK(fw_model_read_opt_state(a, z.am1, z.am2) == 0);

    /* Reshard the stepped unsharded model: the state for the range stays,
     * the rest reads as zeros. Range [lo, hi) inside wte..fcw. */
    size_t lo = np / 5 + 3, hi = np / 2 + 11;
    CHECKF(fw_model_shard_optimizer(a, lo, hi - lo) == 0, "%s", fw_err_detail());
    CHECK_EQ_INT(fw_model_step_adamw(a, &opt, STEPS + 2, NULL), FW_ESTATE);
    CHECK(fw_model_read_opt_state(a, m1, m2) == 0);
    CHECK_EQ_INT(s_count_diff(m1, z.am1, lo, hi) + s_count_diff(m2, z.am2, lo, hi), 0);
    CHECK_EQ_INT(s_count_nonzero(m1, 0, lo) + s_count_nonzero(m1, hi, np) +
                     s_count_nonzero(m2, 0, lo) + s_count_nonzero(m2, hi, np),
                 0);
    /* Move to an overlapping range: the overlap keeps its state, the newly
     * covered part starts from zero. */
    size_t lo2 = np / 3, hi2 = np * 3 / 4;
    CHECK(fw_model_shard_optimizer(a, lo2, hi2 - lo2) == 0);
    CHECK(fw_model_read_opt_state(a, m1, m2) == 0);
    CHECK_EQ_INT(s_count_diff(m1, z.am1, lo2, hi) + s_count_diff(m2, z.am2, lo2, hi), 0);
    CHECK_EQ_INT(s_count_nonzero(m1, 0, lo2) + s_count_nonzero(m1, hi, np), 0);
    CHECK(s_count_nonzero(z.am1, hi, hi2) > 0); /* what was dropped was not zero */
    /* The whole buffer again: unsharded, plain steps allowed. */
    CHECK(fw_model_shard_optimizer(a, 0, np) == 0);
    CHECK_EQ_INT(fw_model_step_adamw(a, &opt, STEPS + 2, NULL), 0);

    /* A sharded step with the norm only updates its range, and a wrong
     * (local) norm gives different parameters than the global one: the
     * given norm is what clipping uses. */
    fw_model *b = z.b[1];
    REQUIRE(fw_model_write_params(b, p0) == 0);
    float *gb = fw_model_grads(b, NULL);
    REQUIRE(gb);
    memcpy(gb, fw_model_grads(a, NULL), np * 4);
    float gnorm = 0;
    REQUIRE(fw_model_grad_norm(b, &gnorm) == 0);
    REQUIRE(fw_model_step_adamw_norm(b, &opt, STEPS + 1, gnorm) == 0);
    REQUIRE(fw_model_read_params(b, p1) == 0);
    REQUIRE(fw_model_write_params(b, p0) == 0);
    REQUIRE(fw_model_write_opt_state(b, z.bm1[1], z.bm2[1]) == 0);
    double loc = 0;
    REQUIRE(fw_model_grad_sumsq(b, z.off[1], z.len[1], &loc) == 0);
    REQUIRE(fw_model_step_adamw_norm(b, &opt, STEPS + 1, (float)sqrt(loc)) == 0);
    REQUIRE(fw_model_read_params(b, p0) == 0);
    CHECK(s_count_diff(p0, p1, z.off[1], np) > 0);
    CHECK_EQ_INT(fw_model_step_adamw_norm(b, &opt, STEPS + 1, -1.0f), FW_EINVAL);
    CHECK_EQ_INT(fw_model_step_adamw_norm(b, NULL, STEPS + 1, 1.0f), FW_EINVAL);
    CHECK_EQ_INT(fw_model_step_adamw_norm(b, &opt, 0, 1.0f), FW_EINVAL);

    free(m1), free(m2), free(p0), free(p1);
    s_zero_free(&z);
}

/* write_opt_state on a sharded model takes the range out of full arrays. */
static void test_write_opt_sharded(void) {
    fw_model *m = s_model(3);
    REQUIRE(m);
    size_t np = fw_model_num_params(m), lo = np / 3 + 1, hi = np / 2 + 5;
    float *w1 = malloc(np * 4), *w2 = malloc(np * 4), *r1 = malloc(np * 4), *r2 = malloc(np * 4);
    REQUIRE(w1 && w2 && r1 && r2);
    for (size_t i = 0; i < np; i++) w1[i] = (float)i * 0.5f + 1, w2[i] = (float)i + 2;
    REQUIRE(fw_model_shard_optimizer(m, lo, hi - lo) == 0);
    CHECK(fw_model_write_opt_state(m, w1, w2) == 0);
    CHECK(fw_model_read_opt_state(m, r1, r2) == 0);
    CHECK_EQ_INT(s_count_diff(r1, w1, lo, hi) + s_count_diff(r2, w2, lo, hi), 0);
    CHECK_EQ_INT(s_count_nonzero(r1, 0, lo) + s_count_nonzero(r1, hi, np) +
                     s_count_nonzero(r2, 0, lo) + s_count_nonzero(r2, hi, np),
                 0);
    free(w1), free(w2), free(r1), free(r2);
    fw_model_destroy(&m);
}

/* ---- (d) a ZeRO checkpoint loads anywhere ----------------------------- */

static void test_zero_checkpoint(void) {
    s_zero z = {0};
    s_zero_run(&z);
    char *dir = fw_test_tmpdir("engine_dp");
    if (!z.a || !z.b[1] || !z.bm2[1] || !dir) {
        s_zero_free(&z);
        CHECK(dir != NULL);
        free(dir);
        return;
    }
    size_t np = z.np;
    /* Assemble the whole state from the two shards (what an all-reduce of
     * the ranks' read_opt_state arrays gives). */
    float *m1 = malloc(np * 4), *m2 = malloc(np * 4), *r1 = malloc(np * 4), *r2 = malloc(np * 4),
          *pa = malloc(np * 4), *pr = malloc(np * 4);
    REQUIRE(m1 && m2 && r1 && r2 && pa && pr);
    for (size_t i = 0; i < np; i++) {
        m1[i] = z.bm1[0][i] + z.bm1[1][i];
        m2[i] = z.bm2[0][i] + z.bm2[1][i];
    }
    fw_train_state st = {0};
    st.step = STEPS;
    st.opt = s_opt();
    st.world_size = 2;
    st.batch_size = B, st.seq_len = T, st.grad_accum = 1, st.total_steps = 10;
    char path[1024];
    snprintf(path, sizeof path, "%s/zero.ckpt", dir);
    CHECKF(fw_checkpoint_save_opt(path, z.b[0], &st, m1, m2) == 0, "%s", fw_err_detail());
    REQUIRE(fw_model_read_params(z.a, pa) == 0);

    /* Into a fresh unsharded model (other seed, so the load must overwrite). */
    fw_model *u = s_model(99);
    REQUIRE(u);
    fw_train_state got = {0};
    CHECKF(fw_checkpoint_load(path, u, &got) == 0, "%s", fw_err_detail());
    CHECK(got.step == STEPS && got.world_size == 2);
    CHECK(fw_model_read_opt_state(u, r1, r2) == 0);
    CHECKF(s_count_diff(r1, z.am1, 0, np) + s_count_diff(r2, z.am2, 0, np) == 0,
           "loaded opt state differs from the unsharded run's in %zu floats",
           s_count_diff(r1, z.am1, 0, np) + s_count_diff(r2, z.am2, 0, np));
    CHECK(fw_model_read_params(u, pr) == 0);
    CHECK_EQ_INT(s_count_diff(pr, pa, 0, np), 0);
    /* And it steps on like the unsharded run does. */
    fw_adamw opt = s_opt();
    REQUIRE(s_forward(z.a, 300) == 0 && fw_model_backward(z.a, 0) == 0);
    REQUIRE(s_forward(u, 300) == 0 && fw_model_backward(u, 0) == 0);
    CHECK(fw_model_step_adamw(z.a, &opt, STEPS + 1, NULL) == 0);
    CHECK(fw_model_step_adamw(u, &opt, STEPS + 1, NULL) == 0);
    CHECK(fw_model_read_params(z.a, pa) == 0 && fw_model_read_params(u, pr) == 0);
    CHECK_EQ_INT(s_count_diff(pr, pa, 0, np), 0);
    fw_model_destroy(&u);

    /* Into a model sharded differently (a 3-way middle part): its range. */
    fw_model *s3 = s_model(98);
    REQUIRE(s3);
    size_t lo = np / 3, hi = 2 * np / 3;
    REQUIRE(fw_model_shard_optimizer(s3, lo, hi - lo) == 0);
    CHECKF(fw_checkpoint_load(path, s3, &got) == 0, "%s", fw_err_detail());
    CHECK(fw_model_read_opt_state(s3, r1, r2) == 0);
    CHECK_EQ_INT(s_count_diff(r1, m1, lo, hi) + s_count_diff(r2, m2, lo, hi), 0);
    CHECK_EQ_INT(s_count_nonzero(r1, 0, lo) + s_count_nonzero(r1, hi, np), 0);
    fw_model_destroy(&s3);

    free(m1), free(m2), free(r1), free(r2), free(pa), free(pr);
    fw_test_rmtree(dir);
    free(dir);
    s_zero_free(&z);
}

int main(void) {
    fw_engine_set_threads(1);
    RUN(test_buckets);
    RUN(test_backward_sync);
    RUN(test_zero1);
    RUN(test_write_opt_sharded);
    RUN(test_zero_checkpoint);
    return fw_test_summary();
}
