#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# Client DNS under load (integration.dns_h2 / _h3): a small DNS server of the
# test (dns_server.py: A/AAAA answers with a TTL of 1 s from a control file
# rewritten while it runs, every query and answer logged with its time) names
# svc.test; three amaters-netd daemons (A, B, C on 127.0.0.2, .3, .4, one
# port) count their calls in their access logs; dnsload keeps up to 4 calls in
# flight (paced) over mTLS (the certificate checked for --server-name localhost)
# through one client with spread_addresses while the answer goes from A to B
# to A+C: every call succeeds, the calls follow the answer and the daemons
# that left it get no more (their connections drained). Then the DNS server
# delays its answers by 1.5 s: the calls on the existing connections go on
# meanwhile (the completion times between the delayed query and its answer,
# from both processes' clocks, show no stall); then it stops answering: the
# client keeps the last good addresses (and says so) and the calls go on. A
# name the server does not know fails with UNAVAILABLE "cannot resolve ...".
# usage: test_dns.sh BUILD_DIR [h2|h3]
set -euo pipefail
bin=$1
tp=${2:-h2}
t=$bin/tests/integration
src=$(cd "$(dirname "$0")" && pwd)
source "$src/proc_lib.sh"
ctl() { # ctl JSON: the DNS server's next answers
  printf '%s\n' "$1" >ctl.tmp && mv ctl.tmp ctl.json
}
ctl '{"names": {"svc.test": ["127.0.0.2"]}, "ttl": 1}'
$py "$src/dns_server.py" ctl.json dns.log dns.port &
pids+=($!)
declare -A ip=([a]=127.0.0.2 [b]=127.0.0.3 [c]=127.0.0.4) dpid=()
# the three daemons on one port (another one if a process of the machine took it meanwhile)
for attempt in 1 2 3; do
  port=$(common_port 127.0.0.2 127.0.0.3 127.0.0.4)
  for d in a b c; do
    "$bin/amaters-netd" --listen "${ip[$d]}:$port" --pki-dir pki --access-log --threads 1 >"$d.log" 2>&1 &
    pids+=($!)
    dpid[$d]=$!
  done
  up=0
  for d in a b c; do wait_for "$d.log" "listening on|cannot start" 300 && grep -q "listening on" "$d.log" && up=$((up + 1)); done
  [ "$up" = 3 ] && break
  for d in a b c; do cat "$d.log"; kill "${dpid[$d]}" 2>/dev/null || true; wait "${dpid[$d]}" 2>/dev/null || true; done
  [ "$attempt" = 3 ] && { bad "the daemons did not start"; exit 1; }
done
for _ in $(seq 1 100); do [ -s dns.port ] && break; sleep 0.1; done
dns=127.0.0.1:$(cat dns.port)
ok_line="method=/grpc.health.v1.Health/Check transport=$tp status=OK"
calls() { lines "$1.log" "$ok_line"; }
# wait_more D N: daemon D has served N more calls than now
wait_more() { local n; n=$(calls "$1"); wait_lines "$1.log" "$ok_line" $((n + $2)); }

"$t/dnsload" --url "https://svc.test:$port" --dns-server "$dns" --server-name localhost --pki-dir pki \
  --transport "$tp" --inflight 4 --pace-us 1000 --refresh-min-ms 200 --out done.txt --stop stop >load.json 2>load.err &
load=$!
pids+=($load)

wait_more a 200 && ok "the calls go to A ($(calls a))" || bad "A: $(calls a) calls; $(tail -3 load.err)"
ctl '{"names": {"svc.test": ["127.0.0.3"]}, "ttl": 1}'
wait_more b 200 && ok "after A -> B, the calls go to B ($(calls b))" || bad "B: $(calls b) calls; $(tail -3 load.err)"
na=$(calls a)
wait_more b 300 || bad "B stopped serving"
[ "$(calls a)" = "$na" ] && ok "A gets no new call ($na in all)" || bad "A still got calls: $na, then $(calls a)"

ctl '{"names": {"svc.test": ["127.0.0.2", "127.0.0.4"]}, "ttl": 1}'
wait_more c 200 && ok "after B -> A+C, C gets calls ($(calls c))" || bad "C: $(calls c) calls"
wait_more a 200 && ok "... and A again ($(calls a))" || bad "A: $(calls a) calls"
nb=$(calls b)
wait_more c 300 || bad "C stopped serving"
[ "$(calls b)" = "$nb" ] && ok "B gets no new call ($nb in all)" || bad "B still got calls: $nb, then $(calls b)"

# answers delayed by 1.5 s: the next refresh waits for one; calls go on meanwhile
l0=$(wc -l <dns.log)
ctl '{"names": {"svc.test": ["127.0.0.2", "127.0.0.4"]}, "ttl": 1, "delay_s": 1.5}'
for _ in $(seq 1 200); do tail -n +$((l0 + 1)) dns.log | grep -Eq " sent svc.test 1 2 0 [0-9]+ 1.5$" && break; sleep 0.1; done
ctl '{"names": {"svc.test": ["127.0.0.2", "127.0.0.4"]}, "ttl": 1}'
cp dns.log delayed.log
wait_more a 100 || bad "A stopped serving after the delayed answers"

# the DNS server stops answering: the last good addresses stay, calls go on
ctl '{"names": {"svc.test": ["127.0.0.2", "127.0.0.4"]}, "ttl": 1, "silent": true}'
if wait_for load.err "cannot resolve svc.test: .*keeping its last 2 address" 300; then
  ok "a DNS server that stopped answering: the last good addresses are kept ($(grep -m1 'keeping' load.err | sed 's/.*dns: //'))"
else
  bad "no 'keeping its last' log: $(tail -3 load.err)"
fi
wait_more a 100 && wait_more c 100 && ok "... and the calls go on to A and C" || bad "calls stopped without DNS"

# a connection failure looks the name up again before its TTL runs out: the
# answer (TTL 60 s now) drops A, then A's daemon stops (a graceful drain)
l0=$(wc -l <dns.log)
ctl '{"names": {"svc.test": ["127.0.0.2", "127.0.0.4"]}, "ttl": 60}' # (answering again)
for _ in $(seq 1 200); do tail -n +$((l0 + 1)) dns.log | grep -q " sent svc.test 1 2 0" && break; sleep 0.1; done
ctl '{"names": {"svc.test": ["127.0.0.4"]}, "ttl": 60}'
l1=$(wc -l <dns.log)
kill -TERM "${dpid[a]}"
for _ in $(seq 1 150); do tail -n +$((l1 + 1)) dns.log | grep -q " sent svc.test 1 1 0" && break; sleep 0.1; done
tail -n +$((l1 + 1)) dns.log | grep -q " sent svc.test 1 1 0" \
  && ok "A's daemon gone: the name was looked up again at once (not after its TTL of 60 s)" \
  || bad "no lookup after A failed: $(tail -3 dns.log)"
wait_more c 200 && ok "... and the calls go on to C" || bad "C stopped serving after A left"
touch stop
wait "$load" && ok "dnsload ended" || bad "dnsload exited with $?: $(tail -3 load.err)"
cat load.json
if $py - load.json done.txt delayed.log <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["calls"] > 1000 and d["failed"] == 0, ("calls, failed", d)
eps = {e["url"].split("(")[1].rstrip(")"): e for e in d["endpoints"]}
assert set(eps) == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}, eps
assert all(eps[a]["state"] == "removed" and eps[a]["draining"] == 0 for a in ("127.0.0.2", "127.0.0.3")), eps
# (A's daemon stopped with calls in flight: an attempt it refused unprocessed
# counts as failed there, and the call was sent again: d["failed"] is 0)
assert eps["127.0.0.3"]["failed"] == 0 and eps["127.0.0.4"]["failed"] == 0, eps
# the delayed lookup: the first delayed answer (an A query) and its query
ev = [l.split() for l in open(sys.argv[3])]
sent = next(e for e in ev if e[1:4] == ["sent", "svc.test", "1"] and e[-1] == "1.5")
t1, qid = float(sent[0]), sent[6]
t0 = next(float(e[0]) for e in ev if e[1:4] == ["recv", "svc.test", "1"] and e[4] == qid)
assert t1 - t0 >= 1.4, ("the answer was not delayed", t0, t1)
done = sorted(float(l.split()[0]) for l in open(sys.argv[2]))
inside = [t for t in done if t0 <= t <= t1]
gaps = [b - a for a, b in zip([t0] + inside, inside + [t1])]
print("delayed DNS answer: %.2f s; %d calls completed meanwhile, longest pause between completions %.0f ms"
      % (t1 - t0, len(inside), max(gaps) * 1000))
assert len(inside) >= 100 and max(gaps) < 0.75, (len(inside), max(gaps))
PY
then ok "zero failed calls; B and A removed and drained; no stall while a DNS answer was delayed"; else bad "summary"; fi

out=$("$bin/amaters-cli" --pki-dir pki --server-name localhost --dns-server "$dns" --transport "$tp" \
  "https://nowhere.test:$port" execute --data x 2>&1) && rc=0 || rc=$?
# exit 69 (EX_UNAVAILABLE): the call ended UNAVAILABLE and no connection was ever made
[ "$rc" = 69 ] && grep -q "UNAVAILABLE: cannot resolve nowhere.test: Domain name not found" <<<"$out" \
  && ok "an unknown name: UNAVAILABLE (exit 69), cannot resolve nowhere.test" || bad "unknown name: rc=$rc: $out"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
