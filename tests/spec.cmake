# spec.cmake — the busted specs of spec/*_spec.lua, run on LuaJIT against a
# real hubud, with real clients driven through LuaJIT FFI and
# libhubu-client's blocking face (client/hubu_sync.h, in the shared library
# hubu_client_shared). Included by tests.cmake. Each spec/<name>_spec.lua
# becomes the ctest test ${HUBU_TEST_PREFIX}spec.<name>, run from the source
# tree (spec/helpers/ are found there) with the paths of this tree's binaries
# in the environment.
#
#   cmake --build <tree> --target hubu_spec_deps && (cd <tree> && ctest -L spec)
#
# Not registered in the sanitizer tree (HUBU_SANITIZE ON): its shared library
# is ASan-instrumented and loading it into an uninstrumented luajit would need
# LD_PRELOAD of libasan (and ASan then reports LuaJIT's own allocations). The
# C code under the specs is covered by ASan through the client tests instead.
# Skipped with a message when luajit or busted is not installed.

if(HUBU_SANITIZE)
  return()
endif()

find_program(HUBU_LUAJIT luajit)
find_program(HUBU_BUSTED busted)
if(NOT HUBU_LUAJIT OR NOT HUBU_BUSTED OR NOT TARGET hubu_client_shared)
  message(STATUS "spec tests skipped: need luajit, busted and the hubu_client_shared target")
  return()
endif()

# busted's launcher names the interpreter on its #! line; run it on LuaJIT.
execute_process(COMMAND ${HUBU_LUAJIT} ${HUBU_BUSTED} --version
                RESULT_VARIABLE busted_status OUTPUT_VARIABLE busted_version ERROR_QUIET
                OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT busted_status EQUAL 0)
  message(STATUS "spec tests skipped: `${HUBU_LUAJIT} ${HUBU_BUSTED} --version` failed")
  return()
endif()
message(STATUS "spec tests: busted ${busted_version} on ${HUBU_LUAJIT}")

# Everything a spec run needs, built by one target.
add_custom_target(hubu_spec_deps)
add_dependencies(hubu_spec_deps hubud hubuctl hubu_client_shared hubu_scratch)

set(HUBU_SPEC_DIR ${CMAKE_SOURCE_DIR}/spec)
file(GLOB HUBU_SPEC_FILES CONFIGURE_DEPENDS ${HUBU_SPEC_DIR}/*_spec.lua)
foreach(spec_file IN LISTS HUBU_SPEC_FILES)
  get_filename_component(spec_stem ${spec_file} NAME_WE)
  string(REGEX REPLACE "_spec$" "" spec_name ${spec_stem})
  set(name ${HUBU_TEST_PREFIX}spec.${spec_name})
  add_test(NAME ${name}
           COMMAND ${HUBU_LUAJIT} ${HUBU_BUSTED} --output=TAP ${spec_file}
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(${name} PROPERTIES
    LABELS spec
    TIMEOUT 120
    ENVIRONMENT "HUBUD=$<TARGET_FILE:hubud>;HUBUCTL=$<TARGET_FILE:hubuctl>;HUBU_CLIENT_LIB=$<TARGET_FILE:hubu_client_shared>;HUBU_SCRATCH_LIB=$<TARGET_FILE:hubu_scratch>")
endforeach()

# The plugin host under valgrind: hooks of every kind, im calls that wait for
# the store, published metrics and reloads, with every hubud the specs start
# run by valgrind. Not the budget specs: valgrind delivers the watchdog's
# signal to a spinning thread late (0.1-0.7 s), past what they allow.
find_program(HUBU_SPEC_VALGRIND valgrind)
if(HUBU_SPEC_VALGRIND)
  foreach(spec_name hooks metrics)
    set(name ${HUBU_TEST_PREFIX}spec.${spec_name}_under_valgrind)
    add_test(NAME ${name}
             COMMAND sh ${CMAKE_SOURCE_DIR}/tests/spec_valgrind.sh ${HUBU_SPEC_VALGRIND} $<TARGET_FILE:hubud>
                     ${HUBU_LUAJIT} ${HUBU_BUSTED} ${HUBU_SPEC_DIR}/${spec_name}_spec.lua
             WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
    set_tests_properties(${name} PROPERTIES
      LABELS "spec;valgrind"
      TIMEOUT 600
      ENVIRONMENT "HUBUCTL=$<TARGET_FILE:hubuctl>;HUBU_CLIENT_LIB=$<TARGET_FILE:hubu_client_shared>")
  endforeach()
endif()
