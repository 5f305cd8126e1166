#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# Floods of QUIC frames from an authenticated HTTP/3 client, against
# amaters-netd as a separate process. The frames are hand-made by
# quic_inject.py, a relay that adds them to the 1-RTT packets of a real
# client (amaters-cli bench, whose TLS secrets it reads from SSLKEYLOGFILE),
# while a second client talks to the daemon directly:
#   path-challenge   PATH_CHALLENGE frames filling every client packet: the
#                    server answers (PATH_RESPONSE seen), the flooded
#                    connection's calls all succeed;
#   new-cid-limit    NEW_CONNECTION_ID frames beyond the active connection ID
#                    limit: the server closes that connection with
#                    CONNECTION_ID_LIMIT_ERROR (0x9), only the calls in flight on
#                    it fail (UNAVAILABLE naming the error), the client
#                    reconnects and goes on;
#   new-cid-retire   NEW_CONNECTION_ID frames each retiring all before it, one
#                    per packet (a sustained rotation: the server retires
#                    thousands of connection IDs, RETIRE_CONNECTION_ID seen) and
#                    eight per packet (faster than the client acknowledges: the
#                    server stops at its bound on queued retirements and closes
#                    with 0x9 instead of queueing without end).
# In every case the daemon stays up, its resident memory grows by less than
# 32 MiB, and the other client's calls all succeed.
# usage: test_quic_flood.sh BUILD_DIR
set -euo pipefail
bin=$1
here=$(cd "$(dirname "$0")" && pwd)
. "$here/proc_lib.sh"
need_module cryptography python3-cryptography

start_netd netd.log --transport h3 --threads 1 --log-level debug
cli=("$bin/amaters-cli" --pki-dir pki --transport h3 --timeout 10000)
# the daemon's memory once it has served HTTP/3 (the baseline for the bound)
"${cli[@]}" "https://127.0.0.1:$port" bench --connections 1 --inflight 4 --duration 1 --warmup 0 >/dev/null 2>&1 ||
  bad "warm-up bench failed"
rss0=$(rss_kb "$netd")

# flood NAME MODE [relay options...]: the relay in MODE before one bench,
# another bench directly; leaves victim.json, other.json, relay.json
flood() {
  local name=$1 mode=$2
  shift 2
  rm -f keylog relay.ready relay.json victim.json other.json
  $py "$here/quic_inject.py" --listen 0 --server "127.0.0.1:$port" --keylog keylog --mode "$mode" \
    --stats relay.json --ready relay.ready "$@" 2>relay.err &
  local relay=$!
  wait_for relay.ready ready || { bad "$name: relay did not start"; cat relay.err; kill $relay; return 1; }
  local rport
  rport=$(awk '{print $2}' relay.ready)
  SSLKEYLOGFILE=$work/keylog "${cli[@]}" "https://127.0.0.1:$rport" bench --connections 1 --inflight 4 \
    --duration 3 --warmup 0 --json >victim.json 2>victim.err &
  local victim=$!
  "${cli[@]}" "https://127.0.0.1:$port" bench --connections 1 --inflight 4 --duration 3 --warmup 0 --json \
    >other.json 2>other.err &
  local other=$!
  local vrc=0 orc=0
  wait $victim || vrc=$?
  wait $other || orc=$?
  kill -TERM $relay
  wait $relay || true
  echo "$name: relay $(cat relay.json)"
  echo "$name: flooded client (exit $vrc) $(cat victim.json)"
  echo "$name: other client (exit $orc) $(cat other.json)"
  if ! kill -0 "$netd" 2>/dev/null; then
    bad "$name: the daemon is gone"
    tail -20 netd.log
    exit 1
  fi
  local rss
  rss=$(rss_kb "$netd")
  echo "$name: daemon resident memory ${rss0} kB before all floods, ${rss} kB now"
  [ "$rss" -lt $((rss0 + 32768)) ] && ok "$name: daemon memory within 32 MiB of its start" ||
    bad "$name: daemon memory grew from ${rss0} kB to ${rss} kB"
  [ "$orc" = 0 ] && [ "$(json other.json 'errors')" = 0 ] && [ "$(json other.json 'calls')" -gt 100 ] &&
    ok "$name: the other client's $(json other.json 'calls') calls all succeeded" ||
    bad "$name: the other client failed (exit $orc): $(cat other.err)"
  [ "$(json relay.json 'undecryptable_client')" = 0 ] && [ "$(json relay.json 'packets_injected')" -gt 0 ] ||
    bad "$name: the relay did not add frames: $(cat relay.json)"
  victim_rc=$vrc
}

# --- PATH_CHALLENGE --------------------------------------------------------
flood path-challenge path-challenge
[ "$(json relay.json 'path_challenge_sent')" -ge 10000 ] && [ "$(json relay.json 'path_response_seen')" -ge 100 ] &&
  ok "path-challenge: $(json relay.json 'path_challenge_sent') PATH_CHALLENGE sent, $(json relay.json 'path_response_seen') PATH_RESPONSE back" ||
  bad "path-challenge: too few challenges or responses"
[ "$victim_rc" = 0 ] && [ "$(json victim.json 'errors')" = 0 ] && [ "$(json victim.json 'calls')" -gt 20 ] &&
  [ "$(json relay.json 'connections')" = 1 ] &&
  ok "path-challenge: the flooded connection's $(json victim.json 'calls') calls all succeeded" ||
  bad "path-challenge: the flooded client failed (exit $victim_rc): $(cat victim.err)"

# --- NEW_CONNECTION_ID beyond the limit ------------------------------------
flood new-cid-limit new-cid-limit
[ "$(json relay.json '9 in connection_close_seen')" = True ] &&
  ok "new-cid-limit: the server closed the flooded connection with CONNECTION_ID_LIMIT_ERROR" ||
  bad "new-cid-limit: no CONNECTION_CLOSE 0x9 seen"
verr=$(json victim.json 'errors')
[ "$verr" -ge 1 ] && [ "$verr" -le 4 ] && grep -q "QUIC error 0x9" victim.err &&
  [ "$(json victim.json 'calls')" -gt 100 ] && [ "$(json relay.json 'connections')" = 2 ] &&
  ok "new-cid-limit: $verr call(s) in flight failed naming the error, the client reconnected, $(json victim.json 'calls') calls" ||
  bad "new-cid-limit: flooded client: exit $victim_rc, $(cat victim.err)"

# --- NEW_CONNECTION_ID rotation, at the client's pace ----------------------
flood new-cid-retire new-cid-retire --per-packet 1
[ "$(json relay.json 'retire_connection_id_seen')" -ge 500 ] &&
  ok "new-cid-retire x1: the server retired $(json relay.json 'retire_connection_id_seen') connection IDs" ||
  bad "new-cid-retire x1: too few RETIRE_CONNECTION_ID: $(cat relay.json)"
# At one new ID per client packet the retirements are acknowledged about as
# fast as they are queued; should a burst of client packets exceed the
# server's bound, the connection is closed with 0x9 like the next case.
verr=$(json victim.json 'errors')
if [ "$verr" = 0 ]; then
  ok "new-cid-retire x1: the flooded connection's $(json victim.json 'calls') calls all succeeded"
elif [ "$verr" -le 4 ] && grep -q "QUIC error 0x9" victim.err && [ "$(json victim.json 'calls')" -gt 100 ]; then
  ok "new-cid-retire x1: the server stopped the rotation at its bound (0x9), $verr call(s) in flight failed"
else
  bad "new-cid-retire x1: flooded client: exit $victim_rc, $(cat victim.err)"
fi

# --- NEW_CONNECTION_ID rotation, faster than acknowledged ------------------
flood new-cid-retire-fast new-cid-retire --per-packet 8
[ "$(json relay.json '9 in connection_close_seen')" = True ] &&
  ok "new-cid-retire x8: the server closed at its bound on queued retirements (0x9)" ||
  bad "new-cid-retire x8: no CONNECTION_CLOSE 0x9 seen: $(cat relay.json)"
verr=$(json victim.json 'errors')
[ "$verr" -le 4 ] && [ "$(json victim.json 'calls')" -gt 100 ] &&
  ok "new-cid-retire x8: $verr call(s) in flight failed, the client reconnected" ||
  bad "new-cid-retire x8: flooded client: exit $victim_rc, $(cat victim.err)"

grep -E "QUIC connection .* closed" netd.log | tail -5
echo "passed $passed, failed $failed"
[ "$failed" = 0 ]
