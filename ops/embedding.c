/* embedding.c: out[M,N] = table[ids[i], :], the same as one-hot(ids) x table
 * without building the one-hot. Backward scatters rows into dtable; the
 * tangent gathers the same rows of the table's tangent. */
#include <string.h>

#include "bptt_op.h"

static void embedding_forward(bt_node *n)
{
    const bt_tensor *table = n->in[0];
    int width = table->shape[1];
    for (int i = 0; i < n->out->shape[0]; i++)
        memcpy(n->out->data + (size_t)i * width, table->data + (size_t)n->ids[i] * width,
               sizeof(bt_real) * width);
}

static void embedding_backward(bt_node *n)
{
    bt_tensor *table = n->in[0];
    int width = table->shape[1];
    for (int i = 0; i < n->out->shape[0]; i++) {
        const bt_real *src = n->out->grad + (size_t)i * width;
        bt_real *dst = table->grad + (size_t)n->ids[i] * width;
        for (int j = 0; j < width; j++)
            dst[j] += src[j];
    }
}

static void embedding_jvp(bt_node *n)
{
    const bt_tensor *table = n->in[0];
    int width = table->shape[1];
    bt_real *to = bt_node_tangent(n);
    for (int i = 0; to && i < n->out->shape[0]; i++)
        memcpy(to + (size_t)i * width, table->tangent + (size_t)n->ids[i] * width,
               sizeof(bt_real) * width);
}

static const bt_op op_embedding = {"embedding", 1, embedding_forward, embedding_backward,
                                   embedding_jvp};

bt_tensor *bt_embedding(bt_graph *g, bt_tensor *table, const int32_t *ids, int m)
{
    if (!bt_op_begin(g, &table, 1))
        return NULL;
    if (table->ndim != 2 || m <= 0 || !ids) {
        bt_graph_fail(g, BT_ERR_SHAPE, "embedding needs a 2-D table and m > 0 ids, got %s and m = %d",
                      bt_shp(table), m);
        return NULL;
    }
    for (int i = 0; i < m; i++)
        if (ids[i] < 0 || ids[i] >= table->shape[0]) {
            bt_graph_fail(g, BT_ERR_ARG, "embedding: id %d at row %d is outside the table's %d rows",
                          (int)ids[i], i, table->shape[0]);
            return NULL;
        }
    int shape[2] = {m, table->shape[1]};
    bt_tensor *out = bt_op_output(g, 2, shape);
    int32_t *copy = out ? bt_op_scratch(g, sizeof(int32_t) * (size_t)m) : NULL;
    if (!copy)
        return NULL;
    memcpy(copy, ids, sizeof(int32_t) * (size_t)m); /* the caller may reuse its buffer */
    bt_node *n = bt_graph_record(g, &op_embedding, out, &table, 1);
    if (!n)
        return NULL;
    n->ids = copy;
    op_embedding.forward(n);
    return out;
}
