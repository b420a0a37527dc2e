/* test_agent_journal.c - the results journal and the persisted epoch fence. */
#include "agent_epoch.h"
#include "agent_journal.h"
#include "fw_err.h"
#include "fw_file.h"
#include "fw_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static agent_result_t s_result(const char *task, uint64_t attempt, const char *status) {
    agent_result_t r;
    memset(&r, 0, sizeof r);
    snprintf(r.job_id, sizeof r.job_id, "j-000001");
    snprintf(r.task_id, sizeof r.task_id, "%s", task);
    r.attempt = attempt;
    snprintf(r.status, sizeof r.status, "%s", status);
    r.has_exit_code = true;
    r.exit_code = strcmp(status, "succeeded") == 0 ? 0 : -9;
    r.error = strcmp(status, "succeeded") == 0 ? NULL : strdup("killed by signal 9 \"quoted\"");
    r.result = strdup("{\"exit_code\":0,\"log_tail\":\"h\\u00e9llo\\n\"}");
    r.finished_ms = 1700000000123ull;
    return r;
}

static bool s_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static void test_ids(void) {
    CHECK(agent_id_ok("j-000042.17"));
    CHECK(agent_id_ok("A_b-c.9"));
    CHECK(!agent_id_ok(""));
    CHECK(!agent_id_ok(NULL));
    CHECK(!agent_id_ok(".."));
    CHECK(!agent_id_ok(".hidden"));
    CHECK(!agent_id_ok("../etc/passwd"));
    CHECK(!agent_id_ok("a/b"));
    CHECK(!agent_id_ok("a b"));
    CHECK(!agent_id_ok("caf\xc3\xa9"));
    char big[200];
    memset(big, 'x', sizeof big);
    big[128] = '\0';
    CHECK(agent_id_ok(big));
    big[128] = 'x';
    big[129] = '\0';
    CHECK(!agent_id_ok(big));
}

static void test_roundtrip(void) {
    char *tmp = fw_test_tmpdir("journal");
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/journal", tmp); /* created on first put */
    agent_result_t a = s_result("j-000001.3", 1, "failed");
    agent_result_t b = s_result("j-000001.1", 2, "succeeded");
    CHECK_EQ_INT(agent_journal_put(dir, &a), 0);
    CHECK_EQ_INT(agent_journal_put(dir, &b), 0);
    CHECK_EQ_INT(agent_journal_put(dir, &b), 0); /* idempotent overwrite */
    snprintf(path, sizeof path, "%s/j-000001.3.1", dir);
    CHECK(s_exists(path));
    snprintf(path, sizeof path, "%s/j-000001.3.1.new", dir);
    CHECK(!s_exists(path));

    agent_result_t *v = NULL;
    size_t n = 0;
    REQUIRE(agent_journal_load(dir, &v, &n) == 0);
    REQUIRE(n == 2);
    /* Sorted by task id. */
    CHECK_EQ_STR(v[0].task_id, "j-000001.1");
    CHECK_EQ_INT(v[0].attempt, 2);
    CHECK_EQ_STR(v[0].status, "succeeded");
    CHECK(v[0].error == NULL);
    CHECK_EQ_STR(v[1].task_id, "j-000001.3");
    CHECK_EQ_STR(v[1].job_id, "j-000001");
    CHECK_EQ_INT(v[1].exit_code, -9);
    CHECK(v[1].has_exit_code);
    CHECK_EQ_STR(v[1].error, a.error);
    CHECK_EQ_STR(v[1].result, a.result);
    CHECK_EQ_INT(v[1].finished_ms, 1700000000123ull);
    agent_journal_free(&v, n);
    CHECK(v == NULL);

    CHECK_EQ_INT(agent_journal_remove(dir, "j-000001.3", 1), 0);
    CHECK_EQ_INT(agent_journal_remove(dir, "j-000001.3", 1), 0); /* twice: fine */
    CHECK_EQ_INT(agent_journal_remove(dir, "../x", 1), FW_EINVAL);
    REQUIRE(agent_journal_load(dir, &v, &n) == 0);
    CHECK_EQ_INT(n, 1);
    agent_journal_free(&v, n);
    /* Bad ids never become paths. */
    agent_result_t bad = s_result("../../etc/x", 1, "failed");
    CHECK_EQ_INT(agent_journal_put(dir, &bad), FW_EINVAL);
    agent_result_clear(&bad);
    agent_result_clear(&a);
    agent_result_clear(&b);
    fw_test_rmtree(tmp);
    free(tmp);
}

static void test_damage(void) {
    char *tmp = fw_test_tmpdir("journal-bad");
    char path[600];
    agent_result_t a = s_result("t.1", 1, "succeeded");
    CHECK_EQ_INT(agent_journal_put(tmp, &a), 0);
    agent_result_clear(&a);
    /* An interrupted write leaves a .new: removed, not loaded. */
    snprintf(path, sizeof path, "%s/t.2.1.new", tmp);
    CHECK_EQ_INT(fw_file_write_atomic(path, "{", 1, 0644), 0);
    /* Garbage, wrong schema, missing field, bad id inside: set aside. */
    static const char *bad[] = {
        "not json",
        "{\"schema\":2,\"job_id\":\"j\",\"task_id\":\"t.3\",\"attempt\":1,\"status\":\"failed\"}",
        "{\"schema\":1,\"job_id\":\"j\",\"attempt\":1,\"status\":\"failed\"}",
        "{\"schema\":1,\"job_id\":\"j\",\"task_id\":\"../t\",\"attempt\":1,\"status\":\"x\"}",
        "{\"schema\":1,\"job_id\":\"j\",\"task_id\":\"t.5\",\"attempt\":0,\"status\":\"x\"}",
    };
    for (int i = 0; i < 5; i++) {
        snprintf(path, sizeof path, "%s/bad%d.1", tmp, i);
        CHECK_EQ_INT(fw_file_write_atomic(path, bad[i], strlen(bad[i]), 0644), 0);
    }
    agent_result_t *v = NULL;
    size_t n = 0;
    REQUIRE(agent_journal_load(tmp, &v, &n) == 0);
    CHECK_EQ_INT(n, 1);
    if (n == 1) CHECK_EQ_STR(v[0].task_id, "t.1");
    agent_journal_free(&v, n);
    snprintf(path, sizeof path, "%s/t.2.1.new", tmp);
    CHECK(!s_exists(path));
    snprintf(path, sizeof path, "%s/bad0.1.corrupt", tmp);
    CHECK(s_exists(path));
    snprintf(path, sizeof path, "%s/bad0.1", tmp);
    CHECK(!s_exists(path));
    /* A second load is stable: the .corrupt files are skipped. */
    REQUIRE(agent_journal_load(tmp, &v, &n) == 0);
    CHECK_EQ_INT(n, 1);
    agent_journal_free(&v, n);
    /* A missing directory is an empty journal. */
    snprintf(path, sizeof path, "%s/none", tmp);
    REQUIRE(agent_journal_load(path, &v, &n) == 0);
    CHECK_EQ_INT(n, 0);
    fw_test_rmtree(tmp);
    free(tmp);
}

static void test_epoch(void) {
    char *tmp = fw_test_tmpdir("epoch");
    char path[600];
    snprintf(path, sizeof path, "%s/epoch", tmp);
    agent_epoch_t *e = agent_epoch_open(path);
    REQUIRE(e != NULL);
    CHECK_EQ_INT(agent_epoch_get(e), 0);
    CHECK_EQ_INT(agent_epoch_check(e, 0), AGENT_EPOCH_SAME);
    CHECK_EQ_INT(agent_epoch_check(e, 7), AGENT_EPOCH_NEW);
    CHECK_EQ_INT(agent_epoch_last_error(e), 0);
    CHECK_EQ_INT(agent_epoch_check(e, 7), AGENT_EPOCH_SAME);
    CHECK_EQ_INT(agent_epoch_check(e, 6), AGENT_EPOCH_STALE);
    CHECK_EQ_INT(agent_epoch_check(e, 0), AGENT_EPOCH_STALE);
    CHECK_EQ_INT(agent_epoch_get(e), 7);
    CHECK_EQ_INT(agent_epoch_check(e, 12345678901234ull), AGENT_EPOCH_NEW);
    agent_epoch_destroy(&e);
    CHECK(e == NULL);
    /* A restart keeps the fence. */
    e = agent_epoch_open(path);
    REQUIRE(e != NULL);
    CHECK_EQ_INT(agent_epoch_get(e), 12345678901234ull);
    CHECK_EQ_INT(agent_epoch_check(e, 7), AGENT_EPOCH_STALE);
    agent_epoch_destroy(&e);
    /* A damaged file refuses to open rather than forget the fence. */
    static const char *bad[] = {"", "garbage", "flywheel-epoch 1 -5\n", "flywheel-epoch 1 12x\n",
                                "other 1 5\n", "flywheel-epoch 1 5 extra\n"};
    for (int i = 0; i < 6; i++) {
        CHECK_EQ_INT(fw_file_write_atomic(path, bad[i], strlen(bad[i]), 0644), 0);
        e = agent_epoch_open(path);
        CHECKF(e == NULL, "accepted \"%s\"", bad[i]);
        agent_epoch_destroy(&e);
    }
    CHECK_EQ_INT(fw_file_write_atomic(path, "flywheel-epoch 2 5\n", 19, 0644), 0);
    CHECK(agent_epoch_open(path) == NULL);
    CHECK(strstr(fw_err_detail(), "version") != NULL);
    /* An unwritable location: the fence still holds in memory. */
    snprintf(path, sizeof path, "%s/no/such/dir/epoch", tmp);
    e = agent_epoch_open(path);
    REQUIRE(e != NULL);
    CHECK_EQ_INT(agent_epoch_check(e, 3), AGENT_EPOCH_NEW);
    CHECK(agent_epoch_last_error(e) < 0);
    CHECK_EQ_INT(agent_epoch_check(e, 2), AGENT_EPOCH_STALE);
    agent_epoch_destroy(&e);
    fw_test_rmtree(tmp);
    free(tmp);
}

int main(void) {
    RUN(test_ids);
    RUN(test_roundtrip);
    RUN(test_damage);
    RUN(test_epoch);
    return fw_test_summary();
}
