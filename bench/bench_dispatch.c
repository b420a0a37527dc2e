/* bench_dispatch - the control plane's dispatch rate, latency and failover.
 *
 * Starts a real etcd (tests/lib/etcd_harness), two flywheel-coordinator
 * processes (election.ttl 2 s) and two flywheel-agent processes on
 * loopback, then measures, as a client on the job submission socket:
 *
 *   1. throughput: one job of BENCH_TASKS `noop` tasks (resources.cpus 0,
 *      so slots never limit placement). Every transition (PENDING ->
 *      ASSIGNED, -> SUCCEEDED) is committed to etcd in fenced txns before
 *      anyone hears of it. tasks/s = tasks / (client sends JOB_SUBMIT ..
 *      client sees the job SUCCEEDED, polling every 20 ms). The leader's /metrics
 *      give ops per txn and the mean txn time, to explain the figure.
 *   2. latency: BENCH_LAT one-task noop jobs, one after the other; for each,
 *      submit (client clock, before sending JOB_SUBMIT) to the task's start
 *      on the agent. A noop task has no process: the agent runs it the
 *      moment TASK_ASSIGN arrives and reports it at once, so its start is
 *      bounded above by finished_at (the leader receiving the result). Same
 *      host, same clock. p50 and p99.
 *   3. failover: a `command` job keeps one task running on each agent; the
 *      leader is SIGKILLed; the client keeps submitting a one-task noop job
 *      to the standby (which redirects until it leads). Failover = the first
 *      task's finished_at (dispatched by the new leader and already run) -
 *      the SIGKILL time. Goal <= 3 s with a 2 s TTL.
 *
 * Output: one JSON line per figure. Environment: BENCH_TASKS (50000),
 * BENCH_LAT (200), FW_COORD_BIN / FW_AGENT_BIN override the binaries. */
#include "etcd_harness.h"
#include "fw_proto.h"
#include "fw_test.h"

#include <czmq.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TOKEN "bench-admin-token"

static int64_t s_wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void s_emit(const char *metric, double value, const char *unit) {
    printf("{\"bench\": \"dispatch\", \"metric\": \"%s\", \"value\": %.6g, \"unit\": \"%s\"}\n",
           metric, value, unit);
    fflush(stdout);
}

/* ------------------------------------------------------------ processes */

static pid_t s_spawn(char *const argv[], const char *log) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the benchmark */
        setpgid(0, 0);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

typedef struct {
    char name[16];
    int client, agent, http;
    char client_ep[64];
    pid_t pid;
} s_coord;

static pid_t s_start_coord(s_coord *c, const char *dir, const char *etcd, const char *bin) {
    char a[16][320];
    int n = 0;
    snprintf(a[n++], 320, "%s", bin);
    snprintf(a[n++], 320, "--coordinator.name=%s", c->name);
    snprintf(a[n++], 320, "--coordinator.client_bind=tcp://127.0.0.1:%d", c->client);
    snprintf(a[n++], 320, "--coordinator.agent_bind=tcp://127.0.0.1:%d", c->agent);
    snprintf(a[n++], 320, "--coordinator.http_bind=127.0.0.1:%d", c->http);
    snprintf(a[n++], 320, "--coordinator.tokens_file=%s/tokens", dir);
    snprintf(a[n++], 320, "--etcd.endpoints=%s", etcd);
    snprintf(a[n++], 320, "--election.ttl=2s");
    snprintf(a[n++], 320, "--coordinator.reconcile_window=5s");
    snprintf(a[n++], 320, "--log.file=%s/%s.log", dir, c->name);
    char *argv[17];
    for (int i = 0; i < n; i++) argv[i] = a[i];
    argv[n] = NULL;
    char log[320];
    snprintf(log, sizeof log, "%s/%s.out", dir, c->name);
    c->pid = s_spawn(argv, log);
    return c->pid;
}

static pid_t s_start_agent(const char *id, const char *dir, const char *etcd, const char *bin) {
    char a[12][320];
    int n = 0;
    snprintf(a[n++], 320, "%s", bin);
    snprintf(a[n++], 320, "--agent.id=%s", id);
    snprintf(a[n++], 320, "--agent.work_dir=%s/%s", dir, id);
    snprintf(a[n++], 320, "--agent.allow_command=true");
    snprintf(a[n++], 320, "--agent.gpu_discovery=false");
    snprintf(a[n++], 320, "--agent.advertise_host=127.0.0.1");
    snprintf(a[n++], 320, "--etcd.endpoints=%s", etcd);
    snprintf(a[n++], 320, "--log.file=%s/%s.log", dir, id);
    char *argv[13];
    for (int i = 0; i < n; i++) argv[i] = a[i];
    argv[n] = NULL;
    char log[320];
    snprintf(log, sizeof log, "%s/%s.out", dir, id);
    return s_spawn(argv, log);
}

/* ------------------------------------------------------------ client */

typedef struct {
    zsock_t *sock;
    uint64_t rid;
} s_client;

static int s_client_open(s_client *cl, const char *ep) {
    cl->sock = zsock_new_dealer(ep);
    if (!cl->sock) return -1;
    zsock_set_rcvtimeo(cl->sock, 5000);
    zsock_set_linger(cl->sock, 0);
    return 0;
}

static void s_client_close(s_client *cl) {
    zsock_destroy(&cl->sock);
}

/* One request, one reply (replies to older requests are skipped). */
static fw_msg_t *s_call(s_client *cl, fw_msg_t *req, int timeout_ms) {
    fw_msg_set_request_id(req, ++cl->rid);
    fw_msg_set_str(req, "token", TOKEN);
    zsock_set_rcvtimeo(cl->sock, timeout_ms);
    if (fw_msg_send(cl->sock, NULL, req) < 0) return NULL;
    for (;;) {
        fw_msg_t *rep = NULL;
        if (fw_msg_recv(cl->sock, NULL, &rep) < 0) return NULL;
        if (fw_msg_request_id(rep) == cl->rid) return rep;
        fw_msg_destroy(&rep);
    }
}

/* Submit spec; the job id (caller frees) or NULL (REDIRECT, ERROR, no answer). */
static char *s_submit(s_client *cl, const char *spec, int timeout_ms) {
    fw_msg_t *m = fw_msg_new(FW_MSG_JOB_SUBMIT);
    fw_msg_set_str(m, "spec", spec);
    fw_msg_t *r = s_call(cl, m, timeout_ms);
    fw_msg_destroy(&m);
    char *id = NULL;
    if (r && fw_msg_id(r) == FW_MSG_JOB_SUBMITTED) id = strdup(fw_msg_get_str(r, "job_id"));
    fw_msg_destroy(&r);
    return id;
}

static json_t *s_doc(s_client *cl, int id, const char *job, int timeout_ms) {
    fw_msg_t *m = fw_msg_new(id);
    fw_msg_set_str(m, "job_id", job);
    if (id == FW_MSG_TASK_LIST) fw_msg_set_uint(m, "limit", 10000);
    fw_msg_t *r = s_call(cl, m, timeout_ms);
    fw_msg_destroy(&m);
    json_t *doc = NULL;
    if (r && (fw_msg_id(r) == FW_MSG_JOB_GET_REPLY || fw_msg_id(r) == FW_MSG_TASK_LIST_REPLY))
        doc = json_loads(fw_msg_get_str(r, "doc"), 0, NULL);
    fw_msg_destroy(&r);
    return doc;
}

/* Poll the job until it is terminal; its document (caller decrefs) or NULL. */
static json_t *s_wait_job(s_client *cl, const char *job, int timeout_ms, int poll_ms) {
    int64_t deadline = s_wall_ms() + timeout_ms;
    while (s_wall_ms() < deadline) {
        json_t *d = s_doc(cl, FW_MSG_JOB_GET, job, 5000);
        const char *st = json_string_value(json_object_get(d, "state"));
        if (st && (!strcmp(st, "SUCCEEDED") || !strcmp(st, "FAILED") || !strcmp(st, "CANCELLED")))
            return d;
        json_decref(d);
        zclock_sleep(poll_ms);
    }
    return NULL;
}

static int64_t s_jint(json_t *o, const char *k) {
    return json_integer_value(json_object_get(o, k));
}

/* ------------------------------------------------------------ metrics */

static size_t s_curl_write(char *p, size_t sz, size_t n, void *arg) {
    char **buf = arg;
    size_t old = *buf ? strlen(*buf) : 0;
    char *b = realloc(*buf, old + sz * n + 1);
    if (!b) return 0;
    memcpy(b + old, p, sz * n);
    b[old + sz * n] = '\0';
    *buf = b;
    return sz * n;
}

/* Value of a metric line starting with `name` (labels included), or -1. */
static double s_metric(int port, const char *name) {
    char url[64], *buf = NULL;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", port);
    CURL *h = curl_easy_init();
    if (!h) return -1;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, s_curl_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &buf);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 3000L);
    CURLcode rc = curl_easy_perform(h);
    curl_easy_cleanup(h);
    double v = -1;
    if (rc == CURLE_OK && buf) {
        size_t nl = strlen(name);
        for (char *line = buf; line && *line;
             line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
            if (strncmp(line, name, nl) == 0 && line[nl] == ' ') {
                v = strtod(line + nl + 1, NULL);
                break;
            }
    }
    free(buf);
    return v;
}

static bool s_ready(int port) {
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/readyz", port);
    CURL *h = curl_easy_init();
    char *buf = NULL;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, s_curl_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &buf);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 1000L);
    long code = 0;
    if (curl_easy_perform(h) == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(h);
    free(buf);
    return code == 200;
}

static int s_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ------------------------------------------------------------ main */

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    zsys_handler_set(NULL);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const char *coord_bin = getenv("FW_COORD_BIN") ? getenv("FW_COORD_BIN") : FW_COORD_BIN;
    const char *agent_bin = getenv("FW_AGENT_BIN") ? getenv("FW_AGENT_BIN") : FW_AGENT_BIN;
    int ntasks = getenv("BENCH_TASKS") ? atoi(getenv("BENCH_TASKS")) : 50000;
    int nlat = getenv("BENCH_LAT") ? atoi(getenv("BENCH_LAT")) : 200;
    if (ntasks < 1) ntasks = 1;
    if (nlat < 2) nlat = 2;

    fw_etcd_harness *h = fw_etcd_harness_new(1);
    if (!h) {
        fprintf(stderr, "bench_dispatch: cannot start etcd\n");
        return 1;
    }
    char *dir = fw_test_tmpdir("bench_dispatch");
    char path[512];
    snprintf(path, sizeof path, "%s/tokens", dir);
    FILE *f = fopen(path, "w");
    if (!f) return 1;
    fprintf(f, "%s bench admin\n", TOKEN);
    fclose(f);
    const char *etcd = fw_etcd_harness_endpoints(h);

    s_coord co[2];
    memset(co, 0, sizeof co);
    for (int i = 0; i < 2; i++) {
        snprintf(co[i].name, sizeof co[i].name, "c%d", i + 1);
        co[i].client = fw_test_free_port();
        co[i].agent = fw_test_free_port();
        co[i].http = fw_test_free_port();
        snprintf(co[i].client_ep, sizeof co[i].client_ep, "tcp://127.0.0.1:%d", co[i].client);
    }
    /* c1 first, so that it leads; c2 waits as the standby. */
    s_start_coord(&co[0], dir, etcd, coord_bin);
    for (int i = 0; i < 100 && !s_ready(co[0].http); i++) zclock_sleep(50);
    s_start_coord(&co[1], dir, etcd, coord_bin);
    pid_t agents[2];
    agents[0] = s_start_agent("a1", dir, etcd, agent_bin);
    agents[1] = s_start_agent("a2", dir, etcd, agent_bin);
    int rc = 1;
    s_client cl = {0}, cl2 = {0};
    if (s_client_open(&cl, co[0].client_ep) < 0 || s_client_open(&cl2, co[1].client_ep) < 0)
        goto out;
    /* Wait for both agents to be connected to the leader. */
    for (int i = 0; i < 200 && s_metric(co[0].http, "flywheel_agents{state=\"connected\"}") < 2;
         i++)
        zclock_sleep(50);

    /* 1. throughput */
    {
        double ops0 = s_metric(co[0].http, "flywheel_etcd_txn_ops_total");
        double txn0 = s_metric(co[0].http, "flywheel_etcd_txn_total{result=\"ok\"}");
        double dur0 = s_metric(co[0].http, "flywheel_etcd_txn_duration_seconds_sum");
        char spec[128];
        snprintf(spec, sizeof spec, "{\"kind\":\"noop\",\"shards\":%d,\"resources\":{\"cpus\":0}}",
                 ntasks);
        int64_t t0 = s_wall_ms();
        char *job = s_submit(&cl, spec, 30000);
        s_emit("noop_submit_ack_ms", (double)(s_wall_ms() - t0), "ms");
        if (!job) {
            fprintf(stderr, "bench_dispatch: submit failed (see %s)\n", dir);
            goto out;
        }
        json_t *d = s_wait_job(&cl, job, 120000, 20);
        int64_t t1 = s_wall_ms();
        if (!d) {
            fprintf(stderr, "bench_dispatch: job %s did not finish\n", job);
            free(job);
            goto out;
        }
        /* The client's view: from sending JOB_SUBMIT to seeing the job's
         * terminal state, which the leader shows only once committed (the
         * job record is written after its last task's). The leader's own
         * submitted_at..finished_at span ends when the last result is
         * accepted in memory, before its commit, so it flatters. */
        double wall = (double)(t1 - t0) / 1e3;
        double span = (double)(s_jint(d, "finished_at") - s_jint(d, "submitted_at")) / 1e3;
        double ops = s_metric(co[0].http, "flywheel_etcd_txn_ops_total") - ops0;
        double txns = s_metric(co[0].http, "flywheel_etcd_txn_total{result=\"ok\"}") - txn0;
        double dur = s_metric(co[0].http, "flywheel_etcd_txn_duration_seconds_sum") - dur0;
        s_emit("noop_tasks_per_s", ntasks / wall, "tasks/s");
        s_emit("noop_job_wall_s", wall, "s");
        if (span > 0) s_emit("noop_tasks_per_s_leader_span", ntasks / span, "tasks/s");
        if (txns > 0) {
            s_emit("etcd_ops_per_txn", ops / txns, "ops");
            s_emit("etcd_txn_mean_ms", dur / txns * 1e3, "ms");
            s_emit("etcd_txns_per_s", txns / wall, "txn/s");
            s_emit("etcd_ops_per_task", ops / ntasks, "ops");
        }
        json_decref(d);
        free(job);
    }

    /* 2. latency: one-task jobs, one at a time */
    {
        double *lat = calloc((size_t)nlat, sizeof *lat);
        int n = 0;
        for (int i = 0; i < nlat; i++) {
            int64_t t0 = s_wall_ms();
            char *job =
                s_submit(&cl, "{\"kind\":\"noop\",\"shards\":1,\"resources\":{\"cpus\":0}}", 5000);
            if (!job) continue;
            json_t *d = s_wait_job(&cl, job, 10000, 1);
            json_t *tasks = d ? s_doc(&cl, FW_MSG_TASK_LIST, job, 5000) : NULL;
            json_t *t = json_array_get(tasks, 0);
            int64_t start = s_jint(t, "finished_at");
            if (start > 0) lat[n++] = (double)(start - t0);
            json_decref(tasks);
            json_decref(d);
            free(job);
        }
        if (n > 0) {
            qsort(lat, (size_t)n, sizeof *lat, s_cmp);
            s_emit("submit_to_start_p50_ms", lat[(n - 1) / 2], "ms");
            s_emit("submit_to_start_p99_ms", lat[(int)((n - 1) * 0.99)], "ms");
        }
        free(lat);
    }

    /* 3. failover */
    {
        char *busy = s_submit(&cl,
                              "{\"kind\":\"command\",\"shards\":2,\"resources\":{\"cpus\":2},"
                              "\"command\":[\"sleep\",\"60\"]}",
                              5000);
        /* Let both tasks start, so the new leader has running tasks to keep. */
        for (int i = 0; i < 100; i++) {
            json_t *d = busy ? s_doc(&cl, FW_MSG_JOB_GET, busy, 5000) : NULL;
            int64_t running = s_jint(json_object_get(d, "tasks"), "RUNNING");
            json_decref(d);
            if (running == 2) break;
            zclock_sleep(50);
        }
        kill(co[0].pid, SIGKILL);
        int64_t killed = s_wall_ms();
        waitpid(co[0].pid, NULL, 0);
        char *job = NULL;
        while (!job && s_wall_ms() - killed < 30000) {
            job =
                s_submit(&cl2, "{\"kind\":\"noop\",\"shards\":1,\"resources\":{\"cpus\":0}}", 1000);
            if (!job) zclock_sleep(20);
        }
        json_t *d = job ? s_wait_job(&cl2, job, 20000, 5) : NULL;
        json_t *tasks = d ? s_doc(&cl2, FW_MSG_TASK_LIST, job, 5000) : NULL;
        int64_t first = s_jint(json_array_get(tasks, 0), "finished_at");
        json_t *bd = busy ? s_doc(&cl2, FW_MSG_JOB_GET, busy, 5000) : NULL;
        int64_t kept = s_jint(json_object_get(bd, "tasks"), "RUNNING");
        if (first > 0) {
            s_emit("failover_s", (double)(first - killed) / 1e3, "s");
            s_emit("failover_running_tasks_kept", (double)kept, "tasks");
        } else {
            fprintf(stderr, "bench_dispatch: no task ran after the failover (see %s)\n", dir);
        }
        json_decref(bd);
        json_decref(tasks);
        json_decref(d);
        free(job);
        free(busy);
    }
    rc = 0;
out:
    s_client_close(&cl);
    s_client_close(&cl2);
    for (int i = 0; i < 2; i++)
        if (co[i].pid > 0) kill(co[i].pid, SIGKILL);
    for (int i = 0; i < 2; i++)
        if (agents[i] > 0) kill(-agents[i], SIGKILL); /* the agent (its tasks die with it) */
    for (int i = 0; i < 2; i++) {
        if (co[i].pid > 0) waitpid(co[i].pid, NULL, 0);
        if (agents[i] > 0) waitpid(agents[i], NULL, 0);
    }
    fw_etcd_harness_destroy(&h);
    if (rc == 0) fw_test_rmtree(dir);
    free(dir);
    curl_global_cleanup();
    return rc;
}
