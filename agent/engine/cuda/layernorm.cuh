/* layernorm.cuh - LayerNorm forward and backward, one warp per row.
 *
 * Forward computes the mean, then the variance of (x - mean) (two passes,
 * as the CPU reference does, which is kinder to rows with a large mean than
 * E[x^2] - mean^2), and writes out, mean and rstd. The residual add that
 * precedes every LayerNorm in GPT-2 is folded into the GEMM that produces
 * the residual stream (C operand = residual + bias, beta = 1; see
 * matmul.cuh), so the stream is read once here.
 *
 * Backward: per row (one warp) dinp += (w*d - mean(w*d) - n*mean(w*d*n)) * rstd;
 * the parameter gradients dw = sum_r n*d, db = sum_r d are column sums done
 * in two stages over fixed row chunks (common.cuh), so they are
 * deterministic without atomics. */
#ifndef FW_CUDA_LAYERNORM_CUH
#define FW_CUDA_LAYERNORM_CUH

#include "common.cuh"

__global__ static void layernorm_forward_kernel(float *out, float *mean, float *rstd,
                                                const float *inp, const float *w, const float *b,
                                                int N, int C, float eps) {
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= N) return;
    const float *x = inp + (size_t)row * C;
    float s = 0.0f;
    for (int c = lane; c < C; c += 32) s += x[c];
    float m = warp_sum(s) / C;
    float v = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float d = x[c] - m;
        v += d * d;
    }
    float rs = rsqrtf(warp_sum(v) / C + eps);
    float *o = out + (size_t)row * C;
    for (int c = lane; c < C; c += 32) o[c] = (x[c] - m) * rs * w[c] + b[c];
    if (lane == 0) {
        if (mean) mean[row] = m;
        if (rstd) rstd[row] = rs;
    }
}

__global__ static void layernorm_backward_dinp_kernel(float *dinp, const float *dout,
                                                      const float *inp, const float *w,
                                                      const float *mean, const float *rstd, int N,
                                                      int C) {
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= N) return;
    const float *x = inp + (size_t)row * C, *d = dout + (size_t)row * C;
    float m = mean[row], rs = rstd[row];
    float a = 0.0f, bs = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float n = (x[c] - m) * rs;
        float dn = w[c] * d[c];
        a += dn;
        bs += dn * n;
    }
    a = warp_sum(a) / C;
    bs = warp_sum(bs) / C;
    float *di = dinp + (size_t)row * C;
    for (int c = lane; c < C; c += 32) {
        float n = (x[c] - m) * rs;
        di[c] += (w[c] * d[c] - a - n * bs) * rs;
    }
}

/* Stage 1 of dw, db: part_w[k, c], part_b[k, c] over the rows of chunk k. */
__global__ static void layernorm_backward_params_partial_kernel(float *part_w, float *part_b,
                                                                const float *dout, const float *inp,
                                                                const float *mean,
                                                                const float *rstd, int N, int C,
                                                                int rows_per_chunk) {
    int k = blockIdx.y;
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    int r0 = k * rows_per_chunk, r1 = min(N, r0 + rows_per_chunk);
    float sw = 0.0f, sb = 0.0f;
    for (int r = r0; r < r1; r++) {
        float d = dout[(size_t)r * C + c];
        sw += (inp[(size_t)r * C + c] - mean[r]) * rstd[r] * d;
        sb += d;
    }
    part_w[(size_t)k * C + c] = sw;
    part_b[(size_t)k * C + c] = sb;
}

#endif
