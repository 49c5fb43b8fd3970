#!/usr/bin/env bash
# bench-http.sh [BUILD_DIR] — message.send through a local HTTP service.
#
# For each service latency L (LATENCIES, ms) a fresh hubud runs a plugin whose
# message.send hook POSTs every message to `hubu-bench serve-http` (which
# answers {"action":"allow"} exactly L ms after each request) and lets it
# through on that answer; the same runs without the plugin are the baseline.
# Each hubud gets two runs, both with one more connection that only PINGs
# (--probe-ms): `pairs` (closed loop: msgs/s) and `rate` (an offered rate well
# below saturation: the latency the hook adds, next to L itself). Printed: one
# JSON line per run, then a Markdown table:
#
#   service L | pairs msgs/s | vs none | rate e2e p50 / p99 | added p50 | added - L | probe PING p50 / p99 / max
#
# hubud on CPU 0, the bench and the service on CPU 1 (PIN=0: no pinning).
# Loopback only; every process it starts is stopped by PID, every wait bounded.
# Settings (environment): LATENCIES="0 1 5 20 100" PAIRS=100 WINDOW=8 MESSAGES=100000
# RATE=2000 RATE_SECONDS=10 PROBE_MS=10 PIN=1.
set -u
B=$(cd "${1:-build}" && pwd) || exit 2
LATENCIES=${LATENCIES:-"0 1 5 20 100"}
PAIRS=${PAIRS:-100} WINDOW=${WINDOW:-8} MESSAGES=${MESSAGES:-100000}
RATE=${RATE:-2000} RATE_SECONDS=${RATE_SECONDS:-10} PROBE_MS=${PROBE_MS:-10} PIN=${PIN:-1}
for bin in hubud hubu-bench; do [ -x "$B/$bin" ] || { echo "bench-http: no $B/$bin (build first)" >&2; exit 2; }; done
W=$(mktemp -d /tmp/hubu-bench-http.XXXXXX) || exit 1
PIDS=()
FAILED=0
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cpu() { # cpu N: taskset prefix when pinning
  if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then echo "taskset -c $1"; fi
}

wait_file() { # wait_file PATH PATTERN: up to 10 s
  for _ in $(seq 200); do grep -qs "$2" "$1" && return 0; sleep 0.05; done
  return 1
}

tagged() { # tagged FILE LABEL KEY VALUE: FILE's JSON object with label (and KEY: VALUE, or as "service")
  python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
out = {"label": sys.argv[2], "service": d} if sys.argv[3] == "service_of" else dict({"label": sys.argv[2], sys.argv[3]: sys.argv[4]}, **d)
print(json.dumps(out, separators=(",", ":")))' "$@"
}

stop() { # stop PID: SIGTERM, up to 10 s, then SIGKILL
  kill "$1" 2>/dev/null
  for _ in $(seq 200); do kill -0 "$1" 2>/dev/null || break; sleep 0.05; done
  kill -9 "$1" 2>/dev/null
  wait "$1" 2>/dev/null
}

# The plugin under test: asks the service about every message.
mkdir -p "$W/plugins-http" "$W/plugins-none"
cat >"$W/plugins-http/httpcheck.lua" <<'EOF'
--% summary: asks a local HTTP service about every message (tools/bench-http.sh)
--% deadline: 10000
--% http_concurrency: 1024
local json = require "cjson"
local url = plugin:option_string("url", "")
plugin:hook("message.send", function(ev)
  local status, body = im.http{ method = "POST", url = url, body = ev.body, timeout_ms = 5000,
                                headers = { ["Content-Type"] = "application/octet-stream" } }
  local ok, answer = pcall(json.decode, status == 200 and body or "")
  if not (ok and type(answer) == "table" and answer.action == "allow") then
    ev:reject("REJECTED", "check service: " .. tostring(status or body))
  end
end)
EOF

# run LABEL PLUGINS_DIR LATENCY: one hubud, the service (when LATENCY is not
# "-"), pairs then rate; one JSON line per run on stdout.
run() {
  local label=$1 plugins=$2 latency=$3 D svc_pid="" hubud_pid port url=""
  D=$(mktemp -d -p "$W")
  if [ "$latency" != - ]; then
    $(cpu 1) "$B/hubu-bench" serve-http --port-file "$D/svc.port" --latency-ms "$latency" >"$D/svc.out" 2>&1 &
    svc_pid=$!
    PIDS+=("$svc_pid")
    wait_file "$D/svc.port" '^[0-9]' || { echo "bench-http: the service did not start" >&2; FAILED=1; return 1; }
    url="http://127.0.0.1:$(cat "$D/svc.port")/check"
  fi
  printf 'plugin "httpcheck" { url = "%s" }\n' "$url" >"$D/hubu.lua"
  $(cpu 0) "$B/hubud" --listen 127.0.0.1:0 --admin-listen off --http-listen off --port-file "$D/hubud.port" \
    --data "$D/data" --secret bench-http --plugins "$plugins" --config "$D/hubu.lua" --log-level warn \
    >"$D/hubud.log" 2>&1 &
  hubud_pid=$!
  PIDS+=("$hubud_pid")
  wait_file "$D/hubud.port" '^tcp ' || {
    echo "bench-http: hubud did not start" >&2
    cat "$D/hubud.log" >&2
    FAILED=1
    return 1
  }
  port=$(awk '$1 == "tcp" { print $2 }' "$D/hubud.port")
  local common=(--port "$port" --secret bench-http --server-pid "$hubud_pid" --probe-ms "$PROBE_MS" --json)
  for sc in pairs rate; do
    local args=(--pairs "$PAIRS" --window "$WINDOW" --messages "$MESSAGES")
    [ $sc = rate ] && args=(--pairs "$PAIRS" --rate "$RATE" --seconds "$RATE_SECONDS")
    if ! $(cpu 1) "$B/hubu-bench" $sc "${args[@]}" "${common[@]}" >"$D/$sc.json" 2>"$D/$sc.err"; then
      echo "bench-http: $label $sc failed:" >&2
      cat "$D/$sc.err" >&2
      FAILED=1
    fi
    tagged "$D/$sc.json" "$label" latency_ms "$latency" || FAILED=1
  done
  stop "$hubud_pid"
  if [ -n "$svc_pid" ]; then
    stop "$svc_pid"
    tagged "$D/svc.out" "$label" service_of - 2>/dev/null
  fi
  rm -rf "$D"
}

echo "# bench-http: $(date -u +%FT%TZ) $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg);" \
  "pairs $PAIRS x window $WINDOW, $MESSAGES msgs; rate $RATE/s for ${RATE_SECONDS}s; probe every ${PROBE_MS} ms"
run none "$W/plugins-none" - >>"$W/results.jsonl"
for L in $LATENCIES; do run "http L=${L}ms" "$W/plugins-http" "$L" >>"$W/results.jsonl"; done
cat "$W/results.jsonl"

python3 - "$W/results.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
runs = {}
for r in rows:
    if "scenario" in r:
        runs.setdefault(r["label"], {})[r["scenario"]] = r
def get(label, sc, key):
    v = runs.get(label, {}).get(sc, {}).get(key)
    return v if isinstance(v, (int, float)) else None
none_pairs = get("none", "pairs", "delivered_per_s")
none_p50 = get("none", "rate", "e2e_p50_us")
print()
print("| service latency | pairs msgs/s | vs none | rate e2e p50 / p99 | added p50 | added − L | probe PING p50 / p99 / max (pairs; rate) |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for label in runs:
    lat = runs[label].get("pairs", runs[label].get("rate", {})).get("latency_ms", "-")
    mps = get(label, "pairs", "delivered_per_s")
    p50, p99 = get(label, "rate", "e2e_p50_us"), get(label, "rate", "e2e_p99_us")
    added = p50 - none_p50 if p50 is not None and none_p50 is not None else None
    over = added - float(lat) * 1000 if added is not None and lat not in ("-", None) else None
    probe = lambda sc: "/".join("%.2f" % (get(label, sc, k) / 1000) if get(label, sc, k) is not None else "n/a"
                                for k in ("probe_ping_p50_us", "probe_ping_p99_us", "probe_ping_max_us"))
    fmt = lambda v, f: f % v if v is not None else "n/a"
    print("| %s | %s | %s | %s / %s ms | %s | %s | %s ms; %s ms |" % (
        "none (no plugin)" if label == "none" else "%s ms" % lat,
        fmt(mps, "%.0f"), fmt(mps / none_pairs * 100 if mps and none_pairs else None, "%.0f %%"),
        fmt(p50 / 1000 if p50 else None, "%.2f"), fmt(p99 / 1000 if p99 else None, "%.2f"),
        "—" if label == "none" else fmt(added / 1000 if added is not None else None, "%.2f ms"),
        "—" if label == "none" else fmt(over / 1000 if over is not None else None, "%.2f ms"),
        probe("pairs"), probe("rate")))
EOF
exit $FAILED
