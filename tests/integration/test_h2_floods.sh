#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# HTTP/2 abuse from an authenticated client (h2_flood.py writes the frames
# itself), against amaters-netd, each with a bench on another connection:
#   rapidreset    10,000 streams opened and reset at once: GOAWAY (nghttp2's
#                 stream reset rate limit: INTERNAL_ERROR), closed
#   continuation  a header block continued by 10,000 CONTINUATION frames:
#                 GOAWAY ENHANCE_YOUR_CALM naming the flood, closed
#   hpackbomb     2,000 requests of 100 references to a 4 KiB header
#                 (400 KiB decoded each): every one answered with a gRPC
#                 status (RESOURCE_EXHAUSTED, the headers are too large)
#   settings      10,000 SETTINGS never acknowledged by the client: GOAWAY
#                 ENHANCE_YOUR_CALM naming the flood, closed
#   ping          10,000 PINGs: GOAWAY ENHANCE_YOUR_CALM too_many_pings, logged
#                 once
#   streams       10,000 requests opened at once, past the 1024 concurrent
#                 streams: the excess refused with RST_STREAM REFUSED_STREAM
# After each: the daemon is up, the bench saw no failure; after all, the
# daemon's resident memory is within 32 MiB of where it started.
# usage: test_h2_floods.sh BUILD_DIR
set -euo pipefail
bin=$1
here=$(cd "$(dirname "$0")" && pwd)
. "$here/proc_lib.sh"
need_module hpack python3-h2

start_netd netd.log --transport h2 --threads 1 --log-level info
cli=("$bin/amaters-cli" --pki-dir pki --timeout 10000 "https://127.0.0.1:$port")
"${cli[@]}" bench --connections 1 --inflight 4 --duration 1 --warmup 0 >/dev/null 2>&1 || bad "warm-up bench failed"
rss0=$(rss_kb "$netd")

# flood ATTACK COUNT PYTHON-CONDITION DESCRIPTION
flood() {
  local at=$1 count=$2 cond=$3 what=$4
  "${cli[@]}" bench --connections 1 --inflight 2 --duration 2 --warmup 0 --json >bench.json 2>bench.err &
  local b=$!
  timeout 60 $py "$here/h2_flood.py" --port "$port" --pki pki --attack "$at" --count "$count" --read 2 >"$at.json" ||
    bad "$at: the attacking client failed"
  local brc=0
  wait $b || brc=$?
  echo "$at: $(cut -c1-400 "$at.json")"
  kill -0 "$netd" 2>/dev/null || { bad "$at: the daemon is gone"; tail -20 netd.log; exit 1; }
  [ "$(json "$at.json" "$cond")" = True ] && ok "$at: $what" || bad "$at: expected $what"
  bench_ok "$at: " "$brc" bench.json bench.err
}

flood rapidreset 10000 "goaway is not None and closed is not None and closed['how'] == 'eof'" \
  "GOAWAY, then the connection closed"
flood continuation 10000 \
  "goaway is not None and goaway['code'] == 'ENHANCE_YOUR_CALM' and 'CONTINUATION' in goaway['debug'] and closed is not None" \
  "GOAWAY ENHANCE_YOUR_CALM naming the CONTINUATION flood, then closed"
flood hpackbomb 2000 "responses.get('200/8', 0) == 2000 and goaway is None" \
  "every request answered RESOURCE_EXHAUSTED, the connection kept"
flood settings 10000 \
  "goaway is not None and goaway['code'] == 'ENHANCE_YOUR_CALM' and 'Flooding' in goaway['debug'] and closed is not None" \
  "GOAWAY ENHANCE_YOUR_CALM naming the flood, then closed"
flood ping 10000 "goaway is not None and goaway['debug'] == 'too_many_pings' and closed is not None" \
  "GOAWAY ENHANCE_YOUR_CALM too_many_pings, then closed"
flood streams 10000 "rst.get('REFUSED_STREAM', 0) >= 8000 and goaway is None" \
  "the streams past the limit refused with REFUSED_STREAM, the connection kept"

n=$(grep -c "too many PINGs" netd.log || true)
[ "$n" = 1 ] && ok "the PING flood is logged once" || bad "the PING flood is logged $n times"
grep -q "GOAWAY INTERNAL_ERROR" netd.log && ok "nghttp2's own GOAWAY (rapid reset) is logged" ||
  bad "no log line for the rapid reset GOAWAY"
rss=$(rss_kb "$netd")
[ "$rss" -lt $((rss0 + 32768)) ] && ok "daemon memory after the floods: $rss kB (from $rss0 kB)" ||
  bad "daemon memory grew from $rss0 to $rss kB"
echo "passed $passed, failed $failed"
[ "$failed" = 0 ]
