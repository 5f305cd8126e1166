#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# Debian's nghttpx (nghttp2-proxy) as a TLS-terminating gRPC load balancer in
# front of two amaters-netd --insecure instances (backend=...;;proto=h2):
# amaters-cli talks mutual TLS to nghttpx (which verifies the client
# certificate), nghttpx speaks h2c to the daemons, and both daemons serve
# calls (nghttpx's access log names the backend of every request).
# usage: test_nghttpx.sh BUILD_DIR
set -euo pipefail
bin=$1
command -v nghttpx >/dev/null || { echo "nghttpx not installed (apt-get install nghttp2-proxy)"; exit 1; }
source "$(dirname "$0")/proc_lib.sh"
read -r pf p1 p2 < <(/usr/bin/python3 -c '
import socket
ss=[socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1",0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
# nghttpx keeps using one backend HTTP/2 session until the backend's
# SETTINGS_MAX_CONCURRENT_STREAMS is reached: a low limit makes it spread
# 16 calls in flight over both backends instead of filling one
printf '[quic]\nmax_concurrent_streams = 4\n' >backend.toml
for p in "$p1" "$p2"; do
  "$bin/amaters-netd" --config backend.toml --insecure --listen "127.0.0.1:$p" --threads 1 >"netd$p.log" 2>&1 &
  pids+=($!)
done
nghttpx --conf=/dev/null --workers=1 --frontend="127.0.0.1,$pf" \
  --backend="127.0.0.1,$p1;;proto=h2" --backend="127.0.0.1,$p2;;proto=h2" \
  --verify-client --verify-client-cacert=pki/ca.pem --no-via --no-ocsp \
  --accesslog-file="$work/access.log" --accesslog-format='$backend_port $status $path' \
  --errorlog-file="$work/nghttpx.err" pki/server-key.pem pki/server.pem &
pids+=($!)
for _ in $(seq 1 100); do
  grep -q "listening on" netd$p1.log && grep -q "listening on" netd$p2.log &&
    (exec 3<>"/dev/tcp/127.0.0.1/$p1") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$p2") 2>/dev/null &&
    (exec 3<>"/dev/tcp/127.0.0.1/$pf") 2>/dev/null && break
  sleep 0.1
done

url="https://127.0.0.1:$pf"
out=$(timeout 20 "$bin/amaters-cli" --pki-dir pki "$url" execute --data through-the-proxy 2>&1) || true
[ "$out" = through-the-proxy ] && ok "Execute through nghttpx (mTLS at the proxy, h2c behind)" || {
  bad "execute: $out"; tail -5 netd$p1.log netd$p2.log "$work/nghttpx.err"; }
timeout 60 "$bin/amaters-cli" --pki-dir pki "$url" bench --connections 4 --inflight 16 --duration 2 --warmup 0.2 \
  --json >bench.json 2>bench.err && ok "bench through nghttpx: no errors" || { bad "bench errors"; cat bench.err; }
cat bench.json
calls=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open("bench.json"))["calls"])')
[ "$calls" -gt 100 ] && ok "$calls calls through the proxy" || bad "only $calls calls"
n1=$(grep -c "^$p1 200 /amaters.v1.AmateRS/Execute" access.log || true)
n2=$(grep -c "^$p2 200 /amaters.v1.AmateRS/Execute" access.log || true)
echo "  backend $p1: $n1 calls, backend $p2: $n2 calls"
[ "$n1" -gt 10 ] && [ "$n2" -gt 10 ] && ok "both amaters-netd backends served calls" || bad "backends $n1 / $n2"
# without a client certificate nghttpx refuses the client
out=$(timeout 20 "$bin/amaters-cli" --ca pki/ca.pem --cert pki/server.pem --key pki/server-key.pem "$url" execute \
  --data x 2>&1) && bad "a client without a client certificate was accepted" || ok "nghttpx refuses a certificate without clientAuth: $out"
# one backend stops: nghttpx keeps serving from the other
kill "${pids[0]}"
wait "${pids[0]}" 2>/dev/null || true
sleep 0.3
fails=0
for i in $(seq 1 10); do
  out=$(timeout 20 "$bin/amaters-cli" --pki-dir pki "$url" execute --data "after-$i" 2>&1) || true
  [ "$out" = "after-$i" ] || fails=$((fails + 1))
done
[ "$fails" -eq 0 ] && ok "one backend stopped: all calls still served" || bad "$fails of 10 calls failed with one backend down"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
