/* bench_etcd - the etcd client against a real single-member etcd started by
 * the test harness (loopback, data in a temporary folder on the local disk,
 * so every write pays etcd's WAL fsync).
 *
 * Figures, one JSON line each:
 *   put_rate              sequential single-key puts per second, one client,
 *                         one request in flight: the floor of any code that
 *                         writes state change by change
 *   put_p50_ms/p99_ms     round trip of one put
 *   range_rate, range_p50_ms/p99_ms   the same for a linearizable one-key range
 *   txn128_changes_rate   state changes per second when batched in txns of
 *                         128 puts (etcd's --max-txn-ops), sequentially
 *   txn128_p50_ms         round trip of one such txn
 *   batched_over_single   txn128_changes_rate / put_rate (the issue asks >= 10)
 *   txn128_2inflight_changes_rate   the same txns from 2 threads sharing the
 *                         client: how much etcd overlaps two requests
 *
 * Where the time goes (measured with getrusage on a 2-core VM): a txn of 128
 * puts costs the client ~1.3 ms of CPU (building 0.2 ms, JSON and base64,
 * parsing 128 response headers) and etcd ~10 ms, nearly all of it the
 * gateway's JSON-to-protobuf conversion; a single put is ~0.8 ms, mostly
 * the WAL fsync and the round trip. On a disk with a slower fsync the
 * single-put rate drops and the batched/single ratio grows.
 *
 * Each phase runs for a fixed time (not a fixed count) so the whole binary
 * takes about 20 s on any machine. Values are ~100 bytes, a typical Flywheel
 * state record. */
#include "etcd_harness.h"
#include "fw_err.h"
#include "fw_etcd.h"
#include "fw_time.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_PHASE_NS    (4 * 1000000000LL) /* per phase */
#define S_MAX_SAMPLES 200000
#define S_BATCH       FW_ETCD_MAX_TXN_OPS

static void s_emit(const char *metric, double value, const char *unit) {
    printf("{\"bench\": \"etcd\", \"metric\": \"%s\", \"value\": %.6g, \"unit\": \"%s\"}\n", metric,
           value, unit);
    fflush(stdout);
}

static int s_cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* The q-quantile (0..1) of n sorted samples, in ms. */
static double s_quantile_ms(const int64_t *sorted, size_t n, double q) {
    if (n == 0) return 0;
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return (double)sorted[i] / 1e6;
}

typedef struct {
    int64_t *ns; /* latency of each operation */
    size_t n;
    int64_t total; /* wall time of the phase */
} s_phase;

static const char s_value[] =
    "{\"schema\":1,\"state\":\"running\",\"agent\":\"agent-07\",\"epoch\":42,\"t\":1732300000}";

enum { S_PUT, S_RANGE, S_TXN };

/* Run one kind of operation back to back for S_PHASE_NS. 0 or -1. */
static int s_run(fw_etcd *c, int kind, s_phase *p) {
    p->n = 0;
    char key[64];
    int64_t start = fw_mono_ns(), end = start + S_PHASE_NS;
    uint64_t i = 0;
    while (p->n < S_MAX_SAMPLES) {
        int64_t t0 = fw_mono_ns();
        if (t0 >= end) break;
        int rc;
        if (kind == S_PUT) {
            snprintf(key, sizeof key, "/bench/put/%06llu", (unsigned long long)(i++ % 10000));
            rc = fw_etcd_put(c, key, s_value, sizeof s_value - 1, 0, NULL, NULL);
        } else if (kind == S_RANGE) {
            snprintf(key, sizeof key, "/bench/put/%06llu", (unsigned long long)(i++ % 100));
            fw_etcd_kvs *r = NULL;
            rc = fw_etcd_range(c, key, NULL, &r);
            if (rc == 0 && r->n != 1) rc = fw_err_set(FW_EPROTO, "key %s missing", key);
            fw_etcd_kvs_free(&r);
        } else {
            fw_etcd_txn *t = fw_etcd_txn_new();
            for (int k = 0; k < S_BATCH && t; k++) {
                snprintf(key, sizeof key, "/bench/txn/%06llu", (unsigned long long)(i++ % 100000));
                fw_etcd_txn_put(t, FW_ETCD_SUCCESS, key, s_value, sizeof s_value - 1, 0, false);
            }
            rc = t ? fw_etcd_txn_commit(c, t, NULL) : FW_ENOMEM;
            fw_etcd_txn_destroy(&t);
        }
        if (rc < 0) {
            fprintf(stderr, "bench_etcd: operation failed: %s\n", fw_err_detail());
            return -1;
        }
        p->ns[p->n++] = fw_mono_ns() - t0;
    }
    p->total = fw_mono_ns() - start;
    qsort(p->ns, p->n, sizeof *p->ns, s_cmp_i64);
    return 0;
}

typedef struct {
    fw_etcd *c;
    s_phase p;
    int rc;
} s_thread;

static void *s_txn_thread(void *arg) {
    s_thread *t = arg;
    t->rc = s_run(t->c, S_TXN, &t->p);
    return NULL;
}

int main(void) {
    fw_etcd_harness *h = fw_etcd_harness_new(1);
    if (!h) {
        fprintf(stderr, "bench_etcd: could not start etcd (is etcd-server installed?)\n");
        return 1;
    }
    fw_etcd *c = fw_etcd_harness_client(h, 10000);
    s_phase p = {.ns = malloc(S_MAX_SAMPLES * sizeof(int64_t))};
    int rc = c && p.ns ? 0 : -1;

    /* Warm-up: connection set up, etcd's backend pages touched. */
    for (int i = 0; i < 100 && rc == 0; i++)
        if (fw_etcd_put(c, "/bench/warm", "x", 1, 0, NULL, NULL) < 0) rc = -1;

    double put_rate = 0;
    if (rc == 0 && (rc = s_run(c, S_PUT, &p)) == 0) {
        put_rate = (double)p.n / ((double)p.total / 1e9);
        s_emit("put_rate", put_rate, "ops/s");
        s_emit("put_p50_ms", s_quantile_ms(p.ns, p.n, 0.50), "ms");
        s_emit("put_p99_ms", s_quantile_ms(p.ns, p.n, 0.99), "ms");
    }
    if (rc == 0 && (rc = s_run(c, S_RANGE, &p)) == 0) {
        s_emit("range_rate", (double)p.n / ((double)p.total / 1e9), "ops/s");
        s_emit("range_p50_ms", s_quantile_ms(p.ns, p.n, 0.50), "ms");
        s_emit("range_p99_ms", s_quantile_ms(p.ns, p.n, 0.99), "ms");
    }
    if (rc == 0 && (rc = s_run(c, S_TXN, &p)) == 0) {
        double changes = (double)p.n * S_BATCH / ((double)p.total / 1e9);
        s_emit("txn128_changes_rate", changes, "changes/s");
        s_emit("txn128_p50_ms", s_quantile_ms(p.ns, p.n, 0.50), "ms");
        s_emit("batched_over_single", put_rate > 0 ? changes / put_rate : 0, "x");
    }
    if (rc == 0) {
        s_thread th[2] = {{.c = c}, {.c = c}};
        pthread_t tid[2];
        int started = 0;
        for (int i = 0; i < 2; i++) {
            th[i].p.ns = malloc(S_MAX_SAMPLES * sizeof(int64_t));
            if (th[i].p.ns && pthread_create(&tid[i], NULL, s_txn_thread, &th[i]) == 0)
                started++;
            else
                break;
        }
        for (int i = 0; i < started; i++) pthread_join(tid[i], NULL);
        if (started == 2 && th[0].rc == 0 && th[1].rc == 0) {
            double secs =
                (double)(th[0].p.total > th[1].p.total ? th[0].p.total : th[1].p.total) / 1e9;
            s_emit("txn128_2inflight_changes_rate",
                   (double)(th[0].p.n + th[1].p.n) * S_BATCH / secs, "changes/s");
        } else {
            rc = -1;
        }
        free(th[0].p.ns);
        free(th[1].p.ns);
    }
    free(p.ns);
    fw_etcd_destroy(&c);
    fw_etcd_harness_destroy(&h);
    return rc == 0 ? 0 : 1;
}
