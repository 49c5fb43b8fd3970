#!/usr/bin/env bash
# format_check.sh ROOT — every C file the repository tracks is formatted as
# ROOT/.clang-format says (clang-format --dry-run --Werror). Prints the files
# that differ and exits 1; exits 0 when all match. `clang-format -i FILE`
# fixes one.
set -u
root=${1:?usage: format_check.sh ROOT}
cd "$root" || exit 2
command -v clang-format >/dev/null || { echo "clang-format is not installed (scripts/install-deps.sh installs it)"; exit 2; }
bad=0
while IFS= read -r f; do
  if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
    echo "not formatted: $f"
    bad=$((bad + 1))
  fi
done < <(git ls-files '*.c' '*.h' 2>/dev/null || find runtime client tools tests examples -name '*.[ch]')
echo "$bad file(s) differ from .clang-format"
[ "$bad" -eq 0 ]
