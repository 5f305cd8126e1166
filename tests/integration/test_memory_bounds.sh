#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# Memory bounds against an authenticated HTTP/2 client that attacks
# amaters-netd (h2_abuse.py, on python3-h2: an independent HTTP/2 stack),
# while amaters-cli bench calls the daemon on another connection:
#   noread   200 Execute requests of 1 MiB from a client that grants the
#            server no receive window (the responses cannot leave);
#   partial  32 requests announcing 4,000,000-byte messages and sending
#            3,000,000 bytes of each.
# The daemon runs with 4 MiB messages, so each connection may hold 40 MiB
# (2 * max_message + 32 MiB) and is granted window only below 40 - 16 MiB.
# Each attack is stopped by flow control: it gets at most about 40 MiB
# through, the daemon's resident memory grows by less than 72 MiB (the bound
# plus the 16 MiB connection window plus 16 MiB of slack; without the bound
# the first attack grew it by 400 MiB), the bench sees zero failures, and after
# each of two rounds the daemon's count of buffered bytes is back to 0 (the
# attacker's bytes were released when it left; what the allocator keeps
# resident in between is not counted as held, leaks are the sanitizer
# build's).
# usage: test_memory_bounds.sh BUILD_DIR
set -euo pipefail
bin=$1
here=$(cd "$(dirname "$0")" && pwd)
. "$here/proc_lib.sh"
need_module h2 python3-h2

aport=$(common_port 127.0.0.1)
start_netd netd.log --admin "$aport" --transport h2 --threads 1 --max-message 4m --log-level info
cli=("$bin/amaters-cli" --pki-dir pki --timeout 10000 "https://127.0.0.1:$port")
"${cli[@]}" bench --connections 1 --inflight 4 --duration 1 --warmup 0 >/dev/null 2>&1 || bad "warm-up bench failed"
base=$(rss_kb "$netd")
echo "daemon resident memory after warm-up: $base kB"

# attack NAME ARGS...: the attack with a bench alongside; leaves NAME.json, NAME-bench.json
attack() {
  local name=$1
  shift
  "${cli[@]}" bench --connections 1 --inflight 4 --duration 4 --warmup 0 --json >"$name-bench.json" 2>"$name-bench.err" &
  local b=$!
  timeout 60 $py "$here/h2_abuse.py" --port "$port" --pki pki --pid "$netd" "$@" >"$name.json" 2>"$name.err" ||
    bad "$name: the attacking client failed: $(cat "$name.err")"
  local brc=0
  wait $b || brc=$?
  echo "$name: attacker $(cat "$name.json")"
  echo "$name: bench (exit $brc) $(cat "$name-bench.json")"
  kill -0 "$netd" 2>/dev/null || { bad "$name: the daemon is gone"; tail -20 netd.log; exit 1; }
  bench_ok "$name: " "$brc" "$name-bench.json" "$name-bench.err"
}

for round in 1 2; do
  attack "noread$round" --attack noread --streams 200 --size 1048576
  sent=$(json "noread$round.json" sent_bytes)
  peak=$(json "noread$round.json" peak_rss_kb)
  [ "$sent" -lt $((48 << 20)) ] && ok "noread $round: flow control stopped the client after $sent of 209,716,200 bytes" ||
    bad "noread $round: the client got $sent bytes through"
  [ "$peak" -lt $((base + 72 * 1024)) ] && ok "noread $round: peak resident memory $peak kB (base $base kB)" ||
    bad "noread $round: peak resident memory $peak kB, base $base kB"
  wait_metric "$aport" amn_server_buffered_bytes 0 && ok "round $round: the daemon holds no buffered bytes afterwards" ||
    bad "round $round: amn_server_buffered_bytes is $(metric "$aport" amn_server_buffered_bytes) after the attack"
done

attack partial --attack partial --streams 32 --size 4000000 --part 3000000
sent=$(json partial.json sent_bytes)
peak=$(json partial.json peak_rss_kb)
[ "$sent" -lt $((48 << 20)) ] && ok "partial: flow control stopped the client after $sent of 96,000,160 bytes" ||
  bad "partial: the client got $sent bytes through"
[ "$peak" -lt $((base + 72 * 1024)) ] && ok "partial: peak resident memory $peak kB (base $base kB)" ||
  bad "partial: peak resident memory $peak kB, base $base kB"

echo "passed $passed, failed $failed"
[ "$failed" = 0 ]
