#!/usr/bin/env python3
"""Two glint nodes behind a real HAProxy (Debian's), as a cloud runs them: one PostgreSQL
database (tests/db/servers.py, a fresh database) and one S3 store, the default (s3s-fs from
tests/s3/server.py, a fresh bucket; 5 MiB parts, 2 in flight), shared by both; each node with a
state directory of its own (control socket, staging area, node-id) and its own listening socket,
passed in by the socket-activation harness (tests/harness/activated.py) as systemd's socket unit
would. HAProxy balances round-robin over the two and health-checks them with
`option httpchk GET /healthcheck`; every request of the test goes through it.

While client threads keep going, through HAProxy:
  - uploaders: create an image and upload random data to it (256 KiB to 11 MiB; over 5 MiB it
    is a multipart upload to S3);
  - downloaders: download an image that is active and compare it byte for byte (and its md5)
    with what was sent;
  - importers: glance-direct: create, PUT /stage, POST /import, poll until active; the stage and
    the import may reach different nodes (the test counts how often they did, and needs both);
  - a lister: GET /v2/images, and the next page;
the nodes are reloaded in turn (SIGHUP, READY=1), three times each, then restarted in turn,
twice each (SIGTERM, wait for the exit, a new process on the SAME listening socket, which stays
open here meanwhile, so connections wait in its backlog: what systemd's socket unit does). After
each reload or restart the test waits until that node has answered every kind of request again
before it touches the next.

It checks that:
  - no request failed: every answer is the expected 2xx (a connection error, a reset, a
    timeout or an HAProxy error counts as a failure);
  - every download was byte-exact;
  - every image ends active with the size, md5 and sha512 of its data, and the bucket holds
    exactly that data under the store's prefix; no multipart upload is left unfinished in the
    bucket; the nodes' staging areas are empty;
  - each reload was accepted (STATUS=serving generation ...), each node exited 0 on SIGTERM;
and prints a summary (requests by kind, node and status, reloads, restarts and their
timings). On failure, the work directory (glint.toml, glint.log of each node, haproxy.cfg,
haproxy.log: one line per request) is kept and named, and the bucket too.

server.trusted_proxies is not set: nothing here depends on forwarded headers (the links glint
makes are not looked at), and noauth on loopback needs no proxy to trust.

Usage: tests/proxy/test_nodes.py GLINT_BINARY
Starts the suite's PostgreSQL and S3 servers if they are not running (they outlive the test:
tests/run.sh stops them). Python 3 standard library only; needs haproxy, and what
tests/db/servers.py and tests/s3/server.py need.

tests/e2e/nodes_e2e.py imports this file and runs the same load, checks and summary (roll(),
report()) against two nodes of the .deb under a real systemd, reloaded and restarted with
systemctl.
"""

import base64
import collections
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(TESTS, "harness"))
from activated import ActivatedGlint, listening_socket  # noqa: E402

DB_SERVERS = os.path.join(TESTS, "db", "servers.py")
S3_SERVER = os.path.join(TESTS, "s3", "server.py")

PREFIX = "nodes/"
KIB, MIB = 1024, 1024 * 1024
# Over 5 MiB (part_size) an upload to S3 is a multipart upload: 2 and 3 parts here.
SIZES = (256 * KIB + 3, 2 * MIB + 17, 5 * MIB + 1, 7 * MIB + 333, 11 * MIB + 5)
UPLOADERS, DOWNLOADERS, IMPORTERS, LISTERS = 2, 2, 2, 1
RELOAD_ROUNDS = 3  # each: every node reloaded, in turn
RESTART_ROUNDS = 2  # each: every node restarted, in turn (after all the reloads)
CLIENT_TIMEOUT = 60.0  # a request that takes this long is a failure (a hang)
IMPORT_TIMEOUT = 90.0  # an import not active by then is a failure
SERVES_AGAIN_TIMEOUT = 30.0  # after a reload or restart: the node answers through HAProxy
POLL = 0.05
LIST_PAUSE = 0.05
IMPORT_POLL = 0.1

# The load's requests and the answer each must get (any other request: 200).
EXPECTED = {"create": 201, "upload": 204, "download": 200, "stage": 204, "import": 202,
            "poll": 200, "list": 200}
ANSI = re.compile(r"\x1b\[[0-9;]*m")

FAILURES = []


def say(message):
    print(f"nodes: {message}", flush=True)


def check(condition, message):
    say(("ok: " if condition else "FAIL: ") + message)
    if not condition:
        FAILURES.append(message.splitlines()[0])
    return condition


def script(path, *args):
    """A helper script of the suite (servers.py, server.py); its stdout; raises on failure."""
    cp = subprocess.run([sys.executable, path, *args], capture_output=True, text=True, timeout=300)
    if cp.returncode != 0:
        raise RuntimeError(f"{os.path.relpath(path, TESTS)} {' '.join(args)} failed "
                           f"(exit {cp.returncode}):\n{cp.stdout}{cp.stderr}")
    return cp.stdout


def wait_for(predicate, timeout):
    """Polls predicate() until it returns something true; returns it, or None on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(POLL)


def payload(seed, size):
    """An image's data, made again from its seed when it is checked (not kept in memory).
    Never with an MBR's boot signature at byte 510: raw data that looks like a partition table
    is checked as one (as Glance does), and random bytes would fail that check about once in
    65,536 uploads."""
    data = bytearray(random.Random(seed).randbytes(size))
    if data[510:512] == b"\x55\xaa":
        data[510] = 0
    return bytes(data)


def shared_config(db_url, s3):
    """The config tables every node has the same: the log level, the database, the S3 store
    (the default)."""
    q = json.dumps  # a JSON string is a TOML basic string
    return ('[log]\nlevel = "info"\n'
            f'[database]\nurl = {q(db_url)}\n'
            '[stores.objects]\ntype = "s3"\ndefault = true\n'
            f'endpoint = {q(s3["ENDPOINT"])}\nregion = "us-east-1"\n'
            f'bucket = {q(s3["BUCKET"])}\nprefix = {q(PREFIX)}\n'
            f'access_key_id = {q(s3["ACCESS_KEY"])}\n'
            f'secret_access_key = {q(s3["SECRET_KEY"])}\n'
            'path_style = true\npart_size = "5MiB"\nparts_in_flight = 2\n')


def notify_fields(message):
    return dict(line.split("=", 1) for line in message.splitlines() if "=" in line)


# --- glint and HAProxy -------------------------------------------------------------------------


class Node(ActivatedGlint):
    """One glint node: the shared database and bucket, a state directory of its own."""

    def __init__(self, name, binary, workdir, sock, db_url, s3):
        self.name, self.db_url, self.s3 = name, db_url, s3
        self.state_dir = os.path.join(workdir, "state")
        os.makedirs(workdir)
        super().__init__(binary, workdir, sock)

    def write_config(self):
        with open(self.config, "w") as f:
            f.write(f'state_dir = {json.dumps(self.state_dir)}\n'
                    '[server]\nlisten = ["127.0.0.1:1"]\n' + shared_config(self.db_url, self.s3))

    def log_lines(self, levels=(" WARN ", " ERROR ")):
        with open(self.log, errors="replace") as f:
            lines = [ANSI.sub("", line.rstrip("\n")) for line in f]
        return [line for line in lines if any(level in line for level in levels)]

    # What roll(), judge() and summary() ask of a node besides name, port, log and
    # log_lines() (tests/e2e/nodes_e2e.py answers them with systemctl in a booted systemd).

    def rolling_reload(self):
        """Reloads (SIGHUP, READY=1): (accepted, the STATUS it answered)."""
        ready = notify_fields(self.reload())
        return "ERRNO" not in ready, ready.get("STATUS", "")

    def rolling_restart(self):
        """SIGTERM, waits for the exit, a new process on the same socket: (clean, seconds
        the stop took, what happened)."""
        pid, at = self.proc.pid, time.monotonic()
        self.stop()
        stopped = time.monotonic() - at
        code = self.proc.returncode
        self.start()
        return code == 0, stopped, (f"(pid {pid}) exited {code} {stopped:.2f} s after SIGTERM, "
                                    f"restarted on the same socket (pid {self.proc.pid})")

    def staging(self):
        """What is left in the node's staging area."""
        staging = os.path.join(self.state_dir, "staging")
        return sorted(os.listdir(staging)) if os.path.isdir(staging) else []


def start_haproxy(workdir, front, nodes):
    """HAProxy on `front` (an open listening socket, passed in), round-robin over the nodes,
    health checks on /healthcheck; it names the node that answered in X-Glint-Node."""
    config = os.path.join(workdir, "haproxy.cfg")
    servers = "".join(f"    server {n.name} 127.0.0.1:{n.port}\n" for n in nodes)
    with open(config, "w") as f:
        f.write(f"""global
    log stderr format raw local0 info
defaults
    mode http
    log global
    option httplog
    timeout connect 5s
    timeout client {CLIENT_TIMEOUT:g}s
    timeout server {CLIENT_TIMEOUT:g}s
    timeout check 1s
frontend public
    bind fd@{front.fileno()}
    default_backend glint
backend glint
    balance roundrobin
    option httpchk GET /healthcheck
    http-check expect status 200
    http-response set-header X-Glint-Node %[srv_name]
    default-server check inter 250ms fall 2 rise 1
{servers}""")
    log = os.path.join(workdir, "haproxy.log")
    with open(log, "w") as stderr:
        proc = subprocess.Popen(["haproxy", "-f", config, "-db"], pass_fds=(front.fileno(),),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    return proc, log


# --- HTTP --------------------------------------------------------------------------------------


class Answer:
    __slots__ = ("op", "image", "start", "end", "status", "node", "generation", "body", "error",
                 "request_id")

    def __init__(self, op, image, start):
        self.op, self.image, self.start = op, image, start
        self.end = self.status = self.node = self.generation = self.error = None
        self.request_id = None
        self.body = b""

    @property
    def failed(self):
        return self.error is not None or self.status != EXPECTED.get(self.op, 200)

    def describe(self):
        where = f"node {self.node or '?'} gen {self.generation or '?'} {self.request_id or ''}"
        what = self.error or f"{self.status} {self.body[:300]!r}"
        return (f"{self.op} {self.image or ''} at +{self.start - T0:.2f}s, "
                f"{self.end - self.start:.2f}s: {what} ({where})")


T0 = time.monotonic()


class Client:
    """One keep-alive connection to HAProxy; a new one after an error or a close."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def call(self, op, method, path, image=None, body=None, data=None):
        answer = Answer(op, image, time.monotonic())
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                                       timeout=CLIENT_TIMEOUT)
            headers = {"Accept": "application/json"}
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            elif data is not None:
                headers["Content-Type"] = "application/octet-stream"
            self.conn.request(method, path, body=data, headers=headers)
            response = self.conn.getresponse()
            content = response.read()
            answer.status = response.status
            answer.node = response.getheader("x-glint-node")
            answer.generation = response.getheader("x-glint-generation")
            answer.request_id = response.getheader("x-openstack-request-id")
            answer.body = content
            if response.will_close:
                self.close()
        except (OSError, http.client.HTTPException) as e:
            answer.error = f"{type(e).__name__}: {e}"
            self.close()
        answer.end = time.monotonic()
        return answer


# --- the load ----------------------------------------------------------------------------------


class Image:
    def __init__(self, image_id, kind, seed, size):
        self.id, self.kind, self.seed, self.size = image_id, kind, seed, size
        data = payload(seed, size)
        self.md5 = hashlib.md5(data).hexdigest()
        self.sha512 = hashlib.sha512(data).hexdigest()
        self.active = False  # its upload was answered 204, or its import ended active
        self.stage_node = self.import_node = None
        self.outcome = None  # what went wrong, if anything


class Load:
    def __init__(self, port):
        self.port = port
        self.lock = threading.Lock()
        self.answers = []
        self.images = []
        self.ready = []  # images with data, for the downloaders
        self.have_ready = threading.Condition(self.lock)
        self.bad_downloads = []
        self.crashes = []
        self.stopping = threading.Event()
        self.threads = []
        for kind, count in (("uploader", UPLOADERS), ("downloader", DOWNLOADERS),
                            ("importer", IMPORTERS), ("lister", LISTERS)):
            for n in range(count):
                self.threads.append(threading.Thread(target=self.run, args=(kind, n),
                                                     name=f"{kind}-{n}", daemon=True))

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self):
        """Lets each thread finish what it is doing (an import: until it is active), then
        joins them."""
        self.stopping.set()
        with self.have_ready:
            self.have_ready.notify_all()
        deadline = time.monotonic() + IMPORT_TIMEOUT + 2 * CLIENT_TIMEOUT
        for t in self.threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                raise RuntimeError(f"load thread {t.name} did not end: a request hangs")

    def record(self, answer):
        with self.lock:
            self.answers.append(answer)
        return answer

    def served(self, node=None, since=0.0, op=None, generation=None):
        """Whether an answer as expected, from `node` (any), started after `since`, exists."""
        with self.lock:
            return any(not a.failed and a.start >= since and (node is None or a.node == node)
                       and (op is None or a.op == op)
                       and (generation is None or a.generation == generation)
                       for a in self.answers)

    def run(self, kind, n):
        client = Client(self.port)
        rng = random.Random(f"{kind}-{n}")
        try:
            getattr(self, kind)(client, rng, n)
        except Exception:  # noqa: BLE001 - a crashed thread is a failure of the test
            self.crashes.append(f"{kind}-{n}: {traceback.format_exc()}")
        finally:
            client.close()

    def create(self, client, rng, kind, n, cycle):
        size = rng.choice(SIZES)
        a = self.record(client.call("create", "POST", "/v2/images", body={
            "name": f"nodes-{kind}-{n}-{cycle}", "disk_format": "raw",
            "container_format": "bare"}))
        if a.failed:
            return None
        image = Image(json.loads(a.body)["id"], kind, rng.getrandbits(64), size)
        with self.lock:
            self.images.append(image)
        return image

    def add_ready(self, image):
        image.active = True
        with self.have_ready:
            self.ready.append(image)
            self.have_ready.notify_all()

    def uploader(self, client, rng, n):
        cycle = 0
        while not self.stopping.is_set():
            cycle += 1
            image = self.create(client, rng, "upload", n, cycle)
            if image is None:
                continue
            a = self.record(client.call("upload", "PUT", f"/v2/images/{image.id}/file", image.id,
                                        data=payload(image.seed, image.size)))
            if a.failed:
                image.outcome = f"upload: {a.describe()}"
                continue
            self.add_ready(image)

    def importer(self, client, rng, n):
        cycle = 0
        while not self.stopping.is_set():
            cycle += 1
            image = self.create(client, rng, "import", n, cycle)
            if image is None:
                continue
            path = f"/v2/images/{image.id}"
            a = self.record(client.call("stage", "PUT", path + "/stage", image.id,
                                        data=payload(image.seed, image.size)))
            image.stage_node = a.node
            if a.failed:
                image.outcome = f"stage: {a.describe()}"
                continue
            a = self.record(client.call("import", "POST", path + "/import", image.id,
                                        body={"method": {"name": "glance-direct"}}))
            image.import_node = a.node
            if a.failed:
                image.outcome = f"import: {a.describe()}"
                continue
            # Until it is active, however the load is asked to stop meanwhile.
            deadline = time.monotonic() + IMPORT_TIMEOUT
            while True:
                a = self.record(client.call("poll", "GET", path, image.id))
                shown = json.loads(a.body) if not a.failed else {}
                status = shown.get("status")
                if status == "active":
                    self.add_ready(image)
                    break
                if status not in (None, "uploading", "importing") or shown.get(
                        "os_glance_failed_import"):
                    image.outcome = f"import ended {status}: {json.dumps(shown)[:600]}"
                    break
                if time.monotonic() > deadline:
                    image.outcome = (f"import not active after {IMPORT_TIMEOUT:g} s: "
                                     f"{json.dumps(shown)[:600]}")
                    break
                time.sleep(IMPORT_POLL)

    def downloader(self, client, rng, n):
        while not self.stopping.is_set():
            with self.have_ready:
                while not self.ready and not self.stopping.is_set():
                    self.have_ready.wait()
                if not self.ready:
                    return
                # The newest images more often: they met the latest reload or restart.
                image = self.ready[max(0, len(self.ready) - 1 - int(rng.expovariate(0.2)))]
            a = self.record(client.call("download", "GET", f"/v2/images/{image.id}/file",
                                        image.id))
            if not a.failed:
                data = a.body
                a.body = b""  # not kept: all of them would not fit in memory
                if data != payload(image.seed, image.size):
                    self.bad_downloads.append(
                        f"{image.id} ({image.kind}, {image.size} bytes): {len(data)} bytes "
                        f"came, md5 {hashlib.md5(data).hexdigest()} (sent {image.md5}); "
                        f"{a.describe()}")

    def lister(self, client, rng, n):
        while not self.stopping.is_set():
            a = self.record(client.call("list", "GET", "/v2/images?limit=20"))
            if not a.failed:
                following = json.loads(a.body).get("next")
                if following:
                    self.record(client.call("list", "GET", following))
            self.stopping.wait(LIST_PAUSE)


# --- the test ----------------------------------------------------------------------------------


def s3_settings():
    out = script(S3_SERVER, "start")
    settings = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    s3 = {k[len("TEST_S3_"):]: v for k, v in settings.items() if k.startswith("TEST_S3_")}
    s3["BUCKET"] = script(S3_SERVER, "fresh").strip()
    return s3


def leftover_uploads(s3):
    """The multipart uploads s3s-fs still holds for our bucket (it keeps one's metadata as
    .bucket-<base64url bucket>.object-<base64url key>.upload-<id>.metadata.json in its root)."""
    tag = base64.urlsafe_b64encode(s3["BUCKET"].encode()).decode().rstrip("=")
    return sorted(name for name in os.listdir(s3["ROOT"])
                  if name.startswith(f".bucket-{tag}.object-") and ".upload-" in name)


def judge(load, nodes, s3):
    """Checks the load's answers and the end state; returns the numbers of the summary line."""
    answers = load.answers
    check(not load.crashes, "no load thread crashed" + "".join(f"\n    {c}" for c in load.crashes))
    failed = [a for a in answers if a.failed]
    check(not failed, f"no failed request: {len(failed)} of {len(answers)} failed"
          + "".join(f"\n    {a.describe()}" for a in failed[:15]))
    downloads = [a for a in answers if a.op == "download" and not a.failed]
    check(downloads and not load.bad_downloads,
          f"every download is byte-exact ({len(downloads)} downloads)"
          + "".join(f"\n    {d}" for d in load.bad_downloads[:10]))

    # Where the stages and imports went: the case of a stage on one node and its import on
    # the other is what this test is for.
    imports = [i for i in load.images if i.kind == "import" and i.import_node]
    crossed = [i for i in imports if i.stage_node != i.import_node]
    check(crossed and len(crossed) < len(imports),
          f"stages and imports reached different nodes ({len(crossed)} of {len(imports)} imports) "
          "and the same node (the rest)")
    for node in nodes:
        check(load.served(node.name), f"{node.name} served requests")

    # The end state, asked of each node in turn (directly: both must agree).
    problems = []
    bucket_dir = os.path.join(s3["ROOT"], s3["BUCKET"]) if s3.get("ROOT") else None
    clients = [Client(node.port) for node in nodes]
    for k, image in enumerate(load.images):
        if image.outcome:
            problems.append(f"{image.id} ({image.kind}): {image.outcome}")
            continue
        a = clients[k % len(clients)].call("show", "GET", f"/v2/images/{image.id}")
        shown = json.loads(a.body) if not a.failed else {}
        if (shown.get("status"), shown.get("size"), shown.get("checksum"),
                shown.get("os_hash_value"), shown.get("stores")) != (
                "active", image.size, image.md5, image.sha512, "objects"):
            problems.append(f"{image.id} ({image.kind}, {image.size} bytes, md5 {image.md5}): "
                            f"{a.describe() if a.failed else json.dumps(shown)[:600]}")
            continue
        if bucket_dir is not None:
            try:
                with open(os.path.join(bucket_dir, PREFIX + image.id), "rb") as f:
                    held = hashlib.md5(f.read()).hexdigest()
            except FileNotFoundError:
                held = "no object"
            if held != image.md5:
                problems.append(f"{image.id} ({image.kind}): the bucket holds {held}, "
                                f"not {image.md5}")
    for client in clients:
        client.close()
    uploads = sum(1 for i in load.images if i.kind == "upload")
    check(load.images and not problems,
          f"every image ({uploads} uploaded, {len(load.images) - uploads} imported) is active "
          "with the size, md5 and sha512 of its data, and the bucket holds that data"
          + "".join(f"\n    {p}" for p in problems[:15]))
    counts = {"requests": len(answers), "failed": len(failed), "downloads": len(downloads),
              "bad downloads": len(load.bad_downloads), "images": len(load.images),
              "lost or wrong": len(problems)}
    if bucket_dir is not None:
        objects = set(os.listdir(os.path.join(bucket_dir, PREFIX.rstrip("/"))))
        expected = {i.id for i in load.images if i.active}
        check(objects == expected, f"the bucket holds the active images' objects and nothing else "
              f"({len(objects)} objects; {sorted(objects - expected)[:5]} unexpected)")
        left = leftover_uploads(s3)
        check(not left, f"no multipart upload is left unfinished in the bucket: {left[:5]}")
        counts.update({"objects": len(objects), "unexpected objects": len(objects - expected),
                       "unfinished uploads": len(left)})
    for node in nodes:
        left = node.staging()
        check(not left, f"{node.name}: the staging area is empty: {left[:5]}")
    return counts


def summary(load, nodes, events, started):
    answers = load.answers
    say(f"summary: {len(answers)} requests in {time.monotonic() - started:.1f} s of load, "
        f"{sum(1 for a in answers if a.failed)} failed")
    by_op = collections.Counter((a.op, a.status or a.error.split(":")[0]) for a in answers)
    for (op, status), count in sorted(by_op.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        say(f"  {op:9} {status}: {count}")
    by_node = collections.Counter(a.node or "(none)" for a in answers)
    say("  by node: " + ", ".join(f"{k} {v}" for k, v in sorted(by_node.items())))
    up = sum(i.size for i in load.images if i.active)
    sizes = {i.id: i.size for i in load.images}
    down = sum(sizes[a.image] for a in answers if a.op == "download" and not a.failed)
    multipart = sum(1 for i in load.images if i.active and i.size > 5 * MIB)
    say(f"  images: {len(load.images)} ({multipart} over 5 MiB), {up / MIB:.0f} MiB in, "
        f"{down / MIB:.0f} MiB downloaded")
    reloads = [e for e in events if e[0] == "reload"]
    restarts = [e for e in events if e[0] == "restart"]
    say(f"  reloads: {len(reloads)}, "
        + ", ".join(f"{name} {took:.2f} s" for _, name, took, _, _ in reloads))
    say(f"  restarts: {len(restarts)}, "
        + ", ".join(f"{name} stop {stop:.2f} s + start {took - stop:.2f} s"
                    for _, name, took, stop, _ in restarts))
    for kind in ("reload", "restart"):
        # Requests the node was serving when its SIGHUP or SIGTERM came.
        crossing = [a for a in answers if a.end for e in events
                    if e[0] == kind and a.node == e[1] and a.start < e[4] < a.end]
        transfers = collections.Counter(a.op for a in crossing if a.op in ("upload", "stage", "download"))
        say(f"  in flight on the node at a {kind}: {len(crossing)} requests ("
            + ", ".join(f"{v} {k}s" for k, v in sorted(transfers.items())) + ")")
    slowest = sorted((a for a in answers if a.end), key=lambda a: a.start - a.end)[:3]
    say("  slowest: " + "; ".join(f"{a.op} {a.end - a.start:.2f} s at +{a.start - T0:.1f}s "
                                  f"({a.node})" for a in slowest))
    for node in nodes:
        lines = node.log_lines()
        say(f"  {node.name}: {len(lines)} WARN/ERROR lines in {node.log}"
            + "".join(f"\n      {line[:300]}" for line in lines[-8:]))


def serves_every_kind(load, node, since):
    """Waits until `node` has answered every kind of request since a reload or restart (so
    that the next one meets a load of every kind): a node's worth of traffic, not a time."""
    done = wait_for(lambda: all(load.served(node.name, since, op=op) for op in EXPECTED),
                    SERVES_AGAIN_TIMEOUT)
    missing = [op for op in EXPECTED if not load.served(node.name, since, op=op)]
    check(done is not None, f"{node.name} answers every kind of request again"
          + (f"; not yet: {missing}" if missing else ""))


def haproxy_events(log):
    with open(log, errors="replace") as f:
        return [line.rstrip() for line in f if "Server glint/" in line or "backend glint" in line]


def shared_services():
    """The suite's PostgreSQL and s3s-fs, started if they are not running (they outlive the
    test: tests/run.sh stops them): (a fresh database's URL, the S3 settings with a fresh
    bucket)."""
    script(DB_SERVERS, "start", "--engine", "postgres")
    db_url = script(DB_SERVERS, "fresh", "--engine", "postgres").strip()
    return db_url, s3_settings()


def first_answer(port, haproxy, haproxy_log):
    """A first request through HAProxy; raises, with HAProxy's log, if it fails."""
    probe = Client(port)
    first = probe.call("healthcheck", "GET", "/healthcheck")
    probe.close()
    if first.failed:
        with open(haproxy_log, errors="replace") as f:
            raise RuntimeError(f"no answer through HAProxy (exit status {haproxy.poll()}): "
                               f"{first.describe()}\n{haproxy_log}:\n{f.read()[-3000:]}")


def roll(load, nodes, events, reload_rounds=RELOAD_ROUNDS, restart_rounds=RESTART_ROUNDS):
    """Starts the load, reloads the nodes in turn (node.rolling_reload()) `reload_rounds`
    times, then restarts them in turn (node.rolling_restart()) `restart_rounds` times, each
    time waiting until the node has answered every kind of request again, then stops the
    load. Appends to `events` what summary() reports; returns when the load began."""
    load.start()
    t0 = time.monotonic()
    warm = wait_for(lambda: all(load.served(n.name, t0) for n in nodes)
                    and all(load.served(op=op) for op in EXPECTED), 60)
    check(warm is not None, "the load runs: both nodes serve, every kind of request succeeds")

    for round_ in range(1, reload_rounds + 1):
        for node in nodes:
            at = time.monotonic()
            accepted, status = node.rolling_reload()
            took = time.monotonic() - at
            generation = re.match(r"serving generation (\d+)", status)
            check(accepted and generation,
                  f"reload {round_} of {node.name} accepted in {took:.2f} s: {status!r}")
            events.append(("reload", node.name, took, None, at))
            if generation:
                back = wait_for(lambda: load.served(node.name, at, generation=generation[1]),
                                SERVES_AGAIN_TIMEOUT)
                check(back is not None, f"{node.name} serves on generation {generation[1]}")
            serves_every_kind(load, node, at)

    for node in [n for _ in range(restart_rounds) for n in nodes]:
        at = time.monotonic()
        clean, stopped, what = node.rolling_restart()
        took = time.monotonic() - at
        check(clean, f"{node.name} restarted in {took:.2f} s: {what}")
        events.append(("restart", node.name, took, stopped, at))
        ready_at = time.monotonic()
        back = wait_for(lambda: load.served(node.name, ready_at), SERVES_AGAIN_TIMEOUT)
        check(back is not None, f"{node.name} serves through HAProxy again after its restart")
        serves_every_kind(load, node, ready_at)

    # Every kind of request once more after the last restart, then the load ends.
    after = time.monotonic()
    steady = wait_for(lambda: all(load.served(op=op, since=after) for op in EXPECTED), 60)
    check(steady is not None, "after the restarts every kind of request succeeds")
    load.stop()
    return t0


def report(load, nodes, s3, events, t0, haproxy_log):
    """judge(), then the summary and HAProxy's view of the nodes; returns judge()'s numbers."""
    counts = judge(load, nodes, s3)
    summary(load, nodes, events, t0)
    for line in haproxy_events(haproxy_log):
        say(f"  haproxy: {line[:200]}")
    return counts


def conclude(s3, kept):
    """The verdict: 1 with the failed checks and what is `kept` (the bucket too), or 0 with
    the bucket removed."""
    if FAILURES:
        say(f"{len(FAILURES)} check(s) failed; kept: {kept}, bucket {s3['BUCKET']}"
            + (f" in {s3['ROOT']}" if s3.get("ROOT") else ""))
        for name in FAILURES:
            say(f"  failed: {name}")
        return 1
    if s3.get("ROOT"):
        shutil.rmtree(os.path.join(s3["ROOT"], s3["BUCKET"]), ignore_errors=True)
    say("all checks passed")
    return 0


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    binary = os.path.abspath(sys.argv[1])
    if shutil.which("haproxy") is None:
        print("nodes: haproxy is not installed (apt-get install haproxy)")
        return 1
    db_url, s3 = shared_services()
    workdir = tempfile.mkdtemp(prefix="glint-nodes-")
    say(f"database {db_url}, bucket {s3['BUCKET']} at {s3['ENDPOINT']}, work directory {workdir}")
    socks = [listening_socket(), listening_socket()]
    front = listening_socket()
    nodes, haproxy, load, events = [], None, None, []
    started = time.monotonic()
    try:
        for k, sock in enumerate(socks, 1):
            nodes.append(Node(f"node{k}", binary, os.path.join(workdir, f"node{k}"), sock,
                              db_url, s3))
        haproxy, haproxy_log = start_haproxy(workdir, front, nodes)
        first_answer(front.getsockname()[1], haproxy, haproxy_log)
        say(f"{', '.join(f'{n.name} on :{n.port}' for n in nodes)} up, HAProxy on "
            f":{front.getsockname()[1]}, in {time.monotonic() - started:.1f} s")

        load = Load(front.getsockname()[1])
        t0 = roll(load, nodes, events)
        for node in nodes:
            check(node.proc.poll() is None, f"{node.name} is still running")
        report(load, nodes, s3, events, t0, haproxy_log)
    except Exception as e:  # noqa: BLE001 - reported, and the test fails
        FAILURES.append(f"aborted: {e!r}")
        say(f"FAIL: aborted: {traceback.format_exc()}")
    finally:
        if load is not None:
            load.stopping.set()
        for node in nodes:
            if node.proc.poll() is None:
                node.stop()
        if haproxy is not None:
            haproxy.terminate()
            haproxy.wait(timeout=30)
        for sock in socks + [front]:
            sock.close()
    verdict = conclude(s3, f"{workdir} (glint.toml, glint.log per node, haproxy.cfg, haproxy.log)")
    if not verdict:
        shutil.rmtree(workdir, ignore_errors=True)
    return verdict


if __name__ == "__main__":
    sys.exit(main())
