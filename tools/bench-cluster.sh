#!/bin/bash
# bench-cluster.sh — cluster mode's cost per message, in one run: hubu-bench
# pairs against (1) one hubud in cluster mode with senders and receivers on
# it, (2) two nodes with the senders on node A and the receivers on node B,
# (3) one hubud on the same MariaDB without --cluster, and Mosquitto QoS 1
# pairs when it and ../shared/peers are present; runs alternating.
#
#   tools/bench-cluster.sh BUILD_DIR [--runs N] [--messages M] [--pairs P] [--window W]
#
# A private mariadbd (scripts/mariadb-private.sh, durable) and redis-server
# (scripts/redis-private.sh) are started in a temp dir; every hubud run gets
# a fresh database and an empty Redis (FLUSHALL). The servers (hubud nodes,
# mariadbd, redis-server) run on CPU 0 and the load generator on CPU 1, as
# ../shared/peers/side-by-side.sh pins them. Per run: delivered msgs/s,
# server CPU µs per message on each node, mariadbd and redis-server CPU µs
# per message, the nodes' Redis calls and round trips per message (their
# hubu_cluster_redis_commands_total and _writes_total: a script call is one
# command; one socket write carries every command queued since the last, so
# writes are the round trips pipelining leaves), the commands Redis executed
# per message (INFO stats total_commands_processed: the scripts' own calls
# counted), and MariaDB statements per message (Questions).
# Then a table of medians. Loopback only; stops only what it started.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
B=$(cd "${1:?usage: bench-cluster.sh BUILD_DIR [options]}" && pwd)
shift
RUNS=3
MESSAGES=200000
NPAIRS=100
WINDOW=32
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --messages) MESSAGES=$2; shift 2 ;;
    --pairs) NPAIRS=$2; shift 2 ;;
    --window) WINDOW=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
. "$HERE/bench-common.sh"
trap 'cleanup; "$ROOT/scripts/mariadb-private.sh" stop "$W/mdb" >/dev/null 2>&1; "$ROOT/scripts/redis-private.sh" stop "$W/redis" >/dev/null 2>&1; rm -rf "$W"' EXIT INT TERM

"$ROOT/scripts/mariadb-private.sh" start "$W/mdb" >/dev/null || exit 2
. "$W/mdb/env"
"$ROOT/scripts/redis-private.sh" start "$W/redis" >/dev/null || exit 2
. "$W/redis/env"
taskset -a -pc 0 "$MARIADB_PID" >/dev/null
taskset -a -pc 0 "$REDIS_PID" >/dev/null
export HUBU_STORE_PASSWORD=$MARIADB_PASSWORD
rcli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
redis_cmds() { rcli INFO stats | tr -d '\r' | sed -n 's/^total_commands_processed://p'; }
db_questions() { "$ROOT/scripts/mariadb-private.sh" sql "$W/mdb" "SHOW GLOBAL STATUS LIKE 'Questions'" | awk '{print $2}' | tail -1; }
cpu_s() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat"; }

# one line: WHO msgs_per_s cpuA_us cpuB_us db_us redis_us node_redis_calls node_redis_writes redis_executed db_statements p50_us p99_us (per message)
mq() {
  [ -n "$MQ" ] || return 0
  taskset -c 0 mosquitto -c "$PEERS/mosquitto.conf" >/dev/null 2>&1 & local SP=$!
  PIDS="$PIDS $SP"; wait_port 18830
  local r; r=$(taskset -c 1 "$W/mqttload" -p 18830 -P $SP -n "$NPAIRS" -w "$WINDOW" -d 10 -W 2 | grep ^RESULT)
  echo "mosquitto $(echo "$r" | sed -E 's/.*delivered_per_s=([0-9.]+).*lat_us_p50=([0-9.]+) p99=([0-9.]+) p999=([0-9.]+).*cpu_us_per_msg=([0-9.]+).*/\1 \5 0 0 0 0 0 0 0 \2 \3/')"
  cleanup; sleep 0.3
}
N=0
node() { # dir port node-id cluster(0|1) -> echoes the pid
  local D=$1 port=$2 id=$3 cl=$4 extra=()
  [ "$cl" = 1 ] && extra=(--cluster "$REDIS_URL" --node-id "$id")
  taskset -c 0 "$B/hubud" --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$((port + 10))" --http-listen off \
    --data "$D/n$id" --secret sbs \
    --plugins "$D/plugins" --log-level warn --store "mariadb://$MARIADB_USER@127.0.0.1:$MARIADB_PORT/hubu_cb$N" \
    "${extra[@]}" >"$D/log$id" 2>&1 &
  echo $!
}
# the nodes' Redis commands and socket writes so far: "COMMANDS WRITES"
node_redis() {
  local c=0 w=0 p m
  for p in "$@"; do
    m=$(curl -fsS "http://127.0.0.1:$((p + 10))/metrics" 2>/dev/null)
    c=$((c + $(echo "$m" | awk '/^hubu_cluster_redis_commands_total /{print $2}' | cut -d. -f1 | grep . || echo 0)))
    w=$((w + $(echo "$m" | awk '/^hubu_cluster_redis_writes_total /{print $2}' | cut -d. -f1 | grep . || echo 0)))
  done
  echo "$c $w"
}
hb() { # WHO: cluster1 | cluster2 | plain
  local who=$1
  local D; D=$(mktemp -d -p "$W"); mkdir "$D/plugins"
  N=$((N + 1))
  "$ROOT/scripts/mariadb-private.sh" sql "$W/mdb" "CREATE DATABASE hubu_cb$N" >/dev/null
  rcli FLUSHALL >/dev/null
  local A Bp="" recv=()
  if [ "$who" = plain ]; then A=$(node "$D" 17790 1 0); else A=$(node "$D" 17790 1 1); fi
  PIDS="$PIDS $A"; wait_port 17790 || return
  if [ "$who" = cluster2 ]; then
    Bp=$(node "$D" 17791 2 1); PIDS="$PIDS $Bp"; wait_port 17791 || return
    recv=(--recv-port 17791 --recv-pid "$Bp")
  fi
  sleep 0.5
  local ports=(17790); [ "$who" = cluster2 ] && ports=(17790 17791)
  local r0 q0 d0 x0 n0; r0=$(redis_cmds); q0=$(db_questions); d0=$(cpu_s "$MARIADB_PID"); x0=$(cpu_s "$REDIS_PID")
  n0=$(node_redis "${ports[@]}")
  local out; out=$(taskset -c 1 "$B/hubu-bench" pairs --pairs "$NPAIRS" --window "$WINDOW" --messages "$MESSAGES" \
    --port 17790 --secret sbs --server-pid "$A" "${recv[@]}" --json)
  local r1 q1 d1 x1 n1; r1=$(redis_cmds); q1=$(db_questions); d1=$(cpu_s "$MARIADB_PID"); x1=$(cpu_s "$REDIS_PID")
  n1=$(node_redis "${ports[@]}")
  echo "$out" | python3 -c '
import json,sys
d=json.load(sys.stdin); n=d["delivered"]
who,r0,r1,q0,q1,d0,d1,x0,x1,c0,w0,c1,w1=sys.argv[1],*map(float,sys.argv[2:])
print(who, round(d["delivered_per_s"]), d["server_cpu_us_per_msg"], d.get("recv_node_cpu_us_per_msg", 0),
      round((d1-d0)*1e6/n,2), round((x1-x0)*1e6/n,2), round((c1-c0)/n,3), round((w1-w0)/n,3), round((r1-r0)/n,3),
      round((q1-q0)/n,3), round(d["e2e_p50_us"]), round(d["e2e_p99_us"]))' "hubud-$who" "$r0" "$r1" "$q0" "$q1" "$d0" \
    "$d1" "$x0" "$x1" $n0 $n1
  cleanup; rm -rf "$D"
  "$ROOT/scripts/mariadb-private.sh" sql "$W/mdb" "DROP DATABASE hubu_cb$N" >/dev/null
  sleep 0.3
}
{
  for r in $(seq "$RUNS"); do
    mq
    for who in plain cluster1 cluster2; do hb $who; done
  done
} | tee "$W/lines"
PYTHONPATH="$ROOT/tools" python3 - "$W/lines" <<'PY'
import sys
from bench_medians import medians
med, _ = medians(sys.argv[1], 12, 1)
names = {"mosquitto": "Mosquitto QoS 1", "hubud-plain": "one hubud, MariaDB, no --cluster",
         "hubud-cluster1": "one node (--cluster)", "hubud-cluster2": "senders on A, receivers on B"}
print("\n| setup | msgs/s | CPU µs/msg node A | node B | mariadbd | redis-server | Redis calls/msg | Redis round trips/msg | commands Redis ran/msg | MariaDB statements/msg | p50 µs | p99 µs | msgs/s vs Mosquitto | CPU (all nodes) vs Mosquitto |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
mq = med.get("mosquitto")
for who in ("mosquitto", "hubud-plain", "hubud-cluster1", "hubud-cluster2"):
    v = med.get(who)
    if not v: continue
    cpu = v[1] + v[2]
    rm = f"{v[0]/mq[0]:.2f}x" if mq and who != "mosquitto" else ""
    rc = f"{cpu/mq[1]:.2f}x" if mq and who != "mosquitto" and mq[1] else ""
    b = f"{v[2]:.1f}" if who == "hubud-cluster2" else ""
    x = lambda i: f"{v[i]:.1f}" if who != "mosquitto" else ""
    y = lambda i: f"{v[i]:.3f}" if who != "mosquitto" else ""
    print(f"| {names[who]} | {v[0]:.0f} | {v[1]:.1f} | {b} | {x(3)} | {x(4)} | {y(5)} | {y(6)} | {y(7)} | {y(8)} | {v[9]:.0f} | {v[10]:.0f} | {rm} | {rc} |")
PY
