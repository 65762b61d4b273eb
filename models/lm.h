/* lm.h: the training loop as a library. A run is a source, a model, a
 * truncation policy and an optimizer, driven epoch by epoch; each minibatch
 * is one sequence for bt_unroll_run, with the state carried between
 * minibatches when the source says so. Commands (train, compare, demo) add
 * printing, metrics files and checkpoints through the hooks.
 *
 * Dimension letters: B rows, T steps, H hidden, V vocabulary. */
#ifndef BPTT_LM_H
#define BPTT_LM_H

#include "batcher.h"
#include "dist.h"
#include "model.h"
#include "online.h"
#include "registry.h"
#include "source.h"
#include "tokenize.h"
#include "unroll.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Every setting of a run: what a checkpoint stores and a resume must match.
 * The strings are borrowed, of any length: they must stay valid while the
 * config is used, and bt_lm_new keeps its own copies (bt_lm_config_of gives
 * those), so no spec is ever cut short. */
typedef struct bt_lm_config {
    const char *cell;       /* "rnn_tanh" */
    int hidden, batch, steps;
    const char *optimizer;  /* "sgd:lr=1" as given */
    double clip;            /* global-norm theta; <= 0 disables */
    const char *truncation; /* "full", "fixed:35", "random:0.1,seed=3", "tbptt:5,35" */
    /* An online gradient estimator instead of BPTT ("rtrl", "uoro,seed=3"; ""
     * or NULL for BPTT under the truncation policy), updating the parameters
     * after every update_every steps and at the end of each minibatch. */
    const char *estimator;
    int update_every;
    const char *init;       /* --init spec; "" (or NULL) for the cell's defaults */
    uint64_t seed;
    bt_tokens_kind tokens;
    bt_batch_mode sampling;
    long max_tokens;        /* 0: the whole text */
    double val_fraction;    /* the end of the text held out for validation */
    /* How backward runs, not what it computes (the same gradients up to
     * rounding): exact checkpointed BPTT keeping one state every
     * checkpoint_every steps (-1: sqrt of the window; 0 off), or within a
     * window memory budget (MB; 0 none, else at least one byte). A checkpoint
     * stores them and a resume keeps them unless told otherwise. */
    int checkpoint_every;
    double memory_budget_mb;
    /* A stack (models/stack.h): "" for one cell (cell, hidden), else every
     * layer as "C:H,C:H" (bt_layers_canonical; cell and hidden are then
     * layer 1's). Dropout on each layer's h while training (0: none; a model
     * with dropout is a stack even with one layer), variational: one mask per
     * sequence. A checkpoint stores them. */
    char layers[256];
    double dropout;
    bool variational;
} bt_lm_config;

/* Does c name an online estimator (rather than BPTT under a policy)? */
static inline bool bt_lm_config_online(const bt_lm_config *c)
{
    return c->estimator && c->estimator[0];
}

/* The classic char-RNN setup (d2l): rnn_tanh, hidden 512, batch 32, 35 steps,
 * sgd:lr=1, clip 1, full BPTT over each minibatch, chars, sequential, seed 0. */
BT_API void bt_lm_config_default(bt_lm_config *c);

/* The settings of a bt_lm_config a user sets by name: what a checkpoint
 * fixes, so a resumed run may not change them. */
typedef enum bt_lm_setting {
    BT_LM_CELL, BT_LM_HIDDEN, BT_LM_BATCH, BT_LM_STEPS, BT_LM_OPTIMIZER, BT_LM_CLIP,
    BT_LM_TRUNCATION, BT_LM_INIT, BT_LM_SEED, BT_LM_TOKENS, BT_LM_SAMPLING, BT_LM_MAX_TOKENS,
    BT_LM_VAL_FRACTION, BT_LM_ESTIMATOR, BT_LM_UPDATE_EVERY, BT_LM_LAYERS, BT_LM_DROPOUT,
    BT_LM_CHECKPOINT, BT_LM_MEMORY_BUDGET, /* how, not what: a resume may change them */
    BT_LM_SETTING_COUNT
} bt_lm_setting;
/* Its name, as `bptt train` spells the option: "hidden", "max-tokens". */
BT_API const char *bt_lm_setting_name(bt_lm_setting s);

/* Settings as a user gave them: the values (defaults where not given), which
 * were given, and each as typed (for messages). */
typedef struct bt_lm_given {
    bt_lm_config cfg;
    bool given[BT_LM_SETTING_COUNT];
    const char *raw[BT_LM_SETTING_COUNT];
} bt_lm_given;

/* One epoch's figures. Perplexity is exp(mean cross-entropy per token); for
 * a source with real targets the ppl fields are NAN and loss is the MSE. */
typedef struct bt_lm_epoch {
    int epoch;                  /* 1-based, counted over resumes */
    double train_loss, train_ppl;
    double val_loss, val_ppl;   /* NAN without validation data */
    double tokens_per_s;
    double grad_norm_mean, grad_norm_max; /* before clipping, over the updates */
    int updates, skipped;       /* skipped: non-finite gradient norm, no step taken */
    double seconds;             /* this epoch's wall time (training and validation) */
    double elapsed;             /* wall time of all epochs so far, over resumes */
    size_t peak_arena;          /* largest window arena (bytes) */
} bt_lm_epoch;

/* Live progress, after each minibatch (and so after its updates: a hook may
 * read the model, e.g. to trace a parameter during training). */
typedef struct bt_lm_progress {
    int epoch, epochs;          /* epoch under way (1-based) and the target */
    int batch, batches;         /* minibatches done in this epoch, and per epoch */
    double train_loss;          /* mean step loss so far in this epoch */
    double train_ppl;           /* so far in this epoch; NAN for real targets */
    double batch_loss;          /* mean step loss of this minibatch */
    double tokens_per_s;        /* so far in this epoch */
    double eta_s;               /* to the end of the run, from this epoch's speed */
} bt_lm_progress;

typedef struct bt_lm bt_lm;

/* How far a run is into the epoch under way, enough to continue it exactly:
 * the minibatches done (0 at an epoch's end, when nothing else matters), the
 * RNG as the epoch began (replaying the epoch's data order and offsets, and
 * the policy seeds of the minibatches done, reaches the run's RNG now), and
 * the epoch's sums so far, so its figures are those of an epoch never stopped. */
enum { BT_LM_SUM_LOSS, BT_LM_SUM_TERMS, BT_LM_SUM_TOKENS, BT_LM_SUM_UPDATES, BT_LM_SUM_SKIPPED,
       BT_LM_SUM_GNORM, BT_LM_SUM_GMAX, BT_LM_SUM_PEAK, BT_LM_SUM_SECONDS, BT_LM_SUMS };
typedef struct bt_lm_position {
    int batches_done;
    uint64_t epoch_rng[4];
    double sums[BT_LM_SUMS];
} bt_lm_position;

typedef struct bt_lm_hooks {
    void (*progress)(void *ctx, const bt_lm_progress *p); /* may be NULL */
    /* After each epoch; a status other than BT_OK stops the run with it (a
     * checkpoint that could not be written). May be NULL. */
    bt_status (*epoch_done)(void *ctx, bt_lm *lm, const bt_lm_epoch *e, char *err, size_t errlen);
    void *ctx;
} bt_lm_hooks;

/* Builds the model from cfg (cell from reg, sizes from src), initialises it
 * from an RNG seeded with cfg->seed, and creates the policy and optimizer.
 * src must outlive the run; the run does not free it. */
BT_API bt_status bt_lm_new(const bt_registry *reg, const bt_lm_config *cfg, bt_source *src, bt_lm **out,
                           char *err, size_t errlen);
BT_API void bt_lm_free(bt_lm *lm);

/* Trains data-parallel over the processes of d (dist.h): this process unrolls
 * rows [rank * B/N, (rank + 1) * B/N) of every minibatch and its share of the
 * validation rows; at each update the gradient is summed over the processes
 * (and clipped on the norm of the sum), failures are agreed on, and at each
 * epoch's end the parameters and optimizer state are checked to be bit for
 * bit the same everywhere. BT_ERR_ARG when N does not divide the batch (the
 * message lists the N that do). A group of one (or d NULL) changes nothing.
 * Call it on every process before training; it is not collective. The
 * carried state (bt_lm_state) holds every row after each epoch, before the
 * epoch_done hook runs; during an epoch only this process's rows are current. */
BT_API bt_status bt_lm_distribute(bt_lm *lm, bt_dist *d, char *err, size_t errlen);
/* Splits this process's rows of every training minibatch over n threads
 * (bt_unroller_set_threads; call it after bt_lm_distribute). *lanes gets the
 * threads the rows use: n, or 1 for an online estimator, whose state spans
 * every row (it then keeps its matrix products on BLAS threads). BT_ERR_ARG
 * for more threads than rows, or with dropout (its masks follow rows). */
BT_API bt_status bt_lm_set_threads(bt_lm *lm, int n, int *lanes, char *err, size_t errlen);

/* Trains until epoch `epochs` (a total: a resumed run at epoch 5 with epochs
 * 8 trains 3 more). BT_ERR_NUMERIC when the loss or the parameters become
 * non-finite; the hooks have then not seen the bad epoch. A stop requested
 * with bt_lm_request_stop ends it early with BT_OK: bt_lm_stopped says so,
 * and the run (bt_lm_position) can be checkpointed and continued exactly. */
BT_API bt_status bt_lm_train(bt_lm *lm, int epochs, const bt_lm_hooks *hooks, char *err, size_t errlen);
/* One epoch (the rest of it, when the run stopped or was restored within
 * it); fills *e and appends it to the history. A stop requested before the
 * epoch's last minibatch returns BT_OK at once with *e untouched and the
 * epoch unfinished (bt_lm_stopped). */
BT_API bt_status bt_lm_train_epoch(bt_lm *lm, int epochs_target, const bt_lm_hooks *hooks,
                                   bt_lm_epoch *e, char *err, size_t errlen);
/* Asks the run to stop at the next minibatch boundary: the minibatch under
 * way (and its updates) finishes, then bt_lm_train returns. A distributed run
 * (bt_lm_distribute) stops at the end of the epoch under way instead, every
 * process together, when any of them was asked. Only sets a
 * flag: safe to call from a signal handler (the library installs none; the
 * program's handler calls this). */
BT_API void bt_lm_request_stop(bt_lm *lm);
/* Did the last bt_lm_train(_epoch) stop on request before its end? */
BT_API bool bt_lm_stopped(const bt_lm *lm);
/* Where the run is within the epoch under way (for checkpoints). */
BT_API void bt_lm_position_get(const bt_lm *lm, bt_lm_position *p);
/* Continues a run within an epoch (checkpoint loading, after the run's RNG,
 * state, parameters and progress are restored): the next epoch replays the
 * data order from p->epoch_rng, skips the minibatches done, and checks that
 * it reaches the restored RNG. */
BT_API bt_status bt_lm_position_set(bt_lm *lm, const bt_lm_position *p, char *err, size_t errlen);
/* Mean loss per scored token over the source's validation data, from a zero
 * state that carries between minibatches only when the source says they
 * continue each other (val_carry_state); BT_ERR_NOT_FOUND when there is none. */
BT_API bt_status bt_lm_evaluate(bt_lm *lm, double *loss, char *err, size_t errlen);

/* Parts, for checkpoints and reports. */
BT_API const bt_lm_config *bt_lm_config_of(const bt_lm *lm);
BT_API bt_model *bt_lm_model(bt_lm *lm);
BT_API bt_optimizer *bt_lm_optimizer(bt_lm *lm);
BT_API bt_source *bt_lm_source(bt_lm *lm);
BT_API bt_rng *bt_lm_rng(bt_lm *lm);
/* The carried state: n_states buffers [B, width] (zeros unless sequential). */
BT_API bt_real *const *bt_lm_state(bt_lm *lm);
BT_API int bt_lm_epochs_done(const bt_lm *lm);
BT_API uint64_t bt_lm_updates(const bt_lm *lm);
/* The online estimator of a run with one (estimator.h), else NULL. */
BT_API bt_estimator *bt_lm_estimator(bt_lm *lm);
/* Canonical policy and optimizer descriptions ("fixed:35", "sgd:lr=1,weight_decay=0"); a
 * run with an estimator is described by it ("uoro,eps=1e-07"). */
BT_API const char *bt_lm_policy_describe(const bt_lm *lm, char *buf, size_t len);
BT_API const char *bt_lm_optimizer_describe(const bt_lm *lm, char *buf, size_t len);
/* Bytes the run holds for training: parameters, gradients, optimizer state,
 * carried state and the unroller's ring, plus the largest window arena seen. */
BT_API size_t bt_lm_memory(const bt_lm *lm);
/* Every finished epoch, over resumes. */
BT_API int bt_lm_history(const bt_lm *lm, const bt_lm_epoch **epochs);
/* Restores counters and history (checkpoint loading). */
BT_API bt_status bt_lm_set_progress(bt_lm *lm, int epochs_done, uint64_t updates,
                                    const bt_lm_epoch *history, int n, char *err, size_t errlen);
/* True when every parameter is finite (a checkpoint is never written otherwise). */
BT_API bool bt_lm_params_finite(const bt_lm *lm);

/* Splits a list of policy specs, "full,fixed:35,random:0.1,seed=3,tbptt:5,35":
 * commas also separate a policy's options, so a new spec starts only at a
 * comma followed by a registered policy (or estimator: "full,rtrl,uoro,seed=3")
 * name and then ':', ',' or the end.
 * Returns the count, or -1 with a message (empty list or entry, unknown
 * first name, more than max, a spec longer than 255 bytes). */
BT_API int bt_lm_split_policies(const bt_registry *r, const char *list, char (*out)[256], int max,
                                char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
