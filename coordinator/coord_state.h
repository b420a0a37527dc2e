/* coord_state.h - the leader's in-memory model: jobs, tasks, agents, queue.
 *
 * The leader keeps the whole live state in memory and etcd is its journal:
 * every change goes through the coord_*_set_* functions below, which keep
 * the indexes and counters right and report the change through one hook
 * (coord_state_t.hook). The store (coord_store.c) turns those reports into
 * fenced etcd txns; unit tests plug in a recorder instead.
 *
 * Indexes, chosen so no event costs a scan of all tasks:
 *   jobs     zhashx job id -> job; a job owns an array of its tasks, so a
 *            task id "j-000042.17" is found by parsing it: job lookup + index.
 *   agents   zhashx agent id -> agent, plus a vector for scheduling passes;
 *            each agent has an intrusive list of the tasks holding its
 *            resources, so losing an agent touches only its own tasks.
 *   queue    the jobs with tasks ready to place, ordered by priority (high
 *            first) then job sequence; each job has a FIFO of ready tasks
 *            and a cursor over tasks never placed.
 *   retries  a min-heap of tasks (and gangs) waiting out a backoff.
 *
 * Invariants (checked by coord_state_check(), used by the unit tests):
 *   1. job->count[s] is the number of the job's tasks in state s, and
 *      state->task_count[s] the sum over all loaded jobs.
 *   2. A task holds resources on at most one agent (task->holds); the agent's
 *      used_* are the sum over its held tasks.
 *   3. A job is in the queue iff it is not terminal and has a task ready to
 *      place (ready list or cursor) - gangs: all tasks pending, none waiting.
 *   4. Terminal tasks never leave their terminal state. */
#ifndef COORD_STATE_H
#define COORD_STATE_H

#include "coord_spec.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct _zhashx_t zhashx_t;
typedef struct json_t json_t;

typedef enum {
    TASK_PENDING = 0,
    TASK_ASSIGNED,
    TASK_RUNNING,
    TASK_SUCCEEDED,
    TASK_FAILED,
    TASK_CANCELLED,
    TASK__COUNT
} coord_task_state;

typedef enum {
    JOB_QUEUED = 0,
    JOB_RUNNING,
    JOB_SUCCEEDED,
    JOB_FAILED,
    JOB_CANCELLED,
    JOB__COUNT
} coord_job_state;

const char *coord_task_state_name(int s); /* "PENDING" ... */
const char *coord_job_state_name(int s);
int coord_task_state_parse(const char *s); /* case-insensitive; -1 if unknown */
int coord_job_state_parse(const char *s);
/* The task state machine (docs/state-machines.md): is from -> to allowed? */
bool coord_task_transition_ok(int from, int to);
static inline bool coord_task_terminal(int s) { return s >= TASK_SUCCEEDED; }
static inline bool coord_job_terminal(int s) { return s >= JOB_SUCCEEDED; }

#define COORD_ID_MAX     64 /* job ids, agent ids */
#define COORD_TASKID_MAX 80 /* "<job>.<index>" */

typedef struct coord_job coord_job_t;
typedef struct coord_task coord_task_t;
typedef struct coord_agent coord_agent_t;

/* Kinds of objects the store writes; the hook reports them. */
typedef enum {
    COORD_OBJ_TASK = 1, /* from/to: task states */
    COORD_OBJ_JOB,      /* from/to: job states */
    COORD_OBJ_QUEUE,    /* obj: the job; P/queue/... is put or deleted by job->queued */
    COORD_OBJ_ADMIN,    /* obj: the agent; P/agent-admin/<id> */
    /* Not a write: the attempt `from` of task obj must be stopped on its
     * agent (TASK_CANCEL once the change before it is committed). */
    COORD_EV_STOP,
    COORD_OBJ_RAWDEL, /* store only: obj is a malloc'd key to delete */
} coord_obj_kind;

/* Bookkeeping the store keeps in every written object. */
typedef struct {
    uint32_t inflight;   /* txns in flight that write it */
    uint32_t audit_idx;  /* its change in the audit entry of batch_mark */
    uint64_t batch_mark; /* the batch being built that already writes it */
} coord_wr_t;

struct coord_task {
    coord_job_t *job;
    uint32_t index;
    uint8_t state;
    bool holds;    /* resources allocated on task->agent */
    bool sent;     /* TASK_ASSIGN for the current attempt went out */
    bool written;  /* a record exists (or is being written) in etcd */
    bool waiting;  /* in the retry heap */
    bool ready;    /* in the job's ready list */
    bool unconfirmed; /* after takeover: its agent has not re-registered yet */
    uint32_t attempt; /* current attempt; 0 before the first placement */
    uint32_t retries_left;
    coord_agent_t *agent; /* agent of the current (or last) attempt */
    uint64_t gpu_mask;    /* GPUs of agent held by this attempt */
    int64_t not_before;   /* wall ms: not placed before (backoff) */
    int64_t ready_mono;   /* monotonic ms it became ready: dispatch latency */
    int64_t sent_mono;    /* monotonic ms TASK_ASSIGN went out */
    int64_t assigned_at, started_at, finished_at; /* wall ms, 0 = not yet */
    int32_t exit_code;
    char *error;   /* why it failed (owned) */
    char *result;  /* accepted result, JSON text (owned, bounded) */
    char *history; /* JSON array text of earlier attempts (owned) */
    char *tail;    /* last bytes of output (TASK_LOG), kept in the record at the end */
    uint16_t tail_len;
    float progress; /* TASK_PROGRESS fraction, memory only */
    coord_task_t *anext, *aprev; /* the agent's held-task list */
    coord_task_t *rnext;         /* the job's ready FIFO */
    coord_wr_t wr;
};

struct coord_job {
    char id[COORD_ID_MAX + 1];
    uint64_t seq;
    coord_spec_t spec;
    char *owner; /* token name of the submitter */
    char *idem_key;
    uint8_t state;
    bool queued;         /* in the queue (and P/queue key wanted) */
    bool queued_written; /* P/queue key present in etcd as far as we know */
    bool record_committed; /* the job record reached etcd (submission acknowledged) */
    bool tasks_loaded;   /* tasks[] is in memory (terminal jobs may be evicted) */
    bool cancel_requested;
    int64_t submitted_at, started_at, finished_at; /* wall ms */
    int64_t submit_mono;
    uint32_t ntasks;
    coord_task_t *tasks; /* ntasks entries, or NULL when evicted */
    uint32_t count[TASK__COUNT];
    uint8_t committed_state; /* the state etcd has: what clients are shown */
    uint32_t pending_writes; /* task changes queued or in flight (the store's count) */
    uint32_t inflight_task_writes; /* task writes in txns not yet retired */
    uint32_t cursor;             /* tasks [cursor, ntasks) were never placed */
    coord_task_t *rhead, *rtail; /* ready FIFO (retried tasks) */
    uint32_t nready;             /* rhead list + (ntasks - cursor) */
    /* Gangs: every task shares the attempt; the whole gang waits and retries. */
    uint32_t gang_attempt;
    uint32_t gang_retries_left;
    int64_t gang_not_before; /* wall ms */
    bool gang_waiting;       /* in the retry heap */
    char *rendezvous;
    char *error; /* why the job failed */
    /* What finetune/embed/eval jobs add to their record (coord_ml.c): an
     * object with "result", "curve", "checkpoint", "resumed" as present. */
    json_t *ml;
    size_t qpos; /* index in the queue array, valid while queued */
    coord_wr_t wr, qwr;
};

/* Resources still held by an attempt that was told to stop (job cancelled,
 * gang retried) until the agent reports it gone. */
typedef struct {
    char task_id[COORD_TASKID_MAX];
    uint32_t attempt;
    uint64_t cpus, mem, gpus, gpu_mask;
    int64_t since_mono;
} coord_zombie_t;

struct coord_agent {
    char id[COORD_ID_MAX + 1];
    char *host;     /* for gang rendezvous */
    char *record;   /* the agent's P/agents value, JSON text (owned) */
    bool alive;     /* its P/agents key exists (lease held) */
    bool connected; /* registered with this leader and not lost since */
    bool drain;     /* admin drain (P/agent-admin) */
    bool self_draining; /* the agent says it refuses work */
    bool ever_seen;
    char *drain_by, *drain_reason;
    int64_t drain_at;
    uint64_t cpus, memory_mb; /* capacity */
    int ngpus;
    uint64_t used_cpus, used_mem, used_gpus;
    uint64_t gpu_used; /* bitmask of GPU indices held */
    int nlabels;
    char **label_key, **label_val;
    int64_t last_seen_mono;
    int64_t registered_at; /* wall ms */
    int64_t reconcile_deadline; /* mono ms; 0 = not awaiting registration */
    uint32_t nheld;
    coord_task_t *held; /* tasks holding resources here */
    coord_zombie_t *zombies;
    size_t nzombies, zombiecap;
    uint64_t dispatched;
    size_t vpos; /* index in state->agentv */
    coord_wr_t wr;
};

/* Report of one change to the store (or a test recorder). kind names what
 * changed; from/to are states for tasks and jobs (-1 otherwise). */
typedef void(coord_state_hook_fn)(void *arg, coord_obj_kind kind, void *obj, int from, int to);

typedef struct {
    int64_t when; /* wall ms */
    coord_job_t *job;
    coord_task_t *task; /* NULL: the whole gang */
} coord_wait_t;

typedef struct coord_state {
    zhashx_t *jobs;   /* id -> coord_job_t (owned) */
    zhashx_t *agents; /* id -> coord_agent_t (owned) */
    coord_agent_t **agentv;
    size_t nagents, agentcap;
    coord_job_t **queue; /* sorted: priority desc, seq asc */
    size_t nqueue, queuecap;
    coord_wait_t *waits; /* min-heap on when */
    size_t nwaits, waitcap;
    uint64_t task_count[TASK__COUNT];
    uint64_t job_count[JOB__COUNT];
    uint64_t next_job_seq;
    uint32_t retry_backoff_ms, retry_backoff_max_ms;
    coord_state_hook_fn *hook;
    void *hook_arg;
    /* Called when the last task of a job succeeded, before the job becomes
     * SUCCEEDED: 0 to succeed, or -1 with j->error set to fail the job
     * instead (merging shard outputs, registering what the job made). */
    int (*finalize)(void *arg, coord_job_t *j);
    void *finalize_arg;
    /* Jobs in submission order, for listing newest first. */
    coord_job_t **jobv;
    size_t njobs, jobcap;
} coord_state_t;

coord_state_t *coord_state_new(void);
void coord_state_destroy(coord_state_t **p);
/* Forget everything (a leader stepping down rebuilds from etcd next time). */
void coord_state_reset(coord_state_t *s);

/* ---------------------------------------------------------------- jobs */

/* A new job from a validated spec (ownership of *spec moves in; *spec is
 * zeroed). Its tasks are PENDING, attempt 0, not written (a task without a
 * record in etcd is pending: see docs/etcd-layout.md). NULL on ENOMEM. */
coord_job_t *coord_job_add(coord_state_t *s, uint64_t seq, coord_spec_t *spec, const char *owner,
                           int64_t now_wall, bool with_tasks);
/* After a rebuild loaded a live job's records: recompute the ready set and
 * cursor, the retry waits, the queue membership and the resources its
 * placed tasks hold on their agents (those tasks are marked unconfirmed
 * until their agent re-registers). Reports nothing to the hook. */
void coord_state_rebuild_job(coord_state_t *s, coord_job_t *j, int64_t now_wall,
                             int64_t now_mono);
/* After a rebuild: a live job whose tasks have all ended becomes terminal
 * now (with finalize for its kind), as it would have at its last task. */
void coord_job_settle(coord_state_t *s, coord_job_t *j, int64_t now_wall);
/* Free the task array of a terminal job (its counts stay). The caller made
 * sure nothing refers to its tasks any more (store: pending_writes == 0). */
void coord_job_evict_tasks(coord_state_t *s, coord_job_t *j);
coord_job_t *coord_job_find(coord_state_t *s, const char *id);
/* Format "j-%06llu" into buf (>= 24 bytes). */
void coord_job_id_format(uint64_t seq, char *buf, size_t size);
/* Parse a task id into its job id (buf) and index. 0 / -1 if malformed. */
int coord_task_id_parse(const char *task_id, char *job_id, size_t size, uint32_t *index);
void coord_task_id_format(const coord_task_t *t, char *buf, size_t size);
/* The task of a task id, or NULL (unknown job, index out of range, evicted). */
coord_task_t *coord_task_find(coord_state_t *s, const char *task_id);

/* Job state changes (reported to the hook). Jobs move by themselves:
 * RUNNING at the first placement, terminal when the last task is. */
void coord_job_set_state(coord_state_t *s, coord_job_t *j, int to);
/* Cancel every non-terminal task of a job (running ones are stopped). */
void coord_job_cancel(coord_state_t *s, coord_job_t *j, const char *why, int64_t now_wall);

/* ---------------------------------------------------------------- tasks */

/* Move a task to `to` (must be allowed by the state machine; returns -1 and
 * changes nothing otherwise). Keeps counters, reports to the hook. */
int coord_task_set_state(coord_state_t *s, coord_task_t *t, int to);

/* Place a pending task on an agent: attempt+1, ASSIGNED, resources held. */
int coord_task_assign(coord_state_t *s, coord_task_t *t, coord_agent_t *a, int64_t now_wall);
/* Give back the resources a task holds (idempotent). */
void coord_task_release(coord_state_t *s, coord_task_t *t);
/* The current attempt must stop: if TASK_ASSIGN went out, its resources
 * become a zombie on the agent and COORD_EV_STOP is reported; otherwise they
 * are released at once. */
void coord_task_stop(coord_state_t *s, coord_task_t *t);
/* The agent reports attempt `attempt` of task_id gone: free its zombie. */
bool coord_agent_zombie_gone(coord_agent_t *a, const char *task_id, uint32_t attempt);
/* Heartbeat: free zombies older than min_age_ms whose task is not in running[]. */
int coord_agent_zombies_prune(coord_agent_t *a, const char *const *running, size_t n,
                              int64_t now_mono, int64_t min_age_ms);

/* An attempt ended without success (failed, lost, assign timed out): retry
 * with backoff if retries remain, else FAILED. Gangs: the whole gang. why
 * is recorded as the attempt's error. Returns the new state of the task. */
int coord_task_retry_or_fail(coord_state_t *s, coord_task_t *t, const char *why, int64_t now_wall);

/* TASK_STARTED for the current attempt: ASSIGNED -> RUNNING. */
int coord_task_started(coord_state_t *s, coord_task_t *t, int64_t started_at);

typedef enum {
    COORD_OUT_SUCCEEDED = 0,
    COORD_OUT_FAILED,    /* the attempt failed: retry or FAILED */
    COORD_OUT_LOST,      /* the agent lost it (restart, vanished): retry or FAILED */
    COORD_OUT_CANCELLED, /* stopped on request */
} coord_outcome;
/* Parse TASK_RESULT.status ("succeeded", "failed", "cancelled", "lost"); -1 if unknown. */
int coord_outcome_parse(const char *status);

/* The accepted result of the current attempt (the caller checked it is the
 * current attempt and the task is not terminal). result: JSON text or NULL
 * (kept, truncated to max_result bytes: larger results become
 * {"truncated":true}). A succeeded gang rank stays RUNNING until every rank
 * has succeeded. Returns the task's new state. */
int coord_task_finish(coord_state_t *s, coord_task_t *t, int outcome, int exit_code,
                      const char *result, const char *error, int64_t now_wall,
                      size_t max_result);

/* Backoff before attempt n+1 after n failed attempts: base * 2^(n-1), capped. */
int64_t coord_backoff_ms(uint32_t base_ms, uint32_t max_ms, uint32_t failed_attempts);

/* Make a pending task (or a gang) ready for placement now: ready list and queue. */
void coord_task_make_ready(coord_state_t *s, coord_task_t *t, int64_t now_mono);

/* Pop waits that are due (when <= now_wall); returns how many became ready. */
int coord_state_wake(coord_state_t *s, int64_t now_wall, int64_t now_mono);

/* Record an earlier attempt's outcome into t->history (JSON array text). */
void coord_task_push_history(coord_task_t *t, const char *status, const char *error);

/* ---------------------------------------------------------------- queue */

void coord_queue_add(coord_state_t *s, coord_job_t *j);
void coord_queue_remove(coord_state_t *s, coord_job_t *j);
/* Next ready task of a sharded job (NULL if none); removes it from the ready set. */
coord_task_t *coord_job_take_ready(coord_state_t *s, coord_job_t *j);
/* Put a taken task back at the head (placement failed after taking it). */
void coord_job_untake(coord_state_t *s, coord_job_t *j, coord_task_t *t);

/* ---------------------------------------------------------------- agents */

coord_agent_t *coord_agent_get(coord_state_t *s, const char *id, bool create);
/* Replace the agent's labels from parallel arrays (copied). */
int coord_agent_set_labels(coord_agent_t *a, int n, const char *const *keys,
                           const char *const *vals);
const char *coord_agent_label(const coord_agent_t *a, const char *key);
/* Can the agent take a task of this spec now (free resources, labels, not
 * drained, connected)? reserve_* are resources kept back for a waiting gang. */
bool coord_agent_fits(const coord_agent_t *a, const coord_spec_t *sp, uint64_t reserve_cpus,
                      uint64_t reserve_mem, uint64_t reserve_gpus);
/* Labels match and the agent could ever hold one such task (total capacity). */
bool coord_agent_eligible(const coord_agent_t *a, const coord_spec_t *sp);
bool coord_agent_schedulable(const coord_agent_t *a);

/* Check invariants 1-3 (header comment); true when they hold. Logs the first
 * violation at ERROR. O(everything): tests and debug builds only. */
bool coord_state_check(const coord_state_t *s);

#endif
