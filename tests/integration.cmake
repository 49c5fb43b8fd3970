# integration.cmake — end-to-end tests: real hubud processes on loopback,
# spoken to with raw frames, raw OpenSSL and libhubu-client. Included by
# tests.cmake. Each tests/integration/<exe>.c lists its cases as
# E2E_CASE(name); every case becomes the ctest test
# ${HUBU_TEST_PREFIX}e2e.<name>, run as `<exe> <name>`.
#
#   cmake --build <tree> --target hubu_e2e_tests && (cd <tree> && ctest -L e2e)

set(HUBU_E2E_DIR ${CMAKE_CURRENT_LIST_DIR}/integration)
add_custom_target(hubu_e2e_tests)

add_library(hubu_e2e_harness STATIC ${HUBU_E2E_DIR}/harness.c)
target_include_directories(hubu_e2e_harness PUBLIC ${HUBU_E2E_DIR})
target_link_libraries(hubu_e2e_harness PUBLIC hubu_lib)
target_compile_definitions(hubu_e2e_harness PRIVATE HUBUD_PATH="$<TARGET_FILE:hubud>")

# hubu_e2e(<exe> [CLIENT] [HEAVY] [TIMEOUT seconds] [DEFINITIONS defs...])
#   CLIENT: links libhubu-client. HEAVY: many connections or valgrind; heavy
#   tests never run two at a time, across build trees included.
function(hubu_e2e exe)
  cmake_parse_arguments(E2E "CLIENT;HEAVY" "TIMEOUT" "DEFINITIONS" ${ARGN})
  if(NOT E2E_TIMEOUT)
    set(E2E_TIMEOUT 30)
  endif()
  set(src ${HUBU_E2E_DIR}/${exe}.c)
  add_executable(${exe} ${src})
  target_link_libraries(${exe} PRIVATE hubu_e2e_harness)
  if(E2E_CLIENT)
    target_sources(${exe} PRIVATE ${HUBU_E2E_DIR}/harness_uv.c)
    target_link_libraries(${exe} PRIVATE hubu_client)
  endif()
  target_compile_definitions(${exe} PRIVATE ${E2E_DEFINITIONS})
  add_dependencies(${exe} hubud) # the harness runs it (HUBUD_PATH)
  add_dependencies(hubu_e2e_tests ${exe})
  # The watchdog inside the test kills hubud before ctest's timeout would
  # orphan it.
  math(EXPR watchdog "${E2E_TIMEOUT} - 5")
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${src})
  file(STRINGS ${src} lines REGEX "^[ \t]*E2E_CASE\\([a-z0-9_]+\\)")
  foreach(line IN LISTS lines)
    string(REGEX MATCH "E2E_CASE\\(([a-z0-9_]+)\\)" unused "${line}")
    set(name ${HUBU_TEST_PREFIX}e2e.${CMAKE_MATCH_1})
    add_test(NAME ${name} COMMAND ${exe} ${CMAKE_MATCH_1})
    set_tests_properties(${name} PROPERTIES TIMEOUT ${E2E_TIMEOUT} ENVIRONMENT "E2E_WATCHDOG_S=${watchdog}"
                                            LABELS e2e)
    if(E2E_HEAVY)
      set_tests_properties(${name} PROPERTIES RESOURCE_LOCK hubu_e2e_heavy)
    endif()
  endforeach()
endfunction()

if(HUBU_SANITIZE)
  set(HUBU_E2E_SANITIZED HUBU_E2E_SANITIZED=1)
endif()

hubu_e2e(e2e_hello)
hubu_e2e(e2e_frames)
hubu_e2e(e2e_timeouts)
hubu_e2e(e2e_tls CLIENT)
hubu_e2e(e2e_limits)
hubu_e2e(e2e_drain)
hubu_e2e(e2e_client_reconnect CLIENT)
hubu_e2e(e2e_load CLIENT HEAVY TIMEOUT 120 DEFINITIONS ${HUBU_E2E_SANITIZED})

# hubud under valgrind: only where valgrind can run it (not under ASan).
find_program(HUBU_VALGRIND valgrind)
if(HUBU_VALGRIND AND NOT HUBU_SANITIZE)
  hubu_e2e(e2e_valgrind HEAVY TIMEOUT 120 DEFINITIONS HUBU_VALGRIND_PATH="${HUBU_VALGRIND}")
endif()
