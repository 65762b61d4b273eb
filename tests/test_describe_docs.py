#!/usr/bin/env python3
"""test_describe_docs.py: docs/cells.md against the program (suite cli).

The page embeds, after each marker line `<!-- bptt plugins --describe NAME -->`,
a ```text block holding exactly what `bptt plugins --describe NAME` prints: the
text the plugin itself carries (its def's `doc`). This checks that
  (a) every such block equals the program's output, byte for byte;
  (b) every cell, policy and optimizer the shipped plugins register (those
      in the folder of BPTT_PLUGIN_PATH, which meson points at the build's
      plugins/) has its block, so a new plugin cannot go undocumented.
After changing a plugin's text, rewrite the blocks with --update and read the
diff:  python3 tests/test_describe_docs.py build/tools/bptt docs/cells.md --update

usage: test_describe_docs.py BPTT DOCS.md [--update]"""
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


def main():
    if len(sys.argv) not in (3, 4) or (len(sys.argv) == 4 and sys.argv[3] != "--update"):
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    bptt, page, update = sys.argv[1], sys.argv[2], len(sys.argv) == 4
    with open(page, encoding="utf-8") as f:
        text = f.read()
    failures, seen = [], []

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
                failures.append(f"{name}: the block differs from `bptt plugins --describe {name}` "
                                f"at its line {i + 1}:\n    page:    {a[i] if i < len(a) else '(end)'!r}"
                                f"\n    program: {b[i] if i < len(b) else '(end)'!r}")
            return f"<!-- bptt plugins --describe {name} -->\n```text\n{want}```\n"
        return m.group(0)

    new = MARKER.sub(block, text)
    for kind, name in shipped_names(bptt):
        if name not in seen:
            failures.append(f"{kind} {name}: {page} has no block for it (add the marker "
                            f"`<!-- bptt plugins --describe {name} -->` and a ```text block)")
    if update and new != text:
        with open(page, "w", encoding="utf-8") as f:
            f.write(new)
        print(f"{page}: blocks rewritten from the program")
    print(f"{page}: {len(seen)} blocks checked against `bptt plugins --describe`")
    for f in failures:
        print("FAIL: " + f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
