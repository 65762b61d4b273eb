/* lm_cli.c: the run options shared by `bptt train` and `bptt compare`, and
 * the bits of output both print (progress line, greedy sample). */
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bt_clock.h"
#include "generate.h"
#include "lm_cli.h"
#include "model_file.h"
#include "stack.h"
#include "tasks.h"

const cli_option lm_cli_options[] = {
    {"data", "FILE", "UTF-8 text to train on"},
    {"task", "SPEC", "a generated task instead of a text: adding:T, copy:T,K or "
                     "influence:N,P[,len=L] (see docs/analysis.md); the task fixes the steps per "
                     "sequence, so --steps is not needed"},
    {"tokens", "chars|letters", "every character (default), or d2l's a-z + space + <unk>"},
    {"cell", "NAME", "recurrent cell (default rnn_tanh; see bptt plugins)"},
    {"hidden", "H", "state size (default 512)"},
    {"layers", "N|C:H,...", "a stack: N layers of --cell at --hidden, or a cell and width per "
                            "layer (gru:256,lstm:128); see docs/stacks.md"},
    {"dropout", "P", "dropout on each layer's output in training (makes a stack; default 0)"},
    {"variational", NULL, "one dropout mask per sequence, shared by its steps"},
    {"model-file", "FILE", "the model (cell or layers, widths, dropout, init) from a JSON file "
                           "instead of those options; docs/stacks.md"},
    {"batch", "B", "rows per minibatch (default 32)"},
    {"steps", "T", "steps per minibatch (default 35; a task sets its own)"},
    {"epochs", "N", "epochs to train (default 10)"},
    {"optimizer", "SPEC", "sgd:lr=1 (default), momentum:lr=0.1,mu=0.9, adam:lr=0.002..."},
    {"clip", "THETA", "global gradient-norm clipping (default 1; 0 disables)"},
    {"init", "SPEC", "normal:SIGMA, orthogonal, identity[:SCALE], spectral:RHO (default: the "
                     "cell's own, N(0, 0.01^2) weights, zero biases)"},
    {"seed", "S", "initialisation, data offsets and policy draws (default 0)"},
    {"sampling", "MODE", "sequential (state carried across minibatches, default) or random "
                         "(shuffled subsequences, fresh state)"},
    {"max-tokens", "N", "use only the first N tokens of the text (0: all, default)"},
    {"val-fraction", "F", "hold out the last F of the tokens for validation perplexity (default "
                          "0; 0.1 is a good choice)"},
    {"update-every", "N", "with an online estimator: a parameter update after every N steps "
                          "(default 1) and at the end of each minibatch"},
    CLI_CHECKPOINT_OPTIONS,
    {"metrics", "FILE.csv", "per-epoch figures as CSV (compare: with a policy column)"},
    CLI_PLUGIN_OPTION,
    {"quiet", NULL, "no per-epoch lines"},
    {NULL, NULL, NULL},
};

/* A text setting: its value (argv's, of any length) into *dst, remembered as given. */
static void get_str(cli_args *a, bt_lm_given *g, bt_lm_setting id, const char **dst)
{
    const char *v = cli_get(a, bt_lm_setting_name(id));
    if (!v)
        return;
    *dst = v;
    g->given[id] = true;
    g->raw[id] = v;
}

/* A number setting: read with cli_int / cli_double, remembered as given. */
static void note_given(cli_args *a, bt_lm_given *g, bt_lm_setting id)
{
    g->raw[id] = cli_get(a, bt_lm_setting_name(id));
    g->given[id] = g->raw[id] != NULL;
}

static bool get_int(cli_args *a, bt_lm_given *g, bt_lm_setting id, long min, long max, int *out)
{
    long v;
    note_given(a, g, id);
    if (!cli_int(a, bt_lm_setting_name(id), *out, min, max, &v))
        return false;
    *out = (int)v;
    return true;
}

/* --tokens and --sampling: names of the text's tokens and minibatch order. */
static bool get_text_modes(cli_args *a, bt_lm_given *g)
{
    bt_lm_config *c = &g->cfg;
    const char *tok = cli_get(a, "tokens"), *smp = cli_get(a, "sampling");
    char err[256];
    if (tok && bt_tokens_kind_parse(tok, &c->tokens, err, sizeof err) != BT_OK) {
        fprintf(stderr, "bptt: --tokens: %s\n", err);
        return false;
    }
    g->given[BT_LM_TOKENS] = tok != NULL;
    g->raw[BT_LM_TOKENS] = tok;
    if (smp && strcmp(smp, "sequential") != 0 && strcmp(smp, "random") != 0) {
        fprintf(stderr, "bptt: --sampling %s: use 'sequential' (state carried between "
                        "minibatches) or 'random' (shuffled, fresh state)\n", smp);
        return false;
    }
    if (smp)
        c->sampling = strcmp(smp, "random") == 0 ? BT_BATCH_RANDOM : BT_BATCH_SEQUENTIAL;
    g->given[BT_LM_SAMPLING] = smp != NULL;
    g->raw[BT_LM_SAMPLING] = smp;
    return true;
}

/* --model-file FILE: the model's settings from the file, each marked given
 * (so a resume checks them); refused beside the options it replaces. */
/* Strings the parser makes rather than finds in argv (a stack's layer-1 cell,
 * a model file's cell and init): the config borrows them, so they live as long
 * as the process does, like argv (a command parses its line once). */
static char made_cell[64], made_init[128];

static bool arch_from_file(cli_args *a, bt_lm_given *g, const char *path)
{
    static const bt_lm_setting set[] = {BT_LM_CELL, BT_LM_HIDDEN, BT_LM_LAYERS, BT_LM_DROPOUT,
                                        BT_LM_INIT};
    bt_lm_config *c = &g->cfg;
    char err[1024];
    for (size_t i = 0; i < sizeof set / sizeof *set; i++)
        if (cli_get(a, bt_lm_setting_name(set[i]))) {
            fprintf(stderr, "bptt: --model-file %s sets the model: drop --%s\n", path,
                    bt_lm_setting_name(set[i]));
            return false;
        }
    if (cli_flag(a, "variational")) {
        fprintf(stderr, "bptt: --model-file %s sets the model: drop --variational\n", path);
        return false;
    }
    bt_model_file mf;
    if (bt_model_file_read(path, &mf, err, sizeof err) != BT_OK) {
        fprintf(stderr, "bptt: %s\n", err);
        return false;
    }
    snprintf(made_cell, sizeof made_cell, "%s", mf.cell);
    snprintf(made_init, sizeof made_init, "%s", mf.init);
    c->cell = made_cell;
    c->init = made_init;
    snprintf(c->layers, sizeof c->layers, "%s", mf.layers);
    c->hidden = mf.hidden;
    c->dropout = mf.dropout;
    c->variational = mf.variational;
    for (size_t i = 0; i < sizeof set / sizeof *set; i++) {
        g->given[set[i]] = true;
        g->raw[set[i]] = path;
    }
    return true;
}

bool lm_cli_arch(cli_args *a, bt_lm_given *g)
{
    bt_lm_config *c = &g->cfg;
    char err[512] = "";
    const char *file = cli_get(a, "model-file");
    if (file)
        return arch_from_file(a, g, file);
    const char *layers = cli_get(a, "layers");
    note_given(a, g, BT_LM_LAYERS);
    if (layers && strlen(layers) >= sizeof c->layers) {
        fprintf(stderr, "bptt: --layers: value too long (at most %zu characters)\n",
                sizeof c->layers - 1);
        return false;
    }
    if (layers)
        memcpy(c->layers, layers, strlen(layers) + 1);
    note_given(a, g, BT_LM_DROPOUT);
    c->variational = cli_flag(a, "variational");
    if (!cli_double(a, "dropout", c->dropout, 0, 0.99, &c->dropout))
        return false;
    if (c->variational && !(c->dropout > 0)) {
        fprintf(stderr, "bptt: --variational needs --dropout P (P > 0)\n");
        return false;
    }
    if (c->variational && !g->raw[BT_LM_DROPOUT]) /* a given flag is a given setting */
        g->raw[BT_LM_DROPOUT] = "(variational)";
    g->given[BT_LM_DROPOUT] = g->given[BT_LM_DROPOUT] || c->variational;
    if (snprintf(made_cell, sizeof made_cell, "%s", c->cell) >= (int)sizeof made_cell ||
        bt_layers_canonical(c->layers, sizeof c->layers, made_cell, sizeof made_cell, &c->hidden,
                            err, sizeof err) != BT_OK) {
        fprintf(stderr, "bptt: %s\n", made_cell[0] && !err[0] ? "--cell: name too long" : err);
        return false;
    }
    c->cell = made_cell;
    return true;
}

void lm_cli_print_arch(const bt_lm_config *c)
{
    if (!c->layers[0] && !(c->dropout > 0))
        return;
    printf("  layers %s", c->layers[0] ? c->layers : "one");
    if (c->dropout > 0)
        printf(", dropout %g%s", c->dropout, c->variational ? " (variational: a mask per sequence)"
                                                            : " (a mask per step)");
    printf(", output layer out.W_hq, out.b_q\n");
}

bool lm_cli_parse(cli_args *a, lm_cli_opts *o)
{
    memset(o, 0, sizeof *o);
    bt_lm_given *g = &o->run;
    bt_lm_config *c = &g->cfg;
    bt_lm_config_default(c);
    long seed, epochs;
    o->data = cli_get(a, "data");
    o->task = cli_get(a, "task");
    get_str(a, g, BT_LM_CELL, &c->cell);
    get_str(a, g, BT_LM_OPTIMIZER, &c->optimizer);
    get_str(a, g, BT_LM_TRUNCATION, &c->truncation);
    get_str(a, g, BT_LM_INIT, &c->init);
    get_str(a, g, BT_LM_ESTIMATOR, &c->estimator);
    if (!get_int(a, g, BT_LM_UPDATE_EVERY, 1, 1 << 30, &c->update_every) ||
        !get_int(a, g, BT_LM_HIDDEN, 1, 1 << 16, &c->hidden) ||
        !get_int(a, g, BT_LM_BATCH, 1, 1 << 20, &c->batch) ||
        !get_int(a, g, BT_LM_STEPS, 1, 1 << 20, &c->steps))
        return false;
    note_given(a, g, BT_LM_SEED);
    if (!cli_int(a, "seed", 0, 0, 0x7fffffffffffffffL, &seed))
        return false;
    c->seed = (uint64_t)seed;
    note_given(a, g, BT_LM_MAX_TOKENS);
    if (!cli_int(a, "max-tokens", 0, 0, 0x7fffffffffffffffL, &c->max_tokens) ||
        !cli_int(a, "epochs", 10, 1, 100000000, &epochs))
        return false;
    o->epochs = (int)epochs;
    note_given(a, g, BT_LM_CLIP);
    note_given(a, g, BT_LM_VAL_FRACTION);
    note_given(a, g, BT_LM_CHECKPOINT);
    note_given(a, g, BT_LM_MEMORY_BUDGET);
    if (!cli_double(a, "clip", 1, 0, 1e30, &c->clip) ||
        !cli_checkpoint(a, &c->checkpoint_every, &c->memory_budget_mb) ||
        !cli_double(a, "val-fraction", 0, 0, 0.5, &c->val_fraction) || !get_text_modes(a, g))
        return false;
    if (!lm_cli_arch(a, g))
        return false;
    char ierr[256];
    if (bt_init_spec_check(c->init, ierr, sizeof ierr) != BT_OK) {
        fprintf(stderr, "bptt: %s\n", ierr);
        return false;
    }
    o->metrics = cli_get(a, "metrics");
    o->quiet = cli_flag(a, "quiet");
    return true;
}

bool lm_cli_validate(const char *command, const bt_registry *r, const bt_lm_config *cfg)
{
    char known[512], err[1024] = "";
    if (!bt_registry_cell(r, cfg->cell)) {
        cli_fail(command, "unknown cell '%s' (known: %s); a cell from your own plugin needs "
                 "--plugin PATH", cfg->cell, bt_registry_names(r, BT_KIND_CELL, known, sizeof known));
        return false;
    }
    char name[BT_NAME_LEN + 1];
    const char *opts;
    bt_split_spec(cfg->truncation, name, sizeof name, &opts);
    const bt_policy_def *def = bt_registry_policy(r, name);
    void *state = NULL;
    if (!def) {
        cli_fail(command, "unknown truncation policy '%.*s' (known: %s)",
                 (int)strcspn(cfg->truncation, ":"), cfg->truncation,
                 bt_registry_names(r, BT_KIND_POLICY, known, sizeof known));
        return false;
    }
    if (bt_policy_create(def, opts, &state, err, sizeof err) != BT_OK) {
        cli_fail(command, "--truncation %s: %s", cfg->truncation, err);
        return false;
    }
    def->destroy(state);
    if (bt_lm_config_online(cfg) &&
        bt_estimator_check_spec(r, cfg->estimator, err, sizeof err) != BT_OK) {
        cli_fail(command, "--estimator %s: %s", cfg->estimator, err);
        return false;
    }
    /* The optimizer on a one-value block: only its name and options matter here. */
    bt_params *p = bt_params_new();
    bt_optimizer *o = NULL;
    bool ok = p && bt_params_add(p, "x", 1, (int[]){1}) && bt_params_finalize(p) == BT_OK &&
              bt_optimizer_new(r, cfg->optimizer, p, &o, err, sizeof err) == BT_OK;
    if (!ok)
        cli_fail(command, "--optimizer %s: %s", cfg->optimizer, err[0] ? err : "out of memory");
    bt_optimizer_free(o);
    bt_params_free(p);
    return ok;
}

void lm_cli_integrity_note(const char *command, const bt_checkpoint *ck)
{
    if (!ck->verified)
        fprintf(stderr, "bptt %s: note: %s was written before checkpoints had checksums (format "
                "%s): it loads, but damage to it cannot be detected; a new save adds them\n",
                command, ck->path, BT_CHECKPOINT_FORMAT_V1);
}

/* "sqrt", "off", "7"; "64 MB", "none" */
static const char *spacing_text(int every, char *buf, size_t len)
{
    if (every <= 0)
        snprintf(buf, len, "%s", every < 0 ? "sqrt" : "off");
    else
        snprintf(buf, len, "%d", every);
    return buf;
}

void lm_cli_resume_notes(const char *command, const bt_checkpoint *ck, const bt_lm_config *run)
{
    lm_cli_integrity_note(command, ck);
    char a[32], b[32];
    if (run->checkpoint_every != ck->cfg.checkpoint_every)
        fprintf(stderr, "bptt %s: note: --checkpoint %s replaces the checkpoint's %s: the same "
                "gradients up to rounding, so the run no longer repeats the original bit for bit\n",
                command, spacing_text(run->checkpoint_every, a, sizeof a),
                spacing_text(ck->cfg.checkpoint_every, b, sizeof b));
    if (run->memory_budget_mb != ck->cfg.memory_budget_mb)
        fprintf(stderr, "bptt %s: note: --memory-budget %g replaces the checkpoint's %g MB%s: the "
                "same gradients up to rounding, so the run no longer repeats the original bit for "
                "bit\n", command, run->memory_budget_mb, ck->cfg.memory_budget_mb,
                ck->cfg.memory_budget_mb == 0 ? " (none)" : "");
}

bool lm_cli_check_data(const char *command, const lm_cli_opts *o, const char *data,
                       const char *task)
{
    if (data && task) {
        cli_fail(command, "give --data FILE (a text) or --task SPEC (a generated task), not both");
        return false;
    }
    if (!data && !task) {
        cli_fail(command, "--data FILE (the text to train on) or --task SPEC (adding:50, "
                 "copy:10,3, influence:23,10) is required");
        return false;
    }
    static const bt_lm_setting text_only[] = {BT_LM_TOKENS, BT_LM_SAMPLING, BT_LM_MAX_TOKENS,
                                              BT_LM_VAL_FRACTION};
    for (size_t i = 0; task && i < sizeof text_only / sizeof text_only[0]; i++)
        if (o->run.given[text_only[i]]) {
            cli_fail(command, "--%s applies to a text (--data) only: task %s generates its "
                     "sequences and its validation minibatches", bt_lm_setting_name(text_only[i]),
                     task);
            return false;
        }
    return true;
}

bt_status lm_cli_source(void *vd, bt_lm_config *cfg, bt_source *src, char *err, size_t errlen)
{
    lm_cli_data *d = vd;
    char why[1024] = "";
    if (d->task) {
        if (bt_task_source_new(d->task, cfg->batch, cfg->seed, src, why, sizeof why) != BT_OK)
            return bt_error(err, errlen, BT_ERR_ARG, "--task: %s", why);
        if (d->o->run.given[BT_LM_STEPS] && d->o->run.cfg.steps != src->T) {
            bt_errorf(err, errlen, "--steps %d conflicts with task %s, whose sequences have %d "
                      "steps: a task fixes the length (drop --steps, or change the task's length)",
                      d->o->run.cfg.steps, d->task, src->T);
            bt_source_free(src);
            *src = (bt_source){0};
            return BT_ERR_ARG;
        }
        cfg->steps = src->T;
        return BT_OK;
    }
    bt_status st;
    if (!d->corpus &&
        (st = bt_corpus_load(d->data, cfg->tokens, cfg->max_tokens, &d->corpus, err, errlen)) != BT_OK)
        return st;
    if ((st = bt_text_source_new(d->corpus, cfg->batch, cfg->steps, cfg->sampling,
                                 cfg->val_fraction, src, why, sizeof why)) != BT_OK)
        return bt_error(err, errlen, st, "%s: %s", d->data, why);
    return BT_OK;
}

const char *lm_cli_ppl(double loss, int digits, char *buf, size_t len)
{
    double p = exp(loss);
    if (!isfinite(loss) || (isfinite(p) && p < 1e15)) {
        snprintf(buf, len, "%.*f", digits, p);
        return buf;
    }
    double e10 = loss / log(10.0), ex = floor(e10);
    snprintf(buf, len, "%.*fe+%.0f", digits, pow(10.0, e10 - ex), ex);
    return buf;
}

const char *lm_cli_num(double x, char *buf, size_t len)
{
    if (isnan(x))
        buf[0] = '\0';
    else
        snprintf(buf, len, "%.17g", x);
    return buf;
}

const char *lm_cli_si(double x, char *buf, size_t len)
{
    if (x >= 1e6)
        snprintf(buf, len, "%.2fM", x / 1e6);
    else if (x >= 1e3)
        snprintf(buf, len, "%.1fk", x / 1e3);
    else
        snprintf(buf, len, "%.0f", x);
    return buf;
}

const char *lm_cli_duration(double s, char *buf, size_t len)
{
    if (!isfinite(s) || s < 0)
        snprintf(buf, len, "?");
    else if (s >= 3600)
        snprintf(buf, len, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
    else if (s >= 60)
        snprintf(buf, len, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
    else
        snprintf(buf, len, "%.1fs", s);
    return buf;
}

/* ---- stopping on a signal ---- */

static bt_lm *volatile stop_lm;           /* the run a signal stops */
static volatile sig_atomic_t stop_sig;    /* the first signal caught */
static volatile sig_atomic_t stop_late;   /* training has ended: nothing left to stop */
static const char *stop_command = "train";
static struct sigaction stop_old[2];
static bool stop_installed;

static void on_stop_signal(int sig)
{
    if (stop_sig)
        _exit(128 + stop_sig); /* the second: at once, nothing written */
    stop_sig = sig;
    bt_lm *lm = stop_lm;
    if (lm)
        bt_lm_request_stop(lm);
    /* write(2) alone: the only output a handler may make. */
    static const char a[] = "\nbptt ", b[] = ": stopping after this minibatch to save the run "
                                              "(press Ctrl-C again to quit at once, unsaved)\n";
    static const char late[] = ": training has ended; finishing the output, then exiting "
                               "(press Ctrl-C again to quit at once)\n";
    ssize_t ignored = write(STDERR_FILENO, a, sizeof a - 1);
    ignored = write(STDERR_FILENO, stop_command, strlen(stop_command));
    ignored = stop_late ? write(STDERR_FILENO, late, sizeof late - 1)
                        : write(STDERR_FILENO, b, sizeof b - 1);
    (void)ignored;
}

void lm_cli_stop_begin(const char *command)
{
    stop_command = command;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESTART; /* reads and writes under way go on */
    sigemptyset(&sa.sa_mask);
    /* SIGINT ignored on entry (nohup, a shell's background job) stays ignored. */
    sigaction(SIGINT, NULL, &stop_old[0]);
    if (stop_old[0].sa_handler != SIG_IGN)
        sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, &stop_old[1]);
    stop_installed = true;
}

void lm_cli_stop_attach(bt_lm *lm)
{
    stop_lm = lm;
    if (stop_sig && lm)
        bt_lm_request_stop(lm);
}

void lm_cli_stop_finished(void)
{
    stop_late = 1; /* first: a signal between the two still says the truth */
    stop_lm = NULL;
}

int lm_cli_stop_signal(void) { return (int)stop_sig; }

void lm_cli_stop_end(void)
{
    stop_lm = NULL;
    if (!stop_installed)
        return;
    /* From here a signal ends the process at once, as it would anywhere: what
     * the run printed must be out first, not left in stdout's buffer (a
     * Ctrl-C during the cleanup once lost the "done:" line of a saved run). */
    fflush(stdout);
    sigaction(SIGINT, &stop_old[0], NULL);
    sigaction(SIGTERM, &stop_old[1], NULL);
    stop_installed = false;
}

/* ---- progress ---- */

static bool progress_shown;
static double progress_last;

void lm_cli_progress(void *ctx, const bt_lm_progress *p)
{
    (void)ctx;
    double now = bt_monotonic_s();
    if (p->batch != p->batches && now - progress_last < 0.1)
        return; /* a terminal line ten times a second is plenty */
    progress_last = now;
    char tps[32], eta[32], fig[48], ppl[32];
    if (isnan(p->train_ppl)) /* real targets: no perplexity, the loss */
        snprintf(fig, sizeof fig, "train loss %.5g", p->train_loss);
    else
        snprintf(fig, sizeof fig, "train ppl %s", lm_cli_ppl(p->train_loss, 3, ppl, sizeof ppl));
    fprintf(stderr, "\r\033[Kepoch %d/%d  step %d/%d  %s  %s tok/s  ETA %s", p->epoch, p->epochs,
            p->batch, p->batches, fig, lm_cli_si(p->tokens_per_s, tps, sizeof tps),
            lm_cli_duration(p->eta_s, eta, sizeof eta));
    fflush(stderr);
    progress_shown = true;
}

void lm_cli_progress_clear(void)
{
    if (progress_shown) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
        progress_shown = false;
    }
}

char *lm_cli_sample(bt_lm *lm, const bt_corpus *c, int length)
{
    const bt_model *m = bt_lm_model(lm);
    if (!c || c->n < 2 || m->cell->loss != BT_LOSS_XENT)
        return NULL;
    /* The text's first words: up to 16 tokens, ending at a line break. */
    long n = c->n - 1 < 16 ? c->n - 1 : 16;
    for (long i = 4; i < n; i++) {
        const char *t = bt_vocab_token(c->vocab, c->ids[i]);
        if (t && strcmp(t, "\n") == 0) {
            n = i;
            break;
        }
    }
    int32_t *ids = bt_malloc(sizeof(int32_t) * (size_t)(n + length));
    if (!ids)
        return NULL;
    memcpy(ids, c->ids, sizeof(int32_t) * (size_t)n);
    char err[256];
    char *s = NULL;
    if (bt_generate(m, ids, n, length, 0, NULL, ids + n, err, sizeof err) == BT_OK)
        s = bt_decode_ids(c->vocab, ids, n + length);
    bt_free(ids);
    return s;
}
