/* bench.c: bptt's side of the benchmark against PyTorch (bench/run.py drives
 * both). Each call measures one workload and prints one JSON line:
 *   step       the classic char-RNN training step: vocab 28, batch 32, 35 steps,
 *              tanh RNN, full BPTT inside the minibatch with the state carried
 *              and detached between minibatches, SGD lr 1, clip 1;
 *   fullbptt   one sequence of T steps (fresh zero state), hidden 256, batch 32;
 *   fullbptt --checkpoint-every C|-1: the same with the checkpointed unroller;
 *   ckptcheck  the gradients of one T-step sequence, plain and checkpointed
 *              (sqrt T), and their largest difference relative to the largest
 *              gradient component.
 * Dimension letters: B batch, T steps, H hidden, V vocabulary. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "corpus.h"
#include "unroll.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

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

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "step";
    int H = atoi(arg(argc, argv, "--hidden", "512"));
    int B = atoi(arg(argc, argv, "--batch", "32"));
    int T = atoi(arg(argc, argv, "--steps-per-seq", "35"));
    int warmup = atoi(arg(argc, argv, "--warmup", "10"));
    int steps = atoi(arg(argc, argv, "--steps", "50"));
    int every = atoi(arg(argc, argv, "--checkpoint-every", "0"));
    if (strcmp(mode, "step") && strcmp(mode, "fullbptt") && strcmp(mode, "ckptcheck")) {
        fprintf(stderr, "usage: bench step|fullbptt|ckptcheck [--hidden H] [--batch B] [--steps-per-seq T] "
                        "[--warmup N] [--steps N] [--checkpoint-every C|-1] [--data FILE]\n");
        return 2;
    }
    const char *data = arg(argc, argv, "--data", NULL);
    const int V = 28;
    char err[2048] = "";

    double rss_start = current_rss_mb();
    bt_registry *reg = bt_registry_new();
    if (bt_registry_load_default(reg, err, sizeof err) != BT_OK) {
        fprintf(stderr, "bench: %s\n", err);
        return 1;
    }
    const bt_cell_def *cell = bt_registry_cell(reg, "rnn_tanh");
    bt_model *m;
    if (!cell || bt_model_new(cell, (bt_cell_dims){V, H, V}, &m, err, sizeof err) != BT_OK) {
        fprintf(stderr, "bench: %s\n", err);
        return 1;
    }
    bt_rng rng;
    bt_rng_seed(&rng, 1);
    bt_model_init(m, "normal:0.01", &rng, err, sizeof err);

    /* Tokens: the text when given (letters, as the classic run), else uniform.
     * The long-sequence modes reuse one sequence. */
    bool step_mode = strcmp(mode, "step") == 0;
    long n_tokens = (long)B * T * (step_mode ? warmup + steps + 1 : 1) + 1;
    int32_t *stream = malloc(sizeof(int32_t) * (size_t)n_tokens);
    bt_corpus *corpus = NULL;
    if (data && bt_corpus_load(data, BT_TOKENS_LETTERS, 0, &corpus, err, sizeof err) != BT_OK) {
        fprintf(stderr, "bench: %s\n", err);
        return 1;
    }
    for (long i = 0; i < n_tokens; i++)
        stream[i] = corpus ? corpus->ids[i % corpus->n] : (int32_t)(bt_rng_next(&rng) % V);

    const bt_policy_def *pd;
    void *ps = policy_new(reg, "full", &pd);
    bt_optimizer *opt = NULL;
    if (bt_optimizer_new(reg, step_mode ? "sgd:lr=1" : "sgd:lr=0", m->params, &opt, err, sizeof err) != BT_OK) {
        fprintf(stderr, "bench: %s\n", err);
        return 1;
    }
    bt_unroller *u;
    if (bt_unroller_new(m, B, T, &u, err, sizeof err) != BT_OK)
        return 1;
    bt_real *h = calloc((size_t)B * H, sizeof(bt_real));
    bt_real *hp[1] = {h};
    if (strcmp(mode, "ckptcheck") == 0) {
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)B * T), *tg = malloc(sizeof(int32_t) * (size_t)B * T);
        size_t P = bt_params_total(m->params);
        bt_real *plain = malloc(sizeof(bt_real) * P);
        for (long i = 0; i < (long)B * T; i++) {
            ids[i] = stream[i % (n_tokens - 1)];
            tg[i] = stream[(i + 1) % (n_tokens - 1)];
        }
        bt_sequence seq = {.B = B, .T = T, .ids = ids, .targets = tg};
        double worst = 0, scale = 0, secs[2];
        for (int k = 0; k < 2; k++) {
            memset(h, 0, sizeof(bt_real) * (size_t)B * H);
            bt_params_zero_grad(m->params);
            bt_unroll_opts o = {.policy = pd, .policy_state = ps, .accumulate = true,
                                .checkpoint_every = k ? -1 : 0};
            bt_unroll_result res;
            double t0 = now();
            if (bt_unroll_run(u, &seq, hp, &o, NULL, NULL, NULL, &res, err, sizeof err) != BT_OK) {
                fprintf(stderr, "bench: %s\n", err);
                return 1;
            }
            secs[k] = now() - t0;
            const bt_real *g = bt_params_grad(m->params);
            for (size_t i = 0; i < P; i++) {
                if (k == 0) {
                    plain[i] = g[i];
                    scale = fmax(scale, fabs((double)g[i]));
                } else
                    worst = fmax(worst, fabs((double)g[i] - (double)plain[i]));
            }
        }
        printf("{\"impl\": \"bptt\", \"mode\": \"ckptcheck\", \"hidden\": %d, \"T\": %d, "
               "\"max_abs_diff\": %.3g, \"max_rel_diff\": %.3g, \"plain_s\": %.2f, \"ckpt_s\": %.2f, "
               "\"precision\": \"%s\"}\n", H, T, worst, scale > 0 ? worst / scale : worst, secs[0],
               secs[1], BT_REAL_DOUBLE ? "double" : "float");
        free(ids); free(tg); free(plain);
        return 0;
    }
    int32_t *X = malloc(sizeof(int32_t) * (size_t)B * T), *Y = malloc(sizeof(int32_t) * (size_t)B * T);
    double *times = malloc(sizeof(double) * (size_t)(steps > 0 ? steps : 1));
    bt_unroll_result res;
    size_t peak_arena = 0;
    double rss_before = current_rss_mb();
    for (int it = 0; it < warmup + steps; it++) {
        /* Row b of minibatch `it` continues row b of the previous one. */
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) {
                long pos = step_mode ? ((long)b * (warmup + steps) + it) * T + t : (long)b * T + t;
                X[b * T + t] = stream[pos % (n_tokens - 1)];
                Y[b * T + t] = stream[(pos + 1) % (n_tokens - 1)];
            }
        if (!step_mode)
            memset(h, 0, sizeof(bt_real) * (size_t)B * H);
        bt_sequence seq = {.B = B, .T = T, .ids = X, .targets = Y};
        bt_unroll_opts o = {.policy = pd, .policy_state = ps, .optimizer = opt, .clip = 1,
                            .checkpoint_every = every};
        double t0 = now();
        if (bt_unroll_run(u, &seq, hp, &o, NULL, NULL, NULL, &res, err, sizeof err) != BT_OK) {
            fprintf(stderr, "bench: %s\n", err);
            return 1;
        }
        double dt = now() - t0;
        if (res.peak_arena > peak_arena)
            peak_arena = res.peak_arena;
        if (it >= warmup)
            times[it - warmup] = dt;
    }
    qsort(times, (size_t)steps, sizeof *times, cmp_double);
    double med = times[steps / 2], tok = (double)B * T;
    printf("{\"impl\": \"bptt\", \"mode\": \"%s\", \"hidden\": %d, \"batch\": %d, \"T\": %d, "
           "\"checkpoint_every\": %d, \"tokens_per_s\": %.1f, \"tokens_per_s_min\": %.1f, "
           "\"tokens_per_s_max\": %.1f, \"us_per_token\": %.3f, \"peak_rss_mb\": %.1f, "
           "\"rss_start_mb\": %.1f, \"rss_growth_mb\": %.2f, \"window_arena_mb\": %.3f, "
           "\"arena_kb_per_step\": %.2f, \"precision\": \"%s\"}\n",
           mode, H, B, T, every, tok / med, tok / times[steps - 1], tok / times[0], med / tok * 1e6,
           peak_rss_mb(), rss_start, peak_rss_mb() - rss_before, (double)peak_arena / 1048576.0,
           (double)peak_arena / 1024.0 / T, BT_REAL_DOUBLE ? "double" : "float");
    free(times); free(X); free(Y); free(h); free(stream);
    bt_corpus_free(corpus);
    bt_unroller_free(u);
    bt_optimizer_free(opt);
    pd->destroy(ps);
    bt_model_free(m);
    bt_registry_free(reg);
    return 0;
}
