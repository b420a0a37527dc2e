/* test_etcd_offline - what the etcd client decides before talking to etcd:
 * endpoint-list validation, the request-size and txn-op limits, the txn
 * builder's sticky errors, and failover over unreachable endpoints.
 *
 * "Without a request being sent" is proved, not assumed: the endpoint is a
 * listening socket nobody accepts on, so any connection the client made
 * would sit in its backlog, and the test checks that the backlog is empty. */
#include "fw_err.h"
#include "fw_etcd.h"
#include "fw_test.h"
#include "fw_time.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static int s_listen(int *port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 16) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        return -1;
    fcntl(fd, F_SETFL, O_NONBLOCK);
    *port = ntohs(a.sin_port);
    return fd;
}

/* Connections the client made to the listener so far (accepted and closed). */
static int s_connections(int lfd) {
    int n = 0, c;
    while ((c = accept(lfd, NULL, NULL)) >= 0) {
        close(c);
        n++;
    }
    return n;
}

static void s_bad_endpoints(void) {
    struct {
        const char *list;
        const char *detail;
    } cases[] = {
        {NULL, "empty"},
        {"", "empty"},
        {"127.0.0.1:2379", "entry 1"},
        {"http://127.0.0.1:2379,,http://127.0.0.1:2380", "entry 2 is empty"},
        {"http://", "not an http://host:port URL"},
        {"ftp://host:1", "not an http://host:port URL"},
        {"http://a b:1", "space"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fw_err_clear();
        fw_etcd_opts o = {.endpoints = cases[i].list};
        fw_etcd *c = fw_etcd_new(&o);
        CHECKF(c == NULL, "endpoints \"%s\" accepted", cases[i].list ? cases[i].list : "(null)");
        CHECKF(strstr(fw_err_detail(), cases[i].detail) != NULL, "detail \"%s\" lacks \"%s\"",
               fw_err_detail(), cases[i].detail);
        fw_etcd_destroy(&c);
    }
    fw_etcd_opts o = {.endpoints = " http://127.0.0.1:1 , https://h.example:2/ "};
    fw_etcd *c = fw_etcd_new(&o);
    REQUIRE(c != NULL);
    CHECK_EQ_INT(fw_etcd_endpoint_count(c), 2);
    CHECK_EQ_INT(fw_etcd_endpoint_index(c), 0);
    fw_etcd_destroy(&c);
    fw_etcd_destroy(&c); /* idempotent */
    CHECK(c == NULL);

    fw_etcd_opts nopw = {.endpoints = "http://127.0.0.1:1", .user = "root"};
    CHECK(fw_etcd_new(&nopw) == NULL);
    CHECK(strstr(fw_err_detail(), "without a password") != NULL);
}

static void s_limits(void) {
    int port = 0, lfd = s_listen(&port);
    REQUIRE(lfd >= 0);
    char ep[64];
    snprintf(ep, sizeof ep, "http://127.0.0.1:%d", port);
    fw_etcd_opts o = {.endpoints = ep, .timeout_ms = 300};
    fw_etcd *c = fw_etcd_new(&o);
    REQUIRE(c != NULL);

    /* A 1.6 MiB value: over etcd's 1.5 MiB --max-request-bytes. */
    size_t big = 1600 * 1024;
    char *v = malloc(big);
    REQUIRE(v != NULL);
    memset(v, 'x', big);
    int64_t t0 = fw_mono_ms();
    int rc = fw_etcd_put(c, "/big", v, big, 0, NULL, NULL);
    CHECK_EQ_INT(rc, FW_ETOOBIG);
    CHECK(strstr(fw_err_detail(), "--max-request-bytes") != NULL);
    CHECK(fw_mono_ms() - t0 < 200); /* refused at once, not after a timeout */

    /* 129 puts in one branch: over --max-txn-ops. */
    fw_etcd_txn *t = fw_etcd_txn_new();
    REQUIRE(t != NULL);
    char key[32];
    for (int i = 0; i < 129; i++) {
        snprintf(key, sizeof key, "/k/%d", i);
        CHECK_EQ_INT(fw_etcd_txn_put(t, FW_ETCD_SUCCESS, key, "v", 1, 0, false), 0);
    }
    CHECK_EQ_INT(fw_etcd_txn_ops(t, FW_ETCD_SUCCESS), 129);
    CHECK_EQ_INT(fw_etcd_txn_ops(t, FW_ETCD_FAILURE), 0);
    fw_etcd_txn_result *res = (fw_etcd_txn_result *)1;
    rc = fw_etcd_txn_commit(c, t, &res);
    CHECK_EQ_INT(rc, FW_ETOOBIG);
    CHECK(res == NULL);
    CHECK(strstr(fw_err_detail(), "129 success ops") != NULL);
    CHECK(strstr(fw_err_detail(), "--max-txn-ops") != NULL);
    fw_etcd_txn_destroy(&t);

    /* 129 compares, and 129 failure ops, are refused the same way. */
    t = fw_etcd_txn_new();
    for (int i = 0; i < 129; i++) {
        snprintf(key, sizeof key, "/k/%d", i);
        fw_etcd_txn_compare(t, key, FW_ETCD_CMP_VERSION, FW_ETCD_CMP_EQUAL, 0);
    }
    CHECK_EQ_INT(fw_etcd_txn_compares(t), 129);
    CHECK_EQ_INT(fw_etcd_txn_commit(c, t, NULL), FW_ETOOBIG);
    fw_etcd_txn_destroy(&t);
    t = fw_etcd_txn_new();
    for (int i = 0; i < 129; i++) fw_etcd_txn_delete(t, FW_ETCD_FAILURE, "/k", true, false);
    CHECK_EQ_INT(fw_etcd_txn_commit(c, t, NULL), FW_ETOOBIG);
    fw_etcd_txn_destroy(&t);

    /* 100 ops of 16 KiB: within the op limit but 1.6 MiB in all. */
    t = fw_etcd_txn_new();
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof key, "/k/%d", i);
        fw_etcd_txn_put(t, FW_ETCD_SUCCESS, key, v, 16 * 1024, 0, false);
    }
    CHECK(fw_etcd_txn_bytes(t) > 1600000);
    CHECK_EQ_INT(fw_etcd_txn_commit(c, t, NULL), FW_ETOOBIG);
    CHECK(strstr(fw_err_detail(), "--max-request-bytes") != NULL);
    fw_etcd_txn_destroy(&t);

    /* Exactly 128 ops of small values is within both limits: it is sent
     * (and times out, nobody answers), so the limit is not off by one. */
    t = fw_etcd_txn_new();
    for (int i = 0; i < 128; i++) {
        snprintf(key, sizeof key, "/k/%d", i);
        fw_etcd_txn_put(t, FW_ETCD_SUCCESS, key, "v", 1, 0, false);
    }
    CHECK_EQ_INT(s_connections(lfd), 0); /* nothing sent by any refused call */
    rc = fw_etcd_txn_commit(c, t, NULL);
    CHECKF(rc == FW_ETIMEDOUT || rc == FW_EUNAVAIL, "rc %d (%s)", rc, fw_err_detail());
    CHECK(s_connections(lfd) >= 1);
    fw_etcd_txn_destroy(&t);

    /* A larger limit in opts (a cluster run with a bigger
     * --max-request-bytes) lets the 1.6 MiB put through to the network. */
    fw_etcd_opts big_o = {.endpoints = ep, .timeout_ms = 200, .max_request_bytes = 4 << 20};
    fw_etcd *c2 = fw_etcd_new(&big_o);
    rc = fw_etcd_put(c2, "/big", v, big, 0, NULL, NULL);
    CHECK(rc != FW_ETOOBIG);
    fw_etcd_destroy(&c2);
    free(v);
    fw_etcd_destroy(&c);
    close(lfd);
}

static void s_txn_builder(void) {
    fw_etcd_opts o = {.endpoints = "http://127.0.0.1:1", .timeout_ms = 200};
    fw_etcd *c = fw_etcd_new(&o);
    REQUIRE(c != NULL);
    /* A failed add poisons the txn: committing it without that op would be
     * worse than not committing. */
    fw_etcd_txn *t = fw_etcd_txn_new();
    CHECK_EQ_INT(fw_etcd_txn_put(t, FW_ETCD_SUCCESS, "/a", "1", 1, 0, false), 0);
    CHECK_EQ_INT(fw_etcd_txn_put(t, FW_ETCD_SUCCESS, "", "1", 1, 0, false), FW_EINVAL);
    CHECK_EQ_INT(fw_etcd_txn_put(t, FW_ETCD_SUCCESS, "/b", "1", 1, 0, false), FW_EINVAL);
    CHECK_EQ_INT(fw_etcd_txn_commit(c, t, NULL), FW_ESTATE);
    CHECK(strstr(fw_err_detail(), "building it failed") != NULL);
    fw_etcd_txn_destroy(&t);

    t = fw_etcd_txn_new();
    CHECK_EQ_INT(fw_etcd_txn_compare(t, "/a", FW_ETCD_CMP_VALUE, FW_ETCD_CMP_EQUAL, 1), FW_EINVAL);
    fw_etcd_txn_destroy(&t);
    t = fw_etcd_txn_new();
    CHECK_EQ_INT(fw_etcd_txn_compare(t, "/a", (fw_etcd_cmp_target)9, FW_ETCD_CMP_EQUAL, 1),
                 FW_EINVAL);
    fw_etcd_txn_destroy(&t);
    t = fw_etcd_txn_new();
    CHECK_EQ_INT(fw_etcd_txn_put(t, (fw_etcd_branch)5, "/a", "1", 1, 0, false), FW_EINVAL);
    fw_etcd_txn_destroy(&t);

    /* A guarded txn counts its guard: one compare and one failure op. */
    t = fw_etcd_txn_new_guarded("/e/1", 42);
    REQUIRE(t != NULL);
    CHECK_EQ_INT(fw_etcd_txn_compares(t), 1);
    CHECK_EQ_INT(fw_etcd_txn_ops(t, FW_ETCD_FAILURE), 1);
    CHECK_EQ_INT(fw_etcd_txn_ops(t, FW_ETCD_SUCCESS), 0);
    fw_etcd_txn_destroy(&t);
    CHECK(fw_etcd_txn_new_guarded("/e/1", 0) == NULL);
    CHECK(fw_etcd_txn_new_guarded(NULL, 3) == NULL);

    /* Argument errors never touch the network. */
    fw_etcd_kvs *kvs = NULL;
    CHECK_EQ_INT(fw_etcd_range(c, "", NULL, &kvs), FW_EINVAL);
    CHECK_EQ_INT(fw_etcd_put(c, "", "x", 1, 0, NULL, NULL), FW_EINVAL);
    CHECK_EQ_INT(fw_etcd_lease_grant(c, 0, 0, NULL, NULL), FW_EINVAL);
    CHECK_EQ_INT(fw_etcd_lease_keepalive(c, 0, NULL), FW_EINVAL);
    CHECK_EQ_INT(fw_etcd_compact(c, 0, false), FW_EINVAL);
    fw_etcd_range_opts bad = {.sort_order = (fw_etcd_sort_order)7};
    CHECK_EQ_INT(fw_etcd_range(c, "/a", &bad, &kvs), FW_EINVAL);
    fw_etcd_election *e = NULL;
    CHECK_EQ_INT(fw_etcd_campaign_start(c, "/el", "v", 1, 0, &e), FW_EINVAL);
    CHECK(e == NULL);
    fw_etcd_destroy(&c);
}

static void s_unreachable(void) {
    /* Two closed ports: every call fails over between them until its
     * deadline, then names both in the detail. */
    int p1 = fw_test_free_port(), p2 = fw_test_free_port();
    char eps[128];
    snprintf(eps, sizeof eps, "http://127.0.0.1:%d,http://127.0.0.1:%d", p1, p2);
    fw_etcd_opts o = {.endpoints = eps, .timeout_ms = 300};
    fw_etcd *c = fw_etcd_new(&o);
    REQUIRE(c != NULL);
    int64_t t0 = fw_mono_ms();
    fw_etcd_kv *kv = NULL;
    int rc = fw_etcd_get(c, "/x", &kv);
    int64_t took = fw_mono_ms() - t0;
    CHECK_EQ_INT(rc, FW_EUNAVAIL);
    CHECK(kv == NULL);
    CHECKF(took >= 250 && took < 1500, "took %lld ms", (long long)took);
    char want[64];
    snprintf(want, sizeof want, "127.0.0.1:%d", p1);
    CHECKF(strstr(fw_err_detail(), want) != NULL, "detail: %s", fw_err_detail());
    snprintf(want, sizeof want, "127.0.0.1:%d", p2);
    CHECKF(strstr(fw_err_detail(), want) != NULL, "detail: %s", fw_err_detail());
    CHECK(strstr(fw_err_detail(), "no endpoint answered") != NULL);

    /* Nothing was sent, so even a write fails over and reports EUNAVAIL. */
    CHECK_EQ_INT(fw_etcd_put(c, "/x", "1", 1, 0, NULL, NULL), FW_EUNAVAIL);

    /* A watch that cannot be created says so within the timeout. */
    t0 = fw_mono_ms();
    fw_etcd_watch *w = fw_etcd_watch_new(c, "/x", NULL);
    CHECK(w == NULL);
    CHECK(fw_mono_ms() - t0 < 2000);
    CHECK(strstr(fw_err_detail(), "not created") != NULL);
    fw_etcd_destroy(&c);
}

static void s_not_etcd(void) {
    /* Something that is not etcd answers: a clear FW_EPROTO, no crash. */
    int port = 0, lfd = s_listen(&port);
    REQUIRE(lfd >= 0);
    pid_t pid = fork();
    if (pid == 0) {
        fcntl(lfd, F_SETFL, 0);
        int cfd = accept(lfd, NULL, NULL);
        char buf[4096];
        (void)!read(cfd, buf, sizeof buf);
        const char *r = "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nNot Found";
        (void)!write(cfd, r, strlen(r));
        usleep(100000);
        _exit(0);
    }
    char ep[64];
    snprintf(ep, sizeof ep, "http://127.0.0.1:%d", port);
    fw_etcd_opts o = {.endpoints = ep, .timeout_ms = 2000};
    fw_etcd *c = fw_etcd_new(&o);
    fw_etcd_kv *kv = NULL;
    CHECK_EQ_INT(fw_etcd_get(c, "/x", &kv), FW_EPROTO);
    CHECK(strstr(fw_err_detail(), "not an etcd") != NULL);
    fw_etcd_destroy(&c);
    close(lfd);
    waitpid(pid, NULL, 0);
}

int main(void) {
    RUN(s_bad_endpoints);
    RUN(s_limits);
    RUN(s_txn_builder);
    RUN(s_unreachable);
    RUN(s_not_etcd);
    return fw_test_summary();
}
