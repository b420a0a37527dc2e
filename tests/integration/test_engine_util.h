/* test_engine_util.h - driving the real flywheel-engine binary from tests.
 *
 * Every test_engine_* executable gets the binary's path as argv[1] (ctest
 * passes $<TARGET_FILE:flywheel-engine>), runs verbs through te_run() with
 * stdout and stderr captured to files, and reads the JSON lines back. */
#ifndef TEST_ENGINE_UTIL_H
#define TEST_ENGINE_UTIL_H

#include <jansson.h>
#include <stddef.h>

/* Remember the binary (argv[1] of the test) and a scratch directory. */
void te_init(int argc, char **argv, const char *tag);
void te_cleanup(void);
/* The scratch directory of this test, and a path inside it (a ring of 32 static buffers: strdup what must live longer). */
const char *te_dir(void);
const char *te_path(const char *name);

/* Result of one run: exit code (>= 0) or -signal, and what it printed
 * (NUL-terminated, owned by the result). */
typedef struct {
    int code;
    char *out;
    char *err;
} te_result;

/* Run flywheel-engine with the NULL-terminated arguments (after the binary),
 * stdin from stdin_path (NULL: /dev/null). */
te_result te_run(const char *stdin_path, const char *const *args);
/* Same, arguments as a NULL-terminated variadic list. */
te_result te_runv(const char *stdin_path, ...) __attribute__((sentinel));
void te_result_free(te_result *r);

/* Start the binary in the background with stdout/stderr to the given
 * files; te_wait returns the exit code (or -signal). */
int te_spawn(const char *const *args, const char *out_path, const char *err_path);
int te_wait(int pid);

/* JSON lines of a result's stdout as an array (caller decrefs); NULL if a
 * line does not parse. */
json_t *te_json_lines(const char *text);
/* The last line that has key, or NULL (borrowed from lines). */
json_t *te_last_with(json_t *lines, const char *key);

/* Write a file (text); 0 / -1. */
int te_write(const char *path, const char *text);
/* Slurp a file (caller frees), NULL when missing. */
char *te_read(const char *path, size_t *len);

/* Split a JSONL corpus: the first `first` non-blank lines to a, the rest to
 * b (b may be NULL: dropped). Lines are copied as they are. */
int te_split_jsonl(const char *src, size_t first, const char *a, const char *b);

/* Max |x - y| over the parameters of two model directories (loaded with the
 * library); -1 when they cannot be loaded or differ in shape. */
double te_param_maxdiff(const char *dir_a, const char *dir_b);
/* Both: max |x - y| and the root mean square of x - y; -1 / -1 on failure. */
int te_param_compare(const char *dir_a, const char *dir_b, double *maxd, double *rmsd);

#endif
