#!/bin/sh
# SPDX-License-Identifier: MIT OR Apache-2.0
# The seed's latency target: N concurrent mTLS connections (one pooled
# client: pool_min_connections = N), each making R
# unary calls per second (open loop: `amaters-cli bench --rps`, latency from
# each call's intended send time, so a stall counts for every call it
# delays), on each transport, against one amaters-netd (--transport both).
# Prints one Markdown row per transport and rate: calls, errors, p50, p99,
# p99.9, max, late sends (the client could not send on time), and the
# daemon's CPU (% of one core) and resident memory at the end, and the
# client's CPU. Not a CTest test.
# usage: bench/openloop.sh [--build DIR] [--conns N] [--rates "R1 R2 .."] [--duration S]
#                          [--warmup S] [--transports "h2 h3"] [--size B]
#   --rates: calls per second per connection (fractions allowed, e.g. 0.5);
#            total rate = N x R
set -eu
build=build conns=10000 rates=1 duration=60 warmup=5 transports="h2 h3" size=64
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$2; shift 2 ;;
    --conns) conns=$2; shift 2 ;;
    --rates) rates=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --transports) transports=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
need=$((conns + 200))
[ "$(ulimit -n)" -ge "$need" ] || ulimit -n "$need" 2>/dev/null || {
  echo "need 'ulimit -n' >= $need (have $(ulimit -n))" >&2; exit 1; }
tmp=$(mktemp -d)
srv=
trap '[ -n "$srv" ] && kill $srv 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT INT TERM
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf '[network]\nmax_connections = %d\n' $((conns + 100)) >"$tmp/netd.toml"
# one pooled client holding the N connections (the calls spread over them)
printf '[client]\npool_min_connections = %d\npool_max_connections = %d\n' "$conns" "$conns" >"$tmp/client.toml"
"$build/amaters-netd" --listen "127.0.0.1:$port" --pki-dir "$tmp/pki" --transport both --config "$tmp/netd.toml" \
  --log-level warn >"$tmp/netd.log" 2>&1 &
srv=$!
i=0; while [ $i -lt 100 ] && ! "$build/amaters-cli" --pki-dir "$tmp/pki" "https://127.0.0.1:$port" health >/dev/null 2>&1; do sleep 0.1; i=$((i+1)); done
hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
echo "| transport | connections | calls/s per conn | calls | errors | p50 µs | p99 µs | p99.9 µs | max µs | late sends | daemon CPU % | daemon RSS MB | client CPU s |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for t in $transports; do
  for r in $rates; do
    total=$(python3 -c "print(max(1, round($conns * $r)))")
    echo "  $t: $conns connections x $r calls/s = $total calls/s for ${duration}s (+${warmup}s warm-up)" >&2
    c0=$(cpu_ticks $srv)
    start=$(date +%s.%N)
    /usr/bin/time -f '%U %S' -o "$tmp/time" "$build/amaters-cli" --config "$tmp/client.toml" --pki-dir "$tmp/pki" \
      --transport "$t" "https://127.0.0.1:$port" bench --connections 1 --inflight "$conns" --rps "$total" \
      --duration "$duration" --warmup "$warmup" --size "$size" --json >"$tmp/out.json" 2>"$tmp/err" || true
    end=$(date +%s.%N)
    c1=$(cpu_ticks $srv)
    rss=$(rss_kb $srv)
    python3 - "$tmp/out.json" "$tmp/time" "$t" "$conns" "$r" "$c0" "$c1" "$hz" "$start" "$end" "$rss" <<'PY' || { echo "| $t | $conns | $r | FAILED: $(tail -1 "$tmp/err") |"; }
import json, sys
out, tf, t, n, r, c0, c1, hz, start, end, rss = sys.argv[1:]
d = json.loads(open(out).read().strip().splitlines()[-1])
u, s = (float(x) for x in open(tf).read().split()[-2:])
cpu = (int(c1) - int(c0)) / int(hz) / (float(end) - float(start)) * 100
print(f"| {t} | {n} | {r} | {d['calls']} | {d['errors']} | {d['p50_us']:.0f} | {d['p99_us']:.0f} | "
      f"{d['p999_us']:.0f} | {d['max_us']:.0f} | {d['late_sends']} | {cpu:.0f} | {int(rss) / 1024:.0f} | {u + s:.1f} |")
PY
  done
done
