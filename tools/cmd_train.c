/* cmd_train.c: `bptt train`, a char-level language model on a text file or a
 * model of a generated task (--task): progress, per-epoch metrics (CSV and
 * SVG), checkpoints every N epochs that --resume continues bit for bit, a stop
 * that keeps the last good checkpoint when the loss diverges, and a greedy
 * sample at the end (texts only). Under mpirun, data-parallel (dist.h): every
 * process trains its block of rows, process 0 alone prints and writes. */
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "bt_clock.h"
#include "checkpoint.h"
#include "dist_cli.h"
#include "lm_cli.h"
#include "paths.h"
#include "svg.h"

#define CMD "train"

static const cli_option options[] = {
    {"truncation", "POLICY", "full (default), fixed:K, random:PI[,seed=S], tbptt:K1,K2"},
    {"estimator", "NAME[,OPTS]", "estimate the gradient online instead of backpropagating "
                                 "through time: rtrl (exact), uoro[,seed=S] (unbiased); the "
                                 "parameters are updated every --update-every steps (see "
                                 "docs/estimators.md)"},
    {"save", "FILE", "checkpoint (safetensors), written atomically"},
    {"every", "N", "save every N epochs (default 1) and at the end"},
    {"resume", "FILE", "continue a checkpoint with its own settings and text; --epochs is the "
                       "total, so --epochs 20 on an epoch-15 checkpoint trains 5 more"},
    {"plot", "FILE.svg", "train/validation perplexity (loss for real targets) per epoch"},
    {NULL, NULL, NULL},
};

const cli_command cmd_train_spec = {
    .name = "train",
    .summary = "train a character-level language model on a text",
    .usage = "(--data FILE | --task SPEC | --resume FILE) [options]",
    .about = "Trains a character-level language model (the classic char-RNN by default:\n"
             "rnn_tanh, hidden 512, batch 32 x 35 steps, sgd lr 1, clip 1, full BPTT), or a\n"
             "model of a generated task (real-valued tasks report the loss, not perplexity,\n"
             "and need a cell with real inputs: --cell linear, or influence).",
    .notes = "Ctrl-C (or SIGTERM) stops after the minibatch under way and saves the run to\n"
             "--save, where --resume continues it exactly, even within an epoch; a second Ctrl-C\n"
             "quits at once without saving.\n\n"
             "Exit status: 0 done, 1 error, 2 bad command line, 3 the loss became NaN/inf (the\n"
             "last good checkpoint is kept), 130 stopped by Ctrl-C (SIGINT), 143 by SIGTERM.\n\n"
             "Under mpirun -np N (a build with MPI), the same run is trained data-parallel: each\n"
             "process unrolls B/N rows of every minibatch (N must divide --batch) and the\n"
             "gradients are summed at every update; process 0 prints and writes the files.\n"
             "There, Ctrl-C and SIGTERM are mpirun's to handle: the processes end without\n"
             "saving. See docs/distributed.md.",
    .options = {lm_cli_options, options},
};

typedef struct train_ctx {
    const char *save, *metrics, *data;
    int every, target, last_saved;
    long batches;       /* minibatches trained by this process */
    bool quiet, tty, tokens_out;
    bool writer; /* process 0 of a data-parallel run (or the only one): prints and writes */
} train_ctx;

static void on_progress(void *vctx, const bt_lm_progress *p)
{
    train_ctx *t = vctx;
    t->batches++;
    if (t->tty)
        lm_cli_progress(NULL, p);
}

static bt_status write_metrics(const char *path, bt_lm *lm, char *err, size_t errlen)
{
    const bt_lm_epoch *h;
    int n = bt_lm_history(lm, &h);
    /* Built in memory, then written atomically: a reader never sees half a table. */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        snprintf(err, errlen, "cannot write --metrics %s: out of memory", path);
        return BT_ERR_NOMEM;
    }
    /* Sources with real targets have no perplexity: their columns are the loss. */
    bool ppl = bt_lm_source(lm)->tokens_out;
    const char *w = lm_cli_measure(bt_lm_source(lm));
    fprintf(f, "epoch,train_%s,val_%s,tokens_per_s,grad_norm_mean,grad_norm_max,skipped,seconds%s\n",
            w, w, ppl ? ",train_loss,val_loss" : "");
    for (int i = 0; i < n; i++) {
        char tr[48], va[48] = "";
        if (ppl) {
            lm_cli_ppl(h[i].train_loss, 6, tr, sizeof tr);
            if (!isnan(h[i].val_loss))
                lm_cli_ppl(h[i].val_loss, 6, va, sizeof va);
        } else {
            snprintf(tr, sizeof tr, "%.6g", h[i].train_loss);
            if (!isnan(h[i].val_loss))
                snprintf(va, sizeof va, "%.6g", h[i].val_loss);
        }
        fprintf(f, "%d,%s,%s,%.1f,%.6g,%.6g,%d,%.3f", h[i].epoch, tr, va, h[i].tokens_per_s,
                h[i].grad_norm_mean, h[i].grad_norm_max, h[i].skipped, h[i].elapsed);
        if (ppl) /* the losses behind the perplexities, in full precision */
            fprintf(f, ",%.17g,%s", h[i].train_loss, lm_cli_num(h[i].val_loss, va, sizeof va));
        fputc('\n', f);
    }
    bt_status st = fclose(f) == 0 ? bt_atomic_write_file(path, text, len, err, errlen)
                                   : bt_error(err, errlen, BT_ERR_NOMEM,
                                              "cannot write --metrics %s: out of memory", path);
    free(text); /* open_memstream's buffer comes from the C library */
    return st;
}

static bt_status write_plot(const char *path, bt_lm *lm, char *err, size_t errlen)
{
    const bt_lm_epoch *h;
    int n = bt_lm_history(lm, &h);
    const bt_lm_config *c = bt_lm_config_of(lm);
    bool ppl = bt_lm_source(lm)->tokens_out;
    char title[512], pol[128];
    snprintf(title, sizeof title, "%s, hidden %d, %s, %s", c->cell, c->hidden,
             bt_lm_policy_describe(lm, pol, sizeof pol), c->optimizer);
    bt_plot *p = bt_plot_new(title, "epoch", ppl ? "perplexity" : "loss");
    double *x = bt_malloc(sizeof(double) * 3 * (size_t)(n ? n : 1));
    if (!p || !x) {
        bt_plot_free(p);
        bt_free(x);
        snprintf(err, errlen, "out of memory for the plot");
        return BT_ERR_NOMEM;
    }
    double *tr = x + n, *va = x + 2 * n;
    bool any_val = false;
    for (int i = 0; i < n; i++) {
        x[i] = h[i].epoch;
        tr[i] = ppl ? h[i].train_ppl : h[i].train_loss;
        va[i] = ppl ? h[i].val_ppl : h[i].val_loss;
        any_val |= !isnan(va[i]);
    }
    bt_plot_set_logy(p, true);
    bt_plot_line(p, "train", x, tr, n);
    if (any_val)
        bt_plot_line(p, "validation", x, va, n);
    bt_status st = bt_plot_write(p, path, err, errlen);
    bt_plot_free(p);
    bt_free(x);
    return st;
}

static bt_status on_epoch(void *vctx, bt_lm *lm, const bt_lm_epoch *e, char *err, size_t errlen)
{
    train_ctx *t = vctx;
    bool save_now = t->save && (e->epoch % t->every == 0 || e->epoch >= t->target);
    if (!t->writer) { /* process 0 saves; a failure to save stops every process */
        t->last_saved = save_now ? e->epoch : t->last_saved;
        return BT_OK;
    }
    if (t->tty)
        lm_cli_progress_clear();
    if (!t->quiet) {
        char tps[32], el[32], tr[64], val[64] = "", p[32];
        if (t->tokens_out)
            snprintf(tr, sizeof tr, "train ppl %s", lm_cli_ppl(e->train_loss, 3, p, sizeof p));
        else
            snprintf(tr, sizeof tr, "train loss %.5g", e->train_loss);
        if (!isnan(e->val_ppl))
            snprintf(val, sizeof val, "  val ppl %s", lm_cli_ppl(e->val_loss, 3, p, sizeof p));
        else if (!isnan(e->val_loss))
            snprintf(val, sizeof val, "  val loss %.5g", e->val_loss);
        printf("epoch %d/%d  %s%s  %s tok/s  %.2fs  elapsed %s  skipped %d\n",
               e->epoch, t->target, tr, val,
               lm_cli_si(e->tokens_per_s, tps, sizeof tps), e->seconds,
               lm_cli_duration(e->elapsed, el, sizeof el), e->skipped);
        fflush(stdout);
    }
    bt_status st;
    if (t->metrics && (st = write_metrics(t->metrics, lm, err, errlen)) != BT_OK)
        return st;
    if (save_now) {
        if ((st = bt_checkpoint_save(lm, t->save, t->data, err, errlen)) != BT_OK)
            return st;
        t->last_saved = e->epoch;
    }
    return BT_OK;
}

typedef struct train_opts {
    lm_cli_opts lm;
    long every, threads;
    bool every_given;
    const char *save, *resume, *plot;
} train_opts;

static bool read_options(cli_args *a, void *vo)
{
    train_opts *o = vo;
    if (!lm_cli_parse(a, &o->lm) || !cli_int(a, "every", 1, 1, 100000000, &o->every) ||
        !cli_int(a, "threads", 0, 0, 1024, &o->threads))
        return false;
    const bt_lm_given *g = &o->lm.run;
    if (g->given[BT_LM_ESTIMATOR] && g->given[BT_LM_TRUNCATION]) {
        cli_usage(CMD, "--estimator %s replaces backpropagation through time: drop --truncation",
                  g->raw[BT_LM_ESTIMATOR]);
        return false;
    }
    o->save = cli_get(a, "save");
    o->resume = cli_get(a, "resume");
    o->plot = cli_get(a, "plot");
    o->every_given = cli_get(a, "every") != NULL;
    return true;
}

/* What a run holds, freed together. */
typedef struct train_run {
    bt_checkpoint *ck;
    lm_cli_data data;
    bt_source src;
    bt_lm_config cfg;
    bt_lm *lm;
    bt_files *files;    /* the outputs, locked for the run */
    long threads;       /* --threads (0: not given) */
    int lanes;          /* the threads the rows split over (1: none) */
} train_run;

static void train_run_free(train_run *r)
{
    bt_files_release(r->files);
    bt_lm_free(r->lm);
    bt_source_free(&r->src);
    bt_corpus_free(r->data.corpus);
    bt_checkpoint_free(r->ck);
}

/* Every file the run reads and writes, claimed before the first epoch: no
 * two the same file (a resume may save over its checkpoint), every output
 * writable and locked for the run. 0, or the exit status with the message printed. */
static int claim_files(train_run *r, const train_opts *o)
{
    const bt_file_use uses[] = {
        {"--data", r->data.data, false, 0}, {"--resume", o->resume, false, 1},
        {"--save", o->save, true, 1}, {"--metrics", o->lm.metrics, true, 0},
        {"--plot", o->plot, true, 0},
    };
    char err[2048];
    bt_status st = bt_files_claim(uses, 5, &r->files, err, sizeof err);
    if (st == BT_OK)
        return 0;
    return st == BT_ERR_ARG ? cli_usage(CMD, "%s", err) : cli_fail(CMD, "%s", err);
}

/* The run's settings and data: the command line's, or with --resume the
 * checkpoint's (which the command line may not contradict). 0, or the exit
 * status with the message printed. Only the process that writes checks the
 * outputs: on other hosts their folders need not exist. */
static int settings(train_run *r, const bt_registry *reg, const train_opts *o, bool writer)
{
    char err[2048] = "";
    r->cfg = o->lm.run.cfg;
    r->threads = o->threads;
    r->data = (lm_cli_data){.o = &o->lm, .data = o->lm.data, .task = o->lm.task};
    if (o->resume) {
        if (bt_checkpoint_read(o->resume, &r->ck, err, sizeof err) != BT_OK)
            return cli_fail(CMD, "--resume: %s", err);
        if (bt_checkpoint_check_resume(r->ck, reg, &o->lm.run, &r->data.data, &r->data.task,
                                       &r->cfg, err, sizeof err) != BT_OK)
            return cli_fail(CMD, "%s", err);
        lm_cli_resume_notes(CMD, r->ck, &r->cfg);
    }
    if (!lm_cli_validate(CMD, reg, &r->cfg))
        return 1;
    if (o->lm.run.given[BT_LM_UPDATE_EVERY] && !bt_lm_config_online(&r->cfg))
        return cli_usage(CMD, "--update-every applies to an online estimator (--estimator); "
                         "under BPTT the truncation policy decides when to update");
    if (!lm_cli_check_data(CMD, &o->lm, r->data.data, r->data.task))
        return 2;
    return writer ? claim_files(r, o) : 0;
}

/* Source, model (restored from the checkpoint when resuming), this process's
 * rows of a data-parallel run; 0 or 1. */
static int build(train_run *r, const bt_registry *reg, bt_dist *d)
{
    char err[2048] = "";
    if (lm_cli_source(&r->data, &r->cfg, &r->src, err, sizeof err) != BT_OK)
        return cli_fail(CMD, "%s", err);
    if (bt_lm_new(reg, &r->cfg, &r->src, &r->lm, err, sizeof err) != BT_OK)
        return cli_fail(CMD, "%s", err);
    if (r->ck && bt_checkpoint_restore(r->ck, r->lm, err, sizeof err) != BT_OK)
        return cli_fail(CMD, "--resume: %s", err);
    if (bt_lm_distribute(r->lm, d, err, sizeof err) != BT_OK)
        return cli_usage(CMD, "%s", err);
    /* --threads N: the rows of each minibatch split over N threads, each of
     * whose products then runs on one BLAS thread. */
    if (bt_lm_set_threads(r->lm, (int)r->threads, &r->lanes, err, sizeof err) != BT_OK)
        return cli_usage(CMD, "%s", err);
    if (r->lanes > 1)
        bt_blas_set_threads(1);
    return 0;
}

/* What is trained, on what, and how: three or four lines. */
static void print_setup(const train_run *r, const train_opts *o, const dist_cli *dc)
{
    const bt_lm_config *c = &r->cfg;
    const bt_source *src = &r->src;
    size_t n_params = bt_params_total(bt_lm_model(r->lm)->params);
    const char *verb = r->ck ? "resuming " : "training", *from = r->ck ? o->resume : "";
    char pol[128], opt[256], ntok[32];
    if (r->data.corpus) {
        const bt_corpus *corpus = r->data.corpus;
        long n_val = bt_text_source_val_tokens(src);
        printf("%s%s: %s, hidden %d (%zu parameters) on %s: %ld tokens (%s), vocabulary %d\n",
               verb, from, c->cell, c->hidden, n_params, r->data.data, corpus->n,
               bt_tokens_kind_name(c->tokens), bt_vocab_size(corpus->vocab));
        printf("  batch %d x %d steps (%s), %d minibatches per epoch, %s validation tokens\n",
               c->batch, c->steps, c->sampling == BT_BATCH_RANDOM ? "random" : "sequential",
               src->count(src->ctx), n_val ? lm_cli_si((double)n_val, ntok, sizeof ntok) : "no");
    } else {
        bt_sequence vs;
        bool val = src->validation && src->validation(src->ctx, 0, &vs);
        printf("%s%s: %s, hidden %d (%zu parameters) on task %s: %s inputs of %d, %s targets "
               "(%s)\n", verb, from, c->cell, c->hidden, n_params, r->data.task,
               src->tokens_in ? "token" : "real", src->input_size, src->tokens_out ? "token" : "real",
               src->tokens_out ? "cross-entropy, perplexity" : "squared error, loss");
        printf("  batch %d x %d steps (the task's length), %d minibatches per epoch%s, %s\n",
               c->batch, c->steps, src->count(src->ctx), src->carry_state ? " (state carried)" : "",
               val ? "held-out validation minibatches" : "no validation data");
    }
    char how[192];
    if (bt_lm_config_online(c))
        snprintf(how, sizeof how, "estimator %s (an update every %d step%s)",
                 bt_lm_policy_describe(r->lm, pol, sizeof pol), c->update_every,
                 c->update_every == 1 ? "" : "s");
    else
        snprintf(how, sizeof how, "truncation %s", bt_lm_policy_describe(r->lm, pol, sizeof pol));
    printf("  optimizer %s, clip %g, %s, init %s, seed %llu\n",
           bt_lm_optimizer_describe(r->lm, opt, sizeof opt), c->clip, how,
           c->init[0] ? c->init : "cell default", (unsigned long long)c->seed);
    lm_cli_print_arch(c);
    if (r->ck)
        printf("  from epoch %d (%llu updates); --epochs %d is the total\n", r->ck->epoch,
               (unsigned long long)r->ck->updates, o->lm.epochs);
    if (r->lanes > 1)
        printf("  the rows of each minibatch split over %d threads, one BLAS thread each\n",
               r->lanes);
    dist_cli_describe(dc, c->batch, n_params);
    fflush(stdout);
}

/* The greedy sample (texts only) and the last epoch's figures; `save` is the
 * checkpoint this process wrote (NULL when it wrote none). */
static void print_done(train_run *r, const char *save)
{
    char *sample = lm_cli_sample(r->lm, r->data.corpus, 60);
    if (sample) {
        printf("sample (greedy): %s\n", sample);
        bt_free(sample);
    }
    const bt_lm_epoch *h;
    int n = bt_lm_history(r->lm, &h);
    if (n == 0)
        return;
    char p[32];
    if (r->src.tokens_out) {
        printf("done: epoch %d, train ppl %s", h[n - 1].epoch,
               lm_cli_ppl(h[n - 1].train_loss, 3, p, sizeof p));
        if (!isnan(h[n - 1].val_ppl))
            printf(", val ppl %s", lm_cli_ppl(h[n - 1].val_loss, 3, p, sizeof p));
    } else {
        printf("done: epoch %d, train loss %.5g", h[n - 1].epoch, h[n - 1].train_loss);
        if (!isnan(h[n - 1].val_loss))
            printf(", val loss %.5g", h[n - 1].val_loss);
    }
    printf("%s%s\n", save ? ", saved " : "", save ? save : "");
}

/* The run stopped on a signal: its checkpoint (with --save, when anything
 * was trained), where it stands, and 128 + the signal (1 if it cannot be saved). */
static int interrupted(train_run *r, const train_opts *o, const train_ctx *t, bt_dist *d)
{
    /* Distributed, the processes stopped together, maybe on one's signal. */
    int code = bt_dist_agree_code(d, lm_cli_stop_signal() ? 128 + lm_cli_stop_signal() : 0);
    int sig = code > 128 ? code - 128 : SIGINT;
    const char *name = sig == SIGTERM ? "SIGTERM" : "SIGINT";
    bt_lm_position p;
    bt_lm_position_get(r->lm, &p);
    char where[96], err[2048];
    int failed = 0;
    if (p.batches_done)
        snprintf(where, sizeof where, "in epoch %d after minibatch %d", bt_lm_epochs_done(r->lm) + 1,
                 p.batches_done);
    else
        snprintf(where, sizeof where, "after epoch %d", bt_lm_epochs_done(r->lm));
    if (!t->writer) /* process 0 alone writes and speaks */
        ;
    else if (!t->batches)
        fprintf(stderr, "bptt train: %s before training began: nothing written\n", name);
    else if (!o->save)
        fprintf(stderr, "bptt train: %s: stopped %s; without --save nothing is kept\n", name, where);
    else if (bt_checkpoint_save(r->lm, o->save, r->data.data, err, sizeof err) != BT_OK)
        failed = cli_fail(CMD, "%s: stopped %s, but the run could not be saved: %s", name, where,
                          err);
    else
        fprintf(stderr, "bptt train: %s: stopped %s; the run is saved in %s: continue it with "
                "bptt train --resume %s --epochs %d\n", name, where, o->save, o->save, t->target);
    failed = bt_dist_agree_code(d, failed);
    return failed ? failed : 128 + sig;
}

/* The message of a failed run, from the process that reports it; its exit
 * status (the same on every process: the failure was agreed on). */
static int train_failed(bt_status st, const char *err, const train_ctx *t, const bt_dist *d)
{
    if (!bt_dist_reports(d))
        return st == BT_ERR_NUMERIC ? 3 : 1;
    if (bt_dist_size(d) > 1) /* rows and minibatches in the message are this process's */
        cli_fail(CMD, "process %d of %d: %s", bt_dist_rank(d), bt_dist_size(d), err);
    else
        cli_fail(CMD, "%s", err);
    if (st != BT_ERR_NUMERIC)
        return 1;
    if (t->save && t->last_saved >= 0)
        fprintf(stderr, "bptt train: training stopped; the last good checkpoint is %s "
                "(epoch %d), left as it was\n", t->save, t->last_saved);
    else if (t->save)
        fprintf(stderr, "bptt train: training stopped before a checkpoint was written\n");
    return 3;
}

/* bt_lm_train with progress, per-epoch lines, metrics and checkpoints; the
 * plot once it stops. 0, 1 on an error, 3 when the loss diverged, 128 + the
 * signal when one stopped it. */
static int train(train_run *r, const train_opts *o, const dist_cli *dc)
{
    char err[2048] = "", perr[1024];
    bool writer = bt_dist_rank(dc->d) == 0;
    train_ctx t = {
        .save = o->save, .metrics = o->lm.metrics, .data = r->data.data, .every = (int)o->every,
        .target = o->lm.epochs, .last_saved = r->ck ? r->ck->epoch : -1, .quiet = o->lm.quiet,
        .tty = writer && isatty(STDERR_FILENO), .tokens_out = r->src.tokens_out, .writer = writer,
    };
    bt_lm_hooks hooks = {.progress = on_progress, .epoch_done = on_epoch, .ctx = &t};
    if (bt_lm_epochs_done(r->lm) >= o->lm.epochs)
        printf("the checkpoint is at epoch %d and --epochs is %d (a total): nothing to train\n",
               bt_lm_epochs_done(r->lm), o->lm.epochs);
    double t0 = bt_monotonic_s();
    bt_status st = bt_lm_train(r->lm, o->lm.epochs, &hooks, err, sizeof err);
    lm_cli_stop_finished(); /* a signal from here on is late: training is over */
    double seconds = bt_monotonic_s() - t0;
    if (t.tty)
        lm_cli_progress_clear();
    if (writer && o->plot && bt_lm_epochs_done(r->lm) > 0 &&
        write_plot(o->plot, r->lm, perr, sizeof perr) != BT_OK)
        fprintf(stderr, "bptt train: --plot: %s\n", perr);
    if (st == BT_OK && bt_lm_stopped(r->lm))
        return interrupted(r, o, &t, dc->d);
    if (st != BT_OK)
        return train_failed(st, err, &t, dc->d);
    if (writer)
        print_done(r, t.last_saved > (r->ck ? r->ck->epoch : -1) ? o->save : NULL);
    dist_cli_report(dc, seconds);
    return 0; /* a signal that came too late to stop the run: cmd_train's exit status says so */
}

int cmd_train(int argc, char **argv)
{
    train_opts o;
    bt_registry *reg = NULL;
    dist_cli dc;
    int rc;
    if (!dist_cli_begin(&dc, &argc, &argv, CMD, &rc))
        return rc;
    /* Every process sets up alone; then all agree to go on, or all stop with
     * the status (plus one) of the first that cannot go on. */
    train_run r = {0};
    int stop = 0;
    /* Under mpirun a signal is mpirun's: it ends every process (SIGTERM, then
     * SIGKILL), one blocked in a collective included, which could never
     * reach a minibatch boundary to stop there. */
    if (bt_dist_size(dc.d) == 1)
        lm_cli_stop_begin(CMD);
    if (!cli_begin(&cmd_train_spec, argc, argv, read_options, &o, &reg, &rc))
        stop = rc + 1;
    else {
        if (o.every_given && !o.save)
            fprintf(stderr, "bptt train: note: --every has no effect without --save\n");
        if ((rc = settings(&r, reg, &o, bt_dist_rank(dc.d) == 0)) || (rc = build(&r, reg, dc.d)))
            stop = rc + 1;
    }
    if ((stop = dist_cli_agree(&dc, stop)) != 0)
        rc = stop - 1;
    else {
        print_setup(&r, &o, &dc);
        lm_cli_stop_attach(r.lm);
        rc = train(&r, &o, &dc);
        /* A signal during the last minibatch, or later, came too late to
         * stop the run: it finished, and exits 128 + the signal to say one
         * came. Checked here, the last moment the handler records one. */
        if (rc == 0 && lm_cli_stop_signal())
            rc = 128 + lm_cli_stop_signal();
    }
    lm_cli_stop_end();
    train_run_free(&r);
    bt_registry_free(reg);
    dist_cli_end(&dc);
    return rc;
}
