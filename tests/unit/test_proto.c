/* The wire protocol: every message of the table round-trips (all fields and
 * required only), the envelope has the documented bytes, setters enforce the
 * schema, lz4 is transparent and checked, and each kind of bad frame is
 * rejected with the right error and a detail naming the place. Bad frames
 * are built with msgpack-c's packer, independently of the encoder. */
#include "fw_err.h"
#include "fw_proto.h"
#include "fw_test.h"

#include <lz4frame.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ helpers */

/* A frame under construction: envelope written, payload map to follow. */
typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} frame_t;

static void f_begin_env(frame_t *f, uint32_t nenv, uint64_t magic, uint64_t version, uint64_t id) {
    msgpack_sbuffer_init(&f->sb);
    msgpack_packer_init(&f->pk, &f->sb, msgpack_sbuffer_write);
    msgpack_pack_array(&f->pk, nenv);
    msgpack_pack_uint64(&f->pk, magic);
    msgpack_pack_uint64(&f->pk, version);
    msgpack_pack_uint64(&f->pk, id);
    msgpack_pack_uint64(&f->pk, 0);  /* flags */
    msgpack_pack_uint64(&f->pk, 42); /* request id */
    msgpack_pack_uint64(&f->pk, 7);  /* epoch */
    msgpack_pack_str_with_body(&f->pk, "t", 1);
}

/* Envelope of message id with a payload map of n entries to follow. */
static void f_begin(frame_t *f, int id, uint32_t n) {
    f_begin_env(f, 8, FW_PROTO_MAGIC, FW_PROTO_VERSION, (uint64_t)id);
    msgpack_pack_map(&f->pk, n);
}

static void f_key(frame_t *f, const char *k) {
    msgpack_pack_str_with_body(&f->pk, k, strlen(k));
}
static void f_str(frame_t *f, const char *k, const char *v) {
    f_key(f, k);
    msgpack_pack_str_with_body(&f->pk, v, strlen(v));
}
static void f_uint(frame_t *f, const char *k, uint64_t v) {
    f_key(f, k);
    msgpack_pack_uint64(&f->pk, v);
}

/* Decode the frame, free it, return the error (0 on success). */
static int f_decode(frame_t *f, fw_msg_t **out) {
    fw_msg_t *m = NULL;
    fw_err_clear();
    int rc = fw_msg_decode(f->sb.data, f->sb.size, &m);
    msgpack_sbuffer_destroy(&f->sb);
    if (rc < 0 && m) rc = -1000; /* a failed decode must leave *msg NULL */
    if (out)
        *out = m;
    else
        fw_msg_destroy(&m);
    return rc;
}

/* The 5 fields TASK_ASSIGN requires, to which a test adds its own. */
#define TA_REQUIRED 5
static void f_task_assign_required(frame_t *f, const char *skip) {
    if (strcmp(skip, "job_id")) f_str(f, "job_id", "j1");
    if (strcmp(skip, "task_id")) f_str(f, "task_id", "t1");
    if (strcmp(skip, "attempt")) f_uint(f, "attempt", 1);
    if (strcmp(skip, "kind")) f_str(f, "kind", "train");
    if (strcmp(skip, "spec")) f_str(f, "spec", "{}");
}

#define CHECK_REJECT(expr, err, needle)                                                            \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        CHECKF(rc_ == (err), "rc %s (%d), want %s; detail: %s", fw_errname(rc_), rc_,              \
               fw_errname(err), fw_err_detail());                                                  \
        CHECKF(strstr(fw_err_detail(), (needle)) != NULL, "detail \"%s\" lacks \"%s\"",            \
               fw_err_detail(), (needle));                                                         \
    } while (0)

static int s_roundtrip(const fw_msg_t *m, fw_msg_t **out, uint8_t **buf, size_t *len) {
    int rc = fw_msg_encode(m, buf, len);
    if (rc < 0) return rc;
    return fw_msg_decode(*buf, *len, out);
}

/* ------------------------------------------------------------ schema lint */

static bool s_is_ident(const char *s) {
    if (!*s) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_')) return false;
    return true;
}

static void s_lint_fields(const fw_msg_info *mi) {
    for (int i = 0; i < mi->nfields; i++) {
        const fw_field_info *f = &mi->fields[i];
        CHECKF(s_is_ident(f->name) && f->name_len == strlen(f->name) && f->name_len <= 32,
               "%s.%s: field names are lower_snake_case, at most 32 bytes", mi->name, f->name);
        for (int j = 0; j < i; j++)
            CHECKF(strcmp(f->name, mi->fields[j].name) != 0, "%s.%s appears twice", mi->name,
                   f->name);
        CHECKF(f->since >= mi->since && f->since <= FW_PROTO_VERSION, "%s.%s: since %d", mi->name,
               f->name, f->since);
        bool needs_rec = f->type == FW_T_REC || f->type == FW_T_RECLIST;
        CHECKF(needs_rec == (f->rec != FW_REC_NONE),
               "%s.%s: REF must name a record exactly for REC/RECLIST", mi->name, f->name);
        bool bounded = f->type == FW_T_STR || f->type == FW_T_JSON || f->type == FW_T_BIN ||
                       f->type == FW_T_STRLIST || f->type == FW_T_UINTLIST ||
                       f->type == FW_T_STRMAP || f->type == FW_T_MAP || f->type == FW_T_RECLIST;
        if (bounded)
            CHECKF(f->max > 0 && f->max <= FW_PROTO_MAX_FRAME / 2,
                   "%s.%s: needs a MAX below half a frame", mi->name, f->name);
        if (f->type == FW_T_STRLIST || f->type == FW_T_UINTLIST || f->type == FW_T_STRMAP ||
            f->type == FW_T_MAP || f->type == FW_T_RECLIST)
            CHECKF(f->max <= FW_PROTO_MAX_ITEMS, "%s.%s: more entries than FW_PROTO_MAX_ITEMS",
                   mi->name, f->name);
        CHECKF(f->doc && *f->doc, "%s.%s: undocumented", mi->name, f->name);
    }
}

static void test_schema_lint(void) {
    int n = fw_proto_msg_count();
    CHECK(n >= 38);
    for (int i = 0; i < n; i++) {
        const fw_msg_info *mi = fw_proto_msg_at(i);
        CHECK(fw_proto_msg_info(mi->id) == mi);
        CHECKF(mi->id > 0 && mi->id <= 0xffff, "%s: id %d", mi->name, mi->id);
        CHECKF(mi->since >= 1 && mi->since <= FW_PROTO_VERSION, "%s: since %d", mi->name,
               mi->since);
        CHECKF(mi->reply == FW_MSG_NONE || fw_proto_msg_info(mi->reply), "%s: reply unknown",
               mi->name);
        CHECKF(mi->doc && *mi->doc, "%s: undocumented", mi->name);
        CHECK(strcmp(fw_msg_id_name(mi->id), mi->name) == 0);
        s_lint_fields(mi);
        /* Every client request authenticates with a bearer token. */
        if (mi->sender == FW_ROLE_CLIENT) {
            bool token = false;
            for (int j = 0; j < mi->nfields; j++)
                token |= !strcmp(mi->fields[j].name, "token") && mi->fields[j].required &&
                         mi->fields[j].type == FW_T_STR;
            CHECKF(token, "%s: a client request needs a required STR token field", mi->name);
        }
        /* Field ids address this message's slots. */
        fw_msg_t *m = fw_msg_new(mi->id);
        REQUIRE(m);
        for (int j = 0; j < mi->nfields; j++)
            CHECK_EQ_INT(fw_msg_field(m, mi->fields[j].name), (mi->id << 8) | j);
        fw_msg_destroy(&m);
    }
    for (int r = 1; r < FW_REC__COUNT; r++) {
        const fw_msg_info *ri = fw_proto_rec_info((fw_rec_id)r);
        REQUIRE(ri);
        CHECK(ri->is_record && ri->nfields > 0 && ri->nfields <= 64);
        s_lint_fields(ri);
    }
    CHECK(fw_proto_rec_info(FW_REC_NONE) == NULL);
    CHECK(fw_proto_msg_info(0) == NULL && fw_proto_msg_info(4) == NULL &&
          fw_proto_msg_info(65536) == NULL);
    /* Generated ids, spot-checked against the table. */
    CHECK_EQ_INT(FW_MSG_ACK, 1);
    CHECK_EQ_INT(FW_MSG_TASK_ASSIGN, 19);
    CHECK_EQ_INT(FW_F_TASK_ASSIGN_job_id, (19 << 8) | 0);
    CHECK_EQ_INT(FW_F_TASK_ASSIGN_spec, (19 << 8) | 4);
    CHECK_EQ_INT(FW_F_GPU_uuid, 3);
    CHECK_EQ_STR(fw_proto_type_name(FW_T_RECLIST), "RECLIST");
    CHECK_EQ_STR(fw_proto_role_name(FW_ROLE_CLIENT), "client");
}

/* ------------------------------------------------------------ round trips */

/* Every message of the table, generated from the schema so new rows are covered. */
static void test_roundtrip_every_message(void) {
    int n = fw_proto_msg_count(), ok = 0;
    for (int i = 0; i < n; i++) {
        const fw_msg_info *mi = fw_proto_msg_at(i);
        for (int all = 0; all <= 1; all++) {
            for (uint64_t seed = 0; seed < 6; seed++) {
                fw_msg_t *m = fw_proto_example(mi->id, all, seed);
                REQUIRE(m);
                fw_msg_t *back = NULL;
                uint8_t *buf = NULL;
                size_t len = 0;
                int rc = s_roundtrip(m, &back, &buf, &len);
                CHECKF(rc == 0, "%s all=%d seed=%llu: %s %s", mi->name, all,
                       (unsigned long long)seed, fw_errname(rc), fw_err_detail());
                if (rc == 0) {
                    CHECKF(fw_msg_equal(m, back), "%s all=%d seed=%llu differs after a round trip",
                           mi->name, all, (unsigned long long)seed);
                    CHECK_EQ_INT(fw_msg_id(back), mi->id);
                    CHECK_EQ_INT(fw_msg_version(back), FW_PROTO_VERSION);
                    for (int j = 0; j < mi->nfields; j++) {
                        const fw_field_info *f = &mi->fields[j];
                        bool want = all || f->required;
                        CHECKF(fw_msg_has(back, f->name) == want, "%s.%s present=%d", mi->name,
                               f->name, !want);
                    }
                    /* Deterministic: re-encoding the decoded message gives the same bytes. */
                    uint8_t *buf2 = NULL;
                    size_t len2 = 0;
                    CHECK(fw_msg_encode(back, &buf2, &len2) == 0 && len2 == len &&
                          memcmp(buf, buf2, len) == 0);
                    free(buf2);
                    ok++;
                }
                free(buf);
                fw_msg_destroy(&back);
                fw_msg_destroy(&m);
            }
        }
    }
    CHECK_EQ_INT(ok, n * 2 * 6);
}

/* fw_msg_equal must notice a difference, or the round trip proves nothing. */
static void test_equal_detects_changes(void) {
    fw_msg_t *a = fw_proto_example(FW_MSG_AGENT_REGISTER, true, 3);
    fw_msg_t *b = fw_msg_dup(a);
    REQUIRE(a && b);
    CHECK(fw_msg_equal(a, b));
    fw_msg_set_request_id(b, fw_msg_request_id(b) + 1);
    CHECK(!fw_msg_equal(a, b));
    fw_msg_set_request_id(b, fw_msg_request_id(a));
    CHECK(fw_msg_set_str(b, "hostname", "other") == 0);
    CHECK(!fw_msg_equal(a, b));
    fw_msg_destroy(&b);
    b = fw_msg_dup(a);
    /* A change deep inside a record: resources.gpus[0].memory_mb. */
    fw_val_t *res = fw_val_dup(fw_msg_get_map(b, "resources"));
    REQUIRE(res);
    fw_val_t *gpus = fw_val_dup(fw_val_map_get(res, "gpus"));
    REQUIRE(gpus && fw_val_size(gpus) >= 1);
    fw_val_t *g0 = fw_val_dup(fw_val_at(gpus, 0));
    CHECK(fw_val_map_set_uint(g0, "memory_mb", fw_val_map_uint(g0, "memory_mb") + 1) == 0);
    fw_val_t *ng = fw_val_new_array();
    CHECK(fw_val_array_push(ng, &g0) == 0);
    CHECK(g0 == NULL);
    for (size_t i = 1; i < fw_val_size(gpus); i++) {
        fw_val_t *gi = fw_val_dup(fw_val_at(gpus, i));
        fw_val_array_push(ng, &gi);
    }
    CHECK(fw_val_map_set(res, "gpus", &ng) == 0);
    CHECK(fw_msg_set_map(b, "resources", &res) == 0);
    CHECK(res == NULL);
    CHECK(!fw_msg_equal(a, b));
    fw_val_destroy(&gpus);
    fw_msg_destroy(&a);
    fw_msg_destroy(&b);
}

/* The byte layout that docs/protocol.md promises. */
static void test_envelope_layout(void) {
    fw_msg_t *m = fw_proto_example(FW_MSG_TASK_ASSIGN, false, 1);
    REQUIRE(m);
    fw_msg_set_request_id(m, 0x0102030405060708ull);
    fw_msg_set_epoch(m, 0x1112131415161718ull);
    CHECK(fw_msg_set_sender(m, "c1") == 0);
    fw_msg_set_flags(m, 0x8000);
    uint8_t *b;
    size_t len;
    REQUIRE(fw_msg_encode(m, &b, &len) == 0);
    static const uint8_t want[] = {0x98, 0xce, 'F',  'W',  'L',  'Y',  0xcc, 0x01, 0xcd,
                                   0x00, 19,   0xcd, 0x80, 0x00, 0xcf, 1,    2,    3,
                                   4,    5,    6,    7,    8,    0xcf, 0x11, 0x12, 0x13,
                                   0x14, 0x15, 0x16, 0x17, 0x18, 0xa2, 'c',  '1',  0x85};
    REQUIRE(len > sizeof want);
    for (size_t i = 0; i < sizeof want; i++)
        CHECKF(b[i] == want[i], "byte %zu is 0x%02x, want 0x%02x", i, b[i], want[i]);
    fw_msg_t *d = NULL;
    CHECK(fw_msg_decode(b, len, &d) == 0);
    CHECK(d && fw_msg_flags(d) == 0x8000 && fw_msg_epoch(d) == 0x1112131415161718ull);
    CHECK(d && strcmp(fw_msg_sender(d), "c1") == 0 &&
          fw_msg_request_id(d) == 0x0102030405060708ull);
    free(b);
    fw_msg_destroy(&d);
    fw_msg_destroy(&m);
}

/* ------------------------------------------------------------ setters */

static void test_setters_getters(void) {
    fw_msg_t *m = fw_msg_new(FW_MSG_TASK_ASSIGN);
    REQUIRE(m);
    CHECK(fw_msg_new(12345) == NULL);
    CHECK(fw_msg_set_str(m, "job_id", "j1") == 0);
    CHECK(fw_msg_set_str_f(m, FW_F_TASK_ASSIGN_task_id, "t1") == 0);
    CHECK(fw_msg_set_uint(m, "attempt", 2) == 0);
    CHECK(fw_msg_set_int_f(m, FW_F_TASK_ASSIGN_rank, 3) ==
          0); /* int setter, UINT field, in range */
    CHECK(fw_msg_set_str(m, "kind", "train") == 0);

    /* Encoding needs every required field, and says which is missing. */
    uint8_t *buf;
    size_t len;
    CHECK_REJECT(fw_msg_encode(m, &buf, &len), FW_EINVAL, "spec");
    CHECK(fw_msg_set_str(m, "spec", "{\"model\":\"gpt2\"}") == 0);

    CHECK_REJECT(fw_msg_set_str(m, "nope", "x"), FW_EINVAL, "no field 'nope'");
    CHECK_REJECT(fw_msg_set_uint(m, "kind", 1), FW_EINVAL, "kind");
    CHECK_REJECT(fw_msg_set_str(m, "attempt", "1"), FW_EINVAL, "attempt");
    CHECK_REJECT(fw_msg_set_int(m, "attempt", -1), FW_EINVAL, "TASK_ASSIGN.attempt");
    CHECK_REJECT(fw_msg_set_uint(m, "rank", 65536), FW_ETOOBIG, "rank");
    CHECK_REJECT(fw_msg_set_str_f(m, FW_F_JOB_GET_job_id, "x"), FW_EINVAL, "another message");
    CHECK_REJECT(fw_msg_set_str_f(m, FW_F_GPU_name, "x"), FW_EINVAL, "another message");
    char big[200];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    CHECK_REJECT(fw_msg_set_str(m, "job_id", big), FW_ETOOBIG, "TASK_ASSIGN.job_id");
    CHECK_REJECT(fw_msg_set_str(m, "job_id", "bad \xc3\x28 utf8"), FW_EINVAL, "UTF-8");
    CHECK_EQ_STR(fw_msg_get_str(m, "job_id"), "j1"); /* failed setters left it alone */

    /* Nested values are checked against the schema when attached. */
    fw_val_t *env = fw_val_new_map();
    fw_val_map_set_str(env, "A", "1");
    fw_val_map_set_uint(env, "B", 2); /* STRMAP values must be strings */
    CHECK_REJECT(fw_msg_set_map(m, "env", &env), FW_EINVAL, "TASK_ASSIGN.env.B");
    CHECK(env == NULL); /* consumed even on failure */
    env = fw_val_new_map();
    fw_val_map_set_str(env, "A", "1");
    fw_val_map_set_str(env, "A", "2"); /* replaces */
    fw_val_map_set_str(env, "B", "3");
    CHECK(fw_msg_set_map(m, "env", &env) == 0);
    fw_val_t *gpus = fw_val_new_array();
    fw_val_array_push_uint(gpus, 0);
    fw_val_array_push_uint(gpus, 3);
    fw_val_t *wrong = fw_val_new_array();
    CHECK_REJECT(fw_msg_set_map(m, "gpus", &wrong), FW_EINVAL, "expected a map");
    CHECK(fw_msg_set_array(m, "gpus", &gpus) == 0);
    CHECK(fw_msg_set_double(m, "timeout_ms", 1.0) == FW_EINVAL);

    fw_msg_set_request_id(m, 99);
    REQUIRE(fw_msg_encode(m, &buf, &len) == 0);
    fw_msg_t *d = NULL;
    REQUIRE(fw_msg_decode(buf, len, &d) == 0);
    free(buf);
    CHECK_EQ_STR(fw_msg_get_str(d, "job_id"), "j1");
    CHECK_EQ_STR(fw_msg_get_str_f(d, FW_F_TASK_ASSIGN_spec), "{\"model\":\"gpt2\"}");
    CHECK_EQ_INT(fw_msg_get_uint(d, "attempt"), 2);
    CHECK_EQ_INT(fw_msg_get_int(d, "attempt"), 2);
    CHECK_EQ_INT(fw_msg_get_uint_f(d, FW_F_TASK_ASSIGN_rank), 3);
    CHECK(!fw_msg_has(d, "world_size") && fw_msg_get_uint(d, "world_size") == 0);
    CHECK(fw_msg_get_str(d, "attempt") == NULL); /* wrong type: default */
    const fw_val_t *e = fw_msg_get_map(d, "env");
    CHECK(fw_val_size(e) == 2 && strcmp(fw_val_map_str(e, "A"), "2") == 0 &&
          fw_val_map_get(e, "Z") == NULL);
    const fw_val_t *g = fw_msg_get_array_f(d, FW_F_TASK_ASSIGN_gpus);
    CHECK(fw_val_size(g) == 2 && fw_val_uint(fw_val_at(g, 1)) == 3 && fw_val_at(g, 2) == NULL);
    CHECK(fw_msg_get_map(d, "gpus") == NULL && fw_msg_get_array(d, "env") == NULL);

    /* Replies keep the request id. */
    fw_msg_t *ack = fw_msg_new_reply(d, FW_MSG_ACK);
    CHECK(ack && fw_msg_request_id(ack) == 99);
    fw_msg_t *err = fw_msg_new_error(d, FW_EAUTH, "token %s rejected", "abc");
    CHECK(err && fw_msg_id(err) == FW_MSG_ERROR && fw_msg_request_id(err) == 99);
    CHECK(err && fw_msg_get_int(err, "code") == FW_EAUTH);
    CHECK_EQ_STR(fw_msg_get_str(err, "message"), "token abc rejected");
    CHECK(fw_msg_unset(d, "env") == 0 && !fw_msg_has(d, "env"));
    CHECK_EQ_STR(fw_msg_name(d), "TASK_ASSIGN");
    fw_msg_destroy(&ack);
    fw_msg_destroy(&err);
    fw_msg_destroy(&d);
    fw_msg_destroy(&m);
    fw_msg_destroy(&m); /* idempotent */
    CHECK(m == NULL);

    /* Integers at their limits, bool, double, empty bin. */
    m = fw_msg_new(FW_MSG_TASK_RESULT);
    fw_msg_set_str(m, "task_id", "t");
    fw_msg_set_uint(m, "attempt", UINT64_MAX);
    fw_msg_set_str(m, "status", "failed");
    CHECK(fw_msg_set_int(m, "exit_code", INT64_MIN) == 0);
    CHECK_REJECT(fw_msg_set_uint(m, "exit_code", (uint64_t)INT64_MAX + 1), FW_EINVAL, "exit_code");
    REQUIRE(s_roundtrip(m, &d, &buf, &len) == 0);
    CHECK(fw_msg_get_uint(d, "attempt") == UINT64_MAX &&
          fw_msg_get_int(d, "exit_code") == INT64_MIN);
    free(buf);
    fw_msg_destroy(&d);
    fw_msg_destroy(&m);
    m = fw_msg_new(FW_MSG_LOG_CHUNK);
    fw_msg_set_str(m, "task_id", "t");
    fw_msg_set_uint(m, "attempt", 1);
    fw_msg_set_uint(m, "stream", 2);
    fw_msg_set_uint(m, "offset", 0);
    CHECK(fw_msg_set_bin(m, "data", NULL, 0) == 0);
    CHECK(fw_msg_set_bool(m, "eof", true) == 0);
    REQUIRE(s_roundtrip(m, &d, &buf, &len) == 0);
    size_t bl = 99;
    CHECK(fw_msg_get_bin(d, "data", &bl) != NULL && bl == 0);
    CHECK(fw_msg_get_bool(d, "eof"));
    free(buf);
    fw_msg_destroy(&d);
    fw_msg_destroy(&m);

    /* Records built by hand: unknown keys and missing required fields are caught. */
    m = fw_msg_new(FW_MSG_AGENT_REGISTER);
    fw_val_t *res = fw_val_new_map();
    fw_val_map_set_uint(res, "cpus", 8);
    CHECK_REJECT(fw_msg_set_map(m, "resources", &res), FW_EINVAL, "required field 'memory_mb'");
    res = fw_val_new_map();
    fw_val_map_set_uint(res, "cpus", 8);
    fw_val_map_set_uint(res, "memory_mb", 1024);
    fw_val_map_set_uint(res, "cpu", 8);
    CHECK_REJECT(fw_msg_set_map(m, "resources", &res), FW_EINVAL, "no field 'cpu'");
    res = fw_val_new_map();
    fw_val_map_set_uint(res, "cpus", 8);
    fw_val_map_set_uint(res, "memory_mb", 1024);
    fw_val_t *gl = fw_val_new_array(), *g0 = fw_val_new_map();
    fw_val_map_set_uint(g0, "index", 0);
    fw_val_map_set_str(g0, "name", "H100");
    fw_val_map_set_str(g0, "memory_mb", "80"); /* wrong kind */
    fw_val_array_push(gl, &g0);
    fw_val_map_set(res, "gpus", &gl);
    CHECK_REJECT(fw_msg_set_map(m, "resources", &res), FW_EINVAL,
                 "AGENT_REGISTER.resources.gpus[0].memory_mb");
    fw_msg_destroy(&m);

    /* Sender name bounds. */
    m = fw_msg_new(FW_MSG_ACK);
    CHECK(fw_msg_set_sender(m, "coord-1") == 0);
    memset(big, 's', 65);
    big[65] = '\0';
    CHECK(fw_msg_set_sender(m, big) == FW_ETOOBIG);
    CHECK_EQ_STR(fw_msg_sender(m), "coord-1");
    fw_msg_destroy(&m);
}

static void test_values(void) {
    fw_val_t *v = fw_val_new_map();
    fw_val_map_set_int(v, "neg", -5);
    fw_val_map_set_int(v, "pos", 5); /* canonical: non-negative integers are UINT */
    fw_val_map_set_double(v, "d", 1.5);
    fw_val_map_set_nil(v, "n");
    fw_val_map_set_bool(v, "b", true);
    CHECK(fw_val_kind_of(fw_val_map_get(v, "neg")) == FW_VAL_INT);
    CHECK(fw_val_kind_of(fw_val_map_get(v, "pos")) == FW_VAL_UINT);
    CHECK(fw_val_map_int(v, "pos") == 5 && fw_val_map_int(v, "neg") == -5 &&
          fw_val_map_uint(v, "neg") == 0);
    CHECK(fw_val_double(fw_val_map_get(v, "pos")) == 5.0);
    CHECK(fw_val_kind_of(fw_val_map_get(v, "n")) == FW_VAL_NIL &&
          fw_val_bool(fw_val_map_get(v, "b")));
    CHECK_EQ_STR(fw_val_map_key(v, 0), "neg");
    CHECK(fw_val_map_key(v, 5) == NULL && fw_val_kind_of(NULL) == FW_VAL_NONE);
    CHECK(fw_val_array_push_str(v, "x") == FW_EINVAL); /* not an array */
    fw_val_t *d = fw_val_dup(v);
    CHECK(fw_val_equal(v, d));
    fw_val_map_set_int(d, "neg", -6);
    CHECK(!fw_val_equal(v, d));
    fw_val_destroy(&d);
    fw_val_destroy(&v);
    fw_val_destroy(&v);
    CHECK(v == NULL);
}

/* ------------------------------------------------------------ lz4 */

static char *s_text(size_t n) {
    static const char *words[] = {"the ",  "model ", "of ",        "training ",
                                  "data ", "loss ",  "\"step\": ", "42, "};
    char *t = malloc(n + 1);
    uint64_t st = 7;
    size_t i = 0;
    while (i < n) {
        const char *w = words[fw_test_rand(&st) % 8];
        for (; *w && i < n; w++) t[i++] = *w;
    }
    t[n] = '\0';
    return t;
}

/* Position of the LZ4 frame magic (04 22 4d 18) in buf, or 0. */
static size_t s_find_lz4(const uint8_t *b, size_t len) {
    for (size_t i = 0; i + 4 <= len; i++)
        if (b[i] == 0x04 && b[i + 1] == 0x22 && b[i + 2] == 0x4d && b[i + 3] == 0x18) return i;
    return 0;
}

static void test_lz4(void) {
    /* 1 MiB of compressible text as BIN and as JSON. */
    size_t n = 1u << 20;
    char *text = s_text(n);
    fw_msg_t *m = fw_proto_example(FW_MSG_ARTIFACT_PUT_CHUNK, false, 1);
    REQUIRE(m && fw_msg_set_bin(m, "data", text, n) == 0);
    uint8_t *buf;
    size_t len;
    fw_msg_t *d = NULL;
    REQUIRE(s_roundtrip(m, &d, &buf, &len) == 0);
    CHECKF(len < n / 2, "1 MiB of text encoded to %zu bytes", len);
    CHECK(fw_msg_flags(d) & FW_FLAG_LZ4);
    size_t got;
    const void *data = fw_msg_get_bin(d, "data", &got);
    CHECK(got == n && memcmp(data, text, n) == 0);
    CHECK(fw_msg_equal(m, d));
    fw_msg_destroy(&d);

    /* Corrupt the compressed bytes anywhere: the frame's checksum catches it. */
    size_t at = s_find_lz4(buf, len);
    REQUIRE(at > 0);
    int rejected = 0, tries = 0;
    for (size_t off = at + 8; off < len; off += (len - at) / 40 + 1) {
        buf[off] ^= 0x5a;
        int rc = fw_msg_decode(buf, len, &d);
        tries++;
        rejected += rc == FW_EPROTO && strstr(fw_err_detail(), "lz4") && !d;
        fw_msg_destroy(&d);
        buf[off] ^= 0x5a;
    }
    CHECK_EQ_INT(rejected, tries);
    CHECK(fw_msg_decode(buf, len, &d) == 0); /* intact again */
    fw_msg_destroy(&d);
    free(buf);
    fw_msg_destroy(&m);

    m = fw_proto_example(FW_MSG_TASK_ASSIGN, false, 2);
    REQUIRE(fw_msg_set_str(m, "spec", text) == 0);
    REQUIRE(s_roundtrip(m, &d, &buf, &len) == 0);
    CHECK(len < n / 2 && (fw_msg_flags(d) & FW_FLAG_LZ4));
    CHECK(d && strcmp(fw_msg_get_str(d, "spec"), text) == 0);
    free(buf);
    fw_msg_destroy(&d);

    /* Under the threshold: stored plainly. */
    text[FW_PROTO_LZ4_THRESHOLD - 1] = '\0';
    REQUIRE(fw_msg_set_str(m, "spec", text) == 0);
    REQUIRE(s_roundtrip(m, &d, &buf, &len) == 0);
    CHECK(len > FW_PROTO_LZ4_THRESHOLD && !(fw_msg_flags(d) & FW_FLAG_LZ4));
    free(buf);
    fw_msg_destroy(&d);
    fw_msg_destroy(&m);

    /* Incompressible: stored plainly too. */
    uint8_t *noise = malloc(n);
    uint64_t st = 99;
    for (size_t i = 0; i < n; i++) noise[i] = (uint8_t)fw_test_rand(&st);
    m = fw_proto_example(FW_MSG_TASK_LOG, false, 1);
    REQUIRE(fw_msg_set_bin(m, "data", noise, n) == 0);
    REQUIRE(s_roundtrip(m, &d, &buf, &len) == 0);
    CHECK(len > n && !(fw_msg_flags(d) & FW_FLAG_LZ4) && fw_msg_equal(m, d));
    free(buf);
    fw_msg_destroy(&d);
    fw_msg_destroy(&m);
    free(noise);

    /* Hand-made lz4 ext values: declared size beyond the field's MAX, no
     * checksum, no content size, another ext type, ext where not allowed. */
    size_t zn = (4u << 20) + 1; /* TASK_LOG.data allows 4 MiB */
    char *zeros = calloc(1, zn);
    struct {
        size_t size;
        bool content_size, checksum;
        int8_t type;
        const char *field;
        int err;
        const char *needle;
    } cases[] = {
        {zn, true, true, FW_PROTO_EXT_LZ4, "data", FW_ETOOBIG, "inflates to 4194305 bytes"},
        {70000, true, false, FW_PROTO_EXT_LZ4, "data", FW_EPROTO, "checksum"},
        {70000, false, true, FW_PROTO_EXT_LZ4, "data", FW_EPROTO, "content size"},
        {70000, true, true, 2, "data", FW_EPROTO, "unknown ext type 2"},
        {70000, true, true, FW_PROTO_EXT_LZ4, "offset", FW_EPROTO,
         "TASK_LOG.offset: expected uint, got ext"},
        {70000, true, true, FW_PROTO_EXT_LZ4, "data", 0, ""},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        LZ4F_preferences_t p;
        memset(&p, 0, sizeof p);
        p.frameInfo.contentSize = cases[c].content_size ? cases[c].size : 0;
        p.frameInfo.contentChecksumFlag =
            cases[c].checksum ? LZ4F_contentChecksumEnabled : LZ4F_noContentChecksum;
        size_t cap = LZ4F_compressFrameBound(cases[c].size, &p);
        void *z = malloc(cap);
        size_t zl = LZ4F_compressFrame(z, cap, zeros, cases[c].size, &p);
        REQUIRE(!LZ4F_isError(zl));
        frame_t f;
        f_begin(&f, FW_MSG_TASK_LOG, 5);
        f_str(&f, "task_id", "t");
        f_uint(&f, "attempt", 1);
        f_uint(&f, "stream", 0);
        if (strcmp(cases[c].field, "offset")) f_uint(&f, "offset", 0);
        f_key(&f, cases[c].field);
        msgpack_pack_ext(&f.pk, zl, cases[c].type);
        msgpack_pack_ext_body(&f.pk, z, zl);
        if (!strcmp(cases[c].field, "offset")) {
            f_key(&f, "data");
            msgpack_pack_bin(&f.pk, 0);
        }
        fw_msg_t *out = NULL;
        int rc = f_decode(&f, &out);
        if (cases[c].err) {
            CHECK_REJECT(rc, cases[c].err, cases[c].needle);
        } else {
            size_t dl = 0;
            CHECK(rc == 0 && fw_msg_get_bin(out, "data", &dl) && dl == cases[c].size);
        }
        fw_msg_destroy(&out);
        free(z);
    }
    /* lz4 only at the top level: not inside a list. */
    {
        frame_t f;
        f_begin(&f, FW_MSG_HEARTBEAT, 2);
        f_str(&f, "agent_id", "a");
        f_key(&f, "running");
        msgpack_pack_array(&f.pk, 1);
        msgpack_pack_ext(&f.pk, 4, FW_PROTO_EXT_LZ4);
        msgpack_pack_ext_body(&f.pk, "\x04\x22\x4d\x18", 4);
        CHECK_REJECT(f_decode(&f, NULL), FW_EPROTO, "HEARTBEAT.running[0]: expected str, got ext");
    }
    free(zeros);
    free(text);
}

/* ------------------------------------------------------------ rejections */

static void test_reject_types_and_required(void) {
    frame_t f;
    /* Wrong type at the top level. */
    f_begin(&f, FW_MSG_TASK_ASSIGN, TA_REQUIRED);
    f_task_assign_required(&f, "attempt");
    f_str(&f, "attempt", "1");
    CHECK_REJECT(f_decode(&f, NULL), FW_EPROTO, "TASK_ASSIGN.attempt: expected uint, got str");

    /* Wrong type deep inside a record. */
    f_begin(&f, FW_MSG_AGENT_REGISTER, 3);
    f_str(&f, "agent_id", "a1");
    f_str(&f, "hostname", "h1");
    f_key(&f, "resources");
    msgpack_pack_map(&f.pk, 3);
    f_uint(&f, "cpus", 8);
    f_uint(&f, "memory_mb", 1024);
    f_key(&f, "gpus");
    msgpack_pack_array(&f.pk, 2);
    for (int i = 0; i < 2; i++) {
        msgpack_pack_map(&f.pk, 3);
        f_uint(&f, "index", (uint64_t)i);
        f_key(&f, "name");
        if (i == 0)
            msgpack_pack_str_with_body(&f.pk, "H100", 4);
        else
            msgpack_pack_uint64(&f.pk, 7);
        f_uint(&f, "memory_mb", 81920);
    }
    CHECK_REJECT(f_decode(&f, NULL), FW_EPROTO,
                 "AGENT_REGISTER.resources.gpus[1].name: expected str, got uint");

    /* Missing required, at the top and in a record. */
    f_begin(&f, FW_MSG_TASK_ASSIGN, TA_REQUIRED - 1);
    f_task_assign_required(&f, "spec");
    CHECK_REJECT(f_decode(&f, NULL), FW_EPROTO, "TASK_ASSIGN: missing required field 'spec'");
    f_begin(&f, FW_MSG_AGENT_REGISTER, 3);
    f_str(&f, "agent_id", "a1");
    f_str(&f, "hostname", "h1");
    f_key(&f, "resources");
    msgpack_pack_map(&f.pk, 1);
    f_uint(&f, "cpus", 8);
    CHECK_REJECT(f_decode(&f, NULL), FW_EPROTO,
                 "AGENT_REGISTER.resources: missing required field 'memory_mb'");

    /* Nil is "absent": fine for optional, missing for required. */
    f_begin(&f, FW_MSG_TASK_ASSIGN, TA_REQUIRED + 1);
    f_task_assign_required(&f, "");
    f_key(&f, "rank");
    msgpack_pack_nil(&f.pk);
    fw_msg_t *m = NULL;
    CHECK(f_decode(&f, &m) == 0 && m && !fw_msg_has(m, "rank"));
    fw_msg_destroy(&m);
    f_begin(&f, FW_MSG_TASK_ASSIGN, TA_REQUIRED);
    f_task_assign_required(&f, "kind");
    f_key(&f, "kind");
    msgpack_pack_nil(&f.pk);
    CHECK_REJECT(f_decode(&f, NULL), FW_EPROTO, "missing required field 'kind'");

    /* Integers: sign, range, any encoding width; doubles accept ints. */
    f_begin(&f, FW_MSG_TASK_ASSIGN, TA_REQUIRED + 1);
    f_task_assign_required(&f, "");
    f_key(&f, "rank");
    msgpack_pack_int64(&f.pk, -1);
    CHECK_REJECT(f_decode(&f, NULL), FW_EPROTO, "rank: expected uint, got int");
    f_begin(&f, FW_MSG_TASK_RESULT, 4);
    f_str(&f, "task_id", "t");
    f_uint(&f, "attempt", 1);
    f_str(&f, "status", "ok");
    f_uint(&f, "exit_code", (uint64_t)INT64_MAX + 1);
    CHECK_REJECT(f_decode(&f, NULL), FW_EPROTO,
                 "exit_code: 9223372036854775808 is out of int64 range");
    f_begin(&f, FW_MSG_HEARTBEAT, 3);
    f_str(&f, "agent_id", "a");
    f_key(&f, "seq");
    msgpack_pack_fix_int8(&f.pk, 5); /* a signed encoding of a non-negative value */
    f_key(&f, "load");
    msgpack_pack_uint8(&f.pk, 3);
    CHECK(f_decode(&f, &m) == 0 && fw_msg_get_uint(m, "seq") == 5 &&
          fw_msg_get_double(m, "load") == 3.0);
    fw_msg_destroy(&m);
    f_begin(&f, FW_MSG_HEARTBEAT, 2);
    f_str(&f, "agent_id", "a");
    f_key(&f, "load");
    msgpack_pack_float(&f.pk, 0.5f);
    CHECK(f_decode(&f, &m) == 0 && fw_msg_get_double(m, "load") == 0.5);
    fw_msg_destroy(&m);
    f_begin(&f, FW_MSG_HEARTBEAT, 2);
    f_str(&f, "agent_id", "a");
    f_key(&f, "draining");
    msgpack_pack_uint8(&f.pk, 1);
    CHECK_REJECT(f_decode(&f, NULL), FW_EPROTO, "HEARTBEAT.draining: expected bool, got uint");

    /* Strings: UTF-8 and no NUL. */
    static const char *bad[] = {"a\0b",     "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                                "\xe2\x82", "\x80"};
    static const size_t bad_len[] = {3, 2, 3, 4, 2, 1};
    for (size_t i = 0; i < 6; i++) {
        f_begin(&f, FW_MSG_ACK, 1);
        f_key(&f, "detail");
        msgpack_pack_str_with_body(&f.pk, bad[i], bad_len[i]);
        CHECK_REJECT(f_decode(&f, NULL), FW_EPROTO, "ACK.detail: str is not valid UTF-8");
    }
    f_begin(&f, FW_MSG_ACK, 1);
    f_str(&f, "detail",
          "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x9a\x80 ok"); /* 2-, 3- and 4-byte characters */
    CHECK(f_decode(&f, &m) == 0 &&
          strcmp(fw_msg_get_str(m, "detail"), "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x9a\x80 ok") == 0);
    fw_msg_destroy(&m);

    /* A field twice; a map key twice (small and large maps). */
    f_begin(&f, FW_MSG_ACK, 2);
    f_str(&f, "detail", "a");
    f_str(&f, "detail", "b");
    CHECK_REJECT(f_decode(&f, NULL), FW_EPROTO, "ACK.detail: field appears twice");
    for (int big = 0; big <= 1; big++) {
        int n = big ? 40 : 3;
        f_begin(&f, FW_MSG_TASK_ASSIGN, TA_REQUIRED + 1);
        f_task_assign_required(&f, "");
        f_key(&f, "env");
        msgpack_pack_map(&f.pk, (size_t)n);
        for (int i = 0; i < n; i++) {
            char k[16];
            snprintf(k, sizeof k, "K%d", i == n - 1 ? 1 : i);
            f_str(&f, k, "v");
        }
        CHECK_REJECT(f_decode(&f, NULL), FW_EPROTO, "repeats the key 'K1'");
    }
    /* Map keys must be strings. */
    f_begin(&f, FW_MSG_TASK_PROGRESS, 3);
    f_str(&f, "task_id", "t");
    f_uint(&f, "attempt", 1);
    f_key(&f, "metrics");
    msgpack_pack_map(&f.pk, 1);
    msgpack_pack_uint8(&f.pk, 1);
    msgpack_pack_uint8(&f.pk, 1);
    CHECK_REJECT(f_decode(&f, NULL), FW_EPROTO,
                 "TASK_PROGRESS.metrics: expected str key, got uint");
    /* 0xc1 is never valid msgpack. */
    f_begin(&f, FW_MSG_ACK, 1);
    f_key(&f, "detail");
    msgpack_sbuffer_write(&f.sb, "\xc1", 1);
    CHECK_REJECT(f_decode(&f, NULL), FW_EPROTO, "invalid msgpack byte 0xc1");
}

static void test_reject_limits(void) {
    frame_t f;
    fw_msg_t *m = NULL;
    char s[300];
    /* A string at its bound passes; one byte more is too big. */
    for (int extra = 0; extra <= 1; extra++) {
        memset(s, 'j', 128 + (size_t)extra);
        s[128 + extra] = '\0';
        f_begin(&f, FW_MSG_TASK_ASSIGN, TA_REQUIRED);
        f_task_assign_required(&f, "job_id");
        f_str(&f, "job_id", s);
        if (extra)
            CHECK_REJECT(f_decode(&f, NULL), FW_ETOOBIG,
                         "TASK_ASSIGN.job_id: str of 129 bytes, max 128");
        else
            CHECK(f_decode(&f, NULL) == 0);
    }
    /* A list over its MAX. */
    f_begin(&f, FW_MSG_HEARTBEAT, 2);
    f_str(&f, "agent_id", "a");
    f_key(&f, "running");
    msgpack_pack_array(&f.pk, 1025);
    for (int i = 0; i < 1025; i++) msgpack_pack_str_with_body(&f.pk, "t", 1);
    CHECK_REJECT(f_decode(&f, NULL), FW_ETOOBIG,
                 "HEARTBEAT.running: array of 1025 entries, max 1024");
    /* A map over its MAX. */
    f_begin(&f, FW_MSG_AGENT_REGISTER, 1);
    f_key(&f, "labels");
    msgpack_pack_map(&f.pk, 65);
    for (int i = 0; i < 65; i++) {
        char k[16];
        snprintf(k, sizeof k, "l%d", i);
        f_str(&f, k, "v");
    }
    CHECK_REJECT(f_decode(&f, NULL), FW_ETOOBIG,
                 "AGENT_REGISTER.labels: map of 65 entries, max 64");
    /* An integer over its MAX. */
    f_begin(&f, FW_MSG_TASK_LOG, 5);
    f_str(&f, "task_id", "t");
    f_uint(&f, "attempt", 1);
    f_uint(&f, "stream", 3);
    f_uint(&f, "offset", 0);
    f_key(&f, "data");
    msgpack_pack_bin(&f.pk, 0);
    CHECK_REJECT(f_decode(&f, NULL), FW_ETOOBIG, "TASK_LOG.stream: 3 above max 2");

    /* Nesting: 8 levels inside a MAP field pass, 9 do not - also in a
     * skipped unknown field. */
    for (int depth = 8; depth <= 9; depth++) {
        for (int unknown = 0; unknown <= 1; unknown++) {
            f_begin(&f, FW_MSG_TASK_PROGRESS, 3);
            f_str(&f, "task_id", "t");
            f_uint(&f, "attempt", 1);
            f_key(&f, unknown ? "from_the_future" : "metrics");
            for (int d = 1; d < depth; d++) {
                msgpack_pack_map(&f.pk, 1);
                f_key(&f, "x");
            }
            msgpack_pack_array(&f.pk, 1);
            msgpack_pack_uint8(&f.pk, 1);
            int rc = f_decode(&f, &m);
            if (depth == 8) {
                CHECKF(rc == 0, "depth 8 unknown=%d: %s", unknown, fw_err_detail());
                CHECK(m && fw_msg_has(m, "metrics") == !unknown);
            } else {
                CHECK_REJECT(rc, FW_ETOOBIG, "nested deeper than 8");
                if (!unknown)
                    CHECK(strstr(fw_err_detail(), "TASK_PROGRESS.metrics.x.x.x.x.x.x.x.x") != NULL);
            }
            fw_msg_destroy(&m);
        }
    }
    /* Unknown fields are skipped (forward compatibility). */
    f_begin(&f, FW_MSG_ACK, 3);
    f_str(&f, "detail", "d");
    f_key(&f, "new_field");
    msgpack_pack_array(&f.pk, 2);
    msgpack_pack_bin_with_body(&f.pk, "xy", 2);
    msgpack_pack_ext_with_body(&f.pk, "abc", 3, 9);
    f_uint(&f, "another", 5);
    CHECK(f_decode(&f, &m) == 0 && m && strcmp(fw_msg_get_str(m, "detail"), "d") == 0);
    fw_msg_destroy(&m);

    /* The value budget: 17 arrays of 4096 values is more than 65536. */
    f_begin(&f, FW_MSG_TASK_PROGRESS, 3);
    f_str(&f, "task_id", "t");
    f_uint(&f, "attempt", 1);
    f_key(&f, "metrics");
    msgpack_pack_map(&f.pk, 17);
    for (int i = 0; i < 17; i++) {
        char k[16];
        snprintf(k, sizeof k, "m%d", i);
        f_key(&f, k);
        msgpack_pack_array(&f.pk, 4096);
        for (int j = 0; j < 4096; j++) msgpack_pack_uint8(&f.pk, 1);
    }
    CHECK_REJECT(f_decode(&f, NULL), FW_ETOOBIG, "more than 65536 values");
    /* Nested containers have their own bound. */
    f_begin(&f, FW_MSG_TASK_PROGRESS, 3);
    f_str(&f, "task_id", "t");
    f_uint(&f, "attempt", 1);
    f_key(&f, "metrics");
    msgpack_pack_map(&f.pk, 1);
    f_key(&f, "m");
    msgpack_pack_array(&f.pk, 4097);
    for (int j = 0; j < 4097; j++) msgpack_pack_nil(&f.pk);
    CHECK_REJECT(f_decode(&f, NULL), FW_ETOOBIG,
                 "TASK_PROGRESS.metrics.m: array of 4097 entries, max 4096");
    /* Keys have a bound. */
    memset(s, 'k', 129);
    s[129] = '\0';
    f_begin(&f, FW_MSG_ACK, 1);
    f_str(&f, s, "v");
    CHECK_REJECT(f_decode(&f, NULL), FW_ETOOBIG, "key of 129 bytes, max 128");
    /* The frame has a bound. */
    uint8_t *huge = calloc(1, FW_PROTO_MAX_FRAME + 1);
    huge[0] = 0x98;
    CHECK_REJECT(fw_msg_decode(huge, FW_PROTO_MAX_FRAME + 1, &m), FW_ETOOBIG,
                 "frame of 8388609 bytes");
    CHECK(m == NULL);
    free(huge);
    /* ... and so has encoding: a message that cannot fit is refused. */
    fw_msg_t *big = fw_proto_example(FW_MSG_TASK_PROGRESS, false, 1);
    fw_val_t *metrics = fw_val_new_map();
    char *chunk = malloc(60000 + 1);
    uint64_t st = 5;
    for (int i = 0; i < 200; i++) {
        for (size_t j = 0; j < 60000; j++) chunk[j] = (char)(fw_test_rand(&st) % 94 + 33);
        chunk[60000] = '\0';
        char k[16];
        snprintf(k, sizeof k, "m%d", i);
        fw_val_map_set_str(metrics, k, chunk);
    }
    free(chunk);
    CHECK(fw_msg_set_map(big, "metrics", &metrics) == 0); /* every part within its bound */
    uint8_t *b = NULL;
    size_t len = 0;
    CHECK_REJECT(fw_msg_encode(big, &b, &len), FW_ETOOBIG, "frame would exceed 8388608 bytes");
    CHECK(b == NULL && len == 0);
    fw_msg_destroy(&big);
    /* Sender bound on the wire. */
    f_begin_env(&f, 8, FW_PROTO_MAGIC, 1, FW_MSG_ACK);
    f.sb.size -= 2; /* drop the sender "t" (a1 74) */
    memset(s, 's', 65);
    msgpack_pack_str_with_body(&f.pk, s, 65);
    msgpack_pack_map(&f.pk, 0);
    CHECK_REJECT(f_decode(&f, NULL), FW_ETOOBIG, "sender of 65 bytes, max 64");
}

static void test_reject_envelope(void) {
    frame_t f;
    fw_msg_t *m = NULL;
    f_begin_env(&f, 8, 0x46574C58, 1, FW_MSG_ACK);
    msgpack_pack_map(&f.pk, 0);
    CHECK_REJECT(f_decode(&f, NULL), FW_EPROTO, "bad magic");
    CHECK_REJECT(fw_msg_decode("{\"json\": 1}", 11, &m), FW_EPROTO, "bad magic");
    CHECK_REJECT(fw_msg_decode("", 0, &m), FW_EPROTO, "empty frame");
    CHECK_REJECT(fw_msg_decode("\x91\x01", 2, &m), FW_EPROTO, "bad magic");
    /* Versions outside MIN..VERSION, also with a different envelope shape. */
    f_begin_env(&f, 8, FW_PROTO_MAGIC, FW_PROTO_VERSION + 1, FW_MSG_ACK);
    msgpack_pack_map(&f.pk, 0);
    CHECK_REJECT(f_decode(&f, NULL), FW_EVERSION, "protocol version 2");
    f_begin_env(&f, 11, FW_PROTO_MAGIC, 200, FW_MSG_ACK);
    CHECK_REJECT(f_decode(&f, NULL), FW_EVERSION, "protocol version 200");
    f_begin_env(&f, 8, FW_PROTO_MAGIC, 0, FW_MSG_ACK);
    msgpack_pack_map(&f.pk, 0);
    CHECK_REJECT(f_decode(&f, NULL), FW_EVERSION, "protocol version 0");
    f_begin_env(&f, 9, FW_PROTO_MAGIC, FW_PROTO_VERSION, FW_MSG_ACK);
    msgpack_pack_map(&f.pk, 0);
    msgpack_pack_nil(&f.pk);
    CHECK_REJECT(f_decode(&f, NULL), FW_EPROTO, "envelope of 9 elements");
    /* Unknown message ids. */
    f_begin_env(&f, 8, FW_PROTO_MAGIC, FW_PROTO_VERSION, 999);
    msgpack_pack_map(&f.pk, 0);
    CHECK_REJECT(f_decode(&f, NULL), FW_EPROTO, "unknown message id 999");
    f_begin_env(&f, 8, FW_PROTO_MAGIC, FW_PROTO_VERSION, 0);
    msgpack_pack_map(&f.pk, 0);
    CHECK_REJECT(f_decode(&f, NULL), FW_EPROTO, "unknown message id 0");
    f_begin_env(&f, 8, FW_PROTO_MAGIC, FW_PROTO_VERSION, 70000);
    msgpack_pack_map(&f.pk, 0);
    CHECK_REJECT(f_decode(&f, NULL), FW_EPROTO, "message id 70000 out of range");
    /* The smallest valid frame, with non-fixed-width envelope integers. */
    f_begin(&f, FW_MSG_ACK, 0);
    CHECK(f_decode(&f, &m) == 0 && m && fw_msg_request_id(m) == 42 && fw_msg_epoch(m) == 7);
    fw_msg_destroy(&m);
    /* Payload must be a map; nothing may follow it. */
    f_begin_env(&f, 8, FW_PROTO_MAGIC, FW_PROTO_VERSION, FW_MSG_ACK);
    msgpack_pack_array(&f.pk, 0);
    CHECK_REJECT(f_decode(&f, NULL), FW_EPROTO, "payload: expected map, got array");
    f_begin(&f, FW_MSG_ACK, 0);
    msgpack_pack_nil(&f.pk);
    CHECK_REJECT(f_decode(&f, NULL), FW_EPROTO, "1 trailing bytes");

    /* Declared lengths beyond the frame: str, bin, array, map. */
    f_begin(&f, FW_MSG_ACK, 1);
    f_key(&f, "detail");
    msgpack_pack_str(&f.pk, 100);
    msgpack_sbuffer_write(&f.sb, "short", 5);
    CHECK_REJECT(f_decode(&f, NULL), FW_EPROTO, "str declares 100 bytes, only 5 left");
    f_begin(&f, FW_MSG_TASK_LOG, 5);
    f_str(&f, "task_id", "t");
    f_uint(&f, "attempt", 1);
    f_uint(&f, "stream", 0);
    f_uint(&f, "offset", 0);
    f_key(&f, "data");
    msgpack_pack_bin(&f.pk, 4000000);
    CHECK_REJECT(f_decode(&f, NULL), FW_EPROTO, "bin declares 4000000 bytes, only 0 left");
    f_begin(&f, FW_MSG_HEARTBEAT, 2);
    f_str(&f, "agent_id", "a");
    f_key(&f, "running");
    msgpack_pack_array(&f.pk, 1000);
    msgpack_pack_str_with_body(&f.pk, "t", 1);
    CHECK_REJECT(f_decode(&f, NULL), FW_EPROTO, "array declares 1000 entries, only 2 bytes left");
    f_begin(&f, FW_MSG_ACK, 0xffffffffu);
    CHECK_REJECT(f_decode(&f, NULL), FW_EPROTO, "map declares 4294967295 entries");
}

/* Every proper prefix of every example frame is rejected as malformed. */
static void test_truncation_everywhere(void) {
    int frames = 0, prefixes = 0, right = 0;
    for (int i = 0; i < fw_proto_msg_count(); i++) {
        fw_msg_t *m = fw_proto_example(fw_proto_msg_at(i)->id, true, (uint64_t)i);
        uint8_t *buf;
        size_t len;
        REQUIRE(m && fw_msg_encode(m, &buf, &len) == 0);
        for (size_t cut = 0; cut < len; cut++) {
            uint8_t *copy = malloc(cut ? cut : 1); /* exact size, so ASan sees any over-read */
            memcpy(copy, buf, cut);
            fw_msg_t *d = NULL;
            int rc = fw_msg_decode(copy, cut, &d);
            prefixes++;
            if (rc == FW_EPROTO && !d && *fw_err_detail())
                right++;
            else
                fprintf(stderr, "%s cut at %zu: %s %s\n", fw_msg_name(m), cut, fw_errname(rc),
                        fw_err_detail());
            fw_msg_destroy(&d);
            free(copy);
        }
        frames++;
        free(buf);
        fw_msg_destroy(&m);
    }
    CHECK_EQ_INT(right, prefixes);
    CHECKF(frames == fw_proto_msg_count() && prefixes > 3000, "%d frames, %d prefixes", frames,
           prefixes);
}

/* The UTF-8 check itself: boundaries of each sequence length. */
static void test_utf8_table(void) {
    static const struct {
        const char *s;
        bool ok;
    } t[] = {
        {"plain ascii text longer than eight bytes", true},
        {"\x7f", true},
        {"\xc2\x80", true},
        {"\xdf\xbf", true},
        {"\xe0\xa0\x80", true},
        {"\xef\xbf\xbf", true},
        {"\xf0\x90\x80\x80", true},
        {"\xf4\x8f\xbf\xbf", true},
        {"\xc1\xbf", false},         /* overlong */
        {"\xe0\x9f\xbf", false},     /* overlong */
        {"\xf0\x8f\xbf\xbf", false}, /* overlong */
        {"\xed\xbf\xbf", false},     /* surrogate */
        {"\xf5\x80\x80\x80", false}, /* past U+10FFFF */
        {"\xc2", false},             /* truncated */
        {"abcdefg\xc2", false},      /* truncated after an ASCII word */
        {"\xc2\x41", false},         /* bad continuation */
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
        fw_msg_t *m = fw_msg_new(FW_MSG_ACK);
        int rc = fw_msg_set_str(m, "detail", t[i].s);
        CHECKF((rc == 0) == t[i].ok, "case %zu: rc %d", i, rc);
        fw_msg_destroy(&m);
    }
}

int main(void) {
    RUN(test_schema_lint);
    RUN(test_roundtrip_every_message);
    RUN(test_equal_detects_changes);
    RUN(test_envelope_layout);
    RUN(test_setters_getters);
    RUN(test_values);
    RUN(test_lz4);
    RUN(test_reject_types_and_required);
    RUN(test_reject_limits);
    RUN(test_reject_envelope);
    RUN(test_truncation_everywhere);
    RUN(test_utf8_table);
    return fw_test_summary();
}
