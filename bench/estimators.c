/* estimators.c: time and memory per step of the gradient methods of issue
 * 16 side by side: full BPTT over T and T_long steps, truncated BPTT
 * (tbptt:10,20), random truncation (random:0.9) over T_long steps, and the
 * online estimators uoro and rtrl (docs/estimators.md), on the tanh RNN with
 * a 28-letter vocabulary (accumulate mode: the gradients of one sequence,
 * parameters fixed). Methods alternate round by round, so a busy machine
 * slows them alike; the figure is the median over rounds of the process's
 * CPU time per step (set OPENBLAS_NUM_THREADS=1: one thread's CPU time is
 * its time). Memory is what each method holds for the sequence beyond the
 * model: the estimator's state and the largest step arena (graph,
 * activations, tangents), or the unroller's largest window arena.
 *
 *   estimators [--hidden 16,64,256] [--batch 1] [--rounds 5] [--rtrl-max-hidden 256]
 *              [--steps-rtrl 4] [--steps 100] [--steps-long 1000]
 *
 * Prints a table, then one JSON line per (method, hidden) on stderr.
 * Dimension letters: B batch, T steps, H hidden, V vocabulary, S = B H, P parameters. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bt_clock.h"
#include "online.h"

enum { V = 28, MAX_H = 16, N_METHODS = 6 };

static void fail(const char *what, const char *err)
{
    fprintf(stderr, "estimators: %s: %s\n", what, err);
    exit(1);
}

static const char *arg(int argc, char **argv, const char *name, const char *def)
{
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return argv[i + 1];
    return def;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One hidden size: the model, a random sequence, the three methods' runners. */
typedef struct bench_h {
    int H, B, T[N_METHODS];
    bt_model *m;
    int32_t *ids, *tg;
    bt_real *h;
    bt_unroller *u;
    const bt_policy_def *pd[N_METHODS];
    void *ps[N_METHODS];
    bt_estimator *est[N_METHODS];
    bt_online *on;
    double *secs[N_METHODS]; /* per round: seconds per step */
    size_t bytes[N_METHODS];
    size_t P;
} bench_h;

/* Policies on the unroller first, then the online estimators. */
static const char *const method_name[N_METHODS] = {"full BPTT", "full BPTT", "tbptt:10,20",
                                                   "random:0.9", "uoro", "rtrl"};
static const char *const method_spec[N_METHODS] = {"full", "full", "tbptt:10,20", "random:0.9",
                                                   "uoro", "rtrl,max_mb=100000"};
enum { FIRST_ONLINE = 4 };

/* The policies' states, on one unroller sized for the longest sequence. */
static void setup_policies(bench_h *b, bt_registry *reg, int t_long)
{
    char err[2048] = "", name[BT_NAME_LEN + 1];
    for (int k = 0; k < FIRST_ONLINE; k++) {
        const char *opts;
        bt_split_spec(method_spec[k], name, sizeof name, &opts);
        b->pd[k] = bt_registry_policy(reg, name);
        if (!b->pd[k] || bt_policy_create(b->pd[k], opts, &b->ps[k], err, sizeof err) != BT_OK)
            fail(method_spec[k], err);
    }
    if (bt_unroller_new(b->m, b->B, t_long, &b->u, err, sizeof err) != BT_OK)
        fail("unroller", err);
}

static void setup(bench_h *b, bt_registry *reg, int H, int B, int rounds, int t_full, int t_long,
                  int t_rtrl, bool with_rtrl)
{
    char err[2048] = "";
    memset(b, 0, sizeof *b);
    b->H = H, b->B = B;
    b->T[0] = t_full, b->T[1] = t_long, b->T[2] = t_long, b->T[3] = t_long;
    b->T[4] = t_full, b->T[5] = with_rtrl ? t_rtrl : 0;
    const bt_cell_def *cell = bt_registry_cell(reg, "rnn_tanh");
    if (!cell || bt_model_new(cell, (bt_cell_dims){V, H, V}, &b->m, err, sizeof err) != BT_OK)
        fail("model", err);
    bt_rng rng;
    bt_rng_seed(&rng, 1);
    if (bt_model_init(b->m, "normal:0.1", &rng, err, sizeof err) != BT_OK)
        fail("init", err);
    b->P = bt_params_total(b->m->params);
    b->ids = malloc(sizeof(int32_t) * (size_t)B * t_long);
    b->tg = malloc(sizeof(int32_t) * (size_t)B * t_long);
    for (int i = 0; i < B * t_long; i++) {
        b->ids[i] = (int32_t)(bt_rng_next(&rng) % V);
        b->tg[i] = (int32_t)(bt_rng_next(&rng) % V);
    }
    b->h = calloc((size_t)B * H, sizeof(bt_real));
    setup_policies(b, reg, t_long);
    for (int k = FIRST_ONLINE; k < N_METHODS; k++)
        if (b->T[k] && bt_estimator_new(reg, method_spec[k], b->m, B, false, &b->est[k], err,
                                        sizeof err) != BT_OK)
            fail(method_spec[k], err);
    if (bt_online_new(b->m, B, &b->on, err, sizeof err) != BT_OK)
        fail("online", err);
    for (int k = 0; k < N_METHODS; k++)
        b->secs[k] = calloc((size_t)rounds, sizeof(double));
}

static void teardown(bench_h *b)
{
    for (int k = 0; k < N_METHODS; k++) {
        bt_estimator_free(b->est[k]);
        free(b->secs[k]);
    }
    bt_online_free(b->on);
    bt_unroller_free(b->u);
    for (int k = 0; k < FIRST_ONLINE; k++)
        b->pd[k]->destroy(b->ps[k]);
    bt_model_free(b->m);
    free(b->ids), free(b->tg), free(b->h);
}

/* One timed run of method k over its T steps: seconds per step; the memory
 * it held into b->bytes[k]. */
static double run_once(bench_h *b, int k)
{
    char err[2048] = "";
    bt_sequence seq = {.B = b->B, .T = b->T[k], .ids = b->ids, .targets = b->tg};
    bt_real *hp[1] = {b->h};
    memset(b->h, 0, sizeof(bt_real) * (size_t)b->B * b->H);
    bt_unroll_result res;
    double t0 = bt_process_cpu_s();
    if (k < FIRST_ONLINE) {
        bt_unroll_opts o = {.policy = b->pd[k], .policy_state = b->ps[k], .policy_seed = 1,
                            .accumulate = true};
        bt_params_zero_grad(b->m->params);
        if (bt_unroll_run(b->u, &seq, hp, &o, NULL, NULL, NULL, &res, err, sizeof err) != BT_OK)
            fail("full BPTT", err);
    } else {
        bt_online_opts o = {.estimator = b->est[k], .begin = true, .seed = 1, .accumulate = true};
        if (bt_online_run(b->on, &seq, hp, &o, NULL, &res, err, sizeof err) != BT_OK)
            fail(method_name[k], err);
    }
    double secs = (bt_process_cpu_s() - t0) / b->T[k];
    b->bytes[k] = res.peak_arena + (b->est[k] ? bt_estimator_bytes(b->est[k]) : 0);
    return secs;
}

static void report(const bench_h *b, int rounds)
{
    for (int k = 0; k < N_METHODS; k++) {
        if (!b->T[k])
            continue;
        double s[64];
        memcpy(s, b->secs[k], sizeof(double) * (size_t)rounds);
        qsort(s, (size_t)rounds, sizeof(double), cmp_double);
        double med = s[rounds / 2];
        printf("%-11s H=%-4d B=%d P=%-7zu T=%-4d  %10.3f ms/step (rounds %.3f..%.3f)  %10.3f MB\n",
               method_name[k], b->H, b->B, b->P, b->T[k], 1e3 * med, 1e3 * s[0],
               1e3 * s[rounds - 1], (double)b->bytes[k] / 1048576.0);
        fprintf(stderr, "{\"method\": \"%s\", \"hidden\": %d, \"batch\": %d, \"P\": %zu, "
                "\"T\": %d, \"ms_per_step\": %.4f, \"ms_min\": %.4f, \"ms_max\": %.4f, "
                "\"mb\": %.4f, \"precision\": \"%s\"}\n", method_name[k], b->H, b->B, b->P,
                b->T[k], 1e3 * med, 1e3 * s[0], 1e3 * s[rounds - 1],
                (double)b->bytes[k] / 1048576.0, BT_REAL_DOUBLE ? "double" : "float");
    }
}

int main(int argc, char **argv)
{
    int hs[MAX_H], nh = 0;
    char list[256];
    snprintf(list, sizeof list, "%s", arg(argc, argv, "--hidden", "16,64,256"));
    for (char *p = strtok(list, ","); p && nh < MAX_H; p = strtok(NULL, ","))
        hs[nh++] = atoi(p);
    int B = atoi(arg(argc, argv, "--batch", "1"));
    int rounds = atoi(arg(argc, argv, "--rounds", "5"));
    int rtrl_max = atoi(arg(argc, argv, "--rtrl-max-hidden", "256"));
    int t_rtrl = atoi(arg(argc, argv, "--steps-rtrl", "4"));
    int t_full = atoi(arg(argc, argv, "--steps", "100"));
    int t_long = atoi(arg(argc, argv, "--steps-long", "1000"));
    if (rounds < 1 || rounds > 64 || B < 1 || t_rtrl < 1 || t_full < t_rtrl || t_long < t_full)
        fail("arguments", "rounds 1..64, batch >= 1, 1 <= steps-rtrl <= steps <= steps-long");
    char err[2048] = "";
    bt_registry *reg = bt_registry_new();
    if (bt_registry_load_default(reg, err, sizeof err) != BT_OK)
        fail("plugins", err);
    printf("CPU time per step, median of %d alternating rounds (rnn_tanh, V=%d, %s; the machine "
           "may be shared: compare within one run)\n", rounds, V, BT_REAL_DOUBLE ? "double" : "float");
    for (int i = 0; i < nh; i++) {
        bench_h b;
        setup(&b, reg, hs[i], B, rounds, t_full, t_long, t_rtrl, hs[i] <= rtrl_max);
        for (int k = 0; k < N_METHODS; k++) /* warm-up: arenas and caches */
            if (b.T[k])
                run_once(&b, k);
        for (int r = 0; r < rounds; r++)
            for (int k = 0; k < N_METHODS; k++)
                if (b.T[k])
                    b.secs[k][r] = run_once(&b, k);
        report(&b, rounds);
        teardown(&b);
    }
    bt_registry_free(reg);
    return 0;
}
