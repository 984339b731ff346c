#!/usr/bin/env python3
"""The test suite's own S3 service: s3s-fs (the s3s project's S3 server on a plain directory) on
loopback, for glint's S3 stores in the Python suites. This script owns its data, log and
lifecycle; nothing else in the repository starts or stops it. Python 3 standard library only.

    server.py start    # start (or find running), wait until its port accepts, print settings
    server.py stop     # stop it (SIGTERM), wait until gone
    server.py status   # exit 0 only if it is running and accepting connections
    server.py fresh    # a new, empty bucket: print its name

`start` prints these lines on stdout, for a shell or a test to parse; everything else goes to
stderr:

    TEST_S3_ENDPOINT=http://127.0.0.1:58014        (port: see below)
    TEST_S3_ACCESS_KEY=glint-test
    TEST_S3_SECRET_KEY=glint-test-secret
    TEST_S3_BUCKET=images
    TEST_S3_ROOT=/path/to/repo/target/s3/data

`start` is idempotent: a server that is already up is only waited for and printed. The server
runs detached and outlives this script. A bucket is a directory under TEST_S3_ROOT (s3s-fs has
no CreateBucket of its own to call first); s3s-fs keeps a multipart upload in progress there as
`.upload-<uuid>.json` and `.upload_id-<uuid>.part-N` until it is completed or aborted, so a test
can see uploads left behind. `fresh` makes a bucket of its own for one suite run, so that no run
sees another's objects. Starting a server that is not running empties TEST_S3_ROOT first: the
buckets of earlier runs are of no use to anyone, and their images would pile up.

Where things live: target/s3/ in the repository (git ignores target/): data/ (the root the
server serves), s3s-fs.log, s3s-fs.pid. The port is 58014 plus an offset from 0 to 499 derived
from the repository's path (as tests/db/servers.py does for its servers), so two checkouts on one
machine never meet.

The binary: $TEST_S3S_FS, else /var/cache/glint-test/s3s-fs-0.14.1/bin/s3s-fs (where .ci/run
installs it), else `s3s-fs` on PATH.
"""

import argparse
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
AREA = REPO / "target" / "s3"
DATA = AREA / "data"
LOG = AREA / "s3s-fs.log"
PID_FILE = AREA / "s3s-fs.pid"

HOST = "127.0.0.1"
# The same offset as tests/db/servers.py's: each checkout its own port.
PORT_OFFSET = int(hashlib.sha256(str(REPO).encode()).hexdigest(), 16) % 500
PORT = 58014 + PORT_OFFSET
ENDPOINT = f"http://{HOST}:{PORT}"
ACCESS_KEY = "glint-test"
SECRET_KEY = "glint-test-secret"
BUCKET = "images"

DEFAULT_BINARY = "/var/cache/glint-test/s3s-fs-0.14.1/bin/s3s-fs"

START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
POLL = 0.05
LOG_TAIL_LINES = 30


class Failure(Exception):
    """A step failed; the message names it (and the log to read)."""


def say(message):
    print(message, file=sys.stderr, flush=True)


def log_tail(lines=LOG_TAIL_LINES):
    try:
        with open(LOG, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"\n--- {LOG}: cannot read: {e.strerror} ---"
    tail = "\n".join(text.splitlines()[-lines:])
    return f"\n--- last {lines} lines of {LOG} ---\n{tail}\n--- end of {LOG} ---"


def binary():
    """$TEST_S3S_FS (which must exist), else the cache's, else PATH's."""
    explicit = os.environ.get("TEST_S3S_FS")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise Failure(f"TEST_S3S_FS={explicit} is not an executable file")
        return explicit
    if os.access(DEFAULT_BINARY, os.X_OK):
        return DEFAULT_BINARY
    found = shutil.which("s3s-fs")
    if found:
        return found
    raise Failure(
        "s3s-fs not found: not in $TEST_S3S_FS, " + DEFAULT_BINARY + " nor on PATH. Install it "
        "with `cargo install --locked s3s-fs --version 0.14.1 --features binary --root "
        "/var/cache/glint-test/s3s-fs-0.14.1` (as .ci/run does), or point TEST_S3S_FS at one")


def pid():
    """The server's pid if the recorded process is alive (not a zombie: PID 1 may not reap
    orphans here) and serves our data directory; else None. The command line is checked, not
    the name: a pid file left by a killed server may name a pid that is now another process."""
    try:
        recorded = int(PID_FILE.read_text().split()[0])
        stat = Path(f"/proc/{recorded}/stat").read_text()
        argv = Path(f"/proc/{recorded}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        return None
    state = stat[stat.rindex(")") + 2:].split()[0]
    if state in ("Z", "X") or str(DATA).encode() not in argv:
        return None
    return recorded


def accepts():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex((HOST, PORT)) == 0


def wait_until(check, what, timeout, still_alive=None):
    deadline = time.monotonic() + timeout
    while not check():
        if still_alive is not None and not still_alive():
            raise Failure(f"{what}: the server exited" + log_tail())
        if time.monotonic() > deadline:
            raise Failure(f"{what}: still not done after {timeout:.0f} s" + log_tail())
        time.sleep(POLL)


def start():
    if pid() is not None:
        wait_until(accepts, f"s3s-fs: waiting for {HOST}:{PORT} to accept connections",
                   START_TIMEOUT)
        return
    if accepts():
        raise Failure(f"s3s-fs: {HOST}:{PORT} is already in use by a process that is not this "
                      f"script's server (see `ss -ltnp 'sport = :{PORT}'`)")
    exe = binary()
    started = time.monotonic()
    if DATA.exists():
        shutil.rmtree(DATA)
    (DATA / BUCKET).mkdir(parents=True)
    with open(LOG, "ab") as log:
        # A session of its own, so that it outlives us and our caller's signals; none of our
        # pipes (close_fds), or a caller reading our stdout would wait for it to exit.
        server = subprocess.Popen(
            [exe, "--host", HOST, "--port", str(PORT), "--access-key", ACCESS_KEY,
             "--secret-key", SECRET_KEY, str(DATA)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=AREA,
            start_new_session=True, close_fds=True)
    PID_FILE.write_text(f"{server.pid}\n")
    try:
        wait_until(accepts, f"s3s-fs: waiting for {HOST}:{PORT} to accept connections",
                   START_TIMEOUT, still_alive=lambda: server.poll() is None)
    except Failure:
        if server.poll() is None:
            server.kill()
            server.wait()
        raise
    say(f"s3s-fs: started (pid {server.pid}, {exe}) in {time.monotonic() - started:.1f} s; "
        f"data {DATA}; log {LOG}")


def stop():
    running = pid()
    if running is None:
        return
    try:
        os.kill(running, signal.SIGTERM)
    except ProcessLookupError:
        return
    wait_until(lambda: pid() is None, f"s3s-fs: waiting for pid {running} to exit after SIGTERM",
               STOP_TIMEOUT)
    say(f"s3s-fs: stopped (pid {running})")


def status():
    running = pid()
    if running is None:
        print(f"s3s-fs: stopped; data {DATA}; log {LOG}")
        return 3
    ready = accepts()
    print(f"s3s-fs: running (pid {running}) on {HOST}:{PORT}, "
          + ("accepting connections" if ready else "NOT accepting connections")
          + f"; data {DATA}; log {LOG}")
    return 0 if ready else 3


def fresh():
    """A new bucket: a new directory under the server's root (valid as a bucket name: lower
    case, digits and hyphens)."""
    if pid() is None:
        raise Failure("s3s-fs is not running: `tests/s3/server.py start` first")
    name = f"fresh-{os.urandom(6).hex()}"
    (DATA / name).mkdir()
    print(name, flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["start", "stop", "status", "fresh"])
    args = parser.parse_args(argv)
    try:
        if args.command == "status":
            return status()
        if args.command == "fresh":
            fresh()
            return 0
        AREA.mkdir(parents=True, exist_ok=True)
        # Serialised: parallel test processes may all call `start`.
        with open(AREA / "server.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if args.command == "start":
                start()
                for line in (f"TEST_S3_ENDPOINT={ENDPOINT}", f"TEST_S3_ACCESS_KEY={ACCESS_KEY}",
                             f"TEST_S3_SECRET_KEY={SECRET_KEY}", f"TEST_S3_BUCKET={BUCKET}",
                             f"TEST_S3_ROOT={DATA}"):
                    print(line, flush=True)
            else:
                stop()
        return 0
    except Failure as e:
        say(f"server.py {args.command}: {e}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
