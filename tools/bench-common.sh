# bench-common.sh — what the bench-*.sh scripts share, sourced once ROOT (the
# checkout) is set: PEERS (../shared/peers when present), a temp dir W, the
# server processes started so far (PIDS, stopped by cleanup), wait_port, and
# Mosquitto's load generator built into W/mqttload when Mosquitto and the
# peers are there (MQ=1). The caller sets its own EXIT trap (cleanup, its
# private servers, rm -rf "$W").
PEERS=$(cd "$ROOT/../shared/peers" 2>/dev/null && pwd)
W=$(mktemp -d)
PIDS=""
cleanup() { for p in $PIDS; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; PIDS=""; }
ulimit -n 20000 2>/dev/null
wait_port() { for _ in $(seq 100); do ss -ltn | grep -q "127.0.0.1:$1 " && return 0; sleep 0.1; done; echo "port $1 not up" >&2; return 1; }
MQ=""
if [ -n "$PEERS" ] && command -v mosquitto >/dev/null; then
  gcc -O2 -w -o "$W/mqttload" "$PEERS/mqttload.c" && MQ=1
fi
