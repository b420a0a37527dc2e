/* Fault injection: the counting rules of fw_fault, FW_FAULT from the
 * environment, and SQLite-style loops that fail the N-th fault point of an
 * atomic write for N = 1, 2, 3 ... until it succeeds, checking each time a
 * clean error, the old content (or, after the rename, the new) and no
 * ".new" left behind. Built with FW_FAULT_INJECTION=1 (tests/config.cmake). */
#include "fw_err.h"
#include "fw_fault.h"
#include "fw_file.h"
#include "fw_log.h"
#include "fw_test.h"

#include <stdbool.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef FW_FAULT_INJECTION
#error "test_fault must be built with FW_FAULT_INJECTION"
#endif

static char *s_dir;

static bool s_holds(const char *path, const char *text) {
    char *got = NULL;
    size_t len = 0;
    if (fw_file_read(path, 1 << 20, &got, &len) < 0) return false;
    bool ok = len == strlen(text) && memcmp(got, text, len) == 0;
    free(got);
    return ok;
}

static bool s_exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

/* Runs first: FW_FAULT was set by main before any fault point was hit. */
static void test_env(void) {
    CHECK_EQ_INT(fw_fault_hit("env.a"), 0);
    CHECK_EQ_INT(fw_fault_hit("env.a"), 1); /* env.a:2 */
    CHECK_EQ_INT(fw_fault_hit("env.a"), 0);
    CHECK_EQ_INT(fw_fault_hit("env.b"), 1); /* env.b:every:1 */
    CHECK_EQ_INT(fw_fault_hit("env.b"), 1);
    fw_fault_reset();
    CHECK_EQ_INT(fw_fault_hit("env.b"), 0); /* reset disarms, and does not re-read FW_FAULT */
}

static void test_counting(void) {
    fw_fault_reset();
    CHECK_EQ_INT(fw_fault_calls("p.x"), 0);
    fw_fault_arm("p.x", 3);
    int got[5];
    for (int i = 0; i < 5; i++) got[i] = fw_fault_hit("p.x");
    CHECK(!got[0] && !got[1] && got[2] && !got[3] && !got[4]); /* once */
    CHECK_EQ_INT(fw_fault_calls("p.x"), 5);
    CHECK_EQ_INT(fw_fault_fired(), 1);

    /* "from now": arming counts from the current call. */
    fw_fault_arm("p.x", 1);
    CHECK_EQ_INT(fw_fault_hit("p.x"), 1);

    fw_fault_arm_every("p.y", 2);
    for (int i = 0; i < 4; i++) got[i] = fw_fault_hit("p.y");
    CHECK(!got[0] && got[1] && !got[2] && got[3]);

    /* The wildcard counts the hits of all points together. */
    fw_fault_reset();
    fw_fault_arm(FW_FAULT_ANY, 3);
    CHECK_EQ_INT(fw_fault_hit("p.x"), 0);
    CHECK_EQ_INT(fw_fault_hit("p.y"), 0);
    CHECK_EQ_INT(fw_fault_hit("p.z"), 1);
    CHECK_EQ_INT(fw_fault_hit("p.x"), 0);
    CHECK_EQ_INT(fw_fault_calls(FW_FAULT_ANY), 4);
    CHECK_EQ_INT(fw_fault_calls("p.x"), 2);
    CHECK_EQ_INT(fw_fault_fired(), 1);
    fw_fault_reset();
    CHECK_EQ_INT(fw_fault_fired(), 0);
    CHECK_EQ_INT(fw_fault_calls("p.x"), 0);
    fw_fault_arm("p.x", 0); /* n < 1 arms nothing */
    CHECK_EQ_INT(fw_fault_hit("p.x"), 0);
}

static void test_load_spec(void) {
    fw_fault_reset();
    CHECK_EQ_INT(fw_fault_load("q.a:1,q.b:every:2"), 0);
    CHECK_EQ_INT(fw_fault_hit("q.a"), 1);
    CHECK_EQ_INT(fw_fault_hit("q.b"), 0);
    CHECK_EQ_INT(fw_fault_hit("q.b"), 1);
    const char *bad[] = {"q.a", "q.a:0", ":3", "q.a:x", "q.a:every:", "q.a:2,", "q.a:2x", ","};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECKF(fw_fault_load(bad[i]) == FW_EINVAL, "'%s'", bad[i]);
        CHECKF(strstr(fw_err_detail(), "FW_FAULT") != NULL, "%s", fw_err_detail());
    }
    /* All or nothing: a bad item arms none of the good ones. */
    fw_fault_reset();
    CHECK_EQ_INT(fw_fault_load("q.c:1,q.d:zero"), FW_EINVAL);
    CHECK(strstr(fw_err_detail(), "q.d:zero") != NULL);
    CHECK_EQ_INT(fw_fault_hit("q.c"), 0);
}

/* Fail the N-th fault point of a one-shot atomic write, N = 1, 2, ... */
static void test_atomic_write_loop(void) {
    char p[512], tmp[520];
    snprintf(p, sizeof p, "%s/loop", s_dir);
    snprintf(tmp, sizeof tmp, "%s.new", p);
    int n;
    for (n = 1; n < 50; n++) {
        fw_fault_reset();
        REQUIRE(fw_file_write_atomic(p, "old", 3, 0644) == 0);
        fw_fault_reset();
        fw_fault_arm(FW_FAULT_ANY, n);
        fw_err_clear();
        int rc = fw_file_write_atomic(p, "new!", 4, 0644);
        int fired = fw_fault_fired();
        /* Only the directory fsync comes after the rename. */
        bool after_rename = fw_fault_calls("file.dirfsync") > 0;
        fw_fault_reset(); /* the checks below read files through fault points too */
        if (fired == 0) {
            CHECK_EQ_INT(rc, 0);
            CHECK(s_holds(p, "new!"));
            break;
        }
        CHECKF(rc == FW_EIO, "n=%d rc=%d", n, rc);
        CHECKF(strstr(fw_err_detail(), "Input/output error") != NULL, "n=%d: %s", n,
               fw_err_detail());
        CHECKF(s_holds(p, after_rename ? "new!" : "old"), "n=%d", n);
        CHECKF(!s_exists(tmp), "n=%d left %s", n, tmp);
    }
    /* open, write, fsync, rename, dirfsync: five points, the sixth run passes. */
    CHECK_EQ_INT(n, 6);
}

/* The same through the streaming writer with several writes. */
static void test_streaming_loop(void) {
    char p[512], tmp[520];
    snprintf(p, sizeof p, "%s/stream", s_dir);
    snprintf(tmp, sizeof tmp, "%s.new", p);
    int n;
    for (n = 1; n < 50; n++) {
        fw_fault_reset();
        REQUIRE(fw_file_write_atomic(p, "old", 3, 0644) == 0);
        fw_fault_reset();
        fw_fault_arm(FW_FAULT_ANY, n);
        int rc = 0;
        fw_file_atomic *w = fw_file_atomic_open(p, 0644);
        if (!w) rc = FW_EIO;
        for (int k = 0; w && rc == 0 && k < 3; k++) rc = fw_file_atomic_write(w, "abc", 3);
        if (w && rc == 0) rc = fw_file_atomic_commit(&w);
        fw_file_atomic_abort(&w);
        int fired = fw_fault_fired();
        bool after_rename = fw_fault_calls("file.dirfsync") > 0;
        fw_fault_reset();
        if (fired == 0) {
            CHECK_EQ_INT(rc, 0);
            CHECK(s_holds(p, "abcabcabc"));
            break;
        }
        CHECKF(rc < 0, "n=%d", n);
        CHECKF(s_holds(p, after_rename ? "abcabcabc" : "old"), "n=%d", n);
        CHECKF(!s_exists(tmp), "n=%d", n);
    }
    CHECK_EQ_INT(n, 8); /* open, 3 writes, fsync, rename, dirfsync */
}

static void test_named_points(void) {
    char p[512], log[512];
    snprintf(p, sizeof p, "%s/named", s_dir);
    snprintf(log, sizeof log, "%s/fault.log", s_dir);
    fw_fault_reset();
    REQUIRE(fw_file_write_atomic(p, "old", 3, 0644) == 0);
    REQUIRE(fw_log_open(log) == 0);
    fw_fault_arm("file.fsync", 1);
    CHECK_EQ_INT(fw_file_write_atomic(p, "new", 3, 0644), FW_EIO);
    fw_log_open(NULL);
    CHECK(strstr(fw_err_detail(), "fsync") != NULL && strstr(fw_err_detail(), "named.new"));
    CHECK(s_holds(p, "old"));
    /* The injected fault is logged so integration tests can see it fire. */
    char *text = NULL;
    CHECK_EQ_INT(fw_file_read(log, 1 << 16, &text, NULL), 0);
    CHECK(text && strstr(text, "event=fault-injected point=file.fsync call=") != NULL);
    free(text);

    fw_fault_arm("file.rename", 1);
    CHECK_EQ_INT(fw_file_write_atomic(p, "new", 3, 0644), FW_EIO);
    CHECK(strstr(fw_err_detail(), "rename") != NULL);
    CHECK(s_holds(p, "old"));

    /* Every write failing: the writer refuses to commit afterwards. */
    fw_fault_arm_every("file.write", 1);
    fw_file_atomic *w = fw_file_atomic_open(p, 0644);
    REQUIRE(w);
    CHECK_EQ_INT(fw_file_atomic_write(w, "x", 1), FW_EIO);
    fw_fault_reset();
    CHECK_EQ_INT(fw_file_atomic_write(w, "x", 1), FW_EIO); /* sticky */
    CHECK_EQ_INT(fw_file_atomic_commit(&w), FW_EIO);
    CHECK(w == NULL);
    CHECK(s_holds(p, "old"));

    fw_fault_arm("file.read", 1);
    char *out = (char *)1;
    CHECK_EQ_INT(fw_file_read(p, 100, &out, NULL), FW_EIO);
    CHECK(out == NULL);
    CHECK(s_holds(p, "old"));
}

int main(void) {
    setenv("FW_FAULT", "env.a:2,env.b:every:1", 1);
    s_dir = fw_test_tmpdir("fault");
    if (!s_dir) return 1;
    RUN(test_env);
    RUN(test_counting);
    RUN(test_load_spec);
    RUN(test_atomic_write_loop);
    RUN(test_streaming_loop);
    RUN(test_named_points);
    fw_fault_reset();
    CHECK_EQ_INT(fw_file_remove_tree(s_dir), 0);
    free(s_dir);
    return fw_test_summary();
}
