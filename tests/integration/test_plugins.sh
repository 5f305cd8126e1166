#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# integration.plugins: handler plug-ins (include/amn/plugin.h) in amaters-netd.
#   - the examples' echo plug-in (--handler): Execute over HTTP/2 and HTTP/3,
#     an ExecuteStream; the log names the plug-in;
#   - the examples' worker plug-in from the config file ([server] handler,
#     handler_arg = "workers=2"): answers from its threads; a call whose
#     deadline passes is abandoned by the worker; on SIGTERM a call in
#     progress finishes during the drain, then fini stops the workers and the
#     daemon exits 0;
#   - refused, each with its reason and exit status 2, before anything
#     listens: a file that does not exist, a name without '/', a library
#     without the entry symbol, one built for another ABI, one with an
#     unresolved symbol, an init that fails (its message shown); a bad
#     handler in the config file is named with FILE:LINE; --check-config
#     loads and checks the plug-in and says why it is refused.
# usage: test_plugins.sh BUILD_DIR ECHO_SO WORKER_SO BAD_PLUGIN_DIR
set -euo pipefail
bin=$1 echo_so=$2 worker_so=$3 bad_dir=$4
here=$(cd "$(dirname "$0")" && pwd)
. "$here/proc_lib.sh"
cli() { "$bin/amaters-cli" --pki-dir pki "$@"; }

start_netd echo.log --handler "$echo_so"
grep -q "handlers: the plug-in echo-example 1.0 from $echo_so" echo.log && ok "the log names the plug-in" ||
  bad "no plug-in line: $(cat echo.log)"
for tp in h2 h3; do
  out=$(cli --transport $tp "https://127.0.0.1:$port" execute --data "plug-in $tp" 2>&1) || true
  [ "$out" = "plug-in $tp" ] && ok "echo plug-in: Execute over $tp" || bad "echo plug-in over $tp: $out"
done
out=$(printf 'one\ntwo\n' | cli "https://127.0.0.1:$port" stream 2>&1) || true
[ "$out" = $'one\ntwo' ] && ok "echo plug-in: ExecuteStream" || bad "echo plug-in stream: $out"
kill -TERM "$netd"
wait "$netd" && ok "echo plug-in: clean stop" || bad "echo plug-in: exit $?"

# the worker plug-in, from the config file, with the admin listener to see calls in flight
cat >worker.toml <<TOML
[server]
handler = "$worker_so"
handler_arg = "workers=2"
drain_timeout_ms = 20000
TOML
start_netd worker.log --config worker.toml --admin 0
aport=$(sed -n 's/.*admin: .*(port \([0-9]*\)).*/\1/p' worker.log | head -1)
grep -q "worker_plugin: 2 worker threads" worker.log && ok "worker plug-in: init got handler_arg" ||
  bad "worker plug-in: no init line: $(cat worker.log)"
url=https://127.0.0.1:$port
out=$(cli "$url" execute --data "fhe query" 2>&1) || true
[ "$out" = "FHE QUERY" ] && ok "worker plug-in answers from its threads" || bad "worker plug-in answered '$out'"
rc=0
out=$(cli --timeout 300ms --metadata x-work-ms=60000 "$url" execute --data slow 2>&1) || rc=$?
if [ $rc = 4 ] && wait_for worker.log "abandoned a cancelled call after" 100; then
  ok "worker plug-in: a call past its deadline is DEADLINE_EXCEEDED and abandoned by its worker"
else
  bad "worker plug-in deadline (exit $rc, $out): $(cat worker.log)"
fi
# a call of 1.5 s of work, then SIGTERM while it runs: it finishes in the drain
started() {
  curl -s "http://127.0.0.1:$aport/metrics" |
    awk '/^amn_server_calls_started_total\{method="\/amaters.v1.AmateRS\/Execute"/ {s += $NF} END {print s + 0}'
}
before=$(started)
cli --timeout 30s --metadata x-work-ms=1500 "$url" execute --data "drained" >drain.out 2>drain.err &
call=$!
for _ in $(seq 1 100); do [ "$(started)" -gt "$before" ] && break; sleep 0.1; done
[ "$(started)" -gt "$before" ] || bad "the 1.5 s call never started"
kill -TERM "$netd"
rc=0
wait $call || rc=$?
[ $rc = 0 ] && [ "$(cat drain.out)" = "DRAINED" ] && ok "worker plug-in: a call running at SIGTERM finished in the drain" ||
  bad "the call during the drain: exit $rc, $(cat drain.out drain.err)"
rc=0
wait "$netd" || rc=$?
[ $rc = 0 ] && grep -q "worker_plugin: stopped" worker.log && ok "worker plug-in: fini ran, the daemon exited 0" ||
  bad "worker plug-in stop: exit $rc: $(tail -5 worker.log)"

# refusals
refused() { # LABEL REGEX ARGS...
  local label=$1 re=$2 rc=0
  shift 2
  "$bin/amaters-netd" --listen 127.0.0.1:0 --pki-dir pki "$@" >refused.log 2>&1 || rc=$?
  if [ $rc = 2 ] && grep -Eq -- "$re" refused.log && ! grep -q "listening on" refused.log; then
    ok "$label: exit 2, $(grep -E -- "$re" refused.log | head -1)"
  else
    bad "$label: exit $rc: $(cat refused.log)"
  fi
}
refused "missing file" "cannot load the plug-in ./no-such-plugin.so: .*No such file" --handler ./no-such-plugin.so
refused "a name without /" "unknown handler 'libx.so' \(echo, or the path of a plug-in" --handler libx.so
refused "no entry symbol" "is not an amaters-netd plug-in: it has no symbol amn_plugin_v1" \
  --handler "$bad_dir/libbad_plugin_no_symbol.so"
refused "another ABI" "was built for plug-in ABI 42; this amaters-netd .* loads ABI 1: rebuild it" \
  --handler "$bad_dir/libbad_plugin_abi.so"
refused "unresolved symbol" "cannot load the plug-in .*undefined symbol: amn_no_such_function" \
  --handler "$bad_dir/libbad_plugin_unresolved.so"
refused "failing init" "the plug-in bad failed to start: the backend's database 'db1' is unreachable" \
  --handler "$bad_dir/libbad_plugin_init_fails.so" --handler-arg db1
refused "the echo handler with an argument" "the echo handler takes no argument" --handler-arg x
printf '[server]\n\nhandler = "nothing-here"\n' >bad.toml
refused "config file" "bad.toml:3: server.handler: unknown handler 'nothing-here'" --config bad.toml
rc=0
"$bin/amaters-netd" --pki-dir pki --handler "$bad_dir/libbad_plugin_abi.so" --check-config >check.log 2>&1 || rc=$?
[ $rc = 1 ] && grep -q "was built for plug-in ABI 42" check.log && ok "--check-config checks the plug-in" ||
  bad "--check-config with a bad plug-in: exit $rc: $(cat check.log)"
rc=0
"$bin/amaters-netd" --pki-dir pki --handler "$worker_so" --check-config >check.log 2>&1 || rc=$?
[ $rc = 0 ] && ! grep -q "worker threads" check.log && ok "--check-config loads a good plug-in without starting it" ||
  bad "--check-config with the worker plug-in: exit $rc: $(cat check.log)"

echo "plugins: $passed passed, $failed failed"
[ "$failed" = 0 ]
