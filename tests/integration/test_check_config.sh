#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# integration.check_config: amaters-netd --check-config [FILE] validates the
# configuration like `nginx -t`: exit 0 for a valid one; exit 1 with
# FILE:LINE and the key for the first problem (a value out of range, an
# unknown key, a certificate that cannot be read, a key that does not match
# its certificate, an admin address without a port, an unknown log format);
# it creates no PKI and no QUIC secret and binds nothing.
# usage: test_check_config.sh BUILD_DIR
set -euo pipefail
bin=$1
here=$(cd "$(dirname "$0")" && pwd)
. "$here/proc_lib.sh"
P=$work/pki

# check NAME FILE RC REGEX: --check-config FILE exits RC and its output matches REGEX
check() {
  local rc=0 out
  out=$(timeout 30 "$bin/amaters-netd" --check-config "$2" 2>&1) || rc=$?
  if [ "$rc" = "$3" ] && grep -Eq -- "$4" <<<"$out"; then ok "$1"; else bad "$1: exit $rc: $out"; fi
}
tls() { printf '[tls]\ncert_path = "%s"\nkey_path = "%s"\nca_path = "%s"\n' "$1" "$2" "$3"; }

{ printf '[server]\npki_dir = "%s"\ntransport = "both"\n[admin]\nbind_address = "127.0.0.1:9464"\n' "$P"
  printf '[log]\naccess = true\nformat = "json"\n'; } >good.toml
check "a valid configuration" good.toml 0 "configuration good.toml .*is valid"
[ ! -e "$P/quic-secret.key" ] && ok "no QUIC secret created" || bad "the check created $P/quic-secret.key"

printf '# limits\n[network]\nmax_connections = -3\n' >range.toml
check "value out of range" range.toml 1 "^amaters-netd: range.toml:3: network.max_connections: .*out of range"
printf '[server]\nthreds = 2\n' >unknown.toml
check "unknown key" unknown.toml 1 "^amaters-netd: unknown.toml:2: .*threds"
tls "$P/server.pem" "$P/client-key.pem" "$P/ca.pem" >mismatch.toml
check "key of another certificate" mismatch.toml 1 \
  "^amaters-netd: mismatch.toml:3: tls.key_path: key file .*client-key.pem does not match the certificate"
tls "$P/none.pem" "$P/server-key.pem" "$P/ca.pem" >missing.toml
check "certificate file missing" missing.toml 1 \
  "^amaters-netd: missing.toml:2: tls.cert_path: cannot read certificate file .*none.pem: No such file"
tls "$P/server.pem" "$P/server-key.pem" "$P/server-key.pem" >ca.toml
check "a key as the CA bundle" ca.toml 1 "^amaters-netd: ca.toml:4: tls.ca_path: "
printf '[admin]\nbind_address = "127.0.0.1"\n' >admin.toml
check "admin address without a port" admin.toml 1 "^amaters-netd: admin.toml:2: admin.bind_address: "
printf '[log]\nformat = "xml"\n' >fmt.toml
check "unknown log format" fmt.toml 1 "^amaters-netd: fmt.toml:2: log.format: "
check "no such file" nothere.toml 1 "^amaters-netd: nothere.toml: "
# flags are checked too; a PKI that does not exist yet is not created
rc=0
out=$(AMATERS_NET_PKI_DIR=$work/nopki timeout 30 "$bin/amaters-netd" --check-config --log-format xml 2>&1) || rc=$?
[ "$rc" = 1 ] && grep -q "unknown format 'xml'" <<<"$out" && ok "a bad flag: exit 1" || bad "bad flag: $rc $out"
rc=0
out=$(AMATERS_NET_PKI_DIR=$work/nopki timeout 30 "$bin/amaters-netd" --check-config 2>&1) || rc=$?
[ "$rc" = 0 ] && [ ! -e "$work/nopki" ] && ok "defaults valid, no PKI created" || bad "defaults: $rc $out"

echo "passed $passed, failed $failed"
[ "$failed" = 0 ]
