/* gradcheck.c: compares the tape's gradients with central differences, for any
 * scalar function built from ops (a single op, a cell, a whole unrolled RNN). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bptt.h"

static bt_status eval_loss(bt_graph *g, bt_loss_fn fn, void *ctx, bt_tensor *const *inputs, int n,
                           double *value, char *err, size_t errlen)
{
    bt_graph_reset(g);
    bt_graph_set_grad(g, false);
    bt_tensor *loss = fn(g, inputs, n, ctx);
    bt_graph_set_grad(g, true);
    if (!loss || bt_graph_status(g) != BT_OK) {
        snprintf(err, errlen, "gradcheck: the loss function failed: %s", bt_graph_error(g));
        return bt_graph_status(g) != BT_OK ? bt_graph_status(g) : BT_ERR_ARG;
    }
    *value = (double)loss->data[0];
    return BT_OK;
}

/* The tape's gradients of every input that requires one, copied into analytic
 * (inputs in order, each input's elements in order). */
static bt_status analytic_grads(bt_graph *g, bt_loss_fn fn, void *ctx, bt_tensor *const *inputs,
                                int n, bt_real *analytic, char *err, size_t errlen)
{
    for (int i = 0; i < n; i++)
        bt_tensor_zero_grad(inputs[i]);
    bt_tensor *loss = fn(g, inputs, n, ctx);
    if (!loss || bt_graph_status(g) != BT_OK) {
        snprintf(err, errlen, "gradcheck: the loss function failed: %s", bt_graph_error(g));
        return bt_graph_status(g) != BT_OK ? bt_graph_status(g) : BT_ERR_ARG;
    }
    bt_status st = bt_backward(g, loss);
    if (st != BT_OK) {
        snprintf(err, errlen, "gradcheck: backward failed: %s", bt_graph_error(g));
        return st;
    }
    size_t off = 0;
    for (int i = 0; i < n; i++)
        if (inputs[i]->requires_grad) {
            memcpy(analytic + off, inputs[i]->grad, inputs[i]->size * sizeof(bt_real));
            off += inputs[i]->size;
        }
    return BT_OK;
}

/* Folds one element's comparison into r: the largest errors and where. */
static void note(bt_gradcheck_result *r, size_t j, double ana, double num, double rel_floor)
{
    double abs_err = fabs(ana - num);
    double denom = fmax(fmax(fabs(ana), fabs(num)), rel_floor);
    double rel = denom > 0 ? abs_err / denom : abs_err;
    if (!isfinite(abs_err))
        rel = abs_err = INFINITY;
    if (abs_err > r->max_abs)
        r->max_abs = abs_err;
    if (rel > r->max_rel || j == 0) {
        r->max_rel = rel;
        r->worst = j;
        r->analytic = ana;
        r->numeric = num;
    }
}

/* Central differences for every element of input x against its analytic
 * gradient ana[x->size]. */
static bt_status compare_input(bt_graph *g, bt_loss_fn fn, void *ctx, bt_tensor *const *inputs,
                               int n, bt_tensor *x, const bt_real *ana, double eps,
                               double rel_floor, bt_gradcheck_result *r, char *err, size_t errlen)
{
    for (size_t j = 0; j < x->size; j++) {
        bt_real keep = x->data[j];
        double lp, lm;
        x->data[j] = (bt_real)(keep + eps);
        bt_status st = eval_loss(g, fn, ctx, inputs, n, &lp, err, errlen);
        x->data[j] = (bt_real)(keep - eps);
        if (st == BT_OK)
            st = eval_loss(g, fn, ctx, inputs, n, &lm, err, errlen);
        x->data[j] = keep;
        if (st != BT_OK)
            return st;
        note(r, j, (double)ana[j], (lp - lm) / (2 * eps), rel_floor);
    }
    return BT_OK;
}

bt_status bt_gradcheck(bt_loss_fn fn, void *ctx, bt_tensor *const *inputs, int n, double eps,
                       double rel_floor, bt_gradcheck_result *results, char *err, size_t errlen)
{
    if (!fn || !inputs || n <= 0 || !results || eps <= 0)
        return bt_error(err, errlen, BT_ERR_ARG, "gradcheck: needs a loss function, inputs and eps > 0");
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        if (!inputs[i] || (inputs[i]->requires_grad && !inputs[i]->grad))
            return bt_error(err, errlen, BT_ERR_ARG,
                            "gradcheck: input %d is NULL or has no gradient buffer", i);
        total += inputs[i]->requires_grad ? inputs[i]->size : 0;
    }
    bt_graph *g = bt_graph_new();
    bt_real *analytic = bt_calloc(total ? total : 1, sizeof(bt_real));
    if (!g || !analytic) {
        bt_graph_free(g);
        bt_free(analytic);
        return bt_error(err, errlen, BT_ERR_NOMEM, "gradcheck: out of memory");
    }
    bt_status st = analytic_grads(g, fn, ctx, inputs, n, analytic, err, errlen);
    size_t off = 0;
    for (int i = 0; i < n && st == BT_OK; i++) {
        memset(&results[i], 0, sizeof results[i]);
        if (!inputs[i]->requires_grad)
            continue;
        st = compare_input(g, fn, ctx, inputs, n, inputs[i], analytic + off, eps, rel_floor,
                           &results[i], err, errlen);
        off += inputs[i]->size;
    }
    /* Leave the inputs' gradients as the analytic ones. */
    off = 0;
    for (int i = 0; i < n && st == BT_OK; i++)
        if (inputs[i]->requires_grad) {
            memcpy(inputs[i]->grad, analytic + off, inputs[i]->size * sizeof(bt_real));
            off += inputs[i]->size;
        }
    bt_free(analytic);
    bt_graph_free(g);
    return st;
}
