/* text_source.h: a text corpus as a bt_source. Training minibatches come from
 * the start of the text, validation from its end (--val-fraction), so the
 * held-out part is text the model never saw.
 *
 * Dimension letters: B rows, T steps, V vocabulary. */
#ifndef BPTT_TEXT_SOURCE_H
#define BPTT_TEXT_SOURCE_H

#include "batcher.h"
#include "corpus.h"
#include "source.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Sequential mode carries the state between minibatches (carry_state) and is
 * d2l's seq_data_iter_sequential; random mode is seq_data_iter_random, with a
 * fresh state per minibatch. Each epoch draws its offset (and order) from the
 * run's RNG. val_fraction in [0, 0.5] keeps the last fraction of the tokens for
 * validation: those are read as min(B, n/T) rows walked T steps at a time from
 * offset 0, the state carried over the whole held-out text, so validation
 * perplexity is that of a reader going through it once. The corpus must
 * outlive the source. Errors (text too short for B x T, validation part too
 * short for one step) say which option to change. */
BT_API bt_status bt_text_source_new(const bt_corpus *corpus, int B, int T, bt_batch_mode mode,
                                    double val_fraction, bt_source *out, char *err, size_t errlen);

/* Tokens of the training and validation parts. */
BT_API long bt_text_source_train_tokens(const bt_source *s);
BT_API long bt_text_source_val_tokens(const bt_source *s);

#ifdef __cplusplus
}
#endif
#endif
