/* cellcheck.c: finite-difference check of an unrolled cell under any
 * truncation policy (see cellcheck.h for the surrogate it differentiates). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cellcheck.h"
#include "stack.h"

typedef struct check {
    bt_model *m;
    const bt_sequence *seq;
    bt_real *const *h0;
    const double *xi;       /* [T] factors used */
    const bt_window *win;
    int n_win;
    bt_real *nominal;       /* [T+1][state_len]: state at each step start */
    size_t state_len;
    bt_graph *g;
} check;

/* The states as n_states graph tensors built from a flat buffer. */
static void states_from(check *c, const bt_real *flat, bt_tensor **out)
{
    for (int k = 0; k < c->m->n_states; k++) {
        int w = c->m->state_width[k];
        out[k] = bt_graph_input(c->g, 2, (int[]){c->seq->B, w}, flat);
        flat += (size_t)c->seq->B * w;
    }
}

static bt_status record_nominal(check *c)
{
    bt_graph_set_grad(c->g, false);
    bt_real *dst = c->nominal;
    for (int k = 0; k < c->m->n_states; k++) {
        size_t len = (size_t)c->seq->B * c->m->state_width[k];
        memcpy(dst, c->h0[k], sizeof(bt_real) * len);
        dst += len;
    }
    for (long s = 0; s < c->seq->T; s++) {
        bt_graph_reset(c->g);
        bt_tensor *st[BT_MAX_STATES], *next[BT_MAX_STATES];
        states_from(c, c->nominal + (size_t)s * c->state_len, st);
        if (!bt_unroll_step(c->g, c->m, c->seq, s, st, next))
            return bt_graph_status(c->g);
        bt_real *d = c->nominal + (size_t)(s + 1) * c->state_len;
        for (int k = 0; k < c->m->n_states; k++) {
            memcpy(d, next[k]->data, sizeof(bt_real) * next[k]->size);
            d += next[k]->size;
        }
    }
    return BT_OK;
}

/* Sum over windows of their losses (weight 1/T), frozen where truncated. */
static bt_status surrogate(check *c, double *out)
{
    double total = 0, wsum = 0;
    int T = c->seq->T;
    for (int s = 0; s < T; s++)
        wsum += c->seq->loss_weight ? (double)c->seq->loss_weight[s] : 1.0;
    for (int w = 0; w < c->n_win; w++) {
        const bt_window *win = &c->win[w];
        bt_graph_reset(c->g);
        bt_tensor *st[BT_MAX_STATES], *next[BT_MAX_STATES], *frozen[BT_MAX_STATES];
        if (win->start == 0) {
            for (int k = 0; k < c->m->n_states; k++)
                st[k] = bt_graph_input(c->g, 2, (int[]){c->seq->B, c->m->state_width[k]}, c->h0[k]);
        } else
            states_from(c, c->nominal + (size_t)win->start * c->state_len, st);
        for (long s = win->start; s <= win->end; s++) {
            double xi = c->xi[s];
            if ((s > win->start || s == 0) && xi != 1) {
                states_from(c, c->nominal + (size_t)s * c->state_len, frozen);
                for (int k = 0; k < c->m->n_states; k++)
                    st[k] = xi == 0 ? frozen[k]
                                    : bt_add(c->g, bt_scale(c->g, st[k], xi),
                                             bt_scale(c->g, frozen[k], 1 - xi));
            }
            bt_tensor *l = bt_unroll_step(c->g, c->m, c->seq, s, st, next);
            if (!l)
                return bt_graph_status(c->g);
            if (s >= win->loss_from)
                total += (double)l->data[0] * (c->seq->loss_weight ? (double)c->seq->loss_weight[s] : 1.0) / wsum;
            memcpy(st, next, sizeof st);
        }
    }
    *out = total;
    return bt_graph_status(c->g);
}

static void compare(bt_cellcheck_result *r, const char *name, bt_real *x, size_t n,
                    const bt_real *analytic, check *c, double eps, double rel_floor,
                    bt_status *st)
{
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", name);
    for (size_t j = 0; j < n && *st == BT_OK; j++) {
        bt_real keep = x[j];
        double lp = 0, lm = 0;
        x[j] = (bt_real)(keep + eps);
        *st = surrogate(c, &lp);
        x[j] = (bt_real)(keep - eps);
        if (*st == BT_OK)
            *st = surrogate(c, &lm);
        x[j] = keep;
        double num = (lp - lm) / (2 * eps), ana = (double)analytic[j];
        double abs_err = fabs(ana - num);
        double rel = abs_err / fmax(fmax(fabs(ana), fabs(num)), rel_floor);
        if (!isfinite(abs_err))
            abs_err = rel = INFINITY;
        if (abs_err > r->max_abs)
            r->max_abs = abs_err;
        if (j == 0 || rel > r->max_rel) {
            r->max_rel = rel;
            r->worst = j;
            r->analytic = ana;
            r->numeric = num;
        }
    }
}

/* Every parameter, then every initial state, against central differences;
 * returns the count of results. analytic: [P] parameters then the states. */
static int compare_all(check *c, bt_real *const *h0, const bt_real *analytic, size_t P,
                       double eps, double rel_floor, bt_cellcheck_result *res, bt_status *st)
{
    const bt_model *m = c->m;
    int n = 0;
    size_t off = 0;
    for (int i = 0; i < m->n_params && *st == BT_OK; i++) {
        bt_tensor *t = m->ptab[i];
        compare(&res[n++], m->specs[i].name, t->data, t->size, analytic + off, c, eps,
                rel_floor, st);
        off += t->size;
    }
    off = 0;
    for (int k = 0; k < m->n_states && *st == BT_OK; k++) {
        char name[BT_NAME_LEN];
        bt_model_state_name(m, k, name, sizeof name);
        size_t len = (size_t)c->seq->B * m->state_width[k];
        compare(&res[n++], name, h0[k], len, analytic + P + off, c, eps, rel_floor, st);
        off += len;
    }
    return n;
}

bt_status bt_cell_gradcheck(bt_model *m, const bt_sequence *seq, bt_real *const *h0,
                            const bt_policy_def *policy, void *policy_state, uint64_t seed,
                            const double *xi, double eps, double rel_floor,
                            bt_cellcheck_result *res, int *n_res, double *xi_used, char *err,
                            size_t errlen)
{
    int T = seq->T, B = seq->B;
    size_t state_len = 0;
    for (int k = 0; k < m->n_states; k++)
        state_len += (size_t)B * m->state_width[k];
    size_t P = bt_params_total(m->params);
    bt_unroller *u = NULL;
    check c = {.m = m, .seq = seq, .h0 = h0, .state_len = state_len};
    double *xis = bt_calloc((size_t)T, sizeof(double));
    bt_window *win = bt_calloc((size_t)T, sizeof(bt_window));
    bt_real *analytic = bt_calloc(P + state_len, sizeof(bt_real));
    bt_real *carry = bt_calloc(state_len, sizeof(bt_real));
    c.nominal = bt_calloc((size_t)(T + 1) * state_len, sizeof(bt_real));
    c.g = bt_graph_new();
    bt_status st = BT_ERR_NOMEM;
    if (!xis || !win || !analytic || !carry || !c.nominal || !c.g) {
        snprintf(err, errlen, "cell gradcheck: out of memory");
        goto done;
    }
    if ((st = bt_unroller_new(m, B, T, &u, err, errlen)) != BT_OK)
        goto done;

    /* Analytic: the unroller's accumulated gradients and dL/dh0. */
    bt_real *carry_k[BT_MAX_STATES], *dh0_k[BT_MAX_STATES];
    size_t off = 0;
    for (int k = 0; k < m->n_states; k++) {
        carry_k[k] = carry + off;
        dh0_k[k] = analytic + P + off;
        memcpy(carry_k[k], h0[k], sizeof(bt_real) * (size_t)B * m->state_width[k]);
        off += (size_t)B * m->state_width[k];
    }
    bt_params_zero_grad(m->params);
    bt_unroll_opts opts = {.policy = policy, .policy_state = policy_state, .policy_seed = seed,
                           .xi = xi, .accumulate = true, .want_dh0 = true, .windows = win,
                           .windows_cap = T, .dropout = true};
    bt_unroll_result ur;
    if ((st = bt_unroll_run(u, seq, carry_k, &opts, xis, dh0_k, NULL, &ur, err, errlen)) != BT_OK)
        goto done;
    memcpy(analytic, bt_params_grad(m->params), sizeof(bt_real) * P);
    if (xi_used)
        memcpy(xi_used, xis, sizeof(double) * (size_t)T);
    c.xi = xis;
    c.win = win;
    c.n_win = ur.n_windows;
    /* A stack's dropout is checked as trained: on, with the run's masks fixed. */
    m->dropout_on = m->dropout > 0;
    m->dropout_seed = bt_dropout_sequence_seed(seed);

    if ((st = record_nominal(&c)) != BT_OK) {
        snprintf(err, errlen, "cell gradcheck: %s", bt_graph_error(c.g));
        goto done;
    }
    int n = compare_all(&c, h0, analytic, P, eps, rel_floor, res, &st);
    if (st != BT_OK)
        snprintf(err, errlen, "cell gradcheck: %s", bt_graph_error(c.g));
    *n_res = n;
done:
    m->dropout_on = false;
    bt_unroller_free(u);
    bt_graph_free(c.g);
    bt_free(c.nominal);
    bt_free(carry);
    bt_free(analytic);
    bt_free(win);
    bt_free(xis);
    return st;
}
