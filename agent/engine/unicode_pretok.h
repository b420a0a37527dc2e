/* unicode_pretok.h - UTF-8 validation and GPT-2's pre-tokenisation split.
 *
 * GPT-2 cuts text into "pre-tokens" with one regular expression before BPE
 * runs on each piece:
 *
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *
 * fw_pretok_next() is a hand-written matcher for exactly that pattern, with
 * the character classes of Python's `regex` module (unicode_class.h). It is
 * checked against PCRE2 running the pattern itself in test_tokenizer_pretok. */
#ifndef FW_UNICODE_PRETOK_H
#define FW_UNICODE_PRETOK_H

#include <stddef.h>

/* 0 when s[0..len) is valid UTF-8: no overlong forms, no surrogates
 * (U+D800..U+DFFF), nothing above U+10FFFF, no stray continuation bytes and
 * no truncated sequence. Otherwise FW_EINVAL with fw_err_detail() giving the
 * byte offset of the offending sequence, which is also stored in *bad when
 * bad is not NULL. */
int fw_utf8_validate(const char *s, size_t len, size_t *bad);

/* End offset of the pre-token that starts at pos (pos < len). s must be
 * valid UTF-8 (see fw_utf8_validate); the result is always > pos and <= len,
 * and always on a character boundary. */
size_t fw_pretok_next(const char *s, size_t len, size_t pos);

#endif
