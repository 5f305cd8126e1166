# record.py LISTEN_PORT TARGET_PORT OUTDIR: a TCP proxy on 127.0.0.1 that saves
# both directions of every connection as OUTDIR/cN.c2s and OUTDIR/cN.s2c.
import socket, sys, threading, os
lp, tp, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', lp)); s.listen()
n = 0
def pipe(a, b, f):
    while True:
        d = a.recv(65536)
        if not d: break
        f.write(d); f.flush(); b.sendall(d)
    try: b.shutdown(socket.SHUT_WR)
    except OSError: pass
while True:
    c, _ = s.accept(); n += 1
    u = socket.create_connection(('127.0.0.1', tp))
    threading.Thread(target=pipe, args=(c, u, open(f'{out}/c{n}.c2s', 'wb')), daemon=True).start()
    threading.Thread(target=pipe, args=(u, c, open(f'{out}/c{n}.s2c', 'wb')), daemon=True).start()
