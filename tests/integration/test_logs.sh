#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# integration.logs: amaters-netd's log lines.
#   - --log-format json --access-log: every line of the daemon's log is one
#     JSON object (python's json parses each); one access line per call with
#     the client certificate's subject, method, transport, status, duration,
#     bytes in and out and the deadline, for calls over HTTP/2 and HTTP/3;
#   - SIGUSR1 makes the log more verbose (debug lines appear), SIGUSR2
#     quieter (at warn, no info line but the access lines);
#   - the same from the config file ([log] format, access; [admin]
#     bind_address) in text format under systemd (JOURNAL_STREAM names the
#     log file): lines carry a "<N>" priority and no timestamp; the access
#     line's fields as key=value.
# usage: test_logs.sh BUILD_DIR
set -euo pipefail
bin=$1
here=$(cd "$(dirname "$0")" && pwd)
. "$here/proc_lib.sh"

# jl FILE EXPR: EXPR over `lines` (every line of FILE parsed as JSON; a line
# that does not parse fails the script with the line)
jl() {
  $py - "$@" <<'PY'
import json, sys
lines = []
for n, raw in enumerate(open(sys.argv[1], encoding='utf-8'), 1):
    try: lines.append(json.loads(raw))
    except Exception as e: sys.exit('line %d is not JSON (%s): %r' % (n, e, raw))
print(eval(' '.join(sys.argv[2].split()), {'lines': lines}))
PY
}
count() { jl "$1" "sum(1 for l in lines if $2)"; }

# the port from a JSON log: the library's "listening on" message
start_json() {
  "$bin/amaters-netd" --listen 127.0.0.1:0 --pki-dir pki "$@" >json.log 2>&1 &
  netd=$!
  pids+=("$netd")
  wait_for json.log '"msg":"listening on' || { cat json.log; echo "FAIL: daemon did not start"; exit 1; }
  port=$(sed -n 's/.*"msg":"listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' json.log | head -1)
}
start_json --transport both --threads 1 --log-format json --access-log
cli=("$bin/amaters-cli" --pki-dir pki "https://127.0.0.1:$port")
timeout 30 "${cli[@]}" --timeout 7000 --transport h2 execute --data hello >/dev/null
timeout 30 "${cli[@]}" --timeout 0 --transport h3 execute --data hello >/dev/null
wait_for json.log '"msg":"access".*"transport":"h3"' || bad "no HTTP/3 access line"

n=$(count json.log True)
[ "$n" -ge 6 ] && [ "$n" = "$(wc -l <json.log)" ] && ok "all $n lines of the log parse as JSON" || bad "only $n lines"
acc="[l for l in lines if l['msg'] == 'access']"
[ "$(jl json.log "len($acc)")" = 2 ] && ok "two access lines for two calls" || bad "access lines: $(grep access json.log)"
want_h2="{'peer': 'CN=amaters-dev-client,O=amaters-net development', 'method': '/amaters.v1.AmateRS/Execute',
 'transport': 'h2', 'status': 'OK', 'code': 0, 'bytes_in': 12, 'bytes_out': 12, 'deadline_ms': 7000,
 'level': 'info', 'source': 'amaters-net'}"
[ "$(jl json.log "all($acc[0][k] == v for k, v in $want_h2.items())")" = True ] &&
  ok "HTTP/2 access line: subject, method, status, bytes, deadline" || bad "HTTP/2 access line: $(jl json.log "$acc[0]")"
[ "$(jl json.log "$acc[1]['transport'] == 'h3' and $acc[1]['deadline_ms'] is None and $acc[1]['bytes_in'] == 12
  and $acc[1]['status'] == 'OK' and $acc[1]['addr'].startswith('127.0.0.1:')")" = True ] &&
  ok "HTTP/3 access line (no deadline: null)" || bad "HTTP/3 access line: $(jl json.log "$acc[1]")"
[ "$(jl json.log "all(isinstance(l['duration_us'], int) and l['duration_us'] >= 0 for l in $acc)")" = True ] &&
  ok "durations in microseconds" || bad "durations"
[ "$(jl json.log "all(l['time'].endswith('Z') and l['level'] in ('error','warn','info','debug') for l in lines)")" = True ] &&
  ok "every line has time and level" || bad "time / level missing"
[ "$(count json.log "l['level'] == 'debug'")" = 0 ] && ok "no debug line at level info" || bad "debug lines at info"

# --- the level at run time ------------------------------------------------------
kill -USR1 "$netd"
wait_for json.log '"msg":"SIGUSR1: log level now debug"' && ok "SIGUSR1: level debug" || bad "SIGUSR1 not logged"
timeout 30 "${cli[@]}" --transport h2 execute --data hello >/dev/null
wait_for json.log '"level":"debug"' && ok "debug lines after SIGUSR1" || bad "no debug line after SIGUSR1"
kill -USR2 "$netd"
wait_for json.log 'log level now info' || bad "first SIGUSR2 not logged"
kill -USR2 "$netd"
wait_for json.log '"level":"warn",.*"msg":"SIGUSR2: log level now warn"' && ok "SIGUSR2 twice: level warn" ||
  bad "second SIGUSR2 not logged"
mark=$(wc -l <json.log)
timeout 30 "${cli[@]}" --transport h2 execute --data hello >/dev/null
for _ in $(seq 1 100); do [ "$(jl json.log "len($acc)")" = 4 ] && break; sleep 0.1; done
tail -n +"$((mark + 1))" json.log >after.log
[ "$(count after.log "l['msg'] == 'access'")" = 1 ] && [ "$(count after.log "l['msg'] != 'access' and l['level'] in ('info', 'debug')")" = 0 ] &&
  ok "at warn: the access line only" || bad "at warn: $(cat after.log)"
kill -TERM "$netd"
wait "$netd" && ok "JSON daemon stopped cleanly" || bad "JSON daemon exit"

# --- text under systemd, from the config file -----------------------------------
aport=$($py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf '[log]\naccess = true\nformat = "text"\n[admin]\nbind_address = "127.0.0.1:%s"\n' "$aport" >ops.toml
: >text.log
JOURNAL_STREAM=$(stat -c '%d:%i' text.log) "$bin/amaters-netd" --listen 127.0.0.1:0 --pki-dir pki --config ops.toml \
  --transport h2 --threads 1 >>text.log 2>&1 &
netd=$!
pids+=("$netd")
wait_for text.log "listening on" || { cat text.log; bad "text daemon did not start"; }
port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' text.log | head -1)
grep -Eq '^<6>amaters-net: listening on 127\.0\.0\.1:' text.log && ok "journal: '<6>' priority, no timestamp" ||
  bad "journal lines: $(head -3 text.log)"
[ "$(grep -cv '^<[3467]>' text.log)" = 0 ] && ok "journal: every line has a priority" || bad "$(grep -v '^<' text.log)"
grep -q "^<6>amaters-netd: admin: GET /metrics and /healthz over plain HTTP on 127.0.0.1:$aport" text.log &&
  [ "$(curl -s --max-time 5 "http://127.0.0.1:$aport/healthz")" = ok ] && ok "[admin] bind_address from the config" ||
  bad "admin listener from the config"
timeout 30 "$bin/amaters-cli" --pki-dir pki --timeout 5000 "https://127.0.0.1:$port" execute --data hello >/dev/null
wait_for text.log '^<6>amaters-net: access ' || true
line=$(grep '^<6>amaters-net: access ' text.log || true)
want='<6>amaters-net: access peer="CN=amaters-dev-client,O=amaters-net development" addr=127.0.0.1:[0-9]+ '
want+='method=/amaters.v1.AmateRS/Execute transport=h2 status=OK code=0 duration_us=[0-9]+ bytes_in=12 bytes_out=12 '
want+='deadline_ms=5000$'
grep -Eq "^$want" <<<"$line" && ok "text access line from [log] access = true" || bad "text access line: '$line'"
kill -TERM "$netd"
wait "$netd" && ok "text daemon stopped cleanly" || bad "text daemon exit"

echo "passed $passed, failed $failed"
[ "$failed" = 0 ]
