/* coord_metrics.c - histograms and the Prometheus text format. */
#include "coord_metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Dispatch is sub-millisecond when idle and seconds when the queue is deep;
 * buckets span 100us .. 10s roughly logarithmically. */
static const double s_bounds[COORD_HIST_BUCKETS] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                                    0.005,  0.01,    0.025,  0.05,  0.1,
                                                    0.25,   0.5,     1,      2.5,   10};

void coord_hist_observe(coord_hist_t *h, double seconds) {
    int i = 0;
    while (i < COORD_HIST_BUCKETS && seconds > s_bounds[i]) i++;
    h->bucket[i]++;
    h->count++;
    h->sum += seconds;
}

double coord_hist_quantile(const coord_hist_t *h, double q) {
    if (h->count == 0) return 0;
    uint64_t want = (uint64_t)(q * (double)h->count + 0.5);
    if (want < 1) want = 1;
    uint64_t acc = 0;
    for (int i = 0; i <= COORD_HIST_BUCKETS; i++) {
        acc += h->bucket[i];
        if (acc >= want) return i < COORD_HIST_BUCKETS ? s_bounds[i] : s_bounds[i - 1] * 2;
    }
    return s_bounds[COORD_HIST_BUCKETS - 1];
}

typedef struct {
    char *buf;
    size_t len, cap;
    int oom;
} s_out;

static void s_printf(s_out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_printf(s_out *o, const char *fmt, ...) {
    if (o->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->oom = 1;
            return;
        }
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = o->cap * 2 + (size_t)n;
        char *b = realloc(o->buf, cap);
        if (!b) {
            o->oom = 1;
            return;
        }
        o->buf = b;
        o->cap = cap;
    }
}

static void s_head(s_out *o, const char *name, const char *type, const char *help) {
    s_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void s_gauge(s_out *o, const char *name, const char *help, double v) {
    s_head(o, name, "gauge", help);
    s_printf(o, "%s %.17g\n", name, v);
}

static void s_counter(s_out *o, const char *name, const char *help, uint64_t v) {
    s_head(o, name, "counter", help);
    s_printf(o, "%s %llu\n", name, (unsigned long long)v);
}

static void s_hist(s_out *o, const char *name, const char *help, const coord_hist_t *h) {
    s_head(o, name, "histogram", help);
    uint64_t acc = 0;
    for (int i = 0; i < COORD_HIST_BUCKETS; i++) {
        acc += h->bucket[i];
        s_printf(o, "%s_bucket{le=\"%g\"} %llu\n", name, s_bounds[i], (unsigned long long)acc);
    }
    acc += h->bucket[COORD_HIST_BUCKETS];
    s_printf(o, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)acc);
    s_printf(o, "%s_sum %.9g\n%s_count %llu\n", name, h->sum, name, (unsigned long long)h->count);
}

char *coord_metrics_render(const coord_metrics_t *m, const char *name) {
    s_out o = {malloc(8192), 0, 8192, 0};
    if (!o.buf) return NULL;
    o.buf[0] = '\0';
    s_head(&o, "flywheel_coordinator_info", "gauge", "Constant 1, labelled with this coordinator's name.");
    s_printf(&o, "flywheel_coordinator_info{name=\"%s\"} 1\n", name ? name : "");
    s_gauge(&o, "flywheel_leader", "1 while this coordinator is the leader, else 0.", m->leader);
    s_gauge(&o, "flywheel_leader_recovering",
            "1 while a new leader rebuilds state and waits for agents to re-register.",
            m->recovering);
    s_gauge(&o, "flywheel_epoch", "The epoch (fencing token) of this coordinator's leadership; 0 "
            "when standby.", (double)m->epoch);
    s_head(&o, "flywheel_tasks", "gauge", "Tasks the leader knows, by state.");
    for (int s = 0; s < TASK__COUNT; s++)
        s_printf(&o, "flywheel_tasks{state=\"%s\"} %llu\n", coord_task_state_name(s),
                 (unsigned long long)m->tasks[s]);
    s_head(&o, "flywheel_jobs", "gauge", "Jobs the leader knows, by state.");
    for (int s = 0; s < JOB__COUNT; s++)
        s_printf(&o, "flywheel_jobs{state=\"%s\"} %llu\n", coord_job_state_name(s),
                 (unsigned long long)m->jobs[s]);
    s_head(&o, "flywheel_agents", "gauge", "Agents by availability.");
    s_printf(&o, "flywheel_agents{state=\"connected\"} %llu\n",
             (unsigned long long)m->agents_connected);
    s_printf(&o, "flywheel_agents{state=\"draining\"} %llu\n",
             (unsigned long long)m->agents_draining);
    s_printf(&o, "flywheel_agents{state=\"unavailable\"} %llu\n",
             (unsigned long long)m->agents_unavailable);
    s_gauge(&o, "flywheel_queue_depth", "Jobs in the queue with tasks waiting to be placed.",
            (double)m->queue_depth);
    s_gauge(&o, "flywheel_ready_tasks", "Tasks ready to be placed now.", (double)m->ready_tasks);
    s_gauge(&o, "flywheel_store_backlog", "State changes waiting to be written to etcd.",
            (double)m->store_backlog);
    s_gauge(&o, "flywheel_etcd_txn_inflight", "etcd txns in flight.", (double)m->txn_inflight);
    s_gauge(&o, "flywheel_log_streams", "Client log streams being served.",
            (double)m->log_streams);
    s_counter(&o, "flywheel_tasks_dispatched_total", "Task attempts sent to agents.",
              m->tasks_dispatched_total);
    s_head(&o, "flywheel_task_results_total", "counter", "Accepted task results by outcome.");
    static const char *outs[4] = {"succeeded", "failed", "lost", "cancelled"};
    for (int i = 0; i < 4; i++)
        s_printf(&o, "flywheel_task_results_total{status=\"%s\"} %llu\n", outs[i],
                 (unsigned long long)m->task_results_total[i]);
    s_counter(&o, "flywheel_task_retries_total", "Task attempts retried after a failure or loss.",
              m->task_retries_total);
    s_counter(&o, "flywheel_duplicate_results_total",
              "Results acknowledged but ignored (stale attempt or finished task).",
              m->duplicate_results_total);
    s_counter(&o, "flywheel_jobs_submitted_total", "Jobs accepted.", m->jobs_submitted_total);
    s_head(&o, "flywheel_etcd_txn_total", "counter", "etcd txns committed by the leader, by result.");
    static const char *tr[COORD_TXN__COUNT] = {"ok", "fenced", "error"};
    for (int i = 0; i < COORD_TXN__COUNT; i++)
        s_printf(&o, "flywheel_etcd_txn_total{result=\"%s\"} %llu\n", tr[i],
                 (unsigned long long)m->etcd_txn_total[i]);
    s_counter(&o, "flywheel_etcd_txn_ops_total", "Operations in committed etcd txns.",
              m->etcd_txn_ops_total);
    s_counter(&o, "flywheel_client_requests_total", "Client requests handled.",
              m->client_requests_total);
    s_counter(&o, "flywheel_client_errors_total", "Client requests answered with ERROR.",
              m->client_errors_total);
    s_head(&o, "flywheel_bad_frames_total", "counter", "Undecodable frames, by endpoint.");
    s_printf(&o, "flywheel_bad_frames_total{endpoint=\"client\"} %llu\n",
             (unsigned long long)m->bad_frames_total[COORD_EP_CLIENT]);
    s_printf(&o, "flywheel_bad_frames_total{endpoint=\"agent\"} %llu\n",
             (unsigned long long)m->bad_frames_total[COORD_EP_AGENT]);
    s_counter(&o, "flywheel_elections_won_total", "Times this coordinator became leader.",
              m->elections_won_total);
    s_counter(&o, "flywheel_step_downs_total", "Times this coordinator stopped leading.",
              m->step_downs_total);
    s_counter(&o, "flywheel_agents_lost_total", "Agents declared lost (lease gone or silent).",
              m->agents_lost_total);
    s_hist(&o, "flywheel_dispatch_latency_seconds",
           "Time from a task becoming ready to its TASK_ASSIGN being sent (the assignment "
           "committed to etcd first).",
           &m->dispatch_latency);
    s_hist(&o, "flywheel_etcd_txn_duration_seconds", "Duration of one etcd txn.",
           &m->txn_duration);
    if (o.oom) {
        free(o.buf);
        return NULL;
    }
    return o.buf;
}
