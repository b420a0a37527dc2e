/* Files: atomic writes show old or new content and leave no ".new" behind,
 * bounded reads enforce their limit, mkdir -p and the nftw-based remove-tree
 * behave like their shell namesakes without following links out of a tree. */
#include "fw_err.h"
#include "fw_file.h"
#include "fw_test.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char *s_dir;

/* A path under the test directory; valid for the next 8 calls. */
static const char *s_path(const char *rel) {
    static char buf[8][512];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", s_dir, rel);
    return buf[k];
}

static bool s_exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

/* Whether path holds exactly text. */
static bool s_holds(const char *path, const char *text) {
    char *got = NULL;
    size_t len = 0;
    if (fw_file_read(path, 1 << 20, &got, &len) < 0) return false;
    bool ok = len == strlen(text) && memcmp(got, text, len) == 0;
    free(got);
    return ok;
}

static void test_atomic_write(void) {
    char p[512];
    snprintf(p, sizeof p, "%s", s_path("state.json"));
    CHECK_EQ_INT(fw_file_write_atomic(p, "old", 3, 0644), 0);
    CHECK(s_holds(p, "old"));
    CHECK_EQ_INT(fw_file_write_atomic(p, "new content", 11, 0644), 0);
    CHECK(s_holds(p, "new content"));
    CHECK(!s_exists(s_path("state.json.new")));

    /* Streaming: nothing visible until commit; abort keeps the old file. */
    fw_file_atomic *w = fw_file_atomic_open(p, 0600);
    REQUIRE(w);
    CHECK(fw_file_atomic_fd(w) >= 0);
    CHECK_EQ_INT(fw_file_atomic_write(w, "part1,", 6), 0);
    CHECK_EQ_INT(fw_file_atomic_write(w, "part2", 5), 0);
    CHECK(s_holds(p, "new content"));
    CHECK(s_exists(s_path("state.json.new")));
    fw_file_atomic_abort(&w);
    CHECK(w == NULL);
    fw_file_atomic_abort(&w); /* idempotent */
    CHECK(s_holds(p, "new content"));
    CHECK(!s_exists(s_path("state.json.new")));

    w = fw_file_atomic_open(p, 0600);
    REQUIRE(w);
    CHECK_EQ_INT(fw_file_atomic_write(w, "part1,", 6), 0);
    CHECK_EQ_INT(write(fw_file_atomic_fd(w), "fd,", 3), 3);
    CHECK_EQ_INT(fw_file_atomic_write(w, "part2", 5), 0);
    CHECK_EQ_INT(fw_file_atomic_commit(&w), 0);
    CHECK(w == NULL);
    CHECK(s_holds(p, "part1,fd,part2"));
    struct stat st;
    CHECK(stat(p, &st) == 0 && (st.st_mode & 0077) == 0); /* created with 0600 */

    /* A ".new" left by a crashed writer is simply replaced. */
    CHECK_EQ_INT(fw_file_write_atomic(s_path("state.json.new"), "debris", 6, 0644), 0);
    CHECK_EQ_INT(fw_file_write_atomic(p, "after crash", 11, 0644), 0);
    CHECK(s_holds(p, "after crash"));
    CHECK(!s_exists(s_path("state.json.new")));

    /* A missing directory is a clean error naming the file. */
    CHECK_EQ_INT(fw_file_write_atomic(s_path("no/such/dir/x"), "x", 1, 0644), FW_ENOTFOUND);
    CHECK(strstr(fw_err_detail(), "no/such/dir/x.new") != NULL);
    CHECK_EQ_INT(fw_file_write_atomic("", "x", 1, 0644), FW_EINVAL);
    /* Empty content is a valid (empty) file. */
    CHECK_EQ_INT(fw_file_write_atomic(p, "", 0, 0644), 0);
    CHECK(s_holds(p, ""));
}

/* A reader racing a writer must always see one whole version. */
static atomic_int s_stop;
static atomic_int s_torn;
static atomic_int s_reads;

#define S_BIG (64 * 1024)

static void *s_reader(void *arg) {
    const char *p = arg;
    while (!atomic_load(&s_stop)) {
        char *got = NULL;
        size_t len = 0;
        if (fw_file_read(p, 1 << 20, &got, &len) < 0) {
            atomic_fetch_add(&s_torn, 1);
            continue;
        }
        /* Versions are S_BIG copies of one letter: every byte must match the first. */
        bool whole = len == S_BIG;
        for (size_t i = 0; whole && i < len; i++) whole = got[i] == got[0];
        if (!whole) atomic_fetch_add(&s_torn, 1);
        atomic_fetch_add(&s_reads, 1);
        free(got);
    }
    return NULL;
}

static void test_atomic_old_or_new(void) {
    char p[512];
    snprintf(p, sizeof p, "%s", s_path("race"));
    char *buf = malloc(S_BIG);
    REQUIRE(buf);
    memset(buf, 'A', S_BIG);
    REQUIRE(fw_file_write_atomic(p, buf, S_BIG, 0644) == 0);
    pthread_t t;
    char *pc = strdup(p);
    pthread_create(&t, NULL, s_reader, pc);
    for (int i = 0; i < 60; i++) {
        memset(buf, 'A' + i % 26, S_BIG);
        CHECK_EQ_INT(fw_file_write_atomic(p, buf, S_BIG, 0644), 0);
    }
    atomic_store(&s_stop, 1);
    pthread_join(t, NULL);
    CHECK_EQ_INT(atomic_load(&s_torn), 0);
    CHECK(atomic_load(&s_reads) > 0);
    free(pc);
    free(buf);
}

static void test_read(void) {
    char p[512];
    snprintf(p, sizeof p, "%s", s_path("hundred"));
    char data[100];
    memset(data, 'x', sizeof data);
    REQUIRE(fw_file_write_atomic(p, data, sizeof data, 0644) == 0);
    char *got = (char *)1;
    size_t len = 7;
    CHECK_EQ_INT(fw_file_read(p, 99, &got, &len), FW_ETOOBIG);
    CHECK(got == NULL);
    CHECK_EQ_INT(len, 0);
    CHECK(strstr(fw_err_detail(), "hundred") != NULL);
    CHECK_EQ_INT(fw_file_read(p, 100, &got, &len), 0);
    CHECK_EQ_INT(len, 100);
    CHECK(got && got[99] == 'x' && got[100] == '\0');
    free(got);
    CHECK_EQ_INT(fw_file_read(p, 100, &got, NULL), 0);
    free(got);
    /* Files whose st_size is 0 but which hold data (procfs) are read to the end. */
    CHECK_EQ_INT(fw_file_read("/proc/self/status", 1 << 20, &got, &len), 0);
    CHECK(got && len > 0 && strstr(got, "Name:") != NULL);
    free(got);
    CHECK_EQ_INT(fw_file_read("/proc/self/status", 10, &got, &len), FW_ETOOBIG);
    CHECK_EQ_INT(fw_file_read(s_path("absent"), 100, &got, &len), FW_ENOTFOUND);
    CHECK(strstr(fw_err_detail(), "absent") != NULL);
    CHECK_EQ_INT(fw_file_read(s_dir, 100, &got, &len), FW_EIO); /* a directory */
    if (geteuid() != 0) {                                       /* root reads anything */
        chmod(p, 0);
        CHECK_EQ_INT(fw_file_read(p, 100, &got, &len), FW_EPERM);
        chmod(p, 0644);
    }
}

static void test_mkdirs(void) {
    CHECK_EQ_INT(fw_file_mkdirs(s_path("m/a/b//c/"), 0755), 0);
    struct stat st;
    CHECK(stat(s_path("m/a/b/c"), &st) == 0 && S_ISDIR(st.st_mode));
    CHECK_EQ_INT(fw_file_mkdirs(s_path("m/a/b/c"), 0755), 0); /* exists: fine */
    REQUIRE(fw_file_write_atomic(s_path("m/file"), "f", 1, 0644) == 0);
    CHECK_EQ_INT(fw_file_mkdirs(s_path("m/file/sub"), 0755), FW_EEXIST);
    CHECK(strstr(fw_err_detail(), "m/file") != NULL);
    CHECK_EQ_INT(fw_file_mkdirs("", 0755), FW_EINVAL);
}

static void test_remove_tree(void) {
    /* A tree with files, empty and nested directories and links. */
    REQUIRE(fw_file_mkdirs(s_path("t/a/b/c"), 0755) == 0);
    REQUIRE(fw_file_mkdirs(s_path("t/empty"), 0755) == 0);
    REQUIRE(fw_file_write_atomic(s_path("t/a/f1"), "1", 1, 0644) == 0);
    REQUIRE(fw_file_write_atomic(s_path("t/a/b/c/f2"), "2", 1, 0644) == 0);
    /* Links pointing out of the tree: removal must not follow them. */
    REQUIRE(fw_file_mkdirs(s_path("outside"), 0755) == 0);
    REQUIRE(fw_file_write_atomic(s_path("outside/keep"), "k", 1, 0644) == 0);
    REQUIRE(symlink(s_path("outside"), s_path("t/a/link-dir")) == 0);
    REQUIRE(symlink(s_path("outside/keep"), s_path("t/link-file")) == 0);
    CHECK_EQ_INT(fw_file_remove_tree(s_path("t")), 0);
    CHECK(!s_exists(s_path("t")));
    CHECK(s_holds(s_path("outside/keep"), "k"));

    /* A link given as the root is removed itself, not its target. */
    REQUIRE(symlink(s_path("outside"), s_path("rootlink")) == 0);
    CHECK_EQ_INT(fw_file_remove_tree(s_path("rootlink")), 0);
    CHECK(!s_exists(s_path("rootlink")));
    CHECK(s_holds(s_path("outside/keep"), "k"));

    /* Single file, missing path, and trailing slash. */
    CHECK_EQ_INT(fw_file_remove_tree(s_path("outside/keep")), 0);
    CHECK(!s_exists(s_path("outside/keep")));
    CHECK_EQ_INT(fw_file_remove_tree(s_path("never-was")), 0);
    CHECK_EQ_INT(fw_file_remove_tree(s_path("outside/")), 0);
    CHECK(!s_exists(s_path("outside")));

    /* Paths that are never removed. */
    const char *refused[] = {"", "/", "//", ".", "..", "a/..", "a/.", "/tmp/.."};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        CHECKF(fw_file_remove_tree(refused[i]) == FW_EINVAL, "'%s'", refused[i]);
        CHECK(strstr(fw_err_detail(), "refusing") != NULL);
    }
    CHECK_EQ_INT(fw_file_remove_tree(NULL), FW_EINVAL);
    CHECK(s_exists("/tmp"));
}

static void test_fsync_dir(void) {
    CHECK_EQ_INT(fw_file_fsync_dir(s_dir), 0);
    CHECK_EQ_INT(fw_file_fsync_dir(s_path("nope")), FW_ENOTFOUND);
}

int main(void) {
    s_dir = fw_test_tmpdir("file");
    if (!s_dir) return 1;
    RUN(test_atomic_write);
    RUN(test_atomic_old_or_new);
    RUN(test_read);
    RUN(test_mkdirs);
    RUN(test_remove_tree);
    RUN(test_fsync_dir);
    CHECK_EQ_INT(fw_file_remove_tree(s_dir), 0);
    CHECK(!s_exists(s_dir));
    free(s_dir);
    return fw_test_summary();
}
