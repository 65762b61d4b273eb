/* generate.h: text from a trained token model. The prefix warms the state
 * up one token at a time (as d2l's predict_ch8), then each step feeds back
 * the token it chose: the most likely one (temperature 0) or a draw from
 * softmax(logits / temperature).
 *
 * Dimension letters: V vocabulary. */
#ifndef BPTT_GENERATE_H
#define BPTT_GENERATE_H

#include "model.h"
#include "vocab.h"

#ifdef __cplusplus
extern "C" {
#endif

/* out[length] receives the chosen ids. The model must take and predict
 * tokens; n_prefix >= 1; rng is needed only for temperature > 0. */
BT_API bt_status bt_generate(const bt_model *m, const int32_t *prefix, long n_prefix, int length,
                             double temperature, bt_rng *rng, int32_t *out, char *err, size_t errlen);

/* The prefix encoded with v (chars: an unknown character is an error naming
 * it; letters: it becomes <unk>), then `length` tokens; *out is the decoded
 * prefix plus continuation, bt_malloc'd. */
BT_API bt_status bt_generate_text(const bt_model *m, const bt_vocab *v, const char *prefix, int length,
                                  double temperature, uint64_t seed, char **out, char *err,
                                  size_t errlen);

/* ids as text (the tokens joined), bt_malloc'd; NULL when out of memory. */
BT_API char *bt_decode_ids(const bt_vocab *v, const int32_t *ids, long n);

#ifdef __cplusplus
}
#endif
#endif
