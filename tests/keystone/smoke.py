#!/usr/bin/env python3
"""Self-test of tests/keystone/keystone.py against the real Keystone it serves: setup, start,
a token for every fixture user, validation the way keystonemiddleware does it (the glance
service token validating a user's token, ?nocatalog), the roles in the answers, a revocation
refused afterwards, isolation between two runs, and stop. Prints how long setup and start took.

Usage: python3 tests/keystone/smoke.py
"""

import datetime
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keystone  # noqa: E402

PASSED = []
FAILED = []


def check(condition, message):
    print(f"keystone smoke: {'ok' if condition else 'FAIL'}: {message}", flush=True)
    (PASSED if condition else FAILED).append(message)


def roles_of(body):
    return sorted(r["name"] for r in body["token"]["roles"])


def port_closed(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def main():
    started = time.monotonic()
    keystone.setup()
    setup_s = time.monotonic() - started

    started = time.monotonic()
    ks = keystone.start(image_url="http://127.0.0.1:9292")
    start_s = time.monotonic() - started
    data_dir, port = ks.data_dir, ks.port
    try:
        fx = ks.fixtures
        check(ks.url == f"http://127.0.0.1:{port}/v3", f"serves {ks.url}")
        status, body, headers = keystone.request("GET", ks.url)
        check(status == 200 and body["version"]["id"].startswith("v3"), "GET /v3 answers v3")
        check(headers.get("Connection", "").lower() == "close",
              "answers say Connection: close (uWSGI's --http-socket closes every connection)")

        tokens = {}
        for user in keystone.USERS:
            tok, expires_at = ks.token(user)
            tokens[user] = tok
            expires = datetime.datetime.strptime(expires_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=datetime.timezone.utc)
            left = (expires - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
            check(3500 < left <= 3600, f"{user}: a token on {fx['users'][user]['project']}, "
                                       f"expiring in {left:.0f}s")
        glance = tokens["glance"]

        expected = {
            "glance": ["admin", "manager", "member", "reader", "service"],
            "alpha-admin": ["admin", "manager", "member", "reader"],
            "alpha-member": ["member", "reader"],
            "alpha-reader": ["reader"],
            "beta-member": ["member", "reader"],
        }
        for user, roles in expected.items():
            status, body = ks.validate(glance, tokens[user])
            ok = status == 200
            check(ok, f"glance validates {user}'s token (HTTP {status})")
            if not ok:
                continue
            t = body["token"]
            check(roles_of(body) == roles, f"{user}'s token has roles {roles_of(body)}")
            check(t["user"]["id"] == fx["users"][user]["id"]
                  and t["project"]["id"] == fx["users"][user]["project_id"],
                  f"{user}'s token names the user and project ids of fixtures.json")
            check(fx["users"][user]["token_roles"] == roles,
                  f"fixtures.json lists {user}'s token roles")
            check("catalog" not in t, f"?nocatalog leaves the catalog out for {user}")

        status, body = ks.validate(glance, tokens["alpha-member"], nocatalog=False)
        catalog = {(s["type"], e["interface"]): e["url"]
                   for s in body["token"].get("catalog", []) for e in s["endpoints"]}
        check(catalog.get(("identity", "public")) == ks.url,
              f"the catalogue's identity endpoint is this run's URL ({catalog.get(('identity', 'public'))})")
        check(catalog.get(("image", "public")) == "http://127.0.0.1:9292",
              "the catalogue's image endpoint is start(image_url=...)")

        # A user's token cannot validate another's: only the service (or system reader) can.
        status, _ = ks.validate(tokens["alpha-reader"], tokens["beta-member"])
        check(status == 403, f"alpha-reader may not validate beta-member's token (HTTP {status})")
        try:
            ks.token("beta-member", project="alpha")
            check(False, "beta-member gets no token on alpha")
        except RuntimeError as e:
            check("HTTP 401" in str(e), "beta-member gets no token on alpha (401)")
        try:
            keystone.token(ks.url, "alpha-member", "alpha", password_="wrong")
            check(False, "a wrong password is refused")
        except RuntimeError as e:
            check("HTTP 401" in str(e), "a wrong password is refused (401)")

        # A client that keeps connections alive (keystoneauth, in the venv's openstack CLI):
        # discovery, then authentication, then the catalogue.
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("OS_")},
               **ks.env("alpha-member")}
        cli = subprocess.run([ks.paths.bin("openstack"), "token", "issue", "-f", "json"],
                             env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        issued = json.loads(cli.stdout) if cli.returncode == 0 else {}
        check(issued.get("project_id") == fx["projects"]["alpha"],
              f"`openstack token issue` as alpha-member works {cli.stderr.strip()[-300:]}")

        ks.revoke(glance, tokens["alpha-member"])
        status, _ = ks.validate(glance, tokens["alpha-member"])
        check(status == 404, f"a revoked token is refused (HTTP {status})")
        status, _ = ks.validate(glance, tokens["alpha-reader"])
        check(status == 200, f"the other tokens stay valid (HTTP {status})")

        # Each run starts from the pristine state: a second Keystone, started beside the
        # first, knows nothing of its revocation (the fernet keys are the same, so it accepts
        # the first one's tokens).
        started = time.monotonic()
        with keystone.start() as other:
            second_start_s = time.monotonic() - started
            check(other.port != port and other.data_dir != data_dir,
                  "a second run has its own port and data directory")
            other_glance, _ = other.token("glance")
            status, _ = other.validate(other_glance, tokens["alpha-member"])
            check(status == 200, f"a revocation does not leak into another run (HTTP {status})")
    except BaseException:
        sys.stderr.write(f"--- {ks.log_path} ---\n{ks.log()}--- end ---\n")
        raise
    finally:
        ks.stop()
    check(not os.path.exists(data_dir), "stop removes the run's data directory")
    check(port_closed(port), "stop closes the port")
    check(ks.proc.returncode is not None, f"uWSGI has exited ({ks.proc.returncode})")

    print(f"keystone smoke: setup {setup_s:.2f}s, start {start_s:.2f}s, "
          f"a second start {second_start_s:.2f}s", flush=True)
    print(f"{len(PASSED)} passed, {len(FAILED)} failed", flush=True)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
