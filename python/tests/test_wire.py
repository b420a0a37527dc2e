"""flywheel.wire against docs/protocol.md and proto/fw_messages.def (no cluster needed)."""

import json
import os
import re
import struct

import msgpack
import pytest

from flywheel import wire

ROOT = os.environ.get("FW_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
DEF = os.path.join(ROOT, "proto", "fw_messages.def")


def _rows(text):
    """(macro, [args]) for every FW_* row, honouring string literals and parentheses."""
    for m in re.finditer(r"^(FW_MESSAGE|FW_FIELD|FW_END|FW_RECORD)\(", text, flags=re.M):
        i, depth, quote, args, cur = m.end(), 1, False, [], ""
        while depth:
            ch = text[i]
            if quote:
                cur += ch
                if ch == "\\":
                    cur += text[i + 1]
                    i += 1
                elif ch == '"':
                    quote = False
            elif ch == '"':
                quote, cur = True, cur + ch
            elif ch == "(":
                depth, cur = depth + 1, cur + ch
            elif ch == ")":
                depth -= 1
                if depth:
                    cur += ch
            elif ch == "," and depth == 1:
                args.append(cur.strip())
                cur = ""
            else:
                cur += ch
            i += 1
        args.append(cur.strip())
        yield m.group(1), args


def _parse_def():
    """{name: (id, [(field, type, required, max)])} from the C table."""
    text = open(DEF, encoding="utf-8").read()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    msgs, cur = {}, None
    for kind, args in _rows(text):
        if kind == "FW_MESSAGE":
            cur = args[1]
            msgs[cur] = (int(args[0]), [])
        elif kind == "FW_FIELD" and cur and args[0] == cur:
            mx = int(eval(args[5]))  # "4 << 20" and plain numbers
            msgs[cur][1].append((args[1], args[2], args[4] == "REQ", mx))
        elif kind in ("FW_END", "FW_RECORD"):
            cur = None
    return msgs


def test_table_matches_fw_messages_def():
    c_table = _parse_def()
    assert len(c_table) > 20, "parsed too few messages from %s" % DEF
    for name, (mid, fields) in wire.MESSAGES.items():
        assert name in c_table, name
        cid, cfields = c_table[name]
        assert mid == cid, name
        assert fields == cfields, "%s: python %r != C %r" % (name, fields, cfields)
    # Every client <-> coordinator message is known to the client.
    for name, (mid, _) in c_table.items():
        if 64 <= mid <= 95 or mid <= 3:
            assert name in wire.MESSAGES, "wire.MESSAGES lacks %s (id %d)" % (name, mid)


def test_envelope_is_fixed_width_as_documented():
    m = wire.Message("JOB_GET", {"token": "t", "job_id": "j-000001"}, request_id=0x0102030405060708,
                     epoch=7, sender="nb")
    f = wire.encode(m)
    assert f[0] == 0x98 and f[1] == 0xCE
    assert f[2:6] == b"FWLY"
    assert f[6:8] == b"\xcc\x01"
    assert f[8] == 0xCD and struct.unpack(">H", f[9:11])[0] == 66
    assert f[11] == 0xCD and struct.unpack(">H", f[12:14])[0] == 0
    assert f[14] == 0xCF and struct.unpack(">Q", f[15:23])[0] == 0x0102030405060708
    assert f[23] == 0xCF and struct.unpack(">Q", f[24:32])[0] == 7
    assert f[32] == 0xA0 + 2 and f[33:35] == b"nb"
    # Payload: a map in table order (token before job_id).
    payload = msgpack.unpackb(f[35:], raw=False)
    assert list(payload) == ["token", "job_id"]


def test_round_trip_every_message():
    for name, (mid, fields) in wire.MESSAGES.items():
        vals = {}
        for fname, ftype, _, fmax in fields:
            vals[fname] = {"STR": "x", "JSON": '{"a":1}', "BIN": b"\x00\xff", "BOOL": True,
                           "UINT": min(3, fmax) if fmax else 3, "INT": -11,
                           "DOUBLE": 0.25}[ftype]
        m = wire.Message(name, vals, request_id=42, sender="t")
        d = wire.decode(wire.encode(m))
        assert d.name == name and d.id == mid and d.request_id == 42 and d.sender == "t"
        assert d.fields == vals, name


def test_required_and_types_are_checked_on_encode():
    with pytest.raises(wire.WireError, match="JOB_GET.job_id: required"):
        wire.encode(wire.Message("JOB_GET", {"token": "t"}))
    with pytest.raises(wire.WireError, match="expected str"):
        wire.encode(wire.Message("JOB_GET", {"token": "t", "job_id": 5}))
    with pytest.raises(wire.WireError, match="no such field"):
        wire.encode(wire.Message("JOB_GET", {"token": "t", "job_id": "j", "bogus": 1}))
    with pytest.raises(wire.WireError, match="at most 512"):
        wire.encode(wire.Message("CLUSTER_STATUS", {"token": "t" * 513}))


@pytest.mark.skipif(wire._lz4 is None, reason="python3-lz4 not installed")
def test_big_fields_are_lz4_frames_and_come_back():
    spec = json.dumps({"kind": "command", "command": ["sh", "-c", "echo " + "a" * 200000]})
    f = wire.encode(wire.Message("JOB_SUBMIT", {"token": "t", "spec": spec}))
    assert struct.unpack(">H", f[12:14])[0] & wire.FLAG_LZ4
    assert len(f) < len(spec) // 10
    env = msgpack.unpackb(f, raw=False, ext_hook=lambda code, data: (code, data))
    code, data = env[7]["spec"]
    assert code == wire.EXT_LZ4 and data[:4] == b"\x04\x22\x4d\x18"  # a standard LZ4 frame
    # The documented Python recipe reads it.
    import lz4.frame
    assert lz4.frame.decompress(data).decode() == spec
    back = wire.decode(f)
    assert back["spec"] == spec and isinstance(back["spec"], str)
    # BIN fields come back as bytes.
    blob = b"log line\n" * 20000
    chunk = wire.Message("LOG_CHUNK", {"task_id": "j.0", "attempt": 1, "stream": 0,
                                       "offset": 0, "data": blob, "eof": True})
    back = wire.decode(wire.encode(chunk))
    assert back["data"] == blob and isinstance(back["data"], bytes)
    # Incompressible data is sent plainly, without the flag.
    rnd = os.urandom(100000)
    f = wire.encode(wire.Message("LOG_CHUNK", dict(chunk.fields, data=rnd)))
    assert not struct.unpack(">H", f[12:14])[0] & wire.FLAG_LZ4


@pytest.mark.skipif(wire._lz4 is None, reason="python3-lz4 not installed")
def test_missing_lz4_module_is_a_clear_error(monkeypatch):
    f = wire.encode(wire.Message("JOB_GET_REPLY", {"doc": json.dumps({"x": "y" * 100000})}))
    monkeypatch.setattr(wire, "_lz4", None)
    with pytest.raises(wire.WireError, match="python3-lz4"):
        wire.decode(f)


def _frame(env):
    return msgpack.packb(env, use_bin_type=True)


def test_decoder_rejections():
    good = [wire.MAGIC, 1, 65, 0, 9, 0, "c", {"job_id": "j-1"}]
    assert wire.decode(_frame(good))["job_id"] == "j-1"
    cases = [
        ([1] + good[1:], "bad magic"),
        (good[:7], "bad magic"),
        ([wire.MAGIC, 2] + good[2:], "version"),
        ([wire.MAGIC, 1, 999] + good[3:], "unknown message id"),
        (good[:7] + [{}], "required field missing"),
        (good[:7] + [{"job_id": 5}], "expected str"),
        (good[:7] + [{"job_id": "j", "existing": msgpack.ExtType(5, b"x")}], "ext type 5"),
        (good[:7] + [{"job_id": "j", "x": [msgpack.ExtType(1, b"x")]}], "inside a container"),
    ]
    for env, what in cases:
        with pytest.raises(wire.WireError, match=what):
            wire.decode(_frame(env))
    with pytest.raises(wire.WireError, match="trailing"):
        wire.decode(_frame(good) + b"\x00")
    with pytest.raises(wire.WireError):
        wire.decode(b"\xff\x00garbage")
    with pytest.raises(wire.WireError, match="FW_EVERSION|version") as e:
        wire.decode(_frame([wire.MAGIC, 2] + good[2:]))
    assert e.value.code == "FW_EVERSION"
    # Python-style (smallest) integer encodings of the envelope are accepted.
    assert wire.decode(_frame([wire.MAGIC, 1, 65, 0, 1, 0, "", {"job_id": "j"}])).request_id == 1
    # nil counts as absent; unknown fields are skipped.
    d = wire.decode(_frame(good[:7] + [{"job_id": "j", "existing": None, "newer": [1, 2]}]))
    assert "existing" not in d.fields
