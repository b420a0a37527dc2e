/* cuda_model.cu - the CUDA backend of the engine (fw_backend_cuda): device
 * buffers and the order of kernels for forward, backward, AdamW, embedding
 * and KV-cache generation. The kernels live in one header per family
 * (encoder, layernorm, matmul, attention, gelu, classifier, adamw, embed).
 *
 * Theory of operation
 * -------------------
 * This file is cpu_model.c with device memory: the same buffers, the same
 * activation layout (per-layer slots in train mode, one shared slot in
 * inference mode), the same kernel order, so the two can be read side by
 * side and tested against each other (tests/gpu).
 *
 * Memory (all device memory, allocated on first use, grown, never shrunk):
 *   params  FP32 master weights, fw_model_param_layout order (fw_model_params)
 *   grads   FP32, same layout (fw_model_grads: one buffer to all-reduce)
 *   mom1/2  FP32 AdamW moments
 *   params16 BF16 copy of params read by the GEMMs in BF16 mode; rewritten by
 *           write_params and by every AdamW step (the same kernel), and marked
 *           stale when fw_model_params hands out the FP32 pointer (the caller
 *           may write through it) so the next compute re-casts it.
 *   acts    activations of the last forward (FP32)
 *   logits  [N, Vp] FP32, turned into dlogits in place by backward
 *   attn    attention scratch, reused by every layer: the flash path's
 *           backward row sums (N*NH floats), or the GEMM path's heads layout
 *           and score matrices; bw: backward scratch (dresid, dbuf, d4c, dqkv)
 *
 * Attention (FW_CUDA_ATTENTION, checked when a model is created): "flash"
 * (default) is the fused FP32 kernel of flash_attention.cuh, "gemm" the
 * cuBLAS path with materialised scores (attention.cuh).
 *
 * Precision (FW_CUDA_PRECISION, read when a model is created):
 *   bf16 (default)  linear layers in BF16 with FP32 accumulation and FP32
 *                   outputs; attention FP32 (flash) or TF32 GEMMs (gemm);
 *                   everything else FP32
 *   fp32            every GEMM in FP32 compute: matches the CPU backend to
 *                   ~1e-5 relative, and greedy generation token for token
 *
 * Streams: everything runs on the legacy default stream, so host copies
 * (cudaMemcpy) order themselves after the kernels with no explicit sync.
 * Host-visible results (loss, norms, logits) come back with cudaMemcpy.
 * The one exception is data parallel: fw_model_backward_sync hands each
 * layer's gradient ranges to a hook with this stream as soon as the layer's
 * kernels are queued, and the NCCL hook all-reduces them on a stream of its
 * own while the next layers run (collective_nccl.c).
 *
 * Determinism: no atomics anywhere; reductions have fixed orders; cuBLAS(Lt)
 * picks the same algorithm for the same shape (cached), so the same inputs
 * give the same floats run to run on one GPU model and library version.
 *
 * Errors: no GPU -> FW_EDEVICE "no CUDA device: ..."; an allocation beyond
 * what is free -> FW_ENOMEM "cuda:N: <what> needs X MiB, Y MiB free"; any
 * CUDA/cuBLAS failure -> FW_EDEVICE naming file:line and the call. */
#include "adamw.cuh"
#include "attention.cuh"
#include "classifier.cuh"
#include "embed.cuh"
#include "encoder.cuh"
#include "gelu.cuh"
#include "layernorm.cuh"
#include "matmul.cuh"
/* After the .cuh files: they include engine.h with C linkage first. */
#include "acts.h"

extern "C" {
#include "fw_log.h"
}

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Score-matrix scratch of the attention, in floats (1 GiB): batch rows are
 * processed in groups that fit (attention.cuh). */
#define FW_ATT_CAP ((size_t)256 << 20)

/* Activation slots start on 64-float (256-byte) boundaries: every GEMM
 * operand keeps cuBLASLt's preferred alignment whatever N is. */
#define S_ACTS_ALIGN 64

typedef struct {
    fw_model_config cfg;
    fw_param_tensor t[FW_NUM_PARAM_TENSORS];
    size_t np;
    int dev;
    cuda_gemm g;

    float *params, *grads;
    float *mom1, *mom2; /* AdamW state of parameters [opt_off, opt_off + opt_len) */
    size_t opt_off, opt_len;
    bf16 *params16;
    int params16_stale;

    float *acts;
    size_t acts_cap;
    fw_acts a;
    float *logits;
    size_t logits_cap;
    int32_t *d_inputs, *d_targets, *d_argmax;
    size_t io_cap;
    int32_t *h_inputs, *h_targets;
    size_t h_io_cap;
    float *bw;
    size_t bw_cap;
    float *attn;
    size_t attn_cap;
    size_t attf;  /* score floats per attention buffer for the last forward's shape */
    int att_mode; /* S_ATT_FLASH or S_ATT_GEMM (FW_CUDA_ATTENTION, attention.cuh) */
    int *d_plan;
    size_t plan_cap;
    int *h_plan, *h_count;
    size_t h_plan_cap;
    double *d_norm; /* FW_NORM_BLOCKS partials + the total */
    float *h_losses;
    size_t h_losses_cap;
    float *d_embed;
    size_t embed_cap;

    int B, T;
    size_t n_valid;
} cuda_be;

typedef struct {
    cuda_be *be;
    int batch, max_len;
    float *k, *v; /* [L][batch][max_len][C] */
    float *scratch;
    size_t scratch_rows;
    float *scores; /* [scratch_rows * NH, max_len] */
    float *logits; /* [batch, Vp] */
    int *d_meta;   /* ids, rows, pos, gather index: 4 * scratch_rows ints */
    int *h_meta;
} cuda_kv;

/* ------------------------------------------------------------------------ */
/* Memory                                                                    */
/* ------------------------------------------------------------------------ */

static size_t s_mib(size_t bytes) {
    return (bytes + ((size_t)1 << 20) - 1) >> 20;
}

/* cudaMalloc with the message the operator needs when it cannot fit. */
static int s_dalloc(int dev, void **p, size_t bytes, const char *what) {
    size_t fr = 0, tot = 0;
    *p = NULL;
    if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) {
        (void)cudaGetLastError();
        fr = tot = 0;
    }
    if (tot && bytes > fr)
        return fw_err_set(FW_ENOMEM, "cuda:%d: %s needs %zu MiB, %zu MiB free (of %zu MiB)", dev,
                          what, s_mib(bytes), s_mib(fr), s_mib(tot));
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        *p = NULL;
        return fw_err_set(FW_ENOMEM, "cuda:%d: %s needs %zu MiB, %zu MiB free: %s", dev, what,
                          s_mib(bytes), s_mib(fr), cudaGetErrorString(e));
    }
    return 0;
}

static int s_dreserve(int dev, void **buf, size_t *cap, size_t n, size_t size, const char *what) {
    if (*cap >= n && *buf) return 0;
    cudaFree(*buf);
    *buf = NULL;
    *cap = 0;
    CU_TRY(s_dalloc(dev, buf, n * size, what));
    *cap = n;
    return 0;
}

static int s_hreserve(void **buf, size_t *cap, size_t n, size_t size, const char *what) {
    if (*cap >= n && *buf) return 0;
    free(*buf);
    *cap = 0;
    *buf = malloc(n * size);
    if (!*buf) return fw_err_set(FW_ENOMEM, "cuda: host %s: %zu MiB", what, s_mib(n * size));
    *cap = n;
    return 0;
}

static int s_enter(const cuda_be *be) {
    return cudaCheck(cudaSetDevice(be->dev));
}

static float *s_param(cuda_be *be, int i) {
    return be->params + be->t[i].offset;
}
static float *s_grad(cuda_be *be, int i) {
    return be->grads + be->t[i].offset;
}
static const bf16 *s_param16(cuda_be *be, int i) {
    return be->params16 ? be->params16 + be->t[i].offset : NULL;
}

/* The BF16 copy the GEMMs read must equal the FP32 master weights. */
static int s_sync_params16(cuda_be *be) {
    if (!be->params16 || !be->params16_stale) return 0;
    CU_TRY(s_cast(be->params16, be->params, be->np));
    be->params16_stale = 0;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Kernel launchers shared by the model and the per-kernel test entry points */
/* ------------------------------------------------------------------------ */

static int s_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                               const float *w, const float *b, int N, int C, float eps) {
    layernorm_forward_kernel<<<s_warp_blocks((size_t)N), 256>>>(out, mean, rstd, inp, w, b, N, C,
                                                                eps);
    return cudaCheckLaunch();
}

/* dinp += ..., dw += ..., db += ... (as cpu_layernorm_backward). */
static int s_layernorm_backward(cuda_gemm *g, float *dinp, float *dw, float *db, const float *dout,
                                const float *inp, const float *w, const float *mean,
                                const float *rstd, int N, int C) {
    layernorm_backward_dinp_kernel<<<s_warp_blocks((size_t)N), 256>>>(dinp, dout, inp, w, mean,
                                                                      rstd, N, C);
    CU_TRY(cudaCheckLaunch());
    int rpc = s_rows_per_chunk(N), nch = (N + rpc - 1) / rpc;
    CU_TRY(s_gemm_part(g, 2 * (size_t)nch * C));
    float *pw = g->part, *pb = g->part + (size_t)nch * C;
    dim3 grid(s_blocks((size_t)C, 256), (unsigned)nch);
    layernorm_backward_params_partial_kernel<<<grid, 256>>>(pw, pb, dout, inp, mean, rstd, N, C,
                                                            rpc);
    CU_TRY(cudaCheckLaunch());
    colsum_final_kernel<<<s_blocks((size_t)C, 256), 256>>>(dw, pw, nch, C);
    colsum_final_kernel<<<s_blocks((size_t)C, 256), 256>>>(db, pb, nch, C);
    return cudaCheckLaunch();
}

static int s_gelu_forward(float *out, const float *inp, size_t n) {
    gelu_forward_kernel<<<s_blocks(n, 256), 256>>>(out, inp, n);
    return cudaCheckLaunch();
}

static int s_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n) {
    gelu_backward_kernel<<<s_blocks(n, 256), 256>>>(dinp, inp, dout, n);
    return cudaCheckLaunch();
}

/* *out = sum of squares of x[0..n) (double, fixed order). tmp holds
 * FW_NORM_BLOCKS + 1 doubles. */
static int s_sumsq(double *tmp, const float *x, size_t n, double *out) {
    sumsq_partial_kernel<<<FW_NORM_BLOCKS, FW_NORM_THREADS>>>(tmp, x, n);
    CU_TRY(cudaCheckLaunch());
    sumsq_final_kernel<<<1, 32>>>(tmp + FW_NORM_BLOCKS, tmp, FW_NORM_BLOCKS);
    CU_TRY(cudaCheckLaunch());
    return cudaCheck(cudaMemcpy(out, tmp + FW_NORM_BLOCKS, sizeof(double), cudaMemcpyDeviceToHost));
}

/* ------------------------------------------------------------------------ */
/* Lifecycle and plain buffers                                               */
/* ------------------------------------------------------------------------ */

/* 1 for BF16 GEMMs, 0 for FP32, -1 (detail set) for a bad value. */
static int s_precision_from_env(void) {
    const char *p = getenv("FW_CUDA_PRECISION");
    if (!p || !*p || strcmp(p, "bf16") == 0) return 1;
    if (strcmp(p, "fp32") == 0) return 0;
    fw_err_set(FW_EINVAL, "FW_CUDA_PRECISION=\"%s\": expected bf16 or fp32", p);
    return -1;
}

static void cuda_destroy(void *p);

static void *cuda_create(const fw_model_config *cfg, int dev) {
    int ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev == 0) {
        (void)cudaGetLastError();
        fw_err_set(FW_EDEVICE, "no CUDA device: %s",
                   e != cudaSuccess ? cudaGetErrorString(e) : "the driver reports 0 devices");
        return NULL;
    }
    if (dev >= ndev) {
        fw_err_set(FW_EDEVICE, "no CUDA device: cuda:%d requested, %d present (cuda:0..%d)", dev,
                   ndev, ndev - 1);
        return NULL;
    }
    int prec = s_precision_from_env(), att_mode = S_ATT_FLASH;
    if (prec < 0 || attention_mode(&att_mode) < 0) return NULL;
    if (cudaCheck(cudaSetDevice(dev)) < 0) return NULL;
    cuda_be *be = (cuda_be *)calloc(1, sizeof *be);
    if (!be) {
        fw_err_set(FW_ENOMEM, "cuda backend");
        return NULL;
    }
    be->cfg = *cfg;
    be->dev = dev;
    be->att_mode = att_mode;
    be->np = fw_model_param_layout(cfg, be->t);
    be->opt_len = be->np;
    int rc = s_gemm_init(&be->g, prec);
    if (rc == 0) rc = s_dalloc(dev, (void **)&be->params, be->np * sizeof(float), "parameters");
    if (rc == 0) rc = cudaCheck(cudaMemset(be->params, 0, be->np * sizeof(float)));
    if (rc == 0 && prec)
        rc = s_dalloc(dev, (void **)&be->params16, be->np * sizeof(bf16), "BF16 weights");
    if (rc == 0 && prec) rc = cudaCheck(cudaMemset(be->params16, 0, be->np * sizeof(bf16)));
    if (rc == 0)
        rc = s_dalloc(dev, (void **)&be->d_norm, (FW_NORM_BLOCKS + 1) * sizeof(double), "norm");
    if (rc < 0) {
        char d[512];
        snprintf(d, sizeof d, "%s", fw_err_detail());
        cuda_destroy(be);
        fw_err_set(rc, "%s", d);
        return NULL;
    }
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, dev) == cudaSuccess)
        fw_info("event=cuda-model dev=%d gpu=\"%s\" sm=%d%d precision=%s params=%zu", dev,
                prop.name, prop.major, prop.minor, prec ? "bf16" : "fp32", be->np);
    return be;
}

static void cuda_destroy(void *p) {
    cuda_be *be = (cuda_be *)p;
    if (!be) return;
    cudaSetDevice(be->dev);
    void *dbufs[] = {be->params, be->grads,  be->mom1,     be->mom2,      be->params16,
                     be->acts,   be->logits, be->d_inputs, be->d_targets, be->d_argmax,
                     be->bw,     be->attn,   be->d_plan,   be->d_norm,    be->d_embed};
    for (size_t i = 0; i < sizeof dbufs / sizeof dbufs[0]; i++) cudaFree(dbufs[i]);
    s_gemm_free(&be->g);
    free(be->h_inputs);
    free(be->h_targets);
    free(be->h_plan);
    free(be->h_count);
    free(be->h_losses);
    free(be);
}

static float *cuda_params(void *p) {
    cuda_be *be = (cuda_be *)p;
    be->params16_stale = 1; /* the caller may write through the pointer */
    return be->params;
}

static float *cuda_grads(void *p) {
    cuda_be *be = (cuda_be *)p;
    if (!be->grads) {
        if (s_enter(be) < 0) return NULL;
        if (s_dalloc(be->dev, (void **)&be->grads, be->np * sizeof(float), "gradients") < 0)
            return NULL;
        if (cudaCheck(cudaMemset(be->grads, 0, be->np * sizeof(float))) < 0) {
            cudaFree(be->grads);
            be->grads = NULL;
            return NULL;
        }
    }
    return be->grads;
}

static int cuda_read_params(void *p, float *dst) {
    cuda_be *be = (cuda_be *)p;
    CU_TRY(s_enter(be));
    return cudaCheck(cudaMemcpy(dst, be->params, be->np * sizeof(float), cudaMemcpyDeviceToHost));
}

static int cuda_write_params(void *p, const float *src) {
    cuda_be *be = (cuda_be *)p;
    CU_TRY(s_enter(be));
    CU_TRY(cudaCheck(cudaMemcpy(be->params, src, be->np * sizeof(float), cudaMemcpyHostToDevice)));
    be->params16_stale = 1;
    return s_sync_params16(be);
}

static int s_alloc_opt(cuda_be *be) {
    if (be->mom1) return 0;
    size_t bytes = be->opt_len * sizeof(float);
    int rc = s_dalloc(be->dev, (void **)&be->mom1, bytes, "AdamW first moment");
    if (rc == 0) rc = s_dalloc(be->dev, (void **)&be->mom2, bytes, "AdamW second moment");
    if (rc == 0) rc = cudaCheck(cudaMemset(be->mom1, 0, bytes));
    if (rc == 0) rc = cudaCheck(cudaMemset(be->mom2, 0, bytes));
    if (rc < 0) {
        cudaFree(be->mom1);
        cudaFree(be->mom2);
        be->mom1 = be->mom2 = NULL;
    }
    return rc;
}

static int cuda_read_opt(void *p, float *m1, float *m2) {
    cuda_be *be = (cuda_be *)p;
    size_t bytes = be->opt_len * sizeof(float);
    memset(m1, 0, be->np * sizeof(float));
    memset(m2, 0, be->np * sizeof(float));
    if (!be->mom1) return 0;
    CU_TRY(s_enter(be));
    CU_TRY(cudaCheck(cudaMemcpy(m1 + be->opt_off, be->mom1, bytes, cudaMemcpyDeviceToHost)));
    return cudaCheck(cudaMemcpy(m2 + be->opt_off, be->mom2, bytes, cudaMemcpyDeviceToHost));
}

static int cuda_write_opt(void *p, const float *m1, const float *m2) {
    cuda_be *be = (cuda_be *)p;
    size_t bytes = be->opt_len * sizeof(float);
    CU_TRY(s_enter(be));
    CU_TRY(s_alloc_opt(be));
    CU_TRY(cudaCheck(cudaMemcpy(be->mom1, m1 + be->opt_off, bytes, cudaMemcpyHostToDevice)));
    return cudaCheck(cudaMemcpy(be->mom2, m2 + be->opt_off, bytes, cudaMemcpyHostToDevice));
}

static int cuda_clear_opt(void *p) {
    cuda_be *be = (cuda_be *)p;
    CU_TRY(s_enter(be));
    cudaFree(be->mom1);
    cudaFree(be->mom2);
    be->mom1 = be->mom2 = NULL;
    return 0;
}

static int cuda_shard_opt(void *p, size_t off, size_t len) {
    cuda_be *be = (cuda_be *)p;
    CU_TRY(cuda_clear_opt(be));
    be->opt_off = off, be->opt_len = len;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Forward                                                                   */
/* ------------------------------------------------------------------------ */

static int s_prepare(cuda_be *be, int B, int T, int full) {
    const fw_model_config *cfg = &be->cfg;
    size_t N = (size_t)B * T, C = (size_t)cfg->n_embd;
    size_t need = fw_acts_layout(cfg, N, full, S_ACTS_ALIGN, NULL, NULL);
    CU_TRY(
        s_dreserve(be->dev, (void **)&be->acts, &be->acts_cap, need, sizeof(float), "activations"));
    fw_acts_layout(cfg, N, full, S_ACTS_ALIGN, be->acts, &be->a);
    /* Train mode sizes the scratch for backward too, so backward never
     * allocates (and never fails for memory after a forward succeeded). The
     * flash path keeps no scores: only its backward's row sums, N*NH floats. */
    size_t att;
    if (be->att_mode == S_ATT_FLASH && flash_attention_supported((int)C, cfg->n_head)) {
        be->attf = 0;
        att = full ? N * (size_t)cfg->n_head : 1;
    } else {
        be->attf = s_att_floats(B, T, cfg->n_head, FW_ATT_CAP);
        att = full ? 7 * N * C + 2 * be->attf : 4 * N * C + be->attf;
    }
    CU_TRY(s_dreserve(be->dev, (void **)&be->attn, &be->attn_cap, att, sizeof(float),
                      "attention scratch"));
    if (be->io_cap < N) {
        be->io_cap = 0; /* a failure half-way must not leave a stale capacity */
        size_t cap = 0;
        CU_TRY(s_dreserve(be->dev, (void **)&be->d_inputs, &cap, N, sizeof(int32_t), "token ids"));
        cap = 0;
        CU_TRY(s_dreserve(be->dev, (void **)&be->d_targets, &cap, N, sizeof(int32_t), "targets"));
        cap = 0;
        CU_TRY(s_dreserve(be->dev, (void **)&be->d_argmax, &cap, N, sizeof(int32_t), "argmax"));
        be->io_cap = N;
    }
    if (be->h_io_cap < N) {
        be->h_io_cap = 0;
        size_t cap = 0;
        CU_TRY(s_hreserve((void **)&be->h_inputs, &cap, N, sizeof(int32_t), "token ids"));
        cap = 0;
        CU_TRY(s_hreserve((void **)&be->h_targets, &cap, N, sizeof(int32_t), "targets"));
        cap = 0;
        CU_TRY(s_hreserve((void **)&be->h_losses, &cap, N, sizeof(float), "losses"));
        be->h_io_cap = N;
    }
    return 0;
}

/* Embedding through ln_f for be->d_inputs (B x T) into be->a. */
static int s_forward_body(cuda_be *be, int B, int T) {
    const fw_model_config *cfg = &be->cfg;
    int L = cfg->n_layer, C = cfg->n_embd, NH = cfg->n_head, N = B * T;
    size_t n = (size_t)N;
    float eps = cfg->layer_norm_eps;
    fw_acts *a = &be->a;
    cuda_gemm *g = &be->g;
    CU_TRY(s_sync_params16(be));
    encoder_forward_kernel<<<s_blocks(n * C, 256), 256>>>(
        a->encoded, be->d_inputs, NULL, s_param(be, FW_P_WTE), s_param(be, FW_P_WPE), T, C, n * C);
    CU_TRY(cudaCheckLaunch());
    for (int l = 0; l < L; l++) {
        fw_acts_l v = fw_acts_at(a, n, C, NH, l);
        size_t lc = (size_t)l * C;
        const bf16 *w16;
        CU_TRY(s_layernorm_forward(v.ln1, v.ln1m, v.ln1r, v.res, s_param(be, FW_P_LN1W) + lc,
                                   s_param(be, FW_P_LN1B) + lc, N, C, eps));
        w16 = s_param16(be, FW_P_QKVW);
        CU_TRY(matmul_forward(g, v.qkv, v.ln1, s_param(be, FW_P_QKVW) + lc * 3 * C,
                              w16 ? w16 + lc * 3 * C : NULL, s_param(be, FW_P_QKVB) + 3 * lc, NULL,
                              N, C, 3 * C));
        CU_TRY(attention_forward_mode(be->att_mode, g, v.atty, v.lse, v.qkv, B, T, C, NH, be->attn,
                                      be->attf));
        w16 = s_param16(be, FW_P_ATTPROJW);
        CU_TRY(matmul_forward(g, v.res2, v.atty, s_param(be, FW_P_ATTPROJW) + lc * C,
                              w16 ? w16 + lc * C : NULL, s_param(be, FW_P_ATTPROJB) + lc, v.res, N, C,
                              C));
        CU_TRY(s_layernorm_forward(v.ln2, v.ln2m, v.ln2r, v.res2, s_param(be, FW_P_LN2W) + lc,
                                   s_param(be, FW_P_LN2B) + lc, N, C, eps));
        w16 = s_param16(be, FW_P_FCW);
        CU_TRY(matmul_forward(g, v.fch, v.ln2, s_param(be, FW_P_FCW) + lc * 4 * C,
                              w16 ? w16 + lc * 4 * C : NULL, s_param(be, FW_P_FCB) + 4 * lc, NULL,
                              N, C, 4 * C));
        CU_TRY(s_gelu_forward(v.fchg, v.fch, n * 4 * C));
        w16 = s_param16(be, FW_P_FCPROJW);
        CU_TRY(matmul_forward(g, v.res3, v.fchg, s_param(be, FW_P_FCPROJW) + lc * 4 * C,
                              w16 ? w16 + lc * 4 * C : NULL, s_param(be, FW_P_FCPROJB) + lc, v.res2,
                              N, 4 * C, C));
    }
    return s_layernorm_forward(a->lnf, a->lnf_mean, a->lnf_rstd,
                               fw_acts_layer(a, a->res3, n, C, L - 1), s_param(be, FW_P_LNFW),
                               s_param(be, FW_P_LNFB), N, C, eps);
}

static int cuda_forward(void *p, const int32_t *inputs, const int32_t *targets, int B, int T,
                        int train, float *loss) {
    cuda_be *be = (cuda_be *)p;
    const fw_model_config *cfg = &be->cfg;
    size_t N = (size_t)B * T, Vp = (size_t)cfg->padded_vocab_size;
    CU_TRY(s_enter(be));
    be->B = be->T = 0;
    CU_TRY(s_prepare(be, B, T, train));
    CU_TRY(s_dreserve(be->dev, (void **)&be->logits, &be->logits_cap, N * Vp, sizeof(float),
                      "logits"));
    memcpy(be->h_inputs, inputs, N * sizeof(int32_t));
    CU_TRY(
        cudaCheck(cudaMemcpy(be->d_inputs, inputs, N * sizeof(int32_t), cudaMemcpyHostToDevice)));
    if (targets) {
        memcpy(be->h_targets, targets, N * sizeof(int32_t));
        CU_TRY(cudaCheck(
            cudaMemcpy(be->d_targets, targets, N * sizeof(int32_t), cudaMemcpyHostToDevice)));
    }
    CU_TRY(s_forward_body(be, B, T));
    CU_TRY(matmul_forward(&be->g, be->logits, be->a.lnf, s_param(be, FW_P_WTE),
                          s_param16(be, FW_P_WTE), NULL, NULL, (int)N, cfg->n_embd, (int)Vp));
    be->n_valid = 0;
    *loss = 0.0f;
    if (targets) {
        crossentropy_forward_kernel<<<(unsigned)N, FW_CE_THREADS>>>(
            be->a.losses, be->a.ce_lse, be->logits, be->d_targets, cfg->vocab_size, (int)Vp);
        CU_TRY(cudaCheckLaunch());
        CU_TRY(cudaCheck(
            cudaMemcpy(be->h_losses, be->a.losses, N * sizeof(float), cudaMemcpyDeviceToHost)));
        double s = 0.0;
        for (size_t i = 0; i < N; i++) {
            if (targets[i] < 0) continue;
            s += be->h_losses[i];
            be->n_valid++;
        }
        *loss = be->n_valid ? (float)(s / (double)be->n_valid) : 0.0f;
    } else {
        CU_TRY(cudaCheck(cudaDeviceSynchronize())); /* surface kernel faults in this call */
    }
    be->B = B;
    be->T = T;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Backward                                                                  */
/* ------------------------------------------------------------------------ */

static int s_encoder_backward(cuda_be *be, const float *dout, int B, int T) {
    int C = be->cfg.n_embd, V = be->cfg.vocab_size, N = B * T;
    size_t cap = be->h_plan_cap;
    CU_TRY(s_hreserve((void **)&be->h_plan, &cap, 2 * (size_t)N + 1, sizeof(int), "encoder plan"));
    be->h_plan_cap = cap;
    free(be->h_count);
    be->h_count = (int *)calloc((size_t)V, sizeof(int));
    if (!be->h_count) return fw_err_set(FW_ENOMEM, "cuda: encoder backward: %d counters", V);
    int nu = s_encoder_plan(be->h_plan, be->h_count, be->h_inputs, N, V);
    CU_TRY(s_dreserve(be->dev, (void **)&be->d_plan, &be->plan_cap, 2 * (size_t)N + 1, sizeof(int),
                      "encoder plan"));
    CU_TRY(cudaCheck(cudaMemcpy(be->d_plan, be->h_plan, (2 * (size_t)nu + 1 + N) * sizeof(int),
                                cudaMemcpyHostToDevice)));
    encoder_backward_wte_kernel<<<(unsigned)nu, 256>>>(s_grad(be, FW_P_WTE), dout, be->d_plan,
                                                       be->d_plan + nu, be->d_plan + 2 * nu + 1, C);
    CU_TRY(cudaCheckLaunch());
    encoder_backward_wpe_kernel<<<s_blocks((size_t)T * C, 256), 256>>>(s_grad(be, FW_P_WPE), dout,
                                                                       B, T, C);
    return cudaCheckLaunch();
}

static int cuda_backward(void *p, float grad_scale, const fw_grad_sync *sync) {
    cuda_be *be = (cuda_be *)p;
    const fw_model_config *cfg = &be->cfg;
    int B = be->B, T = be->T, N = B * T, L = cfg->n_layer, C = cfg->n_embd, NH = cfg->n_head;
    int V = cfg->vocab_size, Vp = cfg->padded_vocab_size;
    size_t n = (size_t)N;
    CU_TRY(s_enter(be));
    if (!cuda_grads(be)) return FW_ENOMEM;
    CU_TRY(s_dreserve(be->dev, (void **)&be->bw, &be->bw_cap, n * 9 * C, sizeof(float),
                      "backward scratch"));
    float *dresid = be->bw, *dbuf = dresid + n * C, *d4c = dbuf + n * C, *dqkv = d4c + n * 4 * C;
    fw_acts *a = &be->a;
    cuda_gemm *g = &be->g;
    float scale = grad_scale > 0 ? grad_scale : (be->n_valid ? 1.0f / (float)be->n_valid : 0.0f);
    CU_TRY(s_sync_params16(be));

    /* LM head (tied to wte) and ln_f. */
    crossentropy_backward_kernel<<<(unsigned)N, FW_CE_THREADS>>>(be->logits, a->ce_lse,
                                                                 be->d_targets, scale, V, Vp);
    CU_TRY(cudaCheckLaunch());
    CU_TRY(matmul_backward(g, dbuf, s_grad(be, FW_P_WTE), NULL, be->logits, a->lnf,
                           s_param(be, FW_P_WTE), s_param16(be, FW_P_WTE), N, C, Vp));
    CU_TRY(cudaCheck(cudaMemset(dresid, 0, n * C * sizeof(float))));
    CU_TRY(s_layernorm_backward(g, dresid, s_grad(be, FW_P_LNFW), s_grad(be, FW_P_LNFB), dbuf,
                                fw_acts_layer(a, a->res3, n, C, L - 1), s_param(be, FW_P_LNFW),
                                a->lnf_mean, a->lnf_rstd, N, C));

    for (int l = L - 1; l >= 0; l--) {
        fw_acts_l v = fw_acts_at(a, n, C, NH, l);
        size_t lc = (size_t)l * C;
        const bf16 *w16;

        /* res3 = res2 + fcproj(gelu(fc(ln2(res2)))): dresid is d(res3). */
        w16 = s_param16(be, FW_P_FCPROJW);
        CU_TRY(matmul_backward(g, d4c, s_grad(be, FW_P_FCPROJW) + lc * 4 * C,
                               s_grad(be, FW_P_FCPROJB) + lc, dresid, v.fchg,
                               s_param(be, FW_P_FCPROJW) + lc * 4 * C,
                               w16 ? w16 + lc * 4 * C : NULL, N, 4 * C, C));
        CU_TRY(s_gelu_backward(d4c, v.fch, d4c, n * 4 * C));
        w16 = s_param16(be, FW_P_FCW);
        CU_TRY(matmul_backward(
            g, dbuf, s_grad(be, FW_P_FCW) + lc * 4 * C, s_grad(be, FW_P_FCB) + 4 * lc, d4c, v.ln2,
            s_param(be, FW_P_FCW) + lc * 4 * C, w16 ? w16 + lc * 4 * C : NULL, N, C, 4 * C));
        CU_TRY(s_layernorm_backward(g, dresid, s_grad(be, FW_P_LN2W) + lc,
                                    s_grad(be, FW_P_LN2B) + lc, dbuf, v.res2,
                                    s_param(be, FW_P_LN2W) + lc, v.ln2m, v.ln2r, N, C));
        /* res2 = res + attproj(attention(qkv(ln1(res)))): dresid is now d(res2). */
        w16 = s_param16(be, FW_P_ATTPROJW);
        CU_TRY(matmul_backward(
            g, dbuf, s_grad(be, FW_P_ATTPROJW) + lc * C, s_grad(be, FW_P_ATTPROJB) + lc, dresid,
            v.atty, s_param(be, FW_P_ATTPROJW) + lc * C, w16 ? w16 + lc * C : NULL, N, C, C));
        CU_TRY(attention_backward_mode(be->att_mode, g, dqkv, dbuf, v.qkv, v.lse, B, T, C, NH,
                                       be->attn, be->attf));
        w16 = s_param16(be, FW_P_QKVW);
        CU_TRY(matmul_backward(
            g, dbuf, s_grad(be, FW_P_QKVW) + lc * 3 * C, s_grad(be, FW_P_QKVB) + 3 * lc, dqkv, v.ln1,
            s_param(be, FW_P_QKVW) + lc * 3 * C, w16 ? w16 + lc * 3 * C : NULL, N, C, 3 * C));
        CU_TRY(s_layernorm_backward(g, dresid, s_grad(be, FW_P_LN1W) + lc,
                                    s_grad(be, FW_P_LN1B) + lc, dbuf, v.res,
                                    s_param(be, FW_P_LN1W) + lc, v.ln1m, v.ln1r, N, C));
        /* Layer l's gradients are queued: its all-reduce may start as soon
         * as they run, while the kernels of layer l-1 follow (docs/gpu.md). */
        if (sync) CU_TRY(fw_grad_sync_bucket(sync, cfg, L - 1 - l, (void *)cudaStreamLegacy));
    }
    CU_TRY(s_encoder_backward(be, dresid, B, T));
    if (sync) {
        CU_TRY(fw_grad_sync_bucket(sync, cfg, L, (void *)cudaStreamLegacy));
        CU_TRY(sync->finish(sync->ctx, (void *)cudaStreamLegacy));
    }
    return cudaCheck(cudaDeviceSynchronize());
}

static int cuda_zero_grad(void *p) {
    cuda_be *be = (cuda_be *)p;
    CU_TRY(s_enter(be));
    if (!cuda_grads(be)) return FW_ENOMEM;
    return cudaCheck(cudaMemset(be->grads, 0, be->np * sizeof(float)));
}

static int cuda_grad_sumsq(void *p, size_t off, size_t len, double *sumsq) {
    cuda_be *be = (cuda_be *)p;
    CU_TRY(s_enter(be));
    return s_sumsq(be->d_norm, be->grads + off, len, sumsq);
}

static int cuda_step_adamw(void *p, const fw_adamw *opt, int64_t step, float norm) {
    cuda_be *be = (cuda_be *)p;
    CU_TRY(s_enter(be));
    CU_TRY(s_alloc_opt(be));
    float gscale = 1.0f;
    if (opt->grad_clip > 0 && norm > opt->grad_clip) gscale = opt->grad_clip / norm;
    float bc1 = (float)(1.0 - pow(opt->beta1, (double)step));
    float bc2 = (float)(1.0 - pow(opt->beta2, (double)step));
    for (int i = 0; i < FW_NUM_PARAM_TENSORS; i++) {
        size_t lo, hi, s = be->opt_off;
        if (!fw_param_range_part(&be->t[i], be->opt_off, be->opt_len, &lo, &hi)) continue;
        adamw_kernel<<<s_blocks(hi - lo, 256), 256>>>(
            be->params + lo, be->params16 ? be->params16 + lo : NULL, be->grads + lo,
            be->mom1 + (lo - s), be->mom2 + (lo - s), hi - lo, gscale, opt->lr, opt->beta1,
            opt->beta2, bc1, bc2, opt->eps, be->t[i].decay ? opt->weight_decay : 0.0f);
        CU_TRY(cudaCheckLaunch());
    }
    /* The kernel rewrote params16 for the range it updated: all of it unless
     * the optimizer is sharded (then the all-gather brings the rest, through
     * fw_model_params, which marks the copy stale anyway). */
    be->params16_stale = be->opt_len != be->np;
    return cudaCheck(cudaDeviceSynchronize());
}

/* ------------------------------------------------------------------------ */
/* Readers and embedding                                                     */
/* ------------------------------------------------------------------------ */

static int cuda_get_losses(void *p, float *out) {
    cuda_be *be = (cuda_be *)p;
    CU_TRY(s_enter(be));
    return cudaCheck(cudaMemcpy(out, be->a.losses, (size_t)be->B * be->T * sizeof(float),
                                cudaMemcpyDeviceToHost));
}

static int cuda_get_argmax(void *p, int32_t *out) {
    cuda_be *be = (cuda_be *)p;
    size_t N = (size_t)be->B * be->T;
    CU_TRY(s_enter(be));
    argmax_kernel<<<(unsigned)N, FW_CE_THREADS>>>(be->d_argmax, be->logits, be->cfg.vocab_size,
                                                  be->cfg.padded_vocab_size);
    CU_TRY(cudaCheckLaunch());
    return cudaCheck(cudaMemcpy(out, be->d_argmax, N * sizeof(int32_t), cudaMemcpyDeviceToHost));
}

static int cuda_get_logits(void *p, size_t row0, size_t nrows, float *out) {
    cuda_be *be = (cuda_be *)p;
    size_t V = (size_t)be->cfg.vocab_size, Vp = (size_t)be->cfg.padded_vocab_size;
    if (nrows == 0) return 0;
    CU_TRY(s_enter(be));
    return cudaCheck(cudaMemcpy2D(out, V * sizeof(float), be->logits + row0 * Vp,
                                  Vp * sizeof(float), V * sizeof(float), nrows,
                                  cudaMemcpyDeviceToHost));
}

static int cuda_embed(void *p, const int32_t *ids, const int32_t *lens, int B, int T, float *out) {
    cuda_be *be = (cuda_be *)p;
    int C = be->cfg.n_embd, Tm = 0;
    for (int b = 0; b < B; b++)
        if (lens[b] > Tm) Tm = lens[b];
    size_t N = (size_t)B * Tm;
    CU_TRY(s_enter(be));
    be->B = be->T = 0;
    CU_TRY(s_prepare(be, B, Tm, 0));
    /* Only columns < max(lens) are run; padding ids become 0 (never read:
     * attention is causal), exactly as the CPU backend does. */
    for (int b = 0; b < B; b++)
        for (int t = 0; t < Tm; t++)
            be->h_inputs[(size_t)b * Tm + t] = t < lens[b] ? ids[(size_t)b * T + t] : 0;
    CU_TRY(cudaCheck(
        cudaMemcpy(be->d_inputs, be->h_inputs, N * sizeof(int32_t), cudaMemcpyHostToDevice)));
    /* lens go through d_targets: no targets in an embedding forward. */
    CU_TRY(cudaCheck(
        cudaMemcpy(be->d_targets, lens, (size_t)B * sizeof(int32_t), cudaMemcpyHostToDevice)));
    CU_TRY(s_forward_body(be, B, Tm));
    CU_TRY(s_dreserve(be->dev, (void **)&be->d_embed, &be->embed_cap, (size_t)B * C, sizeof(float),
                      "embeddings"));
    meanpool_norm_kernel<<<(unsigned)B, 256>>>(be->d_embed, be->a.lnf, be->d_targets, Tm, C);
    CU_TRY(cudaCheckLaunch());
    return cudaCheck(
        cudaMemcpy(out, be->d_embed, (size_t)B * C * sizeof(float), cudaMemcpyDeviceToHost));
}

/* ------------------------------------------------------------------------ */
/* KV cache                                                                  */
/* ------------------------------------------------------------------------ */

static void cuda_kv_destroy(void *p) {
    cuda_kv *kv = (cuda_kv *)p;
    if (!kv) return;
    cudaSetDevice(kv->be->dev);
    cudaFree(kv->k);
    cudaFree(kv->v);
    cudaFree(kv->scratch);
    cudaFree(kv->scores);
    cudaFree(kv->logits);
    cudaFree(kv->d_meta);
    free(kv->h_meta);
    free(kv);
}

static void *cuda_kv_new(void *p, int batch, int max_len) {
    cuda_be *be = (cuda_be *)p;
    const fw_model_config *cfg = &be->cfg;
    if (s_enter(be) < 0) return NULL;
    cuda_kv *kv = (cuda_kv *)calloc(1, sizeof *kv);
    if (!kv) {
        fw_err_set(FW_ENOMEM, "cuda: kv cache");
        return NULL;
    }
    kv->be = be;
    kv->batch = batch;
    kv->max_len = max_len;
    size_t C = (size_t)cfg->n_embd, n = (size_t)cfg->n_layer * batch * max_len * C;
    size_t rows = (size_t)(batch > max_len ? batch : max_len);
    kv->scratch_rows = rows;
    int rc = s_dalloc(be->dev, (void **)&kv->k, n * sizeof(float), "kv cache keys");
    if (rc == 0) rc = s_dalloc(be->dev, (void **)&kv->v, n * sizeof(float), "kv cache values");
    if (rc == 0)
        rc = s_dalloc(be->dev, (void **)&kv->scratch, rows * 11 * C * sizeof(float), "kv scratch");
    if (rc == 0)
        rc = s_dalloc(be->dev, (void **)&kv->scores,
                      rows * cfg->n_head * (size_t)max_len * sizeof(float), "kv scores");
    if (rc == 0)
        rc = s_dalloc(be->dev, (void **)&kv->logits,
                      (size_t)batch * cfg->padded_vocab_size * sizeof(float), "kv logits");
    if (rc == 0) rc = s_dalloc(be->dev, (void **)&kv->d_meta, rows * 4 * sizeof(int), "kv meta");
    if (rc == 0) {
        kv->h_meta = (int *)malloc(rows * 4 * sizeof(int));
        if (!kv->h_meta) rc = fw_err_set(FW_ENOMEM, "cuda: kv host buffers");
    }
    if (rc < 0) {
        char d[512];
        snprintf(d, sizeof d, "%s", fw_err_detail());
        cuda_kv_destroy(kv);
        fw_err_set(rc, "kv cache %d x %d: %s", batch, max_len, d);
        return NULL;
    }
    return kv;
}

/* Run n tokens: token i is ids[i] of cache row rows[i] at position pos[i]
 * (tokens of one row in position order). The logits (V wide) of the
 * tokens with want[i] go to logits_out[k*V] for the k-th such token. */
static int s_kv_forward(cuda_kv *kv, int n, const int32_t *ids, const int *rows, const int *pos,
                        const uint8_t *want, float *logits_out) {
    cuda_be *be = kv->be;
    const fw_model_config *cfg = &be->cfg;
    cuda_gemm *g = &be->g;
    int L = cfg->n_layer, C = cfg->n_embd, NH = cfg->n_head, hs = C / NH;
    float eps = cfg->layer_norm_eps;
    size_t nc = (size_t)n * C;
    float *x = kv->scratch, *ln = x + nc, *qkv = ln + nc, *atty = qkv + 3 * nc, *x2 = atty + nc,
          *fch = x2 + nc;
    int *h = kv->h_meta, k = 0;
    memcpy(h, ids, (size_t)n * sizeof(int));
    memcpy(h + n, rows, (size_t)n * sizeof(int));
    memcpy(h + 2 * n, pos, (size_t)n * sizeof(int));
    for (int i = 0; i < n; i++)
        if (want[i]) h[3 * n + k++] = i;
    int *d_ids = kv->d_meta, *d_rows = d_ids + n, *d_pos = d_rows + n, *d_idx = d_pos + n;
    CU_TRY(cudaCheck(
        cudaMemcpy(kv->d_meta, h, (size_t)(3 * n + k) * sizeof(int), cudaMemcpyHostToDevice)));
    CU_TRY(s_sync_params16(be));
    encoder_forward_kernel<<<s_blocks(nc, 256), 256>>>(x, d_ids, d_pos, s_param(be, FW_P_WTE),
                                                       s_param(be, FW_P_WPE), 1, C, nc);
    CU_TRY(cudaCheckLaunch());
    for (int l = 0; l < L; l++) {
        size_t lc = (size_t)l * C;
        size_t layer_off = (size_t)l * kv->batch * kv->max_len * C;
        const bf16 *w16;
        CU_TRY(s_layernorm_forward(ln, NULL, NULL, x, s_param(be, FW_P_LN1W) + lc,
                                   s_param(be, FW_P_LN1B) + lc, n, C, eps));
        w16 = s_param16(be, FW_P_QKVW);
        CU_TRY(matmul_forward(g, qkv, ln, s_param(be, FW_P_QKVW) + lc * 3 * C,
                              w16 ? w16 + lc * 3 * C : NULL, s_param(be, FW_P_QKVB) + 3 * lc, NULL,
                              n, C, 3 * C));
        kv_store_kernel<<<s_blocks(nc, 256), 256>>>(kv->k + layer_off, kv->v + layer_off, qkv,
                                                    d_rows, d_pos, n, kv->max_len, C);
        CU_TRY(cudaCheckLaunch());
        kv_attend_kernel<<<(unsigned)(n * NH), 128, (size_t)hs * sizeof(float)>>>(
            atty, qkv, kv->k + layer_off, kv->v + layer_off, d_rows, d_pos, kv->max_len, C, NH,
            kv->scores);
        CU_TRY(cudaCheckLaunch());
        w16 = s_param16(be, FW_P_ATTPROJW);
        CU_TRY(matmul_forward(g, x2, atty, s_param(be, FW_P_ATTPROJW) + lc * C,
                              w16 ? w16 + lc * C : NULL, s_param(be, FW_P_ATTPROJB) + lc, x, n, C,
                              C));
        CU_TRY(s_layernorm_forward(ln, NULL, NULL, x2, s_param(be, FW_P_LN2W) + lc,
                                   s_param(be, FW_P_LN2B) + lc, n, C, eps));
        w16 = s_param16(be, FW_P_FCW);
        CU_TRY(matmul_forward(g, fch, ln, s_param(be, FW_P_FCW) + lc * 4 * C,
                              w16 ? w16 + lc * 4 * C : NULL, s_param(be, FW_P_FCB) + 4 * lc, NULL,
                              n, C, 4 * C));
        CU_TRY(s_gelu_forward(fch, fch, nc * 4));
        w16 = s_param16(be, FW_P_FCPROJW);
        CU_TRY(matmul_forward(g, x, fch, s_param(be, FW_P_FCPROJW) + lc * 4 * C,
                              w16 ? w16 + lc * 4 * C : NULL, s_param(be, FW_P_FCPROJB) + lc, x2, n,
                              4 * C, C));
    }
    if (k == 0 || !logits_out) return cudaCheck(cudaDeviceSynchronize());
    size_t V = (size_t)cfg->vocab_size, Vp = (size_t)cfg->padded_vocab_size;
    rows_gather_kernel<<<s_blocks((size_t)k * C, 256), 256>>>(x2, x, d_idx, k, C);
    CU_TRY(cudaCheckLaunch());
    CU_TRY(s_layernorm_forward(ln, NULL, NULL, x2, s_param(be, FW_P_LNFW), s_param(be, FW_P_LNFB),
                               k, C, eps));
    CU_TRY(matmul_forward(g, kv->logits, ln, s_param(be, FW_P_WTE), s_param16(be, FW_P_WTE), NULL,
                          NULL, k, C, (int)Vp));
    return cudaCheck(cudaMemcpy2D(logits_out, V * sizeof(float), kv->logits, Vp * sizeof(float),
                                  V * sizeof(float), (size_t)k, cudaMemcpyDeviceToHost));
}

static int cuda_kv_forward(void *p, void *kvp, int n, const int32_t *ids, const int *rows,
                           const int *pos, const uint8_t *want, float *logits) {
    CU_TRY(s_enter((cuda_be *)p));
    return s_kv_forward((cuda_kv *)kvp, n, ids, rows, pos, want, logits);
}

#include "ops.cuh"

extern "C" const fw_backend fw_backend_cuda = {
    /* .name = */ "cuda",
    /* .create = */ cuda_create,
    /* .destroy = */ cuda_destroy,
    /* .params = */ cuda_params,
    /* .grads = */ cuda_grads,
    /* .read_params = */ cuda_read_params,
    /* .write_params = */ cuda_write_params,
    /* .read_opt = */ cuda_read_opt,
    /* .write_opt = */ cuda_write_opt,
    /* .clear_opt = */ cuda_clear_opt,
    /* .forward = */ cuda_forward,
    /* .backward = */ cuda_backward,
    /* .zero_grad = */ cuda_zero_grad,
    /* .grad_sumsq = */ cuda_grad_sumsq,
    /* .shard_opt = */ cuda_shard_opt,
    /* .step_adamw = */ cuda_step_adamw,
    /* .get_losses = */ cuda_get_losses,
    /* .get_argmax = */ cuda_get_argmax,
    /* .get_logits = */ cuda_get_logits,
    /* .embed = */ cuda_embed,
    /* .kv_new = */ cuda_kv_new,
    /* .kv_destroy = */ cuda_kv_destroy,
    /* .kv_forward = */ cuda_kv_forward,
};
