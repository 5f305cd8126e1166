#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# The memory bound over HTTP/3: quicgo_abuse (quic-go, an independent QUIC
# stack) opens 200 Execute calls of 1 MiB each with receive windows of a few
# KiB that it never opens, so the server cannot send its answers, while
# amaters-cli bench calls the daemon over HTTP/3 on another connection. The
# daemon runs with 4 MiB messages (a 40 MiB bound per connection; HTTP/3's
# connection window may reach 32 MiB): flow control stops the upload, resident
# memory grows by less than 88 MiB (bound + window + 16 MiB; without the bound
# it grew by 410 MiB), the bench sees zero failures, and after each of two rounds the
# daemon's count of buffered bytes is back to 0 (what the allocator keeps
# resident in between is not counted as held; leaks are the sanitizer build's).
# usage: test_memory_bounds_h3.sh BUILD_DIR QUICGO_ABUSE
set -euo pipefail
bin=$1
abuse=$2
here=$(cd "$(dirname "$0")" && pwd)
. "$here/proc_lib.sh"

aport=$(common_port 127.0.0.1)
start_netd netd.log --admin "$aport" --transport h3 --threads 1 --max-message 4m --log-level info
cli=("$bin/amaters-cli" --pki-dir pki --transport h3 --timeout 10000 "https://127.0.0.1:$port")
"${cli[@]}" bench --connections 1 --inflight 4 --duration 1 --warmup 0 >/dev/null 2>&1 || bad "warm-up bench failed"
base=$(rss_kb "$netd")
echo "daemon resident memory after warm-up: $base kB"
for round in 1 2; do
  "${cli[@]}" bench --connections 1 --inflight 4 --duration 4 --warmup 0 --json >bench.json 2>bench.err &
  b=$!
  timeout 90 "$abuse" -addr "127.0.0.1:$port" -pki pki -pid "$netd" >"abuse$round.json" 2>abuse.err ||
    bad "round $round: the attacking client failed: $(cat abuse.err)"
  brc=0
  wait $b || brc=$?
  echo "round $round: attacker $(cat "abuse$round.json")"
  kill -0 "$netd" 2>/dev/null || { bad "the daemon is gone"; tail -20 netd.log; exit 1; }
  sent=$(json "abuse$round.json" sent_bytes)
  peak=$(json "abuse$round.json" peak_rss_kb)
  [ "$sent" -lt $((80 << 20)) ] && ok "round $round: flow control stopped the upload after $sent of 209,716,200 bytes" ||
    bad "round $round: $sent bytes got through"
  [ "$peak" -lt $((base + 88 * 1024)) ] && ok "round $round: peak resident memory $peak kB (base $base kB)" ||
    bad "round $round: peak resident memory $peak kB, base $base kB"
  wait_metric "$aport" amn_server_buffered_bytes 0 && ok "round $round: the daemon holds no buffered bytes afterwards" ||
    bad "round $round: amn_server_buffered_bytes is $(metric "$aport" amn_server_buffered_bytes) after the attack"
  bench_ok "round $round: " "$brc" bench.json bench.err
done
echo "passed $passed, failed $failed"
[ "$failed" = 0 ]
