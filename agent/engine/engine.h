/* engine.h - the one interface of Flywheel's model engine (GPT-2 family).
 *
 * Theory of operation
 * -------------------
 * A model is a configuration (fw_model_config), one contiguous buffer of
 * parameters laid out as in llm.c (16 tensors, layers stacked, see
 * fw_model_param_layout) and a backend that owns the memory and runs the
 * operations. The CPU backend ("cpu") is the readable reference: plain C,
 * OpenMP and cblas_sgemm. The CUDA backend ("cuda" / "cuda:N") implements the
 * same operations behind the same functions; where a function hands out a
 * pointer to model memory (fw_model_params, fw_model_grads) that pointer is
 * device memory on CUDA. Everything else takes and returns host memory.
 *
 * Training step (single process, gradient accumulation over k micro-batches):
 *
 *     fw_model_zero_grad(m);
 *     n = sum over the k micro-batches of fw_count_targets(targets_i, B*T);
 *     for each micro-batch i:
 *         fw_model_forward(m, inputs_i, targets_i, B, T, &loss_i);
 *         fw_model_backward(m, 1.0f / n);
 *     opt.lr = fw_lr_at(step, base_lr, warmup, total, min_lr_frac);
 *     fw_model_step_adamw(m, &opt, step + 1, &norm);
 *
 * fw_model_backward(m, w) ADDS to the gradients the gradient of
 *     w * (sum of the cross-entropy of every non-ignored target of the last forward)
 * so with w = 1/n the accumulated gradient is exactly the gradient of the mean
 * loss over all n tokens of all micro-batches, the same as one big batch.
 * w <= 0 means "1 / (non-ignored targets of the last forward)", i.e. the
 * gradient of that forward's mean loss. Data-parallel: all-reduce the token
 * count first, pass 1/global_count, then all-reduce-SUM the gradient buffer
 * (fw_model_grads) before the step; every rank then takes the same step.
 * (Or all-reduce layer by layer during backward, fw_model_backward_sync, and
 * shard the optimizer state, fw_model_shard_optimizer: see "data-parallel
 * hooks" below.)
 *
 * Targets equal to -1 are ignored (no loss, no gradient). The loss returned by
 * forward is the mean over the non-ignored targets of that call (0 if none).
 *
 * Numerics: everything is FP32 (parameters, activations, gradients, AdamW
 * state); loss, grad norm and other reductions are summed in double in a fixed
 * order. Same seed + same data + same thread count -> the same floats, run to
 * run (no OpenMP reduction whose partition depends on timing).
 *
 * Inference: fw_model_set_train(m, 0) makes forward keep only one layer's
 * activations (no backward possible) for eval/embedding; generation uses a
 * KV cache (fw_kv_cache) with per-row lengths: prefill one row (possibly in
 * chunks), then decode one token for every active row at a time.
 *
 * Errors: functions return 0 or a negative fw_err (fw_err.h) with a detail in
 * fw_err_detail(); constructors return NULL with the detail set. Bad input
 * (ids out of range, B*T too large, a lying file) is an error, never a crash.
 * A model is not thread-safe: one caller at a time. */
#ifndef FW_ENGINE_H
#define FW_ENGINE_H

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------------ */
/* Configuration                                                             */
/* ------------------------------------------------------------------------ */

typedef struct {
    int n_layer;
    int n_head;
    int n_embd;            /* C; must be a multiple of n_head */
    int n_ctx;             /* block size: the most positions a sequence may have */
    int vocab_size;        /* V: real tokens */
    int padded_vocab_size; /* Vp: V rounded up to a multiple of 128 (wte rows, logits width) */
    float layer_norm_eps;  /* 1e-5 for GPT-2 */
} fw_model_config;

/* Fill *cfg from a preset: "tiny" (2 layers, 2 heads, 64 wide, ctx 64),
 * "small" (4, 4, 256, ctx 256), "gpt2-124m" (12, 12, 768, ctx 1024). The
 * vocabulary is GPT-2's 50257 unless vocab_size > 0 overrides it (tokenizers
 * trained on small corpora). FW_EINVAL for an unknown name. */
int fw_model_config_preset(const char *name, int vocab_size, fw_model_config *cfg);

/* Check a configuration's ranges and divisibility; sets padded_vocab_size when
 * it is 0 (round V up to 128). FW_EINVAL naming the field otherwise. */
int fw_model_config_check(fw_model_config *cfg);

/* Parameter tensors, in buffer order. Weights of linear layers are stored
 * [out, in] (nn.Linear / llm.c layout); Hugging Face's Conv1D files hold them
 * [in, out] and modeldir.c transposes on load and save. */
enum {
    FW_P_WTE,      /* [Vp, C]   token embedding, tied with the LM head; rows >= V are 0 */
    FW_P_WPE,      /* [n_ctx, C] */
    FW_P_LN1W,     /* [L, C] */
    FW_P_LN1B,     /* [L, C] */
    FW_P_QKVW,     /* [L, 3C, C] */
    FW_P_QKVB,     /* [L, 3C] */
    FW_P_ATTPROJW, /* [L, C, C] */
    FW_P_ATTPROJB, /* [L, C] */
    FW_P_LN2W,     /* [L, C] */
    FW_P_LN2B,     /* [L, C] */
    FW_P_FCW,      /* [L, 4C, C] */
    FW_P_FCB,      /* [L, 4C] */
    FW_P_FCPROJW,  /* [L, C, 4C] */
    FW_P_FCPROJB,  /* [L, C] */
    FW_P_LNFW,     /* [C] */
    FW_P_LNFB,     /* [C] */
    FW_NUM_PARAM_TENSORS
};

typedef struct {
    const char *name; /* "wte", "wpe", "ln1w", ... (static string) */
    size_t offset;    /* in floats from the start of the parameter buffer */
    size_t numel;
    int ndim;
    int shape[3];
    int decay;        /* 1 when AdamW applies weight decay (the 2-D+ weights, embeddings included) */
} fw_param_tensor;

/* The layout of cfg's parameters; returns the total number of floats. */
size_t fw_model_param_layout(const fw_model_config *cfg, fw_param_tensor out[FW_NUM_PARAM_TENSORS]);

/* ------------------------------------------------------------------------ */
/* Lifecycle                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct fw_model fw_model;

/* A model with parameters all zero on `device` ("cpu", "cuda", "cuda:N").
 * NULL on failure: FW_EINVAL bad config, FW_EUNSUPPORTED device not built in,
 * FW_ENOMEM. */
fw_model *fw_model_new(const fw_model_config *cfg, const char *device);
void fw_model_destroy(fw_model **m);

const fw_model_config *fw_model_config_get(const fw_model *m);
const char *fw_model_device(const fw_model *m);
size_t fw_model_num_params(const fw_model *m); /* floats in the parameter buffer (padded wte) */

/* GPT-2 initialisation from seed: weights N(0, 0.02), the two residual
 * projections (attention c_proj, MLP c_proj) N(0, 0.02/sqrt(2*n_layer)),
 * biases 0, LayerNorm weights 1, padded wte rows 0. Also clears AdamW state
 * and gradients. Deterministic: same seed, same floats on every backend. */
int fw_model_init_random(fw_model *m, uint64_t seed);

/* Hugging Face model directory: config.json + model.safetensors (GPT2Config
 * keys, GPT-2 tensor names, Conv1D layout). Loads F32, F16, BF16 (and F64) tensors
 * (converted to F32), accepts a "transformer." prefix, ignores attn.bias /
 * attn.masked_bias buffers and a tied lm_head.weight. NULL + detail naming
 * the file, tensor or field on any problem. */
fw_model *fw_model_load_dir(const char *dir, const char *device);
/* Write config.json and model.safetensors (F32) into dir (created if needed;
 * each file written atomically). When tokenizer_dir is not NULL its tokenizer
 * files (vocab.json, merges.txt, encoder.json, vocab.bpe, tokenizer.json,
 * tokenizer_config.json, special_tokens_map.json; those present) are copied. */
int fw_model_save_dir(const fw_model *m, const char *dir, const char *tokenizer_dir);

/* Host copies of the whole parameter buffer (fw_model_num_params floats). */
int fw_model_read_params(const fw_model *m, float *dst);
int fw_model_write_params(fw_model *m, const float *src);
/* Host copies of AdamW's first and second moments (zeros before the first
 * step); writing them installs optimizer state (checkpoint resume). */
int fw_model_read_opt_state(const fw_model *m, float *mom1, float *mom2);
int fw_model_write_opt_state(fw_model *m, const float *mom1, const float *mom2);

/* Threads used by OpenMP and OpenBLAS in this process (0 = leave as is). */
void fw_engine_set_threads(int n);

/* ------------------------------------------------------------------------ */
/* Training                                                                  */
/* ------------------------------------------------------------------------ */

/* Train mode (default 1) keeps every layer's activations so backward can run;
 * 0 keeps one layer's worth (eval, embedding) and backward is FW_ESTATE. */
int fw_model_set_train(fw_model *m, int train);

/* Number of targets != -1 among n. */
size_t fw_count_targets(const int32_t *targets, size_t n);

/* Forward over B rows of T tokens (T <= n_ctx). inputs[B*T] in [0, V);
 * targets[B*T] in [0, V) or -1, or NULL (no loss: *loss = 0). *loss (may be
 * NULL) = mean cross-entropy over non-ignored targets. Activation memory
 * grows to the largest B*T seen. */
int fw_model_forward(fw_model *m, const int32_t *inputs, const int32_t *targets, int B, int T,
                     float *loss);

/* Accumulate (+=) into the gradients the gradient of grad_scale * (sum of
 * the non-ignored token losses of the last forward); grad_scale <= 0 means
 * 1 / (that forward's non-ignored count). Needs a train-mode forward with
 * targets (FW_ESTATE otherwise). Overwrites the logits of that forward. */
int fw_model_backward(fw_model *m, float grad_scale);

/* Set every gradient to 0 (allocates the gradient buffer on first use). */
int fw_model_zero_grad(fw_model *m);

/* The gradient buffer, fw_model_num_params floats in parameter layout, as one
 * contiguous array so a collective can all-reduce it in one call. Device
 * memory on CUDA. NULL + detail if it cannot be allocated. */
float *fw_model_grads(fw_model *m, size_t *n);
/* The parameter buffer likewise (device memory on CUDA). */
float *fw_model_params(fw_model *m, size_t *n);

/* Global L2 norm of the gradient buffer (summed in double, fixed order). */
int fw_model_grad_norm(fw_model *m, float *norm);
/* Sum of squares of gradients [off, off+len) (double, fixed order). */
int fw_model_grad_sumsq(fw_model *m, size_t off, size_t len, double *sumsq);

/* ---- data-parallel hooks -------------------------------------------------
 *
 * Bucketed gradient sync. Backward produces the gradients layer by layer,
 * last layer first; a layer's gradients (its slice of each of the 12 stacked
 * per-layer tensors) are final as soon as that layer is done. Bucket b of
 * fw_model_grad_buckets(cfg) = L + 1 buckets is layer L-1-b for b < L, and
 * the rest (wte, wpe, ln_f) for b = L, final only at the very end (wte gets
 * both the LM head's and the embedding's gradient). The buckets are
 * disjoint and cover the gradient buffer. */
#define FW_BUCKET_MAX_RANGES 12
int fw_model_grad_buckets(const fw_model_config *cfg);
/* The ranges of bucket b (float offsets and lengths into the gradient
 * buffer, in buffer order) into offs/lens (FW_BUCKET_MAX_RANGES each);
 * returns how many, or FW_EINVAL for b out of range. */
int fw_model_grad_bucket(const fw_model_config *cfg, int b, size_t *offs, size_t *lens);

typedef struct {
    /* Bucket ranges that are final once the work queued so far on `stream`
     * has run: a cudaStream_t on CUDA (start an asynchronous all-reduce
     * there), NULL on the CPU (final now). 0 or an fw_err, which ends the
     * backward with that error. */
    int (*ready)(void *ctx, const size_t *offs, const size_t *lens, int n, void *stream);
    /* After the last bucket: work queued later on `stream` (the optimizer
     * step) must see every reduction started by ready. */
    int (*finish)(void *ctx, void *stream);
    void *ctx;
} fw_grad_sync;

/* fw_model_backward, calling sync->ready for every bucket as soon as it is
 * final and sync->finish at the end (sync NULL: plain backward). Use it for
 * the last micro-batch of a step, so the all-reduce of layer l overlaps the
 * backward of layers l-1 .. 0. */
int fw_model_backward_sync(fw_model *m, float grad_scale, const fw_grad_sync *sync);
/* For backends: call sync->ready with bucket b's ranges. */
int fw_grad_sync_bucket(const fw_grad_sync *sync, const fw_model_config *cfg, int b, void *stream);

/* ZeRO-1: keep AdamW state for parameters [off, off+len) only (every rank
 * its part of the buffer, fw_coll_shard) and make the AdamW step update
 * those parameters only; the caller all-gathers the parameters after it.
 * State already held for the range is kept, the rest dropped.
 * fw_model_read_opt_state then writes zeros outside the range (all-reduce
 * the ranks' arrays to assemble the whole state) and write_opt_state takes
 * the range out of full-size arrays, so checkpoints do not depend on how
 * the state was sharded: an N-rank run resumes on M ranks. */
int fw_model_shard_optimizer(fw_model *m, size_t off, size_t len);

typedef struct {
    float lr;           /* learning rate of this step (see fw_lr_at) */
    float beta1;        /* 0.9 */
    float beta2;        /* 0.95 */
    float eps;          /* 1e-8 */
    float weight_decay; /* decoupled, applied to tensors with decay = 1 only */
    float grad_clip;    /* clip gradients to this global norm first; <= 0 disables */
} fw_adamw;

/* Defaults: lr 3e-4, betas 0.9/0.95, eps 1e-8, weight decay 0.1, clip 1.0. */
fw_adamw fw_adamw_defaults(void);

/* One AdamW update from the current gradients. step is 1-based (t in the
 * bias corrections 1 - beta^t). *grad_norm (may be NULL) gets the norm before
 * clipping. Gradients are left as they were (caller zeroes them). A sharded
 * optimizer (fw_model_shard_optimizer) needs the global norm from the
 * caller: FW_ESTATE here, use fw_model_step_adamw_norm. */
int fw_model_step_adamw(fw_model *m, const fw_adamw *opt, int64_t step, float *grad_norm);
/* The same with the global gradient norm given (clipping uses it): with a
 * sharded optimizer, sqrt of the all-reduced fw_model_grad_sumsq of every
 * rank's part. */
int fw_model_step_adamw_norm(fw_model *m, const fw_adamw *opt, int64_t step, float norm);

/* Learning rate for 0-based step: linear warmup over `warmup` steps from
 * base_lr/warmup to base_lr, then cosine decay to base_lr*min_lr_frac at step
 * `total`, constant after. */
float fw_lr_at(int64_t step, float base_lr, int64_t warmup, int64_t total, float min_lr_frac);

/* ------------------------------------------------------------------------ */
/* Inference on the last forward                                             */
/* ------------------------------------------------------------------------ */

/* Per-position cross-entropy of the last forward with targets, B*T floats,
 * 0 where the target was -1. */
int fw_model_get_losses(const fw_model *m, float *out);
/* Per-row log-likelihood of the non-ignored targets (sum of -losses), B doubles
 * (multiple-choice scoring). */
int fw_model_get_seq_logprob(const fw_model *m, double *out);
/* Argmax over the V real logits of every position, B*T ids (lowest id on
 * ties); compare with targets for exact match. */
int fw_model_get_argmax(const fw_model *m, int32_t *out);
/* Logits of positions [row0, row0+nrows) (row = b*T + t), nrows*V floats
 * (the real vocabulary, not the padding). Invalid after backward. */
int fw_model_get_logits(const fw_model *m, size_t row0, size_t nrows, float *out);

/* Sentence embeddings: for each of B rows, the final hidden states (after
 * ln_f) of its first lens[b] tokens (1 <= lens[b] <= T), averaged and
 * L2-normalised, into out[B*C]. Tokens at t >= lens[b] are padding and do not
 * change the result (attention is causal; their ids are not even read). */
int fw_model_embed(fw_model *m, const int32_t *ids, const int32_t *lens, int B, int T,
                   float *out);

/* ------------------------------------------------------------------------ */
/* Generation                                                                */
/* ------------------------------------------------------------------------ */

typedef struct fw_kv_cache fw_kv_cache;

/* Keys and values for `batch` rows of up to max_len (<= n_ctx) positions.
 * The cache belongs to m and must be destroyed before it. */
fw_kv_cache *fw_kv_cache_new(fw_model *m, int batch, int max_len);
void fw_kv_cache_destroy(fw_kv_cache **c);
/* Empty one row (row < 0: every row). */
void fw_kv_cache_reset(fw_kv_cache *c, int row);
/* Positions filled in a row. */
int fw_kv_cache_len(const fw_kv_cache *c, int row);

/* Append n tokens to one row (chunked prefill allowed) and write the logits
 * of the last one, V floats, into logits (may be NULL). FW_ERESOURCE when the
 * row would exceed max_len. */
int fw_model_prefill(fw_model *m, fw_kv_cache *c, int row, const int32_t *ids, int n,
                     float *logits);
/* Append ids[r] to every row r with active[r] != 0 (active NULL: all rows; an
 * active row must not be empty) and write each active row's next-token
 * logits into logits[r*V .. r*V+V). */
int fw_model_decode(fw_model *m, fw_kv_cache *c, const int32_t *ids, const uint8_t *active,
                    float *logits);

/* Seeded random numbers (xoshiro256**): init, sampling, anything random in
 * the engine. The state is plain data so checkpoints can save it. */
typedef struct {
    uint64_t s[4];
} fw_rng;

void fw_rng_seed(fw_rng *r, uint64_t seed);
uint64_t fw_rng_u64(fw_rng *r);
double fw_rng_uniform(fw_rng *r); /* [0, 1), 53 bits */
double fw_rng_normal(fw_rng *r);  /* N(0, 1), Box-Muller */

typedef struct {
    float temperature; /* <= 0: greedy (argmax) */
    int top_k;         /* keep the k most likely tokens; <= 0: all */
    float top_p;       /* keep the smallest set whose probability >= top_p; >= 1 or <= 0: all */
} fw_sampler;

/* Draw one token id from logits[V] with s; >= 0 the id, < 0 an fw_err.
 * Greedy takes the lowest id among equal maxima. Same rng state -> same id. */
int fw_sample(const float *logits, int V, const fw_sampler *s, fw_rng *rng);

/* ------------------------------------------------------------------------ */
/* Backend interface (for backend implementers; callers use the functions   */
/* above). model.c validates every argument (ids in range, sizes, state)    */
/* before calling a backend, and keeps KV-cache lengths itself.             */
/* ------------------------------------------------------------------------ */

typedef struct fw_backend {
    const char *name; /* "cpu", "cuda" */
    /* State for a model with cfg on device index dev; parameters zeroed. */
    void *(*create)(const fw_model_config *cfg, int dev);
    void (*destroy)(void *be);
    float *(*params)(void *be);
    float *(*grads)(void *be); /* allocate zeroed on first use; NULL on failure */
    int (*read_params)(void *be, float *dst);
    int (*write_params)(void *be, const float *src);
    /* full-size arrays: zeros outside the optimizer range / only the range read */
    int (*read_opt)(void *be, float *mom1, float *mom2);
    int (*write_opt)(void *be, const float *mom1, const float *mom2);
    int (*clear_opt)(void *be);
    int (*forward)(void *be, const int32_t *inputs, const int32_t *targets, int B, int T,
                   int train, float *loss);
    int (*backward)(void *be, float grad_scale, const fw_grad_sync *sync); /* sync may be NULL */
    int (*zero_grad)(void *be);
    int (*grad_sumsq)(void *be, size_t off, size_t len, double *sumsq);
    /* drop the AdamW state; from now on it covers [off, off+len) only */
    int (*shard_opt)(void *be, size_t off, size_t len);
    /* update the parameters of the optimizer range, clipping by `norm` */
    int (*step_adamw)(void *be, const fw_adamw *opt, int64_t step, float norm);
    int (*get_losses)(void *be, float *out);
    int (*get_argmax)(void *be, int32_t *out);
    int (*get_logits)(void *be, size_t row0, size_t nrows, float *out);
    int (*embed)(void *be, const int32_t *ids, const int32_t *lens, int B, int T, float *out);
    void *(*kv_new)(void *be, int batch, int max_len);
    void (*kv_destroy)(void *kv);
    /* Run n tokens through the cache: token i is ids[i] of cache row rows[i]
     * at position pos[i] (one row's tokens in position order). The logits
     * (vocab_size wide, host memory) of the tokens with want[i] go to
     * logits[k * vocab_size] for the k-th such token. fw_model_prefill and
     * fw_model_decode build these arrays. */
    int (*kv_forward)(void *be, void *kv, int n, const int32_t *ids, const int *rows,
                      const int *pos, const uint8_t *want, float *logits);
} fw_backend;

/* For backends: the part [*lo, *hi) of tensor t that lies in the optimizer
 * range [off, off+len); 0 when they do not meet. */
int fw_param_range_part(const fw_param_tensor *t, size_t off, size_t len, size_t *lo, size_t *hi);

extern const fw_backend fw_backend_cpu;
#ifdef FW_WITH_CUDA
extern const fw_backend fw_backend_cuda; /* defined by the CUDA backend (cuda/) */
#endif

#endif
