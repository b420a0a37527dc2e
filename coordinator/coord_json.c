/* coord_json.c - the append-only JSON writer. */
#include "coord_json.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool s_grow(coord_jw *w, size_t more) {
    if (w->oom) return false;
    if (w->len + more + 1 <= w->cap) return true;
    size_t cap = w->cap ? w->cap : 256;
    while (cap < w->len + more + 1) cap *= 2;
    char *b = realloc(w->buf, cap);
    if (!b) {
        w->oom = true;
        return false;
    }
    w->buf = b;
    w->cap = cap;
    return true;
}

static void s_put(coord_jw *w, const char *s, size_t n) {
    if (!s_grow(w, n)) return;
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    w->buf[w->len] = '\0';
}

static void s_comma(coord_jw *w) {
    if (w->need_comma) s_put(w, ",", 1);
    w->need_comma = true;
}

void coord_jw_reset(coord_jw *w) {
    w->len = 0;
    w->oom = false;
    w->need_comma = false;
    if (w->buf) w->buf[0] = '\0';
}

void coord_jw_free(coord_jw *w) {
    free(w->buf);
    memset(w, 0, sizeof *w);
}

void coord_jw_obj_begin(coord_jw *w) {
    s_comma(w);
    s_put(w, "{", 1);
    w->need_comma = false;
}
void coord_jw_obj_end(coord_jw *w) {
    s_put(w, "}", 1);
    w->need_comma = true;
}
void coord_jw_arr_begin(coord_jw *w) {
    s_comma(w);
    s_put(w, "[", 1);
    w->need_comma = false;
}
void coord_jw_arr_end(coord_jw *w) {
    s_put(w, "]", 1);
    w->need_comma = true;
}

void coord_jw_key(coord_jw *w, const char *key) {
    s_comma(w);
    s_put(w, "\"", 1);
    s_put(w, key, strlen(key));
    s_put(w, "\":", 2);
    w->need_comma = false;
}

size_t coord_json_escape(const char *s, char *buf, size_t size) {
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (size == 0) return 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char tmp[6];
        size_t n = 0;
        switch (*p) {
        case '"': tmp[0] = '\\'; tmp[1] = '"'; n = 2; break;
        case '\\': tmp[0] = '\\'; tmp[1] = '\\'; n = 2; break;
        case '\n': tmp[0] = '\\'; tmp[1] = 'n'; n = 2; break;
        case '\r': tmp[0] = '\\'; tmp[1] = 'r'; n = 2; break;
        case '\t': tmp[0] = '\\'; tmp[1] = 't'; n = 2; break;
        default:
            if (*p < 0x20) {
                tmp[0] = '\\'; tmp[1] = 'u'; tmp[2] = '0'; tmp[3] = '0';
                tmp[4] = hex[*p >> 4]; tmp[5] = hex[*p & 15];
                n = 6;
            } else {
                tmp[0] = (char)*p;
                n = 1;
            }
        }
        if (o + n + 1 > size) {
            /* Do not cut a UTF-8 sequence in half: back up to its start. */
            while (o > 0 && ((unsigned char)buf[o - 1] & 0xC0) == 0x80) o--;
            if (o > 0 && ((unsigned char)buf[o - 1] & 0xC0) == 0xC0) o--;
            break;
        }
        memcpy(buf + o, tmp, n);
        o += n;
    }
    buf[o] = '\0';
    return o;
}

void coord_jw_str(coord_jw *w, const char *s) {
    s_comma(w);
    if (!s) {
        s_put(w, "null", 4);
        return;
    }
    size_t n = strlen(s);
    /* Worst case every byte becomes \u00XX. */
    if (!s_grow(w, n * 6 + 2)) return;
    w->buf[w->len++] = '"';
    w->len += coord_json_escape(s, w->buf + w->len, w->cap - w->len);
    w->buf[w->len++] = '"';
    w->buf[w->len] = '\0';
}

void coord_jw_int(coord_jw *w, int64_t v) {
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%" PRId64, v);
    s_comma(w);
    s_put(w, tmp, (size_t)n);
}

void coord_jw_bool(coord_jw *w, bool v) {
    s_comma(w);
    s_put(w, v ? "true" : "false", v ? 4 : 5);
}

void coord_jw_raw(coord_jw *w, const char *json) {
    s_comma(w);
    if (!json) json = "null";
    s_put(w, json, strlen(json));
}

void coord_jw_kstr(coord_jw *w, const char *key, const char *s) {
    coord_jw_key(w, key);
    coord_jw_str(w, s);
}
void coord_jw_kint(coord_jw *w, const char *key, int64_t v) {
    coord_jw_key(w, key);
    coord_jw_int(w, v);
}
void coord_jw_kbool(coord_jw *w, const char *key, bool v) {
    coord_jw_key(w, key);
    coord_jw_bool(w, v);
}
void coord_jw_kraw(coord_jw *w, const char *key, const char *json) {
    coord_jw_key(w, key);
    coord_jw_raw(w, json);
}
