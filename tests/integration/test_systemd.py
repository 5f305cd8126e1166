#!/usr/bin/env python3
# SPDX-License-Identifier: MIT OR Apache-2.0
"""test_systemd.py MODE BUILD_DIR: amaters-netd under a service manager played by this script.

The script is the service manager: an AF_UNIX datagram socket is the daemon's NOTIFY_SOCKET (the
sender of each notification is checked with SO_PASSCRED: the daemon's own pid), the daemon is
started with fork + exec, and every wait is on an event (a notification, the child's pidfd, a
command's exit), with a deadline; no sleep.

MODE notify (integration.systemd_notify):
  - READY=1 comes once the daemon serves: right after it, real calls over HTTP/2 and HTTP/3
    (amaters-cli) and GET /healthz on the admin listener succeed; STATUS names the port;
  - with WATCHDOG_USEC (and WATCHDOG_PID of the child) WATCHDOG=1 keeps coming, with STATUS lines
    that count connections and calls;
  - SIGHUP: RELOADING=1 with MONOTONIC_USEC (CLOCK_MONOTONIC, between the signal and the answer),
    then READY=1 with a STATUS naming the reload;
  - SIGTERM: STOPPING=1 with STATUS "draining", then exit 0.
MODE activation (integration.socket_activation):
  - the script binds a TCP (listening) and a UDP socket on 127.0.0.1 and one ephemeral port and
    passes them as LISTEN_FDS (UDP first) with LISTEN_PID of the child and LISTEN_FDNAMES; the
    daemon's --listen names a port the script holds, so binding it would fail: calls over HTTP/2
    (several, over two event loops) and HTTP/3 succeed on the passed sockets;
  - wrong sockets are refused at start, exit 2, with a message naming the problem and no READY:
    LISTEN_PID of another process, a TCP socket alone for transport "both", a UDP socket alone for
    transport "h2", a pipe instead of a socket, a TCP socket that does not listen.
MODE reload (integration.reload): a configuration file, SIGHUP after each change (the READY=1 that
ends the reload is awaited):
  - server.log_level info -> debug (debug lines follow), server.max_message_bytes -> 1000 (a 2000-byte
    request that passed before now fails with RESOURCE_EXHAUSTED), log.access false -> true (an
    access line per call), server.threads 1 -> 2 (logged as needing a restart with its FILE:LINE;
    the server keeps one loop): one log line per changed key;
  - a file that does not parse: the reload fails with FILE:LINE, the previous configuration keeps
    serving (small calls pass, the 1000-byte limit holds), STATUS says FAILED;
  - TLS files that do not load: the same, the running certificate stays.
"""
import array
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

mode, bindir = sys.argv[1], os.path.abspath(sys.argv[2])
netd, cli = os.path.join(bindir, "amaters-netd"), os.path.join(bindir, "amaters-cli")
work = tempfile.mkdtemp(prefix="amn-sd-")
os.chdir(work)
failed = 0


def ok(msg):
    print("ok:", msg, flush=True)


def bad(msg):
    global failed
    failed += 1
    print("FAIL:", msg, flush=True)


def check(cond, msg, detail=""):
    if cond:
        ok(msg)
    else:
        bad(msg + (": " + detail if detail else ""))
    return cond


subprocess.run([cli, "certs", "init", "pki"], check=True, stdout=subprocess.DEVNULL)


class Manager:
    """A service manager's side of sd_notify, and the daemon it starts."""

    def __init__(self):
        self.path = os.path.join(work, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(self.path)
        self.msgs = []  # (fields dict, sender pid)
        self.pid = None
        self.pidfd = None
        self.status = None

    def spawn(self, args, log, fds=(), fdnames=None, listen_pid=None, watchdog_usec=None):
        """Starts amaters-netd ARGS with stdout and stderr into LOG; FDS (sockets or descriptors)
        become 3, 4, ... with LISTEN_FDS; listen_pid "child" (default with fds) or a number."""
        env = dict(os.environ)
        for k in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(k, None)
        env["NOTIFY_SOCKET"] = self.path
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        raw = [f if isinstance(f, int) else f.fileno() for f in fds]
        if raw:
            env["LISTEN_FDS"] = str(len(raw))
            if fdnames:
                env["LISTEN_FDNAMES"] = ":".join(fdnames)
        while select.select([self.sock], [], [], 0)[0]:  # a previous daemon's last words
            self.sock.recv(4096)
        self.msgs = []
        self.status = None
        pid = os.fork()
        if pid == 0:
            try:
                out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(out, 1)
                os.dup2(out, 2)
                high = [os.dup(f) for f in raw]  # out of the way of 3, 4, ...
                for i, f in enumerate(high):
                    os.dup2(f, 3 + i)  # inheritable
                if raw:
                    env["LISTEN_PID"] = str(os.getpid() if listen_pid in (None, "child") else listen_pid)
                if "WATCHDOG_USEC" in env:
                    env["WATCHDOG_PID"] = str(os.getpid())
                os.execve(netd, [netd] + args, env)
            finally:
                os._exit(127)
        self.pid = pid
        self.pidfd = os.pidfd_open(pid)
        return pid

    def _recv(self):
        data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        sender = None
        for level, typ, cdata in anc:
            if level == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS:
                sender = struct.unpack("iII", cdata[:12])[0]
        fields = {}
        for line in data.decode().split("\n"):
            if "=" in line:
                k, v = line.split("=", 1)
                fields[k] = v
        self.msgs.append((fields, sender))
        return fields, sender

    def wait(self, pred, what, timeout=30):
        """The next notification for which pred(fields) holds (earlier ones are kept in msgs);
        None when the daemon exits or the deadline passes."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                bad(f"no {what} within {timeout} s")
                return None
            r, _, _ = select.select([self.sock, self.pidfd], [], [], left)
            if self.sock in r:
                fields, sender = self._recv()
                if sender != self.pid:
                    bad(f"a notification from pid {sender}, not the daemon's {self.pid}: {fields}")
                if pred(fields):
                    return fields
                continue
            if self.pidfd in r:
                while select.select([self.sock], [], [], 0)[0]:
                    fields, _ = self._recv()
                    if pred(fields):
                        return fields
                bad(f"the daemon exited before {what} (status {self.reap()})")
                return None

    def reap(self, timeout=30):
        """Waits for the daemon's exit; its exit code (or -signal), or None after the deadline."""
        if self.status is not None:
            return self.status
        if not select.select([self.pidfd], [], [], timeout)[0]:
            return None
        _, st = os.waitpid(self.pid, 0)
        os.close(self.pidfd)
        self.status = os.waitstatus_to_exitcode(st)
        return self.status

    def kill(self):
        if self.status is None:
            os.kill(self.pid, signal.SIGKILL)
            self.reap()


def call(port, transport, data="hello", extra=()):
    """One Execute through amaters-cli: (exit code, output)."""
    p = subprocess.run([cli, "--pki-dir", "pki", f"https://127.0.0.1:{port}", "--transport", transport, *extra,
                        "execute", "--data", data], capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr


def healthz(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data.decode(errors="replace")


def read(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def port_of(status):
    m = re.search(r"port (\d+)", status or "")
    return int(m.group(1)) if m else None


m = Manager()


def test_notify():
    m.spawn(["--listen", "127.0.0.1:0", "--pki-dir", "pki", "--transport", "both", "--threads", "2",
             "--admin", "0"], "netd.log", watchdog_usec=600000)
    ready = m.wait(lambda f: f.get("READY") == "1", "READY=1")
    if not ready:
        print(read("netd.log"))
        return
    port = port_of(ready.get("STATUS"))
    am = re.search(r"admin port (\d+)", ready.get("STATUS", ""))
    check(port and am, "READY=1 with STATUS naming the port and the admin port", str(ready))
    # right after READY: the port answers on both transports, the admin listener too
    rc2, out2 = call(port, "h2")
    rc3, out3 = call(port, "h3")
    check(rc2 == 0 and rc3 == 0, "right after READY=1: calls over HTTP/2 and HTTP/3 succeed", out2 + out3)
    h = healthz(int(am.group(1))) if am else ""
    check(" 200 " in h.split("\r\n")[0] and h.rstrip().endswith("ok"),
          "right after READY=1: GET /healthz answers 200 ok", h[:200])
    check(all(f.get("READY") != "1" for f, _ in m.msgs[:-1]) and "listening on" in read("netd.log"),
          "READY=1 is the first readiness message, after the listeners")

    # the watchdog, and STATUS lines with the counts (notifications queued while the calls ran may
    # predate them: a later one counts both calls)
    f = m.wait(lambda f: f.get("WATCHDOG") == "1" and re.search(r"\d+ connections, 2 calls", f.get("STATUS", "")),
               "WATCHDOG=1 with STATUS counting both calls", timeout=10)
    if f and sum(1 for g, _ in m.msgs if g.get("WATCHDOG") == "1") < 2:
        f = m.wait(lambda f: f.get("WATCHDOG") == "1", "a second WATCHDOG=1", timeout=10)
    wds = sum(1 for g, _ in m.msgs if g.get("WATCHDOG") == "1")
    check(f and wds >= 2, "WATCHDOG=1 comes twice per interval, with STATUS counting connections and calls",
          str(f))

    # SIGHUP: RELOADING with MONOTONIC_USEC, then READY
    t0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    os.kill(m.pid, signal.SIGHUP)
    rl = m.wait(lambda f: f.get("RELOADING") == "1", "RELOADING=1")
    t1 = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    mono = int(rl.get("MONOTONIC_USEC", "0")) if rl else 0
    check(rl and t0 <= mono <= t1, "SIGHUP: RELOADING=1 with MONOTONIC_USEC of CLOCK_MONOTONIC at the reload",
          f"{rl} not in [{t0}, {t1}]")
    rd = m.wait(lambda f: f.get("READY") == "1", "READY=1 after the reload")
    check(rd and "reloaded at" in rd.get("STATUS", ""), "then READY=1 with STATUS naming the reload", str(rd))
    rc2, out2 = call(port, "h2")
    check(rc2 == 0, "a call after the reload succeeds", out2)

    # SIGTERM: STOPPING, then a clean exit
    os.kill(m.pid, signal.SIGTERM)
    sp = m.wait(lambda f: f.get("STOPPING") == "1", "STOPPING=1")
    check(sp and sp.get("STATUS", "").startswith("draining"), "SIGTERM: STOPPING=1 with STATUS draining", str(sp))
    check(m.reap() == 0, "then the daemon exits 0", read("netd.log")[-2000:])


def bound_pair():
    """A listening TCP socket and a UDP socket on 127.0.0.1, the same ephemeral port."""
    for _ in range(50):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
        except OSError:
            t.close()
            u.close()
            continue
        t.listen(128)
        return t, u, port
    raise RuntimeError("no free TCP+UDP port pair")


def test_activation():
    tcp, udp, port = bound_pair()
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # --listen names this: binding it would fail
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    busy = holder.getsockname()[1]
    args = ["--listen", f"127.0.0.1:{busy}", "--pki-dir", "pki", "--threads", "2"]
    m.spawn(args + ["--transport", "both"], "act.log", fds=[udp, tcp], fdnames=["grpc-udp", "grpc-tcp"])
    ready = m.wait(lambda f: f.get("READY") == "1", "READY=1 on the passed sockets")
    if ready:
        check(port_of(ready.get("STATUS")) == port, "READY=1: STATUS names the passed sockets' port", str(ready))
        log = read("act.log")
        check("socket activation: a TCP socket and a UDP socket passed" in log and
              re.search(r"listening on 127\.0\.0\.1:%d .*sockets given by the application, HTTP/3 on event loop 0"
                        % port, log), "the daemon serves the passed sockets (logged), not --listen", log[-1500:])
        res = [call(port, "h2") for _ in range(6)]
        check(all(rc == 0 for rc, _ in res), "six calls over HTTP/2 on the passed TCP socket succeed",
              "; ".join(o for _, o in res))
        rc3, out3 = call(port, "h3")
        check(rc3 == 0, "a call over HTTP/3 on the passed UDP socket succeeds", out3)
        os.kill(m.pid, signal.SIGTERM)
        check(m.reap() == 0, "SIGTERM: exit 0")
    else:
        print(read("act.log"))
        m.kill()

    def refused(what, expect, **kw):
        m.spawn(kw.pop("args", args + ["--transport", "both"]), "bad.log", **kw)
        st = m.reap()
        log = read("bad.log")
        ok_ = st == 2 and re.search(expect, log) and not any(f.get("READY") for f, _ in m.msgs)
        if st is None:
            m.kill()
        check(ok_, f"{what}: refused at start (exit 2, no READY), naming it", f"exit {st}: {log[-800:]}")

    refused("LISTEN_PID of another process", r"LISTEN_PID=1 is not this process", fds=[tcp, udp], listen_pid=1)
    refused("a TCP socket alone for transport both", r"needs a UDP socket too: only a TCP socket was given",
            fds=[tcp])
    refused("a UDP socket alone for transport h2", r"a UDP socket was given but the transport is HTTP/2 only",
            fds=[udp, tcp], args=args + ["--transport", "h2"])
    r, w = os.pipe()
    refused("a pipe instead of a socket", r"descriptor 4 \(notasocket\) is neither a listening TCP socket nor a UDP",
            fds=[tcp, r], fdnames=["grpc", "notasocket"])
    os.close(r)
    os.close(w)
    idle = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    idle.bind(("127.0.0.1", 0))
    refused("a TCP socket that does not listen", r"descriptor 3 \(grpc\) is neither a listening TCP socket",
            fds=[idle, udp], fdnames=["grpc", "grpc"])


def write_conf(path, **kv):
    """The reload test's configuration: the keys in order, so their lines are known."""
    lines = ["[server]"]
    for k in ("log_level", "threads", "max_message_bytes", "transport"):
        v = kv[k]
        lines.append(f"{k} = {v!r}".replace("'", '"') if isinstance(v, str) else f"{k} = {v}")
    lines += ["[log]", f"access = {'true' if kv['access'] else 'false'}"]
    lines += ["[tls]", 'cert_path = "pki/server.pem"', f'key_path = "{kv.get("key", "pki/server-key.pem")}"',
              'ca_path = "pki/ca.pem"']
    with open(path + ".new", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(path + ".new", path)


def test_reload():
    conf = os.path.join(work, "netd.toml")
    base = dict(log_level="info", threads=1, max_message_bytes=1048576, transport="both", access=False)
    write_conf(conf, **base)
    m.spawn(["--config", conf, "--listen", "127.0.0.1:0"], "rl.log")
    ready = m.wait(lambda f: f.get("READY") == "1", "READY=1")
    if not ready:
        print(read("rl.log"))
        return
    port = port_of(ready.get("STATUS"))
    big = "x" * 2000
    rc, out = call(port, "h2", big)
    check(rc == 0 and "debug" not in read("rl.log").lower().split("listening on")[-1] and "access" not in read("rl.log"),
          "before the reload: a 2000-byte request passes; no debug or access line", out)

    def reload(what):
        mark = len(read("rl.log"))
        n = len(m.msgs)
        os.kill(m.pid, signal.SIGHUP)
        rd = m.wait(lambda f: f.get("READY") == "1", f"READY=1 after the reload ({what})")
        return rd, read("rl.log")[mark:]

    write_conf(conf, **dict(base, log_level="debug", threads=2, max_message_bytes=1000, access=True))
    rd, log = reload("changed keys")
    check(rd and "reloaded at" in rd.get("STATUS", ""), "SIGHUP: the reload succeeds (STATUS)", str(rd))
    for key, line, word in (("server.log_level", 2, "applied"), ("server.threads", 3, "needs a restart"),
                            ("server.max_message_bytes", 4, "applied"), ("log.access", 7, "applied")):
        check(re.search(r"reload: %s changed \(.* -> .*, %s:%d\): %s" % (re.escape(key), re.escape(conf), line, word),
                        log), f"the log names {key} with FILE:LINE: {word}", log)
    check(len(re.findall(r"reload: \S+ changed", log)) == 4, "one line per changed key, no other", log)
    check(re.search(r"server\.threads changed \(1 -> 2, .*\): needs a restart, still 1", log),
          "the restart-only key says the running value")
    rc, out = call(port, "h2", big)
    check(rc != 0 and "RESOURCE_EXHAUSTED" in out, "the new limit: a 2000-byte request now fails RESOURCE_EXHAUSTED",
          out)
    rc, out = call(port, "h3", "hello")
    log = read("rl.log")
    check(rc == 0, "a small call still passes", out)
    check(re.search(r"\bdebug\b|\"level\":\"debug\"|DEBUG", log.split("reload: log.access")[-1]) is not None,
          "the new log level: debug lines follow", log[-1500:])
    check("access" in log.split("SIGHUP: configuration reloaded")[-1], "log.access on: access lines follow")
    check("listening on" in log and log.count("listening on") == 1 and "2 event loops" not in log,
          "no restart: still one event loop")

    # a file that does not parse keeps the running configuration
    with open(conf, "a") as f:
        f.write("this is = = not toml\n")
    rd, log = reload("broken file")
    check(rd and "FAILED" in rd.get("STATUS", ""), "a broken file: READY=1 with STATUS saying the reload FAILED",
          str(rd))
    check(re.search(r"SIGHUP: reload failed, still serving the previous certificate and configuration: %s:12: " % re.escape(conf), log),
          "a broken file: the error names FILE:LINE", log)
    rc, out = call(port, "h2", "hello")
    rc2, out2 = call(port, "h2", big)
    check(rc == 0 and rc2 != 0 and "RESOURCE_EXHAUSTED" in out2,
          "a broken file: the previous configuration keeps serving (small calls pass, the limit holds)", out + out2)

    # TLS files that do not load keep the running certificate (and everything else)
    write_conf(conf, **dict(base, max_message_bytes=5000, key="missing.key"))
    rd, log = reload("missing key file")
    check(rd and "FAILED" in rd.get("STATUS", "") and "reload failed" in log and "missing.key" in log,
          "TLS files that do not load: the reload fails, naming the file", log)
    rc2, _ = call(port, "h2", big)
    check(rc2 != 0, "... and nothing of it was applied (max_message_bytes still 1000)")
    os.kill(m.pid, signal.SIGTERM)
    check(m.reap() == 0, "SIGTERM: exit 0")


try:
    {"notify": test_notify, "activation": test_activation, "reload": test_reload}[mode]()
finally:
    if m.pid and m.status is None:
        m.kill()
    subprocess.run(["rm", "-rf", work])
print(f"{'FAILED' if failed else 'passed'}: {failed} failure(s)")
sys.exit(1 if failed else 0)
