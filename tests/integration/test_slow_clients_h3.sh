#!/usr/bin/env bash
# Unfinished requests cannot hold amaters-netd over HTTP/3 either: the
# request header deadline, the progress deadline and the idle timeout apply
# as over HTTP/2 (test_slow_clients.sh). The daemon runs with
# header_timeout_ms = 1000, stall_timeout_ms = 2000, idle_timeout_ms = 3000,
# max_connections = 3 and 4 MiB messages (a 40 MiB bound per connection);
# quicgo_abuse (quic-go, an independent QUIC stack, raw streams) attacks:
#   - slowheaders: 32 request streams, each with half of its HEADERS frame,
#     then one byte more of each every 0.25 s. Every call ends with
#     DEADLINE_EXCEEDED (grpc-status 4, trailers-only) about 1 s in; the
#     connection, without a call, is closed 3 s later (H3_NO_ERROR). Two such
#     clients and a bench fill max_connections; once they are closed a new
#     client is served; the bench sees no failure;
#   - partial: 32 requests announcing 4,000,000-byte messages and sending
#     3,000,000 bytes of each, then nothing: flow control stops them at the
#     memory bound, every call ends with RESOURCE_EXHAUSTED (grpc-status 8,
#     "request stalled") 2 s after the last byte moved, the connection is
#     closed as idle; resident memory grows by less than 72 MiB; a second
#     round grows it by less than 8 MiB; a bench alongside sees no failure.
# usage: test_slow_clients_h3.sh BUILD_DIR QUICGO_ABUSE
set -euo pipefail
bin=$1
abuse=$2
here=$(cd "$(dirname "$0")" && pwd)
. "$here/proc_lib.sh"

cat >slow.toml <<EOF2
[network]
header_timeout_ms = 1000
stall_timeout_ms = 2000
idle_timeout_ms = 3000
max_connections = 3
[server]
max_message_bytes = 4194304
EOF2
start_netd netd.log --config slow.toml --transport h3 --threads 1 --log-level debug
cli=("$bin/amaters-cli" --pki-dir pki --transport h3 --timeout 10000 "https://127.0.0.1:$port")
attack() { timeout 60 "$abuse" -addr "127.0.0.1:$port" -pki pki -pid "$netd" -streams 32 -hold 8s -max 20s -attack "$@"; }
"${cli[@]}" execute --data warm >/dev/null || bad "warm-up call failed"
base=$(rss_kb "$netd")
# ended FILE CODE LO HI: all 32 calls ended with grpc-status CODE between LO and HI s, then the connection as idle
ended() {
  local f=$1
  if [ "$(json "$f" "outcomes == {'grpc-status $2': 32} and $3 <= first_s and last_s <= $4")" = True ]; then
    ok "$f: all 32 calls ended with grpc-status $2 at $(json "$f" first_s)-$(json "$f" last_s) s"
  else
    bad "$f: not all calls ended with grpc-status $2 in time: $(cat "$f")"
  fi
  if [ "$(json "$f" "'0x100' in end and closed_s <= last_s + 3 + 2")" = True ]; then
    ok "$f: the connection was closed as idle at $(json "$f" closed_s) s (H3_NO_ERROR)"
  else
    bad "$f: the connection was not closed as idle: $(cat "$f")"
  fi
}

# --- half-sent HEADERS frames, two clients and a bench at max_connections ----
"${cli[@]}" bench --connections 1 --inflight 2 --duration 5 --warmup 0 --json >bench1.json 2>bench1.err &
bench=$!
wait_for netd.log "mTLS QUIC connection from" || bad "the bench did not connect"
attack slowheaders >sh1.json 2>sh1.err &
a=$!
attack slowheaders >sh2.json 2>sh2.err &
b=$!
wait $a || bad "slowheaders client 1 failed: $(cat sh1.err)"
wait $b || bad "slowheaders client 2 failed: $(cat sh2.err)"
for f in sh1.json sh2.json; do
  echo "slow headers: $(cat $f)"
  ended $f 4 0.9 3
done
grep -q "request headers not complete within 1000 ms" netd.log && ok "the daemon logs the header deadline" ||
  bad "no log line naming the header timeout"
out=$("${cli[@]}" execute --data "after the slow clients" 2>&1) && [ "$out" = "after the slow clients" ] &&
  ok "a new client is served once the slow ones are gone" || bad "a new client was not served: $out"
brc=0
wait $bench || brc=$?
bench_ok "slow headers: " "$brc" bench1.json bench1.err

# --- messages stopped three quarters through, twice ---------------------------
for round in 1 2; do
  "${cli[@]}" bench --connections 1 --inflight 2 --duration 4 --warmup 0 --json >bench.json 2>bench.err &
  bench=$!
  attack partial -size 4000000 -part 3000000 >partial$round.json 2>partial.err ||
    bad "round $round: the attacking client failed: $(cat partial.err)"
  echo "partial messages, round $round: $(cat partial$round.json)"
  ended partial$round.json 8 1.5 10
  sent=$(json partial$round.json sent_bytes)
  peak=$(json partial$round.json peak_rss_kb)
  [ "$sent" -lt $((48 << 20)) ] && ok "round $round: flow control stopped the upload after $sent of 96 MB" ||
    bad "round $round: $sent bytes got through"
  [ "$peak" -lt $((base + 72 * 1024)) ] && ok "round $round: peak resident memory $peak kB (base $base kB)" ||
    bad "round $round: peak resident memory $peak kB, base $base kB"
  [ "$round" = 2 ] && { [ "$peak" -lt $((peak1 + 8 * 1024)) ] && ok "the second round held no more ($peak kB)" ||
    bad "the second round grew memory from $peak1 to $peak kB"; }
  peak1=$peak
  brc=0
  wait $bench || brc=$?
  bench_ok "round $round: " "$brc" bench.json bench.err
done
grep -q "request stalled: no bytes for 2000 ms" netd.log && ok "the daemon logs the stall" || bad "no log line for the stall"
kill -0 "$netd" 2>/dev/null && ok "the daemon is up" || bad "the daemon is gone"
echo "passed $passed, failed $failed"
[ "$failed" = 0 ]
