/* common.cuh - what every kernel family of the CUDA backend shares: error
 * checks that name file:line, warp and block reductions with a fixed order,
 * launch helpers.
 *
 * Errors: cudaCheck(expr), cublasCheck(expr) evaluate to 0 or a negative
 * fw_err (FW_EDEVICE, FW_ENOMEM for allocation failures) after recording
 * "file:line: expr: error name (text)" with fw_err_set, so callers write
 *     if ((rc = cudaCheck(cudaMemcpy(...))) < 0) return rc;
 * The engine is a library used by long-lived processes, so nothing here
 * exits or aborts on a runtime error.
 *
 * Determinism: every reduction here combines values in an order fixed by
 * the launch shape (lane-pairwise shuffles, then a tree over warps), never
 * by timing, so a kernel gives the same floats run to run. */
#ifndef FW_CUDA_COMMON_CUH
#define FW_CUDA_COMMON_CUH

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <stddef.h>
#include <stdint.h>

extern "C" {
#include "engine.h"
#include "fw_err.h"
}

typedef __nv_bfloat16 bf16;

static inline int s_cuda_check(cudaError_t e, const char *expr, const char *file, int line) {
    if (e == cudaSuccess) return 0;
    int code = e == cudaErrorMemoryAllocation ? FW_ENOMEM : FW_EDEVICE;
    (void)cudaGetLastError(); /* clear a sticky-less error so the next call starts clean */
    return fw_err_set(code, "%s:%d: %s: %s (%s)", file, line, expr, cudaGetErrorName(e),
                      cudaGetErrorString(e));
}

static inline int s_cublas_check(cublasStatus_t s, const char *expr, const char *file, int line) {
    if (s == CUBLAS_STATUS_SUCCESS) return 0;
    int code = s == CUBLAS_STATUS_ALLOC_FAILED ? FW_ENOMEM : FW_EDEVICE;
    return fw_err_set(code, "%s:%d: %s: %s (%s)", file, line, expr, cublasGetStatusName(s),
                      cublasGetStatusString(s));
}

#define cudaCheck(x)   s_cuda_check((x), #x, __FILE__, __LINE__)
#define cublasCheck(x) s_cublas_check((x), #x, __FILE__, __LINE__)
/* After a kernel launch: launch-configuration errors surface here, faults
 * inside the kernel at the next synchronising call. */
#define cudaCheckLaunch() s_cuda_check(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)

/* Return from the enclosing int function on error. */
#define CU_TRY(x)                                                                                  \
    do {                                                                                           \
        int rc_ = (x);                                                                             \
        if (rc_ < 0) return rc_;                                                                   \
    } while (0)

static inline unsigned s_blocks(size_t n, unsigned threads) {
    return (unsigned)((n + threads - 1) / threads);
}

/* ------------------------------------------------------------------------ */
/* Reductions                                                                */
/* ------------------------------------------------------------------------ */

template <typename T> __device__ inline T warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ inline float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, at most 1024); every
 * thread gets the result. `sh` holds 32 T. Calls __syncthreads. */
template <typename T> __device__ inline T block_sum(T v, T *sh) {
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); /* sh may still be read from a previous call */
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    T r = lane < nw ? sh[lane] : (T)0;
    return warp_sum(r);
}

__device__ inline float block_max(float v, float *sh) {
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    float r = lane < nw ? sh[lane] : -INFINITY;
    return warp_max(r);
}

/* ------------------------------------------------------------------------ */
/* Small elementwise kernels                                                 */
/* ------------------------------------------------------------------------ */

__global__ static void cast_bf16_kernel(bf16 *out, const float *in, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = __float2bfloat16_rn(in[i]);
}

/* out[r, o] = bias[o] + res[r, o] (either may be NULL: 0). Prepares the C
 * operand of a GEMM run with beta = 1, so bias and residual cost no pass of
 * their own after it. */
__global__ static void bias_res_fill_kernel(float *out, const float *bias, const float *res,
                                            size_t n, int OC) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = bias ? bias[i % OC] : 0.0f;
    if (res) v += res[i];
    out[i] = v;
}

/* Column sums over row chunks, stage 1: part[k, c] = sum of in[r, c] over
 * rows r of chunk k, rows in order. Stage 2 (colsum_final_kernel) adds the
 * chunks in order, so the result does not depend on scheduling. */
__global__ static void colsum_partial_kernel(float *part, const float *in, int N, int W,
                                             int rows_per_chunk) {
    int k = blockIdx.y;
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= W) return;
    int r0 = k * rows_per_chunk, r1 = min(N, r0 + rows_per_chunk);
    float s = 0.0f;
    for (int r = r0; r < r1; r++) s += in[(size_t)r * W + c];
    part[(size_t)k * W + c] = s;
}

/* out[c] += sum over k of part[k, c] (k in order). */
__global__ static void colsum_final_kernel(float *out, const float *part, int nchunks, int W) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= W) return;
    float s = 0.0f;
    for (int k = 0; k < nchunks; k++) s += part[(size_t)k * W + c];
    out[c] += s;
}

/* Rows per chunk for a two-stage column reduction of N rows into at most
 * 1024 chunks: at least 32 rows so each thread's loop amortises its launch. */
static inline int s_rows_per_chunk(int N) {
    int r = (N + 1023) / 1024;
    return r < 32 ? 32 : r;
}

#endif
