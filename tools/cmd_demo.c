/* cmd_demo.c: `bptt demo`, a tour in well under a minute with no files needed:
 * (1) influence balancing, where a short truncation walks theta the wrong way
 * while full and (unbiased) random truncation converge; (2) the gradient norm
 * against lag for contracting and expanding recurrent matrices; (3) a short
 * char-level training on an embedded text under full, fixed and random
 * truncation. Tables, sentences computed from the numbers, and SVG figures. */
#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "analysis_report.h"
#include "generate.h"
#include "lm.h"
#include "svg.h"
#include "tasks.h"
#include "text_source.h"
#include "cli.h"

#define CMD "demo"

extern const char bt_demo_text[];
extern const size_t bt_demo_text_len;

static const cli_option options[] = {
    {"out", "DIR", "where the figures go (default bptt-demo)"},
    CLI_PLUGIN_OPTION,
    {NULL, NULL, NULL},
};

const cli_command cmd_demo_spec = {
    .name = "demo",
    .summary = "a one-minute tour: truncation bias, gradient norms, char-level training",
    .usage = "[--out DIR] [--plugin PATH]",
    .about = "Three short experiments (about ten seconds on two cores), with figures in DIR:\n"
             "  1. influence balancing (Tallec & Ollivier): truncated BPTT moves the parameter\n"
             "     the wrong way; full and random (unbiased) truncation converge;\n"
             "  2. the gradient one loss sends back k steps, for spectral radius 0.8 and 1.2;\n"
             "  3. a char-level RNN trained on an embedded public-domain text under full,\n"
             "     fixed and random truncation.",
    .options = {options},
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const char *path_in(const char *dir, const char *name)
{
    static char buf[4][1024];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s/%s", dir, name);
    return buf[i];
}

/* ---- 1. influence balancing ------------------------------------------------------ */

enum { INF_N = 23, INF_P = 10, INF_LEN = 200, INF_SEQS = 50 }; /* 10,000 steps of one stream */
#define INF_LR_STEP 5e-5 /* per step of loss: the unroller weighs each step 1/INF_LEN */

/* theta at the start (0, the cell's init) and after every sequence of the
 * stream (progress hook); the loss of the last sequence. */
typedef struct trace {
    bt_lm *lm;
    double step[INF_SEQS + 1], theta[INF_SEQS + 1], loss;
    int n;
} trace;

static void trace_add(void *ctx, const bt_lm_progress *p)
{
    trace *t = ctx;
    if (t->n <= INF_SEQS) {
        t->step[t->n] = (double)p->batch * INF_LEN;
        t->theta[t->n++] = (double)bt_lm_model(t->lm)->ptab[0]->data[0];
    }
    t->loss = p->batch_loss;
}

static bool influence_part(const bt_registry *reg, const char *dir)
{
    const char *policies[] = {"full", "fixed:1", "random:0.97"};
    enum { NP = 3 };
    trace tr[NP] = {{.n = 1}, {.n = 1}, {.n = 1}};
    double loss[NP], secs[NP];
    int updates[NP];
    char err[1024] = "", spec[64];
    snprintf(spec, sizeof spec, "influence:%d,%d,len=%d,batches=%d", INF_N, INF_P, INF_LEN,
             INF_SEQS);
    /* s[0] in the long run is 2 (2P - N) theta: the loss 0.5 (s[0] - 1)^2 wants theta*. */
    double longrun = 2.0 * (2 * INF_P - INF_N), opt = 1.0 / longrun;
    printf("\n== 1. influence balancing (%s; Tallec & Ollivier, UORO paper) ==\n", spec);
    printf("s' = A s + theta*(+1 x %d, -1 x %d): one step of theta moves s[0] by +theta, the long\n"
           "run by %+.0f theta, so the optimum is theta* = %.4f. %d steps of one stream, sequences\n"
           "of %d, sgd %g per step of loss (lr %g over a sequence's mean), theta starts at 0.\n",
           INF_P, INF_N - INF_P, longrun, opt, INF_SEQS * INF_LEN, INF_LEN, INF_LR_STEP,
           INF_LR_STEP * INF_LEN);
    bool ok = true;
    for (int i = 0; i < NP && ok; i++) {
        /* One epoch of the task is the stream: the state carries between its sequences. */
        bt_lm_config cfg;
        bt_lm_config_default(&cfg);
        snprintf(cfg.cell, sizeof cfg.cell, "influence");
        cfg.hidden = INF_N;
        cfg.batch = 1;
        cfg.steps = INF_LEN;
        cfg.clip = 0;
        cfg.seed = 1;
        snprintf(cfg.optimizer, sizeof cfg.optimizer, "sgd:lr=%g", INF_LR_STEP * INF_LEN);
        snprintf(cfg.truncation, sizeof cfg.truncation, "%s", policies[i]);
        bt_source src = {0};
        double t0 = now();
        ok = bt_task_source_new(spec, 1, 1, &src, err, sizeof err) == BT_OK &&
             bt_lm_new(reg, &cfg, &src, &tr[i].lm, err, sizeof err) == BT_OK &&
             bt_lm_train(tr[i].lm, 1, &(bt_lm_hooks){.progress = trace_add, .ctx = &tr[i]}, err,
                         sizeof err) == BT_OK;
        secs[i] = now() - t0;
        loss[i] = tr[i].loss;
        updates[i] = tr[i].lm ? (int)bt_lm_updates(tr[i].lm) : 0;
        bt_lm_free(tr[i].lm);
        bt_source_free(&src);
        if (!ok)
            cli_fail(CMD, "influence balancing under %s: %s", policies[i], err);
        else
            printf("  [%d/%d] %-12s %5d updates, theta %+.4f, loss %.3g (%.2f s)\n", i + 1, NP,
                   policies[i], updates[i], tr[i].theta[tr[i].n - 1], loss[i], secs[i]);
    }
    if (ok) {
        printf("\n  %-12s %8s %12s %12s %12s\n", "truncation", "updates", "final theta", "|theta-theta*|",
               "final loss");
        for (int i = 0; i < NP; i++) {
            double th = tr[i].n ? tr[i].theta[tr[i].n - 1] : 0;
            printf("  %-12s %8d %+12.4f %12.4g %12.3g\n", policies[i], updates[i], th, fabs(th - opt),
                   loss[i]);
        }
        printf("\n");
        for (int i = 0; i < NP; i++) {
            double th = tr[i].n ? tr[i].theta[tr[i].n - 1] : 0;
            bool toward = fabs(th - opt) < fabs(opt);
            if (fabs(th - opt) < 0.01 * fabs(opt) + 1e-3)
                printf("  %s brought theta from 0 to %+.4f, within %.2g of theta* = %+.4f (loss %.2g).\n",
                       policies[i], th, fabs(th - opt), opt, loss[i]);
            else
                printf("  %s moved theta from 0 to %+.4f, %s theta* = %+.4f (loss %.3g)%s\n",
                       policies[i], th, toward ? "toward" : "away from", opt, loss[i],
                       toward ? "." : ":\n    its gradient sees only the short-term effect of "
                                      "theta, whose sign is the wrong one.");
        }
        bt_plot *p = bt_plot_new("influence balancing: theta during training", "stream step",
                                 "theta");
        for (int i = 0; i < NP; i++)
            bt_plot_line(p, policies[i], tr[i].step, tr[i].theta, tr[i].n);
        bt_plot_hline(p, "optimum theta*", opt);
        const char *path = path_in(dir, "influence.svg");
        if (bt_plot_write(p, path, err, sizeof err) != BT_OK) {
            cli_fail(CMD, "%s", err);
            ok = false;
        } else
            printf("  figure: %s\n", path);
        bt_plot_free(p);
    }
    return ok;
}

/* ---- 2. gradient norm against lag ------------------------------------------------- */

static bool lag_part(const bt_registry *reg, const char *dir)
{
    enum { H = 32, K = 40, B = 4, NC = 4 };
    const struct { const char *cell, *init; } cfg[NC] = {
        {"linear", "spectral:0.8"}, {"linear", "spectral:1.2"},
        {"rnn_tanh", "spectral:0.8"}, {"rnn_tanh", "spectral:1.2"},
    };
    printf("\n== 2. the gradient one loss sends back k steps (hidden %d, lags 0..%d) ==\n", H, K);
    printf("  %-9s %-13s %8s %10s %14s\n", "cell", "init", "radius", "rate/step",
           "ratio at lag K");
    double ratio[NC][K + 1], rate[NC], radius[NC];
    bool ok = true;
    char err[1024] = "";
    for (int c = 0; c < NC && ok; c++) {
        const bt_cell_def *def = bt_registry_cell(reg, cfg[c].cell);
        bool tokens = def && def->input == BT_INPUT_TOKENS;
        bt_model *m = NULL;
        bt_rng rng;
        bt_rng_seed(&rng, 7);
        bt_sequence seq = {0};
        bt_analysis a = {0};
        ok = def && bt_model_new(def, (bt_cell_dims){tokens ? 16 : 4, H, tokens ? 16 : 2}, &m, err,
                                 sizeof err) == BT_OK &&
             bt_model_init(m, cfg[c].init, &rng, err, sizeof err) == BT_OK &&
             bt_probe_sequence_new(m, B, K + 1, &rng, &seq) == BT_OK &&
             bt_analysis_run(m, &seq, NULL, K, 0, 7, &a, err, sizeof err) == BT_OK;
        if (!ok)
            cli_fail(CMD, "%s %s: %s", cfg[c].cell, cfg[c].init, def ? err : "cell not registered");
        else {
            for (int k = 0; k <= K; k++)
                ratio[c][k] = a.grad_norm[k] / a.grad_norm[0];
            rate[c] = a.grad_rate;
            radius[c] = a.radius;
            printf("  %-9s %-13s %8.3g %10.4g %14.3g\n", cfg[c].cell, cfg[c].init, a.radius, a.grad_rate,
                   ratio[c][K]);
            if (c == 1) {
                const char *path = path_in(dir, "analyze-linear-spectral-1.2.svg");
                if (cli_analysis_svg(&a, "bptt analyze: linear, hidden 32, init spectral:1.2", path,
                                    err, sizeof err) != BT_OK) {
                    cli_fail(CMD, "%s", err);
                    ok = false;
                }
            }
        }
        bt_analysis_free(&a);
        bt_probe_sequence_free(&seq);
        bt_model_free(m);
    }
    if (!ok)
        return false;
    printf("\n");
    for (int c = 0; c < NC; c++)
        printf("  %s with spectral radius %.2g: the gradient %s by a factor of about %.3g per step, "
               "%.3g after %d steps.\n",
               cfg[c].cell, radius[c], rate[c] < 1 ? "shrinks" : "grows",
               rate[c] < 1 ? 1 / rate[c] : rate[c], ratio[c][K], K);
    if (rate[3] < rate[1])
        printf("  tanh's slope 1 - h^2 <= 1 damps the expanding matrix: rnn_tanh at radius %.2g "
               "changes by %.3g per step where linear changes by %.3g.\n",
               radius[3], rate[3], rate[1]);
    bt_plot *p = bt_plot_new("gradient sent back k steps", "lag k",
                             "||dL_T/dh_{T-k}|| / ||dL_T/dh_T||");
    bt_plot_set_logy(p, true);
    for (int c = 0; c < NC; c++) {
        char label[64];
        snprintf(label, sizeof label, "%s %s", cfg[c].cell, cfg[c].init);
        bt_plot_line(p, label, NULL, ratio[c], K + 1);
    }
    const char *path = path_in(dir, "lags.svg");
    ok = bt_plot_write(p, path, err, sizeof err) == BT_OK;
    bt_plot_free(p);
    if (!ok)
        return cli_fail(CMD, "%s", err), false;
    printf("  figures: %s, %s\n", path, path_in(dir, "analyze-linear-spectral-1.2.svg"));
    return true;
}

/* ---- 3. char-level training ----------------------------------------------------------- */

static bool text_part(const bt_registry *reg, const char *dir)
{
    enum { NS = 3, EPOCHS = 60, HIDDEN = 128 };
    const char *strategies[NS] = {"full", "fixed:4", "random:0.75"};
    printf("\n== 3. char-level RNN on an embedded text (%zu characters of Alice in Wonderland, "
           "chapter I) ==\n", bt_demo_text_len);
    printf("rnn_tanh, hidden %d, batch 8 x 32 steps, state carried, sgd lr 1, clip 1, %d epochs;\n"
           "the last 10%% of the text is held out for validation.\n", HIDDEN, EPOCHS);
    char err[1024] = "";
    bt_corpus *corpus = NULL;
    if (bt_corpus_from_string(bt_demo_text, bt_demo_text_len, BT_TOKENS_CHARS, 0, &corpus, err,
                              sizeof err) != BT_OK)
        return cli_fail(CMD, "%s", err), false;
    double val[NS][EPOCHS], epochs_x[EPOCHS], train_ppl[NS], val_ppl[NS], secs[NS];
    int updates[NS];
    char *sample[NS] = {NULL};
    bool ok = true;
    for (int e = 0; e < EPOCHS; e++)
        epochs_x[e] = e + 1;
    for (int s = 0; s < NS && ok; s++) {
        bt_lm_config cfg;
        bt_lm_config_default(&cfg);
        cfg.hidden = HIDDEN;
        cfg.batch = 8;
        cfg.steps = 32;
        cfg.val_fraction = 0.1;
        snprintf(cfg.truncation, sizeof cfg.truncation, "%s", strategies[s]);
        bt_source src = {0};
        bt_lm *lm = NULL;
        double t0 = now();
        ok = bt_text_source_new(corpus, cfg.batch, cfg.steps, cfg.sampling, cfg.val_fraction, &src,
                                err, sizeof err) == BT_OK &&
             bt_lm_new(reg, &cfg, &src, &lm, err, sizeof err) == BT_OK &&
             bt_lm_train(lm, EPOCHS, NULL, err, sizeof err) == BT_OK;
        secs[s] = now() - t0;
        if (ok) {
            const bt_lm_epoch *h;
            int n = bt_lm_history(lm, &h);
            for (int e = 0; e < EPOCHS; e++)
                val[s][e] = e < n ? h[e].val_ppl : NAN;
            train_ppl[s] = n ? h[n - 1].train_ppl : NAN;
            val_ppl[s] = n ? h[n - 1].val_ppl : NAN;
            updates[s] = (int)bt_lm_updates(lm);
            /* What the model writes, greedily, after the text's first words. */
            char gerr[256];
            if (bt_generate_text(bt_lm_model(lm), corpus->vocab, "Alice was ", 70, 0, 1, &sample[s],
                                 gerr, sizeof gerr) != BT_OK)
                sample[s] = NULL;
            printf("  [%d/%d] %-12s %4d updates, train ppl %.2f, validation ppl %.2f (%.2f s)\n",
                   s + 1, NS, strategies[s], updates[s], train_ppl[s], val_ppl[s], secs[s]);
        } else
            cli_fail(CMD, "training under %s: %s", strategies[s], err);
        bt_lm_free(lm);
        bt_source_free(&src);
    }
    bt_corpus_free(corpus);
    if (!ok)
        return false;
    printf("\n  %-12s %8s %10s %10s %8s\n", "truncation", "updates", "train ppl", "val ppl", "seconds");
    int best = 0;
    for (int s = 0; s < NS; s++) {
        printf("  %-12s %8d %10.2f %10.2f %8.2f\n", strategies[s], updates[s], train_ppl[s],
               val_ppl[s], secs[s]);
        if (val_ppl[s] < val_ppl[best])
            best = s;
    }
    printf("\n  After %d epochs %s has the lowest validation perplexity (%.2f; ", EPOCHS,
           strategies[best], val_ppl[best]);
    for (int s = 0, first = 1; s < NS; s++)
        if (s != best) {
            printf("%s%s %.2f", first ? "" : ", ", strategies[s], val_ppl[s]);
            first = 0;
        }
    printf(").\n");
    if (best != 0 && updates[best] > updates[0])
        printf("  %s made %.1fx as many updates as full in the same time budget of epochs: on a "
               "text this short,\n  more frequent updates mattered more than gradients that reach "
               "further back.\n", strategies[best], (double)updates[best] / updates[0]);
    else if (best == 0)
        printf("  full made the fewest updates (%d) and still reads the held-out text best: its "
               "gradients reach\n  back over the whole %d-step minibatch.\n", updates[0], 32);
    for (int s = 0; s < NS; s++)
        if (sample[s]) {
            for (char *c = sample[s]; *c; c++)
                if (*c == '\n')
                    *c = ' ';
            printf("  %-12s writes: \"%s\"\n", strategies[s], sample[s]);
            bt_free(sample[s]);
        }
    bt_plot *p = bt_plot_new("char-level RNN: validation perplexity", "epoch", "perplexity");
    for (int s = 0; s < NS; s++)
        bt_plot_line(p, strategies[s], epochs_x, val[s], EPOCHS);
    const char *path = path_in(dir, "text.svg");
    ok = bt_plot_write(p, path, err, sizeof err) == BT_OK;
    bt_plot_free(p);
    if (!ok)
        return cli_fail(CMD, "%s", err), false;
    printf("  figure: %s\n", path);
    return true;
}

static bool read_options(cli_args *a, void *out)
{
    const char *dir = cli_get(a, "out");
    *(const char **)out = dir ? dir : "bptt-demo";
    return true;
}

int cmd_demo(int argc, char **argv)
{
    const char *out;
    bt_registry *reg;
    int rc;
    if (!cli_begin(&cmd_demo_spec, argc, argv, read_options, &out, &reg, &rc))
        return rc;
    rc = 1;
    struct stat sb;
    if (mkdir(out, 0777) != 0 && (errno != EEXIST || stat(out, &sb) != 0 || !S_ISDIR(sb.st_mode))) {
        cli_fail(CMD, "cannot create --out %s: %s", out,
                 errno == EEXIST ? "a file of that name is in the way" : strerror(errno));
        goto done;
    }
    double t0 = now();
    printf("bptt demo: three short experiments; figures go to %s/\n", out);
    if (!influence_part(reg, out) || !lag_part(reg, out) || !text_part(reg, out))
        goto done;
    printf("\ndemo finished in %.1f s; figures in %s/: influence.svg, lags.svg, "
           "analyze-linear-spectral-1.2.svg, text.svg\n", now() - t0, out);
    rc = 0;
done:
    bt_registry_free(reg);
    return rc;
}
