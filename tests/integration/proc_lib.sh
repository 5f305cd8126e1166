# SPDX-License-Identifier: MIT OR Apache-2.0
# Shared by the integration tests that run servers as processes: a work
# directory (entered) that is removed at exit, together with the processes
# whose pids the test adds to $pids; the result counters; a development PKI
# in pki/. Sourced after bin=BUILD_DIR is set.
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
passed=0 failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }
cd "$work"
"$bin/amaters-cli" certs init pki >/dev/null
# The system interpreter (Debian's python3-* modules live there).
py=/usr/bin/python3
# need_module MODULE PACKAGE: skip the test (CTest SKIP_RETURN_CODE 77) without it
need_module() { $py -c "import $1" 2>/dev/null || { echo "SKIP: $py has no $1 module (apt-get install $2)"; exit 77; }; }
# wait_for FILE REGEX [TENTHS]: until FILE has a line matching REGEX
wait_for() { for _ in $(seq 1 "${3:-100}"); do grep -Eq -- "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; return 1; }
# rss_kb PID: resident memory of a process
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# json FILE EXPR: a Python expression over the keys of a JSON object
json() { $py -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, d))' "$@"; }
# bench_ok LABEL RC JSON ERR: a bench (amaters-cli bench --json) that ran
# alongside an attack exited 0 and saw no failed call
bench_ok() {
  [ "$2" = 0 ] && [ "$(json "$3" errors)" = 0 ] && ok "$1the bench alongside made $(json "$3" calls) calls, none failed" ||
    bad "$1the bench alongside failed (exit $2): $(cat "$4")"
}
# start_netd LOG ARGS...: amaters-netd on 127.0.0.1, any port, with the PKI
# above; sets $netd (its pid, killed at exit) and $port
start_netd() {
  local log=$1
  shift
  "$bin/amaters-netd" --listen 127.0.0.1:0 --pki-dir pki "$@" >"$log" 2>&1 &
  netd=$!
  pids+=("$netd")
  wait_for "$log" "listening on" || { cat "$log"; echo "FAIL: daemon did not start"; exit 1; }
  port=$(sed -n 's/.*listening on .*127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -1)
  [ -n "$port" ] || { cat "$log"; echo "FAIL: no port in the daemon's log"; exit 1; }
}
# A sanitizer build returns freed memory to the allocator at once, not to a
# quarantine, so that resident memory measures what a daemon holds.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=1"
# metric PORT NAME: the value of an unlabelled metric on the admin listener
metric() { curl -s --max-time 5 "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n {print $2}'; }
# wait_metric PORT NAME VALUE [TRIES]: waits (0.1 s a try) until the metric has the value
wait_metric() { for _ in $(seq 1 "${4:-100}"); do [ "$(metric "$1" "$2")" = "$3" ] && return 0; sleep 0.1; done; return 1; }
# common_port ADDR...: a port free for TCP and UDP on every one of the addresses
common_port() {
  $py - "$@" <<'PY'
import socket, sys
while True:
    t = socket.socket(); t.bind((sys.argv[1], 0)); p = t.getsockname()[1]; t.close()
    try:
        for a in sys.argv[1:]:
            for k in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                s = socket.socket(type=k); s.bind((a, p)); s.close()
        print(p); break
    except OSError:
        pass
PY
}
# lines FILE REGEX: how many lines of FILE match (0 without the file)
lines() { local n; n=$(grep -Ec -- "$2" "$1" 2>/dev/null) || true; echo "${n:-0}"; }
# wait_lines FILE REGEX N [TENTHS]: until FILE has at least N lines matching REGEX
wait_lines() { for _ in $(seq 1 "${4:-300}"); do [ "$(lines "$1" "$2")" -ge "$3" ] && return 0; sleep 0.1; done; return 1; }
