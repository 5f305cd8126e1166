#!/usr/bin/env python3
# SPDX-License-Identifier: MIT OR Apache-2.0
"""grpc_health_h2.py AUTHORITY: the bytes of a grpc.health.v1.Health/Check
call (service "") over a new HTTP/2 connection, as hex for HAProxy's
`tcp-check send-binary`: the client preface, an empty SETTINGS frame, the
request HEADERS (HPACK literals without indexing or Huffman, so the bytes
are readable) and one DATA frame holding the empty request message (the
5-byte gRPC prefix) with END_STREAM. HAProxy 2.6's http-check cannot send
it: its body is a string that stops at the first NUL byte.
The answer of a SERVING server contains the DATA frame
  00 00 07 00 00 00 00 00 01 | 00 00 00 00 02 08 01
(7 bytes on stream 1: a message of 2 bytes, status = 1 SERVING), which
`tcp-check expect binary 00000700000000000100000000020801` looks for."""
import struct, sys


def frame(ftype, flags, sid, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def literal(index, value, name=None):
    # literal header field without indexing: a static-table name (4-bit
    # prefix index) or a new name (index 0), then the value
    head = bytes([index]) if index < 15 else bytes([0x0F, index - 15])
    if name is not None:
        head = b"\x00" + bytes([len(name)]) + name
    return head + bytes([len(value)]) + value


authority = sys.argv[1].encode() if len(sys.argv) > 1 else b"localhost"
block = (b"\x83"  # :method POST (static 3)
         + b"\x87"  # :scheme https (static 7)
         + literal(4, b"/grpc.health.v1.Health/Check")  # :path
         + literal(1, authority)  # :authority
         + literal(31, b"application/grpc")  # content-type
         + literal(0, b"trailers", b"te"))
out = (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"")
       + frame(1, 0x4, 1, block)  # HEADERS, END_HEADERS
       + frame(0, 0x1, 1, b"\0\0\0\0\0"))  # DATA, END_STREAM
print(out.hex())
