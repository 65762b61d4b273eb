#!/usr/bin/env python3
"""check_function_length.py SOURCE_ROOT [--list N]: no function of the C sources
outside tests/ is longer than 80 lines (suite 'style').

A function's length is the lines of its body, from the line of its opening
brace to the line of its closing brace. The C files (.c and .h) of framework/ ops/
plugins/ data/ models/ io/ tools/ bench/ are read with a small scanner that
skips comments, string and character literals and preprocessor lines, and
takes every top-level brace block whose header ends in a parameter list as a
function. It fails listing every function over the limit that the allow-list
below does not name. --list N prints the N longest functions and passes (for
measuring)."""
import os
import re
import sys

LIMIT = 80
FOLDERS = ("framework", "ops", "plugins", "data", "models", "io", "tools", "bench")

# Functions allowed over the limit, by "path:function": none. An entry would
# be a debt with an owner, not a permission, and the test fails when one is no
# longer needed.
ALLOWED = set()


def strip(text):
    """text with comments, literals and preprocessor lines blanked out,
    newlines kept so line numbers stay right."""
    out, i, n = [], 0, len(text)
    at_line_start = True
    while i < n:
        c = text[i]
        if at_line_start and c == "#":  # a directive, with its continuation lines
            j = i
            while j < n and not (text[j] == "\n" and text[j - 1] != "\\"):
                j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
            continue
        if c == "\n":
            at_line_start = True
        elif not c.isspace():
            at_line_start = False
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            out.append(c + re.sub(r"[^\n]", " ", text[i + 1:j]) + c)
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


HEADER = re.compile(r"([A-Za-z_]\w*)\s*\((?:[^()]|\([^()]*\))*\)\s*(?:__attribute__\s*\(\(.*\)\)\s*)?$",
                    re.S)


def functions(path):
    """(name, first body line, length) of each function defined in path."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = strip(f.read())
    found, depth, start, header_from = [], 0, None, 0
    for i, c in enumerate(text):
        if c == "{":
            if depth == 0:
                header = text[header_from:i].strip()
                m = HEADER.search(header)
                if m and "=" not in header and m.group(1) not in ("if", "for", "while", "switch"):
                    start = (m.group(1), text.count("\n", 0, i) + 1)
                else:
                    start = None
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                if start:
                    end = text.count("\n", 0, i) + 1
                    found.append((start[0], start[1], end - start[1] + 1))
                start = None
                header_from = i + 1
        elif c == ";" and depth == 0:
            header_from = i + 1
    return found


def scan(root):
    rows = []
    for folder in FOLDERS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, folder)):
            dirnames.sort()
            for name in sorted(filenames):
                if name.endswith((".c", ".h")):
                    path = os.path.join(dirpath, name)
                    rel = os.path.relpath(path, root)
                    rows += [(length, rel, fn, line) for fn, line, length in functions(path)]
    return sorted(rows, key=lambda r: (-r[0], r[1], r[2]))


def main():
    args = sys.argv[1:]
    if not args or len(args) not in (1, 3) or (len(args) == 3 and args[1] != "--list"):
        print(__doc__)
        return 2
    rows = scan(args[0])
    if len(args) == 3:
        for length, rel, fn, line in rows[:int(args[2])]:
            print("%4d  %s:%d %s" % (length, rel, line, fn))
        print("%d functions, %d over %d lines" % (len(rows), sum(r[0] > LIMIT for r in rows), LIMIT))
        return 0
    long_ones = [r for r in rows if r[0] > LIMIT]
    bad = [r for r in long_ones if "%s:%s" % (r[1], r[2]) not in ALLOWED]
    stale = ALLOWED - {"%s:%s" % (r[1], r[2]) for r in long_ones}
    for length, rel, fn, line in bad:
        print("FAIL: %s:%d %s is %d lines (limit %d): split it into named steps"
              % (rel, line, fn, length, LIMIT))
    for entry in sorted(stale):
        print("FAIL: %s is in the allow-list but no longer over %d lines: remove it" % (entry, LIMIT))
    if bad or stale:
        return 1
    print("check_function_length: %d functions, none over %d lines outside the allow-list (%s)"
          % (len(rows), LIMIT, ", ".join(sorted(ALLOWED)) or "empty"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
