/* The codec under allocation failure (SQLite style): fail the N-th
 * allocation ("proto.alloc") for N = 1, 2, ... until an operation completes
 * without the fault firing. Every failed run must return FW_ENOMEM and leave
 * nothing half-made (no message, no buffer, the old field value in place);
 * the final run must give the same result as without faults. Leaks show up
 * under valgrind / ASan. Built with the proto sources and fw_fault.c
 * compiled in with FW_FAULT_INJECTION=1 (tests/proto.cmake). */
#include "fw_err.h"
#include "fw_fault.h"
#include "fw_log.h"
#include "fw_proto.h"
#include "fw_test.h"

#include <stdlib.h>
#include <string.h>

/* Frames to decode: every message with all fields, and one lz4-compressed. */
static int s_frames(uint8_t ***frames, size_t **lens) {
    int n = fw_proto_msg_count() + 1;
    *frames = calloc((size_t)n, sizeof **frames);
    *lens = calloc((size_t)n, sizeof **lens);
    for (int i = 0; i < n; i++) {
        fw_msg_t *m;
        if (i < n - 1) {
            m = fw_proto_example(fw_proto_msg_at(i)->id, true, (uint64_t)i);
        } else {
            m = fw_proto_example(FW_MSG_TASK_LOG, false, 1);
            size_t big = 2 * FW_PROTO_LZ4_THRESHOLD;
            char *t = malloc(big);
            for (size_t j = 0; j < big; j++) t[j] = "abcabd"[j % 6];
            fw_msg_set_bin(m, "data", t, big);
            free(t);
        }
        if (!m || fw_msg_encode(m, &(*frames)[i], &(*lens)[i]) < 0) return -1;
        fw_msg_destroy(&m);
    }
    return n;
}

static void test_decode_faults(void) {
    uint8_t **frames;
    size_t *lens;
    int n = s_frames(&frames, &lens);
    REQUIRE(n > 0);
    int runs = 0, bad = 0;
    for (int i = 0; i < n; i++) {
        for (int k = 1;; k++) {
            fw_fault_reset();
            fw_fault_arm("proto.alloc", k);
            fw_msg_t *m = NULL;
            int rc = fw_msg_decode(frames[i], lens[i], &m);
            int fired = fw_fault_fired();
            fw_fault_reset();
            runs++;
            if (!fired) {
                CHECKF(rc == 0 && m, "frame %d: %s", i, fw_err_detail());
                /* ... and it is the message the frame holds. */
                uint8_t *b = NULL;
                size_t l = 0;
                CHECK(m && fw_msg_encode(m, &b, &l) == 0 && l == lens[i] &&
                      memcmp(b, frames[i], l) == 0);
                free(b);
                fw_msg_destroy(&m);
                break;
            }
            if (rc != FW_ENOMEM || m != NULL) {
                bad++;
                fprintf(stderr, "frame %d alloc %d: rc %s, msg %p\n", i, k, fw_errname(rc),
                        (void *)m);
            }
            fw_msg_destroy(&m);
        }
    }
    CHECK_EQ_INT(bad, 0);
    CHECKF(runs > 2 * n, "%d runs over %d frames", runs, n);
    for (int i = 0; i < n; i++) free(frames[i]);
    free(frames);
    free(lens);
}

static void test_encode_faults(void) {
    int bad = 0;
    for (int i = 0; i < fw_proto_msg_count(); i++) {
        fw_msg_t *m = fw_proto_example(fw_proto_msg_at(i)->id, true, (uint64_t)i + 1);
        uint8_t *want = NULL;
        size_t want_len = 0;
        REQUIRE(m && fw_msg_encode(m, &want, &want_len) == 0);
        for (int k = 1;; k++) {
            fw_fault_reset();
            fw_fault_arm("proto.alloc", k);
            uint8_t *b = NULL;
            size_t l = 0;
            int rc = fw_msg_encode(m, &b, &l);
            int fired = fw_fault_fired();
            fw_fault_reset();
            if (!fired) {
                CHECK(rc == 0 && l == want_len && memcmp(b, want, l) == 0);
                free(b);
                break;
            }
            if (rc != FW_ENOMEM || b != NULL || l != 0) bad++;
            free(b);
        }
        free(want);
        fw_msg_destroy(&m);
    }
    CHECK_EQ_INT(bad, 0);
}

/* Building messages: examples (fw_val trees, setters) and copies. */
static void test_build_faults(void) {
    int bad = 0, made = 0;
    for (int i = 0; i < fw_proto_msg_count(); i++) {
        int id = fw_proto_msg_at(i)->id;
        fw_msg_t *ref = fw_proto_example(id, true, 5);
        REQUIRE(ref);
        for (int k = 1;; k++) {
            fw_fault_reset();
            fw_fault_arm("proto.alloc", k);
            fw_msg_t *m = fw_proto_example(id, true, 5);
            fw_msg_t *d = m ? fw_msg_dup(m) : NULL;
            int fired = fw_fault_fired();
            fw_fault_reset();
            if (!fired) {
                CHECK(m && d && fw_msg_equal(m, ref) && fw_msg_equal(d, ref));
                fw_msg_destroy(&d);
                fw_msg_destroy(&m);
                break;
            }
            /* Whatever was made is whole. */
            if (m && !fw_msg_equal(m, ref)) bad++;
            if (d && !fw_msg_equal(d, ref)) bad++;
            made += m != NULL;
            fw_msg_destroy(&d);
            fw_msg_destroy(&m);
        }
        fw_msg_destroy(&ref);
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(made > 0); /* some runs failed only in fw_msg_dup */

    /* A failed setter leaves the old value. */
    fw_msg_t *m = fw_msg_new(FW_MSG_ACK);
    REQUIRE(m && fw_msg_set_str(m, "detail", "old") == 0);
    fw_fault_reset();
    fw_fault_arm("proto.alloc", 1);
    CHECK(fw_msg_set_str(m, "detail", "new") == FW_ENOMEM);
    fw_fault_reset();
    CHECK_EQ_STR(fw_msg_get_str(m, "detail"), "old");
    fw_msg_destroy(&m);
}

int main(void) {
    fw_log_set_level(FW_LOG_WARN); /* one "fault-injected" line per run otherwise */
    RUN(test_decode_faults);
    RUN(test_encode_faults);
    RUN(test_build_faults);
    return fw_test_summary();
}
