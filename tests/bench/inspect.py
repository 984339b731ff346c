#!/usr/bin/env python3
"""The cost of inspecting uploads (src/inspect), as a ratio in one run: the same 512 MiB
upload into the filesystem store by a glint built without inspection and by one built with it,
alternating, best of N each (the figure is in docs/benchmarks.md).

Usage: tests/bench/inspect.py BEFORE_BINARY AFTER_BINARY [--data-mib 512] [--rounds 3]
  BEFORE_BINARY: e.g. a release build of the commit before inspection came in
  (git worktree add /tmp/before e8a1f13^; CARGO_TARGET_DIR=target cargo build --release there,
  then copy target/release/glint aside), AFTER_BINARY: target/release/glint.
"""

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from activated import LocalGlint, listening_socket  # noqa: E402
from bench import random_image  # noqa: E402
from s3 import create, curl, upload  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--data-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    best = {"before": 0.0, "after": 0.0}
    with tempfile.TemporaryDirectory(dir="/var/tmp") as workdir:
        blob = random_image(os.path.join(workdir, "blob"), args.data_mib)
        for round_ in range(args.rounds):
            for name in ("before", "after"):
                binary = getattr(args, name)
                node = LocalGlint(binary, os.path.join(workdir, f"{name}-{round_}"), listening_socket())
                try:
                    image = create(node.url)
                    rate = args.data_mib / upload(node.url, image, blob)
                    curl("-X", "DELETE", f"{node.url}/v2/images/{image}")
                finally:
                    node.stop()
                best[name] = max(best[name], rate)
                print(f"round {round_ + 1}: {name} {rate:.0f} MiB/s", flush=True)
    print("| what | figure | ratio | goal |\n|---|---|---|---|")
    print(f"| upload {args.data_mib} MiB, without inspection (best of {args.rounds}) | {best['before']:.0f} MiB/s | 1 | |")
    print(f"| upload {args.data_mib} MiB, inspected (best of {args.rounds}) | {best['after']:.0f} MiB/s "
          f"| {best['after'] / best['before']:.2f} | ≥ 0.97 |")


if __name__ == "__main__":
    main()
