/* vocab.c: the vocabulary: ids by frequency, a hash from token to id, and its
 * JSON form (a list of tokens in id order, through jansson) for checkpoints.
 *
 * Dimension letters: V vocabulary. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

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

/* ---- JSON (jansson) ------------------------------------------------------------------ */

char *bt_vocab_to_json(const bt_vocab *v)
{
    json_t *list = json_array();
    for (int id = 0; list && id < v->n; id++)
        if (json_array_append_new(list, json_stringn(v->entries[id].tok, v->entries[id].len)) != 0) {
            json_decref(list);
            list = NULL;
        }
    if (!list)
        return NULL;
    /* Compact, as every checkpoint so far stored it: ["<unk>"," ","e"]. */
    size_t n = json_dumpb(list, NULL, 0, JSON_COMPACT);
    char *out = n ? bt_malloc(n + 1) : NULL;
    if (out && json_dumpb(list, out, n, JSON_COMPACT) == n)
        out[n] = '\0';
    else
        bt_free(out), out = NULL;
    json_decref(list);
    return out;
}

/* One token of the list, checked: a string of one code point (or <unk>, for
 * letters only), not seen before. */
static bt_status vocab_add_json(bt_vocab *v, const json_t *item, int id, char *err, size_t errlen)
{
    if (!json_is_string(item))
        return bt_error(err, errlen, BT_ERR_FORMAT, "vocabulary JSON: entry %d is not a string", id);
    const char *tok = json_string_value(item);
    size_t len = json_string_length(item);
    bool is_unk = strcmp(tok, UNK_TOKEN) == 0;
    uint32_t cp;
    if (is_unk && v->kind == BT_TOKENS_CHARS)
        return bt_error(err, errlen, BT_ERR_FORMAT,
                        "vocabulary JSON: token %d is <unk>, which a chars vocabulary does not "
                        "have: was the model trained with letters?", id);
    if (!is_unk && (len == 0 || bt_utf8_decode((const unsigned char *)tok, len, &cp) != (int)len))
        return bt_error(err, errlen, BT_ERR_FORMAT, "vocabulary JSON: token %d \"%.40s\" is %s",
                        id, tok, len > 4 ? "longer than one character" : "not one character");
    bt_status st = vocab_add(v, tok, len);
    if (st == BT_ERR_NOMEM)
        return bt_error(err, errlen, st, "out of memory building a vocabulary");
    if (st != BT_OK)
        return bt_error(err, errlen, BT_ERR_FORMAT, "vocabulary JSON: token %d \"%s\" appears twice",
                        id, tok);
    return BT_OK;
}

/* jansson's message, in our words where we have better ones. */
static bt_status json_failed(const json_error_t *e, char *err, size_t errlen)
{
    switch (json_error_code(e)) {
    case json_error_invalid_utf8:
        return bt_error(err, errlen, BT_ERR_FORMAT, "vocabulary JSON is not valid UTF-8 (%s)", e->text);
    case json_error_end_of_input_expected:
        return bt_error(err, errlen, BT_ERR_FORMAT,
                        "vocabulary JSON: unexpected text after the array at byte %d", e->position);
    default:
        return bt_error(err, errlen, BT_ERR_FORMAT, "vocabulary JSON is not valid JSON: %s (byte %d)",
                        e->text, e->position);
    }
}

bt_status bt_vocab_from_json(const char *json, bt_tokens_kind kind, bt_vocab **out, char *err,
                             size_t errlen)
{
    if (!json || !out)
        return bt_error(err, errlen, BT_ERR_ARG, "bt_vocab_from_json: NULL argument");
    *out = NULL;
    json_error_t e;
    json_t *list = json_loads(json, 0, &e);
    if (!list)
        return json_failed(&e, err, errlen);
    bt_status st = BT_OK;
    bt_vocab *v = NULL;
    size_t n = json_is_array(list) ? json_array_size(list) : 0;
    if (!json_is_array(list))
        st = bt_error(err, errlen, BT_ERR_FORMAT, "vocabulary JSON: expected '[', a list of tokens");
    else if (n == 0)
        st = bt_error(err, errlen, BT_ERR_FORMAT, "vocabulary JSON: the array is empty");
    else if (n > 0x7fffffff)
        st = bt_error(err, errlen, BT_ERR_FORMAT, "vocabulary JSON: %zu tokens is too many", n);
    else if (!(v = vocab_new(kind, (int)n)))
        st = bt_error(err, errlen, BT_ERR_NOMEM, "out of memory building a vocabulary");
    for (size_t id = 0; st == BT_OK && id < n; id++)
        st = vocab_add_json(v, json_array_get(list, id), (int)id, err, errlen);
    if (st == BT_OK && kind == BT_TOKENS_LETTERS && v->unk < 0)
        st = bt_error(err, errlen, BT_ERR_FORMAT,
                      "vocabulary JSON: a letters vocabulary needs \"<unk>\": was the model trained "
                      "with chars?");
    json_decref(list);
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
