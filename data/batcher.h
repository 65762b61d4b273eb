/* batcher.h: the minibatches a char-level language model trains on, cut from
 * a stream of token ids the way d2l's RNN chapter does.
 *
 * Dimension letters: B rows (batch), T steps. */
#ifndef BPTT_BATCHER_H
#define BPTT_BATCHER_H

#include <stdbool.h>
#include <stdint.h>

#include "bptt.h"

#ifdef __cplusplus
extern "C" {
#endif

/* sequential: d2l's seq_data_iter_sequential. Each epoch skips a random offset
 *   in [0, T] (inclusive, as d2l's randint), splits the rest into B rows and
 *   walks them T columns at a time, so row b of batch i+1 continues row b of
 *   batch i and the hidden state can be carried.
 * random: d2l's seq_data_iter_random. Offset in [0, T-1], the rest cut into
 *   subsequences of T, shuffled; a batch takes B of them; leftovers that do not
 *   fill a batch are dropped for the epoch. */
typedef enum { BT_BATCH_SEQUENTIAL, BT_BATCH_RANDOM } bt_batch_mode;
typedef struct bt_batcher bt_batcher;

/* Minibatches of B rows by T steps over ids[begin, end) (ids must outlive the
 * batcher). X[b*T + t] is an input, Y[b*T + t] the token after it. Refuses a
 * range so short that some offset would leave no minibatch. Starts with an
 * epoch at offset 0 in natural order. */
BT_API bt_status bt_batcher_new(const int32_t *ids, long begin, long end, int B, int T,
                                bt_batch_mode mode, bt_batcher **out, char *err, size_t errlen);
/* Starts an epoch: offset drawn from rng, and for random mode a shuffled order
 * of the subsequences. rng NULL: offset 0 in natural order (evaluation). */
BT_API void bt_batcher_epoch(bt_batcher *b, bt_rng *rng);
/* Starts an epoch at a given offset ([0, T] sequential, [0, T-1] random);
 * rng shuffles in random mode (NULL: natural order). For tests and evaluation. */
BT_API bt_status bt_batcher_epoch_at(bt_batcher *b, int offset, bt_rng *rng, char *err,
                                     size_t errlen);
BT_API int bt_batcher_offset(const bt_batcher *b);
/* Minibatches in the current epoch. */
BT_API int bt_batcher_count(const bt_batcher *b);
/* Fills X[B*T] and Y[B*T] (either may be NULL); false at the end of the epoch. */
BT_API bool bt_batcher_next(bt_batcher *b, int32_t *X, int32_t *Y);
BT_API void bt_batcher_free(bt_batcher *b);

#ifdef __cplusplus
}
#endif
#endif
