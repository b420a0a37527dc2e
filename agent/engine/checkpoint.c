/* checkpoint.c - training checkpoints (see checkpoint.h).
 *
 * File layout, version 1, all little-endian:
 *
 *   [0, 256)        header: s_ckpt_header below (magic, version, config,
 *                   step, hyperparameters, loader position, RNG state)
 *   [256, +4P)      parameters, P = num_params floats, engine layout
 *   [.., +4P)       AdamW first moment   } present when flags bit 0 is set
 *   [.., +4P)       AdamW second moment  }
 *   last 8 bytes    checksum: FNV-1a-64 over 8-byte words of every byte before it
 *
 * The header struct is frozen with static asserts on its size and offsets;
 * a new field goes into `reserved` with a version bump. Load reads and checks
 * the whole file into host buffers first (size from the header must equal
 * the file size, the checksum must match, the config must equal the model's)
 * and only then writes the model, so a bad file never leaves a model half
 * overwritten. */
#include "checkpoint.h"

#include "fw_err.h"
#include "fw_file.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
    char magic[8];
    uint32_t version;
    uint32_t header_bytes;
    int32_t n_layer, n_head, n_embd, n_ctx, vocab_size, padded_vocab_size; /* 16 */
    float layer_norm_eps;                                                  /* 40 */
    uint32_t flags;                                                        /* 44: bit 0 AdamW state */
    uint64_t num_params;                                                   /* 48 */
    int64_t step;                                                          /* 56 */
    float lr, beta1, beta2, eps, weight_decay, grad_clip, min_lr_frac;     /* 64 */
    uint32_t pad0;                                                         /* 92 */
    int64_t warmup_steps, total_steps;                                     /* 96 */
    int32_t batch_size, seq_len, grad_accum, world_size;                   /* 112 */
    uint64_t seed;                                                         /* 128 */
    uint64_t loader_seed, loader_epoch, loader_cursor;                     /* 136 */
    uint64_t rng[4];                                                       /* 160 */
    uint8_t reserved[64];                                                  /* 192 */
} s_ckpt_header;

_Static_assert(sizeof(s_ckpt_header) == 256, "checkpoint header is 256 bytes");
_Static_assert(offsetof(s_ckpt_header, n_layer) == 16, "frozen layout");
_Static_assert(offsetof(s_ckpt_header, num_params) == 48, "frozen layout");
_Static_assert(offsetof(s_ckpt_header, lr) == 64, "frozen layout");
_Static_assert(offsetof(s_ckpt_header, warmup_steps) == 96, "frozen layout");
_Static_assert(offsetof(s_ckpt_header, seed) == 128, "frozen layout");
_Static_assert(offsetof(s_ckpt_header, rng) == 160, "frozen layout");
_Static_assert(offsetof(s_ckpt_header, reserved) == 192, "frozen layout");

#define CKPT_HAS_OPT 1u
#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

/* FNV-1a over 8-byte little-endian words, the tail zero-padded; chained
 * through h so regions can be hashed one after another. */
static uint64_t s_hash(uint64_t h, const void *data, size_t len) {
    const uint8_t *p = data;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * FNV_PRIME;
    }
    if (i < len) {
        uint64_t w = 0;
        memcpy(&w, p + i, len - i);
        h = (h ^ w) * FNV_PRIME;
    }
    return h;
}

static void s_fill_header(s_ckpt_header *h, const fw_model_config *c, size_t np,
                          const fw_train_state *st) {
    memset(h, 0, sizeof *h);
    memcpy(h->magic, FW_CKPT_MAGIC, 8);
    h->version = FW_CKPT_VERSION;
    h->header_bytes = sizeof *h;
    h->n_layer = c->n_layer;
    h->n_head = c->n_head;
    h->n_embd = c->n_embd;
    h->n_ctx = c->n_ctx;
    h->vocab_size = c->vocab_size;
    h->padded_vocab_size = c->padded_vocab_size;
    h->layer_norm_eps = c->layer_norm_eps;
    h->flags = CKPT_HAS_OPT;
    h->num_params = np;
    h->step = st->step;
    h->lr = st->opt.lr;
    h->beta1 = st->opt.beta1;
    h->beta2 = st->opt.beta2;
    h->eps = st->opt.eps;
    h->weight_decay = st->opt.weight_decay;
    h->grad_clip = st->opt.grad_clip;
    h->min_lr_frac = st->min_lr_frac;
    h->warmup_steps = st->warmup_steps;
    h->total_steps = st->total_steps;
    h->batch_size = st->batch_size;
    h->seq_len = st->seq_len;
    h->grad_accum = st->grad_accum;
    h->world_size = st->world_size;
    h->seed = st->seed;
    h->loader_seed = st->loader.seed;
    h->loader_epoch = st->loader.epoch;
    h->loader_cursor = st->loader.cursor;
    memcpy(h->rng, st->rng.s, sizeof h->rng);
}

static void s_read_state(const s_ckpt_header *h, fw_train_state *st) {
    memset(st, 0, sizeof *st);
    st->step = h->step;
    st->opt = (fw_adamw){.lr = h->lr, .beta1 = h->beta1, .beta2 = h->beta2, .eps = h->eps,
                         .weight_decay = h->weight_decay, .grad_clip = h->grad_clip};
    st->min_lr_frac = h->min_lr_frac;
    st->warmup_steps = h->warmup_steps;
    st->total_steps = h->total_steps;
    st->batch_size = h->batch_size;
    st->seq_len = h->seq_len;
    st->grad_accum = h->grad_accum;
    st->world_size = h->world_size;
    st->seed = h->seed;
    st->loader.seed = h->loader_seed;
    st->loader.epoch = h->loader_epoch;
    st->loader.cursor = h->loader_cursor;
    memcpy(st->rng.s, h->rng, sizeof st->rng.s);
}

int fw_checkpoint_save(const char *path, const fw_model *m, const fw_train_state *st) {
    return fw_checkpoint_save_opt(path, m, st, NULL, NULL);
}

int fw_checkpoint_save_opt(const char *path, const fw_model *m, const fw_train_state *st,
                           const float *mom1, const float *mom2) {
    if (!path || !m || !st || !mom1 != !mom2)
        return fw_err_set(FW_EINVAL, "checkpoint save: NULL argument");
    size_t np = fw_model_num_params(m);
    s_ckpt_header h;
    s_fill_header(&h, fw_model_config_get(m), np, st);
    float *a = malloc(np * sizeof(float)), *b = malloc(np * sizeof(float));
    if (!a || !b) {
        free(a);
        free(b);
        return fw_err_set(FW_ENOMEM, "checkpoint save %s: %zu parameters", path, np);
    }
    fw_file_atomic *w = fw_file_atomic_open(path, 0644);
    int rc = w ? 0 : FW_EIO;
    uint64_t hash = FNV_OFFSET;
    if (rc == 0) {
        hash = s_hash(hash, &h, sizeof h);
        rc = fw_file_atomic_write(w, &h, sizeof h);
    }
    if (rc == 0) rc = fw_model_read_params(m, a);
    if (rc == 0) {
        hash = s_hash(hash, a, np * sizeof(float));
        rc = fw_file_atomic_write(w, a, np * sizeof(float));
    }
    if (rc == 0 && !mom1) rc = fw_model_read_opt_state(m, a, b);
    const float *m1 = mom1 ? mom1 : a, *m2 = mom2 ? mom2 : b;
    if (rc == 0) {
        hash = s_hash(hash, m1, np * sizeof(float));
        rc = fw_file_atomic_write(w, m1, np * sizeof(float));
    }
    if (rc == 0) {
        hash = s_hash(hash, m2, np * sizeof(float));
        rc = fw_file_atomic_write(w, m2, np * sizeof(float));
    }
    if (rc == 0) rc = fw_file_atomic_write(w, &hash, sizeof hash);
    free(a);
    free(b);
    if (!w) return rc;
    if (rc < 0) {
        fw_file_atomic_abort(&w);
        return rc;
    }
    return fw_file_atomic_commit(&w);
}

/* Read and check the header of an open file of `size` bytes. */
static int s_check_header(const char *path, FILE *fp, uint64_t size, s_ckpt_header *h) {
    if (size < sizeof *h + 8)
        return fw_err_set(FW_ECORRUPT, "%s: %llu bytes, too short for a checkpoint", path,
                          (unsigned long long)size);
    if (fread(h, sizeof *h, 1, fp) != 1) return fw_err_set(FW_EIO, "%s: read header", path);
    if (memcmp(h->magic, FW_CKPT_MAGIC, 8) != 0)
        return fw_err_set(FW_ECORRUPT, "%s: bad magic (not a Flywheel checkpoint)", path);
    if (h->version != FW_CKPT_VERSION)
        return fw_err_set(FW_EVERSION, "%s: version %u, this build reads %d", path, h->version,
                          FW_CKPT_VERSION);
    if (h->header_bytes != sizeof *h)
        return fw_err_set(FW_ECORRUPT, "%s: header_bytes %u, expected %zu", path, h->header_bytes,
                          sizeof *h);
    if (h->flags & ~CKPT_HAS_OPT)
        return fw_err_set(FW_ECORRUPT, "%s: unknown flags 0x%x", path, h->flags);
    fw_model_config c = {h->n_layer, h->n_head, h->n_embd, h->n_ctx, h->vocab_size,
                         h->padded_vocab_size, h->layer_norm_eps};
    if (fw_model_config_check(&c) < 0) {
        char d[512];
        snprintf(d, sizeof d, "%s", fw_err_detail());
        return fw_err_set(FW_ECORRUPT, "%s: %s", path, d);
    }
    if (h->num_params != fw_model_param_layout(&c, NULL))
        return fw_err_set(FW_ECORRUPT, "%s: num_params %llu does not match its config (%zu)", path,
                          (unsigned long long)h->num_params, fw_model_param_layout(&c, NULL));
    uint64_t arrays = (h->flags & CKPT_HAS_OPT) ? 3 : 1;
    uint64_t want = sizeof *h + arrays * h->num_params * sizeof(float) + 8;
    if (size != want)
        return fw_err_set(FW_ECORRUPT, "%s: %llu bytes, header says %llu (truncated?)", path,
                          (unsigned long long)size, (unsigned long long)want);
    return 0;
}

static int s_open(const char *path, FILE **out, uint64_t *size) {
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return fw_err_set(errno == ENOENT ? FW_ENOTFOUND : FW_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(fp), &st) < 0 || !S_ISREG(st.st_mode)) {
        fclose(fp);
        return fw_err_set(FW_EIO, "%s: not a regular file", path);
    }
    *size = (uint64_t)st.st_size;
    *out = fp;
    return 0;
}

int fw_checkpoint_peek(const char *path, fw_model_config *cfg, fw_train_state *st) {
    uint64_t size;
    FILE *fp;
    int rc = s_open(path, &fp, &size);
    if (rc < 0) return rc;
    s_ckpt_header h;
    rc = s_check_header(path, fp, size, &h);
    fclose(fp);
    if (rc < 0) return rc;
    if (cfg)
        *cfg = (fw_model_config){h.n_layer, h.n_head, h.n_embd, h.n_ctx, h.vocab_size,
                                 h.padded_vocab_size, h.layer_norm_eps};
    if (st) s_read_state(&h, st);
    return 0;
}

int fw_checkpoint_load(const char *path, fw_model *m, fw_train_state *st) {
    if (!path || !m || !st) return fw_err_set(FW_EINVAL, "checkpoint load: NULL argument");
    uint64_t size;
    FILE *fp;
    int rc = s_open(path, &fp, &size);
    if (rc < 0) return rc;
    s_ckpt_header h;
    float *p = NULL, *m1 = NULL, *m2 = NULL;
    rc = s_check_header(path, fp, size, &h);
    if (rc < 0) goto out;
    const fw_model_config *c = fw_model_config_get(m);
    struct {
        const char *name;
        long long file, model;
    } fields[] = {{"n_layer", h.n_layer, c->n_layer},
                  {"n_head", h.n_head, c->n_head},
                  {"n_embd", h.n_embd, c->n_embd},
                  {"n_ctx", h.n_ctx, c->n_ctx},
                  {"vocab_size", h.vocab_size, c->vocab_size},
                  {"padded_vocab_size", h.padded_vocab_size, c->padded_vocab_size}};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (fields[i].file != fields[i].model) {
            rc = fw_err_set(FW_EINVAL, "%s: config field %s is %lld, the model has %lld", path,
                            fields[i].name, fields[i].file, fields[i].model);
            goto out;
        }
    if (h.layer_norm_eps != c->layer_norm_eps) {
        rc = fw_err_set(FW_EINVAL, "%s: config field layer_norm_eps is %g, the model has %g", path,
                        (double)h.layer_norm_eps, (double)c->layer_norm_eps);
        goto out;
    }
    size_t np = (size_t)h.num_params;
    int has_opt = (h.flags & CKPT_HAS_OPT) != 0;
    p = malloc(np * sizeof(float));
    m1 = calloc(np, sizeof(float)); /* zeros stand for "no AdamW state yet" */
    m2 = calloc(np, sizeof(float));
    if (!p || !m1 || !m2) {
        rc = fw_err_set(FW_ENOMEM, "%s: %zu parameters", path, np);
        goto out;
    }
    uint64_t hash = s_hash(FNV_OFFSET, &h, sizeof h), stored;
    float *arrays[3] = {p, m1, m2};
    for (int i = 0; i < (has_opt ? 3 : 1); i++) {
        if (fread(arrays[i], sizeof(float), np, fp) != np) {
            rc = fw_err_set(FW_EIO, "%s: short read", path);
            goto out;
        }
        hash = s_hash(hash, arrays[i], np * sizeof(float));
    }
    if (fread(&stored, 8, 1, fp) != 1) {
        rc = fw_err_set(FW_EIO, "%s: short read of the checksum", path);
        goto out;
    }
    if (stored != hash) {
        rc = fw_err_set(FW_ECORRUPT, "%s: checksum mismatch (file damaged)", path);
        goto out;
    }
    if ((rc = fw_model_write_params(m, p)) < 0) goto out;
    rc = fw_model_write_opt_state(m, m1, m2);
    if (rc == 0) s_read_state(&h, st);
out:
    fclose(fp);
    free(p);
    free(m1);
    free(m2);
    return rc;
}
