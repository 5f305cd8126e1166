#!/bin/sh
# SPDX-License-Identifier: MIT OR Apache-2.0
# Server-side benchmark that does not depend on our client: h2load (Debian
# nghttp2-client) sends one gRPC request body, again and again, over
# plaintext HTTP/2 (h2c, prior knowledge) to
#   nghttpd  nghttpd (nghttp2-server) serving the same response bytes as a
#            static file, with the trailer grpc-status: 0: a bare HTTP/2
#            server, the ceiling;
#   netd     amaters-netd --plaintext (its echo handler);
#   grpcxx   grpcxx_echo_server --insecure (grpc C++ 1.51);
# and the grpc C++ client (grpcxx_bench) against both gRPC servers over mTLS
# (the same certificates, tests/interop/mkcerts.sh), rows "mtls-netd" and
# "mtls-grpcxx" (bench/compare.sh --cross has the full client x server matrix).
# The request: a gRPC length-prefixed amaters.v1.QueryRequest whose
# query_bytes holds --size bytes, POST /amaters.v1.AmateRS/Execute with
# content-type: application/grpc and te: trailers; the echo answer is the same
# bytes. Runs alternate the targets so slow drifts of the machine hit all.
#
# Correctness, before timing: one call to each target with python3-h2
# (bench/h2c_grpc.py: :status 200, the expected body, and for the gRPC
# servers content-type application/grpc and grpc-status 0 in the trailers,
# which h2load cannot see), then an h2load run of a fixed number of requests
# (all 2xx, no failure, exactly that many response bytes). Every timed run must
# also be all 2xx with no failure or error. Any failure: the script says what
# and exits 1.
#
# Which side is the limit: every run prints the CPU each process used (% of one
# core over the run's wall time; for the server also its busiest thread). A
# single-threaded process near 100% is saturated; compare --threads 1 and 2.
# The table adds the CPU time per request of each side (CPU share / rate): on
# a busy machine neither reaches 100%, and the side that needs more CPU per
# request is the one that limits when each has a core.
#
# Usage: bench/h2load.sh [--build DIR] [--reps N] [--duration S] [--warmup S]
#                        [--clients C] [--streams M] [--threads T] [--size BYTES]
#                        [--only LIST] [--server-threads N] [--pin] [--profile DIR]
#   --build DIR    CMake build dir (default: build) with amaters-netd and
#                  tests/interop/grpcxx_{echo_server,bench} (AMN_INTEROP=ON)
#   --reps N       repetitions per target (default 3)
#   --duration S   measured seconds per run (default 5); --warmup S (default 1)
#   --clients C    connections (h2load -c, grpcxx_bench --connections; default 1)
#   --streams M    concurrent streams per connection (h2load -m; grpcxx_bench
#                  --inflight C*M; default 100)
#   --threads T    h2load threads (-t, default 1; at most C)
#   --size BYTES   query_bytes of the request (default 64)
#   --only LIST    comma-separated subset of nghttpd,netd,grpcxx,mtls (default all)
#   --server-threads N  amaters-netd --threads and nghttpd -n (default: their own,
#                  one loop per core for amaters-netd, one worker for nghttpd)
#   --pin          servers on CPU 0, h2load / grpcxx_bench on CPU 1 (taskset)
#   --profile DIR  perf record -g of amaters-netd during its first h2load run
#                  (DIR/netd.perf.data) and its top functions (needs linux-perf)
# Use an optimised build (RelWithDebInfo or Release). Prints a Markdown table
# of medians with min-max. Not a timing test: CTest runs it only as a
# functional check (integration.h2load_bench, tiny durations).
set -eu

build=build reps=3 duration=5 warmup=1 clients=1 streams=100 threads=1 size=64
only=nghttpd,netd,grpcxx,mtls srv_threads= pin= profile=
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --streams) streams=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --server-threads) srv_threads=$2; shift 2 ;;
    --pin) pin=1; shift ;;
    --profile) profile=$2; shift 2 ;;
    -h|--help) sed -n '2,54p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
for v in "$reps" "$clients" "$streams" "$threads" "$size"; do
  case $v in ''|*[!0-9]*) echo "--reps/--clients/--streams/--threads/--size take a whole number" >&2; exit 2 ;; esac
done
for v in "$duration" "$warmup"; do
  case $v in ''|*[!0-9.]*|*.*.*) echo "--duration/--warmup take seconds (e.g. 5 or 0.5)" >&2; exit 2 ;; esac
done
[ "$threads" -le "$clients" ] || { echo "--threads $threads > --clients $clients (h2load needs a connection per thread)" >&2; exit 2; }
want() { case ",$only," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
for t in $(echo "$only" | tr , ' '); do
  case $t in nghttpd|netd|grpcxx|mtls) ;; *) echo "--only: unknown target $t" >&2; exit 2 ;; esac
done

here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
PY=/usr/bin/python3
netd=$build/amaters-netd
gsrv=$build/tests/interop/grpcxx_echo_server
gbench=$build/tests/interop/grpcxx_bench
need=/usr/bin/time
want nghttpd && need="$need $(command -v nghttpd || echo /usr/sbin/nghttpd)"
{ want nghttpd || want netd || want grpcxx; } && need="$need $(command -v h2load || echo h2load)"
{ want netd || want mtls; } && need="$need $netd"
{ want grpcxx || want mtls; } && need="$need $gsrv"
want mtls && need="$need $gbench"
[ -z "$profile" ] || need="$need $(command -v perf || echo perf)"
for f in $need; do
  [ -x "$f" ] || { echo "missing $f (nghttp2-client, nghttp2-server, time, linux-perf; build with AMN_INTEROP=ON)" >&2; exit 1; }
done
nghttpd=$(command -v nghttpd || echo /usr/sbin/nghttpd)

bench_setup
fail() { echo "h2load.sh: FAILED: $*" >&2; exit 1; }

# The request body; the echo answer (and nghttpd's file) is the same bytes.
rpc=/amaters.v1.AmateRS/Execute
body=$tmp/request.bin
$PY "$here/h2c_grpc.py" body --size "$size" --out "$body"
blen=$(wc -c <"$body")
mkdir -p "$tmp/htdocs${rpc%/*}"
cp "$body" "$tmp/htdocs$rpc"

# Servers (all started up front; an idle one costs nothing).
echo "# h2load: reps=$reps duration=${duration}s warmup=${warmup}s clients=$clients streams=$streams" \
  "h2load-threads=$threads size=$size (body $blen bytes) cores=$(nproc)${pin:+ pinned}" >&2
started() { eval "pid_$2=$1 port_$2=$3"; echo "  $2: pid $1, port $3" >&2; }
if want nghttpd; then
  port=$(free_port)
  m=$streams; [ "$m" -ge 100 ] || m=100
  $srv_cpu "$nghttpd" --no-tls -a 127.0.0.1 -d "$tmp/htdocs" -m "$m" ${srv_threads:+-n "$srv_threads"} \
    --trailer 'grpc-status: 0' "$port" >"$tmp/nghttpd.log" 2>&1 &
  p=$! pids="$pids $!"
  wait_tcp "$port" || { cat "$tmp/nghttpd.log" >&2; fail "nghttpd did not start"; }
  started $p nghttpd "$port"
fi
netd_start() { # NAME LOG ARGS...
  n=$1 log=$2; shift 2
  port=$(free_port)
  $srv_cpu "$netd" --listen "127.0.0.1:$port" ${srv_threads:+--threads "$srv_threads"} "$@" >"$log" 2>&1 &
  p=$! pids="$pids $!"
  port=$(wait_port "$log" $p) || fail "amaters-netd ($n) did not start"
  started $p "$n" "$port"
}
gsrv_start() { # NAME LOG ARGS...
  n=$1 log=$2; shift 2
  $srv_cpu "$gsrv" --listen 127.0.0.1:0 "$@" >"$log" 2>&1 &
  p=$! pids="$pids $!"
  port=$(wait_port "$log" $p) || fail "grpcxx_echo_server ($n) did not start"
  started $p "$n" "$port"
}
want netd && netd_start netd "$tmp/netd.log" --plaintext --transport h2
want grpcxx && gsrv_start grpcxx "$tmp/grpcxx.log" --insecure
if want mtls; then
  pki=$tmp/pki
  sh "$here/../tests/interop/mkcerts.sh" "$pki" >/dev/null
  netd_start mtls_netd "$tmp/netd-mtls.log" --transport h2 \
    --cert "$pki/server.pem" --key "$pki/server-key.pem" --ca "$pki/ca.pem"
  gsrv_start mtls_grpcxx "$tmp/grpcxx-mtls.log" --cert "$pki/server.pem" --key "$pki/server-key.pem" --ca "$pki/ca.pem"
fi

h2targets=
for t in nghttpd netd grpcxx; do want $t && h2targets="$h2targets $t"; done
h2cmd() { # TARGET LOAD-ARGS...: the h2load command line (for eval)
  eval "p=\$port_$1"; shift
  echo "h2load -t $threads -c $clients -m $streams $* -d $body -H 'content-type: application/grpc'" \
    "-H 'te: trailers' http://127.0.0.1:$p$rpc"
}
# h2stat OUT KEY: a number from h2load's summary (done, succeeded, failed,
# errored, timeout, 2xx..5xx, rps, data)
h2stat() {
  case $2 in
    rps) sed -n 's/^finished in .*, \([0-9.]*\) req\/s.*/\1/p' "$1" ;;
    data) sed -n 's/^traffic: .*(\([0-9]*\)) data$/\1/p' "$1" ;;
    *) awk -v k="$2" '/^(requests|status codes): / {
         sub(/^[a-z ]*: /, ""); n = split($0, a, ", ")
         for (i = 1; i <= n; i++) { split(a[i], f, " "); if (f[2] == k) print f[1] } }' "$1" ;;
  esac
}
# h2check OUT WANT_DONE: empty if every request of the run succeeded with a
# 2xx (WANT_DONE > 0: exactly that many), else what was wrong
h2check() {
  d=$(h2stat "$1" done) s=$(h2stat "$1" succeeded) ok=$(h2stat "$1" 2xx)
  h2n() { v=$(h2stat "$1" "$2"); echo "${v:-1}"; }  # a count h2load did not print counts as a failure
  bad=$(($(h2n "$1" failed) + $(h2n "$1" errored) + $(h2n "$1" timeout)))
  other=$(($(h2n "$1" 3xx) + $(h2n "$1" 4xx) + $(h2n "$1" 5xx)))
  if [ -z "$d" ] || [ "$d" -eq 0 ] || [ "$s" != "$d" ] || [ "$ok" != "$d" ] || [ $bad -ne 0 ] || [ $other -ne 0 ] ||
    { [ "$2" -gt 0 ] && [ "$d" -ne "$2" ]; }; then
    echo "done=$d succeeded=$s 2xx=$ok failed+errored+timeout=$bad 3xx-5xx=$other$( [ "$2" -gt 0 ] && echo " (want $2)")"
  fi
}

# Correctness of every target before any timing.
for t in $h2targets; do
  eval "port=\$port_$t"
  g=--grpc; [ $t = nghttpd ] && g=
  $PY "$here/h2c_grpc.py" check --port "$port" --path "$rpc" --body "$body" $g || fail "$t: one-call check"
  n=$((clients * streams * 10)); [ $n -ge 1000 ] || n=1000
  cmd=$(h2cmd $t -n $n)
  echo "+ $cmd" >&2
  eval "$cmd" >"$tmp/check.out" 2>&1 || { cat "$tmp/check.out" >&2; fail "$t: h2load -n $n exited non-zero"; }
  why=$(h2check "$tmp/check.out" $n)
  data=$(h2stat "$tmp/check.out" data)
  [ "$data" = $((n * blen)) ] || why="$why response bytes $data, want $n x $blen"
  [ -z "$why" ] || { cat "$tmp/check.out" >&2; fail "$t: h2load -n $n: $why"; }
  echo "  $t: $n requests, all 2xx, $data response bytes ($n x $blen)" >&2
done

limit=$(awk "BEGIN{print int($duration + $warmup + 60)}")
ms() { awk "BEGIN{printf \"%dms\", $1 * 1000}"; }  # h2load's durations: whole numbers with a unit
results=$tmp/results.tsv
: >"$results"
failures=0
# record TARGET CLIENT REP RPS SERVER_PID T0 (after the run): appends a row
# with the CPU use of the server (total, busiest thread) and of the client
record() {
  t1=$(now)
  cpu_snap "$5" "$tmp/after"
  wall=$(awk "BEGIN{print $t1 - $6}")
  set -- "$1" "$2" "$3" "$4" "$(cpu_delta "$tmp/before" "$tmp/after" "$wall")" \
    "$(awk -v s="$wall" '{printf "%.0f", 100 * ($1 + $2) / s}' "$tmp/time")"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" >>"$results"
  echo "  $1 run $3: $4 req/s; CPU % of one core: server ${5% *} (busiest thread ${5#* }), $2 $6" >&2
}
run_fail() { # TARGET CLIENT REP WHY OUTPUT
  echo "  $1 run $3 FAILED: $4" >&2
  tail -n 5 "$5" >&2
  printf '%s\t%s\t%s\tFAILED\t-\t-\n' "$1" "$2" "$3" >>"$results"
  failures=$((failures + 1))
}
run_h2load() { # TARGET REP
  eval "spid=\$pid_$1"
  cmd=$(h2cmd "$1" -D "$(ms "$duration")" --warm-up-time "$(ms "$warmup")")
  echo "+ $cmd" >&2
  perf_pid=
  if [ -n "$profile" ] && [ "$1" = netd ] && [ "$2" = 1 ]; then
    mkdir -p "$profile"
    perf record -g -o "$profile/netd.perf.data" -p "$spid" >"$tmp/perf.log" 2>&1 &
    perf_pid=$!
    sleep 0.5  # perf attaches
  fi
  cpu_snap "$spid" "$tmp/before"
  t0=$(now)
  rc=0
  eval "timeout $limit /usr/bin/time -f '%U %S' -o $tmp/time $cli_cpu $cmd" >"$tmp/run.out" 2>&1 || rc=$?
  if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
  why=$(h2check "$tmp/run.out" 0)
  [ $rc -eq 0 ] || why="h2load exit $rc $why"
  if [ -n "$why" ]; then run_fail "$1" h2load "$2" "$why" "$tmp/run.out"; return 0; fi
  record "$1" h2load "$2" "$(h2stat "$tmp/run.out" rps)" "$spid" "$t0"
}
run_grpcxx_bench() { # TARGET REP
  eval "spid=\$pid_$1 port=\$port_$1"
  cmd="$gbench --target 127.0.0.1:$port --server-name localhost --ca $pki/ca.pem --cert $pki/client.pem"
  cmd="$cmd --key $pki/client-key.pem --connections $clients --inflight $((clients * streams))"
  cmd="$cmd --duration $duration --warmup $warmup --size $size --mode unary"
  echo "+ $cmd" >&2
  cpu_snap "$spid" "$tmp/before"
  t0=$(now)
  rc=0
  timeout "$limit" /usr/bin/time -f '%U %S' -o "$tmp/time" $cli_cpu $cmd >"$tmp/run.out" 2>"$tmp/run.err" || rc=$?
  j=$(tail -n 1 "$tmp/run.out")
  why=$($PY -c 'import json,sys; j=json.loads(sys.argv[1]); print("" if j["errors"] == 0 and j["calls"] > 0
                else "errors=%d calls=%d" % (j["errors"], j["calls"]))' "$j" 2>/dev/null || echo "no JSON")
  [ $rc -eq 0 ] || why="grpcxx_bench exit $rc $why"
  if [ -n "$why" ]; then run_fail "$1" grpcxx_bench "$2" "$why" "$tmp/run.err"; return 0; fi
  record "$1" grpcxx_bench "$2" "$($PY -c 'import json,sys; print(json.loads(sys.argv[1])["qps"])' "$j")" "$spid" "$t0"
}

r=1
while [ "$r" -le "$reps" ]; do
  for t in $h2targets; do run_h2load $t $r; done
  if want mtls; then
    run_grpcxx_bench mtls_netd $r
    run_grpcxx_bench mtls_grpcxx $r
  fi
  r=$((r + 1))
done

if [ -n "$profile" ] && [ -s "$profile/netd.perf.data" ]; then
  echo "# amaters-netd under h2load, top functions (perf report --no-children -i $profile/netd.perf.data):" >&2
  perf report --stdio --no-children --sort symbol -i "$profile/netd.perf.data" 2>/dev/null |
    grep -E '^ +[0-9.]+%' | head -n 25 >&2 || true
fi

$PY - "$results" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
label = {"nghttpd": ("nghttpd (static file)", "h2c"), "netd": ("amaters-netd", "h2c"),
         "grpcxx": ("grpcxx_echo_server", "h2c"), "mtls_netd": ("amaters-netd", "h2 + mTLS"),
         "mtls_grpcxx": ("grpcxx_echo_server", "h2 + mTLS")}
def med(xs):
    return statistics.median(xs) if xs else None
ceiling = med([float(r[3]) for r in rows if r[0] == "nghttpd" and r[3] != "FAILED"])
print("| server | transport | client | req/s (median) | min–max | server CPU % | busiest server thread % "
      "| client CPU % | server CPU µs/req | client CPU µs/req | ok runs | vs nghttpd |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for t in ("nghttpd", "netd", "grpcxx", "mtls_netd", "mtls_grpcxx"):
    runs = [r for r in rows if r[0] == t]
    if not runs:
        continue
    good = [r for r in runs if r[3] != "FAILED"]
    q = [float(r[3]) for r in good]
    srv = med([float(r[4].split()[0]) for r in good])
    thr = med([float(r[4].split()[1]) for r in good])
    cli = med([float(r[5]) for r in good])
    # CPU time per request: CPU share of the run / requests per second
    srv_us = med([float(r[4].split()[0]) / 100 / float(r[3]) * 1e6 for r in good if float(r[3]) > 0])
    cli_us = med([float(r[5]) / 100 / float(r[3]) * 1e6 for r in good if float(r[3]) > 0])
    fmt = lambda x: "-" if x is None else "%.0f" % x
    fmt2 = lambda x: "-" if x is None else "%.2f" % x
    ratio = "%.2fx" % (med(q) / ceiling) if q and ceiling and t in ("netd", "grpcxx") else ""
    print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d/%d | %s |" % (
        label[t][0], label[t][1], runs[0][1], fmt(med(q)), "%.0f–%.0f" % (min(q), max(q)) if q else "-",
        fmt(srv), fmt(thr), fmt(cli), fmt2(srv_us), fmt2(cli_us), len(good), len(runs), ratio))
print()
print("CPU %: of one core over each run's wall time (warm-up included), medians; a single-threaded process"
      " (h2load -t 1, nghttpd, an amaters-netd loop) cannot exceed 100. CPU µs/req: that share divided by the"
      " rate; with server and client each on a core of their own, the side with more µs per request is the limit.")
EOF
[ "$failures" -eq 0 ] || fail "$failures run(s) failed (see above)"
