#!/usr/bin/env bash
# Runs every test glint has: unit, handler and the lifecycle tests that drive the real
# binary over real sockets with a harness playing systemd. Usage: tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# The lifecycle tests need the endpoints that hold requests open (feature `testing`).
cargo test --locked --features testing
