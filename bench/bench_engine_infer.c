/* bench_engine_infer - inference throughput of the CPU engine at batch 1.
 *
 * For small and gpt2-124m (GPT-2 vocabulary, random weights and random
 * tokens; speed does not depend on the values) on 1 and 2 threads:
 *   - embedding: sentences of EMBED_LEN tokens one at a time through
 *     fw_model_embed (forward to ln_f, mean pool, L2 norm): sentences/s;
 *   - generation: a PROMPT_LEN-token prompt prefilled into a KV cache, then
 *     GEN_TOKENS tokens decoded one at a time with greedy sampling, as
 *     `flywheel-engine generate` does: decode tokens/s (the steady state,
 *     which reads every weight once per token and is memory-bound) and
 *     end-to-end tokens/s (prefill included) and the prefill time.
 * Each figure is timed over at least ~1 s after one warm-up call
 * (allocations, page faults).
 *
 * One JSON line a figure: {"bench", "metric", "value", "unit"}.
 * FW_BENCH_QUICK=1 runs a few iterations only (CI smoke). */
#include "engine.h"
#include "fw_err.h"
#include "fw_time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EMBED_LEN  32
#define PROMPT_LEN 16
#define GEN_TOKENS 64

static int g_quick;

static void s_emit(const char *metric, double value, const char *unit) {
    printf("{\"bench\": \"engine_infer\", \"metric\": \"%s\", \"value\": %.6g, \"unit\": \"%s\"}\n",
           metric, value, unit);
    fflush(stdout);
}

static double s_now(void) {
    return (double)fw_mono_ns() / 1e9;
}

static void s_rand_ids(int32_t *ids, int n, int V, uint64_t *x) {
    for (int i = 0; i < n; i++) {
        *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
        ids[i] = (int32_t)(*x % (uint64_t)V);
    }
}

/* Sentences/s of fw_model_embed at batch 1. */
static int s_bench_embed(fw_model *m, const char *preset, int threads) {
    const fw_model_config *cfg = fw_model_config_get(m);
    int32_t ids[EMBED_LEN], len = EMBED_LEN;
    float *out = malloc((size_t)cfg->n_embd * sizeof *out);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    if (!out) return -1;
    fw_model_set_train(m, 0);
    s_rand_ids(ids, EMBED_LEN, cfg->vocab_size, &x);
    int rc = fw_model_embed(m, ids, &len, 1, EMBED_LEN, out); /* warm-up */
    int n = 0;
    double t0 = s_now(), el = 0;
    while (rc == 0 && (n < 3 || (el < 1.0 && !g_quick)) && n < 10000) {
        s_rand_ids(ids, EMBED_LEN, cfg->vocab_size, &x);
        rc = fw_model_embed(m, ids, &len, 1, EMBED_LEN, out);
        n++;
        el = s_now() - t0;
    }
    free(out);
    if (rc) return rc;
    char name[128];
    snprintf(name, sizeof name, "%s_embed_t%d_threads%d_sentences_per_s", preset, EMBED_LEN,
             threads);
    s_emit(name, n / el, "sentences/s");
    return 0;
}

/* One generation: prefill PROMPT_LEN tokens, decode GEN_TOKENS greedily.
 * Adds the prefill and decode seconds to *tp and *td. */
static int s_generate_once(fw_model *m, fw_kv_cache *c, uint64_t *x, double *tp, double *td) {
    const fw_model_config *cfg = fw_model_config_get(m);
    int V = cfg->vocab_size;
    int32_t prompt[PROMPT_LEN];
    float *logits = malloc((size_t)V * sizeof *logits);
    if (!logits) return FW_ENOMEM;
    s_rand_ids(prompt, PROMPT_LEN, V, x);
    fw_kv_cache_reset(c, -1);
    fw_sampler greedy = {.temperature = 0};
    fw_rng rng;
    fw_rng_seed(&rng, 1);
    double t0 = s_now();
    int rc = fw_model_prefill(m, c, 0, prompt, PROMPT_LEN, logits);
    double t1 = s_now();
    for (int i = 0; i < GEN_TOKENS && rc == 0; i++) {
        int id = fw_sample(logits, V, &greedy, &rng);
        if (id < 0) {
            rc = id;
            break;
        }
        int32_t tok = id;
        if (i + 1 < GEN_TOKENS) rc = fw_model_decode(m, c, &tok, NULL, logits);
    }
    double t2 = s_now();
    free(logits);
    *tp += t1 - t0;
    *td += t2 - t1;
    return rc;
}

static int s_bench_generate(fw_model *m, const char *preset, int threads) {
    fw_kv_cache *c = fw_kv_cache_new(m, 1, PROMPT_LEN + GEN_TOKENS);
    if (!c) return -1;
    uint64_t x = 0xD1B54A32D192ED03ull;
    double tp = 0, td = 0;
    int rc = s_generate_once(m, c, &x, &tp, &td); /* warm-up */
    tp = td = 0;
    int runs = 0;
    while (rc == 0 && (runs < 1 || (tp + td < 1.0 && !g_quick)) && runs < 100) {
        rc = s_generate_once(m, c, &x, &tp, &td);
        runs++;
    }
    fw_kv_cache_destroy(&c);
    if (rc) return rc;
    char name[128];
    /* GEN_TOKENS tokens come out of each run: the first from the prefill's
     * logits, the other GEN_TOKENS - 1 from decode steps. */
    snprintf(name, sizeof name, "%s_generate_b1_threads%d_decode_tokens_per_s", preset, threads);
    s_emit(name, runs * (GEN_TOKENS - 1) / td, "tokens/s");
    snprintf(name, sizeof name, "%s_generate_b1_p%d_n%d_threads%d_tokens_per_s", preset, PROMPT_LEN,
             GEN_TOKENS, threads);
    s_emit(name, runs * GEN_TOKENS / (tp + td), "tokens/s");
    snprintf(name, sizeof name, "%s_prefill_p%d_threads%d_ms", preset, PROMPT_LEN, threads);
    s_emit(name, 1e3 * tp / runs, "ms");
    return 0;
}

static int s_bench(const char *preset, int threads) {
    fw_model_config cfg;
    if (fw_model_config_preset(preset, 0, &cfg) != 0) return -1;
    fw_engine_set_threads(threads);
    fw_model *m = fw_model_new(&cfg, "cpu");
    int rc = -1;
    if (m && fw_model_init_random(m, 1) == 0) {
        rc = s_bench_embed(m, preset, threads);
        if (rc == 0) rc = s_bench_generate(m, preset, threads);
    }
    if (rc) fprintf(stderr, "bench_engine_infer: %s: %s\n", preset, fw_err_detail());
    fw_model_destroy(&m);
    return rc;
}

int main(void) {
    g_quick = getenv("FW_BENCH_QUICK") && atoi(getenv("FW_BENCH_QUICK")) > 0;
    int rc = 0;
    for (int threads = 1; threads <= 2; threads++) {
        rc |= s_bench("small", threads);
        rc |= s_bench("gpt2-124m", threads);
    }
    return rc ? 1 : 0;
}
