#!/bin/bash
# bench-ws.sh HUBUD HUBU_BENCH [ROUNDS] [MESSAGES]
# `hubu-bench pairs` (100 pairs, window 32) over raw TCP, over WebSocket
# (/ws, subprotocol hubu.v1) and over WebSocket JSON (hubu.v1.json)
# alternating in one run: hubud on CPU 0, load on
# CPU 1, a fresh data directory per run. Prints one line per run (transport,
# delivered msgs/s, server CPU us/msg, e2e p50 and p99 us), then the medians
# and the ratios ws/tcp and json/tcp. Loopback only; stops only the processes it started.
set -u
# PORT (default 17890): the TCP listener; the HTTP listener is PORT+1.
P=${PORT:-17890}
HUBUD=${1:?usage: bench-ws.sh HUBUD HUBU_BENCH [ROUNDS] [MESSAGES]}; BENCH=${2:?}; ROUNDS=${3:-3}; MSGS=${4:-400000}
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
wait_port() { for _ in $(seq 100); do ss -ltn | grep -q "127.0.0.1:$1 " && return 0; sleep 0.1; done; return 1; }
run() { # transport
  local t=$1 D; D=$(mktemp -d -p "$W"); mkdir "$D/plugins"
  taskset -c 0 "$HUBUD" --listen 127.0.0.1:$P --http-listen 127.0.0.1:$(($P+1)) --admin-listen off --data "$D" \
    --secret sbs --plugins "$D/plugins" --log-level warn >"$D/log" 2>&1 & local SP=$!
  wait_port $P && wait_port $(($P+1))
  local args=(--port $P); [ "$t" = ws ] && args=(--ws --port $(($P+1))); [ "$t" = json ] && args=(--ws-json --port $(($P+1)))
  taskset -c 1 "$BENCH" pairs --pairs 100 --window 32 --messages "$MSGS" "${args[@]}" --secret sbs --server-pid $SP \
    --json 2>/dev/null | python3 -c '
import json,sys; d=json.load(sys.stdin)
print(sys.argv[1], round(d["delivered_per_s"]), d["server_cpu_us_per_msg"], round(d["e2e_p50_us"]), round(d["e2e_p99_us"]))' "$t"
  kill $SP; wait $SP 2>/dev/null; sleep 0.3
}
# PEERS=DIR (../shared/peers): Mosquitto QoS 1 pairs in the same rounds, as the
# peer every figure is a ratio to (mosquitto installed; mqttload.c from DIR).
mosq() {
  [ -n "${PEERS:-}" ] || return 0
  [ -x "$W/mqttload" ] || gcc -O2 -w -o "$W/mqttload" "$PEERS/mqttload.c" || return 0
  taskset -c 0 mosquitto -c "$PEERS/mosquitto.conf" >/dev/null 2>&1 & local SP=$!
  wait_port 18830
  taskset -c 1 "$W/mqttload" -p 18830 -P $SP -n 100 -w 32 -d 10 -W 2 | grep ^RESULT |
    sed -E 's/.*delivered_per_s=([0-9.]+).*lat_us_p50=([0-9.]+) p99=([0-9.]+) p999=([0-9.]+).*cpu_us_per_msg=([0-9.]+).*/mosquitto \1 \5 \2 \3/'
  kill $SP; wait $SP 2>/dev/null; sleep 0.3
}
for r in $(seq "$ROUNDS"); do run tcp; run ws; run json; mosq; done | tee "$W/runs"
python3 - "$W/runs" <<'PY'
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
med = {}
for t in ("tcp", "ws", "json", "mosquitto"):
    r = [x for x in rows if x[0] == t]
    if not r: continue
    med[t] = [st.median(float(x[i]) for x in r) for i in (1, 2, 3, 4)]
    print("median %-9s %8.0f msgs/s %6.2f us/msg server CPU  p50 %6.0f us  p99 %6.0f us" % (t, *med[t]))
for t in ("ws", "json"):
    if "tcp" in med and t in med:
        print("%s/tcp: msgs/s %.3f, server CPU per msg %.3f" % (t, med[t][0] / med["tcp"][0], med[t][1] / med["tcp"][1]))
for t in ("tcp", "ws", "json"):
    if "mosquitto" in med and t in med:
        print("%s/mosquitto: msgs/s %.2f, server CPU per msg %.2f" % (t, med[t][0] / med["mosquitto"][0], med[t][1] / med["mosquitto"][1]))
PY
