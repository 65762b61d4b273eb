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
#include "cli_cell.h"
#include "corpus.h"
#include "tasks.h"

#define CMD "analyze"

static const cli_option options[] = {
    {"model", "FILE", "a checkpoint written by bptt train"},
    {"cell", "C", "rnn_tanh, linear, gru, lstm, influence, or a plugin's cell"},
    {"hidden", "H", "hidden size"},
    {"init", "SPEC", "normal:SIGMA, orthogonal, identity[:SCALE], spectral:RHO"},
    {"input", "N", "input size (vocabulary for token cells; default 16, real 4)"},
    {"output", "N", "output size (default: the input size for token cells, 2 for real)"},
    {"data", "FILE", "a text: rows start at evenly spaced places in it"},
    {"task", "SPEC", "adding:T, copy:T,K or influence:N,P (sizes come from the task); with "
                     "neither --data nor --task: a task model's own task, else random tokens or "
                     "N(0,1) inputs and targets"},
    {"lags", "K", "largest lag (default 30)"},
    {"batch", "B", "rows (default 4)"},
    {"seed", "S", "initialisation and data (default 0)"},
    {"json", NULL, "print JSON instead of the table"},
    {"plot", "FILE.svg", "gradient norm against lag (log), eigenvalues with the unit circle, "
                         "power-iteration angle against |l2/l1|^k"},
    CLI_PLUGIN_OPTION,
    {NULL, NULL, NULL},
};

const cli_command cmd_analyze_spec = {
    .name = "analyze",
    .summary = "vanishing and exploding gradients: norms against lag, eigenvalues",
    .usage = "(--model FILE | --cell C --hidden H [--init SPEC]) [options]",
    .about = "How much gradient one loss term sends back in time: the loss sits on the last of\n"
             "K+1 steps alone, full BPTT, and ||dL_T/dh_{T-k}|| is read from the tape for\n"
             "k = 0..K (the norm of the whole [B,H] gradient). Also ||dh_T/dh_{T-k}||_2, the\n"
             "eigenvalues of the recurrent matrix, and power iteration on its symmetric part.",
    .notes = "Exit status: 0 done, 1 error, 2 bad command line.",
    .options = {options},
};

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0)
            break;
        if (n + 1 == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                buf = NULL;
            } else
                buf = nb;
        }
    }
    fclose(f);
    if (buf) {
        buf[n] = '\0';
        *len = n;
    }
    return buf;
}

/* B rows of T steps from a text, row b starting at b * (n / B): inputs and
 * next-token targets. The model's vocabulary when it has one, else the text's. */
static bool text_sequence(const char *path, const bt_checkpoint *ck, int B, int T,
                          bt_sequence *seq, int *vocab_size)
{
    char err[1024] = "";
    int32_t *ids = NULL;
    long n = 0;
    bt_corpus *corpus = NULL;
    if (ck && ck->vocab) {
        size_t len;
        char *text = read_file(path, &len);
        if (!text) {
            cli_fail(CMD, "cannot read --data %s: %s", path, strerror(errno));
            return false;
        }
        bt_status st = bt_vocab_encode(ck->vocab, ck->cfg.tokens, text, &ids, &n, err, sizeof err);
        free(text);
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
    bool ok = n >= (long)B * (T + 1);
    if (!ok)
        cli_fail(CMD, "--data %s has %ld tokens; %d rows of %d steps need %ld: lower --batch or "
                 "--lags", path, n, B, T, (long)B * (T + 1));
    int32_t *x = ok ? bt_malloc(sizeof(int32_t) * (size_t)B * T) : NULL;
    int32_t *y = ok ? bt_malloc(sizeof(int32_t) * (size_t)B * T) : NULL;
    if (ok && (!x || !y)) {
        bt_free(x);
        bt_free(y);
        ok = false;
    }
    if (ok) {
        long stride = n / B;
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) {
                x[b * T + t] = ids[b * stride + t];
                y[b * T + t] = ids[b * stride + t + 1];
            }
        *seq = (bt_sequence){.B = B, .T = T, .ids = x, .targets = y};
    }
    if (corpus)
        bt_corpus_free(corpus);
    else
        bt_free(ids);
    return ok;
}

int cmd_analyze(int argc, char **argv)
{
    cli_args a;
    int rc;
    if (!cli_args_begin(&a, &cmd_analyze_spec, argc, argv, &rc))
        return rc;
    rc = 1;
    bt_registry *reg = NULL;
    bt_checkpoint *ck = NULL;
    bt_model *m = NULL;
    bt_source src = {0};
    bt_sequence seq = {0};
    bool seq_owned = false;
    bt_analysis an = {0};
    char err[2048] = "";

    const char *model_path = cli_get(&a, "model"), *cell = cli_get(&a, "cell");
    const char *init = cli_get(&a, "init"), *data = cli_get(&a, "data"), *task = cli_get(&a, "task");
    const char *plot = cli_get(&a, "plot");
    bool json = cli_flag(&a, "json");
    long hidden, lags, batch, seed, in_size, out_size;
    if (!cli_int(&a, "hidden", 0, 1, 1 << 16, &hidden) || !cli_int(&a, "lags", 30, 1, 100000, &lags) ||
        !cli_int(&a, "batch", 4, 1, 1 << 16, &batch) || !cli_int(&a, "seed", 0, 0, LONG_MAX, &seed) ||
        !cli_int(&a, "input", 0, 1, 1 << 24, &in_size) ||
        !cli_int(&a, "output", 0, 1, 1 << 24, &out_size)) {
        rc = 2;
        goto out;
    }
    if (!(reg = cli_load_plugins(&a)))
        goto out;
    cli_args_check_read(&a);
    rc = 2;
    if (!model_path == !cell) {
        cli_fail(CMD, "give either --model FILE or --cell C --hidden H (see bptt analyze --help)");
        goto out;
    }
    if (cell && hidden == 0) {
        cli_fail(CMD, "--cell %s needs --hidden H", cell);
        goto out;
    }
    if (model_path && (init || hidden)) {
        cli_fail(CMD, "--model takes its sizes and weights from the checkpoint: drop --init/--hidden");
        goto out;
    }
    if (data && task) {
        cli_fail(CMD, "give --data FILE or --task SPEC, not both");
        goto out;
    }
    if (init && bt_init_spec_check(init, err, sizeof err) != BT_OK) {
        cli_fail(CMD, "%s", err);
        goto out;
    }
    rc = 1;

    int B = (int)batch, K = (int)lags, vocab = 0;
    bt_rng rng;
    bt_rng_seed(&rng, (uint64_t)seed);
    const char *data_desc = "random";
    if (model_path) {
        if (bt_checkpoint_read(model_path, &ck, err, sizeof err) != BT_OK) {
            cli_fail(CMD, "%s", err);
            goto out;
        }
        if (!task && !data && ck->task[0])
            task = ck->task; /* a task model is analysed on its own task by default */
    }
    if (task) {
        if (bt_task_source_new(task, B, (uint64_t)seed, &src, err, sizeof err) != BT_OK) {
            cli_fail(CMD, "%s", err);
            goto out;
        }
        src.epoch(src.ctx, &rng);
        if (!src.next(src.ctx, &seq)) {
            cli_fail(CMD, "task %s gave no sequence", task);
            goto out;
        }
        if (seq.T < K + 1) {
            fprintf(stderr, "bptt analyze: task %s has %d steps: lags limited to %d\n", task,
                    seq.T, seq.T - 1);
            K = seq.T - 1;
        }
        data_desc = task;
    }
    if (model_path) {
        if (bt_checkpoint_model(ck, reg, &m, err, sizeof err) != BT_OK) {
            cli_fail(CMD, "%s", err);
            goto out;
        }
        if (task && (src.input_size != m->dims.input || src.output_size != m->dims.output)) {
            cli_fail(CMD, "task %s has input %d and output %d; the model takes %d and %d", task,
                     src.input_size, src.output_size, m->dims.input, m->dims.output);
            goto out;
        }
    }
    if (data) {
        if (!text_sequence(data, ck, B, K + 1, &seq, &vocab))
            goto out;
        seq_owned = true;
        data_desc = data;
    }
    if (!m) {
        const bt_cell_def *def = cli_cell_find(reg, cell, CMD);
        if (!def)
            goto out;
        bool tokens = def->input == BT_INPUT_TOKENS;
        bool infl = strcmp(def->name, "influence") == 0;
        bt_cell_dims dims = {tokens ? 16 : infl ? ((int)hidden + 1) / 2 : 4, (int)hidden,
                             tokens ? 16 : infl ? 1 : 2};
        if (in_size)
            dims.input = (int)in_size;
        dims.output = out_size ? (int)out_size : tokens && in_size ? (int)in_size : dims.output;
        if (task) {
            dims.input = src.input_size;
            dims.output = src.output_size;
        } else if (data) {
            dims.input = dims.output = vocab;
        }
        if (bt_model_new(def, dims, &m, err, sizeof err) != BT_OK ||
            bt_model_init(m, init, &rng, err, sizeof err) != BT_OK) {
            cli_fail(CMD, "%s", err);
            goto out;
        }
    }
    if ((task && (m->cell->input == BT_INPUT_TOKENS) != src.tokens_in) ||
        (data && m->cell->input != BT_INPUT_TOKENS)) {
        cli_fail(CMD, "cell %s takes %s inputs; %s gives %s", m->cell->name,
                 m->cell->input == BT_INPUT_TOKENS ? "token" : "real", data_desc,
                 (task ? src.tokens_in : true) ? "tokens" : "real vectors");
        goto out;
    }
    if (!task && !data) {
        if (bt_probe_sequence_new(m, B, K + 1, &rng, &seq) != BT_OK) {
            cli_fail(CMD, "out of memory");
            goto out;
        }
        seq_owned = true;
    }
    if (bt_analysis_run(m, &seq, NULL, K, 0, (uint64_t)seed, &an, err, sizeof err) != BT_OK) {
        cli_fail(CMD, "%s", err);
        goto out;
    }
    const char *cell_name = m->cell->name;
    const char *init_desc = model_path ? model_path : init ? init : "cell default";
    if (json) {
        /* The run's settings first, then the figures, on one line. */
        json_t *o = json_pack("{s:s, s:s, s:s, s:i, s:I}", "cell", cell_name, "init", init_desc,
                              "data", data_desc, "batch", B, "seed", (json_int_t)seed);
        json_t *figures = cli_analysis_to_json(&an);
        bool ok = o && figures && json_object_update(o, figures) == 0 &&
                  json_dumpf(o, stdout, JSON_COMPACT | JSON_REAL_PRECISION(10)) == 0;
        json_decref(o);
        json_decref(figures);
        if (!ok) {
            cli_fail(CMD, "out of memory");
            goto out;
        }
        putchar('\n');
    } else {
        printf("cell %s, hidden %d, init %s, %s data, %d rows, lags 0..%d\n", cell_name,
               m->dims.hidden, init_desc, data_desc, B, K);
        cli_analysis_print(&an, stdout);
    }
    if (plot) {
        char title[256];
        snprintf(title, sizeof title, "bptt analyze: %s, hidden %d, init %s", cell_name,
                 m->dims.hidden, init_desc);
        if (cli_analysis_svg(&an, title, plot, err, sizeof err) != BT_OK) {
            cli_fail(CMD, "%s", err);
            goto out;
        }
        fprintf(json ? stderr : stdout, "wrote %s\n", plot);
    }
    rc = 0;
out:
    bt_analysis_free(&an);
    if (seq_owned)
        bt_probe_sequence_free(&seq);
    bt_source_free(&src);
    bt_model_free(m);
    bt_checkpoint_free(ck);
    bt_registry_free(reg);
    cli_args_free(&a);
    return rc;
}
