/* fw_utf8.h - UTF-8 validation shared by the protocol, the engine's data
 * and CLI, and the tokenizer.
 *
 * Well-formed means what the Unicode Standard's table 3-7 allows: shortest
 * forms only, no surrogates (U+D800..U+DFFF), nothing above U+10FFFF. */
#ifndef FW_UTF8_H
#define FW_UTF8_H

#include <stddef.h>

/* Length of the longest well-formed prefix of s: len when all of s is
 * valid, else the offset of the first byte of the first bad (or truncated)
 * sequence. */
size_t fw_utf8_valid_prefix(const void *s, size_t len);

#endif
