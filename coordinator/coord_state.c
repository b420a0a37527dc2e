/* coord_state.c - jobs, tasks, agents and the queue in the leader's memory.
 *
 * Theory of operation. Everything here is plain data manipulation with no
 * I/O: callers (the agent and client endpoints, the scheduler, the cron) call
 * these functions, which update indexes and counters and report each change
 * through state->hook. The store turns the reports into etcd txns, so that
 * what this file changes is exactly what gets written, in order.
 *
 * The task state machine (docs/state-machines.md):
 *
 *   PENDING --coord_task_assign--> ASSIGNED --TASK_STARTED--> RUNNING
 *      ^                              |  \                       |  \
 *      |                              |   \--TASK_RESULT--------+---> SUCCEEDED | FAILED
 *      +--coord_task_retry_or_fail----+---------------------------+   (a result implies the start)
 *   any non-terminal --coord_job_cancel--> CANCELLED
 *   PENDING --gang out of retries--> FAILED
 *
 * A task never placed has no record in etcd: it is PENDING by definition
 * while its job is live, and CANCELLED if its job was cancelled. That keeps
 * submission O(1) in etcd operations whatever the shard count, and makes the
 * dispatch path cost two writes per task (assignment, outcome).
 *
 * Gangs: every rank shares job->gang_attempt. A rank that exits successfully
 * stays RUNNING with t->result set ("exited") until every rank has, then all
 * become SUCCEEDED together; a rank that fails or is lost sends the whole gang
 * back to PENDING (the others are stopped) to wait out a backoff. */
#include "coord_state.h"

#include "fw_log.h"

#include <czmq.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *s_task_names[TASK__COUNT] = {"PENDING",   "ASSIGNED", "RUNNING",
                                                "SUCCEEDED", "FAILED",   "CANCELLED"};
static const char *s_job_names[JOB__COUNT] = {"QUEUED", "RUNNING", "SUCCEEDED", "FAILED",
                                              "CANCELLED"};

const char *coord_task_state_name(int s) {
    return s >= 0 && s < TASK__COUNT ? s_task_names[s] : "?";
}
const char *coord_job_state_name(int s) { return s >= 0 && s < JOB__COUNT ? s_job_names[s] : "?"; }

int coord_task_state_parse(const char *s) {
    for (int i = 0; s && i < TASK__COUNT; i++)
        if (strcasecmp(s, s_task_names[i]) == 0) return i;
    return -1;
}

int coord_job_state_parse(const char *s) {
    for (int i = 0; s && i < JOB__COUNT; i++)
        if (strcasecmp(s, s_job_names[i]) == 0) return i;
    return -1;
}

bool coord_task_transition_ok(int from, int to) {
    /* Rows: from; columns: to. PENDING->FAILED is a gang out of retries;
     * ASSIGNED->SUCCEEDED|FAILED is a result whose TASK_STARTED we missed. */
    static const bool ok[TASK__COUNT][TASK__COUNT] = {
        /*            PEND   ASSG   RUN    SUCC   FAIL   CANC */
        /* PENDING */ {false, true, false, false, true, true},
        /* ASSIGNED*/ {true, false, true, true, true, true},
        /* RUNNING */ {true, false, false, true, true, true},
        /* SUCCEED */ {false, false, false, false, false, false},
        /* FAILED  */ {false, false, false, false, false, false},
        /* CANCEL  */ {false, false, false, false, false, false},
    };
    if (from < 0 || from >= TASK__COUNT || to < 0 || to >= TASK__COUNT) return false;
    return ok[from][to];
}

static void s_hook(coord_state_t *s, coord_obj_kind kind, void *obj, int from, int to) {
    if (s->hook) s->hook(s->hook_arg, kind, obj, from, to);
}

/* ------------------------------------------------------------ lifecycle */

static void s_job_free(coord_job_t *j) {
    if (!j) return;
    if (j->tasks) {
        for (uint32_t i = 0; i < j->ntasks; i++) {
            free(j->tasks[i].error);
            free(j->tasks[i].result);
            free(j->tasks[i].history);
            free(j->tasks[i].tail);
        }
        free(j->tasks);
    }
    coord_spec_clear(&j->spec);
    free(j->owner);
    free(j->idem_key);
    free(j->rendezvous);
    free(j->error);
    json_decref(j->ml);
    free(j);
}

static void s_agent_free(coord_agent_t *a) {
    if (!a) return;
    for (int i = 0; i < a->nlabels; i++) {
        free(a->label_key[i]);
        free(a->label_val[i]);
    }
    free(a->label_key);
    free(a->label_val);
    free(a->host);
    free(a->record);
    free(a->drain_by);
    free(a->drain_reason);
    free(a->zombies);
    free(a);
}

static void s_job_destructor(void **item) {
    s_job_free(*item);
    *item = NULL;
}
static void s_agent_destructor(void **item) {
    s_agent_free(*item);
    *item = NULL;
}

coord_state_t *coord_state_new(void) {
    coord_state_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->jobs = zhashx_new();
    s->agents = zhashx_new();
    if (!s->jobs || !s->agents) {
        zhashx_destroy(&s->jobs);
        zhashx_destroy(&s->agents);
        free(s);
        return NULL;
    }
    /* Keys point into the objects (job->id, agent->id): no copies. */
    zhashx_set_key_duplicator(s->jobs, NULL);
    zhashx_set_key_destructor(s->jobs, NULL);
    zhashx_set_key_duplicator(s->agents, NULL);
    zhashx_set_key_destructor(s->agents, NULL);
    zhashx_set_destructor(s->jobs, s_job_destructor);
    zhashx_set_destructor(s->agents, s_agent_destructor);
    s->retry_backoff_ms = 1000;
    s->retry_backoff_max_ms = 60000;
    s->next_job_seq = 1;
    return s;
}

void coord_state_reset(coord_state_t *s) {
    zhashx_purge(s->jobs);
    zhashx_purge(s->agents);
    s->nagents = s->nqueue = s->nwaits = s->njobs = 0;
    memset(s->task_count, 0, sizeof s->task_count);
    memset(s->job_count, 0, sizeof s->job_count);
    s->next_job_seq = 1;
}

void coord_state_destroy(coord_state_t **p) {
    if (!p || !*p) return;
    coord_state_t *s = *p;
    zhashx_destroy(&s->jobs);
    zhashx_destroy(&s->agents);
    free(s->agentv);
    free(s->queue);
    free(s->waits);
    free(s->jobv);
    free(s);
    *p = NULL;
}

/* ------------------------------------------------------------ ids */

void coord_job_id_format(uint64_t seq, char *buf, size_t size) {
    snprintf(buf, size, "j-%06llu", (unsigned long long)seq);
}

int coord_task_id_parse(const char *task_id, char *job_id, size_t size, uint32_t *index) {
    if (!task_id) return -1;
    const char *dot = strrchr(task_id, '.');
    if (!dot || dot == task_id || (size_t)(dot - task_id) >= size || !dot[1]) return -1;
    char *end;
    unsigned long long v = strtoull(dot + 1, &end, 10);
    if (*end || v > UINT32_MAX || dot[1] < '0' || dot[1] > '9') return -1;
    memcpy(job_id, task_id, (size_t)(dot - task_id));
    job_id[dot - task_id] = '\0';
    *index = (uint32_t)v;
    return 0;
}

void coord_task_id_format(const coord_task_t *t, char *buf, size_t size) {
    snprintf(buf, size, "%s.%u", t->job->id, t->index);
}

coord_job_t *coord_job_find(coord_state_t *s, const char *id) {
    return id ? zhashx_lookup(s->jobs, id) : NULL;
}

coord_task_t *coord_task_find(coord_state_t *s, const char *task_id) {
    char jid[COORD_ID_MAX + 1];
    uint32_t idx;
    if (coord_task_id_parse(task_id, jid, sizeof jid, &idx) < 0) return NULL;
    coord_job_t *j = coord_job_find(s, jid);
    if (!j || !j->tasks || idx >= j->ntasks) return NULL;
    return &j->tasks[idx];
}

/* ------------------------------------------------------------ queue */

/* Queue order: priority high first, then submission (sequence) order. */
static bool s_before(const coord_job_t *a, const coord_job_t *b) {
    if (a->spec.priority != b->spec.priority) return a->spec.priority > b->spec.priority;
    return a->seq < b->seq;
}

void coord_queue_add(coord_state_t *s, coord_job_t *j) {
    if (j->queued) return;
    if (s->nqueue == s->queuecap) {
        size_t cap = s->queuecap ? s->queuecap * 2 : 64;
        coord_job_t **q = realloc(s->queue, cap * sizeof *q);
        if (!q) {
            fw_error("event=oom what=queue job=%s", j->id);
            return;
        }
        s->queue = q;
        s->queuecap = cap;
    }
    /* Binary search for the slot; new jobs usually go last, so memmove is short. */
    size_t lo = 0, hi = s->nqueue;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (s_before(s->queue[mid], j))
            lo = mid + 1;
        else
            hi = mid;
    }
    memmove(&s->queue[lo + 1], &s->queue[lo], (s->nqueue - lo) * sizeof *s->queue);
    s->queue[lo] = j;
    s->nqueue++;
    for (size_t i = lo; i < s->nqueue; i++) s->queue[i]->qpos = i;
    j->queued = true;
    s_hook(s, COORD_OBJ_QUEUE, j, -1, -1);
}

void coord_queue_remove(coord_state_t *s, coord_job_t *j) {
    if (!j->queued) return;
    size_t pos = j->qpos;
    if (pos >= s->nqueue || s->queue[pos] != j) { /* cannot happen; be safe */
        for (pos = 0; pos < s->nqueue && s->queue[pos] != j; pos++) {}
        if (pos == s->nqueue) return;
    }
    memmove(&s->queue[pos], &s->queue[pos + 1], (s->nqueue - pos - 1) * sizeof *s->queue);
    s->nqueue--;
    for (size_t i = pos; i < s->nqueue; i++) s->queue[i]->qpos = i;
    j->queued = false;
    s_hook(s, COORD_OBJ_QUEUE, j, -1, -1);
}

static bool s_gang_ready(const coord_job_t *j) {
    return j->spec.gang && !j->gang_waiting && j->count[TASK_PENDING] == j->ntasks;
}

/* Invariant 3: queued iff live and something is ready to place. */
static void s_queue_sync(coord_state_t *s, coord_job_t *j) {
    bool want = !coord_job_terminal(j->state) && j->tasks &&
                (j->spec.gang ? s_gang_ready(j) : j->nready > 0);
    if (want && !j->queued) coord_queue_add(s, j);
    if (!want && j->queued) coord_queue_remove(s, j);
}

coord_task_t *coord_job_take_ready(coord_state_t *s, coord_job_t *j) {
    coord_task_t *t = NULL;
    while (j->rhead) {
        coord_task_t *h = j->rhead;
        j->rhead = h->rnext;
        if (!j->rhead) j->rtail = NULL;
        h->rnext = NULL;
        h->ready = false;
        j->nready--;
        if (h->state == TASK_PENDING && !h->waiting) {
            t = h;
            break;
        }
    }
    while (!t && j->cursor < j->ntasks) {
        coord_task_t *c = &j->tasks[j->cursor++];
        j->nready--;
        if (c->state == TASK_PENDING && !c->waiting && !c->ready) t = c;
    }
    s_queue_sync(s, j);
    return t;
}

void coord_job_untake(coord_state_t *s, coord_job_t *j, coord_task_t *t) {
    t->ready = true;
    t->rnext = j->rhead;
    j->rhead = t;
    if (!j->rtail) j->rtail = t;
    j->nready++;
    s_queue_sync(s, j);
}

void coord_task_make_ready(coord_state_t *s, coord_task_t *t, int64_t now_mono) {
    coord_job_t *j = t->job;
    if (t->state != TASK_PENDING || coord_job_terminal(j->state)) return;
    t->waiting = false;
    t->ready_mono = now_mono;
    if (j->spec.gang) {
        s_queue_sync(s, j);
        return;
    }
    if (t->ready) return;
    t->ready = true;
    t->rnext = NULL;
    if (j->rtail)
        j->rtail->rnext = t;
    else
        j->rhead = t;
    j->rtail = t;
    j->nready++;
    s_queue_sync(s, j);
}

/* ------------------------------------------------------------ waits (min-heap) */

static void s_wait_push(coord_state_t *s, int64_t when, coord_job_t *j, coord_task_t *t) {
    if (s->nwaits == s->waitcap) {
        size_t cap = s->waitcap ? s->waitcap * 2 : 64;
        coord_wait_t *w = realloc(s->waits, cap * sizeof *w);
        if (!w) {
            fw_error("event=oom what=retry-heap job=%s", j->id);
            return;
        }
        s->waits = w;
        s->waitcap = cap;
    }
    size_t i = s->nwaits++;
    s->waits[i] = (coord_wait_t){when, j, t};
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (s->waits[p].when <= s->waits[i].when) break;
        coord_wait_t tmp = s->waits[p];
        s->waits[p] = s->waits[i];
        s->waits[i] = tmp;
        i = p;
    }
}

static coord_wait_t s_wait_pop(coord_state_t *s) {
    coord_wait_t top = s->waits[0];
    s->waits[0] = s->waits[--s->nwaits];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < s->nwaits && s->waits[l].when < s->waits[m].when) m = l;
        if (r < s->nwaits && s->waits[r].when < s->waits[m].when) m = r;
        if (m == i) break;
        coord_wait_t tmp = s->waits[m];
        s->waits[m] = s->waits[i];
        s->waits[i] = tmp;
        i = m;
    }
    return top;
}

int coord_state_wake(coord_state_t *s, int64_t now_wall, int64_t now_mono) {
    int n = 0;
    while (s->nwaits && s->waits[0].when <= now_wall) {
        coord_wait_t w = s_wait_pop(s);
        /* Entries go stale when their task was cancelled or waited again;
         * only the one matching the current not_before counts. */
        if (w.task) {
            if (!w.task->waiting || w.task->not_before != w.when) continue;
            coord_task_make_ready(s, w.task, now_mono);
        } else {
            if (!w.job->gang_waiting || w.job->gang_not_before != w.when) continue;
            w.job->gang_waiting = false;
            for (uint32_t i = 0; w.job->tasks && i < w.job->ntasks; i++) {
                w.job->tasks[i].waiting = false;
                w.job->tasks[i].ready_mono = now_mono;
            }
            s_queue_sync(s, w.job);
        }
        n++;
    }
    return n;
}

/* ------------------------------------------------------------ jobs */

static int s_jobv_push(coord_state_t *s, coord_job_t *j) {
    if (s->njobs == s->jobcap) {
        size_t cap = s->jobcap ? s->jobcap * 2 : 64;
        coord_job_t **v = realloc(s->jobv, cap * sizeof *v);
        if (!v) return -1;
        s->jobv = v;
        s->jobcap = cap;
    }
    s->jobv[s->njobs++] = j;
    return 0;
}

coord_job_t *coord_job_add(coord_state_t *s, uint64_t seq, coord_spec_t *spec, const char *owner,
                           int64_t now_wall, bool with_tasks) {
    coord_job_t *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    coord_job_id_format(seq, j->id, sizeof j->id);
    j->seq = seq;
    j->ntasks = spec->ntasks;
    j->tasks = with_tasks ? calloc(j->ntasks ? j->ntasks : 1, sizeof *j->tasks) : NULL;
    j->owner = strdup(owner ? owner : "");
    if ((with_tasks && !j->tasks) || !j->owner || zhashx_lookup(s->jobs, j->id) ||
        s_jobv_push(s, j) < 0) {
        free(j->tasks);
        free(j->owner);
        free(j);
        return NULL;
    }
    j->spec = *spec;
    memset(spec, 0, sizeof *spec);
    j->state = JOB_QUEUED;
    j->committed_state = JOB_QUEUED;
    j->tasks_loaded = with_tasks;
    j->submitted_at = now_wall;
    j->gang_retries_left = j->spec.max_retries;
    for (uint32_t i = 0; j->tasks && i < j->ntasks; i++) {
        coord_task_t *t = &j->tasks[i];
        t->job = j;
        t->index = i;
        t->state = TASK_PENDING;
        t->retries_left = j->spec.max_retries;
        t->exit_code = 0;
    }
    j->count[TASK_PENDING] = j->ntasks;
    s->task_count[TASK_PENDING] += j->ntasks;
    s->job_count[JOB_QUEUED]++;
    j->cursor = with_tasks ? 0 : j->ntasks;
    j->nready = with_tasks ? j->ntasks : 0;
    zhashx_insert(s->jobs, j->id, j);
    if (seq >= s->next_job_seq) s->next_job_seq = seq + 1;
    s_queue_sync(s, j);
    return j;
}

void coord_job_set_state(coord_state_t *s, coord_job_t *j, int to) {
    if (j->state == to) return;
    int from = j->state;
    s->job_count[from]--;
    s->job_count[to]++;
    j->state = (uint8_t)to;
    s_hook(s, COORD_OBJ_JOB, j, from, to);
    if (coord_job_terminal(to)) s_queue_sync(s, j);
}

/* The job follows its tasks: RUNNING once one was placed, terminal once all are. */
static void s_job_follow(coord_state_t *s, coord_job_t *j, int64_t now_wall) {
    if (coord_job_terminal(j->state)) return;
    uint32_t term = j->count[TASK_SUCCEEDED] + j->count[TASK_FAILED] + j->count[TASK_CANCELLED];
    if (term == j->ntasks) {
        int to = j->cancel_requested          ? JOB_CANCELLED
                 : j->count[TASK_FAILED] > 0  ? JOB_FAILED
                 : j->count[TASK_CANCELLED] > 0 ? JOB_CANCELLED
                                                 : JOB_SUCCEEDED;
        j->finished_at = now_wall;
        if (to == JOB_SUCCEEDED && s->finalize && s->finalize(s->finalize_arg, j) < 0)
            to = JOB_FAILED;
        if (to == JOB_FAILED && !j->error && j->tasks) {
            /* The job's error is its first failed task's, so `job show` says why. */
            for (uint32_t i = 0; i < j->ntasks; i++) {
                coord_task_t *t = &j->tasks[i];
                if (t->state != TASK_FAILED || !t->error) continue;
                size_t n = strlen(t->error) + 64;
                if ((j->error = malloc(n)))
                    snprintf(j->error, n, "task %s.%u: %s", j->id, t->index, t->error);
                break;
            }
        }
        coord_job_set_state(s, j, to);
        return;
    }
    if (j->state == JOB_QUEUED && (j->count[TASK_ASSIGNED] || j->count[TASK_RUNNING])) {
        if (!j->started_at) j->started_at = now_wall;
        coord_job_set_state(s, j, JOB_RUNNING);
    }
}

void coord_job_settle(coord_state_t *s, coord_job_t *j, int64_t now_wall) {
    s_job_follow(s, j, now_wall);
}

/* Move the counters and the state without reporting (unwritten tasks). */
static void s_task_move(coord_state_t *s, coord_task_t *t, int to) {
    coord_job_t *j = t->job;
    j->count[t->state]--;
    s->task_count[t->state]--;
    j->count[to]++;
    s->task_count[to]++;
    t->state = (uint8_t)to;
}

int coord_task_set_state(coord_state_t *s, coord_task_t *t, int to) {
    int from = t->state;
    if (!coord_task_transition_ok(from, to)) return -1;
    s_task_move(s, t, to);
    t->written = true;
    s_hook(s, COORD_OBJ_TASK, t, from, to);
    return 0;
}

/* ------------------------------------------------------------ resources */

static void s_held_link(coord_agent_t *a, coord_task_t *t) {
    t->aprev = NULL;
    t->anext = a->held;
    if (a->held) a->held->aprev = t;
    a->held = t;
    a->nheld++;
}

static void s_held_unlink(coord_agent_t *a, coord_task_t *t) {
    if (t->aprev)
        t->aprev->anext = t->anext;
    else
        a->held = t->anext;
    if (t->anext) t->anext->aprev = t->aprev;
    t->anext = t->aprev = NULL;
    a->nheld--;
}

static uint64_t s_pick_gpus(const coord_agent_t *a, uint64_t n) {
    uint64_t mask = 0;
    for (int i = 0; i < a->ngpus && i < 64 && n > 0; i++) {
        if (!(a->gpu_used & (1ULL << i))) {
            mask |= 1ULL << i;
            n--;
        }
    }
    return mask;
}

int coord_task_assign(coord_state_t *s, coord_task_t *t, coord_agent_t *a, int64_t now_wall) {
    if (t->state != TASK_PENDING) return -1;
    const coord_spec_t *sp = &t->job->spec;
    t->attempt = sp->gang ? t->job->gang_attempt : t->attempt + 1;
    t->agent = a;
    t->gpu_mask = s_pick_gpus(a, sp->gpus);
    a->used_cpus += sp->cpus;
    a->used_mem += sp->memory_mb;
    a->used_gpus += sp->gpus;
    a->gpu_used |= t->gpu_mask;
    a->dispatched++;
    t->holds = true;
    s_held_link(a, t);
    t->sent = false;
    t->assigned_at = now_wall;
    t->started_at = t->finished_at = 0;
    t->exit_code = 0;
    free(t->error);
    t->error = NULL;
    free(t->result);
    t->result = NULL;
    t->waiting = false;
    coord_task_set_state(s, t, TASK_ASSIGNED);
    s_job_follow(s, t->job, now_wall);
    /* A placed gang leaves the queue (invariant 3): left there, the next
     * pass would "place" it again, bumping its attempt and rendezvous. */
    if (sp->gang) s_queue_sync(s, t->job);
    return 0;
}

static void s_sub(uint64_t *x, uint64_t v) { *x = *x > v ? *x - v : 0; }

void coord_task_release(coord_state_t *s, coord_task_t *t) {
    (void)s;
    if (!t->holds || !t->agent) return;
    coord_agent_t *a = t->agent;
    const coord_spec_t *sp = &t->job->spec;
    s_sub(&a->used_cpus, sp->cpus);
    s_sub(&a->used_mem, sp->memory_mb);
    s_sub(&a->used_gpus, sp->gpus);
    a->gpu_used &= ~t->gpu_mask;
    t->gpu_mask = 0;
    s_held_unlink(a, t);
    t->holds = false;
}

void coord_task_stop(coord_state_t *s, coord_task_t *t) {
    if (!t->holds || !t->agent) return;
    coord_agent_t *a = t->agent;
    if (!t->sent) { /* TASK_ASSIGN never went out: nothing runs there */
        coord_task_release(s, t);
        return;
    }
    if (a->nzombies == a->zombiecap) {
        size_t cap = a->zombiecap ? a->zombiecap * 2 : 8;
        coord_zombie_t *z = realloc(a->zombies, cap * sizeof *z);
        if (!z) { /* cannot track: free now rather than leak capacity */
            coord_task_release(s, t);
            return;
        }
        a->zombies = z;
        a->zombiecap = cap;
    }
    const coord_spec_t *sp = &t->job->spec;
    coord_zombie_t *z = &a->zombies[a->nzombies++];
    coord_task_id_format(t, z->task_id, sizeof z->task_id);
    z->attempt = t->attempt;
    z->cpus = sp->cpus;
    z->mem = sp->memory_mb;
    z->gpus = sp->gpus;
    z->gpu_mask = t->gpu_mask;
    z->since_mono = zclock_mono();
    /* The zombie now owns the resources: unlink without giving them back. */
    s_held_unlink(a, t);
    t->holds = false;
    t->gpu_mask = 0;
    s_hook(s, COORD_EV_STOP, t, (int)t->attempt, -1);
}

static void s_zombie_free(coord_agent_t *a, size_t i) {
    coord_zombie_t *z = &a->zombies[i];
    s_sub(&a->used_cpus, z->cpus);
    s_sub(&a->used_mem, z->mem);
    s_sub(&a->used_gpus, z->gpus);
    a->gpu_used &= ~z->gpu_mask;
    a->zombies[i] = a->zombies[--a->nzombies];
}

bool coord_agent_zombie_gone(coord_agent_t *a, const char *task_id, uint32_t attempt) {
    for (size_t i = 0; i < a->nzombies; i++) {
        if (a->zombies[i].attempt == attempt && strcmp(a->zombies[i].task_id, task_id) == 0) {
            s_zombie_free(a, i);
            return true;
        }
    }
    return false;
}

int coord_agent_zombies_prune(coord_agent_t *a, const char *const *running, size_t n,
                              int64_t now_mono, int64_t min_age_ms) {
    int freed = 0;
    for (size_t i = 0; i < a->nzombies;) {
        coord_zombie_t *z = &a->zombies[i];
        bool listed = false;
        for (size_t k = 0; k < n && !listed; k++) listed = strcmp(running[k], z->task_id) == 0;
        if (!listed && now_mono - z->since_mono >= min_age_ms) {
            s_zombie_free(a, i);
            freed++;
        } else {
            i++;
        }
    }
    return freed;
}

/* ------------------------------------------------------------ outcomes */

int64_t coord_backoff_ms(uint32_t base_ms, uint32_t max_ms, uint32_t failed_attempts) {
    int64_t d = base_ms;
    for (uint32_t i = 1; i < failed_attempts && d < (int64_t)max_ms; i++) d *= 2;
    return d < (int64_t)max_ms ? d : (int64_t)max_ms;
}

void coord_task_push_history(coord_task_t *t, const char *status, const char *error) {
    if (t->attempt == 0) return;
    json_t *arr = t->history ? json_loads(t->history, 0, NULL) : NULL;
    if (!json_is_array(arr)) {
        json_decref(arr);
        arr = json_array();
    }
    json_t *e = json_pack("{s:I, s:s, s:s, s:I, s:I}", "attempt", (json_int_t)t->attempt, "agent",
                          t->agent ? t->agent->id : "", "status", status ? status : "",
                          "assigned_at", (json_int_t)t->assigned_at, "finished_at",
                          (json_int_t)t->finished_at);
    if (e && error && error[0]) {
        char buf[513];
        snprintf(buf, sizeof buf, "%s", error); /* bounded: history stays small */
        json_object_set_new(e, "error", json_string(buf));
    }
    if (e) json_array_append_new(arr, e);
    char *txt = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    if (txt) {
        free(t->history);
        t->history = txt;
    }
}

static void s_set_error(char **dst, const char *why) {
    free(*dst);
    *dst = why ? strdup(why) : NULL;
}

static int s_gang_restart(coord_state_t *s, coord_job_t *j, coord_task_t *cause, const char *why,
                          int64_t now_wall) {
    bool retry = j->gang_retries_left > 0;
    if (retry) j->gang_retries_left--;
    for (uint32_t i = 0; i < j->ntasks; i++) {
        coord_task_t *t = &j->tasks[i];
        if (coord_task_terminal(t->state)) continue;
        if (t->state != TASK_PENDING) {
            if (!t->finished_at) t->finished_at = now_wall;
            coord_task_push_history(t, t == cause ? "failed" : "gang-restart",
                                    t == cause ? why : "another rank failed");
        }
        if (t == cause)
            coord_task_release(s, t); /* its process is already gone */
        else
            coord_task_stop(s, t);
        free(t->result);
        t->result = NULL;
        t->retries_left = j->gang_retries_left;
        if (retry) {
            if (t->state != TASK_PENDING) coord_task_set_state(s, t, TASK_PENDING);
        } else {
            s_set_error(&t->error, t == cause ? why : "gang failed: another rank failed");
            coord_task_set_state(s, t, TASK_FAILED);
        }
    }
    if (retry) {
        j->gang_not_before =
            now_wall + coord_backoff_ms(s->retry_backoff_ms, s->retry_backoff_max_ms,
                                        j->gang_attempt ? j->gang_attempt : 1);
        j->gang_waiting = true;
        for (uint32_t i = 0; i < j->ntasks; i++) {
            j->tasks[i].waiting = true;
            j->tasks[i].not_before = j->gang_not_before;
        }
        s_wait_push(s, j->gang_not_before, j, NULL);
        s_queue_sync(s, j);
    } else {
        s_set_error(&j->error, why);
        s_job_follow(s, j, now_wall);
    }
    return cause->state;
}

int coord_task_retry_or_fail(coord_state_t *s, coord_task_t *t, const char *why, int64_t now_wall) {
    coord_job_t *j = t->job;
    if (coord_task_terminal(t->state)) return t->state;
    if (j->spec.gang) return s_gang_restart(s, j, t, why, now_wall);
    if (!t->finished_at) t->finished_at = now_wall;
    coord_task_push_history(t, "failed", why);
    coord_task_release(s, t);
    if (t->retries_left > 0) {
        t->retries_left--;
        t->not_before =
            now_wall + coord_backoff_ms(s->retry_backoff_ms, s->retry_backoff_max_ms, t->attempt);
        t->waiting = true;
        coord_task_set_state(s, t, TASK_PENDING);
        s_wait_push(s, t->not_before, j, t);
    } else {
        s_set_error(&t->error, why);
        coord_task_set_state(s, t, TASK_FAILED);
        s_job_follow(s, j, now_wall);
    }
    return t->state;
}

int coord_task_started(coord_state_t *s, coord_task_t *t, int64_t started_at) {
    if (t->state != TASK_ASSIGNED) return -1;
    t->started_at = started_at;
    return coord_task_set_state(s, t, TASK_RUNNING);
}

int coord_outcome_parse(const char *status) {
    static const char *names[] = {"succeeded", "failed", "lost", "cancelled"};
    for (int i = 0; status && i < 4; i++)
        if (strcmp(status, names[i]) == 0) return i;
    return -1;
}

static void s_set_result(coord_task_t *t, const char *result, size_t max_result) {
    free(t->result);
    t->result = NULL;
    if (!result) return;
    /* etcd values stay small: a large result is the task's job to store elsewhere. */
    t->result = strdup(strlen(result) <= max_result ? result : "{\"truncated\":true}");
}

int coord_task_finish(coord_state_t *s, coord_task_t *t, int outcome, int exit_code,
                      const char *result, const char *error, int64_t now_wall,
                      size_t max_result) {
    coord_job_t *j = t->job;
    if (coord_task_terminal(t->state) || t->state == TASK_PENDING) return t->state;
    t->exit_code = exit_code;
    t->finished_at = now_wall;
    if (!t->started_at) t->started_at = t->assigned_at;
    if (outcome == COORD_OUT_SUCCEEDED) {
        s_set_result(t, result ? result : "{}", max_result);
        coord_task_release(s, t);
        if (!j->spec.gang) {
            coord_task_set_state(s, t, TASK_SUCCEEDED);
            s_job_follow(s, j, now_wall);
            return t->state;
        }
        /* A gang succeeds as a whole: this rank waits, RUNNING with a result. */
        if (t->state == TASK_ASSIGNED)
            coord_task_set_state(s, t, TASK_RUNNING);
        else
            s_hook(s, COORD_OBJ_TASK, t, TASK_RUNNING, TASK_RUNNING);
        for (uint32_t i = 0; i < j->ntasks; i++)
            if (!j->tasks[i].result || j->tasks[i].state != TASK_RUNNING) return t->state;
        for (uint32_t i = 0; i < j->ntasks; i++) coord_task_set_state(s, &j->tasks[i], TASK_SUCCEEDED);
        s_job_follow(s, j, now_wall);
        return t->state;
    }
    const char *why = error && error[0] ? error
                      : outcome == COORD_OUT_LOST      ? "lost on the agent"
                      : outcome == COORD_OUT_CANCELLED ? "stopped on the agent"
                                                       : "failed";
    char buf[96];
    if ((!error || !error[0]) && outcome == COORD_OUT_FAILED) {
        snprintf(buf, sizeof buf, "exit code %d", exit_code);
        why = buf;
    }
    return coord_task_retry_or_fail(s, t, why, now_wall);
}

void coord_job_cancel(coord_state_t *s, coord_job_t *j, const char *why, int64_t now_wall) {
    if (coord_job_terminal(j->state)) return;
    j->cancel_requested = true;
    s_set_error(&j->error, why ? why : "cancelled");
    for (uint32_t i = 0; j->tasks && i < j->ntasks; i++) {
        coord_task_t *t = &j->tasks[i];
        if (coord_task_terminal(t->state)) continue;
        t->waiting = false;
        t->ready = false;
        if (t->state == TASK_PENDING && !t->written) {
            s_task_move(s, t, TASK_CANCELLED); /* no record: implied by the job */
            continue;
        }
        coord_task_stop(s, t);
        if (!t->finished_at) t->finished_at = now_wall;
        s_set_error(&t->error, why ? why : "cancelled");
        coord_task_set_state(s, t, TASK_CANCELLED);
    }
    j->rhead = j->rtail = NULL;
    j->cursor = j->ntasks;
    j->nready = 0;
    j->gang_waiting = false;
    s_job_follow(s, j, now_wall);
    s_queue_sync(s, j);
}

void coord_state_rebuild_job(coord_state_t *s, coord_job_t *j, int64_t now_wall,
                             int64_t now_mono) {
    coord_state_hook_fn *hook = s->hook;
    s->hook = NULL;
    if (j->queued) coord_queue_remove(s, j);
    j->rhead = j->rtail = NULL;
    j->nready = 0;
    j->cursor = j->ntasks;
    if (coord_job_terminal(j->state) || !j->tasks) {
        s->hook = hook;
        return;
    }
    /* Unwritten tasks at the end are covered by the cursor; holes below it
     * (a placement whose txn was lost) and due retries go on the ready list. */
    uint32_t c = j->ntasks;
    while (c > 0 && !j->tasks[c - 1].written) c--;
    j->cursor = c;
    j->nready = j->ntasks - c;
    int64_t gang_wait = 0;
    for (uint32_t i = 0; i < j->ntasks; i++) {
        coord_task_t *t = &j->tasks[i];
        t->ready = t->waiting = false;
        if (t->state == TASK_ASSIGNED || t->state == TASK_RUNNING) {
            if (t->agent && !(t->state == TASK_RUNNING && t->result)) {
                /* Hold its resources until its agent says otherwise. */
                const coord_spec_t *sp = &j->spec;
                coord_agent_t *a = t->agent;
                t->gpu_mask = 0;
                a->used_cpus += sp->cpus;
                a->used_mem += sp->memory_mb;
                a->used_gpus += sp->gpus;
                t->holds = true;
                t->sent = true;
                t->unconfirmed = true;
                s_held_link(a, t);
            }
            continue;
        }
        if (t->state != TASK_PENDING || j->spec.gang) {
            if (t->state == TASK_PENDING && t->not_before > gang_wait) gang_wait = t->not_before;
            continue;
        }
        if (i >= c) continue;
        if (t->written && t->not_before > now_wall) {
            t->waiting = true;
            s_wait_push(s, t->not_before, j, t);
        } else {
            coord_task_make_ready(s, t, now_mono);
        }
    }
    if (j->spec.gang && j->count[TASK_PENDING] == j->ntasks && gang_wait > now_wall) {
        j->gang_waiting = true;
        j->gang_not_before = gang_wait;
        for (uint32_t i = 0; i < j->ntasks; i++) {
            j->tasks[i].waiting = true;
            j->tasks[i].not_before = gang_wait;
        }
        s_wait_push(s, gang_wait, j, NULL);
    }
    if (j->gang_attempt == 0 && j->spec.gang) j->gang_retries_left = j->spec.max_retries;
    int st = (j->count[TASK_ASSIGNED] || j->count[TASK_RUNNING] ||
              j->count[TASK_SUCCEEDED] || j->count[TASK_FAILED])
                 ? JOB_RUNNING
                 : JOB_QUEUED;
    if (st != j->state && j->state == JOB_QUEUED) {
        s->job_count[j->state]--;
        s->job_count[st]++;
        j->state = (uint8_t)st;
    }
    s_queue_sync(s, j);
    s->hook = hook;
}

void coord_job_evict_tasks(coord_state_t *s, coord_job_t *j) {
    if (!j->tasks) return;
    /* Drop retry-heap entries that point into the array. */
    size_t o = 0;
    for (size_t i = 0; i < s->nwaits; i++)
        if (s->waits[i].job != j) s->waits[o++] = s->waits[i];
    if (o != s->nwaits) {
        s->nwaits = o;
        /* Re-heapify: rare (a cancelled job with waits), so a sort is fine. */
        for (size_t i = 1; i < s->nwaits; i++) {
            coord_wait_t w = s->waits[i];
            size_t k = i;
            while (k > 0 && s->waits[(k - 1) / 2].when > w.when) {
                s->waits[k] = s->waits[(k - 1) / 2];
                k = (k - 1) / 2;
            }
            s->waits[k] = w;
        }
    }
    for (uint32_t i = 0; i < j->ntasks; i++) {
        coord_task_t *t = &j->tasks[i];
        if (t->holds) coord_task_release(s, t);
        free(t->error);
        free(t->result);
        free(t->history);
        free(t->tail);
    }
    free(j->tasks);
    j->tasks = NULL;
    j->tasks_loaded = false;
    j->rhead = j->rtail = NULL;
}

/* ------------------------------------------------------------ agents */

coord_agent_t *coord_agent_get(coord_state_t *s, const char *id, bool create) {
    coord_agent_t *a = zhashx_lookup(s->agents, id);
    if (a || !create) return a;
    if (strlen(id) == 0 || strlen(id) > COORD_ID_MAX) return NULL;
    a = calloc(1, sizeof *a);
    if (!a) return NULL;
    snprintf(a->id, sizeof a->id, "%s", id);
    if (s->nagents == s->agentcap) {
        size_t cap = s->agentcap ? s->agentcap * 2 : 16;
        coord_agent_t **v = realloc(s->agentv, cap * sizeof *v);
        if (!v) {
            free(a);
            return NULL;
        }
        s->agentv = v;
        s->agentcap = cap;
    }
    a->vpos = s->nagents;
    s->agentv[s->nagents++] = a;
    zhashx_insert(s->agents, a->id, a);
    return a;
}

int coord_agent_set_labels(coord_agent_t *a, int n, const char *const *keys,
                           const char *const *vals) {
    for (int i = 0; i < a->nlabels; i++) {
        free(a->label_key[i]);
        free(a->label_val[i]);
    }
    free(a->label_key);
    free(a->label_val);
    a->label_key = a->label_val = NULL;
    a->nlabels = 0;
    if (n <= 0) return 0;
    a->label_key = calloc((size_t)n, sizeof(char *));
    a->label_val = calloc((size_t)n, sizeof(char *));
    if (!a->label_key || !a->label_val) return -1;
    for (int i = 0; i < n; i++) {
        a->label_key[i] = strdup(keys[i]);
        a->label_val[i] = strdup(vals[i]);
        a->nlabels++;
        if (!a->label_key[i] || !a->label_val[i]) return -1;
    }
    return 0;
}

const char *coord_agent_label(const coord_agent_t *a, const char *key) {
    for (int i = 0; i < a->nlabels; i++)
        if (a->label_key[i] && strcmp(a->label_key[i], key) == 0) return a->label_val[i];
    return NULL;
}

bool coord_agent_schedulable(const coord_agent_t *a) {
    return a->alive && a->connected && !a->drain && !a->self_draining &&
           a->reconcile_deadline == 0;
}

bool coord_agent_eligible(const coord_agent_t *a, const coord_spec_t *sp) {
    if (sp->cpus > a->cpus || sp->memory_mb > a->memory_mb || sp->gpus > (uint64_t)a->ngpus)
        return false;
    for (int i = 0; i < sp->nlabels; i++) {
        const char *v = coord_agent_label(a, sp->label_key[i]);
        if (!v || strcmp(v, sp->label_val[i]) != 0) return false;
    }
    return true;
}

static uint64_t s_free(uint64_t cap, uint64_t used) { return cap > used ? cap - used : 0; }

bool coord_agent_fits(const coord_agent_t *a, const coord_spec_t *sp, uint64_t reserve_cpus,
                      uint64_t reserve_mem, uint64_t reserve_gpus) {
    if (!coord_agent_schedulable(a)) return false;
    uint64_t fc = s_free(a->cpus, a->used_cpus), fm = s_free(a->memory_mb, a->used_mem),
             fg = s_free((uint64_t)a->ngpus, a->used_gpus);
    if (fc < sp->cpus + reserve_cpus || fm < sp->memory_mb + reserve_mem ||
        fg < sp->gpus + reserve_gpus)
        return false;
    return coord_agent_eligible(a, sp);
}

/* ------------------------------------------------------------ invariants */

bool coord_state_check(const coord_state_t *s) {
    uint64_t total[TASK__COUNT] = {0};
    for (size_t k = 0; k < s->njobs; k++) {
        const coord_job_t *j = s->jobv[k];
        if (!j->tasks) {
            for (int st = 0; st < TASK__COUNT; st++) total[st] += j->count[st];
            continue;
        }
        uint32_t c[TASK__COUNT] = {0};
        for (uint32_t i = 0; i < j->ntasks; i++) {
            const coord_task_t *t = &j->tasks[i];
            c[t->state]++;
            if (t->holds && (!t->agent || coord_task_terminal(t->state))) {
                fw_error("event=invariant-broken what=holds task=%s.%u", j->id, i);
                return false;
            }
        }
        for (int st = 0; st < TASK__COUNT; st++) {
            if (c[st] != j->count[st]) {
                fw_error("event=invariant-broken what=job-count job=%s state=%s have=%u want=%u",
                         j->id, coord_task_state_name(st), j->count[st], c[st]);
                return false;
            }
            total[st] += c[st];
        }
        bool want = !coord_job_terminal(j->state) &&
                    (j->spec.gang ? s_gang_ready(j) : j->nready > 0);
        if (want != j->queued) {
            fw_error("event=invariant-broken what=queue job=%s queued=%d", j->id, j->queued);
            return false;
        }
    }
    for (int st = 0; st < TASK__COUNT; st++) {
        if (total[st] != s->task_count[st]) {
            fw_error("event=invariant-broken what=task-count state=%s", coord_task_state_name(st));
            return false;
        }
    }
    for (size_t k = 0; k < s->nagents; k++) {
        const coord_agent_t *a = s->agentv[k];
        uint64_t cpus = 0, mem = 0, gpus = 0;
        uint32_t n = 0;
        for (const coord_task_t *t = a->held; t; t = t->anext) {
            cpus += t->job->spec.cpus;
            mem += t->job->spec.memory_mb;
            gpus += t->job->spec.gpus;
            n++;
            if (t->agent != a || !t->holds) {
                fw_error("event=invariant-broken what=held-list agent=%s", a->id);
                return false;
            }
        }
        for (size_t z = 0; z < a->nzombies; z++) {
            cpus += a->zombies[z].cpus;
            mem += a->zombies[z].mem;
            gpus += a->zombies[z].gpus;
        }
        if (n != a->nheld || cpus != a->used_cpus || mem != a->used_mem || gpus != a->used_gpus) {
            fw_error("event=invariant-broken what=agent-usage agent=%s", a->id);
            return false;
        }
    }
    for (size_t i = 1; i < s->nqueue; i++) {
        if (!s_before(s->queue[i - 1], s->queue[i]) || s->queue[i]->qpos != i) {
            fw_error("event=invariant-broken what=queue-order pos=%zu", i);
            return false;
        }
    }
    return true;
}
