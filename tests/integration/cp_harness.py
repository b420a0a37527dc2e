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

import base64
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.environ.get("FW_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("FW_BINARY_DIR") or os.path.join(ROOT, "build")
CTL = os.path.join(BUILD, "cli", "flywheelctl")
CLUSTER = os.path.join(ROOT, "scripts", "cluster")
# The shared data folder beside the checkout (ctest sets FW_SHARED_DIR).
SHARED = os.environ.get("FW_SHARED_DIR") or os.path.join(
    os.path.dirname(__file__), "..", "..", "..", "shared")
TOKENIZER = os.path.join(SHARED, "data", "gpt2-tokenizer")
MOBY = os.path.join(SHARED, "data", "corpora", "moby-dick.jsonl")
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.join(ROOT, "python", "tests"))

# Short periods so failures are detected in seconds (brief: election.ttl 2s,
# agent.lease_ttl 3s, heartbeat 500ms).
# The coordinator's side follows suit: heartbeat asked of agents, how long a new
# leader waits for agents holding tasks (matches the agent lease), retry backoff.
FAST_COORD = {"election.ttl": "2s", "coordinator.agent_heartbeat": "500ms",
              "coordinator.reconcile_window": "3s", "coordinator.retry_backoff": "200ms",
              "coordinator.retry_backoff_max": "2s", "coordinator.kill_grace": "1s"}
FAST_AGENT = {"agent.lease_ttl": "3s", "agent.heartbeat_interval": "500ms",
              "agent.kill_grace": "1s", "agent.gpu_discovery": "false"}
MAGIC = 0x46574C59


def _die_with_parent():
    """preexec_fn: SIGKILL this child when the test process dies (Linux
    PR_SET_PDEATHSIG), so a killed test cannot leave `scripts/cluster up` starting
    daemons after the watchdog has stopped the cluster."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


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
                 timeout=60, keep=False, curve=False):
        self.tmp = tempfile.mkdtemp(prefix="fw-cp-")
        self.dir = os.path.join(self.tmp, "cluster")
        self.coordinators = coordinators
        self.agents = agents
        self.coord_opts = dict(FAST_COORD, **(coord_opts or {}))
        self.agent_opts = dict(FAST_AGENT, **(agent_opts or {}))
        self.timeout = timeout
        self.curve = curve
        self.keep = keep or os.environ.get("FW_KEEP_CLUSTER") == "1"
        self.env = {}
        self._client = None
        self._watchdog = None

    # -------------------------------------------------------- lifecycle

    def _script(self, *args, timeout=120, check=True):
        env = dict(os.environ, FW_BUILD_DIR=BUILD)
        p = subprocess.run([sys.executable, CLUSTER] + list(args) + ["--dir", self.dir],
                           capture_output=True, text=True, env=env, timeout=timeout,
                           preexec_fn=_die_with_parent)
        if check and p.returncode != 0:
            raise AssertionError("scripts/cluster %s failed (rc=%d):\n%s\n%s" % (
                " ".join(args), p.returncode, p.stdout, p.stderr))
        return p

    def _start_watchdog(self):
        """A detached process that runs `scripts/cluster down` (and removes the
        directory) if this test process dies without tearing down, e.g. killed by
        ctest's TIMEOUT: the daemons run in their own sessions and would outlive it."""
        code = ("import os, shutil, subprocess, sys, time\n"
                "pid, cluster, d, tmp, keep = int(sys.argv[1]), sys.argv[2], sys.argv[3], "
                "sys.argv[4], sys.argv[5] == '1'\n"
                "while True:\n"
                "    try:\n"
                "        os.kill(pid, 0)\n"
                "    except OSError:\n"
                "        break\n"
                "    time.sleep(1)\n"
                "subprocess.run([sys.executable, cluster, 'down', '--dir', d, '--grace', '2'],\n"
                "               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
                "if not keep:\n"
                "    shutil.rmtree(tmp, ignore_errors=True)\n")
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", code, str(os.getpid()), CLUSTER, self.dir, self.tmp,
             "1" if self.keep else "0"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)

    def up(self):
        if self._watchdog is None:
            self._start_watchdog()
        args = ["up", "--coordinators", str(self.coordinators), "--agents", str(self.agents),
                "--timeout", str(self.timeout)]
        if self.curve:
            args.append("--curve")
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
            if self._watchdog is not None:
                self._watchdog.kill()  # our own child, by its pid
                self._watchdog.wait()
                self._watchdog = None

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

    @property
    def curve_key(self):
        """The coordinators' public certificate when up with curve=True, else None."""
        return self.env.get("FLYWHEEL_CURVE_SERVER_KEY") or None

    def user_token_file(self):
        return os.path.join(self.dir, "user.token")

    def client(self, **kw):
        from flywheel import Client
        if self._client is None or kw:
            custom = bool(kw)  # another token or key: a client of its own, not cached
            c = Client(self.endpoints, token_file=kw.pop("token_file", self.token_file),
                       curve_server_key=kw.pop("curve_server_key", self.curve_key), **kw)
            if custom:
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

    def leader(self, timeout=0.5):
        """The leader's name (as its pid file is named), or None. Asks with a short
        per-endpoint timeout so a dead or stopped coordinator first in the list does
        not stretch a failover measurement by the client's default 5 s."""
        from flywheel import Client
        c = Client(self.endpoints, token_file=self.token_file, timeout=timeout,
                   curve_server_key=self.curve_key)
        try:
            st = c.cluster_status()
        except Exception:
            return None
        finally:
            c.close()
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

    def wait_agents(self, n, timeout=30):
        """Wait until the leader lists n live, connected agents; returns them."""
        def pred():
            agents = [a for a in self.client().agents()
                      if a.get("alive", True) and a.get("connected", True)]
            return agents if len(agents) >= n else None
        return wait_for(pred, timeout, "%d live agents" % n)

    # ------------------------------------------------------- addresses

    def state(self):
        """scripts/cluster's D/cluster.json: ports of etcd and each coordinator."""
        with open(os.path.join(self.dir, "cluster.json")) as f:
            return json.load(f)

    def coord(self, name):
        """{"name", "client", "agent", "http"} ports of one coordinator."""
        for c in self.state()["coords"]:
            if c["name"] == name:
                return c
        raise KeyError(name)

    def client_endpoint(self, name):
        return "tcp://127.0.0.1:%d" % self.coord(name)["client"]

    def agent_endpoint(self, name):
        return "tcp://127.0.0.1:%d" % self.coord(name)["agent"]

    def http(self, name, path, timeout=5):
        """GET http://<coordinator name's http port><path>: (status, body text)."""
        url = "http://127.0.0.1:%d%s" % (self.coord(name)["http"], path)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.status, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")

    def agent_dir(self, name):
        return os.path.join(self.dir, "agents", name)

    def coord_names(self):
        return ["coord-%d" % i for i in range(1, self.coordinators + 1)]

    def agent_names(self):
        return ["agent-%d" % i for i in range(1, self.agents + 1)]


def raw_frame(msg_id, payload, epoch=0, request_id=1, sender="cp-test", version=1, flags=0,
              magic=MAGIC):
    """One wire frame built by hand (docs/protocol.md envelope), for messages the
    Python client does not know (agent messages) and for deliberately wrong ones."""
    import msgpack
    head = struct.pack(">BBIBBBHBHBQBQ", 0x98, 0xCE, magic, 0xCC, version, 0xCD, msg_id, 0xCD,
                       flags, 0xCF, request_id, 0xCF, epoch)
    return head + msgpack.packb(sender, use_bin_type=True) + \
        msgpack.packb(payload, use_bin_type=True)


def cluster_fixture(request, **kw):
    """A started Cluster that is always torn down (pytest finalizer), for fixtures."""
    cl = Cluster(**kw)
    request.addfinalizer(cl.down)
    try:
        cl.up()
    except BaseException:
        cl.dump_logs()
        raise
    return cl


def etcd_kvs(cl, prefix):
    """Every (key, raw value bytes) under prefix, in etcd's key order, straight from
    etcd's JSON gateway (POST /v3/kv/range on the cluster's etcd client port)."""
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    body = json.dumps({"key": base64.b64encode(prefix.encode()).decode(),
                       "range_end": base64.b64encode(end.encode()).decode()}).encode()
    url = "http://127.0.0.1:%d/v3/kv/range" % cl.state()["etcd"]["client"]
    with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=10) as r:
        doc = json.loads(r.read())
    return [(base64.b64decode(kv["key"]).decode(), base64.b64decode(kv["value"]))
            for kv in doc.get("kvs", [])]


def etcd_range(cl, prefix, raw_fallback=False):
    """Every key under prefix as {key: decoded JSON value}, straight from etcd. A value
    that is not JSON raises ValueError, or with raw_fallback stays as its raw bytes."""
    out = {}
    for key, raw in etcd_kvs(cl, prefix):
        try:
            out[key] = json.loads(raw)
        except ValueError:
            if not raw_fallback:
                raise
            out[key] = raw
    return out


def execute_notebook(cl, name, tmp_path, cell_timeout, timeout):
    """Run python/examples/<name>.ipynb top to bottom with `jupyter nbconvert --execute`
    against cl (its env, the checkout's python/ first on PYTHONPATH, cwd tmp_path); the
    executed notebook's JSON document."""
    nb = os.path.join(ROOT, "python", "examples", name + ".ipynb")
    out = tmp_path / (name + ".out.ipynb")
    env = dict(os.environ, **cl.env)
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(ROOT, "python"),
                                         env.get("PYTHONPATH", "")])
    p = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook",
                        "--execute", "--ExecutePreprocessor.timeout=%d" % cell_timeout,
                        "--output", str(out), nb], capture_output=True, text=True, env=env,
                       timeout=timeout, cwd=str(tmp_path))
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(out.read_text())


def shard_command(marker_dir, sleep=0.0):
    """A command job's argv that appends "<task> <attempt>" to marker_dir/<shard index>
    when it finishes, so a test can tell which attempts ran to the end."""
    body = ""
    if sleep:
        body += "sleep %s; " % sleep
    body += ('echo "$FLYWHEEL_TASK_ID $FLYWHEEL_ATTEMPT" >> %s/$FLYWHEEL_SHARD_INDEX; '
             'echo "shard $FLYWHEEL_SHARD_INDEX of $FLYWHEEL_SHARD_COUNT attempt $FLYWHEEL_ATTEMPT"'
             % marker_dir)
    return ["sh", "-c", body]


def check_exactly_one_accepted(tasks, marker_dir, nshards):
    """Every shard SUCCEEDED once, and the accepted attempt is one that ran to the
    end (its line is in the shard's marker file). Returns {attempt count: shards}."""
    assert len(tasks) == nshards, "%d tasks, want %d" % (len(tasks), nshards)
    seen = set()
    attempts = {}
    for t in tasks:
        idx = int(t["index"])
        assert idx not in seen, "task index %d listed twice" % idx
        seen.add(idx)
        assert t["state"] == "SUCCEEDED", t
        att = int(t["attempt"])
        assert att >= 1, t
        try:
            with open(os.path.join(marker_dir, str(idx))) as f:
                lines = [l.split() for l in f.read().splitlines() if l.strip()]
        except OSError:
            raise AssertionError("shard %d: no marker file, yet the task SUCCEEDED: %r"
                                 % (idx, t))
        tid = t.get("id") or "%s.%d" % (t["job"], idx)
        runs = [int(a) for (task, a) in lines if task == tid]
        assert att in runs, "shard %d: accepted attempt %d never finished (markers %r)" % (
            idx, att, lines)
        # A shard may have run more than once only through a retry: every extra
        # finished run has a lower attempt number than the accepted one.
        assert all(a <= att for a in runs), (idx, att, runs)
        # Nothing runs one attempt twice (a failover keeps running tasks, never reruns them).
        assert len(set(runs)) == len(runs), "shard %d: an attempt ran twice: %r" % (idx, runs)
        attempts[att] = attempts.get(att, 0) + 1
    assert seen == set(range(nshards))
    return attempts
