"""What the coordinator keeps in etcd, read back from etcd itself (docs/etcd-layout.md):
every value carries "schema": 1, and the append-only audit log P/audit/<seq> has one entry
per committed batch of state changes, stamped with the leader's epoch, in which each task's
transitions appear in lifecycle order. Also: a daemon's config file with an unknown key is
refused at start-up with an error naming the key and its line."""

import json
import os
import subprocess

import pytest

from cp_harness import BUILD, cluster_fixture, etcd_kvs

PREFIX = "/flywheel/"


@pytest.fixture(scope="module")
def cl(request):
    return cluster_fixture(request, coordinators=1, agents=1)


def test_values_schema_and_audit_log(cl):
    epoch = int(cl.status()["leader"]["epoch"])
    ok = cl.submit({"kind": "command", "shards": 3, "resources": {"cpus": 1, "memory_mb": 16},
                    "command": ["true"]})
    bad = cl.submit({"kind": "command", "shards": 1, "max_retries": 1,
                     "resources": {"cpus": 1, "memory_mb": 16}, "command": ["false"]})
    assert cl.wait_job(ok, 30)["state"] == "SUCCEEDED"
    assert cl.wait_job(bad, 30)["state"] == "FAILED"

    kvs = etcd_kvs(cl, PREFIX)
    assert kvs, "nothing under %s" % PREFIX
    for key, raw in kvs:
        doc = json.loads(raw)
        assert isinstance(doc, dict) and doc.get("schema") == 1, (key, doc)
    keys = [k for k, _ in kvs]
    assert PREFIX + "jobs/" + ok in keys and PREFIX + "jobs/" + bad in keys, keys
    assert PREFIX + "tasks/%s/000000" % ok in keys, keys

    audit = [(k, json.loads(v)) for k, v in kvs if k.startswith(PREFIX + "audit/")]
    assert len(audit) >= 3, audit
    seqs = [int(k.rsplit("/", 1)[1]) for k, _ in audit]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
    assert all(len(k.rsplit("/", 1)[1]) == 16 for k, _ in audit)
    # Every transition of every task of `ok`, as the audit log tells them, in order.
    path = {}
    for _, e in audit:
        assert int(e["epoch"]) == epoch, e  # one leader all along
        assert e.get("ts") and e.get("actor"), e
        for ch in e["changes"]:
            path.setdefault(ch[0], []).append((ch[1], ch[2]))
    for i in range(3):
        tid = "%s.%d" % (ok, i)
        steps = path.get(tid)
        assert steps, "no audit entry for %s (have %r)" % (tid, sorted(path)[:20])
        states = [steps[0][0]] + [to for _, to in steps]
        # Consecutive: each change starts where the last one ended.
        assert all(a[1] == b[0] for a, b in zip(steps, steps[1:])), steps
        assert states[-1] == "SUCCEEDED", steps
        order = ["PENDING", "ASSIGNED", "RUNNING", "SUCCEEDED"]
        assert [order.index(s) for s in states] == sorted(order.index(s) for s in states), steps
    # The failed task went through two attempts: it left a terminal-free path, then FAILED.
    steps = path.get("%s.0" % bad)
    assert steps and steps[-1][1] == "FAILED", steps
    assert sum(1 for _, to in steps if to == "RUNNING") == 2, steps
    # Jobs are audited too.
    assert any(to == "SUCCEEDED" for _, to in path.get(ok, [])), path.get(ok)


@pytest.mark.parametrize("binary,key", [("coordinator/flywheel-coordinator", "coordinator.nmae"),
                                        ("agent/flywheel-agent", "agent.lable")])
def test_unknown_config_key_names_key_and_line(tmp_path, binary, key):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("etcd.endpoints: http://127.0.0.1:1\n# a comment\n%s: x\n" % key)
    exe = os.path.join(BUILD, binary)
    p = subprocess.run([exe, "--config", str(cfg)], capture_output=True, text=True,
                       timeout=20)
    assert p.returncode != 0, p
    err = p.stderr + p.stdout
    assert "%s:3: unknown key '%s'" % (cfg, key) in err, err


def test_sigterm_is_a_clean_stop(cl):
    """SIGTERM (scripts/cluster stop) ends the leader cleanly: it resigns and logs a normal
    stop, not a failed loop (a signal that interrupts zmq_poll ends zloop_start at once)."""
    cl.stop("coord-1")
    log = cl.log("coord-1")
    assert "event=stopped name=coord-1" in log, log[-2000:]
    assert "event=resigned" in log, log[-2000:]
    assert "loop-failed" not in log, log[-2000:]
