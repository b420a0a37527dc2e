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

#endif
