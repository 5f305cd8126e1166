#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# HTTP/2 connection lifecycle of amaters-netd, seen by an independent raw
# HTTP/2 client (h2probe: GnuTLS + nghttp2, no amaters-net code), with every
# [network], [tls] and [quic] key of a configuration file in effect:
#   bind_address, [tls] cert/key/ca, [quic] max_concurrent_streams and
#   initial_window_size (= HTTP/2 SETTINGS), idle_timeout_ms (GOAWAY "idle
#   timeout"), keep_alive_interval_ms (server PINGs; an unanswered PING closes
#   the connection), the PING abuse policy (GOAWAY too_many_pings),
#   max_connections (clean refusal, the first N keep working), and SIGHUP
#   certificate reload (new handshakes get the new certificate, established
#   connections go on, a broken file keeps the old credentials).
# usage: test_lifecycle.sh BUILD_DIR
set -euo pipefail
bin=$1
probe=$bin/tests/integration/h2probe
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
. "$(dirname "$0")/lifecycle_lib.sh"
# at_ms FILE REGEX: the time (ms) of the first matching event in a probe output
at_ms() { grep -E "$2" "$1" | head -1 | cut -d' ' -f1; }

lifecycle_setup
cat >lifecycle.toml <<EOF
[network]
bind_address = "127.0.0.1:$port"
max_connections = 2
idle_timeout_ms = 600
keep_alive_interval_ms = 300
[tls]
cert_path = "$work/etc/server.pem"
key_path = "$work/etc/server-key.pem"
ca_path = "$work/etc/ca.pem"
[quic]
max_concurrent_streams = 7
initial_window_size = 12345
EOF
"$bin/amaters-netd" --config lifecycle.toml --log-level debug >netd.log 2>&1 &
pid=$!
for _ in $(seq 1 100); do grep -q "listening on" netd.log && break; sleep 0.1; done
grep -q "listening on 127.0.0.1:$port " netd.log && ok "bind_address: listening on 127.0.0.1:$port" || bad "bind_address"
P=("$probe" 127.0.0.1 "$port" --ca pki/ca.pem --cert pki/client.pem --key pki/client-key.pem)

# --- idle: no call for idle_timeout_ms -> GOAWAY(NO_ERROR, "idle timeout"), close
"${P[@]}" --duration 3000 >idle.out
check "[tls] cert_path/key_path: the configured certificate is served" idle.out \
  "ready fingerprint=$(certtool --fingerprint --hash sha256 --infile etc/server.pem)"
check "[quic] max_concurrent_streams/initial_window_size are the HTTP/2 SETTINGS" idle.out \
  'settings max_concurrent_streams=7 initial_window_size=12345'
check "idle_timeout_ms: GOAWAY idle timeout" idle.out 'goaway code=NO_ERROR last=0 debug=idle timeout'
between "$(at_ms idle.out goaway)" 550 2500 && ok "idle close after ~600 ms ($(at_ms idle.out goaway) ms)" \
  || bad "idle close time $(at_ms idle.out goaway)"
check "idle connection closed" idle.out ' eof'
check "keep_alive_interval_ms: the server PINGs a quiet connection" idle.out ' ping$'
between "$(at_ms idle.out ' ping$')" 250 1200 && ok "first PING after ~300 ms" || bad "PING time $(at_ms idle.out ' ping$')"

# --- a call in flight is not idle; an unanswered PING closes the connection
# (timeout max(interval, 5 s))
"${P[@]}" --open-stream --no-ping-ack --duration 9500 >noack.out
if grep -q goaway noack.out; then bad "a connection with an open call got GOAWAY"; else ok "open call: no idle GOAWAY"; fi
between "$(at_ms noack.out ' eof')" 5000 9000 && ok "unanswered PING: closed after ~5.3 s ($(at_ms noack.out ' eof') ms)" \
  || { bad "keepalive close"; cat noack.out; }
grep -q "keepalive: PING not acknowledged within 5000 ms" netd.log && ok "keepalive close logged" || bad "keepalive log"

# --- PING abuse: more often than every 5 s -> third strike -> too_many_pings
"${P[@]}" --open-stream --ping-every 100 --pings 10 --duration 3000 >pings.out
check "PING flood: GOAWAY ENHANCE_YOUR_CALM too_many_pings" pings.out 'goaway code=ENHANCE_YOUR_CALM last=1 debug=too_many_pings'
check "PING flood: connection closed" pings.out ' eof'
[ "$(grep -c ping-sent pings.out)" -le 5 ] && ok "closed at the third strike" || bad "too many PINGs accepted"
grep -q "too many PINGs" netd.log && ok "PING abuse logged" || bad "PING abuse log"
# PINGs every 5.5 s are fine (and acknowledged)
"${P[@]}" --open-stream --ping-every 5500 --pings 2 --duration 6500 >slowpings.out
if grep -q goaway slowpings.out; then bad "polite PINGs were punished"; else ok "PINGs every 5.5 s accepted"; fi

# --- max_connections = 2: a third connection is refused cleanly; the two work on
"${P[@]}" --open-stream --call-at 2000 --duration 2500 >c1.out &
c1=$!
"${P[@]}" --open-stream --call-at 2000 --duration 2500 >c2.out &
c2=$!
sleep 0.7
"${P[@]}" --call refused --duration 2000 >c3.out
cli_out=$(timeout 10 "$bin/amaters-cli" --pki-dir pki "https://127.0.0.1:$port" execute --data x 2>&1) && cli_rc=0 || cli_rc=$?
wait $c1 $c2
check "max_connections: third connection gets GOAWAY" c3.out 'goaway code=ENHANCE_YOUR_CALM last=0 debug=max_connections reached'
check "max_connections: the refused call never ran" c3.out 'call status=-1 .*h2=REFUSED_STREAM'
check "max_connections: first connection still serves" c1.out 'call status=0 data=late'
check "max_connections: second connection still serves" c2.out 'call status=0 data=late'
[ "$cli_rc" = 14 -o "$cli_rc" = 69 ] && grep -q "max_connections reached" <<<"$cli_out" && ok "amaters-cli: UNAVAILABLE naming max_connections" \
  || bad "amaters-cli over the limit: rc=$cli_rc: $cli_out"
grep -q "refused: max_connections (2) reached" netd.log && ok "refusal logged" || bad "refusal log"

# --- SIGHUP: a new certificate (same CA) for new handshakes
printf '%s\n' 'cn = "reloaded server"' 'dns_name = "localhost"' 'ip_address = "127.0.0.1"' tls_www_server \
  signing_key 'expiration_days = 30' >new.tmpl
certtool --generate-privkey --key-type ecdsa --curve secp256r1 --outfile new-key.pem 2>/dev/null
certtool --generate-certificate --load-privkey new-key.pem --load-ca-certificate pki/ca.pem \
  --load-ca-privkey pki/ca-key.pem --template new.tmpl --outfile new.pem 2>/dev/null
old_fp=$(certtool --fingerprint --hash sha256 --infile etc/server.pem)
new_fp=$(certtool --fingerprint --hash sha256 --infile new.pem)
"${P[@]}" --open-stream --call-at 2500 --duration 3000 >held.out &
held=$!
sleep 0.5
cp new.pem etc/server.pem
cp new-key.pem etc/server-key.pem
kill -HUP "$pid"
for _ in $(seq 1 50); do grep -q "SIGHUP: TLS certificate" netd.log && break; sleep 0.1; done
"${P[@]}" --call after-reload --duration 1000 >reload.out
check "SIGHUP: new handshakes get the new certificate" reload.out "ready fingerprint=$new_fp"
check "SIGHUP: calls work with the new certificate" reload.out 'call status=0 data=after-reload'
wait $held
check "SIGHUP: the connection made before the reload kept its certificate" held.out "ready fingerprint=$old_fp"
check "SIGHUP: ... and still serves" held.out 'call status=0 data=late'
echo garbage >etc/server.pem
kill -HUP "$pid"
for _ in $(seq 1 50); do grep -q "SIGHUP: reload failed" netd.log && break; sleep 0.1; done
grep -q "SIGHUP: reload failed, still serving the previous certificate" netd.log && ok "broken certificate: reload refused and logged" \
  || bad "broken certificate reload log"
"${P[@]}" --call still --duration 1000 >broken.out
check "broken certificate: the previous credentials stay in use" broken.out "ready fingerprint=$new_fp"
check "broken certificate: still serving" broken.out 'call status=0 data=still'
kill -0 "$pid" && ok "daemon alive" || bad "daemon died"

# --- [tls] ca_path: a client certificate from another CA is refused
printf '%s\n' 'cn = "other CA"' ca cert_signing_key 'expiration_days = 30' >other.tmpl
certtool --generate-privkey --key-type ecdsa --curve secp256r1 --outfile other-key.pem 2>/dev/null
certtool --generate-self-signed --load-privkey other-key.pem --template other.tmpl --outfile other.pem 2>/dev/null
printf '%s\n' 'cn = "stranger"' tls_www_client signing_key 'expiration_days = 30' >stranger.tmpl
certtool --generate-privkey --key-type ecdsa --curve secp256r1 --outfile stranger-key.pem 2>/dev/null
certtool --generate-certificate --load-privkey stranger-key.pem --load-ca-certificate other.pem \
  --load-ca-privkey other-key.pem --template stranger.tmpl --outfile stranger.pem 2>/dev/null
"$probe" 127.0.0.1 "$port" --ca pki/ca.pem --cert stranger.pem --key stranger-key.pem --call x --duration 1000 >stranger.out || true
if grep -q 'call status=0' stranger.out; then bad "[tls] ca_path: foreign client accepted"; else ok "[tls] ca_path: foreign client refused"; fi
grep -q "not issued by a trusted CA" netd.log && ok "[tls] ca_path: refusal names the CA" || bad "[tls] ca_path log"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
