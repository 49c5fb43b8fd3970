#!/bin/bash
# bench-mariadb.sh — hubud on SQLite, hubud on MariaDB and Mosquitto side by
# side in one run, pinned like ../shared/peers/side-by-side.sh: the server (and
# mariadbd with it) on CPU 0, the load generator on CPU 1, runs alternating.
#
#   tools/bench-mariadb.sh BUILD_DIR [--runs N] [--rates "1000 3000 10000"] [--messages M] [--no-pairs]
#
# BUILD_DIR holds hubud and hubu-bench. A private mariadbd is started in a
# temp dir (scripts/mariadb-private.sh: durable, innodb_flush_log_at_trx_commit=1)
# and every MariaDB run gets a fresh database. Mosquitto runs when it and
# ../shared/peers are present. Prints one line per run, then a table of
# medians: msgs/s, hubud CPU µs per message, mariadbd CPU µs per message
# (MariaDB rows), latency, and ratios to the same run's SQLite and Mosquitto.
# Loopback only; stops only the processes it started.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
B=$(cd "${1:?usage: bench-mariadb.sh BUILD_DIR [options]}" && pwd)
shift
RUNS=3
RATES="1000 3000 10000"
MESSAGES=400000
PAIRS=1
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --rates) RATES=$2; shift 2 ;;
    --messages) MESSAGES=$2; shift 2 ;;
    --no-pairs) PAIRS=0; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
. "$HERE/bench-common.sh"
trap 'cleanup; "$ROOT/scripts/mariadb-private.sh" stop "$W/mdb" >/dev/null 2>&1; rm -rf "$W"' EXIT INT TERM

"$ROOT/scripts/mariadb-private.sh" start "$W/mdb" >/dev/null || exit 2
. "$W/mdb/env"
taskset -a -pc 0 "$MARIADB_PID" >/dev/null # every thread of mariadbd on the server's CPU
export HUBU_STORE_PASSWORD=$MARIADB_PASSWORD

# one line: WHO SCENARIO msgs_per_s server_cpu_us_per_msg db_cpu_us_per_msg p50_us p99_us
mq() { # scenario, mqttload args
  [ -n "$MQ" ] || return 0
  local sc=$1; shift
  taskset -c 0 mosquitto -c "$PEERS/mosquitto.conf" >/dev/null 2>&1 & local SP=$!
  PIDS="$PIDS $SP"; wait_port 18830
  local r; r=$(taskset -c 1 "$W/mqttload" -p 18830 -P $SP "$@" | grep ^RESULT)
  echo "mosquitto $sc $(echo "$r" | sed -E 's/.*delivered_per_s=([0-9.]+).*lat_us_p50=([0-9.]+) p99=([0-9.]+) p999=([0-9.]+).*cpu_us_per_msg=([0-9.]+).*/\1 \5 0 \2 \3/')"
  cleanup; sleep 0.3
}
N=0
hb() { # store, scenario, hubu-bench args
  local store=$1 sc=$2; shift 2
  local D; D=$(mktemp -d -p "$W"); mkdir "$D/plugins"
  local args=() dbpid=()
  if [ "$store" = mariadb ]; then
    N=$((N + 1))
    "$ROOT/scripts/mariadb-private.sh" sql "$W/mdb" "CREATE DATABASE hubu_bench$N" >/dev/null
    args=(--store "mariadb://$MARIADB_USER@127.0.0.1:$MARIADB_PORT/hubu_bench$N")
    dbpid=(--db-pid "$MARIADB_PID")
  fi
  taskset -c 0 "$B/hubud" --listen 127.0.0.1:17790 --admin-listen off --http-listen off --data "$D" --secret sbs \
    --plugins "$D/plugins" --log-level warn "${args[@]}" >"$D/log" 2>&1 & local SP=$!
  PIDS="$PIDS $SP"; wait_port 17790
  taskset -c 1 "$B/hubu-bench" "$@" --port 17790 --secret sbs --server-pid $SP "${dbpid[@]}" --json | python3 -c '
import json,sys; d=json.load(sys.stdin)
print(sys.argv[1], sys.argv[2], round(d["delivered_per_s"]), d["server_cpu_us_per_msg"], d.get("db_cpu_us_per_msg", 0),
      round(d["e2e_p50_us"]), round(d["e2e_p99_us"]))' "hubud-$store" "$sc"
  cleanup; rm -rf "$D"
  [ "$store" = mariadb ] && "$ROOT/scripts/mariadb-private.sh" sql "$W/mdb" "DROP DATABASE hubu_bench$N" >/dev/null
  sleep 0.3
}
{
  for r in $(seq "$RUNS"); do
    if [ $PAIRS = 1 ]; then
      mq pairs -n 100 -w 32 -d 10 -W 2
      for s in sqlite mariadb; do hb $s pairs pairs --pairs 100 --window 32 --messages "$MESSAGES"; done
    fi
    for rate in $RATES; do
      mq rate$rate -n 100 -w 64 -r $rate -d 10 -W 2
      for s in sqlite mariadb; do hb $s rate$rate rate --pairs 100 --rate $rate --seconds 10; done
    done
  done
} | tee "$W/lines"
PYTHONPATH="$ROOT/tools" python3 - "$W/lines" <<'PY'
import sys
from bench_medians import medians
med, _ = medians(sys.argv[1], 7, 2)
scen = sorted({k[1] for k in med}, key=lambda s: (s != "pairs", int(s[4:]) if s.startswith("rate") else 0))
print("\n| scenario | server | msgs/s | hubud CPU µs/msg | mariadbd CPU µs/msg | p50 µs | p99 µs | msgs/s vs SQLite | msgs/s vs Mosquitto | p99 vs SQLite | p99 vs Mosquitto |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
order = {"mosquitto": 0, "hubud-sqlite": 1, "hubud-mariadb": 2}
for s in scen:
    mq, sq = med.get(("mosquitto", s)), med.get(("hubud-sqlite", s))
    for (who, sc), v in sorted(med.items(), key=lambda kv: order.get(kv[0][0], 9)):
        if sc != s: continue
        def ratio(base, i, skip):
            return f"{v[i]/base[i]:.2f}x" if base and who not in skip and base[i] else ""
        db = f"{v[2]:.1f}" if who == "hubud-mariadb" else ""
        print(f"| {s} | {who} | {v[0]:.0f} | {v[1]:.1f} | {db} | {v[3]:.0f} | {v[4]:.0f} | "
              f"{ratio(sq, 0, ('hubud-sqlite', 'mosquitto'))} | {ratio(mq, 0, ('mosquitto',))} | "
              f"{ratio(sq, 4, ('hubud-sqlite', 'mosquitto'))} | {ratio(mq, 4, ('mosquitto',))} |")
PY
