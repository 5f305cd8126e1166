#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# test_examples.sh BUILD_DIR EXAMPLES_BIN_DIR PROC_LIB: the example programs
# against each other over loopback with a development PKI: echo_server and
# worker_server; client (blocking, async, stream; HTTP/2 and HTTP/3) against
# echo_server; pool_client over both servers; a call to worker_server whose
# deadline passes while a worker holds it is abandoned by the worker; both
# servers stop cleanly on SIGTERM.
set -uo pipefail
bin=$(cd "$1" && pwd) ex=$(cd "$2" && pwd)
# shellcheck source=../tests/integration/proc_lib.sh
source "$3" # $work (entered), pki/, ok/bad, wait_for, cleanup of $pids

# start NAME LOG ARGS...: an example server; sets $port
start() {
  local name=$1 log=$2
  shift 2
  "$ex/$name" pki 127.0.0.1:0 "$@" >"$log" 2>&1 &
  pids+=($!)
  wait_for "$log" "listening on" || { cat "$log"; echo "FAIL: $name did not start"; exit 1; }
  port=$(sed -n 's/.*listening on https:\/\/localhost:\([0-9]*\).*/\1/p' "$log" | head -1)
}
start echo_server echo.log
echo_pid=${pids[-1]} echo_url=https://localhost:$port
start worker_server worker.log 2
worker_pid=${pids[-1]} worker_url=https://localhost:$port

for tp in h2 h3; do
  out=$("$ex/client" "$echo_url" pki $tp 2>&1)
  rc=$?
  if [ $rc = 0 ] && grep -q "client: all calls answered" <<<"$out" && grep -q "async 10/10 ok" <<<"$out" &&
     grep -q "stream OK, 3 answers" <<<"$out"; then
    ok "client over $tp: unary, 10 async, a stream of 3"
  else
    bad "client over $tp (exit $rc): $out"
  fi
done

out=$("$ex/pool_client" pki "$echo_url" "$worker_url" 2>&1)
rc=$?
if [ $rc = 0 ] && grep -q "20 calls, 0 failed" <<<"$out" && [ "$(grep -c ': [1-9][0-9]* ok, 0 failed' <<<"$out")" = 2 ]; then
  ok "pool_client: 20 calls over both servers, each took some"
else
  bad "pool_client (exit $rc): $out"
fi

cli() { "$bin/amaters-cli" --pki-dir pki "$@"; }
out=$(cli "$worker_url" execute --data "fhe query" 2>&1)
[ "$out" = "FHE QUERY" ] && ok "worker_server answers from a worker thread" || bad "worker_server answered '$out'"

# A call that would take 60 s of work, with a 300 ms deadline: the client gets
# DEADLINE_EXCEEDED (gRPC code 4) and the worker stops early.
out=$(cli --timeout 300 --metadata x-work-ms=60000 "$worker_url" execute --data slow 2>&1)
rc=$?
if [ $rc = 4 ] && wait_for worker.log "abandoned a cancelled call after" 100 && grep -q "a call was cancelled" worker.log; then
  ms=$(sed -n 's/.*abandoned a cancelled call after \([0-9]*\) ms.*/\1/p' worker.log | head -1)
  [ "$ms" -lt 60000 ] && ok "deadline: the client got DEADLINE_EXCEEDED, the worker gave up after $ms ms" ||
    bad "the worker gave up only after $ms ms"
else
  bad "deadline (exit $rc, $out): $(cat worker.log)"
fi

for p in "$echo_pid" "$worker_pid"; do kill -TERM "$p"; done
wait "$echo_pid"; erc=$?
wait "$worker_pid"; wrc=$?
if [ $erc = 0 ] && [ $wrc = 0 ] && grep -q "echo_server: stopped" echo.log && grep -q "worker_server: stopped" worker.log; then
  ok "both servers stopped cleanly on SIGTERM"
else
  bad "stop: echo_server exit $erc, worker_server exit $wrc: $(cat echo.log worker.log)"
fi
pids=()
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
