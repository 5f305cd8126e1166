#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# Revocation and authorization over real sockets, on HTTP/2 and HTTP/3:
# amaters-netd with [tls] crl_path and [[auth.rule]] tables, clients made by
# amaters-cli certs issue / certs revoke (and certtool for an OU).
#  - a revoked client is refused (alert certificate_revoked, a log line naming
#    its serial and the CRL) while another client's calls go on;
#  - a client with --crl refuses a revoked server;
#  - the CRL is re-read when the file changes and on SIGHUP;
#  - an expired CRL refuses everyone (crl_expired = "refuse") or only warns;
#  - every authorization outcome: allowed by URI SAN wildcard, DNS SAN, CN,
#    OU, fingerprint; denied by a rule; no rule matched; health open to all;
#    the policy reloaded on SIGHUP; denials counted in /metrics.
# usage: test_authz_crl.sh BUILD_DIR
set -euo pipefail
bin=$1
source "$(dirname "$0")/proc_lib.sh"
cli=$bin/amaters-cli

issue() { "$cli" certs issue "$@" --pki-dir pki --out c >/dev/null; }
# call NAME TRANSPORT [CLI ARGS...] -- prints nothing; sets rc and out (stdout+stderr)
call() {
  local name=$1 tp=$2
  shift 2
  set +e
  out=$("$cli" "https://127.0.0.1:$port" --transport "$tp" --ca pki/ca.pem --cert "c/$name.pem" \
    --key "c/$name-key.pem" --timeout 5s "$@" execute --data ping 2>&1)
  rc=$?
  set -e
}
# A refused handshake ends the CLI with 69 (no connection to any URL was made) or, when the TLS 1.3 client saw
# its handshake end before the server's refusal arrived, with 14 (UNAVAILABLE).
expect() { # LABEL RC-WANTED (an ERE, e.g. "14|69") TEXT-WANTED
  if grep -Eqx -- "$2" <<<"$rc" && grep -qF -- "$3" <<<"$out"; then ok "$1"; else bad "$1: exit $rc, want $2 with '$3': $out"; fi
}

issue alice --spiffe spiffe://amaters/client/alice
issue mallory --spiffe spiffe://amaters/client/mallory
issue erin --dns erin.clients.example
issue ops-1
issue frank
issue nobody
issue bob --spiffe spiffe://amaters/client/bob
issue carol --spiffe spiffe://amaters/client/carol
issue dave --spiffe spiffe://amaters/client/dave
printf '%s\n' 'cn = "olga"' 'unit = "billing"' tls_www_client signing_key 'expiration_days = 30' >olga.tmpl
certtool --generate-privkey --key-type ecdsa --curve secp256r1 --outfile c/olga-key.pem 2>/dev/null
certtool --generate-certificate --load-privkey c/olga-key.pem --load-ca-certificate pki/ca.pem \
  --load-ca-privkey pki/ca-key.pem --template olga.tmpl --outfile c/olga.pem 2>/dev/null
frank_fp=$(openssl x509 -in c/frank.pem -noout -fingerprint -sha256 | sed 's/.*=//')
"$cli" certs revoke c/bob.pem --pki-dir pki >/dev/null
bob_serial=$(openssl x509 -in c/bob.pem -noout -serial | sed 's/.*=//' | tr 'A-F' 'a-f')

policy() { # the [[auth.rule]] tables; $1: extra rules first
  cat <<EOF
[tls]
crl_path = "pki/crl.pem"
$1
[[auth.rule]]
name = "deny-mallory"
action = "deny"
methods = ["*"]
uri_sans = ["spiffe://amaters/client/mallory"]
[[auth.rule]]
name = "health-for-all"
action = "allow"
methods = ["/grpc.health.v1.Health/Check"]
[[auth.rule]]
name = "spiffe-clients"
action = "allow"
methods = ["/amaters.v1.AmateRS/*"]
uri_sans = ["spiffe://amaters/client/*"]
[[auth.rule]]
name = "dns-clients"
action = "allow"
methods = ["/amaters.v1.AmateRS/Execute"]
dns_sans = ["*.clients.example"]
[[auth.rule]]
name = "ops"
action = "allow"
methods = ["/amaters.v1.AmateRS/*"]
cns = ["ops-*"]
[[auth.rule]]
name = "billing"
action = "allow"
methods = ["/amaters.v1.AmateRS/Execute"]
ous = ["billing"]
[[auth.rule]]
name = "pinned"
action = "allow"
methods = ["/amaters.v1.AmateRS/Execute"]
fingerprints = ["$frank_fp"]
EOF
}
policy "" >netd.toml
start_netd netd.log --config netd.toml --transport both --admin 127.0.0.1:0
admin_port=$(sed -n 's/.*admin: .* (port \([0-9]*\)).*/\1/p' netd.log | head -1)
grep -q "CRL loaded from pki/crl.pem: 1 CRL, 1 revoked certificate" netd.log && ok "CRL loaded at start" ||
  bad "no CRL load line: $(cat netd.log)"

for tp in h2 h3; do
  # --- revocation: bob refused, alice's calls going on meanwhile
  "$cli" "https://127.0.0.1:$port" --transport "$tp" --ca pki/ca.pem --cert c/alice.pem --key c/alice-key.pem \
    bench --duration 1s --warmup 0 --inflight 2 --json >bench.json 2>bench.err &
  bench=$!
  call bob "$tp"
  expect "$tp: revoked client refused with the alert certificate_revoked" "14|69" "Certificate was revoked"
  wait "$bench" && brc=0 || brc=$?
  bench_ok "$tp: revoked client refused: " "$brc" bench.json bench.err
  grep -q "refused: .*client certificate revoked (serial $bob_serial, listed in CRL pki/crl.pem)" netd.log &&
    ok "$tp: the refusal is logged with the serial and the CRL" || bad "$tp: no log line for bob: $(tail -5 netd.log)"

  # --- authorization outcomes
  call alice "$tp"; expect "$tp: allowed by URI SAN wildcard" 0 ping
  call erin "$tp"; expect "$tp: allowed by DNS SAN" 0 ping
  call ops-1 "$tp"; expect "$tp: allowed by CN" 0 ping
  call olga "$tp"; expect "$tp: allowed by OU" 0 ping
  call frank "$tp"; expect "$tp: allowed by fingerprint" 0 ping
  call mallory "$tp"; expect "$tp: denied by a rule" 7 "PERMISSION_DENIED: denied by rule 'deny-mallory'"
  call nobody "$tp"; expect "$tp: no rule matched" 7 "PERMISSION_DENIED: no rule matched"
  set +e
  out=$("$cli" "https://127.0.0.1:$port" --transport "$tp" --ca pki/ca.pem --cert c/nobody.pem \
    --key c/nobody-key.pem health 2>&1)
  rc=$?
  set -e
  expect "$tp: health opened to every client by a rule" 0 SERVING
done
grep -q "call /amaters.v1.AmateRS/Execute from .* (peer CN=mallory,.*) denied: denied by rule 'deny-mallory'" netd.log &&
  ok "a denial is logged with the peer and the rule" || bad "no denial log line"
metrics=$(curl -s "http://127.0.0.1:$admin_port/metrics")
grep -Eq 'code="PERMISSION_DENIED".* [1-9]' <<<"$metrics" && ok "denials counted in /metrics" ||
  bad "no PERMISSION_DENIED in /metrics: $(grep -i denied <<<"$metrics" | head -3)"

# --- the CRL re-read when the file changes (at most a second later, at a handshake)
call carol h2; expect "carol allowed before her revocation" 0 ping
"$cli" certs revoke c/carol.pem --pki-dir pki >/dev/null
for _ in $(seq 1 60); do
  call carol h2
  [ "$rc" = 14 ] || [ "$rc" = 69 ] && break
  sleep 0.1
done
expect "carol refused once the CRL file changed" "14|69" "Certificate was revoked"
grep -q "CRL reloaded (file changed) from pki/crl.pem: 1 CRL, 2 revoked certificates" netd.log &&
  ok "the reload on file change is logged" || bad "no reload line: $(grep CRL netd.log)"
call alice h3; expect "alice unaffected by the reload" 0 ping

# --- SIGHUP: the CRL and the policy re-read
call dave h3; expect "dave allowed before SIGHUP" 0 ping
"$cli" certs revoke c/dave.pem --pki-dir pki >/dev/null
policy '[[auth.rule]]
name = "dev-client"
action = "allow"
methods = ["/amaters.v1.AmateRS/Execute"]
cns = ["nobody"]' >netd.toml
kill -HUP "$netd"
wait_for netd.log "SIGHUP: TLS certificate, key and CA reloaded" && wait_for netd.log "SIGHUP: authorization policy reloaded from netd.toml \(8 rules\)" ||
  bad "no SIGHUP reload lines: $(tail -5 netd.log)"
[ "$(grep -c "CRL loaded from pki/crl.pem" netd.log)" = 2 ] && ok "SIGHUP re-read the CRL" || bad "SIGHUP did not re-read the CRL"
for tp in h2 h3; do
  call dave "$tp"; expect "$tp: dave refused after SIGHUP" "14|69" "Certificate was revoked"
  call nobody "$tp"; expect "$tp: the reloaded policy allows the new rule" 0 ping
  call mallory "$tp"; expect "$tp: the reloaded policy still denies" 7 "denied by rule 'deny-mallory'"
done
# a broken policy keeps the previous one
printf '[[auth.rule]]\nname = "x"\naction = "allow"\nmethods = ["no-slash"]\n' >>netd.toml
kill -HUP "$netd"
wait_for netd.log "SIGHUP: authorization policy not reloaded, keeping the previous one: netd.toml:[0-9]*: auth.rule 'x': methods: method \"no-slash\" does not start with '/'" &&
  ok "a bad rule on SIGHUP is reported with FILE:LINE and the previous policy kept" || bad "no error for the bad rule: $(tail -3 netd.log)"
call nobody h2; expect "the previous policy is still in force" 0 ping

# --- a revoked server refused by the client (--crl)
cp -r pki pki-server
"$cli" certs revoke pki-server/server.pem --pki-dir pki-server >/dev/null
srv_serial=$(openssl x509 -in pki/server.pem -noout -serial | sed 's/.*=//' | tr 'A-F' 'a-f')
for tp in h2 h3; do
  call alice "$tp" --crl pki-server/crl.pem
  expect "$tp: client refuses a revoked server" "14|69" "server certificate revoked (serial $srv_serial, listed in CRL pki-server/crl.pem)"
  call alice "$tp" --crl pki/crl.pem
  expect "$tp: client with a CRL not listing the server connects" 0 ping
done
kill "$netd"
wait "$netd" 2>/dev/null || true

# --- an expired CRL: refuse (default) or warn
mkdir -p pki-exp
cp pki/ca.pem pki/ca-key.pem pki-exp/
"$cli" certs revoke c/bob.pem --pki-dir pki-exp --next-update -1h >/dev/null
for mode in refuse warn; do
  printf '[tls]\ncrl_path = "pki-exp/crl.pem"\ncrl_expired = "%s"\n' "$mode" >exp.toml
  start_netd "exp-$mode.log" --config exp.toml --transport both
  for tp in h2 h3; do
    call alice "$tp"
    if [ "$mode" = refuse ]; then
      expect "$tp: expired CRL, refuse: every client refused" "14|69" "UNAVAILABLE"
    else
      expect "$tp: expired CRL, warn: clients served" 0 ping
    fi
  done
  if [ "$mode" = refuse ]; then
    grep -q "error .*CRL pki-exp/crl.pem has expired (next update .*): every peer certificate is refused" "exp-$mode.log" &&
      grep -q "refused: .*client certificate refused: CRL pki-exp/crl.pem has expired" "exp-$mode.log" &&
      ok "expired CRL (refuse) logged as an error and named in each refusal" || bad "refuse log: $(tail -5 "exp-$mode.log")"
  else
    grep -q "warn .*CRL pki-exp/crl.pem has expired (next update .*); still using it" "exp-$mode.log" &&
      ok "expired CRL (warn) logged as a warning" || bad "warn log: $(tail -5 "exp-$mode.log")"
  fi
  kill "$netd"
  wait "$netd" 2>/dev/null || true
done

# --- --check-config: a bad rule and a bad CRL named with FILE:LINE (exit 1)
printf '[tls]\ncrl_path = "pki/ca.pem"\n' >badcrl.toml
set +e
out=$("$bin/amaters-netd" --pki-dir pki --config badcrl.toml --check-config 2>&1); rc=$?
set -e
expect "--check-config: a file that is not a CRL" 1 "badcrl.toml:2: tls.crl_path: CRL file pki/ca.pem holds no PEM CRL"
printf '[[auth.rule]]\nname = "pin"\naction = "allow"\nmethods = ["*"]\nfingerprints = ["abc"]\n' >badrule.toml
set +e
out=$("$bin/amaters-netd" --pki-dir pki --config badrule.toml --check-config 2>&1); rc=$?
set -e
expect "--check-config: a bad fingerprint" 1 "badrule.toml:1: auth.rule 'pin': fingerprints: \"abc\" is not a SHA-256 fingerprint"

# the daemons (sanitizer builds) reported nothing
if grep -l "Sanitizer" ./*.log 2>/dev/null; then bad "a sanitizer report in a daemon's log"; else ok "no sanitizer report"; fi

echo "passed=$passed failed=$failed"
[ "$failed" = 0 ]
