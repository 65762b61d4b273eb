/* svg.c: renders bt_plot panels and segment pictures into one SVG document in
 * memory, then writes it atomically. Coordinates are pixels (one decimal);
 * every number that reaches the file has been checked finite first.
 */
#include "atomic.h"
#include "svg.h"
#include "svg_text.h"
#include "utf8.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- layout constants (pixels) ------------------------------------------- */

enum {
    PANEL_W = 600, PANEL_H = 400,
    MARGIN_L = 72, MARGIN_R = 18, MARGIN_T = 40, MARGIN_B = 56,
    FIG_TITLE_H = 40, FIG_TITLE_LINE = 22, /* and one line more per wrapped line */
    LEGEND_ROW = 18, LEGEND_LINE = 13, /* between entries; between lines of one entry */
    LEGEND_TEXT_W = 170,               /* a longer legend label wraps */
    SEG_LABEL_W = 240, SEG_LINE = 15,  /* a longer segments row label wraps */
    MAX_LINES = 12,                    /* lines one label may wrap onto */
    CELL_W = 13, ROW_H = 26, ROW_GAP = 8,
    MARKER_MAX_POINTS = 30, /* lines with at most this many points get markers */
};
/* Font sizes in pixels, as svg_style sets them; layout measures text with them. */
#define PX_FIG_TITLE 18.0
#define PX_TITLE 15.0
#define PX_LABEL 13.0
#define PX_TICK 11.0
#define PX_LEGEND 11.0
#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif
#define FONT_SANS "DejaVu Sans, Helvetica, Arial, sans-serif"
#define FONT_MONO "DejaVu Sans Mono, Menlo, Consolas, monospace"

/* Tableau 10, reordered so neighbours differ most and yellow comes late. */
static const char *const palette[] = {
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1",
    "#76b7b2", "#9c755f", "#ff9da7", "#edc948", "#7f7f7f",
};
#define PALETTE_N ((int)(sizeof palette / sizeof palette[0]))

/* ---- data ------------------------------------------------------------------ */

typedef enum { SERIES_LINE, SERIES_POINTS, SERIES_CIRCLE, SERIES_HLINE } series_kind;

typedef struct series {
    series_kind kind;
    char *label;   /* NULL: not in the legend */
    double *x, *y; /* [n]; circle: x[0] = cx, y[0] = cy, x[1] = r; hline: y[0] */
    int n;
    int colour;    /* index into the palette, unbounded (wraps into dashes) */
} series;

struct bt_plot {
    char *title, *xlabel, *ylabel;
    bool logx, logy, equal;
    series *s;
    int ns, cap;
};

typedef struct segments {
    char *title;
    char *text;   /* the drawn characters, UTF-8 */
    int *off;     /* [n + 1] byte offset of each character in text */
    int n;        /* characters drawn */
    char **labels;          /* [n_rows] */
    unsigned char **cuts;   /* [n_rows][n] */
    int n_rows;
} segments;

typedef struct item {
    bt_plot *plot;     /* or */
    segments *seg;
} item;

struct bt_figure {
    char *title;
    int cols;
    item *items;
    int n, cap;
};

/* ---- small helpers ----------------------------------------------------------- */

static char *str_dup(const char *s)
{
    if (!s || !*s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = bt_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* Copies s into *dst; false only when s was non-empty and the copy failed. */
static bool str_set(char **dst, const char *s)
{
    *dst = str_dup(s);
    return *dst || !s || !*s;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* One character of s[0..len) through the shared codec (utf8.h). Returns its
 * byte length (>= 1 when len >= 1) and the code point, or U+FFFD for a
 * malformed sequence (consuming one byte), so any byte string becomes valid
 * XML text; U+FFFE and U+FFFF, which XML refuses, become U+FFFD too. */
static int utf8_next(const unsigned char *s, size_t len, uint32_t *cp)
{
    *cp = 0xFFFD;
    if (len == 0)
        return 0;
    uint32_t v;
    int n = bt_utf8_decode(s, len, &v);
    if (n == 0 || v == 0xFFFE || v == 0xFFFF)
        return 1;
    *cp = v;
    return n;
}

/* ---- output buffer --------------------------------------------------------- */

/* A growing string; an allocation failure is sticky and checked once at the end. */
typedef struct sbuf {
    char *s;
    size_t len, cap;
    bool oom;
} sbuf;

static bool sb_reserve(sbuf *b, size_t extra)
{
    if (b->oom)
        return false;
    if (b->len + extra + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *s = bt_realloc(b->s, cap);
    if (!s) {
        b->oom = true;
        return false;
    }
    b->s = s;
    b->cap = cap;
    return true;
}

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (!sb_reserve(b, n))
        return;
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void sb_puts(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[256];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof tmp) {
        sb_put(b, tmp, (size_t)n);
        return;
    }
    if (!sb_reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* A pixel coordinate with one decimal, written by hand so that neither the
 * locale's decimal comma nor a stray NaN can reach the file. */
static void sb_px(sbuf *b, double v)
{
    if (!isfinite(v))
        v = 0;
    if (v > 1e7)
        v = 1e7;
    if (v < -1e7)
        v = -1e7;
    long long t = llround(v * 10);
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%s%lld.%lld", t < 0 ? "-" : "", llabs(t) / 10, llabs(t) % 10);
    /* "12.0" -> "12" keeps long polylines short. */
    if (n >= 2 && tmp[n - 1] == '0' && tmp[n - 2] == '.')
        n -= 2;
    sb_put(b, tmp, (size_t)n);
}

/* x="X" y="Y": a position inside an element's attributes. */
static void sb_xy(sbuf *b, double x, double y)
{
    sb_puts(b, "x=\"");
    sb_px(b, x);
    sb_puts(b, "\" y=\"");
    sb_px(b, y);
    sb_puts(b, "\"");
}

/* x1="" x2="" y1="" y2=""/>: the end of a <line> whose start the caller wrote. */
static void sb_line_end(sbuf *b, double x1, double x2, double y1, double y2)
{
    sb_puts(b, "x1=\"");
    sb_px(b, x1);
    sb_puts(b, "\" x2=\"");
    sb_px(b, x2);
    sb_puts(b, "\" y1=\"");
    sb_px(b, y1);
    sb_puts(b, "\" y2=\"");
    sb_px(b, y2);
    sb_puts(b, "\"/>\n");
}

/* A rectangle's x="" y="" width="" height="" attributes. */
static void sb_box(sbuf *b, double x, double y, double w, double h)
{
    sb_xy(b, x, y);
    sb_puts(b, " width=\"");
    sb_px(b, w);
    sb_puts(b, "\" height=\"");
    sb_px(b, h);
    sb_puts(b, "\"");
}

/* <g transform="translate(ox,oy)">: a panel's group. */
static void sb_group(sbuf *b, double ox, double oy)
{
    sb_puts(b, "<g transform=\"translate(");
    sb_px(b, ox);
    sb_puts(b, ",");
    sb_px(b, oy);
    sb_puts(b, ")\">\n");
}

/* XML text or attribute content from the first len bytes of s: escapes
 * markup characters, turns malformed UTF-8 and control characters XML
 * forbids into U+FFFD. Never cut: figures show their labels whole. */
static void sb_esc_len(sbuf *b, const char *s, size_t len)
{
    for (size_t i = 0; s && i < len;) {
        uint32_t cp;
        int k = utf8_next((const unsigned char *)s + i, len - i, &cp);
        switch (cp) {
        case '&': sb_puts(b, "&amp;"); break;
        case '<': sb_puts(b, "&lt;"); break;
        case '>': sb_puts(b, "&gt;"); break;
        case '"': sb_puts(b, "&quot;"); break;
        case '\'': sb_puts(b, "&apos;"); break;
        default:
            if (cp == 0xFFFD || cp < 0x20 || cp == 0x7F)
                sb_puts(b, cp == '\t' || cp == '\n' || cp == '\r' ? " " : "\uFFFD");
            else
                sb_put(b, s + i, (size_t)k);
        }
        i += (size_t)k;
    }
}

static void sb_esc(sbuf *b, const char *s) { sb_esc_len(b, s, s ? strlen(s) : 0); }

/* <text ATTRS x="X" y="Y"AFTER>text</text>, bytes [0, len) of text escaped. */
static void sb_text_len(sbuf *b, const char *attrs, double x, double y, const char *after,
                        const char *text, size_t len)
{
    sb_printf(b, "<text %s ", attrs);
    sb_xy(b, x, y);
    sb_printf(b, "%s>", after);
    sb_esc_len(b, text, len);
    sb_puts(b, "</text>\n");
}

/* A font size that fits text of width w (measured at px) into room pixels:
 * px, or smaller when the text is wider. */
static double fit_px(double w, double px, double room)
{
    return w > room && w > 0 && room > 0 ? px * room / w : px;
}

/* A one-line text centred at x, set in a smaller font when wider than
 * [lo, hi] and shifted to stay within it: cls and px its class and size. */
static void sb_text_fit(sbuf *b, const char *cls, double px, bool bold, double x, double y,
                        double lo, double hi, const char *text)
{
    double w = bt_svgtext_width(text, strlen(text), px, bold);
    double size = fit_px(w, px, hi - lo);
    w *= size / px;
    x = x - w / 2 < lo ? lo + w / 2 : x + w / 2 > hi ? hi - w / 2 : x;
    sb_printf(b, "<text class=\"%s\" text-anchor=\"middle\" ", cls);
    if (size < px) {
        sb_puts(b, "style=\"font-size:");
        sb_px(b, floor(size * 10) / 10);
        sb_puts(b, "px\" ");
    }
    sb_xy(b, x, y);
    sb_puts(b, ">");
    sb_esc(b, text);
    sb_puts(b, "</text>\n");
}

/* ---- axes ---------------------------------------------------------------- */

typedef struct axis {
    bool log;
    bool whole;         /* every value is a whole number: no ticks between them */
    double lo, hi;      /* linear: data units; log: decade exponents */
    double p0, p1;      /* pixel positions of lo and hi */
} axis;

/* Where an axis's tick labels reach: the widest one, and the pixel extent
 * along the axis (for the horizontal one: how far left and right). */
typedef struct tick_ext {
    double w, lo, hi;
} tick_ext;

static bool axis_ok(const axis *a, double v)
{
    return isfinite(v) && (!a->log || v > 0);
}

/* Data value to pixel. Linear spans use halves so that a range of
 * -DBL_MAX..DBL_MAX does not overflow to inf. */
static double axis_px(const axis *a, double v)
{
    double t;
    if (a->log)
        t = (log10(v) - a->lo) / (a->hi - a->lo);
    else
        t = (v * 0.5 - a->lo * 0.5) / (a->hi * 0.5 - a->lo * 0.5);
    double px = a->p0 + t * (a->p1 - a->p0);
    return isfinite(px) ? px : a->p0;
}

static double clamp_real(double v)
{
    return v > DBL_MAX ? DBL_MAX : v < -DBL_MAX ? -DBL_MAX : v;
}

/* Fits the axis to data in [lo, hi] (has = false: no data), with a margin
 * like matplotlib's: 8% of the half span on a linear axis, 5% of the span on
 * a log axis, which shows at least 0.3 decades. Log axes do not snap to whole
 * decades, so that curves a few percent apart use the panel's height. */
static void axis_fit(axis *a, bool has, double lo, double hi)
{
    if (a->log) {
        if (!has) {
            a->lo = 0, a->hi = 1;
            return;
        }
        double l0 = log10(lo), l1 = log10(hi), span = l1 - l0;
        double pad = span < 0.3 ? (0.3 - span) / 2 : 0.05 * span;
        a->lo = l0 - pad;
        a->hi = l1 + pad;
        return;
    }
    if (!has) {
        a->lo = 0, a->hi = 1;
        return;
    }
    double half = hi * 0.5 - lo * 0.5;
    double mag = fmax(fabs(lo), fabs(hi));
    if (half <= 1e-12 * mag || half == 0) {
        /* All equal (up to rounding): centre the value in a small span. */
        double c = lo * 0.5 + hi * 0.5;
        double d = c == 0 ? 1 : fabs(c) * 0.1;
        a->lo = clamp_real(c - d);
        a->hi = clamp_real(c + d);
        return;
    }
    a->lo = clamp_real(lo - 0.08 * half);
    a->hi = clamp_real(hi + 0.08 * half);
}

/* A 1-2-5 step giving about target ticks over the axis. */
static double nice_step(const axis *a, int target)
{
    double raw = (a->hi * 0.5 - a->lo * 0.5) / target * 2; /* halves: no overflow */
    double mag = pow(10, floor(log10(raw)));
    double f = raw / mag;
    double m = f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10;
    double step = m * mag;
    return isfinite(step) && step > 0 ? step : 1;
}

/* Rewrites what snprintf made: a locale comma becomes a point, "e+06" becomes
 * "e6", a leading '-' becomes a typographic minus. */
static void tidy_number(const char *in, char *out, size_t len)
{
    char tmp[48]; /* room for the "\u2212" prefix in out[64] */
    size_t j = 0;
    for (size_t i = 0; in[i] && j + 1 < sizeof tmp; i++) {
        char c = in[i];
        if (c == ',')
            c = '.';
        if (c == 'e') {
            tmp[j++] = 'e';
            i++;
            if (in[i] == '-')
                tmp[j++] = '-';
            else if (in[i] != '+')
                i--;
            while (in[i + 1] == '0' && in[i + 2])
                i++;
            continue;
        }
        tmp[j++] = c;
    }
    tmp[j] = '\0';
    if (tmp[0] == '-' && strcmp(tmp, "-0") != 0)
        snprintf(out, len, "\u2212%s", tmp + 1);
    else
        snprintf(out, len, "%s", tmp[0] == '-' ? tmp + 1 : tmp);
}

/* A tick label for v on a linear axis with the given step: as many decimals
 * as the step needs, scientific notation for very large or small values. */
static void format_tick(double v, double step, double maxabs, char *out, size_t len)
{
    char raw[64];
    if (maxabs >= 1e6 || maxabs < 1e-4) {
        if (v == 0) {
            snprintf(out, len, "0");
            return;
        }
        int digits = (int)(floor(log10(maxabs)) - floor(log10(step)));
        digits = digits < 0 ? 0 : digits > 10 ? 10 : digits;
        snprintf(raw, sizeof raw, "%.*e", digits, v);
        /* Drop trailing zeros of the mantissa: 1.50e6 -> 1.5e6. */
        char *e = strchr(raw, 'e');
        if (e) {
            char *z = e;
            while (z > raw && z[-1] == '0')
                z--;
            if (z > raw && z[-1] == '.')
                z--;
            memmove(z, e, strlen(e) + 1);
        }
    } else {
        int dec = (int)-floor(log10(step) + 1e-9);
        dec = dec < 0 ? 0 : dec > 12 ? 12 : dec;
        snprintf(raw, sizeof raw, "%.*f", dec, v);
    }
    tidy_number(raw, out, len);
}

/* Notes a tick label of width w at pos in e. */
static void ext_add(tick_ext *e, double pos, double w)
{
    e->w = fmax(e->w, w);
    e->lo = fmin(e->lo, pos - w / 2);
    e->hi = fmax(e->hi, pos + w / 2);
}

/* One grid line across the plot at pos on axis x (the horizontal one) or y;
 * the other axis spans [q0, q1] in pixels. */
static void grid_line(sbuf *b, bool x, const char *cls, double pos, double q0, double q1)
{
    const char *along = x ? "x" : "y", *across = x ? "y" : "x";
    sb_printf(b, "<line class=\"%s\" %s1=\"", cls, along);
    sb_px(b, pos);
    sb_printf(b, "\" %s2=\"", along);
    sb_px(b, pos);
    sb_printf(b, "\" %s1=\"", across);
    sb_px(b, q0);
    sb_printf(b, "\" %s2=\"", across);
    sb_px(b, q1);
    sb_puts(b, "\"/>\n");
}

/* Opens the <text> of a tick label at pos: below an x tick, left of a y tick. */
static void label_open(sbuf *b, bool x, double pos, double q0)
{
    sb_puts(b, x ? "<text class=\"tick\" text-anchor=\"middle\" "
                 : "<text class=\"tick\" text-anchor=\"end\" ");
    sb_xy(b, x ? pos : q0 - 7, x ? q0 + 18 : pos);
    sb_puts(b, x ? ">" : " dy=\"0.35em\">");
}

/* A plain tick label lab at pos. */
static void tick_label(sbuf *b, bool x, double pos, double q0, const char *lab, tick_ext *e)
{
    label_open(b, x, pos, q0);
    sb_printf(b, "%s</text>\n", lab);
    ext_add(e, pos, bt_svgtext_width(lab, strlen(lab), PX_TICK, false));
}

/* "10" with exponent k as a superscript; a minus sign is typographic. */
static void tick_decade(sbuf *b, bool x, double pos, double q0, int k, tick_ext *e)
{
    char exp[16];
    snprintf(exp, sizeof exp, "%s%d", k < 0 ? "\u2212" : "", k < 0 ? -k : k);
    label_open(b, x, pos, q0);
    sb_printf(b, "10<tspan dy=\"-0.5em\" font-size=\"75%%\">%s</tspan></text>\n", exp);
    ext_add(e, pos, bt_svgtext_width("10", 2, PX_TICK, false) +
                        bt_svgtext_width(exp, strlen(exp), PX_TICK * 0.75, false));
}

/* Pixel position of log10(value) = v on a log axis. */
static double log_pos(const axis *a, double v)
{
    return a->p0 + (v - a->lo) / (a->hi - a->lo) * (a->p1 - a->p0);
}

/* m x 10^k as a plain number ("0.02", "500") within 10^-4..10^5, else "2e7". */
static void log_value_label(int m, int k, char *lab, size_t len)
{
    char raw[64];
    if (k >= -4 && k <= 5)
        snprintf(raw, sizeof raw, "%.*f", k < 0 ? -k : 0, m * pow(10, k));
    else
        snprintf(raw, sizeof raw, "%de%d", m, k);
    tidy_number(raw, lab, len);
}

/* The minor lines 2..9 x 10^k of decade k that lie on a log axis, labelled
 * at 2 and 5 when labels is set. */
static void log_minor_ticks(sbuf *b, const axis *a, bool x, int k, bool labels, double q0,
                            double q1, tick_ext *e)
{
    for (int m = 2; m <= 9; m++) {
        double v = k + log10(m);
        if (v < a->lo || v > a->hi)
            continue;
        grid_line(b, x, "minor", log_pos(a, v), q0, q1);
        if (labels && (m == 2 || m == 5)) {
            char lab[64];
            log_value_label(m, k, lab, sizeof lab);
            tick_label(b, x, log_pos(a, v), q0, lab, e);
        }
    }
}

/* A log axis spanning less than a decade: round values in 1-2-5 steps placed
 * on the log scale (decades alone would leave it bare), a label left out
 * where it would crowd the previous one. False when the values overflow. */
static bool log_axis_narrow(sbuf *b, const axis *a, bool x, double q0, double q1, tick_ext *e)
{
    axis lin = {.lo = pow(10, a->lo), .hi = pow(10, a->hi)};
    if (!(lin.lo > 0) || !isfinite(lin.hi) || lin.hi <= lin.lo)
        return false;
    int target = (int)(fabs(a->p1 - a->p0) / (x ? 90 : 45));
    double step = nice_step(&lin, target < 3 ? 3 : target), last = NAN;
    /* Round values crowd at the top of a log scale: widen the step (1, 2, 5,
     * 10...) until the top two ticks are a label's room apart. */
    for (int i = 0; i < 6; i++) {
        double v1 = floor(lin.hi / step) * step, v0 = v1 - step;
        if (v0 <= lin.lo || fabs(axis_px(a, v1) - axis_px(a, v0)) >= (x ? 70 : 24))
            break;
        double mag = pow(10, floor(log10(step) + 1e-9)), m = step / mag;
        step = (m < 1.5 ? 2 : m < 3.5 ? 5 : 10) * mag;
    }
    for (double k = ceil(lin.lo / step), n = 0; k * step <= lin.hi && n < 60; k++, n++) {
        double pos = axis_px(a, k * step);
        grid_line(b, x, "grid", pos, q0, q1);
        char lab[64];
        format_tick(k * step, step, lin.hi, lab, sizeof lab);
        if (isnan(last) || fabs(pos - last) >= (x ? 60 : 18)) {
            tick_label(b, x, pos, q0, lab, e);
            last = pos;
        }
    }
    return true;
}

/* Decade lines labelled 10^k (thinned to about 8 labels), minor lines 2..9
 * within up to 6 decades, labelled at 2 and 5 within 2.5. */
static void log_axis_draw(sbuf *b, const axis *a, bool x, double q0, double q1, tick_ext *e)
{
    double span = a->hi - a->lo;
    if (span < 1 && log_axis_narrow(b, a, x, q0, q1, e))
        return;
    int k0 = (int)ceil(a->lo - 1e-9), k1 = (int)floor(a->hi + 1e-9), ndec = k1 - k0;
    /* At most about 8 decade labels, every 1, 2, 5, 10, 20, 50... decades. */
    int stride = 1;
    for (int m = 1; stride * 8 < ndec; m *= 10)
        stride = ndec <= 8 * m ? m : ndec <= 16 * m ? 2 * m : ndec <= 40 * m ? 5 * m : 10 * m;
    for (int k = k0 - 1; k <= k1; k++) {
        bool labelled = ((k % stride) + stride) % stride == 0;
        if (k >= k0 && (labelled || ndec <= 30))
            grid_line(b, x, labelled ? "grid" : "minor", log_pos(a, k), q0, q1);
        /* Beside the plain 2 and 5 labels of a short axis, plain decades too. */
        bool plain = span <= 2.5 && k >= -4 && k <= 5;
        char lab[64];
        if (k >= k0 && labelled && plain) {
            log_value_label(1, k, lab, sizeof lab);
            tick_label(b, x, log_pos(a, k), q0, lab, e);
        } else if (k >= k0 && labelled) {
            tick_decade(b, x, log_pos(a, k), q0, k, e);
        }
        if (span <= 6)
            log_minor_ticks(b, a, x, k, span <= 2.5, q0, q1, e);
    }
}

/* Grid lines, ticks and labels for one axis. x: the horizontal axis. The
 * other axis spans [q0, q1] in pixels. Where the labels reach goes to e. */
static void axis_draw(sbuf *b, const axis *a, bool x, double q0, double q1, tick_ext *e)
{
    *e = (tick_ext){0, INFINITY, -INFINITY};
    if (a->log) {
        log_axis_draw(b, a, x, q0, q1, e);
        return;
    }
    double lo_px = fmin(a->p0, a->p1), hi_px = fmax(a->p0, a->p1);
    int target = (int)((hi_px - lo_px) / (x ? 90 : 55));
    double step = nice_step(a, target < 3 ? 3 : target);
    if (a->whole && step < 1)
        step = 1;
    double maxabs = fmax(fabs(a->lo), fabs(a->hi));
    double k0 = ceil(a->lo / step), k1 = floor(a->hi / step);
    for (double k = k0, count = 0; k <= k1 && count < 60; k++, count++) {
        double v = k * step;
        if (fabs(v) < step * 1e-9)
            v = 0; /* no "-0" or 2.7e-17 from rounding */
        double pos = axis_px(a, v);
        grid_line(b, x, v == 0 ? "zero" : "grid", pos, q0, q1);
        char lab[64];
        format_tick(v, step, maxabs, lab, sizeof lab);
        tick_label(b, x, pos, q0, lab, e);
    }
}

/* ---- plots ------------------------------------------------------------------ */

bt_plot *bt_plot_new(const char *title, const char *xlabel, const char *ylabel)
{
    bt_plot *p = bt_calloc(1, sizeof *p);
    if (!p)
        return NULL;
    if (!str_set(&p->title, title) || !str_set(&p->xlabel, xlabel) ||
        !str_set(&p->ylabel, ylabel)) {
        bt_plot_free(p);
        return NULL;
    }
    return p;
}

void bt_plot_free(bt_plot *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->ns; i++) {
        bt_free(p->s[i].label);
        bt_free(p->s[i].x);
        bt_free(p->s[i].y);
    }
    bt_free(p->s);
    bt_free(p->title);
    bt_free(p->xlabel);
    bt_free(p->ylabel);
    bt_free(p);
}

void bt_plot_set_logx(bt_plot *p, bool on) { if (p) p->logx = on; }
void bt_plot_set_logy(bt_plot *p, bool on) { if (p) p->logy = on; }
void bt_plot_set_equal_aspect(bt_plot *p, bool on) { if (p) p->equal = on; }

/* Appends a series with copies of x and y (x NULL: 0, 1, ...). */
static bt_status plot_add(bt_plot *p, series_kind kind, const char *label, const double *x,
                          const double *y, int n)
{
    if (!p || n < 0 || (n > 0 && !y))
        return BT_ERR_ARG;
    if (p->ns == p->cap) {
        int cap = p->cap ? p->cap * 2 : 8;
        series *s = bt_realloc(p->s, (size_t)cap * sizeof *s);
        if (!s)
            return BT_ERR_NOMEM;
        p->s = s;
        p->cap = cap;
    }
    series s = {.kind = kind, .n = n, .colour = p->ns};
    size_t bytes = (size_t)(n > 0 ? n : 1) * sizeof(double);
    s.x = bt_malloc(bytes);
    s.y = bt_malloc(bytes);
    if (!s.x || !s.y || !str_set(&s.label, label)) {
        bt_free(s.x);
        bt_free(s.y);
        bt_free(s.label);
        return BT_ERR_NOMEM;
    }
    for (int i = 0; i < n; i++) {
        s.x[i] = x ? x[i] : i;
        s.y[i] = y[i];
    }
    p->s[p->ns++] = s;
    return BT_OK;
}

bt_status bt_plot_line(bt_plot *p, const char *label, const double *x, const double *y, int n)
{
    return plot_add(p, SERIES_LINE, label, x, y, n);
}

bt_status bt_plot_points(bt_plot *p, const char *label, const double *x, const double *y, int n)
{
    return plot_add(p, SERIES_POINTS, label, x, y, n);
}

bt_status bt_plot_circle(bt_plot *p, const char *label, double cx, double cy, double r)
{
    double x[2] = {cx, r}, y[2] = {cy, 0};
    return plot_add(p, SERIES_CIRCLE, label, x, y, 2);
}

bt_status bt_plot_hline(bt_plot *p, const char *label, double y)
{
    double x = 0;
    return plot_add(p, SERIES_HLINE, label, &x, &y, 1);
}

/* The circle as a closed polyline, so log axes and clipping need no special case. */
#define CIRCLE_STEPS 180
static void circle_point(const series *s, int i, double *x, double *y)
{
    double t = 2 * M_PI * i / CIRCLE_STEPS;
    *x = s->x[0] + s->x[1] * cos(t);
    *y = s->y[0] + s->x[1] * sin(t);
}

static const char *series_dash(const series *s)
{
    if (s->kind == SERIES_CIRCLE || s->kind == SERIES_HLINE)
        return " stroke-dasharray=\"6 4\"";
    /* Past the palette's end, colours repeat with a dash pattern. */
    static const char *const dashes[] = {"", " stroke-dasharray=\"8 3\"",
                                         " stroke-dasharray=\"2 3\"", " stroke-dasharray=\"8 3 2 3\""};
    return dashes[(s->colour / PALETTE_N) % 4];
}

/* A small filled circle at (px, py). */
static void sb_dot(sbuf *b, double px, double py, double r, const char *colour, const char *extra)
{
    sb_puts(b, "<circle cx=\"");
    sb_px(b, px);
    sb_puts(b, "\" cy=\"");
    sb_px(b, py);
    sb_puts(b, "\" r=\"");
    sb_px(b, r);
    sb_printf(b, "\" fill=\"%s\"%s/>\n", colour, extra);
}

/* Polylines through the drawable points of a series; a skipped value breaks
 * the line rather than joining its neighbours across the gap. */
static void draw_path(sbuf *b, const series *s, const axis *ax, const axis *ay, const char *colour)
{
    int n = s->kind == SERIES_CIRCLE ? CIRCLE_STEPS + 1 : s->n;
    bool open = false;
    int run = 0;
    double first_x = 0, first_y = 0;
    for (int i = 0; i <= n; i++) {
        double x = 0, y = 0;
        bool ok = false;
        if (i < n) {
            if (s->kind == SERIES_CIRCLE)
                circle_point(s, i, &x, &y);
            else
                x = s->x[i], y = s->y[i];
            ok = axis_ok(ax, x) && axis_ok(ay, y);
        }
        if (ok) {
            double px = axis_px(ax, x), py = axis_px(ay, y);
            if (run == 0) {
                first_x = px, first_y = py;
            } else {
                if (!open) {
                    sb_printf(b, "<polyline fill=\"none\" stroke=\"%s\"%s points=\"", colour,
                              series_dash(s));
                    sb_px(b, first_x);
                    sb_puts(b, ",");
                    sb_px(b, first_y);
                    open = true;
                }
                sb_puts(b, " ");
                sb_px(b, px);
                sb_puts(b, ",");
                sb_px(b, py);
            }
            run++;
        } else {
            if (open)
                sb_puts(b, "\"/>\n");
            else if (run == 1) /* a lone point would be invisible as a line */
                sb_dot(b, first_x, first_y, 3, colour, "");
            open = false;
            run = 0;
        }
    }
}

static void draw_series(sbuf *b, const series *s, const axis *ax, const axis *ay, double x0,
                        double x1)
{
    const char *colour = palette[s->colour % PALETTE_N];
    switch (s->kind) {
    case SERIES_LINE: {
        draw_path(b, s, ax, ay, colour);
        int drawable = 0;
        for (int i = 0; i < s->n; i++)
            drawable += axis_ok(ax, s->x[i]) && axis_ok(ay, s->y[i]);
        if (drawable > 1 && drawable <= MARKER_MAX_POINTS)
            for (int i = 0; i < s->n; i++)
                if (axis_ok(ax, s->x[i]) && axis_ok(ay, s->y[i]))
                    sb_dot(b, axis_px(ax, s->x[i]), axis_px(ay, s->y[i]), 2.5, colour, "");
        break;
    }
    case SERIES_POINTS:
        for (int i = 0; i < s->n; i++)
            if (axis_ok(ax, s->x[i]) && axis_ok(ay, s->y[i]))
                sb_dot(b, axis_px(ax, s->x[i]), axis_px(ay, s->y[i]), 3.5, colour,
                       " fill-opacity=\"0.8\" stroke=\"#fff\" stroke-width=\"0.6\"");
        break;
    case SERIES_CIRCLE:
        draw_path(b, s, ax, ay, colour);
        break;
    case SERIES_HLINE:
        if (axis_ok(ay, s->y[0])) {
            double py = axis_px(ay, s->y[0]);
            sb_printf(b, "<line stroke=\"%s\"%s ", colour, series_dash(s));
            sb_line_end(b, x0, x1, py, py);
        }
        break;
    }
}

/* Extends [lo, hi] with v when the axis can draw it. */
static void extend(const axis *a, double v, bool *has, double *lo, double *hi)
{
    if (!axis_ok(a, v))
        return;
    if (!*has || v < *lo)
        *lo = v;
    if (!*has || v > *hi)
        *hi = v;
    *has = true;
}

/* The data bounds of every drawable point; an hline counts on y only. */
static void plot_bounds(const bt_plot *p, const axis *ax, const axis *ay, bool *hasx, double *xlo,
                        double *xhi, bool *hasy, double *ylo, double *yhi)
{
    for (int j = 0; j < p->ns; j++) {
        const series *s = &p->s[j];
        if (s->kind == SERIES_HLINE) {
            extend(ay, s->y[0], hasy, ylo, yhi);
            continue;
        }
        int n = s->kind == SERIES_CIRCLE ? CIRCLE_STEPS : s->n;
        for (int i = 0; i < n; i++) {
            double x, y;
            if (s->kind == SERIES_CIRCLE)
                circle_point(s, i, &x, &y);
            else
                x = s->x[i], y = s->y[i];
            if (axis_ok(ax, x) && axis_ok(ay, y)) {
                extend(ax, x, hasx, xlo, xhi);
                extend(ay, y, hasy, ylo, yhi);
            }
        }
    }
}

/* True when every drawable x of the lines and points is a whole number
 * (epochs, steps, lags), so ticks between them would mean nothing. */
static bool whole_x(const bt_plot *p, const axis *ax, const axis *ay)
{
    int n = 0;
    for (int j = 0; j < p->ns; j++) {
        const series *s = &p->s[j];
        if (s->kind != SERIES_LINE && s->kind != SERIES_POINTS)
            continue;
        for (int i = 0; i < s->n; i++)
            if (axis_ok(ax, s->x[i]) && axis_ok(ay, s->y[i])) {
                if (s->x[i] != floor(s->x[i]))
                    return false;
                n++;
            }
    }
    return n > 0;
}

/* The width of the legend's text column: the widest line of any label, each
 * wrapped at LEGEND_TEXT_W; *n the number of entries. */
static double legend_text_w(const bt_plot *p, int *n)
{
    double w = 0;
    bt_svgtext_line lines[MAX_LINES];
    *n = 0;
    for (int i = 0; i < p->ns; i++) {
        const char *l = p->s[i].label;
        if (!l)
            continue;
        int k = bt_svgtext_wrap(l, PX_LEGEND, false, LEGEND_TEXT_W, lines, MAX_LINES);
        while (k-- > 0)
            w = fmax(w, bt_svgtext_width(l + lines[k].start, lines[k].end - lines[k].start,
                                         PX_LEGEND, false));
        (*n)++;
    }
    return w;
}

/* A panel's plot area in pixels: x from L to R, y from T (top) to B. */
typedef struct area {
    double L, R, T, B;
} area;

/* Both axes fitted to the data (hasx/hasy: anything drawable), and with an
 * equal aspect the same data units per pixel on both. */
static void plot_axes(const bt_plot *p, const area *r, axis *ax, axis *ay, bool *hasx, bool *hasy)
{
    *ax = (axis){.log = p->logx, .p0 = r->L, .p1 = r->R};
    *ay = (axis){.log = p->logy, .p0 = r->B, .p1 = r->T};
    ax->whole = whole_x(p, ax, ay);
    double xlo = 0, xhi = 0, ylo = 0, yhi = 0;
    *hasx = *hasy = false;
    plot_bounds(p, ax, ay, hasx, &xlo, &xhi, hasy, &ylo, &yhi);
    axis_fit(ax, *hasx, xlo, xhi);
    axis_fit(ay, *hasy, ylo, yhi);
    if (p->equal && !ax->log && !ay->log) {
        /* Same data units per pixel on both axes: widen the tighter one. */
        double hx = ax->hi * 0.5 - ax->lo * 0.5, hy = ay->hi * 0.5 - ay->lo * 0.5;
        double cx = ax->hi * 0.5 + ax->lo * 0.5, cy = ay->hi * 0.5 + ay->lo * 0.5;
        double u = fmax(hx / (r->R - r->L), hy / (r->B - r->T));
        hx = u * (r->R - r->L), hy = u * (r->B - r->T);
        ax->lo = clamp_real(cx - hx), ax->hi = clamp_real(cx + hx);
        ay->lo = clamp_real(cy - hy), ay->hi = clamp_real(cy + hy);
    }
}

/* The plot area of a panel pw wide, leaving legend_w on the right for the
 * legend, room on the left for the y tick labels and the y label, and the x
 * tick labels inside the panel; the axes fitted to it. The labels depend on
 * the area, so it is measured and refitted (a few passes settle it). */
static void plot_layout(const bt_plot *p, double pw, double legend_w, area *r, axis *ax, axis *ay,
                        bool *hasx, bool *hasy)
{
    *r = (area){MARGIN_L, pw - MARGIN_R - legend_w, MARGIN_T, PANEL_H - MARGIN_B};
    for (int pass = 0;; pass++) {
        plot_axes(p, r, ax, ay, hasx, hasy);
        if (pass == 3)
            break;
        sbuf scratch = {0};
        tick_ext ex, ey;
        axis_draw(&scratch, ax, true, r->B, r->T, &ex);
        axis_draw(&scratch, ay, false, r->L, r->R, &ey);
        bt_free(scratch.s);
        /* y tick labels end 7 px left of the axis; the rotated y label's
         * glyphs (baseline at x = 18) reach x = 22. */
        double need_l = ey.w + 7 + (p->ylabel ? 28 : 6), over_r = ex.hi - (pw - 4);
        if (need_l <= r->L + 0.5 && over_r <= 0)
            break;
        r->L = fmax(r->L, need_l);
        if (over_r > 0)
            r->R -= over_r;
    }
}

/* The frame, "no data to draw" when nothing was drawable, the axis labels
 * (in a smaller font when longer than the panel allows). */
static void plot_labels(sbuf *b, const bt_plot *p, const area *r, double pw, bool has_data)
{
    sb_puts(b, "<rect class=\"frame\" ");
    sb_box(b, r->L, r->T, r->R - r->L, r->B - r->T);
    sb_puts(b, "/>\n");
    if (!has_data) {
        sb_puts(b, "<text class=\"label\" fill=\"#999\" text-anchor=\"middle\" ");
        sb_xy(b, (r->L + r->R) / 2, (r->T + r->B) / 2);
        sb_puts(b, ">no data to draw</text>\n");
    }
    if (p->xlabel)
        sb_text_fit(b, "label", PX_LABEL, false, (r->L + r->R) / 2, r->B + 42, 4, pw - 4,
                    p->xlabel);
    if (p->ylabel) {
        double w = bt_svgtext_width(p->ylabel, strlen(p->ylabel), PX_LABEL, false);
        double size = fit_px(w, PX_LABEL, r->B - r->T + 20); /* T-10..B+10 */
        sb_puts(b, "<text class=\"label\" text-anchor=\"middle\" ");
        if (size < PX_LABEL) {
            sb_puts(b, "style=\"font-size:");
            sb_px(b, floor(size * 10) / 10);
            sb_puts(b, "px\" ");
        }
        sb_puts(b, "transform=\"translate(18,");
        sb_px(b, (r->T + r->B) / 2);
        sb_puts(b, ") rotate(-90)\">");
        sb_esc(b, p->ylabel);
        sb_puts(b, "</text>\n");
    }
}

/* A legend entry's key at (x, y): a dot for points, else a short line. */
static void legend_key(sbuf *b, const series *s, double x, double y)
{
    const char *colour = palette[s->colour % PALETTE_N];
    if (s->kind == SERIES_POINTS) {
        sb_dot(b, x + 10, y, 3.5, colour, "");
        return;
    }
    sb_printf(b, "<line stroke=\"%s\" stroke-width=\"2\"%s ", colour, series_dash(s));
    sb_line_end(b, x, x + 20, y, y);
}

/* The legend, outside the plot area so it never hides data; each label
 * whole, wrapped onto lines LEGEND_TEXT_W wide. As many entries as fit the
 * plot's height, then "... N more". */
static void plot_legend(sbuf *b, const bt_plot *p, const area *r)
{
    double lx = r->R + 14, ly = r->T + 8, bottom = r->B - 6;
    int left = 0;
    for (int i = 0; i < p->ns; i++)
        left += p->s[i].label != NULL;
    bt_svgtext_line lines[MAX_LINES];
    for (int i = 0; i < p->ns && left > 0; i++) {
        const series *s = &p->s[i];
        if (!s->label)
            continue;
        int n = bt_svgtext_wrap(s->label, PX_LEGEND, false, LEGEND_TEXT_W, lines, MAX_LINES);
        double last = ly + (n - 1) * LEGEND_LINE; /* this entry's last line */
        /* Room for it, and for the "more" line after it when others follow. */
        if (last + (left > 1 ? LEGEND_ROW : 0) > bottom) {
            sb_puts(b, "<text class=\"legend\" fill=\"#777\" ");
            sb_xy(b, lx, ly);
            sb_printf(b, " dy=\"0.35em\">\u2026 %d more</text>\n", left);
            return;
        }
        legend_key(b, s, lx, ly);
        for (int k = 0; k < n; k++)
            sb_text_len(b, "class=\"legend\"", lx + 26, ly + k * LEGEND_LINE, " dy=\"0.35em\"",
                        s->label + lines[k].start, lines[k].end - lines[k].start);
        ly = last + LEGEND_ROW;
        left--;
    }
}

/* Draws one panel pw wide with its top-left corner at (ox, oy); id makes
 * its clip path unique. */
static void render_plot(sbuf *b, const bt_plot *p, double ox, double oy, double pw, int id)
{
    int n_legend;
    double tw = legend_text_w(p, &n_legend), legend_w = n_legend ? 40 + tw : 0;
    area r;
    axis ax, ay;
    bool hasx, hasy;
    plot_layout(p, pw, legend_w, &r, &ax, &ay, &hasx, &hasy);

    sb_group(b, ox, oy);
    sb_printf(b, "<clipPath id=\"clip%d\"><rect ", id);
    sb_box(b, r.L - 6, r.T - 6, r.R - r.L + 12, r.B - r.T + 12);
    sb_puts(b, "/></clipPath>\n");
    if (p->title)
        sb_text_fit(b, "title", PX_TITLE, true, (r.L + r.R) / 2, 24, 4, pw - 4, p->title);
    tick_ext e;
    axis_draw(b, &ax, true, r.B, r.T, &e);
    axis_draw(b, &ay, false, r.L, r.R, &e);
    sb_printf(b, "<g clip-path=\"url(#clip%d)\" stroke-width=\"1.8\" stroke-linejoin=\"round\">\n",
              id);
    for (int i = 0; i < p->ns; i++)
        draw_series(b, &p->s[i], &ax, &ay, r.L, r.R);
    sb_puts(b, "</g>\n");
    plot_labels(b, p, &r, pw, hasx && hasy);
    plot_legend(b, p, &r);
    sb_puts(b, "</g>\n");
}

/* ---- segments ---------------------------------------------------------------- */

static void segments_free(segments *s)
{
    if (!s)
        return;
    for (int r = 0; r < s->n_rows; r++) {
        if (s->labels)
            bt_free(s->labels[r]);
        if (s->cuts)
            bt_free(s->cuts[r]);
    }
    bt_free(s->labels);
    bt_free(s->cuts);
    bt_free(s->title);
    bt_free(s->text);
    bt_free(s->off);
    bt_free(s);
}

/* Row r's label wrapped at SEG_LABEL_W (0 lines without a label). */
static int segments_label_lines(const segments *s, int r, bt_svgtext_line *lines)
{
    if (!s->labels[r])
        return 0;
    return bt_svgtext_wrap(s->labels[r], PX_LABEL, false, SEG_LABEL_W, lines, MAX_LINES);
}

/* Left of the characters: the widest line of any row's label, and a margin. */
static double segments_label_w(const segments *s)
{
    double w = 0;
    bt_svgtext_line lines[MAX_LINES];
    for (int r = 0; r < s->n_rows; r++)
        for (int k = segments_label_lines(s, r, lines); k-- > 0;)
            w = fmax(w, bt_svgtext_width(s->labels[r] + lines[k].start,
                                         lines[k].end - lines[k].start, PX_LABEL, false));
    return 24 + w;
}

/* Row r's height: a cell, or its label's lines when it wrapped onto more. */
static double segments_row_h(const segments *s, int r)
{
    bt_svgtext_line lines[MAX_LINES];
    return fmax(ROW_H, segments_label_lines(s, r, lines) * SEG_LINE + 4);
}

/* The characters, the segment counts after them, and the title above. */
static double segments_width(const segments *s)
{
    double x0 = segments_label_w(s);
    double title = s->title ? bt_svgtext_width(s->title, strlen(s->title), PX_TITLE, true) : 0;
    return x0 + fmax(s->n * CELL_W + 110, title + 10);
}

static double segments_height(const segments *s)
{
    double h = 64 + 10;
    for (int r = 0; r < s->n_rows; r++)
        h += segments_row_h(s, r) + ROW_GAP;
    return h;
}

/* One character in a cell: visible stand-ins for white space, so that where a
 * segment starts and ends can be seen. */
static void sb_cell_char(sbuf *b, const char *c, int len)
{
    uint32_t cp;
    utf8_next((const unsigned char *)c, (size_t)len, &cp);
    if (cp == ' ')
        sb_puts(b, "<tspan class=\"ws\">\u00b7</tspan>");
    else if (cp == '\n')
        sb_puts(b, "<tspan class=\"ws\">\u21b5</tspan>");
    else if (cp == '\t')
        sb_puts(b, "<tspan class=\"ws\">\u2192</tspan>");
    else if (cp < 0x20 || cp == 0x7F)
        sb_puts(b, "<tspan class=\"ws\">\uFFFD</tspan>");
    else {
        char tmp[8] = {0};
        memcpy(tmp, c, (size_t)(len < 7 ? len : 7));
        sb_esc(b, tmp);
    }
}

/* Row r's label, right-aligned before x0, its lines centred on mid. */
static void segments_label(sbuf *b, const segments *s, int r, double x0, double mid)
{
    bt_svgtext_line lines[MAX_LINES];
    int n = segments_label_lines(s, r, lines);
    char attrs[96];
    snprintf(attrs, sizeof attrs, "class=\"label\" text-anchor=\"end\" fill=\"%s\"",
             palette[r % PALETTE_N]);
    for (int k = 0; k < n; k++)
        sb_text_len(b, attrs, x0 - 10, mid + (k - (n - 1) / 2.0) * SEG_LINE, " dy=\"0.35em\"",
                    s->labels[r] + lines[k].start, lines[k].end - lines[k].start);
}

/* One row h high: its label, the segments shaded alternately with a bar at
 * each cut, the characters, and the count of segments. */
static void render_segment_row(sbuf *b, const segments *s, int r, double x0, double y0, double h)
{
    const char *colour = palette[r % PALETTE_N];
    const unsigned char *cut = s->cuts[r];
    double mid = y0 + h / 2;
    segments_label(b, s, r, x0, mid);
    int seg = 0;
    for (int i = 0; i < s->n; seg++) {
        int j = i + 1;
        while (j < s->n && !cut[j])
            j++;
        sb_printf(b, "<rect fill=\"%s\" fill-opacity=\"%s\" ", colour, seg % 2 ? "0.30" : "0.12");
        sb_box(b, x0 + i * CELL_W, y0, (j - i) * CELL_W, h);
        sb_puts(b, "/>\n");
        if (i > 0) {
            sb_printf(b, "<line stroke=\"%s\" stroke-width=\"2\" ", colour);
            sb_line_end(b, x0 + i * CELL_W, x0 + i * CELL_W, y0 - 3, y0 + h + 3);
        }
        i = j;
    }
    for (int i = 0; i < s->n; i++) {
        sb_puts(b, "<text class=\"cell\" text-anchor=\"middle\" ");
        sb_xy(b, x0 + (i + 0.5) * CELL_W, mid);
        sb_puts(b, " dy=\"0.35em\">");
        sb_cell_char(b, s->text + s->off[i], s->off[i + 1] - s->off[i]);
        sb_puts(b, "</text>\n");
    }
    sb_puts(b, "<text class=\"legend\" fill=\"#777\" ");
    sb_xy(b, x0 + s->n * CELL_W + 10, mid);
    sb_printf(b, " dy=\"0.35em\">%d segment%s</text>\n", seg, seg == 1 ? "" : "s");
}

static void render_segments(sbuf *b, const segments *s, double ox, double oy)
{
    double x0 = segments_label_w(s), y = 56;
    sb_group(b, ox, oy);
    if (s->title) {
        sb_puts(b, "<text class=\"title\" ");
        sb_xy(b, x0, 24);
        sb_puts(b, ">");
        sb_esc(b, s->title);
        sb_puts(b, "</text>\n");
    }
    /* A ruler of character positions every 10 cells. */
    for (int i = 0; i < s->n; i += 10) {
        sb_puts(b, "<text class=\"tick\" text-anchor=\"middle\" ");
        sb_xy(b, x0 + (i + 0.5) * CELL_W, y - 8);
        sb_printf(b, ">%d</text>\n", i);
    }
    for (int r = 0; r < s->n_rows; r++) {
        double h = segments_row_h(s, r);
        render_segment_row(b, s, r, x0, y, h);
        y += h + ROW_GAP;
    }
    sb_puts(b, "</g>\n");
}

/* ---- figures ------------------------------------------------------------------ */

bt_figure *bt_figure_new(const char *title, int cols)
{
    bt_figure *f = bt_calloc(1, sizeof *f);
    if (!f)
        return NULL;
    if (!str_set(&f->title, title)) {
        bt_free(f);
        return NULL;
    }
    f->cols = cols < 1 ? 1 : cols;
    return f;
}

void bt_figure_free(bt_figure *f)
{
    if (!f)
        return;
    for (int i = 0; i < f->n; i++) {
        bt_plot_free(f->items[i].plot);
        segments_free(f->items[i].seg);
    }
    bt_free(f->items);
    bt_free(f->title);
    bt_free(f);
}

static bt_status figure_push(bt_figure *f, item it)
{
    if (f->n == f->cap) {
        int cap = f->cap ? f->cap * 2 : 8;
        item *items = bt_realloc(f->items, (size_t)cap * sizeof *items);
        if (!items)
            return BT_ERR_NOMEM;
        f->items = items;
        f->cap = cap;
    }
    f->items[f->n++] = it;
    return BT_OK;
}

bt_status bt_figure_add(bt_figure *f, bt_plot *p)
{
    if (!f || !p) {
        bt_plot_free(p);
        return BT_ERR_ARG;
    }
    bt_status st = figure_push(f, (item){.plot = p});
    if (st != BT_OK)
        bt_plot_free(p);
    return st;
}

bt_status bt_figure_add_segments(bt_figure *f, const char *title, const char *text, int n_chars,
                                 const bt_segments_row *rows, int n_rows)
{
    if (!f || !text || n_chars < 0 || n_rows < 0 || (n_rows > 0 && !rows))
        return BT_ERR_ARG;
    segments *s = bt_calloc(1, sizeof *s);
    if (!s)
        return BT_ERR_NOMEM;
    /* Find the byte extent of the first n_chars characters. */
    size_t len = strlen(text), end = 0;
    int n = 0;
    uint32_t cp;
    while (n < n_chars && end < len) {
        end += (size_t)utf8_next((const unsigned char *)text + end, len - end, &cp);
        n++;
    }
    s->n = n;
    s->text = bt_malloc(end + 1);
    s->off = bt_malloc((size_t)(n + 1) * sizeof *s->off);
    s->labels = bt_calloc((size_t)(n_rows ? n_rows : 1), sizeof *s->labels);
    s->cuts = bt_calloc((size_t)(n_rows ? n_rows : 1), sizeof *s->cuts);
    s->n_rows = n_rows;
    bool ok = s->text && s->off && s->labels && s->cuts && str_set(&s->title, title);
    if (ok) {
        memcpy(s->text, text, end);
        s->text[end] = '\0';
        size_t at = 0;
        for (int i = 0; i < n; i++) {
            s->off[i] = (int)at;
            at += (size_t)utf8_next((const unsigned char *)s->text + at, end - at, &cp);
        }
        s->off[n] = (int)end;
    }
    for (int r = 0; ok && r < n_rows; r++) {
        s->cuts[r] = bt_calloc((size_t)(n ? n : 1), 1);
        ok = s->cuts[r] && str_set(&s->labels[r], rows[r].label);
        for (int i = 0; ok && rows[r].cut_before && i < n; i++)
            s->cuts[r][i] = rows[r].cut_before[i] != 0;
    }
    if (!ok) {
        segments_free(s);
        return BT_ERR_NOMEM;
    }
    bt_status st = figure_push(f, (item){.seg = s});
    if (st != BT_OK)
        segments_free(s);
    return st;
}

static const char svg_style[] =
    "<style>\n"
    "text{fill:#222}\n"
    ".title{font-size:15px;font-weight:bold}\n"
    ".label{font-size:13px}\n"
    ".tick{font-size:11px;fill:#555}\n"
    ".legend{font-size:11px}\n"
    ".cell{font-family:" FONT_MONO ";font-size:15px}\n"
    ".ws{fill:#b8b8b8}\n"
    ".grid{stroke:#e3e3e3;stroke-width:1}\n"
    ".minor{stroke:#f2f2f2;stroke-width:1}\n"
    ".zero{stroke:#c8c8c8;stroke-width:1}\n"
    ".frame{fill:none;stroke:#888;stroke-width:1}\n"
    "</style>\n";

/* The figure's width: as many panels as its widest row of plots holds, or
 * the widest segments picture when that is wider (the panels then widen to
 * share it); *pw the width of one panel. */
static double figure_width(const bt_figure *f, double *pw)
{
    int plots = 0;
    double seg_w = 0;
    for (int i = 0; i < f->n; i++)
        if (f->items[i].plot)
            plots++;
        else
            seg_w = fmax(seg_w, segments_width(f->items[i].seg));
    int cols = plots < f->cols ? plots : f->cols;
    double width = fmax(cols * (double)PANEL_W, seg_w);
    if (!plots && !seg_w)
        width = PANEL_W;
    *pw = cols ? width / cols : width;
    return width;
}

/* The figure title's lines: wrapped to the figure's width, at most 3. */
static int title_lines(const bt_figure *f, double width, bt_svgtext_line *lines)
{
    if (!f->title)
        return 0;
    return bt_svgtext_wrap(f->title, PX_FIG_TITLE, true, width - 16, lines, 3);
}

/* The document's opening: size, style sheet, background and the title, each
 * of its lines centred (in a smaller font when one alone is wider than the
 * figure). */
static void figure_open(sbuf *b, const bt_figure *f, double width, double height)
{
    sb_puts(b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"");
    sb_px(b, width);
    sb_puts(b, "\" height=\"");
    sb_px(b, height);
    sb_puts(b, "\" viewBox=\"0 0 ");
    sb_px(b, width);
    sb_puts(b, " ");
    sb_px(b, height);
    sb_puts(b, "\" font-family=\"" FONT_SANS "\">\n");
    sb_puts(b, svg_style);
    sb_puts(b, "<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n");
    bt_svgtext_line lines[3];
    int n = title_lines(f, width, lines);
    for (int k = 0; k < n; k++) {
        const char *t = f->title + lines[k].start;
        size_t len = lines[k].end - lines[k].start;
        double w = bt_svgtext_width(t, len, PX_FIG_TITLE, true);
        sb_puts(b, "<text class=\"title\" style=\"font-size:");
        sb_px(b, floor(fit_px(w, PX_FIG_TITLE, width - 16) * 10) / 10);
        sb_puts(b, "px\" text-anchor=\"middle\" ");
        sb_xy(b, width / 2, 27 + k * FIG_TITLE_LINE);
        sb_puts(b, ">");
        sb_esc_len(b, t, len);
        sb_puts(b, "</text>\n");
    }
}

/* The plots in the grid row that item i starts: up to cols of them, up to
 * the next segments picture. */
static int row_plots(const bt_figure *f, int i)
{
    int n = 0;
    while (i + n < f->n && n < f->cols && f->items[i + n].plot)
        n++;
    return n;
}

/* Lays the items out on the grid (a segments picture takes a whole row, a
 * row with fewer plots than columns is centred) and renders the document
 * into b. */
static void render_figure(sbuf *b, const bt_figure *f)
{
    double pw, width = figure_width(f, &pw);
    bt_svgtext_line lines[3];
    int n_title = title_lines(f, width, lines);
    double top = n_title ? FIG_TITLE_H + (n_title - 1) * FIG_TITLE_LINE : 0;
    /* First pass: the height; second pass: the drawing. */
    for (int pass = 0; pass < 2; pass++) {
        double y = top, x0 = 0;
        int col = 0, clip = 0;
        for (int i = 0; i < f->n; i++) {
            const item *it = &f->items[i];
            if (it->plot) {
                if (col == f->cols) {
                    y += PANEL_H;
                    col = 0;
                }
                if (col == 0)
                    x0 = (width - row_plots(f, i) * pw) / 2;
                if (pass)
                    render_plot(b, it->plot, x0 + col * pw, y, pw, clip++);
                col++;
            } else {
                if (col > 0)
                    y += PANEL_H;
                col = 0;
                if (pass)
                    render_segments(b, it->seg, 0, y);
                y += segments_height(it->seg);
            }
        }
        if (col > 0)
            y += PANEL_H;
        if (pass == 0)
            figure_open(b, f, width, y > top ? y : top + 40);
    }
    sb_puts(b, "</svg>\n");
}

bt_status bt_figure_write(const bt_figure *f, const char *path, char *err, size_t errlen)
{
    if (!f || !path || !*path) {
        set_err(err, errlen, "bt_figure_write: %s is NULL or empty", f ? "path" : "figure");
        return BT_ERR_ARG;
    }
    sbuf b = {0};
    render_figure(&b, f);
    if (b.oom) {
        bt_free(b.s);
        set_err(err, errlen, "out of memory rendering '%s'", path);
        return BT_ERR_NOMEM;
    }
    bt_status st = bt_atomic_write_file(path, b.s, b.len, err, errlen);
    bt_free(b.s);
    return st;
}

bt_status bt_plot_write(const bt_plot *p, const char *path, char *err, size_t errlen)
{
    if (!p) {
        set_err(err, errlen, "bt_plot_write: plot is NULL");
        return BT_ERR_ARG;
    }
    /* A borrowed one-panel figure on the stack: nothing to free afterwards. */
    item it = {.plot = (bt_plot *)p};
    bt_figure f = {.title = NULL, .cols = 1, .items = &it, .n = 1, .cap = 1};
    return bt_figure_write(&f, path, err, errlen);
}
