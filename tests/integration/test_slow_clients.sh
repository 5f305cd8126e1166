#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# Slow clients cannot hold amaters-netd (HTTP/2): request headers have a
# deadline, and a connection without a call is idle whatever bytes trickle in.
# The daemon runs with header_timeout_ms = 1000, idle_timeout_ms = 3000 and
# max_connections = 3; h2_abuse.py (python3-h2) writes a request's HEADERS
# frame one byte every 0.25 s (the stream begins after 9 bytes, 2.25 s, within
# the idle timeout, which trickled bytes do not reset):
#   - that call ends with DEADLINE_EXCEEDED about 1 s after its headers began
#     (then RST_STREAM NO_ERROR), and 3 s later the connection, without a
#     call, gets GOAWAY "idle timeout" and is closed;
#   - two such clients together with a bench fill max_connections; once they
#     are closed (within header + idle timeout), a new client is served; the
#     bench running throughout sees no failure;
#   - with stall_timeout_ms = 2000, a client that sends 3 of 4 MB of each of
#     32 messages and then nothing: every call ends with RESOURCE_EXHAUSTED
#     ("request stalled"); in each of two rounds resident memory grows by
#     less than 88 MiB (the 40 MiB connection bound + windows + slack) and
#     the daemon's count of buffered bytes is back to 0 afterwards.
# usage: test_slow_clients.sh BUILD_DIR
set -euo pipefail
bin=$1
here=$(cd "$(dirname "$0")" && pwd)
. "$here/proc_lib.sh"
need_module h2 python3-h2

aport=$(common_port 127.0.0.1)
cat >slow.toml <<EOF
[network]
header_timeout_ms = 1000
idle_timeout_ms = 3000
max_connections = 3
stall_timeout_ms = 2000
[server]
max_message_bytes = 4194304
[admin]
bind_address = "127.0.0.1:$aport"
EOF
start_netd netd.log --config slow.toml --transport h2 --threads 1 --log-level debug
cli=("$bin/amaters-cli" --pki-dir pki --timeout 10000 "https://127.0.0.1:$port")
base=$(rss_kb "$netd")
slow() { timeout 30 $py "$here/h2_abuse.py" --port "$port" --pki pki --pid "$netd" --attack slowheaders --trickle 0.25 --hold 12; }
# at EVENT-PREFIX FILE: the time (s) of the first event starting with the prefix, or nothing
at() { json "$2" "next((t for e, t in events if e.startswith('$1')), '')"; }

# --- one slow client -------------------------------------------------------
slow >one.json
echo "one slow client: $(cat one.json)"
t_status=$(at "grpc-status 4" one.json)
t_goaway=$(at "goaway 0" one.json)
t_eof=$(at "eof" one.json)
# the stream begins once nghttp2 has the 9-byte frame header (about 2 s in;
# sooner when the server's frames wake the client early); the header block
# itself would take a minute
if [ -n "$t_status" ] && $py -c "import sys; sys.exit(not (1.0 <= $t_status <= 4.75))" &&
  [ "$(json one.json 'bytes_sent < frame_bytes')" = True ]; then
  ok "the call ended with DEADLINE_EXCEEDED at $t_status s, after $(json one.json bytes_sent) of $(json one.json frame_bytes) header bytes"
else
  bad "no DEADLINE_EXCEEDED in time: $(cat one.json)"
fi
[ -n "$t_goaway" ] && [ -n "$t_eof" ] && $py -c "import sys; sys.exit(not ($t_eof <= $t_status + 5))" &&
  ok "GOAWAY idle timeout at $t_goaway s, connection closed at $t_eof s" ||
  bad "the connection was not closed after the call: $(cat one.json)"
grep -q "request headers not complete within 1000 ms" netd.log && ok "the daemon logs the reason" ||
  bad "no log line naming the header timeout"

# --- slow clients and max_connections --------------------------------------
"${cli[@]}" bench --connections 1 --inflight 2 --duration 8 --warmup 0 --json >bench.json 2>bench.err &
bench=$!
wait_for netd.log "mTLS connection from" || bad "the bench did not connect"
slow >a.json &
sa=$!
slow >b.json &
sb=$!
wait $sa $sb || true
echo "slow client a: $(cat a.json)"
echo "slow client b: $(cat b.json)"
for f in a.json b.json; do
  [ -n "$(at eof $f)" ] && ok "slow client ${f%.json} was closed at $(at eof $f) s" ||
    bad "slow client ${f%.json} kept its connection: $(cat $f)"
done
out=$("${cli[@]}" execute --data "after the slow clients" 2>&1) && [ "$out" = "after the slow clients" ] &&
  ok "a new client is served once the slow ones are gone" || bad "a new client was not served: $out"
brc=0
wait $bench || brc=$?
bench_ok "" "$brc" bench.json bench.err

# --- a client that stops half-way through its messages ------------------------
# (twice: the second round must find the first one's memory free again)
for round in 1 2; do
  timeout 60 $py "$here/h2_abuse.py" --port "$port" --pki pki --pid "$netd" --attack partial --streams 32 \
    --size 4000000 --part 3000000 --stall 6 --hold 1 >partial$round.json
  echo "partial messages, round $round: $(cat partial$round.json)"
  [ "$(json partial$round.json "finished.get('8', 0)")" = 32 ] &&
    ok "round $round: all 32 stalled calls ended with RESOURCE_EXHAUSTED (stall_timeout_ms 2000)" ||
    bad "round $round: the stalled calls were not ended: $(cat partial$round.json)"
  peak=$(json partial$round.json peak_rss_kb)
  [ "$peak" -lt $((base + 88 * 1024)) ] && ok "round $round: peak resident memory $peak kB (base $base kB)" ||
    bad "round $round: peak resident memory $peak kB, base $base kB"
  wait_metric "$aport" amn_server_buffered_bytes 0 && ok "round $round: the daemon holds no buffered bytes afterwards" ||
    bad "round $round: amn_server_buffered_bytes is $(metric "$aport" amn_server_buffered_bytes) after the calls ended"
done
grep -q "request stalled: no bytes for 2000 ms" netd.log && ok "the daemon logs the stall" || bad "no log line for the stall"

echo "passed $passed, failed $failed"
[ "$failed" = 0 ]
