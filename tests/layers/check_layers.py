#!/usr/bin/env python3
# SPDX-License-Identifier: MIT OR Apache-2.0
"""The layer rule of amaters-net, checked from the source and the objects.

Layers, lowest first (docs/ARCHITECTURE.md):

    util -> tls -> rpc -> transport -> transport/h2 | transport/h3 -> server | client

A file may use (include a header of, or call a function defined in) its own
directory and the layers below it, never a layer above it nor a sibling
(h2 and h3 know nothing of each other, server and client neither). Public
headers under include/amn/ belong to the layer that implements them.

Three checks:
  include  every quoted #include in src/ and include/amn/
  symbol   every undefined symbol of an object file of the library, resolved
           to the object that defines it (so a call through a header of a
           lower layer, or through a bare extern declaration, still counts)
  cycle    module circles: strongly connected groups of files that depend on
           each other through symbols
and one rule of its own for rpc/: it is sans-I/O, so its objects may not
call libev, pthread, or read the clock.

Existing violations are listed in known_violations.txt next to this script
while the layering work removes them: the check fails on any violation not
listed there, and on any listed one that no longer exists (so the list only
shrinks). `--self-test` builds a small tree with deliberate violations and
checks that each is reported.

usage: check_layers.py SRC_ROOT OBJECT... [--known FILE]
       check_layers.py --self-test
"""
import os
import re
import subprocess
import sys
import tempfile

LAYERS = {  # directory (relative to src/) -> rank
    "util": 0,
    "proto": 0,  # protobuf-c generated messages
    "tls": 1,
    "rpc": 2,
    "transport": 3,  # the binding interfaces (stransport.h, ctransport.h)
    "transport/h2": 4,
    "transport/h3": 4,
    "server": 5,
    "client": 5,
}
PUBLIC = {  # include/amn/<header> -> the layer implementing it
    "common.h": "util",
    "proto.h": "util",
    "config.h": "util",
    "pki.h": "tls",
    "server.h": "server",
    "client.h": "client",
    "amn.h": None,  # the umbrella: programs only
}
# rpc/ is sans-I/O: time is passed in, no event loop, no threads
RPC_FORBIDDEN = re.compile(r"^(ev_|pthread_|clock_gettime$|gettimeofday$|time$|nanosleep$|usleep$|sleep$)")

INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def layer_of_src(rel):
    """Layer of a file given relative to the project root, or None."""
    if rel.startswith("include/amn/"):
        return PUBLIC.get(rel[len("include/amn/"):], None)
    if rel.endswith(".pb-c.c") or rel.endswith(".pb-c.h"):
        return "proto"
    if not rel.startswith("src/"):
        return None
    d = os.path.dirname(rel[len("src/"):])
    return d if d in LAYERS else None


def may_use(a, b):
    """May a file of layer a use layer b?"""
    if a is None or b is None or a == b:
        return True
    return LAYERS[b] < LAYERS[a]


def include_violations(root):
    out = []
    files = []
    for top in ("src", "include/amn"):
        for dp, _, fns in os.walk(os.path.join(root, top)):
            for fn in fns:
                if fn.endswith((".c", ".h")):
                    files.append(os.path.relpath(os.path.join(dp, fn), root))
    for rel in sorted(files):
        la = layer_of_src(rel)
        with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as f:
            text = f.read()
        if la == "rpc":
            for sysinc in re.findall(r"^\s*#\s*include\s+<([^>]+)>", text, re.M):
                if sysinc in ("ev.h", "pthread.h", "time.h", "sys/time.h"):
                    out.append("include %s -> <%s>" % (rel, sysinc))
        for inc in INCLUDE_RE.findall(text):
            if inc.endswith(".pb-c.h"):
                target = "proto/" + inc
                lb = "proto"
            elif inc.startswith("amn/"):
                target = "include/" + inc
                lb = layer_of_src(target)
                if lb is None and la is not None:
                    out.append("include %s -> %s" % (rel, target))
                    continue
            elif rel.startswith("include/amn/"):
                target = "include/amn/" + inc
                lb = layer_of_src(target)
            else:
                target = "src/" + inc
                lb = layer_of_src(target)
            if not may_use(la, lb):
                out.append("include %s -> %s" % (rel, target))
    return out


def obj_source(path):
    """Maps an object path to the source it was built from (relative)."""
    p = path.replace(os.sep, "/")
    m = re.search(r"/(src/.+\.c)\.o$", p)
    if m:
        return m.group(1)
    m = re.search(r"/([^/]+\.pb-c\.c)\.o$", p)
    if m:
        return "proto/" + m.group(1)
    return None


def read_symbols(objs):
    """{source: (defined set, undefined set)} from nm."""
    res = {}
    for o in objs:
        src = obj_source(o)
        if not src:
            continue
        r = subprocess.run(["nm", "-P", o], capture_output=True, text=True, check=True)
        defined, undefined = set(), set()
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) < 2:
                continue
            name, kind = parts[0], parts[1]
            if kind == "U":
                undefined.add(name)
            elif kind in ("T", "D", "B", "R", "C", "V", "W", "G", "S"):
                defined.add(name)
        res[src] = (defined, undefined)
    return res


def layer_of_obj(src):
    if src.startswith("proto/"):
        return "proto"
    return layer_of_src(src)


def symbol_graph(syms):
    owner = {}
    for src, (defined, _) in syms.items():
        for s in defined:
            owner[s] = src
    edges = {}  # (a, b) -> sorted symbol list
    rpc_calls = []
    for src, (_, undefined) in syms.items():
        for s in sorted(undefined):
            if layer_of_obj(src) == "rpc" and RPC_FORBIDDEN.match(s):
                rpc_calls.append("io %s -> %s" % (src, s))
            b = owner.get(s)
            if b and b != src:
                edges.setdefault((src, b), []).append(s)
    return edges, rpc_calls


def symbol_violations(edges):
    out = []
    for (a, b), ss in sorted(edges.items()):
        if not may_use(layer_of_obj(a), layer_of_obj(b)):
            out.append("call %s -> %s (%s)" % (a, b, ", ".join(ss[:3]) + (", ..." if len(ss) > 3 else "")))
    return out


def cycles(edges):
    """Strongly connected components of more than one file (Tarjan)."""
    graph = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index, low, stack, on, comps = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            strong(v)
    return ["cycle " + " ".join(c) for c in sorted(comps)]


def check(root, objs, known_path):
    found = include_violations(root)
    syms = read_symbols(objs)
    if not syms:
        print("no object files of the library were given")
        return 1
    edges, rpc_calls = symbol_graph(syms)
    found += symbol_violations(edges) + rpc_calls + cycles(edges)
    known = set()
    if known_path and os.path.exists(known_path):
        with open(known_path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    known.add(line)
    # a symbol line is known by its files, whatever symbols it lists
    def key(v):
        return re.sub(r" \(.*\)$", "", v)
    known_keys = {key(k) for k in known}
    found_keys = {key(v) for v in found}
    new = [v for v in found if key(v) not in known_keys]
    stale = sorted(k for k in known if key(k) not in found_keys)
    print("%d files, %d objects, %d dependencies between files" %
          (len({a for a, _ in edges} | {b for _, b in edges}), len(syms), len(edges)))
    print("%d violations, %d of them listed as known" % (len(found), len(found) - len(new)))
    for v in new:
        print("NEW  " + v)
    for k in stale:
        print("GONE " + k + "   (remove it from %s)" % os.path.basename(known_path or "the known list"))
    ok = not new and not stale
    print("%d passed, %d failed" % (1 if ok else 0, 0 if ok else 1))
    return 0 if ok else 1


def self_test():
    """A small tree with one violation of each kind must be caught."""
    with tempfile.TemporaryDirectory() as d:
        files = {
            "src/util/u.c": '#include "server/s.h"\nint amn_u(void) { return 1; }\nint amn_s(void);\n'
                            'int amn_u2(void) { return amn_s(); }\n',
            "src/server/s.h": "int amn_s(void);\n",
            "src/server/s.c": '#include "util/u.h"\nint amn_u(void);\nint amn_s(void) { return amn_u(); }\n',
            "src/util/u.h": "int amn_u(void);\n",
            "src/rpc/r.c": "#include <time.h>\nlong amn_r(void) { return (long)time(0); }\n",
            "src/transport/h2/a.c": '#include "transport/h3/b.h"\nint amn_b(void);\nint amn_a(void) { return amn_b(); }\n',
            "src/transport/h3/b.h": "int amn_b(void);\n",
            "src/transport/h3/b.c": "int amn_b(void) { return 2; }\n",
            "src/client/c1.c": "int amn_c2(void);\nint amn_c1(int n) { return n ? amn_c2() : 0; }\n",
            "src/client/c2.c": "int amn_c1(int);\nint amn_c2(void) { return amn_c1(0); }\n",
        }
        objs = []
        for rel, text in files.items():
            p = os.path.join(d, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w") as f:
                f.write(text)
        for rel in files:
            if rel.endswith(".c"):
                o = os.path.join(d, "obj", rel + ".o")
                os.makedirs(os.path.dirname(o), exist_ok=True)
                subprocess.run(["cc", "-c", "-I", os.path.join(d, "src"), "-o", o, os.path.join(d, rel)],
                               check=True)
                objs.append(o)
        found = include_violations(d)
        edges, rpc_calls = symbol_graph(read_symbols(objs))
        found += symbol_violations(edges) + rpc_calls + cycles(edges)
        want = [
            "include src/util/u.c -> src/server/s.h",
            "include src/rpc/r.c -> <time.h>",
            "include src/transport/h2/a.c -> src/transport/h3/b.h",
            "call src/util/u.c -> src/server/s.c (amn_s)",
            "call src/transport/h2/a.c -> src/transport/h3/b.c (amn_b)",
            "io src/rpc/r.c -> time",
            "cycle src/server/s.c src/util/u.c",
            "cycle src/client/c1.c src/client/c2.c",
        ]
        missing = [w for w in want if w not in found]
        extra = [f for f in found if f not in want]
        for w in missing:
            print("not caught: " + w)
        for f in extra:
            print("reported but not a violation: " + f)
        # a clean tree is clean: the server may use util
        ok = not missing and not extra and may_use("server", "util") and not may_use("client", "server")
        print("%d passed, %d failed" % (1 if ok else 0, 0 if ok else 1))
        return 0 if ok else 1


def main(argv):
    if argv[1:] == ["--self-test"]:
        return self_test()
    args = argv[1:]
    known = None
    if "--known" in args:
        i = args.index("--known")
        known = args[i + 1]
        del args[i:i + 2]
    if len(args) < 2:
        print(__doc__)
        return 2
    objs = []
    for a in args[1:]:
        objs += [o for o in a.split(";") if o]
    return check(args[0], objs, known)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
