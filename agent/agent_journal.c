/* agent_journal.c - unacknowledged task results as atomic JSON files.
 *
 * Theory of operation
 * -------------------
 * Invariants:
 *   1. A TASK_RESULT for a process-backed task is only ever sent after its
 *      journal file has been committed (fsync + rename + dir fsync), so the
 *      agent can resend it after any crash.
 *   2. The file is removed only on TASK_RESULT_ACK, which the leader sends
 *      only after its etcd txn holding the transition committed.
 *   3. The name is derived from (task, attempt), so writing a result twice
 *      overwrites it and removing twice is a no-op: both are idempotent.
 * Results of in-agent executors (noop) are not journaled on disk: they are
 * kept in memory until acknowledged (see agent_task.c for why). */
#include "agent_journal.h"

#include "fw_err.h"
#include "fw_file.h"
#include "fw_log.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define S_SCHEMA 1
#define S_MAX_FILE (4u << 20) /* result JSON is bounded by 1 MiB on the wire */

void agent_result_clear(agent_result_t *r) {
    if (!r) return;
    free(r->error);
    free(r->result);
    r->error = r->result = NULL;
}

int agent_result_copy(agent_result_t *dst, const agent_result_t *src) {
    *dst = *src;
    dst->error = src->error ? strdup(src->error) : NULL;
    dst->result = src->result ? strdup(src->result) : NULL;
    if ((src->error && !dst->error) || (src->result && !dst->result)) {
        agent_result_clear(dst);
        return fw_err_set(FW_ENOMEM, "result copy: out of memory");
    }
    return 0;
}

bool agent_id_ok(const char *id) {
    if (!id || !*id || id[0] == '.') return false;
    size_t n = 0;
    for (const char *p = id; *p; p++, n++) {
        unsigned char c = (unsigned char)*p;
        if (n >= AGENT_ID_MAX) return false;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static int s_path(char *buf, size_t size, const char *dir, const char *task_id, uint64_t attempt) {
    if (!agent_id_ok(task_id)) return fw_err_set(FW_EINVAL, "journal: bad task id");
    int n = snprintf(buf, size, "%s/%s.%" PRIu64, dir, task_id, attempt);
    if (n < 0 || (size_t)n >= size) return fw_err_set(FW_EINVAL, "journal: path too long");
    return 0;
}

char *agent_result_to_json(const agent_result_t *r) {
    json_t *o = json_object();
    if (!o) return NULL;
    json_object_set_new(o, "schema", json_integer(S_SCHEMA));
    json_object_set_new(o, "job_id", json_string(r->job_id));
    json_object_set_new(o, "task_id", json_string(r->task_id));
    json_object_set_new(o, "attempt", json_integer((json_int_t)r->attempt));
    json_object_set_new(o, "status", json_string(r->status));
    if (r->has_exit_code) json_object_set_new(o, "exit_code", json_integer(r->exit_code));
    /* The error is free text from a process; jansson refuses invalid UTF-8
     * (json_string returns NULL), the caller sanitises it beforehand. */
    if (r->error) json_object_set_new(o, "error", json_string(r->error));
    if (r->result) json_object_set_new(o, "result", json_string(r->result));
    json_object_set_new(o, "finished_ms", json_integer((json_int_t)r->finished_ms));
    char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return s;
}

static int s_str(json_t *o, const char *key, char *dst, size_t size, bool required) {
    json_t *v = json_object_get(o, key);
    if (!v) return required ? fw_err_set(FW_ECORRUPT, "journal: field %s missing", key) : 0;
    if (!json_is_string(v) || json_string_length(v) >= size)
        return fw_err_set(FW_ECORRUPT, "journal: field %s: expected a string under %zu bytes", key,
                          size);
    memcpy(dst, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

static int s_dupstr(json_t *o, const char *key, char **dst) {
    json_t *v = json_object_get(o, key);
    if (!v) return 0;
    if (!json_is_string(v))
        return fw_err_set(FW_ECORRUPT, "journal: field %s: expected a string", key);
    if (!(*dst = strdup(json_string_value(v))))
        return fw_err_set(FW_ENOMEM, "journal: out of memory");
    return 0;
}

int agent_result_from_json(const char *text, agent_result_t *r) {
    memset(r, 0, sizeof *r);
    json_error_t jerr;
    json_t *o = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (!o || !json_is_object(o)) {
        json_decref(o);
        return fw_err_set(FW_ECORRUPT, "journal: not a JSON object (%s, line %d)", jerr.text,
                          jerr.line);
    }
    int rc;
    json_t *schema = json_object_get(o, "schema");
    if (!json_is_integer(schema)) {
        rc = fw_err_set(FW_ECORRUPT, "journal: field schema missing");
        goto out;
    }
    if (json_integer_value(schema) != S_SCHEMA) {
        rc = fw_err_set(FW_EVERSION, "journal: schema %" JSON_INTEGER_FORMAT ", expected %d",
                        json_integer_value(schema), S_SCHEMA);
        goto out;
    }
    if ((rc = s_str(o, "job_id", r->job_id, sizeof r->job_id, true)) < 0 ||
        (rc = s_str(o, "task_id", r->task_id, sizeof r->task_id, true)) < 0 ||
        (rc = s_str(o, "status", r->status, sizeof r->status, true)) < 0 ||
        (rc = s_dupstr(o, "error", &r->error)) < 0 || (rc = s_dupstr(o, "result", &r->result)) < 0)
        goto out;
    if (!agent_id_ok(r->task_id)) {
        rc = fw_err_set(FW_ECORRUPT, "journal: field task_id: not a valid task id");
        goto out;
    }
    json_t *a = json_object_get(o, "attempt");
    if (!json_is_integer(a) || json_integer_value(a) < 1) {
        rc = fw_err_set(FW_ECORRUPT, "journal: field attempt: expected an integer >= 1");
        goto out;
    }
    r->attempt = (uint64_t)json_integer_value(a);
    json_t *ec = json_object_get(o, "exit_code");
    if (ec) {
        if (!json_is_integer(ec)) {
            rc = fw_err_set(FW_ECORRUPT, "journal: field exit_code: expected an integer");
            goto out;
        }
        r->has_exit_code = true;
        r->exit_code = json_integer_value(ec);
    }
    json_t *fin = json_object_get(o, "finished_ms");
    if (fin && json_is_integer(fin) && json_integer_value(fin) > 0)
        r->finished_ms = (uint64_t)json_integer_value(fin);
    rc = 0;
out:
    json_decref(o);
    if (rc < 0) agent_result_clear(r);
    return rc;
}

int agent_journal_put(const char *dir, const agent_result_t *r) {
    char path[4096];
    int rc = s_path(path, sizeof path, dir, r->task_id, r->attempt);
    if (rc < 0) return rc;
    if ((rc = fw_file_mkdirs(dir, 0755)) < 0) return rc;
    char *text = agent_result_to_json(r);
    if (!text) return fw_err_set(FW_EINVAL, "journal: result of %s not serialisable", r->task_id);
    rc = fw_file_write_atomic(path, text, strlen(text), 0644);
    free(text);
    return rc;
}

int agent_journal_remove(const char *dir, const char *task_id, uint64_t attempt) {
    char path[4096];
    int rc = s_path(path, sizeof path, dir, task_id, attempt);
    if (rc < 0) return rc;
    if (unlink(path) < 0 && errno != ENOENT)
        return fw_err_set(FW_EIO, "unlink %s: %s", path, strerror(errno));
    /* No directory fsync: if the removal is lost in a crash the result is
     * resent and acknowledged again, which is harmless (invariant 3). */
    return 0;
}

static int s_cmp(const void *a, const void *b) {
    return strcmp(((const agent_result_t *)a)->task_id, ((const agent_result_t *)b)->task_id);
}

int agent_journal_load(const char *dir, agent_result_t **out, size_t *n) {
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return 0;
        return fw_err_set(FW_EIO, "opendir %s: %s", dir, strerror(errno));
    }
    size_t cap = 0;
    agent_result_t *v = NULL;
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *name = de->d_name;
        if (name[0] == '.') continue;
        size_t len = strlen(name);
        char path[4096];
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path) continue;
        if (len > 4 && strcmp(name + len - 4, ".new") == 0) {
            unlink(path); /* an interrupted atomic write: the old file (if any) stands */
            continue;
        }
        if (len > 8 && strcmp(name + len - 8, ".corrupt") == 0) continue;
        char *text = NULL;
        agent_result_t r;
        int lrc = fw_file_read(path, S_MAX_FILE, &text, NULL);
        if (lrc == 0) lrc = agent_result_from_json(text, &r);
        free(text);
        if (lrc < 0) {
            char bad[4200];
            snprintf(bad, sizeof bad, "%s.corrupt", path);
            fw_error("event=journal-corrupt file=%s err=%s detail=\"%s\" action=renamed", path,
                     fw_errname(lrc), fw_err_detail());
            if (rename(path, bad) < 0) unlink(path);
            continue;
        }
        if (*n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            agent_result_t *nv = realloc(v, ncap * sizeof *nv);
            if (!nv) {
                agent_result_clear(&r);
                rc = fw_err_set(FW_ENOMEM, "journal: out of memory");
                break;
            }
            v = nv;
            cap = ncap;
        }
        v[(*n)++] = r;
    }
    closedir(d);
    if (rc < 0) {
        agent_journal_free(&v, *n);
        *n = 0;
        return rc;
    }
    if (*n > 1) qsort(v, *n, sizeof *v, s_cmp);
    *out = v;
    return 0;
}

void agent_journal_free(agent_result_t **results, size_t n) {
    if (!results || !*results) return;
    for (size_t i = 0; i < n; i++) agent_result_clear(&(*results)[i]);
    free(*results);
    *results = NULL;
}
