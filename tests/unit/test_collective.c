/* Collectives without a network: the "single" backend is a no-op over world
 * 1, a one-rank "ring" needs no sockets, and bad arguments (backend, rank,
 * world, rendezvous, timeout) are refused with a clear detail before any
 * socket is opened. On world 1 the sharded calls (shard, reduce-scatter,
 * all-gather, all-reduce of ranges, sync wait) own the whole buffer and leave
 * the data as it is; NULL buffers are FW_EINVAL. The multi-process ring lives in
 * tests/integration/test_collective_ring.c. */
#include "collective.h"
#include "collective_nccl.h"
#include "fw_err.h"
#include "fw_test.h"

#include <stdlib.h>
#include <string.h>

static void test_single(void) {
    fw_coll *c = fw_coll_new("single", 0, 1, NULL, 0);
    REQUIRE(c);
    CHECK_EQ_INT(fw_coll_rank(c), 0);
    CHECK_EQ_INT(fw_coll_world(c), 1);
    CHECK_EQ_STR(fw_coll_backend(c), "single");
    float v[5] = {1.5f, -2.0f, 3.25f, 0.0f, 1e30f};
    float w[5];
    memcpy(w, v, sizeof v);
    CHECK_EQ_INT(fw_coll_allreduce_sum(c, v, 5), 0);
    CHECK(memcmp(v, w, sizeof v) == 0);
    CHECK_EQ_INT(fw_coll_allreduce_sum(c, NULL, 0), 0);
    CHECK_EQ_INT(fw_coll_allreduce_sum(c, NULL, 3), FW_EINVAL);
    char b[4] = "abc";
    CHECK_EQ_INT(fw_coll_broadcast(c, b, 4, 0), 0);
    CHECK_EQ_STR(b, "abc");
    CHECK_EQ_INT(fw_coll_broadcast(c, b, 4, 1), FW_EINVAL);
    CHECK_EQ_INT(fw_coll_broadcast(c, b, 4, -1), FW_EINVAL);
    CHECK_EQ_INT(fw_coll_barrier(c), 0);
    fw_coll_destroy(&c);
    CHECK(c == NULL);
    fw_coll_destroy(&c); /* idempotent */
}

static void test_ring_world_one(void) {
    /* World 1 needs no peers: the rendezvous is never contacted. */
    fw_coll *c = fw_coll_new("ring", 0, 1, "tcp://127.0.0.1:1", 100);
    REQUIRE(c);
    CHECK_EQ_STR(fw_coll_backend(c), "ring");
    float v[3] = {1, 2, 3};
    CHECK_EQ_INT(fw_coll_allreduce_sum(c, v, 3), 0);
    CHECK(v[0] == 1 && v[1] == 2 && v[2] == 3);
    CHECK_EQ_INT(fw_coll_barrier(c), 0);
    fw_coll_destroy(&c);
}

/* World 1, any backend: one shard that is the whole buffer, and the sharded
 * collectives change nothing. */
static void s_world_one_sharded(fw_coll *c) {
    const size_t sizes[] = {0, 1, 7, 1000};
    for (size_t t = 0; t < 4; t++) {
        size_t off = 99, len = 99;
        fw_coll_shard(c, sizes[t], &off, &len);
        CHECKF(off == 0 && len == sizes[t], "n %zu: shard [%zu, +%zu)", sizes[t], off, len);
    }
    float v[9], w[9];
    for (int i = 0; i < 9; i++) v[i] = w[i] = (float)i * 1.25f - 3.0f;
    CHECK_EQ_INT(fw_coll_reduce_scatter_sum(c, v, 9), 0);
    CHECK(memcmp(v, w, sizeof v) == 0);
    CHECK_EQ_INT(fw_coll_allgather(c, v, 9), 0);
    CHECK(memcmp(v, w, sizeof v) == 0);
    size_t offs[3] = {0, 4, 8}, lens[3] = {2, 3, 1};
    CHECK_EQ_INT(fw_coll_allreduce_ranges(c, v, offs, lens, 3, NULL), 0);
    CHECK(memcmp(v, w, sizeof v) == 0);
    CHECK_EQ_INT(fw_coll_allreduce_ranges(c, v, NULL, NULL, 0, NULL), 0);
    CHECK_EQ_INT(fw_coll_sync_wait(c, NULL), 0);
    /* Empty is fine with no buffer; a count with no buffer is not. */
    CHECK_EQ_INT(fw_coll_reduce_scatter_sum(c, NULL, 0), 0);
    CHECK_EQ_INT(fw_coll_allgather(c, NULL, 0), 0);
    CHECK_EQ_INT(fw_coll_reduce_scatter_sum(c, NULL, 4), FW_EINVAL);
    CHECK_EQ_INT(fw_coll_allgather(c, NULL, 4), FW_EINVAL);
    CHECK_EQ_INT(fw_coll_allreduce_ranges(c, NULL, offs, lens, 3, NULL), FW_EINVAL);
    CHECK_EQ_INT(fw_coll_allreduce_ranges(c, v, NULL, lens, 3, NULL), FW_EINVAL);
    CHECK_EQ_INT(fw_coll_allreduce_ranges(c, v, offs, NULL, 3, NULL), FW_EINVAL);
    CHECK_EQ_INT(fw_coll_allreduce_ranges(c, v, offs, lens, -1, NULL), FW_EINVAL);
    CHECK(memcmp(v, w, sizeof v) == 0);
}

static void test_world_one_sharded(void) {
    fw_coll *c = fw_coll_new("single", 0, 1, NULL, 0);
    REQUIRE(c);
    s_world_one_sharded(c);
    fw_coll_destroy(&c);
    c = fw_coll_new("ring", 0, 1, "tcp://127.0.0.1:1", 100);
    REQUIRE(c);
    s_world_one_sharded(c);
    fw_coll_destroy(&c);
    /* No group at all. */
    float v[2] = {1, 2};
    size_t off = 0, len = 2;
    CHECK_EQ_INT(fw_coll_reduce_scatter_sum(NULL, v, 2), FW_EINVAL);
    CHECK_EQ_INT(fw_coll_allgather(NULL, v, 2), FW_EINVAL);
    CHECK_EQ_INT(fw_coll_allreduce_ranges(NULL, v, &off, &len, 1, NULL), FW_EINVAL);
    CHECK_EQ_INT(fw_coll_sync_wait(NULL, NULL), FW_EINVAL);
}

static void s_refused(const char *backend, int rank, int world, const char *rdv, int tmo,
                      const char *needle) {
    fw_err_clear();
    fw_coll *c = fw_coll_new(backend, rank, world, rdv, tmo);
    CHECKF(c == NULL, "%s rank %d world %d %s accepted", backend, rank, world, rdv ? rdv : "");
    CHECKF(strstr(fw_err_detail(), needle) != NULL, "detail \"%s\" lacks \"%s\"", fw_err_detail(),
           needle);
    fw_coll_destroy(&c);
}

static void test_refusals(void) {
    s_refused("single", 0, 2, NULL, 100, "needs world 1");
    s_refused("bogus", 0, 1, NULL, 100, "unknown backend");
    s_refused(NULL, 0, 1, NULL, 100, "unknown backend");
    if (!fw_nccl_available()) {
        s_refused("nccl", 0, 1, NULL, 100, "nccl");
    } else {
        /* NCCL built in: a machine without a GPU refuses with the CUDA error,
         * one with a GPU accepts world 1. */
        fw_err_clear();
        fw_coll *c = fw_coll_new("nccl", 0, 1, NULL, 100);
        if (c) CHECK_EQ_STR(fw_coll_backend(c), "nccl");
        else CHECKF(fw_err_detail()[0] != '\0', "nccl refused without a reason");
        fw_coll_destroy(&c);
    }
    s_refused("ring", 2, 2, "tcp://127.0.0.1:5555", 100, "out of range");
    s_refused("ring", -1, 2, "tcp://127.0.0.1:5555", 100, "out of range");
    s_refused("ring", 0, 0, "tcp://127.0.0.1:5555", 100, "out of range");
    s_refused("ring", 0, 2, "tcp://127.0.0.1:5555", 0, "timeout_ms");
    s_refused("ring", 0, 2, NULL, 100, "tcp://HOST:PORT");
    s_refused("ring", 0, 2, "udp://127.0.0.1:5555", 100, "tcp://HOST:PORT");
    s_refused("ring", 0, 2, "tcp://127.0.0.1", 100, "tcp://HOST:PORT");
    s_refused("ring", 0, 2, "tcp://:5555", 100, "tcp://HOST:PORT");
    s_refused("ring", 1, 2, "tcp://127.0.0.1:0", 100, "port must be");
    s_refused("ring", 1, 2, "tcp://127.0.0.1:70000", 100, "port must be");
    s_refused("ring", 1, 2, "tcp://127.0.0.1:12ab", 100, "port must be");
    s_refused("ring", 1, 2, "tcp://no-such-host.invalid:5555", 100, "no-such-host.invalid");
}

int main(void) {
    RUN(test_single);
    RUN(test_ring_world_one);
    RUN(test_world_one_sharded);
    RUN(test_refusals);
    return fw_test_summary();
}
