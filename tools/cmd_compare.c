/* cmd_compare.c: `bptt compare`, the same model trained once per truncation
 * policy from the same initialisation and the same minibatches (of a text or
 * a generated task), then a table (perplexity, or the loss for real targets;
 * speed, memory, skipped steps, gradient norms) and one SVG with the curves
 * and the segments each policy cuts the sequences into. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "checkpoint.h"
#include "compare.h"
#include "generate.h"
#include "lm_cli.h"
#include "paths.h"
#include "svg.h"

#define CMD "compare"
#define MAX_POLICIES 16
#define SEG_CHARS 60

static const cli_option options[] = {
    {"truncation", "LIST", "policies separated by commas; options may hold commas too: "
                           "full,fixed:35,random:0.1,seed=3,tbptt:5,35 (default "
                           "full,fixed:10,random:0.1; an estimator's name may stand in the "
                           "list too)"},
    {"estimator", "LIST", "online estimators trained next to the policies: rtrl,uoro,seed=3 "
                          "(with --update-every N); see docs/estimators.md"},
    {"plot", "FILE.svg", "perplexity (or loss) curves and segments picture (default compare.svg)"},
    {NULL, NULL, NULL},
};

const cli_command cmd_compare_spec = {
    .name = "compare",
    .summary = "train once per truncation policy or estimator and compare them",
    .usage = "(--data FILE | --task SPEC) [--truncation LIST] [--estimator LIST] [options]",
    .about = "Trains the same model once per truncation policy and online gradient estimator\n"
             "(same initialisation, same minibatches) and compares them. Real-valued tasks\n"
             "report the loss.",
    .notes = "The table's memory column is what training holds: parameters, gradients,\n"
             "optimizer state, carried state and the unroller's state ring, plus the largest\n"
             "window arena (activations and tape). The process peak RSS is printed below it.",
    .options = {lm_cli_options, options},
};

static void on_progress(void *ctx, const bt_lm_progress *p) { lm_cli_progress(ctx, p); }

typedef struct cmp_ctx {
    const char *label;
    bool quiet, tty, ppl;
} cmp_ctx;

/* The figure an epoch is judged by: perplexity for token targets, else the loss. */
static double train_fig(const bt_lm_epoch *e, bool ppl) { return ppl ? e->train_ppl : e->train_loss; }
static double val_fig(const bt_lm_epoch *e, bool ppl) { return ppl ? e->val_ppl : e->val_loss; }

/* A loss as printed: the perplexity it gives (never inf for a finite loss),
 * or the loss itself for real targets; "" when absent. */
static const char *fig_text(double loss, bool ppl, int digits, char *buf, size_t len)
{
    if (isnan(loss))
        buf[0] = '\0';
    else if (ppl)
        lm_cli_ppl(loss, digits, buf, len);
    else
        snprintf(buf, len, "%.*g", digits + 2, loss);
    return buf;
}

static bt_status on_epoch(void *vctx, bt_lm *lm, const bt_lm_epoch *e, char *err, size_t errlen)
{
    (void)lm, (void)err, (void)errlen;
    cmp_ctx *c = vctx;
    if (c->tty)
        lm_cli_progress_clear();
    if (!c->quiet) {
        char tps[32], val[64] = "", tr[32], v[32];
        const char *w = c->ppl ? "ppl" : "loss";
        fig_text(e->train_loss, c->ppl, 3, tr, sizeof tr);
        if (!isnan(e->val_loss))
            snprintf(val, sizeof val, "  val %s %s", w, fig_text(e->val_loss, c->ppl, 3, v, sizeof v));
        printf("[%s] epoch %d  train %s %s%s  %s tok/s  skipped %d\n", c->label, e->epoch, w, tr,
               val, lm_cli_si(e->tokens_per_s, tps, sizeof tps), e->skipped);
        fflush(stdout);
    }
    return BT_OK;
}

/* The training and validation curves of every run, in two panels (the
 * second only when some run has validation figures). */
static bt_status add_curves(bt_figure *f, const bt_compare_run *runs, int n_runs, bool ppl)
{
    const char *what = ppl ? "perplexity" : "loss";
    char t1[64], t2[64];
    snprintf(t1, sizeof t1, "Training %s", what);
    snprintf(t2, sizeof t2, "Validation %s", what);
    bt_plot *tr = bt_plot_new(t1, "epoch", what), *va = bt_plot_new(t2, "epoch", what);
    if (!tr || !va) {
        bt_plot_free(tr);
        bt_plot_free(va);
        return BT_ERR_NOMEM;
    }
    bt_plot_set_logy(tr, true);
    bt_plot_set_logy(va, true);
    bool any_val = false;
    for (int k = 0; k < n_runs; k++) {
        const bt_lm_epoch *h;
        int n = bt_lm_history(runs[k].lm, &h);
        double *x = bt_malloc(sizeof(double) * 3 * (size_t)(n ? n : 1));
        if (!x)
            continue;
        for (int i = 0; i < n; i++) {
            x[i] = h[i].epoch;
            x[n + i] = train_fig(&h[i], ppl);
            x[2 * n + i] = val_fig(&h[i], ppl);
            any_val |= !isnan(x[2 * n + i]);
        }
        bt_plot_line(tr, runs[k].desc, x, x + n, n);
        bt_plot_line(va, runs[k].desc, x, x + 2 * n, n);
        bt_free(x);
    }
    bt_status st = bt_figure_add(f, tr);
    if (any_val && st == BT_OK)
        st = bt_figure_add(f, va);
    else
        bt_plot_free(va);
    return st;
}

/* The segments picture: the text as the model reads it, cut per policy (a
 * task's steps as blank cells); c is the text, or NULL for a task. */
static void add_segments(bt_figure *f, const bt_registry *reg, const bt_compare_run *runs,
                         int n_runs, const bt_corpus *c, const bt_lm_config *cfg)
{
    int n = !c ? SEG_CHARS : c->n < SEG_CHARS ? (int)c->n : SEG_CHARS;
    char *text = c ? bt_decode_ids(c->vocab, c->ids, n) : bt_calloc((size_t)n + 1, 1);
    if (text && !c)
        memset(text, ' ', (size_t)n);
    int *cuts = bt_calloc((size_t)n * (size_t)n_runs, sizeof(int));
    bt_segments_row rows[MAX_POLICIES];
    int n_rows = 0;
    char err[256];
    for (int k = 0; text && cuts && k < n_runs; k++)
        if (bt_policy_cuts(reg, runs[k].spec, cfg->steps, cfg->seed, cuts + (size_t)k * n, n, err,
                           sizeof err) == BT_OK)
            rows[n_rows++] = (bt_segments_row){runs[k].desc, cuts + (size_t)k * n};
    char stitle[128];
    snprintf(stitle, sizeof stitle, "Segments of the first %d %s (%d-step minibatches)", n,
             c ? "tokens" : "steps", cfg->steps);
    if (text && n_rows)
        bt_figure_add_segments(f, stitle, text, n, rows, n_rows);
    bt_free(text);
    bt_free(cuts);
}

static bt_status write_figure(const char *path, const bt_registry *reg, const bt_compare_run *runs,
                              int n_runs, const bt_corpus *c, const char *task, bool ppl,
                              const bt_lm_config *cfg, char *err, size_t errlen)
{
    char title[512];
    snprintf(title, sizeof title, "Gradients compared: %s, hidden %d, batch %d x %d steps, %s%s%s",
             cfg->cell, cfg->hidden, cfg->batch, cfg->steps, cfg->optimizer, task ? ", task " : "",
             task ? task : "");
    bt_figure *f = bt_figure_new(title, 2);
    bt_status st = f ? add_curves(f, runs, n_runs, ppl) : BT_ERR_NOMEM;
    if (st != BT_OK) {
        bt_figure_free(f);
        return bt_error(err, errlen, st, "out of memory for the figure");
    }
    add_segments(f, reg, runs, n_runs, c, cfg);
    st = bt_figure_write(f, path, err, errlen);
    bt_figure_free(f);
    return st;
}

static bt_status write_metrics(const char *path, const bt_compare_run *runs, int n_runs, bool ppl,
                               char *err, size_t errlen)
{
    /* Built in memory, then written atomically: a reader never sees half a table. */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return bt_error(err, errlen, BT_ERR_NOMEM, "cannot write --metrics %s: out of memory", path);
    const char *w = ppl ? "ppl" : "loss";
    fprintf(f, "policy,epoch,train_%s,val_%s,tokens_per_s,grad_norm_mean,grad_norm_max,"
               "skipped,seconds%s\n", w, w, ppl ? ",train_loss,val_loss" : "");
    for (int k = 0; k < n_runs; k++) {
        const bt_lm_epoch *h;
        int n = bt_lm_history(runs[k].lm, &h);
        for (int i = 0; i < n; i++) {
            const bt_lm_epoch *e = &h[i];
            char tr[48], va[48];
            fprintf(f, "\"%s\",%d,%s,%s,%.1f,%.6g,%.6g,%d,%.3f", runs[k].desc, e->epoch,
                    fig_text(e->train_loss, ppl, ppl ? 6 : 4, tr, sizeof tr),
                    fig_text(e->val_loss, ppl, ppl ? 6 : 4, va, sizeof va), e->tokens_per_s,
                    e->grad_norm_mean, e->grad_norm_max, e->skipped, e->elapsed);
            if (ppl) /* the losses behind the perplexities, in full precision */
                fprintf(f, ",%.17g,%s", e->train_loss, lm_cli_num(e->val_loss, va, sizeof va));
            fputc('\n', f);
        }
    }
    bt_status st = fclose(f) == 0 ? bt_atomic_write_file(path, text, len, err, errlen)
                                   : bt_error(err, errlen, BT_ERR_NOMEM,
                                              "cannot write --metrics %s: out of memory", path);
    free(text); /* open_memstream's buffer comes from the C library */
    return st;
}

typedef struct compare_opts {
    lm_cli_opts lm;
    const char *plot;
} compare_opts;

static bool read_options(cli_args *a, void *vo)
{
    compare_opts *o = vo;
    if (!lm_cli_parse(a, &o->lm))
        return false;
    o->plot = cli_get(a, "plot");
    if (!o->plot)
        o->plot = "compare.svg";
    return true;
}

/* The policies of --truncation, then the estimators of --estimator, each
 * checked before any data is read: their count, or 0 with the message
 * printed and *rc the exit status. */
static int policy_list(const bt_registry *reg, const compare_opts *o, char (*specs)[256], int *rc)
{
    const bt_lm_given *g = &o->lm.run;
    bool est = g->given[BT_LM_ESTIMATOR], pol = g->given[BT_LM_TRUNCATION] || !est;
    const char *list = g->given[BT_LM_TRUNCATION] ? g->raw[BT_LM_TRUNCATION]
                                                   : "full,fixed:10,random:0.1";
    char err[1024];
    int n = pol ? bt_lm_split_policies(reg, list, specs, MAX_POLICIES, err, sizeof err) : 0, m = 0;
    if (n < 0) {
        *rc = cli_usage(CMD, "--truncation: %s", err);
        return 0;
    }
    if (est && (m = bt_lm_split_policies(reg, g->raw[BT_LM_ESTIMATOR], specs + n,
                                         MAX_POLICIES - n, err, sizeof err)) < 0) {
        *rc = cli_usage(CMD, "--estimator: %s", err);
        return 0;
    }
    for (int k = n; k < n + m; k++)
        if (!bt_compare_is_estimator(reg, specs[k])) {
            *rc = cli_usage(CMD, "--estimator: %s is a truncation policy: give it with "
                            "--truncation", specs[k]);
            return 0;
        }
    n += m;
    for (int k = 0; k < n; k++) {
        bt_lm_config cfg = g->cfg;
        bool online = bt_compare_is_estimator(reg, specs[k]);
        cfg.truncation = online ? "full" : specs[k];
        cfg.estimator = online ? specs[k] : "";
        if (!lm_cli_validate(CMD, reg, &cfg)) {
            *rc = 1;
            return 0;
        }
    }
    return n;
}

static void print_heading(const compare_opts *o, const bt_lm_config *cfg, int n,
                          const bt_corpus *corpus, bool ppl)
{
    if (corpus)
        printf("comparing %d runs: %s, hidden %d, %d epochs on %s (%ld tokens, vocabulary %d)\n",
               n, cfg->cell, cfg->hidden, o->lm.epochs, o->lm.data, corpus->n,
               bt_vocab_size(corpus->vocab));
    else
        printf("comparing %d runs: %s, hidden %d, %d epochs on task %s (batch %d x %d steps; "
               "%s)\n", n, cfg->cell, cfg->hidden, o->lm.epochs, o->lm.task, cfg->batch,
               cfg->steps, ppl ? "cross-entropy, perplexity" : "squared error, loss");
    fflush(stdout);
}

/* Each run trained in turn, its epochs printed as they finish; false (with
 * the message printed) on an error other than a diverging run. */
static bool train_all(bt_compare_run *runs, int n, const compare_opts *o, bool ppl)
{
    bool tty = isatty(STDERR_FILENO);
    char err[1024];
    for (int k = 0; k < n; k++) {
        cmp_ctx c = {.label = runs[k].desc, .quiet = o->lm.quiet, .tty = tty, .ppl = ppl};
        bt_lm_hooks hooks = {.progress = tty ? on_progress : NULL, .epoch_done = on_epoch, .ctx = &c};
        bt_status st = bt_compare_train(&runs[k], o->lm.epochs, &hooks, err, sizeof err);
        if (tty)
            lm_cli_progress_clear();
        if (st != BT_OK) {
            cli_fail(CMD, "%s: %s", runs[k].desc, err);
            return false;
        }
        if (runs[k].diverged)
            fprintf(stderr, "bptt compare: %s diverged: %s\n", runs[k].desc, runs[k].why);
    }
    return true;
}

/* A model of one parameter (influence): its final value, where the runs went. */
static bool one_param(const bt_compare_run *r, double *theta)
{
    bt_model *m = bt_lm_model(r->lm);
    *theta = (double)bt_params_data(m->params)[0];
    return bt_params_total(m->params) == 1;
}

static void print_table(const bt_compare_run *runs, int n, bool ppl)
{
    double theta;
    bool one = one_param(&runs[0], &theta);
    printf("\n%-22s %10s %10s %9s %10s %8s %9s %9s%s\n", "policy", ppl ? "train ppl" : "train loss",
           ppl ? "val ppl" : "val loss", "tok/s", "memory", "skipped", "|g| mean", "|g| max",
           one ? "     theta" : "");
    for (int k = 0; k < n; k++) {
        const bt_compare_run *r = &runs[k];
        const bt_lm_summary *s = &r->summary;
        const bt_lm_epoch *h;
        int ne = bt_lm_history(r->lm, &h);
        char tps[32], mem[32], tr[32] = "-", va[32] = "-";
        if (ne) {
            fig_text(h[ne - 1].train_loss, ppl, ppl ? 3 : 2, tr, sizeof tr);
            if (!isnan(h[ne - 1].val_loss))
                fig_text(h[ne - 1].val_loss, ppl, ppl ? 3 : 2, va, sizeof va);
        }
        snprintf(mem, sizeof mem, "%.2f MB", (double)s->memory / 1048576.0);
        printf("%-22s %10s %10s %9s %10s %8ld %9.4f %9.4f", r->desc, tr, va,
               lm_cli_si(s->tokens_per_s, tps, sizeof tps), mem, s->skipped, s->grad_norm_mean,
               s->grad_norm_max);
        if (one && one_param(r, &theta))
            printf(" %+9.4g", theta);
        printf("%s\n", r->diverged ? "  (diverged)" : "");
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("\n%s at the last epoch; memory is what training holds (parameters,\n"
           "gradients, optimizer state, state ring, largest window arena); process peak RSS "
           "%.1f MB\n", ppl ? "perplexities are" : "losses (0.5 ||o - y||^2 per step) are",
           (double)ru.ru_maxrss / 1024.0);
    if (one)
        printf("theta: the model's one parameter at the end\n");
}

/* The table, the figure and the metrics of trained runs; 0 or 1. */
static int report(const bt_registry *reg, bt_compare_run *runs, int n, const compare_opts *o,
                  const lm_cli_data *d, const bt_lm_config *cfg, bool ppl)
{
    char err[2048] = "";
    print_table(runs, n, ppl);
    if (write_figure(o->plot, reg, runs, n, d->corpus, o->lm.task, ppl, cfg, err, sizeof err) != BT_OK)
        return cli_fail(CMD, "--plot: %s", err);
    printf("plot: %s\n", o->plot);
    if (o->lm.metrics && write_metrics(o->lm.metrics, runs, n, ppl, err, sizeof err) != BT_OK)
        return cli_fail(CMD, "%s", err);
    return 0;
}

int cmd_compare(int argc, char **argv)
{
    compare_opts o;
    bt_registry *reg;
    int rc, n = 0;
    if (!cli_begin(&cmd_compare_spec, argc, argv, read_options, &o, &reg, &rc))
        return rc;
    static char specs[MAX_POLICIES][256];
    lm_cli_data d = {.o = &o.lm, .data = o.lm.data, .task = o.lm.task};
    bt_lm_config cfg = o.lm.run.cfg;
    bt_compare_run *runs = NULL;
    bt_files *files = NULL;
    char err[2048] = "";
    rc = 2;
    if (lm_cli_check_data(CMD, &o.lm, o.lm.data, o.lm.task) &&
        (n = policy_list(reg, &o, specs, &rc)) > 0) {
        rc = 1;
        /* Every run is built first: a bad policy option fails before any training. */
        const bt_file_use uses[] = {{"--data", o.lm.data, false, 0},
                                    {"--plot", o.plot, true, 0},
                                    {"--metrics", o.lm.metrics, true, 0}};
        bt_status st = bt_files_claim(uses, 3, &files, err, sizeof err);
        if (st != BT_OK)
            rc = st == BT_ERR_ARG ? cli_usage(CMD, "%s", err) : cli_fail(CMD, "%s", err);
        else if (bt_compare_new(reg, &cfg, (const char (*)[256])specs, n, lm_cli_source, &d, &runs,
                                err, sizeof err) != BT_OK)
            cli_fail(CMD, "%s", err);
        else {
            bool ppl = runs[0].src.tokens_out;
            print_heading(&o, &cfg, n, d.corpus, ppl);
            if (train_all(runs, n, &o, ppl))
                rc = report(reg, runs, n, &o, &d, &cfg, ppl);
        }
    }
    bt_compare_free(runs, n);
    bt_files_release(files);
    bt_corpus_free(d.corpus);
    bt_registry_free(reg);
    return rc;
}
