#!/usr/bin/env python3
"""The catalogue on each database engine, printed as a table (docs/benchmarks.md). One run
measures every engine the same way, one after the other, with SQLite as the reference (each
figure of PostgreSQL and MariaDB is followed by its ratio to SQLite's):
  - GET /v2/images?limit=25: req/s and p99 with 100 images, with a big catalogue (100,000
    images, seeded by direct SQL inserts), and the page after a marker in the middle of the big
    one (keyset paging: all three should be flat)
  - POST /v2/images (`{"name": "bench", "disk_format": "raw", "container_format": "bare"}`)
  - PATCH (a JSON patch replacing the name) of one image, and spread over 100 images
  - GET (100 images), POST and both PATCHes with TWO glint processes on one database (SQLite:
    two processes on one file), each node loaded by its own wrk -t2 -c8 at the same time:
    req/s summed, the worse p99 of the two
  - failed requests (socket errors + non-2xx) of every measurement, and the WARN/ERROR lines
    glint logged
  - after every run that writes, a PATCH on each node (wrk hangs up on the requests in flight
    when its time is up): a node that can no longer write is named in the table, and all nodes
    are restarted before the next run
glint runs under tests/harness/activated.py (socket passed in) with workers = 2, log.level =
warn, noauth and the default store in its state directory. PostgreSQL and MariaDB are the test
suite's servers (tests/db/servers.py, started if they are not running); each engine gets two
new, empty databases (the 100 images, the big catalogue), dropped afterwards. glint creates the
schema at its start; the images (public, active, one os_distro property each, created 1 ms
apart) are then inserted straight into its tables (sqlite3, psql COPY, multi-row INSERTs to the
mariadb client; the servers ANALYZE them, as they would by themselves in time) while it runs:
it caches no metadata.

Usage: tests/bench/db.py [--binary PATH] [--duration 10] [--engines sqlite,postgres,mariadb]
                         [--big 100000]
(needs wrk; does not build: --binary defaults to target/release/glint, from
`cargo build --release`; --big 10000 and --duration 2 keep a run short while developing)
"""

import argparse
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
from activated import ActivatedGlint, listening_socket  # noqa: E402
from bench import ROOT, wrk  # noqa: E402

SERVERS = os.path.join(ROOT, "tests", "db", "servers.py")


def server_url(engine):
    """The URL of the suite's `engine` server (its `glint` database), as servers.py prints it
    (the ports depend on the checkout)."""
    out = client([sys.executable, SERVERS, "start", "--engine", engine])
    name = {"postgres": "TEST_POSTGRES_URL", "mariadb": "TEST_MARIADB_URL"}[engine]
    return next(line.split("=", 1)[1] for line in out.splitlines() if line.startswith(name + "="))
WORKERS = 2
SMALL = 100
PATCHED = 100  # images the spread PATCH cycles over (the SMALL seeded ones)
LIST = "/v2/images?limit=25"
NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL", "mariadb": "MariaDB"}


def say(message):
    print(message, file=sys.stderr, flush=True)


def clean_env():
    """Without libpq's and the MariaDB client's variables, so nothing redirects a client."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PG", "MYSQL", "MARIADB"))}


def client(cmd, script=None):
    """Runs a database client with `script` on stdin; its stdout, or an error with its output."""
    done = subprocess.run(cmd, input=script, capture_output=True, text=True, env=clean_env())
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed (exit {done.returncode}): {done.stderr.strip()[:2000]}")
    return done.stdout


# --- the catalogue's rows -------------------------------------------------------------------


def seed_rows(count):
    """`count` public active images, 1 ms apart (microseconds since the epoch), oldest first:
    (id, name, created_at)."""
    now = int(time.time() * 1_000_000) - 10_000_000
    return [(str(uuid.uuid4()), f"seed-{i}", now - (count - i) * 1000) for i in range(count)]


IMAGE_COLUMNS = "id, name, status, visibility, disk_format, container_format, created_at, updated_at"


# --- the engines ----------------------------------------------------------------------------


class Sqlite:
    """A database file of its own in `workdir`, which both nodes open by its absolute path."""

    engine = "sqlite"

    def __init__(self, workdir):
        self.path = os.path.join(workdir, "glint.db")
        self.url = f"sqlite://{self.path}"

    def seed(self, rows):
        con = sqlite3.connect(self.path, timeout=30)
        with con:
            con.executemany(
                f"INSERT INTO images ({IMAGE_COLUMNS}) VALUES (?, ?, 'active', 'public', 'raw', 'bare', ?, ?)",
                [(i, n, t, t) for i, n, t in rows])
            con.executemany(
                "INSERT INTO image_properties (image_id, name, value) VALUES (?, 'os_distro', 'debian')",
                [(r[0],) for r in rows])
        con.close()  # no ANALYZE: glint never runs it on SQLite (the servers do, by themselves)

    def drop(self):
        pass

    @staticmethod
    def version():
        return None  # glint's own (bundled) SQLite, not Python's


class Postgres:
    """A new database on the test suite's PostgreSQL; rows seeded with psql's COPY."""

    engine = "postgres"

    def __init__(self, workdir):
        self.url = client([sys.executable, SERVERS, "fresh", "--engine", "postgres"]).strip()
        self.base, self.name = self.url.rsplit("/", 1)

    def psql(self, script, url=None):
        return client(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url or self.url], script)

    def seed(self, rows):
        images = "".join(f"{i}\t{n}\tactive\tpublic\traw\tbare\t{t}\t{t}\n" for i, n, t in rows)
        properties = "".join(f"{r[0]}\tos_distro\tdebian\n" for r in rows)
        self.psql(f"BEGIN;\nCOPY images ({IMAGE_COLUMNS}) FROM STDIN;\n{images}\\.\n"
                  f"COPY image_properties (image_id, name, value) FROM STDIN;\n{properties}\\.\n"
                  "COMMIT;\nANALYZE images;\nANALYZE image_properties;\n")

    def drop(self):
        self.psql(f"DROP DATABASE {self.name} WITH (FORCE);\n", url=f"{self.base}/glint")

    @staticmethod
    def version():
        url = server_url("postgres")
        return "PostgreSQL " + client(["psql", "-X", "-A", "-t", "-d", url, "-c", "SHOW server_version"]).strip()


class MariaDB:
    """A new database on the test suite's MariaDB; rows seeded with multi-row INSERTs piped to
    the mariadb client."""

    engine = "mariadb"
    BATCH = 5000

    def __init__(self, workdir):
        self.url = client([sys.executable, SERVERS, "fresh", "--engine", "mariadb"]).strip()
        self.name = self.url.rsplit("/", 1)[1]

    @staticmethod
    def mariadb(script, database=""):
        url = urllib.parse.urlsplit(server_url("mariadb"))
        return client(["mariadb", "--no-defaults", "--protocol=tcp", f"--host={url.hostname}",
                       f"--port={url.port}", f"--user={url.username}", f"--password={url.password}",
                       "--batch", "--skip-column-names", *([database] if database else [])], script)

    def seed(self, rows):
        parts = ["SET autocommit = 0;\n"]
        for start in range(0, len(rows), self.BATCH):
            batch = rows[start:start + self.BATCH]
            parts.append(f"INSERT INTO images ({IMAGE_COLUMNS}) VALUES "
                         + ",".join(f"('{i}','{n}','active','public','raw','bare',{t},{t})" for i, n, t in batch)
                         + ";\n")
            parts.append("INSERT INTO image_properties (image_id, name, value) VALUES "
                         + ",".join(f"('{r[0]}','os_distro','debian')" for r in batch) + ";\n")
        parts.append("COMMIT;\nANALYZE TABLE images, image_properties;\n")
        self.mariadb("".join(parts), self.name)

    def drop(self):
        self.mariadb(f"DROP DATABASE {self.name};\n")

    @classmethod
    def version(cls):
        return "MariaDB " + cls.mariadb("SELECT VERSION();\n").strip()


ENGINES = {"sqlite": Sqlite, "postgres": Postgres, "mariadb": MariaDB}


# --- glint ----------------------------------------------------------------------------------


class Node(ActivatedGlint):
    """One glint on `db_url`, with a state directory of its own in `workdir`."""

    def __init__(self, binary, workdir, sock, db_url):
        self.db_url = db_url
        os.makedirs(workdir, exist_ok=True)
        super().__init__(binary, workdir, sock)

    def write_config(self):
        with open(self.config, "w") as f:
            f.write(f'state_dir = "{self.workdir}/state"\n'
                    f'[server]\nlisten = ["127.0.0.1:1"]\nworkers = {WORKERS}\n'
                    '[log]\nlevel = "warn"\n'
                    f'[database]\nurl = "{self.db_url}"\n')

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            say(f"glint (pid {self.proc.pid}) still running 60 s after SIGTERM: killed")
            self.proc.kill()
            self.proc.wait()
        self.close_notify()  # and removes it: a restarted node binds it again
        with open(self.log) as f:
            lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).rstrip() for line in f]  # text logs are coloured
        return [line for line in lines if " WARN " in line or " ERROR " in line]


PATCH_TYPE = "application/openstack-images-v2.1-json-patch"


def call(node, method, path, body=None, content_type="application/json", timeout=30):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(node.url + path, data=data, method=method,
                                     headers={"Content-Type": content_type} if data else {})
    with urllib.request.urlopen(request, timeout=timeout) as r:
        return json.loads(r.read())


# --- load -----------------------------------------------------------------------------------


def write_scripts(workdir, ids):
    """The wrk scripts: POST, PATCH of ids[0], and for each of two nodes a PATCH cycling over
    `ids` (each wrk thread, and each node, from its own place in the cycle)."""
    scripts = {}
    header = 'wrk.headers["Content-Type"] = "application/%s"\n'
    scripts["post"] = os.path.join(workdir, "post.lua")
    with open(scripts["post"], "w") as f:
        f.write('wrk.method = "POST"\n'
                'wrk.body = \'{"name": "bench", "disk_format": "raw", "container_format": "bare"}\'\n'
                + header % "json")
    scripts["patch-one"] = os.path.join(workdir, "patch-one.lua")
    with open(scripts["patch-one"], "w") as f:
        f.write(f'wrk.method = "PATCH"\nwrk.path = "/v2/images/{ids[0]}"\n'
                'wrk.body = \'[{"op": "replace", "path": "/name", "value": "x"}]\'\n'
                + header % "openstack-images-v2.1-json-patch")
    listed = ", ".join(f'"{i}"' for i in ids)
    for node in (0, 1):
        scripts[f"patch-many-{node}"] = os.path.join(workdir, f"patch-many-{node}.lua")
        with open(scripts[f"patch-many-{node}"], "w") as f:
            f.write(f"""local ids = {{{listed}}}
local body = '[{{"op": "replace", "path": "/name", "value": "x"}}]'
local headers = {{["Content-Type"] = "application/openstack-images-v2.1-json-patch"}}
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("first", {node * len(ids) // 2} + threads * {len(ids) // 4})
end
function init(args)
  n = first or 0
end
function request()
  n = n + 1
  return wrk.format("PATCH", "/v2/images/" .. ids[n % #ids + 1], headers, body)
end
""")
    return scripts


def load(nodes, duration, path, scripts=(None, None)):
    """wrk -t2 -c16 on one node, or a wrk -t2 -c8 on each of two nodes at the same time
    (scripts[i] for node i): req/s summed, the worse p99, failures summed."""
    if len(nodes) == 1:
        return wrk(nodes[0].port, duration, connections=16, path=path, script=scripts[0])
    results, failures = [None] * len(nodes), []

    def run(i):
        try:
            results[i] = wrk(nodes[i].port, duration, connections=8, path=path, script=scripts[i])
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(nodes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
    return {
        "rps": sum(r["rps"] for r in results),
        "p50": max(r["p50"] for r in results),
        "p99": max(r["p99"] for r in results),
        "max": max(r["max"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "split": [r["rps"] for r in results],
    }


def check_page(node, marker=None, expect_first=None):
    """The page holds 25 images and, after a marker, starts where keyset paging says."""
    path = LIST + (f"&marker={marker}" if marker else "")
    images = call(node, "GET", path)["images"]
    if len(images) != 25:
        raise RuntimeError(f"{path}: {len(images)} images, not 25")
    if expect_first and images[0]["name"] != expect_first:
        raise RuntimeError(f"{path}: the page starts at {images[0]['name']}, not {expect_first}")


# --- one engine -----------------------------------------------------------------------------


def measure(engine, binary, duration, big):
    """Every figure of one engine: {what: wrk result}, glint's WARN/ERROR lines, and the
    nodes found unable to write after a run (restarted before the next)."""
    kind = ENGINES[engine]
    results, logged, wedged = {}, [], []
    nodes, dirs = {}, {}
    socks = {"a": listening_socket(), "b": listening_socket()}
    for s in socks.values():
        s.listen(1024)

    def start(name, url):
        nodes[name] = Node(binary, os.path.join(dirs["work"], name), socks[name], url)
        return nodes[name]

    def stop(name):
        logged.extend(nodes.pop(name).stop())

    def short(failure):
        return "timed out" if "timed out" in failure else failure.replace("HTTP Error ", "HTTP ")

    def writable(name, probe):
        """A PATCH still succeeds on the node, within 10 s."""
        try:
            call(nodes[name], "PATCH", f"/v2/images/{probe}",
                 [{"op": "replace", "path": "/name", "value": "probe"}], PATCH_TYPE, timeout=10)
            return None
        except OSError as e:  # HTTPError and timeouts included
            return str(e)[:200]

    def step(what, names, path, scripts=(None, None), probe=None):
        say(f"  {engine}: {what}")
        results[what] = load([nodes[n] for n in names], duration, path, scripts)
        # wrk hangs up on the requests in flight when its time is up: check that this left no
        # node unable to write, else restart them all (on SQLite, a node stuck in a write
        # transaction holds the file's write lock: the other node's writes wait behind it, and
        # it cannot start again until the stuck one has gone). Noted in the table.
        failures = {name: writable(name, probe) for name in sorted(nodes)} if probe else {}
        failed = {name: failure for name, failure in failures.items() if failure}
        if failed:
            for name, failure in failed.items():
                say(f"  {engine}: after {what}, node {name} cannot write: {failure}")
            say(f"  {engine}: restarting {', '.join(sorted(nodes))}")
            wedged.append(f"{what} ({'; '.join(f'{n}: {short(f)}' for n, f in failed.items())})")
            urls = {name: node.db_url for name, node in nodes.items()}
            for name in list(nodes):
                stop(name)
            for name in sorted(urls):
                start(name, urls[name])

    def drop(db):
        try:
            db.drop()
        except Exception as e:  # noqa: BLE001 - the figures stand; the database is left behind
            say(f"  {engine}: could not drop the database: {e}")

    try:
        # 100 images: GET and PATCH on one node, then on two; POST on one, then on two.
        with tempfile.TemporaryDirectory(dir="/var/tmp") as workdir:
            dirs["work"] = workdir
            db = kind(workdir)
            try:
                a = start("a", db.url)
                rows = seed_rows(SMALL)
                db.seed(rows)
                check_page(a)
                ids = [r[0] for r in rows[-PATCHED:]]
                probe = ids[-1]
                scripts = write_scripts(workdir, ids)
                load([a], 1, LIST)  # warm-up: the pool's connections, the caches
                step("get-100", "a", LIST)
                step("patch-one", "a", f"/v2/images/{ids[0]}", (scripts["patch-one"],), probe)
                step("patch-many", "a", LIST, (scripts["patch-many-0"],), probe)
                check_page(start("b", db.url))
                step("2:get-100", "ab", LIST)
                step("2:patch-one", "ab", f"/v2/images/{ids[0]}", (scripts["patch-one"],) * 2, probe)
                step("2:patch-many", "ab", LIST, (scripts["patch-many-0"], scripts["patch-many-1"]), probe)
                stop("b")
                step("post", "a", "/v2/images", (scripts["post"],), probe)
                start("b", db.url)
                step("2:post", "ab", "/v2/images", (scripts["post"],) * 2, probe)
            finally:
                for name in list(nodes):
                    stop(name)
                drop(db)
        # The big catalogue: the first page, and the page after a marker in its middle.
        with tempfile.TemporaryDirectory(dir="/var/tmp") as workdir:
            dirs["work"] = workdir
            db = kind(workdir)
            try:
                a = start("a", db.url)
                started = time.monotonic()
                rows = seed_rows(big)
                db.seed(rows)
                say(f"  {engine}: seeded {big:,} images in {time.monotonic() - started:.1f} s")
                middle = len(rows) // 2
                check_page(a, expect_first=rows[-1][1])
                check_page(a, marker=rows[middle][0], expect_first=rows[middle - 1][1])
                load([a], 1, LIST)  # warm-up
                step("get-big", "a", LIST)
                step("get-big-marker", "a", f"{LIST}&marker={rows[middle][0]}")
            finally:
                for name in list(nodes):
                    stop(name)
                drop(db)
    finally:
        for s in socks.values():
            s.close()
    return results, logged, wedged


# --- the table ------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "glint"))
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--engines", default="sqlite,postgres,mariadb")
    parser.add_argument("--big", type=int, default=100_000, help="images in the big catalogue")
    args = parser.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown or not engines:
        parser.error(f"--engines: one or more of {', '.join(ENGINES)} (not {', '.join(unknown) or 'none'})")
    if not os.access(args.binary, os.X_OK):
        parser.error(f"{args.binary} is not an executable (cargo build --release, or --binary PATH)")
    servers = [e for e in engines if e != "sqlite"]
    for engine in servers:
        subprocess.run([sys.executable, SERVERS, "start", "--engine", engine], check=True,
                       stdout=subprocess.DEVNULL, env=clean_env())

    started = time.monotonic()
    figures, logs, wedged = {}, {}, {}
    for engine in engines:
        say(f"{engine}:")
        figures[engine], logs[engine], wedged[engine] = measure(engine, args.binary, args.duration, args.big)
    took = time.monotonic() - started

    reference = "sqlite" if "sqlite" in engines else engines[0]

    def cell(engine, what):
        r = figures[engine][what]
        text = f"{r['rps']:,.0f} req/s"
        if engine != reference:
            text += f" (×{r['rps'] / figures[reference][what]['rps']:.2f})"
        text += f", p99 {r['p99']:.2f} ms"
        if what.startswith("2:") or r["errors"]:
            text += f", {r['errors']} failed"
        return text

    big = f"{args.big:,}"
    rows = [
        ("get-100", f"GET {LIST}, 100 images"),
        ("get-big", f"GET {LIST}, {big} images"),
        ("get-big-marker", f"GET {LIST}&marker=(the middle), {big} images"),
        ("post", "POST /v2/images"),
        ("patch-one", "PATCH /v2/images/ID, one image"),
        ("patch-many", f"PATCH, spread over {PATCHED} images"),
        ("2:get-100", f"two nodes: GET {LIST}, 100 images"),
        ("2:post", "two nodes: POST /v2/images"),
        ("2:patch-one", "two nodes: PATCH, one image"),
        ("2:patch-many", f"two nodes: PATCH, spread over {PATCHED} images"),
    ]
    versions = [v for v in (ENGINES[e].version() for e in engines) if v]
    print(f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, wrk -t2 -c16 -d{args.duration}s")
    print(f"# workers = {WORKERS}, log.level = warn, noauth; {', '.join(versions) or 'SQLite only'}; "
          "two nodes: one wrk -t2 -c8 on each at once (req/s summed, the worse p99); "
          f"ratios to {NAMES[reference]}; the run took {took:.0f} s")
    print("| what | " + " | ".join(NAMES[e] for e in engines) + " |")
    print("|---|" + "---|" * len(engines))
    for what, label in rows:
        print(f"| {label} | " + " | ".join(cell(e, what) for e in engines) + " |")
    print(f"| {big} images listed as fast as 100 (GET req/s, first page / after the marker) | "
          + " | ".join(f"{figures[e]['get-big']['rps'] / figures[e]['get-100']['rps']:.2f} / "
                       f"{figures[e]['get-big-marker']['rps'] / figures[e]['get-100']['rps']:.2f}"
                       for e in engines) + " |")
    print("| failed requests, all rows (socket errors + non-2xx) | "
          + " | ".join(str(sum(r["errors"] for r in figures[e].values())) for e in engines) + " |")
    print("| WARN/ERROR lines glint logged | "
          + " | ".join(str(len(logs[e])) for e in engines) + " |")
    print("| nodes unable to write after a run (a PATCH probe; all then restarted) | "
          + " | ".join(", ".join(wedged[e]) or "none" for e in engines) + " |")
    for engine in engines:
        counts = {}
        for line in logs[engine]:
            message = line.split(" ", 1)[-1][:300]  # without its timestamp
            counts[message] = counts.get(message, 0) + 1
        for message, count in sorted(counts.items(), key=lambda mc: -mc[1])[:8]:
            say(f"{engine}: glint logged {count}×: {message}")
    say(f"took {took:.0f} s")
    failed = sum(r["errors"] for e in engines for r in figures[e].values())
    return 1 if failed or any(wedged.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
