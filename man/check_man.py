#!/usr/bin/env python3
# SPDX-License-Identifier: MIT OR Apache-2.0
"""check_man.py SOURCE_DIR AMATERS_NETD AMATERS_CLI

The man pages against the programs and the configuration parser:
  - the options of amaters-netd(8) and amaters-cli(1) are exactly the ones each
    program's --help prints and exactly the ones its option parser accepts;
  - amaters-cli's commands (the parser's table) each have an entry in --help and
    in the COMMANDS section of amaters-cli(1), and its short options (-H, -d)
    are in both;
  - the [section] keys of amaters-net.toml(5) are exactly the keys of the
    parser's table (src/util/config.c) and of examples/amaters-net.toml;
  - groff renders each page without a warning (when groff is installed).
Exits 1 naming every difference.
"""
import os, re, shutil, subprocess, sys

src, netd, cli = sys.argv[1:4]
problems = []


def read(*p):
    with open(os.path.join(src, *p), encoding="utf-8") as f:
        return f.read()


def man_options(page):
    # the examples (.EX .. .EE) may show other programs' options
    text = re.sub(r"^\.EX$.*?^\.EE$", "", read("man", page), flags=re.S | re.M).replace("\\-", "-")
    return set(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", text))


def help_options(prog):
    out = subprocess.run([prog, "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", out))


def compare(what, a_name, a, b_name, b):
    for o in sorted(a - b):
        problems.append(f"{what}: {o} is in {a_name} but not in {b_name}")
    for o in sorted(b - a):
        problems.append(f"{what}: {o} is in {b_name} but not in {a_name}")


def check_program(name, page, prog, table_re, entry_re, source):
    """The page's options == --help's == the parser's (its table, plus the flags compared one by one)."""
    code = read("tools", *source)
    table = re.search(table_re, code, re.S).group(1)
    parsed = {"--" + n for n in re.findall(entry_re, table)}
    parsed |= set(re.findall(r'strcmp\(a, "(--[a-z0-9-]+)"\)', code))
    compare(name, page, man_options(page), "--help", help_options(prog))
    compare(name, "--help", help_options(prog), "its option parser", parsed)
    return parsed


netd_parsed = check_program("amaters-netd", "amaters-netd.8", netd, r"str_flags\[\] = \{(.*?)\};", r'\{"([a-z0-9-]+)",', ["amaters-netd.c"])
cli_parsed = check_program("amaters-cli", "amaters-cli.1", cli, r"\} opts\[\] = \{(.*?)\};", r'\{"([a-z0-9-]+)", C_', ["cli", "main.c"])

# amaters-cli's commands and short options: --help and the page know each.
main_c = read("tools", "cli", "main.c")
commands = re.findall(r'\{"([a-z]+)", C_[A-Z]+\}', re.search(r"cmds\[\] = \{(.*?)\};", main_c, re.S).group(1))
shorts = re.findall(r'\{"(-[A-Za-z])", "--', main_c)
cli_help = subprocess.run([cli, "--help"], capture_output=True, text=True, check=True).stdout
page = read("man", "amaters-cli.1")
man_commands = page.split(".SH COMMANDS", 1)[1].split("\n.SH ", 1)[0] if ".SH COMMANDS" in page else ""
for c in commands:
    if not re.search(r"^  " + c + r"\b", cli_help, re.M):
        problems.append(f"amaters-cli: the command {c} has no entry in --help")
    if not re.search(r'^\.BI? "?' + c + r'\b', man_commands, re.M):
        problems.append(f"amaters-cli: the command {c} has no entry in COMMANDS of amaters-cli.1")
for s in shorts:
    if not re.search(r"(?<![\w-])" + s + r"\b", cli_help):
        problems.append(f"amaters-cli: the short option {s} is not in --help")
    if not re.search(r"(?<![\w-])" + re.escape(s.replace("-", "\\-")) + r"\b", page):
        problems.append(f"amaters-cli: the short option {s} is not in amaters-cli.1")
if len(commands) < 8 or len(shorts) < 2:
    problems.append(f"only {len(commands)} commands and {len(shorts)} short options read from tools/cli/main.c")

# Configuration keys.
parser_keys = set(re.findall(r'\{"([a-z]+)", "([a-z0-9_]+)", K_[A-Z]+,', read("src", "util", "config.c")))
man_keys, section = set(), None
lines = read("man", "amaters-net.toml.5").splitlines()
for i, line in enumerate(lines):
    m = re.match(r"\.SS \[([a-z]+)\]$", line)
    if m:
        section = m.group(1)
    elif line.startswith(".SH") or line.startswith(".SS"):  # e.g. .SS [[auth.rule]]: keys of the rule tables
        section = None
    elif section and line == ".TP" and i + 1 < len(lines):
        m = re.match(r"\.B ([a-z0-9_]+)$", lines[i + 1])
        if m:
            man_keys.add((section, m.group(1)))
example_keys, section = set(), None
for line in read("examples", "amaters-net.toml").splitlines():
    m = re.match(r"\[([a-z]+)\]$", line)
    if m:
        section = m.group(1)
    if re.match(r"#? ?\[\[", line):  # [[auth.rule]]: keys of the rule tables, not of a section
        section = None
    m = re.match(r"#? ?([a-z][a-z0-9_]*)\s*=", line)
    if m and section:
        example_keys.add((section, m.group(1)))
fmt = lambda keys: {f"[{s}] {k}" for s, k in keys}
compare("configuration", "amaters-net.toml.5", fmt(man_keys), "src/util/config.c", fmt(parser_keys))
compare("configuration", "examples/amaters-net.toml", fmt(example_keys), "src/util/config.c", fmt(parser_keys))
if len(parser_keys) < 30:
    problems.append(f"only {len(parser_keys)} keys read from src/util/config.c: the table's shape changed?")

if shutil.which("groff"):
    for page in ("amaters-netd.8", "amaters-cli.1", "amaters-net.toml.5"):
        r = subprocess.run(["groff", "-man", "-z", "-ww", os.path.join(src, "man", page)],
                           capture_output=True, text=True)
        if r.returncode or r.stderr:
            problems.append(f"groff {page}: {r.stderr.strip() or r.returncode}")

for p in problems:
    print(p)
print(f"man pages: {len(netd_parsed)} amaters-netd options, {len(cli_parsed)} amaters-cli options, "
      f"{len(parser_keys)} configuration keys checked; {len(problems)} problem(s)")
sys.exit(1 if problems else 0)
