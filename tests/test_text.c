/* test_text.c: tokenizers, vocabulary, corpus errors and minibatches
 * (data/tokenize.c, vocab.c, corpus.c, batcher.c). Expected letters output
 * and vocab order were worked out with d2l's Python (read_time_machine, Vocab);
 * batches by hand.
 *
 * Dimension letters: B rows (batch), T steps.
 */
#include <criterion/criterion.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bptt.h"
#include "batcher.h"
#include "corpus.h"

static char err[BT_ERRMSG_LEN];

static bt_corpus *corpus_of(const char *text, bt_tokens_kind kind)
{
    bt_corpus *c = NULL;
    bt_status st = bt_corpus_from_string(text, strlen(text), kind, 0, &c, err, sizeof err);
    cr_assert_eq(st, BT_OK, "corpus of %s: %s", text, err);
    return c;
}

/* The corpus decoded back to text, in a static buffer. */
static const char *decode(const bt_corpus *c)
{
    static char buf[4096];
    size_t k = 0;
    for (long i = 0; i < c->n; i++) {
        const char *t = bt_vocab_token(c->vocab, c->ids[i]);
        cr_assert_not_null(t, "id %d at %ld has no token", c->ids[i], i);
        size_t l = strlen(t);
        cr_assert_lt(k + l, sizeof buf);
        memcpy(buf + k, t, l);
        k += l;
    }
    buf[k] = '\0';
    return buf;
}

static void assert_vocab(const bt_vocab *v, const char *const *expect, int n)
{
    for (int id = 0; id < n; id++)
        cr_assert_str_eq(bt_vocab_token(v, id), expect[id], "vocab id %d", id);
}

/* Writes bytes to a fresh temp file; returns its path (static buffer). */
static const char *temp_file(const void *bytes, size_t len)
{
    static char path[64];
    strcpy(path, "/tmp/bptt_test_text_XXXXXX");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0, "mkstemp");
    cr_assert_eq(write(fd, bytes, len), (ssize_t)len);
    close(fd);
    return path;
}

static bt_status load_bytes(const void *bytes, size_t len, bt_tokens_kind kind, long max_tokens,
                            bt_corpus **c)
{
    const char *path = temp_file(bytes, len);
    bt_status st = bt_corpus_load(path, kind, max_tokens, c, err, sizeof err);
    unlink(path);
    return st;
}

static void assert_err_has(const char *what)
{
    cr_assert_not_null(strstr(err, what), "error message \"%s\" should mention \"%s\"", err, what);
}

/* ---- tokens kind ---- */

Test(text, kind_parse)
{
    bt_tokens_kind k;
    cr_assert_eq(bt_tokens_kind_parse("chars", &k, err, sizeof err), BT_OK);
    cr_assert_eq(k, BT_TOKENS_CHARS);
    cr_assert_eq(bt_tokens_kind_parse("letters", &k, err, sizeof err), BT_OK);
    cr_assert_eq(k, BT_TOKENS_LETTERS);
    cr_assert_eq(bt_tokens_kind_parse("words", &k, err, sizeof err), BT_ERR_ARG);
    assert_err_has("'words'");
    cr_assert_str_eq(bt_tokens_kind_name(BT_TOKENS_LETTERS), "letters");
}

/* ---- chars ---- */

Test(text, chars_multibyte_and_order)
{
    /* a x3, é x2, € x2, 😀 x1, \n x2 (CRLF and CR both read as LF). */
    bt_corpus *c = corpus_of("a\xc3\xa9\xe2\x82\xac\r\na\xf0\x9f\x98\x80\xe2\x82\xac\ra\xc3\xa9",
                             BT_TOKENS_CHARS);
    cr_assert_eq(c->n, 10);
    cr_assert_str_eq(decode(c), "a\xc3\xa9\xe2\x82\xac\na\xf0\x9f\x98\x80\xe2\x82\xac\na\xc3\xa9");
    /* Count descending, then code point ascending: a(3); \n, é, € (2); 😀 (1). */
    const char *expect[] = {"a", "\n", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};
    cr_assert_eq(bt_vocab_size(c->vocab), 5);
    assert_vocab(c->vocab, expect, 5);
    cr_assert_eq(bt_vocab_unk(c->vocab), -1);
    cr_assert_eq(bt_vocab_id(c->vocab, "\xe2\x82\xac", 3), 3);
    cr_assert_eq(bt_vocab_id(c->vocab, "z", 1), -1, "chars has no <unk>");
    cr_assert_eq(bt_vocab_token(c->vocab, 5), NULL);
    cr_assert_eq(bt_vocab_token(c->vocab, -1), NULL);
    bt_corpus_free(c);
}

Test(text, chars_bom_dropped)
{
    bt_corpus *c = corpus_of("\xef\xbb\xbfhi", BT_TOKENS_CHARS);
    cr_assert_str_eq(decode(c), "hi");
    bt_corpus_free(c);
}

/* ---- letters (d2l) ---- */

Test(text, letters_like_d2l)
{
    bt_corpus *c = corpus_of("The Time-Machine, 1895!\r\nby H. G. Wells\n\n  42  \nEND.",
                             BT_TOKENS_LETTERS);
    /* Lines are stripped and joined with nothing between them, as d2l does. */
    cr_assert_str_eq(decode(c), "the time machineby h g wellsend");
    /* d2l's Vocab for this text, then the absent letters a..z. */
    const char *expect[] = {"<unk>", "e", " ", "h", "t", "i", "m", "n", "l", "a", "c", "b",
                            "y", "g", "w", "s", "d", "f", "j", "k", "o", "p", "q", "r",
                            "u", "v", "x", "z"};
    cr_assert_eq(bt_vocab_size(c->vocab), 28);
    assert_vocab(c->vocab, expect, 28);
    cr_assert_eq(bt_vocab_unk(c->vocab), 0);
    cr_assert_eq(bt_vocab_id(c->vocab, "7", 1), 0, "unknown is <unk> for letters");
    cr_assert_eq(bt_vocab_id(c->vocab, "e", 1), 1);
    bt_corpus_free(c);
}

Test(text, letters_ties_first_seen_and_absent_space)
{
    /* b and a tie at 2: d2l's stable sort keeps Counter's first-seen order. */
    bt_corpus *c = corpus_of("ba ab", BT_TOKENS_LETTERS);
    const char *expect[] = {"<unk>", "b", "a", " ", "c", "d"};
    assert_vocab(c->vocab, expect, 6);
    bt_corpus_free(c);
    /* No space in the text: it comes first among the absent tokens. */
    c = corpus_of("x\ry\r\nz\n", BT_TOKENS_LETTERS);
    cr_assert_str_eq(decode(c), "xyz");
    const char *expect2[] = {"<unk>", "x", "y", "z", " ", "a", "b"};
    assert_vocab(c->vocab, expect2, 7);
    bt_corpus_free(c);
}

Test(text, letters_non_ascii_and_punctuation_collapse)
{
    /* é, ï and U+2028 are not [A-Za-z]: each run becomes one space. */
    bt_corpus *c = corpus_of("caf\xc3\xa9 na\xc3\xafve\xe2\x80\xa8ok... 3.14 -- Go!", BT_TOKENS_LETTERS);
    cr_assert_str_eq(decode(c), "caf na ve ok go");
    bt_corpus_free(c);
}

/* ---- vocabulary JSON ---- */

Test(text, vocab_json_round_trip_chars)
{
    bt_corpus *c = corpus_of("\"q\" \\ tab\there\nnew \x01 \xc3\xa9\xf0\x9f\x98\x80/", BT_TOKENS_CHARS);
    char *json = bt_vocab_to_json(c->vocab);
    cr_assert_not_null(json);
    cr_assert_not_null(strstr(json, "\"\\\"\""), "quote escaped: %s", json);
    cr_assert_not_null(strstr(json, "\"\\u0001\""), "control escaped: %s", json);
    bt_vocab *v = NULL;
    cr_assert_eq(bt_vocab_from_json(json, BT_TOKENS_CHARS, &v, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_vocab_size(v), bt_vocab_size(c->vocab));
    for (int id = 0; id < bt_vocab_size(v); id++)
        cr_assert_str_eq(bt_vocab_token(v, id), bt_vocab_token(c->vocab, id), "id %d", id);
    bt_free(json);
    bt_vocab_free(v);
    bt_corpus_free(c);
}

Test(text, vocab_json_round_trip_letters)
{
    bt_corpus *c = corpus_of("hello world", BT_TOKENS_LETTERS);
    char *json = bt_vocab_to_json(c->vocab);
    cr_assert_eq(strncmp(json, "[\"<unk>\",\"l\",\"o\",", 17), 0, "%s", json);
    bt_vocab *v = NULL;
    cr_assert_eq(bt_vocab_from_json(json, BT_TOKENS_LETTERS, &v, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_vocab_size(v), 28);
    cr_assert_eq(bt_vocab_unk(v), 0);
    for (int id = 0; id < 28; id++)
        cr_assert_str_eq(bt_vocab_token(v, id), bt_vocab_token(c->vocab, id));
    bt_free(json);
    bt_vocab_free(v);
    bt_corpus_free(c);
}

Test(text, vocab_json_escapes_and_errors)
{
    bt_vocab *v = NULL;
    cr_assert_eq(bt_vocab_from_json(" [ \"\\ud83d\\ude00\" , \"\\u00e9\",\"\\/\" ] ", BT_TOKENS_CHARS,
                                    &v, err, sizeof err), BT_OK, "%s", err);
    cr_assert_str_eq(bt_vocab_token(v, 0), "\xf0\x9f\x98\x80");
    cr_assert_str_eq(bt_vocab_token(v, 1), "\xc3\xa9");
    cr_assert_str_eq(bt_vocab_token(v, 2), "/");
    bt_vocab_free(v);

    struct { const char *json; bt_tokens_kind kind; const char *msg; } bad[] = {
        {"{\"a\":1}", BT_TOKENS_CHARS, "expected '['"},
        {"[]", BT_TOKENS_CHARS, "empty"},
        {"[\"a\",\"a\"]", BT_TOKENS_CHARS, "twice"},
        {"[\"ab\"]", BT_TOKENS_CHARS, "not one character"},
        {"[\"<unk>\",\"a\"]", BT_TOKENS_CHARS, "<unk>"},
        {"[\"a\",\"b\"]", BT_TOKENS_LETTERS, "needs \"<unk>\""},
        {"[\"a\"", BT_TOKENS_CHARS, "not valid JSON: ']' expected"},
        {"[\"a]", BT_TOKENS_CHARS, "not valid JSON: premature end of input"},
        {"[\"\\ud83d\"]", BT_TOKENS_CHARS, "invalid Unicode"},
        {"[\"\"]", BT_TOKENS_CHARS, "not one character"},
        {"[\"a\",7]", BT_TOKENS_CHARS, "entry 1 is not a string"},
        {"[\"\xff\"]", BT_TOKENS_CHARS, "UTF-8"},
        {"[\"a\"] x", BT_TOKENS_CHARS, "after the array"},
        {"[\"averyveryverylongtoken\"]", BT_TOKENS_CHARS, "longer than one character"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = (bt_vocab *)1;
        err[0] = '\0';
        cr_assert_eq(bt_vocab_from_json(bad[i].json, bad[i].kind, &v, err, sizeof err),
                     BT_ERR_FORMAT, "%s should be refused", bad[i].json);
        cr_assert_null(v);
        assert_err_has(bad[i].msg);
    }
}

/* ---- encoding prompts ---- */

Test(text, encode_letters_unknown_is_unk)
{
    bt_corpus *c = corpus_of("time traveller", BT_TOKENS_LETTERS);
    int32_t *ids = NULL;
    long n = 0;
    cr_assert_eq(bt_vocab_encode(c->vocab, BT_TOKENS_LETTERS, "Ti 3\xc3\xa9", &ids, &n, err,
                                 sizeof err), BT_OK, "%s", err);
    cr_assert_eq(n, 5);
    cr_assert_eq(ids[0], bt_vocab_id(c->vocab, "t", 1), "T is lowercased");
    cr_assert_eq(ids[1], bt_vocab_id(c->vocab, "i", 1));
    cr_assert_eq(ids[2], bt_vocab_id(c->vocab, " ", 1));
    cr_assert_eq(ids[3], 0, "a digit is <unk>");
    cr_assert_eq(ids[4], 0, "é is <unk>");
    bt_free(ids);
    cr_assert_eq(bt_vocab_encode(c->vocab, BT_TOKENS_LETTERS, "", &ids, &n, err, sizeof err), BT_OK);
    cr_assert_eq(n, 0);
    cr_assert_null(ids);
    bt_corpus_free(c);
}

Test(text, encode_chars_unknown_is_error)
{
    bt_corpus *c = corpus_of("ab\nba", BT_TOKENS_CHARS);
    int32_t *ids = NULL;
    long n = 0;
    cr_assert_eq(bt_vocab_encode(c->vocab, BT_TOKENS_CHARS, "ab\r\nb", &ids, &n, err, sizeof err),
                 BT_OK, "%s", err);
    cr_assert_eq(n, 4);
    cr_assert_eq(ids[2], bt_vocab_id(c->vocab, "\n", 1), "CRLF reads as LF");
    bt_free(ids);
    cr_assert_eq(bt_vocab_encode(c->vocab, BT_TOKENS_CHARS, "ab\xc3\xa9", &ids, &n, err, sizeof err),
                 BT_ERR_NOT_FOUND);
    cr_assert_null(ids);
    assert_err_has("'\xc3\xa9' (U+00E9)");
    assert_err_has("byte 2");
    cr_assert_eq(bt_vocab_encode(c->vocab, BT_TOKENS_CHARS, "a\xc3", &ids, &n, err, sizeof err),
                 BT_ERR_FORMAT);
    assert_err_has("offset 1");
    bt_corpus_free(c);
}

/* ---- corpus errors (files) ---- */

Test(text, load_file_ok_and_locale_independent)
{
    setlocale(LC_ALL, "C"); /* a C locale must not change how UTF-8 reads */
    const char text[] = "na\xc3\xafve text\r\n";
    bt_corpus *c = NULL;
    cr_assert_eq(load_bytes(text, sizeof text - 1, BT_TOKENS_CHARS, 0, &c), BT_OK, "%s", err);
    cr_assert_str_eq(decode(c), "na\xc3\xafve text\n");
    bt_corpus_free(c);
}

Test(text, load_missing_file)
{
    bt_corpus *c = NULL;
    cr_assert_eq(bt_corpus_load("/nonexistent/bptt/x.txt", BT_TOKENS_CHARS, 0, &c, err, sizeof err),
                 BT_ERR_IO);
    cr_assert_null(c);
    assert_err_has("cannot open '/nonexistent/bptt/x.txt'");
}

Test(text, load_empty_file)
{
    bt_corpus *c = NULL;
    cr_assert_eq(load_bytes("", 0, BT_TOKENS_CHARS, 0, &c), BT_ERR_FORMAT);
    cr_assert_null(c);
    assert_err_has("/tmp/bptt_test_text_");
    assert_err_has("is empty");
}

Test(text, load_invalid_utf8_gives_offset)
{
    bt_corpus *c = NULL;
    const char latin1[] = "caf\xe9 au lait";
    cr_assert_eq(load_bytes(latin1, sizeof latin1 - 1, BT_TOKENS_LETTERS, 0, &c), BT_ERR_FORMAT);
    assert_err_has("not valid UTF-8");
    assert_err_has("0xE9 at byte offset 3");
    assert_err_has("/tmp/bptt_test_text_");
    /* Overlong encodings and surrogates are refused too, as Python refuses them. */
    cr_assert_eq(load_bytes("ab\xc0\xaf", 4, BT_TOKENS_CHARS, 0, &c), BT_ERR_FORMAT);
    assert_err_has("offset 2");
    cr_assert_eq(load_bytes("a\xed\xa0\x80", 4, BT_TOKENS_CHARS, 0, &c), BT_ERR_FORMAT);
    assert_err_has("offset 1");
    /* Truncated at the end. */
    cr_assert_eq(load_bytes("abc\xe2\x82", 5, BT_TOKENS_CHARS, 0, &c), BT_ERR_FORMAT);
    assert_err_has("offset 3");
}

Test(text, load_binary)
{
    bt_corpus *c = NULL;
    const char nul[] = "hello\0world";
    cr_assert_eq(load_bytes(nul, sizeof nul - 1, BT_TOKENS_CHARS, 0, &c), BT_ERR_FORMAT);
    assert_err_has("NUL byte at offset 5");
    assert_err_has("binary");
    const char ctrl[] = "\x01\x02\x03\x04\x05\x06\x07\x08 hi \x0e\x0f\x10";
    cr_assert_eq(load_bytes(ctrl, sizeof ctrl - 1, BT_TOKENS_CHARS, 0, &c), BT_ERR_FORMAT);
    assert_err_has("binary");
}

Test(text, load_too_short)
{
    bt_corpus *c = NULL;
    cr_assert_eq(load_bytes("a", 1, BT_TOKENS_CHARS, 0, &c), BT_ERR_FORMAT);
    assert_err_has("1 token after chars");
    assert_err_has("at least 2");
    /* Digits and punctuation only: nothing survives letters preprocessing. */
    cr_assert_eq(load_bytes("123 -- 456!\n", 12, BT_TOKENS_LETTERS, 0, &c), BT_ERR_FORMAT);
    assert_err_has("0 tokens after letters");
    cr_assert_null(c);
}

Test(text, max_tokens)
{
    bt_corpus *c = NULL;
    const char *text = "abcabcabcz";
    cr_assert_eq(bt_corpus_from_string(text, strlen(text), BT_TOKENS_CHARS, 4, &c, err, sizeof err),
                 BT_OK, "%s", err);
    cr_assert_eq(c->n, 4);
    cr_assert_str_eq(decode(c), "abca");
    /* The vocabulary still comes from the whole text (as d2l). */
    cr_assert_eq(bt_vocab_size(c->vocab), 4);
    cr_assert_neq(bt_vocab_id(c->vocab, "z", 1), -1);
    bt_corpus_free(c);
    cr_assert_eq(bt_corpus_from_string(text, strlen(text), BT_TOKENS_CHARS, 100, &c, err,
                                       sizeof err), BT_OK);
    cr_assert_eq(c->n, 10);
    bt_corpus_free(c);
    cr_assert_eq(bt_corpus_from_string(text, strlen(text), BT_TOKENS_CHARS, 1, &c, err, sizeof err),
                 BT_ERR_ARG);
    assert_err_has("at least 2");
}

/* ---- minibatches ---- */

static int32_t *iota(long n)
{
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    for (long i = 0; i < n; i++)
        ids[i] = (int32_t)i;
    return ids;
}

Test(text, sequential_hand_worked)
{
    /* d2l with ids 0..19, B=2, T=3, offset 1: num_tokens = (18 // 2) * 2 = 18,
     * Xs rows 1..9 and 10..18, Ys one later; 9 // 3 = 3 minibatches. */
    int32_t *ids = iota(20);
    bt_batcher *b = NULL;
    cr_assert_eq(bt_batcher_new(ids, 0, 20, 2, 3, BT_BATCH_SEQUENTIAL, &b, err, sizeof err), BT_OK,
                 "%s", err);
    cr_assert_eq(bt_batcher_epoch_at(b, 1, NULL, err, sizeof err), BT_OK);
    cr_assert_eq(bt_batcher_count(b), 3);
    const int32_t ex[3][6] = {{1, 2, 3, 10, 11, 12}, {4, 5, 6, 13, 14, 15}, {7, 8, 9, 16, 17, 18}};
    int32_t X[6], Y[6];
    for (int i = 0; i < 3; i++) {
        cr_assert(bt_batcher_next(b, X, Y), "minibatch %d", i);
        for (int k = 0; k < 6; k++) {
            cr_assert_eq(X[k], ex[i][k], "batch %d X[%d]", i, k);
            cr_assert_eq(Y[k], ex[i][k] + 1, "batch %d Y[%d]", i, k);
        }
    }
    cr_assert_not(bt_batcher_next(b, X, Y));
    cr_assert_not(bt_batcher_next(b, X, Y), "stays at the end");
    bt_batcher_free(b);
    free(ids);
}

Test(text, sequential_subrange_and_carry)
{
    /* ids[begin, end) with ids == position, so every X must be a position in
     * the range, rows contiguous, and row r of batch i+1 continues batch i. */
    enum { N = 400, BEGIN = 37, END = 311, B = 4, T = 7 };
    int32_t *ids = iota(N);
    bt_batcher *b = NULL;
    cr_assert_eq(bt_batcher_new(ids, BEGIN, END, B, T, BT_BATCH_SEQUENTIAL, &b, err, sizeof err),
                 BT_OK, "%s", err);
    bt_rng rng;
    bt_rng_seed(&rng, 42);
    bool seen_offset[T + 1] = {false};
    for (int epoch = 0; epoch < 200; epoch++) {
        bt_batcher_epoch(b, &rng);
        int off = bt_batcher_offset(b);
        cr_assert(off >= 0 && off <= T, "offset %d in [0, T]", off);
        seen_offset[off] = true;
        long row_len = (END - BEGIN - off - 1) / B;
        cr_assert_eq(bt_batcher_count(b), row_len / T);
        int32_t X[B * T], Y[B * T], prev[B * T];
        int got = 0;
        while (bt_batcher_next(b, X, Y)) {
            for (int r = 0; r < B; r++) {
                cr_assert_eq(X[r * T], BEGIN + off + r * row_len + (long)got * T);
                if (got)
                    cr_assert_eq(X[r * T], prev[r * T + T - 1] + 1, "row %d carries on", r);
                for (int t = 0; t < T; t++) {
                    cr_assert_eq(Y[r * T + t], X[r * T + t] + 1);
                    if (t)
                        cr_assert_eq(X[r * T + t], X[r * T + t - 1] + 1);
                    cr_assert_lt(Y[r * T + t], END);
                }
            }
            memcpy(prev, X, sizeof X);
            got++;
        }
        cr_assert_eq(got, bt_batcher_count(b), "count matches what next() yields");
    }
    for (int o = 0; o <= T; o++)
        cr_assert(seen_offset[o], "offset %d drawn in 200 epochs", o);
    bt_batcher_free(b);
    free(ids);
}

Test(text, random_covers_each_subsequence_once)
{
    /* 49 tokens, T=4, offset 0: (49 - 1) // 4 = 12 subsequences, B=3: all 12
     * are used, each once. */
    int32_t *ids = iota(49);
    bt_batcher *b = NULL;
    cr_assert_eq(bt_batcher_new(ids, 0, 49, 3, 4, BT_BATCH_RANDOM, &b, err, sizeof err), BT_OK,
                 "%s", err);
    bt_rng rng;
    bt_rng_seed(&rng, 7);
    bool natural = true;
    for (int epoch = 0; epoch < 20; epoch++) {
        cr_assert_eq(bt_batcher_epoch_at(b, 0, &rng, err, sizeof err), BT_OK);
        cr_assert_eq(bt_batcher_count(b), 4);
        int used[12] = {0}, got = 0, k = 0;
        int32_t X[12], Y[12];
        while (bt_batcher_next(b, X, Y)) {
            for (int r = 0; r < 3; r++) {
                cr_assert_eq(X[r * 4] % 4, 0);
                used[X[r * 4] / 4]++;
                natural = natural && X[r * 4] == 4 * k++;
                for (int t = 0; t < 4; t++) {
                    cr_assert_eq(X[r * 4 + t], X[r * 4] + t);
                    cr_assert_eq(Y[r * 4 + t], X[r * 4 + t] + 1);
                }
            }
            got++;
        }
        cr_assert_eq(got, 4);
        for (int s = 0; s < 12; s++)
            cr_assert_eq(used[s], 1, "subsequence %d used %d times in epoch %d", s, used[s], epoch);
    }
    cr_assert_not(natural, "20 shuffled epochs should not all be in natural order");
    cr_assert_eq(bt_batcher_epoch_at(b, 4, &rng, err, sizeof err), BT_ERR_ARG, "random offset < T");
    bt_batcher_free(b);
    free(ids);
}

Test(text, random_epochs_distinct_and_counted)
{
    enum { N = 203, B = 5, T = 6 };
    int32_t *ids = iota(N);
    bt_batcher *b = NULL;
    cr_assert_eq(bt_batcher_new(ids, 0, N, B, T, BT_BATCH_RANDOM, &b, err, sizeof err), BT_OK);
    bt_rng rng;
    bt_rng_seed(&rng, 3);
    for (int epoch = 0; epoch < 100; epoch++) {
        bt_batcher_epoch(b, &rng);
        int off = bt_batcher_offset(b);
        cr_assert(off >= 0 && off < T);
        int nsub = (N - off - 1) / T;
        cr_assert_eq(bt_batcher_count(b), nsub / B);
        bool used[N] = {false};
        int got = 0;
        int32_t X[B * T], Y[B * T];
        while (bt_batcher_next(b, X, Y)) {
            for (int r = 0; r < B; r++) {
                int s = X[r * T] - off;
                cr_assert_eq(s % T, 0);
                cr_assert_lt(s / T, nsub);
                cr_assert_not(used[s], "subsequence at %d twice in an epoch", s);
                used[s] = true;
                cr_assert_lt(Y[r * T + T - 1], N);
            }
            got++;
        }
        cr_assert_eq(got, bt_batcher_count(b));
    }
    bt_batcher_free(b);
    free(ids);
}

Test(text, batcher_null_rng_is_offset_zero)
{
    int32_t *ids = iota(30);
    bt_batcher *b = NULL;
    cr_assert_eq(bt_batcher_new(ids, 0, 30, 2, 3, BT_BATCH_SEQUENTIAL, &b, err, sizeof err), BT_OK);
    cr_assert_eq(bt_batcher_offset(b), 0, "a new batcher starts at offset 0");
    cr_assert_eq(bt_batcher_count(b), (29 / 2) / 3);
    bt_batcher_epoch(b, NULL);
    cr_assert_eq(bt_batcher_offset(b), 0);
    int32_t X[6];
    cr_assert(bt_batcher_next(b, X, NULL), "Y may be NULL");
    cr_assert_eq(X[3], 14);
    cr_assert_eq(bt_batcher_epoch_at(b, 4, NULL, err, sizeof err), BT_ERR_ARG);
    assert_err_has("outside [0, 3]");
    bt_batcher_free(b);
    free(ids);
}

Test(text, batcher_too_few_tokens)
{
    int32_t *ids = iota(200);
    bt_batcher *b = NULL;
    cr_assert_eq(bt_batcher_new(ids, 0, 120, 32, 35, BT_BATCH_SEQUENTIAL, &b, err, sizeof err),
                 BT_ERR_SHAPE);
    cr_assert_null(b);
    assert_err_has("the text has 120 tokens: too few for batch 32 x 35 steps");
    assert_err_has("--batch/--steps");
    cr_assert_eq(bt_batcher_new(ids, 0, 10, 0, 3, BT_BATCH_SEQUENTIAL, &b, err, sizeof err),
                 BT_ERR_ARG);
    cr_assert_eq(bt_batcher_new(ids, 0, 10, 2, 0, BT_BATCH_RANDOM, &b, err, sizeof err), BT_ERR_ARG);
    cr_assert_eq(bt_batcher_new(ids, 5, 4, 2, 3, BT_BATCH_RANDOM, &b, err, sizeof err), BT_ERR_ARG);

    /* The smallest accepted range yields a minibatch at every offset; one
     * token fewer is refused. Sequential needs (B+1)T+1, random (B+1)T. */
    for (int mode = 0; mode < 2; mode++) {
        int B = 3, T = 4;
        long need = (long)(B + 1) * T + (mode == BT_BATCH_SEQUENTIAL);
        cr_assert_eq(bt_batcher_new(ids, 0, need - 1, B, T, mode, &b, err, sizeof err),
                     BT_ERR_SHAPE, "mode %d with %ld tokens", mode, need - 1);
        cr_assert_eq(bt_batcher_new(ids, 0, need, B, T, mode, &b, err, sizeof err), BT_OK,
                     "%s", err);
        int max = mode == BT_BATCH_SEQUENTIAL ? T : T - 1;
        for (int off = 0; off <= max; off++) {
            cr_assert_eq(bt_batcher_epoch_at(b, off, NULL, err, sizeof err), BT_OK);
            cr_assert_geq(bt_batcher_count(b), 1, "mode %d offset %d", mode, off);
        }
        bt_batcher_free(b);
    }
    free(ids);
}

Test(text, corpus_to_batches)
{
    /* End to end: the first minibatch decodes back to the text. */
    bt_corpus *c = corpus_of("the quick brown fox jumps over the lazy dog", BT_TOKENS_LETTERS);
    bt_batcher *b = NULL;
    cr_assert_eq(bt_batcher_new(c->ids, 0, c->n, 2, 5, BT_BATCH_SEQUENTIAL, &b, err, sizeof err),
                 BT_OK, "%s", err);
    int32_t X[10], Y[10];
    cr_assert(bt_batcher_next(b, X, Y));
    char row[6] = {0};
    for (int t = 0; t < 5; t++)
        row[t] = bt_vocab_token(c->vocab, X[t])[0];
    cr_assert_str_eq(row, "the q");
    for (int t = 0; t < 5; t++)
        row[t] = bt_vocab_token(c->vocab, Y[t])[0];
    cr_assert_str_eq(row, "he qu");
    bt_batcher_free(b);
    bt_corpus_free(c);
}
