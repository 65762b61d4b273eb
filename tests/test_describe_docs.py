#!/usr/bin/env python3
"""test_describe_docs.py: docs/cells.md (and docs/estimators.md) against the
program (suite cli).

Each page embeds, after each marker line `<!-- bptt plugins --describe NAME -->`,
a ```text block holding exactly what `bptt plugins --describe NAME` prints: the
text the plugin itself carries (its def's `doc`). This checks that
  (a) every such block equals the program's output, byte for byte;
  (b) every cell, policy, optimizer and estimator the shipped plugins
      register (those in the folder of BPTT_PLUGIN_PATH, which meson points
      at the build's plugins/) has its block on one of the pages, so a new
      plugin cannot go undocumented.
After changing a plugin's text, rewrite the blocks with --update and read the
diff:  python3 tests/test_describe_docs.py build/tools/bptt docs/cells.md docs/estimators.md --update

usage: test_describe_docs.py BPTT DOCS.md... [--update]"""
import json
import os
import re
import subprocess
import sys

MARKER = re.compile(r"^<!-- bptt plugins --describe (\S+) -->\n```text\n(.*?)^```\n",
                    re.S | re.M)


def describe(bptt, name):
    p = subprocess.run([bptt, "plugins", "--describe", name], capture_output=True, text=True)
    if p.returncode != 0:
        return None, p.stderr.strip()
    return p.stdout, None


def shipped_names(bptt):
    """(kind, name) of every entry from the shipped plugin folder."""
    p = subprocess.run([bptt, "plugins", "--json"], capture_output=True, text=True, check=True)
    folders = [os.path.realpath(d) for d in os.environ.get("BPTT_PLUGIN_PATH", "").split(":") if d]
    out = []
    for e in json.loads(p.stdout):
        if not folders or os.path.dirname(os.path.realpath(e["file"])) in folders:
            out.append((e["kind"], e["name"]))
    return out


def check_page(bptt, page, update, failures, seen):
    """Checks (and with update rewrites) the blocks of one page."""
    with open(page, encoding="utf-8") as f:
        text = f.read()

    def block(m):
        name, body = m.group(1), m.group(2)
        seen.append(name)
        want, err = describe(bptt, name)
        if want is None:
            failures.append(f"{name}: `bptt plugins --describe {name}` failed: {err}")
            return m.group(0)
        if body != want:
            if not update:
                a, b = body.splitlines(), want.splitlines()
                i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                failures.append(f"{name}: {page}'s block differs from `bptt plugins --describe "
                                f"{name}` at its line {i + 1}:\n    page:    "
                                f"{a[i] if i < len(a) else '(end)'!r}"
                                f"\n    program: {b[i] if i < len(b) else '(end)'!r}")
            return f"<!-- bptt plugins --describe {name} -->\n```text\n{want}```\n"
        return m.group(0)

    new = MARKER.sub(block, text)
    if update and new != text:
        with open(page, "w", encoding="utf-8") as f:
            f.write(new)
        print(f"{page}: blocks rewritten from the program")


def main():
    args = sys.argv[1:]
    update = bool(args) and args[-1] == "--update"
    if update:
        args = args[:-1]
    if len(args) < 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    bptt, pages = args[0], args[1:]
    failures, seen = [], []
    for page in pages:
        check_page(bptt, page, update, failures, seen)
    for kind, name in shipped_names(bptt):
        if name not in seen:
            failures.append(f"{kind} {name}: no page of {', '.join(pages)} has a block for it (add "
                            f"the marker `<!-- bptt plugins --describe {name} -->` and a ```text "
                            f"block)")
    print(f"{', '.join(pages)}: {len(seen)} blocks checked against `bptt plugins --describe`")
    for f in failures:
        print("FAIL: " + f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
