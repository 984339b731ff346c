#!/usr/bin/env bash
# Runs every test glint has: unit, handler and lifecycle tests (the real binary over real
# sockets, with a harness playing systemd), then builds the .deb and .rpm, checks the .deb
# with lintian, and, as root, installs it under a real systemd 254 in a namespace
# (tests/e2e/systemd_e2e.py). Usage: tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# The lifecycle tests need the endpoints that hold requests open (feature `testing`).
cargo test --locked --features testing

packaging/build.sh
deb=$(ls -t target/debian/glint_*.deb | head -1)
if command -v lintian >/dev/null 2>&1; then
    lintian --fail-on error "$deb"
else
    echo "lintian not installed: the .deb was not checked (apt-get install lintian)"
fi

if [ "$(id -u)" -eq 0 ]; then
    python3 tests/e2e/systemd_e2e.py "$deb"
else
    echo "SKIPPED: the systemd end-to-end test needs root (it boots systemd 254 in a namespace)"
fi
