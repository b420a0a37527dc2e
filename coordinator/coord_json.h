/* coord_json.h - a small append-only JSON writer for hot-path records.
 *
 * Task records are written thousands of times a second; building them with
 * snprintf into one reusable buffer costs about a microsecond, a jansson
 * tree several. Everything that is not on the dispatch path (client replies,
 * rebuild) uses jansson. The writer tracks commas itself; an allocation
 * failure sets `oom` and later calls do nothing, so callers check once. */
#ifndef COORD_JSON_H
#define COORD_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *buf;
    size_t len, cap;
    bool oom;
    bool need_comma;
} coord_jw;

void coord_jw_reset(coord_jw *w); /* empty, keeps the buffer */
void coord_jw_free(coord_jw *w);
void coord_jw_obj_begin(coord_jw *w);
void coord_jw_obj_end(coord_jw *w);
void coord_jw_arr_begin(coord_jw *w);
void coord_jw_arr_end(coord_jw *w);
void coord_jw_key(coord_jw *w, const char *key); /* key must need no escaping */
void coord_jw_str(coord_jw *w, const char *s);   /* escaped; NULL writes null */
void coord_jw_int(coord_jw *w, int64_t v);
void coord_jw_bool(coord_jw *w, bool v);
/* Already-valid JSON text (a result object, a spec); NULL writes null. */
void coord_jw_raw(coord_jw *w, const char *json);
/* Shorthands: key + value. */
void coord_jw_kstr(coord_jw *w, const char *key, const char *s);
void coord_jw_kint(coord_jw *w, const char *key, int64_t v);
void coord_jw_kbool(coord_jw *w, const char *key, bool v);
void coord_jw_kraw(coord_jw *w, const char *key, const char *json);

/* Escape s as a JSON string body (no quotes) into buf; returns bytes written
 * (excluding the NUL), truncating at a character boundary. */
size_t coord_json_escape(const char *s, char *buf, size_t size);

#endif
