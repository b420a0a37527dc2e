/* fw_evalstats.h - exact merging of sharded eval results and paired comparison
 * of two models on the same examples (docs/eval.md).
 *
 * An eval job scores a dataset in shards; each shard runs
 * `flywheel-engine eval --per-example FILE` and so yields one JSON line of
 * scores per record, with a shard-local "index". This module
 *
 *   1. loads those per-example files into an fw_evalset, shifting each
 *      shard's indices by the shard's first global record, and checks that the
 *      union is exactly records 0..n-1 of one kind (no duplicate, no gap);
 *   2. reduces a set (or merges shard summaries) into an fw_evalsum of counts
 *      and an EXACT sum of log-probabilities, so the merged token-weighted loss
 *      is bitwise the same however the dataset was cut into shards;
 *   3. compares two sets on the same examples (fw_evalcmp_run): each metric
 *      for model A and model B, the difference B - A, a paired-bootstrap
 *      confidence interval, and a verdict (significant when the interval
 *      excludes 0).
 *
 * Errors: functions return 0 or a negative fw_err with fw_err_detail() naming
 * the file, line and field, or the first example where two sets differ.
 * Callers that use the json_t functions link jansson themselves. */
#ifndef FW_EVALSTATS_H
#define FW_EVALSTATS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* The dataset kinds of `flywheel-engine eval` (the first record decides). */
typedef enum {
    FW_EVAL_NONE = 0,   /* an empty set: the kind is not known yet */
    FW_EVAL_TEXT,       /* {"text"} / {"messages"}: loss, perplexity */
    FW_EVAL_COMPLETION, /* {"prompt","completion"}: loss, perplexity, exact match */
    FW_EVAL_CHOICE      /* {"prompt","choices","answer"}: accuracy, accuracy_norm */
} fw_eval_kind;

/* "text", "completion", "choice" ("none" for FW_EVAL_NONE). */
const char *fw_eval_kind_name(fw_eval_kind kind);

/* One record's scores, as one line of a per-example file. */
typedef struct {
    uint64_t index;   /* global record index, 0-based, in dataset order */
    uint64_t line;    /* 1-based line in the dataset (0: unknown) */
    uint64_t tokens;  /* text/completion: scored tokens (may be 0) */
    double logprob;   /* text/completion: sum of log p over those tokens (<= 0) */
    int exact_match;  /* completion: 0/1 */
    int answer;       /* choice: the right choice */
    int correct;      /* choice: 0/1, argmax of summed log-likelihood */
    int correct_norm; /* choice: 0/1, argmax of log-likelihood per character */
} fw_eval_example;

/* ---- exact sums -------------------------------------------------------- */

/* A fixed-point accumulator wide enough for any finite double (a
 * "superaccumulator"): adding is exact, so the total does not depend on the
 * order of the additions or how they were grouped. 70 limbs of 32 bits in
 * int64 slots; the spare 32 bits of each slot absorb carries, which are
 * propagated every 2^30 additions. */
#define FW_XSUM_LIMBS 70
typedef struct {
    int64_t limb[FW_XSUM_LIMBS];
    uint32_t pending; /* additions since the last carry propagation */
} fw_xsum;

void fw_xsum_init(fw_xsum *x);
/* Add a finite double exactly (FW_EINVAL for NaN or infinity). */
int fw_xsum_add(fw_xsum *x, double v);
/* x += y, exactly. */
void fw_xsum_merge(fw_xsum *x, const fw_xsum *y);
/* The exact total rounded to a double: a function of the exact total alone
 * (never of the order of additions), within an ulp of it. FW_ETOOBIG when it
 * does not fit in a double. */
int fw_xsum_value(const fw_xsum *x, double *out);

/* ---- summaries ---------------------------------------------------------- */

/* What a shard (or a whole eval) adds up to. Merge summaries, never means. */
typedef struct {
    fw_eval_kind kind;
    uint64_t records;
    uint64_t tokens;        /* text/completion */
    fw_xsum nll;            /* text/completion: exact sum of -logprob */
    uint64_t exact_matches; /* completion */
    uint64_t correct;       /* choice */
    uint64_t correct_norm;  /* choice */
} fw_evalsum;

/* The metrics a summary gives; fields a kind does not have are NaN. */
typedef struct {
    double loss;          /* token-weighted: sum(-logprob) / sum(tokens) */
    double perplexity;    /* exp(loss) */
    double exact_match;   /* exact_matches / records */
    double accuracy;      /* correct / records */
    double accuracy_norm; /* correct_norm / records */
} fw_evalmetrics;

void fw_evalsum_init(fw_evalsum *s);
/* Count one example of `kind` (FW_EINVAL on a kind mismatch). */
int fw_evalsum_add(fw_evalsum *s, fw_eval_kind kind, const fw_eval_example *e);
/* into += from. Refuses (FW_EINVAL) summaries of different kinds; an empty
 * summary (FW_EVAL_NONE) merges with anything. */
int fw_evalsum_merge(fw_evalsum *into, const fw_evalsum *from);
/* FW_EINVAL when there is nothing to divide by (no record; no token). */
int fw_evalsum_metrics(const fw_evalsum *s, fw_evalmetrics *out);
/* The summary as `flywheel-engine eval` prints it: kind, records and, by
 * kind, tokens, loss, perplexity, loss_sum, exact_match, exact_matches,
 * accuracy, accuracy_norm, correct, correct_norm. New reference; NULL with
 * fw_err_detail on error. */
json_t *fw_evalsum_to_json(const fw_evalsum *s);

/* ---- per-example sets ---------------------------------------------------- */

typedef struct fw_evalset fw_evalset;

fw_evalset *fw_evalset_new(void);
/* Idempotent; NULLs *sp. */
void fw_evalset_destroy(fw_evalset **sp);

/* Parse one per-example file's text (JSON lines; blank lines skipped) and add
 * its records with index += index_offset and line += line_offset (a shard
 * that starts at global record R and dataset line L passes R and L - 1).
 * `origin` names the text in errors ("shard-3.jsonl"). The set keeps each
 * line's JSON so fw_evalset_write reproduces every field. On error nothing
 * of this text is added. */
int fw_evalset_add_jsonl(fw_evalset *s, const char *text, size_t len, const char *origin,
                         uint64_t index_offset, uint64_t line_offset);
/* fw_file_read + fw_evalset_add_jsonl, with the path as origin. */
int fw_evalset_load(fw_evalset *s, const char *path, uint64_t index_offset, uint64_t line_offset);
/* Add one example built in memory. */
int fw_evalset_add(fw_evalset *s, fw_eval_kind kind, const fw_eval_example *e);

/* Sort by index and check the set is exactly records 0..n-1: FW_EINVAL naming
 * the first duplicated or missing index. expected > 0 also demands n ==
 * expected (records missing at the end). After this the set is read-only
 * (adding gives FW_ESTATE) and may be summarised, written and compared. */
int fw_evalset_finish(fw_evalset *s, uint64_t expected);

fw_eval_kind fw_evalset_kind(const fw_evalset *s);
size_t fw_evalset_count(const fw_evalset *s);
/* Example i in index order (after finish: its index is i). NULL if out of range. */
const fw_eval_example *fw_evalset_get(const fw_evalset *s, size_t i);
/* Reduce a finished set (FW_ESTATE if not finished). */
int fw_evalset_summary(const fw_evalset *s, fw_evalsum *out);
/* Write the finished set as one per-example file in index order, with the
 * global index and line, atomically (fw_file_write_atomic). */
int fw_evalset_write(const fw_evalset *s, const char *path);

/* ---- paired comparison ------------------------------------------------------ */

#define FW_EVALCMP_RESAMPLES_DEFAULT 10000
#define FW_EVALCMP_RESAMPLES_MIN     100
#define FW_EVALCMP_RESAMPLES_MAX     10000000
#define FW_EVALCMP_MAX_METRICS       8

typedef struct {
    uint32_t resamples; /* bootstrap resamples (0: the default, 10,000) */
    uint64_t seed;      /* PRNG seed: the same seed gives the same interval */
    double confidence;  /* interval level in (0, 1) (0: 0.95) */
    int unpaired;       /* 1: resample A and B independently (for comparison
                         * only: it ignores that the examples are shared and
                         * gives a much wider interval; see docs/eval.md) */
} fw_evalcmp_opts;

typedef struct {
    char name[24];        /* "loss", "loss_per_example", "perplexity",
                           * "exact_match", "accuracy", "accuracy_norm" */
    int higher_is_better; /* 0 for losses and perplexity */
    double a, b;          /* the metric for each model on all examples */
    double diff;          /* b - a */
    double ci_lo, ci_hi;  /* bootstrap percentile interval of b - a */
    int significant;      /* the interval excludes 0 */
    int direction;        /* significant: +1 B higher, -1 B lower; else 0 */
    const char *better;   /* "A", "B" or "none" (static string) */
} fw_evalcmp_metric;

typedef struct {
    fw_eval_kind kind;
    uint64_t examples;
    uint32_t resamples;
    uint32_t resamples_dropped; /* resamples with no scored token (not counted) */
    uint64_t seed;
    double confidence;
    int paired;
    size_t nmetrics;
    fw_evalcmp_metric metric[FW_EVALCMP_MAX_METRICS];
} fw_evalcmp;

/* Compare two finished sets of the same kind on the same examples. FW_EINVAL
 * when they differ (kind, count, or an example whose line or answer differs,
 * named by index) or opts are out of range. opts may be NULL (defaults). */
int fw_evalcmp_run(const fw_evalset *a, const fw_evalset *b, const fw_evalcmp_opts *opts,
                   fw_evalcmp *out);
/* The metric called name, or NULL. */
const fw_evalcmp_metric *fw_evalcmp_find(const fw_evalcmp *c, const char *name);
/* JSON rendering (docs/eval.md#json); name_a / name_b label the models (may
 * be NULL: "A", "B"). New reference; NULL on out of memory. */
json_t *fw_evalcmp_to_json(const fw_evalcmp *c, const char *name_a, const char *name_b);
/* A text table for `flywheelctl eval compare`; caller frees. NULL on OOM. */
char *fw_evalcmp_to_text(const fw_evalcmp *c, const char *name_a, const char *name_b);

/* ---- the PRNG ---------------------------------------------------------------- */

/* xoshiro256** seeded through splitmix64: fixed across platforms and
 * releases, so a seed pins a bootstrap interval forever. */
typedef struct {
    uint64_t s[4];
} fw_evalrng;

void fw_evalrng_seed(fw_evalrng *r, uint64_t seed);
uint64_t fw_evalrng_next(fw_evalrng *r);
/* Uniform in [0, n), without modulo bias (Lemire); n > 0. */
uint64_t fw_evalrng_below(fw_evalrng *r, uint64_t n);

#endif
