/* test_coord_records - etcd keys and values, and the metrics text.
 *
 * A new leader rebuilds everything from what the old one wrote, so
 * parse(render(x)) must give x back (state, attempt, agent, times, result,
 * history, backoff), bad records must be refused with the key named, and
 * the Prometheus text must satisfy `promtool check metrics` when promtool is
 * installed. */
#include "coord_json.h"
#include "coord_metrics.h"
#include "coord_records.h"
#include "coord_spec.h"
#include "coord_state.h"
#include "fw_err.h"
#include "fw_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define P "/fw"

static char *s_render_task(const coord_task_t *t) {
    coord_jw w = {0};
    coord_render_task(&w, t);
    return w.oom ? NULL : w.buf;
}

static char *s_render_job(const coord_job_t *j) {
    coord_jw w = {0};
    coord_render_job(&w, j);
    return w.oom ? NULL : w.buf;
}

static void test_keys(void) {
    coord_state_t *s = coord_state_new();
    REQUIRE(s);
    coord_spec_t sp;
    REQUIRE(coord_spec_parse("{\"kind\":\"noop\",\"shards\":20,\"priority\":-5}", 100, &sp) == 0);
    coord_job_t *j = coord_job_add(s, 42, &sp, "u", 1, true);
    REQUIRE(j);
    char key[COORD_KEY_MAX], jid[64];
    coord_key_task(key, sizeof key, P, &j->tasks[17]);
    CHECK_EQ_STR(key, "/fw/tasks/j-000042/000017");
    uint32_t idx = 0;
    CHECK_EQ_INT(coord_key_task_parse(key, P, jid, sizeof jid, &idx), 0);
    CHECK_EQ_STR(jid, "j-000042");
    CHECK_EQ_INT(idx, 17);
    CHECK_EQ_INT(coord_key_task_parse("/fw/tasks/j-000042/", P, jid, sizeof jid, &idx), -1);
    CHECK_EQ_INT(coord_key_task_parse("/fw/tasks/j-000042/1x", P, jid, sizeof jid, &idx), -1);
    CHECK_EQ_INT(coord_key_task_parse("/other/tasks/j-1/1", P, jid, sizeof jid, &idx), -1);
    coord_key_job(key, sizeof key, P, j);
    CHECK_EQ_STR(key, "/fw/jobs/j-000042");
    /* Queue keys sort by priority (high first), then submission. */
    coord_key_queue(key, sizeof key, P, j);
    CHECK_EQ_STR(key, "/fw/queue/10004/000000000042");
    coord_key_audit(key, sizeof key, P, 7);
    CHECK_EQ_STR(key, "/fw/audit/0000000000000007");
    char esc[64];
    coord_json_escape("a\"b\\c\n", esc, sizeof esc);
    CHECK_EQ_STR(esc, "a\\\"b\\\\c\\n");
    coord_state_destroy(&s);
}

static void test_round_trip(void) {
    coord_state_t *s = coord_state_new();
    REQUIRE(s);
    s->retry_backoff_ms = 1000;
    s->retry_backoff_max_ms = 1000;
    coord_agent_t *a = coord_agent_get(s, "agent-1", true);
    a->cpus = 8;
    a->memory_mb = 1000;
    a->alive = a->connected = true;
    coord_spec_t sp;
    REQUIRE(coord_spec_parse("{\"kind\":\"noop\",\"shards\":3,\"max_retries\":2}", 100, &sp) == 0);
    coord_job_t *j = coord_job_add(s, 7, &sp, "alice", 5000, true);
    REQUIRE(j);
    for (int i = 0; i < 3; i++) coord_task_assign(s, coord_job_take_ready(s, j), a, 6000);
    coord_task_started(s, &j->tasks[0], 6100);
    coord_task_finish(s, &j->tasks[0], COORD_OUT_SUCCEEDED, 0, "{\"answer\":42}", NULL, 6200, 1024);
    coord_task_finish(s, &j->tasks[1], COORD_OUT_FAILED, 2, NULL, "bad \"input\"", 6300, 1024);
    coord_task_started(s, &j->tasks[2], 6400);
    REQUIRE(j->tasks[1].state == TASK_PENDING && j->tasks[1].waiting);

    char *jv = s_render_job(j);
    char *tv[3];
    for (int i = 0; i < 3; i++) tv[i] = s_render_task(&j->tasks[i]);
    REQUIRE(jv && tv[0] && tv[1] && tv[2]);
    CHECK(strstr(jv, "\"schema\":1") != NULL);

    /* A new leader's view. */
    coord_state_t *n = coord_state_new();
    REQUIRE(n);
    coord_job_t *k = NULL;
    CHECK_EQ_INT(coord_parse_job(n, "/fw/jobs/j-000007", jv, &k), 0);
    REQUIRE(k);
    CHECK_EQ_STR(k->id, "j-000007");
    CHECK_EQ_INT(k->seq, 7);
    CHECK_EQ_STR(k->owner, "alice");
    CHECK_EQ_INT(k->ntasks, 3);
    CHECK_EQ_INT(k->spec.max_retries, 2);
    CHECK_EQ_INT(k->state, JOB_RUNNING);
    CHECK_EQ_INT(k->submitted_at, 5000);
    char key[COORD_KEY_MAX];
    for (int i = 0; i < 3; i++) {
        coord_key_task(key, sizeof key, P, &j->tasks[i]);
        CHECKF(coord_parse_task(n, key + strlen(P), tv[i]) == 0 ||
                   coord_parse_task(n, key, tv[i]) == 0,
               "task %d: %s", i, fw_err_detail());
    }
    coord_state_rebuild_job(n, k, 6500, 0);
    const coord_task_t *t0 = &k->tasks[0], *t1 = &k->tasks[1], *t2 = &k->tasks[2];
    CHECK_EQ_INT(t0->state, TASK_SUCCEEDED);
    CHECK_EQ_INT(t0->attempt, 1);
    REQUIRE(t0->result);
    CHECK(strstr(t0->result, "42") != NULL);
    CHECK_EQ_INT(t0->finished_at, 6200);
    CHECK_EQ_INT(t1->state, TASK_PENDING);
    CHECK_EQ_INT(t1->attempt, 1);
    CHECK_EQ_INT(t1->retries_left, 1);
    CHECK_EQ_INT(t1->not_before, 7300);
    CHECK(t1->waiting); /* still waiting out its backoff after the takeover */
    REQUIRE(t1->history);
    CHECK(strstr(t1->history, "bad \\\"input\\\"") != NULL);
    CHECK_EQ_INT(t2->state, TASK_RUNNING);
    REQUIRE(t2->agent);
    CHECK_EQ_STR(t2->agent->id, "agent-1");
    CHECK(t2->holds);       /* it still holds its cpu on agent-1 ... */
    CHECK(t2->unconfirmed); /* ... until the agent re-registers */
    CHECK_EQ_INT(k->count[TASK_RUNNING], 1);
    CHECK_EQ_INT(k->count[TASK_SUCCEEDED], 1);
    CHECK_EQ_INT(k->count[TASK_PENDING], 1);
    CHECK(coord_state_check(n));
    /* Rendering the rebuilt task gives the same record. */
    char *again = s_render_task(t2);
    CHECK_EQ_STR(again, tv[2]);
    free(again);
    for (int i = 0; i < 3; i++) free(tv[i]);
    free(jv);
    coord_state_destroy(&n);
    coord_state_destroy(&s);
}

static void test_bad_records(void) {
    coord_state_t *s = coord_state_new();
    REQUIRE(s);
    coord_job_t *j = NULL;
    CHECK(coord_parse_job(s, "/fw/jobs/j-000001", "not json", &j) < 0);
    CHECK(strstr(fw_err_detail(), "j-000001") != NULL);
    CHECK_EQ_INT(
        coord_parse_job(s, "/fw/jobs/j-000001", "{\"schema\":2,\"id\":\"j-000001\",\"seq\":1}", &j),
        FW_EVERSION);
    CHECK(coord_parse_job(s, "/fw/jobs/j-000001", "{\"schema\":1,\"id\":\"j-000001\"}", &j) < 0);
    CHECK(coord_parse_job(s, "/fw/jobs/j-000001",
                          "{\"schema\":1,\"id\":\"j-000001\",\"seq\":1,\"kind\":\"noop\","
                          "\"state\":\"QUEUED\",\"priority\":0,\"owner\":\"u\",\"shards\":1,"
                          "\"submitted_at\":1,\"spec\":{\"kind\":\"noop\",\"shards\":1,"
                          "\"bogus\":1}}",
                          &j) < 0);
    CHECKF(strstr(fw_err_detail(), "bogus") != NULL, "detail: %s", fw_err_detail());
    /* A task of a job nobody knows. */
    CHECK(coord_parse_task(s, "/fw/tasks/j-000099/000000",
                           "{\"schema\":1,\"state\":\"RUNNING\",\"attempt\":1}") < 0);
    /* An agent's own record only proves it alive: a garbled one changes
     * nothing else (AGENT_REGISTER brings the details). */
    CHECK_EQ_INT(coord_parse_agent(s, "a1", "{\"schema\":1,\"cpus\":\"many\"}"), 0);
    coord_agent_t *a = coord_agent_get(s, "a1", false);
    REQUIRE(a);
    CHECK(a->alive);
    CHECK_EQ_INT(a->cpus, 0);
    CHECK(coord_state_check(s));
    coord_state_destroy(&s);
}

static void test_metrics(void) {
    coord_metrics_t m;
    memset(&m, 0, sizeof m);
    m.leader = 1;
    m.epoch = 7;
    m.tasks[TASK_RUNNING] = 3;
    m.tasks_dispatched_total = 10;
    for (int i = 0; i < 100; i++) coord_hist_observe(&m.dispatch_latency, 0.0004 * (i + 1));
    /* 100 observations 0.4ms .. 40ms: the median's bucket is 25 ms. */
    CHECK_NEAR(coord_hist_quantile(&m.dispatch_latency, 0.5), 0.025, 1e-9);
    CHECK_EQ_INT(m.dispatch_latency.count, 100);
    char *text = coord_metrics_render(&m, "c1");
    REQUIRE(text);
    CHECK(strstr(text, "flywheel_leader 1\n") != NULL);
    CHECK(strstr(text, "flywheel_tasks{state=\"RUNNING\"} 3\n") != NULL);
    CHECK(strstr(text, "# TYPE flywheel_tasks_dispatched_total counter") != NULL);
    CHECK(strstr(text, "flywheel_dispatch_latency_seconds_bucket{le=\"+Inf\"} 100\n") != NULL);
    CHECK(strstr(text, "flywheel_dispatch_latency_seconds_count 100\n") != NULL);
    if (access("/usr/bin/promtool", X_OK) == 0) {
        char *dir = fw_test_tmpdir("coord_metrics");
        char path[512], cmd[700];
        snprintf(path, sizeof path, "%s/metrics.txt", dir);
        FILE *f = fopen(path, "w");
        REQUIRE(f);
        fputs(text, f);
        fclose(f);
        snprintf(cmd, sizeof cmd, "/usr/bin/promtool check metrics < %s", path);
        int rc = system(cmd);
        CHECKF(rc == 0, "promtool check metrics failed (%d) on %s", rc, path);
        if (rc == 0) fw_test_rmtree(dir);
        free(dir);
    } else {
        fprintf(stderr, "promtool not installed: format check skipped\n");
    }
    free(text);
}

int main(void) {
    RUN(test_keys);
    RUN(test_round_trip);
    RUN(test_bad_records);
    RUN(test_metrics);
    return fw_test_summary();
}
