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
echo

# Revocation: a throw-away PKI, a second client certificate issued and revoked;
# the daemon ([tls] crl_path, here from the environment) refuses it, not the others.
pki=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$log" "$pki"' EXIT
echo "+ amaters-cli certs init \$PKI; certs issue mallory --spiffe spiffe://amaters/client/mallory; certs revoke mallory.pem"
build-demo/amaters-cli certs init "$pki" >/dev/null
build-demo/amaters-cli certs issue mallory --spiffe spiffe://amaters/client/mallory --pki-dir "$pki"
build-demo/amaters-cli certs revoke "$pki/mallory.pem" --pki-dir "$pki"
AMATERS_NET_TLS_CRL_PATH=$pki/crl.pem build-demo/amaters-netd --pki-dir "$pki" --listen 127.0.0.1:7879 >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do grep -q "listening on" "$log" && break; sleep 0.1; done
echo "+ amaters-cli https://localhost:7879 (the revoked certificate) execute --data hello"
build-demo/amaters-cli https://localhost:7879 --ca "$pki/ca.pem" --cert "$pki/mallory.pem" --key "$pki/mallory-key.pem" \
  execute --data hello && { echo "demo: the revoked client was NOT refused"; exit 1; } || true
echo "+ amaters-cli https://localhost:7879 (the other client) execute --data hello"
build-demo/amaters-cli https://localhost:7879 --pki-dir "$pki" execute --data hello
echo
grep "revoked" "$log"
kill -TERM $pid
wait $pid
echo "demo: the revoked client was refused during the TLS handshake, the other one served"
