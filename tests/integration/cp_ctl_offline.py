"""flywheelctl without a cluster: help at every level, usage errors, spec
files (YAML typing, errors naming line and field), unreachable coordinators,
and the client side of every command against a fake coordinator (redirects,
paging, -o json, job wait exit codes, logs -f, auth errors)."""

import json
import os
import socket
import threading
import time

import pytest

from cp_harness import CTL, ctl
from fake_coordinator import FakeCoordinator

COMMANDS = [("cluster", "status"), ("agent", "list"), ("agent", "show"), ("agent", "drain"),
            ("agent", "undrain"), ("job", "submit"), ("job", "list"), ("job", "show"),
            ("job", "cancel"), ("job", "logs"), ("job", "wait"), ("task", "list")]


@pytest.fixture
def fake(tmp_path):
    f = FakeCoordinator()
    f.start()
    tok = tmp_path / "token"
    tok.write_text("# admin\nadmin-token admin admin\n")
    utok = tmp_path / "user.token"
    utok.write_text("user-token\n")
    f.env = {"FLYWHEEL_COORDINATOR": f.endpoint, "FLYWHEEL_TOKEN_FILE": str(tok)}
    f.user_token = str(utok)
    yield f
    f.stop()


def run(fake, *args, **kw):
    return ctl(*args, env=fake.env, **kw)


def _dead_endpoint():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return "tcp://127.0.0.1:%d" % port


def test_binary_exists():
    assert os.access(CTL, os.X_OK), CTL


def test_help_at_every_level():
    for args in [("--help",), ("-h",), ("help",)]:
        p = ctl(*args)
        assert p.returncode == 0 and p.stdout.startswith("usage: flywheelctl"), p
        for noun, verb in COMMANDS:
            assert "%s %s" % (noun, verb) in p.stdout
    for noun in ("cluster", "agent", "job", "task"):
        p = ctl(noun, "--help")
        assert p.returncode == 0 and ("usage: flywheelctl %s <verb>" % noun) in p.stdout
    for noun, verb in COMMANDS:
        for form in ([noun, verb, "--help"], ["--help", noun, verb], ["help", noun, verb]):
            p = ctl(*form)
            assert p.returncode == 0, (form, p.stderr)
            assert p.stdout.startswith("usage: flywheelctl %s %s" % (noun, verb)), form
            assert "--coordinator" in p.stdout  # global flags listed too
        # No line of any help is wider than 100 columns.
        assert all(len(l) <= 100 for l in p.stdout.splitlines()), p.stdout
    assert "exit" in ctl("job", "wait", "--help").stdout.lower()


def test_usage_errors_exit_64_on_stderr():
    cases = [[], ["bogus"], ["job"], ["job", "bogus"], ["job", "show"],
             ["job", "show", "a", "b"], ["job", "list", "--nope"], ["-o", "yaml", "job", "list"],
             ["job", "wait", "j-1", "--timeout"], ["task", "list", "--state"]]
    for args in cases:
        p = ctl(*args)
        assert p.returncode == 64, (args, p.returncode, p.stderr)
        assert p.stderr.strip(), args
        assert p.stdout == "", args


def test_unreachable_coordinator_names_endpoint_and_timeout(tmp_path):
    tok = tmp_path / "t"
    tok.write_text("x\n")
    dead = _dead_endpoint()
    t0 = time.monotonic()
    p = ctl("--coordinator", dead, "--token-file", tok, "--timeout", "1s", "cluster", "status")
    assert p.returncode == 1
    assert "no coordinator answered at %s: timed out after 1 s" % dead in p.stderr
    assert time.monotonic() - t0 < 4
    p = ctl("--token-file", tok, "cluster", "status", env={"FLYWHEEL_COORDINATOR": ""})
    assert p.returncode == 1 and "FLYWHEEL_COORDINATOR" in p.stderr
    p = ctl("--coordinator", dead, "cluster", "status", env={"FLYWHEEL_TOKEN_FILE": ""})
    assert p.returncode == 1 and "token" in p.stderr


def test_redirect_and_dead_endpoint_with_json_output(fake):
    standby = FakeCoordinator(name="standby")
    standby.redirect_to = fake.endpoint
    standby.start()
    try:
        env = dict(fake.env, FLYWHEEL_COORDINATOR="%s,%s" % (_dead_endpoint(), standby.endpoint))
        p = ctl("--timeout", "500ms", "-o", "json", "cluster", "status", env=env)
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["leader"]["name"] == "fake-1"
        p = ctl("--timeout", "500ms", "cluster", "status", env=env)
        assert "Leader:" in p.stdout and "fake-1" in p.stdout
    finally:
        standby.stop()


def test_json_outputs_parse_and_lists_follow_pages(fake):
    jid = fake.add_job(ntasks=5, state="SUCCEEDED")
    for args in (["cluster", "status"], ["agent", "list"], ["agent", "show", "agent-2"],
                 ["job", "list"], ["job", "show", jid], ["task", "list", "--job", jid],
                 ["agent", "drain", "agent-1"], ["agent", "undrain", "agent-1"]):
        p = run(fake, "-o", "json", *args)
        assert p.returncode == 0, (args, p.stderr)
        json.loads(p.stdout)  # parses
    tasks = json.loads(run(fake, "-o", "json", "task", "list", "--job", jid).stdout)
    assert [t["index"] for t in tasks] == [0, 1, 2, 3, 4]  # pages of two, all followed
    assert len(json.loads(run(fake, "agent", "list", "-o", "json").stdout)) == 3
    table = run(fake, "task", "list", "--job", jid).stdout.splitlines()
    assert table[0].split()[:4] == ["TASK", "STATE", "AGENT", "ATTEMPTS"]
    assert len(table) == 6 and table[1].startswith(jid + ".0")
    drains = [f for n, f in fake.requests if n == "AGENT_DRAIN"]
    assert drains[0]["drain"] is True and drains[1]["drain"] is False
    p = run(fake, "agent", "show", "nope")
    assert p.returncode == 1 and "not found" in p.stderr


def test_submit_yaml_is_typed_and_json_id(fake, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("kind: command\nshards: 3\nmax_retries: 0x2\npriority: -1\n"
                    "resources: {cpus: 1, memory_mb: 256.5}\nlabels:\n  zone: \"7\"\n"
                    "  fast: true\ncommand: [sh, -c, 'echo $FLYWHEEL_SHARD_INDEX', yes, ~]\n")
    p = run(fake, "-o", "json", "job", "submit", spec)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out == {"id": "j-000001"}
    sent = json.loads([f for n, f in fake.requests if n == "JOB_SUBMIT"][-1]["spec"])
    assert sent == {"kind": "command", "shards": 3, "max_retries": 2, "priority": -1,
                    "resources": {"cpus": 1, "memory_mb": 256.5},
                    "labels": {"zone": "7", "fast": True},
                    "command": ["sh", "-c", "echo $FLYWHEEL_SHARD_INDEX", "yes", None]}
    # Table output is the bare id, for ID=$(flywheelctl job submit ...).
    js = tmp_path / "spec.json"
    js.write_text('{"kind": "noop", "shards": 2}')
    p = run(fake, "job", "submit", js)
    assert p.returncode == 0 and p.stdout == "j-000002\n"
    # stdin works too.
    p = run(fake, "job", "submit", "-", input="kind: noop\n")
    assert p.returncode == 0 and p.stdout == "j-000003\n"


def test_bad_spec_files_name_line_and_field(fake, tmp_path):
    cases = {
        "dup.yaml": ("kind: noop\nresources:\n  cpus: 1\n  cpus: 2\n",
                     "dup.yaml:4:3: resources: duplicate key 'cpus'"),
        "syntax.yaml": ("kind: noop\nshards: [1\n", "syntax.yaml:3:1: malformed YAML"),
        "big.yaml": ("shards: 123456789012345678901\n",
                     "big.yaml:1:9: shards: integer '123456789012345678901' is out of range"),
        "inf.yaml": ("resources:\n  cpus: .inf\n", "inf.yaml:2:9: resources.cpus: '.inf' is not"),
        "list.yaml": ("- kind: noop\n", "list.yaml: a spec must be an object"),
        "two.yaml": ("kind: noop\n---\nkind: noop\n", "two.yaml:3: a second YAML document"),
        "bad.json": ('{"kind": "noop", "shards": 1,}', "bad.json:1:"),
        "dup.json": ('{"kind": "noop", "kind": "x"}', "bad.json" and "dup.json:1:"),
        "empty.yaml": ("", "empty.yaml: the file is empty"),
        "merge.yaml": ("a: &x {b: 1}\nc:\n  <<: *x\n", "c: merge keys (<<) are not supported"),
    }
    before = len(fake.requests)
    for name, (text, want) in cases.items():
        f = tmp_path / name
        f.write_text(text)
        p = run(fake, "job", "submit", f)
        assert p.returncode == 1, (name, p.stdout, p.stderr)
        assert want in p.stderr, (name, p.stderr)
    assert len(fake.requests) == before, "a bad file must not be sent"
    p = run(fake, "job", "submit", tmp_path / "missing.yaml")
    assert p.returncode == 1 and "cannot open spec" in p.stderr
    # Field errors come from the coordinator and are passed on as they are.
    f = tmp_path / "quoted.yaml"
    f.write_text('kind: noop\nshards: "3"\n')
    p = run(fake, "job", "submit", f)
    assert p.returncode == 1 and "spec.shards: expected an integer" in p.stderr


def test_auth_errors_are_clear_and_nonzero(fake, tmp_path):
    bad = tmp_path / "bad"
    bad.write_text("wrong-token\n")
    p = ctl("--token-file", bad, "job", "list", env=fake.env)
    assert p.returncode == 1 and "FW_EAUTH" in p.stderr and "unknown token" in p.stderr
    spec = tmp_path / "c.yaml"
    spec.write_text("kind: command\ncommand: [true]\n")
    p = ctl("--token-file", fake.user_token, "job", "submit", spec, env=fake.env)
    assert p.returncode == 1 and "FW_EPERM" in p.stderr and "admin" in p.stderr


def test_job_wait_exit_codes(fake):
    ok = fake.add_job(state="SUCCEEDED")
    failed = fake.add_job(state="FAILED")
    cancelled = fake.add_job(state="CANCELLED")
    running = fake.add_job(state="RUNNING")
    assert run(fake, "job", "wait", ok).returncode == 0
    assert run(fake, "job", "wait", failed).returncode == 1
    assert run(fake, "job", "wait", cancelled).returncode == 2
    t0 = time.monotonic()
    p = run(fake, "job", "wait", running, "--timeout", "1")
    assert p.returncode == 3 and "still RUNNING after 1 s" in p.stderr
    assert 0.9 < time.monotonic() - t0 < 4
    p = run(fake, "job", "wait", "j-999999")
    assert p.returncode == 4 and "not found" in p.stderr
    threading.Timer(0.5, fake.set_state, args=(running, "SUCCEEDED")).start()
    p = run(fake, "-o", "json", "job", "wait", running, "--timeout", "10")
    assert p.returncode == 0 and json.loads(p.stdout)["state"] == "SUCCEEDED"
    # submit --wait: the id, then how it ended; -o json is one document.
    spec = {"kind": "noop"}
    threading.Timer(0.8, lambda: fake.set_state("j-000005", "CANCELLED")).start()
    p = run(fake, "-o", "json", "job", "submit", "-", "--wait", input=json.dumps(spec))
    assert p.returncode == 2, p.stderr
    doc = json.loads(p.stdout)
    assert doc["id"] == "j-000005" and doc["state"] == "CANCELLED"
    # An election in progress is waited out, not reported as an error.
    fake.unavailable_for = 3
    assert run(fake, "job", "wait", ok).returncode == 0


def test_job_logs_and_follow(fake):
    jid = fake.add_job(ntasks=2, state="RUNNING", logs={0: b"a0\na1\n", 1: b"b0\n"})
    p = run(fake, "job", "logs", jid)
    assert p.returncode == 0
    assert p.stdout.splitlines() == ["[%s.0] a0" % jid, "[%s.0] a1" % jid, "[%s.1] b0" % jid]
    p = run(fake, "job", "logs", jid + ".1")
    assert p.stdout == "b0\n"

    def produce():
        time.sleep(0.4)
        fake.append_log(jid + ".1", b"b1 after a while\nno newline at the end")
        time.sleep(0.7)
        fake.set_state(jid, "SUCCEEDED")

    threading.Thread(target=produce).start()
    t0 = time.monotonic()
    p = run(fake, "job", "logs", "-f", jid, timeout=20)
    assert p.returncode == 0, p.stderr
    assert time.monotonic() - t0 >= 1.0  # it waited for the job to end
    assert p.stdout.splitlines() == ["[%s.0] a0" % jid, "[%s.0] a1" % jid, "[%s.1] b0" % jid,
                                     "[%s.1] b1 after a while" % jid,
                                     "[%s.1] no newline at the end" % jid]
    p = run(fake, "-o", "json", "job", "logs", jid + ".0")
    pieces = [json.loads(l) for l in p.stdout.splitlines()]
    assert "".join(x["data"] for x in pieces) == "a0\na1\n"
    assert all(x["task"] == jid + ".0" for x in pieces)
    p = run(fake, "job", "logs", "j-424242")
    assert p.returncode == 1 and "not found" in p.stderr


def test_error_without_request_id_is_reported_not_waited_past(fake):
    fake.undecodable_for = 1
    t0 = time.monotonic()
    p = run(fake, "--timeout", "5s", "cluster", "status")
    assert p.returncode == 1 and "FW_EPROTO" in p.stderr, p.stderr
    assert "missing required field" in p.stderr
    assert time.monotonic() - t0 < 3
