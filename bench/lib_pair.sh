# SPDX-License-Identifier: MIT OR Apache-2.0
# Shared by bench/compare.sh and bench/handshakes.sh (sourced, POSIX sh): the
# two gRPC servers side by side (amaters-netd and grpcxx_echo_server, same
# certificates), and the runs' JSON collected as TSV. On bench/lib.sh.
# The sourcing script sets: build, only ("" | ours | grpcxx), pin, duration,
# warmup; and netd_args (extra amaters-netd flags) if it wants some.

bench_here=$(cd "$(dirname "$0")" && pwd)
. "$bench_here/lib.sh"
netd=$build/amaters-netd
cli=$build/amaters-cli
gsrv=$build/tests/interop/grpcxx_echo_server
gbench=$build/tests/interop/grpcxx_bench
want() { [ -z "$only" ] || [ "$only" = "$1" ]; }
bench_setup

# start_servers: the wanted servers; sets pki, tls (the client flags),
# ours_port and g_port. Checks the binaries first.
start_servers() {
  for f in $(want ours && echo "$netd $cli") $(want grpcxx && echo "$gsrv $gbench"); do
    [ -x "$f" ] || { echo "missing $f (build it first, or use --only)" >&2; exit 1; }
  done
  pki=$tmp/pki
  if want ours; then
    port=$(free_port)
    $srv_cpu "$netd" --listen "127.0.0.1:$port" --pki-dir "$pki" ${netd_args:-} >"$tmp/netd.log" 2>&1 &
    pids="$pids $!"
    ours_port=$(wait_port "$tmp/netd.log" $!)
  else
    sh "$bench_here/../tests/interop/mkcerts.sh" "$pki"
  fi
  tls="--ca $pki/ca.pem --cert $pki/client.pem --key $pki/client-key.pem"
  if want grpcxx; then
    $srv_cpu "$gsrv" --listen 127.0.0.1:0 --cert "$pki/server.pem" --key "$pki/server-key.pem" \
      --ca "$pki/ca.pem" >"$tmp/grpcxx.log" 2>&1 &
    pids="$pids $!"
    g_port=$(wait_port "$tmp/grpcxx.log" $!)
  fi
  limit=$(awk "BEGIN{print int($duration + $warmup + 60)}")
  results=$tmp/results.tsv
  : >"$results"
}

run() { # impl scenario rep command...: appends one TSV line (json or FAILED)
  impl=$1 name=$2 rep=$3; shift 3
  if out=$(timeout "$limit" $cli_cpu "$@" 2>"$tmp/err") && [ -n "$out" ]; then
    printf '%s\t%s\t%s\t%s\n' "$impl" "$name" "$rep" "$(printf '%s' "$out" | tail -n 1)" >>"$results"
  else
    echo "  $impl $name run $rep FAILED: $(tail -n 3 "$tmp/err")" >&2
    printf '%s\t%s\t%s\tFAILED\n' "$impl" "$name" "$rep" >>"$results"
  fi
}
