#!/usr/bin/env bash
# ctest-failures.sh — after a failed ctest run, what each failed test printed,
# short enough to read at the end of a long log.
#
#   scripts/ctest-failures.sh BUILD_DIR [TAIL_LINES]
#
# Takes the failed tests from BUILD_DIR/Testing/Temporary/LastTestsFailed.log
# and their output from LastTest.log (ctest writes every test's output
# there), and prints for each its name, the lines that name a failure
# (": FAIL ", "not ok", sanitizer and valgrind reports, "Error"), at most 40
# of them, then its last TAIL_LINES lines (default 30). `make test` runs it
# when ctest fails, so the end of the log says what failed and why, not only
# which test.
set -euo pipefail
dir=${1:?usage: $0 BUILD_DIR [TAIL_LINES]}
tail_lines=${2:-30}
log=$dir/Testing/Temporary/LastTest.log
failed=$dir/Testing/Temporary/LastTestsFailed.log
if [ ! -r "$log" ] || [ ! -r "$failed" ]; then
  echo "ctest-failures: no $log or $failed" >&2
  exit 0
fi
awk -v tail_lines="$tail_lines" '
  FNR == NR { sub(/^[0-9]+:/, ""); want[$0] = 1; next } # the failed tests, by name
  function flush_test(   i, start, shown) {
    if (name == "" || !(name in want)) return
    printf "\n==== %s\n", name
    shown = 0
    for (i = 1; i <= n && shown < 40; i++)
      if (out[i] ~ /: FAIL |^not ok|ERROR: |runtime error:|definitely lost|Invalid (read|write)|Error|error:/) {
        print "  | " out[i]; shown++
      }
    if (shown) print "  ---- last lines:"
    start = n - tail_lines + 1; if (start < 1) start = 1
    for (i = start; i <= n; i++) print "  | " out[i]
  }
  /^[0-9]+\/[0-9]+ Testing: / { flush_test(); name = $0; sub(/^[0-9]+\/[0-9]+ Testing: /, "", name); n = 0; in_out = 0; next }
  /^Output:$/ { in_out = 1; getline; next }
  /^<end of output>$/ { in_out = 0; next }
  in_out { out[++n] = $0; next }
  END { flush_test() }
' "$failed" "$log"
