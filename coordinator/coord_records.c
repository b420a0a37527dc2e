/* coord_records.c - rendering and parsing of the coordinator's etcd values.
 *
 * Rendering is on the dispatch path (two task records per task), so it uses
 * the append-only writer and leaves out fields holding their default value;
 * parsing happens once per takeover and uses jansson. The two must agree:
 * test_coord_records checks that parse(render(x)) == x. */
#include "coord_records.h"

#include "fw_err.h"
#include "fw_log.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ keys */

void coord_key_task(char *buf, size_t size, const char *prefix, const coord_task_t *t) {
    /* Zero-padded index: a prefix range returns a job's tasks in order. */
    snprintf(buf, size, "%s/tasks/%s/%06u", prefix, t->job->id, t->index);
}

void coord_key_job(char *buf, size_t size, const char *prefix, const coord_job_t *j) {
    snprintf(buf, size, "%s/jobs/%s", prefix, j->id);
}

void coord_key_queue(char *buf, size_t size, const char *prefix, const coord_job_t *j) {
    /* 9999 - priority is 0..19998 for priorities 9999..-9999: high first. */
    snprintf(buf, size, "%s/queue/%05d/%012llu", prefix, 9999 - j->spec.priority,
             (unsigned long long)j->seq);
}

void coord_key_admin(char *buf, size_t size, const char *prefix, const coord_agent_t *a) {
    snprintf(buf, size, "%s/agent-admin/%s", prefix, a->id);
}

void coord_key_audit(char *buf, size_t size, const char *prefix, uint64_t seq) {
    snprintf(buf, size, "%s/audit/%016llu", prefix, (unsigned long long)seq);
}

int coord_key_task_parse(const char *key, const char *prefix, char *job_id, size_t size,
                         uint32_t *index) {
    size_t pl = strlen(prefix);
    if (strncmp(key, prefix, pl) != 0 || strncmp(key + pl, "/tasks/", 7) != 0) return -1;
    const char *p = key + pl + 7;
    const char *slash = strchr(p, '/');
    if (!slash || slash == p || (size_t)(slash - p) >= size) return -1;
    char *end;
    unsigned long v = strtoul(slash + 1, &end, 10);
    if (*end || slash[1] < '0' || slash[1] > '9' || v > UINT32_MAX) return -1;
    memcpy(job_id, p, (size_t)(slash - p));
    job_id[slash - p] = '\0';
    *index = (uint32_t)v;
    return 0;
}

/* ---------------------------------------------------------------- render */

void coord_render_task(coord_jw *w, const coord_task_t *t) {
    coord_jw_obj_begin(w);
    coord_jw_kint(w, "schema", COORD_SCHEMA);
    coord_jw_kstr(w, "state", coord_task_state_name(t->state));
    coord_jw_kint(w, "attempt", t->attempt);
    if (t->agent) coord_jw_kstr(w, "agent", t->agent->id);
    coord_jw_kint(w, "retries_left", t->retries_left);
    if (t->job->spec.gang) {
        coord_jw_kint(w, "rank", t->index);
        if (t->job->rendezvous) coord_jw_kstr(w, "rendezvous", t->job->rendezvous);
    }
    if (t->state == TASK_PENDING && t->not_before) coord_jw_kint(w, "not_before", t->not_before);
    if (t->assigned_at) coord_jw_kint(w, "assigned_at", t->assigned_at);
    if (t->started_at) coord_jw_kint(w, "started_at", t->started_at);
    if (t->finished_at) coord_jw_kint(w, "finished_at", t->finished_at);
    if (t->finished_at || t->exit_code) coord_jw_kint(w, "exit_code", t->exit_code);
    if (t->error) coord_jw_kstr(w, "error", t->error);
    if (t->result) {
        coord_jw_kraw(w, "result", t->result);
        /* A gang rank that exited and waits for the others. */
        if (t->state == TASK_RUNNING) coord_jw_kbool(w, "exited", true);
    }
    if (t->history) coord_jw_kraw(w, "history", t->history);
    if (t->tail_len && coord_task_terminal(t->state)) {
        /* The output stays on the agent; the record keeps its last lines. */
        char buf[COORD_TAIL_MAX + 1];
        memcpy(buf, t->tail, t->tail_len);
        buf[t->tail_len] = '\0';
        coord_jw_kstr(w, "log_tail", buf);
    }
    coord_jw_obj_end(w);
}

void coord_render_job(coord_jw *w, const coord_job_t *j) {
    coord_jw_obj_begin(w);
    coord_jw_kint(w, "schema", COORD_SCHEMA);
    coord_jw_kstr(w, "id", j->id);
    coord_jw_kint(w, "seq", (int64_t)j->seq);
    coord_jw_kstr(w, "kind", j->spec.kind);
    coord_jw_kstr(w, "state", coord_job_state_name(j->state));
    coord_jw_kint(w, "priority", j->spec.priority);
    coord_jw_kstr(w, "owner", j->owner);
    coord_jw_kint(w, j->spec.gang ? "world_size" : "shards", j->ntasks);
    coord_jw_kint(w, "submitted_at", j->submitted_at);
    if (j->started_at) coord_jw_kint(w, "started_at", j->started_at);
    if (j->finished_at) coord_jw_kint(w, "finished_at", j->finished_at);
    if (j->idem_key) coord_jw_kstr(w, "idempotency_key", j->idem_key);
    if (j->error) coord_jw_kstr(w, "error", j->error);
    if (j->cancel_requested) coord_jw_kbool(w, "cancel_requested", true);
    if (coord_job_terminal(j->state)) {
        /* Task records of finished jobs are not read back at takeover: the
         * job keeps its own tally. */
        coord_jw_key(w, "counts");
        coord_jw_obj_begin(w);
        for (int st = TASK_SUCCEEDED; st < TASK__COUNT; st++)
            coord_jw_kint(w, coord_task_state_name(st), j->count[st]);
        coord_jw_obj_end(w);
    }
    if (j->ml) {
        const char *k;
        json_t *v;
        json_object_foreach(j->ml, k, v) {
            char *txt = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            if (txt) coord_jw_kraw(w, k, txt);
            else w->oom = true;
            free(txt);
        }
    }
    coord_jw_kraw(w, "spec", j->spec.json);
    coord_jw_obj_end(w);
}

void coord_render_queue(coord_jw *w, const coord_job_t *j) {
    coord_jw_obj_begin(w);
    coord_jw_kint(w, "schema", COORD_SCHEMA);
    coord_jw_kstr(w, "job", j->id);
    coord_jw_obj_end(w);
}

void coord_render_admin(coord_jw *w, const coord_agent_t *a) {
    coord_jw_obj_begin(w);
    coord_jw_kint(w, "schema", COORD_SCHEMA);
    coord_jw_kbool(w, "drain", a->drain);
    coord_jw_kstr(w, "by", a->drain_by ? a->drain_by : "");
    coord_jw_kint(w, "at", a->drain_at);
    if (a->drain_reason) coord_jw_kstr(w, "reason", a->drain_reason);
    coord_jw_obj_end(w);
}

/* ----------------------------------------------------------------- parse */

static json_t *s_load(const char *key, const char *value, int *rc) {
    json_error_t jerr;
    json_t *o = json_loads(value ? value : "", 0, &jerr);
    if (!json_is_object(o)) {
        json_decref(o);
        *rc = fw_err_set(FW_EINVAL, "%s: not a JSON object (%s)", key, jerr.text);
        return NULL;
    }
    json_t *schema = json_object_get(o, "schema");
    if (!json_is_integer(schema) || json_integer_value(schema) < 1) {
        json_decref(o);
        *rc = fw_err_set(FW_EINVAL, "%s: missing or bad \"schema\"", key);
        return NULL;
    }
    if (json_integer_value(schema) > COORD_SCHEMA) {
        json_decref(o);
        *rc = fw_err_set(FW_EVERSION, "%s: schema %lld is newer than %d", key,
                         (long long)json_integer_value(schema), COORD_SCHEMA);
        return NULL;
    }
    *rc = 0;
    return o;
}

static int64_t s_i64(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    if (json_is_integer(v)) return json_integer_value(v);
    if (json_is_string(v)) return strtoll(json_string_value(v), NULL, 10);
    return 0;
}

static char *s_strdup_field(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? strdup(json_string_value(v)) : NULL;
}

int coord_parse_job(coord_state_t *s, const char *key, const char *value, coord_job_t **out) {
    int rc;
    *out = NULL;
    json_t *o = s_load(key, value, &rc);
    if (!o) return rc;
    json_t *spec = json_object_get(o, "spec");
    int64_t seq = s_i64(o, "seq");
    int st = coord_job_state_parse(json_string_value(json_object_get(o, "state")));
    if (!json_is_object(spec) || seq <= 0 || st < 0) {
        json_decref(o);
        return fw_err_set(FW_EINVAL, "%s: needs spec, seq and state", key);
    }
    char *spec_txt = json_dumps(spec, JSON_COMPACT | JSON_SORT_KEYS);
    coord_spec_t sp;
    /* The spec was valid when submitted; re-validate with the widest bound. */
    rc = spec_txt ? coord_spec_parse(spec_txt, UINT32_MAX, &sp) : FW_ENOMEM;
    free(spec_txt);
    if (rc < 0) {
        json_decref(o);
        char why[512]; /* fw_err_set formats into the buffer fw_err_detail() returns */
        snprintf(why, sizeof why, "%s", fw_err_detail());
        return fw_err_set(rc, "%s: %s", key, why);
    }
    bool live = !coord_job_terminal(st);
    coord_job_t *j = coord_job_add(s, (uint64_t)seq, &sp,
                                   json_string_value(json_object_get(o, "owner")),
                                   s_i64(o, "submitted_at"), live);
    if (!j) {
        coord_spec_clear(&sp);
        json_decref(o);
        return fw_err_set(FW_ENOMEM, "%s: cannot add job (duplicate or out of memory)", key);
    }
    j->started_at = s_i64(o, "started_at");
    j->finished_at = s_i64(o, "finished_at");
    j->idem_key = s_strdup_field(o, "idempotency_key");
    j->error = s_strdup_field(o, "error");
    static const char *const ml_keys[] = {"result", "curve", "checkpoint", "resumed"};
    for (size_t k = 0; k < sizeof ml_keys / sizeof ml_keys[0]; k++) {
        json_t *v = json_object_get(o, ml_keys[k]);
        if (!v) continue;
        if (!j->ml) j->ml = json_object();
        json_object_set(j->ml, ml_keys[k], v);
    }
    j->cancel_requested = json_is_true(json_object_get(o, "cancel_requested"));
    j->record_committed = true;
    if (st != JOB_QUEUED) {
        /* Silent: what etcd holds needs no write back. */
        s->job_count[j->state]--;
        s->job_count[st]++;
        j->state = (uint8_t)st;
    }
    if (!live) {
        json_t *counts = json_object_get(o, "counts");
        s->task_count[TASK_PENDING] -= j->count[TASK_PENDING];
        j->count[TASK_PENDING] = 0;
        for (int ts = TASK_SUCCEEDED; ts < TASK__COUNT; ts++) {
            j->count[ts] = (uint32_t)s_i64(counts, coord_task_state_name(ts));
            s->task_count[ts] += j->count[ts];
        }
    }
    j->committed_state = (uint8_t)st;
    json_decref(o);
    *out = j;
    return 0;
}

int coord_parse_task(coord_state_t *s, const char *key, const char *value) {
    int rc;
    json_t *o = s_load(key, value, &rc);
    if (!o) return rc;
    coord_task_t *t = NULL;
    char jid[COORD_ID_MAX + 1];
    uint32_t idx;
    const char *k = strstr(key, "/tasks/");
    if (k && sscanf(k, "/tasks/%64[^/]/%u", jid, &idx) == 2) {
        coord_job_t *j = coord_job_find(s, jid);
        if (j && j->tasks && idx < j->ntasks) t = &j->tasks[idx];
    }
    int st = coord_task_state_parse(json_string_value(json_object_get(o, "state")));
    if (!t || st < 0) {
        json_decref(o);
        return fw_err_set(FW_ENOTFOUND, "%s: no such task or bad state", key);
    }
    coord_job_t *j = t->job;
    /* Counters move silently: this is what etcd already holds. */
    j->count[t->state]--;
    s->task_count[t->state]--;
    j->count[st]++;
    s->task_count[st]++;
    t->state = (uint8_t)st;
    t->written = true;
    t->attempt = (uint32_t)s_i64(o, "attempt");
    t->retries_left = (uint32_t)s_i64(o, "retries_left");
    t->not_before = s_i64(o, "not_before");
    t->assigned_at = s_i64(o, "assigned_at");
    t->started_at = s_i64(o, "started_at");
    t->finished_at = s_i64(o, "finished_at");
    t->exit_code = (int32_t)s_i64(o, "exit_code");
    free(t->error);
    t->error = s_strdup_field(o, "error");
    json_t *res = json_object_get(o, "result");
    free(t->result);
    t->result = res ? json_dumps(res, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_t *hist = json_object_get(o, "history");
    free(t->history);
    t->history = json_is_array(hist) ? json_dumps(hist, JSON_COMPACT) : NULL;
    const char *tail = json_string_value(json_object_get(o, "log_tail"));
    free(t->tail);
    t->tail = NULL;
    t->tail_len = 0;
    if (tail && (t->tail = strndup(tail, COORD_TAIL_MAX))) t->tail_len = (uint16_t)strlen(t->tail);
    const char *agent = json_string_value(json_object_get(o, "agent"));
    t->agent = agent && agent[0] ? coord_agent_get(s, agent, true) : NULL;
    json_t *rdv = json_object_get(o, "rendezvous");
    if (j->spec.gang && json_is_string(rdv) && !j->rendezvous)
        j->rendezvous = strdup(json_string_value(rdv));
    if (j->spec.gang && t->attempt > j->gang_attempt) j->gang_attempt = t->attempt;
    if (j->spec.gang && t->retries_left < j->gang_retries_left)
        j->gang_retries_left = t->retries_left;
    json_decref(o);
    return 0;
}

int coord_parse_admin(coord_state_t *s, const char *key, const char *value) {
    int rc;
    json_t *o = s_load(key, value, &rc);
    if (!o) return rc;
    const char *id = strrchr(key, '/');
    coord_agent_t *a = id && id[1] ? coord_agent_get(s, id + 1, true) : NULL;
    if (!a) {
        json_decref(o);
        return fw_err_set(FW_EINVAL, "%s: bad agent id", key);
    }
    a->drain = json_is_true(json_object_get(o, "drain"));
    free(a->drain_by);
    a->drain_by = s_strdup_field(o, "by");
    free(a->drain_reason);
    a->drain_reason = s_strdup_field(o, "reason");
    a->drain_at = s_i64(o, "at");
    json_decref(o);
    return 0;
}

int coord_parse_agent(coord_state_t *s, const char *id, const char *value) {
    coord_agent_t *a = coord_agent_get(s, id, true);
    if (!a) return fw_err_set(FW_EINVAL, "agents/%s: bad agent id", id);
    a->alive = true;
    free(a->record);
    a->record = strdup(value ? value : "{}");
    json_t *o = json_loads(value ? value : "", 0, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        return 0; /* liveness is what matters; the details come with AGENT_REGISTER */
    }
    /* Until the agent registers with this leader, its etcd record is the
     * best description of it (for cluster status and agent list). */
    if (!a->connected) {
        const char *host = json_string_value(json_object_get(o, "host"));
        if (!host) host = json_string_value(json_object_get(o, "hostname"));
        if (host) {
            free(a->host);
            a->host = strdup(host);
        }
        if (s_i64(o, "cpus") > 0) a->cpus = (uint64_t)s_i64(o, "cpus");
        if (s_i64(o, "memory_mb") > 0) a->memory_mb = (uint64_t)s_i64(o, "memory_mb");
        json_t *g = json_object_get(o, "gpus");
        if (json_is_array(g)) a->ngpus = (int)json_array_size(g);
    }
    json_decref(o);
    return 0;
}
