/* text.c: turns a UTF-8 text into token ids (chars, or d2l's letters), keeps
 * the vocabulary (JSON for checkpoints) and cuts minibatches the way d2l's
 * seq_data_iter_sequential / seq_data_iter_random do.
 *
 * Dimension letters: B rows (batch), T steps, V vocabulary.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text.h"

/* uthash through the library allocator, and without its exit() on OOM: a
 * failed add sets `hash_oom`, a local of the one function that adds. */
#define uthash_malloc(sz) bt_malloc(sz)
#define uthash_free(ptr, sz) bt_free(ptr)
#define HASH_NONFATAL_OOM 1
#define uthash_nonfatal_oom(obj) (hash_oom = true)
#include <uthash.h>

#define UNK_TOKEN "<unk>"

/* ---- UTF-8 (by hand, so nothing depends on the locale) ------------------- */

/* Decodes the code point at s[i]; returns its byte length, or 0 when the bytes
 * there are not UTF-8 (truncated, overlong, surrogate, above U+10FFFF), which
 * is what Python's strict decoder refuses too. */
static int utf8_decode(const unsigned char *s, size_t len, size_t i, uint32_t *cp)
{
    unsigned c = s[i];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    int k;
    uint32_t v, min;
    if ((c & 0xE0) == 0xC0) {
        k = 2, v = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        k = 3, v = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        k = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (len - i < (size_t)k)
        return 0;
    for (int j = 1; j < k; j++) {
        if ((s[i + j] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (s[i + j] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return k;
}

/* Writes cp as UTF-8 into out[4]; returns the byte count. */
static int utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Offset of the first byte that does not start a valid sequence, or len. */
static size_t utf8_first_invalid(const unsigned char *s, size_t len)
{
    size_t i = 0;
    uint32_t cp;
    while (i < len) {
        int k = utf8_decode(s, len, i, &cp);
        if (!k)
            return i;
        i += (size_t)k;
    }
    return len;
}

/* "'é' (U+00E9)", or just "U+0007" for a character that would not print. */
static void describe_cp(uint32_t cp, char *buf, size_t n)
{
    char u[5] = {0};
    if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp < 0xA0)) {
        snprintf(buf, n, "U+%04X", (unsigned)cp);
    } else {
        utf8_encode(cp, u);
        snprintf(buf, n, "'%s' (U+%04X)", u, (unsigned)cp);
    }
}

static bool is_ascii_letter(uint32_t cp) { return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z'; }

/* ---- tokens kind -------------------------------------------------------------- */

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

/* ---- vocabulary ---------------------------------------------------------------- */

typedef struct vocab_entry {
    char tok[8]; /* NUL-terminated: one code point (<= 4 bytes) or "<unk>" */
    unsigned len;
    UT_hash_handle hh;
} vocab_entry;

struct bt_vocab {
    bt_tokens_kind kind;
    int n, cap;
    int unk;              /* id of "<unk>", -1 if none */
    vocab_entry *entries; /* [cap]; the id is the index, so the array never moves */
    vocab_entry *map;     /* uthash over entries, keyed by tok[0..len) */
};

static bt_vocab *vocab_new(bt_tokens_kind kind, int cap)
{
    bt_vocab *v = bt_calloc(1, sizeof *v);
    if (!v)
        return NULL;
    v->entries = bt_calloc((size_t)cap, sizeof *v->entries);
    if (!v->entries) {
        bt_free(v);
        return NULL;
    }
    v->kind = kind;
    v->cap = cap;
    v->unk = -1;
    return v;
}

/* Appends a token as the next id: BT_OK, BT_ERR_ARG for a duplicate, or
 * BT_ERR_NOMEM. */
static bt_status vocab_add(bt_vocab *v, const char *tok, size_t len)
{
    bool hash_oom = false;
    vocab_entry *e = NULL;
    if (len == 0 || len >= sizeof e->tok || v->n >= v->cap)
        return BT_ERR_ARG; /* callers only pass one code point or <unk> */
    HASH_FIND(hh, v->map, tok, (unsigned)len, e);
    if (e)
        return BT_ERR_ARG;
    e = &v->entries[v->n];
    memcpy(e->tok, tok, len);
    e->tok[len] = '\0';
    e->len = (unsigned)len;
    HASH_ADD(hh, v->map, tok[0], e->len, e);
    if (hash_oom)
        return BT_ERR_NOMEM;
    if (len == strlen(UNK_TOKEN) && memcmp(tok, UNK_TOKEN, len) == 0)
        v->unk = v->n;
    v->n++;
    return BT_OK;
}

static bt_status vocab_add_cp(bt_vocab *v, uint32_t cp)
{
    char buf[4];
    return vocab_add(v, buf, (size_t)utf8_encode(cp, buf));
}

void bt_vocab_free(bt_vocab *v)
{
    if (!v)
        return;
    HASH_CLEAR(hh, v->map);
    bt_free(v->entries);
    bt_free(v);
}

int bt_vocab_size(const bt_vocab *v) { return v ? v->n : 0; }
int bt_vocab_unk(const bt_vocab *v) { return v ? v->unk : -1; }
bt_tokens_kind bt_vocab_kind(const bt_vocab *v) { return v->kind; }

const char *bt_vocab_token(const bt_vocab *v, int id)
{
    if (!v || id < 0 || id >= v->n)
        return NULL;
    return v->entries[id].tok;
}

/* -1 when absent, whatever the kind. */
static int vocab_find(const bt_vocab *v, const char *tok, size_t len)
{
    vocab_entry *e = NULL;
    if (len == 0 || len >= sizeof e->tok)
        return -1;
    HASH_FIND(hh, v->map, tok, (unsigned)len, e);
    return e ? (int)(e - v->entries) : -1;
}

int bt_vocab_id(const bt_vocab *v, const char *utf8_char, size_t len)
{
    if (!v || !utf8_char)
        return -1;
    int id = vocab_find(v, utf8_char, len);
    return id >= 0 ? id : (v->kind == BT_TOKENS_LETTERS ? v->unk : -1);
}

char *bt_vocab_to_json(const bt_vocab *v)
{
    /* A token is at most 6 bytes escaped ("\u001f") or 5 ("<unk>"), plus two
     * quotes and a comma. */
    size_t cap = (size_t)v->n * 9 + 3, k = 0;
    char *out = bt_malloc(cap);
    if (!out)
        return NULL;
    out[k++] = '[';
    for (int id = 0; id < v->n; id++) {
        const vocab_entry *e = &v->entries[id];
        if (id)
            out[k++] = ',';
        out[k++] = '"';
        for (unsigned j = 0; j < e->len; j++) {
            unsigned char c = (unsigned char)e->tok[j];
            const char *esc = NULL;
            switch (c) {
            case '"': esc = "\\\""; break;
            case '\\': esc = "\\\\"; break;
            case '\n': esc = "\\n"; break;
            case '\r': esc = "\\r"; break;
            case '\t': esc = "\\t"; break;
            case '\b': esc = "\\b"; break;
            case '\f': esc = "\\f"; break;
            default: break;
            }
            if (esc) {
                memcpy(out + k, esc, 2);
                k += 2;
            } else if (c < 0x20) {
                k += (size_t)snprintf(out + k, cap - k, "\\u%04x", c);
            } else {
                out[k++] = (char)c; /* UTF-8 goes through as is: JSON allows it */
            }
        }
        out[k++] = '"';
    }
    out[k++] = ']';
    out[k] = '\0';
    return out;
}

/* ---- vocabulary from JSON ------------------------------------------------------- */

typedef struct json_tok {
    char tok[8];
    size_t len;
} json_tok;

static void json_ws(const char *s, size_t *i)
{
    while (s[*i] == ' ' || s[*i] == '\t' || s[*i] == '\n' || s[*i] == '\r')
        (*i)++;
}

static int hex4(const char *s, uint32_t *out)
{
    uint32_t v = 0;
    for (int j = 0; j < 4; j++) {
        char c = s[j];
        int d = c >= '0' && c <= '9' ? c - '0'
              : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return 0;
        v = v * 16 + (uint32_t)d;
    }
    *out = v;
    return 1;
}

/* Parses the JSON string at s[*i] (on its opening quote) into t; a string
 * longer than 7 bytes is refused (no token is), as is anything not JSON. */
static bt_status json_string(const char *s, size_t *i, json_tok *t, int index, char *err,
                             size_t errlen)
{
    size_t start = *i;
    t->len = 0;
    (*i)++;
    for (;;) {
        unsigned char c = (unsigned char)s[*i];
        char buf[4];
        int k;
        if (c == '"') {
            (*i)++;
            t->tok[t->len] = '\0';
            return BT_OK;
        }
        if (c == '\0')
            return bt_error(err, errlen, BT_ERR_FORMAT,
                        "vocabulary JSON: token %d (byte %zu) has no closing quote", index, start);
        if (c < 0x20)
            return bt_error(err, errlen, BT_ERR_FORMAT,
                        "vocabulary JSON: raw control byte 0x%02X at byte %zu (JSON needs \\u%04X)",
                        c, *i, c);
        if (c == '\\') {
            uint32_t cp;
            char e = s[*i + 1];
            size_t at = *i;
            switch (e) {
            case '"': case '\\': case '/': cp = (uint32_t)e; *i += 2; break;
            case 'b': cp = '\b'; *i += 2; break;
            case 'f': cp = '\f'; *i += 2; break;
            case 'n': cp = '\n'; *i += 2; break;
            case 'r': cp = '\r'; *i += 2; break;
            case 't': cp = '\t'; *i += 2; break;
            case 'u':
                if (!hex4(s + *i + 2, &cp))
                    return bt_error(err, errlen, BT_ERR_FORMAT,
                                "vocabulary JSON: bad \\u escape at byte %zu", at);
                *i += 6;
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    uint32_t lo;
                    if (s[*i] != '\\' || s[*i + 1] != 'u' || !hex4(s + *i + 2, &lo) ||
                        lo < 0xDC00 || lo > 0xDFFF)
                        return bt_error(err, errlen, BT_ERR_FORMAT,
                                    "vocabulary JSON: lone surrogate \\u%04X at byte %zu",
                                    (unsigned)cp, at);
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    *i += 6;
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    return bt_error(err, errlen, BT_ERR_FORMAT,
                                "vocabulary JSON: lone surrogate \\u%04X at byte %zu",
                                (unsigned)cp, at);
                }
                if (cp == 0)
                    return bt_error(err, errlen, BT_ERR_FORMAT,
                                "vocabulary JSON: token %d is U+0000, which no text holds", index);
                break;
            default:
                return bt_error(err, errlen, BT_ERR_FORMAT,
                            "vocabulary JSON: bad escape at byte %zu", at);
            }
            k = utf8_encode(cp, buf);
        } else {
            uint32_t cp;
            k = utf8_decode((const unsigned char *)s, *i + strnlen(s + *i, 4), *i, &cp);
            if (!k)
                return bt_error(err, errlen, BT_ERR_FORMAT,
                            "vocabulary JSON: invalid UTF-8 at byte %zu", *i);
            memcpy(buf, s + *i, (size_t)k);
            *i += (size_t)k;
        }
        if (t->len + (size_t)k >= sizeof t->tok)
            return bt_error(err, errlen, BT_ERR_FORMAT,
                        "vocabulary JSON: token %d (byte %zu) is longer than one character",
                        index, start);
        memcpy(t->tok + t->len, buf, (size_t)k);
        t->len += (size_t)k;
    }
}

/* Reads the JSON array into a growing list of tokens. */
static bt_status json_tokens(const char *s, json_tok **out, int *count, char *err, size_t errlen)
{
    size_t i = 0;
    int n = 0, cap = 0;
    json_tok *list = NULL;
    bt_status st = BT_OK;
    json_ws(s, &i);
    if (s[i] != '[')
        return bt_error(err, errlen, BT_ERR_FORMAT,
                    "vocabulary JSON: expected '[' at byte %zu: it must be an array of strings", i);
    i++;
    json_ws(s, &i);
    if (s[i] == ']') {
        i++;
    } else {
        for (;;) {
            if (s[i] != '"') {
                st = bt_error(err, errlen, BT_ERR_FORMAT,
                          "vocabulary JSON: expected a string at byte %zu", i);
                goto done;
            }
            if (n == cap) {
                int ncap = cap ? cap * 2 : 64;
                json_tok *g = bt_realloc(list, (size_t)ncap * sizeof *g);
                if (!g) {
                    st = bt_error(err, errlen, BT_ERR_NOMEM, "out of memory reading a vocabulary");
                    goto done;
                }
                list = g, cap = ncap;
            }
            st = json_string(s, &i, &list[n], n, err, errlen);
            if (st != BT_OK)
                goto done;
            n++;
            json_ws(s, &i);
            if (s[i] == ',') {
                i++;
                json_ws(s, &i);
            } else if (s[i] == ']') {
                i++;
                break;
            } else {
                st = bt_error(err, errlen, BT_ERR_FORMAT,
                          "vocabulary JSON: expected ',' or ']' at byte %zu", i);
                goto done;
            }
        }
    }
    json_ws(s, &i);
    if (s[i] != '\0')
        st = bt_error(err, errlen, BT_ERR_FORMAT,
                  "vocabulary JSON: unexpected text after the array at byte %zu", i);
done:
    if (st != BT_OK) {
        bt_free(list);
        return st;
    }
    *out = list;
    *count = n;
    return BT_OK;
}

bt_status bt_vocab_from_json(const char *json, bt_tokens_kind kind, bt_vocab **out, char *err,
                             size_t errlen)
{
    json_tok *list = NULL;
    int n = 0;
    bt_vocab *v = NULL;
    if (!json || !out)
        return bt_error(err, errlen, BT_ERR_ARG, "bt_vocab_from_json: NULL argument");
    *out = NULL;
    bt_status st = json_tokens(json, &list, &n, err, errlen);
    if (st != BT_OK)
        return st;
    if (n == 0) {
        st = bt_error(err, errlen, BT_ERR_FORMAT, "vocabulary JSON: the array is empty");
        goto done;
    }
    v = vocab_new(kind, n);
    if (!v) {
        st = bt_error(err, errlen, BT_ERR_NOMEM, "out of memory building a vocabulary");
        goto done;
    }
    for (int id = 0; id < n; id++) {
        const json_tok *t = &list[id];
        bool is_unk = strcmp(t->tok, UNK_TOKEN) == 0;
        uint32_t cp;
        if (is_unk && kind == BT_TOKENS_CHARS) {
            st = bt_error(err, errlen, BT_ERR_FORMAT,
                      "vocabulary JSON: token %d is <unk>, which a chars vocabulary does not "
                      "have: was the model trained with letters?", id);
            goto done;
        }
        if (!is_unk && (utf8_decode((const unsigned char *)t->tok, t->len, 0, &cp) != (int)t->len)) {
            st = bt_error(err, errlen, BT_ERR_FORMAT,
                      "vocabulary JSON: token %d \"%s\" is not one character", id, t->tok);
            goto done;
        }
        st = vocab_add(v, t->tok, t->len);
        if (st == BT_ERR_NOMEM) {
            bt_error(err, errlen, st, "out of memory building a vocabulary");
            goto done;
        }
        if (st != BT_OK) {
            st = bt_error(err, errlen, BT_ERR_FORMAT,
                      "vocabulary JSON: token %d \"%s\" appears twice", id, t->tok);
            goto done;
        }
    }
    if (kind == BT_TOKENS_LETTERS && v->unk < 0) {
        st = bt_error(err, errlen, BT_ERR_FORMAT,
                  "vocabulary JSON: a letters vocabulary needs \"<unk>\": was the model trained "
                  "with chars?");
        goto done;
    }
done:
    bt_free(list);
    if (st != BT_OK) {
        bt_vocab_free(v);
        return st;
    }
    *out = v;
    return BT_OK;
}

/* ---- encoding a prompt ------------------------------------------------------------- */

bt_status bt_vocab_encode(const bt_vocab *v, bt_tokens_kind kind, const char *text,
                          int32_t **ids, long *n, char *err, size_t errlen)
{
    if (!v || !text || !ids || !n)
        return bt_error(err, errlen, BT_ERR_ARG, "bt_vocab_encode: NULL argument");
    *ids = NULL;
    *n = 0;
    const unsigned char *s = (const unsigned char *)text;
    size_t len = strlen(text);
    size_t bad = utf8_first_invalid(s, len);
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
        i += (size_t)utf8_decode(s, len, i, &cp);
        if (kind == BT_TOKENS_CHARS && cp == '\r') {
            /* Same newline handling as the corpus, or a CRLF prompt never matches. */
            cp = '\n';
            if (i < len && s[i] == '\n')
                i++;
        }
        if (kind == BT_TOKENS_LETTERS && cp >= 'A' && cp <= 'Z')
            cp += 'a' - 'A';
        char buf[4];
        int id = vocab_find(v, buf, (size_t)utf8_encode(cp, buf));
        if (id < 0 && kind == BT_TOKENS_LETTERS && v->unk >= 0)
            id = v->unk;
        if (id < 0) {
            char d[32];
            describe_cp(cp, d, sizeof d);
            bt_free(out);
            return bt_error(err, errlen, BT_ERR_NOT_FOUND,
                        "the prompt has character %s at byte %zu, which is not among the %d "
                        "characters the model was trained on: remove it from the prompt",
                        d, at, v->n);
        }
        out[k++] = id;
    }
    *ids = out;
    *n = k;
    return BT_OK;
}

/* ---- corpus --------------------------------------------------------------------------- */

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
        i += (size_t)utf8_decode(s, len, i, &cp);
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
        i += (size_t)utf8_decode(s, len, i, &cp);
        if (cp == '\r') {
            cp = '\n';
            if (i < len && s[i] == '\n')
                i++;
        }
        out[n++] = cp;
    }
    return n;
}

/* letters vocabulary: <unk>, then d2l's order (count descending, ties by
 * first occurrence), then the absent ones of ' ', a..z. */
static bt_vocab *vocab_letters(const uint32_t *tok, long n)
{
    long count[27] = {0}, first[27];
    int order[27], m = 0;
    for (int j = 0; j < 27; j++)
        first[j] = -1;
    for (long i = 0; i < n; i++) {
        int j = tok[i] == ' ' ? 0 : (int)(tok[i] - 'a') + 1;
        if (first[j] < 0)
            first[j] = i;
        count[j]++;
    }
    for (int j = 0; j < 27; j++)
        if (count[j])
            order[m++] = j;
    /* Insertion sort: stable, and 27 items. Sorting by first occurrence first
     * reproduces Counter's insertion order. */
    for (int a = 1; a < m; a++)
        for (int b = a; b > 0 && first[order[b - 1]] > first[order[b]]; b--) {
            int t = order[b]; order[b] = order[b - 1]; order[b - 1] = t;
        }
    for (int a = 1; a < m; a++)
        for (int b = a; b > 0 && count[order[b - 1]] < count[order[b]]; b--) {
            int t = order[b]; order[b] = order[b - 1]; order[b - 1] = t;
        }
    for (int j = 0; j < 27; j++)
        if (!count[j])
            order[m++] = j;
    bt_vocab *v = vocab_new(BT_TOKENS_LETTERS, 28);
    if (!v)
        return NULL;
    bt_status st = vocab_add(v, UNK_TOKEN, strlen(UNK_TOKEN));
    for (int a = 0; a < 27 && st == BT_OK; a++)
        st = vocab_add_cp(v, order[a] == 0 ? ' ' : (uint32_t)('a' + order[a] - 1));
    if (st != BT_OK) {
        bt_vocab_free(v);
        return NULL;
    }
    return v;
}

typedef struct cp_count {
    uint32_t cp;
    long count;
} cp_count;

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static int cmp_freq(const void *a, const void *b)
{
    const cp_count *x = a, *y = b;
    if (x->count != y->count)
        return x->count < y->count ? 1 : -1;
    return (x->cp > y->cp) - (x->cp < y->cp);
}

/* chars vocabulary: count descending, ties by code point. Counting a sorted
 * copy needs no hash and is deterministic. */
static bt_vocab *vocab_chars(const uint32_t *tok, long n)
{
    uint32_t *sorted = bt_malloc((size_t)n * sizeof *sorted);
    cp_count *runs = bt_malloc((size_t)n * sizeof *runs);
    bt_vocab *v = NULL;
    if (!sorted || !runs)
        goto done;
    memcpy(sorted, tok, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_u32);
    long m = 0;
    for (long i = 0; i < n; i++) {
        if (m && runs[m - 1].cp == sorted[i])
            runs[m - 1].count++;
        else
            runs[m++] = (cp_count){sorted[i], 1};
    }
    qsort(runs, (size_t)m, sizeof *runs, cmp_freq);
    v = vocab_new(BT_TOKENS_CHARS, (int)m);
    if (!v)
        goto done;
    for (long i = 0; i < m; i++)
        if (vocab_add_cp(v, runs[i].cp) != BT_OK) {
            bt_vocab_free(v);
            v = NULL;
            goto done;
        }
done:
    bt_free(sorted);
    bt_free(runs);
    return v;
}

void bt_corpus_free(bt_corpus *c)
{
    if (!c)
        return;
    bt_vocab_free(c->vocab);
    bt_free(c->ids);
    bt_free(c);
}

/* The whole pipeline; `name` is "'path'" or "the text" for messages. */
static bt_status corpus_build(const char *name, const unsigned char *s, size_t len,
                              bt_tokens_kind kind, long max_tokens, bt_corpus **out, char *err,
                              size_t errlen)
{
    if (len == 0)
        return bt_error(err, errlen, BT_ERR_FORMAT, "%s is empty: give a text with at least 2 characters",
                    name);
    /* NUL first: a binary or UTF-16 file is usually also bad UTF-8, and
     * "binary" says more than a byte offset. */
    const unsigned char *nul = memchr(s, 0, len);
    if (nul)
        return bt_error(err, errlen, BT_ERR_FORMAT,
                    "%s has a NUL byte at offset %zu: it looks like a binary (or UTF-16) file; "
                    "give a UTF-8 text file", name, (size_t)(nul - s));
    size_t bad = utf8_first_invalid(s, len);
    if (bad < len)
        return bt_error(err, errlen, BT_ERR_FORMAT,
                    "%s is not valid UTF-8: byte 0x%02X at byte offset %zu; convert it, e.g. "
                    "iconv -f latin1 -t utf-8", name, s[bad], bad);
    size_t ctrl = 0;
    for (size_t i = 0; i < len; i++)
        if ((s[i] < 0x20 && !(s[i] >= '\t' && s[i] <= '\r') && s[i] != 0x1B) || s[i] == 0x7F)
            ctrl++;
    if (ctrl * 10 > len)
        return bt_error(err, errlen, BT_ERR_FORMAT,
                    "%s looks binary: %zu of its %zu bytes are control characters; give a text file",
                    name, ctrl, len);
    if (len >= 3 && s[0] == 0xEF && s[1] == 0xBB && s[2] == 0xBF) {
        s += 3; /* a BOM marks the encoding; it is not text */
        len -= 3;
    }

    bt_status st = BT_OK;
    bt_corpus *c = NULL;
    uint32_t *tok = bt_malloc((len ? len : 1) * sizeof *tok);
    if (!tok)
        return bt_error(err, errlen, BT_ERR_NOMEM, "out of memory reading %s", name);
    long n = kind == BT_TOKENS_LETTERS ? tokenize_letters(s, len, tok) : tokenize_chars(s, len, tok);
    if (n < 2) {
        st = bt_error(err, errlen, BT_ERR_FORMAT,
                  "%s has %ld token%s after %s tokenization%s: a corpus needs at least 2; give a "
                  "longer text", name, n, n == 1 ? "" : "s", bt_tokens_kind_name(kind),
                  kind == BT_TOKENS_LETTERS ? " (only A-Z letters and spaces between words are kept)"
                                            : "");
        goto done;
    }
    long keep = max_tokens > 0 && max_tokens < n ? max_tokens : n;
    if (keep < 2) {
        st = bt_error(err, errlen, BT_ERR_ARG,
                  "a maximum of %ld token keeps too little of %s: a corpus needs at least 2",
                  max_tokens, name);
        goto done;
    }
    c = bt_calloc(1, sizeof *c);
    if (!c)
        goto nomem;
    c->kind = kind;
    /* The vocabulary sees the whole text, as d2l builds Vocab before cutting
     * the corpus to max_tokens. */
    c->vocab = kind == BT_TOKENS_LETTERS ? vocab_letters(tok, n) : vocab_chars(tok, n);
    c->ids = bt_malloc((size_t)keep * sizeof *c->ids);
    if (!c->vocab || !c->ids)
        goto nomem;
    for (long i = 0; i < keep; i++) {
        char buf[4];
        int id = vocab_find(c->vocab, buf, (size_t)utf8_encode(tok[i], buf));
        if (id < 0) { /* cannot happen: the vocabulary came from these tokens */
            st = bt_error(err, errlen, BT_ERR_FORMAT, "internal error: token %ld of %s has no id", i, name);
            goto done;
        }
        c->ids[i] = id;
    }
    c->n = keep;
    goto done;
nomem:
    st = bt_error(err, errlen, BT_ERR_NOMEM, "out of memory reading %s", name);
done:
    bt_free(tok);
    if (st != BT_OK) {
        bt_corpus_free(c);
        return st;
    }
    *out = c;
    return BT_OK;
}

bt_status bt_corpus_from_string(const char *text, size_t len, bt_tokens_kind kind, long max_tokens,
                                bt_corpus **out, char *err, size_t errlen)
{
    if (!out || (!text && len))
        return bt_error(err, errlen, BT_ERR_ARG, "bt_corpus_from_string: NULL argument");
    *out = NULL;
    return corpus_build("the text", (const unsigned char *)(text ? text : ""), len, kind,
                        max_tokens, out, err, errlen);
}

bt_status bt_corpus_load(const char *path, bt_tokens_kind kind, long max_tokens, bt_corpus **out,
                         char *err, size_t errlen)
{
    if (!path || !out)
        return bt_error(err, errlen, BT_ERR_ARG, "bt_corpus_load: NULL argument");
    *out = NULL;
    FILE *f = fopen(path, "rb"); /* binary: no newline or locale translation */
    if (!f)
        return bt_error(err, errlen, BT_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    size_t len = 0, cap = 1 << 16;
    unsigned char *buf = bt_malloc(cap);
    bt_status st = BT_OK;
    if (!buf) {
        st = bt_error(err, errlen, BT_ERR_NOMEM, "out of memory reading '%s'", path);
        goto done;
    }
    for (;;) {
        if (len == cap) {
            unsigned char *g = bt_realloc(buf, cap * 2);
            if (!g) {
                st = bt_error(err, errlen, BT_ERR_NOMEM, "out of memory reading '%s'", path);
                goto done;
            }
            buf = g, cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) {
            if (ferror(f))
                st = bt_error(err, errlen, BT_ERR_IO, "cannot read '%s': %s", path, strerror(errno));
            break;
        }
    }
    if (st == BT_OK) {
        char name[1024];
        snprintf(name, sizeof name, "'%s'", path);
        st = corpus_build(name, buf, len, kind, max_tokens, out, err, errlen);
    }
done:
    bt_free(buf);
    fclose(f);
    return st;
}

/* ---- minibatches ------------------------------------------------------------------------ */

struct bt_batcher {
    const int32_t *ids; /* [n], the range's first token */
    long n;
    int B, T;
    bt_batch_mode mode;
    int offset;     /* this epoch's skipped prefix */
    long row_len;   /* sequential: tokens per row this epoch */
    long *starts;   /* random: [n / T] subsequence starts (after the offset), in visiting order */
    long nsub;      /* random: subsequences this epoch */
    int count, next;
};

/* Uniform in [0, k), k >= 1: rejection removes the modulo bias. */
static uint64_t rand_below(bt_rng *rng, uint64_t k)
{
    uint64_t lim = UINT64_MAX - UINT64_MAX % k, x;
    do
        x = bt_rng_next(rng);
    while (x >= lim);
    return x % k;
}

static void batcher_setup(bt_batcher *b, int offset, bt_rng *rng)
{
    long n = b->n - offset;
    b->offset = offset;
    b->next = 0;
    if (b->mode == BT_BATCH_SEQUENTIAL) {
        /* num_tokens = ((len - offset - 1) // B) * B; Xs.reshape(B, -1) */
        b->row_len = (n - 1) / b->B;
        b->count = (int)(b->row_len / b->T);
    } else {
        b->nsub = (n - 1) / b->T;
        for (long k = 0; k < b->nsub; k++)
            b->starts[k] = k * b->T;
        if (rng) /* Fisher-Yates from the end, as Python's random.shuffle */
            for (long k = b->nsub - 1; k > 0; k--) {
                long j = (long)rand_below(rng, (uint64_t)k + 1);
                long t = b->starts[k]; b->starts[k] = b->starts[j]; b->starts[j] = t;
            }
        b->count = (int)(b->nsub / b->B);
    }
}

bt_status bt_batcher_new(const int32_t *ids, long begin, long end, int B, int T, bt_batch_mode mode,
                         bt_batcher **out, char *err, size_t errlen)
{
    if (!ids || !out)
        return bt_error(err, errlen, BT_ERR_ARG, "bt_batcher_new: NULL argument");
    *out = NULL;
    if (B < 1 || T < 1)
        return bt_error(err, errlen, BT_ERR_ARG, "batch %d x %d steps: both must be at least 1", B, T);
    if (begin < 0 || end < begin)
        return bt_error(err, errlen, BT_ERR_ARG, "bad token range [%ld, %ld)", begin, end);
    if (mode != BT_BATCH_SEQUENTIAL && mode != BT_BATCH_RANDOM)
        return bt_error(err, errlen, BT_ERR_ARG, "unknown batch mode %d", (int)mode);
    long n = end - begin;
    /* Every epoch must yield a minibatch, so size for the largest offset:
     * sequential T, which leaves (n - T - 1) / B >= T per row; random T - 1,
     * which leaves (n - T) / T >= B subsequences. */
    long long need = (long long)(B + 1) * T + (mode == BT_BATCH_SEQUENTIAL ? 1 : 0);
    if ((long long)n < need)
        return bt_error(err, errlen, BT_ERR_SHAPE,
                    "the text has %ld tokens: too few for batch %d x %d steps (%s batching needs "
                    "at least %lld); use --batch/--steps smaller or a longer text",
                    n, B, T, mode == BT_BATCH_SEQUENTIAL ? "sequential" : "random", need);
    if ((n - 1) / ((long long)B * T) > 0x7fffffff)
        return bt_error(err, errlen, BT_ERR_ARG,
                    "the text has %ld tokens: more than 2^31 minibatches of %d x %d; use larger "
                    "batches or --max-tokens", n, B, T);
    bt_batcher *b = bt_calloc(1, sizeof *b);
    if (!b)
        return bt_error(err, errlen, BT_ERR_NOMEM, "out of memory making a batcher");
    b->ids = ids + begin;
    b->n = n;
    b->B = B;
    b->T = T;
    b->mode = mode;
    if (mode == BT_BATCH_RANDOM) {
        b->starts = bt_malloc((size_t)(n / T + 1) * sizeof *b->starts);
        if (!b->starts) {
            bt_free(b);
            return bt_error(err, errlen, BT_ERR_NOMEM, "out of memory making a batcher");
        }
    }
    batcher_setup(b, 0, NULL);
    *out = b;
    return BT_OK;
}

void bt_batcher_epoch(bt_batcher *b, bt_rng *rng)
{
    /* d2l: random.randint(0, num_steps) for sequential (inclusive), and
     * random.randint(0, num_steps - 1) for random sampling. */
    int span = b->mode == BT_BATCH_SEQUENTIAL ? b->T + 1 : b->T;
    int offset = rng ? (int)rand_below(rng, (uint64_t)span) : 0;
    batcher_setup(b, offset, rng);
}

bt_status bt_batcher_epoch_at(bt_batcher *b, int offset, bt_rng *rng, char *err, size_t errlen)
{
    int max = b->mode == BT_BATCH_SEQUENTIAL ? b->T : b->T - 1;
    if (offset < 0 || offset > max)
        return bt_error(err, errlen, BT_ERR_ARG, "epoch offset %d is outside [0, %d]", offset, max);
    batcher_setup(b, offset, rng);
    return BT_OK;
}

int bt_batcher_offset(const bt_batcher *b) { return b->offset; }
int bt_batcher_count(const bt_batcher *b) { return b->count; }

bool bt_batcher_next(bt_batcher *b, int32_t *X, int32_t *Y)
{
    if (b->next >= b->count)
        return false;
    const int B = b->B, T = b->T;
    const int32_t *ids = b->ids + b->offset;
    for (int r = 0; r < B; r++) {
        /* Row r of batch i: sequential, columns [i*T, i*T + T) of Xs row r;
         * random, the (i*B + r)-th subsequence in this epoch's order. */
        long base = b->mode == BT_BATCH_SEQUENTIAL ? r * b->row_len + (long)b->next * T
                                                   : b->starts[(long)b->next * B + r];
        for (int t = 0; t < T; t++) {
            if (X)
                X[r * T + t] = ids[base + t];
            if (Y)
                Y[r * T + t] = ids[base + t + 1];
        }
    }
    b->next++;
    return true;
}

void bt_batcher_free(bt_batcher *b)
{
    if (!b)
        return;
    bt_free(b->starts);
    bt_free(b);
}
