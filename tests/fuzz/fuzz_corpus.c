/* fuzz_corpus.c: a text through the corpus (both tokenizers), the text
 * source and its batcher (sequential and random), every minibatch read.
 * Input: 4 bytes of settings (tokens and sampling; B; T; validation fraction
 * and max_tokens), then the text.
 *
 * Invariants beyond "no crash": a refusal carries a message; the ids decode
 * to the text as the tokenizer's rule gives it (worked out here from the
 * rule, independently: chars keeps every code point with CRLF and CR read as
 * LF and a leading BOM dropped; letters is d2l's per-line
 * re.sub('[^A-Za-z]+', ' ', line).strip().lower() with the lines joined),
 * cut to max_tokens; the vocabulary is ordered as documented; every
 * minibatch has B x T ids in the vocabulary, each target is the token after
 * its input, each row is a stretch of the training text, and sequential rows
 * continue across minibatches; the count of minibatches is what the source
 * announced; training and validation tokens fit in the text. */
#include "fuzz.h"
#include "generate.h"
#include "text_source.h"

/* The text under the kind's rule, as UTF-8 (malloc'd), worked out from the
 * rule's definition rather than with the library's tokenizer. */
static char *expected_text(const unsigned char *s, size_t len, bt_tokens_kind kind)
{
    char *out = malloc(len + 1), *o = out;
    FUZZ_CHECK(out, "out of memory");
    if (len >= 3 && s[0] == 0xEF && s[1] == 0xBB && s[2] == 0xBF)
        s += 3, len -= 3;
    if (kind == BT_TOKENS_CHARS) {
        for (size_t i = 0; i < len; i++) {
            if (s[i] == '\r') {
                *o++ = '\n';
                if (i + 1 < len && s[i + 1] == '\n')
                    i++;
            } else
                *o++ = (char)s[i];
        }
    } else {
        /* Line by line: words of ASCII letters, lowercased, one space between. */
        size_t i = 0;
        while (i < len) {
            bool word_done = false, any = false;
            for (; i < len && s[i] != '\n' && s[i] != '\r'; i++) {
                unsigned char c = s[i];
                if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')) {
                    if (word_done && any)
                        *o++ = ' ';
                    *o++ = (char)(c | 0x20);
                    any = true;
                    word_done = false;
                } else
                    word_done = true;
            }
            if (i < len && s[i] == '\r' && i + 1 < len && s[i + 1] == '\n')
                i++;
            i++;
        }
    }
    *o = '\0';
    return out;
}

/* The first n code points of the valid UTF-8 s, as a byte length. */
static size_t prefix_bytes(const char *s, long n)
{
    size_t at = 0;
    for (long k = 0; k < n && s[at]; k++)
        for (at++; ((unsigned char)s[at] & 0xC0) == 0x80; at++) {
        }
    return at;
}

static void check_corpus(const bt_corpus *c, const unsigned char *text, size_t len, long max_tokens)
{
    int V = bt_vocab_size(c->vocab);
    FUZZ_CHECK(c->n >= 2 && (max_tokens <= 0 || c->n <= max_tokens), "%ld ids (max %ld)", c->n,
               max_tokens);
    FUZZ_CHECK(c->kind == BT_TOKENS_CHARS || V == 28, "a letters vocabulary of %d tokens", V);
    for (long i = 0; i < c->n; i++)
        FUZZ_CHECK(c->ids[i] >= 0 && c->ids[i] < V, "id %d at %ld, V = %d", (int)c->ids[i], i, V);
    char *want = expected_text(text, len, c->kind);
    char *got = bt_decode_ids(c->vocab, c->ids, c->n);
    FUZZ_CHECK(got, "out of memory");
    size_t cut = prefix_bytes(want, c->n);
    FUZZ_CHECK(strlen(got) == cut && memcmp(got, want, cut) == 0 &&
               (max_tokens > 0 || want[cut] == '\0'),
               "%s: the ids decode to a different text (%zu bytes, expected %zu)",
               bt_tokens_kind_name(c->kind), strlen(got), cut);
    if (c->kind == BT_TOKENS_LETTERS)
        FUZZ_CHECK(strcmp(bt_vocab_token(c->vocab, 0), "<unk>") == 0, "letters: id 0 is not <unk>");
    bt_free(got);
    free(want);
}

/* Is ids[0..k) a stretch of hay[0..n)? */
static bool is_stretch(const int32_t *hay, long n, const int32_t *ids, long k)
{
    for (long p = 0; p + k <= n; p++)
        if (memcmp(hay + p, ids, sizeof *ids * (size_t)k) == 0)
            return true;
    return false;
}

static void check_batch(const bt_corpus *c, const bt_source *s, const bt_sequence *q, long train)
{
    int B = s->B, T = s->T, V = bt_vocab_size(c->vocab);
    FUZZ_CHECK(q->B == B && q->T == T && q->ids && q->targets, "minibatch %dx%d, source %dx%d",
               q->B, q->T, B, T);
    int32_t row[1 + 16];
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            int32_t x = q->ids[b * T + t], y = q->targets[b * T + t];
            FUZZ_CHECK(x >= 0 && x < V && y >= 0 && y < V, "ids %d -> %d, V = %d", (int)x, (int)y, V);
            if (t + 1 < T)
                FUZZ_CHECK(y == q->ids[b * T + t + 1], "row %d: target %d is not the next input", b, t);
            row[t] = x;
        }
        row[T] = q->targets[b * T + T - 1];
        FUZZ_CHECK(is_stretch(c->ids, train, row, T + 1), "row %d is not a stretch of the "
                   "training text", b);
    }
}

static void check_source(const bt_corpus *c, int B, int T, bt_batch_mode mode, double val)
{
    char err[512] = "";
    bt_source s;
    if (bt_text_source_new(c, B, T, mode, val, &s, err, sizeof err) != BT_OK) {
        FUZZ_CHECK(err[0], "text source refused without a message");
        return;
    }
    long train = bt_text_source_train_tokens(&s), held = bt_text_source_val_tokens(&s);
    FUZZ_CHECK(train >= 2 && held >= 0 && train + held <= c->n, "train %ld + val %ld of %ld",
               train, held, c->n);
    FUZZ_CHECK(s.tokens_in && s.tokens_out && s.B == B && s.T == T && s.vocab == c->vocab &&
               s.input_size == bt_vocab_size(c->vocab) && s.output_size == s.input_size,
               "the source's sizes");
    FUZZ_CHECK(s.carry_state == (mode == BT_BATCH_SEQUENTIAL), "carry_state");
    int32_t *last = malloc(sizeof(int32_t) * (size_t)B);
    FUZZ_CHECK(last, "out of memory");
    bt_rng rng;
    bt_rng_seed(&rng, 11);
    for (int epoch = 0; epoch < 3; epoch++) {
        s.epoch(s.ctx, &rng);
        int count = s.count(s.ctx), k = 0;
        FUZZ_CHECK(count >= 1, "an epoch of %d minibatches", count);
        bt_sequence q;
        while (s.next(s.ctx, &q)) {
            check_batch(c, &s, &q, train);
            for (int b = 0; k > 0 && mode == BT_BATCH_SEQUENTIAL && b < B; b++)
                FUZZ_CHECK(q.ids[b * T] == last[b], "sequential row %d does not continue", b);
            for (int b = 0; b < B; b++)
                last[b] = q.targets[b * T + T - 1];
            FUZZ_CHECK(++k <= count, "more than the %d minibatches announced", count);
        }
        FUZZ_CHECK(k == count, "%d minibatches, %d announced", k, count);
    }
    /* Validation: rows of the held-out end, the last minibatch maybe shorter. */
    bt_sequence q;
    int nval = 0;
    long steps = 0;
    for (; nval < 100000 && s.validation(s.ctx, nval, &q); nval++) {
        FUZZ_CHECK(q.T >= 1 && q.T <= T && q.B >= 1 && q.B <= B && q.ids && q.targets,
                   "validation minibatch %dx%d", q.B, q.T);
        int32_t row[1 + 16];
        for (int b = 0; b < q.B; b++) {
            memcpy(row, q.ids + b * q.T, sizeof *row * (size_t)q.T);
            row[q.T] = q.targets[b * q.T + q.T - 1];
            for (int t = 0; t + 1 < q.T; t++)
                FUZZ_CHECK(q.targets[b * q.T + t] == q.ids[b * q.T + t + 1], "validation target");
            FUZZ_CHECK(is_stretch(c->ids + train, c->n - train, row, q.T + 1),
                       "validation row %d is not a stretch of the held-out text", b);
        }
        steps += (long)q.B * q.T;
    }
    /* Each of vB <= B rows scores val_row = (held - 1) / vB steps. */
    FUZZ_CHECK(held == 0 ? steps == 0 : steps <= held - 1 && steps > held - 1 - B,
               "validation scores %ld of %ld held-out steps", steps, held - 1);
    free(last);
    bt_source_free(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    bt_tokens_kind kind = data[0] & 1 ? BT_TOKENS_LETTERS : BT_TOKENS_CHARS;
    bt_batch_mode mode = data[0] & 2 ? BT_BATCH_RANDOM : BT_BATCH_SEQUENTIAL;
    int B = 1 + data[1] % 8, T = 1 + data[2] % 16;
    double val = (data[3] & 7) % 6 / 10.0;         /* 0 .. 0.5 */
    long max_tokens = (data[3] >> 3) * 8;          /* 0 (all) or 8 .. 248 */
    const unsigned char *text = data + 4;
    size_t len = size - 4;
    char err[512] = "";
    bt_corpus *c = (bt_corpus *)1;
    if (bt_corpus_from_string((const char *)text, len, kind, max_tokens, &c, err, sizeof err) != BT_OK) {
        FUZZ_CHECK(!c && err[0], "refused without a message");
        return 0;
    }
    check_corpus(c, text, len, max_tokens);
    check_source(c, B, T, mode, val);
    bt_corpus_free(c);
    return 0;
}
