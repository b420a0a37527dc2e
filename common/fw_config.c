/* fw_config.c - the option-table parser (see fw_config.h).
 *
 * Theory of operation. fw_config_add() turns every table row into an entry
 * holding the parsed default. Each source then offers values; a value is
 * always parsed and checked (so a bad line in the file is reported even when
 * an environment variable overrides it) and stored only when its source
 * ranks at least as high as the one that set the entry:
 *
 *     entry.src:  DEFAULT(0) < FILE(1) < ENV(2) < FLAG(3) < SET(4)
 *
 * so precedence follows from the ranks and not from the order the sources
 * are read in, and within one source the last value wins (`--x=1 --x=2`).
 *
 * The file is read with libyaml's event parser rather than its document
 * loader: events carry the line and column of every key and value, which
 * every error message needs, and a recursive walk over mapping events turns
 * nesting into dotted keys without building a tree. Aliases, tags and
 * nested sequences have no meaning for a flat table of options and are
 * rejected; the walk stops at a fixed depth so that hostile input cannot
 * exhaust the stack.
 *
 * Unknown keys, flags and FLYWHEEL_* variables get a "did you mean" from the
 * option with the smallest edit distance, when that distance is small
 * relative to the name (a third of its length, at least 1, at most 3).
 *
 * Invariants (checked by s_entry_ok in debug builds):
 *   1. Every entry holds a value of its row's type; strings and lists are
 *      never NULL (an empty list is a one-element array holding NULL).
 *   2. An enum entry's index is within its choices and its text is the
 *      canonical (table) spelling of that choice. */
#include "fw_config.h"

#include "fw_err.h"
#include "fw_file.h"
#include "fw_log.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <yaml.h>

extern char **environ;

/* Config files are small hand-written text; 1 MiB is far beyond any real one
 * and stops a wrong --config (a model file) from being slurped whole. */
#define S_MAX_FILE (1024 * 1024)
/* YAML nesting deeper than this is not a configuration. */
#define S_MAX_DEPTH  16
#define S_NAME_MAX   128
#define S_ENV_PREFIX "FLYWHEEL_"
#define S_ENV_CONFIG "FLYWHEEL_CONFIG"
#define S_HELP_WIDTH 78

typedef struct {
    int64_t i; /* int, duration (ms), size (bytes), bool (0/1), enum index */
    double d;
    char *s;     /* string, enum text */
    char **list; /* NULL-terminated */
    size_t nlist;
} s_value;

typedef struct {
    const fw_opt *opt;
    char env[S_NAME_MAX + 16];
    fw_config_src src;
    char origin[192];
    int file_gen; /* the file load that last named this key (duplicate check) */
    int file_line;
    s_value v;
} s_entry;

struct fw_config {
    char *prog;
    char *summary;
    char *usage;
    char *default_file;
    char *flag_file; /* --config */
    char *file;      /* the file read */
    s_entry *entries;
    size_t n, cap;
    char **args;
    int nargs;
    char **warnings;
    size_t nwarnings;
    bool stop_at_positional;
    bool strict_env;
    int gen;
};

static const char *s_type_name(fw_opt_type t) {
    switch (t) {
    case FW_OPT_STRING:
        return "string";
    case FW_OPT_INT:
        return "int";
    case FW_OPT_DOUBLE:
        return "double";
    case FW_OPT_BOOL:
        return "bool";
    case FW_OPT_DURATION:
        return "duration";
    case FW_OPT_SIZE:
        return "size";
    case FW_OPT_LIST:
        return "list";
    case FW_OPT_ENUM:
        return "enum";
    }
    return "?";
}

/* ---- values ------------------------------------------------------------- */

static void s_value_free(s_value *v) {
    free(v->s);
    if (v->list)
        for (size_t i = 0; i < v->nlist; i++) free(v->list[i]);
    free(v->list);
    memset(v, 0, sizeof *v);
}

/* Append item to a NULL-terminated list; -1 on out of memory. */
static int s_list_push(s_value *v, const char *item, size_t len) {
    char **nl = realloc(v->list, (v->nlist + 2) * sizeof *nl);
    if (!nl) return -1;
    v->list = nl;
    if (!(nl[v->nlist] = strndup(item, len))) {
        nl[v->nlist] = NULL;
        return -1;
    }
    nl[++v->nlist] = NULL;
    return 0;
}

/* Copy text without leading and trailing blanks into buf; -1 if too long. */
static int s_trim(const char *text, char *buf, size_t size) {
    while (isspace((unsigned char)*text)) text++;
    size_t n = strlen(text);
    while (n > 0 && isspace((unsigned char)text[n - 1])) n--;
    if (n >= size) return -1;
    memcpy(buf, text, n);
    buf[n] = '\0';
    return 0;
}

/* Parse "<digits>[.<digits>]" at *sp; advances *sp. -1 when no number. */
static int s_number(const char **sp, int64_t *ip, double *fp) {
    const char *s = *sp;
    if (!isdigit((unsigned char)*s)) return -1;
    int64_t i = 0;
    while (isdigit((unsigned char)*s)) {
        int dig = *s++ - '0';
        if (i > (INT64_MAX - dig) / 10) return -1;
        i = i * 10 + dig;
    }
    double f = 0, scale = 0.1;
    if (*s == '.') {
        s++;
        if (!isdigit((unsigned char)*s)) return -1;
        while (isdigit((unsigned char)*s)) {
            f += (*s++ - '0') * scale;
            scale /= 10;
        }
    }
    *ip = i;
    *fp = f;
    *sp = s;
    return 0;
}

/* i + f times mult, rounded, without overflow; -1 when it would. */
static int s_scale(int64_t i, double f, int64_t mult, int64_t *out) {
    if (i > INT64_MAX / mult) return -1;
    int64_t r = i * mult;
    int64_t extra = (int64_t)llround(f * (double)mult);
    if (r > INT64_MAX - extra) return -1;
    *out = r + extra;
    return 0;
}

int fw_config_parse_duration(const char *text, int64_t *ms) {
    static const struct {
        const char *unit;
        int64_t ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
    char buf[64];
    if (s_trim(text, buf, sizeof buf) < 0 || !buf[0]) goto bad;
    const char *s = buf;
    int64_t total = 0, i;
    double f;
    if (s_number(&s, &i, &f) == 0 && *s == '\0' && f == 0) {
        *ms = i; /* a plain number is milliseconds */
        return 0;
    }
    s = buf;
    while (*s) {
        if (s_number(&s, &i, &f) < 0) goto bad;
        size_t ulen = 0;
        while (isalpha((unsigned char)s[ulen])) ulen++;
        int64_t mult = 0, part;
        for (size_t u = 0; u < sizeof units / sizeof units[0]; u++)
            if (ulen == strlen(units[u].unit) && strncmp(s, units[u].unit, ulen) == 0)
                mult = units[u].ms;
        if (!mult || s_scale(i, f, mult, &part) < 0 || total > INT64_MAX - part) goto bad;
        total += part;
        s += ulen;
    }
    *ms = total;
    return 0;
bad:
    return fw_err_set(FW_EINVAL, "invalid duration '%s' (expected e.g. 250ms, 5s, 2m, 1h30m)",
                      text);
}

int fw_config_parse_size(const char *text, int64_t *bytes) {
    static const struct {
        const char *unit;
        int64_t mult;
    } units[] = {{"b", 1},           {"kib", 1LL << 10},   {"mib", 1LL << 20},
                 {"gib", 1LL << 30}, {"tib", 1LL << 40},   {"kb", 1000LL},
                 {"mb", 1000000LL},  {"gb", 1000000000LL}, {"tb", 1000000000000LL}};
    char buf[64];
    if (s_trim(text, buf, sizeof buf) < 0) goto bad;
    const char *s = buf;
    int64_t i;
    double f;
    if (s_number(&s, &i, &f) < 0) goto bad;
    while (*s == ' ') s++;
    int64_t mult = *s ? 0 : 1;
    for (size_t u = 0; *s && u < sizeof units / sizeof units[0]; u++)
        if (strcasecmp(s, units[u].unit) == 0) mult = units[u].mult;
    if (!mult || s_scale(i, f, mult, bytes) < 0) goto bad;
    return 0;
bad:
    return fw_err_set(FW_EINVAL, "invalid size '%s' (expected e.g. 512, 64KiB, 1MiB, 2GiB)", text);
}

void fw_config_format_duration(int64_t ms, char *buf, size_t size) {
    static const struct {
        const char *unit;
        int64_t ms;
    } units[] = {{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};
    if (ms <= 0) {
        snprintf(buf, size, "%lldms", (long long)ms);
        return;
    }
    size_t off = 0;
    buf[0] = '\0';
    for (size_t u = 0; u < sizeof units / sizeof units[0]; u++) {
        int64_t q = ms / units[u].ms;
        if (q == 0) continue;
        ms -= q * units[u].ms;
        int n =
            snprintf(buf + off, off < size ? size - off : 0, "%lld%s", (long long)q, units[u].unit);
        off += n > 0 ? (size_t)n : 0;
    }
}

void fw_config_format_size(int64_t bytes, char *buf, size_t size) {
    static const char *units[] = {"TiB", "GiB", "MiB", "KiB"};
    for (int u = 0; u < 4 && bytes > 0; u++) {
        int64_t mult = 1LL << (10 * (4 - u));
        if (bytes % mult == 0) {
            snprintf(buf, size, "%lld%s", (long long)(bytes / mult), units[u]);
            return;
        }
    }
    snprintf(buf, size, "%lld", (long long)bytes);
}

static int s_parse_bool(const char *text, bool *b) {
    static const char *yes[] = {"true", "yes", "on", "1"}, *no[] = {"false", "no", "off", "0"};
    char buf[16];
    if (s_trim(text, buf, sizeof buf) == 0)
        for (int k = 0; k < 4; k++) {
            if (strcasecmp(buf, yes[k]) == 0) return *b = true, 0;
            if (strcasecmp(buf, no[k]) == 0) return *b = false, 0;
        }
    return fw_err_set(FW_EINVAL, "invalid boolean '%s' (expected true/false, yes/no, on/off, 1/0)",
                      text);
}

static int s_parse_int(const char *text, int64_t *out) {
    char buf[64];
    char *end;
    if (s_trim(text, buf, sizeof buf) < 0 || !buf[0]) goto bad;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (*end || errno == ERANGE) goto bad;
    *out = v;
    return 0;
bad:
    return fw_err_set(FW_EINVAL, "invalid integer '%s'", text);
}

static int s_parse_double(const char *text, double *out) {
    char buf[64];
    char *end;
    if (s_trim(text, buf, sizeof buf) < 0 || !buf[0]) goto bad;
    errno = 0;
    double v = strtod(buf, &end);
    if (*end || errno == ERANGE || !isfinite(v)) goto bad;
    *out = v;
    return 0;
bad:
    return fw_err_set(FW_EINVAL, "invalid number '%s'", text);
}

/* Index of word in "a|b|c" (case-insensitive), copying the canonical
 * spelling into canon; -1 when absent. */
static int s_choice(const char *choices, const char *word, char *canon, size_t size) {
    int idx = 0;
    size_t wlen = strlen(word);
    for (const char *c = choices; c && *c; idx++) {
        const char *bar = strchr(c, '|');
        size_t len = bar ? (size_t)(bar - c) : strlen(c);
        if (len == wlen && strncasecmp(c, word, len) == 0 && len < size) {
            memcpy(canon, c, len);
            canon[len] = '\0';
            return idx;
        }
        c += len + (bar ? 1 : 0);
    }
    return -1;
}

/* "debug, info, warn" from "debug|info|warn" for messages. */
static void s_choices_list(const char *choices, const char *sep, char *buf, size_t size) {
    size_t off = 0;
    buf[0] = '\0';
    for (const char *c = choices; c && *c && off < size;) {
        const char *bar = strchr(c, '|');
        size_t len = bar ? (size_t)(bar - c) : strlen(c);
        int n = snprintf(buf + off, size - off, "%s%.*s", off ? sep : "", (int)len, c);
        off += n > 0 ? (size_t)n : 0;
        c += len + (bar ? 1 : 0);
    }
}

/* Comparison of two parsed numeric values of the row's type. */
static int s_cmp(const fw_opt *o, const s_value *a, const s_value *b) {
    if (o->type == FW_OPT_DOUBLE) return (a->d > b->d) - (a->d < b->d);
    return (a->i > b->i) - (a->i < b->i);
}

static int s_parse_text(const fw_opt *o, const char *text, s_value *v);

/* Check a parsed value against the row's bounds. */
static int s_check_bounds(const fw_opt *o, const char *text, const s_value *v) {
    s_value b = {0};
    if (o->min && s_parse_text(o, o->min, &b) == 0 && s_cmp(o, v, &b) < 0)
        return fw_err_set(FW_EINVAL, "%s is below the minimum %s", text, o->min);
    if (o->max && s_parse_text(o, o->max, &b) == 0 && s_cmp(o, v, &b) > 0)
        return fw_err_set(FW_EINVAL, "%s is above the maximum %s", text, o->max);
    return 0;
}

/* Parse text as the row's type into *v (zeroed first); bounds not checked.
 * FW_EINVAL with the reason (without key or source) in the detail. */
static int s_parse_text(const fw_opt *o, const char *text, s_value *v) {
    memset(v, 0, sizeof *v);
    bool b = false;
    int rc = 0;
    switch (o->type) {
    case FW_OPT_STRING:
        if (!(v->s = strdup(text))) rc = FW_ENOMEM;
        break;
    case FW_OPT_INT:
        rc = s_parse_int(text, &v->i);
        break;
    case FW_OPT_DOUBLE:
        rc = s_parse_double(text, &v->d);
        break;
    case FW_OPT_BOOL:
        rc = s_parse_bool(text, &b);
        v->i = b;
        break;
    case FW_OPT_DURATION:
        rc = fw_config_parse_duration(text, &v->i);
        break;
    case FW_OPT_SIZE:
        rc = fw_config_parse_size(text, &v->i);
        break;
    case FW_OPT_ENUM: {
        char word[S_NAME_MAX], canon[S_NAME_MAX], list[512];
        int idx = s_trim(text, word, sizeof word) == 0
                      ? s_choice(o->choices, word, canon, sizeof canon)
                      : -1;
        if (idx < 0) {
            s_choices_list(o->choices, ", ", list, sizeof list);
            rc = fw_err_set(FW_EINVAL, "invalid value '%s' (expected one of %s)", text, list);
            break;
        }
        v->i = idx;
        if (!(v->s = strdup(canon))) rc = FW_ENOMEM;
        break;
    }
    case FW_OPT_LIST:
        if (!(v->list = calloc(1, sizeof *v->list))) {
            rc = FW_ENOMEM;
            break;
        }
        for (const char *p = text; rc == 0 && *p;) {
            const char *comma = strchr(p, ',');
            const char *end = comma ? comma : p + strlen(p);
            const char *a = p, *z = end;
            while (a < z && isspace((unsigned char)*a)) a++;
            while (z > a && isspace((unsigned char)z[-1])) z--;
            if (z > a && s_list_push(v, a, (size_t)(z - a)) < 0) rc = FW_ENOMEM;
            p = comma ? comma + 1 : end;
        }
        break;
    }
    if (rc == FW_ENOMEM) fw_err_set(FW_ENOMEM, "out of memory");
    if (rc < 0) s_value_free(v);
    return rc;
}

/* The row's validate hook over the parsed value. */
static int s_validate(const fw_opt *o, const char *text, const s_value *v) {
    const char *why = NULL, *what = text;
    if (o->type == FW_OPT_LIST) {
        for (size_t i = 0; !why && i < v->nlist; i++) why = o->validate(what = v->list[i]);
    } else {
        why = o->validate(what = o->type == FW_OPT_STRING ? v->s : text);
    }
    return why ? fw_err_set(FW_EINVAL, "'%.200s' %s", what, why) : 0;
}

/* Parse, bounds-check and validate; the value is freed on failure. */
static int s_parse_checked(const fw_opt *o, const char *text, s_value *v) {
    int rc = s_parse_text(o, text, v);
    if (rc == 0 && o->validate && (rc = s_validate(o, text, v)) < 0) s_value_free(v);
    if (rc == 0 && (o->min || o->max)) {
        char shown[80];
        if (s_trim(text, shown, sizeof shown) < 0) snprintf(shown, sizeof shown, "%.60s...", text);
        rc = s_check_bounds(o, shown, v);
        if (rc < 0) s_value_free(v);
    }
    return rc;
}

/* ---- entries ------------------------------------------------------------ */

#ifndef NDEBUG
static bool s_entry_ok(const s_entry *e) {
    const fw_opt *o = e->opt;
    if (o->type == FW_OPT_STRING) return e->v.s != NULL;
    if (o->type == FW_OPT_LIST) return e->v.list != NULL && e->v.list[e->v.nlist] == NULL;
    if (o->type == FW_OPT_ENUM) {
        char canon[S_NAME_MAX];
        return e->v.s && s_choice(o->choices, e->v.s, canon, sizeof canon) == e->v.i &&
               strcmp(canon, e->v.s) == 0;
    }
    return true;
}
#endif

static s_entry *s_find(const fw_config *cfg, const char *name) {
    for (size_t i = 0; i < cfg->n; i++)
        if (strcmp(cfg->entries[i].opt->name, name) == 0) return &cfg->entries[i];
    return NULL;
}

static s_entry *s_find_env(const fw_config *cfg, const char *env, size_t len) {
    for (size_t i = 0; i < cfg->n; i++)
        if (strlen(cfg->entries[i].env) == len && strncmp(cfg->entries[i].env, env, len) == 0)
            return &cfg->entries[i];
    return NULL;
}

/* Whether some option lives under "<prefix>." (prefix is a YAML section). */
static bool s_is_section(const fw_config *cfg, const char *prefix) {
    size_t n = strlen(prefix);
    for (size_t i = 0; i < cfg->n; i++)
        if (strncmp(cfg->entries[i].opt->name, prefix, n) == 0 &&
            cfg->entries[i].opt->name[n] == '.')
            return true;
    return false;
}

/* Store v in e when src ranks at least as high as e's source; takes v. */
static void s_store(s_entry *e, s_value *v, fw_config_src src, const char *origin) {
    if (src < e->src) {
        s_value_free(v);
        return;
    }
    s_value_free(&e->v);
    e->v = *v;
    memset(v, 0, sizeof *v);
    e->src = src;
    size_t n = strnlen(origin, sizeof e->origin - 1); /* a long path is cut, not an error */
    memcpy(e->origin, origin, n);
    e->origin[n] = '\0';
    assert(s_entry_ok(e));
}

/* Parse text for e and store it; on error FW_ECONFIG with "<where>: key 'k': why". */
static int s_offer(s_entry *e, const char *text, fw_config_src src, const char *where,
                   const char *origin) {
    s_value v;
    int rc = s_parse_checked(e->opt, text, &v);
    if (rc < 0) {
        char why[400];
        snprintf(why, sizeof why, "%s", fw_err_detail());
        return fw_err_set(rc == FW_ENOMEM ? FW_ENOMEM : FW_ECONFIG, "%s: key '%s': %s", where,
                          e->opt->name, why);
    }
    s_store(e, &v, src, origin);
    return 0;
}

/* Levenshtein distance of two short strings (the first 63 bytes of each). */
static int s_distance(const char *a, const char *b) {
    int row[64];
    int la = (int)strnlen(a, 63), lb = (int)strnlen(b, 63);
    for (int j = 0; j <= lb; j++) row[j] = j;
    for (int i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = i;
        for (int j = 1; j <= lb; j++) {
            int up = row[j];
            int best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* " (did you mean 'x'?)" for the closest option name (env: its variable)
 * within a third of the length, or "" when nothing is close. */
static const char *s_suggest(const fw_config *cfg, const char *key, bool env, const char *pre,
                             char *buf, size_t size) {
    int best = 1 << 30;
    const char *name = NULL;
    for (size_t i = 0; i < cfg->n; i++) {
        const char *cand = env ? cfg->entries[i].env : cfg->entries[i].opt->name;
        int d = s_distance(key, cand);
        if (d < best) best = d, name = cand;
    }
    int limit = (int)strlen(key) / 3;
    if (limit < 1) limit = 1;
    if (limit > 3) limit = 3;
    buf[0] = '\0';
    if (name && best <= limit) snprintf(buf, size, " (did you mean '%s%s'?)", pre, name);
    return buf;
}

/* ---- building ----------------------------------------------------------- */

fw_config *fw_config_new(const char *prog, const char *summary) {
    fw_config *cfg = calloc(1, sizeof *cfg);
    if (!cfg) return NULL;
    cfg->prog = strdup(prog ? prog : "flywheel");
    cfg->summary = summary ? strdup(summary) : NULL;
    cfg->usage = strdup("[options]");
    if (!cfg->prog || !cfg->usage || (summary && !cfg->summary)) fw_config_destroy(&cfg);
    return cfg;
}

void fw_config_destroy(fw_config **cfgp) {
    if (!cfgp || !*cfgp) return;
    fw_config *cfg = *cfgp;
    for (size_t i = 0; i < cfg->n; i++) s_value_free(&cfg->entries[i].v);
    free(cfg->entries);
    for (int i = 0; i < cfg->nargs; i++) free(cfg->args[i]);
    free(cfg->args);
    for (size_t i = 0; i < cfg->nwarnings; i++) free(cfg->warnings[i]);
    free(cfg->warnings);
    free(cfg->prog);
    free(cfg->summary);
    free(cfg->usage);
    free(cfg->default_file);
    free(cfg->flag_file);
    free(cfg->file);
    free(cfg);
    *cfgp = NULL;
}

static void s_replace(char **slot, const char *s) {
    char *copy = s ? strdup(s) : NULL;
    if (s && !copy) return; /* keep the old value rather than lose it */
    free(*slot);
    *slot = copy;
}

void fw_config_set_usage(fw_config *cfg, const char *usage) {
    s_replace(&cfg->usage, usage);
}

void fw_config_set_default_file(fw_config *cfg, const char *path) {
    s_replace(&cfg->default_file, path);
}

void fw_config_set_stop_at_positional(fw_config *cfg, bool stop) {
    cfg->stop_at_positional = stop;
}

void fw_config_set_strict_env(fw_config *cfg, bool strict) {
    cfg->strict_env = strict;
}

static void s_env_name(const fw_opt *o, char *buf, size_t size) {
    if (o->env) {
        snprintf(buf, size, "%s", o->env);
        return;
    }
    size_t off = (size_t)snprintf(buf, size, "%s", S_ENV_PREFIX);
    for (const char *p = o->name; *p && off + 1 < size; p++)
        buf[off++] = (*p == '.' || *p == '-') ? '_' : (char)toupper((unsigned char)*p);
    buf[off] = '\0';
}

static bool s_name_ok(const char *name) {
    size_t n = strlen(name);
    if (n == 0 || n >= S_NAME_MAX - 1 || name[0] == '.' || name[n - 1] == '.') return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (c == '.' && name[i + 1] == '.') return false;
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'))
            return false;
    }
    return true;
}

/* Whether a and b clash: equal, or one is a section of the other. */
static bool s_names_clash(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > lb) {
        const char *t = a;
        a = b;
        b = t;
        la = lb;
    }
    return strncmp(a, b, la) == 0 && (b[la] == '\0' || b[la] == '.');
}

/* Check one row on its own (not its neighbours). */
static int s_check_row(const fw_opt *o) {
    const char *nm = o->name;
    if (!s_name_ok(nm))
        return fw_err_set(FW_EINVAL,
                          "option '%s': name must be lower-case dotted words "
                          "of [a-z0-9_-]",
                          nm);
    if (strcmp(nm, "config") == 0 || strcmp(nm, "help") == 0)
        return fw_err_set(FW_EINVAL, "option '%s': the name is reserved for the flag --%s", nm, nm);
    if (o->type < FW_OPT_STRING || o->type > FW_OPT_ENUM)
        return fw_err_set(FW_EINVAL, "option '%s': unknown type %d", nm, (int)o->type);
    if (!o->help || !*o->help) return fw_err_set(FW_EINVAL, "option '%s': no help text", nm);
    bool numeric = o->type == FW_OPT_INT || o->type == FW_OPT_DOUBLE ||
                   o->type == FW_OPT_DURATION || o->type == FW_OPT_SIZE;
    if ((o->min || o->max) && !numeric)
        return fw_err_set(FW_EINVAL, "option '%s': bounds on a %s option", nm,
                          s_type_name(o->type));
    if ((o->type == FW_OPT_ENUM) != (o->choices != NULL))
        return fw_err_set(FW_EINVAL, "option '%s': choices belong to enum options only", nm);
    if (o->type == FW_OPT_ENUM) {
        for (const char *c = o->choices; *c; c++)
            if (!(islower((unsigned char)*c) || isdigit((unsigned char)*c) || *c == '_' ||
                  *c == '-' || (*c == '|' && c[1] && c[1] != '|' && c != o->choices)))
                return fw_err_set(FW_EINVAL,
                                  "option '%s': choices must be words of "
                                  "[a-z0-9_-] separated by '|'",
                                  nm);
        if (!*o->choices) return fw_err_set(FW_EINVAL, "option '%s': no choices", nm);
    }
    if (o->env) {
        bool ok = *o->env != '\0';
        for (const char *c = o->env; *c; c++)
            if (!(isupper((unsigned char)*c) || isdigit((unsigned char)*c) || *c == '_'))
                ok = false;
        if (!ok) return fw_err_set(FW_EINVAL, "option '%s': env must be [A-Z0-9_]+", nm);
    }
    if (!o->def && o->type != FW_OPT_STRING && o->type != FW_OPT_LIST)
        return fw_err_set(FW_EINVAL, "option '%s': a %s option needs a default", nm,
                          s_type_name(o->type));
    s_value lo = {0}, hi = {0}, v = {0};
    const char *bad = NULL;
    char why[300] = "";
    if (o->min && s_parse_text(o, o->min, &lo) < 0)
        bad = "min";
    else if (o->max && s_parse_text(o, o->max, &hi) < 0)
        bad = "max";
    else if (o->def && s_parse_checked(o, o->def, &v) < 0)
        bad = "default";
    if (bad) snprintf(why, sizeof why, "%s", fw_err_detail());
    bool inverted = !bad && o->min && o->max && s_cmp(o, &lo, &hi) > 0;
    s_value_free(&lo);
    s_value_free(&hi);
    s_value_free(&v);
    if (bad) return fw_err_set(FW_EINVAL, "option '%s': %s: %s", nm, bad, why);
    if (inverted) return fw_err_set(FW_EINVAL, "option '%s': min is above max", nm);
    return 0;
}

int fw_config_check_table(const fw_opt *opts) {
    for (const fw_opt *o = opts; o->name; o++) {
        int rc = s_check_row(o);
        if (rc < 0) return rc;
        char ea[S_NAME_MAX + 16], eb[S_NAME_MAX + 16];
        s_env_name(o, ea, sizeof ea);
        for (const fw_opt *p = opts; p < o; p++) {
            s_env_name(p, eb, sizeof eb);
            if (s_names_clash(o->name, p->name))
                return fw_err_set(FW_EINVAL,
                                  "option '%s' clashes with '%s' (a key cannot be "
                                  "both a value and a section)",
                                  o->name, p->name);
            if (strcmp(ea, eb) == 0)
                return fw_err_set(FW_EINVAL,
                                  "options '%s' and '%s' share the environment "
                                  "variable %s",
                                  p->name, o->name, ea);
        }
    }
    return 0;
}

int fw_config_add(fw_config *cfg, const fw_opt *opts) {
    int rc = fw_config_check_table(opts);
    if (rc < 0) return rc;
    size_t add = 0;
    for (const fw_opt *o = opts; o->name; o++, add++) {
        char env[S_NAME_MAX + 16];
        s_env_name(o, env, sizeof env);
        for (size_t i = 0; i < cfg->n; i++) {
            if (s_names_clash(o->name, cfg->entries[i].opt->name))
                return fw_err_set(FW_EINVAL, "option '%s' clashes with '%s' of an earlier table",
                                  o->name, cfg->entries[i].opt->name);
            if (strcmp(env, cfg->entries[i].env) == 0)
                return fw_err_set(FW_EINVAL,
                                  "option '%s': environment variable %s is taken by "
                                  "'%s'",
                                  o->name, env, cfg->entries[i].opt->name);
        }
    }
    if (cfg->n + add > cfg->cap) {
        size_t cap = cfg->n + add + 16;
        s_entry *ne = realloc(cfg->entries, cap * sizeof *ne);
        if (!ne) return fw_err_set(FW_ENOMEM, "config: out of memory");
        cfg->entries = ne;
        cfg->cap = cap;
    }
    for (const fw_opt *o = opts; o->name; o++) {
        s_entry *e = &cfg->entries[cfg->n];
        memset(e, 0, sizeof *e);
        e->opt = o;
        s_env_name(o, e->env, sizeof e->env);
        snprintf(e->origin, sizeof e->origin, "default");
        if (s_parse_text(o, o->def ? o->def : "", &e->v) < 0)
            return fw_err_set(FW_ENOMEM, "config: out of memory");
        cfg->n++;
        assert(s_entry_ok(e));
    }
    return 0;
}

/* ---- the file ----------------------------------------------------------- */

typedef struct {
    fw_config *cfg;
    yaml_parser_t parser;
    const char *source;
} s_yaml;

/* Next event into ev; FW_ECONFIG with line and column on a syntax error. */
static int s_yaml_next(s_yaml *y, yaml_event_t *ev) {
    if (yaml_parser_parse(&y->parser, ev)) return 0;
    yaml_parser_t *p = &y->parser;
    const char *problem = p->problem ? p->problem : "syntax error";
    if (p->error == YAML_READER_ERROR)
        return fw_err_set(FW_ECONFIG, "%s: malformed YAML at byte %zu: %s", y->source,
                          p->problem_offset, problem);
    if (p->context)
        return fw_err_set(FW_ECONFIG, "%s:%zu:%zu: malformed YAML: %s (%s, line %zu)", y->source,
                          p->problem_mark.line + 1, p->problem_mark.column + 1, problem, p->context,
                          p->context_mark.line + 1);
    return fw_err_set(FW_ECONFIG, "%s:%zu:%zu: malformed YAML: %s", y->source,
                      p->problem_mark.line + 1, p->problem_mark.column + 1, problem);
}

static const char *s_event_what(yaml_event_type_t t) {
    switch (t) {
    case YAML_MAPPING_START_EVENT:
        return "a mapping";
    case YAML_SEQUENCE_START_EVENT:
        return "a sequence";
    case YAML_ALIAS_EVENT:
        return "an alias";
    default:
        return "a scalar";
    }
}

/* A plain (unquoted) empty, "~" or "null" scalar: YAML's null. */
static bool s_is_null(const yaml_event_t *ev) {
    const char *v = (const char *)ev->data.scalar.value;
    return ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
           (!*v || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 || strcmp(v, "Null") == 0 ||
            strcmp(v, "NULL") == 0);
}

/* Skip the rest of a collection whose start event was just read. */
static int s_yaml_skip(s_yaml *y) {
    int depth = 1;
    while (depth > 0) {
        yaml_event_t ev;
        if (s_yaml_next(y, &ev) < 0) return FW_ECONFIG;
        if (ev.type == YAML_MAPPING_START_EVENT || ev.type == YAML_SEQUENCE_START_EVENT) depth++;
        if (ev.type == YAML_MAPPING_END_EVENT || ev.type == YAML_SEQUENCE_END_EVENT) depth--;
        yaml_event_delete(&ev);
    }
    return 0;
}

/* The value of key `key` (event ev, already read) at line kline. */
static int s_yaml_value(s_yaml *y, const char *key, size_t kline, yaml_event_t *ev, int depth);

/* Walk a mapping whose start was just read; keys are prefixed with prefix. */
static int s_yaml_map(s_yaml *y, const char *prefix, int depth) {
    if (depth > S_MAX_DEPTH)
        return fw_err_set(FW_ECONFIG, "%s:%zu: nesting deeper than %d levels", y->source,
                          y->parser.mark.line + 1, S_MAX_DEPTH);
    for (;;) {
        yaml_event_t kev, vev;
        if (s_yaml_next(y, &kev) < 0) return FW_ECONFIG;
        if (kev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&kev);
            return 0;
        }
        size_t kline = kev.start_mark.line + 1;
        if (kev.type != YAML_SCALAR_EVENT || !kev.data.scalar.value[0] ||
            strlen((char *)kev.data.scalar.value) != kev.data.scalar.length) {
            const char *what = kev.type == YAML_SCALAR_EVENT ? "an empty or binary scalar"
                                                             : s_event_what(kev.type);
            yaml_event_delete(&kev);
            return fw_err_set(FW_ECONFIG, "%s:%zu: a key must be text, not %s", y->source, kline,
                              what);
        }
        char key[S_NAME_MAX * 2];
        int n = snprintf(key, sizeof key, "%s%s%s", prefix, *prefix ? "." : "",
                         (char *)kev.data.scalar.value);
        yaml_event_delete(&kev);
        if (n < 0 || (size_t)n >= S_NAME_MAX)
            return fw_err_set(FW_ECONFIG, "%s:%zu: key '%.60s...' is too long", y->source, kline,
                              key);
        if (s_yaml_next(y, &vev) < 0) return FW_ECONFIG;
        int rc = s_yaml_value(y, key, kline, &vev, depth);
        yaml_event_delete(&vev);
        if (rc < 0) return rc;
    }
}

static int s_yaml_value(s_yaml *y, const char *key, size_t kline, yaml_event_t *ev, int depth) {
    fw_config *cfg = y->cfg;
    s_entry *e = s_find(cfg, key);
    char where[600], origin[600], hint[S_NAME_MAX + 40];
    size_t vline = ev->start_mark.line + 1;
    snprintf(where, sizeof where, "%s:%zu", y->source, vline);
    snprintf(origin, sizeof origin, "%s:%zu", y->source, kline);
    if (ev->type == YAML_ALIAS_EVENT)
        return fw_err_set(FW_ECONFIG, "%s: key '%s': aliases are not supported", where, key);
    if (!e && ev->type == YAML_MAPPING_START_EVENT) {
        /* A section, known or not: walk it, so that a misspelt section is
         * reported at its first leaf with a full-key suggestion. */
        return s_yaml_map(y, key, depth + 1);
    }
    if (!e) {
        const char *sect = s_is_section(cfg, key) ? " (it is a section: give it a mapping)" : "";
        if (!*sect) s_suggest(cfg, key, false, "", hint, sizeof hint);
        return fw_err_set(FW_ECONFIG, "%s:%zu: unknown key '%s'%s", y->source, kline, key,
                          *sect ? sect : hint);
    }
    if (e->file_gen == cfg->gen)
        return fw_err_set(FW_ECONFIG, "%s:%zu: key '%s' is set twice (first at line %d)", y->source,
                          kline, key, e->file_line);
    e->file_gen = cfg->gen;
    e->file_line = (int)kline;
    const fw_opt *o = e->opt;
    if (ev->type == YAML_MAPPING_START_EVENT ||
        (ev->type == YAML_SEQUENCE_START_EVENT && o->type != FW_OPT_LIST))
        return fw_err_set(FW_ECONFIG, "%s: key '%s': expected a %s, not %s", where, key,
                          s_type_name(o->type), s_event_what(ev->type));
    if (ev->type == YAML_SEQUENCE_START_EVENT) {
        s_value v = {0};
        if (!(v.list = calloc(1, sizeof *v.list))) return fw_err_set(FW_ENOMEM, "out of memory");
        for (;;) {
            yaml_event_t it;
            if (s_yaml_next(y, &it) < 0) {
                s_value_free(&v);
                return FW_ECONFIG;
            }
            if (it.type == YAML_SEQUENCE_END_EVENT) {
                yaml_event_delete(&it);
                break;
            }
            int rc = 0;
            if (it.type != YAML_SCALAR_EVENT) {
                rc = fw_err_set(FW_ECONFIG, "%s:%zu: key '%s': list items must be text, not %s",
                                y->source, it.start_mark.line + 1, key, s_event_what(it.type));
                if (it.type != YAML_ALIAS_EVENT) s_yaml_skip(y);
            } else if (!s_is_null(&it)) {
                const char *item = (const char *)it.data.scalar.value;
                const char *why = o->validate ? o->validate(item) : NULL;
                if (why)
                    rc = fw_err_set(FW_ECONFIG, "%s:%zu: key '%s': '%.200s' %s", y->source,
                                    it.start_mark.line + 1, key, item, why);
                else if (s_list_push(&v, item, it.data.scalar.length) < 0)
                    rc = fw_err_set(FW_ENOMEM, "out of memory");
            }
            yaml_event_delete(&it);
            if (rc < 0) {
                s_value_free(&v);
                return rc;
            }
        }
        s_store(e, &v, FW_CONFIG_SRC_FILE, origin);
        return 0;
    }
    /* A scalar. YAML null means "empty" for strings and lists; any other
     * type then reports the missing value through its parser. */
    const char *text = (const char *)ev->data.scalar.value;
    if (strlen(text) != ev->data.scalar.length)
        return fw_err_set(FW_ECONFIG, "%s: key '%s': value holds a NUL byte", where, key);
    if (s_is_null(ev)) {
        if (o->type == FW_OPT_STRING || o->type == FW_OPT_LIST)
            text = "";
        else
            return fw_err_set(FW_ECONFIG, "%s: key '%s': missing value (expected a %s)", where, key,
                              s_type_name(o->type));
    }
    return s_offer(e, text, FW_CONFIG_SRC_FILE, where, origin);
}

int fw_config_load_yaml(fw_config *cfg, const char *text, size_t len, const char *source) {
    s_yaml y = {.cfg = cfg, .source = source ? source : "(config)"};
    if (!yaml_parser_initialize(&y.parser)) return fw_err_set(FW_ENOMEM, "yaml: out of memory");
    yaml_parser_set_input_string(&y.parser, (const unsigned char *)text, len);
    cfg->gen++;
    int rc = 0, docs = 0;
    for (bool done = false; !done && rc == 0;) {
        yaml_event_t ev;
        if ((rc = s_yaml_next(&y, &ev)) < 0) break;
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (++docs > 1)
                rc = fw_err_set(FW_ECONFIG, "%s:%zu: only one YAML document is allowed", y.source,
                                ev.start_mark.line + 1);
            break;
        case YAML_MAPPING_START_EVENT:
            rc = s_yaml_map(&y, "", 0);
            break;
        case YAML_SCALAR_EVENT:
            if (!s_is_null(&ev))
                rc = fw_err_set(FW_ECONFIG,
                                "%s:%zu: the top level must be a mapping of keys to "
                                "values, not a scalar",
                                y.source, ev.start_mark.line + 1);
            break;
        case YAML_SEQUENCE_START_EVENT:
        case YAML_ALIAS_EVENT:
            rc = fw_err_set(FW_ECONFIG,
                            "%s:%zu: the top level must be a mapping of keys to "
                            "values, not %s",
                            y.source, ev.start_mark.line + 1, s_event_what(ev.type));
            break;
        default:
            break; /* stream start, document end */
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&y.parser);
    return rc;
}

int fw_config_load_file(fw_config *cfg, const char *path) {
    char *text = NULL;
    size_t len = 0;
    int rc = fw_file_read(path, S_MAX_FILE, &text, &len);
    if (rc < 0) {
        char why[400];
        snprintf(why, sizeof why, "%s", fw_err_detail());
        return fw_err_set(rc == FW_ENOMEM ? FW_ENOMEM : FW_ECONFIG, "config file %s: %s", path,
                          rc == FW_ENOTFOUND ? "does not exist" : why);
    }
    rc = fw_config_load_yaml(cfg, text, len, path);
    free(text);
    if (rc == 0) s_replace(&cfg->file, path);
    return rc;
}

/* ---- the environment ---------------------------------------------------- */

static int s_warn(fw_config *cfg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int s_warn(fw_config *cfg, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char **nw = realloc(cfg->warnings, (cfg->nwarnings + 1) * sizeof *nw);
    if (!nw) return FW_ENOMEM;
    cfg->warnings = nw;
    if (!(nw[cfg->nwarnings] = strdup(buf))) return FW_ENOMEM;
    cfg->nwarnings++;
    return 0;
}

int fw_config_load_env(fw_config *cfg, char **envp) {
    if (!envp) envp = environ;
    for (char **ep = envp; ep && *ep; ep++) {
        const char *eq = strchr(*ep, '=');
        if (!eq) continue;
        size_t nlen = (size_t)(eq - *ep);
        s_entry *e = s_find_env(cfg, *ep, nlen);
        char var[S_NAME_MAX + 16], where[S_NAME_MAX + 40], hint[S_NAME_MAX + 40];
        snprintf(var, sizeof var, "%.*s", (int)nlen, *ep);
        if (e) {
            snprintf(where, sizeof where, "environment %s", var);
            snprintf(hint, sizeof hint, "env %s", var);
            int rc = s_offer(e, eq + 1, FW_CONFIG_SRC_ENV, where, hint);
            if (rc < 0) return rc;
            continue;
        }
        if (strncmp(var, S_ENV_PREFIX, strlen(S_ENV_PREFIX)) != 0 || strcmp(var, S_ENV_CONFIG) == 0)
            continue;
        s_suggest(cfg, var, true, "", hint, sizeof hint);
        if (cfg->strict_env)
            return fw_err_set(FW_ECONFIG, "environment %s: unknown variable%s", var, hint);
        if (s_warn(cfg, "environment %s: unknown variable, ignored%s", var, hint) < 0)
            return fw_err_set(FW_ENOMEM, "config: out of memory");
    }
    return 0;
}

static const char *s_env_get(char **envp, const char *name) {
    size_t n = strlen(name);
    for (char **ep = envp; ep && *ep; ep++)
        if (strncmp(*ep, name, n) == 0 && (*ep)[n] == '=') return *ep + n + 1;
    return NULL;
}

/* ---- the command line --------------------------------------------------- */

static int s_add_arg(fw_config *cfg, const char *arg) {
    char **na = realloc(cfg->args, (size_t)(cfg->nargs + 1) * sizeof *na);
    if (!na) return fw_err_set(FW_ENOMEM, "config: out of memory");
    cfg->args = na;
    if (!(na[cfg->nargs] = strdup(arg))) return fw_err_set(FW_ENOMEM, "config: out of memory");
    cfg->nargs++;
    return 0;
}

int fw_config_load_args(fw_config *cfg, int argc, char **argv) {
    for (int i = 0; i < cfg->nargs; i++) free(cfg->args[i]);
    cfg->nargs = 0;
    /* Help wins over every other argument, so that a typo elsewhere on the
     * line does not hide it. */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) break;
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) return FW_CONFIG_HELP;
        if (cfg->stop_at_positional && (argv[i][0] != '-' || !argv[i][1])) break;
    }
    bool flags = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        char where[300], hint[S_NAME_MAX + 40];
        snprintf(where, sizeof where, "command line argument %d '%.200s'", i, a);
        if (!flags || a[0] != '-' || !a[1]) {
            if (s_add_arg(cfg, a) < 0) return FW_ENOMEM;
            if (cfg->stop_at_positional) flags = false;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            flags = false;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) return FW_CONFIG_HELP;
        if (a[1] != '-')
            return fw_err_set(FW_ECONFIG, "%s: unknown flag (options are --name=value)", where);
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        char key[S_NAME_MAX];
        size_t klen = eq ? (size_t)(eq - name) : strlen(name);
        if (klen >= sizeof key) return fw_err_set(FW_ECONFIG, "%s: unknown flag", where);
        memcpy(key, name, klen);
        key[klen] = '\0';
        const char *val = eq ? eq + 1 : NULL;
        bool is_config = strcmp(key, "config") == 0;
        s_entry *e = is_config ? NULL : s_find(cfg, key);
        if (!is_config && !e)
            return fw_err_set(FW_ECONFIG, "%s: unknown flag%s", where,
                              s_suggest(cfg, key, false, "--", hint, sizeof hint));
        if (!val && e && e->opt->type == FW_OPT_BOOL) {
            val = "true"; /* a bare --flag; --flag false would be ambiguous */
        } else if (!val) {
            if (i + 1 >= argc)
                return fw_err_set(FW_ECONFIG, "%s: flag --%s needs a value", where, key);
            val = argv[++i];
        }
        if (is_config) {
            if (!*val) return fw_err_set(FW_ECONFIG, "%s: --config needs a file name", where);
            s_replace(&cfg->flag_file, val);
            continue;
        }
        char origin[S_NAME_MAX + 8];
        snprintf(origin, sizeof origin, "flag --%s", key);
        int rc = s_offer(e, val, FW_CONFIG_SRC_FLAG, where, origin);
        if (rc < 0) return rc;
    }
    return 0;
}

int fw_config_load(fw_config *cfg, int argc, char **argv, char **envp) {
    if (!envp) envp = environ;
    int rc = fw_config_load_args(cfg, argc, argv);
    if (rc != 0) return rc;
    const char *file = cfg->flag_file ? cfg->flag_file : s_env_get(envp, S_ENV_CONFIG);
    struct stat st;
    if (!file && cfg->default_file && stat(cfg->default_file, &st) == 0) file = cfg->default_file;
    if (file && *file && (rc = fw_config_load_file(cfg, file)) < 0) return rc;
    return fw_config_load_env(cfg, envp);
}

int fw_config_set(fw_config *cfg, const char *name, const char *value) {
    s_entry *e = s_find(cfg, name);
    if (!e) return fw_err_set(FW_ECONFIG, "set: unknown key '%s'", name);
    return s_offer(e, value, FW_CONFIG_SRC_SET, "set", "set");
}

/* ---- reading ------------------------------------------------------------ */

/* The entry for a getter; NULL (after an assert) on a programmer error. */
static const s_entry *s_get(const fw_config *cfg, const char *name, fw_opt_type t1,
                            fw_opt_type t2) {
    const s_entry *e = s_find(cfg, name);
    if (e && (e->opt->type == t1 || e->opt->type == t2)) return e;
    fw_error("event=config-bad-getter key=%s reason=%s", name, e ? "wrong-type" : "unknown-key");
    assert(!"fw_config getter: unknown key or wrong type");
    return NULL;
}

const char *fw_config_get_str(const fw_config *cfg, const char *name) {
    const s_entry *e = s_get(cfg, name, FW_OPT_STRING, FW_OPT_ENUM);
    return e ? e->v.s : "";
}

int64_t fw_config_get_int(const fw_config *cfg, const char *name) {
    const s_entry *e = s_get(cfg, name, FW_OPT_INT, FW_OPT_INT);
    return e ? e->v.i : 0;
}

double fw_config_get_double(const fw_config *cfg, const char *name) {
    const s_entry *e = s_get(cfg, name, FW_OPT_DOUBLE, FW_OPT_DOUBLE);
    return e ? e->v.d : 0;
}

bool fw_config_get_bool(const fw_config *cfg, const char *name) {
    const s_entry *e = s_get(cfg, name, FW_OPT_BOOL, FW_OPT_BOOL);
    return e ? e->v.i != 0 : false;
}

int64_t fw_config_get_duration(const fw_config *cfg, const char *name) {
    const s_entry *e = s_get(cfg, name, FW_OPT_DURATION, FW_OPT_DURATION);
    return e ? e->v.i : 0;
}

int64_t fw_config_get_size(const fw_config *cfg, const char *name) {
    const s_entry *e = s_get(cfg, name, FW_OPT_SIZE, FW_OPT_SIZE);
    return e ? e->v.i : 0;
}

int fw_config_get_enum(const fw_config *cfg, const char *name) {
    const s_entry *e = s_get(cfg, name, FW_OPT_ENUM, FW_OPT_ENUM);
    return e ? (int)e->v.i : 0;
}

const char *const *fw_config_get_list(const fw_config *cfg, const char *name, size_t *count) {
    static const char *const empty[] = {NULL};
    const s_entry *e = s_get(cfg, name, FW_OPT_LIST, FW_OPT_LIST);
    if (count) *count = e ? e->v.nlist : 0;
    return e ? (const char *const *)e->v.list : empty;
}

bool fw_config_has(const fw_config *cfg, const char *name) {
    return s_find(cfg, name) != NULL;
}

fw_config_src fw_config_source(const fw_config *cfg, const char *name) {
    const s_entry *e = s_find(cfg, name);
    return e ? e->src : FW_CONFIG_SRC_DEFAULT;
}

const char *fw_config_origin(const fw_config *cfg, const char *name) {
    const s_entry *e = s_find(cfg, name);
    return e ? e->origin : "unknown";
}

int fw_config_argc(const fw_config *cfg) {
    return cfg->nargs;
}

const char *fw_config_arg(const fw_config *cfg, int i) {
    return i >= 0 && i < cfg->nargs ? cfg->args[i] : NULL;
}

const char *fw_config_file(const fw_config *cfg) {
    return cfg->file;
}

size_t fw_config_warning_count(const fw_config *cfg) {
    return cfg->nwarnings;
}

const char *fw_config_warning(const fw_config *cfg, size_t i) {
    return i < cfg->nwarnings ? cfg->warnings[i] : NULL;
}

void fw_config_log_warnings(const fw_config *cfg) {
    char q[600];
    for (size_t i = 0; i < cfg->nwarnings; i++)
        fw_warn("event=config-warning detail=%s", fw_log_quote(cfg->warnings[i], q, sizeof q));
}

/* ---- writing ------------------------------------------------------------ */

/* Bounds as "a..b", ">= a", "<= b" or "" into buf. */
static const char *s_bounds(const fw_opt *o, char *buf, size_t size) {
    if (o->min && o->max)
        snprintf(buf, size, "%s..%s", o->min, o->max);
    else if (o->min)
        snprintf(buf, size, ">= %s", o->min);
    else if (o->max)
        snprintf(buf, size, "<= %s", o->max);
    else
        buf[0] = '\0';
    return buf;
}

/* Write text wrapped at S_HELP_WIDTH with every line indented by indent. */
static void s_wrap(FILE *out, const char *text, int indent) {
    const char *p = text;
    while (*p) {
        int width = S_HELP_WIDTH - indent, len = 0, cut = -1;
        while (p[len] && p[len] != '\n' && (len < width || cut < 0)) {
            if (p[len] == ' ') cut = len;
            len++;
        }
        if (p[len] == '\0' || p[len] == '\n') cut = len;
        fprintf(out, "%*s%.*s\n", indent, "", cut, p);
        p += cut;
        while (*p == ' ' || *p == '\n') p++;
    }
}

static const char *s_metavar(const fw_opt *o, char *buf, size_t size) {
    switch (o->type) {
    case FW_OPT_STRING:
        return "TEXT";
    case FW_OPT_INT:
        return "INT";
    case FW_OPT_DOUBLE:
        return "NUMBER";
    case FW_OPT_BOOL:
        return "[=BOOL]";
    case FW_OPT_DURATION:
        return "DURATION";
    case FW_OPT_SIZE:
        return "SIZE";
    case FW_OPT_LIST:
        return "LIST";
    case FW_OPT_ENUM:
        s_choices_list(o->choices, "|", buf, size);
        return buf;
    }
    return "VALUE";
}

int fw_config_write_help(const fw_config *cfg, FILE *out) {
    fprintf(out, "Usage: %s %s\n\n", cfg->prog, cfg->usage);
    if (cfg->summary) {
        s_wrap(out, cfg->summary, 0);
        fputc('\n', out);
    }
    fprintf(out, "Options (also settable in the config file and as FLYWHEEL_* environment\n"
                 "variables; flags win over the environment, which wins over the file):\n");
    fprintf(out, "  --config FILE\n");
    s_wrap(out,
           "Read options from this YAML file (also FLYWHEEL_CONFIG). Nested maps "
           "flatten to dotted keys.",
           6);
    fprintf(out, "  -h, --help\n");
    s_wrap(out, "Show this help and exit.", 6);
    for (size_t i = 0; i < cfg->n; i++) {
        const s_entry *e = &cfg->entries[i];
        const fw_opt *o = e->opt;
        char mv[256], bounds[200];
        fprintf(out, "  --%s%s%s  (default: %s%s%s)\n", o->name, o->type == FW_OPT_BOOL ? "" : " ",
                s_metavar(o, mv, sizeof mv), o->def && *o->def ? o->def : "\"\"",
                *s_bounds(o, bounds, sizeof bounds) ? ", range " : "", bounds);
        char text[2048];
        snprintf(text, sizeof text, "%s [%s]", o->help, e->env); /* no space: never wrapped */
        s_wrap(out, text, 6);
    }
    return ferror(out) ? fw_err_set(FW_EIO, "write help: %s", strerror(errno)) : 0;
}

/* s as a YAML double-quoted scalar. */
static void s_yaml_quote(FILE *out, const char *s) {
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p == '\n')
            fputs("\\n", out);
        else if (*p == '\t')
            fputs("\\t", out);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(out, "\\x%02x", *p);
        else
            fputc(*p, out);
    }
    fputc('"', out);
}

int fw_config_write_yaml(const fw_config *cfg, FILE *out) {
    for (size_t i = 0; i < cfg->n; i++) {
        const s_entry *e = &cfg->entries[i];
        char buf[64];
        fprintf(out, "%s: ", e->opt->name);
        switch (e->opt->type) {
        case FW_OPT_STRING:
            s_yaml_quote(out, e->v.s);
            break;
        case FW_OPT_ENUM:
            fputs(e->v.s, out);
            break;
        case FW_OPT_INT:
            fprintf(out, "%lld", (long long)e->v.i);
            break;
        case FW_OPT_DOUBLE:
            fprintf(out, "%.17g", e->v.d);
            break;
        case FW_OPT_BOOL:
            fputs(e->v.i ? "true" : "false", out);
            break;
        case FW_OPT_DURATION:
            fw_config_format_duration(e->v.i, buf, sizeof buf);
            fputs(buf, out);
            break;
        case FW_OPT_SIZE:
            fw_config_format_size(e->v.i, buf, sizeof buf);
            fputs(buf, out);
            break;
        case FW_OPT_LIST:
            fputc('[', out);
            for (size_t k = 0; k < e->v.nlist; k++) {
                if (k) fputs(", ", out);
                s_yaml_quote(out, e->v.list[k]);
            }
            fputc(']', out);
            break;
        }
        fprintf(out, "  # %s\n", e->origin);
    }
    return ferror(out) ? fw_err_set(FW_EIO, "write config: %s", strerror(errno)) : 0;
}

/* Markdown table cell text: '|' escaped, newlines as spaces. */
static void s_md_cell(FILE *out, const char *s) {
    for (; *s; s++) {
        if (*s == '|')
            fputs("\\|", out);
        else if (*s == '\n')
            fputc(' ', out);
        else
            fputc(*s, out);
    }
}

int fw_config_write_markdown(const fw_opt *opts, const char *title, const char *intro, FILE *out) {
    fprintf(out, "## %s\n\n", title);
    if (intro && *intro) fprintf(out, "%s\n\n", intro);
    fprintf(out, "| Key | Type | Default | Allowed | Environment | Description |\n"
                 "|-----|------|---------|---------|-------------|-------------|\n");
    for (const fw_opt *o = opts; o->name; o++) {
        char env[S_NAME_MAX + 16], allowed[512];
        s_env_name(o, env, sizeof env);
        if (o->type == FW_OPT_ENUM) {
            char list[480];
            s_choices_list(o->choices, "`, `", list, sizeof list);
            snprintf(allowed, sizeof allowed, "`%s`", list);
        } else {
            s_bounds(o, allowed, sizeof allowed);
        }
        fprintf(out, "| `%s` | %s | ", o->name, s_type_name(o->type));
        if (o->def && *o->def) {
            fputc('`', out);
            s_md_cell(out, o->def);
            fputc('`', out);
        } else {
            fputs("(empty)", out);
        }
        fputs(" | ", out);
        s_md_cell(out, allowed);
        fprintf(out, " | `%s` | ", env);
        s_md_cell(out, o->help);
        fputs(" |\n", out);
    }
    fputc('\n', out);
    return ferror(out) ? fw_err_set(FW_EIO, "write markdown: %s", strerror(errno)) : 0;
}
