#!/usr/bin/env bash
# The whole Kirq test suite: installs what the tests need (Debian/Ubuntu, apt) when missing, then
# runs formatting, lints and every test. This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then sudo "$@"; else
      echo "error: installing packages needs root (or sudo): $*" >&2; exit 1; fi
  else "$@"; fi
}

# System packages the tests use, one per line in scripts/apt-packages.txt (comments allowed).
missing=()
while read -r pkg _; do
  case "$pkg" in ''|'#'*) continue ;; esac
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done < scripts/apt-packages.txt
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing: ${missing[*]}"
  need_root apt-get update -qq
  need_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Python tools the tests use, in a private virtualenv (scripts/pip-packages.txt).
if grep -qvE '^\s*(#|$)' scripts/pip-packages.txt 2>/dev/null; then
  venv=target/test-venv
  if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
  if ! "$venv/bin/pip" install -q --disable-pip-version-check -r scripts/pip-packages.txt; then
    echo "error: pip could not install scripts/pip-packages.txt" >&2; exit 1
  fi
  export PATH="$PWD/$venv/bin:$PATH"
fi

# cargo-deb builds the .deb in tests/packaging.rs (crates.io, pinned by its own lock file).
if ! cargo deb --version >/dev/null 2>&1; then
  echo "== installing cargo-deb"
  cargo install cargo-deb --locked
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --all-targets --no-fail-fast --quiet -- --test-threads=2
# Every fuzz target, bounded (cargo-fuzz on nightly; installs cargo-fuzz, fails without nightly):
# the committed corpus replayed, then KIRQ_FUZZ_SECS (12) seconds of fuzzing each.
echo "== fuzz smoke (scripts/fuzz-smoke.sh)"
./scripts/fuzz-smoke.sh
