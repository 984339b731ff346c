#!/usr/bin/env python3
"""A real Keystone for glint's tests: the `keystone` release pinned in requirements.txt, from
PyPI, served by uWSGI on 127.0.0.1, with SQLite and fernet tokens.

It is set up once into a cache directory outside the clone (default
/var/cache/glint-test/keystone-<version>, or $GLINT_KEYSTONE_CACHE): a venv, and a pristine
bootstrapped state (the SQLite database, the fernet and credential keys, fixtures.json with the
ids of the test projects, users and roles). Each start copies that state into a data directory of
its own, so every run begins from the same Keystone and none sees another's tokens or
revocations. Python 3 standard library only.

As a module (see README.md):

    import keystone                        # with tests/keystone on sys.path
    ks = keystone.start()                  # setup() if needed, then serve; ks.url ends in /v3
    tok, expires_at = ks.token("alpha-member")
    ...
    ks.stop()

As a command:

    keystone.py setup [--force]            # build the cache (no-op when it is up to date)
    keystone.py start [--port P] [--data-dir D] [--image-url U]
                                           # start in the background; print a JSON line
    keystone.py stop --data-dir D          # stop what `start` started there
    keystone.py env --data-dir D [--user U] [--project P]
                                           # shell exports for the openstack CLI
    keystone.py serve [--port P] [--data-dir D] [--image-url U] [--stop-on-stdin-eof]
                                           # foreground: a JSON line once ready; stops on
                                           # SIGTERM/SIGINT (or when stdin closes)
"""

import argparse
import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import platform
import pwd
import grp
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REQUIREMENTS = os.path.join(HERE, "requirements.txt")
CONSTRAINTS = os.path.join(HERE, "constraints.txt")

HOST = "127.0.0.1"
REGION = "RegionOne"
DOMAIN_ID = "default"
# What bootstrap writes into the catalogue; start() rewrites it to the URL it serves.
PLACEHOLDER_IDENTITY_URL = "http://127.0.0.1:5000/v3"
# The image service in the catalogue (glint's place); start(image_url=...) rewrites it.
PLACEHOLDER_IMAGE_URL = "http://127.0.0.1:9292"

# The fixtures. Every password is "<username>-secret". Keystone's bootstrap makes the roles
# admin, manager, member and reader, each implying the next (admin -> manager -> member ->
# reader), so a token's role list also carries the implied roles; setup adds `service`.
ROLES = ["admin", "manager", "member", "reader", "service"]
PROJECTS = ["service", "alpha", "beta"]
USERS = {
    # username: (project, roles assigned on it)
    "admin": ("admin", ["admin"]),  # bootstrap's admin; also has admin on the system scope
    "glance": ("service", ["service", "admin"]),  # as a real Glance's service user
    "alpha-admin": ("alpha", ["admin"]),
    "alpha-member": ("alpha", ["member"]),
    "alpha-reader": ("alpha", ["reader"]),
    "beta-member": ("beta", ["member"]),
}

# Keystone unified limits for the image service in REGION, as Glance's `use_keystone_limits`
# (oslo.limit) reads them: the registered (default) limits, then project limits that override
# them. Sizes are in MiB, as Glance counts them.
REGISTERED_LIMITS = {
    "image_size_total": 1000,
    "image_stage_total": 1000,
    "image_count_total": 100,
    "image_count_uploading": 10,
}
PROJECT_LIMITS = {
    "alpha": {"image_count_uploading": 1},
    "beta": {"image_count_total": 2, "image_size_total": 1},
}

READY_TIMEOUT = 90.0  # seconds for uWSGI to load Keystone and answer GET /v3
STOP_TIMEOUT = 30.0


def password(username):
    return f"{username}-secret"


def log(message):
    print(f"keystone: {message}", file=sys.stderr, flush=True)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def keystone_version():
    """The keystone release pinned in requirements.txt."""
    for line in _read(REQUIREMENTS).decode().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.lower().startswith("keystone=="):
            return line.split("==", 1)[1].strip()
    raise RuntimeError(f"{REQUIREMENTS} pins no keystone==VERSION")


def cache_dir():
    """$GLINT_KEYSTONE_CACHE, else /var/cache/glint-test/keystone-<version> (root, or wherever
    /var/cache/glint-test is writable), else ~/.cache/glint-test/keystone-<version>."""
    explicit = os.environ.get("GLINT_KEYSTONE_CACHE")
    if explicit:
        return os.path.abspath(explicit)
    name = f"keystone-{keystone_version()}"
    system = "/var/cache/glint-test"
    if os.geteuid() == 0 or os.access(system, os.W_OK):
        return os.path.join(system, name)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "glint-test", name)


class Paths:
    def __init__(self, root=None):
        self.root = root or cache_dir()
        self.lock = os.path.join(self.root, ".lock")
        self.venv = os.path.join(self.root, "venv")
        self.venv_stamp = os.path.join(self.venv, ".glint-stamp")
        self.state = os.path.join(self.root, "state")
        self.state_stamp = os.path.join(self.state, ".glint-stamp")
        self.fixtures = os.path.join(self.state, "fixtures.json")

    def bin(self, name):
        return os.path.join(self.venv, "bin", name)


def _venv_key():
    """What the venv depends on: the pins and the Python it is built from."""
    h = hashlib.sha256()
    h.update(_read(REQUIREMENTS))
    h.update(_read(CONSTRAINTS))
    h.update(f"{platform.python_version()} {os.path.realpath(sys.base_prefix)}".encode())
    return h.hexdigest()


def _state_key():
    """What the pristine state depends on: the venv and this file (the recipe)."""
    h = hashlib.sha256()
    h.update(_venv_key().encode())
    h.update(_read(os.path.abspath(__file__)))
    return h.hexdigest()


def _stamp_matches(path, key):
    try:
        return _read(path).decode().strip() == key
    except OSError:
        return False


@contextlib.contextmanager
def _locked(paths):
    os.makedirs(paths.root, exist_ok=True)
    with open(paths.lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run(argv, **kwargs):
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)
    if result.returncode != 0:
        sys.stderr.write(result.stdout)
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}")
    return result.stdout


def _clean_env(extra=None):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("OS_") and k not in ("PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV")}
    env.update(extra or {})
    return env


def setup(force=False, paths=None):
    """Build what is missing or stale in the cache: the venv (when requirements.txt,
    constraints.txt or the Python changed), then the pristine state (when the venv or this file
    changed). Safe to call from several processes at once. Returns the Paths."""
    paths = paths or Paths()
    with _locked(paths):
        _setup_locked(paths, force)
    return paths


def _setup_locked(paths, force):
    venv_key = _venv_key()
    if force or not _stamp_matches(paths.venv_stamp, venv_key):
        _build_venv(paths)
        with open(paths.venv_stamp, "w") as f:
            f.write(venv_key + "\n")
    state_key = _state_key()
    if force or not _stamp_matches(paths.state_stamp, state_key):
        _build_state(paths)
        with open(paths.state_stamp, "w") as f:
            f.write(state_key + "\n")


def _build_venv(paths):
    started = time.monotonic()
    log(f"building the venv in {paths.venv} (keystone {keystone_version()}, uWSGI compiles)")
    # The venv's scripts name its path, so it is built in place; the stamp, written last, is
    # what marks it complete.
    shutil.rmtree(paths.venv, ignore_errors=True)
    _run([sys.executable, "-m", "venv", paths.venv], env=_clean_env())
    _run([paths.bin("pip"), "install", "--no-input", "--disable-pip-version-check", "--quiet",
          "-r", REQUIREMENTS, "-c", CONSTRAINTS], env=_clean_env())
    log(f"venv ready in {time.monotonic() - started:.1f}s")


def _write_config(data_dir):
    """keystone.conf for one data directory (regenerated at each start: it holds paths)."""
    conf = os.path.join(data_dir, "keystone.conf")
    db = os.path.join(data_dir, "keystone.db")
    fernet = os.path.join(data_dir, "fernet-keys")
    credential = os.path.join(data_dir, "credential-keys")
    with open(conf, "w") as f:
        f.write(f"""# Written by tests/keystone/keystone.py for this data directory only.
[DEFAULT]
debug = false

[database]
connection = sqlite:///{db}

[token]
provider = fernet
expiration = {os.environ.get("GLINT_KEYSTONE_TOKEN_EXPIRATION", "3600")}

[fernet_tokens]
key_repository = {fernet}
max_active_keys = 3

[fernet_receipts]
# Keystone's default shares the tokens' key repository.
key_repository = {fernet}

[credential]
key_repository = {credential}

[cache]
enabled = false

[identity]
# bcrypt's minimum cost: the hashes are made at setup, and each password authentication then
# costs about a millisecond instead of a quarter of a second (Keystone's default is 12).
password_hash_rounds = 4

[oslo_policy]
# Keystone's own defaults, written out. oslo.policy 6 removed enforce_scope: scope is always
# enforced.
enforce_new_defaults = true
""")
    return conf


def _keystone_manage(paths, conf, *args):
    return _run([paths.bin("keystone-manage"), "--config-file", conf, *args], env=_clean_env())


def _build_state(paths):
    started = time.monotonic()
    staging = paths.state + ".building"
    log(f"bootstrapping the pristine state in {paths.state}")
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(os.path.join(staging, "fernet-keys"), mode=0o700)
    os.makedirs(os.path.join(staging, "credential-keys"), mode=0o700)
    conf = _write_config(staging)
    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    _keystone_manage(paths, conf, "db_sync")
    _keystone_manage(paths, conf, "fernet_setup", "--keystone-user", user, "--keystone-group", group)
    _keystone_manage(paths, conf, "credential_setup", "--keystone-user", user,
                     "--keystone-group", group)
    _keystone_manage(paths, conf, "bootstrap",
                     "--bootstrap-username", "admin",
                     "--bootstrap-password", password("admin"),
                     "--bootstrap-project-name", "admin",
                     "--bootstrap-role-name", "admin",
                     "--bootstrap-service-name", "keystone",
                     "--bootstrap-region-id", REGION,
                     "--bootstrap-admin-url", PLACEHOLDER_IDENTITY_URL,
                     "--bootstrap-internal-url", PLACEHOLDER_IDENTITY_URL,
                     "--bootstrap-public-url", PLACEHOLDER_IDENTITY_URL)
    log(f"keystone-manage done in {time.monotonic() - started:.1f}s; creating the fixtures")
    ks = _launch(paths, staging, owned=False)
    try:
        fixtures = _create_fixtures(ks)
    finally:
        ks.stop()
    for leftover in ("keystone.conf", "uwsgi.log", "instance.json"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(staging, leftover))
    with open(os.path.join(staging, "fixtures.json"), "w") as f:
        json.dump(fixtures, f, indent=2, sort_keys=True)
        f.write("\n")
    shutil.rmtree(paths.state, ignore_errors=True)
    os.rename(staging, paths.state)
    log(f"pristine state ready in {time.monotonic() - started:.1f}s")


def _create_fixtures(ks):
    """Roles, projects, users and assignments, the image service and its unified limits, through
    Keystone's API with bootstrap's admin holding a system-scoped token."""
    admin, _ = token(ks.url, "admin", system=True)

    def call(method, path, body=None, what=None):
        status, answer, _ = request(method, ks.url + path, body, {"X-Auth-Token": admin})
        if status not in (200, 201, 204):
            raise RuntimeError(f"{what or method + ' ' + path}: HTTP {status}: {answer}")
        return answer

    roles = {r["name"]: r["id"] for r in call("GET", "/roles")["roles"]}
    for name in ROLES:
        if name not in roles:
            roles[name] = call("POST", "/roles", {"role": {"name": name}})["role"]["id"]
    projects = {p["name"]: p["id"] for p in call("GET", "/projects")["projects"]}
    for name in PROJECTS:
        projects[name] = call("POST", "/projects", {"project": {
            "name": name, "domain_id": DOMAIN_ID,
            "description": f"glint test project {name}"}})["project"]["id"]
    users = {u["name"]: u["id"] for u in call("GET", "/users")["users"]}
    out_users = {}
    for name, (project, assigned) in USERS.items():
        if name not in users:
            users[name] = call("POST", "/users", {"user": {
                "name": name, "password": password(name), "domain_id": DOMAIN_ID,
                "default_project_id": projects[project]}})["user"]["id"]
        for role in assigned:
            call("PUT", f"/projects/{projects[project]}/users/{users[name]}/roles/{roles[role]}",
                 what=f"assign {role} on {project} to {name}")
        out_users[name] = {"id": users[name], "password": password(name), "project": project,
                           "project_id": projects[project], "roles": assigned}
    # What a token scoped to the user's project lists (the implied roles too), from Keystone.
    for name, user in out_users.items():
        _, body, _ = request("POST", ks.url + "/auth/tokens", {"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "id": user["id"], "password": user["password"]}}},
            "scope": {"project": {"id": user["project_id"]}}}})
        user["token_roles"] = sorted(r["name"] for r in body["token"]["roles"])
    # The image service in the catalogue, as a deployment with Glance has it.
    image = call("POST", "/services", {"service": {
        "type": "image", "name": "glance", "description": "glint"}})["service"]["id"]
    for interface in ("public", "internal", "admin"):
        call("POST", "/endpoints", {"endpoint": {
            "service_id": image, "interface": interface, "region_id": REGION,
            "url": PLACEHOLDER_IMAGE_URL}})
    # Unified limits for it (Keystone's default enforcement model, flat): a project limit needs
    # the registered limit of the same service, region and resource first.
    call("POST", "/registered_limits", {"registered_limits": [
        {"service_id": image, "region_id": REGION, "resource_name": resource,
         "default_limit": value, "description": f"glint test default {resource}"}
        for resource, value in REGISTERED_LIMITS.items()]})
    call("POST", "/limits", {"limits": [
        {"service_id": image, "region_id": REGION, "project_id": projects[project],
         "resource_name": resource, "resource_limit": value,
         "description": f"glint test {resource} of {project}"}
        for project, limits in PROJECT_LIMITS.items() for resource, value in limits.items()]})
    return {
        "keystone_version": keystone_version(),
        "region": REGION,
        "domain": {"id": DOMAIN_ID, "name": "Default"},
        "roles": {name: roles[name] for name in ROLES},
        "projects": {name: projects[name] for name in ["admin", *PROJECTS]},
        "users": out_users,
        "services": {"image": image},
        "limits": {"registered": dict(REGISTERED_LIMITS),
                   "projects": {p: dict(l) for p, l in PROJECT_LIMITS.items()}},
    }


# ---------------------------------------------------------------------------------------------
# Serving


def _listen(port):
    """A listening socket on 127.0.0.1:port (0: the kernel picks), handed to uWSGI as an open
    file descriptor: nothing is released and rebound, so no other process can take the port in
    between."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((HOST, port or 0))
    except OSError:
        s.close()
        raise
    s.listen(128)
    return s


def _set_pdeathsig():
    """In the child before exec: SIGTERM it when the process that started it dies, so a test
    that crashes without stop() leaves no Keystone behind."""
    PR_SET_PDEATHSIG = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _rewrite_catalog(db, identity_url, image_url):
    con = sqlite3.connect(db)
    try:
        with con:
            con.execute("UPDATE endpoint SET url = ? WHERE service_id IN "
                        "(SELECT id FROM service WHERE type = 'identity')", (identity_url,))
            if image_url:
                con.execute("UPDATE endpoint SET url = ? WHERE service_id IN "
                            "(SELECT id FROM service WHERE type = 'image')", (image_url,))
    finally:
        con.close()


class Keystone:
    """A running Keystone. url: http://127.0.0.1:PORT/v3; fixtures: fixtures.json's content;
    data_dir: its own database, keys, keystone.conf and uwsgi.log."""

    def __init__(self, paths, data_dir, owned, proc, port, fixtures):
        self.paths = paths
        self.data_dir = data_dir
        self.owned = owned
        self.proc = proc
        self.pid = proc.pid if proc else None
        self.port = port
        self.url = f"http://{HOST}:{port}/v3"
        self.fixtures = fixtures
        self.log_path = os.path.join(data_dir, "uwsgi.log")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def token(self, username, project=None, system=False):
        """(token, expires_at) for a fixture user, scoped to `project` (a name; default: the
        user's own project), or to the system when system=True."""
        if not system and project is None:
            project = self.fixtures["users"][username]["project"]
        return token(self.url, username, project, system=system)

    def validate(self, service_token, subject_token, nocatalog=True):
        return validate(self.url, service_token, subject_token, nocatalog)

    def revoke(self, admin_token, subject_token):
        return revoke(self.url, admin_token, subject_token)

    def env(self, username="admin", project=None):
        return os_env(self.url, username,
                      project or self.fixtures["users"].get(username, {}).get("project", "admin"))

    def log(self):
        try:
            return _read(self.log_path).decode(errors="replace")
        except OSError:
            return ""

    def alive(self):
        if self.proc is not None:
            return self.proc.poll() is None
        return self.pid is not None and _running(self.pid)

    def stop(self, keep=None):
        """SIGTERM uWSGI's master (--die-on-term), wait, SIGKILL its process group if it
        lingers; then remove the data directory if start() made it (keep=True, or
        $GLINT_KEYSTONE_KEEP=1, keeps it)."""
        if self.pid is not None:
            _terminate(self.pid, self.proc)
            self.pid = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.data_dir, "instance.json"))
        if keep is None:
            keep = os.environ.get("GLINT_KEYSTONE_KEEP") == "1"
        if self.owned and not keep:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _running(pid):
    """Alive and not a zombie (a detached uWSGI is reaped by whoever inherited it, perhaps
    late)."""
    try:
        stat = _read(f"/proc/{pid}/stat").decode()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _terminate(pid, proc=None):
    """Stop uWSGI: its master is the leader of a process group of its own (start_new_session),
    which holds only the processes it started."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                break
        elif not _running(pid):
            break
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # stragglers (or a master that ignored SIGTERM)
    if proc is not None:
        proc.wait()


def start(port=None, data_dir=None, image_url=None, detach=False, paths=None,
          ready_timeout=READY_TIMEOUT):
    """Set up if needed, copy the pristine state into data_dir (a fresh temporary directory by
    default, removed again by stop()), and serve Keystone on 127.0.0.1:port (port None or 0: one
    the kernel picks, with no bind race). image_url, if given, becomes the image service's
    endpoint in the catalogue. detach=True leaves it running when this process exits (the CLI's
    `start`); otherwise it gets SIGTERM when this process dies. Returns a Keystone once
    GET /v3 answers 200."""
    paths = setup(paths=paths)
    owned = data_dir is None
    if owned:
        data_dir = tempfile.mkdtemp(prefix="glint-keystone-")
    else:
        data_dir = os.path.abspath(data_dir)
        os.makedirs(data_dir, exist_ok=True)
    try:
        with _locked(paths):  # no rebuild of the state while it is copied
            for name in ("fernet-keys", "credential-keys"):
                shutil.rmtree(os.path.join(data_dir, name), ignore_errors=True)
                shutil.copytree(os.path.join(paths.state, name), os.path.join(data_dir, name))
            for name in ("keystone.db", "fixtures.json"):
                shutil.copyfile(os.path.join(paths.state, name), os.path.join(data_dir, name))
        return _launch(paths, data_dir, owned, port=port, image_url=image_url, detach=detach,
                       ready_timeout=ready_timeout)
    except BaseException:
        if owned and os.environ.get("GLINT_KEYSTONE_KEEP") != "1":
            shutil.rmtree(data_dir, ignore_errors=True)
        raise


def _launch(paths, data_dir, owned, port=None, image_url=None, detach=False,
            ready_timeout=READY_TIMEOUT):
    fixtures_path = os.path.join(data_dir, "fixtures.json")
    fixtures = json.loads(_read(fixtures_path)) if os.path.exists(fixtures_path) else None
    listener = _listen(port)
    port = listener.getsockname()[1]
    url = f"http://{HOST}:{port}/v3"
    _rewrite_catalog(os.path.join(data_dir, "keystone.db"), url, image_url)
    _write_config(data_dir)
    fd = listener.fileno()
    argv = [
        paths.bin("uwsgi"),
        "--http-socket", f"fd://{fd}",
        "--module", "keystone.wsgi.api:application",
        "--home", paths.venv,
        # SIGTERM stops it (not a reload); no Python teardown at exit: stop takes ~1s, not 2-3.
        "--master", "--die-on-term", "--need-app", "--strict", "--skip-atexit-teardown",
        # As Keystone's own uWSGI setup (devstack): worker processes, each loading the app.
        "--processes", "2", "--threads", "1", "--lazy-apps", "--enable-threads",
        "--thunder-lock", "--buffer-size", "65535",
        # --http-socket closes each connection after its response: say so, or clients that keep
        # connections alive (requests, hyper) send the next request into a closed one and get a
        # reset. (Keep-alive would pin an idle connection to one of the two workers.)
        "--add-header", "Connection: close",
        "--procname-prefix-spaced", f"glint-keystone:{port}",
    ]
    log_file = open(os.path.join(data_dir, "uwsgi.log"), "ab")
    try:
        proc = subprocess.Popen(
            argv, cwd=data_dir, stdin=subprocess.DEVNULL, stdout=log_file,
            stderr=subprocess.STDOUT, pass_fds=(fd,), start_new_session=True,
            env=_clean_env({"OS_KEYSTONE_CONFIG_DIR": data_dir,
                            "OS_KEYSTONE_CONFIG_FILES": "keystone.conf"}),
            preexec_fn=None if detach else _set_pdeathsig)
    finally:
        log_file.close()
        listener.close()  # uWSGI has its own copy of the socket now
    ks = Keystone(paths, data_dir, owned, proc, port, fixtures)
    with open(os.path.join(data_dir, "instance.json"), "w") as f:
        json.dump({"pid": proc.pid, "port": port, "url": url, "owned": owned}, f)
    try:
        _wait_ready(ks, ready_timeout)
    except BaseException:
        sys.stderr.write(f"--- {ks.log_path} ---\n{ks.log()}--- end of uwsgi.log ---\n")
        ks.stop(keep=True)
        raise
    return ks


def _wait_ready(ks, timeout):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        if ks.proc.poll() is not None:
            raise RuntimeError(f"uWSGI exited {ks.proc.returncode} before Keystone answered")
        try:
            with urllib.request.urlopen(ks.url, timeout=5) as r:
                if r.status == 200:
                    return
                last = f"HTTP {r.status}"
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
        except OSError as e:
            last = str(e)
        if time.monotonic() > deadline:
            raise RuntimeError(f"Keystone did not answer GET {ks.url} with 200 within "
                               f"{timeout:.0f}s (last: {last})")
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# Talking to Keystone


def request(method, url, body=None, headers=None, timeout=30):
    """(status, parsed JSON body or text or None, headers) of one request; HTTP errors are
    answers, not exceptions."""
    data = json.dumps(body).encode() if body is not None else None
    h = {"Accept": "application/json", **(headers or {})}
    if data is not None:
        h["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw, rh = r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        status, raw, rh = e.code, e.read(), e.headers
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw.decode(errors="replace")
    return status, parsed, rh


def token(auth_url, username, project=None, password_=None, system=False):
    """(token, expires_at) by password authentication (POST /v3/auth/tokens) of a user of the
    Default domain, scoped to `project` (a name, in the Default domain) or to the system.
    expires_at is Keystone's string, e.g. 2026-11-27T15:00:00.000000Z."""
    auth = {"identity": {"methods": ["password"], "password": {"user": {
        "name": username, "domain": {"id": DOMAIN_ID},
        "password": password_ if password_ is not None else password(username)}}}}
    if system:
        auth["scope"] = {"system": {"all": True}}
    elif project is not None:
        auth["scope"] = {"project": {"name": project, "domain": {"id": DOMAIN_ID}}}
    status, body, headers = request("POST", auth_url.rstrip("/") + "/auth/tokens",
                                    {"auth": auth})
    if status != 201:
        raise RuntimeError(f"token for {username} on {project or 'system'}: HTTP {status}: {body}")
    return headers["X-Subject-Token"], body["token"]["expires_at"]


def validate(auth_url, service_token, subject_token, nocatalog=True):
    """GET /v3/auth/tokens as keystonemiddleware does: (status, body)."""
    url = auth_url.rstrip("/") + "/auth/tokens" + ("?nocatalog" if nocatalog else "")
    status, body, _ = request("GET", url, headers={"X-Auth-Token": service_token,
                                                   "X-Subject-Token": subject_token})
    return status, body


def revoke(auth_url, admin_token, subject_token):
    """DELETE /v3/auth/tokens: the HTTP status (204 when revoked). Keystone lets a token revoke
    itself, a `service` user's token (glance) or a system admin's revoke any."""
    status, body, _ = request("DELETE", auth_url.rstrip("/") + "/auth/tokens",
                              headers={"X-Auth-Token": admin_token,
                                       "X-Subject-Token": subject_token})
    if status != 204:
        raise RuntimeError(f"revoke: HTTP {status}: {body}")
    return status


def os_env(auth_url, username="admin", project="admin"):
    return {
        "OS_AUTH_TYPE": "password",
        "OS_AUTH_URL": auth_url,
        "OS_IDENTITY_API_VERSION": "3",
        "OS_REGION_NAME": REGION,
        "OS_USERNAME": username,
        "OS_PASSWORD": password(username),
        "OS_USER_DOMAIN_ID": DOMAIN_ID,
        "OS_PROJECT_NAME": project,
        "OS_PROJECT_DOMAIN_ID": DOMAIN_ID,
        "OS_INTERFACE": "public",
    }


def attach(data_dir, paths=None):
    """The Keystone that `keystone.py start` left running in data_dir."""
    data_dir = os.path.abspath(data_dir)
    info = json.loads(_read(os.path.join(data_dir, "instance.json")))
    fixtures = json.loads(_read(os.path.join(data_dir, "fixtures.json")))
    ks = Keystone(paths or Paths(), data_dir, info["owned"], None, info["port"], fixtures)
    ks.pid = info["pid"]
    try:  # still that uWSGI, not a process that has since been given its pid?
        if f"glint-keystone:{info['port']}".encode() not in _read(f"/proc/{ks.pid}/cmdline"):
            ks.pid = None
    except OSError:
        ks.pid = None
    return ks


# ---------------------------------------------------------------------------------------------
# Command line


def _shell_quote(value):
    return "'" + value.replace("'", "'\\''") + "'"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("setup", help="build the cache if missing or stale")
    p.add_argument("--force", action="store_true", help="rebuild the venv and the state")
    for name in ("start", "serve"):
        p = sub.add_parser(name)
        p.add_argument("--port", type=int, default=None)
        p.add_argument("--data-dir", default=None)
        p.add_argument("--image-url", default=None)
        if name == "serve":
            p.add_argument("--stop-on-stdin-eof", action="store_true")
    p = sub.add_parser("stop")
    p.add_argument("--data-dir", required=True)
    p = sub.add_parser("env")
    p.add_argument("--data-dir", default=None, help="of a Keystone that `start` left running")
    p.add_argument("--url", default=None, help="the auth URL, if not from --data-dir")
    p.add_argument("--user", default="admin")
    p.add_argument("--project", default=None)
    args = parser.parse_args(argv)

    if args.command == "setup":
        started = time.monotonic()
        paths = setup(force=args.force)
        log(f"setup done in {time.monotonic() - started:.2f}s: {paths.root}")
        return 0
    if args.command == "start":
        ks = start(port=args.port, data_dir=args.data_dir, image_url=args.image_url, detach=True)
        print(json.dumps({"url": ks.url, "port": ks.port, "pid": ks.pid, "data_dir": ks.data_dir,
                          "fixtures": os.path.join(ks.data_dir, "fixtures.json")}), flush=True)
        return 0
    if args.command == "serve":
        stop_signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

        def stop_serving(*_):
            raise KeyboardInterrupt

        for s in stop_signals:
            signal.signal(s, stop_serving)
        ks = start(port=args.port, data_dir=args.data_dir, image_url=args.image_url)
        signalled = False
        try:
            print(json.dumps({"url": ks.url, "port": ks.port, "pid": ks.pid,
                              "data_dir": ks.data_dir,
                              "fixtures": os.path.join(ks.data_dir, "fixtures.json")}),
                  flush=True)
            if args.stop_on_stdin_eof:
                while sys.stdin.buffer.read(65536):
                    pass
            else:
                ks.proc.wait()  # until a signal, or uWSGI's own end
        except KeyboardInterrupt:
            signalled = True
        finally:
            for s in stop_signals:
                signal.signal(s, signal.SIG_IGN)
            died = ks.proc.poll()
            if died is not None and not signalled:
                sys.stderr.write(f"--- {ks.log_path} ---\n{ks.log()}--- end of uwsgi.log ---\n")
            ks.stop()
        if died is not None and not signalled:
            log(f"uWSGI exited {died} on its own")
            return 1
        return 0
    if args.command == "stop":
        if not os.path.exists(os.path.join(args.data_dir, "instance.json")):
            log(f"no Keystone started in {args.data_dir}: nothing to stop")
            return 0
        attach(args.data_dir).stop()
        return 0
    if args.command == "env":
        if args.data_dir:
            ks = attach(args.data_dir)
            values = ks.env(args.user, args.project)
        elif args.url:
            values = os_env(args.url, args.user, args.project or USERS.get(args.user, ("admin",))[0])
        else:
            parser.error("env needs --data-dir (of a running Keystone) or --url")
        for key, value in values.items():
            print(f"export {key}={_shell_quote(value)}")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
