#!/usr/bin/env bash
# cluster-local.sh — a three-node hubud cluster on this machine, for trying
# cluster mode (docs/cluster.md, "Quick start"): a private mariadbd and
# redis-server (scripts/mariadb-private.sh, scripts/redis-private.sh) and
# three hubud nodes, all in DIR, on loopback, as the current user.
#
#   scripts/cluster-local.sh start DIR [BUILD]   BUILD: where hubud is (default build)
#   scripts/cluster-local.sh stop DIR            SIGTERM to the nodes, then the servers; removes DIR
#
# Node N (1-3) listens on 127.0.0.1:77N0 (TCP), 77N1 (admin) and 77N2 (HTTP,
# WebSocket and the chat page), keeps its data in DIR/nodeN and logs to
# DIR/nodeN.log; the shipped plugins run on every node; --dev-login is on,
# so the page's sign-in works without a token. DIR/env has the addresses.
set -euo pipefail
cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { sed -n '2,14p' "$0" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)

case $cmd in
  start)
    build=$(cd "${3:-$root/build}" && pwd)
    [ -x "$build/hubud" ] || { echo "no hubud in $build (make build first)" >&2; exit 1; }
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    "$root/scripts/mariadb-private.sh" start "$dir/mariadb" >/dev/null
    "$root/scripts/redis-private.sh" start "$dir/redis" >/dev/null
    # shellcheck disable=SC1091
    . "$dir/mariadb/env"
    # shellcheck disable=SC1091
    . "$dir/redis/env"
    "$root/scripts/mariadb-private.sh" sql "$dir/mariadb" "CREATE DATABASE IF NOT EXISTS hubu" >/dev/null
    store="mariadb://$MARIADB_USER@127.0.0.1:$MARIADB_PORT/hubu"
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/secret"
    {
      echo "STORE=$store"
      echo "REDIS=$REDIS_URL"
    } >"$dir/env"
    for n in 1 2 3; do
      mkdir -p "$dir/node$n"
      HUBU_STORE_PASSWORD=$MARIADB_PASSWORD "$build/hubud" --store "$store" --cluster "$REDIS_URL" --node-id "$n" \
        --listen "127.0.0.1:77${n}0" --admin-listen "127.0.0.1:77${n}1" --http-listen "127.0.0.1:77${n}2" \
        --data "$dir/node$n" --secret "@$dir/secret" --plugins "$root/plugins" --dev-login on \
        >"$dir/node$n.log" 2>&1 &
      echo "$!" >"$dir/node$n.pid"
      echo "NODE$n=tcp 127.0.0.1:77${n}0 admin 127.0.0.1:77${n}1 http 127.0.0.1:77${n}2 pid $!" >>"$dir/env"
    done
    for n in 1 2 3; do
      for _ in $(seq 100); do
        curl -fsS "http://127.0.0.1:77${n}1/healthz" >/dev/null 2>&1 && break
        sleep 0.1
      done
      echo "node $n: $(curl -sS "http://127.0.0.1:77${n}1/healthz" 2>&1)"
    done
    cat "$dir/env"
    ;;
  stop)
    for n in 1 2 3; do
      [ -f "$dir/node$n.pid" ] || continue
      pid=$(cat "$dir/node$n.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    done
    "$root/scripts/redis-private.sh" stop "$dir/redis" >/dev/null 2>&1 || true
    "$root/scripts/mariadb-private.sh" stop "$dir/mariadb" >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
  *) sed -n '2,14p' "$0" >&2; exit 2 ;;
esac
