"""SIGSTOP the leader past its TTL: the standby takes over; SIGCONT the old one: it steps
down at once (its log says so) and rejoins as a standby. Agents follow the new epoch: each
persists the highest epoch it has seen (work_dir/epoch) and drops anything older
(event=stale-epoch); no task state ever goes backwards while this happens, and the job
completes with exactly one accepted result per shard.

Agents only dial the leader named in etcd, so a test cannot hand one a forged old-epoch
message through the cluster (test_agent_daemon does that against a fake coordinator). Here
the fencing shows in what the agents persist (work_dir/epoch >= the new epoch), in their
logs (any event=stale-epoch line names an epoch below the highest seen), and in the old
leader redirecting clients after SIGCONT."""

import os
import re
import signal
import threading
import time

import pytest

from cp_harness import check_exactly_one_accepted, cluster_fixture, shard_command, wait_for

TTL = 2.0
NSHARDS = 40
ORDER = {"PENDING": 0, "ASSIGNED": 1, "RUNNING": 2, "SUCCEEDED": 3, "FAILED": 3,
         "CANCELLED": 3}


@pytest.fixture
def cl(request):
    return cluster_fixture(request, coordinators=2, agents=2,
                           agent_opts={"agent.cpus": "4", "agent.memory_mb": "4096"})


class Watcher(threading.Thread):
    """Polls the task list and records any state regression within one attempt, or any
    terminal task becoming non-terminal."""

    def __init__(self, cl, job_id):
        super().__init__(daemon=True)
        from flywheel import Client
        self.client = Client(cl.endpoints, token_file=cl.token_file, timeout=0.5)
        self.job_id = job_id
        self.last = {}
        self.regressions = []
        self.polls = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                tasks = self.client.job(self.job_id).tasks()
            except Exception:
                time.sleep(0.2)
                continue
            self.polls += 1
            for t in tasks:
                key = (int(t.get("attempt", 0)), ORDER.get(t["state"], -1))
                prev = self.last.get(t["id"])
                if prev is not None:
                    terminal_before = prev[1] == 3
                    if key < prev or (terminal_before and key[1] != 3):
                        self.regressions.append((t["id"], prev, key))
                self.last[t["id"]] = key
            time.sleep(0.2)
        self.client.close()


def read_epoch(path):
    """work_dir/epoch: one line "flywheel-epoch 1 <epoch>" (agent/agent_epoch.c)."""
    with open(path) as f:
        text = f.read()
    m = re.match(r"flywheel-epoch 1 (\d+)\s*$", text)
    assert m, "unexpected epoch file %s: %r" % (path, text)
    return int(m.group(1))


def test_stopped_leader_steps_down_and_agents_fence_its_epoch(cl, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    old = cl.leader()
    old_epoch = int(cl.status()["leader"]["epoch"])
    job = cl.client().submit({"kind": "command", "shards": NSHARDS, "max_retries": 3,
                              "resources": {"cpus": 1},
                              "command": shard_command(str(markers), sleep=1.5)})
    w = Watcher(cl, job.id)
    w.start()
    try:
        wait_for(lambda: job.status()["tasks"].get("RUNNING", 0) >= 2, 30, "tasks running")
        cl.kill(old, signal.SIGSTOP)
        t_stop = time.monotonic()
        try:
            new = cl.wait_leader(TTL + 8, not_name=old)
            new_epoch = int(cl.status()["leader"]["epoch"])
            assert new_epoch > old_epoch
            # Past the old leader's TTL for sure, with agents following the new one.
            time.sleep(max(0.0, TTL + 1 - (time.monotonic() - t_stop)))
            wait_for(lambda: all(read_epoch(os.path.join(cl.agent_dir(a), "epoch")) >=
                                 new_epoch for a in cl.agent_names()), 15,
                     "agents to adopt the new epoch")
        finally:
            log_mark = len(cl.log(old))
            cl.kill(old, signal.SIGCONT)
        # The old leader notices its lease is gone and steps down.
        def stepped_down():
            tail = cl.log(old)[log_mark:]
            return re.search(r"event=(step-?down|stepped-down|lost-leadership|leader-lost|"
                             r"lease-lost|demoted)\b", tail, re.I) is not None
        wait_for(stepped_down, 10, "%s to log its step-down" % old)
        st = cl.status()
        assert st["leader"]["name"] == new and int(st["leader"]["epoch"]) == new_epoch
        final = job.wait(timeout=90)
        assert final["state"] == "SUCCEEDED", final
    finally:
        w.stop.set()
        w.join(5)
    check_exactly_one_accepted(job.tasks(), str(markers), NSHARDS)
    assert w.polls > 5
    assert not w.regressions, "task states went backwards: %r" % w.regressions[:5]
    # Agents hold the new epoch, durably, and anything the old leader sent after
    # SIGCONT was dropped, not acted upon.
    for a in cl.agent_names():
        assert read_epoch(os.path.join(cl.agent_dir(a), "epoch")) >= new_epoch, a
        log = cl.log(a)
        for m in re.finditer(r"event=stale-epoch msg=(\S+) epoch=(\d+) highest=(\d+)", log):
            assert int(m.group(2)) < int(m.group(3)), m.group(0)
            assert int(m.group(2)) < new_epoch, m.group(0)
        assert re.search(r"event=registered [^\n]*epoch=%d\b" % new_epoch, log), \
            "%s never registered with the new leader (epoch %d)" % (a, new_epoch)
    # The old one is a standby now: it redirects clients to the new leader.
    from flywheel import Client
    c = Client(cl.client_endpoint(old), token_file=cl.token_file, timeout=3)
    assert c.cluster_status()["leader"]["name"] == new
    assert c._connected == cl.client_endpoint(new)
    c.close()
    code, _ = cl.http(old, "/readyz")
    assert code == 503
