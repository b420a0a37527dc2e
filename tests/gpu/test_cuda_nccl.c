/* test_cuda_nccl - the "nccl" collective backend on device buffers.
 *
 * World 1: all-reduce and broadcast leave the data as it is, the backend
 * reports "nccl", and a host buffer takes the ring path (collective.c only
 * hands device memory to NCCL). World 2: two processes (forked before either
 * touches CUDA) meet at a tcp:// rendezvous, all-reduce 1M+3 device floats
 * and check every element of the sum, all-reduce a host scalar (the ring
 * path a token count takes), then broadcast from rank 1, then ZeRO-1's
 * reduce-scatter + all-gather (odd size: the last rank owns the tail) and
 * the asynchronous bucket all-reduce of two ranges followed by
 * fw_coll_sync_wait. With two or more GPUs the
 * ranks use cuda:0 and cuda:1 and must succeed. With one GPU both ranks share
 * it; NCCL 2.x refuses that ("Duplicate GPU detected"), so the test accepts
 * either a correct result or a clean failure whose detail says why, and
 * prints which happened. */
#include "collective.h"
#include "fw_err.h"
#include "fw_test.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define NBIG ((size_t)(1 << 20) + 3)

static void test_world1(void) {
    int ndev = 0;
    CHECKF(cudaGetDeviceCount(&ndev) == cudaSuccess && ndev > 0, "no CUDA device");
    if (!ndev) return;
    fw_coll *c = fw_coll_new("nccl", 0, 1, NULL, 5000);
    REQUIRE(c);
    CHECK_EQ_STR(fw_coll_backend(c), "nccl");
    float h[1000], back[1000];
    for (int i = 0; i < 1000; i++) h[i] = (float)i * 0.5f;
    float *d = NULL;
    REQUIRE(cudaMalloc((void **)&d, sizeof h) == cudaSuccess);
    cudaMemcpy(d, h, sizeof h, cudaMemcpyHostToDevice);
    CHECKF(fw_coll_allreduce_sum(c, d, 1000) == 0, "%s", fw_err_detail());
    CHECKF(fw_coll_broadcast(c, d, sizeof h, 0) == 0, "%s", fw_err_detail());
    memset(back, 0, sizeof back);
    cudaMemcpy(back, d, sizeof h, cudaMemcpyDeviceToHost);
    CHECK(memcmp(back, h, sizeof h) == 0);
    /* Host buffers (token counts, losses) do not go to NCCL: collective.c
     * sends them through the ring it bootstrapped on, a no-op at world 1. */
    float host[3] = {1.5f, -2.0f, 4.0f};
    CHECKF(fw_coll_allreduce_sum(c, host, 3) == 0, "%s", fw_err_detail());
    CHECK(host[0] == 1.5f && host[1] == -2.0f && host[2] == 4.0f);
    CHECK_EQ_INT(fw_coll_barrier(c), 0);
    /* world 1: the rank owns everything, sharded collectives keep the data */
    size_t off = 1, len = 0;
    fw_coll_shard(c, 1000, &off, &len);
    CHECK(off == 0 && len == 1000);
    size_t ro[1] = {3}, rl[1] = {500};
    CHECKF(fw_coll_reduce_scatter_sum(c, d, 1000) == 0 && fw_coll_allgather(c, d, 1000) == 0 &&
               fw_coll_allreduce_ranges(c, d, ro, rl, 1, (void *)cudaStreamLegacy) == 0 &&
               fw_coll_sync_wait(c, (void *)cudaStreamLegacy) == 0,
           "%s", fw_err_detail());
    memset(back, 0, sizeof back);
    cudaMemcpy(back, d, sizeof h, cudaMemcpyDeviceToHost);
    CHECK(memcmp(back, h, sizeof h) == 0);
    /* the nccl backend shards device buffers only */
    CHECK_EQ_INT(fw_coll_reduce_scatter_sum(c, host, 3), FW_EINVAL);
    cudaFree(d);
    fw_coll_destroy(&c);
}

/* One rank of the 2-process test. Exit 0: correct; 2: NCCL refused the
 * group cleanly; 1: anything else. */
static int s_rank(int rank, const char *rdv) {
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) return 1;
    cudaSetDevice(rank % ndev);
    fw_coll *c = fw_coll_new("nccl", rank, 2, rdv, 30000);
    if (!c) {
        fprintf(stderr, "rank %d (%d GPU(s)): nccl refused: %s\n", rank, ndev, fw_err_detail());
        return ndev < 2 ? 2 : 1;
    }
    float *h = malloc(NBIG * sizeof *h), *d = NULL;
    if (!h || cudaMalloc((void **)&d, NBIG * sizeof *h) != cudaSuccess) return 1;
    for (size_t i = 0; i < NBIG; i++) h[i] = (float)(rank + 1) * (float)(i % 1000);
    cudaMemcpy(d, h, NBIG * sizeof *h, cudaMemcpyHostToDevice);
    int rc = fw_coll_allreduce_sum(c, d, NBIG);
    if (rc == 0)
        rc = cudaMemcpy(h, d, NBIG * sizeof *h, cudaMemcpyDeviceToHost) == cudaSuccess ? 0 : -1;
    size_t bad = 0;
    for (size_t i = 0; rc == 0 && i < NBIG; i++)
        if (h[i] != 3.0f * (float)(i % 1000)) bad++;
    /* a host scalar next to the device buffers: ring path, same sum */
    float count = (float)(rank + 1);
    if (rc == 0) rc = fw_coll_allreduce_sum(c, &count, 1);
    if (rc == 0 && count != 3.0f) bad++;
    /* broadcast from rank 1 */
    for (size_t i = 0; rc == 0 && i < 4096; i++) h[i] = rank == 1 ? 7.0f : -1.0f;
    if (rc == 0) cudaMemcpy(d, h, 4096 * sizeof *h, cudaMemcpyHostToDevice);
    if (rc == 0) rc = fw_coll_broadcast(c, d, 4096 * sizeof *h, 1);
    if (rc == 0) cudaMemcpy(h, d, 4096 * sizeof *h, cudaMemcpyDeviceToHost);
    for (size_t i = 0; rc == 0 && i < 4096; i++)
        if (h[i] != 7.0f) bad++;
    /* ZeRO-1: reduce-scatter then all-gather of NBIG floats (NBIG is odd:
     * the last rank owns the tail) is the all-reduce; each rank's part after
     * the reduce-scatter already holds the sum. */
    size_t off = 0, len = 0;
    fw_coll_shard(c, NBIG, &off, &len);
    if (off != (rank == 0 ? 0 : NBIG / 2) || off + len != (rank == 0 ? NBIG / 2 : NBIG)) bad++;
    for (size_t i = 0; rc == 0 && i < NBIG; i++) h[i] = (float)(rank + 1) * (float)(i % 1000);
    if (rc == 0) cudaMemcpy(d, h, NBIG * sizeof *h, cudaMemcpyHostToDevice);
    if (rc == 0) rc = fw_coll_reduce_scatter_sum(c, d, NBIG);
    if (rc == 0) cudaMemcpy(h, d, NBIG * sizeof *h, cudaMemcpyDeviceToHost);
    for (size_t i = off; rc == 0 && i < off + len; i++)
        if (h[i] != 3.0f * (float)(i % 1000)) bad++;
    if (rc == 0) rc = fw_coll_allgather(c, d, NBIG);
    if (rc == 0) cudaMemcpy(h, d, NBIG * sizeof *h, cudaMemcpyDeviceToHost);
    for (size_t i = 0; rc == 0 && i < NBIG; i++)
        if (h[i] != 3.0f * (float)(i % 1000)) bad++;
    /* asynchronous ranges (the gradient bucket hook): queued after a kernel-
     * free default stream, waited for, then read back on that stream */
    size_t offs[2] = {10, 5000}, lens[2] = {990, 65000};
    for (size_t i = 0; rc == 0 && i < NBIG; i++) h[i] = (float)(rank + 1);
    if (rc == 0) cudaMemcpy(d, h, NBIG * sizeof *h, cudaMemcpyHostToDevice);
    if (rc == 0) rc = fw_coll_allreduce_ranges(c, d, offs, lens, 2, (void *)cudaStreamLegacy);
    if (rc == 0) rc = fw_coll_sync_wait(c, (void *)cudaStreamLegacy);
    if (rc == 0) cudaMemcpy(h, d, NBIG * sizeof *h, cudaMemcpyDeviceToHost);
    for (size_t i = 0; rc == 0 && i < 100000; i++) {
        int in = (i >= 10 && i < 1000) || (i >= 5000 && i < 70000);
        if (h[i] != (in ? 3.0f : (float)(rank + 1))) bad++;
    }
    if (rc != 0 || bad)
        fprintf(stderr, "rank %d: rc %d (%s), %zu wrong\n", rank, rc, fw_err_detail(), bad);
    cudaFree(d);
    free(h);
    fw_coll_destroy(&c);
    return rc == 0 && bad == 0 ? 0 : 1;
}

static void test_world2(void) {
    char rdv[64];
    snprintf(rdv, sizeof rdv, "tcp://127.0.0.1:%d", fw_test_free_port());
    pid_t pid[2];
    for (int r = 0; r < 2; r++) {
        pid[r] = fork();
        REQUIRE(pid[r] >= 0);
        if (pid[r] == 0) _exit(s_rank(r, rdv));
    }
    int code[2] = {1, 1};
    for (int r = 0; r < 2; r++) {
        int st = 0;
        waitpid(pid[r], &st, 0);
        code[r] = WIFEXITED(st) ? WEXITSTATUS(st) : 1;
    }
    if (code[0] == 0 && code[1] == 0) {
        fprintf(stderr, "   2 ranks: all-reduce and broadcast correct\n");
        CHECK(1);
    } else if (code[0] == 2 && code[1] == 2) {
        fprintf(stderr, "   2 ranks on one GPU: NCCL refused the group cleanly (expected)\n");
        CHECK(1);
    } else {
        CHECKF(0, "2-rank NCCL: exit codes %d and %d", code[0], code[1]);
    }
}

int main(void) {
    /* The 2-process test forks first: a process must not touch CUDA before fork. */
    RUN(test_world2);
    RUN(test_world1);
    return fw_test_summary();
}
