/* adamw.cuh - AdamW with FP32 master weights and moments, and the global
 * gradient norm.
 *
 * The update is the CPU reference's formula element for element; when the
 * model runs BF16 matmuls the same kernel also writes the BF16 copy of the
 * weights the GEMMs read, so there is no separate cast pass after a step.
 *
 * The squared norm is summed in double in two stages: a fixed grid of
 * FW_NORM_BLOCKS blocks, each striding over the buffer and reducing in a
 * fixed tree, then one block adding the partials in order. Same buffer, same
 * result, independent of timing. */
#ifndef FW_CUDA_ADAMW_CUH
#define FW_CUDA_ADAMW_CUH

#include "common.cuh"

#define FW_NORM_BLOCKS  512
#define FW_NORM_THREADS 256

__global__ static void adamw_kernel(float *p, bf16 *p16, const float *g, float *m, float *v,
                                    size_t n, float gscale, float lr, float beta1, float beta2,
                                    float bc1, float bc2, float eps, float wd) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float gi = g[i] * gscale;
    float mi = beta1 * m[i] + (1.0f - beta1) * gi;
    float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    float mhat = mi / bc1, vhat = vi / bc2;
    float pi = p[i];
    pi -= lr * (mhat / (sqrtf(vhat) + eps) + wd * pi);
    p[i] = pi;
    if (p16) p16[i] = __float2bfloat16_rn(pi);
}

__global__ static void sumsq_partial_kernel(double *part, const float *x, size_t n) {
    __shared__ double sh[32];
    double s = 0.0;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        double v = (double)x[i];
        s += v * v;
    }
    s = block_sum(s, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

__global__ static void sumsq_final_kernel(double *out, const double *part, int nparts) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    double s = 0.0;
    for (int k = 0; k < nparts; k++) s += part[k];
    *out = s;
}

#endif
