/* fw_etcd_lease.c - etcd leases, and leader election built on them.
 *
 * Theory of operation
 * -------------------
 * Leases: grant / keepalive / revoke / timetolive are one POST each. The
 * gateway's keepalive is a stream endpoint: one request body gives one
 * `{"result": {...}}` line. A keepalive for a lease that has expired is
 * answered 200 with no TTL field (TTL is omitted because it is 0): that is
 * FW_ELEASE, not success.
 *
 * Election (the recipe of etcd's clientv3/concurrency, over plain KV + txn):
 *
 *   campaign_start: txn { put <prefix>/<lease-hex> (lease); range it }
 *                   -> own create_revision R (a re-campaign with the same
 *                      lease keeps R: a put does not change create_revision)
 *   campaign_wait:  txn { range own key; range prefix, create_revision < R,
 *                         sort by create_revision descending, limit 1 }
 *        own key gone ........................ FW_ELEASE (lease expired)
 *        nobody below ........................ LEADER, epoch = R
 *        key K just below ...................  watch K from the txn's
 *                                              revision + 1 for DELETE,
 *                                              then check again
 *
 *   CANDIDATE --(all lower keys gone)--> LEADER --(lease lost / resign)--> out
 *
 * Waiting on the key just below (not on the leader) means a leader change
 * wakes exactly one candidate. Guarantee of LEADER: until the own key is
 * deleted, no other candidate can lead, and every txn made with
 * fw_etcd_election_txn() fails with FW_EFENCED once it has been deleted:
 * the key's create_revision (the epoch) can never come back, since a
 * re-created key gets a new, higher revision.
 */
#define FW_ETCD_INTERNAL
#include "fw_etcd.h"

#include "fw_err.h"
#include "fw_log.h"
#include "fw_time.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- lease */

static int s_lease_call(fw_etcd *c, const char *path, int64_t id, int64_t ttl, unsigned flags,
                        json_t **resp) {
    json_t *req = json_object();
    if (!req || (id && json_object_set_new(req, "ID", fw_etcd__ji64(id)) < 0) ||
        (ttl && json_object_set_new(req, "TTL", fw_etcd__ji64(ttl)) < 0)) {
        json_decref(req);
        return fw_err_set(FW_ENOMEM, "etcd %s", path);
    }
    int rc = fw_etcd__request(c, path, req, flags, resp);
    json_decref(req);
    return rc;
}

int fw_etcd_lease_grant(fw_etcd *c, int64_t ttl_s, int64_t id, int64_t *id_out,
                        int64_t *ttl_out) {
    if (!c || ttl_s <= 0 || id < 0)
        return fw_err_set(FW_EINVAL, "etcd lease grant: ttl %" PRId64 " id %" PRId64, ttl_s, id);
    json_t *resp = NULL;
    int rc = s_lease_call(c, "/v3/lease/grant", id, ttl_s, 0, &resp);
    if (rc == 0) {
        int64_t gid = 0, gttl = 0;
        if ((rc = fw_etcd__get_i64(resp, "ID", &gid)) == 0 &&
            (rc = fw_etcd__get_i64(resp, "TTL", &gttl)) == 0 && gid == 0)
            rc = fw_err_set(FW_EPROTO, "etcd lease grant: answer has no ID");
        if (rc == 0) {
            if (id_out) *id_out = gid;
            if (ttl_out) *ttl_out = gttl;
        }
    }
    json_decref(resp);
    return rc;
}

int fw_etcd_lease_keepalive(fw_etcd *c, int64_t id, int64_t *ttl_out) {
    if (!c || id <= 0) return fw_err_set(FW_EINVAL, "etcd lease keepalive: id %" PRId64, id);
    json_t *resp = NULL;
    int rc = s_lease_call(c, "/v3/lease/keepalive", id, 0, FW_ETCD__IDEMPOTENT, &resp);
    if (rc == 0) {
        json_t *res = json_object_get(resp, "result");
        int64_t ttl = 0;
        if (!json_is_object(res)) rc = fw_err_set(FW_EPROTO, "etcd lease keepalive: no result");
        else if ((rc = fw_etcd__get_i64(res, "TTL", &ttl)) == 0 && ttl <= 0)
            rc = fw_err_set(FW_ELEASE, "etcd lease %" PRId64 " (%" PRIx64 "): expired or unknown",
                            id, (uint64_t)id);
        if (rc == 0 && ttl_out) *ttl_out = ttl;
    }
    json_decref(resp);
    return rc;
}

int fw_etcd_lease_revoke(fw_etcd *c, int64_t id) {
    if (!c || id <= 0) return fw_err_set(FW_EINVAL, "etcd lease revoke: id %" PRId64, id);
    json_t *resp = NULL;
    /* Idempotent in effect: repeating a revoke that was applied answers
     * FW_ELEASE, which callers treat as "gone" anyway. */
    int rc = s_lease_call(c, "/v3/lease/revoke", id, 0, FW_ETCD__IDEMPOTENT, &resp);
    json_decref(resp);
    return rc;
}

int fw_etcd_lease_timetolive(fw_etcd *c, int64_t id, int64_t *ttl_out, int64_t *granted_out) {
    if (!c || id <= 0) return fw_err_set(FW_EINVAL, "etcd lease timetolive: id %" PRId64, id);
    json_t *resp = NULL;
    int rc = s_lease_call(c, "/v3/lease/timetolive", id, 0, FW_ETCD__IDEMPOTENT, &resp);
    int64_t ttl = 0, granted = 0;
    if (rc == 0 && (rc = fw_etcd__get_i64(resp, "TTL", &ttl)) == 0 &&
        (rc = fw_etcd__get_i64(resp, "grantedTTL", &granted)) == 0 && ttl < 0)
        rc = fw_err_set(FW_ELEASE, "etcd lease %" PRId64 ": expired or unknown", id);
    if (rc == 0) {
        if (ttl_out) *ttl_out = ttl;
        if (granted_out) *granted_out = granted;
    }
    json_decref(resp);
    return rc;
}

/* ------------------------------------------------------------- election */

struct fw_etcd_election {
    fw_etcd *c;
    char *prefix; /* ends with '/' */
    char *key;    /* prefix + lease in hex */
    int64_t lease;
    int64_t rev;  /* create_revision of key: the epoch once leader */
    bool leader;
    fw_etcd_watch *wait; /* on the key just below ours, while waiting */
};

static char *s_prefix_slash(const char *prefix) {
    size_t n = strlen(prefix);
    char *p = malloc(n + 2);
    if (!p) return NULL;
    memcpy(p, prefix, n);
    if (n == 0 || p[n - 1] != '/') p[n++] = '/';
    p[n] = '\0';
    return p;
}

void fw_etcd_election_destroy(fw_etcd_election **ep) {
    if (!ep || !*ep) return;
    fw_etcd_election *e = *ep;
    fw_etcd_watch_destroy(&e->wait);
    free(e->prefix);
    free(e->key);
    free(e);
    *ep = NULL;
}

int fw_etcd_campaign_start(fw_etcd *c, const char *prefix, const void *value, size_t value_len,
                           int64_t lease, fw_etcd_election **out) {
    if (!out) return fw_err_set(FW_EINVAL, "fw_etcd_campaign_start: NULL out");
    *out = NULL;
    if (!c || !prefix || !*prefix || lease <= 0)
        return fw_err_set(FW_EINVAL, "etcd campaign: needs a prefix and a lease (got %" PRId64 ")",
                          lease);
    fw_etcd_election *e = calloc(1, sizeof *e);
    if (!e) return fw_err_set(FW_ENOMEM, "etcd campaign");
    e->c = c;
    e->lease = lease;
    e->prefix = s_prefix_slash(prefix);
    size_t kn = e->prefix ? strlen(e->prefix) + 17 : 0;
    e->key = e->prefix ? malloc(kn) : NULL;
    if (!e->key) {
        fw_etcd_election_destroy(&e);
        return fw_err_set(FW_ENOMEM, "etcd campaign");
    }
    snprintf(e->key, kn, "%s%" PRIx64, e->prefix, (uint64_t)lease);

    fw_etcd_txn *t = fw_etcd_txn_new();
    fw_etcd_range_opts ko = {.keys_only = true};
    fw_etcd_txn_result *r = NULL;
    int rc = t ? 0 : fw_err_set(FW_ENOMEM, "etcd campaign");
    if (rc == 0) fw_etcd_txn_put(t, FW_ETCD_SUCCESS, e->key, value, value_len, lease, false);
    if (rc == 0) fw_etcd_txn_range(t, FW_ETCD_SUCCESS, e->key, &ko);
    if (rc == 0) rc = fw_etcd_txn_commit(c, t, &r);
    fw_etcd_txn_destroy(&t);
    if (rc == 0) {
        fw_etcd_kvs *own = r->n_ops == 2 ? r->ops[1].range : NULL;
        if (!own || own->n != 1)
            rc = fw_err_set(FW_EPROTO, "etcd campaign: %s not readable after put", e->key);
        else
            e->rev = own->kvs[0].create_revision;
    }
    fw_etcd_txn_result_free(&r);
    if (rc < 0) {
        fw_etcd_election_destroy(&e);
        return rc;
    }
    fw_info("event=campaign key=%s create_revision=%" PRId64, e->key, e->rev);
    *out = e;
    return 0;
}

/* Check the queue ahead: 0 leader, 1 waiting (e->wait set), <0 error. */
static int s_check(fw_etcd_election *e) {
    fw_etcd_txn *t = fw_etcd_txn_new();
    if (!t) return fw_err_set(FW_ENOMEM, "etcd campaign");
    fw_etcd_range_opts own = {.keys_only = true};
    fw_etcd_range_opts below = {.prefix = true,
                                .keys_only = true,
                                .limit = 1,
                                .max_create_revision = e->rev - 1,
                                .sort_order = FW_ETCD_SORT_DESCEND,
                                .sort_target = FW_ETCD_SORT_CREATE};
    fw_etcd_txn_range(t, FW_ETCD_SUCCESS, e->key, &own);
    fw_etcd_txn_range(t, FW_ETCD_SUCCESS, e->prefix, &below);
    fw_etcd_txn_result *r = NULL;
    int rc = fw_etcd_txn_commit(e->c, t, &r);
    fw_etcd_txn_destroy(&t);
    if (rc < 0) return rc;
    if (r->n_ops != 2 || !r->ops[0].range || !r->ops[1].range) {
        fw_etcd_txn_result_free(&r);
        return fw_err_set(FW_EPROTO, "etcd campaign: unexpected txn answer");
    }
    fw_etcd_kvs *mine = r->ops[0].range, *ahead = r->ops[1].range;
    if (mine->n == 0 || mine->kvs[0].create_revision != e->rev) {
        fw_etcd_txn_result_free(&r);
        e->leader = false;
        return fw_err_set(FW_ELEASE, "etcd campaign: own key %s is gone (lease expired or "
                                     "revoked): campaign again", e->key);
    }
    if (ahead->n == 0) {
        fw_etcd_txn_result_free(&r);
        e->leader = true;
        fw_info("event=leader-elected key=%s epoch=%" PRId64, e->key, e->rev);
        return 0;
    }
    fw_etcd_watch_opts wo = {.start_revision = r->revision + 1, .no_put = true};
    char *k = strndup(ahead->kvs[0].key, ahead->kvs[0].key_len);
    fw_etcd_txn_result_free(&r);
    if (!k) return fw_err_set(FW_ENOMEM, "etcd campaign");
    fw_debug("event=campaign-wait key=%s ahead=%s", e->key, k);
    e->wait = fw_etcd_watch_new(e->c, k, &wo);
    free(k);
    return e->wait ? 1 : FW_EUNAVAIL;
}

int fw_etcd_campaign_wait(fw_etcd_election *e, int timeout_ms) {
    if (!e) return fw_err_set(FW_EINVAL, "fw_etcd_campaign_wait: NULL election");
    if (e->leader) return 0;
    int64_t deadline = timeout_ms > 0 ? fw_deadline_ms(timeout_ms) : 0;
    for (;;) {
        if (!e->wait) {
            int rc = s_check(e);
            if (rc <= 0) return rc;
        }
        int wait_ms = timeout_ms < 0 ? -1 : timeout_ms == 0 ? 0 : (int)fw_remaining_ms(deadline);
        fw_etcd_event ev;
        int rc = fw_etcd_watch_next(e->wait, wait_ms, &ev);
        if (rc == 0)
            return fw_err_set(FW_ETIMEDOUT, "etcd campaign: %s is not leader yet", e->key);
        /* The key ahead was deleted, or the watch ended (compaction): look
         * at the queue again either way. */
        fw_etcd_event_clear(&ev);
        fw_etcd_watch_destroy(&e->wait);
    }
}

int fw_etcd_campaign(fw_etcd *c, const char *prefix, const void *value, size_t value_len,
                     int64_t lease, int timeout_ms, fw_etcd_election **out) {
    int rc = fw_etcd_campaign_start(c, prefix, value, value_len, lease, out);
    if (rc < 0) return rc;
    rc = fw_etcd_campaign_wait(*out, timeout_ms);
    /* Only a timeout leaves the election with the caller (to keep waiting);
     * on any other error the caller gets nothing to free, as documented.
     * The key stays in etcd with its lease either way. */
    if (rc < 0 && rc != FW_ETIMEDOUT) fw_etcd_election_destroy(out);
    return rc;
}

int fw_etcd_election_fd(const fw_etcd_election *e) {
    return e && e->wait ? fw_etcd_watch_fd(e->wait) : -1;
}

bool fw_etcd_election_is_leader(const fw_etcd_election *e) { return e && e->leader; }
int64_t fw_etcd_election_epoch(const fw_etcd_election *e) { return e && e->leader ? e->rev : 0; }
const char *fw_etcd_election_key(const fw_etcd_election *e) { return e ? e->key : NULL; }

fw_etcd_txn *fw_etcd_election_txn(const fw_etcd_election *e) {
    if (!e || !e->leader) {
        fw_err_set(FW_ENOTLEADER, "etcd election: not leader");
        return NULL;
    }
    return fw_etcd_txn_new_guarded(e->key, e->rev);
}

int fw_etcd_election_proclaim(fw_etcd_election *e, const void *value, size_t value_len) {
    fw_etcd_txn *t = fw_etcd_election_txn(e);
    if (!t) return e ? FW_ENOTLEADER : FW_EINVAL;
    fw_etcd_txn_put(t, FW_ETCD_SUCCESS, e->key, value, value_len, e->lease, false);
    int rc = fw_etcd_txn_commit(e->c, t, NULL);
    fw_etcd_txn_destroy(&t);
    if (rc == FW_EFENCED) e->leader = false;
    return rc;
}

int fw_etcd_resign(fw_etcd_election *e) {
    if (!e) return fw_err_set(FW_EINVAL, "fw_etcd_resign: NULL election");
    fw_etcd_watch_destroy(&e->wait);
    fw_etcd_txn *t = fw_etcd_txn_new();
    if (!t) return fw_err_set(FW_ENOMEM, "etcd resign");
    /* Delete only our own incarnation of the key. */
    fw_etcd_txn_compare(t, e->key, FW_ETCD_CMP_CREATE, FW_ETCD_CMP_EQUAL, e->rev);
    fw_etcd_txn_delete(t, FW_ETCD_SUCCESS, e->key, false, false);
    int rc = fw_etcd_txn_commit(e->c, t, NULL);
    fw_etcd_txn_destroy(&t);
    bool was = e->leader;
    e->leader = false;
    if (rc == FW_ECONFLICT) rc = 0; /* already gone */
    if (rc == 0) fw_info("event=resigned key=%s was_leader=%d", e->key, was);
    return rc;
}

int fw_etcd_leader(fw_etcd *c, const char *prefix, fw_etcd_kv **out) {
    if (!out) return fw_err_set(FW_EINVAL, "fw_etcd_leader: NULL out");
    *out = NULL;
    if (!c || !prefix || !*prefix) return fw_err_set(FW_EINVAL, "fw_etcd_leader: no prefix");
    char *pfx = s_prefix_slash(prefix);
    if (!pfx) return fw_err_set(FW_ENOMEM, "fw_etcd_leader");
    fw_etcd_range_opts o = {.prefix = true,
                            .limit = 1,
                            .sort_order = FW_ETCD_SORT_ASCEND,
                            .sort_target = FW_ETCD_SORT_CREATE};
    fw_etcd_kvs *r = NULL;
    int rc = fw_etcd_range(c, pfx, &o, &r);
    if (rc == 0 && r->n == 0) rc = fw_err_set(FW_ENOTFOUND, "etcd: no leader under %s", pfx);
    if (rc == 0) {
        fw_etcd_kv *kv = malloc(sizeof *kv);
        if (!kv) {
            rc = fw_err_set(FW_ENOMEM, "fw_etcd_leader");
        } else {
            *kv = r->kvs[0];
            memset(&r->kvs[0], 0, sizeof r->kvs[0]);
            *out = kv;
        }
    }
    fw_etcd_kvs_free(&r);
    free(pfx);
    return rc;
}
