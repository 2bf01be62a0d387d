#!/usr/bin/env bash
# Device read throughput vs /dev/urandom in the same run: the FUSE file on the host and the CUSE
# device in a qemu VM (see benches/device.rs). Needs root and the packages in
# scripts/apt-packages.txt. Prints Markdown tables.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench --bench device "$@"
