/* test_invariants.c: whole-run invariants (suite invariants).
 * - checkpointed BPTT (--checkpoint 1, 2, sqrt, --memory-budget) trains the
 *   same run as plain BPTT: after several epochs with the state carried, the
 *   parameters, the optimizer state and the carried state agree, for every
 *   shipped cell under every shipped policy;
 * - bt_unroll_run returns the same final state and gradients with and
 *   without checkpointing, over consecutive sequences;
 * - validation losses equal a plain re-evaluation written here, by explicit
 *   loops over the held-out data (not bt_unroll_step), with the documented
 *   state rule: a text is read once with the state carried; independent task
 *   sequences each start from a zero state.
 *
 * Equal means: in the double build within 1e-12 of the largest magnitude of
 * each buffer; in float within 2e-4 (a checkpointed window sums each weight
 * gradient in per-stretch GEMMs instead of one GEMM over the whole window,
 * so the two runs round differently; a wrong state breaks this by far more). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check_model.h"
#include "lm.h"
#include "tasks.h"
#include "text_source.h"

#if BT_REAL_DOUBLE
#define SAME_TOL 1e-12
#else
#define SAME_TOL 2e-4
#endif

static bt_registry *reg;
static char err[2048];

static void setup(void)
{
    reg = bt_registry_new();
    cr_assert_not_null(reg);
    cr_assert_eq(bt_registry_load_default(reg, err, sizeof err), BT_OK, "%s", err);
}

static void teardown(void) { bt_registry_free(reg); }

TestSuite(invariants, .init = setup, .fini = teardown);

/* Largest |a - b| over the largest |b| (or 1e-30), so a buffer is compared as
 * a whole: small entries of a large gradient are not held to more digits than
 * their neighbours. */
static double rel_diff(const bt_real *a, const bt_real *b, size_t n)
{
    double d = 0, m = 1e-30;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - (double)b[i]));
        m = fmax(m, fabs((double)b[i]));
    }
    return d / m;
}

/* ---- whole training runs ------------------------------------------------------ */

typedef struct run {
    bt_corpus *corpus;
    bt_source src;
    bt_lm *lm;
} run;

/* A small text with enough structure to learn: cheap, and long enough for
 * several minibatches with the state carried between them. */
static bt_corpus *small_text(void)
{
    static const char *unit = "the time traveller (for so it will be convenient to speak of him) "
                              "was expounding a recondite matter to us. ";
    size_t n = strlen(unit);
    enum { REPEATS = 6 };
    char *text = malloc(n * REPEATS + 1);
    cr_assert_not_null(text);
    for (int i = 0; i < REPEATS; i++)
        memcpy(text + n * (size_t)i, unit, n);
    text[n * REPEATS] = '\0';
    bt_corpus *c = NULL;
    cr_assert_eq(bt_corpus_from_string(text, strlen(text), BT_TOKENS_CHARS, 0, &c, err, sizeof err),
                 BT_OK, "%s", err);
    free(text);
    return c;
}

/* cell on a source that suits it: token cells on the text (sequential, state
 * carried, 10% validation), linear on the adding task, influence on its own
 * task (state carried). layers: a stack of token cells ("lstm:8,gru:6"), or NULL. */
static void run_new_layers(run *r, const char *cell, const char *layers, const char *policy,
                           int ckpt, double budget_mb)
{
    memset(r, 0, sizeof *r);
    bt_lm_config c;
    bt_lm_config_default(&c);
    if (layers)
        snprintf(c.layers, sizeof c.layers, "%s", layers);
    c.cell = cell;
    c.truncation = policy;
    c.optimizer = "adam:lr=0.01"; /* two state buffers to compare */
    c.hidden = 8;
    c.batch = 3;
    c.steps = 20;
    c.seed = 11;
    c.clip = 1;
    c.checkpoint_every = ckpt;
    c.memory_budget_mb = budget_mb;
    if (!strcmp(cell, "linear")) {
        cr_assert_eq(bt_task_source_new("adding:20,batches=4", c.batch, 3, &r->src, err, sizeof err),
                     BT_OK, "%s", err);
    } else if (!strcmp(cell, "influence")) {
        c.hidden = 5;
        cr_assert_eq(bt_task_source_new("influence:5,2,len=20,batches=4", c.batch, 3, &r->src, err,
                                        sizeof err), BT_OK, "%s", err);
        c.optimizer = "sgd:lr=0.001";
    } else {
        c.val_fraction = 0.1;
        r->corpus = small_text();
        cr_assert_eq(bt_text_source_new(r->corpus, c.batch, c.steps, BT_BATCH_SEQUENTIAL,
                                        c.val_fraction, &r->src, err, sizeof err), BT_OK, "%s", err);
    }
    cr_assert_eq(bt_lm_new(reg, &c, &r->src, &r->lm, err, sizeof err), BT_OK, "%s: %s", cell, err);
}

static void run_new(run *r, const char *cell, const char *policy, int ckpt, double budget_mb)
{
    run_new_layers(r, cell, NULL, policy, ckpt, budget_mb);
}

static void run_free(run *r)
{
    bt_lm_free(r->lm);
    bt_source_free(&r->src);
    bt_corpus_free(r->corpus);
}

/* The largest relative difference seen by expect_same_run, for the log. */
static double worst_seen;

static void expect_small(double d, const char *what, const char *part)
{
    worst_seen = fmax(worst_seen, d);
    cr_expect_leq(d, SAME_TOL, "%s: %s differ by %.3g (relative)", what, part, d);
}

/* Everything a run carries into its next epoch must agree. */
static void expect_same_run(run *a, run *b, const char *what)
{
    bt_model *ma = bt_lm_model(a->lm), *mb = bt_lm_model(b->lm);
    size_t P = bt_params_total(ma->params);
    expect_small(rel_diff(bt_params_data(ma->params), bt_params_data(mb->params), P), what,
                 "parameters");
    bt_optimizer *oa = bt_lm_optimizer(a->lm), *ob = bt_lm_optimizer(b->lm);
    cr_expect_eq(bt_optimizer_steps(oa), bt_optimizer_steps(ob), "%s: optimizer steps", what);
    for (int i = 0; i < bt_optimizer_state_count(oa); i++)
        expect_small(rel_diff(bt_optimizer_state(oa, i), bt_optimizer_state(ob, i), P), what,
                     "optimizer states");
    for (int k = 0; k < ma->n_states; k++) {
        size_t n = (size_t)a->src.B * (size_t)ma->state_width[k];
        expect_small(rel_diff(bt_lm_state(a->lm)[k], bt_lm_state(b->lm)[k], n), what,
                     "carried states");
    }
    const bt_lm_epoch *ha, *hb;
    int na = bt_lm_history(a->lm, &ha), nb = bt_lm_history(b->lm, &hb);
    cr_assert_eq(na, nb);
    for (int i = 0; i < na; i++) {
        cr_expect_leq(fabs(ha[i].train_loss - hb[i].train_loss), SAME_TOL * fabs(hb[i].train_loss),
                      "%s: epoch %d train loss %.17g vs %.17g", what, i + 1, ha[i].train_loss,
                      hb[i].train_loss);
        if (!isnan(hb[i].val_loss))
            cr_expect_leq(fabs(ha[i].val_loss - hb[i].val_loss), SAME_TOL * fabs(hb[i].val_loss),
                          "%s: epoch %d validation loss %.17g vs %.17g", what, i + 1,
                          ha[i].val_loss, hb[i].val_loss);
        cr_expect_eq(ha[i].updates, hb[i].updates, "%s: epoch %d updates", what, i + 1);
    }
}

static const char *policies[] = {"full", "fixed:3", "random:0.6,seed=5", "tbptt:3,7"};

/* 3 epochs plain, then the same run under each checkpointed mode. */
static void checkpointed_matrix(const char *cell)
{
    enum { EPOCHS = 3 };
    worst_seen = 0;
    for (size_t p = 0; p < sizeof policies / sizeof *policies; p++) {
        run plain;
        run_new(&plain, cell, policies[p], 0, 0);
        cr_assert_eq(bt_lm_train(plain.lm, EPOCHS, NULL, err, sizeof err), BT_OK, "%s", err);
        /* A budget below the largest plain window forces checkpointing (and
         * stays above the minimum checkpointing needs for a 3-step window). */
        const bt_lm_epoch *h;
        bt_lm_history(plain.lm, &h);
        double budget = (double)h[0].peak_arena / 1048576.0 * 0.6;
        struct { int every; double mb; const char *name; } modes[] = {
            {1, 0, "--checkpoint 1"}, {2, 0, "--checkpoint 2"}, {-1, 0, "--checkpoint sqrt"},
            {0, budget, "--memory-budget"}};
        for (size_t k = 0; k < sizeof modes / sizeof *modes; k++) {
            run ck;
            run_new(&ck, cell, policies[p], modes[k].every, modes[k].mb);
            cr_assert_eq(bt_lm_train(ck.lm, EPOCHS, NULL, err, sizeof err), BT_OK, "%s %s %s: %s",
                         cell, policies[p], modes[k].name, err);
            char what[128];
            snprintf(what, sizeof what, "%s, %s, %s", cell, policies[p], modes[k].name);
            expect_same_run(&ck, &plain, what);
            run_free(&ck);
        }
        run_free(&plain);
    }
    cr_log_info("%s: worst relative difference, checkpointed vs plain, over every policy and "
                "mode: %.3g", cell, worst_seen);
}

Test(invariants, checkpointed_training_equals_plain_rnn_tanh) { checkpointed_matrix("rnn_tanh"); }
Test(invariants, checkpointed_training_equals_plain_gru) { checkpointed_matrix("gru"); }
Test(invariants, checkpointed_training_equals_plain_gru_torch) { checkpointed_matrix("gru_torch"); }
Test(invariants, checkpointed_training_equals_plain_lstm) { checkpointed_matrix("lstm"); }
Test(invariants, checkpointed_training_equals_plain_linear) { checkpointed_matrix("linear"); }
Test(invariants, checkpointed_training_equals_plain_influence) { checkpointed_matrix("influence"); }

/* ---- bt_unroll_run directly ------------------------------------------------------- */

/* Three consecutive sequences of one stream in accumulate mode (no optimizer,
 * so gradients add up): the state each returns and the summed gradient. */
static void unroll_stream(const char *cell, const char *policy, int every, bt_real *state_out,
                          bt_real *grad_out, size_t *P)
{
    enum { B = 2, T = 13, V = 5, H = 4, SEQS = 3 };
    const bt_cell_def *def = bt_registry_cell(reg, cell);
    bt_model *m;
    cr_assert_eq(bt_model_new(def, (bt_cell_dims){V, H, V}, &m, err, sizeof err), BT_OK, "%s", err);
    bt_rng r;
    bt_rng_seed(&r, 99);
    fill_params_normal(m->params, 0.6, &r);
    char name[32];
    const char *opts;
    bt_split_spec(policy, name, sizeof name, &opts);
    const bt_policy_def *pd = bt_registry_policy(reg, name);
    void *ps = NULL;
    cr_assert_eq(pd->create(bt_host_table(), opts, &ps, err, sizeof err), 0, "%s", err);
    bt_unroller *u;
    cr_assert_eq(bt_unroller_new(m, B, T, &u, err, sizeof err), BT_OK, "%s", err);
    bt_real st[2][B * H] = {{0}};
    bt_real *sp[2] = {st[0], st[1]};
    int32_t ids[B * T], tg[B * T];
    for (int s = 0; s < SEQS; s++) {
        fill_tokens(ids, tg, B * T, V, &r);
        bt_sequence seq = {.B = B, .T = T, .ids = ids, .targets = tg};
        bt_unroll_opts o = {.policy = pd, .policy_state = ps, .policy_seed = (uint64_t)s + 1,
                            .accumulate = true, .checkpoint_every = every};
        bt_unroll_result res;
        cr_assert_eq(bt_unroll_run(u, &seq, sp, &o, NULL, NULL, NULL, &res, err, sizeof err), BT_OK,
                     "%s", err);
        for (int k = 0; k < m->n_states; k++)
            memcpy(state_out + ((size_t)s * 2 + k) * B * H, st[k], sizeof(bt_real) * B * H);
    }
    *P = bt_params_total(m->params);
    memcpy(grad_out, bt_params_grad(m->params), sizeof(bt_real) * *P);
    bt_unroller_free(u);
    pd->destroy(ps);
    bt_model_free(m);
}

Test(invariants, checkpointed_unroll_returns_the_plain_state)
{
    static bt_real s_plain[3 * 2 * 8], s_ck[3 * 2 * 8], g_plain[512], g_ck[512];
    const char *token_cells[] = {"rnn_tanh", "gru", "lstm"};
    for (int c = 0; c < 3; c++)
        for (size_t p = 0; p < sizeof policies / sizeof *policies; p++) {
            size_t P;
            memset(s_plain, 0, sizeof s_plain);
            unroll_stream(token_cells[c], policies[p], 0, s_plain, g_plain, &P);
            cr_assert_leq(P, 512);
            const int everies[] = {1, 2, 5, -1};
            for (int e = 0; e < 4; e++) {
                memset(s_ck, 0, sizeof s_ck);
                unroll_stream(token_cells[c], policies[p], everies[e], s_ck, g_ck, &P);
                for (int s = 0; s < 3; s++) {
                    double d = rel_diff(s_ck + s * 16, s_plain + s * 16, 16);
                    cr_expect_leq(d, SAME_TOL, "%s %s checkpoint %d: state after sequence %d "
                                  "differs by %.3g", token_cells[c], policies[p], everies[e], s + 1, d);
                }
                double d = rel_diff(g_ck, g_plain, P);
                cr_expect_leq(d, SAME_TOL, "%s %s checkpoint %d: gradients differ by %.3g",
                              token_cells[c], policies[p], everies[e], d);
            }
        }
}

/* ---- validation against a plain re-evaluation ---------------------------------- */

/* The cells' equations, written out as loops over rows (docs/grad-files.md):
 * rnn_tanh h = tanh(x W_xh + h W_hh + b_h), o = h W_hq + b_q;
 * linear (column form) h = W_hx x + W_hh h, o = W_qh h. */
static const bt_real *param(bt_model *m, const char *name)
{
    bt_tensor *t = bt_params_find(m->params, name);
    cr_assert_not_null(t, "no parameter %s", name);
    return t->data;
}

/* One step of the cell for row b: updates h [H] in place and writes o [Q]. */
static void reference_step(bt_model *m, const bt_sequence *seq, int b, long s, double *h, double *o)
{
    int H = m->dims.hidden, Q = m->dims.output, D = m->dims.input;
    double hn[64];
    cr_assert_leq(H, 64);
    if (!strcmp(m->cell->name, "rnn_tanh")) {
        const bt_real *Wx = param(m, "W_xh"), *Wh = param(m, "W_hh"), *bh = param(m, "b_h");
        int id = seq->ids[(size_t)b * seq->T + s];
        for (int j = 0; j < H; j++) {
            double a = (double)Wx[(size_t)id * H + j] + (double)bh[j];
            for (int i = 0; i < H; i++)
                a += h[i] * (double)Wh[(size_t)i * H + j];
            hn[j] = tanh(a);
        }
        const bt_real *Wq = param(m, "W_hq"), *bq = param(m, "b_q");
        for (int q = 0; q < Q; q++) {
            o[q] = (double)bq[q];
            for (int j = 0; j < H; j++)
                o[q] += hn[j] * (double)Wq[(size_t)j * Q + q];
        }
    } else { /* linear */
        const bt_real *Wx = param(m, "W_hx"), *Wh = param(m, "W_hh"), *Wq = param(m, "W_qh");
        const bt_real *x = seq->x + ((size_t)b * seq->T + s) * D;
        for (int j = 0; j < H; j++) {
            double a = 0;
            for (int i = 0; i < D; i++)
                a += (double)Wx[(size_t)j * D + i] * (double)x[i];
            for (int i = 0; i < H; i++)
                a += (double)Wh[(size_t)j * H + i] * h[i];
            hn[j] = a;
        }
        for (int q = 0; q < Q; q++) {
            o[q] = 0;
            for (int j = 0; j < H; j++)
                o[q] += (double)Wq[(size_t)q * H + j] * hn[j];
        }
    }
    memcpy(h, hn, sizeof(double) * (size_t)H);
}

/* The step loss of row b: cross-entropy of o against the target id, or
 * 0.5 ||o - y||^2. */
static double reference_loss(const bt_sequence *seq, int b, long s, const double *o, int Q)
{
    if (seq->targets) {
        double mx = o[0], z = 0;
        for (int q = 1; q < Q; q++)
            mx = fmax(mx, o[q]);
        for (int q = 0; q < Q; q++)
            z += exp(o[q] - mx);
        return log(z) + mx - o[seq->targets[(size_t)b * seq->T + s]];
    }
    double l = 0;
    const bt_real *y = seq->y + ((size_t)b * seq->T + s) * Q;
    for (int q = 0; q < Q; q++)
        l += 0.5 * (o[q] - (double)y[q]) * (o[q] - (double)y[q]);
    return l;
}

/* Mean loss per scored token over the held-out data; `carry` says whether
 * minibatch i + 1 continues the rows of minibatch i. */
static double reference_validation(bt_lm *lm, bool carry)
{
    bt_model *m = bt_lm_model(lm);
    bt_source *src = bt_lm_source(lm);
    static double h[64][64], o[128];
    double sum = 0, n = 0;
    bt_sequence seq;
    for (int i = 0; src->validation(src->ctx, i, &seq); i++) {
        cr_assert_leq(seq.B, 64);
        if (!carry || i == 0)
            memset(h, 0, sizeof h);
        for (long s = 0; s < seq.T; s++) {
            double w = seq.loss_weight ? (double)seq.loss_weight[s] : 1.0;
            for (int b = 0; b < seq.B; b++) {
                reference_step(m, &seq, b, s, h[b], o);
                if (w != 0) {
                    sum += w * reference_loss(&seq, b, s, o, m->dims.output);
                    n += 1;
                }
            }
        }
    }
    return sum / n;
}

static void expect_validation(run *r, bool carry, const char *what)
{
    double loss;
    cr_assert_eq(bt_lm_evaluate(r->lm, &loss, err, sizeof err), BT_OK, "%s: %s", what, err);
    double ref = reference_validation(r->lm, carry);
    cr_log_info("%s: validation loss %.17g, re-evaluated %.17g", what, loss, ref);
    cr_expect_leq(fabs(loss - ref), (BT_REAL_DOUBLE ? 1e-12 : 1e-5) * fabs(ref),
                  "%s: validation loss %.17g, a plain re-evaluation gives %.17g", what, loss, ref);
}

Test(invariants, validation_equals_a_plain_reevaluation)
{
    /* A text is read once from start to end: the state carries. */
    run t;
    run_new(&t, "rnn_tanh", "full", 0, 0);
    cr_assert_eq(bt_lm_train(t.lm, 2, NULL, err, sizeof err), BT_OK, "%s", err);
    expect_validation(&t, true, "text");
    run_free(&t);

    /* Generated tasks: every held-out sequence is independent. */
    const struct { const char *spec, *cell; } tasks[] = {
        {"adding:12,batches=3", "linear"}, {"copy:6,3,batches=3", "rnn_tanh"}};
    for (int k = 0; k < 2; k++) {
        bt_lm_config c;
        bt_lm_config_default(&c);
        c.cell = tasks[k].cell;
        c.optimizer = "adam:lr=0.02";
        c.hidden = 6;
        c.batch = 4;
        c.seed = 2;
        /* A strong recurrent matrix, so a state wrongly carried in from the
         * previous sequence changes the loss well beyond float rounding. */
        c.init = "normal:0.8";
        run r = {0};
        cr_assert_eq(bt_task_source_new(tasks[k].spec, c.batch, 5, &r.src, err, sizeof err), BT_OK,
                     "%s", err);
        c.steps = r.src.T;
        cr_assert_eq(bt_lm_new(reg, &c, &r.src, &r.lm, err, sizeof err), BT_OK, "%s", err);
        cr_assert_eq(bt_lm_train(r.lm, 3, NULL, err, sizeof err), BT_OK, "%s", err);
        expect_validation(&r, false, tasks[k].spec);
        run_free(&r);
    }
}

/* ---- a policy that asks for more reach than it declared ------------------------- */

/* Updates every 3 steps asking for a reach of 5, but declares max_reach 0 ("no
 * more than the steps since the last update"): the ring then holds only that
 * much, so the host must clamp the reach to its declaration. The run equals
 * fixed:3 (which cuts where this one updates). */
static void overreach_decide(void *st, long t, bt_policy_decision *d)
{
    (void)st;
    d->xi = t > 0 && t % 3 == 0 ? 0 : 1;
    d->update = t % 3 == 2;
    d->reach = 5;
}
static int overreach_max(void *st) { (void)st; return 0; }

Test(invariants, reach_beyond_the_declared_bound_is_clamped)
{
    static const bt_policy_def overreach = {.size = sizeof overreach, .name = "overreach",
                                            .decide = overreach_decide,
                                            .max_reach = overreach_max};
    enum { B = 2, T = 13, V = 5, H = 4 };
    bt_rng r;
    bt_model *m = test_model(reg, "rnn_tanh", (bt_cell_dims){V, H, V}, 4, 0.6, &r);
    int32_t ids[B * T], tg[B * T];
    fill_tokens(ids, tg, B * T, V, &r);
    bt_sequence seq = {.B = B, .T = T, .ids = ids, .targets = tg};
    const bt_policy_def *fixed = bt_registry_policy(reg, "fixed");
    void *fs = NULL;
    cr_assert_eq(bt_policy_create(fixed, "3", &fs, err, sizeof err), BT_OK, "%s", err);
    size_t P = bt_params_total(m->params);
    bt_real grads[2][256];
    cr_assert_leq(P, 256);
    for (int run = 0; run < 2; run++) {
        bt_unroller *u;
        cr_assert_eq(bt_unroller_new(m, B, T, &u, err, sizeof err), BT_OK, "%s", err);
        bt_real h[B * H] = {0};
        bt_real *hp[1] = {h};
        bt_unroll_opts o = {.policy = run ? fixed : &overreach, .policy_state = run ? fs : NULL,
                            .accumulate = true};
        bt_unroll_result res;
        bt_params_zero_grad(m->params);
        cr_assert_eq(bt_unroll_run(u, &seq, hp, &o, NULL, NULL, NULL, &res, err, sizeof err), BT_OK,
                     "%s", err);
        memcpy(grads[run], bt_params_grad(m->params), sizeof(bt_real) * P);
        bt_unroller_free(u);
    }
    double d = rel_diff(grads[0], grads[1], P);
    cr_expect_leq(d, SAME_TOL, "a reach beyond max_reach was not clamped: gradients differ by %.3g", d);
    fixed->destroy(fs);
    bt_model_free(m);
}

/* ---- rows split over threads (bt_unroller_set_threads, train --threads) ---- */

/* 3 epochs on one thread, then the same run with the rows split over 2 and 3
 * threads (batch 3: uneven and single-row lanes), also checkpointed and under
 * a memory budget. layers: a stack, or NULL for the cell alone. */
static void threaded_matrix(const char *cell, const char *layers)
{
    enum { EPOCHS = 3 };
    worst_seen = 0;
    for (size_t p = 0; p < sizeof policies / sizeof *policies; p++) {
        run one;
        run_new_layers(&one, cell, layers, policies[p], 0, 0);
        cr_assert_eq(bt_lm_train(one.lm, EPOCHS, NULL, err, sizeof err), BT_OK, "%s", err);
        /* The budget mode asks for 0.6 of what the plain 2-thread run (the
         * first mode) used: two graphs hold more than one. */
        double budget = 0;
        struct { int threads, every; bool budget; const char *name; } modes[] = {
            {2, 0, false, "2 threads"}, {3, 0, false, "3 threads"},
            {2, -1, false, "2 threads, --checkpoint sqrt"}, {2, 0, true, "2 threads, --memory-budget"}};
        for (size_t k = 0; k < sizeof modes / sizeof *modes; k++) {
            run many;
            run_new_layers(&many, cell, layers, policies[p], modes[k].every,
                           modes[k].budget ? budget : 0);
            int lanes = 0;
            cr_assert_eq(bt_lm_set_threads(many.lm, modes[k].threads, &lanes, err, sizeof err),
                         BT_OK, "%s", err);
            cr_assert_eq(lanes, modes[k].threads);
            cr_assert_eq(bt_lm_train(many.lm, EPOCHS, NULL, err, sizeof err), BT_OK,
                         "%s %s %s: %s", cell, policies[p], modes[k].name, err);
            char what[160];
            snprintf(what, sizeof what, "%s%s%s, %s, %s", cell, layers ? " " : "",
                     layers ? layers : "", policies[p], modes[k].name);
            expect_same_run(&many, &one, what);
            if (k == 0) {
                const bt_lm_epoch *h;
                bt_lm_history(many.lm, &h);
                budget = (double)h[0].peak_arena / 1048576.0 * 0.6;
            }
            run_free(&many);
        }
        run_free(&one);
    }
    cr_log_info("%s%s: worst relative difference, threads vs one thread: %.3g", cell,
                layers ? " stack" : "", worst_seen);
}

Test(invariants, threaded_training_equals_one_thread_rnn_tanh) { threaded_matrix("rnn_tanh", NULL); }
Test(invariants, threaded_training_equals_one_thread_gru) { threaded_matrix("gru", NULL); }
Test(invariants, threaded_training_equals_one_thread_gru_torch) { threaded_matrix("gru_torch", NULL); }
Test(invariants, threaded_training_equals_one_thread_lstm) { threaded_matrix("lstm", NULL); }
Test(invariants, threaded_training_equals_one_thread_linear) { threaded_matrix("linear", NULL); }
Test(invariants, threaded_training_equals_one_thread_influence) { threaded_matrix("influence", NULL); }
Test(invariants, threaded_training_equals_one_thread_stack) { threaded_matrix("lstm", "lstm:8,gru:6"); }

/* What an accumulate-mode run reports: gradients, dL/dh0, per-step norms of
 * dL/dh_t, the factors used, the final state, the loss. */
typedef struct grad_report {
    bt_real grad[1024], dh0[2][5 * 4], state[2][5 * 4];
    double norms[13], xi[13], loss;
} grad_report;

/* One sequence of B = 5 rows in accumulate mode, on `threads` threads. */
static void grad_on_threads(const char *cell, const char *policy, int every, int threads,
                            grad_report *g)
{
    enum { B = 5, T = 13, V = 5, H = 4 };
    bt_rng r;
    bt_model *m = test_model(reg, cell, (bt_cell_dims){V, H, V}, 21, 0.6, &r);
    int32_t ids[B * T], tg[B * T];
    fill_tokens(ids, tg, B * T, V, &r);
    memset(g, 0, sizeof *g);
    bt_real *sp[2] = {g->state[0], g->state[1]}, *dp[2] = {g->dh0[0], g->dh0[1]};
    for (int k = 0; k < m->n_states; k++)
        for (int i = 0; i < B * H; i++)
            g->state[k][i] = (bt_real)(0.3 * bt_rng_normal(&r));
    char name[32];
    const char *opts;
    bt_split_spec(policy, name, sizeof name, &opts);
    const bt_policy_def *pd = bt_registry_policy(reg, name);
    void *ps = NULL;
    cr_assert_eq(bt_policy_create(pd, opts, &ps, err, sizeof err), BT_OK, "%s", err);
    bt_unroller *u;
    cr_assert_eq(bt_unroller_new(m, B, T, &u, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_unroller_set_threads(u, threads, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_unroller_threads(u), threads);
    bt_sequence seq = {.B = B, .T = T, .ids = ids, .targets = tg};
    bt_unroll_opts o = {.policy = pd, .policy_state = ps, .policy_seed = 7, .accumulate = true,
                        .want_dh0 = true, .want_dh_norms = true, .checkpoint_every = every};
    bt_unroll_result res;
    cr_assert_eq(bt_unroll_run(u, &seq, sp, &o, g->xi, dp, g->norms, &res, err, sizeof err),
                 BT_OK, "%s", err);
    g->loss = res.loss_sum;
    size_t P = bt_params_total(m->params);
    cr_assert_leq(P, 1024);
    memcpy(g->grad, bt_params_grad(m->params), sizeof(bt_real) * P);
    bt_unroller_free(u);
    pd->destroy(ps);
    bt_model_free(m);
}

static void expect_same_report(const grad_report *a, const grad_report *b, const char *what)
{
    expect_small(rel_diff(a->grad, b->grad, 1024), what, "gradients");
    expect_small(rel_diff(a->dh0[0], b->dh0[0], 2 * 5 * 4), what, "dL/dh0");
    expect_small(rel_diff(a->state[0], b->state[0], 2 * 5 * 4), what, "final states");
    double dn = 0, dx = 0;
    for (int s = 0; s < 13; s++) {
        dn = fmax(dn, fabs(a->norms[s] - b->norms[s]) / fmax(b->norms[s], 1e-30));
        dx = fmax(dx, fabs(a->xi[s] - b->xi[s]));
    }
    expect_small(dn, what, "norms of dL/dh_t");
    cr_expect_eq(dx, 0, "%s: the factors xi differ by %g", what, dx);
    expect_small(fabs(a->loss - b->loss) / fabs(b->loss), what, "losses");
}

Test(invariants, threaded_unroll_reports_the_one_thread_gradients)
{
    static grad_report one, many;
    const char *cells[] = {"rnn_tanh", "gru", "lstm"};
    worst_seen = 0;
    for (int c = 0; c < 3; c++)
        for (size_t p = 0; p < sizeof policies / sizeof *policies; p++) {
            grad_on_threads(cells[c], policies[p], 0, 1, &one);
            cr_assert_gt(fabs(one.grad[0]) + fabs(one.dh0[0][0]) + one.norms[0], 0);
            const int threads[] = {2, 3, 5}, everies[] = {0, 2, -1};
            for (int t = 0; t < 3; t++)
                for (int e = 0; e < 3; e++) {
                    grad_on_threads(cells[c], policies[p], everies[e], threads[t], &many);
                    char what[128];
                    snprintf(what, sizeof what, "%s %s, %d threads, checkpoint %d", cells[c],
                             policies[p], threads[t], everies[e]);
                    expect_same_report(&many, &one, what);
                }
        }
    cr_log_info("bt_unroll_run on 2, 3 and 5 threads vs one: worst relative difference %.3g",
                worst_seen);
}

Test(invariants, threads_are_refused_beyond_the_rows_and_with_dropout)
{
    bt_model *m;
    cr_assert_eq(bt_model_new(bt_registry_cell(reg, "rnn_tanh"), (bt_cell_dims){5, 4, 5}, &m, err,
                              sizeof err), BT_OK, "%s", err);
    bt_unroller *u;
    cr_assert_eq(bt_unroller_new(m, 3, 4, &u, err, sizeof err), BT_OK, "%s", err);
    cr_expect_eq(bt_unroller_set_threads(u, 4, err, sizeof err), BT_ERR_ARG);
    cr_expect(strstr(err, "4 threads for 3 rows"), "%s", err);
    cr_expect_eq(bt_unroller_set_threads(u, 0, err, sizeof err), BT_ERR_ARG);
    cr_expect_eq(bt_unroller_threads(u), 1);
    bt_unroller_free(u);
    bt_model_free(m);
    run r;
    run_new_layers(&r, "lstm", "lstm:8,gru:6", "full", 0, 0);
    bt_lm_free(r.lm);
    bt_lm_config c;
    bt_lm_config_default(&c);
    c.cell = "lstm";
    c.hidden = 8;
    c.batch = 3;
    c.steps = 20;
    c.dropout = 0.2;
    cr_assert_eq(bt_lm_new(reg, &c, &r.src, &r.lm, err, sizeof err), BT_OK, "%s", err);
    int lanes = 0;
    cr_expect_eq(bt_lm_set_threads(r.lm, 2, &lanes, err, sizeof err), BT_ERR_ARG);
    cr_expect(strstr(err, "--dropout 0.2 trains on one thread"), "%s", err);
    cr_expect_eq(lanes, 1);
    run_free(&r);
}

Test(invariants, a_threaded_steady_state_step_allocates_nothing)
{
    run r;
    run_new(&r, "lstm", "tbptt:3,7", -1, 0);
    int lanes = 0;
    cr_assert_eq(bt_lm_set_threads(r.lm, 2, &lanes, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_lm_train(r.lm, 2, NULL, err, sizeof err), BT_OK, "%s", err);
    uint64_t before = bt_alloc_count();
    cr_assert_eq(bt_lm_train(r.lm, 4, NULL, err, sizeof err), BT_OK, "%s", err); /* 2 more */
    cr_expect_eq(bt_alloc_count(), before, "two threaded epochs allocated %llu times",
                 (unsigned long long)(bt_alloc_count() - before));
    run_free(&r);
}
