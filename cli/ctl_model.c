/* ctl_model.c - `flywheelctl model register|list|show|versions|download|alias`.
 *
 * Theory of operation
 * -------------------
 * A model version is a directory stored as an fw_store tree (docs/
 * artifacts.md): a blob per file and a manifest blob naming them, whose
 * digest names the directory. To build the manifest exactly as the store
 * does, `model register` puts the directory into a private local store
 * (fw_store_put_tree into a temporary directory), then copies each member
 * and finally the manifest into the leader's store:
 *
 *   BLOB_UPLOAD_BEGIN(size, digest)   -> "complete" when the leader has it,
 *   BLOB_UPLOAD_CHUNK ... COMMIT         else the bytes in 1 MiB chunks
 *   MODEL_REGISTER(name, manifest digest, parent, datasets, job, hparams,
 *                  code_version)     -> the version record
 *
 * Members go first so that the leader, which checks every member of the
 * manifest is in its store, never sees a manifest it cannot materialise.
 * The local copy costs one extra write of the model on the client's disk;
 * it keeps the manifest format in one place (fw_store.c).
 *
 * `model download REF DIR` is the reverse: BLOB_READ ranges of the manifest
 * and of each member go into a private local store through
 * fw_store_upload_*, which verifies each digest on commit (a corrupt
 * leader copy is FW_ECORRUPT, nothing written); fw_store_materialise_tree
 * then writes DIR.tmp-<pid>-<n> and renames it to DIR, so DIR appears
 * complete or not at all.
 *
 * `model promote NAME --challenger REF --metric M` asks the leader
 * (MODEL_PROMOTE), which compares the eval records of NAME@champion and the
 * challenger on one dataset and moves the alias or not (docs/eval.md,
 * promotion). When an eval is missing the leader says so (FW_ENOTFOUND,
 * "no eval of X on D"); we then submit an eval job of both on --dataset,
 * wait for it (the job records the evals in the registry) and ask once more:
 *
 *   MODEL_PROMOTE -> decision                                     (done)
 *                 -> ENOTFOUND "no eval" -> JOB_SUBMIT eval {champion,
 *                    challenger} -> job wait -> MODEL_PROMOTE -> decision
 *
 * References: NAME (the latest version), NAME:VERSION, NAME@ALIAS. */
#include "ctl.h"

#include "fw_digest.h"
#include "fw_err.h"
#include "fw_log.h"
#include "fw_store.h"

#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef FW_CODE_VERSION
#define FW_CODE_VERSION "unknown"
#endif

#define S_NAME_MAX 128
#define S_RETRIES  5 /* alias moves that lost a compare, tried again */

#define S_FAIL(...) (ctl_errorf(__VA_ARGS__), -1)

/* ------------------------------------------------------------ helpers */

typedef struct {
    char name[S_NAME_MAX + 1];
    uint64_t version; /* 0: alias or latest */
    char alias[S_NAME_MAX + 1];
} s_ref;

/* "NAME", "NAME:VERSION" or "NAME@ALIAS". 0 or -1 printed. */
static int s_parse_ref(ctl_t *c, const char *text, s_ref *r) {
    memset(r, 0, sizeof *r);
    size_t n = strcspn(text, ":@");
    if (n == 0 || n > S_NAME_MAX)
        return S_FAIL(c, "model '%s': expected NAME, NAME:VERSION or NAME@ALIAS", text);
    memcpy(r->name, text, n);
    if (text[n] == ':') {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(text + n + 1, &end, 10);
        if (!text[n + 1] || *end || errno || v == 0 || text[n + 1] == '-')
            return S_FAIL(c, "model '%s': the version after ':' must be a number >= 1", text);
        r->version = v;
    } else if (text[n] == '@') {
        if (!text[n + 1] || strlen(text + n + 1) > S_NAME_MAX)
            return S_FAIL(c, "model '%s': expected an alias after '@'", text);
        snprintf(r->alias, sizeof r->alias, "%s", text + n + 1);
    }
    return 0;
}

/* The version record a reference names; NULL after printing the error. */
static json_t *s_get(ctl_t *c, const s_ref *r) {
    fw_msg_t *req = ctl_request(c, FW_MSG_MODEL_GET);
    if (!req) return NULL;
    int rc = fw_msg_set_str(req, "name", r->name);
    if (rc == 0 && r->version) rc = fw_msg_set_uint(req, "version", r->version);
    if (rc == 0 && r->alias[0]) rc = fw_msg_set_str(req, "alias", r->alias);
    if (rc < 0) {
        ctl_errorf(c, "model %s: %s", r->name, fw_err_detail());
        fw_msg_destroy(&req);
        return NULL;
    }
    return ctl_call_doc(c, &req, NULL);
}

json_t *ctl_model_get(ctl_t *c, const char *ref) {
    s_ref r;
    if (s_parse_ref(c, ref, &r) < 0) return NULL;
    return s_get(c, &r);
}

static int s_rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw) {
    (void)st;
    (void)type;
    (void)ftw;
    remove(path);
    return 0;
}

/* A private temporary directory holding a local store; -1 printed. */
static fw_store *s_tmp_store(ctl_t *c, char *dir, size_t size) {
    const char *t = getenv("TMPDIR");
    snprintf(dir, size, "%s/flywheelctl-model-XXXXXX", t && t[0] ? t : "/tmp");
    if (!mkdtemp(dir)) {
        ctl_errorf(c, "mkdtemp %s: %s", dir, strerror(errno));
        dir[0] = '\0';
        return NULL;
    }
    fw_store *s = fw_store_open_dir(dir, NULL);
    if (!s) ctl_errorf(c, "local store %s: %s", dir, fw_err_detail());
    return s;
}

static void s_tmp_remove(fw_store **s, const char *dir) {
    fw_store_destroy(s);
    if (dir[0]) nftw(dir, s_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

typedef struct {
    fw_store *local;
    const char *digest;
    fw_store_upload *u;
} s_blob;

static int s_local_read(void *arg, uint64_t off, void *buf, size_t max, size_t *n) {
    s_blob *b = arg;
    return fw_store_read_chunk(b->local, b->digest, off, buf, max, n, NULL);
}

/* Copy blob `digest` of the local store into the leader's store. 0 or -1 printed. */
static int s_upload(ctl_t *c, fw_store *local, const char *digest) {
    fw_store_stat st;
    if (fw_store_stat_blob(local, digest, &st) < 0)
        return S_FAIL(c, "local blob %s: %s", digest, fw_err_detail());
    s_blob b = {local, digest, NULL};
    return ctl_blob_upload(c, digest, digest, st.size, s_local_read, &b);
}

static int s_local_write(void *arg, uint64_t size, uint64_t off, const void *data, size_t n) {
    s_blob *b = arg;
    if (!b->u && !(b->u = fw_store_upload_begin(b->local, size))) return -1;
    return n ? fw_store_upload_chunk(b->u, off, data, n) : 0;
}

/* Fetch blob `digest` from the leader into the local store, verified on
 * commit. 0 or -1 printed. */
static int s_fetch(ctl_t *c, fw_store *local, const char *digest) {
    fw_store_stat st;
    if (fw_store_stat_blob(local, digest, &st) == 0) return 0; /* a file twice in the tree */
    s_blob b = {local, digest, NULL};
    int ret = ctl_blob_download(c, digest, digest, s_local_write, &b, NULL);
    if (ret == 0 && fw_store_upload_commit(&b.u, digest) < 0)
        ret = S_FAIL(c, "blob %s: %s (%s)", digest, fw_err_detail(), fw_errname(FW_ECORRUPT));
    fw_store_upload_abort(&b.u);
    return ret;
}

typedef struct {
    json_t *digests; /* array of member digests (owned) */
} s_members;

static int s_collect(const char *name, const char *digest, uint64_t size, unsigned mode,
                     void *arg) {
    s_members *mb = arg;
    (void)name;
    (void)size;
    (void)mode;
    return json_array_append_new(mb->digests, json_string(digest)) < 0;
}

/* ----------------------------------------------------------- commands */

/* The dataset flags as a JSON array text: every --dataset, each possibly a
 * comma-separated list. Caller frees; NULL when none. */
static char *s_datasets(const ctl_t *c) {
    json_t *arr = json_array();
    for (int i = 0; i < c->nflags; i++) {
        if (strcmp(c->flag_name[i], "dataset") != 0) continue;
        const char *p = c->flag_val[i];
        while (*p) {
            size_t n = strcspn(p, ",");
            if (n) json_array_append_new(arr, json_stringn(p, n));
            p += n + (p[n] == ',');
        }
    }
    char *txt = json_array_size(arr) ? json_dumps(arr, JSON_COMPACT) : NULL;
    json_decref(arr);
    return txt;
}

static int s_cmd_register(ctl_t *c) {
    const char *dir = c->argv[0];
    const char *name = ctl_flag(c, "name");
    if (!name || !name[0]) return ctl_errorf(c, "model register: --name is required");
    const char *hp = ctl_flag(c, "hparams");
    if (hp) {
        json_t *h = json_loads(hp, 0, NULL);
        bool ok = json_is_object(h);
        json_decref(h);
        if (!ok) return ctl_errorf(c, "--hparams: expected a JSON object, e.g. '{\"lr\": 0.001}'");
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return ctl_errorf(c, "%s: not a directory", dir);
    if (!getenv("FW_LOG_LEVEL")) fw_log_set_level(FW_LOG_WARN);
    if (ctl_connect(c) < 0) return CTL_EXIT_ERROR;
    char tmp[4096], digest[FW_DIGEST_STR_SIZE];
    fw_store *local = s_tmp_store(c, tmp, sizeof tmp);
    int ret = CTL_EXIT_ERROR;
    s_members mb = {.digests = json_array()};
    char *dsets = s_datasets(c);
    fw_msg_t *req = NULL, *reply = NULL;
    json_t *rec = NULL;
    if (!local) goto done;
    int rc = fw_store_put_tree(local, dir, digest);
    if (rc < 0) {
        ctl_errorf(c, "%s: %s (%s)", dir, fw_err_detail(), fw_errname(rc));
        goto done;
    }
    rc = fw_store_tree_foreach(local, digest, s_collect, &mb);
    if (rc < 0) {
        ctl_errorf(c, "%s: %s", dir, fw_err_detail());
        goto done;
    }
    if (json_array_size(mb.digests) == 0) {
        ctl_errorf(c,
                   "%s: no files: a model directory holds config.json, the weights and the "
                   "tokenizer files",
                   dir);
        goto done;
    }
    size_t i;
    json_t *d;
    json_array_foreach(mb.digests, i, d) {
        if (s_upload(c, local, json_string_value(d)) < 0) goto done;
    }
    if (s_upload(c, local, digest) < 0) goto done; /* the manifest, last */
    req = ctl_request(c, FW_MSG_MODEL_REGISTER);
    if (!req) goto done;
    const char *parent = ctl_flag(c, "parent"), *job = ctl_flag(c, "job");
    const char *code = ctl_flag(c, "code-version");
    rc = fw_msg_set_str(req, "name", name);
    if (rc == 0) rc = fw_msg_set_str(req, "digest", digest);
    if (rc == 0 && parent) rc = fw_msg_set_str(req, "parent", parent);
    if (rc == 0 && dsets) rc = fw_msg_set_str(req, "datasets", dsets);
    if (rc == 0 && job) rc = fw_msg_set_str(req, "job", job);
    if (rc == 0 && hp) rc = fw_msg_set_str(req, "hparams", hp);
    if (rc == 0) rc = fw_msg_set_str(req, "code_version", code ? code : FW_CODE_VERSION);
    if (rc < 0) {
        ctl_errorf(c, "model %s: %s", name, fw_err_detail());
        goto done;
    }
    if (ctl_call(c, req, &reply) < 0) goto done;
    bool existing = fw_msg_get_bool(reply, "existing");
    rec = ctl_reply_doc(c, reply);
    if (!rec) goto done;
    if (c->output == CTL_OUT_JSON) {
        json_t *o = json_pack("{s:O,s:b}", "model", rec, "existing", existing);
        ctl_print_json(o);
        json_decref(o);
    } else {
        printf("model %s:%" JSON_INTEGER_FORMAT " %s (%s, %zu files)\n", ctl_str(rec, "name"),
               json_integer_value(json_object_get(rec, "version")),
               existing ? "already registered with identical content" : "registered",
               ctl_str(rec, "digest"), json_array_size(mb.digests));
    }
    ret = CTL_EXIT_OK;
done:
    fw_msg_destroy(&req);
    fw_msg_destroy(&reply);
    json_decref(rec);
    json_decref(mb.digests);
    free(dsets);
    s_tmp_remove(&local, tmp);
    return ret;
}

static json_t *s_list_call(ctl_t *c, const char *name) {
    fw_msg_t *req = ctl_request(c, FW_MSG_MODEL_LIST);
    if (!req) return NULL;
    if (name && fw_msg_set_str(req, "name", name) < 0) {
        ctl_errorf(c, "model name '%s': %s", name, fw_err_detail());
        fw_msg_destroy(&req);
        return NULL;
    }
    return ctl_call_doc(c, &req, NULL);
}

/* One row of the list table. */
static void s_list_row(ctl_table_t *t, json_t *r) {
    char v[32], al[256], par[256], ds[256], age[32], dg[24];
    snprintf(dg, sizeof dg, "%.19s", ctl_str(r, "digest"));
    const char *row[] = {ctl_str(r, "name"),
                         ctl_cell(ctl_get(r, "version"), v, sizeof v),
                         json_array_size(ctl_get(r, "aliases"))
                             ? ctl_cell(ctl_get(r, "aliases"), al, sizeof al)
                             : "-",
                         ctl_cell(ctl_get(r, "parent"), par, sizeof par),
                         json_array_size(ctl_get(r, "datasets"))
                             ? ctl_cell(ctl_get(r, "datasets"), ds, sizeof ds)
                             : "-",
                         ctl_str(r, "job")[0] ? ctl_str(r, "job") : "-",
                         ctl_str(r, "created_by"),
                         ctl_age(ctl_get(r, "created_at"), age, sizeof age),
                         dg};
    ctl_table_add(t, row);
}

/* `model list` (name NULL: latest of each) and `model versions NAME`. */
static int s_print_list(ctl_t *c, const char *name) {
    if (ctl_connect(c) < 0) return CTL_EXIT_ERROR;
    json_t *arr = s_list_call(c, name);
    if (!arr) return CTL_EXIT_ERROR;
    static const char *const hdr[] = {"NAME", "VERSION", "ALIASES", "PARENT", "DATASETS",
                                      "JOB",  "BY",      "AGE",     "DIGEST"};
    return ctl_print_list(c, arr, 9, hdr, s_list_row);
}

static int s_cmd_list(ctl_t *c) {
    return s_print_list(c, NULL);
}

static int s_cmd_versions(ctl_t *c) {
    return s_print_list(c, c->argv[0]);
}

/* The eval records of a version as a table: dataset, records, the usual
 * metrics, the job and the scores blob (`artifact get` fetches it). */
static void s_print_evals(const json_t *evals) {
    static const char *const hdr[] = {"DATASET", "RECORDS", "LOSS",   "PERPLEXITY",
                                      "EXACT",   "ACCURACY", "JOB",   "SCORES"};
    ctl_table_t *t = ctl_table_new(8, hdr);
    size_t i;
    json_t *e;
    json_array_foreach(evals, i, e) {
        char recs[32], l[32], p[32], em[32], acc[32];
        const json_t *m = json_object_get(e, "metrics");
        const char *row[] = {ctl_str(e, "dataset"),
                             ctl_cell(json_object_get(e, "records"), recs, sizeof recs),
                             ctl_num(json_object_get(m, "loss"), l, sizeof l),
                             ctl_num(json_object_get(m, "perplexity"), p, sizeof p),
                             ctl_num(json_object_get(m, "exact_match"), em, sizeof em),
                             ctl_num(json_object_get(m, "accuracy"), acc, sizeof acc),
                             *ctl_str(e, "job") ? ctl_str(e, "job") : "-",
                             ctl_str(e, "scores")};
        ctl_table_add(t, row);
    }
    ctl_table_print(t, stdout);
    ctl_table_destroy(&t);
}

static int s_cmd_show(ctl_t *c) {
    s_ref r;
    if (s_parse_ref(c, c->argv[0], &r) < 0) return CTL_EXIT_USAGE;
    if (ctl_connect(c) < 0) return CTL_EXIT_ERROR;
    json_t *rec = s_get(c, &r);
    if (!rec) return CTL_EXIT_ERROR;
    if (c->output == CTL_OUT_JSON) {
        ctl_print_json(rec);
    } else {
        /* Evals get a table of their own below; dotted keys would bury them. */
        json_t *evals = json_incref(json_object_get(rec, "evals"));
        json_object_del(rec, "evals");
        ctl_print_object(rec, "");
        if (json_array_size(evals)) {
            printf("\nevals (%zu):\n", json_array_size(evals));
            s_print_evals(evals);
        }
        json_decref(evals);
    }
    json_decref(rec);
    return CTL_EXIT_OK;
}

static int s_cmd_download(ctl_t *c) {
    s_ref r;
    const char *dest = c->argv[1];
    if (s_parse_ref(c, c->argv[0], &r) < 0) return CTL_EXIT_USAGE;
    struct stat st;
    if (lstat(dest, &st) == 0) return ctl_errorf(c, "%s: already exists", dest);
    if (!getenv("FW_LOG_LEVEL")) fw_log_set_level(FW_LOG_WARN);
    if (ctl_connect(c) < 0) return CTL_EXIT_ERROR;
    json_t *rec = s_get(c, &r);
    if (!rec) return CTL_EXIT_ERROR;
    const char *digest = ctl_str(rec, "digest");
    char tmp[4096];
    fw_store *local = s_tmp_store(c, tmp, sizeof tmp);
    s_members mb = {.digests = json_array()};
    int ret = CTL_EXIT_ERROR;
    if (!local || s_fetch(c, local, digest) < 0) goto done;
    int rc = fw_store_tree_foreach(local, digest, s_collect, &mb);
    if (rc < 0) {
        ctl_errorf(c, "manifest %s: %s (%s)", digest, fw_err_detail(), fw_errname(rc));
        goto done;
    }
    size_t i;
    json_t *d;
    json_array_foreach(mb.digests, i, d) {
        if (s_fetch(c, local, json_string_value(d)) < 0) goto done;
    }
    rc = fw_store_materialise_tree(local, digest, dest);
    if (rc < 0) {
        ctl_errorf(c, "%s: %s (%s)", dest, fw_err_detail(), fw_errname(rc));
        goto done;
    }
    if (c->output == CTL_OUT_JSON)
        ctl_print_json(rec);
    else
        printf("model %s:%" JSON_INTEGER_FORMAT " -> %s (%zu files, %s, verified)\n",
               ctl_str(rec, "name"), json_integer_value(json_object_get(rec, "version")), dest,
               json_array_size(mb.digests), digest);
    ret = CTL_EXIT_OK;
done:
    json_decref(mb.digests);
    json_decref(rec);
    s_tmp_remove(&local, tmp);
    return ret;
}

/* `model alias set N@ALIAS VERSION [--protect]` and `model alias rm N@ALIAS`. */
static int s_cmd_alias(ctl_t *c) {
    const char *op = c->argv[0];
    bool set = strcmp(op, "set") == 0;
    if (!set && strcmp(op, "rm") != 0)
        return (ctl_errorf(c, "model alias %s: expected set or rm", op), CTL_EXIT_USAGE);
    if (c->argc != (set ? 3 : 2))
        return (ctl_errorf(c, "usage: model alias set N@ALIAS VERSION | model alias rm N@ALIAS"),
                CTL_EXIT_USAGE);
    s_ref r;
    if (s_parse_ref(c, c->argv[1], &r) < 0) return CTL_EXIT_USAGE;
    if (!r.alias[0])
        return (ctl_errorf(c, "model alias %s: '%s': expected NAME@ALIAS", op, c->argv[1]),
                CTL_EXIT_USAGE);
    uint64_t ver = 0;
    if (set) {
        const char *vs = c->argv[2];
        char *end;
        errno = 0;
        if (vs[0] == 'v') vs++; /* "v3" reads as 3 */
        ver = strtoull(vs, &end, 10);
        if (!*vs || *end || errno || ver == 0 || vs[0] == '-')
            return (ctl_errorf(c, "VERSION '%s': expected a number >= 1", c->argv[2]),
                    CTL_EXIT_USAGE);
    }
    if (ctl_connect(c) < 0) return CTL_EXIT_ERROR;
    fw_msg_t *reply = NULL;
    int rc = 0;
    /* A lost compare means another writer moved the alias between the
     * leader's read and its txn: try again on top of the new value. */
    for (int attempt = 0; attempt < S_RETRIES; attempt++) {
        fw_msg_t *req = ctl_request(c, set ? FW_MSG_MODEL_ALIAS_SET : FW_MSG_MODEL_ALIAS_RM);
        if (!req) return CTL_EXIT_ERROR;
        fw_msg_set_str(req, "name", r.name);
        rc = fw_msg_set_str(req, "alias", r.alias);
        if (rc == 0 && set) rc = fw_msg_set_uint(req, "version", ver);
        if (rc == 0 && set && ctl_flag_on(c, "protect")) rc = fw_msg_set_bool(req, "protect", true);
        if (rc < 0) {
            fw_msg_destroy(&req);
            return ctl_errorf(c, "model alias %s: %s", op, fw_err_detail());
        }
        rc = ctl_conn_call(c->conn, req, &reply);
        fw_msg_destroy(&req);
        if (rc != FW_ECONFLICT) break;
        usleep(100000u * (unsigned)(attempt + 1));
    }
    if (rc < 0)
        return ctl_errorf(c, "model alias %s %s: %s (%s)", op, c->argv[1], fw_err_detail(),
                          fw_errname(rc));
    json_t *doc = ctl_reply_doc(c, reply);
    fw_msg_destroy(&reply);
    if (!doc) return CTL_EXIT_ERROR;
    if (c->output == CTL_OUT_JSON) {
        ctl_print_json(doc);
    } else if (set) {
        json_t *prev = json_object_get(doc, "previous");
        if (json_is_integer(prev))
            printf("%s@%s: %" JSON_INTEGER_FORMAT " -> %" PRIu64 "%s\n", r.name, r.alias,
                   json_integer_value(prev), ver,
                   json_is_true(json_object_get(doc, "protected")) ? " (protected)" : "");
        else
            printf("%s@%s -> %" PRIu64 "%s\n", r.name, r.alias, ver,
                   json_is_true(json_object_get(doc, "protected")) ? " (protected)" : "");
    } else {
        printf("%s@%s removed (was %" JSON_INTEGER_FORMAT ")\n", r.name, r.alias,
               json_integer_value(json_object_get(doc, "previous")));
    }
    json_decref(doc);
    return CTL_EXIT_OK;
}

/* ------------------------------------------------------------ promote */

/* MODEL_PROMOTE: 0 with *doc, or the fw_err (not printed: the caller decides
 * whether a missing eval is an error). */
static int s_promote_call(ctl_t *c, const char *name, const char *challenger, const char *metric,
                          double min_delta, const char *dataset, json_t **doc) {
    *doc = NULL;
    fw_msg_t *req = ctl_request(c, FW_MSG_MODEL_PROMOTE), *reply = NULL;
    if (!req) return FW_ENOMEM;
    int rc = fw_msg_set_str(req, "name", name);
    if (rc == 0) rc = fw_msg_set_str(req, "challenger", challenger);
    if (rc == 0) rc = fw_msg_set_str(req, "metric", metric);
    if (rc == 0) rc = fw_msg_set_double(req, "min_delta", min_delta);
    if (rc == 0 && dataset) rc = fw_msg_set_str(req, "dataset", dataset);
    if (rc < 0) {
        fw_msg_destroy(&req);
        return fw_err_set(rc, "model promote %s: %s", name, fw_err_detail());
    }
    rc = ctl_conn_call(c->conn, req, &reply);
    fw_msg_destroy(&req);
    if (rc < 0) return rc;
    const char *text = fw_msg_get_str(reply, "doc");
    *doc = text ? json_loads(text, 0, NULL) : NULL;
    fw_msg_destroy(&reply);
    if (!json_is_object(*doc)) {
        json_decref(*doc);
        *doc = NULL;
        return fw_err_set(FW_EPROTO, "MODEL_REPLY: doc is not a JSON object");
    }
    return 0;
}

/* Submit {"kind":"eval","models":[NAME@champion, challenger],"dataset":D,
 * "shards":S} and wait for it. 0, or -1 printed. */
static int s_run_eval(ctl_t *c, const char *name, const char *challenger, const char *dataset,
                      long shards, int64_t timeout_ms) {
    char champ[S_NAME_MAX + 16];
    snprintf(champ, sizeof champ, "%s@champion", name);
    json_t *spec = json_pack("{s:s,s:[s,s],s:s,s:i}", "kind", "eval", "models", champ,
                             challenger, "dataset", dataset, "shards", (int)shards);
    char *text = spec ? json_dumps(spec, JSON_COMPACT) : NULL;
    json_decref(spec);
    fw_msg_t *req = text ? ctl_request(c, FW_MSG_JOB_SUBMIT) : NULL, *reply = NULL;
    int rc = req ? fw_msg_set_str(req, "spec", text) : FW_ENOMEM;
    free(text);
    if (rc < 0) {
        fw_msg_destroy(&req);
        return ctl_errorf(c, "eval job: %s", fw_err_detail()), -1;
    }
    rc = ctl_call(c, req, &reply);
    fw_msg_destroy(&req);
    if (rc < 0) return -1;
    char job_id[160];
    snprintf(job_id, sizeof job_id, "%s", fw_msg_get_str(reply, "job_id"));
    fw_msg_destroy(&reply);
    if (c->output == CTL_OUT_TABLE)
        printf("evaluating %s and %s on %s: job %s\n", champ, challenger, dataset, job_id);
    fflush(stdout);
    int code = ctl_job_wait_loop(c, job_id, timeout_ms, true);
    if (code != CTL_EXIT_OK)
        return ctl_errorf(c, "eval job %s did not succeed (`flywheelctl job show %s`); no "
                             "decision was made",
                          job_id, job_id),
               -1;
    return 0;
}

static void s_print_decision(const json_t *d) {
    char a[32], b[32], delta[32], lo[32], hi[32];
    const json_t *ci = json_object_get(d, "ci");
    const char *champ = ctl_str(d, "champion");
    printf("%s: challenger %s vs champion %s on %s\n", ctl_str(d, "name"),
           ctl_str(d, "challenger"), champ[0] ? champ : "(none)", ctl_str(d, "dataset"));
    printf("  metric       %s (min delta %s)\n", ctl_str(d, "metric"),
           ctl_num(json_object_get(d, "min_delta"), a, sizeof a));
    printf("  champion     %s\n", ctl_num(json_object_get(d, "champion_value"), a, sizeof a));
    printf("  challenger   %s\n", ctl_num(json_object_get(d, "challenger_value"), b, sizeof b));
    printf("  delta        %s  95%% CI [%s, %s]  %s\n",
           ctl_num(json_object_get(d, "delta"), delta, sizeof delta),
           ctl_num(json_array_get(ci, 0), lo, sizeof lo), ctl_num(json_array_get(ci, 1), hi, sizeof hi),
           json_is_true(json_object_get(d, "significant")) ? "significant" : "not significant");
    if (json_is_true(json_object_get(d, "promoted")))
        printf("promoted: %s@champion -> %s (%s)\n", ctl_str(d, "name"), ctl_str(d, "challenger"),
               ctl_str(d, "reason"));
    else
        printf("not promoted: %s\n", ctl_str(d, "reason"));
}

static int s_cmd_promote(ctl_t *c) {
    const char *name = c->argv[0];
    const char *challenger = ctl_flag(c, "challenger"), *metric = ctl_flag(c, "metric");
    const char *md = ctl_flag(c, "min-delta"), *dataset = ctl_flag(c, "dataset");
    const char *ss = ctl_flag(c, "shards"), *ts = ctl_flag(c, "timeout");
    if (!challenger || !metric)
        return (ctl_errorf(c, "model promote: --challenger REF and --metric M are required"),
                CTL_EXIT_USAGE);
    if (strpbrk(name, ":@"))
        return (ctl_errorf(c, "model promote: '%s': give the model NAME (the champion is "
                              "NAME@champion)", name),
                CTL_EXIT_USAGE);
    double min_delta = 0;
    long shards = 1;
    int64_t timeout_ms = -1;
    char *end;
    if (md) {
        errno = 0;
        min_delta = strtod(md, &end);
        if (end == md || *end || errno || !(min_delta >= 0))
            return (ctl_errorf(c, "--min-delta '%s': expected a number >= 0", md),
                    CTL_EXIT_USAGE);
    }
    if (ss) {
        errno = 0;
        shards = strtol(ss, &end, 10);
        if (end == ss || *end || errno || shards < 1 || shards > 1024)
            return (ctl_errorf(c, "--shards '%s': expected 1 to 1024", ss), CTL_EXIT_USAGE);
    }
    if (ts && (ctl_parse_duration(ts, &timeout_ms) < 0 || timeout_ms <= 0))
        return (ctl_errorf(c, "--timeout '%s': expected a duration (90s, 10m)", ts),
                CTL_EXIT_USAGE);
    if (ctl_connect(c) < 0) return CTL_EXIT_ERROR;
    json_t *doc = NULL;
    int rc = s_promote_call(c, name, challenger, metric, min_delta, dataset, &doc);
    if (rc == FW_ENOTFOUND && strstr(fw_err_detail(), "no eval")) {
        if (!dataset)
            return ctl_errorf(c, "%s: pass --dataset D to evaluate both on D first (an eval "
                                 "job of %s@champion and %s)",
                              fw_err_detail(), name, challenger);
        if (c->output == CTL_OUT_TABLE) printf("%s\n", fw_err_detail());
        if (s_run_eval(c, name, challenger, dataset, shards, timeout_ms) < 0)
            return CTL_EXIT_ERROR;
        rc = s_promote_call(c, name, challenger, metric, min_delta, dataset, &doc);
    }
    if (rc < 0)
        return ctl_errorf(c, "model promote %s: %s (%s)", name, fw_err_detail(), fw_errname(rc));
    if (c->output == CTL_OUT_JSON)
        ctl_print_json(doc);
    else
        s_print_decision(doc);
    json_decref(doc);
    return CTL_EXIT_OK;
}

static const ctl_flag_def s_register_flags[] = {
    {"name", 0, "N", "Model name (required), 1-128 of [A-Za-z0-9._-]."},
    {"parent", 0, "REF", "The version it derives from: NAME, NAME:VERSION or NAME@ALIAS."},
    {"dataset", 0, "NAME@V", "A dataset version it was trained on (repeat, or comma-separate)."},
    {"job", 0, "ID", "The job that produced it."},
    {"hparams", 0, "JSON", "Hyperparameters, a JSON object."},
    {"code-version", 0, "V", "Version of the code that made it (default: this build's)."},
    {NULL, 0, NULL, NULL}};

static const ctl_flag_def s_promote_flags[] = {
    {"challenger", 0, "REF", "The challenger version (required): NAME:VERSION or NAME@ALIAS."},
    {"metric", 0, "M",
     "loss, perplexity (lower is better), exact_match, accuracy, accuracy_norm (higher is "
     "better). Required."},
    {"min-delta", 0, "D", "Smallest improvement of the point estimate that counts (default 0)."},
    {"dataset", 0, "D",
     "Eval dataset (NAME or NAME@VERSION); default: the newest both were evaluated on. "
     "Required when an eval must be run first."},
    {"shards", 0, "S", "Shards per model of the eval job, when one is needed (default 1)."},
    {"timeout", 0, "DURATION", "How long to wait for that eval job (default: no limit)."},
    {NULL, 0, NULL, NULL}};

static const ctl_flag_def s_alias_flags[] = {
    {"protect", 0, NULL, "set: protect the alias; only admin tokens may move or remove it then."},
    {NULL, 0, NULL, NULL}};

const ctl_cmd_def ctl_model_cmds[] = {
    {"model", "register", "DIR", 1, 1, "Upload a model directory and register it as a new version.",
     "Every file of DIR and the tree manifest naming them (docs/artifacts.md) are uploaded to "
     "the leader's artifact store, then registered as NAME:<next version> with its lineage "
     "(parent, datasets, job, hyperparameters, code version). Identical content returns the "
     "existing version.",
     s_register_flags, s_cmd_register},
    {"model", "list", NULL, 0, 0, "Models: the latest version of each, with its aliases.", NULL,
     NULL, s_cmd_list},
    {"model", "show", "REF", 1, 1, "One model version: NAME (latest), NAME:VERSION or NAME@ALIAS.",
     NULL, NULL, s_cmd_show},
    {"model", "versions", "NAME", 1, 1, "Every version of a model.", NULL, NULL, s_cmd_versions},
    {"model", "download", "REF DIR", 2, 2, "Download a model version into DIR, verified.",
     "Every file is checked against its digest; DIR (which must not exist) appears complete or "
     "not at all.",
     NULL, s_cmd_download},
    {"model", "alias", "set|rm NAME@ALIAS [VERSION]", 2, 3,
     "Move an alias to a version (set) or remove it (rm).",
     "Aliases move atomically (etcd txn) and every move is in the audit log, with refused "
     "attempts. A protected alias (--protect) moves only with an admin token. Concurrent moves "
     "of one alias are applied one after the other: the last one wins.",
     s_alias_flags, s_cmd_alias},
    {"model", "promote", "NAME", 1, 1,
     "Make the challenger NAME@champion if its eval is significantly better.",
     "Compares the eval records of NAME@champion and the challenger on one dataset (paired "
     "bootstrap of challenger - champion, docs/eval.md#promotion): promoted iff the 95% CI "
     "excludes 0 in the metric's better direction AND the point improvement is >= "
     "--min-delta. With no champion yet the challenger becomes champion. When an eval is "
     "missing, an eval job of both on --dataset runs first. The decision and its numbers are "
     "recorded in the registry either way; exit 0 whether promoted or not.",
     s_promote_flags, s_cmd_promote},
    {NULL, NULL, NULL, 0, 0, NULL, NULL, NULL, NULL}};
