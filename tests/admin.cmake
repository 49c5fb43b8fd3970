# admin.cmake — the admin listener (runtime/admin/admin.c) and hubuctl's admin
# commands (tools/hubuctl_admin.c), end to end: real hubud processes started
# by tests/integration/harness.c with --admin-listen 127.0.0.1:0, spoken to
# over HTTP (answers read with http-parser) and through the hubuctl binary;
# admin_guard.c holds what the listener refuses (Host, Origin, token, form
# posts, plugin names, a start off loopback without a token).
# Included by tests.cmake. Each tests/admin/<exe>.c lists its cases as
# E2E_CASE(name); every case becomes the ctest test
# ${HUBU_TEST_PREFIX}admin.<name>, run as `<exe> <name>`.
#
#   cmake --build <tree> --target hubu_admin_tests && (cd <tree> && ctest -L admin)

set(HUBU_ADMIN_TEST_DIR ${CMAKE_CURRENT_LIST_DIR}/admin)
set(HUBU_ADMIN_HARNESS_DIR ${CMAKE_CURRENT_LIST_DIR}/integration)
add_custom_target(hubu_admin_tests)

# hubu_admin_test(<exe> [TIMEOUT seconds])
function(hubu_admin_test exe)
  cmake_parse_arguments(ADM "" "TIMEOUT" "" ${ARGN})
  if(NOT ADM_TIMEOUT)
    set(ADM_TIMEOUT 30)
  endif()
  set(src ${HUBU_ADMIN_TEST_DIR}/${exe}.c)
  add_executable(${exe} ${src} ${HUBU_ADMIN_TEST_DIR}/admin_http.c ${HUBU_ADMIN_HARNESS_DIR}/harness.c)
  target_include_directories(${exe} PRIVATE ${HUBU_ADMIN_TEST_DIR} ${HUBU_ADMIN_HARNESS_DIR})
  target_link_libraries(${exe} PRIVATE hubu_lib hubu_http_parser)
  target_compile_definitions(${exe} PRIVATE HUBUD_PATH="$<TARGET_FILE:hubud>" HUBUCTL_PATH="$<TARGET_FILE:hubuctl>")
  add_dependencies(${exe} hubud hubuctl)
  add_dependencies(hubu_admin_tests ${exe})
  # The harness's watchdog kills hubud before ctest's timeout would orphan it.
  math(EXPR watchdog "${ADM_TIMEOUT} - 5")
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${src})
  file(STRINGS ${src} lines REGEX "^[ \t]*E2E_CASE\\([a-z0-9_]+\\)")
  foreach(line IN LISTS lines)
    string(REGEX MATCH "E2E_CASE\\(([a-z0-9_]+)\\)" unused "${line}")
    set(name ${HUBU_TEST_PREFIX}admin.${CMAKE_MATCH_1})
    add_test(NAME ${name} COMMAND ${exe} ${CMAKE_MATCH_1})
    set_tests_properties(${name} PROPERTIES TIMEOUT ${ADM_TIMEOUT} ENVIRONMENT "E2E_WATCHDOG_S=${watchdog}"
                                            LABELS admin SKIP_RETURN_CODE 77)
  endforeach()
endfunction()

hubu_admin_test(admin_endpoints)
hubu_admin_test(admin_guard)
hubu_admin_test(admin_hubuctl)
