#!/usr/bin/python3
# SPDX-License-Identifier: MIT OR Apache-2.0
"""A hostile gRPC-over-HTTP/2 client (python3-h2, an independent HTTP/2
stack) with a valid client certificate, for the memory-bound tests.

Attacks (--attack):
  noread   The client announces an initial stream window of 0 and never
           grants the connection any window, so the server can send no
           response DATA; it then sends --streams Execute requests of
           --size bytes each, as fast as the server's flow control allows.
  partial  Each of --streams requests announces a message of --size bytes
           (the 5-byte gRPC prefix) and sends only --part bytes of it.
  slowheaders  One request whose HEADERS frame is written one byte every
           --trickle seconds; the client reports what the server did and when
           (the stream's grpc-status or reset, GOAWAY, the end of the
           connection), and keeps trickling the rest of the frame, if the
           connection stays open, for at most --hold seconds.
  slowtls  A TLS handshake that never completes (before any HTTP/2):
           --phase hello writes the ClientHello one byte every --trickle
           seconds; --phase flight writes it whole, reads the server's
           flight (ServerHello to Finished, with its CertificateRequest)
           and never sends its own (its certificate, CertificateVerify,
           Finished). It reports when the server ended the connection and
           how (TLS alert, EOF, reset), for at most --hold seconds.

The client obeys flow control (h2 enforces the server's windows). It stops
when everything is sent or when nothing moved for --stall seconds, then
holds the connection for --hold seconds, sampling the server's resident
memory (--pid, /proc) throughout. It prints one JSON object: bytes sent,
streams finished by the server (with their grpc-status / RST codes), the
peak resident memory seen (kB), whether the server closed the connection.
"""
import argparse
import json
import select
import socket
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.settings


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pki", required=True, help="development PKI directory (ca.pem, client.pem, client-key.pem)")
    ap.add_argument("--attack", choices=["noread", "partial", "slowheaders", "slowtls"], required=True)
    ap.add_argument("--phase", choices=["hello", "flight"], default="hello")
    ap.add_argument("--trickle", type=float, default=0.2)
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--size", type=int, default=1 << 20)
    ap.add_argument("--part", type=int, default=0)
    ap.add_argument("--stall", type=float, default=2.0)
    ap.add_argument("--hold", type=float, default=1.0)
    ap.add_argument("--pid", type=int, required=True, help="the server's pid, for its resident memory")
    a = ap.parse_args()
    if a.attack == "slowtls":
        return slow_tls(a)

    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=a.pki + "/ca.pem")
    ctx.load_cert_chain(a.pki + "/client.pem", a.pki + "/client-key.pem")
    ctx.set_alpn_protocols(["h2"])
    raw = socket.create_connection(("127.0.0.1", a.port))
    sock = ctx.wrap_socket(raw, server_hostname="localhost")
    assert sock.selected_alpn_protocol() == "h2", "no h2"

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.local_settings = h2.settings.Settings(client=True, initial_values={
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0 if a.attack == "noread" else 65535,
        h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000})
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())

    body_len = a.size
    # a QueryRequest whose query_bytes make the message exactly --size bytes:
    # the field 1 tag, the varint length, the bytes (sent as the body goes)
    def varint(v):
        out = bytearray()
        while True:
            out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
            v >>= 7
            if not v:
                return bytes(out)
    for vl in range(1, 6):
        n = body_len - 1 - vl
        if len(varint(n)) == vl:
            break
    payload = b"\x0a" + varint(n)
    if a.attack == "slowheaders":
        return slow_headers(a, sock, conn)
    msg_prefix = b"\x00" + body_len.to_bytes(4, "big")
    to_send = {}  # stream id -> [bytes object, offset]
    chunk = b"q" * (1 << 16)
    headers = [(":method", "POST"), (":scheme", "https"), (":path", "/amaters.v1.AmateRS/Execute"),
               (":authority", "localhost"), ("content-type", "application/grpc"), ("te", "trailers")]
    total = body_len + 5 if a.attack == "noread" else 5 + a.part
    for i in range(a.streams):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, headers)
        to_send[sid] = total
    sock.sendall(conn.data_to_send())

    sent_bytes = 0
    status = {}  # stream -> grpc-status or "rst:N"
    closed_by_server = None
    peak = rss_kb(a.pid)
    last_progress = time.time()
    started = {sid: False for sid in to_send}
    sock.setblocking(False)
    hold_until = None
    while True:
        now = time.time()
        # send what the windows allow
        moved = False
        for sid in list(to_send):
            left = to_send[sid]
            if left == 0 or sid in status:
                continue
            try:
                win = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
            except Exception:
                to_send[sid] = 0
                continue
            if win <= 0:
                continue
            k = min(win, left)
            data = b""
            if not started[sid]:
                data = msg_prefix + payload
                started[sid] = True
            data = (data + chunk * (k // len(chunk) + 1))[:k]
            end = (left - k == 0) and a.attack == "noread"
            conn.send_data(sid, data, end_stream=end)
            to_send[sid] = left - k
            sent_bytes += k
            moved = True
        out = conn.data_to_send()
        if out:
            try:
                sock.sendall(out)
            except (BlockingIOError, ssl.SSLWantWriteError):
                sock.setblocking(True)
                sock.sendall(out)
                sock.setblocking(False)
            except OSError:
                closed_by_server = closed_by_server or "write failed"
                break
        if moved:
            last_progress = now
        r, _, _ = select.select([sock], [], [], 0.05)
        if r:
            try:
                data = sock.recv(1 << 16)
            except (ssl.SSLWantReadError, BlockingIOError):
                data = None
            except OSError as e:
                closed_by_server = "error: %s" % e
                break
            if data == b"":
                closed_by_server = "eof"
                break
            if data:
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.ResponseReceived) or isinstance(ev, h2.events.TrailersReceived):
                        for k2, v in ev.headers:
                            if k2 == "grpc-status":
                                status[ev.stream_id] = v
                                last_progress = now
                    elif isinstance(ev, h2.events.StreamReset):
                        status.setdefault(ev.stream_id, "rst:%d" % ev.error_code)
                        last_progress = now
                    elif isinstance(ev, h2.events.ConnectionTerminated):
                        closed_by_server = "goaway:%d" % ev.error_code
                out = conn.data_to_send()
                if out:
                    sock.setblocking(True)
                    sock.sendall(out)
                    sock.setblocking(False)
                if closed_by_server:
                    break
        peak = max(peak, rss_kb(a.pid))
        done = all(v == 0 or s in status for s, v in to_send.items())
        if hold_until is None and (done or now - last_progress > a.stall):
            hold_until = now + a.hold
        if hold_until is not None and now > hold_until:
            break
    peak = max(peak, rss_kb(a.pid))
    counts = {}
    for v in status.values():
        counts[v] = counts.get(v, 0) + 1
    print(json.dumps({"attack": a.attack, "sent_bytes": sent_bytes, "streams": a.streams,
                      "finished": counts, "peak_rss_kb": peak, "closed_by_server": closed_by_server}))
    try:
        sock.close()
    except OSError:
        pass
    return 0


def slow_headers(a, sock, conn):
    headers = [(":method", "POST"), (":scheme", "https"), (":path", "/amaters.v1.AmateRS/Execute"),
               (":authority", "localhost"), ("content-type", "application/grpc"), ("te", "trailers"),
               ("x-padding", "p" * 200)]
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, headers)
    frame = conn.data_to_send()
    t0 = time.time()
    events = []
    sock.setblocking(False)
    i = 0
    end = t0 + a.hold
    eof = False
    while time.time() < end and not eof:
        if i < len(frame):
            try:
                sock.sendall(frame[i:i + 1])
            except OSError as e:
                events.append(("send failed: %s" % e, round(time.time() - t0, 2)))
                break
            i += 1
        r, _, _ = select.select([sock], [], [], a.trickle)
        if not r:
            continue
        try:
            data = sock.recv(1 << 16)
        except (ssl.SSLWantReadError, BlockingIOError):
            continue
        except OSError as e:
            events.append(("error: %s" % e, round(time.time() - t0, 2)))
            break
        if not data:
            events.append(("eof", round(time.time() - t0, 2)))
            eof = True
            break
        for ev in conn.receive_data(data):
            at = round(time.time() - t0, 2)
            if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                for k, v in ev.headers:
                    if k == "grpc-status":
                        events.append(("grpc-status %s" % v, at))
            elif isinstance(ev, h2.events.StreamReset):
                events.append(("rst %d" % ev.error_code, at))
            elif isinstance(ev, h2.events.ConnectionTerminated):
                events.append(("goaway %d %s" % (ev.error_code, ev.additional_data), at))
        conn.data_to_send()  # (a SETTINGS ACK would land inside the half-sent frame: never sent)
    print(json.dumps({"attack": "slowheaders", "frame_bytes": len(frame), "bytes_sent": i,
                      "events": events, "elapsed": round(time.time() - t0, 2)}))
    return 0


def slow_tls(a):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=a.pki + "/ca.pem")
    ctx.load_cert_chain(a.pki + "/client.pem", a.pki + "/client-key.pem")
    ctx.set_alpn_protocols(["h2"])
    inb, outb = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(inb, outb, server_hostname="localhost")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outb.read()
    sock = socket.create_connection(("127.0.0.1", a.port))
    t0 = time.time()
    sent, got, withheld, end, how = 0, 0, 0, None, "still open"
    if a.phase == "flight":
        sock.sendall(hello)
        sent = len(hello)
    while time.time() < t0 + a.hold:
        if sent < len(hello):
            sock.sendall(hello[sent:sent + 1])
            sent += 1
        r, _, _ = select.select([sock], [], [], a.trickle)
        if not r:
            continue
        try:
            data = sock.recv(1 << 16)
        except OSError as e:
            how = "error: %s" % e
            break
        if not data:
            how = "eof"
            break
        got += len(data)
        if withheld:
            continue  # (the server's bytes after its flight: an alert, or nothing)
        inb.write(data)
        try:
            tls.do_handshake()  # complete on our side once the server's Finished is in
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as e:
            how = "TLS error: %s" % e.reason
            break
        withheld += len(outb.read())  # our certificate, CertificateVerify, Finished: never sent
    end = round(time.time() - t0, 2)
    print(json.dumps({"attack": "slowtls", "phase": a.phase, "hello_bytes": len(hello), "bytes_sent": sent,
                      "server_bytes": got, "withheld_bytes": withheld, "end": how, "closed_s": end}))
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
