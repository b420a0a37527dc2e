/* ctl_main.c - flywheelctl: argument parsing, help at every level, dispatch.
 *
 * Theory of operation. The command line is `flywheelctl [global flags] NOUN
 * VERB [ARGS] [flags]`; global flags may also follow the verb (as in
 * kubectl), command flags only follow it. Parsing is one pass: the first two
 * positional arguments pick a row of the command table (ctl_cmd_def rows in
 * ctl_<noun>.c), and from then on that row's flags are known too. --help at
 * any point prints the help of the deepest level reached (all nouns, a
 * noun's verbs, one command) on stdout and exits 0; a usage error prints the
 * relevant help on stderr and exits 64.
 *
 * The token and the connection are set up lazily (ctl_connect), so --help and
 * usage errors never need a token file or a reachable coordinator. */
#include "ctl.h"

#include "fw_err.h"

#include <czmq.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define CTL_VERSION "0.1.0"

typedef struct {
    const char *noun;
    const char *summary;
    const ctl_cmd_def *cmds;
} ctl_noun_def;

static const ctl_noun_def s_nouns[] = {
    {"cluster", "The cluster as a whole: leader, coordinators, agents, queue.", ctl_cluster_cmds},
    {"agent", "Agents: the nodes that run tasks.", ctl_agent_cmds},
    {"job", "Jobs: submit, watch, cancel, read logs.", ctl_job_cmds},
    {"task", "Tasks: the shards or ranks of a job.", ctl_task_cmds},
    {"dataset", "Datasets: ingest, version, download and split training data.", ctl_dataset_cmds},
    {"model", "Models: register, version, alias and download model directories.", ctl_model_cmds},
    {"eval", "Evaluations: compare two models' per-example scores.", ctl_eval_cmds},
    {"lineage", "Lineage: where a model, dataset, job or artifact came from, what came of it.",
     ctl_lineage_cmds},
    {"artifact", "Artifacts: download any blob of the store by digest.", ctl_artifact_cmds},
    {NULL, NULL, NULL}};

static const ctl_flag_def s_global_flags[] = {
    {"coordinator", 0, "LIST",
     "Coordinator client endpoints, comma-separated tcp://host:port (default: "
     "$FLYWHEEL_COORDINATOR). Any of them will do: standbys redirect to the leader."},
    {"token-file", 0, "FILE",
     "File whose first non-comment line starts with the bearer token (default: "
     "$FLYWHEEL_TOKEN_FILE; $FLYWHEEL_TOKEN gives the token itself)."},
    {"output", 'o', "FORMAT", "Output format: table (default) or json."},
    {"timeout", 0, "DURATION",
     "How long to wait for each coordinator to answer a request (default 5s)."},
    {"curve-server-key", 0, "FILE",
     "The coordinators' public certificate (zcert) when CURVE is enabled (default: "
     "$FLYWHEEL_CURVE_SERVER_KEY)."},
    {"help", 'h', NULL, "Show help for the command (works at every level)."},
    {"version", 0, NULL, "Print the version and exit."},
    {NULL, 0, NULL, NULL}};

/* ------------------------------------------------------------------ help */

/* "  left   text" with text wrapped at 100 columns under itself. */
static void s_row(FILE *out, const char *left, const char *text) {
    enum { COL = 31, WIDTH = 100 };
    int col = fprintf(out, "  %-28s ", left);
    if (col > COL) {
        fprintf(out, "\n%*s", COL, "");
        col = COL;
    }
    const char *p = text;
    bool first = true;
    while (*p) {
        while (*p == ' ') p++;
        size_t word = strcspn(p, " ");
        if (!word) break;
        if (!first && col + 1 + (int)word > WIDTH) {
            fprintf(out, "\n%*s", COL, "");
            col = COL;
        } else if (!first) {
            col += fprintf(out, " ");
        }
        col += fprintf(out, "%.*s", (int)word, p);
        p += word;
        first = false;
    }
    fputc('\n', out);
}

static void s_print_flags(FILE *out, const ctl_flag_def *flags) {
    for (const ctl_flag_def *f = flags; f && f->name; f++) {
        char left[64];
        if (f->short_name)
            snprintf(left, sizeof left, "-%c, --%s%s%s", f->short_name, f->name,
                     f->arg ? " " : "", f->arg ? f->arg : "");
        else
            snprintf(left, sizeof left, "    --%s%s%s", f->name, f->arg ? " " : "",
                     f->arg ? f->arg : "");
        s_row(out, left, f->help);
    }
}

static void s_help_exit_codes(FILE *out) {
    fprintf(out, "\nExit codes: 0 success, 1 error (refused, unreachable, bad input), 64 usage "
                 "error.\n`job wait` and `job submit --wait`: 0 succeeded, 1 failed, 2 "
                 "cancelled, 3 timed out,\n4 state unknown.\n");
}

static void s_help_top(FILE *out) {
    fprintf(out, "usage: flywheelctl [global flags] <noun> <verb> [args] [flags]\n\n"
                 "Flywheel's cluster admin CLI: submit and watch jobs, inspect agents and "
                 "tasks.\n\nCommands:\n");
    for (const ctl_noun_def *n = s_nouns; n->noun; n++)
        for (const ctl_cmd_def *c = n->cmds; c->noun; c++) {
            char left[64];
            snprintf(left, sizeof left, "%s %s%s%s", c->noun, c->verb, c->args ? " " : "",
                     c->args ? c->args : "");
            s_row(out, left, c->summary);
        }
    fprintf(out, "\nGlobal flags (before or after the command):\n");
    s_print_flags(out, s_global_flags);
    s_help_exit_codes(out);
    fprintf(out, "\nRun 'flywheelctl <noun> --help' or 'flywheelctl <noun> <verb> --help' for "
                 "more.\nReference: docs/cli.md.\n");
}

static void s_help_noun(FILE *out, const ctl_noun_def *n) {
    fprintf(out, "usage: flywheelctl %s <verb> [args] [flags]\n\n%s\n\nVerbs:\n", n->noun,
            n->summary);
    for (const ctl_cmd_def *c = n->cmds; c->noun; c++) {
        char left[64];
        snprintf(left, sizeof left, "%s%s%s", c->verb, c->args ? " " : "", c->args ? c->args : "");
        s_row(out, left, c->summary);
    }
    fprintf(out, "\nRun 'flywheelctl %s <verb> --help' for a verb's flags; 'flywheelctl --help' "
                 "for the global flags.\n", n->noun);
}

static void s_help_cmd(FILE *out, const ctl_cmd_def *c) {
    fprintf(out, "usage: flywheelctl %s %s%s%s%s\n\n%s\n", c->noun, c->verb, c->args ? " " : "",
            c->args ? c->args : "", c->flags && c->flags->name ? " [flags]" : "", c->summary);
    if (c->help) fprintf(out, "\n%s\n", c->help);
    if (c->flags && c->flags->name) {
        fprintf(out, "\nFlags:\n");
        s_print_flags(out, c->flags);
    }
    fprintf(out, "\nGlobal flags:\n");
    s_print_flags(out, s_global_flags);
}

/* -------------------------------------------------------------- helpers */

int ctl_errorf(const ctl_t *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", c->prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return CTL_EXIT_ERROR;
}

const char *ctl_flag(const ctl_t *c, const char *name) {
    for (int i = c->nflags - 1; i >= 0; i--)
        if (strcmp(c->flag_name[i], name) == 0) return c->flag_val[i];
    return NULL;
}

bool ctl_flag_on(const ctl_t *c, const char *name) {
    const char *v = ctl_flag(c, name);
    return v && strcmp(v, "false") != 0;
}

/* The token: $FLYWHEEL_TOKEN, or the first field of the first line of the
 * token file that is not blank or a comment. The coordinator's tokens file
 * ("<token> <name> <role>" lines) works as a client token file too: its
 * first entry is used. */
static int s_load_token(ctl_t *c) {
    if (c->token) return 0;
    const char *path = c->token_file;
    if (!path || !*path) {
        const char *env = getenv("FLYWHEEL_TOKEN");
        if (env && *env) {
            c->token = strdup(env);
            return c->token ? 0 : -1;
        }
        ctl_errorf(c, "no token: pass --token-file FILE or set FLYWHEEL_TOKEN_FILE (or "
                      "FLYWHEEL_TOKEN)");
        return -1;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        ctl_errorf(c, "cannot read token file '%s': %s", path, strerror(errno));
        return -1;
    }
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (*p == '#' || *p == '\n' || *p == '\r' || *p == '\0') continue;
        size_t n = strcspn(p, " \t\r\n");
        p[n] = '\0';
        c->token = strdup(p);
        break;
    }
    fclose(f);
    if (!c->token) {
        ctl_errorf(c, "token file '%s' holds no token", path);
        return -1;
    }
    return 0;
}

int ctl_connect(ctl_t *c) {
    if (c->conn) return 0;
    if (s_load_token(c) < 0) return -1;
    c->conn = ctl_conn_new(c->endpoints, c->timeout_ms, c->curve_key);
    if (!c->conn) {
        ctl_errorf(c, "%s", fw_err_detail());
        return -1;
    }
    return 0;
}

fw_msg_t *ctl_request(ctl_t *c, int id) {
    fw_msg_t *m = fw_msg_new(id);
    if (!m || fw_msg_set_str(m, "token", c->token) < 0) {
        ctl_errorf(c, "cannot build %s: %s", fw_msg_id_name(id), fw_err_detail());
        fw_msg_destroy(&m);
        return NULL;
    }
    return m;
}

int ctl_call(ctl_t *c, fw_msg_t *req, fw_msg_t **reply) {
    int rc = ctl_conn_call(c->conn, req, reply);
    if (rc < 0) {
        if (rc == FW_EAUTH || rc == FW_EPERM)
            ctl_errorf(c, "%s: %s (%s)", fw_strerror(rc), fw_err_detail(), fw_errname(rc));
        else
            ctl_errorf(c, "%s (%s)", fw_err_detail(), fw_errname(rc));
    }
    return rc;
}

json_t *ctl_reply_doc(ctl_t *c, const fw_msg_t *reply) {
    const char *text = fw_msg_get_str(reply, "doc");
    json_error_t e;
    json_t *doc = text ? json_loads(text, JSON_DECODE_ANY, &e) : NULL;
    if (!doc)
        ctl_errorf(c, "the coordinator's %s holds no valid JSON doc%s%s", fw_msg_name(reply),
                   text ? ": " : "", text ? e.text : "");
    return doc;
}

json_t *ctl_call_doc(ctl_t *c, fw_msg_t **req, bool *existing) {
    fw_msg_t *reply = NULL;
    int rc = ctl_call(c, *req, &reply);
    fw_msg_destroy(req);
    if (rc < 0) return NULL;
    if (existing) *existing = fw_msg_get_bool(reply, "existing");
    json_t *doc = ctl_reply_doc(c, reply);
    fw_msg_destroy(&reply);
    return doc;
}

json_t *ctl_list_all(ctl_t *c, int msg_id, void (*fill)(fw_msg_t *req, void *arg), void *arg,
                     int *err) {
    json_t *all = json_array();
    char cursor[300] = "";
    *err = 0;
    /* Pages of 1000 keep every reply far below the 4 MiB doc bound; the page
     * count is bounded so a coordinator handing out cursors forever cannot
     * loop the CLI. */
    for (int page = 0; page < 10000; page++) {
        fw_msg_t *req = ctl_request(c, msg_id);
        if (!req) {
            *err = FW_ENOMEM;
            break;
        }
        if (fill) fill(req, arg);
        fw_msg_set_uint(req, "limit", 1000);
        if (cursor[0]) fw_msg_set_str(req, "cursor", cursor);
        fw_msg_t *reply = NULL;
        int rc = ctl_call(c, req, &reply);
        fw_msg_destroy(&req);
        if (rc < 0) {
            *err = rc;
            break;
        }
        json_t *doc = ctl_reply_doc(c, reply);
        if (!doc || !json_is_array(doc)) {
            if (doc) ctl_errorf(c, "%s: doc is not a JSON array", fw_msg_name(reply));
            json_decref(doc);
            fw_msg_destroy(&reply);
            *err = FW_EPROTO;
            break;
        }
        json_array_extend(all, doc);
        json_decref(doc);
        const char *next = fw_msg_has(reply, "next_cursor") ? fw_msg_get_str(reply, "next_cursor")
                                                            : NULL;
        bool more = next && *next && strcmp(next, cursor) != 0;
        if (more) snprintf(cursor, sizeof cursor, "%s", next);
        fw_msg_destroy(&reply);
        if (!more) return all;
    }
    if (!*err) {
        ctl_errorf(c, "%s: too many pages", fw_msg_id_name(msg_id));
        *err = FW_EPROTO;
    }
    json_decref(all);
    return NULL;
}

/* --------------------------------------------------------------- parsing */

static const ctl_noun_def *s_find_noun(const char *name) {
    for (const ctl_noun_def *n = s_nouns; n->noun; n++)
        if (strcmp(n->noun, name) == 0) return n;
    /* Plurals read naturally ("flywheelctl jobs list"); accept them. */
    size_t len = strlen(name);
    for (const ctl_noun_def *n = s_nouns; n->noun; n++)
        if (len == strlen(n->noun) + 1 && name[len - 1] == 's' &&
            strncmp(n->noun, name, len - 1) == 0)
            return n;
    return NULL;
}

static const ctl_cmd_def *s_find_cmd(const ctl_noun_def *n, const char *verb) {
    for (const ctl_cmd_def *c = n->cmds; c->noun; c++)
        if (strcmp(c->verb, verb) == 0) return c;
    return NULL;
}

static const ctl_flag_def *s_find_flag(const ctl_flag_def *flags, const char *name, size_t len,
                                       char short_name) {
    for (const ctl_flag_def *f = flags; f && f->name; f++) {
        if (short_name && f->short_name == short_name) return f;
        if (!short_name && strlen(f->name) == len && strncmp(f->name, name, len) == 0) return f;
    }
    return NULL;
}

static int s_usage_error(ctl_t *c, const ctl_noun_def *noun, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int s_usage_error(ctl_t *c, const ctl_noun_def *noun, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", c->prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    if (c->cmd)
        fprintf(stderr, "Run 'flywheelctl %s %s --help' for usage.\n", c->cmd->noun,
                c->cmd->verb);
    else if (noun)
        fprintf(stderr, "Run 'flywheelctl %s --help' for its verbs.\n", noun->noun);
    else
        fprintf(stderr, "Run 'flywheelctl --help' for the commands.\n");
    return CTL_EXIT_USAGE;
}

static int s_set_global(ctl_t *c, const ctl_flag_def *f, const char *val) {
    if (strcmp(f->name, "coordinator") == 0) c->endpoints = val;
    else if (strcmp(f->name, "token-file") == 0) c->token_file = val;
    else if (strcmp(f->name, "curve-server-key") == 0) c->curve_key = val;
    else if (strcmp(f->name, "output") == 0) {
        if (strcmp(val, "json") == 0) c->output = CTL_OUT_JSON;
        else if (strcmp(val, "table") == 0) c->output = CTL_OUT_TABLE;
        else return s_usage_error(c, NULL, "-o %s: expected table or json", val);
    } else if (strcmp(f->name, "timeout") == 0) {
        int64_t ms;
        if (ctl_parse_duration(val, &ms) < 0 || ms <= 0)
            return s_usage_error(c, NULL, "--timeout %s: expected a positive duration (5s, "
                                          "500ms)", val);
        c->timeout_ms = ms;
    }
    return 0;
}

int main(int argc, char **argv) {
    ctl_t ctl;
    memset(&ctl, 0, sizeof ctl);
    ctl_t *c = &ctl;
    c->prog = "flywheelctl";
    c->timeout_ms = CTL_DEFAULT_TIMEOUT_MS;
    c->endpoints = getenv("FLYWHEEL_COORDINATOR");
    c->token_file = getenv("FLYWHEEL_TOKEN_FILE");
    c->curve_key = getenv("FLYWHEEL_CURVE_SERVER_KEY");
    /* czmq would otherwise install its own SIGINT handler and ignore Ctrl-C
     * while a request waits. */
    zsys_handler_set(NULL);

    const char *pos[64];
    int npos = 0;
    bool help = false, only_pos = false;
    const ctl_noun_def *noun = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool is_flag = !only_pos && a[0] == '-' && a[1] != '\0';
        if (is_flag && strcmp(a, "--") == 0) {
            only_pos = true;
            continue;
        }
        if (!is_flag) {
            if (npos == (int)(sizeof pos / sizeof pos[0]))
                return s_usage_error(c, noun, "too many arguments");
            pos[npos++] = a;
            if (npos == 1 && strcmp(a, "help") != 0) {
                noun = s_find_noun(a);
                if (!noun) return s_usage_error(c, NULL, "unknown command '%s'", a);
            } else if (npos == 2 && noun) {
                c->cmd = s_find_cmd(noun, a);
                if (!c->cmd && !help)
                    return s_usage_error(c, noun, "unknown verb '%s' for '%s'", a, noun->noun);
            }
            continue;
        }
        /* --name, --name=value, -x, -xVALUE */
        const char *name, *inline_val = NULL;
        size_t nlen;
        char shortc = 0;
        if (a[1] == '-') {
            name = a + 2;
            const char *eq = strchr(name, '=');
            nlen = eq ? (size_t)(eq - name) : strlen(name);
            if (eq) inline_val = eq + 1;
        } else {
            name = a + 1;
            nlen = 1;
            shortc = a[1];
            if (a[2]) inline_val = a[2] == '=' ? a + 3 : a + 2;
        }
        /* A command's own flag wins over a global one of the same name
         * (`job wait --timeout` is the wait's limit, not the request's). */
        const ctl_flag_def *f = c->cmd ? s_find_flag(c->cmd->flags, name, nlen, shortc) : NULL;
        bool global = f == NULL;
        if (!f) f = s_find_flag(s_global_flags, name, nlen, shortc);
        if (!f)
            return s_usage_error(c, noun, "unknown flag '%s'%s", a,
                                 c->cmd ? "" : " (command flags go after the verb)");
        const char *val = "true";
        if (f->arg) {
            if (inline_val) val = inline_val;
            else if (i + 1 < argc) val = argv[++i];
            else return s_usage_error(c, noun, "flag --%s needs a value (%s)", f->name, f->arg);
        } else if (inline_val) {
            if (strcmp(inline_val, "true") && strcmp(inline_val, "false"))
                return s_usage_error(c, noun, "flag --%s takes no value", f->name);
            val = inline_val;
        }
        if (global) {
            if (strcmp(f->name, "help") == 0) {
                help = true;
                continue;
            }
            if (strcmp(f->name, "version") == 0) {
                printf("flywheelctl %s (protocol %d)\n", CTL_VERSION, FW_PROTO_VERSION);
                return 0;
            }
            int rc = s_set_global(c, f, val);
            if (rc) return rc;
        } else {
            if (c->nflags == CTL_MAX_FLAGS) return s_usage_error(c, noun, "too many flags");
            c->flag_name[c->nflags] = f->name;
            c->flag_val[c->nflags++] = val;
        }
    }

    /* `flywheelctl help [noun [verb]]` is --help spelled as a command. */
    if (npos > 0 && strcmp(pos[0], "help") == 0) {
        help = true;
        noun = npos > 1 ? s_find_noun(pos[1]) : NULL;
        if (npos > 1 && !noun) return s_usage_error(c, NULL, "unknown command '%s'", pos[1]);
        c->cmd = noun && npos > 2 ? s_find_cmd(noun, pos[2]) : NULL;
        if (noun && npos > 2 && !c->cmd)
            return s_usage_error(c, noun, "unknown verb '%s' for '%s'", pos[2], noun->noun);
    }
    if (help) {
        if (c->cmd) s_help_cmd(stdout, c->cmd);
        else if (noun) s_help_noun(stdout, noun);
        else s_help_top(stdout);
        return 0;
    }
    if (!noun) {
        s_help_top(stderr);
        return CTL_EXIT_USAGE;
    }
    if (!c->cmd) {
        fprintf(stderr, "%s: '%s' needs a verb\n\n", c->prog, noun->noun);
        s_help_noun(stderr, noun);
        return CTL_EXIT_USAGE;
    }
    c->argc = npos - 2;
    c->argv = pos + 2;
    if (c->argc < c->cmd->min_args)
        return s_usage_error(c, noun, "'%s %s' needs %s", c->cmd->noun, c->cmd->verb,
                             c->cmd->args ? c->cmd->args : "arguments");
    if (c->argc > c->cmd->max_args)
        return s_usage_error(c, noun, "'%s %s' takes %s%s, got extra argument '%s'",
                             c->cmd->noun, c->cmd->verb, c->cmd->max_args ? "only " : "no arguments",
                             c->cmd->max_args ? c->cmd->args : "", c->argv[c->cmd->max_args]);
    int rc = c->cmd->run(c);
    ctl_conn_destroy(&c->conn);
    free(c->token);
    return rc;
}
