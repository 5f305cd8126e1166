# h2_seeds.py [SERVER_OUTDIR [CLIENT_OUTDIR]]: writes the seeds of
# fuzz_h2_server (default fuzz/corpus/h2_server) and fuzz_h2_client (default
# fuzz/corpus/h2_client), made with python3-h2 (and hyperframe/hpack for what
# h2 will not send: a header block split into CONTINUATION frames, GOAWAY, a
# header block that is not HPACK, a PUSH_PROMISE).
# fuzz_h2_server: client frame sequences. Each seed is one control byte
# (bits: 0-2 write split, 3 hard stop at the end, 4 raw: the seed carries the
# connection preface itself, 5 drain halfway, 6 clock jump halfway, 7
# half-close at the end; see fuzz/fuzz_h2_server.c), then the client's bytes
# after the preface and SETTINGS the harness sends.
# fuzz_h2_client: server frame sequences answering the target's four calls
# (streams 1: Execute, 3: ExecuteStream, 5: Execute with a deadline, 7:
# Health/Check). Each seed is one control byte (bits: 0-2 write split, 3
# cancel the stream halfway, 4 raw: the seed carries the server's SETTINGS,
# 5 idempotent calls, 6 the last two calls halfway, 7 half-close at the end;
# see fuzz/fuzz_h2_client.c), then the server's bytes after the SETTINGS the
# harness sends.
# Deterministic: running it again writes the same files.
import os, sys
import h2.config, h2.connection
from hyperframe.frame import (ContinuationFrame, DataFrame, GoAwayFrame, HeadersFrame, PingFrame,
                              PushPromiseFrame)
import hpack

server_out = sys.argv[1] if len(sys.argv) > 1 else 'fuzz/corpus/h2_server'
client_out = sys.argv[2] if len(sys.argv) > 2 else 'fuzz/corpus/h2_client'
PREFACE = b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'
SERVER_SETTINGS = b'\x00\x00\x00\x04\x00\x00\x00\x00\x00'


def varint(n):
    b = bytearray()
    while True:
        if n < 0x80:
            b.append(n)
            return bytes(b)
        b.append(n & 0x7f | 0x80)
        n >>= 7


def pb(field, data):  # a length-delimited protobuf field
    return bytes([field << 3 | 2]) + varint(len(data)) + data


def grpc(msg, flag=0):  # a gRPC length-prefixed message
    return bytes([flag]) + len(msg).to_bytes(4, 'big') + msg


def query(q, sig=b''):  # amaters.v1.QueryRequest
    return pb(1, q) + (pb(2, sig) if sig else b'')


def req(path, extra=(), method='POST', ctype='application/grpc'):
    h = [(':method', method), (':scheme', 'http'), (':path', path), (':authority', 'localhost')]
    if ctype:
        h.append(('content-type', ctype))
    h.append(('te', 'trailers'))
    return h + list(extra)


class Client:
    """A python3-h2 client connection whose output becomes a seed."""

    def __init__(self):
        cfg = h2.config.H2Configuration(client_side=True, header_encoding='utf-8',
                                        validate_outbound_headers=False)
        self.c = h2.connection.H2Connection(config=cfg)
        self.c.initiate_connection()
        self.c.receive_data(SERVER_SETTINGS)  # the server's SETTINGS: we ACK them
        self.buf = self.c.data_to_send()[len(PREFACE):]

    def take(self):
        self.buf += self.c.data_to_send()

    def call(self, path, msgs=(), end=True, extra=(), **kw):
        sid = self.c.get_next_available_stream_id()
        self.c.send_headers(sid, req(path, extra, **kw), end_stream=end and not msgs)
        for i, m in enumerate(msgs):
            self.c.send_data(sid, m, end_stream=end and i == len(msgs) - 1)
        self.take()
        return sid

    def raw(self, b):
        self.take()
        self.buf += b


def write_to(out, name, ctl, body):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, name), 'wb') as f:
        f.write(bytes([ctl]) + body)


def write(name, ctl, body):
    write_to(server_out, name, ctl, body)


EXEC = '/amaters.v1.AmateRS/Execute'
STREAM = '/amaters.v1.AmateRS/ExecuteStream'
SCRIPT = '/fuzz.v1.Fuzz/Script'

# unary Execute, the echo service
c = Client()
c.call(EXEC, [grpc(query(b'hello amaters', b'sig-1'))])
write('unary-execute', 0, c.buf)

# metadata (x-echo-* comes back in the trailers, -bin is base64) and a deadline
c = Client()
c.call(EXEC, [grpc(query(b'with metadata'))],
       extra=[('grpc-timeout', '2500m'), ('x-echo-trace', 'abc123'), ('blob-bin', 'Af8'),
              ('user-agent', 'grpc-c/1.0'), ('grpc-accept-encoding', 'identity')])
write('metadata-timeout', 0x42, c.buf)  # byte-wise chunks, clock jump halfway

# ExecuteStream: three queries, one split over two DATA frames, then the end
c = Client()
sid = c.call(STREAM, end=False)
c.c.send_data(sid, grpc(query(b'q1')))
m = grpc(query(b'second query'))
c.c.send_data(sid, m[:7])
c.c.send_data(sid, m[7:])
c.c.send_data(sid, grpc(query(b'last')), end_stream=True)
c.take()
write('stream', 0x03, c.buf)

# not gRPC: GET, a wrong content-type, an unknown method, compression, timeouts
c = Client()
c.call('/', method='GET', ctype=None)
c.call(EXEC, [grpc(query(b'x'))], ctype='text/plain')
c.call('/amaters.v1.AmateRS/Nope', [grpc(query(b'x'))], extra=[('grpc-timeout', '1S')])
c.call(EXEC, [grpc(query(b'x'), 1)], extra=[('grpc-encoding', 'gzip')])
c.call(EXEC, [grpc(query(b'x'))], extra=[('grpc-timeout', '12parsecs')])
c.call(EXEC, [grpc(query(b'x'))], extra=[('grpc-timeout', '1n')])
write('refusals', 0x01, c.buf)

# a message over max_recv_message (16 KiB), a unary call with two messages,
# a request that ends inside a message, one without a message
c = Client()
c.call(EXEC, [grpc(b'')[:1] + (20000).to_bytes(4, 'big')])
c.call(EXEC, [grpc(query(b'a')) + grpc(query(b'b'))])
c.call(EXEC, [grpc(query(b'cut'))[:6]])
c.call(EXEC)
write('message-errors', 0x02, c.buf)

# RST_STREAM in the middle of a call, then a PING, SETTINGS, WINDOW_UPDATE
c = Client()
sid = c.call(STREAM, [grpc(query(b'one'))], end=False)
c.c.reset_stream(sid, 8)  # CANCEL
c.c.ping(b'12345678')
c.c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000,
                     h2.settings.SettingCodes.MAX_FRAME_SIZE: 32768,
                     h2.settings.SettingCodes.HEADER_TABLE_SIZE: 0})
c.c.increment_flow_control_window(100000)
c.call(EXEC, [grpc(query(b'after'))])
write('reset-ping-settings', 0x04, c.buf)

# health: Check (known and unknown service), Watch (stays open until the end)
c = Client()
c.call('/grpc.health.v1.Health/Check', [grpc(pb(1, b''))])
c.call('/grpc.health.v1.Health/Check', [grpc(pb(1, b'nosuch.Service'))])
c.call('/grpc.health.v1.Health/Watch', [grpc(pb(1, b'amaters.v1.AmateRS'))])
write('health', 0x80, c.buf)  # half-close at the end

# the scripted handler: pause, answer, metadata, status; a large answer; an
# answer held until after the input; a unary call of it
c = Client()
c.call(SCRIPT, [grpc(b'\x01'), grpc(b'\x00echo'), grpc(b'\x04\x00value'), grpc(b'\x03\x05bad thing')])
c.call(SCRIPT, [grpc(b'\x05\x10\x00'), grpc(b'\x05\x00\x10')])
c.call(SCRIPT, [grpc(b'\x06'), grpc(b'\x07')])
c.call('/fuzz.v1.Fuzz/Unary', [grpc(b'\x00one')])
c.c.increment_flow_control_window(1 << 20)
c.take()
write('script', 0x05, c.buf)

# the connection's memory bound: large answers the client's closed window
# keeps queued (RESOURCE_EXHAUSTED past the bound), request bytes that wait
# for room (parked), room again when the client resets calls
c = Client()
c.c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
big = [c.call(SCRIPT, [grpc(b'\x05\x3f\xff')], end=False) for _ in range(6)]
c.call(SCRIPT, [grpc(b'\x00parked')], end=False)
for sid in big[:3]:
    c.c.reset_stream(sid, 8)
c.take()
write('budget', 0x03, c.buf)

# health changes seen by a Watch; answers from another thread; a pause
# resumed from another thread
c = Client()
c.call('/grpc.health.v1.Health/Watch', [grpc(pb(1, b''))], end=False)
c.call(SCRIPT, [grpc(b'\x08\x00\x00'), grpc(b'\x08\x00\x01')], end=False)
c.call(SCRIPT, [grpc(b'\x01\x01'), grpc(b'\x00after'), grpc(b'\x09from a thread')])
write('health-threads', 0x02, c.buf)

# many calls at once, the server drains halfway (GOAWAY), then stops hard
c = Client()
for i in range(12):
    c.call(EXEC if i % 2 else STREAM, [grpc(query(b'n%d' % i))], end=i % 3 != 0)
write('many-drain', 0x28, c.buf)

# a header block in HEADERS + CONTINUATION frames, DATA, a client GOAWAY
enc = hpack.Encoder()
block = enc.encode(req(EXEC, [('x-echo-long', 'v' * 200)]))
c = Client()
hf = HeadersFrame(1, block[:40])
cf = ContinuationFrame(1, block[40:])
cf.flags.add('END_HEADERS')
df = DataFrame(1, grpc(query(b'cont')))
df.flags.add('END_STREAM')
ga = GoAwayFrame(0, last_stream_id=0, error_code=0, additional_data=b'client done')
c.raw(b''.join(f.serialize() for f in (hf, cf, df, ga)))
write('continuation-goaway', 0x06, c.buf)

# a header block that is not HPACK: COMPRESSION_ERROR, after a call in flight
c = Client()
c.call(STREAM, [grpc(query(b'in flight'))], end=False)
bad = HeadersFrame(3, b'\xff\xff\xff\xff')
bad.flags.add('END_HEADERS')
c.raw(bad.serialize())
write('bad-hpack', 0x87, c.buf)

# raw: the whole client stream, preface included; a PING flood
cfg = h2.config.H2Configuration(client_side=True, header_encoding='utf-8')
r = h2.connection.H2Connection(config=cfg)
r.initiate_connection()
r.send_headers(1, req(EXEC), end_stream=False)
r.send_data(1, grpc(query(b'raw')), end_stream=True)
pings = b''.join(PingFrame(0, b'p%07d' % i).serialize() for i in range(4))
write('raw-pings', 0x10, r.data_to_send() + pings)


# ---- fuzz_h2_client: a server answering the target's calls ----

class Server:
    """A python3-h2 server connection that received the target's four
    requests (streams 1, 3, 5, 7); its answers become a seed."""

    def __init__(self):
        ccfg = h2.config.H2Configuration(client_side=True, header_encoding='utf-8')
        cl = h2.connection.H2Connection(config=ccfg)
        cl.local_settings = h2.settings.Settings(client=True, initial_values={  # as the target's client
            h2.settings.SettingCodes.ENABLE_PUSH: 0, h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 16384,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 65536})
        cl.initiate_connection()
        for path, body, end in ((EXEC, grpc(query(b'hello')), True), (STREAM, grpc(query(b'hello')), False),
                                (EXEC, grpc(query(b'second', b'sig')), True), (HEALTH, grpc(b''), True)):
            sid = cl.get_next_available_stream_id()
            cl.send_headers(sid, req(path), end_stream=False)
            cl.send_data(sid, body, end_stream=end)
        scfg = h2.config.H2Configuration(client_side=False, header_encoding='utf-8',
                                         validate_outbound_headers=False)
        self.s = h2.connection.H2Connection(config=scfg)
        self.s.initiate_connection()
        self.first = self.s.data_to_send()  # its SETTINGS: the harness sends its own
        self.s.receive_data(cl.data_to_send())
        self.buf = self.s.data_to_send()  # the ACK of the client's SETTINGS

    def take(self):
        self.buf += self.s.data_to_send()

    def answer(self, sid, msgs, status=0, md=(), tmd=(), message=None):
        self.s.send_headers(sid, [(':status', '200'), ('content-type', 'application/grpc')] + list(md))
        for m in msgs:
            self.s.send_data(sid, grpc(m))
        t = [('grpc-status', str(status))] + list(tmd)
        if message:
            t.append(('grpc-message', message))
        self.s.send_headers(sid, t, end_stream=True)
        self.take()

    def only(self, sid, status, message=None, md=()):  # Trailers-Only
        h = [(':status', '200'), ('content-type', 'application/grpc'), ('grpc-status', str(status))]
        if message:
            h.append(('grpc-message', message))
        self.s.send_headers(sid, h + list(md), end_stream=True)
        self.take()

    def raw(self, b):
        self.take()
        self.buf += b


def cwrite(name, ctl, body):
    write_to(client_out, name, ctl, body)


HEALTH = '/grpc.health.v1.Health/Check'
RESULT = pb(1, b'hello')          # amaters.v1.QueryResponse
SERVING = b'\x08\x01'             # HealthCheckResponse{status: SERVING}

# every call answered
v = Server()
v.answer(1, [RESULT])
v.answer(3, [RESULT, pb(1, b'second')])
v.answer(5, [pb(1, b'second')], md=[('x-echo-trace', 'abc')], tmd=[('x-echo-trace', 'abc'), ('blob-bin', 'AP8')])
v.answer(7, [SERVING])
cwrite('all-ok', 0x00, v.buf)

# errors: Trailers-Only, a percent-encoded message, an HTTP error that is not gRPC
v = Server()
v.only(1, 5, 'not%20found%3A%20%E2%9C%93')
v.answer(3, [RESULT], status=13, message='stream failed')
v.only(5, 4, 'deadline exceeded')
v.s.send_headers(7, [(':status', '503'), ('content-type', 'text/html')])
v.s.send_data(7, b'<html>busy</html>', end_stream=True)
v.take()
cwrite('errors', 0x02, v.buf)

# resets: CANCEL, REFUSED_STREAM (the call never ran: sent again), and the
# server's own PING and SETTINGS on the way
v = Server()
v.s.reset_stream(1, 8)
v.s.ping(b'srvping!')
v.s.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1,
                     h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100})
v.s.reset_stream(5, 7)
v.answer(3, [RESULT])
v.s.increment_flow_control_window(1000)
v.answer(7, [SERVING])
cwrite('resets-ping-settings', 0x23, v.buf)  # idempotent calls

# GOAWAY after stream 3: streams 5 and 7 never ran (sent again, refused)
v = Server()
v.answer(1, [RESULT])
v.raw(GoAwayFrame(0, last_stream_id=3, error_code=0, additional_data=b'server shutting down').serialize())
v.answer(3, [RESULT])
cwrite('goaway-drain', 0x01, v.buf)

# too_many_pings, then the server goes away
v = Server()
v.raw(GoAwayFrame(0, last_stream_id=7, error_code=11, additional_data=b'too_many_pings').serialize())
cwrite('goaway-pings', 0x80, v.buf)

# unary protocol errors: two messages, a compressed one, one over
# max_recv_message, one cut by the end of the stream
v = Server()
v.answer(1, [RESULT, RESULT])
v.s.send_headers(5, [(':status', '200'), ('content-type', 'application/grpc')])
v.s.send_data(5, grpc(RESULT, 1))
v.s.send_headers(7, [(':status', '200'), ('content-type', 'application/grpc')])
v.s.send_data(7, b'\x00\x00\x02\x00\x00')
v.s.send_headers(3, [(':status', '200'), ('content-type', 'application/grpc')])
v.s.send_data(3, grpc(RESULT)[:4])
v.s.send_headers(3, [('grpc-status', '0')], end_stream=True)
v.take()
cwrite('message-errors', 0x05, v.buf)

# a response header block in HEADERS + CONTINUATION; then a PUSH_PROMISE,
# which the client refused in its SETTINGS
enc = hpack.Encoder()
v = Server()
block = enc.encode([(':status', '200'), ('content-type', 'application/grpc'), ('x-long', 'w' * 300)])
hf = HeadersFrame(1, block[:30])
cf = ContinuationFrame(1, block[30:])
cf.flags.add('END_HEADERS')
df = DataFrame(1, grpc(RESULT))
tf = HeadersFrame(1, enc.encode([('grpc-status', '0')]))
tf.flags.add('END_HEADERS')
tf.flags.add('END_STREAM')
pp = PushPromiseFrame(3, promised_stream_id=2, data=enc.encode([(':method', 'GET'), (':path', '/')]))
pp.flags.add('END_HEADERS')
v.raw(b''.join(f.serialize() for f in (hf, cf, df, tf, pp)))
cwrite('continuation-push', 0x06, v.buf)

# raw: the server's whole stream, its SETTINGS first; the application
# cancels the stream halfway and makes the last two calls late
v = Server()
v.answer(1, [RESULT])
v.s.send_headers(3, [(':status', '200'), ('content-type', 'application/grpc')])
v.s.send_data(3, grpc(RESULT))
v.take()
cwrite('raw-cancel-late', 0x5a, v.first + v.buf)


# ---- fuzz_h2_server: the inputs of finding 6 (docs/FUZZING.md), a send of a
# handler that passes the connection's memory bound (1327104 bytes with the
# target's options); before the fix, on_cancel ran inside that send. Five large answers (262129 bytes each) and a smaller one
# the client's closed window keeps queued bring the connection to its bound;
# then a send of a built-in service passes it.

def closed_window():  # a client whose streams' windows are closed: answers stay queued
    c = Client()
    c.c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    return c


def near_bound(c, small):
    for _ in range(5):
        c.call(SCRIPT, [grpc(b'\x05\x3f\xff')], end=False)
    c.call(SCRIPT, [grpc(small)], end=False)


# echo: an ExecuteStream answer waits for on_writable (the send buffer is
# full); the client opens that stream's window; on_writable's send passes the
# bound (was: on_cancel freed the pending answer, on_writable again)
c = closed_window()
e = c.call(STREAM, [grpc(query(b'x' * 10)), grpc(query(b'y' * 1100))], end=False)
near_bound(c, b'\x05\x03\xf0')
c.call(SCRIPT, [grpc(b'\x00')], end=False)
c.c.increment_flow_control_window(1000, stream_id=e)
c.take()
write('bound-echo-writable', 0x03, c.buf)

# health: a status change sent to a Watch passes the bound (was: the notify
# loop stepped through the watcher watch_on_cancel had freed)
c = closed_window()
c.call('/grpc.health.v1.Health/Watch', [grpc(pb(1, b''))], end=False)
near_bound(c, b'\x05\x04\x02')
c.call(SCRIPT, [grpc(b'\x08\x00\x00')], end=False)
write('bound-health-notify', 0x03, c.buf)

# health: a Watch's first status passes the bound (was: the watcher was
# registered for a cancelled call that nobody finished)
c = closed_window()
near_bound(c, b'\x05\x04\x01')
c.call(SCRIPT, [grpc(b'\x00' + b'p' * 15)], end=False)
c.call('/grpc.health.v1.Health/Watch', [grpc(pb(1, b''))], end=False)
write('bound-watch-first-status', 0x03, c.buf)
