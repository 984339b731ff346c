#!/usr/bin/env python3
"""Self-test of tests/keystone/keystone.py against the real Keystone it serves: setup, start,
a token for every fixture user, validation the way keystonemiddleware does it (the glance
service token validating a user's token, ?nocatalog), the roles in the answers, the image
service's unified limits as the glance token reads them, a revocation refused afterwards,
isolation between two runs, and stop. Prints how long setup and start took.

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


# The unified limits of the image service the pristine state holds (MiB for sizes).
REGISTERED = {"image_size_total": 1000, "image_stage_total": 1000, "image_count_total": 100,
              "image_count_uploading": 10}
PROJECT = {"beta": {"image_count_total": 2, "image_size_total": 1},
           "alpha": {"image_count_uploading": 1}}


def check_limits(ks, glance, tokens):
    """The limits as Glance's oslo.limit reads them with its service token: registered limits by
    service and region, project limits by service, project and region."""
    fx = ks.fixtures
    service, region = fx["services"]["image"], keystone.REGION
    check(fx.get("limits") == {"registered": REGISTERED, "projects": PROJECT},
          f"fixtures.json lists the image service's limits {fx.get('limits')}")

    def get(tok, path):
        status, body, _ = keystone.request("GET", ks.url + path, headers={"X-Auth-Token": tok})
        return status, body

    def values(body, key, value):
        return {x["resource_name"]: x[value] for x in body.get(key, [])}

    status, body = get(glance, f"/registered_limits?service_id={service}&region_id={region}")
    ok = status == 200 and all(x["service_id"] == service and x["region_id"] == region
                               for x in body["registered_limits"])
    check(ok and values(body, "registered_limits", "default_limit") == REGISTERED,
          f"glance reads the registered limits (HTTP {status}): "
          f"{values(body, 'registered_limits', 'default_limit') if ok else body}")
    for project in ("beta", "alpha", "service"):
        pid = fx["projects"][project]
        status, body = get(glance, f"/limits?service_id={service}&project_id={pid}"
                                   f"&region_id={region}")
        ok = status == 200 and all(x["service_id"] == service and x["region_id"] == region
                                   and x["project_id"] == pid for x in body["limits"])
        got = values(body, "limits", "resource_limit") if ok else body
        check(ok and got == PROJECT.get(project, {}),
              f"glance reads {project}'s project limits (HTTP {status}): {got}")
    status, body = get(glance, f"/limits?service_id={service}&project_id={fx['projects']['beta']}"
                               f"&region_id={region}&resource_name=image_size_total")
    check(status == 200 and values(body, "limits", "resource_limit") == {"image_size_total": 1},
          f"resource_name narrows glance's list to one limit (HTTP {status})")
    status, body = get(glance, "/limits/model")
    check(status == 200 and body["model"]["name"] == "flat",
          f"the enforcement model is flat (HTTP {status})")
    status, body = get(glance, f"/endpoints?service_id={service}&region_id={region}"
                               f"&interface=public")
    ok = status == 200 and len(body["endpoints"]) == 1
    if ok:
        status, _ = get(glance, f"/endpoints/{body['endpoints'][0]['id']}")
        ok = status == 200
    check(ok, f"glance may read the image endpoint, as oslo.limit's endpoint_id lookup does "
              f"(HTTP {status})")

    # A user's own token (no admin or service role) sees only its own project's limits: asked
    # for another project's it answers 200 with none, not 403. Registered limits anyone reads.
    member = tokens["alpha-member"]
    status, body = get(member, f"/limits?service_id={service}&region_id={region}")
    check(status == 200 and {x["project_id"] for x in body["limits"]} == {fx["projects"]["alpha"]},
          f"alpha-member's own token lists only alpha's limits (HTTP {status})")
    status, body = get(member, f"/limits?service_id={service}&region_id={region}"
                               f"&project_id={fx['projects']['beta']}")
    check(status == 200 and body["limits"] == [],
          f"alpha-member's token asked for beta's limits gets none (HTTP {status}, "
          f"{len(body.get('limits', [])) if status == 200 else body})")
    status, body = get(member, f"/registered_limits?service_id={service}&region_id={region}")
    check(status == 200 and values(body, "registered_limits", "default_limit") == REGISTERED,
          f"alpha-member's token reads the registered limits (HTTP {status})")


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

        check_limits(ks, glance, tokens)

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
