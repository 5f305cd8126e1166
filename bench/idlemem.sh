#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# Memory per idle connection: one amaters-netd (mTLS), one client
# (tests/integration/idleconns) that opens N connections, makes one call on
# each and keeps them open, idle. Reports the daemon's resident memory with
# no connection (after one call), with the N idle connections (once its
# amn_server_connections gauge counts them all), and the cost per connection
# = (RSS at N - RSS at 0) / N. Not a CTest test (the test is
# integration.idle_conn_memory).
# usage: bench/idlemem.sh [--build DIR] [--conns N] [--transport h2|h3] [--threads T]
set -euo pipefail
build=build conns=10000 transport=h2 threads=0
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$2; shift 2 ;;
    --conns) conns=$2; shift 2 ;;
    --transport) transport=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
build=$(cd "$build" && pwd)
need=$((conns + 200)) # per process: the daemon's sockets, the client's (HTTP/3: a UDP socket per connection)
[ "$(ulimit -n)" -ge "$need" ] || ulimit -n "$need" 2>/dev/null || {
  echo "need 'ulimit -n' >= $need (have $(ulimit -n))" >&2; exit 1; }
tmp=$(mktemp -d)
srv= cli=
cleanup() {
  if [ -n "$cli" ]; then kill "$cli" 2>/dev/null || true; fi
  if [ -n "$srv" ]; then kill "$srv" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT
cd "$tmp"; [ -n "${KEEP:-}" ] && echo "work directory: $tmp"
"$build/amaters-cli" certs init pki >/dev/null
# no idle timeout and room for every connection; the admin listener for the gauge
printf '[network]\nidle_timeout_ms = 0\nmax_connections = %d\n' $((conns + 100)) >netd.toml
admin=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
srvt=h2; [ "$transport" = h3 ] && srvt=both
"$build/amaters-netd" --config netd.toml --listen 127.0.0.1:0 --pki-dir pki --transport $srvt --threads "$threads" \
  --admin "$admin" --log-level info >netd.log 2>&1 &
srv=$!
for _ in $(seq 1 100); do grep -q "listening on" netd.log && break; sleep 0.1; done
port=$(sed -n 's/.*listening on .*127\.0\.0\.1:\([0-9]*\).*/\1/p' netd.log | head -1)
[ -n "$port" ] || { cat netd.log; exit 1; }
gauge() { curl -s --max-time 5 "http://127.0.0.1:$admin/metrics" |
  awk -v n="amn_server_connections{transport=\"$transport\",state=\"open\"}" '$1 == n {print $2}'; }
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$srv/status"; }
"$build/amaters-cli" --pki-dir pki --transport "$transport" "https://127.0.0.1:$port" health >/dev/null
rss0=$(rss)
start=$(date +%s.%N)
coproc IC { exec "$build/tests/integration/idleconns" --url "https://127.0.0.1:$port" --pki-dir pki \
  --conns "$conns" --transport "$transport" --timeout 600000 2>idleconns.err; }
cli=$IC_PID
read -r -u "${IC[0]}" line || { cat idleconns.err; exit 1; }
[ "$line" = "ready $conns" ] || { echo "idleconns: $line"; exit 1; }
echo "calls 64 $conns" >&"${IC[1]}"
read -r -u "${IC[0]}" line
[ "$line" = "calls ok=$conns failed=0" ] || { echo "idleconns: $line"; cat idleconns.err; exit 1; }
for _ in $(seq 1 600); do [ "$(gauge)" = "$conns" ] && break; sleep 0.1; done
[ "$(gauge)" = "$conns" ] || { echo "the daemon counts $(gauge) connections, not $conns" >&2; exit 1; }
secs=$(echo "$(date +%s.%N) - $start" | bc)
rssn=$(rss)
echo "transport=$transport conns=$conns threads=$threads connected+called in ${secs}s"
echo "daemon RSS: ${rss0} KiB with no connection, ${rssn} KiB with $conns idle connections:" \
  "$(( (rssn - rss0) * 1024 / conns )) bytes = $(echo "scale=1; ($rssn - $rss0) / $conns" | bc) KiB per connection"
