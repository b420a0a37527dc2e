/* Errors and logging: codes map to messages and names, details are per
 * thread, log lines are key=value with the function name, levels filter. */
#include "fw_err.h"
#include "fw_log.h"
#include "fw_test.h"
#include "fw_time.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

static void test_errors(void) {
    CHECK_EQ_STR(fw_strerror(FW_OK), "success");
    CHECK_EQ_STR(fw_strerror(FW_EPROTO), "malformed message");
    CHECK_EQ_STR(fw_errname(FW_ECONFLICT), "FW_ECONFLICT");
    CHECK_EQ_STR(fw_strerror(-9999), "unknown error");
    CHECK_EQ_INT(fw_err_set(FW_EINVAL, "key %s at line %d", "port", 7), FW_EINVAL);
    CHECK_EQ_STR(fw_err_detail(), "key port at line 7");
    fw_err_clear();
    CHECK_EQ_STR(fw_err_detail(), "");
    /* Wrapping the current detail in a new one keeps it intact. */
    fw_err_set(FW_EIO, "disk full");
    fw_err_set(FW_EIO, "saving %s: %s", "ckpt-10", fw_err_detail());
    CHECK_EQ_STR(fw_err_detail(), "saving ckpt-10: disk full");
    CHECK_EQ_INT(fw_err_from_errno(ENOENT), FW_ENOTFOUND);
    CHECK_EQ_INT(fw_err_from_errno(ENOSPC), FW_ERESOURCE);
    CHECK_EQ_INT(fw_err_from_errno(EACCES), FW_EPERM);
    CHECK_EQ_INT(fw_err_from_errno(EBADF), FW_EIO);
}

static void *s_thread(void *arg) {
    (void)arg;
    fw_err_set(FW_EIO, "from thread");
    return NULL;
}

static void test_detail_per_thread(void) {
    fw_err_set(FW_EINVAL, "main");
    pthread_t t;
    pthread_create(&t, NULL, s_thread, NULL);
    pthread_join(t, NULL);
    CHECK_EQ_STR(fw_err_detail(), "main");
}

static void test_log_file(void) {
    char *dir = fw_test_tmpdir("log");
    REQUIRE(dir);
    char path[512];
    snprintf(path, sizeof path, "%s/x.log", dir);
    CHECK_EQ_INT(fw_log_open(path), 0);
    fw_log_set_name("t1");
    fw_log_set_level(FW_LOG_INFO);
    fw_info("event=hello n=%d", 3);
    fw_debug("event=hidden");
    fw_error("event=bad");
    fw_log_open(NULL);
    FILE *f = fopen(path, "r");
    REQUIRE(f);
    char line[512];
    CHECK(fgets(line, sizeof line, f) != NULL);
    CHECK(strstr(line, " INFO  proc=t1 func=test_log_file event=hello n=3\n") != NULL);
    CHECK(fgets(line, sizeof line, f) != NULL);
    CHECK(strstr(line, "ERROR proc=t1 func=test_log_file event=bad") != NULL);
    CHECK(fgets(line, sizeof line, f) == NULL); /* the debug line was filtered */
    fclose(f);
    char q[64];
    CHECK_EQ_STR(fw_log_quote("plain", q, sizeof q), "plain");
    CHECK_EQ_STR(fw_log_quote("a b\"c", q, sizeof q), "\"a b\\\"c\"");
    CHECK_EQ_STR(fw_log_quote("", q, sizeof q), "\"\"");
    CHECK_EQ_INT(fw_log_parse_level("warn"), FW_LOG_WARN);
    CHECK_EQ_INT(fw_log_parse_level("loud"), -1);
    fw_test_rmtree(dir);
    free(dir);
}

static void test_clock(void) {
    int64_t t0 = fw_mono_ms();
    int64_t dl = fw_deadline_ms(30);
    CHECK(fw_remaining_ms(dl) > 0);
    fw_sleep_ms(40);
    CHECK(fw_mono_ms() - t0 >= 40);
    CHECK_EQ_INT(fw_remaining_ms(dl), 0);
    char buf[40];
    fw_wall_format(0, buf, sizeof buf);
    CHECK_EQ_STR(buf, "1970-01-01T00:00:00.000Z");
}

int main(void) {
    RUN(test_errors);
    RUN(test_detail_per_thread);
    RUN(test_log_file);
    RUN(test_clock);
    return fw_test_summary();
}
