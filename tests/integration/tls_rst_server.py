# SPDX-License-Identifier: MIT OR Apache-2.0
"""A TLS server with the development PKI's server certificate (mutual TLS,
ALPN h2) that resets every connection (SO_LINGER 0) once the handshake is
done and the client's first bytes came: a server killed under its client,
as the client sees it.
usage: tls_rst_server.py PKI_DIR PORT_FILE CONNECTIONS"""
import os
import socket
import ssl
import struct
import sys

pki, port_file, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(pki + "/server.pem", pki + "/server-key.pem")
ctx.load_verify_locations(pki + "/ca.pem")
ctx.verify_mode = ssl.CERT_REQUIRED
ctx.set_alpn_protocols(["h2"])
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(8)
with open(port_file + ".tmp", "w") as f:
    f.write(str(ls.getsockname()[1]))
os.rename(port_file + ".tmp", port_file)
for _ in range(count):
    c, _a = ls.accept()
    try:
        t = ctx.wrap_socket(c, server_side=True)
        t.recv(24)  # the client's connection preface has started
        t.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        t.close()
    except (ssl.SSLError, OSError) as e:
        print("tls_rst_server:", e, file=sys.stderr)
        c.close()
