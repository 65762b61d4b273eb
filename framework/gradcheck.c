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

bt_status bt_gradcheck(bt_loss_fn fn, void *ctx, bt_tensor *const *inputs, int n, double eps,
                       double rel_floor, bt_gradcheck_result *results, char *err, size_t errlen)
{
    if (!fn || !inputs || n <= 0 || !results || eps <= 0) {
        snprintf(err, errlen, "gradcheck: needs a loss function, inputs and eps > 0");
        return BT_ERR_ARG;
    }
    for (int i = 0; i < n; i++)
        if (!inputs[i] || (inputs[i]->requires_grad && !inputs[i]->grad)) {
            snprintf(err, errlen, "gradcheck: input %d is NULL or has no gradient buffer", i);
            return BT_ERR_ARG;
        }
    bt_graph *g = bt_graph_new();
    if (!g) {
        snprintf(err, errlen, "gradcheck: out of memory");
        return BT_ERR_NOMEM;
    }
    bt_status st = BT_OK;
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += inputs[i]->requires_grad ? inputs[i]->size : 0;
    bt_real *analytic = bt_calloc(total ? total : 1, sizeof(bt_real));
    if (!analytic) {
        bt_graph_free(g);
        snprintf(err, errlen, "gradcheck: out of memory");
        return BT_ERR_NOMEM;
    }

    /* Analytic gradients from one backward sweep. */
    for (int i = 0; i < n; i++)
        bt_tensor_zero_grad(inputs[i]);
    bt_tensor *loss = fn(g, inputs, n, ctx);
    if (!loss || bt_graph_status(g) != BT_OK) {
        snprintf(err, errlen, "gradcheck: the loss function failed: %s", bt_graph_error(g));
        st = bt_graph_status(g) != BT_OK ? bt_graph_status(g) : BT_ERR_ARG;
        goto done;
    }
    if ((st = bt_backward(g, loss)) != BT_OK) {
        snprintf(err, errlen, "gradcheck: backward failed: %s", bt_graph_error(g));
        goto done;
    }
    size_t off = 0;
    for (int i = 0; i < n; i++)
        if (inputs[i]->requires_grad) {
            memcpy(analytic + off, inputs[i]->grad, inputs[i]->size * sizeof(bt_real));
            off += inputs[i]->size;
        }

    /* Central differences, one element at a time. */
    off = 0;
    for (int i = 0; i < n; i++) {
        bt_gradcheck_result *r = &results[i];
        memset(r, 0, sizeof *r);
        bt_tensor *x = inputs[i];
        if (!x->requires_grad)
            continue;
        for (size_t j = 0; j < x->size; j++) {
            bt_real keep = x->data[j];
            double lp, lm;
            x->data[j] = (bt_real)(keep + eps);
            st = eval_loss(g, fn, ctx, inputs, n, &lp, err, errlen);
            x->data[j] = (bt_real)(keep - eps);
            if (st == BT_OK)
                st = eval_loss(g, fn, ctx, inputs, n, &lm, err, errlen);
            x->data[j] = keep;
            if (st != BT_OK)
                goto done;
            double num = (lp - lm) / (2 * eps);
            double ana = (double)analytic[off + j];
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
        off += x->size;
    }
done:
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
