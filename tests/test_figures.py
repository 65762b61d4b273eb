#!/usr/bin/env python3
"""test_figures.py: every figure the program writes keeps its text whole and on
the page (suite cli). Runs the commands that write figures (train --plot on a
text and on a task, compare --plot with and without validation and with a
plugin policy's long label, analyze --plot on cells with and without a square
recurrent matrix, the demo's four figures) and svg_gallery's stress figures,
then checks each with check_figures.py: no ink at the edges of the rendered
PNG (rsvg-convert), every text box inside the viewBox by the font's own
advance widths, no two texts overlapping, no label cut with an ellipsis.

First it checks the checker: its font model against the ink rsvg-convert
draws, and that it fails on a text pushed off the page and on two texts
drawn over each other.

usage: test_figures.py BPTT SVG_GALLERY GEOSEG.so DATA.txt
Exit 0 pass, 1 fail, 77 skipped (rsvg-convert or the DejaVu fonts missing)."""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_figures as cf  # noqa: E402

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg)


def svg_doc(body, w=400, h=60):
    return ('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
            'font-family="DejaVu Sans, sans-serif"><style>.t{font-size:13px}</style>'
            '<rect width="100%%" height="100%%" fill="#fff"/>%s</svg>' % (w, h, w, h, body))


def check_the_checker(tmp):
    """The font model measures what rsvg-convert draws; the checks can fail."""
    text = "geoseg:mean=6,min=2 |l2/l1|^k WAVE"
    path = os.path.join(tmp, "calibrate.svg")
    with open(path, "w") as f:
        f.write(svg_doc('<text class="t" x="10" y="35">%s</text>' % text))
    png = os.path.join(tmp, "calibrate.png")
    subprocess.run(["rsvg-convert", path, "-o", png], check=True)
    w, h, ch, rows = cf.png_rows(png)
    xs = [x for y in range(h) for x in range(w) if min(rows[y][x * ch:x * ch + 3]) < 200]
    ink_w = max(xs) + 1 - 10
    model = cf.font("sans", False).width(text) * 13
    print("font model: %.1f px advance, rsvg-convert ink %d px wide" % (model, ink_w))
    if not (ink_w - 1 <= model <= ink_w + 4):
        fail("the font model (%.1f px) does not match the rendered ink (%d px)" % (model, ink_w))
    cases = {
        "off_left": ('<text class="t" x="100" y="35" text-anchor="end">%s</text>' % ("W" * 20),
                     ["outside the figure", "left edge"]),
        "off_right": ('<text class="t" x="380" y="35">%s</text>' % ("W" * 20),
                      ["outside the figure", "right edge"]),
        "overlap": ('<text class="t" x="10" y="30">first text</text>'
                    '<text class="t" x="40" y="36">second text</text>', ["overlap"]),
        "cut": ('<text class="t" x="10" y="30">a label cut\u2026</text>', ["cut short"]),
        "fine": ('<text class="t" x="10" y="30">%s</text>' % text, []),
    }
    for name, (body, want) in cases.items():
        path = os.path.join(tmp, "checker_%s.svg" % name)
        with open(path, "w") as f:
            f.write(svg_doc(body))
        found = cf.problems(path, tmp)
        for w_ in want:
            if not any(w_ in p for p in found):
                fail("the checker missed '%s' in %s: %s" % (w_, name, found))
        if not want and found:
            fail("the checker complains about a good figure: %s" % found)


def run(cmd, cwd):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        fail("%s exited %d: %s" % (" ".join(cmd[1:3]), r.returncode, r.stderr.strip()[-400:]))
    return r.returncode == 0


def write_figures(bptt, gallery, geoseg, data, d):
    """Every figure the program writes, and the gallery's; their paths."""
    small = ["--data", data, "--max-tokens", "3000", "--hidden", "16", "--batch", "4",
             "--steps", "20", "--quiet"]
    task = ["--task", "adding:20", "--cell", "linear", "--hidden", "8", "--quiet"]
    jobs = {
        "train.svg": ["train"] + small + ["--epochs", "3", "--val-fraction", "0.1"],
        "train_task.svg": ["train"] + task + ["--epochs", "2"],
        "compare_val.svg": ["compare"] + small + ["--epochs", "2", "--val-fraction", "0.1",
                                                   "--truncation", "full,fixed:5,random:0.2,tbptt:5,10"],
        "compare_geoseg.svg": ["compare"] + small + ["--epochs", "2", "--plugin", geoseg,
                                                      "--truncation", "full,geoseg:mean=6,min=2"],
        "compare_task.svg": ["compare"] + task + ["--epochs", "2", "--truncation", "full,fixed:5"],
        "analyze.svg": ["analyze", "--cell", "rnn_tanh", "--hidden", "32", "--init", "spectral:1.2"],
        "analyze_lstm.svg": ["analyze", "--cell", "lstm", "--hidden", "8", "--lags", "10"],
        "analyze_influence.svg": ["analyze", "--cell", "influence", "--hidden", "8", "--lags", "10"],
    }
    paths = []
    for name, args in jobs.items():
        if run([bptt] + args + ["--plot", name], d):
            paths.append(os.path.join(d, name))
    if run([bptt, "demo", "--out", "demo"], d):
        for name in ("influence.svg", "lags.svg", "analyze-linear-spectral-1.2.svg", "text.svg"):
            paths.append(os.path.join(d, "demo", name))
    os.makedirs(os.path.join(d, "gallery"))
    if run([gallery, os.path.join(d, "gallery")], d):
        paths += sorted(os.path.join(d, "gallery", n) for n in os.listdir(os.path.join(d, "gallery")))
    return paths


def main(argv):
    if len(argv) != 5:
        print(__doc__)
        return 2
    bptt, gallery, geoseg, data = (os.path.abspath(a) for a in argv[1:])
    why = cf.unavailable()
    if why:
        print("SKIP: " + why)
        return cf.SKIP
    with tempfile.TemporaryDirectory(prefix="bptt_figures_") as d:
        check_the_checker(d)
        for path in write_figures(bptt, gallery, geoseg, data, d):
            if not os.path.exists(path):
                fail("%s was not written" % os.path.relpath(path, d))
                continue
            found = cf.problems(path, d)
            for p in found:
                fail("%s: %s" % (os.path.relpath(path, d), p))
            if not found:
                print("ok   %s" % os.path.relpath(path, d))
    print("%d problem(s)" % len(failures) if failures else "every figure keeps its text on the page")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
