"""CURVE encryption end to end (issue 3: "CURVE encryption can be turned on in
configuration (czmq's zcert/zauth)").

`scripts/cluster up --curve` makes the coordinators' certificate with `flywheelctl cluster
gen-cert` and starts 2 coordinators and 2 agents with curve.enabled. Agents must register
and run tasks over CURVE; flywheelctl (FLYWHEEL_CURVE_SERVER_KEY / --curve-server-key) and
the Python client (curve_server_key=) must work, standby redirects included. A client
without the server key, or with a wrong one, must get no service: the handshake fails, so
no request reaches the coordinator (its client endpoint does not speak plain ZeroMQ)."""

import os

import pytest

from cp_harness import cluster_fixture, ctl, raw_frame

CMD = ["sh", "-c", "echo curve shard $FLYWHEEL_SHARD_INDEX"]


@pytest.fixture(scope="module")
def cl(request):
    return cluster_fixture(request, coordinators=2, agents=2, curve=True)


def test_daemons_run_with_curve(cl):
    cert = cl.curve_key
    assert cert and os.path.exists(cert) and os.path.exists(cert + "_secret"), cert
    # The secret half is private to its owner.
    assert os.stat(cert + "_secret").st_mode & 0o077 == 0
    for name in cl.coord_names():
        assert "curve=1" in cl.log(name), cl.log(name)[-2000:]
    # Both agents registered through the CURVE agent endpoint.
    assert len(cl.wait_agents(2)) == 2


def test_flywheelctl_over_curve(cl, tmp_path):
    st = cl.ctl_json("cluster", "status")
    assert st["leader"]["name"] in cl.coord_names(), st
    spec = tmp_path / "spec.json"
    spec.write_text('{"kind": "command", "shards": 4, "resources": {"cpus": 1, '
                    '"memory_mb": 16}, "command": ["sh", "-c", '
                    '"echo curve shard $FLYWHEEL_SHARD_INDEX"]}')
    p = cl.ctl("-o", "json", "job", "submit", str(spec), "--wait", timeout=60)
    assert p.returncode == 0, p.stderr
    import json
    jid = json.loads(p.stdout)["id"]
    assert cl.ctl_json("job", "show", jid)["state"] == "SUCCEEDED"
    # Logs come from the agents through the (CURVE) agent endpoint.
    p = cl.ctl("job", "logs", jid)
    assert p.returncode == 0, p.stderr
    for i in range(4):
        assert "curve shard %d" % i in p.stdout, p.stdout
    # The flag form, with the environment variable cleared.
    p = cl.ctl("--curve-server-key", cl.curve_key, "cluster", "status",
               env={"FLYWHEEL_CURVE_SERVER_KEY": ""})
    assert p.returncode == 0, p.stderr


def test_python_client_over_curve(cl):
    from flywheel import Client
    # The standby first: its REDIRECT also travels over CURVE.
    leader = cl.leader()
    standby = [n for n in cl.coord_names() if n != leader][0]
    eps = [cl.client_endpoint(standby), cl.client_endpoint(leader)]
    with Client(eps, token_file=cl.token_file, curve_server_key=cl.curve_key) as c:
        job = c.submit({"kind": "command", "shards": 2, "resources": {"cpus": 1,
                                                                      "memory_mb": 16},
                        "command": CMD})
        assert job.wait(timeout=60)["state"] == "SUCCEEDED"
        lines = sorted(job.logs())
        assert lines == ["[%s.0] curve shard 0" % job.id, "[%s.1] curve shard 1" % job.id], \
            lines
    # The key itself (Z85) works as well as the certificate's path.
    with open(cl.curve_key) as f:
        z85 = [l.split("=", 1)[1].strip().strip('"') for l in f
               if l.strip().startswith("public-key")][0]
    with Client(cl.endpoints, token_file=cl.token_file, curve_server_key=z85) as c:
        assert c.cluster_status()["leader"]["name"] == leader


def test_clients_without_the_key_get_nothing(cl, tmp_path):
    from flywheel import Client, Unavailable
    env = {"FLYWHEEL_COORDINATOR": cl.endpoints, "FLYWHEEL_TOKEN_FILE": cl.token_file,
           "FLYWHEEL_CURVE_SERVER_KEY": ""}
    # No key: plain ZeroMQ; the CURVE server never completes the handshake.
    p = ctl("--timeout", "1s", "cluster", "status", env=env, timeout=30)
    assert p.returncode != 0 and p.stderr.strip(), (p.returncode, p.stdout, p.stderr)
    # A wrong key (another certificate): the handshake fails too.
    other = str(tmp_path / "other")
    assert ctl("cluster", "gen-cert", other).returncode == 0
    p = ctl("--timeout", "1s", "--curve-server-key", other, "cluster", "status", env=env,
            timeout=30)
    assert p.returncode != 0, p.stdout
    with pytest.raises(Unavailable):
        Client(cl.endpoints, token_file=cl.token_file, timeout=1.0).cluster_status()
    with pytest.raises(Unavailable):
        Client(cl.endpoints, token_file=cl.token_file, timeout=1.0,
               curve_server_key=other).cluster_status()
    # A raw plain-text frame (a valid CLUSTER_STATUS request) gets no answer either.
    import zmq
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(cl.client_endpoint(cl.leader()))
    s.send(raw_frame(74, {"token": open(cl.token_file).read().strip()}))
    assert not s.poll(1000), "a plain-text client got an answer from a CURVE coordinator"
    s.close()
    # The coordinators keep serving the clients that have the key.
    assert cl.ctl_json("cluster", "status")["leader"]["name"] in cl.coord_names()
