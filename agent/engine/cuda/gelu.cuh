/* gelu.cuh - GELU with the tanh approximation (GPT-2's gelu_new), the same
 * formula as the CPU reference; backward uses sech^2 = 1 - tanh^2 so that
 * large |x| cannot overflow a cosh. */
#ifndef FW_CUDA_GELU_CUH
#define FW_CUDA_GELU_CUH

#include "common.cuh"

#define FW_GELU_SCALE 0.7978845608028654f /* sqrt(2/pi) */

__global__ static void gelu_forward_kernel(float *out, const float *inp, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = inp[i];
    float cube = 0.044715f * x * x * x;
    out[i] = 0.5f * x * (1.0f + tanhf(FW_GELU_SCALE * (x + cube)));
}

/* dinp may alias dout. */
__global__ static void gelu_backward_kernel(float *dinp, const float *inp, const float *dout,
                                            size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = inp[i];
    float cube = 0.044715f * x * x * x;
    float th = tanhf(FW_GELU_SCALE * (x + cube));
    float sech2 = 1.0f - th * th;
    float local =
        0.5f * (1.0f + th) + x * 0.5f * sech2 * FW_GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
    dinp[i] = local * dout[i];
}

#endif
