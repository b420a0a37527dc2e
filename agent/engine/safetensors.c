/* safetensors.c - strict safetensors reader and atomic writer (see safetensors.h).
 *
 * The reader maps the whole file read-only and validates the header once in
 * fw_st_open; after that every tensor's byte range is known to be inside the
 * mapping, so fw_st_read_f32 cannot read out of bounds. Validation order:
 * sizes of the envelope first (nothing is parsed from a header that does not
 * fit), then JSON syntax, then each entry, then the ranges as a whole
 * (sorted by begin: each must start where the previous ended, the first at
 * 0 and the last end at the data region's end). Every dtype of the format is
 * accepted and size-checked; only the float ones convert (fw_st_read_f32),
 * so an integer or BOOL buffer a loader skips does not stop a file opening. */
#include "safetensors.h"

#include "fw_err.h"
#include "fw_file.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host (the format is little-endian)"
#endif

struct fw_st_file {
    char *path;
    const uint8_t *map;
    size_t size;
    const uint8_t *data; /* start of the data region */
    size_t data_size;
    fw_st_tensor *t;
    size_t n;
    json_t *meta; /* __metadata__ object or NULL */
};

static const char *const s_dtype_names[FW_ST_NUM_DTYPES] = {
    "F32", "F16", "BF16", "F64", "I64", "U64", "I32", "U32",
    "I16", "U16", "I8",   "U8",  "BOOL", "F8_E4M3", "F8_E5M2"};
static const size_t s_dtype_size[FW_ST_NUM_DTYPES] = {4, 2, 2, 8, 8, 8, 4, 4, 2, 2, 1, 1, 1, 1, 1};

const char *fw_st_dtype_name(fw_st_dtype d) {
    return (unsigned)d < FW_ST_NUM_DTYPES ? s_dtype_names[d] : "?";
}

/* ------------------------------------------------------------------------ */
/* Scalar conversions                                                        */
/* ------------------------------------------------------------------------ */

static uint32_t s_bits(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    return x;
}

static float s_float(uint32_t x) {
    float f;
    memcpy(&f, &x, 4);
    return f;
}

uint16_t fw_f32_to_f16(float f) {
    uint32_t x = s_bits(f);
    uint32_t sign = (x >> 16) & 0x8000, exp = (x >> 23) & 0xff, mant = x & 0x7fffff;
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 | (mant >> 13) : 0));
    int e = (int)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00);
    if (e <= 0) {
        if (e < -10) return (uint16_t)sign;
        mant |= 0x800000;
        int shift = 14 - e;
        uint32_t h = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)e << 10) | (mant >> 13), rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++; /* a carry into the exponent is right */
    return (uint16_t)(sign | h);
}

float fw_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    if (exp == 0) {
        if (mant == 0) return s_float(sign);
        int e = 1;
        while (!(mant & 0x400)) {
            mant <<= 1;
            e--;
        }
        mant &= 0x3ff;
        return s_float(sign | ((uint32_t)(e + 112) << 23) | (mant << 13));
    }
    if (exp == 31) return s_float(sign | 0x7f800000 | (mant << 13));
    return s_float(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t fw_f32_to_bf16(float f) {
    uint32_t x = s_bits(f);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

float fw_bf16_to_f32(uint16_t h) { return s_float((uint32_t)h << 16); }

/* ------------------------------------------------------------------------ */
/* Reader                                                                    */
/* ------------------------------------------------------------------------ */

void fw_st_close(fw_st_file **pf) {
    if (!pf || !*pf) return;
    fw_st_file *f = *pf;
    if (f->map) munmap((void *)f->map, f->size);
    for (size_t i = 0; i < f->n; i++) free((char *)f->t[i].name);
    free(f->t);
    json_decref(f->meta);
    free(f->path);
    free(f);
    *pf = NULL;
}

static int s_cmp_range(const void *a, const void *b) {
    const fw_st_tensor *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* One header entry into *t (name already set). */
static int s_parse_entry(fw_st_file *f, const char *name, json_t *v, fw_st_tensor *t) {
    const char *p = f->path;
    if (!json_is_object(v))
        return fw_err_set(FW_ECORRUPT, "%s: tensor %s: entry is not an object", p, name);
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val) {
        if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets"))
            return fw_err_set(FW_ECORRUPT, "%s: tensor %s: unknown field \"%s\"", p, name, key);
    }
    json_t *dt = json_object_get(v, "dtype"), *sh = json_object_get(v, "shape"),
           *off = json_object_get(v, "data_offsets");
    if (!json_is_string(dt))
        return fw_err_set(FW_ECORRUPT, "%s: tensor %s: dtype missing or not a string", p, name);
    int d = -1;
    for (int i = 0; i < FW_ST_NUM_DTYPES; i++)
        if (strcmp(json_string_value(dt), s_dtype_names[i]) == 0) d = i;
    if (d < 0)
        return fw_err_set(FW_EINVAL, "%s: tensor %s: dtype %s unknown", p, name,
                          json_string_value(dt));
    t->dtype = (fw_st_dtype)d;
    if (!json_is_array(sh))
        return fw_err_set(FW_ECORRUPT, "%s: tensor %s: shape missing or not an array", p, name);
    if (json_array_size(sh) > FW_ST_MAX_DIMS)
        return fw_err_set(FW_ECORRUPT, "%s: tensor %s: %zu dimensions (at most %d)", p, name,
                          json_array_size(sh), FW_ST_MAX_DIMS);
    t->ndim = (int)json_array_size(sh);
    size_t numel = 1;
    for (int i = 0; i < t->ndim; i++) {
        json_t *e = json_array_get(sh, (size_t)i);
        if (!json_is_integer(e) || json_integer_value(e) < 0)
            return fw_err_set(FW_ECORRUPT, "%s: tensor %s: shape[%d] is not a non-negative integer",
                              p, name, i);
        int64_t dim = json_integer_value(e);
        t->shape[i] = dim;
        /* Overflow: no real tensor has more elements than the file has bytes. */
        if (dim != 0 && numel > f->size / (uint64_t)dim + 1)
            return fw_err_set(FW_ECORRUPT, "%s: tensor %s: shape larger than the file", p, name);
        numel *= (size_t)dim;
    }
    t->numel = numel;
    if (!json_is_array(off) || json_array_size(off) != 2 ||
        !json_is_integer(json_array_get(off, 0)) || !json_is_integer(json_array_get(off, 1)))
        return fw_err_set(FW_ECORRUPT, "%s: tensor %s: data_offsets must be [begin, end]", p, name);
    json_int_t b = json_integer_value(json_array_get(off, 0));
    json_int_t e = json_integer_value(json_array_get(off, 1));
    if (b < 0 || e < b)
        return fw_err_set(FW_ECORRUPT, "%s: tensor %s: data_offsets [%lld, %lld] invalid", p, name,
                          (long long)b, (long long)e);
    t->begin = (uint64_t)b;
    t->end = (uint64_t)e;
    if (t->end > f->data_size)
        return fw_err_set(FW_ECORRUPT,
                          "%s: tensor %s: data_offsets [%llu, %llu] outside the data region of "
                          "%zu bytes (file truncated?)", p, name, (unsigned long long)t->begin,
                          (unsigned long long)t->end, f->data_size);
    if (numel > f->size || numel * s_dtype_size[d] != t->end - t->begin)
        return fw_err_set(FW_ECORRUPT, "%s: tensor %s: %zu elements of %s need %zu bytes, "
                          "data_offsets give %llu", p, name, numel, s_dtype_names[d],
                          numel * s_dtype_size[d], (unsigned long long)(t->end - t->begin));
    return 0;
}

static int s_parse_header(fw_st_file *f, const char *hdr, size_t hlen) {
    json_error_t jerr;
    json_t *root = json_loadb(hdr, hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return fw_err_set(FW_ECORRUPT, "%s: header JSON: %s at byte %d", f->path, jerr.text,
                          jerr.position);
    int rc = 0;
    if (!json_is_object(root)) {
        rc = fw_err_set(FW_ECORRUPT, "%s: header is not a JSON object", f->path);
        goto out;
    }
    size_t cap = json_object_size(root);
    f->t = calloc(cap ? cap : 1, sizeof *f->t);
    if (!f->t) {
        rc = fw_err_set(FW_ENOMEM, "%s: %zu tensors", f->path, cap);
        goto out;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") == 0) {
            const char *mk;
            json_t *mv;
            if (!json_is_object(v)) {
                rc = fw_err_set(FW_ECORRUPT, "%s: __metadata__ is not an object", f->path);
                goto out;
            }
            json_object_foreach(v, mk, mv) {
                if (!json_is_string(mv)) {
                    rc = fw_err_set(FW_ECORRUPT, "%s: __metadata__ value of \"%s\" is not a string",
                                    f->path, mk);
                    goto out;
                }
            }
            f->meta = json_incref(v);
            continue;
        }
        if (!*key || strlen(key) > 1024) {
            rc = fw_err_set(FW_ECORRUPT, "%s: tensor name empty or longer than 1024 bytes", f->path);
            goto out;
        }
        fw_st_tensor *t = &f->t[f->n];
        if (!(t->name = strdup(key))) {
            rc = fw_err_set(FW_ENOMEM, "%s: tensor name", f->path);
            goto out;
        }
        f->n++;
        if ((rc = s_parse_entry(f, key, v, t)) < 0) goto out;
    }
    qsort(f->t, f->n, sizeof *f->t, s_cmp_range);
    uint64_t at = 0;
    for (size_t i = 0; i < f->n; i++) {
        if (f->t[i].begin < at) {
            rc = fw_err_set(FW_ECORRUPT, "%s: tensor %s: bytes [%llu, %llu) overlap tensor %s",
                            f->path, f->t[i].name, (unsigned long long)f->t[i].begin,
                            (unsigned long long)f->t[i].end, f->t[i - 1].name);
            goto out;
        }
        if (f->t[i].begin > at) {
            rc = fw_err_set(FW_ECORRUPT, "%s: tensor %s: %llu unused bytes before it", f->path,
                            f->t[i].name, (unsigned long long)(f->t[i].begin - at));
            goto out;
        }
        at = f->t[i].end;
    }
    if (at != f->data_size) {
        rc = fw_err_set(FW_ECORRUPT, "%s: data region is %zu bytes but tensors cover %llu", f->path,
                        f->data_size, (unsigned long long)at);
        goto out;
    }
out:
    json_decref(root);
    return rc;
}

fw_st_file *fw_st_open(const char *path) {
    fw_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        fw_err_set(FW_ENOMEM, "safetensors %s", path);
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fw_err_set(errno == ENOENT ? FW_ENOTFOUND : FW_EIO, "%s: %s", path, strerror(errno));
        fw_st_close(&f);
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        fw_err_set(FW_EIO, "%s: not a regular file", path);
        close(fd);
        fw_st_close(&f);
        return NULL;
    }
    f->size = (size_t)st.st_size;
    if (f->size < 8) {
        fw_err_set(FW_ECORRUPT, "%s: %zu bytes, shorter than the 8-byte header length", path,
                   f->size);
        close(fd);
        fw_st_close(&f);
        return NULL;
    }
    void *map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        fw_err_set(FW_EIO, "%s: mmap: %s", path, strerror(errno));
        fw_st_close(&f);
        return NULL;
    }
    f->map = map;
    uint64_t hlen;
    memcpy(&hlen, f->map, 8);
    if (hlen > FW_ST_MAX_HEADER || hlen > f->size - 8) {
        fw_err_set(FW_ECORRUPT, "%s: header length %llu exceeds %s", path,
                   (unsigned long long)hlen,
                   hlen > FW_ST_MAX_HEADER ? "the 100 MB limit" : "the file");
        fw_st_close(&f);
        return NULL;
    }
    f->data = f->map + 8 + hlen;
    f->data_size = f->size - 8 - (size_t)hlen;
    if (s_parse_header(f, (const char *)f->map + 8, (size_t)hlen) < 0) {
        fw_st_close(&f);
        return NULL;
    }
    return f;
}

size_t fw_st_count(const fw_st_file *f) { return f->n; }

const fw_st_tensor *fw_st_at(const fw_st_file *f, size_t i) { return i < f->n ? &f->t[i] : NULL; }

const fw_st_tensor *fw_st_find(const fw_st_file *f, const char *name) {
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->t[i].name, name) == 0) return &f->t[i];
    return NULL;
}

const char *fw_st_metadata(const fw_st_file *f, const char *key) {
    return f->meta ? json_string_value(json_object_get(f->meta, key)) : NULL;
}

int fw_st_read_f32(const fw_st_file *f, const fw_st_tensor *t, float *dst) {
    const uint8_t *src = f->data + t->begin;
    switch (t->dtype) {
    case FW_ST_F64:
        for (size_t i = 0; i < t->numel; i++) {
            double v;
            memcpy(&v, src + 8 * i, 8);
            dst[i] = (float)v;
        }
        break;
    case FW_ST_F32:
        memcpy(dst, src, t->numel * 4);
        break;
    case FW_ST_F16:
        for (size_t i = 0; i < t->numel; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = fw_f16_to_f32(h);
        }
        break;
    case FW_ST_BF16:
        for (size_t i = 0; i < t->numel; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = fw_bf16_to_f32(h);
        }
        break;
    default:
        return fw_err_set(FW_EUNSUPPORTED, "%s: tensor %s: dtype %s cannot be read as floats "
                          "(F32, F16, BF16, F64)", f->path, t->name, s_dtype_names[t->dtype]);
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Writer                                                                    */
/* ------------------------------------------------------------------------ */

static size_t s_numel(const fw_st_entry *e) {
    size_t n = 1;
    for (int d = 0; d < e->ndim; d++) n *= (size_t)e->shape[d];
    return n;
}

static char *s_build_header(const fw_st_entry *e, size_t n, const char *const *meta, size_t *len) {
    json_t *root = json_object();
    if (!root) return NULL;
    if (meta && meta[0]) {
        json_t *m = json_object();
        for (size_t i = 0; meta[i] && meta[i + 1]; i += 2)
            json_object_set_new(m, meta[i], json_string(meta[i + 1]));
        json_object_set_new(root, "__metadata__", m);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *shape = json_array();
        for (int d = 0; d < e[i].ndim; d++) json_array_append_new(shape, json_integer(e[i].shape[d]));
        uint64_t bytes = s_numel(&e[i]) * s_dtype_size[e[i].dtype];
        json_t *t = json_pack("{s:s, s:o, s:[I, I]}", "dtype", s_dtype_names[e[i].dtype], "shape",
                              shape, "data_offsets", (json_int_t)off, (json_int_t)(off + bytes));
        json_object_set_new(root, e[i].name, t);
        off += bytes;
    }
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!s) return NULL;
    /* Pad with spaces to a multiple of 8 so the data region is aligned. */
    size_t l = strlen(s), padded = (l + 7) / 8 * 8;
    char *out = realloc(s, padded + 1);
    if (!out) {
        free(s);
        return NULL;
    }
    memset(out + l, ' ', padded - l);
    out[padded] = '\0';
    *len = padded;
    return out;
}

int fw_st_write(const char *path, const fw_st_entry *e, size_t n, const char *const *meta) {
    for (size_t i = 0; i < n; i++) {
        if (!e[i].name || !*e[i].name || strcmp(e[i].name, "__metadata__") == 0)
            return fw_err_set(FW_EINVAL, "safetensors write: tensor %zu has no valid name", i);
        if ((unsigned)e[i].dtype > FW_ST_BF16 || e[i].ndim < 0 || e[i].ndim > FW_ST_MAX_DIMS)
            return fw_err_set(FW_EINVAL, "safetensors write: tensor %s: bad dtype or rank",
                              e[i].name);
        for (int d = 0; d < e[i].ndim; d++)
            if (e[i].shape[d] < 0)
                return fw_err_set(FW_EINVAL, "safetensors write: tensor %s: negative dimension",
                                  e[i].name);
        for (size_t j = 0; j < i; j++)
            if (strcmp(e[i].name, e[j].name) == 0)
                return fw_err_set(FW_EINVAL, "safetensors write: tensor %s twice", e[i].name);
    }
    size_t hlen = 0;
    char *hdr = s_build_header(e, n, meta, &hlen);
    if (!hdr) return fw_err_set(FW_ENOMEM, "safetensors write %s: header", path);
    fw_file_atomic *w = fw_file_atomic_open(path, 0644);
    if (!w) {
        free(hdr);
        return FW_EIO;
    }
    uint64_t h64 = hlen;
    int rc = fw_file_atomic_write(w, &h64, 8);
    if (rc == 0) rc = fw_file_atomic_write(w, hdr, hlen);
    free(hdr);
    enum { CHUNK = 1 << 16 };
    uint16_t *buf = malloc(CHUNK * sizeof *buf);
    if (!buf && rc == 0) rc = fw_err_set(FW_ENOMEM, "safetensors write buffer");
    for (size_t i = 0; i < n && rc == 0; i++) {
        size_t numel = s_numel(&e[i]);
        if (e[i].dtype == FW_ST_F32) {
            rc = fw_file_atomic_write(w, e[i].data, numel * 4);
            continue;
        }
        for (size_t j = 0; j < numel && rc == 0; j += CHUNK) {
            size_t k = numel - j < CHUNK ? numel - j : CHUNK;
            for (size_t q = 0; q < k; q++)
                buf[q] = e[i].dtype == FW_ST_F16 ? fw_f32_to_f16(e[i].data[j + q])
                                                 : fw_f32_to_bf16(e[i].data[j + q]);
            rc = fw_file_atomic_write(w, buf, k * 2);
        }
    }
    free(buf);
    if (rc < 0) {
        fw_file_atomic_abort(&w);
        return rc;
    }
    return fw_file_atomic_commit(&w);
}
