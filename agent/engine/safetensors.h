/* safetensors.h - strict reader and writer of the safetensors format.
 *
 * Format (https://huggingface.co/docs/safetensors): an 8-byte little-endian
 * header length n, n bytes of JSON, then the data region. The JSON maps each
 * tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
 * relative to the data region) plus an optional "__metadata__" object of
 * string values.
 *
 * The reader maps the file and validates everything before anyone reads a
 * tensor (see docs/engine.md, "safetensors validation"):
 *   - the header length is <= 100 MB and fits in the file;
 *   - the header is a JSON object without duplicate keys; every entry has
 *     exactly dtype, shape and data_offsets of the right types;
 *   - dtype is one of the format's (F32, F16, BF16, F64, the integer types,
 *     BOOL, F8_E4M3, F8_E5M2), so a file with, say, a BOOL causal-mask buffer
 *     opens; only F32, F16, BF16 and F64 can be read as floats;
 *   - shape has at most 8 dimensions and its byte size equals end - begin;
 *   - the tensors' byte ranges lie inside the data region, do not overlap and
 *     cover it with no gap.
 * Any violation is FW_ECORRUPT (structure, sizes, offsets) or FW_EINVAL
 * (a dtype or field we do not accept), with the file and the tensor name in
 * fw_err_detail(). */
#ifndef FW_SAFETENSORS_H
#define FW_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define FW_ST_MAX_DIMS 8
#define FW_ST_MAX_HEADER (100u * 1024 * 1024)

/* The three float dtypes a model is stored in come first (the writer takes
 * only those); the rest exist so that their sizes can be validated. */
typedef enum {
    FW_ST_F32 = 0,
    FW_ST_F16,
    FW_ST_BF16,
    FW_ST_F64,
    FW_ST_I64,
    FW_ST_U64,
    FW_ST_I32,
    FW_ST_U32,
    FW_ST_I16,
    FW_ST_U16,
    FW_ST_I8,
    FW_ST_U8,
    FW_ST_BOOL,
    FW_ST_F8_E4M3,
    FW_ST_F8_E5M2,
    FW_ST_NUM_DTYPES
} fw_st_dtype;

typedef struct {
    const char *name; /* owned by the file */
    fw_st_dtype dtype;
    int ndim;
    int64_t shape[FW_ST_MAX_DIMS];
    size_t numel;
    uint64_t begin, end; /* byte range in the data region */
} fw_st_tensor;

typedef struct fw_st_file fw_st_file;

/* Map and validate path. NULL + detail on failure. */
fw_st_file *fw_st_open(const char *path);
void fw_st_close(fw_st_file **f);

size_t fw_st_count(const fw_st_file *f);
/* Tensors in data order (by begin offset). */
const fw_st_tensor *fw_st_at(const fw_st_file *f, size_t i);
/* NULL when absent. */
const fw_st_tensor *fw_st_find(const fw_st_file *f, const char *name);
/* String value of key in __metadata__, or NULL. */
const char *fw_st_metadata(const fw_st_file *f, const char *key);
/* Convert t to numel floats at dst. FW_EUNSUPPORTED (detail naming the
 * tensor) unless t is F32, F16, BF16 or F64. */
int fw_st_read_f32(const fw_st_file *f, const fw_st_tensor *t, float *dst);
/* "F32", "BOOL", ... */
const char *fw_st_dtype_name(fw_st_dtype d);

/* One tensor to write: numel = product of shape float values at data, stored
 * as dtype (rounded to nearest even for F16 / BF16). */
typedef struct {
    const char *name;
    fw_st_dtype dtype;
    int ndim;
    int64_t shape[FW_ST_MAX_DIMS];
    const float *data;
} fw_st_entry;

/* Write n tensors, in order, to path atomically (.new + fsync + rename).
 * meta is NULL or a NULL-terminated list of key, value, key, value, ... for
 * __metadata__. The header is padded with spaces to a multiple of 8 bytes. */
int fw_st_write(const char *path, const fw_st_entry *e, size_t n, const char *const *meta);

/* Scalar conversions (round to nearest even; NaN stays NaN). */
uint16_t fw_f32_to_f16(float f);
float fw_f16_to_f32(uint16_t h);
uint16_t fw_f32_to_bf16(float f);
float fw_bf16_to_f32(uint16_t h);

#endif
