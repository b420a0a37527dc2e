/* fw_proto_int.h - what the proto/ files share and nobody else may use.
 *
 * The representation: a message is its schema entry, the envelope, and one
 * inline fw_val_t slot per field of its table row (kind FW_VAL_NONE = unset).
 * A value tree owns everything under it. The fwp_ functions are internal. */
#ifndef FW_PROTO_INT_H
#define FW_PROTO_INT_H

#include "fw_proto.h"

#include "fw_fault.h"

#include <stdlib.h>
#include <string.h>

/* Every allocation of the codec goes through these, so that fault tests can
 * fail the N-th one (fault point "proto.alloc"; test_proto_fault). Outside
 * FW_FAULT_INJECTION builds fw_fault_hit() is the constant 0. */
static inline void *fwp_malloc(size_t n) {
    return fw_fault_hit("proto.alloc") ? NULL : malloc(n);
}
static inline void *fwp_calloc(size_t n, size_t size) {
    return fw_fault_hit("proto.alloc") ? NULL : calloc(n, size);
}
static inline void *fwp_realloc(void *p, size_t n) {
    return fw_fault_hit("proto.alloc") ? NULL : realloc(p, n);
}
static inline char *fwp_strdup(const char *s) {
    return fw_fault_hit("proto.alloc") ? NULL : strdup(s);
}

struct fw_val_t {
    uint8_t kind; /* fw_val_kind */
    uint32_t len; /* STR/BIN: bytes (not counting the NUL after a STR); ARRAY/MAP: entries */
    uint32_t cap; /* ARRAY/MAP: allocated entries */
    char **keys;  /* MAP: len keys, each NUL-terminated and unique */
    union {
        bool b;
        int64_t i;
        uint64_t u;
        double d;
        char *s;      /* STR: len bytes + NUL, valid UTF-8, no NUL inside */
        uint8_t *bin; /* BIN: len bytes (NULL when len is 0) */
        struct fw_val_t *items;
    } as;
};

#define FWP_MSG_TAG 0x46574d53u /* "FWMS": catches use of a destroyed or foreign pointer */

struct fw_msg_t {
    uint32_t tag;
    const fw_msg_info *info;
    uint64_t request_id;
    uint64_t epoch;
    uint16_t flags;
    uint8_t version;
    char sender[FW_PROTO_MAX_SENDER + 1];
    fw_val_t vals[]; /* info->nfields slots */
};

/* Allocate an empty message of this schema entry (all fields unset). */
fw_msg_t *fwp_msg_alloc(const fw_msg_info *info);

/* Free what v holds and leave it FW_VAL_NONE (v itself is not freed). */
void fwp_val_clear(fw_val_t *v);
/* Deep copy src into the empty slot dst. 0 or FW_ENOMEM (dst left empty). */
int fwp_val_copy(fw_val_t *dst, const fw_val_t *src);
/* Set the empty slot v to a copy of s[0..n) as a STR (adds the NUL) or BIN. */
int fwp_val_set_str(fw_val_t *v, const char *s, size_t n);
int fwp_val_set_bin(fw_val_t *v, const void *data, size_t n);

/* True if s[0..n) is valid UTF-8 (no overlongs, surrogates or values past
 * U+10FFFF) and holds no NUL byte, so it can be a C string. */
bool fwp_utf8_ok(const uint8_t *s, size_t n);

/* Check a value (a setter's argument) against field f of owner `owner`
 * ("TASK_ASSIGN"): kinds, bounds, UTF-8, records' fields, depth. 0, or
 * FW_EINVAL / FW_ETOOBIG with a detail naming the path. */
int fwp_check_value(const char *owner, const fw_field_info *f, const fw_val_t *v);

#endif
