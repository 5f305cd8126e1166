#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# Connection pool failover over HTTP/2 or HTTP/3 + mTLS with real processes: three
# lbserver processes (amaters-net servers that log every execution), one
# pooled client (poolload) under load.
#  1. one server is killed (SIGKILL) during the load: no call hangs or is
#     lost, no non-idempotent call runs twice, only calls that were on the
#     dead server may fail (UNAVAILABLE); the server comes back on the same
#     port and gets traffic again through the same client.
#  2. one server drains (SIGTERM: GOAWAY) during the load: zero failed calls.
#  3. amaters-cli with several URLs and a [client] configuration: round robin,
#     pool_min/max_connections, max_retries with --idempotent; the bench
#     counts calls per URL.
# usage: test_pool_failover.sh BUILD_DIR [h2|h3]
set -euo pipefail
bin=$1
tp=${2:-h2}
echo "transport: $tp"
t=$bin/tests/integration
source "$(dirname "$0")/proc_lib.sh"
ports=($(/usr/bin/python3 -c '
import socket
ss=[socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1",0))
print(" ".join(str(s.getsockname()[1]) for s in ss))'))
urls=$(printf 'https://127.0.0.1:%s,' "${ports[@]}")
urls=${urls%,}
srv() { # srv INDEX LOG: start server INDEX, its pid in $spid
  "$t/lbserver" --listen "127.0.0.1:${ports[$1]}" --pki-dir pki --exec-log "$2" --delay-ms 40 --transport "$tp" \
    2>>"srv$1.err" &
  spid=$!
  pids+=("$spid")
  for _ in $(seq 1 50); do grep -q "listening on port" "srv$1.err" 2>/dev/null && break; sleep 0.1; done
}
# analyse CALLS LOGS...: duplicates / lost / failures by kind
analyse() {
  /usr/bin/python3 - "$@" <<'EOF'
import collections, sys
calls = [l.split() for l in open(sys.argv[1])]
ex = collections.Counter()
for f in sys.argv[2:]:
    for l in open(f): ex[l.strip()] += 1
dup = sum(1 for q, i, s in calls if i == '0' and ex[q] > 1)
lost = sum(1 for q, i, s in calls if s == '0' and ex[q] == 0)
bad_status = sum(1 for q, i, s in calls if s not in ('0', '14'))
failed = sum(1 for q, i, s in calls if s != '0')
print(f"calls={len(calls)} dup_nonidempotent={dup} ok_not_executed={lost} bad_status={bad_status} failed={failed}")
EOF
}

# ---- 1. SIGKILL during load, then restart on the same port
# (a killed QUIC server goes silent: no TCP reset tells the client; its
# keepalive PINGs find out, as they do for a vanished HTTP/2 peer)
for i in 0 1 2; do srv $i "ex$i.log"; eval "p$i=\$spid"; done
"$t/poolload" --urls "$urls" --pki-dir pki --out calls1.txt --threads 9 --duration 6000 --slow --prefix k --transport "$tp" --keepalive-ms 300 \
  >load1.out 2>load1.err &
lp=$!
sleep 1.5
kill -9 "$p1"
wait "$p1" 2>/dev/null || true
sleep 1.5
srv 1 ex1b.log
wait "$lp" && ok "poolload finished: no call hung" || bad "poolload exit $? (142 = a call hung)"
cat load1.out
res=$(analyse calls1.txt ex0.log ex1.log ex1b.log ex2.log)
echo "  $res"
total=$(wc -l <calls1.txt)
[ "$total" -gt 300 ] && ok "$total calls made" || bad "only $total calls"
grep -q "dup_nonidempotent=0 " <<<"$res" && ok "no non-idempotent call executed twice" || bad "a non-idempotent call ran twice"
grep -q "ok_not_executed=0 " <<<"$res" && ok "every OK call was executed by a server" || bad "OK without an execution"
grep -q "bad_status=0 " <<<"$res" && ok "failures are UNAVAILABLE only" || bad "other failure statuses"
nfail=$(echo "$res" | sed 's/.*failed=//')
[ "$nfail" -le 12 ] && ok "$nfail failed calls (at most the ones in flight on the killed server)" || bad "$nfail failures"
[ -s ex1b.log ] && ok "restarted server gets traffic again ($(wc -l <ex1b.log) calls)" || bad "no traffic after restart"
grep -q "started=.* connects=2 " load1.out && ok "the client reconnected to the restarted server" || bad "no reconnect in stats"
grep -q "is back" load1.err && ok "the pool logged the endpoint's return" || bad "no 'is back' log"

# ---- 2. SIGTERM (GOAWAY + drain) during load: zero failures
for i in 0 1 2; do kill "$(eval echo \$p$i)" 2>/dev/null || true; done
kill "$spid" 2>/dev/null || true
wait 2>/dev/null || true
pids=()
rm -f srv*.err
for i in 0 1 2; do srv $i "dr$i.log"; eval "p$i=\$spid"; done
"$t/poolload" --urls "$urls" --pki-dir pki --out calls2.txt --threads 12 --duration 4000 --slow --prefix d --transport "$tp" \
  >load2.out 2>load2.err &
lp=$!
sleep 1.5
kill -TERM "$p1"
wait "$lp" && ok "poolload finished during the drain" || bad "poolload exit $?"
cat load2.out
res=$(analyse calls2.txt dr0.log dr1.log dr2.log)
echo "  $res"
grep -q " failed=0$" <<<"$res" && ok "GOAWAY drain: zero failed calls" || bad "failures during a graceful drain"
grep -q "dup_nonidempotent=0 " <<<"$res" && ok "drain: nothing executed twice" || bad "drain: duplicate execution"
wait "$p1" && ok "drained server exited cleanly" || bad "drained server exit status"
[ "$(wc -l <dr1.log)" -gt 0 ] && [ "$(wc -l <dr0.log)" -gt "$(wc -l <dr1.log)" ] && ok "traffic moved to the others" \
  || bad "traffic split $(wc -l dr*.log | tr '\n' ' ')"

# ---- 3. amaters-cli: several URLs, [client] keys
for i in 0 2; do kill "$(eval echo \$p$i)" 2>/dev/null || true; done
wait 2>/dev/null || true
pids=()
rm -f srv*.err
for i in 0 1; do srv $i "cli$i.log"; done
u2="https://127.0.0.1:${ports[0]},https://127.0.0.1:${ports[1]}"
printf '[client]\ntransport = "%s"\nlb_policy = "round_robin"\npool_min_connections = 2\npool_max_connections = 2\n' "$tp" >rr.toml
"$bin/amaters-cli" --pki-dir pki --config rr.toml "https://127.0.0.1:${ports[0]}" "https://127.0.0.1:${ports[1]}" \
  bench --inflight 1 --duration 1 --warmup 0 --json >rr.json 2>rr.err || bad "bench over two URLs: $(cat rr.err)"
cat rr.json
if /usr/bin/python3 - rr.json "$tp" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
e = d["endpoints"]
assert len(e) == 2 and d["errors"] == 0, d
assert all(x.get("transport", sys.argv[2]) == sys.argv[2] for x in e), e
assert all(x["calls"] > 50 and x["failed"] == 0 and x["connects"] == 2 for x in e), e
assert abs(e[0]["calls"] - e[1]["calls"]) <= 1, e
EOF
then ok "bench: calls per URL; round robin; pool_min_connections = 2 per URL"; else bad "round robin bench"; fi
q="retry-$RANDOM@unavail"
u1="https://127.0.0.1:${ports[0]}" # one server: its "@unavail" answer comes once
if out=$("$bin/amaters-cli" --pki-dir pki --transport "$tp" "$u1" execute --data "a-$q" 2>&1); then bad "non-idempotent call re-sent: $out"
else ok "non-idempotent UNAVAILABLE is not re-sent"; fi
out=$("$bin/amaters-cli" --pki-dir pki --transport "$tp" --idempotent "$u1" execute --data "b-$q" 2>&1) || true
[ "$out" = "b-$q" ] && ok "--idempotent: re-sent after UNAVAILABLE" || bad "--idempotent: $out"
printf '[client]\ntransport = "%s"\nmax_retries = 0\n' "$tp" >noretry.toml
if out=$("$bin/amaters-cli" --pki-dir pki --config noretry.toml --idempotent "$u1" execute --data "c-$q" 2>&1); then
  bad "max_retries = 0 still retried"
else ok "[client] max_retries = 0: no re-send"; fi
n=$(grep -c "^b-$q\$" cli0.log || true)
[ "$n" = 2 ] && ok "the idempotent call ran twice (UNAVAILABLE, then OK)" || bad "idempotent call ran $n times"
n=$(grep -c "^a-$q\$" cli0.log || true)
[ "$n" = 1 ] && ok "the non-idempotent call ran once" || bad "non-idempotent call ran $n times"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
