/* grad_stats.c: a gradient method's estimates of one sequence's gradient
 * over many draws, against the exact one (grad_stats.h). A draw is one run
 * over the sequence from a zero state with the parameters fixed: the
 * unroller in accumulate mode for a truncation policy (its draws seeded
 * seed + s), the online runner for an estimator (begun with seed + s).
 *
 * Dimension letters: B rows, T steps, S state numbers, P parameters. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "grad_stats.h"

/* One method bound to the model: a policy on an unroller, or an estimator on
 * an online runner; the zero state it starts from. */
typedef struct method {
    bt_model *m;
    const bt_policy_def *pdef;
    void *pstate;
    bt_unroller *u;
    bt_estimator *e;
    bt_online *o;
    bt_real *block, *state[BT_MAX_STATES];
    size_t S;
} method;

static void method_free(method *w)
{
    if (w->pstate)
        w->pdef->destroy(w->pstate);
    bt_unroller_free(w->u);
    bt_online_free(w->o);
    bt_estimator_free(w->e);
    bt_free(w->block);
}

static bt_status method_new(const bt_registry *r, bt_model *m, const bt_sequence *seq,
                            const char *spec, method *w, char *desc, size_t dlen, char *err,
                            size_t errlen)
{
    memset(w, 0, sizeof *w);
    w->m = m;
    for (int k = 0; k < m->n_states; k++)
        w->S += (size_t)seq->B * (size_t)m->state_width[k];
    if (!(w->block = bt_calloc(w->S ? w->S : 1, sizeof(bt_real))))
        return bt_error(err, errlen, BT_ERR_NOMEM, "out of memory");
    bt_real *p = w->block;
    for (int k = 0; k < m->n_states; k++) {
        w->state[k] = p;
        p += (size_t)seq->B * (size_t)m->state_width[k];
    }
    char name[BT_NAME_LEN + 1], perr[BT_ERRMSG_LEN] = "";
    size_t n = strcspn(spec, ",:");
    snprintf(name, sizeof name, "%.*s", (int)(n < BT_NAME_LEN ? n : BT_NAME_LEN), spec);
    if (bt_registry_estimator(r, name)) {
        bt_status st = bt_estimator_new(r, spec, m, seq->B, false, &w->e, err, errlen);
        if (st == BT_OK)
            st = bt_online_new(m, seq->B, &w->o, err, errlen);
        if (st == BT_OK)
            bt_estimator_describe(w->e, desc, dlen);
        return st;
    }
    const char *opts;
    bt_split_spec(spec, name, sizeof name, &opts);
    if (!(w->pdef = bt_registry_policy(r, name)))
        return bt_error(err, errlen, BT_ERR_NOT_FOUND, "'%s' is neither a truncation policy nor "
                        "an estimator", name);
    if (bt_policy_create(w->pdef, opts, &w->pstate, perr, sizeof perr) != BT_OK) {
        w->pstate = NULL;
        return bt_error(err, errlen, BT_ERR_ARG, "%s: %s", spec, perr);
    }
    if (!bt_policy_describe(w->pdef, w->pstate, desc, dlen))
        snprintf(desc, dlen, "%s", spec);
    return bt_unroller_new(m, seq->B, seq->T, &w->u, err, errlen);
}

/* Draw `seed`: the method's gradient of L into the parameters' gradients. */
static bt_status method_draw(method *w, const bt_sequence *seq, uint64_t seed, char *err,
                             size_t errlen)
{
    bt_unroll_result res;
    memset(w->block, 0, sizeof(bt_real) * w->S);
    bt_params_zero_grad(w->m->params);
    if (w->e) {
        bt_online_opts o = {.estimator = w->e, .begin = true, .seed = seed, .accumulate = true};
        return bt_online_run(w->o, seq, w->state, &o, NULL, &res, err, errlen);
    }
    bt_unroll_opts o = {.policy = w->pdef, .policy_state = w->pstate, .policy_seed = seed,
                        .accumulate = true};
    return bt_unroll_run(w->u, seq, w->state, &o, NULL, NULL, NULL, &res, err, errlen);
}

bt_status bt_grad_exact(const bt_registry *r, bt_model *m, const bt_sequence *seq, bt_real *g,
                        double *norm, char *err, size_t errlen)
{
    method w;
    char desc[64];
    bt_status st = method_new(r, m, seq, "full", &w, desc, sizeof desc, err, errlen);
    if (st == BT_OK)
        st = method_draw(&w, seq, 0, err, errlen);
    size_t P = bt_params_total(m->params);
    double s = 0;
    for (size_t i = 0; st == BT_OK && i < P; i++) {
        g[i] = bt_params_grad(m->params)[i];
        s += (double)g[i] * (double)g[i];
    }
    *norm = sqrt(s);
    method_free(&w);
    return st;
}

void bt_grad_stats_free(bt_grad_stats *s)
{
    bt_free(s->cos);
    bt_free(s->running);
    s->cos = s->running = NULL;
}

/* Draw s's gradient (in the parameters' gradients) into the sums: the
 * running mean, its error against g, the draw's cosine to g. */
static void add_draw(bt_grad_stats *st, int s, const bt_real *gs, const bt_real *g, double gnorm,
                     double *mean, double *sq, size_t P)
{
    double dot = 0, nn = 0, err = 0;
    for (size_t i = 0; i < P; i++) {
        double x = (double)gs[i], d = x - mean[i];
        mean[i] += d / (s + 1); /* Welford: the mean and the sum of squared deviations */
        *sq += d * (x - mean[i]);
        dot += x * (double)g[i];
        nn += x * x;
        err += (mean[i] - (double)g[i]) * (mean[i] - (double)g[i]);
    }
    st->cos[s] = nn > 0 && gnorm > 0 ? dot / (sqrt(nn) * gnorm) : NAN;
    st->running[s] = gnorm > 0 ? sqrt(err) / gnorm : NAN;
}

/* The figures of the draws made: bias, noise floor, cosines, variance. */
static void summarize(bt_grad_stats *st, const double *mean, double sq, const bt_real *g,
                      double gnorm, size_t P)
{
    double dot = 0, mm = 0, cs = 0;
    for (size_t i = 0; i < P; i++) {
        dot += mean[i] * (double)g[i];
        mm += mean[i] * mean[i];
    }
    for (int s = 0; s < st->draws; s++)
        cs += st->cos[s];
    double g2 = gnorm * gnorm;
    st->rel_bias = st->running[st->draws - 1];
    st->rel_var = st->draws > 1 && g2 > 0 ? sq / (st->draws - 1) / g2 : 0;
    st->rel_se = sqrt(st->rel_var / st->draws);
    st->cos_mean = mm > 0 && gnorm > 0 ? dot / (sqrt(mm) * gnorm) : NAN;
    st->cos_draw = cs / st->draws;
}

bt_status bt_grad_stats_run(const bt_registry *r, bt_model *m, const bt_sequence *seq,
                            const char *spec, int draws, uint64_t seed, const bt_real *g,
                            double gnorm, bt_grad_stats *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (draws < 1)
        return bt_error(err, errlen, BT_ERR_ARG, "draws (%d) must be at least 1", draws);
    size_t P = bt_params_total(m->params);
    method w;
    bt_status st = method_new(r, m, seq, spec, &w, out->desc, sizeof out->desc, err, errlen);
    out->online = w.e != NULL;
    double *mean = bt_calloc(2 * P, sizeof(double)), *first = mean + P, sq = 0;
    out->cos = bt_calloc((size_t)draws, sizeof(double));
    out->running = bt_calloc((size_t)draws, sizeof(double));
    if (st == BT_OK && (!mean || !out->cos || !out->running))
        st = bt_error(err, errlen, BT_ERR_NOMEM, "out of memory for %d draws", draws);
    const bt_real *gs = bt_params_grad(m->params);
    clock_t c0 = clock();
    int made = 0;
    for (int s = 0; st == BT_OK && s < draws; s++, made++) {
        if ((st = method_draw(&w, seq, seed + (uint64_t)s, err, errlen)) != BT_OK)
            break;
        bool same = s == 1;
        for (size_t i = 0; i < P; i++) {
            same = same && first[i] == (double)gs[i];
            if (s == 0)
                first[i] = (double)gs[i];
        }
        if (same) { /* deterministic: the first draw is all there is */
            made++;
            break;
        }
        add_draw(out, s, gs, g, gnorm, mean, &sq, P);
        out->draws = s + 1;
    }
    out->seconds = made ? (double)(clock() - c0) / CLOCKS_PER_SEC / made : 0;
    if (st == BT_OK)
        summarize(out, mean, sq, g, gnorm, P);
    else
        bt_grad_stats_free(out);
    bt_free(mean);
    method_free(&w);
    return st;
}
