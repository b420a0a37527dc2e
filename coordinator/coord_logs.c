/* coord_logs.c - the log proxy: LOG_STREAM from clients, LOG_FETCH to agents.
 *
 * Task output stays on the agent that ran the attempt (rotated files there);
 * the leader only relays. A stream is a session: the client's LOG_STREAM
 * (identity + request id), the task attempt, the agent, and an offset. The
 * leader sends LOG_FETCH to the agent (request id = the session's id), turns
 * each LOG_FETCH_REPLY into a LOG_CHUNK with the client's request id, and
 * either fetches on (more data, or follow) or ends with eof. With follow,
 * an empty reply is retried after coordinator.log_follow_interval until the
 * task is finished and the agent says eof. Because the logs live on the
 * agents, this works the same after a failover.
 *
 * Sessions are few and short-lived; they live in a hash by id and a cron
 * sweep ends those whose agent stopped answering. */
#include "coord.h"

#include "fw_err.h"
#include "fw_log.h"
#include "fw_time.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_MAX_SESSIONS 1024
#define S_CHUNK        (1u << 20) /* bytes asked per LOG_FETCH */
#define S_FETCH_TIMEOUT_MS 10000
#define S_MAX_FOLLOW_MS    (24LL * 3600 * 1000) /* a forgotten follow ends eventually */

typedef struct {
    uint64_t id;
    zframe_t *identity;
    uint64_t client_rid;
    char task_id[COORD_TASKID_MAX];
    uint32_t attempt;
    uint32_t stream;
    uint64_t offset;
    bool follow;
    char agent[COORD_ID_MAX + 1];
    bool waiting;        /* a LOG_FETCH is out */
    int64_t sent_mono;   /* when it went out */
    int64_t next_mono;   /* next fetch (follow polling) */
    int64_t started_mono;
} s_session;

struct coord_logs {
    zhashx_t *by_id; /* "id" -> session */
    uint64_t next_id;
};

static void s_session_free(void **item) {
    s_session *s = *item;
    if (s) {
        zframe_destroy(&s->identity);
        free(s);
    }
    *item = NULL;
}

coord_logs_t *coord_logs_new(coord_t *c) {
    (void)c;
    coord_logs_t *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->by_id = zhashx_new();
    if (!l->by_id) {
        free(l);
        return NULL;
    }
    zhashx_set_destructor(l->by_id, s_session_free);
    l->next_id = 1;
    return l;
}

void coord_logs_destroy(coord_logs_t **lp) {
    if (!lp || !*lp) return;
    zhashx_destroy(&(*lp)->by_id);
    free(*lp);
    *lp = NULL;
}

size_t coord_logs_count(const coord_t *c) { return c->logs ? zhashx_size(c->logs->by_id) : 0; }

static void s_key(uint64_t id, char *buf, size_t size) {
    snprintf(buf, size, "%" PRIu64, id);
}

static void s_client_send(coord_t *c, s_session *s, fw_msg_t *m) {
    fw_msg_set_request_id(m, s->client_rid);
    fw_msg_set_epoch(m, (uint64_t)c->L.epoch);
    fw_msg_set_sender(m, c->o.name);
    fw_msg_send(c->client_sock, s->identity, m);
}

static void s_end(coord_t *c, s_session *s) {
    char k[24];
    s_key(s->id, k, sizeof k);
    zhashx_delete(c->logs->by_id, k);
}

static void s_fail(coord_t *c, s_session *s, int code, const char *msg) {
    fw_msg_t *e = fw_msg_new_error(NULL, code, "%s", msg);
    if (e) {
        s_client_send(c, s, e);
        fw_msg_destroy(&e);
    }
    s_end(c, s);
}

static void s_fetch(coord_t *c, s_session *s) {
    fw_msg_t *m = fw_msg_new(FW_MSG_LOG_FETCH);
    if (!m) return;
    fw_msg_set_request_id(m, s->id);
    fw_msg_set_str_f(m, FW_F_LOG_FETCH_task_id, s->task_id);
    fw_msg_set_uint_f(m, FW_F_LOG_FETCH_attempt, s->attempt);
    fw_msg_set_uint_f(m, FW_F_LOG_FETCH_stream, s->stream);
    fw_msg_set_uint_f(m, FW_F_LOG_FETCH_offset, s->offset);
    fw_msg_set_uint_f(m, FW_F_LOG_FETCH_max_bytes, S_CHUNK);
    int rc = coord_agents_send(c, s->agent, m);
    fw_msg_destroy(&m);
    if (rc < 0) {
        char buf[200];
        snprintf(buf, sizeof buf, "agent %s, which holds the log of %s, is not connected",
                 s->agent, s->task_id);
        s_fail(c, s, FW_EUNAVAIL, buf);
        return;
    }
    s->waiting = true;
    s->sent_mono = fw_mono_ms();
}

/* Which agent ran attempt `attempt` of a task: the current attempt's agent,
 * or the one named in the history of earlier attempts. */
static bool s_agent_of(const coord_task_t *t, uint32_t attempt, char *out, size_t size) {
    if (attempt == t->attempt) {
        if (!t->agent) return false;
        snprintf(out, size, "%s", t->agent->id);
        return true;
    }
    json_t *h = t->history ? json_loads(t->history, 0, NULL) : NULL;
    size_t i;
    json_t *e;
    bool found = false;
    json_array_foreach(h, i, e) {
        if ((uint32_t)json_integer_value(json_object_get(e, "attempt")) == attempt) {
            const char *a = json_string_value(json_object_get(e, "agent"));
            if (a && a[0]) {
                snprintf(out, size, "%s", a);
                found = true;
            }
        }
    }
    json_decref(h);
    return found;
}

void coord_logs_start(coord_t *c, zframe_t *identity, const fw_msg_t *req) {
    const char *tid = fw_msg_get_str_f(req, FW_F_LOG_STREAM_task_id);
    coord_task_t *t = coord_task_find(c->st, tid);
    char agent[COORD_ID_MAX + 1] = "";
    uint32_t attempt = 0;
    char jid[COORD_ID_MAX + 1];
    uint32_t idx;
    fw_msg_t *err = NULL;
    if (t) {
        attempt = fw_msg_has_f(req, FW_F_LOG_STREAM_attempt)
                      ? (uint32_t)fw_msg_get_uint_f(req, FW_F_LOG_STREAM_attempt)
                      : t->attempt;
        if (attempt == 0 || !s_agent_of(t, attempt, agent, sizeof agent))
            err = fw_msg_new_error(req, FW_ENOTFOUND, "task %s attempt %u has not run anywhere",
                                   tid, attempt);
    } else if (coord_task_id_parse(tid, jid, sizeof jid, &idx) == 0 && coord_job_find(c->st, jid)) {
        /* A finished job whose tasks left memory: its record names the agent. */
        char key[320];
        snprintf(key, sizeof key, "%s/tasks/%s/%06u", c->o.etcd_prefix, jid, idx);
        fw_etcd_kv *kv = NULL;
        if (fw_etcd_get(c->etcd, key, &kv) == 0) {
            json_t *o = json_loads(kv->value, 0, NULL);
            uint32_t cur = (uint32_t)json_integer_value(json_object_get(o, "attempt"));
            attempt = fw_msg_has_f(req, FW_F_LOG_STREAM_attempt)
                          ? (uint32_t)fw_msg_get_uint_f(req, FW_F_LOG_STREAM_attempt)
                          : cur;
            const char *a = json_string_value(json_object_get(o, "agent"));
            if (attempt == cur && a) snprintf(agent, sizeof agent, "%s", a);
            json_t *h = json_object_get(o, "history");
            size_t i;
            json_t *e;
            json_array_foreach(h, i, e) {
                if ((uint32_t)json_integer_value(json_object_get(e, "attempt")) == attempt &&
                    json_string_value(json_object_get(e, "agent")))
                    snprintf(agent, sizeof agent, "%s",
                             json_string_value(json_object_get(e, "agent")));
            }
            json_decref(o);
            fw_etcd_kv_free(&kv);
        }
        if (!agent[0])
            err = fw_msg_new_error(req, FW_ENOTFOUND, "task %s: no log (never ran)", tid);
    } else {
        err = fw_msg_new_error(req, FW_ENOTFOUND, "task %s: not found", tid);
    }
    if (!err && zhashx_size(c->logs->by_id) >= S_MAX_SESSIONS)
        err = fw_msg_new_error(req, FW_EUNAVAIL, "too many log streams; retry later");
    if (err) {
        fw_msg_set_epoch(err, (uint64_t)c->L.epoch);
        fw_msg_set_sender(err, c->o.name);
        fw_msg_send(c->client_sock, identity, err);
        fw_msg_destroy(&err);
        c->m.client_errors_total++;
        return;
    }
    s_session *s = calloc(1, sizeof *s);
    if (!s) return;
    s->id = c->logs->next_id++;
    s->identity = zframe_dup(identity);
    s->client_rid = fw_msg_request_id(req);
    snprintf(s->task_id, sizeof s->task_id, "%s", tid);
    s->attempt = attempt;
    s->stream = (uint32_t)fw_msg_get_uint_f(req, FW_F_LOG_STREAM_stream);
    s->offset = fw_msg_get_uint_f(req, FW_F_LOG_STREAM_offset);
    s->follow = fw_msg_get_bool_f(req, FW_F_LOG_STREAM_follow);
    snprintf(s->agent, sizeof s->agent, "%s", agent);
    s->started_mono = fw_mono_ms();
    char k[24];
    s_key(s->id, k, sizeof k);
    zhashx_insert(c->logs->by_id, k, s);
    s_fetch(c, s);
}

void coord_logs_on_reply(coord_t *c, const char *agent_id, const fw_msg_t *m) {
    char k[24];
    s_key(fw_msg_request_id(m), k, sizeof k);
    s_session *s = zhashx_lookup(c->logs->by_id, k);
    if (!s || strcmp(s->agent, agent_id) != 0) return;
    s->waiting = false;
    if (fw_msg_id(m) == FW_MSG_ERROR) {
        s_fail(c, s, (int)fw_msg_get_int_f(m, FW_F_ERROR_code), fw_msg_get_str_f(m, FW_F_ERROR_message));
        return;
    }
    size_t len = 0;
    const void *data = fw_msg_get_bin_f(m, FW_F_LOG_FETCH_REPLY_data, &len);
    bool agent_eof = fw_msg_get_bool_f(m, FW_F_LOG_FETCH_REPLY_eof);
    uint64_t off = fw_msg_get_uint_f(m, FW_F_LOG_FETCH_REPLY_offset);
    coord_task_t *t = coord_task_find(c->st, s->task_id);
    bool finished = !t || coord_task_terminal(t->state) || t->attempt != s->attempt;
    /* Without follow the stream ends once the log so far was sent; with
     * follow, when the attempt is over and its log is complete. */
    bool eof = s->follow ? (agent_eof && finished) || (agent_eof && len == 0 && finished)
                         : (len < S_CHUNK || agent_eof);
    if (len > 0 || eof) {
        fw_msg_t *chunk = fw_msg_new(FW_MSG_LOG_CHUNK);
        if (chunk) {
            fw_msg_set_str_f(chunk, FW_F_LOG_CHUNK_task_id, s->task_id);
            fw_msg_set_uint_f(chunk, FW_F_LOG_CHUNK_attempt, s->attempt);
            fw_msg_set_uint_f(chunk, FW_F_LOG_CHUNK_stream, s->stream);
            fw_msg_set_uint_f(chunk, FW_F_LOG_CHUNK_offset, off);
            fw_msg_set_bin_f(chunk, FW_F_LOG_CHUNK_data, data ? data : "", len);
            if (eof) fw_msg_set_bool_f(chunk, FW_F_LOG_CHUNK_eof, true);
            s_client_send(c, s, chunk);
            fw_msg_destroy(&chunk);
        }
    }
    s->offset = off + len;
    if (eof) {
        s_end(c, s);
        return;
    }
    if (len > 0)
        s_fetch(c, s); /* more may be there already */
    else
        s->next_mono = fw_mono_ms() + c->o.log_follow_ms;
}

void coord_logs_cron(coord_t *c) {
    if (!c->logs || zhashx_size(c->logs->by_id) == 0) return;
    int64_t now = fw_mono_ms();
    /* Collect first: s_fetch and s_fail may delete from the hash. */
    zlistx_t *todo = zlistx_new();
    for (s_session *s = zhashx_first(c->logs->by_id); s; s = zhashx_next(c->logs->by_id))
        zlistx_add_end(todo, s);
    for (s_session *s = zlistx_first(todo); s; s = zlistx_next(todo)) {
        if (s->waiting && now - s->sent_mono > S_FETCH_TIMEOUT_MS)
            s_fail(c, s, FW_ETIMEDOUT, "the agent did not answer the log fetch");
        else if (now - s->started_mono > S_MAX_FOLLOW_MS)
            s_fail(c, s, FW_ETIMEDOUT, "log stream open too long; reconnect");
        else if (!s->waiting && s->next_mono && now >= s->next_mono)
            s_fetch(c, s);
    }
    zlistx_destroy(&todo);
}

void coord_logs_reset(coord_t *c) {
    if (!c->logs) return;
    /* Tell followers to come back to the new leader. */
    for (s_session *s = zhashx_first(c->logs->by_id); s; s = zhashx_next(c->logs->by_id)) {
        fw_msg_t *e = fw_msg_new_error(NULL, FW_ENOTLEADER, "leadership changed; reconnect");
        if (e) {
            s_client_send(c, s, e);
            fw_msg_destroy(&e);
        }
    }
    zhashx_purge(c->logs->by_id);
}
