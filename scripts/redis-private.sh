#!/usr/bin/env bash
# redis-private.sh — a private redis-server for tests and development.
#
# The server lives entirely in DIR: its pid file, log and (when asked for)
# its append-only file. It listens on 127.0.0.1 only, on a free port picked
# at start, runs as the current user, reads no configuration file, and keeps
# nothing on disk unless REDIS_APPENDONLY=yes: `restart` then brings back an
# empty server, as a crash of a cache without persistence does. Nothing
# system-wide is used or changed, so several can run at once in different
# DIRs.
#
#   scripts/redis-private.sh start DIR    new server in DIR (an old one there is stopped and wiped)
#   scripts/redis-private.sh stop DIR     TERM (KILL after 10 s), then remove DIR (kept if KEEP=1)
#   scripts/redis-private.sh kill9 DIR    SIGKILL, as a crash; DIR is kept
#   scripts/redis-private.sh restart DIR  start again on the same port (empty, unless append-only)
#   scripts/redis-private.sh pause DIR    SIGSTOP: the server holds its connections but answers nothing
#   scripts/redis-private.sh resume DIR   SIGCONT
#   scripts/redis-private.sh cli DIR [ARGS...]   redis-cli against it (ARGS as redis-cli takes them)
#
# `start` and `restart` write DIR/env last (it exists once the server
# answers PING), one KEY=VALUE a line: REDIS_DIR, REDIS_PORT, REDIS_PID and
# REDIS_URL (redis://127.0.0.1:PORT), and print its path.
#
# Settings: --save '' (no snapshots), --appendonly no (REDIS_APPENDONLY=yes:
# append-only file in DIR, fsync on every write), protected mode on, no Unix
# socket, databases 16 as usual.
#
# In ctest (tests/redis.cmake) the fixture starts one in <build>/redis;
# `cd <build> && ctest -L redis` runs the tests that use it. By hand:
#
#   scripts/redis-private.sh start /tmp/hubu-redis && . /tmp/hubu-redis/env
#   scripts/redis-private.sh cli /tmp/hubu-redis INFO replication
#   scripts/redis-private.sh stop /tmp/hubu-redis
#
# Environment: HUBU_REDIS_START_TIMEOUT (seconds to wait for PING, default
# 30), KEEP=1 (stop leaves DIR in place), REDIS_SERVER, REDIS_CLI (programs
# to use), REDIS_APPENDONLY=yes.
set -euo pipefail
umask 077

prog=redis-private
marker=.hubu-redis-private

. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/private-server.sh" # die, find_server, alive, wait_gone, stop_server, free_port

usage() {
  echo "usage: $0 start|stop|kill9|restart|pause|resume DIR | $0 cli DIR [ARGS...]" >&2
  exit 2
}

if [ $# -lt 2 ] || [ -z "$2" ]; then usage; fi
cmd=$1
dir=$2
shift 2
start_timeout=${HUBU_REDIS_START_TIMEOUT:-30}

find_prog() { # OVERRIDE NAME
  find_server "$1" "$2" "/usr/bin /usr/sbin /usr/local/bin" \
    "Debian: apt-get install redis-server; scripts/install-deps.sh installs it"
}

# Only a redis-server started for DIR is ever signalled: a pid file left by a
# crash may name a pid the system has since given to another process.
ours() {
  local pid=$1
  alive "$pid" || return 1
  [ -e "/proc/$pid/cwd" ] || return 0
  # redis-server rewrites its command line, but works in --dir.
  [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$dir/data" ]
}

server_pid() {
  local pid=""
  [ -r "$dir/pid" ] && pid=$(tr -dc 0-9 <"$dir/pid")
  echo "$pid"
}

terminate() {
  local pid
  pid=$(server_pid)
  if ours "$pid"; then stop_server "$pid" redis-server 10; fi
  rm -f "$dir/pid"
}

# Runs redis-server on port $1 in its own session; waits until it answers
# PING. Returns 0 when up, 3 when the port was taken, 1 otherwise.
launch() {
  local port=$1 pid tenths loglines=0
  local aof=no
  [ "${REDIS_APPENDONLY:-no}" = yes ] && aof=yes
  local args=(--port "$port" --bind 127.0.0.1 --protected-mode yes --unixsocket ''
    --daemonize no --save '' --appendonly "$aof" --appendfsync always
    --logfile "$dir/redis.log" --loglevel notice --dir "$dir/data")
  [ -e "$dir/redis.log" ] && loglines=$(wc -l <"$dir/redis.log")
  rm -f "$dir/pid"
  setsid "$server_bin" "${args[@]}" </dev/null >>"$dir/redis.out" 2>&1 &
  pid=$!
  echo "$pid" >"$dir/pid"
  tenths=$((start_timeout * 10))
  while :; do
    if ! alive "$pid"; then
      if tail -n +"$((loglines + 1))" "$dir/redis.log" 2>/dev/null | grep -q "Address already in use"; then
        return 3
      fi
      echo "$prog: redis-server exited during start; $dir/redis.log:" >&2
      tail -n +"$((loglines + 1))" "$dir/redis.log" 2>/dev/null | tail -n 20 >&2 || true
      return 1
    fi
    if [ "$("$cli" -h 127.0.0.1 -p "$port" PING 2>/dev/null || true)" = PONG ]; then
      break
    fi
    if [ "$tenths" -le 0 ]; then
      echo "$prog: redis-server $pid did not answer within ${start_timeout} s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
      return 1
    fi
    tenths=$((tenths - 1))
    sleep 0.05
  done
  server=$pid
  port_used=$port
}

write_env() {
  {
    echo "REDIS_DIR=$dir"
    echo "REDIS_PORT=$port_used"
    echo "REDIS_PID=$server"
    echo "REDIS_URL=redis://127.0.0.1:$port_used"
  } >"$dir/env.tmp"
  mv -f "$dir/env.tmp" "$dir/env"
}

need_ours() {
  [ -e "$dir/$marker" ] || die "$dir is not a directory made by $0 start"
}

env_port() {
  [ -r "$dir/env" ] || die "$dir/env missing; use start"
  sed -n 's/^REDIS_PORT=//p' "$dir/env"
}

case $cmd in
  start | restart | kill9 | stop | pause | resume | cli) ;;
  *) usage ;;
esac

if [ "$cmd" = start ]; then
  mkdir -p "$dir"
elif [ "$cmd" = stop ] && [ ! -e "$dir" ]; then
  exit 0
fi
[ -d "$dir" ] || die "$dir: no such directory"
dir=$(cd "$dir" && pwd)
case $dir in
  *[[:space:]]*) die "$dir: a path with white space is not supported" ;;
esac

case $cmd in
  start)
    server_bin=$(find_prog "${REDIS_SERVER:-}" redis-server)
    cli=$(find_prog "${REDIS_CLI:-}" redis-cli)
    command -v python3 >/dev/null || die "python3 not found"
    if [ -e "$dir/$marker" ]; then
      terminate
      find "$dir" -mindepth 1 -delete
    elif [ -n "$(ls -A "$dir")" ]; then
      die "$dir is not empty and was not made by $0; refusing to use it"
    fi
    chmod 700 "$dir"
    : >"$dir/$marker"
    mkdir "$dir/data"
    trap terminate EXIT
    # The port is free when picked but not reserved: a start that finds it
    # taken is retried on a new one.
    rc=1
    for attempt in 1 2 3 4 5 6 7 8; do
      port=$(free_port)
      rc=0
      launch "$port" || rc=$?
      [ "$rc" -eq 3 ] || break
      echo "$prog: port $port was taken (attempt $attempt), picking another" >&2
    done
    [ "$rc" -eq 0 ] || die "could not start redis-server in $dir"
    write_env
    trap - EXIT
    echo "$dir/env"
    ;;

  restart)
    need_ours
    server_bin=$(find_prog "${REDIS_SERVER:-}" redis-server)
    cli=$(find_prog "${REDIS_CLI:-}" redis-cli)
    port=$(env_port)
    [ -n "$port" ] || die "no REDIS_PORT in $dir/env"
    terminate
    rc=1
    for attempt in $(seq 1 40); do
      rc=0
      launch "$port" || rc=$?
      [ "$rc" -eq 3 ] || break
      echo "$prog: port $port is in use (attempt $attempt), retrying" >&2
      sleep 0.25
    done
    [ "$rc" -eq 0 ] || die "could not restart redis-server in $dir on port $port"
    write_env
    echo "$dir/env"
    ;;

  kill9 | pause | resume)
    need_ours
    pid=$(server_pid)
    if ! ours "$pid"; then
      echo "$prog: no running redis-server in $dir" >&2
      exit 1
    fi
    case $cmd in
      kill9)
        kill -KILL "$pid"
        wait_gone "$pid" 10 || die "redis-server $pid survived SIGKILL"
        rm -f "$dir/pid"
        ;;
      pause) kill -STOP "$pid" ;;
      resume) kill -CONT "$pid" ;;
    esac
    ;;

  stop)
    if [ ! -e "$dir/$marker" ]; then
      [ -z "$(ls -A "$dir")" ] && rmdir "$dir"
      exit 0
    fi
    terminate
    if [ -n "${KEEP:-}" ] && [ "${KEEP}" != 0 ]; then
      echo "$prog: kept $dir"
    else
      rm -rf "$dir"
    fi
    ;;

  cli)
    need_ours
    cli=$(find_prog "${REDIS_CLI:-}" redis-cli)
    exec "$cli" -h 127.0.0.1 -p "$(env_port)" "$@"
    ;;
esac
