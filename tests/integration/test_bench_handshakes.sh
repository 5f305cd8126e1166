#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# integration.bench_handshakes: amaters-cli bench --new-connection and
# --resume (handshakes) against amaters-netd over HTTP/2 and HTTP/3 (mTLS,
# the development PKI). Functional only: no performance threshold.
#   - --new-connection: every call attempt on its own connection: the bench's
#     connects equal its call attempts, and the daemon counted exactly that
#     many new handshakes (amn_server_handshakes_total{result="ok"}); none
#     resumed (HTTP/3: the client's resumed count and the daemon's are 0);
#   - --resume over HTTP/3: the connections resume (client and daemon count
#     the same number of resumed handshakes, > 0) and 0-RTT is accepted;
#     the handshakes are still one per connection;
#   - --resume over HTTP/2 (no session resumption there) and bad flag
#     combinations: exit 64 with a message.
# usage: test_bench_handshakes.sh BUILD_DIR
set -euo pipefail
bin=$1
here=$(cd "$(dirname "$0")" && pwd)
. "$here/proc_lib.sh"

start_netd netd.log --transport both --admin 127.0.0.1:0
aport=$(sed -n 's/.*admin: .*(port \([0-9]*\)).*/\1/p' netd.log | head -1)
[ -n "$aport" ] || { cat netd.log; echo "FAIL: no admin port in the daemon's log"; exit 1; }
url=https://127.0.0.1:$port
cli() { "$bin/amaters-cli" --pki-dir pki "$@"; }

# series SERIES: its value in a scrape of the daemon's metrics (0 when absent)
series() {
  curl -s --max-time 5 "http://127.0.0.1:$aport/metrics" | $py -c '
import sys
want = sys.argv[1]
for line in sys.stdin:
    name, _, v = line.rstrip("\n").rpartition(" ")
    if name == want: print(int(float(v))); break
else: print(0)' "$1"
}
hs() { series "amn_server_handshakes_total{transport=\"$1\",result=\"ok\"}"; }
resumed() { series 'amn_server_quic_events_total{event="resumed"}'; }

for tp in h2 h3; do
  for flag in --new-connection --resume; do
    [ $tp = h2 ] && [ $flag = --resume ] && continue
    name=$tp$flag
    h0=$(hs $tp) r0=$(resumed)
    rc=0
    cli --transport $tp "$url" bench $flag --connections 2 --duration 1 --warmup 0.2 --json >"$name.json" \
      2>"$name.err" || rc=$?
    if [ $rc != 0 ] || [ "$(json "$name.json" "errors == 0 and calls > 0 and new_connection")" != True ]; then
      bad "$name: exit $rc: $(cat "$name.json" "$name.err")"
      continue
    fi
    connects=$(json "$name.json" connects)
    [ "$(json "$name.json" "connects == attempts and connects > calls")" = True ] &&
      ok "$name: $(json "$name.json" calls) measured calls, each call attempt on its own connection ($connects)" ||
      bad "$name: connects $(json "$name.json" "(connects, attempts, calls)")"
    h1=$(hs $tp) r1=$(resumed)
    [ $((h1 - h0)) = "$connects" ] && ok "$name: the daemon counted $connects handshakes, as the bench" ||
      bad "$name: the daemon counted $((h1 - h0)) handshakes, the bench $connects"
    if [ $tp = h2 ]; then
      [ "$(json "$name.json" "quic['handshakes'] + quic['resumed']")" = 0 ] && ok "$name: no QUIC counters over HTTP/2" ||
        bad "$name: quic: $(json "$name.json" quic)"
      continue
    fi
    [ "$(json "$name.json" "quic['handshakes']")" = "$connects" ] && ok "$name: $connects QUIC handshakes" ||
      bad "$name: quic handshakes $(json "$name.json" quic), connects $connects"
    cres=$(json "$name.json" "quic['resumed']")
    [ $((r1 - r0)) = "$cres" ] && ok "$name: client and daemon both count $cres resumed handshakes" ||
      bad "$name: resumed: client $cres, daemon $((r1 - r0))"
    if [ $flag = --new-connection ]; then
      [ "$cres" = 0 ] && [ "$(json "$name.json" "quic['early_attempted']")" = 0 ] &&
        ok "$name: full handshakes only (no resumption, no 0-RTT)" || bad "$name: quic: $(json "$name.json" quic)"
    else
      # each client's first connection gets the ticket; the others resume
      [ "$(json "$name.json" "quic['resumed'] > 0 and quic['resumed'] >= calls and quic['early_accepted'] > 0")" = True ] &&
        ok "$name: resumed with 0-RTT: $(json "$name.json" quic)" || bad "$name: quic: $(json "$name.json" quic)"
    fi
  done
done

# usage errors: exit 64 and a message
usage() {
  local what=$1 want=$2 rc=0
  shift 2
  cli "$url" "$@" >/dev/null 2>usage.err || rc=$?
  [ $rc = 64 ] && grep -q -- "$want" usage.err && ok "$what: exit 64, '$want'" ||
    bad "$what: exit $rc: $(cat usage.err)"
}
usage "--resume over HTTP/2" "only over HTTP/3" --transport h2 bench --resume --duration 0.2
usage "--new-connection --mode stream" "unary calls" bench --new-connection --mode stream
usage "--new-connection --inflight 3 --connections 2" "must equal --connections" \
  bench --new-connection --connections 2 --inflight 3
usage "--new-connection --rps" "closed loop only" bench --new-connection --rps 10

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
