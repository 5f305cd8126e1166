#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# Mutual-TLS refusals seen from an independent TLS peer (GnuTLS's gnutls-cli,
# certificates made with certtool): the daemon refuses each bad client
# certificate with one log line naming the exact reason, and goes on serving.
# usage: test_tls_refusals.sh BUILD_DIR
set -euo pipefail
bin=$1
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; tail -20 "$work/netd.log"; exit 1; }

port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pki=$work/pki
"$bin/amaters-cli" certs init "$pki" >/dev/null
"$bin/amaters-netd" --listen "127.0.0.1:$port" --pki-dir "$pki" >"$work/netd.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do grep -q "listening on" "$work/netd.log" && break; sleep 0.1; done
grep -q "listening on" "$work/netd.log" || fail "daemon did not start"

# make_cert NAME CA-PREFIX TEMPLATE-LINES...
make_cert() {
  local name=$1 ca=$2; shift 2
  printf '%s\n' "$@" >"$work/$name.tmpl"
  certtool --generate-privkey --key-type ecdsa --curve secp256r1 --outfile "$work/$name-key.pem" 2>/dev/null
  certtool --generate-certificate --load-privkey "$work/$name-key.pem" --load-ca-certificate "$ca.pem" \
    --load-ca-privkey "$ca-key.pem" --template "$work/$name.tmpl" --outfile "$work/$name.pem" 2>/dev/null
}
printf '%s\n' 'cn = "other CA"' ca cert_signing_key 'expiration_days = 30' >"$work/other.tmpl"
certtool --generate-privkey --key-type ecdsa --curve secp256r1 --outfile "$work/other-key.pem" 2>/dev/null
certtool --generate-self-signed --load-privkey "$work/other-key.pem" --template "$work/other.tmpl" --outfile "$work/other.pem" 2>/dev/null

make_cert expired "$pki/ca" 'cn = "expired client"' tls_www_client signing_key \
  'activation_date = "2020-01-01 00:00:00"' 'expiration_date = "2020-12-31 00:00:00"'
make_cert future "$pki/ca" 'cn = "future client"' tls_www_client signing_key \
  'activation_date = "2099-01-01 00:00:00"' 'expiration_date = "2099-12-31 00:00:00"'
make_cert serveronly "$pki/ca" 'cn = "server usage only"' tls_www_server signing_key 'expiration_days = 30'
make_cert stranger "$work/other" 'cn = "amaters-dev-client"' tls_www_client signing_key 'expiration_days = 30'
make_cert good "$pki/ca" 'cn = "certtool client"' tls_www_client signing_key 'expiration_days = 30'

passed=0 failed=0
# attempt NAME EXPECT(ok|refused) LOG-REGEX [gnutls-cli cert args...]
attempt() {
  local name=$1 expect=$2 want=$3; shift 3
  local before out rc=0
  before=$(wc -l <"$work/netd.log")
  out=$(timeout 10 gnutls-cli --x509cafile "$pki/ca.pem" --alpn h2 -p "$port" localhost "$@" </dev/null 2>&1 | tr -d "\0") || rc=$?
  sleep 0.2
  local logl
  logl=$(tail -n +"$((before + 1))" "$work/netd.log")
  if [ "$expect" = ok ]; then
    if [ $rc -eq 0 ] && grep -q "Handshake was completed" <<<"$out"; then echo "ok   $name"; passed=$((passed+1)); return; fi
  else
    if grep -Eq "$want" <<<"$logl"; then echo "ok   $name: $(grep -E "$want" <<<"$logl" | head -1 | sed 's/.*amaters-net: //')"; passed=$((passed+1)); return; fi
  fi
  echo "FAIL $name (rc=$rc)"; echo "$out" | tail -5; echo "$logl" | tail -5; failed=$((failed+1))
}
attempt "certtool-made client cert accepted" ok '' --x509certfile "$work/good.pem" --x509keyfile "$work/good-key.pem"
attempt "no client certificate" refused 'refused: .*no client certificate presented'
attempt "expired client certificate" refused 'refused: .*client certificate has expired' \
  --x509certfile "$work/expired.pem" --x509keyfile "$work/expired-key.pem"
attempt "not yet valid client certificate" refused 'refused: .*client certificate is not yet valid' \
  --x509certfile "$work/future.pem" --x509keyfile "$work/future-key.pem"
attempt "client certificate without clientAuth" refused 'refused: .*lacks extended key usage clientAuth' \
  --x509certfile "$work/serveronly.pem" --x509keyfile "$work/serveronly-key.pem"
attempt "client certificate from another CA" refused 'refused: .*not issued by a trusted CA' \
  --x509certfile "$work/stranger.pem" --x509keyfile "$work/stranger-key.pem"
attempt "TLS 1.2 client refused by default" refused 'refused: .*(no common TLS version|TLS 1\.2|protocol version|unsupported)' \
  --x509certfile "$work/good.pem" --x509keyfile "$work/good-key.pem" --priority 'NORMAL:-VERS-ALL:+VERS-TLS1.2'
kill -0 "$pid" || fail "daemon died"
out=$(timeout 10 "$bin/amaters-cli" --pki-dir "$pki" "https://localhost:$port" execute --data still-serving) || fail "daemon stopped serving"
[ "$out" = still-serving ] || fail "unexpected echo '$out'"
# [tls] allow_tls12 = true in a config file takes effect (and stays strict)
kill "$pid"; wait "$pid" || true
printf '[tls]\nallow_tls12 = true\n' >"$work/tls12.toml"
"$bin/amaters-netd" --config "$work/tls12.toml" --listen "127.0.0.1:$port" --pki-dir "$pki" >"$work/netd.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do grep -q "listening on" "$work/netd.log" && break; sleep 0.1; done
attempt "TLS 1.2 client accepted with allow_tls12" ok '' \
  --x509certfile "$work/good.pem" --x509keyfile "$work/good-key.pem" --priority 'NORMAL:-VERS-ALL:+VERS-TLS1.2'
attempt "TLS 1.2 with an expired certificate still refused" refused 'refused: .*client certificate has expired' \
  --x509certfile "$work/expired.pem" --x509keyfile "$work/expired-key.pem" --priority 'NORMAL:-VERS-ALL:+VERS-TLS1.2'
# The other way round: a server that resets the connection under its
# client (as a killed one does) is reported as such, not as a GnuTLS
# transport error.
rm -f "$work/rst.port"
/usr/bin/python3 "$(dirname "$0")/tls_rst_server.py" "$pki" "$work/rst.port" 1 2>"$work/rst.log" &
rst=$!
for _ in $(seq 1 100); do [ -s "$work/rst.port" ] && break; sleep 0.1; done
out=$(timeout 10 "$bin/amaters-cli" --pki-dir "$pki" "https://localhost:$(cat "$work/rst.port")" execute --data x 2>&1) && \
  fail "a call through a resetting server succeeded"
kill "$rst" 2>/dev/null || true
if grep -q "UNAVAILABLE: .*connection reset by the peer" <<<"$out"; then
  echo "ok   server reset: client says 'connection reset by the peer'"; passed=$((passed+1))
else
  echo "FAIL server reset: got: $out"; failed=$((failed+1))
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
