#!/bin/sh
# SPDX-License-Identifier: MIT OR Apache-2.0
# interop.grpcgo_client / interop.quicgo_client: a Go peer (grpc-go over
# HTTP/2, or quic-go's http3 client over QUIC) as the client of amaters-netd
# over mutual TLS with a certtool PKI. The Go program prints its own checks;
# this script adds the server side (refusals logged, clean SIGTERM exit).
# Usage: go_vs_netd.sh NAME AMATERS-NETD GO-CLIENT MKCERTS
set -u
peer=$1
netd=$2
client=$3
mkcerts=$4
. "$(dirname "$0")/../lib.sh"
tmp=$(mktemp -d)
trap 'stop_server; rm -rf "$tmp"' EXIT INT TERM
sh "$mkcerts" "$tmp/pki" && sh "$mkcerts" "$tmp/other" other || { echo "mkcerts failed"; exit 1; }
P=$tmp/pki

start_server "$tmp/srv.log" "$netd" --listen 127.0.0.1:0 --transport both \
  --cert "$P/server.pem" --key "$P/server-key.pem" --ca "$P/ca.pem" || exit 1

timeout 120 "$client" -addr "127.0.0.1:$SRV_PORT" -pki "$P" -other "$tmp/other" >"$tmp/client.out" 2>&1
rc=$?
cat "$tmp/client.out"
pass=$((pass + $(grep -c '^ok ' "$tmp/client.out")))
fail=$((fail + $(grep -c '^FAIL ' "$tmp/client.out")))
check "$peer exited with its verdict (rc=$rc)" \
  sh -c '[ "$1" -eq 0 -a "$2" -eq 0 ] || [ "$1" -eq 1 -a "$2" -gt 0 ]' _ "$rc" "$fail"
check "server logged the refusal: no client certificate presented" \
  grep -q "refused: .*no client certificate presented" "$tmp/srv.log"
check "server logged the refusal: client certificate not issued by a trusted CA" \
  grep -q "refused: .*client certificate not issued by a trusted CA" "$tmp/srv.log"
stop_server; rc=$?
check "SIGTERM stops the server cleanly (rc=$rc)" [ "$rc" -eq 0 ]
[ "$fail" -ne 0 ] && { echo "--- server log"; tail -40 "$tmp/srv.log"; }
summary "$peer"
