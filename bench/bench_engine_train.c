/* bench_engine_train - training throughput of the CPU engine against the
 * machine's cblas_sgemm ceiling.
 *
 * For gpt2-124m and small (GPT-2 vocabulary, batch 4 x sequence 64, random
 * weights and random tokens; speed does not depend on the values) on 1 and 2
 * threads: one warm-up step (allocations, page faults), then timed full
 * steps (zero grad, forward, backward, AdamW).
 *
 * FLOPs per token follow llm.c: 6*N for the matmuls of forward + backward
 * (N = parameters, padded vocabulary included, as llm.c counts them) plus
 * 6*L*C*T for attention (T = the sequence length). Achieved GFLOP/s =
 * tokens/s * that / 1e9.
 *
 * The ceiling is one cblas_sgemm call, OpenBLAS threaded over the same
 * number of threads, at the shapes the forward pass of that model runs
 * (M = B*T rows against the QKV, attention projection, MLP up, MLP down and
 * LM-head weights, out = in * W^T as the engine lays them out), FLOP-weighted
 * as one layer's mix plus the head.
 * The ratio achieved / ceiling is what the engine gets out of the BLAS;
 * the rest goes to attention, LayerNorm, GELU, softmax and AdamW, which are
 * memory-bound loops.
 *
 * One JSON line a figure: {"bench", "metric", "value", "unit"}.
 * FW_BENCH_QUICK=1 times one step only (CI smoke). */
#include "engine.h"
#include "fw_err.h"
#include "fw_time.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BB 4
#define BT 64

static void s_emit(const char *metric, double value, const char *unit) {
    printf("{\"bench\": \"engine_train\", \"metric\": \"%s\", \"value\": %.6g, \"unit\": \"%s\"}\n",
           metric, value, unit);
    fflush(stdout);
}

/* GFLOP/s of out[M,N] = in[M,K] * W[N,K]^T, best of a few calls lasting
 * at least ~0.3 s in total. */
static double s_sgemm_gflops(int M, int N, int K) {
    float *a = malloc((size_t)M * K * sizeof *a), *w = malloc((size_t)N * K * sizeof *w);
    float *c = malloc((size_t)M * N * sizeof *c);
    if (!a || !w || !c) {
        free(a), free(w), free(c);
        return 0;
    }
    for (size_t i = 0; i < (size_t)M * K; i++) a[i] = (float)(i % 13) * 0.01f;
    for (size_t i = 0; i < (size_t)N * K; i++) w[i] = (float)(i % 7) * 0.01f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, a, K, w, K, 0.0f, c, N);
    double best = 1e30, spent = 0;
    for (int it = 0; it < 20 && (spent < 0.3 || it < 2); it++) {
        int64_t t0 = fw_mono_ns();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, a, K, w, K, 0.0f, c,
                    N);
        double s = (double)(fw_mono_ns() - t0) / 1e9;
        spent += s;
        if (s < best) best = s;
    }
    free(a), free(w), free(c);
    return 2.0 * M * N * K / best / 1e9;
}

/* The forward matmul mix of cfg at B*T rows: FLOP-weighted GFLOP/s of
 * cblas_sgemm on `threads` threads. */
static double s_sgemm_ceiling(const fw_model_config *cfg, int threads) {
    int C = cfg->n_embd, M = BB * BT;
    struct {
        int n, k;
        double weight; /* how often per model */
    } shapes[] = {{3 * C, C, cfg->n_layer},
                  {C, C, cfg->n_layer},
                  {4 * C, C, cfg->n_layer},
                  {C, 4 * C, cfg->n_layer},
                  {cfg->padded_vocab_size, C, 1}};
    double flops = 0, secs = 0;
    openblas_set_num_threads(threads);
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        double f = 2.0 * M * shapes[i].n * shapes[i].k * shapes[i].weight;
        double g = s_sgemm_gflops(M, shapes[i].n, shapes[i].k);
        if (g <= 0) {
            secs = 0;
            break;
        }
        flops += f;
        secs += f / (g * 1e9);
    }
    fw_engine_set_threads(threads); /* back to the engine's setting: OpenBLAS on 1 thread */
    return secs > 0 ? flops / secs / 1e9 : 0;
}

static int s_bench(const char *preset, int threads, int steps) {
    fw_model_config cfg;
    if (fw_model_config_preset(preset, 0, &cfg) != 0) return -1;
    fw_engine_set_threads(threads);
    fw_model *m = fw_model_new(&cfg, "cpu");
    if (!m || fw_model_init_random(m, 1) != 0) {
        fprintf(stderr, "bench_engine_train: %s: %s\n", preset, fw_err_detail());
        fw_model_destroy(&m);
        return -1;
    }
    int32_t *in = malloc(BB * BT * sizeof *in), *tg = malloc(BB * BT * sizeof *tg);
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < BB * BT; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        in[i] = (int32_t)(x % (uint64_t)cfg.vocab_size);
    }
    for (int i = 0; i < BB * BT; i++) tg[i] = in[(i + 1) % (BB * BT)];
    fw_adamw opt = fw_adamw_defaults();
    double secs = 0;
    int rc = 0;
    for (int s = 0; s <= steps && !rc; s++) { /* step 0 is the warm-up */
        int64_t t0 = fw_mono_ns();
        float loss, norm;
        rc = fw_model_zero_grad(m);
        if (!rc) rc = fw_model_forward(m, in, tg, BB, BT, &loss);
        if (!rc) rc = fw_model_backward(m, 0);
        if (!rc) rc = fw_model_step_adamw(m, &opt, s + 1, &norm);
        if (s > 0) secs += (double)(fw_mono_ns() - t0) / 1e9;
    }
    if (rc) {
        fprintf(stderr, "bench_engine_train: %s: %s\n", preset, fw_err_detail());
    } else {
        double tps = (double)steps * BB * BT / secs;
        double n = (double)fw_model_num_params(m);
        double per_token = 6.0 * n + 6.0 * cfg.n_layer * cfg.n_embd * BT;
        double achieved = tps * per_token / 1e9;
        double ceiling = s_sgemm_ceiling(&cfg, threads);
        char name[128];
        snprintf(name, sizeof name, "%s_b%d_t%d_threads%d_tokens_per_s", preset, BB, BT, threads);
        s_emit(name, tps, "tokens/s");
        snprintf(name, sizeof name, "%s_threads%d_gflops", preset, threads);
        s_emit(name, achieved, "GFLOP/s");
        snprintf(name, sizeof name, "%s_threads%d_sgemm_ceiling_gflops", preset, threads);
        s_emit(name, ceiling, "GFLOP/s");
        snprintf(name, sizeof name, "%s_threads%d_fraction_of_sgemm", preset, threads);
        s_emit(name, ceiling > 0 ? achieved / ceiling : 0, "ratio");
    }
    free(in), free(tg);
    fw_model_destroy(&m);
    return rc;
}

int main(void) {
    int quick = getenv("FW_BENCH_QUICK") && atoi(getenv("FW_BENCH_QUICK")) > 0;
    int rc = 0;
    for (int threads = 1; threads <= 2; threads++) {
        rc |= s_bench("gpt2-124m", threads, quick ? 1 : 2);
        rc |= s_bench("small", threads, quick ? 1 : 5);
    }
    return rc ? 1 : 0;
}
