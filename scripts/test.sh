#!/usr/bin/env bash
# Builds amaters-net twice (release, and ASan+UBSan) and runs the whole
# CTest suite on both builds.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
jobs=$(nproc)
echo "== build (RelWithDebInfo)"
scripts/build.sh build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAMN_SANITIZE=OFF -DAMN_BUILD_TESTS=ON -DAMN_INTEROP=ON
echo "== tests (RelWithDebInfo)"
(cd build && ctest --output-on-failure -j"$jobs" --timeout 900)
echo "== build (ASan + UBSan)"
scripts/build.sh build-asan -DCMAKE_BUILD_TYPE=Debug -DAMN_SANITIZE=ON -DAMN_BUILD_TESTS=ON -DAMN_INTEROP=ON
echo "== tests (ASan + UBSan)"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --output-on-failure -j"$jobs" --timeout 1200)
