"""A result produced while there is no leader is not lost (issue 3: "keep results that the
coordinator has not acknowledged in a local journal (atomic files) and resend them after
reconnecting ... Duplicate reports must be harmless").

Short command tasks are started; the leader is SIGKILLed just before they end, so they end
while no coordinator leads. Their results must wait in the agent's journal
(work_dir/journal/<task>.<attempt>), be accepted exactly once by the new leader (first
attempt, never rerun) and then leave the journal. Then the same results are replayed: the
journal files saved during the gap are put back and the agent restarted, so it reports them
again; the leader acknowledges and ignores them, nothing changes."""

import json
import os
import shutil
import signal
import time

import pytest

from cp_harness import cluster_fixture, wait_for

NSHARDS = 4


@pytest.fixture
def cl(request):
    return cluster_fixture(request, coordinators=2, agents=1,
                           agent_opts={"agent.cpus": "8", "agent.memory_mb": "4096"})


def _journal(cl):
    d = os.path.join(cl.agent_dir("agent-1"), "journal")
    try:
        # Only committed entries: not an atomic write's temporary file in flight.
        return sorted(n for n in os.listdir(d) if not n.startswith(".")
                      and not n.endswith((".new", ".tmp")))
    except FileNotFoundError:
        return []


def _markers(markers, i):
    try:
        with open(os.path.join(markers, str(i))) as f:
            return f.read().split()
    except FileNotFoundError:
        return []


def test_result_during_failover_kept_and_accepted_once(cl, tmp_path):
    markers = str(tmp_path / "m")
    os.mkdir(markers)
    saved = tmp_path / "saved"
    saved.mkdir()
    go = str(tmp_path / "go")
    old = cl.leader()
    jid = cl.submit({"kind": "command", "shards": NSHARDS, "max_retries": 3,
                     "resources": {"cpus": 1, "memory_mb": 16},
                     "command": ["sh", "-c", "while [ ! -e %s ]; do sleep 0.02; done; "
                                 "echo $FLYWHEEL_ATTEMPT >> %s/$FLYWHEEL_SHARD_INDEX; "
                                 "echo done" % (go, markers)]})
    wait_for(lambda: all(t["state"] == "RUNNING" for t in cl.tasks(jid)), 20,
             "every task RUNNING", interval=0.05)
    cl.kill(old, signal.SIGKILL)
    t_kill = time.monotonic()
    open(go, "w").close()  # the tasks end now, while nobody leads (election.ttl is 2s)

    # Their results must sit in the journal until a new leader acknowledges them.
    def all_journaled():
        names = _journal(cl)
        if len(names) == NSHARDS:
            for n in names:
                shutil.copy(os.path.join(cl.agent_dir("agent-1"), "journal", n), saved / n)
            return names
        return None
    names = wait_for(all_journaled, 10, "%d results in the journal" % NSHARDS, interval=0.02)
    gap = time.monotonic() - t_kill
    assert cl.leader() is None, "a new leader existed before the results (%.2fs)" % gap
    assert sorted(names) == sorted("%s.%d.1" % (jid, i) for i in range(NSHARDS)), names
    doc = json.loads((saved / names[0]).read_text())
    assert doc.get("schema") == 1 and doc.get("status") == "succeeded", doc

    new = cl.wait_leader(15, not_name=old)
    final = cl.wait_job(jid, 30)
    assert final["state"] == "SUCCEEDED", final
    tasks = cl.tasks(jid)
    for t in tasks:
        assert t["state"] == "SUCCEEDED" and int(t["attempt"]) == 1, t
        # Kept, never rerun: each shard's command ran to its end exactly once.
        assert _markers(markers, int(t["index"])) == ["1"], (t, _markers(markers, t["index"]))
    wait_for(lambda: _journal(cl) == [], 10, "the journal to empty after the acks")
    before = {t["index"]: t for t in tasks}
    print("leader %s killed; results journaled after %.2fs; %s accepted them" % (old, gap, new))

    # Duplicates: put the journal back and restart the agent; it reports the four results
    # again when it registers. They are acknowledged (the files go) and change nothing.
    cl.stop("agent-1")
    jdir = os.path.join(cl.agent_dir("agent-1"), "journal")
    os.makedirs(jdir, exist_ok=True)
    for n in names:
        shutil.copy(saved / n, os.path.join(jdir, n))
    cl.start("agent-1")
    cl.wait_agents(1)
    wait_for(lambda: _journal(cl) == [], 15, "the replayed results to be acknowledged")
    assert "event=journal-loaded results=%d" % NSHARDS in cl.log("agent-1")
    assert cl.job(jid)["state"] == "SUCCEEDED"
    for t in cl.tasks(jid):
        b = before[t["index"]]
        for k in ("state", "attempt", "agent", "exit_code", "finished_at"):
            assert t.get(k) == b.get(k), (k, b, t)
    st = cl.job(jid)["tasks"]
    assert st.get("SUCCEEDED") == NSHARDS and sum(st.values()) == NSHARDS, st
    # The cluster goes on working after the replay.
    j2 = cl.submit({"kind": "command", "shards": 2, "resources": {"cpus": 1, "memory_mb": 16},
                    "command": ["true"]})
    assert cl.wait_job(j2, 30)["state"] == "SUCCEEDED"
