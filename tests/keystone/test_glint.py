#!/usr/bin/env python3
"""glint with `auth.mode = "keystone"` against a real Keystone (tests/keystone/keystone.py):
the secure-RBAC role matrix with real tokens of four users in two projects; 401 with
keystonemiddleware's WWW-Authenticate; a revoked token refused within cache_ttl; Keystone
stopped mid-run (cached tokens keep working, new ones get 503 within the timeout, never a
hang) and back; a policy override applied by reload under load with no failed request; and
the real clients with password auth: `openstack`, `glance`, openstacksdk (with an import).

Usage: tests/keystone/test_glint.py GLINT_BINARY   (run with the compat venv's python, which
has the clients; Keystone runs from its own cached venv)
"""

import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
import keystone  # noqa: E402
from activated import ActivatedGlint  # noqa: E402

CACHE_TTL = 2.0
TIMEOUT = 2.0
FAILURES = []


def check(condition, message):
    print(f"keystone: {'ok' if condition else 'FAIL'}: {message}", flush=True)
    if not condition:
        FAILURES.append(message)


class Glint(ActivatedGlint):
    """glint in auth.mode = keystone against this Keystone, with a policy file beside it."""

    cache_ttl = CACHE_TTL
    log_level = "info"

    def __init__(self, binary, workdir, sock, auth_url):
        self.workdir = workdir
        self.policy = os.path.join(workdir, "policy.yaml")
        with open(self.policy, "w") as f:
            f.write("# no overrides yet\n")
        self.auth_url = auth_url
        super().__init__(binary, workdir, sock)

    def write_config(self):
        with open(self.config, "w") as f:
            f.write(f'state_dir = "{self.workdir}/state"\n'
                    '[server]\nlisten = ["127.0.0.1:1"]\n'
                    f'[log]\nlevel = "{self.log_level}"\n'
                    '[auth]\nmode = "keystone"\npolicy_file = "policy.yaml"\n'
                    '[auth.keystone]\n'
                    f'auth_url = "{self.auth_url}"\nusername = "glance"\n'
                    f'password = "{keystone.password("glance")}"\nproject_name = "service"\n'
                    f'cache_ttl = "{self.cache_ttl}s"\ntimeout = "{TIMEOUT}s"\n'
                    '[images]\nuse_keystone_limits = true\n')


def call(g, method, path, token=None, body=None, headers=None, raw=None):
    h = dict(headers or {})
    if token:
        h["X-Auth-Token"] = token
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    if raw is not None:
        data = raw
    request = urllib.request.Request(g.url + path, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            text = r.read()
            return r.status, text, r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def role_matrix(g, tokens, ks):
    status, _, headers = call(g, "GET", "/v2/images")
    check(status == 401 and headers.get("WWW-Authenticate") == f'Keystone uri="{ks.url[:-3]}"',
          f"no token: 401 with WWW-Authenticate ({status}, {headers.get('WWW-Authenticate')})")
    status, body, _ = call(g, "GET", "/v2/images", "not-a-token")
    check(status == 401 and b"requires authentication" in body, f"a bad token: 401 ({status})")

    member, reader, admin, other = (tokens[u] for u in ("alpha-member", "alpha-reader", "alpha-admin", "beta-member"))
    status, body, _ = call(g, "POST", "/v2/images", member, {"name": "ks", "disk_format": "raw", "container_format": "bare"})
    image = json.loads(body)
    check(status == 201 and image["visibility"] == "shared" and image["owner"] == ks.fixtures["projects"]["alpha"],
          f"a member creates a shared image owned by its project ({status})")
    path = f"/v2/images/{image['id']}"
    status, _, _ = call(g, "PUT", path + "/file", member, raw=b"x" * 1024, headers={"Content-Type": "application/octet-stream"})
    check(status == 204, f"a member uploads ({status})")
    expectations = [
        (reader, "GET", "/v2/images", None, 200, "a reader lists"),
        (reader, "GET", path, None, 200, "a reader shows"),
        (reader, "GET", path + "/file", None, 403, "a reader may not download"),
        (reader, "PATCH", path, [{"op": "replace", "path": "/name", "value": "r"}], 403, "a reader may not update"),
        (reader, "POST", "/v2/images", {"name": "r"}, 403, "a reader may not create"),
        (reader, "DELETE", path, None, 403, "a reader may not delete"),
        (reader, "POST", path + "/members", {"member": "x"}, 403, "a reader may not share"),
        (other, "GET", path, None, 404, "another project does not see a shared image it is no member of"),
        (member, "PATCH", path, [{"op": "replace", "path": "/visibility", "value": "public"}], 403, "publicize is for admins"),
        (member, "PATCH", path, [{"op": "replace", "path": "/visibility", "value": "community"}], 200, "community is allowed to members"),
        (admin, "PATCH", path, [{"op": "replace", "path": "/visibility", "value": "private"}], 200, "an admin changes another's image"),
        (other, "GET", path, None, 404, "another project does not see a private image"),
        (member, "GET", "/v2/tasks", None, 403, "the tasks API is not for members"),
        (admin, "GET", "/v2/tasks", None, 200, "the tasks API is for admins"),
        (member, "POST", path + "/actions/deactivate", None, 204, "a member deactivates its own image"),
        (admin, "GET", path + "/file", None, 200, "an admin downloads a deactivated image"),
        (member, "POST", "/v2/tasks", {"type": "import", "input": {}}, 403, "the legacy task create is for admins"),
        # Metadata definitions: readers read public namespaces and their project's, admins write.
        (admin, "POST", "/v2/metadefs/namespaces", {"namespace": "OS::KS::Public", "visibility": "public"}, 201,
         "an admin creates a public namespace"),
        (admin, "POST", "/v2/metadefs/namespaces", {"namespace": "OS::KS::Private"}, 201,
         "an admin creates a private namespace of its project"),
        (member, "POST", "/v2/metadefs/namespaces", {"namespace": "OS::KS::Member"}, 403, "metadefs writes are for admins"),
        (reader, "GET", "/v2/metadefs/namespaces/OS::KS::Public", None, 200, "a reader reads a public namespace"),
        (other, "GET", "/v2/metadefs/namespaces/OS::KS::Public", None, 200, "another project reads a public namespace"),
        (reader, "GET", "/v2/metadefs/namespaces/OS::KS::Private", None, 200, "its project reads a private namespace"),
        (other, "GET", "/v2/metadefs/namespaces/OS::KS::Private", None, 404, "another project does not see it"),
        (other, "DELETE", "/v2/metadefs/namespaces/OS::KS::Private", None, 404, "nor learns by deleting that it exists"),
        (member, "POST", "/v2/metadefs/namespaces/OS::KS::Public/tags/t", None, 403, "a member may not tag a namespace"),
        (admin, "DELETE", "/v2/metadefs/namespaces/OS::KS::Public", None, 204, "an admin deletes a namespace"),
    ]
    for token, method, where, body, expected, what in expectations:
        headers = {"Content-Type": "application/openstack-images-v2.1-json-patch"} if method == "PATCH" else None
        status, text, _ = call(g, method, where, token, body, headers)
        check(status == expected, f"{what}: {status} (expected {expected}) {text[:120]!r}")


def one_validation_for_a_new_token(g, ks):
    """20 concurrent requests with one token Keystone has not seen: one GET /v3/auth/tokens."""
    token, _ = ks.token("beta-member")

    def validations():
        return sum(1 for line in ks.log().splitlines() if "GET /v3/auth/tokens" in line)

    # A background revalidation of a token used just before may still be on its way: wait
    # until Keystone's log has been still for a second.
    before, still_since = validations(), time.monotonic()
    deadline = time.monotonic() + 15
    while time.monotonic() - still_since < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
        now = validations()
        if now != before:
            before, still_since = now, time.monotonic()
    statuses = []
    threads = [threading.Thread(target=lambda: statuses.append(call(g, "GET", "/v2/images", token)[0]))
               for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # uWSGI logs a request once it has answered: a marker request sent after every glint
    # answer (so after the validations they waited for) shows when the log has caught up.
    marker = f"/v3?after-validations-{time.monotonic_ns()}"
    keystone.request("GET", ks.url[:-3] + marker)
    deadline = time.monotonic() + 10
    while marker not in ks.log() and time.monotonic() < deadline:
        time.sleep(0.02)
    asked = validations() - before
    check(statuses.count(200) == 20, f"20 concurrent requests with a new token: {sorted(set(statuses))}")
    check(asked == 1, f"... validated with Keystone once ({asked} times)")


def unified_limits(g, tokens):
    """Keystone's limits for the image service (tests/keystone: beta may have 2 images and
    1 MiB; alpha 1 image on the way in), enforced as Glance does, reported by /v2/info/usage."""
    beta, alpha = tokens["beta-member"], tokens["alpha-member"]
    octets = {"Content-Type": "application/octet-stream"}
    ids = []
    for name in ("b1", "b2"):
        status, body, _ = call(g, "POST", "/v2/images", beta, {"name": name, "disk_format": "raw", "container_format": "bare"})
        check(status == 201, f"beta creates image {name} within image_count_total 2 ({status})")
        ids.append(json.loads(body)["id"])
    status, body, _ = call(g, "POST", "/v2/images", beta, {"name": "b3"})
    check(status == 413 and b"image_count_total is over limit of 2" in body,
          f"a third image is over image_count_total: {status} {body[:160]!r}")
    status, _, _ = call(g, "PUT", f"/v2/images/{ids[0]}/file", beta, raw=b"x" * (2 << 20), headers=octets)
    check(status == 204, f"an upload starting under image_size_total (1 MiB) goes through ({status})")
    status, body, _ = call(g, "PUT", f"/v2/images/{ids[1]}/file", beta, raw=b"x", headers=octets)
    check(status == 413 and b"image_size_total is over limit of 1" in body,
          f"the next upload is over image_size_total: {status} {body[:160]!r}")
    status, body, _ = call(g, "GET", "/v2/info/usage", beta)
    usage = json.loads(body)["usage"] if status == 200 else {}
    check(usage.get("image_count_total") == {"limit": 2, "usage": 2}
          and usage.get("image_size_total") == {"limit": 1, "usage": 2},
          f"/v2/info/usage reports limits and usage: {usage}")

    staged = []
    for name in ("a1", "a2"):
        status, body, _ = call(g, "POST", "/v2/images", alpha, {"name": name, "disk_format": "raw", "container_format": "bare"})
        staged.append(json.loads(body)["id"])
    status, _, _ = call(g, "PUT", f"/v2/images/{staged[0]}/stage", alpha, raw=b"s" * 1024, headers=octets)
    check(status == 204, f"alpha stages one image within image_count_uploading 1 ({status})")
    status, body, _ = call(g, "PUT", f"/v2/images/{staged[1]}/stage", alpha, raw=b"s", headers=octets)
    check(status == 413 and b"image_count_uploading is over limit of 1" in body,
          f"a second image on the way in is over image_count_uploading: {status} {body[:160]!r}")
    for image_id in ids + staged:
        call(g, "DELETE", f"/v2/images/{image_id}", beta if image_id in ids else alpha)


def revocation(g, ks, glance_token):
    token, _ = ks.token("alpha-member")
    status, _, _ = call(g, "GET", "/v2/images", token)
    check(status == 200, "a fresh token works (and is now cached)")
    ks.revoke(glance_token, token)
    revoked_at = time.monotonic()
    while True:
        status, _, _ = call(g, "GET", "/v2/images", token)
        if status == 401:
            break
        if time.monotonic() - revoked_at > CACHE_TTL + TIMEOUT + 5:
            break
        time.sleep(0.05)
    after = time.monotonic() - revoked_at
    check(status == 401, f"a revoked token is refused {after:.2f} s after its revocation (cache_ttl {CACHE_TTL} s)")
    return after


def keystone_outage(g, ks, tokens):
    cached = tokens["alpha-member"]
    call(g, "GET", "/v2/images", cached)
    fresh, _ = ks.token("beta-member")
    port, data_dir = ks.port, ks.data_dir
    ks.stop(keep=True)
    status, _, _ = call(g, "GET", "/v2/images", cached)
    check(status == 200, f"Keystone down: a cached token keeps working ({status})")
    started = time.monotonic()
    status, body, _ = call(g, "GET", "/v2/images", fresh)
    took = time.monotonic() - started
    check(status == 503 and b"503" in body, f"Keystone down: a new token gets 503 ({status})")
    check(took < TIMEOUT + 3, f"... after {took:.2f} s, not a hang (timeout {TIMEOUT} s)")
    ks = keystone.start(port=port, data_dir=data_dir, image_url=g.url)
    status, _, _ = call(g, "GET", "/v2/images", fresh)
    check(status == 200, f"Keystone back: the new token works ({status})")
    return ks


def expired_token(g, ks):
    """A token is never believed past its expires_at, whatever cache_ttl says: Keystone is
    restarted (same state) to issue tokens that live 3 s."""
    port, data_dir = ks.port, ks.data_dir
    ks.stop(keep=True)
    os.environ["GLINT_KEYSTONE_TOKEN_EXPIRATION"] = "3"
    try:
        ks = keystone.start(port=port, data_dir=data_dir, image_url=g.url)
        token, expires_at = ks.token("alpha-member")
    finally:
        del os.environ["GLINT_KEYSTONE_TOKEN_EXPIRATION"]
    expires = datetime.datetime.strptime(expires_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()
    accepted_late = []
    while True:
        status, _, _ = call(g, "GET", "/v2/images", token)
        now = time.time()
        if status == 200 and now > expires + 0.5:
            accepted_late.append(now - expires)
        if status == 401 or now > expires + CACHE_TTL + 5:
            break
        time.sleep(0.05)
    check(status == 401 and not accepted_late,
          f"an expired token is refused, never accepted past its expires_at (late: {accepted_late[:3]})")
    ks.stop(keep=True)
    return keystone.start(port=port, data_dir=data_dir, image_url=g.url)


def policy_reload_under_load(g, tokens):
    member = tokens["alpha-member"]
    stop = threading.Event()
    failures, count = [], [0]

    def load():
        while not stop.is_set():
            status, _, _ = call(g, "GET", "/v2/images", member)
            count[0] += 1
            if status != 200:
                failures.append(status)

    def served(more):
        """Returns once `more` further requests have been answered."""
        goal = count[0] + more
        while count[0] < goal and not failures:
            time.sleep(0.01)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    served(200)
    with open(g.policy, "w") as f:
        f.write('publicize_image: "role:admin or role:member"\n')
    ready = g.reload()
    served(200)
    with open(g.policy, "w") as f:
        f.write('publicize_image: "rule:nonexistent"\n')
    refused = g.reload()
    served(200)
    stop.set()
    for t in threads:
        t.join()
    check("ERRNO=" not in ready, "the reload with a policy override applied")
    check("ERRNO=" in refused and "nonexistent" in refused, f"a bad policy file is refused by name: {refused.strip()!r}")
    check(not failures, f"{count[0]} requests during the policy reloads, {len(failures)} failed")
    status, body, _ = call(g, "POST", "/v2/images", member, {"name": "pub", "visibility": "public"})
    check(status == 201, f"the override (members may publicize) is in force after the refused reload ({status})")


def clients(g, ks, workdir):
    bindir = os.path.dirname(sys.executable)
    env = dict(os.environ, **keystone.os_env(ks.url, "alpha-member", "alpha"))
    image = os.path.join(workdir, "client.img")
    with open(image, "wb") as f:
        f.write(os.urandom(64 << 10))

    def run(*argv):
        result = subprocess.run(["sh", "-c", '"$@" <&-', "client", *argv], env=env, capture_output=True,
                                text=True, timeout=180)
        return result.returncode, result.stdout, result.stderr

    code, out, err = run(os.path.join(bindir, "openstack"), "image", "create", "--disk-format", "raw",
                         "--container-format", "bare", "--file", image, "-f", "json", "osc-image")
    created = json.loads(out) if code == 0 else {}
    check(code == 0 and created.get("status") == "active", f"openstack image create with password auth: {err.strip()[-200:]}")
    code, out, err = run(os.path.join(bindir, "openstack"), "image", "list", "-f", "json")
    check(code == 0 and any(i["Name"] == "osc-image" for i in json.loads(out or "[]")), f"openstack image list {err.strip()[-200:]}")
    saved = os.path.join(workdir, "saved.img")
    code, _, err = run(os.path.join(bindir, "openstack"), "image", "save", "--file", saved, "osc-image")
    check(code == 0 and open(saved, "rb").read() == open(image, "rb").read(), f"openstack image save is byte-exact {err.strip()[-200:]}")
    code, out, err = run(os.path.join(bindir, "glance"), "image-list")
    check(code == 0 and "osc-image" in out, f"glance image-list with OS_AUTH_URL {err.strip()[-200:]}")
    code, _, err = run(os.path.join(bindir, "openstack"), "image", "delete", "osc-image")
    check(code == 0, f"openstack image delete {err.strip()[-200:]}")

    import openstack
    conn = openstack.connect(auth=dict(auth_url=ks.url, username="alpha-member",
                                       password=keystone.password("alpha-member"), project_name="alpha",
                                       user_domain_id=keystone.DOMAIN_ID, project_domain_id=keystone.DOMAIN_ID),
                             region_name=keystone.REGION)
    imported = conn.image.create_image(name="sdk-import", filename=image, disk_format="raw",
                                       container_format="bare", use_import=True, wait=True, timeout=120)
    # The import is a task: its end has no notification, so poll.
    deadline = time.monotonic() + 60
    fetched = conn.image.get_image(imported.id)
    while fetched.status != "active" and time.monotonic() < deadline:
        time.sleep(0.1)
        fetched = conn.image.get_image(imported.id)
    check(fetched.status == "active", f"openstacksdk connect(auth=…) import: {fetched.status}")
    conn.image.delete_image(imported.id)


def readme_keystone_block(g, ks):
    """The README's Keystone example, run as a user types it with their cloud's values: the
    auth URL, user, password and project are this Keystone's."""
    import pty
    import re
    readme = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "README.md")).read()
    section = readme.split("Against a cloud", 1)[1]
    script = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    ours = {
        "http://127.0.0.1:5000/v3": ks.url,
        "OS_USERNAME=demo": "OS_USERNAME=alpha-member",
        "OS_PASSWORD=secret": f"OS_PASSWORD={keystone.password('alpha-member')}",
        "OS_PROJECT_NAME=demo": "OS_PROJECT_NAME=alpha",
    }
    for theirs, mine in ours.items():
        check(theirs in script, f"the README's Keystone example has {theirs}")
        script = script.replace(theirs, mine)
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    for key in [k for k in env if k.startswith("OS_")]:
        del env[key]
    terminal, user_side = pty.openpty()
    try:
        ran = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, stdin=user_side,
                             capture_output=True, text=True, timeout=180)
    finally:
        os.close(user_side)
        os.close(terminal)
    # Both listings show alpha's image `pub` (made in the policy test).
    check(ran.returncode == 0 and ran.stdout.count("| pub ") == 2,
          f"the README's Keystone example runs as written and lists the project's images: "
          f"exit {ran.returncode} {ran.stderr.strip()[-200:]}")


def main():
    binary = os.path.abspath(sys.argv[1])
    # glint's socket first: Keystone's catalogue names it as the image endpoint.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    ks = keystone.start(image_url=f"http://127.0.0.1:{sock.getsockname()[1]}")
    keystone_dir = ks.data_dir
    with tempfile.TemporaryDirectory() as workdir:
        g = Glint(binary, workdir, sock, ks.url)
        try:
            glance_token, _ = ks.token("glance")
            tokens = {u: ks.token(u)[0] for u in ("alpha-member", "alpha-reader", "alpha-admin", "beta-member")}
            role_matrix(g, tokens, ks)
            one_validation_for_a_new_token(g, ks)
            unified_limits(g, tokens)
            revoked_after = revocation(g, ks, glance_token)
            ks = keystone_outage(g, ks, tokens)
            ks = expired_token(g, ks)
            policy_reload_under_load(g, tokens)
            clients(g, ks, workdir)
            readme_keystone_block(g, ks)
            print(f"keystone: figure: a revoked token was refused {revoked_after:.2f} s after revocation (cache_ttl {CACHE_TTL} s)")
        finally:
            g.stop()
            ks.stop()
            shutil.rmtree(keystone_dir, ignore_errors=True)
            if FAILURES:
                print(open(os.path.join(workdir, "glint.log")).read()[-4000:], file=sys.stderr)
    if FAILURES:
        sys.exit(f"keystone: {len(FAILURES)} checks failed")
    print("keystone: all checks passed")


if __name__ == "__main__":
    main()
