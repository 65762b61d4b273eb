/* fuzz_safetensors.c: the safetensors reader on arbitrary bytes, and a
 * write-read round trip of whatever it accepts.
 *
 * Invariants beyond "no crash": a refusal carries a message; an accepted file
 * agrees with an independent parse of its header (jansson, here): every
 * tensor with its dtype, shape and exactly the bytes its offsets name, every
 * metadata entry, tensors in data order; writing it back and reading that
 * gives the same tensors and metadata (checksums verified; the header's own
 * checksum is the writer's), and writing it again gives the same bytes (the
 * writer's output is a fixed point). An input with checksums is accepted only
 * when they match, so mutations of such seeds mostly test the check itself;
 * the seeds without checksums (the fixtures, Python-written files) let
 * mutations reach the parser. */
#include <jansson.h>
#include <math.h>

#include "fuzz.h"
#include "safetensors.h"

/* The header of an accepted file, parsed here without the library. */
static json_t *header_of(const uint8_t *data, size_t size, uint64_t *hlen)
{
    FUZZ_CHECK(size >= 8, "accepted a %zu-byte file", size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | data[i];
    FUZZ_CHECK(n <= size - 8, "accepted a header length %llu beyond the file (%zu bytes)",
               (unsigned long long)n, size);
    json_error_t e;
    json_t *root = json_loadb((const char *)data + 8, (size_t)n, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &e);
    FUZZ_CHECK(root && json_is_object(root), "accepted a header jansson refuses: %s", e.text);
    *hlen = n;
    return root;
}

static void check_tensor(const bt_st_tensor *t, const json_t *entry, const uint8_t *section,
                         uint64_t *begin)
{
    const char *dt = json_string_value(json_object_get(entry, "dtype"));
    FUZZ_CHECK(dt && strcmp(dt, bt_st_dtype_name(t->dtype)) == 0, "tensor '%s': dtype %s read as %s",
               t->name, dt ? dt : "?", bt_st_dtype_name(t->dtype));
    const json_t *shape = json_object_get(entry, "shape");
    FUZZ_CHECK(json_array_size(shape) == (size_t)t->ndim, "tensor '%s': ndim", t->name);
    size_t count = 1;
    for (int d = 0; d < t->ndim; d++) {
        json_int_t v = json_integer_value(json_array_get(shape, (size_t)d));
        FUZZ_CHECK(v == t->shape[d], "tensor '%s': dim %d is %lld, read as %lld", t->name, d,
                   (long long)v, (long long)t->shape[d]);
        count *= (size_t)v;
    }
    FUZZ_CHECK(count == t->count, "tensor '%s': count %zu, shape says %zu", t->name, t->count, count);
    const json_t *offs = json_object_get(entry, "data_offsets");
    uint64_t b = (uint64_t)json_integer_value(json_array_get(offs, 0));
    uint64_t e = (uint64_t)json_integer_value(json_array_get(offs, 1));
    FUZZ_CHECK(e - b == t->count * bt_st_dtype_size(t->dtype), "tensor '%s': offsets", t->name);
    FUZZ_CHECK(t->data && (t->count == 0 || memcmp(t->data, section + b, e - b) == 0),
               "tensor '%s': data differs from the file's bytes [%llu, %llu)", t->name,
               (unsigned long long)b, (unsigned long long)e);
    *begin = b;
}

/* f against the header it was read from. */
static void check_against_header(const bt_st_file *f, const uint8_t *data, size_t size)
{
    uint64_t hlen;
    json_t *root = header_of(data, size, &hlen);
    const char *key;
    json_t *value;
    int tensors = 0;
    json_object_foreach(root, key, value) {
        if (strcmp(key, "__metadata__") == 0) {
            const char *k;
            json_t *v;
            json_object_foreach(value, k, v) {
                const char *got = bt_st_meta(f, k);
                FUZZ_CHECK(got && strcmp(got, json_string_value(v)) == 0,
                           "metadata '%s' read as %s", k, got ? got : "(absent)");
            }
            continue;
        }
        tensors++;
        const bt_st_tensor *t = bt_st_find(f, key);
        FUZZ_CHECK(t, "tensor '%s' of the header is missing", key);
        uint64_t b;
        check_tensor(t, value, data + 8 + hlen, &b);
    }
    FUZZ_CHECK(tensors == bt_st_count(f), "%d tensors in the header, %d read", tensors,
               bt_st_count(f));
    /* bt_st_at follows the data section: offsets never decrease. */
    uint64_t last = 0;
    for (int i = 0; i < bt_st_count(f); i++) {
        const bt_st_tensor *t = bt_st_at(f, i);
        const json_t *offs = json_object_get(json_object_get(root, t->name), "data_offsets");
        uint64_t b = (uint64_t)json_integer_value(json_array_get(offs, 0));
        FUZZ_CHECK(b >= last, "tensor %d ('%s') is out of data order", i, t->name);
        last = b;
    }
    json_decref(root);
}

/* a and b hold the same tensors in the same order, and b has every metadata
 * entry of the original header (data, size). */
static void check_same(const bt_st_file *a, const bt_st_file *b, const uint8_t *data, size_t size)
{
    FUZZ_CHECK(bt_st_count(a) == bt_st_count(b), "round trip: %d tensors became %d", bt_st_count(a),
               bt_st_count(b));
    for (int i = 0; i < bt_st_count(a); i++) {
        const bt_st_tensor *x = bt_st_at(a, i), *y = bt_st_at(b, i);
        FUZZ_CHECK(strcmp(x->name, y->name) == 0 && x->dtype == y->dtype && x->ndim == y->ndim &&
                   x->count == y->count, "round trip: tensor %d ('%s') changed", i, x->name);
        for (int d = 0; d < x->ndim; d++)
            FUZZ_CHECK(x->shape[d] == y->shape[d], "round trip: shape of '%s'", x->name);
        FUZZ_CHECK(memcmp(x->data, y->data, x->count * bt_st_dtype_size(x->dtype)) == 0,
                   "round trip: data of '%s'", x->name);
    }
    uint64_t hlen;
    json_t *root = header_of(data, size, &hlen);
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(root, "__metadata__"), k, v) {
        if (strcmp(k, "checksum_header") == 0)
            continue; /* the writer's own header has its own checksum */
        const char *got = bt_st_meta(b, k);
        FUZZ_CHECK(got && strcmp(got, json_string_value(v)) == 0,
                   "round trip: metadata '%s' became %s", k, got ? got : "(absent)");
    }
    json_decref(root);
}

/* Conversion to bt_real: every element, exactly where the dtype allows. */
static void check_get_real(const bt_st_tensor *t)
{
    bt_real *dst = malloc(sizeof(bt_real) * (t->count ? t->count : 1));
    FUZZ_CHECK(dst, "out of memory");
    char err[256];
    FUZZ_CHECK(bt_st_get_real(t, dst, t->count, err, sizeof err) == BT_OK, "get_real '%s': %s",
               t->name, err);
    if (t->count > 0)
        FUZZ_CHECK(bt_st_get_real(t, dst, t->count - 1, err, sizeof err) == BT_ERR_SHAPE,
                   "get_real '%s' accepted a short buffer", t->name);
    for (size_t i = 0; i < t->count; i++) {
        const unsigned char *p = t->data;
        if (t->dtype == BT_ST_U8)
            FUZZ_CHECK(dst[i] == (bt_real)p[i], "get_real U8 '%s'", t->name);
        else if (t->dtype == BT_ST_I32) {
            int32_t v;
            memcpy(&v, p + 4 * i, 4);
            FUZZ_CHECK(dst[i] == (bt_real)v, "get_real I32 '%s'", t->name);
        } else if (t->dtype == (sizeof(bt_real) == 4 ? BT_ST_F32 : BT_ST_F64)) {
            bt_real v;
            memcpy(&v, p + sizeof v * i, sizeof v);
            FUZZ_CHECK(memcmp(&v, &dst[i], sizeof v) == 0 || (isnan(v) && isnan(dst[i])),
                       "get_real '%s': element %zu changed", t->name, i);
        }
    }
    free(dst);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512] = "";
    bt_st_file *f = (bt_st_file *)1;
    if (bt_st_read_buffer(data, size, "fuzz", &f, err, sizeof err) != BT_OK) {
        FUZZ_CHECK(!f && err[0], "a refused file gets no message or a file");
        return 0;
    }
    check_against_header(f, data, size);
    for (int i = 0; i < bt_st_count(f); i++)
        check_get_real(bt_st_at(f, i));

    void *once, *twice;
    size_t n1, n2;
    FUZZ_CHECK(bt_st_write_buffer(f, &once, &n1, err, sizeof err) == BT_OK, "write back: %s", err);
    bt_st_file *g = NULL;
    FUZZ_CHECK(bt_st_read_buffer(once, n1, "rewritten", &g, err, sizeof err) == BT_OK,
               "what the writer wrote does not read back: %s", err);
    FUZZ_CHECK(bt_st_checksummed(g), "what the writer wrote carries no matching checksums");
    check_same(f, g, data, size);
    check_against_header(g, once, n1);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | ((const uint8_t *)once)[i];
    FUZZ_CHECK((8 + hlen) % 8 == 0, "the data section starts at %llu, not 8-aligned",
               (unsigned long long)(8 + hlen));
    FUZZ_CHECK(bt_st_write_buffer(g, &twice, &n2, err, sizeof err) == BT_OK, "write again: %s", err);
    FUZZ_CHECK(n1 == n2 && memcmp(once, twice, n1) == 0, "writing what was read back changed "
               "the bytes (%zu, then %zu)", n1, n2);
    bt_free(once);
    bt_free(twice);
    bt_st_free(g);
    bt_st_free(f);
    return 0;
}
