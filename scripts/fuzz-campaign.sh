#!/usr/bin/env bash
# The long fuzz campaign: every target in fuzz/ in turn until it has run KIRQ_FUZZ_EXECS
# executions (default 10 million) or KIRQ_FUZZ_MAX_SECS seconds (default 3600), on
# KIRQ_FUZZ_JOBS parallel workers (default 1). The growing corpus lives in target/fuzz-campaign/
# (merge new coverage into fuzz/corpus with `cargo fuzz cmin` if you want to keep it); crashes
# stop that target and are listed at the end. Usage: scripts/fuzz-campaign.sh [target...]
set -euo pipefail
cd "$(dirname "$0")/.."

execs="${KIRQ_FUZZ_EXECS:-10000000}"
max="${KIRQ_FUZZ_MAX_SECS:-3600}"
jobs="${KIRQ_FUZZ_JOBS:-1}"
(cd fuzz && cargo +nightly fuzz build -O)
targets="${*:-$(cd fuzz && cargo +nightly fuzz list)}"
out=target/fuzz-campaign
mkdir -p "$out"
summary="$out/summary.txt"
printf '%-16s %12s %8s %8s %s\n' target execs exec/s secs result | tee "$summary"
for t in $targets; do
  mkdir -p "$out/$t"
  dict=(); if [ -e "fuzz/dict/$t.dict" ]; then dict=(-dict="dict/$t.dict"); fi
  start=$(date +%s)
  per_job=$(( execs / jobs ))
  result=ok
  if ! (cd fuzz && "target/x86_64-unknown-linux-gnu/release/$t" -runs="$per_job" \
        -max_total_time="$max" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 "${dict[@]}" \
        -jobs="$jobs" -workers="$jobs" -artifact_prefix="../$out/$t-" \
        "../$out/$t" "corpus/$t") >"$out/$t.log" 2>&1; then
    result="CRASH (see $out/$t.log)"
  fi
  secs=$(( $(date +%s) - start ))
  n=$(grep -h '^stat::number_of_executed_units' "$out/$t.log" fuzz/fuzz-*.log 2>/dev/null \
      | awk '{s += $2} END {print s + 0}')
  rm -f fuzz/fuzz-*.log
  rate=$(( n / (secs > 0 ? secs : 1) ))
  printf '%-16s %12s %8s %8s %s\n' "$t" "$n" "$rate" "$secs" "$result" | tee -a "$summary"
done
