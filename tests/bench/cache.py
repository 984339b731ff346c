#!/usr/bin/env python3
"""The image cache (src/cache), as ratios in one run (the figures are in docs/benchmarks.md):

1. download MiB/s of one image: a cache hit, the filesystem store read directly (cache off),
   and nginx serving the same file (sendfile) — goal: a hit ≥ 0.9 of nginx;
2. a miss (a new image each round, so every download fills the cache while it streams)
   against the store read without a cache — goal: ≥ 0.9 — and against the rate at which this
   machine writes as much new data to a new file (dd), which a miss must also do;
3. the same miss with an S3 store (s3s-fs on this machine), the store a cache is for, against
   the S3 store read without a cache;
4. 50 concurrent first downloads of one image from an S3 store (s3s-fs): the bytes s3s-fs
   sent (its /proc/<pid>/io wchar), against the image's size.

Every download is curl to /dev/null on loopback; each figure is the median of N rounds (this
machine's disk and s3s-fs vary by a third from round to round, so a best-of would flatter).

Usage: tests/bench/cache.py GLINT_BINARY [--data-mib 1024] [--rounds 5]
  needs nginx (apt-get install nginx-light) and s3s-fs (.ci/run builds it).
"""

import argparse
import json
import statistics
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from activated import LocalGlint, listening_socket  # noqa: E402
from bench import free_port, random_image  # noqa: E402
from s3 import ACCESS, BUCKET, SECRET, curl, s3_server  # noqa: E402


def node(binary, workdir, cache, endpoint=None):
    """glint with the default filesystem store (or the S3 store at `endpoint`) and the cache
    on or off."""
    store = ""
    if endpoint:
        store = (f'[stores.objects]\ntype = "s3"\ndefault = true\nendpoint = "{endpoint}"\n'
                 f'bucket = "{BUCKET}"\nprefix = "bench/"\naccess_key_id = "{ACCESS}"\n'
                 f'secret_access_key = "{SECRET}"\npath_style = true\n')
    extra = f'{store}[cache]\nenabled = {"true" if cache else "false"}\nmax_size = "16GiB"\n'
    return LocalGlint(binary, workdir, listening_socket(), extra)


def create(base, blob):
    image = json.loads(curl("-X", "POST", f"{base}/v2/images", "-H", "Content-Type: application/json",
                            "-d", '{"disk_format": "raw", "container_format": "bare"}'))["id"]
    code = curl("-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "-H", "Content-Type: application/octet-stream",
                "-T", blob, f"{base}/v2/images/{image}/file")
    if code != "204":
        raise RuntimeError(f"upload answered {code}")
    return image


def rate(url, mib):
    """MiB/s of one download of `url` to /dev/null."""
    out = curl("-o", "/dev/null", "-w", "%{http_code} %{time_total}", url)
    code, seconds = out.split()
    if code != "200":
        raise RuntimeError(f"{url} answered {code}")
    return mib / float(seconds)


def write_rate(path, mib):
    """MiB/s of writing `mib` MiB of new data to a new file (what a miss must also do): the
    machine's page-cache write rate, which the miss cannot pass."""
    out = subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={mib}"],
                         capture_output=True, text=True, check=True).stderr
    seconds = float(out.strip().splitlines()[-1].split(",")[2].split()[0])
    return mib / seconds


def cached(node, image):
    listed = json.loads(curl(f"{node.url}/v2/cache"))
    return any(e["image_id"] == image for e in listed["cached_images"])


def wait_cached(node, image):
    deadline = time.monotonic() + 120
    while not cached(node, image):
        if time.monotonic() > deadline:
            raise RuntimeError("never cached")
        time.sleep(0.05)


def nginx(root, port, workdir):
    conf = os.path.join(workdir, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"daemon off;\npid {workdir}/nginx.pid;\nerror_log {workdir}/nginx.err;\nworker_processes 2;\n"
                f"events {{}}\nhttp {{ access_log off; sendfile on; tcp_nopush on;\n"
                f"  server {{ listen 127.0.0.1:{port}; root {root}; }} }}\n")
    server = subprocess.Popen(["nginx", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/"]).returncode != 0:
        time.sleep(0.05)
    return server


def local_figures(binary, workdir, blob, mib, rounds):
    seen = {"hit": [], "store": [], "nginx": [], "miss": [], "write": []}
    on = node(binary, os.path.join(workdir, "on"), cache=True)
    off = node(binary, os.path.join(workdir, "off"), cache=False)
    port = free_port()
    web = nginx(workdir, port, workdir)
    try:
        hot = create(on.url, blob)
        curl("-o", "/dev/null", f"{on.url}/v2/images/{hot}/file")
        wait_cached(on, hot)
        # A fresh image per miss: removing a cache entry just before would measure the
        # filesystem's discard of the old file (ext4 with `discard`) as much as the miss.
        colds = [create(on.url, blob) for _ in range(rounds)]
        plain = create(off.url, blob)
        # The uploads' data reaches the disk before anything is measured, not during it.
        os.sync()
        for round_ in range(rounds):
            figures = {
                "miss": rate(f"{on.url}/v2/images/{colds[round_]}/file", mib),
                "hit": rate(f"{on.url}/v2/images/{hot}/file", mib),
                "store": rate(f"{off.url}/v2/images/{plain}/file", mib),
                "nginx": rate(f"http://127.0.0.1:{port}/{os.path.basename(blob)}", mib),
                "write": write_rate(os.path.join(workdir, f"written-{round_}"), mib),
            }
            wait_cached(on, colds[round_])
            for name, value in figures.items():
                seen[name].append(value)
            print(f"round {round_ + 1}: " + ", ".join(f"{k} {v:.0f} MiB/s" for k, v in figures.items()), flush=True)
    finally:
        web.terminate()
        web.wait()
        on.stop()
        off.stop()
    return {name: statistics.median(values) for name, values in seen.items()}


def s3_figures(binary, workdir, blob, mib, rounds):
    """Best miss and store read with the S3 store, a fresh image per miss."""
    seen = {"s3 miss": [], "s3 store": []}
    with s3_server(os.path.join(workdir, "s3-figures")) as (_, endpoint):
        on = node(binary, os.path.join(workdir, "s3-on"), cache=True, endpoint=endpoint)
        off = node(binary, os.path.join(workdir, "s3-off"), cache=False, endpoint=endpoint)
        try:
            colds = [create(on.url, blob) for _ in range(rounds)]
            plain = create(off.url, blob)
            os.sync()
            for round_ in range(rounds):
                figures = {
                    "s3 miss": rate(f"{on.url}/v2/images/{colds[round_]}/file", mib),
                    "s3 store": rate(f"{off.url}/v2/images/{plain}/file", mib),
                }
                wait_cached(on, colds[round_])
                for name, value in figures.items():
                    seen[name].append(value)
                print(f"S3 round {round_ + 1}: " + ", ".join(f"{k} {v:.0f} MiB/s" for k, v in figures.items()),
                      flush=True)
        finally:
            on.stop()
            off.stop()
    return {name: statistics.median(values) for name, values in seen.items()}


def wchar(pid):
    with open(f"/proc/{pid}/io") as f:
        return int(next(line for line in f if line.startswith("wchar:")).split()[1])


def concurrent_misses(binary, workdir, blob, size, readers):
    with s3_server(workdir) as (server, endpoint):
        s3_node = node(binary, os.path.join(workdir, "s3-node"), cache=True, endpoint=endpoint)
        try:
            image = create(s3_node.url, blob)
            before = wchar(server.pid)
            downloads = [subprocess.Popen(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                                           f"{s3_node.url}/v2/images/{image}/file"], stdout=subprocess.PIPE, text=True)
                         for _ in range(readers)]
            answers = [d.communicate()[0].split() for d in downloads]
            sent = wchar(server.pid) - before
            whole = sum(1 for code, got in answers if code == "200" and int(got) == size)
        finally:
            s3_node.stop()
    return sent, whole


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("glint")
    parser.add_argument("--data-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--readers", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as workdir:
        os.chmod(workdir, 0o755)
        blob = random_image(os.path.join(workdir, "image.raw"), args.data_mib)
        os.chmod(blob, 0o644)
        size = args.data_mib << 20
        best = local_figures(args.glint, workdir, blob, args.data_mib, args.rounds)
        best.update(s3_figures(args.glint, workdir, blob, args.data_mib, args.rounds))
        sent, whole = concurrent_misses(args.glint, workdir, blob, size, args.readers)
    print("| what | figure | ratio | goal |\n|---|---|---|---|")
    print(f"| nginx, the same file (sendfile) | {best['nginx']:.0f} MiB/s | 1 | |")
    print(f"| glint, cache hit | {best['hit']:.0f} MiB/s | {best['hit'] / best['nginx']:.2f} | ≥ 0.9 |")
    print(f"| glint, filesystem store, cache off | {best['store']:.0f} MiB/s | {best['store'] / best['nginx']:.2f} | |")
    print(f"| glint, cache miss (streams and fills) | {best['miss']:.0f} MiB/s | {best['miss'] / best['store']:.2f} "
          f"of the store read | ≥ 0.9 |")
    print(f"| writing as much new data to a new file (dd), which a miss must also do | {best['write']:.0f} MiB/s "
          f"| miss / write {best['miss'] / best['write']:.2f} | |")
    print(f"| glint, S3 store, cache off | {best['s3 store']:.0f} MiB/s | | |")
    print(f"| glint, S3 store, cache miss | {best['s3 miss']:.0f} MiB/s | {best['s3 miss'] / best['s3 store']:.2f} "
          f"of the S3 store read | ≥ 0.9 |")
    print(f"| {args.readers} concurrent first downloads from S3: bytes s3s-fs sent | {sent} "
          f"| {sent / size:.2f} × the image | 1 |")
    print(f"| ... of which downloads got every byte | {whole} of {args.readers} | | |")


if __name__ == "__main__":
    main()
