#!/usr/bin/env bash
# Installs the Debian packages HubuIM builds and tests with, only those missing.
# Idempotent: a machine that has them all runs no apt-get at all.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git python3
  libuv1-dev
  libluajit2-5.1-dev luajit2 lua-cjson
  libprotobuf-c-dev protobuf-c-compiler
  libssl-dev openssl
  libsqlite3-dev sqlite3
  libmariadb-dev mariadb-server
  libhiredis-dev redis-server
  libjansson-dev
  nginx-light libnginx-mod-stream
  chromium nodejs
  uthash-dev
  libhttp-parser-dev
  libcurl4-openssl-dev
  libwslay-dev
  lua-busted
  clang libclang-rt-14-dev clang-format
  valgrind
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

# npm comes with some Node.js packages (NodeSource's) and is its own package
# in Debian's, which conflicts with the former: ask for it only when missing.
if ! command -v npm >/dev/null 2>&1; then missing+=(npm); fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
