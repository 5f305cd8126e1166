#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# Debian's HAProxy (2.6) as a TLS-terminating gRPC load balancer (the
# configuration of dist/haproxy/amaters-net.cfg) in front of two amaters-netd
# daemons: HTTP/2 over TLS both ways (client certificates optional at the
# front, HAProxy's own client certificate to the backends), the client's
# certificate forwarded in x-client-cert (%[ssl_c_der,base64]), and active
# health checks that are real grpc.health.v1.Health/Check calls over HTTP/2
# (tcp-check with the frames of grpc_health_h2.py; see there why not
# http-check). HAProxy runs as the test's user from a configuration in the
# test's directory.
# usage: test_haproxy.sh BUILD_DIR
set -euo pipefail
bin=$1
command -v haproxy >/dev/null || { echo "SKIP: haproxy not installed (apt-get install haproxy)"; exit 77; }
source "$(dirname "$0")/proc_lib.sh"
source "$(dirname "$0")/lb_lib.sh"
mkdir -p haproxy
cat pki/lb.pem pki/lb-key.pem >haproxy/lb-full.pem # HAProxy's crt: certificate and key in one file
chmod 600 haproxy/lb-full.pem
check=$($py "$(dirname "$0")/grpc_health_h2.py" localhost)
cat >haproxy/haproxy.cfg <<CONF
global
  log stdout format raw local0 info
  stats socket $work/haproxy/stats.sock level admin
  pidfile $work/haproxy/haproxy.pid
defaults
  mode http
  log global
  log-format "%b/%s %ST %HP"
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout check 2s
  retries 3
  option redispatch
frontend grpc
  bind 127.0.0.1:$pf ssl crt $work/haproxy/lb-full.pem ca-file $work/pki/ca.pem verify optional alpn h2
  http-request del-header x-client-cert
  http-request set-header x-client-cert %[ssl_c_der,base64] if { ssl_c_used }
  default_backend amaters
backend amaters
  balance roundrobin
  option tcp-check
  tcp-check connect ssl alpn h2
  tcp-check send-binary $check
  tcp-check expect binary 00000700000000000100000000020801
  default-server ssl verify required ca-file $work/pki/ca.pem crt $work/haproxy/lb-full.pem sni str(localhost) verifyhost localhost alpn h2 check inter 200ms fall 1 rise 1
  server b1 127.0.0.1:$b1
  server b2 127.0.0.1:$b2
CONF
haproxy -c -f haproxy/haproxy.cfg >haproxy/c.log 2>&1 || { cat haproxy/c.log; echo "FAIL: haproxy -c"; exit 1; }
haproxy -db -f haproxy/haproxy.cfg >haproxy/haproxy.log 2>&1 &
pids+=($!)
wait_port "$pf" || { cat haproxy/haproxy.log; echo "FAIL: haproxy did not start"; exit 1; }

# the check status of SERVER (b1, b2) from the stats socket: L7OK when its last
# grpc.health.v1 Check answered SERVING ("* " while a check runs is dropped)
check_status() {
  $py - "$work/haproxy/stats.sock" "$1" <<'PY'
import socket, sys, csv, io
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"show stat\n")
data = b""
while True:
    d = s.recv(65536)
    if not d: break
    data += d
rows = list(csv.DictReader(io.StringIO(data.decode().lstrip("# "))))
print(next((r["check_status"].lstrip("* ") + " " + r["status"] for r in rows if r["svname"] == sys.argv[2]), "?"))
PY
}
for _ in $(seq 1 100); do
  [[ "$(check_status b1)" == "L7OK UP" && "$(check_status b2)" == "L7OK UP" ]] && break
  sleep 0.1
done
[[ "$(check_status b1)" == "L7OK UP" && "$(check_status b2)" == "L7OK UP" ]] &&
  ok "haproxy: both backends UP by grpc.health.v1 Check (L7OK: the answer carried SERVING)" ||
  bad "haproxy check status: b1 $(check_status b1), b2 $(check_status b2); $(tail -n 3 haproxy/haproxy.log)"
grep -q 'access peer=- .*method=/grpc.health.v1.Health/Check .*status=OK .*via="CN=amaters-lb"' netd1.log &&
  ok "haproxy's checks reach the backend as Health/Check calls (status OK)" || bad "no health call in the backend's log"

lb_attempts_b1() { grep -c "^amaters/b1 " haproxy/haproxy.log || true; }
lb_checks haproxy "https://127.0.0.1:$pf"
grep -q "Server amaters/b1 is DOWN" haproxy/haproxy.log && [[ "$(check_status b1)" == *DOWN ]] &&
  ok "haproxy: the stopped backend is DOWN by its health check ($(check_status b1))" ||
  bad "haproxy: b1 not marked down: $(check_status b1)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
