# store_copy.cmake — `hubuctl store copy` (tools/hubuctl_store.c), end to end:
# real SQLite files, databases of the private MariaDB server (the fixture of
# tests/mariadb.cmake) and, in one case, hubud serving the copy. Included by
# tests.cmake. Each E2E_CASE(name) of tests/store/store_copy.c becomes the
# ctest test ${HUBU_TEST_PREFIX}store_copy.<name>, labelled mariadb and store.
#
#   cmake --build <tree> --target store_copy_test && (cd <tree> && ctest -R store_copy)
#
# `store_copy_test --make-source sqlite:PATH N` writes a store of N messages,
# for timing a copy by hand (docs/store.md).
if(NOT COMMAND hubu_mariadb_test OR NOT TARGET hubu_e2e_harness)
  return()
endif()

set(HUBU_STORE_COPY_SRC ${CMAKE_CURRENT_LIST_DIR}/store/store_copy.c)
add_executable(store_copy_test ${HUBU_STORE_COPY_SRC})
target_link_libraries(store_copy_test PRIVATE hubu_e2e_harness hubu_store)
target_compile_definitions(store_copy_test PRIVATE HUBUCTL_PATH="$<TARGET_FILE:hubuctl>")
add_dependencies(store_copy_test hubud hubuctl)
if(TARGET hubu_unit_tests)
  add_dependencies(hubu_unit_tests store_copy_test)
endif()

set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${HUBU_STORE_COPY_SRC})
file(STRINGS ${HUBU_STORE_COPY_SRC} hubu_store_copy_lines REGEX "^[ \t]*E2E_CASE\\([a-z0-9_]+\\)")
foreach(line IN LISTS hubu_store_copy_lines)
  string(REGEX MATCH "E2E_CASE\\(([a-z0-9_]+)\\)" unused "${line}")
  hubu_mariadb_test(NAME store_copy.${CMAKE_MATCH_1} COMMAND store_copy_test ${CMAKE_MATCH_1} TIMEOUT 150
                    LABELS store)
  # the harness's watchdog stops hubud and hubuctl before ctest's timeout would orphan them
  set_property(TEST ${HUBU_TEST_PREFIX}store_copy.${CMAKE_MATCH_1} APPEND PROPERTY ENVIRONMENT E2E_WATCHDOG_S=140)
endforeach()
