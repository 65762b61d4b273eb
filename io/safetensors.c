/* safetensors.c: the safetensors format, read and written with jansson.
 *
 * Reading parses the JSON header with jansson (duplicate keys refused, 64-bit
 * integers for offsets) and checks every field and the data layout before
 * allocating tensor data, so a hostile or truncated file costs no more than a
 * small multiple of its header. Writing builds the header with jansson and
 * replaces the target atomically (atomic.h).
 *
 * Checksums: every file written here carries two CRC-32s (zlib's crc32, the
 * IEEE polynomial) in its metadata: checksum_data over the data section and
 * checksum_header over the first 8 + N bytes (length and header, with its own
 * eight digits counted as "00000000"). A reader verifies them when present.
 * CRC-32 detects every error of one bit, of two bits and of any burst up to
 * 32 bits in files up to 512 MB, and misses a random corruption with
 * probability 2^-32; zlib computes it at several GB/s and Python's
 * zlib.crc32 (or any zip tool's code) checks it with nothing to install.
 * It guards against accidents (disks, copies, editors), not against someone
 * who recomputes it.
 */
#include "atomic.h"
#include "bt_assert.h"
#include "safetensors.h"
#include "utf8.h"

#include <errno.h>
#include <jansson.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

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
    bool checksummed;  /* read with both checksums, and both matched */
};

#define CK_DATA "checksum_data"
#define CK_HEADER "checksum_header"
#define CK_PREFIX "crc32:"
/* The header's own checksum while it is computed: eight digits, patched after. */
#define CK_PLACEHOLDER "\"" CK_HEADER "\":\"" CK_PREFIX "00000000\""

/* crc32 over any length (zlib's takes a uInt at a time). */
static uLong crc_add(uLong crc, const void *data, size_t n)
{
    const Bytef *p = data;
    while (n > 0) {
        uInt chunk = n > 0x40000000u ? 0x40000000u : (uInt)n;
        crc = crc32(crc, p, chunk);
        p += chunk;
        n -= chunk;
    }
    return crc;
}

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

/* Sets key to a new value; false (and value released) when out of memory. */
static bool st_set(json_t *obj, const char *key, json_t *value)
{
    return value && json_object_set_new(obj, key, value) == 0;
}

/* {"__metadata__":{...},"name":{"dtype":..,"shape":[..],"data_offsets":[b,e]},...}
 * in insertion order, offsets in the order the tensors are written; the
 * metadata ends with the data checksum and the header's placeholder. NULL
 * when out of memory. */
static json_t *st_header_json(const bt_st_file *f, uLong data_crc)
{
    json_t *root = json_object();
    bool ok = root != NULL;
    json_t *meta = ok ? json_object() : NULL;
    ok = ok && st_set(root, "__metadata__", meta);
    for (st_meta *m = f->meta; ok && m; m = m->hh.next)
        if (strcmp(m->key, CK_DATA) != 0 && strcmp(m->key, CK_HEADER) != 0) /* a file read before */
            ok = st_set(meta, m->key, json_string(m->value));
    char crc[32];
    snprintf(crc, sizeof crc, CK_PREFIX "%08lx", data_crc & 0xffffffffUL);
    ok = ok && st_set(meta, CK_DATA, json_string(crc)) &&
         st_set(meta, CK_HEADER, json_string(CK_PREFIX "00000000"));
    uint64_t off = 0;
    for (int i = 0; ok && i < f->n; i++) {
        const bt_st_tensor *t = &f->items[i]->t;
        uint64_t end = off + (uint64_t)t->count * st_dtypes[t->dtype].size;
        /* Each container is attached before it is filled, so the root owns
         * everything made so far whenever a step fails. */
        json_t *entry = json_object();
        ok = st_set(root, t->name, entry) && st_set(entry, "dtype", json_string(st_dtypes[t->dtype].name));
        json_t *shape = ok ? json_array() : NULL;
        ok = ok && st_set(entry, "shape", shape);
        for (int d = 0; ok && d < t->ndim; d++)
            ok = json_array_append_new(shape, json_integer(t->shape[d])) == 0;
        /* json_int_t is 64-bit: byte offsets up to 2^63 - 1, far beyond any file. */
        json_t *offs = ok ? json_array() : NULL;
        ok = ok && st_set(entry, "data_offsets", offs) &&
             json_array_append_new(offs, json_integer((json_int_t)off)) == 0 &&
             json_array_append_new(offs, json_integer((json_int_t)end)) == 0;
        off = end;
    }
    if (!ok)
        json_decref(root);
    return ok ? root : NULL;
}

/* True when hdr[i] opens or closes a JSON string. A quote inside a string is
 * still the byte '"', written \" (after an odd run of backslashes: \\\" is an
 * escaped backslash, then an escaped quote); a structural one follows an even
 * run, none at all outside strings, or an escaped backslash at a string's end. */
static bool is_string_quote(const char *hdr, size_t i)
{
    size_t run = 0;
    while (run < i && hdr[i - 1 - run] == '\\')
        run++;
    return hdr[i] == '"' && run % 2 == 0;
}

/* The position of the one occurrence of key as a key, "key":"crc32:, in
 * hdr[0..n): the offset of its eight digits into *at; false when there is
 * none or more than one. Only a quote that opens a string can start it, so a
 * metadata key such as x"checksum_header (written "x\"checksum_header") is
 * not taken for the real one. */
static bool find_crc_digits(const char *hdr, size_t n, const char *key, size_t *at)
{
    char pat[64];
    int plen = snprintf(pat, sizeof pat, "\"%s\":\"" CK_PREFIX, key);
    int found = 0;
    for (size_t i = 0; i + (size_t)plen + 8 <= n; i++)
        if (hdr[i] == '"' && memcmp(hdr + i, pat, (size_t)plen) == 0 && is_string_quote(hdr, i)) {
            *at = i + (size_t)plen;
            found++;
        }
    return found == 1;
}

/* CRC-32 of the length prefix and the header with the header's own checksum
 * digits (at `at`) counted as "00000000". */
static uLong header_crc(const unsigned char *len8, const char *hdr, size_t n, size_t at)
{
    uLong crc = crc_add(crc32(0L, Z_NULL, 0), len8, 8);
    crc = crc_add(crc, hdr, at);
    crc = crc_add(crc, "00000000", 8);
    return crc_add(crc, hdr + at + 8, n - at - 8);
}

/* The header's own checksum into its placeholder digits. */
static void st_seal_header(char *hdr, size_t padded)
{
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    size_t at;
    bool found = find_crc_digits(hdr, padded, CK_HEADER, &at);
    BT_ASSERT(found, "safetensors: the header checksum placeholder is not in the header");
    char digits[9];
    snprintf(digits, sizeof digits, "%08lx", header_crc(len8, hdr, padded, at) & 0xffffffffUL);
    memcpy(hdr + at, digits, 8);
}

/* The padded header (8 + N a multiple of 8, so the data section is 8-aligned)
 * with both checksums into *hdr (bt_malloc'd) and *len; its message names
 * `path`. Files and buffers alike get it. */
static bt_status st_header_bytes(const bt_st_file *f, const char *path, char **hdr, size_t *len,
                                 char *err, size_t errlen)
{
    uLong data_crc = crc32(0L, Z_NULL, 0);
    for (int i = 0; i < f->n; i++)
        data_crc = crc_add(data_crc, f->items[i]->t.data,
                           f->items[i]->t.count * st_dtypes[f->items[i]->t.dtype].size);
    json_t *root = st_header_json(f, data_crc);
    size_t n = root ? json_dumpb(root, NULL, 0, JSON_COMPACT) : 0;
    size_t padded = (n + 8 + 7) / 8 * 8 - 8;
    char *h = n ? bt_malloc(padded) : NULL;
    if (h && json_dumpb(root, h, n, JSON_COMPACT) == n)
        memset(h + n, ' ', padded - n);
    else
        bt_free(h), h = NULL;
    json_decref(root);
    if (!h)
        return bt_error(err, errlen, BT_ERR_NOMEM, "%s: out of memory building the header", path);
    if (padded > ST_MAX_HEADER) {
        bt_free(h);
        return bt_error(err, errlen, BT_ERR_ARG,
                       "%s: header would be %zu bytes, over the %llu-byte limit readers accept",
                       path, padded, ST_MAX_HEADER);
    }
    st_seal_header(h, padded);
    *hdr = h;
    *len = padded;
    return BT_OK;
}

/* Where the bytes go: the atomic file, or a buffer sized in advance. */
typedef bool (*st_put_fn)(void *ctx, const void *data, size_t n);

/* The whole file, in order: header length, header, tensor data. */
static bool st_emit(const bt_st_file *f, const char *hdr, size_t hlen, st_put_fn put, void *ctx)
{
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    bool ok = put(ctx, len8, 8) && put(ctx, hdr, hlen);
    for (int i = 0; ok && i < f->n; i++) {
        const bt_st_tensor *t = &f->items[i]->t;
        ok = put(ctx, t->data, t->count * st_dtypes[t->dtype].size);
    }
    return ok;
}

static bool st_put_atomic(void *ctx, const void *data, size_t n)
{
    return bt_atomic_write(ctx, data, n);
}

bt_status bt_st_write(const bt_st_file *f, const char *path, char *err, size_t errlen)
{
    if (!f || !path || !*path)
        return bt_error(err, errlen, BT_ERR_ARG, "safetensors: bt_st_write needs a file and a path");
    char *hdr;
    size_t hlen;
    bt_status s = st_header_bytes(f, path, &hdr, &hlen, err, errlen);
    if (s != BT_OK)
        return s;
    bt_atomic_file *out;
    s = bt_atomic_open(path, &out, err, errlen);
    if (s == BT_OK) {
        st_emit(f, hdr, hlen, st_put_atomic, out); /* a failed write: commit reports it */
        s = bt_atomic_commit(out, err, errlen);
    }
    bt_free(hdr);
    return s;
}

typedef struct st_membuf {
    unsigned char *p;
    size_t used;
} st_membuf;

static bool st_put_mem(void *ctx, const void *data, size_t n)
{
    st_membuf *m = ctx;
    if (n)
        memcpy(m->p + m->used, data, n);
    m->used += n;
    return true;
}

bt_status bt_st_write_buffer(const bt_st_file *f, void **out, size_t *n, char *err, size_t errlen)
{
    if (!f || !out || !n)
        return bt_error(err, errlen, BT_ERR_ARG,
                       "safetensors: bt_st_write_buffer needs a file and out pointers");
    *out = NULL;
    *n = 0;
    char *hdr;
    size_t hlen;
    bt_status s = st_header_bytes(f, "safetensors buffer", &hdr, &hlen, err, errlen);
    if (s != BT_OK)
        return s;
    /* Every tensor fitted in memory once, so the sum only overflows if the
     * header itself is absurd; check anyway rather than wrap. */
    size_t total = 8 + hlen;
    for (int i = 0; i < f->n; i++) {
        size_t bytes = f->items[i]->t.count * st_dtypes[f->items[i]->t.dtype].size;
        total = bytes <= SIZE_MAX - total ? total + bytes : SIZE_MAX;
    }
    st_membuf m = {.p = total < SIZE_MAX ? bt_malloc(total) : NULL};
    if (!m.p) {
        bt_free(hdr);
        return bt_error(err, errlen, BT_ERR_NOMEM, "safetensors: out of memory for a %zu-byte file",
                       total);
    }
    st_emit(f, hdr, hlen, st_put_mem, &m);
    bt_free(hdr);
    *out = m.p;
    *n = m.used;
    return BT_OK;
}

/* ---- reading the header --------------------------------------------------------- */

/* The first problem found, for the message "path: msg". */
typedef struct st_problem {
    bt_status status; /* BT_ERR_FORMAT, or BT_ERR_NOMEM */
    char msg[320];
} st_problem;

__attribute__((format(printf, 2, 3)))
static bool st_bad(st_problem *pb, const char *fmt, ...)
{
    if (!pb->msg[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(pb->msg, sizeof pb->msg, fmt, ap);
        va_end(ap);
    }
    return false;
}

static bool st_nomem(st_problem *pb)
{
    pb->status = BT_ERR_NOMEM;
    return st_bad(pb, "out of memory while reading the header");
}

/* jansson's refusal, in the words of the format where we have better ones. */
static bool st_json_failed(st_problem *pb, const json_error_t *e)
{
    switch (json_error_code(e)) {
    case json_error_out_of_memory:
        return st_nomem(pb);
    case json_error_invalid_utf8:
        return st_bad(pb, "header string is not valid UTF-8 (%s)", e->text);
    case json_error_null_character:
    case json_error_null_byte_in_key:
        return st_bad(pb, "header string contains \\u0000, which names and metadata cannot hold");
    case json_error_numeric_overflow:
        return st_bad(pb, "integer too large at header byte %d (%s)", e->position, e->text);
    case json_error_stack_overflow:
        return st_bad(pb, "header is not valid JSON: nesting too deep at header byte %d", e->position);
    case json_error_end_of_input_expected:
        return st_bad(pb, "unexpected data after the header object at header byte %d", e->position);
    case json_error_duplicate_key:
        return st_bad(pb, "header has a duplicate key (%s, header byte %d)", e->text, e->position);
    default:
        return st_bad(pb, "header is not valid JSON: %s at header byte %d", e->text, e->position);
    }
}

static bool st_read_meta(st_problem *pb, bt_st_file *f, const json_t *meta)
{
    if (json_is_null(meta))
        return true;
    if (!json_is_object(meta))
        return st_bad(pb, "__metadata__ is not a JSON object");
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)meta, k, v) {
        if (!json_is_string(v))
            return st_bad(pb, "metadata value for key '%.80s' is not a string", k);
        bt_status s = bt_st_set_meta(f, k, json_string_value(v));
        if (s != BT_OK)
            return s == BT_ERR_NOMEM ? st_nomem(pb) : st_bad(pb, "bad metadata key '%.80s'", k);
    }
    return true;
}

/* An array of at most max integers >= 0 into vals; *n gets the count. what
 * names it in messages. */
static bool st_read_ints(st_problem *pb, const char *name, const char *what, const json_t *a,
                         int64_t *vals, int max, int *n)
{
    if (!json_is_array(a))
        return st_bad(pb, "tensor '%.80s': %s is not an array", name, what);
    if (json_array_size(a) > (size_t)max)
        return st_bad(pb, "tensor '%.80s': %s has more than %d entries", name, what, max);
    *n = (int)json_array_size(a);
    for (int i = 0; i < *n; i++) {
        const json_t *x = json_array_get(a, (size_t)i);
        if (json_is_real(x))
            return st_bad(pb, "tensor '%.80s': %s: expected an integer, found a fraction", name, what);
        if (!json_is_integer(x))
            return st_bad(pb, "tensor '%.80s': %s holds something other than integers", name, what);
        vals[i] = json_integer_value(x);
        if (vals[i] < 0)
            return st_bad(pb, "tensor '%.80s': %s has a negative value", name, what);
    }
    return true;
}

/* dtype, shape and data_offsets of one entry into e; other keys are room for
 * future fields and are skipped. */
static bool st_read_entry(st_problem *pb, st_entry *e, const json_t *obj)
{
    const char *name = e->t.name;
    if (!json_is_object(obj))
        return st_bad(pb, "tensor '%.80s' is not an object with dtype, shape and data_offsets", name);
    const json_t *dt = json_object_get(obj, "dtype"), *shape = json_object_get(obj, "shape"),
                 *offs = json_object_get(obj, "data_offsets");
    if (!dt || !shape || !offs)
        return st_bad(pb, "tensor '%.80s' has no %s", name,
                      !dt ? "dtype" : !shape ? "shape" : "data_offsets");
    if (!json_is_string(dt))
        return st_bad(pb, "tensor '%.80s': dtype is not a string", name);
    int i = 0;
    while (i < BT_ST_DTYPE_COUNT && strcmp(json_string_value(dt), st_dtypes[i].name) != 0)
        i++;
    if (i == BT_ST_DTYPE_COUNT)
        return st_bad(pb, "tensor '%.80s': unknown dtype '%.20s' (supported: F32, F64, I32, I64, U8)",
                      name, json_string_value(dt));
    e->t.dtype = (bt_st_dtype)i;
    int64_t range[2];
    int noffs;
    if (!st_read_ints(pb, name, "shape", shape, e->t.shape, BT_ST_MAX_DIMS, &e->t.ndim) ||
        !st_read_ints(pb, name, "data_offsets", offs, range, 2, &noffs))
        return false;
    if (noffs != 2)
        return st_bad(pb, "tensor '%.80s': data_offsets must be [begin, end]", name);
    size_t elsize = st_dtypes[e->t.dtype].size;
    if (!st_checked_count(e->t.ndim, e->t.shape, elsize, &e->t.count))
        return st_bad(pb, "tensor '%.80s': shape product overflows", name);
    e->begin = (uint64_t)range[0];
    e->end = (uint64_t)range[1];
    uint64_t need = (uint64_t)e->t.count * elsize;
    if (e->end < e->begin || e->end - e->begin != need)
        return st_bad(pb,
                      "tensor '%.80s': data_offsets [%" PRIu64 ", %" PRIu64 "] do not match "
                      "%s x %zu elements = %" PRIu64 " bytes",
                      name, e->begin, e->end, st_dtypes[e->t.dtype].name, e->t.count, need);
    return true;
}

/* One tensor entry, added to f in header order. */
static bool st_read_tensor(st_problem *pb, bt_st_file *f, const char *name, const json_t *obj)
{
    st_entry *e = bt_calloc(1, sizeof *e);
    char *nm = st_strdup(name);
    if (!e || !nm) {
        bt_free(e);
        bt_free(nm);
        return st_nomem(pb);
    }
    e->t.name = nm;
    if (st_insert(f, e) != BT_OK) {
        bt_free(nm);
        bt_free(e);
        return st_nomem(pb);
    }
    return st_read_entry(pb, e, obj); /* from here on the file owns e */
}

/* The header: parsed by jansson (duplicate keys refused), then every field
 * checked. The document jansson builds is a small multiple of the header,
 * which is at most ST_MAX_HEADER and never larger than the file. */
static bool st_read_header(st_problem *pb, bt_st_file *f, const char *hdr, size_t n)
{
    size_t ws = 0;
    while (ws < n && (hdr[ws] == ' ' || hdr[ws] == '\t' || hdr[ws] == '\n' || hdr[ws] == '\r'))
        ws++;
    if (ws == n)
        return st_bad(pb, "header is not a JSON object (it is empty)");
    json_error_t e;
    json_t *root = json_loadb(hdr, n, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &e);
    if (!root)
        return st_json_failed(pb, &e);
    bool ok = json_is_object(root) || st_bad(pb, "header is not a JSON object");
    const char *key;
    json_t *value;
    if (ok)
        json_object_foreach(root, key, value) {
            ok = strcmp(key, "__metadata__") == 0 ? st_read_meta(pb, f, value)
                                                  : st_read_tensor(pb, f, key, value);
            if (!ok)
                break;
        }
    json_decref(root);
    return ok;
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

/* The eight hex digits of a checksum value "crc32:xxxxxxxx" into *crc. */
static bool parse_crc(const char *v, uLong *crc)
{
    size_t n = strlen(CK_PREFIX);
    if (!v || strncmp(v, CK_PREFIX, n) != 0 || strlen(v + n) != 8 ||
        strspn(v + n, "0123456789abcdef") != 8)
        return false;
    *crc = strtoul(v + n, NULL, 16);
    return true;
}

/* Both checksums or neither; the header's checked against the raw bytes. */
static bt_status check_header_crc(bt_st_file *f, const unsigned char *len8, const char *hdr,
                                  size_t n, const char *path, char *err, size_t errlen)
{
    const char *vh = bt_st_meta(f, CK_HEADER), *vd = bt_st_meta(f, CK_DATA);
    if (!vh && !vd)
        return BT_OK; /* not written by bptt, or before checksums */
    uLong stored, unused;
    size_t at;
    if (!vh || !vd || !parse_crc(vh, &stored) || !parse_crc(vd, &unused) ||
        !find_crc_digits(hdr, n, CK_HEADER, &at))
        return bt_error(err, errlen, BT_ERR_FORMAT, "%s: its checksums (%s, %s) are damaged or "
                        "incomplete: the file was damaged or changed after it was written", path,
                        vh ? vh : "no " CK_HEADER, vd ? vd : "no " CK_DATA);
    uLong got = header_crc(len8, hdr, n, at) & 0xffffffffUL;
    if (got != stored)
        return bt_error(err, errlen, BT_ERR_FORMAT, "%s: the header does not match its checksum "
                        "(crc32 %08lx stored, %08lx computed): the file was damaged or changed "
                        "after it was written", path, stored, got);
    return BT_OK;
}

static bt_status check_data_crc(bt_st_file *f, uLong crc, const char *path, char *err,
                                size_t errlen)
{
    uLong stored;
    if (!parse_crc(bt_st_meta(f, CK_DATA), &stored))
        return BT_OK; /* no checksums (check_header_crc saw to a half-present pair) */
    crc &= 0xffffffffUL;
    if (crc != stored)
        return bt_error(err, errlen, BT_ERR_FORMAT, "%s: the tensor data does not match its "
                        "checksum (crc32 %08lx stored, %08lx computed): the file was damaged "
                        "or changed after it was written", path, stored, crc);
    f->checksummed = true;
    return BT_OK;
}

bool bt_st_checksummed(const bt_st_file *f)
{
    return f && f->checksummed;
}

/* Where the bytes come from: a file (read front to back, never all at once,
 * so tensor data is copied once) or a buffer already in memory. */
typedef struct st_reader {
    FILE *fp;                  /* NULL: read from buf */
    const unsigned char *buf;
    uint64_t size, pos;        /* size of the whole input */
} st_reader;

/* Exactly n bytes into dst; false at the end of the input or on a read error. */
static bool st_take(st_reader *r, void *dst, size_t n)
{
    if (r->fp)
        return fread(dst, 1, n, r->fp) == n;
    if (n > r->size - r->pos)
        return false;
    memcpy(dst, r->buf + r->pos, n);
    r->pos += n;
    return true;
}

static const char *st_take_error(const st_reader *r, const char *eof)
{
    return r->fp && ferror(r->fp) ? strerror(errno) : eof;
}

static bt_status st_read_all(st_reader *r, const char *path, bt_st_file *f, char *err,
                             size_t errlen)
{
    uint64_t size = r->size;
    if (size < 8)
        return bt_error(err, errlen, BT_ERR_FORMAT,
                       "%s: file is %" PRIu64 " bytes, shorter than the 8-byte header length: "
                       "not a safetensors file", path, size);
    unsigned char len8[8];
    if (!st_take(r, len8, 8))
        return bt_error(err, errlen, BT_ERR_IO, "%s: cannot read: %s", path,
                       st_take_error(r, "unexpected end of file"));
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
    if (!st_take(r, hdr, (size_t)hlen)) {
        bt_free(hdr);
        return bt_error(err, errlen, BT_ERR_IO, "%s: cannot read the header: %s", path,
                       st_take_error(r, "file shrank while reading"));
    }
    st_problem pb = {.status = BT_ERR_FORMAT};
    bool ok = st_read_header(&pb, f, hdr, (size_t)hlen);
    bt_status s = ok ? check_header_crc(f, len8, hdr, (size_t)hlen, path, err, errlen)
                     : bt_error(err, errlen, pb.status, "%s: %s", path, pb.msg);
    bt_free(hdr);
    if (s == BT_OK)
        s = st_check_layout(f, size - 8 - hlen, path, err, errlen);
    if (s != BT_OK)
        return s;
    /* Tensors now tile the data section in order: read them front to back. */
    uLong crc = crc32(0L, Z_NULL, 0);
    for (int i = 0; i < f->n; i++) {
        bt_st_tensor *t = &f->items[i]->t;
        size_t bytes = t->count * st_dtypes[t->dtype].size;
        t->data = bt_malloc(bytes ? bytes : 1);
        if (!t->data)
            return bt_error(err, errlen, BT_ERR_NOMEM, "%s: out of memory for tensor '%.80s' (%zu bytes)",
                           path, t->name, bytes);
        if (!st_take(r, t->data, bytes))
            return bt_error(err, errlen, BT_ERR_IO, "%s: cannot read tensor '%.80s': %s", path,
                           t->name, st_take_error(r, "file shrank while reading"));
        crc = crc_add(crc, t->data, bytes);
    }
    return check_data_crc(f, crc, path, err, errlen);
}

/* A new file from r; *out is NULL on failure. */
static bt_status st_read_new(st_reader *r, const char *path, bt_st_file **out, char *err,
                             size_t errlen)
{
    bt_st_file *f = bt_st_new();
    bt_status s = f ? st_read_all(r, path, f, err, errlen)
                    : bt_error(err, errlen, BT_ERR_NOMEM, "%s: out of memory", path);
    if (s != BT_OK) {
        bt_st_free(f);
        f = NULL;
    }
    *out = f;
    return s;
}

bt_status bt_st_read(const char *path, bt_st_file **out, char *err, size_t errlen)
{
    if (!out || !path)
        return bt_error(err, errlen, BT_ERR_ARG, "safetensors: bt_st_read needs a path and an out pointer");
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return bt_error(err, errlen, BT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    bt_status s;
    if (fstat(fileno(fp), &sb) != 0)
        s = bt_error(err, errlen, BT_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    else if (!S_ISREG(sb.st_mode))
        s = bt_error(err, errlen, BT_ERR_IO, "%s: not a regular file", path);
    else {
        st_reader r = {.fp = fp, .size = (uint64_t)sb.st_size};
        s = st_read_new(&r, path, out, err, errlen);
    }
    fclose(fp);
    return s;
}

bt_status bt_st_read_buffer(const void *data, size_t n, const char *name, bt_st_file **out,
                            char *err, size_t errlen)
{
    if (!out || (!data && n > 0))
        return bt_error(err, errlen, BT_ERR_ARG,
                       "safetensors: bt_st_read_buffer needs the bytes and an out pointer");
    *out = NULL;
    st_reader r = {.buf = data, .size = n};
    return st_read_new(&r, name ? name : "(buffer)", out, err, errlen);
}
