#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# integration.signatures_cli: amaters-cli --sign and --verify-proof against
# amaters-netd with [auth] from its config file, over HTTP/2 and HTTP/3:
#   - a daemon with require_client_signature refuses an unsigned execute and
#     stream (exit 16, UNAUTHENTICATED "client signature missing") and takes
#     signed ones (--sign: execute, every line of stream, a short bench);
#   - with sign_results, execute --verify-proof succeeds and --json shows the
#     proof (version 1, ECDSA P-256); against a daemon that does not sign,
#     --verify-proof fails with DATA_LOSS (exit 15) "server proof missing";
#   - client.sign_queries / client.verify_proofs in the client's config file
#     do the same as the flags.
# usage: test_signatures_cli.sh BUILD_DIR
set -euo pipefail
bin=$1
here=$(cd "$(dirname "$0")" && pwd)
. "$here/proc_lib.sh"

printf '[auth]\nrequire_client_signature = true\nsign_results = true\n' >signed.toml
start_netd signed.log --config signed.toml --transport both
sport=$port
start_netd plain.log --transport both
pport=$port
printf '[client]\nsign_queries = true\nverify_proofs = true\n' >client.toml

cli() { "$bin/amaters-cli" --pki-dir pki --timeout 10s "$@"; }
for t in h2 h3; do
  set +e
  out=$(cli --transport $t "https://localhost:$sport" execute --data q 2>&1); rc=$?
  set -e
  [ $rc = 16 ] && grep -q "UNAUTHENTICATED: client signature missing" <<<"$out" &&
    ok "$t: unsigned execute refused" || bad "$t: unsigned execute: exit $rc: $out"
  set +e
  out=$(printf 'a\nb\n' | cli --transport $t "https://localhost:$sport" stream 2>&1); rc=$?
  set -e
  [ $rc = 16 ] && grep -q "client signature missing" <<<"$out" &&
    ok "$t: unsigned stream refused" || bad "$t: unsigned stream: exit $rc: $out"
  out=$(cli --transport $t "https://localhost:$sport" execute --sign --verify-proof --data q --json 2>&1) &&
    grep -q '"result":"q"' <<<"$out" && grep -q '"proof_hex":"0101' <<<"$out" &&
    ok "$t: signed execute accepted, its proof verified" || bad "$t: signed execute: $out"
  out=$(printf 'a\nb\nc\n' | cli --transport $t "https://localhost:$sport" stream --sign 2>&1) &&
    [ "$out" = $'a\nb\nc' ] && ok "$t: signed stream accepted" || bad "$t: signed stream: $out"
  out=$(cli --transport $t --config client.toml "https://localhost:$sport" execute --data q 2>&1) &&
    [ "$out" = q ] && ok "$t: client.sign_queries and verify_proofs" || bad "$t: from the config: $out"
  out=$(cli --transport $t "https://localhost:$sport" bench --sign --inflight 4 --duration 300ms --warmup 0 --json 2>&1) &&
    [ "$($py -c 'import json,sys; d=json.loads(sys.argv[1].splitlines()[-1]); print(d["errors"] == 0 and d["calls"] > 0)' "$out")" = True ] &&
    ok "$t: bench --sign without errors" || bad "$t: bench --sign: $out"
  set +e
  out=$(cli --transport $t "https://localhost:$pport" execute --verify-proof --data q 2>&1); rc=$?
  set -e
  [ $rc = 15 ] && grep -q "DATA_LOSS: server proof missing" <<<"$out" &&
    ok "$t: --verify-proof without a proof: DATA_LOSS" || bad "$t: no proof: exit $rc: $out"
done
echo "signatures_cli: $passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$passed" -gt 0 ]
