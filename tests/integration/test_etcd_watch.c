/* test_etcd_watch - watches against a real single-member etcd: events in
 * order with the right fields, the pollable fd, back-pressure with a tiny
 * queue, a watch from a compacted revision (FW_ECOMPACTED), list+watch, and
 * a stream dropped by a killed member that resumes, after a restart, at
 * the revision after the last event delivered. */
#include "etcd_harness.h"
#include "fw_err.h"
#include "fw_etcd.h"
#include "fw_test.h"
#include "fw_time.h"

#include <poll.h>
#include <stdlib.h>
#include <string.h>

static fw_etcd_harness *H;
static fw_etcd *C;

static bool s_readable(int fd, int ms) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

static void s_put(const char *k, const char *v, int64_t *rev) {
    CHECKF(fw_etcd_put(C, k, v, strlen(v), 0, rev, NULL) == 0, "put %s: %s", k, fw_err_detail());
}

static void s_order(void) {
    fw_etcd_watch_opts o = {.prefix = true, .prev_kv = true};
    fw_etcd_watch *w = fw_etcd_watch_new(C, "/w/", &o);
    REQUIRE(w != NULL);
    int fd = fw_etcd_watch_fd(w);
    CHECK(fd >= 0);
    fw_etcd_event ev;
    CHECK_EQ_INT(fw_etcd_watch_next(w, 0, &ev), 0);
    CHECK(!s_readable(fd, 0));
    int64_t t0 = fw_mono_ms();
    CHECK_EQ_INT(fw_etcd_watch_next(w, 200, &ev), 0); /* times out, no event */
    CHECK(fw_mono_ms() - t0 >= 190);

    int64_t r1, r2, r3, r4;
    s_put("/w/a", "1", &r1);
    s_put("/w/a", "2", &r2);
    s_put("/w/b", "x", &r3);
    s_put("/other", "not watched", NULL);
    REQUIRE(fw_etcd_delete(C, "/w/a", false, NULL, &r4) == 0);
    fw_etcd_txn *t = fw_etcd_txn_new();
    fw_etcd_txn_put(t, FW_ETCD_SUCCESS, "/w/c", "c", 1, 0, false);
    fw_etcd_txn_put(t, FW_ETCD_SUCCESS, "/w/d", "d", 1, 0, false);
    fw_etcd_txn_result *tr = NULL;
    REQUIRE(fw_etcd_txn_commit(C, t, &tr) == 0);
    int64_t r5 = tr->revision;
    fw_etcd_txn_result_free(&tr);
    fw_etcd_txn_destroy(&t);

    CHECK(s_readable(fd, 2000)); /* the fd wakes a poller */
    REQUIRE(fw_etcd_watch_next(w, 2000, &ev) == 1);
    CHECK_EQ_INT(ev.type, FW_ETCD_EV_PUT);
    CHECK_EQ_STR(ev.kv.key, "/w/a");
    CHECK_EQ_STR(ev.kv.value, "1");
    CHECK_EQ_INT(ev.kv.mod_revision, r1);
    CHECK_EQ_INT(ev.kv.create_revision, r1);
    CHECK_EQ_INT(ev.kv.version, 1);
    CHECK(!ev.has_prev);
    fw_etcd_event_clear(&ev);
    REQUIRE(fw_etcd_watch_next(w, 2000, &ev) == 1);
    CHECK_EQ_STR(ev.kv.value, "2");
    CHECK_EQ_INT(ev.kv.mod_revision, r2);
    CHECK_EQ_INT(ev.kv.version, 2);
    CHECK(ev.has_prev);
    CHECK_EQ_STR(ev.prev_kv.value, "1");
    fw_etcd_event_clear(&ev);
    REQUIRE(fw_etcd_watch_next(w, 2000, &ev) == 1);
    CHECK_EQ_STR(ev.kv.key, "/w/b");
    CHECK_EQ_INT(ev.kv.mod_revision, r3);
    fw_etcd_event_clear(&ev);
    REQUIRE(fw_etcd_watch_next(w, 2000, &ev) == 1);
    CHECK_EQ_INT(ev.type, FW_ETCD_EV_DELETE);
    CHECK_EQ_STR(ev.kv.key, "/w/a");
    CHECK_EQ_INT(ev.kv.mod_revision, r4);
    CHECK(ev.has_prev);
    CHECK_EQ_STR(ev.prev_kv.value, "2");
    fw_etcd_event_clear(&ev);
    for (int i = 0; i < 2; i++) { /* both puts of the txn, one revision */
        REQUIRE(fw_etcd_watch_next(w, 2000, &ev) == 1);
        CHECK_EQ_STR(ev.kv.key, i == 0 ? "/w/c" : "/w/d");
        CHECK_EQ_INT(ev.kv.mod_revision, r5);
        fw_etcd_event_clear(&ev);
    }
    CHECK_EQ_INT(fw_etcd_watch_next(w, 100, &ev), 0);
    CHECK(!s_readable(fd, 0)); /* drained: the fd is quiet again */
    CHECK_EQ_INT(fw_etcd_watch_revision(w), r5 + 1);
    CHECK_EQ_INT(fw_etcd_watch_reconnects(w), 0);
    fw_etcd_watch_destroy(&w);
    CHECK(w == NULL);

    /* Filters and a single-key watch from a past revision (replay). */
    fw_etcd_watch_opts fo = {.start_revision = r1, .no_put = true};
    w = fw_etcd_watch_new(C, "/w/a", &fo);
    REQUIRE(w != NULL);
    REQUIRE(fw_etcd_watch_next(w, 2000, &ev) == 1);
    CHECK_EQ_INT(ev.type, FW_ETCD_EV_DELETE);
    CHECK_EQ_INT(ev.kv.mod_revision, r4);
    CHECK(!ev.has_prev);
    fw_etcd_event_clear(&ev);
    CHECK_EQ_INT(fw_etcd_watch_next(w, 100, &ev), 0);
    fw_etcd_watch_destroy(&w);
}

static void s_backpressure(void) {
    /* A queue of 4 and 300 changes: the stream thread waits for the
     * consumer, and nothing is lost or reordered. */
    fw_etcd_watch_opts o = {.prefix = true, .queue_max = 4};
    fw_etcd_watch *w = fw_etcd_watch_new(C, "/bp/", &o);
    REQUIRE(w != NULL);
    for (int b = 0; b < 3; b++) {
        fw_etcd_txn *t = fw_etcd_txn_new();
        for (int i = 0; i < 100; i++) {
            char k[32];
            snprintf(k, sizeof k, "/bp/%03d", b * 100 + i);
            fw_etcd_txn_put(t, FW_ETCD_SUCCESS, k, "v", 1, 0, false);
        }
        CHECK_EQ_INT(fw_etcd_txn_commit(C, t, NULL), 0);
        fw_etcd_txn_destroy(&t);
    }
    fw_sleep_ms(200);
    int n = 0;
    bool ordered = true;
    fw_etcd_event ev;
    while (fw_etcd_watch_next(w, 2000, &ev) == 1) {
        char k[32];
        snprintf(k, sizeof k, "/bp/%03d", n);
        if (strcmp(ev.kv.key, k) != 0) ordered = false;
        n++;
        fw_etcd_event_clear(&ev);
        if (n == 300) break;
    }
    CHECK_EQ_INT(n, 300);
    CHECK(ordered);
    /* Destroy while the thread may be blocked on a full queue. */
    for (int i = 0; i < 20; i++) {
        char k[32];
        snprintf(k, sizeof k, "/bp/x%02d", i);
        fw_etcd_put(C, k, "v", 1, 0, NULL, NULL);
    }
    fw_sleep_ms(100);
    int64_t t0 = fw_mono_ms();
    fw_etcd_watch_destroy(&w);
    CHECK(fw_mono_ms() - t0 < 1000);
}

typedef struct {
    int n;
    int64_t rev;
} s_state;

static void s_compacted_then_list_watch(void) {
    int64_t first = 0, last = 0;
    s_put("/lw/a", "1", &first);
    s_put("/lw/b", "1", NULL);
    s_put("/lw/a", "2", NULL);
    REQUIRE(fw_etcd_delete(C, "/lw/b", false, NULL, NULL) == 0);
    s_put("/lw/c", "1", &last);
    REQUIRE(fw_etcd_compact(C, last, true) == 0);

    /* A consumer that resumes from before the compaction must re-list. */
    fw_etcd_watch_opts o = {.prefix = true, .start_revision = first};
    fw_etcd_watch *w = fw_etcd_watch_new(C, "/lw/", &o);
    REQUIRE(w != NULL);
    fw_etcd_event ev;
    int rc = fw_etcd_watch_next(w, 3000, &ev);
    CHECK_EQ_INT(rc, FW_ECOMPACTED);
    CHECK_EQ_INT(ev.compact_revision, last);
    CHECK(strstr(fw_err_detail(), "re-list") != NULL);
    CHECK_EQ_INT(fw_etcd_watch_next(w, 0, &ev), FW_ECLOSED);
    CHECK(!s_readable(fw_etcd_watch_fd(w), 0));
    fw_etcd_watch_destroy(&w);

    /* list+watch: the state at R, then every change after R exactly once. */
    fw_etcd_kvs *list = NULL;
    REQUIRE(fw_etcd_list_watch(C, "/lw/", NULL, &list, &w) == 0);
    CHECK_EQ_INT(list->n, 2);
    CHECK_EQ_STR(list->kvs[0].key, "/lw/a");
    CHECK_EQ_STR(list->kvs[0].value, "2");
    CHECK_EQ_STR(list->kvs[1].key, "/lw/c");
    CHECK(list->revision >= last);
    int64_t r = 0;
    s_put("/lw/d", "1", &r);
    REQUIRE(fw_etcd_watch_next(w, 2000, &ev) == 1);
    CHECK_EQ_STR(ev.kv.key, "/lw/d");
    CHECK_EQ_INT(ev.kv.mod_revision, r);
    fw_etcd_event_clear(&ev);
    CHECK_EQ_INT(fw_etcd_watch_next(w, 100, &ev), 0);
    fw_etcd_kvs_free(&list);
    fw_etcd_watch_destroy(&w);

    /* list+watch over more than one page (1000 keys a page). */
    for (int b = 0; b < 11; b++) {
        fw_etcd_txn *t = fw_etcd_txn_new();
        for (int i = 0; i < 100; i++) {
            char k[32];
            snprintf(k, sizeof k, "/lw2/%05d", b * 100 + i);
            fw_etcd_txn_put(t, FW_ETCD_SUCCESS, k, "v", 1, 0, false);
        }
        CHECK_EQ_INT(fw_etcd_txn_commit(C, t, NULL), 0);
        fw_etcd_txn_destroy(&t);
    }
    REQUIRE(fw_etcd_list_watch(C, "/lw2/", NULL, &list, &w) == 0);
    CHECK_EQ_INT(list->n, 1100);
    CHECK_EQ_STR(list->kvs[1099].key, "/lw2/01099");
    CHECK_EQ_INT(fw_etcd_watch_next(w, 100, &ev), 0);
    fw_etcd_kvs_free(&list);
    fw_etcd_watch_destroy(&w);
}

static void s_resume_after_restart(void) {
    /* A queue of 2 and 10 separate puts: the stream thread is blocked with
     * events still unread in its connection when the member is SIGKILLed,
     * so those events exist only in etcd's history. After the restart the
     * watch must resume from the last delivered revision + 1: every event
     * exactly once, in order, and the ones written after the restart too. */
    fw_etcd_watch_opts o = {.prefix = true, .queue_max = 2};
    fw_etcd_watch *w = fw_etcd_watch_new(C, "/rs/", &o);
    REQUIRE(w != NULL);
    char k[32];
    int64_t revs[20];
    for (int i = 0; i < 10; i++) {
        snprintf(k, sizeof k, "/rs/%02d", i);
        s_put(k, "v", &revs[i]);
    }
    fw_etcd_event ev;
    REQUIRE(fw_etcd_watch_next(w, 2000, &ev) == 1);
    CHECK_EQ_STR(ev.kv.key, "/rs/00");
    fw_etcd_event_clear(&ev);
    fw_sleep_ms(100);
    REQUIRE(fw_etcd_harness_kill(H, 0) == 0);
    fw_sleep_ms(200);
    REQUIRE(fw_etcd_harness_restart(H, 0) == 0);
    for (int i = 10; i < 20; i++) {
        snprintf(k, sizeof k, "/rs/%02d", i);
        int rc = FW_EUNAVAIL;
        for (int tries = 0; tries < 20 && rc != 0; tries++) { /* just restarted */
            rc = fw_etcd_put(C, k, "v", 1, 0, &revs[i], NULL);
            if (rc != 0) fw_sleep_ms(100);
        }
        CHECKF(rc == 0, "put %s: %s", k, fw_err_detail());
    }
    int seen = 1;
    bool ordered = true;
    for (; seen < 20; seen++) {
        int rc = fw_etcd_watch_next(w, 5000, &ev);
        if (rc != 1) {
            CHECKF(rc == 1, "event %d: rc %d %s", seen, rc, fw_err_detail());
            break;
        }
        snprintf(k, sizeof k, "/rs/%02d", seen);
        if (strcmp(ev.kv.key, k) != 0 || ev.kv.mod_revision != revs[seen]) ordered = false;
        fw_etcd_event_clear(&ev);
    }
    CHECK_EQ_INT(seen, 20);
    CHECK(ordered);
    CHECK_EQ_INT(fw_etcd_watch_next(w, 300, &ev), 0); /* nothing repeated */
    CHECK(fw_etcd_watch_reconnects(w) >= 1);
    CHECK_EQ_INT(fw_etcd_watch_revision(w), revs[19] + 1);
    fw_etcd_watch_destroy(&w);
}

int main(void) {
    H = fw_etcd_harness_new(1);
    CHECK(H != NULL);
    if (!H) return fw_test_summary();
    C = fw_etcd_harness_client(H, 5000);
    CHECK(C != NULL);
    if (!C) return fw_test_summary();
    RUN(s_order);
    RUN(s_backpressure);
    RUN(s_compacted_then_list_watch);
    RUN(s_resume_after_restart);
    fw_etcd_destroy(&C);
    fw_etcd_harness_destroy(&H);
    return fw_test_summary();
}
