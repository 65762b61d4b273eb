/* online.h: runs a recurrent model over a sequence with an online gradient
 * estimator (estimator.h) instead of backpropagation through time. Each step
 * is recorded on its own graph, from the state as leaves that require grad,
 * with its loss (bt_unroll_step); the estimator reads the recording (forward
 * sweeps, reverse sweeps from the step's outputs) and adds its estimate of
 * w_t dl_t/dtheta, w_t the step's weight in L (loss_weight.h). Nothing of a
 * step outlives it but the estimator's buffers, so memory does not grow with
 * the sequence, and a steady-state step allocates nothing on the heap.
 *
 * Two modes: accumulate (the parameters fixed, the estimates summed over the
 * sequence: `bptt grad --estimator`), or training (the optimizer steps every
 * N steps on the estimates since its last step, clipped like the unroller's).
 *
 * Dimension letters: B rows, T steps, S state numbers, P parameters. */
#ifndef BPTT_ONLINE_H
#define BPTT_ONLINE_H

#include "estimator.h"
#include "unroll.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bt_online_opts {
    bt_estimator *estimator;  /* bound to the same model and batch as the runner */
    /* Start the estimator's state afresh (bt_estimator_begin with seed): the
     * sequence starts from states that do not depend on the parameters (a
     * zero or given h0). false carries the estimator's state on from the
     * previous run, for a stream cut into sequences with the state carried. */
    bool begin;
    uint64_t seed;
    /* accumulate: parameters fixed; on return their gradients hold the sum of
     * the estimates, the estimate of dL/dtheta (set, not added to). */
    bool accumulate;
    bt_optimizer *optimizer;  /* training: required, bound to the model's parameters */
    double clip;              /* global-norm theta before each update; <= 0 disables */
    int update_every;         /* training: an update after every N steps (and after the
                                 last step); 0 means once, at the end */
} bt_online_opts;

typedef struct bt_online bt_online;

BT_API bt_status bt_online_new(bt_model *m, int B, bt_online **out, char *err, size_t errlen);
BT_API void bt_online_free(bt_online *o);

/* Runs seq from `state` (n_states buffers [B, width], advanced in place to the
 * final state). res as the unroller's (updates, skipped, grad norms, losses,
 * peak arena; no windows). dstate0 (per state, [B, width], may be NULL): adds
 * the estimate of dL/ds_{-1} when the estimator computes it
 * (bt_estimator_has_dstate0, asked for when it was made) and opts->begin. */
BT_API bt_status bt_online_run(bt_online *o, const bt_sequence *seq, bt_real *const *state,
                               const bt_online_opts *opts, bt_real *const *dstate0,
                               bt_unroll_result *res, char *err, size_t errlen);

/* The graph that records each step (for memory measurements). */
BT_API bt_graph *bt_online_graph(bt_online *o);

#ifdef __cplusplus
}
#endif
#endif
