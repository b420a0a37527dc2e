"""A fake coordinator speaking the client protocol, for testing clients alone.

It binds a ZeroMQ ROUTER on a free loopback port and answers the
client <-> coordinator messages of docs/protocol.md from an in-memory model,
so the Python client and flywheelctl can be tested (redirects, dead
endpoints, paging, waits, log following, errors) without etcd or daemons.
The real coordinator is exercised by tests/integration/cp_*.py.

    fake = FakeCoordinator(tokens={"adm": "admin"})
    fake.start()                # thread; fake.endpoint is tcp://127.0.0.1:<port>
    ...
    fake.stop()

Behaviour switches: fake.redirect_to (answer everything with REDIRECT),
fake.silent (answer nothing, like a stopped process), fake.unavailable_for
(answer that many requests with ERROR FW_EUNAVAIL + retry_after_ms),
fake.undecodable_for (answer that many requests as the coordinator answers a frame whose
payload does not decode: ERROR FW_EPROTO with request_id 0, the id being unread)."""

import json
import threading

import zmq

from flywheel import wire


class FakeCoordinator(threading.Thread):
    def __init__(self, tokens=None, name="fake-1", page=2):
        super().__init__(daemon=True)
        self.tokens = tokens or {"admin-token": "admin", "user-token": "user"}
        self.name = name
        self.page = page  # small pages so clients must follow cursors
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = "tcp://127.0.0.1:%d" % port
        self.redirect_to = None
        self.silent = False
        self.unavailable_for = 0
        self.undecodable_for = 0
        self.jobs = {}    # id -> job doc
        self.tasks = {}   # job id -> [task doc]
        self.logs = {}    # task id -> {attempt: bytes}
        self.requests = []  # (name, fields) of every request seen
        self.bad_frames = 0
        self.lock = threading.Lock()
        self._halt = threading.Event()
        self.seq = 0

    # -------------------------------------------------------------- model

    def add_job(self, state="RUNNING", ntasks=1, logs=None, task_states=None):
        """A job with ntasks tasks; logs: {index: bytes}. Returns its id."""
        with self.lock:
            return self._add_job(state, ntasks, logs, task_states)

    def _add_job(self, state, ntasks, logs=None, task_states=None):
        self.seq += 1
        jid = "j-%06d" % self.seq
        self.jobs[jid] = {"schema": 1, "id": jid, "kind": "command", "state": state,
                          "shards": ntasks, "owner": "admin", "submitted_at": 1}
        self.tasks[jid] = []
        for i in range(ntasks):
            st = (task_states or {}).get(i, {"QUEUED": "PENDING"}.get(state, state))
            self.tasks[jid].append({"job": jid, "index": i, "state": st,
                                    "attempt": 0 if st == "PENDING" else 1,
                                    "agent": "agent-1"})
            self.logs["%s.%d" % (jid, i)] = {1: (logs or {}).get(i, b"")}
        return jid

    def set_state(self, jid, state, task_state=None):
        with self.lock:
            self.jobs[jid]["state"] = state
            for t in self.tasks[jid]:
                t["state"] = task_state or {"QUEUED": "PENDING"}.get(state, state)
                t["attempt"] = 0 if t["state"] == "PENDING" else max(t["attempt"], 1)

    def append_log(self, task_id, data, attempt=1):
        with self.lock:
            logs = self.logs.setdefault(task_id, {})
            logs[attempt] = logs.get(attempt, b"") + data

    # ------------------------------------------------------------ serving

    def stop(self):
        self._halt.set()
        self.join(timeout=5)
        self.sock.close(linger=0)

    def run(self):
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while not self._halt.is_set():
            if not poller.poll(50):
                continue
            parts = self.sock.recv_multipart()
            if len(parts) != 2:
                self.bad_frames += 1
                continue
            ident, frame = parts
            try:
                msg = wire.decode(frame)
            except wire.WireError as e:
                self.bad_frames += 1
                self._send(ident, wire.Message("ERROR", {"code": -8, "message": str(e)}))
                continue
            with self.lock:
                self.requests.append((msg.name, dict(msg.fields)))
                if self.silent:
                    continue
                if self.undecodable_for > 0:
                    self.undecodable_for -= 1
                    self._send(ident, wire.Message("ERROR", {
                        "code": -8, "message": "bad frame: %s: missing required field 'x'"
                        % msg.name}, request_id=0))
                    continue
                replies = self._handle(msg)
            for r in replies:
                r.request_id = msg.request_id
                r.sender = self.name
                self._send(ident, r)

    def _send(self, ident, msg):
        self.sock.send_multipart([ident, wire.encode(msg)])

    @staticmethod
    def _error(code, text, **extra):
        return [wire.Message("ERROR", dict({"code": code, "message": text}, **extra))]

    def _page(self, name, rows, fields):
        limit = min(fields.get("limit") or self.page, self.page)
        start = int(fields.get("cursor") or 0)
        out = {"doc": json.dumps(rows[start:start + limit])}
        if start + limit < len(rows):
            out["next_cursor"] = str(start + limit)
        return [wire.Message(name, out)]

    def _handle(self, msg):
        if self.redirect_to:
            return [wire.Message("REDIRECT", {"leader_endpoint": self.redirect_to,
                                              "leader_name": "leader", "epoch": 9})]
        if self.unavailable_for > 0:
            self.unavailable_for -= 1
            return self._error(-10, "no leader yet", retry_after_ms=100)
        role = self.tokens.get(msg.get("token"))
        if role is None:
            return self._error(-11, "unknown token")
        f = msg.fields
        if msg.name == "CLUSTER_STATUS":
            doc = {"schema": 1, "leader": {"name": self.name, "epoch": 9,
                                           "client": self.endpoint},
                   "coordinators": [{"name": self.name}], "agents": {"total": 1, "ready": 1},
                   "queue_depth": 0, "tasks": {"RUNNING": 1}}
            return [wire.Message("CLUSTER_STATUS_REPLY", {"doc": json.dumps(doc)})]
        if msg.name == "JOB_SUBMIT":
            try:
                spec = json.loads(f["spec"])
            except ValueError:
                return self._error(-2, "spec: not JSON")
            if not isinstance(spec.get("shards", 1), int) or isinstance(spec.get("shards"), bool):
                return self._error(-2, "spec.shards: expected an integer 1..1000000")
            if spec.get("kind") == "command" and role != "admin":
                return self._error(-12, "kind command needs an admin token")
            for jid, job in self.jobs.items():
                if f.get("idempotency_key") and job.get("key") == f["idempotency_key"]:
                    return [wire.Message("JOB_SUBMITTED", {"job_id": jid, "existing": True})]
            jid = self._add_job("QUEUED", spec.get("shards", 1))
            self.jobs[jid]["key"] = f.get("idempotency_key")
            self.jobs[jid]["spec"] = spec
            return [wire.Message("JOB_SUBMITTED", {"job_id": jid})]
        if msg.name in ("JOB_GET", "JOB_CANCEL"):
            job = self.jobs.get(f["job_id"])
            if job is None:
                return self._error(-5, "job %s not found" % f["job_id"])
            if msg.name == "JOB_CANCEL":
                job["state"] = "CANCELLED"
                for t in self.tasks[f["job_id"]]:
                    t["state"] = "CANCELLED"
            return [wire.Message(msg.name + "_REPLY", {"doc": json.dumps(job)})]
        if msg.name == "JOB_LIST":
            rows = [j for j in reversed(list(self.jobs.values()))
                    if not f.get("state") or j["state"] == f["state"]]
            return self._page("JOB_LIST_REPLY", rows, f)
        if msg.name == "TASK_LIST":
            rows = [t for t in self.tasks.get(f.get("job_id"), [])
                    if not f.get("state") or t["state"] == f["state"]]
            return self._page("TASK_LIST_REPLY", rows, f)
        if msg.name == "AGENT_LIST":
            rows = [{"id": "agent-%d" % i, "host": "h%d" % i, "cpus": 2, "used_cpus": 1,
                     "memory_mb": 1024, "labels": {"zone": "a"}} for i in range(1, 4)]
            return self._page("AGENT_LIST_REPLY", rows, f)
        if msg.name == "AGENT_DRAIN":
            return [wire.Message("AGENT_DRAIN_REPLY", {"doc": json.dumps(
                {"id": f["agent_id"], "drain": f.get("drain", True)})})]
        if msg.name == "LOG_STREAM":
            logs = self.logs.get(f["task_id"])
            if logs is None:
                return self._error(-5, "task %s not found" % f["task_id"])
            attempt = f.get("attempt") or max(logs)
            data = logs.get(attempt, b"")
            off = f.get("offset", 0)
            jid, idx = f["task_id"].rsplit(".", 1)
            state = self.tasks[jid][int(idx)]["state"]
            piece = data[off:off + 7]  # small pieces: clients must loop
            eof = state in ("SUCCEEDED", "FAILED", "CANCELLED") and off + len(piece) >= len(data)
            return [wire.Message("LOG_CHUNK", {"task_id": f["task_id"], "attempt": attempt,
                                               "stream": f.get("stream", 0), "offset": off,
                                               "data": piece, "eof": eof})]
        return self._error(-8, "unknown request %s" % msg.name)
