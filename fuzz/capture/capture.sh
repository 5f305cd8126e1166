#!/usr/bin/env bash
# capture.sh BUILD_DIR OUTDIR: records real traffic for the fuzz seeds. Runs
# amaters-netd in plaintext HTTP/2 (h2c) behind a recording proxy, makes
# calls with amaters-cli (execute with metadata and a deadline, stream,
# health) and with nghttp (refused requests: unknown method, wrong
# content-type, GET, grpc-encoding gzip, bad grpc-timeout), then decodes
# every recorded connection with h2_extract into OUTDIR (header blocks in
# the fuzz_headers.h format, DATA payloads). fuzz/corpus/{req_headers,
# resp_headers,framing,proto}/traffic-* were made from such a capture.
set -euo pipefail
b=$(cd "$1" && pwd); out=$(mkdir -p "$2" && cd "$2" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
cc -O1 -o "$tmp/h2_extract" "$here/h2_extract.c" $(pkg-config --cflags --libs libnghttp2)
"$b/amaters-netd" --insecure --listen 127.0.0.1:17811 --log-level error & netd=$!
python3 "$here/record.py" 17812 17811 "$tmp" & rec=$!
trap 'kill $netd $rec 2>/dev/null; rm -rf "$tmp"' EXIT
sleep 1
u=http://127.0.0.1:17812 cli=("$b/amaters-cli" --insecure --log-level error)
"${cli[@]}" $u execute --data "hello amaters" --signature sig-1 >/dev/null
"${cli[@]}" --metadata trace-id=abc123 --metadata blob-bin=$'\x01\xff' --timeout 2500 $u execute \
  --data "$(head -c 300 /dev/urandom | base64 -w0)" >/dev/null
printf 'q1\nsecond query\n\nlast\n' | "${cli[@]}" $u stream >/dev/null
"${cli[@]}" $u health >/dev/null
"${cli[@]}" $u health --service nosuch.Service >/dev/null || true
"${cli[@]}" $u health --service amaters.v1.AmateRS >/dev/null
printf '\x00\x00\x00\x00\x04\x0a\x02hi' >"$tmp/body"
g=(-H ':method: POST' -H 'te: trailers')
nghttp -n -d "$tmp/body" "${g[@]}" -H 'content-type: application/grpc' -H 'grpc-timeout: 1S' $u/amaters.v1.AmateRS/Nope
nghttp -n -d "$tmp/body" "${g[@]}" -H 'content-type: text/plain' $u/amaters.v1.AmateRS/Execute
nghttp -n -H 'content-type: application/grpc' $u/amaters.v1.AmateRS/Execute
nghttp -n -d "$tmp/body" "${g[@]}" -H 'content-type: application/grpc' -H 'grpc-encoding: gzip' \
  -H 'x-bin: AAEC,AwQ=' $u/amaters.v1.AmateRS/Execute
nghttp -n -d "$tmp/body" "${g[@]}" -H 'content-type: application/grpc+proto' -H 'grpc-timeout: 12x' \
  $u/amaters.v1.AmateRS/Execute
sleep 0.5
for f in "$tmp"/c*.c2s; do
  c=$(basename "$f" .c2s)
  "$tmp/h2_extract" "$f" "$out" "$c-req"
  "$tmp/h2_extract" "$tmp/$c.s2c" "$out" "$c-resp"
done
echo "capture: $(ls "$out" | wc -l) files in $out"
