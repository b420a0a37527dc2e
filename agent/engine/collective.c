/* collective.c - collectives for data-parallel training: "single" and "ring".
 *
 * Theory of operation
 * -------------------
 * "single" is world 1: every collective returns at once (the buffer already
 * holds the answer). "ring" joins `world` processes into a ring over ZeroMQ
 * and runs the classic bandwidth-optimal ring all-reduce.
 *
 * Joining (fw_coll_new), all within timeout_ms:
 *
 *   every rank   binds a PULL socket on an ephemeral port of the local address
 *                that routes to the rendezvous host (its "data address")
 *   rank 0       binds a ROUTER on the rendezvous address tcp://HOST:PORT
 *   rank k > 0   connects a DEALER to it and sends HELLO(rank, world, data address)
 *   rank 0       once all world-1 others said HELLO, sends each the TABLE of
 *                data addresses (or REJECT with a reason, so nobody waits for
 *                nothing); then closes the ROUTER
 *   every rank   connects a PUSH socket to its successor's data address and
 *                runs one barrier around the ring, so fw_coll_new returns only
 *                when every link carries messages
 *
 * Ranks may start in any order: ZeroMQ retries the DEALER's connect until
 * rank 0 listens. A rank that never joins makes rank 0 give up at the
 * deadline (and tell the registered ranks why); the others time out.
 *
 * All-reduce of n floats, world w: the buffer is cut into w segments,
 * segment j = [n*j/w, n*(j+1)/w). Ring order is rank r -> rank r+1.
 *
 *   reduce-scatter, step s = 0..w-2: rank r sends segment (r-s) mod w and
 *       receives segment (r-s-1) mod w, which it sets to received + own.
 *       Segment j is therefore summed in the FIXED order
 *           ((x_j + x_{j+1}) + x_{j+2}) + ... + x_{j-1}     (indices mod w)
 *       and ends complete on rank j-1.
 *   all-gather, step s = 0..w-2: rank r sends segment (r+1-s) mod w and
 *       receives segment (r-s) mod w, which it overwrites.
 *
 * ZeRO-1 uses the two phases on their own: fw_coll_reduce_scatter_sum
 * leaves rank r with segment (r+1) mod w summed (fw_coll_shard names it),
 * and fw_coll_allgather is the second phase, starting from that segment.
 *
 * The order depends only on w and the element's segment, never on timing or
 * on the chunk size, so results are bitwise identical on every rank (each
 * finished segment is computed once and copied) and from run to run.
 *
 * Messages are two frames: a 24-byte header (magic, op, aux, seq, idx,
 * total) and at most FW_COLL_CHUNK_BYTES of payload, so a 500 MB buffer
 * needs no temporary copy of itself: a rank keeps at most FW_COLL_WINDOW
 * chunks in flight ahead of what it has received. The header lets a rank
 * notice a peer that called a different collective (op, root, size or
 * sequence differ) and fail with FW_EPROTO instead of summing garbage.
 *
 * Failure: every send and receive waits at most timeout_ms, so a dead or
 * stuck peer gives FW_ETIMEDOUT, never a hang. After any failure inside a
 * collective the ring's message stream is out of step; the group is marked
 * broken and every later call returns FW_ESTATE. The caller tears the group
 * down and rejoins (the control plane restarts the job from a checkpoint).
 *
 * Deadlock freedom of the windowed steps: a rank sends chunk k only after
 * receiving chunk k-FW_COLL_WINDOW, and a pipe holds SNDHWM + RCVHWM >
 * FW_COLL_WINDOW messages, so not every rank can be blocked sending at once.
 * Not thread-safe: one thread per fw_coll. */
#include "collective.h"
#include "collective_nccl.h"

#include "fw_err.h"
#include "fw_log.h"
#include "fw_time.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zmq.h>

/* 256 KiB chunks: big enough that the per-message cost (header, malloc, a
 * wakeup of the I/O thread) is small next to the copy, small enough that
 * the window below keeps only about a MiB in flight per rank. Measured on
 * loopback (bench_collective): 256 KiB..1 MiB are within noise of each
 * other, 4 MiB is ~15% slower (less overlap of send and receive). */
#define FW_COLL_CHUNK_BYTES ((size_t)1 << 18)
#define FW_COLL_WINDOW      4
#define FW_COLL_HWM         16
#define FW_COLL_MAGIC       0x31435746u /* "FWC1" little-endian */
#define FW_COLL_HDR_BYTES   24
#define FW_COLL_ADDR_MAX    256
#define FW_COLL_WORLD_MAX   4096

enum { S_SINGLE = 1, S_RING = 2 };

/* Message ops (header field). Never renumber: peers of one build talk, but
 * a stale binary in the group should fail loudly. */
enum {
    S_OP_HELLO = 1,
    S_OP_TABLE = 2,
    S_OP_REJECT = 3,
    S_OP_ALLREDUCE = 4,
    S_OP_BROADCAST = 5,
    S_OP_BARRIER = 6,
    S_OP_RSCATTER = 7,
    S_OP_AGATHER = 8,
};

typedef struct {
    uint32_t magic;
    uint16_t op;
    uint16_t aux;   /* broadcast root, HELLO rank */
    uint32_t seq;   /* collective number, the same on every rank */
    uint32_t idx;   /* message number within the collective */
    uint64_t total; /* n floats or bytes: both sides must agree */
} s_hdr;

struct fw_coll {
    int kind;
    int rank;
    int world;
    int timeout_ms;
    int broken; /* an earlier collective failed mid-way */
    char broken_why[160];
    uint32_t seq;
    uint32_t tx_idx, rx_idx;
    void *ctx;
    void *tx; /* PUSH to rank+1 */
    void *rx; /* PULL from rank-1 */
    char self_addr[FW_COLL_ADDR_MAX];
    /* Backend "nccl" (collective_nccl.c): the ring above only carries the
     * rendezvous (NCCL's unique id) and barriers; all-reduce and broadcast
     * of device buffers go to NCCL. NULL for "single" and "ring". */
    fw_nccl *nccl;
};

static const char *s_op_name(int op) {
    switch (op) {
    case S_OP_HELLO:
        return "hello";
    case S_OP_TABLE:
        return "table";
    case S_OP_REJECT:
        return "reject";
    case S_OP_ALLREDUCE:
        return "allreduce";
    case S_OP_BROADCAST:
        return "broadcast";
    case S_OP_BARRIER:
        return "barrier";
    case S_OP_RSCATTER:
        return "reduce-scatter";
    case S_OP_AGATHER:
        return "all-gather";
    }
    return "unknown";
}

/* ---- wire helpers ---------------------------------------------------- */

static void s_hdr_pack(const s_hdr *h, unsigned char *p) {
    /* Explicit little-endian so the wire format does not depend on the host. */
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(h->magic >> (8 * i));
    p[4] = (unsigned char)h->op, p[5] = (unsigned char)(h->op >> 8);
    p[6] = (unsigned char)h->aux, p[7] = (unsigned char)(h->aux >> 8);
    for (int i = 0; i < 4; i++) p[8 + i] = (unsigned char)(h->seq >> (8 * i));
    for (int i = 0; i < 4; i++) p[12 + i] = (unsigned char)(h->idx >> (8 * i));
    for (int i = 0; i < 8; i++) p[16 + i] = (unsigned char)(h->total >> (8 * i));
}

static void s_hdr_unpack(const unsigned char *p, s_hdr *h) {
    h->magic = 0, h->seq = 0, h->idx = 0, h->total = 0;
    for (int i = 0; i < 4; i++) h->magic |= (uint32_t)p[i] << (8 * i);
    h->op = (uint16_t)(p[4] | p[5] << 8);
    h->aux = (uint16_t)(p[6] | p[7] << 8);
    for (int i = 0; i < 4; i++) h->seq |= (uint32_t)p[8 + i] << (8 * i);
    for (int i = 0; i < 4; i++) h->idx |= (uint32_t)p[12 + i] << (8 * i);
    for (int i = 0; i < 8; i++) h->total |= (uint64_t)p[16 + i] << (8 * i);
}

static int s_set_int(void *sock, int opt, int v) {
    return zmq_setsockopt(sock, opt, &v, sizeof v);
}

/* Send header + payload as one two-frame message; retries on EINTR. */
static int s_send2(void *sock, const s_hdr *h, const void *data, size_t len, const char *what) {
    unsigned char hb[FW_COLL_HDR_BYTES];
    s_hdr_pack(h, hb);
    while (zmq_send(sock, hb, sizeof hb, ZMQ_SNDMORE) < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) return fw_err_set(FW_ETIMEDOUT, "%s: send timed out", what);
        return fw_err_set(FW_EIO, "%s: send: %s", what, zmq_strerror(errno));
    }
    /* Once the first frame is accepted ZeroMQ takes the rest of the message
     * without blocking on the high-water mark. */
    while (zmq_send(sock, data, len, 0) < 0) {
        if (errno == EINTR) continue;
        return fw_err_set(FW_EIO, "%s: send payload: %s", what, zmq_strerror(errno));
    }
    return 0;
}

/* Receive a two-frame message: header into *h, payload into *payload (an
 * initialised zmq_msg_t the caller closes). Skips nothing: a message of the
 * wrong shape is FW_EPROTO. */
static int s_recv2(void *sock, s_hdr *h, zmq_msg_t *payload, const char *what) {
    zmq_msg_t hm;
    zmq_msg_init(&hm);
    while (zmq_msg_recv(&hm, sock, 0) < 0) {
        if (errno == EINTR) continue;
        zmq_msg_close(&hm);
        if (errno == EAGAIN) return fw_err_set(FW_ETIMEDOUT, "%s: nothing received", what);
        return fw_err_set(FW_EIO, "%s: recv: %s", what, zmq_strerror(errno));
    }
    int more = zmq_msg_more(&hm);
    int ok = zmq_msg_size(&hm) == FW_COLL_HDR_BYTES;
    if (ok) s_hdr_unpack(zmq_msg_data(&hm), h);
    zmq_msg_close(&hm);
    if (!more) return fw_err_set(FW_EPROTO, "%s: single-frame message", what);
    while (zmq_msg_recv(payload, sock, 0) < 0) {
        if (errno == EINTR) continue;
        return fw_err_set(FW_EIO, "%s: recv payload: %s", what, zmq_strerror(errno));
    }
    if (zmq_msg_more(payload)) {
        /* Drain the rest so the socket stays usable for the error path. */
        zmq_msg_t x;
        zmq_msg_init(&x);
        while (zmq_msg_more(payload) || zmq_msg_more(&x)) {
            if (zmq_msg_recv(&x, sock, ZMQ_DONTWAIT) < 0) break;
        }
        zmq_msg_close(&x);
        return fw_err_set(FW_EPROTO, "%s: message with extra frames", what);
    }
    if (!ok || h->magic != FW_COLL_MAGIC)
        return fw_err_set(FW_EPROTO, "%s: bad header (not a Flywheel collective peer?)", what);
    return 0;
}

/* ---- address helpers ------------------------------------------------- */

/* Split "tcp://HOST:PORT" into host (brackets of an IPv6 literal removed)
 * and port. */
static int s_parse_endpoint(const char *ep, char *host, size_t hostsz, int *port) {
    if (!ep || strncmp(ep, "tcp://", 6) != 0)
        return fw_err_set(FW_EINVAL, "rendezvous \"%s\": expected tcp://HOST:PORT", ep ? ep : "");
    const char *h = ep + 6;
    const char *colon = strrchr(h, ':');
    if (!colon || colon == h)
        return fw_err_set(FW_EINVAL, "rendezvous \"%s\": expected tcp://HOST:PORT", ep);
    size_t hl = (size_t)(colon - h);
    if (h[0] == '[') {
        if (hl < 3 || h[hl - 1] != ']')
            return fw_err_set(FW_EINVAL, "rendezvous \"%s\": bad IPv6 literal", ep);
        h++, hl -= 2;
    }
    if (hl >= hostsz || hl == 0) return fw_err_set(FW_EINVAL, "rendezvous \"%s\": bad host", ep);
    memcpy(host, h, hl);
    host[hl] = '\0';
    char *end = NULL;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno || !end || *end || end == colon + 1 || p < 1 || p > 65535)
        return fw_err_set(FW_EINVAL, "rendezvous \"%s\": port must be 1..65535", ep);
    *port = (int)p;
    return 0;
}

/* The local address the kernel would use to reach host:port, as text. A UDP
 * connect() sends nothing; it only asks the routing table. This is the
 * address peers can reach us on without any interface configuration. */
static int s_local_addr_towards(const char *host, int port, char *out, size_t outsz, int *ipv6) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_DGRAM};
    struct addrinfo *res = NULL;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int gai = getaddrinfo(host, ps, &hints, &res);
    if (gai != 0)
        return fw_err_set(FW_EINVAL, "rendezvous host \"%s\": %s", host, gai_strerror(gai));
    int rc = fw_err_set(FW_EIO, "rendezvous host \"%s\": no route", host);
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0) continue;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
            getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
            const void *a = ss.ss_family == AF_INET6
                                ? (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr
                                : (const void *)&((struct sockaddr_in *)&ss)->sin_addr;
            if (inet_ntop(ss.ss_family, a, out, (socklen_t)outsz)) {
                *ipv6 = ss.ss_family == AF_INET6;
                rc = 0;
            }
        }
        close(fd);
        if (rc == 0) break;
    }
    freeaddrinfo(res);
    return rc;
}

/* ---- lifecycle ------------------------------------------------------- */

static void s_close_sockets(fw_coll *c, int linger_ms) {
    void **socks[] = {&c->tx, &c->rx};
    for (size_t i = 0; i < sizeof socks / sizeof socks[0]; i++) {
        if (*socks[i]) {
            s_set_int(*socks[i], ZMQ_LINGER, linger_ms);
            zmq_close(*socks[i]);
            *socks[i] = NULL;
        }
    }
}

void fw_coll_destroy(fw_coll **cp) {
    if (!cp || !*cp) return;
    fw_coll *c = *cp;
    /* A healthy group may still have our last chunks queued for the
     * successor (we return from a collective once we have received, not once
     * the successor has): let them drain, within the timeout. A broken group
     * has nobody to deliver to. */
    int linger = c->broken ? 0 : (c->timeout_ms < 5000 ? c->timeout_ms : 5000);
    fw_nccl_destroy(&c->nccl);
    s_close_sockets(c, linger);
    if (c->ctx) zmq_ctx_term(c->ctx);
    free(c);
    *cp = NULL;
}

int fw_coll_rank(const fw_coll *c) {
    return c ? c->rank : -1;
}
int fw_coll_world(const fw_coll *c) {
    return c ? c->world : 0;
}
const char *fw_coll_backend(const fw_coll *c) {
    if (!c) return "";
    if (c->nccl) return "nccl";
    return c->kind == S_SINGLE ? "single" : "ring";
}

/* A socket with the options every socket of a group shares. */
static void *s_socket(fw_coll *c, int type, int ipv6) {
    void *s = zmq_socket(c->ctx, type);
    if (!s) return NULL;
    s_set_int(s, ZMQ_LINGER, 0);
    s_set_int(s, ZMQ_SNDTIMEO, c->timeout_ms);
    s_set_int(s, ZMQ_RCVTIMEO, c->timeout_ms);
    s_set_int(s, ZMQ_SNDHWM, FW_COLL_HWM);
    s_set_int(s, ZMQ_RCVHWM, FW_COLL_HWM);
    /* Ranks start in any order: retry a connect to a not-yet-listening peer
     * every 20 ms (default 100) so a group forms as soon as the last rank is up. */
    s_set_int(s, ZMQ_RECONNECT_IVL, 20);
    if (ipv6) s_set_int(s, ZMQ_IPV6, 1);
    return s;
}

/* Rank 0's half of the rendezvous: collect HELLOs until every rank has
 * spoken or the deadline passes, then answer everyone. */
static int s_join_root(fw_coll *c, const char *rendezvous, int ipv6, int64_t deadline,
                       char (*addrs)[FW_COLL_ADDR_MAX]) {
    int rc = 0;
    void *router = s_socket(c, ZMQ_ROUTER, ipv6);
    if (!router) return fw_err_set(FW_EIO, "zmq_socket: %s", zmq_strerror(errno));
    s_set_int(router, ZMQ_ROUTER_MANDATORY, 1);
    unsigned char(*ids)[256] = calloc((size_t)c->world, sizeof *ids);
    size_t *idlen = calloc((size_t)c->world, sizeof *idlen);
    if (!ids || !idlen) {
        rc = fw_err_set(FW_ENOMEM, "join: out of memory");
        goto done;
    }
    if (zmq_bind(router, rendezvous) != 0) {
        rc = fw_err_set(FW_EIO, "rank 0: bind rendezvous %s: %s", rendezvous, zmq_strerror(errno));
        goto done;
    }
    char reject[200] = "";
    int joined = 1; /* rank 0 itself */
    while (joined < c->world && !reject[0]) {
        int64_t left = fw_remaining_ms(deadline);
        if (left <= 0) break;
        zmq_pollitem_t pi = {.socket = router, .events = ZMQ_POLLIN};
        int n = zmq_poll(&pi, 1, (long)left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) continue;
        zmq_msg_t idm, hm, am;
        zmq_msg_init(&idm), zmq_msg_init(&hm), zmq_msg_init(&am);
        int parts = 0;
        if (zmq_msg_recv(&idm, router, ZMQ_DONTWAIT) >= 0) {
            parts = 1;
            if (zmq_msg_more(&idm) && zmq_msg_recv(&hm, router, ZMQ_DONTWAIT) >= 0) parts = 2;
            if (parts == 2 && zmq_msg_more(&hm) && zmq_msg_recv(&am, router, ZMQ_DONTWAIT) >= 0)
                parts = 3;
        }
        s_hdr h = {0};
        if (parts == 3 && zmq_msg_size(&hm) == FW_COLL_HDR_BYTES)
            s_hdr_unpack(zmq_msg_data(&hm), &h);
        size_t alen = zmq_msg_size(&am);
        if (parts == 3 && h.magic == FW_COLL_MAGIC && h.op == S_OP_HELLO && !zmq_msg_more(&am) &&
            alen > 0 && alen < FW_COLL_ADDR_MAX && zmq_msg_size(&idm) <= 256) {
            int r = h.aux;
            if (h.total != (uint64_t)c->world) {
                snprintf(reject, sizeof reject, "rank %d says world %llu, rank 0 says %d", r,
                         (unsigned long long)h.total, c->world);
            } else if (r <= 0 || r >= c->world) {
                snprintf(reject, sizeof reject, "a peer claims rank %d of world %d", r, c->world);
            } else {
                /* A rank that says HELLO twice (restarted) is taken at its
                 * latest address. */
                if (!idlen[r]) joined++;
                idlen[r] = zmq_msg_size(&idm);
                memcpy(ids[r], zmq_msg_data(&idm), idlen[r]);
                memcpy(addrs[r], zmq_msg_data(&am), alen);
                addrs[r][alen] = '\0';
            }
        } else {
            fw_warn("event=coll-bad-hello rank=0 parts=%d", parts);
        }
        zmq_msg_close(&idm), zmq_msg_close(&hm), zmq_msg_close(&am);
    }
    if (!reject[0] && joined < c->world) {
        char missing[120] = "";
        size_t off = 0;
        for (int r = 1; r < c->world && off + 12 < sizeof missing; r++)
            if (!idlen[r]) off += (size_t)snprintf(missing + off, sizeof missing - off, " %d", r);
        snprintf(reject, sizeof reject, "timed out after %d ms: %d of %d ranks joined; missing:%s",
                 c->timeout_ms, joined, c->world, missing);
        rc = fw_err_set(FW_ETIMEDOUT, "rank 0: %s", reject);
    } else if (reject[0]) {
        rc = fw_err_set(FW_EINVAL, "rank 0: %s", reject);
    }
    /* Answer every registered rank: the table, or the reason we gave up. */
    size_t tlen = 0;
    char *table = NULL;
    if (!reject[0]) {
        table = malloc((size_t)c->world * FW_COLL_ADDR_MAX);
        if (!table) {
            rc = fw_err_set(FW_ENOMEM, "join: out of memory");
            snprintf(reject, sizeof reject, "rank 0 out of memory");
        } else {
            for (int r = 0; r < c->world; r++) {
                size_t l = strlen(addrs[r]) + 1;
                memcpy(table + tlen, addrs[r], l);
                tlen += l;
            }
        }
    }
    for (int r = 1; r < c->world; r++) {
        if (!idlen[r]) continue;
        s_hdr h = {.magic = FW_COLL_MAGIC,
                   .op = reject[0] ? S_OP_REJECT : S_OP_TABLE,
                   .total = (uint64_t)c->world};
        unsigned char hb[FW_COLL_HDR_BYTES];
        s_hdr_pack(&h, hb);
        const void *body = reject[0] ? (const void *)reject : (const void *)table;
        size_t blen = reject[0] ? strlen(reject) + 1 : tlen;
        if (zmq_send(router, ids[r], idlen[r], ZMQ_SNDMORE) < 0 ||
            zmq_send(router, hb, sizeof hb, ZMQ_SNDMORE) < 0 ||
            zmq_send(router, body, blen, 0) < 0) {
            if (!rc)
                rc = fw_err_set(FW_EIO, "rank 0: answering rank %d: %s", r, zmq_strerror(errno));
        }
    }
    free(table);
    /* Let the answers leave before the socket goes (they are small). */
    s_set_int(router, ZMQ_LINGER, c->timeout_ms);
done:
    zmq_close(router);
    free(ids);
    free(idlen);
    return rc;
}

/* A non-zero rank's half: say HELLO, wait for the table. */
static int s_join_peer(fw_coll *c, const char *rendezvous, int ipv6, int64_t deadline,
                       char (*addrs)[FW_COLL_ADDR_MAX]) {
    int rc = 0;
    void *dealer = s_socket(c, ZMQ_DEALER, ipv6);
    if (!dealer) return fw_err_set(FW_EIO, "zmq_socket: %s", zmq_strerror(errno));
    char what[64];
    snprintf(what, sizeof what, "rank %d: join", c->rank);
    zmq_msg_t body;
    zmq_msg_init(&body);
    if (zmq_connect(dealer, rendezvous) != 0) {
        rc = fw_err_set(FW_EINVAL, "rank %d: connect %s: %s", c->rank, rendezvous,
                        zmq_strerror(errno));
        goto done;
    }
    s_hdr h = {.magic = FW_COLL_MAGIC,
               .op = S_OP_HELLO,
               .aux = (uint16_t)c->rank,
               .total = (uint64_t)c->world};
    rc = s_send2(dealer, &h, c->self_addr, strlen(c->self_addr), what);
    if (rc) goto done;
    for (;;) {
        int64_t left = fw_remaining_ms(deadline);
        zmq_pollitem_t pi = {.socket = dealer, .events = ZMQ_POLLIN};
        int n = left > 0 ? zmq_poll(&pi, 1, (long)left) : 0;
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            rc = fw_err_set(FW_ETIMEDOUT,
                            "rank %d: timed out after %d ms waiting for rank 0 at %s to list "
                            "all %d ranks",
                            c->rank, c->timeout_ms, rendezvous, c->world);
            goto done;
        }
        break;
    }
    s_hdr r;
    rc = s_recv2(dealer, &r, &body, what);
    if (rc) goto done;
    const char *p = zmq_msg_data(&body);
    size_t len = zmq_msg_size(&body);
    if (r.op == S_OP_REJECT) {
        rc = fw_err_set(len && p[len - 1] == '\0' && strstr(p, "timed out") ? FW_ETIMEDOUT
                                                                            : FW_EINVAL,
                        "rank %d: rank 0 refused the group: %.*s", c->rank, (int)len, p);
        goto done;
    }
    if (r.op != S_OP_TABLE || r.total != (uint64_t)c->world || len == 0 || p[len - 1] != '\0') {
        rc = fw_err_set(FW_EPROTO, "rank %d: bad address table from rank 0", c->rank);
        goto done;
    }
    size_t off = 0;
    for (int i = 0; i < c->world; i++) {
        size_t l = off < len ? strnlen(p + off, len - off) : 0;
        if (off >= len || l == 0 || l >= FW_COLL_ADDR_MAX || off + l >= len) {
            rc = fw_err_set(FW_EPROTO, "rank %d: address table from rank 0 is short", c->rank);
            goto done;
        }
        memcpy(addrs[i], p + off, l + 1);
        off += l + 1;
    }
done:
    zmq_msg_close(&body);
    zmq_close(dealer);
    return rc;
}

static int s_ring_barrier(fw_coll *c);

static int s_join_ring(fw_coll *c, const char *rendezvous, int timeout_ms) {
    char host[FW_COLL_ADDR_MAX], local[INET6_ADDRSTRLEN + 1];
    int port = 0, ipv6 = 0;
    int64_t t0 = fw_mono_ms(), deadline = fw_deadline_ms(timeout_ms);
    int rc = s_parse_endpoint(rendezvous, host, sizeof host, &port);
    if (!rc) rc = s_local_addr_towards(host, port, local, sizeof local, &ipv6);
    if (rc) return rc;
    char(*addrs)[FW_COLL_ADDR_MAX] = calloc((size_t)c->world, sizeof *addrs);
    if (!addrs) return fw_err_set(FW_ENOMEM, "join: out of memory");

    c->ctx = zmq_ctx_new();
    c->rx = c->ctx ? s_socket(c, ZMQ_PULL, ipv6) : NULL;
    c->tx = c->ctx ? s_socket(c, ZMQ_PUSH, ipv6) : NULL;
    if (!c->rx || !c->tx) {
        rc = fw_err_set(FW_EIO, "zmq: %s", zmq_strerror(errno));
        goto done;
    }
    char bind[FW_COLL_ADDR_MAX];
    snprintf(bind, sizeof bind, ipv6 ? "tcp://[%s]:*" : "tcp://%s:*", local);
    size_t alen = sizeof c->self_addr;
    if (zmq_bind(c->rx, bind) != 0 ||
        zmq_getsockopt(c->rx, ZMQ_LAST_ENDPOINT, c->self_addr, &alen) != 0) {
        rc = fw_err_set(FW_EIO, "rank %d: bind %s: %s", c->rank, bind, zmq_strerror(errno));
        goto done;
    }
    snprintf(addrs[c->rank], FW_COLL_ADDR_MAX, "%s", c->self_addr);
    rc = c->rank == 0 ? s_join_root(c, rendezvous, ipv6, deadline, addrs)
                      : s_join_peer(c, rendezvous, ipv6, deadline, addrs);
    if (rc) goto done;
    const char *succ = addrs[(c->rank + 1) % c->world];
    if (zmq_connect(c->tx, succ) != 0) {
        rc = fw_err_set(FW_EIO, "rank %d: connect to successor %s: %s", c->rank, succ,
                        zmq_strerror(errno));
        goto done;
    }
    rc = s_ring_barrier(c);
    if (rc) goto done;
    fw_info("event=coll-joined backend=ring rank=%d world=%d addr=%s ms=%lld", c->rank, c->world,
            c->self_addr, (long long)(fw_mono_ms() - t0));
done:
    free(addrs);
    return rc;
}

fw_coll *fw_coll_new(const char *backend, int rank, int world, const char *rendezvous,
                     int timeout_ms) {
    if (!backend) backend = "";
    if (world < 1 || world > FW_COLL_WORLD_MAX || rank < 0 || rank >= world) {
        fw_err_set(FW_EINVAL, "collective: rank %d of world %d is out of range (world 1..%d)", rank,
                   world, FW_COLL_WORLD_MAX);
        return NULL;
    }
    int kind = 0, nccl = 0;
    if (strcmp(backend, "single") == 0) {
        kind = S_SINGLE;
        if (world != 1) {
            fw_err_set(FW_EINVAL, "collective: backend single needs world 1, got %d", world);
            return NULL;
        }
    } else if (strcmp(backend, "ring") == 0) {
        kind = S_RING;
        if (timeout_ms <= 0) {
            fw_err_set(FW_EINVAL, "collective: timeout_ms must be > 0, got %d", timeout_ms);
            return NULL;
        }
    } else if (strcmp(backend, "nccl") == 0) {
        /* Joins like "ring" (the rendezvous), then hands the data to NCCL. */
        if (!fw_nccl_available()) {
            fw_err_set(FW_EUNSUPPORTED, "collective: backend nccl is not built into this engine");
            return NULL;
        }
        kind = S_RING, nccl = 1;
        if (timeout_ms <= 0) {
            fw_err_set(FW_EINVAL, "collective: timeout_ms must be > 0, got %d", timeout_ms);
            return NULL;
        }
    } else {
        fw_err_set(FW_EINVAL, "collective: unknown backend \"%s\" (single, ring, nccl)", backend);
        return NULL;
    }
    fw_coll *c = calloc(1, sizeof *c);
    if (!c) {
        fw_err_set(FW_ENOMEM, "collective: out of memory");
        return NULL;
    }
    c->kind = kind, c->rank = rank, c->world = world, c->timeout_ms = timeout_ms;
    if (kind == S_RING && world > 1 && s_join_ring(c, rendezvous, timeout_ms) != 0) {
        c->broken = 1; /* nothing to linger for */
        fw_coll_destroy(&c);
        return NULL;
    }
    if (nccl && !(c->nccl = fw_nccl_new(c, rank, world))) {
        c->broken = 1;        /* the peers fail in NCCL as well: nothing to linger for */
        fw_coll_destroy(&c); /* sets no detail: fw_nccl_new's stays */
        return NULL;
    }
    /* Joining tries addresses that may fail on the way (s_local_addr_towards):
     * a group that joined carries no stale detail. */
    fw_err_clear();
    return c;
}

/* ---- ring collectives ------------------------------------------------ */

/* Everything one collective needs to label and check its messages. */
typedef struct {
    uint16_t op;
    uint16_t aux;
    uint64_t total;
    char what[64];
} s_call;

static int s_begin(fw_coll *c, s_call *k, int op, int aux, uint64_t total) {
    if (c->broken)
        return fw_err_set(FW_ESTATE, "rank %d: collective group is broken (%s); rejoin", c->rank,
                          c->broken_why);
    c->seq++;
    c->tx_idx = c->rx_idx = 0;
    k->op = (uint16_t)op, k->aux = (uint16_t)aux, k->total = total;
    snprintf(k->what, sizeof k->what, "rank %d %s #%u", c->rank, s_op_name(op), c->seq);
    return 0;
}

static int s_fail(fw_coll *c, const s_call *k, int rc) {
    if (rc == FW_ETIMEDOUT) {
        /* Name the peer and the clock: that is what the operator needs. */
        char d[400];
        snprintf(d, sizeof d, "%s", fw_err_detail());
        fw_err_set(rc,
                   "%s (rank %d -> %d -> %d, timeout %d ms: a peer died, hangs, or called "
                   "a different collective)",
                   d, (c->rank + c->world - 1) % c->world, c->rank, (c->rank + 1) % c->world,
                   c->timeout_ms);
    }
    c->broken = 1;
    snprintf(c->broken_why, sizeof c->broken_why, "%s failed: %s", k->what, fw_strerror(rc));
    fw_warn("event=coll-failed rank=%d op=%s seq=%u err=%s", c->rank, s_op_name(k->op), c->seq,
            fw_errname(rc));
    return rc;
}

static int s_send_chunk(fw_coll *c, const s_call *k, const void *data, size_t len) {
    s_hdr h = {.magic = FW_COLL_MAGIC,
               .op = k->op,
               .aux = k->aux,
               .seq = c->seq,
               .idx = c->tx_idx++,
               .total = k->total};
    return s_send2(c->tx, &h, data, len, k->what);
}

/* Receive the next chunk from the predecessor and check it is the one we
 * expect: same collective, same sequence number, next index, right size. */
static int s_recv_chunk(fw_coll *c, const s_call *k, zmq_msg_t *m, size_t len) {
    s_hdr h;
    int rc = s_recv2(c->rx, &h, m, k->what);
    if (rc) return rc;
    uint32_t want = c->rx_idx++;
    if (h.op != k->op || h.aux != k->aux || h.seq != c->seq || h.total != k->total)
        return fw_err_set(FW_EPROTO,
                          "%s: predecessor is in %s #%u (aux %u, size %llu), we are in %s "
                          "(aux %u, size %llu): ranks called different collectives",
                          k->what, s_op_name(h.op), h.seq, h.aux, (unsigned long long)h.total,
                          s_op_name(k->op), k->aux, (unsigned long long)k->total);
    if (h.idx != want || zmq_msg_size(m) != len)
        return fw_err_set(FW_EPROTO, "%s: message %u of %zu bytes, expected %u of %zu", k->what,
                          h.idx, zmq_msg_size(m), want, len);
    return 0;
}

/* dst[i] = src[i] + dst[i]. src comes from a ZeroMQ buffer of unknown
 * alignment, hence memcpy loads (the compiler turns them into vector loads). */
static void s_add_from(float *dst, const unsigned char *src, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v;
        memcpy(&v, src + 4 * i, sizeof v);
        dst[i] = v + dst[i];
    }
}

static size_t s_seg_lo(size_t n, int w, int j) {
    return (size_t)(((unsigned __int128)n * (unsigned)j) / (unsigned)w);
}

/* One ring step: send floats [slo, slo+sn) to the successor while receiving
 * [rlo, rlo+rn) from the predecessor, adding (reduce) or copying. */
static int s_step(fw_coll *c, const s_call *k, float *buf, size_t slo, size_t sn, size_t rlo,
                  size_t rn, int reduce) {
    const size_t ce = FW_COLL_CHUNK_BYTES / sizeof(float);
    size_t ns = (sn + ce - 1) / ce, nr = (rn + ce - 1) / ce, si = 0, ri = 0;
    while (si < ns || ri < nr) {
        while (si < ns && (ri >= nr || si < ri + FW_COLL_WINDOW)) {
            size_t off = si * ce, len = sn - off < ce ? sn - off : ce;
            int rc = s_send_chunk(c, k, buf + slo + off, len * sizeof(float));
            if (rc) return rc;
            si++;
        }
        if (ri < nr) {
            size_t off = ri * ce, len = rn - off < ce ? rn - off : ce;
            zmq_msg_t m;
            zmq_msg_init(&m);
            int rc = s_recv_chunk(c, k, &m, len * sizeof(float));
            if (!rc) {
                if (reduce)
                    s_add_from(buf + rlo + off, zmq_msg_data(&m), len);
                else
                    memcpy(buf + rlo + off, zmq_msg_data(&m), len * sizeof(float));
            }
            zmq_msg_close(&m);
            if (rc) return rc;
            ri++;
        }
    }
    return 0;
}

/* The two phases of the ring all-reduce (header comment). After the
 * reduce-scatter rank r holds the finished segment (r+1) mod w, which is the
 * first one it sends in the all-gather. */
static int s_ring_phase(fw_coll *c, const s_call *k, float *buf, size_t n, int gather) {
    int w = c->world, r = c->rank, rc = 0;
    for (int s = 0; s < w - 1 && !rc; s++) {
        int sj = ((r + gather - s) % w + w) % w, rj = ((r + gather - s - 1) % w + w) % w;
        size_t slo = s_seg_lo(n, w, sj), rlo = s_seg_lo(n, w, rj);
        rc = s_step(c, k, buf, slo, s_seg_lo(n, w, sj + 1) - slo, rlo,
                    s_seg_lo(n, w, rj + 1) - rlo, !gather);
    }
    return rc;
}

/* op S_OP_ALLREDUCE / S_OP_BARRIER: both phases; S_OP_RSCATTER or
 * S_OP_AGATHER: that phase alone. */
static int s_ring_allreduce(fw_coll *c, float *buf, size_t n, int op) {
    s_call k;
    int rc = s_begin(c, &k, op, 0, n);
    if (rc) return rc;
    if (op != S_OP_AGATHER) rc = s_ring_phase(c, &k, buf, n, 0);
    if (!rc && op != S_OP_RSCATTER) rc = s_ring_phase(c, &k, buf, n, 1);
    return rc ? s_fail(c, &k, rc) : 0;
}

/* A barrier is an all-reduce of one float per rank: no rank's result can be
 * complete before every rank has contributed, and the sum checks the ring. */
static int s_ring_barrier(fw_coll *c) {
    float *v = calloc((size_t)c->world, sizeof *v);
    if (!v) return fw_err_set(FW_ENOMEM, "barrier: out of memory");
    v[c->rank] = 1.0f;
    int rc = s_ring_allreduce(c, v, (size_t)c->world, S_OP_BARRIER);
    for (int i = 0; i < c->world && !rc; i++)
        if (v[i] != 1.0f) rc = fw_err_set(FW_EPROTO, "barrier: slot %d holds %g, not 1", i, v[i]);
    free(v);
    return rc;
}

/* Broadcast down the ring root -> root+1 -> ... -> root-1, chunk by chunk,
 * each rank forwarding the very message it received (no copy). */
static int s_ring_broadcast(fw_coll *c, unsigned char *buf, size_t bytes, int root) {
    s_call k;
    int rc = s_begin(c, &k, S_OP_BROADCAST, root, bytes);
    if (rc) return rc;
    int w = c->world, d = ((c->rank - root) % w + w) % w;
    size_t ce = FW_COLL_CHUNK_BYTES;
    for (size_t off = 0; off < bytes && !rc; off += ce) {
        size_t len = bytes - off < ce ? bytes - off : ce;
        if (d == 0) {
            rc = s_send_chunk(c, &k, buf + off, len);
            continue;
        }
        zmq_msg_t m;
        zmq_msg_init(&m);
        rc = s_recv_chunk(c, &k, &m, len);
        if (!rc) memcpy(buf + off, zmq_msg_data(&m), len);
        if (!rc && d < w - 1) {
            s_hdr h = {.magic = FW_COLL_MAGIC,
                       .op = k.op,
                       .aux = k.aux,
                       .seq = c->seq,
                       .idx = c->tx_idx++,
                       .total = k.total};
            unsigned char hb[FW_COLL_HDR_BYTES];
            s_hdr_pack(&h, hb);
            while ((rc = zmq_send(c->tx, hb, sizeof hb, ZMQ_SNDMORE)) < 0 && errno == EINTR) {
            }
            if (rc < 0) {
                rc = errno == EAGAIN
                         ? fw_err_set(FW_ETIMEDOUT, "%s: send timed out", k.what)
                         : fw_err_set(FW_EIO, "%s: send: %s", k.what, zmq_strerror(errno));
            } else {
                while ((rc = zmq_msg_send(&m, c->tx, 0)) < 0 && errno == EINTR) {
                }
                rc =
                    rc < 0 ? fw_err_set(FW_EIO, "%s: forward: %s", k.what, zmq_strerror(errno)) : 0;
            }
        }
        zmq_msg_close(&m);
    }
    return rc ? s_fail(c, &k, rc) : 0;
}

/* ---- public collectives ---------------------------------------------- */

int fw_coll_allreduce_sum(fw_coll *c, float *buf, size_t n) {
    if (!c || (!buf && n)) return fw_err_set(FW_EINVAL, "allreduce: NULL group or buffer");
    /* Device buffers (a CUDA model's gradients) go through NCCL; host
     * scalars (token counts, losses) through the ring it bootstrapped on. */
    if (c->nccl && fw_nccl_is_device(buf)) return fw_nccl_allreduce_sum(c->nccl, buf, n);
    if (c->kind == S_SINGLE || c->world == 1 || n == 0) return 0;
    return s_ring_allreduce(c, buf, n, S_OP_ALLREDUCE);
}

int fw_coll_broadcast(fw_coll *c, void *buf, size_t bytes, int root) {
    if (!c || (!buf && bytes)) return fw_err_set(FW_EINVAL, "broadcast: NULL group or buffer");
    if (root < 0 || root >= c->world)
        return fw_err_set(FW_EINVAL, "broadcast: root %d of world %d", root, c->world);
    if (c->nccl && fw_nccl_is_device(buf)) return fw_nccl_broadcast(c->nccl, buf, bytes, root);
    if (c->kind == S_SINGLE || c->world == 1 || bytes == 0) return 0;
    return s_ring_broadcast(c, buf, bytes, root);
}

int fw_coll_barrier(fw_coll *c) {
    if (!c) return fw_err_set(FW_EINVAL, "barrier: NULL group");
    if (c->kind == S_SINGLE || c->world == 1) return 0;
    return s_ring_barrier(c);
}

/* ---- sharding and bucketed sync --------------------------------------- */

void fw_coll_shard(const fw_coll *c, size_t n, size_t *off, size_t *len) {
    if (!c || c->kind == S_SINGLE || c->world == 1) {
        *off = 0, *len = n;
        return;
    }
    if (c->nccl) {
        fw_nccl_shard(c->nccl, n, off, len);
        return;
    }
    int j = (c->rank + 1) % c->world; /* the segment the reduce-scatter finishes here */
    *off = s_seg_lo(n, c->world, j);
    *len = s_seg_lo(n, c->world, j + 1) - *off;
}

/* The nccl backend shards device buffers only: its partition is not the
 * ring's, so a host buffer sharded through it would land in the wrong part. */
static int s_shard_call(fw_coll *c, const float *buf, size_t n, const char *what) {
    if (!c || (!buf && n)) return fw_err_set(FW_EINVAL, "%s: NULL group or buffer", what);
    if (c->nccl && !fw_nccl_is_device(buf))
        return fw_err_set(FW_EINVAL, "%s: the nccl backend shards device buffers, %p is host memory",
                          what, (const void *)buf);
    return 0;
}

int fw_coll_reduce_scatter_sum(fw_coll *c, float *buf, size_t n) {
    int rc = s_shard_call(c, buf, n, "reduce-scatter");
    if (rc) return rc;
    if (c->nccl) return fw_nccl_reduce_scatter_sum(c->nccl, buf, n);
    if (c->kind == S_SINGLE || c->world == 1 || n == 0) return 0;
    return s_ring_allreduce(c, buf, n, S_OP_RSCATTER);
}

int fw_coll_allgather(fw_coll *c, float *buf, size_t n) {
    int rc = s_shard_call(c, buf, n, "all-gather");
    if (rc) return rc;
    if (c->nccl) return fw_nccl_allgather(c->nccl, buf, n);
    if (c->kind == S_SINGLE || c->world == 1 || n == 0) return 0;
    return s_ring_allreduce(c, buf, n, S_OP_AGATHER);
}

int fw_coll_allreduce_ranges(fw_coll *c, float *base, const size_t *offs, const size_t *lens,
                             int k, void *stream) {
    if (!c || !base || k < 0 || (k && (!offs || !lens)))
        return fw_err_set(FW_EINVAL, "allreduce ranges: NULL group, buffer or ranges");
    if (c->nccl && fw_nccl_is_device(base))
        return fw_nccl_allreduce_ranges_async(c->nccl, base, offs, lens, k, stream);
    for (int i = 0; i < k; i++) {
        int rc = fw_coll_allreduce_sum(c, base + offs[i], lens[i]);
        if (rc) return rc;
    }
    return 0;
}

int fw_coll_sync_wait(fw_coll *c, void *stream) {
    if (!c) return fw_err_set(FW_EINVAL, "sync wait: NULL group");
    return c->nccl ? fw_nccl_wait_on(c->nccl, stream) : 0;
}
