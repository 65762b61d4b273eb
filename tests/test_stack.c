/* test_stack.c: stacked layers (models/stack.h) and dropout.
 * - stacks of every stackable cell (alike and mixed, 2 and 3 layers) pass a
 *   finite-difference check under every policy, with and without dropout
 *   (masks fixed by the seed, per step and variational);
 * - a 1-layer stack without dropout is the classic model (names, sizes);
 * - xi reaches every layer: a detach at step s stops every layer's gradient;
 * - dropout: the mask's keep rate and scale, off outside training, one mask
 *   per sequence when variational;
 * - refusals: a cell that cannot be a layer, too many layers, bad specs;
 * - the analysis shows each layer's gradient against lag (closed form for a
 *   linear stack's top layer). */
#include <stdio.h>
#include <string.h>

#include "analyze.h"
#include "cellcheck.h"
#include "check.h"
#include "stack.h"

static bt_registry *reg;

static void load_plugins(void)
{
    char err[1024] = "";
    reg = bt_registry_new();
    cr_assert_not_null(reg);
    cr_assert_eq(bt_registry_load_default(reg, err, sizeof err), BT_OK, "%s", err);
}

static void unload_plugins(void) { bt_registry_free(reg); }

TestSuite(stack, .init = load_plugins, .fini = unload_plugins);

enum { B = 2, T = 6, V = 5 };

typedef struct fixture {
    bt_model *m;
    bt_sequence seq;
    int32_t ids[B * T], targets[B * T];
    bt_real x[B * T * V], y[B * T * V];
    bt_real h0[BT_MAX_STATES][B * 16];
    bt_real *h0p[BT_MAX_STATES];
} fixture;

static void make_fixture(fixture *f, const char *layers, double dropout, bool variational,
                         uint64_t seed)
{
    char err[1024] = "";
    bt_layer_def defs[BT_MAX_LAYERS];
    int n = bt_layers_parse(reg, layers, NULL, 4, defs, err, sizeof err);
    cr_assert_gt(n, 0, "%s", err);
    bool tokens = defs[0].cell->input == BT_INPUT_TOKENS;
    int Q = tokens ? V : 2;
    cr_assert_eq(bt_model_new_stack(defs, n, V, Q, dropout, variational, &f->m, err, sizeof err),
                 BT_OK, "%s", err);
    bt_rng r;
    bt_rng_seed(&r, seed);
    for (size_t i = 0; i < bt_params_total(f->m->params); i++)
        bt_params_data(f->m->params)[i] = (bt_real)(0.5 * bt_rng_normal(&r));
    f->seq = (bt_sequence){.B = B, .T = T};
    for (int i = 0; i < B * T; i++) {
        f->ids[i] = (int32_t)(bt_rng_next(&r) % V);
        f->targets[i] = (int32_t)(bt_rng_next(&r) % V);
    }
    for (int i = 0; i < B * T * V; i++)
        f->x[i] = (bt_real)bt_rng_normal(&r);
    for (int i = 0; i < B * T * Q; i++)
        f->y[i] = (bt_real)bt_rng_normal(&r);
    if (tokens) {
        f->seq.ids = f->ids;
        f->seq.targets = f->targets;
    } else {
        f->seq.x = f->x;
        f->seq.y = f->y;
    }
    for (int k = 0; k < f->m->n_states; k++) {
        cr_assert_leq(f->m->state_width[k], 16);
        for (int i = 0; i < B * f->m->state_width[k]; i++)
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

static void check_stack(const char *layers, double dropout, bool variational, const char *policy,
                        const double *xi)
{
    fixture f;
    make_fixture(&f, layers, dropout, variational, 11);
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
                      "%s (dropout %g%s) under %s: %s: max rel error %.3g at %zu (analytic "
                      "%.9g, numeric %.9g)", layers, dropout, variational ? " variational" : "",
                      policy, res[i].name, res[i].max_rel, res[i].worst, res[i].analytic,
                      res[i].numeric);
    pd->destroy(ps);
    bt_model_free(f.m);
}

static const double given_xi[T] = {1, 2.0, 0, 1.25, 0.5, 0};
static const char *const policies[] = {"full", "fixed:2", "random:0.6,seed=3", "tbptt:2,4",
                                       "tbptt:3,3"};

static void every_policy(const char *layers, double dropout, bool variational)
{
    for (size_t p = 0; p < sizeof policies / sizeof *policies; p++)
        check_stack(layers, dropout, variational, policies[p], NULL);
    check_stack(layers, dropout, variational, "random:0.5", given_xi);
}

Test(stack, stacks_of_every_cell_pass_gradcheck_under_every_policy)
{
    static const char *const stacks[] = {"rnn_tanh:4,rnn_tanh:3", "gru:4,gru:3",
                                         "gru_torch:3,gru_torch:4", "lstm:4,lstm:3",
                                         "linear:4,linear:3"};
    for (size_t s = 0; s < sizeof stacks / sizeof *stacks; s++)
        every_policy(stacks[s], 0, false);
}

Test(stack, mixed_stacks_pass_gradcheck_under_every_policy)
{
    every_policy("gru:4,lstm:3,rnn_tanh:2", 0, false);
    every_policy("lstm:3,gru_torch:4", 0, false);
}

Test(stack, dropout_passes_gradcheck_with_its_mask_fixed)
{
    every_policy("lstm:4,gru:3", 0.3, false);
    every_policy("lstm:4,rnn_tanh:3", 0.3, true);
    every_policy("gru_torch:4", 0.4, false); /* one layer with dropout: a stack too */
}

Test(stack, one_layer_without_dropout_is_the_classic_model)
{
    char err[512] = "";
    bt_model *s = NULL, *c = NULL;
    const bt_cell_def *lstm = bt_registry_cell(reg, "lstm");
    cr_assert_eq(bt_model_new_stack(&(bt_layer_def){lstm, 7}, 1, 5, 6, 0, false, &s, err,
                                    sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_model_new(lstm, (bt_cell_dims){5, 7, 6}, &c, err, sizeof err), BT_OK);
    cr_expect_eq(s->n_layers, 0);
    cr_assert_eq(s->n_params, c->n_params);
    for (int i = 0; i < c->n_params; i++)
        cr_expect_str_eq(s->specs[i].name, c->specs[i].name);
    cr_expect_eq(bt_params_total(s->params), bt_params_total(c->params));
    bt_model_free(s);
    bt_model_free(c);
}

Test(stack, names_widths_and_states_of_a_stack)
{
    fixture f;
    make_fixture(&f, "gru:4,lstm:3", 0, false, 1);
    bt_model *m = f.m;
    cr_assert_eq(m->n_layers, 2);
    cr_expect_str_eq(m->specs[0].name, "l1.W_x");
    cr_expect_str_eq(m->specs[m->layer_param0[1]].name, "l2.W_x");
    cr_expect_eq(m->specs[m->layer_param0[1]].shape[0], 4, "layer 2 reads layer 1's h");
    cr_expect_str_eq(m->specs[m->n_params - 2].name, "out.W_hq");
    cr_expect_eq(m->specs[m->n_params - 2].shape[0], 3);
    cr_expect_eq(m->specs[m->n_params - 2].shape[1], V);
    cr_expect_str_eq(m->specs[m->n_params - 1].name, "out.b_q");
    cr_assert_eq(m->n_states, 3);
    char name[32];
    cr_expect_str_eq(bt_model_state_name(m, 0, name, sizeof name), "l1.h0");
    cr_expect_str_eq(bt_model_state_name(m, 1, name, sizeof name), "l2.h0");
    cr_expect_str_eq(bt_model_state_name(m, 2, name, sizeof name), "l2.c0");
    char canon[128];
    bt_layer_def d[BT_MAX_LAYERS];
    int n = bt_layers_parse(reg, "2", "lstm", 9, d, canon, sizeof canon);
    cr_assert_eq(n, 2);
    cr_expect_str_eq(bt_layers_format(d, n, canon, sizeof canon), "lstm:9,lstm:9");
    n = bt_layers_parse(reg, "gru,lstm:3", NULL, 9, d, canon, sizeof canon);
    cr_assert_eq(n, 2);
    cr_expect_str_eq(bt_layers_format(d, n, canon, sizeof canon), "gru:9,lstm:3");
    bt_model_free(m);
}

/* xi reaches every layer's recurrent edge: with a factor 0.5 on the edge into
 * step 3 (and 1 elsewhere), the gradient of every layer's initial state is
 * d_early + 0.5 d_late, where d_early comes from the losses of steps 0..2
 * (loss weights) and d_full = d_early + d_late from all of them. */
static void dh0_of(fixture *f, const double *xi, const bt_real *lw, bt_real (*d)[B * 16])
{
    bt_unroller *u = NULL;
    char err[256];
    cr_assert_eq(bt_unroller_new(f->m, B, T, &u, err, sizeof err), BT_OK);
    bt_real st0[BT_MAX_STATES][B * 16], *sp[BT_MAX_STATES], *dp[BT_MAX_STATES];
    for (int k = 0; k < f->m->n_states; k++) {
        memcpy(st0[k], f->h0[k], sizeof st0[k]);
        sp[k] = st0[k];
        memset(d[k], 0, sizeof d[k]);
        dp[k] = d[k];
    }
    f->seq.loss_weight = lw;
    bt_unroll_opts o = {.xi = xi, .accumulate = true, .want_dh0 = true};
    bt_unroll_result r;
    cr_assert_eq(bt_unroll_run(u, &f->seq, sp, &o, NULL, dp, NULL, &r, err, sizeof err), BT_OK,
                 "%s", err);
    f->seq.loss_weight = NULL;
    bt_unroller_free(u);
}

Test(stack, xi_reaches_every_layer)
{
    fixture f;
    make_fixture(&f, "rnn_tanh:4,lstm:3,gru:2", 0, false, 3);
    static const double ones[T] = {1, 1, 1, 1, 1, 1}, half[T] = {1, 1, 1, 0.5, 1, 1};
    static const bt_real early[T] = {2, 2, 2, 0, 0, 0}; /* weights 1/3, as 2/6 */
    static bt_real full[BT_MAX_STATES][B * 16], halved[BT_MAX_STATES][B * 16],
        first[BT_MAX_STATES][B * 16];
    dh0_of(&f, ones, NULL, full);
    dh0_of(&f, half, NULL, halved);
    dh0_of(&f, ones, early, first);
    for (int k = 0; k < f.m->n_states; k++) {
        double late = 0;
        for (int i = 0; i < B * f.m->state_width[k]; i++) {
            /* first holds 2 * d_early (weights 1/3 instead of 1/6) */
            double de = (double)first[k][i] / 2, dl = (double)full[k][i] - de;
            cr_expect(fabs((double)halved[k][i] - (de + 0.5 * dl)) <= 1e-5 * (1 + fabs(de)),
                      "state %d[%d]: %g, want %g", k, i, (double)halved[k][i], de + 0.5 * dl);
            late += fabs(dl);
        }
        cr_expect_gt(late, 1e-6, "state %d sees the late losses", k);
    }
    bt_model_free(f.m);
}

Test(stack, dropout_masks)
{
    /* The keep rate over many elements, the scale 1/(1-p), and the op's output. */
    long kept = 0, n = 200000;
    for (long i = 0; i < n; i++)
        kept += bt_dropout_uniform(42, (uint64_t)i) >= 0.3;
    cr_expect(fabs((double)kept / n - 0.7) < 4 * sqrt(0.21 / n), "kept %ld of %ld", kept, n);
    bt_graph *g = bt_graph_new();
    bt_tensor *x = test_tensor2(3, 50, false);
    for (size_t i = 0; i < x->size; i++)
        x->data[i] = (bt_real)(1 + i);
    bt_tensor *y = bt_dropout(g, x, 0.3, 9);
    cr_assert_not_null(y);
    for (size_t i = 0; i < x->size; i++) {
        bool keep = bt_dropout_uniform(9, i) >= 0.3;
        cr_expect(fabs((double)y->data[i] - (keep ? (1 + i) / 0.7 : 0)) < 1e-4 * (1 + i));
    }
    cr_expect_null(bt_dropout(g, x, 1.0, 9), "p = 1 is refused");
    cr_expect_neq(bt_graph_status(g), BT_OK);
    bt_graph_free(g);
    bt_tensor_free(x);
}

/* Step t of f's model on a fresh graph, asked for the state only or not:
 * the next states copied into next_out, the graph's node count returned. */
static size_t step_states(fixture *f, long t, bool state_only, bt_real next_out[][B * 16])
{
    bt_graph *g = bt_graph_new();
    bt_model *m = f->m;
    bt_tensor *st[BT_MAX_STATES], *next[BT_MAX_STATES];
    for (int k = 0; k < m->n_states; k++)
        st[k] = bt_graph_input(g, 2, (int[]){B, m->state_width[k]}, f->h0[k]);
    bt_step_input in = {.batch = B, .state_only = state_only};
    if (f->seq.ids) {
        static int32_t col[B];
        for (int b = 0; b < B; b++)
            col[b] = f->ids[b * T + t];
        in.ids = col;
    } else {
        in.x = bt_graph_tensor2(g, B, V);
        for (int b = 0; b < B; b++)
            memcpy(in.x->data + b * V, f->x + (b * T + t) * V, sizeof(bt_real) * V);
    }
    cr_assert_not_null(bt_model_step_at(g, m, &in, t, st, next), "%s", bt_graph_error(g));
    for (int k = 0; k < m->n_states; k++)
        memcpy(next_out[k], next[k]->data, sizeof(bt_real) * next[k]->size);
    size_t nodes = bt_graph_node_count(g);
    bt_graph_free(g);
    return nodes;
}

/* A step asked for the state only (a checkpointed window's forward pass
 * without a tape) gives exactly the next states of a full step, for every
 * shipped cell and for stacks with dropout on; the shipped cells and the
 * stack's output layer skip their output (fewer nodes). */
Test(stack, a_state_only_step_gives_the_full_steps_next_states)
{
    const char *archs[] = {"rnn_tanh", "gru", "gru_torch", "lstm", "linear", "lstm:4,gru:3",
                           "rnn_tanh:16,linear:3,lstm"};
    for (size_t a = 0; a < sizeof archs / sizeof *archs; a++) {
        fixture f;
        make_fixture(&f, archs[a], a >= 5 ? 0.4 : 0, false, 3);
        f.m->dropout_on = a >= 5;
        f.m->dropout_seed = 21;
        for (long t = 0; t < 2; t++) {
            static bt_real full[BT_MAX_STATES][B * 16], only[BT_MAX_STATES][B * 16];
            size_t n_full = step_states(&f, t, false, full);
            size_t n_only = step_states(&f, t, true, only);
            for (int k = 0; k < f.m->n_states; k++)
                cr_expect_eq(memcmp(full[k], only[k], sizeof(bt_real) * B * f.m->state_width[k]), 0,
                             "%s, step %ld: state %d differs when only the state is asked for",
                             archs[a], t, k);
            cr_expect_lt(n_only, n_full, "%s: %zu nodes asked for the state only, %zu in full",
                         archs[a], n_only, n_full);
        }
        bt_model_free(f.m);
    }
}

/* The output at steps 0 and 1 from the same state and input: with a
 * per-step mask they differ, with a variational one they agree; evaluation
 * (dropout off) agrees with neither. */
static void outputs(bt_model *m, fixture *f, bool on, bt_real out[2][B * V])
{
    bt_graph *g = bt_graph_new();
    m->dropout_on = on;
    for (long t = 0; t < 2; t++) {
        bt_tensor *st[BT_MAX_STATES], *next[BT_MAX_STATES];
        st[0] = bt_graph_input(g, 2, (int[]){B, 16}, f->h0[0]);
        bt_step_input in = {.batch = B, .ids = f->ids};
        bt_tensor *o = bt_model_step_at(g, m, &in, t, st, next);
        cr_assert_not_null(o, "%s", bt_graph_error(g));
        memcpy(out[t], o->data, sizeof out[t]);
    }
    m->dropout_on = false;
    bt_graph_free(g);
}

Test(stack, variational_masks_are_shared_over_time_and_off_in_evaluation)
{
    for (int variational = 0; variational < 2; variational++) {
        fixture f;
        make_fixture(&f, "rnn_tanh:16", 0.5, variational, 5);
        f.m->dropout_seed = 77;
        bt_real train[2][B * V], eval[2][B * V];
        outputs(f.m, &f, true, train);
        outputs(f.m, &f, false, eval);
        bool same_train = !memcmp(train[0], train[1], sizeof train[0]);
        cr_expect_eq(same_train, (bool)variational, "variational %d: steps 0 and 1 %s",
                     variational, same_train ? "agree" : "differ");
        cr_expect(!memcmp(eval[0], eval[1], sizeof eval[0]), "evaluation draws nothing");
        cr_expect(memcmp(eval[0], train[0], sizeof eval[0]), "training drops units");
        bt_model_free(f.m);
    }
}

Test(stack, refusals)
{
    char err[512] = "";
    bt_model *m = NULL;
    bt_layer_def d[BT_MAX_LAYERS + 1];
    cr_expect_eq(bt_layers_parse(reg, "nosuch:3", NULL, 4, d, err, sizeof err), -1);
    cr_expect(strstr(err, "unknown cell 'nosuch'"), "%s", err);
    cr_expect_eq(bt_layers_parse(reg, "lstm:0", NULL, 4, d, err, sizeof err), -1);
    cr_expect_eq(bt_layers_parse(reg, "lstm:", NULL, 4, d, err, sizeof err), -1);
    cr_expect_eq(bt_layers_parse(reg, "9", "lstm", 4, d, err, sizeof err), -1);
    cr_expect_eq(bt_layers_parse(reg, "0", "lstm", 4, d, err, sizeof err), -1);
    const bt_cell_def *infl = bt_registry_cell(reg, "influence");
    d[0] = (bt_layer_def){bt_registry_cell(reg, "lstm"), 3};
    d[1] = (bt_layer_def){infl, 3};
    cr_expect_eq(bt_model_new_stack(d, 2, 5, 5, 0, false, &m, err, sizeof err), BT_ERR_ARG);
    cr_expect(strstr(err, "cannot be a layer of a stack"), "%s", err);
    cr_expect_null(m);
    cr_expect_eq(bt_model_new_stack(d, 1, 5, 5, 1.0, false, &m, err, sizeof err), BT_ERR_ARG);
    cr_expect(strstr(err, "dropout"), "%s", err);
    for (int l = 0; l < BT_MAX_LAYERS + 1; l++)
        d[l] = (bt_layer_def){bt_registry_cell(reg, "lstm"), 3};
    cr_expect_eq(bt_model_new_stack(d, BT_MAX_LAYERS + 1, 5, 5, 0, false, &m, err, sizeof err),
                 BT_ERR_ARG);
    /* 8 LSTM layers: 16 states, the most a model holds */
    cr_expect_eq(bt_model_new_stack(d, BT_MAX_LAYERS, 5, 5, 0, false, &m, err, sizeof err), BT_OK,
                 "%s", err);
    bt_model_free(m);
}

/* bptt analyze per layer: in a stack of linear cells, the top layer's state
 * gradient k steps back is g W_hh2^k (row vectors: h2_t = ... + h2_{t-1}
 * W_hh2^T), g its gradient at lag 0. The analysis must give those norms, and
 * layer 1's column must be the single-layer figure (grad_norm). */
Test(stack, analysis_shows_each_layers_gradient_against_lag)
{
    fixture f;
    make_fixture(&f, "linear:4,linear:3", 0, false, 21);
    bt_model *m = f.m;
    enum { K = 4 };
    bt_analysis an;
    char err[512] = "";
    cr_assert_eq(bt_analysis_run(m, &f.seq, NULL, K, 0, 1, &an, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(an.n_layers, 2);
    for (int k = 0; k <= K; k++)
        cr_expect_eq(an.layer_grad_norm[k], an.grad_norm[k]);
    const bt_tensor *W = m->ptab[m->layer_param0[1] + 1]; /* l2.W_hh [3,3] */
    cr_assert_str_eq(m->specs[m->layer_param0[1] + 1].name, "l2.W_hh");
    /* g = dL/dh2_T: the loss is the last step's MSE 0.5 ||h2 Wo + b - y||^2 / B,
     * so g = (o - y) Wo^T / B with o from a forward pass. */
    bt_graph *g = bt_graph_new();
    bt_tensor *st[BT_MAX_STATES], *next[BT_MAX_STATES], *o = NULL;
    bt_real zeros[BT_MAX_STATES][B * 16] = {{0}};
    for (int k = 0; k < m->n_states; k++)
        st[k] = bt_graph_input(g, 2, (int[]){B, m->state_width[k]}, zeros[k]);
    for (long s = 0; s <= K; s++) {
        bt_step_input in = {.batch = B, .x = bt_graph_tensor2(g, B, V)};
        for (int b = 0; b < B; b++)
            memcpy(in.x->data + b * V, f.x + ((size_t)b * T + s) * V, sizeof(bt_real) * V);
        o = bt_model_step_at(g, m, &in, s, st, next);
        cr_assert_not_null(o, "%s", bt_graph_error(g));
        memcpy(st, next, sizeof st);
    }
    const bt_tensor *Wo = m->ptab[m->n_params - 2]; /* out.W_hq [3,2] */
    double gv[B][3], gk[B][3];
    for (int b = 0; b < B; b++)
        for (int i = 0; i < 3; i++) {
            double acc = 0;
            for (int q = 0; q < 2; q++)
                acc += ((double)o->data[b * 2 + q] - (double)f.y[((size_t)b * T + K) * 2 + q]) *
                       (double)Wo->data[i * 2 + q];
            gv[b][i] = acc / B;
        }
    for (int k = 0; k <= K; k++) {
        double n2 = 0;
        for (int b = 0; b < B; b++)
            for (int i = 0; i < 3; i++)
                n2 += gv[b][i] * gv[b][i];
        double want = sqrt(n2), got = an.layer_grad_norm[(K + 1) + k];
        cr_expect(fabs(got - want) <= 1e-4 * want, "layer 2, lag %d: %g, want %g", k, got, want);
        for (int b = 0; b < B; b++) /* one more step back: g W_hh2 */
            for (int j = 0; j < 3; j++) {
                gk[b][j] = 0;
                for (int i = 0; i < 3; i++)
                    gk[b][j] += gv[b][i] * (double)W->data[i * 3 + j];
            }
        memcpy(gv, gk, sizeof gv);
    }
    bt_graph_free(g);
    bt_analysis_free(&an);
    bt_model_free(m);
}
