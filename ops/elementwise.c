/* elementwise.c: add, sub, mul with numpy-style broadcasting (shapes aligned
 * to the right; each dim equal or 1). A row bias [N] on [M,N] is the common
 * case. Backward sums the gradient over the broadcast dims; the tangent rule
 * reads the inputs' tangents through the same broadcast. */
#include <string.h>

#include "bptt_op.h"
#include "bt_assert.h"

enum { EW_ADD, EW_SUB, EW_MUL };

/* Shapes padded to 4 dims, with stride 0 where an operand is broadcast. */
typedef struct plan {
    int shape[4];
    size_t sa[4], sb[4], so[4];
} plan;

static void pad4(const bt_tensor *t, int out[4])
{
    int pad = 4 - t->ndim;
    for (int d = 0; d < 4; d++)
        out[d] = d < pad ? 1 : t->shape[d - pad];
}

static void strides(const int sh[4], const int full[4], size_t s[4])
{
    size_t acc = 1;
    for (int d = 3; d >= 0; d--) {
        s[d] = sh[d] == 1 && full[d] != 1 ? 0 : acc;
        acc *= (size_t)sh[d];
    }
}

static bool make_plan(const bt_tensor *a, const bt_tensor *b, plan *p)
{
    int pa[4], pb[4];
    pad4(a, pa);
    pad4(b, pb);
    for (int d = 0; d < 4; d++) {
        if (pa[d] != pb[d] && pa[d] != 1 && pb[d] != 1)
            return false;
        p->shape[d] = pa[d] > pb[d] ? pa[d] : pb[d];
    }
    strides(pa, p->shape, p->sa);
    strides(pb, p->shape, p->sb);
    strides(p->shape, p->shape, p->so);
    return true;
}

/* Visits every output element; f gets (index in a, index in b, index in out). */
#define FOR_EACH_BCAST(p, BODY)                                                         \
    for (int i0 = 0; i0 < (p).shape[0]; i0++)                                           \
        for (int i1 = 0; i1 < (p).shape[1]; i1++)                                       \
            for (int i2 = 0; i2 < (p).shape[2]; i2++) {                                 \
                size_t ba = i0 * (p).sa[0] + i1 * (p).sa[1] + i2 * (p).sa[2];           \
                size_t bb = i0 * (p).sb[0] + i1 * (p).sb[1] + i2 * (p).sb[2];           \
                size_t bo = i0 * (p).so[0] + i1 * (p).so[1] + i2 * (p).so[2];           \
                size_t sa3 = (p).sa[3], sb3 = (p).sb[3];                                \
                for (int i3 = 0; i3 < (p).shape[3]; i3++) {                             \
                    size_t ia = ba + i3 * sa3, ib = bb + i3 * sb3, io = bo + i3;        \
                    BODY;                                                               \
                }                                                                       \
            }

/* b is a row [N] (or [1,N]) added to every row of a [M,N]: the bias case. */
static bool row_bias(const bt_tensor *a, const bt_tensor *b)
{
    return a->ndim == 2 && b->size == (size_t)a->shape[1] && b->ndim >= 1 &&
           b->shape[b->ndim - 1] == a->shape[1] && b->size != a->size;
}

static void ew_forward(bt_node *n)
{
    const bt_tensor *a = n->in[0], *b = n->in[1];
    bt_real *o = n->out->data;
    const bt_real *x = a->data, *y = b->data;
    if (bt_shape_equal(a, b)) { /* the fast, vectorisable path */
        size_t len = a->size;
        switch (n->iarg[0]) {
        case EW_ADD: for (size_t i = 0; i < len; i++) o[i] = x[i] + y[i]; break;
        case EW_SUB: for (size_t i = 0; i < len; i++) o[i] = x[i] - y[i]; break;
        case EW_MUL: for (size_t i = 0; i < len; i++) o[i] = x[i] * y[i]; break;
        default: BT_ASSERT(false, "elementwise op of kind %d", n->iarg[0]);
        }
        return;
    }
    if (row_bias(a, b) && n->iarg[0] == EW_ADD) {
        size_t cols = (size_t)a->shape[1];
        for (size_t r = 0, rows = (size_t)a->shape[0]; r < rows; r++)
            for (size_t j = 0; j < cols; j++)
                o[r * cols + j] = x[r * cols + j] + y[j];
        return;
    }
    plan p;
    BT_ASSERT(make_plan(a, b, &p), "%s and %s broadcast when the op was recorded", bt_shp(a),
              bt_shp(b));
    switch (n->iarg[0]) {
    case EW_ADD: FOR_EACH_BCAST(p, o[io] = x[ia] + y[ib]); break;
    case EW_SUB: FOR_EACH_BCAST(p, o[io] = x[ia] - y[ib]); break;
    case EW_MUL: FOR_EACH_BCAST(p, o[io] = x[ia] * y[ib]); break;
    default: BT_ASSERT(false, "elementwise op of kind %d", n->iarg[0]);
    }
}

static void ew_backward(bt_node *n)
{
    bt_tensor *a = n->in[0], *b = n->in[1];
    const bt_real *go = n->out->grad, *x = a->data, *y = b->data;
    bt_real *ga = a->requires_grad ? a->grad : NULL, *gb = b->requires_grad ? b->grad : NULL;
    if (n->iarg[0] == EW_ADD && (bt_shape_equal(a, b) || row_bias(a, b))) {
        size_t cols = b->size, rows = a->size / cols;
        if (ga)
            for (size_t i = 0; i < a->size; i++)
                ga[i] += go[i];
        if (gb)
            for (size_t r = 0; r < rows; r++)
                for (size_t j = 0; j < cols; j++)
                    gb[j] += go[r * cols + j];
        return;
    }
    plan p;
    BT_ASSERT(make_plan(a, b, &p), "%s and %s broadcast when the op was recorded", bt_shp(a),
              bt_shp(b));
    switch (n->iarg[0]) {
    case EW_ADD:
        FOR_EACH_BCAST(p, { if (ga) ga[ia] += go[io]; if (gb) gb[ib] += go[io]; });
        break;
    case EW_SUB:
        FOR_EACH_BCAST(p, { if (ga) ga[ia] += go[io]; if (gb) gb[ib] -= go[io]; });
        break;
    case EW_MUL:
        FOR_EACH_BCAST(p, {
            if (ga) ga[ia] += go[io] * y[ib];
            if (gb) gb[ib] += go[io] * x[ia];
        });
        break;
    default: BT_ASSERT(false, "elementwise op of kind %d", n->iarg[0]);
    }
}

/* out' = a' + b', a' - b', or a' y + x b' (product rule), NULL tangents zero. */
static void ew_jvp(bt_node *n)
{
    const bt_tensor *a = n->in[0], *b = n->in[1];
    const bt_real *x = a->data, *y = b->data, *ta = a->tangent, *tb = b->tangent;
    bt_real *to = bt_node_tangent(n);
    if (!to)
        return;
    int kind = n->iarg[0];
    bt_real sb = kind == EW_SUB ? -1 : 1;
    if (bt_shape_equal(a, b)) {
        for (size_t i = 0, len = a->size; ta && i < len; i++)
            to[i] += kind == EW_MUL ? ta[i] * y[i] : ta[i];
        for (size_t i = 0, len = b->size; tb && i < len; i++)
            to[i] += kind == EW_MUL ? x[i] * tb[i] : sb * tb[i];
        return;
    }
    plan p;
    BT_ASSERT(make_plan(a, b, &p), "%s and %s broadcast when the op was recorded", bt_shp(a),
              bt_shp(b));
    if (kind == EW_MUL) {
        FOR_EACH_BCAST(p, {
            if (ta) to[io] += ta[ia] * y[ib];
            if (tb) to[io] += x[ia] * tb[ib];
        });
    } else {
        FOR_EACH_BCAST(p, {
            if (ta) to[io] += ta[ia];
            if (tb) to[io] += sb * tb[ib];
        });
    }
}

static const bt_op op_add = {"add", 2, ew_forward, ew_backward, ew_jvp};
static const bt_op op_sub = {"sub", 2, ew_forward, ew_backward, ew_jvp};
static const bt_op op_mul = {"mul", 2, ew_forward, ew_backward, ew_jvp};

static bt_tensor *elementwise(bt_graph *g, const bt_op *op, int kind, bt_tensor *a, bt_tensor *b)
{
    bt_tensor *in[2] = {a, b};
    if (!bt_op_begin(g, in, 2))
        return NULL;
    plan p;
    if (!make_plan(a, b, &p)) {
        bt_graph_fail(g, BT_ERR_SHAPE,
                      "%s: shapes %s and %s do not broadcast (each dim, aligned right, must "
                      "be equal or 1)",
                      op->name, bt_shp(a), bt_shp(b));
        return NULL;
    }
    /* The output has the rank of the larger operand. */
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    int shape[4];
    for (int d = 0; d < nd; d++)
        shape[d] = p.shape[4 - nd + d];
    bt_tensor *out = bt_op_output(g, nd, shape);
    if (!out)
        return NULL;
    bt_node *n = bt_graph_record(g, op, out, in, 2);
    if (!n)
        return NULL;
    n->iarg[0] = kind;
    op->forward(n);
    return out;
}

bt_tensor *bt_add(bt_graph *g, bt_tensor *a, bt_tensor *b) { return elementwise(g, &op_add, EW_ADD, a, b); }
bt_tensor *bt_sub(bt_graph *g, bt_tensor *a, bt_tensor *b) { return elementwise(g, &op_sub, EW_SUB, a, b); }
bt_tensor *bt_mul(bt_graph *g, bt_tensor *a, bt_tensor *b) { return elementwise(g, &op_mul, EW_MUL, a, b); }
