#!/usr/bin/env python3
"""Keystone auth figures, printed as a table (docs/benchmarks.md), in one run:
  - GET /v2/images req/s and latency p50/p99 with auth.mode = keystone (warm token cache)
    against noauth, same binary, same catalogue size, one after the other
  - validations per second when every request carries a token glint has not seen
  - how long a revoked token is still accepted (cache_ttl 10 s, the default)

Usage: tests/bench/keystone.py [--duration 10]   (builds --release; needs wrk; Keystone from
tests/keystone, set up once into its cache)
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "keystone"))
import keystone  # noqa: E402
from bench import ROOT, wrk  # noqa: E402
from test_glint import Glint, call  # noqa: E402


def bound_socket():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


class KeystoneGlint(Glint):
    cache_ttl = 10  # the default
    log_level = "warn"


class NoauthGlint(Glint):
    def write_config(self):
        with open(self.config, "w") as f:
            f.write(f'state_dir = "{self.workdir}/state"\n[server]\nlisten = ["127.0.0.1:1"]\n'
                    '[log]\nlevel = "warn"\n')


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--new-tokens", type=int, default=30)
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "glint"], cwd=ROOT, check=True)
    binary = os.path.join(ROOT, "target/release/glint")
    ks = keystone.start()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as kdir, tempfile.TemporaryDirectory() as ndir:
            g = KeystoneGlint(binary, kdir, bound_socket(), ks.url)
            n = NoauthGlint(binary, ndir, bound_socket(), ks.url)
            member, _ = ks.token("alpha-member")
            for _ in range(25):
                call(g, "POST", "/v2/images", member, {"name": "bench", "disk_format": "raw", "container_format": "bare"})
                call(n, "POST", "/v2/images", None, {"name": "bench", "disk_format": "raw", "container_format": "bare"})
            script = os.path.join(kdir, "token.lua")
            with open(script, "w") as f:
                f.write(f'wrk.headers["X-Auth-Token"] = "{member}"\n')
            call(g, "GET", "/v2/images", member)  # the token is in the cache from here on
            noauth = wrk(n.port, args.duration, path="/v2/images")
            keyed = wrk(g.port, args.duration, path="/v2/images", script=script)
            rows.append(("GET /v2/images (25 images), noauth: req/s, p50 / p99",
                         f"{noauth['rps']:,.0f}, {noauth['p50']:.2f} / {noauth['p99']:.2f} ms ({noauth['errors']} failed)"))
            rows.append(("GET /v2/images (25 images), keystone, warm cache: req/s, p50 / p99",
                         f"{keyed['rps']:,.0f}, {keyed['p50']:.2f} / {keyed['p99']:.2f} ms ({keyed['errors']} failed); "
                         f"ratio {keyed['rps'] / noauth['rps']:.2f}, added p50 {keyed['p50'] - noauth['p50']:+.2f} ms"))

            fresh = [ks.token("beta-member")[0] for _ in range(args.new_tokens)]
            started = time.monotonic()
            threads = [threading.Thread(target=call, args=(g, "GET", "/v2/images", t)) for t in fresh]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            took = time.monotonic() - started
            rows.append((f"{args.new_tokens} requests, each with a token glint has not seen",
                         f"{took:.2f} s: {args.new_tokens / took:.1f} validations/s (Keystone 30 on SQLite under uWSGI is the bound)"))

            glance, _ = ks.token("glance")
            token, _ = ks.token("alpha-member")
            call(g, "GET", "/v2/images", token)
            ks.revoke(glance, token)
            revoked = time.monotonic()
            while call(g, "GET", "/v2/images", token)[0] != 401:
                time.sleep(0.05)
            rows.append(("a revoked token still accepted for (cache_ttl 10 s; keystonemiddleware's default 300 s)",
                         f"{time.monotonic() - revoked:.2f} s"))
            g.stop()
            n.stop()
    finally:
        ks.stop()
    print(f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, wrk -t2 -c16 -d{args.duration}s")
    print("| what | glint |")
    print("|---|---|")
    for what, value in rows:
        print(f"| {what} | {value} |")


if __name__ == "__main__":
    main()
