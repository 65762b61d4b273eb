/* test_analyze.c: the analysis of vanishing and exploding gradients, and what
 * it stands on (suite `analysis`):
 * - linear RNN with W_hh = c Q (Q orthogonal): ||dL_T/dh_{T-k}|| = c^k ||dL_T/dh_T||
 *   exactly, for c = 0.5 and 1.5, and ||dh_T/dh_{T-k}||_2 = c^k;
 * - power iteration: tan(angle(M^k x, v1)) = tan(angle_0) |l2/l1|^k exactly when
 *   every other eigenvalue has modulus |l2|, and below that bound otherwise;
 * - influence balancing (influence:23,10, len 200, sgd 5e-5 per step of loss,
 *   10,000 steps through bt_lm_train): fixed:1 drives theta away from the
 *   optimum -1/6, full and random:0.97 reach a loss below 1e-4;
 * - the four --init specs and bad specs; the task sources' shapes, markers,
 *   targets and loss weights; the influence cell's step and its gradient check. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "analyze.h"
#include "cellcheck.h"
#include "check.h"
#include "lm.h"
#include "tasks.h"

static bt_registry *reg;

static void load_plugins(void)
{
    char err[1024] = "";
    reg = bt_registry_new();
    cr_assert_not_null(reg);
    cr_assert_eq(bt_registry_load_default(reg, err, sizeof err), BT_OK, "%s", err);
}

static void unload_plugins(void) { bt_registry_free(reg); }

TestSuite(analysis, .init = load_plugins, .fini = unload_plugins);

static bt_model *make_model(const char *cell, int D, int H, int Q)
{
    const bt_cell_def *def = bt_registry_cell(reg, cell);
    cr_assert_not_null(def, "cell %s is not registered", cell);
    bt_model *m;
    char err[256] = "";
    cr_assert_eq(bt_model_new(def, (bt_cell_dims){D, H, Q}, &m, err, sizeof err), BT_OK, "%s", err);
    return m;
}

static void init_model(bt_model *m, const char *spec, uint64_t seed)
{
    bt_rng r;
    bt_rng_seed(&r, seed);
    char err[256] = "";
    cr_assert_eq(bt_model_init(m, spec, &r, err, sizeof err), BT_OK, "%s: %s", spec, err);
}

static bt_tensor *param(bt_model *m, const char *name)
{
    bt_tensor *t = bt_params_find(m->params, name);
    cr_assert_not_null(t, "no parameter %s", name);
    return t;
}

/* ---- gradient norm against lag: c^k -------------------------------------------- */

/* Double: exact up to rounding. Float: W = cQ is stored in float, so Q^T Q = I
 * only to ~1e-7 per step; 1e-4 over 30 steps is still far below what a wrong
 * transpose, a missing step or a lost factor would give. */
#define CK_TOL (BT_REAL_DOUBLE ? 1e-10 : 1e-4)

static void check_c_pow_k(double c)
{
    enum { B = 3, D = 3, H = 8, Q = 2, K = 30 };
    bt_model *m = make_model("linear", D, H, Q);
    init_model(m, "orthogonal", 21);
    bt_tensor *W = param(m, "W_hh");
    for (size_t i = 0; i < W->size; i++)
        W->data[i] = (bt_real)(W->data[i] * c);
    bt_rng r;
    bt_rng_seed(&r, 5);
    bt_sequence seq;
    cr_assert_eq(bt_probe_sequence_new(m, B, K + 1, &r, &seq), BT_OK);
    bt_analysis a;
    char err[512] = "";
    cr_assert_eq(bt_analysis_run(m, &seq, NULL, K, 0, 3, &a, err, sizeof err), BT_OK, "%s", err);
    cr_assert_gt(a.grad_norm[0], 1e-3, "the loss at T must send a nonzero gradient");
    double worst = 0, worst_j = 0;
    int at = 0;
    for (int k = 0; k <= K; k++) {
        double want = pow(c, k);
        double e = fabs(a.grad_norm[k] / a.grad_norm[0] - want) / want;
        double ej = fabs(a.jac_norm[k] - want) / want;
        if (e > worst)
            worst = e, at = k;
        if (ej > worst_j)
            worst_j = ej;
    }
    cr_log_info("c = %.2f: largest relative error of ||dL/dh_{T-k}|| against c^k: %.3g (at k = %d); "
                "of ||dh_T/dh_{T-k}||: %.3g\n", c, worst, at, worst_j);
    cr_expect_leq(worst, CK_TOL, "c = %g: ||dL_T/dh_{T-k}|| / ||dL_T/dh_T|| is off c^k by %.3g "
                  "(relative) at k = %d", c, worst, at);
    cr_expect_leq(worst_j, CK_TOL, "c = %g: ||dh_T/dh_{T-k}||_2 is off c^k by %.3g", c, worst_j);
    cr_expect_float_eq(a.grad_rate, c, CK_TOL, "fitted rate %.9g, want %g", a.grad_rate, c);
    cr_expect_leq(fabs(a.grad_scale / a.grad_norm[0] - 1), CK_TOL,
                  "fitted scale %.9g, want ||dL_T/dh_T|| = %.9g", a.grad_scale, a.grad_norm[0]);
    /* W = cQ: every eigenvalue has modulus c. */
    cr_expect_float_eq(a.radius, c, 1e-5, "spectral radius %.9g, want %g", a.radius, c);
    for (int i = 0; i < a.n; i++)
        cr_expect_float_eq(hypot(a.eig_re[i], a.eig_im[i]), c, 1e-5);
    bt_analysis_free(&a);
    bt_probe_sequence_free(&seq);
    bt_model_free(m);
}

Test(analysis, gradient_norm_follows_c_pow_k_contracting) { check_c_pow_k(0.5); }

/* The line the analyze figure draws: scale and rate of a least-squares fit
 * of log y against k, with an intercept (closed forms). */
Test(analysis, geometric_fit_has_an_intercept)
{
    /* y = 3 * 0.7^k where defined; NAN, 0 and -1 are left out of the fit. */
    double y[8];
    for (int k = 0; k < 8; k++)
        y[k] = 3 * pow(0.7, k);
    y[2] = NAN, y[4] = 0, y[6] = -1;
    double scale, rate;
    cr_assert_eq(bt_geometric_fit(y, 8, &scale, &rate), BT_OK);
    cr_expect_float_eq(scale, 3.0, 1e-12, "scale %.15g", scale);
    cr_expect_float_eq(rate, 0.7, 1e-12, "rate %.15g", rate);
    cr_expect_float_eq(bt_geometric_rate(y, 8), 0.7, 1e-12);
    /* log y = 0, 1, 0: the least-squares line is flat at 1/3, through none of them. */
    double bump[3] = {1, exp(1), 1};
    cr_assert_eq(bt_geometric_fit(bump, 3, &scale, &rate), BT_OK);
    cr_expect_float_eq(rate, 1.0, 1e-12, "rate %.15g", rate);
    cr_expect_float_eq(log(scale), 1.0 / 3, 1e-12, "log scale %.15g", log(scale));
    /* One usable point is not a line. */
    double one[3] = {2, NAN, 0};
    cr_expect_eq(bt_geometric_fit(one, 3, &scale, &rate), BT_ERR_NUMERIC);
    cr_expect(isnan(scale) && isnan(rate));
}
Test(analysis, gradient_norm_follows_c_pow_k_expanding) { check_c_pow_k(1.5); }

Test(analysis, every_cell_can_be_analyzed)
{
    const char *cells[] = {"rnn_tanh", "gru", "lstm", "linear", "influence"};
    for (size_t c = 0; c < sizeof cells / sizeof *cells; c++) {
        bool infl = strcmp(cells[c], "influence") == 0;
        bool real = infl || strcmp(cells[c], "linear") == 0;
        bt_model *m = make_model(cells[c], infl ? 3 : 5, 6, infl ? 1 : real ? 2 : 5);
        init_model(m, infl ? NULL : "normal:0.5", 4);
        bt_rng r;
        bt_rng_seed(&r, 8);
        bt_sequence seq;
        cr_assert_eq(bt_probe_sequence_new(m, 2, 9, &r, &seq), BT_OK);
        bt_analysis a;
        char err[512] = "";
        cr_assert_eq(bt_analysis_run(m, &seq, NULL, 8, 0, 1, &a, err, sizeof err), BT_OK, "%s: %s",
                     cells[c], err);
        for (int k = 0; k <= 8; k++)
            cr_expect(isfinite(a.grad_norm[k]) && isfinite(a.jac_norm[k]), "%s lag %d", cells[c], k);
        cr_expect_float_eq(a.jac_norm[0], 1.0, 1e-6, "%s: dh_T/dh_T is the identity", cells[c]);
        /* LSTM's W_h is [H,4H]: no square recurrent matrix, no eigenvalues. */
        cr_expect_eq(a.n > 0, !infl && strcmp(cells[c], "lstm") != 0,
                     "%s: square recurrent matrix found: %d", cells[c], a.n);
        bt_analysis_free(&a);
        bt_probe_sequence_free(&seq);
        bt_model_free(m);
    }
}

/* The unroller's ||dL/dh_t|| against a tape built here, keeping every state's
 * gradient: catches an op that reuses an output's gradient in place. */
Test(analysis, grad_norms_match_an_independent_tape)
{
    const char *cells[] = {"rnn_tanh", "gru", "lstm", "linear"};
    enum { B = 2, K = 7 };
    for (size_t c = 0; c < sizeof cells / sizeof *cells; c++) {
        bool real = strcmp(cells[c], "linear") == 0;
        bt_model *m = make_model(cells[c], 5, 6, real ? 2 : 5);
        init_model(m, "normal:0.5", 4);
        bt_rng r;
        bt_rng_seed(&r, 8);
        bt_sequence seq;
        cr_assert_eq(bt_probe_sequence_new(m, B, K + 1, &r, &seq), BT_OK);
        double norm[K + 1];
        char err[512] = "";
        cr_assert_eq(bt_grad_vs_lag(m, &seq, NULL, K, norm, err, sizeof err), BT_OK, "%s", err);

        bt_graph *g = bt_graph_new();
        bt_tensor *state[BT_MAX_STATES], *next[BT_MAX_STATES], *hs[K + 1], *loss = NULL;
        for (int k = 0; k < m->n_states; k++)
            state[k] = bt_graph_tensor2(g, B, m->state_width[k]);
        for (int s = 0; s <= K; s++) {
            loss = bt_unroll_step(g, m, &seq, s, state, next);
            cr_assert_not_null(loss, "%s", bt_graph_error(g));
            hs[s] = next[0];
            hs[s]->retain_grad = true;
            memcpy(state, next, sizeof(bt_tensor *) * (size_t)m->n_states);
        }
        cr_assert_eq(bt_backward(g, loss), BT_OK);
        for (int k = 0; k <= K; k++) {
            double n2 = 0;
            for (size_t i = 0; i < hs[K - k]->size; i++)
                n2 += (double)hs[K - k]->grad[i] * hs[K - k]->grad[i];
            cr_expect_float_eq(norm[k], sqrt(n2), 1e-5 * sqrt(n2) + 1e-12,
                               "%s lag %d: unroller %.9g, tape %.9g", cells[c], k, norm[k], sqrt(n2));
        }
        bt_graph_free(g);
        bt_probe_sequence_free(&seq);
        bt_model_free(m);
    }
}

/* ---- power iteration ------------------------------------------------------------- */

/* M = V diag(lambda) V^T with V a random orthogonal matrix. */
static void symmetric_with(const double *lambda, int n, uint64_t seed, double *M)
{
    double V[64];
    bt_rng r;
    bt_rng_seed(&r, seed);
    for (int i = 0; i < n * n; i++)
        V[i] = bt_rng_normal(&r);
    for (int j = 0; j < n; j++) { /* Gram-Schmidt on the columns */
        for (int p = 0; p < j; p++) {
            double d = 0;
            for (int i = 0; i < n; i++)
                d += V[i * n + j] * V[i * n + p];
            for (int i = 0; i < n; i++)
                V[i * n + j] -= d * V[i * n + p];
        }
        double s = 0;
        for (int i = 0; i < n; i++)
            s += V[i * n + j] * V[i * n + j];
        for (int i = 0; i < n; i++)
            V[i * n + j] /= sqrt(s);
    }
    for (int a = 0; a < n; a++)
        for (int b = 0; b < n; b++) {
            double s = 0;
            for (int j = 0; j < n; j++)
                s += V[a * n + j] * lambda[j] * V[b * n + j];
            M[a * n + b] = s;
        }
}

Test(analysis, power_iteration_angle_follows_eigenvalue_ratio)
{
    enum { n = 6, K = 20 };
    double M[n * n], tn[K + 1], pred[K + 1], l1, l2;
    /* Every other eigenvalue of modulus 1: tan(angle_k) = tan(angle_0) (1/2)^k exactly. */
    const double flat[n] = {1, -1, 2, 1, -1, 1};
    symmetric_with(flat, n, 7, M);
    cr_assert_eq(bt_power_angles(M, n, K, NULL, 11, tn, pred, &l1, &l2), BT_OK);
    cr_expect_float_eq(l1, 2.0, 1e-12);
    cr_expect_float_eq(fabs(l2), 1.0, 1e-12);
    double worst = 0;
    for (int k = 0; k <= K; k++) {
        double e = fabs(tn[k] - tn[0] * pow(0.5, k)) / (tn[0] * pow(0.5, k));
        worst = e > worst ? e : worst;
        cr_expect_float_eq(pred[k], tn[0] * pow(0.5, k), 1e-12 * pred[0]);
    }
    cr_log_info("power iteration, |l2/l1| = 1/2: largest relative error %.3g over %d steps\n",
                worst, K);
    cr_expect_leq(worst, 1e-8, "tan(angle_k) is off tan(angle_0) 2^-k by %.3g", worst);

    /* A spread of eigenvalues: below the bound, and the ratio tends to l2/l1 = 2/3. */
    enum { K2 = 30 };
    double tn2[K2 + 1], pred2[K2 + 1];
    const double spread[n] = {3, 2, 1, 0.5, -0.25, 0.1};
    symmetric_with(spread, n, 9, M);
    cr_assert_eq(bt_power_angles(M, n, K2, NULL, 12, tn2, pred2, &l1, &l2), BT_OK);
    cr_expect_float_eq(l1, 3.0, 1e-12);
    cr_expect_float_eq(l2, 2.0, 1e-12);
    for (int k = 0; k <= K2; k++)
        cr_expect_leq(tn2[k], pred2[k] * (1 + 1e-9), "k = %d: tan %.6g above the bound %.6g", k,
                      tn2[k], pred2[k]);
    cr_expect_float_eq(tn2[K2] / tn2[K2 - 1], 2.0 / 3.0, 1e-6, "ratio %.9g", tn2[K2] / tn2[K2 - 1]);
}

/* ---- influence balancing ----------------------------------------------------------- */

/* theta after every sequence and the loss of the last one (progress hook). */
typedef struct theta_log { bt_lm *lm; double last, loss; int n; } theta_log;

static void log_theta(void *ctx, const bt_lm_progress *p)
{
    theta_log *l = ctx;
    l->last = (double)bt_lm_model(l->lm)->ptab[0]->data[0];
    l->loss = p->batch_loss;
    l->n++;
}

/* One stream of 10,000 steps (one epoch: 50 sequences of 200, state carried),
 * sgd 5e-5 per step of loss: lr 1e-2 on the unroller's 1/200 weight per step. */
static double influence_run(const char *policy, theta_log *log)
{
    char err[512] = "";
    bt_source src;
    cr_assert_eq(bt_task_source_new("influence:23,10,len=200,batches=50", 1, 1, &src, err,
                                    sizeof err),
                 BT_OK, "%s", err);
    bt_lm_config cfg;
    bt_lm_config_default(&cfg);
    cfg.cell = "influence";
    cfg.optimizer = "sgd:lr=1e-2";
    cfg.truncation = policy;
    cfg.hidden = 23, cfg.batch = 1, cfg.steps = 200, cfg.clip = 0, cfg.seed = 1;
    memset(log, 0, sizeof *log);
    cr_assert_eq(bt_lm_new(reg, &cfg, &src, &log->lm, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_lm_train(log->lm, 1, &(bt_lm_hooks){.progress = log_theta, .ctx = log}, err,
                             sizeof err),
                 BT_OK, "%s: %s", policy, err);
    cr_log_info("influence:23,10 under %s: theta %.4f after %llu updates (optimum -1/6), loss %.3g\n",
                policy, log->last, (unsigned long long)bt_lm_updates(log->lm), log->loss);
    bt_lm_free(log->lm);
    bt_source_free(&src);
    cr_assert_eq(log->n, 50, "one progress call per sequence");
    return log->loss;
}

Test(analysis, influence_balancing_truncation_bias, .timeout = 120)
{
    theta_log l;
    double loss = influence_run("fixed:1", &l);
    /* The one-step effect of theta on s[0] is +theta, the long-run one -6 theta:
     * fixed:1 sees only the first and walks the wrong way, away from -1/6. */
    cr_expect_gt(l.last, 1.0, "fixed:1 should push theta up, away from -1/6; it ended at %.4f",
                 l.last);
    cr_expect_gt(loss, 1.0, "fixed:1 loss %.3g", loss);
    loss = influence_run("full", &l);
    cr_expect_lt(loss, 1e-4, "full: loss %.3g, theta %.4f", loss, l.last);
    cr_expect_float_eq(l.last, -1.0 / 6, 1e-2, "full: theta %.4f", l.last);
    loss = influence_run("random:0.97", &l);
    cr_expect_lt(loss, 1e-4, "random: loss %.3g, theta %.4f", loss, l.last);
    cr_expect_float_eq(l.last, -1.0 / 6, 1e-2, "random: theta %.4f", l.last);
}

Test(analysis, influence_cell_step_and_gradcheck)
{
    enum { B = 2, N = 5, P = 2, T = 6 };
    bt_model *m = make_model("influence", P, N, 1);
    m->ptab[0]->data[0] = (bt_real)0.3;
    bt_graph *g = bt_graph_new();
    bt_real s0[B * N], x[B * T * P] = {0}, y[B * T];
    bt_rng r;
    bt_rng_seed(&r, 2);
    for (int i = 0; i < B * N; i++)
        s0[i] = (bt_real)bt_rng_normal(&r);
    for (int i = 0; i < B * T; i++)
        y[i] = (bt_real)bt_rng_normal(&r);
    bt_sequence seq = {.B = B, .T = T, .x = x, .y = y};
    bt_tensor *st = bt_graph_input(g, 2, (int[]){B, N}, s0), *next;
    cr_assert_not_null(bt_unroll_step(g, m, &seq, 0, &st, &next), "%s", bt_graph_error(g));
    for (int b = 0; b < B; b++)
        for (int i = 0; i < N; i++) {
            double want = 0.5 * s0[b * N + i] + (i + 1 < N ? 0.5 * s0[b * N + i + 1] : 0) +
                          (i < P ? 0.3 : -0.3);
            cr_expect_float_eq(next->data[b * N + i], want, 1e-6, "s'[%d][%d]", b, i);
        }
    bt_graph_free(g);

    const bt_policy_def *pd = bt_registry_policy(reg, "full");
    void *ps = NULL;
    char err[512] = "";
    cr_assert_eq(pd->create(bt_host_table(), "", &ps, err, sizeof err), 0);
    bt_real *h0[1] = {s0};
    bt_cellcheck_result res[BT_MAX_PARAMS + BT_MAX_STATES];
    int n = 0;
    cr_assert_eq(bt_cell_gradcheck(m, &seq, h0, pd, ps, 5, NULL, GC_EPS, GC_FLOOR, res, &n, NULL,
                                   err, sizeof err),
                 BT_OK, "%s", err);
    for (int i = 0; i < n; i++)
        cr_expect_leq(res[i].max_rel, GC_TOL, "%s: max rel error %.3g (analytic %.9g, numeric %.9g)",
                      res[i].name, res[i].max_rel, res[i].analytic, res[i].numeric);
    pd->destroy(ps);
    bt_model_free(m);
    /* Sizes the cell cannot take are refused with a message. */
    const bt_cell_def *def = bt_registry_cell(reg, "influence");
    cr_expect_neq(bt_model_new(def, (bt_cell_dims){7, 5, 1}, &m, err, sizeof err), BT_OK);
    cr_expect(strstr(err, "influence") != NULL, "message: %s", err);
}

/* ---- --init specs -------------------------------------------------------------------- */

Test(analysis, init_specs)
{
    enum { H = 32 };
    bt_model *m = make_model("rnn_tanh", 5, H, 5);
    double tol = BT_REAL_DOUBLE ? 1e-12 : 1e-5;

    init_model(m, "orthogonal", 1);
    const bt_real *W = param(m, "W_hh")->data;
    double worst = 0;
    for (int i = 0; i < H; i++)
        for (int j = 0; j < H; j++) {
            double s = 0;
            for (int k = 0; k < H; k++)
                s += (double)W[i * H + k] * W[j * H + k];
            worst = fmax(worst, fabs(s - (i == j)));
        }
    cr_expect_leq(worst, tol, "orthogonal: |W W^T - I| up to %.3g", worst);

    init_model(m, "identity:0.7", 1);
    for (int i = 0; i < H * H; i++)
        cr_expect_eq(W[i], (bt_real)(i % (H + 1) == 0 ? 0.7 : 0.0), "identity:0.7 at %d", i);
    init_model(m, "identity", 1);
    for (int i = 0; i < H * H; i++)
        cr_expect_eq(W[i], (bt_real)(i % (H + 1) == 0 ? 1.0 : 0.0), "identity at %d", i);

    const double rhos[] = {0.5, 0.9, 1.2};
    for (int i = 0; i < 3; i++) {
        char spec[32];
        snprintf(spec, sizeof spec, "spectral:%g", rhos[i]);
        init_model(m, spec, 3);
        double radius;
        cr_assert_eq(bt_eigenvalues(W, H, NULL, NULL, &radius), BT_OK);
        cr_expect_leq(fabs(radius - rhos[i]) / rhos[i], 1e-6, "%s: radius %.9g", spec, radius);
    }

    init_model(m, "normal:0.1", 4);
    double s = 0, s2 = 0;
    for (int i = 0; i < H * H; i++) {
        s += W[i];
        s2 += (double)W[i] * W[i];
    }
    double mean = s / (H * H), sd = sqrt(s2 / (H * H) - mean * mean);
    cr_expect_float_eq(sd, 0.1, 0.005, "normal:0.1: sample std %.5f over %d values", sd, H * H);
    cr_expect_leq(fabs(mean), 0.01, "normal:0.1: sample mean %.5f", mean);

    const char *bad[] = {"spectral", "bogus", "normal:-1", "identity:abc", "spectral:0.9,x=1",
                         "orthogonal:1,2"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char err[256] = "";
        bt_rng r;
        bt_rng_seed(&r, 1);
        cr_expect_neq(bt_model_init(m, bad[i], &r, err, sizeof err), BT_OK, "'%s' accepted", bad[i]);
        cr_expect(strlen(err) > 10, "'%s': message '%s'", bad[i], err);
        cr_expect_neq(bt_init_spec_check(bad[i], err, sizeof err), BT_OK, "'%s' accepted", bad[i]);
    }
    bt_model_free(m);
}

/* Each --init kind on each shipped cell sets what its documentation says
 * (models/model.h): the count of parameters it sets, and a refusal exactly
 * where a cell has recurrent matrices but none square for spectral. */
Test(analysis, init_kinds_on_every_cell)
{
    static const struct {
        const char *cell;
        int normal, recurrent, square; /* parameters normal, orthogonal/identity, spectral set */
    } cells[] = {
        {"rnn_tanh", 3, 1, 1}, {"linear", 3, 1, 1}, {"gru", 4, 2, 1},
        {"gru_torch", 3, 1, 0}, {"lstm", 3, 1, 0}, {"influence", 0, 0, 0},
    };
    for (size_t c = 0; c < sizeof cells / sizeof *cells; c++) {
        bool infl = strcmp(cells[c].cell, "influence") == 0;
        bool real = infl || strcmp(cells[c].cell, "linear") == 0;
        bt_model *m = make_model(cells[c].cell, infl ? 3 : 5, 6, infl ? 1 : real ? 2 : 5);
        cr_expect_eq(bt_init_count(m, NULL), 0);
        cr_expect_eq(bt_init_count(m, "bogus"), -1);
        cr_expect_eq(bt_init_count(m, "normal:0.1"), cells[c].normal, "%s", cells[c].cell);
        cr_expect_eq(bt_init_count(m, "orthogonal"), cells[c].recurrent, "%s", cells[c].cell);
        cr_expect_eq(bt_init_count(m, "identity"), cells[c].recurrent, "%s", cells[c].cell);
        cr_expect_eq(bt_init_count(m, "spectral:1.2"), cells[c].square, "%s", cells[c].cell);
        bt_rng r;
        bt_rng_seed(&r, 5);
        char err[256] = "";
        bt_status st = bt_model_init(m, "spectral:1.2", &r, err, sizeof err);
        if (cells[c].recurrent && !cells[c].square) {
            cr_expect_eq(st, BT_ERR_ARG, "%s: spectral on no square matrix accepted", cells[c].cell);
            cr_expect(strstr(err, cells[c].cell) && strstr(err, "square"), "message: %s", err);
        } else {
            cr_expect_eq(st, BT_OK, "%s: %s", cells[c].cell, err);
        }
        for (size_t i = 0; infl && i < m->ptab[0]->size; i++)
            cr_expect_eq(m->ptab[0]->data[i], 0, "influence keeps theta = 0");
        bt_model_free(m);
    }
}

/* ---- task sources ------------------------------------------------------------------- */

static bt_source task(const char *spec, int B)
{
    bt_source s;
    char err[256] = "";
    cr_assert_eq(bt_task_source_new(spec, B, 42, &s, err, sizeof err), BT_OK, "%s: %s", spec, err);
    return s;
}

Test(analysis, adding_task)
{
    enum { B = 5, T = 50 };
    bt_source s = task("adding:50", B);
    cr_expect(!s.tokens_in && !s.tokens_out && !s.carry_state);
    cr_expect_eq(s.input_size, 2);
    cr_expect_eq(s.output_size, 1);
    cr_expect_eq(s.T, T);
    cr_expect_eq(s.B, B);
    bt_rng r;
    bt_rng_seed(&r, 1);
    s.epoch(s.ctx, &r);
    cr_expect_eq(s.count(s.ctx), 100);
    bt_sequence q;
    for (int rep = 0; rep < 3; rep++) {
        cr_assert(s.next(s.ctx, &q));
        cr_assert(q.x && q.y && q.loss_weight && !q.ids && !q.targets);
        cr_expect_eq(q.B, B);
        cr_expect_eq(q.T, T);
        for (int t = 0; t < T; t++)
            cr_expect_eq(q.loss_weight[t], (bt_real)(t == T - 1), "loss weight at %d", t);
        for (int b = 0; b < B; b++) {
            int marks[2], n = 0;
            double sum = 0;
            for (int t = 0; t < T; t++) {
                bt_real v = q.x[(b * T + t) * 2], mk = q.x[(b * T + t) * 2 + 1];
                cr_expect(v >= 0 && v < 1, "value %g", (double)v);
                cr_expect(mk == 0 || mk == 1);
                if (mk == 1) {
                    if (n < 2)
                        marks[n] = t;
                    n++;
                    sum += v;
                }
                if (t < T - 1)
                    cr_expect_eq(q.y[b * T + t], 0);
            }
            cr_assert_eq(n, 2, "row %d has %d markers", b, n);
            cr_expect(marks[0] < T / 2 && marks[1] >= T / 2, "markers at %d, %d", marks[0], marks[1]);
            cr_expect_float_eq(q.y[b * T + T - 1], sum, 1e-6);
        }
    }
    /* Validation batches are the same on every call. */
    bt_sequence v1, v2;
    cr_assert(s.validation(s.ctx, 0, &v1));
    bt_real first = v1.x[0], y1 = v1.y[T - 1];
    cr_assert(s.validation(s.ctx, 0, &v2));
    cr_expect_eq(v2.x[0], first);
    cr_expect_eq(v2.y[T - 1], y1);
    bt_source_free(&s);
}

Test(analysis, copy_task)
{
    enum { B = 3, T0 = 10, K = 5, A = 8, L = 2 * K + T0 + 1 };
    bt_source s = task("copy:10,5", B);
    cr_expect(s.tokens_in && s.tokens_out);
    cr_expect_eq(s.input_size, A + 2);
    cr_expect_eq(s.output_size, A + 2);
    cr_expect_eq(s.T, L);
    bt_rng r;
    bt_rng_seed(&r, 1);
    s.epoch(s.ctx, &r);
    bt_sequence q;
    cr_assert(s.next(s.ctx, &q));
    cr_assert(q.ids && q.targets && q.loss_weight && !q.x && !q.y);
    int out0 = K + T0 + 1;
    for (int t = 0; t < L; t++)
        cr_expect_eq(q.loss_weight[t], (bt_real)(t >= out0), "loss weight at %d", t);
    for (int b = 0; b < B; b++) {
        const int32_t *in = q.ids + b * L, *tg = q.targets + b * L;
        for (int t = 0; t < K; t++)
            cr_expect(in[t] >= 0 && in[t] < A, "symbol %d", in[t]);
        for (int t = K; t < out0 - 1; t++)
            cr_expect_eq(in[t], bt_copy_blank(A));
        cr_expect_eq(in[out0 - 1], bt_copy_delimiter(A));
        for (int j = 0; j < K; j++) {
            cr_expect_eq(in[out0 + j], bt_copy_blank(A));
            cr_expect_eq(tg[out0 + j], in[j], "row %d output %d", b, j);
        }
        for (int t = 0; t < out0; t++)
            cr_expect_eq(tg[t], bt_copy_blank(A));
    }
    bt_source_free(&s);
}

Test(analysis, influence_task_and_bad_specs)
{
    bt_source s = task("influence:23,10", 2);
    cr_expect(!s.tokens_in && !s.tokens_out && s.carry_state);
    cr_expect_eq(s.input_size, 10);
    cr_expect_eq(s.output_size, 1);
    cr_expect_eq(s.T, 200);
    bt_rng r;
    bt_rng_seed(&r, 1);
    s.epoch(s.ctx, &r);
    bt_sequence q;
    cr_assert(s.next(s.ctx, &q));
    for (int i = 0; i < 2 * 200; i++)
        cr_expect_eq(q.y[i], 1);
    for (int i = 0; i < 2 * 200 * 10; i++)
        cr_expect_eq(q.x[i], 0);
    cr_expect_null(q.loss_weight);
    cr_expect(!s.validation(s.ctx, 0, &q), "influence has no validation data");
    bt_source_free(&s);

    const char *bad[] = {"adding", "adding:1", "copy:5", "influence:5,7", "nope:3", "adding:x",
                         "copy:5,2,colour=3"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char err[256] = "";
        cr_expect_neq(bt_task_source_new(bad[i], 2, 1, &s, err, sizeof err), BT_OK, "'%s' accepted",
                      bad[i]);
        cr_expect(strlen(err) > 10, "'%s': message '%s'", bad[i], err);
    }
    cr_expect(bt_task_spec_is_task("adding:5") && !bt_task_spec_is_task("corpus.txt"));

    /* A valid spec whose minibatch would not fit in memory (3.2 TB here) is
     * refused by its size before any allocation (an input fuzz_spec reaches). */
    char err[256] = "";
    cr_expect_eq(bt_task_source_new("influence:100000,100000,len=1000000", 8, 1, &s, err,
                                    sizeof err), BT_ERR_ARG, "%s", err);
    cr_expect(strstr(err, "too large") && strstr(err, "influence:100000"), "%s", err);
}

/* When the buffers of a task cannot be allocated, the message names the
 * sizes asked for. (It read them from the task after freeing it; glibc
 * reuses those bytes, so the message showed garbage steps.) The address
 * space is capped 200 MB above what the process maps now, so the 800 MB of
 * adding:1000000 x 100 rows cannot be had; ASan's allocator does not live
 * under such a cap, so a sanitizer build skips this. */
Test(analysis, task_out_of_memory_names_the_sizes)
{
#if defined(__SANITIZE_ADDRESS__)
    cr_skip_test("an address-space cap and AddressSanitizer do not mix");
#endif
    long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    cr_assert_not_null(f);
    cr_assert_eq(fscanf(f, "%ld", &pages), 1);
    fclose(f);
    struct rlimit rl = {.rlim_cur = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + (200 << 20),
                        .rlim_max = RLIM_INFINITY};
    cr_assert_eq(setrlimit(RLIMIT_AS, &rl), 0);
    bt_source s;
    char err[256] = "";
    cr_assert_eq(bt_task_source_new("adding:1000000", 100, 1, &s, err, sizeof err), BT_ERR_NOMEM,
                 "%s", err);
    cr_expect(strstr(err, "100 x 1000000 steps"), "%s", err);
}
