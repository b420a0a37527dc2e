/* ctl_lineage.c - `flywheelctl lineage show REF [-o text|json|dot] [--depth N]`.
 *
 * Theory of operation
 * -------------------
 * The leader builds the graph (coordinator/coord_lineage.c, docs/lineage.md):
 * one LINEAGE_GET {ref, depth} answered by MODEL_REPLY {doc}, doc =
 * {"root", "depth", "nodes": [{id, type, label, attrs}], "edges": [{from, to,
 * rel}]}, edges pointing from ancestor to descendant. This file only renders
 * it:
 *
 *   text  the root, then "ancestors:" as a tree growing upward (each node's
 *         children are the nodes it came from) and "descendants:" as a tree
 *         growing downward (what was made from it). The graph is a DAG, not a
 *         tree: a node reached a second time prints "(see above)" and is not
 *         expanded again, so the output stays linear in the graph's size.
 *   json  the doc as it came, indented.
 *   dot   a Graphviz digraph: one node per graph node (shape by type, the
 *         root drawn bold), one edge per graph edge labelled with its rel.
 *
 * The format flag is the command's own -o/--output (text, json, dot; "table"
 * reads as text); a global `-o json` given before the noun works too. */
#include "ctl.h"

#include "fw_err.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S_DEPTH_MAX 64 /* LINEAGE_GET.depth's bound in fw_messages.def */

typedef enum { S_TEXT, S_JSON, S_DOT } s_format;

/* ---------------------------------------------------------------- text */

/* "2026-11-23 10:02" of a wall-clock ms value, local time; "" when absent. */
static const char *s_when(const json_t *v, char *buf, size_t size) {
    buf[0] = '\0';
    if (!json_is_integer(v)) return buf;
    time_t t = (time_t)(json_integer_value(v) / 1000);
    struct tm tm;
    if (localtime_r(&t, &tm)) strftime(buf, size, "%Y-%m-%d %H:%M", &tm);
    return buf;
}

/* Append ", "-separated text to a summary. */
static void s_add(char *buf, size_t size, const char *text) {
    size_t n = strlen(buf);
    if (!text || !text[0] || n + 1 >= size) return;
    snprintf(buf + n, size - n, "%s%s", n ? ", " : "", text);
}

/* One or two useful attributes of a node, as "(...)" text; "" when none. */
static const char *s_summary(const json_t *node, char *out, size_t size) {
    const json_t *a = json_object_get(node, "attrs");
    const char *type = ctl_str(node, "type");
    char buf[512] = "", tmp[160];
    if (json_is_true(json_object_get(a, "missing"))) s_add(buf, sizeof buf, "missing");
    if (strcmp(type, "model") == 0) {
        const json_t *al = json_object_get(a, "aliases");
        for (size_t i = 0; i < json_array_size(al); i++) {
            snprintf(tmp, sizeof tmp, "@%s", json_string_value(json_array_get(al, i)));
            s_add(buf, sizeof buf, tmp);
        }
        if (ctl_str(a, "job")[0]) {
            snprintf(tmp, sizeof tmp, "job %s", ctl_str(a, "job"));
            s_add(buf, sizeof buf, tmp);
        }
    } else if (strcmp(type, "dataset") == 0) {
        if (json_is_integer(json_object_get(a, "records"))) {
            snprintf(tmp, sizeof tmp, "%" JSON_INTEGER_FORMAT " records",
                     json_integer_value(json_object_get(a, "records")));
            s_add(buf, sizeof buf, tmp);
        }
        const char *side = ctl_str(json_object_get(a, "split"), "side");
        if (side[0]) {
            snprintf(tmp, sizeof tmp, "%s split", side);
            s_add(buf, sizeof buf, tmp);
        }
    } else if (strcmp(type, "job") == 0) {
        s_add(buf, sizeof buf, ctl_str(a, "kind"));
        s_add(buf, sizeof buf, ctl_str(a, "state"));
    } else if (strcmp(type, "artifact") == 0) {
        s_add(buf, sizeof buf, ctl_str(a, "kind"));
        if (json_is_integer(json_object_get(a, "rows"))) {
            snprintf(tmp, sizeof tmp, "%" JSON_INTEGER_FORMAT "x%" JSON_INTEGER_FORMAT,
                     json_integer_value(json_object_get(a, "rows")),
                     json_integer_value(json_object_get(a, "dim")));
            s_add(buf, sizeof buf, tmp);
        }
        if (ctl_str(a, "model")[0]) {
            snprintf(tmp, sizeof tmp, "of %s", ctl_str(a, "model"));
            s_add(buf, sizeof buf, tmp);
        }
    }
    s_add(buf, sizeof buf,
          s_when(json_object_get(a, strcmp(type, "job") == 0 ? "submitted_at" : "created_at"), tmp,
                 sizeof tmp));
    if (buf[0])
        snprintf(out, size, "  (%s)", buf);
    else
        out[0] = '\0';
    return out;
}

typedef struct {
    json_t *byid;    /* id -> node (borrowed from the doc) */
    json_t *edges;   /* the doc's edges */
    json_t *visited; /* id -> true, per tree */
} s_tree;

/* Print the nodes linked to `id` (up: edges into it, down: out of it), one
 * level deeper, then theirs. */
static void s_branch(s_tree *t, const char *id, bool up, int level) {
    size_t i;
    json_t *e;
    json_array_foreach(t->edges, i, e) {
        if (strcmp(ctl_str(e, up ? "to" : "from"), id) != 0) continue;
        const char *other = ctl_str(e, up ? "from" : "to");
        json_t *n = json_object_get(t->byid, other);
        if (!n) continue;
        bool seen = json_object_get(t->visited, other) != NULL;
        char sum[600];
        printf("%*s%s %s  [%s]%s\n", 2 * level, "", ctl_str(n, "type"), ctl_str(n, "label"),
               ctl_str(e, "rel"), seen ? "  (see above)" : s_summary(n, sum, sizeof sum));
        if (seen) continue;
        json_object_set_new(t->visited, other, json_true());
        s_branch(t, other, up, level + 1);
    }
}

static void s_print_text(const json_t *doc) {
    s_tree t = {json_object(), json_object_get(doc, "edges"), NULL};
    const char *root = ctl_str(doc, "root");
    size_t i;
    json_t *n;
    json_array_foreach(json_object_get(doc, "nodes"), i, n) {
        json_object_set(t.byid, ctl_str(n, "id"), n);
    }
    json_t *r = json_object_get(t.byid, root);
    char sum[600];
    printf("%s %s%s\n", ctl_str(r, "type"), ctl_str(r, "label"), s_summary(r, sum, sizeof sum));
    for (int up = 1; up >= 0; up--) {
        bool any = false;
        json_t *e;
        json_array_foreach(t.edges, i, e) {
            if (strcmp(ctl_str(e, up ? "to" : "from"), root) == 0) any = true;
        }
        printf("%s:%s\n", up ? "ancestors" : "descendants", any ? "" : " none");
        t.visited = json_pack("{s:b}", root, 1);
        s_branch(&t, root, up, 1);
        json_decref(t.visited);
    }
    json_decref(t.byid);
}

/* ----------------------------------------------------------------- dot */

/* s as the inside of a DOT double-quoted string. */
static void s_dot_str(const char *s) {
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') putchar('\\');
        if ((unsigned char)*s >= 0x20) putchar(*s);
    }
}

static const char *s_shape(const char *type) {
    if (strcmp(type, "model") == 0) return "box";
    if (strcmp(type, "dataset") == 0) return "cylinder";
    if (strcmp(type, "job") == 0) return "ellipse";
    if (strcmp(type, "artifact") == 0) return "note";
    return "plaintext";
}

static void s_print_dot(const json_t *doc) {
    const char *root = ctl_str(doc, "root");
    printf("digraph lineage {\n  rankdir=LR;\n  node [fontname=\"Helvetica\", fontsize=10];\n"
           "  edge [fontname=\"Helvetica\", fontsize=9];\n");
    size_t i;
    json_t *n, *e;
    json_array_foreach(json_object_get(doc, "nodes"), i, n) {
        printf("  \"");
        s_dot_str(ctl_str(n, "id"));
        printf("\" [label=\"");
        s_dot_str(ctl_str(n, "type"));
        printf("\\n");
        s_dot_str(ctl_str(n, "label"));
        printf("\", shape=%s%s%s];\n", s_shape(ctl_str(n, "type")),
               strcmp(ctl_str(n, "id"), root) == 0 ? ", penwidth=2" : "",
               json_is_true(ctl_get(n, "attrs.missing")) ? ", style=dashed" : "");
    }
    json_array_foreach(json_object_get(doc, "edges"), i, e) {
        printf("  \"");
        s_dot_str(ctl_str(e, "from"));
        printf("\" -> \"");
        s_dot_str(ctl_str(e, "to"));
        printf("\" [label=\"");
        s_dot_str(ctl_str(e, "rel"));
        printf("\"];\n");
    }
    printf("}\n");
}

/* ------------------------------------------------------------- command */

static int s_cmd_show(ctl_t *c) {
    const char *ref = c->argv[0];
    const char *o = ctl_flag(c, "output");
    s_format fmt = c->output == CTL_OUT_JSON ? S_JSON : S_TEXT;
    if (o) {
        if (strcmp(o, "text") == 0 || strcmp(o, "table") == 0)
            fmt = S_TEXT;
        else if (strcmp(o, "json") == 0)
            fmt = S_JSON;
        else if (strcmp(o, "dot") == 0)
            fmt = S_DOT;
        else
            return (ctl_errorf(c, "-o %s: expected text, json or dot", o), CTL_EXIT_USAGE);
    }
    uint64_t depth = 0;
    const char *ds = ctl_flag(c, "depth");
    if (ds) {
        char *end;
        errno = 0;
        depth = strtoull(ds, &end, 10);
        if (!ds[0] || *end || errno || ds[0] == '-' || depth > S_DEPTH_MAX)
            return (ctl_errorf(c, "--depth %s: expected a number 0..%d", ds, S_DEPTH_MAX),
                    CTL_EXIT_USAGE);
    }
    if (!ref[0]) return (ctl_errorf(c, "lineage show: REF is empty"), CTL_EXIT_USAGE);
    if (ctl_connect(c) < 0) return CTL_EXIT_ERROR;
    fw_msg_t *req = ctl_request(c, FW_MSG_LINEAGE_GET);
    if (!req) return CTL_EXIT_ERROR;
    int rc = fw_msg_set_str(req, "ref", ref);
    if (rc == 0 && ds) rc = fw_msg_set_uint(req, "depth", depth);
    if (rc < 0) {
        fw_msg_destroy(&req);
        return ctl_errorf(c, "lineage %s: %s", ref, fw_err_detail());
    }
    json_t *doc = ctl_call_doc(c, &req, NULL);
    if (!doc) return CTL_EXIT_ERROR;
    if (!json_is_object(doc) || !json_is_array(json_object_get(doc, "nodes")) ||
        !json_is_array(json_object_get(doc, "edges"))) {
        json_decref(doc);
        return ctl_errorf(c, "the coordinator's lineage doc has no nodes/edges arrays");
    }
    if (fmt == S_JSON)
        ctl_print_json(doc);
    else if (fmt == S_DOT)
        s_print_dot(doc);
    else
        s_print_text(doc);
    json_decref(doc);
    return CTL_EXIT_OK;
}

static const ctl_flag_def s_show_flags[] = {
    {"output", 'o', "FORMAT",
     "text (default: a tree up and a tree down), json, or dot (Graphviz)."},
    {"depth", 0, "N", "Hops to follow each way, 0..64 (default 16)."},
    {NULL, 0, NULL, NULL}};

const ctl_cmd_def ctl_lineage_cmds[] = {
    {"lineage", "show", "REF", 1, 1,
     "Ancestors and descendants of a model, dataset, job or artifact.",
     "REF: NAME (the latest version), NAME:VERSION or NAME@ALIAS for a model (or model:REF); "
     "dataset:NAME[@VERSION]; job:ID or j-NNNNNN; sha256:HEX or artifact:sha256:HEX for a "
     "model directory, dataset blob, embedding matrix or eval scores (a unique prefix of at "
     "least 8 hex digits will do). Ancestors are followed up to --depth hops against the "
     "edges, descendants up to --depth hops along them; siblings (another child of an "
     "ancestor) are not shown. Edges: dataset->dataset derived, dataset->model input, "
     "model->model parent, model->job base/input, dataset->job input, job->model output, "
     "job->artifact output, model/dataset->artifact content (docs/lineage.md).",
     s_show_flags, s_cmd_show},
    {NULL, NULL, NULL, 0, 0, NULL, NULL, NULL, NULL}};
