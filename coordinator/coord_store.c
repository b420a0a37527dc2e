/* coord_store.c - the leader's journal: state changes -> fenced etcd txns.
 *
 * Theory of operation
 * -------------------
 * coord_state reports every change through coord_store_hook(), which appends
 * an entry (object, from, to) to the change queue. Replies that must wait
 * for durability (JOB_SUBMITTED, TASK_RESULT_ACK, AGENT_SET_DRAIN...) are
 * queued as actions behind the changes they depend on. coord_store_flush()
 * cuts the queue into batches: each batch is one etcd txn guarded by the
 * leader's election key (fw_etcd_election_txn), holding up to batch_max_ops-1
 * puts/deletes plus one audit entry. Values are rendered from the objects'
 * current state when the batch is cut, so an object changed several times
 * before a cut is written once (coalescing).
 *
 * Up to txn_inflight batches are committed at once, each by its own actor
 * thread (fw_etcd is thread-safe). Batches RETIRE strictly in the order they
 * were cut: a batch's actions run only after it and every earlier batch have
 * committed, so nothing is acknowledged before everything before it is
 * durable.
 *
 * Invariants:
 *   S1. An object is in at most one batch in flight (wr.inflight <= 1): a cut
 *       stops at an object still in flight, so two txns never race on a key.
 *   S2. A task is written only with or after its job's record (a cut stops at
 *       a task whose job record is neither committed nor in this batch), so
 *       etcd never holds tasks of a job it does not hold.
 *   S3. A job's terminal record is written only when none of its task writes
 *       is in flight in another batch: the job record comes last.
 *   S4. Actions run in queue order, after every change queued before them
 *       committed, or with committed=false when leadership ends.
 * A txn that fails with FW_EFENCED ends leadership (coord_leader_step_down,
 * which calls coord_store_reset). Any other failure is retried with backoff:
 * the txn is idempotent (same puts, same audit key) so a retry after an
 * "outcome unknown" timeout is safe. */
#include "coord.h"
#include "coord_records.h"

#include "fw_err.h"
#include "fw_log.h"
#include "fw_time.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_ACTION 200 /* change-queue entry kind: an action */
/* A txn well under etcd's 1.5 MiB request limit, leaving room for base64. */
#define S_MAX_BATCH_BYTES (900u * 1024u)

typedef struct {
    uint8_t kind;
    int8_t from, to;
    void *obj;
    const char *by;
    coord_action_fn *fn;
    void *p;
    uint64_t u;
} s_change;

typedef struct {
    uint8_t kind;
    uint8_t state; /* rendered state (task, job), or queued flag */
    uint32_t attempt;
    void *obj;
} s_objref;

typedef struct {
    void *obj;
    uint8_t kind;
    uint8_t n;
    int8_t states[7];
    const char *by;
} s_audit_item;

typedef struct s_batch {
    uint64_t id, gen;
    fw_etcd_txn *txn;
    s_objref *objs;
    size_t nobjs, objcap;
    s_change *acts;
    size_t nacts, actcap;
    s_audit_item *audit;
    size_t naudit, auditcap;
    size_t nops, bytes;
    int rc;
    bool done, busy, stale;
    int tries;
    int64_t sent_us, dur_us;
    int64_t retry_at; /* mono ms; 0: not waiting for a retry */
} s_batch;

typedef struct {
    zactor_t *actor;
    s_batch *b; /* the batch it commits, NULL when idle */
} s_worker;

struct coord_store {
    coord_t *c;
    s_change *q;
    size_t qhead, qtail, qcap;
    int64_t q_oldest; /* mono ms the oldest queued entry arrived */
    s_batch **fl;     /* batches cut and not retired, in order */
    size_t nfl, flcap;
    uint64_t next_id;
    s_worker *w;
    int nw;
    coord_jw jw;
    coord_jw aw;
};

/* ---------------------------------------------------------------- workers */

typedef struct {
    fw_etcd *etcd;
} s_worker_arg;

static void s_worker_fn(zsock_t *pipe, void *arg) {
    fw_etcd *etcd = arg;
    zsock_signal(pipe, 0);
    for (;;) {
        char *cmd = NULL;
        void *p = NULL;
        if (zsock_recv(pipe, "sp", &cmd, &p) < 0) break;
        bool term = cmd && strcmp(cmd, "$TERM") == 0;
        free(cmd);
        if (term) break;
        s_batch *b = p;
        if (!b) continue;
        int64_t t0 = zclock_usecs();
        b->rc = b->txn ? fw_etcd_txn_commit(etcd, b->txn, NULL) : 0;
        if (b->rc < 0 && b->rc != FW_EFENCED)
            fw_warn("event=txn-failed batch=%llu ops=%zu err=%s detail=\"%s\"",
                    (unsigned long long)b->id, b->nops, fw_errname(b->rc), fw_err_detail());
        b->dur_us = zclock_usecs() - t0;
        zsock_send(pipe, "p", b);
    }
}

static int s_worker_done(zloop_t *loop, zsock_t *sock, void *arg);
static void s_stop_action(coord_t *c, void *p, uint64_t u, bool committed);

coord_store_t *coord_store_new(coord_t *c) {
    coord_store_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->c = c;
    s->nw = c->o.txn_inflight;
    s->w = calloc((size_t)s->nw, sizeof *s->w);
    s->flcap = (size_t)s->nw;
    s->fl = calloc(s->flcap, sizeof *s->fl);
    s->next_id = 1;
    if (!s->w || !s->fl) goto fail;
    for (int i = 0; i < s->nw; i++) {
        s->w[i].actor = zactor_new(s_worker_fn, c->etcd);
        if (!s->w[i].actor) goto fail;
        zloop_reader(c->loop, zactor_sock(s->w[i].actor), s_worker_done, s);
    }
    return s;
fail:
    coord_store_destroy(&s);
    return NULL;
}

static void s_batch_free(s_batch *b) {
    if (!b) return;
    fw_etcd_txn_destroy(&b->txn);
    free(b->objs);
    free(b->acts);
    free(b->audit);
    free(b);
}

static void s_run_actions(coord_store_t *s, s_batch *b, bool committed) {
    for (size_t i = 0; i < b->nacts; i++) {
        /* A stop whose leadership ended needs nothing: the state goes too. */
        if (!committed && b->acts[i].fn == s_stop_action) continue;
        b->acts[i].fn(s->c, b->acts[i].p, b->acts[i].u, committed);
    }
    b->nacts = 0;
}

static void s_drop_change(coord_store_t *s, s_change *e) {
    /* Stop entries (fn NULL) need nothing: the state is dropped with them. */
    if (e->kind == S_ACTION && e->fn) e->fn(s->c, e->p, e->u, false);
    if (e->kind == COORD_OBJ_RAWDEL) free(e->obj);
}

void coord_store_reset(coord_store_t *s) {
    /* Queued changes: their actions learn that leadership ended. */
    for (size_t i = s->qhead; i < s->qtail; i++) s_drop_change(s, &s->q[i]);
    s->qhead = s->qtail = 0;
    for (size_t i = 0; i < s->nfl; i++) {
        s_batch *b = s->fl[i];
        s_run_actions(s, b, false);
        for (size_t k = 0; k < b->nobjs; k++)
            if (b->objs[k].kind == COORD_OBJ_RAWDEL) free(b->objs[k].obj);
        b->nobjs = 0;
        if (b->busy)
            b->stale = true; /* its actor still holds it: freed when it answers */
        else
            s_batch_free(b);
    }
    s->nfl = 0;
}

void coord_store_destroy(coord_store_t **sp) {
    if (!sp || !*sp) return;
    coord_store_t *s = *sp;
    coord_store_reset(s);
    for (int i = 0; s->w && i < s->nw; i++) {
        if (!s->w[i].actor) continue;
        zloop_reader_end(s->c->loop, zactor_sock(s->w[i].actor));
        zactor_destroy(&s->w[i].actor); /* waits for a txn in progress */
        if (s->w[i].b && s->w[i].b->stale) s_batch_free(s->w[i].b);
    }
    free(s->w);
    free(s->fl);
    free(s->q);
    coord_jw_free(&s->jw);
    coord_jw_free(&s->aw);
    free(s);
    *sp = NULL;
}

size_t coord_store_backlog(const coord_store_t *s) { return s->qtail - s->qhead; }
size_t coord_store_inflight(const coord_store_t *s) { return s->nfl; }

/* ---------------------------------------------------------------- the queue */

static s_change *s_push(coord_store_t *s) {
    if (s->qtail == s->qcap) {
        if (s->qhead > 0 && s->qhead >= s->qcap / 2) {
            /* Slide the live part down rather than grow. */
            memmove(s->q, s->q + s->qhead, (s->qtail - s->qhead) * sizeof *s->q);
            s->qtail -= s->qhead;
            s->qhead = 0;
        } else {
            size_t cap = s->qcap ? s->qcap * 2 : 4096;
            s_change *q = realloc(s->q, cap * sizeof *q);
            if (!q) return NULL;
            s->q = q;
            s->qcap = cap;
        }
    }
    if (s->qhead == s->qtail) s->q_oldest = fw_mono_ms();
    s_change *e = &s->q[s->qtail++];
    memset(e, 0, sizeof *e);
    return e;
}

static void s_enqueue(coord_store_t *s, coord_obj_kind kind, void *obj, int from, int to,
                      const char *by) {
    if (!coord_is_leader(s->c)) return; /* a standby writes nothing */
    s_change *e = s_push(s);
    if (!e) {
        /* Out of memory: the state in memory can no longer be made durable. */
        coord_leader_step_down(s->c, "out of memory in the change queue");
        return;
    }
    e->kind = (uint8_t)kind;
    e->from = (int8_t)from;
    e->to = (int8_t)to;
    e->obj = obj;
    e->by = by;
    if (kind == COORD_OBJ_TASK) ((coord_task_t *)obj)->job->pending_writes++;
}

void coord_store_hook(void *arg, coord_obj_kind kind, void *obj, int from, int to) {
    coord_store_t *s = arg;
    if (kind == COORD_EV_STOP) {
        /* Not a write: a TASK_CANCEL once what precedes is durable. */
        coord_task_t *t = obj;
        t->job->pending_writes++; /* keeps the task array alive until it runs */
        s_change *e = s_push(s);
        if (!e) return;
        e->kind = S_ACTION;
        e->fn = NULL; /* marker: stop action, see s_run_stop */
        e->obj = t;
        e->u = (uint64_t)from;
        return;
    }
    s_enqueue(s, kind, obj, from, to, NULL);
}

void coord_store_touch(coord_store_t *s, coord_obj_kind kind, void *obj, int from, int to,
                       const char *by) {
    s_enqueue(s, kind, obj, from, to, by);
}

void coord_store_after(coord_store_t *s, coord_action_fn *fn, void *p, uint64_t u) {
    if (!coord_is_leader(s->c)) {
        fn(s->c, p, u, false);
        return;
    }
    s_change *e = s_push(s);
    if (!e) {
        fn(s->c, p, u, false);
        return;
    }
    e->kind = S_ACTION;
    e->fn = fn;
    e->p = p;
    e->u = u;
}

/* The stop action (COORD_EV_STOP): the task pointer stays valid because the
 * job's pending_writes counts it. */
static void s_stop_action(coord_t *c, void *p, uint64_t u, bool committed) {
    coord_task_t *t = p;
    t->job->pending_writes--;
    if (committed) coord_agents_stop_action(c, t, (uint32_t)u);
}

/* ---------------------------------------------------------------- cutting */

static coord_wr_t *s_wr(uint8_t kind, void *obj) {
    switch (kind) {
    case COORD_OBJ_TASK: return &((coord_task_t *)obj)->wr;
    case COORD_OBJ_JOB: return &((coord_job_t *)obj)->wr;
    case COORD_OBJ_QUEUE: return &((coord_job_t *)obj)->qwr;
    case COORD_OBJ_ADMIN: return &((coord_agent_t *)obj)->wr;
    default: return NULL;
    }
}

static bool s_grow(void **arr, size_t *cap, size_t n, size_t elem) {
    if (n < *cap) return true;
    size_t c = *cap ? *cap * 2 : 64;
    void *a = realloc(*arr, c * elem);
    if (!a) return false;
    *arr = a;
    *cap = c;
    return true;
}

static void s_audit_note(s_batch *b, coord_wr_t *wr, uint8_t kind, void *obj, int from, int to,
                         const char *by) {
    if (kind == COORD_OBJ_QUEUE || kind == COORD_OBJ_RAWDEL) return; /* derived, not audited */
    s_audit_item *it = NULL;
    if (wr && wr->batch_mark == b->id && wr->audit_idx < b->naudit &&
        b->audit[wr->audit_idx].obj == obj) {
        it = &b->audit[wr->audit_idx];
    } else {
        if (!s_grow((void **)&b->audit, &b->auditcap, b->naudit, sizeof *b->audit)) return;
        it = &b->audit[b->naudit];
        memset(it, 0, sizeof *it);
        it->obj = obj;
        it->kind = kind;
        if (wr) wr->audit_idx = (uint32_t)b->naudit;
        b->naudit++;
        it->states[it->n++] = (int8_t)from;
    }
    if (it->n < (int)sizeof it->states && !(it->n > 1 && it->states[it->n - 1] == to))
        it->states[it->n++] = (int8_t)to;
    if (by) it->by = by;
}

static const char *s_admin_state(int v) { return v == 1 ? "draining" : v == 0 ? "in-service" : ""; }

static void s_audit_render(coord_store_t *s, s_batch *b, coord_jw *w) {
    coord_t *c = s->c;
    coord_jw_reset(w);
    coord_jw_obj_begin(w);
    coord_jw_kint(w, "schema", COORD_SCHEMA);
    coord_jw_kint(w, "ts", fw_wall_ms());
    coord_jw_kint(w, "epoch", c->L.epoch);
    coord_jw_kstr(w, "actor", c->o.name);
    coord_jw_key(w, "changes");
    coord_jw_arr_begin(w);
    char id[COORD_TASKID_MAX];
    for (size_t i = 0; i < b->naudit; i++) {
        s_audit_item *it = &b->audit[i];
        coord_jw_arr_begin(w);
        switch (it->kind) {
        case COORD_OBJ_TASK: coord_task_id_format(it->obj, id, sizeof id); break;
        case COORD_OBJ_JOB: snprintf(id, sizeof id, "%s", ((coord_job_t *)it->obj)->id); break;
        case COORD_OBJ_ADMIN: snprintf(id, sizeof id, "agent/%s", ((coord_agent_t *)it->obj)->id); break;
        default: id[0] = '\0';
        }
        coord_jw_str(w, id);
        for (int k = 0; k < it->n; k++) {
            int v = it->states[k];
            coord_jw_str(w, it->kind == COORD_OBJ_TASK  ? (v >= 0 ? coord_task_state_name(v) : "")
                            : it->kind == COORD_OBJ_JOB ? (v >= 0 ? coord_job_state_name(v) : "")
                                                        : s_admin_state(v));
        }
        if (it->by) {
            coord_jw_obj_begin(w);
            coord_jw_kstr(w, "by", it->by);
            coord_jw_obj_end(w);
        }
        coord_jw_arr_end(w);
    }
    coord_jw_arr_end(w);
    coord_jw_obj_end(w);
}

/* Render and add the op for one object; false if the txn refused it. */
static bool s_add_op(coord_store_t *s, s_batch *b, uint8_t kind, void *obj) {
    coord_t *c = s->c;
    const char *P = c->o.etcd_prefix;
    char key[COORD_KEY_MAX];
    coord_jw *w = &s->jw;
    coord_jw_reset(w);
    s_objref ref = {kind, 0, 0, obj};
    int rc;
    switch (kind) {
    case COORD_OBJ_TASK: {
        coord_task_t *t = obj;
        coord_key_task(key, sizeof key, P, t);
        coord_render_task(w, t);
        ref.state = t->state;
        ref.attempt = t->attempt;
        break;
    }
    case COORD_OBJ_JOB: {
        coord_job_t *j = obj;
        coord_key_job(key, sizeof key, P, j);
        coord_render_job(w, j);
        ref.state = j->state;
        break;
    }
    case COORD_OBJ_QUEUE: {
        coord_job_t *j = obj;
        coord_key_queue(key, sizeof key, P, j);
        ref.state = j->queued;
        if (j->queued) coord_render_queue(w, j);
        break;
    }
    case COORD_OBJ_ADMIN:
        coord_key_admin(key, sizeof key, P, obj);
        coord_render_admin(w, obj);
        break;
    case COORD_OBJ_RAWDEL: snprintf(key, sizeof key, "%s", (const char *)obj); break;
    default: return false;
    }
    if (w->oom) return false;
    bool del = kind == COORD_OBJ_RAWDEL || (kind == COORD_OBJ_QUEUE && !ref.state);
    rc = del ? fw_etcd_txn_delete(b->txn, FW_ETCD_SUCCESS, key, false, false)
             : fw_etcd_txn_put(b->txn, FW_ETCD_SUCCESS, key, w->buf, w->len, 0, false);
    if (rc < 0) return false;
    if (!s_grow((void **)&b->objs, &b->objcap, b->nobjs, sizeof *b->objs)) return false;
    b->objs[b->nobjs++] = ref;
    b->nops++;
    b->bytes += strlen(key) + w->len + 64;
    coord_wr_t *wr = s_wr(kind, obj);
    if (wr) {
        wr->batch_mark = b->id;
        wr->inflight++;
    }
    if (kind == COORD_OBJ_TASK) ((coord_task_t *)obj)->job->inflight_task_writes++;
    return true;
}

/* Cut one batch from the head of the queue. NULL when nothing could go. */
static s_batch *s_cut(coord_store_t *s) {
    coord_t *c = s->c;
    s_batch *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->id = s->next_id++;
    b->gen = c->L.gen;
    b->txn = fw_etcd_election_txn(c->L.election);
    if (!b->txn) {
        free(b);
        return NULL;
    }
    size_t max_ops = (size_t)c->o.batch_max_ops - 1; /* one op for the audit entry */
    while (s->qhead < s->qtail) {
        s_change *e = &s->q[s->qhead];
        if (e->kind == S_ACTION) {
            if (!s_grow((void **)&b->acts, &b->actcap, b->nacts, sizeof *b->acts)) break;
            b->acts[b->nacts] = *e;
            if (!e->fn) { /* a stop: see coord_store_hook */
                b->acts[b->nacts].fn = s_stop_action;
                b->acts[b->nacts].p = e->obj;
            }
            b->nacts++;
            s->qhead++;
            continue;
        }
        coord_wr_t *wr = s_wr(e->kind, e->obj);
        bool included = wr && wr->batch_mark == b->id;
        if (!included) {
            if (wr && wr->inflight) break; /* S1 */
            if (b->nops >= max_ops || b->bytes >= S_MAX_BATCH_BYTES) break;
            if (e->kind == COORD_OBJ_TASK) {
                coord_job_t *j = ((coord_task_t *)e->obj)->job;
                if (!j->record_committed && j->wr.batch_mark != b->id) break; /* S2 */
            }
            if (e->kind == COORD_OBJ_JOB) {
                coord_job_t *j = e->obj;
                /* S3: task writes in this batch are fine (one txn). */
                size_t mine = 0;
                if (coord_job_terminal(j->state) && j->inflight_task_writes > 0) {
                    for (size_t k = 0; k < b->nobjs; k++)
                        if (b->objs[k].kind == COORD_OBJ_TASK &&
                            ((coord_task_t *)b->objs[k].obj)->job == j)
                            mine++;
                    if (j->inflight_task_writes > mine) break;
                }
            }
            if (!s_add_op(s, b, e->kind, e->obj)) {
                coord_warn_limited(c, "event=txn-build-failed kind=%d detail=\"%s\"", e->kind,
                                   fw_err_detail());
                break;
            }
        } else if (e->kind == COORD_OBJ_TASK) {
            /* Coalesced: written once by the op already in this batch. */
            ((coord_task_t *)e->obj)->job->pending_writes--;
        }
        if (e->kind == COORD_OBJ_TASK || e->kind == COORD_OBJ_JOB || e->kind == COORD_OBJ_ADMIN)
            s_audit_note(b, wr, e->kind, e->obj, e->from, e->to, e->by);
        s->qhead++;
    }
    if (s->qhead == s->qtail) {
        s->qhead = s->qtail = 0;
    } else {
        s->q_oldest = fw_mono_ms(); /* what is left waited for this cut at least */
    }
    if (b->nops == 0 && b->nacts == 0) {
        s_batch_free(b);
        return NULL;
    }
    if (b->nops > 0) {
        char key[COORD_KEY_MAX];
        coord_key_audit(key, sizeof key, c->o.etcd_prefix, (uint64_t)++c->last_audit_seq);
        s_audit_render(s, b, &s->aw);
        if (s->aw.oom ||
            fw_etcd_txn_put(b->txn, FW_ETCD_SUCCESS, key, s->aw.buf, s->aw.len, 0, false) < 0)
            coord_warn_limited(c, "event=audit-build-failed batch=%llu", (unsigned long long)b->id);
    } else {
        fw_etcd_txn_destroy(&b->txn); /* actions only: they wait for earlier batches */
    }
    return b;
}

static int s_idle_worker(coord_store_t *s) {
    for (int i = 0; i < s->nw; i++)
        if (!s->w[i].b) return i;
    return -1;
}

static void s_send(coord_store_t *s, s_batch *b) {
    int i = s_idle_worker(s);
    if (i < 0) return;
    s->w[i].b = b;
    b->busy = true;
    b->retry_at = 0;
    b->tries++;
    b->sent_us = zclock_usecs();
    zsock_send(zactor_sock(s->w[i].actor), "sp", "COMMIT", b);
}

/* ---------------------------------------------------------------- retiring */

static void s_retire(coord_store_t *s, s_batch *b) {
    coord_t *c = s->c;
    /* Objects: their writes are durable now. */
    for (size_t i = 0; i < b->nobjs; i++) {
        s_objref *r = &b->objs[i];
        coord_wr_t *wr = s_wr(r->kind, r->obj);
        if (wr && wr->inflight) wr->inflight--;
        switch (r->kind) {
        case COORD_OBJ_TASK: {
            coord_task_t *t = r->obj;
            coord_job_t *j = t->job;
            j->inflight_task_writes--;
            j->pending_writes--;
            /* The placement is durable: tell the agent (if nothing changed since). */
            if (r->state == TASK_ASSIGNED && t->state == TASK_ASSIGNED &&
                t->attempt == r->attempt && !t->sent)
                coord_agents_send_assign(c, t);
            if (j->pending_writes == 0 && coord_job_terminal(j->committed_state))
                coord_job_retired(c, j);
            break;
        }
        case COORD_OBJ_JOB: {
            coord_job_t *j = r->obj;
            j->record_committed = true;
            j->committed_state = r->state;
            if (coord_job_terminal(r->state) && j->pending_writes == 0) coord_job_retired(c, j);
            break;
        }
        case COORD_OBJ_QUEUE: ((coord_job_t *)r->obj)->queued_written = r->state; break;
        case COORD_OBJ_RAWDEL: free(r->obj); break;
        default: break;
        }
    }
    b->nobjs = 0;
    s_run_actions(s, b, true);
    c->m.etcd_txn_ops_total += b->nops;
}

static void s_retire_ready(coord_store_t *s) {
    size_t n = 0;
    while (n < s->nfl && s->fl[n]->done) {
        s_retire(s, s->fl[n]);
        s_batch_free(s->fl[n]);
        n++;
    }
    if (n) {
        memmove(s->fl, s->fl + n, (s->nfl - n) * sizeof *s->fl);
        s->nfl -= n;
    }
}

static int s_worker_done(zloop_t *loop, zsock_t *sock, void *arg) {
    coord_store_t *s = arg;
    coord_t *c = s->c;
    void *p = NULL;
    if (zsock_recv(sock, "p", &p) < 0 || !p) return 0;
    s_batch *b = p;
    for (int i = 0; i < s->nw; i++)
        if (s->w[i].b == b) s->w[i].b = NULL;
    b->busy = false;
    if (b->stale) {
        /* Leadership changed while it was out: nobody waits for it. */
        s_batch_free(b);
        return 0;
    }
    if (!b->txn) b->rc = 0;
    coord_hist_observe(&c->m.txn_duration, (double)b->dur_us / 1e6);
    if (b->rc == 0) {
        c->m.etcd_txn_total[COORD_TXN_OK]++;
        b->done = true;
        s_retire_ready(s);
    } else if (b->rc == FW_EFENCED) {
        c->m.etcd_txn_total[COORD_TXN_FENCED]++;
        coord_leader_step_down(c, "fenced txn");
        return 0;
    } else if (b->rc == FW_ETOOBIG || b->rc == FW_EINVAL || b->rc == FW_ESTATE) {
        /* Our bug, not etcd's: retrying cannot help. Rebuild from etcd. */
        c->m.etcd_txn_total[COORD_TXN_ERROR]++;
        fw_error("event=txn-refused batch=%llu ops=%zu err=%s", (unsigned long long)b->id,
                 b->nops, fw_errname(b->rc));
        coord_leader_step_down(c, "txn refused by etcd");
        return 0;
    } else {
        c->m.etcd_txn_total[COORD_TXN_ERROR]++;
        int64_t backoff = 50LL << (b->tries < 6 ? b->tries : 6); /* 100ms .. 3.2s */
        b->retry_at = fw_mono_ms() + backoff;
    }
    coord_after_events(c);
    (void)loop;
    return 0;
}

void coord_store_flush(coord_store_t *s) {
    coord_t *c = s->c;
    if (!coord_is_leader(c) || !c->L.election) return;
    int64_t now = fw_mono_ms();
    /* Retries first: they hold their place in the order. */
    for (size_t i = 0; i < s->nfl; i++) {
        s_batch *b = s->fl[i];
        if (!b->done && !b->busy && b->retry_at && b->retry_at <= now) s_send(s, b);
    }
    while (s->qhead < s->qtail && s->nfl < s->flcap && s_idle_worker(s) >= 0) {
        /* With a txn already out, let a small batch fill up a little. */
        if (s->nfl > 0 && s->qtail - s->qhead < (size_t)c->o.batch_max_ops &&
            now - s->q_oldest < c->o.batch_delay_ms)
            break;
        s_batch *b = s_cut(s);
        if (!b) break;
        s->fl[s->nfl++] = b;
        if (b->txn) {
            s_send(s, b);
        } else {
            b->done = true;
            s_retire_ready(s);
        }
    }
}

/* ---------------------------------------------------------------- rebuild */

typedef struct {
    coord_store_t *s;
    int errors;
} s_load_ctx;

static int s_page_admin(const fw_etcd_kv *kvs, size_t n, void *arg) {
    s_load_ctx *x = arg;
    for (size_t i = 0; i < n; i++)
        if (coord_parse_admin(x->s->c->st, kvs[i].key, kvs[i].value) < 0) {
            fw_warn("event=bad-record key=%s detail=\"%s\"", kvs[i].key, fw_err_detail());
            x->errors++;
        }
    return 0;
}

static int s_page_jobs(const fw_etcd_kv *kvs, size_t n, void *arg) {
    s_load_ctx *x = arg;
    coord_t *c = x->s->c;
    for (size_t i = 0; i < n; i++) {
        coord_job_t *j = NULL;
        if (coord_parse_job(c->st, kvs[i].key, kvs[i].value, &j) < 0) {
            fw_warn("event=bad-record key=%s detail=\"%s\"", kvs[i].key, fw_err_detail());
            x->errors++;
            continue;
        }
        if (j->idem_key) {
            char k[256];
            snprintf(k, sizeof k, "%s\n%s", j->owner, j->idem_key);
            zhashx_update(c->idem, k, j);
        }
    }
    return 0;
}

static int s_page_tasks(const fw_etcd_kv *kvs, size_t n, void *arg) {
    s_load_ctx *x = arg;
    for (size_t i = 0; i < n; i++)
        if (coord_parse_task(x->s->c->st, kvs[i].key, kvs[i].value) < 0) {
            fw_warn("event=bad-record key=%s detail=\"%s\"", kvs[i].key, fw_err_detail());
            x->errors++;
        }
    return 0;
}

typedef struct {
    coord_store_t *s;
    char **stale;
    size_t n, cap;
} s_queue_ctx;

static int s_page_queue(const fw_etcd_kv *kvs, size_t n, void *arg) {
    s_queue_ctx *x = arg;
    coord_t *c = x->s->c;
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_loads(kvs[i].value, 0, NULL);
        const char *jid = json_string_value(json_object_get(o, "job"));
        coord_job_t *j = coord_job_find(c->st, jid);
        char want[COORD_KEY_MAX] = "";
        if (j) coord_key_queue(want, sizeof want, c->o.etcd_prefix, j);
        if (j && j->queued && strcmp(want, kvs[i].key) == 0) {
            j->queued_written = true;
        } else if (s_grow((void **)&x->stale, &x->cap, x->n, sizeof *x->stale)) {
            x->stale[x->n++] = strdup(kvs[i].key);
        }
        json_decref(o);
    }
    return 0;
}

int coord_store_rebuild(coord_store_t *s) {
    coord_t *c = s->c;
    coord_state_t *st = c->st;
    const char *P = c->o.etcd_prefix;
    char key[COORD_KEY_MAX];
    int64_t t0 = fw_mono_ms();
    s_load_ctx x = {s, 0};
    st->hook = NULL; /* loading what etcd holds writes nothing back */
    int rc;
    snprintf(key, sizeof key, "%s/agent-admin/", P);
    if ((rc = fw_etcd_range_pages(c->etcd, key, 1000, 0, s_page_admin, &x, NULL)) < 0) goto out;
    snprintf(key, sizeof key, "%s/jobs/", P);
    if ((rc = fw_etcd_range_pages(c->etcd, key, 500, 0, s_page_jobs, &x, NULL)) < 0) goto out;
    size_t live = 0, ntasks = 0;
    for (size_t i = 0; i < st->njobs; i++) {
        coord_job_t *j = st->jobv[i];
        if (coord_job_terminal(j->state) || !j->tasks) continue;
        live++;
        snprintf(key, sizeof key, "%s/tasks/%s/", P, j->id);
        if ((rc = fw_etcd_range_pages(c->etcd, key, 2000, 0, s_page_tasks, &x, NULL)) < 0)
            goto out;
        ntasks += j->ntasks;
    }
    /* The audit log continues after its last entry. */
    snprintf(key, sizeof key, "%s/audit/", P);
    fw_etcd_range_opts ro = {.prefix = true, .limit = 1, .keys_only = true,
                             .sort_order = FW_ETCD_SORT_DESCEND,
                             .sort_target = FW_ETCD_SORT_KEY};
    fw_etcd_kvs *kvs = NULL;
    if ((rc = fw_etcd_range(c->etcd, key, &ro, &kvs)) < 0) goto out;
    c->last_audit_seq = 0;
    if (kvs->n > 0) {
        const char *slash = strrchr(kvs->kvs[0].key, '/');
        if (slash) c->last_audit_seq = strtoll(slash + 1, NULL, 10);
    }
    fw_etcd_kvs_free(&kvs);
    int64_t now_wall = fw_wall_ms(), now_mono = fw_mono_ms();
    for (size_t i = 0; i < st->njobs; i++)
        coord_state_rebuild_job(st, st->jobv[i], now_wall, now_mono);
    /* The queue keys follow the jobs (they are derived). */
    s_queue_ctx qx = {s, NULL, 0, 0};
    snprintf(key, sizeof key, "%s/queue/", P);
    rc = fw_etcd_range_pages(c->etcd, key, 1000, 0, s_page_queue, &qx, NULL);
    st->hook = coord_store_hook;
    st->hook_arg = s;
    if (rc < 0) {
        for (size_t i = 0; i < qx.n; i++) free(qx.stale[i]);
        free(qx.stale);
        goto out;
    }
    for (size_t i = 0; i < qx.n; i++)
        if (qx.stale[i]) s_enqueue(s, COORD_OBJ_RAWDEL, qx.stale[i], -1, -1, NULL);
    free(qx.stale);
    for (size_t i = 0; i < st->njobs; i++) {
        coord_job_t *j = st->jobv[i];
        if (j->queued && !j->queued_written) s_enqueue(s, COORD_OBJ_QUEUE, j, -1, -1, NULL);
        /* Every task ended but the job record did not say so: the last
         * leader stopped between the two writes. Settle it now (finalize
         * runs again: registration is idempotent by digest, merges are
         * deterministic). */
        if (!coord_job_terminal(j->state) && j->tasks)
            coord_job_settle(st, j, now_wall);
    }
    fw_info("event=state-rebuilt jobs=%zu live_jobs=%zu live_tasks=%zu bad_records=%d "
            "audit_seq=%lld ms=%lld", st->njobs, live, ntasks, x.errors,
            (long long)c->last_audit_seq, (long long)(fw_mono_ms() - t0));
    return 0;
out:
    st->hook = coord_store_hook;
    st->hook_arg = s;
    fw_warn("event=rebuild-failed err=%s detail=\"%s\"", fw_errname(rc), fw_err_detail());
    return rc;
}

/* ---------------------------------------------------------------- reads */

typedef struct {
    json_t *arr;
    const char *job_id;
    int filter;
    uint32_t skip, limit, seen;
    int64_t last_index;
} s_read_ctx;

static int s_page_read(const fw_etcd_kv *kvs, size_t n, void *arg) {
    s_read_ctx *x = arg;
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_loads(kvs[i].value, 0, NULL);
        if (!json_is_object(o)) {
            json_decref(o);
            continue;
        }
        int st = coord_task_state_parse(json_string_value(json_object_get(o, "state")));
        if (x->filter >= 0 && st != x->filter) {
            json_decref(o);
            continue;
        }
        if (x->seen++ < x->skip || json_array_size(x->arr) >= x->limit) {
            json_decref(o);
            if (json_array_size(x->arr) >= x->limit) return 1;
            continue;
        }
        const char *slash = strrchr(kvs[i].key, '/');
        long idx = slash ? strtol(slash + 1, NULL, 10) : 0;
        char id[COORD_TASKID_MAX];
        snprintf(id, sizeof id, "%s.%ld", x->job_id, idx);
        json_object_del(o, "schema");
        json_object_set_new(o, "id", json_string(id));
        json_object_set_new(o, "job", json_string(x->job_id));
        json_object_set_new(o, "index", json_integer(idx));
        json_array_append_new(x->arr, o);
    }
    return 0;
}

char *coord_store_read_tasks(coord_store_t *s, const char *job_id, const char *state_filter,
                             uint32_t offset, uint32_t limit, uint32_t *next) {
    coord_t *c = s->c;
    char key[COORD_KEY_MAX];
    snprintf(key, sizeof key, "%s/tasks/%s/", c->o.etcd_prefix, job_id);
    s_read_ctx x = {json_array(), job_id, state_filter ? coord_task_state_parse(state_filter) : -1,
                    offset, limit, 0, 0};
    if (!x.arr) return NULL;
    int rc = fw_etcd_range_pages(c->etcd, key, 1000, 0, s_page_read, &x, NULL);
    char *out = NULL;
    if (rc >= 0) {
        *next = json_array_size(x.arr) >= limit ? offset + limit : 0;
        out = json_dumps(x.arr, JSON_COMPACT);
    }
    json_decref(x.arr);
    return out;
}
