#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# Unfinished requests cannot hold amaters-netd over HTTP/3 either: the
# request header deadline, the progress deadline and the idle timeout apply
# as over HTTP/2 (test_slow_clients.sh). The daemon runs with
# header_timeout_ms = 1000, stall_timeout_ms = 2000, idle_timeout_ms = 3000,
# max_connections = 3 and 4 MiB messages (a 40 MiB bound per connection);
# quicgo_abuse (quic-go, an independent QUIC stack, raw streams) attacks:
#   - slowheaders: 32 request streams, each with half of its HEADERS frame,
#     then one byte more of each every 0.25 s. Every call ends with
#     DEADLINE_EXCEEDED (grpc-status 4, trailers-only) about 1 s in; the
#     connection, without a call, is closed 3 s later (GOAWAY, H3_NO_ERROR, or
#     QUIC's idle timeout of the same length when it comes first). Two such
#     clients and a bench fill max_connections; once they are closed a new
#     client is served; the bench sees no failure;
#   - partial: 32 requests announcing 4,000,000-byte messages and sending
#     3,000,000 bytes of each, then nothing: flow control stops them at the
#     memory bound, every call ends with RESOURCE_EXHAUSTED (grpc-status 8,
#     "request stalled") 2 s after the last byte moved, the connection is
#     closed as idle, no call fails for the memory bound; resident memory
#     grows by less than 88 MiB (bound + window + 16 MiB) in each of two
#     rounds, and the daemon's count of buffered bytes is back to 0 after
#     each (what the allocator keeps resident between rounds is not a leak:
#     glibc raises its mmap threshold once the first round's large buffers
#     are freed, so the second round's come from the heap and stay resident;
#     leaks are the sanitizer build's); a bench alongside sees no failure;
#   - noread (zero-window reader): 8 Execute calls of 1 MiB whose responses
#     the client never grants flow-control room for: each ends 2 s after
#     its response stopped moving ("the client read no response").
# usage: test_slow_clients_h3.sh BUILD_DIR QUICGO_ABUSE
set -euo pipefail
bin=$1
abuse=$2
here=$(cd "$(dirname "$0")" && pwd)
. "$here/proc_lib.sh"

aport=$(common_port 127.0.0.1)
cat >slow.toml <<EOF2
[network]
header_timeout_ms = 1000
stall_timeout_ms = 2000
idle_timeout_ms = 3000
max_connections = 3
[server]
max_message_bytes = 4194304
[admin]
bind_address = "127.0.0.1:$aport"
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
  # GOAWAY and H3_NO_ERROR, or QUIC's own idle timeout (the same 3 s) when it comes first
  if [ "$(json "$f" "('0x100' in end or 'no recent network activity' in end) and closed_s <= last_s + 3 + 3")" = True ]; then
    ok "$f: the connection was closed as idle at $(json "$f" closed_s) s ($(json "$f" end))"
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
  [ "$peak" -lt $((base + 88 * 1024)) ] && ok "round $round: peak resident memory $peak kB (base $base kB)" ||
    bad "round $round: peak resident memory $peak kB, base $base kB"
  brc=0
  wait $bench || brc=$?
  bench_ok "round $round: " "$brc" bench.json bench.err
  wait_metric "$aport" amn_server_buffered_bytes 0 && ok "round $round: the daemon holds no buffered bytes afterwards" ||
    bad "round $round: amn_server_buffered_bytes is $(metric "$aport" amn_server_buffered_bytes) after the calls ended"
done
grep -q "request stalled: no bytes for 2000 ms" netd.log && ok "the daemon logs the stall" || bad "no log line for the stall"
# the client respects flow control: none of its calls may fail for the memory
# bound (before, a partial message's buffer, which grows by doubling, could
# step past it and fail calls with "connection buffer limit ... reached")
n=$(grep -c "buffer limit of [0-9]* bytes reached" netd.log || true)
[ "$n" = 0 ] && ok "no call failed for the memory bound (flow control kept the client under it)" ||
  bad "$n calls failed for the memory bound although the client respects flow control"

# --- responses the client never grants room for --------------------------------
# (the memory bound against many such calls: integration.memory_bounds_h3)
unread() { grep -c "[0-9]: the client read no response for 2000 ms" netd.log || true; }
n0=$(unread)
timeout 60 "$abuse" -addr "127.0.0.1:$port" -pki pki -pid "$netd" -streams 8 -hold 4s >noread.json 2>noread.err ||
  bad "noread: the attacking client failed: $(cat noread.err)"
echo "responses never read: $(cat noread.json)"
n=$(($(unread) - n0))
[ "$n" = 8 ] && [ "$(json noread.json sent_bytes)" = 8388648 ] &&
  ok "noread: all 8 calls whose 1 MiB responses the client never took ended (RESOURCE_EXHAUSTED, logged)" ||
  bad "noread: $n of 8 calls ended for unread responses: $(cat noread.json)"
kill -0 "$netd" 2>/dev/null && ok "the daemon is up" || bad "the daemon is gone"
echo "passed $passed, failed $failed"
[ "$failed" = 0 ]
