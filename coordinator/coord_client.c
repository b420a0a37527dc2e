/* coord_client.c - the client endpoint (the job submission socket).
 *
 * Theory of operation
 * -------------------
 * flywheelctl and notebooks talk to a ROUTER socket with DEALER sockets.
 * Every request carries a bearer token, checked first (FW_EAUTH); then a
 * standby answers REDIRECT(leader endpoint, name, epoch), and the leader
 * serves it. Reads are answered from memory at once. Writes (submit, cancel,
 * drain) change the model, which queues the etcd writes, and the reply is a
 * store action: it leaves only after the txn holding the change committed,
 * so a JOB_SUBMITTED id always names a job etcd has. Job views show the
 * committed job state for the same reason.
 *
 * Bad frames (undecodable, wrong message, bad fields) get an ERROR reply
 * when the frame came with a routing identity, and a rate-limited WARN. */
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

#define S_BURST 256
/* Refuse new work when this many changes wait for etcd: etcd is down or far
 * behind, and memory should not grow without bound meanwhile. */
#define S_BACKLOG_LIMIT 2000000
#define S_PAGE_DEFAULT  1000

void coord_client_send(coord_t *c, zframe_t *identity, fw_msg_t *m) {
    fw_msg_set_epoch(m, (uint64_t)c->L.epoch);
    fw_msg_set_sender(m, c->o.name);
    int rc = fw_msg_send(c->client_sock, identity, m);
    if (rc < 0) fw_debug("event=client-send-failed err=%s", fw_errname(rc));
}

void coord_client_error(coord_t *c, zframe_t *identity, const fw_msg_t *req, int code,
                        uint64_t retry_ms, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fw_msg_t *e = fw_msg_new_error(req, code, "%s", buf);
    if (!e) return;
    if (retry_ms) fw_msg_set_uint_f(e, FW_F_ERROR_retry_after_ms, retry_ms);
    c->m.client_errors_total++;
    coord_client_send(c, identity, e);
    fw_msg_destroy(&e);
}

static void s_reply_doc(coord_t *c, zframe_t *identity, const fw_msg_t *req, int id, json_t *doc,
                        const char *next_cursor) {
    char *txt = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (!txt) {
        coord_client_error(c, identity, req, FW_ENOMEM, 0, "out of memory rendering the reply");
        return;
    }
    fw_msg_t *r = fw_msg_new_reply(req, id);
    if (!r) {
        free(txt);
        return;
    }
    /* Every *_REPLY message has "doc" as its first field. */
    int rc = fw_msg_set_str(r, "doc", txt);
    if (rc == 0 && next_cursor) rc = fw_msg_set_str(r, "next_cursor", next_cursor);
    free(txt);
    if (rc < 0) {
        fw_msg_destroy(&r);
        coord_client_error(c, identity, req, rc, 0, "reply too large: %s (use a smaller limit)",
                           fw_err_detail());
        return;
    }
    coord_client_send(c, identity, r);
    fw_msg_destroy(&r);
}

/* ------------------------------------------------------------ views */

static json_t *s_task_view(const coord_task_t *t) {
    coord_jw w = {0};
    coord_render_task(&w, t);
    json_t *o = w.oom ? NULL : json_loads(w.buf, 0, NULL);
    coord_jw_free(&w);
    if (!o) return NULL;
    char id[COORD_TASKID_MAX];
    coord_task_id_format(t, id, sizeof id);
    json_object_del(o, "schema");
    json_object_set_new(o, "id", json_string(id));
    json_object_set_new(o, "job", json_string(t->job->id));
    json_object_set_new(o, "index", json_integer(t->index));
    if (!t->written && t->state == TASK_PENDING) json_object_set_new(o, "attempt", json_integer(0));
    if (t->progress > 0) json_object_set_new(o, "progress", json_real(t->progress));
    return o;
}

static json_t *s_counts(const uint32_t *count) {
    json_t *o = json_object();
    for (int s = 0; s < TASK__COUNT; s++)
        json_object_set_new(o, coord_task_state_name(s), json_integer(count[s]));
    return o;
}

void *coord_client_job_view(coord_t *c, const coord_job_t *j, bool full) {
    (void)c;
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(j->id));
    /* Clients see what etcd holds, never a state that might still be lost. */
    json_object_set_new(o, "state", json_string(coord_job_state_name(j->committed_state)));
    json_object_set_new(o, "kind", json_string(j->spec.kind));
    json_object_set_new(o, "priority", json_integer(j->spec.priority));
    json_object_set_new(o, "owner", json_string(j->owner ? j->owner : ""));
    json_object_set_new(o, j->spec.gang ? "world_size" : "shards", json_integer(j->ntasks));
    json_object_set_new(o, "gang", json_boolean(j->spec.gang));
    json_object_set_new(o, "max_retries", json_integer(j->spec.max_retries));
    json_object_set_new(o, "submitted_at", json_integer(j->submitted_at));
    if (j->started_at) json_object_set_new(o, "started_at", json_integer(j->started_at));
    if (j->finished_at && coord_job_terminal(j->committed_state))
        json_object_set_new(o, "finished_at", json_integer(j->finished_at));
    if (j->error && coord_job_terminal(j->committed_state))
        json_object_set_new(o, "error", json_string(j->error));
    if (j->rendezvous) json_object_set_new(o, "rendezvous", json_string(j->rendezvous));
    if (j->idem_key) json_object_set_new(o, "idempotency_key", json_string(j->idem_key));
    json_object_set_new(o, "tasks", s_counts(j->count));
    if (j->ml) {
        json_object_update(o, j->ml);
        /* A list shows many jobs: the curve (up to 1000 points) only in get. */
        if (!full) json_object_del(o, "curve");
    }
    json_t *spec = json_loads(j->spec.json, 0, NULL);
    if (spec) json_object_set_new(o, "spec", spec);
    return o;
}

static json_t *s_agent_view(coord_t *c, const coord_agent_t *a) {
    (void)c;
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(a->id));
    json_object_set_new(o, "host", json_string(a->host ? a->host : ""));
    const char *state = !a->alive          ? "lost"
                        : a->drain         ? "draining"
                        : a->self_draining ? "draining"
                        : !a->connected    ? "disconnected"
                                           : "ready";
    json_object_set_new(o, "state", json_string(state));
    json_object_set_new(o, "alive", json_boolean(a->alive));
    json_object_set_new(o, "connected", json_boolean(a->connected));
    json_object_set_new(o, "drain", json_boolean(a->drain));
    json_object_set_new(o, "agent_draining", json_boolean(a->self_draining));
    if (a->drain_by && a->drain) json_object_set_new(o, "drain_by", json_string(a->drain_by));
    if (a->drain_reason && a->drain)
        json_object_set_new(o, "drain_reason", json_string(a->drain_reason));
    json_object_set_new(o, "cpus", json_integer((json_int_t)a->cpus));
    json_object_set_new(o, "memory_mb", json_integer((json_int_t)a->memory_mb));
    json_object_set_new(o, "gpus", json_integer(a->ngpus));
    json_object_set_new(o, "used",
                        json_pack("{s:I,s:I,s:I}", "cpus", (json_int_t)a->used_cpus, "memory_mb",
                                  (json_int_t)a->used_mem, "gpus", (json_int_t)a->used_gpus));
    json_object_set_new(o, "tasks", json_integer(a->nheld));
    json_object_set_new(o, "dispatched", json_integer((json_int_t)a->dispatched));
    json_t *labels = json_object();
    for (int i = 0; i < a->nlabels; i++)
        json_object_set_new(labels, a->label_key[i], json_string(a->label_val[i]));
    json_object_set_new(o, "labels", labels);
    if (a->registered_at) json_object_set_new(o, "registered_at", json_integer(a->registered_at));
    if (a->record) {
        json_t *r = json_loads(a->record, 0, NULL);
        if (r) json_object_set_new(o, "record", r);
    }
    return o;
}

/* ------------------------------------------------------------ pending replies */

typedef struct {
    zframe_t *identity;
    fw_msg_t *req;
    int kind; /* FW_MSG_JOB_SUBMIT, JOB_CANCEL, AGENT_DRAIN */
    char id[COORD_ID_MAX + 1];
    bool existing;
} s_pending;

static s_pending *s_pending_new(zframe_t *identity, const fw_msg_t *req, int kind, const char *id) {
    s_pending *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->identity = zframe_dup(identity);
    p->req = fw_msg_dup(req);
    p->kind = kind;
    snprintf(p->id, sizeof p->id, "%s", id);
    if (!p->identity || !p->req) {
        zframe_destroy(&p->identity);
        fw_msg_destroy(&p->req);
        free(p);
        return NULL;
    }
    return p;
}

static void s_pending_action(coord_t *c, void *ptr, uint64_t u, bool committed) {
    s_pending *p = ptr;
    (void)u;
    if (!committed) {
        coord_client_error(c, p->identity, p->req, FW_ENOTLEADER, 1000,
                           "leadership changed before the change was committed; retry");
    } else if (p->kind == FW_MSG_JOB_SUBMIT) {
        fw_msg_t *r = fw_msg_new_reply(p->req, FW_MSG_JOB_SUBMITTED);
        if (r) {
            fw_msg_set_str_f(r, FW_F_JOB_SUBMITTED_job_id, p->id);
            if (p->existing) fw_msg_set_bool_f(r, FW_F_JOB_SUBMITTED_existing, true);
            coord_client_send(c, p->identity, r);
            fw_msg_destroy(&r);
        }
    } else if (p->kind == FW_MSG_JOB_CANCEL) {
        coord_job_t *j = coord_job_find(c->st, p->id);
        if (j)
            s_reply_doc(c, p->identity, p->req, FW_MSG_JOB_CANCEL_REPLY,
                        coord_client_job_view(c, j, false), NULL);
    } else if (p->kind == FW_MSG_AGENT_DRAIN) {
        coord_agent_t *a = coord_agent_get(c->st, p->id, false);
        if (a) {
            coord_agents_drain_action(c, a, 0, true);
            s_reply_doc(c, p->identity, p->req, FW_MSG_AGENT_DRAIN_REPLY, s_agent_view(c, a), NULL);
        }
    }
    zframe_destroy(&p->identity);
    fw_msg_destroy(&p->req);
    free(p);
}

/* ------------------------------------------------------------ requests */

static void s_submit(coord_t *c, zframe_t *identity, const fw_msg_t *m, const coord_token_t *tok) {
    if (coord_store_backlog(c->store) > S_BACKLOG_LIMIT) {
        coord_client_error(c, identity, m, FW_EUNAVAIL, 1000,
                           "the leader is behind writing to etcd; retry");
        return;
    }
    const char *idem = fw_msg_get_str_f(m, FW_F_JOB_SUBMIT_idempotency_key);
    char ikey[256] = "";
    if (idem && idem[0]) {
        snprintf(ikey, sizeof ikey, "%s\n%s", tok->name, idem);
        coord_job_t *j = zhashx_lookup(c->idem, ikey);
        if (j) {
            s_pending *p = s_pending_new(identity, m, FW_MSG_JOB_SUBMIT, j->id);
            if (p) {
                p->existing = true;
                coord_store_after(c->store, s_pending_action, p, 0);
            }
            return;
        }
    }
    coord_spec_t sp;
    int rc = coord_spec_parse(fw_msg_get_str_f(m, FW_F_JOB_SUBMIT_spec),
                              (uint32_t)c->o.max_tasks_per_job, &sp);
    if (rc < 0) {
        coord_client_error(c, identity, m, rc, 0, "%s", fw_err_detail());
        return;
    }
    if (sp.admin_only && tok->role != COORD_ROLE_ADMIN) {
        coord_client_error(c, identity, m, FW_EPERM, 0,
                           "spec.kind: %s jobs need an admin token (%s is %s)", sp.kind, tok->name,
                           coord_role_name(tok->role));
        coord_spec_clear(&sp);
        return;
    }
    if ((rc = coord_ml_prepare(c, &sp)) < 0) {
        coord_client_error(c, identity, m, rc, rc == FW_EIO || rc == FW_EUNAVAIL ? 1000 : 0, "%s",
                           fw_err_detail());
        coord_spec_clear(&sp);
        return;
    }
    int64_t now = fw_wall_ms();
    coord_job_t *j = coord_job_add(c->st, c->st->next_job_seq, &sp, tok->name, now, true);
    if (!j) {
        coord_spec_clear(&sp);
        coord_client_error(c, identity, m, FW_ENOMEM, 1000,
                           "cannot create the job (out of memory)");
        return;
    }
    j->submit_mono = fw_mono_ms();
    for (uint32_t i = 0; i < j->ntasks; i++) j->tasks[i].ready_mono = j->submit_mono;
    if (ikey[0]) {
        j->idem_key = strdup(idem);
        zhashx_update(c->idem, ikey, j);
    }
    c->m.jobs_submitted_total++;
    coord_store_touch(c->store, COORD_OBJ_JOB, j, -1, JOB_QUEUED, tok->name);
    fw_info("event=job-submitted job=%s kind=%s tasks=%u gang=%d priority=%d owner=%s", j->id,
            j->spec.kind, j->ntasks, j->spec.gang, j->spec.priority, tok->name);
    s_pending *p = s_pending_new(identity, m, FW_MSG_JOB_SUBMIT, j->id);
    if (p) coord_store_after(c->store, s_pending_action, p, 0);
    coord_want_sched(c);
}

static void s_job_get(coord_t *c, zframe_t *identity, const fw_msg_t *m) {
    const char *id = fw_msg_get_str_f(m, FW_F_JOB_GET_job_id);
    coord_job_t *j = coord_job_find(c->st, id);
    if (!j || !j->record_committed) {
        coord_client_error(c, identity, m, FW_ENOTFOUND, 0, "job %s: not found", id);
        return;
    }
    s_reply_doc(c, identity, m, FW_MSG_JOB_GET_REPLY, coord_client_job_view(c, j, true), NULL);
}

static void s_job_list(coord_t *c, zframe_t *identity, const fw_msg_t *m) {
    const char *sf = fw_msg_get_str_f(m, FW_F_JOB_LIST_state);
    int want = -1;
    if (sf && sf[0] && (want = coord_job_state_parse(sf)) < 0) {
        coord_client_error(c, identity, m, FW_EINVAL, 0, "state: unknown job state \"%.32s\"", sf);
        return;
    }
    uint64_t limit = fw_msg_has_f(m, FW_F_JOB_LIST_limit)
                         ? fw_msg_get_uint_f(m, FW_F_JOB_LIST_limit)
                         : S_PAGE_DEFAULT;
    if (limit == 0) limit = S_PAGE_DEFAULT;
    const char *cur = fw_msg_get_str_f(m, FW_F_JOB_LIST_cursor);
    size_t start = c->st->njobs; /* newest first: walk jobv backwards */
    if (cur && cur[0]) {
        char *end;
        unsigned long long v = strtoull(cur, &end, 10);
        if (*end || v > c->st->njobs) {
            coord_client_error(c, identity, m, FW_EINVAL, 0, "cursor: not a cursor of this leader");
            return;
        }
        start = (size_t)v;
    }
    json_t *arr = json_array();
    size_t i = start;
    while (i > 0 && json_array_size(arr) < limit) {
        const coord_job_t *j = c->st->jobv[--i];
        if (!j->record_committed) continue;
        if (want >= 0 && j->committed_state != want) continue;
        json_array_append_new(arr, coord_client_job_view(c, j, false));
    }
    char next[32];
    bool more = false;
    for (size_t k = i; k > 0 && !more; k--) {
        const coord_job_t *j = c->st->jobv[k - 1];
        more = j->record_committed && (want < 0 || j->committed_state == want);
    }
    snprintf(next, sizeof next, "%zu", i);
    s_reply_doc(c, identity, m, FW_MSG_JOB_LIST_REPLY, arr, more ? next : NULL);
}

static void s_job_cancel(coord_t *c, zframe_t *identity, const fw_msg_t *m,
                         const coord_token_t *tok) {
    const char *id = fw_msg_get_str_f(m, FW_F_JOB_CANCEL_job_id);
    coord_job_t *j = coord_job_find(c->st, id);
    if (!j || !j->record_committed) {
        coord_client_error(c, identity, m, FW_ENOTFOUND, 0, "job %s: not found", id);
        return;
    }
    if (tok->role != COORD_ROLE_ADMIN && strcmp(tok->name, j->owner) != 0) {
        coord_client_error(c, identity, m, FW_EPERM, 0,
                           "job %s belongs to %s: only its owner or an admin "
                           "may cancel it",
                           id, j->owner);
        return;
    }
    if (!coord_job_terminal(j->state)) {
        const char *why = fw_msg_get_str_f(m, FW_F_JOB_CANCEL_reason);
        char buf[1200];
        snprintf(buf, sizeof buf, "cancelled by %s%s%s", tok->name, why && why[0] ? ": " : "",
                 why ? why : "");
        int from = j->state;
        coord_job_cancel(c->st, j, buf, fw_wall_ms());
        /* Names who asked in the audit entry (coalesced with the job's own write). */
        coord_store_touch(c->store, COORD_OBJ_JOB, j, from, j->state, tok->name);
        fw_info("event=job-cancelled job=%s by=%s", j->id, tok->name);
        coord_want_sched(c);
    }
    s_pending *p = s_pending_new(identity, m, FW_MSG_JOB_CANCEL, j->id);
    if (p) coord_store_after(c->store, s_pending_action, p, 0);
}

static void s_task_list(coord_t *c, zframe_t *identity, const fw_msg_t *m) {
    const char *jid = fw_msg_get_str_f(m, FW_F_TASK_LIST_job_id);
    const char *sf = fw_msg_get_str_f(m, FW_F_TASK_LIST_state);
    int want = -1;
    if (sf && sf[0] && (want = coord_task_state_parse(sf)) < 0) {
        coord_client_error(c, identity, m, FW_EINVAL, 0, "state: unknown task state \"%.32s\"", sf);
        return;
    }
    uint64_t limit = fw_msg_has_f(m, FW_F_TASK_LIST_limit)
                         ? fw_msg_get_uint_f(m, FW_F_TASK_LIST_limit)
                         : S_PAGE_DEFAULT;
    if (limit == 0) limit = S_PAGE_DEFAULT;
    const char *cur = fw_msg_get_str_f(m, FW_F_TASK_LIST_cursor);
    unsigned long long start = 0;
    if (cur && cur[0]) {
        char *end;
        start = strtoull(cur, &end, 10);
        if (*end) {
            coord_client_error(c, identity, m, FW_EINVAL, 0, "cursor: not a cursor of this leader");
            return;
        }
    }
    if (!jid || !jid[0]) {
        /* Across jobs: the live tasks of live jobs, oldest job first. */
        json_t *arr = json_array();
        unsigned long long seen = 0;
        for (size_t k = 0; k < c->st->njobs && json_array_size(arr) < limit; k++) {
            coord_job_t *j = c->st->jobv[k];
            if (!j->tasks || coord_job_terminal(j->state)) continue;
            for (uint32_t i = 0; i < j->ntasks && json_array_size(arr) < limit; i++) {
                coord_task_t *t = &j->tasks[i];
                if (want >= 0 ? t->state != want : coord_task_terminal(t->state)) continue;
                if (seen++ < start) continue;
                json_t *v = s_task_view(t);
                if (v) json_array_append_new(arr, v);
            }
        }
        char next[32];
        snprintf(next, sizeof next, "%llu", start + json_array_size(arr));
        s_reply_doc(c, identity, m, FW_MSG_TASK_LIST_REPLY, arr,
                    json_array_size(arr) >= limit ? next : NULL);
        return;
    }
    coord_job_t *j = coord_job_find(c->st, jid);
    if (!j || !j->record_committed) {
        coord_client_error(c, identity, m, FW_ENOTFOUND, 0, "job %s: not found", jid);
        return;
    }
    if (!j->tasks) {
        uint32_t next = 0;
        char *txt = coord_store_read_tasks(c->store, j->id, want >= 0 ? sf : NULL, (uint32_t)start,
                                           (uint32_t)limit, &next);
        if (!txt) {
            coord_client_error(c, identity, m, FW_EUNAVAIL, 1000,
                               "cannot read the tasks of %s from etcd: %s", jid, fw_err_detail());
            return;
        }
        json_t *arr = json_loads(txt, 0, NULL);
        free(txt);
        char nbuf[32];
        snprintf(nbuf, sizeof nbuf, "%u", next);
        s_reply_doc(c, identity, m, FW_MSG_TASK_LIST_REPLY, arr ? arr : json_array(),
                    next ? nbuf : NULL);
        return;
    }
    json_t *arr = json_array();
    unsigned long long seen = 0;
    uint32_t i = 0;
    for (; i < j->ntasks && json_array_size(arr) < limit; i++) {
        coord_task_t *t = &j->tasks[i];
        if (want >= 0 && t->state != want) continue;
        if (seen++ < start) continue;
        json_t *v = s_task_view(t);
        if (v) json_array_append_new(arr, v);
    }
    char next[32];
    snprintf(next, sizeof next, "%llu", start + json_array_size(arr));
    s_reply_doc(c, identity, m, FW_MSG_TASK_LIST_REPLY, arr, i < j->ntasks ? next : NULL);
}

static int s_page_coords(const fw_etcd_kv *kvs, size_t n, void *arg) {
    json_t *arr = arg;
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_loads(kvs[i].value, 0, NULL);
        if (!json_is_object(o)) {
            json_decref(o);
            continue;
        }
        json_object_del(o, "schema");
        json_array_append_new(arr, o);
    }
    return 0;
}

static void s_cluster_status(coord_t *c, zframe_t *identity, const fw_msg_t *m) {
    json_t *o = json_object();
    json_t *leader =
        json_pack("{s:s,s:I,s:s,s:s}", "name", c->o.name, "epoch", (json_int_t)c->L.epoch, "client",
                  c->client_ep, "state", coord_role_name_of(c->L.role));
    json_object_set_new(o, "leader", leader);
    json_t *coords = json_array();
    char key[320];
    snprintf(key, sizeof key, "%s/coordinators/", c->o.etcd_prefix);
    fw_etcd_range_pages(c->etcd, key, 100, 0, s_page_coords, coords, NULL);
    json_object_set_new(o, "coordinators", coords);
    size_t conn = 0, drain = 0, alive = 0;
    /* Counts only: AGENT_LIST gives the agents themselves. */
    for (size_t i = 0; i < c->st->nagents; i++) {
        coord_agent_t *a = c->st->agentv[i];
        if (!a->alive && !a->connected) continue;
        alive += a->alive;
        conn += a->connected && a->alive;
        drain += a->drain || a->self_draining;
    }
    json_object_set_new(o, "agents",
                        json_pack("{s:I,s:I,s:I}", "alive", (json_int_t)alive, "connected",
                                  (json_int_t)conn, "draining", (json_int_t)drain));
    json_object_set_new(o, "queue_depth", json_integer((json_int_t)c->st->nqueue));
    json_t *tc = json_object();
    for (int s = 0; s < TASK__COUNT; s++)
        json_object_set_new(tc, coord_task_state_name(s),
                            json_integer((json_int_t)c->st->task_count[s]));
    json_object_set_new(o, "tasks", tc);
    json_t *jc = json_object();
    for (int s = 0; s < JOB__COUNT; s++)
        json_object_set_new(jc, coord_job_state_name(s),
                            json_integer((json_int_t)c->st->job_count[s]));
    json_object_set_new(o, "jobs", jc);
    s_reply_doc(c, identity, m, FW_MSG_CLUSTER_STATUS_REPLY, o, NULL);
}

static void s_agent_list(coord_t *c, zframe_t *identity, const fw_msg_t *m) {
    json_t *arr = json_array();
    uint64_t limit = fw_msg_has_f(m, FW_F_AGENT_LIST_limit)
                         ? fw_msg_get_uint_f(m, FW_F_AGENT_LIST_limit)
                         : S_PAGE_DEFAULT;
    if (limit == 0) limit = S_PAGE_DEFAULT;
    const char *cur = fw_msg_get_str_f(m, FW_F_AGENT_LIST_cursor);
    size_t start = cur && cur[0] ? (size_t)strtoull(cur, NULL, 10) : 0;
    size_t i = start;
    for (; i < c->st->nagents && json_array_size(arr) < limit; i++) {
        coord_agent_t *a = c->st->agentv[i];
        if (!a->alive && !a->connected && !a->drain) continue;
        json_array_append_new(arr, s_agent_view(c, a));
    }
    char next[32];
    snprintf(next, sizeof next, "%zu", i);
    s_reply_doc(c, identity, m, FW_MSG_AGENT_LIST_REPLY, arr, i < c->st->nagents ? next : NULL);
}

static void s_agent_drain(coord_t *c, zframe_t *identity, const fw_msg_t *m,
                          const coord_token_t *tok) {
    if (tok->role != COORD_ROLE_ADMIN) {
        coord_client_error(c, identity, m, FW_EPERM, 0,
                           "draining agents needs an admin token (%s is %s)", tok->name,
                           coord_role_name(tok->role));
        return;
    }
    const char *id = fw_msg_get_str_f(m, FW_F_AGENT_DRAIN_agent_id);
    coord_agent_t *a = coord_agent_get(c->st, id, false);
    if (!a || (!a->alive && !a->ever_seen && !a->drain)) {
        coord_client_error(c, identity, m, FW_ENOTFOUND, 0, "agent %s: not found", id);
        return;
    }
    bool drain = fw_msg_has_f(m, FW_F_AGENT_DRAIN_drain)
                     ? fw_msg_get_bool_f(m, FW_F_AGENT_DRAIN_drain)
                     : true;
    int from = a->drain;
    a->drain = drain;
    free(a->drain_by);
    a->drain_by = strdup(tok->name);
    free(a->drain_reason);
    const char *why = fw_msg_get_str_f(m, FW_F_AGENT_DRAIN_reason);
    a->drain_reason = why && why[0] ? strdup(why) : NULL;
    a->drain_at = fw_wall_ms();
    coord_store_touch(c->store, COORD_OBJ_ADMIN, a, from, drain, tok->name);
    fw_info("event=agent-%s agent=%s by=%s", drain ? "drain" : "undrain", a->id, tok->name);
    s_pending *p = s_pending_new(identity, m, FW_MSG_AGENT_DRAIN, a->id);
    if (p) coord_store_after(c->store, s_pending_action, p, 0);
    coord_want_sched(c);
}

static void s_redirect(coord_t *c, zframe_t *identity, const fw_msg_t *m) {
    if (c->L.leader_client[0] && strcmp(c->L.leader_name, c->o.name) != 0) {
        fw_msg_t *r = fw_msg_new_reply(m, FW_MSG_REDIRECT);
        if (!r) return;
        fw_msg_set_str_f(r, FW_F_REDIRECT_leader_endpoint, c->L.leader_client);
        fw_msg_set_str_f(r, FW_F_REDIRECT_leader_name, c->L.leader_name);
        fw_msg_set_uint_f(r, FW_F_REDIRECT_epoch, (uint64_t)c->L.leader_epoch);
        coord_client_send(c, identity, r);
        fw_msg_destroy(&r);
    } else {
        coord_client_error(c, identity, m, FW_ENOTLEADER, 500, "no leader elected yet; retry");
    }
}

static void s_handle(coord_t *c, zframe_t *identity, const fw_msg_t *m) {
    const fw_msg_info *info = fw_msg_info_of(m);
    c->m.client_requests_total++;
    if (!info || (info->sender != FW_ROLE_CLIENT && info->sender != FW_ROLE_ANY) ||
        fw_msg_field(m, "token") < 0) {
        c->m.bad_frames_total[COORD_EP_CLIENT]++;
        coord_warn_limited(c, "event=bad-frame endpoint=client msg=%s reason=not-a-request",
                           fw_msg_name(m));
        coord_client_error(c, identity, m, FW_EPROTO, 0, "%s is not a client request",
                           fw_msg_name(m));
        return;
    }
    const coord_token_t *tok = coord_tokens_find(c->tokens, fw_msg_get_str(m, "token"));
    if (!tok) {
        coord_warn_limited(c, "event=auth-failed endpoint=client msg=%s", fw_msg_name(m));
        coord_client_error(c, identity, m, FW_EAUTH, 0, "%s",
                           coord_tokens_count(c->tokens)
                               ? "invalid token"
                               : "no tokens configured (coordinator.tokens_file)");
        return;
    }
    if (!coord_is_leader(c)) {
        s_redirect(c, identity, m);
        return;
    }
    switch (fw_msg_id(m)) {
    case FW_MSG_JOB_SUBMIT:
        s_submit(c, identity, m, tok);
        break;
    case FW_MSG_JOB_GET:
        s_job_get(c, identity, m);
        break;
    case FW_MSG_JOB_LIST:
        s_job_list(c, identity, m);
        break;
    case FW_MSG_JOB_CANCEL:
        s_job_cancel(c, identity, m, tok);
        break;
    case FW_MSG_TASK_LIST:
        s_task_list(c, identity, m);
        break;
    case FW_MSG_CLUSTER_STATUS:
        s_cluster_status(c, identity, m);
        break;
    case FW_MSG_AGENT_LIST:
        s_agent_list(c, identity, m);
        break;
    case FW_MSG_AGENT_DRAIN:
        s_agent_drain(c, identity, m, tok);
        break;
    case FW_MSG_LOG_STREAM:
        coord_logs_start(c, identity, m);
        break;
    default:
        if (coord_data_serves(fw_msg_id(m))) {
            coord_data_handle(c, identity, m, tok);
            break;
        }
        if (coord_models_serves(fw_msg_id(m))) {
            coord_models_handle(c, identity, m, tok);
            break;
        }
        coord_client_error(c, identity, m, FW_EUNSUPPORTED, 0,
                           "%s is not served by this coordinator", fw_msg_name(m));
    }
}

static void s_bad_frame(coord_t *c, zframe_t *identity, int rc) {
    coord_client_error(c, identity, NULL, rc, 0, "bad frame: %s", fw_err_detail());
}

int coord_client_on_readable(zloop_t *loop, zsock_t *sock, void *arg) {
    (void)loop;
    coord_read_burst(arg, sock, COORD_EP_CLIENT, S_BURST, s_handle, s_bad_frame);
    return 0;
}
