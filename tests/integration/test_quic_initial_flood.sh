#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# A QUIC Initial flood: quicgo_abuse -attack initials (quic-go, an
# independent QUIC stack) starts 3,000 handshakes, 200 at a time, each from
# a new source port and given up after 5 ms, so the daemon sees thousands of
# new clients that send their Initial and vanish, while amaters-cli bench
# calls it over HTTP/3 on a connection of its own. The daemon
# (retry_threshold 20, handshake_timeout_ms 1000) answers with Retry once 20
# handshakes are in progress (address validation: no state for an address
# that does not come back; counted in amn_server_quic_events_total), its
# resident memory grows by less than 64 MiB, the bench sees zero failures,
# and once the flood is over no handshake is left in progress (the ones
# admitted are cut at the handshake timeout) and a new client is served.
# usage: test_quic_initial_flood.sh BUILD_DIR QUICGO_ABUSE
set -euo pipefail
bin=$1
abuse=$2
here=$(cd "$(dirname "$0")" && pwd)
. "$here/proc_lib.sh"
command -v curl >/dev/null || { echo "FAIL: no curl (scripts/deps.sh installs it)"; exit 1; }

printf '[quic]\nretry_threshold = 20\n[network]\nhandshake_timeout_ms = 1000\n' >flood.toml
start_netd netd.log --config flood.toml --transport both --threads 1 --admin 127.0.0.1:0
aport=$(sed -n 's/.*admin: .*(port \([0-9]*\)).*/\1/p' netd.log | head -1)
[ -n "$aport" ] || { cat netd.log; echo "FAIL: no admin port in the daemon's log"; exit 1; }
# metric NAME{LABELS}: its value in a fresh scrape ("absent" when not there)
metric() {
  curl -s --max-time 5 "http://127.0.0.1:$aport/metrics" |
    awk -v want="$1" '$1 == want { v = $2 } END { print v == "" ? "absent" : v }'
}
cli=("$bin/amaters-cli" --pki-dir pki --transport h3 --timeout 10s "https://127.0.0.1:$port")
"${cli[@]}" bench --connections 1 --inflight 4 --duration 1 --warmup 0 >/dev/null 2>&1 || bad "warm-up bench failed"
base=$(rss_kb "$netd")
retries0=$(metric 'amn_server_quic_events_total{event="retries_sent"}')
echo "daemon resident memory after warm-up: $base kB; Retry packets so far: $retries0"

"${cli[@]}" bench --connections 1 --inflight 4 --duration 6 --warmup 0 --json >bench.json 2>bench.err &
b=$!
t0=$(date +%s%N)
timeout 120 "$abuse" -attack initials -addr "127.0.0.1:$port" -pki pki -pid "$netd" -streams 3000 -conc 200 \
  -max 5ms >abuse.json 2>abuse.err || bad "the attacking client failed: $(cat abuse.err)"
el=$((($(date +%s%N) - t0) / 1000000))
echo "attacker ($el ms): $(cat abuse.json)"
kill -0 "$netd" 2>/dev/null || { bad "the daemon is gone"; tail -20 netd.log; exit 1; }
dials=$(json abuse.json dials)
peak=$(json abuse.json peak_rss_kb)
[ "$dials" = 3000 ] && ok "3,000 handshakes started in $el ms" || bad "only $dials dials"
retries=$(metric 'amn_server_quic_events_total{event="retries_sent"}')
[ "$((retries - retries0))" -ge 100 ] && ok "the daemon asked $((retries - retries0)) of them for address validation (Retry)" ||
  bad "only $((retries - retries0)) Retry packets"
[ "$peak" -lt $((base + 64 * 1024)) ] && ok "peak resident memory $peak kB (base $base kB)" ||
  bad "peak resident memory $peak kB, base $base kB"
brc=0
wait $b || brc=$?
bench_ok "" "$brc" bench.json bench.err
# every admitted handshake is cut at the timeout: none left after the flood
left=
for _ in $(seq 50); do
  left=$(metric 'amn_server_connections{transport="h3",state="handshaking"}')
  [ "$left" = 0 ] && break
  sleep 0.1
done
[ "$left" = 0 ] && ok "no handshake left in progress after the flood" || bad "$left handshakes still in progress"
out=$("${cli[@]}" execute --data after-the-flood 2>&1) && [ "$out" = after-the-flood ] &&
  ok "a new client is served after the flood" || bad "a call after the flood: $out"
echo "passed $passed, failed $failed"
[ "$failed" = 0 ]
