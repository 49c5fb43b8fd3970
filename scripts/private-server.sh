# private-server.sh — what the private test servers' scripts share
# (mariadb-private.sh, redis-private.sh): sourced, never run. The caller sets
# $prog (its name, for messages) before sourcing.

die() {
  echo "$prog: $*" >&2
  exit 1
}

# The program: $1 when given (an override), else the first of NAMES on PATH
# or in DIRS (server binaries live in sbin, which a user's PATH may lack).
#   find_server OVERRIDE "NAME..." "DIR..." HINT
find_server() {
  local override=$1 names=$2 dirs=$3 hint=$4 name d
  if [ -n "$override" ]; then
    echo "$override"
    return
  fi
  for name in $names; do
    if command -v "$name" >/dev/null 2>&1; then
      command -v "$name"
      return
    fi
    for d in $dirs; do
      if [ -x "$d/$name" ]; then
        echo "$d/$name"
        return
      fi
    done
  done
  die "${names%% *} not found ($hint)"
}

# A process counts as alive until it is gone or a zombie: a server killed
# here is reparented to init, which may take a while to reap it.
alive() {
  local pid=$1 stat
  [ -n "$pid" ] || return 1
  if [ -r "/proc/$pid/stat" ]; then
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
  else
    kill -0 "$pid" 2>/dev/null
  fi
}

# Waits up to $2 seconds (tenths counted) for pid $1 to end.
wait_gone() {
  local pid=$1 tenths=$(($2 * 10))
  while alive "$pid"; do
    [ "$tenths" -gt 0 ] || return 1
    tenths=$((tenths - 1))
    sleep 0.1
  done
}

# Ends server PID (the caller checked it is ours): CONT (a paused server
# cannot act on TERM), TERM, up to TERM_S seconds, then KILL.
#   stop_server PID LABEL TERM_S
stop_server() {
  local pid=$1 label=$2 term_s=$3
  kill -CONT "$pid" 2>/dev/null || true
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_gone "$pid" "$term_s"; then
    echo "$prog: $label $pid still running $term_s s after TERM, killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || die "$label $pid survived SIGKILL"
  fi
}

# A port free on 127.0.0.1 now.
free_port() {
  python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}
