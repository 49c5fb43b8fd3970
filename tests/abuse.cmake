# abuse.cmake — what one client (or one address) can make hubud hold, and how
# long: real hubud processes on loopback driven by an attacker's traffic
# (connections that never read, oversized pre-login frames, silent
# connections up to the descriptor limit, out-of-range client_ids, bodies that
# could not be pushed, weak TLS 1.2 suites), each case asserting the bound a
# user would observe: VmRSS / VmHWM and /proc/PID/fd of hubud, the latency of
# another user's HELLO, the close of the abusive connection, the code it gets.
# Built on tests/integration/harness.c (compiled in, not edited) and
# tests/abuse/abuse.c. Included by tests.cmake. Each tests/abuse/<exe>.c lists
# its cases as E2E_CASE(name); every case becomes the ctest test
# ${HUBU_TEST_PREFIX}abuse.<name>, run as `<exe> <name>`.
#
#   cmake --build <tree> --target hubu_abuse_tests && (cd <tree> && ctest -L abuse)

set(HUBU_ABUSE_DIR ${CMAKE_CURRENT_LIST_DIR}/abuse)
set(HUBU_ABUSE_HARNESS_DIR ${CMAKE_CURRENT_LIST_DIR}/integration)
add_custom_target(hubu_abuse_tests)

set(HUBU_ABUSE_DEFINITIONS HUBUD_PATH="$<TARGET_FILE:hubud>")
if(HUBU_SANITIZE)
  list(APPEND HUBU_ABUSE_DEFINITIONS HUBU_ABUSE_SANITIZED=1)
endif()

# hubu_abuse_test(<exe> [HEAVY] [TIMEOUT seconds]): HEAVY cases (hundreds of
# connections, memory bounds) never run at the same time as each other or as
# the other suites' heavy ones (same resource lock). Exit status 77: skipped
# (the machine cannot give the test the descriptors it needs).
function(hubu_abuse_test exe)
  cmake_parse_arguments(ABU "HEAVY" "TIMEOUT" "" ${ARGN})
  if(NOT ABU_TIMEOUT)
    set(ABU_TIMEOUT 30)
  endif()
  set(src ${HUBU_ABUSE_DIR}/${exe}.c)
  add_executable(${exe} ${src} ${HUBU_ABUSE_DIR}/abuse.c ${HUBU_ABUSE_HARNESS_DIR}/harness.c)
  target_include_directories(${exe} PRIVATE ${HUBU_ABUSE_DIR} ${HUBU_ABUSE_HARNESS_DIR})
  target_link_libraries(${exe} PRIVATE hubu_lib OpenSSL::SSL OpenSSL::Crypto)
  target_compile_definitions(${exe} PRIVATE ${HUBU_ABUSE_DEFINITIONS})
  add_dependencies(${exe} hubud)
  add_dependencies(hubu_abuse_tests ${exe})
  # The harness's watchdog kills hubud before ctest's timeout would orphan it.
  math(EXPR watchdog "${ABU_TIMEOUT} - 5")
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${src})
  file(STRINGS ${src} lines REGEX "^[ \t]*E2E_CASE\\([a-z0-9_]+\\)")
  foreach(line IN LISTS lines)
    string(REGEX MATCH "E2E_CASE\\(([a-z0-9_]+)\\)" unused "${line}")
    set(name ${HUBU_TEST_PREFIX}abuse.${CMAKE_MATCH_1})
    add_test(NAME ${name} COMMAND ${exe} ${CMAKE_MATCH_1})
    set_tests_properties(${name} PROPERTIES TIMEOUT ${ABU_TIMEOUT} ENVIRONMENT "E2E_WATCHDOG_S=${watchdog}"
                                            LABELS abuse SKIP_RETURN_CODE 77)
    if(ABU_HEAVY)
      set_tests_properties(${name} PROPERTIES RESOURCE_LOCK hubu_e2e_heavy)
    endif()
  endforeach()
endfunction()

hubu_abuse_test(abuse_backpressure HEAVY)
hubu_abuse_test(abuse_prelogin HEAVY)
hubu_abuse_test(abuse_descriptors HEAVY)
hubu_abuse_test(abuse_sends)
hubu_abuse_test(abuse_tls)
hubu_abuse_test(abuse_memory)
hubu_abuse_test(abuse_strings)
hubu_abuse_test(abuse_reads HEAVY)
