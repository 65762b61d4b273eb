/* cmd_analyze.c: `bptt analyze`, vanishing and exploding gradients made
 * visible for one model: the gradient one loss term sends back k steps, the
 * Jacobian-product norms, the recurrent matrix's eigenvalues and the power-
 * iteration picture (models/analyze.h), as a table, JSON or an SVG figure. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "analysis_report.h"
#include "checkpoint.h"
#include "compare.h"
#include "grad_stats_report.h"
#include "cli_cell.h"
#include "corpus.h"
#include "model_file.h"
#include "paths.h"
#include "stack.h"
#include "tasks.h"

#define CMD "analyze"

static const cli_option options[] = {
    {"model", "FILE", "a checkpoint written by bptt train"},
    {"cell", "C", "rnn_tanh, linear, gru, gru_torch, lstm, influence, or a plugin's cell"},
    {"hidden", "H", "hidden size"},
    {"init", "SPEC", "normal:SIGMA, orthogonal, identity[:SCALE], spectral:RHO"},
    {"layers", "N|C:H,...", "a stack: N layers of --cell at --hidden, or a cell and width per "
                            "layer; the gradient norm against lag is shown at every layer's h"},
    {"model-file", "FILE", "the model (cell or layers, widths, init) from a JSON file "
                           "(docs/stacks.md); its dropout is not used here"},
    {"input", "N", "input size (vocabulary for token cells; default 16, real 4)"},
    {"output", "N", "output size (default: the input size for token cells, 2 for real)"},
    {"data", "FILE", "a text: rows start at evenly spaced places in it"},
    {"task", "SPEC", "adding:T, copy:T,K or influence:N,P (sizes come from the task); with "
                     "neither --data nor --task: a task model's own task, else random tokens or "
                     "N(0,1) inputs and targets"},
    {"lags", "K", "largest lag (default 30)"},
    {"batch", "B", "rows (default 4)"},
    {"seed", "S", "initialisation and data (default 0)"},
    {"estimator", "LIST", "instead: the bias and variance of these online estimators' gradients "
                          "against full BPTT's (rtrl,uoro,seed=3); see docs/estimators.md"},
    {"truncation", "LIST", "with --estimator or alone: truncation policies measured the same way "
                           "(fixed:5,random:0.9)"},
    {"draws", "N", "seeds per method for --estimator/--truncation (default 100)"},
    {"json", NULL, "print JSON instead of the table"},
    {"plot", "FILE.svg", "gradient norm against lag (log), eigenvalues with the unit circle, "
                         "power-iteration angle against |l2/l1|^k"},
    CLI_PLUGIN_OPTION,
    {NULL, NULL, NULL},
};

const cli_command cmd_analyze_spec = {
    .name = "analyze",
    .summary = "vanishing and exploding gradients: norms against lag, eigenvalues",
    .usage = "(--model FILE | --cell C --hidden H [--init SPEC] | --model-file FILE) [options]",
    .about = "How much gradient one loss term sends back in time: the loss sits on the last of\n"
             "K+1 steps alone, full BPTT, and ||dL_T/dh_{T-k}|| is read from the tape for\n"
             "k = 0..K (the norm of the whole [B,H] gradient). Also ||dh_T/dh_{T-k}||_2, the\n"
             "eigenvalues of the recurrent matrix, and power iteration on its symmetric part.",
    .notes = "With --estimator or --truncation, analyze measures gradient estimates instead:\n"
             "the exact gradient of the mean loss over the sequence (full BPTT, K+1 steps, or\n"
             "a task's length) against each method's over --draws seeds: the relative bias of\n"
             "their mean, cosine similarities, the relative variance (a table, --json, --plot).\n\n"
             "Exit status: 0 done, 1 error, 2 bad command line.",
    .options = {options},
};

/* B rows of T steps from a text (models/analyze.h: rows at evenly spaced
 * places). The model's vocabulary when it has one, else the text's. */
static bool text_sequence(const char *path, const bt_checkpoint *ck, int B, int T,
                          bt_sequence *seq, int *vocab_size)
{
    char err[1024] = "";
    int32_t *ids = NULL;
    long n = 0;
    bt_corpus *corpus = NULL;
    if (ck && ck->vocab) {
        size_t len;
        char *text;
        if (bt_corpus_read_file(path, &text, &len, err, sizeof err) != BT_OK) {
            cli_fail(CMD, "--data: %s", err);
            return false;
        }
        bt_status st = bt_vocab_encode(ck->vocab, ck->cfg.tokens, text, &ids, &n, err, sizeof err);
        bt_free(text);
        if (st != BT_OK) {
            cli_fail(CMD, "--data %s with the model's vocabulary: %s", path, err);
            return false;
        }
        *vocab_size = bt_vocab_size(ck->vocab);
    } else {
        if (bt_corpus_load(path, BT_TOKENS_CHARS, 0, &corpus, err, sizeof err) != BT_OK) {
            cli_fail(CMD, "%s", err);
            return false;
        }
        ids = corpus->ids;
        n = corpus->n;
        *vocab_size = bt_vocab_size(corpus->vocab);
    }
    bool ok = bt_probe_sequence_from_ids(ids, n, B, T, seq, err, sizeof err) == BT_OK;
    if (!ok)
        cli_fail(CMD, "--data %s has %s: lower --batch or --lags", path, err);
    if (corpus)
        bt_corpus_free(corpus);
    else
        bt_free(ids);
    return ok;
}

typedef struct analyze_opts {
    const char *model, *cell, *init, *data, *task, *plot, *estimator, *truncation, *layers,
        *model_file;
    bool json, draws_given;
    long hidden, lags, batch, seed, input, output, draws;
} analyze_opts;

static bool read_options(cli_args *a, void *vo)
{
    analyze_opts *o = vo;
    o->model = cli_get(a, "model");
    o->cell = cli_get(a, "cell");
    o->init = cli_get(a, "init");
    o->data = cli_get(a, "data");
    o->task = cli_get(a, "task");
    o->plot = cli_get(a, "plot");
    o->layers = cli_get(a, "layers");
    o->model_file = cli_get(a, "model-file");
    o->json = cli_flag(a, "json");
    o->estimator = cli_get(a, "estimator");
    o->truncation = cli_get(a, "truncation");
    o->draws_given = cli_get(a, "draws") != NULL;
    return cli_int(a, "hidden", 0, 1, 1 << 16, &o->hidden) &&
           cli_int(a, "draws", 100, 1, 1000000, &o->draws) &&
           cli_int(a, "lags", 30, 1, 100000, &o->lags) &&
           cli_int(a, "batch", 4, 1, 1 << 16, &o->batch) &&
           cli_int(a, "seed", 0, 0, LONG_MAX, &o->seed) &&
           cli_int(a, "input", 0, 1, 1 << 24, &o->input) &&
           cli_int(a, "output", 0, 1, 1 << 24, &o->output);
}

/* The combinations that cannot work; 0, or 2 with the message printed. */
static int check_options(const analyze_opts *o)
{
    char err[1024];
    if (o->model_file && (o->cell || o->hidden || o->layers || o->init || o->model))
        return cli_usage(CMD, "--model-file %s sets the model: drop --%s", o->model_file,
                         o->model ? "model" : o->cell ? "cell" : o->hidden ? "hidden"
                         : o->layers ? "layers" : "init");
    bool spec = o->cell || (o->layers && strchr(o->layers, ':'));
    if (!o->model_file && !o->model == !spec)
        return cli_usage(CMD, "give either --model FILE, --cell C --hidden H or --model-file "
                         "FILE (see bptt analyze --help)");
    if (o->model && o->layers)
        return cli_usage(CMD, "--model takes its layers from the checkpoint: drop --layers");
    if (spec && o->hidden == 0 && !(o->layers && strchr(o->layers, ':')))
        return cli_usage(CMD, "--cell %s needs --hidden H", o->cell);
    if (o->model && (o->init || o->hidden))
        return cli_usage(CMD, "--model takes its sizes and weights from the checkpoint: drop "
                         "--init/--hidden");
    if (o->data && o->task)
        return cli_usage(CMD, "give --data FILE or --task SPEC, not both");
    if (o->init && bt_init_spec_check(o->init, err, sizeof err) != BT_OK)
        return cli_usage(CMD, "%s", err);
    if (o->draws_given && !o->estimator && !o->truncation)
        return cli_usage(CMD, "--draws applies to --estimator and --truncation");
    return 0;
}

/* What is analysed: the model, the probe sequence and where it came from. */
typedef struct probe {
    bt_checkpoint *ck;
    bt_model *m;
    bt_source src;     /* a task's, when the data is a task */
    bt_sequence seq;
    bool seq_owned;    /* seq's buffers are ours (text or random), not the task's */
    const char *task, *data_desc;
    int K, vocab;
    bt_rng rng;
    bool usage;        /* a failure was the command line's (exit 2) */
} probe;

static void probe_free(probe *p)
{
    if (p->seq_owned)
        bt_probe_sequence_free(&p->seq);
    bt_source_free(&p->src);
    bt_model_free(p->m);
    bt_checkpoint_free(p->ck);
}

/* The task's first minibatch (lags limited to its length); false with the message printed. */
static bool task_sequence(probe *p, int B, uint64_t seed)
{
    char err[1024] = "";
    if (bt_task_source_new(p->task, B, seed, &p->src, err, sizeof err) != BT_OK)
        return cli_fail(CMD, "%s", err), false;
    p->src.epoch(p->src.ctx, &p->rng);
    if (!p->src.next(p->src.ctx, &p->seq))
        return cli_fail(CMD, "task %s gave no sequence", p->task), false;
    if (p->seq.T < p->K + 1) {
        fprintf(stderr, "bptt analyze: task %s has %d steps: lags limited to %d\n", p->task,
                p->seq.T, p->seq.T - 1);
        p->K = p->seq.T - 1;
    }
    p->data_desc = p->task;
    return true;
}

/* A new model of --cell: sizes from the options, the task or the text. */
/* The architecture: the model file's, or --cell/--hidden/--layers/--init in
 * canonical form; false with the message printed. */
static bool arch_of(const analyze_opts *o, bt_model_file *mf)
{
    char err[1024] = "";
    if (o->model_file) {
        if (bt_model_file_read(o->model_file, mf, err, sizeof err) != BT_OK)
            return cli_fail(CMD, "%s", err), false;
        return true;
    }
    memset(mf, 0, sizeof *mf);
    snprintf(mf->cell, sizeof mf->cell, "%s", o->cell ? o->cell : "");
    snprintf(mf->layers, sizeof mf->layers, "%s", o->layers ? o->layers : "");
    snprintf(mf->init, sizeof mf->init, "%s", o->init ? o->init : "");
    mf->hidden = (int)o->hidden;
    if (bt_layers_canonical(mf->layers, sizeof mf->layers, mf->cell, sizeof mf->cell, &mf->hidden,
                            err, sizeof err) != BT_OK)
        return cli_usage(CMD, "%s", err), false;
    return true;
}

static bool cell_model(probe *p, const bt_registry *reg, const analyze_opts *o)
{
    char err[1024] = "";
    bt_model_file mf;
    if (!arch_of(o, &mf)) {
        p->usage = !o->model_file;
        return false;
    }
    const bt_cell_def *def = cli_cell_find(reg, mf.cell, CMD);
    if (!def)
        return false;
    bool tokens = def->input == BT_INPUT_TOKENS;
    bool infl = strcmp(def->name, "influence") == 0;
    bt_cell_dims dims = {tokens ? 16 : infl ? (mf.hidden + 1) / 2 : 4, mf.hidden,
                         tokens ? 16 : infl ? 1 : 2};
    if (o->input)
        dims.input = (int)o->input;
    dims.output = o->output ? (int)o->output : tokens && o->input ? (int)o->input : dims.output;
    if (p->task) {
        dims.input = p->src.input_size;
        dims.output = p->src.output_size;
    } else if (o->data) {
        dims.input = dims.output = p->vocab;
    }
    if (bt_model_from_arch(reg, mf.layers, mf.cell, mf.hidden, 0, false, dims.input, dims.output,
                           &p->m, err, sizeof err) != BT_OK)
        return cli_fail(CMD, "%s", err), false;
    bt_status st = bt_model_init(p->m, mf.init, &p->rng, err, sizeof err);
    if (st == BT_ERR_ARG) /* the spec parsed: it does not suit this cell */
        p->usage = true;
    if (st != BT_OK)
        return cli_fail(CMD, "%s", err), false;
    return true;
}

/* Model and data, from the checkpoint, the cell, the task, the text or random
 * draws, checked against each other; false with the message printed. */
static bool probe_new(probe *p, const bt_registry *reg, const analyze_opts *o)
{
    char err[2048] = "";
    int B = (int)o->batch;
    p->K = (int)o->lags;
    p->task = o->task;
    p->data_desc = "random";
    bt_rng_seed(&p->rng, (uint64_t)o->seed);
    if (o->model) {
        if (bt_checkpoint_read(o->model, &p->ck, err, sizeof err) != BT_OK)
            return cli_fail(CMD, "%s", err), false;
        if (!p->task && !o->data && p->ck->task[0])
            p->task = p->ck->task; /* a task model is analysed on its own task by default */
    }
    if (p->task && !task_sequence(p, B, (uint64_t)o->seed))
        return false;
    if (o->model) {
        if (bt_checkpoint_model(p->ck, reg, &p->m, err, sizeof err) != BT_OK)
            return cli_fail(CMD, "%s", err), false;
        if (p->task && (p->src.input_size != p->m->dims.input ||
                        p->src.output_size != p->m->dims.output))
            return cli_fail(CMD, "task %s has input %d and output %d; the model takes %d and %d",
                            p->task, p->src.input_size, p->src.output_size, p->m->dims.input,
                            p->m->dims.output), false;
    }
    if (o->data) {
        if (!text_sequence(o->data, p->ck, B, p->K + 1, &p->seq, &p->vocab))
            return false;
        p->seq_owned = true;
        p->data_desc = o->data;
    }
    if (!p->m && !cell_model(p, reg, o))
        return false;
    bool tokens = p->m->cell->input == BT_INPUT_TOKENS;
    if ((p->task && tokens != p->src.tokens_in) || (o->data && !tokens))
        return cli_fail(CMD, "cell %s takes %s inputs; %s gives %s", p->m->cell->name,
                        tokens ? "token" : "real", p->data_desc,
                        (p->task ? p->src.tokens_in : true) ? "tokens" : "real vectors"), false;
    if (!p->task && !o->data) {
        if (bt_probe_sequence_new(p->m, B, p->K + 1, &p->rng, &p->seq) != BT_OK)
            return cli_fail(CMD, "out of memory"), false;
        p->seq_owned = true;
    }
    return true;
}

/* The analysis as JSON (the run's settings first, then the figures, on one
 * line) or as a table; then the figure. 0 or 1. */
static int report(const bt_analysis *an, const probe *p, const analyze_opts *o)
{
    const char *cell_name = p->m->cell->name;
    const char *init_desc = o->model ? o->model : o->init ? o->init : "cell default";
    char init_buf[192];
    if (!o->model && o->init && *o->init && bt_init_count(p->m, o->init) == 0) {
        /* A cell with no recurrent matrix (influence) keeps its own weights. */
        snprintf(init_buf, sizeof init_buf, "cell default (--init %s has nothing to set: cell %s "
                 "has no recurrent matrix)", o->init, cell_name);
        init_desc = init_buf;
    }
    if (o->json) {
        json_t *j = json_pack("{s:s, s:s, s:s, s:i, s:I}", "cell", cell_name, "init", init_desc,
                              "data", p->data_desc, "batch", (int)o->batch, "seed",
                              (json_int_t)o->seed);
        json_t *figures = cli_analysis_to_json(an);
        bool ok = j && figures && json_object_update(j, figures) == 0 &&
                  json_dumpf(j, stdout, JSON_COMPACT | JSON_REAL_PRECISION(10)) == 0;
        json_decref(j);
        json_decref(figures);
        if (!ok)
            return cli_fail(CMD, "out of memory");
        putchar('\n');
    } else {
        printf("cell %s, hidden %d, init %s, %s data, %d rows, lags 0..%d\n", cell_name,
               p->m->dims.hidden, init_desc, p->data_desc, (int)o->batch, p->K);
        cli_analysis_print(an, stdout);
    }
    if (!o->plot)
        return 0;
    char title[256], err[2048] = "";
    snprintf(title, sizeof title, "bptt analyze: %s, hidden %d, init %s", cell_name,
             p->m->dims.hidden, init_desc);
    if (cli_analysis_svg(an, title, o->plot, err, sizeof err) != BT_OK)
        return cli_fail(CMD, "%s", err);
    fprintf(o->json ? stderr : stdout, "wrote %s\n", o->plot);
    return 0;
}

/* The methods of --truncation and --estimator, in that order: their count,
 * or 0 with the message printed. */
static int method_list(const bt_registry *reg, const analyze_opts *o, char (*specs)[256], int max)
{
    char err[1024];
    int n = 0, m = 0;
    if (o->truncation && (n = bt_lm_split_policies(reg, o->truncation, specs, max, err,
                                                   sizeof err)) < 0)
        return cli_usage(CMD, "--truncation: %s", err), 0;
    if (o->estimator && (m = bt_lm_split_policies(reg, o->estimator, specs + n, max - n, err,
                                                  sizeof err)) < 0)
        return cli_usage(CMD, "--estimator: %s", err), 0;
    for (int k = n; k < n + m; k++)
        if (!bt_compare_is_estimator(reg, specs[k]))
            return cli_usage(CMD, "--estimator: %s is a truncation policy: give it with "
                             "--truncation", specs[k]), 0;
    return n + m;
}

/* The gradient-estimate report: table or JSON, then the figure. 0 or 1. */
static int stats_report(const bt_grad_stats *s, int n, double gnorm, const probe *p,
                        const analyze_opts *o)
{
    const char *cell = p->m->cell->name;
    if (o->json) {
        json_t *j = json_pack("{s:s, s:s, s:i, s:i, s:I, s:f, s:o}", "cell", cell, "data",
                              p->data_desc, "batch", p->seq.B, "steps", p->seq.T, "seed",
                              (json_int_t)o->seed, "exact_norm", gnorm, "methods",
                              cli_grad_stats_to_json(s, n));
        bool ok = j && json_dumpf(j, stdout, JSON_COMPACT | JSON_REAL_PRECISION(10)) == 0;
        json_decref(j);
        if (!ok)
            return cli_fail(CMD, "out of memory");
        putchar('\n');
    } else {
        printf("cell %s, hidden %d, %s data, %d rows x %d steps, seeds %ld..%ld\n", cell,
               p->m->dims.hidden, p->data_desc, p->seq.B, p->seq.T, o->seed, o->seed + o->draws - 1);
        cli_grad_stats_print(s, n, gnorm, stdout);
    }
    if (!o->plot)
        return 0;
    char title[256], err[2048] = "";
    snprintf(title, sizeof title, "bptt analyze: gradient estimates against full BPTT, %s, "
             "hidden %d, %d x %d steps", cell, p->m->dims.hidden, p->seq.B, p->seq.T);
    if (cli_grad_stats_svg(s, n, title, o->plot, err, sizeof err) != BT_OK)
        return cli_fail(CMD, "%s", err);
    fprintf(o->json ? stderr : stdout, "wrote %s\n", o->plot);
    return 0;
}

/* --estimator / --truncation: each method's estimates against full BPTT's
 * gradient over the whole probe sequence. 0, 1 or 2. */
static int estimate_part(const bt_registry *reg, probe *p, const analyze_opts *o)
{
    enum { MAX_METHODS = 16 };
    static char specs[MAX_METHODS][256];
    int n = method_list(reg, o, specs, MAX_METHODS);
    if (n == 0)
        return 2;
    char err[2048] = "";
    size_t P = bt_params_total(p->m->params);
    bt_real *g = bt_malloc(sizeof(bt_real) * (P ? P : 1));
    static bt_grad_stats s[MAX_METHODS];
    double gnorm = 0;
    int rc = 1, done = 0;
    if (!g)
        cli_fail(CMD, "out of memory");
    else if (bt_grad_exact(reg, p->m, &p->seq, g, &gnorm, err, sizeof err) != BT_OK)
        cli_fail(CMD, "full BPTT: %s", err);
    else {
        for (; done < n; done++)
            if (bt_grad_stats_run(reg, p->m, &p->seq, specs[done], (int)o->draws,
                                  (uint64_t)o->seed, g, gnorm, &s[done], err, sizeof err) != BT_OK)
                break;
        if (done < n)
            cli_fail(CMD, "%s: %s", specs[done], err);
        else
            rc = stats_report(s, n, gnorm, p, o);
    }
    for (int k = 0; k < done; k++)
        bt_grad_stats_free(&s[k]);
    bt_free(g);
    return rc;
}

int cmd_analyze(int argc, char **argv)
{
    analyze_opts o;
    bt_registry *reg;
    int rc;
    if (!cli_begin(&cmd_analyze_spec, argc, argv, read_options, &o, &reg, &rc))
        return rc;
    probe p = {0};
    bt_analysis an = {0};
    bt_files *files = NULL;
    char err[2048] = "";
    const bt_file_use uses[] = {{"--model", o.model, false, 0}, {"--data", o.data, false, 0},
                                {"--plot", o.plot, true, 0}};
    bt_status st;
    if (!(rc = check_options(&o)) &&
        (st = bt_files_claim(uses, 3, &files, err, sizeof err)) != BT_OK)
        rc = st == BT_ERR_ARG ? cli_usage(CMD, "%s", err) : cli_fail(CMD, "%s", err);
    else if (!rc) {
        rc = 1;
        if (probe_new(&p, reg, &o)) {
            if (o.estimator || o.truncation)
                rc = estimate_part(reg, &p, &o);
            else if (bt_analysis_run(p.m, &p.seq, NULL, p.K, 0, (uint64_t)o.seed, &an, err,
                                sizeof err) != BT_OK)
                cli_fail(CMD, "%s", err);
            else
                rc = report(&an, &p, &o);
        } else if (p.usage) {
            rc = 2;
        }
    }
    bt_analysis_free(&an);
    probe_free(&p);
    bt_files_release(files);
    bt_registry_free(reg);
    return rc;
}
