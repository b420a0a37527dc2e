/* The "ring" collective between real processes over loopback TCP.
 *
 * Every scenario forks one child per rank; each child joins through a fresh
 * port, runs its part, writes what it saw into a shared anonymous mapping
 * and exits with its number of failed checks. The parent checks the exit
 * codes and compares the ranks' results with each other. Proves: exact sums
 * (integers in floats) for sizes that do not divide by the world, that are
 * smaller than it, zero, or span many chunks; bitwise-identical results on
 * every rank that equal the documented fixed summation order; broadcast from
 * every root; that a barrier waits for the slowest rank; that mismatched
 * calls fail with FW_EPROTO and poison the group; and that a rank which never
 * joins, a missing rank 0 or a peer that dies make the others fail with
 * FW_ETIMEDOUT after about timeout_ms instead of hanging.
 *
 * Sharded collectives (ZeRO-1), worlds 2..4, the same awkward sizes: after a
 * reduce-scatter every rank's own part (fw_coll_shard) is bit for bit the
 * all-reduce of the same data, and the parts are disjoint, cover the buffer
 * and are the documented ring segments; reduce-scatter + all-gather is the
 * all-reduce; an all-gather of rank-specific own parts gives every rank the
 * same whole buffer; an all-reduce of a few ranges sums those and touches
 * nothing else; and a rank in reduce-scatter facing one in all-reduce or
 * all-gather fails with FW_EPROTO at once, not after a timeout. */
#include "collective.h"
#include "fw_err.h"
#include "fw_test.h"
#include "fw_time.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAXW 4
#define TMO  3000 /* generous: the suite runs on 2 busy cores */

typedef struct {
    uint64_t hash[MAXW][16]; /* per rank, per check */
    int64_t ms[MAXW][4];
    int rc[MAXW][4];
    char detail[MAXW][256];
    int joined[MAXW];          /* set (atomically) once a rank's fw_coll_new returned */
    size_t shard[MAXW][16][2]; /* fw_coll_shard's off, len per rank per size */
} shared_out;

static shared_out *g_out;
static char g_rdv[64];
static int g_variant; /* set by the parent before s_run: which flavour of a scenario */

typedef void (*rank_fn)(int rank, int world);

/* Fork `nrun` ranks (0..nrun-1) of a world of `world`, wait for them all and
 * return how many failed. */
static int s_run(int world, int nrun, rank_fn fn) {
    snprintf(g_rdv, sizeof g_rdv, "tcp://127.0.0.1:%d", fw_test_free_port());
    memset(g_out, 0, sizeof *g_out);
    fflush(stdout), fflush(stderr);
    pid_t pids[MAXW];
    for (int r = 0; r < nrun; r++) {
        pids[r] = fork();
        if (pids[r] == 0) {
            fw_test_failed = 0;
            fn(r, world);
            fflush(stderr);
            _exit(fw_test_failed > 100 ? 100 : fw_test_failed);
        }
    }
    int bad = 0;
    for (int r = 0; r < nrun; r++) {
        int st = 0;
        waitpid(pids[r], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "rank %d: %s %d\n", r, WIFEXITED(st) ? "failed checks" : "signal",
                    WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
            bad++;
        }
    }
    return bad;
}

static uint64_t s_fnv(const void *p, size_t n) {
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static fw_coll *s_join(int rank, int world) {
    fw_coll *c = fw_coll_new("ring", rank, world, g_rdv, TMO);
    CHECKF(c != NULL, "rank %d: join: %s", rank, fw_err_detail());
    return c;
}

/* Integer values (exact in float for sums below 2^24) at several sizes. */
static const size_t k_sizes[] = {0, 1, 2, 3, 7, 1000, 262144 * 2 + 5, 3000017};

static void s_integer_sums(int rank, int world) {
    fw_coll *c = s_join(rank, world);
    if (!c) return;
    for (size_t t = 0; t < sizeof k_sizes / sizeof k_sizes[0]; t++) {
        size_t n = k_sizes[t];
        float *v = malloc((n ? n : 1) * sizeof *v);
        for (size_t i = 0; i < n; i++) v[i] = (float)((rank + 1) * (int)(i % 1009) - rank);
        int rc = fw_coll_allreduce_sum(c, n ? v : NULL, n);
        CHECKF(rc == 0, "rank %d n %zu: %s", rank, n, fw_err_detail());
        /* sum over r of (r+1)*m - r = m*w(w+1)/2 - w(w-1)/2 */
        size_t wrong = 0;
        for (size_t i = 0; i < n; i++) {
            float want =
                (float)((int)(i % 1009) * world * (world + 1) / 2 - world * (world - 1) / 2);
            if (v[i] != want) wrong++;
        }
        CHECKF(wrong == 0, "rank %d n %zu: %zu wrong sums", rank, n, wrong);
        g_out->hash[rank][t] = s_fnv(v, n * sizeof *v);
        free(v);
    }
    fw_coll_destroy(&c);
}

static float s_rand_float(uint64_t *st) {
    return (float)((double)(fw_test_rand(st) >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* Random floats: the result must equal, bit for bit, the documented order
 * ((x_j + x_{j+1}) + ...) + x_{j-1} for an element of segment j, on every
 * rank, and a second identical call must give the same bits again. */
static void s_random_floats(int rank, int world) {
    fw_coll *c = s_join(rank, world);
    if (!c) return;
    const size_t n = 700001;
    float *x = malloc((size_t)world * n * sizeof *x), *v = malloc(n * sizeof *v);
    for (int r = 0; r < world; r++) {
        uint64_t st = 1000 + (uint64_t)r;
        for (size_t i = 0; i < n; i++) x[(size_t)r * n + i] = s_rand_float(&st) * (float)(1 + r);
    }
    size_t wrong = 0;
    for (int rep = 0; rep < 2; rep++) {
        memcpy(v, x + (size_t)rank * n, n * sizeof *v);
        CHECKF(fw_coll_allreduce_sum(c, v, n) == 0, "rank %d: %s", rank, fw_err_detail());
        for (int j = 0; j < world; j++) {
            size_t lo = n * (size_t)j / (size_t)world, hi = n * (size_t)(j + 1) / (size_t)world;
            for (size_t i = lo; i < hi; i++) {
                float acc = x[(size_t)j * n + i];
                for (int k = 1; k < world; k++) acc = acc + x[(size_t)((j + k) % world) * n + i];
                if (memcmp(&acc, &v[i], sizeof acc) != 0) wrong++;
            }
        }
        g_out->hash[rank][rep] = s_fnv(v, n * sizeof *v);
    }
    CHECKF(wrong == 0, "rank %d: %zu elements differ from the fixed ring order", rank, wrong);
    free(x), free(v);
    fw_coll_destroy(&c);
}

/* Broadcast from every root, odd sizes, several chunks. */
static void s_broadcasts(int rank, int world) {
    fw_coll *c = s_join(rank, world);
    if (!c) return;
    const size_t sizes[] = {0, 1, 4099, (3u << 20) + 5};
    for (int root = 0; root < world; root++) {
        for (size_t t = 0; t < 4; t++) {
            size_t n = sizes[t];
            unsigned char *b = malloc(n + 1);
            for (size_t i = 0; i < n; i++)
                b[i] = (unsigned char)(rank == root ? (i * 31 + (size_t)root) : 0xEE);
            CHECKF(fw_coll_broadcast(c, b, n, root) == 0, "rank %d root %d: %s", rank, root,
                   fw_err_detail());
            size_t wrong = 0;
            for (size_t i = 0; i < n; i++) wrong += b[i] != (unsigned char)(i * 31 + (size_t)root);
            CHECKF(wrong == 0, "rank %d root %d n %zu: %zu wrong bytes", rank, root, n, wrong);
            free(b);
        }
    }
    fw_coll_destroy(&c);
}

/* The last rank arrives 400 ms late; nobody may leave the barrier before. */
static void s_barrier(int rank, int world) {
    fw_coll *c = s_join(rank, world);
    if (!c) return;
    CHECK_EQ_INT(fw_coll_barrier(c), 0);
    int64_t t0 = fw_mono_ms();
    if (rank == world - 1) fw_sleep_ms(400);
    CHECK_EQ_INT(fw_coll_barrier(c), 0);
    g_out->ms[rank][0] = fw_mono_ms() - t0;
    fw_coll_destroy(&c);
}

/* Rank 0 sums 10 floats, rank 1 sums 11: both must notice, not add garbage,
 * and the group must refuse further work. */
static void s_mismatch(int rank, int world) {
    fw_coll *c = s_join(rank, world);
    if (!c) return;
    float v[11] = {0};
    int rc = fw_coll_allreduce_sum(c, v, rank == 0 ? 10 : 11);
    CHECKF(rc == FW_EPROTO, "rank %d: rc %d (%s)", rank, rc, fw_err_detail());
    CHECKF(strstr(fw_err_detail(), "different collectives") != NULL, "detail: %s", fw_err_detail());
    CHECK_EQ_INT(fw_coll_barrier(c), FW_ESTATE);
    fw_coll_destroy(&c);
}

/* Ranks 0..nrun-1 of a larger world: the missing ones never come. */
static void s_join_alone(int rank, int world) {
    int64_t t0 = fw_mono_ms();
    fw_coll *c = fw_coll_new("ring", rank, world, g_rdv, 600);
    g_out->ms[rank][0] = fw_mono_ms() - t0;
    snprintf(g_out->detail[rank], sizeof g_out->detail[rank], "%s", fw_err_detail());
    CHECK(c == NULL);
    fw_coll_destroy(&c);
}

/* Rank 1 joins and dies without a word; rank 0's all-reduce must time out.
 *
 * Rank 1 must not die before rank 0 has finished joining: fw_coll_new
 * returns on a rank once it has *received* the last message of the join's
 * barrier, while its own last message may still sit in ZeroMQ's I/O thread.
 * An _exit() right away (which skips the linger of fw_coll_destroy) can
 * drop that message, and then rank 0 rightly fails the join itself ("barrier
 * #1: nothing received") instead of the all-reduce under test. Unloaded the
 * I/O thread nearly always wins that race; under `ctest -j2` on two busy
 * cores it lost about one run in ten. So rank 1 waits for rank 0's flag. */
static void s_dead_peer(int rank, int world) {
    fw_coll *c = fw_coll_new("ring", rank, world, g_rdv, 700);
    CHECKF(c != NULL, "rank %d: join: %s", rank, fw_err_detail());
    if (!c) return;
    __atomic_store_n(&g_out->joined[rank], 1, __ATOMIC_RELEASE);
    if (rank == 1) {
        int64_t t0 = fw_mono_ms();
        while (!__atomic_load_n(&g_out->joined[0], __ATOMIC_ACQUIRE) && fw_mono_ms() - t0 < 10000)
            fw_sleep_ms(1);
        _exit(0);
    }
    size_t n = 1 << 20;
    float *v = calloc(n, sizeof *v);
    int64_t t0 = fw_mono_ms();
    g_out->rc[rank][0] = fw_coll_allreduce_sum(c, v, n);
    g_out->ms[rank][0] = fw_mono_ms() - t0;
    snprintf(g_out->detail[rank], sizeof g_out->detail[rank], "%s", fw_err_detail());
    g_out->rc[rank][1] = fw_coll_allreduce_sum(c, v, n);
    free(v);
    fw_coll_destroy(&c);
}

/* ---- sharded collectives ---------------------------------------------- */

#define NSIZES (sizeof k_sizes / sizeof k_sizes[0])

/* The documented ring partition: rank r owns segment (r+1) mod w. */
static void s_ring_part(size_t n, int w, int r, size_t *off, size_t *len) {
    int j = (r + 1) % w;
    *off = n * (size_t)j / (size_t)w;
    *len = n * (size_t)(j + 1) / (size_t)w - *off;
}

/* Random floats (not exact integers, so a different summation order would
 * show): each rank's own part after a reduce-scatter must be bitwise the
 * all-reduce of the same data; then an all-gather must complete it to the
 * whole all-reduce. */
static void s_reduce_scatter(int rank, int world) {
    fw_coll *c = s_join(rank, world);
    if (!c) return;
    for (size_t t = 0; t < NSIZES; t++) {
        size_t n = k_sizes[t], off = 0, len = 0;
        float *v = malloc((n ? n : 1) * sizeof *v), *u = malloc((n ? n : 1) * sizeof *u);
        uint64_t st = 5000 + 17 * (uint64_t)rank + t;
        for (size_t i = 0; i < n; i++) u[i] = v[i] = s_rand_float(&st) * (float)(rank + 1);
        CHECKF(fw_coll_allreduce_sum(c, n ? u : NULL, n) == 0, "rank %d n %zu: %s", rank, n,
               fw_err_detail());
        CHECKF(fw_coll_reduce_scatter_sum(c, n ? v : NULL, n) == 0, "rank %d n %zu: %s", rank, n,
               fw_err_detail());
        fw_coll_shard(c, n, &off, &len);
        g_out->shard[rank][t][0] = off, g_out->shard[rank][t][1] = len;
        int inside = off <= n && len <= n - off;
        CHECKF(inside, "rank %d n %zu: part [%zu, +%zu)", rank, n, off, len);
        if (inside)
            CHECKF(len == 0 || memcmp(v + off, u + off, len * sizeof *v) == 0,
                   "rank %d n %zu: own part [%zu, +%zu) differs from the all-reduce", rank, n, off,
                   len);
        CHECKF(fw_coll_allgather(c, n ? v : NULL, n) == 0, "rank %d n %zu: %s", rank, n,
               fw_err_detail());
        CHECKF(n == 0 || memcmp(v, u, n * sizeof *v) == 0,
               "rank %d n %zu: reduce-scatter + all-gather differs from all-reduce", rank, n);
        g_out->hash[rank][t] = s_fnv(v, n * sizeof *v);
        free(v), free(u);
    }
    fw_coll_destroy(&c);
}

/* Own part filled with values naming its rank, the rest with rank-specific
 * garbage: after the all-gather every element holds its owner's value. */
static float s_gather_val(size_t i, int owner) {
    return (float)(owner + 1) * 1000.0f + (float)(i % 997) * 0.5f;
}

static void s_allgather(int rank, int world) {
    fw_coll *c = s_join(rank, world);
    if (!c) return;
    for (size_t t = 0; t < NSIZES; t++) {
        size_t n = k_sizes[t], off = 0, len = 0;
        float *v = malloc((n ? n : 1) * sizeof *v);
        fw_coll_shard(c, n, &off, &len);
        for (size_t i = 0; i < n; i++)
            v[i] = i >= off && i - off < len ? s_gather_val(i, rank) : -1.0f - (float)rank;
        CHECKF(fw_coll_allgather(c, n ? v : NULL, n) == 0, "rank %d n %zu: %s", rank, n,
               fw_err_detail());
        size_t wrong = 0;
        for (int r = 0; r < world; r++) {
            size_t o, l;
            s_ring_part(n, world, r, &o, &l);
            for (size_t i = o; i < o + l; i++) wrong += v[i] != s_gather_val(i, r);
        }
        CHECKF(wrong == 0, "rank %d n %zu: %zu elements not their owner's", rank, n, wrong);
        g_out->hash[rank][t] = s_fnv(v, n * sizeof *v);
        free(v);
    }
    fw_coll_destroy(&c);
}

/* A few ranges of a multi-chunk buffer (one empty, one of a single float,
 * one longer than a chunk, one ending at the buffer's end). Integers, so the
 * sums are exact. */
static void s_ranges(int rank, int world) {
    fw_coll *c = s_join(rank, world);
    if (!c) return;
    const size_t n = 300007;
    const size_t offs[] = {3, 1000, 1001, 40000, n - 5}, lens[] = {250, 0, 1, 200003, 5};
    const int k = 5;
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = (float)((rank + 1) * (int)(i % 97) + rank);
    CHECKF(fw_coll_allreduce_ranges(c, v, offs, lens, k, NULL) == 0, "rank %d: %s", rank,
           fw_err_detail());
    CHECK_EQ_INT(fw_coll_sync_wait(c, NULL), 0);
    size_t wrong_in = 0, wrong_out = 0;
    for (size_t i = 0; i < n; i++) {
        int in = 0;
        for (int j = 0; j < k; j++) in |= i >= offs[j] && i - offs[j] < lens[j];
        int m = (int)(i % 97);
        float want = in ? (float)(m * world * (world + 1) / 2 + world * (world - 1) / 2)
                        : (float)((rank + 1) * m + rank);
        if (v[i] != want && in) wrong_in++;
        if (v[i] != want && !in) wrong_out++;
    }
    CHECKF(wrong_in == 0, "rank %d: %zu elements in the ranges not summed", rank, wrong_in);
    CHECKF(wrong_out == 0, "rank %d: %zu elements outside the ranges touched", rank, wrong_out);
    /* No ranges: nothing sent, the group stays in step (the barrier proves it). */
    CHECK_EQ_INT(fw_coll_allreduce_ranges(c, v, offs, lens, 0, NULL), 0);
    CHECK_EQ_INT(fw_coll_barrier(c), 0);
    free(v);
    fw_coll_destroy(&c);
}

/* Rank 0 reduce-scatters; rank 1 all-reduces (variant 0) or all-gathers
 * (variant 1) the same size: both must fail with FW_EPROTO well before the
 * timeout, and the group must refuse further work. */
static void s_shard_mismatch(int rank, int world) {
    fw_coll *c = s_join(rank, world);
    if (!c) return;
    size_t n = 1000;
    float *v = calloc(n, sizeof *v);
    int64_t t0 = fw_mono_ms();
    int rc = rank == 0        ? fw_coll_reduce_scatter_sum(c, v, n)
             : g_variant == 0 ? fw_coll_allreduce_sum(c, v, n)
                              : fw_coll_allgather(c, v, n);
    g_out->ms[rank][0] = fw_mono_ms() - t0;
    g_out->rc[rank][0] = rc;
    snprintf(g_out->detail[rank], sizeof g_out->detail[rank], "%s", fw_err_detail());
    g_out->rc[rank][1] = fw_coll_reduce_scatter_sum(c, v, n);
    free(v);
    fw_coll_destroy(&c);
}

static void test_reduce_scatter(void) {
    for (int w = 2; w <= MAXW; w++) {
        CHECKF(s_run(w, w, s_reduce_scatter) == 0, "world %d", w);
        for (size_t t = 0; t < NSIZES; t++) {
            size_t n = k_sizes[t], total = 0;
            for (int r = 0; r < w; r++) {
                size_t o = g_out->shard[r][t][0], l = g_out->shard[r][t][1], eo, el;
                total += l;
                s_ring_part(n, w, r, &eo, &el);
                CHECKF(o == eo && l == el,
                       "world %d n %zu rank %d: part [%zu, +%zu), ring "
                       "segment is [%zu, +%zu)",
                       w, n, r, o, l, eo, el);
                CHECKF(o <= n && l <= n - o, "world %d n %zu rank %d: [%zu, +%zu) outside", w, n, r,
                       o, l);
                for (int q = 0; q < r; q++) {
                    size_t o2 = g_out->shard[q][t][0], l2 = g_out->shard[q][t][1];
                    CHECKF(l == 0 || l2 == 0 || o + l <= o2 || o2 + l2 <= o,
                           "world %d n %zu: parts of ranks %d and %d overlap", w, n, q, r);
                }
                CHECK(g_out->hash[r][t] == g_out->hash[0][t]);
            }
            /* Disjoint, inside [0, n) and adding up to n: they cover it. */
            CHECKF(total == n, "world %d n %zu: parts add up to %zu", w, n, total);
        }
    }
}

static void test_allgather(void) {
    for (int w = 2; w <= MAXW; w++) {
        CHECKF(s_run(w, w, s_allgather) == 0, "world %d", w);
        for (int r = 1; r < w; r++)
            for (size_t t = 0; t < NSIZES; t++) CHECK(g_out->hash[r][t] == g_out->hash[0][t]);
    }
}

static void test_ranges(void) {
    for (int w = 2; w <= MAXW; w++) CHECKF(s_run(w, w, s_ranges) == 0, "world %d", w);
}

static void test_shard_mismatch(void) {
    for (g_variant = 0; g_variant < 2; g_variant++) {
        CHECKF(s_run(2, 2, s_shard_mismatch) == 0, "variant %d", g_variant);
        for (int r = 0; r < 2; r++) {
            CHECKF(g_out->rc[r][0] == FW_EPROTO, "variant %d rank %d: rc %d (%s)", g_variant, r,
                   g_out->rc[r][0], g_out->detail[r]);
            CHECKF(strstr(g_out->detail[r], "different collectives") != NULL, "%s",
                   g_out->detail[r]);
            CHECKF(g_out->ms[r][0] < TMO / 2, "variant %d rank %d: failed after %lld ms", g_variant,
                   r, (long long)g_out->ms[r][0]);
            CHECK_EQ_INT(g_out->rc[r][1], FW_ESTATE);
        }
    }
    g_variant = 0;
}

static void test_integer_sums(void) {
    for (int w = 2; w <= 3; w++) {
        CHECKF(s_run(w, w, s_integer_sums) == 0, "world %d", w);
        for (int r = 1; r < w; r++)
            for (size_t t = 0; t < sizeof k_sizes / sizeof k_sizes[0]; t++)
                CHECK(g_out->hash[r][t] == g_out->hash[0][t]);
    }
}

static void test_random_floats_identical(void) {
    for (int w = 2; w <= 3; w++) {
        CHECKF(s_run(w, w, s_random_floats) == 0, "world %d", w);
        for (int r = 0; r < w; r++) {
            CHECK(g_out->hash[r][0] == g_out->hash[0][0]);
            CHECK(g_out->hash[r][1] == g_out->hash[0][0]);
        }
    }
}

static void test_broadcast(void) {
    CHECK(s_run(2, 2, s_broadcasts) == 0);
    CHECK(s_run(3, 3, s_broadcasts) == 0);
}

static void test_barrier_waits(void) {
    CHECK(s_run(3, 3, s_barrier) == 0);
    for (int r = 0; r < 2; r++)
        CHECKF(g_out->ms[r][0] >= 350, "rank %d left after %lld ms", r, (long long)g_out->ms[r][0]);
}

static void test_mismatch(void) {
    CHECK(s_run(2, 2, s_mismatch) == 0);
}

static void test_missing_rank(void) {
    /* World 3, rank 2 never starts. */
    CHECK(s_run(3, 2, s_join_alone) == 0);
    for (int r = 0; r < 2; r++) {
        CHECKF(g_out->ms[r][0] >= 550 && g_out->ms[r][0] < 3000, "rank %d gave up after %lld ms", r,
               (long long)g_out->ms[r][0]);
        CHECKF(strstr(g_out->detail[r], "timed out") != NULL, "rank %d: %s", r, g_out->detail[r]);
    }
    CHECKF(strstr(g_out->detail[0], "missing: 2") != NULL, "%s", g_out->detail[0]);
    /* World 2, only rank 0 starts: nobody says hello. */
    CHECK(s_run(2, 1, s_join_alone) == 0);
    CHECKF(strstr(g_out->detail[0], "missing: 1") != NULL, "%s", g_out->detail[0]);
}

static void s_rank1_only(int rank, int world) {
    s_join_alone(1, world);
}

static void test_missing_root(void) {
    CHECK(s_run(2, 1, s_rank1_only) == 0);
    CHECKF(g_out->ms[1][0] >= 550 && g_out->ms[1][0] < 3000, "gave up after %lld ms",
           (long long)g_out->ms[1][0]);
    CHECKF(strstr(g_out->detail[1], "waiting for rank 0") != NULL, "%s", g_out->detail[1]);
}

static void test_dead_peer(void) {
    CHECK(s_run(2, 2, s_dead_peer) == 0);
    CHECK_EQ_INT(g_out->rc[0][0], FW_ETIMEDOUT);
    CHECKF(g_out->ms[0][0] >= 650 && g_out->ms[0][0] < 4000, "timed out after %lld ms",
           (long long)g_out->ms[0][0]);
    CHECKF(strstr(g_out->detail[0], "timeout 700 ms") != NULL, "%s", g_out->detail[0]);
    CHECK_EQ_INT(g_out->rc[0][1], FW_ESTATE);
}

int main(void) {
    g_out = mmap(NULL, sizeof *g_out, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g_out == MAP_FAILED) return 1;
    RUN(test_integer_sums);
    RUN(test_random_floats_identical);
    RUN(test_broadcast);
    RUN(test_barrier_waits);
    RUN(test_mismatch);
    RUN(test_missing_rank);
    RUN(test_missing_root);
    RUN(test_dead_peer);
    RUN(test_reduce_scatter);
    RUN(test_allgather);
    RUN(test_ranges);
    RUN(test_shard_mismatch);
    return fw_test_summary();
}
