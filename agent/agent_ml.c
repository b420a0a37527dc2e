/* agent_ml.c - finetune, embed and eval tasks: flywheel-engine over the
 * shared artifact store.
 *
 * Theory of operation
 * -------------------
 * The leader sends a spec whose refs it has already resolved to digests
 * ("resolved": base / model / models, dataset, eval_dataset; the contract is
 * docs/executors.md). run() turns those digests into local files, starts the
 * engine and installs agent_task_hooks; the runner does the rest (log,
 * journal, cancellation):
 *
 *   run()     spec checked (a bad field fails the task at once, naming it:
 *             "spec.resolved.base.digest: ...")
 *             -> store + cache opened once per runner (s_ml_get)
 *             -> model tree materialised once per digest under
 *                <cache_dir>/trees/<hex> (atomic: whole or absent; a
 *                concurrent materialisation's EEXIST is success)
 *             -> dataset blob through the cache (verified; a corrupt cached
 *                copy is dropped and fetched again, a corrupt store copy
 *                fails the task with the digest in the error), then
 *                hard-linked into the task directory so that a later cache
 *                eviction cannot pull it from under the engine
 *             -> embed/eval: the shard's records [floor(s*N/S),
 *                floor((s+1)*N/S)) into <task dir>/shard.jsonl
 *             -> spawn flywheel-engine (environment: agent_exec_env)
 *   line      every JSON line the engine prints: train step lines become
 *             progress (rate-limited); checkpoint lines on rank 0 are put
 *             into the store first and then reported with their digest
 *             (never rate-limited: the leader resumes from them); the final
 *             line ("done" / the summary) is kept for the result
 *   finish    exit 0: outputs uploaded (finetune rank 0: the model tree;
 *             embed: the matrix with global row ids; eval: the per-example
 *             scores) and the contract's result JSON set, all before the
 *             runner journals it. An upload failure fails the task with the
 *             reason. A non-zero exit keeps the runner's result (failed,
 *             with the engine's last output line).
 *
 * The input and upload work runs on the agent's event loop: it blocks the
 * loop for as long as hashing a model or a dataset takes (milliseconds for
 * the demo's models). The etcd lease is kept by its own thread, so only
 * heartbeats to the leader wait; moving this into a helper process is the
 * way out when models grow. */
#include "agent_ml.h"

#include "fw_embedfile.h"
#include "fw_err.h"
#include "fw_file.h"
#include "fw_log.h"
#include "fw_store.h"
#include "fw_time.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define S_MAX_MODELS 16 /* eval: models per job (the contract's bound) */

/* ------------------------------------------------------ engine path */

static bool s_executable(const char *path) {
    return access(path, X_OK) == 0;
}

void agent_ml_engine_path(const char *configured, char *buf, size_t size) {
    if (configured && *configured) {
        snprintf(buf, size, "%s", configured);
        return;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = '\0';
            /* Installed side by side, then the build tree's layout
             * (build/agent/flywheel-agent, build/agent/engine/flywheel-engine). */
            snprintf(buf, size, "%s/flywheel-engine", self);
            if (s_executable(buf)) return;
            snprintf(buf, size, "%s/engine/flywheel-engine", self);
            if (s_executable(buf)) return;
        }
    }
    snprintf(buf, size, "flywheel-engine"); /* PATH lookup at exec */
}

/* ------------------------------------------ per-runner store + cache */

typedef struct {
    fw_store *store;
    fw_store_cache *cache;
    char cache_dir[2048];
    char engine[PATH_MAX];
} s_ml;

static void s_ml_destroy(void *p) {
    s_ml *ml = p;
    if (!ml) return;
    fw_store_cache_destroy(&ml->cache);
    fw_store_destroy(&ml->store);
    free(ml);
}

/* The runner's store and cache, opened on first use. 0 / fw_err. */
static int s_ml_get(agent_runner_t *r, s_ml **out) {
    s_ml *ml = *out = agent_runner_exec_state(r);
    if (ml) return 0;
    const agent_runner_cfg *cfg = agent_runner_config(r);
    if (!cfg->store_dir || !*cfg->store_dir)
        return fw_err_set(FW_ECONFIG, "agent.store_dir is not set: finetune/embed/eval tasks "
                                      "need the shared artifact store");
    if (!(ml = calloc(1, sizeof *ml))) return fw_err_set(FW_ENOMEM, "ml: out of memory");
    char why[1024];
    if (!(ml->store = fw_store_open_dir(cfg->store_dir, NULL))) {
        snprintf(why, sizeof why, "%s", fw_err_detail());
        s_ml_destroy(ml);
        return fw_err_set(FW_ECONFIG, "agent.store_dir %s: %s", cfg->store_dir, why);
    }
    snprintf(ml->cache_dir, sizeof ml->cache_dir, "%s", cfg->cache_dir);
    /* verify_hits: a cached blob is re-hashed on every use, so a copy that
     * rotted on the local disk is dropped and fetched again rather than fed
     * to the engine. Datasets are read whole anyway. */
    if (!(ml->cache = fw_store_cache_new(cfg->cache_dir, cfg->cache_max_bytes, true))) {
        snprintf(why, sizeof why, "%s", fw_err_detail());
        s_ml_destroy(ml);
        return fw_err_set(FW_ECONFIG, "agent.cache_dir %s: %s", cfg->cache_dir, why);
    }
    agent_ml_engine_path(cfg->engine, ml->engine, sizeof ml->engine);
    fw_info("event=ml-ready store=%s cache=%s engine=%s", cfg->store_dir, cfg->cache_dir,
            ml->engine);
    agent_runner_set_exec_state(r, ml, s_ml_destroy);
    *out = ml;
    return 0;
}

/* Re-raise the current error with a prefix (the detail is copied first: it
 * lives in the buffer fw_err_set writes). */
static int s_wrap(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int s_wrap(int rc, const char *fmt, ...) {
    char head[1024], why[2048];
    snprintf(why, sizeof why, "%s", fw_err_detail());
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    return fw_err_set(rc, "%s: %s: %s", head, fw_errname(rc), why);
}

/* A model tree as a local directory: <cache_dir>/trees/<hex>. */
static int s_tree(s_ml *ml, const char *what, const char *digest, char *path, size_t size) {
    char dir[2200];
    snprintf(dir, sizeof dir, "%s/trees", ml->cache_dir);
    snprintf(path, size, "%s/%s", dir, digest + 7); /* past "sha256:" */
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return 0; /* materialised before */
    int rc = fw_file_mkdirs(dir, 0755);
    if (rc < 0) return s_wrap(rc, "%s %s", what, digest);
    rc = fw_store_materialise_tree(ml->store, digest, path);
    if (rc == FW_EEXIST) return 0; /* another task got there first: it is whole */
    if (rc < 0) return s_wrap(rc, "%s %s", what, digest);
    fw_info("event=tree-materialised digest=%s path=%s", digest, path);
    return 0;
}

/* A blob as the file dest (in the task directory): through the cache, then
 * a hard link (a copy across file systems). */
static int s_blob(s_ml *ml, const char *what, const char *digest, const char *dest) {
    char *local = NULL;
    int rc = fw_store_cache_get(ml->cache, ml->store, digest, &local);
    if (rc < 0) return s_wrap(rc, "%s %s", what, digest);
    unlink(dest);
    if (link(local, dest) != 0) {
        rc = fw_store_get_file(fw_store_cache_store(ml->cache), digest, dest);
        if (rc < 0) {
            free(local);
            return s_wrap(rc, "%s %s", what, digest);
        }
    }
    free(local);
    return 0;
}

/* ------------------------------------------------------- spec access */

/* The spec object (*root, caller decrefs) with its "resolved" object. */
static int s_parse_spec(const char *text, json_t **root) {
    json_error_t jerr;
    *root = json_loads(text ? text : "", JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(*root))
        return fw_err_set(FW_EINVAL, "spec: not a JSON object (%s)", jerr.text);
    if (!json_is_object(json_object_get(*root, "resolved")))
        return fw_err_set(FW_EINVAL, "spec.resolved: missing or not an object (the leader "
                                     "resolves the spec's refs at submit)");
    return 0;
}

/* A resolved ref {"ref", "digest", "records"?} at path (for messages). */
typedef struct {
    const char *ref;
    const char *digest;
    uint64_t records;
} s_ref;

static int s_get_ref(json_t *o, const char *path, bool dataset, s_ref *out) {
    memset(out, 0, sizeof *out);
    if (!json_is_object(o)) return fw_err_set(FW_EINVAL, "%s: missing or not an object", path);
    json_t *ref = json_object_get(o, "ref"), *dg = json_object_get(o, "digest");
    if (!json_is_string(ref) || !json_string_length(ref))
        return fw_err_set(FW_EINVAL, "%s.ref: expected a non-empty string", path);
    if (!json_is_string(dg) || !fw_digest_valid(json_string_value(dg)))
        return fw_err_set(FW_EINVAL, "%s.digest: expected \"sha256:<64 hex>\"", path);
    out->ref = json_string_value(ref);
    out->digest = json_string_value(dg);
    if (dataset) {
        json_t *n = json_object_get(o, "records");
        if (!json_is_integer(n) || json_integer_value(n) < 0)
            return fw_err_set(FW_EINVAL, "%s.records: expected an integer >= 0", path);
        out->records = (uint64_t)json_integer_value(n);
    }
    return 0;
}

/* An optional integer o[key] in [lo, hi]; *out = def when absent or null. */
static int s_opt_int(json_t *o, const char *path, const char *key, int64_t lo, int64_t hi,
                     int64_t def, int64_t *out) {
    json_t *v = json_object_get(o, key);
    *out = def;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return fw_err_set(FW_EINVAL, "%s.%s: expected an integer in [%" PRId64 ", %" PRId64 "]",
                          path, key, lo, hi);
    *out = json_integer_value(v);
    return 0;
}

/* Threads: spec.threads, else spec.resources.cpus, else 0 (the engine's). */
static int s_threads(json_t *root, int64_t *out) {
    json_t *res = json_object_get(root, "resources");
    int64_t cpus = 0;
    if (json_is_object(res)) {
        json_t *c = json_object_get(res, "cpus");
        if (json_is_integer(c) && json_integer_value(c) > 0 && json_integer_value(c) <= 4096)
            cpus = json_integer_value(c);
    }
    return s_opt_int(root, "spec", "threads", 0, 4096, cpus, out);
}

/* An integer field of <model dir>/config.json (n_positions falls back to
 * n_ctx, as the engine's loader does). */
static int s_model_config_int(const char *tree, const char *key, const char *alt, int64_t *out) {
    char path[2400];
    snprintf(path, sizeof path, "%s/config.json", tree);
    json_error_t jerr;
    json_t *cfg = json_load_file(path, 0, &jerr);
    json_t *v = json_is_object(cfg) ? json_object_get(cfg, key) : NULL;
    if (!json_is_integer(v) && alt && json_is_object(cfg)) v = json_object_get(cfg, alt);
    int rc = 0;
    if (!json_is_integer(v) || json_integer_value(v) <= 0)
        rc = fw_err_set(FW_ECORRUPT, "%s: no positive integer \"%s\"%s", path, key,
                        json_is_object(cfg) ? "" : " (not a JSON object)");
    else
        *out = json_integer_value(v);
    json_decref(cfg);
    return rc;
}

/* ------------------------------------------------------------ shards */

/* Copy records [floor(s*N/S), floor((s+1)*N/S)) of the JSONL file src (one
 * record a line) to dest; checks that src has exactly N lines. */
static int s_write_shard(const char *src, const char *digest, uint64_t n, uint64_t shards,
                         uint64_t s, const char *dest, uint64_t *first, uint64_t *count) {
    /* 128-bit products: N * S cannot overflow whatever the sizes. */
    uint64_t a = (uint64_t)((unsigned __int128)s * n / shards);
    uint64_t b = (uint64_t)((unsigned __int128)(s + 1) * n / shards);
    *first = a;
    *count = b - a;
    FILE *in = fopen(src, "r");
    if (!in) return fw_err_set(FW_EIO, "dataset %s: open %s: %s", digest, src, strerror(errno));
    FILE *out = fopen(dest, "w");
    if (!out) {
        fclose(in);
        return fw_err_set(FW_EIO, "shard %s: %s", dest, strerror(errno));
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    uint64_t i = 0;
    int rc = 0;
    while ((len = getline(&line, &cap, in)) > 0) {
        if (i >= a && i < b) {
            bool nl = line[len - 1] == '\n';
            if (fwrite(line, 1, (size_t)len, out) != (size_t)len || (!nl && fputc('\n', out) < 0)) {
                rc = fw_err_set(FW_EIO, "shard %s: write: %s", dest, strerror(errno));
                break;
            }
        }
        i++;
    }
    free(line);
    if (rc == 0 && ferror(in)) rc = fw_err_set(FW_EIO, "dataset %s: read error", digest);
    if (rc == 0 && i != n)
        rc = fw_err_set(FW_ECORRUPT,
                        "dataset %s has %" PRIu64 " records; spec.resolved.dataset.records says "
                        "%" PRIu64,
                        digest, i, n);
    fclose(in);
    if (fclose(out) != 0 && rc == 0) rc = fw_err_set(FW_EIO, "shard %s: %s", dest, strerror(errno));
    return rc;
}

/* ---------------------------------------------------------- an argv */

typedef struct {
    char **v;
    size_t n, cap;
    bool failed;
} s_argv;

static void s_arg(s_argv *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_arg(s_argv *a, const char *fmt, ...) {
    if (a->failed) return;
    if (a->n + 2 > a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        char **v = realloc(a->v, cap * sizeof *v);
        if (!v) {
            a->failed = true;
            return;
        }
        a->v = v;
        a->cap = cap;
    }
    va_list ap;
    va_start(ap, fmt);
    int len = vasprintf(&a->v[a->n], fmt, ap);
    va_end(ap);
    if (len < 0) {
        a->failed = true;
        a->v[a->n] = NULL;
        return;
    }
    a->v[++a->n] = NULL;
}

static void s_argv_free(s_argv *a) {
    for (size_t i = 0; i < a->n; i++) free(a->v[i]);
    free(a->v);
    memset(a, 0, sizeof *a);
}

/* ------------------------------------------------------------- tasks */

typedef enum { S_FINETUNE, S_EMBED, S_EVAL } s_kind;

#define S_POINTS_MAX 2048 /* curve points held for the next progress report */

typedef struct {
    s_kind kind;
    s_ml *ml;
    char dir[1400]; /* the task directory */
    char out[1500]; /* finetune: model dir; embed: matrix; eval: per-example scores */
    uint64_t rank, world;
    int64_t steps;
    bool resuming;
    int64_t first_step; /* the first step line's step, -1 before */
    double last_loss;
    json_t *points; /* [step, loss] pairs not yet reported (the limiter held them back) */
    json_t *final; /* the engine's last result line (done / summary), owned */
    uint64_t first_record, records;
    uint64_t model_index, shard;
    char model_ref[300];
    int64_t started_ms; /* monotonic, at spawn */
    unsigned checkpoints;
} s_task;

static void s_task_free(void *p) {
    s_task *x = p;
    if (!x) return;
    json_decref(x->final);
    json_decref(x->points);
    free(x);
}

static double s_num(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : 0.0;
}

/* finetune: progress from step lines, checkpoints into the store. */
static void s_train_line(agent_task_t *t, json_t *o, s_task *x) {
    json_t *step = json_object_get(o, "step");
    if (json_is_true(json_object_get(o, "done")) || json_is_integer(json_object_get(o, "done"))) {
        json_decref(x->final);
        x->final = json_incref(o);
        return;
    }
    if (!json_is_integer(step)) return;
    int64_t k = json_integer_value(step);
    json_t *ck = json_object_get(o, "checkpoint");
    if (json_is_string(ck)) {
        if (x->rank != 0) return;
        char digest[FW_DIGEST_STR_SIZE];
        int64_t t0 = fw_mono_ms();
        int rc = fw_store_put_file(x->ml->store, json_string_value(ck), digest);
        if (rc < 0) {
            /* Not reported: the leader only resumes from checkpoints the
             * store holds. The run itself goes on. */
            fw_warn("event=checkpoint-put-failed task=%s step=%" PRId64 " detail=\"%s\"",
                    t->task_id, k, fw_err_detail());
            agent_task_note(t, "checkpoint at step %" PRId64 " not stored: %s", k, fw_err_detail());
            return;
        }
        x->checkpoints++;
        fw_info("event=checkpoint-stored task=%s step=%" PRId64 " digest=%s ms=%" PRId64,
                t->task_id, k, digest, fw_mono_ms() - t0);
        agent_task_note(t, "checkpoint at step %" PRId64 " stored as %s", k, digest);
        json_t *p = json_pack("{s:I, s:s}", "step", (json_int_t)k, "checkpoint", digest);
        if (p) agent_task_progress(t, p, true); /* never rate-limited */
        json_decref(p);
        return;
    }
    json_t *loss = json_object_get(o, "loss");
    if (json_is_number(loss)) {
        if (x->first_step < 0) x->first_step = k;
        x->last_loss = json_number_value(loss);
        /* Every step's loss reaches the leader's curve: the points the
         * limiter holds back ride along with the next report that goes out
         * (metrics.curve), so the curve is whole while the leader sees at
         * most 10 reports a second per task. A backlog past S_POINTS_MAX
         * (a leader unreachable for minutes) keeps every other point. */
        if (!x->points) x->points = json_array();
        json_array_append_new(x->points, json_pack("[I,f]", (json_int_t)k,
                                                   json_number_value(loss)));
        if (json_array_size(x->points) > S_POINTS_MAX) {
            json_t *half = json_array();
            for (size_t i = 0; i < json_array_size(x->points); i += 2)
                json_array_append(half, json_array_get(x->points, i));
            json_decref(x->points);
            x->points = half;
        }
        json_t *p = json_pack("{s:I, s:f, s:{s:f, s:f, s:f, s:O}}", "step", (json_int_t)k,
                              "fraction", x->steps > 0 ? (double)k / (double)x->steps : 0.0,
                              "metrics", "loss", json_number_value(loss), "lr", s_num(o, "lr"),
                              "tokens_per_s", s_num(o, "tokens_per_s"), "curve", x->points);
        /* The last step always goes out: the curve ends at the final loss. */
        if (p && agent_task_progress(t, p, k == x->steps)) json_array_clear(x->points);
        json_decref(p);
        return;
    }
    json_t *eval_loss = json_object_get(o, "eval_loss");
    if (json_is_number(eval_loss)) {
        /* Rare (every --eval-every steps): never dropped by the limiter. */
        json_t *p =
            json_pack("{s:I, s:{s:f, s:f}}", "step", (json_int_t)k, "metrics", "eval_loss",
                      json_number_value(eval_loss), "eval_perplexity", s_num(o, "eval_perplexity"));
        if (p) agent_task_progress(t, p, true);
        json_decref(p);
    }
}

static void s_on_line(agent_task_t *t, json_t *o, void *ctx) {
    s_task *x = ctx;
    if (x->kind == S_FINETUNE) {
        s_train_line(t, o, x);
        return;
    }
    /* embed / eval print one summary object at the end. */
    const char *key = x->kind == S_EMBED ? "rows" : "records";
    if (json_object_get(o, key)) {
        json_decref(x->final);
        x->final = json_incref(o);
    }
}

/* FWEMBED v1 (docs/file-formats.md): add `offset` to every row id, in place.
 * The engine numbers rows by their line in the shard file (1..n); adding the
 * shard's first record makes them the dataset's global line numbers. */
static int s_rebase_rows(const char *path, uint64_t offset, uint64_t *rows_out, uint32_t *dim_out) {
    FILE *f = fopen(path, "r+b");
    if (!f) return fw_err_set(FW_EIO, "%s: %s", path, strerror(errno));
    unsigned char h[FW_EMBED_HDR];
    int rc = 0;
    fw_embed_hdr eh;
    uint64_t rows = 0;
    uint64_t *ids = NULL;
    if (fread(h, 1, sizeof h, f) != sizeof h) {
        rc = fw_err_set(FW_ECORRUPT, "%s: shorter than the FWEMBED header", path);
        goto out;
    }
    if ((rc = fw_embed_hdr_read(h, 0, path, &eh)) < 0) goto out;
    rows = eh.rows;
    if (rows && !(ids = malloc(rows * 8))) {
        rc = fw_err_set(FW_ENOMEM, "%s: out of memory for %" PRIu64 " row ids", path, rows);
        goto out;
    }
    if (rows && fread(ids, 8, rows, f) != rows) {
        rc = fw_err_set(FW_ECORRUPT, "%s: truncated row ids", path);
        goto out;
    }
    for (uint64_t i = 0; i < rows; i++) ids[i] += offset; /* little-endian hosts only */
    if (rows && (fseek(f, FW_EMBED_HDR, SEEK_SET) != 0 || fwrite(ids, 8, rows, f) != rows))
        rc = fw_err_set(FW_EIO, "%s: rewriting row ids: %s", path, strerror(errno));
    *rows_out = rows;
    *dim_out = eh.dim;
out:
    free(ids);
    if (fclose(f) != 0 && rc == 0) rc = fw_err_set(FW_EIO, "%s: %s", path, strerror(errno));
    return rc;
}

/* Replace the runner's "succeeded" with "failed: <detail>" (keeping its
 * exit code and log tail). */
static void s_fail(agent_task_t *t, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void s_fail(agent_task_t *t, int code, const char *fmt, ...) {
    char err[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, sizeof err, fmt, ap);
    va_end(ap);
    char *keep = t->result.result ? strdup(t->result.result) : NULL;
    agent_task_note(t, "%s", err);
    fw_warn("event=ml-result-failed task=%s detail=\"%s\"", t->task_id, err);
    agent_task_set_result(t, "failed", true, code, err, keep);
    free(keep);
}

static void s_succeed(agent_task_t *t, int code, json_t *res) {
    char *text = res ? json_dumps(res, JSON_COMPACT) : NULL;
    if (!text) {
        s_fail(t, code, "building the result: out of memory");
        return;
    }
    agent_task_set_result(t, "succeeded", true, code, NULL, text);
    free(text);
}

static void s_on_finish(agent_task_t *t, int code, void *ctx) {
    s_task *x = ctx;
    if (strcmp(t->result.status, "succeeded") != 0) return; /* failed as any task */
    if (!x->final) {
        s_fail(t, code, "flywheel-engine exited 0 without its final result line");
        return;
    }
    double seconds = (double)(fw_mono_ms() - x->started_ms) / 1000.0;
    char digest[FW_DIGEST_STR_SIZE];
    json_t *res = NULL;
    int rc;
    switch (x->kind) {
    case S_FINETUNE: {
        double final_loss = json_is_number(json_object_get(x->final, "final_loss"))
                                ? s_num(x->final, "final_loss")
                                : x->last_loss;
        if (x->rank != 0) {
            res = json_pack("{s:I, s:f}", "rank", (json_int_t)x->rank, "final_loss", final_loss);
            break;
        }
        if ((rc = fw_store_put_tree(x->ml->store, x->out, digest)) < 0) {
            s_fail(t, code, "storing the model %s: %s: %s", x->out, fw_errname(rc),
                   fw_err_detail());
            return;
        }
        double secs = s_num(x->final, "seconds");
        double tokens = s_num(x->final, "tokens");
        /* The first step printed after --resume CKPT is the checkpoint's + 1. */
        int64_t resumed = x->resuming && x->first_step > 0 ? x->first_step - 1 : 0;
        res = json_pack("{s:s, s:I, s:f, s:I, s:f, s:f, s:I}", "model", digest, "steps",
                        (json_int_t)s_num(x->final, "steps"), "final_loss", final_loss, "tokens",
                        (json_int_t)tokens, "tokens_per_s", secs > 0 ? tokens / secs : 0.0,
                        "train_seconds", secs, "resumed_from_step", (json_int_t)resumed);
        break;
    }
    case S_EMBED: {
        uint64_t rows = 0;
        uint32_t dim = 0;
        if ((rc = s_rebase_rows(x->out, x->first_record, &rows, &dim)) < 0) {
            s_fail(t, code, "embedding matrix: %s", fw_err_detail());
            return;
        }
        if ((rc = fw_store_put_file(x->ml->store, x->out, digest)) < 0) {
            s_fail(t, code, "storing the matrix %s: %s: %s", x->out, fw_errname(rc),
                   fw_err_detail());
            return;
        }
        res = json_pack("{s:s, s:I, s:I, s:I, s:f}", "matrix", digest, "first_record",
                        (json_int_t)x->first_record, "rows", (json_int_t)rows, "dim",
                        (json_int_t)dim, "seconds", seconds);
        break;
    }
    case S_EVAL:
        /* The summary's "model" and "data" are this agent's scratch paths:
         * meaningless to anyone else, so they do not travel. */
        json_object_del(x->final, "model");
        json_object_del(x->final, "data");
        if ((rc = fw_store_put_file(x->ml->store, x->out, digest)) < 0) {
            s_fail(t, code, "storing the scores %s: %s: %s", x->out, fw_errname(rc),
                   fw_err_detail());
            return;
        }
        res = json_pack("{s:s, s:I, s:I, s:I, s:I, s:s, s:O}", "model", x->model_ref, "model_index",
                        (json_int_t)x->model_index, "shard", (json_int_t)x->shard, "first_record",
                        (json_int_t)x->first_record, "records", (json_int_t)x->records, "scores",
                        digest, "summary", x->final);
        break;
    }
    s_succeed(t, code, res);
    json_decref(res);
}

static const agent_task_hooks s_hooks = {s_on_line, s_on_finish, s_task_free};

/* Spawn argv with the task environment (TMPDIR = the task directory, so the
 * engine's temporary shard goes away with it) and install the hooks. Takes
 * x: freed here on failure. */
static int s_spawn(agent_runner_t *r, agent_task_t *t, const agent_assign_t *a, uint64_t shards,
                   s_argv *argv, s_task *x) {
    int rc;
    char **envp = NULL;
    char tmpdir[1500];
    snprintf(tmpdir, sizeof tmpdir, "TMPDIR=%s", x->dir);
    const char *extra[] = {tmpdir, NULL};
    if (argv->failed) {
        rc = fw_err_set(FW_ENOMEM, "argv: out of memory");
    } else if (!(envp = agent_exec_env(r, t, a, shards, x->dir, extra))) {
        rc = FW_ENOMEM;
    } else {
        x->started_ms = fw_mono_ms();
        rc = agent_task_spawn(t, argv->v, envp, x->dir);
    }
    agent_exec_env_free(&envp);
    if (rc < 0) {
        s_task_free(x);
        return rc;
    }
    agent_task_set_hooks(t, &s_hooks, x);
    return 0;
}

static s_task *s_task_new(s_kind kind, s_ml *ml) {
    s_task *x = calloc(1, sizeof *x);
    if (!x) {
        fw_err_set(FW_ENOMEM, "ml: out of memory");
        return NULL;
    }
    x->kind = kind;
    x->ml = ml;
    x->first_step = -1;
    x->world = 1;
    return x;
}

/* The value of KEY in TASK_ASSIGN.env, or NULL. */
static const char *s_assign_env(const agent_assign_t *a, const char *key) {
    size_t n = strlen(key);
    for (const char *const *p = a->env; p && *p; p++)
        if (strncmp(*p, key, n) == 0 && (*p)[n] == '=') return *p + n + 1;
    return NULL;
}

/* ---------------------------------------------------------- finetune */

int agent_ml_run_finetune(agent_runner_t *r, agent_task_t *t, const agent_assign_t *a) {
    s_ml *ml = NULL;
    json_t *root = NULL;
    s_argv av = {0};
    s_task *x = NULL;
    int rc;
    if ((rc = s_ml_get(r, &ml)) < 0 || (rc = s_parse_spec(a->spec, &root)) < 0) goto out;
    json_t *resolved = json_object_get(root, "resolved");
    s_ref base, data, evd = {0};
    if ((rc = s_get_ref(json_object_get(resolved, "base"), "spec.resolved.base", false, &base)) <
            0 ||
        (rc = s_get_ref(json_object_get(resolved, "dataset"), "spec.resolved.dataset", true,
                        &data)) < 0)
        goto out;
    json_t *ev = json_object_get(resolved, "eval_dataset");
    if (ev && !json_is_null(ev) &&
        (rc = s_get_ref(ev, "spec.resolved.eval_dataset", true, &evd)) < 0)
        goto out;
    json_t *hp = json_object_get(root, "hparams");
    if (!json_is_object(hp)) {
        rc = fw_err_set(FW_EINVAL, "spec.hparams: missing or not an object (hparams.steps is "
                                   "required)");
        goto out;
    }
    int64_t steps, batch, seq, accum, every, threads;
    if (!json_is_integer(json_object_get(hp, "steps"))) {
        rc = fw_err_set(FW_EINVAL, "spec.hparams.steps: required, an integer >= 1");
        goto out;
    }
    if ((rc = s_opt_int(hp, "spec.hparams", "steps", 1, INT64_C(1) << 40, 0, &steps)) < 0 ||
        (rc = s_opt_int(hp, "spec.hparams", "batch", 1, 1 << 20, 4, &batch)) < 0 ||
        (rc = s_opt_int(hp, "spec.hparams", "seq", 0, 1 << 20, 0, &seq)) < 0 ||
        (rc = s_opt_int(hp, "spec.hparams", "grad_accum", 1, 1 << 20, 1, &accum)) < 0 ||
        (rc = s_opt_int(root, "spec", "checkpoint_every", 0, INT64_C(1) << 40,
                        steps / 10 > 1 ? steps / 10 : 1, &every)) < 0 ||
        (rc = s_threads(root, &threads)) < 0)
        goto out;
    /* Float hyperparameters: passed through when present (else the engine's
     * defaults), checked for type here. */
    static const struct {
        const char *key, *opt;
    } s_floats[] = {{"lr", "--lr"},
                    {"warmup", "--warmup"},
                    {"min_lr_frac", "--min-lr-frac"},
                    {"weight_decay", "--weight-decay"},
                    {"grad_clip", "--grad-clip"},
                    {"seed", "--seed"}};
    for (size_t i = 0; i < sizeof s_floats / sizeof s_floats[0]; i++) {
        json_t *v = json_object_get(hp, s_floats[i].key);
        bool integral =
            strcmp(s_floats[i].key, "warmup") == 0 || strcmp(s_floats[i].key, "seed") == 0;
        if (v && !json_is_null(v) &&
            (integral ? !json_is_integer(v) || json_integer_value(v) < 0
                      : !json_is_number(v) || json_number_value(v) < 0)) {
            rc = fw_err_set(FW_EINVAL, "spec.hparams.%s: expected a%s number >= 0", s_floats[i].key,
                            integral ? "n integer" : "");
            goto out;
        }
    }
    /* Data-parallel switches (validated by the leader; checked again here
     * because an agent trusts no spec): ZeRO-1 and the gradient sync. */
    json_t *zero = json_object_get(hp, "zero"), *gsync = json_object_get(hp, "grad_sync");
    if ((zero && !json_is_boolean(zero)) || (gsync && !json_is_string(gsync))) {
        rc = fw_err_set(FW_EINVAL, "spec.hparams.%s: wrong type", zero && !json_is_boolean(zero)
                                                                      ? "zero"
                                                                      : "grad_sync");
        goto out;
    }
    if (!(x = s_task_new(S_FINETUNE, ml))) {
        rc = FW_ENOMEM;
        goto out;
    }
    x->steps = steps;
    if (a->has_rank) {
        x->rank = a->rank;
        x->world = a->world_size ? a->world_size : 1;
    }
    if (x->world > 1 && (!a->rendezvous || !*a->rendezvous)) {
        rc = fw_err_set(FW_EINVAL,
                        "TASK_ASSIGN.rendezvous: missing for rank %" PRIu64 " of a %" PRIu64
                        "-rank gang",
                        x->rank, x->world);
        goto out;
    }
    if ((rc = agent_exec_task_dir(r, t, x->dir, sizeof x->dir)) < 0) goto out;
    char tree[2400], train[1500], evalf[1500], resume[1500], ckdir[1500];
    if ((rc = s_tree(ml, "spec.resolved.base", base.digest, tree, sizeof tree)) < 0) goto out;
    if (seq == 0 && (rc = s_model_config_int(tree, "n_positions", "n_ctx", &seq)) < 0) goto out;
    snprintf(train, sizeof train, "%s/train.jsonl", x->dir);
    if ((rc = s_blob(ml, "spec.resolved.dataset", data.digest, train)) < 0) goto out;
    if (evd.digest) {
        snprintf(evalf, sizeof evalf, "%s/eval.jsonl", x->dir);
        if ((rc = s_blob(ml, "spec.resolved.eval_dataset", evd.digest, evalf)) < 0) goto out;
    }
    const char *ck = s_assign_env(a, "FLYWHEEL_RESUME_CHECKPOINT");
    if (ck && *ck) {
        if (!fw_digest_valid(ck)) {
            rc = fw_err_set(FW_EINVAL, "FLYWHEEL_RESUME_CHECKPOINT: expected \"sha256:<64 hex>\"");
            goto out;
        }
        snprintf(resume, sizeof resume, "%s/resume.fwckpt", x->dir);
        if ((rc = s_blob(ml, "checkpoint", ck, resume)) < 0) goto out;
        x->resuming = true;
    }
    snprintf(x->out, sizeof x->out, "%s/out", x->dir);
    snprintf(ckdir, sizeof ckdir, "%s/ckpt", x->dir);
    s_arg(&av, "%s", ml->engine);
    s_arg(&av, "train");
    s_arg(&av, "--model"), s_arg(&av, "%s", tree);
    s_arg(&av, "--data"), s_arg(&av, "%s", train);
    s_arg(&av, "--out"), s_arg(&av, "%s", x->out);
    s_arg(&av, "--steps"), s_arg(&av, "%" PRId64, steps);
    s_arg(&av, "--batch"), s_arg(&av, "%" PRId64, batch);
    s_arg(&av, "--seq"), s_arg(&av, "%" PRId64, seq);
    s_arg(&av, "--grad-accum"), s_arg(&av, "%" PRId64, accum);
    if (json_is_true(zero)) s_arg(&av, "--zero"), s_arg(&av, "1");
    if (gsync) s_arg(&av, "--grad-sync"), s_arg(&av, "%s", json_string_value(gsync));
    for (size_t i = 0; i < sizeof s_floats / sizeof s_floats[0]; i++) {
        json_t *v = json_object_get(hp, s_floats[i].key);
        if (!v || json_is_null(v)) continue;
        s_arg(&av, "%s", s_floats[i].opt);
        if (json_is_integer(v))
            s_arg(&av, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        else
            s_arg(&av, "%.17g", json_number_value(v));
    }
    s_arg(&av, "--checkpoint-dir"), s_arg(&av, "%s", ckdir);
    s_arg(&av, "--checkpoint-every"), s_arg(&av, "%" PRId64, every);
    if (threads > 0) s_arg(&av, "--threads"), s_arg(&av, "%" PRId64, threads);
    s_arg(&av, "--rank"), s_arg(&av, "%" PRIu64, x->rank);
    s_arg(&av, "--world-size"), s_arg(&av, "%" PRIu64, x->world);
    if (a->rendezvous && *a->rendezvous)
        s_arg(&av, "--rendezvous"), s_arg(&av, "%s", a->rendezvous);
    /* One rank: the engine's "single" (no collective). A gang: NCCL when the
     * task has GPUs (gradients stay on the device), the TCP ring otherwise. */
    if (x->world > 1) s_arg(&av, "--collective"), s_arg(&av, "%s", a->ngpus ? "nccl" : "ring");
    if (a->ngpus) s_arg(&av, "--device"), s_arg(&av, "cuda");
    if (x->resuming) s_arg(&av, "--resume"), s_arg(&av, "%s", resume);
    if (evd.digest) s_arg(&av, "--eval-data"), s_arg(&av, "%s", evalf);
    rc = s_spawn(r, t, a, x->world, &av, x);
    x = NULL; /* s_spawn took it */
out:
    s_task_free(x);
    s_argv_free(&av);
    json_decref(root);
    return rc;
}

/* ------------------------------------------------------ embed + eval */

/* What embed and eval share: shard geometry, the model tree, the shard file. */
typedef struct {
    int64_t shards, batch, seq, threads;
    uint64_t index;
    char tree[2400];
    char shard_file[1500];
} s_sharded;

static int s_prepare_shard(agent_runner_t *r, agent_task_t *t, s_ml *ml, const s_ref *model,
                           const char *model_path, const s_ref *data, uint64_t shard, s_task *x,
                           s_sharded *sh) {
    int rc;
    if ((rc = agent_exec_task_dir(r, t, x->dir, sizeof x->dir)) < 0) return rc;
    if ((rc = s_tree(ml, model_path, model->digest, sh->tree, sizeof sh->tree)) < 0) return rc;
    char *local = NULL;
    if ((rc = fw_store_cache_get(ml->cache, ml->store, data->digest, &local)) < 0)
        return s_wrap(rc, "spec.resolved.dataset %s", data->digest);
    snprintf(sh->shard_file, sizeof sh->shard_file, "%s/shard.jsonl", x->dir);
    rc = s_write_shard(local, data->digest, data->records, (uint64_t)sh->shards, shard,
                       sh->shard_file, &x->first_record, &x->records);
    free(local);
    return rc;
}

static int s_sharded_opts(json_t *root, s_sharded *sh) {
    int rc;
    if ((rc = s_opt_int(root, "spec", "shards", 1, 1 << 20, 1, &sh->shards)) < 0 ||
        (rc = s_opt_int(root, "spec", "batch", 1, 1 << 20, 8, &sh->batch)) < 0 ||
        (rc = s_opt_int(root, "spec", "seq", 0, 1 << 20, 0, &sh->seq)) < 0 ||
        (rc = s_threads(root, &sh->threads)) < 0)
        return rc;
    return 0;
}

int agent_ml_run_embed(agent_runner_t *r, agent_task_t *t, const agent_assign_t *a) {
    s_ml *ml = NULL;
    json_t *root = NULL;
    s_argv av = {0};
    s_task *x = NULL;
    s_sharded sh;
    memset(&sh, 0, sizeof sh);
    int rc;
    if ((rc = s_ml_get(r, &ml)) < 0 || (rc = s_parse_spec(a->spec, &root)) < 0) goto out;
    json_t *resolved = json_object_get(root, "resolved");
    s_ref model, data;
    if ((rc = s_get_ref(json_object_get(resolved, "model"), "spec.resolved.model", false, &model)) <
            0 ||
        (rc = s_get_ref(json_object_get(resolved, "dataset"), "spec.resolved.dataset", true,
                        &data)) < 0 ||
        (rc = s_sharded_opts(root, &sh)) < 0)
        goto out;
    json_t *trunc = json_object_get(root, "truncate");
    if (trunc && !json_is_boolean(trunc)) {
        rc = fw_err_set(FW_EINVAL, "spec.truncate: expected true or false");
        goto out;
    }
    sh.index = agent_exec_shard_index(t->task_id);
    if (sh.index >= (uint64_t)sh.shards) {
        rc = fw_err_set(FW_EINVAL,
                        "task %s: shard index %" PRIu64 " is not below spec.shards %" PRId64,
                        t->task_id, sh.index, sh.shards);
        goto out;
    }
    if (!(x = s_task_new(S_EMBED, ml))) {
        rc = FW_ENOMEM;
        goto out;
    }
    x->shard = sh.index;
    if ((rc = s_prepare_shard(r, t, ml, &model, "spec.resolved.model", &data, sh.index, x, &sh)) <
        0)
        goto out;
    snprintf(x->out, sizeof x->out, "%s/matrix.fwembed", x->dir);
    if (x->records == 0) {
        /* More shards than records: an empty matrix of the model's width,
         * without starting the engine. */
        int64_t dim;
        if ((rc = s_model_config_int(sh.tree, "n_embd", NULL, &dim)) < 0) goto out;
        unsigned char h[32] = "FWEMBED";
        uint32_t version = 1, d32 = (uint32_t)dim;
        uint64_t zero = 0, off = 32;
        memcpy(h + 8, &version, 4);
        memcpy(h + 12, &d32, 4);
        memcpy(h + 16, &zero, 8);
        memcpy(h + 24, &off, 8);
        char digest[FW_DIGEST_STR_SIZE];
        if ((rc = fw_store_put_buffer(ml->store, h, sizeof h, digest)) < 0) goto out;
        json_t *res = json_pack("{s:s, s:I, s:I, s:I, s:f}", "matrix", digest, "first_record",
                                (json_int_t)x->first_record, "rows", (json_int_t)0, "dim",
                                (json_int_t)dim, "seconds", 0.0);
        s_succeed(t, 0, res);
        json_decref(res);
        goto out;
    }
    s_arg(&av, "%s", ml->engine);
    s_arg(&av, "embed");
    s_arg(&av, "--model"), s_arg(&av, "%s", sh.tree);
    s_arg(&av, "--data"), s_arg(&av, "%s", sh.shard_file);
    s_arg(&av, "--out"), s_arg(&av, "%s", x->out);
    s_arg(&av, "--batch"), s_arg(&av, "%" PRId64, sh.batch);
    s_arg(&av, "--seq"), s_arg(&av, "%" PRId64, sh.seq);
    /* Corpora have long records: keep their first tokens rather than fail
     * the job (spec.truncate: false asks for the engine's strictness). */
    if (!json_is_false(trunc)) s_arg(&av, "--truncate");
    if (sh.threads > 0) s_arg(&av, "--threads"), s_arg(&av, "%" PRId64, sh.threads);
    if (a->ngpus) s_arg(&av, "--device"), s_arg(&av, "cuda");
    rc = s_spawn(r, t, a, (uint64_t)sh.shards, &av, x);
    x = NULL;
out:
    s_task_free(x);
    s_argv_free(&av);
    json_decref(root);
    return rc;
}

int agent_ml_run_eval(agent_runner_t *r, agent_task_t *t, const agent_assign_t *a) {
    s_ml *ml = NULL;
    json_t *root = NULL;
    s_argv av = {0};
    s_task *x = NULL;
    s_sharded sh;
    memset(&sh, 0, sizeof sh);
    int rc;
    if ((rc = s_ml_get(r, &ml)) < 0 || (rc = s_parse_spec(a->spec, &root)) < 0) goto out;
    json_t *resolved = json_object_get(root, "resolved");
    json_t *models = json_object_get(resolved, "models");
    s_ref model, data;
    if (!json_is_array(models) || json_array_size(models) < 1 ||
        json_array_size(models) > S_MAX_MODELS) {
        rc = fw_err_set(FW_EINVAL, "spec.resolved.models: expected an array of 1 to %d models",
                        S_MAX_MODELS);
        goto out;
    }
    if ((rc = s_get_ref(json_object_get(resolved, "dataset"), "spec.resolved.dataset", true,
                        &data)) < 0 ||
        (rc = s_sharded_opts(root, &sh)) < 0)
        goto out;
    /* Task i -> model i / shards, shard i % shards. */
    sh.index = agent_exec_shard_index(t->task_id);
    uint64_t m = sh.index / (uint64_t)sh.shards, s = sh.index % (uint64_t)sh.shards;
    if (m >= json_array_size(models)) {
        rc = fw_err_set(FW_EINVAL,
                        "task %s: index %" PRIu64 " names model %" PRIu64
                        ", but spec.resolved.models has %zu",
                        t->task_id, sh.index, m, json_array_size(models));
        goto out;
    }
    char mpath[64];
    snprintf(mpath, sizeof mpath, "spec.resolved.models[%" PRIu64 "]", m);
    if ((rc = s_get_ref(json_array_get(models, m), mpath, false, &model)) < 0) goto out;
    if (!(x = s_task_new(S_EVAL, ml))) {
        rc = FW_ENOMEM;
        goto out;
    }
    x->model_index = m;
    x->shard = s;
    snprintf(x->model_ref, sizeof x->model_ref, "%s", model.ref);
    if ((rc = s_prepare_shard(r, t, ml, &model, mpath, &data, s, x, &sh)) < 0) goto out;
    snprintf(x->out, sizeof x->out, "%s/scores.jsonl", x->dir);
    if (x->records == 0) {
        /* More shards than records: nothing to score, nothing to start. */
        char digest[FW_DIGEST_STR_SIZE];
        if ((rc = fw_store_put_buffer(ml->store, "", 0, digest)) < 0) goto out;
        json_t *res =
            json_pack("{s:s, s:I, s:I, s:I, s:I, s:s, s:{s:I, s:I}}", "model", x->model_ref,
                      "model_index", (json_int_t)m, "shard", (json_int_t)s, "first_record",
                      (json_int_t)x->first_record, "records", (json_int_t)0, "scores", digest,
                      "summary", "records", (json_int_t)0, "tokens", (json_int_t)0);
        s_succeed(t, 0, res);
        json_decref(res);
        goto out;
    }
    s_arg(&av, "%s", ml->engine);
    s_arg(&av, "eval");
    s_arg(&av, "--model"), s_arg(&av, "%s", sh.tree);
    s_arg(&av, "--data"), s_arg(&av, "%s", sh.shard_file);
    s_arg(&av, "--per-example"), s_arg(&av, "%s", x->out);
    s_arg(&av, "--seq"), s_arg(&av, "%" PRId64, sh.seq);
    s_arg(&av, "--batch"), s_arg(&av, "%" PRId64, sh.batch);
    if (sh.threads > 0) s_arg(&av, "--threads"), s_arg(&av, "%" PRId64, sh.threads);
    if (a->ngpus) s_arg(&av, "--device"), s_arg(&av, "cuda");
    rc = s_spawn(r, t, a, (uint64_t)sh.shards, &av, x);
    x = NULL;
out:
    s_task_free(x);
    s_argv_free(&av);
    json_decref(root);
    return rc;
}
