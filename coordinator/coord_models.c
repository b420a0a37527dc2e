/* coord_models.c - the model registry on the client endpoint.
 *
 * Theory of operation
 * -------------------
 * A model version is a directory (config.json, model.safetensors, the
 * tokenizer files) stored as an fw_store tree: one blob per file plus a
 * manifest blob whose digest names the directory (docs/artifacts.md). The
 * client builds the tree with fw_store_put_tree in a private local store,
 * uploads every member and then the manifest through BLOB_UPLOAD_* (served
 * by coord_data.c), and sends MODEL_REGISTER with the manifest's digest.
 * The leader does not trust the client: it parses the manifest from its own
 * store (fw_store_tree_foreach checks format, names, digests and sizes) and
 * requires every member to be present with the manifest's size, so a
 * registered version can always be materialised.
 *
 * Records (docs/etcd-layout.md), P = etcd.prefix:
 *
 *   P/models/<name>/versions/<v, 8 digits>  immutable version record
 *   P/models/<name>/aliases/<alias>         {version, protected, set_by, set_at}
 *
 * Versions are written like dataset versions: one fenced txn with
 * create_revision(key) == 0 and the audit entry; a digest the model already
 * has returns that version (idempotent re-register).
 *
 * Aliases move atomically. The leader reads the alias key, checks the
 * caller may move it (a protected alias, or asking to protect one, needs an
 * admin token), then commits a fenced txn comparing the key's mod_revision
 * with the one it read (0: absent) that writes the alias and its audit
 * entry ["model/<name>@<alias>", from, to, {by}]. The leader handles
 * requests one at a time on its loop, so two concurrent `alias set` calls
 * are serialised: both commit, in arrival order, both are audited as moves,
 * and the alias ends at the later one's version. The mod_revision compare
 * catches any other writer between the read and the txn (FW_ECONFLICT with
 * retry_after_ms; flywheelctl retries while its budget lasts). Refusals
 * (FW_EPERM, FW_ECONFLICT) are audited too, as a change whose attributes
 * carry "refused": the reason, in a fenced txn of their own, best effort: a
 * refusal whose audit write fails is still refused, and logged.
 *
 * Registration and alias moves are rare and small, so they run
 * synchronously on the loop (a few ranges and one txn, each bounded by
 * etcd.timeout), like coord_data.c's dataset registration. */
#include "coord.h"
#include "coord_records.h"

#include "fw_err.h"
#include "fw_evalstats.h"
#include "fw_log.h"
#include "fw_store.h"
#include "fw_time.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_NAME_MAX     128
#define S_VERSIONS_MAX 100000 /* versions of one model we are willing to scan */
#define S_DATASETS_MAX 16     /* dataset versions one model version names */
#define S_REF_MAX      300

bool coord_models_serves(int id) {
    switch (id) {
    case FW_MSG_MODEL_REGISTER:
    case FW_MSG_MODEL_LIST:
    case FW_MSG_MODEL_GET:
    case FW_MSG_MODEL_ALIAS_SET:
    case FW_MSG_MODEL_ALIAS_RM:
    case FW_MSG_MODEL_PROMOTE:
    case FW_MSG_LINEAGE_GET:
        return true;
    default:
        return false;
    }
}

/* ------------------------------------------------------------ helpers */

static bool s_name_ok(const char *n) {
    size_t len = n ? strlen(n) : 0;
    return len > 0 && len <= S_NAME_MAX &&
           strspn(n, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == len &&
           n[0] != '.';
}

static void s_key_version(coord_t *c, const char *name, uint64_t v, char *buf, size_t size) {
    snprintf(buf, size, "%s/models/%s/versions/%08" PRIu64, c->o.etcd_prefix, name, v);
}

static void s_key_alias(coord_t *c, const char *name, const char *alias, char *buf, size_t size) {
    snprintf(buf, size, "%s/models/%s/aliases/%s", c->o.etcd_prefix, name, alias);
}

/* One value as a JSON object we can read, or NULL (logged). */
static json_t *s_parse(const fw_etcd_kv *kv) {
    json_t *o = json_loads(kv->value, 0, NULL);
    if (!json_is_object(o) || json_integer_value(json_object_get(o, "schema")) > COORD_SCHEMA) {
        /* One bad record must not hide the others: skipped, the log names it. */
        fw_warn("event=model-record-bad key=%s", kv->key);
        json_decref(o);
        return NULL;
    }
    return o;
}

/* What a scan of P/models/[name/] collects: for each model name, its
 * version records (in version order) and its aliases. */
typedef struct {
    size_t skip;    /* strlen("P/models/") */
    json_t *models; /* name -> {"versions": [...], "aliases": {alias: record}} (owned) */
    size_t nversions;
} s_scan;

static int s_scan_page(const fw_etcd_kv *kvs, size_t n, void *arg) {
    s_scan *sc = arg;
    for (size_t i = 0; i < n; i++) {
        const char *rest = kvs[i].key + sc->skip;
        const char *slash = strchr(rest, '/');
        if (!slash || (size_t)(slash - rest) > S_NAME_MAX) continue;
        char name[S_NAME_MAX + 1];
        snprintf(name, sizeof name, "%.*s", (int)(slash - rest), rest);
        bool is_version = strncmp(slash, "/versions/", 10) == 0;
        bool is_alias = strncmp(slash, "/aliases/", 9) == 0;
        bool is_eval = strncmp(slash, "/evals/", 7) == 0;
        if (!is_version && !is_alias && !is_eval) continue;
        json_t *o = s_parse(&kvs[i]);
        if (!o) continue;
        json_t *m = json_object_get(sc->models, name);
        if (!m) {
            m = json_pack("{s:[],s:{},s:[]}", "versions", "aliases", "evals");
            if (!m || json_object_set_new(sc->models, name, m) < 0) {
                json_decref(o);
                return FW_ENOMEM;
            }
        }
        if (is_version) {
            json_array_append_new(json_object_get(m, "versions"), o);
            sc->nversions++;
        } else if (is_alias) {
            json_object_set_new(json_object_get(m, "aliases"), slash + 9, o);
        } else {
            json_array_append_new(json_object_get(m, "evals"), o);
        }
    }
    return sc->nversions > S_VERSIONS_MAX ? FW_ETOOBIG : 0;
}

/* Every model under P/models/ (name NULL) or one model's records. *out:
 * the scan's `models` object (caller decrefs). */
static int s_read(coord_t *c, const char *name, json_t **out) {
    char prefix[COORD_KEY_MAX];
    int n = snprintf(prefix, sizeof prefix, "%s/models/", c->o.etcd_prefix);
    s_scan sc = {.skip = (size_t)n, .models = json_object()};
    if (!sc.models) return FW_ENOMEM;
    if (name) snprintf(prefix + n, sizeof prefix - (size_t)n, "%s/", name);
    int rc = fw_etcd_range_pages(c->etcd, prefix, 500, 0, s_scan_page, &sc, NULL);
    if (rc < 0) {
        json_decref(sc.models);
        return rc;
    }
    *out = sc.models;
    return 0;
}

/* The version record of a model's scan: v, or the latest when v is 0. Borrowed. */
static json_t *s_find_version(json_t *model, uint64_t v) {
    json_t *vs = json_object_get(model, "versions");
    size_t n = json_array_size(vs);
    if (v == 0) return n ? json_array_get(vs, n - 1) : NULL;
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(vs, i);
        if ((uint64_t)json_integer_value(json_object_get(o, "version")) == v) return o;
    }
    return NULL;
}

/* The names of the aliases pointing at version v, as a new array. */
static json_t *s_aliases_of(json_t *model, json_int_t v) {
    json_t *arr = json_array();
    const char *k;
    json_t *a;
    json_object_foreach(json_object_get(model, "aliases"), k, a) {
        if (json_integer_value(json_object_get(a, "version")) == v)
            json_array_append_new(arr, json_string(k));
    }
    return arr;
}

/* Resolve a reference "NAME", "NAME:VERSION" or "NAME@ALIAS" to its version
 * record (new reference) and "NAME:VERSION" in canon. FW_EINVAL /
 * FW_ENOTFOUND / an etcd error, with the detail set. */
int coord_models_resolve(coord_t *c, const char *ref, json_t **out, char *canon, size_t size) {
    char name[S_NAME_MAX + 1], alias[S_NAME_MAX + 1] = "";
    uint64_t v = 0;
    size_t nlen = strcspn(ref, ":@");
    if (nlen == 0 || nlen > S_NAME_MAX) goto bad;
    snprintf(name, sizeof name, "%.*s", (int)nlen, ref);
    if (ref[nlen] == ':') {
        char *end;
        const char *vs = ref + nlen + 1;
        v = strtoull(vs, &end, 10);
        if (vs[0] < '1' || vs[0] > '9' || *end || v == 0) goto bad;
    } else if (ref[nlen] == '@') {
        if (!s_name_ok(ref + nlen + 1)) goto bad;
        snprintf(alias, sizeof alias, "%s", ref + nlen + 1);
    }
    if (!s_name_ok(name)) goto bad;
    json_t *models = NULL;
    int rc = s_read(c, name, &models);
    if (rc < 0) return fw_err_set(rc, "reading model %s from etcd: %s", name, fw_err_detail());
    json_t *model = json_object_get(models, name);
    if (alias[0]) {
        json_t *a = json_object_get(json_object_get(model, "aliases"), alias);
        if (!a) {
            json_decref(models);
            return fw_err_set(FW_ENOTFOUND, "model %s has no alias '%s'", name, alias);
        }
        v = (uint64_t)json_integer_value(json_object_get(a, "version"));
    }
    json_t *rec = s_find_version(model, v);
    if (!rec) {
        json_decref(models);
        if (v)
            return fw_err_set(FW_ENOTFOUND, "model %s:%" PRIu64 ": not found%s", name, v,
                              model ? "" : " (no such model)");
        return fw_err_set(FW_ENOTFOUND, "model %s: not found", name);
    }
    json_t *copy = json_deep_copy(rec);
    json_object_set_new(copy, "aliases",
                        s_aliases_of(model, json_integer_value(json_object_get(rec, "version"))));
    snprintf(canon, size, "%s:%" JSON_INTEGER_FORMAT, name,
             json_integer_value(json_object_get(rec, "version")));
    json_t *evals = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(model, "evals"), i, e) {
        const char *of = json_string_value(json_object_get(e, "model"));
        if (of && strcmp(of, canon) == 0) json_array_append(evals, e);
    }
    json_object_set_new(copy, "evals", evals);
    json_decref(models);
    *out = copy;
    return 0;
bad:
    return fw_err_set(FW_EINVAL,
                      "model reference '%.200s': expected NAME, NAME:VERSION or "
                      "NAME@ALIAS (names and aliases 1-128 of [A-Za-z0-9._-])",
                      ref);
}

/* Commit one fenced write with its audit entry. key NULL: the audit entry
 * alone. val NULL (with a key): delete the key. The key must have
 * `target` == want (FW_ETCD_CMP_CREATE 0: absent; FW_ETCD_CMP_MOD: unchanged
 * since read; want < 0: no compare). change: the audit change row (borrowed). 0, FW_ECONFLICT,
 * FW_ENOTLEADER (after stepping down when fenced), or another fw_err. */
static int s_commit(coord_t *c, const char *key, fw_etcd_cmp_target target, int64_t want,
                    const char *val, json_t *change) {
    uint64_t aseq = (uint64_t)c->last_audit_seq + 1;
    char akey[COORD_KEY_MAX];
    coord_key_audit(akey, sizeof akey, c->o.etcd_prefix, aseq);
    json_t *audit =
        json_pack("{s:i,s:I,s:I,s:s,s:[O]}", "schema", COORD_SCHEMA, "ts", (json_int_t)fw_wall_ms(),
                  "epoch", (json_int_t)c->L.epoch, "actor", c->o.name, "changes", change);
    char *aval = audit ? json_dumps(audit, JSON_COMPACT) : NULL;
    json_decref(audit);
    fw_etcd_txn *txn = c->L.election ? fw_etcd_election_txn(c->L.election) : NULL;
    if (!aval || !txn) {
        free(aval);
        fw_etcd_txn_destroy(&txn);
        return txn ? fw_err_set(FW_ENOMEM, "out of memory")
                   : fw_err_set(FW_ENOTLEADER, "leadership is changing; retry");
    }
    if (key) {
        if (want >= 0) fw_etcd_txn_compare(txn, key, target, FW_ETCD_CMP_EQUAL, want);
        if (val)
            fw_etcd_txn_put(txn, FW_ETCD_SUCCESS, key, val, strlen(val), 0, false);
        else
            fw_etcd_txn_delete(txn, FW_ETCD_SUCCESS, key, false, false);
    }
    fw_etcd_txn_put(txn, FW_ETCD_SUCCESS, akey, aval, strlen(aval), 0, false);
    fw_etcd_txn_result *res = NULL;
    int rc = fw_etcd_txn_commit(c->etcd, txn, &res);
    bool fenced = rc == FW_EFENCED || (res && res->fenced);
    fw_etcd_txn_result_free(&res);
    fw_etcd_txn_destroy(&txn);
    free(aval);
    if (rc == 0) {
        c->last_audit_seq = (int64_t)aseq;
        return 0;
    }
    if (fenced) {
        coord_leader_step_down(c, "model registry txn fenced");
        return fw_err_set(FW_ENOTLEADER, "leadership moved; retry");
    }
    if (rc == FW_ECONFLICT) return fw_err_set(rc, "changed concurrently; retry");
    return rc;
}

/* Audit a refused alias change (best effort: the refusal stands either way). */
static void s_audit_refusal(coord_t *c, const char *id, const char *from, const char *to,
                            const char *by, const char *why) {
    json_t *ch = json_pack("[s,s,s,{s:s,s:s}]", id, from, to, "by", by, "refused", why);
    int rc = ch ? s_commit(c, NULL, FW_ETCD_CMP_CREATE, 0, NULL, ch) : FW_ENOMEM;
    json_decref(ch);
    fw_info("event=model-alias-refused alias=%s from=%s to=%s by=%s why=%s audited=%s", id,
            from[0] ? from : "-", to[0] ? to : "-", by, why, rc == 0 ? "yes" : fw_errname(rc));
}

/* ---------------------------------------------------------- register */

typedef struct {
    fw_store *store;
    int files;
    uint64_t bytes;
    char bad[512];
} s_members;

static int s_check_member(const char *name, const char *digest, uint64_t size, unsigned mode,
                          void *arg) {
    s_members *mb = arg;
    fw_store_stat st;
    (void)mode;
    if (fw_store_stat_blob(mb->store, digest, &st) < 0 || st.size != size) {
        snprintf(mb->bad, sizeof mb->bad,
                 "member %.200s (%s, %" PRIu64 " bytes) is not in the store", name, digest, size);
        return 1;
    }
    mb->files++;
    mb->bytes += size;
    return 0;
}

/* Check every "NAME@VERSION" of arr names a registered dataset version.
 * 0, or the fw_err with the detail. */
static int s_check_datasets(coord_t *c, json_t *arr) {
    if (!json_is_array(arr) || json_array_size(arr) > S_DATASETS_MAX)
        return fw_err_set(FW_EINVAL, "datasets: expected a JSON array of at most %d NAME@VERSION",
                          S_DATASETS_MAX);
    for (size_t i = 0; i < json_array_size(arr); i++) {
        const char *ref = json_string_value(json_array_get(arr, i));
        const char *at = ref ? strrchr(ref, '@') : NULL;
        char name[S_NAME_MAX + 1], *end = NULL;
        unsigned long long v = at ? strtoull(at + 1, &end, 10) : 0;
        if (!at || at == ref || (size_t)(at - ref) > S_NAME_MAX || at[1] < '1' || at[1] > '9' ||
            *end || v == 0)
            return fw_err_set(FW_EINVAL, "datasets[%zu] '%.160s': expected NAME@VERSION", i,
                              ref ? ref : "");
        snprintf(name, sizeof name, "%.*s", (int)(at - ref), ref);
        if (!s_name_ok(name))
            return fw_err_set(FW_EINVAL, "datasets[%zu] '%.160s': bad dataset name", i, ref);
        char key[COORD_KEY_MAX];
        snprintf(key, sizeof key, "%s/datasets/%s/%08llu", c->o.etcd_prefix, name, v);
        fw_etcd_kv *kv = NULL;
        int rc = fw_etcd_get(c->etcd, key, &kv);
        fw_etcd_kv_free(&kv);
        if (rc == FW_ENOTFOUND)
            return fw_err_set(rc, "datasets[%zu]: dataset %s is not registered", i, ref);
        if (rc < 0) return fw_err_set(rc, "reading dataset %s: %s", ref, fw_err_detail());
    }
    return 0;
}

int coord_models_register(coord_t *c, const coord_model_reg_t *r, json_t **out, bool *existing) {
    json_t *prec = NULL, *models = NULL, *rec = NULL;
    fw_store *store = NULL;
    char pcanon[S_REF_MAX + 32] = "";
    int rc;
    *out = NULL;
    if (existing) *existing = false;
    if (!s_name_ok(r->name))
        return fw_err_set(FW_EINVAL,
                          "model name '%.128s': 1-128 of [A-Za-z0-9._-], not starting with '.'",
                          r->name ? r->name : "");
    if (!fw_digest_valid(r->digest))
        return fw_err_set(FW_EINVAL, "digest '%.80s': expected sha256:<64 hex>",
                          r->digest ? r->digest : "");
    if (r->datasets && (rc = s_check_datasets(c, r->datasets)) < 0) return rc;
    if (r->hparams && !json_is_object(r->hparams))
        return fw_err_set(FW_EINVAL, "hparams: expected a JSON object");
    if (r->parent && r->parent[0] &&
        (rc = coord_models_resolve(c, r->parent, &prec, pcanon, sizeof pcanon)) < 0)
        return fw_err_set(rc, "parent: %s", fw_err_detail());
    json_decref(prec);
    if (!c->o.store_dir || !c->o.store_dir[0])
        return fw_err_set(FW_EUNSUPPORTED,
                          "this coordinator has no artifact store (set coordinator.store_dir)");
    /* A handle of our own on the shared store: cheap to open, and the
     * registry then needs nothing from coord_data.c's upload state. */
    store = fw_store_open_dir(c->o.store_dir, NULL);
    if (!store)
        return fw_err_set(FW_EIO, "artifact store %s: %s", c->o.store_dir, fw_err_detail());
    s_members mb = {.store = store};
    rc = fw_store_tree_foreach(store, r->digest, s_check_member, &mb);
    fw_store_destroy(&store);
    if (rc == FW_ENOTFOUND)
        return fw_err_set(rc, "manifest %s is not in the artifact store: upload it first",
                          r->digest);
    if (rc < 0) return fw_err_set(rc, "manifest %s: %s", r->digest, fw_err_detail());
    if (mb.bad[0])
        return fw_err_set(FW_ENOTFOUND, "manifest %s: %s: upload it first", r->digest, mb.bad);
    if ((rc = s_read(c, r->name, &models)) < 0)
        return fw_err_set(rc, "reading model %s from etcd: %s", r->name, fw_err_detail());
    json_t *vs = json_object_get(json_object_get(models, r->name), "versions");
    uint64_t maxver = 0;
    for (size_t i = 0; i < json_array_size(vs); i++) {
        json_t *o = json_array_get(vs, i);
        uint64_t v = (uint64_t)json_integer_value(json_object_get(o, "version"));
        if (v > maxver) maxver = v;
        const char *dg = json_string_value(json_object_get(o, "digest"));
        if (dg && strcmp(dg, r->digest) == 0) {
            fw_info("event=model-exists name=%s version=%" PRIu64 " by=%s", r->name, v, r->by);
            *out = json_incref(o);
            if (existing) *existing = true;
            json_decref(models);
            return 0;
        }
    }
    json_decref(models);
    uint64_t ver = maxver + 1;
    rec = json_pack("{s:i,s:s,s:I,s:s,s:I,s:i,s:o,s:o,s:o,s:o,s:s,s:o,s:s,s:I,s:I,s:s}",
                    "schema", COORD_SCHEMA, "name", r->name, "version", (json_int_t)ver,
                    "digest", r->digest, "size", (json_int_t)mb.bytes, "files", mb.files,
                    "parent", pcanon[0] ? json_string(pcanon) : json_null(), "datasets",
                    r->datasets ? json_incref(r->datasets) : json_array(), "job",
                    r->job && r->job[0] ? json_string(r->job) : json_null(), "hparams",
                    r->hparams ? json_incref(r->hparams) : json_object(), "code_version",
                    r->code_version && r->code_version[0] ? r->code_version : "unknown",
                    "metrics", r->metrics ? json_incref(r->metrics) : json_object(),
                    "created_by", r->by, "created_at", (json_int_t)fw_wall_ms(), "epoch",
                    (json_int_t)c->L.epoch, "coordinator", c->o.name);
    char *val = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
    char key[COORD_KEY_MAX], id[S_NAME_MAX + 32];
    s_key_version(c, r->name, ver, key, sizeof key);
    snprintf(id, sizeof id, "model/%s:%" PRIu64, r->name, ver);
    json_t *ch = json_pack("[s,s,s,{s:s}]", id, "", "registered", "by", r->by);
    rc = val && ch ? s_commit(c, key, FW_ETCD_CMP_CREATE, 0, val, ch) : FW_ENOMEM;
    free(val);
    json_decref(ch);
    if (rc < 0) {
        json_decref(rec);
        return fw_err_set(rc, "registering %s:%" PRIu64 ": %s", r->name, ver,
                          rc == FW_ECONFLICT ? "the version was taken concurrently; retry"
                                             : fw_err_detail());
    }
    fw_info("event=model-registered name=%s version=%" PRIu64 " digest=%s parent=%s by=%s",
            r->name, ver, r->digest, pcanon[0] ? pcanon : "-", r->by);
    *out = rec;
    return 0;
}

static void s_register(coord_t *c, zframe_t *identity, const fw_msg_t *m,
                       const coord_token_t *tok) {
    const char *dtext = fw_msg_get_str_f(m, FW_F_MODEL_REGISTER_datasets);
    const char *htext = fw_msg_get_str_f(m, FW_F_MODEL_REGISTER_hparams);
    json_t *datasets = dtext && dtext[0] ? json_loads(dtext, 0, NULL) : json_array();
    json_t *hparams = htext && htext[0] ? json_loads(htext, 0, NULL) : json_object();
    coord_model_reg_t r = {
        .name = fw_msg_get_str_f(m, FW_F_MODEL_REGISTER_name),
        .digest = fw_msg_get_str_f(m, FW_F_MODEL_REGISTER_digest),
        .parent = fw_msg_get_str_f(m, FW_F_MODEL_REGISTER_parent),
        .datasets = datasets,
        .job = fw_msg_get_str_f(m, FW_F_MODEL_REGISTER_job),
        .hparams = hparams,
        .code_version = fw_msg_get_str_f(m, FW_F_MODEL_REGISTER_code_version),
        .by = tok->name,
    };
    json_t *rec = NULL;
    bool existing = false;
    int rc = hparams ? coord_models_register(c, &r, &rec, &existing)
                     : fw_err_set(FW_EINVAL, "hparams: expected a JSON object");
    if (rc == 0)
        coord_client_reply_doc(c, identity, m, FW_MSG_MODEL_REPLY, rec, existing ? 1 : 0);
    else
        coord_client_error(c, identity, m, rc,
                           rc == FW_ECONFLICT                     ? 200
                           : rc == FW_ENOTLEADER                  ? 500
                           : rc == FW_EIO || rc == FW_EUNAVAIL    ? 1000
                                                                  : 0,
                           "%s", fw_err_detail());
    json_decref(datasets);
    json_decref(hparams);
}

/* ------------------------------------------------------- list and get */

static void s_list(coord_t *c, zframe_t *identity, const fw_msg_t *m) {
    const char *name = fw_msg_get_str_f(m, FW_F_MODEL_LIST_name);
    if (name && !name[0]) name = NULL;
    if (name && !s_name_ok(name)) {
        coord_client_error(c, identity, m, FW_EINVAL, 0,
                           "model name '%.128s': 1-128 of [A-Za-z0-9._-]", name);
        return;
    }
    json_t *models = NULL;
    int rc = s_read(c, name, &models);
    if (rc < 0) {
        coord_client_error(c, identity, m, rc, 1000, "reading models from etcd: %s",
                           fw_err_detail());
        return;
    }
    json_t *out = json_array();
    const char *k;
    json_t *md;
    json_object_foreach(models, k, md) {
        json_t *vs = json_object_get(md, "versions");
        size_t n = json_array_size(vs);
        /* Every version of the one model, or the latest of each. */
        for (size_t i = name ? 0 : (n ? n - 1 : 0); i < n; i++) {
            json_t *o = json_deep_copy(json_array_get(vs, i));
            json_object_set_new(
                o, "aliases", s_aliases_of(md, json_integer_value(json_object_get(o, "version"))));
            json_array_append_new(out, o);
        }
    }
    json_decref(models);
    coord_client_reply_doc(c, identity, m, FW_MSG_MODEL_REPLY, out, -1);
}

static void s_get(coord_t *c, zframe_t *identity, const fw_msg_t *m) {
    const char *name = fw_msg_get_str_f(m, FW_F_MODEL_GET_name);
    uint64_t ver = fw_msg_get_uint_f(m, FW_F_MODEL_GET_version);
    const char *alias = fw_msg_get_str_f(m, FW_F_MODEL_GET_alias);
    char ref[S_REF_MAX + 32], canon[S_REF_MAX + 32];
    if (!s_name_ok(name)) {
        coord_client_error(c, identity, m, FW_EINVAL, 0,
                           "model name '%.128s': 1-128 of [A-Za-z0-9._-]", name);
        return;
    }
    if (ver)
        snprintf(ref, sizeof ref, "%s:%" PRIu64, name, ver);
    else if (alias && alias[0])
        snprintf(ref, sizeof ref, "%s@%.128s", name, alias);
    else
        snprintf(ref, sizeof ref, "%s", name);
    json_t *rec = NULL;
    int rc = coord_models_resolve(c, ref, &rec, canon, sizeof canon);
    if (rc < 0) {
        coord_client_error(c, identity, m, rc, rc == FW_ENOTFOUND || rc == FW_EINVAL ? 0 : 1000,
                           "%s", fw_err_detail());
        return;
    }
    coord_client_reply_doc(c, identity, m, FW_MSG_MODEL_REPLY, rec, -1);
}

/* ------------------------------------------------------------ aliases */

/* The alias's current record (new reference, NULL when absent) and its
 * mod_revision (0 when absent). 0 or an etcd error. */
static int s_alias_read(coord_t *c, const char *key, json_t **rec, int64_t *mod) {
    fw_etcd_kv *kv = NULL;
    *rec = NULL;
    *mod = 0;
    int rc = fw_etcd_get(c->etcd, key, &kv);
    if (rc == FW_ENOTFOUND) return 0;
    if (rc < 0) return rc;
    *mod = kv->mod_revision;
    *rec = s_parse(kv);
    fw_etcd_kv_free(&kv);
    return 0;
}

/* Validate name and alias of an alias request; false after replying. */
static bool s_alias_args(coord_t *c, zframe_t *identity, const fw_msg_t *m, const char *name,
                         const char *alias) {
    if (!s_name_ok(name)) {
        coord_client_error(c, identity, m, FW_EINVAL, 0,
                           "model name '%.128s': 1-128 of [A-Za-z0-9._-]", name);
        return false;
    }
    if (!s_name_ok(alias)) {
        coord_client_error(c, identity, m, FW_EINVAL, 0,
                           "alias '%.128s': 1-128 of [A-Za-z0-9._-], not starting with '.'", alias);
        return false;
    }
    return true;
}

static void s_alias_set(coord_t *c, zframe_t *identity, const fw_msg_t *m,
                        const coord_token_t *tok) {
    const char *name = fw_msg_get_str_f(m, FW_F_MODEL_ALIAS_SET_name);
    const char *alias = fw_msg_get_str_f(m, FW_F_MODEL_ALIAS_SET_alias);
    uint64_t ver = fw_msg_get_uint_f(m, FW_F_MODEL_ALIAS_SET_version);
    bool protect = fw_msg_get_bool_f(m, FW_F_MODEL_ALIAS_SET_protect);
    if (!s_alias_args(c, identity, m, name, alias)) return;
    if (ver == 0) {
        coord_client_error(c, identity, m, FW_EINVAL, 0, "version: expected a number >= 1");
        return;
    }
    char vkey[COORD_KEY_MAX], akey[COORD_KEY_MAX], id[2 * S_NAME_MAX + 16];
    char from[32] = "", to[32];
    s_key_version(c, name, ver, vkey, sizeof vkey);
    s_key_alias(c, name, alias, akey, sizeof akey);
    snprintf(id, sizeof id, "model/%s@%s", name, alias);
    snprintf(to, sizeof to, "%" PRIu64, ver);
    fw_etcd_kv *kv = NULL;
    int rc = fw_etcd_get(c->etcd, vkey, &kv);
    fw_etcd_kv_free(&kv);
    if (rc < 0) {
        if (rc == FW_ENOTFOUND)
            coord_client_error(c, identity, m, rc, 0, "model %s:%" PRIu64 ": not found", name, ver);
        else
            coord_client_error(c, identity, m, rc, 1000, "reading %s: %s", vkey, fw_err_detail());
        return;
    }
    json_t *cur = NULL, *rec = NULL;
    int64_t mod = 0;
    rc = s_alias_read(c, akey, &cur, &mod);
    if (rc < 0) {
        coord_client_error(c, identity, m, rc, 1000, "reading %s: %s", akey, fw_err_detail());
        return;
    }
    bool was_protected = cur && json_is_true(json_object_get(cur, "protected"));
    if (cur)
        snprintf(from, sizeof from, "%" JSON_INTEGER_FORMAT,
                 json_integer_value(json_object_get(cur, "version")));
    if ((was_protected || protect) && tok->role != COORD_ROLE_ADMIN) {
        s_audit_refusal(c, id, from, to, tok->name, "FW_EPERM");
        coord_client_error(c, identity, m, FW_EPERM, 0, "%s@%s %s: only an admin token may %s",
                           name, alias, was_protected ? "is protected" : "is not protected",
                           was_protected ? "move it" : "protect it");
        goto done;
    }
    rec = json_pack("{s:i,s:s,s:s,s:I,s:b,s:s,s:I,s:I}", "schema", COORD_SCHEMA, "name", name,
                    "alias", alias, "version", (json_int_t)ver, "protected",
                    was_protected || protect, "set_by", tok->name, "set_at",
                    (json_int_t)fw_wall_ms(), "epoch", (json_int_t)c->L.epoch);
    char *val = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
    json_t *ch = json_pack("[s,s,s,{s:s}]", id, from, to, "by", tok->name);
    rc = val && ch ? s_commit(c, akey, FW_ETCD_CMP_MOD, mod, val, ch) : FW_ENOMEM;
    free(val);
    json_decref(ch);
    if (rc == 0) {
        fw_info("event=model-alias-moved alias=%s from=%s to=%s by=%s", id, from[0] ? from : "-",
                to, tok->name);
        json_object_set_new(rec, "previous", from[0] ? json_integer(atoll(from)) : json_null());
        coord_client_reply_doc(c, identity, m, FW_MSG_MODEL_REPLY, json_incref(rec), -1);
    } else {
        if (rc == FW_ECONFLICT) s_audit_refusal(c, id, from, to, tok->name, "FW_ECONFLICT");
        coord_client_error(c, identity, m, rc,
                           rc == FW_ECONFLICT    ? 100
                           : rc == FW_ENOTLEADER ? 500
                                                 : 1000,
                           "moving %s@%s to %" PRIu64 ": %s", name, alias, ver,
                           rc == FW_ECONFLICT ? "the alias moved concurrently; retry"
                                              : fw_err_detail());
    }
done:
    json_decref(cur);
    json_decref(rec);
}

static void s_alias_rm(coord_t *c, zframe_t *identity, const fw_msg_t *m,
                       const coord_token_t *tok) {
    const char *name = fw_msg_get_str_f(m, FW_F_MODEL_ALIAS_RM_name);
    const char *alias = fw_msg_get_str_f(m, FW_F_MODEL_ALIAS_RM_alias);
    if (!s_alias_args(c, identity, m, name, alias)) return;
    char akey[COORD_KEY_MAX], id[2 * S_NAME_MAX + 16], from[32] = "";
    s_key_alias(c, name, alias, akey, sizeof akey);
    snprintf(id, sizeof id, "model/%s@%s", name, alias);
    json_t *cur = NULL;
    int64_t mod = 0;
    int rc = s_alias_read(c, akey, &cur, &mod);
    if (rc < 0) {
        coord_client_error(c, identity, m, rc, 1000, "reading %s: %s", akey, fw_err_detail());
        return;
    }
    if (mod == 0) {
        coord_client_error(c, identity, m, FW_ENOTFOUND, 0, "model %s has no alias '%s'", name,
                           alias);
        return;
    }
    if (cur)
        snprintf(from, sizeof from, "%" JSON_INTEGER_FORMAT,
                 json_integer_value(json_object_get(cur, "version")));
    if (cur && json_is_true(json_object_get(cur, "protected")) && tok->role != COORD_ROLE_ADMIN) {
        s_audit_refusal(c, id, from, "", tok->name, "FW_EPERM");
        coord_client_error(c, identity, m, FW_EPERM, 0,
                           "%s@%s is protected: only an admin token may remove it", name, alias);
        json_decref(cur);
        return;
    }
    json_t *ch = json_pack("[s,s,s,{s:s}]", id, from, "", "by", tok->name);
    rc = ch ? s_commit(c, akey, FW_ETCD_CMP_MOD, mod, NULL, ch) : FW_ENOMEM;
    json_decref(ch);
    if (rc == 0) {
        fw_info("event=model-alias-removed alias=%s from=%s by=%s", id, from, tok->name);
        json_t *doc = json_pack("{s:s,s:s,s:O,s:b}", "name", name, "alias", alias, "previous",
                                cur ? json_object_get(cur, "version") : json_null(), "removed", 1);
        coord_client_reply_doc(c, identity, m, FW_MSG_MODEL_REPLY, doc, -1);
    } else {
        if (rc == FW_ECONFLICT) s_audit_refusal(c, id, from, "", tok->name, "FW_ECONFLICT");
        coord_client_error(c, identity, m, rc,
                           rc == FW_ECONFLICT    ? 100
                           : rc == FW_ENOTLEADER ? 500
                                                 : 1000,
                           "removing %s@%s: %s", name, alias,
                           rc == FW_ECONFLICT ? "the alias moved concurrently; retry"
                                              : fw_err_detail());
    }
    json_decref(cur);
}

/* ------------------------------------------------------ evals, promotion */

int coord_models_put_eval(coord_t *c, json_t *rec, const char *by) {
    const char *model = json_string_value(json_object_get(rec, "model"));
    const char *dataset = json_string_value(json_object_get(rec, "dataset"));
    const char *colon = model ? strrchr(model, ':') : NULL;
    if (!colon || !dataset)
        return fw_err_set(FW_EINVAL, "eval record: needs model NAME:V and dataset NAME@V");
    char key[COORD_KEY_MAX];
    snprintf(key, sizeof key, "%s/models/%.*s/evals/%08llu/%s", c->o.etcd_prefix,
             (int)(colon - model), model, strtoull(colon + 1, NULL, 10), dataset);
    char id[S_REF_MAX + 40];
    snprintf(id, sizeof id, "model/%s", model);
    char *val = json_dumps(rec, JSON_COMPACT);
    json_t *ch = json_pack("[s,s,s,{s:s,s:s}]", id, "", "evaluated", "by", by, "dataset", dataset);
    int rc = val && ch ? s_commit(c, key, FW_ETCD_CMP_MOD, -1, val, ch) : FW_ENOMEM;
    free(val);
    json_decref(ch);
    if (rc < 0) return fw_err_set(rc, "recording the eval of %s on %s: %s", model, dataset,
                                  fw_err_detail());
    return 0;
}

/* The eval record of `rec` (a resolved version) on dataset canon `ds`, or
 * with ds NULL any; borrowed. */
static json_t *s_eval_on(json_t *rec, const char *ds) {
    size_t i;
    json_t *e;
    json_t *best = NULL;
    json_array_foreach(json_object_get(rec, "evals"), i, e) {
        const char *d = json_string_value(json_object_get(e, "dataset"));
        if (!d) continue;
        if (ds && strcmp(d, ds) == 0) return e;
        if (!ds && (!best || json_integer_value(json_object_get(e, "created_at")) >
                                 json_integer_value(json_object_get(best, "created_at"))))
            best = e;
    }
    return best;
}

/* A finished per-example set from a scores blob in the store. */
static int s_load_scores(fw_store *st, const char *digest, const char *who, fw_evalset **out) {
    char *buf = NULL;
    size_t len = 0;
    *out = NULL;
    int rc = fw_store_get_buffer(st, digest ? digest : "", (size_t)1 << 31, &buf, &len);
    if (rc < 0) return fw_err_set(rc, "scores of %s (%s): %s", who, digest ? digest : "?",
                                  fw_err_detail());
    fw_evalset *set = fw_evalset_new();
    rc = set ? fw_evalset_add_jsonl(set, buf, len, who, 0, 0) : FW_ENOMEM;
    if (rc == 0) rc = fw_evalset_finish(set, 0);
    free(buf);
    if (rc < 0) {
        fw_evalset_destroy(&set);
        return rc;
    }
    *out = set;
    return 0;
}

/* Decide (docs/eval.md, "Promotion"): the challenger must be better by a
 * significant margin (the paired-bootstrap interval of challenger minus
 * champion excludes 0, on the better side) and by at least min_delta. */
static int s_decide(coord_t *c, json_t *champ_eval, json_t *chal_eval, const char *metric,
                    double min_delta, uint64_t seed, json_t *decision) {
    fw_store *st = fw_store_open_dir(c->o.store_dir, NULL);
    if (!st) return fw_err_set(FW_EIO, "artifact store %s: %s", c->o.store_dir, fw_err_detail());
    fw_evalset *a = NULL, *b = NULL;
    const char *an = json_string_value(json_object_get(champ_eval, "model"));
    const char *bn = json_string_value(json_object_get(chal_eval, "model"));
    int rc = s_load_scores(st, json_string_value(json_object_get(champ_eval, "scores")), an, &a);
    if (rc == 0)
        rc = s_load_scores(st, json_string_value(json_object_get(chal_eval, "scores")), bn, &b);
    fw_store_destroy(&st);
    fw_evalcmp cmp;
    fw_evalcmp_opts o = {.seed = seed};
    if (rc == 0) rc = fw_evalcmp_run(a, b, &o, &cmp);
    fw_evalset_destroy(&a);
    fw_evalset_destroy(&b);
    if (rc < 0) return rc;
    const fw_evalcmp_metric *mt = fw_evalcmp_find(&cmp, metric);
    if (!mt)
        return fw_err_set(FW_EINVAL, "metric %s: not measured for %s evals", metric,
                          fw_eval_kind_name(cmp.kind));
    /* improvement > 0 means the challenger is better, in the metric's units. */
    double improvement = mt->higher_is_better ? mt->diff : -mt->diff;
    bool better_side = mt->significant && (mt->higher_is_better ? mt->direction > 0
                                                                : mt->direction < 0);
    bool promote = better_side && improvement >= min_delta;
    char reason[256];
    if (promote)
        snprintf(reason, sizeof reason, "significantly better by %.6g (>= min_delta %.6g)",
                 improvement, min_delta);
    else if (!mt->significant)
        snprintf(reason, sizeof reason, "difference not significant (95%% CI [%.6g, %.6g] "
                 "includes 0)", mt->ci_lo, mt->ci_hi);
    else if (!better_side)
        snprintf(reason, sizeof reason, "challenger is significantly worse");
    else
        snprintf(reason, sizeof reason, "better by %.6g, less than min_delta %.6g", improvement,
                 min_delta);
    json_object_set_new(decision, "champion_value", json_real(mt->a));
    json_object_set_new(decision, "challenger_value", json_real(mt->b));
    json_object_set_new(decision, "delta", json_real(mt->diff));
    json_object_set_new(decision, "improvement", json_real(improvement));
    json_object_set_new(decision, "ci", json_pack("[f,f]", mt->ci_lo, mt->ci_hi));
    json_object_set_new(decision, "significant", json_boolean(mt->significant));
    json_object_set_new(decision, "examples", json_integer((json_int_t)cmp.examples));
    json_object_set_new(decision, "resamples", json_integer(cmp.resamples));
    json_object_set_new(decision, "seed", json_integer((json_int_t)seed));
    json_object_set_new(decision, "promoted", json_boolean(promote));
    json_object_set_new(decision, "reason", json_string(reason));
    return 0;
}

/* One fenced txn: the promotion record (key must be absent), the champion
 * alias when akey is given (unchanged since read: mod_revision == amod),
 * and the audit entry. */
static int s_commit_promotion(coord_t *c, const char *pkey, json_t *decision, const char *akey,
                              int64_t amod, json_t *arec, json_t *changes) {
    uint64_t aseq = (uint64_t)c->last_audit_seq + 1;
    char audkey[COORD_KEY_MAX];
    coord_key_audit(audkey, sizeof audkey, c->o.etcd_prefix, aseq);
    json_t *audit = json_pack("{s:i,s:I,s:I,s:s,s:O}", "schema", COORD_SCHEMA, "ts",
                              (json_int_t)fw_wall_ms(), "epoch", (json_int_t)c->L.epoch,
                              "actor", c->o.name, "changes", changes);
    char *aval = audit ? json_dumps(audit, JSON_COMPACT) : NULL;
    char *pval = json_dumps(decision, JSON_COMPACT);
    char *alval = arec ? json_dumps(arec, JSON_COMPACT) : NULL;
    json_decref(audit);
    fw_etcd_txn *txn = c->L.election ? fw_etcd_election_txn(c->L.election) : NULL;
    int rc;
    if (!txn) {
        rc = fw_err_set(FW_ENOTLEADER, "leadership is changing; retry");
    } else if (!aval || !pval || (arec && !alval)) {
        rc = fw_err_set(FW_ENOMEM, "out of memory");
    } else {
        fw_etcd_txn_compare(txn, pkey, FW_ETCD_CMP_CREATE, FW_ETCD_CMP_EQUAL, 0);
        fw_etcd_txn_put(txn, FW_ETCD_SUCCESS, pkey, pval, strlen(pval), 0, false);
        if (akey) {
            fw_etcd_txn_compare(txn, akey, FW_ETCD_CMP_MOD, FW_ETCD_CMP_EQUAL, amod);
            fw_etcd_txn_put(txn, FW_ETCD_SUCCESS, akey, alval, strlen(alval), 0, false);
        }
        fw_etcd_txn_put(txn, FW_ETCD_SUCCESS, audkey, aval, strlen(aval), 0, false);
        fw_etcd_txn_result *res = NULL;
        rc = fw_etcd_txn_commit(c->etcd, txn, &res);
        bool fenced = rc == FW_EFENCED || (res && res->fenced);
        fw_etcd_txn_result_free(&res);
        if (rc == 0) {
            c->last_audit_seq = (int64_t)aseq;
        } else if (fenced) {
            coord_leader_step_down(c, "promotion txn fenced");
            rc = fw_err_set(FW_ENOTLEADER, "leadership moved; retry");
        } else if (rc == FW_ECONFLICT) {
            rc = fw_err_set(rc, "the champion alias moved (or another promotion was recorded) "
                            "concurrently; retry");
        }
    }
    fw_etcd_txn_destroy(&txn);
    free(aval);
    free(pval);
    free(alval);
    return rc;
}

static void s_promote(coord_t *c, zframe_t *identity, const fw_msg_t *m,
                      const coord_token_t *tok) {
    const char *name = fw_msg_get_str_f(m, FW_F_MODEL_PROMOTE_name);
    const char *chal = fw_msg_get_str_f(m, FW_F_MODEL_PROMOTE_challenger);
    const char *metric = fw_msg_get_str_f(m, FW_F_MODEL_PROMOTE_metric);
    const char *dsref = fw_msg_get_str_f(m, FW_F_MODEL_PROMOTE_dataset);
    double min_delta = fw_msg_has_f(m, FW_F_MODEL_PROMOTE_min_delta)
                           ? fw_msg_get_double_f(m, FW_F_MODEL_PROMOTE_min_delta)
                           : 0.0;
    uint64_t seed = fw_msg_has_f(m, FW_F_MODEL_PROMOTE_seed)
                        ? fw_msg_get_uint_f(m, FW_F_MODEL_PROMOTE_seed)
                        : 1;
    json_t *crec = NULL, *chrec = NULL, *dsrec = NULL, *decision = NULL;
    char ccanon[S_REF_MAX + 32] = "", chcanon[S_REF_MAX + 32] = "", dcanon[S_REF_MAX + 32] = "";
    char champ_ref[S_NAME_MAX + 16];
    int rc = 0;
    static const char *const metrics[] = {"loss", "perplexity", "exact_match", "accuracy",
                                          "accuracy_norm"};
    bool known = false;
    for (size_t i = 0; i < sizeof metrics / sizeof metrics[0]; i++)
        if (metric && strcmp(metric, metrics[i]) == 0) known = true;
    if (!s_name_ok(name)) {
        rc = fw_err_set(FW_EINVAL, "model name '%.128s': 1-128 of [A-Za-z0-9._-]", name);
        goto done;
    }
    if (!known) {
        rc = fw_err_set(FW_EINVAL, "metric '%.32s': expected loss, perplexity, exact_match, "
                        "accuracy or accuracy_norm", metric ? metric : "");
        goto done;
    }
    if (!(min_delta >= 0) || min_delta > 1e12) {
        rc = fw_err_set(FW_EINVAL, "min_delta: expected a number >= 0");
        goto done;
    }
    if ((rc = coord_models_resolve(c, chal, &chrec, chcanon, sizeof chcanon)) < 0) {
        rc = fw_err_set(rc, "challenger: %s", fw_err_detail());
        goto done;
    }
    if (strcmp(json_string_value(json_object_get(chrec, "name")), name) != 0) {
        rc = fw_err_set(FW_EINVAL, "challenger %s is not a version of model %s", chcanon, name);
        goto done;
    }
    snprintf(champ_ref, sizeof champ_ref, "%s@champion", name);
    rc = coord_models_resolve(c, champ_ref, &crec, ccanon, sizeof ccanon);
    if (rc < 0 && rc != FW_ENOTFOUND) goto done;
    if (dsref && dsref[0] && (rc = coord_datasets_resolve(c, dsref, &dsrec, dcanon,
                                                          sizeof dcanon)) < 0)
        goto done;
    rc = 0;
    decision = json_pack("{s:i,s:s,s:o,s:s,s:s,s:f,s:s,s:I}", "schema", COORD_SCHEMA, "name",
                         name, "champion", crec ? json_string(ccanon) : json_null(),
                         "challenger", chcanon, "metric", metric, "min_delta", min_delta,
                         "by", tok->name, "at", (json_int_t)fw_wall_ms());
    if (!crec) {
        json_object_set_new(decision, "promoted", json_true());
        json_object_set_new(decision, "reason", json_string("no champion yet"));
        if (dcanon[0]) json_object_set_new(decision, "dataset", json_string(dcanon));
    } else if (strcmp(ccanon, chcanon) == 0) {
        rc = fw_err_set(FW_EINVAL, "%s is already %s@champion", chcanon, name);
        goto done;
    } else {
        /* The dataset: the one asked for, else the newest the challenger
         * was scored on that the champion was scored on too. */
        json_t *ce = NULL, *he = NULL;
        if (dcanon[0]) {
            he = s_eval_on(chrec, dcanon);
            ce = s_eval_on(crec, dcanon);
        } else {
            size_t i;
            json_t *e;
            json_array_foreach(json_object_get(chrec, "evals"), i, e) {
                json_t *other = s_eval_on(crec, json_string_value(json_object_get(e, "dataset")));
                if (other && (!he || json_integer_value(json_object_get(e, "created_at")) >
                                         json_integer_value(json_object_get(he, "created_at")))) {
                    he = e;
                    ce = other;
                }
            }
            if (he) snprintf(dcanon, sizeof dcanon, "%s",
                             json_string_value(json_object_get(he, "dataset")));
        }
        if (!he || !ce) {
            if (dcanon[0])
                rc = fw_err_set(FW_ENOTFOUND, "no eval of %s on %s: run an eval job of %s and %s "
                                "on it first", !he ? chcanon : ccanon, dcanon, ccanon, chcanon);
            else
                rc = fw_err_set(FW_ENOTFOUND, "no eval of %s and %s on a common dataset: give "
                                "a dataset and run an eval job of both on it first",
                                ccanon, chcanon);
            goto done;
        }
        json_object_set_new(decision, "dataset", json_string(dcanon));
        if ((rc = s_decide(c, ce, he, metric, min_delta, seed, decision)) < 0) goto done;
    }
    /* Record the decision and, when promoted, move the alias in the same
     * fenced txn, compared against the alias as read (a concurrent move
     * makes this FW_ECONFLICT and nothing is written). */
    char akey[COORD_KEY_MAX], pkey[COORD_KEY_MAX], prefix[COORD_KEY_MAX];
    s_key_alias(c, name, "champion", akey, sizeof akey);
    int64_t amod = 0;
    json_t *arec = NULL;
    if ((rc = s_alias_read(c, akey, &arec, &amod)) < 0) goto done;
    if (json_is_true(json_object_get(arec, "protected")) && tok->role != COORD_ROLE_ADMIN &&
        json_is_true(json_object_get(decision, "promoted"))) {
        json_decref(arec);
        rc = fw_err_set(FW_EPERM, "%s@champion is protected: only an admin token promotes",
                        name);
        goto done;
    }
    snprintf(prefix, sizeof prefix, "%s/models/%s/promotions/", c->o.etcd_prefix, name);
    /* The next sequence: one past the last key (the promotion txn requires
     * its key absent, so two racing promotions cannot share one). */
    fw_etcd_range_opts ro = {.prefix = true, .limit = 1, .keys_only = true,
                             .sort_order = FW_ETCD_SORT_DESCEND, .sort_target = FW_ETCD_SORT_KEY};
    fw_etcd_kvs *last = NULL;
    uint64_t seq = 1;
    if ((rc = fw_etcd_range(c->etcd, prefix, &ro, &last)) < 0) goto done;
    if (last->n) seq = strtoull(last->kvs[0].key + strlen(prefix), NULL, 10) + 1;
    fw_etcd_kvs_free(&last);
    snprintf(pkey, sizeof pkey, "%s%08llu", prefix, (unsigned long long)seq);
    json_object_set_new(decision, "seq", json_integer((json_int_t)seq));
    bool promote = json_is_true(json_object_get(decision, "promoted"));
    char id[S_NAME_MAX + 32];
    snprintf(id, sizeof id, "model/%s@champion", name);
    json_t *changes = json_pack("[[s,s,s,{s:s,s:s}]]", id, crec ? ccanon : "",
                                promote ? chcanon : (crec ? ccanon : ""), "by", tok->name,
                                "promotion", promote ? "promoted" : "kept");
    json_t *arec_new = promote ? json_pack("{s:i,s:s,s:s,s:I,s:b,s:s,s:I,s:I}", "schema",
                                           COORD_SCHEMA, "name", name, "alias", "champion",
                                           "version", json_integer_value(json_object_get(chrec,
                                           "version")), "protected",
                                           json_is_true(json_object_get(arec, "protected")),
                                           "set_by", tok->name,
                                           "set_at", (json_int_t)fw_wall_ms(), "epoch",
                                           (json_int_t)c->L.epoch)
                               : NULL;
    json_decref(arec);
    rc = s_commit_promotion(c, pkey, decision, promote ? akey : NULL, amod, arec_new, changes);
    json_decref(changes);
    json_decref(arec_new);
    if (rc < 0) goto done;
    fw_info("event=model-promotion name=%s champion=%s challenger=%s promoted=%d by=%s", name,
            crec ? ccanon : "-", chcanon, promote, tok->name);
    coord_client_reply_doc(c, identity, m, FW_MSG_MODEL_REPLY, json_incref(decision), 0);
done:
    if (rc < 0)
        coord_client_error(c, identity, m, rc,
                           rc == FW_ECONFLICT ? 100 : rc == FW_ENOTLEADER ? 500
                           : rc == FW_EIO || rc == FW_EUNAVAIL ? 1000 : 0, "%s",
                           fw_err_detail());
    json_decref(decision);
    json_decref(crec);
    json_decref(chrec);
    json_decref(dsrec);
}

void coord_models_handle(coord_t *c, zframe_t *identity, const fw_msg_t *m,
                         const coord_token_t *tok) {
    switch (fw_msg_id(m)) {
    case FW_MSG_MODEL_REGISTER:
        s_register(c, identity, m, tok);
        break;
    case FW_MSG_MODEL_LIST:
        s_list(c, identity, m);
        break;
    case FW_MSG_MODEL_GET:
        s_get(c, identity, m);
        break;
    case FW_MSG_MODEL_ALIAS_SET:
        s_alias_set(c, identity, m, tok);
        break;
    case FW_MSG_MODEL_ALIAS_RM:
        s_alias_rm(c, identity, m, tok);
        break;
    case FW_MSG_MODEL_PROMOTE:
        s_promote(c, identity, m, tok);
        break;
    case FW_MSG_LINEAGE_GET:
        coord_lineage_handle(c, identity, m, tok);
        break;
    default:
        break;
    }
}
