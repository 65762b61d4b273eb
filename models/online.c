/* online.c: a model run over a sequence one recorded step at a time, with an
 * online gradient estimator in place of backpropagation through time
 * (online.h). Per step: reset the graph, record the step from the state as
 * leaves (bt_unroll_step: the cell's step and its loss), zero the parameters'
 * gradients (the estimator's scratch), let the estimator add its weighted
 * estimate to the running sum, carry the next state's values on. The sum goes
 * to the parameters' gradients at the end (accumulate) or at each update
 * (training, through clipping and the optimizer runner).
 *
 * Dimension letters: B rows, T steps, S state numbers, P parameters. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bt_assert.h"
#include "loss_weight.h"
#include "online.h"

struct bt_online {
    bt_model *m;
    int B;
    bt_graph *g;
    size_t S, P;
    size_t soff[BT_MAX_STATES]; /* where state k starts in the flat state */
    bt_real *flat;              /* [S] the state at the start of the coming step */
    bt_real *acc;               /* [P] the estimates since the last update (or the start) */
    bt_real *ds0;               /* [S] the estimate of dL/ds_{-1} */
};

bt_status bt_online_new(bt_model *m, int B, bt_online **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!m || B <= 0)
        return bt_error(err, errlen, BT_ERR_ARG, "online: a model and a positive batch (%d) are "
                        "required", B);
    bt_online *o = bt_calloc(1, sizeof *o);
    if (!o)
        return bt_error(err, errlen, BT_ERR_NOMEM, "online: out of memory");
    o->m = m;
    o->B = B;
    for (int k = 0; k < m->n_states; k++) {
        o->soff[k] = o->S;
        o->S += (size_t)B * (size_t)m->state_width[k];
    }
    o->P = bt_params_total(m->params);
    /* The estimator's contract: tensor q holds theta[off_q ...], off_q the sum
     * of the earlier sizes. The model's block is laid out in spec order. */
    const bt_real *base = bt_params_data(m->params);
    size_t off = 0;
    for (int q = 0; q < m->n_params; q++) {
        BT_ASSERT(m->ptab[q]->data == base + off, "parameter %d is not where the block's "
                  "layout puts it", q);
        off += m->ptab[q]->size;
    }
    o->g = bt_graph_new();
    o->flat = bt_calloc(o->S ? o->S : 1, sizeof(bt_real));
    o->ds0 = bt_calloc(o->S ? o->S : 1, sizeof(bt_real));
    o->acc = bt_calloc(o->P ? o->P : 1, sizeof(bt_real));
    if (!o->g || !o->flat || !o->ds0 || !o->acc) {
        bt_online_free(o);
        return bt_error(err, errlen, BT_ERR_NOMEM, "online: out of memory for S=%zu, P=%zu",
                        o->S, o->P);
    }
    *out = o;
    return BT_OK;
}

void bt_online_free(bt_online *o)
{
    if (!o)
        return;
    bt_graph_free(o->g);
    bt_free(o->flat);
    bt_free(o->acc);
    bt_free(o->ds0);
    bt_free(o);
}

bt_graph *bt_online_graph(bt_online *o) { return o->g; }

static bt_status check_run(const bt_online *o, const bt_sequence *seq, const bt_online_opts *op,
                           char *err, size_t errlen)
{
    if (seq->B != o->B || seq->T <= 0)
        return bt_error(err, errlen, BT_ERR_SHAPE, "online: sequence has %d rows and %d steps; "
                        "this runner takes %d rows", seq->B, seq->T, o->B);
    if ((!seq->ids && !seq->x) || (!seq->targets && !seq->y))
        return bt_error(err, errlen, BT_ERR_ARG, "online: the sequence needs inputs (token ids "
                        "or x) and targets (token ids or y)");
    if (!op->estimator)
        return bt_error(err, errlen, BT_ERR_ARG, "online: no estimator");
    const bt_estimator_dims *d = bt_estimator_dims_of(op->estimator);
    if (d->S != o->S || d->P != o->P || d->B != o->B)
        return bt_error(err, errlen, BT_ERR_ARG, "online: estimator %s is bound to S=%zu, P=%zu, "
                        "B=%d; this runner has S=%zu, P=%zu, B=%d", bt_estimator_name(op->estimator),
                        d->S, d->P, d->B, o->S, o->P, o->B);
    if (!op->accumulate && !op->optimizer)
        return bt_error(err, errlen, BT_ERR_ARG, "online: training needs an optimizer");
    if (!op->accumulate && bt_optimizer_params(op->optimizer) != o->m->params)
        return bt_error(err, errlen, BT_ERR_ARG, "online: the optimizer is bound to other "
                        "parameters than the model's");
    if (op->update_every < 0)
        return bt_error(err, errlen, BT_ERR_ARG, "online: update_every (%d) must be >= 0",
                        op->update_every);
    return BT_OK;
}

/* Records step t from the flat state: state leaves (requiring grad), the cell's
 * step and its loss. NULL with the graph's error. */
static bt_tensor *record_step(bt_online *o, const bt_sequence *seq, long t, bt_tensor **state,
                              bt_tensor **next)
{
    bt_graph_reset(o->g);
    for (int k = 0; k < o->m->n_states; k++) {
        state[k] = bt_graph_input(o->g, 2, (int[]){o->B, o->m->state_width[k]}, o->flat + o->soff[k]);
        if (!state[k])
            return NULL;
        state[k]->requires_grad = true; /* a leaf with a tangent must require grad */
    }
    return bt_unroll_step(o->g, o->m, seq, t, state, next);
}

/* The step's loss value, refused when it counts and is not finite (the
 * unroller's message: what to try). */
static bt_status check_loss(long t, double value, double weight, char *err, size_t errlen)
{
    if (weight == 0 || isfinite(value))
        return BT_OK;
    return bt_error(err, errlen, BT_ERR_NUMERIC, "the loss became %s at step %ld: lower the "
                    "learning rate, clip gradients, or check the data",
                    isnan(value) ? "NaN" : "infinite", t);
}

/* One step: record, estimate, carry the state on. The step's loss weighs
 * weight = raw * scale in L; res sums raw-weighted losses, as the unroller's. */
static bt_status run_step(bt_online *o, const bt_sequence *seq, long t, double raw, double scale,
                          const bt_online_opts *op, bt_unroll_result *res, char *err,
                          size_t errlen)
{
    double weight = raw * scale;
    bt_model *m = o->m;
    bt_tensor *state[BT_MAX_STATES], *next[BT_MAX_STATES];
    bt_tensor *l = record_step(o, seq, t, state, next);
    if (!l)
        return bt_error(err, errlen, bt_graph_status(o->g), "cell %s: %s", m->cell->name,
                        bt_graph_error(o->g));
    double value = (double)l->data[0];
    bt_status st = check_loss(t, value, weight, err, errlen);
    if (st != BT_OK)
        return st;
    bt_params_zero_grad(m->params);
    bt_estimator_ctx ctx = {.g = o->g, .t = t, .weight = weight, .loss = l, .state = state,
                            .next = next, .n_params = m->n_params, .params = m->ptab,
                            .grad = o->acc, .dstate0 = o->ds0};
    st = bt_estimator_step(op->estimator, &ctx, err, errlen);
    for (int q = 0; q < m->n_params; q++)
        m->ptab[q]->tangent = NULL; /* the estimator's tangents point into this step's arena */
    if (st == BT_OK && bt_graph_status(o->g) != BT_OK)
        st = bt_error(err, errlen, bt_graph_status(o->g), "estimator %s at step %ld: %s",
                      bt_estimator_name(op->estimator), t, bt_graph_error(o->g));
    if (st != BT_OK)
        return st;
    for (int k = 0; k < m->n_states; k++)
        memcpy(o->flat + o->soff[k], next[k]->data, sizeof(bt_real) * next[k]->size);
    size_t used = bt_arena_used(bt_graph_arena(o->g));
    if (used > res->peak_arena)
        res->peak_arena = used;
    if (weight != 0) {
        res->loss_sum += value * raw;
        res->loss_terms++;
    }
    return BT_OK;
}

/* Training: the estimates since the last update become the gradients, which
 * are clipped and stepped on (a non-finite norm skips the step, as the
 * unroller does). */
static void update(bt_online *o, const bt_online_opts *op, bt_unroll_result *res)
{
    bt_params *p = o->m->params;
    memcpy(bt_params_grad(p), o->acc, sizeof(bt_real) * o->P);
    double norm = 0;
    if (bt_optimizer_update(op->optimizer, op->clip, 1, &norm) != BT_OK)
        res->skipped++;
    else {
        res->grad_norm_sum += norm;
        if (norm > res->grad_norm_max)
            res->grad_norm_max = norm;
    }
    res->updates++;
    memset(o->acc, 0, sizeof(bt_real) * o->P);
}

/* The flat state from the caller's buffers, and the estimates cleared. */
static void begin_run(bt_online *o, bt_real *const *state, const bt_online_opts *op)
{
    for (int k = 0; k < o->m->n_states; k++)
        memcpy(o->flat + o->soff[k], state[k],
               sizeof(bt_real) * (size_t)o->B * (size_t)o->m->state_width[k]);
    memset(o->acc, 0, sizeof(bt_real) * o->P);
    memset(o->ds0, 0, sizeof(bt_real) * o->S);
    if (op->begin)
        bt_estimator_begin(op->estimator, op->seed);
}

/* The final state to the caller; in accumulate mode the sum to the parameters'
 * gradients and dL/ds_{-1} added to dstate0. */
static void finish_run(bt_online *o, bt_real *const *state, const bt_online_opts *op,
                       bt_real *const *dstate0)
{
    bt_model *m = o->m;
    bool ds0 = op->accumulate && op->begin && dstate0 &&
               bt_estimator_has_dstate0(op->estimator);
    for (int k = 0; k < m->n_states; k++) {
        size_t len = (size_t)o->B * (size_t)m->state_width[k];
        memcpy(state[k], o->flat + o->soff[k], sizeof(bt_real) * len);
        for (size_t i = 0; ds0 && i < len; i++)
            dstate0[k][i] += o->ds0[o->soff[k] + i];
    }
    if (op->accumulate)
        memcpy(bt_params_grad(m->params), o->acc, sizeof(bt_real) * o->P);
    else
        bt_params_zero_grad(m->params);
}

bt_status bt_online_run(bt_online *o, const bt_sequence *seq, bt_real *const *state,
                        const bt_online_opts *opts, bt_real *const *dstate0,
                        bt_unroll_result *res, char *err, size_t errlen)
{
    memset(res, 0, sizeof *res);
    bt_status st = check_run(o, seq, opts, err, errlen);
    if (st != BT_OK)
        return st;
    begin_run(o, state, opts);
    double scale = bt_loss_weight_scale(seq); /* step t weighs w_t = weight_t / sum */
    int every = opts->update_every > 0 ? opts->update_every : seq->T;
    for (long t = 0; t < seq->T; t++) {
        double raw = bt_loss_weight_of(seq, t);
        if ((st = run_step(o, seq, t, raw, scale, opts, res, err, errlen)) != BT_OK) {
            bt_params_zero_grad(o->m->params);
            return st;
        }
        if (!opts->accumulate && ((t + 1) % every == 0 || t == seq->T - 1))
            update(o, opts, res);
    }
    finish_run(o, state, opts, dstate0);
    return BT_OK;
}
