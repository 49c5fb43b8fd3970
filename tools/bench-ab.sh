#!/bin/bash
# bench-ab.sh OLD_HUBUD NEW_HUBUD HUBU_BENCH [ROUNDS]
# Two hubud binaries alternating in one run, with Mosquitto (the peer, from
# ../shared/peers) in the same rounds: `hubu-bench pairs` (100 pairs, window
# 32, 400k messages) and `hubu-bench rate` (10k msgs/s over 100 pairs, 10 s),
# server on CPU 0, load on CPU 1, a fresh data directory per run. Prints one
# line per run, then the medians and the ratios new/old and new/Mosquitto.
# For a refactor: old and new should agree within noise. Loopback only; stops
# only the processes it started.
set -u
OLD=${1:?usage: bench-ab.sh OLD_HUBUD NEW_HUBUD HUBU_BENCH [ROUNDS]}; NEW=${2:?}; BENCH=${3:?}; ROUNDS=${4:-3}
PEERS=$(cd "$(dirname "$0")/../../shared/peers" 2>/dev/null && pwd)
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
wait_port() { for _ in $(seq 100); do ss -ltn | grep -q "127.0.0.1:$1 " && return 0; sleep 0.1; done; return 1; }
run() { # label binary scenario hubu-bench-args...
  local label=$1 bin=$2 sc=$3; shift 3
  local D; D=$(mktemp -d -p "$W"); mkdir "$D/plugins"
  taskset -c 0 "$bin" --listen 127.0.0.1:17790 --admin-listen off --http-listen off --data "$D" --secret sbs --plugins "$D/plugins" \
    --log-level warn >"$D/log" 2>&1 & local SP=$!
  wait_port 17790
  taskset -c 1 "$BENCH" "$@" --port 17790 --secret sbs --server-pid $SP --json 2>/dev/null | python3 -c '
import json,sys; d=json.load(sys.stdin)
print(sys.argv[1], sys.argv[2], round(d["delivered_per_s"]), d["server_cpu_us_per_msg"], round(d["e2e_p50_us"]), round(d["e2e_p99_us"]))' "$label" "$sc"
  kill $SP; wait $SP 2>/dev/null; sleep 0.3
}
mq() { # scenario mqttload-args...
  local sc=$1; shift
  [ -n "$PEERS" ] && command -v mosquitto >/dev/null || return 0
  taskset -c 0 mosquitto -c "$PEERS/mosquitto.conf" >/dev/null 2>&1 & local MP=$!
  wait_port 18830
  taskset -c 1 "$W/mqttload" -p 18830 -P $MP "$@" | grep ^RESULT | sed -E \
    "s/.*delivered_per_s=([0-9.]+).*lat_us_p50=([0-9.]+) p99=([0-9.]+) p999=([0-9.]+).*cpu_us_per_msg=([0-9.]+).*/mosquitto $sc \1 \5 \2 \3/"
  kill $MP; wait $MP 2>/dev/null; sleep 0.3
}
[ -n "$PEERS" ] && gcc -O2 -w -o "$W/mqttload" "$PEERS/mqttload.c"
for r in $(seq "$ROUNDS"); do
  mq pairs -n 100 -w 32 -d 10 -W 2
  mq rate10k -n 100 -w 64 -r 10000 -d 10 -W 2
  for who in old new; do
    bin=$OLD; [ $who = new ] && bin=$NEW
    run $who "$bin" pairs pairs --pairs 100 --window 32 --messages 400000
    run $who "$bin" rate10k rate --pairs 100 --rate 10000 --seconds 10
  done
done | tee "$W/lines"
python3 - "$W/lines" <<'PY'
import sys, statistics as st, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) == 6: rows[(f[0], f[1])].append([float(x) for x in f[2:]])
med = {k: [st.median(c) for c in zip(*v)] for k, v in rows.items()}
print("\n| scenario | server | msgs/s | CPU µs/msg | p50 µs | p99 µs | CPU vs old | CPU vs Mosquitto | p99 vs Mosquitto |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for sc in ("pairs", "rate10k"):
    for who in ("mosquitto", "old", "new"):
        v = med.get((who, sc))
        if not v: continue
        o, m = med.get(("old", sc)), med.get(("mosquitto", sc))
        vs_old = f"{v[1]/o[1]:.3f}" if who == "new" and o else ""
        vs_m = f"{v[1]/m[1]:.2f}x" if who != "mosquitto" and m else ""
        p99_m = f"{v[3]/m[3]:.1f}x" if who != "mosquitto" and m else ""
        print(f"| {sc} | {who} | {v[0]:.0f} | {v[1]:.2f} | {v[2]:.0f} | {v[3]:.0f} | {vs_old} | {vs_m} | {p99_m} |")
PY
