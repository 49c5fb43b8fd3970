# tests.cmake — unit tests, the fuzz-corpus replay and (when present) the
# integration suite. Included from the top-level CMakeLists.txt, not added as a
# subdirectory, so every add_test lives here or in a file included from here,
# and every test name starts with ${HUBU_TEST_PREFIX} (the sanitizer tree's
# "asan." keeps its tests apart when the main tree's ctest runs both).
#
#   cmake --build <tree> --target hubu_unit_tests && (cd <tree> && ctest -R unit)

set(HUBU_TESTS_DIR ${CMAKE_CURRENT_LIST_DIR})

# A fresh self-signed EC certificate + key for any test that needs TLS.
add_library(hubu_testcert STATIC ${HUBU_TESTS_DIR}/testcert.c)
target_include_directories(hubu_testcert PUBLIC ${HUBU_TESTS_DIR})
target_link_libraries(hubu_testcert PUBLIC OpenSSL::Crypto)

add_custom_target(hubu_unit_tests)

# hubu_unit_test(<file stem> <behaviour> [extra libraries...]):
# builds tests/unit/test_<stem>.c and registers it as unit.<behaviour>.
function(hubu_unit_test stem behaviour)
  add_executable(test_${stem} ${HUBU_TESTS_DIR}/unit/test_${stem}.c)
  target_include_directories(test_${stem} PRIVATE ${HUBU_TESTS_DIR}/unit)
  target_link_libraries(test_${stem} PRIVATE hubu_lib ${ARGN})
  add_dependencies(hubu_unit_tests test_${stem})
  add_test(NAME ${HUBU_TEST_PREFIX}unit.${behaviour} COMMAND test_${stem})
  set_tests_properties(${HUBU_TEST_PREFIX}unit.${behaviour} PROPERTIES LABELS unit TIMEOUT 300)
endfunction()

hubu_unit_test(frame frame_verdicts_and_reassembly_hold_for_any_split)
hubu_unit_test(token token_verifies_only_untampered_unexpired_own_token)
hubu_unit_test(buf buf_keeps_bytes_in_order_through_consume_compact_grow)
# The JSON form of every message (runtime/lib/pbjson.c, PROTOCOL.md section 9).
hubu_unit_test(pbjson pbjson_writes_canonical_json_and_reads_it_back_to_the_same_wire_bytes)
hubu_unit_test(tls tls_memory_pair_handshakes_and_carries_1mib_both_ways hubu_testcert)
# The PROXY protocol v1/v2 parser (runtime/net/proxy_proto.c) on whole, cut, bad and random headers.
hubu_unit_test(proxy_proto proxy_header_v1_v2_parsed_within_bounds_for_any_split hubu_net)
# im.wordset (runtime/plugin/wordset.c) in a bare LuaJIT state; `test_wordset --bench` times it.
hubu_unit_test(wordset wordset_matches_whole_words_as_the_lua_reference_does PkgConfig::LUAJIT)
target_sources(test_wordset PRIVATE ${CMAKE_SOURCE_DIR}/runtime/plugin/wordset.c)
target_include_directories(test_wordset PRIVATE ${CMAKE_SOURCE_DIR}/runtime/plugin)
# hubuctl's JSON reader (tools/hubuctl_json.c): RFC 8259 in, bounds kept on any input.
hubu_unit_test(hubuctl_json hubuctl_json_reads_rfc8259_and_refuses_the_rest_within_bounds)
target_sources(test_hubuctl_json PRIVATE ${CMAKE_SOURCE_DIR}/tools/hubuctl_json.c)
target_include_directories(test_hubuctl_json PRIVATE ${CMAKE_SOURCE_DIR}/tools)

# The fuzz targets' code as ordinary programs (`make fuzz` builds the libFuzzer
# ones): each replays its kept corpus, tests/fuzz_corpus/<target>, and
# inputs generated from a fixed seed.
#   fuzz_frame: 20,000 random and mutated frame streams
#   fuzz_body:  20,000 random and mutated bodies of each frame type
#   fuzz_admin: the admin listener's seeds and 3,000 mutants, over loopback
#   fuzz_json:  the JSON form (lib/pbjson.c): 20,000 mutated hubu.v1.json messages and bodies
#
# hubu_fuzz_replay(<target> <behaviour> <library> <labels>): builds
# tests/fuzz_<target>.c as fuzz_<target>_replay and registers it as
# unit.<behaviour>, replaying tests/fuzz_corpus/<target>.
function(hubu_fuzz_replay target behaviour library labels)
  add_executable(fuzz_${target}_replay ${HUBU_TESTS_DIR}/fuzz_${target}.c)
  target_compile_definitions(fuzz_${target}_replay PRIVATE HUBU_FUZZ_REPLAY)
  target_link_libraries(fuzz_${target}_replay PRIVATE ${library})
  add_dependencies(hubu_unit_tests fuzz_${target}_replay)
  add_test(NAME ${HUBU_TEST_PREFIX}unit.${behaviour} COMMAND fuzz_${target}_replay ${HUBU_TESTS_DIR}/fuzz_corpus/${target})
  set_tests_properties(${HUBU_TEST_PREFIX}unit.${behaviour} PROPERTIES LABELS "${labels}" TIMEOUT 300)
endfunction()

hubu_fuzz_replay(frame frame_decoder_survives_fuzz_corpus_and_20000_mutants hubu_lib "unit;fuzz")
hubu_fuzz_replay(body body_checks_agree_with_protobuf_c_on_fuzz_corpus_and_mutants hubu_lib "unit;fuzz")
hubu_fuzz_replay(admin admin_listener_survives_fuzz_corpus_and_3000_mutants hubu_admin "unit;fuzz")
hubu_fuzz_replay(json json_form_reads_back_to_a_fixed_point_on_fuzz_corpus_and_mutants hubu_lib "unit;fuzz;edge")

include(${CMAKE_CURRENT_LIST_DIR}/integration.cmake OPTIONAL)
include(${CMAKE_CURRENT_LIST_DIR}/edge.cmake)
include(${CMAKE_CURRENT_LIST_DIR}/browser.cmake)
include(${CMAKE_CURRENT_LIST_DIR}/mariadb.cmake)
include(${CMAKE_CURRENT_LIST_DIR}/redis.cmake)
include(${CMAKE_CURRENT_LIST_DIR}/store.cmake OPTIONAL)
include(${CMAKE_CURRENT_LIST_DIR}/store_copy.cmake)
include(${CMAKE_CURRENT_LIST_DIR}/messaging.cmake OPTIONAL)
include(${CMAKE_CURRENT_LIST_DIR}/client.cmake OPTIONAL)
include(${CMAKE_CURRENT_LIST_DIR}/spec.cmake)
include(${CMAKE_CURRENT_LIST_DIR}/cluster.cmake)
# spec.plugins runs moderation.lua's code under a stub host in plain LuaJIT too;
# it gets im.wordset from this module (package.loadlib(path, "hubu_wordset_new")).
# Not linked against libluajit: the luajit binary provides the Lua API.
if(TARGET hubu_spec_deps)
  add_library(hubu_wordset_module MODULE ${CMAKE_SOURCE_DIR}/runtime/plugin/wordset.c)
  target_include_directories(hubu_wordset_module PRIVATE ${LUAJIT_INCLUDE_DIRS})
  set_target_properties(hubu_wordset_module PROPERTIES PREFIX "" OUTPUT_NAME hubu_wordset)
  add_dependencies(hubu_spec_deps hubu_wordset_module)
  foreach(t spec.plugins)
    if(TEST ${HUBU_TEST_PREFIX}${t})
      set_property(TEST ${HUBU_TEST_PREFIX}${t} APPEND PROPERTY
                   ENVIRONMENT "HUBU_WORDSET_LIB=$<TARGET_FILE:hubu_wordset_module>")
    endif()
  endforeach()
endif()
include(${CMAKE_CURRENT_LIST_DIR}/admin.cmake OPTIONAL)
include(${CMAKE_CURRENT_LIST_DIR}/config.cmake OPTIONAL)
include(${CMAKE_CURRENT_LIST_DIR}/abuse.cmake OPTIONAL)
include(${CMAKE_CURRENT_LIST_DIR}/core.cmake)

# hubu-bench's in-process scenarios, run briefly so that a build that drops
# one, or a shipped plugin that stops letting the bench's messages through,
# is caught. The figures they print are not checked (docs/benchmarks.md).
add_test(NAME ${HUBU_TEST_PREFIX}bench.hooks_scenario_runs_the_shipped_plugins
         COMMAND hubu-bench hooks --plugins ${CMAKE_SOURCE_DIR}/plugins --plugin ratelimit --plugin moderation
                 --plugin bigroup --sends 2000 --rounds 1 --json)
add_test(NAME ${HUBU_TEST_PREFIX}bench.store_scenario_appends_durably
         COMMAND hubu-bench store --count 5000 --json)
set_tests_properties(${HUBU_TEST_PREFIX}bench.hooks_scenario_runs_the_shipped_plugins
                     ${HUBU_TEST_PREFIX}bench.store_scenario_appends_durably
                     PROPERTIES LABELS bench TIMEOUT 120 FAIL_REGULAR_EXPRESSION "\"failed\":[1-9]")
# The floors (tools/bench_floor.c): the disk's sync and a fan-out's writes,
# without a server; each must complete every sync and every round.
add_test(NAME ${HUBU_TEST_PREFIX}bench.disk_scenario_syncs
         COMMAND hubu-bench disk --data ${CMAKE_CURRENT_BINARY_DIR} --rate 200 --seconds 1 --json)
add_test(NAME ${HUBU_TEST_PREFIX}bench.writes_scenario_reaches_every_socket
         COMMAND hubu-bench writes --members 300 --rounds 3 --writer-cpu -1 --reader-cpu -1 --json)
set_tests_properties(${HUBU_TEST_PREFIX}bench.disk_scenario_syncs PROPERTIES
                     LABELS bench TIMEOUT 60 PASS_REGULAR_EXPRESSION "\"syncs\":[1-9][0-9]+,")
set_tests_properties(${HUBU_TEST_PREFIX}bench.writes_scenario_reaches_every_socket PROPERTIES
                     LABELS bench TIMEOUT 60 PASS_REGULAR_EXPRESSION "\"members\":300,\"bytes\":150,\"rounds\":3,")
# tools/bench-http.sh, briefly: a hubud whose message.send hook asks `hubu-bench
# serve-http` about every message, pairs and rate with the PING probe; it fails
# when a run does not deliver everything. Plain tree only (the figures are the point).
if(NOT HUBU_SANITIZE)
  add_test(NAME bench.http_scenario_runs_against_a_local_service
           COMMAND ${CMAKE_SOURCE_DIR}/tools/bench-http.sh ${CMAKE_BINARY_DIR})
  set_tests_properties(bench.http_scenario_runs_against_a_local_service PROPERTIES
    LABELS bench TIMEOUT 300 RUN_SERIAL TRUE
    ENVIRONMENT "LATENCIES=1;MESSAGES=2000;RATE=500;RATE_SECONDS=1;PIN=0")
endif()

# Layers (docs/architecture.md): no include goes up or across in a cycle
# (layers_check.py, which also shows it catches planted ones), and the build
# itself refuses one: a core file including a net header does not compile,
# while the same file with a core header does.
add_test(NAME ${HUBU_TEST_PREFIX}layers.no_upward_include_or_cycle
         COMMAND ${Python3_EXECUTABLE} ${CMAKE_SOURCE_DIR}/tests/layers/layers_check.py ${CMAKE_SOURCE_DIR}/runtime)
add_test(NAME ${HUBU_TEST_PREFIX}layers.check_reports_planted_violations
         COMMAND ${Python3_EXECUTABLE} ${CMAKE_SOURCE_DIR}/tests/layers/layers_check.py --self-test
                 ${CMAKE_SOURCE_DIR}/runtime)
add_library(hubu_layers_control OBJECT EXCLUDE_FROM_ALL ${CMAKE_SOURCE_DIR}/tests/layers/control.c)
target_link_libraries(hubu_layers_control PRIVATE hubu_core)
add_library(hubu_layers_planted OBJECT EXCLUDE_FROM_ALL ${CMAKE_SOURCE_DIR}/tests/layers/planted_upward.c)
target_link_libraries(hubu_layers_planted PRIVATE hubu_core)
add_test(NAME ${HUBU_TEST_PREFIX}layers.core_builds_with_its_own_headers
         COMMAND ${CMAKE_COMMAND} --build ${CMAKE_BINARY_DIR} --target hubu_layers_control)
add_test(NAME ${HUBU_TEST_PREFIX}layers.core_build_refuses_a_net_header
         COMMAND ${CMAKE_COMMAND} --build ${CMAKE_BINARY_DIR} --target hubu_layers_planted)
set_tests_properties(${HUBU_TEST_PREFIX}layers.core_build_refuses_a_net_header PROPERTIES WILL_FAIL TRUE)

# Style: every tracked C file is formatted as .clang-format says (once; the
# sanitizer tree has the same sources).
if(NOT HUBU_TEST_PREFIX)
  add_test(NAME style.c_files_follow_clang_format
           COMMAND ${CMAKE_SOURCE_DIR}/tests/style/format_check.sh ${CMAKE_SOURCE_DIR})
  set_tests_properties(style.c_files_follow_clang_format PROPERTIES LABELS style)
endif()
set_tests_properties(${HUBU_TEST_PREFIX}layers.no_upward_include_or_cycle
                     ${HUBU_TEST_PREFIX}layers.check_reports_planted_violations
                     ${HUBU_TEST_PREFIX}layers.core_builds_with_its_own_headers
                     ${HUBU_TEST_PREFIX}layers.core_build_refuses_a_net_header
                     PROPERTIES LABELS layers RESOURCE_LOCK hubu_layers_build_${HUBU_TEST_PREFIX})
