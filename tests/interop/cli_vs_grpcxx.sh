#!/bin/sh
# SPDX-License-Identifier: MIT OR Apache-2.0
# interop.cli_vs_grpcxx: our amaters-cli (execute + bench) against the grpc
# C++ echo server over mTLS with a certtool PKI.
# Usage: cli_vs_grpcxx.sh AMATERS_CLI GRPCXX_ECHO_SERVER MKCERTS
set -u
cli=$1
server=$2
mkcerts=$3
. "$(dirname "$0")/lib.sh"
tmp=$(mktemp -d)
trap 'stop_server; rm -rf "$tmp"' EXIT INT TERM
sh "$mkcerts" "$tmp/pki" && sh "$mkcerts" "$tmp/other" other || { echo "mkcerts failed"; exit 1; }
P=$tmp/pki
O=$tmp/other

start_server "$tmp/srv.log" "$server" --listen 127.0.0.1:0 \
  --cert "$P/server.pem" --key "$P/server-key.pem" --ca "$P/ca.pem" || exit 1
url=https://localhost:$SRV_PORT
good="--ca $P/ca.pem --cert $P/client.pem --key $P/client-key.pem"

out=$(timeout 20 "$cli" $good "$url" execute --data hello); rc=$?
check "cli execute echo (rc=$rc, out=$out)" [ "$rc" -eq 0 -a "$out" = "hello" ]
out=$(timeout 20 "$cli" $good "https://127.0.0.1:$SRV_PORT" execute --data by-ip); rc=$?
check "cli execute by IP address (rc=$rc)" [ "$rc" -eq 0 -a "$out" = "by-ip" ]
timeout 20 "$cli" --ca "$O/ca.pem" --cert "$P/client.pem" --key "$P/client-key.pem" "$url" \
  execute --data x >/dev/null 2>&1; rc=$?
check "cli rejects a server from an untrusted CA -> UNAVAILABLE, exit 69: no connection (rc=$rc)" [ "$rc" -eq 69 ]
timeout 20 "$cli" --ca "$P/ca.pem" --cert "$O/client.pem" --key "$O/client-key.pem" "$url" \
  execute --data x >/dev/null 2>&1; rc=$?
check "server rejects the cli's cert from another CA -> UNAVAILABLE, 14 or 69 (rc=$rc)" [ "$rc" -eq 14 -o "$rc" -eq 69 ]

for mode in unary stream; do
  j=$(timeout 60 "$cli" $good "$url" bench --connections 2 --inflight 8 --duration 1 --warmup 0.2 --size 100 \
        --mode $mode --json); rc=$?
  echo "     cli bench $mode: $j"
  e=$(json_num errors "$j"); c=$(json_num calls "$j")
  check "cli bench --mode $mode (no errors, calls > 0)" [ "$rc" -eq 0 -a "${e:-x}" = 0 -a "${c:-0}" -gt 0 ]
done
kill -0 "$SRV_PID" 2>/dev/null
check "grpc C++ server still up" [ $? -eq 0 ]
summary cli_vs_grpcxx
