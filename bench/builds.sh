#!/bin/bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# Several builds of amaters-net side by side, pinned: one daemon per build
# (--transport both, on CPU 0), the bench client on CPU 1, runs interleaved
# build by build within each round so that drifts of the machine hit every
# build alike. Prints one TSV line per run:
#   round  scenario-transport  build  qps  p50_us  p99_us  errors
# (build = the name of the directory holding the build directory).
# Not a test: nothing here is registered with CTest.
#
# usage: bench/builds.sh [--rounds N] [--duration S] [--warmup S]
#                        [--scenario "NAME C M SIZE MODE TRANSPORT"]... BUILD_DIR...
#   each BUILD_DIR holds amaters-netd and amaters-cli; default scenarios:
#   latency-stream (1 connection, 1 in flight), tput-stream-c2 (2, 64),
#   tput-unary-c2 (2, 64), 64-byte payloads, over h3, and latency-stream over h2.
set -u
rounds=3 duration=3 warmup=1
scenarios=()
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --scenario) scenarios+=("$2"); shift 2 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: $0 [options] BUILD_DIR..." >&2; exit 2; }
[ ${#scenarios[@]} -gt 0 ] || scenarios=("latency-stream 1 1 64 stream h3" "tput-stream-c2 2 64 64 stream h3"
  "latency-stream 1 1 64 stream h2" "tput-unary-c2 2 64 64 unary h3")
builds=("$@")
tmp=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
ports=()
for i in "${!builds[@]}"; do
  b=${builds[$i]}
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$tmp/$i"
  "$b/amaters-cli" certs init "$tmp/$i/pki" >/dev/null 2>&1
  taskset -c 0 "$b/amaters-netd" --listen "127.0.0.1:$port" --pki-dir "$tmp/$i/pki" --transport both \
    --log-level warn >"$tmp/$i/netd.log" 2>&1 &
  pids+=($!)
  ports+=("$port")
  for _ in $(seq 100); do grep -q "listening on" "$tmp/$i/netd.log" && break; sleep 0.1; done
done
# field KEY JSON: a top-level number of the bench's JSON (its "series" repeats
# the percentile keys per second: a text match would take the last second's)
field() { python3 -c 'import json, sys; print(json.loads(sys.argv[2]).get(sys.argv[1], ""))' "$1" "$2" 2>/dev/null; }
for r in $(seq "$rounds"); do
  for sc in "${scenarios[@]}"; do
    read -r name c m size mode tp <<<"$sc"
    for i in "${!builds[@]}"; do
      b=${builds[$i]}
      out=$(timeout $((duration + warmup + 60)) taskset -c 1 "$b/amaters-cli" --pki-dir "$tmp/$i/pki" \
        --transport "$tp" "https://localhost:${ports[$i]}" bench --connections "$c" --inflight "$m" \
        --duration "$duration" --warmup "$warmup" --size "$size" --mode "$mode" --json 2>/dev/null | tail -n 1)
      printf '%s\t%s-%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$name" "$tp" "$(basename "$(dirname "$b")")" \
        "$(field qps "$out")" "$(field p50_us "$out")" "$(field p99_us "$out")" "$(field errors "$out")"
    done
  done
done
