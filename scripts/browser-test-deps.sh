#!/bin/sh
# browser-test-deps.sh DIR — installs the browser test's npm packages
# (tests/browser/package.json and its package-lock.json) into DIR/node_modules
# with `npm ci`. Idempotent: when DIR already holds an install of the same
# lock file it does nothing, so ctest's set-up step costs nothing after the
# first run. Nothing is downloaded besides the locked packages (no browser:
# the test drives Debian's /usr/bin/chromium).
set -eu
src=$(cd "$(dirname "$0")/../tests/browser" && pwd)
dir=${1:?usage: browser-test-deps.sh DIR}
stamp="$dir/node_modules/.hubu-package-lock.json"
if [ -f "$stamp" ] && cmp -s "$src/package-lock.json" "$stamp"; then
  exit 0
fi
command -v npm >/dev/null 2>&1 || { echo "browser-test-deps: npm not found (scripts/install-deps.sh installs it)" >&2; exit 1; }
mkdir -p "$dir"
cp "$src/package.json" "$src/package-lock.json" "$dir/"
cd "$dir"
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
cp "$src/package-lock.json" "$stamp"
echo "browser-test-deps: installed $(ls node_modules | tr '\n' ' ')in $dir/node_modules"
