"""Gang scheduling on a real cluster: 3 agents with one CPU each, one held by a blocking job.
A gang of 3 ranks (world_size 3) must wait with all its tasks PENDING (all or nothing), a
later small job must not backfill onto the slots the gang reserves, and when the blocker
ends the gang starts at once: every rank runs at the same time (the ranks meet at a file
barrier that fails after 20 s), with rank 0..2, world size 3 and one shared rendezvous."""

import os
import time

import pytest

from cp_harness import cluster_fixture, wait_for


@pytest.fixture
def cl(request):
    return cluster_fixture(request, coordinators=1, agents=3,
                           agent_opts={"agent.cpus": "1", "agent.memory_mb": "1024"})


def test_gang_waits_for_three_slots_then_starts_all_at_once(cl, tmp_path):
    d = str(tmp_path)
    c = cl.client()
    cl.wait_agents(3)
    blocker = c.submit({"kind": "command", "shards": 1, "max_retries": 0,
                        "resources": {"cpus": 1},
                        "command": ["sh", "-c", "while [ ! -f %s/release ]; do sleep 0.1; done"
                                    % d]})
    wait_for(lambda: blocker.status()["state"] == "RUNNING", 20, "the blocker to run")
    barrier = (
        'echo "$FLYWHEEL_RANK $FLYWHEEL_WORLD_SIZE $FLYWHEEL_RENDEZVOUS $FLYWHEEL_ATTEMPT" '
        '> {d}/rank-$FLYWHEEL_RANK; i=0; '
        'while [ "$(ls {d} | grep -c "^rank-")" -lt 3 ]; do '
        'i=$((i+1)); [ $i -gt 200 ] && {{ echo "barrier timed out" >&2; exit 9; }}; '
        'sleep 0.1; done; echo "rank $FLYWHEEL_RANK passed the barrier"').format(d=d)
    gang = c.submit({"kind": "command", "world_size": 3, "max_retries": 0,
                     "resources": {"cpus": 1}, "command": ["sh", "-c", barrier]})
    small = c.submit({"kind": "command", "shards": 1, "max_retries": 0,
                      "resources": {"cpus": 1}, "command": ["true"]})
    # Two slots are free, the gang needs three: nothing of it runs, and the small job
    # does not take a slot the gang is waiting for.
    time.sleep(3)
    tasks = gang.tasks()
    assert len(tasks) == 3
    assert all(t["state"] == "PENDING" for t in tasks), tasks
    assert gang.status()["state"] == "QUEUED"
    assert not any(n.startswith("rank-") for n in os.listdir(d))
    assert small.tasks()[0]["state"] == "PENDING", "the small job backfilled ahead of the gang"
    st = cl.status()
    assert st["queue_depth"] >= 1, st

    open(os.path.join(d, "release"), "w").close()
    assert blocker.wait(timeout=20)["state"] == "SUCCEEDED"
    final = gang.wait(timeout=40, raise_on_failure=False)
    assert final["state"] == "SUCCEEDED", (final, gang.tasks())
    ranks = {}
    for r in range(3):
        with open(os.path.join(d, "rank-%d" % r)) as f:
            rank, world, rdv, attempt = f.read().split()
        ranks[int(rank)] = (world, rdv)
        assert world == "3" and attempt == "1"
    assert sorted(ranks) == [0, 1, 2]
    rdvs = {v[1] for v in ranks.values()}
    assert len(rdvs) == 1 and list(rdvs)[0], "ranks disagree on the rendezvous: %r" % ranks
    tasks = gang.tasks()
    assert sorted(t.get("rank", t["index"]) for t in tasks) == [0, 1, 2]
    assert len({t["agent"] for t in tasks}) == 3  # one CPU per agent: one rank each
    assert small.wait(timeout=30)["state"] == "SUCCEEDED"
