#!/usr/bin/env python3
"""Benchmarks of glint under hostile and idle clients, printed as a table (docs/benchmarks.md).

  - fresh clients' latency (wrk, GET /versions) and RSS, calm and during an attack of
    2,000 slow-header connections (a header line every 2 s, never finishing the head) plus
    2,000 idle connections that never send anything
  - how many of the slow-header connections are closed (408) within header_read_timeout + 5 s
  - 10,000 idle keep-alive connections (one request each, then idle): RSS per connection
  - upload throughput of two binaries in one run (--before BINARY: e.g. a build of the commit
    before the bounded transfer workers), alternating, best of --rounds

Usage: tests/bench/hostile.py [--before PATH] [--duration 10] [--data-mib 256]
(builds --release; needs wrk and curl; raises its soft fd limit to the hard one, which must
allow 20,000)
"""

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from bench import Glint, ROOT, free_port, wrk  # noqa: E402

SLOW = 2000
IDLE = 2000
KEEPALIVE = 10000


def build():
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "glint"], cwd=ROOT, check=True)
    return os.path.join(ROOT, "target/release/glint")


def start(binary, workdir, server_keys=""):
    """glint with `server_keys` added to its [server] table (applied by a reload)."""
    g = Glint(binary, workdir, free_port(), 2, "warn")
    if server_keys:
        with open(g.config) as f:
            text = f.read()
        with open(g.config, "w") as f:
            f.write(text.replace("[server]\n", "[server]\n" + server_keys, 1))
        g.reload()
    return g


async def slow_header(port, closed, stop):
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    writer.write(b"GET /versions HTTP/1.1\r\nHost: x\r\n")
    try:
        while not stop.is_set():
            try:
                data = await asyncio.wait_for(reader.read(4096), timeout=2)
                if not data or data.startswith(b"HTTP/1.1 408"):
                    closed.append(time.monotonic())
                    return
            except asyncio.TimeoutError:
                writer.write(b"X-Slow: 1\r\n")
                await writer.drain()
    except OSError:
        closed.append(time.monotonic())
    finally:
        writer.close()


async def idle(port, opened):
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return None
    opened.append(writer)
    return writer


async def keepalive(port, writers):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /versions HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = int([h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")][0].split(b":")[1])
    await reader.readexactly(length)
    writers.append(writer)


async def attack(g, duration, header_timeout):
    stop = asyncio.Event()
    closed, opened = [], []
    began = time.monotonic()
    slow = [asyncio.create_task(slow_header(g.port, closed, stop)) for _ in range(SLOW)]
    await asyncio.gather(*(idle(g.port, opened) for _ in range(IDLE)))
    under = await asyncio.to_thread(wrk, g.port, duration)
    rss = g.rss_kib()
    # Count the 408s that came in time.
    await asyncio.sleep(max(0.0, header_timeout + 5 - (time.monotonic() - began)))
    in_time = sum(1 for t in closed if t - began <= header_timeout + 5)
    stop.set()
    for w in opened:
        w.close()
    await asyncio.gather(*slow, return_exceptions=True)
    return under, rss, in_time


async def idle_cost(g):
    before = g.rss_kib()
    writers = []
    for i in range(0, KEEPALIVE, 500):
        await asyncio.gather(*(keepalive(g.port, writers) for _ in range(500)))
    await asyncio.sleep(1)
    after = g.rss_kib()
    for w in writers:
        w.close()
    return before, after, len(writers)


def upload_rate(binary, size_mib, blob):
    with tempfile.TemporaryDirectory(dir="/var/tmp") as workdir:
        g = Glint(binary, workdir, free_port(), 2, "warn")
        base = f"http://127.0.0.1:{g.port}"
        out = subprocess.run(["curl", "-s", "-X", "POST", f"{base}/v2/images", "-H", "Content-Type: application/json",
                              "-d", '{"disk_format": "raw", "container_format": "bare"}'],
                             capture_output=True, text=True, check=True).stdout
        import json
        image = json.loads(out)["id"]
        t0 = time.monotonic()
        code = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT",
                               "-H", "Content-Type: application/octet-stream", "--data-binary", f"@{blob}",
                               f"{base}/v2/images/{image}/file"], capture_output=True, text=True).stdout
        rate = size_mib / (time.monotonic() - t0)
        g.stop()
        if code != "204":
            raise RuntimeError(f"upload answered {code}")
        return rate


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--data-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", help="a glint binary to compare uploads with")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2 * KEEPALIVE:
        sys.exit(f"the hard fd limit ({hard}) is below {2 * KEEPALIVE}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    binary = build()
    print(f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, workers=2, wrk -t2 -c16 -d{args.duration}s")

    header_timeout = 10
    with tempfile.TemporaryDirectory() as workdir:
        g = start(binary, workdir, f'header_read_timeout = "{header_timeout}s"\n')
        calm = wrk(g.port, args.duration)
        calm_rss = g.rss_kib()
        under, attack_rss, in_time = asyncio.run(attack(g, args.duration, header_timeout))
        g.stop()
    with tempfile.TemporaryDirectory() as workdir:
        g = start(binary, workdir)
        before, after, held = asyncio.run(idle_cost(g))
        g.stop()

    def row(name, value):
        print(f"| {name} | {value} |")

    print("| what | glint |")
    print("|---|---|")
    row("fresh clients, calm: req/s, p50 / p99", f"{calm['rps']:,.0f}, {calm['p50']:.2f} / {calm['p99']:.2f} ms ({calm['errors']} failed)")
    row(f"fresh clients during {SLOW:,} slow-header + {IDLE:,} idle connections: req/s, p50 / p99",
        f"{under['rps']:,.0f}, {under['p50']:.2f} / {under['p99']:.2f} ms ({under['errors']} failed)")
    row("RSS calm / during the attack", f"{calm_rss / 1024:.1f} MiB / {attack_rss / 1024:.1f} MiB")
    row(f"slow-header connections closed within header_read_timeout ({header_timeout} s) + 5 s", f"{in_time:,} of {SLOW:,}")
    row(f"{held:,} idle keep-alive connections: RSS before / after, per connection",
        f"{before / 1024:.1f} MiB / {after / 1024:.1f} MiB, {(after - before) / held:.1f} KiB")

    if args.before:
        with tempfile.TemporaryDirectory(dir="/var/tmp") as workdir:
            blob = os.path.join(workdir, "blob")
            with open(blob, "wb") as f:
                for _ in range(args.data_mib):
                    f.write(os.urandom(1 << 20))
            rates = {"before": [], "after": []}
            for _ in range(args.rounds):
                rates["before"].append(upload_rate(args.before, args.data_mib, blob))
                rates["after"].append(upload_rate(binary, args.data_mib, blob))
        b, a = max(rates["before"]), max(rates["after"])
        row(f"upload {args.data_mib} MiB, best of {args.rounds}: before / after (ratio)", f"{b:,.0f} / {a:,.0f} MiB/s ({a / b:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
