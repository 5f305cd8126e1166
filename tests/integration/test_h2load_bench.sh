#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# integration.h2load_bench: bench/h2load.sh still runs (functional only, no
# timing threshold): tiny durations, one repetition, every target (nghttpd,
# amaters-netd and grpcxx_echo_server under h2load; grpcxx_bench over mTLS
# against both gRPC servers); it exits 0, its correctness checks passed for
# every target and its table has one good run per row. Its one-call checker
# (bench/h2c_grpc.py) refuses a wrong answer from a real amaters-netd
# (grpc-status UNIMPLEMENTED) and a port with no server; bad options exit 2.
# usage: test_h2load_bench.sh BUILD_DIR
set -euo pipefail
bin=$1
here=$(cd "$(dirname "$0")" && pwd)
bench=$here/../../bench
for t in h2load nghttpd; do
  command -v $t >/dev/null || [ -x /usr/sbin/$t ] ||
    { echo "SKIP: no $t (apt-get install nghttp2-client nghttp2-server)"; exit 77; }
done
[ -x /usr/bin/time ] || { echo "SKIP: no /usr/bin/time (apt-get install time)"; exit 77; }
. "$here/proc_lib.sh"
need_module h2 python3-h2

# The checker against a real server: a right call passes, wrong ones do not.
"$bin/amaters-netd" --listen 127.0.0.1:0 --plaintext --transport h2 >netd.log 2>&1 &
pids+=($!)
wait_for netd.log "listening on" || { cat netd.log; echo "FAIL: daemon did not start"; exit 1; }
port=$(sed -n 's/.*listening on .*127\.0\.0\.1:\([0-9]*\).*/\1/p' netd.log | head -1)
$py "$bench/h2c_grpc.py" body --size 64 --out req.bin
rc=0
$py "$bench/h2c_grpc.py" check --port "$port" --path /amaters.v1.AmateRS/Execute --body req.bin --grpc 2>ok.err || rc=$?
[ $rc = 0 ] && grep -q "grpc-status 0" ok.err && ok "checker: Execute on amaters-netd passes" ||
  bad "checker: Execute on amaters-netd (exit $rc): $(cat ok.err)"
rc=0
$py "$bench/h2c_grpc.py" check --port "$port" --path /amaters.v1.AmateRS/Nope --body req.bin --grpc 2>nope.err || rc=$?
[ $rc = 1 ] && grep -q "grpc-status '12'" nope.err && ok "checker: an unknown method (grpc-status 12) fails it" ||
  bad "checker: an unknown method (exit $rc): $(cat nope.err)"
rc=0
$py "$bench/h2c_grpc.py" check --port "$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')" \
  --path /amaters.v1.AmateRS/Execute --body req.bin 2>none.err || rc=$?
[ $rc = 1 ] && grep -q "FAILED" none.err && ok "checker: no server fails it" || bad "checker: no server (exit $rc): $(cat none.err)"

# The whole script, every target, tiny runs.
rc=0
sh "$bench/h2load.sh" --build "$bin" --reps 1 --duration 1 --warmup 0 --streams 10 >table.md 2>run.err || rc=$?
if [ $rc = 0 ]; then ok "h2load.sh --reps 1 --duration 1 exits 0"; else bad "h2load.sh exit $rc: $(tail -n 20 run.err)"; fi
n=$(grep -c "requests, all 2xx, .* response bytes" run.err || true)
[ "$n" = 3 ] && ok "h2load -n: all 2xx and the exact response bytes from the 3 h2c targets" ||
  bad "h2load -n checks: $n of 3: $(cat run.err)"
n=$(grep -c ":status 200, 71 body bytes as expected, grpc-status 0" run.err || true)
[ "$n" = 2 ] && ok "one call to each gRPC server: grpc-status 0 and the echo" || bad "one-call checks: $n of 2"
for row in "nghttpd (static file) | h2c | h2load" "amaters-netd | h2c | h2load" "grpcxx_echo_server | h2c | h2load" \
  "amaters-netd | h2 + mTLS | grpcxx_bench" "grpcxx_echo_server | h2 + mTLS | grpcxx_bench"; do
  line=$(grep -F "| $row |" table.md || true)
  [[ "$line" == *"| 1/1 |"* ]] && ok "table row: $row, 1/1 runs" || bad "table row $row: '$line'"
done
n=$(grep -c "CPU % of one core: server [0-9]* (busiest thread [0-9]*), [a-z_0-9]* [0-9]*$" run.err || true)
[ "$n" = 5 ] && ok "every run prints the CPU use of server and client" || bad "CPU lines: $n of 5"

rc=0
sh "$bench/h2load.sh" --build "$bin" --only nope >bad.out 2>&1 || rc=$?
[ $rc = 2 ] && ok "an unknown target: exit 2" || bad "--only nope: exit $rc"
rc=0
sh "$bench/h2load.sh" --build "$bin" --threads 2 --clients 1 >bad.out 2>&1 || rc=$?
[ $rc = 2 ] && ok "--threads above --clients: exit 2" || bad "--threads 2 --clients 1: exit $rc"

echo "passed $passed, failed $failed"
[ "$failed" = 0 ]
