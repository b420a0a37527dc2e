"""Datasets end to end through the submission socket (issue 6, docs/datasets.md).

`flywheelctl dataset add` ingests locally, uploads the canonical JSONL in 1 MiB chunks to
the leader's artifact store (D/store, shared by the coordinators) and registers an
immutable version in etcd (P/datasets/<name>/<version>). On a live cluster (2 coordinators,
1 agent) this checks: the Moby-Dick report (135 records) printed, returned with -o json and
kept in etcd agree; a file with bad lines gives exact accepted/rejected counts and line
numbers; re-adding identical content returns the same version; download is byte-identical
and digest-verified; split is reproducible by seed, disjoint and complete, with lineage;
a flipped byte in the store makes download fail with a digest error (and re-adding
repairs it); after SIGKILL of the leader the standby serves show and download."""

import hashlib
import json
import os
import signal
import time

import pytest

from cp_harness import MOBY, TOKENIZER, cluster_fixture, etcd_range, wait_for


BAD_LINES = [
    '{"text": "first record"}',           # 1 ok
    'not json at all',                     # 2 rejected: invalid JSON
    '',                                    # 3 blank: not a record
    '{"text": "first record"}',           # 4 ok, exact duplicate of line 1
    '{"prompt": "no completion"}',         # 5 rejected: prompt without completion
    '{"text": "  second   record  "}',     # 6 ok, cleaned to "second record"
    '{"text": 42}',                        # 7 rejected: text not a string
    '{"prompt": "q", "completion": "a"}',  # 8 ok
]


@pytest.fixture(scope="module")
def cl(request):
    # Short upload expiry and a small size bound so both can be tested.
    return cluster_fixture(request, coordinators=2, agents=1,
                           coord_opts={"coordinator.upload_timeout": "2s",
                                       "coordinator.upload_max_bytes": "8MiB"})


def _sha(path):
    with open(path, "rb") as f:
        return "sha256:" + hashlib.sha256(f.read()).hexdigest()


def _report_lines(text):
    """'key: value' lines of the printed report."""
    out = {}
    for line in text.splitlines():
        if ": " in line and not line.startswith(" "):
            k, v = line.split(": ", 1)
            out[k] = v
    return out


def _blob_path(cl, digest):
    hexd = digest.split(":", 1)[1]
    return os.path.join(cl.dir, "store", "blobs", "sha256", hexd[:2], hexd)


def test_add_moby_report_matches_etcd(cl):
    with open(MOBY, encoding="utf-8") as f:
        nonblank = sum(1 for line in f if line.strip())
    assert nonblank == 135
    p = cl.ctl("dataset", "add", MOBY, "--name", "moby", "--tokenizer", TOKENIZER)
    assert p.returncode == 0, p.stderr
    printed = _report_lines(p.stdout)
    assert printed["records in"] == "135" and printed["accepted"] == "135"
    assert printed["rejected"] == "0" and printed["records out"] == "135"
    assert "dataset moby@1 registered" in p.stdout
    tokens = int(printed["tokens"])
    assert tokens > 200000  # ~1.2 MB of English prose with GPT-2 BPE

    rec = cl.ctl_json("dataset", "show", "moby")
    assert rec["version"] == 1 and rec["records"] == 135 and rec["tokens"] == tokens
    assert rec["digest"] == printed["digest"] and rec["created_by"] == "admin"
    rep = rec["report"]
    assert (rep["records_in"], rep["accepted"], rep["rejected"], rep["duplicates"]) == \
        (135, 135, 0, 0)
    assert rep["bytes_in"] == os.path.getsize(MOBY)
    # etcd holds the same record, under its versioned key, and an audit entry names it.
    kvs = etcd_range(cl, "/flywheel/datasets/moby/")
    assert list(kvs) == ["/flywheel/datasets/moby/00000001"]
    assert kvs["/flywheel/datasets/moby/00000001"] == rec and rec["schema"] == 1
    audit = [v for v in etcd_range(cl, "/flywheel/audit/").values()
             if any(ch[0] == "dataset/moby@1" for ch in v.get("changes", []))]
    assert len(audit) == 1 and audit[0]["changes"][0][2:] == ["registered", {"by": "admin"}]
    # The blob is in the shared store, with the size the record says.
    assert os.path.getsize(_blob_path(cl, rec["digest"])) == rec["size"]

    # Identical content again: the same version, nothing new in etcd.
    again = cl.ctl_json("dataset", "add", MOBY, "--name", "moby")
    assert again["existing"] is True and again["dataset"]["version"] == 1
    assert list(etcd_range(cl, "/flywheel/datasets/moby/")) == ["/flywheel/datasets/moby/00000001"]


def test_bad_lines_exact(cl, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(BAD_LINES) + "\n")
    # Over the default threshold (1%): refused, but the report still names every line.
    p = cl.ctl("dataset", "add", str(bad), "--name", "bad")
    assert p.returncode == 1
    assert "3 of 7 records rejected" in p.stderr, p.stderr
    for n in (2, 5, 7):
        assert "line %d: " % n in p.stdout
    assert cl.ctl("dataset", "show", "bad").returncode == 1  # nothing registered

    out = cl.ctl_json("dataset", "add", str(bad), "--name", "bad", "--max-bad", "0.5")
    rep = out["report"]
    assert (rep["lines"], rep["records_in"], rep["accepted"], rep["rejected"]) == (8, 7, 4, 3)
    assert (rep["duplicates"], rep["records_out"], rep["cleaned"]) == (1, 3, 1)
    assert [r["line"] for r in rep["rejects"]] == [2, 5, 7]
    assert "JSON" in rep["rejects"][0]["reason"]
    assert "completion" in rep["rejects"][1]["reason"]
    assert out["dataset"]["version"] == 1 and out["dataset"]["records"] == 3

    dl = tmp_path / "bad.out"
    assert cl.ctl("dataset", "download", "bad@1", str(dl)).returncode == 0
    lines = dl.read_text().splitlines()
    assert [json.loads(x) for x in lines] == [
        {"text": "first record"}, {"text": "second record"},
        {"prompt": "q", "completion": "a"}]


def test_download_round_trip_and_versions(cl, tmp_path):
    dl = tmp_path / "moby.jsonl"
    p = cl.ctl("dataset", "download", "moby", str(dl))
    assert p.returncode == 0, p.stderr
    rec = cl.ctl_json("dataset", "show", "moby@1")
    assert _sha(dl) == rec["digest"] and os.path.getsize(dl) == rec["size"]
    # A second version from different content; @1 stays what it was, the default is @2.
    small = tmp_path / "small.jsonl"
    with open(dl) as f:
        small.write_text("".join(f.readlines()[:10]))
    v2 = cl.ctl_json("dataset", "add", str(small), "--name", "moby")
    assert v2["dataset"]["version"] == 2 and v2["existing"] is False
    assert cl.ctl_json("dataset", "show", "moby")["version"] == 2
    assert cl.ctl_json("dataset", "show", "moby@1")["digest"] == rec["digest"]
    assert [r["version"] for r in cl.ctl_json("dataset", "list", "moby")] == [1, 2]
    p = cl.ctl("dataset", "show", "moby@9")
    assert p.returncode == 1 and "moby@9: not found" in p.stderr


def test_split_reproducible_disjoint_complete(cl, tmp_path):
    a = cl.ctl_json("dataset", "split", "moby@1", "--holdout", "0.2", "--seed", "7")
    b = cl.ctl_json("dataset", "split", "moby@1", "--holdout", "0.2", "--seed", "7")
    for side in ("train", "eval"):
        assert a[side]["digest"] == b[side]["digest"]
        assert a[side]["version"] == b[side]["version"] and b[side]["existing"] is True
        assert a[side]["parents"] == ["moby@1"]
        sp = a[side]["lineage"]["split"]
        assert (sp["source"], sp["side"], sp["seed"], sp["holdout"]) == ("moby@1", side, 7, 0.2)
    assert a["train"]["name"] == "moby-train" and a["eval"]["name"] == "moby-eval"
    src, tr, ev = tmp_path / "src", tmp_path / "tr", tmp_path / "ev"
    for ref, path in (("moby@1", src), ("moby-train", tr), ("moby-eval", ev)):
        assert cl.ctl("dataset", "download", ref, str(path)).returncode == 0
    s, t, e = (p.read_text().splitlines() for p in (src, tr, ev))
    assert not set(t) & set(e)
    assert sorted(t + e) == sorted(s) and len(t) + len(e) == 135
    assert 0 < len(e) < 60  # ~20% of 135
    # Each side keeps the source's order.
    assert t == [x for x in s if x in set(t)]
    # Another seed: another split.
    c = cl.ctl_json("dataset", "split", "moby@1", "--holdout", "0.2", "--seed", "8")
    assert c["eval"]["digest"] != a["eval"]["digest"] and c["eval"]["version"] == 2


def test_corrupt_blob_detected_and_repaired(cl, tmp_path):
    rec = cl.ctl_json("dataset", "show", "bad@1")
    path = _blob_path(cl, rec["digest"])
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        b = f.read(1)
        f.seek(0)
        f.write(bytes([b[0] ^ 0x01]))
    out = tmp_path / "x.jsonl"
    p = cl.ctl("dataset", "download", "bad", str(out))
    assert p.returncode == 1
    assert "digest mismatch" in p.stderr and rec["digest"] in p.stderr
    assert "FW_ECORRUPT" in p.stderr
    assert not out.exists() and not os.path.exists(str(out) + ".part")
    # Re-adding the same file: the leader re-hashes its copy, quarantines it and takes the
    # upload; the version is the same and downloads verify again.
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(BAD_LINES) + "\n")
    again = cl.ctl_json("dataset", "add", str(bad), "--name", "bad", "--max-bad", "0.5")
    assert again["existing"] is True and again["dataset"]["version"] == 1
    assert cl.ctl("dataset", "download", "bad", str(out)).returncode == 0
    assert _sha(out) == rec["digest"]


def test_auth_and_bad_input(cl, tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("para one\n\npara two\n")
    env = {"FLYWHEEL_TOKEN_FILE": str(tmp_path / "nope")}
    (tmp_path / "nope").write_text("not-a-token\n")
    p = cl.ctl("dataset", "add", str(f), "--name", "t", env=env)
    assert p.returncode == 1 and "FW_EAUTH" in p.stderr
    p = cl.ctl("dataset", "add", str(f), "--name", "bad/name")
    assert p.returncode == 1 and "dataset name" in p.stderr
    # A user token may add datasets; text paragraphs become records.
    p = cl.ctl("-o", "json", "dataset", "add", str(f), "--name", "t", "--format", "text",
               env={"FLYWHEEL_TOKEN_FILE": cl.user_token_file()})
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["dataset"]["records"] == 2 and out["dataset"]["created_by"] != "admin"


def test_upload_protocol_errors(cl):
    """BLOB_UPLOAD_* straight on the wire: every misuse is a clear ERROR, nothing stored."""
    from flywheel.client import FlywheelError
    c = cl.client()
    user = cl.client(token_file=cl.user_token_file())
    data = b"0123456789" * 10
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    def err(who, msg, **kw):
        with pytest.raises(FlywheelError) as e:
            who.call(msg, **kw)
        return e.value

    e = err(c, "BLOB_UPLOAD_BEGIN", size=9 << 20)
    assert e.name == "FW_ETOOBIG" and "upload_max_bytes" in e.message
    uid = c.call("BLOB_UPLOAD_BEGIN", size=len(data)).get("upload_id")
    assert len(uid) == 32
    # Another token's client may not touch it.
    e = err(user, "BLOB_UPLOAD_CHUNK", upload_id=uid, offset=0, data=data[:10])
    assert e.name == "FW_EPERM" and "belongs to admin" in e.message
    r = c.call("BLOB_UPLOAD_CHUNK", upload_id=uid, offset=0, data=data[:40])
    assert r.get("received") == 40
    # Commit before every byte arrived: refused, the upload goes on.
    e = err(c, "BLOB_UPLOAD_COMMIT", upload_id=uid, digest=digest)
    assert e.name == "FW_EPROTO" and "40 of 100 bytes" in e.message
    # A gap: refused with both offsets, and the upload is gone.
    e = err(c, "BLOB_UPLOAD_CHUNK", upload_id=uid, offset=50, data=data[50:])
    assert e.name == "FW_EPROTO" and "offset 50" in e.message and "40 of 100" in e.message
    e = err(c, "BLOB_UPLOAD_CHUNK", upload_id=uid, offset=40, data=data[40:])
    assert e.name == "FW_ENOTFOUND" and "unknown" in e.message
    # A digest that does not match the bytes: FW_ECORRUPT, nothing stored.
    uid = c.call("BLOB_UPLOAD_BEGIN", size=len(data)).get("upload_id")
    c.call("BLOB_UPLOAD_CHUNK", upload_id=uid, offset=0, data=data)
    wrong = "sha256:" + "0" * 64
    e = err(c, "BLOB_UPLOAD_COMMIT", upload_id=uid, digest=wrong)
    assert e.name == "FW_ECORRUPT"
    assert not os.path.exists(_blob_path(cl, wrong))
    assert not os.path.exists(_blob_path(cl, digest))
    # An idle upload expires (coordinator.upload_timeout 2s).
    uid = c.call("BLOB_UPLOAD_BEGIN", size=len(data)).get("upload_id")
    time.sleep(2.5)
    e = err(c, "BLOB_UPLOAD_CHUNK", upload_id=uid, offset=0, data=data)
    assert e.name == "FW_ENOTFOUND" and "expired" in e.message
    # The right way: stored under its digest, readable in ranges.
    uid = c.call("BLOB_UPLOAD_BEGIN", size=len(data), digest=digest).get("upload_id")
    c.call("BLOB_UPLOAD_CHUNK", upload_id=uid, offset=0, data=data)
    r = c.call("BLOB_UPLOAD_COMMIT", upload_id=uid, digest=digest)
    assert r.get("complete") is True and r.get("digest") == digest
    r = c.call("BLOB_READ", digest=digest, offset=90, max_bytes=64)
    assert r.get("data") == data[90:] and r.get("size") == 100 and r.get("eof") is True
    e = err(c, "BLOB_READ", digest=wrong, offset=0)
    assert e.name == "FW_ENOTFOUND"
    # Registering a digest the store lacks is refused. (Straight on a socket: the
    # client's call() takes `name` for the message.)
    import zmq
    from flywheel import wire
    with open(cl.token_file) as f:
        token = f.read().split()[0]
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(cl.client_endpoint(cl.leader()))
    try:
        sock.send(wire.encode(wire.Message("DATASET_REGISTER", {
            "token": token, "name": "ghost", "digest": wrong, "report": "{}"}, request_id=9)))
        assert sock.poll(5000), "no reply to DATASET_REGISTER"
        r = wire.decode(sock.recv())
    finally:
        sock.close()
    assert r.name == "ERROR" and r.get("code") == -5 and "upload it first" in r.get("message")


def test_failover_standby_serves(cl, tmp_path):
    old = cl.leader()
    rec = cl.ctl_json("dataset", "show", "moby@1")
    cl.kill(old, signal.SIGKILL)
    new = cl.wait_leader(20, not_name=old)
    assert new != old
    after = cl.ctl_json("dataset", "show", "moby@1")
    assert after == rec
    dl = tmp_path / "m.jsonl"
    p = cl.ctl("dataset", "download", "moby@1", str(dl))
    assert p.returncode == 0, p.stderr
    assert _sha(dl) == rec["digest"]
    # The new leader registers too (versions continue, its epoch is fenced in).
    small = tmp_path / "s.jsonl"
    small.write_text('{"text": "after failover"}\n')
    v = cl.ctl_json("dataset", "add", str(small), "--name", "moby")
    assert v["dataset"]["version"] == 3 and v["dataset"]["coordinator"] == new
