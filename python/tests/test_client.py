"""flywheel.Client against a fake coordinator: redirects, dead endpoints,
elections, paging, waits, log following and errors (no cluster needed)."""

import threading
import time

import pytest

from flywheel import Client, FlywheelError, JobFailed, Unavailable

from fake_coordinator import FakeCoordinator


@pytest.fixture
def fake():
    f = FakeCoordinator()
    f.start()
    yield f
    f.stop()


def _dead_endpoint():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return "tcp://127.0.0.1:%d" % port


def test_standby_redirect_is_followed(fake):
    standby = FakeCoordinator(name="standby")
    standby.redirect_to = fake.endpoint
    standby.start()
    try:
        c = Client(standby.endpoint, token="admin-token", timeout=2)
        assert c.cluster_status()["leader"]["name"] == "fake-1"
        assert [n for n, _ in standby.requests] == ["CLUSTER_STATUS"]
        assert [n for n, _ in fake.requests] == ["CLUSTER_STATUS"]
    finally:
        standby.stop()


def test_dead_endpoint_is_skipped_and_all_dead_is_a_clear_error(fake):
    dead = _dead_endpoint()
    c = Client([dead, fake.endpoint], token="admin-token", timeout=0.3)
    t0 = time.monotonic()
    assert c.cluster_status()["queue_depth"] == 0
    assert time.monotonic() - t0 < 2
    # The endpoint that answered is asked first next time: no new delay.
    t0 = time.monotonic()
    c.cluster_status()
    assert time.monotonic() - t0 < 0.25
    c2 = Client(dead + "," + _dead_endpoint(), token="x", timeout=0.2)
    with pytest.raises(Unavailable) as e:
        c2.cluster_status()
    assert "no coordinator answered at %s" % dead in str(e.value)
    assert "timed out after 0.2 s each" in str(e.value)


def test_no_leader_yet_is_waited_out(fake):
    fake.unavailable_for = 3
    c = Client(fake.endpoint, token="admin-token", timeout=2)
    assert c.agents()[0]["id"] == "agent-1"
    assert len(fake.requests) >= 4


def test_auth_and_permission_errors(fake):
    with pytest.raises(FlywheelError) as e:
        Client(fake.endpoint, token="nope").cluster_status()
    assert e.value.name == "FW_EAUTH" and e.value.code == -11
    with pytest.raises(FlywheelError) as e:
        Client(fake.endpoint, token="user-token").submit({"kind": "command", "shards": 1})
    assert e.value.name == "FW_EPERM"
    with pytest.raises(FlywheelError, match="spec.shards"):
        Client(fake.endpoint, token="admin-token").submit({"kind": "noop", "shards": "3"})


def test_submit_status_tasks_paging_wait(fake):
    c = Client(fake.endpoint, token="admin-token")
    job = c.submit({"kind": "noop", "shards": 5})
    assert job.id == "j-000001" and job.state == "QUEUED"
    tasks = job.tasks()
    assert [t["index"] for t in tasks] == [0, 1, 2, 3, 4]  # three pages of two
    assert len(c.jobs()) == 1
    threading.Timer(0.3, fake.set_state, args=(job.id, "SUCCEEDED")).start()
    assert job.wait(timeout=5)["state"] == "SUCCEEDED"
    j2 = c.submit({"kind": "noop"})
    with pytest.raises(TimeoutError, match="still QUEUED"):
        j2.wait(timeout=0.3)
    fake.set_state(j2.id, "FAILED")
    with pytest.raises(JobFailed):
        j2.wait(timeout=1)
    assert j2.wait(timeout=1, raise_on_failure=False)["state"] == "FAILED"


def test_idempotency_key_makes_a_resend_harmless(fake):
    c = Client(fake.endpoint, token="admin-token")
    a = c.submit({"kind": "noop"}, idempotency_key="k1")
    b = c.submit({"kind": "noop"}, idempotency_key="k1")
    assert a.id == b.id and len(fake.jobs) == 1
    keys = [f.get("idempotency_key") for n, f in fake.requests if n == "JOB_SUBMIT"]
    c.submit({"kind": "noop"})
    keys2 = [f.get("idempotency_key") for n, f in fake.requests if n == "JOB_SUBMIT"]
    assert keys == ["k1", "k1"] and keys2[-1].startswith("py-")


def test_logs_follow_until_the_job_ends(fake):
    c = Client(fake.endpoint, token="admin-token")
    jid = fake.add_job(ntasks=2, logs={0: b"zero-a\n", 1: b"one-a\n"})
    job = c.job(jid)

    def produce():
        time.sleep(0.3)
        fake.append_log(jid + ".0", b"zero-b is longer than seven bytes\npartial")
        time.sleep(0.6)
        fake.set_state(jid, "SUCCEEDED")

    threading.Thread(target=produce).start()
    lines = list(job.logs(follow=True))
    assert lines == ["[%s.0] zero-a" % jid, "[%s.1] one-a" % jid,
                     "[%s.0] zero-b is longer than seven bytes" % jid,
                     "[%s.0] partial" % jid], lines
    # One task, no prefix; without follow it reads what is there and stops.
    assert list(job.logs(task=1)) == ["one-a"]


def test_error_without_request_id_answers_the_pending_request(fake):
    # The coordinator cannot echo the id of a request whose payload it could not decode;
    # its ERROR (request_id 0) is the answer, not a stray to wait past.
    c = Client(fake.endpoint, token="admin-token", timeout=5)
    fake.undecodable_for = 1
    t0 = time.monotonic()
    with pytest.raises(FlywheelError) as ei:
        c.cluster_status()
    assert time.monotonic() - t0 < 2
    assert ei.value.name == "FW_EPROTO" and "missing required field" in ei.value.message
    assert c.cluster_status()["leader"]["name"] == "fake-1"
