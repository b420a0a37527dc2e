"""Losing an agent or etcd mid-job.

- SIGKILL an agent while it runs tasks: its lease expires (agent.lease_ttl 3s), the leader
  retries its tasks on the other agents, the job completes with exactly one accepted result
  per shard, and no task is accepted from the dead agent after it died.
- Restart etcd mid-job (SIGKILL, then start it again on the same data and port): the
  coordinator and agents ride it out, the job completes."""

import signal
import time

import pytest

from cp_harness import check_exactly_one_accepted, cluster_fixture, shard_command, wait_for

NSHARDS = 60


@pytest.fixture
def cl(request):
    return cluster_fixture(request, coordinators=1, agents=3,
                           agent_opts={"agent.cpus": "3", "agent.memory_mb": "4096"})


def test_agent_sigkill_mid_job_tasks_finish_elsewhere(cl, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    job = cl.client().submit({"kind": "command", "shards": NSHARDS, "max_retries": 3,
                              "resources": {"cpus": 1},
                              "command": shard_command(str(markers), sleep=1.0)})

    def victim_busy():
        running = [t for t in job.tasks() if t["state"] == "RUNNING" and
                   t.get("agent") == "agent-2"]
        return running if len(running) >= 2 else None
    held = wait_for(victim_busy, 30, "agent-2 to run tasks")
    cl.kill("agent-2", signal.SIGKILL)
    t_kill = time.time() * 1000
    final = job.wait(timeout=120)
    assert final["state"] == "SUCCEEDED", final
    tasks = job.tasks()
    check_exactly_one_accepted(tasks, str(markers), NSHARDS)
    by_id = {t["id"]: t for t in tasks}
    for t in held:
        now = by_id[t["id"]]
        # It was running on agent-2 when it died: it finished on another agent,
        # with a later attempt.
        assert now["agent"] != "agent-2", now
        assert now["attempt"] > t["attempt"], (t, now)
    late = [t for t in tasks if t["agent"] == "agent-2" and
            t.get("finished_at", 0) > t_kill + 500]
    assert not late, "results accepted from a dead agent: %r" % late[:3]
    agents = {a["id"]: a for a in cl.client().agents()}
    assert "agent-2" not in agents or not agents["agent-2"].get("alive", False), agents


def test_etcd_restart_mid_job(cl, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    job = cl.client().submit({"kind": "command", "shards": NSHARDS, "max_retries": 3,
                              "resources": {"cpus": 1},
                              "command": shard_command(str(markers), sleep=0.5)})
    wait_for(lambda: job.status()["tasks"].get("SUCCEEDED", 0) >= 5, 30, "5 shards done")
    cl.kill("etcd", signal.SIGKILL)
    time.sleep(1.5)
    cl.start("etcd")
    final = job.wait(timeout=150)
    assert final["state"] == "SUCCEEDED", final
    check_exactly_one_accepted(job.tasks(), str(markers), NSHARDS)
    # The cluster is whole again: a leader, three live agents, new work runs.
    st = cl.status()
    assert st["leader"]["name"] == "coord-1"
    cl.wait_agents(3, timeout=30)
    assert cl.client().submit({"kind": "noop", "shards": 5}).wait(timeout=30)["state"] == \
        "SUCCEEDED"
