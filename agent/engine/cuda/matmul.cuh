/* matmul.cuh - the linear layers through cuBLASLt, BF16 or FP32.
 *
 * Shapes follow the CPU reference: activations row-major [N, width],
 * weights [OC, C] (out, in), out = inp @ W^T + bias. cuBLAS is
 * column-major, and a row-major [R, K] matrix is a column-major [K, R] one,
 * so each product is issued transposed (llm.c's mapping):
 *   forward   out (OC x N)  = op_T(W: C x OC) * inp (C x N)
 *   dinp      dinp (C x N)  = W (C x OC) * dout (OC x N)
 *   dW       dW (C x OC)   += inp (C x N) * op_T(dout: OC x N)
 *
 * Precision: FP32 mode runs FP32 GEMMs with FP32 compute (no TF32), which is
 * what lets the tests hold the CUDA backend to ~1e-5 of the CPU one. BF16
 * mode reads BF16 operands and accumulates and writes in FP32: weights come
 * from the persistent BF16 copy of the master weights, activations are cast
 * into two fixed scratch buffers (FW_CAST_ELEMS elements each) in row
 * chunks, so the scratch stays bounded whatever N and the vocabulary are.
 * Parameter gradients accumulate in FP32 (beta = 1) either way.
 *
 * Bias and residual: the output is first filled with bias (+ residual) and
 * the GEMM runs with beta = 1, so "GEMM + bias + residual add" reads and
 * writes the output once more instead of twice.
 *
 * The heuristic query of cuBLASLt costs tens of microseconds, which matters
 * for token-by-token decoding, so chosen algorithms are cached by shape,
 * operand alignment and type (FW_LT_CACHE entries, round-robin eviction). */
#ifndef FW_CUDA_MATMUL_CUH
#define FW_CUDA_MATMUL_CUH

#include "common.cuh"

#include <string.h>

#define FW_LT_WORKSPACE ((size_t)32 << 20) /* what cuBLASLt's fastest Hopper kernels ask for */
#define FW_CAST_ELEMS   ((size_t)64 << 20) /* 128 MiB of BF16 per cast scratch */
#define FW_LT_CACHE     64

typedef struct {
    int ta, tb, m, n, k, lda, ldb, ldc, bf16, al_a, al_b, al_d;
} lt_key;

typedef struct {
    lt_key key;
    cublasLtMatmulAlgo_t algo;
    int used;
} lt_entry;

/* GEMM context: handles, workspace, scratch. One per model (and one per
 * per-kernel test call, cuda_ops.cuh). */
typedef struct {
    cublasLtHandle_t lt;
    cublasHandle_t blas;
    void *ws;
    bf16 *cast_a, *cast_b; /* FW_CAST_ELEMS each, allocated on the first BF16 GEMM */
    float *part;           /* column-sum partials: 1024 chunks x widest row */
    size_t part_cap;
    int bf16; /* 1: BF16 operands; 0: FP32 */
    lt_entry cache[FW_LT_CACHE];
    int cache_next;
} cuda_gemm;

static int s_gemm_init(cuda_gemm *g, int use_bf16) {
    memset(g, 0, sizeof *g);
    g->bf16 = use_bf16;
    CU_TRY(cublasCheck(cublasLtCreate(&g->lt)));
    CU_TRY(cublasCheck(cublasCreate(&g->blas)));
    CU_TRY(cudaCheck(cudaMalloc(&g->ws, FW_LT_WORKSPACE)));
    return 0;
}

static void s_gemm_free(cuda_gemm *g) {
    if (g->lt) cublasLtDestroy(g->lt);
    if (g->blas) cublasDestroy(g->blas);
    cudaFree(g->ws);
    cudaFree(g->cast_a);
    cudaFree(g->cast_b);
    cudaFree(g->part);
    memset(g, 0, sizeof *g);
}

static int s_gemm_cast_scratch(cuda_gemm *g) {
    if (g->cast_a) return 0;
    CU_TRY(cudaCheck(cudaMalloc(&g->cast_a, FW_CAST_ELEMS * sizeof(bf16))));
    CU_TRY(cudaCheck(cudaMalloc(&g->cast_b, FW_CAST_ELEMS * sizeof(bf16))));
    return 0;
}

static int s_gemm_part(cuda_gemm *g, size_t floats) {
    if (g->part_cap >= floats) return 0;
    cudaFree(g->part);
    g->part = NULL;
    g->part_cap = 0;
    CU_TRY(cudaCheck(cudaMalloc(&g->part, floats * sizeof(float))));
    g->part_cap = floats;
    return 0;
}

/* Largest power of two <= 256 that divides the address: what cuBLASLt may
 * assume about the operand (its default assumption is 256). */
static inline int s_align(const void *p) {
    uintptr_t a = (uintptr_t)p;
    int al = 256;
    while (al > 1 && (a % (uintptr_t)al) != 0) al >>= 1;
    return al;
}

/* D[m, n] (column-major, ldc) = op(A) op(B) + beta * D. A is m x k after
 * op, B is k x n after op; types BF16 (use16) or FP32; D FP32. */
static int s_lt_matmul(cuda_gemm *g, int ta, int tb, int m, int n, int k, const void *A, int lda,
                       const void *B, int ldb, float *D, int ldc, float beta, int use16) {
    cudaDataType_t t = use16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    int rc = 0;
    cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    lt_key key = {ta, tb, m, n, k, lda, ldb, ldc, use16, s_align(A), s_align(B), s_align(D)};
    lt_entry *hit = NULL;
    float alpha = 1.0f;
    if ((rc = cublasCheck(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F))) < 0)
        goto done;
    if ((rc = cublasCheck(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &opa,
                                                         sizeof opa))) < 0 ||
        (rc = cublasCheck(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &opb,
                                                         sizeof opb))) < 0)
        goto done;
    if ((rc = cublasCheck(cublasLtMatrixLayoutCreate(&la, t, ta ? k : m, ta ? m : k, lda))) < 0 ||
        (rc = cublasCheck(cublasLtMatrixLayoutCreate(&lb, t, tb ? n : k, tb ? k : n, ldb))) < 0 ||
        (rc = cublasCheck(cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, m, n, ldc))) < 0)
        goto done;
    for (int i = 0; i < FW_LT_CACHE; i++)
        if (g->cache[i].used && memcmp(&g->cache[i].key, &key, sizeof key) == 0) hit = &g->cache[i];
    if (!hit) {
        size_t wss = FW_LT_WORKSPACE;
        uint32_t aa = (uint32_t)key.al_a, ab = (uint32_t)key.al_b, ad = (uint32_t)key.al_d;
        if ((rc = cublasCheck(cublasLtMatmulPreferenceCreate(&pref))) < 0) goto done;
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wss,
                                             sizeof wss);
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aa,
                                             sizeof aa);
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ab,
                                             sizeof ab);
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ad,
                                             sizeof ad);
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ad,
                                             sizeof ad);
        cublasLtMatmulHeuristicResult_t heur;
        int found = 0;
        memset(&heur, 0, sizeof heur);
        if ((rc = cublasCheck(cublasLtMatmulAlgoGetHeuristic(g->lt, op, la, lb, lc, lc, pref, 1,
                                                             &heur, &found))) < 0)
            goto done;
        if (found == 0) {
            rc =
                fw_err_set(FW_EDEVICE,
                           "cuBLASLt: no algorithm for %s GEMM m=%d n=%d k=%d (ta %d tb %d, lda %d "
                           "ldb %d ldc %d)",
                           use16 ? "BF16" : "FP32", m, n, k, ta, tb, lda, ldb, ldc);
            goto done;
        }
        hit = &g->cache[g->cache_next];
        g->cache_next = (g->cache_next + 1) % FW_LT_CACHE;
        hit->key = key;
        hit->algo = heur.algo;
        hit->used = 1;
    }
    rc = cublasCheck(cublasLtMatmul(g->lt, op, &alpha, A, la, B, lb, &beta, D, lc, D, lc,
                                    &hit->algo, g->ws, FW_LT_WORKSPACE, 0));
done:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (lc) cublasLtMatrixLayoutDestroy(lc);
    if (op) cublasLtMatmulDescDestroy(op);
    return rc;
}

static int s_cast(bf16 *dst, const float *src, size_t n) {
    if (n == 0) return 0;
    cast_bf16_kernel<<<s_blocks(n, 256), 256>>>(dst, src, n);
    return cudaCheckLaunch();
}

/* out[N, OC] = inp[N, C] @ W[OC, C]^T (+ bias[OC]) (+ res[N, OC]).
 * w16 is W's BF16 copy (used in BF16 mode). res may equal out. */
static int matmul_forward(cuda_gemm *g, float *out, const float *inp, const float *w,
                          const bf16 *w16, const float *bias, const float *res, int N, int C,
                          int OC) {
    float beta = 0.0f;
    size_t n = (size_t)N * OC;
    if (bias || res) {
        bias_res_fill_kernel<<<s_blocks(n, 256), 256>>>(out, bias, res, n, OC);
        CU_TRY(cudaCheckLaunch());
        beta = 1.0f;
    }
    if (!g->bf16) return s_lt_matmul(g, 1, 0, OC, N, C, w, C, inp, C, out, OC, beta, 0);
    CU_TRY(s_gemm_cast_scratch(g));
    int chunk = (int)(FW_CAST_ELEMS / (size_t)C);
    for (int r0 = 0; r0 < N; r0 += chunk) {
        int rn = N - r0 < chunk ? N - r0 : chunk;
        CU_TRY(s_cast(g->cast_a, inp + (size_t)r0 * C, (size_t)rn * C));
        CU_TRY(s_lt_matmul(g, 1, 0, OC, rn, C, w16, C, g->cast_a, C, out + (size_t)r0 * OC, OC,
                           beta, 1));
    }
    return 0;
}

/* db[OC] += column sums of x[N, OC], deterministic (common.cuh). */
static int s_colsum_add(cuda_gemm *g, float *db, const float *x, int N, int OC) {
    int rpc = s_rows_per_chunk(N), nch = (N + rpc - 1) / rpc;
    CU_TRY(s_gemm_part(g, (size_t)nch * OC));
    dim3 grid(s_blocks((size_t)OC, 256), (unsigned)nch);
    colsum_partial_kernel<<<grid, 256>>>(g->part, x, N, OC, rpc);
    CU_TRY(cudaCheckLaunch());
    colsum_final_kernel<<<s_blocks((size_t)OC, 256), 256>>>(db, g->part, nch, OC);
    return cudaCheckLaunch();
}

/* dinp[N, C] = dout[N, OC] @ W[OC, C] (skipped when dinp is NULL);
 * dw[OC, C] += dout^T @ inp; db[OC] += column sums of dout (db may be NULL). */
static int matmul_backward(cuda_gemm *g, float *dinp, float *dw, float *db, const float *dout,
                           const float *inp, const float *w, const bf16 *w16, int N, int C,
                           int OC) {
    if (db) CU_TRY(s_colsum_add(g, db, dout, N, OC));
    if (!g->bf16) {
        if (dinp) CU_TRY(s_lt_matmul(g, 0, 0, C, N, OC, w, C, dout, OC, dinp, C, 0.0f, 0));
        return s_lt_matmul(g, 0, 1, C, OC, N, inp, C, dout, OC, dw, C, 1.0f, 0);
    }
    CU_TRY(s_gemm_cast_scratch(g));
    int wmax = OC > C ? OC : C;
    int chunk = (int)(FW_CAST_ELEMS / (size_t)wmax);
    for (int r0 = 0; r0 < N; r0 += chunk) {
        int rn = N - r0 < chunk ? N - r0 : chunk;
        CU_TRY(s_cast(g->cast_a, dout + (size_t)r0 * OC, (size_t)rn * OC));
        CU_TRY(s_cast(g->cast_b, inp + (size_t)r0 * C, (size_t)rn * C));
        if (dinp)
            CU_TRY(s_lt_matmul(g, 0, 0, C, rn, OC, w16, C, g->cast_a, OC, dinp + (size_t)r0 * C, C,
                               0.0f, 1));
        CU_TRY(s_lt_matmul(g, 0, 1, C, OC, rn, g->cast_b, C, g->cast_a, OC, dw, C, 1.0f, 1));
    }
    return 0;
}

/* Strided-batched FP32 GEMM for attention (column-major, as cuBLAS):
 * C_i = op(A_i) op(B_i) for `batch` matrices. FP32 mode computes in FP32;
 * BF16 mode lets cuBLAS use TF32 tensor cores (its error is below BF16's). */
static int s_gemm_sb(cuda_gemm *g, int ta, int tb, int m, int n, int k, const float *A, int lda,
                     long long sa, const float *B, int ldb, long long sb, float *C, int ldc,
                     long long sc, int batch) {
    float alpha = 1.0f, beta = 0.0f;
    cublasComputeType_t ct = g->bf16 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    return cublasCheck(cublasGemmStridedBatchedEx(
        g->blas, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &alpha, A,
        CUDA_R_32F, lda, sa, B, CUDA_R_32F, ldb, sb, &beta, C, CUDA_R_32F, ldc, sc, batch, ct,
        CUBLAS_GEMM_DEFAULT));
}

#endif
