/* coord_data.c - blobs and dataset versions on the client endpoint.
 *
 * Theory of operation
 * -------------------
 * Datasets are ingested on the client (`flywheelctl dataset add` runs
 * fw_dataset_ingest locally), so the coordinator never parses user data: it
 * stores bytes and records versions. Two halves:
 *
 * Blobs. The leader holds the artifact store (coordinator.store_dir, a
 * directory every coordinator shares, so a new leader serves what the old
 * one stored). BLOB_UPLOAD_BEGIN opens an fw_store upload under a random
 * id; BLOB_UPLOAD_CHUNKs must arrive in order at exactly the offset received
 * so far (fw_store_upload_chunk checks it; a gap or overlap ends the upload
 * with FW_EPROTO); BLOB_UPLOAD_COMMIT publishes the blob only when the
 * client's digest matches the bytes (FW_ECORRUPT otherwise, nothing stored).
 * An upload belongs to the token name that began it (another name gets
 * FW_EPERM) and is dropped after coordinator.upload_timeout without a
 * chunk. The sweep runs whenever a blob request arrives: an idle leader
 * keeps at most max_uploads staging files until the next request, and
 * fw_store_dir_sweep_tmp cleans debris of crashed leaders. Uploads live in
 * the leader's memory only: after a failover the client starts over.
 * BLOB_READ returns unverified ranges; the client hashes the whole blob.
 *
 * Dataset versions. DATASET_REGISTER(name, digest, report, parents,
 * lineage) checks the blob is in the store, reads P/datasets/<name>/ and
 * either returns the version that already has this digest (idempotent
 * re-add) or writes version max+1 in one txn fenced on the leader's epoch,
 * with create_revision(key) == 0 (a version is never overwritten) and an
 * audit entry. Registration is rare and small, so it runs synchronously on
 * the loop (one range and one txn, bounded by etcd.timeout) instead of
 * through coord_store's batches; its reply therefore leaves after the
 * commit, like every other write's. LIST and GET read etcd directly.
 *
 * Ingest on the leader (DATASET_REGISTER with ingest=true). Thin clients
 * (the Python client) cannot run fw_dataset themselves, so they upload the
 * user's RAW bytes as a blob and ask the leader to ingest it: the leader
 * runs fw_dataset_ingest on that blob with the defaults `flywheelctl
 * dataset add` uses (no token count: the coordinator has no tokenizer),
 * writes the canonical JSONL into the store and registers THAT digest with
 * the report, exactly as if the client had ingested it. The raw digest is
 * kept in the version's lineage ({"ingest": {"raw": ...}}). A file that
 * fails ingestion (too many rejects, nothing left, bad UTF-8) is refused
 * with the library's message plus the first rejected lines, and nothing is
 * registered; the raw blob stays (it is content-addressed, harmless). The
 * ingest runs on the loop like the rest of registration: uploads are
 * bounded by coordinator.upload_max_bytes, and ingestion reads a file once.
 *
 * Keys (docs/etcd-layout.md): P/datasets/<name>/<version, 8 digits>. */
#include "coord.h"
#include "coord_records.h"

#include "fw_dataset.h"
#include "fw_err.h"
#include "fw_log.h"
#include "fw_store.h"
#include "fw_time.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define S_CHUNK_DEFAULT (1u << 20) /* BLOB_READ without max_bytes */
#define S_CHUNK_MAX     (4u << 20) /* the BIN bound of BLOB_DATA.data */
#define S_NAME_MAX      128
/* Largest existing blob BLOB_UPLOAD_BEGIN re-hashes before skipping an
 * upload: ~0.3 s of reading on the loop, which nothing else may block longer. */
#define S_VERIFY_MAX   (256ull << 20)
#define S_VERSIONS_MAX 100000 /* versions of one dataset we are willing to scan */
#define S_PARENTS_MAX  16     /* parents of one version */

typedef struct {
    char id[33];
    char owner[129];
    fw_store_upload *u;
    uint64_t size;
    int64_t last_mono;
} s_upload;

struct coord_data {
    fw_store *store;
    zhashx_t *uploads; /* id -> s_upload (owned) */
};

bool coord_data_serves(int id) {
    switch (id) {
    case FW_MSG_BLOB_UPLOAD_BEGIN:
    case FW_MSG_BLOB_UPLOAD_CHUNK:
    case FW_MSG_BLOB_UPLOAD_COMMIT:
    case FW_MSG_BLOB_READ:
    case FW_MSG_DATASET_REGISTER:
    case FW_MSG_DATASET_LIST:
    case FW_MSG_DATASET_GET:
        return true;
    default:
        return false;
    }
}

/* ------------------------------------------------------------ replies */

/* Reply `id` with doc (consumed) in its "doc" field, plus "existing" when
 * existing >= 0. */
void coord_client_reply_doc(coord_t *c, zframe_t *identity, const fw_msg_t *req, int id,
                            json_t *doc, int existing) {
    char *txt = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    fw_msg_t *r = txt ? fw_msg_new_reply(req, id) : NULL;
    int rc = r ? fw_msg_set_str(r, "doc", txt) : FW_ENOMEM;
    free(txt);
    if (rc == 0 && existing >= 0) rc = fw_msg_set_bool(r, "existing", existing != 0);
    if (rc < 0) {
        fw_msg_destroy(&r);
        coord_client_error(c, identity, req, rc, 0, "cannot build the reply: %s", fw_err_detail());
        return;
    }
    coord_client_send(c, identity, r);
    fw_msg_destroy(&r);
}

/* ------------------------------------------------------------- state */

static void s_upload_free(void **item) {
    s_upload *up = *item;
    if (!up) return;
    fw_store_upload_abort(&up->u);
    free(up);
    *item = NULL;
}

/* The module's state and the store, opened on first use. NULL after
 * replying with the error. */
static coord_data_t *s_data(coord_t *c, zframe_t *identity, const fw_msg_t *m) {
    if (!c->o.store_dir || !c->o.store_dir[0]) {
        coord_client_error(c, identity, m, FW_EUNSUPPORTED, 0,
                "this coordinator has no artifact store (set coordinator.store_dir)");
        return NULL;
    }
    if (!c->data) {
        coord_data_t *d = calloc(1, sizeof *d);
        if (!d || !(d->uploads = zhashx_new())) {
            free(d);
            coord_client_error(c, identity, m, FW_ENOMEM, 0, "out of memory");
            return NULL;
        }
        zhashx_set_destructor(d->uploads, s_upload_free);
        c->data = d;
    }
    if (!c->data->store) {
        fw_store_opts so = {.max_blob_bytes = (uint64_t)c->o.upload_max_bytes};
        c->data->store = fw_store_open_dir(c->o.store_dir, &so);
        if (!c->data->store) {
            coord_client_error(c, identity, m, FW_EIO, 1000, "artifact store %s: %s", c->o.store_dir,
                    fw_err_detail());
            return NULL;
        }
        /* Staging files a crashed leader left behind, older than any live upload. */
        int removed = 0;
        fw_store_dir_sweep_tmp(c->o.store_dir, (int)(c->o.upload_timeout_ms / 1000) * 2 + 60,
                               &removed);
        fw_info("event=store-open dir=%s swept=%d", c->o.store_dir, removed);
    }
    return c->data;
}

/* Drop uploads idle for longer than upload_timeout. */
static void s_sweep(coord_t *c, coord_data_t *d) {
    int64_t now = fw_mono_ms();
    zlistx_t *keys = zhashx_keys(d->uploads);
    if (!keys) return;
    for (const char *k = zlistx_first(keys); k; k = zlistx_next(keys)) {
        s_upload *up = zhashx_lookup(d->uploads, k);
        if (up && now - up->last_mono > c->o.upload_timeout_ms) {
            fw_info("event=upload-expired id=%s owner=%s received=%" PRIu64 " size=%" PRIu64,
                    up->id, up->owner, fw_store_upload_received(up->u), up->size);
            zhashx_delete(d->uploads, k);
        }
    }
    zlistx_destroy(&keys);
}

/* The caller's upload, or NULL after replying with the error. */
static s_upload *s_find_upload(coord_t *c, coord_data_t *d, zframe_t *identity, const fw_msg_t *m,
                               const coord_token_t *tok, const char *id) {
    s_upload *up = zhashx_lookup(d->uploads, id);
    if (!up) {
        coord_client_error(c, identity, m, FW_ENOTFOUND, 0,
                "upload %.64s: unknown (it expired after %lld ms idle, failed, or the leader "
                "changed; start the upload again)",
                id, (long long)c->o.upload_timeout_ms);
        return NULL;
    }
    if (strcmp(up->owner, tok->name) != 0) {
        coord_client_error(c, identity, m, FW_EPERM, 0, "upload %s belongs to %s, not %s", id, up->owner,
                tok->name);
        return NULL;
    }
    return up;
}

static void s_upload_reply(coord_t *c, zframe_t *identity, const fw_msg_t *m, const char *id,
                           uint64_t received, const char *digest, bool existing) {
    fw_msg_t *r = fw_msg_new_reply(m, FW_MSG_BLOB_UPLOAD_REPLY);
    if (!r) return;
    fw_msg_set_str_f(r, FW_F_BLOB_UPLOAD_REPLY_upload_id, id);
    fw_msg_set_uint_f(r, FW_F_BLOB_UPLOAD_REPLY_received, received);
    if (digest) {
        fw_msg_set_bool_f(r, FW_F_BLOB_UPLOAD_REPLY_complete, true);
        fw_msg_set_str_f(r, FW_F_BLOB_UPLOAD_REPLY_digest, digest);
    }
    if (existing) fw_msg_set_bool_f(r, FW_F_BLOB_UPLOAD_REPLY_existing, true);
    coord_client_send(c, identity, r);
    fw_msg_destroy(&r);
}

/* ------------------------------------------------------------- blobs */

static void s_upload_begin(coord_t *c, coord_data_t *d, zframe_t *identity, const fw_msg_t *m,
                           const coord_token_t *tok) {
    uint64_t size = fw_msg_get_uint_f(m, FW_F_BLOB_UPLOAD_BEGIN_size);
    const char *want = fw_msg_get_str_f(m, FW_F_BLOB_UPLOAD_BEGIN_digest);
    if (size > (uint64_t)c->o.upload_max_bytes) {
        coord_client_error(c, identity, m, FW_ETOOBIG, 0,
                "blob of %" PRIu64 " bytes is over coordinator.upload_max_bytes (%lld)", size,
                (long long)c->o.upload_max_bytes);
        return;
    }
    if (want && want[0]) {
        if (!fw_digest_valid(want)) {
            coord_client_error(c, identity, m, FW_EINVAL, 0, "digest '%.80s': expected sha256:<64 hex>", want);
            return;
        }
        fw_store_stat st;
        if (fw_store_stat_blob(d->store, want, &st) == 0 && st.size == size) {
            /* Content addressing: the bytes are there already. Re-hash them
             * first when that is cheap, so re-adding a dataset repairs a
             * corrupt store copy instead of vouching for it. */
            int vrc = size <= S_VERIFY_MAX ? fw_store_verify(d->store, want) : 0;
            if (vrc == 0) {
                s_upload_reply(c, identity, m, "", size, want, true);
                return;
            }
            fw_warn("event=blob-corrupt digest=%s detail=\"%s\" action=quarantine", want,
                    fw_err_detail());
            if (fw_store_quarantine(d->store, want) < 0) fw_store_remove(d->store, want);
        }
    }
    if (zhashx_size(d->uploads) >= (size_t)c->o.max_uploads) {
        coord_client_error(c, identity, m, FW_EUNAVAIL, 1000,
                "%zu uploads in progress (coordinator.max_uploads); retry later",
                zhashx_size(d->uploads));
        return;
    }
    s_upload *up = calloc(1, sizeof *up);
    unsigned char rnd[16];
    if (!up || getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        free(up);
        coord_client_error(c, identity, m, FW_EIO, 0, "cannot draw an upload id");
        return;
    }
    for (size_t i = 0; i < sizeof rnd; i++) snprintf(up->id + 2 * i, 3, "%02x", rnd[i]);
    snprintf(up->owner, sizeof up->owner, "%s", tok->name);
    up->size = size;
    up->last_mono = fw_mono_ms();
    /* total_size 0 means "undeclared" to fw_store; an empty blob needs no
     * bound, commit checks the digest anyway. */
    up->u = fw_store_upload_begin(d->store, size);
    if (!up->u) {
        coord_client_error(c, identity, m, FW_EIO, 0, "cannot start an upload: %s", fw_err_detail());
        free(up);
        return;
    }
    zhashx_insert(d->uploads, up->id, up);
    fw_info("event=upload-begin id=%s owner=%s size=%" PRIu64, up->id, up->owner, size);
    s_upload_reply(c, identity, m, up->id, 0, NULL, false);
}

static void s_upload_chunk(coord_t *c, coord_data_t *d, zframe_t *identity, const fw_msg_t *m,
                           const coord_token_t *tok) {
    const char *id = fw_msg_get_str_f(m, FW_F_BLOB_UPLOAD_CHUNK_upload_id);
    s_upload *up = s_find_upload(c, d, identity, m, tok, id);
    if (!up) return;
    uint64_t off = fw_msg_get_uint_f(m, FW_F_BLOB_UPLOAD_CHUNK_offset);
    size_t len = 0;
    const void *data = fw_msg_get_bin_f(m, FW_F_BLOB_UPLOAD_CHUNK_data, &len);
    uint64_t have = fw_store_upload_received(up->u);
    int rc = fw_store_upload_chunk(up->u, off, data, len);
    if (rc < 0) {
        coord_client_error(c, identity, m, rc, 0,
                "upload %s: chunk of %zu bytes at offset %" PRIu64 " refused (%" PRIu64
                " of %" PRIu64 " bytes received): %s; the upload is abandoned",
                id, len, off, have, up->size, fw_err_detail());
        zhashx_delete(d->uploads, id);
        return;
    }
    up->last_mono = fw_mono_ms();
    s_upload_reply(c, identity, m, id, fw_store_upload_received(up->u), NULL, false);
}

static void s_upload_commit(coord_t *c, coord_data_t *d, zframe_t *identity, const fw_msg_t *m,
                            const coord_token_t *tok) {
    const char *id = fw_msg_get_str_f(m, FW_F_BLOB_UPLOAD_COMMIT_upload_id);
    const char *want = fw_msg_get_str_f(m, FW_F_BLOB_UPLOAD_COMMIT_digest);
    s_upload *up = s_find_upload(c, d, identity, m, tok, id);
    if (!up) return;
    uint64_t got = fw_store_upload_received(up->u);
    if (got != up->size) {
        coord_client_error(c, identity, m, FW_EPROTO, 0,
                "upload %s: commit after %" PRIu64 " of %" PRIu64 " bytes; send the rest first", id,
                got, up->size);
        return; /* still usable: the client may send the missing chunks */
    }
    int rc = fw_store_upload_commit(&up->u, want);
    if (rc < 0) {
        coord_client_error(c, identity, m, rc, 0, "upload %s: %s; nothing was stored", id, fw_err_detail());
        zhashx_delete(d->uploads, id);
        return;
    }
    fw_info("event=upload-commit id=%s owner=%s digest=%s size=%" PRIu64, id, up->owner, want, got);
    char digest[FW_DIGEST_STR_SIZE];
    snprintf(digest, sizeof digest, "%s", want);
    zhashx_delete(d->uploads, id);
    s_upload_reply(c, identity, m, "", got, digest, false);
}

static void s_blob_read(coord_t *c, coord_data_t *d, zframe_t *identity, const fw_msg_t *m) {
    const char *digest = fw_msg_get_str_f(m, FW_F_BLOB_READ_digest);
    uint64_t off = fw_msg_get_uint_f(m, FW_F_BLOB_READ_offset);
    uint64_t max = fw_msg_has_f(m, FW_F_BLOB_READ_max_bytes)
                       ? fw_msg_get_uint_f(m, FW_F_BLOB_READ_max_bytes)
                       : S_CHUNK_DEFAULT;
    if (max == 0 || max > S_CHUNK_MAX) max = S_CHUNK_DEFAULT;
    char *buf = malloc(max);
    if (!buf) {
        coord_client_error(c, identity, m, FW_ENOMEM, 0, "out of memory");
        return;
    }
    size_t got = 0;
    uint64_t size = 0;
    int rc = fw_store_read_chunk(d->store, digest, off, buf, max, &got, &size);
    if (rc < 0) {
        coord_client_error(c, identity, m, rc, 0, "blob %.80s: %s", digest, fw_err_detail());
        free(buf);
        return;
    }
    fw_msg_t *r = fw_msg_new_reply(m, FW_MSG_BLOB_DATA);
    if (r) {
        fw_msg_set_str_f(r, FW_F_BLOB_DATA_digest, digest);
        fw_msg_set_uint_f(r, FW_F_BLOB_DATA_offset, off);
        fw_msg_set_bin_f(r, FW_F_BLOB_DATA_data, buf, got);
        fw_msg_set_uint_f(r, FW_F_BLOB_DATA_size, size);
        if (off + got >= size) fw_msg_set_bool_f(r, FW_F_BLOB_DATA_eof, true);
        coord_client_send(c, identity, r);
        fw_msg_destroy(&r);
    }
    free(buf);
}

/* ---------------------------------------------------------- datasets */

static bool s_name_ok(const char *n) {
    size_t len = strlen(n);
    return len > 0 && len <= S_NAME_MAX &&
           strspn(n, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == len &&
           n[0] != '.';
}

static void s_key_prefix(coord_t *c, const char *name, char *buf, size_t size) {
    if (name)
        snprintf(buf, size, "%s/datasets/%s/", c->o.etcd_prefix, name);
    else
        snprintf(buf, size, "%s/datasets/", c->o.etcd_prefix);
}

typedef struct {
    json_t *arr;      /* records (owned) */
    bool latest_only; /* keep the last record of each name */
    int bad;
} s_scan;

static int s_scan_page(const fw_etcd_kv *kvs, size_t n, void *arg) {
    s_scan *sc = arg;
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_loads(kvs[i].value, 0, NULL);
        if (!json_is_object(o) || json_integer_value(json_object_get(o, "schema")) > COORD_SCHEMA) {
            /* A record we cannot read is skipped, not fatal: one bad key must
             * not hide every dataset. The log names it. */
            fw_warn("event=dataset-record-bad key=%s", kvs[i].key);
            json_decref(o);
            sc->bad++;
            continue;
        }
        size_t na = json_array_size(sc->arr);
        json_t *prev = na ? json_array_get(sc->arr, na - 1) : NULL;
        if (sc->latest_only && prev &&
            json_equal(json_object_get(prev, "name"), json_object_get(o, "name")))
            json_array_set_new(sc->arr, na - 1, o);
        else
            json_array_append_new(sc->arr, o);
    }
    return json_array_size(sc->arr) > S_VERSIONS_MAX ? FW_ETOOBIG : 0;
}

/* Records under P/datasets/[name/], in key order (name, then version). */
static int s_read(coord_t *c, const char *name, bool latest_only, json_t **out) {
    char key[COORD_KEY_MAX];
    s_key_prefix(c, name, key, sizeof key);
    s_scan sc = {.arr = json_array(), .latest_only = latest_only};
    if (!sc.arr) return FW_ENOMEM;
    int rc = fw_etcd_range_pages(c->etcd, key, 500, 0, s_scan_page, &sc, NULL);
    if (rc < 0) {
        json_decref(sc.arr);
        return rc;
    }
    *out = sc.arr;
    return 0;
}

static void s_dataset_list(coord_t *c, zframe_t *identity, const fw_msg_t *m) {
    const char *name = fw_msg_get_str_f(m, FW_F_DATASET_LIST_name);
    if (name && !name[0]) name = NULL;
    if (name && !s_name_ok(name)) {
        coord_client_error(c, identity, m, FW_EINVAL, 0, "dataset name '%.128s': 1-128 of [A-Za-z0-9._-]",
                name);
        return;
    }
    json_t *arr = NULL;
    int rc = s_read(c, name, !name, &arr);
    if (rc < 0) {
        coord_client_error(c, identity, m, rc, 1000, "reading datasets from etcd: %s", fw_err_detail());
        return;
    }
    coord_client_reply_doc(c, identity, m, FW_MSG_DATASET_LIST_REPLY, arr, -1);
}

static void s_dataset_get(coord_t *c, zframe_t *identity, const fw_msg_t *m) {
    const char *name = fw_msg_get_str_f(m, FW_F_DATASET_GET_name);
    uint64_t ver = fw_msg_get_uint_f(m, FW_F_DATASET_GET_version);
    if (!s_name_ok(name)) {
        coord_client_error(c, identity, m, FW_EINVAL, 0,
                           "dataset name '%.128s': 1-128 of [A-Za-z0-9._-]", name);
        return;
    }
    char ref[S_NAME_MAX + 32], canon[S_NAME_MAX + 32];
    if (ver)
        snprintf(ref, sizeof ref, "%s@%" PRIu64, name, ver);
    else
        snprintf(ref, sizeof ref, "%s", name);
    json_t *rec = NULL;
    int rc = coord_datasets_resolve(c, ref, &rec, canon, sizeof canon);
    if (rc < 0) {
        coord_client_error(c, identity, m, rc, rc == FW_ENOTFOUND || rc == FW_EINVAL ? 0 : 1000,
                           "%s", fw_err_detail());
        return;
    }
    coord_client_reply_doc(c, identity, m, FW_MSG_DATASET_GET_REPLY, rec, -1);
}

int coord_datasets_resolve(coord_t *c, const char *ref, json_t **out, char *canon, size_t size) {
    char name[S_NAME_MAX + 1];
    uint64_t ver = 0;
    const char *at = strchr(ref ? ref : "", '@');
    size_t nlen = at ? (size_t)(at - ref) : strlen(ref ? ref : "");
    if (nlen == 0 || nlen > S_NAME_MAX) goto bad;
    snprintf(name, sizeof name, "%.*s", (int)nlen, ref);
    if (!s_name_ok(name)) goto bad;
    if (at) {
        char *end;
        ver = strtoull(at + 1, &end, 10);
        if (at[1] < '1' || at[1] > '9' || *end || ver == 0) goto bad;
    }
    json_t *arr = NULL;
    int rc = s_read(c, name, false, &arr);
    if (rc < 0) return fw_err_set(rc, "reading dataset %s from etcd: %s", name, fw_err_detail());
    json_t *found = NULL;
    size_t n = json_array_size(arr);
    if (ver == 0 && n) found = json_array_get(arr, n - 1);
    for (size_t i = 0; ver && i < n; i++) {
        json_t *o = json_array_get(arr, i);
        if ((uint64_t)json_integer_value(json_object_get(o, "version")) == ver) found = o;
    }
    if (!found) {
        json_decref(arr);
        if (ver)
            return fw_err_set(FW_ENOTFOUND, "dataset %s@%" PRIu64 ": not found%s", name, ver,
                              n ? "" : " (no such dataset)");
        return fw_err_set(FW_ENOTFOUND, "dataset %s: not found", name);
    }
    snprintf(canon, size, "%s@%" JSON_INTEGER_FORMAT, name,
             json_integer_value(json_object_get(found, "version")));
    *out = json_incref(found);
    json_decref(arr);
    return 0;
bad:
    return fw_err_set(FW_EINVAL,
                      "dataset reference '%.200s': expected NAME or NAME@VERSION (names 1-128 of "
                      "[A-Za-z0-9._-])",
                      ref ? ref : "");
}

/* "NAME@VERSION" with a valid name and a version >= 1. */
static bool s_ref_ok(const char *ref) {
    const char *at = strrchr(ref, '@');
    if (!at || at == ref || (size_t)(at - ref) > S_NAME_MAX) return false;
    char name[S_NAME_MAX + 1];
    snprintf(name, sizeof name, "%.*s", (int)(at - ref), ref);
    char *end;
    unsigned long long v = strtoull(at + 1, &end, 10);
    return s_name_ok(name) && at[1] >= '1' && at[1] <= '9' && *end == '\0' && v > 0;
}

/* Ingest the raw blob `raw` into canonical JSONL, store it, and return its
 * digest in out_digest and the report (JSON object, new reference) in
 * *report. 0, or a negative fw_err with the detail set: the library's
 * message followed by the first rejected lines, so the client can show
 * the user what to fix. */
static int s_ingest(coord_t *c, coord_data_t *d, const char *raw, json_t **report,
                    char *out_digest) {
    char dir[4096], in[4200], out[4200];
    const char *t = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/fw-ingest-XXXXXX", t && t[0] ? t : "/tmp");
    if (!mkdtemp(dir)) return fw_err_set(FW_EIO, "ingest: mkdtemp %s: %s", dir, strerror(errno));
    snprintf(out, sizeof out, "%s/data.jsonl", dir);
    /* The directory store hands out its file; any other backend: a copy,
     * verified against the digest on the way. */
    bool copied = false;
    int rc = fw_store_local_path(d->store, raw, in, sizeof in);
    if (rc == FW_EUNSUPPORTED) {
        snprintf(in, sizeof in, "%s/raw", dir);
        rc = fw_store_get_file(d->store, raw, in);
        copied = true;
    }
    if (rc < 0) {
        rc = fw_err_set(rc, "ingest: raw blob %s: %s", raw, fw_err_detail());
        goto done;
    }
    fw_dataset_opts o;
    fw_dataset_opts_init(&o); /* flywheelctl dataset add's defaults, --max-bad 0.01 */
    fw_dataset_report rep = {0};
    rc = fw_dataset_ingest(in, &o, out, &rep);
    if (rc < 0) {
        /* The library names our staging path and only the first reject; the
         * client wants the upload and the first few lines (the ERROR
         * message holds 1 KiB, so each reason is cut short). */
        char detail[512], msg[1024];
        const char *dt = fw_err_detail();
        size_t plen = strlen("dataset ") + strlen(in) + 2;
        if (strncmp(dt, "dataset ", 8) == 0 && strncmp(dt + 8, in, strlen(in)) == 0 &&
            strlen(dt) >= plen)
            dt += plen;
        snprintf(detail, sizeof detail, "%s", dt);
        char *first = strstr(detail, "; first: ");
        if (first && rep.nrejects) *first = '\0';
        int n = snprintf(msg, sizeof msg, "dataset upload %.23s...: %s", raw, detail);
        for (size_t i = 0; i < rep.nrejects && i < 5 && n > 0 && (size_t)n < sizeof msg; i++)
            n += snprintf(msg + n, sizeof msg - (size_t)n, "%sline %zu: %.100s", i ? "; " : " (",
                          rep.rejects[i].line, rep.rejects[i].reason);
        if (rep.nrejects && n > 0 && (size_t)n < sizeof msg)
            snprintf(msg + n, sizeof msg - (size_t)n, "%s)", rep.rejected > 5 ? "; ..." : "");
        fw_dataset_report_free(&rep);
        rc = fw_err_set(rc, "%s", msg);
        goto done;
    }
    char *rjson = fw_dataset_report_json(&rep);
    fw_dataset_report_free(&rep);
    *report = rjson ? json_loads(rjson, 0, NULL) : NULL;
    free(rjson);
    if (!*report) {
        rc = fw_err_set(FW_ENOMEM, "ingest: out of memory");
        goto done;
    }
    rc = fw_store_put_file(d->store, out, out_digest);
    if (rc < 0) {
        rc = fw_err_set(rc, "ingest: storing the canonical JSONL: %s", fw_err_detail());
        json_decref(*report);
        *report = NULL;
        goto done;
    }
    fw_info("event=dataset-ingested raw=%s digest=%s records=%" JSON_INTEGER_FORMAT
            " rejected=%" JSON_INTEGER_FORMAT " coord=%s",
            raw, out_digest, json_integer_value(json_object_get(*report, "records_out")),
            json_integer_value(json_object_get(*report, "rejected")), c->o.name);
done:
    unlink(out);
    if (copied) unlink(in);
    rmdir(dir);
    return rc;
}

/* Records (non-empty lines) of a canonical JSONL blob, reading it whole
 * (which also verifies its digest). */
static int s_count_lines(fw_store *st, const char *digest, uint64_t *out) {
    fw_store_reader *r = fw_store_reader_open(st, digest);
    if (!r) return fw_err_set(FW_EIO, "%s", fw_err_detail());
    char buf[1 << 16];
    uint64_t n = 0;
    bool open_line = false;
    long long got;
    while ((got = fw_store_reader_read(r, buf, sizeof buf)) > 0) {
        for (long long i = 0; i < got; i++) {
            if (buf[i] == '\n') {
                if (open_line) n++;
                open_line = false;
            } else {
                open_line = true;
            }
        }
    }
    fw_store_reader_close(&r);
    if (got < 0) return (int)got;
    *out = n + (open_line ? 1 : 0);
    return 0;
}

static void s_dataset_register(coord_t *c, coord_data_t *d, zframe_t *identity, const fw_msg_t *m,
                               const coord_token_t *tok) {
    const char *name = fw_msg_get_str_f(m, FW_F_DATASET_REGISTER_name);
    const char *digest = fw_msg_get_str_f(m, FW_F_DATASET_REGISTER_digest);
    const char *rtext = fw_msg_get_str_f(m, FW_F_DATASET_REGISTER_report);
    const char *ltext = fw_msg_get_str_f(m, FW_F_DATASET_REGISTER_lineage);
    if (!s_name_ok(name)) {
        coord_client_error(c, identity, m, FW_EINVAL, 0,
                "dataset name '%.128s': 1-128 of [A-Za-z0-9._-], not starting with '.'", name);
        return;
    }
    if (!fw_digest_valid(digest)) {
        coord_client_error(c, identity, m, FW_EINVAL, 0, "digest '%.80s': expected sha256:<64 hex>", digest);
        return;
    }
    bool ingest = fw_msg_has_f(m, FW_F_DATASET_REGISTER_ingest) &&
                  fw_msg_get_bool_f(m, FW_F_DATASET_REGISTER_ingest);
    /* With ingest the client's report is ignored (the leader writes it). */
    json_t *report = ingest ? json_object() : json_loads(rtext, 0, NULL);
    json_t *lineage = ltext && ltext[0] ? json_loads(ltext, 0, NULL) : json_object();
    json_t *parents = json_array();
    json_t *rec = NULL, *existing = NULL, *all = NULL;
    char canon[FW_DIGEST_STR_SIZE];
    if (!json_is_object(report)) {
        coord_client_error(c, identity, m, FW_EINVAL, 0, "report: expected a JSON object");
        goto done;
    }
    if (!json_is_object(lineage)) {
        coord_client_error(c, identity, m, FW_EINVAL, 0, "lineage: expected a JSON object");
        goto done;
    }
    const char *ptext = fw_msg_get_str_f(m, FW_F_DATASET_REGISTER_parents);
    json_t *pl = ptext && ptext[0] ? json_loads(ptext, 0, NULL) : json_array();
    if (!json_is_array(pl) || json_array_size(pl) > S_PARENTS_MAX) {
        coord_client_error(c, identity, m, FW_EINVAL, 0,
                "parents: expected a JSON array of at most %d "
                "NAME@VERSION strings",
                S_PARENTS_MAX);
        json_decref(pl);
        goto done;
    }
    for (size_t i = 0; i < json_array_size(pl); i++) {
        const char *ref = json_string_value(json_array_get(pl, i));
        if (!ref || !s_ref_ok(ref)) {
            coord_client_error(c, identity, m, FW_EINVAL, 0, "parents[%zu] '%.160s': expected NAME@VERSION", i,
                    ref ? ref : "");
            json_decref(pl);
            goto done;
        }
        json_array_append_new(parents, json_string(ref));
    }
    json_decref(pl);
    fw_store_stat st;
    int rc = fw_store_stat_blob(d->store, digest, &st);
    if (rc < 0) {
        coord_client_error(c, identity, m, rc, 0, "blob %s is not in the artifact store: upload it first (%s)",
                digest, fw_err_detail());
        goto done;
    }
    if (ingest) {
        json_decref(report);
        report = NULL;
        rc = s_ingest(c, d, digest, &report, canon);
        if (rc < 0) {
            coord_client_error(c, identity, m, rc, 0, "%s; nothing registered", fw_err_detail());
            goto done;
        }
        if (!json_object_get(lineage, "ingest"))
            json_object_set_new(lineage, "ingest", json_pack("{s:s}", "raw", digest));
        digest = canon;
        rc = fw_store_stat_blob(d->store, digest, &st);
        if (rc < 0) {
            coord_client_error(c, identity, m, rc, 0, "ingested blob %s: %s", digest,
                               fw_err_detail());
            goto done;
        }
    }
    /* The record count jobs shard by comes from the bytes, not the report:
     * a version must have records, one per line (docs/datasets.md). */
    uint64_t nlines = 0;
    if ((rc = s_count_lines(d->store, digest, &nlines)) < 0) {
        coord_client_error(c, identity, m, rc, 0, "blob %s: %s", digest, fw_err_detail());
        goto done;
    }
    json_t *claimed = json_object_get(report, "records_out");
    if (nlines == 0) {
        coord_client_error(c, identity, m, FW_EINVAL, 0,
                           "blob %s holds no records; nothing registered", digest);
        goto done;
    }
    if (claimed && (uint64_t)json_integer_value(claimed) != nlines) {
        coord_client_error(c, identity, m, FW_EINVAL, 0,
                           "report: records_out %" JSON_INTEGER_FORMAT " but the blob holds %"
                           PRIu64 " records (lines); nothing registered",
                           json_integer_value(claimed), nlines);
        goto done;
    }
    json_object_set_new(report, "records_out", json_integer((json_int_t)nlines));
    rc = s_read(c, name, false, &all);
    if (rc < 0) {
        coord_client_error(c, identity, m, rc, 1000, "reading dataset %s from etcd: %s", name,
                fw_err_detail());
        goto done;
    }
    uint64_t maxver = 0;
    for (size_t i = 0; i < json_array_size(all); i++) {
        json_t *o = json_array_get(all, i);
        uint64_t v = (uint64_t)json_integer_value(json_object_get(o, "version"));
        if (v > maxver) maxver = v;
        const char *dg = json_string_value(json_object_get(o, "digest"));
        if (!existing && dg && strcmp(dg, digest) == 0) existing = o;
    }
    if (existing) {
        fw_info("event=dataset-exists name=%s version=%" JSON_INTEGER_FORMAT " by=%s", name,
                json_integer_value(json_object_get(existing, "version")), tok->name);
        coord_client_reply_doc(c, identity, m, FW_MSG_DATASET_REGISTER_REPLY, json_incref(existing), 1);
        goto done;
    }
    uint64_t ver = maxver + 1;
    json_t *recs = json_object_get(report, "records_out");
    json_t *toks = json_object_get(report, "tokens");
    rec = json_pack("{s:i,s:s,s:I,s:s,s:I,s:O,s:O,s:O,s:O,s:O,s:s,s:I,s:I,s:s}", "schema",
                    COORD_SCHEMA, "name", name, "version", (json_int_t)ver, "digest", digest,
                    "size", (json_int_t)st.size, "records", recs ? recs : json_null(), "tokens",
                    toks ? toks : json_null(), "report", report, "parents", parents, "lineage",
                    lineage, "created_by", tok->name, "created_at", (json_int_t)fw_wall_ms(),
                    "epoch", (json_int_t)c->L.epoch, "coordinator", c->o.name);
    char *val = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
    char key[COORD_KEY_MAX], akey[COORD_KEY_MAX];
    s_key_prefix(c, name, key, sizeof key);
    snprintf(key + strlen(key), sizeof key - strlen(key), "%08" PRIu64, ver);
    uint64_t aseq = (uint64_t)c->last_audit_seq + 1;
    coord_key_audit(akey, sizeof akey, c->o.etcd_prefix, aseq);
    char id[S_NAME_MAX + 32];
    snprintf(id, sizeof id, "dataset/%s@%" PRIu64, name, ver);
    json_t *audit = json_pack("{s:i,s:I,s:I,s:s,s:[[s,s,s,{s:s}]]}", "schema", COORD_SCHEMA, "ts",
                              (json_int_t)fw_wall_ms(), "epoch", (json_int_t)c->L.epoch, "actor",
                              c->o.name, "changes", id, "", "registered", "by", tok->name);
    char *aval = audit ? json_dumps(audit, JSON_COMPACT) : NULL;
    json_decref(audit);
    fw_etcd_txn *txn = c->L.election ? fw_etcd_election_txn(c->L.election) : NULL;
    if (!val || !aval || !txn) {
        coord_client_error(c, identity, m, txn ? FW_ENOMEM : FW_ENOTLEADER, txn ? 0 : 500, "%s",
                txn ? "out of memory" : "leadership is changing; retry");
        free(val);
        free(aval);
        fw_etcd_txn_destroy(&txn);
        goto done;
    }
    fw_etcd_txn_compare(txn, key, FW_ETCD_CMP_CREATE, FW_ETCD_CMP_EQUAL, 0);
    fw_etcd_txn_put(txn, FW_ETCD_SUCCESS, key, val, strlen(val), 0, false);
    fw_etcd_txn_put(txn, FW_ETCD_SUCCESS, akey, aval, strlen(aval), 0, false);
    fw_etcd_txn_result *res = NULL;
    rc = fw_etcd_txn_commit(c->etcd, txn, &res);
    bool fenced = res && res->fenced;
    fw_etcd_txn_result_free(&res);
    fw_etcd_txn_destroy(&txn);
    free(val);
    free(aval);
    if (rc == 0) {
        c->last_audit_seq = (int64_t)aseq;
        fw_info("event=dataset-registered name=%s version=%" PRIu64 " digest=%s by=%s", name, ver,
                digest, tok->name);
        coord_client_reply_doc(c, identity, m, FW_MSG_DATASET_REGISTER_REPLY, json_incref(rec), 0);
    } else if (fenced) {
        coord_leader_step_down(c, "dataset txn fenced");
        coord_client_error(c, identity, m, FW_ENOTLEADER, 500, "leadership moved; retry");
    } else {
        coord_client_error(c, identity, m, rc, rc == FW_ECONFLICT ? 200 : 1000,
                "registering %s@%" PRIu64 ": %s", name, ver,
                rc == FW_ECONFLICT ? "the version was taken concurrently; retry" : fw_err_detail());
    }
done:
    json_decref(rec);
    json_decref(all);
    json_decref(report);
    json_decref(lineage);
    json_decref(parents);
}

void coord_data_handle(coord_t *c, zframe_t *identity, const fw_msg_t *m,
                       const coord_token_t *tok) {
    int id = fw_msg_id(m);
    if (id == FW_MSG_DATASET_LIST) {
        s_dataset_list(c, identity, m);
        return;
    }
    if (id == FW_MSG_DATASET_GET) {
        s_dataset_get(c, identity, m);
        return;
    }
    coord_data_t *d = s_data(c, identity, m);
    if (!d) return;
    s_sweep(c, d);
    switch (id) {
    case FW_MSG_BLOB_UPLOAD_BEGIN:
        s_upload_begin(c, d, identity, m, tok);
        break;
    case FW_MSG_BLOB_UPLOAD_CHUNK:
        s_upload_chunk(c, d, identity, m, tok);
        break;
    case FW_MSG_BLOB_UPLOAD_COMMIT:
        s_upload_commit(c, d, identity, m, tok);
        break;
    case FW_MSG_BLOB_READ:
        s_blob_read(c, d, identity, m);
        break;
    case FW_MSG_DATASET_REGISTER:
        s_dataset_register(c, d, identity, m, tok);
        break;
    default:
        break;
    }
}
