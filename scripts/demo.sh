#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# Builds amaters-net and runs the demo: amaters-netd with its embedded
# defaults (127.0.0.1:7878, mutual TLS with a dev PKI created on first use,
# echo handler) and one amaters-cli round trip.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh build-demo -DCMAKE_BUILD_TYPE=Release -DAMN_BUILD_TESTS=OFF >/dev/null
log=$(mktemp)
build-demo/amaters-netd >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 100); do grep -q "listening on" "$log" && break; sleep 0.1; done
cat "$log"
echo "+ amaters-cli https://localhost:7878 execute --data hello"
build-demo/amaters-cli https://localhost:7878 execute --data hello
echo
echo "+ amaters-cli --transport h3 https://localhost:7878 execute --data hello-over-quic"
build-demo/amaters-cli --transport h3 https://localhost:7878 execute --data hello-over-quic
echo
kill -TERM $pid
wait $pid
echo "demo: round trips over mutual TLS (HTTP/2 and HTTP/3) done; amaters-netd exited cleanly"
