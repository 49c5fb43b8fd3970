#!/bin/bash
# bench-syscalls.sh HUBUD HUBU_BENCH [RATES] [SECONDS]
# System calls and context switches per delivered message at everyday
# loads: for each offered rate (default "1000 3000 10000" msgs/s over 100
# pairs), a fresh hubud (on CPU 0, durable --fsync batch unless FSYNC= says
# otherwise) runs `hubu-bench rate` (on CPU 1) while `perf stat` counts
# hubud's raw_syscalls:sys_enter and context-switches, all threads. Then,
# with BREAKDOWN=1, the same run once more under `strace -c -f` for the
# calls by name (strace slows hubud down: its counts, not its times, are the
# figure). Prints one line per rate: syscalls/msg, context switches/msg,
# server CPU us/msg, e2e p50/p99 us. Loopback only; stops what it started.
set -u
P=${PORT:-17950}
HUBUD=${1:?usage: bench-syscalls.sh HUBUD HUBU_BENCH [RATES] [SECONDS]}; BENCH=${2:?}
RATES=${3:-"1000 3000 10000"}; SECS=${4:-10}; FSYNC=${FSYNC:-batch}
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
wait_port() { for _ in $(seq 100); do ss -ltn | grep -q "127.0.0.1:$1 " && return 0; sleep 0.1; done; return 1; }
start() { # dir -> pid in SP
  taskset -c 0 "$HUBUD" --listen 127.0.0.1:$P --http-listen off --admin-listen off --data "$1" --secret sbs \
    --plugins "$1/plugins" --fsync "$FSYNC" --log-level warn >"$1/log" 2>&1 &
  SP=$!
  wait_port $P
}
for rate in $RATES; do
  D=$(mktemp -d -p "$W"); mkdir "$D/plugins"
  start "$D"
  perf stat -x, -e raw_syscalls:sys_enter,context-switches -p $SP -o "$D/perf" &
  PP=$!
  taskset -c 1 "$BENCH" rate --pairs 100 --rate "$rate" --seconds "$SECS" --port $P --secret sbs --server-pid $SP \
    --json >"$D/bench.json" 2>/dev/null
  kill -INT $PP; wait $PP 2>/dev/null
  kill $SP; wait $SP 2>/dev/null
  python3 - "$rate" "$D/perf" "$D/bench.json" <<'PY'
import json, sys
rate, perf, bench = sys.argv[1], sys.argv[2], sys.argv[3]
d = json.load(open(bench))
counts = {}
for line in open(perf):
    f = line.strip().split(",")
    if len(f) > 2 and f[0].replace(".", "").isdigit():
        counts[f[2]] = float(f[0])
n = d.get("delivered", 0) or 1
print("rate %6s: %5.1f syscalls/msg  %4.2f ctx switches/msg  %6.1f us/msg server CPU  e2e p50 %6.0f us  p99 %7.0f us  (%d delivered)" % (
    rate, counts.get("raw_syscalls:sys_enter", 0) / n, counts.get("context-switches", 0) / n,
    d.get("server_cpu_us_per_msg", 0), d.get("e2e_p50_us", 0), d.get("e2e_p99_us", 0), n))
PY
  if [ "${BREAKDOWN:-0}" = 1 ]; then
    D=$(mktemp -d -p "$W"); mkdir "$D/plugins"
    start "$D"
    strace -c -f -p $SP -o "$D/strace" 2>/dev/null &
    ST=$!
    sleep 0.5
    taskset -c 1 "$BENCH" rate --pairs 100 --rate "$rate" --seconds "$SECS" --port $P --secret sbs \
      --json >"$D/bench.json" 2>/dev/null
    kill -INT $ST; wait $ST 2>/dev/null
    kill $SP; wait $SP 2>/dev/null
    python3 - "$D/strace" "$D/bench.json" <<'PY'
import json, sys
n = json.load(open(sys.argv[2])).get("delivered", 0) or 1
rows = []
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) >= 5 and f[0][0].isdigit() and f[-1] not in ("total",):
        calls = int(f[3]); name = f[-1]
        rows.append((calls / n, name))
rows.sort(reverse=True)
print("    by call (strace -c, per msg): " + ", ".join("%s %.2f" % (name, c) for c, name in rows[:8]))
PY
  fi
done
