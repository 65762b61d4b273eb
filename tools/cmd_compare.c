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
#include "generate.h"
#include "lm_cli.h"
#include "svg.h"

#define CMD "compare"
#define MAX_POLICIES 16
#define SEG_CHARS 60

static const cli_option options[] = {
    {"truncation", "LIST", "policies separated by commas; options may hold commas too: "
                           "full,fixed:35,random:0.1,seed=3,tbptt:5,35 (default "
                           "full,fixed:10,random:0.1)"},
    {"plot", "FILE.svg", "perplexity (or loss) curves and segments picture (default compare.svg)"},
    {NULL, NULL, NULL},
};

const cli_command cmd_compare_spec = {
    .name = "compare",
    .summary = "train once per truncation policy and compare them",
    .usage = "(--data FILE | --task SPEC) --truncation LIST [options]",
    .about = "Trains the same model once per truncation policy (same initialisation, same\n"
             "minibatches) and compares them. Real-valued tasks report the loss.",
    .notes = "The table's memory column is what training holds: parameters, gradients,\n"
             "optimizer state, carried state and the unroller's state ring, plus the largest\n"
             "window arena (activations and tape). The process peak RSS is printed below it.",
    .options = {lm_cli_options, options},
};

typedef struct result {
    char spec[256], desc[128];
    const bt_lm_epoch *hist; /* owned by lm */
    int n;
    bt_lm *lm;
    bt_source src;
    bool diverged;
    char why[512];
    double tok_s, gmean, gmax;
    long skipped;
    size_t memory;
} result;

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

/* Where policy `spec` cuts the first n tokens when they are trained as
 * sequences of T steps: at every sequence start, at each xi == 0 edge, and
 * after each update (TBPTT's K1 boundaries). */
static bool policy_cuts(const bt_registry *r, const char *spec, int T, uint64_t seed, int *cut,
                        int n)
{
    char name[BT_NAME_LEN + 1], err[256];
    const char *opts;
    bt_split_spec(spec, name, sizeof name, &opts);
    const bt_policy_def *def = bt_registry_policy(r, name);
    void *st = NULL;
    if (!def || bt_policy_create(def, opts, &st, err, sizeof err) != BT_OK)
        return false;
    bt_rng rng;
    bt_rng_seed(&rng, seed);
    bool updated = false;
    for (int i = 0; i < n; i++) {
        long t = i % T;
        if (t == 0 && def->begin)
            def->begin(st, bt_rng_next(&rng));
        bt_policy_decision d = {.xi = 1, .update = false, .reach = 0};
        def->decide(st, t, &d);
        cut[i] = t == 0 || d.xi == 0 || updated;
        updated = d.update;
    }
    def->destroy(st);
    return true;
}

/* c is the text, or NULL for a task (its steps are drawn as blank cells). */
static bt_status write_figure(const char *path, const bt_registry *reg, result *res, int n_res,
                              const bt_corpus *c, const char *task, bool ppl,
                              const bt_lm_config *cfg, char *err, size_t errlen)
{
    char title[512];
    snprintf(title, sizeof title, "Truncation compared: %s, hidden %d, batch %d x %d steps, %s%s%s",
             cfg->cell, cfg->hidden, cfg->batch, cfg->steps, cfg->optimizer, task ? ", task " : "",
             task ? task : "");
    const char *what = ppl ? "perplexity" : "loss";
    char t1[64], t2[64];
    snprintf(t1, sizeof t1, "Training %s", what);
    snprintf(t2, sizeof t2, "Validation %s", what);
    bt_figure *f = bt_figure_new(title, 2);
    bt_plot *tr = bt_plot_new(t1, "epoch", what);
    bt_plot *va = bt_plot_new(t2, "epoch", what);
    if (!f || !tr || !va) {
        bt_figure_free(f);
        bt_plot_free(tr);
        bt_plot_free(va);
        snprintf(err, errlen, "out of memory for the figure");
        return BT_ERR_NOMEM;
    }
    bt_plot_set_logy(tr, true);
    bt_plot_set_logy(va, true);
    bool any_val = false;
    for (int k = 0; k < n_res; k++) {
        int n = res[k].n;
        double *x = bt_malloc(sizeof(double) * 3 * (size_t)(n ? n : 1));
        if (!x)
            continue;
        for (int i = 0; i < n; i++) {
            x[i] = res[k].hist[i].epoch;
            x[n + i] = train_fig(&res[k].hist[i], ppl);
            x[2 * n + i] = val_fig(&res[k].hist[i], ppl);
            any_val |= !isnan(x[2 * n + i]);
        }
        bt_plot_line(tr, res[k].desc, x, x + n, n);
        bt_plot_line(va, res[k].desc, x, x + 2 * n, n);
        bt_free(x);
    }
    bt_figure_add(f, tr);
    if (any_val)
        bt_figure_add(f, va);
    else
        bt_plot_free(va);
    /* The segments picture: the text as the model reads it, cut per policy
     * (a task's steps as blank cells). */
    int n = !c ? SEG_CHARS : c->n < SEG_CHARS ? (int)c->n : SEG_CHARS;
    char *text = c ? bt_decode_ids(c->vocab, c->ids, n) : bt_calloc((size_t)n + 1, 1);
    if (text && !c)
        memset(text, ' ', (size_t)n);
    int *cuts = bt_calloc((size_t)n * (size_t)n_res, sizeof(int));
    bt_segments_row rows[MAX_POLICIES];
    int n_rows = 0;
    for (int k = 0; text && cuts && k < n_res; k++)
        if (policy_cuts(reg, res[k].spec, cfg->steps, cfg->seed, cuts + (size_t)k * n, n))
            rows[n_rows++] = (bt_segments_row){res[k].desc, cuts + (size_t)k * n};
    char stitle[128];
    snprintf(stitle, sizeof stitle, "Segments of the first %d %s (%d-step minibatches)", n,
             c ? "tokens" : "steps", cfg->steps);
    if (text && n_rows)
        bt_figure_add_segments(f, stitle, text, n, rows, n_rows);
    bt_free(text);
    bt_free(cuts);
    bt_status st = bt_figure_write(f, path, err, errlen);
    bt_figure_free(f);
    return st;
}

static bt_status write_metrics(const char *path, result *res, int n_res, bool ppl, char *err,
                               size_t errlen)
{
    /* Built in memory, then written atomically: a reader never sees half a table. */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        snprintf(err, errlen, "cannot write --metrics %s: out of memory", path);
        return BT_ERR_NOMEM;
    }
    const char *w = ppl ? "ppl" : "loss";
    fprintf(f, "policy,epoch,train_%s,val_%s,tokens_per_s,grad_norm_mean,grad_norm_max,"
               "skipped,seconds%s\n", w, w, ppl ? ",train_loss,val_loss" : "");
    for (int k = 0; k < n_res; k++)
        for (int i = 0; i < res[k].n; i++) {
            const bt_lm_epoch *e = &res[k].hist[i];
            char tr[48], va[48];
            fprintf(f, "\"%s\",%d,%s,%s,%.1f,%.6g,%.6g,%d,%.3f", res[k].desc, e->epoch,
                    fig_text(e->train_loss, ppl, ppl ? 6 : 4, tr, sizeof tr),
                    fig_text(e->val_loss, ppl, ppl ? 6 : 4, va, sizeof va), e->tokens_per_s,
                    e->grad_norm_mean, e->grad_norm_max, e->skipped, e->elapsed);
            if (ppl) /* the losses behind the perplexities, in full precision */
                fprintf(f, ",%.17g,%s", e->train_loss, lm_cli_num(e->val_loss, va, sizeof va));
            fputc('\n', f);
        }
    bt_status st = fclose(f) == 0 ? bt_atomic_write_file(path, text, len, err, errlen)
                                   : bt_error(err, errlen, BT_ERR_NOMEM,
                                              "cannot write --metrics %s: out of memory", path);
    free(text); /* open_memstream's buffer comes from the C library */
    return st;
}

int cmd_compare(int argc, char **argv)
{
    cli_args a;
    int rc, n_res = 0;
    if (!cli_args_begin(&a, &cmd_compare_spec, argc, argv, &rc))
        return rc;
    rc = 2;
    bt_registry *reg = NULL;
    bt_corpus *corpus = NULL;
    result *res = NULL;
    char err[2048] = "";
    lm_cli_opts o;
    if (!lm_cli_parse(&a, CMD, &o))
        goto out;
    const char *plot = cli_get(&a, "plot");
    if (!plot)
        plot = "compare.svg";
    const char *list = o.given[LO_TRUNCATION] ? o.raw[LO_TRUNCATION] : "full,fixed:10,random:0.1";
    if (!(reg = cli_load_plugins(&a))) {
        rc = 1;
        goto out;
    }
    cli_args_check_read(&a);
    if (!lm_cli_check_data(CMD, &o, o.data, o.task))
        goto out;
    static char specs[MAX_POLICIES][256];
    _Static_assert(sizeof specs[0] == sizeof ((bt_lm_config *)0)->truncation, "spec sizes");
    int n_pol = bt_lm_split_policies(reg, list, specs, MAX_POLICIES, err, sizeof err);
    if (n_pol < 0) {
        cli_fail(CMD, "--truncation: %s", err);
        goto out;
    }
    rc = 1;
    for (int k = 0; k < n_pol; k++) {
        bt_lm_config cfg = o.cfg;
        memcpy(cfg.truncation, specs[k], sizeof cfg.truncation);
        if (!lm_cli_validate(CMD, reg, &cfg))
            goto out;
    }
    if (bt_atomic_check_writable(plot, err, sizeof err) != BT_OK) {
        cli_fail(CMD, "--plot: %s", err);
        goto out;
    }
    if (!(res = bt_calloc((size_t)n_pol, sizeof *res)))
        goto out;
    /* Build every run first: a bad policy option fails before any training. */
    for (int k = 0; k < n_pol; k++, n_res++) {
        result *r = &res[k];
        bt_lm_config cfg = o.cfg;
        memcpy(r->spec, specs[k], sizeof r->spec); /* both 256 bytes, NUL-terminated */
        memcpy(cfg.truncation, specs[k], sizeof cfg.truncation);
        /* One source per run; a task with the same seed gives the same minibatches. */
        if (!lm_cli_source(CMD, &o, o.data, o.task, &cfg, &corpus, &r->src))
            goto out;
        o.cfg.steps = cfg.steps; /* a task's length, for the figure */
        if (bt_lm_new(reg, &cfg, &r->src, &r->lm, err, sizeof err) != BT_OK) {
            cli_fail(CMD, "%s", err);
            bt_source_free(&r->src);
            goto out;
        }
        bt_lm_policy_describe(r->lm, r->desc, sizeof r->desc);
    }
    bool ppl = res[0].src.tokens_out;
    if (corpus)
        printf("comparing %d policies: %s, hidden %d, %d epochs on %s (%ld tokens, vocabulary %d)\n",
               n_pol, o.cfg.cell, o.cfg.hidden, o.epochs, o.data, corpus->n,
               bt_vocab_size(corpus->vocab));
    else
        printf("comparing %d policies: %s, hidden %d, %d epochs on task %s (batch %d x %d steps; "
               "%s)\n", n_pol, o.cfg.cell, o.cfg.hidden, o.epochs, o.task, o.cfg.batch,
               o.cfg.steps, ppl ? "cross-entropy, perplexity" : "squared error, loss");
    fflush(stdout);
    bool tty = isatty(STDERR_FILENO);
    for (int k = 0; k < n_res; k++) {
        result *r = &res[k];
        cmp_ctx c = {.label = r->desc, .quiet = o.quiet, .tty = tty, .ppl = ppl};
        bt_lm_hooks hooks = {.progress = tty ? on_progress : NULL, .epoch_done = on_epoch, .ctx = &c};
        bt_status st = bt_lm_train(r->lm, o.epochs, &hooks, r->why, sizeof r->why);
        if (tty)
            lm_cli_progress_clear();
        if (st == BT_ERR_NUMERIC) {
            r->diverged = true;
            fprintf(stderr, "bptt compare: %s diverged: %s\n", r->desc, r->why);
        } else if (st != BT_OK) {
            cli_fail(CMD, "%s: %s", r->desc, r->why);
            goto out;
        }
        r->n = bt_lm_history(r->lm, &r->hist);
        double tok = 0, secs = 0, gsum = 0;
        long upd = 0;
        for (int i = 0; i < r->n; i++) {
            const bt_lm_epoch *e = &r->hist[i];
            if (e->tokens_per_s > 0)
                tok += e->tokens_per_s * e->seconds, secs += e->seconds;
            gsum += e->grad_norm_mean * (e->updates - e->skipped);
            upd += e->updates - e->skipped;
            r->skipped += e->skipped;
            if (e->grad_norm_max > r->gmax)
                r->gmax = e->grad_norm_max;
        }
        r->tok_s = secs > 0 ? tok / secs : 0;
        r->gmean = upd ? gsum / (double)upd : 0;
        r->memory = bt_lm_memory(r->lm);
    }

    printf("\n%-22s %10s %10s %9s %10s %8s %9s %9s\n", "policy", ppl ? "train ppl" : "train loss",
           ppl ? "val ppl" : "val loss", "tok/s", "memory", "skipped", "|g| mean", "|g| max");
    for (int k = 0; k < n_res; k++) {
        result *r = &res[k];
        char tps[32], mem[32], tr[32] = "-", va[32] = "-";
        if (r->n) {
            fig_text(r->hist[r->n - 1].train_loss, ppl, ppl ? 3 : 2, tr, sizeof tr);
            if (!isnan(r->hist[r->n - 1].val_loss))
                fig_text(r->hist[r->n - 1].val_loss, ppl, ppl ? 3 : 2, va, sizeof va);
        }
        snprintf(mem, sizeof mem, "%.2f MB", (double)r->memory / 1048576.0);
        printf("%-22s %10s %10s %9s %10s %8ld %9.4f %9.4f%s\n", r->desc, tr, va,
               lm_cli_si(r->tok_s, tps, sizeof tps), mem, r->skipped, r->gmean, r->gmax,
               r->diverged ? "  (diverged)" : "");
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("\n%s at the last epoch; memory is what training holds (parameters,\n"
           "gradients, optimizer state, state ring, largest window arena); process peak RSS "
           "%.1f MB\n", ppl ? "perplexities are" : "losses (0.5 ||o - y||^2 per step) are",
           (double)ru.ru_maxrss / 1024.0);
    if (write_figure(plot, reg, res, n_res, corpus, o.task, ppl, &o.cfg, err, sizeof err) != BT_OK) {
        cli_fail(CMD, "--plot: %s", err);
        goto out;
    }
    printf("plot: %s\n", plot);
    if (o.metrics && write_metrics(o.metrics, res, n_res, ppl, err, sizeof err) != BT_OK) {
        cli_fail(CMD, "%s", err);
        goto out;
    }
    rc = 0;
out:
    for (int k = 0; k < n_res; k++) {
        bt_lm_free(res[k].lm);
        bt_source_free(&res[k].src);
    }
    bt_free(res);
    bt_corpus_free(corpus);
    bt_registry_free(reg);
    cli_args_free(&a);
    return rc;
}
