/* collective_nccl.c - the "nccl" collective backend (see collective_nccl.h).
 *
 * Theory of operation
 * -------------------
 * Joining: collective.c has already joined the ranks over the ZeroMQ ring
 * (rendezvous tcp://HOST:PORT, rank 0 listening). Rank 0 calls
 * ncclGetUniqueId, the ring broadcasts the 128-byte id, and every rank calls
 * ncclCommInitRank(world, id, rank) on its current CUDA device. NCCL then
 * sets up its own transports (NVLink, PCIe, sockets or InfiniBand).
 *
 * Collectives run on a stream of this communicator that is "blocking" with
 * respect to the legacy default stream the CUDA backend uses, so an
 * all-reduce starts after the backward kernels that wrote the gradients and
 * the next kernels start after it; the call also synchronises the stream so
 * it returns with the result in place, like the ring backend.
 *
 * NCCL sums in an order of its choosing (ring or tree, by message size and
 * topology): results are identical on every rank and run to run for the
 * same world and hardware, but not bitwise equal to the "ring" backend.
 *
 * Overlap with backward (fw_nccl_allreduce_ranges_async): the CUDA backend
 * hands over each layer's gradient ranges as soon as their kernels are
 * queued. The reduction runs on a second, NON-blocking stream ("async")
 * that waits on an event recorded on the compute stream, so the compute
 * stream goes on with the next layer's backward while NCCL moves this
 * layer's gradients; fw_nccl_wait_on records an event on the async stream
 * and makes the compute stream wait for it before the optimizer step reads
 * the gradients. One NCCL group per bucket: the ranges of a layer (12
 * slices of the stacked tensors) go out as one launch.
 *
 * ZeRO-1 (fw_nccl_reduce_scatter_sum / fw_nccl_allgather): in place, rank r
 * owning [r*q, (r+1)*q) with q = n / W, as ncclReduceScatter and
 * ncclAllGather lay equal parts out; the tail [W*q, n) of fewer than W
 * floats belongs to the last rank and is all-reduced / broadcast in the
 * same NCCL group. */
#include "collective_nccl.h"

#include "fw_err.h"
#include "fw_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef FW_WITH_NCCL

#include <cuda_runtime.h>
#include <nccl.h>

struct fw_nccl {
    ncclComm_t comm;
    cudaStream_t stream;     /* blocking w.r.t. the legacy default stream */
    cudaStream_t async;      /* non-blocking: bucketed all-reduce during backward */
    cudaEvent_t ready, done; /* compute -> async, async -> compute ordering */
    int rank, world, dev;
};

static int s_nccl_check(ncclResult_t r, const char *expr, const char *file, int line) {
    if (r == ncclSuccess) return 0;
    return fw_err_set(FW_EDEVICE, "%s:%d: %s: %s (%s)", file, line, expr, ncclGetErrorString(r),
                      ncclGetLastError(NULL));
}

static int s_cuda_check(cudaError_t e, const char *expr, const char *file, int line) {
    if (e == cudaSuccess) return 0;
    (void)cudaGetLastError();
    return fw_err_set(FW_EDEVICE, "%s:%d: %s: %s (%s)", file, line, expr, cudaGetErrorName(e),
                      cudaGetErrorString(e));
}

#define ncclCheck(x) s_nccl_check((x), #x, __FILE__, __LINE__)
#define cudaCheck(x) s_cuda_check((x), #x, __FILE__, __LINE__)

int fw_nccl_available(void) {
    return 1;
}

/* The streams and events of n (those created; handles start zeroed) and n. */
static void s_free_cuda(fw_nccl *n) {
    if (n->done) cudaEventDestroy(n->done);
    if (n->ready) cudaEventDestroy(n->ready);
    if (n->async) cudaStreamDestroy(n->async);
    if (n->stream) cudaStreamDestroy(n->stream);
    free(n);
}

fw_nccl *fw_nccl_new(fw_coll *boot, int rank, int world) {
    int ndev = 0, dev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev == 0) {
        (void)cudaGetLastError();
        fw_err_set(FW_EDEVICE, "nccl: no CUDA device: %s",
                   e != cudaSuccess ? cudaGetErrorString(e) : "the driver reports 0 devices");
        return NULL;
    }
    if (cudaCheck(cudaGetDevice(&dev)) < 0) return NULL;
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    int id_rc = rank == 0 ? ncclCheck(ncclGetUniqueId(&id)) : 0;
    char id_err[400] = "";
    if (id_rc < 0) {
        snprintf(id_err, sizeof id_err, "%s", fw_err_detail());
        memset(&id, 0, sizeof id); /* whatever a failed call left there */
    }
    /* On failure rank 0 still has to broadcast (the others wait for it), so
     * the id goes out whatever happened; a zero id makes the others fail in
     * ncclCommInitRank instead of hanging. */
    if (fw_coll_broadcast(boot, &id, sizeof id, 0) < 0) return NULL;
    if (id_rc < 0) {
        fw_err_set(id_rc, "nccl: rank 0: %s", id_err);
        return NULL;
    }
    fw_nccl *n = calloc(1, sizeof *n);
    if (!n) {
        fw_err_set(FW_ENOMEM, "nccl: out of memory");
        return NULL;
    }
    n->rank = rank, n->world = world, n->dev = dev;
    if (cudaCheck(cudaStreamCreate(&n->stream)) < 0 ||
        cudaCheck(cudaStreamCreateWithFlags(&n->async, cudaStreamNonBlocking)) < 0 ||
        cudaCheck(cudaEventCreateWithFlags(&n->ready, cudaEventDisableTiming)) < 0 ||
        cudaCheck(cudaEventCreateWithFlags(&n->done, cudaEventDisableTiming)) < 0) {
        s_free_cuda(n);
        return NULL;
    }
    if (ncclCheck(ncclCommInitRank(&n->comm, world, id, rank)) < 0) {
        char d[400];
        snprintf(d, sizeof d, "%s", fw_err_detail());
        s_free_cuda(n);
        fw_err_set(FW_EDEVICE, "nccl: rank %d of %d on cuda:%d: %s%s", rank, world, dev, d,
                   ndev < world ? " (fewer GPUs than ranks: NCCL refuses two ranks on one GPU)"
                                : "");
        return NULL;
    }
    fw_info("event=coll-joined backend=nccl rank=%d world=%d dev=%d", rank, world, dev);
    return n;
}

void fw_nccl_destroy(fw_nccl **pn) {
    if (!pn || !*pn) return;
    fw_nccl *n = *pn;
    cudaSetDevice(n->dev);
    cudaStreamSynchronize(n->async); /* a bucket may still be in flight */
    ncclCommDestroy(n->comm);
    s_free_cuda(n);
    *pn = NULL;
}

/* NCCL takes device memory (or managed memory); a host pointer would fault
 * inside NCCL's kernels, so say so instead. */
static int s_check_device_ptr(const void *buf, const char *what) {
    struct cudaPointerAttributes a;
    memset(&a, 0, sizeof a);
    if (cudaPointerGetAttributes(&a, buf) != cudaSuccess) {
        (void)cudaGetLastError();
        return fw_err_set(FW_EINVAL, "nccl %s: buffer %p is not CUDA memory", what, buf);
    }
    if (a.type != cudaMemoryTypeDevice && a.type != cudaMemoryTypeManaged)
        return fw_err_set(FW_EINVAL,
                          "nccl %s: buffer %p is host memory; the nccl backend reduces device "
                          "buffers (use ring for a CPU model)",
                          what, buf);
    return 0;
}

int fw_nccl_is_device(const void *buf) {
    struct cudaPointerAttributes a;
    memset(&a, 0, sizeof a);
    if (!buf || cudaPointerGetAttributes(&a, buf) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

int fw_nccl_allreduce_sum(fw_nccl *n, float *buf, size_t count) {
    if (count == 0) return 0;
    int rc = s_check_device_ptr(buf, "allreduce");
    if (rc < 0) return rc;
    if ((rc = cudaCheck(cudaSetDevice(n->dev))) < 0) return rc;
    if ((rc = ncclCheck(ncclAllReduce(buf, buf, count, ncclFloat, ncclSum, n->comm, n->stream))) <
        0)
        return rc;
    return cudaCheck(cudaStreamSynchronize(n->stream));
}

int fw_nccl_broadcast(fw_nccl *n, void *buf, size_t bytes, int root) {
    if (bytes == 0) return 0;
    int rc = s_check_device_ptr(buf, "broadcast");
    if (rc < 0) return rc;
    if ((rc = cudaCheck(cudaSetDevice(n->dev))) < 0) return rc;
    if ((rc = ncclCheck(ncclBroadcast(buf, buf, bytes, ncclUint8, root, n->comm, n->stream))) < 0)
        return rc;
    return cudaCheck(cudaStreamSynchronize(n->stream));
}

void fw_nccl_shard(const fw_nccl *n, size_t count, size_t *off, size_t *len) {
    size_t q = count / (size_t)n->world;
    *off = (size_t)n->rank * q;
    *len = n->rank == n->world - 1 ? count - *off : q;
}

/* Both ZeRO halves: the equal parts through NCCL's collective, the tail
 * (count % world floats, the last rank's) all-reduced or broadcast from it,
 * in one group so it is one launch. */
static int s_shard_op(fw_nccl *n, float *buf, size_t count, int gather) {
    if (count == 0) return 0;
    int rc = s_check_device_ptr(buf, gather ? "all-gather" : "reduce-scatter");
    if (rc < 0) return rc;
    if ((rc = cudaCheck(cudaSetDevice(n->dev))) < 0) return rc;
    size_t q = count / (size_t)n->world, tail = count - q * (size_t)n->world;
    float *mine = buf + (size_t)n->rank * q, *t = buf + q * (size_t)n->world;
    if ((rc = ncclCheck(ncclGroupStart())) < 0) return rc;
    if (q > 0)
        rc = gather ? ncclCheck(ncclAllGather(mine, buf, q, ncclFloat, n->comm, n->stream))
                    : ncclCheck(ncclReduceScatter(buf, mine, q, ncclFloat, ncclSum, n->comm,
                                                  n->stream));
    if (rc == 0 && tail > 0)
        rc = gather ? ncclCheck(ncclBroadcast(t, t, tail, ncclFloat, n->world - 1, n->comm,
                                              n->stream))
                    : ncclCheck(ncclAllReduce(t, t, tail, ncclFloat, ncclSum, n->comm, n->stream));
    int end = ncclCheck(ncclGroupEnd());
    if (rc < 0 || (rc = end) < 0) return rc;
    return cudaCheck(cudaStreamSynchronize(n->stream));
}

int fw_nccl_reduce_scatter_sum(fw_nccl *n, float *buf, size_t count) {
    return s_shard_op(n, buf, count, 0);
}

int fw_nccl_allgather(fw_nccl *n, float *buf, size_t count) {
    return s_shard_op(n, buf, count, 1);
}

int fw_nccl_allreduce_ranges_async(fw_nccl *n, float *base, const size_t *offs,
                                   const size_t *lens, int k, void *after) {
    if (k == 0) return 0;
    int rc = s_check_device_ptr(base, "allreduce");
    if (rc < 0) return rc;
    if ((rc = cudaCheck(cudaSetDevice(n->dev))) < 0) return rc;
    if ((rc = cudaCheck(cudaEventRecord(n->ready, (cudaStream_t)after))) < 0 ||
        (rc = cudaCheck(cudaStreamWaitEvent(n->async, n->ready, 0))) < 0)
        return rc;
    if ((rc = ncclCheck(ncclGroupStart())) < 0) return rc;
    for (int i = 0; i < k && rc == 0; i++)
        if (lens[i] > 0)
            rc = ncclCheck(ncclAllReduce(base + offs[i], base + offs[i], lens[i], ncclFloat,
                                         ncclSum, n->comm, n->async));
    int end = ncclCheck(ncclGroupEnd());
    return rc < 0 ? rc : end;
}

int fw_nccl_wait_on(fw_nccl *n, void *stream) {
    int rc = cudaCheck(cudaSetDevice(n->dev));
    if (rc == 0) rc = cudaCheck(cudaEventRecord(n->done, n->async));
    if (rc == 0) rc = cudaCheck(cudaStreamWaitEvent((cudaStream_t)stream, n->done, 0));
    return rc;
}

#else /* !FW_WITH_NCCL: the backend is not built in */

int fw_nccl_available(void) {
    return 0;
}

int fw_nccl_is_device(const void *buf) {
    (void)buf;
    return 0;
}

fw_nccl *fw_nccl_new(fw_coll *boot, int rank, int world) {
    (void)boot, (void)rank, (void)world;
    fw_err_set(FW_EUNSUPPORTED, "collective: backend nccl is not built into this engine");
    return NULL;
}

void fw_nccl_destroy(fw_nccl **pn) {
    if (pn) *pn = NULL;
}

int fw_nccl_allreduce_sum(fw_nccl *n, float *buf, size_t count) {
    (void)n, (void)buf, (void)count;
    return fw_err_set(FW_EUNSUPPORTED, "collective: backend nccl is not built into this engine");
}

int fw_nccl_broadcast(fw_nccl *n, void *buf, size_t bytes, int root) {
    (void)n, (void)buf, (void)bytes, (void)root;
    return fw_err_set(FW_EUNSUPPORTED, "collective: backend nccl is not built into this engine");
}

void fw_nccl_shard(const fw_nccl *n, size_t count, size_t *off, size_t *len) {
    (void)n;
    *off = 0, *len = count;
}

int fw_nccl_reduce_scatter_sum(fw_nccl *n, float *buf, size_t count) {
    return fw_nccl_allreduce_sum(n, buf, count);
}

int fw_nccl_allgather(fw_nccl *n, float *buf, size_t count) {
    return fw_nccl_allreduce_sum(n, buf, count);
}

int fw_nccl_allreduce_ranges_async(fw_nccl *n, float *base, const size_t *offs,
                                   const size_t *lens, int k, void *after) {
    (void)offs, (void)lens, (void)k, (void)after;
    return fw_nccl_allreduce_sum(n, base, 0);
}

int fw_nccl_wait_on(fw_nccl *n, void *stream) {
    (void)stream;
    return fw_nccl_allreduce_sum(n, NULL, 0);
}

#endif
