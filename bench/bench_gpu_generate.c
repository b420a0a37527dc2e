/* bench_gpu_generate - KV-cache generation on the CUDA backend, GPT-2 124M
 * (random weights), batch 1 and batch 32: prefill a 16-token prompt per row,
 * then 128 greedy decode steps timed. tokens/s = rows * steps / seconds,
 * sampling on the host included (as a user of fw_model_decode sees it).
 * Compare: bench/pytorch/generate_hf.py (Hugging Face generate, same shapes). */
#include "engine.h"
#include "fw_err.h"
#include "fw_time.h"

#include <stdio.h>
#include <stdlib.h>

#define PROMPT 16
#define STEPS  128

static int s_run(fw_model *m, int batch, double *tps) {
    int V = fw_model_config_get(m)->vocab_size, rc = 0;
    fw_kv_cache *kv = fw_kv_cache_new(m, batch, PROMPT + STEPS + 1);
    float *logits = malloc((size_t)batch * V * sizeof *logits);
    int32_t *ids = malloc((size_t)batch * sizeof *ids), prompt[PROMPT];
    fw_sampler greedy = {0};
    fw_rng rng;
    fw_rng_seed(&rng, 1);
    if (!kv || !logits || !ids) {
        rc = kv ? FW_ENOMEM : -1;
        goto done;
    }
    for (int r = 0; r < batch && rc == 0; r++) {
        for (int i = 0; i < PROMPT; i++) prompt[i] = (int32_t)((r * 31 + i * 7) % V);
        rc = fw_model_prefill(m, kv, r, prompt, PROMPT, logits + (size_t)r * V);
        ids[r] = fw_sample(logits + (size_t)r * V, V, &greedy, &rng);
    }
    int64_t t0 = fw_mono_ns();
    for (int s = 0; s < STEPS && rc == 0; s++) {
        rc = fw_model_decode(m, kv, ids, NULL, logits);
        for (int r = 0; r < batch && rc == 0; r++)
            ids[r] = fw_sample(logits + (size_t)r * V, V, &greedy, &rng);
    }
    *tps = (double)batch * STEPS / ((double)(fw_mono_ns() - t0) / 1e9);
done:
    fw_kv_cache_destroy(&kv);
    free(logits);
    free(ids);
    return rc;
}

int main(void) {
    fw_model_config cfg;
    fw_model_config_preset("gpt2-124m", 0, &cfg);
    fw_model *m = fw_model_new(&cfg, "cuda");
    if (!m) {
        fprintf(stderr, "bench_gpu_generate: skipped: %s\n", fw_err_detail());
        return 0;
    }
    fw_model_init_random(m, 1);
    static const int batches[] = {1, 32};
    for (int i = 0; i < 2; i++) {
        double tps = 0;
        if (s_run(m, batches[i], &tps) != 0) {
            fprintf(stderr, "bench_gpu_generate: batch %d: %s\n", batches[i], fw_err_detail());
            return 1;
        }
        printf("{\"bench\": \"gpu_generate\", \"metric\": \"tokens_per_s_gpt2_124m_b%d\", "
               "\"value\": %.6g, \"unit\": \"tokens/s\"}\n",
               batches[i], tps);
        fflush(stdout);
    }
    fw_model_destroy(&m);
    return 0;
}
