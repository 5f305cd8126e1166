#!/bin/sh
# SPDX-License-Identifier: MIT OR Apache-2.0
# interop.grpcxx_self: grpcxx_echo_server against grpcxx_client/grpcxx_bench
# (all grpc C++) over mTLS with a certtool PKI, plus the insecure mode.
# Validates the peers before they are used against our code.
# Usage: grpcxx_self.sh BINDIR MKCERTS
set -u
bin=$1
mkcerts=$2
. "$(dirname "$0")/lib.sh"
tmp=$(mktemp -d)
trap 'stop_server; rm -rf "$tmp"' EXIT INT TERM
sh "$mkcerts" "$tmp/pki" && sh "$mkcerts" "$tmp/other" other || { echo "mkcerts failed"; exit 1; }
P=$tmp/pki
O=$tmp/other

start_server "$tmp/srv.log" "$bin/grpcxx_echo_server" --listen 127.0.0.1:0 \
  --cert "$P/server.pem" --key "$P/server-key.pem" --ca "$P/ca.pem" || exit 1
grpcxx_peer_checks "$bin" "$SRV_PORT" "$P" "$O"
# --resume: the channels share a TLS session cache; grpc's server issues tickets, so they resume
j=$(timeout 60 "$bin/grpcxx_bench" $T $good --resume --connections 2 --duration 1 --warmup 0.2); rc=$?
echo "     bench --resume: $j"
e=$(json_num errors "$j"); k=$(json_num connects "$j"); n=$(json_num resumed "$j")
check "bench --resume: $n of $k connections resumed" [ "$rc" -eq 0 -a "${e:-x}" = 0 -a "${n:-0}" -gt 0 ]

stop_server; rc=$?
check "SIGTERM stops the server cleanly (rc=$rc)" [ "$rc" -eq 0 ]

start_server "$tmp/ins.log" "$bin/grpcxx_echo_server" --listen 127.0.0.1:0 --insecure || exit 1
cli() { timeout 20 "$bin/grpcxx_client" "$@"; }
out=$(cli --target "127.0.0.1:$SRV_PORT" --insecure --data plain); rc=$?
check "insecure unary echo" [ "$rc" -eq 0 -a "$out" = "plain" ]
cli --target "127.0.0.1:$SRV_PORT" --ca "$P/ca.pem" --cert "$P/client.pem" --key "$P/client-key.pem" --data x >/dev/null 2>&1; rc=$?
check "TLS client vs insecure server fails (rc=$rc)" [ "$rc" -eq 14 ]
stop_server

summary grpcxx_self
