/* vocab.h: a vocabulary, id -> token and token -> id, built from a tokenized
 * text (tokenize.h) or read back from its JSON form in a checkpoint.
 *
 * Dimension letters: V vocabulary. */
#ifndef BPTT_VOCAB_H
#define BPTT_VOCAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenize.h"

#ifdef __cplusplus
extern "C" {
#endif

/* id -> token (the UTF-8 of one code point, or "<unk>"), token -> id.
 * chars: ids by descending frequency, ties by ascending code point.
 * letters: always 28 tokens. "<unk>" is 0, then the tokens of the text by
 *   descending frequency, ties by first occurrence (d2l's stable sort over
 *   Counter insertion order), then any of ' ', a..z the text lacks, in that
 *   order (d2l would leave them out; a fixed V keeps models comparable). */
typedef struct bt_vocab bt_vocab;

/* The kind's vocabulary of a text's code points (from bt_tokenize); NULL when
 * out of memory. */
BT_API bt_vocab *bt_vocab_build(bt_tokens_kind kind, const uint32_t *cps, long n);
BT_API void bt_vocab_free(bt_vocab *v);

BT_API int bt_vocab_size(const bt_vocab *v);
/* NULL when id is out of range. */
BT_API const char *bt_vocab_token(const bt_vocab *v, int id);
/* The id of one token given by its bytes; unknown: the <unk> id (letters) or -1. */
BT_API int bt_vocab_id(const bt_vocab *v, const char *utf8_char, size_t len);
/* The id of one code point; -1 when absent, whatever the kind. */
BT_API int bt_vocab_id_of(const bt_vocab *v, uint32_t cp);
/* -1 for a chars vocabulary. */
BT_API int bt_vocab_unk(const bt_vocab *v);
BT_API bt_tokens_kind bt_vocab_kind(const bt_vocab *v);
/* Same kind and the same tokens in the same order. */
BT_API bool bt_vocab_equal(const bt_vocab *a, const bt_vocab *b);

/* A JSON array of the tokens in id order, e.g. ["<unk>"," ","e"] (for the
 * safetensors __metadata__), bt_malloc'd; NULL when out of memory. */
BT_API char *bt_vocab_to_json(const bt_vocab *v);
/* Every token must be one code point, distinct; letters needs "<unk>" and
 * chars refuses it. */
BT_API bt_status bt_vocab_from_json(const char *json, bt_tokens_kind kind, bt_vocab **out,
                                    char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
