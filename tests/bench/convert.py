#!/usr/bin/env python3
"""The `convert` import plugin (src/transform/qemu.rs) against `qemu-img convert` run by hand,
as a ratio in one run: a 1 GiB qcow2 full of data is converted to raw by hand, and imported by
glance-direct into a glint with `import.plugins = ["convert"]` (the clock runs from
`POST /import` to `active`: the inspection of the qcow2, `qemu-img info`, the same `qemu-img
convert` confined, and the raw result hashed, inspected and written into the filesystem
store). Alternating, best of N each (the figure is in docs/benchmarks.md).

Usage: tests/bench/convert.py GLINT_BINARY [--before OTHER_BINARY] [--data-mib 1024] [--rounds 3]
  --before: a second glint timed in the same rounds (e.g. a build of an earlier commit), for a
  before/after ratio in one run.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from activated import LocalGlint, listening_socket  # noqa: E402
from s3 import curl  # noqa: E402


CONVERT = '[import]\nplugins = ["convert"]\n'


def by_hand(qcow2, out):
    """Seconds for `qemu-img convert` alone (its output may still be in the page cache), and
    until the output is on disk (glint syncs what it stores)."""
    t0 = time.monotonic()
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", qcow2, out], check=True)
    converted = time.monotonic() - t0
    fd = os.open(out, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    synced = time.monotonic() - t0
    os.remove(out)
    return converted, synced


def imported(node, qcow2):
    out = curl("-X", "POST", f"{node.url}/v2/images", "-H", "Content-Type: application/json",
               "-d", '{"disk_format": "qcow2", "container_format": "bare"}')
    image = json.loads(out)["id"]
    code = curl("-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "-H",
                "Content-Type: application/octet-stream", "-T", qcow2, f"{node.url}/v2/images/{image}/stage")
    if code != "204":
        raise RuntimeError(f"stage answered {code}")
    t0 = time.monotonic()
    curl("-X", "POST", f"{node.url}/v2/images/{image}/import", "-H", "Content-Type: application/json",
         "-d", '{"method": {"name": "glance-direct"}}')
    while True:
        shown = json.loads(curl(f"{node.url}/v2/images/{image}"))
        if shown["status"] == "active":
            elapsed = time.monotonic() - t0
            break
        if shown["status"] == "queued":
            raise RuntimeError(f"import failed: {shown}")
        time.sleep(0.05)
    if shown["disk_format"] != "raw":
        raise RuntimeError(f"not converted: {shown}")
    curl("-X", "DELETE", f"{node.url}/v2/images/{image}")
    return elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("glint")
    parser.add_argument("--before")
    parser.add_argument("--data-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    best = {"by hand": float("inf"), "by hand, synced": float("inf"), "glint": float("inf"),
            "before": float("inf")}
    glints = [("glint", args.glint)] + ([("before", args.before)] if args.before else [])
    with tempfile.TemporaryDirectory(dir="/var/tmp") as workdir:
        raw, qcow2 = os.path.join(workdir, "disk.raw"), os.path.join(workdir, "disk.qcow2")
        with open(raw, "wb") as f:
            for _ in range(args.data_mib):
                f.write(os.urandom(1 << 20))
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow2], check=True)
        os.remove(raw)
        for round_ in range(args.rounds):
            converted, synced = by_hand(qcow2, os.path.join(workdir, "out.raw"))
            best["by hand"] = min(best["by hand"], converted)
            best["by hand, synced"] = min(best["by hand, synced"], synced)
            print(f"round {round_ + 1}: by hand {converted:.2f} s, synced {synced:.2f} s", flush=True)
            for name, binary in glints:
                node = LocalGlint(binary, os.path.join(workdir, f"{name}-{round_}"), listening_socket(), CONVERT)
                try:
                    seconds = imported(node, qcow2)
                finally:
                    node.stop()
                best[name] = min(best[name], seconds)
                print(f"round {round_ + 1}: {name} {seconds:.2f} s", flush=True)
    hand, synced, glint = best["by hand"], best["by hand, synced"], best["glint"]
    print("| what (best of each) | figure | ratio to synced |\n|---|---|---|")
    print(f"| `qemu-img convert -O raw` by hand, {args.data_mib} MiB qcow2, output in the page cache "
          f"| {hand:.2f} s | {hand / synced:.2f} |")
    print(f"| the same, until the output is on disk (fsync) | {synced:.2f} s | 1 |")
    print(f"| glance-direct import with `convert` to raw: `POST /import` to `active` (converted, "
          f"synced, md5 + sha512, inspected, linked into the store) | {glint:.2f} s | {glint / synced:.2f} |")
    if args.before:
        before = best["before"]
        print(f"| the same with `--before` {args.before} | {before:.2f} s | {before / synced:.2f} |")
        print(f"| after / before | {glint / before:.2f} | |")


if __name__ == "__main__":
    main()
