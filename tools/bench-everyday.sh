#!/bin/bash
# bench-everyday.sh OLD_HUBUD NEW_HUBUD HUBU_BENCH [ROUNDS]
# Everyday load and saturation, two hubud binaries and Mosquitto in one run.
# Each round runs Mosquitto QoS 1 (../shared/peers), then OLD and NEW with
# --fsync off and with --fsync batch (durable): at every offered rate in
# RATES (default "1000 3000 10000" msgs/s over 100 pairs, RATE_SECONDS each,
# default 10), then at saturation (100 pairs, window 32, MESSAGES, default
# 400000). Every server runs on CPU 0 with a fresh data directory, the load
# on CPU 1; `perf stat` counts the server's system calls and context
# switches (all threads) during each run. Prints one line per run, then the
# medians: msgs/s, server CPU µs per message, end-to-end p50/p99/p999,
# system calls and context switches per message, and CPU and p99 as ratios
# to Mosquitto's in the same rounds. Loopback only; stops what it started.
set -u
OLD=${1:?usage: bench-everyday.sh OLD_HUBUD NEW_HUBUD HUBU_BENCH [ROUNDS]}; NEW=${2:?}; BENCH=${3:?}
ROUNDS=${4:-3}; RATES=${RATES:-"1000 3000 10000"}; SECONDS_EACH=${RATE_SECONDS:-10}; MESSAGES=${MESSAGES:-400000}
command -v perf >/dev/null || { echo "needs perf" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/tools/bench-common.sh"
[ -n "$MQ" ] || { echo "needs ../shared/peers and mosquitto" >&2; rm -rf "$W"; exit 2; }
SP=""; PP=""
stop_all() { [ -n "$PP" ] && kill -INT $PP 2>/dev/null; [ -n "$SP" ] && kill $SP 2>/dev/null; wait 2>/dev/null; rm -rf "$W"; }
trap stop_all EXIT
count_start() { perf stat -x, -e raw_syscalls:sys_enter,context-switches -p "$SP" -o "$W/perf" 2>/dev/null & PP=$!; }
count_stop() { # delivered -> "syscalls/msg ctx/msg"
  kill -INT $PP 2>/dev/null; wait $PP 2>/dev/null; PP=""
  python3 - "$W/perf" "$1" <<'PY'
import sys
c = {}
for line in open(sys.argv[1]):
    f = line.strip().split(",")
    if len(f) > 2 and f[0].replace(".", "").isdigit(): c[f[2]] = float(f[0])
n = max(float(sys.argv[2]), 1)
print("%.1f %.2f" % (c.get("raw_syscalls:sys_enter", 0) / n, c.get("context-switches", 0) / n))
PY
}
stop_server() { kill $SP 2>/dev/null; wait $SP 2>/dev/null; SP=""; sleep 0.3; }
# one line: WHO SCENARIO msgs/s cpu_us/msg p50 p99 p999 syscalls/msg ctx/msg
mq() { # scenario, mqttload args
  local sc=$1; shift
  taskset -c 0 mosquitto -c "$PEERS/mosquitto.conf" >/dev/null 2>&1 & SP=$!
  wait_port 18830 || return
  count_start
  local r; r=$(taskset -c 1 "$W/mqttload" -p 18830 -P $SP "$@" | grep ^RESULT)
  local n; n=$(echo "$r" | sed -E 's/.*recv_total=([0-9]+).*/\1/')
  local counts; counts=$(count_stop "$n")
  echo "mosquitto $sc $(echo "$r" | sed -E 's/.*delivered_per_s=([0-9.]+).*lat_us_p50=([0-9.]+) p99=([0-9.]+) p999=([0-9.]+).*cpu_us_per_msg=([0-9.]+).*/\1 \5 \2 \3 \4/') $counts"
  stop_server
}
hb() { # label binary fsync scenario hubu-bench-args
  local label=$1 bin=$2 fsync=$3 sc=$4; shift 4
  local D; D=$(mktemp -d -p "$W"); mkdir "$D/plugins"
  taskset -c 0 "$bin" --listen 127.0.0.1:17796 --http-listen off --admin-listen off --data "$D" --secret sbs \
    --plugins "$D/plugins" --fsync "$fsync" --log-level warn >"$D/log" 2>&1 & SP=$!
  wait_port 17796 || return
  count_start
  taskset -c 1 "$BENCH" "$@" --port 17796 --secret sbs --server-pid $SP --json >"$D/json" 2>/dev/null
  local n; n=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("delivered", 0))' "$D/json" 2>/dev/null)
  local counts; counts=$(count_stop "${n:-0}")
  python3 - "$D/json" "$label-$fsync" "$sc" "$counts" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
    print(sys.argv[2], sys.argv[3], round(d["delivered_per_s"]), d["server_cpu_us_per_msg"], round(d["e2e_p50_us"]),
          round(d["e2e_p99_us"]), round(d["e2e_p999_us"]), sys.argv[4])
except Exception as e:
    print("#", sys.argv[2], sys.argv[3], "failed:", e)
PY
  stop_server; rm -rf "$D"
}
{
for r in $(seq "$ROUNDS"); do
  for rate in $RATES; do
    mq rate$rate -n 100 -w 64 -r "$rate" -d "$SECONDS_EACH" -W 2
    for who in old new; do
      bin=$OLD; [ $who = new ] && bin=$NEW
      for m in off batch; do hb $who "$bin" $m rate$rate rate --pairs 100 --rate "$rate" --seconds "$SECONDS_EACH"; done
    done
  done
  mq pairs -n 100 -w 32 -d 10 -W 2
  for who in old new; do
    bin=$OLD; [ $who = new ] && bin=$NEW
    for m in off batch; do hb $who "$bin" $m pairs pairs --pairs 100 --window 32 --messages "$MESSAGES"; done
  done
done
} | tee "$W/lines"
PYTHONPATH="$ROOT/tools" python3 - "$W/lines" <<'PY'
import sys
from bench_medians import medians
med, rounds = medians(sys.argv[1], 9, 2)
scen = sorted({k[1] for k in med}, key=lambda s: (s == "pairs", int(s[4:]) if s.startswith("rate") else 0))
who = ["mosquitto", "old-off", "new-off", "old-batch", "new-batch"]
print("\n| scenario | server | msgs/s | CPU µs/msg | p50 µs | p99 µs | p999 µs | syscalls/msg | ctx switches/msg"
      " | CPU vs Mosquitto | p99 vs Mosquitto | CPU new/old |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for s in scen:
    m = med.get(("mosquitto", s))
    for w in who:
        v = med.get((w, s))
        if not v: continue
        vs = lambda i: "%.2fx" % (v[i] / m[i]) if m and m[i] and w != "mosquitto" else ""
        old = med.get(("old-" + w.split("-")[-1], s)) if w.startswith("new") else None
        no = "%.2f" % (v[1] / old[1]) if old and old[1] else ""
        print("| %s | %s | %.0f | %.1f | %.0f | %.0f | %.0f | %.1f | %.2f | %s | %s | %s |" % (
            s, w, v[0], v[1], v[2], v[3], v[4], v[5], v[6], vs(1), vs(3), no))
print("\n(medians of %d round(s); every run's line is above)" % rounds)
PY
