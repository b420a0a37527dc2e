/* ctl_out.c - flywheelctl's output: JSON as received, tables for people.
 *
 * `-o json` prints what the coordinator sent (the doc of the reply), so
 * scripts see every field, including ones this build does not know. Tables
 * pick columns from those docs by name; a field that is missing prints "-"
 * rather than failing, so a newer coordinator never breaks an older CLI. */
#include "ctl.h"

#include "fw_time.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void ctl_print_json(const json_t *v) {
    char *s = json_dumps(v, JSON_INDENT(2) | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
    if (s) {
        fputs(s, stdout);
        fputc('\n', stdout);
        free(s);
    }
}

struct ctl_table {
    int ncols;
    char **headers;
    char ***rows;
    size_t nrows, cap;
};

ctl_table_t *ctl_table_new(int ncols, const char *const *headers) {
    ctl_table_t *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->ncols = ncols;
    t->headers = calloc((size_t)ncols, sizeof *t->headers);
    if (!t->headers) {
        free(t);
        return NULL;
    }
    for (int i = 0; i < ncols; i++) t->headers[i] = strdup(headers[i]);
    return t;
}

void ctl_table_add(ctl_table_t *t, const char *const *cells) {
    if (!t) return;
    if (t->nrows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 32;
        char ***r = realloc(t->rows, cap * sizeof *r);
        if (!r) return;
        t->rows = r;
        t->cap = cap;
    }
    char **row = calloc((size_t)t->ncols, sizeof *row);
    if (!row) return;
    for (int i = 0; i < t->ncols; i++) row[i] = strdup(cells[i] ? cells[i] : "-");
    t->rows[t->nrows++] = row;
}

int ctl_print_list(const ctl_t *c, json_t *arr, int ncols, const char *const *hdr,
                   void (*add_row)(ctl_table_t *t, json_t *rec)) {
    if (c->output == CTL_OUT_JSON) {
        ctl_print_json(arr);
    } else {
        ctl_table_t *t = ctl_table_new(ncols, hdr);
        size_t i;
        json_t *rec;
        json_array_foreach(arr, i, rec) add_row(t, rec);
        ctl_table_print(t, stdout);
        ctl_table_destroy(&t);
    }
    json_decref(arr);
    return CTL_EXIT_OK;
}

const char *ctl_num(const json_t *v, char *buf, size_t size) {
    if (json_is_number(v))
        snprintf(buf, size, "%.6g", json_number_value(v));
    else
        snprintf(buf, size, "-");
    return buf;
}

void ctl_table_print(const ctl_table_t *t, FILE *out) {
    if (!t) return;
    size_t *w = calloc((size_t)t->ncols, sizeof *w);
    if (!w) return;
    for (int i = 0; i < t->ncols; i++) w[i] = strlen(t->headers[i]);
    for (size_t r = 0; r < t->nrows; r++)
        for (int i = 0; i < t->ncols; i++) {
            size_t n = t->rows[r][i] ? strlen(t->rows[r][i]) : 1;
            if (n > w[i]) w[i] = n;
        }
    for (size_t r = 0; r <= t->nrows; r++) {
        char **cells = r == 0 ? t->headers : t->rows[r - 1];
        for (int i = 0; i < t->ncols; i++) {
            const char *cell = cells[i] ? cells[i] : "-";
            /* No padding after the last column: lines end without blanks. */
            if (i + 1 < t->ncols) fprintf(out, "%-*s   ", (int)w[i], cell);
            else fprintf(out, "%s\n", cell);
        }
    }
    free(w);
}

void ctl_table_destroy(ctl_table_t **p) {
    if (!p || !*p) return;
    ctl_table_t *t = *p;
    for (size_t r = 0; r < t->nrows; r++) {
        for (int i = 0; i < t->ncols; i++) free(t->rows[r][i]);
        free(t->rows[r]);
    }
    free(t->rows);
    for (int i = 0; i < t->ncols; i++) free(t->headers[i]);
    free(t->headers);
    free(t);
    *p = NULL;
}

json_t *ctl_get(const json_t *obj, const char *path) {
    const json_t *v = obj;
    const char *p = path;
    while (v && *p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (!json_is_object(v)) return NULL;
        v = json_object_getn(v, p, n);
        p += n;
        if (*p == '.') p++;
    }
    return (json_t *)v;
}

json_t *ctl_get_any(const json_t *obj, ...) {
    va_list ap;
    va_start(ap, obj);
    json_t *found = NULL;
    for (const char *p = va_arg(ap, const char *); p && !found; p = va_arg(ap, const char *))
        found = ctl_get(obj, p);
    va_end(ap);
    return found;
}

const char *ctl_str(const json_t *obj, const char *path) {
    const char *s = json_string_value(ctl_get(obj, path));
    return s ? s : "";
}

const char *ctl_cell(const json_t *v, char *buf, size_t size) {
    if (!v || json_is_null(v)) return "-";
    if (json_is_string(v)) {
        snprintf(buf, size, "%s", json_string_value(v));
        return buf;
    }
    if (json_is_integer(v)) {
        snprintf(buf, size, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return buf;
    }
    if (json_is_real(v)) {
        snprintf(buf, size, "%g", json_real_value(v));
        return buf;
    }
    if (json_is_boolean(v)) return json_is_true(v) ? "true" : "false";
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    snprintf(buf, size, "%s", s ? s : "?");
    free(s);
    return buf;
}

static int64_t s_parse_rfc3339(const char *s) {
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!end) return -1;
    return (int64_t)timegm(&tm) * 1000;
}

const char *ctl_age(const json_t *v, char *buf, size_t size) {
    int64_t ms = -1;
    if (json_is_integer(v)) ms = json_integer_value(v);
    else if (json_is_real(v)) ms = (int64_t)json_real_value(v);
    else if (json_is_string(v)) {
        /* Some records carry ms as a string (values past 2^53 are written as
         * strings in etcd); others an RFC 3339 time. */
        const char *s = json_string_value(v);
        char *end;
        long long n = strtoll(s, &end, 10);
        ms = (*s && !*end) ? n : s_parse_rfc3339(s);
    }
    if (ms <= 0) return "-";
    int64_t d = (fw_wall_ms() - ms) / 1000;
    if (d < 0) d = 0;
    if (d < 120) snprintf(buf, size, "%llds", (long long)d);
    else if (d < 7200) snprintf(buf, size, "%lldm", (long long)(d / 60));
    else if (d < 172800) snprintf(buf, size, "%lldh", (long long)(d / 3600));
    else snprintf(buf, size, "%lldd", (long long)(d / 86400));
    return buf;
}

void ctl_print_object(const json_t *obj, const char *prefix) {
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v) {
        char key[256], cell[2048];
        snprintf(key, sizeof key, "%s%s%s", prefix, *prefix ? "." : "", k);
        if (json_is_object(v) && json_object_size(v) > 0) ctl_print_object(v, key);
        else printf("%-24s %s\n", key, ctl_cell(v, cell, sizeof cell));
    }
}
