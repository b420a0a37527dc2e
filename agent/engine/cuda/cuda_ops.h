/* cuda_ops.h - the CUDA backend's kernels one at a time, on host arrays,
 * for the per-operation tests (tests/gpu/test_cuda_ops.c) that hold each
 * kernel against its CPU reference in cpu_kernels.h.
 *
 * Every function mirrors the cpu_* function of the same name and the same
 * arguments (plus `bf16` where a GEMM is involved: 1 BF16 operands, 0 FP32),
 * runs on the current CUDA device, copies inputs up and results down, and
 * returns 0 or a negative fw_err (detail set). Outputs that the CPU
 * function overwrites are NaN-poisoned on the device first, so a kernel
 * that misses an element cannot pass; outputs it accumulates into (+=) are
 * uploaded from the caller's arrays. Test support only: each call
 * allocates and frees its buffers. */
#ifndef FW_CUDA_OPS_H
#define FW_CUDA_OPS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 0 when a CUDA device can be used; FW_EDEVICE "no CUDA device: ..." otherwise. */
int fw_cuda_ops_check_device(void);

int fw_cuda_op_encoder_forward(float *out, const int32_t *inp, const float *wte, const float *wpe,
                               int B, int T, int C, int V);
int fw_cuda_op_encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *inp,
                                int B, int T, int C, int V);
int fw_cuda_op_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                                 const float *w, const float *b, int N, int C, float eps);
int fw_cuda_op_layernorm_backward(float *dinp, float *dw, float *db, const float *dout,
                                  const float *inp, const float *w, const float *mean,
                                  const float *rstd, int N, int C);
int fw_cuda_op_matmul_forward(int bf16, float *out, const float *inp, const float *w,
                              const float *bias, int N, int C, int OC);
int fw_cuda_op_matmul_backward(int bf16, float *dinp, float *dw, float *db, const float *dout,
                               const float *inp, const float *w, int N, int C, int OC);
/* Attention path (`mode` of the two calls below):
 *   FW_CUDA_ATT_DEFAULT  what the model runs: FW_CUDA_ATTENTION (flash unless
 *                        "gemm"), flash falling back to GEMMs for hs > 128;
 *   FW_CUDA_ATT_FLASH    the flash kernels, FP32 (bf16 ignored); FW_EINVAL
 *                        naming hs when the head size is not supported;
 *   FW_CUDA_ATT_GEMM     the cuBLAS path (bf16 = 1: TF32 GEMMs). */
enum { FW_CUDA_ATT_DEFAULT = 0, FW_CUDA_ATT_FLASH = 1, FW_CUDA_ATT_GEMM = 2 };

int fw_cuda_op_attention_forward(int bf16, int mode, float *out, float *lse, const float *qkv,
                                 int B, int T, int C, int NH);
int fw_cuda_op_attention_backward(int bf16, int mode, float *dqkv, const float *dout,
                                  const float *qkv, const float *lse, int B, int T, int C, int NH);
/* FW_CUDA_ATTENTION's parser, needs no device: value NULL, "" or "flash" ->
 * *mode = FW_CUDA_ATT_FLASH, "gemm" -> FW_CUDA_ATT_GEMM, anything else ->
 * FW_EINVAL naming the variable and the allowed values. */
int fw_cuda_attention_mode_parse(const char *value, int *mode);
int fw_cuda_op_gelu_forward(float *out, const float *inp, size_t n);
int fw_cuda_op_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n);
int fw_cuda_op_crossentropy_forward(float *losses, float *lse, const float *logits,
                                    const int32_t *targets, int N, int V, int Vp);
int fw_cuda_op_crossentropy_backward(float *logits, const float *lse, const int32_t *targets,
                                     float scale, int N, int V, int Vp);
int fw_cuda_op_argmax(int32_t *out, const float *logits, int N, int V, int Vp);
int fw_cuda_op_sumsq(const float *x, size_t n, double *out);
int fw_cuda_op_adamw(float *p, const float *g, float *m, float *v, size_t n, float gscale, float lr,
                     float beta1, float beta2, float bc1, float bc2, float eps, float wd);

#ifdef __cplusplus
}
#endif

#endif
