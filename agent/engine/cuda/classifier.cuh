/* classifier.cuh - softmax cross-entropy over the tied LM head's logits,
 * and argmax.
 *
 * The logits live in one [N, Vp] FP32 buffer, written once by the head GEMM.
 * Forward reads each row twice (max, then sum of exponentials) and writes
 * only the row's loss and log-sum-exp; backward turns the same buffer in
 * place into the gradient scale * (softmax - onehot(target)), padding
 * columns and ignored rows (target -1) set to 0. No second [N, Vp] array
 * ever exists: that is the "fused classifier" of llm.c without fusing the
 * loss into the GEMM. One block per row; the block reductions have a fixed
 * order (common.cuh). */
#ifndef FW_CUDA_CLASSIFIER_CUH
#define FW_CUDA_CLASSIFIER_CUH

#include "common.cuh"

#define FW_CE_THREADS 512

__global__ static void crossentropy_forward_kernel(float *losses, float *lse, const float *logits,
                                                   const int32_t *targets, int V, int Vp) {
    __shared__ float sh[32];
    int r = blockIdx.x;
    const float *x = logits + (size_t)r * Vp;
    float m = -INFINITY;
    for (int i = threadIdx.x; i < V; i += blockDim.x) m = fmaxf(m, x[i]);
    m = block_max(m, sh);
    float s = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) s += expf(x[i] - m);
    s = block_sum(s, sh);
    if (threadIdx.x == 0) {
        float l = m + logf(s);
        lse[r] = l;
        int tg = targets[r];
        losses[r] = tg < 0 ? 0.0f : l - x[tg];
    }
}

__global__ static void crossentropy_backward_kernel(float *logits, const float *lse,
                                                    const int32_t *targets, float scale, int V,
                                                    int Vp) {
    int r = blockIdx.x;
    float *x = logits + (size_t)r * Vp;
    int tg = targets[r];
    float l = lse[r];
    for (int i = threadIdx.x; i < Vp; i += blockDim.x) {
        float g = 0.0f;
        if (tg >= 0 && i < V) {
            g = scale * expf(x[i] - l);
            if (i == tg) g -= scale;
        }
        x[i] = g;
    }
}

/* Lowest index among equal maxima, like the CPU reference. NaN never wins. */
__global__ static void argmax_kernel(int32_t *out, const float *logits, int V, int Vp) {
    __shared__ float shv[FW_CE_THREADS];
    __shared__ int shi[FW_CE_THREADS];
    int r = blockIdx.x;
    const float *x = logits + (size_t)r * Vp;
    float bv = -INFINITY;
    int bi = V; /* "none yet" sorts after every real index */
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float v = x[i];
        if (v > bv || (bi == V && v == bv)) {
            bv = v;
            bi = i;
        }
    }
    shv[threadIdx.x] = bv;
    shi[threadIdx.x] = bi;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) {
            float ov = shv[threadIdx.x + s];
            int oi = shi[threadIdx.x + s];
            if (ov > shv[threadIdx.x] || (ov == shv[threadIdx.x] && oi < shi[threadIdx.x])) {
                shv[threadIdx.x] = ov;
                shi[threadIdx.x] = oi;
            }
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) out[r] = shi[0] < V ? shi[0] : 0;
}

#endif
