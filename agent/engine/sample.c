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
 * so the result depends only on the logits and the rng state.
 *
 * Speed: sorting all 50257 candidates cost ~9 ms a token, more than a
 * decoding step of the small model. So nothing is sorted that cannot be
 * drawn: plain temperature sampling walks the tokens in id order; top-k first
 * selects the k largest (quickselect, O(V)); top-p selects the 64, 256, ...
 * largest until they hold p of the mass. Only that prefix is sorted, and
 * because the order is total (ids break ties) it is exactly the prefix a
 * full sort would give. */
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

static void s_swap(s_cand *c, int i, int j) {
    s_cand t = c[i];
    c[i] = c[j];
    c[j] = t;
}

/* Reorder c[0..n) so that c[0..k) hold its k first elements in s_cand_cmp
 * order (in no particular order among themselves); 1 <= k <= n.
 * Quickselect with a median-of-three pivot: O(n) on average. */
static void s_select(s_cand *c, int n, int k) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        /* median of c[lo], c[mid], c[hi] to c[hi] */
        if (s_cand_cmp(&c[mid], &c[lo]) < 0) s_swap(c, mid, lo);
        if (s_cand_cmp(&c[hi], &c[lo]) < 0) s_swap(c, hi, lo);
        if (s_cand_cmp(&c[mid], &c[hi]) < 0) s_swap(c, mid, hi);
        s_cand pivot = c[hi];
        int i = lo;
        for (int j = lo; j < hi; j++)
            if (s_cand_cmp(&c[j], &pivot) < 0) s_swap(c, i++, j);
        s_swap(c, i, hi);
        if (i == k || i == k - 1) return;
        if (i > k)
            hi = i - 1;
        else
            lo = i + 1;
    }
}

/* One draw of u in [0, total) against weights w[0..n) walked in order;
 * rounding can leave u just above the last sum: take the last positive one. */
static int s_walk(const double *w, int n, double u) {
    double cum = 0.0;
    int last = 0;
    for (int i = 0; i < n; i++) {
        if (w[i] > 0) last = i;
        cum += w[i];
        if (u < cum) return i;
    }
    return last;
}

int fw_sample(const float *logits, int V, const fw_sampler *s, fw_rng *rng) {
    if (!logits || V < 1 || !s || !rng) return fw_err_set(FW_EINVAL, "sample: bad arguments");
    int best = 0;
    for (int i = 0; i < V; i++) {
        if (isnan(logits[i])) return fw_err_set(FW_EINVAL, "sample: logit %d is NaN", i);
        if (logits[i] > logits[best]) best = i;
    }
    if (!(s->temperature > 0) || s->top_k == 1) return best;

    double maxl = logits[best], temp = s->temperature;
    int k = (s->top_k > 0 && s->top_k < V) ? s->top_k : V;
    int use_p = s->top_p > 0 && s->top_p < 1;
    s_cand *c = malloc((size_t)V * sizeof *c);
    double *p = malloc((size_t)V * sizeof *p);
    if (!c || !p) {
        free(c);
        free(p);
        return fw_err_set(FW_ENOMEM, "sample: %d candidates", V);
    }
    int id;
    if (k == V && !use_p) { /* every token is a candidate: no order needed */
        double total = 0.0;
        for (int i = 0; i < V; i++) total += p[i] = exp(((double)logits[i] - maxl) / temp);
        id = s_walk(p, V, fw_rng_uniform(rng) * total);
        goto out;
    }
    for (int i = 0; i < V; i++) c[i] = (s_cand){logits[i], i};
    if (k < V) s_select(c, V, k); /* c[0..k): the top k */
    int n = k;
    if (use_p) {
        /* The nucleus is the shortest sorted prefix holding top_p of the
         * mass of the n candidates: grow a selected prefix until it does. */
        double total = 0.0, want;
        for (int i = 0; i < n; i++) total += exp(((double)c[i].logit - maxl) / temp);
        want = s->top_p * total;
        for (int m = n < 64 ? n : 64;; m = m > n / 4 ? n : 4 * m) {
            s_select(c, n, m);
            double mass = 0.0;
            for (int i = 0; i < m; i++) mass += exp(((double)c[i].logit - maxl) / temp);
            if (mass >= want || m == n) {
                n = m;
                break;
            }
        }
        qsort(c, (size_t)n, sizeof *c, s_cand_cmp);
        double cum = 0.0;
        for (int i = 0; i < n; i++) {
            cum += exp(((double)c[i].logit - maxl) / temp);
            if (cum >= want) {
                n = i + 1;
                break;
            }
        }
    } else {
        qsort(c, (size_t)n, sizeof *c, s_cand_cmp);
    }
    double total = 0.0;
    for (int i = 0; i < n; i++) total += p[i] = exp(((double)c[i].logit - maxl) / temp);
    id = c[s_walk(p, n, fw_rng_uniform(rng) * total)].id;
out:
    free(c);
    free(p);
    return id;
}
