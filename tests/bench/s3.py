#!/usr/bin/env python3
"""Benchmarks of S3 stores and of several nodes, printed as a table (kept in docs/benchmarks.md).

Everything in one run, on one s3s-fs (the test suite's S3 server, on this machine's disk):
  - upload and download of one file (512 MiB by default) through glint into an S3 default
    store, next to the same file put and got by the same client crate directly
    (tests/bench/s3_direct.rs, glint's part size and parts in flight): the ratios;
  - glint's peak RSS over a 4 GiB upload (a fresh process; bounded by the part settings);
  - requests per second of GET /v2/images?limit=25 through HAProxy with one node and with two
    (two glint processes on one SQLite catalogue and the one bucket).

Usage: tests/bench/s3.py [--data-mib 512] [--big-gib 4] [--duration 10]
(builds --release; needs s3s-fs (TEST_S3S_FS or .ci/run's cache), haproxy, wrk and curl)
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from activated import ActivatedGlint, listening_socket  # noqa: E402
from bench import ROOT, free_port, wrk  # noqa: E402

ACCESS, SECRET, BUCKET = "bench", "bench-secret", "images"
PART_MIB, IN_FLIGHT = 16, 4


def s3s_fs():
    path = os.environ.get("TEST_S3S_FS", "/var/cache/glint-test/s3s-fs-0.14.1/bin/s3s-fs")
    if not os.path.exists(path):
        sys.exit(f"s3s-fs not found at {path}: cargo install --locked s3s-fs --version 0.14.1 --features binary")
    return path


@contextlib.contextmanager
def s3_server(workdir):
    """An s3s-fs on a free loopback port with the bucket, its data under `workdir`/s3; yields
    (process, endpoint) once it answers, and stops it afterwards."""
    root = os.path.join(workdir, "s3")
    os.makedirs(os.path.join(root, BUCKET))
    port = free_port()
    server = subprocess.Popen([s3s_fs(), "--host", "127.0.0.1", "--port", str(port), "--access-key", ACCESS,
                               "--secret-key", SECRET, root], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while subprocess.run(["curl", "-s", "-o", "/dev/null", endpoint]).returncode != 0:
            if time.monotonic() > deadline:
                sys.exit("s3s-fs never listened")
            time.sleep(0.05)
        yield server, endpoint
    finally:
        server.terminate()
        server.wait()


class Node(ActivatedGlint):
    """glint with the S3 store as its default, on the catalogue `database` (a shared SQLite
    file when given)."""

    def __init__(self, binary, workdir, sock, endpoint, database=None):
        self.endpoint, self.database = endpoint, database
        os.makedirs(workdir, exist_ok=True)
        super().__init__(binary, workdir, sock)

    def write_config(self):
        database = f'[database]\nurl = "sqlite://{self.database}"\n' if self.database else ""
        with open(self.config, "w") as f:
            f.write(f'state_dir = "{self.workdir}/state"\n[server]\nlisten = ["127.0.0.1:1"]\nworkers = 2\n'
                    f'[log]\nlevel = "warn"\n{database}'
                    f'[stores.objects]\ntype = "s3"\ndefault = true\nendpoint = "{self.endpoint}"\n'
                    f'bucket = "{BUCKET}"\nprefix = "bench/"\naccess_key_id = "{ACCESS}"\n'
                    f'secret_access_key = "{SECRET}"\npath_style = true\n'
                    f'part_size = "{PART_MIB}MiB"\nparts_in_flight = {IN_FLIGHT}\n')

    def peak_rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0.0


def curl(*args):
    return subprocess.run(["curl", "-s", *args], capture_output=True, text=True, check=True).stdout


def create(base):
    out = curl("-X", "POST", f"{base}/v2/images", "-H", "Content-Type: application/json",
               "-d", '{"disk_format": "raw", "container_format": "bare"}')
    return json.loads(out)["id"]


def upload(base, image, source):
    """PUTs `source` (a file, sent with Content-Length); returns seconds taken."""
    t0 = time.monotonic()
    code = curl("-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "-H", "Content-Type: application/octet-stream",
                "-T", source, f"{base}/v2/images/{image}/file")
    elapsed = time.monotonic() - t0
    if code != "204":
        raise RuntimeError(f"upload answered {code}")
    return elapsed


def data_path(glint, direct, workdir, endpoint, size_mib):
    blob = os.path.join(workdir, "blob")
    with open(blob, "wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(1 << 20))
    subprocess.run(["cat", blob], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    results = {}
    out = subprocess.run([direct, endpoint, BUCKET, ACCESS, SECRET, blob, str(PART_MIB), str(IN_FLIGHT)],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        what, rate = line.split()
        results[f"direct {what}"] = float(rate)
    node = Node(glint, os.path.join(workdir, "node"), listening_socket(), endpoint)
    try:
        image = create(node.url)
        results["glint upload"] = size_mib / upload(node.url, image, blob)
        t0 = time.monotonic()
        fetched = curl("-o", "/dev/null", "-w", "%{http_code} %{size_download}", f"{node.url}/v2/images/{image}/file")
        results["glint download"] = size_mib / (time.monotonic() - t0)
        if fetched != f"200 {size_mib << 20}":
            raise RuntimeError(f"glint download: {fetched}")
        curl("-X", "DELETE", f"{node.url}/v2/images/{image}")
    finally:
        node.stop()
    os.remove(blob)
    return results


def big_upload(glint, workdir, endpoint, size_gib):
    """A fresh glint takes `size_gib` GiB (a sparse file: the disk is not the bound); its
    peak RSS over its whole life."""
    blob = os.path.join(workdir, "big")
    with open(blob, "wb") as f:
        f.truncate(size_gib << 30)
    node = Node(glint, os.path.join(workdir, "big-node"), listening_socket(), endpoint)
    try:
        idle = node.peak_rss_mib()
        image = create(node.url)
        seconds = upload(node.url, image, blob)
        peak = node.peak_rss_mib()
        curl("-X", "DELETE", f"{node.url}/v2/images/{image}")
    finally:
        node.stop()
        os.remove(blob)
    return {"idle": idle, "peak": peak, "rate": (size_gib << 10) / seconds}


def behind_haproxy(glint, workdir, endpoint, duration):
    """req/s through HAProxy to one node, then to two on one catalogue."""
    database = os.path.join(workdir, "shared", "glint.db")
    os.makedirs(os.path.dirname(database))
    nodes = [Node(glint, os.path.join(workdir, f"n{i}"), listening_socket(), endpoint, database) for i in (1, 2)]
    results = {}
    try:
        for _ in range(100):
            create(nodes[0].url)
        for count in (1, 2):
            port = free_port()
            config = os.path.join(workdir, f"haproxy-{count}.cfg")
            servers = "".join(f"    server g{i} 127.0.0.1:{n.port} check\n" for i, n in enumerate(nodes[:count]))
            with open(config, "w") as f:
                f.write(f"""global
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
frontend public
    bind 127.0.0.1:{port}
    default_backend glint
backend glint
    balance roundrobin
    option httpchk GET /healthcheck
{servers}""")
            haproxy = subprocess.Popen(["haproxy", "-f", config, "-db"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            try:
                deadline = time.monotonic() + 20
                while True:
                    try:
                        curl("-f", "-o", "/dev/null", f"http://127.0.0.1:{port}/healthcheck")
                        break
                    except subprocess.CalledProcessError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)
                results[count] = wrk(port, duration, connections=16, path="/v2/images?limit=25")
            finally:
                haproxy.terminate()
                haproxy.wait()
    finally:
        for node in nodes:
            node.stop()
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-mib", type=int, default=512)
    parser.add_argument("--big-gib", type=int, default=4)
    parser.add_argument("--duration", type=int, default=10)
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "glint", "--example", "s3_direct"],
                   cwd=ROOT, check=True)
    glint = os.path.join(ROOT, "target/release/glint")
    direct = os.path.join(ROOT, "target/release/examples/s3_direct")
    with tempfile.TemporaryDirectory(dir="/var/tmp") as workdir, s3_server(workdir) as (_, endpoint):
        data = data_path(glint, direct, workdir, endpoint, args.data_mib)
        big = big_upload(glint, workdir, endpoint, args.big_gib)
        proxied = behind_haproxy(glint, workdir, endpoint, args.duration)

    print(f"| what | figure | ratio | goal |\n|---|---|---|---|")
    print(f"| direct put, {args.data_mib} MiB (object_store, {PART_MIB} MiB parts, {IN_FLIGHT} in flight) "
          f"| {data['direct put']:.0f} MiB/s | 1 | |")
    print(f"| glint upload, same file (md5 + sha512 as it streams) | {data['glint upload']:.0f} MiB/s "
          f"| {data['glint upload'] / data['direct put']:.2f} of direct put | ≥ 0.8 |")
    print(f"| direct get | {data['direct get']:.0f} MiB/s | 1 | |")
    print(f"| glint download | {data['glint download']:.0f} MiB/s "
          f"| {data['glint download'] / data['direct get']:.2f} of direct get | ≥ 0.9 |")
    print(f"| {args.big_gib} GiB upload: rate, peak RSS of the process (idle {big['idle']:.1f} MiB) "
          f"| {big['rate']:.0f} MiB/s, {big['peak']:.1f} MiB | | bounded by part_size × (parts_in_flight + 1) |")
    for count, figures in proxied.items():
        print(f"| GET /v2/images?limit=25 through HAProxy, {count} node{'s' if count > 1 else ''} "
              f"| {figures['rps']:.0f} req/s, p99 {figures['p99']:.2f} ms, {figures['errors']} errors "
              f"| {figures['rps'] / proxied[1]['rps']:.2f} | |")


if __name__ == "__main__":
    main()
