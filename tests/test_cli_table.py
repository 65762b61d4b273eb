#!/usr/bin/env python3
"""test_cli_table.py: every command of the `bptt` program against its own
option table (suite cli). The commands come from `bptt --help` and each one's
options from `bptt --options COMMAND`, which prints the table the parser uses,
so nothing here lists them by hand. For every command:
  (a) each option, given a valid value on a cheap real run (tiny data made
      here), gets past option parsing and runs (an option the table declares
      but the code never reads aborts with "internal error");
  (b) each value-taking option given last without a value exits 2 with one line;
  (c) an unknown option, a stray argument and a flag given a value exit 2;
  (d) --help lists exactly the table's options and mentions no other, and the
      command's synopsis in docs/commands.md lists the same set.
The values are the only hand-written part: an option without a value here
fails the test, so a new option needs a test value (and its docs) to pass.
First, the regressions of issue 10 (defects 4 and 5, compare --help), which
do not rely on --options, so they also run against an older bptt.

Usage: test_cli_table.py BPTT DOCS/commands.md FIXTURES_DIR USER_PLUGIN.so
"""
import os
import re
import subprocess
import sys
import tempfile
import time

BPTT, DOCS, FIXTURES, USER_SO = (os.path.abspath(a) for a in sys.argv[1:5])
failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg)


runs = 0


def run(args, cwd):
    global runs
    runs += 1
    p = subprocess.run([BPTT] + args, cwd=cwd, capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr


def show(args):
    return "bptt " + " ".join(args)


def expect(args, cwd, rc, err=None, out_empty=False):
    """Runs bptt ARGS; its exit status must be rc and stderr match err."""
    got, out, stderr = run(args, cwd)
    why = []
    if got != rc:
        why.append("exit status %d, expected %d" % (got, rc))
    if err and not re.search(err, stderr):
        why.append("stderr lacks /%s/" % err)
    if "internal error" in stderr:
        why.append("internal error")
    if out_empty and out:
        why.append("it ran (stdout: %r)" % out[:80])
    if why:
        fail("%s: %s\n    stderr: %s" % (show(args), "; ".join(why), stderr.strip()[-400:]))
    return got, out, stderr


def make_data(tmp):
    """A small text, a checkpoint trained on it with the train base settings,
    and a file where a folder should be."""
    text = os.path.join(tmp, "text.txt")
    with open(text, "w") as f:
        f.write("the time traveller sat by the fire. the doctor read the paper.\n" * 12)
    in_the_way = os.path.join(tmp, "in_the_way")
    open(in_the_way, "w").close()
    return text, in_the_way


def configs(tmp, text, ckpt, in_the_way, double):
    """Per command: (base arguments of a cheap run, {option: value}, stop).
    A value is a string, None for a flag, or a dict: value, drop (base options
    it replaces), add (options it needs). stop: the exit status and stderr of
    a run that is to end right after option parsing, for the demo, which takes
    too long to run in full here (test_cli_analyze.sh runs it): a file in the
    way of --out fails once every option has been read."""
    p = lambda name: os.path.join(tmp, name)
    lm_base = [("data", text), ("hidden", "4"), ("batch", "2"), ("steps", "5"),
               ("epochs", "1"), ("max-tokens", "300"), ("quiet", None)]
    lm_values = {
        "data": text,
        "task": {"value": "copy:6,2", "drop": ["data", "max-tokens", "steps"]},
        "tokens": "letters", "cell": "gru", "hidden": "3", "batch": "3", "steps": "4",
        "epochs": "2", "optimizer": "adam:lr=0.01", "clip": "0.5", "init": "normal:0.1",
        "seed": "7", "sampling": "random", "max-tokens": "250", "val-fraction": "0.2",
        "checkpoint": "sqrt", "memory-budget": "10", "metrics": p("m.csv"),
        "plugin": USER_SO, "quiet": None, "threads": "1",
    }
    return {
        "train": (lm_base, dict(lm_values, **{
            "truncation": "fixed:2",
            "estimator": "uoro,seed=3",
            "update-every": {"value": "2", "add": [("estimator", "rtrl")]},
            "save": p("s.safetensors"),
            "every": {"value": "1", "add": [("save", p("e.safetensors"))]},
            "resume": {"value": ckpt, "add": [("epochs", "2")]},
            "plot": p("t.svg"),
        })),
        "compare": (lm_base + [("truncation", "full,fixed:2"), ("plot", p("c.svg"))],
                    dict(lm_values, truncation="full,tbptt:2,4", plot=p("c2.svg"),
                         estimator="rtrl,uoro,seed=3",
                         **{"update-every": {"value": "3", "add": [("estimator", "uoro")]}})),
        "generate": ([("model", ckpt), ("length", "5")], {
            "model": ckpt, "prefix": "the doc", "length": "3", "temperature": "0.5",
            "seed": "3", "plugin": USER_SO, "threads": "2",
        }),
        "grad": ([("cell", "rnn_tanh"),
                  ("params", os.path.join(FIXTURES, "rnn_tanh_params.safetensors")),
                  ("out", p("g.safetensors"))], {
            "cell": "rnn_tanh", "params": os.path.join(FIXTURES, "rnn_tanh_params.safetensors"),
            "out": p("g2.safetensors"), "truncation": "fixed:2", "seed": "2", "plugin": USER_SO,
            "checkpoint": "2", "memory-budget": "10", "threads": "1",
            "estimator": "uoro,seed=3",
        }),
        "gradcheck": ([("cell", "rnn_tanh"), ("steps", "3"), ("hidden", "3"), ("vocab", "4")], {
            "cell": "lstm", "plugin": USER_SO, "steps": "4", "batch": "1", "hidden": "2",
            "vocab": "3", "output": "2", "truncation": "fixed:2", "seed": "5",
            "eps": "1e-5" if double else "3e-3", "tolerance": "1e-5" if double else "5e-2",
            "threads": "1",
        }),
        "analyze": ([("cell", "rnn_tanh"), ("hidden", "4"), ("lags", "3"), ("batch", "2")], {
            "model": {"value": ckpt, "drop": ["cell", "hidden"]},
            "cell": "linear", "hidden": "5", "init": "orthogonal", "input": "6", "output": "5",
            "data": text, "task": "copy:6,2", "lags": "2", "batch": "1", "seed": "3",
            "json": None, "plot": p("a.svg"), "plugin": USER_SO, "threads": "1",
            "estimator": "rtrl,uoro,seed=2", "truncation": "fixed:2,random:0.5",
            "draws": {"value": "3", "add": [("estimator", "uoro")]},
        }),
        "demo": ([("out", in_the_way)], {"out": in_the_way, "plugin": USER_SO, "threads": "1"},
                 (1, "cannot create --out")),
        "plugins": ([], {"json": None, "describe": "gru_torch", "plugin": USER_SO,
                         "threads": "1"}),
        "selfcheck": ([], {"plugin": USER_SO, "threads": "1"}),
    }


def argv_of(pairs):
    out = []
    for name, value in pairs:
        out.append("--" + name)
        if value is not None:
            out.append(value)
    return out


def with_option(base, name, spec):
    """base with --name set (replacing a base value), minus what spec drops,
    plus what it adds."""
    if not isinstance(spec, dict):
        spec = {"value": spec}
    pairs = [(n, v) for n, v in base if n not in spec.get("drop", []) and n != name]
    pairs.append((name, spec["value"]))
    for n, v in spec.get("add", []):
        pairs = [(m, w) for m, w in pairs if m != n] + [(n, v)]
    return argv_of(pairs)


def regressions(tmp, text, in_the_way):
    """Issue 10: defects 4 and 5, and compare --help naming --resume."""
    expect(["analyze", "--cell", "rnn_tanh", "--hidden", "4", "--lags", "3", "--plugin", USER_SO],
           tmp, 0)
    expect(["demo", "--plugin", USER_SO, "--out", in_the_way], tmp, 1, "cannot create --out")
    expect(["gradcheck", "--cell", "rnn_tanh", "--truncation"], tmp, 2, "--truncation.*value",
           out_empty=True)
    expect(["gradcheck", "--cell", "rnn_tanh", "--plugin"], tmp, 2, "--plugin.*value",
           out_empty=True)
    expect(["plugins", "--plugin"], tmp, 2, "--plugin.*value", out_empty=True)
    expect(["train", "--data", text, "--epochs"], tmp, 2, "--epochs.*value", out_empty=True)
    rc, out, _ = run(["compare", "--help"], tmp)
    if rc != 0 or "--resume" in out:
        fail("compare --help (exit %d) mentions --resume, which compare refuses" % rc)


def command_names(tmp):
    rc, out, _ = run(["--help"], tmp)
    names = re.findall(r"^  ([a-z]+)  +\S", out, re.M)
    if rc != 0 or len(names) < 9:
        fail("bptt --help (exit %d) lists commands %s" % (rc, names))
    return names


def options_of(cmd, tmp):
    """{name: placeholder or None for a flag} from the command's option table."""
    rc, out, err = run(["--options", cmd], tmp)
    if rc != 0:
        fail("bptt --options %s: exit %d: %s" % (cmd, rc, err.strip()))
        return {}
    opts = {}
    for line in out.splitlines():
        m = re.fullmatch(r"--([a-z][a-z0-9-]*)(?: (\S+))?", line)
        if not m or m.group(1) in opts:
            fail("bptt --options %s: bad or repeated line %r" % (cmd, line))
            continue
        opts[m.group(1)] = m.group(2)
    return opts


def check_help(cmd, opts, tmp):
    """(d) --help lists exactly the table and mentions no other option."""
    rc, out, _ = run([cmd, "--help"], tmp)
    listed = {}
    for m in re.finditer(r"^  (?:-h, )?--([a-z][a-z0-9-]*)(?: (\S+))?", out, re.M):
        listed[m.group(1)] = m.group(2)
    want = dict(opts, help=None)
    if rc != 0 or listed != want:
        fail("%s --help (exit %d) lists %s; the table has %s" % (cmd, rc, sorted(listed),
                                                              sorted(want)))
    # "bptt train --save" in generate's help is another command's option.
    own = re.sub(r"bptt (?!%s\b)[a-z]+(?: --[a-z][a-z0-9-]*)+" % cmd, "", out)
    stray = set(re.findall(r"--([a-z][a-z0-9-]*)", own)) - set(want)
    if stray:
        fail("%s --help mentions options the command refuses: %s" % (cmd, sorted(stray)))


def docs_synopses(names):
    """{command: set of options in the first code block of its docs section}."""
    text = open(DOCS).read()
    found = {}
    for cmd in names:
        m = re.search(r"^## bptt %s\s*\n.*?```[a-z]*\n(.*?)```" % cmd, text, re.S | re.M)
        if m:
            found[cmd] = set(re.findall(r"--([a-z][a-z0-9-]*)", m.group(1)))
    return found


def check_command(cmd, opts, base, values, stop, tmp, docs):
    check_help(cmd, opts, tmp)
    if docs.get(cmd) != set(opts):
        doc = docs.get(cmd)
        fail("docs/commands.md, bptt %s synopsis: %s" % (
            cmd, "missing" if doc is None else "lists %s; the command takes %s; differs in %s"
            % (sorted(doc), sorted(opts), sorted(doc ^ set(opts)))))
    rc, err = stop
    expect([cmd] + argv_of(base), tmp, rc, err)
    for name, arg in opts.items():
        if name not in values:
            fail("%s --%s: no test value in tests/test_cli_table.py (add one, and document "
                 "the option)" % (cmd, name))
            continue
        expect([cmd] + with_option(base, name, values[name]), tmp, rc, err)       # (a)
        if arg is not None:
            expect([cmd] + argv_of(base) + ["--" + name], tmp, 2,                 # (b)
                   r"^bptt %s: --%s needs a value[^\n]*\n$" % (cmd, name), out_empty=True)
        else:
            expect([cmd] + argv_of(base) + ["--%s=1" % name], tmp, 2,             # (c)
                   r"^bptt %s: --%s takes no value[^\n]*\n$" % (cmd, name), out_empty=True)
    for extra in ["no-such-option", "stray"]:
        word = "--" + extra if extra.startswith("no-") else extra
        expect([cmd] + argv_of(base) + [word], tmp, 2,                            # (c)
               r"^bptt %s: (unknown option --no-such-option|unexpected argument 'stray')"
               r"[^\n]*\n$" % cmd, out_empty=True)
    stale = set(values) - set(opts)
    if stale:
        fail("tests/test_cli_table.py has values for %s, which %s does not take" % (
            ", ".join("--" + s for s in sorted(stale)), cmd))


def main():
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="bptt_cli_table_") as tmp:
        text, in_the_way = make_data(tmp)
        regressions(tmp, text, in_the_way)
        ckpt = os.path.join(tmp, "ck.safetensors")
        _, version, _ = expect(["--version"], tmp, 0)
        names = command_names(tmp)
        table = configs(tmp, text, ckpt, in_the_way, "double precision" in version)
        expect(["train"] + argv_of(table["train"][0]) + ["--save", ckpt], tmp, 0)
        docs = docs_synopses(names)
        for cmd in names:
            if cmd not in table:
                fail("command %s has no test configuration in tests/test_cli_table.py" % cmd)
                continue
            base, values, *stop = table[cmd]
            check_command(cmd, options_of(cmd, tmp), base, values,
                          stop[0] if stop else (0, None), tmp, docs)
            print("ok: %s (%.1f s so far)" % (cmd, time.time() - start))
    print("%d runs of bptt, %d failures, %.1f s" % (runs, len(failures), time.time() - start))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
