"""The Python client (python/flywheel) against a live local cluster (2 coordinators, 2
agents): submit, status, wait, logs(follow=True), tasks(), redirects from the standby,
errors as exceptions, and python/examples/quickstart.ipynb executed with
`jupyter nbconvert --to notebook --execute`."""

import time

import pytest

from cp_harness import cluster_fixture, execute_notebook

from flywheel import Client, FlywheelError, JobFailed


@pytest.fixture(scope="module")
def cl(request):
    return cluster_fixture(request, coordinators=2, agents=2,
                           agent_opts={"agent.cpus": "4", "agent.memory_mb": "4096"})


def test_submit_status_logs_wait_tasks(cl):
    c = cl.client()
    job = c.submit({"kind": "command", "shards": 3, "max_retries": 1,
                    "command": ["sh", "-c", "echo start $FLYWHEEL_SHARD_INDEX; sleep 1; "
                                "echo end $FLYWHEEL_SHARD_INDEX/$FLYWHEEL_SHARD_COUNT"]})
    assert job.id.startswith("j-")
    st = job.status()
    assert st["id"] == job.id and st["state"] in ("QUEUED", "RUNNING"), st
    t0 = time.monotonic()
    lines = list(job.logs(follow=True))
    assert time.monotonic() - t0 >= 0.8, "logs(follow=True) ended before the tasks did"
    for i in range(3):
        assert "[%s.%d] start %d" % (job.id, i, i) in lines, lines
        assert "[%s.%d] end %d/3" % (job.id, i, i) in lines, lines
    final = job.wait(timeout=30)
    assert final["state"] == "SUCCEEDED"
    tasks = job.tasks()
    assert isinstance(tasks, list) and all(isinstance(t, dict) for t in tasks)
    assert sorted(t["index"] for t in tasks) == [0, 1, 2]
    for t in tasks:
        assert t["state"] == "SUCCEEDED" and t["attempt"] == 1 and t["agent"].startswith("agent-")
    # One task's log alone, without prefixes; non-follow reads what is there.
    assert list(job.logs(task=2)) == ["start 2", "end 2/3"]
    assert job.id in [j["id"] for j in c.jobs(state="SUCCEEDED")]


def test_failures_and_timeouts_are_exceptions(cl):
    c = cl.client()
    bad = c.submit({"kind": "command", "shards": 1, "max_retries": 0,
                    "command": ["sh", "-c", "exit 5"]})
    with pytest.raises(JobFailed) as ei:
        bad.wait(timeout=30)
    assert ei.value.job["state"] == "FAILED"
    assert bad.wait(timeout=5, raise_on_failure=False)["state"] == "FAILED"
    slow = c.submit({"kind": "command", "shards": 1, "command": ["sleep", "30"]})
    with pytest.raises(TimeoutError):
        slow.wait(timeout=1)
    doc = slow.cancel(reason="test")
    assert doc["id"] == slow.id
    assert slow.wait(timeout=20, raise_on_failure=False)["state"] == "CANCELLED"
    with pytest.raises(FlywheelError) as ei:
        c.submit({"kind": "noop", "shards": 1, "resources": {"cpus": -1}})
    assert ei.value.name == "FW_EINVAL" and "resources.cpus" in ei.value.message
    with pytest.raises(FlywheelError) as ei:
        c.job("j-999999").status()
    assert ei.value.name == "FW_ENOTFOUND"


def test_auth_refusals(cl, tmp_path):
    bad = Client(cl.endpoints, token="no-such-token", timeout=3)
    with pytest.raises(FlywheelError) as ei:
        bad.cluster_status()
    assert ei.value.code == -11 and ei.value.name == "FW_EAUTH"
    user = Client(cl.endpoints, token_file=cl.user_token_file(), timeout=3)
    with pytest.raises(FlywheelError) as ei:
        user.submit({"kind": "command", "shards": 1, "command": ["true"]})
    assert ei.value.name == "FW_EPERM" and "admin" in ei.value.message
    assert user.submit({"kind": "noop", "shards": 2}).wait(timeout=30)["state"] == "SUCCEEDED"


def test_standby_redirects_to_leader(cl):
    lead = cl.leader()
    standby = [n for n in cl.coord_names() if n != lead][0]
    c = Client(cl.client_endpoint(standby), token_file=cl.token_file, timeout=3)
    st = c.cluster_status()
    assert st["leader"]["name"] == lead
    assert c._connected == cl.client_endpoint(lead)  # it followed the REDIRECT
    assert c.submit({"kind": "noop", "shards": 1}).wait(timeout=30)["state"] == "SUCCEEDED"


def test_quickstart_notebook_executes(cl, tmp_path):
    doc = execute_notebook(cl, "quickstart", tmp_path, cell_timeout=180, timeout=240)
    text = ""
    for cell in doc["cells"]:
        for o in cell.get("outputs", []):
            assert o.get("output_type") != "error", o
            text += "".join(o.get("text", ""))
    assert "leader: " in text
    assert "shard 3 of 4" in text and "SUCCEEDED" in text
    assert "refused: FW_EINVAL" in text and "FAILED" in text
