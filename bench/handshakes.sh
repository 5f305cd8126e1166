#!/bin/sh
# SPDX-License-Identifier: MIT OR Apache-2.0
# Handshakes side by side on this machine (loopback, mTLS both sides): full
# handshakes per second (each call on a new connection: connect, handshake,
# one Execute call, close) and the latency of that first call (connect start
# to response), and over HTTP/3 the same with a resumed session (0-RTT):
#   ours h2:        amaters-cli bench --new-connection --transport h2 -> amaters-netd
#   ours h3:        amaters-cli bench --new-connection --transport h3 -> amaters-netd
#   ours h3 resume: amaters-cli bench --resume --transport h3         -> amaters-netd
#   grpcxx h2:      grpcxx_bench --new-connection (a channel per call) -> grpcxx_echo_server
#   grpcxx h2 resume: grpcxx_bench --resume (the channels share grpc core's TLS
#                   session cache: TLS 1.3 resumption, no 0-RTT)
# grpc C++ has no HTTP/3; our HTTP/2 has no TLS session resumption (no row
# "ours h2-resume"). Resumed rows are compared with grpc C++'s resumed row,
# the others with its full-handshake row. Runs alternate
# between the implementations so slow drifts of the machine hit all. Prints
# a Markdown table: per row the median handshakes/s with the min-max of the
# repetitions, the median p50/p99 first-call latency, the resumed / 0-RTT
# accepted connections (summed over the runs: a resumed row that did not
# resume shows it), errors, and handshakes/s against grpc C++.
#
# Usage: bench/handshakes.sh [--build DIR] [--reps N] [--duration S] [--warmup S]
#                            [--connections C] [--only ours|grpcxx] [--pin] [--raw FILE]
#   --build DIR       CMake build dir (default: build), as bench/compare.sh
#   --reps N          repetitions per row (default 5)
#   --duration S      measured seconds per run (default 5); --warmup S (default 1)
#   --connections C   handshakes in flight at once (default 4)
#   --pin             servers on CPU 0, bench clients on CPU 1 (taskset)
#   --raw FILE        also keep every run's JSON (TSV: impl scenario rep json)
# Each run opens thousands of TCP connections: short runs keep the client's
# ports in TIME_WAIT within the ephemeral range.
# Not a test: nothing here is registered with CTest.
set -eu

build=build reps=5 duration=5 warmup=1 conns=4 only= pin= raw=
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --connections) conns=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --pin) pin=1; shift ;;
    --raw) raw=$2; shift 2 ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

netd_args="--transport both"
. "$(dirname "$0")/lib_pair.sh"
start_servers

echo "# handshakes: reps=$reps duration=${duration}s warmup=${warmup}s connections=$conns cores=$(nproc)${pin:+ pinned}" >&2
common="--connections $conns --duration $duration --warmup $warmup"
r=1
while [ "$r" -le "$reps" ]; do
  echo "  run $r/$reps" >&2
  if want ours; then
    for tp in h2 h3; do
      run ours "$tp" $r "$cli" $tls --transport $tp "https://127.0.0.1:$ours_port" bench --new-connection $common --json
    done
    run ours h3-resume $r "$cli" $tls --transport h3 "https://127.0.0.1:$ours_port" bench --resume $common --json
  fi
  if want grpcxx; then
    run grpcxx h2 $r "$gbench" --target "127.0.0.1:$g_port" --server-name localhost $tls --new-connection $common
    run grpcxx h2-resume $r "$gbench" --target "127.0.0.1:$g_port" --server-name localhost $tls --resume $common
  fi
  r=$((r + 1))
done
[ -n "$raw" ] && cp "$results" "$raw"

python3 - "$results" <<'PY'
import json, statistics, sys
rows = [l.rstrip("\n").split("\t", 3) for l in open(sys.argv[1]) if l.strip()]
def runs(impl, scen):
    out = []
    for r in rows:
        if r[0] == impl and r[1] == scen and r[3] != "FAILED":
            try:
                out.append(json.loads(r[3]))
            except ValueError:
                pass
    return out, sum(1 for r in rows if r[0] == impl and r[1] == scen)
def gmed(scen):
    g, _ = runs("grpcxx", scen)
    return statistics.median(x["qps"] for x in g) if g else 0
print("| impl | transport | handshakes/s (median) | min–max | first call p50 µs | p99 µs | resumed | 0-RTT accepted | errors | ok runs | vs grpc C++ |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for impl, scen in (("ours", "h2"), ("ours", "h3"), ("ours", "h3-resume"), ("grpcxx", "h2"), ("grpcxx", "h2-resume")):
    good, n = runs(impl, scen)
    if not n:
        continue
    if not good:
        print("| %s | %s | - | - | - | - | - | - | - | 0/%d | |" % (impl, scen, n))
        continue
    q = [x["qps"] for x in good]
    med = statistics.median(q)
    quic = [x.get("quic", {}) for x in good]
    res = sum(x.get("resumed", 0) for x in quic) if impl == "ours" else sum(x.get("resumed", 0) for x in good)
    early = sum(x.get("early_accepted", 0) for x in quic) if impl == "ours" else "n/a"
    base = gmed("h2-resume" if scen.endswith("resume") else "h2")
    ratio = "%.2fx" % (med / base) if impl != "grpcxx" and base > 0 else ""
    print("| %s | %s | %.0f | %.0f–%.0f | %.0f | %.0f | %s | %s | %d | %d/%d | %s |" % (
        impl, scen, med, min(q), max(q), statistics.median(x["p50_us"] for x in good),
        statistics.median(x["p99_us"] for x in good), res, early, sum(int(x.get("errors", 0)) for x in good),
        len(good), n, ratio))
PY
