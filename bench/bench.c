/* bench.c: bptt's side of the benchmark against PyTorch (bench/run.py drives
 * both). Each call measures one workload and prints one JSON line:
 *   step       the classic char-RNN training step: vocab 28, batch 32, 35 steps,
 *              tanh RNN, full BPTT inside the minibatch with the state carried
 *              and detached between minibatches, SGD lr 1, clip 1;
 *   fullbptt   one sequence of T steps (fresh zero state), hidden 256, batch 32;
 *   fullbptt --checkpoint-every C|-1: the same with the checkpointed unroller;
 *   ckptpair   fullbptt plain and checkpointed alternating in one process, and
 *              the median ratio of their times;
 *   threadpair the step on one thread and on --threads N alternating in one
 *              process, and the median ratio of their times;
 *   ckptcheck  the gradients of one T-step sequence, plain and checkpointed
 *              (sqrt T), and their largest difference relative to the largest
 *              gradient component.
 * Dimension letters: B batch, T steps, H hidden, V vocabulary. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bt_clock.h"
#include "corpus.h"
#include "unroll.h"

static double peak_rss_mb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

static double current_rss_mb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double mb = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            mb = atof(line + 6) / 1024.0;
    if (f)
        fclose(f);
    return mb;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static const char *arg(int argc, char **argv, const char *name, const char *def)
{
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return argv[i + 1];
    return def;
}

static void *policy_new(bt_registry *reg, const char *spec, const bt_policy_def **def)
{
    char name[32], err[256];
    const char *opts;
    bt_split_spec(spec, name, sizeof name, &opts);
    *def = bt_registry_policy(reg, name);
    void *state = NULL;
    if (!*def || bt_policy_create(*def, opts, &state, err, sizeof err) != BT_OK) {
        fprintf(stderr, "bench: policy %s: %s\n", spec, *def ? err : "not registered");
        exit(1);
    }
    return state;
}

/* The command line: mode and sizes. */
typedef struct bench_args {
    const char *mode, *data;
    int H, B, T, warmup, steps, every, threads;
    bool step_mode;
} bench_args;

static void fail(const char *err)
{
    fprintf(stderr, "bench: %s\n", err);
    exit(1);
}

/* Everything one workload runs on. */
typedef struct bench {
    bt_registry *reg;
    bt_model *m;
    bt_rng rng;
    int32_t *stream;  /* [n_tokens] */
    long n_tokens;
    bt_corpus *corpus;
    const bt_policy_def *pd;
    void *ps;
    bt_optimizer *opt;
    bt_unroller *u;
    bt_unroller *uc;  /* ckptpair's checkpointed runs, on a graph of their own */
    bt_real *h;       /* [B*H], the carried state */
    double rss_start;
} bench;

enum { V = 28 };

/* Plugins, an rnn_tanh model initialised N(0, 0.01^2), the token stream (the
 * text when given, in letters as the classic run, else uniform), full BPTT,
 * sgd and the unroller. */
static void bench_setup(bench *k, const bench_args *a)
{
    char err[2048] = "";
    k->rss_start = current_rss_mb();
    k->reg = bt_registry_new();
    if (bt_registry_load_default(k->reg, err, sizeof err) != BT_OK)
        fail(err);
    const bt_cell_def *cell = bt_registry_cell(k->reg, "rnn_tanh");
    if (!cell)
        fail("no cell rnn_tanh among the plugins: set BPTT_PLUGIN_PATH to a build's plugins "
             "folder (bench/run.py does)");
    if (bt_model_new(cell, (bt_cell_dims){V, a->H, V}, &k->m, err, sizeof err) != BT_OK)
        fail(err);
    bt_rng_seed(&k->rng, 1);
    bt_model_init(k->m, "normal:0.01", &k->rng, err, sizeof err);
    /* The long-sequence modes reuse one sequence. */
    k->n_tokens = (long)a->B * a->T * (a->step_mode ? a->warmup + a->steps + 1 : 1) + 1;
    k->stream = malloc(sizeof(int32_t) * (size_t)k->n_tokens);
    if (a->data && bt_corpus_load(a->data, BT_TOKENS_LETTERS, 0, &k->corpus, err, sizeof err) != BT_OK)
        fail(err);
    for (long i = 0; i < k->n_tokens; i++)
        k->stream[i] = k->corpus ? k->corpus->ids[i % k->corpus->n]
                                 : (int32_t)(bt_rng_next(&k->rng) % V);
    k->ps = policy_new(k->reg, "full", &k->pd);
    if (bt_optimizer_new(k->reg, a->step_mode ? "sgd:lr=1" : "sgd:lr=0", k->m->params, &k->opt, err,
                         sizeof err) != BT_OK)
        fail(err);
    if (bt_unroller_new(k->m, a->B, a->T, &k->u, err, sizeof err) != BT_OK)
        fail(err);
    if (strcmp(a->mode, "ckptpair") == 0 &&
        bt_unroller_new(k->m, a->B, a->T, &k->uc, err, sizeof err) != BT_OK)
        fail(err);
    /* --threads N > 1: the rows split over N threads (as `bptt train --threads`),
     * each product on one BLAS thread. */
    if (a->threads > 1) {
        if (bt_unroller_set_threads(k->u, a->threads, err, sizeof err) != BT_OK ||
            (k->uc && bt_unroller_set_threads(k->uc, a->threads, err, sizeof err) != BT_OK))
            fail(err);
        bt_blas_set_threads(1);
    }
    k->h = calloc((size_t)a->B * a->H, sizeof(bt_real));
}

static void bench_free(bench *k)
{
    free(k->h);
    free(k->stream);
    bt_corpus_free(k->corpus);
    bt_unroller_free(k->u);
    bt_unroller_free(k->uc);
    bt_optimizer_free(k->opt);
    k->pd->destroy(k->ps);
    bt_model_free(k->m);
    bt_registry_free(k->reg);
}

/* ckptcheck: one sequence's gradients plain and checkpointed, and their difference. */
static void run_ckptcheck(bench *k, const bench_args *a)
{
    int B = a->B, T = a->T;
    char err[2048] = "";
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)B * T), *tg = malloc(sizeof(int32_t) * (size_t)B * T);
    size_t P = bt_params_total(k->m->params);
    bt_real *plain = malloc(sizeof(bt_real) * P), *hp[1] = {k->h};
    for (long i = 0; i < (long)B * T; i++) {
        ids[i] = k->stream[i % (k->n_tokens - 1)];
        tg[i] = k->stream[(i + 1) % (k->n_tokens - 1)];
    }
    bt_sequence seq = {.B = B, .T = T, .ids = ids, .targets = tg};
    double worst = 0, scale = 0, secs[2];
    for (int c = 0; c < 2; c++) {
        memset(k->h, 0, sizeof(bt_real) * (size_t)B * a->H);
        bt_params_zero_grad(k->m->params);
        bt_unroll_opts o = {.policy = k->pd, .policy_state = k->ps, .accumulate = true,
                            .checkpoint_every = c ? -1 : 0};
        bt_unroll_result res;
        double t0 = bt_monotonic_s();
        if (bt_unroll_run(k->u, &seq, hp, &o, NULL, NULL, NULL, &res, err, sizeof err) != BT_OK)
            fail(err);
        secs[c] = bt_monotonic_s() - t0;
        const bt_real *g = bt_params_grad(k->m->params);
        for (size_t i = 0; i < P; i++) {
            if (c == 0) {
                plain[i] = g[i];
                scale = fmax(scale, fabs((double)g[i]));
            } else
                worst = fmax(worst, fabs((double)g[i] - (double)plain[i]));
        }
    }
    printf("{\"impl\": \"bptt\", \"mode\": \"ckptcheck\", \"hidden\": %d, \"T\": %d, "
           "\"max_abs_diff\": %.3g, \"max_rel_diff\": %.3g, \"plain_s\": %.2f, \"ckpt_s\": %.2f, "
           "\"precision\": \"%s\"}\n", a->H, T, worst, scale > 0 ? worst / scale : worst, secs[0],
           secs[1], BT_REAL_DOUBLE ? "double" : "float");
    free(ids);
    free(tg);
    free(plain);
}

/* Runs minibatch `it` (step mode: row b continues row b of the previous one;
 * fullbptt: the same sequence from a zero state) with checkpoint spacing
 * `every`; its wall and CPU seconds, the arena it used and (untaped, may be
 * NULL) the wall seconds of its forward passes without a tape and their steps. */
static void time_window(bench *k, const bench_args *a, int it, int every, int32_t *X, int32_t *Y,
                        double *wall, double *cpu, size_t *arena, double *untaped)
{
    int B = a->B, T = a->T, n = a->warmup + a->steps;
    char err[2048] = "";
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            long pos = a->step_mode ? ((long)b * n + it) * T + t : (long)b * T + t;
            X[b * T + t] = k->stream[pos % (k->n_tokens - 1)];
            Y[b * T + t] = k->stream[(pos + 1) % (k->n_tokens - 1)];
        }
    if (!a->step_mode)
        memset(k->h, 0, sizeof(bt_real) * (size_t)B * a->H);
    bt_real *hp[1] = {k->h};
    bt_sequence seq = {.B = B, .T = T, .ids = X, .targets = Y};
    bt_unroll_opts o = {.policy = k->pd, .policy_state = k->ps, .optimizer = k->opt, .clip = 1,
                        .checkpoint_every = every};
    bt_unroll_result res;
    double t0 = bt_monotonic_s(), c0 = bt_process_cpu_s();
    bt_unroller *u = every && k->uc ? k->uc : k->u;
    if (bt_unroll_run(u, &seq, hp, &o, NULL, NULL, NULL, &res, err, sizeof err) != BT_OK)
        fail(err);
    *wall = bt_monotonic_s() - t0;
    *cpu = bt_process_cpu_s() - c0;
    if (res.peak_arena > *arena)
        *arena = res.peak_arena;
    if (untaped) {
        untaped[0] = res.untaped_s;
        untaped[1] = (double)res.untaped_steps;
    }
}

/* step and fullbptt: warmup + steps timed unroller runs; the median and the spread. */
static void run_timed(bench *k, const bench_args *a)
{
    int B = a->B, T = a->T, steps = a->steps, warmup = a->warmup;
    int32_t *X = malloc(sizeof(int32_t) * (size_t)B * T), *Y = malloc(sizeof(int32_t) * (size_t)B * T);
    double *times = malloc(sizeof(double) * 2 * (size_t)(steps > 0 ? steps : 1)), *cpu = times + steps;
    size_t peak_arena = 0;
    double rss_before = current_rss_mb(), untaped_s = 0, untaped_steps = 0;
    for (int it = 0; it < warmup + steps; it++) {
        double dt, dc, untaped[2];
        time_window(k, a, it, a->every, X, Y, &dt, &dc, &peak_arena, untaped);
        if (it >= warmup) {
            times[it - warmup] = dt;
            cpu[it - warmup] = dc;
            untaped_s += untaped[0];
            untaped_steps += untaped[1];
        }
    }
    qsort(times, (size_t)steps, sizeof *times, cmp_double);
    qsort(cpu, (size_t)steps, sizeof *cpu, cmp_double);
    double med = times[steps / 2], tok = (double)B * T;
    bt_blas_info bi;
    bt_blas_info_get(&bi);
    printf("{\"impl\": \"bptt\", \"mode\": \"%s\", \"hidden\": %d, \"batch\": %d, \"T\": %d, "
           "\"checkpoint_every\": %d, \"tokens_per_s\": %.1f, \"tokens_per_s_min\": %.1f, "
           "\"tokens_per_s_max\": %.1f, \"us_per_token\": %.3f, \"peak_rss_mb\": %.1f, "
           "\"rss_start_mb\": %.1f, \"rss_growth_mb\": %.2f, \"window_arena_mb\": %.3f, "
           "\"arena_kb_per_step\": %.2f, \"tokens_per_cpu_s\": %.1f, \"us_cpu_per_token\": %.3f, "
           "\"untaped_us_per_step\": %.3f, "
           "\"blas\": \"%s\", \"kernel\": \"%s\", \"threads\": %d, \"row_threads\": %d, "
           "\"precision\": \"%s\"}\n",
           a->mode, a->H, B, T, a->every, tok / med, tok / times[steps - 1], tok / times[0],
           med / tok * 1e6, peak_rss_mb(), k->rss_start, peak_rss_mb() - rss_before,
           (double)peak_arena / 1048576.0, (double)peak_arena / 1024.0 / T, tok / cpu[steps / 2],
           cpu[steps / 2] / tok * 1e6, untaped_steps > 0 ? untaped_s / untaped_steps * 1e6 : 0,
           bi.library, bi.kernel, bi.threads,
           bt_unroller_threads(k->u), BT_REAL_DOUBLE ? "double" : "float");
    free(times);
    free(X);
    free(Y);
}

static double median(double *x, int n)
{
    qsort(x, (size_t)n, sizeof *x, cmp_double);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

/* ckptpair: plain and checkpointed (spacing --checkpoint-every, default sqrt T)
 * full BPTT of the same sequence from a zero state in one process, alternating
 * which goes first, so that both see the same machine; the ratio is the median
 * of each pair's ratio (CPU time, and wall clock). Beside it, the median of
 * 1 + (the checkpointed run's untaped forward pass) / (plain's time), wall
 * clock: the ratio were the rest of the checkpointed run exactly as fast as
 * plain (it can be faster, its stretch in cache). The warm-up pairs pay the
 * page faults. (SGD runs with lr 0, so the weights stay as they are.) The
 * checkpointed runs have an unroller, so a graph and arena, of their own, as
 * a checkpointed training run has: on the plain run's they would work in
 * what its window left (at T = 100,000 a 3.1 GB lane and 1,250 chunks). */
static void run_pair(bench *k, const bench_args *a)
{
    int B = a->B, T = a->T, n = a->steps;
    int every = a->every ? a->every : -1;
    int32_t *X = malloc(sizeof(int32_t) * (size_t)B * T), *Y = malloc(sizeof(int32_t) * (size_t)B * T);
    double *v = malloc(sizeof(double) * 8 * (size_t)(n > 0 ? n : 1));
    double *pc = v, *cc = v + n, *rc = v + 2 * n, *rw = v + 3 * n, *pw = v + 4 * n, *cw = v + 5 * n;
    double *uw = v + 6 * n, *fw = v + 7 * n;
    size_t arena[2] = {0, 0};
    for (int it = 0; it < a->warmup + n; it++) {
        double wall[2], cpu[2], untaped[2] = {0, 0};
        for (int j = 0; j < 2; j++) {
            /* 0 plain, 1 checkpointed; who goes first alternates, plain first in
             * the first measured pair (it - warmup has the parity of it + warmup) */
            int c = (it + a->warmup + j) % 2;
            time_window(k, a, 0, c ? every : 0, X, Y, &wall[c], &cpu[c], &arena[c],
                        c ? untaped : NULL);
        }
        int i = it - a->warmup;
        double us = untaped[1] > 0 ? untaped[0] / untaped[1] * 1e6 : 0;
        double plain_pass = 1 + untaped[0] / wall[0]; /* the ratio were the rest as fast as plain */
        if (i >= 0) {
            pc[i] = cpu[0], cc[i] = cpu[1], pw[i] = wall[0], cw[i] = wall[1];
            rc[i] = cpu[1] / cpu[0], rw[i] = wall[1] / wall[0];
            uw[i] = us, fw[i] = plain_pass;
        }
        fprintf(stderr, "bench: T = %d, pair %d of %d%s: checkpointed/plain %.3f (CPU), %.3f (wall); "
                "untaped pass %.2f us/step, 1 + its time / plain's %.3f\n", T, it + 1,
                a->warmup + n, i < 0 ? " (warm-up)" : "", cpu[1] / cpu[0], wall[1] / wall[0], us,
                plain_pass);
    }
    double tok = (double)B * T, ratio = median(rc, n); /* sorts rc: min and max follow */
    bt_blas_info bi;
    bt_blas_info_get(&bi);
    printf("{\"impl\": \"bptt\", \"mode\": \"ckptpair\", \"hidden\": %d, \"batch\": %d, "
           "\"T\": %d, \"checkpoint_every\": %d, \"pairs\": %d, \"plain_us_cpu_per_token\": %.3f, "
           "\"ckpt_us_cpu_per_token\": %.3f, \"plain_us_per_token\": %.3f, "
           "\"ckpt_us_per_token\": %.3f, \"ratio_cpu\": %.4f, \"ratio_wall\": %.4f, "
           "\"ratio_cpu_min\": %.4f, \"ratio_cpu_max\": %.4f, \"plain_arena_mb\": %.3f, "
           "\"ckpt_arena_mb\": %.3f, \"untaped_us_per_step\": %.3f, \"untaped_ratio_wall\": %.4f, "
           "\"peak_rss_mb\": %.1f, \"blas\": \"%s\", \"kernel\": \"%s\", \"precision\": \"%s\"}\n",
           a->H, B, T, every, n, median(pc, n) / tok * 1e6, median(cc, n) / tok * 1e6,
           median(pw, n) / tok * 1e6, median(cw, n) / tok * 1e6, ratio, median(rw, n),
           rc[0], rc[n - 1], (double)arena[0] / 1048576.0, (double)arena[1] / 1048576.0,
           median(uw, n), median(fw, n), peak_rss_mb(), bi.library, bi.kernel, BT_REAL_DOUBLE ? "double" : "float");
    free(v);
    free(X);
    free(Y);
}

/* threadpair: the classic step on one thread and on --threads N, two models
 * trained side by side in one process, alternating in rounds of `group`
 * windows each (sized in the warm-up so that a round's one-thread half takes
 * at least 0.25 s), which goes first alternating; the speedup is the median
 * of the rounds' wall-clock ratios, so a stretch of time when the machine
 * gives us less (seen here: 2-thread runs of 68k and 109k tokens/s back to
 * back) moves a few rounds, not the figure. Each round's rates go to stderr.
 * The windows of both models read the stream from the start and wrap around
 * it (rows then reread text other rows saw: the same work, for timing). */
static void run_threadpair(bench *one, bench *many, const bench_args *a)
{
    int B = a->B, T = a->T, n = a->steps, group = 1, it[2] = {0, 0};
    int32_t *X = malloc(sizeof(int32_t) * (size_t)B * T), *Y = malloc(sizeof(int32_t) * (size_t)B * T);
    double *v = malloc(sizeof(double) * 4 * (size_t)n), *sp = v, *w1 = v + n, *wn = v + 2 * n,
           *un = v + 3 * n, tok = (double)B * T;
    bench *k[2] = {one, many};
    size_t arena = 0;
    /* One thread must mean one inside oneDNN and OpenBLAS too (they would take
     * OMP_NUM_THREADS); the lanes ask for their own N threads. */
    bt_blas_set_threads(1);
    for (int r = 0; r < a->warmup + n; r++) {
        double wall[2] = {0, 0}, cpu[2] = {0, 0}, wins = group; /* this round's windows */
        for (int j = 0; j < 2; j++) {
            int c = (r + a->warmup + j) % 2; /* 0: one thread; first in the first measured round */
            for (int g = 0; g < group; g++) {
                double dt, dc;
                time_window(k[c], a, it[c]++, 0, X, Y, &dt, &dc, &arena, NULL);
                wall[c] += dt, cpu[c] += dc;
            }
        }
        int i = r - a->warmup;
        if (i >= 0)
            sp[i] = wall[0] / wall[1], w1[i] = wall[0] / wins, wn[i] = wall[1] / wins,
            un[i] = cpu[1] / wall[1];
        else if (wall[0] < 0.25) /* warm-up: windows per round for 0.25 s on one thread */
            group = (int)ceil(0.25 / (wall[0] / wins));
        fprintf(stderr, "bench: hidden %d, round %d of %d%s: %d threads / 1 = %.3f (wall), "
                "1 thread %.0f tok/s, %d threads %.0f tok/s, cpu/wall %.2f\n", a->H, r + 1,
                a->warmup + n, i < 0 ? " (warm-up)" : "", a->threads, wall[0] / wall[1],
                tok * wins / wall[0], a->threads, tok * wins / wall[1], cpu[1] / wall[1]);
    }
    double speedup = median(sp, n); /* sorts sp: min and max follow */
    printf("{\"impl\": \"bptt\", \"mode\": \"threadpair\", \"hidden\": %d, \"batch\": %d, "
           "\"T\": %d, \"threads\": %d, \"rounds\": %d, \"windows_per_round\": %d, "
           "\"speedup\": %.4f, \"speedup_min\": %.4f, \"speedup_max\": %.4f, "
           "\"one_tokens_per_s\": %.1f, \"many_tokens_per_s\": %.1f, \"many_cpu_per_wall\": %.2f, "
           "\"precision\": \"%s\"}\n",
           a->H, B, T, a->threads, n, group, speedup, sp[0], sp[n - 1], tok / median(w1, n),
           tok / median(wn, n), median(un, n), BT_REAL_DOUBLE ? "double" : "float");
    free(v);
    free(X);
    free(Y);
}

int main(int argc, char **argv)
{
    bench_args a = {
        .mode = argc > 1 ? argv[1] : "step",
        .data = arg(argc, argv, "--data", NULL),
        .H = atoi(arg(argc, argv, "--hidden", "512")),
        .B = atoi(arg(argc, argv, "--batch", "32")),
        .T = atoi(arg(argc, argv, "--steps-per-seq", "35")),
        .warmup = atoi(arg(argc, argv, "--warmup", "10")),
        .steps = atoi(arg(argc, argv, "--steps", "50")),
        .every = atoi(arg(argc, argv, "--checkpoint-every", "0")),
        .threads = atoi(arg(argc, argv, "--threads", "1")),
    };
    if (strcmp(a.mode, "step") && strcmp(a.mode, "fullbptt") && strcmp(a.mode, "ckptcheck") &&
        strcmp(a.mode, "ckptpair") && strcmp(a.mode, "threadpair")) {
        fprintf(stderr, "usage: bench step|fullbptt|ckptcheck|ckptpair|threadpair [--hidden H] [--batch B] [--steps-per-seq T] "
                        "[--warmup N] [--steps N] [--checkpoint-every C|-1] [--threads N] "
                        "[--data FILE]\n");
        return 2;
    }
    if (a.steps < 1 || a.warmup < 0 || a.H < 1 || a.B < 1 || a.T < 1) {
        fprintf(stderr, "bench: --steps, --hidden, --batch and --steps-per-seq need at least 1, "
                        "--warmup at least 0\n");
        return 2;
    }
    a.step_mode = strcmp(a.mode, "step") == 0 || strcmp(a.mode, "threadpair") == 0;
    if (strcmp(a.mode, "threadpair") == 0 && (a.threads < 2 || a.warmup < 1)) {
        fprintf(stderr, "bench: threadpair needs --threads 2 or more and --warmup 1 or more (the "
                        "warm-up sizes its rounds)\n");
        return 2;
    }
    bench k = {0};
    bench_setup(&k, &a);
    if (strcmp(a.mode, "threadpair") == 0) {
        bench_args a1 = a;
        a1.threads = 1;
        bench one = {0};
        bench_setup(&one, &a1);
        run_threadpair(&one, &k, &a);
        bench_free(&one);
    } else if (strcmp(a.mode, "ckptcheck") == 0)
        run_ckptcheck(&k, &a);
    else if (strcmp(a.mode, "ckptpair") == 0)
        run_pair(&k, &a);
    else
        run_timed(&k, &a);
    bench_free(&k);
    return 0;
}
