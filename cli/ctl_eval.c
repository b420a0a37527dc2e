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
 * Later: model references (NAME:VERSION, NAME@ALIAS) instead of files, once
 * eval jobs store their per-example scores with the model version. */
#include "ctl.h"

#include "fw_err.h"
#include "fw_evalstats.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static int s_cmd_compare(ctl_t *c) {
    const char *pa = c->argv[0], *pb = c->argv[1];
    fw_evalcmp_opts opts;
    int ret = s_opts(c, &opts);
    if (ret) return ret;
    ret = CTL_EXIT_ERROR;
    fw_evalset *a = s_load(c, pa), *b = a ? s_load(c, pb) : NULL;
    if (!b) goto done;
    fw_evalcmp cmp;
    int rc = fw_evalcmp_run(a, b, &opts, &cmp);
    if (rc < 0) {
        ctl_errorf(c, "%s (A = %s, B = %s) (%s)", fw_err_detail(), pa, pb, fw_errname(rc));
        goto done;
    }
    if (c->output == CTL_OUT_JSON) {
        json_t *doc = fw_evalcmp_to_json(&cmp, pa, pb);
        if (!doc) {
            ctl_errorf(c, "out of memory");
            goto done;
        }
        ctl_print_json(doc);
        json_decref(doc);
    } else {
        char *text = fw_evalcmp_to_text(&cmp, pa, pb);
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
    return ret;
}

static const ctl_flag_def s_compare_flags[] = {
    {"resamples", 0, "N", "Bootstrap resamples, 100 to 10000000 (default 10000)."},
    {"seed", 0, "S", "Seed of the resampling: the same seed gives the same interval (default 0)."},
    {"confidence", 0, "C", "Level of the interval, strictly between 0 and 1 (default 0.95)."},
    {NULL, 0, NULL, NULL}};

const ctl_cmd_def ctl_eval_cmds[] = {
    {"eval", "compare", "A B", 2, 2,
     "Compare two models' per-example scores on the same dataset (paired bootstrap).",
     "A and B are files written by `flywheel-engine eval --per-example FILE` for two models "
     "on the same dataset. Prints each metric for A and B, the difference B - A, its "
     "bootstrap confidence interval (the same examples resampled for both models) and whether "
     "it is significant (docs/eval.md). Runs locally, no coordinator needed. Exit 0 whatever "
     "the verdict; 1 when a file is bad or the two are not the same examples.",
     s_compare_flags, s_cmd_compare},
    {NULL, NULL, NULL, 0, 0, NULL, NULL, NULL, NULL}};
