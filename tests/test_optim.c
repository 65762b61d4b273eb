/* test_optim.c: the shipped optimizer plugins against their closed forms
 * (PyTorch's update rules, recomputed here in double over several steps), state
 * that survives a save/restore through the host buffers, option errors, and
 * global-norm gradient clipping. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "registry.h"

/* Float plugins round their state to float each step; the reference does not. */
#if BT_REAL_DOUBLE
#define TOL 1e-12
#else
#define TOL 2e-5
#endif
#define N 9 /* w [2,3] and b [3] */
#define STEPS 5

static char err[BT_ERRMSG_LEN];
static bt_registry *reg;

static void setup(void)
{
    err[0] = '\0';
    reg = bt_registry_new();
    const char *files[] = {"optim_sgd.so", "optim_momentum.so", "optim_adam.so"};
    for (int i = 0; i < 3; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", BT_BUILD_PLUGIN_DIR, files[i]);
        bt_status st = bt_registry_load(reg, path, err, sizeof err);
        cr_assert_eq(st, BT_OK, "%s", err);
    }
}

static void teardown(void) { bt_registry_free(reg); }

TestSuite(optim, .init = setup, .fini = teardown);

static bt_params *params_make(void)
{
    bt_params *p = bt_params_new();
    int w[2] = {2, 3}, b[1] = {3};
    cr_assert_not_null(bt_params_add(p, "w", 2, w));
    cr_assert_not_null(bt_params_add(p, "b", 1, b));
    cr_assert_eq(bt_params_finalize(p), BT_OK);
    cr_assert_eq(bt_params_total(p), (size_t)N);
    bt_real *d = bt_params_data(p);
    for (int i = 0; i < N; i++)
        d[i] = (bt_real)(0.5 * sin(i + 1.0));
    return p;
}

/* The gradient the test feeds at step t (1-based): varied in sign and size. */
static double grad_at(int i, int t) { return cos(0.7 * i + 1.3 * t) * (1 + 0.1 * i); }

static void grads_set(bt_params *p, int t)
{
    bt_real *g = bt_params_grad(p);
    for (int i = 0; i < N; i++)
        g[i] = (bt_real)grad_at(i, t);
}

static bt_optimizer *optim_make(const char *spec, bt_params *p)
{
    bt_optimizer *o = NULL;
    bt_status st = bt_optimizer_new(reg, spec, p, &o, err, sizeof err);
    cr_assert_eq(st, BT_OK, "%s: %s", spec, err);
    return o;
}

/* ---- closed forms (PyTorch) ------------------------------------------------------- */

typedef struct ref {
    enum { SGD, MOMENTUM, ADAM } kind;
    double lr, mu, wd, beta1, beta2, eps;
    bool nesterov;
    double p[N], s0[N], s1[N];
} ref;

static void ref_init(ref *r)
{
    for (int i = 0; i < N; i++) {
        r->p[i] = (double)(bt_real)(0.5 * sin(i + 1.0));
        r->s0[i] = r->s1[i] = 0;
    }
}

static void ref_step(ref *r, int t)
{
    for (int i = 0; i < N; i++) {
        double g = (double)(bt_real)grad_at(i, t);
        switch (r->kind) {
        case SGD:
            r->p[i] -= r->lr * (g + r->wd * r->p[i]);
            break;
        case MOMENTUM: {
            g += r->wd * r->p[i];
            r->s0[i] = t == 1 ? g : r->mu * r->s0[i] + g; /* torch: buf = g on the first step */
            double d = r->nesterov ? g + r->mu * r->s0[i] : r->s0[i];
            r->p[i] -= r->lr * d;
            break;
        }
        case ADAM: {
            r->p[i] *= 1 - r->lr * r->wd;
            r->s0[i] = r->beta1 * r->s0[i] + (1 - r->beta1) * g;
            r->s1[i] = r->beta2 * r->s1[i] + (1 - r->beta2) * g * g;
            double b1 = 1 - pow(r->beta1, t), b2 = 1 - pow(r->beta2, t);
            r->p[i] -= (r->lr / b1) * r->s0[i] / (sqrt(r->s1[i]) / sqrt(b2) + r->eps);
            break;
        }
        }
    }
}

static void expect_matches(const char *spec, ref *r)
{
    bt_params *p = params_make();
    bt_optimizer *o = optim_make(spec, p);
    ref_init(r);
    for (int t = 1; t <= STEPS; t++) {
        grads_set(p, t);
        bt_optimizer_step(o);
        ref_step(r, t);
        cr_assert_eq(bt_optimizer_steps(o), (uint64_t)t);
        double worst = 0;
        int at = 0;
        for (int i = 0; i < N; i++) {
            double d = fabs((double)bt_params_data(p)[i] - r->p[i]) / fmax(1e-3, fabs(r->p[i]));
            if (d > worst)
                worst = d, at = i;
        }
        cr_expect_leq(worst, TOL, "%s step %d: largest relative difference %.3g at %d: %.9g vs %.9g",
                      spec, t, worst, at, (double)bt_params_data(p)[at], r->p[at]);
        /* The gradients are the caller's: the step does not zero them. */
        cr_expect_eq(bt_params_grad(p)[0], (bt_real)grad_at(0, t));
    }
    bt_optimizer_free(o);
    bt_params_free(p);
}

Test(optim, sgd_matches_closed_form)
{
    ref r = {.kind = SGD, .lr = 0.05};
    expect_matches("sgd:lr=0.05", &r);
}

Test(optim, sgd_weight_decay_matches_closed_form)
{
    ref r = {.kind = SGD, .lr = 0.05, .wd = 0.1};
    expect_matches("sgd:0.05,weight_decay=0.1", &r);
}

Test(optim, momentum_matches_closed_form)
{
    ref r = {.kind = MOMENTUM, .lr = 0.05, .mu = 0.9};
    expect_matches("momentum:lr=0.05,mu=0.9", &r);
}

Test(optim, momentum_weight_decay_matches_closed_form)
{
    ref r = {.kind = MOMENTUM, .lr = 0.05, .mu = 0.8, .wd = 0.01};
    expect_matches("momentum:lr=0.05,mu=0.8,weight_decay=0.01", &r);
}

Test(optim, nesterov_matches_closed_form)
{
    ref r = {.kind = MOMENTUM, .lr = 0.03, .mu = 0.9, .nesterov = true, .wd = 0.02};
    expect_matches("momentum:0.03,nesterov=1,weight_decay=0.02", &r);
}

Test(optim, adam_matches_closed_form)
{
    ref r = {.kind = ADAM, .lr = 0.01, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
    expect_matches("adam:lr=0.01", &r);
}

Test(optim, adamw_weight_decay_matches_closed_form)
{
    ref r = {.kind = ADAM, .lr = 0.02, .beta1 = 0.8, .beta2 = 0.95, .eps = 1e-6, .wd = 0.1};
    expect_matches("adam:0.02,beta1=0.8,beta2=0.95,eps=1e-6,weight_decay=0.1", &r);
}

/* ---- state lives in host buffers ------------------------------------------------- */

/* Three steps, copy the state and step count out, rebuild, copy in, three more:
 * bit-for-bit the run that never stopped. */
static void expect_round_trip(const char *spec, int want_state)
{
    bt_params *a = params_make();
    bt_optimizer *oa = optim_make(spec, a);
    cr_assert_eq(bt_optimizer_state_count(oa), want_state);
    for (int i = 0; i < want_state; i++)
        for (int j = 0; j < N; j++)
            cr_assert_eq(bt_optimizer_state(oa, i)[j], 0, "state starts at zero");
    cr_expect_null(bt_optimizer_state(oa, want_state));
    for (int t = 1; t <= 6; t++) {
        grads_set(a, t);
        bt_optimizer_step(oa);
    }

    bt_params *b = params_make();
    bt_optimizer *ob = optim_make(spec, b);
    for (int t = 1; t <= 3; t++) {
        grads_set(b, t);
        bt_optimizer_step(ob);
    }
    bt_real saved_p[N], saved_s[4][N];
    uint64_t saved_steps = bt_optimizer_steps(ob);
    memcpy(saved_p, bt_params_data(b), sizeof saved_p);
    for (int i = 0; i < want_state; i++)
        memcpy(saved_s[i], bt_optimizer_state(ob, i), sizeof saved_s[i]);
    bt_optimizer_free(ob);
    bt_params_free(b);

    bt_params *c = params_make();
    memcpy(bt_params_data(c), saved_p, sizeof saved_p);
    bt_optimizer *oc = optim_make(spec, c);
    for (int i = 0; i < want_state; i++)
        memcpy(bt_optimizer_state(oc, i), saved_s[i], sizeof saved_s[i]);
    bt_optimizer_set_steps(oc, saved_steps);
    for (int t = 4; t <= 6; t++) {
        grads_set(c, t);
        bt_optimizer_step(oc);
    }
    cr_expect_eq(bt_optimizer_steps(oc), 6);
    cr_expect_eq(memcmp(bt_params_data(a), bt_params_data(c), N * sizeof(bt_real)), 0,
                 "%s: restored run differs from the uninterrupted one", spec);
    for (int i = 0; i < want_state; i++)
        cr_expect_eq(memcmp(bt_optimizer_state(oa, i), bt_optimizer_state(oc, i), N * sizeof(bt_real)),
                     0, "%s: state %d differs", spec, i);
    bt_optimizer_free(oa);
    bt_optimizer_free(oc);
    bt_params_free(a);
    bt_params_free(c);
}

Test(optim, sgd_state_round_trip) { expect_round_trip("sgd:0.1,weight_decay=0.01", 0); }
Test(optim, momentum_state_round_trip) { expect_round_trip("momentum:0.05,nesterov=1", 1); }
Test(optim, adam_state_round_trip) { expect_round_trip("adam:0.01,weight_decay=0.05", 2); }

Test(optim, describe_round_trips)
{
    const char *specs[] = {"sgd:0.1", "momentum:lr=0.3,nesterov=1", "adam:lr=0.002,beta2=0.98",
                           "adam"};
    const char *want[] = {"sgd:lr=0.1,weight_decay=0",
                          "momentum:lr=0.3,mu=0.9,nesterov=1,weight_decay=0",
                          "adam:lr=0.002,beta1=0.9,beta2=0.98,eps=1e-08,weight_decay=0",
                          "adam:lr=0.001,beta1=0.9,beta2=0.999,eps=1e-08,weight_decay=0"};
    bt_params *p = params_make();
    for (int i = 0; i < 4; i++) {
        bt_optimizer *o = optim_make(specs[i], p);
        char buf[256], again[256];
        cr_expect_str_eq(bt_optimizer_describe(o, buf, sizeof buf), want[i]);
        bt_optimizer *o2 = optim_make(buf, p);
        cr_expect_str_eq(bt_optimizer_describe(o2, again, sizeof again), buf);
        char name[BT_NAME_LEN];
        bt_split_spec(specs[i], name, sizeof name, NULL);
        cr_expect_str_eq(bt_optimizer_name(o), name);
        bt_optimizer_free(o);
        bt_optimizer_free(o2);
    }
    bt_params_free(p);
}

/* ---- bad options ------------------------------------------------------------------- */

static void expect_rejected(const char *spec, const char *needle)
{
    bt_params *p = params_make();
    bt_optimizer *o = NULL;
    bt_status st = bt_optimizer_new(reg, spec, p, &o, err, sizeof err);
    cr_expect_eq(st, BT_ERR_ARG, "%s accepted (%s)", spec, err);
    cr_expect_null(o);
    cr_expect(strstr(err, needle) != NULL, "%s: message lacks '%s': %s", spec, needle, err);
    bt_params_free(p);
}

Test(optim, bad_options_rejected)
{
    expect_rejected("adam:bta2=0.9", "optimizer adam: unknown option 'bta2' (known: lr, beta1, "
                                     "beta2, eps, weight_decay)");
    expect_rejected("sgd:lr=abc", "optimizer sgd: lr = 'abc' is not a number");
    expect_rejected("sgd:lr=-1", "value -1 for lr is outside");
    expect_rejected("momentum:nesterov=2", "nesterov");
    expect_rejected("momentum:nesterov=0.5", "nesterov = '0.5' is not an integer");
    expect_rejected("momentum:mu=0,nesterov=1", "nesterov=1 needs mu > 0");
    expect_rejected("adam:beta1=1", "beta1 must be below 1");
    expect_rejected("adam:0.1,0.2", "unexpected value '0.2'");
}

/* ---- clipping ------------------------------------------------------------------------ */

static double norm_of(const bt_real *g)
{
    double s = 0;
    for (int i = 0; i < N; i++)
        s += (double)g[i] * (double)g[i];
    return sqrt(s);
}

static double grad_norm(bt_params *p) { return norm_of(bt_params_grad(p)); }

Test(optim, clip_non_finite_gradient_skips_the_step)
{
    const double bad[] = {INFINITY, -INFINITY, NAN};
    for (int k = 0; k < 3; k++) {
        bt_params *p = params_make();
        bt_optimizer *o = optim_make("adam:0.1", p);
        grads_set(p, 1);
        bt_params_grad(p)[4] = (bt_real)bad[k];
        bt_real before_g[N], before_p[N];
        memcpy(before_g, bt_params_grad(p), sizeof before_g);
        memcpy(before_p, bt_params_data(p), sizeof before_p);
        double norm = 0;
        bt_status st = bt_clip_grad_norm(p, 1.0, &norm);
        cr_expect_eq(st, BT_ERR_NUMERIC, "gradient %g: %s", bad[k], bt_status_name(st));
        cr_expect(!isfinite(norm));
        cr_expect_eq(memcmp(before_g, bt_params_grad(p), sizeof before_g), 0,
                     "gradients touched");
        if (st == BT_OK) /* the caller's rule: a non-finite norm skips the step */
            bt_optimizer_step(o);
        cr_expect_eq(bt_optimizer_steps(o), 0);
        for (int i = 0; i < N; i++)
            cr_expect(isfinite(bt_params_data(p)[i]) && bt_params_data(p)[i] == before_p[i]);
        /* Disabled clipping still checks. */
        cr_expect_eq(bt_clip_grad_norm(p, 0, NULL), BT_ERR_NUMERIC);
        bt_optimizer_free(o);
        bt_params_free(p);
    }
}

Test(optim, clip_large_gradient_to_exactly_theta)
{
    bt_params *p = params_make();
    grads_set(p, 2);
    for (int i = 0; i < N; i++)
        bt_params_grad(p)[i] *= 1000;
    bt_real before[N];
    memcpy(before, bt_params_grad(p), sizeof before);
    double norm = 0, theta = 0.5;
    cr_assert_eq(bt_clip_grad_norm(p, theta, &norm), BT_OK);
    cr_expect_float_eq(norm, norm_of(before), 1e-9 * norm);
    double after = grad_norm(p);
    cr_expect_leq(fabs(after - theta) / theta, 1e-6, "norm after clipping %.9g, want %.9g", after, theta);
    /* Same direction. */
    for (int i = 0; i < N; i++)
        cr_expect_leq(fabs((double)bt_params_grad(p)[i] - (double)before[i] * theta / norm),
                      1e-6 * theta);
    bt_params_free(p);
}

Test(optim, clip_below_theta_is_untouched)
{
    bt_params *p = params_make();
    grads_set(p, 3);
    bt_real before[N];
    memcpy(before, bt_params_grad(p), sizeof before);
    double norm = 0;
    cr_assert_eq(bt_clip_grad_norm(p, 100, &norm), BT_OK);
    cr_expect_float_eq(norm, grad_norm(p), 1e-12);
    cr_expect_eq(memcmp(before, bt_params_grad(p), sizeof before), 0);
    cr_assert_eq(bt_clip_grad_norm(p, 0, &norm), BT_OK, "theta 0 disables clipping");
    cr_expect_eq(memcmp(before, bt_params_grad(p), sizeof before), 0);
    bt_params_free(p);
}

#if BT_REAL_DOUBLE
Test(optim, clip_huge_finite_gradient_is_not_infinite)
{
    bt_params *p = params_make();
    grads_set(p, 1);
    for (int i = 0; i < N; i++)
        bt_params_grad(p)[i] *= 1e200; /* squares overflow; the norm does not */
    double norm = 0;
    cr_assert_eq(bt_clip_grad_norm(p, 1.0, &norm), BT_OK);
    cr_expect(isfinite(norm) && norm > 1e199);
    cr_expect_leq(fabs(grad_norm(p) - 1.0), 1e-9);
    bt_params_free(p);
}
#endif

/* ---- the update on threads ------------------------------------------------------- */

#define BIG_ROWS 61
#define BIG_COLS 83 /* 5,063 values: blocks of 80, the last one short */

static bt_params *big_params(void)
{
    bt_params *p = bt_params_new();
    cr_assert_not_null(bt_params_add(p, "w", 2, (int[]){BIG_ROWS, BIG_COLS}));
    cr_assert_eq(bt_params_finalize(p), BT_OK);
    for (size_t i = 0; i < bt_params_total(p); i++)
        bt_params_data(p)[i] = (bt_real)(0.5 * sin((double)i + 1.0));
    return p;
}

static void big_grads(bt_params *p, int t)
{
    for (size_t i = 0; i < bt_params_total(p); i++)
        bt_params_grad(p)[i] = (bt_real)(cos(0.7 * (double)i + 1.3 * t) * (1 + 1e-3 * (double)i));
}

/* One run of `steps` updates with threads (0: the separate calls a caller made
 * before bt_optimizer_update: clip, step, zero); gradients non-finite at step
 * bad. Returns the norms' sum and leaves params and state in p and o. */
static double big_run(bt_params *p, bt_optimizer *o, int threads, int steps, int bad, double theta)
{
    double sum = 0;
    for (int t = 1; t <= steps; t++) {
        big_grads(p, t);
        if (t == bad)
            bt_params_grad(p)[4000] = (bt_real)NAN;
        double norm = 0;
        bt_status st;
        if (threads == 0) {
            st = bt_clip_grad_norm(p, theta, &norm);
            if (st == BT_OK)
                bt_optimizer_step(o);
            bt_params_zero_grad(p);
        } else
            st = bt_optimizer_update(o, theta, threads, &norm);
        cr_expect_eq(st, t == bad ? BT_ERR_NUMERIC : BT_OK, "step %d: %s", t, bt_status_name(st));
        sum += t == bad ? 0 : norm;
        for (size_t i = 0; i < bt_params_total(p); i++)
            cr_assert_eq(bt_params_grad(p)[i], 0, "gradient %zu not zeroed after step %d", i, t);
    }
    return sum;
}

/* Clipping (theta 192.27 clips steps 1 and 5, norms 192.29, and not 2 and 4,
 * 192.25), the step and the zeroing give the same bits on 1, 2 and 3 threads as the separate calls, and
 * a non-finite gradient (step 3) skips the step on every thread count. */
Test(optim, update_is_the_same_bits_on_any_thread_count)
{
    const char *specs[] = {"sgd:0.1", "momentum:0.05,nesterov=1", "adam:0.01,weight_decay=0.05"};
    for (int s = 0; s < 3; s++) {
        bt_params *ref = big_params();
        bt_optimizer *ro = optim_make(specs[s], ref);
        double want = big_run(ref, ro, 0, 5, 3, 192.27);
        for (int threads = 1; threads <= 3; threads++) {
            bt_params *p = big_params();
            bt_optimizer *o = optim_make(specs[s], p);
            double got = big_run(p, o, threads, 5, 3, 192.27);
            size_t n = bt_params_total(p);
            cr_expect_eq(got, want, "%s, %d threads: norms %.17g, want %.17g", specs[s], threads, got,
                         want);
            cr_expect_eq(bt_optimizer_steps(o), 4, "%s: %d steps", specs[s], (int)bt_optimizer_steps(o));
            cr_expect_eq(memcmp(bt_params_data(p), bt_params_data(ref), sizeof(bt_real) * n), 0,
                         "%s, %d threads: parameters differ", specs[s], threads);
            for (int i = 0; i < bt_optimizer_state_count(o); i++)
                cr_expect_eq(memcmp(bt_optimizer_state(o, i), bt_optimizer_state(ro, i),
                                    sizeof(bt_real) * n), 0,
                             "%s, %d threads: state %d differs", specs[s], threads, i);
            bt_optimizer_free(o);
            bt_params_free(p);
        }
        bt_optimizer_free(ro);
        bt_params_free(ref);
    }
}

/* Splitting the step over threads needs the flag, read only from a def whose
 * size covers it: a probe step writes the size of its call into its
 * parameters (tests/plugins/bad_plugin.c, PROBE_OPTIM). 5,063 values split
 * in 64 blocks of 80 (the last 23); 9 values fill one block and leave 63 empty,
 * which must not be called (the probe aborts on an empty call). */
Test(optim, only_elementwise_optimizers_are_split)
{
    char path[512];
    snprintf(path, sizeof path, "%s/probe_optim.so", BT_TEST_PLUGIN_DIR);
    cr_assert_eq(bt_registry_load(reg, path, err, sizeof err), BT_OK, "%s", err);
    const struct { const char *name; bool split; } cases[] = {
        {"probe_each", true}, {"probe_whole", false}, {"probe_old", false}};
    for (int c = 0; c < 3; c++)
        for (int big = 0; big < 2; big++) {
            bt_params *p = big ? big_params() : params_make();
            size_t n = bt_params_total(p);
            bt_optimizer *o = optim_make(cases[c].name, p);
            for (int threads = 1; threads <= 2; threads++) {
                double norm;
                for (size_t i = 0; i < n; i++)
                    bt_params_grad(p)[i] = 1;
                cr_assert_eq(bt_optimizer_update(o, 0, threads, &norm), BT_OK);
                bool split = cases[c].split && threads > 1;
                for (size_t i = 0; i < n; i++) {
                    double want = !split ? (double)n : !big ? 9 : i < 63 * 80 ? 80 : 23;
                    cr_assert_eq(bt_params_data(p)[i], want, "%s on %d threads, %zu values: "
                                 "parameter %zu saw a call of %g", cases[c].name, threads, n,
                                 i, (double)bt_params_data(p)[i]);
                }
            }
            bt_optimizer_free(o);
            bt_params_free(p);
        }
}
