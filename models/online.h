/* online.h: training on an endless stream, one optimizer step per truncation
 * segment, where each step follows the gradient of the SUM of the segment's
 * step losses (so the learning rate is per step of the stream).
 *
 * Why not the mean that bt_unroll_run's training mode takes over its window:
 * random truncation (Tallec & Ollivier) is unbiased only when every step's
 * loss counts the same. Dividing by the segment length gives the steps of long
 * segments, the only ones that see long lags, less weight, and on influence
 * balancing that bias alone flips the sign of the update (docs/analysis.md).
 * Under a sum, fixed:TAU and full differ from the mean only by a constant
 * factor folded into the learning rate.
 *
 * Dimension letters: B rows, T steps, H state width, D input, Q output. */
#ifndef BPTT_ONLINE_H
#define BPTT_ONLINE_H

#include "source.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bt_online bt_online;

typedef struct bt_online_opts {
    const bt_policy_def *policy; /* full, fixed or random: no TBPTT reach */
    void *policy_state;
    bt_optimizer *optimizer;
    double clip;                 /* global-norm theta on each update; <= 0 disables */
    /* Called after every update with the stream step (1-based count of steps
     * seen) and the mean step loss of the segment. */
    void (*on_update)(void *ctx, long step, double segment_loss, const bt_model *m);
    void *ctx;
} bt_online_opts;

typedef struct bt_online_result {
    long steps;          /* stream steps seen so far (all runs) */
    int updates;         /* updates in this run */
    double loss_sum;     /* sum of weighted step losses in this run */
    double weight_sum;   /* sum of their weights */
} bt_online_result;

/* An online trainer for m over sequences of B rows and up to max_T steps;
 * the state starts at zero and carries over between bt_online_run calls. */
bt_status bt_online_new(bt_model *m, int B, int max_T, bt_online **out, char *err, size_t errlen);
void bt_online_free(bt_online *o);
void bt_online_reset_state(bt_online *o);

/* One sequence of the stream: the policy decides its cuts (seeded with seed),
 * each segment is unrolled from the carried state, its gradient scaled to the
 * sum of its losses, and the optimizer steps. */
bt_status bt_online_run(bt_online *o, const bt_sequence *seq, uint64_t seed,
                        const bt_online_opts *opts, bt_online_result *res, char *err,
                        size_t errlen);

/* A whole run over a source: policy and optimizer from their specs ("fixed:1",
 * "sgd:lr=5e-5"), sequences from src (new epochs as needed, state carried when
 * src->carry_state, else reset per sequence) until `steps` stream steps;
 * on_update as above. *mean_loss (may be NULL) gets the mean step loss of the
 * last sequence. */
bt_status bt_online_train(const bt_registry *reg, bt_model *m, bt_source *src, const char *policy,
                          const char *optimizer, long steps, uint64_t seed,
                          void (*on_update)(void *ctx, long step, double segment_loss,
                                            const bt_model *m),
                          void *ctx, double *mean_loss, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
