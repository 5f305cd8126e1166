#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# test_install.sh pkgconfig|cmake BUILD_DIR SOURCE_DIR CC [CFLAGS]
# Installs the build into a fresh prefix inside the build tree, checks what is
# there, then builds consumer/consumer.c as an outside program against the
# installed files (pkgconfig: through amaters-net.pc; cmake: through
# find_package(amaters-net)), once with the shared library and once with the
# static one, and runs both.
set -euo pipefail
mode=$1 build=$(cd "$2" && pwd) src=$(cd "$3" && pwd) cc=$4 cflags=${5:-}
work=$build/install-test/$mode
rm -rf "$work"
mkdir -p "$work"
prefix=$work/prefix
fail() { echo "FAIL: $*" >&2; exit 1; }

cmake --install "$build" --prefix "$prefix" >"$work/install.log" || { cat "$work/install.log"; fail "cmake --install"; }
version=$(sed -n 's/^CMAKE_PROJECT_VERSION:STATIC=//p' "$build/CMakeCache.txt")
[ -n "$version" ] || fail "no project version in CMakeCache.txt"
libdir=$(dirname "$(find "$prefix" -name 'libamaters-net.a' | head -1)")
[ -f "$libdir/libamaters-net.a" ] || fail "libamaters-net.a not installed"

# What the install must hold.
soname=$(readelf -d "$libdir/libamaters-net.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libamaters-net.so.${version%.*}" ] || fail "soname '$soname', expected libamaters-net.so.${version%.*}"
[ -L "$libdir/libamaters-net.so" ] && [ -L "$libdir/$soname" ] && [ -f "$libdir/libamaters-net.so.$version" ] ||
  fail "shared library links: $(ls "$libdir")"
for f in include/amn/amn.h include/amn/common.h include/amn/server.h include/amn/client.h include/amn/plugin.h \
         share/amaters-net/proto/amaters.proto share/amaters-net/proto/health.proto \
         share/amaters-net/proto/grpc/reflection/v1/reflection.proto share/amaters-net/proto/grpc/reflection/v1alpha/reflection.proto \
         share/doc/amaters-net/amaters-net.toml share/doc/amaters-net/LICENSE-MIT share/doc/amaters-net/LICENSE-APACHE \
         share/man/man1/amaters-cli.1 share/man/man5/amaters-net.toml.5 share/man/man8/amaters-netd.8 \
         bin/amaters-cli sbin/amaters-netd; do
  [ -e "$prefix/$f" ] || fail "$f not installed"
done
[ "$("$prefix/bin/amaters-cli" --version)" = "amaters-cli $version" ] || fail "amaters-cli --version"
[ "$("$prefix/sbin/amaters-netd" --version)" = "amaters-netd $version" ] || fail "amaters-netd --version"
if grep -rq "$build" "$libdir/pkgconfig" "$libdir/cmake"; then fail "an installed file names the build tree"; fi

run() { # run NAME BINARY: the consumer with a PKI directory of its own
  mkdir -p "$work/pki-$1"
  out=$("$2" "$work/pki-$1") || fail "$1: the consumer failed: $out"
  [ "$out" = "consumer $version ok" ] || fail "$1: unexpected output '$out'"
  echo "$1: $out"
}
needs_libamn() { readelf -d "$1" | grep -q 'NEEDED.*libamaters-net\.so'; }

# shellcheck disable=SC2086 # CFLAGS and pkg-config's output are lists of words
case $mode in
pkgconfig)
  export PKG_CONFIG_PATH=$libdir/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
  pkg-config --validate amaters-net || fail "pkg-config --validate"
  [ "$(pkg-config --modversion amaters-net)" = "$version" ] || fail "pkg-config --modversion"
  [ "$(cd "$(pkg-config --variable=prefix amaters-net)" && pwd -P)" = "$(cd "$prefix" && pwd -P)" ] ||
    fail "the .pc file's prefix is not where it was installed"
  $cc $cflags -o "$work/consumer-shared" "$src/tests/install/consumer/consumer.c" \
    $(pkg-config --cflags --libs amaters-net) -Wl,-rpath,"$libdir"
  needs_libamn "$work/consumer-shared" || fail "the shared build does not use libamaters-net.so"
  run shared "$work/consumer-shared"
  # Static: the archive by name, then everything `pkg-config --static` says it needs.
  libs=$(pkg-config --static --libs amaters-net)
  $cc $cflags -o "$work/consumer-static" "$src/tests/install/consumer/consumer.c" \
    $(pkg-config --cflags amaters-net) ${libs/-lamaters-net/-l:libamaters-net.a}
  ! needs_libamn "$work/consumer-static" || fail "the static build uses libamaters-net.so"
  run static "$work/consumer-static"
  # A handler plug-in built as the README says (headers only, nothing linked),
  # run by the installed amaters-netd and called by the installed amaters-cli.
  $cc $cflags -shared -fPIC -o "$work/plugin.so" "$src/tests/install/consumer/plugin.c" $(pkg-config --cflags amaters-net)
  ! needs_libamn "$work/plugin.so" || fail "the plug-in links libamaters-net.so"
  "$prefix/sbin/amaters-netd" --listen 127.0.0.1:0 --pki-dir "$work/pki-plugin" --transport h2 \
    --handler "$work/plugin.so" >"$work/plugin.log" 2>&1 &
  netd=$!
  trap 'kill $netd 2>/dev/null || true' EXIT
  for _ in $(seq 1 100); do grep -q "listening on" "$work/plugin.log" && break; sleep 0.1; done
  port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/plugin.log" | head -1)
  [ -n "$port" ] || fail "amaters-netd with the plug-in did not start: $(cat "$work/plugin.log")"
  out=$("$prefix/bin/amaters-cli" --pki-dir "$work/pki-plugin" "https://127.0.0.1:$port" execute --data hi 2>&1) ||
    fail "the call to the plug-in failed: $out"
  [ "$out" = "plugin: hi" ] || fail "the plug-in answered '$out'"
  kill -TERM $netd
  wait $netd || fail "amaters-netd with the plug-in did not stop cleanly: $(cat "$work/plugin.log")"
  echo "plugin: $out"
  ;;
cmake)
  for kind in shared static; do
    static=OFF; [ $kind = static ] && static=ON
    cmake -S "$src/tests/install/consumer" -B "$work/build-$kind" -DCMAKE_PREFIX_PATH="$prefix" \
      -DCMAKE_C_COMPILER="$cc" -DCMAKE_C_FLAGS="$cflags" -DAMN_STATIC=$static >"$work/cmake-$kind.log" 2>&1 ||
      { cat "$work/cmake-$kind.log"; fail "$kind: configuring the consumer"; }
    cmake --build "$work/build-$kind" >>"$work/cmake-$kind.log" 2>&1 ||
      { cat "$work/cmake-$kind.log"; fail "$kind: building the consumer"; }
    if [ $kind = shared ]; then needs_libamn "$work/build-$kind/consumer" || fail "shared: no libamaters-net.so";
    else ! needs_libamn "$work/build-$kind/consumer" || fail "static: uses libamaters-net.so"; fi
    run $kind "$work/build-$kind/consumer"
  done
  ;;
*) fail "unknown mode $mode" ;;
esac
echo "install.$mode: passed"
