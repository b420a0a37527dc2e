/* flywheel-coordinator - the leader-elected control plane daemon.
 *
 * Theory of operation
 * -------------------
 * main() reads the options (fw_common_opts + coord_opts), builds one coord_t
 * and runs one czmq zloop that owns all of it (coord.h). The loop polls:
 *   - the client ROUTER (coord_client.c) and the agent ROUTER
 *     (coord_agents.c), CURVE-encrypted when curve.enabled (zauth actor);
 *   - the etcd watches of the election (coord_leader.c) and, while leader,
 *     of P/agents/ (coord_agents.c);
 *   - the keepalive thread and the txn worker threads (results come back as
 *     messages on their pipes);
 *   - a self-pipe written by the SIGTERM/SIGINT handler;
 *   - one timer: the cron (s_cron), every coordinator.cron_interval.
 *
 * Every handler ends with coord_after_events(): the scheduling pass the
 * events asked for (only while LEADER, never while RECOVERING) and a flush
 * of the store, so a burst of results turns into one txn and one pass.
 *
 * Periodic work lives in the cron only (Redis's serverCron pattern):
 * leadership and lease checks every tick, the rest in run_every blocks.
 *
 * Shutdown (SIGTERM/SIGINT): the loop ends, the coordinator resigns (its
 * election key is deleted and its lease revoked, so a standby takes over at
 * once instead of after a TTL) and exits 0. Nothing unacknowledged is lost:
 * changes not yet committed were never acknowledged, and the next leader
 * rebuilds from etcd.
 *
 * Exit codes: 0 after SIGTERM/SIGINT, 2 for a configuration or start-up
 * error (printed on stderr), 1 if the loop failed. */
#include "coord.h"
#include "coord_json.h"
#include "coord_records.h"

#include "fw_common_opts.h"
#include "fw_err.h"
#include "fw_file.h"
#include "fw_log.h"
#include "fw_time.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* --------------------------------------------------------------- signals */

static int s_sig_pipe[2] = {-1, -1};
static volatile sig_atomic_t s_sig_last;

static void s_on_signal(int sig) {
    int saved = errno;
    s_sig_last = sig;
    if (s_sig_pipe[1] >= 0) {
        char b = 1;
        ssize_t rc = write(s_sig_pipe[1], &b, 1);
        (void)rc; /* a full pipe already holds a wake-up */
    }
    errno = saved;
}

static int s_signals_install(void) {
    if (pipe(s_sig_pipe) < 0) return fw_err_set(FW_EIO, "pipe: %s", strerror(errno));
    for (int i = 0; i < 2; i++) {
        fcntl(s_sig_pipe[i], F_SETFL, fcntl(s_sig_pipe[i], F_GETFL) | O_NONBLOCK);
        fcntl(s_sig_pipe[i], F_SETFD, FD_CLOEXEC);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    /* libcurl and ZeroMQ write to sockets a peer may have closed. */
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

static int s_on_sig_pipe(zloop_t *loop, zmq_pollitem_t *item, void *arg) {
    coord_t *c = arg;
    char buf[64];
    while (read(s_sig_pipe[0], buf, sizeof buf) > 0) {
    }
    fw_info("event=signal sig=%d name=%s role=%s", (int)s_sig_last, c->o.name,
            coord_role_name_of(c->L.role));
    c->stopping = true;
    (void)loop;
    (void)item;
    return -1; /* ends zloop_start */
}

/* ------------------------------------------------------ loop helpers */

void coord_warn_limited(coord_t *c, const char *fmt, ...) {
    /* Bad input from the network can arrive at line rate; ten lines a
     * second say what happens without letting a fuzzer fill the disk. */
    int64_t now = fw_mono_ms();
    if (now - c->warn_window_start >= 1000) {
        if (c->warn_count > 10)
            fw_warn("event=warnings-suppressed count=%d window_ms=1000", c->warn_count - 10);
        c->warn_window_start = now;
        c->warn_count = 0;
    }
    if (++c->warn_count > 10) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fw_warn("%s", buf);
}

void coord_read_burst(coord_t *c, zsock_t *sock, int ep, int burst, coord_frame_fn *handle,
                      coord_bad_frame_fn *bad) {
    coord_leader_check(c);
    for (int n = 0; n < burst && (zsock_events(sock) & ZMQ_POLLIN); n++) {
        zframe_t *identity = NULL;
        fw_msg_t *m = NULL;
        int rc = fw_msg_recv(sock, &identity, &m);
        if (rc == FW_ETIMEDOUT || rc == FW_ECANCELED) {
            zframe_destroy(&identity);
            break;
        }
        if (rc < 0) {
            c->m.bad_frames_total[ep]++;
            coord_warn_limited(c, "event=bad-frame endpoint=%s err=%s detail=\"%s\"",
                               ep == COORD_EP_AGENT ? "agent" : "client", fw_errname(rc),
                               fw_err_detail());
            if (identity) bad(c, identity, rc);
        } else {
            handle(c, identity, m);
            fw_msg_destroy(&m);
        }
        zframe_destroy(&identity);
    }
    coord_after_events(c);
}

void coord_after_events(coord_t *c) {
    if (c->stopping) return;
    if (c->L.role == COORD_LEADER && c->sched_needed) {
        c->sched_needed = false;
        bool more = false;
        coord_sched_pass(c->st, &c->sched, fw_wall_ms(), fw_mono_ms(), (uint32_t)c->o.sched_budget,
                         &more);
        /* The rest of a big job follows on the next tick (sched_budget). */
        if (more) c->sched_needed = true;
    }
    if (coord_is_leader(c)) coord_store_flush(c->store);
}

void coord_job_retired(coord_t *c, coord_job_t *j) {
    /* The store calls this for each write of a finished job that retires
     * with nothing else pending, so a job may come more than once. */
    for (size_t i = 0; i < c->nretained; i++)
        if (c->retained[i] == j) return;
    if (c->nretained == c->retaincap) {
        size_t cap = c->retaincap ? c->retaincap * 2 : 64;
        coord_job_t **r = realloc(c->retained, cap * sizeof *r);
        if (!r) {
            /* Out of memory: evicting at once is the safe fallback. */
            if (j->tasks && j->pending_writes == 0) coord_job_evict_tasks(c->st, j);
            return;
        }
        c->retained = r;
        c->retaincap = cap;
    }
    c->retained[c->nretained++] = j;
    /* Keep the newest retain_jobs finished jobs with their tasks in memory;
     * older ones are read back from etcd when a client asks for them. */
    size_t drop = 0;
    while (c->nretained - drop > (size_t)c->o.retain_jobs) {
        coord_job_t *old = c->retained[drop];
        if (old->pending_writes > 0) break; /* a late write: evict on its retirement */
        if (old->tasks) coord_job_evict_tasks(c->st, old);
        drop++;
    }
    if (drop) {
        memmove(c->retained, c->retained + drop, (c->nretained - drop) * sizeof *c->retained);
        c->nretained -= drop;
    }
}

/* ---------------------------------------------------------------- cron */

/* Run the block at most every `ms` milliseconds of the cron (Redis's
 * run_with_period), based on the monotonic clock. */
#define S_RUN_EVERY(last, ms) for (int64_t _n = fw_mono_ms(); _n - (last) >= (ms); (last) = _n)

static void s_publish(coord_t *c) {
    coord_metrics_t *m = &c->m;
    coord_state_t *st = c->st;
    for (int s = 0; s < TASK__COUNT; s++) m->tasks[s] = st->task_count[s];
    for (int s = 0; s < JOB__COUNT; s++) m->jobs[s] = st->job_count[s];
    m->agents_connected = m->agents_draining = m->agents_unavailable = 0;
    for (size_t i = 0; i < st->nagents; i++) {
        const coord_agent_t *a = st->agentv[i];
        if (!a->alive || !a->connected)
            m->agents_unavailable++;
        else if (a->drain || a->self_draining)
            m->agents_draining++;
        else
            m->agents_connected++;
    }
    m->queue_depth = st->nqueue;
    uint64_t ready = 0;
    for (size_t i = 0; i < st->nqueue; i++) ready += st->queue[i]->nready;
    m->ready_tasks = ready;
    m->store_backlog = coord_store_backlog(c->store);
    m->txn_inflight = coord_store_inflight(c->store);
    m->log_streams = coord_logs_count(c);
    if (c->http) coord_http_publish(c->http, m, c->L.role == COORD_LEADER, coord_is_leader(c));
}

static void s_compact(coord_t *c) {
    int64_t rev = 0;
    if (fw_etcd_ping(c->etcd, &rev) < 0 || rev <= c->o.compact_keep_revisions) return;
    int64_t to = rev - c->o.compact_keep_revisions;
    int rc = fw_etcd_compact(c->etcd, to, false);
    if (rc < 0 && rc != FW_ECOMPACTED)
        fw_warn("event=compact-failed revision=%" PRId64 " err=%s detail=\"%s\"", to,
                fw_errname(rc), fw_err_detail());
    else
        fw_info("event=compacted revision=%" PRId64, to);
}

static int64_t s_last_publish, s_last_slow;

static int s_cron(zloop_t *loop, int timer_id, void *arg) {
    coord_t *c = arg;
    coord_leader_cron(c);
    if (coord_is_leader(c)) {
        int64_t now_wall = fw_wall_ms(), now_mono = fw_mono_ms();
        if (coord_state_wake(c->st, now_wall, now_mono) > 0) coord_want_sched(c);
        S_RUN_EVERY(s_last_slow, 100) {
            coord_agents_cron(c);
            coord_logs_cron(c);
        }
        if (c->o.compact_every_ms > 0 && coord_is_leader(c)) {
            if (!c->next_compact) c->next_compact = now_mono + c->o.compact_every_ms;
            if (now_mono >= c->next_compact) {
                c->next_compact = now_mono + c->o.compact_every_ms;
                s_compact(c);
            }
        }
    } else {
        c->next_compact = 0;
    }
    coord_after_events(c);
    S_RUN_EVERY(s_last_publish, 250) s_publish(c);
    (void)loop;
    (void)timer_id;
    return 0;
}

/* ------------------------------------------------------------- set-up */

/* The endpoint others use to reach a bound socket: the bound address with
 * its host replaced by coordinator.advertise_host, or by the hostname when
 * the socket listens on a wildcard. */
static void s_advertise(const coord_t *c, const char *bound, char *out, size_t size) {
    const char *scheme = strstr(bound, "://");
    const char *hoststart = scheme ? scheme + 3 : bound;
    const char *colon = strrchr(hoststart, ':');
    if (!colon || strncmp(bound, "tcp://", 6) != 0) {
        snprintf(out, size, "%s", bound);
        return;
    }
    char host[256];
    snprintf(host, sizeof host, "%.*s", (int)(colon - hoststart), hoststart);
    if (c->o.advertise_host[0]) {
        snprintf(host, sizeof host, "%s", c->o.advertise_host);
    } else if (strcmp(host, "*") == 0 || strcmp(host, "0.0.0.0") == 0 ||
               strcmp(host, "[::]") == 0 || strcmp(host, "::") == 0) {
        if (gethostname(host, sizeof host - 1) < 0) snprintf(host, sizeof host, "localhost");
        host[sizeof host - 1] = '\0';
    }
    snprintf(out, size, "%.*s%s%s", (int)(hoststart - bound), bound, host, colon);
}

static fw_etcd *s_etcd_new(const coord_t *c, int64_t timeout_ms) {
    fw_etcd_opts o;
    memset(&o, 0, sizeof o);
    o.endpoints = c->etcd_endpoints;
    o.timeout_ms = (int)timeout_ms;
    o.connect_timeout_ms = timeout_ms < 1000 ? (int)timeout_ms : 1000;
    o.max_txn_ops = c->o.batch_max_ops > 128 ? c->o.batch_max_ops : 0;
    char *password = NULL;
    if (c->o.etcd_user[0]) {
        o.user = c->o.etcd_user;
        if (c->o.etcd_password_file[0]) {
            if (fw_file_read(c->o.etcd_password_file, 4096, &password, NULL) < 0) return NULL;
            password[strcspn(password, "\r\n")] = '\0';
        }
        o.password = password ? password : "";
    }
    fw_etcd *e = fw_etcd_new(&o);
    free(password);
    return e;
}

static char *s_join_list(const fw_config *cfg, const char *key) {
    size_t n = 0, len = 1;
    const char *const *items = fw_config_get_list(cfg, key, &n);
    for (size_t i = 0; i < n; i++) len += strlen(items[i]) + 1;
    char *s = calloc(1, len);
    if (!s) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (i) strcat(s, ",");
        strcat(s, items[i]);
    }
    return s;
}

static int s_curve_setup(coord_t *c) {
    if (!c->o.curve_enabled) return 0;
    c->cert = zcert_load(c->o.curve_secret_key_file);
    if (!c->cert)
        return fw_err_set(FW_ECONFIG,
                          "curve.secret_key_file %s: cannot load a zcert secret "
                          "certificate (make one with zcert_save / `flywheelctl` docs)",
                          c->o.curve_secret_key_file);
    if (c->o.curve_public_key_file[0] && access(c->o.curve_public_key_file, F_OK) != 0) {
        /* Hand the public half out where the operator asked for it. */
        if (zcert_save_public(c->cert, c->o.curve_public_key_file) < 0)
            return fw_err_set(FW_EIO, "curve.public_key_file %s: cannot write",
                              c->o.curve_public_key_file);
    }
    c->auth = zactor_new(zauth, NULL);
    if (!c->auth) return fw_err_set(FW_EIO, "zauth: cannot start the ZAP handler");
    if (c->o.curve_clients_dir[0])
        zstr_sendx(c->auth, "CURVE", c->o.curve_clients_dir, NULL);
    else
        zstr_sendx(c->auth, "CURVE", CURVE_ALLOW_ANY, NULL);
    zsock_wait(c->auth);
    return 0;
}

static int s_client_open(coord_t *c) {
    c->client_sock = zsock_new(ZMQ_ROUTER);
    if (!c->client_sock) return fw_err_set(FW_EIO, "client socket: %s", zmq_strerror(zmq_errno()));
    /* Replies to a client that went away are dropped at once. */
    zsock_set_router_mandatory(c->client_sock, 1);
    zsock_set_maxmsgsize(c->client_sock, FW_PROTO_MAX_FRAME);
    zsock_set_sndhwm(c->client_sock, 100000);
    zsock_set_rcvhwm(c->client_sock, 100000);
    zsock_set_sndtimeo(c->client_sock, 0);
    zsock_set_linger(c->client_sock, 0);
    if (c->cert) {
        zsock_set_zap_domain(c->client_sock, "flywheel");
        zcert_apply(c->cert, c->client_sock);
        zsock_set_curve_server(c->client_sock, 1);
    }
    if (zsock_bind(c->client_sock, "%s", c->o.client_bind) < 0)
        return fw_err_set(FW_EIO, "coordinator.client_bind %s: %s", c->o.client_bind,
                          zmq_strerror(zmq_errno()));
    return 0;
}

static int s_tokens_load(coord_t *c) {
    c->tokens = coord_tokens_new();
    if (!c->tokens) return FW_ENOMEM;
    if (!c->o.tokens_file[0]) {
        fw_warn("event=no-tokens detail=\"coordinator.tokens_file is not set: every client "
                "request will be refused\"");
        return 0;
    }
    int rc = coord_tokens_load(c->tokens, c->o.tokens_file);
    if (rc < 0) return rc;
    fw_info("event=tokens-loaded file=%s count=%zu", c->o.tokens_file,
            coord_tokens_count(c->tokens));
    return 0;
}

static void s_destroy(coord_t *c) {
    if (c->loop) {
        if (c->client_sock) zloop_reader_end(c->loop, c->client_sock);
        if (c->agent_sock) zloop_reader_end(c->loop, c->agent_sock);
        coord_agents_watch_stop(c);
        coord_leader_stop(c);
    }
    coord_http_stop(&c->http);
    coord_store_destroy(&c->store);
    coord_logs_destroy(&c->logs);
    coord_state_destroy(&c->st);
    coord_sched_free(&c->sched);
    zhashx_destroy(&c->idem);
    free(c->retained);
    zsock_destroy(&c->client_sock);
    zsock_destroy(&c->agent_sock);
    zactor_destroy(&c->auth);
    zcert_destroy(&c->cert);
    zloop_destroy(&c->loop);
    coord_tokens_destroy(&c->tokens);
    fw_etcd_destroy(&c->etcd);
    fw_etcd_destroy(&c->etcd_ka);
    free(c->etcd_endpoints);
}

static int s_setup(coord_t *c) {
    int rc;
    if ((rc = s_tokens_load(c)) < 0) return rc;
    c->etcd_endpoints = s_join_list(c->cfg, "etcd.endpoints");
    if (!c->etcd_endpoints) return FW_ENOMEM;
    c->etcd = s_etcd_new(c, c->o.etcd_timeout_ms);
    /* The keepalive must answer within a third of the TTL or it is useless:
     * a renewal that takes longer cannot keep the lease anyway. */
    int64_t ka_timeout = c->o.election_ttl_ms / 3;
    if (ka_timeout > c->o.etcd_timeout_ms) ka_timeout = c->o.etcd_timeout_ms;
    c->etcd_ka = s_etcd_new(c, ka_timeout);
    if (!c->etcd || !c->etcd_ka) {
        char why[512]; /* fw_err_set formats into the buffer fw_err_detail() returns */
        snprintf(why, sizeof why, "%s", fw_err_detail());
        return fw_err_set(FW_ECONFIG, "etcd: %s", why);
    }
    if ((rc = s_curve_setup(c)) < 0) return rc;
    if ((rc = s_client_open(c)) < 0) return rc;
    if ((rc = coord_agents_open(c)) < 0) return rc;
    s_advertise(c, zsock_endpoint(c->client_sock), c->client_ep, sizeof c->client_ep);
    s_advertise(c, zsock_endpoint(c->agent_sock), c->agent_ep, sizeof c->agent_ep);
    if (c->o.http_bind[0]) {
        char tmp[320];
        snprintf(tmp, sizeof tmp, "tcp://%s", c->o.http_bind);
        s_advertise(c, tmp, c->http_ep, sizeof c->http_ep);
        memmove(c->http_ep, c->http_ep + 6, strlen(c->http_ep + 6) + 1);
    }
    snprintf(c->election_prefix, sizeof c->election_prefix, "%s/election", c->o.etcd_prefix);
    snprintf(c->coordinators_key, sizeof c->coordinators_key, "%s/coordinators/%s",
             c->o.etcd_prefix, c->o.name);
    char n[200], cl[600], ag[600], ht[600];
    coord_json_escape(c->o.name, n, sizeof n);
    coord_json_escape(c->client_ep, cl, sizeof cl);
    coord_json_escape(c->agent_ep, ag, sizeof ag);
    coord_json_escape(c->http_ep, ht, sizeof ht);
    int len = snprintf(c->election_value, sizeof c->election_value,
                       "{\"schema\":1,\"name\":\"%s\",\"client\":\"%s\",\"agent\":\"%s\","
                       "\"http\":\"%s\"}",
                       n, cl, ag, ht);
    if (len < 0 || (size_t)len >= sizeof c->election_value)
        return fw_err_set(FW_ECONFIG, "advertised endpoints too long (%d bytes)", len);

    c->st = coord_state_new();
    if (!c->st) return FW_ENOMEM;
    c->st->retry_backoff_ms = (uint32_t)c->o.retry_backoff_ms;
    c->st->retry_backoff_max_ms = (uint32_t)c->o.retry_backoff_max_ms;
    coord_sched_init(&c->sched, (uint32_t)c->o.rendezvous_port_min,
                     (uint32_t)c->o.rendezvous_port_max);
    c->idem = zhashx_new();
    c->loop = zloop_new();
    if (!c->idem || !c->loop) return FW_ENOMEM;
    c->store = coord_store_new(c);
    c->logs = coord_logs_new(c);
    if (!c->store || !c->logs) return FW_ENOMEM;
    c->st->hook = coord_store_hook;
    c->st->hook_arg = c->store;
    c->st->finalize = coord_ml_finalize;
    c->st->finalize_arg = c;

    if (c->o.http_bind[0]) {
        c->http = coord_http_start(c, c->o.http_bind);
        if (!c->http) {
            char why[512];
            snprintf(why, sizeof why, "%s", fw_err_detail());
            return fw_err_set(FW_EIO, "coordinator.http_bind %s: %s", c->o.http_bind, why);
        }
    }
    zloop_reader(c->loop, c->client_sock, coord_client_on_readable, c);
    zloop_reader(c->loop, c->agent_sock, coord_agents_on_readable, c);
    zloop_reader_set_tolerant(c->loop, c->client_sock);
    zloop_reader_set_tolerant(c->loop, c->agent_sock);
    zmq_pollitem_t sig = {.fd = s_sig_pipe[0], .events = ZMQ_POLLIN};
    zloop_poller(c->loop, &sig, s_on_sig_pipe, c);
    zloop_timer(c->loop, (size_t)c->o.cron_ms, 0, s_cron, c);
    return 0;
}

int main(int argc, char **argv) {
    /* Our own handler (a self-pipe in the loop), not czmq's: zloop and the
     * worker threads must not see zsys_interrupted mid-way. */
    zsys_handler_set(NULL);
    int rc;
    fw_config *cfg = fw_daemon_config(
        "flywheel-coordinator",
        "The Flywheel coordinator: one of several, elected through etcd; the leader keeps jobs "
        "and tasks in etcd, schedules them onto agents and serves clients.",
        coord_opts, argc, argv, &rc);
    if (!cfg) return rc;
    static coord_t coord; /* one per process; static keeps it off the stack */
    coord_t *c = &coord;
    c->cfg = cfg;
    if (coord_opts_read(cfg, &c->o) < 0) {
        fprintf(stderr, "flywheel-coordinator: %s\n", fw_err_detail());
        fw_config_destroy(&cfg);
        return 2;
    }
    c->o.etcd_endpoints = NULL; /* a list: joined in s_setup */
    fw_log_set_name(c->o.name);
    if (fw_common_opts_apply_logging(cfg) < 0 || s_signals_install() < 0) {
        fprintf(stderr, "flywheel-coordinator: %s\n", fw_err_detail());
        fw_config_destroy(&cfg);
        return 2;
    }
    rc = s_setup(c);
    if (rc < 0) {
        fprintf(stderr, "flywheel-coordinator: %s\n", fw_err_detail());
        fw_error("event=start-failed err=%s detail=\"%s\"", fw_errname(rc), fw_err_detail());
        s_destroy(c);
        fw_config_destroy(&cfg);
        return 2;
    }
    fw_info("event=started name=%s client=%s agent=%s http=%s etcd=%s prefix=%s ttl_ms=%" PRId64
            " curve=%d",
            c->o.name, c->client_ep, c->agent_ep, c->http_ep[0] ? c->http_ep : "off",
            c->etcd_endpoints, c->o.etcd_prefix, c->o.election_ttl_ms, c->o.curve_enabled);
    coord_leader_start(c);
    s_publish(c);
    rc = zloop_start(c->loop);
    int code = 0;
    if (!c->stopping && s_sig_last) {
        /* The signal interrupted zmq_poll (EINTR), which ends zloop_start before the
         * self-pipe's reader runs: a normal stop all the same (exit 0, not an error). */
        fw_info("event=signal sig=%d name=%s role=%s", (int)s_sig_last, c->o.name,
                coord_role_name_of(c->L.role));
        c->stopping = true;
    }
    if (!c->stopping) {
        fw_error("event=loop-failed rc=%d", rc);
        code = 1;
    }
    c->stopping = true;
    coord_leader_resign(c);
    s_destroy(c);
    fw_info("event=stopped name=%s", c->o.name);
    fw_config_destroy(&cfg);
    return code;
}
