#!/usr/bin/env bash
# The long fuzz campaign: every target in fuzz/ in turn until it has run KIRQ_FUZZ_EXECS
# executions (default 10 million) or KIRQ_FUZZ_MAX_SECS seconds (default 3600), on
# KIRQ_FUZZ_JOBS parallel workers (default 1). The growing corpus lives in target/fuzz-campaign/
# (merge new coverage into fuzz/corpus with `cargo fuzz cmin` if you want to keep it); a crash
# stops that target, keeps the input beside its log and is listed in the summary.
# Usage: scripts/fuzz-campaign.sh [target...]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

execs="${KIRQ_FUZZ_EXECS:-10000000}"
max="${KIRQ_FUZZ_MAX_SECS:-3600}"
jobs="${KIRQ_FUZZ_JOBS:-1}"
(cd fuzz && cargo +nightly fuzz build -O)
targets="${*:-$(cd fuzz && cargo +nightly fuzz list)}"
out="$root/target/fuzz-campaign"
mkdir -p "$out"
summary="$out/summary.txt"
printf '%-16s %12s %8s %8s %s\n' target execs exec/s secs result | tee -a "$summary"
for t in $targets; do
  bin="$root/fuzz/target/x86_64-unknown-linux-gnu/release/$t"
  logs="$out/$t-logs"
  rm -rf "$logs"
  mkdir -p "$out/$t" "$logs"
  args=(-max_total_time="$max" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1
        -artifact_prefix="$out/$t-")
  if [ -e "fuzz/dict/$t.dict" ]; then args+=(-dict="$root/fuzz/dict/$t.dict"); fi
  if [ "$jobs" -gt 1 ]; then
    # Each worker writes fuzz-N.log in the working directory: one directory per target.
    args+=(-jobs="$jobs" -workers="$jobs" -runs=$(( execs / jobs )))
  else
    args+=(-runs="$execs")
  fi
  start=$(date +%s)
  result=ok
  (cd "$logs" && "$bin" "${args[@]}" "$out/$t" "$root/fuzz/corpus/$t") >"$logs/main.log" 2>&1 \
    || result="CRASH (see $logs)"
  secs=$(( $(date +%s) - start ))
  # The workers' logs hold their stats (the controlling process repeats them): count those.
  files=("$logs"/main.log); if [ "$jobs" -gt 1 ]; then files=("$logs"/fuzz-*.log); fi
  n=$(cat "${files[@]}" | sed -n 's/^stat::number_of_executed_units: *//p' \
      | awk '{s += $1} END {print s + 0}')
  printf '%-16s %12s %8s %8s %s\n' "$t" "$n" $(( n / (secs > 0 ? secs : 1) )) "$secs" \
    "$result" | tee -a "$summary"
done
