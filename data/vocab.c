/* vocab.c: the vocabulary: ids by frequency, a hash from token to id, and its
 * JSON form (a list of tokens in id order) for checkpoints.
 *
 * Dimension letters: V vocabulary. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"
#include "vocab.h"

/* uthash through the library allocator, and without its exit() on OOM: a
 * failed add sets `hash_oom`, a local of the one function that adds. */
#define uthash_malloc(sz) bt_malloc(sz)
#define uthash_free(ptr, sz) bt_free(ptr)
#define HASH_NONFATAL_OOM 1
#define uthash_nonfatal_oom(obj) (hash_oom = true)
#include <uthash.h>

#define UNK_TOKEN "<unk>"

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
    return vocab_add(v, buf, (size_t)bt_utf8_encode(cp, buf));
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
            k = bt_utf8_encode(cp, buf);
        } else {
            uint32_t cp;
            k = bt_utf8_decode((const unsigned char *)s + *i, strnlen(s + *i, 4), &cp);
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
        if (!is_unk && (bt_utf8_decode((const unsigned char *)t->tok, t->len, &cp) != (int)t->len)) {
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

/* ---- building a vocabulary from a text ----------------------------------------------- */

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


bt_vocab *bt_vocab_build(bt_tokens_kind kind, const uint32_t *cps, long n)
{
    return kind == BT_TOKENS_LETTERS ? vocab_letters(cps, n) : vocab_chars(cps, n);
}

int bt_vocab_id_of(const bt_vocab *v, uint32_t cp)
{
    char buf[4];
    return v ? vocab_find(v, buf, (size_t)bt_utf8_encode(cp, buf)) : -1;
}

bool bt_vocab_equal(const bt_vocab *a, const bt_vocab *b)
{
    if (!a || !b || a->kind != b->kind || a->n != b->n)
        return false;
    for (int id = 0; id < a->n; id++)
        if (a->entries[id].len != b->entries[id].len ||
            memcmp(a->entries[id].tok, b->entries[id].tok, a->entries[id].len) != 0)
            return false;
    return true;
}
