# SPDX-License-Identifier: MIT OR Apache-2.0
# Shared by test_nginx.sh and test_haproxy.sh (sourced after proc_lib.sh):
# two amaters-netd backends behind a TLS-terminating balancer that presents
# the certificate pki/lb.pem (lb_pki.py) to them and forwards its client's
# certificate in x-client-cert; the checks both balancers must pass.
# Sourcing it starts the backends (ports b1 b2, pids bp1 bp2) and picks the
# balancer's port pf.

/usr/bin/python3 "$(dirname "${BASH_SOURCE[0]}")/lb_pki.py" pki
# free ephemeral ports on 127.0.0.1: lb_ports N
lb_ports() {
  /usr/bin/python3 -c '
import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"
}
# the backends trust the forwarded certificate from the balancer's certificate only
printf '[server]\ntrusted_proxies = ["san:lb.test"]\n' >backend.toml
# start_backends: two daemons, HTTP/2 over mTLS, access log; sets b1 b2 (ports), bp1 bp2 (pids)
start_backends() {
  start_netd netd1.log --config backend.toml --threads 1 --transport h2 --access-log --log-level debug
  b1=$port bp1=$netd
  start_netd netd2.log --config backend.toml --threads 1 --transport h2 --access-log --log-level debug
  b2=$port bp2=$netd
}
# wait_port PORT: until something accepts on 127.0.0.1:PORT
wait_port() {
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
# access lines of backend log FILE whose peer is SUBJECT (CN only)
peer_count() { grep -c "access peer=\"CN=$2\"" "$1" || true; }
# wait_count FILE N: until backend log FILE has N access lines from alice
wait_count() { for _ in $(seq 1 200); do [ "$(peer_count "$1" alice)" -ge "$2" ] && return 0; sleep 0.05; done; return 1; }

alice=(--ca pki/ca.pem --cert pki/alice.pem --key pki/alice-key.pem)
b64_der() { openssl x509 -in "$1" -outform DER | base64 -w0; }

# lb_checks NAME URL: the checks of a balancer listening at URL in front of
# the backends b1, b2 (bp1 is stopped here). The balancer's own log proves
# the health verdicts; the caller checks those.
lb_checks() {
  local name=$1 url=$2 out
  out=$(timeout 20 "$bin/amaters-cli" "${alice[@]}" "$url" execute --data "through-$name" 2>&1) || true
  [ "$out" = "through-$name" ] && ok "Execute through $name (mTLS both sides)" || {
    bad "execute through $name: $out"; tail -n 5 netd1.log netd2.log; }
  # the client's identity reaches the backend; the proxy is named as via
  wait_for netd1.log 'peer="CN=alice".*via="CN=amaters-lb"' 20 || wait_for netd2.log 'peer="CN=alice".*via="CN=amaters-lb"' 20 &&
    ok "$name: the backend's access log names the client (peer=CN=alice) and the proxy (via=CN=amaters-lb)" ||
    bad "$name: no access line with the forwarded identity: $(grep -h access netd1.log netd2.log | tail -2)"

  # a client of the balancer without a certificate (curl), sending a forged
  # header: the balancer replaces it, so the backend sees no client identity
  printf '\0\0\0\0\x0e\x0a\x0cforged-curl!' >forged.bin
  out=$(curl -sS --http2 --max-time 20 --cacert pki/ca.pem -H 'content-type: application/grpc' -H 'te: trailers' \
    -H "x-client-cert: $(b64_der pki/alice.pem)" --data-binary @forged.bin -o forged.out -w '%{http_code}' \
    "$url/amaters.v1.AmateRS/Execute" 2>&1) || true
  [ "$out" = 200 ] && grep -q forged-curl forged.out &&
    wait_for <(cat netd1.log netd2.log) 'access peer=- .*bytes_in=19 .*via="CN=amaters-lb"' 1 &&
    ! grep -h 'bytes_in=19 ' netd1.log netd2.log | grep -q 'CN=alice' &&
    ok "$name: a client without a certificate cannot forge x-client-cert (backend: peer=-, via the proxy)" ||
    bad "$name: forged header: '$out' $(grep -h access netd1.log netd2.log | tail -2)"

  # a client connecting DIRECTLY to a backend (not a trusted proxy) cannot
  # claim alice's identity with the header: ignored (debug log), its own identity
  out=$(timeout 20 "$bin/amaters-cli" --pki-dir pki "https://127.0.0.1:$b2" execute --data direct \
    --metadata "x-client-cert=$(b64_der pki/alice.pem)" 2>&1) || true
  [ "$out" = direct ] && wait_for netd2.log 'access peer="CN=amaters-dev-client' 20 &&
    grep -q 'x-client-cert header ignored (the peer is not a trusted proxy)' netd2.log &&
    ok "$name: a direct client's x-client-cert is ignored (its own identity stays)" ||
    bad "$name: direct spoof: '$out' $(grep access netd2.log | tail -1)"

  # a certificate the trusted proxy forwards is verified like a handshake's:
  # an expired one ends the call with UNAUTHENTICATED (sent here with the
  # proxy's own certificate, as a proxy with weaker checks would)
  out=$(timeout 20 "$bin/amaters-cli" --ca pki/ca.pem --cert pki/lb.pem --key pki/lb-key.pem "https://127.0.0.1:$b2" \
    execute --data x --metadata "x-client-cert=$(b64_der pki/expired.pem)" 2>&1) && bad "expired forwarded certificate accepted" ||
    { grep -q "UNAUTHENTICATED: forwarded client certificate (x-client-cert header) refused: client certificate has expired" <<<"$out" &&
      ok "an expired forwarded certificate: UNAUTHENTICATED ($out)" || bad "expired forwarded certificate: $out"; }

  # calls spread over both backends (their access logs), then one backend
  # drains (SIGTERM) during a load: no call fails
  local n1 n2 rc=0
  timeout 60 "$bin/amaters-cli" "${alice[@]}" "$url" bench --connections 4 --inflight 16 --duration 4 --warmup 0.2 \
    --json >bench.json 2>bench.err &
  local bench=$!
  # both backends serve the load, then one drains
  wait_count netd1.log 200 && wait_count netd2.log 200 || bad "$name: the load did not reach 200 calls on each backend"
  kill -TERM "$bp1"
  wait "$bp1" && ok "$name: backend 1 drained and exited 0 on SIGTERM during the load" || bad "$name: backend 1 exit status"
  wait "$bench" || rc=$?
  cat bench.json
  bench_ok "$name: drain during load: " "$rc" bench.json bench.err
  n1=$(peer_count netd1.log alice) n2=$(peer_count netd2.log alice)
  echo "  backend 1 ($b1): $n1 calls from alice, backend 2 ($b2): $n2"
  [ "$n1" -gt 50 ] && [ "$n2" -gt 50 ] && ok "$name: calls spread over both backends ($n1 / $n2)" || bad "$name: spread $n1 / $n2"
  # after the drain every call goes to backend 2, and the balancer no
  # longer tries backend 1 (lb_attempts_b1: the caller's count from its log)
  local before fails=0 i tried
  before=$(peer_count netd2.log alice) tried=$(lb_attempts_b1)
  for i in $(seq 1 10); do
    out=$(timeout 20 "$bin/amaters-cli" "${alice[@]}" "$url" execute --data "after-$i" 2>&1) || true
    [ "$out" = "after-$i" ] || fails=$((fails + 1))
  done
  [ "$fails" -eq 0 ] && [ "$(peer_count netd2.log alice)" -ge $((before + 10)) ] &&
    ok "$name: backend 1 stopped: 10 of 10 calls served by backend 2" || bad "$name: $fails of 10 failed after the drain"
  [ "$(lb_attempts_b1)" = "$tried" ] && ok "$name: backend 1 marked down: not tried by the 10 calls ($tried attempts before)" ||
    bad "$name: backend 1 tried again: $tried then $(lb_attempts_b1) attempts"
}

start_backends
read -r pf < <(lb_ports 1)
