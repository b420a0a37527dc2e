/* coord_tokens.h - the bearer tokens clients authenticate with.
 *
 * coordinator.tokens_file holds one token per line:
 *
 *     # comment
 *     <token> <name> <role>        role: admin | user
 *
 * Blank lines and lines starting with '#' are ignored. Anything else that is
 * not exactly three fields, a role other than admin/user, a token or name
 * with odd characters, or a token listed twice is a startup error naming the
 * file and line. The table is immutable once parsed. */
#ifndef COORD_TOKENS_H
#define COORD_TOKENS_H

#include <stdbool.h>
#include <stddef.h>

typedef enum { COORD_ROLE_NONE = 0, COORD_ROLE_USER = 1, COORD_ROLE_ADMIN = 2 } coord_role;

typedef struct {
    char *token;
    char *name; /* who: written into the audit log and job records as the owner */
    coord_role role;
} coord_token_t;

typedef struct coord_tokens coord_tokens_t;

/* An empty table (no token is valid). NULL on allocation failure. */
coord_tokens_t *coord_tokens_new(void);
void coord_tokens_destroy(coord_tokens_t **p);

/* Parse file text into the table. origin names the source in errors
 * ("tokens.txt:3: expected <token> <name> <role>"). 0, or FW_ECONFIG with
 * fw_err_detail() naming the line (the table is left empty then). */
int coord_tokens_parse(coord_tokens_t *t, const char *text, const char *origin);

/* Read and parse a file (at most 1 MiB). 0 / FW_ECONFIG / an I/O error. */
int coord_tokens_load(coord_tokens_t *t, const char *path);

/* The entry for a presented token, or NULL. Compares in time independent of
 * where two tokens first differ, so the reply time does not leak prefixes. */
const coord_token_t *coord_tokens_find(const coord_tokens_t *t, const char *token);

size_t coord_tokens_count(const coord_tokens_t *t);

const char *coord_role_name(coord_role r);

#endif
