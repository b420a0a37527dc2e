/* test_etcd_election - leader election (lease + txn recipe) against a real
 * single-member etcd: campaign, leader, proclaim, resign; a waiting
 * candidate wakes only when the candidate just ahead of it goes; the epoch
 * only grows and fences every txn of a deposed leader (FW_EFENCED); a leader
 * whose lease expires loses its key and the next candidate takes over;
 * keepalives keep leadership past the TTL. */
#include "etcd_harness.h"
#include "fw_err.h"
#include "fw_etcd.h"
#include "fw_test.h"
#include "fw_time.h"

#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static fw_etcd_harness *H;
static fw_etcd *C;

static bool s_readable(int fd, int ms) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return fd >= 0 && poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

static int64_t s_lease(int64_t ttl) {
    int64_t id = 0;
    CHECKF(fw_etcd_lease_grant(C, ttl, 0, &id, NULL) == 0, "grant: %s", fw_err_detail());
    return id;
}

/* The value of the current leader under prefix ("" when none). */
static void s_leader_value(const char *prefix, char *out, size_t size, int64_t *rev) {
    fw_etcd_kv *kv = NULL;
    out[0] = '\0';
    if (rev) *rev = 0;
    if (fw_etcd_leader(C, prefix, &kv) == 0) {
        snprintf(out, size, "%s", kv->value);
        if (rev) *rev = kv->create_revision;
    }
    fw_etcd_kv_free(&kv);
}

static void s_queue(void) {
    char v[64];
    fw_etcd_kv *kv = NULL;
    CHECK_EQ_INT(fw_etcd_leader(C, "/el/q", &kv), FW_ENOTFOUND);
    CHECK(kv == NULL);

    int64_t l1 = s_lease(30), l2 = s_lease(30), l3 = s_lease(30);
    fw_etcd_election *e1 = NULL, *e2 = NULL, *e3 = NULL;
    REQUIRE(fw_etcd_campaign(C, "/el/q", "c1", 2, l1, 2000, &e1) == 0);
    CHECK(fw_etcd_election_is_leader(e1));
    int64_t ep1 = fw_etcd_election_epoch(e1);
    CHECK(ep1 > 0);
    char want[64];
    snprintf(want, sizeof want, "/el/q/%llx", (unsigned long long)l1);
    CHECK_EQ_STR(fw_etcd_election_key(e1), want);
    CHECK_EQ_INT(fw_etcd_election_fd(e1), -1); /* a leader waits for nothing */
    int64_t lrev = 0;
    s_leader_value("/el/q", v, sizeof v, &lrev);
    CHECK_EQ_STR(v, "c1");
    CHECK_EQ_INT(lrev, ep1); /* fw_etcd_leader reports the epoch */

    /* Two more candidates queue up behind; neither leads. */
    REQUIRE(fw_etcd_campaign_start(C, "/el/q/", "c2", 2, l2, &e2) == 0); /* trailing '/' ok */
    REQUIRE(fw_etcd_campaign_start(C, "/el/q", "c3", 2, l3, &e3) == 0);
    CHECK_EQ_INT(fw_etcd_campaign_wait(e2, 0), FW_ETIMEDOUT);
    CHECK_EQ_INT(fw_etcd_campaign_wait(e3, 0), FW_ETIMEDOUT);
    CHECK(!fw_etcd_election_is_leader(e2));
    CHECK_EQ_INT(fw_etcd_election_epoch(e2), 0);
    CHECK(fw_etcd_election_txn(e2) == NULL);
    CHECK_EQ_INT(fw_etcd_election_proclaim(e2, "x", 1), FW_ENOTLEADER);
    int fd2 = fw_etcd_election_fd(e2), fd3 = fw_etcd_election_fd(e3);
    CHECK(fd2 >= 0 && fd3 >= 0);
    CHECK(!s_readable(fd2, 0));
    CHECK(!s_readable(fd3, 0));

    /* A campaign again with the same lease reuses the key and its
     * create_revision (the put only updates the value). */
    fw_etcd_election *again = NULL;
    REQUIRE(fw_etcd_campaign(C, "/el/q", "c1'", 3, l1, 1000, &again) == 0);
    CHECK_EQ_INT(fw_etcd_election_epoch(again), ep1);
    fw_etcd_election_destroy(&again);

    /* The leader proclaims, and fences its writes on its epoch. */
    CHECK_EQ_INT(fw_etcd_election_proclaim(e1, "c1 v2", 5), 0);
    s_leader_value("/el/q", v, sizeof v, NULL);
    CHECK_EQ_STR(v, "c1 v2");
    fw_etcd_txn *t = fw_etcd_election_txn(e1);
    REQUIRE(t != NULL);
    fw_etcd_txn_put(t, FW_ETCD_SUCCESS, "/el/state", "by c1", 5, 0, false);
    CHECK_EQ_INT(fw_etcd_txn_commit(C, t, NULL), 0);
    /* A plain failed compare inside a guarded txn is a conflict, not a fence. */
    fw_etcd_txn *tc = fw_etcd_election_txn(e1);
    fw_etcd_txn_compare(tc, "/el/state", FW_ETCD_CMP_VERSION, FW_ETCD_CMP_EQUAL, 99);
    fw_etcd_txn_put(tc, FW_ETCD_SUCCESS, "/el/state", "no", 2, 0, false);
    fw_etcd_txn_result *r = NULL;
    CHECK_EQ_INT(fw_etcd_txn_commit(C, tc, &r), FW_ECONFLICT);
    CHECK(r && !r->fenced && !r->succeeded && r->n_ops == 0); /* hidden read removed */
    fw_etcd_txn_result_free(&r);
    fw_etcd_txn_destroy(&tc);

    /* Resign: only the candidate just behind (e2) is woken, and it leads
     * with a higher epoch; e3 still waits, now on e2. */
    CHECK_EQ_INT(fw_etcd_resign(e1), 0);
    CHECK(!fw_etcd_election_is_leader(e1));
    CHECK(s_readable(fd2, 3000));
    CHECK(!s_readable(fd3, 200));
    CHECK_EQ_INT(fw_etcd_campaign_wait(e2, 0), 0);
    CHECK(fw_etcd_election_is_leader(e2));
    int64_t ep2 = fw_etcd_election_epoch(e2);
    CHECK(ep2 > ep1);
    s_leader_value("/el/q", v, sizeof v, NULL);
    CHECK_EQ_STR(v, "c2");
    CHECK_EQ_INT(fw_etcd_campaign_wait(e3, 0), FW_ETIMEDOUT);

    /* The old leader's txn, committed late, is fenced and writes nothing. */
    CHECK_EQ_INT(fw_etcd_txn_commit(C, t, &r), FW_EFENCED);
    CHECK(r && r->fenced && !r->succeeded);
    CHECK(strstr(fw_err_detail(), "leadership moved") != NULL);
    fw_etcd_txn_result_free(&r);
    fw_etcd_txn_destroy(&t);
    fw_etcd_get(C, "/el/state", &kv);
    CHECK(kv && kv->version == 1);
    fw_etcd_kv_free(&kv);
    CHECK_EQ_INT(fw_etcd_election_proclaim(e1, "zombie", 6), FW_ENOTLEADER);
    CHECK_EQ_INT(fw_etcd_resign(e1), 0); /* already gone: still 0 */

    /* e2's lease is revoked (as if it expired): its key goes, e3 leads,
     * and e2 learns on its next fenced write. */
    CHECK_EQ_INT(fw_etcd_lease_revoke(C, l2), 0);
    CHECK(s_readable(fd3, 3000));
    CHECK_EQ_INT(fw_etcd_campaign_wait(e3, 1000), 0);
    CHECK(fw_etcd_election_epoch(e3) > ep2);
    CHECK_EQ_INT(fw_etcd_election_proclaim(e2, "late", 4), FW_EFENCED);
    CHECK(!fw_etcd_election_is_leader(e2));
    CHECK_EQ_INT(fw_etcd_campaign_wait(e2, 0), FW_ELEASE);
    CHECK(strstr(fw_err_detail(), "campaign again") != NULL);

    CHECK_EQ_INT(fw_etcd_resign(e3), 0);
    CHECK_EQ_INT(fw_etcd_leader(C, "/el/q", &kv), FW_ENOTFOUND);
    fw_etcd_election_destroy(&e1);
    fw_etcd_election_destroy(&e2);
    fw_etcd_election_destroy(&e3);
    fw_etcd_election_destroy(&e3); /* idempotent */
    CHECK(e3 == NULL);
    fw_etcd_lease_revoke(C, l1);
    fw_etcd_lease_revoke(C, l3);
}

typedef struct {
    fw_etcd_election *e;
    int delay_ms;
} s_resign_arg;

static void *s_resign_later(void *p) {
    s_resign_arg *a = p;
    fw_sleep_ms(a->delay_ms);
    fw_etcd_resign(a->e);
    return NULL;
}

static void s_blocking_wait(void) {
    /* campaign() blocks until the leader (resigning from another thread,
     * sharing the client) is gone; a short timeout gives FW_ETIMEDOUT but
     * leaves *out set so the caller can keep waiting. */
    int64_t l1 = s_lease(30), l2 = s_lease(30);
    fw_etcd_election *e1 = NULL, *e2 = NULL;
    REQUIRE(fw_etcd_campaign(C, "/el/b", "1", 1, l1, 2000, &e1) == 0);
    CHECK_EQ_INT(fw_etcd_campaign(C, "/el/b", "2", 1, l2, 100, &e2), FW_ETIMEDOUT);
    REQUIRE(e2 != NULL);
    s_resign_arg a = {.e = e1, .delay_ms = 300};
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, s_resign_later, &a) == 0);
    int64_t t0 = fw_mono_ms();
    CHECK_EQ_INT(fw_etcd_campaign_wait(e2, 5000), 0);
    int64_t took = fw_mono_ms() - t0;
    CHECKF(took >= 250 && took < 3000, "became leader after %lld ms", (long long)took);
    pthread_join(th, NULL);
    CHECK(fw_etcd_election_is_leader(e2));
    fw_etcd_election_destroy(&e1);
    fw_etcd_election_destroy(&e2);
    fw_etcd_lease_revoke(C, l1);
    fw_etcd_lease_revoke(C, l2);
}

static void s_lease_expiry(void) {
    /* A leader on a 2 s lease that nobody keeps alive: its key expires with
     * the lease and the waiting candidate leads within about the TTL. A
     * second leader on a 2 s lease kept alive every 500 ms stays leader
     * well past the TTL. */
    int64_t short_l = s_lease(2), long_l = s_lease(30);
    fw_etcd_election *e1 = NULL, *e2 = NULL;
    REQUIRE(fw_etcd_campaign(C, "/el/x", "dies", 4, short_l, 2000, &e1) == 0);
    int64_t ep1 = fw_etcd_election_epoch(e1);
    REQUIRE(fw_etcd_campaign_start(C, "/el/x", "next", 4, long_l, &e2) == 0);
    int64_t t0 = fw_mono_ms();
    CHECK_EQ_INT(fw_etcd_campaign_wait(e2, 8000), 0);
    int64_t took = fw_mono_ms() - t0;
    CHECKF(took >= 1000 && took < 6000, "took over after %lld ms", (long long)took);
    CHECK(fw_etcd_election_epoch(e2) > ep1);
    CHECK_EQ_INT(fw_etcd_lease_keepalive(C, short_l, NULL), FW_ELEASE);
    CHECK_EQ_INT(fw_etcd_election_proclaim(e1, "x", 1), FW_EFENCED);
    CHECK_EQ_INT(fw_etcd_resign(e2), 0);
    fw_etcd_election_destroy(&e1);
    fw_etcd_election_destroy(&e2);

    int64_t kept = s_lease(2);
    REQUIRE(fw_etcd_campaign(C, "/el/k", "kept", 4, kept, 2000, &e1) == 0);
    t0 = fw_mono_ms();
    int64_t ttl = 0;
    while (fw_mono_ms() - t0 < 3000) {
        CHECK_EQ_INT(fw_etcd_lease_keepalive(C, kept, &ttl), 0);
        fw_sleep_ms(500);
    }
    CHECK_EQ_INT(ttl, 2);
    CHECK_EQ_INT(fw_etcd_election_proclaim(e1, "still", 5), 0);
    char v[32];
    s_leader_value("/el/k", v, sizeof v, NULL);
    CHECK_EQ_STR(v, "still");
    CHECK_EQ_INT(fw_etcd_resign(e1), 0);
    fw_etcd_election_destroy(&e1);
    fw_etcd_lease_revoke(C, kept);
    fw_etcd_lease_revoke(C, long_l);
}

int main(void) {
    H = fw_etcd_harness_new(1);
    CHECK(H != NULL);
    if (!H) return fw_test_summary();
    C = fw_etcd_harness_client(H, 5000);
    CHECK(C != NULL);
    if (!C) return fw_test_summary();
    RUN(s_queue);
    RUN(s_blocking_wait);
    RUN(s_lease_expiry);
    fw_etcd_destroy(&C);
    fw_etcd_harness_destroy(&H);
    return fw_test_summary();
}
