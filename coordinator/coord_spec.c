/* coord_spec.c - job spec validation.
 *
 * Strict by design: a field the coordinator does not know is an error, not
 * something silently ignored, so a typo ("max_retry") is caught at submit
 * time instead of surprising someone at the fourth failure. Every error
 * names the field by its JSON path from "spec". */
#include "coord_spec.h"

#include "fw_err.h"

#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const s_command_fields[] = {"command", NULL};
static const char *const s_no_fields[] = {NULL};
/* "resolved" is written by the leader at submission (coord_ml.c), never by
 * the submitter: coord_ml_prepare refuses a spec that brings its own. */
static const char *const s_finetune_fields[] = {
    "base", "dataset", "eval_dataset", "output", "hparams", "checkpoint_every", "threads",
    "collective", "resolved", NULL};
static const char *const s_embed_fields[] = {"model", "dataset", "batch", "seq", "threads",
                                             "truncate", "resolved", NULL};
static const char *const s_eval_fields[] = {"models", "dataset", "batch", "seq", "threads",
                                            "resolved", NULL};

/* The kinds table. A later issue adds serve here. */
static const coord_kind_info s_kinds[] = {
    {"noop", false, false, s_no_fields, "completes at once inside the agent (tests, benchmarks)"},
    {"command", true, true, s_command_fields, "runs spec.command (argv) on the agent"},
    {"finetune", false, false, s_finetune_fields,
     "trains a registered model on a dataset with world_size data-parallel ranks; registers the "
     "result as a new model version"},
    {"embed", false, false, s_embed_fields,
     "embeds a dataset with a model in shards; one merged matrix artifact"},
    {"eval", false, false, s_eval_fields,
     "scores one or more models on a dataset in shards; merged metrics and per-example scores"},
};

const coord_kind_info *coord_kind_find(const char *kind) {
    if (!kind) return NULL;
    for (size_t i = 0; i < sizeof s_kinds / sizeof s_kinds[0]; i++)
        if (strcmp(s_kinds[i].kind, kind) == 0) return &s_kinds[i];
    return NULL;
}

const char *coord_kind_names(void) {
    static char buf[256];
    if (!buf[0]) {
        size_t off = 0;
        for (size_t i = 0; i < sizeof s_kinds / sizeof s_kinds[0]; i++)
            off += (size_t)snprintf(buf + off, sizeof buf - off, "%s%s", i ? ", " : "",
                                    s_kinds[i].kind);
    }
    return buf;
}

/* Fields every kind accepts. */
static const char *const s_common_fields[] = {
    "kind", "name", "shards", "world_size", "max_retries", "priority", "resources",
    "labels", "timeout_s", "env", "args", NULL};

static bool s_in(const char *const *list, const char *key) {
    for (; list && *list; list++)
        if (strcmp(*list, key) == 0) return true;
    return false;
}

void coord_spec_clear(coord_spec_t *s) {
    if (!s) return;
    for (int i = 0; i < s->nlabels; i++) {
        free(s->label_key[i]);
        free(s->label_val[i]);
    }
    free(s->json);
    memset(s, 0, sizeof *s);
}

/* Read an integer field in [lo, hi]; absent leaves *out alone. */
static int s_int(json_t *obj, const char *key, const char *path, long long lo, long long hi,
                 long long *out) {
    json_t *v = json_object_get(obj, key);
    if (!v) return 0;
    /* JSON from YAML converters may carry 2.0 for 2: accept integral reals. */
    long long x;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_real(v) && json_real_value(v) == (double)(long long)json_real_value(v)) {
        x = (long long)json_real_value(v);
    } else {
        if (lo == 0 && hi >= (1LL << 52))
            return fw_err_set(FW_EINVAL, "%s.%s: expected a non-negative integer", path, key);
        return fw_err_set(FW_EINVAL, "%s.%s: expected an integer %lld..%lld", path, key, lo, hi);
    }
    if (x < lo || x > hi) {
        if (lo == 0 && hi >= (1LL << 52))
            return fw_err_set(FW_EINVAL, "%s.%s: expected a non-negative integer", path, key);
        return fw_err_set(FW_EINVAL, "%s.%s: expected an integer %lld..%lld, got %lld", path,
                          key, lo, hi, x);
    }
    *out = x;
    return 0;
}

static int s_unknown(json_t *obj, const char *path, const char *const *a, const char *const *b) {
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        if (!s_in(a, k) && !s_in(b, k))
            return fw_err_set(FW_EINVAL, "%s.%.64s: unknown field", path, k);
    }
    return 0;
}

static bool s_label_ok(const char *s, size_t max) {
    size_t n = strlen(s);
    if (n == 0 || n > max) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '-' && c != '_' && c != '.' && c != '/') return false;
    }
    return true;
}

static bool s_env_name_ok(const char *s) {
    if (!s[0] || strlen(s) > 128 || !(isalpha((unsigned char)s[0]) || s[0] == '_')) return false;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_') return false;
    return true;
}

static int s_str(json_t *obj, const char *key, const char *path, bool required, size_t max) {
    json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required) return fw_err_set(FW_EINVAL, "%s.%s: required", path, key);
        return 0;
    }
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > max)
        return fw_err_set(FW_EINVAL, "%s.%s: expected a non-empty string of at most %zu bytes",
                          path, key, max);
    return 0;
}

static int s_num(json_t *obj, const char *key, const char *path, double lo, double hi) {
    json_t *v = json_object_get(obj, key);
    if (!v) return 0;
    if (!json_is_number(v) || json_number_value(v) < lo || json_number_value(v) > hi)
        return fw_err_set(FW_EINVAL, "%s.%s: expected a number %g..%g", path, key, lo, hi);
    return 0;
}

/* The fields of finetune, embed and eval (their meaning: docs/jobs.md). */
static int s_check_ml(json_t *root, const char *kind) {
    long long x = 0;
    int rc;
    if ((rc = s_int(root, "threads", "spec", 1, 1024, &x)) < 0) return rc;
    if ((rc = s_int(root, "batch", "spec", 1, 4096, &x)) < 0) return rc;
    if ((rc = s_int(root, "seq", "spec", 0, 1 << 20, &x)) < 0) return rc;
    if ((rc = s_str(root, "dataset", "spec", true, 300)) < 0) return rc;
    if (strcmp(kind, "finetune") == 0) {
        if (json_object_get(root, "shards"))
            return fw_err_set(FW_EINVAL, "spec.shards: a finetune job runs as a gang: give "
                              "world_size (the number of data-parallel ranks)");
        if ((rc = s_str(root, "base", "spec", true, 300)) < 0 ||
            (rc = s_str(root, "eval_dataset", "spec", false, 300)) < 0 ||
            (rc = s_str(root, "output", "spec", false, 128)) < 0 ||
            (rc = s_int(root, "checkpoint_every", "spec", 0, 1LL << 40, &x)) < 0)
            return rc;
        json_t *col = json_object_get(root, "collective");
        if (col && (!json_is_string(col) || (strcmp(json_string_value(col), "ring") != 0 &&
                                             strcmp(json_string_value(col), "nccl") != 0)))
            return fw_err_set(FW_EINVAL, "spec.collective: expected \"ring\" or \"nccl\"");
        json_t *hp = json_object_get(root, "hparams");
        if (!json_is_object(hp))
            return fw_err_set(FW_EINVAL, "spec.hparams: required, an object with at least "
                              "\"steps\"");
        static const char *const hf[] = {"steps",        "batch",     "seq",          "grad_accum",
                                         "lr",           "warmup",    "min_lr_frac",  "weight_decay",
                                         "grad_clip",    "seed",      "zero",         "grad_sync",
                                         NULL};
        if ((rc = s_unknown(hp, "spec.hparams", hf, NULL)) < 0) return rc;
        if (!json_object_get(hp, "steps"))
            return fw_err_set(FW_EINVAL, "spec.hparams.steps: required (optimizer steps)");
        if ((rc = s_int(hp, "steps", "spec.hparams", 1, 1LL << 40, &x)) < 0 ||
            (rc = s_int(hp, "batch", "spec.hparams", 1, 65536, &x)) < 0 ||
            (rc = s_int(hp, "seq", "spec.hparams", 0, 1 << 20, &x)) < 0 ||
            (rc = s_int(hp, "grad_accum", "spec.hparams", 1, 65536, &x)) < 0 ||
            (rc = s_int(hp, "warmup", "spec.hparams", 0, 1LL << 40, &x)) < 0 ||
            (rc = s_int(hp, "seed", "spec.hparams", 0, 1LL << 53, &x)) < 0 ||
            (rc = s_num(hp, "lr", "spec.hparams", 0, 10)) < 0 ||
            (rc = s_num(hp, "min_lr_frac", "spec.hparams", 0, 1)) < 0 ||
            (rc = s_num(hp, "weight_decay", "spec.hparams", 0, 10)) < 0 ||
            (rc = s_num(hp, "grad_clip", "spec.hparams", 0, 1e9)) < 0)
            return rc;
        json_t *z = json_object_get(hp, "zero"), *gs = json_object_get(hp, "grad_sync");
        if (z && !json_is_boolean(z))
            return fw_err_set(FW_EINVAL, "spec.hparams.zero: expected true (ZeRO-1: shard the "
                                         "optimizer state over the ranks) or false");
        const char *gv = gs ? json_string_value(gs) : NULL;
        if (gs && (!gv || (strcmp(gv, "auto") != 0 && strcmp(gv, "layers") != 0 &&
                           strcmp(gv, "whole") != 0)))
            return fw_err_set(FW_EINVAL, "spec.hparams.grad_sync: expected \"auto\", \"layers\" "
                                         "or \"whole\"");
    } else if (strcmp(kind, "embed") == 0) {
        if ((rc = s_str(root, "model", "spec", true, 300)) < 0) return rc;
        json_t *tr = json_object_get(root, "truncate");
        if (tr && !json_is_boolean(tr))
            return fw_err_set(FW_EINVAL, "spec.truncate: expected true or false");
    } else {
        json_t *ms = json_object_get(root, "models");
        if (!json_is_array(ms) || json_array_size(ms) < 1 || json_array_size(ms) > 16)
            return fw_err_set(FW_EINVAL, "spec.models: required, an array of 1-16 model "
                              "references");
        size_t i;
        json_t *m;
        json_array_foreach(ms, i, m) {
            if (!json_is_string(m) || json_string_length(m) == 0 || json_string_length(m) > 300)
                return fw_err_set(FW_EINVAL, "spec.models[%zu]: expected a model reference", i);
        }
    }
    return 0;
}

static int s_parse(json_t *root, uint32_t max_tasks, coord_spec_t *out) {
    int rc;
    if (!json_is_object(root)) return fw_err_set(FW_EINVAL, "spec: expected a JSON object");

    json_t *kind = json_object_get(root, "kind");
    if (!kind) return fw_err_set(FW_EINVAL, "spec.kind: required (one of %s)", coord_kind_names());
    if (!json_is_string(kind)) return fw_err_set(FW_EINVAL, "spec.kind: expected a string");
    const coord_kind_info *ki = coord_kind_find(json_string_value(kind));
    if (!ki)
        return fw_err_set(FW_EINVAL, "spec.kind: unknown kind \"%.32s\" (known: %s)",
                          json_string_value(kind), coord_kind_names());
    snprintf(out->kind, sizeof out->kind, "%s", ki->kind);
    out->admin_only = ki->admin_only;
    if ((rc = s_unknown(root, "spec", s_common_fields, ki->fields)) < 0) return rc;

    json_t *name = json_object_get(root, "name");
    if (name && (!json_is_string(name) || json_string_length(name) > 128))
        return fw_err_set(FW_EINVAL, "spec.name: expected a string of at most 128 bytes");

    bool has_shards = json_object_get(root, "shards") != NULL;
    bool has_world = json_object_get(root, "world_size") != NULL;
    if (has_shards && has_world)
        return fw_err_set(FW_EINVAL, "spec.world_size: give either shards or world_size, not both");
    long long n = 1;
    if (has_world) {
        long long hi = max_tasks < COORD_SPEC_MAX_WORLD ? max_tasks : COORD_SPEC_MAX_WORLD;
        if ((rc = s_int(root, "world_size", "spec", 1, hi, &n)) < 0) return rc;
        out->gang = true;
    } else if ((rc = s_int(root, "shards", "spec", 1, max_tasks, &n)) < 0) {
        return rc;
    }
    bool ml = ki->fields == s_finetune_fields || ki->fields == s_embed_fields ||
              ki->fields == s_eval_fields;
    if (ml && (rc = s_check_ml(root, ki->kind)) < 0) return rc;
    if (ki->fields == s_finetune_fields) out->gang = true; /* world_size 1 by default */
    if (ki->fields == s_eval_fields) {
        /* Every model is scored on every shard: models x shards tasks. */
        long long tasks = n * (long long)json_array_size(json_object_get(root, "models"));
        if (tasks > (long long)max_tasks)
            return fw_err_set(FW_EINVAL, "spec.shards: %lld models x %lld shards = %lld tasks, "
                              "at most %u", (long long)json_array_size(json_object_get(root,
                              "models")), n, tasks, max_tasks);
        n = tasks;
    }
    out->ntasks = (uint32_t)n;

    long long retries = COORD_SPEC_DEFAULT_RETRIES, prio = 0;
    if ((rc = s_int(root, "max_retries", "spec", 0, COORD_SPEC_MAX_RETRIES, &retries)) < 0)
        return rc;
    if ((rc = s_int(root, "priority", "spec", -COORD_SPEC_MAX_PRIORITY, COORD_SPEC_MAX_PRIORITY,
                    &prio)) < 0)
        return rc;
    out->max_retries = (uint32_t)retries;
    out->priority = (int32_t)prio;

    long long cpus = COORD_SPEC_DEFAULT_CPUS, gpus = 0, mem = 0;
    json_t *res = json_object_get(root, "resources");
    if (res) {
        static const char *const rf[] = {"cpus", "gpus", "memory_mb", NULL};
        if (!json_is_object(res)) return fw_err_set(FW_EINVAL, "spec.resources: expected an object");
        if ((rc = s_unknown(res, "spec.resources", rf, NULL)) < 0) return rc;
        const long long big = 1LL << 53;
        if ((rc = s_int(res, "cpus", "spec.resources", 0, big, &cpus)) < 0) return rc;
        if ((rc = s_int(res, "gpus", "spec.resources", 0, big, &gpus)) < 0) return rc;
        if ((rc = s_int(res, "memory_mb", "spec.resources", 0, big, &mem)) < 0) return rc;
        if (gpus > 64)
            return fw_err_set(FW_EINVAL, "spec.resources.gpus: at most 64 per task, got %lld",
                              gpus);
    }
    out->cpus = (uint64_t)cpus;
    out->gpus = (uint64_t)gpus;
    out->memory_mb = (uint64_t)mem;

    json_t *labels = json_object_get(root, "labels");
    if (labels) {
        if (!json_is_object(labels)) return fw_err_set(FW_EINVAL, "spec.labels: expected an object");
        if (json_object_size(labels) > COORD_SPEC_MAX_LABELS)
            return fw_err_set(FW_EINVAL, "spec.labels: at most %d labels", COORD_SPEC_MAX_LABELS);
        const char *k;
        json_t *v;
        json_object_foreach(labels, k, v) {
            if (!s_label_ok(k, 63))
                return fw_err_set(FW_EINVAL, "spec.labels.%.64s: label names are 1-63 of "
                                  "[A-Za-z0-9._/-]", k);
            if (!json_is_string(v) || json_string_length(v) > 255)
                return fw_err_set(FW_EINVAL, "spec.labels.%s: expected a string of at most 255 "
                                  "bytes", k);
            int i = out->nlabels;
            out->label_key[i] = strdup(k);
            out->label_val[i] = strdup(json_string_value(v));
            out->nlabels++;
            if (!out->label_key[i] || !out->label_val[i])
                return fw_err_set(FW_ENOMEM, "spec.labels: out of memory");
        }
    }

    json_t *to = json_object_get(root, "timeout_s");
    if (to) {
        if (!json_is_number(to) || json_number_value(to) < 0 || json_number_value(to) > 1e9)
            return fw_err_set(FW_EINVAL, "spec.timeout_s: expected a non-negative number of "
                              "seconds");
        out->timeout_ms = (uint64_t)(json_number_value(to) * 1000.0);
    }

    json_t *env = json_object_get(root, "env");
    if (env) {
        if (!json_is_object(env)) return fw_err_set(FW_EINVAL, "spec.env: expected an object");
        if (json_object_size(env) > COORD_SPEC_MAX_ENV)
            return fw_err_set(FW_EINVAL, "spec.env: at most %d variables", COORD_SPEC_MAX_ENV);
        const char *k;
        json_t *v;
        json_object_foreach(env, k, v) {
            if (!s_env_name_ok(k))
                return fw_err_set(FW_EINVAL, "spec.env.%.64s: not a valid variable name", k);
            if (strncmp(k, "FLYWHEEL_", 9) == 0)
                return fw_err_set(FW_EINVAL, "spec.env.%.64s: FLYWHEEL_* variables are set by "
                                  "the agent", k);
            if (!json_is_string(v) || json_string_length(v) > 4096)
                return fw_err_set(FW_EINVAL, "spec.env.%s: expected a string of at most 4096 "
                                  "bytes", k);
        }
    }

    json_t *args = json_object_get(root, "args");
    if (args && !json_is_object(args))
        return fw_err_set(FW_EINVAL, "spec.args: expected an object");

    json_t *cmd = json_object_get(root, "command");
    if (ki->needs_command && !cmd)
        return fw_err_set(FW_EINVAL, "spec.command: required for kind %s (an argv array)",
                          ki->kind);
    if (cmd) {
        if (!json_is_array(cmd) || json_array_size(cmd) == 0 || json_array_size(cmd) > 4096)
            return fw_err_set(FW_EINVAL, "spec.command: expected a non-empty array of strings");
        size_t i;
        json_t *a;
        json_array_foreach(cmd, i, a) {
            if (!json_is_string(a))
                return fw_err_set(FW_EINVAL, "spec.command[%zu]: expected a string", i);
            if (i == 0 && json_string_length(a) == 0)
                return fw_err_set(FW_EINVAL, "spec.command[0]: the program must not be empty");
        }
    }

    out->json = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    if (!out->json) return fw_err_set(FW_ENOMEM, "spec: out of memory");
    return 0;
}

int coord_spec_parse(const char *text, uint32_t max_tasks, coord_spec_t *out) {
    memset(out, 0, sizeof *out);
    if (!text) return fw_err_set(FW_EINVAL, "spec: missing");
    json_error_t jerr;
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return fw_err_set(FW_EINVAL, "spec: not valid JSON: %s (line %d column %d)", jerr.text,
                          jerr.line, jerr.column);
    int rc = s_parse(root, max_tasks ? max_tasks : 1, out);
    json_decref(root);
    if (rc < 0) {
        /* Keep the detail: coord_spec_clear does not touch it. */
        coord_spec_clear(out);
    }
    return rc;
}
