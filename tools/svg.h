/* svg.h: standalone SVG charts for results a person would rather see than read:
 * perplexity per epoch, gradient norm against lag (log y), eigenvalues in the
 * complex plane, a parameter against step, and where truncation cut a text.
 *
 * A bt_plot is one panel (axes, series, legend); a bt_figure is a grid of
 * panels and segment pictures written to one .svg file that opens in a browser.
 * Every function copies what it is given, so callers may free their arrays at
 * once. Values that cannot be drawn (NaN, inf, and <= 0 on a log axis) are
 * skipped, never written. Files are written atomically (io/atomic.h).
 *
 * Text is never cut: legend and segments labels wrap (at a newline, else at a
 * space, comma or semicolon, else at a colon or equals sign, else inside a
 * word), titles and axis labels too long for their room are set smaller, and
 * margins grow for wide tick labels; the layout measures text with DejaVu
 * Sans's advance widths (svg_text.h). tests/test_figures.py renders every
 * figure the program writes and checks that all its text is on the page.
 *
 * Presentation of the `bptt` program (tools/): built into an internal static
 * library that the program and tests/test_svg.c link; not installed, and not
 * part of libbptt or libbptt-train.
 */
#ifndef BPTT_SVG_H
#define BPTT_SVG_H

#include <stdbool.h>
#include <stddef.h>

#include "bptt.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- one chart panel ------------------------------------------------------ */

typedef struct bt_plot bt_plot;

/* Any of the strings may be NULL (drawn as nothing). NULL when out of memory. */
bt_plot *bt_plot_new(const char *title, const char *xlabel, const char *ylabel);
void bt_plot_free(bt_plot *p); /* NULL is fine */

/* Log axes fit the data (no snap to whole decades): decade ticks labelled
 * 10^k, with 2 and 5 labelled too within 2.5 decades, and round values in
 * 1-2-5 steps within one; values <= 0 are skipped. When every x is a whole
 * number (epochs, steps, lags), x ticks fall on whole numbers only. */
void bt_plot_set_logx(bt_plot *p, bool on);
void bt_plot_set_logy(bt_plot *p, bool on);
/* One data unit is as long on x as on y (linear axes only): for the complex plane. */
void bt_plot_set_equal_aspect(bt_plot *p, bool on);

/* Series take the next colour of a fixed palette (dashed once it wraps).
 * label NULL or "" keeps a series out of the legend. x NULL means x[i] = i.
 * n may be 0 (an empty series). BT_ERR_ARG for p NULL, n < 0 or y NULL with
 * n > 0; BT_ERR_NOMEM when a copy fails. */
bt_status bt_plot_line(bt_plot *p, const char *label, const double *x, const double *y, int n);
bt_status bt_plot_points(bt_plot *p, const char *label, const double *x, const double *y, int n);
/* A dashed reference circle (the unit circle: 0, 0, 1) and horizontal line. */
bt_status bt_plot_circle(bt_plot *p, const char *label, double cx, double cy, double r);
bt_status bt_plot_hline(bt_plot *p, const char *label, double y);

/* A one-panel figure at path; p stays the caller's. */
bt_status bt_plot_write(const bt_plot *p, const char *path, char *err, size_t errlen);

/* ---- figures: a grid of panels in one file -------------------------------- */

typedef struct bt_figure bt_figure;

/* One row of a segments picture: cut_before[i] = 1 when a segment (truncation
 * window) starts at character i; i = 0 always starts one. NULL: no cuts. */
typedef struct bt_segments_row {
    const char *label;
    const int *cut_before; /* [n_chars] */
} bt_segments_row;

/* title may be NULL; cols < 1 counts as 1. Panels are 600 x 400, wider when
 * a segments picture makes the figure wider than its columns of panels; a
 * last row with fewer panels than columns is centred. NULL when out of memory. */
bt_figure *bt_figure_new(const char *title, int cols);
void bt_figure_free(bt_figure *f); /* frees the plots it owns; NULL is fine */

/* Appends p in the next grid cell. Takes ownership of p even when it fails. */
bt_status bt_figure_add(bt_figure *f, bt_plot *p);

/* Appends a full-width picture of the first n_chars characters (code points) of
 * UTF-8 text, drawn once per row in monospace cells, with each row's segments
 * shaded alternately and a bar at each cut. A space shows as a faint middle dot,
 * a newline as a faint return arrow, a malformed byte as U+FFFD. Text shorter
 * than n_chars draws what there is. Meant for about 40..120 characters. */
bt_status bt_figure_add_segments(bt_figure *f, const char *title, const char *text, int n_chars,
                                 const bt_segments_row *rows, int n_rows);

/* BT_ERR_IO with a message naming path when the file cannot be written; no
 * temp file is left behind. err may be NULL. */
bt_status bt_figure_write(const bt_figure *f, const char *path, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
