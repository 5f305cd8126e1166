# SPDX-License-Identifier: MIT OR Apache-2.0
# Helpers shared by the bench/ scripts (POSIX sh; sourced, not run).

# bench_setup: $tmp, a fresh directory, and $pids, the servers to stop (add
# yours); at exit they are stopped and $tmp removed. With --pin ($pin set),
# $srv_cpu / $cli_cpu put servers on CPU 0 and clients on CPU 1 (taskset).
bench_setup() {
  srv_cpu= cli_cpu=
  if [ -n "${pin:-}" ]; then srv_cpu="taskset -c 0"; cli_cpu="taskset -c 1"; fi
  tmp=$(mktemp -d)
  pids=
  trap bench_cleanup EXIT INT TERM
}
bench_cleanup() {
  for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
  for p in $pids; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}

# wait_port LOG [PID]: prints the port of the first "listening on [HOST:]PORT"
# line (waits up to 30 s; gives up at once when process PID has ended).
wait_port() {
  i=0
  while [ $i -lt 300 ]; do
    p=$(sed -n 's/.*listening on \(.*:\)\{0,1\}\([0-9][0-9]*\).*/\2/p' "$1" | head -n 1)
    [ -n "$p" ] && { echo "$p"; return 0; }
    [ -z "${2:-}" ] || alive "$2" || break
    sleep 0.1; i=$((i + 1))
  done
  echo "server did not start:" >&2; cat "$1" >&2; return 1
}

# alive PID: the process runs (not ended, not a zombie waiting for its parent)
alive() { case $(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1) in ''|Z|X) return 1 ;; esac; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_tcp PORT: waits (at most 30 s) until 127.0.0.1:PORT accepts a connection.
wait_tcp() {
  python3 - "$1" <<'EOF'
import socket, sys, time
end = time.monotonic() + 30
while True:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        break
    except OSError:
        if time.monotonic() > end:
            sys.exit("nothing listens on 127.0.0.1:%s" % sys.argv[1])
        time.sleep(0.1)
EOF
}

# cpu_snap PID FILE: writes "TID TICKS" (user + system clock ticks) for every
# thread of PID (/proc/PID/task/*/stat fields 14 and 15).
cpu_snap() {
  for t in /proc/"$1"/task/*/stat; do
    # the command name (field 2) may hold spaces: cut everything up to ") "
    sed 's/^\([0-9]*\) .*) /\1 /' "$t" 2>/dev/null | awk '{print $1, $13 + $14}'
  done >"$2"
}

# cpu_delta BEFORE AFTER SECONDS: prints "TOTAL% BUSIEST%": the CPU the
# process used between the two snapshots and that of its busiest thread, as
# a percentage of one core over SECONDS of wall time.
cpu_delta() {
  awk -v hz="$(getconf CLK_TCK)" -v s="$3" '
    NR == FNR { b[$1] = $2; next }
    { d = $2 - (($1 in b) ? b[$1] : 0); tot += d; if (d > max) max = d }
    END { printf "%.0f %.0f\n", 100 * tot / hz / s, 100 * max / hz / s }' "$1" "$2"
}

now() { date +%s.%N; }
