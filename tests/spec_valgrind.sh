#!/bin/sh
# spec_valgrind.sh — runs one busted spec with every hubud it starts under
# valgrind, then fails unless the spec passed and every hubud's report says
# 0 errors and nothing definitely lost. hubud runs tens of times slower
# there: the helpers' waits are 5 times longer (HUBU_SPEC_TIME_SCALE) and
# the plugin budget is 2 s unless the spec sets one. Used by tests/spec.cmake.
#   spec_valgrind.sh VALGRIND HUBUD LUAJIT BUSTED SPEC_FILE
set -u
VALGRIND=$1 HUBUD_REAL=$2 LUAJIT=$3 BUSTED=$4 SPEC=$5
work=$(mktemp -d /tmp/hubu-spec-vg.XXXXXX) || exit 1
trap 'rm -rf "$work"' EXIT
cat > "$work/hubud" <<WRAP
#!/bin/sh
exec "$VALGRIND" --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 \
  --log-file="$work/vg.%p" "$HUBUD_REAL" --plugin-budget-ms 2000 "\$@"
WRAP
chmod +x "$work/hubud"
HUBUD="$work/hubud" HUBU_SPEC_TIME_SCALE=5 "$LUAJIT" "$BUSTED" --output=TAP "$SPEC"
status=$?
runs=0 bad=0
for log in "$work"/vg.*; do
  [ -e "$log" ] || continue
  runs=$((runs + 1))
  if ! grep -q 'ERROR SUMMARY: 0 errors' "$log" || grep -q 'definitely lost: [1-9]' "$log"; then
    bad=$((bad + 1))
    echo "--- valgrind found a problem: $log"
    cat "$log"
  fi
done
echo "# hubud runs under valgrind: $runs, with errors or leaks: $bad"
[ "$runs" -gt 0 ] || { echo "no hubud ran under valgrind"; exit 1; }
[ "$status" -eq 0 ] && [ "$bad" -eq 0 ]
