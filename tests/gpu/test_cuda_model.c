/* test_cuda_model - the CUDA backend against the CPU backend through the
 * public model API (engine.h), same weights (same seed) and same data.
 *
 * Covered: forward loss, per-position losses, logits, argmax; backward
 * gradients tensor by tensor; global grad norm; one AdamW step (parameters
 * and both moments); embeddings; KV-cache prefill/decode logits and greedy
 * generation; bucketed backward (fw_model_backward_sync) and the sharded
 * (ZeRO-1) AdamW step; clear errors (no such device, bad precision, memory
 * short).
 *
 * Tolerances (normwise relative error over a tensor, see test_cuda_ops.c):
 *   FP32 mode: 1e-4 for whole-model results (a dozen kernels chained, each
 *   within ~1e-5), 2e-5 for the loss; greedy generation token for token.
 *   BF16 mode: 2e-2 (BF16 operands, FP32 accumulation, TF32 attention).
 *   Parameters after an AdamW step: the same, except weights whose gradient
 *   is within that tolerance of 0 may differ by 2*lr (s_step_mismatches).
 * Host outputs are filled with NaN before each call so an element the
 * backend does not write fails the comparison. */
#include "engine.h"
#include "fw_err.h"
#include "fw_test.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TB 3
#define TT 40

static uint64_t s_seed = 0xc0ffee77ull;

static double s_relerr(const float *got, const float *want, size_t n) {
    double maxd = 0, maxr = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (isnan(d)) return INFINITY;
        if (d > maxd) maxd = d;
        if (fabs(want[i]) > maxr) maxr = fabs(want[i]);
    }
    return maxd / (maxr > 1e-30 ? maxr : 1e-30);
}

static void s_poison(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = NAN;
}

static fw_model *s_model(const char *device, const char *precision) {
    fw_model_config cfg;
    if (fw_model_config_preset("tiny", 512, &cfg) < 0) return NULL;
    setenv("FW_CUDA_PRECISION", precision, 1);
    fw_model *m = fw_model_new(&cfg, device);
    if (!m) {
        fprintf(stderr, "fw_model_new(%s, %s): %s\n", device, precision, fw_err_detail());
        return NULL;
    }
    if (fw_model_init_random(m, 4242) < 0) fw_model_destroy(&m);
    return m;
}

static void s_data(int32_t *in, int32_t *tg, size_t n, int V) {
    for (size_t i = 0; i < n; i++) {
        in[i] = (int32_t)(fw_test_rand(&s_seed) % (uint64_t)V);
        tg[i] = i % 7 == 3 ? -1 : (int32_t)(fw_test_rand(&s_seed) % (uint64_t)V);
    }
}

/* Parameters after one AdamW step. Step 1 moves a weight by lr * g/(|g| + eps)
 * (+ decay), i.e. about lr * sign(g): where the CPU's gradient is within the
 * gradient tolerance of 0 (tol * the tensor's largest |g|; the key bias's
 * gradient is exactly 0 in exact arithmetic, rounding noise on both backends)
 * the two backends may move it in opposite directions, so such elements may
 * differ by up to 2 * lr. Every other element: normwise tol over the buffer.
 * Returns the number of elements outside their bound. */
static size_t s_step_mismatches(const float *pd, const float *pc, const float *gc,
                                const fw_param_tensor *t, size_t np, float lr, double tol) {
    double maxp = 0;
    for (size_t i = 0; i < np; i++)
        if (fabs(pc[i]) > maxp) maxp = fabs(pc[i]);
    size_t bad = 0;
    for (int k = 0; k < FW_NUM_PARAM_TENSORS; k++) {
        const float *g = gc + t[k].offset;
        double maxg = 0;
        for (size_t i = 0; i < t[k].numel; i++)
            if (fabs(g[i]) > maxg) maxg = fabs(g[i]);
        for (size_t i = 0; i < t[k].numel; i++) {
            size_t j = t[k].offset + i;
            double bound = tol * maxp + (fabs(g[i]) <= tol * maxg ? 2.0 * 1.001 * lr : 0.0);
            double d = fabs((double)pd[j] - (double)pc[j]);
            if (!(d <= bound)) {
                if (bad < 3)
                    fprintf(stderr, "   %s[%zu]: cpu %.9g cuda %.9g (grad %.3g)\n", t[k].name, i,
                            (double)pc[j], (double)pd[j], (double)g[i]);
                bad++;
            }
        }
    }
    return bad;
}

static void test_device_present(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    CHECKF(e == cudaSuccess && n > 0, "no CUDA device (%s): gpu tests need one",
           cudaGetErrorString(e));
}

static void s_train_step_matches(const char *prec, double tol) {
    fprintf(stderr, "   precision %s, tolerance %g\n", prec, tol);
    fw_model *cpu = s_model("cpu", "fp32"), *gpu = s_model("cuda", prec);
    REQUIRE(cpu && gpu);
    const fw_model_config *cfg = fw_model_config_get(cpu);
    int V = cfg->vocab_size;
    size_t n = (size_t)TB * TT, np = fw_model_num_params(cpu);
    int32_t in[TB * TT], tg[TB * TT];
    s_data(in, tg, n, V);
    float lc = 0, lg = NAN;
    CHECK_EQ_INT(fw_model_forward(cpu, in, tg, TB, TT, &lc), 0);
    CHECKF(fw_model_forward(gpu, in, tg, TB, TT, &lg) == 0, "%s", fw_err_detail());
    CHECK_NEAR(lg / lc, 1.0, tol < 1e-3 ? 2e-5 : tol);

    float *a = malloc(n * (size_t)V * sizeof *a), *b = malloc(n * (size_t)V * sizeof *b);
    s_poison(a, n), s_poison(b, n);
    CHECK_EQ_INT(fw_model_get_losses(cpu, a), 0);
    CHECK_EQ_INT(fw_model_get_losses(gpu, b), 0);
    CHECKF(s_relerr(b, a, n) <= tol, "losses: %.3g", s_relerr(b, a, n));
    s_poison(a, n * V), s_poison(b, n * V);
    CHECK_EQ_INT(fw_model_get_logits(cpu, 0, n, a), 0);
    CHECK_EQ_INT(fw_model_get_logits(gpu, 0, n, b), 0);
    CHECKF(s_relerr(b, a, n * V) <= tol, "logits: %.3g", s_relerr(b, a, n * V));
    /* argmax: must agree wherever the CPU's best beats its runner-up clearly */
    int32_t am_c[TB * TT], am_g[TB * TT];
    CHECK_EQ_INT(fw_model_get_argmax(cpu, am_c), 0);
    memset(am_g, 0xff, sizeof am_g);
    CHECK_EQ_INT(fw_model_get_argmax(gpu, am_g), 0);
    int bad = 0;
    for (size_t r = 0; r < n; r++) {
        const float *x = a + r * V;
        float best = x[am_c[r]], second = -INFINITY;
        for (int i = 0; i < V; i++)
            if (i != am_c[r] && x[i] > second) second = x[i];
        if (best - second > 50 * tol * fabsf(best) + 1e-4f && am_g[r] != am_c[r]) bad++;
    }
    CHECK_EQ_INT(bad, 0);

    /* backward: every parameter tensor's gradient */
    CHECK_EQ_INT(fw_model_zero_grad(cpu), 0);
    CHECK_EQ_INT(fw_model_zero_grad(gpu), 0);
    CHECK_EQ_INT(fw_model_backward(cpu, 0), 0);
    CHECKF(fw_model_backward(gpu, 0) == 0, "%s", fw_err_detail());
    size_t ng = 0;
    float *gc = fw_model_grads(cpu, &ng), *gd = fw_model_grads(gpu, NULL);
    REQUIRE(gc && gd && ng == np);
    struct cudaPointerAttributes pa;
    memset(&pa, 0, sizeof pa);
    CHECK(cudaPointerGetAttributes(&pa, gd) == cudaSuccess && pa.type == cudaMemoryTypeDevice);
    float *gh = malloc(np * sizeof *gh);
    s_poison(gh, np);
    CHECK(cudaMemcpy(gh, gd, np * sizeof *gh, cudaMemcpyDeviceToHost) == cudaSuccess);
    fw_param_tensor t[FW_NUM_PARAM_TENSORS];
    fw_model_param_layout(cfg, t);
    for (int i = 0; i < FW_NUM_PARAM_TENSORS; i++) {
        double e = s_relerr(gh + t[i].offset, gc + t[i].offset, t[i].numel);
        CHECKF(e <= tol, "gradient of %s: relative error %.3g > %g", t[i].name, e, tol);
    }
    float nc = 0, nd = NAN;
    CHECK_EQ_INT(fw_model_grad_norm(cpu, &nc), 0);
    CHECK_EQ_INT(fw_model_grad_norm(gpu, &nd), 0);
    CHECK_NEAR(nd / nc, 1.0, tol);

    /* one AdamW step with clipping active (clip below the norm) */
    fw_adamw opt = fw_adamw_defaults();
    opt.lr = 1e-3f;
    opt.grad_clip = nc * 0.5f;
    float sc = 0, sd = 0;
    CHECK_EQ_INT(fw_model_step_adamw(cpu, &opt, 1, &sc), 0);
    CHECK_EQ_INT(fw_model_step_adamw(gpu, &opt, 1, &sd), 0);
    float *pc = malloc(np * 4), *pd = malloc(np * 4), *m1c = malloc(np * 4), *m2c = malloc(np * 4);
    float *m1d = malloc(np * 4), *m2d = malloc(np * 4);
    s_poison(pd, np), s_poison(m1d, np), s_poison(m2d, np);
    CHECK_EQ_INT(fw_model_read_params(cpu, pc), 0);
    CHECK_EQ_INT(fw_model_read_params(gpu, pd), 0);
    size_t stepbad = s_step_mismatches(pd, pc, gc, t, np, opt.lr, tol);
    CHECKF(stepbad == 0, "params after a step: %zu elements off (normwise %.3g)", stepbad,
           s_relerr(pd, pc, np));
    CHECK_EQ_INT(fw_model_read_opt_state(cpu, m1c, m2c), 0);
    CHECK_EQ_INT(fw_model_read_opt_state(gpu, m1d, m2d), 0);
    CHECKF(s_relerr(m1d, m1c, np) <= tol, "mom1: %.3g", s_relerr(m1d, m1c, np));
    CHECKF(s_relerr(m2d, m2c, np) <= 2 * tol, "mom2: %.3g", s_relerr(m2d, m2c, np));

    /* the step changed the BF16 copy too: a second forward still agrees */
    CHECK_EQ_INT(fw_model_forward(cpu, in, tg, TB, TT, &lc), 0);
    CHECK_EQ_INT(fw_model_forward(gpu, in, tg, TB, TT, &lg), 0);
    CHECK_NEAR(lg / lc, 1.0, tol < 1e-3 ? 2e-5 : tol);
    /* writing through the device pointer is seen by the next forward */
    float *dp = fw_model_params(gpu, NULL);
    CHECK(cudaMemset(dp, 0, np * sizeof(float)) == cudaSuccess);
    CHECK_EQ_INT(fw_model_forward(gpu, in, tg, TB, TT, &lg), 0);
    CHECK_NEAR(lg, log((double)V), 1e-3); /* all-zero weights: uniform over V */

    free(a), free(b), free(gh), free(pc), free(pd), free(m1c), free(m2c), free(m1d), free(m2d);
    fw_model_destroy(&cpu);
    fw_model_destroy(&gpu);
}

static void test_train_step_fp32(void) {
    s_train_step_matches("fp32", 1e-4);
}
static void test_train_step_bf16(void) {
    s_train_step_matches("bf16", 2e-2);
}

static void s_embed(const char *prec, double tol) {
    fw_model *cpu = s_model("cpu", "fp32"), *gpu = s_model("cuda", prec);
    REQUIRE(cpu && gpu);
    enum { EB = 5, ET = 24 };
    int C = fw_model_config_get(cpu)->n_embd;
    int32_t ids[EB * ET], lens[EB] = {24, 1, 7, 13, 24};
    for (int i = 0; i < EB * ET; i++) ids[i] = (int32_t)(fw_test_rand(&s_seed) % 512);
    float ec[EB * 64], eg[EB * 64];
    REQUIRE(C == 64);
    s_poison(eg, EB * 64);
    CHECK_EQ_INT(fw_model_embed(cpu, ids, lens, EB, ET, ec), 0);
    CHECKF(fw_model_embed(gpu, ids, lens, EB, ET, eg) == 0, "%s", fw_err_detail());
    CHECKF(s_relerr(eg, ec, EB * 64) <= tol, "embeddings (%s): %.3g", prec,
           s_relerr(eg, ec, EB * 64));
    /* padding does not matter: change ids past lens[2] */
    for (int t = lens[2]; t < ET; t++) ids[2 * ET + t] = 5;
    float eg2[EB * 64];
    CHECK_EQ_INT(fw_model_embed(gpu, ids, lens, EB, ET, eg2), 0);
    CHECK(memcmp(eg + 2 * 64, eg2 + 2 * 64, 64 * sizeof(float)) == 0);
    fw_model_destroy(&cpu);
    fw_model_destroy(&gpu);
}

static void test_embed_fp32(void) {
    s_embed("fp32", 1e-4);
}
static void test_embed_bf16(void) {
    s_embed("bf16", 2e-2);
}

/* Greedy generation of 2 rows (different prompt lengths, row 1 prefilled in
 * two chunks): FP32 must match the CPU token for token. */
static void s_generate(const char *prec, double tol, int exact) {
    fw_model *cpu = s_model("cpu", "fp32"), *gpu = s_model("cuda", prec);
    REQUIRE(cpu && gpu);
    int V = fw_model_config_get(cpu)->vocab_size;
    enum { GEN = 40 };
    fw_kv_cache *kc = fw_kv_cache_new(cpu, 2, 64), *kg = fw_kv_cache_new(gpu, 2, 64);
    REQUIRE(kc && kg);
    int32_t p0[5] = {1, 2, 3, 4, 5}, p1[9] = {9, 8, 7, 6, 5, 4, 3, 2, 1};
    float *lc = malloc(2 * (size_t)V * 4), *lg = malloc(2 * (size_t)V * 4);
    s_poison(lg, 2 * (size_t)V);
    CHECK_EQ_INT(fw_model_prefill(cpu, kc, 0, p0, 5, lc), 0);
    CHECKF(fw_model_prefill(gpu, kg, 0, p0, 5, lg) == 0, "%s", fw_err_detail());
    CHECKF(s_relerr(lg, lc, V) <= tol, "prefill logits: %.3g", s_relerr(lg, lc, V));
    CHECK_EQ_INT(fw_model_prefill(cpu, kc, 1, p1, 4, NULL), 0);
    CHECK_EQ_INT(fw_model_prefill(cpu, kc, 1, p1 + 4, 5, lc + V), 0);
    CHECK_EQ_INT(fw_model_prefill(gpu, kg, 1, p1, 4, NULL), 0);
    CHECK_EQ_INT(fw_model_prefill(gpu, kg, 1, p1 + 4, 5, lg + V), 0);
    fw_sampler greedy = {0};
    fw_rng rng;
    fw_rng_seed(&rng, 1); /* greedy draws nothing, but fw_sample wants a generator */
    int32_t tc[2], tg2[2];
    int same = 1;
    for (int r = 0; r < 2; r++) {
        tc[r] = fw_sample(lc + (size_t)r * V, V, &greedy, &rng);
        tg2[r] = fw_sample(lg + (size_t)r * V, V, &greedy, &rng);
        same &= tc[r] == tg2[r];
    }
    for (int s = 0; s < GEN && same; s++) {
        s_poison(lg, 2 * (size_t)V);
        CHECK_EQ_INT(fw_model_decode(cpu, kc, tc, NULL, lc), 0);
        CHECKF(fw_model_decode(gpu, kg, tg2, NULL, lg) == 0, "%s", fw_err_detail());
        CHECKF(s_relerr(lg, lc, 2 * (size_t)V) <= tol, "decode step %d logits: %.3g", s,
               s_relerr(lg, lc, 2 * (size_t)V));
        for (int r = 0; r < 2; r++) {
            tc[r] = fw_sample(lc + (size_t)r * V, V, &greedy, &rng);
            tg2[r] = fw_sample(lg + (size_t)r * V, V, &greedy, &rng);
            if (tc[r] != tg2[r]) {
                same = 0;
                fprintf(stderr, "   %s: step %d row %d: cpu %d cuda %d\n", prec, s, r, tc[r],
                        tg2[r]);
            }
        }
    }
    if (exact) CHECKF(same, "greedy generation differs from the CPU in %s mode", prec);
    /* one inactive row: its logits are not touched */
    uint8_t act[2] = {0, 1};
    s_poison(lg, 2 * (size_t)V);
    CHECK_EQ_INT(fw_model_decode(gpu, kg, tg2, act, lg), 0);
    CHECK(isnan(lg[0]) && !isnan(lg[V]));
    fw_kv_cache_destroy(&kc);
    fw_kv_cache_destroy(&kg);
    free(lc), free(lg);
    fw_model_destroy(&cpu);
    fw_model_destroy(&gpu);
}

static void test_generate_fp32(void) {
    s_generate("fp32", 1e-4, 1);
}
static void test_generate_bf16(void) {
    s_generate("bf16", 2e-2, 0);
}

static void test_errors(void) {
    fw_model_config cfg;
    REQUIRE(fw_model_config_preset("tiny", 512, &cfg) == 0);
    fw_err_clear();
    fw_model *m = fw_model_new(&cfg, "cuda:1000");
    CHECK(m == NULL);
    CHECKF(strstr(fw_err_detail(), "no CUDA device") != NULL, "detail: %s", fw_err_detail());
    fw_model_destroy(&m);
    setenv("FW_CUDA_PRECISION", "fp8", 1);
    m = fw_model_new(&cfg, "cuda");
    CHECK(m == NULL);
    CHECKF(strstr(fw_err_detail(), "FW_CUDA_PRECISION") != NULL, "detail: %s", fw_err_detail());
    fw_model_destroy(&m);
    setenv("FW_CUDA_PRECISION", "bf16", 1);
    /* far more activation memory than any GPU has: a clear FW_ENOMEM. "small"
     * (4 layers, 256 wide): 16M positions need ~2 TiB of activations; "tiny"
     * needed ~137 GiB, which the first allocation of a 141 GB H200 could
     * still satisfy. */
    REQUIRE(fw_model_config_preset("small", 512, &cfg) == 0);
    m = fw_model_new(&cfg, "cuda");
    REQUIRE(m);
    int B = (1 << 24) / 64;
    int32_t *ids = calloc((size_t)B * 64, sizeof *ids);
    REQUIRE(ids);
    int rc = fw_model_forward(m, ids, NULL, B, 64, NULL);
    CHECK_EQ_INT(rc, FW_ENOMEM);
    CHECKF(strstr(fw_err_detail(), "MiB free") != NULL, "detail: %s", fw_err_detail());
    /* and the model still works afterwards */
    CHECK_EQ_INT(fw_model_forward(m, ids, NULL, 2, 64, NULL), 0);
    free(ids);
    fw_model_destroy(&m);
}

/* fw_grad_sync recorder: bucket order and the stream the backend hands out. */
typedef struct {
    int calls, finishes, order_ok;
    void *stream;
} s_sync_rec;

static int s_rec_ready(void *ctx, const size_t *offs, const size_t *lens, int n, void *stream) {
    s_sync_rec *r = ctx;
    (void)offs, (void)lens, (void)n;
    r->stream = stream;
    r->calls++;
    return 0;
}

static int s_rec_finish(void *ctx, void *stream) {
    s_sync_rec *r = ctx;
    r->finishes++;
    r->order_ok = r->stream == stream;
    return 0;
}

/* Bucketed backward on CUDA: the same gradients as plain backward (the
 * hooks only observe), L+1 ready calls and one finish, all with the
 * backend's compute stream (the legacy default stream, not NULL, which is
 * what the NCCL hook waits on). */
static void test_backward_sync(void) {
    fw_model *a = s_model("cuda", "fp32"), *b = s_model("cuda", "fp32");
    REQUIRE(a && b);
    const fw_model_config *cfg = fw_model_config_get(a);
    size_t n = (size_t)TB * TT, np = fw_model_num_params(a);
    int32_t in[TB * TT], tg[TB * TT];
    s_data(in, tg, n, cfg->vocab_size);
    s_sync_rec rec = {0};
    fw_grad_sync sync = {.ready = s_rec_ready, .finish = s_rec_finish, .ctx = &rec};
    CHECK_EQ_INT(fw_model_zero_grad(a), 0);
    CHECK_EQ_INT(fw_model_zero_grad(b), 0);
    CHECK_EQ_INT(fw_model_forward(a, in, tg, TB, TT, NULL), 0);
    CHECK_EQ_INT(fw_model_forward(b, in, tg, TB, TT, NULL), 0);
    CHECK_EQ_INT(fw_model_backward(a, 0), 0);
    CHECKF(fw_model_backward_sync(b, 0, &sync) == 0, "%s", fw_err_detail());
    CHECK_EQ_INT(rec.calls, fw_model_grad_buckets(cfg));
    CHECK_EQ_INT(rec.finishes, 1);
    CHECK(rec.order_ok && rec.stream == (void *)cudaStreamLegacy);
    float *ga = malloc(np * sizeof *ga), *gb = malloc(np * sizeof *gb);
    REQUIRE(ga && gb);
    cudaMemcpy(ga, fw_model_grads(a, NULL), np * sizeof *ga, cudaMemcpyDeviceToHost);
    cudaMemcpy(gb, fw_model_grads(b, NULL), np * sizeof *gb, cudaMemcpyDeviceToHost);
    CHECK(memcmp(ga, gb, np * sizeof *ga) == 0);
    free(ga), free(gb);
    fw_model_destroy(&a), fw_model_destroy(&b);
}

/* ZeRO-1 on CUDA: two models sharded into complementary ranges (split
 * inside a tensor), stepped with the unsharded model's norm, update exactly
 * their range, bitwise as the unsharded model does, and leave the rest. */
static void test_sharded_adamw(void) {
    fw_model *m[3];
    for (int i = 0; i < 3; i++) REQUIRE((m[i] = s_model("cuda", "fp32")));
    const fw_model_config *cfg = fw_model_config_get(m[0]);
    size_t n = (size_t)TB * TT, np = fw_model_num_params(m[0]), cut = np / 2 + 13;
    CHECK_EQ_INT(fw_model_shard_optimizer(m[1], 0, cut), 0);
    CHECK_EQ_INT(fw_model_shard_optimizer(m[2], cut, np - cut), 0);
    int32_t in[TB * TT], tg[TB * TT];
    s_data(in, tg, n, cfg->vocab_size);
    float *before = malloc(np * sizeof(float)), *p[3];
    for (int i = 0; i < 3; i++) REQUIRE((p[i] = malloc(np * sizeof(float))));
    REQUIRE(before);
    CHECK_EQ_INT(fw_model_read_params(m[0], before), 0);
    fw_adamw opt = fw_adamw_defaults();
    float norm = 0;
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(fw_model_zero_grad(m[i]), 0);
        CHECK_EQ_INT(fw_model_forward(m[i], in, tg, TB, TT, NULL), 0);
        CHECK_EQ_INT(fw_model_backward(m[i], 0), 0);
    }
    CHECK_EQ_INT(fw_model_step_adamw(m[0], &opt, 1, &norm), 0);
    CHECK_EQ_INT(fw_model_step_adamw(m[1], &opt, 1, NULL), FW_ESTATE);
    CHECK_EQ_INT(fw_model_step_adamw_norm(m[1], &opt, 1, norm), 0);
    CHECK_EQ_INT(fw_model_step_adamw_norm(m[2], &opt, 1, norm), 0);
    for (int i = 0; i < 3; i++) CHECK_EQ_INT(fw_model_read_params(m[i], p[i]), 0);
    CHECK(memcmp(p[1], p[0], cut * sizeof(float)) == 0);
    CHECK(memcmp(p[1] + cut, before + cut, (np - cut) * sizeof(float)) == 0);
    CHECK(memcmp(p[2] + cut, p[0] + cut, (np - cut) * sizeof(float)) == 0);
    CHECK(memcmp(p[2], before, cut * sizeof(float)) == 0);
    free(before);
    for (int i = 0; i < 3; i++) free(p[i]), fw_model_destroy(&m[i]);
}

int main(void) {
    RUN(test_device_present);
    if (fw_test_failed) return fw_test_summary();
    RUN(test_train_step_fp32);
    RUN(test_train_step_bf16);
    RUN(test_embed_fp32);
    RUN(test_embed_bf16);
    RUN(test_generate_fp32);
    RUN(test_generate_bf16);
    RUN(test_backward_sync);
    RUN(test_sharded_adamw);
    RUN(test_errors);
    return fw_test_summary();
}
