"""The notebook client: submit jobs to a Flywheel cluster and watch them.

    from flywheel import Client
    client = Client("tcp://127.0.0.1:7100", token="...")   # or Client() from the environment
    job = client.submit({"kind": "command", "shards": 4,
                         "command": ["sh", "-c", "echo shard $FLYWHEEL_SHARD_INDEX"]})
    for line in job.logs(follow=True):
        print(line)
    job.wait(timeout=60)        # the final job record; raises JobFailed / TimeoutError
    job.tasks()                 # one plain dict per task

The client talks to the coordinators' job submission socket (ZeroMQ DEALER to
their ROUTER) in the wire format of docs/protocol.md (see wire.py). It
behaves like flywheelctl: any listed coordinator will do, standbys answer
with REDIRECT to the leader, a coordinator that does not answer within the
timeout is skipped for the next one, and "no leader yet" answers
(retry_after_ms) are waited out. Submissions carry an idempotency key, so a
request resent after a timeout cannot create a second job.
"""

import json
import os
import random
import time
import uuid

import zmq

from . import wire

# common/fw_err.h, the codes a client may see. Never renumbered.
ERRORS = {
    -1: "FW_ENOMEM", -2: "FW_EINVAL", -3: "FW_EIO", -4: "FW_ETIMEDOUT", -5: "FW_ENOTFOUND",
    -6: "FW_EEXIST", -7: "FW_ECONFLICT", -8: "FW_EPROTO", -9: "FW_ETOOBIG", -10: "FW_EUNAVAIL",
    -11: "FW_EAUTH", -12: "FW_EPERM", -13: "FW_ECOMPACTED", -14: "FW_ELEASE",
    -15: "FW_ECORRUPT", -16: "FW_ENOTLEADER", -17: "FW_EFENCED", -18: "FW_EVERSION",
    -19: "FW_ECONFIG", -20: "FW_ECANCELED", -21: "FW_ECLOSED", -22: "FW_ERESOURCE",
    -23: "FW_ESTATE", -24: "FW_EUNSUPPORTED", -25: "FW_EDEVICE",
}

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
_STREAMS = {"stdout": 0, "stderr": 1, "agent": 2}
_MAX_HOPS = 4
_MAX_RETRY_WAIT = 2.0


class FlywheelError(Exception):
    """The coordinator refused a request (an ERROR reply), or none answered.

    code is the negative fw_err number, name its symbol ("FW_EAUTH")."""

    def __init__(self, code, message):
        self.code = code
        self.name = ERRORS.get(code, "FW_E%d" % -code if code < 0 else str(code))
        self.message = message
        super().__init__("%s (%s)" % (message, self.name))


class Unavailable(FlywheelError):
    """No coordinator answered (timeout), or none could name a leader."""


class JobFailed(FlywheelError):
    """job.wait() saw the job end FAILED or CANCELLED; .job holds its record."""

    def __init__(self, job_doc):
        self.job = job_doc
        state = job_doc.get("state", "?")
        super().__init__(-23, "job %s ended %s%s" % (
            job_doc.get("id", "?"), state,
            (": " + job_doc["error"]) if job_doc.get("error") else ""))


def _curve_key(value):
    """The Z85 public key (bytes) from a key or a zcert certificate file's path."""
    if isinstance(value, bytes):
        value = value.decode("ascii")
    if len(value) == 40 and not os.path.exists(value):
        return value.encode("ascii")
    try:
        with open(value) as f:
            text = f.read()
    except OSError as e:
        raise ValueError("curve_server_key %s: %s" % (value, e.strerror))
    for line in text.splitlines():
        k, sep, v = line.strip().partition("=")
        if sep and k.strip() == "public-key":
            key = v.strip().strip('"')
            if len(key) == 40:
                return key.encode("ascii")
    raise ValueError("curve_server_key %s: no public-key in this zcert file" % value)


def _read_token(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                return line.split()[0]
    raise ValueError("token file %r holds no token" % path)


class Client:
    """A connection to a Flywheel cluster's coordinators.

    endpoint: "tcp://host:port", a comma-separated list or a list of them
    (default: $FLYWHEEL_COORDINATOR). token: the bearer token (default: the
    first token of token_file or $FLYWHEEL_TOKEN_FILE, or $FLYWHEEL_TOKEN).
    timeout: seconds to wait for each coordinator to answer a request.
    curve_server_key: when the coordinators run with CURVE (curve.enabled), their
    public key: the path of their zcert public certificate (`flywheelctl cluster
    gen-cert`) or the 40-character Z85 key (default: $FLYWHEEL_CURVE_SERVER_KEY)."""

    def __init__(self, endpoint=None, token=None, *, token_file=None, timeout=5.0,
                 curve_server_key=None):
        endpoint = endpoint or os.environ.get("FLYWHEEL_COORDINATOR")
        if not endpoint:
            raise ValueError("no coordinator endpoint: pass one or set FLYWHEEL_COORDINATOR")
        if isinstance(endpoint, str):
            endpoint = [e.strip() for e in endpoint.split(",") if e.strip()]
        self.endpoints = list(endpoint)
        if not self.endpoints:
            raise ValueError("no coordinator endpoint")
        if token is None:
            token_file = token_file or os.environ.get("FLYWHEEL_TOKEN_FILE")
            if token_file:
                token = _read_token(token_file)
            else:
                token = os.environ.get("FLYWHEEL_TOKEN")
        if not token:
            raise ValueError("no token: pass token= or token_file=, or set FLYWHEEL_TOKEN_FILE")
        self.token = token
        self.timeout = float(timeout)
        if curve_server_key is None:
            curve_server_key = os.environ.get("FLYWHEEL_CURVE_SERVER_KEY") or None
        self._curve = _curve_key(curve_server_key) if curve_server_key else None
        self._ctx = zmq.Context.instance()
        self._sock = None
        self._connected = None
        self._current = 0
        self._next_id = random.getrandbits(40) << 20

    # ------------------------------------------------------------ transport

    def close(self):
        """Close the socket (the client reconnects if used again)."""
        if self._sock is not None:
            self._sock.close(linger=0)
        self._sock = None
        self._connected = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _connect(self, endpoint):
        if self._sock is not None and self._connected == endpoint:
            return
        self.close()
        s = self._ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.MAXMSGSIZE, wire.MAX_FRAME + 64)
        if self._curve:
            # A throwaway key pair of our own: the coordinators accept any client key
            # (the token is what authenticates), the server key is what must match.
            public, secret = zmq.curve_keypair()
            s.curve_serverkey = self._curve
            s.curve_publickey = public
            s.curve_secretkey = secret
        s.connect(endpoint)
        self._sock, self._connected = s, endpoint

    def _await(self, request_id, timeout):
        """The reply to request_id, or None after timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if not self._sock.poll(int(left * 1000) + 1, zmq.POLLIN):
                continue
            frame = self._sock.recv()
            msg = wire.decode(frame)
            if msg.request_id != request_id and not (msg.name == "ERROR" and
                                                     msg.request_id == 0):
                continue  # a late answer to a request that timed out
            # An ERROR with request id 0 answers a request whose payload the coordinator
            # could not decode far enough to read its id; one request is outstanding on
            # this socket at a time, so it is ours.
            return msg

    def call(self, name, **fields):
        """Send one request and return its reply Message (never an ERROR).

        Follows REDIRECT to the leader, tries every endpoint, waits out
        "no leader yet" answers. Raises FlywheelError / Unavailable."""
        fields.setdefault("token", self.token)
        order = [self.endpoints[self._current]] + \
            [e for i, e in enumerate(self.endpoints) if i != self._current]
        budget = time.monotonic() + self.timeout * (len(order) + _MAX_HOPS)
        queue = list(order)
        hops = 0
        timed_out = []
        last = None
        while queue:
            target = queue.pop(0)
            self._connect(target)
            rid = self._next_id
            self._next_id += 1
            msg = wire.Message(name, fields, request_id=rid, sender="flywheel-py")
            self._sock.send(wire.encode(msg))
            reply = self._await(rid, self.timeout)
            if reply is None:
                timed_out.append(target)
                self.close()
                if time.monotonic() > budget:
                    break
                continue
            if reply.name == "REDIRECT":
                leader = reply.get("leader_endpoint", "")
                if hops >= _MAX_HOPS or not leader or leader == target:
                    last = Unavailable(-10, "%s redirects to %r (%s), which does not answer "
                                       "as leader" % (target, leader, reply.get("leader_name")))
                    continue
                hops += 1
                queue.insert(0, leader)
                continue
            if reply.name == "ERROR":
                code = reply["code"]
                if code in (-10, -16) and "retry_after_ms" in reply.fields and \
                        time.monotonic() < budget:
                    time.sleep(min(max(reply["retry_after_ms"] / 1000.0, 0.05),
                                   _MAX_RETRY_WAIT))
                    queue.insert(0, target)
                    last = FlywheelError(code, reply["message"])
                    continue
                raise FlywheelError(code, reply["message"])
            if target in self.endpoints:
                self._current = self.endpoints.index(target)
            return reply
        if last is not None and not timed_out:
            raise last
        raise Unavailable(-4, "no coordinator answered at %s: timed out after %g s%s" % (
            ", ".join(timed_out), self.timeout, " each" if len(timed_out) > 1 else ""))

    def _doc(self, name, **fields):
        return json.loads(self.call(name, **fields)["doc"])

    def _pages(self, name, **fields):
        out, cursor = [], None
        for _ in range(10000):
            if cursor:
                fields["cursor"] = cursor
            reply = self.call(name, limit=1000, **fields)
            out.extend(json.loads(reply["doc"]))
            nxt = reply.get("next_cursor")
            if not nxt or nxt == cursor:
                return out
            cursor = nxt
        raise FlywheelError(-8, "%s: too many pages" % name)

    # ------------------------------------------------------------------ API

    def submit(self, spec, idempotency_key=None):
        """Submit a job. spec: a dict (or a JSON string) as flywheelctl takes
        it, e.g. {"kind": "command", "shards": 4, "command": [...]}. Returns a
        Job. Bad specs raise FlywheelError naming the field (FW_EINVAL)."""
        text = spec if isinstance(spec, str) else json.dumps(spec, separators=(",", ":"))
        key = idempotency_key or "py-" + uuid.uuid4().hex
        reply = self.call("JOB_SUBMIT", spec=text, idempotency_key=key)
        return Job(self, reply["job_id"])

    def job(self, job_id):
        """A handle on an existing job (not checked until used)."""
        return Job(self, job_id)

    def jobs(self, state=None):
        """Every job (newest first) as plain dicts; state filters."""
        return self._pages("JOB_LIST", **({"state": state} if state else {}))

    def cluster_status(self):
        """Leader, coordinators, agents, queue depth and task counts (a dict)."""
        return self._doc("CLUSTER_STATUS")

    def agents(self):
        """Every agent as a plain dict."""
        return self._pages("AGENT_LIST")

    def drain(self, agent_id, drain=True, reason=None):
        """Drain (or with drain=False, undrain) an agent; returns its record."""
        fields = {"agent_id": agent_id, "drain": bool(drain)}
        if reason:
            fields["reason"] = reason
        return self._doc("AGENT_DRAIN", **fields)


def _task_id(t):
    return t.get("id") or t.get("task_id") or "%s.%d" % (t.get("job") or t.get("job_id"),
                                                        int(t.get("index", 0)))


class Job:
    """A submitted job. Every method asks the leader; nothing is cached."""

    def __init__(self, client, job_id):
        self.client = client
        self.id = job_id

    def __repr__(self):
        return "Job(%r)" % self.id

    def status(self):
        """The job's record as a dict: id, kind, state, spec, times, counts."""
        return self.client._doc("JOB_GET", job_id=self.id)

    @property
    def state(self):
        """The job's state: QUEUED, RUNNING, SUCCEEDED, FAILED or CANCELLED."""
        return self.status().get("state")

    def tasks(self, state=None):
        """Every task of the job as a plain dict (state, agent, attempt, ...)."""
        fields = {"job_id": self.id}
        if state:
            fields["state"] = state
        return self.client._pages("TASK_LIST", **fields)

    def cancel(self, reason=None):
        """Cancel the job; returns its record."""
        fields = {"job_id": self.id}
        if reason:
            fields["reason"] = reason
        return self.client._doc("JOB_CANCEL", **fields)

    def wait(self, timeout=None, poll=0.25, raise_on_failure=True):
        """Wait until the job is terminal and return its record.

        timeout: seconds (None: forever); TimeoutError when it passes. A
        FAILED or CANCELLED job raises JobFailed unless raise_on_failure is
        False. Coordinator outages (a failover) are waited out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        state = "unknown"
        while True:
            try:
                doc = self.status()
                state = doc.get("state", state)
                if state in TERMINAL:
                    if state != "SUCCEEDED" and raise_on_failure:
                        raise JobFailed(doc)
                    return doc
            except Unavailable:
                pass
            except FlywheelError as e:
                if e.code not in (-10, -16):
                    raise
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("job %s still %s after %g s" % (self.id, state, timeout))
            pause = poll if deadline is None else min(poll, max(deadline - time.monotonic(), 0))
            time.sleep(pause)
            poll = min(poll * 1.5, 1.0)

    def logs(self, follow=False, stream="stdout", task=None, prefix=None):
        """Iterate over the job's log lines (str, without the newline).

        follow: keep going until every task has ended (across failovers).
        task: only this task (an id "j-000042.3" or an index). prefix: put
        "[task-id] " before each line; by default when the job has several
        tasks. A retried task's log restarts with its new attempt."""
        if isinstance(task, int):
            task = "%s.%d" % (self.id, task)
        state = {}  # task id -> [attempt, offset, done, partial bytes, errors]
        code = _STREAMS.get(stream, stream)
        while True:
            try:
                tasks = self.tasks()
            except (Unavailable, FlywheelError) as e:
                if follow and (isinstance(e, Unavailable) or e.code in (-10, -16)):
                    time.sleep(0.5)
                    continue
                raise
            use_prefix = prefix if prefix is not None else (task is None and len(tasks) > 1)
            open_tasks = 0
            for t in tasks:
                tid = _task_id(t)
                if task is not None and tid != task:
                    continue
                st = state.setdefault(tid, [0, 0, False, b"", 0])
                if st[2]:
                    continue
                attempt = int(t.get("attempt") or 0)
                terminal = t.get("state") in TERMINAL
                if attempt == 0:
                    if terminal:
                        st[2] = True
                    else:
                        open_tasks += 1
                    continue
                if attempt != st[0]:
                    if st[0] and st[3]:
                        yield self._line(tid, st[3], use_prefix)
                    st[0], st[1], st[3], st[4] = attempt, 0, b"", 0
                for line in self._read(tid, st, code, terminal, follow, use_prefix):
                    yield line
                if not st[2]:
                    open_tasks += 1
            if not follow or open_tasks == 0:
                for tid, st in state.items():
                    if st[3]:
                        yield self._line(tid, st[3], use_prefix)
                        st[3] = b""
                return
            time.sleep(0.5)

    @staticmethod
    def _line(tid, raw, use_prefix):
        text = raw.decode("utf-8", errors="replace")
        return "[%s] %s" % (tid, text) if use_prefix else text

    def _read(self, tid, st, code, terminal, follow, use_prefix):
        for _ in range(256):
            try:
                chunk = self.client.call("LOG_STREAM", task_id=tid, attempt=st[0], stream=code,
                                         offset=st[1])
            except FlywheelError:
                st[4] += 1
                if not follow or terminal or st[4] > 20:
                    st[2] = True
                return
            st[4] = 0
            data, off = bytes(chunk["data"]), chunk["offset"]
            if off <= st[1] < off + len(data):
                new = data[st[1] - off:]
                st[1] = off + len(data)
                buf = st[3] + new
                lines = buf.split(b"\n")
                st[3] = lines.pop()
                for raw in lines:
                    yield self._line(tid, raw, use_prefix)
            if chunk.get("eof") or not data:
                if terminal:
                    if st[3]:
                        yield self._line(tid, st[3], use_prefix)
                        st[3] = b""
                    st[2] = True
                return
