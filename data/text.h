/* text.h: a text file as a stream of token ids, its vocabulary, and the
 * minibatches a char-level language model trains on (the d2l.ai RNN chapter).
 *
 * Dimension letters: B rows (batch), T steps, V vocabulary.
 */
#ifndef BPTT_TEXT_H
#define BPTT_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bptt.h"

#ifdef __cplusplus
extern "C" {
#endif

/* chars: every distinct Unicode code point is a token (no <unk>); CRLF and a
 *   lone CR read as LF, a leading UTF-8 BOM is dropped.
 * letters: d2l's read_time_machine + tokenize(, 'char'): per line, runs of
 *   anything but A-Z/a-z become one space, the line is stripped and lowercased,
 *   and lines are joined with nothing between them (as d2l does). */
typedef enum { BT_TOKENS_CHARS, BT_TOKENS_LETTERS } bt_tokens_kind;

/* "chars" | "letters". */
bt_status bt_tokens_kind_parse(const char *s, bt_tokens_kind *out, char *err, size_t errlen);
const char *bt_tokens_kind_name(bt_tokens_kind k);

/* ---- vocabulary ------------------------------------------------------------ */

/* id -> token (the UTF-8 of one code point, or "<unk>"), token -> id.
 * chars: ids by descending frequency, ties by ascending code point.
 * letters: always 28 tokens. "<unk>" is 0, then the tokens of the text by
 *   descending frequency, ties by first occurrence (d2l's stable sort over
 *   Counter insertion order), then any of ' ', a..z the text lacks, in that
 *   order (d2l would leave them out; a fixed V keeps models comparable). */
typedef struct bt_vocab bt_vocab;

int bt_vocab_size(const bt_vocab *v);
/* NULL when id is out of range. */
const char *bt_vocab_token(const bt_vocab *v, int id);
/* The id of one token given by its bytes; unknown: the <unk> id (letters) or -1. */
int bt_vocab_id(const bt_vocab *v, const char *utf8_char, size_t len);
/* -1 for a chars vocabulary. */
int bt_vocab_unk(const bt_vocab *v);
bt_tokens_kind bt_vocab_kind(const bt_vocab *v);

/* A JSON array of the tokens in id order, e.g. ["<unk>"," ","e"] (for the
 * safetensors __metadata__), bt_malloc'd; NULL when out of memory. */
char *bt_vocab_to_json(const bt_vocab *v);
/* Every token must be one code point, distinct; letters needs "<unk>" and
 * chars refuses it. */
bt_status bt_vocab_from_json(const char *json, bt_tokens_kind kind, bt_vocab **out,
                             char *err, size_t errlen);
void bt_vocab_free(bt_vocab *v);

/* Encodes a prompt for generation into *ids (bt_malloc'd, NULL when n is 0).
 * letters: A-Z are lowercased, then every code point the vocabulary lacks is
 *   <unk> (d2l's predict_ch8 looks the prompt up character by character).
 * chars: CRLF/CR read as LF; a character the vocabulary lacks is an error
 *   (BT_ERR_NOT_FOUND) naming it. */
bt_status bt_vocab_encode(const bt_vocab *v, bt_tokens_kind kind, const char *text,
                          int32_t **ids, long *n, char *err, size_t errlen);

/* ---- corpus ------------------------------------------------------------------ */

typedef struct bt_corpus {
    bt_tokens_kind kind;
    bt_vocab *vocab;
    int32_t *ids; /* [n] */
    long n;
} bt_corpus;

/* Reads a UTF-8 text file without regard to the locale. The vocabulary comes
 * from the whole text; max_tokens > 0 then keeps the first max_tokens ids (as
 * d2l's load_corpus_time_machine). Errors name the file: cannot open or read,
 * empty, NUL bytes or mostly control bytes (binary), invalid UTF-8 (with the
 * byte offset), fewer than 2 tokens. */
bt_status bt_corpus_load(const char *path, bt_tokens_kind kind, long max_tokens,
                         bt_corpus **out, char *err, size_t errlen);
bt_status bt_corpus_from_string(const char *text, size_t len, bt_tokens_kind kind,
                                long max_tokens, bt_corpus **out, char *err, size_t errlen);
void bt_corpus_free(bt_corpus *c);

/* ---- minibatches -------------------------------------------------------------- */

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
bt_status bt_batcher_new(const int32_t *ids, long begin, long end, int B, int T,
                         bt_batch_mode mode, bt_batcher **out, char *err, size_t errlen);
/* Starts an epoch: offset drawn from rng, and for random mode a shuffled order
 * of the subsequences. rng NULL: offset 0 in natural order (evaluation). */
void bt_batcher_epoch(bt_batcher *b, bt_rng *rng);
/* Starts an epoch at a given offset ([0, T] sequential, [0, T-1] random);
 * rng shuffles in random mode (NULL: natural order). For tests and evaluation. */
bt_status bt_batcher_epoch_at(bt_batcher *b, int offset, bt_rng *rng, char *err,
                              size_t errlen);
int bt_batcher_offset(const bt_batcher *b);
/* Minibatches in the current epoch. */
int bt_batcher_count(const bt_batcher *b);
/* Fills X[B*T] and Y[B*T] (either may be NULL); false at the end of the epoch. */
bool bt_batcher_next(bt_batcher *b, int32_t *X, int32_t *Y);
void bt_batcher_free(bt_batcher *b);

#ifdef __cplusplus
}
#endif
#endif
