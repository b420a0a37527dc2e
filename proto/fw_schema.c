/* fw_schema.c - the message table of fw_messages.def, as constant data.
 *
 * The .def file is expanded here four times: field arrays, the record table,
 * the message table and a switch from wire id to entry. Mistakes in the
 * table fail the build: a duplicate id is a duplicate case label, an unknown
 * TYPE / REF / SENDER / REPLY an undeclared identifier. Semantic rules the
 * compiler cannot see (unique field names, a token in every client request)
 * are checked by test_proto's schema lint. */
#include "fw_proto_int.h"

#include <assert.h>
#include <stddef.h>

#define FW_REQ_REQ true
#define FW_REQ_OPT false

/* 1. One field array per record and message, ended by a zeroed sentinel. */
#define FW_RECORD(name, since, doc) static const fw_field_info s_fields_##name[] = {
#define FW_MESSAGE(id, name, since, sender, reply, doc)                                            \
    static const fw_field_info s_fields_##name[] = {
#define FW_FIELD(owner, fname, type, ref, req, max, since, doc)                                    \
    {#fname,          FW_T_##type, FW_REC_##ref, FW_REQ_##req,                                     \
     (uint64_t)(max), (since),     (doc),        sizeof(#fname) - 1},
#define FW_END(name)                                                                               \
    { NULL, 0, FW_REC_NONE, false, 0, 0, NULL, 0 }                                                 \
    }                                                                                              \
    ;
#include "fw_messages.def"
#undef FW_RECORD
#undef FW_MESSAGE
#undef FW_FIELD
#undef FW_END

#define S_NFIELDS(name) ((int)(FW_F_##name##__END - FW_F_##name##__BASE - 1))

/* Records: the decoder tracks which fields it saw in a 64-bit mask, and field
 * ids keep the index in 8 bits; both limits are checked here. */
#define FW_RECORD(name, since, doc)
#define FW_MESSAGE(id, name, since, sender, reply, doc)                                            \
    static_assert(S_NFIELDS(name) <= 255, #name ": at most 255 fields per message");               \
    static_assert((id) > 0 && (id) <= 0xffff, #name ": id must fit in u16");
#define FW_FIELD(owner, fname, type, ref, req, max, since, doc)
#define FW_END(name)
#include "fw_messages.def"
#undef FW_RECORD
#undef FW_MESSAGE
#undef FW_FIELD
#undef FW_END

/* 2. Records, indexed by fw_rec_id. */
static const fw_msg_info s_recs[FW_REC__COUNT] = {
#define FW_RECORD(name, since, doc)                                                                \
    [FW_REC_##name] = {FW_REC_##name, #name,           (since),         FW_ROLE_ANY, FW_MSG_NONE,  \
                       (doc),         s_fields_##name, S_NFIELDS(name), true},
#define FW_MESSAGE(id, name, since, sender, reply, doc)
#define FW_FIELD(owner, fname, type, ref, req, max, since, doc)
#define FW_END(name)
#include "fw_messages.def"
#undef FW_RECORD
#undef FW_MESSAGE
#undef FW_FIELD
#undef FW_END
};

#define FW_RECORD(name, since, doc)                                                                \
    static_assert(S_NFIELDS(name) <= 64, #name ": at most 64 fields per record");
#define FW_MESSAGE(id, name, since, sender, reply, doc)
#define FW_FIELD(owner, fname, type, ref, req, max, since, doc)
#define FW_END(name)
#include "fw_messages.def"
#undef FW_RECORD
#undef FW_MESSAGE
#undef FW_FIELD
#undef FW_END

/* 3. Messages, in table order. */
enum {
#define FW_RECORD(name, since, doc)
#define FW_MESSAGE(id, name, since, sender, reply, doc) S_IDX_##name,
#define FW_FIELD(owner, fname, type, ref, req, max, since, doc)
#define FW_END(name)
#include "fw_messages.def"
#undef FW_RECORD
#undef FW_MESSAGE
#undef FW_FIELD
#undef FW_END
    S_NMSGS
};

static const fw_msg_info s_msgs[S_NMSGS] = {
#define FW_RECORD(name, since, doc)
#define FW_MESSAGE(id, name, since, sender, reply, doc)                                            \
    [S_IDX_##name] = {(id),           #name, (since),         FW_ROLE_##sender,                    \
                      FW_MSG_##reply, (doc), s_fields_##name, S_NFIELDS(name),                     \
                      false},
#define FW_FIELD(owner, fname, type, ref, req, max, since, doc)
#define FW_END(name)
#include "fw_messages.def"
#undef FW_RECORD
#undef FW_MESSAGE
#undef FW_FIELD
#undef FW_END
};

/* 4. Wire id -> entry. */
const fw_msg_info *fw_proto_msg_info(int id) {
    switch (id) {
#define FW_RECORD(name, since, doc)
#define FW_MESSAGE(id, name, since, sender, reply, doc)                                            \
    case (id):                                                                                     \
        return &s_msgs[S_IDX_##name];
#define FW_FIELD(owner, fname, type, ref, req, max, since, doc)
#define FW_END(name)
#include "fw_messages.def"
#undef FW_RECORD
#undef FW_MESSAGE
#undef FW_FIELD
#undef FW_END
    default:
        return NULL;
    }
}

int fw_proto_msg_count(void) {
    return S_NMSGS;
}

const fw_msg_info *fw_proto_msg_at(int i) {
    return i >= 0 && i < S_NMSGS ? &s_msgs[i] : NULL;
}

const fw_msg_info *fw_proto_rec_info(fw_rec_id rec) {
    return rec > FW_REC_NONE && rec < FW_REC__COUNT ? &s_recs[rec] : NULL;
}

const char *fw_msg_id_name(int id) {
    const fw_msg_info *mi = fw_proto_msg_info(id);
    return mi ? mi->name : "?";
}

const char *fw_proto_type_name(fw_type t) {
    switch (t) {
    case FW_T_BOOL:
        return "BOOL";
    case FW_T_INT:
        return "INT";
    case FW_T_UINT:
        return "UINT";
    case FW_T_DOUBLE:
        return "DOUBLE";
    case FW_T_STR:
        return "STR";
    case FW_T_JSON:
        return "JSON";
    case FW_T_BIN:
        return "BIN";
    case FW_T_STRLIST:
        return "STRLIST";
    case FW_T_UINTLIST:
        return "UINTLIST";
    case FW_T_STRMAP:
        return "STRMAP";
    case FW_T_MAP:
        return "MAP";
    case FW_T_REC:
        return "REC";
    case FW_T_RECLIST:
        return "RECLIST";
    }
    return "?";
}

const char *fw_proto_role_name(fw_role r) {
    switch (r) {
    case FW_ROLE_ANY:
        return "any";
    case FW_ROLE_AGENT:
        return "agent";
    case FW_ROLE_COORD:
        return "coordinator";
    case FW_ROLE_CLIENT:
        return "client";
    }
    return "?";
}
