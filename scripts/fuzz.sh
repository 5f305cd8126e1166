#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# fuzz.sh [SECONDS_PER_TARGET] [TARGET...]: builds the libFuzzer targets of
# fuzz/ (clang, ASan + UBSan) into build-fuzz/ and runs each one for the
# given time (default 60 s; all targets unless named, e.g. "toml config"),
# one after the other, over its seed corpus with its dictionary. New corpus
# entries go to build-fuzz/fuzz/found/TARGET (merge the useful ones into
# fuzz/corpus/TARGET by hand), findings to build-fuzz/fuzz/crashes/.
# Prints each target's CPU time and exec count; exits non-zero when any
# target found something (crash, leak, timeout, failed invariant).
# AMN_FUZZ_BUILD_DIR selects another build directory (default build-fuzz),
# e.g. for a second checkout fuzzing while another one does.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
all=(framing req_headers resp_headers grpc_timeout pct base64 proto toml config pki h2_server h2_client
     quic_token h3_server h3_client admin_req reflection fwd_cert authz sig)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
for t in "${targets[@]}"; do
  [ -f "fuzz/fuzz_$t.c" ] || { echo "fuzz: unknown target '$t' (targets: ${all[*]})" >&2; exit 2; }
done

bdir=${AMN_FUZZ_BUILD_DIR:-build-fuzz}
CC=clang cmake -S . -B "$bdir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAMN_FUZZ=ON \
  -DAMN_BUILD_TESTS=OFF -DAMN_INTEROP=OFF >/dev/null
cmake --build "$bdir" --target fuzz -j"$(nproc)" >/dev/null

out=$bdir/fuzz
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=suppressions=$PWD/fuzz/lsan.supp
failed=()
for t in "${targets[@]}"; do
  mkdir -p "$out/found/$t" "$out/crashes" "$out/logs"
  dict=()
  [ -f "fuzz/$t.dict" ] && dict=(-dict="fuzz/$t.dict")
  extra=()
  # the toml-test suite next to the project (read only, not copied) as more TOML seeds
  [ "$t" = toml ] && [ -d ../shared/toml-test/tests ] && extra=(../shared/toml-test/tests)
  log="$out/logs/$t.log"
  echo "== fuzz_$t: ${secs}s"
  start=$(date +%s)
  rc=0
  # CPU time (user + system) of the fuzzer process, from bash's `time`
  ( TIMEFORMAT='%3U %3S'
    time "$out/fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$out/crashes/$t-" "${dict[@]}" "$out/found/$t" "fuzz/corpus/$t" "${extra[@]}" >"$log" 2>&1
  ) 2>"$out/logs/$t.time" || rc=$?
  cpu=$(awk '{printf "%.0f", $1 + $2}' "$out/logs/$t.time" 2>/dev/null || echo '?')
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -E '^#[0-9]+[[:space:]]+(DONE|INITED|NEW|REDUCE|pulse)' "$log" | tail -1 |
        sed -E 's/.*(cov: [0-9]+ ft: [0-9]+ corp: [^ ]+).*/\1/' || true)
  echo "   wall $(( $(date +%s) - start ))s, cpu ${cpu}s, ${execs:-?} execs, ${cov:-?}, corpus now $(ls "$out/found/$t" | wc -l) new + $(ls "fuzz/corpus/$t" | wc -l) seeds"
  if [ $rc -ne 0 ]; then
    echo "   FINDING (exit $rc): see $log and $out/crashes/" >&2
    grep -E 'invariant failed|ERROR: |SUMMARY: ' "$log" | head -5 >&2 || true
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: findings in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: no findings"
