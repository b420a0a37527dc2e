/* fw_utf8.c - see fw_utf8.h. */
#include "fw_utf8.h"

#include <stdint.h>
#include <string.h>

size_t fw_utf8_valid_prefix(const void *str, size_t len) {
    const uint8_t *s = str;
    size_t i = 0;
    while (i < len) {
        /* Most text is ASCII: skip eight bytes at a time while no high bit is set. */
        if (i + 8 <= len) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!(w & 0x8080808080808080ull)) {
                i += 8;
                continue;
            }
        }
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        /* The lead byte gives the length; the second byte's range rules out
         * the overlong forms, the surrogates and code points past U+10FFFF. */
        size_t k;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) {
            k = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 2;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 3;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else {
            return i; /* continuation byte, C0/C1, F5..FF */
        }
        if (i + k >= len) return i; /* truncated sequence */
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t j = 2; j <= k; j++)
            if ((s[i + j] & 0xC0) != 0x80) return i;
        i += k + 1;
    }
    return len;
}
