/* agent_daemon.c - the agent's event loop, leader connection and reporting.
 *
 * Theory of operation
 * -------------------
 * Link to the leader (one DEALER socket, identity = agent id):
 *
 *   NO-LEADER --etcd names a leader--> REGISTERING --AGENT_REGISTERED--> REGISTERED
 *       ^  (s_on_etcd)                  | s_connect sends AGENT_REGISTER    |
 *       |                               | again with backoff (s_cron)       | HEARTBEAT every
 *       |                               |                                   | heartbeat_ms (s_cron)
 *       +-- leader changes in etcd, a REDIRECT, a higher epoch, an ERROR to a heartbeat,
 *           or the leader silent for 3 heartbeats: back to REGISTERING (s_connect /
 *           s_reregister); a new leader always gets a fresh socket.
 *
 * Guarantees:
 *   1. Fencing: every message from a coordinator passes agent_epoch_check
 *      first; a lower epoch is dropped and logged (event=stale-epoch). A
 *      leader epoch seen in etcd raises the fence before the leader speaks.
 *   2. Results: TASK_RESULT is sent when a task ends and again, for every
 *      result still unacknowledged, after each registration and every
 *      resend period (s_cron); the runner forgets a result only on
 *      TASK_RESULT_ACK. Duplicates are harmless by contract.
 *   3. A reply to TASK_ASSIGN (ACK or ERROR) precedes the task's
 *      TASK_STARTED and TASK_RESULT: events raised while the assign is being
 *      handled are deferred until the reply is out (s_flush_deferred).
 *   4. Nothing here blocks on etcd: that side lives in its actor
 *      (agent_etcd.c); sends never block (ZMQ_SNDTIMEO 0; a full queue drops
 *      the message, and the resend paths above cover what matters).
 *
 * Heartbeat: every agent.heartbeat_interval, at most a quarter of the lease
 * TTL so that three lost beats still leave slack before expiry; the leader's
 * reply (ACK) is how the agent knows its leader is alive. */
#include "agent_daemon.h"

#include "agent_epoch.h"
#include "agent_etcd.h"
#include "agent_proc.h"
#include "agent_resources.h"
#include "agent_task.h"
#include "fw_err.h"
#include "fw_etcd.h"
#include "fw_file.h"
#include "fw_log.h"
#include "fw_proto.h"
#include "fw_time.h"

#include <czmq.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef FW_AGENT_VERSION
#define FW_AGENT_VERSION "dev"
#endif

#define S_CRON_MS         50   /* cron period: kill deadlines are this precise */
#define S_RECV_BATCH      1024 /* messages handled per socket wake-up */
#define S_SNDHWM          200000 /* queued outgoing messages before sends drop */
#define S_MAX_RUNNING_REC 1024 /* AGENT_REGISTER.running bound */
#define S_DEFER_MAX       8

extern char **environ;

struct agent_daemon_t {
    agent_config_t cfg;
    agent_resources_t res;
    agent_runner_t *runner;
    agent_epoch_t *epoch;
    zactor_t *etcd;
    zloop_t *loop;
    int sigfd;
    zcert_t *cert;           /* CURVE: our key pair */
    char server_key[41];     /* CURVE: the coordinators' public key (Z85) */

    /* leader link */
    zsock_t *dealer;
    char leader_ep[257];
    char leader_name[65];
    uint64_t leader_epoch;   /* as seen in etcd */
    bool registered;
    int reg_failures;
    int64_t reg_sent_at, reg_next; /* monotonic ms */
    uint64_t reg_req, hb_req;      /* request ids of the last register / heartbeat */
    int64_t last_rx;               /* monotonic ms of the last message from the leader */
    int64_t heartbeat_ms;
    int64_t hb_next;
    uint64_t hb_seq;
    uint64_t req_seq;

    /* events raised while a TASK_ASSIGN is handled (guarantee 3) */
    bool deferring;
    agent_task_t *defer_started[S_DEFER_MAX];
    agent_task_t *defer_result[S_DEFER_MAX];
    int ndefer_started, ndefer_result;

    /* stopping */
    bool stopping;
    int64_t stop_deadline;
    int64_t stale_window;  /* rate limit of stale-epoch lines */
    int stale_logged;
    uint64_t seed;
    uint64_t send_drops;
};

/* ------------------------------------------------------------ sending */

static int s_send(agent_daemon_t *d, fw_msg_t *m) {
    if (!d->dealer) return FW_ECLOSED;
    fw_msg_set_sender(m, d->cfg.id);
    fw_msg_set_epoch(m, agent_epoch_get(d->epoch));
    if (fw_msg_request_id(m) == 0) fw_msg_set_request_id(m, ++d->req_seq);
    int rc = fw_msg_send(d->dealer, NULL, m);
    if (rc < 0) {
        if (d->send_drops++ % 1000 == 0)
            fw_warn("event=send-failed msg=%s err=%s drops=%" PRIu64 " detail=\"%s\"",
                    fw_msg_name(m), fw_errname(rc), d->send_drops, fw_err_detail());
    }
    return rc;
}

static void s_reply_error(agent_daemon_t *d, const fw_msg_t *req, int code, const char *detail) {
    fw_msg_t *e = fw_msg_new_error(req, code, "%s", detail);
    if (e) s_send(d, e);
    fw_msg_destroy(&e);
}

static void s_reply_ack(agent_daemon_t *d, const fw_msg_t *req, const char *detail) {
    fw_msg_t *a = fw_msg_new_reply(req, FW_MSG_ACK);
    if (!a) return;
    if (detail) fw_msg_set_str(a, "detail", detail);
    s_send(d, a);
    fw_msg_destroy(&a);
}

/* ------------------------------------------------- runner -> messages */

static void s_send_started(agent_daemon_t *d, const agent_task_t *t) {
    fw_msg_t *m = fw_msg_new(FW_MSG_TASK_STARTED);
    if (!m) return;
    fw_msg_set_str_f(m, FW_F_TASK_STARTED_task_id, t->task_id);
    fw_msg_set_uint_f(m, FW_F_TASK_STARTED_attempt, t->attempt);
    if (t->pid > 0) fw_msg_set_uint_f(m, FW_F_TASK_STARTED_pid, (uint64_t)t->pid);
    fw_msg_set_uint_f(m, FW_F_TASK_STARTED_started_ms, (uint64_t)t->started_ms);
    s_send(d, m);
    fw_msg_destroy(&m);
}

static void s_send_result(agent_daemon_t *d, agent_task_t *t) {
    const agent_result_t *r = &t->result;
    fw_msg_t *m = fw_msg_new(FW_MSG_TASK_RESULT);
    if (!m) return;
    fw_msg_set_str_f(m, FW_F_TASK_RESULT_task_id, r->task_id);
    fw_msg_set_uint_f(m, FW_F_TASK_RESULT_attempt, r->attempt);
    fw_msg_set_str_f(m, FW_F_TASK_RESULT_status, r->status);
    if (r->has_exit_code) fw_msg_set_int_f(m, FW_F_TASK_RESULT_exit_code, r->exit_code);
    if (r->result && fw_msg_set_str_f(m, FW_F_TASK_RESULT_result, r->result) < 0)
        fw_warn("event=result-dropped task=%s field=result detail=\"%s\"", r->task_id,
                fw_err_detail());
    if (r->error) fw_msg_set_str_f(m, FW_F_TASK_RESULT_error, r->error);
    if (r->finished_ms) fw_msg_set_uint_f(m, FW_F_TASK_RESULT_finished_ms, r->finished_ms);
    if (s_send(d, m) == 0) t->result_sent_at = fw_mono_ms();
    fw_msg_destroy(&m);
}

static void s_ev_started(void *arg, const agent_task_t *t) {
    agent_daemon_t *d = arg;
    if (d->deferring && d->ndefer_started < S_DEFER_MAX) {
        d->defer_started[d->ndefer_started++] = (agent_task_t *)t;
        return;
    }
    if (d->dealer) s_send_started(d, t);
}

static void s_ev_result(void *arg, agent_task_t *t) {
    agent_daemon_t *d = arg;
    if (d->deferring && d->ndefer_result < S_DEFER_MAX) {
        d->defer_result[d->ndefer_result++] = t;
        return;
    }
    /* Also while (re)registering: the leader's pipe is ordered, so this
     * follows our AGENT_REGISTER, and a duplicate is harmless. Without a
     * leader it waits for the registration, which resends every result. */
    if (d->dealer) s_send_result(d, t);
}

/* metrics.curve: [[step, loss], ...] as a nested array (at most
 * FW_PROTO_MAX_ITEMS points; the rest waits for no one: it is dropped). */
static void s_put_curve(fw_val_t *map, json_t *curve) {
    fw_val_t *arr = fw_val_new_array();
    size_t i;
    json_t *pt;
    json_array_foreach(curve, i, pt) {
        if (!arr || i >= FW_PROTO_MAX_ITEMS) break;
        fw_val_t *pair = fw_val_new_array();
        if (!pair) break;
        fw_val_array_push_uint(pair, (uint64_t)json_integer_value(json_array_get(pt, 0)));
        fw_val_array_push_double(pair, json_number_value(json_array_get(pt, 1)));
        fw_val_array_push(arr, &pair);
    }
    if (arr) fw_val_map_set(map, "curve", &arr);
}

static void s_ev_progress(void *arg, const agent_task_t *t, json_t *o) {
    agent_daemon_t *d = arg;
    if (!d->dealer) return;
    fw_msg_t *m = fw_msg_new(FW_MSG_TASK_PROGRESS);
    if (!m) return;
    fw_msg_set_str_f(m, FW_F_TASK_PROGRESS_task_id, t->task_id);
    fw_msg_set_uint_f(m, FW_F_TASK_PROGRESS_attempt, t->attempt);
    json_t *v;
    if ((v = json_object_get(o, "fraction")) && json_is_number(v))
        fw_msg_set_double_f(m, FW_F_TASK_PROGRESS_fraction, json_number_value(v));
    if ((v = json_object_get(o, "step")) && json_is_integer(v) && json_integer_value(v) >= 0)
        fw_msg_set_uint_f(m, FW_F_TASK_PROGRESS_step, (uint64_t)json_integer_value(v));
    /* finetune rank 0: a checkpoint the store holds (agent_ml.c sends these
     * unthrottled, after the put). */
    if ((v = json_object_get(o, "checkpoint")) && json_is_string(v) &&
        fw_msg_set_str_f(m, FW_F_TASK_PROGRESS_checkpoint, json_string_value(v)) < 0)
        fw_warn("event=checkpoint-field-dropped task=%s detail=\"%s\"", t->task_id,
                fw_err_detail());
    if ((v = json_object_get(o, "message")) && json_is_string(v)) {
        char msg[1025];
        snprintf(msg, sizeof msg, "%s", json_string_value(v));
        agent_utf8_sanitize(msg, strlen(msg));
        fw_msg_set_str_f(m, FW_F_TASK_PROGRESS_message, msg);
    }
    json_t *metrics = json_object_get(o, "metrics");
    if (json_is_object(metrics)) {
        fw_val_t *map = fw_val_new_map();
        const char *k;
        json_t *x;
        int n = 0;
        json_object_foreach(metrics, k, x) {
            if (!map || ++n > 256 || strlen(k) > 128) break;
            if (json_is_integer(x))
                fw_val_map_set_int(map, k, json_integer_value(x));
            else if (json_is_number(x))
                fw_val_map_set_double(map, k, json_number_value(x));
            else if (json_is_array(x) && strcmp(k, "curve") == 0)
                s_put_curve(map, x);
        }
        if (map && fw_msg_set_map_f(m, FW_F_TASK_PROGRESS_metrics, &map) < 0)
            fw_debug("event=progress-metrics-dropped detail=\"%s\"", fw_err_detail());
        fw_val_destroy(&map);
    }
    s_send(d, m);
    fw_msg_destroy(&m);
}

static void s_flush_deferred(agent_daemon_t *d) {
    d->deferring = false;
    for (int i = 0; i < d->ndefer_started; i++)
        if (d->dealer) s_send_started(d, d->defer_started[i]);
    for (int i = 0; i < d->ndefer_result; i++)
        if (d->dealer) s_send_result(d, d->defer_result[i]);
    d->ndefer_started = d->ndefer_result = 0;
}

/* --------------------------------------------------------- registering */

typedef struct {
    fw_val_t *list;
    int nrec;
    bool exited_pass;
} s_collect;

static void s_collect_rec(void *arg, agent_task_t *t) {
    s_collect *c = arg;
    bool running = t->state == AGENT_TASK_RUNNING;
    if (running == c->exited_pass || c->nrec >= S_MAX_RUNNING_REC) return;
    fw_val_t *rec = fw_val_new_map();
    if (!rec) return;
    fw_val_map_set_str(rec, "job_id", t->job_id);
    fw_val_map_set_str(rec, "task_id", t->task_id);
    fw_val_map_set_uint(rec, "attempt", t->attempt);
    fw_val_map_set_str(rec, "state", running ? "running" : "exited");
    if (running) {
        fw_val_map_set_uint(rec, "pid", (uint64_t)t->pid);
        fw_val_map_set_uint(rec, "started_ms", (uint64_t)t->started_ms);
    } else if (t->result.has_exit_code) {
        fw_val_map_set_int(rec, "exit_code", t->result.exit_code);
    }
    if (fw_val_array_push(c->list, &rec) == 0) c->nrec++;
}

static void s_send_register(agent_daemon_t *d) {
    fw_msg_t *m = fw_msg_new(FW_MSG_AGENT_REGISTER);
    if (!m) return;
    fw_msg_set_str_f(m, FW_F_AGENT_REGISTER_agent_id, d->cfg.id);
    fw_msg_set_str_f(m, FW_F_AGENT_REGISTER_hostname, d->cfg.host);
    fw_msg_set_str_f(m, FW_F_AGENT_REGISTER_version, FW_AGENT_VERSION);
    fw_val_t *res = fw_val_new_map();
    if (res) {
        fw_val_map_set_uint(res, "cpus", d->res.cpus);
        fw_val_map_set_uint(res, "memory_mb", d->res.memory_mb);
        if (d->res.disk_mb) fw_val_map_set_uint(res, "disk_mb", d->res.disk_mb);
        if (d->res.ngpus) {
            fw_val_t *gpus = fw_val_new_array();
            for (int i = 0; gpus && i < d->res.ngpus; i++) {
                const agent_gpu_t *g = &d->res.gpus[i];
                fw_val_t *gv = fw_val_new_map();
                if (!gv) break;
                fw_val_map_set_uint(gv, "index", g->index);
                fw_val_map_set_str(gv, "name", g->name);
                fw_val_map_set_uint(gv, "memory_mb", g->memory_mb);
                if (g->uuid[0]) fw_val_map_set_str(gv, "uuid", g->uuid);
                fw_val_array_push(gpus, &gv);
            }
            if (gpus) fw_val_map_set(res, "gpus", &gpus);
        }
        if (fw_msg_set_map_f(m, FW_F_AGENT_REGISTER_resources, &res) < 0)
            fw_error("event=register-build-failed field=resources detail=\"%s\"", fw_err_detail());
    }
    if (d->cfg.nlabels) {
        fw_val_t *labels = fw_val_new_map();
        for (size_t i = 0; labels && i < d->cfg.nlabels; i++) {
            const char *l = d->cfg.labels[i], *eq = strchr(l, '=');
            char key[64];
            snprintf(key, sizeof key, "%.*s", (int)(eq - l), l);
            fw_val_map_set_str(labels, key, eq + 1);
        }
        if (labels) fw_msg_set_map_f(m, FW_F_AGENT_REGISTER_labels, &labels);
    }
    /* Running tasks first: if the list must be cut, what runs matters most
     * (unacknowledged results are resent on their own anyway). */
    s_collect c = {fw_val_new_array(), 0, false};
    if (c.list) {
        agent_runner_foreach(d->runner, s_collect_rec, &c);
        c.exited_pass = true;
        agent_runner_foreach(d->runner, s_collect_rec, &c);
        if (fw_msg_set_array_f(m, FW_F_AGENT_REGISTER_running, &c.list) < 0)
            fw_error("event=register-build-failed field=running detail=\"%s\"", fw_err_detail());
    }
    fw_msg_set_request_id(m, ++d->req_seq);
    d->reg_req = d->req_seq;
    d->reg_sent_at = fw_mono_ms();
    int64_t wait = agent_backoff_ms(d->reg_failures + 1, d->cfg.retry_max_ms, &d->seed);
    if (wait < 1000) wait = 1000; /* give a recovering leader a moment to answer */
    d->reg_next = d->reg_sent_at + wait;
    d->reg_failures++;
    s_send(d, m);
    fw_msg_destroy(&m);
    fw_debug("event=register-sent leader=%s running=%d", d->leader_ep, c.nrec);
}

static void s_reregister(agent_daemon_t *d, const char *why) {
    if (!d->dealer) return;
    if (d->registered) fw_info("event=reregister reason=%s leader=%s", why, d->leader_ep);
    d->registered = false;
    d->reg_failures = 0;
    s_send_register(d);
}

static int s_on_dealer(zloop_t *loop, zsock_t *sock, void *arg);

/* A (new) leader endpoint: fresh socket, register. */
static void s_connect(agent_daemon_t *d, const char *endpoint) {
    if (d->dealer) {
        zloop_reader_end(d->loop, d->dealer);
        zsock_destroy(&d->dealer);
    }
    d->registered = false;
    d->reg_failures = 0;
    snprintf(d->leader_ep, sizeof d->leader_ep, "%s", endpoint);
    zsock_t *s = zsock_new(ZMQ_DEALER);
    if (!s) {
        fw_error("event=socket-failed leader=%s", endpoint);
        return;
    }
    zsock_set_identity(s, d->cfg.id);
    zsock_set_linger(s, 0);
    zsock_set_sndhwm(s, S_SNDHWM);
    zsock_set_rcvhwm(s, S_SNDHWM);
    zsock_set_sndtimeo(s, 0);
    zsock_set_rcvtimeo(s, 0);
    zsock_set_maxmsgsize(s, FW_PROTO_MAX_FRAME);
    zsock_set_reconnect_ivl(s, 100);
    zsock_set_reconnect_ivl_max(s, 2000);
    if (d->cert) {
        zcert_apply(d->cert, s);
        zsock_set_curve_serverkey(s, d->server_key);
    }
    if (zsock_connect(s, "%s", endpoint) < 0) {
        fw_error("event=connect-failed leader=%s detail=\"%s\"", endpoint, zmq_strerror(zmq_errno()));
        zsock_destroy(&s);
        return;
    }
    d->dealer = s;
    zloop_reader(d->loop, s, s_on_dealer, d);
    zloop_reader_set_tolerant(d->loop, s);
    d->last_rx = fw_mono_ms();
    s_send_register(d);
}

/* ------------------------------------------------------------ handlers */

static void s_resend_all(void *arg, agent_task_t *t) {
    agent_daemon_t *d = arg;
    if (t->state == AGENT_TASK_EXITED) s_send_result(d, t);
}

static void s_on_registered(agent_daemon_t *d, const fw_msg_t *m) {
    bool first = !d->registered;
    d->registered = true;
    d->reg_failures = 0;
    uint64_t hb = fw_msg_get_uint_f(m, FW_F_AGENT_REGISTERED_heartbeat_ms);
    /* The leader's period wins (it times our liveness by it); never slower
     * than our own bound of a quarter of the lease TTL. */
    if (hb >= 10) d->heartbeat_ms = (int64_t)hb;
    if (d->heartbeat_ms * 4 > d->cfg.lease_ttl_ms) d->heartbeat_ms = d->cfg.lease_ttl_ms / 4;
    if (first)
        fw_info("event=registered leader=%s endpoint=%s epoch=%" PRIu64 " heartbeat_ms=%" PRId64
                " tasks=%zu",
                d->leader_name[0] ? d->leader_name : fw_msg_sender(m), d->leader_ep,
                fw_msg_epoch(m), d->heartbeat_ms, agent_runner_count(d->runner));
    const fw_val_t *cancel = fw_msg_get_array_f(m, FW_F_AGENT_REGISTERED_cancel);
    for (size_t i = 0; cancel && i < fw_val_size(cancel); i++) {
        const char *id = fw_val_str(fw_val_at(cancel, i));
        if (id && agent_runner_cancel(d->runner, id, 0, -1, "not wanted by the new leader") > 0)
            fw_info("event=reconcile-cancel task=%s", id);
    }
    agent_runner_foreach(d->runner, s_resend_all, d);
    d->hb_next = fw_mono_ms() + d->heartbeat_ms;
}

static void s_on_assign(agent_daemon_t *d, const fw_msg_t *m) {
    agent_assign_t a;
    memset(&a, 0, sizeof a);
    a.job_id = fw_msg_get_str_f(m, FW_F_TASK_ASSIGN_job_id);
    a.task_id = fw_msg_get_str_f(m, FW_F_TASK_ASSIGN_task_id);
    a.attempt = fw_msg_get_uint_f(m, FW_F_TASK_ASSIGN_attempt);
    a.kind = fw_msg_get_str_f(m, FW_F_TASK_ASSIGN_kind);
    a.spec = fw_msg_get_str_f(m, FW_F_TASK_ASSIGN_spec);
    a.has_rank = fw_msg_has_f(m, FW_F_TASK_ASSIGN_rank);
    a.rank = fw_msg_get_uint_f(m, FW_F_TASK_ASSIGN_rank);
    a.world_size = fw_msg_get_uint_f(m, FW_F_TASK_ASSIGN_world_size);
    a.rendezvous = fw_msg_get_str_f(m, FW_F_TASK_ASSIGN_rendezvous);
    a.timeout_ms = fw_msg_get_uint_f(m, FW_F_TASK_ASSIGN_timeout_ms);
    /* env and gpus: the decoder bounds them (256 and 64 entries). */
    char *env_items[257];
    char env_buf[256][160];
    char **env_heap[256];
    int nheap = 0, nenv = 0;
    const fw_val_t *env = fw_msg_get_map_f(m, FW_F_TASK_ASSIGN_env);
    for (size_t i = 0; env && i < fw_val_size(env) && nenv < 256; i++) {
        const char *k = fw_val_map_key(env, i), *v = fw_val_str(fw_val_at(env, i));
        if (!k || !v) continue;
        size_t need = strlen(k) + strlen(v) + 2;
        char *slot = env_buf[nenv];
        if (need > sizeof env_buf[0]) {
            slot = malloc(need);
            if (!slot) continue;
            env_heap[nheap++] = (char **)slot;
        }
        snprintf(slot, need, "%s=%s", k, v);
        env_items[nenv++] = slot;
    }
    env_items[nenv] = NULL;
    a.env = (const char *const *)env_items;
    uint64_t gpus[64];
    const fw_val_t *gl = fw_msg_get_array_f(m, FW_F_TASK_ASSIGN_gpus);
    for (size_t i = 0; gl && i < fw_val_size(gl) && a.ngpus < 64; i++)
        gpus[a.ngpus++] = fw_val_uint(fw_val_at(gl, i));
    a.gpus = gpus;

    d->deferring = true;
    int rc = agent_runner_assign(d->runner, &a);
    if (rc < 0) {
        /* Refused before anything ran: the leader puts the task back.
         * Drain and stop refusals are FW_ESTATE. */
        char detail[1024];
        snprintf(detail, sizeof detail, "%s", fw_err_detail());
        s_reply_error(d, m, rc, detail);
        fw_info("event=task-refused task=%s attempt=%" PRIu64 " err=%s", a.task_id, a.attempt,
                fw_errname(rc));
    } else {
        s_reply_ack(d, m, rc == AGENT_ASSIGN_DUPLICATE ? "duplicate" : NULL);
        if (rc == AGENT_ASSIGN_DUPLICATE)
            fw_debug("event=task-duplicate task=%s attempt=%" PRIu64, a.task_id, a.attempt);
    }
    s_flush_deferred(d);
    for (int i = 0; i < nheap; i++) free(env_heap[i]);
}

static void s_on_cancel(agent_daemon_t *d, const fw_msg_t *m) {
    const char *task = fw_msg_get_str_f(m, FW_F_TASK_CANCEL_task_id);
    int64_t grace = fw_msg_has_f(m, FW_F_TASK_CANCEL_grace_ms)
                        ? (int64_t)fw_msg_get_uint_f(m, FW_F_TASK_CANCEL_grace_ms)
                        : -1;
    int n = agent_runner_cancel(d->runner, task, fw_msg_get_uint_f(m, FW_F_TASK_CANCEL_attempt),
                                grace, fw_msg_get_str_f(m, FW_F_TASK_CANCEL_reason));
    s_reply_ack(d, m, n ? "terminating" : "not running");
}

static void s_on_drain(agent_daemon_t *d, const fw_msg_t *m) {
    const char *id = fw_msg_get_str_f(m, FW_F_AGENT_SET_DRAIN_agent_id);
    if (strcmp(id, d->cfg.id) != 0) {
        char detail[200];
        snprintf(detail, sizeof detail, "this is agent %s, not %s", d->cfg.id, id);
        s_reply_error(d, m, FW_EINVAL, detail);
        return;
    }
    bool drain = fw_msg_get_bool_f(m, FW_F_AGENT_SET_DRAIN_drain);
    if (drain != agent_runner_draining(d->runner)) {
        char reason[300];
        fw_log_quote(fw_msg_get_str_f(m, FW_F_AGENT_SET_DRAIN_reason) ?
                         fw_msg_get_str_f(m, FW_F_AGENT_SET_DRAIN_reason) : "",
                     reason, sizeof reason);
        fw_info("event=%s running=%zu reason=%s", drain ? "drain" : "undrain",
                agent_runner_running(d->runner), reason);
    }
    agent_runner_set_draining(d->runner, drain);
    s_reply_ack(d, m, drain ? "draining" : "in service");
    d->hb_next = fw_mono_ms(); /* tell the leader in the next heartbeat, now */
}

static void s_on_log_fetch(agent_daemon_t *d, const fw_msg_t *m) {
    const char *task = fw_msg_get_str_f(m, FW_F_LOG_FETCH_task_id);
    uint64_t attempt = fw_msg_get_uint_f(m, FW_F_LOG_FETCH_attempt);
    uint64_t offset = fw_msg_get_uint_f(m, FW_F_LOG_FETCH_offset);
    size_t max = d->cfg.log_fetch_max;
    if (fw_msg_has_f(m, FW_F_LOG_FETCH_max_bytes)) {
        uint64_t want = fw_msg_get_uint_f(m, FW_F_LOG_FETCH_max_bytes);
        if (want && want < max) max = (size_t)want;
    }
    char dir[1200];
    if (agent_runner_log_dir(d->runner, task, dir, sizeof dir) < 0) {
        s_reply_error(d, m, FW_EINVAL, "task_id: not a valid task id");
        return;
    }
    uint8_t *data = NULL;
    size_t len = 0;
    uint64_t at = offset, end = 0;
    int rc = agent_log_read(dir, attempt, offset, max, &data, &len, &at, &end);
    bool running = agent_runner_is_running(d->runner, task, attempt);
    if (rc == FW_ENOTFOUND && agent_runner_find(d->runner, task, attempt)) {
        rc = 0; /* a task without output (noop, refused): an empty, finished log */
        at = end = 0;
    } else if (rc < 0) {
        char detail[300];
        snprintf(detail, sizeof detail, "no log of task %s attempt %" PRIu64 " on agent %s", task,
                 attempt, d->cfg.id);
        s_reply_error(d, m, rc, detail);
        free(data);
        return;
    }
    fw_msg_t *r = fw_msg_new_reply(m, FW_MSG_LOG_FETCH_REPLY);
    if (r) {
        fw_msg_set_str_f(r, FW_F_LOG_FETCH_REPLY_task_id, task);
        fw_msg_set_uint_f(r, FW_F_LOG_FETCH_REPLY_attempt, attempt);
        fw_msg_set_uint_f(r, FW_F_LOG_FETCH_REPLY_stream, fw_msg_get_uint_f(m, FW_F_LOG_FETCH_stream));
        fw_msg_set_uint_f(r, FW_F_LOG_FETCH_REPLY_offset, at);
        fw_msg_set_bin_f(r, FW_F_LOG_FETCH_REPLY_data, data ? data : (const uint8_t *)"", len);
        fw_msg_set_uint_f(r, FW_F_LOG_FETCH_REPLY_size, end);
        fw_msg_set_bool_f(r, FW_F_LOG_FETCH_REPLY_eof, !running && at + len >= end);
        s_send(d, r);
        fw_msg_destroy(&r);
    }
    free(data);
}

static void s_on_error_reply(agent_daemon_t *d, const fw_msg_t *m) {
    uint64_t req = fw_msg_request_id(m);
    int64_t code = fw_msg_get_int_f(m, FW_F_ERROR_code);
    const char *text = fw_msg_get_str_f(m, FW_F_ERROR_message);
    char q[1100];
    fw_log_quote(text ? text : "", q, sizeof q);
    if (req && req == d->reg_req) {
        fw_warn("event=register-refused leader=%s code=%s message=%s", d->leader_ep,
                fw_errname((int)code), q);
        return; /* s_cron retries with backoff */
    }
    fw_warn("event=error-reply code=%s message=%s", fw_errname((int)code), q);
    if (req && req == d->hb_req) s_reregister(d, "heartbeat-refused");
}

static void s_handle(agent_daemon_t *d, fw_msg_t *m) {
    int id = fw_msg_id(m);
    agent_epoch_verdict v = agent_epoch_check(d->epoch, fw_msg_epoch(m));
    if (v == AGENT_EPOCH_STALE) {
        int64_t now = fw_mono_ms();
        if (now - d->stale_window >= 1000) {
            d->stale_window = now;
            d->stale_logged = 0;
        }
        if (d->stale_logged++ < 10)
            fw_info("event=stale-epoch msg=%s epoch=%" PRIu64 " highest=%" PRIu64 " sender=%s",
                    fw_msg_name(m), fw_msg_epoch(m), agent_epoch_get(d->epoch), fw_msg_sender(m));
        return;
    }
    d->last_rx = fw_mono_ms();
    if (v == AGENT_EPOCH_NEW && id != FW_MSG_AGENT_REGISTERED) {
        fw_info("event=epoch-advanced epoch=%" PRIu64 " msg=%s", fw_msg_epoch(m), fw_msg_name(m));
        s_reregister(d, "higher-epoch");
    }
    if (d->stopping && id == FW_MSG_TASK_ASSIGN) {
        s_reply_error(d, m, FW_ESTATE, "agent is stopping");
        return;
    }
    switch (id) {
    case FW_MSG_AGENT_REGISTERED: s_on_registered(d, m); break;
    case FW_MSG_TASK_ASSIGN: s_on_assign(d, m); break;
    case FW_MSG_TASK_CANCEL: s_on_cancel(d, m); break;
    case FW_MSG_TASK_RESULT_ACK:
        agent_runner_ack(d->runner, fw_msg_get_str_f(m, FW_F_TASK_RESULT_ACK_task_id),
                         fw_msg_get_uint_f(m, FW_F_TASK_RESULT_ACK_attempt));
        break;
    case FW_MSG_AGENT_SET_DRAIN: s_on_drain(d, m); break;
    case FW_MSG_LOG_FETCH: s_on_log_fetch(d, m); break;
    case FW_MSG_ERROR: s_on_error_reply(d, m); break;
    case FW_MSG_REDIRECT: {
        const char *ep = fw_msg_get_str_f(m, FW_F_REDIRECT_leader_endpoint);
        uint64_t e = fw_msg_get_uint_f(m, FW_F_REDIRECT_epoch);
        if (e >= agent_epoch_get(d->epoch) && strcmp(ep, d->leader_ep) != 0) {
            fw_info("event=leader-changed source=redirect from=%s to=%s epoch=%" PRIu64,
                    d->leader_ep, ep, e);
            agent_epoch_check(d->epoch, e);
            snprintf(d->leader_name, sizeof d->leader_name, "%s",
                     fw_msg_get_str_f(m, FW_F_REDIRECT_leader_name));
            s_connect(d, ep);
        }
        break;
    }
    case FW_MSG_ACK: break; /* heartbeat and the like: last_rx is the point */
    default:
        fw_debug("event=unexpected-message msg=%s", fw_msg_name(m));
        if (fw_msg_info_of(m) && fw_msg_info_of(m)->reply != FW_MSG_NONE)
            s_reply_error(d, m, FW_EUNSUPPORTED, "agents do not serve this message");
        break;
    }
}

static int s_on_dealer(zloop_t *loop, zsock_t *sock, void *arg) {
    agent_daemon_t *d = arg;
    for (int i = 0; i < S_RECV_BATCH && d->dealer == sock; i++) {
        fw_msg_t *m = NULL;
        int rc = fw_msg_recv(sock, NULL, &m);
        if (rc == FW_ETIMEDOUT) break;
        if (rc < 0) {
            fw_warn("event=bad-frame err=%s detail=\"%s\"", fw_errname(rc), fw_err_detail());
            if (rc == FW_ECLOSED) break;
            continue;
        }
        s_handle(d, m);
        fw_msg_destroy(&m);
    }
    return 0;
}

static int s_on_etcd(zloop_t *loop, zsock_t *sock, void *arg) {
    agent_daemon_t *d = arg;
    char *what = NULL, *epoch = NULL, *ep = NULL, *name = NULL;
    if (zsock_recv(sock, "ssss", &what, &epoch, &ep, &name) < 0 || !what) return 0;
    if (strcmp(what, "LEADER") == 0) {
        uint64_t e = strtoull(epoch, NULL, 10);
        bool changed = e != d->leader_epoch || strcmp(ep, d->leader_ep) != 0 || !d->dealer;
        if (changed) {
            if (d->leader_ep[0])
                fw_info("event=leader-changed from=%s to=%s name=%s epoch=%" PRIu64, d->leader_ep,
                        ep, name, e);
            else
                fw_info("event=leader-found endpoint=%s name=%s epoch=%" PRIu64, ep, name, e);
            if (agent_epoch_check(d->epoch, e) == AGENT_EPOCH_STALE)
                /* etcd went back in time (restored or recreated): our fence
                 * would refuse this leader for ever. Say so loudly. */
                fw_error("event=stale-epoch source=etcd epoch=%" PRIu64 " highest=%" PRIu64
                         " hint=\"remove %s/epoch if etcd was reset\"",
                         e, agent_epoch_get(d->epoch), d->cfg.work_dir);
            d->leader_epoch = e;
            snprintf(d->leader_name, sizeof d->leader_name, "%s", name);
            if (!d->stopping) s_connect(d, ep);
        }
    } else if (d->leader_ep[0]) {
        /* Keep the connection: the leader may just be renewing its key (an
         * etcd restart); a real successor shows up as LEADER. */
        fw_warn("event=leader-lost endpoint=%s", d->leader_ep);
    } else {
        fw_info("event=no-leader prefix=%s/election/ action=waiting", d->cfg.etcd_prefix);
    }
    zstr_free(&what);
    zstr_free(&epoch);
    zstr_free(&ep);
    zstr_free(&name);
    return 0;
}

/* ---------------------------------------------------------------- cron */

typedef struct {
    fw_val_t *ids;
    int n;
} s_running_ids;

static void s_collect_id(void *arg, agent_task_t *t) {
    s_running_ids *r = arg;
    if (t->state != AGENT_TASK_RUNNING || r->n >= S_MAX_RUNNING_REC) return;
    if (fw_val_array_push_str(r->ids, t->task_id) == 0) r->n++;
}

static void s_send_heartbeat(agent_daemon_t *d) {
    fw_msg_t *m = fw_msg_new(FW_MSG_HEARTBEAT);
    if (!m) return;
    fw_msg_set_str_f(m, FW_F_HEARTBEAT_agent_id, d->cfg.id);
    fw_msg_set_uint_f(m, FW_F_HEARTBEAT_seq, ++d->hb_seq);
    s_running_ids r = {fw_val_new_array(), 0};
    if (r.ids) {
        agent_runner_foreach(d->runner, s_collect_id, &r);
        fw_msg_set_array_f(m, FW_F_HEARTBEAT_running, &r.ids);
    }
    double load[1];
    if (getloadavg(load, 1) == 1) fw_msg_set_double_f(m, FW_F_HEARTBEAT_load, load[0]);
    fw_msg_set_uint_f(m, FW_F_HEARTBEAT_mem_used_mb, agent_mem_used_mb());
    fw_msg_set_bool_f(m, FW_F_HEARTBEAT_draining, agent_runner_draining(d->runner) || d->stopping);
    fw_msg_set_request_id(m, ++d->req_seq);
    d->hb_req = d->req_seq;
    s_send(d, m);
    fw_msg_destroy(&m);
}

/* All periodic work, Redis style: one function, each duty on its own clock. */
static int s_cron(zloop_t *loop, int timer_id, void *arg) {
    agent_daemon_t *d = arg;
    int64_t now = fw_mono_ms();
    /* Resend unacknowledged results every 3 heartbeats: long enough for
     * the leader's batched commit, short enough to bound a lost message. */
    int64_t resend = d->registered ? 3 * d->heartbeat_ms : 0;
    if (resend && resend < 1000) resend = 1000;
    agent_runner_tick(d->runner, resend);
    if (d->dealer && !d->registered && now >= d->reg_next) {
        if (d->reg_failures >= 1)
            fw_info("event=register-retry leader=%s attempt=%d", d->leader_ep,
                    d->reg_failures + 1);
        s_send_register(d);
    }
    if (d->dealer && d->registered) {
        /* The leader answers every heartbeat; silence for three periods
         * means it restarted, or our connection is a ghost: re-register. */
        if (now - d->last_rx > 3 * d->heartbeat_ms + 500) {
            fw_warn("event=leader-silent leader=%s silent_ms=%" PRId64, d->leader_ep,
                    now - d->last_rx);
            d->last_rx = now;
            s_reregister(d, "leader-silent");
        } else if (now >= d->hb_next) {
            d->hb_next = now + d->heartbeat_ms;
            s_send_heartbeat(d);
        }
    }
    if (d->stopping) {
        if (agent_runner_running(d->runner) == 0) {
            /* Give the final results a moment to be acknowledged; they
             * are journaled either way. */
            bool pending = d->registered && agent_runner_count(d->runner) > 0;
            if (!pending || now >= d->stop_deadline) return -1;
        } else if (now >= d->stop_deadline) {
            fw_warn("event=stop-timeout running=%zu", agent_runner_running(d->runner));
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------- signals */

static void s_begin_stop(agent_daemon_t *d, int sig) {
    if (d->stopping) {
        /* A second signal: do not wait for the grace period. */
        fw_warn("event=stop-now signal=%d", sig);
        agent_runner_stop(d->runner, 0);
        d->stop_deadline = fw_mono_ms();
        return;
    }
    d->stopping = true;
    fw_info("event=stopping signal=%d running=%zu grace_ms=%" PRId64, sig,
            agent_runner_running(d->runner), d->cfg.kill_grace_ms);
    agent_runner_stop(d->runner, d->cfg.kill_grace_ms);
    /* grace, then SIGKILL, then a second to collect and send the results. */
    d->stop_deadline = fw_mono_ms() + d->cfg.kill_grace_ms + 1000;
    if (d->registered) s_send_heartbeat(d); /* draining=true: no new work */
}

static int s_on_signal(zloop_t *loop, zmq_pollitem_t *item, void *arg) {
    agent_daemon_t *d = arg;
    int sig;
    while ((sig = agent_signals_read(d->sigfd)) > 0) {
        if (sig == SIGCHLD)
            agent_runner_reap(d->runner);
        else if (sig == SIGTERM || sig == SIGINT)
            s_begin_stop(d, sig);
        else if (sig == SIGHUP)
            fw_info("event=sighup action=ignored");
    }
    return 0;
}

/* --------------------------------------------------------------- setup */

static char *s_agent_json(const agent_daemon_t *d) {
    json_t *o = json_object();
    json_object_set_new(o, "schema", json_integer(1));
    json_object_set_new(o, "id", json_string(d->cfg.id));
    json_object_set_new(o, "host", json_string(d->cfg.host));
    json_object_set_new(o, "cpus", json_integer(d->res.cpus));
    json_object_set_new(o, "memory_mb", json_integer((json_int_t)d->res.memory_mb));
    json_object_set_new(o, "disk_mb", json_integer((json_int_t)d->res.disk_mb));
    json_t *gpus = json_array();
    for (int i = 0; i < d->res.ngpus; i++) {
        const agent_gpu_t *g = &d->res.gpus[i];
        json_t *gj = json_object();
        json_object_set_new(gj, "index", json_integer(g->index));
        json_object_set_new(gj, "name", json_string(g->name));
        json_object_set_new(gj, "memory_mb", json_integer((json_int_t)g->memory_mb));
        json_object_set_new(gj, "uuid", json_string(g->uuid));
        json_array_append_new(gpus, gj);
    }
    json_object_set_new(o, "gpus", gpus);
    json_t *labels = json_object();
    for (size_t i = 0; i < d->cfg.nlabels; i++) {
        const char *l = d->cfg.labels[i], *eq = strchr(l, '=');
        char key[64];
        snprintf(key, sizeof key, "%.*s", (int)(eq - l), l);
        json_object_set_new(labels, key, json_string(eq + 1));
    }
    json_object_set_new(o, "labels", labels);
    json_object_set_new(o, "registered_at", json_integer(fw_wall_ms()));
    json_object_set_new(o, "version", json_string(FW_AGENT_VERSION));
    json_object_set_new(o, "pid", json_integer(getpid()));
    char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return s;
}

static fw_etcd *s_etcd_client(const agent_config_t *c, const fw_config *fcfg) {
    size_t n = 0;
    const char *const *eps = fw_config_get_list(fcfg, "etcd.endpoints", &n);
    char endpoints[4096] = "";
    size_t off = 0;
    for (size_t i = 0; i < n && off < sizeof endpoints; i++)
        off += (size_t)snprintf(endpoints + off, sizeof endpoints - off, "%s%s", i ? "," : "",
                                eps[i]);
    if (off >= sizeof endpoints) {
        fw_err_set(FW_ECONFIG, "etcd.endpoints: list too long");
        return NULL;
    }
    /* No single call may outlast a third of the lease it renews. */
    int64_t timeout = fw_config_get_duration(fcfg, "etcd.timeout");
    if (timeout > c->lease_ttl_ms / 3) timeout = c->lease_ttl_ms / 3;
    fw_etcd_opts o;
    memset(&o, 0, sizeof o);
    o.endpoints = endpoints;
    o.timeout_ms = (int)timeout;
    o.connect_timeout_ms = timeout < 1000 ? (int)timeout : 1000;
    const char *user = fw_config_get_str(fcfg, "etcd.user");
    char *password = NULL;
    if (*user) {
        o.user = user;
        const char *pf = fw_config_get_str(fcfg, "etcd.password_file");
        if (*pf) {
            if (fw_file_read(pf, 4096, &password, NULL) < 0) return NULL;
            password[strcspn(password, "\r\n")] = '\0';
        }
        o.password = password ? password : "";
    }
    fw_etcd *e = fw_etcd_new(&o);
    free(password);
    return e;
}

static int s_load_curve(agent_daemon_t *d) {
    zcert_t *server = zcert_load(d->cfg.curve_server_public_key_file);
    if (!server)
        return fw_err_set(FW_ECONFIG, "curve.server_public_key_file %s: cannot load a zcert",
                          d->cfg.curve_server_public_key_file);
    snprintf(d->server_key, sizeof d->server_key, "%s", zcert_public_txt(server));
    zcert_destroy(&server);
    if (d->cfg.curve_secret_key_file[0]) {
        d->cert = zcert_load(d->cfg.curve_secret_key_file);
        if (!d->cert)
            return fw_err_set(FW_ECONFIG, "curve.secret_key_file %s: cannot load a zcert",
                              d->cfg.curve_secret_key_file);
    } else {
        d->cert = zcert_new();
        if (!d->cert) return fw_err_set(FW_ENOMEM, "curve: cannot generate a key pair");
    }
    return 0;
}

agent_daemon_t *agent_daemon_new(const agent_config_t *cfg, const fw_config *fcfg) {
    agent_daemon_t *d = calloc(1, sizeof *d);
    if (!d) {
        fw_err_set(FW_ENOMEM, "agent: out of memory");
        return NULL;
    }
    d->cfg = *cfg;
    d->sigfd = -1;
    d->heartbeat_ms = cfg->heartbeat_ms;
    d->seed = (uint64_t)fw_mono_ns() ^ (uint64_t)getpid();
    /* Signals first: every thread started later (ZeroMQ's, the etcd
     * actor's) must inherit the blocked mask, or SIGCHLD / SIGTERM could be
     * delivered to one of them instead of our signalfd. */
    static const int sigs[] = {SIGCHLD, SIGTERM, SIGINT, SIGHUP, 0};
    signal(SIGPIPE, SIG_IGN);
    if ((d->sigfd = agent_signals_open(sigs)) < 0) goto fail;
    zsys_handler_set(NULL); /* czmq must not install its own SIGINT/SIGTERM handlers */

    if (fw_file_mkdirs(cfg->work_dir, 0755) < 0) goto fail;
    char path[1200];
    snprintf(path, sizeof path, "%s/epoch", cfg->work_dir);
    if (!(d->epoch = agent_epoch_open(path))) goto fail;
    if (agent_resources_discover(&d->res, cfg->cpus, cfg->memory_mb, cfg->work_dir,
                                 cfg->gpu_discovery ? "auto" : "none") < 0)
        goto fail;
    fw_info("event=resources cpus=%u memory_mb=%" PRIu64 " disk_mb=%" PRIu64
            " gpus=%d gpu_source=%s",
            d->res.cpus, d->res.memory_mb, d->res.disk_mb, d->res.ngpus, d->res.gpu_source);
    for (int i = 0; i < d->res.ngpus; i++) {
        char name[200];
        fw_info("event=gpu index=%u name=%s memory_mb=%" PRIu64 " uuid=%s", d->res.gpus[i].index,
                fw_log_quote(d->res.gpus[i].name, name, sizeof name), d->res.gpus[i].memory_mb,
                d->res.gpus[i].uuid);
    }
    if (cfg->curve && s_load_curve(d) < 0) goto fail;

    agent_runner_cfg rc = {.work_dir = cfg->work_dir,
                           .allow_command = cfg->allow_command,
                           .log_max_bytes = cfg->log_max_bytes,
                           .log_keep = cfg->log_keep,
                           .kill_grace_ms = cfg->kill_grace_ms,
                           .agent_id = cfg->id,
                           .base_env = environ,
                           .store_dir = cfg->store_dir,
                           .cache_dir = cfg->cache_dir,
                           .cache_max_bytes = cfg->cache_max_mb << 20,
                           .engine = cfg->engine};
    agent_runner_events ev = {s_ev_started, s_ev_result, s_ev_progress};
    if (!(d->runner = agent_runner_new(&rc, &ev, d))) goto fail;

    fw_etcd *etcd = s_etcd_client(cfg, fcfg);
    if (!etcd) goto fail;
    char *json = s_agent_json(d);
    if (!json) {
        fw_etcd_destroy(&etcd);
        fw_err_set(FW_ENOMEM, "agent: out of memory");
        goto fail;
    }
    agent_etcd_args ea = {etcd, cfg->etcd_prefix, cfg->id, json, cfg->lease_ttl_ms,
                          cfg->retry_max_ms};
    d->etcd = agent_etcd_start(&ea);
    free(json);
    if (!d->etcd) {
        fw_err_set(FW_EIO, "agent: cannot start the etcd thread");
        goto fail;
    }
    return d;
fail:;
    /* Destroying may log and overwrite the detail; keep the first cause. */
    char detail[1024];
    snprintf(detail, sizeof detail, "%s", fw_err_detail());
    agent_daemon_destroy(&d);
    fw_err_set(FW_EIO, "%s", detail);
    return NULL;
}

void agent_daemon_destroy(agent_daemon_t **p) {
    if (!p || !*p) return;
    agent_daemon_t *d = *p;
    zactor_destroy(&d->etcd); /* revokes the lease */
    if (d->dealer) {
        zsock_set_linger(d->dealer, 500); /* let the last results out */
        zsock_destroy(&d->dealer);
    }
    agent_runner_destroy(&d->runner);
    agent_epoch_destroy(&d->epoch);
    zloop_destroy(&d->loop);
    zcert_destroy(&d->cert);
    if (d->sigfd >= 0) close(d->sigfd);
    free(d);
    *p = NULL;
}

int agent_daemon_run(agent_daemon_t *d) {
    d->loop = zloop_new();
    if (!d->loop) return fw_err_set(FW_ENOMEM, "agent: no event loop");
    /* We handle SIGINT/SIGTERM ourselves; zloop must not stop on them. */
    zloop_set_nonstop(d->loop, true);
    agent_runner_set_loop(d->runner, d->loop);
    zmq_pollitem_t sig = {NULL, d->sigfd, ZMQ_POLLIN, 0};
    if (zloop_poller(d->loop, &sig, s_on_signal, d) < 0 ||
        zloop_reader(d->loop, zactor_sock(d->etcd), s_on_etcd, d) < 0 ||
        zloop_timer(d->loop, S_CRON_MS, 0, s_cron, d) < 0)
        return fw_err_set(FW_EIO, "agent: cannot set up the event loop");
    fw_info("event=agent-started id=%s work_dir=%s allow_command=%s results_pending=%zu", d->cfg.id,
            d->cfg.work_dir, d->cfg.allow_command ? "true" : "false",
            agent_runner_count(d->runner));
    zloop_start(d->loop);
    fw_info("event=agent-stopped id=%s", d->cfg.id);
    return 0;
}
