/* Decoding hostile input never crashes, leaks or misreports: 10,000 random
 * frames (raw bytes, and well-formed msgpack with random shapes behind a
 * valid envelope) and 10,000 mutations of valid frames (bit flips, byte
 * overwrites, insertions, deletions, truncations, duplicated ranges), from a
 * fixed seed. Each must give a valid message - which then re-encodes and
 * decodes to an equal message - or FW_EPROTO / FW_ETOOBIG / FW_EVERSION with
 * a detail and no message. Run it under valgrind or ASan to check leaks. */
#include "fw_err.h"
#include "fw_proto.h"
#include "fw_test.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

static uint64_t s_rng = 0x5eed5eed12345ull;
static uint64_t s_rand(uint64_t n) {
    return n ? fw_test_rand(&s_rng) % n : 0;
}

static int s_ok, s_err;
static int s_by_err[3];

/* Decode one frame and check the outcome is one of the two allowed ones. */
static void s_check_frame(const uint8_t *buf, size_t len, const char *what, int i) {
    /* An exact-size copy, so that ASan/valgrind see any read past the end. */
    uint8_t *copy = malloc(len ? len : 1);
    if (len) memcpy(copy, buf, len);
    fw_msg_t *m = NULL;
    fw_err_clear();
    int rc = fw_msg_decode(copy, len, &m);
    free(copy);
    if (rc == 0) {
        s_ok++;
        CHECKF(m != NULL, "%s %d: success without a message", what, i);
        if (!m) return;
        /* What was accepted must be re-encodable and stable. */
        uint8_t *b2;
        size_t l2;
        int rc2 = fw_msg_encode(m, &b2, &l2);
        CHECKF(rc2 == 0, "%s %d: decoded %s does not re-encode: %s", what, i, fw_msg_name(m),
               fw_err_detail());
        if (rc2 == 0) {
            fw_msg_t *m2 = NULL;
            CHECKF(fw_msg_decode(b2, l2, &m2) == 0 && fw_msg_equal(m, m2),
                   "%s %d: unstable round trip", what, i);
            fw_msg_destroy(&m2);
            free(b2);
        }
        fw_msg_destroy(&m);
        return;
    }
    s_err++;
    bool allowed = rc == FW_EPROTO || rc == FW_ETOOBIG || rc == FW_EVERSION;
    CHECKF(allowed, "%s %d: unexpected error %s (%s)", what, i, fw_errname(rc), fw_err_detail());
    CHECKF(m == NULL, "%s %d: error with a message", what, i);
    CHECKF(*fw_err_detail() != '\0', "%s %d: %s without a detail", what, i, fw_errname(rc));
    s_by_err[rc == FW_EPROTO ? 0 : rc == FW_ETOOBIG ? 1 : 2]++;
}

/* A random msgpack value of bounded size, biased to shapes the schema uses. */
static void s_rand_value(msgpack_packer *pk, int depth) {
    static const char *keys[] = {"job_id",  "task_id", "attempt", "spec",  "data",      "gpus",
                                 "env",     "x",       "name",    "index", "memory_mb", "cpus",
                                 "running", "metrics", "token",   "doc"};
    int kind = (int)s_rand(depth > 9 ? 8 : 11);
    switch (kind) {
    case 0:
        msgpack_pack_nil(pk);
        break;
    case 1:
        s_rand(2) ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
        break;
    case 2:
        msgpack_pack_uint64(pk, s_rand(4) ? s_rand(300) : fw_test_rand(&s_rng));
        break;
    case 3:
        msgpack_pack_int64(pk, -(int64_t)s_rand(100000) - 1);
        break;
    case 4:
        msgpack_pack_double(pk, (double)s_rand(1000) / 7.0);
        break;
    case 5:
    case 6: {
        const char *k = keys[s_rand(16)];
        msgpack_pack_str_with_body(pk, k, strlen(k));
        break;
    }
    case 7: {
        char b[8] = "\x00\x01\x02\xff\xfe\x80\x7f";
        msgpack_pack_bin_with_body(pk, b, s_rand(8));
        break;
    }
    case 8: {
        size_t n = s_rand(4);
        msgpack_pack_array(pk, n);
        for (size_t i = 0; i < n; i++) s_rand_value(pk, depth + 1);
        break;
    }
    default: {
        size_t n = s_rand(5);
        msgpack_pack_map(pk, n);
        for (size_t i = 0; i < n; i++) {
            const char *k = keys[s_rand(16)];
            msgpack_pack_str_with_body(pk, k, strlen(k));
            s_rand_value(pk, depth + 1);
        }
        break;
    }
    }
}

/* A frame with a valid envelope and a payload of the message's own field
 * names bound to random values: gets past the envelope into type checks. */
static void s_rand_structured(msgpack_sbuffer *sb) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    const fw_msg_info *mi = fw_proto_msg_at((int)s_rand((uint64_t)fw_proto_msg_count()));
    msgpack_pack_array(&pk, 8);
    msgpack_pack_uint32(&pk, FW_PROTO_MAGIC);
    msgpack_pack_uint8(&pk, s_rand(50) ? FW_PROTO_VERSION : (uint8_t)s_rand(4));
    msgpack_pack_uint16(&pk, s_rand(50) ? (uint16_t)mi->id : (uint16_t)s_rand(200));
    msgpack_pack_uint16(&pk, (uint16_t)s_rand(4));
    msgpack_pack_uint64(&pk, fw_test_rand(&s_rng));
    msgpack_pack_uint64(&pk, s_rand(3));
    msgpack_pack_str_with_body(&pk, "fuzz", 4);
    size_t n = s_rand((uint64_t)mi->nfields + 2);
    msgpack_pack_map(&pk, n);
    for (size_t i = 0; i < n; i++) {
        const char *k =
            mi->nfields && s_rand(5) ? mi->fields[s_rand((uint64_t)mi->nfields)].name : "extra";
        msgpack_pack_str_with_body(&pk, k, strlen(k));
        s_rand_value(&pk, 1);
    }
}

static void test_random_frames(void) {
    uint8_t raw[600];
    for (int i = 0; i < 10000; i++) {
        if (i % 2 == 0) {
            size_t len = s_rand(sizeof raw);
            for (size_t j = 0; j < len; j++) raw[j] = (uint8_t)fw_test_rand(&s_rng);
            /* Half of them start like an envelope, to get past the first byte. */
            if (len > 6 && i % 4 == 0)
                memcpy(raw,
                       "\x98\xce"
                       "FWLY",
                       6);
            s_check_frame(raw, len, "random", i);
        } else {
            msgpack_sbuffer sb;
            msgpack_sbuffer_init(&sb);
            s_rand_structured(&sb);
            s_check_frame((const uint8_t *)sb.data, sb.size, "structured", i);
            msgpack_sbuffer_destroy(&sb);
        }
    }
    CHECK(s_err > 0);
}

/* One mutation of buf (len bytes, capacity cap); returns the new length. */
static size_t s_mutate(uint8_t *buf, size_t len, size_t cap) {
    static const uint8_t interesting[] = {0x00, 0xff, 0xc0, 0xc1, 0x7f, 0x80, 0x8f, 0x9f, 0xbf,
                                          0xc4, 0xc9, 0xca, 0xcf, 0xd3, 0xd9, 0xdb, 0xdd, 0xdf};
    if (!len) return 0;
    size_t at = s_rand(len);
    switch (s_rand(6)) {
    case 0:
        buf[at] ^= (uint8_t)(1u << s_rand(8));
        return len;
    case 1:
        buf[at] = interesting[s_rand(sizeof interesting)];
        return len;
    case 2:
        if (len + 1 > cap) return len;
        memmove(buf + at + 1, buf + at, len - at);
        buf[at] = (uint8_t)fw_test_rand(&s_rng);
        return len + 1;
    case 3:
        memmove(buf + at, buf + at + 1, len - at - 1);
        return len - 1;
    case 4:
        return at; /* truncate */
    default: {
        size_t n = 1 + s_rand(16);
        if (at + n > len || len + n > cap) return len;
        memmove(buf + at + n, buf + at, len - at);
        return len + n; /* buf[at..at+n) now appears twice */
    }
    }
}

static void test_mutated_frames(void) {
    /* The corpus: every message, all fields and required only, plus one
     * with an lz4-compressed field. */
    int n = fw_proto_msg_count();
    int nf = 2 * n + 1;
    uint8_t **frames = calloc((size_t)nf, sizeof *frames);
    size_t *lens = calloc((size_t)nf, sizeof *lens);
    for (int i = 0; i < n; i++)
        for (int all = 0; all <= 1; all++) {
            fw_msg_t *m =
                fw_proto_example(fw_proto_msg_at(i)->id, all, (uint64_t)i * 3 + (uint64_t)all);
            REQUIRE(m && fw_msg_encode(m, &frames[2 * i + all], &lens[2 * i + all]) == 0);
            fw_msg_destroy(&m);
        }
    fw_msg_t *m = fw_proto_example(FW_MSG_TASK_LOG, false, 9);
    size_t big = 3 * FW_PROTO_LZ4_THRESHOLD / 2;
    char *text = malloc(big);
    for (size_t j = 0; j < big; j++) text[j] = "flywheel log line\n"[j % 18];
    REQUIRE(fw_msg_set_bin(m, "data", text, big) == 0);
    REQUIRE(fw_msg_encode(m, &frames[nf - 1], &lens[nf - 1]) == 0);
    REQUIRE(lens[nf - 1] < big); /* it was compressed */
    free(text);
    fw_msg_destroy(&m);

    size_t cap = big + 64;
    uint8_t *work = malloc(cap);
    int ok_before = s_ok, err_before = s_err;
    for (int i = 0; i < 10000; i++) {
        /* The compressed frame is big: mutate it 1 time in 25. */
        int f = i % 25 == 0 ? nf - 1 : (int)s_rand((uint64_t)nf - 1);
        size_t len = lens[f];
        memcpy(work, frames[f], len);
        int muts = 1 + (int)s_rand(4);
        for (int k = 0; k < muts; k++) len = s_mutate(work, len, cap);
        s_check_frame(work, len, "mutated", i);
    }
    /* Both outcomes occur: mutations inside string bytes often stay valid. */
    CHECKF(s_ok - ok_before > 100 && s_err - err_before > 1000, "%d valid, %d rejected",
           s_ok - ok_before, s_err - err_before);
    free(work);
    for (int i = 0; i < nf; i++) free(frames[i]);
    free(frames);
    free(lens);
}

int main(void) {
    RUN(test_random_frames);
    RUN(test_mutated_frames);
    printf("decoded %d valid, rejected %d (EPROTO %d, ETOOBIG %d, EVERSION %d)\n", s_ok, s_err,
           s_by_err[0], s_by_err[1], s_by_err[2]);
    return fw_test_summary();
}
