# store.cmake — the store's tests. Included from tests.cmake inside
# BUILD_TESTING; needs the hubu_store library.
#
# unit.store: real SQLite in a temporary directory, driven through the
# threaded API on a uv loop (and a child killed with SIGKILL mid-stream).
hubu_unit_test(store store hubu_core)

# unit.sqlite_vfs: the SQLite backend's VFS on real files (WAL writes gathered
# per commit, visible to other connections at once, failures kept whole).
hubu_unit_test(sqlite_vfs sqlite_vfs hubu_store)

# unit.mariadb_url: mariadb:// URLs, password sources and redaction (no database).
hubu_unit_test(mariadb_url mariadb_url hubu_store)

# store.<backend>.<case>: the conformance suite (tests/store/conformance.c),
# every case on a fresh store of every backend, through store.h alone. The
# backends and cases are read from the source's CONFORMANCE_BACKEND(name) and
# CONFORMANCE_CASE(name) lines, so a new case or backend needs no edit here.
# A backend that cannot run on this machine exits 77: the test is skipped.
# The MariaDB cases run against the private server of tests/mariadb.cmake
# (label mariadb too), each on a database of its own.
#
#   cmake --build <tree> --target store_conformance && (cd <tree> && ctest -L store)
set(HUBU_STORE_CONFORMANCE_SRC ${CMAKE_CURRENT_LIST_DIR}/store/conformance.c)
add_executable(store_conformance ${HUBU_STORE_CONFORMANCE_SRC})
target_include_directories(store_conformance PRIVATE ${CMAKE_CURRENT_LIST_DIR}/unit)
target_link_libraries(store_conformance PRIVATE hubu_core)
if(TARGET hubu_unit_tests)
  add_dependencies(hubu_unit_tests store_conformance)
endif()
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${HUBU_STORE_CONFORMANCE_SRC})
file(STRINGS ${HUBU_STORE_CONFORMANCE_SRC} hubu_store_backend_lines
     REGEX "^[ \t]*CONFORMANCE_BACKEND\\([a-z0-9_]+\\)")
file(STRINGS ${HUBU_STORE_CONFORMANCE_SRC} hubu_store_case_lines REGEX "^[ \t]*CONFORMANCE_CASE\\([a-z0-9_]+\\)")
foreach(backend_line IN LISTS hubu_store_backend_lines)
  string(REGEX MATCH "CONFORMANCE_BACKEND\\(([a-z0-9_]+)\\)" unused "${backend_line}")
  set(backend ${CMAKE_MATCH_1})
  foreach(case_line IN LISTS hubu_store_case_lines)
    string(REGEX MATCH "CONFORMANCE_CASE\\(([a-z0-9_]+)\\)" unused "${case_line}")
    if(backend STREQUAL "mariadb") # on the private server of tests/mariadb.cmake, a database per case
      hubu_mariadb_test(NAME store.${backend}.${CMAKE_MATCH_1} LABELS store TIMEOUT 120
                        COMMAND store_conformance ${backend} ${CMAKE_MATCH_1})
      set(name ${HUBU_TEST_PREFIX}store.${backend}.${CMAKE_MATCH_1})
    else()
      set(name ${HUBU_TEST_PREFIX}store.${backend}.${CMAKE_MATCH_1})
      add_test(NAME ${name} COMMAND store_conformance ${backend} ${CMAKE_MATCH_1})
      set_tests_properties(${name} PROPERTIES LABELS store TIMEOUT 120)
    endif()
    set_tests_properties(${name} PROPERTIES SKIP_RETURN_CODE 77)
  endforeach()
endforeach()

# store.mariadb.fault.<case>: the MariaDB store through a relay that cuts the
# connection around a COMMIT, refuses it, or stalls it before or after the
# packet that takes the log counter's lock, or between an append's two
# round trips (tests/store/mariadb_faults.c).
add_executable(mariadb_faults ${CMAKE_CURRENT_LIST_DIR}/store/mariadb_faults.c)
target_include_directories(mariadb_faults PRIVATE ${CMAKE_CURRENT_LIST_DIR}/unit)
target_link_libraries(mariadb_faults PRIVATE hubu_store)
if(TARGET hubu_unit_tests)
  add_dependencies(hubu_unit_tests mariadb_faults)
endif()
foreach(case two_writers_log_positions_are_dense_in_commit_order lock_wait_timeout_is_rolled_back_and_retried commit_answer_lost_is_acknowledged_once commit_never_sent_is_retry_and_the_resend_is_stored_once
             database_away_answers_retry_at_once_and_recovers_by_itself fence_raise_leaves_no_lock_to_a_stalled_node
             row_landing_in_a_hole_before_the_fence_is_returned
             append_stalled_between_round_trips_lets_the_lock_go_within_the_idle_timeout)
  hubu_mariadb_test(NAME store.mariadb.fault.${case} LABELS store TIMEOUT 120 COMMAND mariadb_faults ${case})
  set_tests_properties(${HUBU_TEST_PREFIX}store.mariadb.fault.${case} PROPERTIES SKIP_RETURN_CODE 77)
endforeach()
