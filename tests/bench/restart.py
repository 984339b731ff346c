#!/usr/bin/env python3
"""Benchmarks of #17, printed as a table (kept in docs/benchmarks.md), in one run:
  - a restart with N idle keep-alive connections (1,000 by default), handed over through the
    fd store (server.handover_connections = 4096) vs closed (= 0): SIGTERM -> exit, exit ->
    READY, SIGTERM -> the first answer to a request sent on a new connection, SIGTERM -> the
    answer to a request each idle client sends right after the SIGTERM (p50 / max), and how
    many clients kept their connection;
  - TLS (server.tls, a P-256 certificate): handshakes per second (wrk, a new connection per
    request) and GET /versions over TLS vs plain on keep-alive connections;
  - an upload of --upload-mib MiB sent as fast as the client can, with a restart half-way
    handed over (server.handover_transfers = true) against the same upload without a
    restart: the whole upload's time, the longest the client's sends stalled, and the
    restart's own figures.

It plays systemd: it holds the listening socket (as glint.socket would), reads NOTIFY_SOCKET
with the fds sent along (FDSTORE=1, FDSTOREREMOVE=1) and passes the store back to the next
process (LISTEN_FDS / LISTEN_FDNAMES).

Usage: tests/bench/restart.py [--connections 1000] [--duration 5]   (needs wrk, openssl;
builds --release)
"""

import argparse
import fcntl
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from bench import ROOT, wrk  # noqa: E402


def build():
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "glint"], cwd=ROOT, check=True)
    return os.path.join(ROOT, "target/release/glint")


class Systemd:
    """A socket unit's listening socket, NOTIFY_SOCKET with the fd store, and glint started on
    them again and again."""

    def __init__(self, binary, workdir, config, listeners=("api",)):
        self.binary, self.workdir = binary, workdir
        self.listeners = {}
        for name in listeners:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(4096)
            self.listeners[name] = sock
        self.ports = {name: sock.getsockname()[1] for name, sock in self.listeners.items()}
        self.port = self.ports[listeners[0]]
        self.notify_path = os.path.join(workdir, "notify.sock")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.notify.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.store = {}  # name -> fd
        self.config = os.path.join(workdir, "glint.toml")
        with open(self.config, "w") as f:
            # Under socket activation server.listen is a placeholder: glint serves what it
            # is passed.
            f.write(f'[server]\nlisten = ["127.0.0.1:1"]\n{config}\n[log]\nlevel = "warn"\n')
        self.proc = None

    def receive(self, timeout):
        """One notification: its fields and the fds that came with it (applied to the store)."""
        self.notify.settimeout(timeout)
        data, fds, _, _ = socket.recv_fds(self.notify, 8192, 16)
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        name = fields.get("FDNAME", "stored")
        if fields.get("FDSTORE") == "1":
            for fd in fds:
                old = self.store.pop(name, None)
                if old is not None:
                    os.close(old)
                self.store[name] = fd
        else:
            for fd in fds:
                os.close(fd)
        if fields.get("FDSTOREREMOVE") == "1":
            old = self.store.pop(name, None)
            if old is not None:
                os.close(old)
        return fields

    def wait_for(self, key, value, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            fields = self.receive(max(0.01, deadline - time.monotonic()))
            if fields.get(key) == value:
                return fields

    def start(self):
        names = [*self.listeners, *self.store]
        fds = [sock.fileno() for sock in self.listeners.values()] + list(self.store.values())
        # Out of the way of 3, 4, ... first, then placed there in the child.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3 + len(fds)) for fd in fds]

        def place():
            for i, fd in enumerate(high):
                os.dup2(fd, 3 + i)

        env = dict(os.environ, NOTIFY_SOCKET=self.notify_path, FDSTORE="4352", LISTEN_FDS=str(len(fds)),
                   LISTEN_FDNAMES=":".join(names), STATE_DIRECTORY=os.path.join(self.workdir, "state"))
        env.pop("JOURNAL_STREAM", None)
        self.proc = subprocess.Popen(
            ["sh", "-c", 'LISTEN_PID=$$ exec "$0" serve --config "$1"', self.binary, self.config],
            env=env, preexec_fn=place, close_fds=False, stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.workdir, "glint.log"), "a"))
        for fd in high:
            os.close(fd)
        self.wait_for("READY", "1")

    def stop_signal(self):
        self.proc.send_signal(signal.SIGTERM)

    def exited(self):
        """Waits for the exit, reading notifications meanwhile (a stop parking more
        connections than the socket's queue holds would block otherwise, as systemd reads
        as they come), then takes every notification it sent (the fds it parked)."""
        deadline = time.monotonic() + 120
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError("glint did not exit within 120 s of SIGTERM")
            try:
                self.receive(0.05)
            except TimeoutError:
                pass
        marker = f"HARNESS_EXITED={time.monotonic_ns()}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(marker.encode(), self.notify_path)
        key, value = marker.split("=")
        self.wait_for(key, value)

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for fd in self.store.values():
            os.close(fd)
        self.notify.close()
        for sock in self.listeners.values():
            sock.close()


REQUEST = b"GET /versions HTTP/1.1\r\nHost: bench\r\n\r\n"


def read_response(sock):
    """Reads one response; returns (status, closes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        body += chunk
    return status, headers.get("connection", "").lower() == "close"


def restart(binary, connections, handover, send_at_stop):
    """One restart with `connections` idle keep-alive clients; with `send_at_stop` each sends
    its next request right after the SIGTERM, else only once the new process is ready."""
    with tempfile.TemporaryDirectory() as d:
        sd = Systemd(binary, d, f"handover_connections = {handover}")
        try:
            sd.start()
            clients = []
            for _ in range(connections):
                s = socket.create_connection(("127.0.0.1", sd.port))
                s.sendall(REQUEST)
                read_response(s)
                clients.append(s)
            t0 = time.monotonic()
            sd.stop_signal()
            # Every idle client sends its next request now: answered by whichever process.
            answered, kept = [], 0
            lock = threading.Lock()

            def client(s):
                nonlocal kept
                try:
                    s.sendall(REQUEST)
                    status, closes = read_response(s)
                    with lock:
                        answered.append(time.monotonic() - t0)
                        if status == 200 and not closes:
                            kept += 1
                except OSError:
                    pass

            threads = [threading.Thread(target=client, args=(s,)) for s in clients]
            if send_at_stop:
                for t in threads:
                    t.start()
            sd.exited()
            exit_after = time.monotonic() - t0
            sd.start()
            ready_after = time.monotonic() - t0
            fresh = socket.create_connection(("127.0.0.1", sd.port))
            fresh.sendall(REQUEST)
            read_response(fresh)
            first_after = time.monotonic() - t0
            fresh.close()
            if not send_at_stop:
                for t in threads:
                    t.start()
            for t in threads:
                t.join(timeout=30)
            # A client whose connection was closed (at once, or after its answer said so) has
            # to open a new one: counted as not kept.
            for s in clients:
                s.close()
            sd.stop_signal()
            sd.exited()
            return {
                "exit": exit_after, "ready": ready_after, "first": first_after,
                "answered": len(answered), "kept": kept,
                "p50": statistics.median(answered) if answered else float("nan"),
                "max": max(answered) if answered else float("nan"),
            }
        finally:
            sd.close()


def request(port, method, path, body=b"", headers=()):
    """One request on a new connection; returns (status, body)."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers)
        s.sendall(head.encode() + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        fields = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        while len(rest) < int(fields.get("content-length", "0")):
            rest += s.recv(65536)
        return int(lines[0].split()[1]), rest


def upload(binary, mib, restart_at_half):
    """An upload of `mib` MiB as fast as the client sends; with `restart_at_half`, a restart
    once half of it is in the store's temporary file."""
    import hashlib
    import json
    chunk = os.urandom(1 << 20)
    with tempfile.TemporaryDirectory() as d:
        sd = Systemd(binary, d, "handover_transfers = true")
        try:
            sd.start()
            status, body = request(sd.port, "POST", "/v2/images",
                                   json.dumps({"disk_format": "raw", "container_format": "bare"}).encode(),
                                   [("Content-Type", "application/json")])
            image = json.loads(body)["id"]
            sent_at, outcome = [], {}
            md5 = hashlib.md5()

            def client():
                with socket.create_connection(("127.0.0.1", sd.port)) as s:
                    s.sendall((f"PUT /v2/images/{image}/file HTTP/1.1\r\nHost: bench\r\n"
                               f"Content-Type: application/octet-stream\r\n"
                               f"Content-Length: {mib << 20}\r\n\r\n").encode())
                    for _ in range(mib):
                        s.sendall(chunk)
                        md5.update(chunk)
                        sent_at.append(time.monotonic())
                    outcome["status"], _ = read_response(s)
                    outcome["done"] = time.monotonic()

            images = os.path.join(d, "state", "images")
            t0 = time.monotonic()
            thread = threading.Thread(target=client)
            thread.start()
            restart = {}
            if restart_at_half:
                while True:
                    temps = [n for n in os.listdir(images) if n.startswith(".upload-")] if os.path.isdir(images) else []
                    if temps and os.path.getsize(os.path.join(images, temps[0])) >= (mib << 19):
                        break
                    time.sleep(0.005)
                stop = time.monotonic()
                sd.stop_signal()
                sd.exited()
                restart["exit"] = time.monotonic() - stop
                sd.start()
                restart["ready"] = time.monotonic() - stop
            thread.join()
            gaps = [b - a for a, b in zip(sent_at, sent_at[1:])]
            status, body = request(sd.port, "GET", f"/v2/images/{image}")
            shown = json.loads(body)
            sd.stop_signal()
            sd.exited()
            return {
                "status": outcome.get("status"), "seconds": outcome["done"] - t0,
                "stall": max(gaps) if gaps else 0.0, "active": shown["status"] == "active",
                "exact": shown["checksum"] == md5.hexdigest(), **restart,
            }
        finally:
            sd.close()


def make_certificate(d):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", os.path.join(d, "key.pem"), "-out", os.path.join(d, "cert.pem"),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)


def tls(binary, duration):
    """glint passed two sockets, `tls` (with server.tls) and `plain`, driven alternately."""
    with tempfile.TemporaryDirectory() as d:
        make_certificate(d)
        config = (f'[server.tls]\ncert = "{d}/cert.pem"\nkey = "{d}/key.pem"\n'
                  'listeners = ["tls"]\n')
        sd = Systemd(binary, d, config, listeners=("tls", "plain"))
        try:
            sd.start()
            secure = f"https://127.0.0.1:{sd.ports['tls']}/versions"
            results = {"plain": [], "tls": []}
            for _ in range(2):
                results["plain"].append(wrk(sd.ports["plain"], duration)["rps"])
                results["tls"].append(wrk_url(secure, duration))
            results["handshakes"] = wrk_url(secure, duration, extra=["-H", "Connection: close"])
            sd.stop_signal()
            sd.exited()
            return results
        finally:
            sd.close()


def wrk_url(url, duration, extra=()):
    out = subprocess.run(["wrk", "-t2", "-c16", f"-d{duration}s", *extra, url],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise RuntimeError(out)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--upload-mib", type=int, default=1024)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    binary = build()
    print(f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, release build, log.level=warn")
    print(f"\n## restart with {args.connections} idle keep-alive connections")
    print("| connections | their clients send | SIGTERM -> exit | SIGTERM -> READY | "
          "SIGTERM -> new connection answered | clients' next request answered, after SIGTERM "
          "(p50 / max) | answered | on the same connection |")
    print("|---|---|---|---|---|---|---|---|")
    for send_at_stop in (False, True):
        when = "right after SIGTERM" if send_at_stop else "once the new process is ready"
        for label, handover in (("handed over", 4096), ("closed", 0)):
            r = restart(binary, args.connections, handover, send_at_stop)
            latency = (f"{r['p50']:.3f} / {r['max']:.3f} s" if r["answered"]
                       else "none: every connection was closed")
            print(f"| {label} | {when} | {r['exit']:.3f} s | {r['ready']:.3f} s | "
                  f"{r['first']:.3f} s | {latency} | {r['answered']} | {r['kept']} |")
    r = tls(binary, args.duration)
    plain, secure = statistics.median(r["plain"]), statistics.median(r["tls"])
    print("\n## TLS (P-256, TLS 1.3, wrk -t2 -c16)")
    print("| | req/s |")
    print("|---|---|")
    print(f"| GET /versions, plain, keep-alive (median of {len(r['plain'])}) | {plain:,.0f} |")
    print(f"| GET /versions, TLS, keep-alive (median of {len(r['tls'])}) | {secure:,.0f} ({secure / plain:.2f} of plain) |")
    print(f"| TLS handshakes (a new connection per request) | {r['handshakes']:,.0f} |")
    print(f"\n## an upload of {args.upload_mib} MiB, the client sending as fast as it can")
    print("| | answer | whole upload | MiB/s | longest stall of the client's sends | SIGTERM -> exit | "
          "SIGTERM -> READY | image active, checksum of the bytes sent |")
    print("|---|---|---|---|---|---|---|---|")
    for label, restart_at_half in (("no restart", False), ("restarted half-way, handed over", True)):
        r = upload(binary, args.upload_mib, restart_at_half)
        print(f"| {label} | {r['status']} | {r['seconds']:.2f} s | {args.upload_mib / r['seconds']:,.0f} | "
              f"{r['stall']:.3f} s | {r.get('exit', float('nan')):.3f} s | {r.get('ready', float('nan')):.3f} s | "
              f"{r['active'] and r['exact']} |")


if __name__ == "__main__":
    main()
