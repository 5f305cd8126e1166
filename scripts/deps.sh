#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# Installs every Debian 12 package the build, the tests, the interop peers and the
# fuzz targets (clang with its libFuzzer runtime, libclang-rt-14-dev) need
# (as root; safe to run again).
set -euo pipefail
PKGS=(
  build-essential cmake pkg-config
  libnghttp2-dev libgnutls28-dev gnutls-bin libprotobuf-c-dev protobuf-c-compiler libev-dev libcmocka-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  python3 python3-grpcio python3-protobuf python3-cryptography python3-h2
  nghttp2-client nghttp2-proxy
  nghttp2-server time linux-perf  # bench/h2load.sh: nghttpd (the ceiling), CPU time of the client, --profile
  libunistring-dev  # gnutls.pc lists -lunistring for static links (test install.pkgconfig)
  libnss-wrapper
  golang-go golang-google-grpc-dev golang-github-lucas-clemente-quic-go-dev protoc-gen-go-1-3
  clang libclang-rt-14-dev
  golang-github-burntsushi-toml-dev
  prometheus curl
  gnuplot-nox  # amaters-cli bench --plot (test integration.bench)
  libsystemd-dev systemd  # amaters-netd: sd_notify, socket activation; systemd-analyze verify (test systemd.units)
  libc-ares-dev dnsmasq-base  # the client's resolver; dnsmasq for DNS tests
  nginx haproxy openssl  # integration.nginx, integration.haproxy (the balancers; openssl x509 for DER)
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# HTTP/3 needs ngtcp2 >= 1.11 and nghttp3 >= 1.8: Debian 12 ships 0.12 / 0.8,
# its official bookworm-backports suite 1.11 / 1.8. The suite is enabled with
# its default (low) priority, so nothing else comes from it: only these
# packages are taken from it, by name (pkg/bookworm-backports), which also
# upgrades a machine that has the 0.12 packages.
BPO_PKGS=(libngtcp2-dev libngtcp2-crypto-gnutls-dev libnghttp3-dev ngtcp2-client ngtcp2-server)
bpo_min() { case $1 in libnghttp3-dev) echo 1.8.0 ;; *) echo 1.11.0 ;; esac; }
bpo_missing=()
for p in "${BPO_PKGS[@]}"; do
  v=$(dpkg-query -W -f='${Status} ${Version}' "$p" 2>/dev/null | sed -n 's/^install ok installed //p')
  if [ -z "$v" ] || dpkg --compare-versions "$v" lt "$(bpo_min "$p")"; then bpo_missing+=("$p/bookworm-backports"); fi
done
if [ ${#bpo_missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  if ! grep -rqsE '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "deps: enabling Debian's bookworm-backports suite (/etc/apt/sources.list.d/bookworm-backports.list)"
    echo "deb http://deb.debian.org/debian bookworm-backports main" >/etc/apt/sources.list.d/bookworm-backports.list
  fi
  echo "deps: installing ${bpo_missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${bpo_missing[@]}" >/dev/null
fi
# @grpc/grpc-js for the Node.js interop test, pinned by its package-lock.json
if ! command -v npm >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
node_dir="$(cd "$(dirname "$0")/.." && pwd)/tests/interop/node"
if [ ! -d "$node_dir/node_modules/@grpc/grpc-js" ]; then
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
echo "deps: all packages present"
