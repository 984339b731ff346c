#!/usr/bin/env bash
# Builds the .deb (cargo-deb) and the .rpm (cargo-generate-rpm) from one release build and
# prints their paths. Installs the two cargo tools when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in cargo-deb:cargo-deb cargo-generate-rpm:cargo-generate-rpm; do
    bin=${tool%%:*}
    command -v "$bin" >/dev/null 2>&1 || cargo install --locked "${tool##*:}"
done
cargo build --release --locked --bin glint
deb=$(cargo deb --no-build --locked --quiet 2>/dev/null || cargo deb --no-build --locked)
cargo generate-rpm
rpm=$(ls -t target/generate-rpm/glint-*.rpm | head -1)
echo "deb: ${deb##* }"
echo "rpm: $rpm"
