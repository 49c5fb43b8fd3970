# store.cmake — the store's unit test: real SQLite in a temporary directory,
# driven through the threaded API on a uv loop (and a child killed with
# SIGKILL mid-stream). Included from tests.cmake inside BUILD_TESTING; needs
# the hubu_store library.
add_executable(test_store ${CMAKE_CURRENT_LIST_DIR}/unit/test_store.c)
target_include_directories(test_store PRIVATE ${CMAKE_CURRENT_LIST_DIR}/unit)
target_link_libraries(test_store PRIVATE hubu_store)
if(TARGET hubu_unit_tests)
  add_dependencies(hubu_unit_tests test_store)
endif()
add_test(NAME ${HUBU_TEST_PREFIX}unit.store COMMAND test_store)
set_tests_properties(${HUBU_TEST_PREFIX}unit.store PROPERTIES TIMEOUT 300 LABELS unit)
