#!/bin/sh
# SPDX-License-Identifier: MIT OR Apache-2.0
# Concurrent mTLS connections: one amaters-netd, one pooled client that opens
# N connections (pool_min_connections = N) and keeps N unary calls in flight
# across them for D seconds. Reports the connections the server held (its open
# sockets, sampled), its RSS, and the bench's JSON. Not a CTest test.
# usage: bench/connscale.sh [--build DIR] [--conns N] [--duration S] [--transport h2|h3]
set -eu
build=build conns=10000 duration=10 transport=h2
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$2; shift 2 ;;
    --conns) conns=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --transport) transport=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
need=$((conns + 200))
[ "$(ulimit -n)" -ge "$need" ] || ulimit -n "$need" 2>/dev/null || {
  echo "need 'ulimit -n' >= $need (have $(ulimit -n))" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'kill $srv 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
srvt=h2; [ "$transport" = h3 ] && srvt=both
"$build/amaters-netd" --listen "127.0.0.1:$port" --pki-dir "$tmp/pki" --transport $srvt --log-level warn >"$tmp/netd.log" 2>&1 &
srv=$!
i=0; while [ $i -lt 100 ] && ! "$build/amaters-cli" --pki-dir "$tmp/pki" "https://127.0.0.1:$port" health >/dev/null 2>&1; do sleep 0.1; i=$((i+1)); done
printf '[client]\npool_min_connections = %d\npool_max_connections = %d\n' "$conns" "$conns" >"$tmp/client.toml"
start=$(date +%s.%N)
"$build/amaters-cli" --config "$tmp/client.toml" --pki-dir "$tmp/pki" --transport "$transport" \
  "https://127.0.0.1:$port" bench --connections 1 --inflight "$conns" --duration "$duration" --warmup 5 \
  --size 64 --mode unary --json >"$tmp/bench.json" 2>"$tmp/bench.err" &
cli=$!
peak=0 rss=0
while kill -0 $cli 2>/dev/null; do
  n=$(ls /proc/$srv/fd 2>/dev/null | wc -l)
  r=$(awk '/VmRSS/{print $2}' /proc/$srv/status 2>/dev/null || echo 0)
  [ "$n" -gt "$peak" ] && peak=$n
  [ "${r:-0}" -gt "$rss" ] && rss=$r
  sleep 0.5
done
wait $cli || true
echo "transport=$transport conns=$conns duration=${duration}s"
# HTTP/3 connections share the server's UDP sockets: the bench's "connects"
# (connections the client established and kept) counts them
echo "server: peak open descriptors $peak (HTTP/2: one per connection), peak RSS ${rss} KiB"
cat "$tmp/bench.json"; echo
tail -n 3 "$tmp/bench.err" >&2
