/* agent_log.h - a task attempt's output log, size-rotated, readable by offset.
 *
 * The task's stdout and stderr share one pipe, so the log holds them
 * interleaved in the order the task wrote them - what `job logs` shows. The
 * agent adds its own notes (exec failures, cancellation) as lines starting
 * with "[flywheel-agent] ".
 *
 * Files, for attempt A of a task under dir = work_dir/logs/<task>:
 *   A.log        the newest bytes (written now)
 *   A.log.1 ...  older pieces, A.log.1 the most recent; at most `keep` files
 *                in all (A.log included), the oldest deleted on rotation
 *   A.log.base   logical offset where A.log starts (absent: 0); written
 *                atomically at each rotation
 * Offsets are logical: byte n of everything the task ever wrote, so that a
 * reader polling with `logs -f` never sees a byte twice across a rotation,
 * and learns (from the offset returned) when older bytes were rotated away. */
#ifndef AGENT_LOG_H
#define AGENT_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct agent_log_t agent_log_t;

/* Open (append to) the log of `attempt` under dir, creating dir. A file left
 * by an earlier run continues at its logical end. max_bytes >= 1024, keep
 * >= 1. NULL with fw_err_detail on failure. */
agent_log_t *agent_log_open(const char *dir, uint64_t attempt, uint64_t max_bytes, int keep);
void agent_log_destroy(agent_log_t **p);

/* Append; rotates first when the current file would exceed max_bytes (a
 * write larger than max_bytes is split across files). 0 / FW_EIO. */
int agent_log_write(agent_log_t *l, const void *data, size_t len);

/* Logical bytes written so far (the end offset). */
uint64_t agent_log_size(const agent_log_t *l);

/* Read up to max bytes at logical `offset` from the files of `attempt`
 * under dir. *data (malloc'd, caller frees; may be empty) starts at
 * *data_offset, which is `offset`, or later when the bytes at `offset` were
 * rotated away; reads stop at a file boundary (call again for more).
 * *end_offset is the logical size of the log. FW_ENOTFOUND when the log does
 * not exist. */
int agent_log_read(const char *dir, uint64_t attempt, uint64_t offset, size_t max, uint8_t **data,
                   size_t *len, uint64_t *data_offset, uint64_t *end_offset);

#endif
