/* feature.c: concat and slice along the last (feature) axis, the plumbing of
 * gates in GRU and LSTM cells. A tensor is seen as [rows, features]. Both are
 * linear: a tangent goes where the data goes. */
#include <string.h>

#include "bptt_op.h"

static int features(const bt_tensor *t) { return t->ndim ? t->shape[t->ndim - 1] : 1; }
static size_t rows(const bt_tensor *t) { return t->size / (size_t)features(t); }

static void concat_forward(bt_node *n)
{
    size_t r = rows(n->out);
    int width = features(n->out), col = 0;
    for (int k = 0; k < n->n_in; k++) {
        int f = features(n->in[k]);
        for (size_t i = 0; i < r; i++)
            memcpy(n->out->data + i * width + col, n->in[k]->data + i * f, sizeof(bt_real) * f);
        col += f;
    }
}

static void concat_backward(bt_node *n)
{
    size_t r = rows(n->out);
    int width = features(n->out), col = 0;
    for (int k = 0; k < n->n_in; k++) {
        int f = features(n->in[k]);
        if (n->in[k]->requires_grad)
            for (size_t i = 0; i < r; i++) {
                const bt_real *src = n->out->grad + i * width + col;
                bt_real *dst = n->in[k]->grad + i * f;
                for (int j = 0; j < f; j++)
                    dst[j] += src[j];
            }
        col += f;
    }
}

static void concat_jvp(bt_node *n)
{
    size_t r = rows(n->out);
    int width = features(n->out), col = 0;
    bt_real *to = bt_node_tangent(n);
    for (int k = 0; to && k < n->n_in; k++) {
        int f = features(n->in[k]);
        if (n->in[k]->tangent) /* else its columns stay zero */
            for (size_t i = 0; i < r; i++)
                memcpy(to + i * width + col, n->in[k]->tangent + i * f, sizeof(bt_real) * f);
        col += f;
    }
}

static const bt_op op_concat = {"concat", -1, concat_forward, concat_backward, concat_jvp};

bt_tensor *bt_concat(bt_graph *g, bt_tensor *const *parts, int n)
{
    if (n <= 0 || !parts) {
        if (g && bt_graph_status(g) == BT_OK)
            bt_graph_fail(g, BT_ERR_ARG, "concat needs at least one tensor");
        return NULL;
    }
    if (!bt_op_begin(g, parts, n))
        return NULL;
    int width = 0;
    for (int k = 0; k < n; k++) {
        const bt_tensor *p = parts[k];
        bool same = p->ndim == parts[0]->ndim;
        for (int d = 0; same && d + 1 < p->ndim; d++)
            same = p->shape[d] == parts[0]->shape[d];
        if (!same || p->ndim == 0) {
            bt_graph_fail(g, BT_ERR_SHAPE,
                          "concat: part %d has shape %s, part 0 has %s: all parts need the "
                          "same leading dims",
                          k, bt_shp(p), bt_shp(parts[0]));
            return NULL;
        }
        width += features(p);
    }
    int shape[BT_MAX_DIMS];
    memcpy(shape, parts[0]->shape, sizeof shape);
    shape[parts[0]->ndim - 1] = width;
    bt_tensor *out = bt_op_output(g, parts[0]->ndim, shape);
    if (!out)
        return NULL;
    bt_node *node = bt_graph_record(g, &op_concat, out, parts, n);
    if (!node)
        return NULL;
    op_concat.forward(node);
    return out;
}

static void slice_forward(bt_node *n)
{
    size_t r = rows(n->out);
    int f = features(n->in[0]), start = n->iarg[0], len = n->iarg[1];
    for (size_t i = 0; i < r; i++)
        memcpy(n->out->data + i * len, n->in[0]->data + i * f + start, sizeof(bt_real) * len);
}

static void slice_backward(bt_node *n)
{
    size_t r = rows(n->out);
    int f = features(n->in[0]), start = n->iarg[0], len = n->iarg[1];
    for (size_t i = 0; i < r; i++) {
        const bt_real *src = n->out->grad + i * len;
        bt_real *dst = n->in[0]->grad + i * f + start;
        for (int j = 0; j < len; j++)
            dst[j] += src[j];
    }
}

static void slice_jvp(bt_node *n)
{
    size_t r = rows(n->out);
    int f = features(n->in[0]), start = n->iarg[0], len = n->iarg[1];
    bt_real *to = bt_node_tangent(n);
    for (size_t i = 0; to && i < r; i++)
        memcpy(to + i * len, n->in[0]->tangent + i * f + start, sizeof(bt_real) * len);
}

static const bt_op op_slice = {"slice", 1, slice_forward, slice_backward, slice_jvp};

bt_tensor *bt_slice(bt_graph *g, bt_tensor *a, int start, int len)
{
    if (!bt_op_begin(g, &a, 1))
        return NULL;
    int f = a->ndim ? features(a) : 0;
    if (a->ndim == 0 || start < 0 || len <= 0 || start > f - len) {
        bt_graph_fail(g, BT_ERR_SHAPE,
                      "slice [%d, %d) is outside the %d features of a tensor of shape %s",
                      start, start + len, f, bt_shp(a));
        return NULL;
    }
    int shape[BT_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[a->ndim - 1] = len;
    bt_tensor *out = bt_op_output(g, a->ndim, shape);
    if (!out)
        return NULL;
    bt_node *n = bt_graph_record(g, &op_slice, out, &a, 1);
    if (!n)
        return NULL;
    n->iarg[0] = start;
    n->iarg[1] = len;
    op_slice.forward(n);
    return out;
}
