# redis.cmake — the private redis-server that Redis tests run against, and
# those tests (runtime/cluster: the client on the loop, the seq allocator).
# Included by tests.cmake.
#
# The fixture ${HUBU_TEST_PREFIX}redis: ${HUBU_TEST_PREFIX}redis_start starts
# a server with scripts/redis-private.sh in <tree>/redis (127.0.0.1, a free
# port, the current user, nothing on disk), and ${HUBU_TEST_PREFIX}redis_stop
# stops it by its pid and removes the directory once every test that needs it
# has run. Each tree has its own server (the sanitizer tree's are asan.*).
#
#   cd <tree> && ctest -L redis
#   KEEP=1 ctest -L redis      (leaves the directories and logs)
#
# hubu_redis_test(NAME <name> COMMAND <command> [args...]
#                 [OWN_SERVER] [TIMEOUT <seconds>] [LABELS <label>...])
#
# adds the test ${HUBU_TEST_PREFIX}<name>, labelled redis, run once its
# server answers. Its environment:
#
#   HUBU_REDIS_ENV     <dir>/env: REDIS_PORT, REDIS_PID, REDIS_URL, REDIS_DIR
#   HUBU_REDIS_DIR     <dir>, for the script's kill9, restart, pause, resume, cli
#   HUBU_REDIS_SCRIPT  scripts/redis-private.sh
#
# Tests on the shared server run in parallel and must not disturb one
# another (keys of their own; no FLUSHALL). A test that stops, kills,
# restarts or flushes the server says OWN_SERVER: it gets one in
# <tree>/redis-<hash of the name>, started and stopped by <name>.server_start
# and <name>.server_stop.

set(HUBU_REDIS_SCRIPT ${CMAKE_SOURCE_DIR}/scripts/redis-private.sh)

function(hubu_redis_server fixture dir)
  add_test(NAME ${fixture}_start COMMAND ${HUBU_REDIS_SCRIPT} start ${dir})
  add_test(NAME ${fixture}_stop COMMAND ${HUBU_REDIS_SCRIPT} stop ${dir})
  set_tests_properties(${fixture}_start PROPERTIES FIXTURES_SETUP ${fixture} LABELS redis TIMEOUT 60)
  set_tests_properties(${fixture}_stop PROPERTIES FIXTURES_CLEANUP ${fixture} LABELS redis TIMEOUT 60)
endfunction()

hubu_redis_server(${HUBU_TEST_PREFIX}redis ${CMAKE_BINARY_DIR}/redis)

function(hubu_redis_test)
  cmake_parse_arguments(RDS "OWN_SERVER" "NAME;TIMEOUT" "COMMAND;LABELS" ${ARGN})
  if(NOT RDS_NAME OR NOT RDS_COMMAND)
    message(FATAL_ERROR "hubu_redis_test: NAME and COMMAND are required")
  endif()
  if(NOT RDS_TIMEOUT)
    set(RDS_TIMEOUT 120)
  endif()
  set(name ${HUBU_TEST_PREFIX}${RDS_NAME})
  if(RDS_OWN_SERVER)
    string(MD5 hash ${name})
    string(SUBSTRING ${hash} 0 10 hash)
    set(fixture ${name}.server)
    set(dir ${CMAKE_BINARY_DIR}/redis-${hash})
    hubu_redis_server(${fixture} ${dir})
  else()
    set(fixture ${HUBU_TEST_PREFIX}redis)
    set(dir ${CMAKE_BINARY_DIR}/redis)
  endif()
  add_test(NAME ${name} COMMAND ${RDS_COMMAND})
  set_tests_properties(${name} PROPERTIES
    FIXTURES_REQUIRED ${fixture}
    LABELS "redis;${RDS_LABELS}"
    TIMEOUT ${RDS_TIMEOUT}
    ENVIRONMENT "HUBU_REDIS_ENV=${dir}/env;HUBU_REDIS_DIR=${dir};HUBU_REDIS_SCRIPT=${HUBU_REDIS_SCRIPT}")
  # For a caller that adds cleanups of its own to the test's fixture.
  set(HUBU_REDIS_LAST_FIXTURE ${fixture} PARENT_SCOPE)
  set(HUBU_REDIS_LAST_DIR ${dir} PARENT_SCOPE)
endfunction()

# tests/cluster: one program per part, one ctest test per case (`<program> <case>`).
set(HUBU_CLUSTER_TEST_DIR ${CMAKE_CURRENT_LIST_DIR}/cluster)
add_custom_target(hubu_redis_tests)
foreach(prog redis_client redis_seq)
  add_executable(test_${prog} ${HUBU_CLUSTER_TEST_DIR}/${prog}.c)
  target_include_directories(test_${prog} PRIVATE ${HUBU_CLUSTER_TEST_DIR} ${CMAKE_CURRENT_LIST_DIR}/unit)
  target_link_libraries(test_${prog} PRIVATE hubu_cluster)
  add_dependencies(hubu_redis_tests test_${prog})
endforeach()

# The client: a stopped server (every pending command times out within its
# bound, recovery after SIGCONT), kill -9 and restart (health down, backoff,
# up again, the new replication id), pub/sub resubscribed after a restart,
# AUTH and SELECT, a close from the health callback while the server dies.
foreach(case command_timeouts_while_server_stopped_then_recovers
             kill9_and_restart_reconnect_with_health_down_then_up
             pubsub_across_two_clients_and_resubscribe_after_restart
             idle_client_notices_a_stopped_server_by_its_ping
             subscriber_heartbeat_notices_a_stopped_server
             connect_authenticates_and_selects_the_database
             close_from_the_health_callback_when_the_server_dies)
  hubu_redis_test(NAME redis.${case} OWN_SERVER COMMAND test_redis_client ${case})
endforeach()
foreach(case eval_loads_the_script_after_noscript
             an_answer_waiting_in_the_socket_wins_over_a_late_timer
             close_answers_pending_commands_and_then_nothing_more
             config_url_is_parsed_and_host_names_refused)
  hubu_redis_test(NAME redis.${case} COMMAND test_redis_client ${case})
endforeach()

# The seq allocator (seq.lua and redis_seq.c) with the lease test double, and
# with the store's real lease (store_lease.c on SQLite);
# the promotion case starts a replica of its own in <dir>-replica.
foreach(case seqs_strictly_increase_and_never_repeat_across_two_nodes
             seq_jumps_above_every_earlier_seq_after_flushall_and_empty_restart
             a_taken_seq_retires_the_cached_block_and_the_next_seq_comes_from_a_new_lease
             a_block_leased_before_the_cached_one_is_refused_even_after_a_taken_seq_retired_it
             a_block_leased_before_redis_came_back_empty_is_leased_again
             seq_unavailable_while_redis_down_and_back_after
             seq_leases_from_the_store_keep_seqs_above_everything_through_cache_losses)
  hubu_redis_test(NAME redis.${case} OWN_SERVER COMMAND test_redis_seq ${case})
endforeach()
set(case seq_after_a_lagging_replica_is_promoted_is_above_everything_before)
hubu_redis_test(NAME redis.${case} OWN_SERVER COMMAND test_redis_seq ${case})
# Its replica is stopped with its own server, even when the test died first.
add_test(NAME ${HUBU_TEST_PREFIX}redis.${case}.replica_stop
         COMMAND ${HUBU_REDIS_SCRIPT} stop ${HUBU_REDIS_LAST_DIR}-replica)
set_tests_properties(${HUBU_TEST_PREFIX}redis.${case}.replica_stop PROPERTIES
                     FIXTURES_CLEANUP ${HUBU_REDIS_LAST_FIXTURE} LABELS redis TIMEOUT 60)

# The allocator behind a real core (tests/core's fixture: a SQLite store in a
# temporary directory, test peers): SENDs wait for Redis in core's seq queue.
add_executable(test_redis_core ${HUBU_CLUSTER_TEST_DIR}/redis_core.c)
target_include_directories(test_redis_core PRIVATE ${HUBU_CLUSTER_TEST_DIR})
target_link_libraries(test_redis_core PRIVATE hubu_core_fixture hubu_cluster)
add_dependencies(hubu_redis_tests test_redis_core)
hubu_redis_test(NAME redis.core_sends_get_redis_seqs_in_order_jump_after_flushall_and_wait_out_a_restart
                OWN_SERVER COMMAND test_redis_core
                core_sends_get_redis_seqs_in_order_jump_after_flushall_and_wait_out_a_restart)

# Cluster mode's node layer (runtime/cluster/cluster.c): two or three real
# cores in one process (tests/core's fixture, a SQLite file each), each with
# its own hubu_cluster on one redis-server: deliveries, kicks and
# invalidations across nodes, presence in Redis, Redis killed, restarted
# empty and stopped, a node whose lease lapses, describe() and metrics.
add_executable(test_redis_cluster ${HUBU_CLUSTER_TEST_DIR}/redis_cluster.c)
target_include_directories(test_redis_cluster PRIVATE ${HUBU_CLUSTER_TEST_DIR})
target_link_libraries(test_redis_cluster PRIVATE hubu_core_fixture hubu_cluster)
add_dependencies(hubu_redis_tests test_redis_cluster)
foreach(case delivery_reaches_the_other_nodes_peers_once_in_their_modes
             a_loop_turns_many_deliveries_go_in_several_script_calls_all_delivered
             kick_and_invalidate_reach_the_other_nodes
             presence_in_redis_follows_attach_and_detach
             redis_kill9_and_empty_restart_then_presence_and_deliveries_come_back
             redis_sigstop_makes_the_nodes_unhealthy_within_the_timeout
             close_while_redis_is_stopped_is_bounded
             a_node_without_lease_refresh_is_no_target_until_it_refreshes
             describe_lists_the_nodes_and_malformed_bus_messages_are_dropped
             a_restart_under_the_same_id_cleans_its_predecessor_and_a_twin_is_unhealthy)
  hubu_redis_test(NAME redis.cluster.${case} OWN_SERVER COMMAND test_redis_cluster ${case})
endforeach()

# The client and the allocator under valgrind (a tree without sanitizers):
# the cache lost three ways, with reconnects, NOSCRIPT and leases; 0 errors
# and nothing definitely or indirectly lost.
find_program(HUBU_VALGRIND valgrind)
if(HUBU_VALGRIND AND NOT HUBU_SANITIZE)
  hubu_redis_test(NAME redis.valgrind_seq_jumps_after_flushall_and_empty_restart OWN_SERVER TIMEOUT 300
                  COMMAND ${HUBU_VALGRIND} --leak-check=full --errors-for-leak-kinds=definite,indirect
                          --error-exitcode=99 $<TARGET_FILE:test_redis_seq>
                          seq_jumps_above_every_earlier_seq_after_flushall_and_empty_restart)
  hubu_redis_test(NAME redis.valgrind_close_answers_pending_commands TIMEOUT 300
                  COMMAND ${HUBU_VALGRIND} --leak-check=full --errors-for-leak-kinds=definite,indirect
                          --error-exitcode=99 $<TARGET_FILE:test_redis_client>
                          close_answers_pending_commands_and_then_nothing_more)
  # Three nodes' clusters through a Redis kill -9 and empty restart, and
  # through their close: every callback, rewrite and bus message freed.
  foreach(case redis_kill9_and_empty_restart_then_presence_and_deliveries_come_back
               delivery_reaches_the_other_nodes_peers_once_in_their_modes)
    hubu_redis_test(NAME redis.cluster.valgrind_${case} OWN_SERVER TIMEOUT 300
                    COMMAND ${HUBU_VALGRIND} --leak-check=full --errors-for-leak-kinds=definite,indirect
                            --error-exitcode=99 $<TARGET_FILE:test_redis_cluster> ${case})
  endforeach()
endif()
