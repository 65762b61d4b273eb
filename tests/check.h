/* check.h: helpers shared by the tests: the default registry, a scratch
 * folder, deterministic fills and a gradient check assertion that reports
 * the worst element when it fails. */
#ifndef BPTT_TEST_CHECK_H
#define BPTT_TEST_CHECK_H

#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bptt.h"
#include "registry.h"

/* Double build: tight central differences; float build: a tolerance that a
 * wrong sign, factor or index still breaks by orders of magnitude. */
#if BT_REAL_DOUBLE
#define GC_EPS 1e-5
#define GC_FLOOR 1e-3
#define GC_TOL 1e-6
#else
#define GC_EPS 3e-3
#define GC_FLOOR 1e-1
#define GC_TOL 3e-2
#endif

/* A registry with the default plugins, failing the test with its message. */
static inline bt_registry *test_registry(void)
{
    char err[2048] = "";
    bt_registry *reg = bt_registry_new();
    cr_assert_not_null(reg);
    cr_assert_eq(bt_registry_load_default(reg, err, sizeof err), BT_OK, "%s", err);
    return reg;
}

/* A fresh folder /tmp/bptt-NAME-XXXXXX into dir (64 bytes), and its removal
 * with everything in it. */
static inline void test_tmpdir(char dir[64], const char *name)
{
    snprintf(dir, 64, "/tmp/bptt-%s-XXXXXX", name);
    cr_assert_not_null(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
}

static inline void test_rmdir(const char *dir)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

/* A whole file into a new buffer (one spare byte; free it); *n its size. */
static inline unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)len + 1);
    cr_assert_not_null(p);
    cr_assert_eq(fread(p, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return p;
}

/* Every parameter of p drawn N(0, scale^2) from r. */
static inline void fill_params_normal(bt_params *p, double scale, bt_rng *r)
{
    for (size_t i = 0; i < bt_params_total(p); i++)
        bt_params_data(p)[i] = (bt_real)(scale * bt_rng_normal(r));
}

/* n token ids and n targets, uniform in [0, V), drawn from r in turn. */
static inline void fill_tokens(int32_t *ids, int32_t *targets, int n, int V, bt_rng *r)
{
    for (int i = 0; i < n; i++) {
        ids[i] = (int32_t)(bt_rng_next(r) % (uint64_t)V);
        targets[i] = (int32_t)(bt_rng_next(r) % (uint64_t)V);
    }
}

/* A heap tensor for a test: bt_tensor_new, failing the test with its message. */
static inline bt_tensor *test_tensor(int ndim, const int *shape, bool requires_grad)
{
    bt_tensor *t = NULL;
    char err[BT_ERRMSG_LEN] = "";
    bt_status st = bt_tensor_new(ndim, shape, requires_grad, &t, err, sizeof err);
    cr_assert_eq(st, BT_OK, "bt_tensor_new: %s", err);
    return t;
}

static inline bt_tensor *test_tensor2(int rows, int cols, bool requires_grad)
{
    return test_tensor(2, (int[]){rows, cols}, requires_grad);
}

static inline void fill_uniform(bt_tensor *t, bt_rng *r, double lo, double hi)
{
    for (size_t i = 0; i < t->size; i++)
        t->data[i] = (bt_real)(lo + (hi - lo) * bt_rng_uniform(r));
}

/* A fixed weighting so a scalar loss sees every output element differently. */
static inline bt_tensor *weighted_sum(bt_graph *g, bt_tensor *t)
{
    if (!t)
        return NULL;
    bt_tensor *w = bt_graph_tensor(g, t->ndim, t->shape);
    if (!w)
        return NULL;
    for (size_t i = 0; i < w->size; i++)
        w->data[i] = (bt_real)(0.3 + 0.7 * sin(1.7 * (double)i + 0.4));
    return bt_sum(g, bt_mul(g, t, w));
}

static inline void assert_gradcheck(const char *what, bt_loss_fn fn, void *ctx,
                                    bt_tensor *const *inputs, int n)
{
    bt_gradcheck_result res[8];
    char err[256] = "";
    cr_assert_leq(n, 8);
    bt_status st = bt_gradcheck(fn, ctx, inputs, n, GC_EPS, GC_FLOOR, res, err, sizeof err);
    cr_assert_eq(st, BT_OK, "%s: gradcheck failed to run: %s", what, err);
    for (int i = 0; i < n; i++) {
        if (!inputs[i]->requires_grad)
            continue;
        cr_log_info("gradcheck %s input %d: max rel %.3g max abs %.3g", what, i, res[i].max_rel,
                    res[i].max_abs);
        cr_expect_leq(res[i].max_rel, GC_TOL,
                      "%s: input %d: max relative error %.3g (abs %.3g) at element %zu: "
                      "analytic %.9g vs numeric %.9g",
                      what, i, res[i].max_rel, res[i].max_abs, res[i].worst, res[i].analytic,
                      res[i].numeric);
    }
}

#endif
