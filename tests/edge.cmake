# edge.cmake — the HTTP listener and WebSocket at /ws (runtime/net/ws.c)
# against real hubud processes on loopback: e2e_ws frame by frame,
# e2e_ws_client through libhubu-client's ws_path. Included by tests.cmake
# after integration.cmake (it uses its harness). Each E2E_CASE of
# tests/edge/<exe>.c becomes ${HUBU_TEST_PREFIX}edge.<case>.
#
#   cmake --build <tree> --target hubu_e2e_tests && (cd <tree> && ctest -L edge)

set(HUBU_EDGE_DIR ${CMAKE_CURRENT_LIST_DIR}/edge)

function(hubu_edge exe)
  set(src ${HUBU_EDGE_DIR}/${exe}.c)
  add_executable(${exe} ${src} ${ARGN})
  target_link_libraries(${exe} PRIVATE hubu_e2e_harness)
  add_dependencies(${exe} hubud)
  add_dependencies(hubu_e2e_tests ${exe})
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${src})
  file(STRINGS ${src} lines REGEX "^[ \t]*E2E_CASE\\([a-z0-9_]+\\)")
  foreach(line IN LISTS lines)
    string(REGEX MATCH "E2E_CASE\\(([a-z0-9_]+)\\)" unused "${line}")
    set(name ${HUBU_TEST_PREFIX}edge.${CMAKE_MATCH_1})
    add_test(NAME ${name} COMMAND ${exe} ${CMAKE_MATCH_1})
    set_tests_properties(${name} PROPERTIES TIMEOUT 30 ENVIRONMENT "E2E_WATCHDOG_S=25" LABELS "edge;e2e")
  endforeach()
endfunction()

hubu_edge(e2e_ws)
target_link_libraries(e2e_ws PRIVATE hubu_net) # hubu_ws_accept_key, HUBU_WS_MAX_HEADER
hubu_edge(e2e_http) # the HTTP API of PROTOCOL.md section 7
target_link_libraries(e2e_http PRIVATE hubu_net)
hubu_edge(e2e_ws_client ${HUBU_E2E_DIR}/harness_uv.c)
target_link_libraries(e2e_ws_client PRIVATE hubu_client)

# The fuzz target's code as an ordinary program (`make fuzz` builds the
# libFuzzer one, fuzz_ws): the kept corpus tests/fuzz_corpus/ws, the seeds and
# 20,000 mutants from a fixed seed, through the request parse, the upgrade and
# wslay, in process.
add_executable(fuzz_ws_replay ${CMAKE_CURRENT_LIST_DIR}/fuzz_ws.c)
target_compile_definitions(fuzz_ws_replay PRIVATE HUBU_FUZZ_REPLAY)
target_link_libraries(fuzz_ws_replay PRIVATE hubu_net)
add_dependencies(hubu_unit_tests fuzz_ws_replay)
add_test(NAME ${HUBU_TEST_PREFIX}unit.ws_input_survives_fuzz_corpus_and_20000_mutants
         COMMAND fuzz_ws_replay ${CMAKE_CURRENT_LIST_DIR}/fuzz_corpus/ws)
set_tests_properties(${HUBU_TEST_PREFIX}unit.ws_input_survives_fuzz_corpus_and_20000_mutants
                     PROPERTIES LABELS "unit;fuzz;edge" TIMEOUT 300)

# The same for fuzz_proxy (the PROXY protocol header parser, fed in cuts as
# a connection reads it): tests/fuzz_corpus/proxy, the seeds, 20,000 mutants.
add_executable(fuzz_proxy_replay ${CMAKE_CURRENT_LIST_DIR}/fuzz_proxy.c)
target_compile_definitions(fuzz_proxy_replay PRIVATE HUBU_FUZZ_REPLAY)
target_link_libraries(fuzz_proxy_replay PRIVATE hubu_net)
add_dependencies(hubu_unit_tests fuzz_proxy_replay)
add_test(NAME ${HUBU_TEST_PREFIX}unit.proxy_header_survives_fuzz_corpus_and_20000_mutants
         COMMAND fuzz_proxy_replay ${CMAKE_CURRENT_LIST_DIR}/fuzz_corpus/proxy)
set_tests_properties(${HUBU_TEST_PREFIX}unit.proxy_header_survives_fuzz_corpus_and_20000_mutants
                     PROPERTIES LABELS "unit;fuzz;edge" TIMEOUT 300)
