/* agent_task.h - the agent's tasks: table, executors, child supervision, results.
 *
 * The runner owns every task the agent holds, from TASK_ASSIGN until the
 * leader acknowledges its result. It knows nothing of ZeroMQ or etcd: it
 * reports through callbacks (started, result, progress) and is driven by the
 * event loop: agent_runner_reap() on SIGCHLD, agent_runner_tick() from cron,
 * and the output pipes it registers in the zloop itself.
 *
 * Task states (per task id + attempt):
 *
 *   (assign) --in-agent executor (noop)-------------------------+
 *      |                                                        v
 *      +--spawn ok--> RUNNING --process exits (agent_runner_reap)--> EXITED --ack--> (gone)
 *      |                 | cancel / timeout / stop: SIGTERM,        ^
 *      |                 | SIGKILL after the grace (agent_runner_tick)
 *      +--refused by the executor (bad spec, exec failed)-----------+
 *
 *   RUNNING  the process runs; its output goes to the rotated log.
 *   EXITED   the result is final (and journaled on disk for process tasks)
 *            and is (re)sent until TASK_RESULT_ACK; it survives reconnection
 *            and, when journaled, an agent restart.
 * A second assign of a (task, attempt) the runner holds changes nothing. */
#ifndef AGENT_TASK_H
#define AGENT_TASK_H

#include "agent_journal.h"
#include "agent_log.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct _zloop_t zloop_t;
typedef struct json_t json_t;
typedef struct agent_runner_t agent_runner_t;
typedef struct agent_task_t agent_task_t;

typedef enum { AGENT_TASK_RUNNING = 1, AGENT_TASK_EXITED } agent_task_state;

/* Per-task hooks of a process executor (agent_ml.c), set in its run() with
 * agent_task_set_hooks. Every function may be NULL.
 *   line    every complete output line that is a JSON object (borrowed),
 *           in order and never rate-limited (the engine prints plain JSON
 *           lines, not "@flywheel progress " ones);
 *   finish  the process exited and the runner has built its usual result
 *           (succeeded on exit 0, failed with the last output line, ...);
 *           the hook may replace it with agent_task_set_result. Called
 *           before the result is journaled and announced, so what it sets
 *           is what the leader gets;
 *   free    releases ctx once the task has exited (or the runner goes). */
typedef struct {
    void (*line)(agent_task_t *t, json_t *obj, void *ctx);
    void (*finish)(agent_task_t *t, int code, void *ctx);
    void (*free)(void *ctx);
} agent_task_hooks;

/* What TASK_ASSIGN says, borrowed for the call. */
typedef struct {
    const char *job_id;
    const char *task_id;
    uint64_t attempt;
    const char *kind;
    const char *spec;        /* JSON object text */
    const char *const *env;  /* extra "K=V" items, NULL-terminated; may be NULL */
    bool has_rank;
    uint64_t rank, world_size;
    const char *rendezvous;  /* may be NULL */
    const uint64_t *gpus;    /* GPU indices; may be NULL */
    size_t ngpus;
    uint64_t timeout_ms;     /* 0: none */
} agent_assign_t;

struct agent_task_t {
    char key[AGENT_ID_MAX + 24]; /* "<task>/<attempt>" */
    char job_id[AGENT_ID_MAX + 1];
    char task_id[AGENT_ID_MAX + 1];
    uint64_t attempt;
    char kind[33];
    agent_task_state state;
    bool durable;          /* result journaled on disk (process tasks) */
    pid_t pid;             /* process group too; 0 for in-agent tasks */
    int out_fd;            /* -1 once closed */
    agent_log_t *log;
    int64_t started_ms;    /* wall clock, for the leader */
    int64_t timeout_at;    /* monotonic ms, 0 = none */
    int64_t kill_at;       /* monotonic ms of the SIGKILL after SIGTERM, 0 = none */
    bool term_sent, kill_sent;
    enum { AGENT_STOP_NONE = 0, AGENT_STOP_CANCEL, AGENT_STOP_TIMEOUT, AGENT_STOP_SHUTDOWN } stop;
    char *stop_reason;
    agent_result_t result; /* valid in EXITED */
    int64_t result_sent_at; /* monotonic ms of the last send, 0 = never */
    int64_t last_progress;  /* monotonic ms of the last progress report */
    char line[4096];        /* partial output line, for progress and JSON lines */
    size_t line_len;
    bool line_skip;         /* the current line overflowed: ignore it */
    agent_runner_t *runner;
    const agent_task_hooks *hooks; /* NULL: none */
    void *hook_ctx;
};

typedef struct {
    /* The process started (not called for in-agent executors). */
    void (*started)(void *arg, const agent_task_t *t);
    /* A result is final (journaled first when t->durable): send it. */
    void (*result)(void *arg, agent_task_t *t);
    /* A progress line: the parsed JSON object (borrowed). */
    void (*progress)(void *arg, const agent_task_t *t, json_t *obj);
} agent_runner_events;

typedef struct {
    const char *work_dir;     /* logs/, journal/, tasks/ go below it */
    bool allow_command;
    uint64_t log_max_bytes;
    int log_keep;
    int64_t kill_grace_ms;
    const char *agent_id;
    char *const *base_env;    /* environment tasks inherit (environ); NULL = none */
    /* finetune / embed / eval (agent_ml.c) */
    const char *store_dir;    /* the shared artifact store; NULL/"" = ML kinds fail */
    const char *cache_dir;    /* local blob cache; NULL/"" = <work_dir>/cache */
    uint64_t cache_max_bytes; /* 0 = unbounded */
    const char *engine;       /* flywheel-engine; NULL/"" = found beside the agent */
} agent_runner_cfg;

/* Assign outcomes (>= 0); refusals are negative fw_err codes. */
enum { AGENT_ASSIGN_ACCEPTED = 0, AGENT_ASSIGN_DUPLICATE = 1 };

/* A runner; loads the journal under work_dir/journal (those results are
 * EXITED tasks ready to resend). The strings in cfg are copied. loop may be
 * NULL until agent_runner_set_loop. NULL + detail on failure. */
agent_runner_t *agent_runner_new(const agent_runner_cfg *cfg, const agent_runner_events *ev,
                                 void *arg);
/* Kills (SIGKILL) whatever still runs, frees everything. */
void agent_runner_destroy(agent_runner_t **p);
void agent_runner_set_loop(agent_runner_t *r, zloop_t *loop);

/* Start a task: AGENT_ASSIGN_ACCEPTED (running, or finished at once with a
 * result for in-agent executors, for executor refusals such as a bad spec,
 * and for process executors whose run() filled a result without spawning),
 * AGENT_ASSIGN_DUPLICATE (held already: nothing done; an EXITED task's
 * result is offered again through the result event), or a refusal
 * without any task created: FW_EINVAL (bad ids) or FW_ESTATE (draining or
 * stopping; see agent_runner_set_draining). */
int agent_runner_assign(agent_runner_t *r, const agent_assign_t *a);

/* Cancel: SIGTERM to the task's group now, SIGKILL after grace_ms (< 0: the
 * configured kill_grace). attempt 0 = any attempt of task_id. Returns the
 * number of running attempts signalled (0 when none runs: idempotent). */
int agent_runner_cancel(agent_runner_t *r, const char *task_id, uint64_t attempt,
                        int64_t grace_ms, const char *reason);

/* The leader made the result durable: forget the task (journal file and
 * scratch directory removed; the log stays). 0, FW_ENOTFOUND when not held
 * as EXITED (a duplicate ack: harmless). */
int agent_runner_ack(agent_runner_t *r, const char *task_id, uint64_t attempt);

/* Reap exited children (call on SIGCHLD; cheap when none). */
void agent_runner_reap(agent_runner_t *r);

/* Deadlines: timeouts and SIGKILL after grace; resend results unacked for
 * resend_after_ms through the result event (0: never). Call from cron. */
void agent_runner_tick(agent_runner_t *r, int64_t resend_after_ms);

/* Refuse new tasks (FW_ESTATE) while draining; running ones finish. */
void agent_runner_set_draining(agent_runner_t *r, bool draining);
bool agent_runner_draining(const agent_runner_t *r);

/* SIGTERM every running task (status lost, "agent stopping"), SIGKILL after
 * grace_ms; refuse new tasks from now on. */
void agent_runner_stop(agent_runner_t *r, int64_t grace_ms);

size_t agent_runner_running(const agent_runner_t *r); /* RUNNING tasks */
size_t agent_runner_count(const agent_runner_t *r);   /* every task held */

/* Visit every task (RUNNING and EXITED) in no particular order. The visitor
 * must not add or remove tasks. */
void agent_runner_foreach(agent_runner_t *r, void (*fn)(void *arg, agent_task_t *t), void *arg);

/* The task (task_id, attempt), or NULL. */
agent_task_t *agent_runner_find(agent_runner_t *r, const char *task_id, uint64_t attempt);

/* The log directory of a task (work_dir/logs/<task>) into buf; FW_EINVAL for
 * a task id that is not a safe file name. */
int agent_runner_log_dir(const agent_runner_t *r, const char *task_id, char *buf, size_t size);

/* True when (task_id, attempt) is still running (its log may grow). */
bool agent_runner_is_running(agent_runner_t *r, const char *task_id, uint64_t attempt);

/* ------------------------------------------------------------ executors */

/* A kind of task. An in-agent executor completes inside run() (no
 * process); a process executor spawns a child in run(). run() returns 0
 * after starting the process or filling the result, or a negative fw_err
 * with a detail to report as the task's failure. */
typedef struct {
    const char *kind;
    bool in_agent;
    int (*run)(agent_runner_t *r, agent_task_t *t, const agent_assign_t *a);
} agent_executor_t;

/* The table and a lookup (NULL for unknown kinds). */
const agent_executor_t *agent_executor_find(const char *kind);
/* "noop, command": the kinds for error messages (static buffer). */
const char *agent_executor_kinds(void);

/* ---- used by executors (agent_exec.c) ---- */

const agent_runner_cfg *agent_runner_config(const agent_runner_t *r);
/* Fill t's result: status, exit code (has_code), error and result text
 * (may be NULL). */
int agent_task_set_result(agent_task_t *t, const char *status, bool has_code, int64_t code,
                          const char *error, const char *result_json);
/* Install per-task hooks (see agent_task_hooks); ctx is released through
 * hooks->free. Call from the executor's run(). */
void agent_task_set_hooks(agent_task_t *t, const agent_task_hooks *hooks, void *ctx);
/* Report progress (obj borrowed): at most one per 100 ms per task unless
 * force (checkpoints must never be dropped). True when it was sent. */
bool agent_task_progress(agent_task_t *t, json_t *obj, bool force);
/* State shared by an executor family across the runner's tasks (agent_ml's
 * store and cache): NULL until set; destroyed with the runner. */
void *agent_runner_exec_state(const agent_runner_t *r);
void agent_runner_set_exec_state(agent_runner_t *r, void *state, void (*destroy)(void *));

/* ---- shared by the process executors (agent_exec.c) ---- */

/* The task's scratch directory work_dir/tasks/<task>.<attempt> into buf,
 * created if missing. */
int agent_exec_task_dir(const agent_runner_t *r, const agent_task_t *t, char *buf, size_t size);
/* The task environment described in agent_exec.c (the agent's, FLYWHEEL_*,
 * CUDA_*, then `extra` "K=V" items (may be NULL), then TASK_ASSIGN.env, each
 * layer overriding the one before). shards: the spec's shard count (gangs
 * use world_size). NULL-terminated, caller frees with agent_exec_env_free;
 * NULL + detail on failure. */
char **agent_exec_env(const agent_runner_t *r, const agent_task_t *t, const agent_assign_t *a,
                      uint64_t shards, const char *task_dir, const char *const *extra);
void agent_exec_env_free(char ***envp);
/* The number after the last '.' of a task id ("j-000042.17" -> 17), or 0. */
uint64_t agent_exec_shard_index(const char *task_id);

/* Spawn argv/envp as t's process: registers the output pipe, opens the log. */
int agent_task_spawn(agent_task_t *t, char *const argv[], char *const envp[], const char *cwd);
/* Write an agent note line "[flywheel-agent] ..." into t's log. */
void agent_task_note(agent_task_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Replace invalid UTF-8 and control characters (but \n and \t) in s[0..len)
 * with '?', in place; returns len. Wire strings must be valid UTF-8. */
size_t agent_utf8_sanitize(char *s, size_t len);

#endif
