#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# integration.metrics: amaters-netd's admin listener (--admin) serves the
# server's metrics in Prometheus text format on a port of its own.
#   - calls over HTTP/2 and HTTP/3 move the counters by exactly what they were:
#     calls started and finished by method, transport and status, message
#     sizes, bytes in and out, handshakes; a client without a certificate (TCP)
#     or with one from another CA (QUIC) is a failed handshake; HTTP/3 connections report their RTT when they end;
#   - `promtool check metrics` accepts the text;
#   - a real Prometheus (Debian package prometheus, on 127.0.0.1 only, data
#     in the work directory) scrapes the daemon, and its query API returns the
#     count of the calls made;
#   - /healthz answers ok, then 503 "draining" (and amn_server_draining 1)
#     while a stop waits on an open call.
# Without the prometheus binaries the test fails (scripts/deps.sh installs them).
# usage: test_metrics.sh BUILD_DIR
set -euo pipefail
bin=$1
here=$(cd "$(dirname "$0")" && pwd)
. "$here/proc_lib.sh"
for b in prometheus promtool; do
  command -v "$b" >/dev/null ||
    { echo "FAIL: no '$b' binary: install the Debian package prometheus (scripts/deps.sh does)"; exit 1; }
done

start_netd netd.log --transport both --threads 2 --admin 127.0.0.1:0
aport=$(sed -n 's/.*admin: .*(port \([0-9]*\)).*/\1/p' netd.log | head -1)
[ -n "$aport" ] || { cat netd.log; echo "FAIL: no admin port in the daemon's log"; exit 1; }
murl=http://127.0.0.1:$aport

# get URL: the body (the status line and headers too with -i)
get() { curl -s --max-time 5 "$@"; }
# value FILE SERIES: the sample of SERIES (exact name and labels) in a scrape, or "absent"
value() {
  $py - "$1" "$2" <<'PY'
import sys
want = sys.argv[2]
for line in open(sys.argv[1]):
    if line.startswith('#'): continue
    name, _, v = line.rstrip('\n').rpartition(' ')
    if name == want: print(v); break
else: print('absent')
PY
}
# expect FILE SERIES VALUE: the series has exactly that value
expect() {
  local v
  v=$(value "$1" "$2")
  [ "$v" = "$3" ] && ok "$2 = $3" || bad "$2 = $v, expected $3"
}
# at_least FILE SERIES N
at_least() {
  local v
  v=$(value "$1" "$2")
  [ "$v" != absent ] && $py -c "import sys; sys.exit(0 if float('$v') >= $3 else 1)" && ok "$2 = $v (>= $3)" ||
    bad "$2 = $v, expected >= $3"
}
# poll_metric SERIES N [TENTHS]: until the scrape shows SERIES >= N; leaves it in m.txt
poll_metric() {
  for _ in $(seq 1 "${3:-100}"); do
    get "$murl/metrics" >m.txt || true
    local v
    v=$(value m.txt "$1")
    [ "$v" != absent ] && $py -c "import sys; sys.exit(0 if float('$v') >= $2 else 1)" && return 0
    sleep 0.1
  done
  return 1
}

# --- before any call --------------------------------------------------------
get -i "$murl/metrics" >m0.txt
grep -q '^HTTP/1.1 200' m0.txt && grep -qi '^Content-Type: text/plain; version=0.0.4' m0.txt &&
  ok "GET /metrics: 200, text/plain; version=0.0.4" || bad "GET /metrics: $(head -3 m0.txt)"
get "$murl/metrics" >m0.txt
E='method="/amaters.v1.AmateRS/Execute"'
expect m0.txt "amn_server_calls_started_total{$E,transport=\"h2\"}" 0
[ "$(get "$murl/healthz")" = ok ] && ok "/healthz: ok" || bad "/healthz: $(get -i "$murl/healthz")"
[ "$(get -o /dev/null -w '%{http_code}' "$murl/nothing")" = 404 ] && ok "unknown path: 404" || bad "unknown path"
[ "$(get -o /dev/null -w '%{http_code}' -X POST "$murl/metrics")" = 405 ] && ok "POST: 405" || bad "POST"

# --- calls over both transports ---------------------------------------------
cli=("$bin/amaters-cli" --pki-dir pki --timeout 10000 "https://127.0.0.1:$port")
for i in 1 2 3; do timeout 30 "${cli[@]}" --transport h2 execute --data hello >/dev/null; done
for i in 1 2; do timeout 30 "${cli[@]}" --transport h3 execute --data hello >/dev/null; done
timeout 30 "${cli[@]}" --transport h3 health >/dev/null
# a TLS client without a certificate: the server refuses its handshake
$py - "$port" <<'PY' || true
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(['h2'])
s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5))
try: s.recv(100)
except Exception: pass
PY
poll_metric 'amn_server_handshakes_total{transport="h2",result="failed"}' 1 || bad "no failed HTTP/2 handshake counted"
# a QUIC client whose certificate comes from another CA: a failed HTTP/3 handshake
"$bin/amaters-cli" certs init pki2 >/dev/null
timeout 30 "$bin/amaters-cli" --ca pki/ca.pem --cert pki2/client.pem --key pki2/client-key.pem --timeout 3000 \
  --transport h3 "https://127.0.0.1:$port" health >/dev/null 2>&1 || true
poll_metric 'amn_server_handshakes_total{transport="h3",result="failed"}' 1 || bad "no failed HTTP/3 handshake counted"
# QUIC connections report their RTT once their closing period is over
poll_metric 'amn_server_quic_rtt_seconds_count' 3 || bad "the three QUIC connections' RTT not counted"
get "$murl/metrics" >m1.txt
expect m1.txt "amn_server_calls_started_total{$E,transport=\"h2\"}" 3
expect m1.txt "amn_server_calls_finished_total{$E,transport=\"h2\",code=\"OK\"}" 3
expect m1.txt "amn_server_calls_started_total{$E,transport=\"h3\"}" 2
expect m1.txt "amn_server_calls_finished_total{$E,transport=\"h3\",code=\"OK\"}" 2
expect m1.txt 'amn_server_calls_finished_total{method="/grpc.health.v1.Health/Check",transport="h3",code="OK"}' 1
expect m1.txt "amn_server_call_duration_seconds_count{$E,transport=\"h2\"}" 3
expect m1.txt "amn_server_call_duration_seconds_bucket{$E,transport=\"h2\",le=\"+Inf\"}" 3
# a QueryRequest of "hello" is 7 bytes (tag, length, 5), the echo's answer the same
expect m1.txt "amn_server_request_message_bytes_sum{$E,transport=\"h2\"}" 21
expect m1.txt "amn_server_response_message_bytes_sum{$E,transport=\"h3\"}" 14
expect m1.txt "amn_server_request_message_bytes_bucket{$E,transport=\"h2\",le=\"64\"}" 3
# with the 5-byte gRPC prefix: 12 per Execute; the health request 5, its answer 7
expect m1.txt 'amn_server_received_bytes_total{transport="h2"}' 36
expect m1.txt 'amn_server_sent_bytes_total{transport="h2"}' 36
expect m1.txt 'amn_server_received_bytes_total{transport="h3"}' 29
expect m1.txt 'amn_server_sent_bytes_total{transport="h3"}' 31
at_least m1.txt 'amn_server_connections_opened_total{transport="h2"}' 4
at_least m1.txt 'amn_server_handshakes_total{transport="h2",result="ok"}' 3
at_least m1.txt 'amn_server_handshakes_total{transport="h3",result="ok"}' 3
expect m1.txt 'amn_server_connections{transport="h2",state="open"}' 0
at_least m1.txt 'amn_server_quic_rtt_seconds_bucket{le="+Inf"}' 3
expect m1.txt 'amn_server_draining' 0
if promtool check metrics <m1.txt >promtool.out 2>&1; then ok "promtool check metrics: clean"
else bad "promtool check metrics: $(cat promtool.out)"; fi

# --- a real Prometheus scrapes the daemon -----------------------------------
pport=$($py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >prometheus.yml <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: amaters-netd
    static_configs:
      - targets: ['127.0.0.1:$aport']
EOF
prometheus --config.file=prometheus.yml --storage.tsdb.path="$work/tsdb" --web.listen-address="127.0.0.1:$pport" \
  --log.level=warn >prometheus.log 2>&1 &
pids+=($!)
q="amn_server_calls_finished_total{method=\"/amaters.v1.AmateRS/Execute\",transport=\"h2\",code=\"OK\"}"
# promq QUERY: the first sample's value of an instant query, or nothing
promq() {
  curl -s --max-time 2 -G "http://127.0.0.1:$pport/api/v1/query" --data-urlencode "query=$1" 2>/dev/null |
    $py -c 'import json,sys
try:
    d = json.load(sys.stdin); r = d["data"]["result"]
    print(r[0]["value"][1] if d["status"] == "success" and r else "")
except Exception: print("")'
}
got=
for _ in $(seq 1 600); do # up to 60 s: start-up, then the first scrapes
  got=$(promq "$q" || true)
  [ -n "$got" ] && break
  sleep 0.1
done
[ "$got" = 3 ] && ok "Prometheus scraped the daemon: its query API says $q = 3" ||
  { bad "Prometheus query: '$got', expected 3"; tail -20 prometheus.log; }
up=$(promq 'up{job="amaters-netd"}' || true)
[ "$up" = 1 ] && ok "Prometheus: up{job=\"amaters-netd\"} = 1" || bad "Prometheus: up = '$up'"

# --- drain: /healthz says so while a call holds the stop ----------------------
mkfifo in.fifo
timeout 60 "${cli[@]}" --transport h2 stream <in.fifo >stream.out 2>&1 &
spid=$!
exec 3>in.fifo
echo first >&3
wait_for stream.out first || bad "the stream call did not answer"
kill -TERM "$netd"
code=
for _ in $(seq 1 100); do
  code=$(get -o /dev/null -w '%{http_code}' "$murl/healthz" || true)
  [ "$code" = 503 ] && break
  sleep 0.1
done
[ "$code" = 503 ] && ok "/healthz: 503 while draining" || bad "/healthz while draining: $code"
get "$murl/metrics" >m2.txt || true
expect m2.txt 'amn_server_draining' 1
exec 3>&-
wait "$spid" || true
rc=0
for _ in $(seq 1 150); do kill -0 "$netd" 2>/dev/null || break; sleep 0.1; done
wait "$netd" || rc=$?
[ "$rc" = 0 ] && ok "daemon stopped cleanly after the drain" || bad "daemon exit $rc"

echo "passed $passed, failed $failed"
[ "$failed" = 0 ]
