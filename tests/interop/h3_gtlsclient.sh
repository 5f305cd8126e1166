#!/bin/sh
# interop.h3_gtlsclient: Debian's ngtcp2 example client (gtlsclient, ngtcp2 +
# nghttp3 + GnuTLS, an independent HTTP/3 stack) against amaters-netd
# serving HTTP/2 + HTTP/3 with its development PKI:
#   - with the dev client certificate: verified mutual TLS over QUIC, ALPN h3,
#     and a proper HTTP/3 answer to non-gRPC requests (GET -> 405, POST
#     without application/grpc -> 415, both carrying grpc-status)
#   - without a certificate / with one from another CA: refused in the
#     handshake (TLS alert in CONNECTION_CLOSE), one clear server log line
#   - HTTP/2 responses advertise the QUIC port (alt-svc), checked with nghttp
# Usage: h3_gtlsclient.sh AMATERS-NETD GTLSCLIENT MKCERTS
set -u
netd=$1
gtls=$2
mkcerts=$3
. "$(dirname "$0")/lib.sh"
tmp=$(mktemp -d)
trap 'stop_server; rm -rf "$tmp"' EXIT INT TERM
P=$tmp/pki

start_server "$tmp/srv.log" "$netd" --listen 127.0.0.1:0 --pki-dir "$P" --transport both --log-level debug || exit 1
check "server listens with HTTP/2 + HTTP/3" grep -q "HTTP/2 + HTTP/3" "$tmp/srv.log"

# gtls NAME ARGS...: runs gtlsclient against the server, output in $tmp/NAME.out
gtls() {
  name=$1; shift
  timeout 20 "$gtls" --no-quic-dump --exit-on-all-streams-close --timeout=5s "$@" \
    127.0.0.1 "$SRV_PORT" "https://127.0.0.1:$SRV_PORT/amaters.v1.AmateRS/Execute" >"$tmp/$name.out" 2>&1
}
has() { grep -q -- "$2" "$tmp/$1.out"; }

# 1. mutual TLS with the development client certificate: GET
gtls get --cert "$P/client.pem" --key "$P/client-key.pem"
check "mTLS handshake completes, ALPN h3" has get "Negotiated ALPN is h3"
check "GET answered over HTTP/3 with :status 405" has get ":status: 405\]"
check "  ... with content-type application/grpc" has get "content-type: application/grpc\]"
check "  ... with grpc-status 13 (INTERNAL)" has get "grpc-status: 13\]"
check "server verified the client certificate (CN=amaters-dev-client)" \
  grep -q "mTLS QUIC connection from .*CN=amaters-dev-client" "$tmp/srv.log"

# 2. a POST without application/grpc: 415
printf 'not a grpc message' >"$tmp/body"
gtls post --cert "$P/client.pem" --key "$P/client-key.pem" -m POST -d "$tmp/body"
check "POST without application/grpc answered with :status 415" has post ":status: 415\]"
check "  ... with grpc-status" has post "grpc-status: 13\]"

# 3. no client certificate: refused during the handshake
gtls nocert
check "no client certificate: no HTTP response" sh -c "! grep -q ':status' '$tmp/nocert.out'"
check "  ... CONNECTION_CLOSE with TLS alert certificate_required (0x174)" has nocert "CRYPTO_ERROR(0x174)"
check "  ... server logs 'no client certificate presented'" \
  grep -q "refused: no client certificate presented" "$tmp/srv.log"

# 4. a client certificate from another CA
sh "$mkcerts" "$tmp/other" other >/dev/null 2>&1 || { echo "mkcerts failed"; exit 1; }
gtls other --cert "$tmp/other/client.pem" --key "$tmp/other/client-key.pem"
check "client certificate from another CA: no HTTP response" sh -c "! grep -q ':status' '$tmp/other.out'"
check "  ... server logs 'not issued by a trusted CA'" grep -q "refused: client certificate not issued by a trusted CA" "$tmp/srv.log"

# 5. the server still serves afterwards
gtls again --cert "$P/client.pem" --key "$P/client-key.pem"
check "a good client is still served" has again ":status: 405\]"

# 6. HTTP/2 advertises HTTP/3 on the same port
if command -v nghttp >/dev/null 2>&1; then
  out=$(timeout 20 nghttp -v --cert "$P/client.pem" --key "$P/client-key.pem" "https://127.0.0.1:$SRV_PORT/" 2>&1)
  check "HTTP/2 response carries alt-svc: h3=\":$SRV_PORT\"" sh -c "printf '%s' \"\$1\" | grep -q 'alt-svc: h3=\":$SRV_PORT\"'" _ "$out"
fi

stop_server; rc=$?
check "SIGTERM stops the server cleanly (rc=$rc)" [ "$rc" -eq 0 ]
if [ "$fail" -ne 0 ]; then echo "--- server log"; cat "$tmp/srv.log"; for f in "$tmp"/*.out; do echo "--- $f"; tail -20 "$f"; done; fi
summary h3_gtlsclient
