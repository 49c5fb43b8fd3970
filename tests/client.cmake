# client.cmake — behaviour tests of libhubu-client's message layer and of the
# `hubu` CLI, against real hubud processes on loopback (started with the
# end-to-end harness of tests/integration). Included from tests.cmake. Each
# tests/client/<exe>.c lists its cases as E2E_CASE(name); every case becomes
# the ctest test ${HUBU_TEST_PREFIX}client.<name>, run as `<exe> <name>`.
#
#   cmake --build <tree> --target hubu_client_tests && (cd <tree> && ctest -L client)

set(HUBU_CLIENT_TESTS_DIR ${CMAKE_SOURCE_DIR}/tests/client)
set(HUBU_CLIENT_HARNESS_DIR ${CMAKE_SOURCE_DIR}/tests/integration)

# The terminal client. Its home is the top-level CMakeLists.txt, next to
# hubu_client; defined here only while it is not there yet.
if(NOT TARGET hubu)
  add_executable(hubu ${CMAKE_SOURCE_DIR}/examples/hubu.c)
  target_link_libraries(hubu PRIVATE hubu_client)
endif()

add_custom_target(hubu_client_tests)

# hubu_client_test(<exe> [TIMEOUT seconds] [DEFINITIONS defs...]):
# tests/client/<exe>.c linked with the harness and libhubu-client.
function(hubu_client_test exe)
  cmake_parse_arguments(CT "" "TIMEOUT" "DEFINITIONS" ${ARGN})
  if(NOT CT_TIMEOUT)
    set(CT_TIMEOUT 90)
  endif()
  set(src ${HUBU_CLIENT_TESTS_DIR}/${exe}.c)
  add_executable(${exe} ${src} ${HUBU_CLIENT_HARNESS_DIR}/harness.c ${HUBU_CLIENT_HARNESS_DIR}/harness_uv.c)
  target_include_directories(${exe} PRIVATE ${HUBU_CLIENT_HARNESS_DIR})
  target_link_libraries(${exe} PRIVATE hubu_client hubu_lib)
  target_compile_definitions(${exe} PRIVATE HUBUD_PATH="$<TARGET_FILE:hubud>" ${CT_DEFINITIONS})
  add_dependencies(${exe} hubud)
  add_dependencies(hubu_client_tests ${exe})
  # The harness's watchdog kills hubud before ctest's timeout would orphan it.
  math(EXPR watchdog "${CT_TIMEOUT} - 5")
  set_property(DIRECTORY ${CMAKE_SOURCE_DIR} APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${src})
  file(STRINGS ${src} lines REGEX "^[ \t]*E2E_CASE\\([a-z0-9_]+\\)")
  foreach(line IN LISTS lines)
    string(REGEX MATCH "E2E_CASE\\(([a-z0-9_]+)\\)" unused "${line}")
    set(name ${HUBU_TEST_PREFIX}client.${CMAKE_MATCH_1})
    add_test(NAME ${name} COMMAND ${exe} ${CMAKE_MATCH_1})
    set_tests_properties(${name} PROPERTIES TIMEOUT ${CT_TIMEOUT} ENVIRONMENT "E2E_WATCHDOG_S=${watchdog}"
                                            LABELS client)
  endforeach()
endfunction()

if(HUBU_SANITIZE)
  set(HUBU_CLIENT_TESTS_SANITIZED HUBU_E2E_SANITIZED=1)
endif()

hubu_client_test(client_messages TIMEOUT 120 DEFINITIONS ${HUBU_CLIENT_TESTS_SANITIZED})
hubu_client_test(client_cli DEFINITIONS HUBU_CLI_PATH="$<TARGET_FILE:hubu>")
add_dependencies(client_cli hubu)
