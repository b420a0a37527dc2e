/* fw_proto.h - Flywheel's wire protocol: messages, values, encode/decode, send/recv.
 *
 * Every message is defined once, in fw_messages.def (ids, fields, types,
 * bounds, versions); this header turns that table into FW_MSG_* ids and
 * FW_F_<MSG>_<field> field ids. docs/protocol.md describes the bytes.
 *
 *   fw_msg_t *m = fw_msg_new(FW_MSG_TASK_ASSIGN);
 *   fw_msg_set_str(m, "job_id", "j1");                       // by name ...
 *   fw_msg_set_uint_f(m, FW_F_TASK_ASSIGN_attempt, 1);       // ... or by field id
 *   fw_val_t *env = fw_val_new_map();
 *   fw_val_map_set_str(env, "OMP_NUM_THREADS", "8");
 *   fw_msg_set_map(m, "env", &env);                          // takes ownership
 *   uint8_t *buf; size_t len;
 *   if (fw_msg_encode(m, &buf, &len) == 0) { ...; free(buf); }
 *   fw_msg_destroy(&m);
 *
 *   fw_msg_t *in;
 *   int rc = fw_msg_decode(buf, len, &in);    // FW_EPROTO / FW_ETOOBIG / FW_EVERSION
 *   if (rc < 0) fw_warn("event=bad-frame err=%s detail=\"%s\"", fw_errname(rc), fw_err_detail());
 *
 * Functions that can fail return 0 or a negative fw_err and describe the
 * problem with fw_err_set() (read it with fw_err_detail()). Constructors
 * return NULL on failure. Messages and values are not thread-safe; the
 * schema is constant and may be read from any thread. */
#ifndef FW_PROTO_H
#define FW_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ------------------------------------------------------------------ limits */

#define FW_PROTO_VERSION     1           /* the version this code writes */
#define FW_PROTO_MIN_VERSION 1           /* the oldest version it reads */
#define FW_PROTO_MAGIC       0x46574C59u /* "FWLY", first element of every envelope */
/* Largest frame accepted or produced, and also the most bytes lz4 fields may
 * inflate to in one frame, so a decoded message never exceeds it either. */
#define FW_PROTO_MAX_FRAME    (8u << 20)
#define FW_PROTO_MAX_DEPTH    8    /* nested maps/arrays inside one field */
#define FW_PROTO_MAX_SENDER   64   /* bytes of the envelope's sender name */
#define FW_PROTO_MAX_KEY      128  /* bytes of a map key or field name */
#define FW_PROTO_MAX_FIELDS   256  /* entries in a payload or record map, unknown ones included */
#define FW_PROTO_MAX_ITEMS    4096 /* entries of a container nested in a MAP field */
#define FW_PROTO_MAX_ITEM_STR (64u << 10) /* bytes of a str/bin inside a list or map */
#define FW_PROTO_MAX_VALUES   65536       /* values decoded from one frame (bounds memory) */
/* Top-level STR/JSON/BIN fields at least this long are lz4-compressed when
 * that makes them smaller. Below it, compression costs more than it saves. */
#define FW_PROTO_LZ4_THRESHOLD (64u << 10)
#define FW_PROTO_EXT_LZ4       1 /* msgpack ext type: u32 BE original length + lz4 block */

/* Envelope flags. Unknown bits are ignored by readers; writers send them 0. */
#define FW_FLAG_LZ4 0x0001u /* set by the encoder when a field is lz4-compressed */

/* ---------------------------------------------------------- the schema */

typedef enum {
    FW_T_BOOL = 1,
    FW_T_INT,
    FW_T_UINT,
    FW_T_DOUBLE,
    FW_T_STR,
    FW_T_JSON,
    FW_T_BIN,
    FW_T_STRLIST,
    FW_T_UINTLIST,
    FW_T_STRMAP,
    FW_T_MAP,
    FW_T_REC,
    FW_T_RECLIST
} fw_type;

typedef enum { FW_ROLE_ANY = 0, FW_ROLE_AGENT, FW_ROLE_COORD, FW_ROLE_CLIENT } fw_role;

/* Message ids: FW_MSG_ACK = 1, ..., from the table. */
typedef enum {
    FW_MSG_NONE = 0,
#define FW_RECORD(name, since, doc)
#define FW_MESSAGE(id, name, since, sender, reply, doc) FW_MSG_##name = (id),
#define FW_FIELD(owner, fname, type, ref, req, max, since, doc)
#define FW_END(name)
#include "fw_messages.def"
#undef FW_RECORD
#undef FW_MESSAGE
#undef FW_FIELD
#undef FW_END
} fw_msg_type;

/* Record ids (FW_REC_GPU, ...): indices into the record table, not on the wire. */
typedef enum {
    FW_REC_NONE = 0,
#define FW_RECORD(name, since, doc) FW_REC_##name,
#define FW_MESSAGE(id, name, since, sender, reply, doc)
#define FW_FIELD(owner, fname, type, ref, req, max, since, doc)
#define FW_END(name)
#include "fw_messages.def"
#undef FW_RECORD
#undef FW_MESSAGE
#undef FW_FIELD
#undef FW_END
    FW_REC__COUNT
} fw_rec_id;

/* Field ids: FW_F_<OWNER>_<field>, e.g. FW_F_TASK_ASSIGN_job_id. The field
 * part keeps the wire name's case so the id and the key read the same. A
 * message field id is (message id << 8 | index), so a field id of another
 * message is caught at run time; record field ids are plain indices. */
#define FW_RECORD(name, since, doc) enum { FW_F_##name##__BASE = -1,
#define FW_MESSAGE(id, name, since, sender, reply, doc)                                            \
    enum { FW_F_##name##__BASE = ((id) << 8) - 1,
#define FW_FIELD(owner, fname, type, ref, req, max, since, doc) FW_F_##owner##_##fname,
#define FW_END(name)                                                                               \
    FW_F_##name##__END                                                                             \
    }                                                                                              \
    ;
#include "fw_messages.def"
#undef FW_RECORD
#undef FW_MESSAGE
#undef FW_FIELD
#undef FW_END

/* Read-only description of the table, for tools, tests and generic code. */
typedef struct {
    const char *name; /* wire key */
    fw_type type;
    fw_rec_id rec; /* REC / RECLIST: the record; FW_REC_NONE otherwise */
    bool required;
    uint64_t max; /* see fw_messages.def; 0 = unbounded for INT/UINT */
    int since;    /* protocol version it appeared in */
    const char *doc;
    size_t name_len;
} fw_field_info;

typedef struct {
    int id;           /* FW_MSG_* for messages; the fw_rec_id for records */
    const char *name; /* "TASK_ASSIGN" */
    int since;
    fw_role sender;    /* messages only */
    fw_msg_type reply; /* messages only: usual reply or FW_MSG_NONE */
    const char *doc;
    const fw_field_info *fields;
    int nfields;
    bool is_record;
} fw_msg_info;

/* Message by id (NULL if unknown), by position 0..count-1 in table order. */
const fw_msg_info *fw_proto_msg_info(int id);
int fw_proto_msg_count(void);
const fw_msg_info *fw_proto_msg_at(int i);
/* Record by id (NULL for FW_REC_NONE or out of range). */
const fw_msg_info *fw_proto_rec_info(fw_rec_id rec);
/* "STR", "RECLIST", ... and "any", "agent", "coordinator", "client". */
const char *fw_proto_type_name(fw_type t);
const char *fw_proto_role_name(fw_role r);
/* Name of a message id ("TASK_ASSIGN"), "?" if unknown. */
const char *fw_msg_id_name(int id);

/* ------------------------------------------------------------- values
 * fw_val_t is a msgpack value tree: what MAP, STRMAP, lists and records hold.
 * Containers own their children. Pointers returned by getters stay valid
 * until the container is changed or destroyed. Map keys are unique: setting
 * an existing key replaces its value. */

typedef struct fw_val_t fw_val_t;

typedef enum {
    FW_VAL_NONE = 0, /* no value (a NULL pointer, an unset field) */
    FW_VAL_NIL,
    FW_VAL_BOOL,
    FW_VAL_INT,
    FW_VAL_UINT,
    FW_VAL_DOUBLE,
    FW_VAL_STR,
    FW_VAL_BIN,
    FW_VAL_ARRAY,
    FW_VAL_MAP
} fw_val_kind;

fw_val_t *fw_val_new_map(void);
fw_val_t *fw_val_new_array(void);
void fw_val_destroy(fw_val_t **p);
fw_val_t *fw_val_dup(const fw_val_t *v);
bool fw_val_equal(const fw_val_t *a, const fw_val_t *b);

fw_val_kind fw_val_kind_of(const fw_val_t *v);
/* Entries of an array/map, bytes of a str/bin, 0 otherwise. */
size_t fw_val_size(const fw_val_t *v);

/* Scalars; the defaults (NULL, 0, false) when v is not of that kind. INT and
 * UINT read each other when the value fits; DOUBLE reads ints too. */
const char *fw_val_str(const fw_val_t *v);
const void *fw_val_bin(const fw_val_t *v, size_t *len);
int64_t fw_val_int(const fw_val_t *v);
uint64_t fw_val_uint(const fw_val_t *v);
bool fw_val_bool(const fw_val_t *v);
double fw_val_double(const fw_val_t *v);

/* Maps. Setters copy the key and the data; 0 or FW_EINVAL / FW_ENOMEM. */
int fw_val_map_set_str(fw_val_t *map, const char *key, const char *s);
int fw_val_map_set_bin(fw_val_t *map, const char *key, const void *data, size_t len);
int fw_val_map_set_int(fw_val_t *map, const char *key, int64_t v);
int fw_val_map_set_uint(fw_val_t *map, const char *key, uint64_t v);
int fw_val_map_set_bool(fw_val_t *map, const char *key, bool v);
int fw_val_map_set_double(fw_val_t *map, const char *key, double v);
int fw_val_map_set_nil(fw_val_t *map, const char *key);
/* Takes ownership of *child (always, also on failure) and sets it to NULL. */
int fw_val_map_set(fw_val_t *map, const char *key, fw_val_t **child);
const fw_val_t *fw_val_map_get(const fw_val_t *map, const char *key);
const char *fw_val_map_key(const fw_val_t *map, size_t i);
/* Shorthands for fw_val_str(fw_val_map_get(map, key)) and friends. */
const char *fw_val_map_str(const fw_val_t *map, const char *key);
int64_t fw_val_map_int(const fw_val_t *map, const char *key);
uint64_t fw_val_map_uint(const fw_val_t *map, const char *key);

/* Arrays. */
int fw_val_array_push_str(fw_val_t *arr, const char *s);
int fw_val_array_push_bin(fw_val_t *arr, const void *data, size_t len);
int fw_val_array_push_int(fw_val_t *arr, int64_t v);
int fw_val_array_push_uint(fw_val_t *arr, uint64_t v);
int fw_val_array_push_bool(fw_val_t *arr, bool v);
int fw_val_array_push_double(fw_val_t *arr, double v);
int fw_val_array_push_nil(fw_val_t *arr);
int fw_val_array_push(fw_val_t *arr, fw_val_t **child); /* takes ownership, like map_set */

/* Item i of an array, or value i of a map (NULL past the end). */
const fw_val_t *fw_val_at(const fw_val_t *v, size_t i);

/* ------------------------------------------------------------ messages */

typedef struct fw_msg_t fw_msg_t;

/* A new empty message (envelope: request id 0, epoch 0, sender ""), or NULL
 * if the id is not in the table. */
fw_msg_t *fw_msg_new(int id);
/* A reply to req: same request_id. */
fw_msg_t *fw_msg_new_reply(const fw_msg_t *req, int id);
/* An ERROR reply to req (req may be NULL) with code and a printf message. */
fw_msg_t *fw_msg_new_error(const fw_msg_t *req, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void fw_msg_destroy(fw_msg_t **p);
fw_msg_t *fw_msg_dup(const fw_msg_t *m);
/* Same id, request_id, epoch, sender and field values (flags and version,
 * which describe the transport, are not compared). */
bool fw_msg_equal(const fw_msg_t *a, const fw_msg_t *b);

/* Envelope. */
int fw_msg_id(const fw_msg_t *m);
const char *fw_msg_name(const fw_msg_t *m);
const fw_msg_info *fw_msg_info_of(const fw_msg_t *m);
int fw_msg_version(const fw_msg_t *m); /* of the decoded frame; FW_PROTO_VERSION if built */
uint64_t fw_msg_request_id(const fw_msg_t *m);
void fw_msg_set_request_id(fw_msg_t *m, uint64_t id);
uint64_t fw_msg_epoch(const fw_msg_t *m);
void fw_msg_set_epoch(fw_msg_t *m, uint64_t epoch);
const char *fw_msg_sender(const fw_msg_t *m);
int fw_msg_set_sender(fw_msg_t *m, const char *sender); /* <= FW_PROTO_MAX_SENDER bytes */
unsigned fw_msg_flags(const fw_msg_t *m);
void fw_msg_set_flags(fw_msg_t *m, unsigned flags);

/* Field id of a name in this message, or -1. */
int fw_msg_field(const fw_msg_t *m, const char *name);

/* Setters by field name. They check the field exists, the type fits
 * (set_str: STR/JSON; set_int/set_uint: INT/UINT in range; set_map:
 * STRMAP/MAP/REC; set_array: STRLIST/UINTLIST/RECLIST) and the bounds, and
 * return FW_EINVAL (wrong field/type, bad UTF-8, tree not matching the
 * schema) or FW_ETOOBIG (over MAX) with a detail; 0 on success. Strings and
 * bytes are copied. set_map/set_array take ownership of *v always. */
int fw_msg_set_str(fw_msg_t *m, const char *field, const char *s);
int fw_msg_set_int(fw_msg_t *m, const char *field, int64_t v);
int fw_msg_set_uint(fw_msg_t *m, const char *field, uint64_t v);
int fw_msg_set_bool(fw_msg_t *m, const char *field, bool v);
int fw_msg_set_double(fw_msg_t *m, const char *field, double v);
int fw_msg_set_bin(fw_msg_t *m, const char *field, const void *data, size_t len);
int fw_msg_set_map(fw_msg_t *m, const char *field, fw_val_t **v);
int fw_msg_set_array(fw_msg_t *m, const char *field, fw_val_t **v);
int fw_msg_unset(fw_msg_t *m, const char *field);

/* Getters by field name: the value, or the default (NULL, 0, false) when
 * the field is unset, unknown or of another type. Decoding guarantees that
 * required fields are set; use fw_msg_has() for optional ones. */
bool fw_msg_has(const fw_msg_t *m, const char *field);
const char *fw_msg_get_str(const fw_msg_t *m, const char *field); /* STR and JSON */
int64_t fw_msg_get_int(const fw_msg_t *m, const char *field);
uint64_t fw_msg_get_uint(const fw_msg_t *m, const char *field);
bool fw_msg_get_bool(const fw_msg_t *m, const char *field);
double fw_msg_get_double(const fw_msg_t *m, const char *field);
const void *fw_msg_get_bin(const fw_msg_t *m, const char *field, size_t *len);
const fw_val_t *fw_msg_get_map(const fw_msg_t *m, const char *field);   /* STRMAP MAP REC */
const fw_val_t *fw_msg_get_array(const fw_msg_t *m, const char *field); /* lists */

/* The same by field id (FW_F_<MSG>_<field>). */
int fw_msg_set_str_f(fw_msg_t *m, int field, const char *s);
int fw_msg_set_int_f(fw_msg_t *m, int field, int64_t v);
int fw_msg_set_uint_f(fw_msg_t *m, int field, uint64_t v);
int fw_msg_set_bool_f(fw_msg_t *m, int field, bool v);
int fw_msg_set_double_f(fw_msg_t *m, int field, double v);
int fw_msg_set_bin_f(fw_msg_t *m, int field, const void *data, size_t len);
int fw_msg_set_map_f(fw_msg_t *m, int field, fw_val_t **v);
int fw_msg_set_array_f(fw_msg_t *m, int field, fw_val_t **v);
int fw_msg_unset_f(fw_msg_t *m, int field);
bool fw_msg_has_f(const fw_msg_t *m, int field);
const char *fw_msg_get_str_f(const fw_msg_t *m, int field);
int64_t fw_msg_get_int_f(const fw_msg_t *m, int field);
uint64_t fw_msg_get_uint_f(const fw_msg_t *m, int field);
bool fw_msg_get_bool_f(const fw_msg_t *m, int field);
double fw_msg_get_double_f(const fw_msg_t *m, int field);
const void *fw_msg_get_bin_f(const fw_msg_t *m, int field, size_t *len);
const fw_val_t *fw_msg_get_map_f(const fw_msg_t *m, int field);
const fw_val_t *fw_msg_get_array_f(const fw_msg_t *m, int field);

/* ------------------------------------------------------ encode / decode */

/* Encode m into a new buffer (*buf, *len; caller frees *buf with free()).
 * FW_EINVAL if a required field is unset, FW_ETOOBIG past FW_PROTO_MAX_FRAME
 * or FW_PROTO_MAX_VALUES, FW_ENOMEM. The encoding is deterministic. */
int fw_msg_encode(const fw_msg_t *m, uint8_t **buf, size_t *len);

/* Decode one frame into a new message (*msg; caller destroys). Strict and
 * bounded: every length is checked against the bytes left and the schema's
 * bound before anything is allocated. FW_EPROTO (malformed, bad magic,
 * unknown id, wrong type, missing required field, corrupt lz4), FW_ETOOBIG
 * (a limit: frame, field, count, depth, values), FW_EVERSION (protocol
 * version outside MIN..VERSION), FW_ENOMEM. *msg is NULL on failure. */
int fw_msg_decode(const void *buf, size_t len, fw_msg_t **msg);

/* ------------------------------------------------------ ZeroMQ transport
 * One message is one ZeroMQ frame. On ROUTER sockets it is preceded by the
 * peer's routing identity frame; peers use DEALER sockets (not REQ: no empty
 * delimiter frame). Set ZMQ_MAXMSGSIZE to FW_PROTO_MAX_FRAME on sockets that
 * face the network so libzmq drops oversized frames before buffering them. */

typedef struct _zsock_t zsock_t;
typedef struct _zframe_t zframe_t;

/* Encode and send m (not destroyed). identity: the ROUTER peer to send to,
 * NULL on other sockets. 0, or an encoding error, FW_ETIMEDOUT (send timeout),
 * FW_EUNAVAIL (ROUTER peer unknown with ZMQ_ROUTER_MANDATORY), FW_EIO. */
int fw_msg_send(zsock_t *sock, const zframe_t *identity, const fw_msg_t *m);

/* Receive and decode one message (blocking, subject to the socket's receive
 * timeout). identity: NULL on non-ROUTER sockets, else receives the sender's
 * identity frame (caller destroys) - also when decoding fails, so that a
 * ROUTER can answer a bad frame with ERROR. 0, a decode error, FW_EPROTO
 * (wrong frame count), FW_ETIMEDOUT, FW_ECANCELED (interrupted), FW_ECLOSED. */
int fw_msg_recv(zsock_t *sock, zframe_t **identity, fw_msg_t **msg);

/* ------------------------------------------------------ examples & docs */

/* A message with every field (all = true) or only the required ones set to
 * deterministic example values derived from seed; NULL if id is unknown.
 * Used by tests, the fuzz seed generator, the benchmark and the docs. */
fw_msg_t *fw_proto_example(int id, bool all, uint64_t seed);

/* Write the generated Markdown reference of every message and record (the
 * part of docs/protocol.md between the GENERATED markers). 0 / -1. */
int fw_proto_doc_write(FILE *out);

#endif
