#!/bin/sh
# SPDX-License-Identifier: MIT OR Apache-2.0
# interop.grpcxx_vs_netd: the grpc C++ client and benchmark (grpcxx_client,
# grpcxx_bench) against OUR daemon over mTLS, with the daemon's own dev PKI.
# Usage: grpcxx_vs_netd.sh AMATERS_NETD BINDIR MKCERTS
set -u
netd=$1
bin=$2
mkcerts=$3
. "$(dirname "$0")/lib.sh"
tmp=$(mktemp -d)
trap 'stop_server; rm -rf "$tmp"' EXIT INT TERM
sh "$mkcerts" "$tmp/other" other || { echo "mkcerts failed"; exit 1; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
       echo $((20000 + $$ % 20000)))
start_server "$tmp/netd.log" "$netd" --listen "127.0.0.1:$port" --pki-dir "$tmp/pki" || exit 1
check "daemon reports the requested port ($SRV_PORT)" [ "$SRV_PORT" = "$port" ]

grpcxx_peer_checks "$bin" "$SRV_PORT" "$tmp/pki" "$tmp/other"

kill -0 "$SRV_PID" 2>/dev/null
check "daemon still up" [ $? -eq 0 ]
stop_server; rc=$?
check "SIGTERM stops the daemon cleanly (rc=$rc)" [ "$rc" -eq 0 ]
[ "$fail" -eq 0 ] || { echo "---- daemon output ----"; tail -n 30 "$tmp/netd.log"; }
summary grpcxx_vs_netd
