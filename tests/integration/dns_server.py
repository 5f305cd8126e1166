#!/usr/bin/python3
# SPDX-License-Identifier: MIT OR Apache-2.0
"""A small authoritative DNS server over UDP for the client DNS test
(integration.dns): A and AAAA answers from a control file that the test
rewrites while it runs, re-read at every query:
  {"names": {"svc.test": ["127.0.0.2", "::1"]}, "ttl": 1, "delay_s": 0, "silent": false}
A name not listed gets NXDOMAIN; a listed name without an address of the
asked type, an empty answer (NOERROR). delay_s: each answer is sent that many
seconds after its query (from a thread of its own); silent: queries are
dropped (a server that stopped answering). Every event goes to the log with
its time (CLOCK_REALTIME seconds), the query's ID and the delay applied:
"T recv NAME TYPE ID DELAY", "T sent NAME TYPE N RCODE ID DELAY",
"T dropped NAME TYPE ID".
usage: dns_server.py CONTROL_FILE LOG_FILE PORT_FILE"""
import ipaddress
import json
import os
import socket
import struct
import sys
import threading
import time

ctl_path, log_path, port_path = sys.argv[1:4]
log = open(log_path, "a", buffering=1)
log_mu = threading.Lock()


def event(*words):
    with log_mu:
        log.write("%.6f %s\n" % (time.time(), " ".join(str(w) for w in words)))


def parse_question(q):
    """(id, flags, name, qtype, end of the question) or None."""
    if len(q) < 12:
        return None
    qid, flags, qd = struct.unpack("!HHH", q[:6])
    if qd != 1 or flags & 0x8000:
        return None
    labels, i = [], 12
    while True:
        if i >= len(q):
            return None
        n = q[i]
        i += 1
        if n == 0:
            break
        if n & 0xC0 or i + n > len(q):
            return None
        labels.append(q[i:i + n].decode("ascii", "replace"))
        i += n
    if i + 4 > len(q):
        return None
    qtype, _qclass = struct.unpack("!HH", q[i:i + 4])
    return qid, flags, ".".join(labels).lower().rstrip("."), qtype, i + 4


def answer(q, parsed, ctl):
    qid, flags, name, qtype, qend = parsed
    names = {k.lower(): v for k, v in ctl.get("names", {}).items()}
    ttl = int(ctl.get("ttl", 1))
    if name not in names:
        rcode, rrs = 3, []
    else:
        fam = 4 if qtype == 1 else 6 if qtype == 28 else 0
        rrs = [ipaddress.ip_address(a).packed for a in names[name] if ipaddress.ip_address(a).version == fam]
        rcode = 0
    hdr = struct.pack("!HHHHHH", qid, 0x8400 | (flags & 0x0100) | 0x0080 | rcode, 1, len(rrs), 0, 0)
    body = b"".join(struct.pack("!HHHIH", 0xC00C, qtype, 1, ttl, len(r)) + r for r in rrs)
    return hdr + q[12:qend] + body, len(rrs), rcode


def main():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    with open(port_path + ".tmp", "w") as f:
        f.write(str(sock.getsockname()[1]))
    os.rename(port_path + ".tmp", port_path)
    while True:
        q, peer = sock.recvfrom(4096)
        parsed = parse_question(q)
        if not parsed:
            continue
        try:
            with open(ctl_path) as f:
                ctl = json.load(f)
        except (OSError, ValueError):
            ctl = {}
        qid, name, qtype = parsed[0], parsed[2], parsed[3]
        delay = float(ctl.get("delay_s", 0))
        event("recv", name, qtype, qid, delay)
        if ctl.get("silent"):
            event("dropped", name, qtype, qid)
            continue
        msg, n, rcode = answer(q, parsed, ctl)

        def send(msg=msg, peer=peer, name=name, qtype=qtype, n=n, rcode=rcode, qid=qid, delay=delay):
            if delay:
                time.sleep(delay)  # (the delay being simulated, in the server's own thread)
            sock.sendto(msg, peer)
            event("sent", name, qtype, n, rcode, qid, delay)
        if delay:
            threading.Thread(target=send, daemon=True).start()
        else:
            send()


main()
