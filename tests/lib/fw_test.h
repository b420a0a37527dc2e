/* fw_test.h - the few assertion macros Flywheel's tests use.
 *
 * A failed CHECK prints file:line and the expression, counts the failure and
 * carries on, so one run shows every broken assertion; REQUIRE also returns
 * from the current function (use it where continuing would crash). main()
 * ends with `return fw_test_summary();`, which prints "N passed, N failed". */
#ifndef FW_TEST_H
#define FW_TEST_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

extern int fw_test_passed;
extern int fw_test_failed;

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (cond) {                                                          \
            fw_test_passed++;                                                \
        } else {                                                             \
            fw_test_failed++;                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                    \
    } while (0)

#define CHECKF(cond, ...)                                                    \
    do {                                                                     \
        if (cond) {                                                          \
            fw_test_passed++;                                                \
        } else {                                                             \
            fw_test_failed++;                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                    \
            fputc('\n', stderr);                                             \
        }                                                                    \
    } while (0)

#define REQUIRE(cond)                                                        \
    do {                                                                     \
        if (cond) {                                                          \
            fw_test_passed++;                                                \
        } else {                                                             \
            fw_test_failed++;                                                \
            fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond); \
            return;                                                          \
        }                                                                    \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                   \
    do {                                                                     \
        long long a_ = (long long)(a), b_ = (long long)(b);                  \
        CHECKF(a_ == b_, "%s = %lld, %s = %lld", #a, a_, #b, b_);            \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                   \
    do {                                                                     \
        const char *a_ = (a), *b_ = (b);                                     \
        CHECKF(a_ && b_ && strcmp(a_, b_) == 0, "%s = \"%s\", %s = \"%s\"", #a, \
               a_ ? a_ : "(null)", #b, b_ ? b_ : "(null)");                  \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                \
    do {                                                                     \
        double a_ = (double)(a), b_ = (double)(b);                           \
        CHECKF((a_ - b_) <= (tol) && (b_ - a_) <= (tol), "%s = %.9g, %s = %.9g, tol %g", \
               #a, a_, #b, b_, (double)(tol));                               \
    } while (0)

/* Run one test function with a header line. */
#define RUN(fn)                                                              \
    do {                                                                     \
        fprintf(stderr, "-- %s\n", #fn);                                     \
        fn();                                                                \
    } while (0)

/* Prints "N passed, N failed" and returns the process exit code. */
int fw_test_summary(void);

/* A fresh temporary directory (removed by fw_test_rmtree); caller frees. */
char *fw_test_tmpdir(const char *tag);
void fw_test_rmtree(const char *path);

/* A TCP port on 127.0.0.1 that was free a moment ago. */
int fw_test_free_port(void);

/* Path of a fixture under ../shared/data (FW_SHARED_DIR), in a static buffer. */
const char *fw_test_shared(const char *rel);

/* Path under the build tree (FW_BINARY_DIR), in a static buffer. */
const char *fw_test_bin(const char *rel);

/* Deterministic pseudo-random numbers for tests (xorshift64*). */
uint64_t fw_test_rand(uint64_t *state);

#endif
