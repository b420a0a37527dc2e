/* The hand-written GPT-2 pre-tokeniser against PCRE2 running GPT-2's own
 * pattern, on random strings built from characters of every class; the
 * Unicode class tables on known code points; the UTF-8 validator against
 * a straightforward decoder on every 1- and 2-byte input and all 3-byte
 * inputs with a given lead byte.
 *
 * PCRE2's \s is not encoder.py's \s (Python's `regex` uses White_Space, which
 * includes U+0085), so the pattern spells that set out. The random strings
 * use characters assigned long before Unicode 14 (PCRE2 10.42's tables), so
 * the Unicode 17 tables of unicode_class.c and PCRE2 agree on all of them. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "fw_err.h"
#include "fw_test.h"
#include "unicode_class.h"
#include "unicode_pretok.h"

#define WS                                                                                         \
    "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"             \
    "\\x{202F}\\x{205F}\\x{3000}"
static const char s_pattern[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS
                                "\\p{L}\\p{N}]+|[" WS "]+(?![^" WS "])|[" WS "]+";

/* Characters of every class, and the ones the pattern treats specially. */
static const char *const s_pool[] = {
    /* ASCII letters, contraction letters, digits, apostrophes */
    "a",
    "Z",
    "s",
    "t",
    "r",
    "e",
    "v",
    "m",
    "l",
    "d",
    "S",
    "T",
    "0",
    "7",
    "'",
    "'",
    "'",
    /* ASCII white space and "other" */
    " ",
    " ",
    " ",
    " ",
    "\t",
    "\n",
    "\n",
    "\r",
    "\v",
    "\f",
    ".",
    ",",
    "!",
    "?",
    "-",
    "_",
    "#",
    "\"",
    "(",
    "\x01",
    "\x1c",
    "\x1f",
    "\x7f",
    /* Latin-1: letters, numbers, spaces (NBSP, NEL), other */
    "é",
    "ß",
    "ª",
    "µ",
    "²",
    "½",
    "\u00a0",
    "\xC2\x85",
    "×",
    "¿",
    /* other scripts: letters, digits, combining marks (neither L nor N) */
    "α",
    "ж",
    "ب",
    "٣",
    "क",
    "\u0301",
    "\u093e",
    "日",
    "の",
    "한",
    /* Unicode spaces and look-alikes that are not White_Space */
    "\u3000",
    "\u2003",
    "\u2028",
    "\u2029",
    "\u1680",
    "\u202f",
    "\u205f",
    "\u200b",
    "\u200d",
    "\ufeff",
    "\u180e",
    /* numbers outside Nd, astral letters, numbers and symbols */
    "Ⅻ",
    "⁴",
    "😀",
    "🏽",
    "𝐀",
    "𐍈",
    "🄀",
    "\ue000",
};

static void test_against_pcre2(void) {
    int errcode;
    PCRE2_SIZE erroff;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)s_pattern, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP, &errcode, &erroff, NULL);
    REQUIRE(re != NULL);
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    uint64_t seed = 42;
    size_t npool = sizeof s_pool / sizeof s_pool[0];
    char buf[512];
    int mismatches = 0, pieces = 0;
    for (int iter = 0; iter < 20000 && mismatches < 5; iter++) {
        size_t len = 0;
        int nchars = (int)(fw_test_rand(&seed) % 40);
        for (int c = 0; c < nchars; c++) {
            const char *ch = s_pool[fw_test_rand(&seed) % npool];
            size_t l = strlen(ch);
            memcpy(buf + len, ch, l);
            len += l;
        }
        REQUIRE(fw_utf8_validate(buf, len, NULL) == 0);
        for (size_t pos = 0; pos < len;) {
            int rc = pcre2_match(re, (PCRE2_SPTR)buf, len, pos, PCRE2_NO_UTF_CHECK, md, NULL);
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            size_t mine = fw_pretok_next(buf, len, pos);
            pieces++;
            if (rc < 0 || ov[0] != pos || ov[1] != mine) {
                mismatches++;
                fprintf(stderr, "mismatch at %zu in \"%.*s\": pcre2 [%zu,%zu) mine [%zu,%zu)\n",
                        pos, (int)len, buf, rc < 0 ? 0 : (size_t)ov[0], rc < 0 ? 0 : (size_t)ov[1],
                        pos, mine);
                break;
            }
            pos = mine;
        }
    }
    CHECK_EQ_INT(mismatches, 0);
    CHECK(pieces > 100000);
    pcre2_match_data_free(md);
    pcre2_code_free(re);
}

/* Splits of a few strings, written out by hand from encoder.py's regex. */
static void test_known_splits(void) {
    static const struct {
        const char *text;
        const char *pieces[12];
    } cases[] = {
        {"I'm here", {"I", "'m", " here"}},
        {"it's''s", {"it", "'s", "''", "s"}},
        {"a  b", {"a", " ", " b"}},
        {"a \t b", {"a", " \t", " b"}},
        {"end  ", {"end", "  "}},
        {"x\n\ny", {"x", "\n", "\n", "y"}}, /* only " " prefixes a word */
        {"x\u3000\u3000y", {"x", "\u3000", "\u3000", "y"}},
        {"ab12 34!!", {"ab", "12", " 34", "!!"}},
        {"\xC2\x85"
         "x",
         {"\xC2\x85", "x"}},
        {"e\u0301t", {"e", "\u0301", "t"}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *s = cases[i].text;
        size_t len = strlen(s), pos = 0;
        int k = 0;
        bool ok = true;
        while (pos < len && cases[i].pieces[k]) {
            size_t end = fw_pretok_next(s, len, pos);
            const char *want = cases[i].pieces[k++];
            if (end - pos != strlen(want) || memcmp(s + pos, want, end - pos) != 0) ok = false;
            pos = end;
        }
        CHECKF(ok && pos == len && !cases[i].pieces[k], "split of case %zu", i);
    }
}

static void test_classes(void) {
    CHECK_EQ_INT(fw_unicode_class('a'), FW_UC_LETTER);
    CHECK_EQ_INT(fw_unicode_class('5'), FW_UC_NUMBER);
    CHECK_EQ_INT(fw_unicode_class(' '), FW_UC_SPACE);
    CHECK_EQ_INT(fw_unicode_class(0x1C), FW_UC_OTHER); /* not White_Space */
    CHECK_EQ_INT(fw_unicode_class(0x85), FW_UC_SPACE); /* NEL is, for `regex` */
    CHECK_EQ_INT(fw_unicode_class(0xA0), FW_UC_SPACE);
    CHECK_EQ_INT(fw_unicode_class(0x200B), FW_UC_OTHER); /* zero-width space: Cf */
    CHECK_EQ_INT(fw_unicode_class(0xFEFF), FW_UC_OTHER);
    CHECK_EQ_INT(fw_unicode_class(0x0301), FW_UC_OTHER); /* combining acute: Mn */
    CHECK_EQ_INT(fw_unicode_class(0x00B2), FW_UC_NUMBER);
    CHECK_EQ_INT(fw_unicode_class(0x2160), FW_UC_NUMBER); /* Roman numeral one: Nl */
    CHECK_EQ_INT(fw_unicode_class(0x4E00), FW_UC_LETTER);
    CHECK_EQ_INT(fw_unicode_class(0x1F600), FW_UC_OTHER);
    CHECK_EQ_INT(fw_unicode_class(0xD800), FW_UC_OTHER);
    CHECK_EQ_INT(fw_unicode_class(0x10FFFF), FW_UC_OTHER);
    CHECK_EQ_INT(fw_unicode_class(0x110000), FW_UC_OTHER);
    /* Characters newer than PCRE2 10.42's Unicode 14: the tables follow the
     * `regex` module GPT-2's encoder.py runs on (Unicode 17). */
    CHECK_EQ_INT(fw_unicode_class(0x31350), FW_UC_LETTER); /* CJK extension H (15.0) */
    CHECK_EQ_INT(fw_unicode_class(0x2EBF0), FW_UC_LETTER); /* CJK extension I (15.1) */
    CHECK_EQ_INT(fw_unicode_class(0x10D40), FW_UC_NUMBER); /* Garay digit zero (16.0) */
}

/* Reference: decode by bit pattern, then apply the shortest-form, surrogate
 * and range rules. */
static bool s_ref_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        int k = c < 0x80             ? 0
                : (c & 0xE0) == 0xC0 ? 1
                : (c & 0xF0) == 0xE0 ? 2
                : (c & 0xF8) == 0xF0 ? 3
                                     : -1;
        if (k < 0) return false;
        uint32_t cp = k == 0 ? c : (uint32_t)(c & (0x3F >> k));
        for (int j = 1; j <= k; j++) {
            if (i + (size_t)j >= n || (s[i + j] & 0xC0) != 0x80) return false;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        static const uint32_t min[4] = {0, 0x80, 0x800, 0x10000};
        if (cp < min[k] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += (size_t)k + 1;
    }
    return true;
}

static void test_utf8_exhaustive(void) {
    uint8_t b[4];
    int bad = 0;
    for (int x = 0; x < 256; x++) {
        b[0] = (uint8_t)x;
        bad += (fw_utf8_validate((char *)b, 1, NULL) == 0) != s_ref_valid(b, 1);
        for (int y = 0; y < 256; y++) {
            b[1] = (uint8_t)y;
            bad += (fw_utf8_validate((char *)b, 2, NULL) == 0) != s_ref_valid(b, 2);
        }
    }
    for (int x = 0xE0; x <= 0xF4; x++)
        for (int y = 0; y < 256; y++)
            for (int z = 0; z < 256; z++) {
                b[0] = (uint8_t)x;
                b[1] = (uint8_t)y;
                b[2] = (uint8_t)z;
                b[3] = 0x80;
                bad += (fw_utf8_validate((char *)b, 3, NULL) == 0) != s_ref_valid(b, 3);
                bad += (fw_utf8_validate((char *)b, 4, NULL) == 0) != s_ref_valid(b, 4);
            }
    CHECK_EQ_INT(bad, 0);
    size_t off = 99;
    CHECK_EQ_INT(fw_utf8_validate("abc\xC3", 4, &off), FW_EINVAL);
    CHECK_EQ_INT(off, 3);
}

int main(void) {
    RUN(test_against_pcre2);
    RUN(test_known_splits);
    RUN(test_classes);
    RUN(test_utf8_exhaustive);
    return fw_test_summary();
}
