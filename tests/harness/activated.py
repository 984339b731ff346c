"""glint under a socket-activation harness for the Python test suites: the test binds the
listening socket and passes it in as fd 3 (LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES), so no port is
bound, released and bound again, and reads READY/RELOADING from a NOTIFY_SOCKET of its own.
What goes in the config is the subclass's `write_config`. `stop()` then `start()` is a restart
as systemd's socket unit makes it: the socket stays open here meanwhile, so connections wait in
its backlog for the new process. Like systemd 254 with an fd store (`$FDSTORE`), it keeps the
fds glint stores (FDSTORE=1: keep-alive connections parked at stop) and passes them to the
next start after the socket."""

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import time

# What the packaged unit's FileDescriptorStoreMax= is.
FD_STORE_MAX = 4352


def listening_socket(host="127.0.0.1"):
    """A socket bound to a free port of `host` and listening: what systemd's socket unit
    would pass."""
    sock = socket.socket()
    sock.bind((host, 0))
    sock.listen(128)
    return sock


class ActivatedGlint:
    """glint serving `sock`; `write_config()` writes `self.config` before every start and
    reload."""

    def __init__(self, binary, workdir, sock):
        self.binary, self.workdir, self.sock = binary, workdir, sock
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = os.path.join(workdir, "glint.toml")
        self.log = os.path.join(workdir, "glint.log")
        self.notify_path = os.path.join(workdir, "notify.sock")
        self.store = {}  # FDNAME -> fd, across restarts
        self._launch(log_mode="w")

    def _launch(self, log_mode):
        self.write_config()
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        names = ["api", *self.store]
        # Out of the way of 3, 4, ... first, then placed there in the child.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3 + len(names))
                for fd in [self.sock.fileno(), *self.store.values()]]

        def place():
            for i, fd in enumerate(high):
                os.dup2(fd, 3 + i)

        env = dict(os.environ, NOTIFY_SOCKET=self.notify_path, FDSTORE=str(FD_STORE_MAX),
                   LISTEN_FDS=str(len(names)), LISTEN_FDNAMES=":".join(names))
        for key in ("JOURNAL_STREAM", "STATE_DIRECTORY", "RUNTIME_DIRECTORY"):
            env.pop(key, None)
        try:
            with open(self.log, log_mode) as log:
                self.proc = subprocess.Popen(
                    ["sh", "-c", 'LISTEN_PID=$$ exec "$0" serve --config "$1"',
                     self.binary, self.config],
                    env=env, preexec_fn=place, close_fds=False, stderr=log)
        finally:
            for fd in high:
                os.close(fd)
        self.wait_for("READY=1")

    def start(self):
        """glint again after stop(), on the same socket, workdir and state: a restart. The log
        goes on in the same file; returns once the new process says READY=1."""
        if self.proc.poll() is None:
            raise RuntimeError(f"glint (pid {self.proc.pid}) is still running: stop() it first")
        self._launch(log_mode="a")

    def write_config(self):
        raise NotImplementedError("a subclass says what glint is configured with")

    def wait_for(self, line, timeout=60):
        """Reads notifications (keeping the fds they store) until one has `line`."""
        self.notify.settimeout(timeout)
        while True:
            data, fds, _, _ = socket.recv_fds(self.notify, 4096, 16)
            message = data.decode()
            lines = message.splitlines()
            name = next((l[len("FDNAME="):] for l in lines if l.startswith("FDNAME=")), "stored")
            if "FDSTORE=1" in lines or "FDSTOREREMOVE=1" in lines:
                with contextlib.suppress(KeyError):
                    os.close(self.store.pop(name))
            if "FDSTORE=1" in lines and fds:
                self.store[name] = fds.pop()
            for fd in fds:
                os.close(fd)
            if line in lines:
                return message

    def reload(self):
        """Rewrites the config and reloads (SIGHUP, as systemd's Type=notify-reload sends it);
        returns the READY message with its STATUS/ERRNO."""
        self.write_config()
        self.proc.send_signal(signal.SIGHUP)
        self.wait_for("RELOADING=1")
        return self.wait_for("READY=1")

    def stop(self):
        """SIGTERM, and waits for the process to exit; the socket stays open (the caller's).
        The notify socket is closed and removed, so that start() (or another instance in this
        workdir) binds it again."""
        self.proc.send_signal(signal.SIGTERM)
        self.close_notify(timeout=60)

    def close_notify(self, timeout=60):
        """Keeps every fd the process stores until it has exited (reading as systemd does,
        while it runs: a full queue would block it), then closes and removes NOTIFY_SOCKET."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"glint (pid {self.proc.pid}) still runs after {timeout} s")
            with contextlib.suppress(TimeoutError):
                self.wait_for("HARNESS_NEVER", timeout=0.05)
        # Datagrams queue in order: after this one, every fd it stored has been kept.
        marker = f"HARNESS_EXITED={time.monotonic_ns()}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(marker.encode(), self.notify_path)
        self.wait_for(marker)
        self.notify.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.notify_path)


class LocalGlint(ActivatedGlint):
    """glint with its default filesystem store in `workdir`, two workers, warnings only in its
    log, and `extra` (TOML tables) appended to its config."""

    def __init__(self, binary, workdir, sock, extra=""):
        self.extra = extra
        os.makedirs(workdir, exist_ok=True)
        super().__init__(binary, workdir, sock)

    def write_config(self):
        with open(self.config, "w") as f:
            f.write(f'state_dir = "{self.workdir}/state"\n[server]\nlisten = ["127.0.0.1:1"]\nworkers = 2\n'
                    f'[log]\nlevel = "warn"\n{self.extra}')
