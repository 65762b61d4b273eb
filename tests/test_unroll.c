/* test_unroll.c: the unrolled graph under each truncation policy.
 * - every shipped cell passes a finite-difference check under full, fixed:2,
 *   random (given xi) and tbptt;
 * - the linear RNN's gradients equal the closed forms of the BPTT analysis;
 * - fixed, random and tbptt equal hand-built reference graphs;
 * - random truncation is unbiased (mean over 2,000 seeds), fixed is not;
 * - a 10,000-step stream under fixed:35 keeps its memory flat. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cellcheck.h"
#include "check_model.h"

static bt_registry *reg;

static void load_plugins(void)
{
    char err[1024] = "";
    reg = bt_registry_new();
    cr_assert_not_null(reg);
    cr_assert_eq(bt_registry_load_default(reg, err, sizeof err), BT_OK, "%s", err);
}

static void unload_plugins(void) { bt_registry_free(reg); }

TestSuite(unroll, .init = load_plugins, .fini = unload_plugins);

typedef struct fixture {
    bt_model *m;
    bt_sequence seq;
    int32_t ids[64], targets[64];
    bt_real x[256], y[256];
    bt_real h0[2][64];
    bt_real *h0p[2];
} fixture;

static void make_fixture(fixture *f, const char *cell, int B, int T, int V, int H, uint64_t seed)
{
    const bt_cell_def *def = bt_registry_cell(reg, cell);
    cr_assert_not_null(def, "cell %s is not registered", cell);
    char err[256];
    bt_cell_dims dims = {V, H, def->input == BT_INPUT_TOKENS ? V : 2};
    cr_assert_eq(bt_model_new(def, dims, &f->m, err, sizeof err), BT_OK, "%s", err);
    bt_rng r;
    bt_rng_seed(&r, seed);
    /* Larger weights than the training default, so gradients through time matter. */
    for (size_t i = 0; i < bt_params_total(f->m->params); i++)
        bt_params_data(f->m->params)[i] = (bt_real)(0.5 * bt_rng_normal(&r));
    if (def->input == BT_INPUT_TOKENS)
        f->seq = (bt_sequence){.B = B, .T = T, .ids = f->ids, .targets = f->targets};
    else
        f->seq = (bt_sequence){.B = B, .T = T, .x = f->x, .y = f->y};
    for (int i = 0; i < B * T; i++) {
        f->ids[i] = (int32_t)(bt_rng_next(&r) % (uint64_t)V);
        f->targets[i] = (int32_t)(bt_rng_next(&r) % (uint64_t)V);
    }
    for (int i = 0; i < B * T * V; i++)
        f->x[i] = (bt_real)bt_rng_normal(&r);
    for (int i = 0; i < B * T * 2; i++)
        f->y[i] = (bt_real)bt_rng_normal(&r);
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < B * H; i++)
            f->h0[k][i] = (bt_real)(0.5 * bt_rng_normal(&r));
        f->h0p[k] = f->h0[k];
    }
}

static void *make_policy(const char *spec, const bt_policy_def **def)
{
    char name[32], err[256];
    const char *opts;
    bt_split_spec(spec, name, sizeof name, &opts);
    *def = bt_registry_policy(reg, name);
    cr_assert_not_null(*def, "policy %s is not registered", name);
    void *state = NULL;
    cr_assert_eq((*def)->create(bt_host_table(), opts, &state, err, sizeof err), 0, "%s", err);
    return state;
}

static void check_cell(const char *cell, const char *policy, const double *xi)
{
    fixture f;
    make_fixture(&f, cell, 2, 6, 5, 4, 11);
    const bt_policy_def *pd;
    void *ps = make_policy(policy, &pd);
    bt_cellcheck_result res[BT_MAX_PARAMS + BT_MAX_STATES];
    int n = 0;
    char err[512] = "";
    bt_status st = bt_cell_gradcheck(f.m, &f.seq, f.h0p, pd, ps, 5, xi, GC_EPS, GC_FLOOR, res, &n,
                                     NULL, err, sizeof err);
    cr_assert_eq(st, BT_OK, "%s", err);
    cr_assert_eq(n, f.m->n_params + f.m->n_states);
    for (int i = 0; i < n; i++)
        cr_expect_leq(res[i].max_rel, GC_TOL,
                      "%s under %s: %s: max rel error %.3g at %zu (analytic %.9g, numeric %.9g)",
                      cell, policy, res[i].name, res[i].max_rel, res[i].worst, res[i].analytic,
                      res[i].numeric);
    pd->destroy(ps);
    bt_model_free(f.m);
}

static const double given_xi[6] = {1, 2.0, 0, 1.25, 0.5, 0};
static const char *const cells[] = {"rnn_tanh", "linear", "gru", "gru_torch", "lstm"};

Test(unroll, every_cell_passes_gradcheck_under_every_policy)
{
    for (size_t c = 0; c < sizeof cells / sizeof *cells; c++) {
        check_cell(cells[c], "full", NULL);
        check_cell(cells[c], "fixed:2", NULL);
        check_cell(cells[c], "random:0.5", given_xi);
        check_cell(cells[c], "random:0.6,seed=3", NULL);
        check_cell(cells[c], "tbptt:2,4", NULL);
        check_cell(cells[c], "tbptt:3,3", NULL);
    }
}

/* ---- closed forms for the linear RNN ---------------------------------------- */

Test(unroll, linear_rnn_matches_closed_forms)
{
    enum { B = 2, T = 5, D = 3, H = 4, Q = 2 };
    char err[256];
    bt_rng r;
    bt_model *m = test_model(reg, "linear", (bt_cell_dims){D, H, Q}, 9, 0.6, &r);
    const bt_real *Whx = m->ptab[0]->data, *Whh = m->ptab[1]->data, *Wqh = m->ptab[2]->data;
    bt_real x[B * T * D], y[B * T * Q], h0[B * H];
    for (int i = 0; i < B * T * D; i++) x[i] = (bt_real)bt_rng_normal(&r);
    for (int i = 0; i < B * T * Q; i++) y[i] = (bt_real)bt_rng_normal(&r);
    for (int i = 0; i < B * H; i++) h0[i] = (bt_real)bt_rng_normal(&r);

    /* Forward by hand, in the column-vector notation, one column per row b. */
    double h[T + 1][B][H], dlo[T][B][Q], dlh[T][B][H];
    for (int b = 0; b < B; b++)
        for (int i = 0; i < H; i++)
            h[0][b][i] = h0[b * H + i];
    for (int t = 0; t < T; t++)
        for (int b = 0; b < B; b++) {
            for (int i = 0; i < H; i++) {
                double s = 0;
                for (int j = 0; j < D; j++) s += Whx[i * D + j] * x[(b * T + t) * D + j];
                for (int j = 0; j < H; j++) s += Whh[i * H + j] * h[t][b][j];
                h[t + 1][b][i] = s;
            }
            for (int q = 0; q < Q; q++) {
                double s = 0;
                for (int j = 0; j < H; j++) s += Wqh[q * H + j] * h[t + 1][b][j];
                /* L = 1/(T B) sum_t sum_b 0.5 ||o - y||^2 */
                dlo[t][b][q] = (s - y[(b * T + t) * Q + q]) / (T * B);
            }
        }
    /* dL/dh_T = W_qh^T dL/do_T;  dL/dh_t = W_hh^T dL/dh_{t+1} + W_qh^T dL/do_t */
    for (int t = T - 1; t >= 0; t--)
        for (int b = 0; b < B; b++)
            for (int i = 0; i < H; i++) {
                double s = 0;
                for (int q = 0; q < Q; q++) s += Wqh[q * H + i] * dlo[t][b][q];
                if (t + 1 < T)
                    for (int j = 0; j < H; j++) s += Whh[j * H + i] * dlh[t + 1][b][j];
                dlh[t][b][i] = s;
            }
    double dWqh[Q][H] = {{0}}, dWhx[H][D] = {{0}}, dWhh[H][H] = {{0}};
    for (int t = 0; t < T; t++)
        for (int b = 0; b < B; b++) {
            for (int q = 0; q < Q; q++)      /* sum_t dL/do_t h_t^T */
                for (int j = 0; j < H; j++) dWqh[q][j] += dlo[t][b][q] * h[t + 1][b][j];
            for (int i = 0; i < H; i++) {
                for (int j = 0; j < D; j++)  /* sum_t dL/dh_t x_t^T */
                    dWhx[i][j] += dlh[t][b][i] * x[(b * T + t) * D + j];
                for (int j = 0; j < H; j++)  /* sum_t dL/dh_t h_{t-1}^T */
                    dWhh[i][j] += dlh[t][b][i] * h[t][b][j];
            }
        }

    bt_unroller *u;
    cr_assert_eq(bt_unroller_new(m, B, T, &u, err, sizeof err), BT_OK);
    const bt_policy_def *pd;
    void *ps = make_policy("full", &pd);
    bt_real carry[B * H], dh0[B * H] = {0};
    memcpy(carry, h0, sizeof carry);
    bt_real *cp[1] = {carry}, *dp[1] = {dh0};
    double norms[T];
    bt_sequence seq = {.B = B, .T = T, .x = x, .y = y};
    bt_unroll_opts opts = {.policy = pd, .policy_state = ps, .accumulate = true, .want_dh0 = true,
                           .want_dh_norms = true};
    bt_unroll_result ur;
    bt_params_zero_grad(m->params);
    cr_assert_eq(bt_unroll_run(u, &seq, cp, &opts, NULL, dp, norms, &ur, err, sizeof err), BT_OK, "%s", err);
    double tol = BT_REAL_DOUBLE ? 1e-12 : 1e-5;
    const bt_real *gWhx = m->ptab[0]->grad, *gWhh = m->ptab[1]->grad, *gWqh = m->ptab[2]->grad;
    for (int q = 0; q < Q; q++)
        for (int j = 0; j < H; j++)
            cr_expect_float_eq(gWqh[q * H + j], dWqh[q][j], tol, "dW_qh[%d][%d]", q, j);
    for (int i = 0; i < H; i++) {
        for (int j = 0; j < D; j++)
            cr_expect_float_eq(gWhx[i * D + j], dWhx[i][j], tol, "dW_hx[%d][%d]", i, j);
        for (int j = 0; j < H; j++)
            cr_expect_float_eq(gWhh[i * H + j], dWhh[i][j], tol, "dW_hh[%d][%d]", i, j);
    }
    /* ||dL/dh_t|| per step, and dL/dh_0 = W_hh^T dL/dh_1 */
    for (int t = 0; t < T; t++) {
        double n2 = 0;
        for (int b = 0; b < B; b++)
            for (int i = 0; i < H; i++) n2 += dlh[t][b][i] * dlh[t][b][i];
        cr_expect_float_eq(norms[t], sqrt(n2), tol, "||dL/dh_%d||", t + 1);
    }
    for (int b = 0; b < B; b++)
        for (int i = 0; i < H; i++) {
            double s = 0;
            for (int j = 0; j < H; j++) s += Whh[j * H + i] * dlh[0][b][j];
            cr_expect_float_eq(dh0[b * H + i], s, tol, "dL/dh0[%d][%d]", b, i);
        }
    pd->destroy(ps);
    bt_unroller_free(u);
    bt_model_free(m);
}

/* ---- hand-built reference graphs ----------------------------------------------- */

/* One rnn_tanh step written out with ops, independent of the plugin. */
static bt_tensor *ref_step(bt_graph *g, bt_model *m, const fixture *f, int s, bt_tensor **h)
{
    bt_tensor *const *p = m->ptab;
    int B = f->seq.B, T = f->seq.T;
    int32_t ids[8], tg[8];
    for (int b = 0; b < B; b++) {
        ids[b] = f->ids[b * T + s];
        tg[b] = f->targets[b * T + s];
    }
    *h = bt_tanh(g, bt_add(g, bt_add(g, bt_embedding(g, p[0], ids, B), bt_matmul(g, *h, p[1])), p[2]));
    return bt_softmax_xent(g, bt_add(g, bt_matmul(g, *h, p[3]), p[4]), tg);
}

/* Reference: one graph per window [start, end] with losses from loss_from,
 * edges inside scaled by xi, all losses weighted 1/T. */
static void reference(fixture *f, const long (*win)[3], int n_win, const double *xi, bt_real *out)
{
    bt_model *m = f->m;
    int T = f->seq.T, B = f->seq.B, H = m->dims.hidden;
    bt_graph *g = bt_graph_new();
    /* states at each step start, from a plain forward */
    bt_real states[16][64];
    memcpy(states[0], f->h0[0], sizeof(bt_real) * B * H);
    bt_graph_set_grad(g, false);
    for (int s = 0; s < T; s++) {
        bt_graph_reset(g);
        bt_tensor *h = bt_graph_input(g, 2, (int[]){B, H}, states[s]);
        ref_step(g, m, f, s, &h);
        memcpy(states[s + 1], h->data, sizeof(bt_real) * B * H);
    }
    bt_graph_set_grad(g, true);
    bt_params_zero_grad(m->params);
    for (int w = 0; w < n_win; w++) {
        bt_graph_reset(g);
        bt_tensor *h = bt_detach(g, bt_graph_input(g, 2, (int[]){B, H}, states[win[w][0]]));
        bt_tensor *loss = NULL;
        for (long s = win[w][0]; s <= win[w][1]; s++) {
            if (s > win[w][0] && xi)
                h = xi[s] == 0 ? bt_detach(g, h) : xi[s] == 1 ? h : bt_grad_scale(g, h, xi[s]);
            bt_tensor *l = ref_step(g, m, f, (int)s, &h);
            if (s >= win[w][2])
                loss = loss ? bt_add(g, loss, l) : l;
        }
        cr_assert_eq(bt_backward(g, bt_scale(g, loss, 1.0 / T)), BT_OK, "%s", bt_graph_error(g));
    }
    memcpy(out, bt_params_grad(m->params), sizeof(bt_real) * bt_params_total(m->params));
    bt_graph_free(g);
}

static void unrolled(fixture *f, const char *policy, const double *xi, bt_real *out, double *xi_used)
{
    const bt_policy_def *pd;
    void *ps = make_policy(policy, &pd);
    bt_unroller *u;
    char err[256];
    cr_assert_eq(bt_unroller_new(f->m, f->seq.B, f->seq.T, &u, err, sizeof err), BT_OK);
    bt_real carry[64];
    memcpy(carry, f->h0[0], sizeof carry);
    bt_real *cp[1] = {carry};
    bt_unroll_opts opts = {.policy = pd, .policy_state = ps, .xi = xi, .accumulate = true};
    bt_unroll_result ur;
    bt_params_zero_grad(f->m->params);
    cr_assert_eq(bt_unroll_run(u, &f->seq, cp, &opts, xi_used, NULL, NULL, &ur, err, sizeof err), BT_OK, "%s", err);
    memcpy(out, bt_params_grad(f->m->params), sizeof(bt_real) * bt_params_total(f->m->params));
    pd->destroy(ps);
    bt_unroller_free(u);
}

static void expect_same(const bt_real *a, const bt_real *b, size_t n, const char *what)
{
    double worst = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        worst = d <= worst ? worst : d == d ? d : INFINITY; /* fmax would drop a NaN */
        scale = fmax(scale, fabs((double)b[i]));
    }
    cr_assert_gt(scale, 0, "%s: reference gradient is zero", what);
    cr_expect_leq(worst / scale, BT_REAL_DOUBLE ? 1e-13 : 1e-5, "%s: differs by %.3g (scale %.3g)",
                  what, worst, scale);
}

Test(unroll, policies_equal_hand_built_graphs)
{
    fixture f;
    make_fixture(&f, "rnn_tanh", 2, 8, 5, 4, 21);
    size_t P = bt_params_total(f.m->params);
    bt_real got[1024], want[1024];
    cr_assert_leq(P, 1024);

    /* fixed:3 over 8 steps: windows [0,2] [3,5] [6,7] */
    const long fixed3[][3] = {{0, 2, 0}, {3, 5, 3}, {6, 7, 6}};
    reference(&f, fixed3, 3, NULL, want);
    unrolled(&f, "fixed:3", NULL, got, NULL);
    expect_same(got, want, P, "fixed:3");

    /* random with a given xi: cuts at the zeros, grad_scale elsewhere */
    const double xi[8] = {1, 2, 0.5, 0, 4, 1.25, 0, 2};
    const long rnd[][3] = {{0, 2, 0}, {3, 5, 3}, {6, 7, 6}};
    reference(&f, rnd, 3, xi, want);
    unrolled(&f, "random:0.5", xi, got, NULL);
    expect_same(got, want, P, "random (given xi)");

    /* tbptt:2,2 equals fixed:2 */
    const long tb22[][3] = {{0, 1, 0}, {2, 3, 2}, {4, 5, 4}, {6, 7, 6}};
    reference(&f, tb22, 4, NULL, want);
    unrolled(&f, "tbptt:2,2", NULL, got, NULL);
    expect_same(got, want, P, "tbptt:2,2");
    bt_real fixed2[1024];
    unrolled(&f, "fixed:2", NULL, fixed2, NULL);
    expect_same(fixed2, want, P, "fixed:2 = tbptt:2,2");

    /* tbptt:2,5: every 2 steps, the last 2 losses through the last 5 steps
     * (clipped at the start): the loss at t - j reaches back 5 - j steps. */
    const long tb25[][3] = {{0, 1, 0}, {0, 3, 2}, {1, 5, 4}, {3, 7, 6}};
    reference(&f, tb25, 4, NULL, want);
    unrolled(&f, "tbptt:2,5", NULL, got, NULL);
    expect_same(got, want, P, "tbptt:2,5");
    bt_model_free(f.m);
}

Test(unroll, policies_report_their_xi)
{
    fixture f;
    make_fixture(&f, "rnn_tanh", 2, 8, 5, 4, 21);
    bt_real g[1024];
    double xi[8];
    unrolled(&f, "fixed:3", NULL, g, xi);
    const double want_fixed[8] = {1, 1, 1, 0, 1, 1, 0, 1};
    for (int t = 0; t < 8; t++)
        cr_expect_eq(xi[t], want_fixed[t], "fixed:3 xi[%d] = %g", t, xi[t]);
    unrolled(&f, "random:0.25,seed=7", NULL, g, xi);
    for (int t = 1; t < 8; t++)
        cr_expect(xi[t] == 0 || xi[t] == 4, "random:0.25 xi[%d] = %g", t, xi[t]);
    /* replaying the reported xi gives the same gradient */
    bt_real again[1024];
    unrolled(&f, "random:0.25", xi, again, NULL);
    expect_same(again, g, bt_params_total(f.m->params), "replayed xi");
    bt_model_free(f.m);
}

/* ---- unbiasedness ------------------------------------------------------------------ */

Test(unroll, random_truncation_is_unbiased_fixed_is_not, .timeout = 240)
{
    enum { B = 1, T = 12, D = 2, H = 3, Q = 1, N = 2000 };
    char err[256];
    bt_rng r;
    bt_model *m = test_model(reg, "linear", (bt_cell_dims){D, H, Q}, 4, 0.5, &r);
    /* W_hh = 0.9 * rotation-ish, so dependencies last many steps */
    bt_real *whh = m->ptab[1]->data;
    const double c = cos(0.3), s = sin(0.3);
    const bt_real rot[9] = {(bt_real)(0.95 * c), (bt_real)(-0.95 * s), 0, (bt_real)(0.95 * s),
                            (bt_real)(0.95 * c), 0, 0, 0, (bt_real)0.9};
    memcpy(whh, rot, sizeof rot);
    bt_real x[B * T * D], y[B * T * Q];
    for (int i = 0; i < B * T * D; i++) x[i] = (bt_real)bt_rng_normal(&r);
    for (int i = 0; i < B * T * Q; i++) y[i] = (bt_real)bt_rng_normal(&r);
    bt_sequence seq = {.B = B, .T = T, .x = x, .y = y};
    size_t P = bt_params_total(m->params);
    bt_unroller *u;
    cr_assert_eq(bt_unroller_new(m, B, T, &u, err, sizeof err), BT_OK);

    double full[64], fixed[64], mean[64] = {0}, sq[64] = {0};
    const char *specs[2] = {"full", "fixed:1"};
    double *outs[2] = {full, fixed};
    for (int k = 0; k < 2; k++) {
        const bt_policy_def *pd;
        void *ps = make_policy(specs[k], &pd);
        bt_real h[H] = {0};
        bt_real *hp[1] = {h};
        bt_unroll_opts o = {.policy = pd, .policy_state = ps, .accumulate = true};
        bt_unroll_result ur;
        bt_params_zero_grad(m->params);
        cr_assert_eq(bt_unroll_run(u, &seq, hp, &o, NULL, NULL, NULL, &ur, err, sizeof err), BT_OK);
        for (size_t i = 0; i < P; i++)
            outs[k][i] = bt_params_grad(m->params)[i];
        pd->destroy(ps);
    }
    const bt_policy_def *pd;
    void *ps = make_policy("random:0.5", &pd);
    for (int n = 0; n < N; n++) {
        bt_real h[H] = {0};
        bt_real *hp[1] = {h};
        bt_unroll_opts o = {.policy = pd, .policy_state = ps, .policy_seed = 1000 + (uint64_t)n,
                            .accumulate = true};
        bt_unroll_result ur;
        bt_params_zero_grad(m->params);
        cr_assert_eq(bt_unroll_run(u, &seq, hp, &o, NULL, NULL, NULL, &ur, err, sizeof err), BT_OK);
        for (size_t i = 0; i < P; i++) {
            double v = bt_params_grad(m->params)[i];
            mean[i] += v / N;
            sq[i] += v * v / N;
        }
    }
    pd->destroy(ps);
    int biased = 0;
    for (size_t i = 0; i < P; i++) {
        double sd = sqrt(fmax(sq[i] - mean[i] * mean[i], 0));
        double se = sd / sqrt((double)N);
        cr_expect_leq(fabs(mean[i] - full[i]), 4 * se + 1e-6,
                      "component %zu: random mean %.6g vs full %.6g (4 SE = %.3g)", i, mean[i],
                      full[i], 4 * se);
        /* fixed:1 drops every path through time: far off on the recurrent weights */
        if (fabs(fixed[i] - full[i]) > 0.2 * fabs(full[i]) + 1e-3 && fabs(fixed[i] - full[i]) > 8 * se)
            biased++;
    }
    cr_expect_geq(biased, 4, "fixed:1 should be measurably biased on several components (got %d)", biased);
    bt_unroller_free(u);
    bt_model_free(m);
}

/* ---- memory -------------------------------------------------------------------------- */

Test(unroll, long_stream_under_fixed_keeps_memory_flat, .timeout = 240)
{
    enum { B = 2, H = 8, V = 5, T = 10000 };
    const bt_cell_def *def = bt_registry_cell(reg, "rnn_tanh");
    bt_model *m;
    char err[256];
    cr_assert_eq(bt_model_new(def, (bt_cell_dims){V, H, V}, &m, err, sizeof err), BT_OK);
    static int32_t ids[B * T], tg[B * T];
    for (int i = 0; i < B * T; i++) {
        ids[i] = i % V;
        tg[i] = (i * 3) % V;
    }
    const bt_policy_def *pd;
    void *ps = make_policy("fixed:35", &pd);
    bt_unroller *u;
    cr_assert_eq(bt_unroller_new(m, B, T, &u, err, sizeof err), BT_OK);
    bt_real h[B * H] = {0};
    bt_real *hp[1] = {h};
    bt_unroll_opts o = {.policy = pd, .policy_state = ps, .accumulate = true};
    bt_unroll_result short_run, long_run;
    bt_sequence s350 = {.B = B, .T = 350, .ids = ids, .targets = tg};
    cr_assert_eq(bt_unroll_run(u, &s350, hp, &o, NULL, NULL, NULL, &short_run, err, sizeof err), BT_OK, "%s", err);
    size_t reserved = bt_arena_reserved(bt_graph_arena(bt_unroller_graph(u)));
    bt_sequence s10k = {.B = B, .T = T, .ids = ids, .targets = tg};
    uint64_t allocs = bt_alloc_count();
    cr_assert_eq(bt_unroll_run(u, &s10k, hp, &o, NULL, NULL, NULL, &long_run, err, sizeof err), BT_OK, "%s", err);
    cr_expect_eq(long_run.peak_arena, short_run.peak_arena, "window arena %zu vs %zu bytes",
                 long_run.peak_arena, short_run.peak_arena);
    cr_expect_eq(bt_arena_reserved(bt_graph_arena(bt_unroller_graph(u))), reserved);
    /* the per-step xi/ids buffers grow once to the longer sequence, nothing per step */
    cr_expect_leq(bt_alloc_count() - allocs, 4, "%llu allocations over 10,000 steps",
                  (unsigned long long)(bt_alloc_count() - allocs));
    cr_expect_eq(long_run.n_windows, (T + 34) / 35);
    pd->destroy(ps);
    bt_unroller_free(u);
    bt_model_free(m);
}

/* ---- checkpointed full BPTT ------------------------------------------------------------ */

static void full_bptt_grads(const char *cell, int every, int threads, bt_real *g_out,
                            bt_real *dh0_out, double *norms, double *loss)
{
    enum { B = 3, T = 50, V = 6, H = 5 };
    char err[256];
    bt_rng r;
    bt_model *m = test_model(reg, cell, (bt_cell_dims){V, H, V}, 77, 0.4, &r);
    static int32_t ids[B * T], tg[B * T];
    fill_tokens(ids, tg, B * T, V, &r);
    bt_real h[2][B * H], d[2][B * H];
    memset(d, 0, sizeof d);
    for (int i = 0; i < B * H; i++)
        h[0][i] = h[1][i] = (bt_real)(0.3 * bt_rng_normal(&r));
    bt_real *hp[2] = {h[0], h[1]}, *dp[2] = {d[0], d[1]};
    const bt_policy_def *pd;
    void *ps = make_policy("full", &pd);
    bt_unroller *u;
    cr_assert_eq(bt_unroller_new(m, B, T, &u, err, sizeof err), BT_OK);
    if (threads > 1)
        cr_assert_eq(bt_unroller_set_threads(u, threads, err, sizeof err), BT_OK, "%s", err);
    bt_sequence seq = {.B = B, .T = T, .ids = ids, .targets = tg};
    bt_unroll_opts o = {.policy = pd, .policy_state = ps, .accumulate = true, .want_dh0 = true,
                        .want_dh_norms = true, .checkpoint_every = every};
    bt_unroll_result ur;
    bt_params_zero_grad(m->params);
    cr_assert_eq(bt_unroll_run(u, &seq, hp, &o, NULL, dp, norms, &ur, err, sizeof err), BT_OK, "%s", err);
    memcpy(g_out, bt_params_grad(m->params), sizeof(bt_real) * bt_params_total(m->params));
    memcpy(dh0_out, d, sizeof d);
    *loss = ur.loss_sum;
    /* The untaped pass runs every stretch but the last; a plain window has none. */
    int C = every > 0 ? every : every < 0 ? (int)ceil(sqrt((double)T)) : 0;
    long untaped = C ? (long)C * ((T + C - 1) / C - 1) : 0;
    cr_expect_eq(ur.untaped_steps, untaped, "%s, checkpoint %d, %d thread(s): %ld untaped steps, "
                 "not %ld", cell, every, threads, ur.untaped_steps, untaped);
    cr_expect(untaped ? ur.untaped_s > 0 : ur.untaped_s == 0, "%s, checkpoint %d, %d thread(s): "
              "untaped %g s", cell, every, threads, ur.untaped_s);
    pd->destroy(ps);
    bt_unroller_free(u);
    bt_model_free(m);
}

Test(unroll, checkpointed_full_bptt_equals_plain)
{
    const char *which[] = {"rnn_tanh", "lstm"};
    for (int c = 0; c < 2; c++) {
        bt_real plain[2048], ck[2048], dplain[2 * 15], dck[2 * 15];
        double nplain[50], nck[50], lplain, lck;
        full_bptt_grads(which[c], 0, 1, plain, dplain, nplain, &lplain);
        const int everies[] = {7, -1, 1, 49};
        for (int e = 0; e < 4; e++) {
            /* the last spacing on the rows split over lanes (threads) */
            full_bptt_grads(which[c], everies[e], e == 3 ? 3 : 1, ck, dck, nck, &lck);
            size_t P = which[c][0] == 'r' ? 6 * 5 + 25 + 5 + 30 + 6 : 6 * 20 + 5 * 20 + 20 + 30 + 6;
            char what[64];
            snprintf(what, sizeof what, "%s checkpoint every %d: params", which[c], everies[e]);
            expect_same(ck, plain, P, what);
            snprintf(what, sizeof what, "%s checkpoint every %d: dh0", which[c], everies[e]);
            expect_same(dck, dplain, 2 * 15, what);
            /* lanes average their own rows' step losses, in bt_real, then weigh them */
            double ltol = e == 3 && !BT_REAL_DOUBLE ? 1e-6 : 1e-9;
            cr_expect_float_eq(lck, lplain, ltol * fabs(lplain), "%s checkpoint every %d: loss %.9g, "
                               "plain %.9g", which[c], everies[e], lck, lplain);
            for (int t = 0; t < 50; t++)
                cr_expect_float_eq(nck[t], nplain[t], (BT_REAL_DOUBLE ? 1e-12 : 1e-5) * (nplain[t] + 1e-30),
                                   "%s: ||dL/dh_%d||", which[c], t);
        }
    }
}

/* One training run of full BPTT (sgd) on seq, plain (every 0) or
 * checkpointed; its status and message. The parameters must not move and no
 * gradient may be left behind when the run fails. */
static bt_status failing_run(const char *cell, int D, const bt_sequence *seq, int every,
                             char *err, size_t errlen)
{
    enum { H = 3 };
    bt_model *m;
    cr_assert_eq(bt_model_new(bt_registry_cell(reg, cell), (bt_cell_dims){D, H, D}, &m, err,
                              errlen), BT_OK, "%s", err);
    bt_rng r;
    bt_rng_seed(&r, 3);
    cr_assert_eq(bt_model_init(m, NULL, &r, err, errlen), BT_OK, "%s", err);
    size_t P = bt_params_total(m->params);
    bt_real before[64];
    cr_assert_leq(P, 64);
    memcpy(before, bt_params_data(m->params), sizeof(bt_real) * P);
    bt_optimizer *opt;
    cr_assert_eq(bt_optimizer_new(reg, "sgd:lr=0.1", m->params, &opt, err, errlen), BT_OK);
    const bt_policy_def *pd;
    void *ps = make_policy("full", &pd);
    bt_unroller *u;
    cr_assert_eq(bt_unroller_new(m, seq->B, seq->T, &u, err, errlen), BT_OK);
    bt_real h[2 * H] = {0}, *hp[1] = {h};
    bt_unroll_opts o = {.policy = pd, .policy_state = ps, .optimizer = opt, .clip = 1,
                        .checkpoint_every = every};
    bt_unroll_result res;
    bt_status st = bt_unroll_run(u, seq, hp, &o, NULL, NULL, NULL, &res, err, errlen);
    cr_expect_eq(memcmp(before, bt_params_data(m->params), sizeof(bt_real) * P), 0,
                 "%s, checkpoint %d: a failed window moved the parameters", cell, every);
    for (size_t i = 0; i < P; i++)
        cr_expect_eq(bt_params_grad(m->params)[i], 0, "%s, checkpoint %d: gradient %zu is %g "
                     "after the failed window", cell, every, i, (double)bt_params_grad(m->params)[i]);
    bt_unroller_free(u);
    pd->destroy(ps);
    bt_optimizer_free(opt);
    bt_model_free(m);
    return st;
}

/* A checkpointed window checks its losses while it rebuilds its stretches,
 * last first; it must still fail as the plain window does, at the first
 * failing step: a NaN input at step 6 makes every loss from step 6 on NaN,
 * and two bad targets (steps 6 and 17) are refused at the first. */
Test(unroll, checkpointed_window_fails_at_the_plain_window_step)
{
    enum { B = 2, T = 20, D = 2, V = 4 };
    bt_real x[B * T * D], y[B * T * D];
    for (int i = 0; i < B * T * D; i++)
        x[i] = y[i] = (bt_real)(0.1 * (i % 7));
    x[(1 * T + 6) * D] = (bt_real)NAN; /* row 1, step 6 */
    int32_t ids[B * T], tg[B * T];
    for (int i = 0; i < B * T; i++)
        ids[i] = tg[i] = i % V;
    tg[6] = 99;           /* row 0, step 6 */
    tg[T + 17] = 77;      /* row 1, step 17 */
    /* A bad input at step 12 fails the untaped pass (it computes no loss);
     * the bad target at step 6 still comes first. */
    int32_t ids2[B * T];
    memcpy(ids2, ids, sizeof ids2);
    ids2[T + 12] = 50;
    const bt_sequence seqs[3] = {{.B = B, .T = T, .x = x, .y = y},
                                 {.B = B, .T = T, .ids = ids, .targets = tg},
                                 {.B = B, .T = T, .ids = ids2, .targets = tg}};
    const char *cells[3] = {"linear", "rnn_tanh", "rnn_tanh"};
    const int dims[3] = {D, V, V};
    for (int c = 0; c < 3; c++) {
        char plain[256], ck[256];
        bt_status sp = failing_run(cells[c], dims[c], &seqs[c], 0, plain, sizeof plain);
        cr_assert_neq(sp, BT_OK, "%s: the plain run must fail", cells[c]);
        cr_assert(strstr(plain, c ? "target 99" : "NaN at step 6"), "%s", plain);
        const int everies[] = {1, 4, -1, 19};
        for (int e = 0; e < 4; e++) {
            bt_status sc = failing_run(cells[c], dims[c], &seqs[c], everies[e], ck, sizeof ck);
            cr_expect_eq(sc, sp, "%s, checkpoint %d: status %d, plain %d", cells[c], everies[e],
                         sc, sp);
            cr_expect_str_eq(ck, plain, "%s, checkpoint %d: \"%s\", plain \"%s\"", cells[c],
                             everies[e], ck, plain);
        }
    }
}

/* A training step in steady state (unroll, backward, clip, optimizer step)
 * makes no heap allocation at all, plain or checkpointed. */
Test(unroll, steady_state_training_makes_no_heap_allocation)
{
    enum { B = 4, H = 16, V = 7, T = 35 };
    const bt_cell_def *def = bt_registry_cell(reg, "rnn_tanh");
    bt_model *m;
    char err[256];
    cr_assert_eq(bt_model_new(def, (bt_cell_dims){V, H, V}, &m, err, sizeof err), BT_OK);
    bt_rng r;
    bt_rng_seed(&r, 5);
    cr_assert_eq(bt_model_init(m, NULL, &r, err, sizeof err), BT_OK, "%s", err);
    bt_optimizer *opt;
    cr_assert_eq(bt_optimizer_new(reg, "adam:lr=0.01", m->params, &opt, err, sizeof err), BT_OK, "%s", err);
    const char *policies[] = {"full", "fixed:5", "random:0.3", "tbptt:5,12"};
    for (int p = 0; p < 8; p++) {
        int every = p < 4 ? 0 : -1;
        const bt_policy_def *pd;
        void *ps = make_policy(policies[p % 4], &pd);
        bt_unroller *u;
        cr_assert_eq(bt_unroller_new(m, B, T, &u, err, sizeof err), BT_OK);
        static int32_t ids[B * T], tg[B * T];
        bt_real h[B * H] = {0};
        bt_real *hp[1] = {h};
        bt_unroll_result res;
        uint64_t before = 0;
        for (int it = 0; it < 30; it++) {
            for (int i = 0; i < B * T; i++) {
                ids[i] = (int32_t)(bt_rng_next(&r) % V);
                tg[i] = (int32_t)((ids[i] + 1) % V);
            }
            bt_sequence seq = {.B = B, .T = T, .ids = ids, .targets = tg};
            bt_unroll_opts o = {.policy = pd, .policy_state = ps, .policy_seed = (uint64_t)it,
                                .optimizer = opt, .clip = 1, .checkpoint_every = every};
            if (it == 10)
                before = bt_alloc_count(); /* after warm-up: every buffer has its size */
            cr_assert_eq(bt_unroll_run(u, &seq, hp, &o, NULL, NULL, NULL, &res, err, sizeof err), BT_OK, "%s", err);
        }
        cr_expect_eq(bt_alloc_count(), before, "%s, checkpoint %d: %llu heap allocations in 20 steady "
                     "training steps", policies[p % 4], every, (unsigned long long)(bt_alloc_count() - before));
        bt_unroller_free(u);
        pd->destroy(ps);
    }
    bt_optimizer_free(opt);
    bt_model_free(m);
}

/* One accumulate-mode run of seq from a zero state under `budget` bytes
 * (0: none): the gradient into grad [P], and the window's peak arena. */
static size_t run_under_budget(bt_unroller *u, bt_model *m, const bt_sequence *seq,
                               const bt_policy_def *pd, void *ps, size_t budget, bt_real *grad)
{
    char err[256];
    bt_real h[256] = {0}, *hp[1] = {h};
    cr_assert_leq((size_t)seq->B * m->state_width[0], 256);
    bt_unroll_opts o = {.policy = pd, .policy_state = ps, .accumulate = true, .memory_budget = budget};
    bt_unroll_result res;
    bt_params_zero_grad(m->params);
    cr_assert_eq(bt_unroll_run(u, seq, hp, &o, NULL, NULL, NULL, &res, err, sizeof err), BT_OK, "%s", err);
    memcpy(grad, bt_params_grad(m->params), sizeof(bt_real) * bt_params_total(m->params));
    return res.peak_arena;
}

/* Under a memory budget, a window that does not fit is checkpointed with the
 * same gradients; a budget no spacing can meet is refused with its minimum. */
Test(unroll, memory_budget_checkpoints_only_when_needed)
{
    enum { B = 2, H = 16, V = 5, T = 400 };
    char err[256];
    bt_rng r;
    bt_model *m = test_model(reg, "rnn_tanh", (bt_cell_dims){V, H, V}, 8, 0.3, &r);
    static int32_t ids[B * T], tg[B * T];
    fill_tokens(ids, tg, B * T, V, &r);
    bt_sequence seq = {.B = B, .T = T, .ids = ids, .targets = tg};
    const bt_policy_def *pd;
    void *ps = make_policy("full", &pd);
    bt_unroller *u;
    cr_assert_eq(bt_unroller_new(m, B, T, &u, err, sizeof err), BT_OK);
    size_t budgets[3] = {0, 0, 0};
    bt_real grads[3][1024];
    size_t peaks[3];
    size_t P = bt_params_total(m->params);
    cr_assert_leq(P, 1024);
    for (int k = 0; k < 3; k++) {
        peaks[k] = run_under_budget(u, m, &seq, pd, ps, budgets[k], grads[k]);
        if (k == 0) { /* plain: measure, then ask for a fifth, and for plenty */
            budgets[1] = peaks[0] / 5;
            budgets[2] = peaks[0] * 2;
        }
    }
    cr_expect_leq(peaks[1], budgets[1], "checkpointed window used %zu bytes, budget %zu", peaks[1], budgets[1]);
    cr_expect_eq(peaks[2], peaks[0], "a budget that fits must not checkpoint");
    expect_same(grads[1], grads[0], P, "budgeted gradients");
    expect_same(grads[2], grads[0], P, "roomy budget gradients");
    bt_real h[B * H] = {0};
    bt_real *hp[1] = {h};
    bt_unroll_opts tiny = {.policy = pd, .policy_state = ps, .accumulate = true, .memory_budget = 1000};
    bt_unroll_result res;
    cr_expect_eq(bt_unroll_run(u, &seq, hp, &tiny, NULL, NULL, NULL, &res, err, sizeof err), BT_ERR_ARG);
    cr_expect(strstr(err, "too small") && strstr(err, "at least"), "%s", err);
    bt_unroller_free(u);
    pd->destroy(ps);
    bt_model_free(m);
}

/* ---- a non-finite gradient skips the update (and is counted) ---------------------------- */

/* next = tanh(exp(x W)): with x W beyond exp's range, the forward saturates
 * to 1 (a finite loss) while backward meets 0 * inf = NaN. Defined here, not
 * as a plugin: any bt_cell_def works with bt_model_new. */
static int blowup_params(const bt_cell_dims *d, bt_param_spec *s, int max, char *err, size_t len)
{
    (void)max; (void)err; (void)len;
    *s = (bt_param_spec){.name = "W", .ndim = 2, .shape = {d->input, d->hidden},
                         .init = BT_INIT_CONSTANT, .scale = 1};
    return 1;
}

static int blowup_states(const bt_cell_dims *d, int *w, int max)
{
    (void)max;
    w[0] = d->hidden;
    return 1;
}

static bt_tensor *blowup_step(const bt_host *H, bt_graph *g, bt_tensor *const *p,
                              const bt_step_input *in, bt_tensor *const *state, bt_tensor **next)
{
    next[0] = H->tanh(g, H->add(g, H->exp(g, H->matmul(g, in->x, p[0])), state[0]));
    return next[0];
}

static const bt_cell_def blowup = {.name = "blowup", .input = BT_INPUT_REAL, .loss = BT_LOSS_MSE,
                                   .params = blowup_params, .states = blowup_states,
                                   .step = blowup_step};

Test(unroll, non_finite_gradient_skips_the_update_and_counts_it)
{
    enum { B = 2, T = 4, D = 2, H = 3 };
    bt_model *m;
    char err[256];
    cr_assert_eq(bt_model_new(&blowup, (bt_cell_dims){D, H, H}, &m, err, sizeof err), BT_OK, "%s", err);
    bt_rng r;
    bt_rng_seed(&r, 1);
    cr_assert_eq(bt_model_init(m, NULL, &r, err, sizeof err), BT_OK);
    bt_optimizer *opt;
    cr_assert_eq(bt_optimizer_new(reg, "sgd:lr=0.1", m->params, &opt, err, sizeof err), BT_OK, "%s", err);
    const bt_policy_def *pd;
    void *ps = make_policy("fixed:2", &pd);
    bt_unroller *u;
    cr_assert_eq(bt_unroller_new(m, B, T, &u, err, sizeof err), BT_OK);
    bt_real x[B * T * D], y[B * T * H], h[B * H] = {0};
    for (int i = 0; i < B * T * D; i++)
        x[i] = 1000; /* exp(3000): overflows in float and double */
    for (int i = 0; i < B * T * H; i++)
        y[i] = (bt_real)0.5;
    bt_real *hp[1] = {h};
    bt_real before[D * H];
    memcpy(before, m->ptab[0]->data, sizeof before);
    bt_sequence seq = {.B = B, .T = T, .x = x, .y = y};
    bt_unroll_opts o = {.policy = pd, .policy_state = ps, .optimizer = opt, .clip = 1};
    bt_unroll_result res;
    cr_assert_eq(bt_unroll_run(u, &seq, hp, &o, NULL, NULL, NULL, &res, err, sizeof err), BT_OK, "%s", err);
    cr_expect(isfinite(res.loss_sum), "the loss itself is finite: %g", res.loss_sum);
    cr_expect_eq(res.updates, 2);
    cr_expect_eq(res.skipped, 2, "both updates had a NaN gradient: skipped %d", res.skipped);
    cr_expect_eq(memcmp(before, m->ptab[0]->data, sizeof before), 0, "skipped steps must not move W");
    for (size_t i = 0; i < bt_params_total(m->params); i++)
        cr_expect(!isnan(bt_params_data(m->params)[i]), "parameter %zu became NaN", i);
    cr_expect_eq(bt_params_grad(m->params)[0], 0, "gradients are cleared after a skipped update");
    bt_unroller_free(u);
    pd->destroy(ps);
    bt_optimizer_free(opt);
    bt_model_free(m);
}

/* ---- rows split over threads: failures and budgets -------------------------- */

/* A training run of seq (rnn_tanh, full BPTT, sgd) on `threads` threads: its
 * status and message, and the sum of |gradient| it leaves behind. */
static bt_status threaded_training(int threads, const bt_sequence *seq, char *msg, size_t len,
                                   double *left)
{
    enum { H = 3, V = 4 };
    bt_model *m;
    cr_assert_eq(bt_model_new(bt_registry_cell(reg, "rnn_tanh"), (bt_cell_dims){V, H, V}, &m, msg,
                              len), BT_OK, "%s", msg);
    bt_rng r;
    bt_rng_seed(&r, 3);
    cr_assert_eq(bt_model_init(m, NULL, &r, msg, len), BT_OK, "%s", msg);
    bt_optimizer *opt;
    cr_assert_eq(bt_optimizer_new(reg, "sgd:lr=0.1", m->params, &opt, msg, len), BT_OK);
    const bt_policy_def *pd;
    void *ps = make_policy("full", &pd);
    bt_unroller *u;
    cr_assert_eq(bt_unroller_new(m, seq->B, seq->T, &u, msg, len), BT_OK);
    cr_assert_eq(bt_unroller_set_threads(u, threads, msg, len), BT_OK, "%s", msg);
    bt_real h[4 * H] = {0}, *hp[1] = {h};
    bt_unroll_opts o = {.policy = pd, .policy_state = ps, .optimizer = opt, .clip = 1};
    bt_unroll_result res;
    msg[0] = '\0';
    bt_status st = bt_unroll_run(u, seq, hp, &o, NULL, NULL, NULL, &res, msg, len);
    *left = 0;
    for (size_t i = 0; i < bt_params_total(m->params); i++)
        *left += fabs((double)bt_params_grad(m->params)[i]);
    bt_unroller_free(u);
    pd->destroy(ps);
    bt_optimizer_free(opt);
    bt_model_free(m);
    return st;
}

Test(unroll, a_failed_threaded_window_reports_the_earliest_step_and_keeps_no_gradient)
{
    enum { B = 2, T = 20, V = 4 };
    int32_t ids[B * T], tg[B * T];
    for (int i = 0; i < B * T; i++)
        ids[i] = tg[i] = i % V;
    tg[T + 6] = 77;  /* row 1, step 6: the earliest failure */
    tg[0 + 17] = 99; /* row 0, step 17: lane 0 fails too, later */
    bt_sequence seq = {.B = B, .T = T, .ids = ids, .targets = tg};
    char one[512], two[512];
    double left1, left2;
    bt_status s1 = threaded_training(1, &seq, one, sizeof one, &left1);
    bt_status s2 = threaded_training(2, &seq, two, sizeof two, &left2);
    cr_expect_neq(s1, BT_OK);
    cr_expect_eq(s2, s1, "one thread: %s; two: %s", one, two);
    cr_expect(strstr(one, "77"), "one thread reports the earliest step: %s", one);
    cr_expect(strstr(two, "row 1 of 2") && strstr(two, "77"),
              "two threads report the earliest step and its rows: %s", two);
    cr_expect_eq(left1, 0, "one thread left gradients after a failed window");
    cr_expect_eq(left2, 0, "two threads left gradients after a failed window");
}

Test(unroll, a_memory_budget_holds_for_threads_with_uneven_rows)
{
    enum { B = 3, H = 16, V = 5, T = 400 };
    char err[256];
    bt_rng r;
    bt_model *m = test_model(reg, "rnn_tanh", (bt_cell_dims){V, H, V}, 8, 0.3, &r);
    static int32_t ids[B * T], tg[B * T];
    fill_tokens(ids, tg, B * T, V, &r);
    bt_sequence seq = {.B = B, .T = T, .ids = ids, .targets = tg};
    const bt_policy_def *pd;
    void *ps = make_policy("full", &pd);
    bt_unroller *u;
    cr_assert_eq(bt_unroller_new(m, B, T, &u, err, sizeof err), BT_OK);
    cr_assert_eq(bt_unroller_set_threads(u, 2, err, sizeof err), BT_OK, "%s", err); /* rows 1 + 2 */
    size_t P = bt_params_total(m->params), budget = 0, peaks[2];
    static bt_real grads[2][1024];
    cr_assert_leq(P, 1024);
    for (int k = 0; k < 2; k++) { /* plain (measured), then a fifth of its memory */
        peaks[k] = run_under_budget(u, m, &seq, pd, ps, budget, grads[k]);
        budget = peaks[0] / 5;
    }
    cr_expect_leq(peaks[1], budget, "the threads' windows used %zu bytes, budget %zu", peaks[1],
                  budget);
    expect_same(grads[1], grads[0], P, "gradients under the budget");
    bt_unroller_free(u);
    pd->destroy(ps);
    bt_model_free(m);
}
