/* fw_etcd.h - etcd v3 client over libcurl and the JSON gateway (/v3/...).
 *
 * Theory of operation
 * -------------------
 * etcd 3.4 serves its gRPC API as JSON through grpc-gateway: every call is
 * `POST <endpoint>/v3/<service>/<method>` with a JSON body, answered with a
 * JSON object (or, for /v3/watch, a never-ending stream of newline-separated
 * `{"result":{...}}` objects). This client speaks that JSON directly, which
 * keeps Flywheel free of gRPC and protobuf.
 *
 * The JSON mapping has pitfalls that this file hides from callers:
 *   - keys and values are bytes, sent and received as base64 strings;
 *   - every 64-bit number (revision, lease id, version, count) is a JSON
 *     *string*; lease ids exceed 2^53, so they are parsed with strtoll and
 *     never pass through a double (plain JSON integers are accepted too);
 *   - fields holding their default value are omitted: a failed txn has no
 *     `succeeded`, an empty range has no `kvs` and no `count`, a PUT event
 *     has no `type`, a dead lease's keepalive has no `TTL`.
 *
 * Endpoints and failover. A client holds a list of endpoints and remembers
 * the last one that answered (the "preferred" one). A request goes to the
 * preferred endpoint first; when the connection cannot be made (refused,
 * unresolvable, connect timeout) nothing was sent, so the request moves on
 * to the next endpoint, round and round with a short backoff until the
 * request's deadline (opts.timeout_ms, which bounds the whole call). When a
 * request was sent but its answer was lost (timeout, reset), reads and other
 * idempotent calls also move on; writes (put, delete, txn, grant, compact)
 * do not, because they may have been applied: they return FW_ETIMEDOUT or
 * FW_EUNAVAIL with "outcome unknown" in the detail and the next call starts
 * at the next endpoint. Fenced txns make a blind retry safe for the caller.
 *
 * Authentication. With opts.user set, the client POSTs /v3/auth/authenticate
 * before its first request and sends the token in the `Authorization`
 * header. When etcd answers "invalid auth token" (tokens expire after
 * --auth-token-ttl), it authenticates again once and repeats the request.
 *
 * Limits. etcd refuses requests over --max-request-bytes (1.5 MiB default)
 * and txns with more than --max-txn-ops (128) compares or ops per branch.
 * Both are checked here before anything is sent, giving FW_ETOOBIG with the
 * numbers in fw_err_detail(); opts can raise them for a cluster configured
 * higher.
 *
 * Errors. Functions return 0 (or a count) on success and a negative fw_err
 * with fw_err_detail() set on failure. gRPC-gateway error bodies
 * ({"error": ..., "code": N}) map to: compacted -> FW_ECOMPACTED, lease not
 * found -> FW_ELEASE, request too large / too many ops -> FW_ETOOBIG, bad
 * password / token -> FW_EAUTH, permission denied -> FW_EPERM, unavailable
 * -> FW_EUNAVAIL, other invalid arguments -> FW_EINVAL.
 *
 * Ownership. Every struct returned through an `**out` parameter belongs to
 * the caller and is released with the matching _free() (which takes `**`,
 * is idempotent and nulls the pointer). Input strings are copied.
 *
 * Thread safety. One fw_etcd may be shared by any number of threads. A
 * mutex guards the preferred endpoint, the token and a pool of curl easy
 * handles; a call takes a handle from the pool (creating one when empty),
 * performs its HTTP request without holding the lock and puts the handle
 * back, so concurrent calls run in parallel and every handle keeps its
 * keep-alive connection between calls. A txn builder, a watch consumer and
 * an election belong to one thread at a time. Watches and elections keep a
 * pointer to their client: destroy them before the client.
 *
 * Watch. fw_etcd_watch_new() starts a thread with its own curl handle that
 * holds a streaming POST /v3/watch open and turns each event into an
 * fw_etcd_event in a bounded queue (the thread stops reading when the queue
 * is full, so etcd sees back-pressure instead of this process growing).
 * fw_etcd_watch_fd() is an eventfd that is readable while the queue holds
 * something, for zmq_poll/zloop; fw_etcd_watch_next() pops one event. When
 * the stream drops, the thread reconnects (next endpoint first) and resumes
 * at the revision after the last one delivered, so no event is lost or
 * repeated. When that revision has been compacted, the consumer receives
 * FW_ECOMPACTED once and must re-list and re-watch: fw_etcd_list_watch()
 * does both (a paged range pinned at revision R, then a watch from R+1).
 *
 * Election (lease + txn recipe, not the v3election gateway). A candidate
 * creates `<prefix>/<lease-hex>` attached to its lease; the key with the
 * lowest create_revision under the prefix leads. A waiting candidate
 * watches only the key just below its own for deletion, so a leader change
 * wakes one candidate. The leader's create_revision is its **epoch**: a
 * fencing token that only grows. fw_etcd_txn_new_guarded() builds a txn
 * whose first compare is `create_revision(key) == epoch`; once leadership
 * has moved (the key expired with its lease), every such txn fails with
 * FW_EFENCED.
 */
#ifndef FW_ETCD_H
#define FW_ETCD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* etcd 3.4 defaults for --max-request-bytes and --max-txn-ops. */
#define FW_ETCD_MAX_REQUEST_BYTES (1536 * 1024)
#define FW_ETCD_MAX_TXN_OPS       128

/* ---------------------------------------------------------------- client */

typedef struct fw_etcd fw_etcd;

typedef struct {
    const char *endpoints;    /* "http://127.0.0.1:2379,http://10.0.0.2:2379" (required) */
    int timeout_ms;           /* bound on one whole call, failover included; 0 = 5000 */
    int connect_timeout_ms;   /* bound on one connection attempt; 0 = 1000 */
    const char *user;         /* NULL: no authentication */
    const char *password;
    size_t max_request_bytes; /* 0 = FW_ETCD_MAX_REQUEST_BYTES */
    int max_txn_ops;          /* 0 = FW_ETCD_MAX_TXN_OPS */
} fw_etcd_opts;

/* A client; NULL on failure with the reason in fw_err_detail() (a malformed
 * endpoint list is FW_ECONFIG). Makes no request: an unreachable cluster
 * shows up on the first call. */
fw_etcd *fw_etcd_new(const fw_etcd_opts *opts);
void fw_etcd_destroy(fw_etcd **c);

/* Index (into opts.endpoints) of the endpoint the next call tries first. */
int fw_etcd_endpoint_index(fw_etcd *c);
int fw_etcd_endpoint_count(const fw_etcd *c);

/* POST /v3/maintenance/status to any endpoint: 0 when one answers; the
 * cluster's current revision in *rev_out (may be NULL). */
int fw_etcd_ping(fw_etcd *c, int64_t *rev_out);

/* ----------------------------------------------------------- key-values */

/* One key-value. key and value are NUL-terminated copies (etcd keys and
 * values are bytes: use the lengths when they may hold NULs). */
typedef struct {
    char *key;
    size_t key_len;
    char *value; /* "" for keys_only ranges and DELETE events */
    size_t value_len;
    int64_t create_revision;
    int64_t mod_revision;
    int64_t version;
    int64_t lease; /* 0: none */
} fw_etcd_kv;

/* The answer to a range. */
typedef struct {
    fw_etcd_kv *kvs;
    size_t n;
    int64_t count;    /* keys in the range (not only those returned) */
    bool more;        /* a limit cut the answer short */
    int64_t revision; /* store revision the range was served at */
} fw_etcd_kvs;

void fw_etcd_kv_clear(fw_etcd_kv *kv); /* frees the members of an embedded kv */
void fw_etcd_kv_free(fw_etcd_kv **kv);
void fw_etcd_kvs_free(fw_etcd_kvs **kvs);

typedef enum { FW_ETCD_SORT_NONE = 0, FW_ETCD_SORT_ASCEND, FW_ETCD_SORT_DESCEND } fw_etcd_sort_order;
typedef enum {
    FW_ETCD_SORT_KEY = 0,
    FW_ETCD_SORT_VERSION,
    FW_ETCD_SORT_CREATE,
    FW_ETCD_SORT_MOD,
    FW_ETCD_SORT_VALUE
} fw_etcd_sort_target;

/* Options of a range; a zeroed struct (or NULL) reads one key. */
typedef struct {
    bool prefix;           /* every key starting with `key` ("" = whole keyspace) */
    const char *range_end; /* explicit exclusive end; overrides prefix */
    int64_t limit;         /* 0 = no limit */
    int64_t revision;      /* 0 = current */
    bool keys_only;
    bool count_only;
    bool serializable;     /* served by the member alone, may be stale */
    fw_etcd_sort_order sort_order;
    fw_etcd_sort_target sort_target;
    int64_t min_create_revision; /* 0 = no bound */
    int64_t max_create_revision;
} fw_etcd_range_opts;

/* POST /v3/kv/range. *out is always set on success (n may be 0). */
int fw_etcd_range(fw_etcd *c, const char *key, const fw_etcd_range_opts *opts, fw_etcd_kvs **out);

/* One key: FW_ENOTFOUND when absent. */
int fw_etcd_get(fw_etcd *c, const char *key, fw_etcd_kv **out);

/* Walk every key under `prefix` in pages of page_size (0 = 1000) keys, all
 * read at one revision (`revision`, or 0 for the current one) so the walk is
 * a consistent snapshot. fn gets each page; a nonzero return stops the walk
 * and is returned. The revision used goes to *rev_out (may be NULL). */
typedef int (*fw_etcd_page_fn)(const fw_etcd_kv *kvs, size_t n, void *arg);
int fw_etcd_range_pages(fw_etcd *c, const char *prefix, int64_t page_size, int64_t revision,
                        fw_etcd_page_fn fn, void *arg, int64_t *rev_out);

/* POST /v3/kv/put. lease 0 = none. *rev_out (may be NULL) gets the revision
 * of the write; with prev_out non-NULL the previous kv is asked for and
 * stored there (NULL when the key was new). */
int fw_etcd_put(fw_etcd *c, const char *key, const void *value, size_t value_len, int64_t lease,
                int64_t *rev_out, fw_etcd_kv **prev_out);

/* POST /v3/kv/deleterange on one key or a prefix; *deleted_out (may be
 * NULL) gets how many keys went, *rev_out the revision. */
int fw_etcd_delete(fw_etcd *c, const char *key, bool prefix, int64_t *deleted_out,
                   int64_t *rev_out);

/* POST /v3/kv/compaction: forget history before `revision`. physical waits
 * until the compaction is applied to the backend. */
int fw_etcd_compact(fw_etcd *c, int64_t revision, bool physical);

/* ------------------------------------------------------------------ txn */

typedef enum {
    FW_ETCD_CMP_VERSION = 0,
    FW_ETCD_CMP_CREATE, /* create_revision; 0 when the key does not exist */
    FW_ETCD_CMP_MOD,    /* mod_revision */
    FW_ETCD_CMP_VALUE,
    FW_ETCD_CMP_LEASE
} fw_etcd_cmp_target;

typedef enum {
    FW_ETCD_CMP_EQUAL = 0,
    FW_ETCD_CMP_GREATER,
    FW_ETCD_CMP_LESS,
    FW_ETCD_CMP_NOT_EQUAL
} fw_etcd_cmp_result;

typedef enum { FW_ETCD_SUCCESS = 0, FW_ETCD_FAILURE = 1 } fw_etcd_branch;

typedef enum { FW_ETCD_OP_RANGE = 0, FW_ETCD_OP_PUT, FW_ETCD_OP_DELETE } fw_etcd_op_type;

/* The answer to one op of the branch that ran, in the order they were added. */
typedef struct {
    fw_etcd_op_type type;
    fw_etcd_kvs *range;   /* RANGE: the kvs */
    int64_t deleted;      /* DELETE: keys deleted */
    fw_etcd_kv *prev_kvs; /* PUT / DELETE with prev_kv: previous kvs (PUT: 0 or 1) */
    size_t n_prev;
} fw_etcd_op_result;

typedef struct {
    bool succeeded;       /* compares held: the success branch ran */
    bool fenced;          /* guarded txn whose guard compare failed */
    int64_t revision;     /* header revision after the txn */
    fw_etcd_op_result *ops;
    size_t n_ops;
} fw_etcd_txn_result;

void fw_etcd_txn_result_free(fw_etcd_txn_result **r);

/* A txn under construction. Adding never sends anything; an add that fails
 * (bad argument, no memory) makes the txn refuse to commit (FW_ESTATE), so
 * a caller cannot commit a txn missing an op. Limits are checked at commit. */
typedef struct fw_etcd_txn fw_etcd_txn;

fw_etcd_txn *fw_etcd_txn_new(void);

/* A txn whose first compare is create_revision(guard_key) == epoch, plus a
 * hidden failure-branch read of guard_key so that commit can tell a fence
 * from an ordinary failed compare. The hidden read is not in the result. */
fw_etcd_txn *fw_etcd_txn_new_guarded(const char *guard_key, int64_t epoch);
void fw_etcd_txn_destroy(fw_etcd_txn **t);

/* Compare a number (VERSION, CREATE, MOD, LEASE) of `key` with `value`. */
int fw_etcd_txn_compare(fw_etcd_txn *t, const char *key, fw_etcd_cmp_target target,
                        fw_etcd_cmp_result result, int64_t value);
/* Compare the value of `key` (bytewise) with val. */
int fw_etcd_txn_compare_value(fw_etcd_txn *t, const char *key, fw_etcd_cmp_result result,
                              const void *val, size_t len);
int fw_etcd_txn_put(fw_etcd_txn *t, fw_etcd_branch b, const char *key, const void *value,
                    size_t value_len, int64_t lease, bool prev_kv);
int fw_etcd_txn_delete(fw_etcd_txn *t, fw_etcd_branch b, const char *key, bool prefix,
                       bool prev_kv);
int fw_etcd_txn_range(fw_etcd_txn *t, fw_etcd_branch b, const char *key,
                      const fw_etcd_range_opts *opts);

/* Ops in a branch, compares, and the estimated request size (what etcd
 * checks against --max-request-bytes), for callers that batch up to the
 * limits. A guarded txn counts its guard compare and hidden read. */
size_t fw_etcd_txn_ops(const fw_etcd_txn *t, fw_etcd_branch b);
size_t fw_etcd_txn_compares(const fw_etcd_txn *t);
size_t fw_etcd_txn_bytes(const fw_etcd_txn *t);

/* POST /v3/kv/txn. Returns 0 when the success branch ran, FW_ECONFLICT when
 * a compare failed (the failure branch ran), FW_EFENCED when the guard of a
 * guarded txn failed, another negative fw_err when the txn did not run (or,
 * for FW_ETIMEDOUT / FW_EUNAVAIL, its outcome is unknown). In the first
 * three cases *out (may be NULL) gets the result. FW_ETOOBIG before sending
 * when a branch or the compares exceed max_txn_ops or the request exceeds
 * max_request_bytes. The txn can be committed again. */
int fw_etcd_txn_commit(fw_etcd *c, const fw_etcd_txn *t, fw_etcd_txn_result **out);

/* ---------------------------------------------------------------- lease */

/* POST /v3/lease/grant. id 0 lets etcd choose; the id granted goes to
 * *id_out and the TTL to *ttl_out (either may be NULL). */
int fw_etcd_lease_grant(fw_etcd *c, int64_t ttl_s, int64_t id, int64_t *id_out,
                        int64_t *ttl_out);
/* One keepalive (POST /v3/lease/keepalive): FW_ELEASE when the lease has
 * expired or never existed; the renewed TTL goes to *ttl_out (may be NULL). */
int fw_etcd_lease_keepalive(fw_etcd *c, int64_t id, int64_t *ttl_out);
/* POST /v3/lease/revoke: deletes the lease and its keys; FW_ELEASE if unknown. */
int fw_etcd_lease_revoke(fw_etcd *c, int64_t id);
/* POST /v3/lease/timetolive: remaining and granted TTL; FW_ELEASE if gone. */
int fw_etcd_lease_timetolive(fw_etcd *c, int64_t id, int64_t *ttl_out, int64_t *granted_out);

/* ---------------------------------------------------------------- watch */

typedef enum { FW_ETCD_EV_PUT = 0, FW_ETCD_EV_DELETE = 1 } fw_etcd_ev_type;

typedef struct {
    fw_etcd_ev_type type;
    fw_etcd_kv kv;           /* DELETE: key and mod_revision only */
    bool has_prev;           /* prev_kv was asked for and the key existed */
    fw_etcd_kv prev_kv;
    int64_t compact_revision; /* with FW_ECOMPACTED: oldest revision still kept */
} fw_etcd_event;

void fw_etcd_event_clear(fw_etcd_event *ev);

typedef struct {
    bool prefix;           /* watch every key starting with `key` */
    const char *range_end; /* explicit exclusive end; overrides prefix */
    int64_t start_revision; /* 0 = changes after the watch is created */
    bool prev_kv;
    bool no_put;           /* filter out PUT events */
    bool no_delete;        /* filter out DELETE events */
    size_t queue_max;      /* events buffered before back-pressure; 0 = 65536 */
} fw_etcd_watch_opts;

typedef struct fw_etcd_watch fw_etcd_watch;

/* Start a watch and wait (up to the client's timeout) until etcd has
 * created it, so that with start_revision 0 no later change is missed.
 * NULL on failure with fw_err_detail() set. */
fw_etcd_watch *fw_etcd_watch_new(fw_etcd *c, const char *key, const fw_etcd_watch_opts *opts);
void fw_etcd_watch_destroy(fw_etcd_watch **w);

/* An fd that is readable while events are queued (never read it yourself). */
int fw_etcd_watch_fd(const fw_etcd_watch *w);

/* Pop the next event into *ev (caller clears it with fw_etcd_event_clear).
 * Returns 1 with an event, 0 when none came within timeout_ms (0 = do not
 * wait, -1 = wait forever), FW_ECOMPACTED once when the watch could not
 * resume because its revision was compacted (ev->compact_revision set; the
 * watch is then over: re-list and re-watch), another negative fw_err when
 * etcd cancelled the watch for good, and FW_ECLOSED after that. */
int fw_etcd_watch_next(fw_etcd_watch *w, int timeout_ms, fw_etcd_event *ev);

/* The revision the watch would resume from (last delivered + 1). */
int64_t fw_etcd_watch_revision(fw_etcd_watch *w);
/* How many times the stream was re-established after a drop. */
int fw_etcd_watch_reconnects(fw_etcd_watch *w);

/* List every key under `prefix` (paged, at one revision R) into *list and
 * start a watch on the prefix from R+1 into *w: the pattern every consumer
 * of etcd state uses. opts may be NULL (prefix and start_revision are set
 * here). On failure neither output is set. */
int fw_etcd_list_watch(fw_etcd *c, const char *prefix, const fw_etcd_watch_opts *opts,
                       fw_etcd_kvs **list, fw_etcd_watch **w);

/* ------------------------------------------------------------- election */

typedef struct fw_etcd_election fw_etcd_election;

/* Join the election under `prefix`: create `<prefix>/<lease-hex>` holding
 * value, attached to `lease` (an existing key of the same lease is reused,
 * its value updated). Does not wait. */
int fw_etcd_campaign_start(fw_etcd *c, const char *prefix, const void *value, size_t value_len,
                           int64_t lease, fw_etcd_election **out);

/* Wait up to timeout_ms (0 = check only, -1 = forever) to lead: 0 once this
 * candidate's key has the lowest create_revision, FW_ETIMEDOUT if not yet,
 * FW_ELEASE when its key is gone (lease expired or revoked: start again). */
int fw_etcd_campaign_wait(fw_etcd_election *e, int timeout_ms);

/* campaign_start + campaign_wait. *out is set on success and on
 * FW_ETIMEDOUT (so the caller can keep waiting); on any other error it is
 * NULL (the key may remain in etcd until its lease goes). */
int fw_etcd_campaign(fw_etcd *c, const char *prefix, const void *value, size_t value_len,
                     int64_t lease, int timeout_ms, fw_etcd_election **out);

/* While waiting: an fd that becomes readable when the candidate ahead
 * changes (then call campaign_wait(e, 0)); -1 when not waiting. */
int fw_etcd_election_fd(const fw_etcd_election *e);

bool fw_etcd_election_is_leader(const fw_etcd_election *e);
/* The epoch (create_revision of the own key), valid once leader; else 0. */
int64_t fw_etcd_election_epoch(const fw_etcd_election *e);
/* The candidate's key, "<prefix>/<lease-hex>". */
const char *fw_etcd_election_key(const fw_etcd_election *e);

/* A new guarded txn fencing on this leader's key and epoch (caller destroys
 * it); NULL when not leader. */
fw_etcd_txn *fw_etcd_election_txn(const fw_etcd_election *e);

/* Update the value of the own key, only while still leader (FW_EFENCED if not). */
int fw_etcd_election_proclaim(fw_etcd_election *e, const void *value, size_t value_len);

/* Delete the own key if it is still ours (leader or not). */
int fw_etcd_resign(fw_etcd_election *e);

/* Frees the election; does not resign (the key lives on with its lease). */
void fw_etcd_election_destroy(fw_etcd_election **e);

/* The current leader under `prefix`: its key, value and create_revision
 * (the epoch). FW_ENOTFOUND when nobody campaigns. */
int fw_etcd_leader(fw_etcd *c, const char *prefix, fw_etcd_kv **out);

/* ------------------------------------------------------------- internal */
#ifdef FW_ETCD_INTERNAL
/* Shared by fw_etcd.c, fw_etcd_watch.c and fw_etcd_lease.c; not an API. */
#include <jansson.h>

#define FW_ETCD__IDEMPOTENT 1u /* safe to repeat on another endpoint after a lost answer */
#define FW_ETCD__NOAUTH     2u /* send no token (the authenticate call itself) */

const char *fw_etcd__endpoint(fw_etcd *c, int idx);
int fw_etcd__timeout_ms(const fw_etcd *c);
int fw_etcd__connect_timeout_ms(const fw_etcd *c);
void fw_etcd__set_preferred(fw_etcd *c, int idx);
/* Copy "Authorization: <token>" into buf ("" without auth); *gen gets the
 * token generation to pass to fw_etcd__reauth. */
int fw_etcd__auth_header(fw_etcd *c, char *buf, size_t size, uint64_t *gen);
int fw_etcd__reauth(fw_etcd *c, uint64_t seen_gen);
bool fw_etcd__has_auth(const fw_etcd *c);
int fw_etcd__request(fw_etcd *c, const char *path, json_t *body, unsigned flags, json_t **resp);
int fw_etcd__grpc_error(int code, const char *msg);
json_t *fw_etcd__jbytes(const void *p, size_t n);
json_t *fw_etcd__ji64(int64_t v);
int fw_etcd__get_i64(json_t *obj, const char *field, int64_t *out);
int fw_etcd__kv_parse(json_t *j, fw_etcd_kv *kv);
/* Set "key" (and "range_end" for prefix / explicit end) in a request. */
int fw_etcd__set_keys(json_t *req, const char *key, size_t klen, const char *range_end,
                      bool prefix);
int fw_etcd__kvs_parse(json_t *resp, int64_t revision, fw_etcd_kvs **out);
size_t fw_etcd__max_request_bytes(const fw_etcd *c);
#endif

#endif
