/* coord_metrics.h - the coordinator's Prometheus metrics.
 *
 * The event loop owns a coord_metrics_t and bumps plain fields (no atomics
 * on the hot path). The cron copies it into the HTTP server's snapshot under
 * a mutex (coord_http.c), and /metrics renders the snapshot, so a scrape
 * never touches live state. Names follow Prometheus conventions: flywheel_
 * prefix, base units (seconds, bytes), _total for counters. */
#ifndef COORD_METRICS_H
#define COORD_METRICS_H

#include "coord_state.h"

#include <stddef.h>
#include <stdint.h>

/* Upper bounds (seconds) of the latency histograms' buckets, +Inf implied. */
#define COORD_HIST_BUCKETS 15

typedef struct {
    uint64_t bucket[COORD_HIST_BUCKETS + 1]; /* non-cumulative; last is +Inf */
    uint64_t count;
    double sum;
} coord_hist_t;

void coord_hist_observe(coord_hist_t *h, double seconds);
/* The q-quantile (0..1) estimated from the buckets (upper bound of the
 * bucket holding it); 0 when empty. For logs and tests. */
double coord_hist_quantile(const coord_hist_t *h, double q);

enum { COORD_EP_CLIENT = 0, COORD_EP_AGENT = 1 };
enum { COORD_TXN_OK = 0, COORD_TXN_FENCED, COORD_TXN_ERROR, COORD_TXN__COUNT };

typedef struct {
    /* gauges */
    int leader; /* 1 while leader (recovering included) */
    int recovering;
    int64_t epoch;
    uint64_t tasks[TASK__COUNT];
    uint64_t jobs[JOB__COUNT];
    uint64_t agents_connected, agents_draining, agents_unavailable;
    uint64_t queue_depth; /* jobs waiting in the queue */
    uint64_t ready_tasks; /* tasks ready to place */
    uint64_t store_backlog;
    uint64_t txn_inflight;
    uint64_t log_streams;
    /* counters */
    uint64_t tasks_dispatched_total;
    uint64_t task_results_total[4]; /* by coord_outcome */
    uint64_t task_retries_total;
    uint64_t duplicate_results_total;
    uint64_t jobs_submitted_total;
    uint64_t etcd_txn_total[COORD_TXN__COUNT];
    uint64_t etcd_txn_ops_total;
    uint64_t client_requests_total;
    uint64_t client_errors_total;
    uint64_t bad_frames_total[2];
    uint64_t elections_won_total;
    uint64_t step_downs_total;
    uint64_t agents_lost_total;
    /* histograms */
    coord_hist_t dispatch_latency; /* task ready -> TASK_ASSIGN sent */
    coord_hist_t txn_duration;     /* one etcd txn, send to answer */
} coord_metrics_t;

/* Append the Prometheus text exposition of m to a malloc'd string
 * (caller frees); NULL on ENOMEM. */
char *coord_metrics_render(const coord_metrics_t *m, const char *name);

#endif
