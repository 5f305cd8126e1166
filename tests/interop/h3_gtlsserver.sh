#!/bin/sh
# SPDX-License-Identifier: MIT OR Apache-2.0
# interop.h3_gtlsserver: our HTTP/3 client (amaters-cli --transport h3)
# against Debian's ngtcp2 example server (gtlsserver, ngtcp2-server: an
# independent QUIC + HTTP/3 stack) that requests a client certificate
# (--verify-client). The QUIC + TLS handshake completes (ALPN h3, mutual
# TLS), the gRPC call reaches the server, and its non-gRPC answer (a file
# server's 404) is reported as a clear gRPC status, not a hang or a crash.
# Usage: h3_gtlsserver.sh AMATERS-CLI GTLSSERVER MKCERTS
set -u
cli=$1
gtlsserver=$2
mkcerts=$3
. "$(dirname "$0")/lib.sh"
tmp=$(mktemp -d)
GS_PID=
trap '[ -n "$GS_PID" ] && kill "$GS_PID" 2>/dev/null; rm -rf "$tmp"' EXIT INT TERM
P=$tmp/pki
sh "$mkcerts" "$P" h3gs >/dev/null 2>&1 || { echo "mkcerts failed"; exit 1; }
mkdir -p "$tmp/htdocs"
echo "not grpc" >"$tmp/htdocs/index.html"

# a free UDP port (gtlsserver needs one given)
port=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null)
[ -n "$port" ] || port=$((20000 + $$ % 20000))
"$gtlsserver" --verify-client --no-quic-dump -d "$tmp/htdocs" 127.0.0.1 "$port" \
  "$P/server-key.pem" "$P/server.pem" >"$tmp/gs.log" 2>&1 &
GS_PID=$!
sleep 0.3
kill -0 "$GS_PID" 2>/dev/null || { echo "gtlsserver did not start:"; cat "$tmp/gs.log"; exit 1; }

T="--transport h3 --ca $P/ca.pem --cert $P/client.pem --key $P/client-key.pem https://127.0.0.1:$port"
timeout 20 "$cli" $T --timeout 5000 health >"$tmp/health.out" 2>&1; rc=$?
check "health call over HTTP/3 returns (rc=$rc, not a timeout)" [ "$rc" -ne 0 -a "$rc" -ne 124 ]
# gtlsserver requires a client certificate (--verify-client): no handshake without ours
check "  ... the QUIC handshake completed with our client certificate" grep -q "QUIC handshake has completed" "$tmp/gs.log"
check "  ... ALPN h3" grep -q "Negotiated ALPN is h3" "$tmp/gs.log"
check "  ... the gRPC request reached the server" grep -q ":path: /grpc.health.v1.Health/Check" "$tmp/gs.log"
check "  ... its HTTP/3 answer (404) came back" grep -q "HTTP 404" "$tmp/health.out"
check "  ... reported as UNIMPLEMENTED (gRPC's mapping of HTTP 404), without grpc-status" \
  grep -q "UNIMPLEMENTED: HTTP 404.*without grpc-status" "$tmp/health.out"

# a server that is not there: a clear connect failure within the timeout
kill "$GS_PID" 2>/dev/null; wait "$GS_PID" 2>/dev/null; GS_PID=
timeout 20 "$cli" $T --timeout 3000 health >"$tmp/gone.out" 2>&1; rc=$?
check "no server: the call fails (rc=$rc) with UNAVAILABLE" grep -q "UNAVAILABLE" "$tmp/gone.out"

if [ "$fail" -ne 0 ]; then for f in "$tmp"/*.out "$tmp/gs.log"; do echo "--- $f"; tail -20 "$f"; done; fi
summary h3_gtlsserver
