#!/usr/bin/env python3
"""End-to-end test under a real systemd 254 (Debian bookworm-backports), never the host's.

Builds (or reuses) a bookworm root with mmdebstrap, boots it with its own systemd-nspawn in a
private mount namespace (tmpfs /tmp and /run, a cgroup subtree of its own, a throw-away
overlay over the image), installs the .deb built by packaging/build.sh and checks what
operators rely on: socket activation, reload under keep-alive load, a rejected reload,
restarts under load, a web-download import and a completed stage across `systemctl restart`, a
2 GiB upload carried across 3 restarts (server.handover_transfers), the fd store kept across
stop/start, journald fields and the `systemd-analyze security` exposure. Every systemctl call runs under `timeout`.

Usage: tests/e2e/systemd_e2e.py path/to/glint.deb    (root only; skips otherwise)
"""

import gzip
import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# Outside /tmp: the box's launcher mounts a fresh tmpfs over /tmp (nspawn's scratch files
# must not land on the host), which would hide an image kept there. Kept across runs.
TESTBED = os.environ.get("GLINT_TESTBED", "/var/tmp/glint-testbed")
SUITES = [
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
    "deb http://deb.debian.org/debian bookworm-backports main",
]
PACKAGES = [
    "systemd/bookworm-backports",
    "libsystemd0/bookworm-backports",
    "libsystemd-shared/bookworm-backports",
    "systemd-dev/bookworm-backports",
    "libudev1/bookworm-backports",
    "systemd-container/bookworm-backports",
    "dbus",
    "python3",
    "procps",
    "iproute2",
    "qemu-utils",
]
MASKED = [
    "apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "fstrim.timer",
    "e2scrub_all.timer", "man-db.timer", "systemd-journald-audit.socket", "systemd-firstboot.service",
    "systemd-pstore.service", "getty@tty1.service", "console-getty.service", "dev-hugepages.mount",
    "sys-fs-fuse-connections.mount", "sys-kernel-debug.mount", "sys-kernel-tracing.mount",
    "sys-kernel-config.mount", "systemd-networkd.service", "systemd-networkd.socket",
    "systemd-resolved.service", "systemd-timesyncd.service",
]
SYSTEMCTL_TIMEOUT = "60"
FAILURES = []


def log(message):
    print(f"e2e: {message}", flush=True)


def check(condition, message):
    if condition:
        log(f"ok: {message}")
    else:
        log(f"FAIL: {message}")
        FAILURES.append(message)


def image_dir():
    """A bookworm root with systemd 254, built once per package list."""
    key = hashlib.sha256("\n".join(SUITES + PACKAGES + MASKED).encode()).hexdigest()[:12]
    image = os.path.join(TESTBED, f"image-{key}")
    if os.path.exists(os.path.join(image, ".complete")):
        return image
    shutil.rmtree(image, ignore_errors=True)
    os.makedirs(TESTBED, exist_ok=True)
    log("building the systemd 254 image with mmdebstrap (about a minute)")
    subprocess.run(
        ["mmdebstrap", "--variant=apt", "--include=" + ",".join(PACKAGES),
         "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/locale/*",
         "--dpkgopt=path-exclude=/usr/share/doc/*", "bookworm", image, *SUITES],
        check=True, stdout=subprocess.DEVNULL,
    )
    with open(os.path.join(image, "etc/machine-id"), "w") as f:
        f.write("0123456789abcdef0123456789abcdef\n")
    units = os.path.join(image, "etc/systemd/system")
    with open(os.path.join(units, "sysbox.target"), "w") as f:
        f.write("[Unit]\nDescription=test box\nRequires=basic.target\nAfter=basic.target\nAllowIsolate=yes\n")
    for unit in MASKED:
        path = os.path.join(units, unit)
        if os.path.lexists(path):
            os.remove(path)
        os.symlink("/dev/null", path)
    confd = os.path.join(image, "etc/systemd/system.conf.d")
    os.makedirs(confd, exist_ok=True)
    with open(os.path.join(confd, "timeouts.conf"), "w") as f:
        f.write("[Manager]\nDefaultTimeoutStartSec=30s\nDefaultTimeoutStopSec=30s\n")
    open(os.path.join(image, ".complete"), "w").close()
    return image


class Box:
    """A booted systemd in its own mount namespace and cgroup subtree."""

    def __init__(self, image, share):
        self.name = f"glint-e2e-{os.getpid()}"
        launcher = os.path.join(share, "launch.sh")
        loader = os.path.join(image, "lib64/ld-linux-x86-64.so.2")
        libs = f"{image}/usr/lib/x86_64-linux-gnu/systemd:{image}/usr/lib/x86_64-linux-gnu"
        with open(launcher, "w") as f:
            f.write(f"""#!/bin/sh
set -e
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
for h in unified systemd; do
    mkdir -p /sys/fs/cgroup/$h/{self.name}
    echo $$ > /sys/fs/cgroup/$h/{self.name}/cgroup.procs
done
exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 \\
    {loader} --library-path {libs} {image}/usr/bin/systemd-nspawn \\
    --directory={image} --volatile=overlay --boot --register=no --keep-unit --settings=no \\
    --link-journal=no --console=read-only --drop-capability=CAP_AUDIT_CONTROL \\
    --kill-signal=SIGRTMIN+4 --bind-ro={share}:/glint-test systemd.unit=sysbox.target
""")
        os.chmod(launcher, 0o755)
        self.console = open(os.path.join(share, "console.log"), "w")
        self.proc = subprocess.Popen(
            ["setsid", "unshare", "--mount", "--propagation", "private", "--", launcher],
            stdout=self.console, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        self.pid1 = None
        try:
            self.wait_for_boot()
        except Exception:
            self.shutdown()
            raise

    def find_pid1(self):
        """The box's PID 1: the child of nspawn whose command is systemd (nspawn forks
        helpers before it, so the first child is not always it)."""
        children = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout.split()
        for child in children:
            try:
                with open(f"/proc/{child}/comm") as f:
                    if f.read().strip() == "systemd":
                        return int(child)
            except OSError:
                continue
        return None

    def wait_for_boot(self):
        deadline = time.monotonic() + 60
        state = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("nspawn exited; see console.log")
            self.pid1 = self.find_pid1()
            if self.pid1 is not None:
                state = self.run(["systemctl", "is-system-running", "--wait"], check=False).stdout.strip()
                if state in ("running", "degraded"):
                    break
            time.sleep(0.1)
        if state == "degraded":
            log("box degraded: " + self.run(["systemctl", "--failed", "--no-legend"], check=False).stdout.strip())
        if state not in ("running", "degraded"):
            raise RuntimeError(f"the box did not boot: {state!r}")

    def run(self, argv, check=True, timeout=120):
        result = subprocess.run(
            ["nsenter", "--target", str(self.pid1), "--all", "--root", "--wd",
             "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", *argv],
            capture_output=True, text=True, timeout=timeout,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{argv} failed ({result.returncode}): {result.stdout}{result.stderr}")
        return result

    def systemctl(self, *args, check=True):
        return self.run(["timeout", SYSTEMCTL_TIMEOUT, "systemctl", *args], check=check)

    def write(self, path, text):
        result = subprocess.run(
            ["nsenter", "--target", str(self.pid1), "--all", "--root", "--wd",
             "sh", "-c", f"mkdir -p \"$(dirname '{path}')\" && cat > '{path}'"],
            input=text, capture_output=True, text=True, timeout=30,
        )
        if result.returncode != 0:
            raise RuntimeError(f"writing {path}: {result.stderr}")

    def shutdown(self):
        try:
            self.run(["systemctl", "poweroff", "--no-block"], check=False, timeout=10)
            self.proc.wait(timeout=20)
        except Exception:
            if self.pid1:
                try:
                    os.kill(self.pid1, signal.SIGRTMIN + 4)
                except ProcessLookupError:
                    pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for hierarchy in ("unified", "systemd"):
            remove_cgroup(f"/sys/fs/cgroup/{hierarchy}/{self.name}")


def boot(deb):
    """A booted Box with `deb` at /glint-test/glint.deb in it: (box, the shared directory,
    to remove after box.shutdown())."""
    image = image_dir()
    share = os.path.join(TESTBED, f"share-{os.getpid()}")
    os.makedirs(share, exist_ok=True)
    shutil.copy(deb, os.path.join(share, "glint.deb"))
    try:
        return Box(image, share), share
    except Exception:
        shutil.rmtree(share, ignore_errors=True)
        raise


def remove_cgroup(path):
    if not os.path.isdir(path):
        return
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            remove_cgroup(entry.path)
    try:
        os.rmdir(path)
    except OSError:
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Load:
    """Clients requesting continuously: keep-alive ones, and ones opening a connection per request."""

    def __init__(self, port, keepalive=4, fresh=2, pause=0.0):
        self.port = port
        self.pause = pause
        self.stop_flag = threading.Event()
        self.ok = 0
        self.errors = []
        # Connections a keep-alive client had to open again (told to close, or failed).
        self.reconnects = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.keepalive) for _ in range(keepalive)]
        self.threads += [threading.Thread(target=self.fresh) for _ in range(fresh)]
        for t in self.threads:
            t.start()

    def record(self, error=None):
        with self.lock:
            if error is None:
                self.ok += 1
            else:
                self.errors.append(error)

    def request(self, conn):
        conn.request("GET", "/versions")
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"status {response.status}")
        return response

    def keepalive(self):
        pauses = random.Random(threading.get_ident())
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self.stop_flag.is_set():
            reconnect = False
            try:
                response = self.request(conn)
                self.record()
                reconnect = response.getheader("connection", "").lower() == "close"
            except Exception as e:
                self.record(f"keep-alive: {e!r}")
                reconnect = True
            if reconnect:
                with self.lock:
                    self.reconnects += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            if self.pause:
                time.sleep(pauses.uniform(0, self.pause))

    def fresh(self):
        while not self.stop_flag.is_set():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                self.request(conn)
                self.record()
            except Exception as e:
                self.record(f"fresh: {e!r}")
            finally:
                conn.close()

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join()
        return self.ok, self.errors


class SlowWeb:
    """A web server on the host's loopback (the box shares the network) that sends `data`
    slowly, for a web-download that is still running when glint is restarted."""

    def __init__(self, data, chunk=64 * 1024, pause=0.03):
        self.data, self.chunk, self.pause = data, chunk, pause
        self.sent = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            conn, _ = self.listener.accept()
            threading.Thread(target=self.answer, args=(conn,), daemon=True).start()

    def answer(self, conn):
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                piece = conn.recv(4096)
                if not piece:
                    return
                head += piece
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n"
                             + f"Content-Length: {len(self.data)}\r\n\r\n".encode())
                for start in range(0, len(self.data), self.chunk):
                    conn.sendall(self.data[start:start + self.chunk])
                    self.sent += 1
                    time.sleep(self.pause)
            except OSError:
                return


def rest(port, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    text = response.read()
    conn.close()
    return response.status, (json.loads(text) if text else None)


def import_ended(port, image_id):
    """The image once its import is over (active or queued again, its lock gone), or as it
    stands after 60 s."""
    deadline = time.monotonic() + 60
    shown = {}
    while time.monotonic() < deadline:
        _, shown = rest(port, "GET", f"/v2/images/{image_id}")
        if shown.get("status") in ("active", "queued") and "os_glance_import_task" not in shown:
            break
        time.sleep(0.1)
    return shown


def stage(port, image_id, data):
    """PUTs `data` to the image's stage; the status."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("PUT", f"/v2/images/{image_id}/stage", body=data,
                 headers={"Content-Type": "application/octet-stream"})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status


def status_text(box, unit="glint.service"):
    return box.systemctl("show", "-P", "StatusText", unit).stdout.strip()


def get(port, path="/versions"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


def scenario(box, port, standalone_port):
    box.write("/etc/systemd/system/glint.socket.d/test-port.conf",
              f"[Socket]\nListenStream=\nListenStream=127.0.0.1:{port}\n")
    box.run(["dpkg", "-i", "/glint-test/glint.deb"])
    check(box.systemctl("is-active", "glint.socket", check=False).stdout.strip() == "active",
          "the package enabled and started glint.socket")
    check(box.systemctl("is-active", "glint.service", check=False).stdout.strip() == "inactive",
          "glint.service waits for its first connection")
    status, _ = get(port)
    check(status == 200, "the first request is answered (socket activation)")
    check(box.systemctl("is-active", "glint.service", check=False).stdout.strip() == "active",
          "the first request started glint.service")

    # Reload under keep-alive load.
    box.write("/etc/glint/conf.d/50-test.toml", '[log]\nlevel = "debug"\n')
    load = Load(port)
    reload_ok = True
    for i in range(5):
        started = time.monotonic()
        result = box.systemctl("reload", "glint", check=False)
        text = status_text(box)
        reload_ok &= result.returncode == 0 and text.startswith("serving generation")
        log(f"reload {i + 1}: exit {result.returncode} in {time.monotonic() - started:.3f}s, StatusText={text!r}")
    ok, errors = load.stop()
    check(reload_ok, "systemctl reload returns 0 after READY with the new generation in StatusText")
    check(not errors and ok > 0, f"reloads under keep-alive load: {ok} requests, {len(errors)} failed {errors[:3]}")

    # A broken config: the old generation serves, the reason is visible.
    broken = "/etc/glint/conf.d/90-broken.toml"
    box.write(broken, "[server]\nworkerz = 2\n")
    box.systemctl("reload", "glint", check=False)
    text = status_text(box)
    shown = box.systemctl("status", "glint", "--no-pager", check=False).stdout
    check(text.startswith("reload failed:") and "workerz" in text and "90-broken.toml" in text,
          f"a rejected reload names file and key in STATUS: {text!r}")
    check("workerz" in shown, "systemctl status glint shows the reason")
    ctl = box.run(["glint", "ctl", "reload"], check=False)
    check(ctl.returncode == 1 and "workerz" in ctl.stdout + ctl.stderr,
          f"glint ctl reload exits 1 with the reason: {ctl.stdout.strip()} {ctl.stderr.strip()}")
    status, _ = get(port)
    check(status == 200, "the old config still serves")
    box.run(["rm", broken])
    check(box.systemctl("reload", "glint", check=False).returncode == 0
          and status_text(box).startswith("serving generation"), "the fixed config reloads")

    # Restarts under load: the socket stays with systemd, and keep-alive connections (8,
    # pausing at random between requests so that they meet every moment of the restart) go
    # through the fd store to the next process.
    load = Load(port, keepalive=8, pause=0.25)
    for _ in range(10):
        box.systemctl("restart", "glint")
    ok, errors = load.stop()
    refused = [e for e in errors if "Refused" in e]
    check(not errors and ok > 0,
          f"10 restarts under load: {ok} requests, {len(refused)} refused, {len(errors)} failed {errors[:3]}")
    check(load.reconnects == 0,
          f"keep-alive connections survive 10 restarts: {load.reconnects} reopened")
    journal = box.run(["journalctl", "-u", "glint", "-o", "cat", "--no-pager"]).stdout
    taken_back = journal.count("took back the connections the previous process parked")
    check(taken_back >= 10, f"each new process took back the parked connections ({taken_back})")

    # An import across `systemctl restart`: the task stops at its checkpoint and the new
    # process takes it up; the image ends active with the right hashes, nothing staged left.
    box.write("/etc/glint/conf.d/60-import.toml",
              '[import.web_download]\nallowed_hosts = ["127.0.0.1"]\nallowed_ports = []\n')
    box.systemctl("reload", "glint")
    data = os.urandom(4 * 1024 * 1024)
    web = SlowWeb(data)
    status, image = rest(port, "POST", "/v2/images", {"name": "e2e-import", "disk_format": "raw",
                                                     "container_format": "bare"})
    image_id = image["id"]
    status, _ = rest(port, "POST", f"/v2/images/{image_id}/import",
                     {"method": {"name": "web-download", "uri": f"http://127.0.0.1:{web.port}/disk.raw"}})
    check(status == 202, f"import accepted: {status}")
    deadline = time.monotonic() + 30
    while web.sent < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    box.systemctl("restart", "glint")
    shown = import_ended(port, image_id)
    journal = box.run(["journalctl", "-u", "glint.service", "--no-pager"]).stdout
    _, tasks = rest(port, "GET", f"/v2/images/{image_id}/tasks")
    task = (tasks or {}).get("tasks", [{}])[0]
    staged = box.run(["ls", "-A", "/var/lib/glint/staging"], check=False).stdout.strip()
    check(shown.get("status") == "active" and shown.get("os_hash_value") == hashlib.sha512(data).hexdigest()
          and "resuming task" in journal and not staged,
          f"a web-download survives systemctl restart: {shown.get('status')}, resumed "
          f"{'resuming task' in journal}, staging {staged!r}, task {task.get('status')} {task.get('message')!r}")

    # A completed stage survives `systemctl restart`: the image stays uploading with its data,
    # and a glance-direct import afterwards makes it active, byte-exact.
    staged_data = os.urandom(1024 * 1024 + 7)
    status, image = rest(port, "POST", "/v2/images", {"name": "e2e-stage", "disk_format": "raw",
                                                     "container_format": "bare"})
    stage_id = image["id"]
    staged_status = stage(port, stage_id, staged_data)
    box.systemctl("restart", "glint")
    _, after_restart = rest(port, "GET", f"/v2/images/{stage_id}")
    rest(port, "POST", f"/v2/images/{stage_id}/import", {"method": {"name": "glance-direct"}})
    shown = import_ended(port, stage_id)
    _, downloaded = get(port, f"/v2/images/{stage_id}/file")
    check(staged_status == 204 and after_restart.get("status") == "uploading"
          and shown.get("status") == "active" and downloaded == staged_data,
          f"a completed stage survives systemctl restart and imports byte-exact: staged "
          f"{staged_status}, after restart {after_restart.get('status')}, then {shown.get('status')}")

    # The import plugins under the packaged hardening: a gzipped qcow2 is unwrapped and
    # converted to raw by qemu-img, confined in a user and network namespace of its own.
    disk = bytes(1024 * 1024) + bytes((i * 7) % 251 for i in range(3 * 1024 * 1024))
    with tempfile.TemporaryDirectory() as made:
        raw, qcow2 = os.path.join(made, "disk.raw"), os.path.join(made, "disk.qcow2")
        with open(raw, "wb") as f:
            f.write(disk)
        subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, qcow2], check=True)
        with open(qcow2, "rb") as f:
            wrapped = gzip.compress(f.read(), compresslevel=1)
    box.write("/etc/glint/conf.d/70-plugins.toml", '[import]\nplugins = ["decompress", "convert"]\n')
    box.systemctl("reload", "glint")
    status, image = rest(port, "POST", "/v2/images", {"name": "e2e-convert", "disk_format": "qcow2",
                                                     "container_format": "bare"})
    convert_id = image["id"]
    stage(port, convert_id, wrapped)
    rest(port, "POST", f"/v2/images/{convert_id}/import", {"method": {"name": "glance-direct"}})
    shown = import_ended(port, convert_id)
    _, tasks = rest(port, "GET", f"/v2/images/{convert_id}/tasks")
    task = (tasks or {}).get("tasks", [{}])[0]
    check(shown.get("status") == "active" and shown.get("disk_format") == "raw"
          and shown.get("checksum") == hashlib.md5(disk).hexdigest(),
          f"decompress + convert under the packaged unit: {shown.get('status')} "
          f"{shown.get('disk_format')}, task {task.get('status')} {task.get('message')!r}")
    box.run(["rm", "/etc/glint/conf.d/70-plugins.toml"])
    box.systemctl("reload", "glint")

    # The fd store: a glint that binds its own listener keeps it across stop/start.
    box.write("/etc/glint/standalone.toml",
              f'state_dir = "/var/lib/glint-standalone"\n[server]\nlisten = ["127.0.0.1:{standalone_port}"]\n')
    unit = box.run(["cat", "/usr/lib/systemd/system/glint.service"]).stdout
    unit = unit.replace("Requires=glint.socket\n", "").replace("After=glint.socket network.target", "After=network.target")
    unit = unit.replace("ExecStart=/usr/bin/glint serve", "ExecStart=/usr/bin/glint serve --config /etc/glint/standalone.toml")
    unit = unit.replace("StateDirectory=glint", "StateDirectory=glint-standalone").replace("RuntimeDirectory=glint", "RuntimeDirectory=glint-standalone")
    unit = unit.replace("Also=glint.socket\n", "")
    box.write("/etc/systemd/system/glint-standalone.service", unit)
    box.systemctl("daemon-reload")
    box.systemctl("enable", "--now", "glint-standalone.service")
    stored = box.run(["systemd-analyze", "fdstore", "glint-standalone.service"], check=False).stdout
    check(f"tcp-127.0.0.1_{standalone_port}" in stored, f"the bound listener is in the fd store: {stored.strip()!r}")
    box.systemctl("stop", "glint-standalone.service")
    waiting = socket.create_connection(("127.0.0.1", standalone_port), timeout=5)
    waiting.sendall(b"GET /versions HTTP/1.1\r\nHost: glint\r\nConnection: close\r\n\r\n")
    box.systemctl("start", "glint-standalone.service")
    waiting.settimeout(30)
    answer = waiting.recv(64)
    waiting.close()
    check(answer.startswith(b"HTTP/1.1 200"), "stop then start: the stored listener was kept, a connection made while stopped is answered")
    status = json.loads(box.run(["glint", "ctl", "status", "--socket", "/run/glint-standalone/control.sock"]).stdout)
    check(status["listeners"][0]["origin"] == "fd-store", "the restarted process took its listener back from the fd store")

    # Native TLS under the packaged unit: the key passed by LoadCredential= (readable by root
    # only), then rotated by reload with a key file of group glint; back to plain after.
    tls_scenario(box, port)
    upload_scenario(box, port)

    # journald fields.
    get(port, "/v2/nothing")
    journal = box.run(["journalctl", "-u", "glint.service", "-o", "json", "--no-pager"]).stdout
    entries = [json.loads(line) for line in journal.splitlines() if line.strip()]
    check(any("GENERATION" in e for e in entries), "journal entries carry GENERATION")
    check(any("REQUEST_ID" in e for e in entries), "journal entries carry REQUEST_ID")

    # Hardening.
    security = box.run(["systemd-analyze", "security", "glint.service", "--no-pager"], check=False).stdout
    line = [l for l in security.splitlines() if "Overall exposure level" in l]
    exposure = float(line[0].split(":")[1].split()[0]) if line else 99.0
    log(f"systemd-analyze security glint.service: {line[0].strip() if line else 'no figure'}")
    check(exposure <= 2.0, f"exposure {exposure} <= 2.0")
    check(box.systemctl("is-failed", "glint.service", check=False).stdout.strip() != "failed", "glint.service never failed")


def make_certificates(dir):
    """A CA and two certificates for 127.0.0.1 it signed (`first`, `second`), made by openssl."""
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=dir, check=True, capture_output=True)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=glint e2e CA")
    with open(os.path.join(dir, "ext.cnf"), "w") as f:
        f.write("subjectAltName = IP:127.0.0.1\n")
    for name in ("first", "second"):
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", "ext.cnf")


def served_certificate(port, ca):
    """The certificate glint presents on `port` (DER), after a GET /versions over TLS that
    must answer 200."""
    context = ssl.create_default_context(cafile=ca)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            der = tls.getpeercert(binary_form=True)
            tls.sendall(b"GET /versions HTTP/1.1\r\nHost: glint\r\nConnection: close\r\n\r\n")
            answer = tls.recv(64)
    if not answer.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"GET /versions over TLS: {answer!r}")
    return der


def tls_scenario(box, port):
    with tempfile.TemporaryDirectory() as made:
        make_certificates(made)
        pems = {}
        for name in ("first", "second"):
            for ext in ("pem", "key"):
                with open(os.path.join(made, f"{name}.{ext}")) as f:
                    pems[f"{name}.{ext}"] = f.read()
        der = {name: ssl.PEM_cert_to_DER_cert(pems[f"{name}.pem"]) for name in ("first", "second")}
        box.write("/etc/glint/tls/cert.pem", pems["first.pem"])
        box.write("/etc/glint/tls/root.key", pems["first.key"])
        box.run(["chmod", "600", "/etc/glint/tls/root.key"])
        box.write("/etc/systemd/system/glint.service.d/60-tls.conf",
                  "[Service]\nLoadCredential=tls.key:/etc/glint/tls/root.key\n")
        box.write("/etc/glint/conf.d/80-tls.toml",
                  '[server.tls]\ncert = "/etc/glint/tls/cert.pem"\n'
                  'key = "/run/credentials/glint.service/tls.key"\n')
        box.systemctl("daemon-reload")
        box.systemctl("restart", "glint")
        try:
            first = served_certificate(port, os.path.join(made, "ca.pem"))
        except (OSError, RuntimeError) as e:
            first = repr(e)
        check(first == der["first"], "TLS with the key from LoadCredential= (a root-only file) under "
              f"the packaged unit: the configured certificate is served ({'yes' if first == der['first'] else first})")

        # Rotation by reload: new files under the same names, the key readable by group glint.
        box.write("/etc/glint/tls/cert.pem", pems["second.pem"])
        box.write("/etc/glint/tls/glint.key", pems["second.key"])
        box.run(["chmod", "640", "/etc/glint/tls/glint.key"])
        box.run(["chgrp", "glint", "/etc/glint/tls/glint.key"])
        box.write("/etc/glint/conf.d/80-tls.toml",
                  '[server.tls]\ncert = "/etc/glint/tls/cert.pem"\nkey = "/etc/glint/tls/glint.key"\n')
        reloaded = box.systemctl("reload", "glint", check=False).returncode
        text = status_text(box)
        try:
            second = served_certificate(port, os.path.join(made, "ca.pem"))
        except (OSError, RuntimeError) as e:
            second = repr(e)
        check(reloaded == 0 and text.startswith("serving generation") and second == der["second"],
              f"systemctl reload rotates the certificate: exit {reloaded}, {text!r}, "
              f"new certificate served: {'yes' if second == der['second'] else second}")

        box.run(["rm", "-r", "/etc/glint/conf.d/80-tls.toml", "/etc/glint/tls",
                 "/etc/systemd/system/glint.service.d/60-tls.conf"])
        box.systemctl("daemon-reload")
        box.systemctl("restart", "glint")
        status, _ = get(port)
        check(status == 200, "plain HTTP again once [server.tls] is gone")


def upload_scenario(box, port, mib=2048, rate_mib=200):
    """An upload of `mib` MiB sent at `rate_mib` MiB/s across 3 `systemctl restart`s with
    server.handover_transfers: one request, answered 204, and the image's checksums are
    those of the bytes sent."""
    box.write("/etc/glint/conf.d/70-transfers.toml", "[server]\nhandover_transfers = true\n")
    box.systemctl("reload", "glint")
    _, image = rest(port, "POST", "/v2/images", {"disk_format": "raw", "container_format": "bare"})
    image_id = image["id"]
    chunk = random.Random(17).randbytes(1 << 20)
    outcome = {}

    def client():
        md5, sha512 = hashlib.md5(), hashlib.sha512()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
                s.sendall((f"PUT /v2/images/{image_id}/file HTTP/1.1\r\nHost: e2e\r\n"
                           f"Content-Type: application/octet-stream\r\n"
                           f"Content-Length: {mib << 20}\r\n\r\n").encode())
                started = time.monotonic()
                for n in range(mib):
                    s.sendall(chunk)
                    md5.update(chunk)
                    sha512.update(chunk)
                    ahead = (n + 1) / rate_mib - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
                answer = b""
                while b"\r\n\r\n" not in answer:
                    got = s.recv(4096)
                    if not got:
                        break
                    answer += got
                outcome["answer"] = answer.split(b"\r\n", 1)[0].decode("latin-1")
        except OSError as e:
            outcome["answer"] = repr(e)
        outcome["md5"], outcome["sha512"] = md5.hexdigest(), sha512.hexdigest()

    def written():
        sizes = box.run(["sh", "-c", "stat -c %s /var/lib/glint/images/.upload-* 2>/dev/null"],
                        check=False).stdout.split()
        return int(sizes[0]) if sizes else 0

    thread = threading.Thread(target=client)
    thread.start()
    marks = []
    for n in range(3):
        # Each restart once a further sixth of the data is in the temporary file.
        want = (n + 1) * (mib << 20) // 6
        deadline = time.monotonic() + 120
        while written() < want and time.monotonic() < deadline:
            time.sleep(0.05)
        marks.append(written())
        box.systemctl("restart", "glint")
    thread.join(timeout=600)
    _, shown = rest(port, "GET", f"/v2/images/{image_id}")
    journal = box.run(["journalctl", "-u", "glint", "-o", "cat", "--no-pager"]).stdout
    paused = journal.count("upload handed to the next process")
    resumed = journal.count("carrying on an upload the previous process handed over")
    check(outcome.get("answer", "").startswith("HTTP/1.1 204") and shown.get("status") == "active"
          and shown.get("size") == mib << 20 and shown.get("checksum") == outcome.get("md5")
          and shown.get("os_hash_value") == outcome.get("sha512") and paused == 3 and resumed == 3,
          f"a {mib} MiB upload at {rate_mib} MiB/s across 3 systemctl restarts (at {marks} bytes "
          f"written): {outcome.get('answer')!r}, image {shown.get('status')} of {shown.get('size')} "
          f"bytes, md5 {'matches' if shown.get('checksum') == outcome.get('md5') else 'differs'}, "
          f"sha512 {'matches' if shown.get('os_hash_value') == outcome.get('sha512') else 'differs'}, "
          f"paused {paused}, carried on {resumed}")
    rest(port, "DELETE", f"/v2/images/{image_id}")
    box.run(["rm", "/etc/glint/conf.d/70-transfers.toml"])
    box.systemctl("reload", "glint")


def main():
    if os.geteuid() != 0:
        print("e2e: SKIPPED: the systemd end-to-end test needs root (it boots systemd in a namespace)")
        return 0
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    box, share = boot(os.path.abspath(sys.argv[1]))
    try:
        scenario(box, free_port(), free_port())
    except Exception as e:
        FAILURES.append(f"aborted: {e}")
        log(f"FAIL: aborted: {e}")
        log(box.run(["journalctl", "-u", "glint*", "--no-pager", "-n", "60"], check=False).stdout)
    finally:
        box.shutdown()
        shutil.rmtree(share, ignore_errors=True)
    if FAILURES:
        log(f"{len(FAILURES)} failure(s)")
        return 1
    log("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
