# cluster.cmake — cluster mode end to end: several hubud nodes started with
# --cluster on one private MariaDB (the shared fixture server, a database per
# test, tests/mariadb.cmake) and a private redis-server of the test's own
# (the tests kill and restart it; tests/redis.cmake). Included by
# tests.cmake after mariadb.cmake, redis.cmake, messaging.cmake and spec.cmake.
#
#   cd <tree> && ctest -L cluster
#
# hubu_cluster_test(NAME <name> COMMAND <command> [args...] [TIMEOUT <seconds>])
# adds ${HUBU_TEST_PREFIX}<name>, labelled cluster, redis and mariadb, with
# the environment of both fixtures (HUBU_MARIADB_*, HUBU_REDIS_*) and
# HUBU_TEST_STORE=mariadb. Cluster tests take the heavy lock: three nodes and
# their clients fill the machine.

function(hubu_cluster_test)
  cmake_parse_arguments(CT "" "NAME;TIMEOUT" "COMMAND" ${ARGN})
  if(NOT CT_TIMEOUT)
    set(CT_TIMEOUT 120)
  endif()
  set(name ${HUBU_TEST_PREFIX}${CT_NAME})
  string(MD5 hash ${name})
  string(SUBSTRING ${hash} 0 10 hash)
  set(redis_fixture ${name}.redis)
  set(redis_dir ${CMAKE_BINARY_DIR}/redis-${hash})
  hubu_redis_server(${redis_fixture} ${redis_dir})
  set(mariadb_dir ${CMAKE_BINARY_DIR}/mariadb)
  math(EXPR watchdog "${CT_TIMEOUT} - 5")
  add_test(NAME ${name} COMMAND ${CT_COMMAND})
  set_tests_properties(${name} PROPERTIES
    FIXTURES_REQUIRED "${HUBU_TEST_PREFIX}mariadb;${redis_fixture}"
    LABELS "cluster;redis;mariadb"
    TIMEOUT ${CT_TIMEOUT}
    RESOURCE_LOCK hubu_e2e_heavy
    ENVIRONMENT "HUBU_TEST_STORE=mariadb;E2E_WATCHDOG_S=${watchdog};HUBU_MARIADB_ENV=${mariadb_dir}/env;HUBU_MARIADB_DIR=${mariadb_dir};HUBU_MARIADB_SCRIPT=${HUBU_MARIADB_SCRIPT};HUBU_REDIS_ENV=${redis_dir}/env;HUBU_REDIS_DIR=${redis_dir};HUBU_REDIS_SCRIPT=${HUBU_REDIS_SCRIPT}")
endfunction()

# The kill -9 test of tests/messaging/msg_crash.c, built for three nodes.
add_executable(cluster_crash ${HUBU_MSG_DIR}/msg_crash.c ${HUBU_MSG_DIR}/msgtest.c ${HUBU_MSG_HARNESS})
target_include_directories(cluster_crash PRIVATE ${HUBU_MSG_DIR} ${HUBU_MSG_HARNESS_DIR})
target_link_libraries(cluster_crash PRIVATE hubu_lib SQLite::SQLite3 PkgConfig::MARIADB)
target_compile_definitions(cluster_crash PRIVATE ${HUBU_MSG_DEFINITIONS} HUBU_CLUSTER_CRASH=1)
add_dependencies(cluster_crash hubud hubuctl)
hubu_cluster_test(NAME cluster.node_kill9_redis_loss_and_sigstop_lose_and_double_nothing TIMEOUT 150
                  COMMAND cluster_crash cluster_node_kill9_redis_loss_and_sigstop_lose_and_double_nothing)

# tests/cluster/e2e_cluster.c: chat, bots, reloads, kicks, groups, Redis lost, a node stopped past its lease.
add_executable(e2e_cluster ${CMAKE_CURRENT_LIST_DIR}/cluster/e2e_cluster.c ${HUBU_MSG_DIR}/msgtest.c ${HUBU_MSG_HARNESS}
                           ${CMAKE_CURRENT_LIST_DIR}/admin/admin_http.c)
target_include_directories(e2e_cluster PRIVATE ${HUBU_MSG_DIR} ${HUBU_MSG_HARNESS_DIR} ${CMAKE_CURRENT_LIST_DIR}/admin)
target_link_libraries(e2e_cluster PRIVATE hubu_lib hubu_http_parser SQLite::SQLite3 PkgConfig::MARIADB)
target_compile_definitions(e2e_cluster PRIVATE ${HUBU_MSG_DEFINITIONS} HUBU_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
add_dependencies(e2e_cluster hubud hubuctl)
foreach(case cluster_chat_direct_and_group_across_three_nodes cluster_bot_reload_kick_and_groups_across_nodes
             cluster_redis_lost_unavailable_pull_served_then_seqs_jump
             cluster_node_stopped_past_its_lease_leaves_and_comes_back)
  string(REGEX REPLACE "^cluster_" "" short ${case})
  hubu_cluster_test(NAME cluster.${short} TIMEOUT 90 COMMAND e2e_cluster ${case})
endforeach()
# One node under valgrind: only where valgrind can run hubud (not under ASan).
find_program(HUBU_VALGRIND valgrind)
if(HUBU_VALGRIND AND NOT HUBU_SANITIZE)
  target_compile_definitions(e2e_cluster PRIVATE HUBU_VALGRIND_PATH="${HUBU_VALGRIND}")
  hubu_cluster_test(NAME cluster.node_under_valgrind_has_no_memory_errors_or_leaks TIMEOUT 240
                    COMMAND e2e_cluster cluster_node_under_valgrind_has_no_memory_errors_or_leaks)
  set_property(TEST ${HUBU_TEST_PREFIX}cluster.node_under_valgrind_has_no_memory_errors_or_leaks APPEND PROPERTY
               LABELS valgrind)
endif()

# spec/cluster/*_spec.lua: busted specs across three nodes (not in spec.cmake's
# glob: they need the fixtures' servers). Not in the sanitizer tree, as the
# other specs are not (spec.cmake says why).
if(HUBU_LUAJIT AND HUBU_BUSTED AND TARGET hubu_client_shared AND NOT HUBU_SANITIZE)
  file(GLOB HUBU_CLUSTER_SPECS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/spec/cluster/*_spec.lua)
  foreach(spec_file IN LISTS HUBU_CLUSTER_SPECS)
    get_filename_component(spec_stem ${spec_file} NAME_WE)
    string(REGEX REPLACE "_spec$" "" spec_name ${spec_stem})
    hubu_cluster_test(NAME cluster.spec.${spec_name} TIMEOUT 120
                      COMMAND ${HUBU_LUAJIT} ${HUBU_BUSTED} --output=TAP ${spec_file})
    set(name ${HUBU_TEST_PREFIX}cluster.spec.${spec_name})
    set_tests_properties(${name} PROPERTIES WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
    set_property(TEST ${name} APPEND PROPERTY LABELS spec)
    set_property(TEST ${name} APPEND PROPERTY ENVIRONMENT "HUBUD=$<TARGET_FILE:hubud>" "HUBUCTL=$<TARGET_FILE:hubuctl>"
                 "HUBU_CLIENT_LIB=$<TARGET_FILE:hubu_client_shared>" "HUBU_SCRATCH_LIB=$<TARGET_FILE:hubu_scratch>")
  endforeach()
endif()
