#!/usr/bin/env python3
"""glint behind a real HAProxy (Debian's), as a cloud puts it behind a TLS-terminating proxy:
HAProxy says `X-Forwarded-Proto: https`, its own `X-Forwarded-Host` and `X-Forwarded-For`, and
glint (server.trusted_proxies = HAProxy's address) answers with https links on the public
host and logs the client's address; the same headers sent straight to glint by anyone else
are ignored. Then server.public_endpoint, applied by reload, wins over both.

Usage: tests/proxy/test_haproxy.py GLINT_BINARY
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from activated import ActivatedGlint, listening_socket  # noqa: E402

FAILURES = []


def check(condition, message):
    print(f"haproxy: {'ok' if condition else 'FAIL'}: {message}", flush=True)
    if not condition:
        FAILURES.append(message)


def http(port, method, path, source="127.0.0.1", headers=None, body=None):
    """One request from `source` (a loopback address of our choice), raw, Connection: close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as s:
        lines = [f"{method} {path} HTTP/1.1", "Host: glint.internal:9292", "Connection: close"]
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        data = json.dumps(body).encode() if body is not None else b""
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    header_map = {}
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.decode().partition(":")
        header_map[k.strip().lower()] = v.strip()
    return status, header_map, payload


class Glint(ActivatedGlint):
    """glint with `server_keys` in its [server] table and JSON logs, for the client address."""

    def __init__(self, binary, workdir, sock, server_keys):
        self.server_keys = server_keys
        super().__init__(binary, workdir, sock)

    def write_config(self):
        with open(self.config, "w") as f:
            f.write(f'state_dir = "{self.workdir}/state"\n[server]\nlisten = ["127.0.0.1:1"]\n'
                    f'{self.server_keys}[log]\nlevel = "info,glint::api=debug"\nformat = "json"\n')

    def reload(self, server_keys):
        self.server_keys = server_keys
        return super().reload()

    def logged_clients(self):
        clients = []
        with open(self.log) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                for span in [record.get("span", {})] + record.get("spans", []):
                    if "remote_addr" in span:
                        clients.append(span["remote_addr"])
        return clients


def main():
    binary = os.path.abspath(sys.argv[1])
    with tempfile.TemporaryDirectory() as workdir:
        glint_sock = listening_socket()
        glint_port = glint_sock.getsockname()[1]
        front = listening_socket()
        front_port = front.getsockname()[1]
        # HAProxy on 127.0.0.1 (its connections to glint come from there), as the TLS end.
        config = os.path.join(workdir, "haproxy.cfg")
        with open(config, "w") as f:
            f.write(f"""global
    log stderr format raw local0 warning
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend public
    bind fd@{front.fileno()}
    option forwardfor
    http-request set-header X-Forwarded-Proto https
    http-request set-header X-Forwarded-Host images.example.com
    default_backend glint
backend glint
    server g1 127.0.0.1:{glint_port}
""")
        haproxy = subprocess.Popen(["haproxy", "-f", config, "-db"], pass_fds=(front.fileno(),),
                                   stdout=subprocess.DEVNULL, stderr=open(os.path.join(workdir, "haproxy.log"), "w"))
        g = Glint(binary, workdir, glint_sock, 'trusted_proxies = ["127.0.0.1/32"]\n')
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    status, _, _ = http(front_port, "GET", "/versions")
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            status, _, body = http(front_port, "GET", "/versions", source="127.0.0.3")
            href = json.loads(body)["versions"][0]["links"][0]["href"]
            check(status == 200 and href == "https://images.example.com/v2/", f"through HAProxy: versions link {href}")
            status, headers, _ = http(front_port, "POST", "/v2/images", source="127.0.0.3", body={"name": "p"})
            check(status == 201 and headers.get("location", "").startswith("https://images.example.com/v2/images/"),
                  f"through HAProxy: Location {headers.get('location')}")

            forged = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example", "X-Forwarded-For": "203.0.113.9"}
            status, _, body = http(glint_port, "GET", "/versions", source="127.0.0.2", headers=forged)
            href = json.loads(body)["versions"][0]["links"][0]["href"]
            check(href == "http://glint.internal:9292/v2/", f"straight to glint from elsewhere: forwarded headers ignored ({href})")

            clients = g.logged_clients()
            check("127.0.0.3" in clients, f"the client address behind HAProxy is logged: {sorted(set(clients))}")
            check("203.0.113.9" not in clients, "a forged X-Forwarded-For from an untrusted peer is not")

            g.reload('trusted_proxies = ["127.0.0.1/32"]\npublic_endpoint = "https://cloud.example/image"\n')
            status, _, body = http(front_port, "GET", "/versions")
            href = json.loads(body)["versions"][0]["links"][0]["href"]
            check(href == "https://cloud.example/image/v2/", f"server.public_endpoint, applied by reload, wins: {href}")
        finally:
            g.stop()
            haproxy.terminate()
            haproxy.wait(timeout=30)
    if FAILURES:
        sys.exit(f"haproxy: {len(FAILURES)} checks failed")
    print("haproxy: all checks passed")


if __name__ == "__main__":
    main()
