#!/usr/bin/env python3
"""Two glint nodes of the .deb under a real systemd 254, behind a real HAProxy, sharing one
PostgreSQL database and one S3 bucket: a rolling `systemctl reload` and a rolling
`systemctl restart` of every node while clients upload, download, import and list.

The box of tests/e2e/systemd_e2e.py (Debian bookworm with systemd 254 from backports, booted by
its own systemd-nspawn in a namespace; it shares the host's network) with the .deb installed:
  - node `glint`: the packaged glint.socket and glint.service, the socket on a free loopback
    port (a drop-in), its config the packaged /etc/glint/glint.toml plus a conf.d drop-in;
  - node `glint-b`: /etc/systemd/system/glint-b.socket and glint-b.service, made from the
    packaged units by naming what is the node's own: its config (/etc/glint-b/glint.toml, a
    copy of the packaged one, plus the same drop-in in /etc/glint-b/conf.d), its state,
    runtime (control socket) and configuration directories (glint-b), its socket and port.
    Every other line, the hardening included, is the packaged unit's
    (`systemd-analyze security` must give both the same exposure);
  - the drop-in: the suite's PostgreSQL (tests/db/servers.py, a fresh database) and the S3
    store, the default (the suite's s3s-fs, tests/s3/server.py, a fresh bucket), both on the
    host's loopback, as tests/proxy/test_nodes.py configures its nodes.
HAProxy runs on the host, round-robin over the two with `option httpchk GET /healthcheck`.

The load, the checks and the summary are tests/proxy/test_nodes.py's (imported): uploads
(multipart ones included), byte-exact downloads, glance-direct imports staged on one node and
imported through the other, lists. Under it, three rounds of `systemctl reload glint` then
`systemctl reload glint-b` (each: systemctl exits 0, StatusText names a newer generation, and
that generation answers through HAProxy), then two rounds of `systemctl restart glint` then
`systemctl restart glint-b` (each: systemctl exits 0, the old process ended cleanly,
"Deactivated successfully", a new main PID), every node answering every kind of request again
before the next is touched. It checks: no failed request; every image active with its size,
md5 and sha512, the bucket holding exactly the active images' objects and no unfinished
multipart upload; the staging areas empty; no unit failed, was restarted by systemd or logged
a failure; and prints a summary line.

Usage: tests/e2e/nodes_e2e.py path/to/glint.deb    (root only; skips otherwise)
Starts the suite's PostgreSQL and S3 servers if they are not running, and then stops them at
the end (under tests/run.sh they are running already: it stops them). Needs what
systemd_e2e.py and tests/proxy/test_nodes.py need (mmdebstrap, haproxy, ...).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(TESTS, "proxy"))
import systemd_e2e as e2e  # noqa: E402
import test_nodes as nodes  # noqa: E402
from test_nodes import check, say  # noqa: E402

# What PID 1 logs about a unit that failed, crashed, hung or was restarted by systemd.
UNIT_TROUBLE = ("Failed with result", "Main process exited", "Scheduled restart job",
                "Watchdog timeout", "timed out", "Killing process", "Start request repeated")


def troubles(lines):
    """The lines of PID 1 (`systemd[1]:` in the short formats) among `lines` that say so."""
    return [line for line in lines if "systemd[1]:" in line and any(t in line for t in UNIT_TROUBLE)]


def replace_once(text, old, new):
    """`text` with `old` replaced; `old` must occur exactly once (a change of the packaged unit
    that this derivation no longer fits fails here, not later)."""
    if text.count(old) != 1:
        raise RuntimeError(f"{old!r} occurs {text.count(old)} times in the packaged unit, not once")
    return text.replace(old, new)


class UnitNode:
    """A node as systemd runs it in the box: the unit `name`.service on `name`.socket; what
    test_nodes.roll(), judge() and summary() ask of a node, answered with systemctl."""

    def __init__(self, box, name, port):
        self.box, self.name, self.port = box, name, port
        self.unit = f"{name}.service"
        self.log = f"the box's journal (journalctl -u {self.unit})"

    def show(self, *properties):
        out = self.box.systemctl("show", "--property=" + ",".join(properties), self.unit).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def status_text(self):
        return self.show("StatusText")["StatusText"]

    def generation(self):
        found = re.match(r"serving generation (\d+)", self.status_text())
        return int(found[1]) if found else None

    def journal(self, *args):
        return self.box.run(["journalctl", "-u", self.unit, "--no-pager", "-q", *args]).stdout

    def cursor(self):
        """Where the box's journal is now."""
        last = self.box.run(["journalctl", "-n", "1", "-o", "json", "--no-pager"]).stdout
        return json.loads(last.splitlines()[-1])["__CURSOR"]

    def rolling_reload(self):
        before = self.generation()
        result = self.box.systemctl("reload", self.unit, check=False)
        status = self.status_text()
        after = self.generation()
        accepted = result.returncode == 0 and after is not None and (before is None or after > before)
        if not accepted:
            status += (f" (systemctl reload exited {result.returncode} {result.stderr.strip()!r}; "
                       f"generation {before} before)")
        return accepted, status

    def rolling_restart(self):
        pid = self.show("MainPID")["MainPID"]
        cursor = self.cursor()
        result = self.box.systemctl("restart", self.unit, check=False)
        shown = self.show("MainPID", "ActiveState", "SubState", "ActiveExitTimestampMonotonic",
                          "InactiveEnterTimestampMonotonic", "InactiveExitTimestampMonotonic",
                          "ActiveEnterTimestampMonotonic", "NRestarts")
        stamps = {k: int(v) / 1e6 for k, v in shown.items() if k.endswith("Monotonic") and v}
        stopped = stamps.get("InactiveEnterTimestampMonotonic", 0) - stamps.get("ActiveExitTimestampMonotonic", 0)
        started = stamps.get("ActiveEnterTimestampMonotonic", 0) - stamps.get("InactiveExitTimestampMonotonic", 0)

        # PID 1 logs the old process's end; journald may take a moment to have it.
        def ended():
            lines = self.journal("--after-cursor", cursor, "-o", "short-monotonic").splitlines()
            return lines if any("Deactivated successfully" in line for line in lines) or troubles(lines) else None
        lines = nodes.wait_for(ended, 10) or self.journal("--after-cursor", cursor, "-o", "short-monotonic").splitlines()
        trouble = troubles(lines)
        clean = (result.returncode == 0 and shown["ActiveState"] == "active"
                 and shown["MainPID"] not in ("0", pid) and shown["NRestarts"] == "0"
                 and any("Deactivated successfully" in line for line in lines) and not trouble)
        what = (f"systemctl restart exited {result.returncode}; pid {pid} stopped in {stopped:.2f} s"
                f"{', deactivated successfully' if clean else ''}, pid {shown['MainPID']} "
                f"{shown['ActiveState']}/{shown['SubState']} {started:.2f} s after its start"
                + (f", NRestarts={shown['NRestarts']}" if shown["NRestarts"] != "0" else "")
                + (f" {result.stderr.strip()!r}" if result.returncode else "")
                + "".join(f"\n    {line}" for line in (trouble or ([] if clean else lines))[:10]))
        return clean, stopped, what

    def staging(self):
        left = self.box.run(["ls", "-A", f"/var/lib/{self.name}/staging"], check=False).stdout
        return sorted(left.split())

    def log_lines(self):
        return self.journal("-p", "warning", "-o", "short-monotonic").splitlines()


def install(box, db_url, s3):
    """The .deb, node glint on a free port, node glint-b beside it, both configured for the
    shared database and bucket; returns the two nodes (not started yet: their sockets are)."""
    port_a, port_b = e2e.free_port(), e2e.free_port()
    while port_b == port_a:
        port_b = e2e.free_port()
    box.write("/etc/systemd/system/glint.socket.d/test-port.conf",
              f"[Socket]\nListenStream=\nListenStream=127.0.0.1:{port_a}\n")
    box.run(["dpkg", "-i", "/glint-test/glint.deb"])

    # The node's own: the unit names, the config file, the directories, the port.
    service = box.run(["cat", "/usr/lib/systemd/system/glint.service"]).stdout
    for old, new in (
            ("Description=glint image service", "Description=glint image service, node b,"),
            ("Requires=glint.socket\n", "Requires=glint-b.socket\n"),
            ("After=glint.socket ", "After=glint-b.socket "),
            ("ExecStart=/usr/bin/glint serve\n", "ExecStart=/usr/bin/glint serve --config /etc/glint-b/glint.toml\n"),
            ("StateDirectory=glint\n", "StateDirectory=glint-b\n"),
            ("RuntimeDirectory=glint\n", "RuntimeDirectory=glint-b\n"),
            ("ConfigurationDirectory=glint\n", "ConfigurationDirectory=glint-b\n"),
            ("Also=glint.socket\n", "Also=glint-b.socket\n")):
        service = replace_once(service, old, new)
    sock = box.run(["cat", "/usr/lib/systemd/system/glint.socket"]).stdout
    sock = replace_once(sock, "Description=glint image service socket",
                        "Description=glint image service socket, node b")
    sock = replace_once(sock, "ListenStream=127.0.0.1:9292\n", f"ListenStream=127.0.0.1:{port_b}\n")
    box.write("/etc/systemd/system/glint-b.service", service)
    box.write("/etc/systemd/system/glint-b.socket", sock)

    # Both nodes: the packaged config plus the same drop-in (database, store), mode 0640
    # root:glint as the package leaves /etc/glint/glint.toml.
    box.run(["install", "-d", "-m", "0755", "/etc/glint-b", "/etc/glint-b/conf.d", "/etc/glint/conf.d"])
    box.run(["install", "-m", "0640", "-g", "glint", "/etc/glint/glint.toml", "/etc/glint-b/glint.toml"])
    for directory in ("/etc/glint/conf.d", "/etc/glint-b/conf.d"):
        box.write(f"{directory}/50-nodes.toml", nodes.shared_config(db_url, s3))
        box.run(["chown", "root:glint", f"{directory}/50-nodes.toml"])
        box.run(["chmod", "0640", f"{directory}/50-nodes.toml"])
    box.systemctl("daemon-reload")
    box.systemctl("enable", "--now", "glint-b.socket")
    for unit in ("glint.socket", "glint-b.socket"):
        check(box.systemctl("is-active", unit, check=False).stdout.strip() == "active", f"{unit} listens")
    return [UnitNode(box, "glint", port_a), UnitNode(box, "glint-b", port_b)]


def node_checks(box, units):
    """Once both serve: each its own node id, control socket and socket-unit listener, and
    glint-b as hardened as the packaged glint."""
    ids = {}
    for node in units:
        ids[node.name] = box.run(["cat", f"/var/lib/{node.name}/node-id"], check=False).stdout.strip()
        ctl = box.run(["glint", "ctl", "status", "--socket", f"/run/{node.name}/control.sock"], check=False)
        try:
            listeners = json.loads(ctl.stdout).get("listeners", [])
        except ValueError:
            listeners = []
        check(ctl.returncode == 0 and len(listeners) == 1 and listeners[0].get("origin") not in (None, "bound", "fd-store")
              and str(node.port) in json.dumps(listeners[0]),
              f"{node.name}: glint ctl status on /run/{node.name}/control.sock: the listener from "
              f"{node.name}.socket: {listeners or (ctl.stdout + ctl.stderr).strip()[:300]}")
    check(all(ids.values()) and len(set(ids.values())) == 2, f"each node has a node id of its own: {ids}")
    exposure = {}
    for node in units:
        security = box.run(["systemd-analyze", "security", node.unit, "--no-pager"], check=False).stdout
        line = [line for line in security.splitlines() if "Overall exposure level" in line]
        exposure[node.unit] = line[0].split(":", 1)[1].strip() if line else None
    check(exposure["glint.service"] and len(set(exposure.values())) == 1,
          f"glint-b.service keeps the packaged hardening: systemd-analyze security {exposure}")


def units_never_failed(box, units):
    for node in units:
        for unit in (node.unit, f"{node.name}.socket"):
            state = box.systemctl("is-failed", unit, check=False).stdout.strip()
            check(state == "active", f"{unit} never failed: is-failed says {state}")
        trouble = troubles(node.journal("-o", "short-monotonic").splitlines())
        check(not trouble, f"{node.unit}: systemd logged no failure, crash or automatic restart"
              + "".join(f"\n    {line}" for line in trouble[:10]))


def servers_running():
    """Whether the suite's PostgreSQL and s3s-fs run already (then they are left running)."""
    db = subprocess.run([sys.executable, nodes.DB_SERVERS, "status", "--engine", "postgres"],
                        capture_output=True).returncode == 0
    s3 = subprocess.run([sys.executable, nodes.S3_SERVER, "status"], capture_output=True).returncode == 0
    return db, s3


def main():
    if os.geteuid() != 0:
        print("nodes-e2e: SKIPPED: the systemd end-to-end test of two nodes needs root "
              "(it boots systemd in a namespace)")
        return 0
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    if shutil.which("haproxy") is None:
        print("nodes-e2e: haproxy is not installed (apt-get install haproxy)")
        return 1
    began = time.monotonic()
    deb = os.path.abspath(sys.argv[1])
    db_was_running, s3_was_running = servers_running()
    db_url, s3 = nodes.shared_services()
    workdir = tempfile.mkdtemp(prefix="glint-nodes-e2e-")
    say(f"database {db_url}, bucket {s3['BUCKET']} at {s3['ENDPOINT']}, work directory {workdir}")
    box = share = haproxy = load = None
    front = nodes.listening_socket()
    events, counts = [], {}
    try:
        box, share = e2e.boot(deb)
        booted = time.monotonic()
        units = install(box, db_url, s3)
        haproxy, haproxy_log = nodes.start_haproxy(workdir, front, units)
        nodes.first_answer(front.getsockname()[1], haproxy, haproxy_log)
        # HAProxy's health checks start both services through their sockets.
        up = nodes.wait_for(lambda: all(box.systemctl("is-active", n.unit, check=False).stdout.strip() == "active"
                                        for n in units), 30)
        check(up is not None, "HAProxy's health checks started glint.service and glint-b.service (socket activation)")
        say(f"box booted in {booted - began:.1f} s; glint on :{units[0].port}, glint-b on :{units[1].port}, "
            f"HAProxy on :{front.getsockname()[1]}, serving {time.monotonic() - began:.1f} s after the start")
        node_checks(box, units)

        load = nodes.Load(front.getsockname()[1])
        t0 = nodes.roll(load, units, events)
        for node in units:
            check(box.systemctl("is-active", node.unit, check=False).stdout.strip() == "active",
                  f"{node.unit} is still active")
        units_never_failed(box, units)
        counts = nodes.report(load, units, s3, events, t0, haproxy_log)
    except Exception as e:  # noqa: BLE001 - reported, and the test fails
        nodes.FAILURES.append(f"aborted: {e!r}")
        say(f"FAIL: aborted: {traceback.format_exc()}")
    finally:
        if load is not None:
            load.stopping.set()
        if haproxy is not None:
            haproxy.terminate()
            haproxy.wait(timeout=30)
        front.close()
        if box is not None:
            journal = box.run(["journalctl", "-u", "glint*", "--no-pager", "-o", "short-monotonic"],
                              check=False).stdout
            with open(os.path.join(workdir, "journal.log"), "w") as f:
                f.write(journal)
            if nodes.FAILURES:
                say("the box's journal, last lines:\n" + "\n".join(journal.splitlines()[-40:]))
            box.shutdown()
        if share is not None:
            shutil.rmtree(share, ignore_errors=True)
    reloads = sum(1 for e in events if e[0] == "reload")
    restarts = sum(1 for e in events if e[0] == "restart")
    say(f"e2e summary: {counts.get('requests', '?')} requests through HAProxy, {counts.get('failed', '?')} failed; "
        f"{counts.get('images', '?')} images, {counts.get('lost or wrong', '?')} lost or wrong; "
        f"{counts.get('downloads', '?')} downloads, {counts.get('bad downloads', '?')} not byte-exact; "
        f"bucket: {counts.get('objects', '?')} objects, {counts.get('unexpected objects', '?')} unexpected, "
        f"{counts.get('unfinished uploads', '?')} unfinished multipart uploads; "
        f"{reloads} systemctl reloads, {restarts} systemctl restarts; {time.monotonic() - began:.0f} s")
    verdict = nodes.conclude(s3, f"{workdir} (haproxy.cfg, haproxy.log, journal.log)")
    if not verdict:
        shutil.rmtree(workdir, ignore_errors=True)
    if not db_was_running:
        subprocess.run([sys.executable, nodes.DB_SERVERS, "stop", "--engine", "postgres"], capture_output=True)
    if not s3_was_running:
        subprocess.run([sys.executable, nodes.S3_SERVER, "stop"], capture_output=True)
    return verdict


if __name__ == "__main__":
    sys.exit(main())
