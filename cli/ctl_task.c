/* ctl_task.c - `flywheelctl task list --job ID`, and the task helpers that
 * `job logs` shares: every task of a job (all pages), a task's id. */
#include "ctl.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *job_id;
    const char *state;
} s_filter;

static void s_fill(fw_msg_t *req, void *arg) {
    const s_filter *f = arg;
    if (f->job_id) fw_msg_set_str(req, "job_id", f->job_id);
    if (f->state) fw_msg_set_str(req, "state", f->state);
}

json_t *ctl_tasks_of(ctl_t *c, const char *job_id, const char *state, int *err) {
    s_filter f = {job_id, state};
    return ctl_list_all(c, FW_MSG_TASK_LIST, s_fill, &f, err);
}

const char *ctl_task_id(const json_t *t, char *buf, size_t size) {
    const char *id = ctl_str(t, "id");
    if (!*id) id = ctl_str(t, "task_id");
    if (*id) return id;
    /* Records as etcd keeps them: {job, index}. */
    json_t *idx = ctl_get(t, "index");
    snprintf(buf, size, "%s.%lld", *ctl_str(t, "job") ? ctl_str(t, "job") : ctl_str(t, "job_id"),
             (long long)json_integer_value(idx));
    return buf;
}

/* One row of the list table. */
static void s_list_row(ctl_table_t *t, json_t *task) {
    char id[160], attempt[32], rank[32], exitc[32], age[32], error[96];
    json_t *err_v = ctl_get(task, "error");
    const char *e = json_string_value(err_v);
    /* The table stays one line a task; -o json has the whole error. */
    snprintf(error, sizeof error, "%s", e && *e ? e : "-");
    if (strlen(error) > 60) strcpy(error + 57, "...");
    for (char *p = error; *p; p++)
        if (*p == '\n' || *p == '\t') *p = ' ';
    const char *row[8] = {ctl_task_id(task, id, sizeof id),
                          ctl_str(task, "state"),
                          *ctl_str(task, "agent") ? ctl_str(task, "agent") : "-",
                          ctl_cell(ctl_get(task, "attempt"), attempt, sizeof attempt),
                          ctl_cell(ctl_get(task, "rank"), rank, sizeof rank),
                          ctl_cell(ctl_get(task, "exit_code"), exitc, sizeof exitc),
                          ctl_age(ctl_get_any(task, "updated_at", "finished_at", NULL), age,
                                  sizeof age),
                          error};
    ctl_table_add(t, row);
}

static int s_cmd_list(ctl_t *c) {
    const char *job = ctl_flag(c, "job");
    if (!job) return ctl_errorf(c, "task list needs --job ID");
    if (ctl_connect(c) < 0) return CTL_EXIT_ERROR;
    int err;
    json_t *tasks = ctl_tasks_of(c, job, ctl_flag(c, "state"), &err);
    if (!tasks) return CTL_EXIT_ERROR;
    static const char *const hdr[] = {"TASK", "STATE", "AGENT", "ATTEMPTS", "RANK", "EXIT",
                                      "UPDATED", "ERROR"};
    return ctl_print_list(c, tasks, 8, hdr, s_list_row);
}

static const ctl_flag_def s_list_flags[] = {
    {"job", 0, "ID", "The job whose tasks to list (required)."},
    {"state", 0, "S", "Only tasks in this state (PENDING, ASSIGNED, RUNNING, SUCCEEDED, FAILED, "
                      "CANCELLED)."},
    {NULL, 0, NULL, NULL}};

const ctl_cmd_def ctl_task_cmds[] = {
    {"task", "list", "--job ID", 0, 0, "State, agent and attempt count of every task of a job.",
     "ATTEMPTS is the current attempt number (1 for a task that ran once, 0 for one never\n"
     "placed). A retried task shows its latest attempt; -o json has the whole record.",
     s_list_flags, s_cmd_list},
    {NULL, NULL, NULL, 0, 0, NULL, NULL, NULL, NULL}};
