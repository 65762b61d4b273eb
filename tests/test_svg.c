/* test_svg.c: every kind of chart is written into a temp folder and read back:
 * well-formed enough to open, labels present, whole (wrapped, never cut) and
 * escaped, no NaN or inf in the file, decade ticks on log axes and round
 * values on a narrow one, whole-number ticks for whole-number x, and I/O
 * failures reported as BT_ERR_IO. Where the text lands on the page is
 * test_figures.py's to check, with a real renderer and the font files.
 */
#include <criterion/criterion.h>

#include <ctype.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bptt.h"
#include "svg.h"

static char dir[256];

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/bptt_svg_XXXXXX");
    cr_assert_not_null(mkdtemp(dir), "mkdtemp failed");
}

static void remove_dir(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
}

TestSuite(svg, .init = make_dir, .fini = remove_dir);

static const char *path_of(const char *name)
{
    static char buf[512];
    snprintf(buf, sizeof buf, "%s/%s", dir, name);
    return buf;
}

/* The whole file, NUL-terminated (malloc'd). */
static char *slurp(const char *path)
{
    FILE *fp = fopen(path, "rb");
    cr_assert_not_null(fp, "cannot open %s", path);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    cr_assert_not_null(s);
    cr_assert_eq(fread(s, 1, (size_t)n, fp), (size_t)n);
    s[n] = '\0';
    fclose(fp);
    return s;
}

static int count_of(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* "nan" or "inf" as a word of its own (any case): what printf makes of a
 * non-finite double. Words such as "information" do not count. */
static const char *find_nonfinite_word(const char *s)
{
    static const char *const words[] = {"nan", "inf"};
    for (size_t i = 0; s[i]; i++)
        for (int w = 0; w < 2; w++)
            if (strncasecmp(s + i, words[w], 3) == 0 && (i == 0 || !isalpha((unsigned char)s[i - 1])) &&
                !isalpha((unsigned char)s[i + 3]))
                return s + i;
    return NULL;
}

/* Checks the file looks like a complete SVG document; returns its text. */
static char *check_svg(const char *path)
{
    char *s = slurp(path);
    cr_assert(strncmp(s, "<?xml", 5) == 0 || strncmp(s, "<svg", 4) == 0, "bad start: %.40s", s);
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    cr_assert(n >= 6 && strncmp(s + n - 6, "</svg>", 6) == 0, "%s does not end with </svg>", path);
    cr_assert_eq(count_of(s, "<svg"), 1);
    const char *bad = find_nonfinite_word(s);
    cr_assert_null(bad, "%s contains nan or inf: ...%.60s", path, bad > s + 30 ? bad - 30 : s);
    /* Every element opened is closed or self-closing: tags balance. */
    cr_assert_eq(count_of(s, "<g"), count_of(s, "</g>"));
    cr_assert_eq(count_of(s, "<text"), count_of(s, "</text>"));
    return s;
}

/* Perplexity per epoch: several series, linear axes. */
Test(svg, line_chart_has_labels_and_legend)
{
    double epoch[10], train[10], valid[10];
    for (int i = 0; i < 10; i++) {
        epoch[i] = i + 1;
        train[i] = 30.0 / (i + 1) + 2;
        valid[i] = 32.0 / (i + 1) + 3;
    }
    bt_plot *p = bt_plot_new("Perplexity per epoch", "epoch", "perplexity");
    cr_assert_not_null(p);
    cr_assert_eq(bt_plot_line(p, "train (full)", epoch, train, 10), BT_OK);
    cr_assert_eq(bt_plot_line(p, "valid (full)", epoch, valid, 10), BT_OK);
    char err[256] = "";
    cr_assert_eq(bt_plot_write(p, path_of("ppl.svg"), err, sizeof err), BT_OK, "%s", err);
    bt_plot_free(p);

    char *s = check_svg(path_of("ppl.svg"));
    cr_expect(strstr(s, "Perplexity per epoch"));
    cr_expect(strstr(s, ">epoch<"));
    cr_expect(strstr(s, ">perplexity<"));
    cr_expect(strstr(s, "train (full)"));
    cr_expect(strstr(s, "valid (full)"));
    cr_expect_eq(count_of(s, "<polyline"), 2);
    cr_expect(strstr(s, ">10<"), "x ticks should reach epoch 10");
    free(s);
}

/* Gradient norm against lag: log y from 1e-6 to 1e2 labels every decade. */
Test(svg, log_axis_has_decade_ticks)
{
    double lag[9], norm[9];
    for (int i = 0; i < 9; i++) {
        lag[i] = i;
        norm[i] = pow(10, 2 - i); /* 1e2 .. 1e-6 */
    }
    bt_plot *p = bt_plot_new("Gradient norm vs lag", "lag", "||dL/dh||");
    bt_plot_set_logy(p, true);
    cr_assert_eq(bt_plot_line(p, "RNN", lag, norm, 9), BT_OK);
    cr_assert_eq(bt_plot_write(p, path_of("lag.svg"), NULL, 0), BT_OK);
    bt_plot_free(p);

    char *s = check_svg(path_of("lag.svg"));
    for (int k = -6; k <= 2; k++) {
        char want[64];
        /* 10 with a superscript exponent; negative exponents use U+2212. */
        snprintf(want, sizeof want, "%s%d</tspan>", k < 0 ? "\u2212" : ">", k < 0 ? -k : k);
        cr_expect(strstr(s, want), "no decade label 10^%d", k);
    }
    free(s);
}

/* A log axis within a decade fits the data and labels round values: no
 * bare 10^1..10^2 frame around curves between 12 and 38. */
Test(svg, narrow_log_axis_fits_the_data)
{
    double y[4] = {38, 25, 17, 12};
    bt_plot *p = bt_plot_new("perplexity", "epoch", "perplexity");
    bt_plot_set_logy(p, true);
    cr_assert_eq(bt_plot_line(p, "train", NULL, y, 4), BT_OK);
    cr_assert_eq(bt_plot_write(p, path_of("narrow.svg"), NULL, 0), BT_OK);
    bt_plot_free(p);
    char *s = check_svg(path_of("narrow.svg"));
    cr_expect(strstr(s, ">20<") && strstr(s, ">30<"), "round values 20 and 30 labelled");
    cr_expect_null(strstr(s, ">2</tspan>"), "no 10^2 label: the axis ends near 38");
    cr_expect_null(strstr(s, ">1</tspan>"), "no 10^1 label: the axis starts near 12");
    free(s);
}

/* Epochs 1..3 get ticks 1, 2, 3, never 1.5. */
Test(svg, whole_number_x_has_whole_ticks)
{
    double x[3] = {1, 2, 3}, y[3] = {0.5, 0.25, 0.2};
    bt_plot *p = bt_plot_new(NULL, "epoch", "loss");
    cr_assert_eq(bt_plot_line(p, "train", x, y, 3), BT_OK);
    cr_assert_eq(bt_plot_write(p, path_of("whole.svg"), NULL, 0), BT_OK);
    bt_plot_free(p);
    char *s = check_svg(path_of("whole.svg"));
    cr_expect(strstr(s, ">1<") && strstr(s, ">2<") && strstr(s, ">3<"));
    cr_expect_null(strstr(s, ">1.5<"));
    cr_expect_null(strstr(s, ">2.5<"));
    free(s);
}

/* The contents of every <text> whose attributes contain attr, in document
 * order, joined without their spaces. */
static void joined_text(const char *s, const char *attr, char *out, size_t len)
{
    size_t n = 0;
    for (const char *t = strstr(s, "<text "); t; t = strstr(t + 1, "<text ")) {
        const char *gt = strchr(t, '>'), *end = gt ? strstr(gt, "</text>") : NULL;
        const char *a = strstr(t, attr);
        if (!end || !a || a > gt)
            continue;
        for (const char *c = gt + 1; c < end && n + 1 < len; c++)
            if (*c != ' ')
                out[n++] = *c;
    }
    out[n] = '\0';
}

/* Legend and segments labels are shown whole, never cut with an ellipsis:
 * a long one wraps onto lines that together hold every character. */
Test(svg, long_labels_are_whole)
{
    const char *legend = "predicted, |l2/l1| = 0.994: tan(angle_0) |l2/l1|^k over 200 steps";
    const char *row = "geoseg:mean=6,min=2,max=40,seed=12345678,extra=a-long-tail";
    double y[3] = {1, 2, 3};
    bt_figure *f = bt_figure_new(NULL, 1);
    bt_plot *p = bt_plot_new("t", NULL, NULL);
    cr_assert_eq(bt_plot_line(p, legend, NULL, y, 3), BT_OK);
    cr_assert_eq(bt_figure_add(f, p), BT_OK);
    bt_segments_row rows[1] = {{row, NULL}};
    cr_assert_eq(bt_figure_add_segments(f, "s", "some text here", 14, rows, 1), BT_OK);
    cr_assert_eq(bt_figure_write(f, path_of("long.svg"), NULL, 0), BT_OK);
    bt_figure_free(f);
    char *s = check_svg(path_of("long.svg"));
    cr_expect_null(strstr(s, "\u2026"), "a label was cut");
    /* Each label's lines, joined, are the label (its spaces aside). */
    char legend_text[512], row_text[512];
    joined_text(s, "class=\"legend\"", legend_text, sizeof legend_text);
    joined_text(s, "text-anchor=\"end\" fill=", row_text, sizeof row_text);
    cr_expect(strstr(legend_text, "predicted,|l2/l1|=0.994:tan(angle_0)|l2/l1|^kover200steps"),
              "legend lines: %s", legend_text);
    cr_expect(strstr(row_text, "geoseg:mean=6,min=2,max=40,seed=12345678,extra=a-long-tail"),
              "row label lines: %s", row_text);
    cr_expect(strstr(s, ">geoseg:mean=6,min=2,max=40,<") || strstr(s, ">geoseg:mean=6,min=2,"),
              "the row label breaks after a comma");
    free(s);
}

Test(svg, log_axis_skips_nan_inf_and_nonpositive)
{
    double x[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    double y[8] = {1e-3, NAN, 1e-1, -5, 0, INFINITY, 10, -INFINITY};
    bt_plot *p = bt_plot_new("skips", "x", "y");
    bt_plot_set_logy(p, true);
    cr_assert_eq(bt_plot_points(p, "pts", x, y, 8), BT_OK);
    cr_assert_eq(bt_plot_write(p, path_of("skip.svg"), NULL, 0), BT_OK);
    char *s = check_svg(path_of("skip.svg"));
    /* Three drawable points plus the legend marker. */
    cr_expect_eq(count_of(s, "<circle"), 4, "got %d circles", count_of(s, "<circle"));
    free(s);

    /* A line through the same data breaks at the gaps instead of joining. */
    cr_assert_eq(bt_plot_line(p, "line", x, y, 8), BT_OK);
    cr_assert_eq(bt_plot_write(p, path_of("skip2.svg"), NULL, 0), BT_OK);
    s = check_svg(path_of("skip2.svg"));
    free(s);
    bt_plot_free(p);
}

/* Eigenvalues in the complex plane with the unit circle, equal aspect. */
Test(svg, complex_plane_points_and_circle)
{
    double re[6] = {0.9, 0.9, -0.3, 0.1, 1.2, 0.0};
    double im[6] = {0.2, -0.2, 0.0, 0.7, 0.0, -0.5};
    bt_plot *p = bt_plot_new("Eigenvalues of W_hh", "Re", "Im");
    bt_plot_set_equal_aspect(p, true);
    cr_assert_eq(bt_plot_points(p, "eigenvalues", re, im, 6), BT_OK);
    cr_assert_eq(bt_plot_circle(p, "unit circle", 0, 0, 1), BT_OK);
    cr_assert_eq(bt_plot_write(p, path_of("eig.svg"), NULL, 0), BT_OK);
    bt_plot_free(p);
    char *s = check_svg(path_of("eig.svg"));
    cr_expect(strstr(s, "eigenvalues"));
    cr_expect(strstr(s, "unit circle"));
    cr_expect(strstr(s, "stroke-dasharray"));
    cr_expect_eq(count_of(s, "<circle"), 7); /* 6 points and one legend marker */
    free(s);
}

/* A parameter against step for several strategies, with a reference line. */
Test(svg, figure_grid_with_segments)
{
    enum { N = 50 };
    double step[N], th[3][N];
    for (int i = 0; i < N; i++) {
        step[i] = i * 100;
        for (int k = 0; k < 3; k++)
            th[k][i] = 1 - exp(-i / (5.0 + 5 * k));
    }
    bt_figure *f = bt_figure_new("Run summary", 2);
    cr_assert_not_null(f);
    bt_plot *p = bt_plot_new("theta", "step", "theta");
    cr_assert_eq(bt_plot_line(p, "full", step, th[0], N), BT_OK);
    cr_assert_eq(bt_plot_line(p, "truncated", step, th[1], N), BT_OK);
    cr_assert_eq(bt_plot_line(p, "randomized", step, th[2], N), BT_OK);
    cr_assert_eq(bt_plot_hline(p, "target", 1.0), BT_OK);
    cr_assert_eq(bt_figure_add(f, p), BT_OK);
    bt_plot *q = bt_plot_new("empty panel", NULL, NULL);
    cr_assert_eq(bt_figure_add(f, q), BT_OK);

    const char *text = "It was the best of times <&> caf\u00e9 \u65e5\u672c!\nIt was the worst of times, it was";
    int n = 60, cut_fixed[60] = {0}, cut_rand[60] = {0};
    for (int i = 0; i < n; i += 10)
        cut_fixed[i] = 1;
    int starts[] = {0, 7, 19, 22, 40, 51};
    for (size_t i = 0; i < sizeof starts / sizeof *starts; i++)
        cut_rand[starts[i]] = 1;
    bt_segments_row rows[3] = {
        {"full", NULL},
        {"fixed k=10", cut_fixed},
        {"random", cut_rand},
    };
    cr_assert_eq(bt_figure_add_segments(f, "Where each strategy cuts", text, n, rows, 3), BT_OK);
    char err[256] = "";
    cr_assert_eq(bt_figure_write(f, path_of("fig.svg"), err, sizeof err), BT_OK, "%s", err);
    bt_figure_free(f);

    char *s = check_svg(path_of("fig.svg"));
    cr_expect(strstr(s, "Run summary"));
    cr_expect(strstr(s, "randomized"));
    cr_expect(strstr(s, "Where each strategy cuts"));
    cr_expect(strstr(s, "fixed k=10"));
    cr_expect(strstr(s, ">1 segment<"));
    cr_expect(strstr(s, ">6 segments<"));
    cr_expect(strstr(s, "\u00b7"), "spaces show as middle dots");
    cr_expect(strstr(s, "&lt;") && strstr(s, "&amp;") && strstr(s, "&gt;"));
    cr_expect(strstr(s, "\u65e5"), "CJK characters are kept");
    cr_expect(strstr(s, "\u21b5"), "newlines show as return arrows");
    cr_expect(strstr(s, "no data to draw"));
    free(s);
}

Test(svg, labels_are_escaped)
{
    bt_plot *p = bt_plot_new("a<b & \"c\"", "x>0", "y's");
    double y[3] = {1, 2, 3};
    cr_assert_eq(bt_plot_line(p, "<&>", NULL, y, 3), BT_OK);
    cr_assert_eq(bt_plot_write(p, path_of("esc.svg"), NULL, 0), BT_OK);
    bt_plot_free(p);
    char *s = check_svg(path_of("esc.svg"));
    cr_expect(strstr(s, "a&lt;b &amp; &quot;c&quot;"));
    cr_expect(strstr(s, "x&gt;0"));
    cr_expect(strstr(s, "y&apos;s"));
    cr_expect(strstr(s, ">&lt;&amp;&gt;<"));
    cr_expect_null(strstr(s, "<&>"));
    cr_expect_null(strstr(s, "a<b"));
    free(s);
}

Test(svg, malformed_utf8_becomes_replacement_character)
{
    bt_plot *p = bt_plot_new("bad \xff\xfe bytes \xe2\x82", NULL, NULL);
    cr_assert_eq(bt_plot_write(p, path_of("utf8.svg"), NULL, 0), BT_OK);
    bt_plot_free(p);
    char *s = check_svg(path_of("utf8.svg"));
    cr_expect(strstr(s, "bad \uFFFD\uFFFD bytes \uFFFD\uFFFD"));
    cr_expect_null(strchr(s, '\xff'));
    free(s);
}

Test(svg, edge_cases_never_write_nonfinite)
{
    double one_x = 3, one_y = 7;
    double same[4] = {5, 5, 5, 5};
    double huge[3] = {-1e308, 0, 1e308};
    double tiny[3] = {1e-300, 2e-300, 3e-300};
    double allnan[2] = {NAN, NAN};
    bt_figure *f = bt_figure_new(NULL, 3);
    bt_plot *p;

    p = bt_plot_new("single point", "x", "y");
    cr_assert_eq(bt_plot_line(p, "one", &one_x, &one_y, 1), BT_OK);
    bt_figure_add(f, p);
    p = bt_plot_new("all equal", "x", "y");
    cr_assert_eq(bt_plot_line(p, "flat", NULL, same, 4), BT_OK);
    bt_figure_add(f, p);
    p = bt_plot_new("huge range", "x", "y");
    cr_assert_eq(bt_plot_line(p, "huge", huge, huge, 3), BT_OK);
    bt_figure_add(f, p);
    p = bt_plot_new("tiny log", "x", "y");
    bt_plot_set_logx(p, true);
    bt_plot_set_logy(p, true);
    cr_assert_eq(bt_plot_points(p, "tiny", tiny, tiny, 3), BT_OK);
    bt_figure_add(f, p);
    p = bt_plot_new("all missing", "x", "y");
    cr_assert_eq(bt_plot_line(p, "not a number", NULL, allnan, 2), BT_OK);
    cr_assert_eq(bt_plot_line(p, "empty", NULL, NULL, 0), BT_OK);
    bt_figure_add(f, p);
    p = bt_plot_new("huge log", "x", "y");
    bt_plot_set_logy(p, true);
    double wide[2] = {1e-300, 1e300};
    cr_assert_eq(bt_plot_line(p, "wide", NULL, wide, 2), BT_OK);
    bt_figure_add(f, p);
    cr_assert_eq(bt_figure_add_segments(f, "empty text", "", 60, NULL, 0), BT_OK);

    cr_assert_eq(bt_figure_write(f, path_of("edge.svg"), NULL, 0), BT_OK);
    bt_figure_free(f);
    char *s = check_svg(path_of("edge.svg"));
    free(s);
}

Test(svg, linear_ticks_are_round)
{
    double x[2] = {0, 1}, y[2] = {0, 1};
    bt_plot *p = bt_plot_new(NULL, NULL, NULL);
    cr_assert_eq(bt_plot_line(p, NULL, x, y, 2), BT_OK);
    cr_assert_eq(bt_plot_write(p, path_of("ticks.svg"), NULL, 0), BT_OK);
    bt_plot_free(p);
    char *s = check_svg(path_of("ticks.svg"));
    /* 0..1 steps by 0.2 and every label has the step's one decimal. */
    cr_expect(strstr(s, ">0.0<"));
    cr_expect(strstr(s, ">0.2<"));
    cr_expect(strstr(s, ">0.6<"));
    cr_expect(strstr(s, ">1.0<"));
    cr_expect_null(strstr(s, "0.30000"));
    free(s);
}

Test(svg, bad_arguments)
{
    bt_plot *p = bt_plot_new("t", NULL, NULL);
    double y = 1;
    cr_expect_eq(bt_plot_line(p, "x", NULL, NULL, 3), BT_ERR_ARG);
    cr_expect_eq(bt_plot_line(p, "x", NULL, &y, -1), BT_ERR_ARG);
    cr_expect_eq(bt_plot_line(NULL, "x", NULL, &y, 1), BT_ERR_ARG);
    cr_expect_eq(bt_figure_add(NULL, p), BT_ERR_ARG); /* frees p */
    bt_figure *f = bt_figure_new("f", 0);
    cr_expect_eq(bt_figure_add_segments(f, "s", NULL, 10, NULL, 0), BT_ERR_ARG);
    cr_expect_eq(bt_figure_write(f, NULL, NULL, 0), BT_ERR_ARG);
    bt_figure_free(f);
}

Test(svg, missing_folder_is_an_io_error)
{
    bt_plot *p = bt_plot_new("t", NULL, NULL);
    char err[512] = "";
    const char *path = path_of("no/such/folder/x.svg");
    cr_expect_eq(bt_plot_write(p, path, err, sizeof err), BT_ERR_IO);
    cr_expect(strstr(err, path), "message should name the path: %s", err);
    cr_expect(strstr(err, "No such file"), "message should say why: %s", err);
    bt_plot_free(p);
}

/* rename onto a non-empty folder fails after the temp file was written: the
 * error is reported and the temp file removed. */
Test(svg, failed_rename_leaves_no_temp_file)
{
    char sub[512];
    snprintf(sub, sizeof sub, "%s", path_of("taken.svg"));
    cr_assert_eq(mkdir(sub, 0755), 0);
    char inner[600];
    snprintf(inner, sizeof inner, "%s/keep", sub);
    FILE *fp = fopen(inner, "w");
    cr_assert_not_null(fp);
    fclose(fp);

    bt_plot *p = bt_plot_new("t", NULL, NULL);
    char err[512] = "";
    cr_expect_eq(bt_plot_write(p, sub, err, sizeof err), BT_ERR_IO);
    cr_expect(strstr(err, sub), "%s", err);
    bt_plot_free(p);

    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    struct dirent *e;
    while ((e = readdir(d)))
        cr_expect_null(strstr(e->d_name, ".tmp."), "left behind: %s", e->d_name);
    closedir(d);
}

Test(svg, overwrite_replaces_file)
{
    double y[2] = {1, 2};
    bt_plot *p = bt_plot_new("first", NULL, NULL);
    bt_plot_line(p, "a", NULL, y, 2);
    cr_assert_eq(bt_plot_write(p, path_of("same.svg"), NULL, 0), BT_OK);
    bt_plot_free(p);
    p = bt_plot_new("second", NULL, NULL);
    cr_assert_eq(bt_plot_write(p, path_of("same.svg"), NULL, 0), BT_OK);
    bt_plot_free(p);
    char *s = check_svg(path_of("same.svg"));
    cr_expect(strstr(s, "second"));
    cr_expect_null(strstr(s, "first"));
    free(s);
}
