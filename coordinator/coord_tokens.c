/* coord_tokens.c - token file parsing and lookup.
 *
 * The table is small (people and service accounts, not sessions), so lookup
 * is a scan with a constant-time comparison of every entry: the time a
 * lookup takes depends on the table size, never on how much of a guessed
 * token matched. */
#include "coord_tokens.h"

#include "fw_err.h"
#include "fw_file.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COORD_TOKENS_MAX      10000     /* entries; a file with more is a mistake */
#define COORD_TOKENS_MAX_FILE (1 << 20) /* bytes */
#define COORD_TOKEN_MAX_LEN   512       /* JOB_SUBMIT.token bound in fw_messages.def */
#define COORD_NAME_MAX_LEN    64

struct coord_tokens {
    coord_token_t *v;
    size_t n, cap;
};

coord_tokens_t *coord_tokens_new(void) { return calloc(1, sizeof(coord_tokens_t)); }

static void s_clear(coord_tokens_t *t) {
    for (size_t i = 0; i < t->n; i++) {
        /* Tokens are secrets: wipe them before handing the memory back. */
        memset(t->v[i].token, 0, strlen(t->v[i].token));
        free(t->v[i].token);
        free(t->v[i].name);
    }
    free(t->v);
    t->v = NULL;
    t->n = t->cap = 0;
}

void coord_tokens_destroy(coord_tokens_t **p) {
    if (!p || !*p) return;
    s_clear(*p);
    free(*p);
    *p = NULL;
}

const char *coord_role_name(coord_role r) {
    switch (r) {
    case COORD_ROLE_ADMIN: return "admin";
    case COORD_ROLE_USER: return "user";
    default: return "none";
    }
}

/* Tokens are printable ASCII without spaces; names are identifiers people
 * read in the audit log, so they stay in a conservative alphabet. */
static bool s_token_ok(const char *s, size_t len) {
    if (len == 0 || len > COORD_TOKEN_MAX_LEN) return false;
    for (size_t i = 0; i < len; i++)
        if (s[i] <= ' ' || s[i] > '~') return false;
    return true;
}

static bool s_name_ok(const char *s, size_t len) {
    if (len == 0 || len > COORD_NAME_MAX_LEN) return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '-' && c != '_' && c != '.' && c != '@') return false;
    }
    return true;
}

static bool s_ct_equal(const char *a, size_t alen, const char *b, size_t blen) {
    /* Compare over the longer length so neither length nor content short-cuts. */
    size_t n = alen > blen ? alen : blen;
    unsigned char diff = (unsigned char)(alen != blen);
    for (size_t i = 0; i < n; i++) {
        unsigned char x = i < alen ? (unsigned char)a[i] : 0;
        unsigned char y = i < blen ? (unsigned char)b[i] : 0;
        diff |= (unsigned char)(x ^ y);
    }
    return diff == 0;
}

/* Split the next whitespace-separated field of [*p, end). */
static bool s_field(const char **p, const char *end, const char **f, size_t *flen) {
    const char *s = *p;
    while (s < end && (*s == ' ' || *s == '\t')) s++;
    if (s >= end) return false;
    const char *e = s;
    while (e < end && *e != ' ' && *e != '\t') e++;
    *f = s;
    *flen = (size_t)(e - s);
    *p = e;
    return true;
}

int coord_tokens_parse(coord_tokens_t *t, const char *text, const char *origin) {
    s_clear(t);
    if (!origin) origin = "tokens";
    int lineno = 0;
    const char *p = text ? text : "";
    int rc = 0;
    while (*p) {
        lineno++;
        const char *eol = strchr(p, '\n');
        const char *end = eol ? eol : p + strlen(p);
        const char *next = eol ? eol + 1 : end;
        if (end > p && end[-1] == '\r') end--; /* files edited on Windows */
        const char *q = p;
        while (q < end && (*q == ' ' || *q == '\t')) q++;
        p = next;
        if (q == end || *q == '#') continue;

        const char *f[4];
        size_t fl[4];
        int nf = 0;
        while (nf < 4 && s_field(&q, end, &f[nf], &fl[nf])) nf++;
        if (nf != 3) {
            rc = fw_err_set(FW_ECONFIG, "%s:%d: expected \"<token> <name> <role>\", got %d field%s",
                            origin, lineno, nf, nf == 1 ? "" : "s");
            goto fail;
        }
        if (!s_token_ok(f[0], fl[0])) {
            rc = fw_err_set(FW_ECONFIG, "%s:%d: token must be 1-%d printable characters", origin,
                            lineno, COORD_TOKEN_MAX_LEN);
            goto fail;
        }
        if (!s_name_ok(f[1], fl[1])) {
            rc = fw_err_set(FW_ECONFIG, "%s:%d: name \"%.*s\" must be 1-%d of [A-Za-z0-9._@-]",
                            origin, lineno, (int)(fl[1] > 64 ? 64 : fl[1]), f[1],
                            COORD_NAME_MAX_LEN);
            goto fail;
        }
        coord_role role = COORD_ROLE_NONE;
        if (fl[2] == 5 && memcmp(f[2], "admin", 5) == 0) role = COORD_ROLE_ADMIN;
        if (fl[2] == 4 && memcmp(f[2], "user", 4) == 0) role = COORD_ROLE_USER;
        if (role == COORD_ROLE_NONE) {
            rc = fw_err_set(FW_ECONFIG, "%s:%d: role \"%.*s\" is not admin or user", origin, lineno,
                            (int)(fl[2] > 32 ? 32 : fl[2]), f[2]);
            goto fail;
        }
        for (size_t i = 0; i < t->n; i++) {
            if (s_ct_equal(t->v[i].token, strlen(t->v[i].token), f[0], fl[0])) {
                rc = fw_err_set(FW_ECONFIG, "%s:%d: token of \"%.*s\" is already given to \"%s\"",
                                origin, lineno, (int)fl[1], f[1], t->v[i].name);
                goto fail;
            }
        }
        if (t->n >= COORD_TOKENS_MAX) {
            rc = fw_err_set(FW_ECONFIG, "%s:%d: more than %d tokens", origin, lineno,
                            COORD_TOKENS_MAX);
            goto fail;
        }
        if (t->n == t->cap) {
            size_t cap = t->cap ? t->cap * 2 : 8;
            coord_token_t *v = realloc(t->v, cap * sizeof *v);
            if (!v) {
                rc = fw_err_set(FW_ENOMEM, "%s:%d: out of memory", origin, lineno);
                goto fail;
            }
            t->v = v;
            t->cap = cap;
        }
        coord_token_t *e = &t->v[t->n];
        e->token = strndup(f[0], fl[0]);
        e->name = strndup(f[1], fl[1]);
        e->role = role;
        if (!e->token || !e->name) {
            free(e->token);
            free(e->name);
            rc = fw_err_set(FW_ENOMEM, "%s:%d: out of memory", origin, lineno);
            goto fail;
        }
        t->n++;
    }
    return 0;
fail:
    s_clear(t);
    return rc;
}

int coord_tokens_load(coord_tokens_t *t, const char *path) {
    char *text = NULL;
    int rc = fw_file_read(path, COORD_TOKENS_MAX_FILE, &text, NULL);
    if (rc < 0) {
        char why[512]; /* fw_err_set formats into the buffer fw_err_detail() returns */
        snprintf(why, sizeof why, "%s", fw_err_detail());
        return fw_err_set(FW_ECONFIG, "coordinator.tokens_file: %s", why);
    }
    rc = coord_tokens_parse(t, text, path);
    free(text);
    return rc;
}

const coord_token_t *coord_tokens_find(const coord_tokens_t *t, const char *token) {
    if (!t || !token) return NULL;
    size_t len = strnlen(token, COORD_TOKEN_MAX_LEN + 1);
    const coord_token_t *hit = NULL;
    for (size_t i = 0; i < t->n; i++) {
        /* No early exit: every entry is compared. */
        bool eq = s_ct_equal(t->v[i].token, strlen(t->v[i].token), token, len);
        if (eq && !hit) hit = &t->v[i];
    }
    return hit;
}

size_t coord_tokens_count(const coord_tokens_t *t) { return t ? t->n : 0; }
