/* test_engine_util.c - see test_engine_util.h. */
#include "test_engine_util.h"

#include "engine.h"
#include "fw_test.h"

#include <fcntl.h>
#include <math.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static char s_bin[4096];
static char *s_dir;

void te_init(int argc, char **argv, const char *tag) {
    if (argc > 1) {
        snprintf(s_bin, sizeof s_bin, "%s", argv[1]);
    } else {
        snprintf(s_bin, sizeof s_bin, "%s", fw_test_bin("agent/engine/flywheel-engine"));
    }
    s_dir = fw_test_tmpdir(tag);
    /* The engine's own log lines are progress; keep test output readable. */
    setenv("FW_LOG_LEVEL", "warn", 0);
}

void te_cleanup(void) {
    if (s_dir && !getenv("FW_TEST_KEEP")) fw_test_rmtree(s_dir);
    free(s_dir);
    s_dir = NULL;
}

const char *te_dir(void) { return s_dir; }

const char *te_path(const char *name) {
    static char ring[32][4096];
    static int next;
    char *b = ring[next++ % 32];
    snprintf(b, sizeof ring[0], "%s/%s", s_dir, name);
    return b;
}

int te_spawn(const char *const *args, const char *out_path, const char *err_path) {
    size_t n = 0;
    while (args[n]) n++;
    char **argv = calloc(n + 2, sizeof *argv);
    argv[0] = s_bin;
    for (size_t i = 0; i < n; i++) argv[i + 1] = (char *)args[i];
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid;
    int rc = posix_spawn(&pid, s_bin, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    free(argv);
    return rc == 0 ? (int)pid : -1;
}

int te_wait(int pid) {
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) < 0) return -1000;
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    return WIFSIGNALED(st) ? -WTERMSIG(st) : -1000;
}

te_result te_run(const char *stdin_path, const char *const *args) {
    te_result r = {-1000, NULL, NULL};
    static int seq;
    char out[4200], err[4200];
    snprintf(out, sizeof out, "%s/.run%d.out", s_dir, seq);
    snprintf(err, sizeof err, "%s/.run%d.err", s_dir, seq++);
    size_t n = 0;
    while (args[n]) n++;
    char **argv = calloc(n + 2, sizeof *argv);
    argv[0] = s_bin;
    for (size_t i = 0; i < n; i++) argv[i + 1] = (char *)args[i];
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, stdin_path ? stdin_path : "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid;
    int rc = posix_spawn(&pid, s_bin, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    free(argv);
    if (rc != 0) {
        fprintf(stderr, "cannot run %s\n", s_bin);
        return r;
    }
    r.code = te_wait((int)pid);
    r.out = te_read(out, NULL);
    r.err = te_read(err, NULL);
    if (!r.out) r.out = strdup("");
    if (!r.err) r.err = strdup("");
    unlink(out), unlink(err);
    return r;
}

te_result te_runv(const char *stdin_path, ...) {
    const char *args[64];
    size_t n = 0;
    va_list ap;
    va_start(ap, stdin_path);
    const char *s;
    while ((s = va_arg(ap, const char *)) && n < 63) args[n++] = s;
    va_end(ap);
    args[n] = NULL;
    return te_run(stdin_path, args);
}

void te_result_free(te_result *r) {
    free(r->out), free(r->err);
    r->out = r->err = NULL;
}

json_t *te_json_lines(const char *text) {
    json_t *arr = json_array();
    const char *p = text;
    while (p && *p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len) {
            json_error_t e;
            json_t *o = json_loadb(p, len, 0, &e);
            if (!o) {
                fprintf(stderr, "not a JSON line: %.*s\n", (int)(len > 200 ? 200 : len), p);
                json_decref(arr);
                return NULL;
            }
            json_array_append_new(arr, o);
        }
        p = nl ? nl + 1 : NULL;
    }
    return arr;
}

json_t *te_last_with(json_t *lines, const char *key) {
    json_t *found = NULL;
    size_t i;
    json_t *o;
    json_array_foreach(lines, i, o) if (json_object_get(o, key)) found = o;
    return found;
}

int te_write(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t n = strlen(text);
    int ok = fwrite(text, 1, n, f) == n;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

char *te_read(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) buf[n] = '\0';
    if (len) *len = buf ? (size_t)n : 0;
    return buf;
}

int te_split_jsonl(const char *src, size_t first, const char *a, const char *b) {
    FILE *in = fopen(src, "rb"), *fa = fopen(a, "wb"), *fb = b ? fopen(b, "wb") : NULL;
    if (!in || !fa || (b && !fb)) {
        if (in) fclose(in);
        if (fa) fclose(fa);
        if (fb) fclose(fb);
        return -1;
    }
    char *line = NULL;
    size_t cap = 0, k = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, in)) > 0) {
        if (n == 1 && line[0] == '\n') continue;
        FILE *to = k++ < first ? fa : fb;
        if (to) fwrite(line, 1, (size_t)n, to);
    }
    free(line);
    fclose(in);
    fclose(fa);
    if (fb) fclose(fb);
    return 0;
}

int te_param_compare(const char *dir_a, const char *dir_b, double *maxd, double *rmsd) {
    fw_model *a = fw_model_load_dir(dir_a, "cpu"), *b = fw_model_load_dir(dir_b, "cpu");
    int rc = -1;
    *maxd = *rmsd = -1;
    if (a && b && fw_model_num_params(a) == fw_model_num_params(b)) {
        size_t n = fw_model_num_params(a);
        float *pa = malloc(n * sizeof *pa), *pb = malloc(n * sizeof *pb);
        if (pa && pb && fw_model_read_params(a, pa) == 0 && fw_model_read_params(b, pb) == 0) {
            double mx = 0, ss = 0;
            for (size_t i = 0; i < n; i++) {
                double x = fabs((double)pa[i] - (double)pb[i]);
                if (isnan(x)) x = INFINITY;
                if (x > mx) mx = x;
                ss += x * x;
            }
            *maxd = mx, *rmsd = sqrt(ss / (double)n);
            rc = 0;
        }
        free(pa), free(pb);
    }
    fw_model_destroy(&a);
    fw_model_destroy(&b);
    return rc;
}

double te_param_maxdiff(const char *dir_a, const char *dir_b) {
    double mx, rms;
    return te_param_compare(dir_a, dir_b, &mx, &rms) == 0 ? mx : -1;
}
