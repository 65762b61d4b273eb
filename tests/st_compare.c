/* st_compare.c: compares two safetensors files tensor by tensor, for the
 * `bptt grad` fixture tests. Every tensor of EXPECTED must be in ACTUAL with
 * the same shape, ACTUAL may hold nothing else, and every element must satisfy
 * |a - e| <= atol + rtol |e|. Prints the largest difference of each tensor.
 *
 *   st_compare ACTUAL EXPECTED [--atol A] [--rtol R] [--bitwise] [--meta KEY=VALUE]...
 *              [--skip NAME]...
 *
 * --bitwise asks for the same dtype and the very same bytes (no tolerance;
 * -0 differs from 0, a NaN's payload counts): a resumed run against one
 * never interrupted (test_crash.sh).
 * --skip leaves a tensor out of the comparison (a checkpoint's `history`
 * holds timings, which no two runs share).
 *
 * Tolerances default to the build's precision (tight in double). Exit 0 when
 * everything matches, 1 on a difference, 2 on a usage or read error. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

/* Element i of any dtype as a double. */
static double at(const bt_st_tensor *t, size_t i)
{
    switch (t->dtype) {
    case BT_ST_F32: return ((const float *)t->data)[i];
    case BT_ST_F64: return ((const double *)t->data)[i];
    case BT_ST_I32: return ((const int32_t *)t->data)[i];
    case BT_ST_I64: return (double)((const int64_t *)t->data)[i];
    case BT_ST_U8: return ((const uint8_t *)t->data)[i];
    default: return NAN;
    }
}

static bool same_shape(const bt_st_tensor *a, const bt_st_tensor *b)
{
    if (a->ndim != b->ndim)
        return false;
    for (int j = 0; j < a->ndim; j++)
        if (a->shape[j] != b->shape[j])
            return false;
    return true;
}

static bool skipped(const char *name, const char *const *skip, int n)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(name, skip[i]))
            return true;
    return false;
}

static int compare(const bt_st_file *act, const bt_st_file *exp, double atol, double rtol,
                   bool bitwise, const char *const *skip, int n_skip)
{
    int bad = 0;
    double worst = 0;
    for (int i = 0; i < bt_st_count(exp); i++) {
        const bt_st_tensor *e = bt_st_at(exp, i), *a = bt_st_find(act, e->name);
        if (skipped(e->name, skip, n_skip))
            continue;
        if (!a) {
            printf("FAIL %-14s missing from the output\n", e->name);
            bad++;
            continue;
        }
        if (!same_shape(a, e)) {
            printf("FAIL %-14s shape differs (ndim %d vs %d, count %zu vs %zu)\n", e->name,
                   a->ndim, e->ndim, a->count, e->count);
            bad++;
            continue;
        }
        double max_diff = 0;
        size_t where = 0;
        bool ok = true;
        for (size_t k = 0; k < e->count; k++) {
            double d = fabs(at(a, k) - at(e, k));
            if (!(d <= max_diff)) { /* a NaN counts as the largest difference */
                max_diff = isnan(d) ? INFINITY : d;
                where = k;
            }
            if (!(d <= atol + rtol * fabs(at(e, k))))
                ok = false;
        }
        if (bitwise && (a->dtype != e->dtype ||
                        memcmp(a->data, e->data, e->count * bt_st_dtype_size(e->dtype)) != 0)) {
            printf("FAIL %-14s not the same bytes\n", e->name);
            ok = false;
        }
        printf("%s %-14s max |diff| %.3g at %zu (actual %.10g, expected %.10g)\n",
               ok ? "ok  " : "FAIL", e->name, max_diff, where, e->count ? at(a, where) : 0.0,
               e->count ? at(e, where) : 0.0);
        if (!ok)
            bad++;
        if (!(max_diff <= worst))
            worst = max_diff;
    }
    for (int i = 0; i < bt_st_count(act); i++)
        if (!bt_st_find(exp, bt_st_at(act, i)->name)) {
            printf("FAIL %-14s in the output but not expected\n", bt_st_at(act, i)->name);
            bad++;
        }
    printf("%s: %d tensors, largest difference %.3g (atol %g, rtol %g)\n",
           bad ? "MISMATCH" : "MATCH", bt_st_count(exp), worst, atol, rtol);
    return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
#if BT_REAL_DOUBLE
    double atol = 1e-10, rtol = 1e-8;
#else
    double atol = 1e-5, rtol = 1e-4;
#endif
    const char *files[2] = {0}, *meta[16], *skip[16];
    int nf = 0, nm = 0, ns = 0;
    bool bitwise = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--atol") && i + 1 < argc)
            atol = atof(argv[++i]);
        else if (!strcmp(argv[i], "--rtol") && i + 1 < argc)
            rtol = atof(argv[++i]);
        else if (!strcmp(argv[i], "--bitwise"))
            bitwise = true;
        else if (!strcmp(argv[i], "--meta") && i + 1 < argc && nm < 16)
            meta[nm++] = argv[++i];
        else if (!strcmp(argv[i], "--skip") && i + 1 < argc && ns < 16)
            skip[ns++] = argv[++i];
        else if (nf < 2 && argv[i][0] != '-')
            files[nf++] = argv[i];
        else {
            fprintf(stderr, "st_compare: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (nf != 2) {
        fprintf(stderr, "usage: st_compare ACTUAL EXPECTED [--atol A] [--rtol R] [--bitwise] "
                        "[--meta KEY=VALUE]... [--skip NAME]...\n");
        return 2;
    }
    bt_st_file *f[2] = {0};
    char err[1024];
    for (int i = 0; i < 2; i++)
        if (bt_st_read(files[i], &f[i], err, sizeof err) != BT_OK) {
            fprintf(stderr, "st_compare: %s\n", err);
            bt_st_free(f[0]);
            return 2;
        }
    int rc = compare(f[0], f[1], atol, rtol, bitwise, skip, ns);
    for (int i = 0; i < nm; i++) {
        const char *eq = strchr(meta[i], '=');
        size_t klen = eq ? (size_t)(eq - meta[i]) : strlen(meta[i]);
        char key[128];
        snprintf(key, sizeof key, "%.*s", (int)klen, meta[i]);
        const char *v = bt_st_meta(f[0], key);
        if (!v || !eq || strcmp(v, eq + 1) != 0) {
            printf("FAIL metadata %s = %s, expected %s\n", key, v ? v : "(absent)", eq ? eq + 1 : "?");
            rc = 1;
        }
    }
    bt_st_free(f[0]);
    bt_st_free(f[1]);
    return rc;
}
