#!/bin/sh
# SPDX-License-Identifier: MIT OR Apache-2.0
# interop.grpcgo_server / interop.quicgo_server: our amaters-cli against a Go
# server implementing the echo contract of tests/interop/go/src/amninterop/echo
# (grpc-go over HTTP/2, or gRPC written over quic-go's HTTP/3 server), over
# mutual TLS with a certtool PKI.
# Usage: cli_vs_go.sh NAME AMATERS-CLI GO-SERVER MKCERTS h2|h3
set -u
peer=$1
cli=$2
server=$3
mkcerts=$4
transport=$5
. "$(dirname "$0")/../lib.sh"
tmp=$(mktemp -d)
trap 'stop_server; rm -rf "$tmp"' EXIT INT TERM
sh "$mkcerts" "$tmp/pki" && sh "$mkcerts" "$tmp/other" other || { echo "mkcerts failed"; exit 1; }
P=$tmp/pki
O=$tmp/other

start_server "$tmp/srv.log" "$server" -listen 127.0.0.1:0 \
  -cert "$P/server.pem" -key "$P/server-key.pem" -ca "$P/ca.pem" || exit 1
url=https://localhost:$SRV_PORT
good="--transport $transport --ca $P/ca.pem --cert $P/client.pem --key $P/client-key.pem"
# run NAME ARGS...: amaters-cli ARGS, stdout in $tmp/NAME.out, stderr in $tmp/NAME.err, status in $rc
run() { n=$1; shift; timeout 30 "$cli" $good "$@" >"$tmp/$n.out" 2>"$tmp/$n.err"; rc=$?; }
out() { cat "$tmp/$1.out"; }
err_has() { grep -q -- "$2" "$tmp/$1.err"; }
out_has() { grep -q -- "$2" "$tmp/$1.out"; }

run hello "$url" execute --data hello
check "execute echo (rc=$rc)" [ "$rc" -eq 0 -a "$(out hello)" = "hello" ]
run byip "https://127.0.0.1:$SRV_PORT" execute --data by-ip
check "execute by IP address (rc=$rc)" [ "$rc" -eq 0 -a "$(out byip)" = "by-ip" ]
run json "$url" --metadata x-echo-a=b1 --metadata x-other=no execute --data js --json
check "execute --json: OK, result and server_proof ('go proof') decoded (rc=$rc)" \
  sh -c '[ "$1" -eq 0 ] && grep -q "\"result\":\"js\"" "$2" && grep -q "\"proof_hex\":\"676f2070726f6f66\"" "$2"' _ "$rc" "$tmp/json.out"
check "  ... x-echo-a came back as trailing metadata, x-other did not" \
  sh -c 'grep -q "\"trailing_metadata\":{[^}]*\"x-echo-a\":\"b1\"" "$1" && ! grep -q "x-other" "$1"' _ "$tmp/json.out"
head -c 4194304 /dev/urandom >"$tmp/big.in"
run big "$url" execute --data-file "$tmp/big.in"
check "execute 4 MiB of random bytes, echoed byte for byte (rc=$rc)" sh -c '[ "$1" -eq 0 ] && cmp -s "$2" "$3"' _ "$rc" "$tmp/big.in" "$tmp/big.out"
run empty "$url" execute --data ""
check "execute an empty query (rc=$rc)" [ "$rc" -eq 0 -a ! -s "$tmp/empty.out" ]

printf 'one\ntwo\nthree\nfour\nfive\n' >"$tmp/lines"
timeout 30 "$cli" $good "$url" stream <"$tmp/lines" >"$tmp/stream.out" 2>"$tmp/stream.err"; rc=$?
check "stream: 5 lines echoed in order (rc=$rc)" sh -c '[ "$1" -eq 0 ] && cmp -s "$2" "$3"' _ "$rc" "$tmp/lines" "$tmp/stream.out"
printf 'first\nstatus:10:aborted mid-stream\nnever\n' | timeout 30 "$cli" $good "$url" stream >"$tmp/smid.out" 2>"$tmp/smid.err"; rc=$?
check "stream ended by the server with ABORTED after one response (rc=$rc)" \
  sh -c '[ "$1" -eq 10 ] && [ "$(cat "$2")" = first ] && grep -q "ABORTED: aborted mid-stream" "$3"' _ "$rc" "$tmp/smid.out" "$tmp/smid.err"

run h_all "$url" health
check "health -> SERVING (rc=$rc)" [ "$rc" -eq 0 -a "$(out h_all)" = SERVING ]
run h_svc "$url" health --service amaters.v1.AmateRS
check "health --service amaters.v1.AmateRS -> SERVING (rc=$rc)" [ "$rc" -eq 0 -a "$(out h_svc)" = SERVING ]
run h_down "$url" health --service down.service
check "health --service down.service -> NOT_SERVING, exit 1 (rc=$rc)" [ "$rc" -eq 1 -a "$(out h_down)" = NOT_SERVING ]
run h_none "$url" health --service no.such.Service
check "health of an unknown service -> NOT_FOUND (rc=$rc)" sh -c '[ "$1" -eq 5 ] && grep -q NOT_FOUND "$2"' _ "$rc" "$tmp/h_none.err"

run st7 "$url" execute --data "status:7:go says no"
check "server status PERMISSION_DENIED propagates: exit 7 and its message (rc=$rc)" \
  sh -c '[ "$1" -eq 7 ] && grep -q "PERMISSION_DENIED: go says no" "$2"' _ "$rc" "$tmp/st7.err"
run st13 "$url" execute --data "status:13:caf$(printf '\303\251') 100%"
check "INTERNAL with a non-ASCII, percent-encoded grpc-message decoded (rc=$rc)" \
  sh -c '[ "$1" -eq 13 ] && grep -q "INTERNAL: caf$(printf "\303\251") 100%" "$2"' _ "$rc" "$tmp/st13.err"
run st16 "$url" execute --data "status:16:"
check "UNAUTHENTICATED with no message (rc=$rc)" sh -c '[ "$1" -eq 16 ] && grep -q UNAUTHENTICATED "$2"' _ "$rc" "$tmp/st16.err"

run dl "$url" --timeout 5000 execute --data deadline
check "the --timeout reaches the server as the call's deadline (rc=$rc, $(out dl) ms left)" \
  sh -c '[ "$1" -eq 0 ] && [ "$2" -gt 3000 ] && [ "$2" -le 5000 ]' _ "$rc" "$(out dl | tr -cd 0-9)"
run dlnone "$url" --timeout 0 execute --data deadline
check "--timeout 0: no deadline sent (rc=$rc, $(out dlnone))" [ "$rc" -eq 0 -a "$(out dlnone)" = none ]
run slow "$url" --timeout 300 execute --data sleep:5000
check "a 300 ms deadline on a 5 s call -> DEADLINE_EXCEEDED (rc=$rc)" [ "$rc" -eq 4 ]

# refused: ARGS... with their own --ca/--cert/--key, status in $rc
refused() { timeout 30 "$cli" --transport "$transport" "$@" execute --data x >/dev/null 2>&1; rc=$?; }
refused --ca "$O/ca.pem" --cert "$P/client.pem" --key "$P/client-key.pem" "$url"
# no connection was ever made: amaters-cli exits 69 (EX_UNAVAILABLE) for its UNAVAILABLE
check "server from an untrusted CA refused -> UNAVAILABLE, exit 69 (rc=$rc)" [ "$rc" -eq 69 ]
refused --ca "$P/ca.pem" --cert "$O/client.pem" --key "$O/client-key.pem" "$url"
# (TLS 1.3: the client may have counted the connection before the server's alert: 14 then)
check "our client certificate from another CA refused by the server -> UNAVAILABLE (rc=$rc)" [ "$rc" -eq 14 -o "$rc" -eq 69 ]

for mode in unary stream; do
  j=$(timeout 60 "$cli" $good "$url" bench --connections 2 --inflight 8 --duration 0.5 --warmup 0.1 --size 100 \
        --mode $mode --json); rc=$?
  e=$(json_num errors "$j"); c=$(json_num calls "$j")
  check "bench --mode $mode (no errors, ${c:-0} calls)" [ "$rc" -eq 0 -a "${e:-x}" = 0 -a "${c:-0}" -gt 0 ]
done

stop_server; rc=$?
check "Go server stops cleanly on SIGTERM (rc=$rc)" [ "$rc" -eq 0 ]
if [ "$fail" -ne 0 ]; then
  for f in "$tmp"/*.err; do [ -s "$f" ] && { echo "--- $f"; tail -5 "$f"; }; done
  echo "--- server log"; tail -40 "$tmp/srv.log"
fi
summary "$peer"
