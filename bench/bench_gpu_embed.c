/* bench_gpu_embed - sentence embeddings on the CUDA backend, GPT-2 124M
 * (random weights): batches of 256 sequences of 128 tokens, mean-pooled and
 * L2-normalised (fw_model_embed). One warm-up call, then timed calls for at
 * least a second; sequences/s = 256 * calls / seconds. */
#include "engine.h"
#include "fw_err.h"
#include "fw_time.h"

#include <stdio.h>
#include <stdlib.h>

#define EB 256
#define ET 128

int main(void) {
    fw_model_config cfg;
    fw_model_config_preset("gpt2-124m", 0, &cfg);
    fw_model *m = fw_model_new(&cfg, "cuda");
    if (!m) {
        fprintf(stderr, "bench_gpu_embed: skipped: %s\n", fw_err_detail());
        return 0;
    }
    fw_model_init_random(m, 1);
    fw_model_set_train(m, 0);
    int32_t *ids = malloc((size_t)EB * ET * sizeof *ids), lens[EB];
    float *out = malloc((size_t)EB * cfg.n_embd * sizeof *out);
    if (!ids || !out) return 1;
    for (int i = 0; i < EB * ET; i++) ids[i] = (int32_t)((i * 2654435761u) % 50257u);
    for (int b = 0; b < EB; b++) lens[b] = ET;
    if (fw_model_embed(m, ids, lens, EB, ET, out) != 0) {
        fprintf(stderr, "bench_gpu_embed: %s\n", fw_err_detail());
        return 1;
    }
    int calls = 0;
    int64_t t0 = fw_mono_ns();
    double sec = 0;
    while (sec < 1.0 || calls < 3) {
        if (fw_model_embed(m, ids, lens, EB, ET, out) != 0) {
            fprintf(stderr, "bench_gpu_embed: %s\n", fw_err_detail());
            return 1;
        }
        calls++;
        sec = (double)(fw_mono_ns() - t0) / 1e9;
    }
    printf("{\"bench\": \"gpu_embed\", \"metric\": \"sequences_per_s_gpt2_124m_b256_t128\", "
           "\"value\": %.6g, \"unit\": \"sequences/s\"}\n",
           EB * (double)calls / sec);
    free(ids);
    free(out);
    fw_model_destroy(&m);
    return 0;
}
