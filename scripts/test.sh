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

# cargo-deb builds the .deb in tests/packaging_dpkg.rs (crates.io, pinned by its own lock file).
if ! cargo deb --version >/dev/null 2>&1; then
  echo "== installing cargo-deb"
  cargo install cargo-deb --locked
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
# cargo-deny (crates.io, pinned by its own lock file): the dependency policy in deny.toml.
if ! cargo deny --version >/dev/null 2>&1; then
  echo "== installing cargo-deny"
  cargo install cargo-deny --locked
fi
# cargo-deny reads `cargo metadata` for every target platform, so it needs crates a Linux build
# never downloads (wasm-bindgen, anstyle-wincon, ...): fetch them from crates.io first, pinned by
# Cargo.lock, or a fresh machine fails here with "--offline was specified".
echo "== cargo fetch --locked (all platforms, for cargo deny)"
cargo fetch --locked --quiet
echo "== cargo deny check licenses bans sources"
cargo deny --offline check --hide-inclusion-graph licenses bans sources
# Advisories need the RustSec database, a git repository on GitHub, which these machines and CI
# cannot reach (no registry ships it). KIRQ_ADVISORY_DB may name a clone of it brought here by
# other means; cargo-deny then reads it offline. Without it, say so: it is not checked.
if [ -n "${KIRQ_ADVISORY_DB:-}" ]; then
  db_root="$PWD/target/advisory-dbs"
  mkdir -p "$db_root"
  # cargo-deny keeps the database for https://github.com/rustsec/advisory-db under this name.
  ln -sfn "$(realpath "$KIRQ_ADVISORY_DB")" "$db_root/advisory-db-3157b0e258782691"
  sed "s|^# db-path = .*|db-path = \"$db_root\"|" deny.toml > target/deny-advisories.toml
  echo "== cargo deny check advisories (database $(git -C "$KIRQ_ADVISORY_DB" log -1 --format='%h of %cs'))"
  cargo deny --offline --config target/deny-advisories.toml check --hide-inclusion-graph advisories
else
  echo "== cargo deny check advisories: NOT CHECKED (no RustSec database here; GitHub is unreachable." \
       "Set KIRQ_ADVISORY_DB to a clone of github.com/rustsec/advisory-db; see README, Dependency policy)"
fi
echo "== cargo test"
cargo test --all-targets --no-fail-fast --quiet -- --test-threads=2
# Every fuzz target, bounded (cargo-fuzz on nightly; installs cargo-fuzz, fails without nightly):
# the committed corpus replayed, then KIRQ_FUZZ_SECS (12) seconds of fuzzing each.
echo "== fuzz smoke (scripts/fuzz-smoke.sh)"
./scripts/fuzz-smoke.sh
