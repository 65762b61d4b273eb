/* test_safetensors.c: round trips, conversions, atomic writes, and rejection of
 * every kind of malformed file the reader checks for (crafted bytes, and every
 * truncation of a valid file). Each test works in its own mkdtemp folder. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "bptt.h"
#include "safetensors.h"

static char dir[64];
static char err[BT_ERRMSG_LEN];

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/bt_st_test_XXXXXX");
    cr_assert_not_null(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
    err[0] = '\0';
}

static void rm_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                continue;
            char sub[512];
            snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
            rm_tree(sub);
        }
        closedir(d);
        chmod(path, 0755);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static void teardown(void)
{
    rm_tree(dir);
}

TestSuite(safetensors, .init = setup, .fini = teardown);

static const char *in_dir(const char *name)
{
    static char buf[4][256];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, 256, "%s/%s", dir, name);
    return p;
}

static int count_entries(const char *path)
{
    DIR *d = opendir(path);
    cr_assert_not_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
    closedir(d);
    return n;
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *fp = fopen(path, "wb");
    cr_assert_not_null(fp);
    cr_assert_eq(fwrite(p, 1, n, fp), n);
    cr_assert_eq(fclose(fp), 0);
}


/* A file from a header string and data bytes; hlen overrides the length field. */
static const char *craft(const char *header, const void *data, size_t ndata, uint64_t hlen)
{
    const char *path = in_dir("crafted.safetensors");
    size_t n = strlen(header);
    if (hlen == UINT64_MAX)
        hlen = n;
    unsigned char *buf = malloc(8 + n + ndata + 1);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(hlen >> (8 * i));
    memcpy(buf + 8, header, n);
    if (ndata)
        memcpy(buf + 8 + n, data, ndata);
    write_bytes(path, buf, 8 + n + ndata);
    free(buf);
    return path;
}

static void expect_format_error(const char *header, size_t ndata, const char *phrase)
{
    static const unsigned char zeros[256];
    cr_assert_leq(ndata, sizeof zeros);
    const char *path = craft(header, zeros, ndata, UINT64_MAX);
    bt_st_file *f = (bt_st_file *)1;
    err[0] = '\0';
    bt_status s = bt_st_read(path, &f, err, sizeof err);
    cr_expect_eq(s, BT_ERR_FORMAT, "header %s: status %d (%s), wanted FORMAT", header, s, err);
    cr_expect_null(f, "header %s: *out not cleared on failure", header);
    cr_expect_not_null(strstr(err, phrase), "header %s: message '%s' lacks '%s'", header, err,
                       phrase);
    cr_expect_not_null(strstr(err, path), "message '%s' does not name the file", err);
}

/* A file holding one tensor of every dtype, a scalar, an empty tensor and
 * metadata that needs escaping. */
static bt_st_file *make_sample(void)
{
    bt_st_file *f = bt_st_new();
    cr_assert_not_null(f);
    const float f32[6] = {1.5f, -2.25f, 3e-8f, 1e30f, 0.0f, -0.0f};
    const double f64[4] = {3.141592653589793, -1e-300, 1e300, 2.0 / 3.0};
    const int32_t i32[4] = {INT32_MIN, -1, 0, INT32_MAX};
    const int64_t i64[3] = {INT64_MIN, 42, INT64_MAX};
    const uint8_t u8[5] = {0, 1, 127, 128, 255};
    const double scalar = -7.5;
    int64_t s23[] = {2, 3}, s4[] = {4}, s22[] = {2, 2}, s3[] = {3}, s5[] = {5}, s03[] = {0, 3};
    cr_assert_eq(bt_st_add(f, "w.f32", BT_ST_F32, 2, s23, f32, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_st_add(f, "b.f64", BT_ST_F64, 1, s4, f64, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_st_add(f, "ids \"i32\"", BT_ST_I32, 2, s22, i32, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_st_add(f, "step\\i64", BT_ST_I64, 1, s3, i64, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_st_add(f, "bytes\nü8 ✓", BT_ST_U8, 1, s5, u8, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_st_add(f, "scalar", BT_ST_F64, 0, NULL, &scalar, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_st_add(f, "empty", BT_ST_F32, 2, s03, NULL, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_st_set_meta(f, "format", "pt"), BT_OK);
    cr_assert_eq(bt_st_set_meta(f, "quote\"key", "back\\slash \"q\"\nnew\tline\x01\x1f"), BT_OK);
    cr_assert_eq(bt_st_set_meta(f, "unicode", "héllo ✓ 𝄞 日本"), BT_OK);
    return f;
}

static void assert_same(const bt_st_file *a, const bt_st_file *b)
{
    cr_assert_eq(bt_st_count(a), bt_st_count(b));
    for (int i = 0; i < bt_st_count(a); i++) {
        const bt_st_tensor *x = bt_st_at(a, i), *y = bt_st_at(b, i);
        cr_assert_str_eq(x->name, y->name, "tensor %d", i);
        cr_assert_eq(x->dtype, y->dtype, "tensor %s", x->name);
        cr_assert_eq(x->ndim, y->ndim, "tensor %s", x->name);
        for (int d = 0; d < x->ndim; d++)
            cr_assert_eq(x->shape[d], y->shape[d], "tensor %s dim %d", x->name, d);
        cr_assert_eq(x->count, y->count, "tensor %s", x->name);
        cr_assert_not_null(y->data);
        cr_assert_eq(memcmp(x->data, y->data, x->count * bt_st_dtype_size(x->dtype)), 0,
                     "tensor %s: bytes differ", x->name);
        cr_assert_eq(bt_st_find(b, x->name), y, "find %s", x->name);
    }
}

Test(safetensors, round_trip_every_dtype)
{
    bt_st_file *f = make_sample();
    const char *path = in_dir("model.safetensors");
    cr_assert_eq(bt_st_write(f, path, err, sizeof err), BT_OK, "%s", err);

    /* Header length field: 8 + N is a multiple of 8. */
    size_t n;
    unsigned char *raw = slurp(path, &n);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | raw[i];
    cr_assert_eq((8 + hlen) % 8, 0, "header length %llu not padded", (unsigned long long)hlen);
    cr_assert_eq(raw[8], '{');
    cr_assert_eq(n, 8 + hlen + 24 + 32 + 16 + 24 + 5 + 8);
    free(raw);

    bt_st_file *g = NULL;
    cr_assert_eq(bt_st_read(path, &g, err, sizeof err), BT_OK, "%s", err);
    assert_same(f, g);
    cr_assert_eq(bt_st_at(g, 5)->ndim, 0);
    cr_assert_eq(bt_st_at(g, 5)->count, 1);
    cr_assert_eq(bt_st_at(g, 6)->count, 0);
    cr_assert_str_eq(bt_st_meta(g, "format"), "pt");
    cr_assert_str_eq(bt_st_meta(g, "quote\"key"), "back\\slash \"q\"\nnew\tline\x01\x1f");
    cr_assert_str_eq(bt_st_meta(g, "unicode"), "héllo ✓ 𝄞 日本");
    cr_assert_null(bt_st_meta(g, "absent"));
    cr_assert_null(bt_st_find(g, "absent"));
    cr_assert_null(bt_st_at(g, 7));
    cr_assert_null(bt_st_at(g, -1));

    /* Writing what was read gives the same bytes. */
    const char *path2 = in_dir("again.safetensors");
    cr_assert_eq(bt_st_write(g, path2, err, sizeof err), BT_OK, "%s", err);
    size_t n1, n2;
    unsigned char *a = slurp(path, &n1), *b = slurp(path2, &n2);
    cr_assert_eq(n1, n2);
    cr_assert_eq(memcmp(a, b, n1), 0);
    free(a);
    free(b);
    bt_st_free(f);
    bt_st_free(g);
}

Test(safetensors, empty_file_round_trip)
{
    bt_st_file *f = bt_st_new();
    const char *path = in_dir("empty.safetensors");
    cr_assert_eq(bt_st_write(f, path, err, sizeof err), BT_OK, "%s", err);
    bt_st_free(f);
    cr_assert_eq(bt_st_read(path, &f, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_st_count(f), 0);
    bt_st_free(f);
}

/* Metadata that spells the header checksum's key inside other strings: as
 * written, "x\"checksum_header":"crc32:..." holds the bytes of the real key
 * and value, behind an escaped quote. The writer must seal the one real
 * placeholder (a fuzzer's file once made it assert) and the reader check it. */
Test(safetensors, checksum_key_spelled_inside_other_strings)
{
    static const char *const keys[] = {"x\"checksum_header", "y\\\"checksum_header", "v"};
    static const char *const values[] = {"crc32:00000000", "crc32:12345678",
                                         "\"checksum_header\":\"crc32:00000000\""};
    bt_st_file *f = bt_st_new();
    float x[2] = {1, 2};
    int64_t s2[1] = {2};
    cr_assert_eq(bt_st_add(f, "w", BT_ST_F32, 1, s2, x, err, sizeof err), BT_OK, "%s", err);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(bt_st_set_meta(f, keys[i], values[i]), BT_OK);
    const char *path = in_dir("spelled.safetensors");
    cr_assert_eq(bt_st_write(f, path, err, sizeof err), BT_OK, "%s", err);
    bt_st_free(f);
    cr_assert_eq(bt_st_read(path, &f, err, sizeof err), BT_OK, "%s", err);
    cr_assert(bt_st_checksummed(f));
    for (int i = 0; i < 3; i++)
        cr_assert_str_eq(bt_st_meta(f, keys[i]), values[i]);
    bt_st_free(f);
    /* The reader checks the real header checksum: a digit of x's value
     * (crc32:00000000, the first such run in the header) changed fails it. */
    FILE *fp = fopen(path, "r+b");
    char head[512];
    size_t got = fp ? fread(head, 1, sizeof head, fp) : 0;
    size_t at = 0;
    while (at + 14 <= got && memcmp(head + at, "crc32:00000000", 14) != 0)
        at++;
    cr_assert(at + 14 <= got, "x's value is not in the first %zu bytes", got);
    cr_assert(fseek(fp, (long)at + 13, SEEK_SET) == 0 && fputc('1', fp) != EOF &&
              fclose(fp) == 0);
    cr_assert_eq(bt_st_read(path, &f, err, sizeof err), BT_ERR_FORMAT);
    cr_assert(strstr(err, "the header does not match its checksum"), "%s", err);
}

Test(safetensors, real_round_trip)
{
    bt_real v[6] = {1, 2, 3, 4, 5, 6.5};
    int64_t shape[2] = {3, 2};
    bt_st_file *f = bt_st_new();
    cr_assert_eq(bt_st_add_real(f, "p", 2, shape, v, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_st_find(f, "p")->dtype, BT_REAL_DOUBLE ? BT_ST_F64 : BT_ST_F32);
    const char *path = in_dir("real.safetensors");
    cr_assert_eq(bt_st_write(f, path, err, sizeof err), BT_OK, "%s", err);
    bt_st_free(f);
    cr_assert_eq(bt_st_read(path, &f, err, sizeof err), BT_OK, "%s", err);
    bt_real w[6];
    cr_assert_eq(bt_st_get_real(bt_st_find(f, "p"), w, 6, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(memcmp(v, w, sizeof v), 0);
    bt_st_free(f);
}

Test(safetensors, get_real_converts)
{
    bt_st_file *f = make_sample();
    bt_real out[8];
    cr_assert_eq(bt_st_get_real(bt_st_find(f, "w.f32"), out, 6, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(out[0], (bt_real)1.5f);
    cr_assert_eq(out[1], (bt_real)-2.25f);
    cr_assert_eq(out[3], (bt_real)1e30f);
    cr_assert_eq(bt_st_get_real(bt_st_find(f, "b.f64"), out, 4, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(out[0], (bt_real)3.141592653589793);
    cr_assert_eq(out[3], (bt_real)(2.0 / 3.0));
    cr_assert_eq(bt_st_get_real(bt_st_find(f, "ids \"i32\""), out, 4, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(out[0], (bt_real)INT32_MIN);
    cr_assert_eq(out[1], -1);
    cr_assert_eq(out[3], (bt_real)INT32_MAX);
    cr_assert_eq(bt_st_get_real(bt_st_find(f, "step\\i64"), out, 3, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(out[1], 42);
    cr_assert_eq(out[0], (bt_real)INT64_MIN);
    cr_assert_eq(bt_st_get_real(bt_st_find(f, "bytes\nü8 ✓"), out, 5, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(out[4], 255);
    cr_assert_eq(bt_st_get_real(bt_st_find(f, "scalar"), out, 1, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(out[0], -7.5);
    cr_assert_eq(bt_st_get_real(bt_st_find(f, "empty"), NULL, 0, err, sizeof err), BT_OK, "%s", err);
    /* A count that does not match is refused, not truncated. */
    cr_assert_eq(bt_st_get_real(bt_st_find(f, "w.f32"), out, 5, err, sizeof err), BT_ERR_SHAPE);
    cr_assert_not_null(strstr(err, "6 elements"), "%s", err);
    bt_st_free(f);
}

Test(safetensors, add_and_meta_arguments)
{
    bt_st_file *f = bt_st_new();
    float x[2] = {1, 2};
    int64_t s2[] = {2}, neg[] = {-2}, huge[] = {INT64_MAX, INT64_MAX};
    cr_assert_eq(bt_st_add(f, "x", BT_ST_F32, 1, s2, x, err, sizeof err), BT_OK);
    cr_assert_eq(bt_st_add(f, "x", BT_ST_F32, 1, s2, x, err, sizeof err), BT_ERR_ARG);
    cr_assert_not_null(strstr(err, "already exists"), "%s", err);
    cr_assert_eq(bt_st_add(f, "__metadata__", BT_ST_F32, 1, s2, x, err, sizeof err), BT_ERR_ARG);
    cr_assert_eq(bt_st_add(f, "n", BT_ST_F32, 1, neg, x, err, sizeof err), BT_ERR_ARG);
    cr_assert_eq(bt_st_add(f, "h", BT_ST_F32, 2, huge, x, err, sizeof err), BT_ERR_ARG);
    cr_assert_eq(bt_st_add(f, "d", (bt_st_dtype)99, 1, s2, x, err, sizeof err), BT_ERR_ARG);
    cr_assert_eq(bt_st_add(f, "k", BT_ST_F32, 9, s2, x, err, sizeof err), BT_ERR_ARG);
    cr_assert_eq(bt_st_add(f, "z", BT_ST_F32, 1, s2, NULL, err, sizeof err), BT_ERR_ARG);
    cr_assert_eq(bt_st_add(f, "bad\xff", BT_ST_F32, 1, s2, x, err, sizeof err), BT_ERR_ARG);
    cr_assert_eq(bt_st_count(f), 1);
    /* The tensor owns a copy. */
    x[0] = 99;
    cr_assert_eq(((const float *)bt_st_at(f, 0)->data)[0], 1.0f);

    cr_assert_eq(bt_st_set_meta(f, "k", "v1"), BT_OK);
    cr_assert_eq(bt_st_set_meta(f, "k", "v2"), BT_OK);
    cr_assert_str_eq(bt_st_meta(f, "k"), "v2");
    cr_assert_eq(bt_st_set_meta(f, "k", "\xc0\xaf"), BT_ERR_ARG); /* overlong '/' */
    cr_assert_eq(bt_st_set_meta(f, NULL, "v"), BT_ERR_ARG);
    cr_assert_str_eq(bt_st_dtype_name(BT_ST_I64), "I64");
    cr_assert_str_eq(bt_st_dtype_name((bt_st_dtype)42), "?");
    bt_st_free(f);
    bt_st_free(NULL);
}

/* ---- atomic writes -------------------------------------------------------------- */

static void assert_file_is(const char *path, const char *text)
{
    size_t n;
    unsigned char *p = slurp(path, &n);
    cr_assert_eq(n, strlen(text), "%s was changed", path);
    cr_assert_eq(memcmp(p, text, n), 0, "%s was changed", path);
    free(p);
}

Test(safetensors, write_replaces_and_leaves_no_temp)
{
    const char *path = in_dir("ckpt.safetensors");
    write_bytes(path, "old", 3);
    chmod(path, 0640);
    bt_st_file *f = make_sample();
    cr_assert_eq(bt_st_write(f, path, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_st_write(f, path, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(count_entries(dir), 1, "a temporary file was left behind");
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_eq(sb.st_mode & 0777, 0640, "mode of the replaced file not kept");
    bt_st_file *g;
    cr_assert_eq(bt_st_read(path, &g, err, sizeof err), BT_OK, "%s", err);
    assert_same(f, g);
    bt_st_free(f);
    bt_st_free(g);
}

Test(safetensors, write_onto_a_directory_fails_cleanly)
{
    const char *path = in_dir("target");
    cr_assert_eq(mkdir(path, 0755), 0);
    write_bytes(in_dir("target/keep"), "keep", 4);
    bt_st_file *f = make_sample();
    cr_assert_eq(bt_st_write(f, path, err, sizeof err), BT_ERR_IO);
    cr_assert_not_null(strstr(err, path), "%s", err);
    cr_assert_not_null(strstr(err, "it is a folder"), "%s", err);
    cr_assert_eq(count_entries(dir), 1, "a temporary file was left behind");
    assert_file_is(in_dir("target/keep"), "keep");
    bt_st_free(f);
}

Test(safetensors, write_into_missing_or_unwritable_folder_fails_cleanly)
{
    bt_st_file *f = make_sample();
    const char *missing = in_dir("no/such/dir/x.safetensors");
    cr_assert_eq(bt_st_write(f, missing, err, sizeof err), BT_ERR_IO);
    cr_assert_not_null(strstr(err, missing), "%s", err);
    cr_assert_not_null(strstr(err, strerror(ENOENT)), "%s", err);

    /* A read-only folder; root ignores permissions, so only check when it bites. */
    const char *ro = in_dir("ro");
    cr_assert_eq(mkdir(ro, 0755), 0);
    const char *path = in_dir("ro/ckpt.safetensors");
    write_bytes(path, "old", 3);
    cr_assert_eq(chmod(ro, 0555), 0);
    if (geteuid() != 0) {
        cr_assert_eq(bt_st_write(f, path, err, sizeof err), BT_ERR_IO);
        cr_assert_not_null(strstr(err, path), "%s", err);
        cr_assert_not_null(strstr(err, strerror(EACCES)), "%s", err);
        assert_file_is(path, "old");
        cr_assert_eq(count_entries(ro), 1);
    }
    chmod(ro, 0755);
    bt_st_free(f);
}

Test(safetensors, failed_write_midway_keeps_old_file)
{
    /* A file size limit makes write() fail partway (EFBIG), which works as root too. */
    const char *path = in_dir("big.safetensors");
    write_bytes(path, "old", 3);
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {.rlim_cur = 4096, .rlim_max = RLIM_INFINITY};
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    bt_st_file *f = bt_st_new();
    int64_t shape[] = {100000};
    double *x = calloc(100000, sizeof *x);
    cr_assert_eq(bt_st_add(f, "big", BT_ST_F64, 1, shape, x, err, sizeof err), BT_OK);
    cr_assert_eq(bt_st_write(f, path, err, sizeof err), BT_ERR_IO);
    cr_assert_not_null(strstr(err, path), "%s", err);
    cr_assert_not_null(strstr(err, strerror(EFBIG)), "%s", err);
    assert_file_is(path, "old");
    cr_assert_eq(count_entries(dir), 1, "a temporary file was left behind");
    free(x);
    bt_st_free(f);
}

/* ---- reading what others wrote ------------------------------------------------------- */

Test(safetensors, reads_any_header_order_and_escapes)
{
    /* Listed out of offset order, with whitespace, escapes, unknown keys. */
    const char *h =
        " { \"b\" : {\"shape\":[1],\"dtype\":\"I32\",\"data_offsets\":[8,12], \"x\": {\"y\":[1.5e3,true,null]}},\n"
        "\"\\u00e9\\ud834\\udd1e\\/\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
        "\"__metadata__\":{\"k\":\"a\\\"b\\\\c\\n\\u00e9\"}}   ";
    const unsigned char data[12] = {0, 0, 128, 63, 0, 0, 0, 64, 7, 0, 0, 0};
    const char *path = craft(h, data, sizeof data, UINT64_MAX);
    bt_st_file *f;
    cr_assert_eq(bt_st_read(path, &f, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_st_count(f), 2);
    cr_assert_str_eq(bt_st_at(f, 0)->name, "é𝄞/");
    cr_assert_str_eq(bt_st_at(f, 1)->name, "b");
    cr_assert_str_eq(bt_st_meta(f, "k"), "a\"b\\c\né");
    bt_real v[2];
    cr_assert_eq(bt_st_get_real(bt_st_at(f, 0), v, 2, err, sizeof err), BT_OK);
    cr_assert_eq(v[0], 1);
    cr_assert_eq(v[1], 2);
    cr_assert_eq(((const int32_t *)bt_st_at(f, 1)->data)[0], 7);
    bt_st_free(f);
}

Test(safetensors, rejects_missing_and_unreadable)
{
    bt_st_file *f = (bt_st_file *)1;
    const char *path = in_dir("nope.safetensors");
    cr_assert_eq(bt_st_read(path, &f, err, sizeof err), BT_ERR_IO);
    cr_assert_null(f);
    cr_assert_not_null(strstr(err, path), "%s", err);
    cr_assert_eq(bt_st_read(dir, &f, err, sizeof err), BT_ERR_IO);
    cr_assert_not_null(strstr(err, "not a regular file"), "%s", err);
}

Test(safetensors, rejects_bad_length_field)
{
    const char *path = in_dir("short");
    write_bytes(path, "\x10\0\0", 3);
    bt_st_file *f;
    cr_assert_eq(bt_st_read(path, &f, err, sizeof err), BT_ERR_FORMAT);
    cr_assert_not_null(strstr(err, "shorter than the 8-byte"), "%s", err);
    cr_assert_not_null(strstr(err, path), "%s", err);

    path = craft("{}      ", NULL, 0, 200000000);
    cr_assert_eq(bt_st_read(path, &f, err, sizeof err), BT_ERR_FORMAT);
    cr_assert_not_null(strstr(err, "absurd"), "%s", err);
    path = craft("{}      ", NULL, 0, UINT64_MAX - 1);
    cr_assert_eq(bt_st_read(path, &f, err, sizeof err), BT_ERR_FORMAT);
    cr_assert_not_null(strstr(err, "absurd"), "%s", err);

    path = craft("{}      ", NULL, 0, 9);
    cr_assert_eq(bt_st_read(path, &f, err, sizeof err), BT_ERR_FORMAT);
    cr_assert_not_null(strstr(err, "larger than the file"), "%s", err);
}

#define T(name, dt, shape, b, e) "\"" name "\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

Test(safetensors, rejects_bad_json)
{
    expect_format_error("", 0, "not a JSON object");
    expect_format_error("[1,2]", 0, "not a JSON object");
    expect_format_error("\"x\"", 0, "not a JSON object");
    expect_format_error("{\"a\": ", 0, "not valid JSON");
    expect_format_error("{\"a\" 1}", 0, "not valid JSON");
    expect_format_error("{\"__metadata__\":{}", 0, "not valid JSON");
    expect_format_error("{\"__metadata__\":{} ,", 0, "not valid JSON");
    expect_format_error("{\"a", 0, "premature end of input");
    expect_format_error("{\"a\\q\":1}", 0, "invalid escape");
    expect_format_error("{\"a\\u12\":1}", 0, "invalid escape");
    expect_format_error("{\"a\\ud834\":1}", 0, "invalid Unicode '\\uD834'");
    expect_format_error("{\"a\\udd1e\":1}", 0, "invalid Unicode '\\uDD1E'");
    expect_format_error("{\"a\\u0000\":1}", 0, "\\u0000");
    expect_format_error("{\"a\x01\":1}", 0, "control character");
    expect_format_error("{\"a\xff\":1}", 0, "not valid UTF-8");
    expect_format_error("{\"\xed\xa0\x80\":1}", 0, "not valid UTF-8"); /* raw surrogate */
    expect_format_error("{} x", 0, "after the header object");
    expect_format_error("{}{}", 0, "after the header object");
    expect_format_error("{" T("a", "F32", "[1]", 0, 4) ",}", 4, "string or '}' expected");
    expect_format_error("{" T("a", "F32", "[1]", 0, 4) ", \"u\":{\"x\":01}}", 4, "not valid JSON");
    expect_format_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":tru}}", 4,
                        "invalid token near 'tru'");
}

Test(safetensors, rejects_deep_nesting_without_crash)
{
    size_t depth = 100000;
    char *h = malloc(2 * depth + 64);
    strcpy(h, "{\"a\":{\"u\":");
    size_t n = strlen(h);
    for (size_t i = 0; i < depth; i++)
        h[n++] = '[';
    for (size_t i = 0; i < depth; i++)
        h[n++] = ']';
    strcpy(h + n, "}}");
    expect_format_error(h, 0, "nesting too deep");
    free(h);
}

Test(safetensors, rejects_bad_tensor_entries)
{
    expect_format_error("{" T("a", "BF16", "[1]", 0, 2) "}", 2, "unknown dtype 'BF16'");
    expect_format_error("{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                        "dtype is not a string");
    expect_format_error("{\"a\":[1]}", 0, "not an object");
    expect_format_error("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "has no shape");
    expect_format_error("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "has no dtype");
    expect_format_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "has no data_offsets");
    expect_format_error("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                        4, "duplicate key");
    expect_format_error("{" T("a", "F32", "[2,-1]", 0, 0) "}", 0, "negative");
    expect_format_error("{" T("a", "F32", "[1.0]", 0, 4) "}", 4, "fraction");
    expect_format_error("{" T("a", "F32", "[\"1\"]", 0, 4) "}", 4, "other than integers");
    expect_format_error("{" T("a", "F32", "3", 0, 4) "}", 4, "shape is not an array");
    expect_format_error("{" T("a", "F32", "[1,1,1,1,1,1,1,1,1]", 0, 4) "}", 4, "more than 8");
    expect_format_error("{" T("a", "U8", "[4294967296,4294967296,65536]", 0, 0) "}", 0, "overflows");
    expect_format_error("{" T("a", "U8", "[9223372036854775808]", 0, 0) "}", 0, "too large");
    expect_format_error("{" T("a", "U8", "[99999999999999999999]", 0, 0) "}", 0, "too large");
    expect_format_error("{" T("a", "F32", "[2,3]", 0, 20) "}", 20, "do not match F32 x 6 elements = 24 bytes");
    expect_format_error("{" T("a", "F32", "[1]", 4, 0) "}", 4, "do not match");
    expect_format_error("{" T("a", "F32", "[1]", -4, 0) "}", 4, "negative");
    expect_format_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "[begin, end]");
    expect_format_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4,
                        "more than 2");
    expect_format_error("{" T("a", "F32", "[1]", 0, 4) "," T("a", "F32", "[1]", 4, 8) "}", 8,
                        "duplicate key (duplicate object key near '\"a\"'");
}

Test(safetensors, rejects_bad_layout)
{
    expect_format_error("{" T("a", "F32", "[2,3]", 0, 24) "}", 12,
                        "truncated: expected 24 data bytes, file has 12");
    expect_format_error("{" T("a", "F32", "[2]", 0, 8) "," T("b", "F32", "[2]", 4, 12) "}", 12,
                        "'a' and 'b' overlap");
    expect_format_error("{" T("a", "F32", "[2]", 0, 8) "," T("b", "F32", "[2]", 0, 8) "}", 8,
                        "overlap");
    expect_format_error("{" T("a", "F32", "[1]", 0, 4) "," T("b", "F32", "[1]", 8, 12) "}", 12,
                        "hole in the data: no tensor covers bytes [4, 8)");
    expect_format_error("{" T("a", "F32", "[1]", 4, 8) "}", 8, "hole in the data");
    expect_format_error("{" T("a", "F32", "[1]", 0, 4) "}", 8, "4 bytes after the last tensor");
    expect_format_error("{}", 3, "3 bytes after the last tensor");
    /* 2^53 + 1: offsets are 64-bit integers, not doubles (which would say ...992). */
    expect_format_error("{" T("a", "U8", "[9007199254740993]", 0, 9007199254740993) "}", 4,
                        "truncated: expected 9007199254740993 data bytes");
}

Test(safetensors, rejects_bad_metadata)
{
    expect_format_error("{\"__metadata__\":{\"k\":1}}", 0, "metadata value for key 'k' is not a string");
    expect_format_error("{\"__metadata__\":{\"k\":[\"v\"]}}", 0, "is not a string");
    expect_format_error("{\"__metadata__\":{\"k\":null}}", 0, "is not a string");
    expect_format_error("{\"__metadata__\":[]}", 0, "__metadata__ is not a JSON object");
    expect_format_error("{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0, "duplicate key (duplicate object key near '\"k\"'");
    expect_format_error("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "duplicate key (duplicate object key near '\"__metadata__\"'");
}

Test(safetensors, rejects_every_truncation)
{
    bt_st_file *f = make_sample();
    const char *path = in_dir("full.safetensors");
    cr_assert_eq(bt_st_write(f, path, err, sizeof err), BT_OK, "%s", err);
    bt_st_free(f);
    size_t n;
    unsigned char *full = slurp(path, &n);
    const char *cut = in_dir("cut.safetensors");
    for (size_t len = 0; len < n; len++) {
        write_bytes(cut, full, len);
        bt_st_file *g = (bt_st_file *)1;
        bt_status s = bt_st_read(cut, &g, err, sizeof err);
        cr_assert_eq(s, BT_ERR_FORMAT, "length %zu of %zu: status %d (%s)", len, n, s, err);
        cr_assert_null(g);
        cr_assert_not_null(strstr(err, cut), "%s", err);
    }
    /* Past the header, the message says what is missing. */
    write_bytes(cut, full, n - 1);
    bt_st_file *g;
    cr_assert_eq(bt_st_read(cut, &g, err, sizeof err), BT_ERR_FORMAT);
    cr_assert_not_null(strstr(err, "truncated: expected"), "%s", err);
    free(full);
}

/* The buffer entry points are the file reader and writer on memory: the same
 * bytes out, the same tensors in, the same refusals (every truncation), with
 * the given name in messages. */
Test(safetensors, buffers_match_files)
{
    bt_st_file *f = make_sample();
    const char *path = in_dir("file.safetensors");
    cr_assert_eq(bt_st_write(f, path, err, sizeof err), BT_OK, "%s", err);
    size_t n, m;
    unsigned char *disk = slurp(path, &n);
    void *mem = NULL;
    cr_assert_eq(bt_st_write_buffer(f, &mem, &m, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(m, n);
    cr_assert_eq(memcmp(mem, disk, n), 0, "the buffer writer's bytes differ from the file's");

    bt_st_file *g = NULL;
    cr_assert_eq(bt_st_read_buffer(mem, m, "mem", &g, err, sizeof err), BT_OK, "%s", err);
    assert_same(f, g);
    cr_assert_str_eq(bt_st_meta(g, "unicode"), "héllo ✓ 𝄞 日本");
    bt_st_free(g);
    for (size_t len = 0; len < m; len++) {
        g = (bt_st_file *)1;
        err[0] = '\0';
        cr_assert_eq(bt_st_read_buffer(mem, len, "cut", &g, err, sizeof err), BT_ERR_FORMAT,
                     "length %zu of %zu: %s", len, m, err);
        cr_assert_null(g);
        cr_assert(strncmp(err, "cut: ", 5) == 0, "%s", err);
    }
    cr_assert_eq(bt_st_read_buffer(NULL, 0, NULL, &g, err, sizeof err), BT_ERR_FORMAT);
    cr_assert(strstr(err, "(buffer)"), "%s", err);
    cr_assert_eq(bt_st_read_buffer(NULL, 8, NULL, &g, err, sizeof err), BT_ERR_ARG);
    bt_free(mem);
    free(disk);
    bt_st_free(f);
}
