#!/bin/bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# integration.reflection: the server reflection of amaters-netd against
# independent clients. Over HTTP/2: python grpcio with reflection messages
# declared through python3-protobuf (grpc.reflection.v1 and v1alpha), and
# grpc-go's own reflection client stub (v1alpha). Over HTTP/3: quic-go's
# http3 client with grpc-go's v1alpha messages (v1 and v1alpha paths). Over
# HTTP/3 and HTTP/2: amaters-cli list / describe. Then a server with
# [server] reflection = false answers UNIMPLEMENTED.
# Usage: test_reflection.sh BUILD_DIR [GO_PEERS_DIR]  (the directory of grpcgo_reflect; without
# it the Go checks are skipped, as when Go is missing)
set -uo pipefail
bin=$1
go_dir=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/proc_lib.sh"
need_module grpc python3-grpcio
need_module google.protobuf python3-protobuf
cli=("$bin/amaters-cli" --pki-dir pki)

start_netd netd.log --transport both
U=https://127.0.0.1:$port

for v in v1 v1alpha; do
  if timeout 60 $py "$here/reflection_client.py" "$port" pki "$v" >"py_$v.out" 2>&1; then
    ok "python grpcio, grpc.reflection.$v over HTTP/2: $(grep -c '^ok: ' "py_$v.out") checks"
  else
    cat "py_$v.out"
    bad "python grpcio, grpc.reflection.$v over HTTP/2"
  fi
done

if [ -n "$go_dir" ]; then
  if timeout 60 "$go_dir/grpcgo_reflect" -addr "127.0.0.1:$port" -pki pki >go.out 2>&1; then
    ok "grpc-go's grpc_reflection_v1alpha client over HTTP/2: $(tail -1 go.out)"
  else
    cat go.out
    bad "grpc-go's grpc_reflection_v1alpha client over HTTP/2"
  fi
  for v in v1alpha v1; do
    if timeout 60 "$go_dir/grpcgo_reflect" -addr "127.0.0.1:$port" -pki pki \
      -h3 "/grpc.reflection.$v.ServerReflection/ServerReflectionInfo" >"quic_$v.out" 2>&1; then
      ok "quic-go's http3 client, grpc.reflection.$v over HTTP/3: $(tail -1 "quic_$v.out")"
    else
      cat "quic_$v.out"
      bad "quic-go's http3 client, grpc.reflection.$v over HTTP/3"
    fi
  done
fi

want_services=$'amaters.v1.AmateRS\ngrpc.health.v1.Health\ngrpc.reflection.v1.ServerReflection\ngrpc.reflection.v1alpha.ServerReflection'
for t in h3 h2; do
  out=$(timeout 20 "${cli[@]}" --transport "$t" "$U" list 2>&1); rc=$?
  [ "$rc" = 0 ] && [ "$out" = "$want_services" ] && ok "$t: list names the four services, sorted" ||
    bad "$t: list (exit $rc): $out"
  out=$(timeout 20 "${cli[@]}" --transport "$t" "$U" list amaters.v1.AmateRS 2>&1); rc=$?
  [ "$rc" = 0 ] && [ "$out" = $'amaters.v1.AmateRS.Execute\namaters.v1.AmateRS.ExecuteStream' ] &&
    ok "$t: list amaters.v1.AmateRS names its two methods" || bad "$t: list amaters.v1.AmateRS (exit $rc): $out"
  out=$(timeout 20 "${cli[@]}" --transport "$t" "$U" describe amaters.v1.AmateRS 2>&1); rc=$?
  [ "$rc" = 0 ] && grep -qxF '  rpc Execute ( .amaters.v1.QueryRequest ) returns ( .amaters.v1.QueryResponse );' <<<"$out" &&
    grep -qxF '  rpc ExecuteStream ( stream .amaters.v1.QueryRequest ) returns ( stream .amaters.v1.QueryResponse );' <<<"$out" &&
    ok "$t: describe amaters.v1.AmateRS shows both methods with their types" || bad "$t: describe amaters.v1.AmateRS (exit $rc): $out"
  out=$(timeout 20 "${cli[@]}" --transport "$t" "$U" describe .amaters.v1.QueryRequest 2>&1); rc=$?
  [ "$rc" = 0 ] && grep -qxF '  bytes query_bytes = 1;' <<<"$out" && grep -qxF '  bytes client_signature = 2;' <<<"$out" &&
    ok "$t: describe .amaters.v1.QueryRequest shows its two fields" || bad "$t: describe QueryRequest (exit $rc): $out"
  out=$(timeout 20 "${cli[@]}" --transport "$t" "$U" describe amaters.v1.NoSuch 2>&1); rc=$?
  [ "$rc" = 5 ] && grep -q '^NOT_FOUND: symbol not found: amaters.v1.NoSuch' <<<"$out" &&
    ok "$t: describe of an unknown symbol: NOT_FOUND, exit 5" || bad "$t: describe unknown (exit $rc): $out"
done
out=$(timeout 20 "${cli[@]}" "$U" describe 2>&1); rc=$?
[ "$rc" = 0 ] && [ "$(grep -c ' is a service:$' <<<"$out")" = 4 ] && grep -q '^  rpc Watch ( .grpc.health.v1.HealthCheckRequest ) returns ( stream .grpc.health.v1.HealthCheckResponse );$' <<<"$out" &&
  ok "describe without a symbol: every service" || bad "describe without a symbol (exit $rc): $out"
out=$(timeout 20 "${cli[@]}" "$U" describe grpc.health.v1.HealthCheckResponse.ServingStatus 2>&1); rc=$?
[ "$rc" = 0 ] && grep -qxF '  SERVICE_UNKNOWN = 3;' <<<"$out" && ok "describe of a nested enum lists its values" ||
  bad "describe nested enum (exit $rc): $out"
kill "$netd"; wait "$netd" 2>/dev/null

# Reflection off: both services are gone (the CLI tries v1, then v1alpha).
printf '[server]\nreflection = false\n' >off.toml
start_netd off.log --config off.toml --transport both
out=$(timeout 20 "${cli[@]}" "https://127.0.0.1:$port" list 2>&1); rc=$?
[ "$rc" = 12 ] && grep -q '^UNIMPLEMENTED: ' <<<"$out" && ok "[server] reflection = false: list ends UNIMPLEMENTED (12)" ||
  bad "reflection off (exit $rc): $out"
out=$(timeout 20 "${cli[@]}" "https://127.0.0.1:$port" call amaters.v1.AmateRS/Execute -d '{"queryBytes":"b2Zm"}' 2>&1); rc=$?
[ "$rc" = 0 ] && [ "$out" = '{"resultBytes":"b2Zm"}' ] && ok "reflection off: the service itself still answers" ||
  bad "reflection off, Execute (exit $rc): $out"

echo "reflection: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
