/* safetensors.c: the safetensors format, read and written without dependencies.
 *
 * Reading parses the JSON header with a small strict parser (just what the format
 * needs) and checks every field and the data layout before allocating tensor data,
 * so a hostile or truncated file costs no more memory than its size. Writing
 * builds the header in memory and replaces the target atomically.
 */
#include "atomic.h"
#include "safetensors.h"
#include "utf8.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* uthash allocates through the accounted allocator, and must report (not exit
 * on) out of memory: on failure it leaves the item's hh.tbl NULL. */
#define uthash_malloc(sz) bt_malloc(sz)
#define uthash_free(ptr, sz) bt_free(ptr)
#define HASH_NONFATAL_OOM 1
#include <uthash.h>

/* Tensor bytes go to and from disk as they are in memory. */
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "safetensors.c assumes a little-endian host");
#endif

/* The reference implementation refuses larger headers; so do we, both ways. */
#define ST_MAX_HEADER 100000000ULL
#define ST_MAX_DEPTH 128 /* nesting of skipped JSON values */

static const struct {
    const char *name;
    size_t size;
} st_dtypes[] = {
    [BT_ST_F32] = {"F32", 4}, [BT_ST_F64] = {"F64", 8}, [BT_ST_I32] = {"I32", 4},
    [BT_ST_I64] = {"I64", 8}, [BT_ST_U8] = {"U8", 1},
};
_Static_assert(sizeof st_dtypes / sizeof st_dtypes[0] == BT_ST_DTYPE_COUNT,
               "st_dtypes must list every bt_st_dtype");

typedef struct st_entry {
    bt_st_tensor t;
    uint64_t begin, end; /* data_offsets, while reading */
    int order;           /* position in the header, to break ties when sorting */
    UT_hash_handle hh;
} st_entry;

typedef struct st_meta {
    char *key;
    char *value;
    UT_hash_handle hh; /* iteration follows insertion order */
} st_meta;

struct bt_st_file {
    st_entry **items; /* [n] in insertion / file order */
    int n, cap;
    st_entry *by_name; /* uthash head */
    st_meta *meta;     /* uthash head */
};

static char *st_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = bt_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static bool st_checked_count(int ndim, const int64_t *shape, size_t elsize, size_t *count)
{
    size_t c = 1;
    for (int i = 0; i < ndim; i++) {
        uint64_t d = (uint64_t)shape[i];
        if (shape[i] < 0 || d > SIZE_MAX)
            return false;
        if (d != 0 && c > SIZE_MAX / elsize / d)
            return false;
        c *= (size_t)d;
    }
    *count = c;
    return true;
}

/* ---- the file object --------------------------------------------------------- */

bt_st_file *bt_st_new(void)
{
    return bt_calloc(1, sizeof(bt_st_file));
}

void bt_st_free(bt_st_file *f)
{
    if (!f)
        return;
    HASH_CLEAR(hh, f->by_name);
    for (int i = 0; i < f->n; i++) {
        bt_free((char *)f->items[i]->t.name);
        bt_free(f->items[i]->t.data);
        bt_free(f->items[i]);
    }
    bt_free(f->items);
    st_meta *m, *tmp;
    HASH_ITER(hh, f->meta, m, tmp) {
        HASH_DEL(f->meta, m);
        bt_free(m->key);
        bt_free(m->value);
        bt_free(m);
    }
    bt_free(f);
}

/* Takes ownership of e (and its name and data) on success only. */
static bt_status st_insert(bt_st_file *f, st_entry *e)
{
    if (f->n == f->cap) {
        int cap = f->cap ? 2 * f->cap : 8;
        st_entry **items = bt_realloc(f->items, (size_t)cap * sizeof *items);
        if (!items)
            return BT_ERR_NOMEM;
        f->items = items;
        f->cap = cap;
    }
    HASH_ADD_KEYPTR(hh, f->by_name, e->t.name, strlen(e->t.name), e);
    if (!e->hh.tbl)
        return BT_ERR_NOMEM;
    e->order = f->n;
    f->items[f->n++] = e;
    return BT_OK;
}

bt_status bt_st_add(bt_st_file *f, const char *name, bt_st_dtype dt, int ndim,
                    const int64_t *shape, const void *data, char *err, size_t errlen)
{
    if (!f || !name)
        return bt_error(err, errlen, BT_ERR_ARG, "safetensors: bt_st_add needs a file and a name");
    if (!bt_utf8_valid(name, strlen(name)))
        return bt_error(err, errlen, BT_ERR_ARG, "safetensors: tensor name is not valid UTF-8");
    if (strcmp(name, "__metadata__") == 0)
        return bt_error(err, errlen, BT_ERR_ARG,
                       "safetensors: '__metadata__' is reserved and cannot name a tensor");
    if ((unsigned)dt >= BT_ST_DTYPE_COUNT)
        return bt_error(err, errlen, BT_ERR_ARG, "safetensors: tensor '%s': unknown dtype %d",
                       name, (int)dt);
    if (ndim < 0 || ndim > BT_ST_MAX_DIMS || (ndim > 0 && !shape))
        return bt_error(err, errlen, BT_ERR_ARG,
                       "safetensors: tensor '%s': ndim %d is not in 0..%d (or shape is NULL)",
                       name, ndim, BT_ST_MAX_DIMS);
    size_t count;
    if (!st_checked_count(ndim, shape, st_dtypes[dt].size, &count))
        return bt_error(err, errlen, BT_ERR_ARG,
                       "safetensors: tensor '%s': shape has a negative dimension or is too large",
                       name);
    if (count > 0 && !data)
        return bt_error(err, errlen, BT_ERR_ARG, "safetensors: tensor '%s': data is NULL", name);
    st_entry *found;
    HASH_FIND(hh, f->by_name, name, strlen(name), found);
    if (found)
        return bt_error(err, errlen, BT_ERR_ARG, "safetensors: tensor '%s' already exists", name);

    size_t bytes = count * st_dtypes[dt].size;
    st_entry *e = bt_calloc(1, sizeof *e);
    char *nm = st_strdup(name);
    void *copy = bt_malloc(bytes ? bytes : 1); /* never NULL, even when empty */
    if (!e || !nm || !copy)
        goto nomem;
    if (bytes)
        memcpy(copy, data, bytes);
    e->t.name = nm;
    e->t.dtype = dt;
    e->t.ndim = ndim;
    for (int i = 0; i < ndim; i++)
        e->t.shape[i] = shape[i];
    e->t.count = count;
    e->t.data = copy;
    if (st_insert(f, e) == BT_OK)
        return BT_OK;
nomem:
    bt_free(e);
    bt_free(nm);
    bt_free(copy);
    return bt_error(err, errlen, BT_ERR_NOMEM, "safetensors: out of memory adding tensor '%s'",
                   name);
}

bt_status bt_st_add_real(bt_st_file *f, const char *name, int ndim, const int64_t *shape,
                         const bt_real *data, char *err, size_t errlen)
{
    bt_st_dtype dt = sizeof(bt_real) == sizeof(double) ? BT_ST_F64 : BT_ST_F32;
    return bt_st_add(f, name, dt, ndim, shape, data, err, errlen);
}

bt_status bt_st_set_meta(bt_st_file *f, const char *key, const char *value)
{
    if (!f || !key || !value || !bt_utf8_valid(key, strlen(key)) ||
        !bt_utf8_valid(value, strlen(value)))
        return BT_ERR_ARG;
    char *v = st_strdup(value);
    if (!v)
        return BT_ERR_NOMEM;
    st_meta *m;
    HASH_FIND(hh, f->meta, key, strlen(key), m);
    if (m) {
        bt_free(m->value);
        m->value = v;
        return BT_OK;
    }
    m = bt_calloc(1, sizeof *m);
    char *k = st_strdup(key);
    if (m && k) {
        m->key = k;
        m->value = v;
        HASH_ADD_KEYPTR(hh, f->meta, m->key, strlen(m->key), m);
        if (m->hh.tbl)
            return BT_OK;
    }
    bt_free(m);
    bt_free(k);
    bt_free(v);
    return BT_ERR_NOMEM;
}

const char *bt_st_meta(const bt_st_file *f, const char *key)
{
    if (!f || !key)
        return NULL;
    st_meta *m;
    HASH_FIND(hh, f->meta, key, strlen(key), m);
    return m ? m->value : NULL;
}

int bt_st_count(const bt_st_file *f)
{
    return f ? f->n : 0;
}

const bt_st_tensor *bt_st_at(const bt_st_file *f, int i)
{
    return f && i >= 0 && i < f->n ? &f->items[i]->t : NULL;
}

const bt_st_tensor *bt_st_find(const bt_st_file *f, const char *name)
{
    if (!f || !name)
        return NULL;
    st_entry *e;
    HASH_FIND(hh, f->by_name, name, strlen(name), e);
    return e ? &e->t : NULL;
}

const char *bt_st_dtype_name(bt_st_dtype dt)
{
    return (unsigned)dt < BT_ST_DTYPE_COUNT ? st_dtypes[dt].name : "?";
}

size_t bt_st_dtype_size(bt_st_dtype dt)
{
    return (unsigned)dt < BT_ST_DTYPE_COUNT ? st_dtypes[dt].size : 0;
}

bt_status bt_st_get_real(const bt_st_tensor *t, bt_real *dst, size_t count, char *err,
                         size_t errlen)
{
    if (!t || (count > 0 && !dst))
        return bt_error(err, errlen, BT_ERR_ARG, "safetensors: bt_st_get_real needs a tensor and a buffer");
    if (count != t->count)
        return bt_error(err, errlen, BT_ERR_SHAPE,
                       "safetensors: tensor '%s' has %zu elements, the buffer has room for %zu",
                       t->name, t->count, count);
    /* memcpy per element: data is only guaranteed malloc-aligned, which suffices,
     * but this keeps the loop free of aliasing questions. */
    for (size_t i = 0; i < count; i++) {
        const unsigned char *p = (const unsigned char *)t->data;
        switch (t->dtype) {
        case BT_ST_F32: { float v; memcpy(&v, p + 4 * i, 4); dst[i] = (bt_real)v; break; }
        case BT_ST_F64: { double v; memcpy(&v, p + 8 * i, 8); dst[i] = (bt_real)v; break; }
        case BT_ST_I32: { int32_t v; memcpy(&v, p + 4 * i, 4); dst[i] = (bt_real)v; break; }
        case BT_ST_I64: { int64_t v; memcpy(&v, p + 8 * i, 8); dst[i] = (bt_real)v; break; }
        case BT_ST_U8: dst[i] = (bt_real)p[i]; break;
        default:
            return bt_error(err, errlen, BT_ERR_ARG, "safetensors: tensor '%s': unknown dtype %d",
                           t->name, (int)t->dtype);
        }
    }
    return BT_OK;
}

/* ---- writing ------------------------------------------------------------------ */

typedef struct st_buf {
    char *p;
    size_t n, cap;
    bool oom;
} st_buf;

static void st_put(st_buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n)
            cap *= 2;
        char *p = bt_realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static void st_puts(st_buf *b, const char *s)
{
    st_put(b, s, strlen(s));
}

/* A JSON string: UTF-8 passes through, quote, backslash and controls are escaped. */
static void st_put_json_str(st_buf *b, const char *s)
{
    st_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\', esc[1] = (char)*p;
            st_put(b, esc, 2);
        } else if (*p < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            st_put(b, esc, 6);
        } else {
            st_put(b, (const char *)p, 1);
        }
    }
    st_put(b, "\"", 1);
}

static void st_build_header(const bt_st_file *f, st_buf *b)
{
    char num[32];
    bool first = true;
    st_put(b, "{", 1);
    if (f->meta) {
        st_puts(b, "\"__metadata__\":{");
        for (st_meta *m = f->meta; m; m = m->hh.next) {
            if (m != f->meta)
                st_put(b, ",", 1);
            st_put_json_str(b, m->key);
            st_put(b, ":", 1);
            st_put_json_str(b, m->value);
        }
        st_put(b, "}", 1);
        first = false;
    }
    uint64_t off = 0;
    for (int i = 0; i < f->n; i++) {
        const bt_st_tensor *t = &f->items[i]->t;
        if (!first)
            st_put(b, ",", 1);
        first = false;
        st_put_json_str(b, t->name);
        st_puts(b, ":{\"dtype\":\"");
        st_puts(b, st_dtypes[t->dtype].name);
        st_puts(b, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            snprintf(num, sizeof num, "%s%" PRId64, d ? "," : "", t->shape[d]);
            st_puts(b, num);
        }
        uint64_t end = off + (uint64_t)t->count * st_dtypes[t->dtype].size;
        snprintf(num, sizeof num, "],\"data_offsets\":[%" PRIu64 ",", off);
        st_puts(b, num);
        snprintf(num, sizeof num, "%" PRIu64 "]}", end);
        st_puts(b, num);
        off = end;
    }
    st_put(b, "}", 1);
    /* Spaces until 8 + N is a multiple of 8, so the data section is 8-aligned. */
    while ((8 + b->n) % 8 != 0 && !b->oom)
        st_put(b, " ", 1);
}

bt_status bt_st_write(const bt_st_file *f, const char *path, char *err, size_t errlen)
{
    if (!f || !path || !*path)
        return bt_error(err, errlen, BT_ERR_ARG, "safetensors: bt_st_write needs a file and a path");
    st_buf hdr = {0};
    st_build_header(f, &hdr);
    if (hdr.oom) {
        bt_free(hdr.p);
        return bt_error(err, errlen, BT_ERR_NOMEM, "%s: out of memory building the header", path);
    }
    if (hdr.n > ST_MAX_HEADER) {
        bt_free(hdr.p);
        return bt_error(err, errlen, BT_ERR_ARG,
                       "%s: header would be %zu bytes, over the %llu-byte limit readers accept",
                       path, hdr.n, ST_MAX_HEADER);
    }

    bt_atomic_file *out;
    bt_status s = bt_atomic_open(path, &out, err, errlen);
    if (s == BT_OK) {
        unsigned char len8[8];
        for (int i = 0; i < 8; i++)
            len8[i] = (unsigned char)((uint64_t)hdr.n >> (8 * i));
        bool ok = bt_atomic_write(out, len8, 8) && bt_atomic_write(out, hdr.p, hdr.n);
        for (int i = 0; ok && i < f->n; i++) {
            const bt_st_tensor *t = &f->items[i]->t;
            ok = bt_atomic_write(out, t->data, t->count * st_dtypes[t->dtype].size);
        }
        s = bt_atomic_commit(out, err, errlen);
    }
    bt_free(hdr.p);
    return s;
}

/* ---- a small strict JSON parser, for the header only ------------------------- */

typedef struct st_parser {
    const char *begin, *p, *end;
    bt_status status; /* BT_ERR_FORMAT, or BT_ERR_NOMEM */
    char msg[320];
} st_parser;

__attribute__((format(printf, 2, 3)))
static bool st_bad(st_parser *ps, const char *fmt, ...)
{
    if (!ps->msg[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ps->msg, sizeof ps->msg, fmt, ap);
        va_end(ap);
    }
    return false;
}

static bool st_syntax(st_parser *ps, const char *what)
{
    return st_bad(ps, "header is not valid JSON: %s at header byte %td", what,
                  ps->p - ps->begin);
}

static bool st_nomem(st_parser *ps)
{
    ps->status = BT_ERR_NOMEM;
    return st_bad(ps, "out of memory while parsing the header");
}

static void st_ws(st_parser *ps)
{
    while (ps->p < ps->end &&
           (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

/* Skips whitespace, then consumes c if it is next. */
static bool st_eat(st_parser *ps, char c)
{
    st_ws(ps);
    if (ps->p < ps->end && *ps->p == c) {
        ps->p++;
        return true;
    }
    return false;
}

static int st_hex4(const char *s)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0'
              : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* A JSON string into a new NUL-terminated UTF-8 buffer (*out). Rejects \u0000,
 * which a C string cannot hold, and invalid UTF-8. */
static bool st_string(st_parser *ps, char **out)
{
    *out = NULL;
    st_ws(ps);
    if (ps->p >= ps->end || *ps->p != '"')
        return st_syntax(ps, "expected a string");
    const char *s = ++ps->p, *q = s;
    /* Find the closing quote first: escapes never expand, so its distance
     * bounds the decoded length. */
    while (q < ps->end && *q != '"')
        q += *q == '\\' ? 2 : 1;
    if (q >= ps->end) {
        ps->p = ps->end;
        return st_syntax(ps, "unterminated string");
    }
    char *buf = bt_malloc((size_t)(q - s) + 1);
    if (!buf)
        return st_nomem(ps);
    size_t n = 0;
    while (ps->p < q) {
        unsigned char c = (unsigned char)*ps->p;
        if (c < 0x20) {
            bt_free(buf);
            return st_syntax(ps, "raw control character in string");
        }
        if (c != '\\') {
            buf[n++] = (char)c;
            ps->p++;
            continue;
        }
        char e = ps->p[1];
        ps->p += 2;
        switch (e) {
        case '"': buf[n++] = '"'; break;
        case '\\': buf[n++] = '\\'; break;
        case '/': buf[n++] = '/'; break;
        case 'b': buf[n++] = '\b'; break;
        case 'f': buf[n++] = '\f'; break;
        case 'n': buf[n++] = '\n'; break;
        case 'r': buf[n++] = '\r'; break;
        case 't': buf[n++] = '\t'; break;
        case 'u': {
            int hi = q - ps->p >= 4 ? st_hex4(ps->p) : -1;
            if (hi < 0) {
                bt_free(buf);
                return st_syntax(ps, "bad \\u escape");
            }
            ps->p += 4;
            uint32_t cp = (uint32_t)hi;
            if (hi >= 0xD800 && hi <= 0xDBFF) {
                /* A high surrogate must be followed by an escaped low one. */
                int lo = q - ps->p >= 6 && ps->p[0] == '\\' && ps->p[1] == 'u'
                             ? st_hex4(ps->p + 2) : -1;
                if (lo < 0xDC00 || lo > 0xDFFF) {
                    bt_free(buf);
                    return st_syntax(ps, "unpaired surrogate in \\u escape");
                }
                ps->p += 6;
                cp = 0x10000 + (((uint32_t)hi - 0xD800) << 10) + ((uint32_t)lo - 0xDC00);
            } else if (hi >= 0xDC00 && hi <= 0xDFFF) {
                bt_free(buf);
                return st_syntax(ps, "unpaired surrogate in \\u escape");
            } else if (hi == 0) {
                bt_free(buf);
                return st_bad(ps, "header string contains \\u0000, which names and metadata cannot hold");
            }
            n += (size_t)bt_utf8_encode(cp, buf + n);
            break;
        }
        default:
            ps->p -= 1;
            bt_free(buf);
            return st_syntax(ps, "bad escape in string");
        }
    }
    ps->p = q + 1;
    buf[n] = '\0';
    if (!bt_utf8_valid(buf, n)) {
        bt_free(buf);
        return st_bad(ps, "header string is not valid UTF-8");
    }
    *out = buf;
    return true;
}

/* An integer with no fraction or exponent: *neg is set for a leading minus. */
static bool st_integer(st_parser *ps, uint64_t *v, bool *neg)
{
    st_ws(ps);
    *v = 0;
    *neg = ps->p < ps->end && *ps->p == '-';
    if (*neg)
        ps->p++;
    const char *digits = ps->p;
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
        unsigned d = (unsigned)(*ps->p - '0');
        if (*v > (UINT64_MAX - d) / 10)
            return st_bad(ps, "integer too large at header byte %td", ps->p - ps->begin);
        *v = *v * 10 + d;
        ps->p++;
    }
    if (ps->p == digits)
        return st_syntax(ps, "expected an integer");
    if (ps->p - digits > 1 && *digits == '0')
        return st_syntax(ps, "leading zero in number");
    if (ps->p < ps->end && (*ps->p == '.' || *ps->p == 'e' || *ps->p == 'E'))
        return st_bad(ps, "expected an integer, found a fraction at header byte %td",
                      ps->p - ps->begin);
    return true;
}

static bool st_skip_number(st_parser *ps)
{
    const char *p = ps->p, *e = ps->end;
    if (p < e && *p == '-')
        p++;
    if (p < e && *p == '0')
        p++;
    else if (p < e && *p >= '1' && *p <= '9')
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    else
        return st_syntax(ps, "bad number");
    if (p < e && *p == '.') {
        const char *d = ++p;
        while (p < e && *p >= '0' && *p <= '9')
            p++;
        if (p == d)
            return st_syntax(ps, "bad number");
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < e && (*p == '+' || *p == '-'))
            p++;
        const char *d = p;
        while (p < e && *p >= '0' && *p <= '9')
            p++;
        if (p == d)
            return st_syntax(ps, "bad number");
    }
    ps->p = p;
    return true;
}

static bool st_skip_value(st_parser *ps, int depth)
{
    if (depth > ST_MAX_DEPTH)
        return st_syntax(ps, "nesting too deep");
    st_ws(ps);
    if (ps->p >= ps->end)
        return st_syntax(ps, "unexpected end");
    char c = *ps->p;
    if (c == '"') {
        char *s;
        if (!st_string(ps, &s))
            return false;
        bt_free(s);
        return true;
    }
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        ps->p++;
        if (st_eat(ps, close))
            return true;
        do {
            if (c == '{') {
                char *k;
                if (!st_string(ps, &k))
                    return false;
                bt_free(k);
                if (!st_eat(ps, ':'))
                    return st_syntax(ps, "expected ':'");
            }
            if (!st_skip_value(ps, depth + 1))
                return false;
        } while (st_eat(ps, ','));
        if (!st_eat(ps, close))
            return st_syntax(ps, c == '{' ? "expected ',' or '}'" : "expected ',' or ']'");
        return true;
    }
    static const char *const words[] = {"true", "false", "null"};
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(words[i]);
        if ((size_t)(ps->end - ps->p) >= n && memcmp(ps->p, words[i], n) == 0) {
            ps->p += n;
            return true;
        }
    }
    return st_skip_number(ps);
}

/* ---- reading ------------------------------------------------------------------ */

static bool st_parse_meta(st_parser *ps, bt_st_file *f)
{
    st_ws(ps);
    if ((size_t)(ps->end - ps->p) >= 4 && memcmp(ps->p, "null", 4) == 0) {
        ps->p += 4;
        return true;
    }
    if (!st_eat(ps, '{'))
        return st_bad(ps, "__metadata__ is not a JSON object");
    if (st_eat(ps, '}'))
        return true;
    do {
        char *k, *v = NULL;
        if (!st_string(ps, &k))
            return false;
        bool ok = st_eat(ps, ':') || st_syntax(ps, "expected ':'");
        if (ok) {
            st_ws(ps);
            ok = (ps->p < ps->end && *ps->p == '"')
                     ? st_string(ps, &v)
                     : st_bad(ps, "metadata value for key '%.80s' is not a string", k);
        }
        if (ok && bt_st_meta(f, k))
            ok = st_bad(ps, "duplicate metadata key '%.80s'", k);
        if (ok) {
            bt_status s = bt_st_set_meta(f, k, v);
            ok = s == BT_OK || (s == BT_ERR_NOMEM ? st_nomem(ps) : st_bad(ps, "bad metadata"));
        }
        bt_free(k);
        bt_free(v);
        if (!ok)
            return false;
    } while (st_eat(ps, ','));
    return st_eat(ps, '}') || st_syntax(ps, "expected ',' or '}' in __metadata__");
}

/* Array of integers into vals[max]; *n gets the count. what names it in messages. */
static bool st_int_array(st_parser *ps, const char *name, const char *what, uint64_t *vals,
                         int max, int *n)
{
    *n = 0;
    if (!st_eat(ps, '['))
        return st_bad(ps, "tensor '%.80s': %s is not an array", name, what);
    if (st_eat(ps, ']'))
        return true;
    do {
        uint64_t v;
        bool neg;
        st_ws(ps);
        if (ps->p < ps->end && (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9'))) {
            if (!st_integer(ps, &v, &neg))
                return false;
        } else {
            return st_bad(ps, "tensor '%.80s': %s holds something other than integers", name, what);
        }
        if (neg && v != 0)
            return st_bad(ps, "tensor '%.80s': %s has a negative value", name, what);
        if (*n == max)
            return st_bad(ps, "tensor '%.80s': %s has more than %d entries", name, what, max);
        vals[(*n)++] = v;
    } while (st_eat(ps, ','));
    return st_eat(ps, ']') || st_syntax(ps, "expected ',' or ']'");
}

/* Takes ownership of name. */
static bool st_parse_tensor(st_parser *ps, bt_st_file *f, char *name)
{
    st_entry *e;
    HASH_FIND(hh, f->by_name, name, strlen(name), e);
    if (e) {
        st_bad(ps, "duplicate tensor name '%.80s'", name);
        bt_free(name);
        return false;
    }
    e = bt_calloc(1, sizeof *e);
    if (!e) {
        bt_free(name);
        return st_nomem(ps);
    }
    e->t.name = name;
    if (st_insert(f, e) != BT_OK) { /* from here on the file owns e */
        bt_free(name);
        bt_free(e);
        return st_nomem(ps);
    }

    if (!st_eat(ps, '{'))
        return st_bad(ps, "tensor '%.80s' is not an object with dtype, shape and data_offsets", name);
    bool have_dtype = false, have_shape = false, have_offsets = false;
    uint64_t shape[BT_ST_MAX_DIMS], offs[2];
    int nshape = 0, noffs = 0;
    if (!st_eat(ps, '}')) {
        do {
            char *k;
            if (!st_string(ps, &k))
                return false;
            bool ok = st_eat(ps, ':') || st_syntax(ps, "expected ':'");
            bool *seen = strcmp(k, "dtype") == 0          ? &have_dtype
                         : strcmp(k, "shape") == 0        ? &have_shape
                         : strcmp(k, "data_offsets") == 0 ? &have_offsets : NULL;
            if (ok && seen && *seen)
                ok = st_bad(ps, "tensor '%.80s': duplicate key '%s'", name, k);
            if (ok && seen == &have_dtype) {
                char *dt = NULL;
                st_ws(ps);
                ok = (ps->p < ps->end && *ps->p == '"') ? st_string(ps, &dt)
                                                         : st_bad(ps, "tensor '%.80s': dtype is not a string", name);
                int i = 0;
                while (ok && i < BT_ST_DTYPE_COUNT && strcmp(dt, st_dtypes[i].name) != 0)
                    i++;
                if (ok && i == BT_ST_DTYPE_COUNT)
                    ok = st_bad(ps, "tensor '%.80s': unknown dtype '%.20s' (supported: F32, F64, I32, I64, U8)",
                                name, dt);
                if (ok)
                    e->t.dtype = (bt_st_dtype)i;
                bt_free(dt);
            } else if (ok && seen == &have_shape) {
                ok = st_int_array(ps, name, "shape", shape, BT_ST_MAX_DIMS, &nshape);
            } else if (ok && seen == &have_offsets) {
                ok = st_int_array(ps, name, "data_offsets", offs, 2, &noffs);
                if (ok && noffs != 2)
                    ok = st_bad(ps, "tensor '%.80s': data_offsets must be [begin, end]", name);
            } else if (ok) {
                ok = st_skip_value(ps, 1); /* unknown keys: room for future fields */
            }
            if (ok && seen)
                *seen = true;
            bt_free(k);
            if (!ok)
                return false;
        } while (st_eat(ps, ','));
        if (!st_eat(ps, '}'))
            return st_syntax(ps, "expected ',' or '}'");
    }
    if (!have_dtype || !have_shape || !have_offsets)
        return st_bad(ps, "tensor '%.80s' has no %s", name,
                      !have_dtype ? "dtype" : !have_shape ? "shape" : "data_offsets");

    e->t.ndim = nshape;
    for (int i = 0; i < nshape; i++) {
        if (shape[i] > INT64_MAX)
            return st_bad(ps, "tensor '%.80s': shape dimension too large", name);
        e->t.shape[i] = (int64_t)shape[i];
    }
    size_t elsize = st_dtypes[e->t.dtype].size;
    if (!st_checked_count(nshape, e->t.shape, elsize, &e->t.count))
        return st_bad(ps, "tensor '%.80s': shape product overflows", name);
    e->begin = offs[0];
    e->end = offs[1];
    uint64_t need = (uint64_t)e->t.count * elsize;
    if (e->end < e->begin || e->end - e->begin != need)
        return st_bad(ps,
                      "tensor '%.80s': data_offsets [%" PRIu64 ", %" PRIu64 "] do not match "
                      "%s x %zu elements = %" PRIu64 " bytes",
                      name, e->begin, e->end, st_dtypes[e->t.dtype].name, e->t.count, need);
    return true;
}

static bool st_parse_header(st_parser *ps, bt_st_file *f)
{
    st_ws(ps);
    if (ps->p >= ps->end || *ps->p != '{')
        return st_bad(ps, "header is not a JSON object");
    ps->p++;
    bool seen_meta = false;
    if (!st_eat(ps, '}')) {
        do {
            char *key;
            if (!st_string(ps, &key))
                return false;
            if (!st_eat(ps, ':')) {
                bt_free(key);
                return st_syntax(ps, "expected ':'");
            }
            bool ok;
            if (strcmp(key, "__metadata__") == 0) {
                bt_free(key);
                ok = !seen_meta ? st_parse_meta(ps, f) : st_bad(ps, "duplicate __metadata__");
                seen_meta = true;
            } else {
                ok = st_parse_tensor(ps, f, key);
            }
            if (!ok)
                return false;
        } while (st_eat(ps, ','));
        if (!st_eat(ps, '}'))
            return st_syntax(ps, "expected ',' or '}'");
    }
    st_ws(ps);
    if (ps->p != ps->end)
        return st_syntax(ps, "unexpected data after the header object");
    return true;
}

static int st_cmp_offset(const void *a, const void *b)
{
    const st_entry *x = *(const st_entry *const *)a, *y = *(const st_entry *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return (x->order > y->order) - (x->order < y->order);
}

/* Sorts tensors into file order and checks they tile the data section exactly. */
static bt_status st_check_layout(bt_st_file *f, uint64_t data_len, const char *path, char *err,
                                 size_t errlen)
{
    uint64_t max_end = 0;
    for (int i = 0; i < f->n; i++)
        if (f->items[i]->end > max_end)
            max_end = f->items[i]->end;
    if (max_end > data_len)
        return bt_error(err, errlen, BT_ERR_FORMAT,
                       "%s: truncated: expected %" PRIu64 " data bytes, file has %" PRIu64, path,
                       max_end, data_len);
    if (f->n > 1)
        qsort(f->items, (size_t)f->n, sizeof *f->items, st_cmp_offset);
    uint64_t at = 0;
    for (int i = 0; i < f->n; i++) {
        st_entry *e = f->items[i];
        e->order = i;
        if (e->begin > at)
            return bt_error(err, errlen, BT_ERR_FORMAT,
                           "%s: hole in the data: no tensor covers bytes [%" PRIu64 ", %" PRIu64
                           ") before '%.80s'", path, at, e->begin, e->t.name);
        if (e->begin < at)
            return bt_error(err, errlen, BT_ERR_FORMAT,
                           "%s: tensors '%.80s' and '%.80s' overlap in the data section", path,
                           f->items[i - 1]->t.name, e->t.name);
        at = e->end;
    }
    if (at != data_len)
        return bt_error(err, errlen, BT_ERR_FORMAT,
                       "%s: hole in the data: %" PRIu64 " bytes after the last tensor are not "
                       "covered (data section %" PRIu64 " bytes)", path, data_len - at, data_len);
    return BT_OK;
}

static bt_status st_read_fp(FILE *fp, const char *path, bt_st_file *f, char *err, size_t errlen)
{
    struct stat sb;
    if (fstat(fileno(fp), &sb) != 0)
        return bt_error(err, errlen, BT_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return bt_error(err, errlen, BT_ERR_IO, "%s: not a regular file", path);
    uint64_t size = (uint64_t)sb.st_size;
    if (size < 8)
        return bt_error(err, errlen, BT_ERR_FORMAT,
                       "%s: file is %" PRIu64 " bytes, shorter than the 8-byte header length: "
                       "not a safetensors file", path, size);
    unsigned char len8[8];
    if (fread(len8, 1, 8, fp) != 8)
        return bt_error(err, errlen, BT_ERR_IO, "%s: cannot read: %s", path,
                       ferror(fp) ? strerror(errno) : "unexpected end of file");
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | len8[i];
    if (hlen > ST_MAX_HEADER)
        return bt_error(err, errlen, BT_ERR_FORMAT,
                       "%s: header length %" PRIu64 " is absurd (limit %llu bytes): not a "
                       "safetensors file?", path, hlen, ST_MAX_HEADER);
    if (hlen > size - 8)
        return bt_error(err, errlen, BT_ERR_FORMAT,
                       "%s: header length %" PRIu64 " is larger than the file (%" PRIu64
                       " bytes): truncated or not a safetensors file", path, hlen, size);

    char *hdr = bt_malloc(hlen ? (size_t)hlen : 1);
    if (!hdr)
        return bt_error(err, errlen, BT_ERR_NOMEM, "%s: out of memory for a %" PRIu64 "-byte header",
                       path, hlen);
    if (fread(hdr, 1, (size_t)hlen, fp) != hlen) {
        bt_free(hdr);
        return bt_error(err, errlen, BT_ERR_IO, "%s: cannot read the header: %s", path,
                       ferror(fp) ? strerror(errno) : "file shrank while reading");
    }
    st_parser ps = {.begin = hdr, .p = hdr, .end = hdr + hlen, .status = BT_ERR_FORMAT};
    bool ok = st_parse_header(&ps, f);
    bt_free(hdr);
    if (!ok)
        return bt_error(err, errlen, ps.status, "%s: %s", path, ps.msg);

    bt_status s = st_check_layout(f, size - 8 - hlen, path, err, errlen);
    if (s != BT_OK)
        return s;
    /* Tensors now tile the data section in order: read them front to back. */
    for (int i = 0; i < f->n; i++) {
        bt_st_tensor *t = &f->items[i]->t;
        size_t bytes = t->count * st_dtypes[t->dtype].size;
        t->data = bt_malloc(bytes ? bytes : 1);
        if (!t->data)
            return bt_error(err, errlen, BT_ERR_NOMEM, "%s: out of memory for tensor '%.80s' (%zu bytes)",
                           path, t->name, bytes);
        if (fread(t->data, 1, bytes, fp) != bytes)
            return bt_error(err, errlen, BT_ERR_IO, "%s: cannot read tensor '%.80s': %s", path,
                           t->name, ferror(fp) ? strerror(errno) : "file shrank while reading");
    }
    return BT_OK;
}

bt_status bt_st_read(const char *path, bt_st_file **out, char *err, size_t errlen)
{
    if (!out || !path)
        return bt_error(err, errlen, BT_ERR_ARG, "safetensors: bt_st_read needs a path and an out pointer");
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return bt_error(err, errlen, BT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    bt_st_file *f = bt_st_new();
    bt_status s = f ? st_read_fp(fp, path, f, err, errlen)
                    : bt_error(err, errlen, BT_ERR_NOMEM, "%s: out of memory", path);
    fclose(fp);
    if (s != BT_OK) {
        bt_st_free(f);
        return s;
    }
    *out = f;
    return BT_OK;
}
