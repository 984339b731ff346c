"""glint under a socket-activation harness for the Python test suites: the test binds the
listening socket and passes it in as fd 3 (LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES), so no port is
bound, released and bound again, and reads READY/RELOADING from a NOTIFY_SOCKET of its own.
What goes in the config is the subclass's `write_config`. `stop()` then `start()` is a restart
as systemd's socket unit makes it: the socket stays open here meanwhile, so connections wait in
its backlog for the new process."""

import contextlib
import os
import signal
import socket
import subprocess


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
        self._launch(log_mode="w")

    def _launch(self, log_mode):
        self.write_config()
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        env = dict(os.environ, NOTIFY_SOCKET=self.notify_path, LISTEN_FDS="1", LISTEN_FDNAMES="api")
        for key in ("JOURNAL_STREAM", "STATE_DIRECTORY", "RUNTIME_DIRECTORY"):
            env.pop(key, None)
        fd = self.sock.fileno()
        with open(self.log, log_mode) as log:
            self.proc = subprocess.Popen(
                ["sh", "-c", f'exec 3<&{fd}; LISTEN_PID=$$ exec "$0" serve --config "$1"',
                 self.binary, self.config],
                env=env, pass_fds=(fd,), stderr=log)
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
        self.notify.settimeout(timeout)
        while True:
            message = self.notify.recv(4096).decode()
            if line in message.splitlines():
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
        self.proc.wait(timeout=60)
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
