#!/usr/bin/env python3
"""glint's catalogue database failing under load, on a real PostgreSQL and a real MariaDB
(tests/db/servers.py), against the real binary under the socket-activation harness.

For each engine (postgres, then mariadb; `--engine` picks one) glint runs on a fresh database
with database.connect_timeout = 1s and statement_timeout = 2s while six threads load it: four
take images through create (with a client-chosen id), show, patch, upload (paced, so that some
uploads straddle the outage), patch and list; two only create and list. Meanwhile the database server is restarted, and later stopped for ~3 s and
started again. It checks that:

- every answer is the expected 2xx or a 503, never a 500 or anything else; every 503 has
  Glance's JSON error body ({"message", "code": "503 Service Unavailable", "title"}) and a
  Retry-After; no connection is refused, reset or left unanswered (glint itself stays up);
  no request takes longer than connect_timeout + statement_timeout + 2 s (5 s);
- while the database is down, /healthcheck answers 503 "database unavailable"; a reload
  (SIGHUP) is refused, READY=1 carrying `STATUS=reload failed: ...` naming the database, and
  the running generation keeps serving (GET /versions is 200);
- once the database is back, glint recovers by itself within a bound: /healthcheck is 200,
  every kind of request succeeds again, and none fails after that; a reload then succeeds;
- nothing is half-written: every create answered 201 exists and every create answered 503
  does not (404); an image whose upload was answered 204 is active with the size, md5 and
  sha512 of what was sent; one whose upload was answered 503 is back in `queued` (bounded by
  database.lease_time) with no data file; a property holds the value of the last PATCH
  answered 200 (a PATCH answered 503 changed nothing); the data directory holds exactly the
  active images' files and no temporary file.

It prints a summary per engine (answers per request and status, latencies, recovery times)
and exits non-zero naming every failed check; on failure glint's work directory (glint.toml,
glint.log) is kept and named.

Usage: tests/db/test_outage.py GLINT_BINARY [--engine postgres|mariadb|all]
Python 3 standard library only; needs the Debian packages tests/db/servers.py needs.
"""

import argparse
import collections
import hashlib
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
SERVERS = os.path.join(HERE, "servers.py")
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
from activated import ActivatedGlint, listening_socket  # noqa: E402

CONNECT_TIMEOUT = 1.0
STATEMENT_TIMEOUT = 2.0
LEASE_TIME = 3.0
# The longest any request may take: connect_timeout + statement_timeout and a margin.
LATENCY_LIMIT = CONNECT_TIMEOUT + STATEMENT_TIMEOUT + 2.0
CLIENT_TIMEOUT = 20.0  # socket timeout: a hang shows as a latency over the limit, then as this
THREADS = 6
LIFECYCLES = 4  # threads that create, show, patch, upload, patch and list; the rest create, list
STOPPED_FOR = 3.0  # seconds the database stays stopped (at least)
RECOVERY_LIMIT = 10.0  # after the database is back: healthcheck 200 and every request kind OK
STEADY = 2.0  # after recovery: this long of load in which nothing may fail
UPLOAD_CHUNKS, UPLOAD_CHUNK, UPLOAD_PAUSE = 6, 32 * 1024, 0.04
REQUEUE_LIMIT = LEASE_TIME * 2 + 4.0  # a 503 upload's image is `queued` again within this

OPS = ("create", "show", "patch1", "upload", "patch2", "list")
EXPECTED = {"create": 201, "show": 200, "patch1": 200, "upload": 204, "patch2": 200, "list": 200}
# 4xx the load may get on its own (none: each thread works on its own images in order).
EXPECTED_4XX = {op: set() for op in OPS}
PATCH_TYPE = "application/openstack-images-v2.1-json-patch"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def servers(command, engine):
    """tests/db/servers.py COMMAND --engine ENGINE; returns its stdout; raises on failure."""
    cp = subprocess.run([sys.executable, SERVERS, command, "--engine", engine],
                        capture_output=True, text=True, timeout=300)
    if cp.returncode != 0:
        raise RuntimeError(f"servers.py {command} --engine {engine} failed "
                           f"(exit {cp.returncode}):\n{cp.stdout}{cp.stderr}")
    return cp.stdout


ENGINES = ("postgres", "mariadb")




class Glint(ActivatedGlint):
    """glint in noauth mode (the default, loopback only) on `db_url`, with short database
    timeouts and lease."""

    def __init__(self, binary, workdir, sock, db_url):
        self.db_url = db_url
        self.state_dir = os.path.join(workdir, "state")
        super().__init__(binary, workdir, sock)

    def write_config(self):
        with open(self.config, "w") as f:
            f.write(f'state_dir = "{self.state_dir}"\n'
                    '[server]\nlisten = ["127.0.0.1:1"]\n'
                    '[log]\nlevel = "info"\n'
                    '[auth]\nmode = "noauth"\n'
                    '[database]\n'
                    f'url = "{self.db_url}"\n'
                    f'connect_timeout = "{CONNECT_TIMEOUT:g}s"\n'
                    f'statement_timeout = "{STATEMENT_TIMEOUT:g}s"\n'
                    f'lease_time = "{LEASE_TIME:g}s"\n')


def notify_fields(message):
    return dict(line.split("=", 1) for line in message.splitlines() if "=" in line)


# --- HTTP --------------------------------------------------------------------------------------


class Answer:
    __slots__ = ("op", "image", "start", "end", "status", "headers", "body", "error")

    def __init__(self, op, image, start):
        self.op, self.image, self.start = op, image, start
        self.end = self.status = self.error = None
        self.headers, self.body = {}, b""

    @property
    def latency(self):
        return self.end - self.start


class Client:
    """One keep-alive connection; a new one after any error."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def call(self, op, method, path, image=None, body=None, content_type=None, chunks=None):
        """Sends one request; with `chunks`, the body goes in those pieces with a pause
        between them. Returns an Answer (status, or error)."""
        answer = Answer(op, image, time.monotonic())
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                                       timeout=CLIENT_TIMEOUT)
            headers = {"Accept": "application/json"}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = content_type or "application/json"
            if chunks is not None:
                self.conn.putrequest(method, path)
                for k, v in dict(headers, **{"Content-Type": "application/octet-stream",
                                              "Content-Length": str(sum(map(len, chunks)))}).items():
                    self.conn.putheader(k, v)
                self.conn.endheaders()
                for i, chunk in enumerate(chunks):
                    if i:
                        time.sleep(UPLOAD_PAUSE)
                    self.conn.send(chunk)
            else:
                self.conn.request(method, path, body=data, headers=headers)
            response = self.conn.getresponse()
            answer.body = response.read()
            answer.status = response.status
            answer.headers = {k.lower(): v for k, v in response.getheaders()}
            if response.will_close:
                self.close()
        except (OSError, http.client.HTTPException) as e:
            answer.error = f"{type(e).__name__}: {e}"
            self.close()
        answer.end = time.monotonic()
        return answer


def one_call(port, path, method="GET"):
    client = Client(port)
    try:
        return client.call(path, method, path)
    finally:
        client.close()


# --- the load ----------------------------------------------------------------------------------


class Image:
    """What the load did to one image of its own."""

    def __init__(self, image_id):
        self.id = image_id
        self.create = None  # the status of its create
        self.mark = "0"  # the value of the last PATCH answered 200
        self.upload = None  # the status of its upload
        self.data = None
        self.requests = {}  # op -> glint's request id of its answer, to find it in the log


class Load:
    def __init__(self, port, engine):
        self.port, self.engine = port, engine
        self.answers = []
        self.images = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.worker, args=(n,), daemon=True)
                        for n in range(THREADS)]

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=CLIENT_TIMEOUT * 3)
            if t.is_alive():
                raise RuntimeError(f"load thread {t.name} did not end: a request hangs")

    def record(self, answer):
        with self.lock:
            self.answers.append(answer)
        return answer

    def succeeded_since(self, op, since):
        with self.lock:
            return any(a.op == op and a.start >= since and a.status == EXPECTED[op]
                       for a in self.answers)

    def worker(self, n):
        client = Client(self.port)
        cycle = 0
        time.sleep(n * 0.05)
        while not self.stopping.is_set():
            cycle += 1
            image = Image(str(uuid.uuid4()))
            with self.lock:
                self.images.append(image)
            path = f"/v2/images/{image.id}"
            a = self.record(client.call("create", "POST", "/v2/images", image.id, body={
                "id": image.id, "name": f"outage-{self.engine}-{n}-{cycle}",
                "disk_format": "raw", "container_format": "bare", "outage_mark": "0"}))
            image.create = a.status
            image.requests["create"] = a.headers.get("x-openstack-request-id")
            if a.status != 201 or n >= LIFECYCLES:
                # A create answered 503 ends the cycle. The creator threads only create and
                # list, so that creates and lists meet the outage too, not only the uploads
                # and patches the lifecycle threads are then waiting in.
                self.record(client.call("list", "GET", "/v2/images?limit=25"))
                continue
            self.record(client.call("show", "GET", path, image.id))
            self.patch(client, image, "patch1", "1")
            data = os.urandom(UPLOAD_CHUNKS * UPLOAD_CHUNK)
            image.data = data
            a = self.record(client.call(
                "upload", "PUT", path + "/file", image.id,
                chunks=[data[i:i + UPLOAD_CHUNK] for i in range(0, len(data), UPLOAD_CHUNK)]))
            image.upload = a.status
            image.requests["upload"] = a.headers.get("x-openstack-request-id")
            self.patch(client, image, "patch2", "2")
            self.record(client.call("list", "GET", "/v2/images?limit=25"))
        client.close()

    def patch(self, client, image, op, mark):
        a = self.record(client.call(op, "PATCH", f"/v2/images/{image.id}", image.id,
                                    body=[{"op": "replace", "path": "/outage_mark", "value": mark}],
                                    content_type=PATCH_TYPE))
        if a.status == 200:
            image.mark = mark


# --- the test ----------------------------------------------------------------------------------


class Run:
    """One engine's run: checks as they go, timings, the summary."""

    def __init__(self, engine):
        self.engine = engine
        self.failures = []
        self.notes = []
        self.timings = {}

    def check(self, condition, message):
        print(f"outage[{self.engine}]: {'ok' if condition else 'FAIL'}: {message}", flush=True)
        if not condition:
            self.failures.append(message)
        return condition

    def say(self, message):
        print(f"outage[{self.engine}]: {message}", flush=True)


def wait_for(predicate, timeout, interval=0.05):
    """Polls predicate() until it returns something true; returns it, or None on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


def describe(a):
    if a.error:
        return f"{a.op} {a.image or ''}: {a.error} after {a.latency:.2f} s"
    return (f"{a.op} {a.image or ''}: {a.status} after {a.latency:.2f} s, "
            f"headers {a.headers}, body {a.body[:300]!r}")


def logged(g, request_id):
    """What glint logged for one request (its x-openstack-request-id), without colours."""
    if not request_id:
        return []
    with open(g.log, errors="replace") as f:
        return ["      log: " + ANSI.sub("", line.rstrip("\n"))[:400] for line in f
                if request_id in line]


def check_503_body(a):
    """None if `a` (a 503) is Glance's JSON error with Retry-After, else what is wrong."""
    problems = []
    if not a.headers.get("content-type", "").startswith("application/json"):
        problems.append(f"content-type {a.headers.get('content-type')!r}")
    try:
        body = json.loads(a.body)
    except ValueError:
        body = None
        problems.append("body is not JSON")
    if body is not None:
        if set(body) != {"message", "code", "title"}:
            problems.append(f"keys {sorted(body)}")
        if body.get("code") != "503 Service Unavailable":
            problems.append(f"code {body.get('code')!r}")
        if body.get("title") != "Service Unavailable":
            problems.append(f"title {body.get('title')!r}")
        if not isinstance(body.get("message"), str) or not body.get("message"):
            problems.append("no message")
    retry = a.headers.get("retry-after", "")
    if not retry.isdigit() or int(retry) < 1:
        problems.append(f"Retry-After {retry!r}")
    return ", ".join(problems) or None


def await_recovery(run, g, load, since, what):
    """After the database is back (at `since`): /healthcheck 200 and every request kind
    answered as expected again, within RECOVERY_LIMIT. Returns the seconds it took."""
    health = wait_for(lambda: (one_call(g.port, "/healthcheck").status == 200) and time.monotonic(),
                      RECOVERY_LIMIT, interval=0.1)
    run.check(health is not None,
              f"{what}: /healthcheck 200 again within {RECOVERY_LIMIT:g} s of the database's return"
              + (f" ({health - since:.2f} s)" if health else ""))
    done = wait_for(lambda: all(load.succeeded_since(op, since) for op in OPS)
                    and time.monotonic(), RECOVERY_LIMIT + 5, interval=0.05)
    missing = [op for op in OPS if not load.succeeded_since(op, since)]
    run.check(done is not None,
              f"{what}: every kind of request succeeds again after the database's return"
              + (f" ({done - since:.2f} s)" if done else f"; still failing: {missing}"))
    return (health - since if health else None), (done - since if done else None)


def outage(run, binary, engine_name):
    servers("start", engine_name)
    url = servers("fresh", engine_name).strip()
    workdir = tempfile.mkdtemp(prefix=f"glint-outage-{engine_name}-")
    sock = listening_socket()
    g = load = None
    db_down = False
    started = time.monotonic()
    try:
        g = Glint(binary, workdir, sock, url)
        run.say(f"glint up on {url} in {time.monotonic() - started:.1f} s "
                f"(work directory {workdir})")
        load = Load(g.port, engine_name)
        load.start()
        t0 = time.monotonic()
        warm = wait_for(lambda: all(load.succeeded_since(op, t0) for op in OPS), 20)
        run.check(warm is not None, "the load runs: every kind of request succeeds before any outage")

        # 1. A restart of the database server (stop, start; the data kept).
        run.say("restarting the database server")
        db_down = True
        restart_at = time.monotonic()
        servers("restart", engine_name)
        back = time.monotonic()
        db_down = False
        run.timings["restart took"] = back - restart_at
        run.timings["restart: healthcheck 200 after"], run.timings["restart: all requests OK after"] = \
            await_recovery(run, g, load, back, "after the restart")

        # 2. The database stopped for a few seconds while the load goes on.
        run.say(f"stopping the database server for {STOPPED_FOR:g} s")
        db_down = True
        servers("stop", engine_name)
        stopped = time.monotonic()
        health = wait_for(lambda: (lambda a: a if a.status == 503 else None)(
            one_call(g.port, "/healthcheck")), 10, interval=0.1)
        run.check(health is not None and health.body == b"database unavailable",
                  "database stopped: /healthcheck answers 503 \"database unavailable\""
                  + (f" ({health.latency:.2f} s)" if health else ""))
        reload_at = time.monotonic()
        ready = notify_fields(g.reload())
        run.timings["refused reload took"] = time.monotonic() - reload_at
        status = ready.get("STATUS", "")
        run.check(status.startswith("reload failed:") and "database" in status
                  and ready.get("ERRNO") is not None,
                  f"a reload while the database is down is refused, saying why: "
                  f"STATUS={status!r} ERRNO={ready.get('ERRNO')}")
        versions = one_call(g.port, "/versions")
        run.check(versions.status == 200,
                  f"... and the running generation keeps serving: GET /versions {versions.status}"
                  f"{versions.error or ''}")
        hit = wait_for(lambda: any(a.status == 503 and a.start >= stopped for a in list(load.answers)),
                       10)
        run.check(hit is not None, "the load hits the outage (503s while the database is stopped)")
        left = STOPPED_FOR - (time.monotonic() - stopped)
        if left > 0:
            time.sleep(left)
        run.say(f"starting the database server after {time.monotonic() - stopped:.1f} s")
        servers("start", engine_name)
        back = time.monotonic()
        db_down = False
        run.timings["stopped for"] = back - stopped
        run.timings["stop: healthcheck 200 after"], run.timings["stop: all requests OK after"] = \
            await_recovery(run, g, load, back, "after the stop")

        # 3. Steady again: nothing fails any more.
        steady_from = time.monotonic()
        time.sleep(STEADY)
        load.stop()
        late = [a for a in load.answers if a.start >= steady_from
                and (a.error or a.status != EXPECTED[a.op])]
        run.check(not late, f"after recovery, {STEADY:g} s of load without a failed request"
                  + "".join(f"\n    {describe(a)}" for a in late[:5]))
        ready = notify_fields(g.reload())
        status = ready.get("STATUS", "")
        run.check(status.startswith("serving generation") and "ERRNO" not in ready,
                  f"with the database back a reload succeeds: STATUS={status!r}")

        judge_answers(run, load)
        judge_state(run, g, load)
        summary(run, load)
    finally:
        if load is not None:
            load.stopping.set()
        if db_down:
            try:
                servers("start", engine_name)
            except Exception as e:  # noqa: BLE001 - the test's own failure matters more
                print(f"outage[{engine_name}]: could not start the database again: {e}")
        if g is not None:
            if g.proc.poll() is not None:
                run.check(False, f"glint exited with {g.proc.returncode} (see {g.log})")
            else:
                g.stop()
        sock.close()
        if run.failures:
            print(f"outage[{engine_name}]: glint's log and config are kept in {workdir}")
            with open(os.path.join(workdir, "glint.log"), errors="replace") as f:
                lines = [ANSI.sub("", line.rstrip("\n")) for line in f]
            warnings = [line for line in lines if " WARN " in line or " ERROR " in line]
            print(f"--- the last 30 of {len(warnings)} warnings and errors in {workdir}/glint.log "
                  "---", *warnings[-30:], "---", sep="\n")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    run.timings["engine total"] = time.monotonic() - started


def judge_answers(run, load):
    answers = load.answers
    errors = [a for a in answers if a.error]
    run.check(not errors, f"no connection error, reset or timeout ({len(errors)} of {len(answers)})"
              + "".join(f"\n    {describe(a)}" for a in errors[:5]))
    fives = [a for a in answers if a.status is not None and a.status >= 500 and a.status != 503]
    run.check(not fives, f"no 5xx other than 503 ({len(fives)})"
              + "".join(f"\n    {describe(a)}" for a in fives[:5]))
    odd = [a for a in answers if a.status is not None and a.status < 500
           and a.status != EXPECTED[a.op] and a.status not in EXPECTED_4XX[a.op]]
    run.check(not odd, f"no answer other than the expected 2xx or 503 ({len(odd)})"
              + "".join(f"\n    {describe(a)}" for a in odd[:5]))
    bad_503 = [(a, p) for a in answers if a.status == 503 and (p := check_503_body(a))]
    n503 = sum(1 for a in answers if a.status == 503)
    run.check(n503 > 0 and not bad_503,
              f"every 503 ({n503}) has Glance's JSON error body and Retry-After"
              + "".join(f"\n    {p}: {describe(a)}" for a, p in bad_503[:5]))
    slow = sorted((a for a in answers if a.end is not None and a.latency >= LATENCY_LIMIT),
                  key=lambda a: -a.latency)
    run.check(not slow, f"no request takes {LATENCY_LIMIT:g} s or more "
              f"(max {max(a.latency for a in answers):.2f} s)"
              + "".join(f"\n    {describe(a)}" for a in slow[:5]))


def judge_state(run, g, load):
    client = Client(g.port)

    def show(image_id):
        a = client.call("verify", "GET", f"/v2/images/{image_id}")
        return a, (json.loads(a.body) if a.status == 200 else None)

    created = [i for i in load.images if i.create == 201]
    refused = [i for i in load.images if i.create == 503]
    wrong = []
    for image in refused:
        a, _ = show(image.id)
        if a.status != 404:
            wrong.append("\n".join([
                f"create {image.id} ({image.requests['create']}) answered 503, GET now "
                f"{a.status}: {a.body[:200]!r}", *logged(g, image.requests["create"])]))
    run.check(not wrong, f"every create answered 503 left nothing: GET 404 ({len(refused)} images)"
              + "".join(f"\n    {w}" for w in wrong[:5]))

    wrong, requeue = [], []
    active = set()
    for image in created:
        a, body = show(image.id)
        if body is None:
            wrong.append(f"create {image.id} answered 201, GET now {a.status}: {a.body[:200]!r}")
            continue
        if body.get("outage_mark") != image.mark:
            wrong.append(f"{image.id}: outage_mark {body.get('outage_mark')!r}, the last PATCH "
                         f"answered 200 set {image.mark!r}")
        if image.upload == 204:
            expected = {"status": "active", "size": len(image.data),
                        "checksum": hashlib.md5(image.data).hexdigest(),
                        "os_hash_algo": "sha512",
                        "os_hash_value": hashlib.sha512(image.data).hexdigest()}
            got = {k: body.get(k) for k in expected}
            if got != expected:
                wrong.append(f"{image.id}: upload answered 204 but the image has "
                             f"{ {k: v for k, v in got.items() if v != expected[k]} }")
            active.add(image.id)
        elif image.upload is not None:
            requeue.append(image)
        elif body.get("status") != "queued":
            wrong.append(f"{image.id}: never uploaded, status {body.get('status')!r}")
    run.check(not wrong, f"every create answered 201 exists ({len(created)}), with the last "
              "PATCH answered 200 and, when uploaded with 204, active with the data's size, md5 "
              "and sha512" + "".join(f"\n    {w}" for w in wrong[:8]))

    # Uploads answered 503: the image goes back to `queued` (at once, or when its claim's
    # lease runs out), never active, never stuck in `saving`.
    states = {}

    def settled():
        for image in requeue:
            _, body = show(image.id)
            states[image.id] = body and body.get("status"), body
        return all(s == "queued" for s, _ in states.values())

    settled_at = wait_for(settled, REQUEUE_LIMIT, interval=0.25)
    stuck = [(i, *states.get(i.id, (None, None))) for i in requeue
             if states.get(i.id, (None,))[0] != "queued"]
    run.check(settled_at is not None,
              f"every image whose upload was answered 503 ({len(requeue)}) is queued again within "
              f"{REQUEUE_LIMIT:g} s (database.lease_time = {LEASE_TIME:g}s)"
              + "".join(f"\n    {i.id}: upload {i.upload} ({i.requests['upload']}), status {s!r}, "
                        f"size {b and b.get('size')}, updated_at {b and b.get('updated_at')}\n"
                        + "\n".join(logged(g, i.requests["upload"])) for i, s, b in stuck[:3]))

    datadir = os.path.join(g.state_dir, "images")
    files = os.listdir(datadir) if os.path.isdir(datadir) else []
    temps = [f for f in files if f.startswith(".upload-")]
    data = {f for f in files if not f.startswith(".")}
    run.check(not temps and data == active,
              f"the data directory holds exactly the {len(active)} active images' files "
              f"(extra: {sorted(data - active)[:5]}, missing: {sorted(active - data)[:5]}, "
              f"temporary: {temps[:5]})")
    client.close()


def summary(run, load):
    by_op = collections.defaultdict(collections.Counter)
    latency = collections.defaultdict(float)
    for a in load.answers:
        by_op[a.op][a.status if a.error is None else "error"] += 1
        latency[a.op] = max(latency[a.op], a.latency)
    run.say("summary:")
    for op in OPS:
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(by_op[op].items(), key=str))
        run.say(f"  {op:7} {counts:28} max {latency[op]:.2f} s")
    latencies_503 = [a.latency for a in load.answers if a.status == 503]
    if latencies_503:
        run.say(f"  503s: {len(latencies_503)}, max latency {max(latencies_503):.2f} s")
    run.say(f"  max latency of any request: {max(latency.values()):.2f} s "
            f"(limit {LATENCY_LIMIT:g} s)")
    for k, v in run.timings.items():
        run.say(f"  {k}: " + (f"{v:.2f} s" if v is not None else "never"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binary")
    parser.add_argument("--engine", choices=["postgres", "mariadb", "all"], default="all")
    args = parser.parse_args()
    binary = os.path.abspath(args.binary)
    names = list(ENGINES) if args.engine == "all" else [args.engine]
    failed = {}
    for name in names:
        run = Run(name)
        began = time.monotonic()
        try:
            outage(run, binary, name)
        except Exception as e:  # noqa: BLE001 - reported as this engine's failure
            run.check(False, f"the test itself failed: {type(e).__name__}: {e}")
        run.say(f"took {time.monotonic() - began:.1f} s")
        if run.failures:
            failed[name] = run.failures
    if failed:
        for name, failures in failed.items():
            print(f"outage[{name}]: {len(failures)} checks failed:", file=sys.stderr)
            for f in failures:
                print(f"  - {f.splitlines()[0]}", file=sys.stderr)
        sys.exit(1)
    print(f"outage: all checks passed ({', '.join(names)})")


if __name__ == "__main__":
    main()
