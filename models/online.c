/* online.c: stream training with one update per truncation segment and a
 * summed (not averaged) segment loss; see online.h for why. Each segment is an
 * ordinary bt_unroll_run in accumulate mode over a copy of the segment's
 * columns, replaying the policy's xi, so the gradients are the unroller's.
 *
 * Dimension letters: B rows, T steps, H state width, D input, Q output. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "online.h"

struct bt_online {
    bt_model *m;
    int B, cap_T;
    bt_unroller *u;
    bt_real *state_buf;              /* [sum over states of B * width] */
    bt_real *state[BT_MAX_STATES];
    double *xi;                      /* [cap_T] the policy's factors for one sequence */
    unsigned char *cut_after;        /* [cap_T] 1: a segment ends after step t */
    int32_t *ids, *targets;          /* [B * cap_T] one segment's columns */
    bt_real *x, *y, *lw;             /* [B * cap_T * D], [B * cap_T * Q], [cap_T] */
    long steps;
};

bt_status bt_online_new(bt_model *m, int B, int max_T, bt_online **out, char *err, size_t errlen)
{
    *out = NULL;
    bt_online *o = bt_calloc(1, sizeof *o);
    if (!o)
        return BT_ERR_NOMEM;
    o->m = m;
    o->B = B;
    o->cap_T = max_T;
    bt_status st = bt_unroller_new(m, B, max_T, &o->u, err, errlen);
    if (st != BT_OK) {
        bt_free(o);
        return st;
    }
    size_t len = 0;
    for (int k = 0; k < m->n_states; k++)
        len += (size_t)B * (size_t)m->state_width[k];
    size_t bt = (size_t)B * (size_t)max_T;
    o->state_buf = bt_calloc(len, sizeof(bt_real));
    o->xi = bt_malloc(sizeof(double) * (size_t)max_T);
    o->cut_after = bt_malloc((size_t)max_T);
    o->ids = bt_malloc(sizeof(int32_t) * bt * 2);
    o->x = bt_malloc(sizeof(bt_real) * bt * (size_t)m->dims.input);
    o->y = bt_malloc(sizeof(bt_real) * bt * (size_t)m->dims.output);
    o->lw = bt_malloc(sizeof(bt_real) * (size_t)max_T);
    if (!o->state_buf || !o->xi || !o->cut_after || !o->ids || !o->x || !o->y || !o->lw) {
        bt_online_free(o);
        snprintf(err, errlen, "online: out of memory for %d x %d steps", B, max_T);
        return BT_ERR_NOMEM;
    }
    o->targets = o->ids + bt;
    bt_real *p = o->state_buf;
    for (int k = 0; k < m->n_states; k++) {
        o->state[k] = p;
        p += (size_t)B * (size_t)m->state_width[k];
    }
    *out = o;
    return BT_OK;
}

void bt_online_free(bt_online *o)
{
    if (!o)
        return;
    bt_unroller_free(o->u);
    bt_free(o->state_buf);
    bt_free(o->xi);
    bt_free(o->cut_after);
    bt_free(o->ids);
    bt_free(o->x);
    bt_free(o->y);
    bt_free(o->lw);
    bt_free(o);
}

void bt_online_reset_state(bt_online *o)
{
    size_t len = 0;
    for (int k = 0; k < o->m->n_states; k++)
        len += (size_t)o->B * (size_t)o->m->state_width[k];
    memset(o->state_buf, 0, len * sizeof(bt_real));
    o->steps = 0;
}

/* Columns a..a+L-1 of seq into the segment buffers. */
static bt_sequence segment_of(bt_online *o, const bt_sequence *seq, int a, int L)
{
    int B = seq->B, T = seq->T, D = o->m->dims.input, Q = o->m->dims.output;
    bt_sequence s = {.B = B, .T = L};
    for (int b = 0; b < B; b++) {
        size_t src = (size_t)b * T + a, dst = (size_t)b * L;
        if (seq->ids)
            memcpy(o->ids + dst, seq->ids + src, sizeof(int32_t) * L);
        if (seq->targets)
            memcpy(o->targets + dst, seq->targets + src, sizeof(int32_t) * L);
        if (seq->x)
            memcpy(o->x + dst * D, seq->x + src * D, sizeof(bt_real) * (size_t)L * D);
        if (seq->y)
            memcpy(o->y + dst * Q, seq->y + src * Q, sizeof(bt_real) * (size_t)L * Q);
    }
    for (int t = 0; t < L; t++)
        o->lw[t] = seq->loss_weight ? seq->loss_weight[a + t] : 1;
    s.ids = seq->ids ? o->ids : NULL;
    s.targets = seq->targets ? o->targets : NULL;
    s.x = seq->x ? o->x : NULL;
    s.y = seq->y ? o->y : NULL;
    s.loss_weight = o->lw;
    return s;
}

bt_status bt_online_run(bt_online *o, const bt_sequence *seq, uint64_t seed,
                        const bt_online_opts *opts, bt_online_result *res, char *err,
                        size_t errlen)
{
    int T = seq->T;
    res->updates = 0;
    res->loss_sum = res->weight_sum = 0;
    if (seq->B != o->B || T <= 0 || T > o->cap_T) {
        snprintf(err, errlen, "online: sequence of %d x %d steps; this trainer takes %d rows and "
                 "at most %d steps", seq->B, T, o->B, o->cap_T);
        return BT_ERR_SHAPE;
    }
    if (!opts->policy || !opts->optimizer) {
        snprintf(err, errlen, "online: needs a truncation policy and an optimizer");
        return BT_ERR_ARG;
    }
    if (opts->policy->max_reach && opts->policy->max_reach(opts->policy_state) > 0) {
        snprintf(err, errlen, "online: policy %s reaches back past its last update (TBPTT); "
                 "online training takes full, fixed and random", opts->policy->name);
        return BT_ERR_ARG;
    }
    /* The policy's decisions for the whole sequence first: they fix the segments. */
    if (opts->policy->begin)
        opts->policy->begin(opts->policy_state, seed);
    for (int t = 0; t < T; t++) {
        bt_policy_decision d = {.xi = 1, .update = false, .reach = 0};
        opts->policy->decide(opts->policy_state, t, &d);
        o->xi[t] = d.xi;
        o->cut_after[t] = d.update || t == T - 1;
    }
    bt_unroll_opts uo = {.accumulate = true};
    bt_params *p = o->m->params;
    for (int a = 0; a < T;) {
        int L = 1;
        while (!o->cut_after[a + L - 1])
            L++;
        bt_sequence s = segment_of(o, seq, a, L);
        /* The segment starts from the carried state, a leaf: the edge into its
         * first step is cut whatever xi says, so replay xi from there on. */
        double saved = o->xi[a];
        o->xi[a] = 1;
        uo.xi = o->xi + a;
        bt_unroll_result ur;
        bt_params_zero_grad(p);
        bt_status st = bt_unroll_run(o->u, &s, o->state, &uo, NULL, NULL, NULL, &ur, err, errlen);
        o->xi[a] = saved;
        if (st != BT_OK)
            return st;
        double wsum = 0;
        for (int t = 0; t < L; t++)
            wsum += (double)o->lw[t];
        o->steps += L;
        if (wsum > 0) {
            /* Accumulate mode averaged over the segment's weight: undo it. */
            bt_real *g = bt_params_grad(p);
            for (size_t i = 0; i < bt_params_total(p); i++)
                g[i] = (bt_real)(g[i] * wsum);
            double norm;
            if (bt_clip_grad_norm(p, opts->clip, &norm) == BT_OK)
                bt_optimizer_step(opts->optimizer);
            res->updates++;
            res->loss_sum += ur.loss_sum;
            res->weight_sum += wsum;
            if (opts->on_update)
                opts->on_update(opts->ctx, o->steps, ur.loss_sum / wsum, o->m);
        }
        a += L;
    }
    bt_params_zero_grad(p);
    res->steps = o->steps;
    return BT_OK;
}

bt_status bt_online_train(const bt_registry *reg, bt_model *m, bt_source *src, const char *policy,
                          const char *optimizer, long steps, uint64_t seed,
                          void (*on_update)(void *ctx, long step, double segment_loss,
                                            const bt_model *m),
                          void *ctx, double *mean_loss, char *err, size_t errlen)
{
    char name[BT_NAME_LEN];
    const char *popts;
    bt_split_spec(policy, name, sizeof name, &popts);
    const bt_policy_def *pd = bt_registry_policy(reg, name);
    if (!pd) {
        snprintf(err, errlen, "unknown truncation policy '%s'", name);
        return BT_ERR_NOT_FOUND;
    }
    void *ps = NULL;
    if (pd->create(bt_host_table(), popts, &ps, err, errlen) != 0)
        return BT_ERR_ARG;
    bt_optimizer *opt = NULL;
    bt_online *o = NULL;
    bt_status st = bt_optimizer_new(reg, optimizer, m->params, &opt, err, errlen);
    if (st == BT_OK)
        st = bt_online_new(m, src->B, src->T, &o, err, errlen);
    bt_rng rng;
    bt_rng_seed(&rng, seed);
    bt_online_opts oo = {.policy = pd, .policy_state = ps, .optimizer = opt,
                         .on_update = on_update, .ctx = ctx};
    bt_online_result res = {0};
    bool have_epoch = false;
    while (st == BT_OK && res.steps < steps) {
        bt_sequence seq;
        if (!have_epoch || !src->next(src->ctx, &seq)) {
            src->epoch(src->ctx, &rng);
            have_epoch = true;
            if (!src->next(src->ctx, &seq)) {
                snprintf(err, errlen, "source %s gave no sequence", src->name);
                st = BT_ERR_ARG;
                break;
            }
        }
        if (!src->carry_state)
            bt_online_reset_state(o), o->steps = res.steps;
        st = bt_online_run(o, &seq, bt_rng_next(&rng), &oo, &res, err, errlen);
        if (st == BT_OK && mean_loss)
            *mean_loss = res.weight_sum > 0 ? res.loss_sum / res.weight_sum : NAN;
    }
    bt_online_free(o);
    bt_optimizer_free(opt);
    if (pd->destroy)
        pd->destroy(ps);
    return st;
}
