/* corpus.h: a UTF-8 text file as a stream of token ids and its vocabulary
 * (d2l's load_corpus_time_machine), with clear errors for what is not text.
 *
 * Dimension letters: V vocabulary. */
#ifndef BPTT_CORPUS_H
#define BPTT_CORPUS_H

#include "vocab.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bt_corpus {
    bt_tokens_kind kind;
    bt_vocab *vocab;
    int32_t *ids; /* [n] */
    long n;
} bt_corpus;

/* Reads a UTF-8 text file (bt_corpus_read_file) without regard to the locale. The vocabulary comes
 * from the whole text; max_tokens > 0 then keeps the first max_tokens ids (as
 * d2l's load_corpus_time_machine). Errors name the file: cannot open or read,
 * empty, NUL bytes or mostly control bytes (binary), invalid UTF-8 (with the
 * byte offset), fewer than 2 tokens. */
BT_API bt_status bt_corpus_load(const char *path, bt_tokens_kind kind, long max_tokens,
                                bt_corpus **out, char *err, size_t errlen);
/* The whole of a regular file as text (NUL-terminated, bt_malloc'd, *len
 * bytes without the NUL), read without regard to the locale and bounded by
 * the size it has when opened. A folder, device, FIFO or socket is refused
 * (BT_ERR_IO): /dev/zero would never end, a FIFO might never start. */
BT_API bt_status bt_corpus_read_file(const char *path, char **text, size_t *len, char *err,
                                     size_t errlen);
BT_API bt_status bt_corpus_from_string(const char *text, size_t len, bt_tokens_kind kind,
                                       long max_tokens, bt_corpus **out, char *err,
                                       size_t errlen);
BT_API void bt_corpus_free(bt_corpus *c);

#ifdef __cplusplus
}
#endif
#endif
