# SPDX-License-Identifier: MIT OR Apache-2.0
# Shared by the lifecycle tests (test_lifecycle.sh, test_lifecycle_h3.sh):
# result helpers and the common set-up. Sourced; expects $bin and $work.
passed=0 failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }
# check NAME FILE REGEX: FILE has a line matching REGEX
check() { if grep -Eq -- "$3" "$2"; then ok "$1"; else bad "$1 (no /$3/ in:)"; sed 's/^/    /' "$2"; fi; }
between() { local t=$1; [ -n "$t" ] && [ "$t" -ge "$2" ] && [ "$t" -le "$3" ]; }

# lifecycle_setup: enters $work, picks a port free for TCP and UDP ($port), creates a
# development PKI in pki/ and copies the server's files to etc/ (which the
# SIGHUP tests then replace).
lifecycle_setup() {
  cd "$work"
  port=$(/usr/bin/python3 - <<'PY'
import socket
while True:  # free for TCP and UDP (HTTP/3 binds the same port number)
    t = socket.socket()
    t.bind(("127.0.0.1", 0))
    p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p))
        break
    except OSError:
        t.close()
print(p)
PY
)
  "$bin/amaters-cli" certs init pki >/dev/null
  mkdir etc
  cp pki/server.pem pki/server-key.pem pki/ca.pem etc/
}
