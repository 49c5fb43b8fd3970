# messaging.cmake — the messaging guarantees of PROTOCOL.md section 5 and the
# reliability invariants of DESIGN.md, checked over the wire: real hubud
# processes on loopback spoken to with raw frames (tests/integration/harness.c
# plus tests/messaging/msgtest.c). Included by tests.cmake, after
# mariadb.cmake. Each tests/messaging/<exe>.c lists its cases as
# E2E_CASE(name); every case becomes two ctest tests, both run as
# `<exe> <name>`:
#
#   ${HUBU_TEST_PREFIX}msg.<name>          on SQLite (the default store), label msg
#   ${HUBU_TEST_PREFIX}msg.mariadb.<name>  on MariaDB, labels msg and mariadb:
#                                          HUBU_TEST_STORE=mariadb, a database of
#                                          its own on the fixture's server
#                                          (tests/mariadb.cmake, msgtest.h)
#
#   cmake --build <tree> --target hubu_msg_tests && (cd <tree> && ctest -L msg)
#   (cd <tree> && ctest -L msg -LE mariadb)    SQLite only
#   (cd <tree> && ctest -L mariadb)            every MariaDB test, these included
#
# HUBU_TEST_QUICK=1 in the environment scales the heavy cases down; the
# sanitizer tree scales them down by itself (HUBU_MSG_SANITIZED).

set(HUBU_MSG_DIR ${CMAKE_CURRENT_LIST_DIR}/messaging)
set(HUBU_MSG_HARNESS ${CMAKE_CURRENT_LIST_DIR}/integration/harness.c)
set(HUBU_MSG_HARNESS_DIR ${CMAKE_CURRENT_LIST_DIR}/integration)
add_custom_target(hubu_msg_tests)

set(HUBU_MSG_DEFINITIONS HUBUD_PATH="$<TARGET_FILE:hubud>" HUBUCTL_PATH="$<TARGET_FILE:hubuctl>"
                         HUBU_MARIADB_SCRIPT_PATH="${CMAKE_SOURCE_DIR}/scripts/mariadb-private.sh")
if(HUBU_SANITIZE)
  list(APPEND HUBU_MSG_DEFINITIONS HUBU_MSG_SANITIZED=1)
endif()

# hubu_msg(<exe> [HEAVY] [TIMEOUT seconds] [MARIADB_ONLY] [OWN_SERVER]
#          [SQLITE_ONLY <case>...]): HEAVY cases never run at the same time as
# each other or as the e2e suite's heavy ones (same resource lock), on either
# store. SQLITE_ONLY cases get no MariaDB twin; MARIADB_ONLY executables get
# only the MariaDB tests; OWN_SERVER gives each MariaDB test a server of its
# own (one it may kill and restart, see tests/mariadb.cmake).
function(hubu_msg exe)
  cmake_parse_arguments(MSG "HEAVY;MARIADB_ONLY;OWN_SERVER" "TIMEOUT" "SQLITE_ONLY" ${ARGN})
  if(NOT MSG_TIMEOUT)
    set(MSG_TIMEOUT 30)
  endif()
  set(src ${HUBU_MSG_DIR}/${exe}.c)
  add_executable(${exe} ${src} ${HUBU_MSG_DIR}/msgtest.c ${HUBU_MSG_HARNESS})
  target_include_directories(${exe} PRIVATE ${HUBU_MSG_DIR} ${HUBU_MSG_HARNESS_DIR})
  target_link_libraries(${exe} PRIVATE hubu_lib SQLite::SQLite3 PkgConfig::MARIADB)
  target_compile_definitions(${exe} PRIVATE ${HUBU_MSG_DEFINITIONS})
  add_dependencies(${exe} hubud hubuctl)
  add_dependencies(hubu_msg_tests ${exe})
  # The harness's watchdog kills hubud (and msgtest removes its dirs and
  # databases) before ctest's timeout would orphan them.
  math(EXPR watchdog "${MSG_TIMEOUT} - 5")
  set(own_server)
  if(MSG_OWN_SERVER)
    set(own_server OWN_SERVER)
  endif()
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${src})
  file(STRINGS ${src} lines REGEX "^[ \t]*E2E_CASE\\([a-z0-9_]+\\)")
  foreach(line IN LISTS lines)
    string(REGEX MATCH "E2E_CASE\\(([a-z0-9_]+)\\)" unused "${line}")
    set(case ${CMAKE_MATCH_1})
    if(NOT MSG_MARIADB_ONLY)
      set(name ${HUBU_TEST_PREFIX}msg.${case})
      add_test(NAME ${name} COMMAND ${exe} ${case})
      set_tests_properties(${name} PROPERTIES TIMEOUT ${MSG_TIMEOUT} ENVIRONMENT "E2E_WATCHDOG_S=${watchdog}"
                                              LABELS msg)
      if(MSG_HEAVY)
        set_tests_properties(${name} PROPERTIES RESOURCE_LOCK hubu_e2e_heavy)
      endif()
    endif()
    if(NOT case IN_LIST MSG_SQLITE_ONLY)
      hubu_mariadb_test(NAME msg.mariadb.${case} COMMAND ${exe} ${case} TIMEOUT ${MSG_TIMEOUT} LABELS msg
                        ${own_server})
      set(name ${HUBU_TEST_PREFIX}msg.mariadb.${case})
      set_property(TEST ${name} APPEND PROPERTY ENVIRONMENT "HUBU_TEST_STORE=mariadb" "E2E_WATCHDOG_S=${watchdog}")
      if(MSG_HEAVY)
        set_tests_properties(${name} PROPERTIES RESOURCE_LOCK hubu_e2e_heavy)
      endif()
    endif()
  endforeach()
endfunction()

hubu_msg(msg_flows TIMEOUT 30)
hubu_msg(msg_offline TIMEOUT 60)
hubu_msg(msg_slow_reader HEAVY TIMEOUT 90)
# kill -9 of hubud mid-stream, five times; on MariaDB too.
hubu_msg(msg_crash HEAVY TIMEOUT 90)
# kill -9 and restart of mariadbd under 100 pipelining senders: MariaDB only,
# on a server of its own.
hubu_msg(msg_dbdown HEAVY MARIADB_ONLY OWN_SERVER TIMEOUT 120)

# The messaging paths under valgrind: only in a tree without sanitizers.
find_program(HUBU_VALGRIND valgrind)
if(HUBU_VALGRIND AND NOT HUBU_SANITIZE)
  hubu_msg(msg_valgrind HEAVY TIMEOUT 180)
  target_compile_definitions(msg_valgrind PRIVATE HUBU_VALGRIND_PATH="${HUBU_VALGRIND}")
endif()
