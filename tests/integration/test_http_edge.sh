#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# Bad and non-gRPC HTTP/2 requests against amaters-netd, sent by an
# independent HTTP/2 client (Debian's nghttp, with the dev client
# certificate): each gets a proper HTTP response or a specific gRPC status,
# and the daemon keeps serving.
# usage: test_http_edge.sh BUILD_DIR
set -euo pipefail
bin=$1
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; [ -f "$work/netd.log" ] && tail -20 "$work/netd.log"; exit 1; }

port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin/amaters-cli" certs init "$work/pki" >/dev/null
"$bin/amaters-netd" --listen "127.0.0.1:$port" --pki-dir "$work/pki" --log-level debug >"$work/netd.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do grep -q "listening on" "$work/netd.log" && break; sleep 0.1; done
grep -q "listening on" "$work/netd.log" || fail "daemon did not start"

url="https://127.0.0.1:$port"
tls=(--cert "$work/pki/client.pem" --key "$work/pki/client-key.pem")
passed=0 failed=0
# check NAME EXPECTED-REGEX nghttp-args...
check() {
  local name=$1 want=$2; shift 2
  local out
  out=$(timeout 10 nghttp ${NGHTTP_FLAGS:--nv} "${tls[@]}" "$@" 2>&1 || true)
  if grep -Eq "$want" <<<"$out"; then
    echo "ok   $name"; passed=$((passed+1))
  else
    echo "FAIL $name: expected /$want/"; echo "$out" | grep -E '^\[.*(recv|send) (HEADERS|RST_STREAM|GOAWAY)|^ *(:status|grpc-|content-type)' | head -20
    failed=$((failed+1))
  fi
}
printf '\0\0\0\0\3\x0a\x01x' >"$work/msg"          # one uncompressed QueryRequest{query_bytes:"x"}
printf '\1\0\0\0\3\x0a\x01x' >"$work/cmsg"         # the same with the compressed flag
printf 'hello' >"$work/text"

check "GET / -> 405"                 ':status: 405' "$url/"
check "POST text/plain -> 415"       ':status: 415' -d "$work/text" -H 'content-type: text/plain' "$url/amaters.v1.AmateRS/Execute"
# non-gRPC requests also get a text body that says why (browsers and HTTP tools show it)
check "GET / -> a text body"         'content-type: text/plain; charset=utf-8' "$url/"
NGHTTP_FLAGS=-v check "GET / -> the reason" '^405: method not allowed: gRPC requires POST' "$url/"
NGHTTP_FLAGS=-v check "POST text/plain -> the reason" 'This is a gRPC server \(amaters-net\)' -d "$work/text" -H 'content-type: text/plain' "$url/amaters.v1.AmateRS/Execute"
check "missing te -> 400 INTERNAL"   'grpc-status: 13' -d "$work/msg" -H 'content-type: application/grpc' "$url/amaters.v1.AmateRS/Execute"
check "bad grpc-timeout -> INTERNAL" 'grpc-status: 13' -d "$work/msg" -H 'content-type: application/grpc' -H 'te: trailers' -H 'grpc-timeout: 12parsecs' "$url/amaters.v1.AmateRS/Execute"
# the largest legal grpc-timeout (8 digits, hours: ~11,000 years) is a deadline that saturates, not a crash;
# several in a row, since a wrapped deadline once corrupted the recycled call struct a few calls later
for t in 99999999H 99999999M 2562048H 99999999S; do
  check "grpc-timeout $t -> OK"     'grpc-status: 0' -d "$work/msg" -H 'content-type: application/grpc' -H 'te: trailers' -H "grpc-timeout: $t" "$url/amaters.v1.AmateRS/Execute" "$url/amaters.v1.AmateRS/Execute"
done
check "grpc-timeout 0n -> DEADLINE_EXCEEDED" 'grpc-status: 4' -d "$work/msg" -H 'content-type: application/grpc' -H 'te: trailers' -H 'grpc-timeout: 0n' "$url/amaters.v1.AmateRS/Execute"
check "gzip encoding -> UNIMPLEMENTED" 'grpc-status: 12' -d "$work/msg" -H 'content-type: application/grpc' -H 'te: trailers' -H 'grpc-encoding: gzip' "$url/amaters.v1.AmateRS/Execute"
check "compressed flag -> INTERNAL"  'grpc-status: 13' -d "$work/cmsg" -H 'content-type: application/grpc' -H 'te: trailers' "$url/amaters.v1.AmateRS/Execute"
check "unknown method -> UNIMPLEMENTED" 'grpc-status: 12' -d "$work/msg" -H 'content-type: application/grpc' -H 'te: trailers' "$url/no.Such/Method"
check "good call -> OK"              'grpc-status: 0' -d "$work/msg" -H 'content-type: application/grpc+proto' -H 'te: trailers' "$url/amaters.v1.AmateRS/Execute"
# the daemon is still up and serving
kill -0 "$pid" || fail "daemon died"
out=$(timeout 10 "$bin/amaters-cli" --pki-dir "$work/pki" "$url" execute --data still-here) || fail "daemon stopped serving"
[ "$out" = "still-here" ] || fail "unexpected echo '$out'"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
