/* tokenize.h: how a text becomes tokens. Two rules: chars (every Unicode code
 * point) and letters (d2l's a-z and space), for a whole corpus (code points,
 * from which the vocabulary is built) and for a generation prompt (ids in a
 * given vocabulary). */
#ifndef BPTT_TOKENIZE_H
#define BPTT_TOKENIZE_H

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
BT_API bt_status bt_tokens_kind_parse(const char *s, bt_tokens_kind *out, char *err, size_t errlen);
BT_API const char *bt_tokens_kind_name(bt_tokens_kind k);

/* The code points of s[0..len) (valid UTF-8, no BOM) under the kind's rule,
 * into out; at most one per input byte. Returns how many. */
BT_API long bt_tokenize(bt_tokens_kind kind, const unsigned char *s, size_t len, uint32_t *out);

typedef struct bt_vocab bt_vocab; /* vocab.h */

/* Encodes a prompt for generation into *ids (bt_malloc'd, NULL when n is 0).
 * letters: A-Z are lowercased, then every code point the vocabulary lacks is
 *   <unk> (d2l's predict_ch8 looks the prompt up character by character).
 * chars: CRLF/CR read as LF; a character the vocabulary lacks is an error
 *   (BT_ERR_NOT_FOUND) naming it. */
BT_API bt_status bt_vocab_encode(const bt_vocab *v, bt_tokens_kind kind, const char *text,
                                 int32_t **ids, long *n, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
