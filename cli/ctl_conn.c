/* ctl_conn.c - flywheelctl's connection to the coordinators.
 *
 * Theory of operation. The client knows a list of coordinator endpoints
 * (--coordinator, FLYWHEEL_COORDINATOR); any of them may be the leader, a
 * standby (which answers every request with REDIRECT to the leader) or dead.
 * A request is sent on a DEALER socket connected to one endpoint at a time:
 *
 *   1. the endpoint that answered last (or the first of the list);
 *   2. on REDIRECT, the leader it names (at most CTL_MAX_HOPS hops, so two
 *      standbys that disagree during an election cannot ping-pong forever);
 *   3. on a timeout, the socket is dropped (with linger 0, so the request
 *      queued for a dead peer goes with it) and the next endpoint is tried;
 *   4. an ERROR carrying retry_after_ms (no leader yet, leader recovering) is
 *      waited out and the request sent again, while the budget lasts.
 *
 * Every request gets a fresh request_id, and replies to any other id are
 * dropped: a late answer to a request that timed out must not be taken for
 * the answer to the next one. A call gives up when every endpoint has timed
 * out once, with "no coordinator answered at tcp://...: timed out after 5 s".
 *
 * Requests are idempotent or carry an idempotency key (job submit), so
 * resending one after a timeout cannot do the work twice. */
#include "ctl.h"

#include "fw_err.h"
#include "fw_time.h"

#include <czmq.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define CTL_MAX_ENDPOINTS 32
#define CTL_MAX_HOPS      4
/* Longest single wait asked for by retry_after_ms; the coordinator's own hint
 * is honoured up to this so a wrong hint cannot stall the CLI. */
#define CTL_MAX_RETRY_WAIT_MS 2000

struct ctl_conn {
    char *list[CTL_MAX_ENDPOINTS];
    int nlist;
    int current;           /* index in list of the endpoint that answered last */
    char *connected;       /* endpoint the socket is connected to */
    zsock_t *sock;
    int64_t timeout_ms;
    zcert_t *server_cert;  /* CURVE: the coordinators' public certificate */
    zcert_t *client_cert;  /* CURVE: a throwaway key pair for this run */
    uint64_t next_id;
};

void ctl_format_duration(int64_t ms, char *buf, size_t size) {
    if (ms >= 1000 && ms % 1000 == 0)
        snprintf(buf, size, "%lld s", (long long)(ms / 1000));
    else if (ms >= 1000)
        snprintf(buf, size, "%.1f s", (double)ms / 1000.0);
    else
        snprintf(buf, size, "%lld ms", (long long)ms);
}

int ctl_parse_duration(const char *s, int64_t *ms) {
    if (!s || !*s) return fw_err_set(FW_EINVAL, "empty duration");
    const char *p = s;
    double total = 0;
    bool any_unit = false;
    while (*p) {
        char *end;
        errno = 0;
        double v = strtod(p, &end);
        if (end == p || errno || v < 0 || v != v)
            return fw_err_set(FW_EINVAL, "'%s' is not a duration (e.g. 30, 30s, 500ms, 2m)", s);
        p = end;
        double mul;
        if (strncmp(p, "ms", 2) == 0) mul = 1, p += 2;
        else if (*p == 's') mul = 1000, p++;
        else if (*p == 'm') mul = 60000, p++;
        else if (*p == 'h') mul = 3600000, p++;
        else if (*p == 'd') mul = 86400000, p++;
        else if (*p == '\0' && !any_unit) mul = 1000; /* a bare number is seconds */
        else return fw_err_set(FW_EINVAL, "'%s' is not a duration (e.g. 30, 30s, 500ms, 2m)", s);
        any_unit = true;
        total += v * mul;
    }
    if (total > 1e15) return fw_err_set(FW_EINVAL, "duration '%s' is too long", s);
    *ms = (int64_t)(total + 0.5);
    return 0;
}

static bool s_endpoint_ok(const char *e) {
    /* tcp://host:port or ipc://path; anything else is a typo worth naming. */
    if (strncmp(e, "ipc://", 6) == 0) return e[6] != '\0';
    if (strncmp(e, "tcp://", 6) != 0) return false;
    const char *colon = strrchr(e + 6, ':');
    if (!colon || colon == e + 6 || !colon[1]) return false;
    for (const char *p = colon + 1; *p; p++)
        if (*p < '0' || *p > '9') return false;
    return true;
}

ctl_conn_t *ctl_conn_new(const char *endpoints, int64_t timeout_ms, const char *curve_server_key) {
    if (!endpoints || !*endpoints) {
        fw_err_set(FW_EINVAL, "no coordinator endpoint: pass --coordinator tcp://host:port or "
                              "set FLYWHEEL_COORDINATOR");
        return NULL;
    }
    ctl_conn_t *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : CTL_DEFAULT_TIMEOUT_MS;
    /* Request ids start at a random point so that two runs sharing a
     * coordinator are never confused in its logs. */
    c->next_id = ((uint64_t)randof(1 << 30) << 20) ^ (uint64_t)fw_wall_ms();
    char *copy = strdup(endpoints);
    if (!copy) goto fail;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
        if (!s_endpoint_ok(tok)) {
            fw_err_set(FW_EINVAL, "coordinator endpoint '%s': expected tcp://host:port", tok);
            free(copy);
            goto fail;
        }
        if (c->nlist == CTL_MAX_ENDPOINTS) {
            fw_err_set(FW_EINVAL, "more than %d coordinator endpoints", CTL_MAX_ENDPOINTS);
            free(copy);
            goto fail;
        }
        c->list[c->nlist] = strdup(tok);
        if (!c->list[c->nlist]) {
            free(copy);
            goto fail;
        }
        c->nlist++;
    }
    free(copy);
    if (c->nlist == 0) {
        fw_err_set(FW_EINVAL, "no coordinator endpoint in '%s'", endpoints);
        goto fail;
    }
    if (curve_server_key && *curve_server_key) {
        c->server_cert = zcert_load(curve_server_key);
        if (!c->server_cert) {
            fw_err_set(FW_EINVAL, "cannot read the coordinators' public certificate '%s'",
                       curve_server_key);
            goto fail;
        }
        c->client_cert = zcert_new();
        if (!c->client_cert) goto fail;
    }
    return c;
fail:
    ctl_conn_destroy(&c);
    return NULL;
}

static void s_disconnect(ctl_conn_t *c) {
    /* Linger 0 (set at creation): what was queued for a dead peer is dropped
     * with the socket instead of holding the process open at exit. */
    zsock_destroy(&c->sock);
    free(c->connected);
    c->connected = NULL;
}

void ctl_conn_destroy(ctl_conn_t **p) {
    if (!p || !*p) return;
    ctl_conn_t *c = *p;
    s_disconnect(c);
    for (int i = 0; i < c->nlist; i++) free(c->list[i]);
    zcert_destroy(&c->server_cert);
    zcert_destroy(&c->client_cert);
    free(c);
    *p = NULL;
}

const char *ctl_conn_endpoint(const ctl_conn_t *c) {
    return c && c->connected ? c->connected : "";
}

static int s_connect(ctl_conn_t *c, const char *endpoint) {
    if (c->sock && c->connected && strcmp(c->connected, endpoint) == 0) return 0;
    s_disconnect(c);
    c->sock = zsock_new(ZMQ_DEALER);
    if (!c->sock) return fw_err_set(FW_EIO, "cannot create a ZeroMQ socket");
    zsock_set_linger(c->sock, 0);
    zsock_set_sndtimeo(c->sock, (int)c->timeout_ms);
    /* Replies can be large (a page of 10,000 tasks) but never past a frame. */
    zsock_set_maxmsgsize(c->sock, (int64_t)FW_PROTO_MAX_FRAME + 64);
    if (c->server_cert) {
        zcert_apply(c->client_cert, c->sock);
        zsock_set_curve_serverkey(c->sock, zcert_public_txt(c->server_cert));
    }
    if (zsock_connect(c->sock, "%s", endpoint) < 0) {
        s_disconnect(c);
        return fw_err_set(FW_EINVAL, "cannot connect to '%s': %s", endpoint,
                          zmq_strerror(zmq_errno()));
    }
    c->connected = strdup(endpoint);
    if (!c->connected) {
        s_disconnect(c);
        return fw_err_set(FW_ENOMEM, "out of memory");
    }
    return 0;
}

/* Wait for the reply to request_id on the connected socket until deadline. */
static int s_await(ctl_conn_t *c, uint64_t request_id, int64_t deadline, fw_msg_t **reply) {
    *reply = NULL;
    void *h = zsock_resolve(c->sock);
    for (;;) {
        int64_t left = fw_remaining_ms(deadline);
        if (left <= 0) return fw_err_set(FW_ETIMEDOUT, "timed out");
        zmq_pollitem_t item = {.socket = h, .events = ZMQ_POLLIN};
        int n = zmq_poll(&item, 1, (long)left);
        if (n < 0) {
            if (zmq_errno() == EINTR) return fw_err_set(FW_ECANCELED, "interrupted");
            return fw_err_set(FW_EIO, "poll: %s", zmq_strerror(zmq_errno()));
        }
        if (n == 0) continue; /* the loop head sees the deadline */
        fw_msg_t *m = NULL;
        int rc = fw_msg_recv(c->sock, NULL, &m);
        if (rc < 0) {
            if (rc == FW_ETIMEDOUT) continue;
            return fw_err_set(rc, "undecodable reply from %s: %s", c->connected,
                              fw_err_detail());
        }
        uint64_t rid = fw_msg_request_id(m);
        /* An ERROR with request id 0 answers a request whose payload the
         * coordinator could not decode far enough to read the id; one request
         * is outstanding on the socket at a time, so it is ours. Any other id
         * is a late answer to an earlier request that timed out. */
        if (rid != request_id && !(rid == 0 && fw_msg_id(m) == FW_MSG_ERROR)) {
            fw_msg_destroy(&m);
            continue;
        }
        *reply = m;
        return 0;
    }
}

/* An ERROR reply as a negative code with the coordinator's message. */
static int s_error_reply(fw_msg_t *m) {
    int64_t code = fw_msg_get_int(m, "code");
    if (code >= 0 || code < -1000) code = FW_EIO;
    return fw_err_set((int)code, "%s", fw_msg_get_str(m, "message"));
}

static bool s_retryable(int code) {
    return code == FW_EUNAVAIL || code == FW_ENOTLEADER;
}

int ctl_conn_call(ctl_conn_t *c, fw_msg_t *req, fw_msg_t **reply) {
    *reply = NULL;
    /* Order of attempts: the last good endpoint first, then the others. */
    const char *order[CTL_MAX_ENDPOINTS];
    int norder = 0;
    order[norder++] = c->list[c->current];
    for (int i = 0; i < c->nlist; i++)
        if (i != c->current) order[norder++] = c->list[i];
    /* The whole call may take each endpoint's timeout once, plus redirects
     * and election waits; the budget keeps a flapping cluster from holding
     * the CLI forever. */
    int64_t budget = fw_deadline_ms(c->timeout_ms * (norder + CTL_MAX_HOPS));
    char redirect_to[300] = "";
    int hops = 0, oi = 0;
    char tried[512] = "";
    int ntimeouts = 0;
    int last_err = 0;
    char last_detail[1100] = "";
    while (oi < norder || redirect_to[0]) {
        char target[300];
        if (redirect_to[0]) {
            snprintf(target, sizeof target, "%s", redirect_to);
            redirect_to[0] = '\0';
        } else {
            snprintf(target, sizeof target, "%s", order[oi++]);
        }
        int rc = s_connect(c, target);
        if (rc < 0) {
            last_err = rc;
            snprintf(last_detail, sizeof last_detail, "%s", fw_err_detail());
            continue;
        }
        uint64_t rid = c->next_id++;
        fw_msg_set_request_id(req, rid);
        fw_msg_set_sender(req, "flywheelctl");
        rc = fw_msg_send(c->sock, NULL, req);
        fw_msg_t *m = NULL;
        if (rc == 0) rc = s_await(c, rid, fw_deadline_ms(c->timeout_ms), &m);
        if (rc == FW_ETIMEDOUT) {
            size_t used = strlen(tried);
            snprintf(tried + used, sizeof tried - used, "%s%s", used ? ", " : "", target);
            ntimeouts++;
            s_disconnect(c);
            if (fw_remaining_ms(budget) <= 0) break;
            continue;
        }
        if (rc < 0) {
            last_err = rc;
            snprintf(last_detail, sizeof last_detail, "%s", fw_err_detail());
            s_disconnect(c);
            continue;
        }
        int id = fw_msg_id(m);
        if (id == FW_MSG_REDIRECT) {
            const char *leader = fw_msg_get_str(m, "leader_endpoint");
            if (hops >= CTL_MAX_HOPS || !leader || !*leader || strcmp(leader, target) == 0) {
                last_err = FW_EUNAVAIL;
                snprintf(last_detail, sizeof last_detail,
                         "%s redirects to '%s' (%s), which does not answer as leader", target,
                         leader ? leader : "", fw_msg_get_str(m, "leader_name"));
                fw_msg_destroy(&m);
                continue;
            }
            hops++;
            snprintf(redirect_to, sizeof redirect_to, "%s", leader);
            fw_msg_destroy(&m);
            continue;
        }
        if (id == FW_MSG_ERROR) {
            int code = (int)fw_msg_get_int(m, "code");
            uint64_t after = fw_msg_get_uint(m, "retry_after_ms");
            if (s_retryable(code) && fw_msg_has(m, "retry_after_ms") &&
                fw_remaining_ms(budget) > 0) {
                /* No leader yet or the leader is recovering: ask the same
                 * endpoint again after the pause it asked for. */
                int64_t wait = after > CTL_MAX_RETRY_WAIT_MS ? CTL_MAX_RETRY_WAIT_MS
                                                             : (int64_t)after;
                if (wait < 50) wait = 50;
                fw_sleep_ms(wait);
                snprintf(redirect_to, sizeof redirect_to, "%s", target);
                last_err = s_error_reply(m);
                snprintf(last_detail, sizeof last_detail, "%s", fw_err_detail());
                fw_msg_destroy(&m);
                continue;
            }
            rc = s_error_reply(m);
            fw_msg_destroy(&m);
            return rc;
        }
        /* Success: remember who answered, by its index when it is listed. */
        for (int i = 0; i < c->nlist; i++)
            if (strcmp(c->list[i], target) == 0) c->current = i;
        *reply = m;
        return 0;
    }
    char tb[32];
    ctl_format_duration(c->timeout_ms, tb, sizeof tb);
    if (last_err && last_err != FW_ETIMEDOUT)
        return fw_err_set(last_err, "%s%s%s%s%s", last_detail, ntimeouts ? "; no answer from " : "",
                          ntimeouts ? tried : "", ntimeouts ? " within " : "", ntimeouts ? tb : "");
    return fw_err_set(FW_ETIMEDOUT, "no coordinator answered at %s: timed out after %s%s", tried,
                      tb, ntimeouts > 1 ? " each" : "");
}

int ctl_conn_next(ctl_conn_t *c, uint64_t request_id, int64_t timeout_ms, fw_msg_t **reply) {
    *reply = NULL;
    if (!c->sock) return fw_err_set(FW_ECLOSED, "not connected");
    fw_msg_t *m = NULL;
    int rc = s_await(c, request_id, fw_deadline_ms(timeout_ms), &m);
    if (rc == FW_ETIMEDOUT) {
        char tb[32];
        ctl_format_duration(timeout_ms, tb, sizeof tb);
        return fw_err_set(FW_ETIMEDOUT, "%s stopped answering: timed out after %s", c->connected,
                          tb);
    }
    if (rc < 0) return rc;
    if (fw_msg_id(m) == FW_MSG_ERROR) {
        rc = s_error_reply(m);
        fw_msg_destroy(&m);
        return rc;
    }
    *reply = m;
    return 0;
}
