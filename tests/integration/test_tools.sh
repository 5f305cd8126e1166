#!/bin/bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# integration.tools: amaters-netd and amaters-cli end to end over loopback.
# Usage: test_tools.sh AMATERS_NETD AMATERS_CLI
# Every step is bounded by `timeout`; the last line is a pass/fail summary
# and the exit status is non-zero on any failure.
set -u
netd=$1
cli=$2
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   - $1"; }
bad() { fail=$((fail + 1)); echo "FAIL - $1"; }
# check NAME COMMAND...: runs the condition, records the result.
check() { local name=$1; shift; if "$@"; then ok "$name"; else bad "$name"; fi; }
has() { printf '%s' "$1" | grep -q -- "$2"; }

tmp=$(mktemp -d)
SRV_PID=
cleanup() {
  [ -n "$SRV_PID" ] && kill -KILL "$SRV_PID" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
# The default PKI directory must never be the user's real one here.
export AMATERS_NET_PKI_DIR=$tmp/default-pki
unset AMATERS_NET_CLIENT_URLS AMATERS_NET_TLS_CERT_PATH AMATERS_NET_TLS_KEY_PATH AMATERS_NET_TLS_CA_PATH

# start_server LOG ARGS...: amaters-netd in the background; waits (10 s) for
# "listening on HOST:PORT"; sets SRV_PID and SRV_PORT.
start_server() {
  local log=$1 i
  shift
  "$netd" "$@" >"$log" 2>&1 &
  SRV_PID=$!
  SRV_PORT=
  for i in $(seq 100); do
    SRV_PORT=$(sed -n 's/.*listening on [^ ]*:\([0-9][0-9]*\).*/\1/p' "$log" | head -n 1)
    [ -n "$SRV_PORT" ] && return 0
    kill -0 "$SRV_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "server did not start:"
  cat "$log"
  return 1
}

# stop_server SIGNAL: sends it, waits up to 10 s (then SIGKILL); returns the
# daemon's exit status.
stop_server() {
  local i rc
  kill -"$1" "$SRV_PID"
  for i in $(seq 100); do kill -0 "$SRV_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SRV_PID" 2>/dev/null && echo "     (server killed after 10 s)"
  wait "$SRV_PID"; rc=$?
  SRV_PID=
  return $rc
}

# --- certs init ---------------------------------------------------------
P=$tmp/pki
out=$(timeout 10 "$cli" certs init "$P" 2>&1); rc=$?
check "certs init (rc=$rc)" [ "$rc" -eq 0 ]
for f in ca.pem ca-key.pem server.pem server-key.pem client.pem client-key.pem; do
  check "certs init lists and creates $f" eval '[ -s "$P/$f" ] && has "$out" "$P/$f"'
done
check "private keys are mode 0600" [ "$(stat -c %a "$P/client-key.pem")" = 600 ]
ca_before=$(cat "$P/ca.pem")
timeout 10 "$cli" certs init "$P" >/dev/null 2>&1
check "certs init keeps an existing PKI" [ "$(cat "$P/ca.pem")" = "$ca_before" ]
timeout 10 "$cli" certs init "$P/../other-pki" >/dev/null 2>&1
O=$tmp/other-pki

# --- server ---------------------------------------------------------------
start_server "$tmp/netd.log" --listen 127.0.0.1:0 --pki-dir "$P" --transport both || { echo "tools: cannot continue"; exit 1; }
ok "amaters-netd listening on port $SRV_PORT"
check "netd names its certificate and CA files" grep -q "$P/server.pem.*$P/ca.pem" "$tmp/netd.log"
U=https://127.0.0.1:$SRV_PORT
T=(--pki-dir "$P")

# --- execute --------------------------------------------------------------
out=$(timeout 10 "$cli" "${T[@]}" "$U" execute --data hello); rc=$?
check "execute prints hello (rc=$rc, out=$out)" [ "$rc" -eq 0 -a "$out" = hello ]
out=$(timeout 10 "$cli" "${T[@]}" --transport h3 "$U" execute --data over-quic); rc=$?
check "execute over HTTP/3 on the same port (rc=$rc, out=$out)" [ "$rc" -eq 0 -a "$out" = over-quic ]
out=$(printf 'a\nb\n' | timeout 10 "$cli" "${T[@]}" --transport h3 "$U" stream); rc=$?
check "stream over HTTP/3 (rc=$rc)" [ "$rc" -eq 0 -a "$out" = "$(printf 'a\nb')" ]
out=$(timeout 10 "$cli" "${T[@]}" --transport h3 "$U" health); rc=$?
check "health over HTTP/3 (rc=$rc, out=$out)" [ "$rc" -eq 0 ]
out=$(timeout 10 "$cli" --ca "$P/ca.pem" --cert "$P/client.pem" --key "$P/client-key.pem" \
  "https://localhost:$SRV_PORT" execute --data by-name); rc=$?
check "execute with --ca/--cert/--key and a host name (rc=$rc)" [ "$rc" -eq 0 -a "$out" = by-name ]
out=$(timeout 10 "$cli" "${T[@]}" --metadata x-echo-trace=t1 "$U" execute --data hello --json); rc=$?
echo "     json: $out"
for k in '"status":"OK"' '"code":0' '"message":""' '"result":"hello"' '"result_hex":"68656c6c6f"' \
         '"proof_hex":""' '"initial_metadata":{'; do
  check "execute --json has $k (rc=$rc)" eval '[ "$rc" -eq 0 ] && has "$out" "$k"'
done
check "execute --json: echoed x-echo- metadata in trailing_metadata" has "$out" '"trailing_metadata":{[^}]*"x-echo-trace":"t1"'
if /usr/bin/python3 -c 'import json' 2>/dev/null; then
  check "execute --json is valid JSON" /usr/bin/python3 -c 'import json,sys; json.loads(sys.argv[1])' "$out"
fi
out=$(timeout 10 "$cli" "${T[@]}" "$U" execute --data hello --hex); rc=$?
check "execute --hex (rc=$rc, out=$out)" [ "$rc" -eq 0 -a "$out" = 68656c6c6f ]
head -c 100000 /dev/urandom >"$tmp/blob"
timeout 10 "$cli" "${T[@]}" "$U" execute --data-file "$tmp/blob" >"$tmp/blob.out"; rc=$?
check "execute --data-file: 100 kB of binary echoed exactly (rc=$rc)" cmp -s "$tmp/blob" "$tmp/blob.out"

# --- stream ---------------------------------------------------------------
out=$(printf 'one\ntwo\nthree\n' | timeout 10 "$cli" "${T[@]}" "$U" stream); rc=$?
check "stream echoes 3 lines in order (rc=$rc)" [ "$rc" -eq 0 -a "$out" = "$(printf 'one\ntwo\nthree')" ]
out=$(timeout 10 "$cli" "${T[@]}" "$U" stream </dev/null); rc=$?
check "stream with empty input ends OK (rc=$rc)" [ "$rc" -eq 0 -a -z "$out" ]

# --- health ---------------------------------------------------------------
out=$(timeout 10 "$cli" "${T[@]}" "$U" health); rc=$?
check "health SERVING (rc=$rc, out=$out)" [ "$rc" -eq 0 -a "$out" = SERVING ]
timeout 10 "$cli" "${T[@]}" "$U" health --service no.such.Service >/dev/null 2>"$tmp/err"; rc=$?
check "health of an unknown service: NOT_FOUND, exit 5 (rc=$rc)" eval '[ "$rc" -eq 5 ] && grep -q "^NOT_FOUND: " "$tmp/err"'

# --- default PKI directory ------------------------------------------------
mkdir -p "$AMATERS_NET_PKI_DIR" && cp "$P"/*.pem "$AMATERS_NET_PKI_DIR"/
out=$(timeout 10 "$cli" "$U" execute --data default-dir); rc=$?
check "no TLS flags: client files of the default PKI dir (rc=$rc)" [ "$rc" -eq 0 -a "$out" = default-dir ]
rm -rf "$AMATERS_NET_PKI_DIR"

# --- bench ----------------------------------------------------------------
for mode in unary stream; do
  j=$(timeout 10 "$cli" "${T[@]}" "$U" bench --connections 2 --inflight 4 --duration 1 --warmup 0.5 --size 100 \
        --mode $mode --json); rc=$?
  echo "     bench $mode: $j"
  qps=$(printf '%s' "$j" | sed -n 's/.*"qps":\([0-9.]*\).*/\1/p')
  errs=$(printf '%s' "$j" | sed -n 's/.*"errors":\([0-9]*\).*/\1/p')
  check "bench --mode $mode --json: rc=0, qps>0, errors=0 (rc=$rc qps=$qps errors=$errs)" \
    awk -v r="$rc" -v q="${qps:-0}" -v e="${errs:-x}" 'BEGIN { exit !(r == 0 && q > 0 && e == "0") }'
  for k in mb_per_s p50_us p90_us p99_us p999_us max_us calls connections inflight size mode duration_s; do
    has "$j" "\"$k\":" || bad "bench json lacks $k"
  done
done

# A server that dies under the bench: the calls fail at once while the pool
# waits to reconnect; each slot sends again after a 10 ms pause instead of
# spinning (4 slots x ~100/s x ~2.5 s, not the hundreds of thousands a
# busy loop makes).
keep_pid=$SRV_PID keep_port=$SRV_PORT
start_server "$tmp/netd-dies.log" --listen 127.0.0.1:0 --pki-dir "$P"
die_pid=$SRV_PID
timeout 20 "$cli" "${T[@]}" "https://127.0.0.1:$SRV_PORT" bench --inflight 4 --duration 3 --warmup 0.5 --json \
  >"$tmp/bench-dies.json" 2>"$tmp/bench-dies.err" &
bpid=$!
for i in $(seq 100); do grep -q 'bench \[ *1s' "$tmp/bench-dies.err" && break; sleep 0.1; done
kill -KILL "$die_pid"; wait "$die_pid" 2>/dev/null
wait "$bpid"; rc=$?
SRV_PID=$keep_pid SRV_PORT=$keep_port
errs=$(sed -n 's/.*"errors":\([0-9]*\).*/\1/p' "$tmp/bench-dies.json")
check "bench against a server killed mid-run: rc=2, errors counted without a busy loop (rc=$rc errors=$errs)" \
  awk -v r="$rc" -v e="${errs:-x}" 'BEGIN { exit !(r == 2 && e > 0 && e < 5000) }'

# --- errors ---------------------------------------------------------------
timeout 10 "$cli" "${T[@]}" "$U" execute --data x --no-such-flag >/dev/null 2>"$tmp/err"; rc=$?
check "cli: unknown flag -> exit 64 (EX_USAGE) with a message (rc=$rc)" eval '[ "$rc" -eq 64 ] && grep -q -- --no-such-flag "$tmp/err"'
timeout 10 "$netd" --no-such-flag >/dev/null 2>"$tmp/err"; rc=$?
check "netd: unknown flag -> exit 2 with a message (rc=$rc)" eval '[ "$rc" -eq 2 ] && grep -q -- --no-such-flag "$tmp/err"'
printf '# typo below\n[network]\nbind_adress = "127.0.0.1:7878"\n' >"$tmp/typo.toml"
timeout 10 "$netd" --config "$tmp/typo.toml" >/dev/null 2>"$tmp/err"; rc=$?
check "netd: config typo -> exit 2 naming file:line and key (rc=$rc: $(cat "$tmp/err"))" \
  eval '[ "$rc" -eq 2 ] && grep -q "typo.toml:3:.*bind_adress" "$tmp/err"'
timeout 10 "$netd" --transport h3 --insecure >/dev/null 2>"$tmp/err"; rc=$?
check "netd: --transport h3 --insecure -> exit 2 (QUIC always uses TLS) (rc=$rc)" eval '[ "$rc" -eq 2 ] && grep -qi "http/3" "$tmp/err"'
timeout 10 "$netd" --cert "$tmp/none.pem" --key "$P/server-key.pem" --ca "$P/ca.pem" >/dev/null 2>"$tmp/err"; rc=$?
check "netd: unreadable certificate -> exit 2 naming the file (rc=$rc)" eval '[ "$rc" -eq 2 ] && grep -q none.pem "$tmp/err"'
# TLS file problems from a config file: file:line, the key, the file and the real cause
# tls_case NAME CERT KEY CA REGEX
tls_case() {
  printf '[tls]\ncert_path = "%s"\nkey_path = "%s"\nca_path = "%s"\n' "$2" "$3" "$4" >"$tmp/tls.toml"
  timeout 10 "$netd" --config "$tmp/tls.toml" --listen 127.0.0.1:0 >/dev/null 2>"$tmp/err"; rc=$?
  want=$5
  check "netd: $1 -> exit 2: $(cat "$tmp/err")" eval '[ "$rc" -eq 2 ] && grep -Eq "$want" "$tmp/err"'
}
tls_case "missing certificate" "$tmp/none.pem" "$P/server-key.pem" "$P/ca.pem" \
  "tls.toml:2: tls.cert_path: cannot read certificate file .*none.pem: No such file or directory"
tls_case "key as certificate" "$P/server-key.pem" "$P/server-key.pem" "$P/ca.pem" \
  "tls.toml:2: tls.cert_path: certificate file .* holds a private key, not a certificate"
tls_case "key of another certificate" "$P/server.pem" "$P/client-key.pem" "$P/ca.pem" \
  "tls.toml:3: tls.key_path: key file .*client-key.pem does not match the certificate in .*server.pem"
tls_case "directory as CA bundle" "$P/server.pem" "$P/server-key.pem" "$P" \
  "tls.toml:4: tls.ca_path: cannot read CA bundle .*: Is a directory"
printf 'not PEM\n' >"$tmp/garbage.pem"
tls_case "garbage CA bundle" "$P/server.pem" "$P/server-key.pem" "$tmp/garbage.pem" \
  "tls.toml:4: tls.ca_path: CA bundle .*garbage.pem is not a PEM file"
if command -v python3 >/dev/null; then
  # a port held by a plain listener (no SO_REUSEPORT): the bind must fail
  python3 -c 'import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(); print(s.getsockname()[1], flush=True); time.sleep(8)' \
    >"$tmp/held" &
  holder=$!
  for i in $(seq 50); do [ -s "$tmp/held" ] && break; sleep 0.1; done
  timeout 10 "$netd" --listen "127.0.0.1:$(cat "$tmp/held")" --pki-dir "$P" >/dev/null 2>"$tmp/err"; rc=$?
  check "netd: address in use -> exit 2 with the reason (rc=$rc)" eval '[ "$rc" -eq 2 ] && grep -qi "in use" "$tmp/err"'
  kill "$holder" 2>/dev/null; wait "$holder" 2>/dev/null
fi
timeout 10 "$cli" --insecure "http://127.0.0.1:$SRV_PORT" execute --data x >/dev/null 2>"$tmp/err"; rc=$?
echo "     insecure client: $(tail -n 1 "$tmp/err")"
check "cli --insecure vs the TLS server: UNAVAILABLE, exit 69 (no connection), no hang (rc=$rc)" eval '[ "$rc" -eq 69 ] && grep -q "^UNAVAILABLE: " "$tmp/err"'
timeout 10 "$cli" --ca "$O/ca.pem" --cert "$P/client.pem" --key "$P/client-key.pem" "$U" execute --data x \
  >/dev/null 2>"$tmp/err"; rc=$?
check "cli rejects a server certificate from another CA: exit 69, no connection (rc=$rc)" [ "$rc" -eq 69 ]
timeout 10 "$cli" --ca "$P/ca.pem" --cert "$O/client.pem" --key "$O/client-key.pem" "$U" execute --data x \
  >/dev/null 2>"$tmp/err"; rc=$?
check "server rejects a client certificate from another CA (rc=$rc)" [ "$rc" -ne 0 -a "$rc" -ne 124 ]
kill -0 "$SRV_PID" 2>/dev/null
check "server still up after the failed handshakes" [ $? -eq 0 ]

# --- SIGTERM --------------------------------------------------------------
stop_server TERM; rc=$?
check "SIGTERM -> exit 0 (rc=$rc)" [ "$rc" -eq 0 ]
check "netd logged the stop" grep -q stopped "$tmp/netd.log"

# --- insecure server, configuration file, PKI creation -----------------------
printf '[network]\nbind_address = "127.0.0.1:7878"\n[server]\nthreads = 1\ninsecure = true\n' >"$tmp/plain.toml"
if start_server "$tmp/plain.log" --config "$tmp/plain.toml" --listen 127.0.0.1:0; then
  check "insecure server warns loudly" grep -q "PLAINTEXT" "$tmp/plain.log"
  out=$(timeout 10 "$cli" --insecure "http://127.0.0.1:$SRV_PORT" execute --data plain 2>/dev/null); rc=$?
  check "cli --insecure vs an insecure server (rc=$rc, out=$out)" [ "$rc" -eq 0 -a "$out" = plain ]
  stop_server INT; rc=$?
  check "SIGINT -> exit 0 (rc=$rc)" [ "$rc" -eq 0 ]
else
  bad "insecure server from a config file"
fi
N=$tmp/new-pki
if start_server "$tmp/new.log" --listen 127.0.0.1:0 --pki-dir "$N"; then
  check "netd creates a missing PKI and says so" grep -q "creating" "$tmp/new.log"
  out=$(timeout 10 "$cli" --pki-dir "$N" "https://localhost:$SRV_PORT" execute --data fresh); rc=$?
  check "execute against the fresh PKI (rc=$rc)" [ "$rc" -eq 0 -a "$out" = fresh ]
  stop_server TERM; rc=$?
  check "SIGTERM -> exit 0 (rc=$rc)" [ "$rc" -eq 0 ]
else
  bad "netd with a new PKI directory"
fi

# --- cli: --plaintext (--insecure a deprecated alias), durations with units ----
if start_server "$tmp/plaintext.log" --insecure --listen 127.0.0.1:0 --threads 1; then
  out=$(timeout 10 "$cli" --plaintext "http://127.0.0.1:$SRV_PORT" execute --data plain 2>"$tmp/err"); rc=$?
  check "cli --plaintext vs a plaintext server, no deprecation warning (rc=$rc, out=$out)" \
    eval '[ "$rc" -eq 0 ] && [ "$out" = plain ] && ! grep -q deprecated "$tmp/err"'
  out=$(timeout 10 "$cli" --insecure "http://127.0.0.1:$SRV_PORT" execute --data old 2>"$tmp/err"); rc=$?
  check "cli --insecure still works and warns that it is deprecated (rc=$rc, out=$out)" \
    eval '[ "$rc" -eq 0 ] && [ "$out" = old ] && grep -q "warning: --insecure is deprecated, use --plaintext" "$tmp/err"'
  for t in 500ms 2s 1m 1.5s 0 30000; do
    out=$(timeout 10 "$cli" --plaintext --timeout "$t" "http://127.0.0.1:$SRV_PORT" execute --data "t$t" 2>/dev/null); rc=$?
    check "cli --timeout $t is accepted (rc=$rc, out=$out)" [ "$rc" -eq 0 -a "$out" = "t$t" ]
  done
  j=$(timeout 20 "$cli" --plaintext "http://127.0.0.1:$SRV_PORT" bench --duration 300ms --warmup 0.1s --json 2>&1); rc=$?
  check "bench --duration 300ms --warmup 0.1s runs 0.3 s after 0.1 s (rc=$rc: $j)" \
    eval '[ "$rc" -eq 0 ] && has "$j" "\"duration_s\":0.3[0,]" && has "$j" "\"warmup_s\":0.1[0,]"'
  stop_server TERM
else
  bad "plaintext server for the --plaintext and duration checks"
fi
out=$(timeout 10 "$cli" --plaintext --pki-dir "$tmp/pki" http://127.0.0.1:1 execute --data x 2>&1); rc=$?
check "--plaintext with --pki-dir: usage error naming --plaintext (rc=$rc)" \
  eval '[ "$rc" -eq 64 ] && has "$out" "--plaintext cannot be combined"'
for t in 5parsecs 1e3 -5 x .s 1..5s 0.1ms 2147484s; do
  out=$(timeout 10 "$cli" --plaintext --timeout "$t" http://127.0.0.1:1 execute --data x 2>&1); rc=$?
  check "--timeout '$t' is a usage error that says why (rc=$rc: $out)" \
    eval '[ "$rc" -eq 64 ] && { has "$out" "not a duration" || has "$out" "unknown unit" || has "$out" "out of range" || has "$out" "shorter than a millisecond"; }'
done
# A server that accepts TCP connections and never answers: the call's
# deadline, given with a unit, ends it with DEADLINE_EXCEEDED (4) well before
# the 10 s connect timeout.
/usr/bin/python3 -c 'import socket, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(16)
print(s.getsockname()[1], flush=True); time.sleep(120)' >"$tmp/silent.port" &
SILENT_PID=$!
for i in $(seq 100); do [ -s "$tmp/silent.port" ] && break; sleep 0.1; done
sp=$(cat "$tmp/silent.port")
start=$(date +%s%N)
timeout 10 "$cli" --pki-dir "$tmp/pki" --timeout 300ms "https://127.0.0.1:$sp" execute --data x >/dev/null 2>"$tmp/err"; rc=$?
ms=$((($(date +%s%N) - start) / 1000000))
kill "$SILENT_PID" 2>/dev/null; wait "$SILENT_PID" 2>/dev/null
check "--timeout 300ms against a silent server: DEADLINE_EXCEEDED after $ms ms (rc=$rc: $(cat "$tmp/err"))" \
  eval '[ "$rc" -eq 4 ] && [ "$ms" -ge 250 ] && [ "$ms" -lt 5000 ]'

echo "tools: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
