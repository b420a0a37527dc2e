/* collective.h - collectives for data-parallel training.
 *
 * Backends:
 *   "single"  world size 1, every call is a no-op (or a copy)
 *   "ring"    ring all-reduce over TCP between processes (ZeroMQ sockets):
 *             reduce-scatter then all-gather, 2(w-1)/w of the data per rank
 *   "nccl"    NCCL on GPUs: device buffers go through NCCL, host buffers (token
 *             counts, losses) through the ring NCCL was bootstrapped on
 *
 * Ranks meet through a rendezvous string, "tcp://HOST:PORT" where rank 0
 * listens; the control plane hands it out. Every rank calls the same
 * collectives in the same order. Results are identical on every rank and
 * independent of timing (a fixed reduction order), so runs are reproducible. */
#ifndef FW_COLLECTIVE_H
#define FW_COLLECTIVE_H

#include <stddef.h>

typedef struct fw_coll fw_coll;

/* Join the group. NULL on failure (detail says why: bad rendezvous, timeout
 * waiting for peers after timeout_ms). */
fw_coll *fw_coll_new(const char *backend, int rank, int world, const char *rendezvous,
                     int timeout_ms);
void fw_coll_destroy(fw_coll **c);

int fw_coll_rank(const fw_coll *c);
int fw_coll_world(const fw_coll *c);
const char *fw_coll_backend(const fw_coll *c);

/* In-place sum of n floats across ranks. */
int fw_coll_allreduce_sum(fw_coll *c, float *buf, size_t n);
/* Copy `bytes` from root's buf to every rank's buf. */
int fw_coll_broadcast(fw_coll *c, void *buf, size_t bytes, int root);
int fw_coll_barrier(fw_coll *c);

/* ---- sharded data parallel (ZeRO-1) and bucketed gradient sync ---------
 *
 * fw_coll_shard names the part [*off, *off + *len) of an n-float buffer this
 * rank owns: the parts of all ranks are disjoint and cover [0, n). After
 * fw_coll_reduce_scatter_sum the owned part holds the sum over ranks (the
 * rest of buf is unspecified); fw_coll_allgather copies every rank's owned
 * part to every rank. reduce-scatter + all-gather = all-reduce, which is how
 * the ring computes it, so ZeRO-1 moves no more bytes than plain data
 * parallel. "ring" and "single" shard host buffers, "nccl" device buffers
 * (the partitions differ: see collective.c and collective_nccl.c). */
void fw_coll_shard(const fw_coll *c, size_t n, size_t *off, size_t *len);
int fw_coll_reduce_scatter_sum(fw_coll *c, float *buf, size_t n);
int fw_coll_allgather(fw_coll *c, float *buf, size_t n);

/* In-place sum across ranks of k ranges of base (float offsets and
 * lengths). Device buffers on "nccl" are reduced ASYNCHRONOUSLY: the
 * reduction starts once the work queued so far on `stream` (a
 * cudaStream_t, 0 for the legacy default stream) has run, on a stream of
 * its own, and fw_coll_sync_wait makes later work on `stream` wait for it.
 * Host buffers are reduced before the call returns. This is the gradient
 * bucket hook of fw_model_backward_sync (engine.h). */
int fw_coll_allreduce_ranges(fw_coll *c, float *base, const size_t *offs, const size_t *lens,
                             int k, void *stream);
int fw_coll_sync_wait(fw_coll *c, void *stream);

#endif
