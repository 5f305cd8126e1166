#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# TLS handshakes that never complete cannot hold amaters-netd (HTTP/2, TCP).
# The daemon runs with handshake_timeout_ms = 1500 and max_connections = 4;
# h2_abuse.py --attack slowtls (Python's ssl, an independent TLS stack, with
# the development client certificate) either writes its ClientHello one byte
# every 0.25 s (phase hello) or writes it whole, reads the server's flight
# and never sends its own certificate and Finished (phase flight):
#   - each is cut about 1.5 s after it connected (the server closes the
#     connection), and the daemon logs "TLS handshake timed out";
#   - six of them at once, while a bench holds the fourth slot: the first
#     three take the free slots, the others are refused (max_connections);
#     all six are cut at the handshake timeout, after which a new client is
#     served; the bench running throughout sees no failure, and the daemon's
#     memory is back within 8 MiB of where it was.
# (The same over QUIC: integration.h3_abuse, test_abuse_silent_handshakes.)
# usage: test_slow_handshakes.sh BUILD_DIR
set -euo pipefail
bin=$1
here=$(cd "$(dirname "$0")" && pwd)
. "$here/proc_lib.sh"

printf '[network]\nhandshake_timeout_ms = 1500\nmax_connections = 4\n' >hs.toml
start_netd netd.log --config hs.toml --transport h2 --threads 1 --log-level debug
cli=("$bin/amaters-cli" --pki-dir pki --timeout 10000 "https://127.0.0.1:$port")
slowtls() { timeout 30 $py "$here/h2_abuse.py" --port "$port" --pki pki --pid "$netd" --attack slowtls --phase "$1" --trickle 0.25 --hold 12; }
# cut LABEL FILE: the server ended the handshake at the timeout (1.5 s), not before, not much later
cut() {
  local end s
  end=$(json "$2" end)
  s=$(json "$2" closed_s)
  if [[ $end == eof || $end == error:* || $end == "TLS error"* ]] && $py -c "import sys; sys.exit(not (1.4 <= $s <= 4))"; then
    ok "$1: cut after $s s ($end) with $(json "$2" bytes_sent) of $(json "$2" hello_bytes) ClientHello bytes sent, $(json "$2" withheld_bytes) bytes of its own flight withheld"
  else
    bad "$1: not cut at the handshake timeout: $(cat "$2")"
  fi
}

"${cli[@]}" execute --data warm >/dev/null || bad "warm-up call failed"
base=$(rss_kb "$netd")
# --- one at a time ---------------------------------------------------------
slowtls hello >hello.json
echo "ClientHello trickled: $(cat hello.json)"
cut "ClientHello one byte every 0.25 s" hello.json
slowtls flight >flight.json
echo "own flight withheld: $(cat flight.json)"
cut "client certificate never sent" flight.json
[ "$(json flight.json 'server_bytes > 0 and withheld_bytes > 0')" = True ] ||
  bad "the flight case did not get the server's flight: $(cat flight.json)"
n=$(grep -c "TLS handshake timed out (handshake_timeout_ms 1500)" netd.log || true)
[ "$n" = 2 ] && ok "the daemon logs both: TLS handshake timed out (handshake_timeout_ms 1500)" ||
  bad "$n handshake timeouts logged, 2 expected"

# --- six at once, at max_connections --------------------------------------
"${cli[@]}" bench --connections 1 --inflight 2 --duration 6 --warmup 0 --json >bench.json 2>bench.err &
bench=$!
wait_for netd.log "mTLS connection from" || bad "the bench did not connect"
att=()
for i in 1 2 3 4 5 6; do
  if [ $((i % 2)) = 1 ]; then slowtls hello >s$i.json & else slowtls flight >s$i.json & fi
  att+=($!)
done
wait "${att[@]}" || true
for i in 1 2 3 4 5 6; do cut "slow handshake $i of 6" s$i.json; done
n=$(grep -c "refused: max_connections (4) reached" netd.log || true)
[ "$n" -ge 1 ] && [ "$n" -le 3 ] && ok "$n of them found max_connections reached and were refused" ||
  bad "$n refusals for max_connections logged (1-3 expected)"
out=$("${cli[@]}" execute --data "after the slow handshakes" 2>&1) && [ "$out" = "after the slow handshakes" ] &&
  ok "a new client is served once they are cut" || bad "a new client was not served: $out"
brc=0
wait $bench || brc=$?
bench_ok "" "$brc" bench.json bench.err
rss=$(rss_kb "$netd")
[ "$rss" -lt $((base + 8192)) ] && ok "daemon memory $rss kB (base $base kB)" || bad "daemon memory grew from $base to $rss kB"
echo "passed $passed, failed $failed"
[ "$failed" = 0 ]
