#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# Builds amaters-net twice (release, and ASan+UBSan) and runs the whole
# CTest suite on both builds; then builds the libFuzzer targets (clang) and
# fuzzes each one briefly over its seed corpus (CTest label "fuzz").
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
echo "== fuzz build (clang: libFuzzer + ASan + UBSan)"
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAMN_FUZZ=ON -DAMN_BUILD_TESTS=OFF \
  -DAMN_INTEROP=OFF >/dev/null
cmake --build build-fuzz --target fuzz -j"$jobs"
echo "== fuzz runs (AMN_FUZZ_CTEST_SECONDS per target; longer runs: scripts/fuzz.sh)"
(cd build-fuzz && ctest --output-on-failure -j"$jobs" -L fuzz)
