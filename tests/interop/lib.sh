# SPDX-License-Identifier: MIT OR Apache-2.0
# Shared shell helpers of the interop test scripts (sourced, POSIX sh).
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   - $1"; }
bad() { fail=$((fail + 1)); echo "FAIL - $1"; }
# check NAME COND...: runs the condition command, records the result.
check() { name=$1; shift; if "$@"; then ok "$name"; else bad "$name"; fi; }
summary() { echo "$1: $pass passed, $fail failed"; [ "$fail" -eq 0 ]; }

# start_server LOGFILE CMD...: starts CMD in the background with stdout+stderr
# to LOGFILE, waits (10 s max) for "listening on [HOST:]PORT", sets SRV_PID
# and SRV_PORT. Returns 1 if the server died or never got ready.
start_server() {
  log=$1; shift
  "$@" >"$log" 2>&1 &
  SRV_PID=$!
  SRV_PORT=
  i=0
  while [ $i -lt 100 ]; do
    SRV_PORT=$(sed -n 's/.*listening on \(.*:\)\{0,1\}\([0-9][0-9]*\).*/\2/p' "$log" | head -n 1)
    [ -n "$SRV_PORT" ] && return 0
    kill -0 "$SRV_PID" 2>/dev/null || break
    sleep 0.1
    i=$((i + 1))
  done
  echo "server did not start:"; cat "$log"
  return 1
}

# stop_server: SIGTERM, wait up to 5 s, then SIGKILL. Returns the exit status.
stop_server() {
  [ -n "${SRV_PID:-}" ] || return 0
  kill -TERM "$SRV_PID" 2>/dev/null
  i=0
  # up to 15 s: grpc C++'s echo server gives its calls 2 s, then joins its
  # threads, which on a loaded machine took more than 5 s once
  while kill -0 "$SRV_PID" 2>/dev/null && [ $i -lt 150 ]; do sleep 0.1; i=$((i + 1)); done
  if kill -0 "$SRV_PID" 2>/dev/null; then kill -KILL "$SRV_PID" 2>/dev/null; fi
  wait "$SRV_PID"
  rc=$?
  SRV_PID=
  return $rc
}

# json_num KEY JSON: prints the number stored under KEY in a flat JSON object.
json_num() { printf '%s\n' "$2" | sed -n "s/.*\"$1\": *\([-0-9.eE+]*\).*/\1/p"; }

# grpcxx_peer_checks BINDIR PORT PKI OTHER_PKI: grpcxx_client and grpcxx_bench
# against an mTLS echo server on 127.0.0.1:PORT whose certificates are in PKI
# (OTHER_PKI: an unrelated CA with its own client certificate).
grpcxx_peer_checks() {
  bin=$1 P=$3 O=$4
  SRV_PORT=$2
  T="--target 127.0.0.1:$SRV_PORT --server-name localhost"
  good="--ca $P/ca.pem --cert $P/client.pem --key $P/client-key.pem"
  cli() { timeout 20 "$bin/grpcxx_client" "$@"; }

  out=$(cli $T $good --data hello); rc=$?
  check "mTLS unary echo" [ "$rc" -eq 0 -a "$out" = "hello" ]
  out=$(cli --target "localhost:$SRV_PORT" $good --data viahostname); rc=$?
  check "mTLS via localhost name" [ "$rc" -eq 0 -a "$out" = "viahostname" ]
  err=$(cli $T $good --data x --metadata x-echo-a=b1 --metadata x-echo-k-bin=bin 2>&1 >/dev/null); rc=$?
  check "x-echo- metadata returned as trailers" \
    sh -c '[ "$0" -eq 0 ] && printf "%s" "$1" | grep -q "^trailer x-echo-a: b1$" && printf "%s" "$1" | grep -q "^trailer x-echo-k-bin: bin$"' "$rc" "$err"
  cli $T --ca "$P/ca.pem" --data x >/dev/null 2>&1; rc=$?
  check "no client certificate -> UNAVAILABLE (rc=$rc)" [ "$rc" -eq 14 ]
  cli $T --ca "$O/ca.pem" --cert "$P/client.pem" --key "$P/client-key.pem" --data x >/dev/null 2>&1; rc=$?
  check "untrusted server CA -> UNAVAILABLE (rc=$rc)" [ "$rc" -eq 14 ]
  cli $T --ca "$P/ca.pem" --cert "$O/client.pem" --key "$O/client-key.pem" --data x >/dev/null 2>&1; rc=$?
  check "client cert from another CA -> UNAVAILABLE (rc=$rc)" [ "$rc" -eq 14 ]
  cli $T $good --method /amaters.v1.AmateRS/Nope --data x >/dev/null 2>&1; rc=$?
  check "unknown method -> UNIMPLEMENTED (rc=$rc)" [ "$rc" -eq 12 ]
  # 1 us (grpc rounds deadlines up to 1 ms): a new connection plus a 16 MiB echo cannot make it.
  cli $T $good --timeout 0.001 --size 16777216 >/dev/null 2>&1; rc=$?
  check "1 us deadline -> DEADLINE_EXCEEDED (rc=$rc)" [ "$rc" -eq 4 ]
  out=$(cli $T $good --timeout 20000 --size 16777216); rc=$?
  check "16 MiB echo within its deadline (rc=$rc)" [ "$rc" -eq 0 -a "$out" = 16777216 ]
  out=$(cli $T $good --data still-up); rc=$?
  check "server still serves after rejected handshakes" [ "$rc" -eq 0 -a "$out" = "still-up" ]

  bench() { timeout 60 "$bin/grpcxx_bench" $T $good --duration 1 --warmup 0.2 "$@"; }
  for args in "--mode unary --connections 2 --inflight 16 --size 100" \
              "--mode stream --connections 2 --inflight 16 --size 100" \
              "--mode unary --connections 1 --inflight 1 --size 0" \
              "--mode stream --connections 1 --inflight 4 --size 1048576" \
              "--new-connection --connections 2 --size 100"; do
    j=$(bench $args); rc=$?
    echo "     bench $args: $j"
    e=$(json_num errors "$j"); c=$(json_num calls "$j"); p=$(json_num p50_us "$j")
    check "bench $args" [ "$rc" -eq 0 -a "${e:-x}" = 0 -a "${c:-0}" -gt 0 -a -n "$p" ]
  done
  # --new-connection: a channel (connection) per call: more channels than measured calls (warm-up too)
  k=$(json_num connects "$j")
  check "bench --new-connection: $k connections for $c measured calls" [ "${k:-0}" -gt "${c:-0}" ]
}
