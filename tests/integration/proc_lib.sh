# Shared by the integration tests that run servers as processes: a work
# directory (entered) that is removed at exit, together with the processes
# whose pids the test adds to $pids; the result counters; a development PKI
# in pki/. Sourced after bin=BUILD_DIR is set.
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
passed=0 failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }
cd "$work"
"$bin/amaters-cli" certs init pki >/dev/null
