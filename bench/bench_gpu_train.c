/* bench_gpu_train - training throughput of the CUDA backend: GPT-2 124M
 * (random weights and tokens; speed does not depend on the values) at
 * sequence 1024 and the largest batch that fits (tried from 64 down), in
 * BF16 mode (FW_CUDA_PRECISION=fp32 for the FP32 figure).
 *
 * Timed: full steps (zero grad, forward, backward, AdamW) after 2 warm-up
 * steps; tokens/s = B*T*steps / seconds.
 *
 * MFU against the H100 SXM BF16 dense peak (989 TFLOP/s; set FW_PEAK_TFLOPS
 * for another GPU), with both usual FLOP counts per token:
 *   llm.c: 6*N + 6*L*C*T    (attention as 6LCT: causal half of 12LCT)
 *   PaLM:  6*N + 12*L*C*T   (PaLM paper appendix B, attention not halved)
 * N = every parameter, padded vocabulary and position table included, as
 * llm.c counts them. One JSON line a figure. */
#include "engine.h"
#include "fw_err.h"
#include "fw_time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T           1024
#define TIMED_STEPS 8

static void s_emit(const char *metric, double value, const char *unit) {
    printf("{\"bench\": \"gpu_train\", \"metric\": \"%s\", \"value\": %.6g, \"unit\": \"%s\"}\n",
           metric, value, unit);
    fflush(stdout);
}

static int s_step(fw_model *m, const int32_t *in, const int32_t *tg, int B, int64_t step) {
    fw_adamw opt = fw_adamw_defaults();
    float loss;
    int rc = fw_model_zero_grad(m);
    if (rc == 0) rc = fw_model_forward(m, in, tg, B, T, &loss);
    if (rc == 0) rc = fw_model_backward(m, 0);
    if (rc == 0) rc = fw_model_step_adamw(m, &opt, step, NULL);
    return rc;
}

int main(void) {
    fw_model_config cfg;
    fw_model_config_preset("gpt2-124m", 0, &cfg);
    fw_model *m = fw_model_new(&cfg, "cuda");
    if (!m) {
        fprintf(stderr, "bench_gpu_train: skipped: %s\n", fw_err_detail());
        return 0;
    }
    fw_model_init_random(m, 1);
    const char *prec = getenv("FW_CUDA_PRECISION");
    prec = prec && *prec ? prec : "bf16";
    static const int batches[] = {64, 48, 32, 24, 16, 8, 4, 2, 1};
    int32_t *in = NULL, *tg = NULL;
    int B = 0;
    for (size_t i = 0; i < sizeof batches / sizeof batches[0]; i++) {
        int b = batches[i];
        free(in), free(tg);
        in = malloc((size_t)b * T * sizeof *in);
        tg = malloc((size_t)b * T * sizeof *tg);
        if (!in || !tg) break;
        uint64_t x = 88172645463325252ull;
        for (size_t j = 0; j < (size_t)b * T; j++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            in[j] = (int32_t)(x % 50257);
            tg[j] = (int32_t)((x >> 20) % 50257);
        }
        /* The first step allocates everything a step needs: if it fits, B fits. */
        if (s_step(m, in, tg, b, 1) == 0) {
            B = b;
            break;
        }
        fprintf(stderr, "bench_gpu_train: batch %d does not fit: %s\n", b, fw_err_detail());
        /* Let the next, smaller attempt start from a clean slate. */
        fw_model_destroy(&m);
        m = fw_model_new(&cfg, "cuda");
        if (!m) break;
        fw_model_init_random(m, 1);
    }
    if (!B || !m) {
        fprintf(stderr, "bench_gpu_train: no batch fits: %s\n", fw_err_detail());
        return 1;
    }
    if (s_step(m, in, tg, B, 2) != 0) {
        fprintf(stderr, "bench_gpu_train: %s\n", fw_err_detail());
        return 1;
    }
    int64_t t0 = fw_mono_ns();
    for (int s = 0; s < TIMED_STEPS; s++)
        if (s_step(m, in, tg, B, 3 + s) != 0) {
            fprintf(stderr, "bench_gpu_train: %s\n", fw_err_detail());
            return 1;
        }
    double sec = (double)(fw_mono_ns() - t0) / 1e9;
    double tps = (double)B * T * TIMED_STEPS / sec;
    double N = (double)fw_model_num_params(m), L = cfg.n_layer, C = cfg.n_embd;
    double f_llmc = 6 * N + 6 * L * C * T, f_palm = 6 * N + 12 * L * C * T;
    double peak = getenv("FW_PEAK_TFLOPS") ? atof(getenv("FW_PEAK_TFLOPS")) * 1e12 : 989e12;
    char metric[96];
    s_emit("batch", B, "rows");
    snprintf(metric, sizeof metric, "tokens_per_s_gpt2_124m_t1024_%s", prec);
    s_emit(metric, tps, "tokens/s");
    s_emit("step_time", sec / TIMED_STEPS * 1e3, "ms");
    s_emit("mfu_llmc_6N_6LCT", 100.0 * tps * f_llmc / peak, "%");
    s_emit("mfu_palm_6N_12LCT", 100.0 * tps * f_palm / peak, "%");
    free(in), free(tg);
    fw_model_destroy(&m);
    return 0;
}
