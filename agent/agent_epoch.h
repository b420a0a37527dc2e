/* agent_epoch.h - the highest leader epoch this agent has seen, kept on disk.
 *
 * Every coordinator -> agent message carries the sender's epoch (the create
 * revision of its election key). A deposed leader that wakes up (SIGSTOP,
 * partition) still believes it leads; fencing makes its messages harmless:
 * the agent drops anything below the highest epoch it has seen. The value is
 * persisted (atomic file work_dir/epoch) before it is acted on, so that a
 * restarted agent cannot be fooled either.
 *
 *   agent_epoch_t *e = agent_epoch_open("/var/lib/flywheel/epoch");
 *   switch (agent_epoch_check(e, fw_msg_epoch(msg))) {
 *   case AGENT_EPOCH_STALE: drop; case AGENT_EPOCH_NEW: re-register; ...
 *   }
 */
#ifndef AGENT_EPOCH_H
#define AGENT_EPOCH_H

#include <stdint.h>

typedef struct agent_epoch_t agent_epoch_t;

typedef enum {
    AGENT_EPOCH_STALE = -1, /* lower than the highest seen: drop the message */
    AGENT_EPOCH_SAME = 0,   /* equal to the highest seen */
    AGENT_EPOCH_NEW = 1     /* higher: now the highest (persisted when possible) */
} agent_epoch_verdict;

/* Load the epoch file at path (a missing file means 0). NULL with
 * fw_err_detail when the file exists but is not a valid epoch: refusing to
 * start is safer than forgetting a fence. The caller owns the result. */
agent_epoch_t *agent_epoch_open(const char *path);
void agent_epoch_destroy(agent_epoch_t **p);

/* Compare a message's epoch with the highest seen; a higher one becomes the
 * highest and is written to disk first. A failed write is logged and the
 * new value is kept in memory (the fence still holds for this process). */
agent_epoch_verdict agent_epoch_check(agent_epoch_t *e, uint64_t epoch);

uint64_t agent_epoch_get(const agent_epoch_t *e);

/* 0 when the last write reached the disk, else the fw_err of the failure. */
int agent_epoch_last_error(const agent_epoch_t *e);

#endif
