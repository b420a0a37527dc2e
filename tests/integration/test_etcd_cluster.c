/* test_etcd_cluster - the etcd client against a real 3-member cluster with
 * members SIGKILLed under it: requests fail over to the survivors, a watch
 * resumes on another member with no event lost or repeated, and a watch
 * whose member comes back after a compaction reports FW_ECOMPACTED, from
 * which list+watch recovers. */
#include "etcd_harness.h"
#include "fw_err.h"
#include "fw_etcd.h"
#include "fw_test.h"
#include "fw_time.h"

#include <stdlib.h>
#include <string.h>

static fw_etcd_harness *H;

static fw_etcd *s_client(const char *eps, int timeout_ms) {
    fw_etcd_opts o = {.endpoints = eps, .timeout_ms = timeout_ms};
    return fw_etcd_new(&o);
}

/* Create key once, whatever the failover does: a create-if-absent txn may
 * be repeated safely after an "outcome unknown". */
static int s_create(fw_etcd *c, const char *key) {
    int rc = FW_EUNAVAIL;
    for (int tries = 0; tries < 20; tries++) {
        fw_etcd_txn *t = fw_etcd_txn_new();
        fw_etcd_txn_compare(t, key, FW_ETCD_CMP_CREATE, FW_ETCD_CMP_EQUAL, 0);
        fw_etcd_txn_put(t, FW_ETCD_SUCCESS, key, key, strlen(key), 0, false);
        rc = fw_etcd_txn_commit(c, t, NULL);
        fw_etcd_txn_destroy(&t);
        if (rc == 0 || rc == FW_ECONFLICT) return 0;
        fw_sleep_ms(50);
    }
    fprintf(stderr, "create %s: %s\n", key, fw_err_detail());
    return rc;
}

/* The client's first endpoint is member `victim`, then the others. */
static fw_etcd *s_client_on(int victim, int timeout_ms) {
    char eps[256] = "";
    size_t n = 0;
    n += (size_t)snprintf(eps + n, sizeof eps - n, "%s", fw_etcd_harness_endpoint(H, victim));
    for (int i = 0; i < 3; i++)
        if (i != victim)
            n += (size_t)snprintf(eps + n, sizeof eps - n, ",%s", fw_etcd_harness_endpoint(H, i));
    return s_client(eps, timeout_ms);
}

static void s_failover_follower(void) {
    int leader = fw_etcd_harness_leader(H);
    REQUIRE(leader >= 0);
    int victim = (leader + 1) % 3;
    fw_etcd *c = s_client_on(victim, 5000);
    REQUIRE(c != NULL);
    CHECK_EQ_INT(fw_etcd_endpoint_count(c), 3);
    CHECK_EQ_INT(fw_etcd_put(c, "/fo/a", "1", 1, 0, NULL, NULL), 0);
    CHECK_EQ_INT(fw_etcd_endpoint_index(c), 0);

    REQUIRE(fw_etcd_harness_kill(H, victim) == 0);
    int64_t t0 = fw_mono_ms();
    /* Plain put and range, no retry in the test: the client carries on. */
    int rc = fw_etcd_put(c, "/fo/b", "2", 1, 0, NULL, NULL);
    CHECKF(rc == 0, "put after kill: %s", fw_err_detail());
    fw_etcd_kvs *r = NULL;
    fw_etcd_range_opts po = {.prefix = true};
    rc = fw_etcd_range(c, "/fo/", &po, &r);
    CHECKF(rc == 0, "range after kill: %s", fw_err_detail());
    CHECK(r && r->n == 2);
    fw_etcd_kvs_free(&r);
    int64_t took = fw_mono_ms() - t0;
    CHECKF(took < 1000, "failover took %lld ms", (long long)took);
    CHECK(fw_etcd_endpoint_index(c) != 0); /* remembered the survivor */
    for (int i = 0; i < 20; i++) { /* and keeps working there */
        char k[32];
        snprintf(k, sizeof k, "/fo/x%d", i);
        CHECK_EQ_INT(fw_etcd_put(c, k, "v", 1, 0, NULL, NULL), 0);
    }
    fw_etcd_destroy(&c);
    CHECK_EQ_INT(fw_etcd_harness_restart(H, victim), 0);
}

static void s_failover_leader(void) {
    /* Killing the raft leader is harsher: a write in flight to it (or
     * forwarded to it by a follower) may or may not commit, so the client
     * reports the outcome as unknown instead of repeating it, and every
     * later call works once the survivors have elected a new leader. */
    int leader = fw_etcd_harness_leader(H);
    REQUIRE(leader >= 0);
    fw_etcd *c = s_client_on(leader, 2000);
    REQUIRE(c != NULL);
    CHECK_EQ_INT(fw_etcd_put(c, "/fl/a", "1", 1, 0, NULL, NULL), 0);
    REQUIRE(fw_etcd_harness_kill(H, leader) == 0);
    int64_t t0 = fw_mono_ms();
    int rc = fw_etcd_put(c, "/fl/b", "2", 1, 0, NULL, NULL);
    CHECKF(rc == 0 || rc == FW_ETIMEDOUT || rc == FW_EUNAVAIL, "first put: %d %s", rc,
           fw_err_detail());
    if (rc != 0) CHECK(strstr(fw_err_detail(), "outcome unknown") != NULL);
    /* From here on, no errors. */
    int fails = 0;
    for (int i = 0; i < 10; i++) {
        char k[32];
        snprintf(k, sizeof k, "/fl/x%d", i);
        if (fw_etcd_put(c, k, "v", 1, 0, NULL, NULL) != 0) {
            fprintf(stderr, "put %s: %s\n", k, fw_err_detail());
            fails++;
        }
    }
    fw_etcd_kvs *r = NULL;
    fw_etcd_range_opts po = {.prefix = true, .count_only = true};
    CHECK_EQ_INT(fw_etcd_range(c, "/fl/", &po, &r), 0);
    CHECK(r && r->count >= 11);
    fw_etcd_kvs_free(&r);
    CHECK_EQ_INT(fails, 0);
    fprintf(stderr, "leader failover: first put rc=%d, all done after %lld ms\n", rc,
            (long long)(fw_mono_ms() - t0));
    fw_etcd_destroy(&c);
    CHECK_EQ_INT(fw_etcd_harness_restart(H, leader), 0);
}

static void s_watch_resume(void) {
    /* The watcher starts on member 0; the writer never talks to it. */
    fw_etcd *wc = s_client(fw_etcd_harness_endpoints(H), 5000);
    char eps12[160];
    snprintf(eps12, sizeof eps12, "%s,%s", fw_etcd_harness_endpoint(H, 1),
             fw_etcd_harness_endpoint(H, 2));
    fw_etcd *writer = s_client(eps12, 5000);
    REQUIRE(wc && writer);
    fw_etcd_watch_opts o = {.prefix = true};
    fw_etcd_watch *w = fw_etcd_watch_new(wc, "/wr/", &o);
    REQUIRE(w != NULL);
    enum { N = 200 };
    char k[32];
    for (int i = 0; i < N / 2; i++) {
        snprintf(k, sizeof k, "/wr/%04d", i);
        CHECK_EQ_INT(s_create(writer, k), 0);
    }
    /* Consume some, leave the rest in flight, then kill the watch's member. */
    fw_etcd_event ev;
    int seen = 0;
    bool ok = true;
    for (; seen < 30; seen++) {
        if (fw_etcd_watch_next(w, 3000, &ev) != 1) break;
        snprintf(k, sizeof k, "/wr/%04d", seen);
        ok &= strcmp(ev.kv.key, k) == 0;
        fw_etcd_event_clear(&ev);
    }
    CHECK_EQ_INT(seen, 30);
    REQUIRE(fw_etcd_harness_kill(H, 0) == 0);
    for (int i = N / 2; i < N; i++) {
        snprintf(k, sizeof k, "/wr/%04d", i);
        CHECK_EQ_INT(s_create(writer, k), 0);
    }
    int dups = 0;
    for (;;) {
        int rc = fw_etcd_watch_next(w, 3000, &ev);
        if (rc != 1) {
            CHECKF(rc == 0, "watch_next: %d %s", rc, fw_err_detail());
            break;
        }
        snprintf(k, sizeof k, "/wr/%04d", seen);
        if (strcmp(ev.kv.key, k) != 0) {
            ok = false;
            if (seen > 0 && strcmp(ev.kv.key, k) < 0) dups++;
        }
        seen++;
        fw_etcd_event_clear(&ev);
        if (seen == N) break;
    }
    CHECK_EQ_INT(seen, N);
    CHECK(ok);
    CHECK_EQ_INT(dups, 0);
    CHECK_EQ_INT(fw_etcd_watch_next(w, 300, &ev), 0); /* nothing extra */
    CHECK(fw_etcd_watch_reconnects(w) >= 1);
    fw_etcd_watch_destroy(&w);
    fw_etcd_destroy(&writer);
    fw_etcd_destroy(&wc);
    CHECK_EQ_INT(fw_etcd_harness_restart(H, 0), 0);
}

static void s_compaction_during_watch(void) {
    /* A watcher that can only reach member 0, so it must wait for it. */
    fw_etcd *wc = s_client(fw_etcd_harness_endpoint(H, 0), 5000);
    char eps12[160];
    snprintf(eps12, sizeof eps12, "%s,%s", fw_etcd_harness_endpoint(H, 1),
             fw_etcd_harness_endpoint(H, 2));
    fw_etcd *writer = s_client(eps12, 5000);
    REQUIRE(wc && writer);
    CHECK_EQ_INT(s_create(writer, "/cw/a"), 0);
    fw_etcd_kvs *list = NULL;
    fw_etcd_watch *w = NULL;
    REQUIRE(fw_etcd_list_watch(wc, "/cw/", NULL, &list, &w) == 0);
    CHECK_EQ_INT(list->n, 1);
    fw_etcd_kvs_free(&list);

    REQUIRE(fw_etcd_harness_kill(H, 0) == 0);
    CHECK_EQ_INT(s_create(writer, "/cw/b"), 0);
    CHECK_EQ_INT(s_create(writer, "/cw/c"), 0);
    int64_t rev = 0;
    CHECK_EQ_INT(fw_etcd_put(writer, "/cw/a", "2", 1, 0, &rev, NULL), 0);
    CHECK_EQ_INT(fw_etcd_compact(writer, rev, true), 0);
    CHECK_EQ_INT(fw_etcd_harness_restart(H, 0), 0);

    fw_etcd_event ev;
    int rc = fw_etcd_watch_next(w, 5000, &ev);
    CHECKF(rc == FW_ECOMPACTED, "rc %d: %s", rc, fw_err_detail());
    CHECK_EQ_INT(ev.compact_revision, rev);
    fw_etcd_watch_destroy(&w);

    /* Recover the way every consumer does: list + watch again. */
    REQUIRE(fw_etcd_list_watch(wc, "/cw/", NULL, &list, &w) == 0);
    CHECK_EQ_INT(list->n, 3);
    CHECK_EQ_STR(list->kvs[0].value, "2");
    CHECK(list->revision >= rev);
    CHECK_EQ_INT(fw_etcd_put(writer, "/cw/d", "1", 1, 0, NULL, NULL), 0);
    REQUIRE(fw_etcd_watch_next(w, 3000, &ev) == 1);
    CHECK_EQ_STR(ev.kv.key, "/cw/d");
    fw_etcd_event_clear(&ev);
    fw_etcd_kvs_free(&list);
    fw_etcd_watch_destroy(&w);
    fw_etcd_destroy(&writer);
    fw_etcd_destroy(&wc);
}

int main(void) {
    int64_t t0 = fw_mono_ms();
    H = fw_etcd_harness_new(3);
    CHECK(H != NULL);
    if (!H) return fw_test_summary();
    fprintf(stderr, "3-member cluster up in %lld ms\n", (long long)(fw_mono_ms() - t0));
    RUN(s_failover_follower);
    RUN(s_failover_leader);
    RUN(s_watch_resume);
    RUN(s_compaction_during_watch);
    fw_etcd_harness_destroy(&H);
    return fw_test_summary();
}
