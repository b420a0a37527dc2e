"""A task that dies (SIGKILL, as the OOM killer does, or SIGSEGV) fails with a clear error
naming the signal, is retried up to max_retries, and the agent keeps serving; cancelling a
task that ignores SIGTERM sends SIGTERM first, then SIGKILL after the kill grace
(issue 3: "a crash or OOM of a task never takes the agent down", "cancellation by SIGTERM
then SIGKILL after a grace period")."""

import os
import time

import pytest

from cp_harness import cluster_fixture, wait_for

GRACE = 2.0


@pytest.fixture(scope="module")
def cl(request):
    # One agent, so every attempt runs there and its survival is what is checked.
    return cluster_fixture(request, coordinators=1, agents=1,
                           coord_opts={"coordinator.kill_grace": "%gs" % GRACE},
                           agent_opts={"agent.kill_grace": "%gs" % GRACE})


def _self_kill_job(cl, sig, retries):
    jid = cl.submit({"kind": "command", "shards": 1, "max_retries": retries,
                     "resources": {"cpus": 1, "memory_mb": 16},
                     "command": ["sh", "-c", "echo about to die; kill -%s $$" % sig]})
    return jid, cl.wait_job(jid, 40)


@pytest.mark.parametrize("sig,num,word", [("KILL", 9, "out of memory"),
                                          ("SEGV", 11, "egmentation")])
def test_task_killed_by_signal(cl, sig, num, word):
    agent_pid = cl.pid("agent-1")
    jid, doc = _self_kill_job(cl, sig, retries=2)
    assert doc["state"] == "FAILED", doc
    (t,) = cl.tasks(jid)
    assert t["state"] == "FAILED", t
    # max_retries 2: three attempts in all, then the task fails for good.
    assert int(t["attempt"]) == 3, t
    err = t.get("error", "")
    assert "signal %d" % num in err, t
    assert word in err, t
    # The task's last output is part of the error, so the reason is visible at once.
    assert "about to die" in err, t
    # The agent is the same process and still takes work.
    assert cl.alive("agent-1") and cl.pid("agent-1") == agent_pid
    ok = cl.submit({"kind": "command", "shards": 2, "resources": {"cpus": 1, "memory_mb": 16},
                    "command": ["sh", "-c", "echo fine"]})
    assert cl.wait_job(ok, 30)["state"] == "SUCCEEDED"
    assert cl.wait_agents(1)


def test_cancel_sigterm_then_sigkill_after_grace(cl, tmp_path):
    pidfile = tmp_path / "pid"
    # Traps SIGTERM (says so on stdout) and goes on: only SIGKILL ends it.
    jid = cl.submit({"kind": "command", "shards": 1, "max_retries": 3,
                     "resources": {"cpus": 1, "memory_mb": 16},
                     "command": ["sh", "-c", "echo $$ > %s; trap 'echo got-term' TERM; "
                                 "echo ready; while :; do sleep 0.1; done" % pidfile]})
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 30, "the task to start")
    pid = int(pidfile.read_text().strip())
    wait_for(lambda: cl.tasks(jid)[0]["state"] == "RUNNING", 10, "RUNNING")
    t0 = time.monotonic()
    p = cl.ctl("job", "cancel", jid)
    assert p.returncode == 0, p.stderr

    def gone():
        try:
            os.kill(pid, 0)
            return False
        except ProcessLookupError:
            return True
    wait_for(gone, GRACE + 10, "the task process to be killed", interval=0.05)
    took = time.monotonic() - t0
    # Not killed at once (SIGTERM was ignored), and not much later than the grace.
    assert took >= GRACE - 0.3, "killed after %.2fs, before the %gs grace" % (took, GRACE)
    assert took <= GRACE + 4, "killed after %.2fs, grace %gs" % (took, GRACE)
    doc = cl.wait_job(jid, 20)
    assert doc["state"] == "CANCELLED", doc
    (t,) = cl.tasks(jid)
    assert t["state"] == "CANCELLED" and int(t["attempt"]) == 1, t  # never retried
    # SIGTERM came first: the trap ran.
    p = cl.ctl("job", "logs", jid, timeout=30)
    assert p.returncode == 0, p.stderr
    assert "ready" in p.stdout and "got-term" in p.stdout, p.stdout
    assert cl.alive("agent-1")
