/* Digests: SHA-256 against the FIPS 180-2 vectors, one-shot == incremental ==
 * streamed file, and the strict "sha256:<64 hex>" text form. */
#include "fw_digest.h"
#include "fw_err.h"
#include "fw_file.h"
#include "fw_test.h"

#include <stdlib.h>

static void s_hex(const fw_digest *d, char *buf) {
    fw_digest_format(d, buf);
}

static void test_vectors(void) {
    static const struct {
        const char *msg, *hex;
    } v[] = {
        {"", "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "sha256:248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    char buf[FW_DIGEST_STR_SIZE];
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        fw_digest d;
        CHECK_EQ_INT(fw_digest_buffer(v[i].msg, strlen(v[i].msg), &d), 0);
        s_hex(&d, buf);
        CHECK_EQ_STR(buf, v[i].hex);
        CHECK_EQ_INT(strlen(buf), FW_DIGEST_STR_LEN);
    }
    /* One million 'a', fed incrementally in uneven pieces. */
    char *a = malloc(1000000);
    REQUIRE(a);
    memset(a, 'a', 1000000);
    fw_digest_ctx *ctx = fw_digest_ctx_new();
    REQUIRE(ctx);
    size_t off = 0, step = 1;
    while (off < 1000000) {
        size_t n = step < 1000000 - off ? step : 1000000 - off;
        CHECK_EQ_INT(fw_digest_ctx_update(ctx, a + off, n), 0);
        off += n;
        step = step * 3 + 1;
    }
    fw_digest d;
    CHECK_EQ_INT(fw_digest_ctx_final(ctx, &d), 0);
    CHECK_EQ_STR(fw_digest_format(&d, buf),
                 "sha256:cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    /* final resets: the same context hashes the next message from scratch. */
    CHECK_EQ_INT(fw_digest_ctx_update(ctx, "ab", 2), 0);
    CHECK_EQ_INT(fw_digest_ctx_update(ctx, "c", 1), 0);
    CHECK_EQ_INT(fw_digest_ctx_final(ctx, &d), 0);
    CHECK_EQ_STR(fw_digest_format(&d, buf),
                 "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    fw_digest_ctx_destroy(&ctx);
    CHECK(ctx == NULL);
    fw_digest_ctx_destroy(&ctx); /* idempotent */
    free(a);
}

static void test_file_equals_buffer(void) {
    char *dir = fw_test_tmpdir("digest");
    REQUIRE(dir);
    char path[512];
    snprintf(path, sizeof path, "%s/blob", dir);
    /* Not a multiple of the 256 KiB read chunk, so the last read is short. */
    size_t n = 700001;
    unsigned char *buf = malloc(n);
    REQUIRE(buf);
    uint64_t st = 42;
    for (size_t i = 0; i < n; i++) buf[i] = (unsigned char)fw_test_rand(&st);
    REQUIRE(fw_file_write_atomic(path, buf, n, 0644) == 0);
    fw_digest a, b;
    CHECK_EQ_INT(fw_digest_buffer(buf, n, &a), 0);
    CHECK_EQ_INT(fw_digest_file(path, &b), 0);
    CHECK(fw_digest_equal(&a, &b));
    buf[n - 1] ^= 1;
    CHECK_EQ_INT(fw_digest_buffer(buf, n, &a), 0);
    CHECK(!fw_digest_equal(&a, &b));
    /* An empty file hashes like the empty string. */
    snprintf(path, sizeof path, "%s/empty", dir);
    REQUIRE(fw_file_write_atomic(path, "", 0, 0644) == 0);
    CHECK_EQ_INT(fw_digest_file(path, &b), 0);
    char hex[FW_DIGEST_STR_SIZE];
    CHECK_EQ_STR(fw_digest_format(&b, hex),
                 "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    snprintf(path, sizeof path, "%s/missing", dir);
    CHECK_EQ_INT(fw_digest_file(path, &b), FW_ENOTFOUND);
    CHECK(strstr(fw_err_detail(), "missing") != NULL);
    free(buf);
    fw_file_remove_tree(dir);
    free(dir);
}

static void test_text_form(void) {
    const char *good = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    fw_digest d, e;
    char buf[FW_DIGEST_STR_SIZE];
    CHECK_EQ_INT(fw_digest_parse(good, &d), 0);
    CHECK_EQ_STR(fw_digest_format(&d, buf), good);
    CHECK_EQ_INT(fw_digest_buffer("abc", 3, &e), 0);
    CHECK(fw_digest_equal(&d, &e));
    CHECK(fw_digest_valid(good));
    CHECK_EQ_INT(fw_digest_parse(good, NULL), 0);

    static const struct {
        const char *s, *why;
    } bad[] = {
        {"sha1:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "sha256:"},
        {"SHA256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "sha256:"},
        {"sha256:BA7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "character 8"},
        {"sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a", "63 hex"},
        {"sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad0", "longer"},
        {"sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ag", "character 71"},
        {"sha256:", "0 hex"},
        {"", "sha256:"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECKF(fw_digest_parse(bad[i].s, &d) == FW_EINVAL, "%s", bad[i].s);
        CHECKF(strstr(fw_err_detail(), bad[i].why) != NULL, "'%s' -> %s", bad[i].s,
               fw_err_detail());
        CHECKF(!fw_digest_valid(bad[i].s), "%s", bad[i].s);
    }
    CHECK_EQ_INT(fw_digest_parse(NULL, &d), FW_EINVAL);
    CHECK(!fw_digest_valid(NULL));
}

int main(void) {
    RUN(test_vectors);
    RUN(test_file_equals_buffer);
    RUN(test_text_form);
    return fw_test_summary();
}
