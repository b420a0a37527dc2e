/* fw_proto.c - the message object: envelope, typed setters and getters.
 *
 * A message holds one slot per field of its table row. Setters check the
 * value against the row (type, bound, UTF-8, nested schema) before storing
 * it, so a message that was built without errors always encodes (unless a
 * required field is missing or the frame grows past the limits) and the
 * peer's decoder accepts it. Getters never fail: they return a default for
 * unset or mistyped fields, which decoding rules out for required ones. */
#include "fw_proto_int.h"

#include "fw_err.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

fw_msg_t *fwp_msg_alloc(const fw_msg_info *info) {
    fw_msg_t *m = fwp_calloc(1, sizeof *m + (size_t)info->nfields * sizeof(fw_val_t));
    if (!m) return NULL;
    m->tag = FWP_MSG_TAG;
    m->info = info;
    m->version = FW_PROTO_VERSION;
    return m;
}

fw_msg_t *fw_msg_new(int id) {
    const fw_msg_info *info = fw_proto_msg_info(id);
    if (!info) {
        fw_err_set(FW_EINVAL, "fw_msg_new: unknown message id %d", id);
        return NULL;
    }
    return fwp_msg_alloc(info);
}

fw_msg_t *fw_msg_new_reply(const fw_msg_t *req, int id) {
    fw_msg_t *m = fw_msg_new(id);
    if (m && req) m->request_id = req->request_id;
    return m;
}

fw_msg_t *fw_msg_new_error(const fw_msg_t *req, int code, const char *fmt, ...) {
    fw_msg_t *m = fw_msg_new_reply(req, FW_MSG_ERROR);
    if (!m) return NULL;
    /* The message field is bounded; truncate rather than fail, and keep the
     * cut on a UTF-8 character boundary so the setter accepts it. */
    char text[1025];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    size_t n = strlen(text);
    while (n > 0 && !fwp_utf8_ok((const uint8_t *)text, n)) text[--n] = '\0';
    if (fw_msg_set_int_f(m, FW_F_ERROR_code, code) < 0 ||
        fw_msg_set_str_f(m, FW_F_ERROR_message, text) < 0)
        fw_msg_destroy(&m);
    return m;
}

void fw_msg_destroy(fw_msg_t **p) {
    if (!p || !*p) return;
    fw_msg_t *m = *p;
    assert(m->tag == FWP_MSG_TAG);
    for (int i = 0; i < m->info->nfields; i++) fwp_val_clear(&m->vals[i]);
    m->tag = 0;
    free(m);
    *p = NULL;
}

fw_msg_t *fw_msg_dup(const fw_msg_t *m) {
    if (!m) return NULL;
    fw_msg_t *d = fwp_msg_alloc(m->info);
    if (!d) return NULL;
    d->request_id = m->request_id;
    d->epoch = m->epoch;
    d->flags = m->flags;
    d->version = m->version;
    memcpy(d->sender, m->sender, sizeof d->sender);
    for (int i = 0; i < m->info->nfields; i++)
        if (fwp_val_copy(&d->vals[i], &m->vals[i]) < 0) {
            fw_msg_destroy(&d);
            return NULL;
        }
    return d;
}

bool fw_msg_equal(const fw_msg_t *a, const fw_msg_t *b) {
    if (!a || !b) return a == b;
    if (a->info != b->info || a->request_id != b->request_id || a->epoch != b->epoch ||
        strcmp(a->sender, b->sender) != 0)
        return false;
    for (int i = 0; i < a->info->nfields; i++)
        if (!fw_val_equal(&a->vals[i], &b->vals[i])) return false;
    return true;
}

/* ------------------------------------------------------------ envelope */

int fw_msg_id(const fw_msg_t *m) {
    return m->info->id;
}
const char *fw_msg_name(const fw_msg_t *m) {
    return m->info->name;
}
const fw_msg_info *fw_msg_info_of(const fw_msg_t *m) {
    return m->info;
}
int fw_msg_version(const fw_msg_t *m) {
    return m->version;
}
uint64_t fw_msg_request_id(const fw_msg_t *m) {
    return m->request_id;
}
void fw_msg_set_request_id(fw_msg_t *m, uint64_t id) {
    m->request_id = id;
}
uint64_t fw_msg_epoch(const fw_msg_t *m) {
    return m->epoch;
}
void fw_msg_set_epoch(fw_msg_t *m, uint64_t epoch) {
    m->epoch = epoch;
}
const char *fw_msg_sender(const fw_msg_t *m) {
    return m->sender;
}
unsigned fw_msg_flags(const fw_msg_t *m) {
    return m->flags;
}
void fw_msg_set_flags(fw_msg_t *m, unsigned flags) {
    m->flags = (uint16_t)flags;
}

int fw_msg_set_sender(fw_msg_t *m, const char *sender) {
    size_t n = sender ? strlen(sender) : 0;
    if (n > FW_PROTO_MAX_SENDER)
        return fw_err_set(FW_ETOOBIG, "sender name of %zu bytes, max %d", n, FW_PROTO_MAX_SENDER);
    if (!fwp_utf8_ok((const uint8_t *)(sender ? sender : ""), n))
        return fw_err_set(FW_EINVAL, "sender name is not valid UTF-8");
    memcpy(m->sender, sender ? sender : "", n + 1);
    return 0;
}

/* ------------------------------------------------------------ field lookup */

static int s_index_of(const fw_msg_t *m, const char *name) {
    if (!name) return -1;
    for (int i = 0; i < m->info->nfields; i++)
        if (strcmp(m->info->fields[i].name, name) == 0) return i;
    return -1;
}

int fw_msg_field(const fw_msg_t *m, const char *name) {
    int i = s_index_of(m, name);
    return i < 0 ? -1 : (m->info->id << 8) | i;
}

/* Slot index of a field id, or -1 (with a detail) if it is not this message's. */
static int s_index_f(const fw_msg_t *m, int field) {
    int i = field & 0xff;
    if (field < 0 || (field >> 8) != m->info->id || i >= m->info->nfields) {
        fw_err_set(FW_EINVAL, "%s: field id %d belongs to another message (%s)", m->info->name,
                   field, fw_msg_id_name(field >> 8));
        return -1;
    }
    return i;
}

static int s_index_n(const fw_msg_t *m, const char *name) {
    int i = s_index_of(m, name);
    if (i < 0) fw_err_set(FW_EINVAL, "%s has no field '%s'", m->info->name, name ? name : "(null)");
    return i;
}

/* ------------------------------------------------------------ setters */

/* Store tmp (a value built by the caller's setter) into slot i after the
 * schema check; tmp is consumed either way. */
static int s_store(fw_msg_t *m, int i, fw_val_t *tmp) {
    if (i < 0) {
        fwp_val_clear(tmp);
        return FW_EINVAL;
    }
    int rc = fwp_check_value(m->info->name, &m->info->fields[i], tmp);
    if (rc < 0) {
        fwp_val_clear(tmp);
        return rc;
    }
    fwp_val_clear(&m->vals[i]);
    m->vals[i] = *tmp;
    return 0;
}

static int s_set_str(fw_msg_t *m, int i, const char *s) {
    if (i < 0) return FW_EINVAL;
    if (!s)
        return fw_err_set(FW_EINVAL, "%s.%s: NULL string", m->info->name, m->info->fields[i].name);
    const fw_field_info *f = &m->info->fields[i];
    if (f->type != FW_T_STR && f->type != FW_T_JSON)
        return fw_err_set(FW_EINVAL, "%s.%s is %s, not STR", m->info->name, f->name,
                          fw_proto_type_name(f->type));
    size_t n = strlen(s);
    /* Check the bound before copying: a caller may pass megabytes. */
    if (f->max && n > f->max)
        return fw_err_set(FW_ETOOBIG, "%s.%s: %zu bytes, max %llu", m->info->name, f->name, n,
                          (unsigned long long)f->max);
    fw_val_t tmp = {0};
    int rc = fwp_val_set_str(&tmp, s, n);
    return rc < 0 ? rc : s_store(m, i, &tmp);
}

/* Integers are canonical (non-negative: UINT) at every level, as in fw_val.c;
 * the schema check then decides whether the field's type takes the value. */
static int s_set_int(fw_msg_t *m, int i, int64_t v) {
    fw_val_t tmp = {0};
    if (v >= 0) {
        tmp.kind = FW_VAL_UINT;
        tmp.as.u = (uint64_t)v;
    } else {
        tmp.kind = FW_VAL_INT;
        tmp.as.i = v;
    }
    return s_store(m, i, &tmp);
}

static int s_set_uint(fw_msg_t *m, int i, uint64_t v) {
    fw_val_t tmp = {.kind = FW_VAL_UINT, .as.u = v};
    return s_store(m, i, &tmp);
}

static int s_set_bool(fw_msg_t *m, int i, bool v) {
    fw_val_t tmp = {.kind = FW_VAL_BOOL, .as.b = v};
    return s_store(m, i, &tmp);
}

static int s_set_double(fw_msg_t *m, int i, double v) {
    fw_val_t tmp = {.kind = FW_VAL_DOUBLE, .as.d = v};
    return s_store(m, i, &tmp);
}

static int s_set_bin(fw_msg_t *m, int i, const void *data, size_t len) {
    if (i < 0) return FW_EINVAL;
    const fw_field_info *f = &m->info->fields[i];
    if (!data && len) return fw_err_set(FW_EINVAL, "%s.%s: NULL data", m->info->name, f->name);
    if (f->type != FW_T_BIN)
        return fw_err_set(FW_EINVAL, "%s.%s is %s, not BIN", m->info->name, f->name,
                          fw_proto_type_name(f->type));
    if (f->max && len > f->max)
        return fw_err_set(FW_ETOOBIG, "%s.%s: %zu bytes, max %llu", m->info->name, f->name, len,
                          (unsigned long long)f->max);
    fw_val_t tmp = {0};
    int rc = fwp_val_set_bin(&tmp, data, len);
    return rc < 0 ? rc : s_store(m, i, &tmp);
}

static int s_set_tree(fw_msg_t *m, int i, fw_val_t **v, fw_val_kind want) {
    if (!v || !*v) return fw_err_set(FW_EINVAL, "%s: NULL value", m->info->name);
    fw_val_t tmp = **v; /* take the contents; the shell is freed either way */
    free(*v);
    *v = NULL;
    if (i >= 0 && tmp.kind != want) {
        fwp_val_clear(&tmp);
        return fw_err_set(FW_EINVAL, "%s.%s: expected a %s", m->info->name, m->info->fields[i].name,
                          want == FW_VAL_MAP ? "map" : "array");
    }
    return s_store(m, i, &tmp);
}

static int s_unset(fw_msg_t *m, int i) {
    if (i < 0) return FW_EINVAL;
    fwp_val_clear(&m->vals[i]);
    return 0;
}

int fw_msg_set_str(fw_msg_t *m, const char *f, const char *s) {
    return s_set_str(m, s_index_n(m, f), s);
}
int fw_msg_set_int(fw_msg_t *m, const char *f, int64_t v) {
    return s_set_int(m, s_index_n(m, f), v);
}
int fw_msg_set_uint(fw_msg_t *m, const char *f, uint64_t v) {
    return s_set_uint(m, s_index_n(m, f), v);
}
int fw_msg_set_bool(fw_msg_t *m, const char *f, bool v) {
    int i = s_index_n(m, f);
    return i < 0 ? FW_EINVAL : s_set_bool(m, i, v);
}
int fw_msg_set_double(fw_msg_t *m, const char *f, double v) {
    int i = s_index_n(m, f);
    return i < 0 ? FW_EINVAL : s_set_double(m, i, v);
}
int fw_msg_set_bin(fw_msg_t *m, const char *f, const void *d, size_t n) {
    return s_set_bin(m, s_index_n(m, f), d, n);
}
int fw_msg_set_map(fw_msg_t *m, const char *f, fw_val_t **v) {
    return s_set_tree(m, s_index_n(m, f), v, FW_VAL_MAP);
}
int fw_msg_set_array(fw_msg_t *m, const char *f, fw_val_t **v) {
    return s_set_tree(m, s_index_n(m, f), v, FW_VAL_ARRAY);
}
int fw_msg_unset(fw_msg_t *m, const char *f) {
    return s_unset(m, s_index_n(m, f));
}

int fw_msg_set_str_f(fw_msg_t *m, int f, const char *s) {
    return s_set_str(m, s_index_f(m, f), s);
}
int fw_msg_set_int_f(fw_msg_t *m, int f, int64_t v) {
    return s_set_int(m, s_index_f(m, f), v);
}
int fw_msg_set_uint_f(fw_msg_t *m, int f, uint64_t v) {
    return s_set_uint(m, s_index_f(m, f), v);
}
int fw_msg_set_bool_f(fw_msg_t *m, int f, bool v) {
    int i = s_index_f(m, f);
    return i < 0 ? FW_EINVAL : s_set_bool(m, i, v);
}
int fw_msg_set_double_f(fw_msg_t *m, int f, double v) {
    int i = s_index_f(m, f);
    return i < 0 ? FW_EINVAL : s_set_double(m, i, v);
}
int fw_msg_set_bin_f(fw_msg_t *m, int f, const void *d, size_t n) {
    return s_set_bin(m, s_index_f(m, f), d, n);
}
int fw_msg_set_map_f(fw_msg_t *m, int f, fw_val_t **v) {
    return s_set_tree(m, s_index_f(m, f), v, FW_VAL_MAP);
}
int fw_msg_set_array_f(fw_msg_t *m, int f, fw_val_t **v) {
    return s_set_tree(m, s_index_f(m, f), v, FW_VAL_ARRAY);
}
int fw_msg_unset_f(fw_msg_t *m, int f) {
    return s_unset(m, s_index_f(m, f));
}

/* ------------------------------------------------------------ getters */

static const fw_val_t *s_slot(const fw_msg_t *m, int i) {
    return i >= 0 && m->vals[i].kind != FW_VAL_NONE ? &m->vals[i] : NULL;
}

static const fw_val_t *s_container(const fw_val_t *v, fw_val_kind want) {
    return fw_val_kind_of(v) == want ? v : NULL;
}

bool fw_msg_has(const fw_msg_t *m, const char *f) {
    return s_slot(m, s_index_of(m, f)) != NULL;
}
const char *fw_msg_get_str(const fw_msg_t *m, const char *f) {
    return fw_val_str(s_slot(m, s_index_of(m, f)));
}
int64_t fw_msg_get_int(const fw_msg_t *m, const char *f) {
    return fw_val_int(s_slot(m, s_index_of(m, f)));
}
uint64_t fw_msg_get_uint(const fw_msg_t *m, const char *f) {
    return fw_val_uint(s_slot(m, s_index_of(m, f)));
}
bool fw_msg_get_bool(const fw_msg_t *m, const char *f) {
    return fw_val_bool(s_slot(m, s_index_of(m, f)));
}
double fw_msg_get_double(const fw_msg_t *m, const char *f) {
    return fw_val_double(s_slot(m, s_index_of(m, f)));
}
const void *fw_msg_get_bin(const fw_msg_t *m, const char *f, size_t *len) {
    return fw_val_bin(s_slot(m, s_index_of(m, f)), len);
}
const fw_val_t *fw_msg_get_map(const fw_msg_t *m, const char *f) {
    return s_container(s_slot(m, s_index_of(m, f)), FW_VAL_MAP);
}
const fw_val_t *fw_msg_get_array(const fw_msg_t *m, const char *f) {
    return s_container(s_slot(m, s_index_of(m, f)), FW_VAL_ARRAY);
}

/* By id: a foreign id reads as unset (s_index_f also records a detail). */
bool fw_msg_has_f(const fw_msg_t *m, int f) {
    return s_slot(m, s_index_f(m, f)) != NULL;
}
const char *fw_msg_get_str_f(const fw_msg_t *m, int f) {
    return fw_val_str(s_slot(m, s_index_f(m, f)));
}
int64_t fw_msg_get_int_f(const fw_msg_t *m, int f) {
    return fw_val_int(s_slot(m, s_index_f(m, f)));
}
uint64_t fw_msg_get_uint_f(const fw_msg_t *m, int f) {
    return fw_val_uint(s_slot(m, s_index_f(m, f)));
}
bool fw_msg_get_bool_f(const fw_msg_t *m, int f) {
    return fw_val_bool(s_slot(m, s_index_f(m, f)));
}
double fw_msg_get_double_f(const fw_msg_t *m, int f) {
    return fw_val_double(s_slot(m, s_index_f(m, f)));
}
const void *fw_msg_get_bin_f(const fw_msg_t *m, int f, size_t *len) {
    return fw_val_bin(s_slot(m, s_index_f(m, f)), len);
}
const fw_val_t *fw_msg_get_map_f(const fw_msg_t *m, int f) {
    return s_container(s_slot(m, s_index_f(m, f)), FW_VAL_MAP);
}
const fw_val_t *fw_msg_get_array_f(const fw_msg_t *m, int f) {
    return s_container(s_slot(m, s_index_f(m, f)), FW_VAL_ARRAY);
}
