/* fw_msg_send / fw_msg_recv over real ZeroMQ sockets (inproc): DEALER to
 * ROUTER with the identity frame, the reply routed back, a garbage frame
 * answered by identity, an extra frame drained without desynchronising the
 * socket, and a receive timeout. */
#include "fw_err.h"
#include "fw_proto.h"
#include "fw_test.h"

#include <czmq.h>

static void test_router_dealer(void) {
    zsock_t *router = zsock_new_router("inproc://proto-rd");
    zsock_t *dealer = zsock_new_dealer(">inproc://proto-rd");
    REQUIRE(router && dealer);
    zsock_set_rcvtimeo(router, 2000);
    zsock_set_rcvtimeo(dealer, 2000);

    fw_msg_t *req = fw_proto_example(FW_MSG_JOB_SUBMIT, true, 4);
    REQUIRE(req);
    fw_msg_set_request_id(req, 77);
    CHECK(fw_msg_send(dealer, NULL, req) == 0);

    zframe_t *id = NULL;
    fw_msg_t *got = NULL;
    CHECK(fw_msg_recv(router, &id, &got) == 0);
    REQUIRE(id && got);
    CHECK(fw_msg_equal(req, got));

    fw_msg_t *rep = fw_msg_new_reply(got, FW_MSG_JOB_SUBMITTED);
    fw_msg_set_str(rep, "job_id", "job-1");
    CHECK(fw_msg_send(router, id, rep) == 0);
    fw_msg_t *back = NULL;
    CHECK(fw_msg_recv(dealer, NULL, &back) == 0);
    CHECK(back && fw_msg_id(back) == FW_MSG_JOB_SUBMITTED && fw_msg_request_id(back) == 77);
    CHECK(back && strcmp(fw_msg_get_str(back, "job_id"), "job-1") == 0);
    fw_msg_destroy(&back);
    fw_msg_destroy(&rep);
    fw_msg_destroy(&got);
    zframe_destroy(&id);

    /* Garbage: the ROUTER still learns who sent it, to answer with ERROR. */
    zstr_send(dealer, "not a flywheel frame");
    int rc = fw_msg_recv(router, &id, &got);
    CHECK(rc == FW_EPROTO && got == NULL && id != NULL);
    CHECK(strstr(fw_err_detail(), "bad magic") != NULL);
    fw_msg_t *err = fw_msg_new_error(NULL, rc, "%s", fw_err_detail());
    CHECK(fw_msg_send(router, id, err) == 0);
    CHECK(fw_msg_recv(dealer, NULL, &back) == 0 && back && fw_msg_id(back) == FW_MSG_ERROR);
    CHECK(back && fw_msg_get_int(back, "code") == FW_EPROTO);
    fw_msg_destroy(&back);
    fw_msg_destroy(&err);
    zframe_destroy(&id);

    /* Two frames where one is expected: rejected, and the next message is fine. */
    zstr_sendm(dealer, "part 1");
    zstr_send(dealer, "part 2");
    CHECK(fw_msg_recv(router, &id, &got) == FW_EPROTO && got == NULL);
    zframe_destroy(&id);
    CHECK(fw_msg_send(dealer, NULL, req) == 0);
    CHECK(fw_msg_recv(router, &id, &got) == 0 && fw_msg_equal(req, got));
    fw_msg_destroy(&got);
    zframe_destroy(&id);

    /* Nothing to receive: a timeout, not a hang. */
    zsock_set_rcvtimeo(router, 50);
    CHECK(fw_msg_recv(router, &id, &got) == FW_ETIMEDOUT && got == NULL && id == NULL);

    /* A message that cannot be encoded is not sent. */
    fw_msg_t *bad = fw_msg_new(FW_MSG_TASK_ASSIGN);
    CHECK(fw_msg_send(dealer, NULL, bad) == FW_EINVAL);
    fw_msg_destroy(&bad);

    fw_msg_destroy(&req);
    zsock_destroy(&dealer);
    zsock_destroy(&router);
}

static void test_pair_many(void) {
    zsock_t *a = zsock_new_pair("@inproc://proto-pair");
    zsock_t *b = zsock_new_pair(">inproc://proto-pair");
    REQUIRE(a && b);
    zsock_set_rcvtimeo(b, 2000);
    int n = fw_proto_msg_count(), same = 0;
    for (int i = 0; i < n; i++) {
        fw_msg_t *m = fw_proto_example(fw_proto_msg_at(i)->id, true, (uint64_t)i);
        fw_msg_t *got = NULL;
        if (fw_msg_send(a, NULL, m) == 0 && fw_msg_recv(b, NULL, &got) == 0 && fw_msg_equal(m, got))
            same++;
        fw_msg_destroy(&got);
        fw_msg_destroy(&m);
    }
    CHECK_EQ_INT(same, n);
    zsock_destroy(&a);
    zsock_destroy(&b);
}

int main(void) {
    RUN(test_router_dealer);
    RUN(test_pair_many);
    return fw_test_summary();
}
