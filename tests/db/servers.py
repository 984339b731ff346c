#!/usr/bin/env python3
"""The test suite's own database servers: a real PostgreSQL 15 and a real MariaDB, on loopback,
for glint's tests. This script owns their data, sockets, logs and lifecycle; nothing else in the
repository starts, stops or writes into them. Python 3 standard library only.

    servers.py start   [--engine postgres|mariadb|all]   # init if needed, start, wait, print URLs
    servers.py stop    [--engine postgres|mariadb|all]   # stop cleanly, wait until gone
    servers.py restart --engine postgres|mariadb|all     # stop then start, keeping the data
    servers.py status  [--engine postgres|mariadb|all]   # exit 0 only if all asked are running
    servers.py fresh   --engine postgres|mariadb         # a new, empty database: print its URL

`start` (and `restart`) print one line per engine on stdout, for a shell to `eval` or a test to
parse; everything else goes to stderr:

    TEST_POSTGRES_URL=postgres://glint:glint@127.0.0.1:55432/glint   (ports: see below)
    TEST_MARIADB_URL=mysql://glint:glint@127.0.0.1:53306/glint

The role/user `glint` (password `glint`) is a superuser that may create databases: tests create
one database per test. `start` is idempotent: a server that is already up is only waited for and
printed. The servers run detached and outlive this script.

Where things live: target/db/<engine>/ in the repository (git ignores target/), holding the data
directory, the server's log, its unix socket and pid file. The servers' own ports (55432, 53306,
each plus an offset from 0 to 499 derived from the repository's path, so that two checkouts on
one machine never meet)
and sockets never collide with the Debian packages' services (5432, 3306, /run/...), which this
script neither needs nor touches. Two cases move an engine's area to
/var/tmp/glint-test-db/<hash of the repository path>/<engine>, with target/db/<engine> a symlink
to it: the `postgres` system user (PostgreSQL refuses to run as root) cannot reach target/db
through the repository's parent directories, or the unix socket's path would be too long.

A data directory that is missing, half-initialised (no `initialised` stamp) or that the server
will not start on is deleted and initialised afresh. Invocations are serialised by a lock on
target/db/servers.lock, so parallel test processes may all call `start`.

Needs the Debian packages postgresql-15 (binaries in /usr/lib/postgresql/15/bin) and
mariadb-server (mariadbd, mariadb-install-db, mariadb, mariadb-admin).
"""

import argparse
import fcntl
import hashlib
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DB_ROOT = REPO / "target" / "db"
FALLBACK_ROOT = Path("/var/tmp/glint-test-db") / hashlib.sha256(str(REPO).encode()).hexdigest()[:12]

HOST = "127.0.0.1"
USER = PASSWORD = DATABASE = "glint"
# Each checkout its own ports (CI's clean clone beside a working copy whose servers still
# run): 55432 and 53306, offset by a hash of the repository's path.
PORT_OFFSET = int(hashlib.sha256(str(REPO).encode()).hexdigest(), 16) % 500
PG_PORT = 55432 + PORT_OFFSET
MARIADB_PORT = 53306 + PORT_OFFSET

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_MAJOR = "15"
MARIADB_SERVER = "/usr/sbin/mariadbd"

START_TIMEOUT = 120.0  # seconds; a cold init on a loaded 2-core machine takes a few
STOP_TIMEOUT = 60.0
POLL = 0.05
MAX_SOCKET_PATH = 100  # sun_path holds 107 characters; keep a margin
LOG_TAIL_LINES = 30

IS_ROOT = os.geteuid() == 0


class Failure(Exception):
    """A step failed; the message names it (and the log to read)."""


# --- helpers ------------------------------------------------------------------------------------


def say(message):
    print(message, file=sys.stderr, flush=True)


def clean_env():
    """Our environment without libpq's and the MariaDB client's variables (PGHOST, PGPASSWORD,
    MYSQL_PWD, ...), so that a developer's settings cannot redirect a command."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PG", "MYSQL", "MARIADB"))}


def log_tail(path, lines=LOG_TAIL_LINES):
    if path is None:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"\n--- {path}: cannot read: {e.strerror} ---"
    tail = "\n".join(text.splitlines()[-lines:])
    return f"\n--- last {lines} lines of {path} ---\n{tail}\n--- end of {path} ---"


def run(cmd, what, *, log=None, timeout=START_TIMEOUT, input=None):
    """Runs cmd to completion with its output captured; raises Failure naming `what`, with the
    output and the tail of `log`, if it fails. A server that cmd starts must not inherit our pipes
    (pg_ctl -l and our Popen of mariadbd redirect theirs), or this would wait for it to exit."""
    try:
        cp = subprocess.run(cmd, input=input,
                            stdin=None if input is not None else subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=timeout, cwd="/",
                            env=clean_env())
    except FileNotFoundError:
        raise Failure(f"{what}: {cmd[0]} is not installed") from None
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        raise Failure(f"{what}: no answer after {timeout:.0f} s: {shlex.join(map(str, cmd))}\n{out}"
                      + log_tail(log)) from None
    if cp.returncode != 0:
        output = (cp.stdout + cp.stderr).strip()
        raise Failure(f"{what} failed (exit {cp.returncode}): {shlex.join(map(str, cmd))}\n{output}"
                      + log_tail(log))
    return cp


def succeeds(cmd, timeout=10.0):
    try:
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=timeout, cwd="/",
                              env=clean_env()).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def wait_until(check, what, timeout, *, still_alive=None, log=None):
    """Polls check() until it holds; fails after timeout, or at once if still_alive() says the
    server died meanwhile."""
    deadline = time.monotonic() + timeout
    while not check():
        if still_alive is not None and not still_alive():
            raise Failure(f"{what}: the server exited" + log_tail(log))
        if time.monotonic() > deadline:
            raise Failure(f"{what}: still not done after {timeout:.0f} s" + log_tail(log))
        time.sleep(POLL)


def process_running(pid, comm):
    """True if pid is a live (not zombie) process named comm. Not just kill(pid, 0): a pid file
    left by a killed server may name a pid that is now another process, and here PID 1 does not
    reap orphans, so a dead server can linger as a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return False
    name = stat[stat.index("(") + 1:stat.rindex(")")]
    state = stat[stat.rindex(")") + 2:].split()[0]
    return name == comm and state not in ("Z", "X")


def read_pid(path):
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def port_in_use(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex((HOST, port)) == 0


def require_free_port(name, port):
    if port_in_use(port):
        raise Failure(f"{name}: {HOST}:{port} is already in use by a process that is not this "
                      f"script's server (see `ss -ltnp 'sport = :{port}'`)")


def as_postgres(cmd):
    """cmd run as the `postgres` system user when we are root (initdb and postgres refuse root).
    setpriv rather than runuser/su: no PAM session, nothing to log."""
    if not IS_ROOT:
        return cmd
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", *cmd]


def locate_area(name, *, create, unusable=None):
    """The directory that holds an engine's data, log and socket: target/db/<name>, or the
    fallback under /var/tmp that target/db/<name> links to. With create, a missing area is
    placed (in target/db unless unusable(path) gives a reason not to) and made; otherwise the
    path is returned whether or not it exists."""
    link = DB_ROOT / name
    if link.is_symlink() or link.exists() or not create:
        return link.resolve()
    DB_ROOT.mkdir(parents=True, exist_ok=True)
    reason = unusable(link) if unusable else None
    if reason is None:
        link.mkdir()
        return link
    area = FALLBACK_ROOT / name
    for d in (FALLBACK_ROOT.parent, FALLBACK_ROOT):
        d.mkdir(exist_ok=True)
        os.chmod(d, 0o755)
    area.mkdir(exist_ok=True)
    link.symlink_to(area, target_is_directory=True)
    say(f"{name}: data in {area} ({link} links there: {reason})")
    return area


def socket_too_long(path, socket_name):
    full = path.resolve() / socket_name
    if len(str(full)) > MAX_SOCKET_PATH:
        return f"the socket path {full} would be longer than {MAX_SOCKET_PATH} characters"
    return None


def wipe(area):
    if area.exists():
        shutil.rmtree(area)
    area.mkdir(parents=True)


# --- PostgreSQL ---------------------------------------------------------------------------------


class Server:
    """What starting is for either engine: wait for a running server, or initialise (when the
    data directory is missing or broken) and launch one, then bootstrap the glint login and
    check it over TCP. The engines say how (`init`, `launch`, `bootstrap`, `stop`, ...)."""

    def start(self):
        if self.pid() is not None:
            wait_until(self.ready, f"{self.name}: waiting for {self.waiting_for()}",
                       START_TIMEOUT, log=self.log)
            return
        # Checked first: a port taken by someone else must not pass for a broken data directory.
        require_free_port(self.name, self.port)
        started = time.monotonic()
        fresh = not self.initialised()
        if fresh:
            self.init()
        try:
            self.launch()
        except Failure as e:
            if fresh:
                raise
            say(f"{e}\n{self.name}: did not start on the existing data directory; initialising "
                "it afresh")
            self.stop()
            self.init()
            self.launch()
        self.bootstrap()
        self.check_login()
        self.stamp.write_text(f"{self.server_version()}\n")
        say(f"{self.name}: started (pid {self.pid()}) in {time.monotonic() - started:.1f} s; "
            f"log {self.log}")


class Postgres(Server):
    name = "postgres"
    port = PG_PORT
    env_name = "TEST_POSTGRES_URL"
    url = f"postgres://{USER}:{PASSWORD}@{HOST}:{PG_PORT}/{DATABASE}"
    socket_name = f".s.PGSQL.{PG_PORT}"

    def __init__(self, create=False):
        self.area = locate_area(self.name, create=create, unusable=self._unusable)
        self.data = self.area / "data"
        self.log = self.area / "postgres.log"
        self.stamp = self.area / "initialised"

    @staticmethod
    def _unusable(path):
        reason = socket_too_long(path, Postgres.socket_name)
        reachable = not IS_ROOT or succeeds(as_postgres(["test", "-x", str(path.parent)]))
        if reason is None and not reachable:
            reason = f"the postgres user cannot reach {path.parent} (check the parents' modes)"
        return reason

    def _bin(self, tool):
        path = PG_BIN / tool
        if not path.exists():
            raise Failure(f"postgres: {path} is missing: apt-get install postgresql-{PG_MAJOR}")
        return str(path)

    def pid(self):
        """The postmaster's pid if it is running on our data directory, else None."""
        pid = read_pid(self.data / "postmaster.pid")
        return pid if pid is not None and process_running(pid, "postgres") else None

    def ready(self):
        return succeeds([self._bin("pg_isready"), "-q", "-h", HOST, "-p", str(self.port),
                         "-d", "postgres", "-t", "2"])

    def initialised(self):
        try:
            version = (self.data / "PG_VERSION").read_text().strip()
        except OSError:
            return False
        return version == PG_MAJOR and self.stamp.exists()

    def init(self):
        started = time.monotonic()
        wipe(self.area)
        if IS_ROOT:
            shutil.chown(self.area, "postgres", "postgres")
        os.chmod(self.area, 0o700)
        run(as_postgres([self._bin("initdb"), "-D", str(self.data), "-U", "postgres",
                         "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8",
                         "--locale=C", "--no-sync", "--no-instructions"]),
            "postgres: initdb")
        with open(self.data / "postgresql.conf", "a") as f:
            f.write("\n# tests/db/servers.py rewrites glint-test.conf on every start.\n"
                    "include 'glint-test.conf'\n")
        say(f"postgres: initialised {self.data} in {time.monotonic() - started:.1f} s")

    def write_config(self):
        conf = self.data / "glint-test.conf"
        socket_dir = str(self.area).replace("'", "''")
        conf.write_text(f"""# tests/db/servers.py rewrites this on every start.
listen_addresses = '{HOST}'
port = {self.port}
unix_socket_directories = '{socket_dir}'
max_connections = 200
shared_buffers = 128MB
# Fast, and still durable against a killed server (only a machine crash loses data): no fsync
# and no full-page images, but synchronous_commit stays on, since off keeps the last commits in
# shared memory, where a kill -9 loses them; with fsync off, on costs only a write() per commit.
fsync = off
full_page_writes = off
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
timezone = 'UTC'
""")
        if IS_ROOT:
            shutil.chown(conf, "postgres", "postgres")

    def clear_stale_locks(self):
        """After a kill -9, postmaster.pid and the socket's lock file name a pid that postgres
        takes for a live postmaster if it exists at all (as a zombie, or reused)."""
        for lock in (self.data / "postmaster.pid", self.area / f"{self.socket_name}.lock"):
            pid = read_pid(lock)
            if lock.exists() and (pid is None or not process_running(pid, "postgres")):
                lock.unlink()
                say(f"postgres: removed the stale {lock}")

    def launch(self):
        self.clear_stale_locks()
        self.write_config()
        run(as_postgres([self._bin("pg_ctl"), "start", "-D", str(self.data), "-l", str(self.log),
                         "-w", "-t", str(int(START_TIMEOUT)), "-s"]),
            "postgres: pg_ctl start", log=self.log, timeout=START_TIMEOUT + 10)
        wait_until(self.ready, f"postgres: waiting for {HOST}:{self.port} to accept connections",
                   START_TIMEOUT, still_alive=lambda: self.pid() is not None, log=self.log)

    def bootstrap(self):
        """The glint role and database, idempotently, as the postgres superuser over the socket."""
        sql = f"""
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{USER}') THEN CREATE ROLE {USER}; END IF;
END $$;
ALTER ROLE {USER} WITH LOGIN SUPERUSER CREATEDB CREATEROLE PASSWORD '{PASSWORD}';
SELECT 'CREATE DATABASE {DATABASE} OWNER {USER}'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{DATABASE}')\\gexec
"""
        run([self._bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.area),
             "-p", str(self.port), "-U", "postgres", "-d", "postgres"],
            "postgres: creating the glint role and database", log=self.log, input=sql)

    def check_login(self):
        run([self._bin("psql"), "-X", "-q", "-t", "-c", "SELECT 1", self.url],
            f"postgres: logging in as {USER} over TCP", log=self.log)

    def fresh(self, name):
        """A new, empty database owned by glint; returns its URL."""
        run([self._bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c",
             f"CREATE DATABASE {name} OWNER {USER}", self.url],
            f"postgres: creating database {name}", log=self.log)
        return self.url.rsplit("/", 1)[0] + "/" + name

    def waiting_for(self):
        return f"{HOST}:{self.port} to accept connections"

    def stop(self):
        pid = self.pid()
        if pid is None:
            if self.data.exists():
                self.clear_stale_locks()
            return
        run(as_postgres([self._bin("pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w",
                         "-t", str(int(STOP_TIMEOUT)), "-s"]),
            "postgres: pg_ctl stop", log=self.log, timeout=STOP_TIMEOUT + 10)
        wait_until(lambda: not process_running(pid, "postgres"),
                   f"postgres: waiting for pid {pid} to exit", STOP_TIMEOUT, log=self.log)
        say(f"postgres: stopped (pid {pid})")

    def server_version(self):
        return run([self._bin("postgres"), "--version"], "postgres --version").stdout.strip()


# --- MariaDB ------------------------------------------------------------------------------------


class MariaDB(Server):
    name = "mariadb"
    port = MARIADB_PORT
    env_name = "TEST_MARIADB_URL"
    url = f"mysql://{USER}:{PASSWORD}@{HOST}:{MARIADB_PORT}/{DATABASE}"
    socket_name = "mariadb.sock"

    def __init__(self, create=False):
        self.area = locate_area(self.name, create=create,
                                unusable=lambda p: socket_too_long(p, self.socket_name))
        self.data = self.area / "data"
        self.log = self.area / "mariadb.err"
        self.socket = self.area / self.socket_name
        self.pid_file = self.area / "mariadb.pid"
        self.config = self.area / "my.cnf"
        self.stamp = self.area / "initialised"
        # Who we are to the server over the socket: install-db makes an all-powerful account of
        # that name that only the OS user of that name may use, over the socket (unix_socket).
        self.admin = pwd.getpwuid(os.geteuid()).pw_name

    @staticmethod
    def _tool(tool):
        path = shutil.which(tool) or (tool if os.path.exists(tool) else None)
        if path is None:
            raise Failure(f"mariadb: {tool} is missing: apt-get install mariadb-server")
        return path

    def client(self, tool, *args):
        return [self._tool(tool), "--no-defaults", "--protocol=socket", f"--socket={self.socket}",
                f"--user={self.admin}", *args]

    def pid(self):
        pid = read_pid(self.pid_file)
        return pid if pid is not None and process_running(pid, "mariadbd") else None

    def ready(self):
        return succeeds(self.client("mariadb-admin", "--connect-timeout=2", "ping"))

    def initialised(self):
        return (self.data / "mysql" / "global_priv.frm").exists() and self.stamp.exists()

    def write_config(self):
        user_line = "user = root\n" if IS_ROOT else ""
        self.config.write_text(f"""# tests/db/servers.py rewrites this on every start.
# A root shell on the server: mariadb --defaults-file={self.config} -u {self.admin}
[client]
socket = {self.socket}
port = {self.port}

[mariadbd]
{user_line}datadir = {self.data}
port = {self.port}
bind-address = {HOST}
socket = {self.socket}
pid-file = {self.pid_file}
log-error = {self.log}
skip-log-bin
skip-name-resolve
character-set-server = utf8mb4
max_connections = 300
innodb_buffer_pool_size = 128M
# 2: the log is written to the OS at each commit (a killed server loses nothing) and flushed
# once a second; 0 would lose up to a second of commits to a kill -9.
innodb_flush_log_at_trx_commit = 2
innodb_doublewrite = 0
""")

    def init(self):
        started = time.monotonic()
        wipe(self.area)
        self.write_config()
        cmd = [self._tool("mariadb-install-db"), f"--defaults-file={self.config}",
               f"--datadir={self.data}", "--skip-test-db", "--skip-name-resolve",
               "--auth-root-authentication-method=socket", f"--auth-root-socket-user={self.admin}"]
        if IS_ROOT:
            cmd.append("--user=root")
        run(cmd, "mariadb: mariadb-install-db", log=self.log)
        say(f"mariadb: initialised {self.data} in {time.monotonic() - started:.1f} s")

    def launch(self):
        self.write_config()
        with open(self.log, "ab") as log:
            # A session of its own, so that it outlives us and our caller's signals; no pipe of
            # ours and not the lock (close_fds), or the lock would be held as long as it runs.
            server = subprocess.Popen(
                [self._tool(MARIADB_SERVER), f"--defaults-file={self.config}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.area,
                env=clean_env(), start_new_session=True, close_fds=True)
        try:
            wait_until(self.ready, f"mariadb: waiting for {self.socket} to answer a ping",
                       START_TIMEOUT, still_alive=lambda: server.poll() is None, log=self.log)
        except Failure:
            if server.poll() is None:
                server.terminate()
                try:
                    server.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    server.kill()
            raise

    def bootstrap(self):
        """The glint user (from anywhere; skip-name-resolve makes 127.0.0.1 match '%', the socket
        'localhost') and the glint database, idempotently, as root over the socket."""
        statements = []
        for host in ("%", "localhost"):
            account = f"'{USER}'@'{host}'"
            statements += [
                f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY '{PASSWORD}'",
                f"ALTER USER {account} IDENTIFIED BY '{PASSWORD}'",
                f"GRANT ALL PRIVILEGES ON *.* TO {account} WITH GRANT OPTION",
            ]
        statements.append(f"CREATE DATABASE IF NOT EXISTS {DATABASE} CHARACTER SET utf8mb4")
        run(self.client("mariadb", "--batch"), "mariadb: creating the glint user and database",
            log=self.log, input=";\n".join(statements) + ";\n")

    def check_login(self):
        run([self._tool("mariadb"), "--no-defaults", "--protocol=tcp", f"--host={HOST}",
             f"--port={self.port}", f"--user={USER}", f"--password={PASSWORD}", "--batch",
             "--skip-column-names", "--execute=SELECT 1", DATABASE],
            f"mariadb: logging in as {USER} over TCP", log=self.log)

    def fresh(self, name):
        """A new, empty database (text compared byte by byte, as glint's tables are); returns
        its URL."""
        run([self._tool("mariadb"), "--no-defaults", "--protocol=tcp", f"--host={HOST}",
             f"--port={self.port}", f"--user={USER}", f"--password={PASSWORD}", "--batch",
             f"--execute=CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"],
            f"mariadb: creating database {name}", log=self.log)
        return self.url.rsplit("/", 1)[0] + "/" + name

    def waiting_for(self):
        return f"{self.socket} to answer a ping"

    def stop(self):
        pid = self.pid()
        if pid is None:
            return
        # SIGTERM is mariadbd's clean shutdown, and needs no account; then wait for the pid.
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        wait_until(lambda: not process_running(pid, "mariadbd"),
                   f"mariadb: waiting for pid {pid} to exit after SIGTERM", STOP_TIMEOUT,
                   log=self.log)
        say(f"mariadb: stopped (pid {pid})")

    def server_version(self):
        return run([self._tool(MARIADB_SERVER), "--no-defaults", "--version"],
                   "mariadbd --version").stdout.strip()


ENGINES = {"postgres": Postgres, "mariadb": MariaDB}


# --- commands -----------------------------------------------------------------------------------


def take_lock():
    DB_ROOT.mkdir(parents=True, exist_ok=True)
    lock = open(DB_ROOT / "servers.lock", "a")
    fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def engines(choice):
    return list(ENGINES) if choice == "all" else [choice]


def cmd_start(names):
    for name in names:
        ENGINES[name](create=True).start()
    for name in names:
        print(f"{ENGINES[name].env_name}={ENGINES[name].url}", flush=True)


def cmd_stop(names):
    for name in names:
        ENGINES[name]().stop()


def cmd_restart(names):
    cmd_stop(names)
    cmd_start(names)


def cmd_status(names):
    all_up = True
    for name in names:
        engine = ENGINES[name]()
        pid = engine.pid()
        if pid is None:
            all_up = False
            state = "stopped"
        else:
            ready = engine.ready()
            all_up &= ready
            state = (f"running (pid {pid}) on {HOST}:{engine.port}, "
                     + ("accepting connections" if ready else "NOT accepting connections"))
        print(f"{name}: {state}; data {engine.data}; log {engine.log}")
    return 0 if all_up else 3


def cmd_fresh(names):
    for name in names:
        print(ENGINES[name]().fresh(f"fresh_{os.urandom(6).hex()}"), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("start", "stop", "restart", "status", "fresh"):
        p = sub.add_parser(command)
        choices = ["postgres", "mariadb"] + ([] if command == "fresh" else ["all"])
        p.add_argument("--engine", choices=choices,
                       required=command in ("restart", "fresh"), default="all")
    args = parser.parse_args(argv)
    names = engines(args.engine)
    try:
        if args.command == "status":
            return cmd_status(names)
        if args.command == "fresh":
            cmd_fresh(names)
            return 0
        with take_lock():
            {"start": cmd_start, "stop": cmd_stop, "restart": cmd_restart}[args.command](names)
        return 0
    except Failure as e:
        say(f"servers.py {args.command}: {e}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
