/* analysis_report.c: a gradient analysis (models/analyze.c) as the program
 * shows it: a table, a JSON object built with jansson, an SVG figure (svg.h).
 *
 * Dimension letters: H hidden (state width), K largest lag. */
#include <math.h>
#include <stdio.h>

#include <jansson.h>

#include "analysis_report.h"
#include "svg.h"

/* Lags to show in a table: all up to 20, else about 20 evenly spaced and the last. */
static int lag_step(int K) { return K <= 20 ? 1 : (K + 19) / 20; }

void cli_analysis_print(const bt_analysis *a, FILE *f)
{
    fprintf(f, "gradient that the loss at the last step sends back k steps (full BPTT;\n"
               "norm of dL_T/dh_{T-k} over the whole batch), and the Jacobian dh_T/dh_{T-k} "
               "(row 0):\n");
    fprintf(f, "  %5s  %14s  %12s  %16s\n", "lag k", "||dL/dh||", "ratio to k=0", "||dh_T/dh_T-k||");
    int step = lag_step(a->K);
    for (int k = 0; k <= a->K; k++)
        if (k % step == 0 || k == a->K)
            fprintf(f, "  %5d  %14.6g  %12.6g  %16.6g\n", k, a->grad_norm[k],
                    a->grad_norm[0] > 0 ? a->grad_norm[k] / a->grad_norm[0] : NAN, a->jac_norm[k]);
    fprintf(f, "geometric rate per step (least squares on log norm): gradient %.6g, Jacobian %.6g\n"
               "  (gradient norm ~ %.6g x %.6g^k)\n",
            a->grad_rate, a->jac_rate, a->grad_scale, a->grad_rate);
    if (isfinite(a->grad_rate))
        fprintf(f, "  -> %s: a factor of %.3g over %d steps\n",
                a->grad_rate < 0.999 ? "vanishing" : a->grad_rate > 1.001 ? "exploding" : "neutral",
                pow(a->grad_rate, a->K), a->K);
    if (a->n == 0) {
        fprintf(f, "no square recurrent matrix in this cell: no eigenvalues\n");
        return;
    }
    fprintf(f, "%s (%d x %d): spectral radius %.6g; leading eigenvalues:", a->matrix, a->n, a->n,
            a->radius);
    for (int i = 0; i < a->n && i < 6; i++)
        fprintf(f, " %.4g%+.4gi", a->eig_re[i], a->eig_im[i]);
    fprintf(f, "\npower iteration on (%s + %s^T)/2: lambda1 %.6g, lambda2 %.6g, |lambda2/lambda1| %.6g\n",
            a->matrix, a->matrix, a->lambda1, a->lambda2,
            a->lambda1 != 0 ? fabs(a->lambda2 / a->lambda1) : NAN);
    fprintf(f, "  %5s  %16s  %22s\n", "k", "tan angle(M^k x, v1)", "tan(angle_0)|l2/l1|^k");
    int ps = lag_step(a->power_K);
    for (int k = 0; k <= a->power_K; k++)
        if (k % ps == 0 || k == a->power_K)
            fprintf(f, "  %5d  %16.6g  %22.6g\n", k, a->power_tan[k], a->power_pred[k]);
}

/* A number, or null where JSON has no number (NaN, inf). */
static json_t *json_num(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

static json_t *json_nums(const double *v, int n)
{
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_num(v[i])) != 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

/* Sets key on obj; false when out of memory (value released). */
static bool put(json_t *obj, const char *key, json_t *value)
{
    return value && json_object_set_new(obj, key, value) == 0;
}

/* Each container is attached before it is filled, so o owns everything made
 * so far whenever a step fails. */
static bool put_spectrum(json_t *o, const bt_analysis *a)
{
    bool ok = put(o, "matrix", json_string(a->matrix)) && put(o, "spectral_radius", json_num(a->radius));
    json_t *eig = ok ? json_array() : NULL;
    ok = ok && put(o, "eigenvalues", eig);
    for (int i = 0; ok && i < a->n; i++)
        ok = json_array_append_new(eig, json_nums((const double[]){a->eig_re[i], a->eig_im[i]}, 2)) == 0;
    json_t *power = ok ? json_object() : NULL;
    return ok && put(o, "power", power) && put(power, "lambda1", json_num(a->lambda1)) &&
           put(power, "lambda2", json_num(a->lambda2)) &&
           put(power, "steps", json_integer(a->power_K)) &&
           put(power, "tan_angle", json_nums(a->power_tan, a->power_K + 1)) &&
           put(power, "predicted", json_nums(a->power_pred, a->power_K + 1));
}

json_t *cli_analysis_to_json(const bt_analysis *a)
{
    json_t *o = json_object();
    bool ok = o && put(o, "lags", json_integer(a->K)) && put(o, "hidden", json_integer(a->H)) &&
              put(o, "norm", json_string("frobenius over the batch")) &&
              put(o, "grad_norm", json_nums(a->grad_norm, a->K + 1)) &&
              put(o, "jac_norm", json_nums(a->jac_norm, a->K + 1)) &&
              put(o, "grad_rate", json_num(a->grad_rate)) &&
              put(o, "grad_scale", json_num(a->grad_scale)) && put(o, "jac_rate", json_num(a->jac_rate));
    if (ok && a->n > 0)
        ok = put_spectrum(o, a);
    if (!ok)
        json_decref(o);
    return ok ? o : NULL;
}

/* The first panel: the gradient ratio and the Jacobian norm against lag, and
 * the fitted line c r^k through the ratios (the fit of log ||dL_T/dh_{T-k}||
 * divided by lag 0's norm, so it passes through the data, not through 1). */
static bt_plot *lag_panel(const bt_analysis *a)
{
    int K = a->K;
    double *ratio = bt_malloc(sizeof(double) * ((size_t)K + 1) * 2), *fit = ratio + K + 1;
    bt_plot *p = ratio ? bt_plot_new("gradient sent back k steps", "lag k",
                                     "||dL_T/dh_{T-k}|| / ||dL_T/dh_T||") : NULL;
    if (!p) {
        bt_free(ratio);
        return NULL;
    }
    double c = a->grad_norm[0] > 0 ? a->grad_scale / a->grad_norm[0] : NAN;
    for (int k = 0; k <= K; k++) {
        ratio[k] = a->grad_norm[0] > 0 ? a->grad_norm[k] / a->grad_norm[0] : NAN;
        fit[k] = c * pow(a->grad_rate, k);
    }
    bt_plot_set_logy(p, true);
    bt_plot_line(p, "gradient norm ratio", NULL, ratio, K + 1);
    bt_plot_line(p, "||dh_T/dh_{T-k}||_2", NULL, a->jac_norm, K + 1);
    char label[128];
    snprintf(label, sizeof label, "fit %.3g \u00d7 %.3g^k\n(least squares on log ratio)", c,
             a->grad_rate);
    bt_plot_line(p, label, NULL, fit, K + 1);
    bt_free(ratio);
    return p;
}

/* The eigenvalues with the unit circle, and power iteration on the symmetric
 * part against its prediction. */
static bt_status spectrum_panels(bt_figure *fig, const bt_analysis *a)
{
    char t[96], label[128];
    snprintf(t, sizeof t, "eigenvalues of %s (radius %.3g)", a->matrix, a->radius);
    bt_plot *p = bt_plot_new(t, "Re", "Im");
    bt_plot_set_equal_aspect(p, true);
    bt_plot_circle(p, "unit circle", 0, 0, 1);
    bt_plot_points(p, "eigenvalues", a->eig_re, a->eig_im, a->n);
    bt_status st = bt_figure_add(fig, p);
    if (st != BT_OK)
        return st;
    snprintf(t, sizeof t, "power iteration on (%s+%s^T)/2", a->matrix, a->matrix);
    p = bt_plot_new(t, "k", "tan angle(M^k x, v1)");
    bt_plot_set_logy(p, true);
    bt_plot_line(p, "measured", NULL, a->power_tan, a->power_K + 1);
    snprintf(label, sizeof label, "predicted, |l2/l1| = %.3g:\ntan(angle_0) |l2/l1|^k",
             a->lambda1 != 0 ? fabs(a->lambda2 / a->lambda1) : NAN);
    bt_plot_line(p, label, NULL, a->power_pred, a->power_K + 1);
    return bt_figure_add(fig, p);
}

bt_status cli_analysis_svg(const bt_analysis *a, const char *title, const char *path, char *err,
                           size_t errlen)
{
    /* Two columns: three panels side by side would be 1800 px wide, too wide
     * for a screen and unreadable when scaled down to fit one. */
    bt_figure *fig = bt_figure_new(title, a->n > 0 ? 2 : 1);
    if (!fig)
        return BT_ERR_NOMEM;
    bt_plot *p = lag_panel(a);
    bt_status st = p ? bt_figure_add(fig, p) : BT_ERR_NOMEM;
    if (st == BT_OK && a->n > 0)
        st = spectrum_panels(fig, a);
    if (st == BT_OK)
        st = bt_figure_write(fig, path, err, errlen);
    bt_figure_free(fig);
    return st;
}
