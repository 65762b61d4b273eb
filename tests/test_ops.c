/* test_ops.c: forward values on small hand-worked cases, and for every op a
 * wrong call that must return NULL with a message instead of crashing. */
#include <string.h>

#include "check.h"

static bt_tensor *T2(bt_graph *g, int r, int c, const bt_real *v)
{
    int shape[2] = {r, c};
    bt_tensor *t = bt_graph_input(g, 2, shape, v);
    t->requires_grad = true; /* so the op is recorded as in training */
    return t;
}

#define EXPECT_FAIL(g, expr, phrase)                                                        \
    do {                                                                                    \
        bt_graph_reset(g);                                                                  \
        cr_assert_null((expr), #expr " should fail");                                       \
        cr_assert_neq(bt_graph_status(g), BT_OK);                                           \
        cr_assert(strstr(bt_graph_error(g), phrase) != NULL, #expr ": message '%s' lacks '%s'", \
                  bt_graph_error(g), phrase);                                               \
    } while (0)

Test(ops, wrong_shapes_return_errors)
{
    bt_graph *g = bt_graph_new();
    const bt_real v[12] = {0};
    const int32_t ids[4] = {0, 1, 9, 0};
    bt_tensor *a, *b;
#define AB(ra, ca, rb, cb) (bt_graph_reset(g), a = T2(g, ra, ca, v), b = T2(g, rb, cb, v))
    AB(2, 3, 2, 3); EXPECT_FAIL(g, (AB(2, 3, 2, 3), bt_matmul(g, a, b)), "inner dimensions");
    EXPECT_FAIL(g, (AB(2, 3, 2, 3), bt_matmul_t(g, a, true, b, true)), "inner dimensions");
    EXPECT_FAIL(g, (AB(2, 3, 3, 2), bt_add(g, a, b)), "do not broadcast");
    EXPECT_FAIL(g, (AB(2, 3, 3, 2), bt_sub(g, a, b)), "do not broadcast");
    EXPECT_FAIL(g, (AB(2, 3, 1, 2), bt_mul(g, a, b)), "do not broadcast");
    EXPECT_FAIL(g, (AB(2, 3, 3, 2), bt_mse(g, a, b)), "differ in shape");
    EXPECT_FAIL(g, (AB(2, 3, 2, 3), bt_slice(g, a, 2, 2)), "outside");
    EXPECT_FAIL(g, (AB(2, 3, 2, 3), bt_slice(g, a, -1, 1)), "outside");
    EXPECT_FAIL(g, (AB(2, 3, 3, 2), bt_concat(g, (bt_tensor *[]){a, b}, 2)), "same leading");
    EXPECT_FAIL(g, bt_concat(g, NULL, 0), "at least one");
    EXPECT_FAIL(g, (AB(4, 3, 1, 1), bt_embedding(g, a, ids, 4)), "outside the table");
    EXPECT_FAIL(g, (AB(4, 3, 1, 1), bt_softmax_xent(g, a, ids)), "outside");
    EXPECT_FAIL(g, (AB(4, 3, 1, 1), bt_scale(g, a, INFINITY)), "non-finite");
    EXPECT_FAIL(g, (AB(4, 3, 1, 1), bt_grad_scale(g, a, NAN)), "non-finite");
    /* Unary ops and reductions cannot get a wrong shape; they reject NULL. */
    EXPECT_FAIL(g, bt_tanh(g, NULL), "NULL");
    EXPECT_FAIL(g, bt_sigmoid(g, NULL), "NULL");
    EXPECT_FAIL(g, bt_exp(g, NULL), "NULL");
    EXPECT_FAIL(g, bt_log(g, NULL), "NULL");
    EXPECT_FAIL(g, bt_relu(g, NULL), "NULL");
    EXPECT_FAIL(g, bt_neg(g, NULL), "NULL");
    EXPECT_FAIL(g, bt_sum(g, NULL), "NULL");
    EXPECT_FAIL(g, bt_mean(g, NULL), "NULL");
    EXPECT_FAIL(g, bt_detach(g, NULL), "NULL");
    /* A 1-D table or a 3-D matmul operand. */
    bt_graph_reset(g);
    bt_tensor *vec = bt_graph_input(g, 1, (int[]){3}, v);
    cr_assert_null(bt_embedding(g, vec, ids, 2));
    cr_assert(strstr(bt_graph_error(g), "2-D") != NULL);
    bt_graph_reset(g);
    bt_tensor *cube = bt_graph_input(g, 3, (int[]){1, 2, 2}, v);
    cr_assert_null(bt_matmul(g, cube, cube));
    cr_assert(strstr(bt_graph_error(g), "2-D") != NULL);
    bt_graph_reset(g);
    cr_assert_null(bt_graph_tensor(g, 2, (int[]){0, 3}));
    cr_assert(strstr(bt_graph_error(g), "positive") != NULL);
    bt_graph_free(g);
}

Test(ops, forward_values)
{
    bt_graph *g = bt_graph_new();
    const bt_real av[6] = {1, 2, 3, 4, 5, 6}, bv[6] = {1, 0, 0, 1, 1, 1};
    bt_tensor *a = T2(g, 2, 3, av), *b = T2(g, 3, 2, bv);
    bt_tensor *c = bt_matmul(g, a, b); /* [[1+3, 2+3],[4+6, 5+6]] */
    cr_assert_eq(c->data[0], 4); cr_assert_eq(c->data[1], 5);
    cr_assert_eq(c->data[2], 10); cr_assert_eq(c->data[3], 11);
    bt_tensor *ct = bt_matmul_t(g, a, false, a, true); /* a a^T */
    cr_assert_eq(ct->data[0], 14); cr_assert_eq(ct->data[1], 32); cr_assert_eq(ct->data[3], 77);
    bt_tensor *bias = bt_graph_input(g, 1, (int[]){3}, (bt_real[]){10, 20, 30});
    bt_tensor *s = bt_add(g, a, bias);
    cr_assert_eq(s->data[4], 25);
    cr_assert_eq(s->ndim, 2);
    bt_tensor *cat = bt_concat(g, (bt_tensor *[]){a, c}, 2);
    cr_assert_eq(cat->shape[1], 5);
    cr_assert_eq(cat->data[5 + 3], 10, "row 1 = 4 5 6 10 11");
    bt_tensor *sl = bt_slice(g, cat, 2, 2);
    cr_assert_eq(sl->data[0], 3); cr_assert_eq(sl->data[3], 10);
    /* uniform logits: cross-entropy is log V */
    bt_tensor *z = bt_graph_tensor2(g, 3, 7);
    bt_tensor *xe = bt_softmax_xent(g, z, (int32_t[]){0, 3, 6});
    cr_assert_float_eq(xe->data[0], log(7.0), 1e-6);
    /* stable at huge logits */
    bt_tensor *huge = bt_graph_input(g, 2, (int[]){1, 2}, (bt_real[]){1000, 0});
    bt_tensor *xe2 = bt_softmax_xent(g, huge, (int32_t[]){1});
    cr_assert_float_eq(xe2->data[0], 1000.0, 1e-3);
    bt_tensor *m = bt_mse(g, a, bt_graph_tensor2(g, 2, 3)); /* 0.5*(1+4+...+36)/2 */
    cr_assert_float_eq(m->data[0], 0.5 * 91 / 2, 1e-6);
    bt_tensor *e = bt_embedding(g, b, (int32_t[]){2, 0}, 2);
    cr_assert_eq(e->data[0], 1); cr_assert_eq(e->data[1], 1); cr_assert_eq(e->data[3], 0);
    cr_assert_float_eq(bt_mean(g, a)->data[0], 3.5, 1e-6);
    cr_assert_float_eq(bt_sum(g, a)->data[0], 21, 1e-6);
    cr_assert_float_eq(bt_sigmoid(g, bt_graph_tensor2(g, 1, 1))->data[0], 0.5, 1e-7);
    cr_assert_eq(bt_graph_status(g), BT_OK, "%s", bt_graph_error(g));
    bt_graph_free(g);
}

#include "../ops/fastmath.h"

/* The vectorisable float tanh/sigmoid/exp used by the float build. */
Test(ops, fast_math_matches_libm)
{
    double worst_tanh = 0, worst_sig = 0, worst_exp = 0;
    for (int i = -200000; i <= 200000; i++) {
        float x = (float)i * 1e-4f; /* [-20, 20] */
        worst_tanh = fmax(worst_tanh, fabs((double)bt_fast_tanhf(x) - tanh((double)x)));
        worst_sig = fmax(worst_sig, fabs((double)bt_fast_sigmoidf(x) - 1 / (1 + exp(-(double)x))));
        double e = exp((double)x);
        worst_exp = fmax(worst_exp, fabs((double)bt_fast_expf(x) - e) / e);
    }
    /* tanh measures 7.1e-8 on this grid; over every float (checked once) tanh
     * 7.93e-8 at 0.628, sigmoid 8.93e-8, exp 8.46e-8 relative */
    cr_expect_leq(worst_tanh, 1.5e-7, "tanh: max abs error %.3g", worst_tanh);
    cr_expect_leq(worst_sig, 3e-7, "sigmoid: max abs error %.3g", worst_sig);
    cr_expect_leq(worst_exp, 3e-7, "exp: max rel error %.3g", worst_exp);
    /* tiny arguments keep their relative accuracy; saturation is exact */
    cr_expect_float_eq(bt_fast_tanhf(1e-6f), 1e-6f, 1e-12);
    cr_expect(signbit(bt_fast_tanhf(-0.0f)) && bt_fast_tanhf(-0.0f) == 0, "tanh(-0) is -0");
    cr_expect_eq(bt_fast_tanhf(50.0f), 1.0f);
    cr_expect_eq(bt_fast_tanhf(-50.0f), -1.0f);
    cr_expect_eq(bt_fast_sigmoidf(-200.0f) >= 0, 1);
    /* NaN must propagate, or a diverged run would look finite */
    cr_expect(isnan(bt_fast_tanhf(NAN)) && isnan(bt_fast_expf(NAN)) && isnan(bt_fast_sigmoidf(NAN)));
    cr_expect_eq(bt_fast_expf(INFINITY) > 1e38f, 1);
    cr_expect_leq(bt_fast_expf(-INFINITY), 1.2e-38f); /* the smallest normal, not 0: fine for activations */
    cr_expect(bt_fast_tanhf(INFINITY) == 1.0f && bt_fast_tanhf(-INFINITY) == -1.0f);
}

/* A saturating cell needs tanh never to step down and never to leave [-1, 1]:
 * near 9 the true slope is below an ulp per step, so an ulp of rounding noise
 * would show here as a step down. */
Test(ops, fast_tanh_monotone_and_bounded)
{
    long down = 0, outside = 0;
    float prev = -2.0f, first_down = 0;
    for (int i = -2000000; i <= 2000000; i++) {
        float x = (float)i * 5e-6f; /* [-10, 10] */
        float y = bt_fast_tanhf(x);
        if (y < prev && down++ == 0)
            first_down = x;
        outside += y > 1.0f || y < -1.0f;
        prev = y;
    }
    prev = -2.0f;
    for (float x = 8.0f; x <= 10.0f; x = nextafterf(x, 11.0f)) { /* every float near saturation */
        float y = bt_fast_tanhf(x);
        if (y < prev && down++ == 0)
            first_down = x;
        outside += y > 1.0f;
        prev = y;
    }
    cr_expect_eq(down, 0, "tanh stepped down %ld times, first at %.9g", down, first_down);
    cr_expect_eq(outside, 0, "|tanh| > 1 at %ld points", outside);
}
