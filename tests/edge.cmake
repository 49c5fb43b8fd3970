# edge.cmake — the HTTP listener and WebSocket at /ws (runtime/net/ws.c)
# against real hubud processes on loopback, frame by frame. Included by
# tests.cmake after integration.cmake (it uses hubu_e2e's harness). Each
# E2E_CASE of tests/edge/e2e_ws.c becomes ${HUBU_TEST_PREFIX}edge.<case>.
#
#   cmake --build <tree> --target e2e_ws && (cd <tree> && ctest -L edge)

set(HUBU_EDGE_DIR ${CMAKE_CURRENT_LIST_DIR}/edge)
add_executable(e2e_ws ${HUBU_EDGE_DIR}/e2e_ws.c)
target_link_libraries(e2e_ws PRIVATE hubu_e2e_harness hubu_net)
add_dependencies(e2e_ws hubud)
add_dependencies(hubu_e2e_tests e2e_ws)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${HUBU_EDGE_DIR}/e2e_ws.c)
file(STRINGS ${HUBU_EDGE_DIR}/e2e_ws.c edge_lines REGEX "^[ \t]*E2E_CASE\\([a-z0-9_]+\\)")
foreach(line IN LISTS edge_lines)
  string(REGEX MATCH "E2E_CASE\\(([a-z0-9_]+)\\)" unused "${line}")
  set(name ${HUBU_TEST_PREFIX}edge.${CMAKE_MATCH_1})
  add_test(NAME ${name} COMMAND e2e_ws ${CMAKE_MATCH_1})
  set_tests_properties(${name} PROPERTIES TIMEOUT 30 ENVIRONMENT "E2E_WATCHDOG_S=25" LABELS "edge;e2e")
endforeach()
