/* agent_exec.c - the executor table: kind -> how a task of that kind runs.
 *
 * Theory of operation
 * -------------------
 * Adding a kind (finetune, embed, eval, serve in later issues) is one row
 * here and one run() function; the runner does the rest (table, log,
 * journal, cancellation, reporting).
 *
 *   noop     completes inside the agent at once with {"ok":true}: no
 *            process, no journal file, no log. For benchmarks and tests.
 *   finetune, embed, eval   flywheel-engine runs (agent_ml.c,
 *            docs/executors.md) with the environment below.
 *   command  spec.command is an argv run as a child process (PATH lookup,
 *            no shell unless the argv asks for one), only where
 *            agent.allow_command is true. Environment: the agent's, then
 *            the FLYWHEEL_* variables below, then TASK_ASSIGN.env, each
 *            layer overriding the one before (the leader has the last word).
 *
 * Task environment:
 *   FLYWHEEL_JOB_ID, FLYWHEEL_TASK_ID, FLYWHEEL_ATTEMPT
 *   FLYWHEEL_SHARD_INDEX  gang: the rank; else the index after the last '.'
 *                         of the task id (j-000042.17 -> 17)
 *   FLYWHEEL_SHARD_COUNT  gang: world_size; else spec.shards (1 if absent)
 *   FLYWHEEL_RANK, FLYWHEEL_WORLD_SIZE   gang rank / size (0 / 1 otherwise)
 *   FLYWHEEL_RENDEZVOUS   the gang's rendezvous value, when given
 *   FLYWHEEL_AGENT_ID, FLYWHEEL_TASK_DIR (the task's scratch directory,
 *                         also its working directory; removed after the ack)
 *   CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER=PCI_BUS_ID   when gpus are given
 *                         (PCI order makes the indices NVML's, which the agent
 *                         reported) */
#include "agent_task.h"

#include "agent_ml.h"

#include "fw_err.h"
#include "fw_file.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_MAX_ARGS 4096
#define S_MAX_ENV  4096

/* ------------------------------------------------------------- noop */

static int s_run_noop(agent_runner_t *r, agent_task_t *t, const agent_assign_t *a) {
    (void)r;
    (void)a;
    return agent_task_set_result(t, "succeeded", false, 0, NULL, "{\"ok\":true}");
}

/* ---------------------------------------------------------- command */

/* A growable "K=V" vector where setting a key replaces it. */
typedef struct {
    char **v;
    size_t n, cap;
} s_env;

static int s_env_set(s_env *e, const char *kv) {
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv) return 0; /* not an assignment: skip it */
    size_t klen = (size_t)(eq - kv) + 1;
    char *dup = strdup(kv);
    if (!dup) return fw_err_set(FW_ENOMEM, "env: out of memory");
    for (size_t i = 0; i < e->n; i++)
        if (strncmp(e->v[i], kv, klen) == 0) {
            free(e->v[i]);
            e->v[i] = dup;
            return 0;
        }
    if (e->n + 2 > e->cap) {
        if (e->n >= S_MAX_ENV) {
            free(dup);
            return fw_err_set(FW_ETOOBIG, "env: more than %d variables", S_MAX_ENV);
        }
        size_t cap = e->cap ? e->cap * 2 : 64;
        char **nv = realloc(e->v, cap * sizeof *nv);
        if (!nv) {
            free(dup);
            return fw_err_set(FW_ENOMEM, "env: out of memory");
        }
        e->v = nv;
        e->cap = cap;
    }
    e->v[e->n++] = dup;
    e->v[e->n] = NULL;
    return 0;
}

static int s_env_setf(s_env *e, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int s_env_setf(s_env *e, const char *key, const char *fmt, ...) {
    char buf[1024];
    int n = snprintf(buf, sizeof buf, "%s=", key);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
    va_end(ap);
    return s_env_set(e, buf);
}

static void s_env_free(s_env *e) {
    for (size_t i = 0; i < e->n; i++) free(e->v[i]);
    free(e->v);
}

/* spec.command as an argv (strings owned by the returned json). */
static int s_parse_command(const char *spec, json_t **root, const char ***argv) {
    json_error_t jerr;
    *argv = NULL;
    *root = json_loads(spec ? spec : "", JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(*root))
        return fw_err_set(FW_EINVAL, "spec: not a JSON object (%s)", jerr.text);
    json_t *cmd = json_object_get(*root, "command");
    if (!json_is_array(cmd) || json_array_size(cmd) == 0)
        return fw_err_set(FW_EINVAL, "spec.command: expected a non-empty array of strings");
    size_t n = json_array_size(cmd);
    if (n > S_MAX_ARGS)
        return fw_err_set(FW_EINVAL, "spec.command: %zu arguments, at most %d", n, S_MAX_ARGS);
    const char **v = calloc(n + 1, sizeof *v);
    if (!v) return fw_err_set(FW_ENOMEM, "spec.command: out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(cmd, i);
        if (!json_is_string(s) || strlen(json_string_value(s)) != json_string_length(s)) {
            free(v);
            return fw_err_set(FW_EINVAL, "spec.command[%zu]: expected a string without NUL", i);
        }
        v[i] = json_string_value(s);
    }
    if (!v[0][0]) {
        free(v);
        return fw_err_set(FW_EINVAL, "spec.command[0]: empty program name");
    }
    *argv = v;
    return 0;
}

uint64_t agent_exec_shard_index(const char *task_id) {
    const char *dot = strrchr(task_id, '.');
    if (!dot || !dot[1]) return 0;
    char *end;
    unsigned long long v = strtoull(dot + 1, &end, 10);
    return *end ? 0 : v;
}

int agent_exec_task_dir(const agent_runner_t *r, const agent_task_t *t, char *buf, size_t size) {
    const agent_runner_cfg *cfg = agent_runner_config(r);
    int n = snprintf(buf, size, "%s/tasks/%s.%" PRIu64, cfg->work_dir, t->task_id, t->attempt);
    if (n < 0 || (size_t)n >= size) return fw_err_set(FW_EINVAL, "task directory path too long");
    return fw_file_mkdirs(buf, 0755);
}

void agent_exec_env_free(char ***envp) {
    if (!envp || !*envp) return;
    for (char **p = *envp; *p; p++) free(*p);
    free(*envp);
    *envp = NULL;
}

char **agent_exec_env(const agent_runner_t *r, const agent_task_t *t, const agent_assign_t *a,
                      uint64_t shards, const char *task_dir, const char *const *extra) {
    const agent_runner_cfg *cfg = agent_runner_config(r);
    s_env env = {NULL, 0, 0};
    int rc = 0;
    for (char *const *p = cfg->base_env; p && *p; p++)
        if ((rc = s_env_set(&env, *p)) < 0) goto fail;
    uint64_t count = shards ? shards : 1;
    uint64_t index = agent_exec_shard_index(t->task_id);
    uint64_t rank = 0, world = 1;
    if (a->has_rank) {
        rank = index = a->rank;
        world = count = a->world_size ? a->world_size : 1;
    }
    if ((rc = s_env_setf(&env, "FLYWHEEL_JOB_ID", "%s", t->job_id)) < 0 ||
        (rc = s_env_setf(&env, "FLYWHEEL_TASK_ID", "%s", t->task_id)) < 0 ||
        (rc = s_env_setf(&env, "FLYWHEEL_ATTEMPT", "%" PRIu64, t->attempt)) < 0 ||
        (rc = s_env_setf(&env, "FLYWHEEL_SHARD_INDEX", "%" PRIu64, index)) < 0 ||
        (rc = s_env_setf(&env, "FLYWHEEL_SHARD_COUNT", "%" PRIu64, count)) < 0 ||
        (rc = s_env_setf(&env, "FLYWHEEL_RANK", "%" PRIu64, rank)) < 0 ||
        (rc = s_env_setf(&env, "FLYWHEEL_WORLD_SIZE", "%" PRIu64, world)) < 0 ||
        (rc = s_env_setf(&env, "FLYWHEEL_AGENT_ID", "%s", cfg->agent_id)) < 0 ||
        (rc = s_env_setf(&env, "FLYWHEEL_TASK_DIR", "%s", task_dir)) < 0)
        goto fail;
    if (a->rendezvous && (rc = s_env_setf(&env, "FLYWHEEL_RENDEZVOUS", "%s", a->rendezvous)) < 0)
        goto fail;
    if (a->ngpus) {
        char list[64 * 8] = "";
        size_t off = 0;
        for (size_t i = 0; i < a->ngpus && off < sizeof list - 24; i++)
            off += (size_t)snprintf(list + off, sizeof list - off, "%s%" PRIu64, i ? "," : "",
                                    a->gpus[i]);
        if ((rc = s_env_setf(&env, "CUDA_VISIBLE_DEVICES", "%s", list)) < 0 ||
            (rc = s_env_set(&env, "CUDA_DEVICE_ORDER=PCI_BUS_ID")) < 0)
            goto fail;
    }
    for (const char *const *p = extra; p && *p; p++)
        if ((rc = s_env_set(&env, *p)) < 0) goto fail;
    for (const char *const *p = a->env; p && *p; p++)
        if ((rc = s_env_set(&env, *p)) < 0) goto fail;
    if (!env.v && !(env.v = calloc(1, sizeof *env.v))) {
        fw_err_set(FW_ENOMEM, "env: out of memory");
        goto fail;
    }
    return env.v;
fail:
    s_env_free(&env);
    return NULL;
}

static int s_run_command(agent_runner_t *r, agent_task_t *t, const agent_assign_t *a) {
    const agent_runner_cfg *cfg = agent_runner_config(r);
    if (!cfg->allow_command)
        return fw_err_set(FW_EPERM,
                          "command tasks are disabled on agent %s (agent.allow_command is false)",
                          cfg->agent_id);
    json_t *root = NULL;
    const char **argv = NULL;
    char **envp = NULL;
    int rc = s_parse_command(a->spec, &root, &argv);
    if (rc < 0) goto out;
    char dir[1400];
    if ((rc = agent_exec_task_dir(r, t, dir, sizeof dir)) < 0) goto out;
    json_t *shards = json_object_get(root, "shards");
    uint64_t count = json_is_integer(shards) && json_integer_value(shards) > 0
                         ? (uint64_t)json_integer_value(shards)
                         : 1;
    if (!(envp = agent_exec_env(r, t, a, count, dir, NULL))) {
        rc = FW_ENOMEM;
        goto out;
    }
    rc = agent_task_spawn(t, (char *const *)argv, envp, dir);
out:
    agent_exec_env_free(&envp);
    free(argv);
    json_decref(root);
    return rc;
}

/* ------------------------------------------------------------ table */

static const agent_executor_t s_executors[] = {
    {.kind = "noop", .in_agent = true, .run = s_run_noop},
    {.kind = "command", .in_agent = false, .run = s_run_command},
    {.kind = "finetune", .in_agent = false, .run = agent_ml_run_finetune},
    {.kind = "embed", .in_agent = false, .run = agent_ml_run_embed},
    {.kind = "eval", .in_agent = false, .run = agent_ml_run_eval},
};

const agent_executor_t *agent_executor_find(const char *kind) {
    if (!kind) return NULL;
    for (size_t i = 0; i < sizeof s_executors / sizeof s_executors[0]; i++)
        if (strcmp(s_executors[i].kind, kind) == 0) return &s_executors[i];
    return NULL;
}

const char *agent_executor_kinds(void) {
    static char buf[256];
    if (!buf[0]) {
        size_t off = 0;
        for (size_t i = 0; i < sizeof s_executors / sizeof s_executors[0]; i++)
            off += (size_t)snprintf(buf + off, sizeof buf - off, "%s%s", i ? ", " : "",
                                    s_executors[i].kind);
    }
    return buf;
}
