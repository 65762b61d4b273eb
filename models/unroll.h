/* unroll.h: runs a recurrent model over a sequence, building the unrolled
 * graph from ordinary ops. Before each step the truncation policy gives xi_t,
 * the factor on the recurrent edge h_{t-1} -> h_t: 1 keeps it, 0 inserts a
 * detach, anything else a grad_scale. At each update the losses since the last
 * update are backpropagated through the last `reach` steps (TBPTT's K2), the
 * optimizer steps, and the window's arena is reset.
 *
 * Dimension letters: B batch rows, T steps, H hidden, D input, Q output. */
#ifndef BPTT_UNROLL_H
#define BPTT_UNROLL_H

#include "model.h"
#include "registry.h"
#include "source.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One backward window: steps start..end, losses of steps loss_from..end. */
typedef struct bt_window {
    long start, end, loss_from;
} bt_window;

typedef struct bt_unroll_opts {
    const bt_policy_def *policy;
    void *policy_state;
    uint64_t policy_seed;    /* handed to policy->begin */
    const double *xi;        /* [T] replaces the policy's xi draws (updates still follow xi == 0 cuts) */
    bt_optimizer *optimizer; /* NULL: accumulate gradients only (bptt grad); else
                                bound to the model's parameters (BT_ERR_ARG if not) */
    double clip;             /* global-norm theta; <= 0 disables */
    /* Every step's loss weighs 1/T of the sequence in both modes, so the
     * gradients of all windows add up to those of L = mean_t l_t, and random
     * truncation is unbiased. accumulate: sum them (no optimizer step). */
    bool accumulate;
    bool want_dh0;           /* gradient of the initial state (accumulate mode) */
    bool want_dh_norms;      /* ||dL/dh_t|| per step (accumulate mode) */
    int dh_state;            /* ... of this state (0: the first; a stack's layer l: its
                                layer_state0[l]) */
    /* Exact BPTT in bounded memory: > 0 keeps one state every this many steps
     * of a window and recomputes the stretches between them during backward;
     * -1 picks sqrt(window length); 0 keeps the whole window's graph. */
    int checkpoint_every;
    /* > 0: a memory budget in bytes for one window. A window that would not fit
     * (at the measured bytes per step) is checkpointed with the largest
     * spacing that fits; a budget too small for any spacing is an error that
     * says the minimum. Ignored when checkpoint_every is set. */
    size_t memory_budget;
    /* A stack's dropout (model.h) acts in this run, with masks drawn from
     * policy_seed (so a sequence's masks replay); off: evaluation. */
    bool dropout;
    bt_window *windows;      /* if not NULL, receives up to windows_cap windows */
    int windows_cap;
    /* Training only, may be NULL: called at every update after the window's
     * backward and before clipping and the optimizer step, so data
     * parallelism (dist.h) can sum the gradient block over processes there.
     * st is the window's status: a failed window still calls, so that every
     * process learns of the failure; digest is a checksum of what the update
     * is (its window and the factors xi on its steps), which processes that
     * take the same update share; *loss is the loss the window added to
     * loss_sum, which the hook may replace (by the mean over processes). The
     * hook returns the status the run goes on with (err says why when it is
     * not BT_OK). */
    bt_status (*on_update)(void *ctx, bt_params *p, bt_status st, uint64_t digest, double *loss,
                           char *err, size_t errlen);
    void *update_ctx;
} bt_unroll_opts;

/* The bytes of a memory budget given in MB (--memory-budget), for
 * bt_unroll_opts.memory_budget: 0 for none (mb == 0); BT_ERR_ARG for one that
 * is negative, not finite, beyond size_t, or below one byte (it would round
 * to 0, which means no budget at all). */
BT_API bt_status bt_unroll_budget_bytes(double mb, size_t *bytes, char *err, size_t errlen);

typedef struct bt_unroll_result {
    double loss_sum;      /* sum over steps of the step loss (mean over rows) */
    long loss_terms;      /* steps counted in loss_sum */
    int updates;
    int skipped;          /* updates skipped for a non-finite gradient norm */
    double grad_norm_sum, grad_norm_max; /* over the updates (before clipping) */
    size_t peak_arena;    /* largest window arena, bytes */
    int n_windows;        /* windows run (entries written: min(n_windows, windows_cap)) */
    /* Checkpointed windows: wall seconds of their forward passes without a
     * tape (with lanes, the slowest lane's), and the steps those ran: the work
     * a plain window does not do. (The rest of a checkpointed window does
     * what the plain one does, in stretches, and may run faster or slower
     * than it, as its graph stays in cache or not.) */
    double untaped_s;
    long untaped_steps;
} bt_unroll_result;

typedef struct bt_unroller bt_unroller;

BT_API bt_status bt_unroller_new(bt_model *m, int B, int max_T, bt_unroller **out, char *err,
                                 size_t errlen);
BT_API void bt_unroller_free(bt_unroller *u);

/* Runs seq from the state in `state` (n_states buffers [B, width], updated in
 * place to the final state). xi_used [T] (may be NULL) receives the factors
 * used; dh0 (per state, [B,width]) and dh_norms [T] are filled when asked. */
BT_API bt_status bt_unroll_run(bt_unroller *u, const bt_sequence *seq, bt_real *const *state,
                               const bt_unroll_opts *opts, double *xi_used, bt_real *const *dh0,
                               double *dh_norms, bt_unroll_result *res, char *err, size_t errlen);

/* Step s of seq on g from state (n_states tensors): the cell's step and the
 * step loss (mean over rows); next receives the new state. NULL on error. */
BT_API bt_tensor *bt_unroll_step(bt_graph *g, const bt_model *m, const bt_sequence *seq, long s,
                                 bt_tensor *const *state, bt_tensor **next);

/* The graph's arena (for memory measurements). */
BT_API bt_graph *bt_unroller_graph(bt_unroller *u);

/* Runs the rows of every batch split over n threads (1 <= n <= B; 1: one
 * graph, as created). Each thread runs the whole window on its rows with a
 * replica of the model (same weights, own gradients); the gradients are
 * summed in thread order before the update hook, clipping and the optimizer,
 * which run once. Results equal one thread's up to float rounding; a stack's
 * dropout is refused (its masks follow rows). With OpenMP the threads run at
 * once, else one after another. Each thread's matrix products should then
 * run on one BLAS thread (bt_blas_set_threads(1)). */
BT_API bt_status bt_unroller_set_threads(bt_unroller *u, int n, char *err, size_t errlen);
BT_API int bt_unroller_threads(const bt_unroller *u);

/* Rows first .. first + count - 1 of seq, as a view (D, Q: the widths of x
 * and y, when the sequence has them). Returns part. */
BT_API const bt_sequence *bt_sequence_rows(const bt_sequence *seq, int first, int count, int D,
                                           int Q, bt_sequence *part);

#ifdef __cplusplus
}
#endif
#endif
