#!/usr/bin/env bash
# The soak campaign: tests/soak_fuse.rs for KIRQ_SOAK_SECS seconds (default 600: ten minutes) with
# a pushing hub, 64 HTTP connections, two device readers and the kernel feeder; needs root (FUSE
# mount, RNDADDENTROPY). Writes the result table to target/soak/result-<secs>s.md and prints it.
# The normal suite (scripts/test.sh) runs the same test for 60 s.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${KIRQ_SOAK_SECS:-600}"
mkdir -p target/soak
report="$PWD/target/soak/result-${secs}s.md"
KIRQ_SOAK_SECS="$secs" KIRQ_SOAK_REPORT="$report" \
  cargo test --test soak_fuse -- --nocapture --test-threads=1
echo "== soak result ($report)"
cat "$report"
