/* fw_etcd.c - etcd v3 client: connection handling, failover, auth, KV, txn.
 *
 * Theory of operation (the full story is in fw_etcd.h and docs/etcd-client.md)
 * ---------------------------------------------------------------------------
 * Every unary call funnels through fw_etcd__request(): it serialises the JSON
 * body once, borrows a curl easy handle from the client's pool and tries the
 * endpoints in order starting at the preferred one:
 *
 *     attempt(endpoint i)
 *       |-- could not connect / nothing sent ----------> next endpoint
 *       |-- answer lost after sending --+-- idempotent -> next endpoint
 *       |                               +-- write -----> FW_ETIMEDOUT/EUNAVAIL
 *       |                                                ("outcome unknown"),
 *       |                                                preferred = i + 1
 *       |-- gRPC error "invalid auth token" -----------> authenticate, same i
 *       |-- gRPC error Unavailable, nothing applied ---> next endpoint
 *       |-- other gRPC error --------------------------> mapped fw_err
 *       +-- answer --------------------------------------> preferred = i, 0
 *
 * After a full round of endpoints without an answer it backs off (50 ms
 * doubling to 500 ms) and goes round again until the call's deadline.
 *
 * Invariants:
 *   1. c->mu guards preferred, token, token_gen and the handle pool; it is
 *      never held across network I/O.
 *   2. c->auth_mu serialises authentication so that N threads seeing an
 *      expired token authenticate once (token_gen tells them someone did).
 *   3. A pooled handle is used by one call at a time; curl_easy_reset keeps
 *      its connection cache, so keep-alive survives between calls.
 *   4. Limits (request bytes, txn ops) are checked before anything is sent.
 */
#define FW_ETCD_INTERNAL
#include "fw_etcd.h"

#include "fw_err.h"
#include "fw_fault.h"
#include "fw_log.h"
#include "fw_time.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_MAX_ENDPOINTS 16
#define S_POOL_MAX      16 /* idle handles kept; more concurrent callers make extras */
/* A response larger than this is refused rather than buffered: etcd's own
 * gRPC send limit is 2 GiB, but no Flywheel read should come near 256 MiB. */
#define S_MAX_RESPONSE (256u << 20)
/* Bytes etcd's protobuf framing adds per op on top of keys and values; the
 * estimate errs high so that a request we pass is one etcd accepts. */
#define S_OP_OVERHEAD 48

struct fw_etcd {
    char *eps[S_MAX_ENDPOINTS];
    int n_eps;
    int timeout_ms;
    int connect_timeout_ms;
    size_t max_request_bytes;
    int max_txn_ops;
    char *user;
    char *password;

    pthread_mutex_t mu; /* invariant 1 */
    int preferred;
    char *token;        /* NULL: not authenticated yet; "": auth disabled on the server */
    uint64_t token_gen;
    CURL *pool[S_POOL_MAX];
    int n_pool;

    pthread_mutex_t auth_mu; /* invariant 2 */
};

struct fw_etcd_txn {
    json_t *compare;
    json_t *success;
    json_t *failure;
    size_t bytes;
    int err; /* sticky: an add failed, refuse to commit */
    char *guard_key;
    int64_t epoch;
};

static pthread_once_t s_curl_once = PTHREAD_ONCE_INIT;
static void s_curl_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

/* ------------------------------------------------------- base64 and JSON */

static int s_b64dec(const char *s, size_t n, char **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    if (n % 4 != 0 || n > INT_MAX)
        return fw_err_set(FW_EPROTO, "etcd: base64 field of length %zu is malformed", n);
    char *buf = malloc(n / 4 * 3 + 1);
    if (!buf) return fw_err_set(FW_ENOMEM, "etcd: decoding %zu base64 bytes", n);
    int len = 0;
    if (n > 0) {
        len = EVP_DecodeBlock((unsigned char *)buf, (const unsigned char *)s, (int)n);
        if (len < 0) {
            free(buf);
            return fw_err_set(FW_EPROTO, "etcd: invalid base64 \"%.40s\"", s);
        }
        /* EVP_DecodeBlock counts '=' padding as zero bytes. */
        if (s[n - 1] == '=') len--;
        if (s[n - 2] == '=') len--;
    }
    buf[len] = '\0';
    *out = buf;
    *out_len = (size_t)len;
    return 0;
}

json_t *fw_etcd__jbytes(const void *p, size_t n) {
    if (n > (size_t)INT_MAX / 2) return NULL;
    size_t cap = 4 * ((n + 2) / 3) + 1;
    char *buf = malloc(cap);
    if (!buf) return NULL;
    int len = n ? EVP_EncodeBlock((unsigned char *)buf, (const unsigned char *)p, (int)n) : 0;
    buf[len] = '\0';
    json_t *j = json_stringn(buf, (size_t)len);
    free(buf);
    return j;
}

json_t *fw_etcd__ji64(int64_t v) {
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRId64, v);
    return json_string(buf);
}

/* 64-bit numbers come as JSON strings; never let them pass through a double. */
int fw_etcd__get_i64(json_t *obj, const char *field, int64_t *out) {
    json_t *v = json_is_object(obj) ? json_object_get(obj, field) : NULL;
    *out = 0;
    if (!v || json_is_null(v)) return 0; /* omitted: default value 0 */
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end = NULL;
        errno = 0;
        long long x = strtoll(s, &end, 10);
        if (errno || end == s || *end)
            return fw_err_set(FW_EPROTO, "etcd: field %s=\"%.40s\" is not a 64-bit integer",
                              field, s);
        *out = x;
        return 0;
    }
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 0;
    }
    return fw_err_set(FW_EPROTO, "etcd: field %s is neither a string nor an integer", field);
}

/* Put an int64 field into obj only when nonzero (as etcd would omit it). */
static int s_set_i64(json_t *obj, const char *field, int64_t v) {
    if (v == 0) return 0;
    return json_object_set_new(obj, field, fw_etcd__ji64(v)) == 0 ? 0 : FW_ENOMEM;
}

static int s_set_bytes(json_t *obj, const char *field, const void *p, size_t n) {
    json_t *j = fw_etcd__jbytes(p, n);
    if (!j || json_object_set_new(obj, field, j) != 0) return FW_ENOMEM;
    return 0;
}

static int s_set_true(json_t *obj, const char *field, bool v) {
    if (!v) return 0;
    return json_object_set_new(obj, field, json_true()) == 0 ? 0 : FW_ENOMEM;
}

/* --------------------------------------------------------------- kv */

void fw_etcd_kv_clear(fw_etcd_kv *kv) {
    if (!kv) return;
    free(kv->key);
    free(kv->value);
    memset(kv, 0, sizeof *kv);
}

void fw_etcd_kv_free(fw_etcd_kv **kv) {
    if (!kv || !*kv) return;
    fw_etcd_kv_clear(*kv);
    free(*kv);
    *kv = NULL;
}

void fw_etcd_kvs_free(fw_etcd_kvs **kvs) {
    if (!kvs || !*kvs) return;
    for (size_t i = 0; i < (*kvs)->n; i++) fw_etcd_kv_clear(&(*kvs)->kvs[i]);
    free((*kvs)->kvs);
    free(*kvs);
    *kvs = NULL;
}

static int s_b64_field(json_t *j, const char *field, char **out, size_t *len) {
    json_t *v = json_object_get(j, field);
    if (v && !json_is_string(v))
        return fw_err_set(FW_EPROTO, "etcd: kv field %s is not a string", field);
    const char *s = v ? json_string_value(v) : "";
    return s_b64dec(s, v ? json_string_length(v) : 0, out, len);
}

int fw_etcd__kv_parse(json_t *j, fw_etcd_kv *kv) {
    memset(kv, 0, sizeof *kv);
    if (!json_is_object(j)) return fw_err_set(FW_EPROTO, "etcd: kv is not an object");
    int rc;
    if ((rc = s_b64_field(j, "key", &kv->key, &kv->key_len)) < 0 ||
        (rc = s_b64_field(j, "value", &kv->value, &kv->value_len)) < 0 ||
        (rc = fw_etcd__get_i64(j, "create_revision", &kv->create_revision)) < 0 ||
        (rc = fw_etcd__get_i64(j, "mod_revision", &kv->mod_revision)) < 0 ||
        (rc = fw_etcd__get_i64(j, "version", &kv->version)) < 0 ||
        (rc = fw_etcd__get_i64(j, "lease", &kv->lease)) < 0) {
        fw_etcd_kv_clear(kv);
        return rc;
    }
    return 0;
}

/* Parse an array of kvs (possibly absent: etcd omits empty lists). */
static int s_kv_array(json_t *arr, fw_etcd_kv **out, size_t *n) {
    *out = NULL;
    *n = 0;
    if (!arr || json_is_null(arr)) return 0;
    if (!json_is_array(arr)) return fw_err_set(FW_EPROTO, "etcd: kvs is not an array");
    size_t m = json_array_size(arr);
    if (m == 0) return 0;
    fw_etcd_kv *kvs = calloc(m, sizeof *kvs);
    if (!kvs) return fw_err_set(FW_ENOMEM, "etcd: %zu kvs", m);
    for (size_t i = 0; i < m; i++) {
        int rc = fw_etcd__kv_parse(json_array_get(arr, i), &kvs[i]);
        if (rc < 0) {
            for (size_t k = 0; k < i; k++) fw_etcd_kv_clear(&kvs[k]);
            free(kvs);
            return rc;
        }
    }
    *out = kvs;
    *n = m;
    return 0;
}

static int64_t s_header_revision(json_t *resp) {
    int64_t rev = 0;
    if (fw_etcd__get_i64(json_object_get(resp, "header"), "revision", &rev) < 0) return 0;
    return rev;
}

int fw_etcd__kvs_parse(json_t *resp, int64_t revision, fw_etcd_kvs **out) {
    *out = NULL;
    fw_etcd_kvs *r = calloc(1, sizeof *r);
    if (!r) return fw_err_set(FW_ENOMEM, "etcd: range result");
    int rc = s_kv_array(json_object_get(resp, "kvs"), &r->kvs, &r->n);
    if (rc == 0) rc = fw_etcd__get_i64(resp, "count", &r->count);
    if (rc < 0) {
        fw_etcd_kvs_free(&r);
        return rc;
    }
    r->more = json_is_true(json_object_get(resp, "more"));
    int64_t hrev = s_header_revision(resp);
    r->revision = hrev ? hrev : revision;
    *out = r;
    return 0;
}

/* --------------------------------------------------------- client setup */

static int s_parse_endpoints(fw_etcd *c, const char *list) {
    if (!list || !*list)
        return fw_err_set(FW_ECONFIG, "etcd endpoints: the list is empty "
                                      "(expected \"http://host:port[,http://host:port...]\")");
    const char *p = list;
    for (int idx = 1;; idx++) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        while (n && (*p == ' ' || *p == '\t')) p++, n--;
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '/')) n--;
        size_t scheme = strncmp(p, "http://", 7) == 0 ? 7 : strncmp(p, "https://", 8) == 0 ? 8 : 0;
        if (n == 0)
            return fw_err_set(FW_ECONFIG, "etcd endpoints \"%s\": entry %d is empty", list, idx);
        if (!scheme || n <= scheme || p[scheme] == ':' || p[scheme] == '/')
            return fw_err_set(FW_ECONFIG,
                              "etcd endpoints \"%s\": entry %d \"%.*s\" is not an "
                              "http://host:port URL",
                              list, idx, (int)n, p);
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)p[i] <= ' ')
                return fw_err_set(FW_ECONFIG, "etcd endpoints \"%s\": entry %d holds a space "
                                              "or control character", list, idx);
        if (c->n_eps == S_MAX_ENDPOINTS)
            return fw_err_set(FW_ECONFIG, "etcd endpoints \"%s\": more than %d entries", list,
                              S_MAX_ENDPOINTS);
        if (!(c->eps[c->n_eps++] = strndup(p, n)))
            return fw_err_set(FW_ENOMEM, "etcd endpoints");
        if (!comma) break;
        p = comma + 1;
    }
    return 0;
}

fw_etcd *fw_etcd_new(const fw_etcd_opts *opts) {
    if (!opts) {
        fw_err_set(FW_EINVAL, "fw_etcd_new: opts is NULL");
        return NULL;
    }
    if (opts->timeout_ms < 0 || opts->connect_timeout_ms < 0 || opts->max_txn_ops < 0) {
        fw_err_set(FW_ECONFIG, "etcd: negative timeout or max_txn_ops");
        return NULL;
    }
    if (opts->user && !opts->password) {
        fw_err_set(FW_ECONFIG, "etcd: user \"%s\" given without a password", opts->user);
        return NULL;
    }
    pthread_once(&s_curl_once, s_curl_init);
    fw_etcd *c = calloc(1, sizeof *c);
    if (!c) {
        fw_err_set(FW_ENOMEM, "fw_etcd_new");
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->auth_mu, NULL);
    c->timeout_ms = opts->timeout_ms ? opts->timeout_ms : 5000;
    c->connect_timeout_ms = opts->connect_timeout_ms ? opts->connect_timeout_ms : 1000;
    c->max_request_bytes =
        opts->max_request_bytes ? opts->max_request_bytes : FW_ETCD_MAX_REQUEST_BYTES;
    c->max_txn_ops = opts->max_txn_ops ? opts->max_txn_ops : FW_ETCD_MAX_TXN_OPS;
    if (s_parse_endpoints(c, opts->endpoints) < 0) goto fail;
    if (opts->user) {
        c->user = strdup(opts->user);
        c->password = strdup(opts->password);
        if (!c->user || !c->password) {
            fw_err_set(FW_ENOMEM, "fw_etcd_new");
            goto fail;
        }
    }
    return c;
fail:;
    /* fw_etcd_destroy must not clobber the detail set above. */
    char detail[512];
    snprintf(detail, sizeof detail, "%s", fw_err_detail());
    fw_etcd_destroy(&c);
    fw_err_set(FW_ECONFIG, "%s", detail);
    return NULL;
}

void fw_etcd_destroy(fw_etcd **cp) {
    if (!cp || !*cp) return;
    fw_etcd *c = *cp;
    for (int i = 0; i < c->n_eps; i++) free(c->eps[i]);
    for (int i = 0; i < c->n_pool; i++) curl_easy_cleanup(c->pool[i]);
    free(c->user);
    if (c->password) {
        memset(c->password, 0, strlen(c->password));
        free(c->password);
    }
    free(c->token);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->auth_mu);
    free(c);
    *cp = NULL;
}

int fw_etcd_endpoint_index(fw_etcd *c) {
    pthread_mutex_lock(&c->mu);
    int i = c->preferred;
    pthread_mutex_unlock(&c->mu);
    return i;
}

int fw_etcd_endpoint_count(const fw_etcd *c) { return c->n_eps; }
const char *fw_etcd__endpoint(fw_etcd *c, int idx) { return c->eps[idx % c->n_eps]; }
int fw_etcd__timeout_ms(const fw_etcd *c) { return c->timeout_ms; }
int fw_etcd__connect_timeout_ms(const fw_etcd *c) { return c->connect_timeout_ms; }
size_t fw_etcd__max_request_bytes(const fw_etcd *c) { return c->max_request_bytes; }
bool fw_etcd__has_auth(const fw_etcd *c) { return c->user != NULL; }

void fw_etcd__set_preferred(fw_etcd *c, int idx) {
    pthread_mutex_lock(&c->mu);
    c->preferred = idx % c->n_eps;
    pthread_mutex_unlock(&c->mu);
}

/* -------------------------------------------------------- authentication */

int fw_etcd__reauth(fw_etcd *c, uint64_t seen_gen) {
    if (!c->user) return fw_err_set(FW_EAUTH, "etcd: the cluster requires authentication "
                                              "but no user is configured");
    pthread_mutex_lock(&c->auth_mu);
    pthread_mutex_lock(&c->mu);
    bool fresh = c->token && c->token_gen != seen_gen;
    pthread_mutex_unlock(&c->mu);
    if (fresh) { /* another thread authenticated while we waited */
        pthread_mutex_unlock(&c->auth_mu);
        return 0;
    }
    json_t *body = json_pack("{s:s, s:s}", "name", c->user, "password", c->password);
    json_t *resp = NULL;
    int rc = body ? fw_etcd__request(c, "/v3/auth/authenticate", body,
                                     FW_ETCD__NOAUTH | FW_ETCD__IDEMPOTENT, &resp)
                  : fw_err_set(FW_ENOMEM, "etcd authenticate");
    json_decref(body);
    const char *tok = NULL;
    if (rc == 0) {
        tok = json_string_value(json_object_get(resp, "token"));
        if (!tok) rc = fw_err_set(FW_EPROTO, "etcd authenticate: answer has no token");
    } else if (strstr(fw_err_detail(), "authentication is not enabled")) {
        /* Auth configured here but off on the server: carry on without a
         * token; should auth be enabled later, "user name is empty" brings
         * us back here. */
        tok = "";
        rc = 0;
    } else if (rc == FW_EINVAL) {
        rc = FW_EAUTH;
    }
    if (rc == 0) {
        char *copy = strdup(tok);
        pthread_mutex_lock(&c->mu);
        if (copy) {
            free(c->token);
            c->token = copy;
            c->token_gen++;
        }
        pthread_mutex_unlock(&c->mu);
        if (!copy) rc = fw_err_set(FW_ENOMEM, "etcd authenticate");
        else fw_info("event=etcd-authenticated user=%s", c->user);
    } else {
        char d[400];
        snprintf(d, sizeof d, "%s", fw_err_detail());
        fw_err_set(rc, "etcd: authentication as user \"%s\" failed: %s", c->user, d);
    }
    json_decref(resp);
    pthread_mutex_unlock(&c->auth_mu);
    return rc;
}

int fw_etcd__auth_header(fw_etcd *c, char *buf, size_t size, uint64_t *gen) {
    buf[0] = '\0';
    *gen = 0;
    if (!c->user) return 0;
    for (int tries = 0; tries < 2; tries++) {
        pthread_mutex_lock(&c->mu);
        if (c->token) {
            if (*c->token) snprintf(buf, size, "Authorization: %s", c->token);
            *gen = c->token_gen;
            pthread_mutex_unlock(&c->mu);
            return 0;
        }
        uint64_t g = c->token_gen;
        pthread_mutex_unlock(&c->mu);
        int rc = fw_etcd__reauth(c, g);
        if (rc < 0) return rc;
    }
    return fw_err_set(FW_EAUTH, "etcd: no token after authenticating");
}

/* -------------------------------------------------------------- requests */

int fw_etcd__grpc_error(int code, const char *msg) {
    /* Messages first: the gRPC code alone is too coarse (InvalidArgument
     * covers both "too many ops" and "bad password"). */
    if (strstr(msg, "compacted")) return FW_ECOMPACTED;
    if (strstr(msg, "lease not found")) return FW_ELEASE;
    if (strstr(msg, "too large") || strstr(msg, "too many operations")) return FW_ETOOBIG;
    if (strstr(msg, "authentication failed") || strstr(msg, "invalid auth token") ||
        strstr(msg, "user name is empty") || strstr(msg, "invalid user ID"))
        return FW_EAUTH;
    if (strstr(msg, "permission denied")) return FW_EPERM;
    if (strstr(msg, "future revision")) return FW_EINVAL;
    if (strstr(msg, "already exists")) return FW_EEXIST;
    switch (code) {
    case 1: return FW_ECANCELED;
    case 3: return FW_EINVAL;
    case 4: return FW_ETIMEDOUT;
    case 5: return FW_ENOTFOUND;
    case 6: return FW_EEXIST;
    case 7: return FW_EPERM;
    case 8: return FW_ETOOBIG;
    case 9: return FW_ESTATE;
    case 11: return FW_EINVAL;
    case 12: return FW_EUNSUPPORTED;
    case 14: return FW_EUNAVAIL;
    case 16: return FW_EAUTH;
    default: return FW_EIO;
    }
}

typedef struct {
    char *data;
    size_t len;
    size_t cap;
} s_buf;

static size_t s_buf_write(char *p, size_t sz, size_t nm, void *ud) {
    s_buf *b = ud;
    size_t n = sz * nm;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1) cap *= 2;
        if (cap > S_MAX_RESPONSE) return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
        char *d = realloc(b->data, cap);
        if (!d) return 0;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

static CURL *s_pool_get(fw_etcd *c) {
    CURL *h = NULL;
    pthread_mutex_lock(&c->mu);
    if (c->n_pool > 0) h = c->pool[--c->n_pool];
    pthread_mutex_unlock(&c->mu);
    return h ? h : curl_easy_init();
}

static void s_pool_put(fw_etcd *c, CURL *h) {
    pthread_mutex_lock(&c->mu);
    if (c->n_pool < S_POOL_MAX) {
        c->pool[c->n_pool++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&c->mu);
    if (h) curl_easy_cleanup(h);
}

/* One HTTP attempt. *sent says whether any request byte left this process:
 * if not, the call is certainly safe to repeat elsewhere. */
static CURLcode s_perform(fw_etcd *c, CURL *h, const char *url, const char *payload, size_t plen,
                          const char *auth, int64_t to_ms, long *status, s_buf *b, bool *sent) {
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    /* Without this curl waits for "100 Continue" before large bodies. */
    if (hdr) hdr = curl_slist_append(hdr, "Expect:");
    if (hdr && *auth) hdr = curl_slist_append(hdr, auth);
    b->len = 0;
    *status = 0;
    *sent = false;
    if (!hdr) return CURLE_OUT_OF_MEMORY;
    curl_easy_reset(h); /* keeps the connection cache: invariant 3 */
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, payload);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)plen);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, s_buf_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, b);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(to_ms > 0 ? to_ms : 1));
    long cto = c->connect_timeout_ms < to_ms ? c->connect_timeout_ms : (long)to_ms;
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, cto > 0 ? cto : 1L);
    CURLcode cc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    long reqsize = 0;
    curl_easy_getinfo(h, CURLINFO_REQUEST_SIZE, &reqsize);
    *sent = reqsize > 0;
    curl_slist_free_all(hdr);
    return cc;
}

static bool s_is_auth_retry(int code, const char *msg) {
    return code == 16 || strstr(msg, "invalid auth token") || strstr(msg, "user name is empty");
}

int fw_etcd__request(fw_etcd *c, const char *path, json_t *body, unsigned flags, json_t **resp) {
    *resp = NULL;
    /* Fault point "etcd.request": fails the call as an unreachable cluster
     * would, before anything is sent (a no-op unless FW_FAULT_INJECTION). */
    if (fw_fault_hit("etcd.request"))
        return fw_err_set(FW_EUNAVAIL, "etcd %s: injected fault (etcd.request)", path);
    char *payload = json_dumps(body, JSON_COMPACT);
    if (!payload) return fw_err_set(FW_ENOMEM, "etcd %s: serialising the request", path);
    size_t plen = strlen(payload);
    CURL *h = s_pool_get(c);
    if (!h) {
        free(payload);
        return fw_err_set(FW_ENOMEM, "etcd %s: curl_easy_init failed", path);
    }
    int64_t deadline = fw_deadline_ms(c->timeout_ms);
    s_buf b = {0};
    char why[600] = "";  /* what went wrong at each endpoint, for the final detail */
    size_t wlen = 0;
    bool reauthed = false;
    int rc = FW_EUNAVAIL;
    int start = fw_etcd_endpoint_index(c);
    int64_t backoff = 50;
    char auth[1024];
    for (int attempt = 0;; attempt++) {
        if (attempt > 0 && attempt % c->n_eps == 0) {
            /* A whole round failed: wait a little (etcd may be restarting or
             * electing a leader), then go round again. */
            int64_t left = fw_remaining_ms(deadline);
            fw_sleep_ms(backoff < left ? backoff : left);
            backoff = backoff * 2 > 500 ? 500 : backoff * 2;
        }
        int64_t left = fw_remaining_ms(deadline);
        if (left <= 0) {
            rc = fw_err_set(FW_EUNAVAIL, "etcd %s: no endpoint answered within %d ms:%s", path,
                            c->timeout_ms, wlen ? why : " (no attempt)");
            break;
        }
        int idx = (start + attempt) % c->n_eps;
        const char *ep = c->eps[idx];
        char url[512];
        snprintf(url, sizeof url, "%s%s", ep, path);
        uint64_t gen = 0;
        auth[0] = '\0';
        if (!(flags & FW_ETCD__NOAUTH) && (rc = fw_etcd__auth_header(c, auth, sizeof auth, &gen)) < 0)
            break;
        long status = 0;
        bool sent = false;
        CURLcode cc = s_perform(c, h, url, payload, plen, auth, left, &status, &b, &sent);
        if (cc != CURLE_OK) {
            const char *cerr = curl_easy_strerror(cc);
            if (wlen < sizeof why)
                wlen += (size_t)snprintf(why + wlen, sizeof why - wlen, " %s: %s;", ep, cerr);
            if (cc == CURLE_OUT_OF_MEMORY || cc == CURLE_WRITE_ERROR) {
                rc = fw_err_set(FW_ENOMEM, "etcd %s at %s: %s (answer too large?)", path, ep, cerr);
                break;
            }
            bool safe = !sent || cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST;
            if (safe || (flags & FW_ETCD__IDEMPOTENT)) {
                fw_debug("event=etcd-endpoint-failed endpoint=%s path=%s err=\"%s\"", ep, path, cerr);
                continue;
            }
            /* The write may or may not have been applied: do not repeat it,
             * but send the next call elsewhere. */
            fw_etcd__set_preferred(c, idx + 1);
            fw_warn("event=etcd-outcome-unknown endpoint=%s path=%s err=\"%s\"", ep, path, cerr);
            rc = fw_err_set(cc == CURLE_OPERATION_TIMEDOUT ? FW_ETIMEDOUT : FW_EUNAVAIL,
                            "etcd %s at %s: %s after sending; outcome unknown", path, ep, cerr);
            break;
        }
        json_error_t jerr;
        json_t *j = json_loadb(b.data ? b.data : "", b.len, 0, &jerr);
        if (!json_is_object(j)) {
            json_decref(j);
            rc = fw_err_set(FW_EPROTO, "etcd %s at %s: HTTP %ld with a non-JSON body \"%.80s\" "
                                       "(not an etcd v3 gateway?)",
                            path, ep, status, b.data ? b.data : "");
            break;
        }
        json_t *jerror = json_object_get(j, "error");
        if (jerror || (status >= 400 && !json_object_get(j, "header"))) {
            /* Unary calls answer {"error": "...", "message": "...", "code": N};
             * streaming ones (keepalive) {"error": {"grpc_code": N, "message": ...}}. */
            json_t *eo = json_is_object(jerror) ? jerror : j;
            int64_t code = 0;
            fw_etcd__get_i64(eo, json_is_object(jerror) ? "grpc_code" : "code", &code);
            const char *msg = json_string_value(json_object_get(eo, "message"));
            if (!msg) msg = json_string_value(jerror);
            if (!msg) msg = "(no message)";
            char msgcopy[300];
            snprintf(msgcopy, sizeof msgcopy, "%s", msg);
            json_decref(j);
            if (!(flags & FW_ETCD__NOAUTH) && c->user && !reauthed &&
                s_is_auth_retry((int)code, msgcopy)) {
                reauthed = true;
                if ((rc = fw_etcd__reauth(c, gen)) < 0) break;
                attempt--; /* same endpoint again, now with a fresh token */
                continue;
            }
            if (code == 14 && ((flags & FW_ETCD__IDEMPOTENT) || strstr(msgcopy, "no leader"))) {
                if (wlen < sizeof why)
                    wlen += (size_t)snprintf(why + wlen, sizeof why - wlen, " %s: %s;", ep, msgcopy);
                continue;
            }
            rc = fw_err_set(fw_etcd__grpc_error((int)code, msgcopy), "etcd %s at %s: %s (code %d)",
                            path, ep, msgcopy, (int)code);
            break;
        }
        if (idx != start) {
            fw_etcd__set_preferred(c, idx);
            fw_info("event=etcd-failover endpoint=%s", ep);
        }
        *resp = j;
        rc = 0;
        break;
    }
    free(b.data);
    free(payload);
    s_pool_put(c, h);
    return rc;
}

int fw_etcd_ping(fw_etcd *c, int64_t *rev_out) {
    json_t *body = json_object(), *resp = NULL;
    if (!body) return fw_err_set(FW_ENOMEM, "etcd ping");
    int rc = fw_etcd__request(c, "/v3/maintenance/status", body, FW_ETCD__IDEMPOTENT, &resp);
    json_decref(body);
    if (rc == 0 && rev_out) *rev_out = s_header_revision(resp);
    json_decref(resp);
    return rc;
}

/* ----------------------------------------------------------------- KV */

/* The end of the range of keys starting with prefix[0..n): the prefix with
 * its last non-0xff byte incremented; "\0" means "to the end of the
 * keyspace". *end is malloc'd. An empty prefix gives key "\0" (etcd refuses
 * an empty key), which the caller handles. */
static int s_prefix_end(const char *prefix, size_t n, char **end, size_t *elen) {
    char *e = malloc(n ? n : 1);
    if (!e) return fw_err_set(FW_ENOMEM, "etcd prefix");
    memcpy(e, prefix, n);
    while (n > 0 && (unsigned char)e[n - 1] == 0xff) n--;
    if (n == 0) {
        e[0] = '\0';
        n = 1;
    } else {
        e[n - 1] = (char)((unsigned char)e[n - 1] + 1);
    }
    *end = e;
    *elen = n;
    return 0;
}

int fw_etcd__set_keys(json_t *req, const char *key, size_t klen, const char *range_end,
                      bool prefix) {
    static const char zero[1] = {0};
    int rc = 0;
    if (range_end) {
        if (s_set_bytes(req, "key", klen ? key : zero, klen ? klen : 1) < 0 ||
            s_set_bytes(req, "range_end", range_end, strlen(range_end)) < 0)
            rc = FW_ENOMEM;
    } else if (!prefix) {
        if (klen == 0) return fw_err_set(FW_EINVAL, "etcd: empty key");
        if (s_set_bytes(req, "key", key, klen) < 0) rc = FW_ENOMEM;
    } else {
        char *end = NULL;
        size_t elen = 0;
        if ((rc = s_prefix_end(key, klen, &end, &elen)) < 0) return rc;
        if (s_set_bytes(req, "key", klen ? key : zero, klen ? klen : 1) < 0 ||
            s_set_bytes(req, "range_end", end, elen) < 0)
            rc = FW_ENOMEM;
        free(end);
    }
    return rc < 0 ? fw_err_set(FW_ENOMEM, "etcd request") : 0;
}

static const char *s_sort_order[] = {"NONE", "ASCEND", "DESCEND"};
static const char *s_sort_target[] = {"KEY", "VERSION", "CREATE", "MOD", "VALUE"};

/* The JSON of a RangeRequest for key[0..klen). */
static json_t *s_range_req(const char *key, size_t klen, const fw_etcd_range_opts *o, int *err) {
    static const fw_etcd_range_opts none = {0};
    if (!o) o = &none;
    *err = 0;
    if ((unsigned)o->sort_order > FW_ETCD_SORT_DESCEND ||
        (unsigned)o->sort_target > FW_ETCD_SORT_VALUE || o->limit < 0) {
        *err = fw_err_set(FW_EINVAL, "etcd range: bad sort or limit");
        return NULL;
    }
    json_t *req = json_object();
    if (!req) {
        *err = fw_err_set(FW_ENOMEM, "etcd range");
        return NULL;
    }
    int rc = fw_etcd__set_keys(req, key, klen, o->range_end, o->prefix);
    if (rc == 0 &&
        (s_set_i64(req, "limit", o->limit) < 0 || s_set_i64(req, "revision", o->revision) < 0 ||
         s_set_true(req, "keys_only", o->keys_only) < 0 ||
         s_set_true(req, "count_only", o->count_only) < 0 ||
         s_set_true(req, "serializable", o->serializable) < 0 ||
         s_set_i64(req, "min_create_revision", o->min_create_revision) < 0 ||
         s_set_i64(req, "max_create_revision", o->max_create_revision) < 0 ||
         (o->sort_order && json_object_set_new(req, "sort_order",
                                               json_string(s_sort_order[o->sort_order])) < 0) ||
         (o->sort_target && json_object_set_new(req, "sort_target",
                                                json_string(s_sort_target[o->sort_target])) < 0)))
        rc = fw_err_set(FW_ENOMEM, "etcd range");
    if (rc < 0) {
        json_decref(req);
        *err = rc;
        return NULL;
    }
    return req;
}

static int s_range_raw(fw_etcd *c, const char *key, size_t klen, const fw_etcd_range_opts *o,
                       fw_etcd_kvs **out) {
    *out = NULL;
    int rc;
    json_t *req = s_range_req(key, klen, o, &rc), *resp = NULL;
    if (!req) return rc;
    rc = fw_etcd__request(c, "/v3/kv/range", req, FW_ETCD__IDEMPOTENT, &resp);
    json_decref(req);
    if (rc == 0) rc = fw_etcd__kvs_parse(resp, 0, out);
    json_decref(resp);
    return rc;
}

int fw_etcd_range(fw_etcd *c, const char *key, const fw_etcd_range_opts *opts, fw_etcd_kvs **out) {
    if (!c || !key || !out) return fw_err_set(FW_EINVAL, "fw_etcd_range: NULL argument");
    return s_range_raw(c, key, strlen(key), opts, out);
}

int fw_etcd_get(fw_etcd *c, const char *key, fw_etcd_kv **out) {
    if (!out) return fw_err_set(FW_EINVAL, "fw_etcd_get: NULL out");
    *out = NULL;
    fw_etcd_kvs *r = NULL;
    int rc = fw_etcd_range(c, key, NULL, &r);
    if (rc < 0) return rc;
    if (r->n == 0) {
        fw_etcd_kvs_free(&r);
        return fw_err_set(FW_ENOTFOUND, "etcd: key \"%s\" not found", key);
    }
    fw_etcd_kv *kv = malloc(sizeof *kv);
    if (!kv) {
        fw_etcd_kvs_free(&r);
        return fw_err_set(FW_ENOMEM, "fw_etcd_get");
    }
    *kv = r->kvs[0];
    memset(&r->kvs[0], 0, sizeof r->kvs[0]); /* moved out */
    fw_etcd_kvs_free(&r);
    *out = kv;
    return 0;
}

int fw_etcd_range_pages(fw_etcd *c, const char *prefix, int64_t page_size, int64_t revision,
                        fw_etcd_page_fn fn, void *arg, int64_t *rev_out) {
    if (!c || !prefix || !fn) return fw_err_set(FW_EINVAL, "fw_etcd_range_pages: NULL argument");
    if (page_size <= 0) page_size = 1000;
    size_t plen = strlen(prefix);
    /* range_end stays the prefix's end; only the start key moves. */
    char *end = NULL, *key = NULL;
    size_t elen = 0, klen = plen ? plen : 1;
    int rc = s_prefix_end(prefix, plen, &end, &elen);
    if (rc == 0 && !(key = malloc(klen))) rc = fw_err_set(FW_ENOMEM, "etcd range pages");
    if (rc == 0) memcpy(key, plen ? prefix : "", klen); /* "" -> "\0": whole keyspace */
    int64_t rev = revision;
    while (rc == 0) {
        fw_etcd_kvs *page = NULL;
        json_t *req = json_object(), *resp = NULL;
        if (!req || s_set_bytes(req, "key", key, klen) < 0 ||
            s_set_bytes(req, "range_end", end, elen) < 0 ||
            s_set_i64(req, "limit", page_size) < 0 || s_set_i64(req, "revision", rev) < 0)
            rc = fw_err_set(FW_ENOMEM, "etcd range pages");
        if (rc == 0) rc = fw_etcd__request(c, "/v3/kv/range", req, FW_ETCD__IDEMPOTENT, &resp);
        json_decref(req);
        if (rc == 0) rc = fw_etcd__kvs_parse(resp, 0, &page);
        json_decref(resp);
        if (rc < 0) break;
        if (rev == 0) rev = page->revision; /* pin every later page to this snapshot */
        if (page->n > 0) rc = fn(page->kvs, page->n, arg);
        bool more = page->more && page->n > 0;
        if (rc == 0 && more) {
            /* Next page starts just after the last key: last key + "\0". */
            fw_etcd_kv *last = &page->kvs[page->n - 1];
            char *nk = malloc(last->key_len + 1);
            if (!nk) {
                rc = fw_err_set(FW_ENOMEM, "etcd range pages");
            } else {
                memcpy(nk, last->key, last->key_len);
                nk[last->key_len] = '\0';
                free(key);
                key = nk;
                klen = last->key_len + 1;
            }
        }
        fw_etcd_kvs_free(&page);
        if (!more) break;
    }
    free(key);
    free(end);
    if (rev_out) *rev_out = rev;
    return rc;
}

int fw_etcd_put(fw_etcd *c, const char *key, const void *value, size_t value_len, int64_t lease,
                int64_t *rev_out, fw_etcd_kv **prev_out) {
    if (prev_out) *prev_out = NULL;
    if (!c || !key || (!value && value_len))
        return fw_err_set(FW_EINVAL, "fw_etcd_put: NULL argument");
    size_t klen = strlen(key);
    if (klen == 0) return fw_err_set(FW_EINVAL, "etcd put: empty key");
    size_t bytes = klen + value_len + S_OP_OVERHEAD;
    if (bytes > c->max_request_bytes)
        return fw_err_set(FW_ETOOBIG, "etcd put %.100s: request of %zu bytes exceeds the "
                                      "%zu-byte limit (etcd --max-request-bytes)",
                          key, bytes, c->max_request_bytes);
    json_t *req = json_object(), *resp = NULL;
    int rc = 0;
    if (!req || s_set_bytes(req, "key", key, klen) < 0 ||
        s_set_bytes(req, "value", value ? value : "", value_len) < 0 ||
        s_set_i64(req, "lease", lease) < 0 || s_set_true(req, "prev_kv", prev_out != NULL) < 0)
        rc = fw_err_set(FW_ENOMEM, "etcd put");
    if (rc == 0) rc = fw_etcd__request(c, "/v3/kv/put", req, 0, &resp);
    json_decref(req);
    if (rc == 0) {
        if (rev_out) *rev_out = s_header_revision(resp);
        json_t *pkv = json_object_get(resp, "prev_kv");
        if (prev_out && pkv) {
            fw_etcd_kv *kv = malloc(sizeof *kv);
            if (!kv) rc = fw_err_set(FW_ENOMEM, "etcd put");
            else if ((rc = fw_etcd__kv_parse(pkv, kv)) < 0) free(kv);
            else *prev_out = kv;
        }
    }
    json_decref(resp);
    return rc;
}

int fw_etcd_delete(fw_etcd *c, const char *key, bool prefix, int64_t *deleted_out,
                   int64_t *rev_out) {
    if (!c || !key) return fw_err_set(FW_EINVAL, "fw_etcd_delete: NULL argument");
    json_t *req = json_object(), *resp = NULL;
    int rc = req ? fw_etcd__set_keys(req, key, strlen(key), NULL, prefix)
                 : fw_err_set(FW_ENOMEM, "etcd delete");
    if (rc == 0) rc = fw_etcd__request(c, "/v3/kv/deleterange", req, 0, &resp);
    json_decref(req);
    if (rc == 0) {
        int64_t d = 0;
        rc = fw_etcd__get_i64(resp, "deleted", &d);
        if (deleted_out) *deleted_out = d;
        if (rev_out) *rev_out = s_header_revision(resp);
    }
    json_decref(resp);
    return rc;
}

int fw_etcd_compact(fw_etcd *c, int64_t revision, bool physical) {
    if (!c || revision <= 0) return fw_err_set(FW_EINVAL, "etcd compact: revision %" PRId64, revision);
    json_t *req = json_object(), *resp = NULL;
    int rc = 0;
    if (!req || s_set_i64(req, "revision", revision) < 0 || s_set_true(req, "physical", physical) < 0)
        rc = fw_err_set(FW_ENOMEM, "etcd compact");
    if (rc == 0) rc = fw_etcd__request(c, "/v3/kv/compaction", req, 0, &resp);
    json_decref(req);
    json_decref(resp);
    return rc;
}

/* ----------------------------------------------------------------- txn */

static void s_txn_fail(fw_etcd_txn *t, int err) {
    if (!t->err) t->err = err;
}

fw_etcd_txn *fw_etcd_txn_new(void) {
    fw_etcd_txn *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->compare = json_array();
    t->success = json_array();
    t->failure = json_array();
    t->bytes = S_OP_OVERHEAD;
    if (!t->compare || !t->success || !t->failure) fw_etcd_txn_destroy(&t);
    return t;
}

fw_etcd_txn *fw_etcd_txn_new_guarded(const char *guard_key, int64_t epoch) {
    if (!guard_key || !*guard_key || epoch <= 0) {
        fw_err_set(FW_EINVAL, "etcd guarded txn: key \"%s\" epoch %" PRId64,
                   guard_key ? guard_key : "(null)", epoch);
        return NULL;
    }
    fw_etcd_txn *t = fw_etcd_txn_new();
    if (!t) return NULL;
    fw_etcd_range_opts ko = {.keys_only = true};
    t->guard_key = strdup(guard_key);
    t->epoch = epoch;
    if (!t->guard_key ||
        fw_etcd_txn_compare(t, guard_key, FW_ETCD_CMP_CREATE, FW_ETCD_CMP_EQUAL, epoch) < 0 ||
        fw_etcd_txn_range(t, FW_ETCD_FAILURE, guard_key, &ko) < 0)
        fw_etcd_txn_destroy(&t);
    return t;
}

void fw_etcd_txn_destroy(fw_etcd_txn **tp) {
    if (!tp || !*tp) return;
    fw_etcd_txn *t = *tp;
    json_decref(t->compare);
    json_decref(t->success);
    json_decref(t->failure);
    free(t->guard_key);
    free(t);
    *tp = NULL;
}

static const char *s_cmp_target[] = {"VERSION", "CREATE", "MOD", "VALUE", "LEASE"};
static const char *s_cmp_field[] = {"version", "create_revision", "mod_revision", "value", "lease"};
static const char *s_cmp_result[] = {"EQUAL", "GREATER", "LESS", "NOT_EQUAL"};

static json_t *s_cmp_new(fw_etcd_txn *t, const char *key, fw_etcd_cmp_target target,
                         fw_etcd_cmp_result result) {
    if (!t) return NULL;
    if (!key || !*key || (unsigned)target > FW_ETCD_CMP_LEASE ||
        (unsigned)result > FW_ETCD_CMP_NOT_EQUAL) {
        s_txn_fail(t, fw_err_set(FW_EINVAL, "etcd txn compare: bad key, target or result"));
        return NULL;
    }
    json_t *cmp = json_object();
    if (!cmp || s_set_bytes(cmp, "key", key, strlen(key)) < 0 ||
        json_object_set_new(cmp, "target", json_string(s_cmp_target[target])) < 0 ||
        json_object_set_new(cmp, "result", json_string(s_cmp_result[result])) < 0) {
        json_decref(cmp);
        s_txn_fail(t, fw_err_set(FW_ENOMEM, "etcd txn compare"));
        return NULL;
    }
    t->bytes += strlen(key) + S_OP_OVERHEAD;
    return cmp;
}

static int s_txn_append(fw_etcd_txn *t, json_t *arr, json_t *item) {
    if (json_array_append_new(arr, item) < 0)
        s_txn_fail(t, fw_err_set(FW_ENOMEM, "etcd txn"));
    return t->err;
}

int fw_etcd_txn_compare(fw_etcd_txn *t, const char *key, fw_etcd_cmp_target target,
                        fw_etcd_cmp_result result, int64_t value) {
    if (!t) return fw_err_set(FW_EINVAL, "etcd txn: NULL txn");
    if (target == FW_ETCD_CMP_VALUE) {
        s_txn_fail(t, fw_err_set(FW_EINVAL, "etcd txn compare: use fw_etcd_txn_compare_value "
                                            "for VALUE"));
        return t->err;
    }
    json_t *cmp = s_cmp_new(t, key, target, result);
    if (!cmp) return t->err;
    /* Zero is a meaningful operand here (create_revision == 0: key absent),
     * so it is written explicitly rather than omitted. */
    if (json_object_set_new(cmp, s_cmp_field[target], fw_etcd__ji64(value)) < 0) {
        json_decref(cmp);
        s_txn_fail(t, fw_err_set(FW_ENOMEM, "etcd txn compare"));
        return t->err;
    }
    return s_txn_append(t, t->compare, cmp);
}

int fw_etcd_txn_compare_value(fw_etcd_txn *t, const char *key, fw_etcd_cmp_result result,
                              const void *val, size_t len) {
    if (!t) return fw_err_set(FW_EINVAL, "etcd txn: NULL txn");
    json_t *cmp = s_cmp_new(t, key, FW_ETCD_CMP_VALUE, result);
    if (!cmp) return t->err;
    if (s_set_bytes(cmp, "value", val ? val : "", val ? len : 0) < 0) {
        json_decref(cmp);
        s_txn_fail(t, fw_err_set(FW_ENOMEM, "etcd txn compare"));
        return t->err;
    }
    t->bytes += len;
    return s_txn_append(t, t->compare, cmp);
}

static json_t *s_branch(fw_etcd_txn *t, fw_etcd_branch b) {
    return b == FW_ETCD_SUCCESS ? t->success : b == FW_ETCD_FAILURE ? t->failure : NULL;
}

/* Wrap req as {"<kind>": req} and append it to branch b. */
static int s_txn_op(fw_etcd_txn *t, fw_etcd_branch b, const char *kind, json_t *req, size_t bytes) {
    json_t *arr = s_branch(t, b);
    if (!arr) {
        json_decref(req);
        s_txn_fail(t, fw_err_set(FW_EINVAL, "etcd txn: bad branch %d", (int)b));
        return t->err;
    }
    json_t *op = json_object();
    if (!op || json_object_set_new(op, kind, req) < 0) {
        json_decref(op);
        s_txn_fail(t, fw_err_set(FW_ENOMEM, "etcd txn"));
        return t->err;
    }
    t->bytes += bytes + S_OP_OVERHEAD;
    return s_txn_append(t, arr, op);
}

int fw_etcd_txn_put(fw_etcd_txn *t, fw_etcd_branch b, const char *key, const void *value,
                    size_t value_len, int64_t lease, bool prev_kv) {
    if (!t) return fw_err_set(FW_EINVAL, "etcd txn: NULL txn");
    if (!key || !*key || (!value && value_len)) {
        s_txn_fail(t, fw_err_set(FW_EINVAL, "etcd txn put: empty key or NULL value"));
        return t->err;
    }
    size_t klen = strlen(key);
    json_t *req = json_object();
    if (!req || s_set_bytes(req, "key", key, klen) < 0 ||
        s_set_bytes(req, "value", value ? value : "", value_len) < 0 ||
        s_set_i64(req, "lease", lease) < 0 || s_set_true(req, "prev_kv", prev_kv) < 0) {
        json_decref(req);
        s_txn_fail(t, fw_err_set(FW_ENOMEM, "etcd txn put"));
        return t->err;
    }
    return s_txn_op(t, b, "request_put", req, klen + value_len);
}

int fw_etcd_txn_delete(fw_etcd_txn *t, fw_etcd_branch b, const char *key, bool prefix,
                       bool prev_kv) {
    if (!t) return fw_err_set(FW_EINVAL, "etcd txn: NULL txn");
    if (!key) {
        s_txn_fail(t, fw_err_set(FW_EINVAL, "etcd txn delete: NULL key"));
        return t->err;
    }
    size_t klen = strlen(key);
    json_t *req = json_object();
    int rc = req ? fw_etcd__set_keys(req, key, klen, NULL, prefix)
                 : fw_err_set(FW_ENOMEM, "etcd txn delete");
    if (rc == 0 && s_set_true(req, "prev_kv", prev_kv) < 0)
        rc = fw_err_set(FW_ENOMEM, "etcd txn delete");
    if (rc < 0) {
        json_decref(req);
        s_txn_fail(t, rc);
        return t->err;
    }
    return s_txn_op(t, b, "request_delete_range", req, 2 * klen);
}

int fw_etcd_txn_range(fw_etcd_txn *t, fw_etcd_branch b, const char *key,
                      const fw_etcd_range_opts *opts) {
    if (!t) return fw_err_set(FW_EINVAL, "etcd txn: NULL txn");
    if (!key) {
        s_txn_fail(t, fw_err_set(FW_EINVAL, "etcd txn range: NULL key"));
        return t->err;
    }
    int rc;
    json_t *req = s_range_req(key, strlen(key), opts, &rc);
    if (!req) {
        s_txn_fail(t, rc);
        return t->err;
    }
    return s_txn_op(t, b, "request_range", req, 2 * strlen(key));
}

size_t fw_etcd_txn_ops(const fw_etcd_txn *t, fw_etcd_branch b) {
    if (!t) return 0;
    return json_array_size(b == FW_ETCD_SUCCESS ? t->success : t->failure);
}

size_t fw_etcd_txn_compares(const fw_etcd_txn *t) { return t ? json_array_size(t->compare) : 0; }
size_t fw_etcd_txn_bytes(const fw_etcd_txn *t) { return t ? t->bytes : 0; }

void fw_etcd_txn_result_free(fw_etcd_txn_result **rp) {
    if (!rp || !*rp) return;
    fw_etcd_txn_result *r = *rp;
    for (size_t i = 0; i < r->n_ops; i++) {
        fw_etcd_kvs_free(&r->ops[i].range);
        for (size_t k = 0; k < r->ops[i].n_prev; k++) fw_etcd_kv_clear(&r->ops[i].prev_kvs[k]);
        free(r->ops[i].prev_kvs);
    }
    free(r->ops);
    free(r);
    *rp = NULL;
}

static int s_op_parse(json_t *j, int64_t revision, fw_etcd_op_result *op) {
    json_t *v;
    if ((v = json_object_get(j, "response_range"))) {
        op->type = FW_ETCD_OP_RANGE;
        return fw_etcd__kvs_parse(v, revision, &op->range);
    }
    if ((v = json_object_get(j, "response_put"))) {
        op->type = FW_ETCD_OP_PUT;
        json_t *pkv = json_object_get(v, "prev_kv");
        if (!pkv) return 0;
        op->prev_kvs = calloc(1, sizeof *op->prev_kvs);
        if (!op->prev_kvs) return fw_err_set(FW_ENOMEM, "etcd txn result");
        int rc = fw_etcd__kv_parse(pkv, op->prev_kvs);
        if (rc < 0) {
            free(op->prev_kvs);
            op->prev_kvs = NULL;
            return rc;
        }
        op->n_prev = 1;
        return 0;
    }
    if ((v = json_object_get(j, "response_delete_range"))) {
        op->type = FW_ETCD_OP_DELETE;
        int rc = fw_etcd__get_i64(v, "deleted", &op->deleted);
        return rc < 0 ? rc : s_kv_array(json_object_get(v, "prev_kvs"), &op->prev_kvs, &op->n_prev);
    }
    return fw_err_set(FW_EPROTO, "etcd txn: unknown response kind");
}

int fw_etcd_txn_commit(fw_etcd *c, const fw_etcd_txn *t, fw_etcd_txn_result **out) {
    if (out) *out = NULL;
    if (!c || !t) return fw_err_set(FW_EINVAL, "fw_etcd_txn_commit: NULL argument");
    if (t->err)
        return fw_err_set(FW_ESTATE, "etcd txn: not committed because building it failed (%s)",
                          fw_strerror(t->err));
    size_t nc = json_array_size(t->compare), ns = json_array_size(t->success),
           nf = json_array_size(t->failure);
    size_t max = (size_t)c->max_txn_ops;
    if (nc > max || ns > max || nf > max)
        return fw_err_set(FW_ETOOBIG, "etcd txn: %zu compares, %zu success ops, %zu failure ops; "
                                      "etcd allows %zu of each (--max-txn-ops)",
                          nc, ns, nf, max);
    if (t->bytes > c->max_request_bytes)
        return fw_err_set(FW_ETOOBIG, "etcd txn: request of about %zu bytes exceeds the %zu-byte "
                                      "limit (etcd --max-request-bytes)",
                          t->bytes, c->max_request_bytes);
    json_t *req = json_object(), *resp = NULL;
    int rc = 0;
    if (!req || json_object_set(req, "compare", t->compare) < 0 ||
        json_object_set(req, "success", t->success) < 0 ||
        json_object_set(req, "failure", t->failure) < 0)
        rc = fw_err_set(FW_ENOMEM, "etcd txn");
    if (rc == 0) rc = fw_etcd__request(c, "/v3/kv/txn", req, 0, &resp);
    json_decref(req);
    if (rc < 0) return rc;

    fw_etcd_txn_result *r = calloc(1, sizeof *r);
    json_t *rs = json_object_get(resp, "responses");
    size_t n = json_is_array(rs) ? json_array_size(rs) : 0;
    if (!r || (n && !(r->ops = calloc(n, sizeof *r->ops)))) {
        rc = fw_err_set(FW_ENOMEM, "etcd txn result");
        goto done;
    }
    r->succeeded = json_is_true(json_object_get(resp, "succeeded"));
    r->revision = s_header_revision(resp);
    for (size_t i = 0; i < n; i++) {
        if ((rc = s_op_parse(json_array_get(rs, i), r->revision, &r->ops[i])) < 0) goto done;
        r->n_ops++;
    }
    if (n != (r->succeeded ? ns : nf)) {
        rc = fw_err_set(FW_EPROTO, "etcd txn: %zu responses for a branch of %zu ops", n,
                        r->succeeded ? ns : nf);
        goto done;
    }
    if (t->guard_key && !r->succeeded && r->n_ops > 0) {
        /* The hidden first failure op read the guard key: fenced when it is
         * gone or was created again (another lease, another epoch). */
        fw_etcd_kvs *g = r->n_ops ? r->ops[0].range : NULL;
        r->fenced = !g || g->n == 0 || g->kvs[0].create_revision != t->epoch;
        fw_etcd_kvs_free(&r->ops[0].range);
        memmove(r->ops, r->ops + 1, (r->n_ops - 1) * sizeof *r->ops);
        r->n_ops--;
    }
    if (r->fenced)
        rc = fw_err_set(FW_EFENCED, "etcd txn: fenced: key %s no longer has create_revision "
                                    "%" PRId64 " (leadership moved)",
                        t->guard_key, t->epoch);
    else if (!r->succeeded)
        rc = fw_err_set(FW_ECONFLICT, "etcd txn: a compare failed at revision %" PRId64,
                        r->revision);
done:
    json_decref(resp);
    if (rc == FW_ENOMEM || rc == FW_EPROTO || !out) fw_etcd_txn_result_free(&r);
    else *out = r;
    return rc;
}
