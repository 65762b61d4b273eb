#!/usr/bin/env python3
"""test_exports.py BUILD_DIR LIBBPTT LIBBPTT_TRAIN: the libraries export exactly
their public API (suite abi).

The installed headers are the ones meson installs (BUILD_DIR/meson-info/
intro-installed.json), laid out as an install would lay them out. Clang reads
them (one translation unit including every one) and lists each function they
declare and whether it carries BT_API (a visibility attribute); `nm -D` lists
what each library exports. The test fails when
- an installed header declares a function without BT_API (static inline aside);
- a library exports a symbol no installed header declares with BT_API, or one
  of the known internal helpers (tape internals, weight-gradient batching,
  the UTF-8 codec, ELF checks) or the program's presentation (SVG charts);
- a function declared with BT_API is not exported by either library, or the
  functions of one header are split between the two;
- the core library exports a function of a training-layer header;
- an installed header does not compile on its own against the installed set.
Exit 77 (skipped) without clang or nm."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

# Helpers that must stay inside the libraries whatever the headers say (the
# op-author header may make bt_op_output / bt_op_scratch public; these never),
# and the program's presentation (SVG charts, reports: tools/, in neither library).
INTERNAL_NAMES = {"bt_op_begin", "bt_graph_defer_wgrad", "bt_shp"}
INTERNAL_PREFIXES = ("bt_utf8_", "bt_elf_", "bt_wgrad_", "st_", "json_", "bt_plot_", "bt_figure_",
                     "cli_")
# Headers of the core library (what `pkg-config bptt` gives a plugin author).
CORE_HEADERS = {"bptt.h", "bptt_plugin.h", "bptt_op.h", "registry.h", "options.h", "bptt_config.h"}


def fail(problems):
    for p in problems:
        print("FAIL:", p)
    sys.exit(1)


def installed_headers(build):
    """{installed name: source path} of every header meson installs."""
    with open(os.path.join(build, "meson-info", "intro-installed.json")) as f:
        installed = json.load(f)
    return {os.path.basename(dst): src for src, dst in installed.items() if dst.endswith(".h")}


def exports(lib):
    """Names of the symbols lib exports (functions and data alike)."""
    out = subprocess.run(["nm", "-D", "--defined-only", lib], check=True, capture_output=True,
                         text=True).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] not in ("A",):  # A: version nodes, not symbols
            names.add(parts[2].split("@")[0])
    return names


def walk(node, state, found):
    """Depth-first over clang's JSON in document order. Clang writes a
    location's "file" only when it changes, so the current file is carried
    along; a FunctionDecl takes the file of its own location."""
    if isinstance(node, dict):
        if "offset" in node and "file" in node:
            state["file"] = node["file"]
        if node.get("kind") == "FunctionDecl":
            loc = node.get("loc", {})
            walk(loc, state, found)
            loc = loc.get("expansionLoc", loc)
            found.append({
                "name": node.get("name"),
                "file": os.path.basename(state["file"]),
                "static": node.get("storageClass") == "static",
                "bt_api": any(i.get("kind") == "VisibilityAttr" for i in node.get("inner", [])),
            })
            for key, value in node.items():
                if key != "loc":
                    walk(value, state, found)
            return
        for key, value in node.items():
            if key != "referencedDecl":  # a call inside an inline body, not a declaration
                walk(value, state, found)
    elif isinstance(node, list):
        for value in node:
            walk(value, state, found)


def declared_functions(incdir, headers):
    src = os.path.join(incdir, "all.c")
    with open(src, "w") as f:
        for h in sorted(headers):
            f.write('#include "%s"\n' % h)
    out = subprocess.run(["clang", "-Xclang", "-ast-dump=json", "-Xclang", "-ast-dump-filter=bt_",
                          "-fsyntax-only", "-std=c11", "-I", incdir, src],
                         check=True, capture_output=True, text=True).stdout
    decoder, i, found, state = json.JSONDecoder(), 0, [], {"file": ""}
    while i < len(out):
        while i < len(out) and out[i].isspace():
            i += 1
        if i == len(out):
            break
        node, i = decoder.raw_decode(out, i)
        walk(node, state, found)
    return [d for d in found if d["file"] in headers]


def main():
    if len(sys.argv) != 4:
        print(__doc__)
        return 2
    build, core_lib, train_lib = sys.argv[1:]
    for tool in ("clang", "nm"):
        if not shutil.which(tool):
            print("test_exports: %s not found, skipping" % tool)
            return 77
    headers = installed_headers(build)
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        incdir = os.path.join(tmp, "bptt")  # as installed: every header side by side
        os.mkdir(incdir)
        for name, src in headers.items():
            shutil.copy(src, os.path.join(incdir, name))
        for name in sorted(headers):
            r = subprocess.run(["cc", "-std=c11", "-fsyntax-only", "-I", incdir, "-x", "c",
                                os.path.join(incdir, name)], capture_output=True, text=True)
            if r.returncode != 0:
                problems.append("installed header %s does not compile on its own:\n%s"
                                % (name, r.stderr.strip()))
        decls = declared_functions(incdir, set(headers))

    public = {}  # name -> header
    for d in decls:
        if d["static"]:
            continue
        if not d["bt_api"]:
            problems.append("%s declares %s without BT_API" % (d["file"], d["name"]))
            continue
        public[d["name"]] = d["file"]
    libs = {"libbptt": exports(core_lib), "libbptt-train": exports(train_lib)}
    for lib, names in libs.items():
        for name in sorted(names):
            if name in INTERNAL_NAMES or name.startswith(INTERNAL_PREFIXES):
                problems.append("%s exports the internal %s" % (lib, name))
            elif name not in public:
                problems.append("%s exports %s, which no installed header declares with BT_API"
                                % (lib, name))
            elif lib == "libbptt" and public[name] not in CORE_HEADERS:
                problems.append("libbptt exports %s of the training-layer header %s"
                                % (name, public[name]))
    owner = {}  # header -> library that defines its functions
    for name, header in sorted(public.items()):
        where = [lib for lib, names in libs.items() if name in names]
        if not where:
            problems.append("%s declares %s with BT_API, but no library exports it" % (header, name))
        elif len(where) > 1:
            problems.append("%s is exported by both libraries" % name)
        elif owner.setdefault(header, where[0]) != where[0]:
            problems.append("the functions of %s are split between %s and %s"
                            % (header, owner[header], where[0]))
    if problems:
        fail(problems)
    print("test_exports: %d public functions in %d installed headers; libbptt exports %d, "
          "libbptt-train %d, nothing else" % (len(public), len(headers), len(libs["libbptt"]),
                                              len(libs["libbptt-train"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
