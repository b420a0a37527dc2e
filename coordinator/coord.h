/* coord.h - the coordinator daemon: one struct, the modules that share it.
 *
 * One event loop (czmq zloop) on the main thread owns every piece of state.
 * Threads exist only where a call blocks: etcd txns (coord_store.c, one
 * actor per txn in flight), the lease keepalive (coord_leader.c), etcd
 * watches (inside fw_etcd), and libmicrohttpd's server (coord_http.c, reads
 * a metrics snapshot under a mutex). Results come back to the loop as
 * messages, so no lock guards the model.
 *
 * Modules:
 *   coord_main.c    options, sockets, the loop, the cron, signals
 *   coord_leader.c  election state machine (STANDBY / RECOVERING / LEADER)
 *   coord_store.c   changes -> batched, fenced etcd txns; rebuild on takeover
 *   coord_state.c   jobs, tasks, agents, queue in memory (pure)
 *   coord_sched.c   placement, gangs, backfill (pure)
 *   coord_agents.c  agent endpoint: registration, reconciliation, results
 *   coord_client.c  client endpoint: token auth, requests, redirects, logs
 *   coord_data.c    artifact blobs (chunked upload/read) and dataset versions
 *   coord_models.c  the model registry: versions, aliases (docs/etcd-layout.md)
 *   coord_http.c    /healthz /readyz /metrics
 *   coord_spec.c, coord_tokens.c, coord_records.c, coord_json.c,
 *   coord_metrics.c, coord_config.c: pure helpers */
#ifndef COORD_H
#define COORD_H

#include "coord_config.h"
#include "coord_metrics.h"
#include "coord_sched.h"
#include "coord_state.h"
#include "coord_tokens.h"
#include "fw_etcd.h"
#include "fw_proto.h"

#include <czmq.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct coord_store coord_store_t;
typedef struct coord_http coord_http_t;
typedef struct coord_logs coord_logs_t;
typedef struct coord_data coord_data_t;
typedef struct coord coord_t;

typedef enum {
    COORD_STANDBY = 0,
    COORD_RECOVERING, /* leader: state rebuilt, waiting for agents; dispatches nothing */
    COORD_LEADER,
} coord_role_t;

const char *coord_role_name_of(coord_role_t r);

/* Leadership (coord_leader.c). */
typedef struct {
    coord_role_t role;
    int64_t lease;          /* 0: none */
    int64_t lease_deadline; /* mono ms: the lease may have expired after this */
    int64_t lease_ttl_ms;
    fw_etcd_election *election;
    int64_t epoch;    /* while leader */
    uint64_t gen;     /* bumped at every role change: stale txn results are dropped */
    int64_t next_try; /* mono ms: next (re)campaign attempt */
    int failures;
    fw_etcd_watch *watch; /* P/election/ */
    zmq_pollitem_t watch_item;
    bool watch_polled;
    zmq_pollitem_t elect_item; /* the election's own wait (fw_etcd_election_fd) */
    bool elect_polled;
    zactor_t *keepalive; /* keepalive thread */
    /* The leader as last seen (for REDIRECT). */
    char leader_name[65];
    char leader_client[300];
    char leader_agent[300];
    int64_t leader_epoch;
    int64_t leader_seen_mono;
    int64_t recover_deadline; /* mono ms: RECOVERING ends at the latest here */
    int64_t elected_mono;
} coord_leader_t;

struct coord {
    coord_opts_t o;
    fw_config *cfg;
    char *etcd_endpoints;
    char election_prefix[300];
    char election_value[1024];
    char coordinators_key[300];
    char client_ep[300], agent_ep[300], http_ep[300]; /* advertised */
    fw_etcd *etcd;    /* shared by the loop and the txn actors (thread-safe) */
    fw_etcd *etcd_ka; /* the keepalive thread's, with a TTL/3 timeout */
    zloop_t *loop;
    zsock_t *client_sock, *agent_sock;
    zactor_t *auth;
    zcert_t *cert;
    coord_tokens_t *tokens;
    coord_leader_t L;
    coord_state_t *st;
    coord_sched_t sched;
    coord_store_t *store;
    coord_logs_t *logs;
    coord_data_t *data; /* blobs and datasets (coord_data.c); created on first use */
    coord_http_t *http;
    coord_metrics_t m;
    /* agents' P/agents/ watch (leader only) */
    fw_etcd_watch *agents_watch;
    zmq_pollitem_t agents_item;
    bool agents_polled;
    bool sched_needed;
    bool stopping;
    int64_t next_compact;
    int64_t last_audit_seq;
    zhashx_t *idem; /* "<owner>\n<key>" -> job (not owned) */
    /* retained terminal jobs with tasks in memory, oldest first */
    coord_job_t **retained;
    size_t nretained, retaincap;
    /* rate limit of WARN lines about bad frames */
    int64_t warn_window_start;
    int warn_count;
};

/* ------------------------------------------------------ coord_leader.c */
/* Start the election machinery (lease, campaign, watches); never fails
 * for good: what etcd refuses is retried from the cron. */
void coord_leader_start(coord_t *c);
/* Periodic work: keepalive results, lease expiry, campaign retries, the end
 * of RECOVERING. Called from the cron and on election events. */
void coord_leader_cron(coord_t *c);
/* Step down now (lease lost, late keepalive, fenced txn). why goes to the log. */
void coord_leader_step_down(coord_t *c, const char *why);
/* Resign for shutdown: delete the election key, revoke the lease. */
void coord_leader_resign(coord_t *c);
/* True when the lease deadline passed: steps down first. Call before acting. */
bool coord_leader_check(coord_t *c);
bool coord_is_leader(const coord_t *c); /* RECOVERING or LEADER */
void coord_leader_stop(coord_t *c);

/* ------------------------------------------------------- coord_store.c */
typedef void(coord_action_fn)(coord_t *c, void *p, uint64_t u, bool committed);

coord_store_t *coord_store_new(coord_t *c);
void coord_store_destroy(coord_store_t **s);
/* The coord_state hook: queue the change for the next txn. */
void coord_store_hook(void *arg, coord_obj_kind kind, void *obj, int from, int to);
/* Queue a write of an object (a new job, an admin record) with its actor. */
void coord_store_touch(coord_store_t *s, coord_obj_kind kind, void *obj, int from, int to,
                       const char *by);
/* Run fn(c, p, u, true) once everything queued before it is committed, or
 * fn(c, p, u, false) if leadership ends first (free p then). */
void coord_store_after(coord_store_t *s, coord_action_fn *fn, void *p, uint64_t u);
/* Start txns for queued changes if a slot is free. */
void coord_store_flush(coord_store_t *s);
/* Leadership ended: forget every queued change and in-flight txn. */
void coord_store_reset(coord_store_t *s);
/* Load the state from etcd after winning the election. 0 / negative fw_err. */
int coord_store_rebuild(coord_store_t *s);
size_t coord_store_backlog(const coord_store_t *s);
size_t coord_store_inflight(const coord_store_t *s);
/* Range P/tasks/<job>/ for a job whose tasks are not in memory (JSON array
 * text of task views, caller frees). */
char *coord_store_read_tasks(coord_store_t *s, const char *job_id, const char *state_filter,
                             uint32_t offset, uint32_t limit, uint32_t *next);

/* ------------------------------------------------------ coord_agents.c */
int coord_agents_open(coord_t *c);
/* A frame arrived on the agent socket. */
int coord_agents_on_readable(zloop_t *loop, zsock_t *sock, void *arg);
/* Leader: start watching P/agents/ (after rebuild). */
int coord_agents_watch_start(coord_t *c);
void coord_agents_watch_stop(coord_t *c);
/* Periodic: reconcile deadlines, assign timeouts. */
void coord_agents_cron(coord_t *c);
/* Send TASK_ASSIGN for a committed placement. */
void coord_agents_send_assign(coord_t *c, coord_task_t *t);
/* Send one message to an agent (stamped with epoch and name). */
int coord_agents_send(coord_t *c, const char *agent_id, fw_msg_t *m);
/* Are all agents with tasks re-registered (RECOVERING may end)? */
bool coord_agents_reconciled(coord_t *c);
/* An agent is gone: retry its tasks. */
void coord_agents_lost(coord_t *c, coord_agent_t *a, const char *why);
/* Send AGENT_SET_DRAIN after its record committed (store action). */
void coord_agents_drain_action(coord_t *c, void *p, uint64_t u, bool committed);
void coord_agents_stop_action(coord_t *c, coord_task_t *t, uint32_t attempt);
/* A LOG_FETCH_REPLY / ERROR for a log fetch arrived. */

/* ------------------------------------------------------ coord_client.c */
int coord_client_on_readable(zloop_t *loop, zsock_t *sock, void *arg);
/* Send a reply to a client (stamped with epoch and name); m stays the caller's. */
void coord_client_send(coord_t *c, zframe_t *identity, fw_msg_t *m);
/* Reply message `id` to req with doc (consumed, JSON text in its "doc"
 * field) and "existing" when existing >= 0 (coord_data.c). */
void coord_client_reply_doc(coord_t *c, zframe_t *identity, const fw_msg_t *req, int id,
                            json_t *doc, int existing);
/* Reply ERROR(code, message) to req; retry_ms > 0 tells the client to retry. */
void coord_client_error(coord_t *c, zframe_t *identity, const fw_msg_t *req, int code,
                        uint64_t retry_ms, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* A job as JSON (jansson) for replies; full: with the loss curve (job get),
 * else without it (lists, submission replies). */
void *coord_client_job_view(coord_t *c, const coord_job_t *j, bool full);

/* ------------------------------------------------------ coord_logs.c */
coord_logs_t *coord_logs_new(coord_t *c);
void coord_logs_destroy(coord_logs_t **l);
/* LOG_STREAM from a client (identity, request). Replies itself. */
void coord_logs_start(coord_t *c, zframe_t *identity, const fw_msg_t *req);
/* LOG_FETCH_REPLY (or ERROR) from an agent for request id rid. */
void coord_logs_on_reply(coord_t *c, const char *agent_id, const fw_msg_t *m);
void coord_logs_cron(coord_t *c);
void coord_logs_reset(coord_t *c);
size_t coord_logs_count(const coord_t *c);

/* ------------------------------------------------------- coord_data.c */
/* True for the blob and dataset requests coord_data_handle serves. */
bool coord_data_serves(int msg_id);
/* Serve one blob or dataset request (token checked, leader). Replies itself. */
void coord_data_handle(coord_t *c, zframe_t *identity, const fw_msg_t *m, const coord_token_t *tok);

/* Resolve a dataset reference (NAME: the latest version, or NAME@VERSION)
 * by reading etcd: 0 with *out the version record (caller decrefs) and
 * canon "NAME@V", or FW_EINVAL / FW_ENOTFOUND / an etcd error with detail. */
int coord_datasets_resolve(coord_t *c, const char *ref, json_t **out, char *canon, size_t size);

/* ----------------------------------------------------- coord_models.c */
/* True for the model registry requests coord_models_handle serves. */
bool coord_models_serves(int msg_id);
/* Resolve a model reference (NAME, NAME:VERSION, NAME@ALIAS): 0 with *out
 * the version record plus its "aliases" (caller decrefs) and canon
 * "NAME:V", or FW_EINVAL / FW_ENOTFOUND / an etcd error with detail. */
int coord_models_resolve(coord_t *c, const char *ref, json_t **out, char *canon, size_t size);
/* A model version to register (borrowed strings and JSON). */
typedef struct {
    const char *name, *digest; /* digest: the tree manifest, already in the store */
    const char *parent;        /* a model reference or NULL */
    json_t *datasets;          /* array of "NAME@V" or NULL */
    const char *job;           /* NULL: none */
    json_t *hparams, *metrics; /* objects or NULL */
    const char *code_version;
    const char *by; /* token name of the creator */
} coord_model_reg_t;
/* Register the next version of r->name (idempotent by digest: *existing
 * then true and *out the earlier version). 0 with *out the record (caller
 * decrefs), or a negative fw_err with detail. Synchronous etcd I/O. */
int coord_models_register(coord_t *c, const coord_model_reg_t *r, json_t **out, bool *existing);
/* Write (or overwrite) the eval record of rec.model on rec.dataset
 * (P/models/<name>/evals/<v>/<dataset>) with its audit entry. */
int coord_models_put_eval(coord_t *c, json_t *rec, const char *by);
/* Serve one MODEL_* request (token checked, leader). Replies itself. */
void coord_models_handle(coord_t *c, zframe_t *identity, const fw_msg_t *m,
                         const coord_token_t *tok);

/* --------------------------------------------------------- coord_ml.c */
/* finetune/embed/eval at submission: resolve refs into spec "resolved",
 * default checkpoint_every, refuse what cannot run. 0 or FW_E* with detail
 * naming the spec field. Other kinds: 0, nothing done. */
int coord_ml_prepare(coord_t *c, coord_spec_t *sp);
/* TASK_PROGRESS of the current attempt of t: loss curve, checkpoints. */
void coord_ml_progress(coord_t *c, coord_task_t *t, const fw_msg_t *m);
/* Extra TASK_ASSIGN environment for t (resume from the job's checkpoint). */
void coord_ml_assign_env(coord_t *c, coord_task_t *t, fw_val_t *env);
/* coord_state's finalize hook (arg: the coord_t). */
int coord_ml_finalize(void *arg, coord_job_t *j);

/* ---------------------------------------------------- coord_lineage.c */
/* LINEAGE_GET: the lineage graph around a reference (docs/lineage.md). */
void coord_lineage_handle(coord_t *c, zframe_t *identity, const fw_msg_t *m,
                          const coord_token_t *tok);

/* ------------------------------------------------------- coord_http.c */
coord_http_t *coord_http_start(coord_t *c, const char *bind);
void coord_http_stop(coord_http_t **h);
/* Publish the metrics and readiness the HTTP thread serves. */
void coord_http_publish(coord_http_t *h, const coord_metrics_t *m, bool ready, bool leader);

/* ------------------------------------------------------- coord_main.c */
/* Ask for a scheduling pass at the end of this loop turn. */
static inline void coord_want_sched(coord_t *c) {
    c->sched_needed = true;
}
/* After handling a burst of events: schedule, flush the store. */
void coord_after_events(coord_t *c);
/* Handle up to `burst` frames waiting on an endpoint's socket (then the
 * scheduling pass and store flush of coord_after_events): decoded ones go to
 * handle(); bad ones are counted in bad_frames_total[ep], logged
 * (rate-limited) and, when the sender is known, answered through bad(). */
typedef void(coord_frame_fn)(coord_t *c, zframe_t *identity, const fw_msg_t *m);
typedef void(coord_bad_frame_fn)(coord_t *c, zframe_t *identity, int err);
void coord_read_burst(coord_t *c, zsock_t *sock, int ep, int burst, coord_frame_fn *handle,
                      coord_bad_frame_fn *bad);
/* A WARN about bad input, rate-limited to a few lines per second. */
void coord_warn_limited(coord_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A terminal job's tasks may leave memory (retain_jobs bound). */
void coord_job_retired(coord_t *c, coord_job_t *j);

#endif
