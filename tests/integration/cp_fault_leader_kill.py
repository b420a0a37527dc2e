"""SIGKILL the leader in the middle of a 300-shard command job on 2 coordinators + 3 agents:
the standby leads within election.ttl + a few seconds, the job completes, and every shard
has exactly one accepted result, produced by an attempt that ran to its end (each shard's
command appends "<task> <attempt>" to a marker file when it finishes)."""

import signal
import time

import pytest

from cp_harness import check_exactly_one_accepted, cluster_fixture, shard_command, wait_for

TTL = 2.0
NSHARDS = 300


@pytest.fixture
def cl(request):
    return cluster_fixture(request, coordinators=2, agents=3,
                           agent_opts={"agent.cpus": "4", "agent.memory_mb": "4096"})


def test_leader_sigkill_mid_job(cl, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    old = cl.leader()
    assert old in cl.coord_names()
    old_epoch = int(cl.status()["leader"]["epoch"])
    c = cl.client()
    job = c.submit({"kind": "command", "shards": NSHARDS, "max_retries": 3,
                    "resources": {"cpus": 1, "memory_mb": 16},
                    "command": shard_command(str(markers), sleep=0.2)})

    # Mid-job: some shards done, most not.
    def progress():
        done = job.status()["tasks"].get("SUCCEEDED", 0)
        return done if done >= 30 else None
    done_before = wait_for(progress, 60, "30 shards to succeed")
    assert done_before < NSHARDS - 30, "the job ran too fast to kill the leader mid-job"

    cl.kill(old, signal.SIGKILL)
    t_kill = time.monotonic()
    new = cl.wait_leader(TTL + 8, not_name=old)
    took = time.monotonic() - t_kill
    assert new != old
    new_epoch = int(cl.status()["leader"]["epoch"])
    assert new_epoch > old_epoch, (old_epoch, new_epoch)
    print("failover: %s -> %s in %.2fs (epoch %d -> %d)" % (old, new, took, old_epoch,
                                                             new_epoch))
    assert took <= TTL + 5, "standby took %.1fs to lead (ttl %gs)" % (took, TTL)

    final = job.wait(timeout=120)
    assert final["state"] == "SUCCEEDED", final
    tasks = job.tasks()
    attempts = check_exactly_one_accepted(tasks, str(markers), NSHARDS)
    print("accepted attempts:", attempts)
    # Running tasks are kept across the failover, not rerun: almost every shard
    # finishes with its first attempt.
    assert attempts.get(1, 0) >= NSHARDS - 20, attempts
    # The killed leader stays dead; the status shows the new one with its agents.
    st = cl.status()
    assert st["leader"]["name"] == new and st["agents"]["alive"] == 3, st
