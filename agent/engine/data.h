/* data.h - datasets for the engine: JSONL records -> token shards -> batches.
 *
 * Record shapes (one JSON object a line):
 *   {"text": ...}                                  loss on every token
 *   {"prompt": ..., "completion": ...}             loss on completion tokens only
 *   {"messages": [{"role": ..., "content": ...}]}  template in docs/file-formats.md;
 *                                                  loss on assistant turns only
 * Each record becomes its tokens followed by <|endoftext|>. A shard file
 * (docs/file-formats.md) starts with magic "FWSHARD\0" and a version, then
 * per-document offsets, the tokens (int32) and a loss mask (uint8).
 *
 * The loader streams B x T windows with a deterministic shuffle (seeded) and
 * can give every rank of a data-parallel run its own slice of each global
 * batch. Its position is a small struct that checkpoints save and restore. */
#ifndef FW_DATA_H
#define FW_DATA_H

#include "tokenizer.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    double max_bad_fraction; /* fail when more than this fraction of lines is bad (default 0.01) */
    size_t max_report;       /* bad lines to keep in the report (default 20) */
} fw_data_opts;

typedef struct {
    size_t lines;        /* non-empty lines read */
    size_t accepted;     /* records tokenised */
    size_t rejected;     /* bad lines */
    size_t tokens;       /* tokens written (including EOT) */
    size_t loss_tokens;  /* tokens whose mask is 1 */
    size_t nbad_kept;    /* entries filled in bad_line / bad_reason */
    size_t bad_line[20]; /* 1-based line numbers of the first bad lines */
    char bad_reason[20][128];
} fw_data_report;

/* Tokenise a JSONL file into a shard. Fills *rep (may be NULL). Fails with
 * FW_EINVAL when the file has no usable record or too many bad lines; the
 * detail names the first bad line and why. */
int fw_data_tokenize(const char *jsonl_path, const fw_tokenizer *tok, const char *shard_path,
                     const fw_data_opts *opts, fw_data_report *rep);

/* Tokenise one JSON record (same rules as a line); ids/mask malloc'd. */
int fw_data_tokenize_record(const char *json, size_t len, const fw_tokenizer *tok, int32_t **ids,
                            uint8_t **mask, size_t *n);

typedef struct fw_shard fw_shard;
/* Open and validate a shard file (magic, version, sizes). NULL + detail on failure. */
fw_shard *fw_shard_open(const char *path);
void fw_shard_close(fw_shard **s);
size_t fw_shard_ntokens(const fw_shard *s);
size_t fw_shard_ndocs(const fw_shard *s);
/* Document d's tokens and mask (pointers into the mapped file). */
int fw_shard_doc(const fw_shard *s, size_t d, const int32_t **ids, const uint8_t **mask, size_t *n);

/* Loader position, saved in checkpoints. */
typedef struct {
    uint64_t seed;
    uint64_t epoch;  /* passes over the data completed */
    uint64_t cursor; /* next window index within the epoch's permutation */
} fw_loader_state;

typedef struct fw_loader fw_loader;
/* Batches of B rows of T+1 tokens cut into non-overlapping windows of the
 * shard's token stream, windows visited in a seeded permutation per epoch.
 * Rank r of world w reads rows [r*B, (r+1)*B) of every global batch of w*B
 * rows, so w ranks with B rows each see exactly what 1 rank with w*B sees.
 * The loader reads the shard in place: the shard must outlive it. */
fw_loader *fw_loader_new(const fw_shard *s, int B, int T, uint64_t seed, int rank, int world);
void fw_loader_destroy(fw_loader **l);
/* Fill inputs[B*T] and targets[B*T]; targets are -1 where the loss mask is 0. */
int fw_loader_next(fw_loader *l, int32_t *inputs, int32_t *targets);
fw_loader_state fw_loader_get_state(const fw_loader *l);
int fw_loader_set_state(fw_loader *l, const fw_loader_state *st);
/* Windows per epoch (for "epochs" arithmetic). */
size_t fw_loader_windows(const fw_loader *l);

#endif
