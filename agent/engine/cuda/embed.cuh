/* embed.cuh - sentence embeddings (mean of the final hidden states over a
 * row's real tokens, then L2-normalised) and the row gather the KV-cache
 * path uses before the LM head. Sums run in double in token order, as the
 * CPU reference does. */
#ifndef FW_CUDA_EMBED_CUH
#define FW_CUDA_EMBED_CUH

#include "common.cuh"

/* One block per row b of lnf [B, Tm, C]; out [B, C]. */
__global__ static void meanpool_norm_kernel(float *out, const float *lnf, const int32_t *lens,
                                            int Tm, int C) {
    __shared__ double sh[32];
    int b = blockIdx.x, len = lens[b];
    float *o = out + (size_t)b * C;
    double norm = 0.0;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        double s = 0.0;
        for (int t = 0; t < len; t++) s += lnf[((size_t)b * Tm + t) * C + c];
        float v = (float)(s / len);
        o[c] = v;
        norm += (double)v * v;
    }
    norm = sqrt(block_sum(norm, sh));
    float inv = norm > 0 ? (float)(1.0 / norm) : 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) o[c] *= inv; /* this thread's own o[c] */
}

/* dst[j, :] = src[idx[j], :] for j < k. */
__global__ static void rows_gather_kernel(float *dst, const float *src, const int *idx, int k,
                                          int C) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)k * C) return;
    size_t j = i / C, c = i % C;
    dst[i] = src[(size_t)idx[j] * C + c];
}

#endif
