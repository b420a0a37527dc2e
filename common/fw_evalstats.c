/* fw_evalstats.c - exact merging of sharded eval results and paired
 * bootstrap comparison (see fw_evalstats.h, docs/eval.md).
 *
 * Theory of operation
 * -------------------
 * Merging. A shard's result is a per-example file; the global result is a
 * function of the union of the examples, never of how they were cut:
 *
 *   I1  A finished set holds records 0..n-1 exactly once each, all of one kind
 *       (fw_evalset_finish refuses duplicates, gaps and short sets).
 *   I2  Counts (records, tokens, exact matches, correct answers) are integers
 *       and add exactly.
 *   I3  The loss numerator sum(-logprob) is kept in a superaccumulator
 *       (fw_xsum): every finite double is a multiple of 2^-1074, so a
 *       fixed-point integer of ~2,200 bits holds any sum of them exactly.
 *       Exact addition is associative, so shard sums merged in any grouping
 *       and order equal the one-pass sum bit for bit, and the final rounding
 *       to a double depends only on that exact total. Means are never merged:
 *       a mean of shard means is wrong for shards of different sizes.
 *
 * Comparison. Both models scored the same n examples; example i of A and
 * example i of B are a pair. The paired bootstrap draws n indices with
 * replacement, the SAME indices for both models, recomputes each metric for
 * both on the resample and keeps B - A; the percentile interval of those
 * differences is the confidence interval. Resampling pairs keeps the
 * per-example correlation (a hard example is hard for both models), which is
 * what makes the interval of the difference narrow; resampling the models
 * independently (opts.unpaired, kept to show this) throws it away. Ratio
 * metrics (token-weighted loss) are recomputed as a ratio of resampled sums,
 * not averaged per example. The PRNG is our own xoshiro256** so a seed gives
 * the same interval on every platform. */
#include "fw_evalstats.h"

#include "fw_err.h"
#include "fw_file.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the PRNG ----------------------------------------------------------- */

static uint64_t s_splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t s_rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

void fw_evalrng_seed(fw_evalrng *r, uint64_t seed) {
    /* splitmix64 spreads any seed (0 included) over the 256-bit state, which
     * xoshiro must never see all zero. */
    for (int i = 0; i < 4; i++) r->s[i] = s_splitmix64(&seed);
}

uint64_t fw_evalrng_next(fw_evalrng *r) {
    uint64_t *s = r->s;
    uint64_t out = s_rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0], s[3] ^= s[1], s[1] ^= s[2], s[0] ^= s[3];
    s[2] ^= t;
    s[3] = s_rotl(s[3], 45);
    return out;
}

__extension__ typedef unsigned __int128 s_u128;

uint64_t fw_evalrng_below(fw_evalrng *r, uint64_t n) {
    /* Lemire's multiply-shift with rejection: unbiased, and the rejection
     * branch is taken with probability n / 2^64, i.e. never in practice. */
    s_u128 m = (s_u128)fw_evalrng_next(r) * n;
    uint64_t lo = (uint64_t)m;
    if (lo < n) {
        uint64_t t = (0 - n) % n;
        while (lo < t) {
            m = (s_u128)fw_evalrng_next(r) * n;
            lo = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

/* ---- exact sums ----------------------------------------------------------- */

/* Bit 0 of limb 0 weighs 2^-S_XSUM_BIAS. The smallest double is 2^-1074 and
 * its 53-bit significand starts up to 52 bits lower; 64 spare bits keep every
 * position non-negative. The largest lands at bit 2109 + 53; limbs 67..69
 * are headroom for carries. */
#define S_XSUM_BIAS 1138
#define S_MASK32    0xffffffffULL

void fw_xsum_init(fw_xsum *x) {
    memset(x, 0, sizeof *x);
}

/* Propagate carries so limbs 0..68 lie in [0, 2^32): the canonical form of
 * the total (the top limb keeps the sign), hence a unique representation. */
static void s_xsum_normalize(fw_xsum *x) {
    for (int i = 0; i < FW_XSUM_LIMBS - 1; i++) {
        int64_t low = (int64_t)((uint64_t)x->limb[i] & S_MASK32);
        int64_t carry = (x->limb[i] - low) / ((int64_t)1 << 32); /* exact division */
        x->limb[i] = low;
        x->limb[i + 1] += carry;
    }
    x->pending = 0;
}

int fw_xsum_add(fw_xsum *x, double v) {
    if (!isfinite(v)) return fw_err_set(FW_EINVAL, "sum: value %g is not finite", v);
    if (v == 0.0) return 0;
    int e;
    double m = frexp(fabs(v), &e);          /* |v| = m * 2^e, m in [0.5, 1) */
    uint64_t mant = (uint64_t)ldexp(m, 53); /* exact: 53 bits at most */
    int pos = e - 53 + S_XSUM_BIAS;         /* weight of mant's bit 0 */
    int i = pos / 32, sh = pos % 32;
    uint64_t mid = mant << sh, hi = sh ? mant >> (64 - sh) : 0;
    int64_t c0 = (int64_t)(mid & S_MASK32), c1 = (int64_t)(mid >> 32), c2 = (int64_t)hi;
    if (v < 0) c0 = -c0, c1 = -c1, c2 = -c2;
    x->limb[i] += c0, x->limb[i + 1] += c1, x->limb[i + 2] += c2;
    /* Each addition moves a limb by less than 2^32; 2^30 of them stay far
     * from the int64 limit. */
    if (++x->pending >= (1u << 30)) s_xsum_normalize(x);
    return 0;
}

void fw_xsum_merge(fw_xsum *x, const fw_xsum *y) {
    fw_xsum t = *y;
    s_xsum_normalize(&t);
    s_xsum_normalize(x);
    for (int i = 0; i < FW_XSUM_LIMBS; i++) x->limb[i] += t.limb[i];
    s_xsum_normalize(x);
}

int fw_xsum_value(const fw_xsum *x, double *out) {
    fw_xsum t = *x;
    s_xsum_normalize(&t);
    int neg = t.limb[FW_XSUM_LIMBS - 1] < 0;
    if (neg) {
        for (int i = 0; i < FW_XSUM_LIMBS; i++) t.limb[i] = -t.limb[i];
        s_xsum_normalize(&t);
    }
    /* Most significant limb first: the canonical limbs fix the result, and
     * each limb holds 32 bits so the first two or three already give the 53
     * bits of a double; the rest only round. */
    double r = 0.0;
    for (int i = FW_XSUM_LIMBS - 1; i >= 0; i--)
        if (t.limb[i]) r += ldexp((double)t.limb[i], 32 * i - S_XSUM_BIAS);
    if (!isfinite(r)) {
        *out = neg ? -HUGE_VAL : HUGE_VAL;
        return fw_err_set(FW_ETOOBIG, "sum: the total does not fit in a double");
    }
    *out = neg ? -r : r;
    return 0;
}

/* ---- summaries -------------------------------------------------------------- */

const char *fw_eval_kind_name(fw_eval_kind kind) {
    switch (kind) {
    case FW_EVAL_TEXT:
        return "text";
    case FW_EVAL_COMPLETION:
        return "completion";
    case FW_EVAL_CHOICE:
        return "choice";
    default:
        return "none";
    }
}

void fw_evalsum_init(fw_evalsum *s) {
    memset(s, 0, sizeof *s);
    fw_xsum_init(&s->nll);
}

int fw_evalsum_add(fw_evalsum *s, fw_eval_kind kind, const fw_eval_example *e) {
    if (kind == FW_EVAL_NONE)
        return fw_err_set(FW_EINVAL, "summary: example %llu has no kind",
                          (unsigned long long)e->index);
    if (s->kind != FW_EVAL_NONE && s->kind != kind)
        return fw_err_set(FW_EINVAL, "summary: a %s example (index %llu) in a %s summary",
                          fw_eval_kind_name(kind), (unsigned long long)e->index,
                          fw_eval_kind_name(s->kind));
    if (kind != FW_EVAL_CHOICE) {
        int rc = fw_xsum_add(&s->nll, -e->logprob);
        if (rc)
            return fw_err_set(rc, "summary: example %llu: logprob is not finite",
                              (unsigned long long)e->index);
        s->tokens += e->tokens;
        if (kind == FW_EVAL_COMPLETION) s->exact_matches += e->exact_match != 0;
    } else {
        s->correct += e->correct != 0;
        s->correct_norm += e->correct_norm != 0;
    }
    s->kind = kind;
    s->records++;
    return 0;
}

int fw_evalsum_merge(fw_evalsum *into, const fw_evalsum *from) {
    if (from->kind == FW_EVAL_NONE) return 0;
    if (into->kind != FW_EVAL_NONE && into->kind != from->kind)
        return fw_err_set(FW_EINVAL,
                          "merge: a %s summary into a %s summary (shards of "
                          "different kinds of dataset)",
                          fw_eval_kind_name(from->kind), fw_eval_kind_name(into->kind));
    into->kind = from->kind;
    into->records += from->records;
    into->tokens += from->tokens;
    fw_xsum_merge(&into->nll, &from->nll);
    into->exact_matches += from->exact_matches;
    into->correct += from->correct;
    into->correct_norm += from->correct_norm;
    return 0;
}

int fw_evalsum_metrics(const fw_evalsum *s, fw_evalmetrics *out) {
    out->loss = out->perplexity = out->exact_match = NAN;
    out->accuracy = out->accuracy_norm = NAN;
    if (s->records == 0) return fw_err_set(FW_EINVAL, "summary: no records");
    if (s->kind == FW_EVAL_CHOICE) {
        out->accuracy = (double)s->correct / (double)s->records;
        out->accuracy_norm = (double)s->correct_norm / (double)s->records;
        return 0;
    }
    if (s->tokens == 0) return fw_err_set(FW_EINVAL, "summary: no token to score");
    double nll;
    int rc = fw_xsum_value(&s->nll, &nll);
    if (rc) return rc;
    out->loss = nll / (double)s->tokens;
    out->perplexity = exp(out->loss);
    if (s->kind == FW_EVAL_COMPLETION)
        out->exact_match = (double)s->exact_matches / (double)s->records;
    return 0;
}

/* A real, or null for what JSON cannot hold (a perplexity past DBL_MAX). */
static json_t *s_jreal(double v) {
    return isfinite(v) ? json_real(v) : json_null();
}

json_t *fw_evalsum_to_json(const fw_evalsum *s) {
    fw_evalmetrics m;
    if (fw_evalsum_metrics(s, &m) != 0) return NULL;
    json_t *j = json_object();
    if (!j) goto oom;
    int bad = json_object_set_new(j, "kind", json_string(fw_eval_kind_name(s->kind)));
    bad |= json_object_set_new(j, "records", json_integer((json_int_t)s->records));
    if (s->kind == FW_EVAL_CHOICE) {
        bad |= json_object_set_new(j, "accuracy", json_real(m.accuracy));
        bad |= json_object_set_new(j, "accuracy_norm", json_real(m.accuracy_norm));
        bad |= json_object_set_new(j, "correct", json_integer((json_int_t)s->correct));
        bad |= json_object_set_new(j, "correct_norm", json_integer((json_int_t)s->correct_norm));
    } else {
        double nll;
        fw_xsum_value(&s->nll, &nll); /* succeeded inside fw_evalsum_metrics */
        bad |= json_object_set_new(j, "tokens", json_integer((json_int_t)s->tokens));
        bad |= json_object_set_new(j, "loss", json_real(m.loss));
        bad |= json_object_set_new(j, "perplexity", s_jreal(m.perplexity));
        bad |= json_object_set_new(j, "loss_sum", json_real(nll));
        if (s->kind == FW_EVAL_COMPLETION) {
            bad |= json_object_set_new(j, "exact_match", json_real(m.exact_match));
            bad |=
                json_object_set_new(j, "exact_matches", json_integer((json_int_t)s->exact_matches));
        }
    }
    if (!bad) return j;
    json_decref(j);
oom:
    fw_err_set(FW_ENOMEM, "summary: out of memory");
    return NULL;
}

/* ---- per-example sets ----------------------------------------------------------- */

typedef struct {
    fw_eval_example e;
    json_t *raw;  /* the line as read (index/line rewritten), owned */
    int origin;   /* index into fw_evalset.origins */
    size_t where; /* line within that origin */
} s_item;

struct fw_evalset {
    fw_eval_kind kind;
    s_item *items;
    size_t n, cap;
    char **origins; /* names of the texts items came from, for errors */
    size_t norigins;
    int finished;
};

fw_evalset *fw_evalset_new(void) {
    fw_evalset *s = calloc(1, sizeof *s);
    if (!s) fw_err_set(FW_ENOMEM, "evalset: out of memory");
    return s;
}

void fw_evalset_destroy(fw_evalset **sp) {
    if (!sp || !*sp) return;
    fw_evalset *s = *sp;
    for (size_t i = 0; i < s->n; i++) json_decref(s->items[i].raw);
    for (size_t i = 0; i < s->norigins; i++) free(s->origins[i]);
    free(s->items);
    free(s->origins);
    free(s);
    *sp = NULL;
}

static int s_reserve(fw_evalset *s, size_t more) {
    if (s->n + more <= s->cap) return 0;
    size_t cap = s->cap ? s->cap : 256;
    while (cap < s->n + more) cap *= 2;
    s_item *it = realloc(s->items, cap * sizeof *it);
    if (!it) return fw_err_set(FW_ENOMEM, "evalset: out of memory for %zu examples", cap);
    s->items = it, s->cap = cap;
    return 0;
}

static int s_add_origin(fw_evalset *s, const char *origin) {
    char **o = realloc(s->origins, (s->norigins + 1) * sizeof *o);
    if (!o) return fw_err_set(FW_ENOMEM, "evalset: out of memory");
    s->origins = o;
    if (!(o[s->norigins] = strdup(origin ? origin : "(memory)")))
        return fw_err_set(FW_ENOMEM, "evalset: out of memory");
    return (int)s->norigins++;
}

/* Field readers: -1 with the error set when the field is missing or wrong. */
static int s_get_uint(json_t *obj, const char *field, int required, uint64_t *out,
                      const char *origin, size_t lineno) {
    json_t *v = json_object_get(obj, field);
    if (!v && !required) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return fw_err_set(FW_EINVAL, "%s line %zu: field \"%s\" must be a non-negative integer",
                          origin, lineno, field);
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int s_get_bit(json_t *obj, const char *field, int *out, const char *origin, size_t lineno) {
    json_t *v = json_object_get(obj, field);
    if (json_is_boolean(v)) {
        *out = json_is_true(v);
        return 0;
    }
    if (!json_is_integer(v) || (json_integer_value(v) != 0 && json_integer_value(v) != 1))
        return fw_err_set(FW_EINVAL, "%s line %zu: field \"%s\" must be 0 or 1", origin, lineno,
                          field);
    *out = (int)json_integer_value(v);
    return 0;
}

static int s_get_real(json_t *obj, const char *field, double *out, const char *origin,
                      size_t lineno) {
    json_t *v = json_object_get(obj, field);
    if (!json_is_number(v) || !isfinite(json_number_value(v)))
        return fw_err_set(FW_EINVAL, "%s line %zu: field \"%s\" must be a finite number", origin,
                          lineno, field);
    *out = json_number_value(v);
    return 0;
}

/* One parsed line -> example and kind. */
static int s_parse_example(json_t *obj, const char *origin, size_t lineno, fw_eval_example *e,
                           fw_eval_kind *kind) {
    memset(e, 0, sizeof *e);
    if (!json_is_object(obj))
        return fw_err_set(FW_EINVAL, "%s line %zu: not a JSON object", origin, lineno);
    if (s_get_uint(obj, "index", 1, &e->index, origin, lineno) ||
        s_get_uint(obj, "line", 0, &e->line, origin, lineno))
        return FW_EINVAL;
    if (json_object_get(obj, "correct")) {
        uint64_t ans = 0;
        *kind = FW_EVAL_CHOICE;
        if (s_get_bit(obj, "correct", &e->correct, origin, lineno) ||
            s_get_bit(obj, "correct_norm", &e->correct_norm, origin, lineno) ||
            s_get_uint(obj, "answer", 1, &ans, origin, lineno))
            return FW_EINVAL;
        if (ans > 1000) /* the engine allows at most 1000 choices */
            return fw_err_set(FW_EINVAL, "%s line %zu: field \"answer\" is %llu, above 1000",
                              origin, lineno, (unsigned long long)ans);
        e->answer = (int)ans;
        return 0;
    }
    if (!json_object_get(obj, "logprob"))
        return fw_err_set(FW_EINVAL,
                          "%s line %zu: not a per-example score line (no \"logprob\" "
                          "or \"correct\" field)",
                          origin, lineno);
    *kind = json_object_get(obj, "exact_match") ? FW_EVAL_COMPLETION : FW_EVAL_TEXT;
    if (s_get_uint(obj, "tokens", 1, &e->tokens, origin, lineno) ||
        s_get_real(obj, "logprob", &e->logprob, origin, lineno))
        return FW_EINVAL;
    if (e->logprob > 0)
        return fw_err_set(FW_EINVAL, "%s line %zu: field \"logprob\" is %g, above 0", origin,
                          lineno, e->logprob);
    if (e->tokens == 0 && e->logprob != 0)
        return fw_err_set(FW_EINVAL, "%s line %zu: a logprob of %g over 0 tokens", origin, lineno,
                          e->logprob);
    if (*kind == FW_EVAL_COMPLETION &&
        s_get_bit(obj, "exact_match", &e->exact_match, origin, lineno))
        return FW_EINVAL;
    return 0;
}

static int s_check_kind(fw_eval_kind *have, fw_eval_kind k, const char *origin, size_t lineno) {
    if (*have != FW_EVAL_NONE && *have != k)
        return fw_err_set(FW_EINVAL,
                          "%s line %zu: a %s score line in a set of %s scores "
                          "(shards of different kinds of dataset?)",
                          origin, lineno, fw_eval_kind_name(k), fw_eval_kind_name(*have));
    *have = k;
    return 0;
}

int fw_evalset_add_jsonl(fw_evalset *s, const char *text, size_t len, const char *origin,
                         uint64_t index_offset, uint64_t line_offset) {
    if (s->finished) return fw_err_set(FW_ESTATE, "evalset: adding %s to a finished set", origin);
    if (!origin) origin = "(per-example text)";
    int oid = s_add_origin(s, origin);
    if (oid < 0) return FW_ENOMEM;
    size_t n0 = s->n, lineno = 0;
    fw_eval_kind kind = s->kind;
    const char *p = text, *end = text + len;
    int rc = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;
        lineno++;
        const char *q = p;
        while (q < eol && (*q == ' ' || *q == '\t' || *q == '\r')) q++;
        if (q == eol) {
            p = nl ? nl + 1 : end;
            continue; /* blank line */
        }
        json_error_t jerr;
        json_t *obj = json_loadb(p, (size_t)(eol - p), JSON_REJECT_DUPLICATES, &jerr);
        if (!obj) {
            rc = fw_err_set(FW_EINVAL, "%s line %zu: invalid JSON: %s", origin, lineno, jerr.text);
            break;
        }
        fw_eval_example e;
        fw_eval_kind k = FW_EVAL_NONE;
        if ((rc = s_parse_example(obj, origin, lineno, &e, &k)) != 0 ||
            (rc = s_check_kind(&kind, k, origin, lineno)) != 0) {
            json_decref(obj);
            break;
        }
        if (e.index > UINT64_MAX - index_offset || (e.line && e.line > UINT64_MAX - line_offset)) {
            json_decref(obj);
            rc = fw_err_set(FW_EINVAL, "%s line %zu: index or line overflows with the offset",
                            origin, lineno);
            break;
        }
        e.index += index_offset;
        if (e.line) e.line += line_offset;
        /* The kept line carries the global index and line, so a merged file
         * reads like the file of an unsharded run. */
        if (json_object_set_new(obj, "index", json_integer((json_int_t)e.index)) ||
            (e.line && json_object_set_new(obj, "line", json_integer((json_int_t)e.line))) ||
            s_reserve(s, 1) != 0) {
            json_decref(obj);
            rc = fw_err_set(FW_ENOMEM, "evalset: out of memory");
            break;
        }
        s->items[s->n++] = (s_item){e, obj, oid, lineno};
        p = nl ? nl + 1 : end;
    }
    if (rc != 0) {
        /* Nothing of this text stays: the set is as before the call. */
        for (size_t i = n0; i < s->n; i++) json_decref(s->items[i].raw);
        s->n = n0;
        return rc;
    }
    s->kind = kind;
    return 0;
}

int fw_evalset_load(fw_evalset *s, const char *path, uint64_t index_offset, uint64_t line_offset) {
    char *buf = NULL;
    size_t len = 0;
    /* 4 GiB: some ten million records of a few hundred bytes each. */
    int rc = fw_file_read(path, (size_t)4 << 30, &buf, &len);
    if (rc != 0) return rc;
    rc = fw_evalset_add_jsonl(s, buf, len, path, index_offset, line_offset);
    free(buf);
    return rc;
}

static json_t *s_example_json(fw_eval_kind kind, const fw_eval_example *e) {
    json_t *j = json_object();
    if (!j) return NULL;
    int bad = json_object_set_new(j, "index", json_integer((json_int_t)e->index));
    if (e->line) bad |= json_object_set_new(j, "line", json_integer((json_int_t)e->line));
    if (kind == FW_EVAL_CHOICE) {
        bad |= json_object_set_new(j, "answer", json_integer(e->answer));
        bad |= json_object_set_new(j, "correct", json_integer(e->correct != 0));
        bad |= json_object_set_new(j, "correct_norm", json_integer(e->correct_norm != 0));
    } else {
        if (kind == FW_EVAL_COMPLETION)
            bad |= json_object_set_new(j, "exact_match", json_integer(e->exact_match != 0));
        bad |= json_object_set_new(j, "loss",
                                   json_real(e->tokens ? -e->logprob / (double)e->tokens : 0.0));
        bad |= json_object_set_new(j, "tokens", json_integer((json_int_t)e->tokens));
        bad |= json_object_set_new(j, "logprob", json_real(e->logprob));
    }
    if (bad) {
        json_decref(j);
        return NULL;
    }
    return j;
}

int fw_evalset_add(fw_evalset *s, fw_eval_kind kind, const fw_eval_example *e) {
    if (s->finished) return fw_err_set(FW_ESTATE, "evalset: adding to a finished set");
    if (kind == FW_EVAL_NONE) return fw_err_set(FW_EINVAL, "evalset: example without a kind");
    if (s->kind != FW_EVAL_NONE && s->kind != kind)
        return fw_err_set(FW_EINVAL, "evalset: a %s example (index %llu) in a set of %s examples",
                          fw_eval_kind_name(kind), (unsigned long long)e->index,
                          fw_eval_kind_name(s->kind));
    if (kind != FW_EVAL_CHOICE && (!isfinite(e->logprob) || e->logprob > 0))
        return fw_err_set(FW_EINVAL, "evalset: example %llu: logprob %g is not finite and <= 0",
                          (unsigned long long)e->index, e->logprob);
    if (s->norigins == 0 && s_add_origin(s, "(memory)") < 0) return FW_ENOMEM;
    if (s_reserve(s, 1) != 0) return FW_ENOMEM;
    json_t *raw = s_example_json(kind, e);
    if (!raw) return fw_err_set(FW_ENOMEM, "evalset: out of memory");
    s->items[s->n++] = (s_item){*e, raw, 0, 0};
    s->kind = kind;
    return 0;
}

static int s_item_cmp(const void *pa, const void *pb) {
    const s_item *a = pa, *b = pb;
    if (a->e.index != b->e.index) return a->e.index < b->e.index ? -1 : 1;
    /* Ties (duplicates, refused below) in a fixed order for a stable message. */
    if (a->origin != b->origin) return a->origin < b->origin ? -1 : 1;
    return a->where < b->where ? -1 : a->where > b->where;
}

/* "shard-1.jsonl line 4" or "an in-memory example" for error messages. */
static void s_where(const fw_evalset *s, const s_item *it, char *buf, size_t size) {
    if (it->where)
        snprintf(buf, size, "%s line %zu", s->origins[it->origin], it->where);
    else
        snprintf(buf, size, "an in-memory example");
}

int fw_evalset_finish(fw_evalset *s, uint64_t expected) {
    if (s->finished) return 0;
    if (s->n == 0) return fw_err_set(FW_EINVAL, "evalset: no records");
    qsort(s->items, s->n, sizeof *s->items, s_item_cmp);
    for (size_t i = 0; i < s->n; i++) {
        uint64_t idx = s->items[i].e.index;
        if (idx == i) continue;
        char w1[512], w2[512];
        if (i > 0 && idx == s->items[i - 1].e.index) {
            s_where(s, &s->items[i - 1], w1, sizeof w1);
            s_where(s, &s->items[i], w2, sizeof w2);
            return fw_err_set(FW_EINVAL,
                              "evalset: record index %llu appears twice (%s and %s): "
                              "overlapping shards",
                              (unsigned long long)idx, w1, w2);
        }
        s_where(s, &s->items[i], w1, sizeof w1);
        return fw_err_set(FW_EINVAL,
                          "evalset: record index %zu is missing (the next present is "
                          "%llu, %s): a shard is missing or short",
                          i, (unsigned long long)idx, w1);
    }
    if (expected && s->n != expected)
        return fw_err_set(FW_EINVAL,
                          s->n < expected ? "evalset: %zu records, the dataset has %llu: records "
                                            "from index %zu on are missing"
                                          : "evalset: %zu records, the dataset has %llu (extra "
                                            "records from index %zu on)",
                          s->n, (unsigned long long)expected,
                          s->n < expected ? s->n : (size_t)expected);
    s->finished = 1;
    return 0;
}

fw_eval_kind fw_evalset_kind(const fw_evalset *s) {
    return s->kind;
}
size_t fw_evalset_count(const fw_evalset *s) {
    return s->n;
}

const fw_eval_example *fw_evalset_get(const fw_evalset *s, size_t i) {
    return i < s->n ? &s->items[i].e : NULL;
}

int fw_evalset_summary(const fw_evalset *s, fw_evalsum *out) {
    fw_evalsum_init(out);
    if (!s->finished) return fw_err_set(FW_ESTATE, "evalset: summarise after fw_evalset_finish");
    for (size_t i = 0; i < s->n; i++) {
        int rc = fw_evalsum_add(out, s->kind, &s->items[i].e);
        if (rc) return rc;
    }
    return 0;
}

int fw_evalset_write(const fw_evalset *s, const char *path) {
    if (!s->finished) return fw_err_set(FW_ESTATE, "evalset: write after fw_evalset_finish");
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return fw_err_set(FW_ENOMEM, "evalset: out of memory");
    int rc = 0;
    for (size_t i = 0; i < s->n && rc == 0; i++) {
        /* jansson prints reals with 17 significant digits: they read back to
         * the same doubles, so a written set merges and compares exactly. */
        if (json_dumpf(s->items[i].raw, f, JSON_COMPACT | JSON_PRESERVE_ORDER) != 0 ||
            fputc('\n', f) == EOF)
            rc = fw_err_set(FW_ENOMEM, "evalset: out of memory writing %s", path);
    }
    if (fclose(f) != 0 && rc == 0) rc = fw_err_set(FW_ENOMEM, "evalset: out of memory");
    if (rc == 0) rc = fw_file_write_atomic(path, buf, len, 0644);
    free(buf);
    return rc;
}

/* ---- paired comparison ------------------------------------------------------------- */

/* Metrics, by kind, in the order they are reported. */
enum { M_LOSS, M_PPL, M_LPE, M_EM, M_ACC, M_ACCN, M_COUNT };
static const char *const s_metric_name[M_COUNT] = {"loss",        "perplexity", "loss_per_example",
                                                   "exact_match", "accuracy",   "accuracy_norm"};
static const int s_metric_higher[M_COUNT] = {0, 0, 0, 1, 1, 1};

/* Sums over one (re)sample for one model; a metric is a function of these. */
typedef struct {
    double nll, tok;  /* token-weighted loss = nll / tok */
    double lpe, nlpe; /* per-example loss: mean over examples with tokens */
    double em, acc, accn, n;
} s_acc;

static void s_acc_add(s_acc *a, const fw_eval_example *e) {
    a->nll -= e->logprob;
    a->tok += (double)e->tokens;
    if (e->tokens) a->lpe += -e->logprob / (double)e->tokens, a->nlpe += 1;
    a->em += e->exact_match != 0;
    a->acc += e->correct != 0;
    a->accn += e->correct_norm != 0;
    a->n += 1;
}

/* Metric m from the sums; NaN when undefined (no token in the sample). */
static double s_metric(const s_acc *a, int m) {
    switch (m) {
    case M_LOSS:
        return a->tok > 0 ? a->nll / a->tok : NAN;
    case M_PPL:
        return a->tok > 0 ? exp(a->nll / a->tok) : NAN;
    case M_LPE:
        return a->nlpe > 0 ? a->lpe / a->nlpe : NAN;
    case M_EM:
        return a->em / a->n;
    case M_ACC:
        return a->acc / a->n;
    default:
        return a->accn / a->n;
    }
}

static int s_dbl_cmp(const void *pa, const void *pb) {
    double a = *(const double *)pa, b = *(const double *)pb;
    return a < b ? -1 : a > b;
}

/* Quantile p of sorted x[0..n) with linear interpolation between order
 * statistics (Hyndman & Fan type 7, R's and numpy's default). */
static double s_quantile(const double *x, size_t n, double p) {
    double h = (double)(n - 1) * p;
    size_t lo = (size_t)floor(h);
    if (lo + 1 >= n) return x[n - 1];
    return x[lo] + (h - (double)lo) * (x[lo + 1] - x[lo]);
}

/* Refuse two sets that are not the same examples, naming the first difference. */
static int s_check_pairs(const fw_evalset *a, const fw_evalset *b) {
    if (!a->finished || !b->finished)
        return fw_err_set(FW_ESTATE, "compare: finish both sets first (fw_evalset_finish)");
    if (a->kind != b->kind)
        return fw_err_set(FW_EINVAL, "compare: A was scored as %s, B as %s: not the same dataset",
                          fw_eval_kind_name(a->kind), fw_eval_kind_name(b->kind));
    if (a->n != b->n) {
        size_t first = a->n < b->n ? a->n : b->n;
        return fw_err_set(FW_EINVAL,
                          "compare: A has %zu examples, B has %zu: example %zu is "
                          "only in %s",
                          a->n, b->n, first, a->n > b->n ? "A" : "B");
    }
    for (size_t i = 0; i < a->n; i++) {
        const fw_eval_example *ea = &a->items[i].e, *eb = &b->items[i].e;
        if (ea->line && eb->line && ea->line != eb->line)
            return fw_err_set(FW_EINVAL,
                              "compare: example %zu is dataset line %llu in A and "
                              "line %llu in B: not the same examples",
                              i, (unsigned long long)ea->line, (unsigned long long)eb->line);
        if (a->kind == FW_EVAL_CHOICE && ea->answer != eb->answer)
            return fw_err_set(FW_EINVAL,
                              "compare: example %zu has answer %d in A and %d in B: "
                              "not the same examples",
                              i, ea->answer, eb->answer);
    }
    return 0;
}

/* Token-weighted loss of a whole set in plain doubles (NaN without tokens);
 * good enough to decide whether a perplexity is representable. */
static double s_loss_of(const fw_evalset *s) {
    s_acc acc = {0};
    for (size_t i = 0; i < s->n; i++) s_acc_add(&acc, &s->items[i].e);
    return s_metric(&acc, M_LOSS);
}

int fw_evalcmp_run(const fw_evalset *a, const fw_evalset *b, const fw_evalcmp_opts *opts,
                   fw_evalcmp *out) {
    memset(out, 0, sizeof *out);
    fw_evalcmp_opts o = opts ? *opts : (fw_evalcmp_opts){0};
    if (o.resamples == 0) o.resamples = FW_EVALCMP_RESAMPLES_DEFAULT;
    if (o.confidence == 0) o.confidence = 0.95;
    if (o.resamples < FW_EVALCMP_RESAMPLES_MIN || o.resamples > FW_EVALCMP_RESAMPLES_MAX)
        return fw_err_set(FW_EINVAL, "compare: %u resamples, must be %d..%d", o.resamples,
                          FW_EVALCMP_RESAMPLES_MIN, FW_EVALCMP_RESAMPLES_MAX);
    if (!(o.confidence > 0 && o.confidence < 1))
        return fw_err_set(FW_EINVAL, "compare: confidence %g must lie strictly between 0 and 1",
                          o.confidence);
    int rc = s_check_pairs(a, b);
    if (rc) return rc;

    int ms[M_COUNT], nm = 0;
    if (a->kind == FW_EVAL_CHOICE) {
        ms[nm++] = M_ACC, ms[nm++] = M_ACCN;
    } else {
        ms[nm++] = M_LOSS;
        /* A loss past ~709 nats a token (no real model) has no finite
         * perplexity; the comparison then leaves perplexity out. */
        if (isfinite(exp(s_loss_of(a))) && isfinite(exp(s_loss_of(b)))) ms[nm++] = M_PPL;
        ms[nm++] = M_LPE;
        if (a->kind == FW_EVAL_COMPLETION) ms[nm++] = M_EM;
    }
    size_t n = a->n;
    out->kind = a->kind;
    out->examples = n;
    out->resamples = o.resamples;
    out->seed = o.seed;
    out->confidence = o.confidence;
    out->paired = !o.unpaired;
    out->nmetrics = (size_t)nm;

    /* Point estimates on all examples. The token-weighted loss comes from the
     * exact summaries, so it is the figure a merged eval reports. */
    s_acc fa = {0}, fb = {0};
    for (size_t i = 0; i < n; i++) s_acc_add(&fa, &a->items[i].e), s_acc_add(&fb, &b->items[i].e);
    fw_evalsum sa, sb;
    fw_evalmetrics ma, mb;
    if ((rc = fw_evalset_summary(a, &sa)) || (rc = fw_evalset_summary(b, &sb))) return rc;
    if (fw_evalsum_metrics(&sa, &ma) != 0 || fw_evalsum_metrics(&sb, &mb) != 0)
        return fw_err_set(FW_EINVAL, "compare: %s", fw_err_detail());
    for (int k = 0; k < nm; k++) {
        fw_evalcmp_metric *m = &out->metric[k];
        snprintf(m->name, sizeof m->name, "%s", s_metric_name[ms[k]]);
        m->higher_is_better = s_metric_higher[ms[k]];
        m->a = ms[k] == M_LOSS ? ma.loss : ms[k] == M_PPL ? ma.perplexity : s_metric(&fa, ms[k]);
        m->b = ms[k] == M_LOSS ? mb.loss : ms[k] == M_PPL ? mb.perplexity : s_metric(&fb, ms[k]);
        m->diff = m->b - m->a;
    }

    double *d = malloc((size_t)nm * o.resamples * sizeof *d);
    if (!d) return fw_err_set(FW_ENOMEM, "compare: out of memory for %u resamples", o.resamples);
    fw_evalrng rng;
    fw_evalrng_seed(&rng, o.seed);
    size_t kept = 0;
    for (uint32_t r = 0; r < o.resamples; r++) {
        s_acc ra = {0}, rb = {0};
        for (size_t j = 0; j < n; j++) {
            /* Paired: one index picks the pair. Unpaired: each model draws
             * its own, as if the two had been scored on different samples. */
            size_t ia = (size_t)fw_evalrng_below(&rng, n);
            size_t ib = o.unpaired ? (size_t)fw_evalrng_below(&rng, n) : ia;
            s_acc_add(&ra, &a->items[ia].e);
            s_acc_add(&rb, &b->items[ib].e);
        }
        int ok = 1;
        for (int k = 0; k < nm; k++) {
            double v = s_metric(&rb, ms[k]) - s_metric(&ra, ms[k]);
            if (isnan(v)) ok = 0;
            d[(size_t)k * o.resamples + kept] = v;
        }
        /* A resample with no scored token defines no loss: drop it (only
         * possible when most examples have 0 tokens). */
        if (ok)
            kept++;
        else
            out->resamples_dropped++;
    }
    if (kept < 2) {
        free(d);
        return fw_err_set(FW_EINVAL,
                          "compare: %u of %u resamples had no scored token (or an "
                          "overflowing perplexity)",
                          out->resamples_dropped, o.resamples);
    }
    double alpha = 1 - o.confidence;
    for (int k = 0; k < nm; k++) {
        fw_evalcmp_metric *m = &out->metric[k];
        double *x = d + (size_t)k * o.resamples;
        qsort(x, kept, sizeof *x, s_dbl_cmp);
        m->ci_lo = s_quantile(x, kept, alpha / 2);
        m->ci_hi = s_quantile(x, kept, 1 - alpha / 2);
        m->significant = m->ci_lo > 0 || m->ci_hi < 0;
        m->direction = m->significant ? (m->ci_lo > 0 ? 1 : -1) : 0;
        m->better = !m->significant                             ? "none"
                    : (m->direction > 0) == m->higher_is_better ? "B"
                                                                : "A";
    }
    free(d);
    return 0;
}

const fw_evalcmp_metric *fw_evalcmp_find(const fw_evalcmp *c, const char *name) {
    for (size_t i = 0; i < c->nmetrics; i++)
        if (strcmp(c->metric[i].name, name) == 0) return &c->metric[i];
    return NULL;
}

json_t *fw_evalcmp_to_json(const fw_evalcmp *c, const char *name_a, const char *name_b) {
    json_t *j = json_object(), *ms = json_array();
    if (!j || !ms) goto oom;
    int bad = json_object_set_new(j, "a", json_string(name_a ? name_a : "A"));
    bad |= json_object_set_new(j, "b", json_string(name_b ? name_b : "B"));
    bad |= json_object_set_new(j, "kind", json_string(fw_eval_kind_name(c->kind)));
    bad |= json_object_set_new(j, "examples", json_integer((json_int_t)c->examples));
    bad |= json_object_set_new(j, "method",
                               json_string(c->paired ? "paired-bootstrap" : "unpaired-bootstrap"));
    bad |= json_object_set_new(j, "resamples", json_integer(c->resamples));
    bad |= json_object_set_new(j, "resamples_dropped", json_integer(c->resamples_dropped));
    /* JSON integers are signed 64-bit in jansson: larger seeds travel as text. */
    if (c->seed <= (uint64_t)INT64_MAX) {
        bad |= json_object_set_new(j, "seed", json_integer((json_int_t)c->seed));
    } else {
        char sbuf[32];
        snprintf(sbuf, sizeof sbuf, "%llu", (unsigned long long)c->seed);
        bad |= json_object_set_new(j, "seed", json_string(sbuf));
    }
    bad |= json_object_set_new(j, "confidence", json_real(c->confidence));
    for (size_t i = 0; i < c->nmetrics; i++) {
        const fw_evalcmp_metric *m = &c->metric[i];
        json_t *o =
            json_pack("{s:s, s:b, s:o, s:o, s:o, s:o, s:o, s:b, s:s, s:s}", "metric", m->name,
                      "higher_is_better", m->higher_is_better, "a", s_jreal(m->a), "b",
                      s_jreal(m->b), "diff", s_jreal(m->diff), "ci_lo", s_jreal(m->ci_lo), "ci_hi",
                      s_jreal(m->ci_hi), "significant", m->significant, "direction",
                      m->direction > 0   ? "higher"
                      : m->direction < 0 ? "lower"
                                         : "none",
                      "better", m->better);
        bad |= !o || json_array_append_new(ms, o);
    }
    bad |= json_object_set_new(j, "metrics", ms);
    ms = NULL;
    if (!bad) return j;
oom:
    json_decref(j);
    json_decref(ms);
    fw_err_set(FW_ENOMEM, "compare: out of memory");
    return NULL;
}

char *fw_evalcmp_to_text(const fw_evalcmp *c, const char *name_a, const char *name_b) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    name_a = name_a ? name_a : "A", name_b = name_b ? name_b : "B";
    int pct = (int)lround(c->confidence * 100);
    fprintf(f,
            "A = %s\nB = %s\n%s dataset, %llu examples, %s bootstrap (%u resamples, seed "
            "%llu)\n\n",
            name_a, name_b, fw_eval_kind_name(c->kind), (unsigned long long)c->examples,
            c->paired ? "paired" : "UNPAIRED", c->resamples, (unsigned long long)c->seed);
    char cih[32];
    snprintf(cih, sizeof cih, "%d%% CI of B - A", pct);
    fprintf(f, "%-18s %12s %12s %12s  %-27s %s\n", "metric", "A", "B", "B - A", cih, "verdict");
    for (size_t i = 0; i < c->nmetrics; i++) {
        const fw_evalcmp_metric *m = &c->metric[i];
        char ci[64], verdict[64];
        snprintf(ci, sizeof ci, "[%.4g, %.4g]", m->ci_lo, m->ci_hi);
        if (m->significant)
            snprintf(verdict, sizeof verdict, "B %s, %s better (significant)",
                     m->direction > 0 ? "higher" : "lower", m->better);
        else
            snprintf(verdict, sizeof verdict, "no significant difference");
        fprintf(f, "%-18s %12.6g %12.6g %+12.4g  %-27s %s\n", m->name, m->a, m->b, m->diff, ci,
                verdict);
    }
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}
