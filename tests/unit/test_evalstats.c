/* test_evalstats.c - exact shard merging and the paired bootstrap.
 *
 * Exactness is checked BITWISE (memcmp of the doubles), not within a
 * tolerance: the module promises that a merged eval equals the unsharded one
 * bit for bit, and anything looser would hide an order-dependent sum. */
#include "fw_evalstats.h"

#include "fw_err.h"
#include "fw_file.h"
#include "fw_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------- */

static double s_unif(fw_evalrng *r) {
    return (double)(fw_evalrng_next(r) >> 11) * 0x1p-53;
}

static double s_gauss(fw_evalrng *r) {
    double u1 = s_unif(r), u2 = s_unif(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

static int s_same_bits(double a, double b) {
    return memcmp(&a, &b, sizeof a) == 0;
}

/* Random examples of a kind, in the engine's per-example line format. */
static void s_random_examples(fw_evalrng *r, fw_eval_kind kind, fw_eval_example *ex, size_t n) {
    for (size_t i = 0; i < n; i++) {
        fw_eval_example *e = &ex[i];
        memset(e, 0, sizeof *e);
        e->index = i;
        e->line = i + 1;
        if (kind == FW_EVAL_CHOICE) {
            e->answer = (int)fw_evalrng_below(r, 4);
            e->correct = s_unif(r) < 0.4;
            e->correct_norm = s_unif(r) < 0.5;
        } else {
            e->tokens = fw_evalrng_below(r, 200);
            /* A spread of magnitudes, so that naive sums would round
             * differently in different orders. */
            e->logprob = e->tokens ? -(double)e->tokens * (0.5 + 8 * s_unif(r)) *
                                         (s_unif(r) < 0.05 ? 50.0 : 1.0)
                                   : 0.0;
            e->exact_match = s_unif(r) < 0.3;
        }
    }
}

/* One example as `flywheel-engine eval --per-example` writes it, with
 * shard-local index and line. */
static void s_print_line(FILE *f, fw_eval_kind kind, const fw_eval_example *e, uint64_t index,
                         uint64_t line) {
    fprintf(f, "{\"index\":%llu,\"line\":%llu", (unsigned long long)index,
            (unsigned long long)line);
    if (kind == FW_EVAL_CHOICE) {
        fprintf(f,
                ",\"answer\":%d,\"pred\":%d,\"pred_norm\":%d,\"correct\":%d,\"correct_norm\":%d,"
                "\"logprobs\":[-1.5,-2.25,-3,-4],\"chars\":[3,4,5,6]}\n",
                e->answer, e->correct ? e->answer : (e->answer + 1) % 4,
                e->correct_norm ? e->answer : (e->answer + 1) % 4, e->correct, e->correct_norm);
    } else {
        if (kind == FW_EVAL_COMPLETION) fprintf(f, ",\"exact_match\":%d", e->exact_match);
        fprintf(f, ",\"loss\":%.9g,\"tokens\":%llu,\"logprob\":%.17g}\n",
                e->tokens ? -e->logprob / (double)e->tokens : 0.0, (unsigned long long)e->tokens,
                e->logprob);
    }
}

/* Lines [from, to) of ex as one shard's per-example text (local indices). */
static char *s_shard_text(fw_eval_kind kind, const fw_eval_example *ex, size_t from, size_t to,
                          size_t *len) {
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    for (size_t i = from; i < to; i++) s_print_line(f, kind, &ex[i], i - from, i - from + 1);
    fclose(f);
    return buf;
}

static fw_evalset *s_set_of(fw_eval_kind kind, const fw_eval_example *ex, size_t n) {
    fw_evalset *s = fw_evalset_new();
    for (size_t i = 0; i < n; i++)
        if (fw_evalset_add(s, kind, &ex[i]) != 0) {
            fw_evalset_destroy(&s);
            return NULL;
        }
    if (fw_evalset_finish(s, n) != 0) fw_evalset_destroy(&s);
    return s;
}

/* ---- exact sums ------------------------------------------------------------ */

static void test_xsum_exact(void) {
    fw_xsum x;
    double v;
    /* Naive: (1e16 + 1) - 1e16 = 0 in doubles; exactly it is 1. */
    fw_xsum_init(&x);
    fw_xsum_add(&x, 1e16), fw_xsum_add(&x, 1.0), fw_xsum_add(&x, -1e16);
    CHECK(fw_xsum_value(&x, &v) == 0 && v == 1.0);
    /* Intermediates beyond DBL_MAX are fine when the total fits. */
    fw_xsum_init(&x);
    fw_xsum_add(&x, 1e308), fw_xsum_add(&x, 1e308), fw_xsum_add(&x, -1e308);
    CHECK(fw_xsum_value(&x, &v) == 0 && v == 1e308);
    fw_xsum_add(&x, 1e308);
    CHECK(fw_xsum_value(&x, &v) == FW_ETOOBIG);
    /* Subnormals add exactly. */
    fw_xsum_init(&x);
    for (int i = 0; i < 3; i++) fw_xsum_add(&x, 4.9406564584124654e-324);
    CHECK(fw_xsum_value(&x, &v) == 0 && v == 3 * 4.9406564584124654e-324);
    CHECK(fw_xsum_add(&x, NAN) == FW_EINVAL);
    CHECK(fw_xsum_add(&x, INFINITY) == FW_EINVAL);
    /* Negative totals, and an empty sum. */
    fw_xsum_init(&x);
    CHECK(fw_xsum_value(&x, &v) == 0 && v == 0.0);
    fw_xsum_add(&x, -2.5), fw_xsum_add(&x, 0.25);
    CHECK(fw_xsum_value(&x, &v) == 0 && v == -2.25);

    /* Random values of wild magnitudes: any order and any grouping give the
     * same bits, and adding the negations in another order gives exactly 0. */
    fw_evalrng r;
    fw_evalrng_seed(&r, 7);
    enum { N = 5000 };
    static double xs[N];
    for (int i = 0; i < N; i++)
        xs[i] = (s_unif(&r) - 0.5) * ldexp(1.0, (int)fw_evalrng_below(&r, 200) - 100);
    fw_xsum fwd, bwd, grp, g2, neg;
    fw_xsum_init(&fwd), fw_xsum_init(&bwd), fw_xsum_init(&grp), fw_xsum_init(&g2);
    double naive_f = 0, naive_b = 0;
    for (int i = 0; i < N; i++) fw_xsum_add(&fwd, xs[i]), naive_f += xs[i];
    for (int i = N - 1; i >= 0; i--) fw_xsum_add(&bwd, xs[i]), naive_b += xs[i];
    for (int i = 0; i < N; i++) fw_xsum_add(i % 3 ? &grp : &g2, xs[i]);
    fw_xsum_merge(&grp, &g2);
    double vf, vb, vg;
    fw_xsum_value(&fwd, &vf), fw_xsum_value(&bwd, &vb), fw_xsum_value(&grp, &vg);
    CHECK(s_same_bits(vf, vb) && s_same_bits(vf, vg));
    fprintf(stderr, "   naive forward %.17g backward %.17g exact %.17g\n", naive_f, naive_b, vf);
    neg = fwd;
    for (int i = 0; i < N; i++) fw_xsum_add(&neg, -xs[(i * 7919) % N]);
    CHECK(fw_xsum_value(&neg, &v) == 0 && v == 0.0);
}

static void test_rng(void) {
    fw_evalrng a, b;
    fw_evalrng_seed(&a, 42), fw_evalrng_seed(&b, 42);
    int same = 1;
    for (int i = 0; i < 1000; i++) same &= fw_evalrng_next(&a) == fw_evalrng_next(&b);
    CHECK(same);
    fw_evalrng_seed(&b, 43);
    CHECK(fw_evalrng_next(&a) != fw_evalrng_next(&b));
    /* below(): in range and roughly uniform (chi-square, 9 d.o.f.; 40 is far
     * past the 0.9999 quantile of ~33). */
    int cnt[10] = {0};
    fw_evalrng_seed(&a, 1);
    for (int i = 0; i < 100000; i++) {
        uint64_t k = fw_evalrng_below(&a, 10);
        if (k >= 10) {
            CHECK(k < 10);
            return;
        }
        cnt[k]++;
    }
    double chi = 0;
    for (int k = 0; k < 10; k++) chi += (cnt[k] - 10000.0) * (cnt[k] - 10000.0) / 10000.0;
    CHECKF(chi < 40, "chi-square %g", chi);
    CHECK(fw_evalrng_below(&a, 1) == 0);
}

/* ---- merging ---------------------------------------------------------------- */

/* k random shards of n random examples, loaded in a random order, merge to
 * exactly (bitwise) the unsharded result, both as a merged per-example set
 * and as merged shard summaries; and the merged file is byte-identical to the
 * unsharded one. */
static void s_merge_trial(fw_evalrng *r, fw_eval_kind kind, const char *dir, int trial) {
    size_t n = 200 + fw_evalrng_below(r, 800);
    fw_eval_example *ex = calloc(n, sizeof *ex);
    s_random_examples(r, kind, ex, n);
    size_t k = 1 + fw_evalrng_below(r, 8), cuts[10];
    cuts[0] = 0, cuts[k] = n;
    for (size_t i = 1; i < k; i++) cuts[i] = fw_evalrng_below(r, n + 1);
    for (size_t i = 1; i < k; i++) /* sort the inner cuts (empty shards allowed) */
        for (size_t j = i; j > 1 && cuts[j] < cuts[j - 1]; j--) {
            size_t t = cuts[j];
            cuts[j] = cuts[j - 1], cuts[j - 1] = t;
        }

    /* Unsharded: one per-example file. */
    size_t len;
    char *all = s_shard_text(kind, ex, 0, n, &len);
    fw_evalset *one = fw_evalset_new();
    REQUIRE(fw_evalset_add_jsonl(one, all, len, "all.jsonl", 0, 0) == 0);
    REQUIRE(fw_evalset_finish(one, n) == 0);
    CHECK(fw_evalset_kind(one) == kind);
    free(all);

    /* Sharded, loaded in a shuffled order. */
    size_t order[10];
    for (size_t i = 0; i < k; i++) order[i] = i;
    for (size_t i = k; i > 1; i--) {
        size_t j = fw_evalrng_below(r, i), t = order[i - 1];
        order[i - 1] = order[j], order[j] = t;
    }
    fw_evalset *merged = fw_evalset_new();
    fw_evalsum sum_of_shards;
    fw_evalsum_init(&sum_of_shards);
    for (size_t oi = 0; oi < k; oi++) {
        size_t s = order[oi];
        char *txt = s_shard_text(kind, ex, cuts[s], cuts[s + 1], &len);
        char origin[32];
        snprintf(origin, sizeof origin, "shard-%zu.jsonl", s);
        REQUIRE(fw_evalset_add_jsonl(merged, txt, len, origin, cuts[s], cuts[s]) == 0);
        if (cuts[s + 1] > cuts[s]) {
            /* The shard's own summary, from its own (shard-local) file. */
            fw_evalset *sh = fw_evalset_new();
            fw_evalsum ss;
            REQUIRE(fw_evalset_add_jsonl(sh, txt, len, origin, 0, 0) == 0);
            REQUIRE(fw_evalset_finish(sh, cuts[s + 1] - cuts[s]) == 0);
            REQUIRE(fw_evalset_summary(sh, &ss) == 0);
            REQUIRE(fw_evalsum_merge(&sum_of_shards, &ss) == 0);
            fw_evalset_destroy(&sh);
        }
        free(txt);
    }
    REQUIRE(fw_evalset_finish(merged, n) == 0);

    fw_evalsum s1, s2;
    fw_evalmetrics m1, m2, m3;
    REQUIRE(fw_evalset_summary(one, &s1) == 0 && fw_evalset_summary(merged, &s2) == 0);
    REQUIRE(fw_evalsum_metrics(&s1, &m1) == 0 && fw_evalsum_metrics(&s2, &m2) == 0);
    REQUIRE(fw_evalsum_metrics(&sum_of_shards, &m3) == 0);
    CHECK(s1.records == n && s2.records == n && sum_of_shards.records == n);
    CHECK(s1.tokens == s2.tokens && s1.tokens == sum_of_shards.tokens);
    CHECK(s1.exact_matches == sum_of_shards.exact_matches);
    CHECK(s1.correct == sum_of_shards.correct && s1.correct_norm == sum_of_shards.correct_norm);
    if (kind == FW_EVAL_CHOICE) {
        CHECK(s_same_bits(m1.accuracy, m2.accuracy) && s_same_bits(m1.accuracy, m3.accuracy));
        CHECK(s_same_bits(m1.accuracy_norm, m3.accuracy_norm));
        size_t ok = 0;
        for (size_t i = 0; i < n; i++) ok += ex[i].correct;
        CHECK(m1.accuracy == (double)ok / (double)n);
    } else {
        CHECKF(s_same_bits(m1.loss, m2.loss) && s_same_bits(m1.loss, m3.loss),
               "trial %d (%zu shards): loss %.17g / %.17g / %.17g", trial, k, m1.loss, m2.loss,
               m3.loss);
        CHECK(s_same_bits(m1.perplexity, m3.perplexity));
        if (kind == FW_EVAL_COMPLETION) CHECK(s_same_bits(m1.exact_match, m3.exact_match));
        /* Against an independent reference: long double naive sum (64-bit
         * mantissa) agrees to ~1e-15 relative. */
        long double ref = 0;
        uint64_t tok = 0;
        for (size_t i = 0; i < n; i++) ref -= ex[i].logprob, tok += ex[i].tokens;
        CHECK(fabs(m1.loss - (double)(ref / tok)) <= 1e-14 * m1.loss);
    }
    for (size_t i = 0; i < n; i++) {
        const fw_eval_example *e = fw_evalset_get(merged, i);
        if (!e || e->index != i || e->line != i + 1 || !s_same_bits(e->logprob, ex[i].logprob)) {
            CHECKF(0, "merged example %zu differs", i);
            break;
        }
    }

    /* The merged file is the unsharded file, byte for byte. */
    char p1[512], p2[512];
    snprintf(p1, sizeof p1, "%s/one-%d.jsonl", dir, trial);
    snprintf(p2, sizeof p2, "%s/merged-%d.jsonl", dir, trial);
    REQUIRE(fw_evalset_write(one, p1) == 0 && fw_evalset_write(merged, p2) == 0);
    char *b1, *b2;
    size_t l1, l2;
    REQUIRE(fw_file_read(p1, 1 << 26, &b1, &l1) == 0 && fw_file_read(p2, 1 << 26, &b2, &l2) == 0);
    CHECK(l1 == l2 && memcmp(b1, b2, l1) == 0);
    /* And it reads back to the same numbers. */
    fw_evalset *back = fw_evalset_new();
    fw_evalsum s3;
    fw_evalmetrics m4;
    CHECK(fw_evalset_add_jsonl(back, b2, l2, p2, 0, 0) == 0 && fw_evalset_finish(back, n) == 0 &&
          fw_evalset_summary(back, &s3) == 0 && fw_evalsum_metrics(&s3, &m4) == 0);
    if (kind != FW_EVAL_CHOICE) CHECK(s_same_bits(m1.loss, m4.loss));
    free(b1), free(b2);
    fw_evalset_destroy(&back);
    fw_evalset_destroy(&one);
    fw_evalset_destroy(&merged);
    free(ex);
}

static void test_merge_exact(void) {
    char *dir = fw_test_tmpdir("evalstats");
    fw_evalrng r;
    fw_evalrng_seed(&r, 2024);
    const fw_eval_kind kinds[] = {FW_EVAL_TEXT, FW_EVAL_COMPLETION, FW_EVAL_CHOICE};
    for (int t = 0; t < 30; t++) s_merge_trial(&r, kinds[t % 3], dir, t);
    fw_test_rmtree(dir);
    free(dir);
}

static void test_summary_json(void) {
    const char *txt = "{\"index\":0,\"line\":1,\"exact_match\":1,\"loss\":2,\"tokens\":3,"
                      "\"logprob\":-6}\n"
                      "{\"index\":1,\"line\":2,\"exact_match\":0,\"loss\":1,\"tokens\":1,"
                      "\"logprob\":-1}\n";
    fw_evalset *s = fw_evalset_new();
    fw_evalsum sum;
    REQUIRE(fw_evalset_add_jsonl(s, txt, strlen(txt), "x", 0, 0) == 0);
    REQUIRE(fw_evalset_finish(s, 0) == 0 && fw_evalset_summary(s, &sum) == 0);
    json_t *j = fw_evalsum_to_json(&sum);
    REQUIRE(j);
    CHECK_EQ_STR(json_string_value(json_object_get(j, "kind")), "completion");
    CHECK(json_integer_value(json_object_get(j, "tokens")) == 4);
    CHECK(json_real_value(json_object_get(j, "loss")) == 7.0 / 4);
    CHECK(json_real_value(json_object_get(j, "perplexity")) == exp(7.0 / 4));
    CHECK(json_real_value(json_object_get(j, "exact_match")) == 0.5);
    CHECK(json_integer_value(json_object_get(j, "exact_matches")) == 1);
    json_decref(j);
    fw_evalset_destroy(&s);

    /* A loss of 1000 nats a token: perplexity past DBL_MAX is null in JSON,
     * and a comparison leaves it out rather than fail. */
    fw_eval_example big[3];
    for (int i = 0; i < 3; i++)
        big[i] = (fw_eval_example){.index = (uint64_t)i, .tokens = 2, .logprob = -2000.0 - i};
    s = s_set_of(FW_EVAL_TEXT, big, 3);
    REQUIRE(s && fw_evalset_summary(s, &sum) == 0);
    j = fw_evalsum_to_json(&sum);
    CHECK(j && json_is_null(json_object_get(j, "perplexity")) &&
          json_real_value(json_object_get(j, "loss")) == 6003.0 / 6);
    json_decref(j);
    fw_evalcmp c;
    fw_evalcmp_opts o = {.resamples = 100};
    CHECK(fw_evalcmp_run(s, s, &o, &c) == 0 && c.nmetrics == 2 &&
          !fw_evalcmp_find(&c, "perplexity"));
    fw_evalset_destroy(&s);
}

/* ---- merge errors ---------------------------------------------------------------- */

static void s_expect_err(int rc, const char *needle) {
    CHECKF(rc < 0 && strstr(fw_err_detail(), needle), "rc %d, detail \"%s\", wanted \"%s\"", rc,
           fw_err_detail(), needle);
}

static void test_merge_errors(void) {
    fw_eval_example ex[20];
    fw_evalrng r;
    fw_evalrng_seed(&r, 5);
    s_random_examples(&r, FW_EVAL_TEXT, ex, 20);
    size_t la, lb;
    char *a = s_shard_text(FW_EVAL_TEXT, ex, 0, 10, &la);
    char *b = s_shard_text(FW_EVAL_TEXT, ex, 10, 20, &lb);

    /* Overlapping shards: the second starts at 5, so 5..9 come twice. */
    fw_evalset *s = fw_evalset_new();
    CHECK(fw_evalset_add_jsonl(s, a, la, "shard-0.jsonl", 0, 0) == 0);
    CHECK(fw_evalset_add_jsonl(s, b, lb, "shard-1.jsonl", 5, 5) == 0);
    s_expect_err(fw_evalset_finish(s, 0), "record index 5 appears twice (shard-0.jsonl line 6 "
                                          "and shard-1.jsonl line 1)");
    fw_evalset_destroy(&s);
    CHECK(s == NULL);
    fw_evalset_destroy(&s); /* idempotent */

    /* A gap: the second shard claims to start at 12. */
    s = fw_evalset_new();
    fw_evalset_add_jsonl(s, a, la, "shard-0.jsonl", 0, 0);
    fw_evalset_add_jsonl(s, b, lb, "shard-1.jsonl", 12, 12);
    s_expect_err(fw_evalset_finish(s, 0), "record index 10 is missing (the next present is 12, "
                                          "shard-1.jsonl line 1)");
    fw_evalset_destroy(&s);

    /* The last shard missing: only the expected count can tell. */
    s = fw_evalset_new();
    fw_evalset_add_jsonl(s, a, la, "shard-0.jsonl", 0, 0);
    s_expect_err(fw_evalset_finish(s, 20), "records from index 10 on are missing");
    fw_evalset_destroy(&s);
    s = fw_evalset_new();
    s_expect_err(fw_evalset_finish(s, 0), "no records");
    fw_evalset_destroy(&s);

    /* Shards of different kinds. */
    fw_eval_example cx[3];
    s_random_examples(&r, FW_EVAL_CHOICE, cx, 3);
    size_t lc;
    char *c = s_shard_text(FW_EVAL_CHOICE, cx, 0, 3, &lc);
    s = fw_evalset_new();
    fw_evalset_add_jsonl(s, a, la, "shard-0.jsonl", 0, 0);
    s_expect_err(fw_evalset_add_jsonl(s, c, lc, "shard-1.jsonl", 10, 10),
                 "shard-1.jsonl line 1: a choice score line in a set of text scores");
    CHECK(fw_evalset_count(s) == 10); /* nothing of the refused shard stayed */
    fw_evalset_destroy(&s);

    /* Malformed lines: each error names the origin, the line and the field,
     * and leaves the set as it was. */
    static const struct {
        const char *text, *err;
    } bad[] = {
        {"{\"index\":0,\"tokens\":1,\"logprob\":-1}\n{\"index\":1,\"tokens\":1,\"logprob\":-1",
         "f.jsonl line 2: invalid JSON"},
        {"[1,2]\n", "f.jsonl line 1: not a JSON object"},
        {"{\"tokens\":1,\"logprob\":-1}\n", "line 1: field \"index\" must be a non-negative"},
        {"{\"index\":-1,\"tokens\":1,\"logprob\":-1}\n", "field \"index\" must be a non-negative"},
        {"{\"index\":0,\"tokens\":1}\n", "no \"logprob\" or \"correct\" field"},
        {"{\"index\":0,\"tokens\":1,\"logprob\":\"x\"}\n", "field \"logprob\" must be a finite"},
        {"{\"index\":0,\"logprob\":-1}\n", "field \"tokens\" must be a non-negative integer"},
        {"{\"index\":0,\"tokens\":1,\"logprob\":2}\n", "field \"logprob\" is 2, above 0"},
        {"{\"index\":0,\"tokens\":0,\"logprob\":-2}\n", "a logprob of -2 over 0 tokens"},
        {"{\"index\":0,\"tokens\":1,\"logprob\":-1,\"exact_match\":2}\n",
         "field \"exact_match\" must be 0 or 1"},
        {"{\"index\":0,\"correct\":1,\"correct_norm\":0}\n", "field \"answer\" must be"},
        {"{\"index\":0,\"answer\":1,\"correct\":1}\n", "field \"correct_norm\" must be 0 or 1"},
        {"{\"index\":0,\"index\":1,\"tokens\":1,\"logprob\":-1}\n", "invalid JSON"},
        {"\n\n{\"index\":0,\"tokens\":1,\"logprob\":-1}\n{\"index\":1,\"tokens\":1,\"logprob\":-1,"
         "\"exact_match\":1}\n",
         "f.jsonl line 4: a completion score line in a set of text scores"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s = fw_evalset_new();
        s_expect_err(fw_evalset_add_jsonl(s, bad[i].text, strlen(bad[i].text), "f.jsonl", 0, 0),
                     bad[i].err);
        CHECK(fw_evalset_count(s) == 0 && fw_evalset_kind(s) == FW_EVAL_NONE);
        fw_evalset_destroy(&s);
    }

    /* State errors. */
    s = fw_evalset_new();
    fw_evalsum sum;
    fw_evalset_add_jsonl(s, a, la, "shard-0.jsonl", 0, 0);
    CHECK(fw_evalset_summary(s, &sum) == FW_ESTATE);
    CHECK(fw_evalset_write(s, "/nonexistent/x") == FW_ESTATE);
    CHECK(fw_evalset_finish(s, 10) == 0);
    CHECK(fw_evalset_add_jsonl(s, b, lb, "shard-1.jsonl", 10, 10) == FW_ESTATE);
    CHECK(fw_evalset_add(s, FW_EVAL_TEXT, &ex[0]) == FW_ESTATE);
    CHECK(fw_evalset_load(s, "/nonexistent/x", 0, 0) != 0);
    fw_evalset_destroy(&s);
    s = fw_evalset_new();
    CHECK(fw_evalset_load(s, "/nonexistent/evalstats.jsonl", 0, 0) == FW_ENOTFOUND);
    fw_evalset_destroy(&s);

    /* Summaries of different kinds do not merge; empty ones merge with anything. */
    fw_evalsum t, ch, empty;
    fw_evalsum_init(&t), fw_evalsum_init(&ch), fw_evalsum_init(&empty);
    fw_evalsum_add(&t, FW_EVAL_TEXT, &ex[1]);
    fw_evalsum_add(&ch, FW_EVAL_CHOICE, &cx[0]);
    s_expect_err(fw_evalsum_merge(&t, &ch), "merge: a choice summary into a text summary");
    CHECK(fw_evalsum_merge(&t, &empty) == 0 && t.records == 1);
    CHECK(fw_evalsum_merge(&empty, &ch) == 0 && empty.kind == FW_EVAL_CHOICE);
    s_expect_err(fw_evalsum_add(&t, FW_EVAL_COMPLETION, &ex[2]), "a completion example");
    fw_evalmetrics m;
    fw_evalsum z;
    fw_evalsum_init(&z);
    s_expect_err(fw_evalsum_metrics(&z, &m), "no records");
    fw_eval_example zero = {.index = 0, .tokens = 0, .logprob = 0};
    fw_evalsum_add(&z, FW_EVAL_TEXT, &zero);
    s_expect_err(fw_evalsum_metrics(&z, &m), "no token to score");
    CHECK(isnan(m.loss));
    free(a), free(b), free(c);
}

/* ---- paired comparison -------------------------------------------------------------- */

/* B = A shifted: per-example loss of B is A's + shift + noise*sd. */
static void s_pair(fw_evalrng *r, fw_eval_example *ea, fw_eval_example *eb, size_t n, double shift,
                   double sd) {
    for (size_t i = 0; i < n; i++) {
        double la = 3 + s_gauss(r), lb = la + shift + sd * s_gauss(r);
        if (la < 0.01) la = 0.01;
        if (lb < 0.01) lb = 0.01;
        uint64_t tok = 1 + fw_evalrng_below(r, 20);
        ea[i] = (fw_eval_example){
            .index = i, .line = i + 1, .tokens = tok, .logprob = -la * (double)tok};
        eb[i] = ea[i];
        eb[i].logprob = -lb * (double)tok;
    }
}

static void test_compare_identical(void) {
    fw_evalrng r;
    fw_evalrng_seed(&r, 11);
    fw_eval_example ex[300];
    s_random_examples(&r, FW_EVAL_COMPLETION, ex, 300);
    fw_evalset *a = s_set_of(FW_EVAL_COMPLETION, ex, 300),
               *b = s_set_of(FW_EVAL_COMPLETION, ex, 300);
    REQUIRE(a && b);
    fw_evalcmp c;
    fw_evalcmp_opts o = {.resamples = 2000, .seed = 3};
    REQUIRE(fw_evalcmp_run(a, b, &o, &c) == 0);
    CHECK(c.nmetrics == 4 && c.paired && c.examples == 300 && c.resamples == 2000);
    for (size_t i = 0; i < c.nmetrics; i++) {
        const fw_evalcmp_metric *m = &c.metric[i];
        CHECKF(m->diff == 0 && m->ci_lo == 0 && m->ci_hi == 0 && !m->significant &&
                   m->direction == 0 && strcmp(m->better, "none") == 0,
               "%s: diff %g CI [%g, %g]", m->name, m->diff, m->ci_lo, m->ci_hi);
    }
    CHECK(fw_evalcmp_find(&c, "exact_match") && !fw_evalcmp_find(&c, "accuracy"));
    fw_evalset_destroy(&a), fw_evalset_destroy(&b);
}

static void test_compare_deterministic(void) {
    fw_evalrng r;
    fw_evalrng_seed(&r, 12);
    enum { N = 150 };
    fw_eval_example ea[N], eb[N];
    s_pair(&r, ea, eb, N, -0.02, 0.3);
    fw_evalset *a = s_set_of(FW_EVAL_TEXT, ea, N), *b = s_set_of(FW_EVAL_TEXT, eb, N);
    REQUIRE(a && b);
    fw_evalcmp c1, c2, c3;
    fw_evalcmp_opts o = {.resamples = 1000, .seed = 99};
    REQUIRE(fw_evalcmp_run(a, b, &o, &c1) == 0 && fw_evalcmp_run(a, b, &o, &c2) == 0);
    CHECK(memcmp(c1.metric, c2.metric, sizeof c1.metric) == 0);
    o.seed = 100;
    REQUIRE(fw_evalcmp_run(a, b, &o, &c3) == 0);
    CHECK(!s_same_bits(c1.metric[0].ci_lo, c3.metric[0].ci_lo));
    CHECK(s_same_bits(c1.metric[0].diff, c3.metric[0].diff)); /* the estimate has no randomness */
    /* Default options: 10,000 resamples, 95%. */
    REQUIRE(fw_evalcmp_run(a, b, NULL, &c3) == 0);
    CHECK(c3.resamples == 10000 && c3.confidence == 0.95 && c3.seed == 0);
    fw_evalset_destroy(&a), fw_evalset_destroy(&b);
}

static void test_compare_shift(void) {
    fw_evalrng r;
    fw_evalrng_seed(&r, 13);
    enum { N = 400 };
    fw_eval_example ea[N], eb[N];
    /* B's loss is 0.5 lower on every example, give or take 0.1. */
    s_pair(&r, ea, eb, N, -0.5, 0.1);
    fw_evalset *a = s_set_of(FW_EVAL_TEXT, ea, N), *b = s_set_of(FW_EVAL_TEXT, eb, N);
    REQUIRE(a && b);
    fw_evalcmp c;
    fw_evalcmp_opts o = {.resamples = 2000, .seed = 1};
    REQUIRE(fw_evalcmp_run(a, b, &o, &c) == 0);
    CHECK(c.nmetrics == 3);
    const char *names[] = {"loss", "loss_per_example"};
    for (int k = 0; k < 2; k++) {
        const fw_evalcmp_metric *m = fw_evalcmp_find(&c, names[k]);
        REQUIRE(m);
        CHECKF(m->significant && m->direction == -1 && strcmp(m->better, "B") == 0 &&
                   m->ci_lo <= -0.5 && -0.5 <= m->ci_hi && m->ci_lo <= m->diff &&
                   m->diff <= m->ci_hi,
               "%s: diff %g CI [%g, %g]", m->name, m->diff, m->ci_lo, m->ci_hi);
    }
    const fw_evalcmp_metric *p = fw_evalcmp_find(&c, "perplexity");
    CHECK(p && p->significant && p->b < p->a && p->ci_hi < 0 && !p->higher_is_better);
    /* The token-weighted loss is the ratio of sums, not a mean of ratios. */
    double nla = 0, nlb = 0, tok = 0;
    for (int i = 0; i < N; i++) nla -= ea[i].logprob, nlb -= eb[i].logprob, tok += ea[i].tokens;
    CHECK_NEAR(c.metric[0].a, nla / tok, 1e-12);
    CHECK_NEAR(c.metric[0].b, nlb / tok, 1e-12);

    /* Swapped: the same difference, negated, and A is the better model. */
    fw_evalcmp s;
    REQUIRE(fw_evalcmp_run(b, a, &o, &s) == 0);
    CHECK(s.metric[0].diff == -c.metric[0].diff && s.metric[0].direction == 1 &&
          strcmp(s.metric[0].better, "A") == 0);

    /* Exact match and multiple choice: B right far more often. */
    enum { M = 300 };
    fw_eval_example ca[M], cb[M], ka[M], kb[M];
    for (int i = 0; i < M; i++) {
        int base = s_unif(&r) < 0.3;
        ca[i] = (fw_eval_example){.index = (uint64_t)i,
                                  .line = (uint64_t)i + 1,
                                  .tokens = 5,
                                  .logprob = -10,
                                  .exact_match = base};
        cb[i] = ca[i];
        cb[i].exact_match = base || s_unif(&r) < 0.4; /* ~0.3 -> ~0.58 */
        ka[i] = (fw_eval_example){.index = (uint64_t)i,
                                  .answer = i % 4,
                                  .correct = s_unif(&r) < 0.5,
                                  .correct_norm = s_unif(&r) < 0.5};
        kb[i] = ka[i];
        kb[i].correct = ka[i].correct && s_unif(&r) < 0.5; /* ~0.5 -> ~0.25 */
    }
    fw_evalset *xa = s_set_of(FW_EVAL_COMPLETION, ca, M), *xb = s_set_of(FW_EVAL_COMPLETION, cb, M);
    fw_evalset *ya = s_set_of(FW_EVAL_CHOICE, ka, M), *yb = s_set_of(FW_EVAL_CHOICE, kb, M);
    REQUIRE(xa && xb && ya && yb);
    REQUIRE(fw_evalcmp_run(xa, xb, &o, &c) == 0);
    const fw_evalcmp_metric *em = fw_evalcmp_find(&c, "exact_match");
    CHECK(em && em->significant && em->direction == 1 && strcmp(em->better, "B") == 0 &&
          em->higher_is_better);
    CHECK(!fw_evalcmp_find(&c, "loss")->significant); /* same logprobs */
    REQUIRE(fw_evalcmp_run(ya, yb, &o, &c) == 0);
    CHECK(c.nmetrics == 2);
    const fw_evalcmp_metric *acc = fw_evalcmp_find(&c, "accuracy");
    const fw_evalcmp_metric *accn = fw_evalcmp_find(&c, "accuracy_norm");
    CHECK(acc && acc->significant && acc->direction == -1 && strcmp(acc->better, "A") == 0);
    CHECK(accn && accn->diff == 0 && !accn->significant);

    /* JSON and text renderings. */
    json_t *j = fw_evalcmp_to_json(&c, "demo@champion", "demo:7");
    REQUIRE(j);
    CHECK_EQ_STR(json_string_value(json_object_get(j, "a")), "demo@champion");
    CHECK_EQ_STR(json_string_value(json_object_get(j, "kind")), "choice");
    CHECK_EQ_STR(json_string_value(json_object_get(j, "method")), "paired-bootstrap");
    CHECK(json_integer_value(json_object_get(j, "resamples")) == 2000);
    json_t *ms = json_object_get(j, "metrics"), *m0 = json_array_get(ms, 0);
    CHECK(json_array_size(ms) == 2);
    CHECK_EQ_STR(json_string_value(json_object_get(m0, "metric")), "accuracy");
    CHECK_EQ_STR(json_string_value(json_object_get(m0, "direction")), "lower");
    CHECK_EQ_STR(json_string_value(json_object_get(m0, "better")), "A");
    CHECK(json_is_true(json_object_get(m0, "significant")));
    CHECK(json_real_value(json_object_get(m0, "ci_lo")) == acc->ci_lo);
    CHECK(json_real_value(json_object_get(m0, "diff")) == acc->diff);
    char *dump = json_dumps(j, JSON_COMPACT);
    fprintf(stderr, "   %s\n", dump);
    free(dump);
    json_decref(j);
    char *txt = fw_evalcmp_to_text(&c, "demo@champion", "demo:7");
    REQUIRE(txt);
    fprintf(stderr, "%s", txt);
    CHECK(strstr(txt, "B lower, A better (significant)") && strstr(txt, "no significant"));
    free(txt);
    fw_evalset_destroy(&a), fw_evalset_destroy(&b);
    fw_evalset_destroy(&xa), fw_evalset_destroy(&xb);
    fw_evalset_destroy(&ya), fw_evalset_destroy(&yb);
}

/* Over many synthetic datasets with a known true mean difference, the 95%
 * interval of the per-example loss difference covers it about 95% of the time
 * (percentile bootstrap undercovers slightly at small n; accept 90-99%). */
static void test_compare_coverage(void) {
    enum { DATASETS = 200, N = 80 };
    const double truth = -0.15;
    fw_evalrng r;
    fw_evalrng_seed(&r, 77);
    fw_eval_example ea[N], eb[N];
    int covered = 0, significant = 0;
    for (int t = 0; t < DATASETS; t++) {
        s_pair(&r, ea, eb, N, truth, 0.5);
        fw_evalset *a = s_set_of(FW_EVAL_TEXT, ea, N), *b = s_set_of(FW_EVAL_TEXT, eb, N);
        REQUIRE(a && b);
        fw_evalcmp c;
        fw_evalcmp_opts o = {.resamples = 500, .seed = (uint64_t)t};
        REQUIRE(fw_evalcmp_run(a, b, &o, &c) == 0);
        const fw_evalcmp_metric *m = fw_evalcmp_find(&c, "loss_per_example");
        covered += m->ci_lo <= truth && truth <= m->ci_hi;
        significant += m->significant;
        fw_evalset_destroy(&a), fw_evalset_destroy(&b);
    }
    fprintf(stderr, "   coverage %d/%d, significant %d/%d\n", covered, DATASETS, significant,
            DATASETS);
    CHECKF(covered >= 180 && covered <= 198, "covered %d of %d", covered, DATASETS);
    /* Power: with SE 0.5/sqrt(80) = 0.056 a shift of 0.15 is ~2.7 SE. */
    CHECK(significant >= 120);
}

/* Strongly correlated scores (a hard example is hard for both models): the
 * paired interval is many times narrower than the one from resampling the
 * two models independently, and only it finds the small real difference. */
static void test_paired_vs_unpaired(void) {
    fw_evalrng r;
    fw_evalrng_seed(&r, 31);
    enum { N = 200 };
    fw_eval_example ea[N], eb[N];
    s_pair(&r, ea, eb, N, -0.05, 0.05); /* between-example sd 1, within-pair sd 0.05 */
    fw_evalset *a = s_set_of(FW_EVAL_TEXT, ea, N), *b = s_set_of(FW_EVAL_TEXT, eb, N);
    REQUIRE(a && b);
    fw_evalcmp p, u;
    fw_evalcmp_opts o = {.resamples = 2000, .seed = 5};
    REQUIRE(fw_evalcmp_run(a, b, &o, &p) == 0);
    o.unpaired = 1;
    REQUIRE(fw_evalcmp_run(a, b, &o, &u) == 0);
    CHECK(p.paired == 1 && u.paired == 0);
    const fw_evalcmp_metric *mp = fw_evalcmp_find(&p, "loss_per_example");
    const fw_evalcmp_metric *mu = fw_evalcmp_find(&u, "loss_per_example");
    double wp = mp->ci_hi - mp->ci_lo, wu = mu->ci_hi - mu->ci_lo;
    fprintf(stderr, "   paired CI [%.4f, %.4f] width %.4f; unpaired [%.4f, %.4f] width %.4f\n",
            mp->ci_lo, mp->ci_hi, wp, mu->ci_lo, mu->ci_hi, wu);
    CHECKF(wp * 10 < wu, "paired width %g, unpaired %g", wp, wu);
    CHECK(mp->diff == mu->diff);
    CHECK(mp->significant && strcmp(mp->better, "B") == 0);
    CHECK(!mu->significant);
    json_t *j = fw_evalcmp_to_json(&u, NULL, NULL);
    CHECK(j && strcmp(json_string_value(json_object_get(j, "method")), "unpaired-bootstrap") == 0);
    CHECK(j && strcmp(json_string_value(json_object_get(j, "a")), "A") == 0);
    json_decref(j);
    fw_evalset_destroy(&a), fw_evalset_destroy(&b);
}

static void test_compare_errors(void) {
    fw_evalrng r;
    fw_evalrng_seed(&r, 9);
    fw_eval_example ex[50], cx[50];
    s_random_examples(&r, FW_EVAL_TEXT, ex, 50);
    s_random_examples(&r, FW_EVAL_CHOICE, cx, 50);
    fw_evalset *a = s_set_of(FW_EVAL_TEXT, ex, 50), *shorter = s_set_of(FW_EVAL_TEXT, ex, 49);
    fw_evalset *choice = s_set_of(FW_EVAL_CHOICE, cx, 50);
    REQUIRE(a && shorter && choice);
    fw_evalcmp c;
    s_expect_err(fw_evalcmp_run(a, shorter, NULL, &c),
                 "A has 50 examples, B has 49: example 49 is only in A");
    s_expect_err(fw_evalcmp_run(shorter, a, NULL, &c), "example 49 is only in B");
    s_expect_err(fw_evalcmp_run(a, choice, NULL, &c), "A was scored as text, B as choice");

    /* Same count, but a different example at index 17 (line differs). */
    fw_eval_example moved[50];
    memcpy(moved, ex, sizeof moved);
    moved[17].line = 99;
    fw_evalset *m = s_set_of(FW_EVAL_TEXT, moved, 50);
    s_expect_err(fw_evalcmp_run(a, m, NULL, &c),
                 "example 17 is dataset line 18 in A and line 99 in B");
    fw_eval_example cy[50];
    memcpy(cy, cx, sizeof cy);
    cy[23].answer = (cx[23].answer + 1) % 4;
    fw_evalset *choice2 = s_set_of(FW_EVAL_CHOICE, cy, 50);
    s_expect_err(fw_evalcmp_run(choice, choice2, NULL, &c), "example 23 has answer");

    fw_evalcmp_opts o = {.resamples = 10};
    s_expect_err(fw_evalcmp_run(a, a, &o, &c), "10 resamples, must be 100..");
    o = (fw_evalcmp_opts){.confidence = 1.5};
    s_expect_err(fw_evalcmp_run(a, a, &o, &c), "confidence 1.5");
    fw_evalset *open = fw_evalset_new();
    fw_evalset_add(open, FW_EVAL_TEXT, &ex[0]);
    CHECK(fw_evalcmp_run(a, open, NULL, &c) == FW_ESTATE);

    /* Every example has 0 tokens: no loss to compare. */
    fw_eval_example z[5];
    for (int i = 0; i < 5; i++) z[i] = (fw_eval_example){.index = (uint64_t)i};
    fw_evalset *za = s_set_of(FW_EVAL_TEXT, z, 5);
    s_expect_err(fw_evalcmp_run(za, za, NULL, &c), "no token to score");
    fw_evalset_destroy(&za);
    fw_evalset_destroy(&open);
    fw_evalset_destroy(&choice2);
    fw_evalset_destroy(&m);
    fw_evalset_destroy(&a), fw_evalset_destroy(&shorter), fw_evalset_destroy(&choice);
}

int main(void) {
    RUN(test_xsum_exact);
    RUN(test_rng);
    RUN(test_merge_exact);
    RUN(test_summary_json);
    RUN(test_merge_errors);
    RUN(test_compare_identical);
    RUN(test_compare_deterministic);
    RUN(test_compare_shift);
    RUN(test_compare_coverage);
    RUN(test_paired_vs_unpaired);
    RUN(test_compare_errors);
    return fw_test_summary();
}
