# messaging.cmake — the messaging guarantees of PROTOCOL.md section 5 and the
# reliability invariants of DESIGN.md, checked over the wire: real hubud
# processes on loopback spoken to with raw frames (tests/integration/harness.c
# plus tests/messaging/msgtest.c). Included by tests.cmake. Each
# tests/messaging/<exe>.c lists its cases as E2E_CASE(name); every case becomes
# the ctest test ${HUBU_TEST_PREFIX}msg.<name>, run as `<exe> <name>`.
#
#   cmake --build <tree> --target hubu_msg_tests && (cd <tree> && ctest -L msg)
#
# HUBU_TEST_QUICK=1 in the environment scales the heavy cases down; the
# sanitizer tree scales them down by itself (HUBU_MSG_SANITIZED).

set(HUBU_MSG_DIR ${CMAKE_CURRENT_LIST_DIR}/messaging)
set(HUBU_MSG_HARNESS ${CMAKE_CURRENT_LIST_DIR}/integration/harness.c)
set(HUBU_MSG_HARNESS_DIR ${CMAKE_CURRENT_LIST_DIR}/integration)
add_custom_target(hubu_msg_tests)

set(HUBU_MSG_DEFINITIONS HUBUD_PATH="$<TARGET_FILE:hubud>" HUBUCTL_PATH="$<TARGET_FILE:hubuctl>")
if(HUBU_SANITIZE)
  list(APPEND HUBU_MSG_DEFINITIONS HUBU_MSG_SANITIZED=1)
endif()

# hubu_msg(<exe> [HEAVY] [TIMEOUT seconds]): HEAVY cases never run at the same
# time as each other or as the e2e suite's heavy ones (same resource lock).
function(hubu_msg exe)
  cmake_parse_arguments(MSG "HEAVY" "TIMEOUT" "" ${ARGN})
  if(NOT MSG_TIMEOUT)
    set(MSG_TIMEOUT 30)
  endif()
  set(src ${HUBU_MSG_DIR}/${exe}.c)
  add_executable(${exe} ${src} ${HUBU_MSG_DIR}/msgtest.c ${HUBU_MSG_HARNESS})
  target_include_directories(${exe} PRIVATE ${HUBU_MSG_DIR} ${HUBU_MSG_HARNESS_DIR})
  target_link_libraries(${exe} PRIVATE hubu_lib SQLite::SQLite3)
  target_compile_definitions(${exe} PRIVATE ${HUBU_MSG_DEFINITIONS})
  add_dependencies(${exe} hubud hubuctl)
  add_dependencies(hubu_msg_tests ${exe})
  # The harness's watchdog kills hubud (and msgtest removes its dirs) before
  # ctest's timeout would orphan them.
  math(EXPR watchdog "${MSG_TIMEOUT} - 5")
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${src})
  file(STRINGS ${src} lines REGEX "^[ \t]*E2E_CASE\\([a-z0-9_]+\\)")
  foreach(line IN LISTS lines)
    string(REGEX MATCH "E2E_CASE\\(([a-z0-9_]+)\\)" unused "${line}")
    set(name ${HUBU_TEST_PREFIX}msg.${CMAKE_MATCH_1})
    add_test(NAME ${name} COMMAND ${exe} ${CMAKE_MATCH_1})
    set_tests_properties(${name} PROPERTIES TIMEOUT ${MSG_TIMEOUT} ENVIRONMENT "E2E_WATCHDOG_S=${watchdog}"
                                            LABELS msg)
    if(MSG_HEAVY)
      set_tests_properties(${name} PROPERTIES RESOURCE_LOCK hubu_e2e_heavy)
    endif()
  endforeach()
endfunction()

hubu_msg(msg_flows TIMEOUT 30)
hubu_msg(msg_offline TIMEOUT 60)
hubu_msg(msg_slow_reader HEAVY TIMEOUT 90)
hubu_msg(msg_crash HEAVY TIMEOUT 90)

# The messaging paths under valgrind: only in a tree without sanitizers.
find_program(HUBU_VALGRIND valgrind)
if(HUBU_VALGRIND AND NOT HUBU_SANITIZE)
  hubu_msg(msg_valgrind HEAVY TIMEOUT 180)
  target_compile_definitions(msg_valgrind PRIVATE HUBU_VALGRIND_PATH="${HUBU_VALGRIND}")
endif()
