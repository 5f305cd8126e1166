#!/usr/bin/env python3
# SPDX-License-Identifier: MIT OR Apache-2.0
"""lb_pki.py PKI_DIR: certificates for the load-balancer tests, issued by the
development CA of PKI_DIR (ca.pem, ca-key.pem), written next to it:
  lb.pem / lb-key.pem           the proxy: CN=amaters-lb, SAN DNS:lb.test, IP:127.0.0.1,
                                serverAuth + clientAuth (it faces the clients
                                and is a client of the backends)
  alice.pem / alice-key.pem     a client: CN=alice, clientAuth
  expired.pem / expired-key.pem a client whose certificate expired yesterday
  noeku.pem / noeku-key.pem     a client certificate with serverAuth only
  other-ca.pem, stranger.pem / stranger-key.pem
                                a client of another CA (clientAuth)
"""
import datetime, ipaddress, os, sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

d = sys.argv[1]
now = datetime.datetime.now(datetime.timezone.utc)


def load(name):
    with open(os.path.join(d, name), "rb") as f:
        return f.read()


def write(name, data, private=False):
    p = os.path.join(d, name)
    with open(p, "wb") as f:
        f.write(data)
    if private:
        os.chmod(p, 0o600)


def issue(name, cn, ekus, ca_cert, ca_key, sans=(), days=(-1, 30), is_ca=False):
    key = ec.generate_private_key(ec.SECP256R1())
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
         .issuer_name(ca_cert.subject if ca_cert else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now + datetime.timedelta(days=days[0]))
         .not_valid_after(now + datetime.timedelta(days=days[1]))
         .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True))
    if is_ca:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
    else:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        b = b.add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
    if sans:
        names = [x509.DNSName(s) for s in sans] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = b.sign(ca_key or key, hashes.SHA256())
    write(name + ".pem", cert.public_bytes(serialization.Encoding.PEM))
    write(name + "-key.pem", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()), private=True)
    return cert, key


ca = x509.load_pem_x509_certificate(load("ca.pem"))
ca_key = serialization.load_pem_private_key(load("ca-key.pem"), None)
C, S = ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH
issue("lb", "amaters-lb", [S, C], ca, ca_key, sans=["lb.test", "localhost"])
issue("alice", "alice", [C], ca, ca_key)
issue("expired", "expired-client", [C], ca, ca_key, days=(-30, -1))
issue("noeku", "no-client-auth", [S], ca, ca_key)
other, other_key = issue("other-ca", "another CA", [], None, None, is_ca=True)
issue("stranger", "stranger", [C], other, other_key)
