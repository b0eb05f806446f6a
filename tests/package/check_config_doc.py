#!/usr/bin/env python3
"""check_config_doc.py — outaged.conf(5) and the example configuration say what the daemon does.

The daemon is the reference: `outaged --check-config -c <empty file>` prints every key with
its default. Then
  - every printed key has an entry in the man page source, under its `## [section]`, whose
    first line states that default (`*key* = _type_, default *value*` or `default empty`);
  - every key the man page documents is printed by the daemon (no documented key it lacks);
  - every integer, duration or size key documents a range (`, range *min..max*`) equal to
    the one the daemon enforces, which its error for an out-of-range value states;
  - config/outaged.conf sets every key, and --check-config prints the same for it as for
    an empty file (the example holds the defaults).
Every problem is reported by section.key; the exit status is 1 if there is one.

    check_config_doc.py OUTAGED_BINARY MAN_PAGE_SCD EXAMPLE_CONF
"""
import os
import re
import subprocess
import sys
import tempfile

ENTRY = re.compile(r"^\*(?P<key>[a-z0-9_]+)\* = _(?P<type>[a-z]+)_, default "
                   r"(?:\*(?P<default>[^*]*)\*|(?P<empty>empty))"
                   r"(?:, range \*(?P<range>[^*]+)\*)?$")
SECTION = re.compile(r"^## \[(?P<section>[a-z0-9_]+)\]$")
RANGED_TYPES = {
    # type: a value beyond every bound, so that the daemon answers with its range
    "integer": "99999999999999999999999",
    "duration": "99999999999d",
    "size": "99999999999GiB",
}
OUT_OF_RANGE = re.compile(r'is out of range \(expected (?P<range>[^)]*)\)')

problems = []


def problem(what, msg):
    problems.append(f"{what}: {msg}")


def unescape(s):
    """scdoc's backslash escapes (\\_ for a literal underscore)."""
    return re.sub(r"\\(.)", r"\1", s)


def clean_env():
    env = dict(os.environ)
    # The defaults the daemon prints depend on these (journal_dir, the password sources).
    for v in ("STATE_DIRECTORY", "CREDENTIALS_DIRECTORY"):
        env.pop(v, None)
    return env


def check_config(binary, text):
    """Runs --check-config on text; returns (exit status, stdout, stderr)."""
    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as f:
        f.write(text)
        path = f.name
    try:
        p = subprocess.run([binary, "--check-config", "-c", path], capture_output=True,
                           text=True, env=clean_env(), timeout=60)
        return p.returncode, p.stdout, p.stderr
    finally:
        os.unlink(path)


def parse_dump(out):
    """--check-config output -> {(section, key): value}, in order."""
    keys, section = {}, None
    for line in out.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line == "configuration OK":
            continue
        m = re.match(r"^\[([^\]]+)\]$", line)
        if m:
            section = m.group(1)
            continue
        m = re.match(r"^([^ =]+) =(?: (.*))?$", line)
        if not m or section is None:
            problem("--check-config", f"unexpected output line {line!r}")
            continue
        keys[(section, m.group(1))] = m.group(2) or ""
    return keys


def parse_man(path):
    """The man page source -> {(section, key): (type, default, range or None)}."""
    entries, section, in_options = {}, None, False
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if line.startswith("# "):
                in_options = line == "# OPTIONS"
                section = None
                continue
            m = SECTION.match(line)
            if m and in_options:
                section = m.group("section")
                continue
            if not in_options or section is None or not line.startswith("*"):
                continue
            m = ENTRY.match(line)
            if not m:
                problem(f"{os.path.basename(path)}:{n}",
                        f"key entry not in the form '*key* = _type_, default *value*[, range *a..b*]': {line!r}")
                continue
            what = (section, m.group("key"))
            if what in entries:
                problem(".".join(what), f"documented twice ({os.path.basename(path)}:{n})")
            default = "" if m.group("empty") else unescape(m.group("default"))
            entries[what] = (m.group("type"), default, m.group("range") and unescape(m.group("range")))
    return entries


def parse_example(path):
    """config/outaged.conf -> set of (section, key) it sets."""
    keys, section = set(), None
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            m = re.match(r"^\[([^\]]+)\]$", line)
            if m:
                section = m.group(1)
            elif "=" in line and section:
                keys.add((section, line.split("=", 1)[0].strip()))
    return keys


def check_man(binary, daemon, man, man_name):
    for what, value in daemon.items():
        name = ".".join(what)
        if what not in man:
            problem(name, f"printed by --check-config (default {value or 'empty'}) but not "
                          f"documented in {man_name}")
            continue
        doc_default = man[what][1]
        if doc_default != value:
            problem(name, f"{man_name} says default {doc_default or 'empty'}, the daemon "
                          f"{value or 'empty'}")
    for what in man:
        if what not in daemon:
            problem(".".join(what), f"documented in {man_name} but not printed by "
                                    f"--check-config: the daemon has no such key (yet)")

    for what, (typ, _, rng) in man.items():
        name = ".".join(what)
        if typ not in RANGED_TYPES:
            if rng:
                problem(name, f"{man_name} gives a range for a {typ}, which has none")
            continue
        if not rng:
            problem(name, f"{man_name} gives no range for this {typ}")
        if what not in daemon:
            continue
        probe = RANGED_TYPES[typ]
        status, _, err = check_config(binary, f"[{what[0]}]\n{what[1]} = {probe}\n")
        m = OUT_OF_RANGE.search(err)
        if status != 78 or not m:
            problem(name, f"documented as a {typ}, but the daemon does not answer {probe} with "
                          f"its range (exit {status}): {err.strip()}")
        elif rng and m.group("range") != rng:
            problem(name, f"{man_name} says range {rng}, the daemon enforces {m.group('range')}")


def check_example(binary, daemon, example_path, empty_out):
    example = parse_example(example_path)
    name = os.path.basename(example_path)
    for what in daemon:
        if what not in example:
            problem(".".join(what), f"not set in {name}, which shows every key with its default")
    with open(example_path, encoding="utf-8") as f:
        status, out, err = check_config(binary, f.read())
    if status != 0:
        problem(name, f"--check-config fails (exit {status}): {err.strip()}")
        return
    mine = parse_dump(out)
    for what, value in daemon.items():
        if what in mine and mine[what] != value:
            problem(".".join(what), f"{name} sets {mine[what] or 'empty'}, not the default "
                                    f"{value or 'empty'}")


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    binary, man_path, example_path = sys.argv[1:]
    man_name = os.path.basename(man_path)

    status, out, err = check_config(binary, "")
    if status != 0:
        print(f"check_config_doc: {binary} --check-config on an empty file exited {status}:\n{err}",
              file=sys.stderr)
        return 1
    daemon = parse_dump(out)
    if not daemon:
        print("check_config_doc: --check-config printed no key", file=sys.stderr)
        return 1
    man = parse_man(man_path)
    check_man(binary, daemon, man, man_name)
    check_example(binary, daemon, example_path, out)

    if problems:
        for p in problems:
            print(f"check_config_doc: {p}", file=sys.stderr)
        print(f"check_config_doc: {len(problems)} problem(s); {len(daemon)} keys in the daemon, "
              f"{len(man)} in {man_name}", file=sys.stderr)
        return 1
    ranged = sum(1 for t, _, _ in man.values() if t in RANGED_TYPES)
    print(f"{len(daemon)} keys: each documented in {man_name} with the daemon's default, "
          f"{ranged} ranges as enforced; {os.path.basename(example_path)} sets every key to its default")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, subprocess.SubprocessError) as e:
        print(f"check_config_doc: {e}", file=sys.stderr)
        sys.exit(1)
