#!/bin/sh
# SPDX-License-Identifier: MIT OR Apache-2.0
# interop.h3_gtlsclient: Debian's ngtcp2 example client (gtlsclient, ngtcp2 +
# nghttp3 + GnuTLS, an independent HTTP/3 stack) against amaters-netd
# serving HTTP/2 + HTTP/3 with its development PKI:
#   - with the dev client certificate: verified mutual TLS over QUIC, ALPN h3,
#     and a proper HTTP/3 answer to non-gRPC requests (GET -> 405 with a text body, POST
#     without application/grpc -> 415, both carrying grpc-status)
#   - without a certificate / with one from another CA: refused in the
#     handshake (TLS alert in CONNECTION_CLOSE), one clear server log line
#   - HTTP/2 responses advertise the QUIC port (alt-svc), checked with nghttp
#   - session resumption with 0-RTT (--session-file + --tp-file): the second
#     connection presents no certificate at all, the server takes the client
#     identity from its ticket and serves the request sent as early data
#   - connection migration (--change-local-addr), NAT rebinding
#     (--nat-rebinding) and a 1-RTT key update (--key-update) before the
#     request: it is answered on the new path / with the new keys
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
check "  ... with content-type text/plain and a body that says why" \
  eval 'has get "content-type: text/plain; charset=utf-8\]" && has get "405: method not "'
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

# 7. a session ticket, then a resumed connection sending its request as 0-RTT data
gtls ticket --cert "$P/client.pem" --key "$P/client-key.pem" --session-file "$tmp/sess.pem" --tp-file "$tmp/tp.txt"
check "first connection: session ticket and transport parameters stored" [ -s "$tmp/sess.pem" -a -s "$tmp/tp.txt" ]
gtls resume --session-file "$tmp/sess.pem" --tp-file "$tmp/tp.txt"
sleep 0.3 # the server logs the handshake's end when the client's Finished arrives
check "resumed connection without a certificate answered with :status 405" has resume ":status: 405\]"
check "  ... its early data was accepted" sh -c "! grep -q 'Early data was rejected' '$tmp/resume.out'"
check "  ... the server resumed the session with the ticket's identity" \
  grep -q "mTLS QUIC connection from .*CN=amaters-dev-client.* (resumed)" "$tmp/srv.log"
check "  ... and took the request as 0-RTT data" grep -q "arrived as 0-RTT data" "$tmp/srv.log"

# 8. the client moves to a new local address before sending its request
gtls migrate --cert "$P/client.pem" --key "$P/client-key.pem" --change-local-addr=50ms --delay-stream=300ms
check "active migration: client changed its address" has migrate "Local address is now"
check "  ... the new path validated" has migrate "Path validation against path .* succeeded"
check "  ... the request from it answered" has migrate ":status: 405\]"
gtls rebind --cert "$P/client.pem" --key "$P/client-key.pem" --change-local-addr=50ms --nat-rebinding \
  --delay-stream=300ms
check "NAT rebinding: the request from the new address answered" has rebind ":status: 405\]"
check "  ... the server challenged the client's new address (path validation)" has rebind "frm rx .*PATH_CHALLENGE"

# 9. a 1-RTT key update initiated by the client before its request
gtls keyupd --cert "$P/client.pem" --key "$P/client-key.pem" --key-update=50ms --delay-stream=300ms
check "key update initiated" has keyupd "Initiate key update"
check "  ... confirmed by the server (it sent in the new key phase)" has keyupd "key update confirmed"
check "  ... the request after it answered" has keyupd ":status: 405\]"

stop_server; rc=$?
check "SIGTERM stops the server cleanly (rc=$rc)" [ "$rc" -eq 0 ]
if [ "$fail" -ne 0 ]; then echo "--- server log"; cat "$tmp/srv.log"; for f in "$tmp"/*.out; do echo "--- $f"; tail -20 "$f"; done; fi
summary h3_gtlsclient
