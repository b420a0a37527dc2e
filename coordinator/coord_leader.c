/* coord_leader.c - leader election, the lease, and the role state machine.
 *
 * Theory of operation
 * -------------------
 * Each coordinator grants an etcd lease (election.ttl), puts
 * P/coordinators/<name> and campaigns with P/election/<lease-hex> (both bound
 * to the lease). The candidate whose key has the lowest create revision
 * leads, and that revision is its epoch: every txn it makes is guarded by
 * create_revision(own key) == epoch (coord_store.c), every message it sends
 * carries the epoch.
 *
 *                 start / after step-down
 *                          |
 *                          v        lease granted, key put
 *   +-------------> [ STANDBY ] --------------------------------+
 *   |                 |   ^  answers clients with REDIRECT,     |
 *   |                 |   |  writes nothing but its own keys    |
 *   |                 |   +---- campaign_wait: not lowest ------+
 *   |                 |
 *   |   own key lowest (s_check_election -> s_become_leader)
 *   |                 v
 *   |         [ RECOVERING ]  state rebuilt from etcd (coord_store_rebuild),
 *   |                 |       agents re-register and report what they run;
 *   |                 |       nothing is dispatched
 *   |                 |  every agent holding tasks re-registered, or
 *   |                 |  coordinator.reconcile_window passed (coord_leader_cron)
 *   |                 v
 *   |            [ LEADER ]   dispatches; every etcd write fenced by the epoch
 *   |                 |
 *   +-----------------+  coord_leader_step_down(why), from any leader state:
 *                        - the lease deadline passed (no keepalive answered within
 *                          the TTL: coord_leader_check, run before acting),
 *                        - a keepalive says the lease is gone (FW_ELEASE),
 *                        - a txn failed its fence (FW_EFENCED, coord_store.c),
 *                        - the rebuild failed.
 *                        Everything in memory is dropped; the key is deleted if
 *                        still ours and the coordinator campaigns again.
 *
 * The guarantee of each state: a STANDBY never writes job/task state; a
 * RECOVERING or LEADER coordinator's writes succeed only while its key is
 * still the one it was elected with, i.e. while no other coordinator can
 * have been elected after it.
 *
 * A STANDBY learns that the key ahead of it is gone from two sources, both
 * polled by the loop: the watch on P/election/ (s_on_watch) and the
 * election's own wait on that key (fw_etcd_election_fd, s_on_elect), which
 * may report a moment after the prefix watch; the cron re-checks every
 * TTL/3 as a safety net. A resigning leader is thus replaced in
 * milliseconds, a dead one as soon as its lease expires.
 *
 * The keepalive runs on its own thread (a blocking HTTP call must not stall
 * the loop, nor a stalled loop stop the renewals) every TTL/3; each answer
 * moves lease_deadline to (time the request was sent + TTL). The loop steps
 * down as soon as the clock passes lease_deadline: etcd counts the TTL from
 * when it received the keepalive, which is after it was sent, so the
 * coordinator always stops believing in its lease before etcd drops it. */
#include "coord.h"

#include "fw_err.h"
#include "fw_log.h"
#include "fw_time.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *coord_role_name_of(coord_role_t r) {
    switch (r) {
    case COORD_RECOVERING: return "recovering";
    case COORD_LEADER: return "leader";
    default: return "standby";
    }
}

bool coord_is_leader(const coord_t *c) { return c->L.role != COORD_STANDBY; }

static void s_election_drop(coord_t *c, bool resign);

/* ------------------------------------------------------------ keepalive thread */

/* Commands: "LEASE" id period_ms (0 id: stop renewing). Reports: lease id,
 * rc, send time (mono ms), TTL granted (s). */
static void s_keepalive_fn(zsock_t *pipe, void *arg) {
    fw_etcd *etcd = arg;
    zsock_signal(pipe, 0);
    zpoller_t *poller = zpoller_new(pipe, NULL);
    int64_t lease = 0, period = 1000, next = 0;
    for (;;) {
        int timeout = -1;
        if (lease) {
            int64_t left = next - fw_mono_ms();
            timeout = left > 0 ? (int)left : 0;
        }
        void *which = zpoller_wait(poller, timeout);
        if (which == pipe) {
            char *cmd = NULL;
            int64_t id = 0, per = 0;
            if (zsock_recv(pipe, "s88", &cmd, &id, &per) < 0) break;
            bool term = cmd && strcmp(cmd, "$TERM") == 0;
            free(cmd);
            if (term) break;
            lease = id;
            period = per > 0 ? per : 1000;
            next = fw_mono_ms() + period;
            continue;
        }
        if (zpoller_terminated(poller)) break;
        if (!lease) continue;
        int64_t t0 = fw_mono_ms();
        int64_t ttl = 0;
        int rc = fw_etcd_lease_keepalive(etcd, lease, &ttl);
        zsock_send(pipe, "8i88", lease, rc, t0, ttl);
        /* After a failure retry sooner: the deadline is what matters. */
        next = t0 + (rc == 0 ? period : period / 3 + 1);
    }
    zpoller_destroy(&poller);
}

static int s_keepalive_report(zloop_t *loop, zsock_t *sock, void *arg) {
    coord_t *c = arg;
    int64_t lease = 0, t0 = 0, ttl = 0;
    int rc = 0;
    if (zsock_recv(sock, "8i88", &lease, &rc, &t0, &ttl) < 0) return 0;
    if (lease != c->L.lease) return 0; /* about a lease we gave up */
    if (rc == 0 && ttl > 0) {
        int64_t d = t0 + ttl * 1000;
        if (d > c->L.lease_deadline) c->L.lease_deadline = d;
    } else if (rc == FW_ELEASE) {
        fw_warn("event=lease-lost lease=%" PRIx64 " role=%s", (uint64_t)lease,
                coord_role_name_of(c->L.role));
        if (coord_is_leader(c)) coord_leader_step_down(c, "lease-lost");
        c->L.lease = 0; /* campaign again with a new one */
        s_election_drop(c, false);
        zsock_send(zactor_sock(c->L.keepalive), "s88", "LEASE", (int64_t)0, (int64_t)0);
    } else {
        fw_warn("event=keepalive-failed err=%s detail=\"%s\"", fw_errname(rc), fw_err_detail());
    }
    coord_leader_check(c);
    (void)loop;
    return 0;
}

/* ------------------------------------------------------------ leader info */

static void s_refresh_leader(coord_t *c) {
    fw_etcd_kv *kv = NULL;
    int rc = fw_etcd_leader(c->etcd, c->election_prefix, &kv);
    if (rc < 0) {
        if (rc == FW_ENOTFOUND) {
            c->L.leader_name[0] = c->L.leader_client[0] = c->L.leader_agent[0] = '\0';
            c->L.leader_epoch = 0;
        }
        return;
    }
    json_t *o = json_loads(kv->value, 0, NULL);
    const char *n = json_string_value(json_object_get(o, "name"));
    const char *cl = json_string_value(json_object_get(o, "client"));
    const char *ag = json_string_value(json_object_get(o, "agent"));
    snprintf(c->L.leader_name, sizeof c->L.leader_name, "%s", n ? n : "");
    snprintf(c->L.leader_client, sizeof c->L.leader_client, "%s", cl ? cl : "");
    snprintf(c->L.leader_agent, sizeof c->L.leader_agent, "%s", ag ? ag : "");
    c->L.leader_epoch = kv->create_revision;
    c->L.leader_seen_mono = fw_mono_ms();
    json_decref(o);
    fw_etcd_kv_free(&kv);
}

/* ------------------------------------------------------------ election fd */

/* A standby learns that the candidate ahead of it is gone from the
 * election's own watch (fw_etcd_election_fd), which may report after our
 * prefix watch: poll it too, or the takeover waits for the cron's safety
 * net (TTL/3). campaign_wait may replace that watch, so every call is
 * followed by s_elect_sync; the fd is unpolled before anything that closes
 * it (resign, destroy). */
static void s_check_election(coord_t *c);

static void s_elect_unpoll(coord_t *c) {
    if (c->L.elect_polled) zloop_poller_end(c->loop, &c->L.elect_item);
    c->L.elect_polled = false;
}

static int s_on_elect(zloop_t *loop, zmq_pollitem_t *item, void *arg) {
    coord_t *c = arg;
    if (!coord_leader_check(c)) s_check_election(c);
    coord_after_events(c);
    (void)loop;
    (void)item;
    return 0;
}

static void s_elect_sync(coord_t *c) {
    int fd = coord_is_leader(c) ? -1 : fw_etcd_election_fd(c->L.election);
    if (c->L.elect_polled && c->L.elect_item.fd == fd) return;
    s_elect_unpoll(c);
    if (fd < 0) return;
    c->L.elect_item = (zmq_pollitem_t){.fd = fd, .events = ZMQ_POLLIN};
    if (zloop_poller(c->loop, &c->L.elect_item, s_on_elect, c) == 0) c->L.elect_polled = true;
}

static void s_election_drop(coord_t *c, bool resign) {
    s_elect_unpoll(c);
    if (c->L.election && resign) fw_etcd_resign(c->L.election);
    fw_etcd_election_destroy(&c->L.election);
}

/* ------------------------------------------------------------ transitions */

static void s_set_role(coord_t *c, coord_role_t r) {
    c->L.role = r;
    c->m.leader = r != COORD_STANDBY;
    c->m.recovering = r == COORD_RECOVERING;
    c->m.epoch = r != COORD_STANDBY ? c->L.epoch : 0;
}

static void s_become_leader(coord_t *c) {
    c->L.epoch = fw_etcd_election_epoch(c->L.election);
    c->L.gen++;
    c->L.elected_mono = fw_mono_ms();
    s_set_role(c, COORD_RECOVERING);
    c->m.elections_won_total++;
    fw_info("event=leader-elected epoch=%" PRId64 " name=%s key=%s", c->L.epoch, c->o.name,
            fw_etcd_election_key(c->L.election));
    snprintf(c->L.leader_name, sizeof c->L.leader_name, "%s", c->o.name);
    snprintf(c->L.leader_client, sizeof c->L.leader_client, "%s", c->client_ep);
    snprintf(c->L.leader_agent, sizeof c->L.leader_agent, "%s", c->agent_ep);
    c->L.leader_epoch = c->L.epoch;
    int rc = coord_store_rebuild(c->store);
    if (rc == 0) rc = coord_agents_watch_start(c);
    if (rc < 0) {
        coord_leader_step_down(c, "rebuild-failed");
        return;
    }
    c->L.recover_deadline = fw_mono_ms() + c->o.reconcile_window_ms;
    fw_info("event=leader-recovering epoch=%" PRId64 " window_ms=%" PRId64, c->L.epoch,
            c->o.reconcile_window_ms);
    coord_leader_cron(c); /* may end RECOVERING at once */
}

static void s_check_election(coord_t *c) {
    if (!c->L.election || coord_is_leader(c)) return;
    int rc = fw_etcd_campaign_wait(c->L.election, 0);
    if (rc == 0) {
        s_elect_unpoll(c);
        if (fw_mono_ms() < c->L.lease_deadline) s_become_leader(c);
    } else if (rc == FW_ELEASE) {
        fw_warn("event=election-key-gone key=%s", fw_etcd_election_key(c->L.election));
        s_election_drop(c, false);
    } else {
        s_elect_sync(c);
    }
    s_refresh_leader(c);
}

static void s_campaign(coord_t *c) {
    int64_t now = fw_mono_ms();
    if (now < c->L.next_try) return;
    int rc = 0;
    if (!c->L.lease) {
        int64_t ttl = c->o.election_ttl_ms / 1000, granted = 0, id = 0;
        int64_t t0 = fw_mono_ms();
        rc = fw_etcd_lease_grant(c->etcd, ttl, 0, &id, &granted);
        if (rc < 0) goto fail;
        c->L.lease = id;
        c->L.lease_ttl_ms = granted * 1000;
        c->L.lease_deadline = t0 + granted * 1000;
        zsock_send(zactor_sock(c->L.keepalive), "s88", "LEASE", id,
                   (int64_t)(c->L.lease_ttl_ms / 3));
    }
    if (!c->L.election) {
        char rec[1200];
        snprintf(rec, sizeof rec, "%.*s,\"started_at\":%" PRId64 "}",
                 (int)strlen(c->election_value) - 1, c->election_value, fw_wall_ms());
        rc = fw_etcd_put(c->etcd, c->coordinators_key, rec, strlen(rec), c->L.lease, NULL, NULL);
        if (rc < 0) goto fail;
        rc = fw_etcd_campaign_start(c->etcd, c->election_prefix, c->election_value,
                                    strlen(c->election_value), c->L.lease, &c->L.election);
        if (rc < 0) goto fail;
        fw_info("event=campaign key=%s lease=%" PRIx64, fw_etcd_election_key(c->L.election),
                (uint64_t)c->L.lease);
    }
    c->L.failures = 0;
    s_check_election(c);
    return;
fail:
    c->L.failures++;
    int64_t back = 100LL << (c->L.failures < 5 ? c->L.failures : 5);
    if (back > c->o.election_ttl_ms / 2) back = c->o.election_ttl_ms / 2;
    c->L.next_try = now + back;
    if (c->L.failures == 1 || c->L.failures % 20 == 0)
        fw_warn("event=campaign-failed err=%s detail=\"%s\" failures=%d", fw_errname(rc),
                fw_err_detail(), c->L.failures);
}

static int s_on_watch(zloop_t *loop, zmq_pollitem_t *item, void *arg) {
    coord_t *c = arg;
    fw_etcd_event ev;
    int rc, n = 0;
    while ((rc = fw_etcd_watch_next(c->L.watch, 0, &ev)) == 1) {
        fw_etcd_event_clear(&ev);
        n++;
    }
    if (rc < 0) {
        /* Compacted or cancelled: drop it; the cron starts a new one. */
        if (c->L.watch_polled) zloop_poller_end(c->loop, &c->L.watch_item);
        c->L.watch_polled = false;
        fw_etcd_watch_destroy(&c->L.watch);
    }
    if (coord_leader_check(c)) return 0;
    if (n) s_check_election(c);
    coord_after_events(c);
    (void)loop;
    (void)item;
    return 0;
}

static void s_watch_start(coord_t *c) {
    if (c->L.watch) return;
    fw_etcd_watch_opts wo = {.prefix = true};
    char key[320];
    snprintf(key, sizeof key, "%s/", c->election_prefix);
    c->L.watch = fw_etcd_watch_new(c->etcd, key, &wo);
    if (!c->L.watch) return; /* retried by the cron */
    c->L.watch_item = (zmq_pollitem_t){.fd = fw_etcd_watch_fd(c->L.watch), .events = ZMQ_POLLIN};
    if (zloop_poller(c->loop, &c->L.watch_item, s_on_watch, c) == 0) c->L.watch_polled = true;
    s_refresh_leader(c);
}

void coord_leader_start(coord_t *c) {
    c->L.keepalive = zactor_new(s_keepalive_fn, c->etcd_ka);
    if (c->L.keepalive) zloop_reader(c->loop, zactor_sock(c->L.keepalive), s_keepalive_report, c);
    s_set_role(c, COORD_STANDBY);
    s_watch_start(c);
    s_campaign(c);
}

void coord_leader_step_down(coord_t *c, const char *why) {
    if (!coord_is_leader(c)) return;
    fw_warn("event=step-down reason=%s epoch=%" PRId64 " name=%s", why, c->L.epoch, c->o.name);
    c->m.step_downs_total++;
    c->L.gen++;
    s_set_role(c, COORD_STANDBY);
    coord_store_reset(c->store);
    coord_logs_reset(c);
    coord_agents_watch_stop(c);
    coord_state_reset(c->st);
    zhashx_purge(c->idem);
    c->nretained = 0;
    /* Give the election up: delete the key if it is still ours (it is not
     * when the lease expired). A fresh campaign goes to the back of the line. */
    s_election_drop(c, true);
    c->L.epoch = 0;
    c->L.leader_name[0] = c->L.leader_client[0] = '\0';
    /* Let a standby win before campaigning again. */
    c->L.next_try = fw_mono_ms() + c->o.election_ttl_ms / 2;
}

bool coord_leader_check(coord_t *c) {
    if (fw_mono_ms() <= c->L.lease_deadline) return false;
    if (coord_is_leader(c)) {
        coord_leader_step_down(c, "keepalive-late");
    }
    if (c->L.lease) {
        /* The lease may be gone: start over with a fresh one. */
        zsock_send(zactor_sock(c->L.keepalive), "s88", "LEASE", (int64_t)0, (int64_t)0);
        c->L.lease = 0;
        s_election_drop(c, false);
    }
    return true;
}

void coord_leader_cron(coord_t *c) {
    if (coord_leader_check(c) && coord_is_leader(c)) return;
    int64_t now = fw_mono_ms();
    if (!c->L.watch) s_watch_start(c);
    if (!c->L.lease || !c->L.election) {
        s_campaign(c);
        return;
    }
    if (!coord_is_leader(c)) {
        /* Safety net beside the watch: look every TTL/3. */
        if (now - c->L.leader_seen_mono > c->o.election_ttl_ms / 3) s_check_election(c);
        return;
    }
    if (c->L.role == COORD_RECOVERING &&
        (coord_agents_reconciled(c) || now >= c->L.recover_deadline)) {
        s_set_role(c, COORD_LEADER);
        fw_info("event=leader-ready epoch=%" PRId64 " name=%s recover_ms=%" PRId64, c->L.epoch,
                c->o.name, now - c->L.elected_mono);
        coord_want_sched(c);
    }
}

void coord_leader_resign(coord_t *c) {
    bool was = coord_is_leader(c);
    s_election_drop(c, true);
    if (c->L.lease) fw_etcd_lease_revoke(c->etcd, c->L.lease);
    c->L.lease = 0;
    fw_info("event=resigned name=%s was_leader=%d epoch=%" PRId64, c->o.name, was, c->L.epoch);
}

void coord_leader_stop(coord_t *c) {
    if (c->L.watch_polled) zloop_poller_end(c->loop, &c->L.watch_item);
    c->L.watch_polled = false;
    fw_etcd_watch_destroy(&c->L.watch);
    if (c->L.keepalive) {
        zloop_reader_end(c->loop, zactor_sock(c->L.keepalive));
        zactor_destroy(&c->L.keepalive);
    }
    s_election_drop(c, false);
}
