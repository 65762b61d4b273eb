/* svg_gallery.c DIR: writes figures that push tools/svg.c's layout where the
 * program's own figures seldom go (long and unbreakable labels, long titles,
 * wide tick labels at both edges, many legend entries, narrow and wide log
 * axes, wrapped segments labels, a centred last row, non-ASCII text) into DIR,
 * for tests/test_figures.py to check that all their text stays whole, on the
 * page and clear of other text. Exit 0, or 1 when a figure cannot be written. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "svg.h"

static int failed;

static void write_fig(bt_figure *f, const char *dir, const char *name)
{
    char path[1024], err[512] = "";
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (bt_figure_write(f, path, err, sizeof err) != BT_OK) {
        fprintf(stderr, "svg_gallery: %s\n", err);
        failed = 1;
    }
    bt_figure_free(f);
}

/* Legends: labels wider than the legend column, with and without places to
 * break, a forced line break, and more entries than fit. */
static void legends(const char *dir)
{
    double x[20], y[20];
    bt_figure *f = bt_figure_new("Legends that must show their whole text", 2);
    bt_plot *p = bt_plot_new("long labels", "epoch", "perplexity");
    for (int i = 0; i < 20; i++)
        x[i] = i + 1, y[i] = 40.0 / (i + 1) + 5;
    bt_plot_set_logy(p, true);
    bt_plot_line(p, "geoseg:mean=6,min=2,max=40,seed=12345678", x, y, 20);
    bt_plot_line(p, "averyveryverylongpolicynamewithoutanyplacetobreakitatall", x, y, 20);
    bt_plot_line(p, "predicted, |l2/l1| = 0.994:\ntan(angle_0) |l2/l1|^k", x, y, 20);
    bt_plot_line(p, "fit 0.461 \u00d7 1.12^k (least squares on log ratio)", x, y, 20);
    bt_figure_add(f, p);
    p = bt_plot_new("more entries than fit", "step", "value");
    for (int k = 0; k < 30; k++) {
        char label[64];
        snprintf(label, sizeof label, k % 3 ? "run %d" : "random:0.%d,seed=%d", k, k * 7);
        for (int i = 0; i < 20; i++)
            y[i] = sin(i * 0.3 + k) + k;
        bt_plot_line(p, label, x, y, 20);
    }
    bt_figure_add(f, p);
    write_fig(f, dir, "legends.svg");
}

/* Tick labels as wide as numbers get, on both axes and at the right edge
 * (no legend), and titles and axis labels longer than a panel. */
static void wide_ticks(const char *dir)
{
    double x[5], y[5];
    char title[400] = "";
    for (int i = 0; i < 8; i++)
        strcat(title, "a title far longer than any panel, ");
    bt_figure *f = bt_figure_new(title, 2);
    bt_plot *p = bt_plot_new(title, "an x label that goes on and on and on and on and on and on "
                                    "and on and on and on and on and on and on",
                             "a y label as long as a sentence that keeps going and going and "
                             "going and going and going");
    for (int i = 0; i < 5; i++)
        x[i] = 1000000 + 0.37 * i, y[i] = -1.234567e-7 + 0.618e-7 * i;
    bt_plot_line(p, NULL, x, y, 5);
    bt_figure_add(f, p);
    p = bt_plot_new("large and negative", "x", "y");
    for (int i = 0; i < 5; i++)
        x[i] = -123456.5 + 50000.25 * i, y[i] = -98765.4321 * i;
    bt_plot_points(p, NULL, x, y, 5);
    bt_figure_add(f, p);
    write_fig(f, dir, "wide_ticks.svg");
}

/* Log axes of every width: within a decade, a few decades, many; log x too;
 * and three panels on two columns (the last row centred). */
static void log_axes(const char *dir)
{
    static const double spans[][2] = {{12, 38}, {0.23, 0.57}, {3, 80}, {1e-7, 3}, {1e-300, 1e300}};
    bt_figure *f = bt_figure_new("Log axes", 2);
    for (int s = 0; s < 5; s++) {
        double x[30], y[30];
        for (int i = 0; i < 30; i++) {
            x[i] = pow(10, i / 29.0 * (s + 1));
            double l0 = log10(spans[s][0]), l1 = log10(spans[s][1]);
            y[i] = pow(10, l0 + (l1 - l0) * i / 29.0);
        }
        char t[64];
        snprintf(t, sizeof t, "from %g to %g", spans[s][0], spans[s][1]);
        bt_plot *p = bt_plot_new(t, s == 4 ? "log x" : "lag", "value");
        bt_plot_set_logy(p, true);
        bt_plot_set_logx(p, s == 4);
        bt_plot_line(p, "series", s == 4 ? x : NULL, y, 30);
        bt_figure_add(f, p);
    }
    write_fig(f, dir, "log_axes.svg");
}

/* Segments pictures: long and multi-line row labels, a text shorter than
 * its title, non-ASCII characters; an equal-aspect panel beside. */
static void segments(const char *dir)
{
    bt_figure *f = bt_figure_new("Segments \u00e9t\u00e9 \u65e5\u672c", 2);
    double re[4] = {0.9, -1.1, 0.2, 0.0}, im[4] = {0.1, 0.0, 0.8, -0.9};
    bt_plot *p = bt_plot_new("eigenvalues of W_hh (radius 1.1)", "Re", "Im");
    bt_plot_set_equal_aspect(p, true);
    bt_plot_circle(p, "unit circle", 0, 0, 1);
    bt_plot_points(p, "eigenvalues", re, im, 4);
    bt_figure_add(f, p);
    int cuts[60] = {0};
    for (int i = 0; i < 60; i += 7)
        cuts[i] = 1;
    bt_segments_row rows[3] = {
        {"full", NULL},
        {"geoseg:mean=6,min=2,max=40,seed=12345678,extra=a-long-tail", cuts},
        {"a label\nin two lines", cuts},
    };
    bt_figure_add_segments(f, "Where each policy cuts the first characters of the text",
                           "The Time Machine, by H. G. Wells [1898]\n\nI\n\nThe Time Traveller",
                           60, rows, 3);
    bt_figure_add_segments(f, "A text shorter than this title is long, much shorter", "caf\u00e9",
                           60, rows, 1);
    write_fig(f, dir, "segments.svg");
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: svg_gallery DIR\n");
        return 2;
    }
    legends(argv[1]);
    wide_ticks(argv[1]);
    log_axes(argv[1]);
    segments(argv[1]);
    return failed;
}
