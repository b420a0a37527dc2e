/* ctl_spec.c - job specs from JSON or YAML files, always sent as JSON.
 *
 * The coordinator validates specs (kinds, fields, bounds) and names the field
 * that is wrong; this file only turns the file into a JSON object and reports
 * syntax errors with the file, line and column. YAML goes through libyaml's
 * document API and is converted node by node, typing plain scalars by the
 * YAML 1.2 core schema so that numbers and booleans arrive as JSON numbers
 * and booleans:
 *
 *   null, Null, NULL, ~, (empty)         -> null
 *   true/True/TRUE, false/False/FALSE    -> bool   ("yes"/"no"/"on" stay strings)
 *   [-+]?[0-9]+, 0x[0-9a-fA-F]+, 0o[0-7]+ -> integer (out of int64 range: error)
 *   decimals and exponents               -> number  (.inf and .nan: error, JSON has none)
 *   anything quoted, or other plain text -> string
 *
 * Tags !!str, !!int, !!float, !!bool and !!null force a type; other tags,
 * merge keys (<<), non-scalar keys, duplicate keys and multi-document files
 * are errors. Nesting is bounded (CTL_SPEC_MAX_DEPTH) so aliases cannot blow
 * up into a huge document. */
#include "ctl.h"

#include "fw_err.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define CTL_SPEC_MAX_BYTES (1u << 20) /* JOB_SUBMIT.spec's MAX */
#define CTL_SPEC_MAX_DEPTH 32
#define CTL_SPEC_MAX_NODES 100000 /* aliases can repeat subtrees: bound the expansion */

typedef struct {
    const char *origin;
    yaml_document_t *doc;
    size_t nodes;
} s_conv;

/* Append ".key" or "[i]" to a path buffer; returns the old length to restore. */
static size_t s_path_push_key(char *path, size_t size, const char *key) {
    size_t n = strlen(path);
    snprintf(path + n, size - n, "%s%s", n ? "." : "", key);
    return n;
}

static size_t s_path_push_index(char *path, size_t size, size_t i) {
    size_t n = strlen(path);
    snprintf(path + n, size - n, "[%zu]", i);
    return n;
}

static json_t *s_fail(s_conv *cv, const yaml_node_t *node, const char *path, const char *fmt,
                      ...) __attribute__((format(printf, 4, 5)));

static json_t *s_fail(s_conv *cv, const yaml_node_t *node, const char *path, const char *fmt,
                      ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fw_err_set(FW_EINVAL, "%s:%zu:%zu: %s%s%s", cv->origin, node->start_mark.line + 1,
               node->start_mark.column + 1, path && *path ? path : "", path && *path ? ": " : "",
               msg);
    return NULL;
}

static bool s_all(const char *s, const char *set) {
    if (!*s) return false;
    for (; *s; s++)
        if (!strchr(set, *s)) return false;
    return true;
}

static bool s_is_null(const char *s) {
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") ||
           !strcmp(s, "NULL");
}

/* 1 true, 0 false, -1 not a bool. */
static int s_bool(const char *s) {
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")) return 1;
    if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")) return 0;
    return -1;
}

/* 1 an integer in range (*out), 0 not an integer, -1 an integer out of range. */
static int s_int(const char *s, long long *out) {
    const char *p = s;
    int base = 10;
    bool neg = false;
    if (*p == '-' || *p == '+') neg = (*p++ == '-');
    if (p[0] == '0' && p[1] == 'x' && s_all(p + 2, "0123456789abcdefABCDEF") && !neg &&
        p == s) {
        base = 16;
        p += 2;
    } else if (p[0] == '0' && p[1] == 'o' && s_all(p + 2, "01234567") && !neg && p == s) {
        base = 8;
        p += 2;
    } else if (!s_all(p, "0123456789")) {
        return 0;
    }
    errno = 0;
    char *end;
    unsigned long long v = strtoull(p, &end, base);
    if (errno || *end) return -1;
    if (neg) {
        if (v > (unsigned long long)LLONG_MAX + 1) return -1;
        *out = v == (unsigned long long)LLONG_MAX + 1 ? LLONG_MIN : -(long long)v;
    } else {
        if (v > (unsigned long long)LLONG_MAX) return -1;
        *out = (long long)v;
    }
    return 1;
}

/* 1 a finite float (*out), 0 not a float, -1 inf/nan (not JSON). */
static int s_float(const char *s, double *out) {
    const char *p = s;
    if (*p == '-' || *p == '+') p++;
    if (!strcmp(p, ".inf") || !strcmp(p, ".Inf") || !strcmp(p, ".INF") || !strcmp(s, ".nan") ||
        !strcmp(s, ".NaN") || !strcmp(s, ".NAN"))
        return -1;
    /* [0-9]* ( . [0-9]* )? ( [eE] [-+]? [0-9]+ )? with at least one digit. */
    bool digits = false;
    while (*p >= '0' && *p <= '9') p++, digits = true;
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9') p++, digits = true;
    }
    if (!digits) return 0;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '-' || *p == '+') p++;
        if (!(*p >= '0' && *p <= '9')) return 0;
        while (*p >= '0' && *p <= '9') p++;
    }
    if (*p) return 0;
    errno = 0;
    double v = strtod(s, NULL);
    if (errno == ERANGE) return -1;
    *out = v;
    return 1;
}

#define TAG(x) "tag:yaml.org,2002:" x

/* libyaml checks the input's UTF-8; jansson checks again and says NULL. */
static json_t *s_string(s_conv *cv, yaml_node_t *node, const char *path, const char *s) {
    json_t *v = json_string(s);
    return v ? v : s_fail(cv, node, path, "%s", "invalid UTF-8 in a string");
}

static json_t *s_scalar(s_conv *cv, yaml_node_t *node, const char *path) {
    const char *s = (const char *)node->data.scalar.value;
    const char *tag = node->tag ? (const char *)node->tag : "";
    bool plain = node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    bool explicit_tag = *tag && strcmp(tag, YAML_DEFAULT_SCALAR_TAG) != 0;
    if (explicit_tag && strcmp(tag, TAG("str")) == 0) return s_string(cv, node, path, s);
    if (!explicit_tag && !plain) return s_string(cv, node, path, s);
    if (explicit_tag && strcmp(tag, TAG("str")) && strcmp(tag, TAG("int")) &&
        strcmp(tag, TAG("float")) && strcmp(tag, TAG("bool")) && strcmp(tag, TAG("null")))
        return s_fail(cv, node, path, "unsupported tag '%s'", tag);
    bool any = !explicit_tag;
    if ((any || !strcmp(tag, TAG("null"))) && s_is_null(s)) return json_null();
    int b = s_bool(s);
    if ((any || !strcmp(tag, TAG("bool"))) && b >= 0) return json_boolean(b);
    long long iv;
    int ri = s_int(s, &iv);
    if ((any || !strcmp(tag, TAG("int"))) && ri != 0) {
        if (ri < 0) return s_fail(cv, node, path, "integer '%s' is out of range", s);
        return json_integer(iv);
    }
    double dv;
    int rf = s_float(s, &dv);
    if ((any || !strcmp(tag, TAG("float"))) && rf != 0) {
        if (rf < 0) return s_fail(cv, node, path, "'%s' is not a finite number (JSON has no "
                                                  "inf or nan)", s);
        return json_real(dv);
    }
    if (!any) return s_fail(cv, node, path, "value does not match its tag %s", tag);
    return s_string(cv, node, path, s);
}

static json_t *s_node(s_conv *cv, yaml_node_t *node, char *path, size_t psize, int depth) {
    if (!node) {
        fw_err_set(FW_EINVAL, "%s: %s: dangling YAML node", cv->origin, path);
        return NULL;
    }
    if (depth > CTL_SPEC_MAX_DEPTH)
        return s_fail(cv, node, path, "nested deeper than %d levels", CTL_SPEC_MAX_DEPTH);
    if (++cv->nodes > CTL_SPEC_MAX_NODES)
        return s_fail(cv, node, path, "%s", "too many values (aliases expand past 100000)");
    switch (node->type) {
    case YAML_SCALAR_NODE:
        return s_scalar(cv, node, path);
    case YAML_SEQUENCE_NODE: {
        json_t *arr = json_array();
        if (!arr) return NULL;
        size_t i = 0;
        for (yaml_node_item_t *it = node->data.sequence.items.start;
             it < node->data.sequence.items.top; it++, i++) {
            size_t old = s_path_push_index(path, psize, i);
            json_t *v = s_node(cv, yaml_document_get_node(cv->doc, *it), path, psize, depth + 1);
            path[old] = '\0';
            if (!v || json_array_append_new(arr, v) < 0) {
                json_decref(arr);
                return NULL;
            }
        }
        return arr;
    }
    case YAML_MAPPING_NODE: {
        json_t *obj = json_object();
        if (!obj) return NULL;
        for (yaml_node_pair_t *pr = node->data.mapping.pairs.start;
             pr < node->data.mapping.pairs.top; pr++) {
            yaml_node_t *k = yaml_document_get_node(cv->doc, pr->key);
            if (!k || k->type != YAML_SCALAR_NODE) {
                json_decref(obj);
                return s_fail(cv, k ? k : node, path, "%s", "keys must be plain strings");
            }
            const char *key = (const char *)k->data.scalar.value;
            if (!strcmp(key, "<<") && k->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
                json_decref(obj);
                return s_fail(cv, k, path, "%s", "merge keys (<<) are not supported");
            }
            if (json_object_get(obj, key)) {
                json_decref(obj);
                return s_fail(cv, k, path, "duplicate key '%s'", key);
            }
            size_t old = s_path_push_key(path, psize, key);
            json_t *v = s_node(cv, yaml_document_get_node(cv->doc, pr->value), path, psize,
                               depth + 1);
            path[old] = '\0';
            if (!v || json_object_set_new(obj, key, v) < 0) {
                json_decref(obj);
                return NULL;
            }
        }
        return obj;
    }
    default:
        return s_fail(cv, node, path, "%s", "empty YAML node");
    }
}

static json_t *s_yaml(const char *text, size_t len, const char *origin) {
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) {
        fw_err_set(FW_ENOMEM, "out of memory");
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    json_t *out = NULL;
    if (!yaml_parser_load(&parser, &doc)) {
        fw_err_set(FW_EINVAL, "%s:%zu:%zu: malformed YAML: %s%s%s", origin,
                   parser.problem_mark.line + 1, parser.problem_mark.column + 1,
                   parser.problem ? parser.problem : "syntax error",
                   parser.context ? " " : "", parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        return NULL;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root) {
        fw_err_set(FW_EINVAL, "%s: the file is empty", origin);
    } else {
        /* A second document would be silently ignored otherwise. */
        yaml_document_t next;
        if (yaml_parser_load(&parser, &next)) {
            bool more = yaml_document_get_root_node(&next) != NULL;
            size_t line = more ? yaml_document_get_root_node(&next)->start_mark.line + 1 : 0;
            yaml_document_delete(&next);
            if (more) {
                fw_err_set(FW_EINVAL, "%s:%zu: a second YAML document; a spec is one document",
                           origin, line);
                goto done;
            }
        } else {
            fw_err_set(FW_EINVAL, "%s:%zu:%zu: malformed YAML: %s", origin,
                       parser.problem_mark.line + 1, parser.problem_mark.column + 1,
                       parser.problem ? parser.problem : "syntax error");
            goto done;
        }
        s_conv cv = {.origin = origin, .doc = &doc};
        char path[1024] = "";
        out = s_node(&cv, root, path, sizeof path, 0);
    }
done:
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return out;
}

static json_t *s_json(const char *text, size_t len, const char *origin) {
    json_error_t e;
    json_t *v = json_loadb(text, len, JSON_REJECT_DUPLICATES, &e);
    if (!v) {
        fw_err_set(FW_EINVAL, "%s:%d:%d: malformed JSON: %s", origin, e.line, e.column, e.text);
        return NULL;
    }
    return v;
}

json_t *ctl_spec_parse(const char *text, size_t len, const char *origin, bool yaml) {
    if (len > CTL_SPEC_MAX_BYTES) {
        fw_err_set(FW_ETOOBIG, "%s: %zu bytes, a spec may have at most 1 MiB", origin, len);
        return NULL;
    }
    if (memchr(text, '\0', len)) {
        fw_err_set(FW_EINVAL, "%s: contains a NUL byte (not a text file)", origin);
        return NULL;
    }
    json_t *v = yaml ? s_yaml(text, len, origin) : s_json(text, len, origin);
    if (v && !json_is_object(v)) {
        fw_err_set(FW_EINVAL, "%s: a spec must be an object (\"kind\": ..., \"shards\": ...), "
                              "not a %s", origin,
                   json_is_array(v) ? "list" : json_is_string(v) ? "string" : "scalar");
        json_decref(v);
        return NULL;
    }
    return v;
}

static bool s_ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

json_t *ctl_spec_load(const char *path) {
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) {
        fw_err_set(FW_EIO, "cannot open spec '%s': %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 64 << 10, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (len == cap) {
            if (cap > CTL_SPEC_MAX_BYTES) break;
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) break;
    }
    bool err = ferror(f);
    if (f != stdin) fclose(f);
    if (!buf) {
        fw_err_set(FW_ENOMEM, "out of memory reading '%s'", path);
        return NULL;
    }
    if (err) {
        free(buf);
        fw_err_set(FW_EIO, "cannot read spec '%s'", path);
        return NULL;
    }
    const char *origin = strcmp(path, "-") == 0 ? "<stdin>" : path;
    bool yaml;
    if (s_ends_with(path, ".json")) yaml = false;
    else if (s_ends_with(path, ".yaml") || s_ends_with(path, ".yml")) yaml = true;
    else {
        /* No telling extension: JSON if it starts like a JSON object. YAML
         * is a superset in spirit, but libyaml would accept JSON with worse
         * messages, so JSON goes to the JSON parser. */
        size_t i = 0;
        while (i < len && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\n' || buf[i] == '\r'))
            i++;
        yaml = !(i < len && (buf[i] == '{' || buf[i] == '['));
    }
    json_t *v = ctl_spec_parse(buf, len, origin, yaml);
    free(buf);
    return v;
}
