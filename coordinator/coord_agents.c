/* coord_agents.c - the agent endpoint: registration, reconciliation, results.
 *
 * Theory of operation
 * -------------------
 * Agents connect DEALER sockets (identity = agent id) to this ROUTER. The
 * ROUTER hands an identity over to the newest connection (an agent that
 * restarted) and refuses to queue for unknown peers (ROUTER_MANDATORY), so
 * a send to a vanished agent fails at once and its task can be retried.
 *
 * Liveness comes from etcd, not from this socket: each agent keeps
 * P/agents/<id> alive with its own lease, and the leader watches that
 * prefix. A DELETE there is the agent's death: its tasks are retried
 * (coord_agents_lost). Heartbeats only say which tasks run, so the leader can
 * free what stopped attempts held and notice assignments that went astray.
 *
 * Reconciliation. A new leader rebuilt from etcd believes every ASSIGNED or
 * RUNNING task still runs where etcd says, and marks it unconfirmed. The
 * agent re-registers with its `running` list (running tasks and results not
 * yet acknowledged):
 *   - listed with the current attempt: kept (not rerun); ASSIGNED becomes
 *     RUNNING;
 *   - held here by the leader but not listed: lost, retried (attempt + 1);
 *   - listed but unknown, finished, or another attempt: put in the cancel
 *     list of AGENT_REGISTERED (exited ones are left alone: their result
 *     comes again and is acknowledged as a duplicate).
 * An agent that holds tasks and does not re-register within
 * coordinator.reconcile_window is lost as well.
 *
 * Results: TASK_RESULT for (task, attempt) is accepted iff the task is not
 * terminal and attempt is its current attempt on this agent. Either way the
 * TASK_RESULT_ACK goes out only after everything queued before it (the
 * accepted transition included) is committed (coord_store_after). */
#include "coord.h"
#include "coord_records.h"

#include "fw_err.h"
#include "fw_log.h"
#include "fw_time.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_BURST 512 /* messages handled per wake-up before yielding to the loop */

int coord_agents_open(coord_t *c) {
    c->agent_sock = zsock_new(ZMQ_ROUTER);
    if (!c->agent_sock) return fw_err_set(FW_EIO, "agent socket: %s", zmq_strerror(zmq_errno()));
    zsock_set_router_handover(c->agent_sock, 1);
    zsock_set_router_mandatory(c->agent_sock, 1);
    zsock_set_maxmsgsize(c->agent_sock, FW_PROTO_MAX_FRAME);
    zsock_set_sndhwm(c->agent_sock, 200000);
    zsock_set_rcvhwm(c->agent_sock, 200000);
    zsock_set_sndtimeo(c->agent_sock, 0);
    zsock_set_linger(c->agent_sock, 0);
    if (c->cert) {
        zcert_apply(c->cert, c->agent_sock);
        zsock_set_curve_server(c->agent_sock, 1);
    }
    if (zsock_bind(c->agent_sock, "%s", c->o.agent_bind) < 0)
        return fw_err_set(FW_EIO, "coordinator.agent_bind %s: %s", c->o.agent_bind,
                          zmq_strerror(zmq_errno()));
    return 0;
}

int coord_agents_send(coord_t *c, const char *agent_id, fw_msg_t *m) {
    fw_msg_set_epoch(m, (uint64_t)c->L.epoch);
    fw_msg_set_sender(m, c->o.name);
    zframe_t *id = zframe_new(agent_id, strlen(agent_id));
    if (!id) return FW_ENOMEM;
    int rc = fw_msg_send(c->agent_sock, id, m);
    zframe_destroy(&id);
    return rc;
}

static void s_reply(coord_t *c, zframe_t *identity, fw_msg_t *m) {
    fw_msg_set_epoch(m, (uint64_t)c->L.epoch);
    fw_msg_set_sender(m, c->o.name);
    fw_msg_send(c->agent_sock, identity, m);
}

static void s_reply_error(coord_t *c, zframe_t *identity, const fw_msg_t *req, int code,
                          const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void s_reply_error(coord_t *c, zframe_t *identity, const fw_msg_t *req, int code,
                          const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fw_msg_t *e = fw_msg_new_error(req, code, "%s", buf);
    if (!e) return;
    s_reply(c, identity, e);
    fw_msg_destroy(&e);
}

/* ------------------------------------------------------------ dispatch */

void coord_agents_send_assign(coord_t *c, coord_task_t *t) {
    coord_job_t *j = t->job;
    char tid[COORD_TASKID_MAX];
    coord_task_id_format(t, tid, sizeof tid);
    fw_msg_t *m = fw_msg_new(FW_MSG_TASK_ASSIGN);
    if (!m) return;
    fw_msg_set_str_f(m, FW_F_TASK_ASSIGN_job_id, j->id);
    fw_msg_set_str_f(m, FW_F_TASK_ASSIGN_task_id, tid);
    fw_msg_set_uint_f(m, FW_F_TASK_ASSIGN_attempt, t->attempt);
    fw_msg_set_str_f(m, FW_F_TASK_ASSIGN_kind, j->spec.kind);
    fw_msg_set_str_f(m, FW_F_TASK_ASSIGN_spec, j->spec.json);
    if (j->spec.gang) {
        fw_msg_set_uint_f(m, FW_F_TASK_ASSIGN_rank, t->index);
        fw_msg_set_uint_f(m, FW_F_TASK_ASSIGN_world_size, j->ntasks);
        if (j->rendezvous) fw_msg_set_str_f(m, FW_F_TASK_ASSIGN_rendezvous, j->rendezvous);
    }
    if (t->gpu_mask) {
        fw_val_t *g = fw_val_new_array();
        for (int i = 0; g && i < 64; i++)
            if (t->gpu_mask & (1ULL << i)) fw_val_array_push_uint(g, (uint64_t)i);
        fw_msg_set_array_f(m, FW_F_TASK_ASSIGN_gpus, &g);
    }
    if (j->spec.timeout_ms) fw_msg_set_uint_f(m, FW_F_TASK_ASSIGN_timeout_ms, j->spec.timeout_ms);
    fw_val_t *env = fw_val_new_map();
    if (env) coord_ml_assign_env(c, t, env);
    if (env && fw_val_size(env)) fw_msg_set_map_f(m, FW_F_TASK_ASSIGN_env, &env);
    fw_val_destroy(&env);
    int rc = coord_agents_send(c, t->agent->id, m);
    fw_msg_destroy(&m);
    if (rc < 0) {
        /* The agent is not connected (or its queue is full): the attempt
         * never started anywhere, so it is retried like a lost one. */
        coord_warn_limited(c, "event=assign-send-failed task=%s agent=%s err=%s", tid, t->agent->id,
                           fw_errname(rc));
        t->sent = false;
        c->m.task_retries_total++;
        coord_task_retry_or_fail(c->st, t, "could not send TASK_ASSIGN to the agent", fw_wall_ms());
        coord_want_sched(c);
        return;
    }
    t->sent = true;
    t->sent_mono = fw_mono_ms();
    c->m.tasks_dispatched_total++;
    if (t->ready_mono)
        coord_hist_observe(&c->m.dispatch_latency, (double)(t->sent_mono - t->ready_mono) / 1e3);
    fw_debug("event=task-assign-sent task=%s attempt=%u agent=%s", tid, t->attempt, t->agent->id);
}

void coord_agents_stop_action(coord_t *c, coord_task_t *t, uint32_t attempt) {
    if (!t->agent) return;
    char tid[COORD_TASKID_MAX];
    coord_task_id_format(t, tid, sizeof tid);
    fw_msg_t *m = fw_msg_new(FW_MSG_TASK_CANCEL);
    if (!m) return;
    fw_msg_set_str_f(m, FW_F_TASK_CANCEL_task_id, tid);
    fw_msg_set_uint_f(m, FW_F_TASK_CANCEL_attempt, attempt);
    fw_msg_set_str_f(m, FW_F_TASK_CANCEL_reason, t->error ? t->error : "stopped by the leader");
    fw_msg_set_uint_f(m, FW_F_TASK_CANCEL_grace_ms, (uint64_t)c->o.kill_grace_ms);
    coord_agents_send(c, t->agent->id, m);
    fw_msg_destroy(&m);
    fw_info("event=task-cancel-sent task=%s attempt=%u agent=%s", tid, attempt, t->agent->id);
}

static void s_cancel_any(coord_t *c, const char *agent_id, const char *task_id, const char *why) {
    fw_msg_t *m = fw_msg_new(FW_MSG_TASK_CANCEL);
    if (!m) return;
    fw_msg_set_str_f(m, FW_F_TASK_CANCEL_task_id, task_id);
    fw_msg_set_str_f(m, FW_F_TASK_CANCEL_reason, why);
    fw_msg_set_uint_f(m, FW_F_TASK_CANCEL_grace_ms, (uint64_t)c->o.kill_grace_ms);
    coord_agents_send(c, agent_id, m);
    fw_msg_destroy(&m);
}

void coord_agents_drain_action(coord_t *c, void *p, uint64_t u, bool committed) {
    coord_agent_t *a = p;
    if (!committed || !a->connected) return;
    fw_msg_t *m = fw_msg_new(FW_MSG_AGENT_SET_DRAIN);
    if (!m) return;
    fw_msg_set_str_f(m, FW_F_AGENT_SET_DRAIN_agent_id, a->id);
    fw_msg_set_bool_f(m, FW_F_AGENT_SET_DRAIN_drain, a->drain);
    if (a->drain_reason) fw_msg_set_str_f(m, FW_F_AGENT_SET_DRAIN_reason, a->drain_reason);
    coord_agents_send(c, a->id, m);
    fw_msg_destroy(&m);
    (void)u;
}

/* ------------------------------------------------------------ loss */

void coord_agents_lost(coord_t *c, coord_agent_t *a, const char *why) {
    int n = 0;
    int64_t now = fw_wall_ms();
    a->connected = false;
    a->reconcile_deadline = 0;
    /* Each retry unlinks the task from a->held; gangs may release several. */
    while (a->held) {
        coord_task_t *t = a->held;
        coord_task_release(c->st, t);
        if (coord_task_terminal(t->state) || t->state == TASK_PENDING) continue;
        t->sent = false; /* nothing runs any more: nothing to stop */
        c->m.task_retries_total++;
        c->m.task_results_total[COORD_OUT_LOST]++;
        coord_task_retry_or_fail(c->st, t, why, now);
        n++;
    }
    /* Stopped attempts there are gone too. */
    while (a->nzombies) coord_agent_zombie_gone(a, a->zombies[0].task_id, a->zombies[0].attempt);
    c->m.agents_lost_total++;
    fw_warn("event=agent-lost agent=%s reason=\"%s\" tasks=%d", a->id, why, n);
    coord_want_sched(c);
}

/* ------------------------------------------------------------ etcd watch */

static void s_agent_key(coord_t *c, const char *key, const char **id) {
    size_t pl = strlen(c->o.etcd_prefix);
    *id = NULL;
    if (strncmp(key, c->o.etcd_prefix, pl) == 0 && strncmp(key + pl, "/agents/", 8) == 0 &&
        key[pl + 8] && !strchr(key + pl + 8, '/'))
        *id = key + pl + 8;
}

static int s_on_agents_watch(zloop_t *loop, zmq_pollitem_t *item, void *arg) {
    coord_t *c = arg;
    if (coord_leader_check(c) || !coord_is_leader(c)) return 0;
    fw_etcd_event ev;
    int rc;
    while ((rc = fw_etcd_watch_next(c->agents_watch, 0, &ev)) == 1) {
        const char *id;
        s_agent_key(c, ev.kv.key, &id);
        if (id && strlen(id) <= COORD_ID_MAX) {
            if (ev.type == FW_ETCD_EV_PUT) {
                coord_agent_t *a = coord_agent_get(c->st, id, true);
                bool was = a && a->alive;
                coord_parse_agent(c->st, id, ev.kv.value);
                if (a && !was) fw_info("event=agent-alive agent=%s", id);
                coord_want_sched(c);
            } else {
                coord_agent_t *a = coord_agent_get(c->st, id, false);
                if (a && a->alive) {
                    a->alive = false;
                    coord_agents_lost(c, a, "agent lease expired");
                }
            }
        }
        fw_etcd_event_clear(&ev);
    }
    if (rc < 0) {
        /* The watch ended (compaction): re-list and re-watch. */
        fw_warn("event=agents-watch-ended err=%s", fw_errname(rc));
        coord_agents_watch_stop(c);
        if (coord_agents_watch_start(c) < 0) coord_leader_step_down(c, "agents-watch-failed");
    }
    coord_after_events(c);
    (void)loop;
    (void)item;
    return 0;
}

int coord_agents_watch_start(coord_t *c) {
    char prefix[320];
    snprintf(prefix, sizeof prefix, "%s/agents/", c->o.etcd_prefix);
    fw_etcd_kvs *list = NULL;
    int rc = fw_etcd_list_watch(c->etcd, prefix, NULL, &list, &c->agents_watch);
    if (rc < 0) return rc;
    /* Everything known but absent from the list is not alive. */
    for (size_t i = 0; i < c->st->nagents; i++) c->st->agentv[i]->alive = false;
    for (size_t i = 0; i < list->n; i++) {
        const char *id;
        s_agent_key(c, list->kvs[i].key, &id);
        if (id && strlen(id) <= COORD_ID_MAX) coord_parse_agent(c->st, id, list->kvs[i].value);
    }
    fw_etcd_kvs_free(&list);
    c->agents_item =
        (zmq_pollitem_t){.fd = fw_etcd_watch_fd(c->agents_watch), .events = ZMQ_POLLIN};
    if (zloop_poller(c->loop, &c->agents_item, s_on_agents_watch, c) == 0) c->agents_polled = true;
    /* Agents holding tasks must come back; dead ones lose their tasks now. */
    int64_t deadline = fw_mono_ms() + c->o.reconcile_window_ms;
    for (size_t i = 0; i < c->st->nagents; i++) {
        coord_agent_t *a = c->st->agentv[i];
        if (!a->held) continue;
        if (!a->alive)
            coord_agents_lost(c, a, "agent not alive at takeover");
        else
            a->reconcile_deadline = deadline;
    }
    return 0;
}

void coord_agents_watch_stop(coord_t *c) {
    if (c->agents_polled) zloop_poller_end(c->loop, &c->agents_item);
    c->agents_polled = false;
    fw_etcd_watch_destroy(&c->agents_watch);
}

bool coord_agents_reconciled(coord_t *c) {
    for (size_t i = 0; i < c->st->nagents; i++)
        if (c->st->agentv[i]->reconcile_deadline) return false;
    return true;
}

void coord_agents_cron(coord_t *c) {
    int64_t now = fw_mono_ms();
    for (size_t i = 0; i < c->st->nagents; i++) {
        coord_agent_t *a = c->st->agentv[i];
        if (a->reconcile_deadline && now >= a->reconcile_deadline)
            coord_agents_lost(c, a, "did not re-register within the reconcile window");
    }
}

/* ------------------------------------------------------------ messages */

static bool s_utf8_ok(const unsigned char *p, size_t n, size_t *len) {
    unsigned char c0 = p[0];
    size_t need = c0 < 0x80         ? 1
                  : (c0 >> 5) == 6  ? 2
                  : (c0 >> 4) == 14 ? 3
                  : (c0 >> 3) == 30 ? 4
                                    : 0;
    if (!need || need > n || (need == 1 && c0 == 0)) return false;
    for (size_t i = 1; i < need; i++)
        if ((p[i] & 0xC0) != 0x80) return false;
    *len = need;
    return true;
}

/* Keep the last COORD_TAIL_MAX bytes of output, as valid UTF-8 (the tail
 * goes into a JSON record). */
static void s_tail_append(coord_task_t *t, const unsigned char *data, size_t n) {
    if (!t->tail && !(t->tail = malloc(COORD_TAIL_MAX))) return;
    if (n > COORD_TAIL_MAX) {
        data += n - COORD_TAIL_MAX;
        n = COORD_TAIL_MAX;
    }
    char clean[COORD_TAIL_MAX];
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t l;
        if (s_utf8_ok(data + i, n - i, &l)) {
            memcpy(clean + o, data + i, l);
            o += l;
            i += l;
        } else {
            clean[o++] = '?';
            i++;
        }
    }
    if ((size_t)t->tail_len + o > (size_t)COORD_TAIL_MAX) {
        size_t drop = t->tail_len + o - COORD_TAIL_MAX;
        /* Drop whole characters from the front. */
        while (drop < t->tail_len && ((unsigned char)t->tail[drop] & 0xC0) == 0x80) drop++;
        if (drop > t->tail_len) drop = t->tail_len;
        memmove(t->tail, t->tail + drop, t->tail_len - drop);
        t->tail_len = (uint16_t)(t->tail_len - drop);
    }
    if (o > (size_t)(COORD_TAIL_MAX - t->tail_len)) o = COORD_TAIL_MAX - t->tail_len;
    memcpy(t->tail + t->tail_len, clean, o);
    t->tail_len = (uint16_t)(t->tail_len + o);
}

static void s_register(coord_t *c, zframe_t *identity, const char *who, const fw_msg_t *m) {
    const char *id = fw_msg_get_str_f(m, FW_F_AGENT_REGISTER_agent_id);
    if (strcmp(id, who) != 0) {
        s_reply_error(c, identity, m, FW_EINVAL, "agent_id %s does not match the socket identity",
                      id);
        return;
    }
    coord_agent_t *a = coord_agent_get(c->st, id, true);
    if (!a) {
        s_reply_error(c, identity, m, FW_EINVAL, "bad agent id %s", id);
        return;
    }
    if (!a->alive) {
        /* Its P/agents key may simply not have reached our watch yet. */
        char key[320];
        fw_etcd_kv *kv = NULL;
        snprintf(key, sizeof key, "%s/agents/%s", c->o.etcd_prefix, id);
        if (fw_etcd_get(c->etcd, key, &kv) == 0) {
            coord_parse_agent(c->st, id, kv->value);
            fw_etcd_kv_free(&kv);
        }
    }
    const char *host = fw_msg_get_str_f(m, FW_F_AGENT_REGISTER_hostname);
    const char *ep = fw_msg_get_str_f(m, FW_F_AGENT_REGISTER_endpoint);
    /* Gang rendezvous uses the host others reach the agent at. */
    char hbuf[257];
    snprintf(hbuf, sizeof hbuf, "%s", host);
    if (ep && strncmp(ep, "tcp://", 6) == 0) {
        snprintf(hbuf, sizeof hbuf, "%s", ep + 6);
        char *colon = strrchr(hbuf, ':');
        if (colon) *colon = '\0';
    }
    free(a->host);
    a->host = strdup(hbuf);
    const fw_val_t *res = fw_msg_get_map_f(m, FW_F_AGENT_REGISTER_resources);
    a->cpus = fw_val_map_uint(res, "cpus");
    a->memory_mb = fw_val_map_uint(res, "memory_mb");
    const fw_val_t *gpus = fw_val_map_get(res, "gpus");
    a->ngpus = (int)fw_val_size(gpus);
    if (a->ngpus > 64) a->ngpus = 64;
    const fw_val_t *labels = fw_msg_get_map_f(m, FW_F_AGENT_REGISTER_labels);
    size_t nl = fw_val_size(labels);
    const char *keys[64], *vals[64];
    int n = 0;
    for (size_t i = 0; i < nl && n < 64; i++) {
        keys[n] = fw_val_map_key(labels, i);
        vals[n] = fw_val_str(fw_val_at(labels, i));
        if (keys[n] && vals[n]) n++;
    }
    coord_agent_set_labels(a, n, keys, vals);
    bool was_connected = a->connected;
    a->connected = true;
    a->ever_seen = true;
    a->last_seen_mono = fw_mono_ms();
    a->registered_at = fw_wall_ms();

    /* Reconcile what it runs with what we believe. */
    fw_val_t *cancel = fw_val_new_array();
    const fw_val_t *running = fw_msg_get_array_f(m, FW_F_AGENT_REGISTER_running);
    size_t nr = fw_val_size(running);
    int kept = 0, cancelled = 0, lost = 0;
    zhashx_t *listed = zhashx_new();
    int64_t now_wall = fw_wall_ms(), now_mono = fw_mono_ms();
    for (size_t i = 0; i < nr; i++) {
        const fw_val_t *r = fw_val_at(running, i);
        const char *tid = fw_val_map_str(r, "task_id");
        uint64_t att = fw_val_map_uint(r, "attempt");
        const char *rstate = fw_val_map_str(r, "state");
        bool exited = rstate && strcmp(rstate, "exited") == 0;
        if (!tid) continue;
        coord_task_t *t = coord_task_find(c->st, tid);
        bool current = t && t->agent == a && t->attempt == att &&
                       (t->state == TASK_ASSIGNED || t->state == TASK_RUNNING);
        if (current) {
            if (listed) zhashx_insert(listed, tid, (void *)1);
            t->unconfirmed = false;
            t->sent = true;
            if (t->state == TASK_ASSIGNED) {
                uint64_t sm = fw_val_map_uint(r, "started_ms");
                coord_task_started(c->st, t, sm ? (int64_t)sm : now_wall);
            }
            kept++;
        } else if (!exited) {
            /* Unknown, finished, or an attempt superseded: stop it. */
            if (cancel) fw_val_array_push_str(cancel, tid);
            cancelled++;
        }
    }
    /* Held here, not listed: the agent does not have it (it restarted, or
     * the TASK_ASSIGN never arrived). A just-sent assignment may still be on
     * its way: those wait for the assign timeout instead. */
    for (coord_task_t *t = a->held, *next; t; t = next) {
        next = t->anext;
        char tid[COORD_TASKID_MAX];
        coord_task_id_format(t, tid, sizeof tid);
        if (listed && zhashx_lookup(listed, tid)) continue;
        if (t->state != TASK_ASSIGNED && t->state != TASK_RUNNING) continue;
        if (t->sent && !t->unconfirmed && now_mono - t->sent_mono < 2000) continue;
        if (!t->sent && !t->unconfirmed) continue; /* its assignment is not even committed */
        t->sent = false;
        c->m.task_retries_total++;
        c->m.task_results_total[COORD_OUT_LOST]++;
        coord_task_retry_or_fail(c->st, t, "not running on its agent after re-registration",
                                 now_wall);
        lost++;
        next = a->held; /* a gang restart may have unlinked several */
    }
    zhashx_destroy(&listed);
    a->reconcile_deadline = 0;

    fw_msg_t *rep = fw_msg_new_reply(m, FW_MSG_AGENT_REGISTERED);
    if (rep) {
        fw_msg_set_str_f(rep, FW_F_AGENT_REGISTERED_agent_id, a->id);
        fw_msg_set_uint_f(rep, FW_F_AGENT_REGISTERED_heartbeat_ms,
                          (uint64_t)c->o.agent_heartbeat_ms);
        if (cancel && fw_val_size(cancel) > 0)
            fw_msg_set_array_f(rep, FW_F_AGENT_REGISTERED_cancel, &cancel);
        s_reply(c, identity, rep);
        fw_msg_destroy(&rep);
    }
    fw_val_destroy(&cancel);
    if (a->drain) coord_agents_drain_action(c, a, 0, true);
    fw_info("event=agent-registered agent=%s host=%s cpus=%" PRIu64 " memory_mb=%" PRIu64
            " gpus=%d running=%zu kept=%d cancelled=%d lost=%d reconnect=%d",
            a->id, a->host, a->cpus, a->memory_mb, a->ngpus, nr, kept, cancelled, lost,
            was_connected);
    coord_want_sched(c);
}

static coord_agent_t *s_known(coord_t *c, zframe_t *identity, const char *who, const fw_msg_t *m) {
    coord_agent_t *a = coord_agent_get(c->st, who, false);
    if (!a || !a->connected) {
        s_reply_error(c, identity, m, FW_ENOTFOUND,
                      "%s: not registered with this leader: send "
                      "AGENT_REGISTER",
                      who);
        return NULL;
    }
    a->last_seen_mono = fw_mono_ms();
    return a;
}

static void s_heartbeat(coord_t *c, zframe_t *identity, const char *who, const fw_msg_t *m) {
    coord_agent_t *a = s_known(c, identity, who, m);
    if (!a) return;
    bool draining = fw_msg_get_bool_f(m, FW_F_HEARTBEAT_draining);
    if (draining != a->self_draining) coord_want_sched(c);
    a->self_draining = draining;
    const fw_val_t *running = fw_msg_get_array_f(m, FW_F_HEARTBEAT_running);
    size_t n = fw_val_size(running);
    const char **ids = n ? calloc(n, sizeof *ids) : NULL;
    for (size_t i = 0; ids && i < n; i++) ids[i] = fw_val_str(fw_val_at(running, i));
    int64_t now = fw_mono_ms();
    /* Stopped attempts no longer listed are gone: give their room back.
     * Only zombies older than a heartbeat: a younger one may not have
     * reached the agent's list yet. */
    if (coord_agent_zombies_prune(a, ids, ids ? n : 0, now, c->o.agent_heartbeat_ms) > 0)
        coord_want_sched(c);
    /* Tasks the agent runs that are not (or no longer) its to run. */
    zhashx_t *set = zhashx_new();
    for (size_t i = 0; ids && i < n; i++) {
        if (!ids[i]) continue;
        if (set) zhashx_insert(set, ids[i], (void *)1);
        coord_task_t *t = coord_task_find(c->st, ids[i]);
        if (!t || t->agent != a || !(t->state == TASK_ASSIGNED || t->state == TASK_RUNNING)) {
            bool zombie = false;
            for (size_t z = 0; z < a->nzombies && !zombie; z++)
                zombie = strcmp(a->zombies[z].task_id, ids[i]) == 0;
            if (!zombie || now - a->last_seen_mono > c->o.agent_heartbeat_ms)
                s_cancel_any(c, a->id, ids[i], "not assigned to this agent");
        }
    }
    /* Assignments that went astray: sent long ago, never started, not listed. */
    for (coord_task_t *t = a->held, *next; t && set; t = next) {
        next = t->anext;
        if (t->state != TASK_ASSIGNED || !t->sent || now - t->sent_mono < c->o.assign_timeout_ms)
            continue;
        char tid[COORD_TASKID_MAX];
        coord_task_id_format(t, tid, sizeof tid);
        if (zhashx_lookup(set, tid)) continue;
        fw_warn("event=assign-timeout task=%s attempt=%u agent=%s", tid, t->attempt, a->id);
        t->sent = false;
        c->m.task_retries_total++;
        coord_task_retry_or_fail(c->st, t, "assignment timed out: never started", fw_wall_ms());
        coord_want_sched(c);
        next = a->held;
    }
    zhashx_destroy(&set);
    free(ids);
    fw_msg_t *ack = fw_msg_new_reply(m, FW_MSG_ACK);
    if (ack) {
        s_reply(c, identity, ack);
        fw_msg_destroy(&ack);
    }
}

static void s_started(coord_t *c, zframe_t *identity, const char *who, const fw_msg_t *m) {
    coord_agent_t *a = coord_agent_get(c->st, who, false);
    const char *tid = fw_msg_get_str_f(m, FW_F_TASK_STARTED_task_id);
    uint64_t att = fw_msg_get_uint_f(m, FW_F_TASK_STARTED_attempt);
    coord_task_t *t = coord_task_find(c->st, tid);
    if (a && t && t->agent == a && t->attempt == att && t->state == TASK_ASSIGNED) {
        uint64_t sm = fw_msg_get_uint_f(m, FW_F_TASK_STARTED_started_ms);
        coord_task_started(c->st, t, sm ? (int64_t)sm : fw_wall_ms());
    }
    (void)identity;
}

typedef struct {
    char agent[COORD_ID_MAX + 1];
    char task[COORD_TASKID_MAX];
    uint64_t attempt;
    uint64_t request_id;
} s_ack;

static void s_ack_action(coord_t *c, void *p, uint64_t u, bool committed) {
    s_ack *k = p;
    if (committed) {
        fw_msg_t *m = fw_msg_new(FW_MSG_TASK_RESULT_ACK);
        if (m) {
            fw_msg_set_request_id(m, k->request_id);
            fw_msg_set_str_f(m, FW_F_TASK_RESULT_ACK_task_id, k->task);
            fw_msg_set_uint_f(m, FW_F_TASK_RESULT_ACK_attempt, k->attempt);
            coord_agents_send(c, k->agent, m);
            fw_msg_destroy(&m);
        }
    }
    free(k);
    (void)u;
}

static void s_result(coord_t *c, zframe_t *identity, const char *who, const fw_msg_t *m) {
    const char *tid = fw_msg_get_str_f(m, FW_F_TASK_RESULT_task_id);
    uint64_t att = fw_msg_get_uint_f(m, FW_F_TASK_RESULT_attempt);
    const char *status = fw_msg_get_str_f(m, FW_F_TASK_RESULT_status);
    int outcome = coord_outcome_parse(status);
    if (outcome < 0) {
        s_reply_error(c, identity, m, FW_EINVAL, "TASK_RESULT.status: unknown status \"%.32s\"",
                      status);
        return;
    }
    coord_agent_t *a = coord_agent_get(c->st, who, false);
    coord_task_t *t = coord_task_find(c->st, tid);
    const char *result = fw_msg_get_str_f(m, FW_F_TASK_RESULT_result);
    char *norm = NULL;
    if (result) {
        /* JSON travels as text: check it before it goes into a record. */
        json_t *o = json_loads(result, JSON_DECODE_ANY, NULL);
        if (!o) {
            s_reply_error(c, identity, m, FW_EINVAL, "TASK_RESULT.result of %s: not valid JSON",
                          tid);
            return;
        }
        norm = json_dumps(o, JSON_COMPACT | JSON_ENCODE_ANY);
        json_decref(o);
    }
    if (a) coord_agent_zombie_gone(a, tid, (uint32_t)att);
    bool accept = a && t && t->agent == a && t->attempt == att &&
                  (t->state == TASK_ASSIGNED || t->state == TASK_RUNNING) &&
                  !(t->state == TASK_RUNNING && t->result); /* gang rank already exited */
    if (accept) {
        t->unconfirmed = false;
        int to = coord_task_finish(c->st, t, outcome,
                                   (int)fw_msg_get_int_f(m, FW_F_TASK_RESULT_exit_code), norm,
                                   fw_msg_get_str_f(m, FW_F_TASK_RESULT_error), fw_wall_ms(),
                                   (size_t)c->o.result_max_bytes);
        c->m.task_results_total[outcome]++;
        if (to == TASK_PENDING) c->m.task_retries_total++;
        coord_want_sched(c);
    } else {
        c->m.duplicate_results_total++;
        fw_debug("event=result-ignored task=%s attempt=%" PRIu64 " agent=%s", tid, att, who);
    }
    free(norm);
    if (a && t && t->agent == a && !t->holds) coord_want_sched(c);
    s_ack *k = calloc(1, sizeof *k);
    if (!k) return;
    snprintf(k->agent, sizeof k->agent, "%s", who);
    snprintf(k->task, sizeof k->task, "%s", tid);
    k->attempt = att;
    k->request_id = fw_msg_request_id(m);
    /* The ack waits for every change queued so far: the accepted transition
     * or, for a duplicate, the one that made it a duplicate. */
    coord_store_after(c->store, s_ack_action, k, 0);
}

static void s_log(coord_t *c, const char *who, const fw_msg_t *m) {
    const char *tid = fw_msg_get_str_f(m, FW_F_TASK_LOG_task_id);
    coord_task_t *t = coord_task_find(c->st, tid);
    if (!t || !t->agent || strcmp(t->agent->id, who) != 0 ||
        t->attempt != fw_msg_get_uint_f(m, FW_F_TASK_LOG_attempt))
        return;
    if (fw_msg_get_uint_f(m, FW_F_TASK_LOG_stream) > 1) return; /* agent notes stay there */
    size_t len = 0;
    const void *d = fw_msg_get_bin_f(m, FW_F_TASK_LOG_data, &len);
    if (d && len) s_tail_append(t, d, len);
}

static void s_progress(coord_t *c, const char *who, const fw_msg_t *m) {
    coord_task_t *t = coord_task_find(c->st, fw_msg_get_str_f(m, FW_F_TASK_PROGRESS_task_id));
    if (!t || !t->agent || strcmp(t->agent->id, who) != 0 ||
        t->attempt != fw_msg_get_uint_f(m, FW_F_TASK_PROGRESS_attempt) ||
        coord_task_terminal(t->state))
        return; /* an earlier attempt, or another agent's: stale */
    if (fw_msg_has_f(m, FW_F_TASK_PROGRESS_fraction))
        t->progress = (float)fw_msg_get_double_f(m, FW_F_TASK_PROGRESS_fraction);
    coord_ml_progress(c, t, m);
}

static void s_redirect(coord_t *c, zframe_t *identity, const fw_msg_t *m) {
    fw_msg_t *r;
    if (c->L.leader_agent[0] && strcmp(c->L.leader_name, c->o.name) != 0) {
        r = fw_msg_new_reply(m, FW_MSG_REDIRECT);
        if (!r) return;
        fw_msg_set_str_f(r, FW_F_REDIRECT_leader_endpoint, c->L.leader_agent);
        fw_msg_set_str_f(r, FW_F_REDIRECT_leader_name, c->L.leader_name);
        fw_msg_set_uint_f(r, FW_F_REDIRECT_epoch, (uint64_t)c->L.leader_epoch);
    } else {
        r = fw_msg_new_error(m, FW_ENOTLEADER, "no leader elected yet");
        if (!r) return;
        fw_msg_set_uint(r, "retry_after_ms", 500);
    }
    s_reply(c, identity, r);
    fw_msg_destroy(&r);
}

static void s_handle(coord_t *c, zframe_t *identity, const fw_msg_t *m) {
    char who[COORD_ID_MAX + 1];
    size_t idlen = zframe_size(identity);
    if (idlen == 0 || idlen > COORD_ID_MAX || memchr(zframe_data(identity), 0, idlen)) {
        coord_warn_limited(c, "event=bad-agent-identity len=%zu", idlen);
        return;
    }
    memcpy(who, zframe_data(identity), idlen);
    who[idlen] = '\0';
    int id = fw_msg_id(m);
    if (id == FW_MSG_ACK) return;
    if (!coord_is_leader(c)) {
        if (id != FW_MSG_ERROR && id != FW_MSG_TASK_LOG && id != FW_MSG_TASK_PROGRESS)
            s_redirect(c, identity, m);
        return;
    }
    switch (id) {
    case FW_MSG_AGENT_REGISTER:
        s_register(c, identity, who, m);
        break;
    case FW_MSG_HEARTBEAT:
        s_heartbeat(c, identity, who, m);
        break;
    case FW_MSG_TASK_STARTED:
        s_started(c, identity, who, m);
        break;
    case FW_MSG_TASK_RESULT:
        s_result(c, identity, who, m);
        break;
    case FW_MSG_TASK_LOG:
        s_log(c, who, m);
        break;
    case FW_MSG_TASK_PROGRESS:
        s_progress(c, who, m);
        break;
    case FW_MSG_LOG_FETCH_REPLY:
        coord_logs_on_reply(c, who, m);
        break;
    case FW_MSG_ERROR:
        if (coord_logs_count(c)) coord_logs_on_reply(c, who, m);
        fw_debug("event=agent-error agent=%s code=%lld message=\"%s\"", who,
                 (long long)fw_msg_get_int_f(m, FW_F_ERROR_code),
                 fw_msg_get_str_f(m, FW_F_ERROR_message));
        break;
    default:
        c->m.bad_frames_total[COORD_EP_AGENT]++;
        coord_warn_limited(c, "event=bad-frame endpoint=agent agent=%s msg=%s reason=unexpected",
                           who, fw_msg_name(m));
        s_reply_error(c, identity, m, FW_EPROTO, "%s is not a message agents send", fw_msg_name(m));
    }
}

/* A frame that did not decode: tell the agent why when we know who sent it. */
static void s_bad_frame(coord_t *c, zframe_t *identity, int rc) {
    fw_msg_t *e = fw_msg_new_error(NULL, rc, "bad frame: %s", fw_err_detail());
    if (e) {
        s_reply(c, identity, e);
        fw_msg_destroy(&e);
    }
}

int coord_agents_on_readable(zloop_t *loop, zsock_t *sock, void *arg) {
    (void)loop;
    coord_read_burst(arg, sock, COORD_EP_AGENT, S_BURST, s_handle, s_bad_frame);
    return 0;
}
