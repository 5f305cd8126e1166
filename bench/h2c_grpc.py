#!/usr/bin/python3
# SPDX-License-Identifier: MIT OR Apache-2.0
"""Request body and one-call check for bench/h2load.sh (python3-h2).

  body --size N --out FILE
      Writes one gRPC length-prefixed amaters.v1.QueryRequest whose field 1
      (query_bytes) holds N bytes (0, 1, 2, ... mod 256), protobuf-encoded by
      hand. The echo answer, a QueryResponse with result_bytes = query_bytes
      (also field 1, bytes), is the same bytes, so FILE is also the response
      a static server must send.

  check --port P --path PATH --body FILE [--grpc]
      One POST of FILE over plaintext HTTP/2 (h2c, prior knowledge) to
      127.0.0.1:P with the headers h2load sends; exits 0 if the answer is
      :status 200 with a body equal to FILE and, with --grpc, content-type
      application/grpc and the trailer grpc-status 0 (h2load cannot see
      trailers). Otherwise prints what was wrong and exits 1.
"""
import argparse
import socket
import struct
import sys

import h2.config
import h2.connection
import h2.events
import h2.exceptions


def varint(n):
    out = b""
    while n > 0x7F:
        out, n = out + bytes([(n & 0x7F) | 0x80]), n >> 7
    return out + bytes([n])


def message(size):
    query = bytes(i & 0xFF for i in range(size))
    pb = b"\x0a" + varint(size) + query  # field 1, wire type 2 (bytes)
    return b"\x00" + struct.pack(">I", len(pb)) + pb


def check(port, path, body, grpc, timeout):
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":authority", "127.0.0.1:%d" % port),
                            (":path", path), ("content-type", "application/grpc"), ("te", "trailers")])
    conn.send_data(sid, body, end_stream=True)
    sock.sendall(conn.data_to_send())
    headers, trailers, data, done = {}, {}, bytearray(), None
    while done is None:
        chunk = sock.recv(65536)
        if not chunk:
            done = "connection closed before the end of the response"
            break
        for ev in conn.receive_data(chunk):
            if isinstance(ev, h2.events.ResponseReceived):
                headers = dict(ev.headers)
            elif isinstance(ev, h2.events.TrailersReceived):
                trailers = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                data += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                done = "stream reset, error code %s" % ev.error_code
            elif isinstance(ev, h2.events.StreamEnded):
                done = ""
        sock.sendall(conn.data_to_send())
    sock.close()
    errs = [done] if done else []
    if headers.get(":status") != "200":
        errs.append(":status %s (want 200)" % headers.get(":status"))
    if bytes(data) != body:
        errs.append("body of %d bytes differs from the %d expected" % (len(data), len(body)))
    if grpc:
        if not headers.get("content-type", "").startswith("application/grpc"):
            errs.append("content-type %r" % headers.get("content-type"))
        st = trailers.get("grpc-status", headers.get("grpc-status"))
        if st != "0":
            errs.append("grpc-status %r (want '0'), grpc-message %r" % (st, trailers.get("grpc-message")))
    return errs, headers, trailers, len(data)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("body")
    b.add_argument("--size", type=int, required=True)
    b.add_argument("--out", required=True)
    c = sub.add_parser("check")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--path", required=True)
    c.add_argument("--body", required=True)
    c.add_argument("--grpc", action="store_true")
    c.add_argument("--timeout", type=float, default=10)
    a = ap.parse_args()
    if a.cmd == "body":
        if a.size < 0:
            ap.error("--size must be >= 0")
        with open(a.out, "wb") as f:
            f.write(message(a.size))
        return 0
    with open(a.body, "rb") as f:
        body = f.read()
    try:
        errs, headers, trailers, n = check(a.port, a.path, body, a.grpc, a.timeout)
    except (OSError, h2.exceptions.ProtocolError) as e:
        errs, headers, trailers, n = ["%s: %s" % (type(e).__name__, e)], {}, {}, 0
    if errs:
        print("check %s on port %d FAILED: %s" % (a.path, a.port, "; ".join(errs)), file=sys.stderr)
        return 1
    print("check port %d: :status 200, %d body bytes as expected%s" % (
        a.port, n, ", grpc-status 0" if a.grpc else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
