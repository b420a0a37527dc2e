/* agent_etcd.c - lease, registration key and leader discovery, in an actor.
 *
 * Theory of operation
 * -------------------
 * The actor thread owns the etcd client and runs a small loop of its own:
 * zmq_poll on (the pipe to its owner, the election watch's eventfd) with a
 * timeout that ends at the next lease action. Two independent chains:
 *
 *   lease:  NONE --grant + put P/agents/<id>--> HELD --keepalive every TTL/3--> HELD
 *             ^        (failure: backoff)         | FW_ELEASE (expired while we were cut
 *             +-----------------------------------+  off): grant and put again at once
 *           a keepalive failing otherwise is retried with backoff (bounded by TTL/3) until
 *           etcd answers: either the lease is alive again or it is gone (then NONE).
 *
 *   leader: NOT-WATCHING --list P/election/ + watch from that revision--> WATCHING
 *             ^            (failure: backoff)                               | events update
 *             +---- watch broken / compacted -------------------------------+ the candidates
 *           after every change the lowest create revision is the leader; the owner is told
 *           only when (epoch, endpoint) changes.
 *
 * Every etcd call is bounded by the client's timeout, which the owner sets to
 * at most TTL/3 so that a hung call cannot outlast the lease it renews. */
#include "agent_etcd.h"

#include "fw_err.h"
#include "fw_etcd.h"
#include "fw_log.h"
#include "fw_time.h"

#include <czmq.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    int64_t create_revision;
    char endpoint[257];
    char name[65];
} s_cand;

typedef struct {
    fw_etcd *etcd;
    char *prefix, *agent_id, *agent_json;
    int64_t ttl_ms, retry_max_ms;
    char agents_key[512];
    char election_prefix[512];
    /* lease chain */
    int64_t lease;
    int lease_failures;
    int64_t lease_next; /* monotonic ms */
    /* leader chain */
    fw_etcd_watch *watch;
    zhashx_t *cands; /* key -> s_cand* */
    int watch_failures;
    int64_t watch_next;
    /* what the owner was last told */
    bool told;
    int64_t told_epoch;
    char told_endpoint[257];
    uint64_t seed;
} s_actor_t;

int64_t agent_backoff_ms(int failures, int64_t max_ms, uint64_t *seed) {
    int64_t base = 100;
    for (int i = 1; i < failures && base < max_ms; i++) base *= 2;
    if (base > max_ms) base = max_ms;
    /* xorshift64*: jitter only, no need for quality. */
    uint64_t x = *seed ? *seed : 0x9E3779B97F4A7C15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *seed = x;
    int64_t span = base / 2; /* +-25 % */
    int64_t jitter = span ? (int64_t)((x * 0x2545F4914F6CDD1Dull) % (uint64_t)(span + 1)) - span / 2
                          : 0;
    int64_t ms = base + jitter;
    return ms < 1 ? 1 : ms;
}

int agent_leader_parse(const char *value, char *endpoint, size_t esize, char *name,
                       size_t nsize) {
    json_error_t jerr;
    json_t *o = json_loads(value ? value : "", 0, &jerr);
    int rc = 0;
    if (!json_is_object(o)) {
        rc = fw_err_set(FW_EINVAL, "election value: not a JSON object (%s)", jerr.text);
        goto out;
    }
    json_t *schema = json_object_get(o, "schema");
    if (schema && (!json_is_integer(schema) || json_integer_value(schema) != 1)) {
        rc = fw_err_set(FW_EVERSION, "election value: schema is not 1");
        goto out;
    }
    json_t *ep = json_object_get(o, "agent");
    if (!json_is_string(ep) || json_string_length(ep) == 0 || json_string_length(ep) >= esize) {
        rc = fw_err_set(FW_EINVAL, "election value: \"agent\" must be a non-empty endpoint");
        goto out;
    }
    snprintf(endpoint, esize, "%s", json_string_value(ep));
    json_t *nm = json_object_get(o, "name");
    snprintf(name, nsize, "%s", json_is_string(nm) ? json_string_value(nm) : "");
out:
    json_decref(o);
    return rc;
}

/* ------------------------------------------------------------ leader */

static void s_cand_put(s_actor_t *a, const fw_etcd_kv *kv) {
    s_cand *c = calloc(1, sizeof *c);
    if (!c) return;
    c->create_revision = kv->create_revision;
    if (agent_leader_parse(kv->value, c->endpoint, sizeof c->endpoint, c->name, sizeof c->name) <
        0) {
        fw_warn("event=election-value-bad key=%s detail=\"%s\"", kv->key, fw_err_detail());
        c->endpoint[0] = '\0';
    }
    zhashx_update(a->cands, kv->key, c);
}

static void s_tell(s_actor_t *a, zsock_t *pipe) {
    s_cand *best = NULL;
    for (s_cand *c = zhashx_first(a->cands); c; c = zhashx_next(a->cands))
        if (!best || c->create_revision < best->create_revision) best = c;
    bool have = best && best->endpoint[0];
    int64_t epoch = have ? best->create_revision : 0;
    const char *ep = have ? best->endpoint : "";
    if (a->told && a->told_epoch == epoch && strcmp(a->told_endpoint, ep) == 0) return;
    a->told = true;
    a->told_epoch = epoch;
    snprintf(a->told_endpoint, sizeof a->told_endpoint, "%s", ep);
    if (have) {
        char e[32];
        snprintf(e, sizeof e, "%" PRId64, epoch);
        zsock_send(pipe, "ssss", "LEADER", e, best->endpoint, best->name);
    } else {
        if (best) fw_warn("event=leader-unusable epoch=%" PRId64, best->create_revision);
        zsock_send(pipe, "ssss", "NO-LEADER", "", "", "");
    }
}

static void s_watch_stop(s_actor_t *a) { fw_etcd_watch_destroy(&a->watch); }

static void s_watch_start(s_actor_t *a, zsock_t *pipe) {
    fw_etcd_kvs *list = NULL;
    int rc = fw_etcd_list_watch(a->etcd, a->election_prefix, NULL, &list, &a->watch);
    if (rc < 0) {
        a->watch_failures++;
        int64_t wait = agent_backoff_ms(a->watch_failures, a->retry_max_ms, &a->seed);
        if (a->watch_failures == 1 || a->watch_failures % 10 == 0)
            fw_warn("event=etcd-unavailable op=election-watch failures=%d retry_ms=%" PRId64
                    " err=%s detail=\"%s\"",
                    a->watch_failures, wait, fw_errname(rc), fw_err_detail());
        a->watch_next = fw_mono_ms() + wait;
        return;
    }
    if (a->watch_failures) fw_info("event=etcd-recovered op=election-watch");
    a->watch_failures = 0;
    zhashx_purge(a->cands);
    for (size_t i = 0; i < list->n; i++) s_cand_put(a, &list->kvs[i]);
    fw_etcd_kvs_free(&list);
    s_tell(a, pipe);
}

static void s_watch_events(s_actor_t *a, zsock_t *pipe) {
    fw_etcd_event ev;
    int rc;
    while ((rc = fw_etcd_watch_next(a->watch, 0, &ev)) == 1) {
        if (ev.type == FW_ETCD_EV_PUT)
            s_cand_put(a, &ev.kv);
        else
            zhashx_delete(a->cands, ev.kv.key);
        fw_etcd_event_clear(&ev);
    }
    if (rc < 0) {
        /* Compacted past our revision, or cancelled: list and watch again. */
        fw_warn("event=election-watch-lost err=%s detail=\"%s\"", fw_errname(rc),
                fw_err_detail());
        s_watch_stop(a);
        a->watch_next = fw_mono_ms();
        return;
    }
    s_tell(a, pipe);
}

/* ------------------------------------------------------------- lease */

static void s_lease_failed(s_actor_t *a, const char *op, int rc) {
    a->lease_failures++;
    int64_t cap = a->retry_max_ms;
    /* While a lease is held, retry well within its TTL. */
    if (a->lease && cap > a->ttl_ms / 3) cap = a->ttl_ms / 3;
    int64_t wait = agent_backoff_ms(a->lease_failures, cap, &a->seed);
    if (a->lease_failures == 1 || a->lease_failures % 10 == 0)
        fw_warn("event=etcd-unavailable op=%s failures=%d retry_ms=%" PRId64
                " err=%s detail=\"%s\"",
                op, a->lease_failures, wait, fw_errname(rc), fw_err_detail());
    a->lease_next = fw_mono_ms() + wait;
}

static void s_lease_step(s_actor_t *a) {
    int rc;
    if (a->lease) {
        rc = fw_etcd_lease_keepalive(a->etcd, a->lease, NULL);
        if (rc == 0) {
            if (a->lease_failures) fw_info("event=etcd-recovered op=keepalive");
            a->lease_failures = 0;
            a->lease_next = fw_mono_ms() + a->ttl_ms / 3;
            return;
        }
        if (rc != FW_ELEASE) {
            s_lease_failed(a, "keepalive", rc);
            return;
        }
        /* The lease expired: the leader has seen P/agents/<id> vanish and
         * treated us as lost. Register again; the leader reconciles. */
        fw_warn("event=lease-lost lease=%" PRIx64, (uint64_t)a->lease);
        a->lease = 0;
    }
    int64_t ttl_s = (a->ttl_ms + 999) / 1000, id = 0, granted = 0;
    rc = fw_etcd_lease_grant(a->etcd, ttl_s, 0, &id, &granted);
    if (rc < 0) {
        s_lease_failed(a, "lease-grant", rc);
        return;
    }
    rc = fw_etcd_put(a->etcd, a->agents_key, a->agent_json, strlen(a->agent_json), id, NULL,
                     NULL);
    if (rc < 0) {
        fw_etcd_lease_revoke(a->etcd, id); /* best effort: it expires anyway */
        s_lease_failed(a, "put", rc);
        return;
    }
    a->lease = id;
    a->lease_failures = 0;
    a->lease_next = fw_mono_ms() + a->ttl_ms / 3;
    fw_info("event=etcd-registered key=%s lease=%" PRIx64 " ttl_s=%" PRId64, a->agents_key,
            (uint64_t)id, granted ? granted : ttl_s);
}

/* ------------------------------------------------------------- actor */

static void s_actor_free(s_actor_t *a) {
    if (!a) return;
    s_watch_stop(a);
    zhashx_destroy(&a->cands);
    fw_etcd_destroy(&a->etcd);
    free(a->prefix);
    free(a->agent_id);
    free(a->agent_json);
    free(a);
}

static void s_actor(zsock_t *pipe, void *arg) {
    s_actor_t *a = arg;
    zsock_signal(pipe, 0);
    a->lease_next = a->watch_next = fw_mono_ms();
    for (;;) {
        int64_t now = fw_mono_ms();
        if (!a->watch && now >= a->watch_next) s_watch_start(a, pipe);
        if (now >= a->lease_next) s_lease_step(a);
        now = fw_mono_ms();
        int64_t until = a->lease_next;
        if (!a->watch && a->watch_next < until) until = a->watch_next;
        long timeout = until > now ? (long)(until - now) : 0;
        zmq_pollitem_t items[2] = {{zsock_resolve(pipe), 0, ZMQ_POLLIN, 0},
                                   {NULL, a->watch ? fw_etcd_watch_fd(a->watch) : -1, ZMQ_POLLIN,
                                    0}};
        int rc = zmq_poll(items, a->watch ? 2 : 1, timeout);
        if (rc < 0) {
            if (zmq_errno() == EINTR) continue;
            break; /* context terminated */
        }
        if (items[0].revents & ZMQ_POLLIN) {
            char *cmd = zstr_recv(pipe);
            bool term = !cmd || strcmp(cmd, "$TERM") == 0;
            zstr_free(&cmd);
            if (term) break;
        }
        if (a->watch && (items[1].revents & ZMQ_POLLIN)) s_watch_events(a, pipe);
    }
    if (a->lease) {
        /* Leave at once rather than after the TTL: our tasks were stopped. */
        int rc = fw_etcd_lease_revoke(a->etcd, a->lease);
        fw_info("event=etcd-deregistered key=%s result=%s", a->agents_key,
                rc == 0 ? "revoked" : fw_errname(rc));
    }
    s_actor_free(a);
}

static void s_free_item(void **p) {
    free(*p);
    *p = NULL;
}

zactor_t *agent_etcd_start(const agent_etcd_args *args) {
    s_actor_t *a = calloc(1, sizeof *a);
    if (!a) {
        fw_etcd *e = args->etcd;
        fw_etcd_destroy(&e);
        return NULL;
    }
    a->etcd = args->etcd;
    a->prefix = strdup(args->prefix);
    a->agent_id = strdup(args->agent_id);
    a->agent_json = strdup(args->agent_json);
    a->ttl_ms = args->lease_ttl_ms;
    a->retry_max_ms = args->retry_max_ms;
    a->cands = zhashx_new();
    a->seed = (uint64_t)fw_mono_ns() ^ ((uint64_t)getpid() << 32);
    if (!a->prefix || !a->agent_id || !a->agent_json || !a->cands) {
        s_actor_free(a);
        return NULL;
    }
    zhashx_set_destructor(a->cands, s_free_item);
    snprintf(a->agents_key, sizeof a->agents_key, "%s/agents/%s", a->prefix, a->agent_id);
    snprintf(a->election_prefix, sizeof a->election_prefix, "%s/election/", a->prefix);
    zactor_t *actor = zactor_new(s_actor, a);
    if (!actor) s_actor_free(a);
    return actor;
}
