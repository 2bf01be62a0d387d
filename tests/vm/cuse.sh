# Guest script of the CUSE VM test (tests/cuse_vm.rs) and the device benchmark (benches/device.rs),
# sourced by tests/vm/init after fuse.ko and cuse.ko are loaded: starts kirqd as a CUSE device with
# the kernel feeder, runs the checks (or the benchmark). Result lines start with KIRQ-VM (this
# script) or KIRQ-PROBE (kirqd probe-device).
NAME=$(cat /kirq/name)
MODE=$(cat /kirq/mode)
say mode "$MODE" "$(ls -l /dev/cuse 2>&1)"
say entropy_avail_before_kirqd "$(cat /proc/sys/kernel/random/entropy_avail)"

/kirqd --log info run --config /kirq/kirqd.toml --admit-packets /kirq/spool.bin >/tmp/kirqd.log 2>&1 &
KIRQD=$!
i=0
while [ ! -c "/dev/$NAME" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
[ -c "/dev/$NAME" ]
check node-appears $? "$(ls -l /dev/$NAME 2>&1)"
say entropy_avail_after_start "$(cat /proc/sys/kernel/random/entropy_avail)"

if [ "$MODE" = bench ]; then
  # Measure a filled pool: wait until the whole spool is verified and admitted.
  i=0
  while ! grep -q "spool admitted" /tmp/kirqd.log && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
  /kirqd probe-device "/dev/$NAME" --bench --bench-bytes "$(cat /kirq/bench_bytes)"
  check bench $? ""
else
  # Two dd readers at once (4 KiB and 64 KiB blocks); probe-device checks their output with its own.
  dd if="/dev/$NAME" of=/tmp/a bs=4096 count=16 2>/dev/null &
  A=$!
  dd if="/dev/$NAME" of=/tmp/b bs=65536 count=1 2>/dev/null &
  B=$!
  wait $A; ra=$?
  wait $B; rb=$?
  check dd-4k-64k "$((ra + rb))" "$(wc -c </tmp/a) + $(wc -c </tmp/b) bytes"
  /kirqd probe-device "/dev/$NAME" --compare /tmp/a --compare /tmp/b
  # The feeder: credit while the CRNG was not ready, then RNDRESEEDCRNG.
  i=0
  while ! grep -q "kernel CRNG reseeded" /tmp/kirqd.log && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done
  grep -q "kernel CRNG reseeded" /tmp/kirqd.log
  check feeder-reseed $? ""
  say entropy_avail_end "$(cat /proc/sys/kernel/random/entropy_avail)"
fi
ESC=$(printf '\033')
grep -E "credited|reseeded|spool admitted|CUSE device registered|ERROR|WARN" /tmp/kirqd.log \
  | sed -e "s/${ESC}\[[0-9;]*m//g" -e 's/^/KIRQ-VM log /' | head -n 40
kill -TERM $KIRQD
wait $KIRQD
say kirqd_exit "$?"
i=0
while [ -e "/dev/$NAME" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
[ ! -e "/dev/$NAME" ]
check node-disappears $? ""
if [ "$MODE" = bench ]; then
  # The newcomer's path: `kirqd demo --device-dir DIR --cuse` (hub + daemon in one process).
  # In the bench run: the release kirqd starts the demo in seconds, a debug one needs ~25 s.
  /kirqd --log warn demo --listen 127.0.0.1:18080 --device-dir /tmp/demo --cuse >/tmp/demo.log 2>&1 &
  DEMO=$!
  i=0
  while [ ! -e /tmp/demo/kirq-rng ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
  n=$(timeout 30 dd if=/tmp/demo/kirq-rng bs=4096 count=1 2>/dev/null | wc -c)
  [ -L /tmp/demo/kirq-rng ] && [ -c /dev/kirq-rng ] && [ "$n" -gt 0 ]
  check demo-cuse $? "$(readlink /tmp/demo/kirq-rng) read $n bytes"
  kill -TERM $DEMO
  wait $DEMO
fi
