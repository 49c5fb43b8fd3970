#!/usr/bin/env bash
# mariadb_smoke.sh — the private MariaDB server (scripts/mariadb-private.sh)
# as a test sees it. Run by ctest (tests/mariadb.cmake), which sets
# HUBU_MARIADB_ENV, HUBU_MARIADB_DIR and HUBU_MARIADB_SCRIPT.
#
#   tcp_and_socket  the hubu account logs in over 127.0.0.1 and over the
#                   socket, sees the same rows both ways, may create a
#                   database hubu_*, and nothing else; a wrong password is
#                   refused; commits are durable
#   kill9_restart   under a stream of single-row commits and with one
#                   transaction left open, the server is killed with SIGKILL
#                   and restarted: it comes back on the same port and socket,
#                   every acknowledged commit is there, the open transaction's
#                   row is not
set -euo pipefail

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

case_name=${1:-}
: "${HUBU_MARIADB_ENV:?set by ctest}" "${HUBU_MARIADB_DIR:?}" "${HUBU_MARIADB_SCRIPT:?}"
# shellcheck disable=SC1090
. "$HUBU_MARIADB_ENV"
ctl=$HUBU_MARIADB_SCRIPT
srv=$HUBU_MARIADB_DIR

# The password goes by the environment, not the command line (ps shows that).
tcp() {
  MYSQL_PWD=$MARIADB_PASSWORD mariadb --no-defaults --protocol=tcp -h127.0.0.1 -P"$MARIADB_PORT" \
    -u"$MARIADB_USER" --default-character-set=utf8mb4 --connect-timeout=5 --batch --skip-column-names "$@"
}
sock() {
  MYSQL_PWD=$MARIADB_PASSWORD mariadb --no-defaults --protocol=socket --socket="$MARIADB_SOCKET" \
    -u"$MARIADB_USER" --default-character-set=utf8mb4 --connect-timeout=5 --batch --skip-column-names "$@"
}
expect() { # expect WHAT GOT WANT
  [ "$2" = "$3" ] || fail "$1: got '$2', want '$3'"
}

tcp_and_socket() {
  expect "tcp login" "$(tcp "$MARIADB_DATABASE" -e 'SELECT DATABASE(), CURRENT_USER()')" \
    "hubu	hubu@127.0.0.1"
  expect "socket login" "$(sock "$MARIADB_DATABASE" -e 'SELECT DATABASE(), CURRENT_USER()')" \
    "hubu	hubu@localhost"
  expect "second database" "$(tcp hubu2 -e 'SELECT DATABASE()')" hubu2

  tcp -e 'DROP DATABASE IF EXISTS hubu_smoke; CREATE DATABASE hubu_smoke;
          CREATE TABLE hubu_smoke.t (x INT PRIMARY KEY) ENGINE=InnoDB;
          INSERT INTO hubu_smoke.t VALUES (1), (2), (3)'
  expect "select over tcp" "$(tcp hubu_smoke -e 'SELECT SUM(x) FROM t')" 6
  sock hubu_smoke -e 'INSERT INTO t VALUES (4)'
  expect "socket insert seen over tcp" "$(tcp hubu_smoke -e 'SELECT COUNT(*), SUM(x) FROM t')" "4	10"
  expect "utf8mb4" "$(tcp hubu_smoke -e "SELECT @@character_set_database, CHAR_LENGTH('😀')")" "utf8mb4	1"
  tcp -e 'DROP DATABASE hubu_smoke'

  if tcp -e 'CREATE DATABASE other_smoke' 2>/dev/null; then
    fail "the hubu account created a database not named hubu*"
  fi
  if MYSQL_PWD=wrong-$MARIADB_PASSWORD mariadb --no-defaults --protocol=tcp -h127.0.0.1 \
    -P"$MARIADB_PORT" -uhubu -e 'SELECT 1' 2>/dev/null; then
    fail "a wrong password was accepted"
  fi

  expect "server settings" "$("$ctl" sql "$srv" \
    'SELECT @@bind_address, @@port, @@innodb_flush_log_at_trx_commit, @@log_bin')" \
    "127.0.0.1	$MARIADB_PORT	1	0"
  expect "pid" "$(cat "$srv/mariadbd.pid")" "$MARIADB_PID"
  echo "ok: tcp and socket on port $MARIADB_PORT"
}

cleanup() {
  local p
  for p in $loader $client; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}

kill9_restart() {
  local fifo port0 sock0 pid0 acked last rows tenths alive
  # work, loader and client are global: the EXIT trap runs after this returns.
  work=$(mktemp -d)
  loader="" client=""
  trap cleanup EXIT
  port0=$MARIADB_PORT sock0=$MARIADB_SOCKET pid0=$MARIADB_PID

  tcp hubu -e 'CREATE TABLE acks (i INT PRIMARY KEY) ENGINE=InnoDB'

  # A transaction left open: a client reading statements from a fifo.
  fifo=$work/fifo
  mkfifo "$fifo"
  tcp hubu <"$fifo" >"$work/client.out" 2>&1 &
  client=$!
  exec 3>"$fifo"
  echo 'BEGIN; INSERT INTO acks VALUES (-1);' >&3
  tenths=300
  until [ "$("$ctl" sql "$srv" 'SELECT COUNT(*) FROM information_schema.innodb_trx WHERE trx_rows_modified > 0')" = 1 ]; do
    tenths=$((tenths - 1))
    [ "$tenths" -gt 0 ] || fail "the open transaction did not show in innodb_trx"
    sleep 0.1
  done

  # The load: one autocommitted row per client; a row is acknowledged when
  # its client exits 0. It stops at the first failure (the server is gone).
  : >"$work/acked"
  (
    i=1
    while tcp hubu -e "INSERT INTO acks VALUES ($i)" 2>/dev/null; do
      echo "$i" >>"$work/acked"
      i=$((i + 1))
    done
  ) &
  loader=$!
  tenths=600
  while [ "$(wc -l <"$work/acked")" -lt 50 ]; do
    tenths=$((tenths - 1))
    [ "$tenths" -gt 0 ] || fail "the load did not reach 50 commits in 60 s"
    sleep 0.1
  done

  "$ctl" kill9 "$srv"
  alive=$(ps -o stat= -p "$pid0" 2>/dev/null || true)
  case $alive in "" | Z*) ;; *) fail "mariadbd $pid0 still running after kill9 ($alive)" ;; esac
  wait "$loader" || true
  loader=""
  exec 3>&-
  wait "$client" || true
  client=""
  acked=$(wc -l <"$work/acked")
  last=$(tail -n 1 "$work/acked")
  expect "acknowledged rows are 1..n" "$last" "$acked"

  "$ctl" restart "$srv" >/dev/null
  # shellcheck disable=SC1090
  . "$HUBU_MARIADB_ENV"
  expect "port after restart" "$MARIADB_PORT" "$port0"
  expect "socket after restart" "$MARIADB_SOCKET" "$sock0"
  [ "$MARIADB_PID" != "$pid0" ] || fail "MARIADB_PID unchanged after restart"
  expect "pid file after restart" "$(cat "$srv/mariadbd.pid")" "$MARIADB_PID"

  expect "acknowledged rows after restart" \
    "$(tcp hubu -e "SELECT COUNT(*) FROM acks WHERE i BETWEEN 1 AND $acked")" "$acked"
  # At most one more: a commit the kill cut off before its client heard of it.
  rows=$(tcp hubu -e 'SELECT COUNT(*) FROM acks WHERE i > 0')
  [ "$rows" -le $((acked + 1)) ] || fail "$rows rows after restart, only $acked acknowledged"
  expect "the open transaction's row" "$(tcp hubu -e 'SELECT COUNT(*) FROM acks WHERE i = -1')" 0
  expect "socket after restart" "$(sock hubu -e 'SELECT COUNT(*) FROM acks WHERE i BETWEEN 1 AND 3')" 3
  tcp hubu -e 'INSERT INTO acks VALUES (1000000)'
  echo "ok: $acked acknowledged commits ($rows rows) kept through kill -9 and restart on port $MARIADB_PORT"
}

case $case_name in
  tcp_and_socket | kill9_restart) "$case_name" ;;
  *)
    echo "usage: $0 tcp_and_socket|kill9_restart" >&2
    exit 2
    ;;
esac
