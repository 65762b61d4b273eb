/* source.h: where training sequences come from. A sequence is B rows by T
 * steps of inputs and targets; a text corpus (text_source.h) and the generated
 * long-range tasks (tasks.h) both present themselves as a bt_source of them,
 * so `train`, `compare` and `analyze` treat them alike.
 *
 * Dimension letters: B rows, T steps, V vocabulary, D input size, Q output size. */
#ifndef BPTT_SOURCE_H
#define BPTT_SOURCE_H

#include <stdbool.h>
#include <stdint.h>

#include "bptt.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bt_vocab bt_vocab; /* vocab.h */

/* One sequence of B rows by T steps. Inputs are token ids [B*T] (row b,
 * step t at b*T + t) or real x [B*T*D]; targets are token ids [B*T] (softmax
 * cross-entropy) or real y [B*T*Q] (0.5 ||o - y||^2). loss_weight [T], if
 * given, weighs each step's loss (0: the step has no target, as in the adding
 * problem); a window's mean is then over the weight it carries. */
typedef struct bt_sequence {
    int B, T;
    const int32_t *ids, *targets;
    const bt_real *x, *y;
    const bt_real *loss_weight;
} bt_sequence;

typedef struct bt_source {
    const char *name;    /* "text:FILE", "adding:50", ... for logs and checkpoints */
    bool tokens_in;      /* inputs are token ids (else real x [B,T,D]) */
    bool tokens_out;     /* targets are token ids: cross-entropy, perplexity (else real y, MSE) */
    int input_size;      /* V or D */
    int output_size;     /* V or Q */
    int B, T;
    bool carry_state;    /* sequential partitioning: the state carries over between batches */
    /* Validation minibatch i + 1 continues the rows of minibatch i (a text read
     * once from start to end), so its state carries over; otherwise every
     * validation minibatch is independent and starts from a zero state. */
    bool val_carry_state;
    const bt_vocab *vocab; /* token sources with text, else NULL */

    /* Starts an epoch (random offset / fresh draws from rng). */
    void (*epoch)(void *ctx, bt_rng *rng);
    /* Minibatches in the current epoch. */
    int (*count)(void *ctx);
    /* Next training minibatch (pointers into the source's buffers, valid until
     * the next call); false at the end of the epoch. */
    bool (*next)(void *ctx, bt_sequence *seq);
    /* Validation minibatch i (0, 1, ...); false when there are no more (or none). */
    bool (*validation)(void *ctx, int i, bt_sequence *seq);
    void (*destroy)(void *ctx);
    void *ctx;
} bt_source;

static inline void bt_source_free(bt_source *s)
{
    if (s && s->destroy)
        s->destroy(s->ctx);
}

#ifdef __cplusplus
}
#endif
#endif
