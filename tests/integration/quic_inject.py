#!/usr/bin/python3
# SPDX-License-Identifier: MIT OR Apache-2.0
"""A UDP relay between one QUIC client and a QUIC server that adds hand-made
frames to the client's 1-RTT packets: an independent QUIC frame writer for the
flood tests (PATH_CHALLENGE, NEW_CONNECTION_ID), which neither ngtcp2 nor
quic-go can be made to send.

The client runs with SSLKEYLOGFILE set (GnuTLS writes its TLS 1.3 traffic
secrets there); the relay reads that file, derives the QUIC packet protection
keys (RFC 9001 5.1, AES-128/256-GCM or ChaCha20-Poly1305, found by trial),
removes the header protection of each short-header packet the client sends,
decrypts it, appends frames after the client's own and sends it on under the
same packet number, encrypted again. The client's packet numbering, its ACKs
and everything else stay as they are, so the connection goes on unless the
server closes it. Packets from the server are decrypted to count the frames
that prove the server processed the injected ones (PATH_RESPONSE,
RETIRE_CONNECTION_ID, CONNECTION_CLOSE with its error code).

Modes:
  none            relay only (counts the server's frames)
  path-challenge  PATH_CHALLENGE frames filling each client packet up to
                  --max-datagram bytes
  new-cid-limit   NEW_CONNECTION_ID frames that never retire anything, more
                  than any active_connection_id_limit allows (the server must
                  close with CONNECTION_ID_LIMIT_ERROR)
  new-cid-retire  NEW_CONNECTION_ID frames, each retiring all earlier ones
                  (Retire Prior To = its own sequence number), several per
                  packet: the server has to retire connection IDs and send
                  RETIRE_CONNECTION_ID without end. So that the real client
                  keeps its connection, the relay gives the server's packets
                  back the client's first connection ID and turns all
                  RETIRE_CONNECTION_ID frames into PADDING before the client
                  sees them (both inside the AEAD, so the packets are
                  decrypted and encrypted again): the client never learns
                  that its connection IDs were retired.

Each client address is one connection with its own keys; only the first
--flood-connections connections get frames added, so a client that
reconnects after the server closed a flooded connection gets through.

On SIGTERM (or SIGINT) the relay writes its counters as JSON to --stats and
exits. It writes "ready PORT" to --ready once it listens.
"""
import argparse
import hashlib
import hmac
import json
import os
import selectors
import signal
import socket
import struct
import sys

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305


# --- QUIC variable-length integers (RFC 9000 16) ---------------------------
def varint_dec(b, i):
    first = b[i]
    n = 1 << (first >> 6)
    v = first & 0x3F
    for k in range(1, n):
        v = (v << 8) | b[i + k]
    return v, i + n


def varint_enc(v):
    if v < 1 << 6:
        return bytes([v])
    if v < 1 << 14:
        return struct.pack(">H", v | 0x4000)
    if v < 1 << 30:
        return struct.pack(">I", v | 0x80000000)
    return struct.pack(">Q", v | 0xC000000000000000)


# --- keys (RFC 8446 7.1 HKDF-Expand-Label, RFC 9001 5.1) -------------------
def hkdf_expand_label(secret, label, length, hashmod):
    full = b"tls13 " + label
    info = struct.pack(">H", length) + bytes([len(full)]) + full + b"\x00"
    out, t, n = b"", b"", 1
    while len(out) < length:
        t = hmac.new(secret, t + info + bytes([n]), hashmod).digest()
        out += t
        n += 1
    return out[:length]


class Suite:
    def __init__(self, name, keylen, hashmod, aead, hp):
        self.name, self.keylen, self.hashmod, self.aead, self.hp = name, keylen, hashmod, aead, hp


def _aes_hp(key, sample):
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(sample) + enc.finalize()


def _chacha_hp(key, sample):
    enc = Cipher(algorithms.ChaCha20(key, sample), mode=None).encryptor()
    return enc.update(b"\x00" * 5)


SUITES_32 = [Suite("TLS_AES_128_GCM_SHA256", 16, hashlib.sha256, AESGCM, _aes_hp),
             Suite("TLS_CHACHA20_POLY1305_SHA256", 32, hashlib.sha256, ChaCha20Poly1305, _chacha_hp)]
SUITES_48 = [Suite("TLS_AES_256_GCM_SHA384", 32, hashlib.sha384, AESGCM, _aes_hp)]


class Keys:
    """Packet protection keys of one direction, for one key phase."""

    def __init__(self, suite, secret):
        self.suite, self.secret = suite, secret
        self.key = hkdf_expand_label(secret, b"quic key", suite.keylen, suite.hashmod)
        self.iv = hkdf_expand_label(secret, b"quic iv", 12, suite.hashmod)
        self.hpkey = hkdf_expand_label(secret, b"quic hp", suite.keylen, suite.hashmod)
        self.aead = suite.aead(self.key)

    def next_phase(self):
        nxt = Keys.__new__(Keys)
        nxt.suite = self.suite
        nxt.secret = hkdf_expand_label(self.secret, b"quic ku", len(self.secret), self.suite.hashmod)
        nxt.key = hkdf_expand_label(nxt.secret, b"quic key", self.suite.keylen, self.suite.hashmod)
        nxt.iv = hkdf_expand_label(nxt.secret, b"quic iv", 12, self.suite.hashmod)
        nxt.hpkey = self.hpkey  # header protection keys do not change (RFC 9001 6)
        nxt.aead = self.suite.aead(nxt.key)
        return nxt

    def nonce(self, pn):
        return bytes(a ^ b for a, b in zip(self.iv, pn.to_bytes(12, "big")))


class Direction:
    """One direction of the connection: its keys (both phases as met) and the
    largest packet number seen, for decoding truncated packet numbers."""

    def __init__(self, keys):
        self.phases = {0: keys}
        self.phase_bit = 0
        self.largest = -1

    def keys_for(self, bit):
        if bit not in self.phases:
            self.phases[bit] = self.phases[self.phase_bit].next_phase()
        return self.phases[bit]


def decode_pn(truncated, nbits, largest):
    expected = largest + 1
    win = 1 << nbits
    hwin, mask = win // 2, win - 1
    cand = (expected & ~mask) | truncated
    if cand <= expected - hwin and cand < (1 << 62) - win:
        return cand + win
    if cand > expected + hwin and cand >= win:
        return cand - win
    return cand


def open_short(d, pkt, dcid_len):
    """Remove header protection and decrypt a short-header packet. Returns
    (header bytes unprotected, pn length, pn, plaintext) or None."""
    keys0 = d.phases[d.phase_bit]
    pn_off = 1 + dcid_len
    if len(pkt) < pn_off + 4 + 16:
        return None
    mask = keys0.suite.hp(keys0.hpkey, pkt[pn_off + 4:pn_off + 20])
    first = pkt[0] ^ (mask[0] & 0x1F)
    pnlen = (first & 3) + 1
    pnb = bytes(pkt[pn_off + i] ^ mask[1 + i] for i in range(pnlen))
    header = bytes([first]) + pkt[1:pn_off] + pnb
    pn = decode_pn(int.from_bytes(pnb, "big"), pnlen * 8, d.largest)
    bit = (first >> 2) & 1
    keys = d.keys_for(bit)
    try:
        plain = keys.aead.decrypt(keys.nonce(pn), pkt[pn_off + pnlen:], header)
    except Exception:
        return None
    d.largest = max(d.largest, pn)
    d.phase_bit = bit
    return header, pnlen, pn, plain


def seal_short(d, header, pnlen, pn, plain, dcid_len):
    bit = (header[0] >> 2) & 1
    keys = d.keys_for(bit)
    body = keys.aead.encrypt(keys.nonce(pn), plain, header)
    pn_off = 1 + dcid_len
    pkt = bytearray(header + body)
    mask = keys.suite.hp(keys.hpkey, bytes(pkt[pn_off + 4:pn_off + 20]))
    pkt[0] ^= mask[0] & 0x1F
    for i in range(pnlen):
        pkt[pn_off + i] ^= mask[1 + i]
    return bytes(pkt)


# --- frames (RFC 9000 19) ---------------------------------------------------
def walk_frames(p):
    """Yield (type, start, end) of every frame of a decrypted payload."""
    i, n = 0, len(p)
    while i < n:
        start = i
        t, i = varint_dec(p, i)
        if t == 0x00:  # a run of PADDING is one frame here
            i = n - len(bytes(p[i:]).lstrip(b"\x00"))
        elif t == 0x01 or t == 0x1E:
            pass
        elif t in (0x02, 0x03):
            _, i = varint_dec(p, i)
            _, i = varint_dec(p, i)
            cnt, i = varint_dec(p, i)
            _, i = varint_dec(p, i)
            for _ in range(cnt * 2):
                _, i = varint_dec(p, i)
            if t == 0x03:
                for _ in range(3):
                    _, i = varint_dec(p, i)
        elif t == 0x04:
            for _ in range(3):
                _, i = varint_dec(p, i)
        elif t == 0x05 or t == 0x11 or t == 0x15:
            for _ in range(2):
                _, i = varint_dec(p, i)
        elif t == 0x06:
            _, i = varint_dec(p, i)
            ln, i = varint_dec(p, i)
            i += ln
        elif t == 0x07:
            ln, i = varint_dec(p, i)
            i += ln
        elif 0x08 <= t <= 0x0F:
            _, i = varint_dec(p, i)
            if t & 0x04:
                _, i = varint_dec(p, i)
            if t & 0x02:
                ln, i = varint_dec(p, i)
                i += ln
            else:
                i = n
        elif t in (0x10, 0x12, 0x13, 0x14, 0x16, 0x17, 0x19):
            _, i = varint_dec(p, i)
        elif t == 0x18:
            _, i = varint_dec(p, i)
            _, i = varint_dec(p, i)
            ln = p[i]
            i += 1 + ln + 16
        elif t in (0x1A, 0x1B):
            i += 8
        elif t == 0x1C:
            for _ in range(2):
                _, i = varint_dec(p, i)
            ln, i = varint_dec(p, i)
            i += ln
        elif t == 0x1D:
            _, i = varint_dec(p, i)
            ln, i = varint_dec(p, i)
            i += ln
        else:
            raise ValueError("unknown frame type 0x%x" % t)
        if i > n:
            raise ValueError("truncated frame 0x%x" % t)
        yield t, start, i


def read_keylog(path):
    """CLIENT_/SERVER_TRAFFIC_SECRET_0 pairs by client random, in file order."""
    pairs = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) != 3:
                    continue
                label, rnd, sec = parts
                if label in ("CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0"):
                    pairs.setdefault(rnd, {})[label] = bytes.fromhex(sec)
    except FileNotFoundError:
        pass
    return [p for p in pairs.values() if len(p) == 2]


def long_header_cids(pkt):
    """(dcid, scid) of a long-header packet."""
    i = 5
    dl = pkt[i]
    dcid = pkt[i + 1:i + 1 + dl]
    i += 1 + dl
    sl = pkt[i]
    return dcid, pkt[i + 1:i + 1 + sl]


class Conn:
    """What the relay knows of one client address (one QUIC connection)."""

    def __init__(self, relay, addr, index):
        self.relay, self.addr, self.index = relay, addr, index
        self.up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.up.bind(("127.0.0.1", 0))
        self.up.setblocking(False)
        self.client_scid = None  # the CID the client gave the server first
        self.server_cid_len = None
        self.c2s = self.s2c = None
        self.tried = set()
        self.decrypted = 0
        self.injected = 0
        # this connection gets frames added if it is among the first --flood-connections
        self.flood = relay.a.mode != "none" and index < relay.a.flood_connections

    # Keys are found by trial: the secret pair and suite that open the client's packet.
    def find_keys(self, pkt):
        for pair in read_keylog(self.relay.a.keylog):
            csec, ssec = pair["CLIENT_TRAFFIC_SECRET_0"], pair["SERVER_TRAFFIC_SECRET_0"]
            if csec in self.tried:
                continue
            for suite in SUITES_32 if len(csec) == 32 else SUITES_48:
                d = Direction(Keys(suite, csec))
                if open_short(d, pkt, self.server_cid_len):
                    d.largest = -1  # the packet is opened again by the caller
                    self.c2s = d
                    self.s2c = Direction(Keys(suite, ssec))
                    self.relay.st["suite"] = suite.name
                    return True
            self.tried.add(csec)
        return False

    def from_client(self, pkt):
        st = self.relay.st
        st["client_packets"] += 1
        if pkt[0] & 0x80:
            if self.client_scid is None and len(pkt) > 6:
                self.client_scid = long_header_cids(pkt)[1]
            self.up.sendto(pkt, self.relay.server)
            return
        out = pkt
        if self.server_cid_len is not None and (self.c2s or self.find_keys(pkt)):
            opened = open_short(self.c2s, pkt, self.server_cid_len)
            if opened is None:
                st["undecryptable_client"] += 1
            else:
                header, pnlen, pn, plain = opened
                st["client_1rtt_decrypted"] += 1
                self.decrypted += 1
                room = self.relay.a.max_datagram - len(pkt)
                if self.flood and self.decrypted > self.relay.a.after and room > 0 and \
                        self.injected < self.relay.a.max_packets:
                    extra = self.relay.frames_to_add(room, self.client_scid)
                    if extra:
                        out = seal_short(self.c2s, header, pnlen, pn, plain + extra, self.server_cid_len)
                        self.injected += 1
                        st["packets_injected"] += 1
        self.up.sendto(out, self.relay.server)

    def from_server(self, pkt):
        st = self.relay.st
        if pkt[0] & 0x80:
            if self.server_cid_len is None and len(pkt) > 6:
                self.server_cid_len = len(long_header_cids(pkt)[1])
            self.relay.down.sendto(pkt, self.addr)
            return
        out = pkt
        retire_mode = self.flood and self.relay.a.mode == "new-cid-retire"
        if self.s2c and self.client_scid is not None:
            cl = len(self.client_scid)
            opened = open_short(self.s2c, pkt, cl)
            if opened is None:
                st["undecryptable_server"] += 1
            else:
                header, pnlen, pn, plain = opened
                st["server_1rtt_decrypted"] += 1
                plain = bytearray(plain)
                changed = False
                try:
                    for t, s, e in list(walk_frames(plain)):
                        if t == 0x1B:
                            st["path_response_seen"] += 1
                        elif t == 0x19:
                            st["retire_connection_id_seen"] += 1
                            if retire_mode:
                                # the client keeps every connection ID it issued
                                plain[s:e] = b"\x00" * (e - s)
                                st["retire_connection_id_hidden"] += 1
                                changed = True
                        elif t in (0x1C, 0x1D):
                            code, _ = varint_dec(plain, s + 1)
                            st["connection_close_seen"].append(code)
                except ValueError as ex:
                    st.setdefault("parse_errors", []).append(str(ex))
                if retire_mode and header[1:1 + cl] != self.client_scid:
                    header = header[:1] + self.client_scid + header[1 + cl:]
                    st["server_dcid_rewritten"] += 1
                    changed = True
                if changed:
                    out = seal_short(self.s2c, header, pnlen, pn, bytes(plain), cl)
        self.relay.down.sendto(out, self.addr)


class Relay:
    def __init__(self, a):
        self.a = a
        self.server = (a.server.rsplit(":", 1)[0], int(a.server.rsplit(":", 1)[1]))
        self.down = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.down.bind(("127.0.0.1", a.listen))
        self.down.setblocking(False)
        self.conns = {}
        self.cid_seq = 1 << 20  # far above any sequence number the client uses itself
        self.pc_data = 0
        self.st = {"connections": 0, "client_packets": 0, "client_1rtt_decrypted": 0,
                   "server_1rtt_decrypted": 0, "undecryptable_client": 0, "undecryptable_server": 0,
                   "packets_injected": 0, "path_challenge_sent": 0, "new_connection_id_sent": 0,
                   "path_response_seen": 0, "retire_connection_id_seen": 0, "retire_connection_id_hidden": 0,
                   "server_dcid_rewritten": 0, "connection_close_seen": [], "suite": None}

    def frames_to_add(self, room, client_scid):
        out = bytearray()
        mode = self.a.mode
        if mode == "path-challenge":
            while len(out) + 9 <= room:
                self.pc_data += 1
                out += b"\x1a" + self.pc_data.to_bytes(8, "big")
                self.st["path_challenge_sent"] += 1
        elif mode in ("new-cid-limit", "new-cid-retire"):
            cidlen = len(client_scid) if client_scid else 8
            per = 1 if mode == "new-cid-limit" else self.a.per_packet
            for _ in range(per):
                seq = self.cid_seq
                rpt = 0 if mode == "new-cid-limit" else seq
                fr = (b"\x18" + varint_enc(seq) + varint_enc(rpt) + bytes([cidlen]) +
                      os.urandom(cidlen) + os.urandom(16))
                if len(out) + len(fr) > room:
                    break
                out += fr
                self.cid_seq += 1
                self.st["new_connection_id_sent"] += 1
        return bytes(out)

    def on_down(self):
        pkt, addr = self.down.recvfrom(65535)
        c = self.conns.get(addr)
        if c is None:
            c = self.conns[addr] = Conn(self, addr, len(self.conns))
            self.st["connections"] = len(self.conns)
            self.sel.register(c.up, selectors.EVENT_READ, c)
        c.from_client(pkt)

    def run(self):
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.down, selectors.EVENT_READ, None)
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        signal.signal(signal.SIGINT, lambda *_: stop.append(1))
        if self.a.ready:
            with open(self.a.ready + ".tmp", "w") as f:
                f.write("ready %d\n" % self.down.getsockname()[1])
            os.rename(self.a.ready + ".tmp", self.a.ready)
        while not stop:
            for key, _ in self.sel.select(0.2):
                try:
                    if key.data is None:
                        self.on_down()
                    else:
                        pkt, _ = key.data.up.recvfrom(65535)
                        key.data.from_server(pkt)
                except (BlockingIOError, ConnectionRefusedError):
                    pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--listen", type=int, required=True, help="UDP port on 127.0.0.1 for the client")
    ap.add_argument("--server", required=True, help="HOST:PORT of the QUIC server")
    ap.add_argument("--keylog", required=True, help="the client's SSLKEYLOGFILE")
    ap.add_argument("--mode", default="none",
                    choices=["none", "path-challenge", "new-cid-limit", "new-cid-retire"])
    ap.add_argument("--after", type=int, default=20, help="client 1-RTT packets relayed untouched first")
    ap.add_argument("--max-datagram", type=int, default=1400, help="size up to which client packets are filled")
    ap.add_argument("--max-packets", type=int, default=1 << 30, help="packets to add frames to at most")
    ap.add_argument("--flood-connections", type=int, default=1,
                    help="how many of the client's connections (in order of arrival) get frames added")
    ap.add_argument("--per-packet", type=int, default=4, help="new-cid-retire: NEW_CONNECTION_ID frames per packet")
    ap.add_argument("--stats", required=True, help="JSON counters written here at exit")
    ap.add_argument("--ready", help="file written once the relay listens")
    a = ap.parse_args()
    r = Relay(a)
    try:
        r.run()
    finally:
        with open(a.stats, "w") as f:
            json.dump(r.st, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
