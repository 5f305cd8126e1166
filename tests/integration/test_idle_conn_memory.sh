#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# integration.idle_conn_memory: what an idle connection costs the daemon, and
# that a connection whose buffers went with its idleness serves calls again.
# Per transport, a fresh daemon (one event loop, no idle timeout) and one
# client (idleconns) that opens N connections, makes one call on each and
# keeps them open: once the daemon's amn_server_connections gauge counts all
# N, its resident memory per connection, (RSS at N - RSS before) / N, must be
# under the bound (the targets at 10,000 connections are 32 KiB for HTTP/2 and
# 64 KiB for HTTP/3; at this N the per-loop caches the first calls fill, e.g.
# the call records, still weigh about 2 KiB per connection; measured on the
# development machine: BENCHMARKS.md). Then calls on the idle connections:
# 1 MiB ones on several of them, and a small one on each, all echoed intact.
# A sanitizer build (second argument ON) has another allocator (redzones,
# its own size classes): the bound is not checked there, the calls are.
# usage: test_idle_conn_memory.sh BUILD_DIR [SANITIZE(ON|OFF)] [N]
set -euo pipefail
bin=$1
sanitize=${2:-OFF}
n=${3:-500}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/proc_lib.sh"
printf '[network]\nidle_timeout_ms = 0\n' >netd.toml

# bound KiB per idle connection, per transport. Measured here (2 vCPU, one
# loop, N = 500): HTTP/2 28.0 KiB (41-43 before its write buffer was freed
# when idle, 36.2-37.2 before nghttp2's large blocks got their own mappings),
# HTTP/3 75-81.5 KiB (its share of the server's tables varies with N); the
# bounds catch a per-connection buffer of a few KiB kept again.
declare -A bound=([h2]=32 [h3]=90)

for tp in h2 h3; do
  admin=$(common_port 127.0.0.1)
  srvt=h2
  [ $tp = h3 ] && srvt=both
  start_netd "netd-$tp.log" --config netd.toml --threads 1 --transport $srvt --admin "$admin" --log-level info
  "$bin/amaters-cli" --pki-dir pki --transport $tp "https://127.0.0.1:$port" health >/dev/null ||
    { bad "$tp: the first health check failed"; continue; }
  rss0=$(rss_kb "$netd")
  coproc IC { exec "$bin/tests/integration/idleconns" --url "https://127.0.0.1:$port" --pki-dir pki --conns "$n" \
    --transport $tp --timeout 60000 2>"idleconns-$tp.err"; }
  icpid=$IC_PID
  pids+=("$icpid")
  line=
  read -r -t 90 -u "${IC[0]}" line || true
  if [ "$line" != "ready $n" ]; then
    bad "$tp: $n connections did not open: ${line:-nothing} $(tail -3 "idleconns-$tp.err")"
    continue
  fi
  echo "calls 64 $n" >&"${IC[1]}"
  read -r -t 120 -u "${IC[0]}" line || true
  [ "$line" = "calls ok=$n failed=0" ] && ok "$tp: one call on each of $n connections" ||
    bad "$tp: one call on each of $n connections: ${line:-no answer} $(tail -3 "idleconns-$tp.err")"
  gauge="amn_server_connections{transport=\"$tp\",state=\"open\"}"
  if wait_metric "$admin" "$gauge" "$n" 300; then
    rss1=$(rss_kb "$netd")
    per=$(((rss1 - rss0) * 1024 / n))
    what="$tp: $n idle connections: RSS $rss0 -> $rss1 KiB, $per bytes per connection"
    if [ "$sanitize" = ON ]; then
      ok "$what (sanitizer build: the bound of ${bound[$tp]} KiB is not checked)"
    elif [ "$per" -le $((bound[$tp] * 1024)) ]; then
      ok "$what (bound ${bound[$tp]} KiB)"
    else
      bad "$what: over ${bound[$tp]} KiB"
    fi
  else
    bad "$tp: the daemon counts $(metric "$admin" "$gauge") open connections, not $n"
  fi
  # after idleness: large calls (buffers grown again), then a small one on every connection
  echo "calls 1048576 8" >&"${IC[1]}"
  read -r -t 120 -u "${IC[0]}" line || true
  [ "$line" = "calls ok=8 failed=0" ] && ok "$tp: 1 MiB calls on 8 idle connections, echoed intact" ||
    bad "$tp: 1 MiB calls on 8 idle connections: ${line:-no answer} $(tail -3 "idleconns-$tp.err")"
  echo "calls 100 $n" >&"${IC[1]}"
  read -r -t 120 -u "${IC[0]}" line || true
  [ "$line" = "calls ok=$n failed=0" ] && ok "$tp: a small call again on each of the $n idle connections" ||
    bad "$tp: a small call again on each idle connection: ${line:-no answer} $(tail -3 "idleconns-$tp.err")"
  fd=${IC[1]}
  exec {fd}>&-
  wait "$icpid" && ok "$tp: the client closed its connections and exited" || bad "$tp: idleconns exited $?"
  kill "$netd"
  wait "$netd" 2>/dev/null || true
  if grep -q "Sanitizer" "netd-$tp.log"; then bad "$tp: a sanitizer report in the daemon's log"; fi
done
echo "idle_conn_memory: $passed passed, $failed failed"
[ "$failed" = 0 ]
