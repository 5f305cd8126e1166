#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# Debian's nginx as a TLS-terminating gRPC load balancer (the directives of
# dist/nginx/amaters-net.conf) in front of two amaters-netd daemons: HTTP/2
# over TLS to the clients (client certificates optional), grpc_pass grpcs://
# with nginx's own client certificate to the backends, the client's
# certificate forwarded in X-Client-Cert ($ssl_client_escaped_cert). nginx
# runs as the test's user from a configuration in the test's directory.
# usage: test_nginx.sh BUILD_DIR
set -euo pipefail
bin=$1
command -v nginx >/dev/null || { echo "SKIP: nginx not installed (apt-get install nginx)"; exit 77; }
source "$(dirname "$0")/proc_lib.sh"
source "$(dirname "$0")/lb_lib.sh"
mkdir -p nginx/tmp
user=""
[ "$(id -u)" = 0 ] && user="user root;" # the workers stay the test's user
cat >nginx/nginx.conf <<CONF
$user
daemon off;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log info;
events { worker_connections 1024; }
http {
  client_body_temp_path $work/nginx/tmp/body;
  proxy_temp_path $work/nginx/tmp/proxy;
  fastcgi_temp_path $work/nginx/tmp/fastcgi;
  uwsgi_temp_path $work/nginx/tmp/uwsgi;
  scgi_temp_path $work/nginx/tmp/scgi;
  log_format lb '\$upstream_addr \$status \$request_uri';
  access_log $work/nginx/access.log lb;
  upstream amaters_net {
    server 127.0.0.1:$b1 max_fails=1 fail_timeout=30s;
    server 127.0.0.1:$b2 max_fails=1 fail_timeout=30s;
    keepalive 16;
  }
  server {
    listen 127.0.0.1:$pf ssl http2;
    ssl_certificate $work/pki/lb.pem;
    ssl_certificate_key $work/pki/lb-key.pem;
    ssl_protocols TLSv1.3;
    ssl_client_certificate $work/pki/ca.pem;
    ssl_verify_client optional;
    client_max_body_size 0;
    location / {
      grpc_pass grpcs://amaters_net;
      grpc_ssl_protocols TLSv1.3;
      grpc_ssl_verify on;
      grpc_ssl_trusted_certificate $work/pki/ca.pem;
      grpc_ssl_name localhost;
      grpc_ssl_server_name on;
      grpc_ssl_certificate $work/pki/lb.pem;
      grpc_ssl_certificate_key $work/pki/lb-key.pem;
      grpc_ssl_session_reuse on;
      grpc_set_header X-Client-Cert \$ssl_client_escaped_cert;
      grpc_next_upstream error timeout;
    }
  }
}
CONF
nginx -t -p "$work/nginx" -c "$work/nginx/nginx.conf" >nginx/t.log 2>&1 || { cat nginx/t.log; echo "FAIL: nginx -t"; exit 1; }
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" >nginx/stderr.log 2>&1 &
pids+=($!)
wait_port "$pf" || { cat nginx/error.log; echo "FAIL: nginx did not start"; exit 1; }

# nginx has passive health checks only: a failed connection (refused, or
# reset in the TLS handshake as the draining backend closed its listener)
# takes the stopped backend out (max_fails=1) for fail_timeout
lb_attempts_b1() { grep -c "\[error\].*upstream: \"grpcs://127.0.0.1:$b1\"" nginx/error.log || true; }
lb_checks nginx "https://127.0.0.1:$pf"
grep -q "upstream server temporarily disabled .*upstream: \"grpcs://127.0.0.1:$b1\"" nginx/error.log &&
  ok "nginx marked the stopped backend down (upstream server temporarily disabled)" || bad "nginx: no backend marked down"
grep -q "^127.0.0.1:$b1 200 " nginx/access.log && grep -q "^127.0.0.1:$b2 200 " nginx/access.log &&
  ok "nginx's access log names both backends" || bad "nginx access log: $(tail -3 nginx/access.log)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
