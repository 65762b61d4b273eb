/* cmd_demo.c: `bptt demo`, a tour in about 4 s of CPU time with no files needed:
 * (1) influence balancing, where a short truncation walks theta the wrong way
 * while full and (unbiased) random truncation converge, as do the online
 * estimators rtrl and uoro; (2) the gradient norm against lag for contracting
 * and expanding recurrent matrices; (3) a short char-level training on an
 * embedded text under full, fixed and random truncation. Tables, sentences computed from the numbers, and SVG figures. */
#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

#include "analysis_report.h"
#include "bt_clock.h"
#include "compare.h"
#include "generate.h"
#include "lm.h"
#include "paths.h"
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
    .summary = "truncation bias, gradient norms, char RNN (about 4 s of CPU time)",
    .usage = "[--out DIR] [--plugin PATH]",
    .about = "Three short experiments (about 4 s of CPU time; longer on a busy machine), with\n"
             "figures in DIR:\n"
             "  1. influence balancing (Tallec & Ollivier): truncated BPTT moves the parameter\n"
             "     the wrong way; full and random (unbiased) truncation converge, and so do\n"
             "     the online estimators rtrl and uoro;\n"
             "  2. the gradient one loss sends back k steps, for spectral radius 0.8 and 1.2;\n"
             "  3. a char-level RNN trained on an embedded public-domain text under full,\n"
             "     fixed and random truncation.",
    .options = {options},
};

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

/* Truncation policies, then online estimators (an sgd step after every time
 * step, at half BPTT's rate per step of loss: uoro's noisy estimate diverges
 * at the full rate). */
static const char *const inf_policies[] = {"full", "fixed:1", "random:0.97", "rtrl", "uoro"};
enum { INF_NP = 5, INF_FIRST_ESTIMATOR = 3 };
#define INF_LR_ONLINE (INF_LR_STEP / 2)

static double inf_lr(int i) { return i >= INF_FIRST_ESTIMATOR ? INF_LR_ONLINE : INF_LR_STEP; }

/* One pass over the stream under policy i, theta traced; false with the message printed. */
static bool influence_run(const bt_registry *reg, const char *spec, int i, trace *tr,
                          double *secs, int *updates)
{
    /* One epoch of the task is the stream: the state carries between its sequences. */
    bt_lm_config cfg;
    bt_lm_config_default(&cfg);
    char optimizer[64];
    snprintf(optimizer, sizeof optimizer, "sgd:lr=%g", inf_lr(i) * INF_LEN);
    cfg.cell = "influence";
    cfg.hidden = INF_N;
    cfg.batch = 1;
    cfg.steps = INF_LEN;
    cfg.clip = 0;
    cfg.seed = 1;
    cfg.optimizer = optimizer;
    if (i >= INF_FIRST_ESTIMATOR)
        cfg.estimator = inf_policies[i];
    else
        cfg.truncation = inf_policies[i];
    bt_source src = {0};
    char err[1024] = "";
    double t0 = bt_monotonic_s();
    bool ok = bt_task_source_new(spec, 1, 1, &src, err, sizeof err) == BT_OK &&
              bt_lm_new(reg, &cfg, &src, &tr->lm, err, sizeof err) == BT_OK &&
              bt_lm_train(tr->lm, 1, &(bt_lm_hooks){.progress = trace_add, .ctx = tr}, err,
                          sizeof err) == BT_OK;
    *secs = bt_monotonic_s() - t0;
    *updates = tr->lm ? (int)bt_lm_updates(tr->lm) : 0;
    bt_lm_free(tr->lm);
    bt_source_free(&src);
    if (!ok)
        cli_fail(CMD, "influence balancing under %s: %s", inf_policies[i], err);
    else
        printf("  [%d/%d] %-12s %5d updates, theta %+.4f, loss %.3g (%.2f s)\n", i + 1, INF_NP,
               inf_policies[i], *updates, tr->theta[tr->n - 1], tr->loss, *secs);
    return ok;
}

/* The table of final thetas and a sentence per policy on where it went. */
static void influence_report(const trace *tr, const int *updates, double opt)
{
    printf("\n  %-12s %8s %8s %12s %12s %12s\n", "gradient", "sgd/step", "updates",
           "final theta", "|theta-theta*|", "final loss");
    for (int i = 0; i < INF_NP; i++) {
        double th = tr[i].n ? tr[i].theta[tr[i].n - 1] : 0;
        printf("  %-12s %8.2g %8d %+12.4f %12.4g %12.3g\n", inf_policies[i], inf_lr(i),
               updates[i], th, fabs(th - opt), tr[i].loss);
    }
    printf("\n");
    for (int i = 0; i < INF_NP; i++) {
        double th = tr[i].n ? tr[i].theta[tr[i].n - 1] : 0;
        bool toward = fabs(th - opt) < fabs(opt);
        if (fabs(th - opt) < 0.01 * fabs(opt) + 1e-3)
            printf("  %s brought theta from 0 to %+.4f, within %.2g of theta* = %+.4f (loss %.2g).\n",
                   inf_policies[i], th, fabs(th - opt), opt, tr[i].loss);
        else
            printf("  %s moved theta from 0 to %+.4f, %s theta* = %+.4f (loss %.3g)%s\n",
                   inf_policies[i], th, toward ? "toward" : "away from", opt, tr[i].loss,
                   toward ? "." : ":\n    its gradient sees only the short-term effect of "
                                  "theta, whose sign is the wrong one.");
    }
}

static bool influence_part(const bt_registry *reg, const char *dir)
{
    trace tr[INF_NP] = {{.n = 1}, {.n = 1}, {.n = 1}, {.n = 1}, {.n = 1}};
    double secs[INF_NP];
    int updates[INF_NP];
    char err[1024] = "", spec[64];
    snprintf(spec, sizeof spec, "influence:%d,%d,len=%d,batches=%d", INF_N, INF_P, INF_LEN,
             INF_SEQS);
    /* s[0] in the long run is 2 (2P - N) theta: the loss 0.5 (s[0] - 1)^2 wants theta*. */
    double longrun = 2.0 * (2 * INF_P - INF_N), opt = 1.0 / longrun;
    printf("\n== 1. influence balancing (%s; Tallec & Ollivier, UORO paper) ==\n", spec);
    printf("s' = A s + theta*(+1 x %d, -1 x %d): one step of theta moves s[0] by +theta, the long\n"
           "run by %+.0f theta, so the optimum is theta* = %.4f. %d steps of one stream, sequences\n"
           "of %d, sgd %g per step of loss (lr %g over a sequence's mean), theta starts at 0.\n"
           "BPTT updates once per sequence; the online estimators rtrl (exact, forward in time)\n"
           "and uoro (unbiased, rank one) update after every step, at %g per step of loss.\n",
           INF_P, INF_N - INF_P, longrun, opt, INF_SEQS * INF_LEN, INF_LEN, INF_LR_STEP,
           INF_LR_STEP * INF_LEN, INF_LR_ONLINE);
    for (int i = 0; i < INF_NP; i++)
        if (!influence_run(reg, spec, i, &tr[i], &secs[i], &updates[i]))
            return false;
    influence_report(tr, updates, opt);
    bt_plot *p = bt_plot_new("influence balancing: theta during training", "stream step", "theta");
    for (int i = 0; i < INF_NP; i++)
        bt_plot_line(p, inf_policies[i], tr[i].step, tr[i].theta, tr[i].n);
    bt_plot_hline(p, "optimum theta*", opt);
    const char *path = path_in(dir, "influence.svg");
    bool ok = bt_plot_write(p, path, err, sizeof err) == BT_OK;
    bt_plot_free(p);
    if (!ok)
        return cli_fail(CMD, "%s", err), false;
    printf("  figure: %s\n", path);
    return true;
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

enum { TEXT_NS = 3, TEXT_EPOCHS = 60, TEXT_HIDDEN = 128 };
static const char text_specs[TEXT_NS][256] = {"full", "fixed:4", "random:0.75"};

/* What each strategy gave: validation perplexity per epoch, the last
 * epoch's figures, and a greedy sample. */
typedef struct text_result {
    double val[TEXT_EPOCHS], train_ppl, val_ppl, secs;
    int updates;
    char *sample;
} text_result;

/* A text source over the demo's corpus (bt_compare_source_fn). */
static bt_status text_source(void *corpus, bt_lm_config *cfg, bt_source *src, char *err,
                             size_t errlen)
{
    return bt_text_source_new(corpus, cfg->batch, cfg->steps, cfg->sampling, cfg->val_fraction, src,
                              err, errlen);
}

/* The three runs (bt_compare_*), each reported as it finishes. */
static bool text_train(const bt_registry *reg, bt_corpus *corpus, text_result *res)
{
    bt_lm_config cfg;
    bt_lm_config_default(&cfg);
    cfg.hidden = TEXT_HIDDEN;
    cfg.batch = 8;
    cfg.steps = 32;
    cfg.val_fraction = 0.1;
    bt_compare_run *runs = NULL;
    char err[1024] = "";
    if (bt_compare_new(reg, &cfg, text_specs, TEXT_NS, text_source, corpus, &runs, err,
                       sizeof err) != BT_OK)
        return cli_fail(CMD, "training: %s", err), false;
    bool ok = true;
    for (int s = 0; s < TEXT_NS && ok; s++) {
        text_result *r = &res[s];
        double t0 = bt_monotonic_s();
        ok = bt_compare_train(&runs[s], TEXT_EPOCHS, NULL, err, sizeof err) == BT_OK &&
             !runs[s].diverged;
        r->secs = bt_monotonic_s() - t0;
        if (!ok) {
            cli_fail(CMD, "training under %s: %s", text_specs[s], runs[s].diverged ? runs[s].why : err);
            break;
        }
        const bt_lm_epoch *h;
        int n = bt_lm_history(runs[s].lm, &h);
        for (int e = 0; e < TEXT_EPOCHS; e++)
            r->val[e] = e < n ? h[e].val_ppl : NAN;
        r->train_ppl = n ? h[n - 1].train_ppl : NAN;
        r->val_ppl = n ? h[n - 1].val_ppl : NAN;
        r->updates = (int)bt_lm_updates(runs[s].lm);
        /* What the model writes, greedily, after the text's first words. */
        char gerr[256];
        if (bt_generate_text(bt_lm_model(runs[s].lm), corpus->vocab, "Alice was ", 70, 0, 1,
                             &r->sample, gerr, sizeof gerr) != BT_OK)
            r->sample = NULL;
        printf("  [%d/%d] %-12s %4d updates, train ppl %.2f, validation ppl %.2f (%.2f s)\n",
               s + 1, TEXT_NS, text_specs[s], r->updates, r->train_ppl, r->val_ppl, r->secs);
    }
    bt_compare_free(runs, TEXT_NS);
    return ok;
}

/* The table, what it showed, and the samples. */
static void text_report(text_result *res)
{
    printf("\n  %-12s %8s %10s %10s %8s\n", "truncation", "updates", "train ppl", "val ppl",
           "seconds");
    int best = 0;
    for (int s = 0; s < TEXT_NS; s++) {
        printf("  %-12s %8d %10.2f %10.2f %8.2f\n", text_specs[s], res[s].updates,
               res[s].train_ppl, res[s].val_ppl, res[s].secs);
        if (res[s].val_ppl < res[best].val_ppl)
            best = s;
    }
    printf("\n  After %d epochs %s has the lowest validation perplexity (%.2f; ", TEXT_EPOCHS,
           text_specs[best], res[best].val_ppl);
    for (int s = 0, first = 1; s < TEXT_NS; s++)
        if (s != best) {
            printf("%s%s %.2f", first ? "" : ", ", text_specs[s], res[s].val_ppl);
            first = 0;
        }
    printf(").\n");
    if (best != 0 && res[best].updates > res[0].updates)
        printf("  %s made %.1fx as many updates as full in the same time budget of epochs: on a "
               "text this short,\n  more frequent updates mattered more than gradients that reach "
               "further back.\n", text_specs[best], (double)res[best].updates / res[0].updates);
    else if (best == 0)
        printf("  full made the fewest updates (%d) and still reads the held-out text best: its "
               "gradients reach\n  back over the whole %d-step minibatch.\n", res[0].updates, 32);
    for (int s = 0; s < TEXT_NS; s++)
        if (res[s].sample) {
            for (char *c = res[s].sample; *c; c++)
                if (*c == '\n')
                    *c = ' ';
            printf("  %-12s writes: \"%s\"\n", text_specs[s], res[s].sample);
        }
}

static bool text_part(const bt_registry *reg, const char *dir)
{
    printf("\n== 3. char-level RNN on an embedded text (%zu characters of Alice in Wonderland, "
           "chapter I) ==\n", bt_demo_text_len);
    printf("rnn_tanh, hidden %d, batch 8 x 32 steps, state carried, sgd lr 1, clip 1, %d epochs;\n"
           "the last 10%% of the text is held out for validation.\n", TEXT_HIDDEN, TEXT_EPOCHS);
    char err[1024] = "";
    bt_corpus *corpus = NULL;
    if (bt_corpus_from_string(bt_demo_text, bt_demo_text_len, BT_TOKENS_CHARS, 0, &corpus, err,
                              sizeof err) != BT_OK)
        return cli_fail(CMD, "%s", err), false;
    text_result res[TEXT_NS] = {0};
    bool ok = text_train(reg, corpus, res);
    bt_corpus_free(corpus);
    if (ok)
        text_report(res);
    double epochs_x[TEXT_EPOCHS];
    for (int e = 0; e < TEXT_EPOCHS; e++)
        epochs_x[e] = e + 1;
    bt_plot *p = ok ? bt_plot_new("char-level RNN: validation perplexity", "epoch", "perplexity")
                    : NULL;
    for (int s = 0; s < TEXT_NS; s++) {
        if (p)
            bt_plot_line(p, text_specs[s], epochs_x, res[s].val, TEXT_EPOCHS);
        bt_free(res[s].sample);
    }
    if (!ok)
        return false;
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

/* The figures the demo writes into dir, claimed (checked writable, locked)
 * before any work: 0, or the exit status with the message printed. */
static int claim_figures(const char *dir, bt_files **files)
{
    static const char *const names[] = {"influence.svg", "lags.svg",
                                        "analyze-linear-spectral-1.2.svg", "text.svg"};
    static char paths[4][1024];
    bt_file_use uses[4];
    char err[2048];
    if (strlen(dir) > sizeof paths[0] - 64)
        return cli_usage(CMD, "--out: a folder name of %zu bytes is too long (at most %zu)",
                         strlen(dir), sizeof paths[0] - 64);
    for (int i = 0; i < 4; i++) {
        snprintf(paths[i], sizeof paths[i], "%s/%s", dir, names[i]);
        uses[i] = (bt_file_use){"--out", paths[i], true, 0};
    }
    return bt_files_claim(uses, 4, files, err, sizeof err) == BT_OK ? 0 : cli_fail(CMD, "%s", err);
}

int cmd_demo(int argc, char **argv)
{
    const char *out;
    bt_registry *reg;
    bt_files *files = NULL;
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
    if ((rc = claim_figures(out, &files)) != 0)
        goto done;
    rc = 1;
    double t0 = bt_monotonic_s();
    clock_t c0 = clock(); /* CPU time of every thread: the fair figure on a busy machine */
    printf("bptt demo: three short experiments; figures go to %s/\n", out);
    if (!influence_part(reg, out) || !lag_part(reg, out) || !text_part(reg, out))
        goto done;
    printf("\ndemo finished in %.1f s (%.1f s of CPU time); figures in %s/: influence.svg, "
           "lags.svg, analyze-linear-spectral-1.2.svg, text.svg\n", bt_monotonic_s() - t0,
           (double)(clock() - c0) / CLOCKS_PER_SEC, out);
    rc = 0;
done:
    bt_files_release(files);
    bt_registry_free(reg);
    return rc;
}
