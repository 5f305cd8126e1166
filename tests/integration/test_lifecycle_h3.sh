#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# HTTP/3 connection lifecycle of amaters-netd as separate processes, with
# amaters-cli --transport h3 and ngtcp2's gtlsclient as clients and the keys
# of a configuration file in effect (transport "both": TCP and UDP):
#   [quic] retry_threshold = 0 (every new QUIC client gets a Retry first),
#   [quic] secret_path (created 0600 on the first start, kept across a
#   restart, so that clients recognise the restarted daemon's stateless
#   resets; with another secret they do not), [network] handshake_timeout_ms
#   (a TCP peer that never starts TLS and a QUIC client that never hears
#   the server are closed), idle_timeout_ms (an idle QUIC connection is closed, one
#   with a call open is not), max_connections (the next QUIC connection gets
#   CONNECTION_REFUSED with the reason, counted and logged; the first ones
#   keep working), SIGHUP certificate reload (new QUIC handshakes get the new
#   certificate, an established connection goes on), and SIGTERM (GOAWAY, the
#   call in flight finishes, new connections are refused, exit 0).
# usage: test_lifecycle_h3.sh BUILD_DIR GTLSCLIENT
set -euo pipefail
trap '' PIPE # a write to a FIFO whose reader has exited fails (EPIPE) instead of ending the script
bin=$1
gtls=$2
work=$(mktemp -d)
pid=
cleanup() {
  exec 3>&- 4>&- 2>/dev/null || true
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
  jobs -p | xargs -r kill 2>/dev/null
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
. "$(dirname "$0")/lifecycle_lib.sh"
# wait_for FILE REGEX [TENTHS]: until FILE has a line matching REGEX
wait_for() { for _ in $(seq 1 "${3:-100}"); do grep -Eq -- "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; return 1; }
ms() { echo $(($(date +%s%N) / 1000000)); }

lifecycle_setup
cat >lifecycle.toml <<EOF
[network]
bind_address = "127.0.0.1:$port"
max_connections = 2
idle_timeout_ms = 1500
keep_alive_interval_ms = 400
handshake_timeout_ms = 700
[tls]
cert_path = "$work/etc/server.pem"
key_path = "$work/etc/server-key.pem"
ca_path = "$work/etc/ca.pem"
[quic]
retry_threshold = 0
secret_path = "$work/quic-secret.key"
[server]
transport = "both"
threads = 1
drain_timeout_ms = 8000
EOF
start_daemon() {
  "$bin/amaters-netd" --config lifecycle.toml --log-level debug >"$1" 2>&1 &
  pid=$!
  wait_for "$1" "listening on" || {
    bad "daemon did not start ($(kill -0 "$pid" 2>/dev/null && echo running || echo exited)):"
    cat "$1"
    exit 1
  }
}
CLI=("$bin/amaters-cli" --pki-dir pki --transport h3 --timeout 5000 "https://127.0.0.1:$port")

# --- [quic] secret_path: created 0600 on the first start. A daemon killed
# and started again with the same secret resets the connections of the old
# one so that their client recognises it: the call fails at once (not at
# the idle timeout). With another secret the reset is not recognised.
start_daemon first.log
check "HTTP/2 and HTTP/3 on the configured address" first.log "listening on 127.0.0.1:$port .*HTTP/2 \+ HTTP/3"
check "[quic] secret_path: the secret file is created" first.log "QUIC secret .* created in $work/quic-secret.key"
[ "$(stat -c '%a %s' quic-secret.key)" = "600 32" ] && ok "secret file: mode 0600, 32 bytes" \
  || bad "secret file: $(stat -c '%a %s' quic-secret.key)"
sum1=$(sha256sum <quic-secret.key)
mkfifo in0 in00
"${CLI[@]}" --timeout 0 stream <in0 >s0.out 2>&1 &
s0=$!
exec 6>in0
echo before-restart >&6
wait_for s0.out '^before-restart$' && ok "a streaming call over HTTP/3" || bad "stream: $(cat s0.out)"
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
start_daemon second.log
check "restart: the secret file is reused" second.log "QUIC secret .* from $work/quic-secret.key"
[ "$(sha256sum <quic-secret.key)" = "$sum1" ] && ok "restart: the secret is unchanged" || bad "secret changed"
t0=$(ms)
# the client may have learnt of the restart already (a packet of its own,
# e.g. an ACK, drew the reset) and exited: then nobody reads the FIFO
echo after-restart >&6 || true
wait_for s0.out "stateless reset" 50 && el=$(($(ms) - t0)) && [ "$el" -lt 1000 ] && ok "same secret: the client \
recognised the restarted daemon's stateless reset after $el ms: $(grep -o 'UNAVAILABLE.*' s0.out)" \
  || bad "same secret: not within 1 s (idle timeout 1.5 s): $(cat s0.out)"
wait "$s0" && rc=0 || rc=$?
[ "$rc" = 14 ] && ok "  ... the call failed with UNAVAILABLE (exit 14)" || bad "  ... exit status $rc"
exec 6>&-
check "  ... the daemon sent it" second.log "packet for an unknown connection from 127.0.0.1:[0-9]+: stateless reset sent"

# --- [quic] retry_threshold = 0: a new QUIC client first gets a Retry
out=$("${CLI[@]}" execute --data hello-h3 2>&1) && rc=0 || rc=$?
[ "$rc" = 0 ] && [ "$out" = hello-h3 ] && ok "a call over HTTP/3" || bad "call over HTTP/3: rc=$rc: $out"
check "retry_threshold = 0: the client's Initial got a Retry" second.log "QUIC Initial from 127.0.0.1:[0-9]+: Retry sent"
check "  ... and its connection was established with the Retry token" second.log \
  "127.0.0.1:[0-9]+: mTLS QUIC connection from CN="

# another daemon with another secret (and the default retry_threshold, for
# the QUIC handshake timeout below), both from the environment
"${CLI[@]}" --timeout 0 stream <in00 >s00.out 2>&1 &
s00=$!
exec 7>in00
echo before-restart >&7
wait_for s00.out '^before-restart$' || bad "stream: $(cat s00.out)"
t0=$(ms)
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
export AMATERS_NET_QUIC_SECRET_PATH=$work/other-secret.key AMATERS_NET_QUIC_RETRY_THRESHOLD=100
start_daemon netd.log
unset AMATERS_NET_QUIC_SECRET_PATH AMATERS_NET_QUIC_RETRY_THRESHOLD
check "another secret: AMATERS_NET_QUIC_SECRET_PATH overrides the file" netd.log \
  "QUIC secret .* created in $work/other-secret.key"
echo after-restart >&7 || true
wait_for netd.log "packet for an unknown connection from 127.0.0.1:[0-9]+: stateless reset sent" 100 \
  || bad "no stateless reset from the daemon with another secret"
wait_for s00.out "UNAVAILABLE" 60
el=$(($(ms) - t0))
if grep -q "idle timeout" s00.out && ! grep -q "stateless reset" s00.out && [ "$el" -ge 1400 ]; then
  ok "another secret: the reset is not recognised, the call waited for the idle timeout (1500 ms; $el ms)"
else
  bad "another secret: after $el ms: $(cat s00.out)"
fi
exec 7>&-
wait "$s00" 2>/dev/null || true

# --- [network] handshake_timeout_ms: a TCP peer that never starts TLS is closed
exec 5<>"/dev/tcp/127.0.0.1/$port"
t0=$(ms)
timeout 5 cat <&5 >/dev/null || true
el=$(($(ms) - t0))
exec 5<&-
between "$el" 550 2500 && ok "handshake_timeout_ms = 700: silent TCP peer closed after $el ms" \
  || bad "silent TCP peer closed after $el ms"
check "  ... logged" netd.log \
  "connection from 127.0.0.1:[0-9]+ refused: TLS handshake timed out \(handshake_timeout_ms 700\)"

# ... and a QUIC client that never hears the server (a relay drops every
# answer): its connection is dropped after handshake_timeout_ms too
/usr/bin/python3 - "$port" >relay.port <<'PY' &
import socket, sys
down = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
down.bind(("127.0.0.1", 0))
print(down.getsockname()[1], flush=True)
up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
up.connect(("127.0.0.1", int(sys.argv[1])))
while True:  # client -> server only; the server's answers to `up` are never read
    up.send(down.recv(65536))
PY
relay=$!
wait_for relay.port '^[0-9]+$' || bad "relay did not start"
nto=$(grep -c "QUIC handshake timed out" netd.log || true)
t0=$(ms)
timeout 10 "$gtls" --no-quic-dump --handshake-timeout=4s --cert pki/client.pem --key pki/client-key.pem \
  127.0.0.1 "$(cat relay.port)" "https://127.0.0.1:$port/" >dark.out 2>&1 &
dark=$!
for _ in $(seq 1 50); do [ "$(grep -c "QUIC handshake timed out" netd.log)" -gt "$nto" ] && break; sleep 0.1; done
el=$(($(ms) - t0))
between "$el" 550 2500 && ok "handshake_timeout_ms = 700: unanswered QUIC handshake dropped after $el ms" \
  || bad "unanswered QUIC handshake: $el ms"
check "  ... logged" netd.log "connection from 127.0.0.1:[0-9]+: QUIC handshake timed out \(700 ms\)"
kill "$dark" "$relay" 2>/dev/null || true
wait "$dark" "$relay" 2>/dev/null || true

# --- idle_timeout_ms: a QUIC connection without calls is closed (gtlsclient
# stays connected after its request until the idle timeout)
t0=$(ms)
timeout 20 "$gtls" --no-quic-dump --timeout=30s --cert pki/client.pem --key pki/client-key.pem \
  127.0.0.1 "$port" "https://127.0.0.1:$port/" >idle.out 2>&1 || true
el=$(($(ms) - t0))
check "idle: gtlsclient was answered over HTTP/3" idle.out ':status: 405'
between "$el" 1300 6000 && ok "idle_timeout_ms = 1500: idle QUIC connection ended after $el ms" \
  || { bad "idle connection ended after $el ms"; tail -5 idle.out; }
# (QUIC's own idle timeout, or ours: no call for idle_timeout_ms, whichever
# fires first; the line may come a moment after the client is gone)
wait_for netd.log "QUIC connection from 127.0.0.1:[0-9]+( closed: idle timeout|: no call for 1500 ms: closing the idle connection)" 50 &&
  ok "  ... the server closed it for the idle timeout" || bad "  ... no idle close in the daemon's log"

# --- max_connections = 2: two streaming calls held open, a third connection refused
mkfifo in1 in2
"${CLI[@]}" --timeout 0 stream <in1 >s1.out 2>&1 &
s1=$!
exec 3>in1
"${CLI[@]}" --timeout 0 stream <in2 >s2.out 2>&1 &
s2=$!
exec 4>in2
echo first-1 >&3
echo first-2 >&4
wait_for s1.out '^first-1$' && wait_for s2.out '^first-2$' && ok "two streaming calls over two QUIC connections" \
  || bad "held streams did not answer: $(cat s1.out s2.out)"
out=$("${CLI[@]}" execute --data third 2>&1) && rc=0 || rc=$?
[ "$rc" = 14 -o "$rc" = 69 ] && grep -q "refused the connection .*max_connections reached" <<<"$out" \
  && ok "max_connections: the third QUIC connection is refused: $out" || bad "third connection: rc=$rc: $out"
check "max_connections: the refusal is logged and counted" netd.log \
  "QUIC connection from 127.0.0.1:[0-9]+ refused: max_connections \(2\) reached \(1 refused so far\)"
sleep 2 # longer than idle_timeout_ms: the connections with a call open must stay (server PINGs)
echo late-1 >&3
echo late-2 >&4
wait_for s1.out '^late-1$' && ok "max_connections: the first connection still serves (after > idle_timeout_ms)" \
  || bad "first held stream: $(cat s1.out)"
wait_for s2.out '^late-2$' && ok "max_connections: the second connection still serves" || bad "second: $(cat s2.out)"
exec 4>&-
wait "$s2" && ok "the second stream ends cleanly (exit 0)" || bad "second stream exit status"
out=$("${CLI[@]}" execute --data freed 2>&1) && rc=0 || rc=$?
[ "$rc" = 0 ] && ok "max_connections: a closed connection frees its slot at once (its draining period does not count)" \
  || bad "a new connection after one closed: rc=$rc: $out"

# --- SIGHUP: a new certificate (same CA) with another name for new QUIC handshakes
printf '%s\n' 'cn = "reloaded server"' 'dns_name = "reloaded.test"' 'ip_address = "127.0.0.1"' tls_www_server \
  signing_key 'expiration_days = 30' >new.tmpl
certtool --generate-privkey --key-type ecdsa --curve secp256r1 --outfile new-key.pem 2>/dev/null
certtool --generate-certificate --load-privkey new-key.pem --load-ca-certificate pki/ca.pem \
  --load-ca-privkey pki/ca-key.pem --template new.tmpl --outfile new.pem 2>/dev/null
NEW=("$bin/amaters-cli" --pki-dir pki --transport h3 --timeout 5000 --server-name reloaded.test
  "https://127.0.0.1:$port")
out=$("${NEW[@]}" execute --data before 2>&1) && rc=0 || rc=$?
[ "$rc" = 69 ] && grep -q "certificate" <<<"$out" \
  && ok "before the reload the certificate is not valid for reloaded.test: $out" \
  || bad "before the reload, --server-name reloaded.test: rc=$rc: $out"
cp new.pem etc/server.pem
cp new-key.pem etc/server-key.pem
kill -HUP "$pid"
wait_for netd.log "SIGHUP: TLS certificate" || bad "no reload log"
out=$("${NEW[@]}" execute --data after-reload 2>&1) && rc=0 || rc=$?
[ "$rc" = 0 ] && [ "$out" = after-reload ] && ok "SIGHUP: a new QUIC handshake gets the new certificate (reloaded.test)" \
  || bad "after the reload: rc=$rc: $out"
out=$("${CLI[@]}" --server-name localhost execute --data old-name 2>&1) && rc=0 || rc=$?
[ "$rc" = 69 ] && grep -q "certificate" <<<"$out" && ok "  ... and no longer the old one (not valid for localhost)" \
  || bad "after the reload, --server-name localhost: rc=$rc: $out"
echo after-hup >&3
wait_for s1.out '^after-hup$' && ok "SIGHUP: the connection made before the reload goes on" || bad "held stream: $(cat s1.out)"

# --- SIGTERM: GOAWAY, the call in flight finishes, new connections refused, exit 0
kill -TERM "$pid"
wait_for netd.log "draining" || bad "no drain log"
wait_for netd.log "GOAWAY \(server stopping\), 1 request\(s\) in flight" 30 \
  && ok "SIGTERM: GOAWAY sent on the QUIC connection with its call in flight" || bad "no GOAWAY log"
out=$("${CLI[@]}" execute --data too-late 2>&1) && rc=0 || rc=$?
[ "$rc" = 14 -o "$rc" = 69 ] && ok "SIGTERM: a new connection is refused: $out" || bad "new connection during the drain: rc=$rc: $out"
echo during-drain >&3
wait_for s1.out '^during-drain$' && ok "SIGTERM: the call in flight is still served" || bad "drain: $(cat s1.out)"
exec 3>&-
wait "$s1" && ok "SIGTERM: the streaming call ends OK (exit 0)" || bad "stream during drain: $(cat s1.out)"
t0=$(ms)
wait "$pid" && rc=0 || rc=$?
pid=
[ "$rc" = 0 ] && ok "SIGTERM: daemon exit 0 ($(($(ms) - t0)) ms after the last call)" || bad "daemon exit $rc"
check "  ... its QUIC connection ended gracefully" netd.log \
  "QUIC connection from 127.0.0.1:[0-9]+ closed: (drained|closed by the client)"
check "  ... stopped" netd.log "stopped"

if [ "$failed" -ne 0 ]; then echo "--- daemon log"; tail -60 netd.log; fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
