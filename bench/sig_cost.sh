#!/bin/sh
# SPDX-License-Identifier: MIT OR Apache-2.0
# The cost of signed queries and signed results: two daemons of the same build
# side by side, "plain" (no [auth]) and "signed" ([auth]
# require_client_signature + sign_results), the bench without and with --sign
# against them, interleaved in every round and on both transports (so both
# see the same machine load). Prints every run's calls/s and, per scenario,
# the median, the range and signed/plain. Not a CTest test.
# usage: bench/sig_cost.sh [--build DIR] [--reps N] [--duration S] [--warmup S] [--inflight M]
set -eu
build=build reps=5 duration=4 warmup=1 inflight=16
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --inflight) inflight=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
tmp=$(mktemp -d)
trap 'kill $plain $signed 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pp=$(freeport); sp=$(freeport)
printf '[auth]\nrequire_client_signature = true\nsign_results = true\nsignature_replay_entries = 1048576\n' >"$tmp/signed.toml"
"$build/amaters-netd" --listen "127.0.0.1:$pp" --pki-dir "$tmp/pki" --transport both --threads 1 --log-level warn \
  >"$tmp/plain.log" 2>&1 &
plain=$!
i=0; while [ $i -lt 100 ] && ! [ -s "$tmp/pki/quic-secret.key" ]; do sleep 0.1; i=$((i+1)); done
"$build/amaters-netd" --config "$tmp/signed.toml" --listen "127.0.0.1:$sp" --pki-dir "$tmp/pki" --transport both \
  --threads 1 --log-level warn >"$tmp/signed.log" 2>&1 &
signed=$!
for p in $pp $sp; do
  i=0; while [ $i -lt 100 ] && ! "$build/amaters-cli" --pki-dir "$tmp/pki" "https://localhost:$p" health >/dev/null 2>&1; do
    sleep 0.1; i=$((i+1)); done
done
: >"$tmp/res.tsv"
for mode in unary stream; do
  r=1
  while [ $r -le "$reps" ]; do
    for t in h2 h3; do
      for v in plain signed; do
        port=$pp sign=""
        if [ $v = signed ]; then port=$sp sign=--sign; fi
        echo "  $mode $t $v run $r/$reps" >&2
        out=$(timeout $((duration + warmup + 60)) "$build/amaters-cli" --pki-dir "$tmp/pki" --transport $t \
          "https://localhost:$port" bench $sign --connections 1 --inflight "$inflight" --duration "$duration" \
          --warmup "$warmup" --size 64 --mode $mode --json 2>/dev/null | tail -n 1) || out=FAILED
        printf '%s\t%s\t%s\t%s\n' "$mode" "$t" "$v" "$out" >>"$tmp/res.tsv"
      done
    done
    r=$((r + 1))
  done
done
python3 - "$tmp/res.tsv" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    mode, t, v, js = line.rstrip('\n').split('\t', 3)
    rows.setdefault((mode, t, v), []).append(None if js == 'FAILED' else json.loads(js))
print('| mode | transport | variant | calls/s, every run | median | min-max | p50 us (median) | errors |')
print('|---|---|---|---|---|---|---|---|')
med = {}
for (mode, t, v), rs in rows.items():
    ok = [r for r in rs if r]
    q = [r['qps'] for r in ok]
    med[(mode, t, v)] = statistics.median(q) if q else 0
    print('| %s | %s | %s | %s | %.0f | %.0f-%.0f | %.0f | %d |' % (
        mode, t, v, ' '.join('%.0f' % x for x in q), med[(mode, t, v)], min(q or [0]), max(q or [0]),
        statistics.median([r['p50_us'] for r in ok]) if ok else 0,
        sum(r['errors'] for r in ok) + len(rs) - len(ok)))
for mode in ('unary', 'stream'):
    for t in ('h2', 'h3'):
        p, s = med.get((mode, t, 'plain'), 0), med.get((mode, t, 'signed'), 0)
        if p:
            print('%s %s: signed/plain = %.2f' % (mode, t, s / p))
PY
