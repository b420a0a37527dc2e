/* ctl_eval.c - `flywheelctl eval compare A B`: is model B better than model A
 * on the same examples, beyond what chance would give?
 *
 * Theory of operation
 * -------------------
 * A and B are per-example score files, one JSON line per dataset record, as
 * `flywheel-engine eval --per-example FILE` writes them for two models run on
 * the same dataset. Each file is loaded into an fw_evalset and finished
 * (records 0..n-1, no gap, no duplicate); fw_evalcmp_run then checks that the
 * two sets are the same examples (kind, count, dataset line of every record)
 * and computes each metric for A and for B, the difference B - A and a
 * paired-bootstrap confidence interval with a verdict (docs/eval.md). The
 * whole computation is local: no coordinator is contacted, so no token is
 * needed.
 *
 * Exit codes as for every command: 0 when the comparison ran, whatever the
 * verdict (scripts read the verdict from -o json); 1 when a file is bad or
 * the two are not the same examples, with the library's message naming the
 * file and line or the first differing example; 64 for a bad flag value.
 *
 * Model references. When neither A nor B is an existing file (nor has a
 * '/': model names never do) they are model references (NAME,
 * NAME:VERSION, NAME@ALIAS): both versions are read (MODEL_GET), whose
 * docs list their eval records ("evals": dataset
 * version, metrics, scores blob). The dataset is the one both have an eval
 * on (--dataset NAME or NAME@VERSION picks; with several, the newest
 * version, then the one evaluated last). Each merged per-example scores
 * blob is downloaded into memory and verified against its digest
 * (ctl_blob_get_buffer), loaded with fw_evalset_add_jsonl and compared
 * exactly as two files would be, so the verdict does not depend on where
 * the scores came from. No eval in common is an error that says which eval
 * job to run. --metric keeps one metric of the comparison. */
#include "ctl.h"

#include "fw_err.h"
#include "fw_evalstats.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Merged scores blobs read into memory: far above any eval set we run
 * (a 100k-record eval is ~20 MB of JSON lines). */
#define S_SCORES_MAX ((size_t)1 << 30)

/* A usage error in a flag value: message, then exit 64 (as dataset split). */
#define S_USAGE(c, ...) (ctl_errorf(c, __VA_ARGS__), CTL_EXIT_USAGE)

/* Load and finish one per-example file; NULL after printing the error. */
static fw_evalset *s_load(ctl_t *c, const char *path) {
    fw_evalset *s = fw_evalset_new();
    if (!s) {
        ctl_errorf(c, "%s: out of memory", path);
        return NULL;
    }
    int rc = fw_evalset_load(s, path, 0, 0);
    if (rc == 0) {
        rc = fw_evalset_finish(s, 0);
        /* finish's messages name indices, not the file: say which one. */
        if (rc < 0) {
            ctl_errorf(c, "%s: %s (%s)", path, fw_err_detail(), fw_errname(rc));
            fw_evalset_destroy(&s);
            return NULL;
        }
        return s;
    }
    /* load's messages already name the file and line. */
    ctl_errorf(c, "%s (%s)", fw_err_detail(), fw_errname(rc));
    fw_evalset_destroy(&s);
    return NULL;
}

/* The command flags into opts: 0, or CTL_EXIT_USAGE after printing why. The
 * library checks the same ranges, but a bad flag is a usage error (64), not
 * a failed comparison (1), so it is refused here first. */
static int s_opts(ctl_t *c, fw_evalcmp_opts *o) {
    memset(o, 0, sizeof *o);
    o->resamples = FW_EVALCMP_RESAMPLES_DEFAULT;
    o->confidence = 0.95;
    const char *rs = ctl_flag(c, "resamples"), *ss = ctl_flag(c, "seed");
    const char *cs = ctl_flag(c, "confidence");
    char *end;
    if (rs) {
        errno = 0;
        unsigned long long v = strtoull(rs, &end, 10);
        if (end == rs || *end || errno || rs[0] == '-' || v < FW_EVALCMP_RESAMPLES_MIN ||
            v > FW_EVALCMP_RESAMPLES_MAX)
            return S_USAGE(c, "--resamples '%s': expected an integer from %d to %d", rs,
                           FW_EVALCMP_RESAMPLES_MIN, FW_EVALCMP_RESAMPLES_MAX);
        o->resamples = (uint32_t)v;
    }
    if (ss) {
        errno = 0;
        o->seed = strtoull(ss, &end, 10);
        if (end == ss || *end || errno || ss[0] == '-')
            return S_USAGE(c, "--seed '%s': expected a non-negative integer", ss);
    }
    if (cs) {
        errno = 0;
        double v = strtod(cs, &end);
        if (end == cs || *end || errno || !(v > 0.0 && v < 1.0))
            return S_USAGE(c, "--confidence '%s': expected a number strictly between 0 and 1 "
                              "(0.95)",
                           cs);
        o->confidence = v;
    }
    return 0;
}

/* ------------------------------------------------------ model refs */

/* "NAME@V" -> its version number (0 when malformed). */
static long long s_dataset_version(const char *ref) {
    const char *at = strrchr(ref, '@');
    return at ? strtoll(at + 1, NULL, 10) : 0;
}

/* Does eval record e's dataset ("NAME@V") match the --dataset filter
 * (NULL: any; "NAME": any version; "NAME@V": exactly)? */
static bool s_dataset_match(const char *have, const char *want) {
    if (!want) return true;
    if (strcmp(have, want) == 0) return true;
    size_t n = strlen(want);
    return !strchr(want, '@') && strncmp(have, want, n) == 0 && have[n] == '@';
}

/* The eval record of `evals` on dataset `ds`, or NULL. */
static json_t *s_eval_on(const json_t *evals, const char *ds) {
    size_t i;
    json_t *e;
    json_array_foreach(evals, i, e) {
        if (strcmp(ctl_str(e, "dataset"), ds) == 0) return e;
    }
    return NULL;
}

/* The eval records of A and B on the dataset both have (see the header);
 * *ea and *eb borrowed from the docs. -1 after printing why. */
static int s_pick(ctl_t *c, const char *ra, const char *rb, const json_t *da, const json_t *db,
                  const char *want, json_t **ea, json_t **eb) {
    const json_t *la = json_object_get(da, "evals"), *lb = json_object_get(db, "evals");
    *ea = *eb = NULL;
    size_t i;
    json_t *e;
    json_array_foreach(la, i, e) {
        const char *ds = ctl_str(e, "dataset");
        json_t *o = s_eval_on(lb, ds);
        if (!ds[0] || !o || !s_dataset_match(ds, want)) continue;
        if (*ea) {
            const char *cur = ctl_str(*ea, "dataset");
            long long va = s_dataset_version(ds), vc = s_dataset_version(cur);
            json_int_t ta = json_integer_value(json_object_get(o, "created_at"));
            json_int_t tc = json_integer_value(json_object_get(*eb, "created_at"));
            if (va < vc || (va == vc && ta <= tc)) continue;
        }
        *ea = e;
        *eb = o;
    }
    if (*ea) return 0;
    ctl_errorf(c,
               "%s and %s have no eval on %s%s in common (%zu and %zu evals): run an eval job "
               "first, e.g. {\"kind\":\"eval\",\"models\":[\"%s\",\"%s\"],\"dataset\":\"%s\"} "
               "(flywheelctl job submit SPEC --wait)",
               ra, rb, want ? "dataset " : "any dataset", want ? want : "", json_array_size(la),
               json_array_size(lb), ra, rb, want ? want : "D");
    return -1;
}

/* A model's eval scores blob as a finished set; NULL after printing. */
static fw_evalset *s_load_blob(ctl_t *c, const char *label, const json_t *ev) {
    const char *digest = ctl_str(ev, "scores");
    char what[300], *text = NULL;
    size_t len = 0;
    snprintf(what, sizeof what, "scores of %s on %s", label, ctl_str(ev, "dataset"));
    if (!digest[0]) {
        ctl_errorf(c, "%s: the eval record names no scores blob", what);
        return NULL;
    }
    if (ctl_blob_get_buffer(c, what, digest, S_SCORES_MAX, &text, &len) < 0) return NULL;
    fw_evalset *s = fw_evalset_new();
    int rc = s ? fw_evalset_add_jsonl(s, text, len, digest, 0, 0) : FW_ENOMEM;
    free(text);
    /* The record count, when the eval record has it, also catches a short blob. */
    json_t *recs = json_object_get(ev, "records");
    uint64_t expected = json_is_integer(recs) ? (uint64_t)json_integer_value(recs) : 0;
    if (rc == 0) rc = fw_evalset_finish(s, expected);
    if (rc < 0) {
        ctl_errorf(c, "%s (%s): %s (%s)", what, digest, fw_err_detail(), fw_errname(rc));
        fw_evalset_destroy(&s);
    }
    return s;
}

/* "demo@champion (demo:1)", or "demo:1" when that is what was typed. */
static void s_label(const char *ref, const json_t *doc, char *buf, size_t size) {
    char canon[300];
    snprintf(canon, sizeof canon, "%s:%" JSON_INTEGER_FORMAT, ctl_str(doc, "name"),
             json_integer_value(json_object_get(doc, "version")));
    if (strcmp(canon, ref) == 0)
        snprintf(buf, size, "%s", ref);
    else
        snprintf(buf, size, "%s (%s)", ref, canon);
}

/* A path rather than a model reference: it exists, or it has a '/' (model
 * names never do), so a missing file is reported as one. */
static bool s_is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 || strchr(p, '/') != NULL;
}

static int s_cmd_compare(ctl_t *c) {
    const char *pa = c->argv[0], *pb = c->argv[1];
    const char *want = ctl_flag(c, "dataset"), *metric = ctl_flag(c, "metric");
    fw_evalcmp_opts opts;
    int ret = s_opts(c, &opts);
    if (ret) return ret;
    ret = CTL_EXIT_ERROR;
    /* Files when either argument is one (the other, if missing, is then
     * reported as a missing file); model references otherwise. */
    bool files = s_is_file(pa) || s_is_file(pb);
    fw_evalset *a = NULL, *b = NULL;
    json_t *da = NULL, *db = NULL;
    char la[400], lb[400], dataset[300] = "";
    if (files) {
        if (want) {
            ctl_errorf(c, "--dataset picks the eval of two model references, not of files");
            return CTL_EXIT_USAGE;
        }
        snprintf(la, sizeof la, "%s", pa);
        snprintf(lb, sizeof lb, "%s", pb);
        a = s_load(c, pa);
        b = a ? s_load(c, pb) : NULL;
    } else {
        if (ctl_connect(c) < 0) return CTL_EXIT_ERROR;
        da = ctl_model_get(c, pa);
        db = da ? ctl_model_get(c, pb) : NULL;
        json_t *ea, *eb;
        if (!db || s_pick(c, pa, pb, da, db, want, &ea, &eb) < 0) goto done;
        snprintf(dataset, sizeof dataset, "%s", ctl_str(ea, "dataset"));
        s_label(pa, da, la, sizeof la);
        s_label(pb, db, lb, sizeof lb);
        a = s_load_blob(c, la, ea);
        b = a ? s_load_blob(c, lb, eb) : NULL;
    }
    if (!b) goto done;
    fw_evalcmp cmp;
    int rc = fw_evalcmp_run(a, b, &opts, &cmp);
    if (rc < 0) {
        ctl_errorf(c, "%s (A = %s, B = %s) (%s)", fw_err_detail(), la, lb, fw_errname(rc));
        goto done;
    }
    if (metric) {
        const fw_evalcmp_metric *m = fw_evalcmp_find(&cmp, metric);
        if (!m) {
            char names[200] = "";
            for (size_t i = 0; i < cmp.nmetrics; i++)
                snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s",
                         i ? ", " : "", cmp.metric[i].name);
            ctl_errorf(c, "--metric %s: this %s comparison has %s", metric,
                       fw_eval_kind_name(cmp.kind), names);
            ret = CTL_EXIT_USAGE;
            goto done;
        }
        cmp.metric[0] = *m;
        cmp.nmetrics = 1;
    }
    if (c->output == CTL_OUT_JSON) {
        json_t *doc = fw_evalcmp_to_json(&cmp, la, lb);
        if (!doc) {
            ctl_errorf(c, "out of memory");
            goto done;
        }
        if (dataset[0]) json_object_set_new(doc, "dataset", json_string(dataset));
        ctl_print_json(doc);
        json_decref(doc);
    } else {
        if (dataset[0]) printf("dataset %s\n", dataset);
        char *text = fw_evalcmp_to_text(&cmp, la, lb);
        if (!text) {
            ctl_errorf(c, "out of memory");
            goto done;
        }
        fputs(text, stdout);
        free(text);
    }
    ret = CTL_EXIT_OK;
done:
    fw_evalset_destroy(&a);
    fw_evalset_destroy(&b);
    json_decref(da);
    json_decref(db);
    return ret;
}

static const ctl_flag_def s_compare_flags[] = {
    {"resamples", 0, "N", "Bootstrap resamples, 100 to 10000000 (default 10000)."},
    {"seed", 0, "S", "Seed of the resampling: the same seed gives the same interval (default 0)."},
    {"confidence", 0, "C", "Level of the interval, strictly between 0 and 1 (default 0.95)."},
    {"dataset", 0, "D",
     "Model refs: the eval dataset (NAME or NAME@VERSION) when both have several in common."},
    {"metric", 0, "M", "Print only this metric (loss, perplexity, exact_match, accuracy, ...)."},
    {NULL, 0, NULL, NULL}};

const ctl_cmd_def ctl_eval_cmds[] = {
    {"eval", "compare", "A B", 2, 2,
     "Compare two models' per-example scores on the same dataset (paired bootstrap).",
     "A and B are files written by `flywheel-engine eval --per-example FILE` for two models "
     "on the same dataset (run locally, no coordinator needed), or two model references "
     "(NAME:VERSION, NAME@ALIAS) whose eval jobs stored scores on a common dataset: those are "
     "downloaded, verified and compared the same way. Prints each metric for A and B, the "
     "difference B - A, its bootstrap confidence interval (the same examples resampled for "
     "both models) and whether it is significant (docs/eval.md). Exit 0 whatever the verdict; "
     "1 when a file or blob is bad, the two are not the same examples, or the models have no "
     "eval in common.",
     s_compare_flags, s_cmd_compare},
    {NULL, NULL, NULL, 0, 0, NULL, NULL, NULL, NULL}};
