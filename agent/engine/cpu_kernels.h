/* cpu_kernels.h - the CPU reference kernels of the engine (FP32, OpenMP, OpenBLAS).
 *
 * One function per operation, forward and backward, in the shape llm.c gives
 * them; the CUDA backend implements the same operations. Conventions:
 *   - N = B*T rows; activations are row-major [N, width].
 *   - Linear weights are [OC, C] (out, in); out = inp @ W^T + bias.
 *   - "dX +=" accumulates (parameter gradients, the residual stream);
 *     "dX =" overwrites (scratch activation gradients).
 *   - Every reduction runs in a fixed order that does not depend on the
 *     number of threads: parallel loops split independent outputs, never one
 *     sum, so results are bitwise reproducible run to run.
 * No function validates its input: model.c did. Functions that need scratch
 * memory return 0 or FW_ENOMEM; the rest cannot fail. */
#ifndef FW_CPU_KERNELS_H
#define FW_CPU_KERNELS_H

#include "engine.h"

#include <stddef.h>
#include <stdint.h>

/* out[b,t,:] = wte[inp[b,t],:] + wpe[t,:] */
void cpu_encoder_forward(float *out, const int32_t *inp, const float *wte, const float *wpe, int B,
                         int T, int C);
/* dwte[inp[b,t],:] += dout[b,t,:]; dwpe[t,:] += dout[b,t,:] */
void cpu_encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *inp, int B,
                          int T, int C);

/* out = (inp - mean) * rstd * w + b per row; mean, rstd [N] (may be NULL). */
void cpu_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                           const float *b, int N, int C, float eps);
/* dinp += , dw += , db += */
void cpu_layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                            const float *w, const float *mean, const float *rstd, int N, int C);

/* out[N,OC] = inp[N,C] @ w[OC,C]^T + bias (bias may be NULL) */
void cpu_matmul_forward(float *out, const float *inp, const float *w, const float *bias, int N,
                        int C, int OC);
/* dinp = dout @ w (skipped when dinp is NULL); dw += dout^T @ inp; db += sum over rows */
void cpu_matmul_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                         const float *w, int N, int C, int OC);

/* GELU, tanh approximation (GPT-2's gelu_new). backward: dinp = gelu'(inp) * dout
 * (dinp may alias dout). */
void cpu_gelu_forward(float *out, const float *inp, size_t n);
void cpu_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n);

/* out += inp */
void cpu_residual_add(float *out, const float *inp, size_t n);

/* Causal self-attention. qkv [B,T,3C] (q | k | v, heads interleaved hs-wide
 * in each); out [B,T,C]; lse [B,NH,T] the log-sum-exp of each query's scaled
 * scores, kept so backward recomputes the attention weights instead of
 * storing B*NH*T*T of them. */
int cpu_attention_forward(float *out, float *lse, const float *qkv, int B, int T, int C, int NH);
/* dqkv = gradient w.r.t. qkv (overwritten), from dout [B,T,C]. Both return
 * 0 or FW_ENOMEM (per-thread scratch of T or 2T floats). */
int cpu_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *lse,
                           int B, int T, int C, int NH);

/* One query against n_keys keys/values (stride `stride` floats apart), hs
 * wide: out[hs] = softmax(q.k * scale) @ v, *lse = its log-sum-exp. scratch
 * holds n_keys floats. Shared by the full forward and the KV-cache path so
 * both compute the same floats. */
void cpu_attend_one(float *out, float *lse, const float *q, const float *k, const float *v,
                    size_t stride, int n_keys, int hs, float *scratch);

/* losses[i] = logsumexp(logits[i,:V]) - logits[i,targets[i]] (0 when the
 * target is -1); lse[i] the log-sum-exp. logits rows are Vp wide. */
void cpu_crossentropy_forward(float *losses, float *lse, const float *logits,
                              const int32_t *targets, int N, int V, int Vp);
/* In place: logits -> scale * (softmax - onehot(target)) over the first V
 * columns, 0 for padding columns and for rows whose target is -1. */
void cpu_crossentropy_backward(float *logits, const float *lse, const int32_t *targets,
                               float scale, int N, int V, int Vp);
/* out[i] = argmax over the first V columns (lowest index among ties). */
void cpu_argmax(int32_t *out, const float *logits, int N, int V, int Vp);

/* *out = sum of squares of x[0..n) in double, in fixed 64K-element chunks
 * summed in order. 0 or FW_ENOMEM. */
int cpu_sumsq(const float *x, size_t n, double *out);
/* AdamW over n elements (one tensor); grads pre-multiplied by gscale
 * (gradient clipping). bc1, bc2 = 1 - beta^t. */
void cpu_adamw(float *p, const float *g, float *m, float *v, size_t n, float gscale, float lr,
               float beta1, float beta2, float bc1, float bc2, float eps, float wd);

#endif
