/* unicode_class.h - the four character classes GPT-2's pre-tokeniser needs.
 *
 * GPT-2's pattern only ever asks whether a code point is a letter (\p{L}), a
 * number (\p{N}), white space (\s) or none of these, so one 2-bit class per
 * code point answers every question. ASCII is answered from a small table;
 * the rest from the generated two-stage table in unicode_class.c. */
#ifndef FW_UNICODE_CLASS_H
#define FW_UNICODE_CLASS_H

#include <stdint.h>

enum {
    FW_UC_OTHER = 0, /* [^\s\p{L}\p{N}] */
    FW_UC_LETTER = 1,
    FW_UC_NUMBER = 2,
    FW_UC_SPACE = 3,
};

extern const uint8_t fw_unicode_stage1[0x1100];
extern const uint8_t fw_unicode_stage2[][64];

/* Class of code point cp (0 .. 0x10FFFF; anything above is "other"). */
static inline int fw_unicode_class(uint32_t cp) {
    if (cp > 0x10FFFF) return FW_UC_OTHER;
    const uint8_t *block = fw_unicode_stage2[fw_unicode_stage1[cp >> 8]];
    return (block[(cp & 0xFF) >> 2] >> ((cp & 3) * 2)) & 3;
}

#endif
