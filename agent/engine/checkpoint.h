/* checkpoint.h - training checkpoints that resume exactly.
 *
 * One binary file holds everything a run needs to continue as if it had
 * never stopped: the model's configuration and parameters, AdamW's two
 * moments, the step count, the training hyperparameters, the data loader's
 * position and the run's RNG state. The layout (docs/file-formats.md,
 * "Checkpoints") is a fixed 256-byte header starting with magic "FWCKPT\0\0" and a
 * version, then the float arrays, then a 64-bit checksum of all preceding
 * bytes. Files are written atomically (.new + fsync + rename + fsync dir)
 * and validated fully on load before the model is touched. */
#ifndef FW_CHECKPOINT_H
#define FW_CHECKPOINT_H

#include "data.h"
#include "engine.h"

#include <stdint.h>

#define FW_CKPT_MAGIC "FWCKPT\0\0"
#define FW_CKPT_VERSION 1

typedef struct {
    int64_t step;            /* optimizer steps completed */
    fw_adamw opt;            /* hyperparameters; opt.lr is the base learning rate */
    float min_lr_frac;       /* fw_lr_at schedule */
    int64_t warmup_steps;
    int64_t total_steps;
    int32_t batch_size;      /* rows per micro-batch per rank */
    int32_t seq_len;
    int32_t grad_accum;      /* micro-batches per step */
    int32_t world_size;      /* data-parallel ranks that wrote this run */
    uint64_t seed;           /* the run's seed */
    fw_loader_state loader;  /* data position */
    fw_rng rng;              /* the run's generator, for anything random it draws */
} fw_train_state;

/* Write m (parameters and AdamW state) and *st to path atomically. */
int fw_checkpoint_save(const char *path, const fw_model *m, const fw_train_state *st);
/* The same with AdamW's moments given (full-size arrays) instead of read
 * from m: a sharded optimizer's state, assembled from every rank. */
int fw_checkpoint_save_opt(const char *path, const fw_model *m, const fw_train_state *st,
                           const float *mom1, const float *mom2);

/* Validate path completely (magic, version, sizes, checksum, config equal to
 * m's) and only then install its parameters and AdamW state into m and fill
 * *st. FW_ECORRUPT / FW_EVERSION / FW_EINVAL with a detail naming the field. */
int fw_checkpoint_load(const char *path, fw_model *m, fw_train_state *st);

/* Read only the header: the model configuration and training state (st may
 * be NULL), to create the model before fw_checkpoint_load. */
int fw_checkpoint_peek(const char *path, fw_model_config *cfg, fw_train_state *st);

#endif
