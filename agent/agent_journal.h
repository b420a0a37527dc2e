/* agent_journal.h - task results the coordinator has not acknowledged yet.
 *
 * A result is written to work_dir/journal/<task>.<attempt> (an atomic file)
 * before TASK_RESULT is sent, and removed when TASK_RESULT_ACK arrives. After
 * a restart or a reconnection the agent reloads the directory and resends
 * everything in it, so a result produced while the leader fails over, or
 * while the agent itself restarts, is never lost. Sending twice is harmless:
 * the leader acknowledges duplicates and ignores them.
 *
 * File format: one JSON object {"schema":1, "job_id", "task_id", "attempt",
 * "status", "exit_code"?, "error"?, "result"?, "finished_ms"}. */
#ifndef AGENT_JOURNAL_H
#define AGENT_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AGENT_ID_MAX 128 /* task/job id bytes (TASK_ASSIGN bound) */

typedef struct {
    char job_id[AGENT_ID_MAX + 1];
    char task_id[AGENT_ID_MAX + 1];
    uint64_t attempt;
    char status[33]; /* succeeded, failed, cancelled, lost */
    bool has_exit_code;
    int64_t exit_code; /* negative: killed by that signal */
    char *error;       /* owned, may be NULL */
    char *result;      /* owned JSON object text, may be NULL */
    uint64_t finished_ms;
} agent_result_t;

/* Free the owned strings (error, result) and zero them. */
void agent_result_clear(agent_result_t *r);
/* Deep copy; 0 / FW_ENOMEM. */
int agent_result_copy(agent_result_t *dst, const agent_result_t *src);

/* True for ids safe to use as a file name and on the wire: 1..128 bytes of
 * [A-Za-z0-9._-], not starting with '.' (no "..", no hidden files). Task ids
 * arrive from the network and become paths, so this is the gate. */
bool agent_id_ok(const char *id);

/* Write dir/<task>.<attempt> atomically (dir is created if missing). */
int agent_journal_put(const char *dir, const agent_result_t *r);

/* Remove dir/<task>.<attempt>; a missing file is success. */
int agent_journal_remove(const char *dir, const char *task_id, uint64_t attempt);

/* Every result in dir (missing dir: none), sorted by file name. Leftover
 * "*.new" files of interrupted writes are removed; unreadable or corrupt
 * entries are renamed "*.corrupt", logged and skipped, so one bad file
 * never blocks the rest. *out is an array of *n results the caller frees
 * with agent_journal_free. 0 / FW_ENOMEM / FW_EIO (directory unreadable). */
int agent_journal_load(const char *dir, agent_result_t **out, size_t *n);
void agent_journal_free(agent_result_t **results, size_t n);

/* Serialise / parse one result (the file format); parse gives FW_ECORRUPT
 * with a detail naming the field. Caller frees the text / clears *r. */
char *agent_result_to_json(const agent_result_t *r);
int agent_result_from_json(const char *text, agent_result_t *r);

#endif
