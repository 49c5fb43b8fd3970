# mariadb.cmake — the private MariaDB server that MariaDB tests run against.
# Included by tests.cmake.
#
# The fixture ${HUBU_TEST_PREFIX}mariadb: ${HUBU_TEST_PREFIX}mariadb_start
# starts a server with scripts/mariadb-private.sh in <tree>/mariadb (loopback,
# a free port, the current user, nothing system-wide), and
# ${HUBU_TEST_PREFIX}mariadb_stop stops it by its pid and removes the
# directory once every test that needs it has run. Each tree has its own
# server and names (the sanitizer tree's are asan.*), so both trees' tests run
# side by side in one ctest run.
#
#   cd <tree> && ctest -L mariadb
#   KEEP=1 ctest -L mariadb      (leaves the directories and error logs)
#
# hubu_mariadb_test(NAME <name> COMMAND <command> [args...]
#                   [OWN_SERVER] [TIMEOUT <seconds>] [LABELS <label>...])
#
# adds the test ${HUBU_TEST_PREFIX}<name>, labelled mariadb, which ctest runs
# only after the server answers. Its environment:
#
#   HUBU_MARIADB_ENV     <dir>/env: MARIADB_PORT, MARIADB_SOCKET, MARIADB_URL,
#                        MARIADB_SOCKET_URL, MARIADB_USER, MARIADB_PASSWORD, ...
#                        (sh can source it; see scripts/mariadb-private.sh)
#   HUBU_MARIADB_DIR     <dir>, for the script's kill9, restart and sql
#   HUBU_MARIADB_SCRIPT  scripts/mariadb-private.sh
#
# Tests on the shared server run in parallel with one another: each uses a
# database of its own (the account may create any database named hubu*,
# e.g. CREATE DATABASE hubu_<test>). A test that kills, restarts or
# reconfigures the server says OWN_SERVER: it gets a server of its own, in
# <tree>/mariadb-<hash of the name>, started and stopped by the tests
# <name>.server_start and <name>.server_stop.

set(HUBU_MARIADB_SCRIPT ${CMAKE_SOURCE_DIR}/scripts/mariadb-private.sh)

# hubu_mariadb_server(<fixture> <dir>): the setup and cleanup tests of one server.
function(hubu_mariadb_server fixture dir)
  add_test(NAME ${fixture}_start COMMAND ${HUBU_MARIADB_SCRIPT} start ${dir})
  add_test(NAME ${fixture}_stop COMMAND ${HUBU_MARIADB_SCRIPT} stop ${dir})
  set_tests_properties(${fixture}_start PROPERTIES FIXTURES_SETUP ${fixture} LABELS mariadb TIMEOUT 120)
  set_tests_properties(${fixture}_stop PROPERTIES FIXTURES_CLEANUP ${fixture} LABELS mariadb TIMEOUT 60)
endfunction()

hubu_mariadb_server(${HUBU_TEST_PREFIX}mariadb ${CMAKE_BINARY_DIR}/mariadb)

function(hubu_mariadb_test)
  cmake_parse_arguments(MDB "OWN_SERVER" "NAME;TIMEOUT" "COMMAND;LABELS" ${ARGN})
  if(NOT MDB_NAME OR NOT MDB_COMMAND)
    message(FATAL_ERROR "hubu_mariadb_test: NAME and COMMAND are required")
  endif()
  if(NOT MDB_TIMEOUT)
    set(MDB_TIMEOUT 120)
  endif()
  set(name ${HUBU_TEST_PREFIX}${MDB_NAME})
  if(MDB_OWN_SERVER)
    # A short directory name keeps the socket's path within sun_path.
    string(MD5 hash ${MDB_NAME})
    string(SUBSTRING ${hash} 0 10 hash)
    set(fixture ${name}.server)
    set(dir ${CMAKE_BINARY_DIR}/mariadb-${hash})
    hubu_mariadb_server(${fixture} ${dir})
  else()
    set(fixture ${HUBU_TEST_PREFIX}mariadb)
    set(dir ${CMAKE_BINARY_DIR}/mariadb)
  endif()
  set(labels mariadb ${MDB_LABELS})
  add_test(NAME ${name} COMMAND ${MDB_COMMAND})
  set_tests_properties(${name} PROPERTIES
    FIXTURES_REQUIRED ${fixture}
    LABELS "${labels}"
    TIMEOUT ${MDB_TIMEOUT}
    ENVIRONMENT "HUBU_MARIADB_ENV=${dir}/env;HUBU_MARIADB_DIR=${dir};HUBU_MARIADB_SCRIPT=${HUBU_MARIADB_SCRIPT}")
endfunction()

# The server itself: the hubu account over TCP and the socket, and committed
# rows kept through a SIGKILL in the middle of a stream of commits.
hubu_mariadb_test(NAME mariadb.private_server_answers_over_tcp_and_socket
                  COMMAND ${CMAKE_CURRENT_LIST_DIR}/store/mariadb_smoke.sh tcp_and_socket)
hubu_mariadb_test(NAME mariadb.private_server_keeps_acknowledged_commits_through_kill9_and_restart OWN_SERVER
                  COMMAND ${CMAKE_CURRENT_LIST_DIR}/store/mariadb_smoke.sh kill9_restart)
