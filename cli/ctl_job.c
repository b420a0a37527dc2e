/* ctl_job.c - `flywheelctl job submit|list|show|cancel|logs|wait`.
 *
 * Theory of operation for the two commands that outlive one request:
 *
 * job wait polls JOB_GET (200 ms growing to 1 s) until the job is terminal
 * or --timeout passes. A coordinator that does not answer, or answers "no
 * leader yet", is a passing condition during a failover: the loop keeps
 * asking (every endpoint, following redirects) until its own deadline. Only
 * answers that cannot change by waiting (unknown job, bad token) end it
 * early, with exit code 4.
 *
 * job logs reads each task's log through the leader (LOG_STREAM -> the
 * agent that ran it), from the offset it has printed so far, one chunk per
 * request until a chunk comes back empty or with eof. With -f it repeats
 * that pass every half second for the tasks not finished yet, so it follows
 * every shard of a job, survives a leader failover (the logs live on the
 * agents) and ends when every task is terminal and its log is read to the
 * end. A retried task's log restarts with its new attempt, after a marker
 * line. With more than one task every line is prefixed with "[task-id] ".
 *
 * job show prints the record as "key: value" lines, except the parts of an
 * ML job that read better as tables: the result (a fine-tune's new model,
 * an embed's matrix, an eval's metrics per model), the last complete
 * checkpoint, the restarts from checkpoints, and the loss curve reduced to
 * about a dozen rows (first step, every ~10%, last step). -o json prints
 * the whole record, curve included. */
#include "ctl.h"

#include "fw_err.h"
#include "fw_time.h"

#include <czmq.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CTL_LOG_PASS_MS     500
#define CTL_LOG_MAX_ERRORS  20  /* consecutive failed reads of a running task before giving up */
#define CTL_LOG_MAX_CHUNKS  256 /* requests per task and pass: 256 x the agent's chunk size */

/* 0 succeeded, 1 failed, 2 cancelled, -1 not terminal. */
static int s_terminal_code(const char *state) {
    if (!strcasecmp(state, "SUCCEEDED")) return CTL_EXIT_OK;
    if (!strcasecmp(state, "FAILED")) return CTL_EXIT_FAILED;
    if (!strcasecmp(state, "CANCELLED") || !strcasecmp(state, "CANCELED"))
        return CTL_EXIT_CANCELLED;
    return -1;
}

static bool s_task_terminal(const char *state) { return s_terminal_code(state) >= 0; }

/* ------------------------------------------------------------------ get */

/* JOB_GET without printing errors: 0 and *doc, or the fw_err. */
static int s_get(ctl_t *c, const char *job_id, json_t **doc) {
    *doc = NULL;
    fw_msg_t *req = ctl_request(c, FW_MSG_JOB_GET), *reply = NULL;
    if (!req) return FW_ENOMEM;
    if (fw_msg_set_str(req, "job_id", job_id) < 0) {
        fw_msg_destroy(&req);
        return fw_err_set(FW_EINVAL, "job id '%s': %s", job_id, fw_err_detail());
    }
    int rc = ctl_conn_call(c->conn, req, &reply);
    fw_msg_destroy(&req);
    if (rc < 0) return rc;
    const char *text = fw_msg_get_str(reply, "doc");
    json_error_t e;
    *doc = text ? json_loads(text, 0, &e) : NULL;
    fw_msg_destroy(&reply);
    if (!*doc || !json_is_object(*doc)) {
        json_decref(*doc);
        *doc = NULL;
        return fw_err_set(FW_EPROTO, "JOB_GET_REPLY: doc is not a JSON object");
    }
    return 0;
}

static bool s_transient(int rc) {
    return rc == FW_ETIMEDOUT || rc == FW_EUNAVAIL || rc == FW_ENOTLEADER || rc == FW_EIO ||
           rc == FW_ECLOSED;
}

static void s_print_final(ctl_t *c, const char *job_id, const json_t *doc) {
    if (c->output == CTL_OUT_JSON) ctl_print_json(doc);
    else printf("job %s %s\n", job_id, ctl_str(doc, "state"));
}

int ctl_job_wait_loop(ctl_t *c, const char *job_id, int64_t timeout_ms, bool quiet) {
    int64_t deadline = timeout_ms >= 0 ? fw_deadline_ms(timeout_ms) : 0;
    int64_t pause = 200;
    bool noted = false;
    char last_state[64] = "unknown";
    for (;;) {
        json_t *doc = NULL;
        int rc = s_get(c, job_id, &doc);
        if (rc == 0) {
            noted = false;
            snprintf(last_state, sizeof last_state, "%s", ctl_str(doc, "state"));
            int code = s_terminal_code(last_state);
            if (code >= 0) {
                if (!quiet || c->output == CTL_OUT_TABLE) s_print_final(c, job_id, doc);
                json_decref(doc);
                return code;
            }
            json_decref(doc);
        } else if (s_transient(rc)) {
            /* Say once that we are waiting out an outage, not hanging. */
            if (!noted)
                fprintf(stderr, "%s: %s; still waiting for job %s\n", c->prog, fw_err_detail(),
                        job_id);
            noted = true;
        } else {
            ctl_errorf(c, "job %s: %s (%s)", job_id, fw_err_detail(), fw_errname(rc));
            return CTL_EXIT_UNKNOWN;
        }
        if (timeout_ms >= 0 && fw_remaining_ms(deadline) <= 0) {
            char tb[32];
            ctl_format_duration(timeout_ms, tb, sizeof tb);
            ctl_errorf(c, "job %s still %s after %s (--timeout)", job_id, last_state, tb);
            return CTL_EXIT_TIMEOUT;
        }
        int64_t sleep_ms = pause;
        if (timeout_ms >= 0 && fw_remaining_ms(deadline) < sleep_ms)
            sleep_ms = fw_remaining_ms(deadline);
        fw_sleep_ms(sleep_ms);
        if (pause < 1000) pause = pause * 3 / 2;
    }
}

/* --------------------------------------------------------------- submit */

static int s_cmd_submit(ctl_t *c) {
    json_t *spec = ctl_spec_load(c->argv[0]);
    if (!spec) return ctl_errorf(c, "%s", fw_err_detail());
    char *text = json_dumps(spec, JSON_COMPACT | JSON_REAL_PRECISION(17));
    json_decref(spec);
    if (!text) return ctl_errorf(c, "out of memory");
    int64_t wait_ms = -1;
    const char *wt = ctl_flag(c, "wait-timeout");
    if (wt && (ctl_parse_duration(wt, &wait_ms) < 0 || wait_ms < 0)) {
        free(text);
        ctl_errorf(c, "--wait-timeout %s: expected a duration (30, 30s, 5m)", wt);
        return CTL_EXIT_USAGE;
    }
    if (ctl_connect(c) < 0) {
        free(text);
        return CTL_EXIT_ERROR;
    }
    fw_msg_t *req = ctl_request(c, FW_MSG_JOB_SUBMIT), *reply = NULL;
    if (!req) {
        free(text);
        return CTL_EXIT_ERROR;
    }
    int rc = fw_msg_set_str(req, "spec", text);
    free(text);
    if (rc < 0) {
        fw_msg_destroy(&req);
        return ctl_errorf(c, "spec: %s", fw_err_detail());
    }
    /* One key per invocation: when a request times out and is resent to
     * another coordinator (or the same after a failover), the leader returns
     * the job the first attempt created instead of creating a second. */
    const char *key = ctl_flag(c, "idempotency-key");
    zuuid_t *uuid = NULL;
    char keybuf[64];
    if (!key) {
        uuid = zuuid_new();
        snprintf(keybuf, sizeof keybuf, "ctl-%s", uuid ? zuuid_str(uuid) : "nouuid");
        zuuid_destroy(&uuid);
        key = keybuf;
    }
    if (fw_msg_set_str(req, "idempotency_key", key) < 0) {
        fw_msg_destroy(&req);
        return ctl_errorf(c, "--idempotency-key: %s", fw_err_detail());
    }
    rc = ctl_call(c, req, &reply);
    fw_msg_destroy(&req);
    if (rc < 0) return CTL_EXIT_ERROR;
    char job_id[160];
    snprintf(job_id, sizeof job_id, "%s", fw_msg_get_str(reply, "job_id"));
    fw_msg_destroy(&reply);
    bool wait = ctl_flag_on(c, "wait");
    if (c->output == CTL_OUT_TABLE || !wait) {
        if (c->output == CTL_OUT_JSON) {
            json_t *o = json_pack("{s:s}", "id", job_id);
            ctl_print_json(o);
            json_decref(o);
        } else {
            printf("%s\n", job_id);
        }
    }
    if (!wait) return CTL_EXIT_OK;
    fflush(stdout);
    if (c->output == CTL_OUT_JSON) {
        /* One JSON document: {"id": ..., "state": ..., "job": {...}}. */
        int code;
        json_t *doc = NULL;
        code = ctl_job_wait_loop(c, job_id, wait_ms, true);
        if (code != CTL_EXIT_UNKNOWN && s_get(c, job_id, &doc) == 0) {
            json_t *o = json_pack("{s:s,s:s,s:O}", "id", job_id, "state", ctl_str(doc, "state"),
                                  "job", doc);
            ctl_print_json(o);
            json_decref(o);
            json_decref(doc);
        }
        return code;
    }
    return ctl_job_wait_loop(c, job_id, wait_ms, false);
}

/* ----------------------------------------------------------------- list */

static void s_fill_state(fw_msg_t *req, void *arg) {
    if (arg) fw_msg_set_str(req, "state", arg);
}

/* "done/total" from the job's task counts when it has them. */
static const char *s_progress(const json_t *j, char *buf, size_t size) {
    json_t *total = ctl_get_any(j, "shards", "world_size", "ntasks", "spec.shards",
                                "spec.world_size", NULL);
    json_t *counts = ctl_get_any(j, "counts", "task_counts", "tasks", NULL);
    char tb[32];
    if (json_is_object(counts)) {
        long long done = 0, all = 0;
        const char *k;
        json_t *v;
        json_object_foreach(counts, k, v) {
            all += json_integer_value(v);
            if (s_task_terminal(k)) done += json_integer_value(v);
        }
        if (json_is_integer(total)) all = json_integer_value(total);
        snprintf(buf, size, "%lld/%lld", done, all);
        return buf;
    }
    if (!total) return "-";
    snprintf(buf, size, "%s", ctl_cell(total, tb, sizeof tb));
    return buf;
}

/* One row of the list table. */
static void s_list_row(ctl_table_t *t, json_t *j) {
    char tasks[64], prio[32], age[32];
    const char *row[7] = {
        ctl_str(j, "id"),
        *ctl_str(j, "kind") ? ctl_str(j, "kind") : ctl_str(j, "spec.kind"),
        ctl_str(j, "state"),
        s_progress(j, tasks, sizeof tasks),
        ctl_cell(ctl_get_any(j, "priority", "spec.priority", NULL), prio, sizeof prio),
        *ctl_str(j, "owner") ? ctl_str(j, "owner") : "-",
        ctl_age(ctl_get(j, "submitted_at"), age, sizeof age)};
    ctl_table_add(t, row);
}

static int s_cmd_list(ctl_t *c) {
    if (ctl_connect(c) < 0) return CTL_EXIT_ERROR;
    int err;
    json_t *jobs = ctl_list_all(c, FW_MSG_JOB_LIST, s_fill_state, (void *)ctl_flag(c, "state"),
                                &err);
    if (!jobs) return CTL_EXIT_ERROR;
    static const char *const hdr[] = {"ID", "KIND", "STATE", "TASKS", "PRIORITY", "OWNER", "AGE"};
    return ctl_print_list(c, jobs, 7, hdr, s_list_row);
}

/* ----------------------------------------------------------------- show */

#define S_CURVE_ROWS 10 /* curve rows between the first and the last step */

/* An eval job's result: one row per model with its metrics. */
static void s_print_eval_result(const json_t *res) {
    printf("result: eval on %s\n", ctl_str(res, "dataset"));
    static const char *const hdr[] = {"MODEL", "RECORDS", "LOSS", "PERPLEXITY", "EXACT",
                                      "ACCURACY", "SCORES"};
    ctl_table_t *t = ctl_table_new(7, hdr);
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(res, "results"), i, r) {
        char recs[32], l[32], p[32], em[32], acc[32];
        const json_t *m = json_object_get(r, "metrics");
        const char *row[] = {ctl_str(r, "model"),
                             ctl_cell(json_object_get(r, "records"), recs, sizeof recs),
                             ctl_num(json_object_get(m, "loss"), l, sizeof l),
                             ctl_num(json_object_get(m, "perplexity"), p, sizeof p),
                             ctl_num(json_object_get(m, "exact_match"), em, sizeof em),
                             ctl_num(json_object_get(m, "accuracy"), acc, sizeof acc),
                             ctl_str(r, "scores")};
        ctl_table_add(t, row);
    }
    ctl_table_print(t, stdout);
    ctl_table_destroy(&t);
}

/* The loss curve ([[step, loss], ...]) as a short table: the first point,
 * one every ~10% of the points, the last. */
static void s_print_curve(const json_t *curve) {
    size_t n = json_array_size(curve);
    printf("curve (%zu points):\n", n);
    static const char *const hdr[] = {"STEP", "LOSS"};
    ctl_table_t *t = ctl_table_new(2, hdr);
    /* Point k*(n-1)/ROWS for k = 0..ROWS: the first, every ~10%, the last. */
    size_t prev = (size_t)-1;
    for (size_t k = 0; n && k <= S_CURVE_ROWS; k++) {
        size_t i = (size_t)(((double)k * (double)(n - 1)) / S_CURVE_ROWS + 0.5);
        if (i == prev) continue;
        prev = i;
        const json_t *pt = json_array_get(curve, i);
        char st[32], l[32];
        const char *row[] = {ctl_cell(json_array_get(pt, 0), st, sizeof st),
                             ctl_num(json_array_get(pt, 1), l, sizeof l)};
        ctl_table_add(t, row);
    }
    ctl_table_print(t, stdout);
    ctl_table_destroy(&t);
}

static void s_print_show(const json_t *doc) {
    json_t *rest = json_deep_copy(doc);
    static const char *const ml[] = {"result", "curve", "checkpoint", "resumed"};
    for (size_t i = 0; i < sizeof ml / sizeof ml[0]; i++) json_object_del(rest, ml[i]);
    ctl_print_object(rest, "");
    json_decref(rest);
    const json_t *res = json_object_get(doc, "result");
    if (json_is_object(res) && json_object_get(res, "results")) {
        printf("\n");
        s_print_eval_result(res);
    } else if (json_is_object(res) && json_object_size(res)) {
        printf("\n");
        ctl_print_object(res, "result");
    }
    const json_t *ck = json_object_get(doc, "checkpoint");
    if (json_is_object(ck)) {
        char st[32], age[32];
        printf("\ncheckpoint: step %s %s (%s ago)\n",
               ctl_cell(json_object_get(ck, "step"), st, sizeof st), ctl_str(ck, "digest"),
               ctl_age(json_object_get(ck, "at"), age, sizeof age));
    }
    const json_t *rs = json_object_get(doc, "resumed");
    if (json_array_size(rs)) {
        printf("\nresumed:");
        size_t i;
        json_t *r;
        json_array_foreach(rs, i, r) {
            char a[32], st[32];
            printf("%s attempt %s from step %s", i ? "," : "",
                   ctl_cell(json_object_get(r, "attempt"), a, sizeof a),
                   ctl_cell(json_object_get(r, "step"), st, sizeof st));
        }
        printf("\n");
    }
    const json_t *curve = json_object_get(doc, "curve");
    if (json_array_size(curve)) {
        printf("\n");
        s_print_curve(curve);
    }
}

static int s_cmd_show(ctl_t *c) {
    if (ctl_connect(c) < 0) return CTL_EXIT_ERROR;
    json_t *doc = NULL;
    int rc = s_get(c, c->argv[0], &doc);
    if (rc < 0) {
        if (rc == FW_EAUTH || rc == FW_EPERM)
            return ctl_errorf(c, "%s: %s (%s)", fw_strerror(rc), fw_err_detail(), fw_errname(rc));
        return ctl_errorf(c, "%s (%s)", fw_err_detail(), fw_errname(rc));
    }
    if (c->output == CTL_OUT_JSON) ctl_print_json(doc);
    else s_print_show(doc);
    json_decref(doc);
    return CTL_EXIT_OK;
}

/* --------------------------------------------------------------- cancel */

static int s_cmd_cancel(ctl_t *c) {
    if (ctl_connect(c) < 0) return CTL_EXIT_ERROR;
    fw_msg_t *req = ctl_request(c, FW_MSG_JOB_CANCEL);
    if (!req) return CTL_EXIT_ERROR;
    if (fw_msg_set_str(req, "job_id", c->argv[0]) < 0) {
        fw_msg_destroy(&req);
        return ctl_errorf(c, "job id '%s': %s", c->argv[0], fw_err_detail());
    }
    const char *reason = ctl_flag(c, "reason");
    if (reason && fw_msg_set_str(req, "reason", reason) < 0) {
        fw_msg_destroy(&req);
        return ctl_errorf(c, "--reason: %s", fw_err_detail());
    }
    json_t *doc = ctl_call_doc(c, &req, NULL);
    if (!doc) return CTL_EXIT_ERROR;
    if (c->output == CTL_OUT_JSON) ctl_print_json(doc);
    else printf("job %s cancelled (state %s)\n", c->argv[0],
                *ctl_str(doc, "state") ? ctl_str(doc, "state") : "?");
    json_decref(doc);
    return CTL_EXIT_OK;
}

/* ----------------------------------------------------------------- wait */

static int s_cmd_wait(ctl_t *c) {
    int64_t timeout_ms = -1;
    const char *t = ctl_flag(c, "timeout");
    if (t && ctl_parse_duration(t, &timeout_ms) < 0) {
        ctl_errorf(c, "--timeout %s: expected seconds or a duration (30, 30s, 5m)", t);
        return CTL_EXIT_USAGE;
    }
    if (ctl_connect(c) < 0) return CTL_EXIT_UNKNOWN;
    return ctl_job_wait_loop(c, c->argv[0], timeout_ms, false);
}

/* ----------------------------------------------------------------- logs */

typedef struct {
    char id[160];
    uint64_t attempt; /* attempt being read; 0 before the first */
    uint64_t offset;  /* bytes of it printed */
    bool done;
    int errors;
    char *partial; /* an unfinished line (prefix mode) */
    size_t plen;
} s_logtask;

typedef struct {
    ctl_t *c;
    bool prefix;
    unsigned stream;
    s_logtask *t;
    size_t n;
} s_logs;

/* Text safe for a JSON string: invalid UTF-8 bytes become U+FFFD. */
static json_t *s_json_text(const char *p, size_t n) {
    json_t *v = json_stringn(p, n);
    if (v) return v;
    char *out = malloc(n * 3 + 1);
    if (!out) return json_string("");
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch < 0x80 && ch != 0) out[o++] = (char)ch;
        else {
            json_t *one = NULL;
            size_t len = ch >= 0xf0 ? 4 : ch >= 0xe0 ? 3 : ch >= 0xc0 ? 2 : 1;
            if (len > 1 && i + len <= n) one = json_stringn(p + i, len);
            if (one) {
                memcpy(out + o, p + i, len);
                o += len;
                i += len - 1;
                json_decref(one);
            } else {
                memcpy(out + o, "\xef\xbf\xbd", 3);
                o += 3;
            }
        }
    }
    v = json_stringn(out, o);
    free(out);
    return v ? v : json_string("");
}

static void s_emit(s_logs *L, s_logtask *t, const char *data, size_t n) {
    if (L->c->output == CTL_OUT_JSON) {
        json_t *o = json_pack("{s:s,s:I,s:I,s:o}", "task", t->id, "attempt",
                              (json_int_t)t->attempt, "offset", (json_int_t)t->offset, "data",
                              s_json_text(data, n));
        char *s = json_dumps(o, JSON_COMPACT);
        if (s) printf("%s\n", s);
        free(s);
        json_decref(o);
        return;
    }
    if (!L->prefix) {
        fwrite(data, 1, n, stdout);
        return;
    }
    /* Whole lines only, each with its task; the rest waits for its newline. */
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        if (data[i] != '\n') continue;
        printf("[%s] ", t->id);
        if (t->plen) fwrite(t->partial, 1, t->plen, stdout);
        fwrite(data + start, 1, i - start + 1, stdout);
        t->plen = 0;
        start = i + 1;
    }
    if (start < n) {
        char *p = realloc(t->partial, t->plen + n - start);
        if (p) {
            memcpy(p + t->plen, data + start, n - start);
            t->partial = p;
            t->plen += n - start;
        }
    }
}

static void s_flush(s_logs *L, s_logtask *t) {
    if (t->plen && L->prefix && L->c->output == CTL_OUT_TABLE) {
        printf("[%s] ", t->id);
        fwrite(t->partial, 1, t->plen, stdout);
        fputc('\n', stdout);
    }
    t->plen = 0;
}

/* Read what is new of one task's current attempt. */
static void s_read_task(s_logs *L, s_logtask *t, const char *state, bool follow) {
    bool terminal = s_task_terminal(state);
    for (int k = 0; k < CTL_LOG_MAX_CHUNKS; k++) {
        fw_msg_t *req = ctl_request(L->c, FW_MSG_LOG_STREAM), *reply = NULL;
        if (!req) return;
        fw_msg_set_str(req, "task_id", t->id);
        fw_msg_set_uint(req, "attempt", t->attempt);
        fw_msg_set_uint(req, "stream", L->stream);
        fw_msg_set_uint(req, "offset", t->offset);
        int rc = ctl_conn_call(L->c->conn, req, &reply);
        fw_msg_destroy(&req);
        if (rc < 0) {
            /* Gone for good (agent lost with its disk, log rotated away) or
             * just not reachable now (failover): only a running task is
             * worth asking again, and not forever. */
            if (!follow || terminal || ++t->errors > CTL_LOG_MAX_ERRORS || rc == FW_EAUTH ||
                rc == FW_EPERM) {
                s_flush(L, t);
                fprintf(stderr, "%s: log of %s (attempt %llu) unavailable: %s (%s)\n",
                        L->c->prog, t->id, (unsigned long long)t->attempt, fw_err_detail(),
                        fw_errname(rc));
                t->done = true;
            }
            return;
        }
        t->errors = 0;
        size_t len = 0;
        const char *data = fw_msg_get_bin(reply, "data", &len);
        uint64_t off = fw_msg_get_uint(reply, "offset");
        bool eof = fw_msg_get_bool(reply, "eof");
        /* Print only bytes past what is printed already: a coordinator that
         * answers with overlapping ranges cannot duplicate output. */
        if (off <= t->offset && off + len > t->offset) {
            size_t skip = (size_t)(t->offset - off);
            s_emit(L, t, data + skip, len - skip);
            t->offset = off + len;
        }
        fw_msg_destroy(&reply);
        if (eof || len == 0) {
            /* A terminal task's log is complete at eof; an empty read of a
             * terminal task means there is nothing more either. */
            if (terminal) {
                s_flush(L, t);
                t->done = true;
            }
            return;
        }
    }
}

static s_logtask *s_find_task(s_logs *L, size_t hint, const char *id) {
    if (hint < L->n && strcmp(L->t[hint].id, id) == 0) return &L->t[hint];
    for (size_t i = 0; i < L->n; i++)
        if (strcmp(L->t[i].id, id) == 0) return &L->t[i];
    s_logtask *nt = realloc(L->t, (L->n + 1) * sizeof *nt);
    if (!nt) return NULL;
    L->t = nt;
    memset(&L->t[L->n], 0, sizeof *L->t);
    snprintf(L->t[L->n].id, sizeof L->t[L->n].id, "%s", id);
    return &L->t[L->n++];
}

static int s_cmd_logs(ctl_t *c) {
    const char *arg = c->argv[0];
    bool follow = ctl_flag_on(c, "follow");
    const char *st = ctl_flag(c, "stream");
    unsigned stream = 0;
    if (st) {
        if (!strcmp(st, "stdout") || !strcmp(st, "0")) stream = 0;
        else if (!strcmp(st, "stderr") || !strcmp(st, "1")) stream = 1;
        else if (!strcmp(st, "agent") || !strcmp(st, "2")) stream = 2;
        else {
            ctl_errorf(c, "--stream %s: expected stdout, stderr or agent", st);
            return CTL_EXIT_USAGE;
        }
    }
    /* "j-000042" is a job, "j-000042.17" one of its tasks. */
    char job_id[160], only_task[160] = "";
    snprintf(job_id, sizeof job_id, "%s", arg);
    char *dot = strchr(job_id, '.');
    if (dot) {
        snprintf(only_task, sizeof only_task, "%s", arg);
        *dot = '\0';
    }
    if (ctl_connect(c) < 0) return CTL_EXIT_ERROR;
    s_logs L = {.c = c, .stream = stream};
    int rc = CTL_EXIT_OK;
    int outage = 0;
    for (;;) {
        int err;
        json_t *tasks = ctl_tasks_of(c, job_id, NULL, &err);
        if (!tasks) {
            /* During a failover the task list is briefly unavailable. */
            if (follow && s_transient(err) && ++outage <= CTL_LOG_MAX_ERRORS) {
                fw_sleep_ms(CTL_LOG_PASS_MS);
                continue;
            }
            rc = CTL_EXIT_ERROR;
            break;
        }
        outage = 0;
        if (json_array_size(tasks) == 0 && !only_task[0]) {
            /* No tasks listed: an unknown job should say so, not hang. */
            json_t *doc = NULL;
            int grc = s_get(c, job_id, &doc);
            json_decref(doc);
            if (grc < 0) {
                json_decref(tasks);
                rc = ctl_errorf(c, "%s (%s)", fw_err_detail(), fw_errname(grc));
                break;
            }
        }
        L.prefix = !only_task[0] && json_array_size(tasks) > 1;
        size_t i, open = 0, matched = 0;
        json_t *task;
        json_array_foreach(tasks, i, task) {
            char idb[160];
            const char *id = ctl_task_id(task, idb, sizeof idb);
            if (only_task[0] && strcmp(id, only_task) != 0) continue;
            matched++;
            s_logtask *t = s_find_task(&L, i, id);
            if (!t || t->done) continue;
            const char *state = ctl_str(task, "state");
            uint64_t attempt = (uint64_t)json_integer_value(ctl_get(task, "attempt"));
            if (attempt == 0) {
                /* Never placed: nothing to read; done if it will never run. */
                if (s_task_terminal(state)) t->done = true;
                else open++;
                continue;
            }
            if (attempt != t->attempt) {
                if (t->attempt) {
                    s_flush(&L, t);
                    if (c->output == CTL_OUT_TABLE)
                        printf("%s%s%s--- %s attempt %llu ---\n", L.prefix ? "[" : "",
                               L.prefix ? t->id : "", L.prefix ? "] " : "", t->id,
                               (unsigned long long)attempt);
                }
                t->attempt = attempt;
                t->offset = 0;
                t->errors = 0;
            }
            s_read_task(&L, t, state, follow);
            if (!t->done) open++;
        }
        json_decref(tasks);
        fflush(stdout);
        if (only_task[0] && matched == 0) {
            rc = ctl_errorf(c, "task '%s' not found (%s)", only_task, fw_errname(FW_ENOTFOUND));
            break;
        }
        if (!follow || open == 0) break;
        fw_sleep_ms(CTL_LOG_PASS_MS);
    }
    for (size_t i = 0; i < L.n; i++) {
        s_flush(&L, &L.t[i]);
        free(L.t[i].partial);
    }
    free(L.t);
    fflush(stdout);
    return rc;
}

/* ---------------------------------------------------------------- table */

static const ctl_flag_def s_submit_flags[] = {
    {"wait", 0, NULL, "Wait for the job to end; the exit code says how (as job wait)."},
    {"wait-timeout", 0, "DURATION", "With --wait: give up after this long (exit 3)."},
    {"idempotency-key", 0, "KEY",
     "Resubmitting with the same key returns the same job (default: a fresh key per run, "
     "so retries inside one run never submit twice)."},
    {NULL, 0, NULL, NULL}};

static const ctl_flag_def s_list_flags[] = {
    {"state", 0, "S", "Only jobs in this state (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)."},
    {NULL, 0, NULL, NULL}};

static const ctl_flag_def s_cancel_flags[] = {
    {"reason", 0, "TEXT", "Why, for the audit log."}, {NULL, 0, NULL, NULL}};

static const ctl_flag_def s_logs_flags[] = {
    {"follow", 'f', NULL, "Keep streaming until every task of the job has ended."},
    {"stream", 0, "NAME", "stdout (default), stderr or agent (the agent's notes)."},
    {NULL, 0, NULL, NULL}};

static const ctl_flag_def s_wait_flags[] = {
    {"timeout", 0, "S", "Give up after S seconds (or a duration: 90s, 5m); exit code 3."},
    {NULL, 0, NULL, NULL}};

const ctl_cmd_def ctl_job_cmds[] = {
    {"job", "submit", "SPEC", 1, 1, "Submit a job from a JSON or YAML spec file ('-': stdin).",
     "Prints the job id (-o json: {\"id\": ...}). The spec is checked by the coordinator; an\n"
     "error names the field, e.g. spec.resources.cpus. YAML is converted to JSON first\n"
     "(YAML 1.2 core types: 3 is a number, true a bool, \"3\" a string).\n"
     "Example spec:\n"
     "  kind: command\n  shards: 200\n  max_retries: 3\n"
     "  resources: {cpus: 1, gpus: 0, memory_mb: 512}\n"
     "  command: [sh, -c, 'echo shard $FLYWHEEL_SHARD_INDEX']\n"
     "A gang job gives world_size: N instead of shards.",
     s_submit_flags, s_cmd_submit},
    {"job", "list", NULL, 0, 0, "Jobs, newest first, with state and progress.", NULL,
     s_list_flags, s_cmd_list},
    {"job", "show", "ID", 1, 1,
     "One job: spec, state, times, task counts; for ML jobs the result, checkpoint and curve.",
     "A fine-tune shows its new model version, last complete checkpoint, restarts from\n"
     "checkpoints and its loss curve (first step, every ~10%, last); an embed its matrix;\n"
     "an eval a row of metrics per model. -o json prints the whole record.",
     NULL, s_cmd_show},
    {"job", "cancel", "ID", 1, 1, "Cancel a job: pending tasks never run, running ones are "
                                  "stopped (SIGTERM, then SIGKILL).",
     NULL, s_cancel_flags, s_cmd_cancel},
    {"job", "logs", "ID", 1, 1, "Print a job's task logs (ID may be a task id: j-000042.17).",
     "Logs stay on the agents and are read through the leader. With several tasks each line\n"
     "is prefixed with [task-id]. -f follows until every task has ended, across leader\n"
     "failovers. -o json prints one JSON object per piece: {task, attempt, offset, data}.",
     s_logs_flags, s_cmd_logs},
    {"job", "wait", "ID", 1, 1, "Wait for a job to end; the exit code says how it ended.",
     "Exit codes: 0 succeeded, 1 failed, 2 cancelled, 3 --timeout passed, 4 the state could\n"
     "not be read (unknown job, bad token). Coordinator outages and failovers are waited out.\n"
     "Here --timeout is the wait's limit; put the global --timeout (per request) before the\n"
     "command to change that one.",
     s_wait_flags, s_cmd_wait},
    {NULL, NULL, NULL, 0, 0, NULL, NULL, NULL, NULL}};
