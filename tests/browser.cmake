# browser.cmake — the chat page (web/) in headless Chromium against a real
# hubud: tests/browser/chat_test.js, driven by playwright-core from npm
# (tests/browser/package-lock.json) on Debian's /usr/bin/chromium; no browser
# is downloaded. The fixture's set-up test, browser.deps, runs
# scripts/browser-test-deps.sh, which `npm ci`s the packages into
# <tree>/browser-test/node_modules once per lock file.
#
#   cmake --build <tree> --target hubud && (cd <tree> && ctest -L browser)
#
# Plain tree only: the sanitizer tree (HUBU_SANITIZE, prefix asan.) would
# run the same JavaScript against a slower hubud and prove nothing more about
# the page. Skipped with a message when node, npm or chromium is missing
# (scripts/install-deps.sh installs them).

if(HUBU_SANITIZE OR NOT HUBU_TEST_PREFIX STREQUAL "")
  return()
endif()

find_program(HUBU_NODE node)
find_program(HUBU_NPM npm)
find_program(HUBU_CHROMIUM chromium PATHS /usr/bin NO_DEFAULT_PATH)
if(NOT HUBU_NODE OR NOT HUBU_NPM OR NOT HUBU_CHROMIUM)
  message(STATUS "browser test skipped: needs node, npm and /usr/bin/chromium (scripts/install-deps.sh)")
  return()
endif()

set(HUBU_BROWSER_DIR ${CMAKE_BINARY_DIR}/browser-test)
file(MAKE_DIRECTORY ${HUBU_BROWSER_DIR})
add_test(NAME browser.deps
         COMMAND sh ${CMAKE_SOURCE_DIR}/scripts/browser-test-deps.sh ${HUBU_BROWSER_DIR})
set_tests_properties(browser.deps PROPERTIES
  LABELS browser
  TIMEOUT 300
  FIXTURES_SETUP hubu_browser_deps)

add_test(NAME browser.chat_page_two_users_reload_and_outage_every_message_once_in_order
         COMMAND ${HUBU_NODE} ${CMAKE_SOURCE_DIR}/tests/browser/chat_test.js
         WORKING_DIRECTORY ${HUBU_BROWSER_DIR})
set_tests_properties(browser.chat_page_two_users_reload_and_outage_every_message_once_in_order PROPERTIES
  LABELS browser
  TIMEOUT 120
  FIXTURES_REQUIRED hubu_browser_deps
  ENVIRONMENT "HUBUD=$<TARGET_FILE:hubud>;HUBU_SOURCE=${CMAKE_SOURCE_DIR};HUBU_TEST_OUT=${HUBU_BROWSER_DIR};NODE_PATH=${HUBU_BROWSER_DIR}/node_modules;HUBU_CHROMIUM=${HUBU_CHROMIUM}")
