/* fw_utf8: the well-formed prefix, at every kind of bad sequence and at
 * every position relative to the 8-byte ASCII fast path. */
#include "fw_test.h"
#include "fw_utf8.h"

#include <string.h>

static size_t s_pre(const char *s) { return fw_utf8_valid_prefix(s, strlen(s)); }

static void test_valid(void) {
    CHECK_EQ_INT(s_pre(""), 0);
    CHECK_EQ_INT(s_pre("plain ascii text, longer than eight"), 35);
    CHECK_EQ_INT(s_pre("caf\xc3\xa9"), 5);                   /* U+00E9 */
    CHECK_EQ_INT(s_pre("\xe2\x82\xac"), 3);                  /* U+20AC */
    CHECK_EQ_INT(s_pre("\xed\x9f\xbf"), 3);                  /* U+D7FF, last before surrogates */
    CHECK_EQ_INT(s_pre("\xf0\x9f\x90\xb3 whale"), 10);       /* U+1F433 */
    CHECK_EQ_INT(s_pre("\xf4\x8f\xbf\xbf"), 4);              /* U+10FFFF */
}

static void test_invalid(void) {
    CHECK_EQ_INT(s_pre("ab\x80"), 2);             /* stray continuation */
    CHECK_EQ_INT(s_pre("ab\xc0\xaf"), 2);         /* overlong '/' */
    CHECK_EQ_INT(s_pre("ab\xc1\xbf"), 2);         /* overlong */
    CHECK_EQ_INT(s_pre("ab\xe0\x80\xaf"), 2);     /* overlong 3-byte */
    CHECK_EQ_INT(s_pre("ab\xed\xa0\x80"), 2);     /* surrogate U+D800 */
    CHECK_EQ_INT(s_pre("ab\xf0\x80\x80\xaf"), 2); /* overlong 4-byte */
    CHECK_EQ_INT(s_pre("ab\xf4\x90\x80\x80"), 2); /* U+110000 */
    CHECK_EQ_INT(s_pre("ab\xf5\x80\x80\x80"), 2); /* F5 never leads */
    CHECK_EQ_INT(s_pre("ab\xff"), 2);
    CHECK_EQ_INT(s_pre("ab\xe2\x82"), 2);         /* truncated at the end */
    CHECK_EQ_INT(s_pre("ab\xe2\x28\xa1"), 2);     /* second byte not a continuation */
    CHECK_EQ_INT(s_pre("ab\xf0\x9f\x90\x28"), 2); /* fourth byte not a continuation */
}

static void test_positions(void) {
    /* A bad byte at every offset of a 24-byte ASCII run. */
    for (size_t at = 0; at < 24; at++) {
        char buf[25];
        memset(buf, 'x', 24);
        buf[24] = '\0';
        buf[at] = (char)0xBF;
        CHECK_EQ_INT(fw_utf8_valid_prefix(buf, 24), at);
    }
}

int main(void) {
    RUN(test_valid);
    RUN(test_invalid);
    RUN(test_positions);
    return fw_test_summary();
}
