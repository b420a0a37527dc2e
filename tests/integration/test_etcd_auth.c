/* test_etcd_auth - user/password authentication against a real etcd with
 * auth enabled (user root, role root; a read-only user for permissions):
 * the token goes in the Authorization header of unary calls and of the
 * watch stream; a client with a user works against a cluster whose auth is
 * still off and carries on when it is turned on; a wrong password, no user
 * and a missing permission give FW_EAUTH / FW_EPERM with a clear detail;
 * a token invalidated by the server (auth disabled and enabled again,
 * which drops every simple token) is renewed transparently. */
#include "etcd_harness.h"
#include "fw_err.h"
#include "fw_etcd.h"
#include "fw_test.h"
#include "fw_time.h"

#include <stdlib.h>
#include <string.h>

#define ROOT_PW "r00t-pw"

static fw_etcd_harness *H;

static fw_etcd *s_client(const char *user, const char *pw) {
    fw_etcd_opts o = {.endpoints = fw_etcd_harness_endpoints(H),
                      .timeout_ms = 3000,
                      .user = user,
                      .password = pw};
    fw_etcd *c = fw_etcd_new(&o);
    CHECKF(c != NULL, "client: %s", fw_err_detail());
    return c;
}

/* A token for root through the raw gateway, for admin calls; "" on failure. */
static void s_root_token(char *tok, size_t size) {
    char out[512];
    tok[0] = '\0';
    int st = fw_etcd_harness_post(H, 0, "/v3/auth/authenticate",
                                  "{\"name\":\"root\",\"password\":\"" ROOT_PW "\"}", NULL, out,
                                  sizeof out);
    const char *p = strstr(out, "\"token\":\"");
    if (st != 200 || !p) {
        fprintf(stderr, "authenticate: HTTP %d %s\n", st, out);
        return;
    }
    p += 9;
    size_t n = strcspn(p, "\"");
    if (n >= size) return;
    memcpy(tok, p, n);
    tok[n] = '\0';
}

static int s_admin(const char *tok, const char *path, const char *json) {
    char out[512];
    int st = fw_etcd_harness_post(H, 0, path, json, tok, out, sizeof out);
    if (st != 200) fprintf(stderr, "%s: HTTP %d %s\n", path, st, out);
    return st;
}

static void s_auth(void) {
    /* Auth configured on the client, still off on the server: works. */
    fw_etcd *root = s_client("root", ROOT_PW);
    REQUIRE(root != NULL);
    CHECKF(fw_etcd_put(root, "/a/before", "1", 1, 0, NULL, NULL) == 0, "%s", fw_err_detail());

    REQUIRE(fw_etcd_harness_enable_auth(H, ROOT_PW) == 0);

    /* The same client now authenticates ("user name is empty" without a
     * token) and repeats the call once, invisibly to the caller. */
    CHECKF(fw_etcd_put(root, "/a/after", "2", 1, 0, NULL, NULL) == 0, "%s", fw_err_detail());
    fw_etcd_kv *kv = NULL;
    CHECKF(fw_etcd_get(root, "/a/before", &kv) == 0, "%s", fw_err_detail());
    CHECK(kv && strcmp(kv->value, "1") == 0);
    fw_etcd_kv_free(&kv);

    /* Every kind of call carries the token: txn, lease, watch. */
    fw_etcd_txn *t = fw_etcd_txn_new();
    fw_etcd_txn_compare(t, "/a/after", FW_ETCD_CMP_VERSION, FW_ETCD_CMP_EQUAL, 1);
    fw_etcd_txn_put(t, FW_ETCD_SUCCESS, "/a/txn", "t", 1, 0, false);
    CHECKF(fw_etcd_txn_commit(root, t, NULL) == 0, "%s", fw_err_detail());
    fw_etcd_txn_destroy(&t);
    int64_t lease = 0;
    CHECKF(fw_etcd_lease_grant(root, 30, 0, &lease, NULL) == 0, "%s", fw_err_detail());
    CHECK_EQ_INT(fw_etcd_lease_keepalive(root, lease, NULL), 0);
    CHECK_EQ_INT(fw_etcd_lease_revoke(root, lease), 0);
    fw_etcd_watch_opts wo = {.prefix = true};
    fw_etcd_watch *w = fw_etcd_watch_new(root, "/a/w/", &wo);
    CHECKF(w != NULL, "watch: %s", fw_err_detail());
    CHECK_EQ_INT(fw_etcd_put(root, "/a/w/1", "x", 1, 0, NULL, NULL), 0);
    fw_etcd_event ev;
    CHECK_EQ_INT(fw_etcd_watch_next(w, 3000, &ev), 1);
    CHECK(strcmp(ev.kv.key, "/a/w/1") == 0);
    fw_etcd_event_clear(&ev);
    fw_etcd_watch_destroy(&w);

    /* No user: refused, and the detail says what to configure. */
    fw_etcd *anon = s_client(NULL, NULL);
    REQUIRE(anon != NULL);
    CHECK_EQ_INT(fw_etcd_put(anon, "/a/x", "1", 1, 0, NULL, NULL), FW_EAUTH);
    CHECK(strstr(fw_err_detail(), "user name is empty") != NULL);
    CHECK_EQ_INT(fw_etcd_get(anon, "/a/before", &kv), FW_EAUTH);
    CHECK(fw_etcd_watch_new(anon, "/a/", &wo) == NULL);
    fw_etcd_destroy(&anon);

    /* A wrong password: FW_EAUTH naming the user, at once (no retry loop). */
    fw_etcd *bad = s_client("root", "wrong");
    REQUIRE(bad != NULL);
    int64_t t0 = fw_mono_ms();
    CHECK_EQ_INT(fw_etcd_put(bad, "/a/x", "1", 1, 0, NULL, NULL), FW_EAUTH);
    CHECK(strstr(fw_err_detail(), "authentication as user \"root\" failed") != NULL);
    CHECK(fw_mono_ms() - t0 < 2000);
    CHECK_EQ_INT(fw_etcd_get(bad, "/a/before", &kv), FW_EAUTH);
    fw_etcd_destroy(&bad);

    /* A read-only user: reads under /ro/ work, writes are FW_EPERM. */
    char tok[256];
    s_root_token(tok, sizeof tok);
    REQUIRE(tok[0] != '\0');
    /* "L3JvLw==" is "/ro/", "L3JvMA==" is "/ro0" (the prefix's range end). */
    CHECK_EQ_INT(s_admin(tok, "/v3/auth/user/add", "{\"name\":\"reader\",\"password\":\"rpw\"}"),
                 200);
    CHECK_EQ_INT(s_admin(tok, "/v3/auth/role/add", "{\"name\":\"ro\"}"), 200);
    CHECK_EQ_INT(s_admin(tok, "/v3/auth/role/grant",
                         "{\"name\":\"ro\",\"perm\":{\"permType\":\"READ\",\"key\":\"L3JvLw==\","
                         "\"range_end\":\"L3JvMA==\"}}"),
                 200);
    CHECK_EQ_INT(s_admin(tok, "/v3/auth/user/grant", "{\"user\":\"reader\",\"role\":\"ro\"}"), 200);
    CHECK_EQ_INT(fw_etcd_put(root, "/ro/k", "v", 1, 0, NULL, NULL), 0);
    fw_etcd *reader = s_client("reader", "rpw");
    REQUIRE(reader != NULL);
    CHECKF(fw_etcd_get(reader, "/ro/k", &kv) == 0, "%s", fw_err_detail());
    fw_etcd_kv_free(&kv);
    CHECK_EQ_INT(fw_etcd_put(reader, "/ro/k", "w", 1, 0, NULL, NULL), FW_EPERM);
    CHECK(strstr(fw_err_detail(), "permission denied") != NULL);
    CHECK_EQ_INT(fw_etcd_get(reader, "/a/before", &kv), FW_EPERM);
    fw_etcd_destroy(&reader);

    /* The server forgets every token (auth off and on again): the client's
     * token is now invalid, and the next call authenticates again. */
    CHECK_EQ_INT(s_admin(tok, "/v3/auth/disable", "{}"), 200);
    CHECK_EQ_INT(s_admin(NULL, "/v3/auth/enable", "{}"), 200);
    CHECKF(fw_etcd_put(root, "/a/renewed", "3", 1, 0, NULL, NULL) == 0, "%s", fw_err_detail());
    CHECKF(fw_etcd_get(root, "/a/renewed", &kv) == 0, "%s", fw_err_detail());
    fw_etcd_kv_free(&kv);
    fw_etcd_destroy(&root);
}

int main(void) {
    H = fw_etcd_harness_new(1);
    CHECK(H != NULL);
    if (!H) return fw_test_summary();
    RUN(s_auth);
    fw_etcd_harness_destroy(&H);
    return fw_test_summary();
}
