"""flywheelctl and scripts/cluster against a live local cluster (2 coordinators, 2 agents):
the files `up` writes, `cluster status` naming the leader as its pid file, every command's
-o json output, the job lifecycle and job wait's exit codes, logs (-f), drain, auth refusals,
spec errors from the coordinator, and HTTP /healthz /readyz /metrics (promtool) on the
leader and the standby. One cluster for the module; torn down by a finalizer."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from cp_harness import CLUSTER, Cluster, cluster_fixture


@pytest.fixture(scope="module")
def cl(request):
    return cluster_fixture(request, coordinators=2, agents=2,
                           agent_opts={"agent.cpus": "4", "agent.memory_mb": "4096"})


def spec_file(tmp_path, spec, name="spec.json"):
    p = tmp_path / name
    p.write_text(json.dumps(spec) if name.endswith(".json") else spec)
    return str(p)


def submit(cl, tmp_path, spec, *extra):
    p = cl.ctl("-o", "json", "job", "submit", spec_file(tmp_path, spec), *extra)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)["id"]


# ----------------------------------------------------------------- scripts/cluster


def test_up_writes_env_tokens_pids_logs_and_status_names_leader(cl):
    d = cl.dir
    env = open(os.path.join(d, "env")).read()
    assert "export FLYWHEEL_COORDINATOR=tcp://127.0.0.1:" in env
    assert "export FLYWHEEL_TOKEN_FILE=" in env
    roles = sorted(l.split()[2] for l in open(os.path.join(d, "tokens"))
                   if l.strip() and not l.startswith("#"))
    assert roles == ["admin", "user"]
    assert oct(os.stat(os.path.join(d, "tokens")).st_mode & 0o777) == "0o600"
    names = ["etcd", "coord-1", "coord-2", "agent-1", "agent-2"]
    for n in names:
        assert cl.alive(n), n
        assert os.path.getsize(os.path.join(d, "logs", n + ".log")) > 0, n
    # The leader is named as its pid file is, in the table and in JSON.
    st = cl.ctl_json("cluster", "status")
    lead = st["leader"]["name"]
    assert lead in ("coord-1", "coord-2") and os.path.exists(os.path.join(d, "pids",
                                                                          lead + ".pid"))
    assert int(st["leader"]["epoch"]) > 0
    p = cl.ctl("cluster", "status")
    assert p.returncode == 0 and ("Leader:        %s (epoch" % lead) in p.stdout, p.stdout
    p = subprocess.run([sys.executable, CLUSTER, "status", "--dir", d], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert ("leader: %s" % lead) in p.stdout
    # `up` again on a running cluster changes nothing.
    p = subprocess.run([sys.executable, CLUSTER, "up", "--dir", d], capture_output=True,
                       text=True, timeout=60, env=dict(os.environ, FW_BUILD_DIR=os.environ.get(
                           "FW_BINARY_DIR", "build")))
    assert p.returncode == 0 and "already up" in p.stdout, p.stdout + p.stderr


# ------------------------------------------------------------------- flywheelctl


def test_every_command_gives_parseable_json(cl, tmp_path):
    jid = submit(cl, tmp_path, {"kind": "noop", "shards": 5})
    assert jid.startswith("j-") and len(jid) >= 8
    p = cl.ctl("job", "wait", jid, "--timeout", "30")
    assert p.returncode == 0, p.stderr
    for args in (["cluster", "status"], ["agent", "list"], ["agent", "show", "agent-1"],
                 ["job", "list"], ["job", "list", "--state", "SUCCEEDED"], ["job", "show", jid],
                 ["task", "list", "--job", jid], ["job", "logs", jid]):
        p = cl.ctl("-o", "json", *args)
        assert p.returncode == 0, (args, p.stderr)
        if args[:2] == ["job", "logs"]:
            for line in p.stdout.splitlines():
                json.loads(line)
        else:
            json.loads(p.stdout)
    jobs = cl.ctl_json("job", "list", "--state", "SUCCEEDED")
    assert jid in [j["id"] for j in jobs]
    assert all(j["state"] == "SUCCEEDED" for j in jobs)
    assert jid not in [j["id"] for j in cl.ctl_json("job", "list", "--state", "FAILED")]
    show = cl.ctl_json("job", "show", jid)
    assert show["id"] == jid and show["state"] == "SUCCEEDED" and show["kind"] == "noop"
    tasks = cl.ctl_json("task", "list", "--job", jid)
    assert sorted(t["index"] for t in tasks) == [0, 1, 2, 3, 4]
    assert all(t["state"] == "SUCCEEDED" and t["attempt"] == 1 for t in tasks)
    assert {t["agent"] for t in tasks} <= {"agent-1", "agent-2"}
    agents = cl.ctl_json("agent", "list")
    assert sorted(a["id"] for a in agents) == ["agent-1", "agent-2"]
    a1 = cl.ctl_json("agent", "show", "agent-1")
    assert a1["id"] == "agent-1" and a1["cpus"] == 4
    table = cl.ctl("task", "list", "--job", jid).stdout.splitlines()
    assert table[0].split()[:4] == ["TASK", "STATE", "AGENT", "ATTEMPTS"]
    assert len(table) == 6
    p = cl.ctl("job", "show", "j-999999")
    assert p.returncode == 1 and p.stderr.strip() and p.stdout == ""
    p = cl.ctl("agent", "show", "no-such-agent")
    assert p.returncode == 1 and "no-such-agent" in p.stderr


def test_command_job_logs_and_follow(cl, tmp_path):
    jid = submit(cl, tmp_path, {"kind": "command", "shards": 2, "max_retries": 0,
                                "command": ["sh", "-c", "echo hello $FLYWHEEL_SHARD_INDEX; "
                                            "sleep 1.5; echo bye $FLYWHEEL_SHARD_INDEX"]})
    t0 = time.monotonic()
    p = cl.ctl("job", "logs", "-f", jid, timeout=60)
    assert p.returncode == 0, p.stderr
    assert time.monotonic() - t0 >= 1.0, "logs -f returned before the tasks ended"
    lines = p.stdout.splitlines()
    for i in (0, 1):
        assert "[%s.%d] hello %d" % (jid, i, i) in lines, lines
        assert "[%s.%d] bye %d" % (jid, i, i) in lines, lines
    assert cl.ctl("job", "wait", jid, "--timeout", "20").returncode == 0
    p = cl.ctl("job", "logs", "%s.1" % jid)
    assert p.returncode == 0 and p.stdout == "hello 1\nbye 1\n", p.stdout


def test_job_wait_exit_codes_live(cl, tmp_path):
    failed = submit(cl, tmp_path, {"kind": "command", "shards": 1, "max_retries": 0,
                                   "command": ["sh", "-c", "echo failing >&2; exit 3"]})
    p = cl.ctl("job", "wait", failed, "--timeout", "30")
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    tasks = cl.ctl_json("task", "list", "--job", failed)
    assert tasks[0]["state"] == "FAILED" and tasks[0].get("exit_code") == 3, tasks
    slow = submit(cl, tmp_path, {"kind": "command", "shards": 1,
                                 "command": ["sleep", "30"]})
    t0 = time.monotonic()
    p = cl.ctl("job", "wait", slow, "--timeout", "1")
    assert p.returncode == 3 and "after 1 s" in p.stderr, p.stderr
    assert time.monotonic() - t0 < 6
    p = cl.ctl("job", "cancel", slow)
    assert p.returncode == 0, p.stderr
    p = cl.ctl("job", "wait", slow, "--timeout", "20")
    assert p.returncode == 2, (p.returncode, p.stderr)
    t = cl.ctl_json("task", "list", "--job", slow)[0]
    assert t["state"] == "CANCELLED", t
    # submit --wait: one JSON document with the id and how it ended.
    p = cl.ctl("-o", "json", "job", "submit", spec_file(tmp_path, {"kind": "noop", "shards": 3}),
               "--wait")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["id"].startswith("j-") and doc["state"] == "SUCCEEDED"


def test_drain_sends_no_new_work_and_undrain_restores(cl, tmp_path):
    p = cl.ctl("-o", "json", "agent", "drain", "agent-1")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["drain"] is True
    try:
        jid = submit(cl, tmp_path, {"kind": "noop", "shards": 12})
        assert cl.ctl("job", "wait", jid, "--timeout", "30").returncode == 0
        assert {t["agent"] for t in cl.ctl_json("task", "list", "--job", jid)} == {"agent-2"}
        table = cl.ctl("agent", "list").stdout
        assert "agent-1" in table
    finally:
        p = cl.ctl("-o", "json", "agent", "undrain", "agent-1")
    assert p.returncode == 0 and json.loads(p.stdout)["drain"] is False
    jid = submit(cl, tmp_path, {"kind": "command", "shards": 8,
                                "command": ["sleep", "0.3"]})
    assert cl.ctl("job", "wait", jid, "--timeout", "30").returncode == 0
    assert "agent-1" in {t["agent"] for t in cl.ctl_json("task", "list", "--job", jid)}


def test_bad_token_and_user_command_job_are_refused(cl, tmp_path):
    bad = tmp_path / "bad.token"
    bad.write_text("not-a-token\n")
    for args in (["cluster", "status"], ["job", "list"]):
        p = cl.ctl("--token-file", str(bad), *args)
        assert p.returncode == 1, (args, p.stdout)
        assert "FW_EAUTH" in p.stderr, p.stderr
    spec = spec_file(tmp_path, {"kind": "command", "shards": 1, "command": ["true"]})
    before = len(cl.ctl_json("job", "list"))
    p = cl.ctl("--token-file", cl.user_token_file(), "job", "submit", spec)
    assert p.returncode == 1 and "FW_EPERM" in p.stderr and p.stdout == "", p.stderr
    assert len(cl.ctl_json("job", "list")) == before, "a refused job must not exist"
    # A user may submit other kinds.
    p = cl.ctl("--token-file", cl.user_token_file(), "-o", "json", "job", "submit",
               spec_file(tmp_path, {"kind": "noop", "shards": 1}, "noop.json"), "--wait")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["state"] == "SUCCEEDED"


def test_bad_specs_are_refused_naming_the_field(cl, tmp_path):
    cases = [({"kind": "noop", "shards": 1, "bogus": 1}, "bogus"),
             ({"kind": "noop", "shards": 1, "resources": {"cpus": -1}}, "resources.cpus"),
             ({"kind": "noop", "shards": "3"}, "shards"),
             ({"kind": "command", "shards": 1, "command": "echo"}, "command"),
             ({"kind": "no-such-kind", "shards": 1}, "kind"),
             ({"kind": "noop", "shards": 1, "world_size": 2}, "world_size")]
    for i, (spec, field) in enumerate(cases):
        p = cl.ctl("job", "submit", spec_file(tmp_path, spec, "s%d.json" % i))
        assert p.returncode == 1, (spec, p.stdout)
        assert field in p.stderr and "FW_EINVAL" in p.stderr, (spec, p.stderr)
    y = spec_file(tmp_path, "kind: noop\nshards: 2\nresources:\n  cpus: 1\n  memory_mb: x\n",
                  "bad.yaml")
    p = cl.ctl("job", "submit", y)
    assert p.returncode == 1 and "resources.memory_mb" in p.stderr, p.stderr


# -------------------------------------------------------------------------- HTTP


def test_health_ready_and_metrics_on_leader_and_standby(cl, tmp_path):
    lead = cl.leader()
    standby = [n for n in cl.coord_names() if n != lead][0]
    assert cl.http(lead, "/healthz")[0] == 200
    assert cl.http(lead, "/readyz")[0] == 200
    assert cl.http(standby, "/healthz")[0] == 200
    code, body = cl.http(standby, "/readyz")
    assert code == 503, (code, body)
    assert cl.http(lead, "/no-such-path")[0] == 404
    promtool = shutil.which("promtool")
    for name in (lead, standby):
        code, text = cl.http(name, "/metrics")
        assert code == 200
        metrics = [l for l in text.splitlines() if l and not l.startswith("#")]
        assert metrics and all(l.startswith("flywheel_") for l in metrics), metrics[:5]
        if promtool:
            p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                               text=True, timeout=30)
            assert p.returncode == 0, "promtool on %s:\n%s%s" % (name, p.stdout, p.stderr)
    code, text = cl.http(lead, "/metrics")
    assert "_total" in text and "_bucket{" in text  # counters and a histogram
    if not promtool:
        pytest.skip("promtool not installed (prometheus package): metrics format not checked")


# ------------------------------------------------------------- down is idempotent


def test_down_stops_everything_by_pid_and_is_idempotent(request):
    small = Cluster(coordinators=1, agents=1)
    request.addfinalizer(small.down)
    small.up()
    pids = {n: small.pid(n) for n in ("etcd", "coord-1", "agent-1")}
    small._script("down")
    for n, pid in pids.items():
        assert not os.path.exists("/proc/%d" % pid) or \
            open("/proc/%d/stat" % pid).read().split(") ")[1][0] == "Z", n
        assert not os.path.exists(os.path.join(small.dir, "pids", n + ".pid")), n
    p = small._script("down")
    assert p.returncode == 0
    # Logs stay for a post-mortem.
    assert os.path.getsize(os.path.join(small.dir, "logs", "coord-1.log")) > 0


def test_up_failure_shows_the_failing_log_and_stops_everything(request):
    broken = Cluster(coordinators=1, agents=1, coord_opts={"coordinator.no_such_key": "1"},
                     timeout=20)
    request.addfinalizer(broken.down)
    args = ["up", "--coordinators", "1", "--agents", "1", "--timeout", "20"]
    for k, v in broken.coord_opts.items():
        args += ["--coord-opt", "%s=%s" % (k, v)]
    t0 = time.monotonic()
    p = broken._script(*args, check=False, timeout=60)
    assert p.returncode != 0
    assert time.monotonic() - t0 < 15, "a daemon that exits at once must fail `up` at once"
    # The error names the process and shows the end of its log, which names the key.
    assert "coord-1 exited during start-up" in p.stderr, p.stderr
    assert "coordinator.no_such_key" in p.stderr, p.stderr
    pids = os.path.join(broken.dir, "pids")
    assert not [f for f in os.listdir(pids) if f.endswith(".pid")], os.listdir(pids)
