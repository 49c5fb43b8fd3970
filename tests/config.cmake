# config.cmake — hubu.lua, the Lua config file (runtime/config_file.c), end
# to end: real hubud processes started by tests/integration/harness.c (compiled
# in, not edited) or spawned with their stderr captured. Included by
# tests.cmake. Each tests/config/<exe>.c lists its cases as E2E_CASE(name);
# every case becomes the ctest test ${HUBU_TEST_PREFIX}config.<name>.
#
#   cmake --build <tree> --target hubu_config_tests && (cd <tree> && ctest -L config)

set(HUBU_CONFIG_TEST_DIR ${CMAKE_CURRENT_LIST_DIR}/config)
set(HUBU_CONFIG_HARNESS_DIR ${CMAKE_CURRENT_LIST_DIR}/integration)
add_custom_target(hubu_config_tests)

# hubu_config_test(<exe> [TIMEOUT seconds])
function(hubu_config_test exe)
  cmake_parse_arguments(CFG "" "TIMEOUT" "" ${ARGN})
  if(NOT CFG_TIMEOUT)
    set(CFG_TIMEOUT 60)
  endif()
  set(src ${HUBU_CONFIG_TEST_DIR}/${exe}.c)
  add_executable(${exe} ${src} ${HUBU_CONFIG_HARNESS_DIR}/harness.c)
  target_include_directories(${exe} PRIVATE ${HUBU_CONFIG_HARNESS_DIR})
  target_link_libraries(${exe} PRIVATE hubu_lib)
  target_compile_definitions(${exe} PRIVATE HUBUD_PATH="$<TARGET_FILE:hubud>")
  add_dependencies(${exe} hubud)
  add_dependencies(hubu_config_tests ${exe})
  # The harness's watchdog kills hubud before ctest's timeout would orphan it.
  math(EXPR watchdog "${CFG_TIMEOUT} - 5")
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${src})
  file(STRINGS ${src} lines REGEX "^[ \t]*E2E_CASE\\([a-z0-9_]+\\)")
  foreach(line IN LISTS lines)
    string(REGEX MATCH "E2E_CASE\\(([a-z0-9_]+)\\)" unused "${line}")
    set(name ${HUBU_TEST_PREFIX}config.${CMAKE_MATCH_1})
    add_test(NAME ${name} COMMAND ${exe} ${CMAKE_MATCH_1})
    set_tests_properties(${name} PROPERTIES TIMEOUT ${CFG_TIMEOUT} ENVIRONMENT "E2E_WATCHDOG_S=${watchdog}"
                                            LABELS config)
  endforeach()
endfunction()

hubu_config_test(config_file)
