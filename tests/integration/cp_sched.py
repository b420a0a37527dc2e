"""Scheduling on a live cluster: the queue orders jobs by priority, then submission; a gang
whose agent is lost is retried whole (every rank gets a new attempt, the survivors' old
attempts are stopped, never accepted)."""

import os
import signal

import pytest

from cp_harness import cluster_fixture, wait_for


@pytest.fixture
def cl(request):
    return cluster_fixture(request, coordinators=1, agents=3,
                           agent_opts={"agent.cpus": "2", "agent.memory_mb": "4096"})


def test_priority_then_submission_order(cl, tmp_path):
    order = tmp_path / "order"
    go = tmp_path / "go"
    # One slot: agent-1 (2 cpus, every job asks 2); the others drained for the while.
    for a in ("agent-2", "agent-3"):
        assert cl.ctl("agent", "drain", a).returncode == 0
    try:
        blocker = cl.submit({"kind": "command", "shards": 1,
                             "resources": {"cpus": 2, "memory_mb": 16},
                             "command": ["sh", "-c", "while [ ! -e %s ]; do sleep 0.05; done"
                                         % go]})
        wait_for(lambda: cl.job(blocker)["tasks"].get("RUNNING", 0) == 1, 20,
                 "the blocker RUNNING")

        def one(tag, prio):
            return cl.submit({"kind": "command", "shards": 1, "priority": prio,
                              "resources": {"cpus": 2, "memory_mb": 16},
                              "command": ["sh", "-c", "echo %s >> %s" % (tag, order)]})
        jobs = [one("low1", 0), one("high1", 5), one("low2", 0), one("mid", 2),
                one("high2", 5)]
        go.touch()
        for j in jobs + [blocker]:
            assert cl.wait_job(j, 40)["state"] == "SUCCEEDED"
        # One at a time through the single slot: by priority, then by submission.
        got = order.read_text().split()
        assert got == ["high1", "high2", "mid", "low1", "low2"], got
        assert all(t["agent"] == "agent-1" for j in jobs for t in cl.tasks(j))
    finally:
        for a in ("agent-2", "agent-3"):
            cl.ctl("agent", "undrain", a)


def test_gang_retried_whole_when_an_agent_is_lost(cl, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    # Attempt 1 of every rank runs long; later attempts end at once.
    jid = cl.submit({"kind": "command", "world_size": 3, "max_retries": 2,
                     "resources": {"cpus": 1, "memory_mb": 16},
                     "command": ["sh", "-c",
                                 "echo start >> %s/$FLYWHEEL_RANK.$FLYWHEEL_ATTEMPT; "
                                 "[ $FLYWHEEL_ATTEMPT = 1 ] && sleep 60; "
                                 "echo end >> %s/$FLYWHEEL_RANK.$FLYWHEEL_ATTEMPT; exit 0"
                                 % (marks, marks)]})
    wait_for(lambda: all(t["state"] == "RUNNING" for t in cl.tasks(jid)), 30,
             "every rank RUNNING")
    tasks = cl.tasks(jid)
    victim = tasks[0]["agent"]
    cl.kill(victim, signal.SIGKILL)
    doc = cl.wait_job(jid, 60)
    assert doc["state"] == "SUCCEEDED", doc
    tasks = cl.tasks(jid)
    assert len(tasks) == 3
    for t in tasks:
        # Every rank, also those on surviving agents, moved on to attempt 2 together.
        assert t["state"] == "SUCCEEDED" and int(t["attempt"]) == 2, t
        assert t["agent"] != victim, t
    for r in range(3):
        assert open(os.path.join(marks, "%d.1" % r)).read().split() == ["start"], r
        assert open(os.path.join(marks, "%d.2" % r)).read().split() == ["start", "end"], r
