#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# QUIC connections that only PING cannot hold amaters-netd's connection
# slots: with idle_timeout_ms = 2000 and max_connections = 2, two quic-go
# clients (quicgo_idle: connected over mTLS, no request, a PING every 300 ms,
# which restarts QUIC's own idle timer) fill max_connections; each is closed
# about 2 s after its handshake (GOAWAY, then CONNECTION_CLOSE H3_NO_ERROR),
# although it keeps PINGing; then a new client is served over HTTP/3.
# (Before, such connections stayed open for as long as they PINGed.)
# Also: a client that resets its HTTP/3 control stream gets the connection
# error H3_CLOSED_CRITICAL_STREAM (RFC 9114 6.2.1), logged with its name.
# usage: test_quic_idle.sh BUILD_DIR QUICGO_IDLE
set -euo pipefail
bin=$1
idle=$2
here=$(cd "$(dirname "$0")" && pwd)
. "$here/proc_lib.sh"

printf '[network]\nidle_timeout_ms = 2000\nmax_connections = 2\n' >idle.toml
start_netd netd.log --config idle.toml --transport h3 --threads 1 --log-level debug
"$idle" -addr "127.0.0.1:$port" -pki pki -ping 300ms -max 15s >a.out 2>&1 &
a=$!
"$idle" -addr "127.0.0.1:$port" -pki pki -ping 300ms -max 15s >b.out 2>&1 &
b=$!
arc=0 brc=0
wait $a || arc=$?
wait $b || brc=$?
for x in a b; do
  echo "idle client $x: $(tr '\n' ' ' <$x.out)"
  s=$(sed -n 's/^closed after \([0-9.]*\) s: .*0x100.*/\1/p' $x.out)
  if [ -n "$s" ] && $py -c "import sys; sys.exit(not (1.9 <= $s <= 6))"; then
    ok "idle client $x closed after $s s with H3_NO_ERROR, although it kept PINGing"
  else
    bad "idle client $x was not closed as idle: $(cat $x.out)"
  fi
done
n=$(grep -c "no call for 2000 ms: closing the idle connection" netd.log || true)
[ "$n" = 2 ] && ok "the daemon logged both idle closes" || bad "$n idle closes logged"
out=$("$bin/amaters-cli" --pki-dir pki --transport h3 --timeout 10000 "https://127.0.0.1:$port" execute --data "after" 2>&1) &&
  [ "$out" = after ] && ok "a new HTTP/3 client is served" || bad "a new HTTP/3 client was not served: $out"
"$idle" -addr "127.0.0.1:$port" -pki pki -reset-control -max 10s >rc.out 2>&1 || true
echo "control stream reset: $(tr '\n' ' ' <rc.out)"
grep -q "closed after .*0x104" rc.out && ok "resetting the control stream: connection error H3_CLOSED_CRITICAL_STREAM" ||
  bad "resetting the control stream: $(cat rc.out)"
grep -q "HTTP/3 protocol error: H3_CLOSED_CRITICAL_STREAM" netd.log && ok "the daemon logs it by name" ||
  bad "no log line naming H3_CLOSED_CRITICAL_STREAM"
echo "passed $passed, failed $failed"
[ "$failed" = 0 ]
