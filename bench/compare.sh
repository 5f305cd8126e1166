#!/bin/sh
# SPDX-License-Identifier: MIT OR Apache-2.0
# Side-by-side benchmark on this machine (loopback, mTLS both sides):
#   ours:   amaters-cli bench    -> amaters-netd          (echo handlers)
#   grpcxx: grpcxx_bench (C++)   -> grpcxx_echo_server    (grpc 1.51 callback API)
# Both servers use the same certificates (the daemon's dev PKI) and run at the
# same time (the idle one costs nothing); runs alternate ours/grpcxx so slow
# drifts of the machine hit both. Prints a Markdown table with the median of
# the repetitions for every metric (errors: summed).
#
# Usage: bench/compare.sh [--build DIR] [--reps N] [--duration S] [--warmup S]
#                         [--small BYTES] [--only ours|grpcxx] [--cross] [--pin] [--raw FILE]
#   --build DIR   CMake build dir (default: build) holding amaters-netd, amaters-cli
#                 and tests/interop/grpcxx_{echo_server,bench} (configure with AMN_INTEROP=ON)
#   --reps N      repetitions per scenario and implementation (default 3)
#   --duration S  measured seconds per run (default 5); --warmup S (default 1)
#   --small B     payload of the latency/throughput scenarios (default 64)
#   --cross       also run each client against the other server (rows "cli->grpcxx",
#                 "grpcxx->netd"), which separates server cost from client cost
#   --pin         servers on CPU 0, bench clients on CPU 1 (taskset)
#   --raw FILE    also keep every run's JSON (TSV: impl scenario rep json)
# Rows: "ours" = amaters-cli bench -> amaters-netd; "grpcxx" = grpcxx_bench ->
# grpcxx_echo_server. mb_per_s counts payload bytes both ways (as both benches).
# Use an optimised build (-DCMAKE_BUILD_TYPE=RelWithDebInfo or Release).
# Not a test: nothing here is registered with CTest.
set -eu

build=build reps=3 duration=5 warmup=1 small=64 only= cross= pin= raw=
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --small) small=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --cross) cross=1; shift ;;
    --pin) pin=1; shift ;;
    --raw) raw=$2; shift 2 ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

[ -z "$cross" ] || [ -z "$only" ] || { echo "--cross needs both sides (no --only)" >&2; exit 2; }
. "$(dirname "$0")/lib_pair.sh"
start_servers

# Scenarios: name connections inflight size mode
scenarios="latency-unary 1 1 $small unary
latency-stream 1 1 $small stream
tput-unary-c1 1 64 $small unary
tput-unary-c2 2 64 $small unary
tput-stream-c1 1 64 $small stream
tput-stream-c2 2 64 $small stream
1mib-unary 1 1 1048576 unary
1mib-unary-if8 1 8 1048576 unary
1mib-stream 1 1 1048576 stream"

echo "# compare: reps=$reps duration=${duration}s warmup=${warmup}s cores=$(nproc)${pin:+ pinned}" >&2
echo "$scenarios" | while read -r name c m size mode; do
  r=1
  while [ $r -le "$reps" ]; do
    echo "  $name run $r/$reps" >&2
    common="--connections $c --inflight $m --duration $duration --size $size --mode $mode"
    want ours && run ours "$name" $r "$cli" $tls "https://localhost:$ours_port" bench $common --warmup "$warmup" --json
    want grpcxx && run grpcxx "$name" $r "$gbench" --target "127.0.0.1:$g_port" --server-name localhost \
      $tls $common --warmup "$warmup"
    if [ -n "$cross" ]; then
      run "cli->grpcxx" "$name" $r "$cli" $tls "https://localhost:$g_port" bench $common --warmup "$warmup" --json
      run "grpcxx->netd" "$name" $r "$gbench" --target "127.0.0.1:$ours_port" --server-name localhost \
        $tls $common --warmup "$warmup"
    fi
    r=$((r + 1))
  done
done
[ -n "$raw" ] && cp "$results" "$raw"

python3 - "$results" "$scenarios" <<'EOF'
import json, statistics, sys
rows = [l.rstrip("\n").split("\t", 3) for l in open(sys.argv[1]) if l.strip()]
scen = [l.split() for l in sys.argv[2].splitlines()]
keys = ["qps", "mb_per_s", "p50_us", "p90_us", "p99_us", "p999_us", "max_us"]
print("| scenario | conns | inflight | size | mode | impl | qps | MB/s | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | errors | ok runs | qps vs grpcxx |")
print("|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for name, c, m, size, mode in scen:
    med = {}
    for impl in ("ours", "grpcxx", "cli->grpcxx", "grpcxx->netd"):
        runs = [r[3] for r in rows if r[0] == impl and r[1] == name]
        if not runs:
            continue
        good = []
        for j in runs:
            try:
                good.append(json.loads(j))
            except ValueError:
                pass
        if good:
            med[impl] = {k: statistics.median(float(g.get(k, 0)) for g in good) for k in keys}
            errs = sum(int(g.get("errors", 0)) for g in good)
            cells = ["%.0f" % med[impl]["qps"], "%.1f" % med[impl]["mb_per_s"]] + \
                    ["%.0f" % med[impl][k] for k in keys[2:]]
        else:
            errs, cells = "-", ["-"] * len(keys)
        ratio = ""
        if impl != "grpcxx" and impl in med:
            g = [r[3] for r in rows if r[0] == "grpcxx" and r[1] == name]
            gq = [json.loads(j)["qps"] for j in g if j != "FAILED"]
            if gq and statistics.median(gq) > 0:
                ratio = "%.2fx" % (med[impl]["qps"] / statistics.median(gq))
        print("| %s | %s | %s | %s | %s | %s | %s | %s | %d/%d | %s |" % (
            name, c, m, size, mode, impl, " | ".join(cells), errs, len(good), len(runs), ratio))
EOF
