#!/usr/bin/python3
# SPDX-License-Identifier: MIT OR Apache-2.0
"""An independent client of signed queries and signed results, written from
docs/SIGNATURES.md alone (python grpcio + python cryptography), against
amaters-netd with [auth] require_client_signature and sign_results.

    /usr/bin/python3 sig_client.py --netd build/amaters-netd --dir /tmp/sigpki

It starts the daemon on a free port with a development PKI in DIR, issues an
Ed25519 client certificate from the same CA with certtool, and checks:
  * queries signed here with the ECDSA P-256 key (the development PKI's) and
    with the Ed25519 key are accepted (Execute, and each message of
    ExecuteStream);
  * an unsigned query, a signature over other bytes, a signature made with
    the other key, a stale timestamp and a replayed nonce are refused with
    UNAUTHENTICATED and the documented reason;
  * the server_proof of each Execute result verifies against the server's
    certificate, and a tampered proof or result is detected.
The last line is "sig_client: N passed, N failed"; exit status 1 on a failure.
"""
import argparse
import hashlib
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

EXECUTE = "/amaters.v1.AmateRS/Execute"
EXECUTE_STREAM = "/amaters.v1.AmateRS/ExecuteStream"

# --- docs/SIGNATURES.md ------------------------------------------------------
QUERY_DOMAIN = b"amaters-net query signature v1\x00"
PROOF_DOMAIN = b"amaters-net result proof v1\x00"
VERSION = 1
ALG_P256, ALG_P384, ALG_ED25519, ALG_RSA_PSS = 1, 2, 3, 4


def alg_of(key):
    """The algorithm code a private or public key implies."""
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return {"secp256r1": ALG_P256, "secp384r1": ALG_P384}[key.curve.name]
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return ALG_ED25519
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return ALG_RSA_PSS
    raise ValueError("unsupported key type")


def _pss():
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


def sign_bytes(key, alg, data):
    if alg == ALG_P256:
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    if alg == ALG_P384:
        return key.sign(data, ec.ECDSA(hashes.SHA384()))
    if alg == ALG_ED25519:
        return key.sign(data)
    return key.sign(data, _pss(), hashes.SHA256())


def verify_bytes(pub, alg, sig, data):
    """Raises InvalidSignature (or ValueError) unless sig is valid."""
    if alg_of(pub) != alg:
        raise ValueError("algorithm does not match the key")
    if alg == ALG_P256:
        pub.verify(sig, data, ec.ECDSA(hashes.SHA256()))
    elif alg == ALG_P384:
        pub.verify(sig, data, ec.ECDSA(hashes.SHA384()))
    elif alg == ALG_ED25519:
        pub.verify(sig, data)
    else:
        pub.verify(sig, data, _pss(), hashes.SHA256())


def _method(method):
    m = method.encode("ascii")
    return struct.pack(">H", len(m)) + m


def query_signed_bytes(alg, method, ts_ms, nonce, query_bytes):
    return (QUERY_DOMAIN + bytes([alg]) + _method(method) + struct.pack(">Q", ts_ms) + nonce
            + hashlib.sha256(query_bytes).digest())


def client_signature(key, method, query_bytes, ts_ms=None, nonce=None):
    """The value of QueryRequest.client_signature."""
    alg = alg_of(key)
    ts_ms = int(time.time() * 1000) if ts_ms is None else ts_ms
    nonce = os.urandom(16) if nonce is None else nonce
    sig = sign_bytes(key, alg, query_signed_bytes(alg, method, ts_ms, nonce, query_bytes))
    return bytes([VERSION, alg]) + struct.pack(">Q", ts_ms) + nonce + sig


def verify_proof(server_cert, method, query_bytes, result_bytes, proof):
    """Raises unless proof is the server's valid server_proof."""
    if len(proof) < 11 or proof[0] != VERSION:
        raise ValueError("malformed proof")
    alg, ts_ms, sig = proof[1], struct.unpack(">Q", proof[2:10])[0], proof[10:]
    data = (PROOF_DOMAIN + bytes([alg]) + _method(method) + struct.pack(">Q", ts_ms)
            + hashlib.sha256(query_bytes).digest() + hashlib.sha256(result_bytes).digest())
    verify_bytes(server_cert.public_key(), alg, sig, data)


# --- protobuf: two bytes fields ------------------------------------------
def _varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def encode_pair(f1, f2=b""):
    out = b""
    for num, v in ((1, f1), (2, f2)):
        if v:
            out += _varint(num << 3 | 2) + _varint(len(v)) + v
    return out


def _read_varint(buf, i):
    n = shift = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def decode_pair(buf):
    f, i = {}, 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        n, i = _read_varint(buf, i)
        f[key >> 3] = bytes(buf[i:i + n])
        i += n
    return f.get(1, b""), f.get(2, b"")


# --- the test run ----------------------------------------------------------
class Run:
    def __init__(self):
        self.passed = self.failed = 0

    def check(self, name, cond, detail=""):
        if cond:
            self.passed += 1
            print("ok   " + name)
        else:
            self.failed += 1
            print("FAIL " + name + (": " + detail if detail else ""))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_key(path):
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def channel(d, port, cert, key):
    creds = grpc.ssl_channel_credentials(
        root_certificates=open(os.path.join(d, "ca.pem"), "rb").read(),
        private_key=open(key, "rb").read(), certificate_chain=open(cert, "rb").read())
    return grpc.secure_channel("localhost:%d" % port, creds)


def execute(ch, query, sig=b""):
    """(status code, details, result, proof)."""
    call = ch.unary_unary(EXECUTE)
    try:
        resp = call(encode_pair(query, sig), timeout=20)
        r, p = decode_pair(resp)
        return grpc.StatusCode.OK, "", r, p
    except grpc.RpcError as e:
        return e.code(), e.details() or "", b"", b""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--netd", required=True)
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()
    d = a.dir or tempfile.mkdtemp(prefix="amn-sig-py-")
    os.makedirs(d, exist_ok=True)
    port = free_port()
    conf = os.path.join(d, "netd.toml")
    with open(conf, "w") as f:
        f.write("[auth]\nrequire_client_signature = true\nsignature_window_ms = 10000\nsign_results = true\n")
    log = open(os.path.join(d, "netd.log"), "w+")
    netd = subprocess.Popen([a.netd, "--config", conf, "--pki-dir", d, "--listen", "127.0.0.1:%d" % port,
                             "--transport", "h2", "--threads", "2"], stdout=log, stderr=subprocess.STDOUT)
    run = Run()
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            log.seek(0)
            if "listening on" in log.read():
                break
            if netd.poll() is not None:
                raise SystemExit("amaters-netd exited early")
            time.sleep(0.05)
        # an Ed25519 client certificate from the same CA
        ed_key, ed_cert, tmpl = (os.path.join(d, n) for n in ("ed-key.pem", "ed.pem", "ed.tmpl"))
        with open(tmpl, "w") as f:
            f.write('cn = "python ed25519 client"\ntls_www_client\nsigning_key\nexpiration_days = 2\n')
        subprocess.run(["certtool", "--generate-privkey", "--key-type", "ed25519", "--outfile", ed_key],
                       check=True, capture_output=True)
        subprocess.run(["certtool", "--generate-certificate", "--load-privkey", ed_key, "--load-ca-certificate",
                        os.path.join(d, "ca.pem"), "--load-ca-privkey", os.path.join(d, "ca-key.pem"),
                        "--template", tmpl, "--outfile", ed_cert], check=True, capture_output=True)
        server_cert = x509.load_pem_x509_certificate(open(os.path.join(d, "server.pem"), "rb").read())
        p256 = load_key(os.path.join(d, "client-key.pem"))
        ed = load_key(ed_key)
        run.check("development client key is ECDSA P-256", alg_of(p256) == ALG_P256)
        ch_p = channel(d, port, os.path.join(d, "client.pem"), os.path.join(d, "client-key.pem"))
        ch_e = channel(d, port, ed_cert, ed_key)

        for name, ch, key in (("p256", ch_p, p256), ("ed25519", ch_e, ed)):
            q = b"query signed in python with " + name.encode()
            code, det, res, proof = execute(ch, q, client_signature(key, EXECUTE, q))
            run.check("%s: signed query accepted" % name, code == grpc.StatusCode.OK and res == q, "%s %s" % (code, det))
            try:
                verify_proof(server_cert, EXECUTE, q, res, proof)
                run.check("%s: server proof verifies" % name, True)
            except Exception as e:  # noqa: BLE001 - any failure is the finding
                run.check("%s: server proof verifies" % name, False, repr(e))
            # tampering with the proof, the result or the query is detected
            for what, args in (("proof byte", (q, res, proof[:-1] + bytes([proof[-1] ^ 1]))),
                               ("result", (q, res + b"!", proof)),
                               ("query", (q + b"!", res, proof))):
                try:
                    verify_proof(server_cert, EXECUTE, *args)
                    run.check("%s: tampered %s detected" % (name, what), False, "verified")
                except (InvalidSignature, ValueError):
                    run.check("%s: tampered %s detected" % (name, what), True)

        def refused(name, ch, q, sig, reason):
            code, det, _, _ = execute(ch, q, sig)
            run.check(name, code == grpc.StatusCode.UNAUTHENTICATED and reason in det, "%s %r" % (code, det))

        refused("unsigned query refused", ch_p, b"q", b"", "client signature missing")
        refused("signature over other bytes refused", ch_p, b"q2", client_signature(p256, EXECUTE, b"q1"),
                "client signature does not verify")
        refused("signature for another method refused", ch_p, b"q", client_signature(p256, EXECUTE_STREAM, b"q"),
                "client signature does not verify")
        refused("signature by the other key refused", ch_p, b"q", client_signature(ed, EXECUTE, b"q"),
                "client signature algorithm does not match")
        now = int(time.time() * 1000)
        refused("stale timestamp refused", ch_p, b"q", client_signature(p256, EXECUTE, b"q", ts_ms=now - 60000),
                "client signature stale")
        sig = client_signature(p256, EXECUTE, b"once")
        code, det, _, _ = execute(ch_p, b"once", sig)
        run.check("first use of a nonce accepted", code == grpc.StatusCode.OK, "%s %s" % (code, det))
        refused("replayed nonce refused", ch_p, b"once", sig, "client signature replayed")

        # ExecuteStream: each message signed on its own
        msgs = [b"s1", b"s2", b"s3"]
        reqs = iter([encode_pair(m, client_signature(ed, EXECUTE_STREAM, m)) for m in msgs])
        try:
            got = [decode_pair(r)[0] for r in ch_e.stream_stream(EXECUTE_STREAM)(reqs, timeout=20)]
            run.check("signed stream messages accepted", got == msgs, repr(got))
        except grpc.RpcError as e:
            run.check("signed stream messages accepted", False, "%s %s" % (e.code(), e.details()))
        reqs = iter([encode_pair(b"s1", client_signature(ed, EXECUTE_STREAM, b"s1")), encode_pair(b"s2")])
        try:
            got = list(ch_e.stream_stream(EXECUTE_STREAM)(reqs, timeout=20))
            run.check("unsigned stream message refused", False, "stream ended OK")
        except grpc.RpcError as e:
            run.check("unsigned stream message refused",
                      e.code() == grpc.StatusCode.UNAUTHENTICATED and "missing" in (e.details() or ""),
                      "%s %s" % (e.code(), e.details()))
        ch_p.close()
        ch_e.close()
    finally:
        netd.terminate()
        netd.wait(timeout=20)
    print("sig_client: %d passed, %d failed" % (run.passed, run.failed))
    return 1 if run.failed or run.passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
