#!/usr/bin/env bash
# mariadb-private.sh — a private MariaDB server for tests and development.
#
# The server lives entirely in DIR: its data directory, Unix socket, pid file
# and error log. It listens on 127.0.0.1 only, on a free port picked at start,
# runs as the current user (as root too: it is then given --user=root), and
# reads no option file (--no-defaults). Nothing system-wide is used or changed,
# so several can run at once in different DIRs.
#
#   scripts/mariadb-private.sh start DIR    new server in DIR (an old one there is stopped and wiped)
#   scripts/mariadb-private.sh stop DIR     TERM (KILL after 30 s), then remove DIR (kept if KEEP=1)
#   scripts/mariadb-private.sh kill9 DIR    SIGKILL, as a crash; DIR is kept
#   scripts/mariadb-private.sh restart DIR  start again on the same data, port and socket
#   scripts/mariadb-private.sh sql DIR 'STATEMENT'   as the admin account over the socket;
#                                           tab-separated rows without a header; with no
#                                           STATEMENT, SQL is read from stdin
#
# `start` creates the databases `hubu` and `hubu2` and the account `hubu`
# (@'127.0.0.1' over TCP, @'localhost' over the socket) with a generated
# password and every privilege on the databases whose name starts with
# "hubu", so a test can make its own (CREATE DATABASE hubu_mytest). It writes
#
#   DIR/password   the password, mode 600
#   DIR/env        shell assignments, written last (it exists once the server
#                  answers): MARIADB_DIR, MARIADB_PORT, MARIADB_SOCKET,
#                  MARIADB_PID, MARIADB_USER, MARIADB_PASSWORD,
#                  MARIADB_DATABASE, MARIADB_URL (mariadb://hubu:PASS@127.0.0.1:PORT/hubu)
#                  and MARIADB_SOCKET_URL
#                  (mariadb:///hubu?socket=PATH&user=hubu&password_file=DIR/password);
#                  one KEY=VALUE a line, the value in single quotes when it
#                  holds characters other than A-Za-z0-9_./:@?=%+,- (the
#                  socket URL does: '&')
#
# and prints the path of DIR/env. The admin account is the MariaDB account
# named like the current user, authenticated by unix_socket (only this OS user
# gets in, only over the socket); that is what `sql` uses.
#
# Settings: durable commits (innodb_flush_log_at_trx_commit=1), a 64 MiB
# buffer pool and 16 MiB redo log so start and crash recovery take well under
# a second, no binary log, utf8mb4 as the server's character set, and
# innodb_use_native_aio=0 (Linux AIO contexts are a system-wide budget,
# fs.aio-max-nr, that parallel servers and some containers run out of).
#
# In ctest (tests/mariadb.cmake) the fixture starts one in <build>/mariadb;
# `cd <build> && ctest -L mariadb` runs the tests that use it. By hand:
#
#   scripts/mariadb-private.sh start /tmp/hubu-mdb && . /tmp/hubu-mdb/env
#   mariadb --no-defaults -h127.0.0.1 -P"$MARIADB_PORT" -uhubu -p"$MARIADB_PASSWORD" hubu
#   scripts/mariadb-private.sh sql /tmp/hubu-mdb 'SHOW DATABASES'
#   scripts/mariadb-private.sh stop /tmp/hubu-mdb
#
# `KEEP=1 ctest -L mariadb` leaves the servers' directories, error logs
# (DIR/mariadbd.err) included, for a look after a failure.
#
# Environment: HUBU_MARIADB_START_TIMEOUT (seconds to wait for the server to
# answer, default 60), KEEP=1 (stop leaves DIR in place), MARIADBD,
# MARIADB_INSTALL_DB, MARIADB_CLIENT, MARIADB_ADMIN (programs to use).
set -euo pipefail
umask 077 # DIR/password and DIR/env (which holds it too) are private

prog=mariadb-private
marker=.hubu-mariadb-private

. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/private-server.sh" # die, find_server, alive, wait_gone, stop_server, free_port

usage() {
  echo "usage: $0 start|stop|kill9|restart DIR | $0 sql DIR [STATEMENT]" >&2
  exit 2
}

if [ $# -lt 2 ] || [ -z "$2" ]; then usage; fi
cmd=$1
dir=$2
shift 2

me=$(id -un)
uid=$(id -u)
start_timeout=${HUBU_MARIADB_START_TIMEOUT:-60}

# mariadbd is in /usr/sbin, which a normal user's PATH may lack.
find_prog() { # OVERRIDE NAME...
  local override=$1
  shift
  find_server "$override" "$*" "/usr/sbin /usr/local/sbin /usr/libexec /usr/local/bin" \
    "Debian: apt-get install mariadb-server; scripts/install-deps.sh installs it"
}

# Only a mariadbd whose data directory is DIR/data is ever signalled: a pid
# file left by a crash may name a pid the system has since given to another
# process.
ours() {
  local pid=$1
  alive "$pid" || return 1
  [ -r "/proc/$pid/cmdline" ] || return 0
  tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "--datadir=$dir/data"
}

server_pid() {
  local pid=""
  [ -r "$dir/mariadbd.pid" ] && pid=$(tr -dc 0-9 <"$dir/mariadbd.pid")
  if [ -z "$pid" ] && [ -r "$dir/env" ]; then
    pid=$(sed -n 's/^MARIADB_PID=//p' "$dir/env")
  fi
  echo "$pid"
}

terminate() {
  local pid
  pid=$(server_pid)
  if ours "$pid"; then stop_server "$pid" mariadbd 30; fi
  rm -f "$dir/mariadbd.pid"
}

# Runs mariadbd on port $1 in its own session (a terminal's ^C or the end of
# the ctest step that started it does not reach it); waits until it answers
# on the socket. Returns 0 when up, 3 when the port was taken, 1 otherwise.
launch() {
  local port=$1 pid errlines tenths
  local args=(--no-defaults
    --datadir="$dir/data" --tmpdir="$dir/tmp"
    --socket="$socket" --port="$port" --bind-address=127.0.0.1
    --pid-file="$dir/mariadbd.pid" --log-error="$dir/mariadbd.err"
    --skip-name-resolve --skip-log-bin
    --innodb-flush-log-at-trx-commit=1
    --innodb-buffer-pool-size=64M --innodb-log-file-size=16M
    --innodb-buffer-pool-load-at-startup=0 --innodb-buffer-pool-dump-at-shutdown=0
    --innodb-use-native-aio=0
    --character-set-server=utf8mb4)
  [ "$uid" -ne 0 ] || args+=(--user=root)
  rm -f "$socket" "$socket.lock" "$dir/mariadbd.pid"
  errlines=0
  [ -e "$dir/mariadbd.err" ] && errlines=$(wc -l <"$dir/mariadbd.err")
  setsid "$mariadbd" "${args[@]}" </dev/null >>"$dir/mariadbd.out" 2>&1 &
  pid=$!
  tenths=$((start_timeout * 10))
  while :; do
    if ! alive "$pid"; then
      if tail -n +"$((errlines + 1))" "$dir/mariadbd.err" 2>/dev/null | grep -q "Address already in use"; then
        return 3
      fi
      echo "$prog: mariadbd exited during start; $dir/mariadbd.err:" >&2
      tail -n +"$((errlines + 1))" "$dir/mariadbd.err" 2>/dev/null | tail -n 30 >&2 || true
      return 1
    fi
    if "$admin" --no-defaults --protocol=socket --socket="$socket" --user="$me" \
      --connect-timeout=2 ping >/dev/null 2>&1; then
      break
    fi
    if [ "$tenths" -le 0 ]; then
      echo "$prog: mariadbd $pid did not answer within ${start_timeout} s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
      tail -n 30 "$dir/mariadbd.err" >&2 2>/dev/null || true
      return 1
    fi
    tenths=$((tenths - 1))
    sleep 0.1
  done
  # The pid is the server's own (setsid execs it, not being a group leader
  # here); its pid file says so too.
  server=$pid
  port_used=$port
}

# A value as the shell reads it back: bare, or in single quotes when it holds
# anything beyond these characters.
q() {
  case $1 in
    *[!A-Za-z0-9_./:@?=%+,-]*) printf "'%s'" "${1//\'/\'\\\'\'}" ;;
    *) printf '%s' "$1" ;;
  esac
}

write_env() {
  local password
  password=$(cat "$dir/password")
  {
    echo "MARIADB_DIR=$(q "$dir")"
    echo "MARIADB_PORT=$port_used"
    echo "MARIADB_SOCKET=$(q "$socket")"
    echo "MARIADB_PID=$server"
    echo "MARIADB_USER=hubu"
    echo "MARIADB_PASSWORD=$password"
    echo "MARIADB_DATABASE=hubu"
    echo "MARIADB_URL=$(q "mariadb://hubu:$password@127.0.0.1:$port_used/hubu")"
    echo "MARIADB_SOCKET_URL=$(q "mariadb:///hubu?socket=$socket&user=hubu&password_file=$dir/password")"
  } >"$dir/env.tmp"
  mv -f "$dir/env.tmp" "$dir/env"
}

# The socket's path must fit sun_path (108 bytes); a deep DIR gets its socket
# in a private directory under $TMPDIR, named in DIR/socketdir.
choose_socket() {
  if [ -r "$dir/socketdir" ]; then
    socket=$(cat "$dir/socketdir")/mysqld.sock
  elif [ "${#dir}" -le 90 ]; then
    socket=$dir/mysqld.sock
  else
    local sd
    sd=$(mktemp -d "${TMPDIR:-/tmp}/hubu-mdb.XXXXXX")
    echo "$sd" >"$dir/socketdir"
    socket=$sd/mysqld.sock
  fi
}

remove_dir() {
  if [ -r "$dir/socketdir" ]; then
    rm -rf "$(cat "$dir/socketdir")"
  fi
  rm -rf "$dir"
}

need_ours() {
  [ -e "$dir/$marker" ] || die "$dir is not a directory made by $0 start"
}

case $cmd in
  start | restart | kill9 | stop | sql) ;;
  *) usage ;;
esac

if [ "$cmd" = start ]; then
  mkdir -p "$dir"
elif [ "$cmd" = stop ] && [ ! -e "$dir" ]; then
  exit 0 # already stopped, or never started
fi
[ -d "$dir" ] || die "$dir: no such directory"
dir=$(cd "$dir" && pwd)

case $cmd in
  start)
    mariadbd=$(find_prog "${MARIADBD:-}" mariadbd mysqld)
    installdb=$(find_prog "${MARIADB_INSTALL_DB:-}" mariadb-install-db mysql_install_db)
    admin=$(find_prog "${MARIADB_ADMIN:-}" mariadb-admin mysqladmin)
    client=$(find_prog "${MARIADB_CLIENT:-}" mariadb mysql)
    command -v python3 >/dev/null || die "python3 not found"
    # A server left by an interrupted run is stopped and its files wiped;
    # a directory with anything else in it is refused.
    if [ -e "$dir/$marker" ]; then
      terminate
      if [ -r "$dir/socketdir" ]; then rm -rf "$(cat "$dir/socketdir")"; fi
      find "$dir" -mindepth 1 -delete
    elif [ -n "$(ls -A "$dir")" ]; then
      die "$dir is not empty and was not made by $0; refusing to use it"
    fi
    chmod 700 "$dir"
    : >"$dir/$marker"
    mkdir "$dir/tmp"
    choose_socket
    od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$dir/password"
    password=$(cat "$dir/password")
    install_args=(--no-defaults --datadir="$dir/data" --tmpdir="$dir/tmp"
      --auth-root-authentication-method=socket --auth-root-socket-user="$me"
      --skip-test-db --skip-name-resolve
      --innodb-buffer-pool-size=64M --innodb-log-file-size=16M --innodb-use-native-aio=0
      --skip-log-bin)
    [ "$uid" -ne 0 ] || install_args+=(--user=root)
    if ! "$installdb" "${install_args[@]}" >"$dir/install.log" 2>&1; then
      tail -n 30 "$dir/install.log" >&2
      die "mariadb-install-db failed; see $dir/install.log"
    fi
    # A start that fails half-way leaves no server behind.
    trap terminate EXIT
    # The port is free when picked but not reserved: another process may
    # take it before mariadbd binds it, so a start that finds it taken is
    # retried on a new one.
    rc=1
    for attempt in 1 2 3 4 5 6 7 8; do
      port=$(free_port)
      rc=0
      launch "$port" || rc=$?
      [ "$rc" -eq 3 ] || break
      echo "$prog: port $port was taken (attempt $attempt), picking another" >&2
    done
    [ "$rc" -eq 0 ] || die "could not start mariadbd in $dir"
    # The accounts are made over the socket now: mariadb-install-db
    # --extra-file could make them, but costs a second more.
    "$client" --no-defaults --protocol=socket --socket="$socket" --user="$me" <<SQL ||
CREATE DATABASE hubu CHARACTER SET utf8mb4;
CREATE DATABASE hubu2 CHARACTER SET utf8mb4;
CREATE USER 'hubu'@'127.0.0.1' IDENTIFIED BY '$password';
CREATE USER 'hubu'@'localhost' IDENTIFIED BY '$password';
GRANT ALL PRIVILEGES ON \`hubu%\`.* TO 'hubu'@'127.0.0.1';
GRANT ALL PRIVILEGES ON \`hubu%\`.* TO 'hubu'@'localhost';
SQL
      die "could not create the hubu account"
    MYSQL_PWD=$password "$client" --no-defaults --protocol=tcp -h127.0.0.1 -P"$port_used" -uhubu hubu \
      -e 'SELECT 1' >/dev/null || die "the hubu account cannot log in over TCP"
    write_env
    trap - EXIT
    echo "$dir/env"
    ;;

  restart)
    need_ours
    [ -r "$dir/env" ] || die "$dir/env missing; use start"
    mariadbd=$(find_prog "${MARIADBD:-}" mariadbd mysqld)
    admin=$(find_prog "${MARIADB_ADMIN:-}" mariadb-admin mysqladmin)
    terminate
    choose_socket
    port=$(sed -n 's/^MARIADB_PORT=//p' "$dir/env")
    [ -n "$port" ] || die "no MARIADB_PORT in $dir/env"
    # Same port: another process may hold it for a moment, so retry for a while.
    rc=1
    for attempt in $(seq 1 20); do
      rc=0
      launch "$port" || rc=$?
      [ "$rc" -eq 3 ] || break
      echo "$prog: port $port is in use (attempt $attempt), retrying" >&2
      sleep 0.5
    done
    [ "$rc" -eq 0 ] || die "could not restart mariadbd in $dir on port $port"
    write_env
    echo "$dir/env"
    ;;

  kill9)
    need_ours
    pid=$(server_pid)
    if ours "$pid"; then
      kill -KILL "$pid"
      wait_gone "$pid" 10 || die "mariadbd $pid survived SIGKILL"
    else
      echo "$prog: no running mariadbd in $dir" >&2
    fi
    ;;

  stop)
    if [ ! -e "$dir/$marker" ]; then
      # Nothing of ours here (already stopped, or start never got far).
      [ -z "$(ls -A "$dir")" ] && rmdir "$dir"
      exit 0
    fi
    terminate
    if [ -n "${KEEP:-}" ] && [ "${KEEP}" != 0 ]; then
      echo "$prog: kept $dir"
    else
      remove_dir
    fi
    ;;

  sql)
    need_ours
    client=$(find_prog "${MARIADB_CLIENT:-}" mariadb mysql)
    choose_socket
    sql_args=(--no-defaults --protocol=socket --socket="$socket" --user="$me"
      --default-character-set=utf8mb4 --batch --skip-column-names)
    if [ $# -ge 1 ]; then
      exec "$client" "${sql_args[@]}" -e "$1"
    fi
    exec "$client" "${sql_args[@]}"
    ;;
esac
