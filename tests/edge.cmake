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
hubu_fuzz_replay(ws ws_input_survives_fuzz_corpus_and_20000_mutants hubu_net "unit;fuzz;edge")

# The same for fuzz_proxy (the PROXY protocol header parser, fed in cuts as
# a connection reads it): tests/fuzz_corpus/proxy, the seeds, 20,000 mutants.
hubu_fuzz_replay(proxy proxy_header_survives_fuzz_corpus_and_20000_mutants hubu_net "unit;fuzz;edge")

# hubud behind a real nginx (scripts/nginx-private.sh: Debian's nginx with
# libnginx-mod-stream, TLS ended there, PROXY v1 headers to hubud's
# --proxy-protocol listeners), and raw PROXY v1/v2 headers from the test.
# The cases that run nginx carry the label nginx too: ctest -L nginx.
hubu_edge(proxy_nginx ${CMAKE_CURRENT_LIST_DIR}/admin/admin_http.c)
target_include_directories(proxy_nginx PRIVATE ${CMAKE_CURRENT_LIST_DIR}/admin)
target_link_libraries(proxy_nginx PRIVATE hubu_testcert hubu_http_parser OpenSSL::SSL)
target_compile_definitions(
  proxy_nginx PRIVATE HUBUD_PATH="$<TARGET_FILE:hubud>" HUBUCTL_PATH="$<TARGET_FILE:hubuctl>"
                      HUBU_NGINX_SCRIPT="${CMAKE_SOURCE_DIR}/scripts/nginx-private.sh")
add_dependencies(proxy_nginx hubuctl)
foreach(case nginx_tls_stream_carries_frames_with_the_client_address nginx_wss_carries_websocket_with_the_client_address
             direct_connections_without_proxy_header_are_refused)
  set_tests_properties(${HUBU_TEST_PREFIX}edge.${case} PROPERTIES LABELS "edge;e2e;nginx")
endforeach()
