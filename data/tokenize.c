/* tokenize.c: the chars and letters rules (tokenize.h), for a corpus and for
 * a prompt. d2l's letters rule is matched line for line, newlines included,
 * so a model trained here sees the text d2l's Python would give it. */
#include <stdio.h>
#include <string.h>

#include "tokenize.h"
#include "utf8.h"
#include "vocab.h"

static bool is_ascii_letter(uint32_t cp) { return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z'; }

bt_status bt_tokens_kind_parse(const char *s, bt_tokens_kind *out, char *err, size_t errlen)
{
    if (s && strcmp(s, "chars") == 0) {
        *out = BT_TOKENS_CHARS;
        return BT_OK;
    }
    if (s && strcmp(s, "letters") == 0) {
        *out = BT_TOKENS_LETTERS;
        return BT_OK;
    }
    return bt_error(err, errlen, BT_ERR_ARG,
                "unknown tokens kind '%s': use 'chars' (every character) or 'letters' "
                "(a-z and space, as d2l)", s ? s : "(null)");
}

const char *bt_tokens_kind_name(bt_tokens_kind k)
{
    return k == BT_TOKENS_LETTERS ? "letters" : "chars";
}

/* ---- a corpus ------------------------------------------------------------------ */

/* letters: d2l's per line re.sub('[^A-Za-z]+', ' ', line).strip().lower(),
 * lines joined with nothing between them. Lines end at LF, CRLF or CR (Python's
 * universal newlines). Writes at most one token per input byte. */
static long tokenize_letters(const unsigned char *s, size_t len, uint32_t *out)
{
    long n = 0;
    bool gap = false, any = false; /* a run of non-letters since the last letter; a letter on this line */
    size_t i = 0;
    while (i < len) {
        uint32_t cp;
        i += (size_t)bt_utf8_decode(s + i, len - i, &cp);
        if (cp == '\n' || cp == '\r') {
            gap = any = false; /* strip(): the line's trailing run is dropped */
        } else if (is_ascii_letter(cp)) {
            if (gap && any)
                out[n++] = ' ';
            out[n++] = cp | 0x20;
            gap = false;
            any = true;
        } else {
            gap = true;
        }
    }
    return n;
}

/* chars: code points, with CRLF and a lone CR read as LF. */
static long tokenize_chars(const unsigned char *s, size_t len, uint32_t *out)
{
    long n = 0;
    size_t i = 0;
    while (i < len) {
        uint32_t cp;
        i += (size_t)bt_utf8_decode(s + i, len - i, &cp);
        if (cp == '\r') {
            cp = '\n';
            if (i < len && s[i] == '\n')
                i++;
        }
        out[n++] = cp;
    }
    return n;
}

long bt_tokenize(bt_tokens_kind kind, const unsigned char *s, size_t len, uint32_t *out)
{
    return kind == BT_TOKENS_LETTERS ? tokenize_letters(s, len, out) : tokenize_chars(s, len, out);
}

/* ---- a prompt ------------------------------------------------------------------- */

/* "'é' (U+00E9)", or just "U+0007" for a character that would not print. */
static void describe_cp(uint32_t cp, char *buf, size_t n)
{
    char u[5] = {0};
    if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp < 0xA0)) {
        snprintf(buf, n, "U+%04X", (unsigned)cp);
    } else {
        bt_utf8_encode(cp, u);
        snprintf(buf, n, "'%s' (U+%04X)", u, (unsigned)cp);
    }
}

bt_status bt_vocab_encode(const bt_vocab *v, bt_tokens_kind kind, const char *text,
                          int32_t **ids, long *n, char *err, size_t errlen)
{
    if (!v || !text || !ids || !n)
        return bt_error(err, errlen, BT_ERR_ARG, "bt_vocab_encode: NULL argument");
    *ids = NULL;
    *n = 0;
    const unsigned char *s = (const unsigned char *)text;
    size_t len = strlen(text);
    size_t bad = bt_utf8_first_invalid(s, len);
    if (bad < len)
        return bt_error(err, errlen, BT_ERR_FORMAT,
                    "the prompt is not valid UTF-8: byte 0x%02X at offset %zu", s[bad], bad);
    if (len == 0)
        return BT_OK;
    int32_t *out = bt_malloc(len * sizeof *out); /* at most one id per byte */
    if (!out)
        return bt_error(err, errlen, BT_ERR_NOMEM, "out of memory encoding a prompt");
    long k = 0;
    size_t i = 0;
    while (i < len) {
        uint32_t cp;
        size_t at = i;
        i += (size_t)bt_utf8_decode(s + i, len - i, &cp);
        if (kind == BT_TOKENS_CHARS && cp == '\r') {
            /* Same newline handling as the corpus, or a CRLF prompt never matches. */
            cp = '\n';
            if (i < len && s[i] == '\n')
                i++;
        }
        if (kind == BT_TOKENS_LETTERS && cp >= 'A' && cp <= 'Z')
            cp += 'a' - 'A';
        int id = bt_vocab_id_of(v, cp);
        if (id < 0 && kind == BT_TOKENS_LETTERS && bt_vocab_unk(v) >= 0)
            id = bt_vocab_unk(v);
        if (id < 0) {
            char d[32];
            describe_cp(cp, d, sizeof d);
            bt_free(out);
            return bt_error(err, errlen, BT_ERR_NOT_FOUND,
                        "the prompt has character %s at byte %zu, which is not among the %d "
                        "characters the model was trained on: remove it from the prompt",
                        d, at, bt_vocab_size(v));
        }
        out[k++] = id;
    }
    *ids = out;
    *n = k;
    return BT_OK;
}

