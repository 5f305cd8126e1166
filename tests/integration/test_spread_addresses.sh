#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# [client] spread_addresses: a URL whose host name resolves to several
# addresses becomes one pool endpoint per address. The name comes from a
# hosts file of the test's own (the client's resolver, c-ares, reads the file
# CARES_HOSTS names instead of /etc/hosts);
# two lbserver processes listen on 127.0.0.1 and 127.0.0.2, same port; the
# certificate is checked against the name given with --server-name.
# usage: test_spread_addresses.sh BUILD_DIR [h2|h3]
set -euo pipefail
bin=$1
tp=${2:-h2}
t=$bin/tests/integration
source "$(dirname "$0")/proc_lib.sh"
port=$(common_port 127.0.0.1 127.0.0.2)
for a in 1 2; do
  "$t/lbserver" --listen "127.0.0.$a:$port" --pki-dir pki --exec-log "ex$a.log" --delay-ms 0 --transport both \
    2>"srv$a.err" &
  pids+=($!)
done
for a in 1 2; do
  for _ in $(seq 1 50); do grep -q "listening on port" "srv$a.err" 2>/dev/null && break; sleep 0.1; done
done
printf '127.0.0.1 multi.test\n127.0.0.2 multi.test\n' >hosts
# the CLI resolves multi.test through that file
cli() {
  CARES_HOSTS=$work/hosts "$bin/amaters-cli" --pki-dir pki --server-name localhost --transport "$tp" "$@"
}
printf '[client]\nspread_addresses = true\nlb_policy = "round_robin"\n' >spread.toml
: >ex1.log
: >ex2.log
cli --config spread.toml "https://multi.test:$port" bench --inflight 4 --duration 1 --warmup 0 --json >spread.json \
  2>spread.err || bad "bench with spread_addresses: $(tail -3 spread.err)"
cat spread.json
if /usr/bin/python3 - spread.json "$port" "$tp" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); port = sys.argv[2]; tp = sys.argv[3]
e = d["endpoints"]
assert d["errors"] == 0, d
assert [x["url"] for x in e] == [f"https://multi.test:{port} (127.0.0.{a})" for a in (1, 2)], e
assert all(x["calls"] > 20 and x["failed"] == 0 and x["transport"] == tp for x in e), e
PY
then ok "spread_addresses: one endpoint per address of multi.test, both used ($tp)"; else bad "spread endpoints"; fi
n1=$(wc -l <ex1.log) n2=$(wc -l <ex2.log)
[ "$n1" -gt 20 ] && [ "$n2" -gt 20 ] && ok "both servers executed calls ($n1 / $n2)" || bad "executions $n1 / $n2"
# without it: one endpoint; each connection takes the first address that works
: >ex1.log
: >ex2.log
cli "https://multi.test:$port" bench --inflight 4 --duration 1 --warmup 0 --json >one.json 2>one.err \
  || bad "bench without spread_addresses: $(tail -3 one.err)"
if /usr/bin/python3 - one.json <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["errors"] == 0 and len(d["endpoints"]) == 1 and d["endpoints"][0]["calls"] > 20, d
PY
then ok "default: multi.test is one endpoint"; else bad "default endpoints: $(cat one.json)"; fi
n1=$(wc -l <ex1.log) n2=$(wc -l <ex2.log)
[ "$n1" -gt 20 ] && [ "$n2" -eq 0 ] && ok "default: every call went to the first address ($n1 / $n2)" \
  || bad "default executions $n1 / $n2"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
