/* bench_collective - ring all-reduce over loopback between 2 processes.
 *
 * Forks two ranks that join a "ring" group on 127.0.0.1 and all-reduce a
 * 64 MiB float buffer a few times after one warm-up call. Rank 0 reports
 * the algorithm bandwidth (buffer bytes / seconds per call) and the bus
 * bandwidth (algbw * 2(w-1)/w, what each rank's link actually carries), as
 * one JSON line each. */
#include "collective.h"
#include "fw_err.h"
#include "fw_log.h"
#include "fw_time.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define WORLD 2
#define BYTES ((size_t)64 << 20)
#define ITERS 5

static int s_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

static int s_rank(int rank, const char *rdv) {
    fw_coll *c = fw_coll_new("ring", rank, WORLD, rdv, 30000);
    if (!c) {
        fprintf(stderr, "rank %d: %s\n", rank, fw_err_detail());
        return 1;
    }
    size_t n = BYTES / sizeof(float);
    float *v = malloc(BYTES);
    if (!v) return 1;
    for (size_t i = 0; i < n; i++) v[i] = (float)(i % 7);
    int rc = fw_coll_allreduce_sum(c, v, n); /* warm-up: page faults, TCP windows */
    int64_t t0 = fw_mono_ns();
    for (int i = 0; i < ITERS && !rc; i++) rc = fw_coll_allreduce_sum(c, v, n);
    double sec = (double)(fw_mono_ns() - t0) / 1e9 / ITERS;
    if (!rc) rc = fw_coll_barrier(c);
    if (rc) fprintf(stderr, "rank %d: %s\n", rank, fw_err_detail());
    if (!rc && rank == 0) {
        double algbw = (double)BYTES / sec / 1e9;
        printf("{\"bench\": \"collective_ring_allreduce_2proc_64MiB\", \"metric\": \"algbw\", "
               "\"value\": %.3f, \"unit\": \"GB/s\"}\n",
               algbw);
        printf("{\"bench\": \"collective_ring_allreduce_2proc_64MiB\", \"metric\": \"busbw\", "
               "\"value\": %.3f, \"unit\": \"GB/s\"}\n",
               algbw * 2.0 * (WORLD - 1) / WORLD);
        printf("{\"bench\": \"collective_ring_allreduce_2proc_64MiB\", \"metric\": \"latency\", "
               "\"value\": %.2f, \"unit\": \"ms\"}\n",
               sec * 1e3);
        fflush(stdout);
    }
    free(v);
    fw_coll_destroy(&c);
    return rc ? 1 : 0;
}

int main(void) {
    fw_log_set_level(FW_LOG_WARN);
    char rdv[64];
    snprintf(rdv, sizeof rdv, "tcp://127.0.0.1:%d", s_free_port());
    fflush(stdout);
    pid_t pids[WORLD];
    for (int r = 0; r < WORLD; r++) {
        pids[r] = fork();
        if (pids[r] < 0) return 1;
        if (pids[r] == 0) _exit(s_rank(r, rdv));
    }
    int bad = 0;
    for (int r = 0; r < WORLD; r++) {
        int st = 0;
        waitpid(pids[r], &st, 0);
        bad += !WIFEXITED(st) || WEXITSTATUS(st) != 0;
    }
    return bad ? 1 : 0;
}
