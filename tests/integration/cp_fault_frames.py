"""Garbage to both of the leader's ZeroMQ endpoints (client ROUTER and agent ROUTER):
random bytes, empty and multi-part messages, truncated frames, oversized frames, unknown
message ids, wrong versions, valid frames with missing or mistyped fields, agent messages
on the client socket and client messages on the agent socket. The coordinator must keep
serving (a normal request afterwards works, the real agent stays connected, a job runs),
and on the client socket every frame that came with a routing identity gets an ERROR."""

import os
import random

import msgpack
import pytest
import zmq

from cp_harness import MAGIC, cluster_fixture, raw_frame, wait_for

from flywheel import wire


@pytest.fixture(scope="module")
def cl(request):
    return cluster_fixture(request, coordinators=1, agents=1)


def dealer(endpoint, identity=None):
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    if identity:
        s.setsockopt(zmq.IDENTITY, identity)
    s.connect(endpoint)
    return s


def recv(s, timeout=3.0):
    if not s.poll(int(timeout * 1000), zmq.POLLIN):
        return None
    return s.recv_multipart()


def token(cl):
    return open(cl.token_file).read().split()[0]


def garbage(cl):
    """(label, [frames]) cases, valid-looking or not."""
    rnd = random.Random(1234)
    tok = token(cl)
    good = wire.encode(wire.Message("JOB_GET", {"token": tok, "job_id": "j-000001"},
                                    request_id=77, sender="fuzz"))
    cases = [("empty", [b""]), ("one byte", [b"\x00"]), ("two parts", [b"abc", b"def"])]
    for i in range(20):
        cases.append(("random %d" % i, [bytes(rnd.getrandbits(8)
                                              for _ in range(rnd.randint(1, 300)))]))
    for cut in (1, 5, 16, 31, len(good) // 2, len(good) - 1):
        cases.append(("truncated at %d" % cut, [good[:cut]]))
    cases += [
        ("trailing bytes", [good + b"\xc0"]),
        ("bad magic", [raw_frame(66, {"token": tok, "job_id": "x"}, magic=0x12345678)]),
        ("version 99", [raw_frame(66, {"token": tok, "job_id": "x"}, version=99)]),
        ("unknown id", [raw_frame(4000, {"token": tok})]),
        ("payload not a map", [raw_frame(66, [1, 2, 3])]),
        ("missing field", [raw_frame(66, {"token": tok}, request_id=5)]),
        ("wrong type", [raw_frame(66, {"token": tok, "job_id": 12345}, request_id=6)]),
        ("string too long", [raw_frame(66, {"token": tok, "job_id": "j" * 5000}, request_id=7)]),
        ("huge limit", [raw_frame(68, {"token": tok, "limit": 2 ** 63}, request_id=8)]),
        ("deep nesting", [raw_frame(74, {"token": tok, "x": [[[[[[[[[[[[1]]]]]]]]]]]]})]),
        ("bad json spec", [raw_frame(64, {"token": tok, "spec": "{not json"}, request_id=9)]),
        ("spec not object", [raw_frame(64, {"token": tok, "spec": "[1,2]"}, request_id=10)]),
        ("bad lz4 ext", [raw_frame(64, {"token": tok, "spec": msgpack.ExtType(1, b"\x04\x22zz")},
                                   flags=1, request_id=11)]),
        ("unknown ext", [raw_frame(64, {"token": tok, "spec": msgpack.ExtType(9, b"x")})]),
        ("agent msg", [raw_frame(18, {"agent_id": "ghost", "seq": 1})]),
        ("register junk", [raw_frame(16, {"agent_id": "ghost", "hostname": "h",
                                          "resources": {"cpus": "many", "memory_mb": -1}})]),
        ("result for nothing", [raw_frame(23, {"task_id": "j-999999.0", "attempt": 1,
                                               "status": "succeeded"}, epoch=10 ** 12)]),
        ("log reply for nothing", [raw_frame(28, {"task_id": "j-1.0", "attempt": 1, "stream": 0,
                                                  "offset": 0, "data": b"x"})]),
        ("no token", [raw_frame(74, {}, request_id=12)]),
        ("sender too long", [raw_frame(74, {"token": tok}, sender="s" * 500)]),
    ]
    return cases


def assert_serving(cl):
    st = cl.client().cluster_status()
    assert st["leader"]["name"] == "coord-1"
    assert cl.alive("coord-1"), "the coordinator died:\n" + cl.log("coord-1")[-3000:]


def test_client_endpoint_survives_garbage_and_answers_errors(cl):
    s = dealer(cl.client_endpoint("coord-1"))
    try:
        no_reply = []
        for label, frames in garbage(cl):
            s.send_multipart(frames)
            reply = recv(s)
            if reply is None:
                no_reply.append(label)
                continue
            assert len(reply) == 1, (label, reply)
            m = wire.decode(reply[0])
            assert m.name == "ERROR", (label, m)
            assert m["code"] < 0 and m["message"], (label, m.fields)
            if label in ("missing field", "wrong type", "string too long"):
                # The payload did not decode, so the coordinator cannot echo the request
                # id (request_id 0, which the clients take as the answer to their one
                # outstanding request); the message names the field.
                assert m.request_id in (0, 5, 6, 7) and "job_id" in m["message"], \
                    (label, m.fields)
            if label == "no token":
                assert m["code"] in (-11, -8, -2), m.fields
        # Every frame came with an identity, so every one could be answered.
        assert not no_reply, "no ERROR reply to: %r" % no_reply
    finally:
        s.close(linger=0)
    assert_serving(cl)


def test_oversized_frames_on_both_endpoints(cl):
    tok = token(cl)
    big = raw_frame(64, {"token": tok, "spec": "x" * (9 << 20)}, request_id=3)
    for ep in (cl.client_endpoint("coord-1"), cl.agent_endpoint("coord-1")):
        s = dealer(ep)
        s.send(big)
        recv(s, timeout=2)  # an ERROR or nothing (the socket may drop the peer); no crash
        s.close(linger=0)
    assert_serving(cl)


def test_agent_endpoint_survives_garbage(cl):
    for label, frames in garbage(cl):
        s = dealer(cl.agent_endpoint("coord-1"), identity=("fuzz-" + str(os.getpid())).encode())
        s.send_multipart(frames)
        recv(s, timeout=0.2)
        s.close(linger=0)
    # Client requests on the agent socket are refused or ignored, never served.
    s = dealer(cl.agent_endpoint("coord-1"))
    s.send(wire.encode(wire.Message("CLUSTER_STATUS", {"token": token(cl)}, request_id=4,
                                    sender="fuzz")))
    r = recv(s, timeout=2)
    if r is not None:
        assert wire.decode(r[0]).name == "ERROR"
    s.close(linger=0)
    assert_serving(cl)
    # The real agent is still there and still runs work.
    wait_for(lambda: any(a["id"] == "agent-1" and a.get("connected", True)
                         for a in cl.client().agents()), 10, "agent-1 connected")
    job = cl.client().submit({"kind": "noop", "shards": 20})
    assert job.wait(timeout=30)["state"] == "SUCCEEDED"
    assert MAGIC == wire.MAGIC
