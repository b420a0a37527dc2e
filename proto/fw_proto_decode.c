/* fw_proto_decode.c - frame -> message: a strict, bounded msgpack reader.
 *
 * Theory of operation. msgpack-c's unpacker trusts declared lengths (it
 * allocates what a header announces) and has no depth or size limits, so the
 * decoder reads frames itself with a cursor over the buffer. It is driven by
 * the schema: at each position it knows which type and bound to expect.
 *
 * Invariants (each is what a hostile frame would try to break):
 *   1. No read past the end: every header's declared length is checked
 *      against the bytes left before the cursor moves (s_head).
 *   2. Nothing is allocated before it is checked: a declared str/bin length
 *      against the field's MAX, a container's entry count against MAX, the
 *      bytes left (an entry takes at least one byte) and the value budget
 *      FW_PROTO_MAX_VALUES, an lz4 field's declared content size against
 *      the field's MAX and the frame's inflation budget (FW_PROTO_MAX_FRAME).
 *      So a frame of n bytes costs O(n) time and O(n + values) memory.
 *   3. Depth is bounded by FW_PROTO_MAX_DEPTH, also inside skipped unknown
 *      fields, so recursion is bounded.
 *   4. On any error the partly built message is freed whole: containers are
 *      allocated zeroed and their length counts every slot that may hold
 *      something, so fwp_val_clear() frees exactly what was made.
 *   5. Strings are valid UTF-8 without NUL bytes, so getters can hand out C
 *      strings; map keys are unique.
 *
 * Errors: FW_EPROTO for malformed input (truncation, wrong type, missing
 * field, bad magic, unknown id, corrupt lz4), FW_ETOOBIG for a limit,
 * FW_EVERSION for the protocol version. The detail names the place, e.g.
 * "AGENT_REGISTER.resources.gpus[1].name: expected str, got uint (byte 97)".
 *
 * Forward compatibility: unknown keys in a payload or record map are skipped
 * (bounded as above), so a newer peer may add optional fields without a
 * version bump. Nil stands for "absent" for a payload or record field. */
#include "fw_proto_int.h"

#include "fw_err.h"

#include <lz4frame.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What a msgpack header announced. Integers are normalised: non-negative
 * values are S_UINT whatever their encoding, negative ones S_INT. */
typedef enum { S_NIL, S_BOOL, S_UINT, S_INT, S_FLOAT, S_STR, S_BIN, S_ARRAY, S_MAP, S_EXT } s_kind;

typedef struct {
    s_kind kind;
    bool b;
    uint64_t u;
    int64_t i;
    double d;
    uint32_t n; /* STR/BIN/EXT: bytes that follow; ARRAY/MAP: entries */
    int8_t ext; /* EXT: type */
    size_t at;  /* offset of the header, for error messages */
} s_head;

typedef struct {
    const char *key; /* NULL: an array index */
    size_t key_len;
    size_t index;
} s_step;

typedef struct {
    const uint8_t *start, *p, *end;
    int version;
    size_t values;     /* against FW_PROTO_MAX_VALUES */
    size_t inflated;   /* against FW_PROTO_MAX_FRAME */
    const char *where; /* "envelope" or the message name */
    s_step path[FW_PROTO_MAX_DEPTH + 4];
    int depth; /* entries of path in use */
} s_rd;

static const char *s_kind_name(s_kind k) {
    static const char *names[] = {"nil", "bool", "uint",  "int", "float",
                                  "str", "bin",  "array", "map", "ext"};
    return names[k];
}

/* Record err with "<where><path>: <problem> (byte N)" as the detail. */
static int s_fail(s_rd *r, int err, size_t at, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int s_fail(s_rd *r, int err, size_t at, const char *fmt, ...) {
    char where[256], what[256];
    size_t n = (size_t)snprintf(where, sizeof where, "%s", r->where);
    for (int i = 0; i < r->depth && n < sizeof where; i++) {
        const s_step *s = &r->path[i];
        if (s->key)
            n += (size_t)snprintf(where + n, sizeof where - n, ".%.*s",
                                  (int)(s->key_len > 64 ? 64 : s->key_len), s->key);
        else
            n += (size_t)snprintf(where + n, sizeof where - n, "[%zu]", s->index);
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return fw_err_set(err, "%s: %s (byte %zu)", where, what, at);
}

static size_t s_left(const s_rd *r) {
    return (size_t)(r->end - r->p);
}
static size_t s_off(const s_rd *r) {
    return (size_t)(r->p - r->start);
}

static uint64_t s_be(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = (v << 8) | p[i];
    return v;
}

/* Take n bytes of header payload; EPROTO if the frame ends first. */
static int s_take(s_rd *r, size_t n, size_t at, const uint8_t **out) {
    if (s_left(r) < n)
        return s_fail(r, FW_EPROTO, at, "truncated: needs %zu more bytes, %zu left", n, s_left(r));
    *out = r->p;
    r->p += n;
    return 0;
}

/* Read one header (and a scalar's value). For STR/BIN/EXT the cursor stops
 * at the data, which is checked to be there; for containers the entry count
 * is checked against what the bytes left could possibly hold. */
static int s_head_read(s_rd *r, s_head *h) {
    memset(h, 0, sizeof *h);
    h->at = s_off(r);
    if (!s_left(r)) return s_fail(r, FW_EPROTO, h->at, "truncated: a value is missing");
    uint8_t c = *r->p++;
    const uint8_t *q = NULL;
    int rc = 0, lenbytes = 0;
    if (c <= 0x7f) {
        h->kind = S_UINT;
        h->u = c;
    } else if (c >= 0xe0) {
        h->kind = S_INT;
        h->i = (int8_t)c;
    } else if (c <= 0x8f) {
        h->kind = S_MAP;
        h->n = c & 0x0f;
    } else if (c <= 0x9f) {
        h->kind = S_ARRAY;
        h->n = c & 0x0f;
    } else if (c <= 0xbf) {
        h->kind = S_STR;
        h->n = c & 0x1f;
    } else {
        switch (c) {
        case 0xc0:
            h->kind = S_NIL;
            break;
        case 0xc2:
        case 0xc3:
            h->kind = S_BOOL;
            h->b = c == 0xc3;
            break;
        case 0xc4:
        case 0xc5:
        case 0xc6:
            h->kind = S_BIN;
            lenbytes = 1 << (c - 0xc4);
            break;
        case 0xc7:
        case 0xc8:
        case 0xc9:
            h->kind = S_EXT;
            lenbytes = 1 << (c - 0xc7);
            break;
        case 0xca:
        case 0xcb: {
            if ((rc = s_take(r, c == 0xca ? 4 : 8, h->at, &q)) < 0) return rc;
            h->kind = S_FLOAT;
            if (c == 0xca) {
                uint32_t bits = (uint32_t)s_be(q, 4);
                float f;
                memcpy(&f, &bits, 4);
                h->d = f;
            } else {
                uint64_t bits = s_be(q, 8);
                memcpy(&h->d, &bits, 8);
            }
            break;
        }
        case 0xcc:
        case 0xcd:
        case 0xce:
        case 0xcf: {
            int n = 1 << (c - 0xcc);
            if ((rc = s_take(r, (size_t)n, h->at, &q)) < 0) return rc;
            h->kind = S_UINT;
            h->u = s_be(q, n);
            break;
        }
        case 0xd0:
        case 0xd1:
        case 0xd2:
        case 0xd3: {
            int n = 1 << (c - 0xd0);
            if ((rc = s_take(r, (size_t)n, h->at, &q)) < 0) return rc;
            uint64_t raw = s_be(q, n);
            /* Sign-extend from n bytes. */
            int64_t v = n == 8 ? (int64_t)raw : (int64_t)(raw << (64 - 8 * n)) >> (64 - 8 * n);
            if (v >= 0) {
                h->kind = S_UINT;
                h->u = (uint64_t)v;
            } else {
                h->kind = S_INT;
                h->i = v;
            }
            break;
        }
        case 0xd4:
        case 0xd5:
        case 0xd6:
        case 0xd7:
        case 0xd8:
            if ((rc = s_take(r, 1, h->at, &q)) < 0) return rc;
            h->kind = S_EXT;
            h->ext = (int8_t)q[0];
            h->n = 1u << (c - 0xd4);
            break;
        case 0xd9:
        case 0xda:
        case 0xdb:
            h->kind = S_STR;
            lenbytes = 1 << (c - 0xd9);
            break;
        case 0xdc:
        case 0xdd:
            h->kind = S_ARRAY;
            lenbytes = c == 0xdc ? 2 : 4;
            break;
        case 0xde:
        case 0xdf:
            h->kind = S_MAP;
            lenbytes = c == 0xde ? 2 : 4;
            break;
        default:
            return s_fail(r, FW_EPROTO, h->at, "invalid msgpack byte 0x%02x", c);
        }
    }
    if (lenbytes) {
        if ((rc = s_take(r, (size_t)lenbytes, h->at, &q)) < 0) return rc;
        h->n = (uint32_t)s_be(q, lenbytes);
        if (h->kind == S_EXT) {
            if ((rc = s_take(r, 1, h->at, &q)) < 0) return rc;
            h->ext = (int8_t)q[0];
        }
    }
    size_t need = h->n;
    if (h->kind == S_MAP) need = 2 * (size_t)h->n;
    if ((h->kind == S_STR || h->kind == S_BIN || h->kind == S_EXT) && need > s_left(r))
        return s_fail(r, FW_EPROTO, h->at, "%s declares %zu bytes, only %zu left in the frame",
                      s_kind_name(h->kind), need, s_left(r));
    if ((h->kind == S_ARRAY || h->kind == S_MAP) && need > s_left(r))
        return s_fail(r, FW_EPROTO, h->at,
                      "%s declares %u entries, only %zu bytes left in the frame",
                      s_kind_name(h->kind), h->n, s_left(r));
    return 0;
}

static int s_wrong(s_rd *r, const s_head *h, const char *want) {
    return s_fail(r, FW_EPROTO, h->at, "expected %s, got %s", want, s_kind_name(h->kind));
}

/* `more` values decoded; FW_ETOOBIG past the frame's budget. */
static int s_count(s_rd *r, size_t at, size_t more) {
    if (more > FW_PROTO_MAX_VALUES - r->values)
        return s_fail(r, FW_ETOOBIG, at, "more than %d values in one frame", FW_PROTO_MAX_VALUES);
    r->values += more;
    return 0;
}

/* Skip one value of an unknown field without allocating. depth: the depth a
 * container here would have. */
static int s_skip(s_rd *r, int depth) {
    s_head h;
    int rc = s_head_read(r, &h);
    if (rc < 0) return rc;
    switch (h.kind) {
    case S_STR:
    case S_BIN:
    case S_EXT:
        r->p += h.n;
        return 0; /* s_head_read checked the bytes are there */
    case S_ARRAY:
    case S_MAP: {
        if (depth > FW_PROTO_MAX_DEPTH)
            return s_fail(r, FW_ETOOBIG, h.at, "nested deeper than %d", FW_PROTO_MAX_DEPTH);
        size_t n = h.kind == S_MAP ? 2 * (size_t)h.n : h.n;
        for (size_t i = 0; i < n; i++)
            if ((rc = s_skip(r, depth + 1)) < 0) return rc;
        return 0;
    }
    default:
        return 0;
    }
}

/* Copy a str of h->n bytes at the cursor into v, after the bound and the
 * UTF-8 check (both before allocating). max 0: no bound beyond the frame. */
static int s_str(s_rd *r, const s_head *h, fw_val_t *v, uint64_t max) {
    if (max && h->n > max)
        return s_fail(r, FW_ETOOBIG, h->at, "str of %u bytes, max %llu", h->n,
                      (unsigned long long)max);
    if (!fwp_utf8_ok(r->p, h->n))
        return s_fail(r, FW_EPROTO, h->at, "str is not valid UTF-8 or holds a NUL byte");
    int rc = fwp_val_set_str(v, (const char *)r->p, h->n);
    if (rc < 0) return rc;
    r->p += h->n;
    return 0;
}

static int s_bin(s_rd *r, const s_head *h, fw_val_t *v, uint64_t max) {
    if (max && h->n > max)
        return s_fail(r, FW_ETOOBIG, h->at, "bin of %u bytes, max %llu", h->n,
                      (unsigned long long)max);
    int rc = fwp_val_set_bin(v, r->p, h->n);
    if (rc < 0) return rc;
    r->p += h->n;
    return 0;
}

/* An lz4 ext (a standard LZ4 frame with content size and checksum) holding
 * a STR (as_str) or BIN field. The declared content size is checked against
 * the field's bound and the frame's inflation budget before the output is
 * allocated; LZ4F decodes within the buffer and verifies size and checksum. */
static int s_lz4(s_rd *r, const s_head *h, fw_val_t *v, uint64_t max, bool as_str) {
    if (h->ext != FW_PROTO_EXT_LZ4)
        return s_fail(r, FW_EPROTO, h->at, "unknown ext type %d", h->ext);
    LZ4F_dctx *dctx = NULL;
    if (LZ4F_isError(LZ4F_createDecompressionContext(&dctx, LZ4F_VERSION)))
        return fw_err_set(FW_ENOMEM, "out of memory for an lz4 context");
    int rc = 0;
    uint8_t *out = NULL;
    LZ4F_frameInfo_t fi;
    memset(&fi, 0, sizeof fi); /* a header it cannot parse leaves it untouched */
    size_t hdr = h->n;
    size_t ret = LZ4F_getFrameInfo(dctx, &fi, r->p, &hdr);
    if (LZ4F_isError(ret)) {
        rc = s_fail(r, FW_EPROTO, h->at, "lz4 frame header corrupt: %s", LZ4F_getErrorName(ret));
        goto done;
    }
    if (hdr > h->n) {
        rc = s_fail(r, FW_EPROTO, h->at, "lz4 frame header truncated");
        goto done;
    }
    if (fi.contentSize == 0 || fi.contentChecksumFlag != LZ4F_contentChecksumEnabled) {
        rc = s_fail(r, FW_EPROTO, h->at, "lz4 frame lacks its content size or checksum");
        goto done;
    }
    unsigned long long size = fi.contentSize;
    if ((max && size > max) || size > FW_PROTO_MAX_FRAME - r->inflated) {
        rc = s_fail(r, FW_ETOOBIG, h->at,
                    "lz4 field inflates to %llu bytes, max %llu (%zu of %u left in frame)", size,
                    (unsigned long long)(max ? max : FW_PROTO_MAX_FRAME),
                    FW_PROTO_MAX_FRAME - r->inflated, FW_PROTO_MAX_FRAME);
        goto done;
    }
    out = fwp_malloc((size_t)size + 1);
    if (!out) {
        rc = fw_err_set(FW_ENOMEM, "out of memory inflating %llu bytes", size);
        goto done;
    }
    const uint8_t *src = r->p + hdr;
    size_t src_left = h->n - hdr, produced = 0;
    for (;;) {
        size_t dst_n = (size_t)size - produced, src_n = src_left;
        ret = LZ4F_decompress(dctx, out + produced, &dst_n, src, &src_n, NULL);
        if (LZ4F_isError(ret)) {
            rc = s_fail(r, FW_EPROTO, h->at, "lz4 data corrupt: %s", LZ4F_getErrorName(ret));
            goto done;
        }
        produced += dst_n;
        src += src_n;
        src_left -= src_n;
        if (ret == 0) break; /* frame complete: size and checksum verified */
        if (src_n == 0 && dst_n == 0) {
            rc = s_fail(r, FW_EPROTO, h->at, "lz4 data truncated or larger than declared");
            goto done;
        }
    }
    if (produced != size || src_left != 0) {
        rc = s_fail(r, FW_EPROTO, h->at, "lz4 data does not match its declared size");
        goto done;
    }
    if (as_str && !fwp_utf8_ok(out, (size_t)size)) {
        rc = s_fail(r, FW_EPROTO, h->at, "str is not valid UTF-8 or holds a NUL byte");
        goto done;
    }
    r->inflated += (size_t)size;
    r->p += h->n;
    v->len = (uint32_t)size;
    if (as_str) {
        out[size] = '\0';
        v->kind = FW_VAL_STR;
        v->as.s = (char *)out;
    } else {
        v->kind = FW_VAL_BIN;
        v->as.bin = out;
    }
    out = NULL;
done:
    free(out);
    LZ4F_freeDecompressionContext(dctx);
    return rc;
}

/* Allocate a zeroed container of h->n entries in v after the checks. */
static int s_container(s_rd *r, const s_head *h, fw_val_t *v, uint64_t max, int depth) {
    if (depth > FW_PROTO_MAX_DEPTH)
        return s_fail(r, FW_ETOOBIG, h->at, "nested deeper than %d", FW_PROTO_MAX_DEPTH);
    if (max && h->n > max)
        return s_fail(r, FW_ETOOBIG, h->at, "%s of %u entries, max %llu", s_kind_name(h->kind),
                      h->n, (unsigned long long)max);
    int rc = s_count(r, h->at, h->n);
    if (rc < 0) return rc;
    r->values -= h->n; /* reserved only; each entry counts itself when decoded */
    v->kind = h->kind == S_MAP ? FW_VAL_MAP : FW_VAL_ARRAY;
    if (!h->n) return 0;
    v->as.items = fwp_calloc(h->n, sizeof *v->as.items);
    if (h->kind == S_MAP) v->keys = fwp_calloc(h->n, sizeof *v->keys);
    if (!v->as.items || (h->kind == S_MAP && !v->keys)) {
        free(v->as.items);
        free(v->keys);
        memset(v, 0, sizeof *v);
        return fw_err_set(FW_ENOMEM, "out of memory for %u entries", h->n);
    }
    v->cap = h->n;
    return 0;
}

/* Read a map key into a fresh string (generic maps). */
static int s_key(s_rd *r, char **out, const uint8_t **raw, uint32_t *raw_len) {
    s_head h;
    int rc = s_head_read(r, &h);
    if (rc < 0) return rc;
    if (h.kind != S_STR) return s_wrong(r, &h, "str key");
    if (h.n > FW_PROTO_MAX_KEY)
        return s_fail(r, FW_ETOOBIG, h.at, "key of %u bytes, max %d", h.n, FW_PROTO_MAX_KEY);
    *raw = r->p;
    *raw_len = h.n;
    if (out) {
        if (!fwp_utf8_ok(r->p, h.n))
            return s_fail(r, FW_EPROTO, h.at, "key is not valid UTF-8 or holds a NUL byte");
        char *k = fwp_malloc(h.n + 1u);
        if (!k) return fw_err_set(FW_ENOMEM, "out of memory for a key");
        memcpy(k, r->p, h.n);
        k[h.n] = '\0';
        *out = k;
    }
    r->p += h.n;
    return 0;
}

static int s_keycmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Maps must not repeat a key. Sorting a copy of the key pointers keeps the
 * check O(n log n), so a map of thousands of keys cannot cost seconds. */
static int s_unique_keys(s_rd *r, const fw_val_t *v, size_t at) {
    if (v->len < 2) return 0;
    const char *dup = NULL;
    if (v->len <= 8) {
        for (uint32_t i = 0; i < v->len && !dup; i++)
            for (uint32_t j = i + 1; j < v->len && !dup; j++)
                if (strcmp(v->keys[i], v->keys[j]) == 0) dup = v->keys[i];
    } else {
        char **sorted = fwp_malloc(v->len * sizeof *sorted);
        if (!sorted) return fw_err_set(FW_ENOMEM, "out of memory checking keys");
        memcpy(sorted, v->keys, v->len * sizeof *sorted);
        qsort(sorted, v->len, sizeof *sorted, s_keycmp);
        for (uint32_t i = 1; i < v->len && !dup; i++)
            if (strcmp(sorted[i - 1], sorted[i]) == 0) dup = sorted[i];
        free(sorted);
    }
    if (dup) return s_fail(r, FW_EPROTO, at, "map repeats the key '%.64s'", dup);
    return 0;
}

/* Any value inside a MAP field: no ext, bounded strings and containers. */
static int s_any(s_rd *r, fw_val_t *v, int depth) {
    s_head h;
    int rc = s_head_read(r, &h);
    if (rc < 0) return rc;
    if ((rc = s_count(r, h.at, 1)) < 0) return rc;
    switch (h.kind) {
    case S_NIL:
        v->kind = FW_VAL_NIL;
        return 0;
    case S_BOOL:
        v->kind = FW_VAL_BOOL;
        v->as.b = h.b;
        return 0;
    case S_UINT:
        v->kind = FW_VAL_UINT;
        v->as.u = h.u;
        return 0;
    case S_INT:
        v->kind = FW_VAL_INT;
        v->as.i = h.i;
        return 0;
    case S_FLOAT:
        v->kind = FW_VAL_DOUBLE;
        v->as.d = h.d;
        return 0;
    case S_STR:
        return s_str(r, &h, v, FW_PROTO_MAX_ITEM_STR);
    case S_BIN:
        return s_bin(r, &h, v, FW_PROTO_MAX_ITEM_STR);
    case S_ARRAY:
    case S_MAP:
        if ((rc = s_container(r, &h, v, FW_PROTO_MAX_ITEMS, depth)) < 0) return rc;
        v->len = h.n; /* zeroed slots: safe to clear on error */
        for (uint32_t i = 0; i < h.n; i++) {
            s_step *st = &r->path[r->depth++];
            *st = (s_step){NULL, 0, i};
            if (h.kind == S_MAP) {
                const uint8_t *raw;
                uint32_t rn;
                if ((rc = s_key(r, &v->keys[i], &raw, &rn)) == 0) {
                    st->key = v->keys[i];
                    st->key_len = rn;
                }
            }
            if (rc == 0) rc = s_any(r, &v->as.items[i], depth + 1);
            r->depth--;
            if (rc < 0) return rc;
        }
        return h.kind == S_MAP ? s_unique_keys(r, v, h.at) : 0;
    case S_EXT:
        return s_fail(r, FW_EPROTO, h.at, "ext values are not allowed inside a map");
    }
    return 0;
}

static int s_record(s_rd *r, fw_val_t *v, const fw_msg_info *ri, int depth);

/* Decode the value of field f into the empty slot v. depth: the depth a
 * container here has (1 for a payload field). top: a payload field (only
 * those may be lz4-compressed). */
static int s_field(s_rd *r, fw_val_t *v, const fw_field_info *f, int depth, bool top) {
    if (f->type == FW_T_REC) return s_record(r, v, fw_proto_rec_info(f->rec), depth);
    s_head h;
    int rc = s_head_read(r, &h);
    if (rc < 0) return rc;
    if ((rc = s_count(r, h.at, 1)) < 0) return rc;
    switch (f->type) {
    case FW_T_BOOL:
        if (h.kind != S_BOOL) return s_wrong(r, &h, "bool");
        v->kind = FW_VAL_BOOL;
        v->as.b = h.b;
        return 0;
    case FW_T_INT:
        if (h.kind == S_UINT) {
            if (h.u > (uint64_t)INT64_MAX)
                return s_fail(r, FW_EPROTO, h.at, "%llu is out of int64 range",
                              (unsigned long long)h.u);
            if (f->max && h.u > f->max)
                return s_fail(r, FW_ETOOBIG, h.at, "%llu beyond +-%llu", (unsigned long long)h.u,
                              (unsigned long long)f->max);
            v->kind = FW_VAL_UINT; /* canonical: non-negative integers are UINT */
            v->as.u = h.u;
            return 0;
        }
        if (h.kind != S_INT) return s_wrong(r, &h, "int");
        if (f->max && (uint64_t)(-(h.i + 1)) + 1 > f->max)
            return s_fail(r, FW_ETOOBIG, h.at, "%lld beyond +-%llu", (long long)h.i,
                          (unsigned long long)f->max);
        v->kind = FW_VAL_INT;
        v->as.i = h.i;
        return 0;
    case FW_T_UINT:
        if (h.kind != S_UINT) return s_wrong(r, &h, "uint");
        if (f->max && h.u > f->max)
            return s_fail(r, FW_ETOOBIG, h.at, "%llu above max %llu", (unsigned long long)h.u,
                          (unsigned long long)f->max);
        v->kind = FW_VAL_UINT;
        v->as.u = h.u;
        return 0;
    case FW_T_DOUBLE:
        /* Integers are accepted: JSON-minded clients write 1 for 1.0. */
        if (h.kind == S_FLOAT)
            v->as.d = h.d;
        else if (h.kind == S_UINT)
            v->as.d = (double)h.u;
        else if (h.kind == S_INT)
            v->as.d = (double)h.i;
        else
            return s_wrong(r, &h, "float");
        v->kind = FW_VAL_DOUBLE;
        return 0;
    case FW_T_STR:
    case FW_T_JSON:
        if (h.kind == S_STR) return s_str(r, &h, v, f->max);
        if (h.kind == S_EXT && top) return s_lz4(r, &h, v, f->max, true);
        return s_wrong(r, &h, "str");
    case FW_T_BIN:
        if (h.kind == S_BIN) return s_bin(r, &h, v, f->max);
        if (h.kind == S_EXT && top) return s_lz4(r, &h, v, f->max, false);
        return s_wrong(r, &h, "bin");
    case FW_T_STRLIST:
    case FW_T_UINTLIST:
    case FW_T_RECLIST:
        if (h.kind != S_ARRAY) return s_wrong(r, &h, "array");
        if ((rc = s_container(r, &h, v, f->max, depth)) < 0) return rc;
        v->len = h.n;
        for (uint32_t i = 0; i < h.n; i++) {
            r->path[r->depth++] = (s_step){NULL, 0, i};
            fw_val_t *it = &v->as.items[i];
            if (f->type == FW_T_RECLIST) {
                rc = s_record(r, it, fw_proto_rec_info(f->rec), depth + 1);
            } else {
                s_head e;
                if ((rc = s_head_read(r, &e)) == 0 && (rc = s_count(r, e.at, 1)) == 0) {
                    if (f->type == FW_T_STRLIST) {
                        rc = e.kind == S_STR ? s_str(r, &e, it, FW_PROTO_MAX_ITEM_STR)
                                             : s_wrong(r, &e, "str");
                    } else if (e.kind == S_UINT) {
                        it->kind = FW_VAL_UINT;
                        it->as.u = e.u;
                    } else {
                        rc = s_wrong(r, &e, "uint");
                    }
                }
            }
            r->depth--;
            if (rc < 0) return rc;
        }
        return 0;
    case FW_T_STRMAP:
    case FW_T_MAP:
        if (h.kind != S_MAP) return s_wrong(r, &h, "map");
        if ((rc = s_container(r, &h, v, f->max, depth)) < 0) return rc;
        v->len = h.n;
        for (uint32_t i = 0; i < h.n; i++) {
            const uint8_t *raw;
            uint32_t rn;
            if ((rc = s_key(r, &v->keys[i], &raw, &rn)) < 0) return rc;
            r->path[r->depth++] = (s_step){v->keys[i], rn, 0};
            if (f->type == FW_T_MAP) {
                rc = s_any(r, &v->as.items[i], depth + 1);
            } else {
                s_head e;
                if ((rc = s_head_read(r, &e)) == 0 && (rc = s_count(r, e.at, 1)) == 0)
                    rc = e.kind == S_STR ? s_str(r, &e, &v->as.items[i], FW_PROTO_MAX_ITEM_STR)
                                         : s_wrong(r, &e, "str");
            }
            r->depth--;
            if (rc < 0) return rc;
        }
        return s_unique_keys(r, v, h.at);
    case FW_T_REC:
        break; /* handled above */
    }
    return s_fail(r, FW_EPROTO, h.at, "field of unknown type");
}

/* Fields of a payload (slots = the message's slots) or of a record (slots =
 * NULL: known fields become entries of the map v). Unknown keys are skipped,
 * nil means absent, a repeated known key is an error, and required fields
 * that exist in the frame's version must be there. depth: the depth a
 * container that is a field's value has (1 in the payload). */
static int s_fields(s_rd *r, const fw_msg_info *info, fw_val_t *slots, fw_val_t *v, uint32_t n,
                    int depth, size_t at) {
    uint8_t seen[256] = {0};
    bool top = slots != NULL;
    int rc;
    for (uint32_t e = 0; e < n; e++) {
        const uint8_t *raw;
        uint32_t rn;
        if ((rc = s_key(r, NULL, &raw, &rn)) < 0) return rc;
        int fi = -1;
        for (int j = 0; j < info->nfields; j++)
            if (info->fields[j].name_len == rn && memcmp(info->fields[j].name, raw, rn) == 0) {
                fi = j;
                break;
            }
        r->path[r->depth++] = (s_step){(const char *)raw, rn, 0};
        if (fi < 0) {
            rc = s_skip(r, depth); /* forward compatibility: a newer peer's field */
        } else if (seen[fi]) {
            rc = s_fail(r, FW_EPROTO, s_off(r), "field appears twice");
        } else {
            seen[fi] = 1;
            if (s_left(r) && *r->p == 0xc0) {
                r->p++; /* nil: absent */
            } else if (top) {
                rc = s_field(r, &slots[fi], &info->fields[fi], depth, true);
            } else {
                const fw_field_info *f = &info->fields[fi];
                size_t k = v->len++; /* counted first: a failure below must free it */
                if (!(v->keys[k] = fwp_malloc(f->name_len + 1))) {
                    rc = fw_err_set(FW_ENOMEM, "out of memory for a key");
                } else {
                    memcpy(v->keys[k], f->name, f->name_len + 1);
                    rc = s_field(r, &v->as.items[k], f, depth, false);
                }
            }
        }
        r->depth--;
        if (rc < 0) return rc;
    }
    for (int j = 0; j < info->nfields; j++) {
        const fw_field_info *f = &info->fields[j];
        bool present = top ? slots[j].kind != FW_VAL_NONE : fw_val_map_get(v, f->name) != NULL;
        if (f->required && f->since <= r->version && !present)
            return s_fail(r, FW_EPROTO, at, "missing required field '%s'", f->name);
    }
    return 0;
}

/* A record: a map whose known fields are decoded into v (a map). */
static int s_record(s_rd *r, fw_val_t *v, const fw_msg_info *ri, int depth) {
    s_head h;
    int rc = s_head_read(r, &h);
    if (rc < 0) return rc;
    if ((rc = s_count(r, h.at, 1)) < 0) return rc;
    if (h.kind != S_MAP) return s_wrong(r, &h, "map");
    if (depth > FW_PROTO_MAX_DEPTH)
        return s_fail(r, FW_ETOOBIG, h.at, "nested deeper than %d", FW_PROTO_MAX_DEPTH);
    if (h.n > FW_PROTO_MAX_FIELDS)
        return s_fail(r, FW_ETOOBIG, h.at, "record of %u entries, max %d", h.n,
                      FW_PROTO_MAX_FIELDS);
    /* Room for the known fields only: unknown entries are skipped. */
    s_head known = h;
    known.n = h.n < (uint32_t)ri->nfields ? h.n : (uint32_t)ri->nfields;
    if ((rc = s_container(r, &known, v, 0, depth)) < 0) return rc;
    return s_fields(r, ri, NULL, v, h.n, depth + 1, h.at);
}

int fw_msg_decode(const void *buf, size_t len, fw_msg_t **msg) {
    if (!msg) return fw_err_set(FW_EINVAL, "fw_msg_decode: NULL msg");
    *msg = NULL;
    if (!buf && len) return fw_err_set(FW_EINVAL, "fw_msg_decode: NULL buffer");
    if (len > FW_PROTO_MAX_FRAME)
        return fw_err_set(FW_ETOOBIG, "frame of %zu bytes, max %u", len, FW_PROTO_MAX_FRAME);
    s_rd r = {.start = buf, .p = buf, .end = (const uint8_t *)buf + len, .where = "envelope"};
    s_head h;
    int rc;

    /* The envelope array, then the magic: a frame from something else fails here. */
    if (len == 0) return s_fail(&r, FW_EPROTO, 0, "empty frame");
    if ((*r.p & 0xf0) != 0x90 && *r.p != 0xdc && *r.p != 0xdd)
        return s_fail(&r, FW_EPROTO, 0, "bad magic: not a Flywheel frame (first byte 0x%02x)",
                      *r.p);
    if ((rc = s_head_read(&r, &h)) < 0) return rc;
    if (h.n < 2) return s_fail(&r, FW_EPROTO, 0, "bad magic: envelope of %u elements", h.n);
    uint32_t n_env = h.n;
    if ((rc = s_head_read(&r, &h)) < 0) return rc;
    if (h.kind != S_UINT || h.u != FW_PROTO_MAGIC)
        return s_fail(&r, FW_EPROTO, h.at, "bad magic: not a Flywheel frame");

    /* Version before the rest of the envelope, whose shape it may change. */
    if ((rc = s_head_read(&r, &h)) < 0) return rc;
    if (h.kind != S_UINT) return s_wrong(&r, &h, "uint version");
    if (h.u < FW_PROTO_MIN_VERSION || h.u > FW_PROTO_VERSION)
        return s_fail(&r, FW_EVERSION, h.at, "protocol version %llu, this build speaks %d..%d",
                      (unsigned long long)h.u, FW_PROTO_MIN_VERSION, FW_PROTO_VERSION);
    r.version = (int)h.u;
    if (n_env != 8)
        return s_fail(&r, FW_EPROTO, 0, "envelope of %u elements, version %d has 8", n_env,
                      r.version);

    uint64_t env[4]; /* id, flags, request id, epoch */
    size_t id_at = s_off(&r);
    static const char *names[] = {"message id", "flags", "request id", "epoch"};
    static const uint64_t limits[] = {0xffff, 0xffff, UINT64_MAX, UINT64_MAX};
    for (int i = 0; i < 4; i++) {
        if ((rc = s_head_read(&r, &h)) < 0) return rc;
        if (h.kind != S_UINT)
            return s_fail(&r, FW_EPROTO, h.at, "%s: expected uint, got %s", names[i],
                          s_kind_name(h.kind));
        if (h.u > limits[i])
            return s_fail(&r, FW_EPROTO, h.at, "%s %llu out of range", names[i],
                          (unsigned long long)h.u);
        env[i] = h.u;
    }
    const fw_msg_info *info = fw_proto_msg_info((int)env[0]);
    if (!info)
        return s_fail(&r, FW_EPROTO, id_at, "unknown message id %llu", (unsigned long long)env[0]);
    if (info->since > r.version)
        return s_fail(&r, FW_EPROTO, id_at, "%s appeared in version %d, the frame is version %d",
                      info->name, info->since, r.version);

    if ((rc = s_head_read(&r, &h)) < 0) return rc;
    if (h.kind != S_STR)
        return s_fail(&r, FW_EPROTO, h.at, "sender: expected str, got %s", s_kind_name(h.kind));
    if (h.n > FW_PROTO_MAX_SENDER)
        return s_fail(&r, FW_ETOOBIG, h.at, "sender of %u bytes, max %d", h.n, FW_PROTO_MAX_SENDER);
    if (!fwp_utf8_ok(r.p, h.n)) return s_fail(&r, FW_EPROTO, h.at, "sender is not valid UTF-8");
    const uint8_t *sender = r.p;
    uint32_t sender_len = h.n;
    r.p += h.n;

    r.where = info->name;
    if ((rc = s_head_read(&r, &h)) < 0) return rc;
    if (h.kind != S_MAP)
        return s_fail(&r, FW_EPROTO, h.at, "payload: expected map, got %s", s_kind_name(h.kind));
    if (h.n > FW_PROTO_MAX_FIELDS)
        return s_fail(&r, FW_ETOOBIG, h.at, "payload of %u entries, max %d", h.n,
                      FW_PROTO_MAX_FIELDS);

    fw_msg_t *m = fwp_msg_alloc(info);
    if (!m) return fw_err_set(FW_ENOMEM, "out of memory for a %s", info->name);
    m->version = (uint8_t)r.version;
    m->flags = (uint16_t)env[1];
    m->request_id = env[2];
    m->epoch = env[3];
    memcpy(m->sender, sender, sender_len);
    m->sender[sender_len] = '\0';
    if ((rc = s_fields(&r, info, m->vals, NULL, h.n, 1, h.at)) < 0) goto fail;
    if (r.p != r.end) {
        rc = s_fail(&r, FW_EPROTO, s_off(&r), "%zu trailing bytes after the message", s_left(&r));
        goto fail;
    }
    *msg = m;
    return 0;
fail:
    fw_msg_destroy(&m);
    return rc;
}
