/* fw_proto_encode.c - message -> frame, with msgpack-c's packer and lz4.
 *
 * Theory of operation. The frame is one msgpack array (docs/protocol.md):
 *
 *   [magic u32, version u8, msg_id u16, flags u16, request_id u64, epoch u64, sender str, payload
 * map]
 *
 * The envelope integers are written at fixed width (msgpack_pack_fix_*) so
 * that the first 32 bytes of every frame have one layout, which the docs
 * give byte by byte and which lets the encoder patch the flags after the
 * payload is written. The payload map holds the set fields, keyed by wire
 * name, in table order, so encoding is deterministic.
 *
 * Top-level STR/JSON/BIN fields of at least FW_PROTO_LZ4_THRESHOLD bytes are
 * written as ext type FW_PROTO_EXT_LZ4 holding a standard LZ4 frame (with the
 * content size and a content checksum) when that is smaller; FW_FLAG_LZ4 is
 * then set. The sum of the sizes of compressed fields is kept within
 * FW_PROTO_MAX_FRAME - the decoder's inflation budget - so every frame the
 * encoder produces, the decoder accepts. The output buffer refuses to grow
 * past FW_PROTO_MAX_FRAME, which stops an oversized message early. */
#include "fw_proto_int.h"

#include "fw_err.h"

#include <lz4frame.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

/* Offset of the flags' two bytes (after 98, ce+4, cc+1, cd+2, cd). */
#define S_FLAGS_AT 12

typedef struct {
    uint8_t *data;
    size_t len, cap;
    int err;         /* first error: later writes are dropped */
    size_t values;   /* values written, against FW_PROTO_MAX_VALUES */
    size_t inflated; /* original bytes of compressed fields */
    bool compressed;
} s_out;

static int s_write(void *ctx, const char *p, size_t n) {
    s_out *o = ctx;
    if (o->err) return -1;
    if (n > FW_PROTO_MAX_FRAME - o->len) {
        o->err = fw_err_set(FW_ETOOBIG, "frame would exceed %u bytes", FW_PROTO_MAX_FRAME);
        return -1;
    }
    if (o->len + n > o->cap) {
        size_t cap = o->cap ? o->cap : 256;
        while (cap < o->len + n) cap *= 2;
        if (cap > FW_PROTO_MAX_FRAME) cap = FW_PROTO_MAX_FRAME;
        uint8_t *d = fwp_realloc(o->data, cap);
        if (!d) {
            o->err = fw_err_set(FW_ENOMEM, "out of memory growing a frame to %zu bytes", cap);
            return -1;
        }
        o->data = d;
        o->cap = cap;
    }
    memcpy(o->data + o->len, p, n);
    o->len += n;
    return 0;
}

static void s_count(s_out *o) {
    if (++o->values > FW_PROTO_MAX_VALUES && !o->err)
        o->err = fw_err_set(FW_ETOOBIG, "message holds more than %d values", FW_PROTO_MAX_VALUES);
}

static void s_pack_val(msgpack_packer *pk, s_out *o, const fw_val_t *v) {
    s_count(o);
    switch (v->kind) {
    case FW_VAL_BOOL:
        v->as.b ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
        break;
    case FW_VAL_INT:
        msgpack_pack_int64(pk, v->as.i);
        break;
    case FW_VAL_UINT:
        msgpack_pack_uint64(pk, v->as.u);
        break;
    case FW_VAL_DOUBLE:
        msgpack_pack_double(pk, v->as.d);
        break;
    case FW_VAL_STR:
        msgpack_pack_str(pk, v->len);
        msgpack_pack_str_body(pk, v->as.s, v->len);
        break;
    case FW_VAL_BIN:
        msgpack_pack_bin(pk, v->len);
        if (v->len) msgpack_pack_bin_body(pk, v->as.bin, v->len);
        break;
    case FW_VAL_ARRAY:
        msgpack_pack_array(pk, v->len);
        for (uint32_t i = 0; i < v->len; i++) s_pack_val(pk, o, &v->as.items[i]);
        break;
    case FW_VAL_MAP:
        msgpack_pack_map(pk, v->len);
        for (uint32_t i = 0; i < v->len; i++) {
            size_t kn = strlen(v->keys[i]);
            msgpack_pack_str(pk, kn);
            msgpack_pack_str_body(pk, v->keys[i], kn);
            s_pack_val(pk, o, &v->as.items[i]);
        }
        break;
    default:
        msgpack_pack_nil(pk);
        break;
    }
}

/* Write a big STR/BIN as an lz4 ext if that is smaller; false if it was not
 * written (the caller then writes it plainly). */
static bool s_pack_lz4(msgpack_packer *pk, s_out *o, const void *src, size_t n) {
    if (n < FW_PROTO_LZ4_THRESHOLD || n > FW_PROTO_MAX_FRAME - o->inflated) return false;
    LZ4F_preferences_t prefs;
    memset(&prefs, 0, sizeof prefs);
    prefs.frameInfo.contentSize = n;
    prefs.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
    prefs.frameInfo.blockSizeID = LZ4F_max256KB;
    size_t bound = LZ4F_compressFrameBound(n, &prefs);
    uint8_t *tmp = fwp_malloc(bound);
    if (!tmp) return false; /* not fatal: the plain encoding still works */
    size_t c = LZ4F_compressFrame(tmp, bound, src, n, &prefs);
    bool use = !LZ4F_isError(c) && c < n;
    if (use) {
        msgpack_pack_ext(pk, c, FW_PROTO_EXT_LZ4);
        msgpack_pack_ext_body(pk, tmp, c);
        o->inflated += n;
        o->compressed = true;
    }
    free(tmp);
    return use;
}

int fw_msg_encode(const fw_msg_t *m, uint8_t **buf, size_t *len) {
    if (!m || !buf || !len) return fw_err_set(FW_EINVAL, "fw_msg_encode: NULL argument");
    *buf = NULL;
    *len = 0;
    const fw_msg_info *mi = m->info;
    uint32_t nset = 0;
    size_t estimate = 64;
    for (int i = 0; i < mi->nfields; i++) {
        const fw_field_info *f = &mi->fields[i];
        if (m->vals[i].kind != FW_VAL_NONE) {
            nset++;
            estimate += f->name_len + 16 + (f->type <= FW_T_BIN ? m->vals[i].len : 0);
        } else if (f->required && f->since <= FW_PROTO_VERSION) {
            return fw_err_set(FW_EINVAL, "%s: required field '%s' is not set", mi->name, f->name);
        }
    }

    s_out o = {0};
    /* One allocation for typical messages; big compressible ones shrink later. */
    o.cap = estimate < FW_PROTO_MAX_FRAME ? estimate : FW_PROTO_MAX_FRAME;
    o.data = fwp_malloc(o.cap);
    if (!o.data) return fw_err_set(FW_ENOMEM, "out of memory for a %zu-byte frame", o.cap);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &o, s_write);

    size_t sn = strlen(m->sender);
    msgpack_pack_array(&pk, 8);
    msgpack_pack_fix_uint32(&pk, FW_PROTO_MAGIC);
    msgpack_pack_fix_uint8(&pk, FW_PROTO_VERSION);
    msgpack_pack_fix_uint16(&pk, (uint16_t)mi->id);
    msgpack_pack_fix_uint16(&pk, 0); /* flags: patched below */
    msgpack_pack_fix_uint64(&pk, m->request_id);
    msgpack_pack_fix_uint64(&pk, m->epoch);
    msgpack_pack_str(&pk, sn);
    msgpack_pack_str_body(&pk, m->sender, sn);

    msgpack_pack_map(&pk, nset);
    for (int i = 0; i < mi->nfields && !o.err; i++) {
        const fw_val_t *v = &m->vals[i];
        if (v->kind == FW_VAL_NONE) continue;
        const fw_field_info *f = &mi->fields[i];
        msgpack_pack_str(&pk, f->name_len);
        msgpack_pack_str_body(&pk, f->name, f->name_len);
        bool big =
            (v->kind == FW_VAL_STR || v->kind == FW_VAL_BIN) && v->len >= FW_PROTO_LZ4_THRESHOLD;
        if (big && s_pack_lz4(&pk, &o, v->kind == FW_VAL_STR ? (const void *)v->as.s : v->as.bin,
                              v->len)) {
            s_count(&o);
            continue;
        }
        s_pack_val(&pk, &o, v);
    }
    if (o.err) {
        free(o.data);
        return o.err;
    }
    uint16_t flags = (uint16_t)((m->flags & ~FW_FLAG_LZ4) | (o.compressed ? FW_FLAG_LZ4 : 0));
    o.data[S_FLAGS_AT] = (uint8_t)(flags >> 8);
    o.data[S_FLAGS_AT + 1] = (uint8_t)flags;
    *buf = o.data;
    *len = o.len;
    return 0;
}
