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

/* Layer l's view of the activations, as the forward and backward loops of
 * both backends read it: res is the layer's input (the embedding for layer
 * 0, else the previous layer's res3), the rest are its own slots. */
typedef struct {
    float *res, *ln1, *ln1m, *ln1r, *qkv, *atty, *lse, *res2, *ln2, *ln2m, *ln2r, *fch, *fchg,
        *res3;
} fw_acts_l;

static inline fw_acts_l fw_acts_at(const fw_acts *a, size_t N, size_t C, size_t NH, int l) {
    fw_acts_l v;
    v.res = l == 0 ? a->encoded : fw_acts_layer(a, a->res3, N, C, l - 1);
    v.ln1 = fw_acts_layer(a, a->ln1, N, C, l);
    v.ln1m = fw_acts_layer(a, a->ln1_mean, N, 1, l);
    v.ln1r = fw_acts_layer(a, a->ln1_rstd, N, 1, l);
    v.qkv = fw_acts_layer(a, a->qkv, N, 3 * C, l);
    v.atty = fw_acts_layer(a, a->atty, N, C, l);
    v.lse = fw_acts_layer(a, a->lse, N, NH, l);
    v.res2 = fw_acts_layer(a, a->res2, N, C, l);
    v.ln2 = fw_acts_layer(a, a->ln2, N, C, l);
    v.ln2m = fw_acts_layer(a, a->ln2_mean, N, 1, l);
    v.ln2r = fw_acts_layer(a, a->ln2_rstd, N, 1, l);
    v.fch = fw_acts_layer(a, a->fch, N, 4 * C, l);
    v.fchg = fw_acts_layer(a, a->fchg, N, 4 * C, l);
    v.res3 = fw_acts_layer(a, a->res3, N, C, l);
    return v;
}

#endif
