#!/usr/bin/env python3
"""check_figures.py: is every word of a figure the program writes on the page?

Two checks that do not trust tools/svg.c's own idea of how wide its text is:
  (a) ink at the edges: the SVG is rendered with rsvg-convert (real fonts, real
      metrics) and the outermost pixel rows and columns must be background;
      text running off the page leaves ink there. The PNGs are decoded here
      (zlib and the five row filters), no imaging library needed.
  (b) text boxes: every <text> is measured with the advance widths of the font
      it names, read from the DejaVu TrueType files (cmap and hmtx tables), and
      its box, after the transforms of its groups, must lie inside the viewBox,
      must not overlap another text's box, and must not end in an ellipsis (a
      label cut short).

usage: check_figures.py FILE.svg...    exit 0 all good, 1 a problem (listed),
                                        77 rsvg-convert or the DejaVu fonts missing
As a module: problems(svg_path, png_dir) returns the list of problems."""
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
import zlib

FONT_DIR = "/usr/share/fonts/truetype/dejavu"
FONTS = {("sans", False): "DejaVuSans.ttf", ("sans", True): "DejaVuSans-Bold.ttf",
         ("mono", False): "DejaVuSansMono.ttf", ("mono", True): "DejaVuSansMono-Bold.ttf"}
SKIP = 77
SVG_NS = "http://www.w3.org/2000/svg"
EDGE = 2        # pixel rows/columns at each edge that must be background
INK = 245       # a channel below this (on an opaque pixel) is ink
OVERLAP = 0.5   # pixels two text boxes may share (antialiasing, rounding)


# ---- TrueType advance widths ----------------------------------------------------------

class Font:
    """Advance widths and vertical extent of one TrueType file, in ems."""

    def __init__(self, path):
        data = open(path, "rb").read()
        n = struct.unpack(">H", data[4:6])[0]
        tables = {}
        for i in range(n):
            tag, _, off, length = struct.unpack(">4sIII", data[12 + 16 * i:28 + 16 * i])
            tables[tag.decode("latin-1")] = (off, length)
        head = tables["head"][0]
        self.upem = struct.unpack(">H", data[head + 18:head + 20])[0]
        hhea = tables["hhea"][0]
        asc, desc = struct.unpack(">hh", data[hhea + 4:hhea + 8])
        self.ascent, self.descent = asc / self.upem, -desc / self.upem
        n_metrics = struct.unpack(">H", data[hhea + 34:hhea + 36])[0]
        hmtx = tables["hmtx"][0]
        self.advance = [struct.unpack(">H", data[hmtx + 4 * i:hmtx + 4 * i + 2])[0]
                        for i in range(n_metrics)]
        self.cmap = self._cmap(data, tables["cmap"][0])

    @staticmethod
    def _cmap(data, base):
        """code point -> glyph id from the Unicode subtable (format 12 or 4)."""
        n = struct.unpack(">H", data[base + 2:base + 4])[0]
        subs = {}
        for i in range(n):
            plat, enc, off = struct.unpack(">HHI", data[base + 4 + 8 * i:base + 12 + 8 * i])
            subs[(plat, enc)] = base + off
        for key in ((3, 10), (0, 4), (3, 1), (0, 3)):
            if key not in subs:
                continue
            at = subs[key]
            fmt = struct.unpack(">H", data[at:at + 2])[0]
            if fmt == 12:
                return Font._format12(data, at)
            if fmt == 4:
                return Font._format4(data, at)
        raise ValueError("no Unicode cmap subtable")

    @staticmethod
    def _format12(data, at):
        groups = struct.unpack(">I", data[at + 12:at + 16])[0]
        m = {}
        for g in range(groups):
            start, end, gid = struct.unpack(">III", data[at + 16 + 12 * g:at + 28 + 12 * g])
            for c in range(start, end + 1):
                m[c] = gid + c - start
        return m

    @staticmethod
    def _format4(data, at):
        segs = struct.unpack(">H", data[at + 6:at + 8])[0] // 2
        arr = lambda k: struct.unpack(">%dH" % segs, data[at + 14 + k * 2 * segs + (2 if k else 0):
                                                           at + 14 + (k + 1) * 2 * segs + (2 if k else 0)])
        ends, starts, deltas, ro_at = arr(0), arr(1), arr(2), at + 16 + 6 * segs
        ranges = struct.unpack(">%dH" % segs, data[ro_at:ro_at + 2 * segs])
        m = {}
        for s in range(segs):
            for c in range(starts[s], ends[s] + 1):
                if c == 0xFFFF:
                    continue
                if ranges[s] == 0:
                    m[c] = (c + deltas[s]) & 0xFFFF
                else:
                    p = ro_at + 2 * s + ranges[s] + 2 * (c - starts[s])
                    g = struct.unpack(">H", data[p:p + 2])[0]
                    m[c] = (g + deltas[s]) & 0xFFFF if g else 0
        return m

    def width(self, text):
        """Advance width of text in ems; a character the font lacks counts 1 em
        (a fallback font draws it, about that wide)."""
        w = 0
        for ch in text:
            g = self.cmap.get(ord(ch))
            if g is None:
                w += 1.0
            else:
                w += self.advance[min(g, len(self.advance) - 1)] / self.upem
        return w


_fonts = {}


def font(family, bold):
    key = ("mono" if "mono" in family.lower() else "sans", bold)
    if key not in _fonts:
        _fonts[key] = Font(os.path.join(FONT_DIR, FONTS[key]))
    return _fonts[key]


def have_fonts():
    return all(os.path.exists(os.path.join(FONT_DIR, f)) for f in FONTS.values())


# ---- PNG -------------------------------------------------------------------------------

def png_rows(path):
    """(width, height, channels, rows): 8-bit RGB(A) or grey(+alpha) rows, unfiltered."""
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("%s is not a PNG" % path)
    at, idat, ihdr = 8, b"", None
    while at < len(data):
        length, tag = struct.unpack(">I4s", data[at:at + 8])
        body = data[at + 8:at + 8 + length]
        if tag == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat += body
        at += 12 + length
    w, h, depth, ctype, _, _, interlace = ihdr
    if depth != 8 or interlace:
        raise ValueError("%s: only 8-bit non-interlaced PNGs are read here" % path)
    ch = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
    raw, stride, rows, prev = zlib.decompress(idat), w * ch, [], bytearray(w * ch)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - ch] if i >= ch else 0
            b, c = prev[i], prev[i - ch] if i >= ch else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line)
        prev = line
    return w, h, ch, rows


def ink_pixels(png):
    """(x, y) of every pixel of the PNG that is not background."""
    w, h, ch, rows = png_rows(png)
    found = []
    for y in range(h):
        for x in range(w):
            px = rows[y][x * ch:(x + 1) * ch]
            colour = px[:3] if ch >= 3 else px[:1]
            opaque = px[-1] > 0 if ch in (2, 4) else True
            if opaque and min(colour) < INK:
                found.append((x, y))
    return found


def edge_ink(svg, png_dir):
    """Problems: ink in the outermost EDGE pixel rows/columns of the figure
    rendered by rsvg-convert. Only those strips are rendered (the document
    with its viewBox narrowed to each), which gives the same pixels as the
    whole page at a fraction of the decoding time."""
    ET.register_namespace("", SVG_NS)
    tree = ET.parse(svg)
    root = tree.getroot()
    x0, y0, w, h = [float(v) for v in root.get("viewBox").split()]
    strips = {"left": (x0, y0, EDGE, h), "right": (x0 + w - EDGE, y0, EDGE, h),
              "top": (x0, y0, w, EDGE), "bottom": (x0, y0 + h - EDGE, w, EDGE)}
    found = []
    for side, (sx, sy, sw, sh) in strips.items():
        root.set("viewBox", "%g %g %g %g" % (sx, sy, sw, sh))
        root.set("width", "%g" % sw)
        root.set("height", "%g" % sh)
        strip_svg = os.path.join(png_dir, "strip.svg")
        strip_png = os.path.join(png_dir, "strip_%s.png" % side)
        tree.write(strip_svg, encoding="utf-8", xml_declaration=True)
        r = subprocess.run(["rsvg-convert", strip_svg, "-o", strip_png],
                           capture_output=True, text=True)
        if r.returncode != 0:
            return ["rsvg-convert failed: %s" % r.stderr.strip()]
        hits = ink_pixels(strip_png)
        if hits:
            found.append("ink at the %s edge of the rendered figure (%d pixels, first at "
                         "x=%g y=%g)" % (side, len(hits), sx + hits[0][0], sy + hits[0][1]))
    return found


# ---- SVG text boxes ----------------------------------------------------------------------

def parse_style(root):
    """{selector: {property: value}} from the document's <style> blocks."""
    rules = {}
    for st in root.iter("{%s}style" % SVG_NS):
        for sel, body in re.findall(r"([^{}]+)\{([^}]*)\}", st.text or ""):
            decl = dict(d.split(":", 1) for d in body.split(";") if ":" in d)
            for s in sel.split(","):
                rules.setdefault(s.strip(), {}).update({k.strip(): v.strip() for k, v in decl.items()})
    return rules


def matmul(a, b):
    return (a[0] * b[0] + a[2] * b[1], a[1] * b[0] + a[3] * b[1],
            a[0] * b[2] + a[2] * b[3], a[1] * b[2] + a[3] * b[3],
            a[0] * b[4] + a[2] * b[5] + a[4], a[1] * b[4] + a[3] * b[5] + a[5])


def parse_transform(s):
    m = (1, 0, 0, 1, 0, 0)
    for op, args in re.findall(r"(\w+)\s*\(([^)]*)\)", s or ""):
        v = [float(x) for x in re.split(r"[\s,]+", args.strip()) if x]
        if op == "translate":
            t = (1, 0, 0, 1, v[0], v[1] if len(v) > 1 else 0)
        elif op == "rotate":
            r = math.radians(v[0])
            t = (math.cos(r), math.sin(r), -math.sin(r), math.cos(r), 0, 0)
        elif op == "scale":
            t = (v[0], 0, 0, v[1] if len(v) > 1 else v[0], 0, 0)
        else:
            raise ValueError("transform %s is not measured here" % op)
        m = matmul(m, t)
    return m


def length(v, size, default=0.0):
    """An SVG length in px: '12', '12px', '0.35em', '75%' (of size)."""
    if v is None:
        return default
    v = v.strip()
    if v.endswith("em"):
        return float(v[:-2]) * size
    if v.endswith("%"):
        return float(v[:-1]) / 100 * size
    return float(v[:-2] if v.endswith("px") else v)


def props(el, rules, inherited):
    """font-size, font-family, font-weight of el: inherited, then CSS rules by
    element and class, then its attributes, then its style attribute."""
    p = dict(inherited)
    tag = el.tag.split("}")[-1]
    layers = [rules.get(tag, {})] + [rules.get("." + c, {}) for c in (el.get("class") or "").split()]
    attrs = {k: el.get(k) for k in ("font-size", "font-family", "font-weight") if el.get(k)}
    style = dict(d.split(":", 1) for d in (el.get("style") or "").split(";") if ":" in d)
    for layer in layers + [attrs, {k.strip(): v.strip() for k, v in style.items()}]:
        for k in ("font-size", "font-family", "font-weight"):
            if k in layer:
                p[k] = length(layer[k], p["font-size"]) if k == "font-size" else layer[k]
    return p


def text_box(el, rules, inherited, m):
    """(label, (x0, y0, x1, y1)) of one <text> in page coordinates."""
    p = props(el, rules, inherited)
    x, y = float(el.get("x", 0)), float(el.get("y", 0)) + length(el.get("dy"), p["font-size"])
    runs = []  # (string, props, baseline shift)

    def walk(e, pe, shift):
        if e.text:
            runs.append((e.text, pe, shift))
        for c in e:
            pc = props(c, rules, pe)
            walk(c, pc, shift + length(c.get("dy"), pe["font-size"]))
            if c.tail:
                runs.append((c.tail, pe, shift))
    walk(el, p, 0.0)
    width = sum(font(pr["font-family"], pr.get("font-weight") == "bold").width(s) * pr["font-size"]
                for s, pr, _ in runs)
    anchor = el.get("text-anchor", "start")
    left = x - (width / 2 if anchor == "middle" else width if anchor == "end" else 0)
    top = min(y + sh - font(pr["font-family"], False).ascent * pr["font-size"] for _, pr, sh in runs)
    bottom = max(y + sh + font(pr["font-family"], False).descent * pr["font-size"]
                 for _, pr, sh in runs)
    m = matmul(m, parse_transform(el.get("transform")))
    corners = [(m[0] * cx + m[2] * cy + m[4], m[1] * cx + m[3] * cy + m[5])
               for cx in (left, left + width) for cy in (top, bottom)]
    label = "".join(s for s, _, _ in runs)
    return label, (min(c[0] for c in corners), min(c[1] for c in corners),
                   max(c[0] for c in corners), max(c[1] for c in corners))


def text_boxes(path):
    """(viewBox (x, y, w, h), [(label, box)]) of every text in the SVG file."""
    root = ET.parse(path).getroot()
    rules = parse_style(root)
    vb = [float(v) for v in root.get("viewBox").split()]
    top = {"font-size": 16.0, "font-family": root.get("font-family", "sans-serif"),
           "font-weight": "normal"}
    out = []

    def walk(e, m, inherited):
        tag = e.tag.split("}")[-1]
        if tag == "text":
            out.append(text_box(e, rules, inherited, m))
            return
        m2 = matmul(m, parse_transform(e.get("transform")))
        p = props(e, rules, inherited)
        for c in e:
            walk(c, m2, p)
    walk(root, (1, 0, 0, 1, 0, 0), top)
    return vb, out


def text_problems(path):
    vb, boxes = text_boxes(path)
    found = []
    x0, y0, x1, y1 = vb[0], vb[1], vb[0] + vb[2], vb[1] + vb[3]
    for label, b in boxes:
        if b[0] < x0 or b[1] < y0 or b[2] > x1 or b[3] > y1:
            found.append("text %r reaches outside the figure: box x %.1f..%.1f y %.1f..%.1f, "
                         "page %g x %g" % (label, b[0], b[2], b[1], b[3], vb[2], vb[3]))
        if label.rstrip().endswith("\u2026"):
            found.append("text %r is cut short" % label)
    boxes.sort(key=lambda lb: lb[1][0])
    for i, (la, a) in enumerate(boxes):
        for lb, b in boxes[i + 1:]:
            if b[0] > a[2] - OVERLAP:
                break
            if min(a[2], b[2]) - max(a[0], b[0]) > OVERLAP and \
               min(a[3], b[3]) - max(a[1], b[1]) > OVERLAP:
                found.append("texts %r and %r overlap (x %.1f..%.1f / %.1f..%.1f, "
                             "y %.1f..%.1f / %.1f..%.1f)"
                             % (la, lb, a[0], a[2], b[0], b[2], a[1], a[3], b[1], b[3]))
    return found


def problems(svg, png_dir):
    """Every problem of one figure (png_dir: a folder for the renderings)."""
    return edge_ink(svg, png_dir) + text_problems(svg)


def unavailable():
    """Why the checks cannot run here, or None."""
    if not shutil.which("rsvg-convert"):
        return "rsvg-convert is not installed (Debian: librsvg2-bin)"
    if not have_fonts():
        return "the DejaVu fonts are not in %s (Debian: fonts-dejavu-core)" % FONT_DIR
    return None


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__)
        return 2
    why = unavailable()
    if why:
        print("SKIP: " + why)
        return SKIP
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for svg in argv[1:]:
            found = problems(svg, tmp)
            for f in found:
                print("FAIL %s: %s" % (svg, f))
            if not found:
                print("ok   %s" % svg)
            bad += bool(found)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
