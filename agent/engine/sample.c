/* sample.c - the engine's seeded random numbers and next-token sampling.
 *
 * fw_rng is xoshiro256** (Blackman & Vigna), seeded through splitmix64 so
 * that nearby seeds give unrelated streams. Its state is four words of plain
 * data: checkpoints store it and a resumed run draws the same numbers.
 *
 * fw_sample applies, in this order: temperature (greedy when <= 0), top-k
 * (the k largest logits), top-p (the smallest prefix of the remaining tokens,
 * most likely first, whose probability reaches p), then draws one token with
 * a single uniform number. Candidates are ordered by logit and then by id,
 * so the result depends only on the logits and the rng state. */
#include "engine.h"

#include "fw_err.h"

#include <math.h>
#include <stdlib.h>

static uint64_t s_splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void fw_rng_seed(fw_rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = s_splitmix64(&x);
}

static uint64_t s_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t fw_rng_u64(fw_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = s_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = s_rotl(s[3], 45);
    return result;
}

double fw_rng_uniform(fw_rng *r) { return (double)(fw_rng_u64(r) >> 11) * 0x1.0p-53; }

double fw_rng_normal(fw_rng *r) {
    /* Box-Muller with u1 in (0, 1] so the log is finite; one of the pair is
     * dropped to keep the state a plain 4-word struct. */
    double u1 = 1.0 - fw_rng_uniform(r);
    double u2 = fw_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

typedef struct {
    float logit;
    int id;
} s_cand;

static int s_cand_cmp(const void *a, const void *b) {
    const s_cand *x = a, *y = b;
    if (x->logit > y->logit) return -1;
    if (x->logit < y->logit) return 1;
    return (x->id > y->id) - (x->id < y->id);
}

int fw_sample(const float *logits, int V, const fw_sampler *s, fw_rng *rng) {
    if (!logits || V < 1 || !s || !rng) return fw_err_set(FW_EINVAL, "sample: bad arguments");
    int best = 0;
    for (int i = 0; i < V; i++) {
        if (isnan(logits[i])) return fw_err_set(FW_EINVAL, "sample: logit %d is NaN", i);
        if (logits[i] > logits[best]) best = i;
    }
    if (!(s->temperature > 0) || s->top_k == 1) return best;

    s_cand *c = malloc((size_t)V * sizeof *c);
    double *p = malloc((size_t)V * sizeof *p);
    if (!c || !p) {
        free(c);
        free(p);
        return fw_err_set(FW_ENOMEM, "sample: %d candidates", V);
    }
    for (int i = 0; i < V; i++) c[i] = (s_cand){logits[i], i};
    qsort(c, (size_t)V, sizeof *c, s_cand_cmp);
    int k = (s->top_k > 0 && s->top_k < V) ? s->top_k : V;
    double total = 0.0, maxl = c[0].logit;
    for (int i = 0; i < k; i++) {
        p[i] = exp(((double)c[i].logit - maxl) / s->temperature);
        total += p[i];
    }
    if (s->top_p > 0 && s->top_p < 1) {
        double cum = 0.0;
        int keep = k;
        for (int i = 0; i < k; i++) {
            cum += p[i] / total;
            if (cum >= s->top_p) {
                keep = i + 1;
                break;
            }
        }
        k = keep;
        total = 0.0;
        for (int i = 0; i < k; i++) total += p[i];
    }
    double u = fw_rng_uniform(rng) * total;
    int id = c[k - 1].id; /* rounding can leave u just above the last sum */
    double cum = 0.0;
    for (int i = 0; i < k; i++) {
        cum += p[i];
        if (u < cum) {
            id = c[i].id;
            break;
        }
    }
    free(c);
    free(p);
    return id;
}
