#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# integration.conn_memory: a connection's memory on the server does not grow
# with the number of calls it carried. Per transport, two fresh daemons (one
# event loop) each serve 100 connections from the bench: 30 calls per
# connection for one, 1,500 for the other. Their resident memory afterwards
# must be within 30 % of each other (nghttp2 kept up to max_concurrent_streams
# closed streams per connection, about 250 KiB after a thousand calls: three
# times the memory, before nghttp2_option_set_no_closed_streams).
# usage: test_conn_memory.sh BUILD_DIR
set -euo pipefail
bin=$1
here=$(cd "$(dirname "$0")" && pwd)
. "$here/proc_lib.sh"

rss_after() { # TRANSPORT CALLS: the daemon's RSS (KiB) after 100 connections made CALLS calls in all
  start_netd "netd-$1-$2.log" --threads 1 --transport "$1"
  local rc=0
  "$bin/amaters-cli" --pki-dir pki --transport "$1" "https://127.0.0.1:$port" bench --connections 100 \
    --inflight 100 -n "$2" --warmup 0 --json >"bench-$1-$2.json" 2>"bench-$1-$2.err" || rc=$?
  [ $rc = 0 ] && [ "$(json "bench-$1-$2.json" "(calls, errors)")" = "($2, 0)" ] ||
    { bad "$1: the bench of $2 calls (exit $rc): $(cat "bench-$1-$2.err")"; echo 0; return; }
  rss_kb "$netd"
  kill "$netd"
  wait "$netd" 2>/dev/null || true
}
for tp in h2 h3; do
  few=$(rss_after $tp 3000)
  many=$(rss_after $tp 150000)
  if [ "$few" -gt 0 ] && [ "$many" -gt 0 ] && [ $((many * 10)) -le $((few * 13)) ]; then
    ok "$tp: 100 connections after 30 calls each: $few KiB; after 1,500 calls each: $many KiB"
  else
    bad "$tp: 100 connections after 30 calls each: $few KiB; after 1,500 calls each: $many KiB (over 30 % more)"
  fi
done
echo "conn_memory: $passed passed, $failed failed"
[ "$failed" = 0 ]
