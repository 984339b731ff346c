#!/usr/bin/env python3
"""Benchmarks of the lifecycle core, printed as a table (kept in docs/benchmarks.md).

Plays systemd's notify side (NOTIFY_SOCKET) to time READY and reloads, drives load with wrk,
and measures in one run, so ratios compare like with like:
  - req/s on GET /versions, glint vs bare hyper (tests/bench/bare_hyper.rs), once and as the
    median of alternating pairs (bound >= 0.75)
  - GET /v2/images (25 of 100 and of 100,000) and GET /v2/images/{id}, each against a bare
    hyper run next to it (bound >= 0.08); POST /v2/images with tags and properties
  - start -> READY and start -> first 2xx
  - SIGHUP -> READY (p50 / max over many reloads)
  - latency p50/p99/max with and without a reload storm (10 reloads/s), and errors
  - RSS idle and under load; idle RSS split into anonymous and mapped-file pages (bound 15
    MiB) and per idle keep-alive connection over 10,000 (bound 16 KiB)
Every figure with a bound is printed next to it, "met" or "NOT met".

Usage: tests/bench/bench.py [--duration 10] [--workers 2] [--rounds 5]   (needs wrk; builds --release)
"""

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def random_image(path, mib):
    """`mib` MiB of random bytes at `path`, without an MBR signature at byte 510 (so the
    inspector takes them as plain raw data, as a real raw disk of that size would be)."""
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
        f.seek(510)
        f.write(b"\0\0")
    return path


def build():
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "--bin", "glint", "--example", "bare_hyper"],
        cwd=ROOT,
        check=True,
    )
    return (
        os.path.join(ROOT, "target/release/glint"),
        os.path.join(ROOT, "target/release/examples/bare_hyper"),
    )


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Glint:
    """glint under a fake NOTIFY_SOCKET."""

    def __init__(self, binary, workdir, port, workers, level):
        self.notify_path = os.path.join(workdir, "notify.sock")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.config = os.path.join(workdir, "glint.toml")
        self.port = port
        self.workers = workers
        self.level = level
        self.write_config(8)
        env = dict(os.environ, NOTIFY_SOCKET=self.notify_path, STATE_DIRECTORY=os.path.join(workdir, "state"))
        for key in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "JOURNAL_STREAM"):
            env.pop(key, None)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [binary, "serve", "--config", self.config],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(workdir, "glint.log"), "w"),
        )
        self.wait_for("READY=1")
        self.ready_after = time.monotonic() - self.started

    def write_config(self, max_draining):
        with open(self.config, "w") as f:
            f.write(
                f'[server]\nlisten = ["127.0.0.1:{self.port}"]\nworkers = {self.workers}\n'
                f'max_draining_generations = {max_draining}\n[log]\nlevel = "{self.level}"\n'
            )

    def wait_for(self, line, timeout=10):
        self.notify.settimeout(timeout)
        while True:
            msg = self.notify.recv(4096).decode()
            if line in msg.splitlines():
                return msg

    def reload(self):
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGHUP)
        self.wait_for("RELOADING=1")
        self.wait_for("READY=1")
        return time.monotonic() - t0

    def rss_kib(self, field="VmRSS"):
        """VmRSS, or RssAnon (the process's own memory) / RssFile (mapped file pages: the
        binary's code, which the page cache may map in large folios)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        self.notify.close()
        os.unlink(self.notify_path)


def first_2xx_after_start(binary, port, workers):
    with tempfile.TemporaryDirectory() as d:
        config = os.path.join(d, "glint.toml")
        with open(config, "w") as f:
            f.write(f'[server]\nlisten = ["127.0.0.1:{port}"]\nworkers = {workers}\n[log]\nlevel = "warn"\n')
        env = dict(os.environ, STATE_DIRECTORY=os.path.join(d, "state"))
        env.pop("NOTIFY_SOCKET", None)
        t0 = time.monotonic()
        proc = subprocess.Popen([binary, "serve", "--config", config], env=env, stderr=subprocess.DEVNULL)
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/versions", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.001)
        elapsed = time.monotonic() - t0
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        return elapsed


def wrk(port, duration, connections=16, path="/versions", script=None):
    extra = ["-s", script] if script else []
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", *extra, f"http://127.0.0.1:{port}{path}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def latency(label):
        m = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    maximum = re.search(r"Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out)
    max_ms = float(maximum.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[maximum.group(2)]
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_errors = sum(int(x) for x in errors.groups()) if errors else 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50": latency("50%"),
        "p99": latency("99%"),
        "max": max_ms,
        "errors": socket_errors + (int(non2xx.group(1)) if non2xx else 0),
    }


def seed(db_path, count):
    """Adds `count` images straight into the catalogue (the schema exists: glint made it)."""
    import sqlite3
    import uuid

    con = sqlite3.connect(db_path)
    # Times are microseconds since the epoch; a millisecond apart.
    now = int(time.time() * 1_000_000)
    rows = [
        (str(uuid.uuid4()), f"seed-{i}", "active", "public", now - (count - i) * 1000, now - (count - i) * 1000)
        for i in range(count)
    ]
    con.executemany(
        "INSERT INTO images (id, name, status, visibility, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    con.executemany(
        "INSERT INTO image_properties (image_id, name, value) VALUES (?, 'os_distro', 'debian')",
        [(r[0],) for r in rows],
    )
    con.commit()
    con.close()


def catalogue(binary, workers, duration, level, bare):
    """GET /v2/images (25 per page) at 100 and 100,000 images and GET /v2/images/{id}, each
    next to a bare hyper run right before it (`bare()`: its req/s), and POST /v2/images with
    tags and properties."""
    results = {}
    for count in (100, 100_000):
        with tempfile.TemporaryDirectory() as workdir:
            g = Glint(binary, workdir, free_port(), workers, level)
            g.stop()
            seed(os.path.join(workdir, "state", "glint.db"), count)
            g = Glint(binary, workdir, g.port, workers, level)
            paths = {"list": "/v2/images"}
            if count == 100:
                with urllib.request.urlopen(f"http://127.0.0.1:{g.port}/v2/images?limit=1") as r:
                    paths["show"] = "/v2/images/" + json.load(r)["images"][0]["id"]
            for kind, path in paths.items():
                bound = bare()
                results[(kind, count)] = dict(wrk(g.port, duration, path=path), bare=bound)
            g.stop()
    with tempfile.TemporaryDirectory() as workdir:
        script = os.path.join(workdir, "post.lua")
        with open(script, "w") as f:
            f.write('wrk.method = "POST"\nwrk.body = \'{"name": "bench", "os_distro": "debian", '
                    '"tags": ["a", "b", "c", "d"], "os_version": "12", "hw_disk_bus": "virtio", '
                    '"hw_vif_model": "virtio"}\'\n'
                    'wrk.headers["Content-Type"] = "application/json"\n')
        g = Glint(binary, workdir, free_port(), workers, level)
        results["post"] = wrk(g.port, duration, path="/v2/images", script=script)
        g.stop()
    return results


def versions_ratio(binary, workers, level, rounds, duration, bare):
    """GET /versions against bare hyper, alternating in `rounds` pairs (this machine's
    throughput drifts by a third between runs): the median of the pairs' ratios."""
    with tempfile.TemporaryDirectory() as workdir:
        g = Glint(binary, workdir, free_port(), workers, level)
        pairs = []
        for _ in range(rounds):
            bound = bare()
            pairs.append((wrk(g.port, duration)["rps"], bound))
        g.stop()
    ratios = sorted(glint / bound for glint, bound in pairs)
    return ratios[len(ratios) // 2], pairs


def metadefs(binary, workers, duration, level):
    """GET /v2/metadefs/namespaces?limit=100 over 100 namespaces, each associated with two
    resource types (the list answers with every namespace's associations from two queries,
    not one per namespace), and GET /v2/images (25 of 100) beside it in the same run."""

    with tempfile.TemporaryDirectory() as workdir:
        g = Glint(binary, workdir, free_port(), workers, level)
        base = f"http://127.0.0.1:{g.port}"

        def post(path, body):
            request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request) as r:
                r.read()

        for i in range(100):
            post("/v2/metadefs/namespaces", {
                "namespace": f"OS::Bench::N{i:03}", "visibility": "public",
                "resource_type_associations": [{"name": "OS::Glance::Image", "prefix": "b_"},
                                               {"name": "OS::Nova::Flavor", "prefix": "b:"}],
                "properties": {"p": {"title": "P", "type": "string"}}})
            post("/v2/images", {"name": f"bench-{i}"})
        listed = wrk(g.port, duration, path="/v2/metadefs/namespaces?limit=100")
        images = wrk(g.port, duration, path="/v2/images")
        g.stop()
    return listed, images


def idle_connections(binary, workers, level, count):
    """RSS of an idle glint, and its growth per idle keep-alive connection once `count`
    clients have each made one request and stay connected (the bound: 16 KiB each)."""
    with tempfile.TemporaryDirectory() as workdir:
        g = Glint(binary, workdir, free_port(), workers, level)
        time.sleep(0.5)
        idle = g.rss_kib()
        idle_anon, idle_file = g.rss_kib("RssAnon"), g.rss_kib("RssFile")
        clients = []
        try:
            for _ in range(count):
                client = socket.create_connection(("127.0.0.1", g.port))
                client.sendall(b"GET /versions HTTP/1.1\r\nHost: bench\r\n\r\n")
                reply = b""
                while b"\r\n\r\n" not in reply:
                    reply += client.recv(65536)
                head, _, body = reply.partition(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
                while len(body) < length:
                    body += client.recv(65536)
                clients.append(client)
            time.sleep(1)
            loaded = g.rss_kib()
        finally:
            for client in clients:
                client.close()
            g.stop()
    return idle, (loaded - idle) / count, idle_anon, idle_file


def data_path(binary, workers, level, size_mib):
    """Upload (Content-Length and chunked) against sha512sum of the same file, download
    against nginx serving it with sendfile when nginx is installed, peak RSS."""
    import shutil

    results = {}
    with tempfile.TemporaryDirectory(dir="/var/tmp") as workdir:
        blob = os.path.join(workdir, "blob")
        with open(blob, "wb") as f:
            for _ in range(size_mib):
                f.write(os.urandom(1 << 20))
        subprocess.run(["cat", blob], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
        t0 = time.monotonic()
        subprocess.run(["sha512sum", blob], stdout=subprocess.DEVNULL, check=True)
        results["sha512sum"] = size_mib / (time.monotonic() - t0)

        g = Glint(binary, workdir, free_port(), workers, level)
        base = f"http://127.0.0.1:{g.port}"

        def create():
            out = subprocess.run(["curl", "-s", "-X", "POST", f"{base}/v2/images", "-H", "Content-Type: application/json",
                                  "-d", '{"disk_format": "raw", "container_format": "bare"}'],
                                 capture_output=True, text=True, check=True).stdout
            import json
            return json.loads(out)["id"]

        for kind, extra in (("upload, Content-Length", ["--data-binary", f"@{blob}"]),
                            ("upload, chunked", ["-H", "Transfer-Encoding: chunked", "-T", blob])):
            image = create()
            t0 = time.monotonic()
            code = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT",
                                   "-H", "Content-Type: application/octet-stream", *extra,
                                   f"{base}/v2/images/{image}/file"], capture_output=True, text=True).stdout
            results[kind] = (size_mib / (time.monotonic() - t0), code)
        t0 = time.monotonic()
        fetched = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                                  f"{base}/v2/images/{image}/file"], capture_output=True, text=True, check=True).stdout
        results["download"] = size_mib / (time.monotonic() - t0)
        if fetched != f"200 {size_mib << 20}":
            raise RuntimeError(f"glint download: {fetched}")
        results["peak_rss"] = 0
        with open(f"/proc/{g.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    results["peak_rss"] = int(line.split()[1]) / 1024
        g.stop()

        if shutil.which("nginx"):
            port = free_port()
            conf = os.path.join(workdir, "nginx.conf")
            with open(conf, "w") as f:
                # Workers as root: the benchmark's temporary directory is private to root.
                f.write(f"daemon off; user root; worker_processes 2; pid {workdir}/nginx.pid; error_log {workdir}/nginx.err;\n"
                        f"events {{}} http {{ access_log off; sendfile on; server {{ listen 127.0.0.1:{port};"
                        f" root {workdir}; }} }}\n")
            nginx = subprocess.Popen(["nginx", "-c", conf], stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            t0 = time.monotonic()
            fetched = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                                      f"http://127.0.0.1:{port}/blob"], capture_output=True, text=True, check=True).stdout
            elapsed = time.monotonic() - t0
            if fetched == f"200 {size_mib << 20}":
                results["nginx"] = size_mib / elapsed
            nginx.terminate()
            nginx.wait()
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reloads", type=int, default=200)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--data-mib", type=int, default=512)
    parser.add_argument("--idle-connections", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5, help="GET /versions pairs with bare hyper")
    args = parser.parse_args()
    glint_bin, bare_bin = build()
    print(f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, workers={args.workers}, log.level={args.log_level}, wrk -t2 -c16 -d{args.duration}s")

    bare_port = free_port()
    bare = subprocess.Popen([bare_bin, f"127.0.0.1:{bare_port}", str(args.workers)])
    time.sleep(0.3)
    bare_result = wrk(bare_port, args.duration)

    def bare_rps():
        return wrk(bare_port, args.duration)["rps"]

    ratio, pairs = versions_ratio(glint_bin, args.workers, args.log_level, args.rounds,
                                  max(2, args.duration // 2),
                                  lambda: wrk(bare_port, max(2, args.duration // 2))["rps"])

    first = min(first_2xx_after_start(glint_bin, free_port(), args.workers) for _ in range(5))

    with tempfile.TemporaryDirectory() as workdir:
        g = Glint(glint_bin, workdir, free_port(), args.workers, args.log_level)
        time.sleep(0.5)
        rss_idle = g.rss_kib()
        calm = wrk(g.port, args.duration)
        rss_load = g.rss_kib()

        reload_times = sorted(g.reload() for _ in range(args.reloads))

        stop = threading.Event()
        storm_count = [0]

        def storm():
            while not stop.is_set():
                t0 = time.monotonic()
                g.write_config(8 + storm_count[0] % 2)
                g.reload()
                storm_count[0] += 1
                time.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))

        t = threading.Thread(target=storm)
        t.start()
        stormy = wrk(g.port, args.duration)
        stop.set()
        t.join()
        g.stop()
        ready = g.ready_after

    rss_quiet, per_connection, rss_anon, rss_file = idle_connections(
        glint_bin, args.workers, args.log_level, args.idle_connections)
    cat = catalogue(glint_bin, args.workers, args.duration, args.log_level, bare_rps)
    bare.terminate()
    bare.wait()
    namespaces, images_beside = metadefs(glint_bin, args.workers, args.duration, args.log_level)
    data = data_path(glint_bin, args.workers, args.log_level, args.data_mib)

    def row(name, value):
        print(f"| {name} | {value} |")

    print("| what | glint |")
    print("|---|---|")
    def met(ok):
        return "met" if ok else "NOT met"

    row("GET /versions req/s (bare hyper, same run)", f"{calm['rps']:,.0f} ({bare_result['rps']:,.0f}; ratio {calm['rps'] / bare_result['rps']:.2f})")
    row(f"GET /versions / bare hyper, median of {args.rounds} alternating pairs (bound ≥ 0.75)",
        f"{ratio:.2f} ({met(ratio >= 0.75)}; pairs: " + ", ".join(f"{g:,.0f}/{b:,.0f}" for g, b in pairs) + ")")
    row("start → READY", f"{ready * 1000:.1f} ms")
    row("start → first 2xx (best of 5)", f"{first * 1000:.1f} ms")
    row(f"SIGHUP → READY, {args.reloads} reloads: p50 / max", f"{reload_times[len(reload_times) // 2] * 1000:.2f} ms / {reload_times[-1] * 1000:.2f} ms")
    row("latency p50 / p99 / max, no reloads", f"{calm['p50']:.2f} / {calm['p99']:.2f} / {calm['max']:.2f} ms")
    row(f"latency p50 / p99 / max, {storm_count[0]} reloads at 10/s", f"{stormy['p50']:.2f} / {stormy['p99']:.2f} / {stormy['max']:.2f} ms")
    row("req/s during the reload storm", f"{stormy['rps']:,.0f}")
    row("failed requests (socket errors + non-2xx), calm / storm", f"{calm['errors']} / {stormy['errors']}")
    row("RSS idle / after load", f"{rss_idle / 1024:.1f} MiB / {rss_load / 1024:.1f} MiB")
    row("RSS idle (bound 15 MiB): anonymous + mapped files",
        f"{rss_quiet / 1024:.1f} MiB ({met(rss_quiet <= 15 * 1024)}): {rss_anon / 1024:.1f} + {rss_file / 1024:.1f} MiB")
    row(f"RSS per idle keep-alive connection, {args.idle_connections:,} of them (bound 16 KiB)",
        f"{per_connection:.1f} KiB ({met(per_connection <= 16)})")
    for (kind, count), r in ((k, v) for k, v in cat.items() if k != "post"):
        what = f"GET /v2/images (25 of {count:,})" if kind == "list" else f"GET /v2/images/{{id}} ({count:,} images)"
        share = r["rps"] / r["bare"]
        row(f"{what} req/s, p50 / p99; / bare hyper next to it (bound ≥ 0.08)",
            f"{r['rps']:,.0f}, {r['p50']:.2f} / {r['p99']:.2f} ms ({r['errors']} failed); "
            f"{share:.3f} of {r['bare']:,.0f} ({met(share >= 0.08)})")
    row("GET /v2/metadefs/namespaces (100 of 100, 2 resource types each) req/s, p50 / p99",
        f"{namespaces['rps']:,.0f}, {namespaces['p50']:.2f} / {namespaces['p99']:.2f} ms ({namespaces['errors']} failed; "
        f"GET /v2/images, 25 of 100, same run: {images_beside['rps']:,.0f})")
    r = cat["post"]
    row("POST /v2/images (4 tags, 4 properties) req/s, p50 / p99", f"{r['rps']:,.0f}, {r['p50']:.2f} / {r['p99']:.2f} ms ({r['errors']} failed)")
    bound = data["sha512sum"]
    row(f"sha512sum of the same {args.data_mib} MiB (the hash bound)", f"{bound:,.0f} MiB/s")
    for kind in ("upload, Content-Length", "upload, chunked"):
        rate, code = data[kind]
        row(f"{kind} {args.data_mib} MiB (md5 + sha512)", f"{rate:,.0f} MiB/s (HTTP {code}; ratio to sha512sum {rate / bound:.2f})")
    nginx = data.get("nginx")
    row(f"download {args.data_mib} MiB", f"{data['download']:,.0f} MiB/s" + (f" (nginx sendfile {nginx:,.0f} MiB/s; ratio {data['download'] / nginx:.2f})" if nginx else " (nginx not installed)"))
    row("peak RSS over the transfers", f"{data['peak_rss']:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
