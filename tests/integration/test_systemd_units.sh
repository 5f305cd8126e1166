#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# integration.systemd_units: the systemd units that `cmake --install` puts in
# lib/systemd/system of the prefix.
#   - both are installed; the service's ExecStart names the installed daemon
#     (the configured prefix), Type=notify, ExecReload sends SIGHUP;
#   - `systemd-analyze verify` accepts them, with ExecStart pointed at the daemon
#     installed into a scratch prefix (PID 1 need not be systemd);
#   - `systemd-analyze security --offline` rates the service's exposure at most
#     2.0 ("OK"): own user, no capability, ProtectSystem=strict, ...
# Skipped (77) without systemd-analyze.
# usage: test_systemd_units.sh BUILD_DIR
set -euo pipefail
bin=$(cd "$1" && pwd)
command -v systemd-analyze >/dev/null || { echo "SKIP: no systemd-analyze (apt-get install systemd)"; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }

cmake --install "$bin" --prefix "$work/p" >/dev/null
units=$work/p/lib/systemd/system
[ -f "$units/amaters-netd.service" ] && [ -f "$units/amaters-netd.socket" ] &&
  ok "installed: lib/systemd/system/amaters-netd.service and .socket" || { bad "units not installed"; exit 1; }
sbindir=$(sed -n 's/^CMAKE_INSTALL_PREFIX:PATH=//p' "$bin/CMakeCache.txt")/sbin
svc=$(cat "$units/amaters-netd.service")
grep -qx "ExecStart=$sbindir/amaters-netd --config /etc/amaters-net/amaters-net.toml" <<<"$svc" &&
  ok "ExecStart names the installed daemon ($sbindir)" || bad "ExecStart: $(grep ExecStart= <<<"$svc")"
for line in Type=notify 'ExecReload=/bin/kill -HUP $MAINPID' DynamicUser=yes ProtectSystem=strict ProtectHome=yes \
            PrivateTmp=yes NoNewPrivileges=yes CapabilityBoundingSet= SystemCallFilter=@system-service \
            'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' LimitNOFILE=65536; do
  grep -qxF -- "$line" <<<"$svc" || bad "the service lacks '$line'"
done
ok "the service's type, reload and hardening lines"
grep -qx "ListenStream=7878" "$units/amaters-netd.socket" && grep -qx "ListenDatagram=7878" "$units/amaters-netd.socket" &&
  ok "the socket unit listens on TCP and UDP 7878" || bad "socket unit: $(cat "$units/amaters-netd.socket")"

mkdir "$work/v"
sed "s|^ExecStart=[^ ]*|ExecStart=$work/p/sbin/amaters-netd|" "$units/amaters-netd.service" >"$work/v/amaters-netd.service"
cp "$units/amaters-netd.socket" "$work/v/"
if out=$(cd "$work/v" && systemd-analyze verify --man=no amaters-netd.service amaters-netd.socket 2>&1) && [ -z "$out" ]; then
  ok "systemd-analyze verify: no complaint"
else
  bad "systemd-analyze verify: $out"
fi
if out=$(cd "$work/v" && systemd-analyze security --offline=yes --threshold=20 amaters-netd.service 2>&1); then
  ok "systemd-analyze security: $(grep -o 'exposure level.*' <<<"$out")"
else
  bad "systemd-analyze security: exposure above 2.0: $(tail -3 <<<"$out")"
fi
[ "$failed" = 0 ] || { echo "$failed failure(s)"; exit 1; }
