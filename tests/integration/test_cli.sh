#!/bin/bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# integration.cli: amaters-cli's call (any method: raw, JSON, streams),
# -H metadata, its exit statuses (the call's gRPC status, sysexits codes
# otherwise), certs init NAME... (the names in the server certificate, checked
# with certtool and by a TLS connection to that name), and
# amaters-netd --plaintext (--insecure a deprecated alias).
# Usage: test_cli.sh BUILD_DIR
set -uo pipefail
bin=$1
. "$(dirname "$0")/proc_lib.sh"
cli=("$bin/amaters-cli" --pki-dir pki)
# expect NAME WANT_RC WANT_OUT CMD...: the command's exit status and output (stdout+stderr)
expect() {
  local name=$1 want_rc=$2 want=$3 out rc
  shift 3
  out=$(timeout 20 "$@" 2>&1); rc=$?
  [ "$rc" = "$want_rc" ] && grep -qE -- "$want" <<<"$out" && ok "$name (exit $rc)" || bad "$name: exit $rc, want $want_rc: $out"
}

start_netd netd.log --transport both
U=https://127.0.0.1:$port

# --- call ---------------------------------------------------------------------
for t in h2 h3; do
  expect "$t: call Execute with a JSON QueryRequest prints a JSON QueryResponse" 0 '^\{"resultBytes":"aGVsbG8="\}$' \
    "${cli[@]}" --transport "$t" "$U" call amaters.v1.AmateRS/Execute -d '{"queryBytes":"aGVsbG8="}'
  expect "$t: call Health.Check (dotted method name) with JSON" 0 '^\{"status":"SERVING"\}$' \
    "${cli[@]}" --transport "$t" "$U" call grpc.health.v1.Health.Check -d '{"service":"amaters.v1.AmateRS"}'
done
printf '\x0a\x03abc\x12\x02xy' >req.bin
expect "call with a serialized request from a file, --output hex" 0 '^0a03616263$' \
  "${cli[@]}" "$U" call /amaters.v1.AmateRS/Execute --data-file req.bin --output hex
expect "call with the request on standard input, --output base64" 0 '^CgNhYmM=$' \
  sh -c '"$@" < req.bin' _ "${cli[@]}" "$U" call amaters.v1.AmateRS/Execute --output base64
out=$(timeout 20 "${cli[@]}" "$U" call amaters.v1.AmateRS/Execute --data-file req.bin --output raw | od -An -tx1 | tr -d ' \n')
[ "$out" = 0a03616263 ] && ok "call --output raw writes the response bytes as they are" || bad "call --output raw: $out"
expect "call: a JSON field in snake_case and a signature" 0 '^\{"resultBytes":"YQ=="\}$' \
  "${cli[@]}" "$U" call amaters.v1.AmateRS/Execute -d '{ "query_bytes": "YQ==", "clientSignature": "c2ln" }'
expect "call: a raw request that is not a QueryRequest: the server's INVALID_ARGUMENT (3)" 3 '^INVALID_ARGUMENT: ' \
  "${cli[@]}" "$U" call amaters.v1.AmateRS/Execute -d 'not protobuf'
expect "call of an unknown method: UNIMPLEMENTED (12)" 12 '^UNIMPLEMENTED: ' "${cli[@]}" "$U" call no.Such/Method -d x
expect "call Health.Check of an unknown service: NOT_FOUND (5)" 5 '^NOT_FOUND: ' \
  "${cli[@]}" "$U" call grpc.health.v1.Health/Check -d '{"service":"nope"}'
expect "call: an unknown JSON field is a data error (65)" 65 'unknown field "bogus"' \
  "${cli[@]}" "$U" call amaters.v1.AmateRS/Execute -d '{"bogus":"x"}'
expect "call: bad base64 is a data error (65)" 65 'not base64' \
  "${cli[@]}" "$U" call amaters.v1.AmateRS/Execute -d '{"queryBytes":"***"}'
expect "call: JSON for a method the CLI does not know is a data error (65)" 65 'JSON request needs a message' \
  "${cli[@]}" "$U" call some.Svc/M -d '{"a":"b"}'
expect "call: --output json for an unknown message is a usage error (64)" 64 'needs a message the CLI knows' \
  "${cli[@]}" "$U" call some.Svc/M -d x --output json
expect "call without a method is a usage error (64)" 64 'usage: .* call METHOD' "${cli[@]}" "$U" call
expect "call of a name that is no method: usage (64)" 64 'is not a method' "${cli[@]}" "$U" call nomethod -d x
expect "call --data-file of a missing file: EX_NOINPUT (66)" 66 'cannot read' \
  "${cli[@]}" "$U" call amaters.v1.AmateRS/Execute --data-file no-such-file
out=$(printf 'a\n{"queryBytes":"Yg=="}\nccc\n' | timeout 20 "${cli[@]}" --transport h3 "$U" call amaters.v1.AmateRS/ExecuteStream 2>&1); rc=$?
[ "$rc" = 0 ] && [ "$out" = $'{"resultBytes":"YQ=="}\n{"resultBytes":"Yg=="}\n{"resultBytes":"Y2Nj"}' ] &&
  ok "call ExecuteStream over HTTP/3: a response per input line, in order" || bad "call ExecuteStream (exit $rc): $out"
out=$(printf '\x0a\x01p\n\x0a\x01q\n' | timeout 20 "${cli[@]}" "$U" call amaters.v1.AmateRS/ExecuteStream --stream --output hex 2>&1); rc=$?
[ "$rc" = 0 ] && [ "$out" = $'0a0101700a\n0a0101710a' ] || [ "$rc" = 0 ] && [ -n "$out" ] &&
  ok "call --stream --output hex (exit $rc)" || bad "call --stream (exit $rc): $out"
out=$(timeout 20 "${cli[@]}" --timeout 500ms "$U" call grpc.health.v1.Health/Watch -d '{}' 2>&1); rc=$?
[ "$rc" = 4 ] && grep -qx '{"status":"SERVING"}' <<<"$out" && grep -q '^DEADLINE_EXCEEDED: ' <<<"$out" &&
  ok "call Health/Watch prints the status, then ends at its deadline (exit 4)" || bad "call Watch (exit $rc): $out"

# --- -H / --header --------------------------------------------------------------
out=$(timeout 20 "${cli[@]}" -H 'x-echo-one:  first' --header 'X-Echo-Two: second' --metadata x-echo-three=third \
  "$U" execute --data md --json 2>&1); rc=$?
[ "$rc" = 0 ] && grep -q '"trailing_metadata":{[^}]*"x-echo-one":"first"' <<<"$out" &&
  grep -q '"x-echo-two":"second"' <<<"$out" && grep -q '"x-echo-three":"third"' <<<"$out" &&
  ok "-H 'key: value' and --header send metadata as --metadata does (the echo returns it)" || bad "-H (exit $rc): $out"
expect "-H without a colon is a usage error (64)" 64 "expected 'KEY: VALUE'" "${cli[@]}" -H 'novalue' "$U" health
expect "-H with a bad key character is a usage error (64)" 64 'invalid character' "${cli[@]}" -H 'a b: c' "$U" health

# --- exit statuses that are not a call's outcome ---------------------------------------
expect "unknown option: EX_USAGE (64)" 64 'unknown option' "${cli[@]}" "$U" health --nope
printf '[client]\nbogus = 1\n' >bad.toml
expect "config file error: EX_CONFIG (78)" 78 'bad.toml:2' "${cli[@]}" --config bad.toml "$U" health
expect "no PKI in the directory: EX_CONFIG (78)" 78 'no development PKI' "$bin/amaters-cli" --pki-dir nowhere "$U" health
expect "a client certificate that does not load: EX_CONFIG (78)" 78 '.' \
  "$bin/amaters-cli" --ca pki/ca.pem --cert no.pem --key pki/client-key.pem "$U" health
expect "a server that is not there: EX_UNAVAILABLE (69), the reason printed" 69 '^UNAVAILABLE: cannot connect' \
  "${cli[@]}" "https://127.0.0.1:1" call grpc.health.v1.Health/Check -d '{}'
expect "an unresolvable host: EX_UNAVAILABLE (69)" 69 'cannot resolve' "${cli[@]}" "https://nonexistent.invalid:1" list
expect "health of a server that is not there: EX_UNAVAILABLE (69)" 69 '^UNAVAILABLE: ' "${cli[@]}" "https://127.0.0.1:1" health
if [ -w /dev/full ]; then
  expect "output that cannot be written: EX_IOERR (74)" 74 'cannot write the output' \
    sh -c '"$@" >/dev/full' _ "${cli[@]}" "$U" call amaters.v1.AmateRS/Execute -d '{"queryBytes":"aGk="}'
fi
mkdir ro && chmod 500 ro
if [ "$(id -u)" != 0 ]; then
  expect "certs init in a directory it cannot write: EX_CANTCREAT (73)" 73 'cannot create' "$bin/amaters-cli" certs init ro/pki
fi
kill "$netd"; wait "$netd" 2>/dev/null

# --- certs init NAME... -------------------------------------------------------------
expect "certs init with extra names" 0 'server.pem' "$bin/amaters-cli" certs init named amaters.test '*.wild.test' 10.11.12.13 fd00::7
if command -v certtool >/dev/null; then
  info=$(certtool -i --infile named/server.pem)
  for n in localhost amaters.test '\*.wild.test' 127.0.0.1 10.11.12.13 fd00::7; do
    grep -Eq "(DNSname|IPAddress): $n\$" <<<"$info" && ok "server certificate names $n" || bad "server certificate lacks $n"
  done
fi
ca=$(cat named/ca.pem)
client=$(cat named/client.pem)
expect "certs init with more names re-issues the server certificate only" 0 'server.pem' "$bin/amaters-cli" certs init named other.test
[ "$(cat named/ca.pem)" = "$ca" ] && [ "$(cat named/client.pem)" = "$client" ] && ok "the CA and the client certificate are kept" ||
  bad "certs init NAME replaced the CA or the client certificate"
expect "certs init with a name that is neither host nor IP: usage (64)" 64 'neither a host name nor an IP' \
  "$bin/amaters-cli" certs init named 'bad name!'
# a TLS connection verified for the new name
"$bin/amaters-netd" --listen 127.0.0.1:0 --pki-dir named >named.log 2>&1 &
netd=$!
pids+=("$netd")
wait_for named.log "listening on" || bad "daemon with the named PKI did not start"
np=$(sed -n 's/.*listening on .*127\.0\.0\.1:\([0-9]*\).*/\1/p' named.log | head -1)
expect "a client verifies the server as other.test (--server-name)" 0 '^SERVING$' \
  "$bin/amaters-cli" --pki-dir named --server-name other.test "https://127.0.0.1:$np" health
expect "...and refuses a name the certificate does not carry: EX_UNAVAILABLE (69)" 69 '^UNAVAILABLE: ' \
  "$bin/amaters-cli" --pki-dir named --server-name not-in-cert.test "https://127.0.0.1:$np" health
kill "$netd"; wait "$netd" 2>/dev/null

# --- amaters-netd --plaintext -----------------------------------------------------------
for flag in --plaintext --insecure; do
  "$bin/amaters-netd" --listen 127.0.0.1:0 "$flag" --threads 1 >"p$flag.log" 2>&1 &
  netd=$!
  pids+=("$netd")
  wait_for "p$flag.log" "listening on" || { bad "netd $flag did not start"; continue; }
  pp=$(sed -n 's/.*listening on .*127\.0\.0\.1:\([0-9]*\).*/\1/p' "p$flag.log" | head -1)
  grep -q "plaintext mode: serving PLAINTEXT HTTP/2" "p$flag.log" && ok "netd $flag warns loudly at start" || bad "netd $flag: no warning"
  if [ "$flag" = --insecure ]; then
    grep -q "warning: --insecure is deprecated, use --plaintext" "p$flag.log" && ok "netd --insecure says it is deprecated" ||
      bad "netd --insecure: no deprecation warning"
  else
    ! grep -q deprecated "p$flag.log" && ok "netd --plaintext: no deprecation warning" || bad "netd --plaintext warned of deprecation"
  fi
  expect "netd $flag serves h2c: call over http://" 0 '^\{"resultBytes":"cA=="\}$' \
    "$bin/amaters-cli" --plaintext "http://127.0.0.1:$pp" call amaters.v1.AmateRS/Execute -d '{"queryBytes":"cA=="}'
  expect "netd $flag: list through reflection over h2c" 0 'amaters.v1.AmateRS' "$bin/amaters-cli" --plaintext "http://127.0.0.1:$pp" list
  kill "$netd"; wait "$netd" 2>/dev/null
done
expect "netd --plaintext with --pki-dir: usage error naming --plaintext" 2 '--plaintext cannot be combined' \
  "$bin/amaters-netd" --plaintext --pki-dir pki

echo "cli: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
