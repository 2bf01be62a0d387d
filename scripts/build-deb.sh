#!/usr/bin/env bash
# Builds the release .deb: release binaries, man pages from the clap definitions, cargo-deb.
# Output: target/debian/kirq_<version>-1_<arch>.deb (or the path given as $1).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked
cargo build --release --locked --bins
rm -rf target/man && mkdir -p target/man
"$target/release/kirqd" man --out target/man
"$target/release/kirq-hub" man --out target/man
cargo deb --no-build --strip ${1:+-o "$1"}
