/* agent_task.c - the task runner: table, lifecycle, output, exits, deadlines.
 *
 * Theory of operation
 * -------------------
 * Tasks live in a hash keyed "<task>/<attempt>" from assignment until the
 * leader acknowledges the result; the state diagram is in agent_task.h.
 * Invariants (checked by s_task_ok in debug builds):
 *   1. RUNNING <=> pid > 0 and no result yet; EXITED <=> result.status set.
 *   2. out_fd >= 0 only while RUNNING, and then it is registered in the loop.
 *   3. A durable task's result is in the journal before the result event.
 *
 * Output: the pipe is read when the loop says it is readable, at most
 * S_READ_BUDGET bytes per wake-up so one chatty task cannot starve the
 * others or the leader connection. Bytes go to the log as they come; lines
 * starting with "@flywheel progress " carry a JSON object and become
 * progress events (at most one per S_PROGRESS_MS per task). A task whose
 * executor installed hooks (agent_task_hooks: agent_ml.c) also has every
 * line that is a JSON object handed to hooks->line, unthrottled, and its
 * hooks->finish may rewrite the result after the exit, before the journal.
 *
 * Exit: SIGCHLD -> agent_runner_reap() -> the task's remaining output is
 * drained, then the result is built. The pipe is not waited on for EOF: a
 * task's background children may hold it open forever. Stragglers of the
 * task's process group get SIGKILL: a task is its whole tree.
 *
 * In-agent results (noop) are not journaled on disk: the benchmark runs
 * thousands of them a second and an fsync each would cap that at the disk's
 * sync rate. They are kept in memory until acknowledged, which covers a
 * leader failover; if the agent itself dies they are lost with it, and the
 * leader retries them as it does any task of a lost agent. */
#include "agent_task.h"

#include "agent_proc.h"
#include "fw_err.h"
#include "fw_file.h"
#include "fw_log.h"
#include "fw_time.h"

#include <assert.h>
#include <czmq.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define S_READ_BUDGET   (256u << 10) /* bytes read per pipe wake-up */
#define S_PROGRESS_MS   100          /* progress events per task: at most 10/s */
#define S_TAIL_BYTES    4096         /* log tail put into the result */
#define S_PROGRESS_TAG  "@flywheel progress "

struct agent_runner_t {
    agent_runner_cfg cfg;
    char *work_dir;
    char *agent_id;
    char *store_dir, *cache_dir, *engine; /* copies of cfg's ("" when unset) */
    char journal_dir[1100];
    agent_runner_events ev;
    void *arg;
    zhashx_t *tasks; /* key -> agent_task_t* (owned) */
    zloop_t *loop;
    size_t running;
    bool draining, stopping;
    void *exec_state; /* executor family state (agent_ml), owned */
    void (*exec_state_destroy)(void *);
};

/* ------------------------------------------------------------ helpers */

size_t agent_utf8_sanitize(char *s, size_t len) {
    unsigned char *p = (unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        unsigned char c = p[i];
        if (c < 0x80) {
            if (c < 0x20 && c != '\n' && c != '\t') p[i] = '?';
            if (c == 0x7f) p[i] = '?';
            i++;
            continue;
        }
        size_t n = (c >= 0xc2 && c <= 0xdf) ? 2 : (c >= 0xe0 && c <= 0xef) ? 3
                   : (c >= 0xf0 && c <= 0xf4)                           ? 4
                                                                        : 0;
        bool ok = n > 0 && i + n <= len;
        for (size_t k = 1; ok && k < n; k++) ok = (p[i + k] & 0xc0) == 0x80;
        /* Overlongs, surrogates and > U+10FFFF. */
        if (ok && n == 3 && c == 0xe0 && p[i + 1] < 0xa0) ok = false;
        if (ok && n == 3 && c == 0xed && p[i + 1] >= 0xa0) ok = false;
        if (ok && n == 4 && c == 0xf0 && p[i + 1] < 0x90) ok = false;
        if (ok && n == 4 && c == 0xf4 && p[i + 1] >= 0x90) ok = false;
        if (!ok) {
            p[i++] = '?';
            continue;
        }
        i += n;
    }
    return len;
}

static void s_key(char *buf, size_t size, const char *task_id, uint64_t attempt) {
    snprintf(buf, size, "%s/%" PRIu64, task_id, attempt);
}

#ifndef NDEBUG
static bool s_task_ok(const agent_task_t *t) {
    if (t->state == AGENT_TASK_RUNNING) return t->pid > 0 && !t->result.status[0];
    if (t->state == AGENT_TASK_EXITED) return t->result.status[0] && t->out_fd < 0;
    return false;
}
#endif

/* Release the executor's per-task context (idempotent). */
static void s_task_unhook(agent_task_t *t) {
    if (t->hooks && t->hooks->free && t->hook_ctx) t->hooks->free(t->hook_ctx);
    t->hooks = NULL;
    t->hook_ctx = NULL;
}

static void s_task_free(agent_task_t *t) {
    if (!t) return;
    s_task_unhook(t);
    if (t->out_fd >= 0) {
        if (t->runner->loop) {
            zmq_pollitem_t item = {NULL, t->out_fd, ZMQ_POLLIN, 0};
            zloop_poller_end(t->runner->loop, &item);
        }
        close(t->out_fd);
    }
    agent_log_destroy(&t->log);
    agent_result_clear(&t->result);
    free(t->stop_reason);
    free(t);
}

static void s_task_destructor(void **item) {
    s_task_free(*item);
    *item = NULL;
}

/* ------------------------------------------------------------- runner */

agent_runner_t *agent_runner_new(const agent_runner_cfg *cfg, const agent_runner_events *ev,
                                 void *arg) {
    agent_runner_t *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->cfg = *cfg;
    r->work_dir = strdup(cfg->work_dir);
    r->agent_id = strdup(cfg->agent_id ? cfg->agent_id : "agent");
    r->cfg.work_dir = r->work_dir;
    r->cfg.agent_id = r->agent_id;
    r->store_dir = strdup(cfg->store_dir ? cfg->store_dir : "");
    r->engine = strdup(cfg->engine ? cfg->engine : "");
    if (cfg->cache_dir && *cfg->cache_dir) {
        r->cache_dir = strdup(cfg->cache_dir);
    } else if (r->work_dir && (r->cache_dir = malloc(strlen(r->work_dir) + 8))) {
        sprintf(r->cache_dir, "%s/cache", r->work_dir);
    }
    r->cfg.store_dir = r->store_dir;
    r->cfg.cache_dir = r->cache_dir;
    r->cfg.engine = r->engine;
    r->ev = *ev;
    r->arg = arg;
    r->tasks = zhashx_new();
    if (!r->work_dir || !r->agent_id || !r->tasks || !r->store_dir || !r->engine ||
        !r->cache_dir) {
        fw_err_set(FW_ENOMEM, "runner: out of memory");
        goto fail;
    }
    zhashx_set_destructor(r->tasks, s_task_destructor);
    snprintf(r->journal_dir, sizeof r->journal_dir, "%s/journal", r->work_dir);
    char dir[1200];
    static const char *subdirs[] = {"journal", "logs", "tasks"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(dir, sizeof dir, "%s/%s", r->work_dir, subdirs[i]);
        if (fw_file_mkdirs(dir, 0755) < 0) goto fail;
    }
    /* Tasks of an earlier run of this agent that outlived it: nobody will
     * report them, so they only hold resources. */
    char marker[1200];
    snprintf(marker, sizeof marker, "FLYWHEEL_TASK_DIR=%s/tasks/", r->work_dir);
    int swept = agent_proc_sweep(marker);
    if (swept) fw_warn("event=orphans-killed count=%d work_dir=%s", swept, r->work_dir);
    agent_result_t *res = NULL;
    size_t n = 0;
    if (agent_journal_load(r->journal_dir, &res, &n) < 0) goto fail;
    for (size_t i = 0; i < n; i++) {
        agent_task_t *t = calloc(1, sizeof *t);
        if (!t) {
            agent_journal_free(&res, n);
            fw_err_set(FW_ENOMEM, "runner: out of memory");
            goto fail;
        }
        t->runner = r;
        t->out_fd = -1;
        t->state = AGENT_TASK_EXITED;
        t->durable = true;
        t->result = res[i];
        memset(&res[i], 0, sizeof res[i]); /* moved */
        snprintf(t->job_id, sizeof t->job_id, "%s", t->result.job_id);
        snprintf(t->task_id, sizeof t->task_id, "%s", t->result.task_id);
        t->attempt = t->result.attempt;
        s_key(t->key, sizeof t->key, t->task_id, t->attempt);
        if (zhashx_insert(r->tasks, t->key, t) != 0) s_task_free(t); /* duplicate file name */
    }
    if (n) fw_info("event=journal-loaded results=%zu", n);
    agent_journal_free(&res, n);
    return r;
fail:
    if (r->tasks) zhashx_destroy(&r->tasks);
    free(r->store_dir);
    free(r->cache_dir);
    free(r->engine);
    free(r->work_dir);
    free(r->agent_id);
    free(r);
    return NULL;
}

void agent_runner_destroy(agent_runner_t **p) {
    if (!p || !*p) return;
    agent_runner_t *r = *p;
    for (agent_task_t *t = zhashx_first(r->tasks); t; t = zhashx_next(r->tasks))
        if (t->state == AGENT_TASK_RUNNING && t->pid > 0) agent_proc_kill(t->pid, SIGKILL);
    zhashx_destroy(&r->tasks);
    if (r->exec_state && r->exec_state_destroy) r->exec_state_destroy(r->exec_state);
    free(r->store_dir);
    free(r->cache_dir);
    free(r->engine);
    free(r->work_dir);
    free(r->agent_id);
    free(r);
    *p = NULL;
}

void agent_runner_set_loop(agent_runner_t *r, zloop_t *loop) { r->loop = loop; }
void *agent_runner_exec_state(const agent_runner_t *r) { return r->exec_state; }

void agent_runner_set_exec_state(agent_runner_t *r, void *state, void (*destroy)(void *)) {
    if (r->exec_state && r->exec_state_destroy) r->exec_state_destroy(r->exec_state);
    r->exec_state = state;
    r->exec_state_destroy = destroy;
}

void agent_task_set_hooks(agent_task_t *t, const agent_task_hooks *hooks, void *ctx) {
    s_task_unhook(t);
    t->hooks = hooks;
    t->hook_ctx = ctx;
}
const agent_runner_cfg *agent_runner_config(const agent_runner_t *r) { return &r->cfg; }
void agent_runner_set_draining(agent_runner_t *r, bool draining) { r->draining = draining; }
bool agent_runner_draining(const agent_runner_t *r) { return r->draining; }
size_t agent_runner_running(const agent_runner_t *r) { return r->running; }
size_t agent_runner_count(const agent_runner_t *r) { return zhashx_size(r->tasks); }

agent_task_t *agent_runner_find(agent_runner_t *r, const char *task_id, uint64_t attempt) {
    char key[AGENT_ID_MAX + 24];
    s_key(key, sizeof key, task_id, attempt);
    return zhashx_lookup(r->tasks, key);
}

bool agent_runner_is_running(agent_runner_t *r, const char *task_id, uint64_t attempt) {
    agent_task_t *t = agent_runner_find(r, task_id, attempt);
    return t && t->state == AGENT_TASK_RUNNING;
}

void agent_runner_foreach(agent_runner_t *r, void (*fn)(void *arg, agent_task_t *t), void *arg) {
    for (agent_task_t *t = zhashx_first(r->tasks); t; t = zhashx_next(r->tasks)) fn(arg, t);
}

int agent_runner_log_dir(const agent_runner_t *r, const char *task_id, char *buf, size_t size) {
    if (!agent_id_ok(task_id)) return fw_err_set(FW_EINVAL, "task id is not a safe file name");
    int n = snprintf(buf, size, "%s/logs/%s", r->work_dir, task_id);
    return n > 0 && (size_t)n < size ? 0 : fw_err_set(FW_EINVAL, "log path too long");
}

/* ------------------------------------------------------------ results */

int agent_task_set_result(agent_task_t *t, const char *status, bool has_code, int64_t code,
                          const char *error, const char *result_json) {
    agent_result_t *res = &t->result;
    agent_result_clear(res);
    snprintf(res->job_id, sizeof res->job_id, "%s", t->job_id);
    snprintf(res->task_id, sizeof res->task_id, "%s", t->task_id);
    res->attempt = t->attempt;
    snprintf(res->status, sizeof res->status, "%s", status);
    res->has_exit_code = has_code;
    res->exit_code = code;
    res->finished_ms = (uint64_t)fw_wall_ms();
    if (error) {
        /* TASK_RESULT.error is at most 4096 bytes of valid UTF-8. */
        size_t len = strnlen(error, 4000);
        if (!(res->error = malloc(len + 1))) return fw_err_set(FW_ENOMEM, "result: no memory");
        memcpy(res->error, error, len);
        res->error[len] = '\0';
        /* Cut at a character boundary, then clean. */
        while (len > 0 && ((unsigned char)res->error[len] & 0xc0) == 0x80) res->error[--len] = 0;
        agent_utf8_sanitize(res->error, strlen(res->error));
    }
    if (result_json && !(res->result = strdup(result_json)))
        return fw_err_set(FW_ENOMEM, "result: no memory");
    return 0;
}

/* RUNNING (or new) -> EXITED: journal, then announce. */
static void s_finish(agent_runner_t *r, agent_task_t *t) {
    if (t->state == AGENT_TASK_RUNNING) r->running--;
    t->state = AGENT_TASK_EXITED;
    t->pid = 0;
    if (t->out_fd >= 0) {
        if (r->loop) {
            zmq_pollitem_t item = {NULL, t->out_fd, ZMQ_POLLIN, 0};
            zloop_poller_end(r->loop, &item);
        }
        close(t->out_fd);
        t->out_fd = -1;
    }
    agent_log_destroy(&t->log);
    s_task_unhook(t);
    if (t->durable) {
        int rc = agent_journal_put(r->journal_dir, &t->result);
        if (rc < 0)
            /* Keep going: the result is still in memory and will be sent;
             * only an agent crash before the ack could lose it now. */
            fw_error("event=journal-write-failed task=%s attempt=%" PRIu64 " err=%s detail=\"%s\"",
                     t->task_id, t->attempt, fw_errname(rc), fw_err_detail());
    }
    assert(s_task_ok(t));
    if (r->ev.result) r->ev.result(r->arg, t);
}

/* ------------------------------------------------------------- output */

void agent_task_note(agent_task_t *t, const char *fmt, ...) {
    if (!t->log) return;
    char line[1200];
    int n = snprintf(line, sizeof line, "[flywheel-agent] ");
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
    line[n++] = '\n';
    agent_log_write(t->log, line, (size_t)n);
}

bool agent_task_progress(agent_task_t *t, json_t *obj, bool force) {
    agent_runner_t *r = t->runner;
    int64_t now = fw_mono_ms();
    if (!force && t->last_progress && now - t->last_progress < S_PROGRESS_MS) return false;
    t->last_progress = now;
    if (r->ev.progress) r->ev.progress(r->arg, t, obj);
    return true;
}

static void s_progress_line(agent_runner_t *r, agent_task_t *t) {
    (void)r;
    size_t tag = sizeof S_PROGRESS_TAG - 1;
    if (t->hooks && t->hooks->line && t->line_len > 1 && t->line[0] == '{') {
        /* Cheap filter first: only lines that start like an object are
         * parsed; the engine's stderr log lines never do. */
        json_error_t jerr;
        json_t *o = json_loadb(t->line, t->line_len, 0, &jerr);
        if (json_is_object(o)) t->hooks->line(t, o, t->hook_ctx);
        json_decref(o);
        return;
    }
    if (t->line_len <= tag || memcmp(t->line, S_PROGRESS_TAG, tag) != 0) return;
    int64_t now = fw_mono_ms();
    if (t->last_progress && now - t->last_progress < S_PROGRESS_MS) return;
    json_error_t jerr;
    json_t *o = json_loadb(t->line + tag, t->line_len - tag, 0, &jerr);
    if (!json_is_object(o)) {
        json_decref(o);
        return; /* a malformed progress line is just output */
    }
    agent_task_progress(t, o, false);
    json_decref(o);
}

static void s_scan_lines(agent_runner_t *r, agent_task_t *t, const char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\n') {
            if (!t->line_skip) s_progress_line(r, t);
            t->line_len = 0;
            t->line_skip = false;
        } else if (!t->line_skip) {
            if (t->line_len + 1 >= sizeof t->line)
                t->line_skip = true;
            else
                t->line[t->line_len++] = c;
        }
    }
}

/* Read what the pipe has, up to budget bytes; true at EOF or error. */
static bool s_read_output(agent_runner_t *r, agent_task_t *t, size_t budget) {
    char buf[64 << 10];
    size_t total = 0;
    while (total < budget) {
        ssize_t n = read(t->out_fd, buf, sizeof buf);
        if (n > 0) {
            total += (size_t)n;
            if (t->log && agent_log_write(t->log, buf, (size_t)n) < 0)
                fw_warn("event=task-log-write-failed task=%s detail=\"%s\"", t->task_id,
                        fw_err_detail());
            s_scan_lines(r, t, buf, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;
        return true; /* EOF, or an error we cannot recover from */
    }
    return false;
}

static int s_on_output(zloop_t *loop, zmq_pollitem_t *item, void *arg) {
    agent_task_t *t = arg;
    if (s_read_output(t->runner, t, S_READ_BUDGET)) {
        /* The task closed its output; the exit comes through SIGCHLD. */
        zloop_poller_end(loop, item);
        close(t->out_fd);
        t->out_fd = -1;
    }
    return 0;
}

int agent_task_spawn(agent_task_t *t, char *const argv[], char *const envp[], const char *cwd) {
    agent_runner_t *r = t->runner;
    char dir[1200];
    int rc = agent_runner_log_dir(r, t->task_id, dir, sizeof dir);
    if (rc < 0) return rc;
    t->log = agent_log_open(dir, t->attempt, r->cfg.log_max_bytes, r->cfg.log_keep);
    if (!t->log)
        fw_warn("event=task-log-open-failed task=%s detail=\"%s\"", t->task_id, fw_err_detail());
    agent_proc_t p;
    rc = agent_proc_spawn(argv, envp, cwd, &p);
    if (rc < 0) {
        agent_task_note(t, "could not start the task: %s", fw_err_detail());
        return rc;
    }
    t->pid = p.pid;
    t->out_fd = p.out_fd;
    if (r->loop) {
        zmq_pollitem_t item = {NULL, t->out_fd, ZMQ_POLLIN, 0};
        if (zloop_poller(r->loop, &item, s_on_output, t) < 0) {
            /* Without a poller the pipe fills and the task blocks: kill it
             * now rather than let it hang. */
            agent_proc_kill(t->pid, SIGKILL);
            return fw_err_set(FW_EIO, "cannot poll the output pipe of %s", t->task_id);
        }
    }
    return 0;
}

/* ------------------------------------------------------------- assign */

int agent_runner_assign(agent_runner_t *r, const agent_assign_t *a) {
    if (!agent_id_ok(a->task_id) || !agent_id_ok(a->job_id))
        return fw_err_set(FW_EINVAL, "task_id/job_id: 1-128 characters of [A-Za-z0-9._-], not "
                                     "starting with '.'");
    if (a->attempt < 1) return fw_err_set(FW_EINVAL, "attempt: must be >= 1");
    agent_task_t *old = agent_runner_find(r, a->task_id, a->attempt);
    if (old) {
        /* A resent assign (lost ACK, new leader): never a second process. */
        if (old->state == AGENT_TASK_EXITED && r->ev.result) r->ev.result(r->arg, old);
        return AGENT_ASSIGN_DUPLICATE;
    }
    if (r->stopping) return fw_err_set(FW_ESTATE, "agent %s is stopping", r->agent_id);
    if (r->draining)
        return fw_err_set(FW_ESTATE, "agent %s is draining: it takes no new tasks", r->agent_id);
    agent_task_t *t = calloc(1, sizeof *t);
    if (!t) return fw_err_set(FW_ENOMEM, "assign: out of memory");
    t->runner = r;
    t->out_fd = -1;
    snprintf(t->job_id, sizeof t->job_id, "%s", a->job_id);
    snprintf(t->task_id, sizeof t->task_id, "%s", a->task_id);
    snprintf(t->kind, sizeof t->kind, "%s", a->kind ? a->kind : "");
    t->attempt = a->attempt;
    s_key(t->key, sizeof t->key, t->task_id, t->attempt);
    t->started_ms = fw_wall_ms();
    if (zhashx_insert(r->tasks, t->key, t) != 0) {
        free(t);
        return fw_err_set(FW_ENOMEM, "assign: out of memory");
    }
    const agent_executor_t *ex = agent_executor_find(t->kind);
    t->durable = !ex || !ex->in_agent;
    int rc = ex ? ex->run(r, t, a)
                : fw_err_set(FW_EUNSUPPORTED, "unknown task kind '%s' (this agent runs: %s)",
                             t->kind, agent_executor_kinds());
    if (rc < 0) {
        fw_info("event=task-refused task=%s attempt=%" PRIu64 " kind=%s err=%s", t->task_id,
                t->attempt, t->kind, fw_errname(rc));
        char err[1100];
        snprintf(err, sizeof err, "%s", fw_err_detail());
        agent_log_destroy(&t->log);
        agent_task_set_result(t, "failed", false, 0, err, NULL);
        s_finish(r, t);
        return AGENT_ASSIGN_ACCEPTED;
    }
    if (ex->in_agent || (t->pid == 0 && t->result.status[0])) {
        /* In-agent, or a process executor that had nothing to run (an
         * empty shard) and filled the result itself. */
        s_finish(r, t);
        return AGENT_ASSIGN_ACCEPTED;
    }
    t->state = AGENT_TASK_RUNNING;
    r->running++;
    if (a->timeout_ms) t->timeout_at = fw_mono_ms() + (int64_t)a->timeout_ms;
    fw_info("event=task-start task=%s attempt=%" PRIu64 " kind=%s pid=%d", t->task_id, t->attempt,
            t->kind, (int)t->pid);
    assert(s_task_ok(t));
    if (r->ev.started) r->ev.started(r->arg, t);
    return AGENT_ASSIGN_ACCEPTED;
}

/* ----------------------------------------------------- exit & result */

/* The last non-empty line of text[0..n), at most max bytes, into buf. */
static void s_last_line(const char *text, size_t n, char *buf, size_t max) {
    buf[0] = '\0';
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r')) n--;
    size_t start = n;
    while (start > 0 && text[start - 1] != '\n') start--;
    size_t len = n - start;
    if (len >= max) {
        start = n - (max - 1);
        len = max - 1;
    }
    memcpy(buf, text + start, len);
    buf[len] = '\0';
}

static void s_build_result(agent_runner_t *r, agent_task_t *t, int code) {
    char dir[1200];
    uint8_t *tail = NULL;
    size_t tail_len = 0;
    uint64_t end = 0, at = 0;
    if (agent_runner_log_dir(r, t->task_id, dir, sizeof dir) == 0) {
        uint64_t size = t->log ? agent_log_size(t->log) : 0;
        uint64_t off = size > S_TAIL_BYTES ? size - S_TAIL_BYTES : 0;
        if (agent_log_read(dir, t->attempt, off, S_TAIL_BYTES, &tail, &tail_len, &at, &end) < 0)
            tail_len = 0;
    }
    char *tail_s = malloc(tail_len + 1);
    if (tail_s) {
        memcpy(tail_s, tail ? (char *)tail : "", tail_len);
        tail_s[tail_len] = '\0';
        /* Drop a partial first character, then make it valid UTF-8. */
        size_t skip = 0;
        while (skip < tail_len && skip < 3 && ((unsigned char)tail_s[skip] & 0xc0) == 0x80) skip++;
        memmove(tail_s, tail_s + skip, tail_len - skip + 1);
        agent_utf8_sanitize(tail_s, strlen(tail_s));
    }
    free(tail);

    char exit_text[96], last[1024], err[1400];
    agent_exit_text(code, exit_text, sizeof exit_text);
    /* Up to 1000 bytes: an engine error names the file, line and field,
     * and a path alone can take a couple of hundred. */
    s_last_line(tail_s ? tail_s : "", tail_s ? strlen(tail_s) : 0, last, 1000);
    const char *status = "failed";
    err[0] = '\0';
    switch (t->stop) {
    case AGENT_STOP_SHUTDOWN:
        status = "lost";
        snprintf(err, sizeof err, "agent %s stopped; the task was terminated (%s)", r->agent_id,
                 exit_text);
        break;
    case AGENT_STOP_CANCEL:
        status = "cancelled";
        snprintf(err, sizeof err, "cancelled%s%s (%s)", t->stop_reason ? ": " : "",
                 t->stop_reason ? t->stop_reason : "", exit_text);
        break;
    case AGENT_STOP_TIMEOUT:
        snprintf(err, sizeof err, "timed out; terminated (%s)", exit_text);
        break;
    case AGENT_STOP_NONE:
        if (code == 0) {
            status = "succeeded";
        } else {
            /* SIGKILL we did not send: almost always the kernel's OOM killer. */
            bool oom = code == -SIGKILL && !t->kill_sent;
            snprintf(err, sizeof err, "%s%s%s%s", exit_text, oom ? " (out of memory?)" : "",
                     last[0] ? "; last output: " : "", last);
        }
        break;
    }
    json_t *res = json_object();
    json_object_set_new(res, "exit_code", json_integer(code));
    json_object_set_new(res, "log_bytes", json_integer((json_int_t)end));
    json_object_set_new(res, "log_tail", json_string(tail_s ? tail_s : ""));
    char *res_text = json_dumps(res, JSON_COMPACT);
    json_decref(res);
    free(tail_s);
    agent_task_set_result(t, status, true, code, err[0] ? err : NULL, res_text);
    free(res_text);
    fw_info("event=task-exit task=%s attempt=%" PRIu64 " status=%s code=%d", t->task_id,
            t->attempt, status, code);
}

static void s_on_exit(agent_runner_t *r, agent_task_t *t, int code) {
    if (t->out_fd >= 0) s_read_output(r, t, SIZE_MAX); /* what is left in the pipe */
    /* Background children of the task must not outlive it. */
    kill(-t->pid, SIGKILL);
    if (t->stop == AGENT_STOP_CANCEL) agent_task_note(t, "cancelled: %s",
                                                      t->stop_reason ? t->stop_reason : "");
    s_build_result(r, t, code);
    /* The executor's last word (uploads, the contract's result JSON) comes
     * before s_finish journals the result. */
    if (t->hooks && t->hooks->finish) t->hooks->finish(t, code, t->hook_ctx);
    s_finish(r, t);
}

void agent_runner_reap(agent_runner_t *r) {
    int code;
    pid_t pid;
    while ((pid = agent_proc_reap(&code)) > 0) {
        agent_task_t *t = NULL;
        for (agent_task_t *x = zhashx_first(r->tasks); x; x = zhashx_next(r->tasks))
            if (x->state == AGENT_TASK_RUNNING && x->pid == pid) {
                t = x;
                break;
            }
        if (t) s_on_exit(r, t, code);
    }
}

/* ---------------------------------------------------- signals, ticks */

static void s_terminate(agent_task_t *t, int stop, int64_t grace_ms, const char *reason) {
    if (t->state != AGENT_TASK_RUNNING || t->term_sent) return;
    t->stop = stop;
    if (reason && !t->stop_reason) t->stop_reason = strdup(reason);
    t->term_sent = true;
    if (grace_ms <= 0) {
        t->kill_sent = true;
        agent_proc_kill(t->pid, SIGKILL);
        return;
    }
    agent_proc_kill(t->pid, SIGTERM);
    t->kill_at = fw_mono_ms() + grace_ms;
}

int agent_runner_cancel(agent_runner_t *r, const char *task_id, uint64_t attempt,
                        int64_t grace_ms, const char *reason) {
    if (grace_ms < 0) grace_ms = r->cfg.kill_grace_ms;
    int n = 0;
    for (agent_task_t *t = zhashx_first(r->tasks); t; t = zhashx_next(r->tasks)) {
        if (t->state != AGENT_TASK_RUNNING || strcmp(t->task_id, task_id) != 0) continue;
        if (attempt && t->attempt != attempt) continue;
        if (!t->term_sent) {
            fw_info("event=task-cancel task=%s attempt=%" PRIu64 " grace_ms=%" PRId64, t->task_id,
                    t->attempt, grace_ms);
            s_terminate(t, AGENT_STOP_CANCEL, grace_ms, reason ? reason : "cancelled");
        }
        n++;
    }
    return n;
}

void agent_runner_stop(agent_runner_t *r, int64_t grace_ms) {
    r->stopping = true;
    for (agent_task_t *t = zhashx_first(r->tasks); t; t = zhashx_next(r->tasks))
        s_terminate(t, AGENT_STOP_SHUTDOWN, grace_ms, "agent stopping");
}

void agent_runner_tick(agent_runner_t *r, int64_t resend_after_ms) {
    int64_t now = fw_mono_ms();
    for (agent_task_t *t = zhashx_first(r->tasks); t; t = zhashx_next(r->tasks)) {
        if (t->state == AGENT_TASK_RUNNING) {
            if (t->timeout_at && now >= t->timeout_at && !t->term_sent) {
                fw_info("event=task-timeout task=%s attempt=%" PRIu64, t->task_id, t->attempt);
                agent_task_note(t, "timeout reached: terminating the task");
                s_terminate(t, AGENT_STOP_TIMEOUT, r->cfg.kill_grace_ms, "timeout");
            }
            if (t->kill_at && now >= t->kill_at && !t->kill_sent) {
                fw_info("event=task-kill task=%s attempt=%" PRIu64 " reason=grace-expired",
                        t->task_id, t->attempt);
                t->kill_sent = true;
                agent_proc_kill(t->pid, SIGKILL);
            }
        } else if (resend_after_ms > 0 && r->ev.result &&
                   (t->result_sent_at == 0 || now - t->result_sent_at >= resend_after_ms)) {
            r->ev.result(r->arg, t);
        }
    }
}

int agent_runner_ack(agent_runner_t *r, const char *task_id, uint64_t attempt) {
    agent_task_t *t = agent_runner_find(r, task_id, attempt);
    if (!t || t->state != AGENT_TASK_EXITED)
        return fw_err_set(FW_ENOTFOUND, "no result held for %s attempt %" PRIu64, task_id,
                          attempt);
    if (t->durable) {
        int rc = agent_journal_remove(r->journal_dir, task_id, attempt);
        if (rc < 0)
            fw_warn("event=journal-remove-failed task=%s detail=\"%s\"", task_id, fw_err_detail());
        char dir[1300];
        snprintf(dir, sizeof dir, "%s/tasks/%s.%" PRIu64, r->work_dir, task_id, attempt);
        fw_file_remove_tree(dir);
    }
    zhashx_delete(r->tasks, t->key);
    return 0;
}
