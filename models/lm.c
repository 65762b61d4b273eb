/* lm.c: the training loop. Everything a run needs is allocated in bt_lm_new
 * (model, optimizer, policy, unroller, state buffers, evaluation graph); an
 * epoch then only reuses it, so the steady state allocates nothing. One RNG,
 * seeded from the config, gives the initialisation, each epoch's offset and
 * order, and each sequence's policy seed: the run replays exactly, and a
 * checkpoint holding that RNG continues it bit for bit.
 *
 * Dimension letters: B rows, T steps, H hidden, V vocabulary. */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "bt_clock.h"
#include "lm.h"
#include "stack.h"

struct bt_lm {
    bt_lm_config cfg;                /* its strings point into `strings` */
    char *strings;                   /* the run's copies of cfg's strings, one block */
    bt_source *src;
    bt_model *m;
    bt_optimizer *opt;
    const bt_policy_def *pdef;
    void *pstate;
    bt_unroller *u;
    /* With an online estimator (cfg.estimator): it and its runner replace u. */
    bt_estimator *est;
    bt_online *onl;
    bt_rng rng;
    bt_real *state_block;            /* [sum_k B * width_k] */
    bt_real *state[BT_MAX_STATES];   /* views into state_block */
    size_t state_len;
    /* Validation: its own graph (no tape) and state, sized on first use. */
    bt_graph *eval_g;
    bt_real *eval_block;
    size_t eval_cap;
    int epochs_done;
    uint64_t updates;
    bt_lm_epoch *hist;
    int n_hist, cap_hist;
    size_t peak_arena;
    size_t budget;                   /* cfg.memory_budget_mb in bytes */
    /* Stopping within an epoch, and continuing there. */
    volatile atomic_int stop;        /* bt_lm_request_stop; a signal handler may set it */
    bool stopped;                    /* the last train call stopped early */
    bt_lm_position pos;              /* of the epoch under way (batches_done 0: none) */
    uint64_t rng_now[4];             /* the restored RNG the replay must reach */
    /* Data parallelism (dist.h): NULL for one process. This process unrolls
     * rows [row0, row0 + rows) of every minibatch. */
    bt_dist *dist;
    int row0, rows;
    bool agreed;   /* the current failure was already agreed on */
    /* What each update's digest holds besides the unroller's: the position in
     * the run and a checksum of the minibatch (all rows). */
    int batch_at;
    uint64_t batch_sum;
};

void bt_lm_config_default(bt_lm_config *c)
{
    memset(c, 0, sizeof *c);
    c->cell = "rnn_tanh";
    c->hidden = 512;
    c->batch = 32;
    c->steps = 35;
    c->optimizer = "sgd:lr=1";
    c->clip = 1;
    c->truncation = "full";
    c->init = "";
    c->seed = 0;
    c->tokens = BT_TOKENS_CHARS;
    c->sampling = BT_BATCH_SEQUENTIAL;
    c->update_every = 1;
}

const char *bt_lm_setting_name(bt_lm_setting s)
{
    static const char *const names[BT_LM_SETTING_COUNT] = {
        "cell", "hidden", "batch", "steps", "optimizer", "clip", "truncation", "init",
        "seed", "tokens", "sampling", "max-tokens", "val-fraction", "estimator", "update-every",
        "layers", "dropout", "checkpoint", "memory-budget",
    };
    return s >= 0 && s < BT_LM_SETTING_COUNT ? names[s] : "?";
}

void bt_lm_free(bt_lm *lm)
{
    if (!lm)
        return;
    if (lm->pstate && lm->pdef->destroy)
        lm->pdef->destroy(lm->pstate);
    bt_unroller_free(lm->u);
    bt_online_free(lm->onl);
    bt_estimator_free(lm->est);
    bt_optimizer_free(lm->opt);
    bt_model_free(lm->m);
    bt_graph_free(lm->eval_g);
    bt_free(lm->state_block);
    bt_free(lm->eval_block);
    bt_free(lm->hist);
    bt_free(lm->strings);
    bt_free(lm);
}

/* cfg's strings copied into one block owned by lm, lm->cfg pointing at them. */
static bt_status own_strings(bt_lm *lm, const bt_lm_config *cfg, char *err, size_t errlen)
{
    const char *src[5] = {cfg->cell, cfg->optimizer, cfg->truncation, cfg->init ? cfg->init : "",
                          cfg->estimator ? cfg->estimator : ""};
    const char **dst[5] = {&lm->cfg.cell, &lm->cfg.optimizer, &lm->cfg.truncation, &lm->cfg.init,
                           &lm->cfg.estimator};
    size_t total = 0;
    for (int i = 0; i < 5; i++)
        total += strlen(src[i]) + 1;
    char *p = lm->strings = bt_malloc(total);
    if (!p)
        return bt_error(err, errlen, BT_ERR_NOMEM, "out of memory for the run's settings");
    for (int i = 0; i < 5; i++) {
        size_t n = strlen(src[i]) + 1;
        memcpy(p, src[i], n);
        *dst[i] = p;
        p += n;
    }
    return BT_OK;
}

/* The registered cells whose input and loss fit src, "a, b" into buf. */
static const char *cells_for(const bt_registry *reg, const bt_source *src, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < bt_registry_count(reg) && used + 1 < len; i++) {
        const bt_registry_entry *e = bt_registry_at(reg, i);
        const bt_cell_def *c = e->kind == BT_KIND_CELL ? bt_registry_cell(reg, e->name) : NULL;
        if (c && (c->input == BT_INPUT_TOKENS) == src->tokens_in &&
            (c->loss == BT_LOSS_XENT) == src->tokens_out)
            used += (size_t)snprintf(buf + used, len - used, "%s%s", used ? ", " : "", e->name);
    }
    return used ? buf : "none registered";
}

/* The settings and the source agree, the cell exists and fits the source's
 * inputs and targets; the cell into *cell. */
static bt_status check_run(const bt_registry *reg, const bt_lm_config *cfg, const bt_source *src,
                           const bt_cell_def **cell, char *err, size_t errlen)
{
    char known[512];
    if (!cfg->cell || !cfg->optimizer || !cfg->truncation)
        return bt_error(err, errlen, BT_ERR_ARG, "the run needs a cell, an optimizer and a "
                        "truncation policy (bt_lm_config_default gives them)");
    if (cfg->hidden < 1 || cfg->batch < 1 || cfg->steps < 1)
        return bt_error(err, errlen, BT_ERR_ARG,
                        "hidden (%d), batch (%d) and steps (%d) must be at least 1", cfg->hidden,
                        cfg->batch, cfg->steps);
    if (src->B != cfg->batch || src->T != cfg->steps)
        return bt_error(err, errlen, BT_ERR_SHAPE,
                        "the source gives %d x %d minibatches, the run wants %d x %d", src->B,
                        src->T, cfg->batch, cfg->steps);
    if (!(cfg->clip >= 0) || !isfinite(cfg->clip))
        return bt_error(err, errlen, BT_ERR_ARG,
                        "clip %g: expected a number >= 0 (0 disables clipping)", cfg->clip);
    size_t budget;
    if (cfg->checkpoint_every < -1)
        return bt_error(err, errlen, BT_ERR_ARG, "checkpoint spacing %d: expected -1 (sqrt), 0 "
                        "(off) or a number of steps", cfg->checkpoint_every);
    if (bt_unroll_budget_bytes(cfg->memory_budget_mb, &budget, err, errlen) != BT_OK)
        return BT_ERR_ARG;
    const bt_cell_def *c = *cell = bt_registry_cell(reg, cfg->cell);
    if (!c)
        return bt_error(err, errlen, BT_ERR_NOT_FOUND,
                        "unknown cell '%s' (known: %s); a cell from your own plugin needs "
                        "--plugin PATH", cfg->cell,
                        bt_registry_names(reg, BT_KIND_CELL, known, sizeof known));
    if (src->tokens_in && c->input != BT_INPUT_TOKENS)
        return bt_error(err, errlen, BT_ERR_ARG, "cell %s takes real-valued inputs; %s gives token "
                        "ids (cells for it: %s)", c->name, src->name,
                        cells_for(reg, src, known, sizeof known));
    if (src->tokens_out != (c->loss == BT_LOSS_XENT))
        return bt_error(err, errlen, BT_ERR_ARG, "cell %s is trained with %s, but %s has %s "
                        "targets (cells for it: %s)", c->name,
                        c->loss == BT_LOSS_XENT ? "cross-entropy" : "squared error", src->name,
                        src->tokens_out ? "token" : "real-valued",
                        cells_for(reg, src, known, sizeof known));
    return bt_init_spec_check(cfg->init, err, errlen);
}

/* The truncation policy of cfg, created into lm. */
static bt_status make_policy(const bt_registry *reg, bt_lm *lm, char *err, size_t errlen)
{
    char name[BT_NAME_LEN + 1], known[512], perr[BT_ERRMSG_LEN] = "";
    const char *opts;
    bt_split_spec(lm->cfg.truncation, name, sizeof name, &opts);
    lm->pdef = bt_registry_policy(reg, name);
    if (!lm->pdef)
        return bt_error(err, errlen, BT_ERR_NOT_FOUND, "unknown truncation policy '%.*s' (known: "
                        "%s)", (int)strcspn(lm->cfg.truncation, ":"), lm->cfg.truncation,
                        bt_registry_names(reg, BT_KIND_POLICY, known, sizeof known));
    if (bt_policy_create(lm->pdef, opts, &lm->pstate, perr, sizeof perr) != BT_OK) {
        lm->pstate = NULL;
        return bt_error(err, errlen, BT_ERR_ARG, "--truncation %s: %s", lm->cfg.truncation, perr);
    }
    return BT_OK;
}

/* The online estimator of cfg and its runner, when the run has one. It
 * replaces BPTT, so the settings of BPTT's memory are refused with it. */
static bt_status make_estimator(const bt_registry *reg, bt_lm *lm, char *err, size_t errlen)
{
    const bt_lm_config *c = &lm->cfg;
    if (!bt_lm_config_online(c))
        return BT_OK;
    if (c->update_every < 1)
        return bt_error(err, errlen, BT_ERR_ARG, "update every %d steps: expected at least 1",
                        c->update_every);
    if (c->checkpoint_every != 0 || c->memory_budget_mb > 0)
        return bt_error(err, errlen, BT_ERR_ARG, "--estimator %s replaces backpropagation "
                        "through time: it takes no --checkpoint or --memory-budget",
                        c->estimator);
    char eerr[BT_ERRMSG_LEN] = "";
    bt_status st = bt_estimator_new(reg, c->estimator, lm->m, c->batch, false, &lm->est, eerr,
                                    sizeof eerr);
    if (st == BT_OK)
        st = bt_online_new(lm->m, c->batch, &lm->onl, eerr, sizeof eerr);
    return st == BT_OK ? BT_OK : bt_error(err, errlen, st, "--estimator %s: %s", c->estimator, eerr);
}

/* The carried state (one block, a view per state) and the evaluation graph. */
static bt_status make_state(bt_lm *lm, char *err, size_t errlen)
{
    int B = lm->cfg.batch;
    for (int k = 0; k < lm->m->n_states; k++)
        lm->state_len += (size_t)B * (size_t)lm->m->state_width[k];
    lm->state_block = bt_calloc(lm->state_len, sizeof(bt_real));
    lm->eval_g = bt_graph_new();
    if (!lm->state_block || !lm->eval_g)
        return bt_error(err, errlen, BT_ERR_NOMEM, "out of memory for the run");
    bt_graph_set_grad(lm->eval_g, false); /* validation records no tape */
    bt_real *p = lm->state_block;
    for (int k = 0; k < lm->m->n_states; k++) {
        lm->state[k] = p;
        p += (size_t)B * (size_t)lm->m->state_width[k];
    }
    return BT_OK;
}

bt_status bt_lm_new(const bt_registry *reg, const bt_lm_config *cfg, bt_source *src, bt_lm **out,
                    char *err, size_t errlen)
{
    *out = NULL;
    const bt_cell_def *cell = NULL;
    bt_status st = check_run(reg, cfg, src, &cell, err, errlen);
    if (st != BT_OK)
        return st;
    bt_lm *lm = bt_calloc(1, sizeof *lm);
    if (!lm)
        return BT_ERR_NOMEM;
    char perr[BT_ERRMSG_LEN] = "";
    lm->cfg = *cfg;
    lm->src = src;
    if ((st = own_strings(lm, cfg, err, errlen)) != BT_OK)
        goto fail;
    cfg = &lm->cfg; /* the run's own copies from here */
    bt_cell_dims dims = {src->input_size, cfg->hidden, src->output_size};
    if ((st = make_policy(reg, lm, err, errlen)) != BT_OK ||
        (st = bt_model_from_arch(reg, cfg->layers, cfg->cell, cfg->hidden, cfg->dropout,
                                 cfg->variational, dims.input, dims.output, &lm->m, err,
                                 errlen)) != BT_OK)
        goto fail;
    bt_rng_seed(&lm->rng, cfg->seed);
    if ((st = bt_model_init(lm->m, cfg->init, &lm->rng, err, errlen)) != BT_OK)
        goto fail;
    if ((st = bt_optimizer_new(reg, cfg->optimizer, lm->m->params, &lm->opt, perr,
                               sizeof perr)) != BT_OK) {
        bt_errorf(err, errlen, "--optimizer %s: %s", cfg->optimizer, perr);
        goto fail;
    }
    if ((st = bt_unroller_new(lm->m, cfg->batch, cfg->steps, &lm->u, err, errlen)) != BT_OK ||
        (st = make_state(lm, err, errlen)) != BT_OK ||
        (st = make_estimator(reg, lm, err, errlen)) != BT_OK)
        goto fail;
    bt_unroll_budget_bytes(cfg->memory_budget_mb, &lm->budget, NULL, 0); /* checked above */
    *out = lm;
    return BT_OK;
fail:
    bt_lm_free(lm);
    return st;
}

/* "1, 2, 3, 6": the numbers of processes that split B rows evenly. */
static const char *divisors(int B, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int n = 1; n <= B && used + 16 < len; n++)
        if (B % n == 0)
            used += (size_t)snprintf(buf + used, len - used, "%s%d", used ? ", " : "", n);
    if (used + 16 >= len)
        snprintf(buf + used, len - used, ", ...");
    return buf;
}

bt_status bt_lm_distribute(bt_lm *lm, bt_dist *d, char *err, size_t errlen)
{
    int N = bt_dist_size(d), B = lm->cfg.batch;
    if (N <= 1)
        return BT_OK;
    if (lm->est)
        return bt_error(err, errlen, BT_ERR_ARG, "--estimator %s trains on one process: an "
                        "online estimator's state spans every row, and its data-parallel form "
                        "is not written; run it without mpirun", lm->cfg.estimator);
    if (lm->cfg.dropout > 0) /* masks are drawn by position within a process's rows */
        return bt_error(err, errlen, BT_ERR_ARG, "--dropout %g trains on one process: its masks "
                        "follow the rows a process holds, so N processes would not train the "
                        "one-process model; run it without mpirun", lm->cfg.dropout);
    char ok[256];
    if (B % N != 0)
        return bt_error(err, errlen, BT_ERR_ARG, "--batch %d does not split into %d equal blocks "
                        "of rows, one per process: run with a number of processes that divides "
                        "the batch (%s), or a batch that %d divides", B, N,
                        divisors(B, ok, sizeof ok), N);
    bt_unroller *u = NULL;
    bt_status st = bt_unroller_new(lm->m, B / N, lm->cfg.steps, &u, err, errlen);
    if (st == BT_OK)
        st = bt_dist_reserve(d, bt_params_total(lm->m->params), err, errlen);
    if (st != BT_OK) {
        bt_unroller_free(u);
        return st;
    }
    bt_unroller_free(lm->u);
    lm->u = u;
    lm->dist = d;
    lm->rows = B / N;
    lm->row0 = lm->rows * bt_dist_rank(d);
    return BT_OK;
}

bt_status bt_lm_set_threads(bt_lm *lm, int n, int *lanes, char *err, size_t errlen)
{
    *lanes = 1;
    if (lm->est || n <= 1)
        return BT_OK;
    if (lm->cfg.dropout > 0)
        return bt_error(err, errlen, BT_ERR_ARG, "--dropout %g trains on one thread: its masks "
                        "follow the rows' places in the batch, so rows split over %d threads "
                        "would train another model; use --threads 1", lm->cfg.dropout, n);
    bt_status st = bt_unroller_set_threads(lm->u, n, err, errlen);
    if (st == BT_OK)
        *lanes = n;
    return st;
}

bool bt_lm_params_finite(const bt_lm *lm)
{
    const bt_real *p = bt_params_data(lm->m->params);
    size_t n = bt_params_total(lm->m->params);
    /* Sum of x * 0: NaN as soon as one x is NaN or infinite, one pass, no branch. */
    double acc = 0;
    for (size_t i = 0; i < n; i++)
        acc += (double)p[i] * 0.0;
    return acc == 0;
}

/* Rows [first, first + count) of seq: a block of rows is a pointer offset. */
static const bt_sequence *rows_of(const bt_lm *lm, const bt_sequence *seq, int first, int count,
                                  bt_sequence *part)
{
    return bt_sequence_rows(seq, first, count, lm->m->dims.input, lm->m->dims.output, part);
}

/* One validation minibatch from the state in eval_block (zeroed first when
 * fresh), which it leaves at the minibatch's end; adds its loss to *sum and
 * its scored rows to *terms. */
static bt_status eval_batch(bt_lm *lm, const bt_sequence *seq, bool fresh, double *sum,
                            long *terms, char *err, size_t errlen)
{
    bt_model *m = lm->m;
    bt_graph *g = lm->eval_g;
    size_t need = 0;
    for (int k = 0; k < m->n_states; k++)
        need += (size_t)seq->B * (size_t)m->state_width[k];
    if (need > lm->eval_cap) { /* once per run: validation batches keep their shape */
        bt_free(lm->eval_block);
        lm->eval_block = bt_calloc(need, sizeof(bt_real));
        lm->eval_cap = lm->eval_block ? need : 0;
        if (!lm->eval_block)
            return bt_error(err, errlen, BT_ERR_NOMEM, "out of memory for validation");
    }
    if (fresh)
        memset(lm->eval_block, 0, need * sizeof(bt_real));
    bt_graph_reset(g);
    bt_tensor *state[BT_MAX_STATES], *next[BT_MAX_STATES];
    bt_real *src_state = lm->eval_block;
    for (int k = 0; k < m->n_states; k++) {
        state[k] = bt_graph_input(g, 2, (int[]){seq->B, m->state_width[k]}, src_state);
        src_state += (size_t)seq->B * (size_t)m->state_width[k];
    }
    for (long s = 0; s < seq->T; s++) {
        bt_tensor *l = bt_unroll_step(g, m, seq, s, state, next);
        if (!l) {
            snprintf(err, errlen, "validation: cell %s: %s", m->cell->name, bt_graph_error(g));
            return bt_graph_status(g) != BT_OK ? bt_graph_status(g) : BT_ERR_ARG;
        }
        double w = seq->loss_weight ? (double)seq->loss_weight[s] : 1.0;
        *sum += (double)l->data[0] * w * seq->B;
        *terms += w != 0 ? seq->B : 0;
        memcpy(state, next, sizeof(bt_tensor *) * (size_t)m->n_states);
    }
    bt_real *dst = lm->eval_block;
    for (int k = 0; k < m->n_states; k++) {
        memcpy(dst, state[k]->data, sizeof(bt_real) * state[k]->size);
        dst += state[k]->size;
    }
    return BT_OK;
}

bt_status bt_lm_evaluate(bt_lm *lm, double *loss, char *err, size_t errlen)
{
    bt_source *src = lm->src;
    *loss = NAN;
    double sum = 0;
    long terms = 0;
    int rows = -1;
    bt_sequence seq, part;
    bt_status st = BT_OK;
    for (int i = 0; st == BT_OK && src->validation && src->validation(src->ctx, i, &seq); i++) {
        /* The state starts at zero for every independent minibatch, and for a
         * new row layout (or the start) of a text read from start to end. */
        bool fresh = !src->val_carry_state || seq.B != rows;
        rows = seq.B;
        const bt_sequence *mine = &seq;
        if (lm->dist) { /* this process's share of the rows */
            int first, count;
            bt_dist_rows(lm->dist, seq.B, &first, &count);
            mine = rows_of(lm, &seq, first, count, &part);
        }
        if (mine->B > 0)
            st = eval_batch(lm, mine, fresh, &sum, &terms, err, errlen);
    }
    if (lm->dist) { /* the sums over all rows; a failure anywhere stops every process */
        double v[2] = {sum, (double)terms};
        st = bt_dist_sum(lm->dist, v, 2, st, err, errlen);
        sum = v[0];
        terms = (long)v[1];
    }
    if (st != BT_OK)
        return st;
    if (terms == 0) {
        snprintf(err, errlen, "no validation data (use --val-fraction)");
        return BT_ERR_NOT_FOUND;
    }
    *loss = sum / (double)terms;
    return BT_OK;
}

static bt_status history_push(bt_lm *lm, const bt_lm_epoch *e)
{
    if (lm->n_hist == lm->cap_hist) { /* once per epoch at most: not on the step path */
        int cap = lm->cap_hist ? 2 * lm->cap_hist : 64;
        bt_lm_epoch *h = bt_realloc(lm->hist, sizeof *h * (size_t)cap);
        if (!h)
            return BT_ERR_NOMEM;
        lm->hist = h;
        lm->cap_hist = cap;
    }
    lm->hist[lm->n_hist++] = *e;
    return BT_OK;
}

static double ppl_of(const bt_lm *lm, double loss)
{
    return lm->src->tokens_out ? exp(loss) : NAN;
}

/* What an epoch's minibatches add up to. */
typedef struct epoch_sums {
    double t0, loss_sum, gsum, gmax;
    long terms, tokens;
    int batches, done, updates, skipped;
    size_t peak;
} epoch_sums;

/* Adds one minibatch's result, and tells the progress hook. */
static void add_batch(bt_lm *lm, epoch_sums *a, const bt_sequence *seq, const bt_unroll_result *r,
                      int epochs_target, const bt_lm_hooks *hooks)
{
    a->done++;
    a->loss_sum += r->loss_sum;
    a->terms += r->loss_terms;
    a->tokens += (long)seq->B * seq->T;
    a->updates += r->updates;
    a->skipped += r->skipped;
    a->gsum += r->grad_norm_sum;
    if (r->grad_norm_max > a->gmax)
        a->gmax = r->grad_norm_max;
    if (r->peak_arena > a->peak)
        a->peak = r->peak_arena;
    if (!hooks || !hooks->progress)
        return;
    double dt = bt_monotonic_s() - a->t0, mean = a->terms ? a->loss_sum / (double)a->terms : NAN;
    int left = a->batches - a->done + a->batches * (epochs_target - lm->epochs_done - 1);
    bt_lm_progress p = {
        .epoch = lm->epochs_done + 1,
        .epochs = epochs_target,
        .batch = a->done,
        .batches = a->batches,
        .train_loss = mean,
        .train_ppl = ppl_of(lm, mean),
        .batch_loss = r->loss_terms ? r->loss_sum / (double)r->loss_terms : NAN,
        .tokens_per_s = dt > 0 ? (double)a->tokens / dt : 0,
        .eta_s = dt / a->done * (left > 0 ? left : 0),
    };
    hooks->progress(hooks->ctx, &p);
}

/* Where the epoch stands, kept when the run stops within it. */
static void keep_position(bt_lm *lm, const epoch_sums *a)
{
    double *v = lm->pos.sums;
    lm->pos.batches_done = a->done;
    v[BT_LM_SUM_LOSS] = a->loss_sum, v[BT_LM_SUM_TERMS] = (double)a->terms;
    v[BT_LM_SUM_TOKENS] = (double)a->tokens, v[BT_LM_SUM_UPDATES] = a->updates;
    v[BT_LM_SUM_SKIPPED] = a->skipped, v[BT_LM_SUM_GNORM] = a->gsum, v[BT_LM_SUM_GMAX] = a->gmax;
    v[BT_LM_SUM_PEAK] = (double)a->peak, v[BT_LM_SUM_SECONDS] = bt_monotonic_s() - a->t0;
}

/* An epoch continued where a restored run stopped: its order replayed from
 * the RNG it began with, the minibatches done skipped (with the policy seeds
 * they drew), and the sums so far restored. */
static bt_status replay_epoch(bt_lm *lm, epoch_sums *a, char *err, size_t errlen)
{
    int skip = lm->pos.batches_done;
    if (skip >= a->batches)
        return bt_error(err, errlen, BT_ERR_FORMAT, "the run stopped after minibatch %d of an "
                        "epoch that has %d: not this data", skip, a->batches);
    bt_sequence seq;
    for (int i = 0; i < skip; i++) {
        if (!lm->src->next(lm->src->ctx, &seq))
            return bt_error(err, errlen, BT_ERR_FORMAT, "the epoch ended at minibatch %d of the "
                            "%d the run had done", i, skip);
        bt_rng_next(&lm->rng); /* the policy seed that minibatch drew */
    }
    if (memcmp(lm->rng.s, lm->rng_now, sizeof lm->rng_now) != 0)
        return bt_error(err, errlen, BT_ERR_FORMAT, "replaying the %d minibatches done does not "
                        "reach the run's RNG: the position within the epoch is damaged, or the "
                        "data is not the run's", skip);
    const double *v = lm->pos.sums;
    a->done = skip;
    a->loss_sum = v[BT_LM_SUM_LOSS], a->terms = (long)v[BT_LM_SUM_TERMS];
    a->tokens = (long)v[BT_LM_SUM_TOKENS], a->updates = (int)v[BT_LM_SUM_UPDATES];
    a->skipped = (int)v[BT_LM_SUM_SKIPPED], a->gsum = v[BT_LM_SUM_GNORM];
    a->gmax = v[BT_LM_SUM_GMAX], a->peak = (size_t)v[BT_LM_SUM_PEAK];
    a->t0 = bt_monotonic_s() - v[BT_LM_SUM_SECONDS];
    lm->pos.batches_done = 0; /* consumed: the next epoch starts afresh */
    return BT_OK;
}

/* The epoch's data order drawn (or replayed), the state zeroed at its start. */
static bt_status begin_epoch(bt_lm *lm, epoch_sums *a, char *err, size_t errlen)
{
    bool within = lm->pos.batches_done > 0;
    if (within)
        memcpy(lm->rng.s, lm->pos.epoch_rng, sizeof lm->rng.s);
    else {
        memcpy(lm->pos.epoch_rng, lm->rng.s, sizeof lm->rng.s);
        /* d2l starts every epoch from a zero state; random sampling also zeroes
         * it before each minibatch, since neighbouring rows are unrelated text. */
        memset(lm->state_block, 0, lm->state_len * sizeof(bt_real));
    }
    lm->src->epoch(lm->src->ctx, &lm->rng);
    a->batches = lm->src->count(lm->src->ctx);
    return within ? replay_epoch(lm, a, err, errlen) : BT_OK;
}

/* The update hook of a distributed run: the gradient and loss summed over
 * the processes, a failure on any of them agreed on. */
static bt_status dist_update(void *ctx, bt_params *p, bt_status st, uint64_t digest,
                             double *loss, char *err, size_t errlen)
{
    bt_lm *lm = ctx;
    int at[2] = {lm->epochs_done, lm->batch_at};
    digest = bt_dist_checksum(bt_dist_checksum(digest, at, sizeof at), &lm->batch_sum,
                              sizeof lm->batch_sum);
    st = bt_dist_reduce_grad(lm->dist, p, st, digest, loss, err, errlen);
    lm->agreed = st != BT_OK;
    return st;
}

/* A checksum of every row of seq: processes reading different data differ. */
static uint64_t sequence_sum(const bt_lm *lm, const bt_sequence *seq)
{
    size_t n = (size_t)seq->B * (size_t)seq->T;
    uint64_t h = 0;
    if (seq->ids)
        h = bt_dist_checksum(h, seq->ids, sizeof(int32_t) * n);
    if (seq->targets)
        h = bt_dist_checksum(h, seq->targets, sizeof(int32_t) * n);
    if (seq->x)
        h = bt_dist_checksum(h, seq->x, sizeof(bt_real) * n * (size_t)lm->m->dims.input);
    if (seq->y)
        h = bt_dist_checksum(h, seq->y, sizeof(bt_real) * n * (size_t)lm->m->dims.output);
    return h;
}

/* One minibatch through the online estimator, updating as it goes. fresh:
 * the state was just zeroed, so the estimator's state starts afresh (seeded
 * with the minibatch's draw); else it carries on with the state. */
static bt_status train_online(bt_lm *lm, const bt_sequence *seq, const bt_unroll_opts *o,
                              bool fresh, bt_unroll_result *r, char *err, size_t errlen)
{
    bt_online_opts oo = {.estimator = lm->est, .begin = fresh, .seed = o->policy_seed,
                         .optimizer = lm->opt, .clip = lm->cfg.clip,
                         .update_every = lm->cfg.update_every};
    return bt_online_run(lm->onl, seq, lm->state, &oo, NULL, r, err, errlen);
}

/* One minibatch through the unroller: all its rows, or this process's. A
 * failure the update hook did not carry to the other processes (one before
 * any window) is sent in the frame they are waiting in. */
static bt_status train_batch(bt_lm *lm, const bt_sequence *seq, const bt_unroll_opts *o,
                             bool fresh, bt_unroll_result *r, char *err, size_t errlen)
{
    if (lm->est)
        return train_online(lm, seq, o, fresh, r, err, errlen);
    if (!lm->dist)
        return bt_unroll_run(lm->u, seq, lm->state, o, NULL, NULL, NULL, r, err, errlen);
    bt_sequence part;
    bt_real *mine[BT_MAX_STATES];
    lm->batch_sum = sequence_sum(lm, seq);
    for (int k = 0; k < lm->m->n_states; k++)
        mine[k] = lm->state[k] + (size_t)lm->row0 * (size_t)lm->m->state_width[k];
    lm->agreed = false;
    bt_status st = bt_unroll_run(lm->u, rows_of(lm, seq, lm->row0, lm->rows, &part), mine, o,
                                 NULL, NULL, NULL, r, err, errlen);
    if (st != BT_OK && !lm->agreed) {
        double loss = 0;
        st = bt_dist_reduce_grad(lm->dist, lm->m->params, st, 0, &loss, err, errlen);
    }
    return st;
}

/* Every minibatch of the epoch (those left, when it continues one) through
 * the unroller, with its updates; on a stop request, the position is kept
 * and the epoch left unfinished. A distributed run stops only between epochs
 * (bt_lm_train_epoch), where every process holds every row's state. */
static bt_status train_batches(bt_lm *lm, epoch_sums *a, int epochs_target,
                               const bt_lm_hooks *hooks, char *err, size_t errlen)
{
    bt_source *src = lm->src;
    bt_unroll_opts o = {
        .policy = lm->pdef,
        .policy_state = lm->pstate,
        .optimizer = lm->opt,
        .clip = lm->cfg.clip,
        .checkpoint_every = lm->cfg.checkpoint_every,
        .memory_budget = lm->budget,
        .on_update = lm->dist ? dist_update : NULL,
        .update_ctx = lm,
        .dropout = true, /* a stack's dropout, masks from each minibatch's policy seed */
    };
    bt_sequence seq;
    bt_unroll_result r;
    while (src->next(src->ctx, &seq)) {
        bool fresh = !src->carry_state || a->done == 0;
        if (!src->carry_state && a->done > 0)
            memset(lm->state_block, 0, lm->state_len * sizeof(bt_real));
        o.policy_seed = bt_rng_next(&lm->rng); /* drawn for every policy, so data order agrees */
        char uerr[BT_ERRMSG_LEN] = "";
        lm->batch_at = a->done;
        bt_status st = train_batch(lm, &seq, &o, fresh, &r, uerr, sizeof uerr);
        if (st != BT_OK)
            return bt_error(err, errlen, st, "epoch %d, minibatch %d of %d: %s",
                            lm->epochs_done + 1, a->done + 1, a->batches, uerr);
        add_batch(lm, a, &seq, &r, epochs_target, hooks);
        if (!lm->dist && atomic_load(&lm->stop) && a->done < a->batches) {
            keep_position(lm, a);
            lm->stopped = true;
            break;
        }
    }
    return BT_OK;
}

/* The epoch's figures into *e (with the validation loss, when there is
 * validation data), and into the history. */
static bt_status finish_epoch(bt_lm *lm, const epoch_sums *a, double t_train, bt_lm_epoch *e,
                              char *err, size_t errlen)
{
    memset(e, 0, sizeof *e);
    e->epoch = lm->epochs_done + 1;
    e->train_loss = a->terms ? a->loss_sum / (double)a->terms : NAN;
    e->train_ppl = ppl_of(lm, e->train_loss);
    e->val_loss = e->val_ppl = NAN;
    if (lm->src->validation) {
        double vl;
        char verr[BT_ERRMSG_LEN] = "";
        bt_status st = bt_lm_evaluate(lm, &vl, verr, sizeof verr);
        if (st == BT_OK) {
            e->val_loss = vl;
            e->val_ppl = ppl_of(lm, vl);
        } else if (st != BT_ERR_NOT_FOUND)
            return bt_error(err, errlen, st, "epoch %d: %s", e->epoch, verr);
    }
    e->tokens_per_s = t_train > 0 ? (double)a->tokens / t_train : 0;
    e->updates = a->updates;
    e->skipped = a->skipped;
    e->grad_norm_mean = a->updates - a->skipped > 0 ? a->gsum / (a->updates - a->skipped) : 0;
    e->grad_norm_max = a->gmax;
    e->seconds = bt_monotonic_s() - a->t0;
    e->elapsed = (lm->n_hist ? lm->hist[lm->n_hist - 1].elapsed : 0) + e->seconds;
    e->peak_arena = a->peak;
    if (a->peak > lm->peak_arena)
        lm->peak_arena = a->peak;
    if (history_push(lm, e) != BT_OK)
        return bt_error(err, errlen, BT_ERR_NOMEM, "out of memory for the epoch history");
    return BT_OK;
}

/* The checksum of what every process must hold alike: the sizes, the
 * parameters and optimizer state, the run's RNG and progress. */
static uint64_t run_sum(const bt_lm *lm)
{
    bt_params *p = lm->m->params;
    size_t total = bt_params_total(p);
    long sizes[6] = {(long)total, bt_optimizer_state_count(lm->opt), lm->cfg.batch,
                     lm->cfg.steps, lm->epochs_done, (long)lm->updates};
    uint64_t h = bt_dist_checksum(0, sizes, sizeof sizes);
    h = bt_dist_checksum(h, lm->rng.s, sizeof lm->rng.s);
    h = bt_dist_checksum(h, bt_params_data(p), total * sizeof(bt_real));
    for (int i = 0; i < bt_optimizer_state_count(lm->opt); i++)
        h = bt_dist_checksum(h, bt_optimizer_state(lm->opt, i), total * sizeof(bt_real));
    return h;
}

/* The start of a distributed epoch, in a frame whose size depends only on N:
 * every process holds the same model (same size: the gradient frames that
 * follow match), optimizer state, RNG and progress (a checkpoint that differs
 * between hosts, a plugin that initialises differently). */
static bt_status dist_epoch_begin(bt_lm *lm, char *err, size_t errlen)
{
    char what[96];
    snprintf(what, sizeof what, "before epoch %d, the model, optimizer state or progress",
             lm->epochs_done + 1);
    return bt_dist_check_same(lm->dist, BT_OK, run_sum(lm), what, err, errlen);
}

/* The end of a distributed epoch: every row's carried state gathered on
 * every process (a checkpoint holds them all), the parameters and optimizer
 * state checked to be bit for bit the same everywhere, and st agreed on. */
static bt_status dist_epoch_end(bt_lm *lm, bt_status st, char *err, size_t errlen)
{
    bt_model *m = lm->m;
    /* First every process at the end of the epoch, in the frame of an
     * update: one still updating is found there, not in a collective of
     * another shape, which would never return. */
    int end[2] = {lm->epochs_done, -1};
    double none = 0;
    st = bt_dist_reduce_grad(lm->dist, NULL, st, bt_dist_checksum(0, end, sizeof end), &none,
                             err, errlen);
    for (int k = 0; k < m->n_states; k++)
        bt_dist_gather_rows(lm->dist, lm->state[k], (size_t)lm->rows * (size_t)m->state_width[k]);
    char what[64];
    snprintf(what, sizeof what, "after epoch %d, the parameters or optimizer state",
             lm->epochs_done + 1);
    return bt_dist_check_same(lm->dist, st, run_sum(lm), what, err, errlen);
}

/* Was a stop requested? Distributed, on any process (each may have had its
 * own signal, or none), agreed on by all, so they stop together. */
static bt_status stop_requested(bt_lm *lm, char *err, size_t errlen)
{
    double v = atomic_load(&lm->stop) != 0;
    bt_status st = lm->dist ? bt_dist_sum(lm->dist, &v, 1, BT_OK, err, errlen) : BT_OK;
    lm->stopped = st == BT_OK && v > 0;
    return st;
}

bt_status bt_lm_train_epoch(bt_lm *lm, int epochs_target, const bt_lm_hooks *hooks,
                            bt_lm_epoch *e, char *err, size_t errlen)
{
    bt_status st = stop_requested(lm, err, errlen); /* before anything: the position stands */
    if (st != BT_OK || lm->stopped)
        return st;
    epoch_sums a = {.t0 = bt_monotonic_s()};
    st = lm->dist ? dist_epoch_begin(lm, err, errlen) : BT_OK;
    if (st == BT_OK)
        st = begin_epoch(lm, &a, err, errlen);
    if (st == BT_OK)
        st = train_batches(lm, &a, epochs_target, hooks, err, errlen);
    if (st != BT_OK || lm->stopped)
        return st;
    double t_train = bt_monotonic_s() - a.t0;
    if (!bt_lm_params_finite(lm))
        st = bt_error(err, errlen, BT_ERR_NUMERIC, "epoch %d: the parameters became non-finite: "
                      "lower the learning rate or clip gradients (--clip)", lm->epochs_done + 1);
    /* Distributed, each step below ends in an agreement, so a process that
     * fails never leaves the others waiting in a collective it skips. */
    if (lm->dist)
        st = dist_epoch_end(lm, st, err, errlen);
    if (st == BT_OK)
        st = finish_epoch(lm, &a, t_train, e, err, errlen);
    if (lm->dist)
        st = bt_dist_agree(lm->dist, st, err, errlen);
    if (st != BT_OK)
        return st;
    lm->epochs_done++;
    lm->updates += (uint64_t)a.updates;
    if (hooks && hooks->epoch_done)
        st = hooks->epoch_done(hooks->ctx, lm, e, err, errlen);
    return lm->dist ? bt_dist_agree(lm->dist, st, err, errlen) : st;
}

bt_status bt_lm_train(bt_lm *lm, int epochs, const bt_lm_hooks *hooks, char *err, size_t errlen)
{
    while (lm->epochs_done < epochs) {
        bt_lm_epoch e;
        bt_status st = bt_lm_train_epoch(lm, epochs, hooks, &e, err, errlen);
        if (st != BT_OK || lm->stopped)
            return st;
    }
    return BT_OK;
}

void bt_lm_request_stop(bt_lm *lm)
{
    atomic_store(&lm->stop, 1);
}

bool bt_lm_stopped(const bt_lm *lm) { return lm->stopped; }

void bt_lm_position_get(const bt_lm *lm, bt_lm_position *p) { *p = lm->pos; }

bt_status bt_lm_position_set(bt_lm *lm, const bt_lm_position *p, char *err, size_t errlen)
{
    bool ok = p->batches_done >= 0;
    for (int i = 0; ok && i < BT_LM_SUMS; i++)
        ok = isfinite(p->sums[i]) && (i == BT_LM_SUM_LOSS || p->sums[i] >= 0);
    if (!ok)
        return bt_error(err, errlen, BT_ERR_FORMAT, "bad position within the epoch: %d minibatches "
                        "done, sums not finite or negative", p->batches_done);
    lm->pos = *p;
    memcpy(lm->rng_now, lm->rng.s, sizeof lm->rng_now); /* where the replay must arrive */
    return BT_OK;
}

const bt_lm_config *bt_lm_config_of(const bt_lm *lm) { return &lm->cfg; }
bt_model *bt_lm_model(bt_lm *lm) { return lm->m; }
bt_optimizer *bt_lm_optimizer(bt_lm *lm) { return lm->opt; }
bt_source *bt_lm_source(bt_lm *lm) { return lm->src; }
bt_rng *bt_lm_rng(bt_lm *lm) { return &lm->rng; }
bt_real *const *bt_lm_state(bt_lm *lm) { return lm->state; }
bt_estimator *bt_lm_estimator(bt_lm *lm) { return lm->est; }
int bt_lm_epochs_done(const bt_lm *lm) { return lm->epochs_done; }
uint64_t bt_lm_updates(const bt_lm *lm) { return lm->updates; }

const char *bt_lm_policy_describe(const bt_lm *lm, char *buf, size_t len)
{
    if (lm->est)
        return bt_estimator_describe(lm->est, buf, len);
    if (lm->pdef->describe && bt_policy_describe(lm->pdef, lm->pstate, buf, len))
        return buf;
    snprintf(buf, len, "%s", lm->cfg.truncation);
    return buf;
}

const char *bt_lm_optimizer_describe(const bt_lm *lm, char *buf, size_t len)
{
    return bt_optimizer_describe(lm->opt, buf, len);
}

size_t bt_lm_memory(const bt_lm *lm)
{
    size_t total = bt_params_total(lm->m->params);
    size_t n_opt = (size_t)bt_optimizer_state_count(lm->opt);
    if (lm->est) /* the runner's running sum and two flat states, the estimator's buffers, a step's arena */
        return sizeof(bt_real) * (total * (3 + n_opt) + 3 * lm->state_len) +
               bt_estimator_bytes(lm->est) + lm->peak_arena;
    int reach = lm->pdef->max_reach ? lm->pdef->max_reach(lm->pstate) : 0;
    /* The unroller's ring keeps max(reach, 1) + 1 states. */
    size_t ring = lm->state_len * (size_t)((reach > 0 ? reach : 1) + 1);
    return sizeof(bt_real) * (total * (2 + n_opt) + lm->state_len + ring) + lm->peak_arena;
}

int bt_lm_history(const bt_lm *lm, const bt_lm_epoch **epochs)
{
    *epochs = lm->hist;
    return lm->n_hist;
}

bt_status bt_lm_set_progress(bt_lm *lm, int epochs_done, uint64_t updates,
                             const bt_lm_epoch *history, int n, char *err, size_t errlen)
{
    if (epochs_done < 0 || n < 0 || n > epochs_done) {
        snprintf(err, errlen, "bad progress: epoch %d with %d history rows", epochs_done, n);
        return BT_ERR_ARG;
    }
    lm->n_hist = 0;
    for (int i = 0; i < n; i++)
        if (history_push(lm, &history[i]) != BT_OK) {
            snprintf(err, errlen, "out of memory for the epoch history");
            return BT_ERR_NOMEM;
        }
    lm->epochs_done = epochs_done;
    lm->updates = updates;
    return BT_OK;
}

/* Does a registered policy (or estimator) name start at s, followed by ':',
 * ',' or the end? */
static bool policy_starts(const bt_registry *r, const char *s)
{
    size_t n = strcspn(s, ":,");
    char name[BT_NAME_LEN + 1];
    if (n == 0 || n > BT_NAME_LEN)
        return false;
    memcpy(name, s, n);
    name[n] = '\0';
    return bt_registry_policy(r, name) != NULL || bt_registry_estimator(r, name) != NULL;
}

int bt_lm_split_policies(const bt_registry *r, const char *list, char (*out)[256], int max,
                         char *err, size_t errlen)
{
    char known[512], kest[256];
    if (!list || !*list) {
        snprintf(err, errlen, "no truncation policy given");
        return -1;
    }
    if (!policy_starts(r, list)) {
        snprintf(err, errlen, "'%.*s' is not a truncation policy (known: %s) nor an estimator "
                 "(%s)", (int)strcspn(list, ":,"), list,
                 bt_registry_names(r, BT_KIND_POLICY, known, sizeof known),
                 bt_registry_names(r, BT_KIND_ESTIMATOR, kest, sizeof kest));
        return -1;
    }
    int n = 0;
    const char *start = list;
    for (const char *p = list;; p++) {
        /* An entry that begins with ',' is empty ("full,,lr=0.1"), whatever follows. */
        bool empty = p == start && (*p == ',' || *p == '\0');
        if (!empty && *p != '\0' &&
            !(*p == ',' && (p[1] == '\0' || p[1] == ',' || policy_starts(r, p + 1))))
            continue;
        size_t len = (size_t)(p - start);
        if (empty || len == 0) {
            snprintf(err, errlen, "empty entry in the policy list '%s'", list);
            return -1;
        }
        if (n == max || len > 255) {
            snprintf(err, errlen, n == max ? "more than %d policies in '%s'" : "policy %d of '%s' "
                     "is too long", n == max ? max : n + 1, list);
            return -1;
        }
        memcpy(out[n], start, len);
        out[n][len] = '\0';
        /* "full,bogus:3" reads as policy "full,bogus": name the stray word (an
         * option with '=' is no stray word: "uoro,seed=3"). */
        size_t name_len = strcspn(out[n], ":");
        const char *comma = memchr(out[n], ',', name_len);
        size_t word = comma ? strcspn(comma + 1, ",:") : 0;
        if (comma && !memchr(comma + 1, '=', word)) {
            snprintf(err, errlen, "'%.*s' is not a truncation policy (known: %s) nor an "
                     "estimator (%s)", (int)(name_len - (size_t)(comma + 1 - out[n])), comma + 1,
                     bt_registry_names(r, BT_KIND_POLICY, known, sizeof known),
                     bt_registry_names(r, BT_KIND_ESTIMATOR, kest, sizeof kest));
            return -1;
        }
        n++;
        if (*p == '\0')
            break;
        start = p + 1;
    }
    return n;
}
