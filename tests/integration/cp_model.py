"""The model registry end to end through the submission socket (issue 6).

`flywheelctl model register DIR` puts every file of a model directory and its tree manifest
into the leader's artifact store (D/store) and records an immutable version in etcd
(P/models/<name>/versions/<v>); aliases (P/models/<name>/aliases/<a>) move by fenced txns,
each move in the audit log. On a live cluster (2 coordinators, 1 agent) this checks:
re-registering identical content returns the same version; parent, datasets, job and
hyperparameters are recorded; an unknown parent or a manifest the store lacks is refused;
alias set/show/move/rm; a protected alias is refused to a user token (and the refusal is
audited) and moved by an admin; two concurrent `alias set` both end cleanly with exactly one
of the two values and their moves audited; download is byte-identical; after SIGKILL of the
leader the standby serves show and download."""

import filecmp
import os
import signal
import subprocess

import pytest

from cp_harness import CTL, TOKENIZER, cluster_fixture, etcd_range

BINDIR = os.environ.get("FW_BINARY_DIR", "build")
ENGINE = os.path.join(BINDIR, "agent", "engine", "flywheel-engine")


@pytest.fixture(scope="module")
def cl(request):
    return cluster_fixture(request, coordinators=2, agents=1)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """Two tiny model directories (different seeds), made by the engine."""
    base = tmp_path_factory.mktemp("models")
    out = []
    for seed in (1, 2):
        d = base / ("m%d" % seed)
        p = subprocess.run([ENGINE, "init", "--config", "tiny", "--tokenizer", TOKENIZER,
                            "--out", str(d), "--seed", str(seed)],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        out.append(d)
    return out


def _changes(cl, ident):
    """Audit change rows naming ident, in audit order."""
    rows = []
    for _, v in sorted(etcd_range(cl, "/flywheel/audit/").items()):
        rows += [ch for ch in v.get("changes", []) if ch[0] == ident]
    return rows


def _raw(cl, msg, **fields):
    """One request straight on a socket to the leader (the Python client's call() takes
    `name` for the message), with the admin token."""
    import zmq
    from flywheel import wire
    with open(cl.token_file) as f:
        fields["token"] = f.read().split()[0]
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(cl.client_endpoint(cl.leader()))
    try:
        sock.send(wire.encode(wire.Message(msg, fields, request_id=9)))
        assert sock.poll(5000), "no reply to " + msg
        return wire.decode(sock.recv())
    finally:
        sock.close()


def _user(cl):
    return {"FLYWHEEL_TOKEN_FILE": cl.user_token_file()}


def test_register_idempotent_with_lineage(cl, dirs, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "hello"}\n{"text": "world"}\n')
    assert cl.ctl("dataset", "add", str(data), "--name", "tinyd").returncode == 0
    r = cl.ctl_json("model", "register", str(dirs[0]), "--name", "demo", "--dataset", "tinyd@1",
                    "--job", "j-000007", "--hparams", '{"lr": 0.001, "steps": 5}')
    m = r["model"]
    assert r["existing"] is False and m["version"] == 1 and m["parent"] is None
    assert m["datasets"] == ["tinyd@1"] and m["job"] == "j-000007"
    assert m["hparams"] == {"lr": 0.001, "steps": 5} and m["metrics"] == {}
    assert m["created_by"] == "admin" and m["code_version"].startswith("flywheel ")
    files = sorted(os.listdir(dirs[0]))
    assert "config.json" in files and "model.safetensors" in files
    assert m["files"] == len(files)
    assert m["size"] == sum(os.path.getsize(dirs[0] / f) for f in files)
    kvs = etcd_range(cl, "/flywheel/models/demo/")
    assert list(kvs) == ["/flywheel/models/demo/versions/00000001"]
    assert kvs["/flywheel/models/demo/versions/00000001"] == m
    assert _changes(cl, "model/demo:1") == [["model/demo:1", "", "registered", {"by": "admin"}]]

    # Identical content again: the same version, nothing new.
    again = cl.ctl_json("model", "register", str(dirs[0]), "--name", "demo")
    assert again["existing"] is True and again["model"]["version"] == 1
    assert list(etcd_range(cl, "/flywheel/models/demo/")) == list(kvs)

    # A child with --parent (by alias-less reference): the parent is recorded canonically.
    child = cl.ctl_json("model", "register", str(dirs[1]), "--name", "demo", "--parent", "demo")
    assert child["model"]["version"] == 2 and child["model"]["parent"] == "demo:1"
    assert child["model"]["digest"] != m["digest"]

    # Refusals: an unknown parent, an unregistered dataset, a manifest the store lacks.
    p = cl.ctl("model", "register", str(dirs[1]), "--name", "other", "--parent", "demo:9")
    assert p.returncode == 1 and "demo:9: not found" in p.stderr
    p = cl.ctl("model", "register", str(dirs[1]), "--name", "other", "--dataset", "nope@1")
    assert p.returncode == 1 and "nope@1 is not registered" in p.stderr
    assert "/flywheel/models/other/versions/00000001" not in etcd_range(cl, "/flywheel/models/")
    r = _raw(cl, "MODEL_REGISTER", name="ghost", digest="sha256:" + "1" * 64)
    assert r.name == "ERROR" and r.get("code") == -5 and "upload it first" in r.get("message")

    vs = cl.ctl_json("model", "versions", "demo")
    assert [v["version"] for v in vs] == [1, 2]
    lst = cl.ctl_json("model", "list")
    assert [(x["name"], x["version"]) for x in lst] == [("demo", 2)]


def test_alias_set_move_protect_rm(cl, dirs):
    p = cl.ctl("model", "alias", "set", "demo@champion", "1")
    assert p.returncode == 0, p.stderr
    assert cl.ctl_json("model", "show", "demo@champion")["version"] == 1
    moved = cl.ctl_json("model", "alias", "set", "demo@champion", "2")
    assert moved["version"] == 2 and moved["previous"] == 1 and moved["protected"] is False
    shown = cl.ctl_json("model", "show", "demo@champion")
    assert shown["version"] == 2 and shown["aliases"] == ["champion"]
    assert cl.ctl_json("model", "show", "demo:1")["aliases"] == []
    al = etcd_range(cl, "/flywheel/models/demo/aliases/")["/flywheel/models/demo/aliases/champion"]
    assert (al["version"], al["protected"], al["set_by"]) == (2, False, "admin")

    # A user may move an unprotected alias but not protect one.
    p = cl.ctl("model", "alias", "set", "demo@champion", "1", env=_user(cl))
    assert p.returncode == 0, p.stderr
    p = cl.ctl("model", "alias", "set", "demo@champion", "1", "--protect", env=_user(cl))
    assert p.returncode == 1 and "FW_EPERM" in p.stderr
    # The admin protects it; then the user cannot move or remove it, the admin can.
    assert cl.ctl("model", "alias", "set", "demo@champion", "2", "--protect").returncode == 0
    p = cl.ctl("model", "alias", "set", "demo@champion", "1", env=_user(cl))
    assert p.returncode == 1 and "FW_EPERM" in p.stderr and "protected" in p.stderr
    p = cl.ctl("model", "alias", "rm", "demo@champion", env=_user(cl))
    assert p.returncode == 1 and "FW_EPERM" in p.stderr
    assert cl.ctl_json("model", "show", "demo@champion")["version"] == 2
    moved = cl.ctl_json("model", "alias", "set", "demo@champion", "1")
    assert moved["version"] == 1 and moved["protected"] is True
    # Every move and every refusal is in the audit log, in order.
    ch = _changes(cl, "model/demo@champion")
    assert [c[1:3] for c in ch] == [["", "1"], ["1", "2"], ["2", "1"], ["1", "1"], ["1", "2"],
                                    ["2", "1"], ["2", ""], ["2", "1"]]
    refused = [c[3].get("refused") for c in ch]
    assert refused == [None, None, None, "FW_EPERM", None, "FW_EPERM", "FW_EPERM", None]
    assert [c[3]["by"] for c in ch] == ["admin", "admin", "user", "user", "admin", "user",
                                        "user", "admin"]
    # Remove (admin), then the alias is gone.
    assert cl.ctl("model", "alias", "rm", "demo@champion").returncode == 0
    p = cl.ctl("model", "show", "demo@champion")
    assert p.returncode == 1 and "no alias 'champion'" in p.stderr
    assert _changes(cl, "model/demo@champion")[-1][1:] == ["1", "", {"by": "admin"}]
    p = cl.ctl("model", "alias", "set", "demo@champion", "7")
    assert p.returncode == 1 and "demo:7: not found" in p.stderr


def test_concurrent_alias_set(cl, dirs):
    env = dict(cl.env)
    procs = [subprocess.Popen([CTL, "model", "alias", "set", "demo@race", v], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for v in ("1", "2")]
    outs = [p.communicate(timeout=30) for p in procs]
    rcs = [p.returncode for p in procs]
    for rc, (_, err) in zip(rcs, outs):
        assert rc == 0 or (rc == 1 and "FW_ECONFLICT" in err), (rc, err)
    final = cl.ctl_json("model", "show", "demo@race")["version"]
    assert final in (1, 2)
    ch = _changes(cl, "model/demo@race")
    moves = [c for c in ch if "refused" not in c[3]]
    # Each command that succeeded committed exactly one audited move; the last one
    # committed is where the alias points.
    assert len(moves) == rcs.count(0) >= 1
    assert moves[-1][2] == str(final)
    assert sorted(c[2] for c in ch) == ["1", "2"]  # both attempts recorded


def test_download_round_trip(cl, dirs, tmp_path):
    dest = tmp_path / "dl"
    p = cl.ctl("model", "download", "demo:1", str(dest))
    assert p.returncode == 0, p.stderr
    names = sorted(os.listdir(dirs[0]))
    assert sorted(os.listdir(dest)) == names
    match, mismatch, errors = filecmp.cmpfiles(dirs[0], dest, names, shallow=False)
    assert match == names and not mismatch and not errors
    assert not [n for n in os.listdir(tmp_path) if n.startswith("dl.")]  # no debris
    p = cl.ctl("model", "download", "demo:1", str(dest))
    assert p.returncode == 1 and "already exists" in p.stderr


def test_failover_standby_serves(cl, dirs, tmp_path):
    assert cl.ctl("model", "alias", "set", "demo@prod", "2").returncode == 0
    rec = cl.ctl_json("model", "show", "demo@prod")
    before = etcd_range(cl, "/flywheel/models/demo/aliases/")["/flywheel/models/demo/aliases/prod"]
    old = cl.leader()
    cl.kill(old, signal.SIGKILL)
    new = cl.wait_leader(20, not_name=old)
    assert new != old
    assert cl.ctl_json("model", "show", "demo@prod") == rec
    dest = tmp_path / "after"
    p = cl.ctl("model", "download", "demo@prod", str(dest))
    assert p.returncode == 0, p.stderr
    names = sorted(os.listdir(dirs[1]))
    match, _, _ = filecmp.cmpfiles(dirs[1], dest, names, shallow=False)
    assert match == names
    # The new leader moves aliases too (its audit sequence continues).
    moved = cl.ctl_json("model", "alias", "set", "demo@prod", "1")
    assert moved["previous"] == 2 and moved["epoch"] > before["epoch"]
