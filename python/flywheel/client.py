"""The notebook client: submit jobs to a Flywheel cluster and watch them.

    from flywheel import Client
    client = Client("tcp://127.0.0.1:7100", token="...")   # or Client() from the environment
    job = client.submit({"kind": "command", "shards": 4,
                         "command": ["sh", "-c", "echo shard $FLYWHEEL_SHARD_INDEX"]})
    for line in job.logs(follow=True):
        print(line)
    job.wait(timeout=60)        # the final job record; raises JobFailed / TimeoutError
    job.tasks()                 # one plain dict per task

    # The LLMOps loop (issue 6): data in, fine-tune, evaluate, promote, embed.
    ds = client.datasets.add("sotu.jsonl", name="sotu")      # ingested by the leader
    rec = client.finetune(base="demo@champion", dataset="sotu", hparams={"steps": 20})
    rows = client.eval(["demo@champion", rec["result"]["model"]], dataset="sotu")
    client.models.promote("demo", challenger=rec["result"]["model"], metric="loss")
    ids, matrix = client.embed(model="demo@champion", dataset="sotu", shards=2)

The client talks to the coordinators' job submission socket (ZeroMQ DEALER to
their ROUTER) in the wire format of docs/protocol.md (see wire.py). It
behaves like flywheelctl: any listed coordinator will do, standbys answer
with REDIRECT to the leader, a coordinator that does not answer within the
timeout is skipped for the next one, and "no leader yet" answers
(retry_after_ms) are waited out. Submissions carry an idempotency key, so a
request resent after a timeout cannot create a second job.
"""

import hashlib
import json
import os
import random
import struct
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
_CHUNK = 1 << 20  # blob transfer chunk, as flywheelctl (the wire lz4-compresses it)


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
        self.last_job = None  # the record of the last embed / eval job read

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

    def call(self, name, /, **fields):
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

    def _doc(self, name, /, **fields):
        return json.loads(self.call(name, **fields)["doc"])

    def _pages(self, name, /, **fields):
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

    # ------------------------------------------------------------ artifacts

    @property
    def datasets(self):
        """Datasets: add (ingested by the leader), list, get (see Datasets)."""
        return Datasets(self)

    @property
    def models(self):
        """The model registry: list, get, versions, alias_set, alias_rm, promote."""
        return Models(self)

    def upload(self, data):
        """Put bytes into the leader's artifact store; returns "sha256:<hex>".

        Sent in 1 MiB chunks (BLOB_UPLOAD_*); bytes the store already holds are
        not sent again. The leader checks the digest before storing."""
        data = bytes(data)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        reply = self.call("BLOB_UPLOAD_BEGIN", size=len(data), digest=digest)
        if reply.get("complete"):
            return digest
        uid = reply["upload_id"]
        off = 0
        while off < len(data):
            chunk = data[off:off + _CHUNK]
            r = self.call("BLOB_UPLOAD_CHUNK", upload_id=uid, offset=off, data=chunk)
            off += len(chunk)
            if r["received"] != off:
                raise FlywheelError(-8, "upload %s: the coordinator has %d bytes, we sent %d"
                                    % (uid, r["received"], off))
        self.call("BLOB_UPLOAD_COMMIT", upload_id=uid, digest=digest)
        return digest

    def artifact(self, digest, path=None):
        """The bytes of blob `digest` from the leader's store, verified.

        path: also write them there (atomically: path.part, then rename).
        A copy whose bytes do not hash to the digest raises FlywheelError
        FW_ECORRUPT and writes nothing."""
        parts, off, size = [], 0, None
        h = hashlib.sha256()
        while size is None or off < size:
            r = self.call("BLOB_READ", digest=digest, offset=off, max_bytes=_CHUNK)
            data = bytes(r["data"])
            size = r["size"]
            if r["offset"] != off or (not data and off < size):
                raise FlywheelError(-8, "blob %s: the coordinator answered offset %d with %d "
                                    "bytes (asked %d)" % (digest, r["offset"], len(data), off))
            parts.append(data)
            h.update(data)
            off += len(data)
        got = "sha256:" + h.hexdigest()
        if got != digest:
            raise FlywheelError(-15, "blob %s: the %d bytes received hash to %s: the store's "
                                "copy is corrupt" % (digest, off, got))
        blob = b"".join(parts)
        if path is not None:
            tmp = str(path) + ".part"
            with open(tmp, "wb") as f:
                f.write(blob)
            os.replace(tmp, str(path))
        return blob

    # ------------------------------------------------------------- ML jobs

    def _run(self, spec, wait, timeout):
        job = self.submit(spec)
        return job.wait(timeout=timeout) if wait else job

    def finetune(self, base, dataset, world_size=1, hparams=None, output=None,
                 eval_dataset=None, wait=True, timeout=None, **spec):
        """Fine-tune `base` (a model ref) on `dataset` with `world_size`
        data-parallel ranks. hparams: {"steps": N (required), "batch", "seq",
        "lr", ...} (docs/cli.md#job-specs). output: the model name the result is
        registered under (default: the base's name). Other keyword arguments go
        into the spec as they are (checkpoint_every, threads, resources, ...).

        wait=True: the final job record, whose "result" names the new version
        ({"model": "demo:2", "digest", "steps", "final_loss", ...}) and "curve"
        holds [step, loss] pairs; JobFailed if it failed. wait=False: the Job."""
        spec.update({"kind": "finetune", "base": base, "dataset": dataset,
                     "world_size": int(world_size), "hparams": dict(hparams or {})})
        if output:
            spec["output"] = output
        if eval_dataset:
            spec["eval_dataset"] = eval_dataset
        return self._run(spec, wait, timeout)

    def embed(self, model, dataset, shards=1, wait=True, timeout=None, **spec):
        """Embed every record of `dataset` with `model` in `shards` tasks.

        Returns (ids, matrix): ids a numpy uint64 array of each row's record
        (its 1-based line number in the dataset's JSONL, global across shards,
        in dataset order), matrix a float32 array [rows, dim] (unit rows). The
        job record is in self.last_job. wait=False: the Job; read its result
        later with client.embedding(job)."""
        spec.update({"kind": "embed", "model": model, "dataset": dataset,
                     "shards": int(shards)})
        job = self._run(spec, wait, timeout)
        return self.embedding(job) if wait else job

    def embedding(self, job):
        """(ids, matrix) of a finished embed job (a Job, its id or its record)."""
        doc = _job_doc(self, job)
        self.last_job = doc
        result = doc.get("result") or {}
        if "matrix" not in result:
            raise FlywheelError(-23, "job %s has no embedding matrix (state %s)"
                                % (doc.get("id"), doc.get("state")))
        return parse_fwembed(self.artifact(result["matrix"]))

    def eval(self, models, dataset, shards=1, wait=True, timeout=None, **spec):
        """Score each of `models` (refs, 1 to 16) on `dataset` in `shards` tasks
        per model. Returns one flat dict per model, pandas-friendly
        (pandas.DataFrame(rows)): {"model": "demo:1", "dataset": "holdout@1",
        "records", "loss", "perplexity", ... every metric, "scores": digest of
        the per-example JSONL}. The job record is in self.last_job.
        wait=False: the Job; client.eval_results(job) reads it later."""
        if isinstance(models, str):
            models = [models]
        spec.update({"kind": "eval", "models": list(models), "dataset": dataset,
                     "shards": int(shards)})
        job = self._run(spec, wait, timeout)
        return self.eval_results(job) if wait else job

    def eval_results(self, job):
        """The rows client.eval() returns, from a finished eval job."""
        doc = _job_doc(self, job)
        self.last_job = doc
        result = doc.get("result") or {}
        rows = []
        for r in result.get("results", []):
            row = {"model": r.get("model"), "dataset": result.get("dataset")}
            row.update(r.get("metrics") or {})
            row["records"] = r.get("records")
            row["scores"] = r.get("scores")
            rows.append(row)
        return rows

    def eval_scores(self, digest):
        """A per-example scores blob as a list of dicts (one per record, index order)."""
        text = self.artifact(digest).decode("utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def eval_compare(self, a, b, dataset=None, metric=None, resamples=2000, seed=0,
                     confidence=0.95):
        """Paired-bootstrap comparison of two model versions' eval scores on the
        same dataset (refs; each must have an eval record on it: run client.eval
        first). The method is docs/eval.md's (same examples resampled for both,
        loss as a ratio of resampled sums, type-7 percentile interval), with
        numpy's PRNG: point values equal flywheelctl's, intervals agree to
        Monte-Carlo error. Returns {"a", "b", "dataset", "examples", "metrics":
        [{"metric", "a", "b", "diff", "ci_lo", "ci_hi", "significant", "better"}]}."""
        import numpy as np
        ea, eb = self.models.get(a).get("evals") or [], self.models.get(b).get("evals") or []
        common = _common_eval(ea, eb, dataset, a, b)
        ra = next(e for e in ea if e.get("dataset") == common)
        rb = next(e for e in eb if e.get("dataset") == common)
        sa, sb = self.eval_scores(ra["scores"]), self.eval_scores(rb["scores"])
        if len(sa) != len(sb):
            raise FlywheelError(-2, "%s has %d examples, %s %d: not the same examples"
                                % (a, len(sa), b, len(sb)))
        rng = np.random.default_rng(seed)
        n = len(sa)
        idx = rng.integers(0, n, size=(int(resamples), n))
        out = []
        for name, hib, fa, fb in _compare_metrics(np, sa, sb):
            va, vb = fa(np.arange(n)[None, :])[0], fb(np.arange(n)[None, :])[0]
            if metric and name != metric:
                continue
            d = fb(idx) - fa(idx)
            d = d[np.isfinite(d)]
            lo, hi = (np.quantile(d, [(1 - confidence) / 2, (1 + confidence) / 2])
                      if len(d) else (float("nan"), float("nan")))
            sig = bool(lo > 0 or hi < 0)
            better = "none"
            if sig:
                better = "B" if (vb - va > 0) == hib else "A"
            out.append({"metric": name, "higher_is_better": hib, "a": float(va),
                        "b": float(vb), "diff": float(vb - va), "ci_lo": float(lo),
                        "ci_hi": float(hi), "significant": sig, "better": better})
        return {"a": a, "b": b, "dataset": common, "examples": n,
                "method": "paired-bootstrap", "resamples": int(resamples), "seed": seed,
                "confidence": confidence, "metrics": out}

    def lineage(self, ref, depth=None):
        """Ancestors and descendants of a model version, dataset version, job or
        artifact: {"root": id, "nodes": [{"id", "type", "label", "attrs"}],
        "edges": [{"from", "to", "rel"}]} (docs/lineage.md)."""
        fields = {"ref": ref}
        if depth is not None:
            fields["depth"] = int(depth)
        return self._doc("LINEAGE_GET", **fields)


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


# ---------------------------------------------------------------- helpers


def _job_doc(client, job):
    if isinstance(job, dict):
        return job
    if isinstance(job, Job):
        return job.status()
    return client.job(job).status()


def parse_fwembed(buf):
    """(ids, matrix) from an FWEMBED file's bytes (docs/file-formats.md):
    ids numpy uint64 [rows], matrix float32 [rows, dim]. ValueError if malformed."""
    import numpy as np
    buf = bytes(buf)
    if len(buf) < 32 or buf[:8] != b"FWEMBED\0":
        raise ValueError("not an FWEMBED matrix (bad magic)")
    version, dim, rows, data_off = struct.unpack_from("<IIQQ", buf, 8)
    if version != 1:
        raise ValueError("FWEMBED version %d, this client reads 1" % version)
    if data_off != 32 + 8 * rows or len(buf) != data_off + 4 * rows * dim:
        raise ValueError("FWEMBED: %d bytes do not hold %d rows of %d floats (data_off %d)"
                         % (len(buf), rows, dim, data_off))
    ids = np.frombuffer(buf, "<u8", count=rows, offset=32).copy()
    matrix = np.frombuffer(buf, "<f4", count=rows * dim, offset=data_off).reshape(rows, dim)
    return ids, matrix.copy()


def _model_fields(ref):
    """MODEL_GET fields of a ref: NAME, NAME:VERSION or NAME@ALIAS."""
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return {"name": name, "alias": alias}
    if ":" in ref:
        name, ver = ref.split(":", 1)
        if not ver.isdigit() or int(ver) < 1:
            raise ValueError("model %r: the version after ':' must be a number >= 1" % ref)
        return {"name": name, "version": int(ver)}
    return {"name": ref}


def _common_eval(ea, eb, dataset, a, b):
    """The dataset ("NAME@V") both eval lists have; dataset picks by NAME or NAME@V."""
    da = [e.get("dataset") for e in ea]
    db = {e.get("dataset") for e in eb}
    both = [d for d in da if d in db]
    if dataset:
        both = [d for d in both if d == dataset or d.split("@")[0] == dataset]
    if not both:
        raise FlywheelError(-5, "%s and %s have no eval on %s in common: run "
                            "client.eval([%r, %r], dataset=...) first"
                            % (a, b, dataset or "any dataset", a, b))
    return both[-1]


def _compare_metrics(np, sa, sb):
    """(name, higher_is_better, f_a, f_b): f maps an index matrix [k, n] to k values."""
    def col(rows, key):
        return np.array([float(r.get(key, 0) or 0) for r in rows])
    out = []
    if "logprob" in sa[0]:
        la, ta = -col(sa, "logprob"), col(sa, "tokens")
        lb, tb = -col(sb, "logprob"), col(sb, "tokens")

        def loss(l, t):
            def f(i):
                with np.errstate(invalid="ignore", divide="ignore"):
                    return l[i].sum(axis=1) / t[i].sum(axis=1)
            return f
        out.append(("loss", False, loss(la, ta), loss(lb, tb)))

        def ppl(l, t):
            def f(i):
                with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                    return np.exp(l[i].sum(axis=1) / t[i].sum(axis=1))
            return f
        out.append(("perplexity", False, ppl(la, ta), ppl(lb, tb)))
    for key, name in (("exact_match", "exact_match"), ("correct", "accuracy"),
                      ("correct_norm", "accuracy_norm")):
        if key in sa[0]:
            va, vb = col(sa, key), col(sb, key)
            out.append((name, True, (lambda v: lambda i: v[i].mean(axis=1))(va),
                        (lambda v: lambda i: v[i].mean(axis=1))(vb)))
    return out


class Datasets:
    """client.datasets: versioned datasets in the cluster (docs/datasets.md)."""

    def __init__(self, client):
        self.client = client

    def add(self, path_or_records, name):
        """Ingest a dataset and register it as name@<next version>.

        path_or_records: a file path (JSONL or plain text, as `flywheelctl
        dataset add`), bytes, or an iterable of records (dicts, serialised as
        JSONL; strings become {"text": s}). The RAW bytes are uploaded and the
        leader ingests them (validate, clean, dedupe: the same rules and
        report as flywheelctl). Returns the version record; its "report" holds
        accepted / rejected counts and "rejects": [{"line", "reason"}], and
        "existing" is True when identical content was already registered.
        Too many bad lines (> 1%) or nothing left: FlywheelError FW_EINVAL
        naming the first bad lines, nothing registered."""
        if isinstance(path_or_records, (bytes, bytearray, memoryview)):
            raw = bytes(path_or_records)
        elif isinstance(path_or_records, (str, os.PathLike)):
            with open(path_or_records, "rb") as f:
                raw = f.read()
        else:
            lines = []
            for r in path_or_records:
                if isinstance(r, str):
                    r = {"text": r}
                lines.append(json.dumps(r, ensure_ascii=False, separators=(",", ":")))
            raw = ("\n".join(lines) + "\n").encode("utf-8")
        digest = self.client.upload(raw)
        reply = self.client.call("DATASET_REGISTER", name=name, digest=digest, report="{}",
                                 ingest=True)
        doc = json.loads(reply["doc"])
        doc["existing"] = bool(reply.get("existing"))
        return doc

    def list(self, name=None):
        """The latest version of every dataset, or every version of `name`."""
        return self.client._doc("DATASET_LIST", **({"name": name} if name else {}))

    def get(self, ref):
        """One version: "NAME" (the latest) or "NAME@VERSION"."""
        name, _, ver = ref.partition("@")
        fields = {"name": name}
        if ver:
            fields["version"] = int(ver)
        return self.client._doc("DATASET_GET", **fields)

    def download(self, ref, path=None):
        """The canonical JSONL of a version (bytes, verified); also written to path."""
        return self.client.artifact(self.get(ref)["digest"], path)


class Models:
    """client.models: the model registry (docs/cli.md, model ...)."""

    def __init__(self, client):
        self.client = client

    def list(self):
        """The latest version of every model, each with its "aliases"."""
        return self.client._doc("MODEL_LIST")

    def versions(self, name):
        """Every version of model `name`."""
        return self.client._doc("MODEL_LIST", name=name)

    def get(self, ref):
        """One version: NAME (latest), NAME:VERSION or NAME@ALIAS, with its "evals"."""
        return self.client._doc("MODEL_GET", **_model_fields(ref))

    def alias_set(self, ref, version, protect=False):
        """Point NAME@ALIAS at `version` (atomic, audited); the alias record."""
        f = _model_fields(ref)
        if "alias" not in f:
            raise ValueError("alias_set: %r: expected NAME@ALIAS" % ref)
        fields = dict(f, version=int(version))
        if protect:
            fields["protect"] = True
        return self.client._doc("MODEL_ALIAS_SET", **fields)

    def alias_rm(self, ref):
        """Remove NAME@ALIAS; returns {name, alias, previous, removed}."""
        f = _model_fields(ref)
        if "alias" not in f:
            raise ValueError("alias_rm: %r: expected NAME@ALIAS" % ref)
        return self.client._doc("MODEL_ALIAS_RM", **f)

    def promote(self, name, challenger, metric="loss", min_delta=0.0, dataset=None,
                shards=1, timeout=None, seed=None):
        """Move name@champion to `challenger` when it is significantly better
        on `metric` by at least min_delta (docs/eval.md#promotion). When the
        leader lacks an eval of champion or challenger on the dataset, an eval
        job of both is run first (dataset is required then) and the question
        asked again. Returns the promotion record: champion, challenger,
        champion_value, challenger_value, delta, ci, significant, promoted,
        reason (also recorded in the registry)."""
        fields = {"name": name, "challenger": challenger, "metric": metric,
                  "min_delta": float(min_delta)}
        if dataset:
            fields["dataset"] = dataset
        if seed is not None:
            fields["seed"] = int(seed)
        try:
            return self.client._doc("MODEL_PROMOTE", **fields)
        except FlywheelError as e:
            if e.code != -5 or "no eval" not in e.message:
                raise
            if not dataset:
                raise FlywheelError(e.code, "%s: pass dataset= to run the eval job first"
                                    % e.message)
        self.client.eval(["%s@champion" % name, challenger], dataset, shards=shards,
                         timeout=timeout)
        return self.client._doc("MODEL_PROMOTE", **fields)
