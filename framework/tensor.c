/* tensor.c: standalone tensors (heap) and shape helpers. Tensors made by ops
 * live in a graph's arena instead (graph.c). */
#include <stdio.h>
#include <string.h>

#include "bptt.h"

bt_tensor *bt_tensor_new(int ndim, const int *shape, bool requires_grad)
{
    if (ndim < 0 || ndim > BT_MAX_DIMS)
        return NULL;
    size_t size = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] <= 0)
            return NULL;
        size *= (size_t)shape[i];
    }
    bt_tensor *t = bt_calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->ndim = ndim;
    if (ndim)
        memcpy(t->shape, shape, sizeof(int) * (size_t)ndim);
    t->size = size;
    t->data = bt_calloc(size, sizeof(bt_real));
    t->requires_grad = requires_grad;
    if (requires_grad)
        t->grad = bt_calloc(size, sizeof(bt_real));
    if (!t->data || (requires_grad && !t->grad)) {
        bt_tensor_free(t);
        return NULL;
    }
    return t;
}

bt_tensor *bt_tensor_new2(int rows, int cols, bool requires_grad)
{
    int shape[2] = {rows, cols};
    return bt_tensor_new(2, shape, requires_grad);
}

void bt_tensor_free(bt_tensor *t)
{
    if (!t)
        return;
    bt_free(t->data);
    bt_free(t->grad);
    bt_free(t);
}

void bt_tensor_zero_grad(bt_tensor *t)
{
    if (t && t->grad)
        memset(t->grad, 0, t->size * sizeof(bt_real));
}

const char *bt_shape_str(const bt_tensor *t, char *buf, size_t len)
{
    size_t off = 0;
    off += (size_t)snprintf(buf + off, len - off, "[");
    for (int i = 0; t && i < t->ndim && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, i ? ",%d" : "%d", t->shape[i]);
    if (off < len)
        snprintf(buf + off, len - off, "]");
    return buf;
}

bool bt_shape_equal(const bt_tensor *a, const bt_tensor *b)
{
    if (a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    return true;
}
