#!/usr/bin/env bash
# Installs every Debian 12 package the build, the tests, the interop peers and the
# fuzz targets (clang with its libFuzzer runtime, libclang-rt-14-dev) need.
set -euo pipefail
PKGS=(
  build-essential cmake pkg-config
  libnghttp2-dev libgnutls28-dev gnutls-bin libprotobuf-c-dev protobuf-c-compiler libev-dev libcmocka-dev
  libngtcp2-dev libngtcp2-crypto-gnutls-dev libnghttp3-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  python3 python3-grpcio python3-protobuf
  nghttp2-client nghttp2-proxy ngtcp2-client ngtcp2-server
  libnss-wrapper
  clang libclang-rt-14-dev
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
