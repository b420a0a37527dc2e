/* test_etcd_kv - the etcd client against a real single-member etcd: range,
 * put, delete, paging, txn compare semantics, leases (64-bit ids, expiry),
 * compaction, the error mapping, the size limits as etcd itself enforces
 * them, and one client shared by several threads. */
#include "etcd_harness.h"
#include "fw_err.h"
#include "fw_etcd.h"
#include "fw_test.h"
#include "fw_time.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static fw_etcd_harness *H;
static fw_etcd *C;

static void s_put(const char *k, const char *v) {
    CHECKF(fw_etcd_put(C, k, v, strlen(v), 0, NULL, NULL) == 0, "put %s: %s", k, fw_err_detail());
}

static void s_put_get_range(void) {
    int64_t rev = 0, rev2 = 0;
    REQUIRE(fw_etcd_put(C, "/t/a", "1", 1, 0, &rev, NULL) == 0);
    CHECK(rev > 1);
    fw_etcd_kv *kv = NULL;
    REQUIRE(fw_etcd_get(C, "/t/a", &kv) == 0);
    CHECK_EQ_STR(kv->key, "/t/a");
    CHECK_EQ_INT(kv->key_len, 4);
    CHECK_EQ_STR(kv->value, "1");
    CHECK_EQ_INT(kv->create_revision, rev);
    CHECK_EQ_INT(kv->mod_revision, rev);
    CHECK_EQ_INT(kv->version, 1);
    CHECK_EQ_INT(kv->lease, 0);
    fw_etcd_kv_free(&kv);
    CHECK(kv == NULL);

    /* prev_kv on overwrite; NULL prev for a new key. */
    fw_etcd_kv *prev = NULL;
    REQUIRE(fw_etcd_put(C, "/t/a", "22", 2, 0, &rev2, &prev) == 0);
    CHECK(rev2 == rev + 1);
    REQUIRE(prev != NULL);
    CHECK_EQ_STR(prev->value, "1");
    CHECK_EQ_INT(prev->mod_revision, rev);
    fw_etcd_kv_free(&prev);
    REQUIRE(fw_etcd_put(C, "/t/b", "x", 1, 0, NULL, &prev) == 0);
    CHECK(prev == NULL);

    /* Missing key; empty value (etcd omits it in JSON); binary value. */
    CHECK_EQ_INT(fw_etcd_get(C, "/t/missing", &kv), FW_ENOTFOUND);
    CHECK(kv == NULL);
    REQUIRE(fw_etcd_put(C, "/t/empty", "", 0, 0, NULL, NULL) == 0);
    REQUIRE(fw_etcd_get(C, "/t/empty", &kv) == 0);
    CHECK_EQ_INT(kv->value_len, 0);
    CHECK_EQ_STR(kv->value, "");
    fw_etcd_kv_free(&kv);
    const char bin[] = {'a', 0, (char)0xff, '\n', 0, 'z'};
    REQUIRE(fw_etcd_put(C, "/t/bin", bin, sizeof bin, 0, NULL, NULL) == 0);
    REQUIRE(fw_etcd_get(C, "/t/bin", &kv) == 0);
    CHECK_EQ_INT(kv->value_len, sizeof bin);
    CHECK(memcmp(kv->value, bin, sizeof bin) == 0);
    fw_etcd_kv_free(&kv);

    /* Prefix, limit, keys_only, count_only, sort, at an old revision. */
    fw_etcd_kvs *r = NULL;
    fw_etcd_range_opts po = {.prefix = true};
    REQUIRE(fw_etcd_range(C, "/t/", &po, &r) == 0);
    CHECK_EQ_INT(r->n, 4);
    CHECK_EQ_INT(r->count, 4);
    CHECK(!r->more);
    CHECK_EQ_STR(r->kvs[0].key, "/t/a"); /* sorted by key */
    CHECK_EQ_STR(r->kvs[3].key, "/t/empty");
    fw_etcd_kvs_free(&r);
    fw_etcd_range_opts lo = {.prefix = true, .limit = 2, .keys_only = true};
    REQUIRE(fw_etcd_range(C, "/t/", &lo, &r) == 0);
    CHECK_EQ_INT(r->n, 2);
    CHECK_EQ_INT(r->count, 4);
    CHECK(r->more);
    CHECK_EQ_STR(r->kvs[0].value, ""); /* keys only */
    CHECK(r->kvs[0].create_revision > 0);
    fw_etcd_kvs_free(&r);
    fw_etcd_range_opts co = {.prefix = true, .count_only = true};
    REQUIRE(fw_etcd_range(C, "/t/", &co, &r) == 0);
    CHECK_EQ_INT(r->n, 0);
    CHECK_EQ_INT(r->count, 4);
    fw_etcd_kvs_free(&r);
    REQUIRE(fw_etcd_range(C, "/nothing/", &co, &r) == 0); /* count 0 omitted by etcd */
    CHECK_EQ_INT(r->count, 0);
    CHECK(r->revision > 0);
    fw_etcd_kvs_free(&r);
    fw_etcd_range_opts so = {.prefix = true, .sort_order = FW_ETCD_SORT_DESCEND,
                             .sort_target = FW_ETCD_SORT_KEY};
    REQUIRE(fw_etcd_range(C, "/t/", &so, &r) == 0);
    CHECK_EQ_STR(r->kvs[0].key, "/t/empty");
    fw_etcd_kvs_free(&r);
    fw_etcd_range_opts old = {.revision = rev};
    REQUIRE(fw_etcd_range(C, "/t/a", &old, &r) == 0);
    REQUIRE(r->n == 1);
    CHECK_EQ_STR(r->kvs[0].value, "1");
    fw_etcd_kvs_free(&r);
    fw_etcd_range_opts ro = {.range_end = "/t/c"}; /* [/t/a, /t/c) */
    REQUIRE(fw_etcd_range(C, "/t/a", &ro, &r) == 0);
    CHECK_EQ_INT(r->n, 3);
    fw_etcd_kvs_free(&r);

    /* Prefixes ending in 0xff bytes still get the right range end. */
    s_put("/ff\xff\xff" "a", "1");
    s_put("/ff\xff\xff", "2");
    s_put("/fg", "3");
    REQUIRE(fw_etcd_range(C, "/ff\xff", &po, &r) == 0);
    CHECK_EQ_INT(r->n, 2);
    fw_etcd_kvs_free(&r);
}

static void s_delete(void) {
    for (int i = 0; i < 5; i++) {
        char k[32];
        snprintf(k, sizeof k, "/del/%d", i);
        s_put(k, "v");
    }
    int64_t n = -1, rev = 0;
    CHECK_EQ_INT(fw_etcd_delete(C, "/del/0", false, &n, &rev), 0);
    CHECK_EQ_INT(n, 1);
    CHECK(rev > 0);
    CHECK_EQ_INT(fw_etcd_delete(C, "/del/0", false, &n, NULL), 0);
    CHECK_EQ_INT(n, 0); /* "deleted" omitted by etcd when 0 */
    CHECK_EQ_INT(fw_etcd_delete(C, "/del/", true, &n, NULL), 0);
    CHECK_EQ_INT(n, 4);
}

typedef struct {
    int pages, keys;
    char last[64];
    bool ordered;
    bool wrote;
} s_walk;

static int s_page(const fw_etcd_kv *kvs, size_t n, void *arg) {
    s_walk *w = arg;
    w->pages++;
    for (size_t i = 0; i < n; i++) {
        if (w->last[0] && strcmp(kvs[i].key, w->last) <= 0) w->ordered = false;
        snprintf(w->last, sizeof w->last, "%s", kvs[i].key);
        w->keys++;
    }
    if (!w->wrote) { /* a write after the first page must not show up: one snapshot */
        w->wrote = true;
        if (fw_etcd_put(C, "/page/zzzz", "late", 4, 0, NULL, NULL) < 0) return FW_EIO;
    }
    return 0;
}

static int s_stop_early(const fw_etcd_kv *kvs, size_t n, void *arg) {
    (*(int *)arg)++;
    return 7;
}

static void s_paging(void) {
    /* 1100 keys, written in txns of 100 puts. */
    for (int b = 0; b < 11; b++) {
        fw_etcd_txn *t = fw_etcd_txn_new();
        for (int i = 0; i < 100; i++) {
            char k[32];
            snprintf(k, sizeof k, "/page/%05d", b * 100 + i);
            fw_etcd_txn_put(t, FW_ETCD_SUCCESS, k, k, strlen(k), 0, false);
        }
        CHECK_EQ_INT(fw_etcd_txn_commit(C, t, NULL), 0);
        fw_etcd_txn_destroy(&t);
    }
    s_walk w = {.ordered = true};
    int64_t rev = 0;
    CHECK_EQ_INT(fw_etcd_range_pages(C, "/page/", 250, 0, s_page, &w, &rev), 0);
    CHECK_EQ_INT(w.keys, 1100);
    CHECK_EQ_INT(w.pages, 5); /* 250 * 4 + 100 */
    CHECK(w.ordered);
    CHECK_EQ_STR(w.last, "/page/01099");
    CHECK(rev > 0);
    /* Default page size (1000), now including the late key. */
    s_walk w2 = {.ordered = true, .wrote = true};
    CHECK_EQ_INT(fw_etcd_range_pages(C, "/page/", 0, 0, s_page, &w2, NULL), 0);
    CHECK_EQ_INT(w2.keys, 1101);
    CHECK_EQ_INT(w2.pages, 2);
    /* At the old revision the late key is absent again. */
    s_walk w3 = {.ordered = true, .wrote = true};
    CHECK_EQ_INT(fw_etcd_range_pages(C, "/page/", 400, rev, s_page, &w3, NULL), 0);
    CHECK_EQ_INT(w3.keys, 1100);
    int calls = 0;
    CHECK_EQ_INT(fw_etcd_range_pages(C, "/page/", 100, 0, s_stop_early, &calls, NULL), 7);
    CHECK_EQ_INT(calls, 1);
    /* The whole keyspace ("" prefix) holds at least these. */
    s_walk w4 = {.ordered = true, .wrote = true};
    CHECK_EQ_INT(fw_etcd_range_pages(C, "", 500, 0, s_page, &w4, NULL), 0);
    CHECK(w4.keys >= 1101);
    CHECK(w4.ordered);
}

/* Commit a one-compare txn whose success branch puts `flag`; 1 when it ran. */
static int s_cmp(const char *key, fw_etcd_cmp_target tg, fw_etcd_cmp_result res, int64_t v) {
    fw_etcd_txn *t = fw_etcd_txn_new();
    fw_etcd_txn_compare(t, key, tg, res, v);
    fw_etcd_txn_put(t, FW_ETCD_SUCCESS, "/txn/flag", "s", 1, 0, false);
    fw_etcd_txn_put(t, FW_ETCD_FAILURE, "/txn/flag", "f", 1, 0, false);
    int rc = fw_etcd_txn_commit(C, t, NULL);
    fw_etcd_txn_destroy(&t);
    fw_etcd_kv *kv = NULL;
    fw_etcd_get(C, "/txn/flag", &kv);
    int ran = kv && kv->value[0] == 's';
    if ((rc == 0) != ran) fw_test_failed++, fprintf(stderr, "rc %d vs flag %d\n", rc, ran);
    CHECK(rc == 0 || rc == FW_ECONFLICT);
    fw_etcd_kv_free(&kv);
    return ran;
}

static void s_txn(void) {
    int64_t rev = 0;
    REQUIRE(fw_etcd_put(C, "/txn/k", "v1", 2, 0, NULL, NULL) == 0);
    REQUIRE(fw_etcd_put(C, "/txn/k", "v2", 2, 0, &rev, NULL) == 0); /* version 2 */

    /* Success branch: put + range, and the range sees the put. */
    fw_etcd_txn *t = fw_etcd_txn_new();
    fw_etcd_txn_compare_value(t, "/txn/k", FW_ETCD_CMP_EQUAL, "v2", 2);
    fw_etcd_txn_put(t, FW_ETCD_SUCCESS, "/txn/k", "v3", 2, 0, true);
    fw_etcd_txn_range(t, FW_ETCD_SUCCESS, "/txn/k", NULL);
    fw_etcd_txn_range(t, FW_ETCD_FAILURE, "/txn/k", NULL);
    fw_etcd_txn_result *r = NULL;
    CHECK_EQ_INT(fw_etcd_txn_commit(C, t, &r), 0);
    REQUIRE(r != NULL);
    CHECK(r->succeeded);
    CHECK(!r->fenced);
    CHECK_EQ_INT(r->revision, rev + 1);
    REQUIRE(r->n_ops == 2);
    CHECK_EQ_INT(r->ops[0].type, FW_ETCD_OP_PUT);
    CHECK_EQ_INT(r->ops[0].n_prev, 1);
    CHECK_EQ_STR(r->ops[0].prev_kvs[0].value, "v2");
    CHECK_EQ_INT(r->ops[1].type, FW_ETCD_OP_RANGE);
    REQUIRE(r->ops[1].range && r->ops[1].range->n == 1);
    CHECK_EQ_STR(r->ops[1].range->kvs[0].value, "v3");
    fw_etcd_txn_result_free(&r);
    CHECK(r == NULL);

    /* Same txn again: the value is now v3, so the failure branch runs and
     * reports the current value; nothing is written (no "succeeded" field). */
    CHECK_EQ_INT(fw_etcd_txn_commit(C, t, &r), FW_ECONFLICT);
    REQUIRE(r != NULL);
    CHECK(!r->succeeded);
    CHECK_EQ_INT(r->revision, rev + 1);
    REQUIRE(r->n_ops == 1);
    CHECK_EQ_STR(r->ops[0].range->kvs[0].value, "v3");
    fw_etcd_txn_result_free(&r);
    fw_etcd_txn_destroy(&t);

    /* Every target x result; /txn/k: version 3, mod rev+1. */
    fw_etcd_kv *kv = NULL;
    REQUIRE(fw_etcd_get(C, "/txn/k", &kv) == 0);
    int64_t mod = kv->mod_revision, cre = kv->create_revision;
    fw_etcd_kv_free(&kv);
    CHECK(s_cmp("/txn/k", FW_ETCD_CMP_VERSION, FW_ETCD_CMP_EQUAL, 3));
    CHECK(!s_cmp("/txn/k", FW_ETCD_CMP_VERSION, FW_ETCD_CMP_EQUAL, 2));
    CHECK(s_cmp("/txn/k", FW_ETCD_CMP_VERSION, FW_ETCD_CMP_GREATER, 2));
    CHECK(!s_cmp("/txn/k", FW_ETCD_CMP_VERSION, FW_ETCD_CMP_GREATER, 3));
    CHECK(s_cmp("/txn/k", FW_ETCD_CMP_VERSION, FW_ETCD_CMP_LESS, 4));
    CHECK(!s_cmp("/txn/k", FW_ETCD_CMP_VERSION, FW_ETCD_CMP_NOT_EQUAL, 3));
    CHECK(s_cmp("/txn/k", FW_ETCD_CMP_MOD, FW_ETCD_CMP_EQUAL, mod));
    CHECK(s_cmp("/txn/k", FW_ETCD_CMP_MOD, FW_ETCD_CMP_LESS, mod + 1));
    CHECK(!s_cmp("/txn/k", FW_ETCD_CMP_MOD, FW_ETCD_CMP_GREATER, mod));
    CHECK(s_cmp("/txn/k", FW_ETCD_CMP_CREATE, FW_ETCD_CMP_EQUAL, cre));
    CHECK(s_cmp("/txn/k", FW_ETCD_CMP_CREATE, FW_ETCD_CMP_NOT_EQUAL, 0));
    CHECK(s_cmp("/txn/none", FW_ETCD_CMP_CREATE, FW_ETCD_CMP_EQUAL, 0)); /* absent key */
    CHECK(!s_cmp("/txn/k", FW_ETCD_CMP_LEASE, FW_ETCD_CMP_NOT_EQUAL, 0));

    /* VALUE compares bytewise: "v3" > "v2", < "v4". */
    t = fw_etcd_txn_new();
    fw_etcd_txn_compare_value(t, "/txn/k", FW_ETCD_CMP_GREATER, "v2", 2);
    fw_etcd_txn_compare_value(t, "/txn/k", FW_ETCD_CMP_LESS, "v4", 2);
    fw_etcd_txn_compare_value(t, "/txn/k", FW_ETCD_CMP_NOT_EQUAL, "v3x", 3);
    CHECK_EQ_INT(fw_etcd_txn_commit(C, t, NULL), 0);
    fw_etcd_txn_destroy(&t);

    /* Create-if-absent: once, then the compare fails. */
    for (int i = 0; i < 2; i++) {
        t = fw_etcd_txn_new();
        fw_etcd_txn_compare(t, "/txn/once", FW_ETCD_CMP_CREATE, FW_ETCD_CMP_EQUAL, 0);
        fw_etcd_txn_put(t, FW_ETCD_SUCCESS, "/txn/once", "x", 1, 0, false);
        CHECK_EQ_INT(fw_etcd_txn_commit(C, t, NULL), i == 0 ? 0 : FW_ECONFLICT);
        fw_etcd_txn_destroy(&t);
    }

    /* Delete ops with prev_kv, on a prefix. */
    s_put("/txn/d/1", "a");
    s_put("/txn/d/2", "b");
    t = fw_etcd_txn_new();
    fw_etcd_txn_delete(t, FW_ETCD_SUCCESS, "/txn/d/", true, true);
    fw_etcd_txn_delete(t, FW_ETCD_SUCCESS, "/txn/d/none", false, false);
    CHECK_EQ_INT(fw_etcd_txn_commit(C, t, &r), 0);
    REQUIRE(r && r->n_ops == 2);
    CHECK_EQ_INT(r->ops[0].type, FW_ETCD_OP_DELETE);
    CHECK_EQ_INT(r->ops[0].deleted, 2);
    CHECK_EQ_INT(r->ops[0].n_prev, 2);
    CHECK_EQ_STR(r->ops[0].prev_kvs[1].value, "b");
    CHECK_EQ_INT(r->ops[1].deleted, 0);
    fw_etcd_txn_result_free(&r);
    fw_etcd_txn_destroy(&t);

    /* An empty txn succeeds and reports the revision. */
    t = fw_etcd_txn_new();
    CHECK_EQ_INT(fw_etcd_txn_commit(C, t, &r), 0);
    CHECK(r && r->succeeded && r->n_ops == 0 && r->revision > 0);
    fw_etcd_txn_result_free(&r);
    fw_etcd_txn_destroy(&t);

    /* 128 ops is etcd's limit and is accepted. */
    t = fw_etcd_txn_new();
    for (int i = 0; i < 128; i++) {
        char k[32];
        snprintf(k, sizeof k, "/txn/max/%03d", i);
        fw_etcd_txn_put(t, FW_ETCD_SUCCESS, k, "v", 1, 0, false);
    }
    CHECK_EQ_INT(fw_etcd_txn_commit(C, t, &r), 0);
    CHECK(r && r->n_ops == 128);
    fw_etcd_txn_result_free(&r);
    fw_etcd_txn_destroy(&t);
    /* etcd itself refuses a duplicate key in one txn: a mapped error. */
    t = fw_etcd_txn_new();
    fw_etcd_txn_put(t, FW_ETCD_SUCCESS, "/txn/dup", "1", 1, 0, false);
    fw_etcd_txn_put(t, FW_ETCD_SUCCESS, "/txn/dup", "2", 1, 0, false);
    CHECK_EQ_INT(fw_etcd_txn_commit(C, t, &r), FW_EINVAL);
    CHECK(strstr(fw_err_detail(), "duplicate key") != NULL);
    CHECK(r == NULL);
    fw_etcd_txn_destroy(&t);
}

static void s_lease_ids(void) {
    /* An id above 2^53 cannot survive a double: 0x7ffffffffffff123 would
     * round to ...f000 or so. */
    const int64_t id = INT64_C(0x7ffffffffffff123);
    int64_t got = 0, ttl = 0, granted = 0;
    REQUIRE(fw_etcd_lease_grant(C, 30, id, &got, &ttl) == 0);
    CHECK(got == id);
    CHECK_EQ_INT(ttl, 30);
    CHECK_EQ_INT(fw_etcd_lease_grant(C, 30, id, NULL, NULL), FW_EEXIST);
    REQUIRE(fw_etcd_put(C, "/lease/k", "v", 1, id, NULL, NULL) == 0);
    fw_etcd_kv *kv = NULL;
    REQUIRE(fw_etcd_get(C, "/lease/k", &kv) == 0);
    CHECKF(kv->lease == id, "lease %" PRIx64, (uint64_t)kv->lease);
    fw_etcd_kv_free(&kv);
    CHECK(s_cmp("/lease/k", FW_ETCD_CMP_LEASE, FW_ETCD_CMP_EQUAL, id));
    CHECK(!s_cmp("/lease/k", FW_ETCD_CMP_LEASE, FW_ETCD_CMP_EQUAL, id - 1));
    CHECK_EQ_INT(fw_etcd_lease_timetolive(C, id, &ttl, &granted), 0);
    CHECK_EQ_INT(granted, 30);
    CHECK(ttl > 25 && ttl <= 30);
    CHECK_EQ_INT(fw_etcd_lease_keepalive(C, id, &ttl), 0);
    CHECK_EQ_INT(ttl, 30);
    CHECK_EQ_INT(fw_etcd_lease_revoke(C, id), 0);
    CHECK_EQ_INT(fw_etcd_get(C, "/lease/k", &kv), FW_ENOTFOUND); /* keys go with the lease */
    CHECK_EQ_INT(fw_etcd_lease_revoke(C, id), FW_ELEASE);
    CHECK_EQ_INT(fw_etcd_lease_keepalive(C, id, NULL), FW_ELEASE);
    CHECK_EQ_INT(fw_etcd_lease_timetolive(C, id, NULL, NULL), FW_ELEASE);

    /* An id etcd chooses (also typically > 2^53) round-trips the same way. */
    REQUIRE(fw_etcd_lease_grant(C, 30, 0, &got, NULL) == 0);
    CHECK(got > 0);
    REQUIRE(fw_etcd_put(C, "/lease/k2", "v", 1, got, NULL, NULL) == 0);
    REQUIRE(fw_etcd_get(C, "/lease/k2", &kv) == 0);
    CHECK(kv->lease == got);
    fw_etcd_kv_free(&kv);
    CHECK_EQ_INT(fw_etcd_lease_revoke(C, got), 0);
    /* Putting with an unknown lease is refused by etcd. */
    CHECK_EQ_INT(fw_etcd_put(C, "/lease/k3", "v", 1, got, NULL, NULL), FW_ELEASE);
}

static void s_lease_expiry(void) {
    int64_t id = 0;
    REQUIRE(fw_etcd_lease_grant(C, 2, 0, &id, NULL) == 0);
    REQUIRE(fw_etcd_put(C, "/exp/a", "v", 1, id, NULL, NULL) == 0);
    REQUIRE(fw_etcd_put(C, "/exp/b", "v", 1, id, NULL, NULL) == 0);
    int64_t t0 = fw_mono_ms();
    fw_etcd_kvs *r = NULL;
    fw_etcd_range_opts co = {.prefix = true, .count_only = true};
    int64_t gone_at = -1;
    while (fw_mono_ms() - t0 < 6000) {
        REQUIRE(fw_etcd_range(C, "/exp/", &co, &r) == 0);
        int64_t n = r->count;
        fw_etcd_kvs_free(&r);
        if (n == 0) {
            gone_at = fw_mono_ms() - t0;
            break;
        }
        fw_sleep_ms(100);
    }
    CHECKF(gone_at >= 1500 && gone_at < 5000, "keys gone after %lld ms", (long long)gone_at);
    CHECK_EQ_INT(fw_etcd_lease_keepalive(C, id, NULL), FW_ELEASE);
    CHECK(strstr(fw_err_detail(), "expired") != NULL);
    CHECK_EQ_INT(fw_etcd_lease_timetolive(C, id, NULL, NULL), FW_ELEASE);
}

static void s_compaction_and_errors(void) {
    int64_t rev = 0, now = 0;
    REQUIRE(fw_etcd_put(C, "/cmp/a", "1", 1, 0, &rev, NULL) == 0);
    REQUIRE(fw_etcd_put(C, "/cmp/a", "2", 1, 0, &now, NULL) == 0);
    CHECK_EQ_INT(fw_etcd_compact(C, now, true), 0);
    fw_etcd_kvs *r = NULL;
    fw_etcd_range_opts old = {.revision = rev};
    CHECK_EQ_INT(fw_etcd_range(C, "/cmp/a", &old, &r), FW_ECOMPACTED);
    CHECK(strstr(fw_err_detail(), "compacted") != NULL);
    CHECK(r == NULL);
    CHECK_EQ_INT(fw_etcd_compact(C, rev, false), FW_ECOMPACTED);
    fw_etcd_range_opts future = {.revision = now + 1000};
    CHECK_EQ_INT(fw_etcd_range(C, "/cmp/a", &future, &r), FW_EINVAL);
    CHECK(strstr(fw_err_detail(), "future revision") != NULL);
    int64_t prev = 0;
    CHECK_EQ_INT(fw_etcd_ping(C, &prev), 0);
    CHECK(prev >= now);
}

static void s_limits_real(void) {
    /* The client's own estimate must let through what etcd accepts: a value
     * of 1.4 MiB fits under the 1.5 MiB default and round-trips. */
    size_t big = 1400 * 1024;
    char *v = malloc(1600 * 1024);
    REQUIRE(v != NULL);
    for (size_t i = 0; i < 1600 * 1024; i++) v[i] = (char)('a' + i % 26);
    CHECKF(fw_etcd_put(C, "/lim/big", v, big, 0, NULL, NULL) == 0, "%s", fw_err_detail());
    fw_etcd_kv *kv = NULL;
    REQUIRE(fw_etcd_get(C, "/lim/big", &kv) == 0);
    CHECK_EQ_INT(kv->value_len, big);
    CHECK(memcmp(kv->value, v, big) == 0);
    fw_etcd_kv_free(&kv);

    /* A client told the cluster allows more (it does not) sends what etcd
     * then refuses itself: the refusal still maps to FW_ETOOBIG. */
    fw_etcd_opts o = {.endpoints = fw_etcd_harness_endpoints(H),
                      .timeout_ms = 5000,
                      .max_request_bytes = 8u << 20,
                      .max_txn_ops = 1000};
    fw_etcd *lax = fw_etcd_new(&o);
    REQUIRE(lax != NULL);
    int rc = fw_etcd_put(lax, "/lim/huge", v, 1600 * 1024, 0, NULL, NULL);
    CHECKF(rc == FW_ETOOBIG, "rc %d: %s", rc, fw_err_detail());
    CHECK(strstr(fw_err_detail(), "too large") != NULL);
    CHECK_EQ_INT(fw_etcd_put(C, "/lim/huge", v, 1600 * 1024, 0, NULL, NULL), FW_ETOOBIG);
    fw_etcd_txn *t = fw_etcd_txn_new();
    for (int i = 0; i < 129; i++) {
        char k[32];
        snprintf(k, sizeof k, "/lim/op%03d", i);
        fw_etcd_txn_put(t, FW_ETCD_SUCCESS, k, "v", 1, 0, false);
    }
    rc = fw_etcd_txn_commit(lax, t, NULL);
    CHECKF(rc == FW_ETOOBIG, "rc %d: %s", rc, fw_err_detail());
    CHECK(strstr(fw_err_detail(), "too many operations") != NULL);
    fw_etcd_txn_destroy(&t);
    fw_etcd_kvs *r = NULL;
    fw_etcd_range_opts co = {.prefix = true, .count_only = true};
    REQUIRE(fw_etcd_range(C, "/lim/", &co, &r) == 0);
    CHECK_EQ_INT(r->count, 1); /* only /lim/big: nothing refused was applied */
    fw_etcd_kvs_free(&r);
    fw_etcd_destroy(&lax);
    free(v);
}

enum { S_THREADS = 4, S_PER_THREAD = 50 };

static void *s_writer(void *arg) {
    /* Each thread does puts, gets and a counter increment by CAS: the pool
     * of curl handles and the shared preferred endpoint must not mix up
     * answers between threads. */
    intptr_t id = (intptr_t)arg;
    intptr_t bad = 0;
    for (int i = 0; i < S_PER_THREAD; i++) {
        char k[32], val[32];
        snprintf(k, sizeof k, "/thr/%d/%03d", (int)id, i);
        snprintf(val, sizeof val, "%d:%d", (int)id, i);
        if (fw_etcd_put(C, k, val, strlen(val), 0, NULL, NULL) != 0) bad++;
        fw_etcd_kv *kv = NULL;
        if (fw_etcd_get(C, k, &kv) != 0 || strcmp(kv->value, val) != 0) bad++;
        fw_etcd_kv_free(&kv);
        for (;;) { /* counter += 1 with a mod_revision compare */
            fw_etcd_kv *cur = NULL;
            int64_t n = 0, mod = 0;
            if (fw_etcd_get(C, "/thr/counter", &cur) == 0) {
                n = strtoll(cur->value, NULL, 10);
                mod = cur->mod_revision;
            }
            fw_etcd_kv_free(&cur);
            char nv[32];
            snprintf(nv, sizeof nv, "%lld", (long long)(n + 1));
            fw_etcd_txn *t = fw_etcd_txn_new();
            fw_etcd_txn_compare(t, "/thr/counter", FW_ETCD_CMP_MOD, FW_ETCD_CMP_EQUAL, mod);
            fw_etcd_txn_put(t, FW_ETCD_SUCCESS, "/thr/counter", nv, strlen(nv), 0, false);
            int rc = fw_etcd_txn_commit(C, t, NULL);
            fw_etcd_txn_destroy(&t);
            if (rc == 0) break;
            if (rc != FW_ECONFLICT) {
                bad++;
                break;
            }
        }
    }
    return (void *)bad;
}

static void s_threads(void) {
    pthread_t th[S_THREADS];
    for (intptr_t i = 0; i < S_THREADS; i++)
        REQUIRE(pthread_create(&th[i], NULL, s_writer, (void *)i) == 0);
    intptr_t bad = 0;
    for (int i = 0; i < S_THREADS; i++) {
        void *r = NULL;
        pthread_join(th[i], &r);
        bad += (intptr_t)r;
    }
    CHECK_EQ_INT(bad, 0);
    fw_etcd_kv *kv = NULL;
    REQUIRE(fw_etcd_get(C, "/thr/counter", &kv) == 0);
    CHECK_EQ_INT(strtoll(kv->value, NULL, 10), S_THREADS * S_PER_THREAD); /* no lost update */
    fw_etcd_kv_free(&kv);
    fw_etcd_kvs *r = NULL;
    fw_etcd_range_opts co = {.prefix = true, .count_only = true};
    REQUIRE(fw_etcd_range(C, "/thr/", &co, &r) == 0);
    CHECK_EQ_INT(r->count, S_THREADS * S_PER_THREAD + 1);
    fw_etcd_kvs_free(&r);
}

int main(void) {
    H = fw_etcd_harness_new(1);
    CHECK(H != NULL);
    if (!H) return fw_test_summary();
    C = fw_etcd_harness_client(H, 5000);
    CHECK(C != NULL);
    if (!C) return fw_test_summary();
    RUN(s_put_get_range);
    RUN(s_delete);
    RUN(s_paging);
    RUN(s_txn);
    RUN(s_lease_ids);
    RUN(s_lease_expiry);
    RUN(s_compaction_and_errors);
    RUN(s_limits_real);
    RUN(s_threads);
    fw_etcd_destroy(&C);
    fw_etcd_harness_destroy(&H);
    return fw_test_summary();
}
