# core.cmake — the messaging core (runtime/core) without sockets: test peers
# whose output is a buffer, a real SQLite store in a temporary directory, a uv
# loop run until the store's completions are in (tests/core/core_fixture.c).
# Included by tests.cmake. Each tests/core/<exe>.c lists its cases as
# CORE_CASE(name); every case becomes the ctest test ${HUBU_TEST_PREFIX}core.<name>,
# run as `<exe> <name>`.
#
#   cmake --build <tree> --target hubu_core_tests && (cd <tree> && ctest -L core)

set(HUBU_CORE_TEST_DIR ${CMAKE_CURRENT_LIST_DIR}/core)
add_custom_target(hubu_core_tests)

add_library(hubu_core_fixture STATIC ${HUBU_CORE_TEST_DIR}/core_fixture.c)
target_include_directories(hubu_core_fixture PUBLIC ${HUBU_CORE_TEST_DIR} ${CMAKE_CURRENT_LIST_DIR}/unit)
target_link_libraries(hubu_core_fixture PUBLIC hubu_core SQLite::SQLite3)

# hubu_core_test(<exe>): tests/core/<exe>.c, one ctest test per CORE_CASE.
function(hubu_core_test exe)
  set(src ${HUBU_CORE_TEST_DIR}/${exe}.c)
  add_executable(${exe} ${src})
  target_link_libraries(${exe} PRIVATE hubu_core_fixture)
  add_dependencies(hubu_core_tests ${exe})
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${src})
  file(STRINGS ${src} lines REGEX "^[ \t]*CORE_CASE\\([a-z0-9_]+\\)")
  foreach(line IN LISTS lines)
    string(REGEX MATCH "CORE_CASE\\(([a-z0-9_]+)\\)" unused "${line}")
    set(name ${HUBU_TEST_PREFIX}core.${CMAKE_MATCH_1})
    add_test(NAME ${name} COMMAND ${exe} ${CMAKE_MATCH_1})
    set_tests_properties(${name} PROPERTIES TIMEOUT 60 LABELS core)
  endforeach()
endfunction()

hubu_core_test(core_session)
hubu_core_test(core_send)
hubu_core_test(core_delivery)
hubu_core_test(core_devices)
hubu_core_test(core_presence)
hubu_core_test(core_hooks)
