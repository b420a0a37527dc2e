/* coord_http.c - /healthz, /readyz and /metrics over libmicrohttpd.
 *
 * Theory of operation
 * -------------------
 * libmicrohttpd serves on its own thread (MHD_USE_INTERNAL_POLLING_THREAD),
 * so a slow scraper never stalls the event loop and a stalled loop is still
 * visible from outside. The two threads share one snapshot guarded by a
 * mutex: the cron copies the loop's coord_metrics_t into it (about every
 * 250 ms, coord_http_publish) and a request copies it out again, then
 * renders without holding the lock. Nothing on the HTTP thread touches the
 * live state.
 *
 *   /healthz  200 while the process serves: the loop published a snapshot
 *             recently. 503 when the loop has not published for
 *             S_STALL_MS (stuck in a blocking call, deadlocked).
 *   /readyz   200 only on the leader once out of RECOVERING (it dispatches);
 *             503 otherwise, with the role in the body. Load balancers and
 *             the cluster script use it to find the leader.
 *   /metrics  Prometheus text format 0.0.4 (coord_metrics_render).
 * Anything else is 404; methods other than GET/HEAD are 405. */
#include "coord.h"

#include "fw_err.h"
#include "fw_log.h"
#include "fw_time.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* The cron publishes every 250 ms; a loop blocked in one etcd call waits at
 * most etcd.timeout (5 s by default). Beyond this the process is not
 * serving, whatever the reason. */
#define S_STALL_MS 15000

struct coord_http {
    struct MHD_Daemon *d;
    pthread_mutex_t mu;
    coord_metrics_t snap;
    bool ready, leader, published;
    int64_t published_mono;
    char name[65];
    uint16_t port;
};

static enum MHD_Result s_reply(struct MHD_Connection *conn, unsigned status, const char *type,
                               char *body, bool owned) {
    struct MHD_Response *r = MHD_create_response_from_buffer(
        strlen(body), body, owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_MUST_COPY);
    if (!r) {
        if (owned) free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result s_handle(void *cls, struct MHD_Connection *conn, const char *url,
                                const char *method, const char *version, const char *upload,
                                size_t *upload_size, void **con_cls) {
    coord_http_t *h = cls;
    (void)version;
    (void)upload;
    (void)con_cls;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        *upload_size = 0;
        return s_reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", "method not allowed\n",
                       false);
    }
    pthread_mutex_lock(&h->mu);
    bool ready = h->ready, leader = h->leader, published = h->published;
    int64_t age = fw_mono_ms() - h->published_mono;
    coord_metrics_t snap;
    bool want_metrics = strcmp(url, "/metrics") == 0;
    if (want_metrics) snap = h->snap;
    pthread_mutex_unlock(&h->mu);

    if (strcmp(url, "/healthz") == 0) {
        if (!published || age > S_STALL_MS) {
            char buf[128];
            snprintf(buf, sizeof buf, "stalled: no progress for %lld ms\n", (long long)age);
            return s_reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain", buf, false);
        }
        return s_reply(conn, MHD_HTTP_OK, "text/plain", "ok\n", false);
    }
    if (strcmp(url, "/readyz") == 0) {
        if (ready && age <= S_STALL_MS)
            return s_reply(conn, MHD_HTTP_OK, "text/plain", "ready: leader\n", false);
        const char *why = !leader  ? "not ready: standby\n"
                          : !ready ? "not ready: recovering\n"
                                   : "not ready: stalled\n";
        return s_reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain", (char *)why, false);
    }
    if (want_metrics) {
        char *text = coord_metrics_render(&snap, h->name);
        if (!text)
            return s_reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain", "out of memory\n",
                           false);
        return s_reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", text, true);
    }
    return s_reply(conn, MHD_HTTP_NOT_FOUND, "text/plain",
                   "not found (try /healthz, /readyz, /metrics)\n", false);
}

coord_http_t *coord_http_start(coord_t *c, const char *bind) {
    const char *colon = strrchr(bind, ':');
    if (!colon) {
        fw_err_set(FW_ECONFIG, "coordinator.http_bind '%s': expected host:port", bind);
        return NULL;
    }
    char host[128];
    snprintf(host, sizeof host, "%.*s", (int)(colon - bind), bind);
    long port = strtol(colon + 1, NULL, 10);
    if (port < 0 || port > 65535) {
        fw_err_set(FW_ECONFIG, "coordinator.http_bind '%s': port out of range", bind);
        return NULL;
    }
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (!host[0] || strcmp(host, "*") == 0 || strcmp(host, "0.0.0.0") == 0) {
        sa.sin_addr.s_addr = htonl(INADDR_ANY);
    } else if (strcmp(host, "localhost") == 0) {
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    } else if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fw_err_set(FW_ECONFIG,
                   "coordinator.http_bind '%s': host must be an IPv4 address, "
                   "localhost or *",
                   bind);
        return NULL;
    }
    coord_http_t *h = calloc(1, sizeof *h);
    if (!h) {
        fw_err_set(FW_ENOMEM, "http");
        return NULL;
    }
    pthread_mutex_init(&h->mu, NULL);
    snprintf(h->name, sizeof h->name, "%s", c->o.name);
    h->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, (uint16_t)port,
                            NULL, NULL, s_handle, h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_CONNECTION_LIMIT, 64u, MHD_OPTION_CONNECTION_TIMEOUT, 10u,
                            MHD_OPTION_END);
    if (!h->d) {
        fw_err_set(FW_EIO, "cannot listen on %s (port in use?)", bind);
        pthread_mutex_destroy(&h->mu);
        free(h);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : (uint16_t)port;
    fw_info("event=http-listening bind=%s port=%u", bind, (unsigned)h->port);
    return h;
}

void coord_http_stop(coord_http_t **hp) {
    if (!hp || !*hp) return;
    coord_http_t *h = *hp;
    MHD_stop_daemon(h->d);
    pthread_mutex_destroy(&h->mu);
    free(h);
    *hp = NULL;
}

void coord_http_publish(coord_http_t *h, const coord_metrics_t *m, bool ready, bool leader) {
    if (!h) return;
    pthread_mutex_lock(&h->mu);
    h->snap = *m;
    h->ready = ready;
    h->leader = leader;
    h->published = true;
    h->published_mono = fw_mono_ms();
    pthread_mutex_unlock(&h->mu);
}
