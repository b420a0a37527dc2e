/* test_agent_log.c - per-attempt task logs: rotation and offset reads. */
#include "agent_log.h"
#include "fw_err.h"
#include "fw_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Byte i of the test stream: a recognisable, position-dependent pattern. */
static uint8_t s_byte(uint64_t i) { return (uint8_t)('a' + (i * 7 + i / 26) % 26); }

static bool s_exists(const char *dir, const char *name) {
    char path[700];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) == 0;
}

/* Read everything from `from` by following data_offset, as `logs -f` does. */
static uint64_t s_read_all(const char *dir, uint64_t from, uint64_t *first, bool *ok) {
    uint64_t off = from, got = 0;
    *first = UINT64_MAX;
    *ok = true;
    for (int guard = 0; guard < 10000; guard++) {
        uint8_t *data;
        size_t len;
        uint64_t at, end;
        if (agent_log_read(dir, 1, off, 700, &data, &len, &at, &end) < 0) {
            *ok = false;
            return got;
        }
        if (*first == UINT64_MAX) *first = at;
        for (size_t i = 0; i < len; i++)
            if (data[i] != s_byte(at + i)) *ok = false;
        free(data);
        if (len == 0) break;
        got += len;
        off = at + len;
    }
    return got;
}

static void test_rotation(void) {
    char *tmp = fw_test_tmpdir("log");
    char dir[600];
    snprintf(dir, sizeof dir, "%s/logs/j-1.0", tmp);
    agent_log_t *l = agent_log_open(dir, 1, 1024, 3);
    REQUIRE(l != NULL);
    uint8_t chunk[300];
    uint64_t total = 0;
    /* 10 KiB in uneven writes, some larger than the file limit. */
    for (int w = 0; total < 10240; w++) {
        size_t n = w % 5 == 4 ? 2500 : 1 + (size_t)(w * 37) % 299;
        uint8_t *buf = n > sizeof chunk ? malloc(n) : chunk;
        for (size_t i = 0; i < n; i++) buf[i] = s_byte(total + i);
        CHECK_EQ_INT(agent_log_write(l, buf, n), 0);
        total += n;
        if (buf != chunk) free(buf);
    }
    CHECK_EQ_INT(agent_log_size(l), total);
    /* keep = 3: the current file and two older ones, never more. */
    CHECK(s_exists(dir, "1.log"));
    CHECK(s_exists(dir, "1.log.1"));
    CHECK(s_exists(dir, "1.log.2"));
    CHECK(!s_exists(dir, "1.log.3"));
    CHECK(s_exists(dir, "1.log.base"));

    uint8_t *data;
    size_t len;
    uint64_t at, end;
    /* Offset 0 was rotated away: the read starts at the oldest kept byte. */
    REQUIRE(agent_log_read(dir, 1, 0, 100000, &data, &len, &at, &end) == 0);
    CHECK_EQ_INT(end, total);
    CHECK(at > 0);
    CHECK(at >= total - 3 * 1024 && at <= total - 2 * 1024);
    CHECK(len > 0 && len <= 1024); /* one file at a time */
    bool same = true;
    for (size_t i = 0; i < len; i++) same &= data[i] == s_byte(at + i);
    CHECK(same);
    free(data);
    /* Following the offsets reads every kept byte exactly once, in order. */
    uint64_t first;
    bool ok;
    uint64_t got = s_read_all(dir, 0, &first, &ok);
    CHECK(ok);
    CHECK_EQ_INT(first + got, total);
    /* An offset in the middle of a rotated file. */
    REQUIRE(agent_log_read(dir, 1, total - 1500, 10, &data, &len, &at, &end) == 0);
    CHECK_EQ_INT(at, total - 1500);
    CHECK_EQ_INT(len, 10);
    same = true;
    for (size_t i = 0; i < len; i++) same &= data[i] == s_byte(at + i);
    CHECK(same);
    free(data);
    /* At and past the end: empty, not an error. */
    REQUIRE(agent_log_read(dir, 1, total, 10, &data, &len, &at, &end) == 0);
    CHECK_EQ_INT(len, 0);
    CHECK_EQ_INT(at, total);
    free(data);
    REQUIRE(agent_log_read(dir, 1, total + 50, 10, &data, &len, &at, &end) == 0);
    CHECK_EQ_INT(len, 0);
    CHECK_EQ_INT(at, total);
    free(data);
    agent_log_destroy(&l);
    CHECK(l == NULL);

    /* Reopening (an agent restart) continues at the logical end. */
    l = agent_log_open(dir, 1, 1024, 3);
    REQUIRE(l != NULL);
    CHECK_EQ_INT(agent_log_size(l), total);
    uint8_t more[10];
    for (int i = 0; i < 10; i++) more[i] = s_byte(total + (uint64_t)i);
    CHECK_EQ_INT(agent_log_write(l, more, 10), 0);
    got = s_read_all(dir, total - 5, &first, &ok);
    CHECK(ok);
    CHECK_EQ_INT(first, total - 5);
    CHECK_EQ_INT(got, 15);
    agent_log_destroy(&l);

    /* Another attempt is another file; a missing attempt is FW_ENOTFOUND. */
    CHECK_EQ_INT(agent_log_read(dir, 2, 0, 10, &data, &len, &at, &end), FW_ENOTFOUND);
    CHECK(agent_log_open(dir, 2, 10, 3) == NULL); /* max_bytes below 1 KiB */
    CHECK(agent_log_open(dir, 2, 1024, 0) == NULL);
    fw_test_rmtree(tmp);
    free(tmp);
}

static void test_keep_one(void) {
    char *tmp = fw_test_tmpdir("log1");
    agent_log_t *l = agent_log_open(tmp, 3, 1024, 1);
    REQUIRE(l != NULL);
    uint8_t buf[3000];
    for (int i = 0; i < 3000; i++) buf[i] = s_byte((uint64_t)i);
    CHECK_EQ_INT(agent_log_write(l, buf, 3000), 0);
    CHECK(s_exists(tmp, "3.log"));
    CHECK(!s_exists(tmp, "3.log.1"));
    uint8_t *data;
    size_t len;
    uint64_t at, end;
    REQUIRE(agent_log_read(tmp, 3, 0, 5000, &data, &len, &at, &end) == 0);
    CHECK_EQ_INT(end, 3000);
    CHECK_EQ_INT(at, 2048);
    CHECK_EQ_INT(len, 952);
    CHECK(len == 0 || data[0] == s_byte(2048));
    free(data);
    agent_log_destroy(&l);
    fw_test_rmtree(tmp);
    free(tmp);
}

int main(void) {
    RUN(test_rotation);
    RUN(test_keep_one);
    return fw_test_summary();
}
