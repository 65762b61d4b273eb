/* cmd_train.c: `bptt train`, a char-level language model on a text file or a
 * model of a generated task (--task): progress, per-epoch metrics (CSV and
 * SVG), checkpoints every N epochs that --resume continues bit for bit, a stop
 * that keeps the last good checkpoint when the loss diverges, and a greedy
 * sample at the end (texts only). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "lm_cli.h"
#include "svg.h"

#define CMD "train"

static const cli_option options[] = {
    {"truncation", "POLICY", "full (default), fixed:K, random:PI[,seed=S], tbptt:K1,K2"},
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
    .notes = "Exit status: 0 done, 1 error, 2 bad command line, 3 the loss became NaN/inf (the\n"
             "last good checkpoint is kept).",
    .options = {lm_cli_options, options},
};

typedef struct train_ctx {
    const char *save, *metrics, *data;
    int every, target, last_saved;
    bool quiet, tty, tokens_out;
} train_ctx;

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
    if (t->save && (e->epoch % t->every == 0 || e->epoch >= t->target)) {
        if ((st = bt_checkpoint_save(lm, t->save, t->data, err, errlen)) != BT_OK)
            return st;
        t->last_saved = e->epoch;
    }
    return BT_OK;
}

/* Same optimizer settings written two ways ("sgd:1" and "sgd:lr=1")? Made on a one-value block. */
static bool same_optimizer(const bt_registry *r, const char *a, const char *b)
{
    if (strcmp(a, b) == 0)
        return true;
    bt_params *p = bt_params_new();
    bt_optimizer *oa = NULL, *ob = NULL;
    char ea[256], eb[256], da[256] = "a", db[256] = "b";
    if (p && bt_params_add(p, "x", 1, (int[]){1}) && bt_params_finalize(p) == BT_OK &&
        bt_optimizer_new(r, a, p, &oa, ea, sizeof ea) == BT_OK &&
        bt_optimizer_new(r, b, p, &ob, eb, sizeof eb) == BT_OK) {
        bt_optimizer_describe(oa, da, sizeof da);
        bt_optimizer_describe(ob, db, sizeof db);
    }
    bt_optimizer_free(oa);
    bt_optimizer_free(ob);
    bt_params_free(p);
    return strcmp(da, db) == 0;
}

static bool same_policy(const bt_registry *r, const char *a, const char *b)
{
    if (strcmp(a, b) == 0)
        return true;
    char d[2][256] = {"a", "b"};
    const char *spec[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        char name[BT_NAME_LEN + 1], err[256];
        const char *opts;
        bt_split_spec(spec[i], name, sizeof name, &opts);
        const bt_policy_def *def = bt_registry_policy(r, name);
        void *st = NULL;
        if (!def || bt_policy_create(def, opts, &st, err, sizeof err) != BT_OK)
            return false;
        if (def->describe && !bt_policy_describe(def, st, d[i], sizeof d[i]))
            snprintf(d[i], sizeof d[i], "%c", 'a' + i); /* no description: never equal */
        def->destroy(st);
    }
    return strcmp(d[0], d[1]) == 0;
}

/* A resumed run keeps the checkpoint's settings; a different one typed on the
 * command line is an error naming it. */
static bool check_conflicts(const bt_registry *r, const lm_cli_opts *o, const bt_checkpoint *ck)
{
    const bt_lm_config *u = &o->cfg, *c = &ck->cfg;
    for (int id = 0; id < LO_COUNT; id++) {
        if (!o->given[id])
            continue;
        char theirs[300];
        bool same = true;
        switch ((lm_opt_id)id) {
        case LO_CELL: same = !strcmp(u->cell, c->cell); snprintf(theirs, sizeof theirs, "%s", c->cell); break;
        case LO_HIDDEN: same = u->hidden == c->hidden; snprintf(theirs, sizeof theirs, "%d", c->hidden); break;
        case LO_BATCH: same = u->batch == c->batch; snprintf(theirs, sizeof theirs, "%d", c->batch); break;
        case LO_STEPS: same = u->steps == c->steps; snprintf(theirs, sizeof theirs, "%d", c->steps); break;
        case LO_OPTIMIZER:
            same = same_optimizer(r, u->optimizer, c->optimizer);
            snprintf(theirs, sizeof theirs, "%s", c->optimizer);
            break;
        case LO_CLIP: same = u->clip == c->clip; snprintf(theirs, sizeof theirs, "%g", c->clip); break;
        case LO_TRUNCATION:
            same = same_policy(r, u->truncation, c->truncation);
            snprintf(theirs, sizeof theirs, "%s", c->truncation);
            break;
        case LO_INIT: same = !strcmp(u->init, c->init); snprintf(theirs, sizeof theirs, "'%s'", c->init); break;
        case LO_SEED: same = u->seed == c->seed; snprintf(theirs, sizeof theirs, "%llu", (unsigned long long)c->seed); break;
        case LO_TOKENS: same = u->tokens == c->tokens; snprintf(theirs, sizeof theirs, "%s", bt_tokens_kind_name(c->tokens)); break;
        case LO_SAMPLING:
            same = u->sampling == c->sampling;
            snprintf(theirs, sizeof theirs, "%s", c->sampling == BT_BATCH_RANDOM ? "random" : "sequential");
            break;
        case LO_MAX_TOKENS: same = u->max_tokens == c->max_tokens; snprintf(theirs, sizeof theirs, "%ld", c->max_tokens); break;
        case LO_VAL_FRACTION: same = u->val_fraction == c->val_fraction; snprintf(theirs, sizeof theirs, "%g", c->val_fraction); break;
        case LO_COUNT: break;
        }
        if (!same) {
            cli_fail(CMD, "--%s %s conflicts with the checkpoint's %s %s: a resumed run keeps the "
                     "settings it was started with (drop --%s, or start a new run without --resume)",
                     lm_cli_opt_name(id), o->raw[id], lm_cli_opt_name(id), theirs,
                     lm_cli_opt_name(id));
            return false;
        }
    }
    return true;
}

int cmd_train(int argc, char **argv)
{
    cli_args a;
    int rc;
    if (!cli_args_begin(&a, &cmd_train_spec, argc, argv, &rc))
        return rc;
    rc = 1;
    bt_registry *reg = NULL;
    bt_checkpoint *ck = NULL;
    bt_corpus *corpus = NULL;
    bt_source src = {0};
    bt_lm *lm = NULL;
    char err[2048] = "";
    lm_cli_opts o;
    long every;
    if (!lm_cli_parse(&a, CMD, &o) || !cli_int(&a, "every", 1, 1, 100000000, &every)) {
        rc = 2;
        goto out;
    }
    const char *save = cli_get(&a, "save"), *resume = cli_get(&a, "resume");
    const char *plot = cli_get(&a, "plot");
    bool every_given = cli_get(&a, "every") != NULL;
    if (!(reg = cli_load_plugins(&a)))
        goto out;
    cli_args_check_read(&a);
    if (every_given && !save)
        fprintf(stderr, "bptt train: note: --every has no effect without --save\n");

    bt_lm_config cfg = o.cfg;
    const char *data = o.data, *task = o.task;
    if (resume) {
        if (bt_checkpoint_read(resume, &ck, err, sizeof err) != BT_OK) {
            cli_fail(CMD, "--resume: %s", err);
            goto out;
        }
        if (!bt_registry_cell(reg, ck->cfg.cell)) {
            char known[512];
            cli_fail(CMD, "checkpoint %s uses cell '%s', which is not registered (known: %s): "
                     "load its plugin with --plugin PATH", resume, ck->cfg.cell,
                     bt_registry_names(reg, BT_KIND_CELL, known, sizeof known));
            goto out;
        }
        if (!check_conflicts(reg, &o, ck))
            goto out;
        /* A task checkpoint resumes on its task; a text one on a text. */
        if ((ck->task[0] && data) || (task && strcmp(task, ck->task) != 0)) {
            cli_fail(CMD, "--%s %s conflicts with the checkpoint, which was trained on %s%s: "
                     "drop --%s (a resumed run keeps its data)", data ? "data" : "task",
                     data ? data : task, ck->task[0] ? "task " : "a text",
                     ck->task[0] ? ck->task : "", data ? "data" : "task");
            goto out;
        }
        cfg = ck->cfg;
        if (ck->task[0])
            task = ck->task;
        else if (!data)
            data = ck->data[0] ? ck->data : NULL;
    }
    if (!lm_cli_validate(CMD, reg, &cfg))
        goto out;
    if (!lm_cli_check_data(CMD, &o, data, task)) {
        rc = 2;
        goto out;
    }
    /* Everything that can be checked is checked before the first epoch. */
    if (save && bt_atomic_check_writable(save, err, sizeof err) != BT_OK) {
        cli_fail(CMD, "--save: %s", err);
        goto out;
    }
    if (plot && bt_atomic_check_writable(plot, err, sizeof err) != BT_OK) {
        cli_fail(CMD, "--plot: %s", err);
        goto out;
    }
    if (o.metrics && bt_atomic_check_writable(o.metrics, err, sizeof err) != BT_OK) {
        cli_fail(CMD, "--metrics: %s", err);
        goto out;
    }
    if (!lm_cli_source(CMD, &o, data, task, &cfg, &corpus, &src))
        goto out;
    if (bt_lm_new(reg, &cfg, &src, &lm, err, sizeof err) != BT_OK) {
        cli_fail(CMD, "%s", err);
        goto out;
    }
    if (ck && bt_checkpoint_restore(ck, lm, err, sizeof err) != BT_OK) {
        cli_fail(CMD, "--resume: %s", err);
        goto out;
    }

    bt_model *m = bt_lm_model(lm);
    char pol[128], opt[256], ntok[32];
    if (corpus) {
        long n_val = bt_text_source_val_tokens(&src);
        printf("%s%s: %s, hidden %d (%zu parameters) on %s: %ld tokens (%s), vocabulary %d\n",
               ck ? "resuming " : "training", ck ? resume : "", cfg.cell, cfg.hidden,
               bt_params_total(m->params), data, corpus->n, bt_tokens_kind_name(cfg.tokens),
               bt_vocab_size(corpus->vocab));
        printf("  batch %d x %d steps (%s), %d minibatches per epoch, %s validation tokens\n",
               cfg.batch, cfg.steps, cfg.sampling == BT_BATCH_RANDOM ? "random" : "sequential",
               src.count(src.ctx), n_val ? lm_cli_si((double)n_val, ntok, sizeof ntok) : "no");
    } else {
        bt_sequence vs;
        bool val = src.validation && src.validation(src.ctx, 0, &vs);
        printf("%s%s: %s, hidden %d (%zu parameters) on task %s: %s inputs of %d, %s targets "
               "(%s)\n", ck ? "resuming " : "training", ck ? resume : "", cfg.cell, cfg.hidden,
               bt_params_total(m->params), task, src.tokens_in ? "token" : "real",
               src.input_size, src.tokens_out ? "token" : "real",
               src.tokens_out ? "cross-entropy, perplexity" : "squared error, loss");
        printf("  batch %d x %d steps (the task's length), %d minibatches per epoch%s, %s\n",
               cfg.batch, cfg.steps, src.count(src.ctx),
               src.carry_state ? " (state carried)" : "",
               val ? "held-out validation minibatches" : "no validation data");
    }
    printf("  optimizer %s, clip %g, truncation %s, init %s, seed %llu\n",
           bt_lm_optimizer_describe(lm, opt, sizeof opt), cfg.clip,
           bt_lm_policy_describe(lm, pol, sizeof pol), cfg.init[0] ? cfg.init : "cell default",
           (unsigned long long)cfg.seed);
    if (ck)
        printf("  from epoch %d (%llu updates); --epochs %d is the total\n", ck->epoch,
               (unsigned long long)ck->updates, o.epochs);
    fflush(stdout);

    train_ctx t = {
        .save = save, .metrics = o.metrics, .data = data, .every = (int)every,
        .target = o.epochs, .last_saved = ck ? ck->epoch : -1, .quiet = o.quiet,
        .tty = isatty(STDERR_FILENO), .tokens_out = src.tokens_out,
    };
    bt_lm_hooks hooks = {.progress = t.tty ? lm_cli_progress : NULL, .epoch_done = on_epoch, .ctx = &t};
    if (bt_lm_epochs_done(lm) >= o.epochs)
        printf("the checkpoint is at epoch %d and --epochs is %d (a total): nothing to train\n",
               bt_lm_epochs_done(lm), o.epochs);
    bt_status st = bt_lm_train(lm, o.epochs, &hooks, err, sizeof err);
    if (t.tty)
        lm_cli_progress_clear();
    char perr[1024];
    if (plot && bt_lm_epochs_done(lm) > 0 && write_plot(plot, lm, perr, sizeof perr) != BT_OK)
        fprintf(stderr, "bptt train: --plot: %s\n", perr);
    if (st != BT_OK) {
        cli_fail(CMD, "%s", err);
        if (st == BT_ERR_NUMERIC) {
            if (save && t.last_saved >= 0)
                fprintf(stderr, "bptt train: training stopped; the last good checkpoint is %s "
                        "(epoch %d), left as it was\n", save, t.last_saved);
            else if (save)
                fprintf(stderr, "bptt train: training stopped before a checkpoint was written\n");
            rc = 3;
        }
        goto out;
    }
    char *sample = lm_cli_sample(lm, corpus, 60);
    if (sample) {
        printf("sample (greedy): %s\n", sample);
        bt_free(sample);
    }
    const bt_lm_epoch *h;
    int n = bt_lm_history(lm, &h);
    if (n > 0 && src.tokens_out) {
        char p[32];
        printf("done: epoch %d, train ppl %s", h[n - 1].epoch,
               lm_cli_ppl(h[n - 1].train_loss, 3, p, sizeof p));
        if (!isnan(h[n - 1].val_ppl))
            printf(", val ppl %s", lm_cli_ppl(h[n - 1].val_loss, 3, p, sizeof p));
        printf("%s%s\n", save ? ", saved " : "", save ? save : "");
    } else if (n > 0) {
        printf("done: epoch %d, train loss %.5g", h[n - 1].epoch, h[n - 1].train_loss);
        if (!isnan(h[n - 1].val_loss))
            printf(", val loss %.5g", h[n - 1].val_loss);
        printf("%s%s\n", save ? ", saved " : "", save ? save : "");
    }
    rc = 0;
out:
    bt_lm_free(lm);
    bt_source_free(&src);
    bt_corpus_free(corpus);
    bt_checkpoint_free(ck);
    bt_registry_free(reg);
    cli_args_free(&a);
    return rc;
}
