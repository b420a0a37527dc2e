/* unicode_pretok.c - UTF-8 validation and GPT-2's pre-tokenisation split.
 *
 * Theory of operation
 * -------------------
 * GPT-2's pattern is a list of alternatives tried left to right at each
 * position, each one greedy:
 *
 *   1  's|'t|'re|'ve|'m|'ll|'d     contractions, lower case only
 *   2  ' ?\p{L}+'                  an optional space, then letters
 *   3  ' ?\p{N}+'                  an optional space, then digits
 *   4  ' ?[^\s\p{L}\p{N}]+'        an optional space, then "other"
 *   5  '\s+(?!\S)'                 spaces not followed by a non-space
 *   6  '\s+'                       any remaining spaces
 *
 * Every character is in exactly one of four classes (letter, number, space,
 * other), so alternatives 2-4 collapse into "optional ' ' then a maximal run
 * of one class". The only backtracking is in 5: a maximal run of n spaces
 * that ends the text matches whole; one followed by a non-space gives back
 * its last character (which then becomes the ' ' prefix of the next word, or
 * a lone space pre-token of its own) -- unless n == 1, where 5 fails and 6
 * takes that single character. The result is a linear scan with no
 * backtracking beyond that one character.
 *
 * Invariant: fw_pretok_next() is only ever given valid UTF-8, so the decoder
 * below does no checking; fw_utf8_validate() is run first by every caller. */
#include "unicode_pretok.h"

#include <stdint.h>
#include <string.h>

#include "fw_err.h"
#include "fw_utf8.h"
#include "unicode_class.h"

#define L_ FW_UC_LETTER
#define N_ FW_UC_NUMBER
#define S_ FW_UC_SPACE
#define O_ FW_UC_OTHER
/* ASCII classes, matching unicode_class.c: \s is \t \n \v \f \r and ' '
 * (0x1C..0x1F are not White_Space, unlike Python's str.isspace). */
static const uint8_t s_ascii_class[128] = {
    O_, O_, O_, O_, O_, O_, O_, O_, O_, S_, S_, S_, S_, S_, O_, O_, /* 00 */
    O_, O_, O_, O_, O_, O_, O_, O_, O_, O_, O_, O_, O_, O_, O_, O_, /* 10 */
    S_, O_, O_, O_, O_, O_, O_, O_, O_, O_, O_, O_, O_, O_, O_, O_, /* 20 */
    N_, N_, N_, N_, N_, N_, N_, N_, N_, N_, O_, O_, O_, O_, O_, O_, /* 30 */
    O_, L_, L_, L_, L_, L_, L_, L_, L_, L_, L_, L_, L_, L_, L_, L_, /* 40 */
    L_, L_, L_, L_, L_, L_, L_, L_, L_, L_, L_, O_, O_, O_, O_, O_, /* 50 */
    O_, L_, L_, L_, L_, L_, L_, L_, L_, L_, L_, L_, L_, L_, L_, L_, /* 60 */
    L_, L_, L_, L_, L_, L_, L_, L_, L_, L_, L_, O_, O_, O_, O_, O_, /* 70 */
};
#undef L_
#undef N_
#undef S_
#undef O_

/* ---------------------------------------------------------------- UTF-8 */

/* Length of the sequence a lead byte starts, 0 for bytes that cannot lead. */
static int s_seq_len(uint8_t c) {
    if (c < 0x80) return 1;
    if (c < 0xC2) return 0; /* continuation byte, or C0/C1 (always overlong) */
    if (c < 0xE0) return 2;
    if (c < 0xF0) return 3;
    if (c < 0xF5) return 4;
    return 0; /* F5..FF: above U+10FFFF or not UTF-8 at all */
}

static int s_bad(size_t off, size_t *bad, const char *why, unsigned byte) {
    if (bad) *bad = off;
    return fw_err_set(FW_EINVAL, "invalid UTF-8 at byte offset %zu: %s (byte 0x%02X)", off, why,
                      byte);
}

int fw_utf8_validate(const char *text, size_t len, size_t *bad) {
    const uint8_t *s = (const uint8_t *)text;
    size_t i = fw_utf8_valid_prefix(s, len);
    if (i == len) return 0;
    /* Say why the sequence at i is bad. */
    uint8_t c = s[i];
    int n = s_seq_len(c);
    if (n == 0) {
        if (c < 0xC0) return s_bad(i, bad, "stray continuation byte", c);
        if (c < 0xC2) return s_bad(i, bad, "overlong encoding", c);
        if (c < 0xF8) return s_bad(i, bad, "code point above U+10FFFF", c);
        return s_bad(i, bad, "byte never valid in UTF-8", c);
    }
    if (i + (size_t)n > len) return s_bad(i, bad, "truncated sequence at end of input", c);
    for (int k = 1; k < n; k++)
        if ((s[i + k] & 0xC0) != 0x80)
            return s_bad(i, bad, "truncated sequence (next byte is not a continuation)",
                         s[i + k]);
    uint8_t c1 = s[i + 1];
    if (c == 0xE0 && c1 < 0xA0) return s_bad(i, bad, "overlong encoding", c);
    if (c == 0xED && c1 >= 0xA0) return s_bad(i, bad, "surrogate code point", c);
    if (c == 0xF0 && c1 < 0x90) return s_bad(i, bad, "overlong encoding", c);
    return s_bad(i, bad, "code point above U+10FFFF", c); /* F4 9x..Bx */
}

/* ------------------------------------------------------- pre-tokenising */

/* Class of the character at s[i] (valid UTF-8), and the offset after it. */
static inline int s_class_at(const uint8_t *s, size_t i, size_t *next) {
    uint8_t c = s[i];
    if (c < 0x80) {
        *next = i + 1;
        return s_ascii_class[c];
    }
    uint32_t cp;
    if (c < 0xE0) {
        cp = (uint32_t)(c & 0x1F) << 6 | (s[i + 1] & 0x3F);
        *next = i + 2;
    } else if (c < 0xF0) {
        cp = (uint32_t)(c & 0x0F) << 12 | (uint32_t)(s[i + 1] & 0x3F) << 6 | (s[i + 2] & 0x3F);
        *next = i + 3;
    } else {
        cp = (uint32_t)(c & 0x07) << 18 | (uint32_t)(s[i + 1] & 0x3F) << 12 |
             (uint32_t)(s[i + 2] & 0x3F) << 6 | (s[i + 3] & 0x3F);
        *next = i + 4;
    }
    return fw_unicode_class(cp);
}

/* End of the maximal run of class cls starting at i. */
static inline size_t s_run(const uint8_t *s, size_t len, size_t i, int cls) {
    while (i < len) {
        uint8_t c = s[i];
        if (c < 0x80) {
            if (s_ascii_class[c] != cls) break;
            i++;
            continue;
        }
        size_t next;
        if (s_class_at(s, i, &next) != cls) break;
        i = next;
    }
    return i;
}

size_t fw_pretok_next(const char *text, size_t len, size_t pos) {
    const uint8_t *s = (const uint8_t *)text;
    uint8_t c = s[pos];

    /* 1: contractions. */
    if (c == '\'' && pos + 1 < len) {
        uint8_t d = s[pos + 1];
        if (d == 's' || d == 't' || d == 'm' || d == 'd') return pos + 2;
        if (pos + 2 < len) {
            uint8_t e = s[pos + 2];
            if ((d == 'r' && e == 'e') || (d == 'v' && e == 'e') || (d == 'l' && e == 'l'))
                return pos + 3;
        }
    }

    size_t next;
    int cls = s_class_at(s, pos, &next);

    /* 2-4 with the optional space taken: ' ' then a run of one class. */
    if (c == ' ' && next < len) {
        size_t after;
        int cls1 = s_class_at(s, next, &after);
        if (cls1 != FW_UC_SPACE) return s_run(s, len, after, cls1);
    }
    /* 2-4 without the space. */
    if (cls != FW_UC_SPACE) return s_run(s, len, next, cls);

    /* 5 and 6: a run of spaces; `last` is where its final character starts. */
    size_t last = pos, i = next;
    while (i < len) {
        size_t after;
        if (s_class_at(s, i, &after) != FW_UC_SPACE) break;
        last = i;
        i = after;
    }
    if (i == len) return i;      /* 5: nothing follows */
    if (last > pos) return last; /* 5: give back one space to the next word */
    return i;                    /* 6: a single space before a non-space */
}
