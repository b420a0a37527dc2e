/* acts.h - the activation buffers of a forward pass, shared by the CPU and
 * CUDA backends so that both lay them out the same way (the CUDA tests
 * compare them slot by slot).
 *
 * One float buffer holds every slot; per-layer slots keep all layers when
 * `full` (training: backward needs them) and one layer otherwise (inference
 * reuses it layer after layer). Plain C, static inline: nvcc compiles it
 * into cuda_model.cu as it is. */
#ifndef FW_ACTS_H
#define FW_ACTS_H

#include "engine.h"

#include <stddef.h>

typedef struct {
    /* layer 0 slot of each per-layer buffer; layer l at base + l * stride */
    float *ln1, *ln1_mean, *ln1_rstd, *qkv, *atty, *lse, *res2, *ln2, *ln2_mean, *ln2_rstd, *fch,
        *fchg, *res3;
    int full; /* per-layer strides are non-zero */
    float *encoded, *lnf, *lnf_mean, *lnf_rstd, *losses, *ce_lse;
} fw_acts;

/* Floats of activations for N rows, every slot rounded up to a multiple of
 * `align` floats; lays them out in *a when buf != NULL. */
static inline size_t fw_acts_layout(const fw_model_config *cfg, size_t N, int full, size_t align,
                                    float *buf, fw_acts *a) {
    size_t C = (size_t)cfg->n_embd, NH = (size_t)cfg->n_head;
    size_t L = full ? (size_t)cfg->n_layer : 1;
    size_t off = 0;
#define TAKE(field, n)                                                                             \
    do {                                                                                           \
        if (buf) a->field = buf + off;                                                             \
        off += ((n) + align - 1) / align * align;                                                  \
    } while (0)
    TAKE(encoded, N * C);
    TAKE(ln1, L * N * C);
    TAKE(ln1_mean, L * N);
    TAKE(ln1_rstd, L * N);
    TAKE(qkv, L * N * 3 * C);
    TAKE(atty, L * N * C);
    TAKE(lse, L * N * NH);
    TAKE(res2, L * N * C);
    TAKE(ln2, L * N * C);
    TAKE(ln2_mean, L * N);
    TAKE(ln2_rstd, L * N);
    TAKE(fch, L * N * 4 * C);
    TAKE(fchg, L * N * 4 * C);
    TAKE(res3, L * N * C);
    TAKE(lnf, N * C);
    TAKE(lnf_mean, N);
    TAKE(lnf_rstd, N);
    TAKE(losses, N);
    TAKE(ce_lse, N);
#undef TAKE
    if (buf) a->full = full;
    return off;
}

/* Layer l's part of per-layer slot `base` (width floats per row). */
static inline float *fw_acts_layer(const fw_acts *a, float *base, size_t N, size_t width, int l) {
    return a->full ? base + (size_t)l * N * width : base;
}

#endif
