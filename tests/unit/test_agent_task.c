/* test_agent_task.c - the executor table and child process supervision,
 * with real children: output capture, exit codes, crashes, exec failures,
 * duplicates, cancellation (SIGTERM, then SIGKILL), timeouts, drain, stop,
 * the journal across a runner restart. */
#include "agent_journal.h"
#include "agent_log.h"
#include "agent_task.h"
#include "fw_err.h"
#include "fw_time.h"
#include "fw_test.h"

#include <czmq.h>
#include <dirent.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* ------------------------------------------------------------ harness */

#define MAXR 64

typedef struct {
    int started;
    int results;
    char status[MAXR][33];
    char task[MAXR][130];
    int64_t code[MAXR];
    char error[MAXR][1024];
    char result[MAXR][8192];
    int progress;
    double fraction;
} s_events;

static void s_on_started(void *arg, const agent_task_t *t) {
    s_events *e = arg;
    e->started++;
    CHECK(t->pid > 0);
}

static void s_on_result(void *arg, agent_task_t *t) {
    s_events *e = arg;
    int i = e->results % MAXR;
    e->results++;
    snprintf(e->status[i], sizeof e->status[i], "%s", t->result.status);
    snprintf(e->task[i], sizeof e->task[i], "%s", t->result.task_id);
    e->code[i] = t->result.has_exit_code ? t->result.exit_code : 12345;
    snprintf(e->error[i], sizeof e->error[i], "%s", t->result.error ? t->result.error : "");
    snprintf(e->result[i], sizeof e->result[i], "%s", t->result.result ? t->result.result : "");
    t->result_sent_at = fw_mono_ms();
}

static void s_on_progress(void *arg, const agent_task_t *t, json_t *o) {
    s_events *e = arg;
    e->progress++;
    e->fraction = json_number_value(json_object_get(o, "fraction"));
}

static char *s_tmp;
static zloop_t *s_loop;

static agent_runner_t *s_runner(s_events *e, bool allow, uint64_t log_max, int64_t grace) {
    memset(e, 0, sizeof *e);
    agent_runner_cfg cfg = {.work_dir = s_tmp,
                            .allow_command = allow,
                            .log_max_bytes = log_max,
                            .log_keep = 2,
                            .kill_grace_ms = grace,
                            .agent_id = "test-agent",
                            .base_env = environ};
    agent_runner_events ev = {s_on_started, s_on_result, s_on_progress};
    agent_runner_t *r = agent_runner_new(&cfg, &ev, e);
    if (r) agent_runner_set_loop(r, s_loop);
    return r;
}

typedef struct {
    agent_runner_t *r;
    s_events *e;
    int want_results;
    int64_t deadline;
} s_drive;

static int s_tick(zloop_t *loop, int id, void *arg) {
    s_drive *d = arg;
    agent_runner_reap(d->r);
    agent_runner_tick(d->r, 0);
    if (d->e->results >= d->want_results || fw_mono_ms() > d->deadline) return -1;
    return 0;
}

/* Run the loop until `results` results have been reported (or timeout_ms). */
static bool s_wait(agent_runner_t *r, s_events *e, int results, int64_t timeout_ms) {
    s_drive d = {r, e, results, fw_mono_ms() + timeout_ms};
    if (e->results >= results) return true;
    int id = zloop_timer(s_loop, 10, 0, s_tick, &d);
    zloop_start(s_loop);
    zloop_timer_end(s_loop, id);
    return e->results >= results;
}

static int s_assign(agent_runner_t *r, const char *task, uint64_t attempt, const char *kind,
                    const char *spec, const char *const *env, uint64_t timeout_ms) {
    agent_assign_t a;
    memset(&a, 0, sizeof a);
    a.job_id = "j-000001";
    a.task_id = task;
    a.attempt = attempt;
    a.kind = kind;
    a.spec = spec;
    a.env = env;
    a.timeout_ms = timeout_ms;
    return agent_runner_assign(r, &a);
}

/* work_dir/<sub>/<task>.<attempt> (journal/, tasks/) */
static bool s_path_exists(const char *sub, const char *task, uint64_t attempt) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/%s.%llu", s_tmp, sub, task, (unsigned long long)attempt);
    struct stat st;
    return stat(path, &st) == 0;
}

/* work_dir/logs/<task>/<attempt>.log<suffix> */
static bool s_log_exists(const char *task, uint64_t attempt, const char *suffix) {
    char path[1024];
    snprintf(path, sizeof path, "%s/logs/%s/%llu.log%s", s_tmp, task, (unsigned long long)attempt,
             suffix);
    struct stat st;
    return stat(path, &st) == 0;
}

/* The whole log of task/attempt as a string (caller frees). */
static char *s_log(agent_runner_t *r, const char *task, uint64_t attempt) {
    char dir[1200];
    if (agent_runner_log_dir(r, task, dir, sizeof dir) < 0) return NULL;
    uint8_t *data;
    size_t len;
    uint64_t at, end;
    if (agent_log_read(dir, attempt, 0, 1 << 20, &data, &len, &at, &end) < 0) return NULL;
    char *s = realloc(data, len + 1);
    if (s) s[len] = '\0';
    return s;
}

/* True when a live (not zombie) process has pid `pid` (or, with group,
 * belongs to process group `pid`). Killed orphans are reaped by init at its
 * leisure, and a zombie still answers kill(pid, 0). */
static bool s_alive(pid_t pid, bool group) {
    DIR *d = opendir("/proc");
    if (!d) return false;
    bool alive = false;
    struct dirent *de;
    while (!alive && (de = readdir(d))) {
        char path[300], buf[512];
        snprintf(path, sizeof path, "/proc/%s/stat", de->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        /* pid (comm) state ppid pgrp ... ; comm may hold spaces */
        char *rp = strrchr(buf, ')');
        if (!rp) continue;
        char state = 0;
        int ppid = 0, pgrp = 0;
        if (sscanf(rp + 1, " %c %d %d", &state, &ppid, &pgrp) != 3) continue;
        int p = atoi(buf);
        if (state != 'Z' && (group ? pgrp == pid : p == pid)) alive = true;
    }
    closedir(d);
    return alive;
}

/* -------------------------------------------------------------- tests */

static void test_table(void) {
    CHECK(agent_executor_find("noop") != NULL);
    CHECK(agent_executor_find("noop")->in_agent);
    CHECK(agent_executor_find("command") != NULL);
    CHECK(!agent_executor_find("command")->in_agent);
    CHECK(agent_executor_find("finetune") != NULL);
    CHECK(!agent_executor_find("finetune")->in_agent);
    CHECK(agent_executor_find("serve") == NULL);
    CHECK(agent_executor_find(NULL) == NULL);
    CHECK_EQ_STR(agent_executor_kinds(), "noop, command, finetune, embed, eval");
}

static void test_noop(void) {
    s_events e;
    agent_runner_t *r = s_runner(&e, false, 1 << 20, 1000);
    REQUIRE(r != NULL);
    CHECK_EQ_INT(s_assign(r, "j-000001.0", 1, "noop", "{}", NULL, 0), AGENT_ASSIGN_ACCEPTED);
    /* Completes inside the call: no process, no started event, no journal. */
    CHECK_EQ_INT(e.results, 1);
    CHECK_EQ_INT(e.started, 0);
    CHECK_EQ_STR(e.status[0], "succeeded");
    CHECK_EQ_STR(e.result[0], "{\"ok\":true}");
    CHECK(!s_path_exists("journal", "j-000001.0", 1));
    CHECK_EQ_INT(agent_runner_count(r), 1);
    CHECK_EQ_INT(agent_runner_running(r), 0);
    /* A duplicate assign: acknowledged, nothing run again, result offered again. */
    CHECK_EQ_INT(s_assign(r, "j-000001.0", 1, "noop", "{}", NULL, 0), AGENT_ASSIGN_DUPLICATE);
    CHECK_EQ_INT(e.results, 2);
    CHECK_EQ_INT(agent_runner_count(r), 1);
    /* Another attempt is another task. */
    CHECK_EQ_INT(s_assign(r, "j-000001.0", 2, "noop", "{}", NULL, 0), AGENT_ASSIGN_ACCEPTED);
    CHECK_EQ_INT(agent_runner_count(r), 2);
    CHECK_EQ_INT(agent_runner_ack(r, "j-000001.0", 1), 0);
    CHECK_EQ_INT(agent_runner_ack(r, "j-000001.0", 1), FW_ENOTFOUND); /* duplicate ack */
    CHECK_EQ_INT(agent_runner_count(r), 1);
    /* Bad ids are refused before anything exists. */
    CHECK_EQ_INT(s_assign(r, "../evil", 1, "noop", "{}", NULL, 0), FW_EINVAL);
    CHECK_EQ_INT(s_assign(r, "ok", 0, "noop", "{}", NULL, 0), FW_EINVAL);
    CHECK_EQ_INT(agent_runner_count(r), 1);
    /* Fast path: many noops complete without touching the disk. */
    int64_t t0 = fw_mono_ns();
    char id[64];
    for (int i = 0; i < 5000; i++) {
        snprintf(id, sizeof id, "j-000002.%d", i);
        s_assign(r, id, 1, "noop", "{}", NULL, 0);
        agent_runner_ack(r, id, 1);
    }
    double per_s = 5000.0 / ((double)(fw_mono_ns() - t0) / 1e9);
    fprintf(stderr, "noop assign+ack: %.0f tasks/s\n", per_s);
    CHECK(per_s > 20000); /* the agent must never be the dispatch bottleneck */
    agent_runner_destroy(&r);
    CHECK(r == NULL);
}

static void test_refusals(void) {
    s_events e;
    agent_runner_t *r = s_runner(&e, false, 1 << 20, 1000);
    REQUIRE(r != NULL);
    CHECK_EQ_INT(s_assign(r, "t.1", 1, "serve", "{}", NULL, 0), AGENT_ASSIGN_ACCEPTED);
    CHECK_EQ_STR(e.status[0], "failed");
    CHECK(strstr(e.error[0], "unknown task kind 'serve'") != NULL);
    CHECK(strstr(e.error[0], "noop, command") != NULL);
    /* Journaled: it is not an in-agent result. */
    CHECK(s_path_exists("journal", "t.1", 1));
    CHECK_EQ_INT(s_assign(r, "t.2", 1, "command", "{\"command\":[\"true\"]}", NULL, 0), 0);
    CHECK_EQ_STR(e.status[1], "failed");
    CHECK(strstr(e.error[1], "agent.allow_command is false") != NULL);
    CHECK_EQ_INT(e.started, 0);
    agent_runner_destroy(&r);

    r = s_runner(&e, true, 1 << 20, 1000);
    REQUIRE(r != NULL);
    /* The journal of the previous runner is back: two results to resend. */
    CHECK_EQ_INT(agent_runner_count(r), 2);
    agent_runner_tick(r, 1);
    CHECK_EQ_INT(e.results, 2);
    CHECK_EQ_INT(agent_runner_ack(r, "t.1", 1), 0);
    CHECK_EQ_INT(agent_runner_ack(r, "t.2", 1), 0);
    CHECK(!s_path_exists("journal", "t.1", 1));
    memset(&e, 0, sizeof e);
    static const char *bad_specs[] = {"not json", "{}", "{\"command\":[]}", "{\"command\":\"ls\"}",
                                      "{\"command\":[\"\"]}", "{\"command\":[\"ls\",3]}"};
    for (int i = 0; i < 6; i++) {
        char id[16];
        snprintf(id, sizeof id, "b.%d", i);
        CHECK_EQ_INT(s_assign(r, id, 1, "command", bad_specs[i], NULL, 0), 0);
        CHECK_EQ_STR(e.status[i], "failed");
        CHECKF(strstr(e.error[i], "spec") != NULL, "error for %s: %s", bad_specs[i], e.error[i]);
    }
    /* A program that does not exist fails clearly, and nothing "started". */
    CHECK_EQ_INT(s_assign(r, "b.9", 1, "command", "{\"command\":[\"/nonexistent/prog\"]}", NULL, 0),
                 0);
    CHECK_EQ_STR(e.status[6], "failed");
    CHECK(strstr(e.error[6], "exec /nonexistent/prog") != NULL);
    CHECK(strstr(e.error[6], "No such file") != NULL);
    CHECK_EQ_INT(e.started, 0);
    CHECK_EQ_INT(agent_runner_running(r), 0);
    agent_runner_destroy(&r);
}

static void test_command(void) {
    s_events e;
    agent_runner_t *r = s_runner(&e, true, 1 << 20, 1000);
    REQUIRE(r != NULL);
    const char *spec =
        "{\"shards\":4,\"command\":[\"sh\",\"-c\",\"echo out-$FLYWHEEL_JOB_ID-$FLYWHEEL_TASK_ID-"
        "$FLYWHEEL_SHARD_INDEX-$FLYWHEEL_SHARD_COUNT-$FLYWHEEL_RANK-$FLYWHEEL_WORLD_SIZE-"
        "$FLYWHEEL_ATTEMPT-$EXTRA; echo to-stderr >&2; "
        "echo '@flywheel progress {\\\"fraction\\\":0.5,\\\"step\\\":3}'; pwd\"]}";
    const char *env[] = {"EXTRA=from-leader", NULL};
    CHECK_EQ_INT(s_assign(r, "j-000001.2", 1, "command", spec, env, 0), 0);
    CHECK_EQ_INT(e.started, 1);
    CHECK_EQ_INT(agent_runner_running(r), 1);
    REQUIRE(s_wait(r, &e, 1, 5000));
    CHECK_EQ_STR(e.status[0], "succeeded");
    CHECK_EQ_INT(e.code[0], 0);
    CHECK_EQ_STR(e.error[0], "");
    CHECK_EQ_INT(e.progress, 1);
    CHECK_NEAR(e.fraction, 0.5, 1e-9);
    char *log = s_log(r, "j-000001.2", 1);
    REQUIRE(log != NULL);
    CHECKF(strstr(log, "out-j-000001-j-000001.2-2-4-0-1-1-from-leader\n") != NULL, "log: %s", log);
    CHECK(strstr(log, "to-stderr\n") != NULL);
    char cwd[1200];
    snprintf(cwd, sizeof cwd, "%s/tasks/j-000001.2.1\n", s_tmp);
    CHECK(strstr(log, cwd) != NULL);
    /* The result carries the log's tail and size. */
    json_t *res = json_loads(e.result[0], 0, NULL);
    CHECK(json_is_object(res));
    CHECK_EQ_INT(json_integer_value(json_object_get(res, "log_bytes")), strlen(log));
    CHECK_EQ_STR(json_string_value(json_object_get(res, "log_tail")), log);
    json_decref(res);
    free(log);
    /* Journaled until acknowledged; the ack removes journal and scratch dir. */
    CHECK(s_path_exists("journal", "j-000001.2", 1));
    CHECK(s_path_exists("tasks", "j-000001.2", 1));
    CHECK_EQ_INT(agent_runner_ack(r, "j-000001.2", 1), 0);
    CHECK(!s_path_exists("journal", "j-000001.2", 1));
    CHECK(!s_path_exists("tasks", "j-000001.2", 1));
    CHECK(s_log_exists("j-000001.2", 1, "")); /* logs stay */

    /* Gang environment: rank / world size / rendezvous, GPUs. */
    agent_assign_t a;
    memset(&a, 0, sizeof a);
    a.job_id = "j-000003";
    a.task_id = "j-000003.1";
    a.attempt = 2;
    a.kind = "command";
    a.spec = "{\"world_size\":3,\"command\":[\"sh\",\"-c\",\"echo $FLYWHEEL_RANK/"
             "$FLYWHEEL_WORLD_SIZE/$FLYWHEEL_SHARD_INDEX/$FLYWHEEL_SHARD_COUNT/"
             "$FLYWHEEL_RENDEZVOUS/$CUDA_VISIBLE_DEVICES\"]}";
    a.has_rank = true;
    a.rank = 1;
    a.world_size = 3;
    a.rendezvous = "tcp://h0:29500";
    uint64_t gpus[2] = {2, 3};
    a.gpus = gpus;
    a.ngpus = 2;
    CHECK_EQ_INT(agent_runner_assign(r, &a), 0);
    REQUIRE(s_wait(r, &e, 2, 5000));
    log = s_log(r, "j-000003.1", 2);
    CHECKF(log && strcmp(log, "1/3/1/3/tcp://h0:29500/2,3\n") == 0, "log: %s", log ? log : "");
    free(log);
    agent_runner_destroy(&r);
}

static void test_failures(void) {
    s_events e;
    agent_runner_t *r = s_runner(&e, true, 1 << 20, 1000);
    REQUIRE(r != NULL);
    CHECK_EQ_INT(s_assign(r, "f.1", 1, "command",
                          "{\"command\":[\"sh\",\"-c\",\"echo first; echo last words; exit 3\"]}",
                          NULL, 0),
                 0);
    REQUIRE(s_wait(r, &e, 1, 5000));
    CHECK_EQ_STR(e.status[0], "failed");
    CHECK_EQ_INT(e.code[0], 3);
    CHECK_EQ_STR(e.error[0], "exit code 3; last output: last words");
    /* A crash takes the task, never the agent. */
    CHECK_EQ_INT(s_assign(r, "f.2", 1, "command",
                          "{\"command\":[\"sh\",\"-c\",\"kill -SEGV $$\"]}", NULL, 0),
                 0);
    REQUIRE(s_wait(r, &e, 2, 5000));
    CHECK_EQ_STR(e.status[1], "failed");
    CHECK_EQ_INT(e.code[1], -SIGSEGV);
    CHECK(strstr(e.error[1], "killed by signal 11") != NULL);
    /* A SIGKILL the agent did not send reads as a likely OOM kill. */
    CHECK_EQ_INT(s_assign(r, "f.3", 1, "command",
                          "{\"command\":[\"sh\",\"-c\",\"kill -KILL $$\"]}", NULL, 0),
                 0);
    REQUIRE(s_wait(r, &e, 3, 5000));
    CHECK_EQ_INT(e.code[2], -SIGKILL);
    CHECK(strstr(e.error[2], "out of memory?") != NULL);
    /* Invalid UTF-8 and control bytes in the output become '?' in the
     * error and the tail (wire strings must be UTF-8). */
    CHECK_EQ_INT(s_assign(r, "f.4", 1, "command",
                          "{\"command\":[\"printf\",\"bad \\\\377\\\\001 bytes\\\\n\"]}", NULL, 0),
                 0);
    REQUIRE(s_wait(r, &e, 4, 5000));
    CHECK_EQ_STR(e.status[3], "succeeded");
    json_t *res = json_loads(e.result[3], 0, NULL);
    CHECKF(res && strcmp(json_string_value(json_object_get(res, "log_tail")), "bad ?? bytes\n") == 0,
           "result %s", e.result[3]);
    json_decref(res);
    /* A task whose background child keeps the pipe open still ends when
     * its process does, and the straggler is killed with it. */
    int64_t t0 = fw_mono_ms();
    CHECK_EQ_INT(s_assign(r, "f.5", 1, "command",
                          "{\"command\":[\"sh\",\"-c\",\"sleep 30 & echo $! > bg.pid; echo bye\"]}",
                          NULL, 0),
                 0);
    char pidfile[1200];
    snprintf(pidfile, sizeof pidfile, "%s/tasks/f.5.1/bg.pid", s_tmp);
    REQUIRE(s_wait(r, &e, 5, 5000));
    CHECK(fw_mono_ms() - t0 < 3000);
    CHECK_EQ_STR(e.status[4], "succeeded");
    FILE *f = fopen(pidfile, "r");
    int bg = 0;
    if (f) {
        CHECK(fscanf(f, "%d", &bg) == 1);
        fclose(f);
    }
    CHECK(bg > 0);
    fw_sleep_ms(100);
    if (bg > 0) CHECK(!s_alive(bg, false)); /* killed with its task */
    agent_runner_destroy(&r);
}

static void test_cancel(void) {
    s_events e;
    agent_runner_t *r = s_runner(&e, true, 1 << 20, 300);
    REQUIRE(r != NULL);
    const char *sleeper = "{\"command\":[\"sleep\",\"30\"]}";
    CHECK_EQ_INT(s_assign(r, "c.1", 1, "command", sleeper, NULL, 0), 0);
    /* Duplicate of a running task: no second process. */
    CHECK_EQ_INT(s_assign(r, "c.1", 1, "command", sleeper, NULL, 0), AGENT_ASSIGN_DUPLICATE);
    CHECK_EQ_INT(e.started, 1);
    CHECK_EQ_INT(agent_runner_running(r), 1);
    agent_task_t *t = agent_runner_find(r, "c.1", 1);
    REQUIRE(t != NULL);
    pid_t pid = t->pid;
    CHECK_EQ_INT(agent_runner_cancel(r, "c.1", 2, -1, "wrong attempt"), 0);
    CHECK_EQ_INT(agent_runner_cancel(r, "c.1", 0, -1, "user asked"), 1);
    CHECK_EQ_INT(agent_runner_cancel(r, "c.1", 0, -1, "again"), 1); /* idempotent */
    REQUIRE(s_wait(r, &e, 1, 5000));
    CHECK_EQ_STR(e.status[0], "cancelled");
    CHECK_EQ_INT(e.code[0], -SIGTERM);
    CHECK(strstr(e.error[0], "user asked") != NULL);
    CHECK(!s_alive(pid, false));
    CHECK_EQ_INT(agent_runner_cancel(r, "c.1", 0, -1, "after exit"), 0);

    /* A task that ignores SIGTERM gets SIGKILL after the grace period; its
     * children (same group) go too. */
    CHECK_EQ_INT(s_assign(r, "c.2", 1, "command",
                          "{\"command\":[\"sh\",\"-c\",\"trap '' TERM; sleep 30; echo no\"]}",
                          NULL, 0),
                 0);
    fw_sleep_ms(100); /* let the trap be set */
    t = agent_runner_find(r, "c.2", 1);
    REQUIRE(t != NULL);
    pid = t->pid;
    int64_t t0 = fw_mono_ms();
    CHECK_EQ_INT(agent_runner_cancel(r, "c.2", 1, -1, "stop"), 1);
    REQUIRE(s_wait(r, &e, 2, 5000));
    int64_t took = fw_mono_ms() - t0;
    CHECK_EQ_STR(e.status[1], "cancelled");
    CHECK_EQ_INT(e.code[1], -SIGKILL);
    CHECKF(took >= 290 && took < 2000, "took %lld ms", (long long)took);
    CHECK(!s_alive(pid, true)); /* the whole group is gone */

    /* grace 0: straight to SIGKILL. */
    CHECK_EQ_INT(s_assign(r, "c.3", 1, "command", sleeper, NULL, 0), 0);
    CHECK_EQ_INT(agent_runner_cancel(r, "c.3", 1, 0, NULL), 1);
    REQUIRE(s_wait(r, &e, 3, 5000));
    CHECK_EQ_INT(e.code[2], -SIGKILL);
    CHECK_EQ_STR(e.status[2], "cancelled");

    /* A timeout from TASK_ASSIGN. */
    CHECK_EQ_INT(s_assign(r, "c.4", 1, "command", sleeper, NULL, 200), 0);
    REQUIRE(s_wait(r, &e, 4, 5000));
    CHECK_EQ_STR(e.status[3], "failed");
    CHECK(strstr(e.error[3], "timed out") != NULL);
    agent_runner_destroy(&r);
}

static void test_drain_stop(void) {
    s_events e;
    agent_runner_t *r = s_runner(&e, true, 1 << 20, 2000);
    REQUIRE(r != NULL);
    const char *sleeper = "{\"command\":[\"sleep\",\"30\"]}";
    CHECK_EQ_INT(s_assign(r, "d.1", 1, "command", sleeper, NULL, 0), 0);
    agent_runner_set_draining(r, true);
    CHECK(agent_runner_draining(r));
    CHECK_EQ_INT(s_assign(r, "d.2", 1, "noop", "{}", NULL, 0), FW_ESTATE);
    CHECK(strstr(fw_err_detail(), "draining") != NULL);
    CHECK(agent_runner_find(r, "d.2", 1) == NULL);
    /* A duplicate of what it holds is still acknowledged while draining. */
    CHECK_EQ_INT(s_assign(r, "d.1", 1, "command", sleeper, NULL, 0), AGENT_ASSIGN_DUPLICATE);
    CHECK_EQ_INT(agent_runner_running(r), 1); /* running work is left alone */
    agent_runner_set_draining(r, false);
    CHECK_EQ_INT(s_assign(r, "d.2", 1, "noop", "{}", NULL, 0), 0);
    /* Stop: running tasks are terminated and reported lost; nothing new. */
    agent_runner_stop(r, 2000);
    CHECK_EQ_INT(s_assign(r, "d.3", 1, "noop", "{}", NULL, 0), FW_ESTATE);
    REQUIRE(s_wait(r, &e, 2, 5000));
    CHECK_EQ_STR(e.task[1], "d.1");
    CHECK_EQ_STR(e.status[1], "lost");
    CHECK(strstr(e.error[1], "stopped") != NULL);
    agent_runner_destroy(&r);
}

static void test_rotation_big_output(void) {
    s_events e;
    agent_runner_t *r = s_runner(&e, true, 64 << 10, 1000);
    REQUIRE(r != NULL);
    CHECK_EQ_INT(s_assign(r, "o.1", 1, "command",
                          "{\"command\":[\"sh\",\"-c\",\"head -c 1000000 /dev/zero | tr '\\\\0' x; "
                          "echo; echo done\"]}",
                          NULL, 0),
                 0);
    REQUIRE(s_wait(r, &e, 1, 10000));
    CHECK_EQ_STR(e.status[0], "succeeded");
    json_t *res = json_loads(e.result[0], 0, NULL);
    CHECK_EQ_INT(json_integer_value(json_object_get(res, "log_bytes")), 1000006);
    const char *tail = json_string_value(json_object_get(res, "log_tail"));
    CHECK(tail && strlen(tail) == 4096 && strcmp(tail + 4090, "\ndone\n") == 0);
    json_decref(res);
    /* Two files of at most 64 KiB are kept. */
    CHECK(s_log_exists("o.1", 1, ".1"));
    CHECK(!s_log_exists("o.1", 1, ".2"));
    agent_runner_destroy(&r);
}

static void test_orphan_sweep(void) {
    /* A task left running by an earlier agent run (same work_dir). */
    char env_dir[1200];
    snprintf(env_dir, sizeof env_dir, "FLYWHEEL_TASK_DIR=%s/tasks/old.1", s_tmp);
    char *envp[] = {env_dir, "PATH=/usr/bin:/bin", NULL};
    char *argv[] = {"sleep", "30", NULL};
    pid_t orphan = fork();
    if (orphan == 0) {
        execve("/bin/sleep", argv, envp);
        _exit(127);
    }
    /* Someone else's process with a similar variable is left alone. */
    char other_env[] = "FLYWHEEL_TASK_DIR=/elsewhere/tasks/x.1";
    char *envp2[] = {other_env, NULL};
    pid_t other = fork();
    if (other == 0) {
        execve("/bin/sleep", argv, envp2);
        _exit(127);
    }
    fw_sleep_ms(100); /* let both exec */
    CHECK(s_alive(orphan, false));
    s_events e;
    agent_runner_t *r = s_runner(&e, true, 1 << 20, 1000);
    REQUIRE(r != NULL);
    fw_sleep_ms(50);
    CHECK(!s_alive(orphan, false));
    CHECK(s_alive(other, false));
    kill(other, SIGKILL);
    waitpid(orphan, NULL, 0);
    waitpid(other, NULL, 0);
    agent_runner_destroy(&r);
}

static void test_utf8(void) {
    char s1[] = "ok caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80";
    agent_utf8_sanitize(s1, strlen(s1));
    CHECK_EQ_STR(s1, "ok caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    char s2[] = "a\xff" "b\xc3" "c\xed\xa0\x80" "d\x01\n\t\xc0\xaf";
    agent_utf8_sanitize(s2, strlen(s2));
    CHECK_EQ_STR(s2, "a?b?c???d?\n\t??");
}

int main(void) {
    s_tmp = fw_test_tmpdir("agent-task");
    zsys_handler_set(NULL);
    s_loop = zloop_new();
    RUN(test_table);
    RUN(test_utf8);
    RUN(test_noop);
    RUN(test_refusals);
    RUN(test_command);
    RUN(test_failures);
    RUN(test_cancel);
    RUN(test_drain_stop);
    RUN(test_rotation_big_output);
    RUN(test_orphan_sweep);
    zloop_destroy(&s_loop);
    fw_test_rmtree(s_tmp);
    free(s_tmp);
    return fw_test_summary();
}
