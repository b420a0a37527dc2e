/* coord_lineage.c - LINEAGE_GET: where a model, dataset, job or artifact came
 * from and what was made from it.
 *
 * Theory of operation
 * -------------------
 * Lineage is not stored as a graph: it is implied by the immutable records
 * the registry already keeps (docs/etcd-layout.md). Each request rebuilds the
 * whole graph from them, then cuts out the part around the root:
 *
 *   1. P/datasets/ (one paged range) -> dataset nodes; each "parents" entry
 *      gives dataset->dataset (derived), the digest dataset->artifact
 *      (content).
 *   2. P/models/ (one paged range, at the same etcd revision) -> model
 *      nodes; "parent" gives model->model (parent), each "datasets" entry
 *      dataset->model (input), "job" job->model (output), the digest
 *      model->artifact (content); aliases become an attribute. Eval records
 *      (P/models/<n>/evals/...) give model->job and dataset->job (input)
 *      and job->artifact (output, the per-example scores). Promotions are
 *      decisions, not derivations: skipped.
 *   3. Jobs: every job a record names, every finetune/embed/eval job the
 *      leader holds in memory (no record names an embed job, yet its matrix
 *      descends from its dataset), and the root when it is a job, each read
 *      from P/jobs/<id>. spec.resolved gives model->job (base for a
 *      finetune's base model, input for embed/eval models) and dataset->job
 *      (input); result gives job->model (output: result.model) and
 *      job->artifact (output: result.matrix, result.results[].scores).
 *
 * Everything is keyed by node id ("model:NAME:V", "dataset:NAME@V",
 * "job:ID", "artifact:sha256:HEX"), so an edge named twice (a model record
 * and its job's result) is one edge. A record may name something that is not
 * there (`model register --job` takes any id): the node is kept, marked
 * "missing": true, so the graph shows what the record claims.
 *
 * Then two breadth-first walks from the root, each at most `depth` hops: UP
 * along edges backwards (ancestors) and DOWN along edges forwards
 * (descendants). Only nodes reached by one of the two walks are kept, so a
 * sibling (an ancestor's other child) is not, and the reply holds every edge
 * between kept nodes. Nodes come root first, then ancestors, then
 * descendants, each by distance and id; edges sorted: the reply is
 * deterministic, which the tests rely on.
 *
 * Cost: it runs on the leader's loop like the rest of the registry, so the
 * work is bounded: at most S_RECORDS_MAX records are read (FW_ETOOBIG
 * beyond, saying so), and the reply must fit a MODEL_REPLY doc. Lineage is
 * an interactive question asked rarely; the registry is small next to the
 * job table, which is why jobs are fetched one by one rather than ranged. */
#include "coord.h"
#include "coord_records.h"

#include "fw_digest.h"
#include "fw_err.h"
#include "fw_log.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_RECORDS_MAX   100000 /* etcd records one request may read */
#define S_DEPTH_DEFAULT 16
#define S_ID_MAX        400       /* "artifact:sha256:<64>", "model:<128>:<20>" */
#define S_REPLY_MAX     (4 << 20) /* MODEL_REPLY.doc's bound (fw_messages.def) */
#define S_PREFIX_MIN    8         /* hex digits a digest prefix needs */

typedef struct {
    coord_t *c;
    json_t *nodes;   /* id -> {"id","type","label","attrs"} */
    json_t *known;   /* id -> true: nodes made from a record (others are "missing") */
    json_t *edges;   /* [{"from","to","rel"}] */
    json_t *eset;    /* "from\nto\nrel" -> true */
    json_t *out;     /* id -> [edge index] */
    json_t *in;      /* id -> [edge index] */
    json_t *aliases; /* "NAME:V" -> [alias] */
    json_t *jobs;    /* job id -> true: to read from P/jobs/ */
    size_t nread;
    size_t skip; /* strlen("P/models/") or strlen("P/datasets/") */
} s_graph;

/* ------------------------------------------------------------ nodes */

static bool s_id_ok(const char *s, size_t max) {
    size_t n = s ? strlen(s) : 0;
    return n > 0 && n <= max &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

/* The node `type:key`, created as a stub when absent. Borrowed. */
static json_t *s_node(s_graph *g, const char *type, const char *key) {
    char id[S_ID_MAX];
    snprintf(id, sizeof id, "%s:%s", type, key);
    json_t *n = json_object_get(g->nodes, id);
    if (n) return n;
    char label[S_ID_MAX];
    if (strcmp(type, "artifact") == 0)
        snprintf(label, sizeof label, "%.19s", key); /* "sha256:" + 12 hex */
    else
        snprintf(label, sizeof label, "%s", key);
    n = json_pack("{s:s,s:s,s:s,s:{}}", "id", id, "type", type, "label", label, "attrs");
    if (n) json_object_set_new(g->nodes, id, n);
    return n;
}

static const char *s_id(json_t *node) {
    return json_string_value(json_object_get(node, "id"));
}

static json_t *s_attrs(json_t *node) {
    return json_object_get(node, "attrs");
}

/* Copy field `k` of rec into attrs when present and not null / empty. */
static void s_copy(json_t *attrs, const json_t *rec, const char *k) {
    json_t *v = json_object_get(rec, k);
    if (!v || json_is_null(v)) return;
    if ((json_is_object(v) && json_object_size(v) == 0) ||
        (json_is_array(v) && !json_array_size(v)))
        return;
    json_object_set(attrs, k, v);
}

static void s_edge(s_graph *g, json_t *from, json_t *to, const char *rel) {
    if (!from || !to) return;
    const char *f = s_id(from), *t = s_id(to);
    if (strcmp(f, t) == 0) return; /* a record naming itself: not lineage */
    char key[2 * S_ID_MAX + 32];
    snprintf(key, sizeof key, "%s\n%s\n%s", f, t, rel);
    if (json_object_get(g->eset, key)) return;
    json_object_set_new(g->eset, key, json_true());
    json_int_t idx = (json_int_t)json_array_size(g->edges);
    json_array_append_new(g->edges, json_pack("{s:s,s:s,s:s}", "from", f, "to", t, "rel", rel));
    json_t *o = json_object_get(g->out, f), *i = json_object_get(g->in, t);
    if (!o) json_object_set_new(g->out, f, o = json_array());
    if (!i) json_object_set_new(g->in, t, i = json_array());
    json_array_append_new(o, json_integer(idx));
    json_array_append_new(i, json_integer(idx));
}

/* The artifact node of a digest (NULL when it is not one). */
static json_t *s_artifact(s_graph *g, const json_t *digest, const char *kind) {
    const char *d = json_string_value(digest);
    if (!d || !fw_digest_valid(d)) return NULL;
    json_t *n = s_node(g, "artifact", d);
    json_t *a = s_attrs(n);
    if (n && !json_object_get(a, "kind")) {
        json_object_set_new(a, "digest", json_string(d));
        json_object_set_new(a, "kind", json_string(kind));
        json_object_set_new(g->known, s_id(n), json_true());
    }
    return n;
}

/* A model reference as records write it ("NAME:V"); NULL when malformed. */
static json_t *s_model_ref(s_graph *g, const json_t *ref) {
    const char *r = json_string_value(ref);
    const char *colon = r ? strchr(r, ':') : NULL;
    if (!colon || colon == r || colon[1] < '1' || colon[1] > '9' || strlen(r) > 160) return NULL;
    return s_node(g, "model", r);
}

/* A dataset reference as records write it ("NAME@V"); NULL when malformed. */
static json_t *s_dataset_ref(s_graph *g, const json_t *ref) {
    const char *r = json_string_value(ref);
    const char *at = r ? strrchr(r, '@') : NULL;
    if (!at || at == r || at[1] < '1' || at[1] > '9' || strlen(r) > 160) return NULL;
    return s_node(g, "dataset", r);
}

/* The job node of an id a record names; it is read from P/jobs/ later. */
static json_t *s_job_ref(s_graph *g, const json_t *id) {
    const char *j = json_string_value(id);
    if (!j || !j[0] || strlen(j) > 128) return NULL;
    if (s_id_ok(j, 64)) json_object_set_new(g->jobs, j, json_true());
    return s_node(g, "job", j);
}

/* ---------------------------------------------------------- records */

static json_t *s_parse(const fw_etcd_kv *kv) {
    json_t *o = json_loads(kv->value, 0, NULL);
    if (!json_is_object(o) || json_integer_value(json_object_get(o, "schema")) > COORD_SCHEMA) {
        /* One bad record must not hide the rest of the graph. */
        fw_warn("event=lineage-record-bad key=%s", kv->key);
        json_decref(o);
        return NULL;
    }
    return o;
}

static void s_dataset_record(s_graph *g, json_t *rec) {
    const char *name = json_string_value(json_object_get(rec, "name"));
    json_int_t v = json_integer_value(json_object_get(rec, "version"));
    if (!name || v <= 0) return;
    char key[S_ID_MAX];
    snprintf(key, sizeof key, "%s@%" JSON_INTEGER_FORMAT, name, v);
    json_t *n = s_node(g, "dataset", key), *a = s_attrs(n);
    if (!n) return;
    json_object_set_new(g->known, s_id(n), json_true());
    s_copy(a, rec, "created_at");
    s_copy(a, rec, "created_by");
    s_copy(a, rec, "digest");
    s_copy(a, rec, "records");
    s_copy(a, rec, "tokens");
    json_t *split = json_object_get(json_object_get(rec, "lineage"), "split");
    if (json_is_object(split)) json_object_set(a, "split", split);
    json_t *p;
    size_t i;
    json_array_foreach(json_object_get(rec, "parents"), i, p) {
        s_edge(g, s_dataset_ref(g, p), n, "derived");
    }
    s_edge(g, n, s_artifact(g, json_object_get(rec, "digest"), "dataset"), "content");
}

static void s_model_record(s_graph *g, json_t *rec) {
    const char *name = json_string_value(json_object_get(rec, "name"));
    json_int_t v = json_integer_value(json_object_get(rec, "version"));
    if (!name || v <= 0) return;
    char key[S_ID_MAX];
    snprintf(key, sizeof key, "%s:%" JSON_INTEGER_FORMAT, name, v);
    json_t *n = s_node(g, "model", key), *a = s_attrs(n);
    if (!n) return;
    json_object_set_new(g->known, s_id(n), json_true());
    s_copy(a, rec, "created_at");
    s_copy(a, rec, "created_by");
    s_copy(a, rec, "digest");
    s_copy(a, rec, "job");
    s_copy(a, rec, "metrics");
    s_edge(g, s_model_ref(g, json_object_get(rec, "parent")), n, "parent");
    json_t *d;
    size_t i;
    json_array_foreach(json_object_get(rec, "datasets"), i, d) {
        s_edge(g, s_dataset_ref(g, d), n, "input");
    }
    s_edge(g, s_job_ref(g, json_object_get(rec, "job")), n, "output");
    s_edge(g, n, s_artifact(g, json_object_get(rec, "digest"), "model"), "content");
}

/* P/models/<n>/evals/<v>/<dataset>: the eval job read the model and the
 * dataset and wrote the per-example scores. */
static void s_eval_record(s_graph *g, json_t *rec) {
    json_t *job = s_job_ref(g, json_object_get(rec, "job"));
    json_t *scores = s_artifact(g, json_object_get(rec, "scores"), "eval-scores");
    if (scores) {
        json_t *a = s_attrs(scores);
        s_copy(a, rec, "model");
        s_copy(a, rec, "dataset");
        s_copy(a, rec, "records");
        s_copy(a, rec, "metrics");
    }
    if (!job) return;
    s_edge(g, s_model_ref(g, json_object_get(rec, "model")), job, "input");
    s_edge(g, s_dataset_ref(g, json_object_get(rec, "dataset")), job, "input");
    s_edge(g, job, scores, "output");
}

static int s_count(s_graph *g, size_t n) {
    g->nread += n;
    if (g->nread > S_RECORDS_MAX)
        return fw_err_set(FW_ETOOBIG,
                          "lineage reads at most %d records (models, datasets, jobs) per request "
                          "and this registry has more",
                          S_RECORDS_MAX);
    return 0;
}

static int s_datasets_page(const fw_etcd_kv *kvs, size_t n, void *arg) {
    s_graph *g = arg;
    int rc = s_count(g, n);
    if (rc < 0) return rc;
    for (size_t i = 0; i < n; i++) {
        json_t *rec = s_parse(&kvs[i]);
        if (rec) s_dataset_record(g, rec);
        json_decref(rec);
    }
    return 0;
}

static int s_models_page(const fw_etcd_kv *kvs, size_t n, void *arg) {
    s_graph *g = arg;
    int rc = s_count(g, n);
    if (rc < 0) return rc;
    for (size_t i = 0; i < n; i++) {
        const char *rest = kvs[i].key + g->skip;
        const char *slash = strchr(rest, '/');
        if (!slash) continue;
        bool version = strncmp(slash, "/versions/", 10) == 0;
        bool alias = strncmp(slash, "/aliases/", 9) == 0;
        bool eval = strncmp(slash, "/evals/", 7) == 0;
        if (!version && !alias && !eval) continue; /* promotions: decisions, not lineage */
        json_t *rec = s_parse(&kvs[i]);
        if (!rec) continue;
        if (version) {
            s_model_record(g, rec);
        } else if (eval) {
            s_eval_record(g, rec);
        } else {
            char key[S_ID_MAX];
            snprintf(key, sizeof key, "%.*s:%" JSON_INTEGER_FORMAT, (int)(slash - rest), rest,
                     json_integer_value(json_object_get(rec, "version")));
            json_t *arr = json_object_get(g->aliases, key);
            if (!arr) json_object_set_new(g->aliases, key, arr = json_array());
            json_array_append_new(arr, json_string(slash + 9));
        }
        json_decref(rec);
    }
    return 0;
}

/* The numbers of a job's result (final_loss, tokens_per_s, rows, ...). */
static json_t *s_result_metrics(const json_t *result) {
    json_t *m = json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)result, k, v) {
        if (json_is_number(v)) json_object_set(m, k, v);
    }
    return m;
}

static void s_job_record(s_graph *g, json_t *n, json_t *rec) {
    json_t *a = s_attrs(n);
    json_object_set_new(g->known, s_id(n), json_true());
    s_copy(a, rec, "kind");
    s_copy(a, rec, "state");
    s_copy(a, rec, "owner");
    s_copy(a, rec, "submitted_at");
    s_copy(a, rec, "finished_at");
    json_t *res = json_object_get(json_object_get(rec, "spec"), "resolved");
    json_t *base = json_object_get(res, "base");
    s_edge(g, s_model_ref(g, json_object_get(base, "ref")), n, "base");
    s_edge(g, s_dataset_ref(g, json_object_get(json_object_get(res, "dataset"), "ref")), n,
           "input");
    s_edge(g, s_dataset_ref(g, json_object_get(json_object_get(res, "eval_dataset"), "ref")), n,
           "input");
    s_edge(g, s_model_ref(g, json_object_get(json_object_get(res, "model"), "ref")), n, "input");
    json_t *m;
    size_t i;
    json_array_foreach(json_object_get(res, "models"), i, m) {
        s_edge(g, s_model_ref(g, json_object_get(m, "ref")), n, "input");
    }
    json_t *result = json_object_get(rec, "result");
    if (!json_is_object(result)) return;
    json_t *metrics = s_result_metrics(result);
    if (json_object_size(metrics)) json_object_set(a, "metrics", metrics);
    json_decref(metrics);
    s_edge(g, n, s_model_ref(g, json_object_get(result, "model")), "output");
    json_t *mx = s_artifact(g, json_object_get(result, "matrix"), "embedding");
    if (mx) {
        s_copy(s_attrs(mx), result, "rows");
        s_copy(s_attrs(mx), result, "dim");
        s_edge(g, n, mx, "output");
    }
    json_t *r;
    json_array_foreach(json_object_get(result, "results"), i, r) {
        json_t *sc = s_artifact(g, json_object_get(r, "scores"), "eval-scores");
        if (!sc) continue;
        s_copy(s_attrs(sc), r, "model");
        s_copy(s_attrs(sc), result, "dataset");
        s_copy(s_attrs(sc), r, "records");
        s_copy(s_attrs(sc), r, "metrics");
        s_edge(g, n, sc, "output");
    }
}

/* Read every wanted job. Jobs added while reading (none: job records name
 * models and datasets only) would not be read again. */
static int s_read_jobs(s_graph *g) {
    coord_t *c = g->c;
    json_t *want = json_deep_copy(g->jobs);
    const char *id;
    json_t *v;
    int rc = 0;
    json_object_foreach(want, id, v) {
        if ((rc = s_count(g, 1)) < 0) break;
        char key[COORD_KEY_MAX];
        snprintf(key, sizeof key, "%s/jobs/%s", c->o.etcd_prefix, id);
        fw_etcd_kv *kv = NULL;
        rc = fw_etcd_get(c->etcd, key, &kv);
        if (rc == FW_ENOTFOUND) {
            rc = 0;
            continue;
        }
        if (rc < 0) {
            rc = fw_err_set(rc, "reading %s: %s", key, fw_err_detail());
            break;
        }
        json_t *rec = s_parse(kv);
        fw_etcd_kv_free(&kv);
        if (rec) s_job_record(g, s_node(g, "job", id), rec);
        json_decref(rec);
    }
    json_decref(want);
    return rc;
}

static int s_build(s_graph *g) {
    coord_t *c = g->c;
    char prefix[COORD_KEY_MAX];
    int64_t rev = 0;
    g->skip = (size_t)snprintf(prefix, sizeof prefix, "%s/datasets/", c->o.etcd_prefix);
    int rc = fw_etcd_range_pages(c->etcd, prefix, 500, 0, s_datasets_page, g, &rev);
    if (rc < 0)
        return rc == FW_ETOOBIG ? rc : fw_err_set(rc, "reading %s: %s", prefix, fw_err_detail());
    /* The same revision: a model never names a dataset this read missed. */
    g->skip = (size_t)snprintf(prefix, sizeof prefix, "%s/models/", c->o.etcd_prefix);
    rc = fw_etcd_range_pages(c->etcd, prefix, 500, rev, s_models_page, g, NULL);
    if (rc < 0)
        return rc == FW_ETOOBIG ? rc : fw_err_set(rc, "reading %s: %s", prefix, fw_err_detail());
    const char *k;
    json_t *arr;
    json_object_foreach(g->aliases, k, arr) {
        char id[S_ID_MAX];
        snprintf(id, sizeof id, "model:%s", k);
        json_t *n = json_object_get(g->nodes, id);
        if (n) json_object_set(s_attrs(n), "aliases", arr);
    }
    /* ML jobs no record names (embed) still belong to the graph. */
    for (size_t i = 0; i < c->st->njobs; i++) {
        const coord_job_t *j = c->st->jobv[i];
        const char *kind = j->spec.kind;
        if (j->record_committed && (strcmp(kind, "finetune") == 0 || strcmp(kind, "embed") == 0 ||
                                    strcmp(kind, "eval") == 0))
            json_object_set_new(g->jobs, j->id, json_true());
    }
    rc = s_read_jobs(g);
    if (rc < 0) return rc;
    json_t *n;
    json_object_foreach(g->nodes, k, n) {
        if (!json_object_get(g->known, k)) json_object_set_new(s_attrs(n), "missing", json_true());
    }
    return 0;
}

/* ------------------------------------------------------------- root */

typedef enum { S_ROOT_MODEL, S_ROOT_DATASET, S_ROOT_JOB, S_ROOT_ARTIFACT } s_root_kind;

static bool s_hex(const char *s) {
    return strspn(s, "0123456789abcdef") == strlen(s);
}

static bool s_job_shaped(const char *s) {
    return strncmp(s, "j-", 2) == 0 && s[2] && strspn(s + 2, "0123456789") == strlen(s + 2);
}

/* Parse the reference: the root id (models and datasets resolved through
 * the registry now; jobs and artifacts looked up in the graph later), or
 * FW_EINVAL / FW_ENOTFOUND / an etcd error with the detail. */
static int s_root(coord_t *c, const char *ref, char *id, size_t size, s_root_kind *kind) {
    static const char *const hint =
        "refs: NAME[:V|@ALIAS], model:REF, dataset:NAME[@V], job:ID or j-NNNNNN, "
        "sha256:HEX or artifact:sha256:HEX";
    if (!ref || !ref[0]) return fw_err_set(FW_EINVAL, "lineage: empty reference (%s)", hint);
    const char *r = ref;
    if (strncmp(r, "artifact:", 9) == 0) {
        r += 9;
        if (strncmp(r, "sha256:", 7) != 0)
            return fw_err_set(FW_EINVAL, "lineage '%.200s': expected artifact:sha256:HEX", ref);
    }
    if (strncmp(r, "sha256:", 7) == 0) {
        const char *hex = r + 7;
        size_t n = strlen(hex);
        if (n < S_PREFIX_MIN || n > 64 || !s_hex(hex))
            return fw_err_set(FW_EINVAL,
                              "lineage '%.200s': expected sha256: and %d to 64 lowercase hex "
                              "digits",
                              ref, S_PREFIX_MIN);
        snprintf(id, size, "artifact:%s", r);
        *kind = S_ROOT_ARTIFACT;
        return 0;
    }
    if (strncmp(r, "job:", 4) == 0 || s_job_shaped(r)) {
        const char *j = strncmp(r, "job:", 4) == 0 ? r + 4 : r;
        if (!s_id_ok(j, 64))
            return fw_err_set(FW_EINVAL, "lineage '%.200s': a job id is 1-64 of [A-Za-z0-9._-]",
                              ref);
        snprintf(id, size, "job:%s", j);
        *kind = S_ROOT_JOB;
        return 0;
    }
    char canon[S_ID_MAX - 32]; /* NAME:V or NAME@V: at most 128 + 21 */
    json_t *rec = NULL;
    int rc;
    if (strncmp(r, "dataset:", 8) == 0) {
        rc = coord_datasets_resolve(c, r + 8, &rec, canon, sizeof canon);
        *kind = S_ROOT_DATASET;
        if (rc == 0) snprintf(id, size, "dataset:%s", canon);
    } else {
        bool prefixed = strncmp(r, "model:", 6) == 0;
        rc = coord_models_resolve(c, prefixed ? r + 6 : r, &rec, canon, sizeof canon);
        *kind = S_ROOT_MODEL;
        if (rc == 0)
            snprintf(id, size, "model:%s", canon);
        else if (rc == FW_ENOTFOUND && !prefixed)
            /* A bare name is read as a model; say how to name the others. */
            rc = fw_err_set(rc, "%s (%s)", fw_err_detail(), hint);
        else if (rc == FW_EINVAL)
            rc = fw_err_set(rc, "%s; %s", fw_err_detail(), hint);
    }
    json_decref(rec);
    return rc;
}

/* An artifact root given by a digest prefix: the one artifact it names. */
static int s_artifact_root(s_graph *g, char *id, size_t size) {
    if (json_object_get(g->nodes, id)) return 0;
    size_t n = strlen(id);
    const char *k, *found = NULL;
    json_t *v;
    int matches = 0;
    if (n < strlen("artifact:sha256:") + 64) {
        json_object_foreach(g->nodes, k, v) {
            if (strncmp(k, id, n) == 0) {
                found = k;
                matches++;
            }
        }
    }
    if (matches == 1) {
        snprintf(id, size, "%s", found);
        return 0;
    }
    if (matches > 1)
        return fw_err_set(FW_EINVAL, "lineage: %s matches %d artifacts; give more digits", id + 9,
                          matches);
    return fw_err_set(FW_ENOTFOUND,
                      "lineage: no model, dataset, embedding or eval scores has digest %s", id + 9);
}

/* ------------------------------------------------------------- walk */

/* Breadth-first from root along in-edges (up) or out-edges (down), at most
 * depth hops. dist: id -> hops, root included. */
static void s_walk(s_graph *g, const char *root, bool up, int depth, json_t *dist) {
    json_t *queue = json_array();
    json_object_set_new(dist, root, json_integer(0));
    json_array_append_new(queue, json_string(root));
    for (size_t qi = 0; qi < json_array_size(queue); qi++) {
        const char *id = json_string_value(json_array_get(queue, qi));
        json_int_t d = json_integer_value(json_object_get(dist, id));
        if (d >= depth) continue;
        json_t *adj = json_object_get(up ? g->in : g->out, id), *ix;
        size_t i;
        json_array_foreach(adj, i, ix) {
            json_t *e = json_array_get(g->edges, (size_t)json_integer_value(ix));
            const char *other = json_string_value(json_object_get(e, up ? "from" : "to"));
            if (json_object_get(dist, other)) continue;
            json_object_set_new(dist, other, json_integer(d + 1));
            json_array_append_new(queue, json_string(other));
        }
    }
    json_decref(queue);
}

typedef struct {
    int side; /* 0 root, 1 ancestors, 2 descendants */
    json_int_t dist;
    const char *id;
} s_place;

static int s_place_cmp(const void *pa, const void *pb) {
    const s_place *a = pa, *b = pb;
    if (a->side != b->side) return a->side - b->side;
    if (a->dist != b->dist) return a->dist < b->dist ? -1 : 1;
    return strcmp(a->id, b->id);
}

static int s_edge_cmp(const void *pa, const void *pb) {
    json_t *a = *(json_t *const *)pa, *b = *(json_t *const *)pb;
    static const char *const keys[] = {"from", "to", "rel"};
    for (int i = 0; i < 3; i++) {
        int d = strcmp(json_string_value(json_object_get(a, keys[i])),
                       json_string_value(json_object_get(b, keys[i])));
        if (d) return d;
    }
    return 0;
}

/* The reply doc: root, the kept nodes in order, the edges among them. */
static json_t *s_cut(s_graph *g, const char *root, int depth) {
    json_t *up = json_object(), *down = json_object();
    s_walk(g, root, true, depth, up);
    s_walk(g, root, false, depth, down);
    size_t cap = json_object_size(up) + json_object_size(down), np = 0;
    s_place *pl = calloc(cap ? cap : 1, sizeof *pl);
    json_t *doc = NULL;
    if (!pl) goto done;
    const char *k;
    json_t *v;
    json_object_foreach(up, k, v) {
        pl[np++] = (s_place){strcmp(k, root) == 0 ? 0 : 1, json_integer_value(v), k};
    }
    json_object_foreach(down, k, v) {
        if (!json_object_get(up, k)) pl[np++] = (s_place){2, json_integer_value(v), k};
    }
    qsort(pl, np, sizeof *pl, s_place_cmp);
    json_t *nodes = json_array(), *edges = json_array();
    for (size_t i = 0; i < np; i++) json_array_append(nodes, json_object_get(g->nodes, pl[i].id));
    size_t ne = json_array_size(g->edges), nk = 0;
    json_t **ev = calloc(ne ? ne : 1, sizeof *ev);
    for (size_t i = 0; ev && i < ne; i++) {
        json_t *e = json_array_get(g->edges, i);
        const char *f = json_string_value(json_object_get(e, "from"));
        const char *t = json_string_value(json_object_get(e, "to"));
        bool fk = json_object_get(up, f) || json_object_get(down, f);
        bool tk = json_object_get(up, t) || json_object_get(down, t);
        if (fk && tk) ev[nk++] = e;
    }
    if (ev) qsort(ev, nk, sizeof *ev, s_edge_cmp);
    for (size_t i = 0; ev && i < nk; i++) json_array_append(edges, ev[i]);
    free(ev);
    doc = json_pack("{s:s,s:i,s:o,s:o}", "root", root, "depth", depth, "nodes", nodes, "edges",
                    edges);
done:
    free(pl);
    json_decref(up);
    json_decref(down);
    return doc;
}

/* ---------------------------------------------------------- request */

void coord_lineage_handle(coord_t *c, zframe_t *identity, const fw_msg_t *m,
                          const coord_token_t *tok) {
    (void)tok; /* any valid token may read lineage, like model show */
    const char *ref = fw_msg_get_str_f(m, FW_F_LINEAGE_GET_ref);
    int depth = S_DEPTH_DEFAULT;
    if (fw_msg_has_f(m, FW_F_LINEAGE_GET_depth))
        depth = (int)fw_msg_get_uint_f(m, FW_F_LINEAGE_GET_depth); /* the decoder bounds it: 64 */
    char root[S_ID_MAX];
    s_root_kind kind = S_ROOT_MODEL;
    int rc = s_root(c, ref, root, sizeof root, &kind);
    if (rc < 0) {
        coord_client_error(c, identity, m, rc, rc == FW_EINVAL || rc == FW_ENOTFOUND ? 0 : 1000,
                           "%s", fw_err_detail());
        return;
    }
    s_graph g = {.c = c,
                 .nodes = json_object(),
                 .known = json_object(),
                 .edges = json_array(),
                 .eset = json_object(),
                 .out = json_object(),
                 .in = json_object(),
                 .aliases = json_object(),
                 .jobs = json_object()};
    if (kind == S_ROOT_JOB) json_object_set_new(g.jobs, root + 4, json_true());
    rc = s_build(&g);
    if (rc < 0) {
        coord_client_error(c, identity, m, rc, rc == FW_ETOOBIG ? 0 : 1000, "lineage: %s",
                           fw_err_detail());
        goto done;
    }
    if (kind == S_ROOT_ARTIFACT && (rc = s_artifact_root(&g, root, sizeof root)) < 0) {
        coord_client_error(c, identity, m, rc, 0, "%s", fw_err_detail());
        goto done;
    }
    if (kind == S_ROOT_JOB && !json_object_get(g.nodes, root)) {
        coord_client_error(c, identity, m, FW_ENOTFOUND, 0, "lineage: job %s: not found", root + 4);
        goto done;
    }
    if (!json_object_get(g.nodes, root)) {
        /* Resolved a moment ago, gone from the range: a registry write raced us. */
        coord_client_error(c, identity, m, FW_ECONFLICT, 200, "lineage: %s changed; retry", root);
        goto done;
    }
    json_t *doc = s_cut(&g, root, depth);
    char *txt = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    size_t len = txt ? strlen(txt) : 0;
    free(txt);
    if (!doc || !len) {
        json_decref(doc);
        coord_client_error(c, identity, m, FW_ENOMEM, 0, "lineage: out of memory");
    } else if (len >= S_REPLY_MAX) {
        json_decref(doc);
        coord_client_error(c, identity, m, FW_ETOOBIG, 0,
                           "lineage of %s: %zu nodes, %zu bytes: more than a reply holds; "
                           "ask for a smaller depth",
                           root, json_object_size(g.nodes), len);
    } else {
        fw_info("event=lineage root=%s depth=%d records=%zu graph_nodes=%zu", root, depth, g.nread,
                json_object_size(g.nodes));
        coord_client_reply_doc(c, identity, m, FW_MSG_MODEL_REPLY, doc, -1);
    }
done:
    json_decref(g.nodes);
    json_decref(g.known);
    json_decref(g.edges);
    json_decref(g.eset);
    json_decref(g.out);
    json_decref(g.in);
    json_decref(g.aliases);
    json_decref(g.jobs);
}
