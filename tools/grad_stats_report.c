/* grad_stats_report.c: the bias and variance of gradient estimates as a
 * table, JSON and an SVG figure (grad_stats_report.h). */
#include <math.h>
#include <string.h>

#include "grad_stats_report.h"
#include "svg.h"

void cli_grad_stats_print(const bt_grad_stats *s, int n, double gnorm, FILE *f)
{
    fprintf(f, "exact gradient: full BPTT, ||g|| = %.6g\n\n", gnorm);
    fprintf(f, "%-24s %6s %11s %11s %10s %10s %11s %10s\n", "method", "draws", "rel. bias",
            "noise flr", "cos(mean)", "cos draw", "rel. var", "CPU/draw");
    for (int i = 0; i < n; i++)
        fprintf(f, "%-24s %6d %11.3e %11.3e %10.6f %10.6f %11.3e %9.3gs\n", s[i].desc,
                s[i].draws, s[i].rel_bias, s[i].rel_se, s[i].cos_mean, s[i].cos_draw,
                s[i].rel_var, s[i].seconds);
    fprintf(f, "\nrel. bias = ||mean - g|| / ||g|| over the draws; noise flr = sqrt(rel. var / "
               "draws), what\nan unbiased method's bias reads at this many draws (a bias well "
               "above it is real);\nrel. var = E||g_s - mean||^2 / ||g||^2; one draw: the method "
               "gave the same gradient twice.\n");
}

static json_t *num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

json_t *cli_grad_stats_to_json(const bt_grad_stats *s, int n)
{
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++) {
        json_t *o = json_pack("{s:s, s:b, s:i, s:o, s:o, s:o, s:o, s:o, s:o}", "method", s[i].desc,
                              "online", s[i].online, "draws", s[i].draws, "rel_bias",
                              num(s[i].rel_bias), "rel_se", num(s[i].rel_se), "cos_mean",
                              num(s[i].cos_mean), "cos_draw", num(s[i].cos_draw), "rel_var",
                              num(s[i].rel_var), "seconds", num(s[i].seconds));
        if (!o || json_array_append_new(a, o) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

/* The running mean's error against n, a method per line, and 1/sqrt(n)
 * scaled to the first stochastic method's first draw. */
static bt_plot *running_panel(const bt_grad_stats *s, int n, double *x, int most)
{
    bt_plot *p = bt_plot_new("error of the mean of n draws", "draws n",
                             "||mean_n - g|| / ||g||");
    if (!p)
        return NULL;
    bt_plot_set_logx(p, true);
    bt_plot_set_logy(p, true);
    for (int i = 0; i < n; i++)
        if (s[i].draws > 1)
            bt_plot_line(p, s[i].desc, x, s[i].running, s[i].draws);
    for (int i = 0; i < n; i++)
        if (s[i].draws > 1 && s[i].running[0] > 0) {
            double *ref = x + most;
            for (int k = 0; k < most; k++)
                ref[k] = s[i].running[0] / sqrt(x[k]);
            bt_plot_line(p, "1/sqrt(n) (unbiased)", x, ref, most);
            break;
        }
    for (int i = 0; i < n; i++) /* a deterministic method's error is one level */
        if (s[i].draws == 1 && s[i].running[0] > 0)
            bt_plot_hline(p, s[i].desc, s[i].running[0]);
    return p;
}

static bt_plot *cosine_panel(const bt_grad_stats *s, int n, const double *x)
{
    bt_plot *p = bt_plot_new("each draw against the exact gradient", "draw", "cos(g_s, g)");
    for (int i = 0; p && i < n; i++)
        bt_plot_points(p, s[i].desc, x, s[i].cos, s[i].draws);
    return p;
}

bt_status cli_grad_stats_svg(const bt_grad_stats *s, int n, const char *title, const char *path,
                             char *err, size_t errlen)
{
    int most = 1;
    for (int i = 0; i < n; i++)
        most = s[i].draws > most ? s[i].draws : most;
    double *x = bt_malloc(sizeof(double) * 2 * (size_t)most);
    bt_figure *fig = x ? bt_figure_new(title, 2) : NULL;
    bt_status st = fig ? BT_OK : BT_ERR_NOMEM;
    for (int k = 0; x && k < most; k++)
        x[k] = k + 1;
    bt_plot *p = st == BT_OK ? running_panel(s, n, x, most) : NULL;
    st = p ? bt_figure_add(fig, p) : BT_ERR_NOMEM;
    if (st == BT_OK)
        st = (p = cosine_panel(s, n, x)) ? bt_figure_add(fig, p) : BT_ERR_NOMEM;
    if (st == BT_OK)
        st = bt_figure_write(fig, path, err, errlen);
    else
        snprintf(err, errlen, "out of memory for the figure");
    bt_figure_free(fig);
    bt_free(x);
    return st;
}
