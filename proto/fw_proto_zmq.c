/* fw_proto_zmq.c - one message per ZeroMQ frame, with an optional routing id.
 *
 * Kept apart from the codec so that the codec (and its fuzz target) builds
 * without czmq. A ROUTER socket sees [identity][frame]; DEALER, PAIR, PUB and
 * the rest see [frame]. Anything else is answered with FW_EPROTO after the
 * remaining parts are drained, so one bad peer cannot desynchronise the
 * socket for the next message. */
#include "fw_proto_int.h"

#include "fw_err.h"

#include <czmq.h>
#include <errno.h>

static int s_zmq_err(const char *what) {
    int e = zmq_errno();
    if (e == EAGAIN) return fw_err_set(FW_ETIMEDOUT, "%s: timed out", what);
    if (e == EINTR) return fw_err_set(FW_ECANCELED, "%s: interrupted", what);
    if (e == EHOSTUNREACH) return fw_err_set(FW_EUNAVAIL, "%s: peer unknown to the ROUTER", what);
    if (e == ETERM || e == ENOTSOCK) return fw_err_set(FW_ECLOSED, "%s: socket closed", what);
    return fw_err_set(FW_EIO, "%s: %s", what, zmq_strerror(e));
}

int fw_msg_send(zsock_t *sock, const zframe_t *identity, const fw_msg_t *m) {
    if (!sock || !m) return fw_err_set(FW_EINVAL, "fw_msg_send: NULL argument");
    uint8_t *buf;
    size_t len;
    int rc = fw_msg_encode(m, &buf, &len);
    if (rc < 0) return rc;
    void *h = zsock_resolve(sock);
    if (identity) {
        /* zframe_data/size do not modify the frame; czmq just lacks const. */
        zframe_t *id = (zframe_t *)identity;
        if (zmq_send(h, zframe_data(id), zframe_size(id), ZMQ_SNDMORE) < 0) {
            free(buf);
            return s_zmq_err("send identity");
        }
    }
    rc = zmq_send(h, buf, len, 0) < 0 ? s_zmq_err("send") : 0;
    free(buf);
    return rc;
}

/* Drop the rest of a multipart message. */
static void s_drain(void *h) {
    int more = 0;
    size_t sz = sizeof more;
    while (zmq_getsockopt(h, ZMQ_RCVMORE, &more, &sz) == 0 && more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        int got = zmq_msg_recv(&part, h, 0);
        zmq_msg_close(&part);
        if (got < 0) break;
    }
}

int fw_msg_recv(zsock_t *sock, zframe_t **identity, fw_msg_t **msg) {
    if (!sock || !msg) return fw_err_set(FW_EINVAL, "fw_msg_recv: NULL argument");
    *msg = NULL;
    if (identity) *identity = NULL;
    void *h = zsock_resolve(sock);
    if (identity) {
        zframe_t *id = zframe_recv(sock);
        if (!id) return s_zmq_err("recv identity");
        *identity = id;
        if (!zframe_more(id))
            return fw_err_set(FW_EPROTO, "recv: a lone identity frame, no message");
    }
    zmq_msg_t part;
    zmq_msg_init(&part);
    if (zmq_msg_recv(&part, h, 0) < 0) {
        zmq_msg_close(&part);
        return s_zmq_err("recv");
    }
    int rc;
    if (zmq_msg_more(&part)) {
        s_drain(h);
        rc = fw_err_set(FW_EPROTO, "recv: more than one frame after the %s",
                        identity ? "identity" : "start (a ROUTER peer needs the identity variant)");
    } else {
        rc = fw_msg_decode(zmq_msg_data(&part), zmq_msg_size(&part), msg);
    }
    zmq_msg_close(&part);
    return rc;
}
