/* collective_nccl.h - the "nccl" backend of collective.h: NCCL all-reduce
 * and broadcast on device buffers.
 *
 * collective.c owns the group: for backend "nccl" it joins the ranks over
 * the same ZeroMQ ring rendezvous as "ring" (that is how rank 0's NCCL
 * unique id reaches the others, and what barriers keep using), then calls
 * fw_nccl_new and sends all-reduce and broadcast here. Without FW_WITH_NCCL
 * these functions exist but fw_nccl_available() is 0 and every call fails
 * with FW_EUNSUPPORTED. */
#ifndef FW_COLLECTIVE_NCCL_H
#define FW_COLLECTIVE_NCCL_H

#include "collective.h"

#include <stddef.h>

typedef struct fw_nccl fw_nccl;

/* 1 when this build has the NCCL backend. */
int fw_nccl_available(void);
/* 1 when buf is CUDA device (or managed) memory; 0 for host memory and in
 * builds without NCCL. */
int fw_nccl_is_device(const void *buf);

/* The communicator of `rank` of `world`, on the calling thread's current
 * CUDA device (create the model first: the CUDA backend makes its device
 * current). Rank 0 draws the NCCL unique id and broadcasts it over `boot`
 * (a joined "ring" group, or any group of world 1). NULL + detail on failure
 * (no GPU, NCCL refusing the group, e.g. two ranks on one GPU). */
fw_nccl *fw_nccl_new(fw_coll *boot, int rank, int world);
void fw_nccl_destroy(fw_nccl **n);

/* In-place sum of n floats of DEVICE memory across ranks; returns when the
 * result is in buf. FW_EINVAL for a host pointer. */
int fw_nccl_allreduce_sum(fw_nccl *n, float *buf, size_t count);
/* Copy `bytes` of DEVICE memory from root's buf to every rank's buf. */
int fw_nccl_broadcast(fw_nccl *n, void *buf, size_t bytes, int root);

/* ZeRO-1 on device buffers. The partition of n floats over W ranks is
 * q = n / W floats per rank, rank r owning [r*q, (r+1)*q), and the last rank
 * also the tail [W*q, n) (NCCL's reduce-scatter and all-gather move equal
 * parts; the tail of fewer than W floats is all-reduced / broadcast). */
void fw_nccl_shard(const fw_nccl *n, size_t count, size_t *off, size_t *len);
int fw_nccl_reduce_scatter_sum(fw_nccl *n, float *buf, size_t count);
int fw_nccl_allgather(fw_nccl *n, float *buf, size_t count);

/* Asynchronous in-place all-reduce of k ranges of base, grouped into one
 * NCCL launch on the communicator's own non-blocking stream, ordered after
 * the work queued so far on `after` (a cudaStream_t) by an event. Returns
 * at once. fw_nccl_wait_on makes later work on `stream` wait for every
 * reduction started so far. */
int fw_nccl_allreduce_ranges_async(fw_nccl *n, float *base, const size_t *offs,
                                   const size_t *lens, int k, void *after);
int fw_nccl_wait_on(fw_nccl *n, void *stream);

#endif
