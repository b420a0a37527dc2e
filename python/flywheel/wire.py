"""Flywheel's wire format (docs/protocol.md), for the messages a client uses.

A message is one ZeroMQ frame holding a msgpack array of 8 elements::

    [magic, version, msg_id, flags, request_id, epoch, sender, payload]

The encoder writes the envelope integers at fixed width, byte for byte as the
C encoder does (the first 32 bytes of every frame have a fixed layout), and
the payload fields in table order. Top-level STR/JSON/BIN fields of at least
64 KiB are sent as msgpack ext type 1 holding a standard LZ4 frame (content
size and checksum present, 256 KiB blocks) when that is smaller, and the
envelope's flag bit 0 is set. The decoder accepts any msgpack encoding of the
integers, undoes the compression (python3-lz4; without it a compressed field
raises a clear WireError), and checks what the C decoder checks for the
fields it knows: types, required fields, bounds.

MESSAGES mirrors rows of proto/fw_messages.def (the client <-> coordinator
part and the generic replies); python/tests/test_wire.py checks it against
that file, so a change to the table that is not made here fails a test.
"""

import struct

import msgpack

try:  # python3-lz4 is optional: only frames with fields >= 64 KiB need it.
    import lz4.frame as _lz4
except ImportError:  # pragma: no cover - depends on the machine
    _lz4 = None

MAGIC = 0x46574C59  # "FWLY"
VERSION = 1
MIN_VERSION = 1
FLAG_LZ4 = 0x0001
EXT_LZ4 = 1
LZ4_THRESHOLD = 64 << 10
MAX_FRAME = 8 << 20
MAX_SENDER = 64
MAX_DEPTH = 8

# name -> (id, [(field, type, required, max)]) in table order. max: bytes for
# STR/JSON/BIN, entries for lists, value for INT/UINT (0: unbounded).
MESSAGES = {
    "ACK": (1, [("detail", "STR", False, 1024)]),
    "ERROR": (2, [("code", "INT", True, 0), ("message", "STR", True, 1024),
                  ("retry_after_ms", "UINT", False, 0)]),
    "REDIRECT": (3, [("leader_endpoint", "STR", True, 256), ("leader_name", "STR", True, 64),
                     ("epoch", "UINT", True, 0)]),
    "JOB_SUBMIT": (64, [("token", "STR", True, 512), ("spec", "JSON", True, 1 << 20),
                        ("idempotency_key", "STR", False, 128)]),
    "JOB_SUBMITTED": (65, [("job_id", "STR", True, 128), ("existing", "BOOL", False, 0)]),
    "JOB_GET": (66, [("token", "STR", True, 512), ("job_id", "STR", True, 128)]),
    "JOB_GET_REPLY": (67, [("doc", "JSON", True, 4 << 20)]),
    "JOB_LIST": (68, [("token", "STR", True, 512), ("state", "STR", False, 32),
                      ("limit", "UINT", False, 10000), ("cursor", "STR", False, 256)]),
    "JOB_LIST_REPLY": (69, [("doc", "JSON", True, 4 << 20), ("next_cursor", "STR", False, 256)]),
    "JOB_CANCEL": (70, [("token", "STR", True, 512), ("job_id", "STR", True, 128),
                        ("reason", "STR", False, 1024)]),
    "JOB_CANCEL_REPLY": (71, [("doc", "JSON", True, 4 << 20)]),
    "TASK_LIST": (72, [("token", "STR", True, 512), ("job_id", "STR", False, 128),
                       ("state", "STR", False, 32), ("limit", "UINT", False, 10000),
                       ("cursor", "STR", False, 256)]),
    "TASK_LIST_REPLY": (73, [("doc", "JSON", True, 4 << 20), ("next_cursor", "STR", False, 256)]),
    "CLUSTER_STATUS": (74, [("token", "STR", True, 512)]),
    "CLUSTER_STATUS_REPLY": (75, [("doc", "JSON", True, 4 << 20)]),
    "AGENT_LIST": (76, [("token", "STR", True, 512), ("limit", "UINT", False, 10000),
                        ("cursor", "STR", False, 256)]),
    "AGENT_LIST_REPLY": (77, [("doc", "JSON", True, 4 << 20),
                              ("next_cursor", "STR", False, 256)]),
    "AGENT_DRAIN": (78, [("token", "STR", True, 512), ("agent_id", "STR", True, 64),
                         ("drain", "BOOL", False, 0), ("reason", "STR", False, 1024)]),
    "AGENT_DRAIN_REPLY": (79, [("doc", "JSON", True, 4 << 20)]),
    "LOG_STREAM": (80, [("token", "STR", True, 512), ("task_id", "STR", True, 128),
                        ("attempt", "UINT", False, 0), ("stream", "UINT", False, 2),
                        ("offset", "UINT", False, 0), ("follow", "BOOL", False, 0)]),
    "LOG_CHUNK": (81, [("task_id", "STR", True, 128), ("attempt", "UINT", True, 0),
                       ("stream", "UINT", True, 2), ("offset", "UINT", True, 0),
                       ("data", "BIN", True, 4 << 20), ("eof", "BOOL", False, 0)]),
    # Datasets and blobs (issue 6; coordinator/coord_data.c).
    "DATASET_REGISTER": (82, [("token", "STR", True, 512), ("name", "STR", True, 128),
                              ("digest", "STR", True, 80), ("report", "JSON", True, 1 << 20),
                              ("parents", "JSON", False, 16 << 10),
                              ("lineage", "JSON", False, 64 << 10),
                              ("ingest", "BOOL", False, 0)]),
    "DATASET_REGISTER_REPLY": (83, [("doc", "JSON", True, 4 << 20),
                                    ("existing", "BOOL", False, 0)]),
    "DATASET_LIST": (84, [("token", "STR", True, 512), ("name", "STR", False, 128)]),
    "DATASET_LIST_REPLY": (85, [("doc", "JSON", True, 4 << 20)]),
    "DATASET_GET": (86, [("token", "STR", True, 512), ("name", "STR", True, 128),
                         ("version", "UINT", False, 0)]),
    "DATASET_GET_REPLY": (87, [("doc", "JSON", True, 4 << 20)]),
    # The model registry (issue 6; coordinator/coord_models.c).
    "MODEL_REGISTER": (88, [("token", "STR", True, 512), ("name", "STR", True, 128),
                            ("digest", "STR", True, 80), ("parent", "STR", False, 300),
                            ("datasets", "JSON", False, 16 << 10), ("job", "STR", False, 128),
                            ("hparams", "JSON", False, 64 << 10),
                            ("code_version", "STR", False, 128)]),
    "MODEL_REPLY": (89, [("doc", "JSON", True, 4 << 20), ("existing", "BOOL", False, 0)]),
    "MODEL_LIST": (90, [("token", "STR", True, 512), ("name", "STR", False, 128)]),
    "MODEL_GET": (91, [("token", "STR", True, 512), ("name", "STR", True, 128),
                       ("version", "UINT", False, 0), ("alias", "STR", False, 128)]),
    "MODEL_ALIAS_SET": (92, [("token", "STR", True, 512), ("name", "STR", True, 128),
                             ("alias", "STR", True, 128), ("version", "UINT", True, 0),
                             ("protect", "BOOL", False, 0)]),
    "MODEL_ALIAS_RM": (93, [("token", "STR", True, 512), ("name", "STR", True, 128),
                            ("alias", "STR", True, 128)]),
    "MODEL_PROMOTE": (94, [("token", "STR", True, 512), ("name", "STR", True, 128),
                           ("challenger", "STR", True, 300), ("metric", "STR", True, 32),
                           ("min_delta", "DOUBLE", False, 0), ("dataset", "STR", False, 300),
                           ("seed", "UINT", False, 0)]),
    # Lineage (issue 6; coordinator/coord_lineage.c): the reply is MODEL_REPLY.
    "LINEAGE_GET": (95, [("token", "STR", True, 512), ("ref", "STR", True, 300),
                         ("depth", "UINT", False, 64)]),
    "BLOB_UPLOAD_BEGIN": (100, [("token", "STR", True, 512), ("size", "UINT", True, 0),
                                ("digest", "STR", False, 80)]),
    "BLOB_UPLOAD_REPLY": (101, [("upload_id", "STR", True, 64), ("received", "UINT", True, 0),
                                ("complete", "BOOL", False, 0), ("digest", "STR", False, 80),
                                ("existing", "BOOL", False, 0)]),
    "BLOB_UPLOAD_CHUNK": (102, [("token", "STR", True, 512), ("upload_id", "STR", True, 64),
                                ("offset", "UINT", True, 0), ("data", "BIN", True, 4 << 20)]),
    "BLOB_UPLOAD_COMMIT": (103, [("token", "STR", True, 512), ("upload_id", "STR", True, 64),
                                 ("digest", "STR", True, 80)]),
    "BLOB_READ": (104, [("token", "STR", True, 512), ("digest", "STR", True, 80),
                        ("offset", "UINT", True, 0), ("max_bytes", "UINT", False, 4 << 20)]),
    "BLOB_DATA": (105, [("digest", "STR", True, 80), ("offset", "UINT", True, 0),
                        ("data", "BIN", True, 4 << 20), ("size", "UINT", True, 0),
                        ("eof", "BOOL", False, 0)]),
}

NAMES = {mid: name for name, (mid, _) in MESSAGES.items()}

_INT64_MIN, _INT64_MAX, _UINT64_MAX = -(1 << 63), (1 << 63) - 1, (1 << 64) - 1


class WireError(Exception):
    """A frame that is not a valid Flywheel message (FW_EPROTO, FW_ETOOBIG, FW_EVERSION)."""

    def __init__(self, message, code="FW_EPROTO"):
        super().__init__(message)
        self.code = code


class Message:
    """A decoded or to-be-encoded message: name, envelope and payload fields."""

    __slots__ = ("name", "id", "request_id", "epoch", "sender", "flags", "version", "fields")

    def __init__(self, name, fields=None, request_id=0, epoch=0, sender="", flags=0,
                 version=VERSION, msg_id=None):
        self.name = name
        self.id = msg_id if msg_id is not None else MESSAGES[name][0]
        self.fields = dict(fields or {})
        self.request_id = request_id
        self.epoch = epoch
        self.sender = sender
        self.flags = flags
        self.version = version

    def __getitem__(self, key):
        return self.fields[key]

    def get(self, key, default=None):
        return self.fields.get(key, default)

    def __repr__(self):
        return "Message(%s, request_id=%d, %r)" % (self.name, self.request_id, self.fields)


class _Lz4Ext:
    """An lz4 ext value seen by the unpacker; typed once its field is known."""

    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data


def _check_value(where, ftype, fmax, value):
    if ftype in ("STR", "JSON"):
        if not isinstance(value, str):
            raise WireError("%s: expected str, got %s" % (where, type(value).__name__))
        n = len(value.encode("utf-8"))
        if "\0" in value:
            raise WireError("%s: NUL byte in a string" % where)
        if fmax and n > fmax:
            raise WireError("%s: %d bytes, at most %d" % (where, n, fmax), "FW_ETOOBIG")
    elif ftype == "BIN":
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise WireError("%s: expected bytes, got %s" % (where, type(value).__name__))
        if fmax and len(value) > fmax:
            raise WireError("%s: %d bytes, at most %d" % (where, len(value), fmax), "FW_ETOOBIG")
    elif ftype == "DOUBLE":
        # Integers are accepted as the C decoder does ("1" for 1.0); sent as float64.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise WireError("%s: expected float, got %s" % (where, type(value).__name__))
    elif ftype == "BOOL":
        if not isinstance(value, bool):
            raise WireError("%s: expected bool, got %s" % (where, type(value).__name__))
    elif ftype in ("INT", "UINT"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise WireError("%s: expected int, got %s" % (where, type(value).__name__))
        lo = 0 if ftype == "UINT" else _INT64_MIN
        hi = _UINT64_MAX if ftype == "UINT" else _INT64_MAX
        if value < lo or value > hi:
            raise WireError("%s: %d out of range" % (where, value))
        if fmax and abs(value) > fmax:
            raise WireError("%s: %d is above %d" % (where, value, fmax), "FW_ETOOBIG")
    else:  # pragma: no cover - the table only holds the types above
        raise WireError("%s: unsupported type %s" % (where, ftype))


def _compress(raw):
    """An lz4 ext for raw bytes when that is smaller, else None."""
    if _lz4 is None or len(raw) < LZ4_THRESHOLD:
        return None
    packed = _lz4.compress(raw, block_size=_lz4.BLOCKSIZE_MAX256KB, content_checksum=True,
                           store_size=True)
    return packed if len(packed) < len(raw) else None


def encode(msg):
    """Encode a Message into one frame (bytes). Raises WireError on bad fields."""
    if msg.name not in MESSAGES:
        raise WireError("unknown message %r" % msg.name)
    mid, table = MESSAGES[msg.name]
    known = {f[0] for f in table}
    for key in msg.fields:
        if key not in known:
            raise WireError("%s.%s: no such field" % (msg.name, key))
    payload = {}
    inflated = 0
    flags = msg.flags & ~FLAG_LZ4
    for fname, ftype, required, fmax in table:
        value = msg.fields.get(fname)
        where = "%s.%s" % (msg.name, fname)
        if value is None:
            if required:
                raise WireError("%s: required field missing" % where)
            continue
        _check_value(where, ftype, fmax, value)
        if ftype == "DOUBLE":
            value = float(value)
        if ftype in ("STR", "JSON", "BIN"):
            raw = value.encode("utf-8") if ftype != "BIN" else bytes(value)
            packed = _compress(raw) if inflated + len(raw) <= MAX_FRAME else None
            if packed is not None:
                value = msgpack.ExtType(EXT_LZ4, packed)
                inflated += len(raw)
                flags |= FLAG_LZ4
            elif ftype == "BIN":
                value = raw
        payload[fname] = value
    sender = (msg.sender or "").encode("utf-8")
    if len(sender) > MAX_SENDER:
        raise WireError("sender: %d bytes, at most %d" % (len(sender), MAX_SENDER), "FW_ETOOBIG")
    # Fixed-width envelope, as the C encoder writes it (docs/protocol.md, frame layout).
    head = struct.pack(">BBIBBBHBHBQBQ", 0x98, 0xCE, MAGIC, 0xCC, VERSION, 0xCD, mid, 0xCD,
                       flags & 0xFFFF, 0xCF, msg.request_id, 0xCF, msg.epoch)
    frame = head + msgpack.packb(msg.sender or "", use_bin_type=True) + \
        msgpack.packb(payload, use_bin_type=True)
    if len(frame) > MAX_FRAME:
        raise WireError("frame of %d bytes, at most %d" % (len(frame), MAX_FRAME), "FW_ETOOBIG")
    return frame


def _ext_hook(code, data):
    if code != EXT_LZ4:
        raise WireError("msgpack ext type %d: only %d (lz4) is allowed" % (code, EXT_LZ4))
    return _Lz4Ext(data)


def _no_ext(where, value, depth=0):
    """Ext values are only allowed as whole top-level fields; nesting is bounded."""
    if depth > MAX_DEPTH:
        raise WireError("%s: nested deeper than %d" % (where, MAX_DEPTH), "FW_ETOOBIG")
    if isinstance(value, _Lz4Ext):
        raise WireError("%s: an lz4 ext inside a container" % where)
    if isinstance(value, dict):
        for k, v in value.items():
            _no_ext(where, v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _no_ext(where, v, depth + 1)


def _inflate(where, ext, budget):
    if _lz4 is None:
        raise WireError("%s is lz4-compressed and the lz4 module is missing: install "
                        "python3-lz4 (apt) or lz4 (pip)" % where, "FW_EUNSUPPORTED")
    try:
        info = _lz4.get_frame_info(ext.data)
    except Exception as e:  # lz4 raises RuntimeError on a bad header
        raise WireError("%s: corrupt lz4 frame: %s" % (where, e))
    size = info.get("content_size") or 0
    if not size or not info.get("content_checksum"):
        raise WireError("%s: lz4 frame without content size or checksum" % where)
    if size > budget:
        raise WireError("%s: inflates to %d bytes, past the frame budget" % (where, size),
                        "FW_ETOOBIG")
    try:
        raw = _lz4.decompress(ext.data)
    except Exception as e:
        raise WireError("%s: corrupt lz4 data: %s" % (where, e))
    if len(raw) != size:
        raise WireError("%s: lz4 content size mismatch" % where)
    return raw


def decode(frame):
    """Decode one frame into a Message. Raises WireError for anything malformed."""
    if len(frame) > MAX_FRAME:
        raise WireError("frame of %d bytes, at most %d" % (len(frame), MAX_FRAME), "FW_ETOOBIG")
    try:
        env = msgpack.unpackb(frame, raw=False, use_list=True, strict_map_key=True,
                              ext_hook=_ext_hook)
    except WireError:
        raise
    except msgpack.ExtraData:
        raise WireError("trailing bytes after the envelope")
    except Exception as e:
        raise WireError("not a msgpack frame: %s" % e)
    if not isinstance(env, list) or len(env) != 8 or env[0] != MAGIC:
        raise WireError("bad magic: not a Flywheel frame")
    magic, version, mid, flags, request_id, epoch, sender, payload = env
    if not isinstance(version, int) or not MIN_VERSION <= version <= VERSION:
        raise WireError("protocol version %r, this client reads %d..%d"
                        % (version, MIN_VERSION, VERSION), "FW_EVERSION")
    for what, v in (("msg_id", mid), ("flags", flags), ("request_id", request_id),
                    ("epoch", epoch)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise WireError("envelope %s: expected uint, got %r" % (what, v))
    if not isinstance(sender, str) or len(sender.encode("utf-8")) > MAX_SENDER:
        raise WireError("envelope sender: expected str of at most %d bytes" % MAX_SENDER)
    if not isinstance(payload, dict):
        raise WireError("payload: expected a map")
    name = NAMES.get(mid)
    if name is None:
        raise WireError("unknown message id %d" % mid)
    table = {f[0]: f for f in MESSAGES[name][1]}
    budget = MAX_FRAME
    fields = {}
    for key, value in payload.items():
        where = "%s.%s" % (name, key)
        spec = table.get(key)
        if isinstance(value, _Lz4Ext):
            raw = _inflate(where, value, budget)
            budget -= len(raw)
            if spec is None or spec[1] == "BIN":
                value = raw
            elif spec[1] in ("STR", "JSON"):
                try:
                    value = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise WireError("%s: invalid UTF-8" % where)
            else:
                raise WireError("%s: lz4 ext in a %s field" % (where, spec[1]))
        else:
            _no_ext(where, value)
        if value is None:  # nil counts as absent
            continue
        if spec is not None:
            _check_value(where, spec[1], spec[3], value)
        fields[key] = value
    for fname, _, required, _ in MESSAGES[name][1]:
        if required and fname not in fields:
            raise WireError("%s.%s: required field missing" % (name, fname))
    return Message(name, fields, request_id=request_id, epoch=epoch, sender=sender,
                   flags=flags, version=version, msg_id=mid)
