#!/usr/bin/env bash
# Makes a self-signed development certificate for hubud's TLS listener:
#   DIR/dev-cert.pem and DIR/dev-key.pem (EC P-256, CN=localhost,
#   SAN DNS:localhost,IP:127.0.0.1, 365 days). Idempotent: existing files are kept.
# Usage: scripts/gen-dev-cert.sh DIR      (`make run` calls it with DIR=data)
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
dir=$1
cert=$dir/dev-cert.pem
key=$dir/dev-key.pem

if [ -e "$cert" ] && [ -e "$key" ]; then
  echo "gen-dev-cert: $cert and $key already exist, kept"
  exit 0
fi
if [ -e "$cert" ] || [ -e "$key" ]; then
  # Half a pair is useless (and a lone cert cannot be matched to a new key): start over.
  echo "gen-dev-cert: only one of $cert and $key exists, making a new pair"
fi

mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.dev-cert.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# The key is created under umask 077, so it is never readable by others, not even briefly.
(
  umask 077
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 -days 365 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$tmp/dev-key.pem" -out "$tmp/dev-cert.pem" 2>"$tmp/openssl.log"
) || {
  cat "$tmp/openssl.log" >&2
  echo "gen-dev-cert: openssl failed" >&2
  exit 1
}
chmod 600 "$tmp/dev-key.pem"
chmod 644 "$tmp/dev-cert.pem"
mv -f "$tmp/dev-key.pem" "$key"
mv -f "$tmp/dev-cert.pem" "$cert"
echo "gen-dev-cert: made $cert and $key (self-signed EC P-256, CN=localhost, 365 days)"
