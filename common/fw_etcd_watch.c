/* fw_etcd_watch.c - etcd watches over the JSON gateway's streaming /v3/watch.
 *
 * Theory of operation
 * -------------------
 * A watch owns one thread, one curl easy handle and one curl multi handle.
 * The thread POSTs {"create_request": {...}} to <endpoint>/v3/watch and
 * keeps the response open: etcd answers with newline-separated JSON objects
 * `{"result": {"header":..., "created"|"canceled"|"events": ...}}`. The curl
 * write callback cuts the byte stream into lines, parses each and appends
 * one queue item per event. The multi handle lets fw_etcd_watch_destroy()
 * interrupt the thread at once (curl_multi_wakeup) wherever it waits.
 *
 * Stream life cycle (thread side):
 *
 *   CONNECT --created--> STREAMING --events--> queue (next_rev = last + 1)
 *      ^                     |
 *      |  drop / reset / EOF | (member died, network)
 *      +---- backoff, next endpoint, start_revision = next_rev
 *                            |
 *        canceled + compact_revision --> push FW_ECOMPACTED, thread ends
 *        canceled for auth            --> re-authenticate, reconnect
 *        canceled otherwise           --> push mapped error, thread ends
 *
 * Invariants:
 *   1. next_rev only grows, and every event with mod_revision < next_rev has
 *      been queued exactly once: events of one revision arrive in one
 *      response (etcd never splits a revision without the fragment flag,
 *      which we do not set), and next_rev is advanced after the whole
 *      response, so a resumed stream starting at next_rev repeats nothing
 *      and skips nothing. Events below next_rev are dropped defensively.
 *   2. The eventfd is readable exactly while the queue is non-empty (both
 *      changed under w->mu).
 *   3. At most one terminal item (err != 0) is queued; it is always last,
 *      and after it is popped next() answers FW_ECLOSED.
 *   4. The queue holds at most queue_max events: the write callback blocks
 *      until the consumer makes room, so TCP flow control pushes back on etcd.
 */
#define FW_ETCD_INTERNAL
#include "fw_etcd.h"

#include "fw_err.h"
#include "fw_log.h"
#include "fw_time.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define S_QUEUE_DEFAULT 65536
/* One line of the stream holds one response; a response with this many
 * bytes means something is wrong, not a big transaction. */
#define S_MAX_LINE (64u << 20)
#define S_BACKOFF_MIN_MS 50
#define S_BACKOFF_MAX_MS 1000

typedef struct s_item {
    struct s_item *next;
    fw_etcd_event ev;
    int err;          /* 0: an event; else the terminal error */
    char detail[256]; /* for the terminal error: fw_err_set runs on the consumer thread */
} s_item;

struct fw_etcd_watch {
    fw_etcd *c;
    json_t *create; /* create_request without start_revision */
    pthread_t thread;
    bool thread_started;
    CURLM *multi;
    CURL *easy;
    int efd;

    pthread_mutex_t mu;
    pthread_cond_t cond; /* queue changed, created, or stopping */
    s_item *head, *tail;
    size_t n, max;
    atomic_bool stop;
    bool done;         /* terminal item queued: thread is over (invariant 3) */
    bool final_popped;
    bool created;      /* a stream was created at least once */
    int64_t next_rev;  /* invariant 1; 0 until the first stream says where "now" is */
    int reconnects;
    char last_error[256];

    /* Thread-only state of the current stream. */
    char *line;
    size_t line_len, line_cap;
    bool stream_created;
    bool stream_end;    /* stop this stream, reconnect unless done */
    bool stream_reauth; /* etcd refused our token: authenticate before reconnecting */
    uint64_t token_gen;
};

/* ------------------------------------------------------------- queue */

void fw_etcd_event_clear(fw_etcd_event *ev) {
    if (!ev) return;
    fw_etcd_kv_clear(&ev->kv);
    fw_etcd_kv_clear(&ev->prev_kv);
    memset(ev, 0, sizeof *ev);
}

static void s_efd_signal(fw_etcd_watch *w) {
    uint64_t one = 1;
    if (write(w->efd, &one, sizeof one) < 0 && errno != EAGAIN)
        fw_warn("event=etcd-watch-eventfd err=\"%s\"", strerror(errno));
}

static void s_efd_drain(fw_etcd_watch *w) {
    uint64_t v;
    if (read(w->efd, &v, sizeof v) < 0 && errno != EAGAIN)
        fw_warn("event=etcd-watch-eventfd err=\"%s\"", strerror(errno));
}

/* Append under w->mu (held); invariant 2. */
static void s_append_locked(fw_etcd_watch *w, s_item *it) {
    if (w->tail) w->tail->next = it;
    else w->head = it;
    w->tail = it;
    if (w->n++ == 0) s_efd_signal(w);
    pthread_cond_broadcast(&w->cond);
}

/* Queue one event, waiting for room (invariant 4). false when stopping. */
static bool s_push_event(fw_etcd_watch *w, s_item *it) {
    pthread_mutex_lock(&w->mu);
    while (w->n >= w->max && !atomic_load(&w->stop)) pthread_cond_wait(&w->cond, &w->mu);
    bool ok = !atomic_load(&w->stop);
    if (ok) s_append_locked(w, it);
    pthread_mutex_unlock(&w->mu);
    if (!ok) {
        fw_etcd_event_clear(&it->ev);
        free(it);
    }
    return ok;
}

/* Queue the terminal error and end the thread's work (invariant 3). */
static void s_push_final(fw_etcd_watch *w, int err, int64_t compact_rev, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void s_push_final(fw_etcd_watch *w, int err, int64_t compact_rev, const char *fmt, ...) {
    s_item *it = calloc(1, sizeof *it);
    pthread_mutex_lock(&w->mu);
    if (!w->done) {
        w->done = true;
        if (it) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(it->detail, sizeof it->detail, fmt, ap);
            va_end(ap);
            it->err = err;
            it->ev.compact_revision = compact_rev;
            snprintf(w->last_error, sizeof w->last_error, "%s", it->detail);
            s_append_locked(w, it);
            it = NULL;
        }
        pthread_cond_broadcast(&w->cond);
    }
    pthread_mutex_unlock(&w->mu);
    free(it);
    w->stream_end = true;
}

/* ------------------------------------------------------ stream parsing */

static int s_event_parse(json_t *j, fw_etcd_event *ev) {
    memset(ev, 0, sizeof *ev);
    json_t *type = json_object_get(j, "type");
    /* PUT is the default value, so etcd omits it; accept names and numbers. */
    if (json_is_string(type) && strcmp(json_string_value(type), "DELETE") == 0)
        ev->type = FW_ETCD_EV_DELETE;
    else if (json_is_integer(type) && json_integer_value(type) == 1)
        ev->type = FW_ETCD_EV_DELETE;
    else if (type && !(json_is_string(type) && strcmp(json_string_value(type), "PUT") == 0) &&
             !(json_is_integer(type) && json_integer_value(type) == 0))
        return fw_err_set(FW_EPROTO, "etcd watch: unknown event type");
    int rc = fw_etcd__kv_parse(json_object_get(j, "kv"), &ev->kv);
    if (rc < 0) return rc;
    json_t *prev = json_object_get(j, "prev_kv");
    if (prev) {
        if ((rc = fw_etcd__kv_parse(prev, &ev->prev_kv)) < 0) {
            fw_etcd_event_clear(ev);
            return rc;
        }
        ev->has_prev = true;
    }
    return 0;
}

static bool s_auth_reason(const char *r) {
    return strstr(r, "invalid auth token") || strstr(r, "user name is empty") ||
           strstr(r, "Unauthenticated");
}

/* Handle one JSON line of the stream. */
static void s_watch_line(fw_etcd_watch *w, const char *line, size_t len) {
    json_error_t jerr;
    json_t *j = json_loadb(line, len, 0, &jerr);
    if (!json_is_object(j)) {
        fw_warn("event=etcd-watch-bad-line err=\"%s\"", jerr.text);
        snprintf(w->last_error, sizeof w->last_error, "watch stream: malformed line: %.80s", line);
        w->stream_end = true;
        json_decref(j);
        return;
    }
    json_t *res = json_object_get(j, "result");
    if (!json_is_object(res)) {
        /* A stream-level error: {"error": {"grpc_code": N, "message": ...}}. */
        json_t *e = json_object_get(j, "error");
        const char *msg = json_string_value(json_object_get(json_is_object(e) ? e : j, "message"));
        if (!msg) msg = json_is_string(e) ? json_string_value(e) : "(no message)";
        snprintf(w->last_error, sizeof w->last_error, "watch stream error: %s", msg);
        if (s_auth_reason(msg)) w->stream_reauth = true;
        w->stream_end = true;
        json_decref(j);
        return;
    }
    int64_t hrev = 0, compact = 0;
    fw_etcd__get_i64(json_object_get(res, "header"), "revision", &hrev);
    fw_etcd__get_i64(res, "compact_revision", &compact);
    bool created = json_is_true(json_object_get(res, "created"));
    bool canceled = json_is_true(json_object_get(res, "canceled"));
    json_t *evs = json_object_get(res, "events");

    if (canceled) {
        const char *reason = json_string_value(json_object_get(res, "cancel_reason"));
        if (!reason) reason = "";
        if (compact > 0) {
            int64_t from = 0;
            pthread_mutex_lock(&w->mu);
            from = w->next_rev;
            pthread_mutex_unlock(&w->mu);
            fw_info("event=etcd-watch-compacted from=%" PRId64 " compact_revision=%" PRId64, from,
                    compact);
            s_push_final(w, FW_ECOMPACTED, compact,
                         "etcd watch: revision %" PRId64 " was compacted (oldest kept %" PRId64
                         "): re-list and re-watch",
                         from, compact);
        } else if (s_auth_reason(reason)) {
            snprintf(w->last_error, sizeof w->last_error, "watch refused: %s", reason);
            w->stream_reauth = true;
            w->stream_end = true;
        } else {
            int err = *reason ? fw_etcd__grpc_error(0, reason) : FW_ECANCELED;
            if (err == FW_EIO) err = FW_ECANCELED;
            s_push_final(w, err, 0, "etcd watch cancelled by etcd: %s",
                         *reason ? reason : "(no reason)");
        }
        json_decref(j);
        return;
    }
    if (created) {
        w->stream_created = true;
        pthread_mutex_lock(&w->mu);
        if (w->next_rev == 0) w->next_rev = hrev + 1; /* "from now" is now pinned */
        w->created = true;
        pthread_cond_broadcast(&w->cond);
        pthread_mutex_unlock(&w->mu);
    }
    size_t n = json_is_array(evs) ? json_array_size(evs) : 0;
    pthread_mutex_lock(&w->mu);
    int64_t resume = w->next_rev;
    pthread_mutex_unlock(&w->mu);
    int64_t maxrev = 0;
    for (size_t i = 0; i < n && !w->stream_end; i++) {
        s_item *it = calloc(1, sizeof *it);
        if (!it) {
            snprintf(w->last_error, sizeof w->last_error, "watch: out of memory");
            w->stream_end = true;
            break;
        }
        if (s_event_parse(json_array_get(evs, i), &it->ev) < 0) {
            snprintf(w->last_error, sizeof w->last_error, "watch: %s", fw_err_detail());
            free(it);
            w->stream_end = true; /* reconnect from next_rev: nothing half-delivered */
            break;
        }
        int64_t rev = it->ev.kv.mod_revision;
        if (rev < resume) { /* invariant 1: already delivered */
            fw_etcd_event_clear(&it->ev);
            free(it);
            continue;
        }
        if (rev > maxrev) maxrev = rev;
        if (!s_push_event(w, it)) {
            w->stream_end = true;
            break;
        }
    }
    pthread_mutex_lock(&w->mu);
    if (maxrev >= w->next_rev) w->next_rev = maxrev + 1;
    /* A progress notification (no events) says every event up to its header
     * revision has been sent: resuming after it saves etcd a replay. */
    if (n == 0 && !created && hrev + 1 > w->next_rev && w->next_rev > 0) w->next_rev = hrev + 1;
    pthread_mutex_unlock(&w->mu);
    json_decref(j);
}

static size_t s_watch_write(char *p, size_t sz, size_t nm, void *ud) {
    fw_etcd_watch *w = ud;
    size_t n = sz * nm;
    if (atomic_load(&w->stop) || w->stream_end) return 0;
    if (w->line_len + n + 1 > w->line_cap) {
        size_t cap = w->line_cap ? w->line_cap : 16384;
        while (cap < w->line_len + n + 1) cap *= 2;
        char *l = cap <= S_MAX_LINE ? realloc(w->line, cap) : NULL;
        if (!l) {
            snprintf(w->last_error, sizeof w->last_error, "watch: response line over %u bytes",
                     S_MAX_LINE);
            return 0;
        }
        w->line = l;
        w->line_cap = cap;
    }
    memcpy(w->line + w->line_len, p, n);
    w->line_len += n;
    size_t start = 0;
    for (size_t i = w->line_len - n; i < w->line_len && !w->stream_end; i++) {
        if (w->line[i] != '\n') continue;
        w->line[i] = '\0';
        if (i > start) s_watch_line(w, w->line + start, i - start);
        start = i + 1;
    }
    if (w->stream_end) return 0; /* aborts the transfer */
    memmove(w->line, w->line + start, w->line_len - start);
    w->line_len -= start;
    return n;
}

/* ---------------------------------------------------------------- thread */

/* Run one stream to its end. */
static void s_stream_once(fw_etcd_watch *w, int ep) {
    w->line_len = 0;
    w->stream_created = false;
    w->stream_end = false;
    w->stream_reauth = false;
    fw_etcd *c = w->c;
    const char *endpoint = fw_etcd__endpoint(c, ep);
    char auth[1024];
    int rc = fw_etcd__auth_header(c, auth, sizeof auth, &w->token_gen);
    if (rc < 0) {
        if (rc == FW_EAUTH) s_push_final(w, rc, 0, "%s", fw_err_detail());
        else snprintf(w->last_error, sizeof w->last_error, "%s", fw_err_detail());
        return;
    }
    json_t *cr = json_deep_copy(w->create);
    pthread_mutex_lock(&w->mu);
    int64_t from = w->next_rev;
    pthread_mutex_unlock(&w->mu);
    if (cr && from > 0) json_object_set_new(cr, "start_revision", fw_etcd__ji64(from));
    json_t *body = cr ? json_pack("{s:o}", "create_request", cr) : NULL;
    char *payload = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    if (hdr) hdr = curl_slist_append(hdr, "Expect:");
    if (hdr && *auth) hdr = curl_slist_append(hdr, auth);
    if (!payload || !hdr) {
        snprintf(w->last_error, sizeof w->last_error, "watch: out of memory");
        free(payload);
        curl_slist_free_all(hdr);
        return;
    }
    char url[512];
    snprintf(url, sizeof url, "%s/v3/watch", endpoint);
    CURL *h = w->easy;
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_COPYPOSTFIELDS, payload);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, s_watch_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, w);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)fw_etcd__connect_timeout_ms(c));
    /* A watch is quiet for as long as nothing changes, so there is no
     * transfer timeout; TCP keepalive notices a peer that vanished. */
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPIDLE, 5L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPINTVL, 2L);
    free(payload);
    fw_debug("event=etcd-watch-connect endpoint=%s from=%" PRId64, endpoint, from);

    CURLcode cc = CURLE_OK;
    curl_multi_add_handle(w->multi, h);
    for (;;) {
        int running = 0;
        CURLMcode mc = curl_multi_perform(w->multi, &running);
        if (mc != CURLM_OK) {
            snprintf(w->last_error, sizeof w->last_error, "watch: %s", curl_multi_strerror(mc));
            break;
        }
        if (!running || atomic_load(&w->stop)) break;
        curl_multi_poll(w->multi, NULL, 0, 1000, NULL);
    }
    int left = 0;
    CURLMsg *msg;
    while ((msg = curl_multi_info_read(w->multi, &left)))
        if (msg->msg == CURLMSG_DONE) cc = msg->data.result;
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle(w->multi, h);
    curl_slist_free_all(hdr);
    if (!w->stream_end && !atomic_load(&w->stop))
        snprintf(w->last_error, sizeof w->last_error, "watch stream at %s ended: %s (HTTP %ld)",
                 endpoint, cc == CURLE_OK ? "closed by etcd" : curl_easy_strerror(cc), status);
}

static void *s_watch_main(void *arg) {
    fw_etcd_watch *w = arg;
    int ep = fw_etcd_endpoint_index(w->c);
    int64_t backoff = S_BACKOFF_MIN_MS;
    int auth_tries = 0;
    bool was_up = false;
    while (!atomic_load(&w->stop)) {
        s_stream_once(w, ep);
        if (atomic_load(&w->stop) || w->done) break;
        if (w->stream_created) {
            was_up = true;
            backoff = S_BACKOFF_MIN_MS;
            auth_tries = 0;
        }
        if (w->stream_reauth) {
            if (++auth_tries > 2) {
                s_push_final(w, FW_EAUTH, 0, "etcd watch: %s", w->last_error);
                break;
            }
            int rc = fw_etcd__reauth(w->c, w->token_gen);
            if (rc == FW_EAUTH) {
                s_push_final(w, rc, 0, "%s", fw_err_detail());
                break;
            }
            continue; /* same endpoint, fresh token */
        }
        ep = (ep + 1) % fw_etcd_endpoint_count(w->c);
        pthread_mutex_lock(&w->mu);
        if (was_up) w->reconnects++;
        int64_t from = w->next_rev;
        pthread_mutex_unlock(&w->mu);
        if (was_up)
            fw_info("event=etcd-watch-reconnect next_endpoint=%s from=%" PRId64 " reason=\"%s\"",
                    fw_etcd__endpoint(w->c, ep), from, w->last_error);
        /* Interruptible sleep: destroy wakes the multi handle. */
        curl_multi_poll(w->multi, NULL, 0, (int)backoff, NULL);
        backoff = backoff * 2 > S_BACKOFF_MAX_MS ? S_BACKOFF_MAX_MS : backoff * 2;
    }
    return NULL;
}

/* ------------------------------------------------------------------ API */

/* fw_etcd_watch_new with the error code kept. */
static int s_watch_create(fw_etcd *c, const char *key, const fw_etcd_watch_opts *opts,
                          fw_etcd_watch **out) {
    static const fw_etcd_watch_opts none = {0};
    if (!opts) opts = &none;
    *out = NULL;
    if (!c || !key) return fw_err_set(FW_EINVAL, "fw_etcd_watch_new: NULL argument");
    if (opts->start_revision < 0)
        return fw_err_set(FW_EINVAL, "etcd watch: negative start revision");
    fw_etcd_watch *w = calloc(1, sizeof *w);
    if (!w) return fw_err_set(FW_ENOMEM, "fw_etcd_watch_new");
    w->c = c;
    w->efd = -1;
    w->max = opts->queue_max ? opts->queue_max : S_QUEUE_DEFAULT;
    w->next_rev = opts->start_revision;
    pthread_mutex_init(&w->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cond, &ca);
    pthread_condattr_destroy(&ca);
    int rc = 0;
    w->create = json_object();
    w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    w->multi = curl_multi_init();
    w->easy = curl_easy_init();
    if (!w->create || w->efd < 0 || !w->multi || !w->easy) {
        rc = fw_err_set(FW_ERESOURCE, "etcd watch: eventfd or curl handles: %s", strerror(errno));
        goto fail;
    }
    if ((rc = fw_etcd__set_keys(w->create, key, strlen(key), opts->range_end, opts->prefix)) < 0)
        goto fail;
    json_t *filters = json_array();
    if (!filters || (opts->no_put && json_array_append_new(filters, json_string("NOPUT")) < 0) ||
        (opts->no_delete && json_array_append_new(filters, json_string("NODELETE")) < 0) ||
        (json_array_size(filters) && json_object_set(w->create, "filters", filters) < 0) ||
        (opts->prev_kv && json_object_set_new(w->create, "prev_kv", json_true()) < 0)) {
        json_decref(filters);
        rc = fw_err_set(FW_ENOMEM, "etcd watch");
        goto fail;
    }
    json_decref(filters);
    if (pthread_create(&w->thread, NULL, s_watch_main, w) != 0) {
        rc = fw_err_set(FW_ERESOURCE, "etcd watch: cannot start a thread");
        goto fail;
    }
    w->thread_started = true;

    /* Wait until etcd has created the watch (or the thread gave up). */
    int64_t deadline = fw_deadline_ms(fw_etcd__timeout_ms(c));
    pthread_mutex_lock(&w->mu);
    while (!w->created && !w->done && fw_remaining_ms(deadline) > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t ms = fw_remaining_ms(deadline);
        ts.tv_sec += ms / 1000;
        ts.tv_nsec += (ms % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
        pthread_cond_timedwait(&w->cond, &w->mu, &ts);
    }
    bool created = w->created;
    int err = (w->done && w->head) ? w->tail->err : 0;
    char why[256];
    snprintf(why, sizeof why, "%s", w->last_error[0] ? w->last_error : "no answer");
    pthread_mutex_unlock(&w->mu);
    if (!created) {
        rc = fw_err_set(err ? err : FW_EUNAVAIL, "etcd watch on \"%s\": not created within %d ms: %s",
                        key, fw_etcd__timeout_ms(c), why);
        goto fail;
    }
    *out = w;
    return 0;
fail:;
    char detail[512];
    snprintf(detail, sizeof detail, "%s", fw_err_detail());
    fw_etcd_watch_destroy(&w);
    return fw_err_set(rc, "%s", detail);
}

fw_etcd_watch *fw_etcd_watch_new(fw_etcd *c, const char *key, const fw_etcd_watch_opts *opts) {
    fw_etcd_watch *w = NULL;
    s_watch_create(c, key, opts, &w);
    return w;
}

void fw_etcd_watch_destroy(fw_etcd_watch **wp) {
    if (!wp || !*wp) return;
    fw_etcd_watch *w = *wp;
    if (w->thread_started) {
        pthread_mutex_lock(&w->mu);
        atomic_store(&w->stop, true);
        pthread_cond_broadcast(&w->cond);
        pthread_mutex_unlock(&w->mu);
        curl_multi_wakeup(w->multi);
        pthread_join(w->thread, NULL);
    }
    while (w->head) {
        s_item *it = w->head;
        w->head = it->next;
        fw_etcd_event_clear(&it->ev);
        free(it);
    }
    if (w->easy) curl_easy_cleanup(w->easy);
    if (w->multi) curl_multi_cleanup(w->multi);
    if (w->efd >= 0) close(w->efd);
    json_decref(w->create);
    free(w->line);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->mu);
    free(w);
    *wp = NULL;
}

int fw_etcd_watch_fd(const fw_etcd_watch *w) { return w ? w->efd : -1; }

int fw_etcd_watch_next(fw_etcd_watch *w, int timeout_ms, fw_etcd_event *ev) {
    if (!w || !ev) return fw_err_set(FW_EINVAL, "fw_etcd_watch_next: NULL argument");
    memset(ev, 0, sizeof *ev);
    int64_t deadline = timeout_ms > 0 ? fw_deadline_ms(timeout_ms) : 0;
    pthread_mutex_lock(&w->mu);
    while (!w->head) {
        if (w->final_popped) {
            pthread_mutex_unlock(&w->mu);
            return fw_err_set(FW_ECLOSED, "etcd watch: already ended (%s)", w->last_error);
        }
        if (timeout_ms == 0) break;
        if (timeout_ms < 0) {
            pthread_cond_wait(&w->cond, &w->mu);
            continue;
        }
        int64_t ms = fw_remaining_ms(deadline);
        if (ms <= 0) break;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += ms / 1000;
        ts.tv_nsec += (ms % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
        pthread_cond_timedwait(&w->cond, &w->mu, &ts);
    }
    s_item *it = w->head;
    if (it) {
        w->head = it->next;
        if (!w->head) w->tail = NULL;
        if (--w->n == 0) s_efd_drain(w); /* invariant 2 */
        if (it->err) w->final_popped = true;
        pthread_cond_broadcast(&w->cond); /* room for the stream thread */
    }
    pthread_mutex_unlock(&w->mu);
    if (!it) return 0;
    int rc = 1;
    *ev = it->ev;
    if (it->err) rc = fw_err_set(it->err, "%s", it->detail);
    free(it);
    return rc;
}

int64_t fw_etcd_watch_revision(fw_etcd_watch *w) {
    pthread_mutex_lock(&w->mu);
    int64_t r = w->next_rev;
    pthread_mutex_unlock(&w->mu);
    return r;
}

int fw_etcd_watch_reconnects(fw_etcd_watch *w) {
    pthread_mutex_lock(&w->mu);
    int r = w->reconnects;
    pthread_mutex_unlock(&w->mu);
    return r;
}

/* ------------------------------------------------------------ list+watch */

typedef struct {
    fw_etcd_kv *kvs;
    size_t n, cap;
} s_list;

static int s_copy_kv(fw_etcd_kv *dst, const fw_etcd_kv *src) {
    *dst = *src;
    dst->key = malloc(src->key_len + 1);
    dst->value = malloc(src->value_len + 1);
    if (!dst->key || !dst->value) {
        fw_etcd_kv_clear(dst);
        return fw_err_set(FW_ENOMEM, "etcd list");
    }
    memcpy(dst->key, src->key, src->key_len + 1);
    memcpy(dst->value, src->value, src->value_len + 1);
    return 0;
}

static int s_list_page(const fw_etcd_kv *kvs, size_t n, void *arg) {
    s_list *l = arg;
    if (l->n + n > l->cap) {
        size_t cap = l->cap ? l->cap : 256;
        while (cap < l->n + n) cap *= 2;
        fw_etcd_kv *k = realloc(l->kvs, cap * sizeof *k);
        if (!k) return fw_err_set(FW_ENOMEM, "etcd list: %zu keys", l->n + n);
        l->kvs = k;
        l->cap = cap;
    }
    for (size_t i = 0; i < n; i++) {
        int rc = s_copy_kv(&l->kvs[l->n], &kvs[i]);
        if (rc < 0) return rc;
        l->n++;
    }
    return 0;
}

int fw_etcd_list_watch(fw_etcd *c, const char *prefix, const fw_etcd_watch_opts *opts,
                       fw_etcd_kvs **list, fw_etcd_watch **w) {
    if (!c || !prefix || !list || !w) return fw_err_set(FW_EINVAL, "fw_etcd_list_watch: NULL argument");
    *list = NULL;
    *w = NULL;
    s_list l = {0};
    int64_t rev = 0;
    int rc = fw_etcd_range_pages(c, prefix, 0, 0, s_list_page, &l, &rev);
    fw_etcd_kvs *out = rc == 0 ? calloc(1, sizeof *out) : NULL;
    if (rc == 0 && !out) rc = fw_err_set(FW_ENOMEM, "etcd list");
    if (rc == 0) {
        fw_etcd_watch_opts o = opts ? *opts : (fw_etcd_watch_opts){0};
        o.prefix = true;
        o.range_end = NULL;
        o.start_revision = rev + 1; /* exactly the changes after the snapshot */
        rc = s_watch_create(c, prefix, &o, w);
    }
    if (rc < 0) {
        for (size_t i = 0; i < l.n; i++) fw_etcd_kv_clear(&l.kvs[i]);
        free(l.kvs);
        free(out);
        return rc;
    }
    out->kvs = l.kvs;
    out->n = l.n;
    out->count = (int64_t)l.n;
    out->revision = rev;
    *list = out;
    return 0;
}
