/* test_etcd_fault - every etcd request of a multi-step operation made to
 * fail in turn (fault point "etcd.request", SQLite style: fail the N-th
 * call, N = 1, 2, 3 ... until a run completes without the fault firing),
 * against a real single-member etcd. Each run must end in a clean
 * FW_EUNAVAIL naming the injected fault, no output handed out on failure,
 * and the store left in a state the operation allows: never a half-applied
 * step. The etcd client sources and fw_fault.c are compiled into this test
 * with FW_FAULT_INJECTION=1 (tests/etcd.cmake), so it runs in every build. */
#include "etcd_harness.h"
#include "fw_err.h"
#include "fw_etcd.h"
#include "fw_fault.h"
#include "fw_test.h"

#include <stdlib.h>
#include <string.h>

static fw_etcd_harness *H;
static fw_etcd *C;

/* A leader's whole life: lease, campaign, a fenced write of two keys,
 * resign, revoke. Returns 0 or the first error. */
static int s_leader_life(int64_t *lease_out) {
    int64_t lease = 0;
    int rc = fw_etcd_lease_grant(C, 30, 0, &lease, NULL);
    if (rc < 0) return rc;
    *lease_out = lease;
    fw_etcd_election *e = NULL;
    rc = fw_etcd_campaign(C, "/f/el", "me", 2, lease, 2000, &e);
    if (rc < 0) {
        CHECKF(e == NULL || rc == FW_ETIMEDOUT, "campaign failed (%d) but left an election", rc);
        fw_etcd_election_destroy(&e);
        return rc;
    }
    fw_etcd_txn *t = fw_etcd_election_txn(e);
    fw_etcd_txn_put(t, FW_ETCD_SUCCESS, "/f/state/a", "1", 1, 0, false);
    fw_etcd_txn_put(t, FW_ETCD_SUCCESS, "/f/state/b", "1", 1, 0, false);
    fw_etcd_txn_result *r = NULL;
    rc = fw_etcd_txn_commit(C, t, &r);
    fw_etcd_txn_destroy(&t);
    if (rc < 0) CHECK(r == NULL); /* nothing handed out when the txn did not run */
    fw_etcd_txn_result_free(&r);
    if (rc == 0) rc = fw_etcd_resign(e);
    fw_etcd_election_destroy(&e);
    if (rc == 0) rc = fw_etcd_lease_revoke(C, lease);
    return rc;
}

static int64_t s_count(const char *prefix) {
    fw_etcd_kvs *r = NULL;
    fw_etcd_range_opts co = {.prefix = true, .count_only = true};
    if (fw_etcd_range(C, prefix, &co, &r) < 0) return -1;
    int64_t n = r->count;
    fw_etcd_kvs_free(&r);
    return n;
}

static void s_leader_faults(void) {
    int runs = 0;
    for (int n = 1; n < 50; n++) {
        fw_fault_reset();
        fw_fault_arm("etcd.request", n);
        int64_t lease = 0;
        int rc = s_leader_life(&lease);
        int fired = fw_fault_fired();
        fw_fault_reset();
        runs++;
        if (!fired) {
            CHECKF(rc == 0, "clean run: %s", fw_err_detail());
            break;
        }
        CHECKF(rc == FW_EUNAVAIL, "n=%d: rc %d (%s)", n, rc, fw_err_detail());
        CHECKF(strstr(fw_err_detail(), "injected") != NULL, "n=%d: detail %s", n, fw_err_detail());
        /* Both state keys or neither: the txn is atomic whichever step failed. */
        int64_t st = s_count("/f/state/");
        CHECKF(st == 0 || st == 2, "n=%d: %lld state keys", n, (long long)st);
        /* Clean up with faults off; the revoke takes any election key along. */
        if (lease) fw_etcd_lease_revoke(C, lease);
        fw_etcd_delete(C, "/f/", true, NULL, NULL);
        CHECK_EQ_INT(s_count("/f/"), 0);
    }
    /* grant, campaign start, campaign check, txn, resign, revoke: 6 calls,
     * so 6 failing runs and a 7th that succeeds. */
    CHECK_EQ_INT(runs, 7);
    CHECK_EQ_INT(s_count("/f/el/"), 0);
}

static void s_list_watch_faults(void) {
    /* 2500 keys: list+watch takes 3 range pages; failing any of them (or the
     * watch's creation, which does not go through etcd.request) must hand
     * out neither the list nor a watch (both are set to NULL). */
    for (int b = 0; b < 25; b++) {
        fw_etcd_txn *t = fw_etcd_txn_new();
        for (int i = 0; i < 100; i++) {
            char k[32];
            snprintf(k, sizeof k, "/lf/%05d", b * 100 + i);
            fw_etcd_txn_put(t, FW_ETCD_SUCCESS, k, "v", 1, 0, false);
        }
        REQUIRE(fw_etcd_txn_commit(C, t, NULL) == 0);
        fw_etcd_txn_destroy(&t);
    }
    int runs = 0;
    for (int n = 1; n < 20; n++) {
        fw_fault_reset();
        fw_fault_arm("etcd.request", n);
        fw_etcd_kvs *list = (fw_etcd_kvs *)1;
        fw_etcd_watch *w = (fw_etcd_watch *)1;
        int rc = fw_etcd_list_watch(C, "/lf/", NULL, &list, &w);
        int fired = fw_fault_fired();
        fw_fault_reset();
        runs++;
        if (!fired) {
            REQUIRE(rc == 0);
            CHECK_EQ_INT(list->n, 2500);
            fw_etcd_kvs_free(&list);
            fw_etcd_watch_destroy(&w);
            break;
        }
        CHECK_EQ_INT(rc, FW_EUNAVAIL);
        CHECKF(list == NULL && w == NULL, "n=%d: an output handed out on failure", n);
    }
    CHECK_EQ_INT(runs, 4);
}

int main(void) {
    H = fw_etcd_harness_new(1);
    CHECK(H != NULL);
    if (!H) return fw_test_summary();
    C = fw_etcd_harness_client(H, 5000);
    CHECK(C != NULL);
    if (!C) return fw_test_summary();
    RUN(s_leader_faults);
    RUN(s_list_watch_faults);
    fw_etcd_destroy(&C);
    fw_etcd_harness_destroy(&H);
    return fw_test_summary();
}
