#!/usr/bin/env bash
# Bounded fuzz smoke run of every target in fuzz/ (part of scripts/test.sh): builds the targets
# with cargo-fuzz (nightly), replays the committed corpus (seeds and kept reproducers) and fuzzes
# each target for KIRQ_FUZZ_SECS seconds (default 12; 14 targets ≈ 3 min plus the build). Fails on
# any crash, leak, timeout or out-of-memory; prints execs per target. A fixed -seed makes every
# run explore the same inputs in the same order (only how far it gets in the time varies). The
# fuzzer's new inputs go to target/fuzz-smoke/, never into the committed corpus.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${KIRQ_FUZZ_SECS:-12}"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "error: the fuzz smoke run needs a nightly toolchain: rustup toolchain install nightly" >&2
  exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

start=$(date +%s)
(cd fuzz && cargo +nightly fuzz build -O)
echo "== fuzz build: $(( $(date +%s) - start )) s"

out=target/fuzz-smoke
mkdir -p "$out"
targets=$(cd fuzz && cargo +nightly fuzz list)
printf '%-16s %12s %8s\n' target execs exec/s
failed=0
for t in $targets; do
  mkdir -p "$out/$t"
  dict=(); if [ -e "fuzz/dict/$t.dict" ]; then dict=(-dict="dict/$t.dict"); fi
  log="$out/$t.log"
  # -rss_limit_mb: a decoder that allocates what an input claims is a finding.
  if ! (cd fuzz && "target/x86_64-unknown-linux-gnu/release/$t" \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -seed=1 -print_final_stats=1 "${dict[@]}" \
        -artifact_prefix="../$out/$t-" "../$out/$t" "corpus/$t") >"$log" 2>&1; then
    echo "error: fuzz target $t failed; see $log (the input is under $out/$t-*)" >&2
    tail -30 "$log" >&2
    failed=1
    continue
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  printf '%-16s %12s %8s\n' "$t" "$execs" "$rate"
done
echo "== fuzz smoke: $(( $(date +%s) - start )) s in all"
exit $failed
