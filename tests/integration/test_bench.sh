#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# integration.bench: amaters-cli bench's open loop, call count and outputs,
# against amaters-netd over HTTP/2 and HTTP/3 (mTLS, the development PKI).
#   - --rps R -n K: exactly K calls, sent at their scheduled seconds (the
#     series has R calls in each whole second, by the second each call was
#     meant to be sent), no error; the JSON histogram, the series and the
#     CSV agree with the totals; --plot writes an SVG that parses as XML;
#   - closed loop -n K: exactly K measured calls;
#   - coordinated omission: the daemon is stopped (SIGSTOP) for 1 s in the
#     middle of a run. Open loop at 100 calls/s, the calls meant for that
#     second all wait: dozens take over 0.5 s. Closed loop with one call in
#     flight, the same stall shows as about one slow call, which is what
#     --rps exists to avoid;
#   - bad flags (64) and unwritable outputs (73): a clear message and their exit code.
# usage: test_bench.sh BUILD_DIR
set -euo pipefail
bin=$1
here=$(cd "$(dirname "$0")" && pwd)
. "$here/proc_lib.sh"
command -v gnuplot >/dev/null || { echo "SKIP: no gnuplot (apt-get install gnuplot-nox)"; exit 77; }

start_netd netd.log --transport both
url=https://127.0.0.1:$port
cli() { "$bin/amaters-cli" --pki-dir pki "$@"; }

# slow FILE MIN_NS: calls in the JSON histogram at MIN_NS or above
slow() { json "$1" "sum(c for lo, hi, c in histogram if lo >= $2)"; }

for tp in h2 h3; do
  rc=0
  cli --transport $tp "$url" bench --rps 200 -n 300 --warmup 0 --inflight 64 --json --csv "open-$tp.csv" \
    --plot "open-$tp.svg" >"open-$tp.json" 2>"open-$tp.err" || rc=$?
  if [ $rc = 0 ] && [ "$(json "open-$tp.json" "(loop, calls, errors)")" = "('open', 300, 0)" ]; then
    ok "$tp: open loop -n 300 at 200/s: 300 calls, no error"
  else
    bad "$tp: open loop -n 300 (exit $rc): $(cat "open-$tp.json" "open-$tp.err")"
    continue
  fi
  # calls i = 0..299 are due at i / 200 s: 200 in the first second, 100 in the second
  got=$(json "open-$tp.json" "[(s['t'], s['calls'] + s['errors']) for s in series if s['calls'] + s['errors']]")
  [ "$got" = "[(1, 200), (2, 100)]" ] && ok "$tp: the series counts each call in the second it was due" ||
    bad "$tp: series by second: $got"
  [ "$(json "open-$tp.json" "sum(c for lo, hi, c in histogram) == calls and all(lo <= hi for lo, hi, c in histogram)")" = True ] &&
    ok "$tp: the histogram holds every measured call" || bad "$tp: histogram: $(json "open-$tp.json" histogram)"
  csv_ok=$($py - "open-$tp.csv" "open-$tp.json" <<'PY'
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1])))
d = json.load(open(sys.argv[2]))
same = len(rows) == len(d['series']) and all(
    int(r['second']) == s['t'] and int(r['calls']) == s['calls'] and int(r['errors']) == s['errors']
    and abs(float(r['p99_us']) - s['p99_us']) < 0.2 for r, s in zip(rows, d['series']))
print(same)
PY
)
  [ "$csv_ok" = True ] && ok "$tp: --csv has the JSON's series" || bad "$tp: --csv differs: $(cat "open-$tp.csv")"
  svg=$($py -c 'import sys, xml.etree.ElementTree as E; r = E.parse(sys.argv[1]).getroot(); print(r.tag.endswith("svg") and "p99" in open(sys.argv[1]).read())' "open-$tp.svg" 2>&1 || true)
  [ "$svg" = True ] && ok "$tp: --plot wrote an SVG with the percentiles" || bad "$tp: --plot: $svg"

  rc=0
  cli --transport $tp "$url" bench -n 500 --inflight 4 --warmup 0.2s --json >"closed-$tp.json" 2>"closed-$tp.err" || rc=$?
  [ $rc = 0 ] && [ "$(json "closed-$tp.json" "(loop, calls, errors, len(endpoints))")" = "('closed', 500, 0, 1)" ] &&
    ok "$tp: closed loop -n 500: exactly 500 measured calls" ||
    bad "$tp: closed loop -n 500 (exit $rc): $(cat "closed-$tp.json" "closed-$tp.err")"
done

# A stall of the daemon in the middle of a run: the bench prints a progress
# line per second (runs over 3 s); the stall starts after the first.
stalled_run() {
  local name=$1
  shift
  cli "$url" bench --warmup 0 --duration 4s --json "$@" >"$name.json" 2>"$name.err" &
  local b=$!
  wait_for "$name.err" 'bench \[ *1s\]' 60 || { bad "$name: no progress line: $(cat "$name.err")"; kill $b; return 1; }
  kill -STOP "$netd"
  sleep 1 # the length of the stall (the fault), not a synchronisation
  kill -CONT "$netd"
  wait $b || true
}
stalled_run open-stall --rps 100 --inflight 400
stalled_run closed-stall --inflight 1
o=$(slow open-stall.json 500000000) c=$(slow closed-stall.json 500000000)
if [ "$(json open-stall.json errors)" = 0 ] && [ "$o" -ge 30 ]; then
  ok "open loop: the 1 s stall shows in $o calls over 0.5 s (p99 $(json open-stall.json p99_us) us)"
else
  bad "open loop: $o calls over 0.5 s, errors $(json open-stall.json errors)"
fi
if [ "$c" -ge 1 ] && [ "$c" -le 3 ]; then
  ok "closed loop: the same stall shows in only $c call(s) over 0.5 s (p99 $(json closed-stall.json p99_us) us)"
else
  bad "closed loop: $c calls over 0.5 s"
fi

# bad flags, unwritable outputs
expect_fail() { # CODE REGEX ARGS...
  local want=$1 re=$2 rc=0
  shift 2
  cli "$url" bench "$@" >out.txt 2>err.txt || rc=$?
  if [ $rc = "$want" ] && grep -Eq -- "$re" err.txt; then ok "bench $*: exit $rc, $(head -1 err.txt)"
  else bad "bench $*: exit $rc (want $want): $(cat err.txt)"; fi
}
expect_fail 64 "--rps: '0' is not a rate" --rps 0
expect_fail 64 "--rps: 'fast' is not a rate" --rps fast
expect_fail 64 "--mode stream is closed loop only" --rps 10 --mode stream
expect_fail 64 "--count: 0 is out of range" -n 0
expect_fail 73 "--plot: cannot write no/such/dir/p.svg" -n 10 --warmup 0 --plot no/such/dir/p.svg
expect_fail 73 "--csv: cannot write no/such/dir/s.csv" -n 10 --warmup 0 --csv no/such/dir/s.csv

echo "bench: $passed passed, $failed failed"
[ "$failed" = 0 ]
