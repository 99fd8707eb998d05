#!/usr/bin/env bash
# Smoke test of the session demo server as users start it: two `cargo run`
# processes on one data directory (and one cookie-session process), driven
# over plain HTTP/1.1 with bash's /dev/tcp (no client to install).
# Usage: bash engine/session/smoke.sh   (from the repository root)
set -euo pipefail

cargo build -q -p carboy-session --example session_server
exe=target/debug/examples/session_server
scratch=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$scratch"
}
trap cleanup EXIT

# start NAME ARGS...: starts a server, sets $url_NAME from its first line.
start() {
  local name=$1; shift
  "$exe" --listen 127.0.0.1:0 "$@" >"$scratch/$name.out" 2>"$scratch/$name.err" &
  pids+=($!)
  for _ in $(seq 1 200); do
    if read -r first <"$scratch/$name.out" 2>/dev/null && [ -n "${first:-}" ]; then break; fi
    sleep 0.05
  done
  case "${first:-}" in
    "listening on http://"*) printf -v "url_$name" '%s' "${first#listening on http://}" ;;
    *) echo "smoke: $name did not print its listening line: ${first:-<nothing>}"; cat "$scratch/$name.err"; exit 1 ;;
  esac
}

# http HOSTPORT METHOD PATH [COOKIE]: prints the response (headers + body).
http() {
  local host=${1%:*} port=${1##*:}
  exec 3<>"/dev/tcp/$host/$port"
  printf '%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nContent-Length: 0\r\n%s\r\n' \
    "$2" "$3" "$1" "${4:+Cookie: $4$'\r\n'}" >&3
  tr -d '\r' <&3
  exec 3>&-
}
body() { sed '1,/^$/d'; }
cookie_of() { grep -i '^set-cookie:' | head -1 | sed -e 's/^[Ss]et-[Cc]ookie: //' -e 's/;.*//'; }
expect() { if [ "$1" != "$2" ]; then echo "smoke: $3: expected '$2', got '$1'"; exit 1; fi; }

secret="smoke-test-secret-of-enough-bytes"
start a --data-dir "$scratch/data" --secret "$secret"
start b --data-dir "$scratch/data" --secret "$secret"
health=$(http "$url_a" GET /health)
expect "$(echo "$health" | body)" ok "/health body"
expect "$(echo "$health" | grep -ci '^set-cookie:' || true)" 0 "/health sets no cookie"
first=$(http "$url_a" GET /count)
expect "$(echo "$first" | body)" 1 "first /count"
c=$(echo "$first" | cookie_of)
expect "$(http "$url_b" GET /count "$c" | body)" 2 "/count on the other server"
login=$(http "$url_a" POST /login "$c")
expect "$(echo "$login" | body)" 2 "/login keeps the count"
c2=$(echo "$login" | cookie_of)
expect "$(http "$url_b" GET /count "$c" | body)" 1 "the pre-login cookie is a fresh session"
expect "$(http "$url_b" GET /count "$c2" | body)" 3 "the new id carries the data"
http "$url_a" POST /logout "$c2" | grep -qi '^set-cookie:.*Max-Age=0' || { echo "smoke: /logout sent no expiring cookie"; exit 1; }
expect "$(http "$url_b" GET /count "$c2" | body)" 1 "after logout the old cookie is a fresh session"

start k --type cookie --secret "$secret"
k1=$(http "$url_k" GET /count | cookie_of)
expect "$(http "$url_k" GET /count "$k1" | body)" 2 "cookie session /count"
# The network types are registered and --url reaches the backend: with no
# server on the port, the start fails at once naming it (no server needed).
for t in "redis redis://127.0.0.1:1/0" "memcached 127.0.0.1:1"; do
  set -- $t
  if "$exe" --listen 127.0.0.1:0 --type "$1" --url "$2" >"$scratch/$1.out" 2>"$scratch/$1.err"; then
    echo "smoke: --type $1 with no server started anyway"; exit 1
  fi
  grep -q "127.0.0.1:1" "$scratch/$1.err" || { echo "smoke: --type $1: the error does not name the server:"; cat "$scratch/$1.err"; exit 1; }
done

echo "session smoke: ok (file: two processes on one data dir; cookie; redis and memcached flags)"
