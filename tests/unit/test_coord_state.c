/* test_coord_state - the task state machine and the scheduler, pure.
 *
 * Drives coord_state and coord_sched without a process or etcd: a recorder
 * stands in for the store (coord_state_t.hook), and every step checks the
 * model's invariants (coord_state_check). Covers the transition table, a
 * sharded job from PENDING to SUCCEEDED, retries with backoff, retries
 * running out, cancellation, priority order, resources and labels, gangs
 * placed all or nothing and retried whole, and backfill around a waiting
 * gang. */
#include "coord_sched.h"
#include "coord_spec.h"
#include "coord_state.h"
#include "fw_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- fixtures */

/* REQUIRE returns from void functions only; fixtures that return a value
 * stop the test binary instead (a fixture failing makes the rest moot). */
#define S_MUST(cond)                                                                               \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: fixture failed: %s\n", __FILE__, __LINE__, #cond);             \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

typedef struct {
    int tasks, jobs, stops;
    int last_from, last_to;
} s_rec;

static void s_hook(void *arg, coord_obj_kind kind, void *obj, int from, int to) {
    s_rec *r = arg;
    (void)obj;
    if (kind == COORD_OBJ_TASK) {
        r->tasks++;
        r->last_from = from;
        r->last_to = to;
    } else if (kind == COORD_OBJ_JOB) {
        r->jobs++;
    } else if (kind == COORD_EV_STOP) {
        r->stops++;
    }
}

static coord_state_t *s_state(s_rec *r) {
    coord_state_t *s = coord_state_new();
    S_MUST(s);
    memset(r, 0, sizeof *r);
    s->hook = s_hook;
    s->hook_arg = r;
    s->retry_backoff_ms = 1000;
    s->retry_backoff_max_ms = 8000;
    return s;
}

static coord_agent_t *s_agent(coord_state_t *s, const char *id, uint64_t cpus, const char *zone) {
    coord_agent_t *a = coord_agent_get(s, id, true);
    S_MUST(a);
    a->cpus = cpus;
    a->memory_mb = 4096;
    a->alive = a->connected = true;
    if (zone) {
        const char *k[] = {"zone"}, *v[] = {zone};
        coord_agent_set_labels(a, 1, k, v);
    }
    return a;
}

static coord_job_t *s_job(coord_state_t *s, const char *spec_text) {
    coord_spec_t sp;
    S_MUST(coord_spec_parse(spec_text, 100000, &sp) == 0);
    coord_job_t *j =
        coord_job_add(s, s->next_job_seq ? s->next_job_seq : 1, &sp, "tester", 1000, true);
    S_MUST(j);
    return j;
}

static uint32_t s_pass(coord_state_t *s, coord_sched_t *sc, int64_t now) {
    uint32_t n = coord_sched_pass(s, sc, now, now, 100000, NULL);
    CHECK(coord_state_check(s));
    return n;
}

/* A started-then-succeeded attempt of t. */
static void s_succeed(coord_state_t *s, coord_task_t *t, int64_t now) {
    CHECK_EQ_INT(coord_task_started(s, t, now), 0);
    CHECK_EQ_INT(coord_task_finish(s, t, COORD_OUT_SUCCEEDED, 0, "{\"ok\":true}", NULL, now, 1024),
                 t->job->spec.gang ? t->state : TASK_SUCCEEDED);
}

/* ---------------------------------------------------------------- tests */

static void test_transition_table(void) {
    /* The allowed edges of docs/state-machines.md, and nothing else. */
    static const int allowed[][2] = {
        {TASK_PENDING, TASK_ASSIGNED},  {TASK_PENDING, TASK_FAILED},
        {TASK_PENDING, TASK_CANCELLED}, {TASK_ASSIGNED, TASK_PENDING},
        {TASK_ASSIGNED, TASK_RUNNING},  {TASK_ASSIGNED, TASK_SUCCEEDED},
        {TASK_ASSIGNED, TASK_FAILED},   {TASK_ASSIGNED, TASK_CANCELLED},
        {TASK_RUNNING, TASK_PENDING},   {TASK_RUNNING, TASK_SUCCEEDED},
        {TASK_RUNNING, TASK_FAILED},    {TASK_RUNNING, TASK_CANCELLED},
    };
    int n = 0;
    for (int f = 0; f < TASK__COUNT; f++)
        for (int t = 0; t < TASK__COUNT; t++) {
            bool want = false;
            for (size_t k = 0; k < sizeof allowed / sizeof allowed[0]; k++)
                want |= allowed[k][0] == f && allowed[k][1] == t;
            CHECKF(coord_task_transition_ok(f, t) == want, "%s -> %s", coord_task_state_name(f),
                   coord_task_state_name(t));
            n += want;
        }
    CHECK_EQ_INT(n, 12);
    CHECK(!coord_task_transition_ok(-1, TASK_PENDING));
    CHECK(!coord_task_transition_ok(TASK_PENDING, TASK__COUNT));
    CHECK_EQ_INT(coord_task_state_parse("running"), TASK_RUNNING);
    CHECK_EQ_INT(coord_task_state_parse("RUNNING"), TASK_RUNNING);
    CHECK_EQ_INT(coord_task_state_parse("bogus"), -1);
    CHECK_EQ_INT(coord_job_state_parse("succeeded"), JOB_SUCCEEDED);
    CHECK_EQ_INT(coord_outcome_parse("lost"), COORD_OUT_LOST);
    CHECK_EQ_INT(coord_outcome_parse("exploded"), -1);
    /* Backoff doubles from the base and stops at the cap. */
    CHECK_EQ_INT(coord_backoff_ms(1000, 8000, 1), 1000);
    CHECK_EQ_INT(coord_backoff_ms(1000, 8000, 2), 2000);
    CHECK_EQ_INT(coord_backoff_ms(1000, 8000, 4), 8000);
    CHECK_EQ_INT(coord_backoff_ms(1000, 8000, 40), 8000);
}

static void test_ids(void) {
    char buf[32], job[32];
    coord_job_id_format(42, buf, sizeof buf);
    CHECK_EQ_STR(buf, "j-000042");
    uint32_t idx = 0;
    CHECK_EQ_INT(coord_task_id_parse("j-000042.17", job, sizeof job, &idx), 0);
    CHECK_EQ_STR(job, "j-000042");
    CHECK_EQ_INT(idx, 17);
    CHECK_EQ_INT(coord_task_id_parse("j-000042", job, sizeof job, &idx), -1);
    CHECK_EQ_INT(coord_task_id_parse("j-000042.x", job, sizeof job, &idx), -1);
    CHECK_EQ_INT(coord_task_id_parse("", job, sizeof job, &idx), -1);
}

static void test_sharded_lifecycle(void) {
    s_rec r;
    coord_state_t *s = s_state(&r);
    coord_sched_t sc;
    coord_sched_init(&sc, 29500, 29501);
    coord_agent_t *a = s_agent(s, "a1", 2, NULL);
    coord_job_t *j = s_job(s, "{\"kind\":\"noop\",\"shards\":3,\"max_retries\":0}");
    CHECK_EQ_INT(j->state, JOB_QUEUED);
    CHECK_EQ_INT(s->nqueue, 1);
    /* Two cpus: two of three tasks fit. */
    CHECK_EQ_INT(s_pass(s, &sc, 2000), 2);
    CHECK_EQ_INT(j->count[TASK_ASSIGNED], 2);
    CHECK_EQ_INT(j->state, JOB_RUNNING);
    CHECK_EQ_INT(a->used_cpus, 2);
    CHECK_EQ_INT(j->tasks[0].attempt, 1);
    CHECK(j->tasks[0].agent == a);
    /* Illegal moves are refused and change nothing. */
    int before = r.tasks;
    CHECK_EQ_INT(coord_task_set_state(s, &j->tasks[0], TASK_ASSIGNED), -1);
    CHECK_EQ_INT(r.tasks, before);
    s_succeed(s, &j->tasks[0], 3000);
    CHECK_EQ_INT(a->used_cpus, 1); /* released */
    /* A terminal task stays terminal, whatever arrives later. */
    CHECK_EQ_INT(coord_task_finish(s, &j->tasks[0], COORD_OUT_FAILED, 1, NULL, "late", 3100, 1024),
                 TASK_SUCCEEDED);
    CHECK_EQ_INT(coord_task_started(s, &j->tasks[0], 3100), -1);
    CHECK_EQ_INT(s_pass(s, &sc, 3200), 1);
    s_succeed(s, &j->tasks[1], 4000);
    s_succeed(s, &j->tasks[2], 4000);
    CHECK_EQ_INT(j->state, JOB_SUCCEEDED);
    CHECK_EQ_INT(j->finished_at, 4000);
    CHECK_EQ_INT(s->nqueue, 0);
    CHECK_EQ_INT(a->used_cpus, 0);
    CHECK(coord_state_check(s));
    coord_sched_free(&sc);
    coord_state_destroy(&s);
}

/* The finalize hook: called once when the last task succeeded, before the
 * job turns SUCCEEDED; a refusal fails the job with its error. */
static int s_finalize_calls;
static int s_finalize(void *arg, coord_job_t *j) {
    s_finalize_calls++;
    if (arg) {
        j->error = strdup("finalize: shard 1's matrix is corrupt");
        return -1;
    }
    CHECK_EQ_INT(j->state, JOB_RUNNING); /* not yet SUCCEEDED while it runs */
    return 0;
}

static void test_finalize_hook(void) {
    s_rec r;
    coord_state_t *s = s_state(&r);
    coord_sched_t sc;
    coord_sched_init(&sc, 29500, 29501);
    s_agent(s, "a1", 4, NULL);
    s->finalize = s_finalize;
    s->finalize_arg = NULL;
    s_finalize_calls = 0;
    coord_job_t *j = s_job(s, "{\"kind\":\"noop\",\"shards\":2,\"max_retries\":0}");
    CHECK_EQ_INT(s_pass(s, &sc, 2000), 2);
    s_succeed(s, &j->tasks[0], 3000);
    CHECK_EQ_INT(s_finalize_calls, 0); /* not before the last task */
    s_succeed(s, &j->tasks[1], 3000);
    CHECK_EQ_INT(s_finalize_calls, 1);
    CHECK_EQ_INT(j->state, JOB_SUCCEEDED);
    /* A refusal: FAILED with finalize's reason, though every task succeeded. */
    s->finalize_arg = s;
    coord_job_t *k = s_job(s, "{\"kind\":\"noop\",\"shards\":1,\"max_retries\":0}");
    CHECK_EQ_INT(s_pass(s, &sc, 4000), 1);
    s_succeed(s, &k->tasks[0], 5000);
    CHECK_EQ_INT(s_finalize_calls, 2);
    CHECK_EQ_INT(k->state, JOB_FAILED);
    CHECK_EQ_INT(k->count[TASK_SUCCEEDED], 1);
    REQUIRE(k->error != NULL);
    CHECK_EQ_STR(k->error, "finalize: shard 1's matrix is corrupt");
    /* A job failed by a task says which task and why. */
    s->finalize = NULL;
    coord_job_t *f = s_job(s, "{\"kind\":\"noop\",\"shards\":1,\"max_retries\":0}");
    CHECK_EQ_INT(s_pass(s, &sc, 6000), 1);
    CHECK_EQ_INT(coord_task_finish(s, &f->tasks[0], COORD_OUT_FAILED, 3, NULL, "exit 3", 7000,
                                   1024),
                 TASK_FAILED);
    CHECK_EQ_INT(f->state, JOB_FAILED);
    REQUIRE(f->error != NULL);
    CHECKF(strstr(f->error, ".0: exit 3") != NULL, "job error \"%s\"", f->error);
    CHECK(coord_state_check(s));
    coord_sched_free(&sc);
    coord_state_destroy(&s);
}

static void test_retry_then_fail(void) {
    s_rec r;
    coord_state_t *s = s_state(&r);
    coord_sched_t sc;
    coord_sched_init(&sc, 29500, 29501);
    coord_agent_t *a = s_agent(s, "a1", 4, NULL);
    coord_job_t *j = s_job(s, "{\"kind\":\"noop\",\"shards\":1,\"max_retries\":1}");
    coord_task_t *t = &j->tasks[0];
    CHECK_EQ_INT(s_pass(s, &sc, 10000), 1);
    /* Attempt 1 fails: back to PENDING, waiting out the base backoff. */
    CHECK_EQ_INT(coord_task_finish(s, t, COORD_OUT_FAILED, 3, NULL, NULL, 10000, 1024),
                 TASK_PENDING);
    CHECK(t->waiting);
    CHECK_EQ_INT(t->not_before, 11000);
    CHECK_EQ_INT(t->retries_left, 0);
    CHECK_EQ_INT(a->used_cpus, 0);
    CHECK(t->history && strstr(t->history, "exit code 3"));
    /* Not placed before the backoff passed. */
    CHECK_EQ_INT(coord_state_wake(s, 10999, 0), 0);
    CHECK_EQ_INT(s_pass(s, &sc, 10999), 0);
    CHECK_EQ_INT(coord_state_wake(s, 11000, 0), 1);
    CHECK_EQ_INT(s_pass(s, &sc, 11000), 1);
    CHECK_EQ_INT(t->attempt, 2);
    /* Attempt 2 is lost: no retries left, so FAILED and the job with it. */
    CHECK_EQ_INT(coord_task_finish(s, t, COORD_OUT_LOST, 0, NULL, NULL, 12000, 1024), TASK_FAILED);
    CHECK(t->error && strstr(t->error, "lost"));
    CHECK_EQ_INT(j->state, JOB_FAILED);
    CHECK(coord_state_check(s));
    coord_sched_free(&sc);
    coord_state_destroy(&s);
}

static void test_cancel(void) {
    s_rec r;
    coord_state_t *s = s_state(&r);
    coord_sched_t sc;
    coord_sched_init(&sc, 29500, 29501);
    coord_agent_t *a = s_agent(s, "a1", 1, NULL);
    coord_job_t *j = s_job(s, "{\"kind\":\"noop\",\"shards\":3}");
    CHECK_EQ_INT(s_pass(s, &sc, 1000), 1);
    j->tasks[0].sent = true; /* TASK_ASSIGN went out: stopping needs a TASK_CANCEL */
    coord_job_cancel(s, j, "by test", 2000);
    CHECK_EQ_INT(j->count[TASK_CANCELLED], 3);
    CHECK_EQ_INT(j->state, JOB_CANCELLED);
    CHECK_EQ_INT(r.stops, 1);
    /* The running attempt's cpu stays held (a zombie) until the agent says it is gone. */
    CHECK_EQ_INT(a->used_cpus, 1);
    CHECK_EQ_INT(a->nzombies, 1);
    char tid[COORD_TASKID_MAX];
    coord_task_id_format(&j->tasks[0], tid, sizeof tid);
    CHECK(coord_agent_zombie_gone(a, tid, 1));
    CHECK_EQ_INT(a->used_cpus, 0);
    CHECK(!coord_agent_zombie_gone(a, tid, 1));
    CHECK_EQ_INT(s->nqueue, 0);
    CHECK(coord_state_check(s));
    coord_sched_free(&sc);
    coord_state_destroy(&s);
}

static void test_priority_labels_drain(void) {
    s_rec r;
    coord_state_t *s = s_state(&r);
    coord_sched_t sc;
    coord_sched_init(&sc, 29500, 29501);
    coord_agent_t *a = s_agent(s, "a1", 1, "a");
    coord_agent_t *b = s_agent(s, "b1", 1, "b");
    coord_job_t *lo = s_job(s, "{\"kind\":\"noop\",\"shards\":1,\"priority\":0}");
    coord_job_t *hi = s_job(s, "{\"kind\":\"noop\",\"shards\":1,\"priority\":5,"
                               "\"labels\":{\"zone\":\"b\"}}");
    coord_job_t *nowhere = s_job(s, "{\"kind\":\"noop\",\"shards\":1,\"labels\":{\"zone\":\"c\"}}");
    CHECK(s->queue[0] == hi); /* priority first, then submission */
    CHECK_EQ_INT(s_pass(s, &sc, 1000), 2);
    CHECK(hi->tasks[0].agent == b);
    CHECK(lo->tasks[0].agent == a);
    CHECK_EQ_INT(nowhere->count[TASK_PENDING], 1); /* no agent has zone c */
    /* A drained agent gets nothing new. */
    s_succeed(s, &lo->tasks[0], 2000);
    a->drain = true;
    coord_job_t *more = s_job(s, "{\"kind\":\"noop\",\"shards\":1}");
    CHECK_EQ_INT(s_pass(s, &sc, 2100), 0);
    a->drain = false;
    CHECK_EQ_INT(s_pass(s, &sc, 2200), 1);
    CHECK(more->tasks[0].agent == a);
    /* Resources beyond any agent's capacity never place. */
    coord_job_t *big = s_job(s, "{\"kind\":\"noop\",\"shards\":1,\"resources\":{\"cpus\":64}}");
    CHECK_EQ_INT(s_pass(s, &sc, 2300), 0);
    CHECK_EQ_INT(big->count[TASK_PENDING], 1);
    coord_sched_free(&sc);
    coord_state_destroy(&s);
}

static void test_gang_and_backfill(void) {
    s_rec r;
    coord_state_t *s = s_state(&r);
    coord_sched_t sc;
    coord_sched_init(&sc, 29500, 29509);
    coord_agent_t *ag[3];
    ag[0] = s_agent(s, "a1", 1, NULL);
    ag[1] = s_agent(s, "a2", 1, NULL);
    ag[2] = s_agent(s, "a3", 1, NULL);
    free(ag[0]->host);
    ag[0]->host = strdup("host-a1");
    /* One slot busy: a gang of 3 finds 2 free slots and must wait whole. */
    coord_job_t *first = s_job(s, "{\"kind\":\"noop\",\"shards\":1,\"priority\":9}");
    CHECK_EQ_INT(s_pass(s, &sc, 1000), 1);
    coord_task_t *busy = &first->tasks[0];
    coord_job_t *gang = s_job(s, "{\"kind\":\"noop\",\"world_size\":3,\"priority\":5}");
    coord_job_t *small = s_job(s, "{\"kind\":\"noop\",\"shards\":2,\"priority\":0}");
    CHECK_EQ_INT(s_pass(s, &sc, 1100), 0);
    CHECK_EQ_INT(gang->count[TASK_PENDING], 3);
    CHECK(sc.reserved_for == gang);
    /* Backfill: the small job must not take the two slots the gang reserves. */
    CHECK_EQ_INT(small->count[TASK_PENDING], 2);
    /* The busy slot frees: the whole gang starts at once, with ranks and a rendezvous. */
    s_succeed(s, busy, 1200);
    CHECK_EQ_INT(s_pass(s, &sc, 1300), 3);
    CHECK_EQ_INT(gang->count[TASK_ASSIGNED], 3);
    CHECK_EQ_INT(gang->gang_attempt, 1);
    REQUIRE(gang->rendezvous);
    CHECK(strncmp(gang->rendezvous, "tcp://", 6) == 0 && strstr(gang->rendezvous, ":2950"));
    for (int i = 0; i < 3; i++) CHECK_EQ_INT(gang->tasks[i].attempt, 1);
    CHECK_EQ_INT(small->count[TASK_PENDING], 2);
    /* Rank 1 fails: the whole gang goes back to PENDING, the others are stopped. */
    for (int i = 0; i < 3; i++) {
        gang->tasks[i].sent = true;
        CHECK_EQ_INT(coord_task_started(s, &gang->tasks[i], 1400), 0);
    }
    int stops = r.stops;
    coord_task_finish(s, &gang->tasks[1], COORD_OUT_FAILED, 1, NULL, "boom", 1500, 1024);
    CHECK_EQ_INT(gang->count[TASK_PENDING], 3);
    CHECK_EQ_INT(r.stops - stops, 2);
    CHECK(gang->gang_waiting);
    CHECK_EQ_INT(gang->gang_retries_left, COORD_SPEC_DEFAULT_RETRIES - 1);
    /* The two stopped ranks still hold their slots until their agents confirm. */
    for (int i = 0; i < 3; i++) {
        char tid[COORD_TASKID_MAX];
        coord_task_id_format(&gang->tasks[i], tid, sizeof tid);
        coord_agent_zombie_gone(gang->tasks[i].agent, tid, 1);
    }
    for (int i = 0; i < 3; i++) CHECK_EQ_INT(ag[i]->used_cpus, 0);
    /* While the gang waits out its backoff, the small job may run... */
    CHECK_EQ_INT(s_pass(s, &sc, 1600), 2);
    s_succeed(s, &small->tasks[0], 1700);
    s_succeed(s, &small->tasks[1], 1700);
    CHECK_EQ_INT(small->state, JOB_SUCCEEDED);
    /* ... and after it the gang is placed again as a whole, attempt 2. */
    CHECK_EQ_INT(coord_state_wake(s, 1500 + 1000, 0), 1);
    CHECK_EQ_INT(s_pass(s, &sc, 2600), 3);
    for (int i = 0; i < 3; i++) CHECK_EQ_INT(gang->tasks[i].attempt, 2);
    /* Ranks succeed: the gang is SUCCEEDED only when the last one is. */
    for (int i = 0; i < 2; i++) {
        s_succeed(s, &gang->tasks[i], 2700);
        CHECK_EQ_INT(gang->tasks[i].state, TASK_RUNNING);
    }
    s_succeed(s, &gang->tasks[2], 2800);
    CHECK_EQ_INT(gang->count[TASK_SUCCEEDED], 3);
    CHECK_EQ_INT(gang->state, JOB_SUCCEEDED);
    CHECK(coord_state_check(s));
    coord_sched_free(&sc);
    coord_state_destroy(&s);
}

static void test_fit_count(void) {
    s_rec r;
    coord_state_t *s = s_state(&r);
    coord_agent_t *a = s_agent(s, "a1", 8, NULL);
    a->ngpus = 2;
    coord_spec_t sp;
    REQUIRE(coord_spec_parse("{\"kind\":\"noop\",\"shards\":1,\"resources\":{\"cpus\":2,"
                             "\"gpus\":1,\"memory_mb\":1000}}",
                             100, &sp) == 0);
    CHECK_EQ_INT(coord_sched_fit_count(a, &sp, 0, 0, 0, 100), 2);    /* gpus bound it */
    CHECK_EQ_INT(coord_sched_fit_count(a, &sp, 0, 0, 1, 100), 1);    /* one gpu reserved */
    CHECK_EQ_INT(coord_sched_fit_count(a, &sp, 0, 3500, 0, 100), 0); /* memory reserved */
    CHECK_EQ_INT(coord_sched_fit_count(a, &sp, 0, 0, 0, 1), 1);      /* cap */
    a->connected = false;
    CHECK_EQ_INT(coord_sched_fit_count(a, &sp, 0, 0, 0, 100), 0);
    coord_spec_clear(&sp);
    coord_state_destroy(&s);
}

int main(void) {
    RUN(test_transition_table);
    RUN(test_ids);
    RUN(test_sharded_lifecycle);
    RUN(test_retry_then_fail);
    RUN(test_finalize_hook);
    RUN(test_cancel);
    RUN(test_priority_labels_drain);
    RUN(test_gang_and_backfill);
    RUN(test_fit_count);
    return fw_test_summary();
}
