#!/bin/sh
# SPDX-License-Identifier: MIT OR Apache-2.0
# Our HTTP/3 beside our HTTP/2, same daemon (--transport both), same run:
# the bench alternates transports, N repetitions per scenario, and prints the
# median of each metric. Not a CTest test.
# usage: bench/h3_vs_h2.sh [--build DIR] [--reps N] [--duration S] [--warmup S]
set -eu
build=build reps=3 duration=5 warmup=1
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
tmp=$(mktemp -d)
trap 'kill $srv 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$build/amaters-netd" --listen "127.0.0.1:$port" --pki-dir "$tmp/pki" --transport both --log-level warn >"$tmp/netd.log" 2>&1 &
srv=$!
i=0; while [ $i -lt 100 ] && ! grep -q "listening on" "$tmp/netd.log"; do sleep 0.1; i=$((i+1)); done
scenarios="latency-unary 1 1 64 unary
latency-stream 1 1 64 stream
tput-unary-c2 2 64 64 unary
tput-stream-c2 2 64 64 stream
1mib-unary 1 1 1048576 unary"
: >"$tmp/res.tsv"
echo "$scenarios" | while read -r name c m size mode; do
  r=1
  while [ $r -le "$reps" ]; do
    for t in h2 h3; do
      echo "  $name $t run $r/$reps" >&2
      out=$(timeout $((duration + warmup + 60)) "$build/amaters-cli" --pki-dir "$tmp/pki" --transport $t \
        "https://localhost:$port" bench --connections "$c" --inflight "$m" --duration "$duration" --warmup "$warmup" \
        --size "$size" --mode "$mode" --json 2>/dev/null | tail -n 1) || out=FAILED
      printf '%s\t%s\t%s\n' "$name" "$t" "$out" >>"$tmp/res.tsv"
    done
    r=$((r + 1))
  done
done
python3 - "$tmp/res.tsv" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, t, js = line.rstrip('\n').split('\t', 2)
    rows.setdefault((name, t), []).append(None if js == 'FAILED' else json.loads(js))
keys = ['qps', 'p50_us', 'p90_us', 'p99_us', 'p999_us', 'max_us']
print('| scenario | transport | ' + ' | '.join(keys) + ' | errors | ok runs | h3 qps / h2 |')
print('|---|---|' + '---:|' * (len(keys) + 3))
order = []
for (n, t) in rows:
    if n not in order: order.append(n)
for n in order:
    med = {}
    for t in ('h2', 'h3'):
        runs = [r for r in rows.get((n, t), []) if r]
        if not runs:
            print(f'| {n} | {t} | ' + ' | '.join('-' for _ in keys) + ' | - | 0 | |'); continue
        med[t] = {k: statistics.median(r[k] for r in runs) for k in keys}
        err = sum(r.get('errors', 0) for r in runs)
        ratio = f"{med['h3']['qps'] / med['h2']['qps']:.2f}" if t == 'h3' and 'h2' in med and med['h2']['qps'] else ''
        print(f'| {n} | {t} | ' + ' | '.join(f'{med[t][k]:.0f}' for k in keys) + f' | {err} | {len(runs)}/{len(rows[(n, t)])} | {ratio} |')
PY
