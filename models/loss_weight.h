/* loss_weight.h: how much each step's loss weighs in a sequence's loss L, the
 * one rule every way of computing L's gradient follows (unroll.h's windows,
 * online.h's estimators): step s weighs loss_weight[s] / sum_s loss_weight[s],
 * or 1/T without weights, so that L is the (weighted) mean of the step losses
 * and the gradients of a sequence's updates add up to dL/dtheta.
 *
 * Dimension letters: T steps. */
#ifndef BPTT_LOSS_WEIGHT_H
#define BPTT_LOSS_WEIGHT_H

#include "source.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Step s's own weight: loss_weight[s], or 1 when the sequence has none. */
BT_API double bt_loss_weight_of(const bt_sequence *seq, long s);
/* 1 / (sum of the step weights over the T steps), or 0 when they sum to 0:
 * step s's loss then weighs bt_loss_weight_of(seq, s) * bt_loss_weight_scale(seq). */
BT_API double bt_loss_weight_scale(const bt_sequence *seq);

#ifdef __cplusplus
}
#endif
#endif
