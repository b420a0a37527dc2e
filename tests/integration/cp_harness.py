"""Shared harness of the control-plane integration and fault tests.

Paths come from ctest's environment (FW_SOURCE_DIR, FW_BINARY_DIR) or fall
back to the source tree and build/. A Cluster is one scripts/cluster
directory under a fresh temporary directory: `up()` starts etcd, the
coordinators and the agents, `down()` stops every process by pid (the tests
call it in a finally/fixture so nothing outlives a test, pass or fail).

    with Cluster(coordinators=2, agents=3, coord_opts={"election.ttl": "2s"}) as cl:
        jid = cl.submit({"kind": "command", "shards": 10, "command": [...]})
        cl.wait_job(jid, timeout=60)
        cl.kill("coord-1", signal.SIGKILL)
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.environ.get("FW_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("FW_BINARY_DIR") or os.path.join(ROOT, "build")
CTL = os.path.join(BUILD, "cli", "flywheelctl")
CLUSTER = os.path.join(ROOT, "scripts", "cluster")
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.join(ROOT, "python", "tests"))

# Short periods so failures are detected in seconds (brief: election.ttl 2s,
# agent.lease_ttl 3s, heartbeat 500ms).
FAST_COORD = {"election.ttl": "2s"}
FAST_AGENT = {"agent.lease_ttl": "3s", "agent.heartbeat_interval": "500ms",
              "agent.kill_grace": "1s"}


def ctl(*args, env=None, timeout=60, check=False, input=None):
    """Run flywheelctl; returns CompletedProcess (text)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    p = subprocess.run([CTL] + [str(a) for a in args], capture_output=True, text=True,
                       env=full_env, timeout=timeout, input=input)
    if check and p.returncode != 0:
        raise AssertionError("flywheelctl %s: rc=%d\nstdout: %s\nstderr: %s" % (
            " ".join(map(str, args)), p.returncode, p.stdout, p.stderr))
    return p


def wait_for(pred, timeout, what, interval=0.2):
    """Poll pred() until it returns a truthy value; AssertionError after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except Exception as e:  # a transient error while the cluster moves
            last = e
        time.sleep(interval)
    raise AssertionError("timed out after %gs waiting for %s (last: %r)" % (timeout, what, last))


class Cluster:
    """A local cluster (scripts/cluster) in its own temporary directory."""

    def __init__(self, coordinators=1, agents=2, coord_opts=None, agent_opts=None,
                 timeout=60, keep=False):
        self.tmp = tempfile.mkdtemp(prefix="fw-cp-")
        self.dir = os.path.join(self.tmp, "cluster")
        self.coordinators = coordinators
        self.agents = agents
        self.coord_opts = dict(FAST_COORD, **(coord_opts or {}))
        self.agent_opts = dict(FAST_AGENT, **(agent_opts or {}))
        self.timeout = timeout
        self.keep = keep or os.environ.get("FW_KEEP_CLUSTER") == "1"
        self.env = {}
        self._client = None

    # -------------------------------------------------------- lifecycle

    def _script(self, *args, timeout=120, check=True):
        env = dict(os.environ, FW_BUILD_DIR=BUILD)
        p = subprocess.run([sys.executable, CLUSTER] + list(args) + ["--dir", self.dir],
                           capture_output=True, text=True, env=env, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError("scripts/cluster %s failed (rc=%d):\n%s\n%s" % (
                " ".join(args), p.returncode, p.stdout, p.stderr))
        return p

    def up(self):
        args = ["up", "--coordinators", str(self.coordinators), "--agents", str(self.agents),
                "--timeout", str(self.timeout)]
        for k, v in self.coord_opts.items():
            args += ["--coord-opt", "%s=%s" % (k, v)]
        for k, v in self.agent_opts.items():
            args += ["--agent-opt", "%s=%s" % (k, v)]
        self._script(*args, timeout=self.timeout + 30)
        with open(os.path.join(self.dir, "env")) as f:
            for line in f:
                line = line.strip()
                if line.startswith("export "):
                    k, v = line[len("export "):].split("=", 1)
                    self.env[k] = v.strip("'\"")
        return self

    def down(self):
        if self._client is not None:
            self._client.close()
            self._client = None
        try:
            self._script("down", check=False, timeout=60)
        finally:
            if not self.keep:
                shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        try:
            return self.up()
        except BaseException:
            self.dump_logs()
            self.down()
            raise

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.dump_logs()
        self.down()

    # ----------------------------------------------------------- access

    @property
    def endpoints(self):
        return self.env["FLYWHEEL_COORDINATOR"]

    @property
    def token_file(self):
        return self.env["FLYWHEEL_TOKEN_FILE"]

    def user_token_file(self):
        return os.path.join(self.dir, "user.token")

    def client(self, **kw):
        from flywheel import Client
        if self._client is None or kw:
            c = Client(self.endpoints, token_file=kw.pop("token_file", self.token_file), **kw)
            if kw:
                return c
            self._client = c
        return self._client

    def ctl(self, *args, **kw):
        env = dict(self.env)
        env.update(kw.pop("env", {}) or {})
        return ctl(*args, env=env, **kw)

    def ctl_json(self, *args, timeout=60):
        p = self.ctl("-o", "json", *args, timeout=timeout)
        if p.returncode != 0:
            raise AssertionError("flywheelctl -o json %s: rc=%d: %s" % (
                " ".join(args), p.returncode, p.stderr))
        return json.loads(p.stdout)

    def pid(self, name):
        with open(os.path.join(self.dir, "pids", name + ".pid")) as f:
            return int(f.read().strip())

    def alive(self, name):
        try:
            os.kill(self.pid(name), 0)
            return True
        except (OSError, ValueError):
            return False

    def kill(self, name, sig=signal.SIGKILL):
        os.kill(self.pid(name), sig)

    def stop(self, name):
        self._script("stop", name)

    def start(self, name):
        self._script("start", name)

    def log(self, name):
        try:
            with open(os.path.join(self.dir, "logs", name + ".log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def dump_logs(self, tail=60):
        """Print the tail of every log (pytest shows it for failed tests)."""
        logs = os.path.join(self.dir, "logs")
        if not os.path.isdir(logs):
            return
        for name in sorted(os.listdir(logs)):
            with open(os.path.join(logs, name), errors="replace") as f:
                lines = f.readlines()[-tail:]
            print("===== %s (last %d lines) =====" % (name, len(lines)))
            print("".join(lines))

    # ----------------------------------------------------------- status

    def status(self):
        return self.client().cluster_status()

    def leader(self):
        """The leader's name (as its pid file is named), or None."""
        try:
            st = self.status()
        except Exception:
            return None
        lead = st.get("leader")
        if isinstance(lead, dict):
            lead = lead.get("name")
        return lead or None

    def wait_leader(self, timeout, not_name=None):
        def pred():
            name = self.leader()
            return name if name and name != not_name else None
        return wait_for(pred, timeout, "a leader" + (" other than %s" % not_name
                                                     if not_name else ""))

    def submit(self, spec, token_file=None):
        c = self.client(token_file=token_file) if token_file else self.client()
        return c.submit(spec).id

    def job(self, jid):
        return self.client().job(jid).status()

    def tasks(self, jid):
        return self.client().job(jid).tasks()

    def wait_job(self, jid, timeout, states=("SUCCEEDED", "FAILED", "CANCELLED")):
        def pred():
            doc = self.job(jid)
            return doc if doc.get("state") in states else None
        return wait_for(pred, timeout, "job %s to reach %s" % (jid, "/".join(states)),
                        interval=0.3)
