#!/usr/bin/env bash
# Runs every test glint has: unit, handler and lifecycle tests (the real binary over real
# sockets, with a harness playing systemd) on SQLite, then the catalogue's tests again on a
# real PostgreSQL 15 and MariaDB, the compatibility suite (glanceclient and openstacksdk from
# PyPI, and the README's examples) on all three and with an S3 default store, database
# outages, glint against a real Keystone and behind HAProxy (one node, then two sharing a
# database and a bucket through reloads and restarts), then builds the .deb and .rpm, checks
# the .deb with lintian, and, as root, installs it under a real systemd 254 in a namespace
# (tests/e2e/systemd_e2e.py), and runs two nodes of it there behind HAProxy through rolling
# reloads and restarts (tests/e2e/nodes_e2e.py). Usage: tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# The S3 server the tests run S3 stores against: s3s-fs, installed by .ci/run into a cache
# outside the clone (see there), else the one on PATH. The Rust tests start instances of their
# own from it; tests/s3/server.py runs the one the Python suites share.
if [ -z "${TEST_S3S_FS:-}" ]; then
    TEST_S3S_FS=/var/cache/glint-test/s3s-fs-0.14.1/bin/s3s-fs
    [ -x "$TEST_S3S_FS" ] || TEST_S3S_FS=$(command -v s3s-fs || echo "$TEST_S3S_FS")
fi
export TEST_S3S_FS

# The lifecycle tests need the endpoints that hold requests open (feature `testing`).
cargo test --locked --features testing

# The suite's own PostgreSQL and MariaDB (tests/db/servers.py: loopback ports, data under
# target/db), stopped when this script ends. The handler tests, the binary's data, import,
# lifecycle and CLI tests (two nodes on one database, `glint db copy` round trips) run again
# on each: every test gets an empty database of its own there.
db_env=$(python3 tests/db/servers.py start)
trap 'python3 tests/db/servers.py stop >/dev/null 2>&1 || true
      python3 tests/s3/server.py stop >/dev/null 2>&1 || true' EXIT
postgres=$(sed -n 's/^TEST_POSTGRES_URL=//p' <<<"$db_env")
mariadb=$(sed -n 's/^TEST_MARIADB_URL=//p' <<<"$db_env")
for server in "$postgres" "$mariadb"; do
    TEST_DATABASE_SERVER=$server cargo test --locked --features testing \
        --lib --test data --test import --test lifecycle --test cli --test catalogue
done

# Compatibility: python-glanceclient and openstacksdk from PyPI, in a venv kept beside
# the build (target/ is ignored by git), against the real binary.
venv=target/compat-venv
if [ ! -x "$venv/bin/glance" ] || ! cmp -s tests/compat/requirements.txt "$venv/requirements.txt"; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/compat/requirements.txt
    cp tests/compat/requirements.txt "$venv/requirements.txt"
fi
"$venv/bin/python" tests/compat/test_clients.py target/debug/glint
for engine in postgres mariadb; do
    TEST_DATABASE_URL=$(python3 tests/db/servers.py fresh --engine "$engine") \
        "$venv/bin/python" tests/compat/test_clients.py target/debug/glint
done
# Once more on PostgreSQL with the default store in S3: the suite's s3s-fs (tests/s3/server.py:
# a loopback port, data under target/s3; stopped when this script ends), an empty bucket and
# an empty database of its own.
s3_lines=$(python3 tests/s3/server.py start)
mapfile -t s3_env <<<"$s3_lines"
bucket=$(python3 tests/s3/server.py fresh)
database=$(python3 tests/db/servers.py fresh --engine postgres)
env "${s3_env[@]}" TEST_S3_BUCKET="$bucket" TEST_DATABASE_URL="$database" \
    "$venv/bin/python" tests/compat/test_clients.py target/debug/glint
# The database restarted, and stopped for a few seconds, under load: 503s only, recovery by
# itself, a reload refused meanwhile, nothing half-written.
python3 tests/db/test_outage.py target/debug/glint
# The README's client examples as a user types them, against glint on 127.0.0.1:9292.
"$venv/bin/python" tests/compat/test_readme.py target/debug/glint

# A real Keystone (PyPI keystone under uWSGI, set up once into a cache outside the clone;
# .ci/run builds it): the harness's self-test, then glint in auth.mode = keystone: role
# matrix, revocation, Keystone outage, policy reload under load, the clients with passwords.
python3 tests/keystone/smoke.py
"$venv/bin/python" tests/keystone/test_glint.py target/debug/glint

# Behind a real HAProxy: forwarded scheme, host and client from a trusted proxy only.
python3 tests/proxy/test_haproxy.py target/debug/glint
# Two nodes behind HAProxy on one PostgreSQL database and one S3 bucket: uploads, downloads,
# glance-direct imports staged on one node and imported through the other, and lists, while
# the nodes are reloaded and restarted in turn: no request fails, every byte comes back.
python3 tests/proxy/test_nodes.py target/debug/glint

packaging/build.sh
deb=$(ls -t target/debian/glint_*.deb | head -1)
if command -v lintian >/dev/null 2>&1; then
    lintian --fail-on error "$deb"
else
    echo "lintian not installed: the .deb was not checked (apt-get install lintian)"
fi

if [ "$(id -u)" -eq 0 ]; then
    python3 tests/e2e/systemd_e2e.py "$deb"
    # Two nodes of the .deb in that systemd (glint and a glint-b made from its units) on the
    # PostgreSQL and s3s-fs started above, behind HAProxy: rolling `systemctl reload`, then
    # rolling `systemctl restart`, under test_nodes.py's load.
    python3 tests/e2e/nodes_e2e.py "$deb"
else
    echo "SKIPPED: the systemd end-to-end tests need root (they boot systemd 254 in a namespace)"
fi
