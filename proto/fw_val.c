/* fw_val.c - msgpack value trees, and their check against the schema.
 *
 * Values are what nested fields hold (STRMAP, MAP, lists, records). A tree
 * is built freely with the fw_val_* calls and checked once, when it is
 * attached to a message (fwp_check_value): the same rules the decoder
 * enforces, so that anything a setter accepts the peer's decoder accepts.
 *
 * Integers are kept canonical: a non-negative integer is always UINT and a
 * negative one INT, whichever call made it, because that is what msgpack can
 * tell apart on the wire - so a tree compares equal after a round trip. */
#include "fw_proto_int.h"

#include "fw_err.h"

#include "fw_utf8.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ UTF-8 */

bool fwp_utf8_ok(const uint8_t *s, size_t n) {
    /* Well-formed, and no NUL: strings reach C code as NUL-terminated. */
    return fw_utf8_valid_prefix(s, n) == n && memchr(s, 0, n) == NULL;
}

/* ------------------------------------------------------------ basics */

void fwp_val_clear(fw_val_t *v) {
    if (!v) return;
    switch (v->kind) {
    case FW_VAL_STR:
        free(v->as.s);
        break;
    case FW_VAL_BIN:
        free(v->as.bin);
        break;
    case FW_VAL_ARRAY:
    case FW_VAL_MAP:
        for (uint32_t i = 0; i < v->len; i++) {
            fwp_val_clear(&v->as.items[i]);
            if (v->keys) free(v->keys[i]);
        }
        free(v->as.items);
        free(v->keys);
        break;
    default:
        break;
    }
    memset(v, 0, sizeof *v);
}

int fwp_val_set_str(fw_val_t *v, const char *s, size_t n) {
    char *copy = fwp_malloc(n + 1);
    if (!copy) return fw_err_set(FW_ENOMEM, "out of memory copying a %zu-byte string", n);
    if (n) memcpy(copy, s, n);
    copy[n] = '\0';
    v->kind = FW_VAL_STR;
    v->len = (uint32_t)n;
    v->as.s = copy;
    return 0;
}

int fwp_val_set_bin(fw_val_t *v, const void *data, size_t n) {
    uint8_t *copy = NULL;
    if (n) {
        copy = fwp_malloc(n);
        if (!copy) return fw_err_set(FW_ENOMEM, "out of memory copying %zu bytes", n);
        memcpy(copy, data, n);
    }
    v->kind = FW_VAL_BIN;
    v->len = (uint32_t)n;
    v->as.bin = copy;
    return 0;
}

int fwp_val_copy(fw_val_t *dst, const fw_val_t *src) {
    memset(dst, 0, sizeof *dst);
    switch (src->kind) {
    case FW_VAL_STR:
        return fwp_val_set_str(dst, src->as.s, src->len);
    case FW_VAL_BIN:
        return fwp_val_set_bin(dst, src->as.bin, src->len);
    case FW_VAL_ARRAY:
    case FW_VAL_MAP:
        dst->kind = src->kind;
        if (src->len) {
            dst->as.items = fwp_calloc(src->len, sizeof *dst->as.items);
            if (src->kind == FW_VAL_MAP) dst->keys = fwp_calloc(src->len, sizeof *dst->keys);
            if (!dst->as.items || (src->kind == FW_VAL_MAP && !dst->keys)) goto nomem;
            dst->cap = src->len;
        }
        for (uint32_t i = 0; i < src->len; i++) {
            dst->len = i + 1; /* so that a failure below frees what exists */
            if (src->kind == FW_VAL_MAP && !(dst->keys[i] = fwp_strdup(src->keys[i]))) goto nomem;
            if (fwp_val_copy(&dst->as.items[i], &src->as.items[i]) < 0) goto nomem;
        }
        return 0;
    default:
        *dst = *src;
        return 0;
    }
nomem:
    fwp_val_clear(dst);
    return fw_err_set(FW_ENOMEM, "out of memory copying a value");
}

static fw_val_t *s_new(fw_val_kind kind) {
    fw_val_t *v = fwp_calloc(1, sizeof *v);
    if (v) v->kind = (uint8_t)kind;
    return v;
}

fw_val_t *fw_val_new_map(void) {
    return s_new(FW_VAL_MAP);
}
fw_val_t *fw_val_new_array(void) {
    return s_new(FW_VAL_ARRAY);
}

void fw_val_destroy(fw_val_t **p) {
    if (!p || !*p) return;
    fwp_val_clear(*p);
    free(*p);
    *p = NULL;
}

fw_val_t *fw_val_dup(const fw_val_t *v) {
    if (!v) return NULL;
    fw_val_t *d = fwp_malloc(sizeof *d);
    if (!d) return NULL;
    if (fwp_val_copy(d, v) < 0) {
        free(d);
        return NULL;
    }
    return d;
}

bool fw_val_equal(const fw_val_t *a, const fw_val_t *b) {
    fw_val_kind ka = fw_val_kind_of(a), kb = fw_val_kind_of(b);
    if (ka != kb) return false;
    switch (ka) {
    case FW_VAL_NONE:
    case FW_VAL_NIL:
        return true;
    case FW_VAL_BOOL:
        return a->as.b == b->as.b;
    case FW_VAL_INT:
        return a->as.i == b->as.i;
    case FW_VAL_UINT:
        return a->as.u == b->as.u;
    case FW_VAL_DOUBLE:
        return memcmp(&a->as.d, &b->as.d, sizeof(double)) == 0; /* NaN == NaN */
    case FW_VAL_STR:
        return a->len == b->len && memcmp(a->as.s, b->as.s, a->len) == 0;
    case FW_VAL_BIN:
        return a->len == b->len && (!a->len || memcmp(a->as.bin, b->as.bin, a->len) == 0);
    case FW_VAL_ARRAY:
        if (a->len != b->len) return false;
        for (uint32_t i = 0; i < a->len; i++)
            if (!fw_val_equal(&a->as.items[i], &b->as.items[i])) return false;
        return true;
    case FW_VAL_MAP:
        /* Maps are unordered: every key of a has an equal value in b. */
        if (a->len != b->len) return false;
        for (uint32_t i = 0; i < a->len; i++)
            if (!fw_val_equal(&a->as.items[i], fw_val_map_get(b, a->keys[i]))) return false;
        return true;
    }
    return false;
}

fw_val_kind fw_val_kind_of(const fw_val_t *v) {
    return v ? (fw_val_kind)v->kind : FW_VAL_NONE;
}

size_t fw_val_size(const fw_val_t *v) {
    switch (fw_val_kind_of(v)) {
    case FW_VAL_STR:
    case FW_VAL_BIN:
    case FW_VAL_ARRAY:
    case FW_VAL_MAP:
        return v->len;
    default:
        return 0;
    }
}

const char *fw_val_str(const fw_val_t *v) {
    return fw_val_kind_of(v) == FW_VAL_STR ? v->as.s : NULL;
}

const void *fw_val_bin(const fw_val_t *v, size_t *len) {
    if (fw_val_kind_of(v) != FW_VAL_BIN) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = v->len;
    /* A present but empty BIN still returns a non-NULL pointer. */
    return v->as.bin ? (const void *)v->as.bin : (const void *)"";
}

int64_t fw_val_int(const fw_val_t *v) {
    switch (fw_val_kind_of(v)) {
    case FW_VAL_INT:
        return v->as.i;
    case FW_VAL_UINT:
        return v->as.u <= (uint64_t)INT64_MAX ? (int64_t)v->as.u : 0;
    default:
        return 0;
    }
}

uint64_t fw_val_uint(const fw_val_t *v) {
    switch (fw_val_kind_of(v)) {
    case FW_VAL_UINT:
        return v->as.u;
    case FW_VAL_INT:
        return v->as.i >= 0 ? (uint64_t)v->as.i : 0;
    default:
        return 0;
    }
}

bool fw_val_bool(const fw_val_t *v) {
    return fw_val_kind_of(v) == FW_VAL_BOOL && v->as.b;
}

double fw_val_double(const fw_val_t *v) {
    switch (fw_val_kind_of(v)) {
    case FW_VAL_DOUBLE:
        return v->as.d;
    case FW_VAL_INT:
        return (double)v->as.i;
    case FW_VAL_UINT:
        return (double)v->as.u;
    default:
        return 0.0;
    }
}

/* ------------------------------------------------------------ containers */

static int s_grow(fw_val_t *c) {
    if (c->len < c->cap) return 0;
    uint32_t ncap = c->cap ? c->cap * 2 : 4;
    fw_val_t *items = fwp_realloc(c->as.items, ncap * sizeof *items);
    if (!items) return fw_err_set(FW_ENOMEM, "out of memory growing a container");
    c->as.items = items;
    if (c->kind == FW_VAL_MAP) {
        char **keys = fwp_realloc(c->keys, ncap * sizeof *keys);
        if (!keys) return fw_err_set(FW_ENOMEM, "out of memory growing a map");
        c->keys = keys;
    }
    c->cap = ncap;
    return 0;
}

/* The slot for key in map (existing: cleared; new: appended), or NULL. */
static fw_val_t *s_map_slot(fw_val_t *map, const char *key) {
    if (fw_val_kind_of(map) != FW_VAL_MAP || !key) {
        fw_err_set(FW_EINVAL, "fw_val_map_set: not a map or no key");
        return NULL;
    }
    for (uint32_t i = 0; i < map->len; i++)
        if (strcmp(map->keys[i], key) == 0) {
            fwp_val_clear(&map->as.items[i]);
            return &map->as.items[i];
        }
    if (s_grow(map) < 0) return NULL;
    char *k = fwp_strdup(key);
    if (!k) {
        fw_err_set(FW_ENOMEM, "out of memory copying a key");
        return NULL;
    }
    map->keys[map->len] = k;
    fw_val_t *slot = &map->as.items[map->len++];
    memset(slot, 0, sizeof *slot);
    return slot;
}

static fw_val_t *s_array_slot(fw_val_t *arr) {
    if (fw_val_kind_of(arr) != FW_VAL_ARRAY) {
        fw_err_set(FW_EINVAL, "fw_val_array_push: not an array");
        return NULL;
    }
    if (s_grow(arr) < 0) return NULL;
    fw_val_t *slot = &arr->as.items[arr->len++];
    memset(slot, 0, sizeof *slot);
    return slot;
}

/* A slot is appended before its value is made; if making the value fails the
 * slot stays as NIL, which is harmless and keeps the container consistent. */
static int s_put_str(fw_val_t *slot, const char *s) {
    if (!slot) return FW_EINVAL;
    if (!s) return fw_err_set(FW_EINVAL, "NULL string");
    int rc = fwp_val_set_str(slot, s, strlen(s));
    if (rc < 0) slot->kind = FW_VAL_NIL;
    return rc;
}

static int s_put_bin(fw_val_t *slot, const void *data, size_t len) {
    if (!slot) return FW_EINVAL;
    if (!data && len) return fw_err_set(FW_EINVAL, "NULL data");
    if (len > UINT32_MAX) return fw_err_set(FW_ETOOBIG, "%zu bytes", len);
    int rc = fwp_val_set_bin(slot, data, len);
    if (rc < 0) slot->kind = FW_VAL_NIL;
    return rc;
}

static int s_put_int(fw_val_t *slot, int64_t v) {
    if (!slot) return FW_EINVAL;
    if (v >= 0) {
        slot->kind = FW_VAL_UINT;
        slot->as.u = (uint64_t)v;
    } else {
        slot->kind = FW_VAL_INT;
        slot->as.i = v;
    }
    return 0;
}

static int s_put_uint(fw_val_t *slot, uint64_t v) {
    if (!slot) return FW_EINVAL;
    slot->kind = FW_VAL_UINT;
    slot->as.u = v;
    return 0;
}

static int s_put_bool(fw_val_t *slot, bool v) {
    if (!slot) return FW_EINVAL;
    slot->kind = FW_VAL_BOOL;
    slot->as.b = v;
    return 0;
}

static int s_put_double(fw_val_t *slot, double v) {
    if (!slot) return FW_EINVAL;
    slot->kind = FW_VAL_DOUBLE;
    slot->as.d = v;
    return 0;
}

static int s_put_nil(fw_val_t *slot) {
    if (!slot) return FW_EINVAL;
    slot->kind = FW_VAL_NIL;
    return 0;
}

static int s_put_child(fw_val_t *slot, fw_val_t **child) {
    if (!slot) {
        fw_val_destroy(child);
        return FW_EINVAL;
    }
    if (!child || !*child) {
        slot->kind = FW_VAL_NIL;
        return fw_err_set(FW_EINVAL, "NULL child value");
    }
    *slot = **child; /* move the contents, free the shell */
    free(*child);
    *child = NULL;
    return 0;
}

int fw_val_map_set_str(fw_val_t *m, const char *k, const char *s) {
    return s_put_str(s_map_slot(m, k), s);
}
int fw_val_map_set_bin(fw_val_t *m, const char *k, const void *d, size_t n) {
    return s_put_bin(s_map_slot(m, k), d, n);
}
int fw_val_map_set_int(fw_val_t *m, const char *k, int64_t v) {
    return s_put_int(s_map_slot(m, k), v);
}
int fw_val_map_set_uint(fw_val_t *m, const char *k, uint64_t v) {
    return s_put_uint(s_map_slot(m, k), v);
}
int fw_val_map_set_bool(fw_val_t *m, const char *k, bool v) {
    return s_put_bool(s_map_slot(m, k), v);
}
int fw_val_map_set_double(fw_val_t *m, const char *k, double v) {
    return s_put_double(s_map_slot(m, k), v);
}
int fw_val_map_set_nil(fw_val_t *m, const char *k) {
    return s_put_nil(s_map_slot(m, k));
}
int fw_val_map_set(fw_val_t *m, const char *k, fw_val_t **child) {
    if (!child || !*child) return fw_err_set(FW_EINVAL, "NULL child value");
    return s_put_child(s_map_slot(m, k), child);
}

int fw_val_array_push_str(fw_val_t *a, const char *s) {
    return s_put_str(s_array_slot(a), s);
}
int fw_val_array_push_bin(fw_val_t *a, const void *d, size_t n) {
    return s_put_bin(s_array_slot(a), d, n);
}
int fw_val_array_push_int(fw_val_t *a, int64_t v) {
    return s_put_int(s_array_slot(a), v);
}
int fw_val_array_push_uint(fw_val_t *a, uint64_t v) {
    return s_put_uint(s_array_slot(a), v);
}
int fw_val_array_push_bool(fw_val_t *a, bool v) {
    return s_put_bool(s_array_slot(a), v);
}
int fw_val_array_push_double(fw_val_t *a, double v) {
    return s_put_double(s_array_slot(a), v);
}
int fw_val_array_push_nil(fw_val_t *a) {
    return s_put_nil(s_array_slot(a));
}
int fw_val_array_push(fw_val_t *a, fw_val_t **child) {
    if (!child || !*child) return fw_err_set(FW_EINVAL, "NULL child value");
    return s_put_child(s_array_slot(a), child);
}

const fw_val_t *fw_val_map_get(const fw_val_t *map, const char *key) {
    if (fw_val_kind_of(map) != FW_VAL_MAP || !key) return NULL;
    for (uint32_t i = 0; i < map->len; i++)
        if (strcmp(map->keys[i], key) == 0) return &map->as.items[i];
    return NULL;
}

const char *fw_val_map_key(const fw_val_t *map, size_t i) {
    return fw_val_kind_of(map) == FW_VAL_MAP && i < map->len ? map->keys[i] : NULL;
}

const char *fw_val_map_str(const fw_val_t *map, const char *key) {
    return fw_val_str(fw_val_map_get(map, key));
}
int64_t fw_val_map_int(const fw_val_t *map, const char *key) {
    return fw_val_int(fw_val_map_get(map, key));
}
uint64_t fw_val_map_uint(const fw_val_t *map, const char *key) {
    return fw_val_uint(fw_val_map_get(map, key));
}

const fw_val_t *fw_val_at(const fw_val_t *v, size_t i) {
    fw_val_kind k = fw_val_kind_of(v);
    if ((k != FW_VAL_ARRAY && k != FW_VAL_MAP) || i >= v->len) return NULL;
    return &v->as.items[i];
}

/* ------------------------------------------------------------ schema check
 * The path ("AGENT_REGISTER.resources.gpus[1].name") is built as the check
 * descends; setters are not a hot path. */

typedef struct {
    char path[256];
} s_chk;

static const char *s_kind_name(fw_val_kind k) {
    static const char *names[] = {"none",   "nil", "bool", "int",   "uint",
                                  "double", "str", "bin",  "array", "map"};
    return (unsigned)k < sizeof names / sizeof *names ? names[k] : "?";
}

static int s_check_key(s_chk *c, const char *key) {
    size_t n = strlen(key);
    if (n > FW_PROTO_MAX_KEY)
        return fw_err_set(FW_ETOOBIG, "%s: key of %zu bytes, max %u", c->path, n, FW_PROTO_MAX_KEY);
    if (!fwp_utf8_ok((const uint8_t *)key, n))
        return fw_err_set(FW_EINVAL, "%s: key is not valid UTF-8", c->path);
    return 0;
}

static int s_check_str(s_chk *c, const fw_val_t *v, uint64_t max) {
    if (fw_val_kind_of(v) != FW_VAL_STR)
        return fw_err_set(FW_EINVAL, "%s: expected str, got %s", c->path,
                          s_kind_name(fw_val_kind_of(v)));
    if (max && v->len > max)
        return fw_err_set(FW_ETOOBIG, "%s: %u bytes, max %llu", c->path, v->len,
                          (unsigned long long)max);
    if (!fwp_utf8_ok((const uint8_t *)v->as.s, v->len))
        return fw_err_set(FW_EINVAL, "%s: not valid UTF-8 (or holds a NUL byte)", c->path);
    return 0;
}

static int s_check_container(s_chk *c, const fw_val_t *v, fw_val_kind want, uint64_t max,
                             int depth) {
    if (fw_val_kind_of(v) != want)
        return fw_err_set(FW_EINVAL, "%s: expected %s, got %s", c->path, s_kind_name(want),
                          s_kind_name(fw_val_kind_of(v)));
    if (depth > FW_PROTO_MAX_DEPTH)
        return fw_err_set(FW_ETOOBIG, "%s: nested deeper than %d", c->path, FW_PROTO_MAX_DEPTH);
    if (max && v->len > max)
        return fw_err_set(FW_ETOOBIG, "%s: %u entries, max %llu", c->path, v->len,
                          (unsigned long long)max);
    return 0;
}

/* Append "[i]" or ".key" to the path; returns the old length to restore. */
static size_t s_push(s_chk *c, const char *key, size_t index) {
    size_t n = strlen(c->path);
    if (key)
        snprintf(c->path + n, sizeof c->path - n, ".%s", key);
    else
        snprintf(c->path + n, sizeof c->path - n, "[%zu]", index);
    return n;
}

static int s_check_any(s_chk *c, const fw_val_t *v, int depth) {
    int rc = 0;
    switch (fw_val_kind_of(v)) {
    case FW_VAL_NONE:
        return fw_err_set(FW_EINVAL, "%s: empty value", c->path);
    case FW_VAL_STR:
        return s_check_str(c, v, FW_PROTO_MAX_ITEM_STR);
    case FW_VAL_BIN:
        if (v->len > FW_PROTO_MAX_ITEM_STR)
            return fw_err_set(FW_ETOOBIG, "%s: %u bytes, max %u", c->path, v->len,
                              FW_PROTO_MAX_ITEM_STR);
        return 0;
    case FW_VAL_ARRAY:
    case FW_VAL_MAP:
        if ((rc = s_check_container(c, v, (fw_val_kind)v->kind, FW_PROTO_MAX_ITEMS, depth)) < 0)
            return rc;
        for (uint32_t i = 0; i < v->len && rc == 0; i++) {
            if (v->kind == FW_VAL_MAP && (rc = s_check_key(c, v->keys[i])) < 0) break;
            size_t at = s_push(c, v->kind == FW_VAL_MAP ? v->keys[i] : NULL, i);
            rc = s_check_any(c, &v->as.items[i], depth + 1);
            c->path[at] = '\0';
        }
        return rc;
    default:
        return 0;
    }
}

static int s_check_rec(s_chk *c, const fw_val_t *v, fw_rec_id rec, int depth);

/* |x| without overflow for INT64_MIN. */
static uint64_t s_magnitude(int64_t x) {
    return x < 0 ? (uint64_t)(-(x + 1)) + 1 : (uint64_t)x;
}

/* Check v against the field's type. depth: the depth a container here has. */
static int s_check_field(s_chk *c, const fw_field_info *f, const fw_val_t *v, int depth) {
    fw_val_kind k = fw_val_kind_of(v);
    int rc = 0;
    switch (f->type) {
    case FW_T_BOOL:
        if (k != FW_VAL_BOOL) goto wrong;
        return 0;
    case FW_T_INT:
        if (k != FW_VAL_INT && !(k == FW_VAL_UINT && v->as.u <= (uint64_t)INT64_MAX)) goto wrong;
        if (f->max && s_magnitude(fw_val_int(v)) > f->max)
            return fw_err_set(FW_ETOOBIG, "%s: %lld beyond +-%llu", c->path,
                              (long long)fw_val_int(v), (unsigned long long)f->max);
        return 0;
    case FW_T_UINT:
        if (k != FW_VAL_UINT) goto wrong;
        if (f->max && v->as.u > f->max)
            return fw_err_set(FW_ETOOBIG, "%s: %llu above max %llu", c->path,
                              (unsigned long long)v->as.u, (unsigned long long)f->max);
        return 0;
    case FW_T_DOUBLE:
        if (k != FW_VAL_DOUBLE) goto wrong;
        return 0;
    case FW_T_STR:
    case FW_T_JSON:
        return s_check_str(c, v, f->max);
    case FW_T_BIN:
        if (k != FW_VAL_BIN) goto wrong;
        if (f->max && v->len > f->max)
            return fw_err_set(FW_ETOOBIG, "%s: %u bytes, max %llu", c->path, v->len,
                              (unsigned long long)f->max);
        return 0;
    case FW_T_STRLIST:
    case FW_T_UINTLIST:
    case FW_T_RECLIST:
        if ((rc = s_check_container(c, v, FW_VAL_ARRAY, f->max, depth)) < 0) return rc;
        for (uint32_t i = 0; i < v->len && rc == 0; i++) {
            const fw_val_t *it = &v->as.items[i];
            size_t at = s_push(c, NULL, i);
            if (f->type == FW_T_STRLIST)
                rc = s_check_str(c, it, FW_PROTO_MAX_ITEM_STR);
            else if (f->type == FW_T_UINTLIST)
                rc = fw_val_kind_of(it) == FW_VAL_UINT
                         ? 0
                         : fw_err_set(FW_EINVAL, "%s: expected uint, got %s", c->path,
                                      s_kind_name(fw_val_kind_of(it)));
            else
                rc = s_check_rec(c, it, f->rec, depth + 1);
            c->path[at] = '\0';
        }
        return rc;
    case FW_T_STRMAP:
    case FW_T_MAP:
        if ((rc = s_check_container(c, v, FW_VAL_MAP, f->max, depth)) < 0) return rc;
        for (uint32_t i = 0; i < v->len && rc == 0; i++) {
            if ((rc = s_check_key(c, v->keys[i])) < 0) break;
            size_t at = s_push(c, v->keys[i], 0);
            rc = f->type == FW_T_STRMAP ? s_check_str(c, &v->as.items[i], FW_PROTO_MAX_ITEM_STR)
                                        : s_check_any(c, &v->as.items[i], depth + 1);
            c->path[at] = '\0';
        }
        return rc;
    case FW_T_REC:
        return s_check_rec(c, v, f->rec, depth);
    }
wrong:
    return fw_err_set(FW_EINVAL, "%s: a %s field cannot hold a %s", c->path,
                      fw_proto_type_name(f->type), s_kind_name(k));
}

static int s_check_rec(s_chk *c, const fw_val_t *v, fw_rec_id rec, int depth) {
    const fw_msg_info *ri = fw_proto_rec_info(rec);
    int rc = s_check_container(c, v, FW_VAL_MAP, 0, depth);
    if (rc < 0) return rc;
    if (!ri) return fw_err_set(FW_EINVAL, "%s: no record schema", c->path);
    /* Every key must be a field of the record: a typo is a bug to report now,
     * not a field the peer silently skips. */
    for (uint32_t i = 0; i < v->len; i++) {
        const fw_field_info *f = NULL;
        for (int j = 0; j < ri->nfields && !f; j++)
            if (strcmp(ri->fields[j].name, v->keys[i]) == 0) f = &ri->fields[j];
        if (!f)
            return fw_err_set(FW_EINVAL, "%s: record %s has no field '%s'", c->path, ri->name,
                              v->keys[i]);
        size_t at = s_push(c, v->keys[i], 0);
        rc = s_check_field(c, f, &v->as.items[i], depth + 1);
        c->path[at] = '\0';
        if (rc < 0) return rc;
    }
    for (int j = 0; j < ri->nfields; j++)
        if (ri->fields[j].required && ri->fields[j].since <= FW_PROTO_VERSION &&
            !fw_val_map_get(v, ri->fields[j].name))
            return fw_err_set(FW_EINVAL, "%s: required field '%s' of %s is not set", c->path,
                              ri->fields[j].name, ri->name);
    return 0;
}

int fwp_check_value(const char *owner, const fw_field_info *f, const fw_val_t *v) {
    s_chk c;
    snprintf(c.path, sizeof c.path, "%s.%s", owner, f->name);
    return s_check_field(&c, f, v, 1);
}
