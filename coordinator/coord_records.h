/* coord_records.h - etcd keys and values of the coordinator's state.
 *
 * docs/etcd-layout.md is the reference; this file is the only code that
 * knows the key shapes and value fields, in both directions (render for
 * the store, parse for the rebuild after a takeover). Every value carries
 * "schema": COORD_SCHEMA; a reader refuses a higher one. */
#ifndef COORD_RECORDS_H
#define COORD_RECORDS_H

#include "coord_json.h"
#include "coord_state.h"

#include <stddef.h>
#include <stdint.h>

#define COORD_SCHEMA 1
#define COORD_KEY_MAX 256
#define COORD_TAIL_MAX 4096 /* bytes of output kept in a finished task's record */

/* Keys (prefix is etcd.prefix, without a trailing '/'). */
void coord_key_task(char *buf, size_t size, const char *prefix, const coord_task_t *t);
void coord_key_job(char *buf, size_t size, const char *prefix, const coord_job_t *j);
void coord_key_queue(char *buf, size_t size, const char *prefix, const coord_job_t *j);
void coord_key_admin(char *buf, size_t size, const char *prefix, const coord_agent_t *a);
void coord_key_audit(char *buf, size_t size, const char *prefix, uint64_t seq);

/* Values, appended to w (reset it first). */
void coord_render_task(coord_jw *w, const coord_task_t *t);
void coord_render_job(coord_jw *w, const coord_job_t *j);
void coord_render_queue(coord_jw *w, const coord_job_t *j);
void coord_render_admin(coord_jw *w, const coord_agent_t *a);

/* Parse a job record into a new job of s (tasks all PENDING, unwritten).
 * FW_EINVAL / FW_EVERSION with a detail naming the key on a bad record. */
int coord_parse_job(coord_state_t *s, const char *key, const char *value, coord_job_t **out);
/* Apply a task record to its (already created) task. */
int coord_parse_task(coord_state_t *s, const char *key, const char *value);
/* Apply a P/agent-admin record to the agent it names (created if needed). */
int coord_parse_admin(coord_state_t *s, const char *key, const char *value);
/* Apply a P/agents/<id> record (written by the agent): resources, labels, host. */
int coord_parse_agent(coord_state_t *s, const char *id, const char *value);

/* The job id and index of a P/tasks/... key (after the prefix). 0 / -1. */
int coord_key_task_parse(const char *key, const char *prefix, char *job_id, size_t size,
                         uint32_t *index);

#endif
