/* coord_spec.h - job specifications: the kinds table and strict validation.
 *
 * A job spec is a JSON object (flywheelctl turns YAML into JSON first):
 *
 *   {"kind": "command", "shards": 200, "max_retries": 3, "priority": 0,
 *    "resources": {"cpus": 1, "gpus": 0, "memory_mb": 512}, "labels": {"zone": "a"},
 *    "command": ["sh", "-c", "echo shard $FLYWHEEL_SHARD_INDEX"]}
 *
 * A gang job gives "world_size": N instead of "shards". Every field is
 * checked; unknown fields and wrong types are refused with the field named
 * ("spec.resources.cpus: expected a non-negative integer"). Kinds live in one
 * table (coord_kinds) so later issues add finetune, embed, eval and serve by
 * adding a row with their own fields. */
#ifndef COORD_SPEC_H
#define COORD_SPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define COORD_SPEC_MAX_LABELS   64
#define COORD_SPEC_MAX_ENV      200 /* TASK_ASSIGN.env allows 256; FLYWHEEL_* take the rest */
#define COORD_SPEC_MAX_PRIORITY 9999
#define COORD_SPEC_MAX_RETRIES  100
#define COORD_SPEC_MAX_WORLD    65536 /* TASK_ASSIGN.world_size bound */
#define COORD_KIND_MAX          31

typedef struct {
    const char *kind;
    bool admin_only;           /* only admin tokens may submit it */
    bool needs_command;        /* "command" (argv) is required */
    const char *const *fields; /* kind-specific top-level fields, NULL-terminated */
    const char *doc;
} coord_kind_info;

/* The row for a kind, or NULL. */
const coord_kind_info *coord_kind_find(const char *kind);
/* "noop, command" for error messages (static buffer). */
const char *coord_kind_names(void);

typedef struct {
    char kind[COORD_KIND_MAX + 1];
    bool admin_only;
    bool gang;            /* world_size was given */
    uint32_t ntasks;      /* shards, or world_size for a gang */
    uint32_t max_retries; /* retries after the first attempt */
    int32_t priority;     /* -9999..9999, higher first */
    uint64_t cpus, gpus, memory_mb;
    uint64_t timeout_ms; /* 0: none */
    int nlabels;
    char *label_key[COORD_SPEC_MAX_LABELS];
    char *label_val[COORD_SPEC_MAX_LABELS];
    char *json; /* the spec re-serialised compactly with sorted keys; sent to agents */
} coord_spec_t;

/* Validate spec text. max_tasks bounds shards and world_size. 0 and *out
 * filled (free with coord_spec_clear), or FW_EINVAL with fw_err_detail()
 * naming the field ("spec.shards: expected an integer 1..1000000"). */
int coord_spec_parse(const char *text, uint32_t max_tasks, coord_spec_t *out);
void coord_spec_clear(coord_spec_t *s);

/* Defaults for fields the spec leaves out. */
#define COORD_SPEC_DEFAULT_RETRIES 3
#define COORD_SPEC_DEFAULT_CPUS    1

#endif
