/* tensor.c: standalone tensors (heap) and shape helpers, including the one
 * shape check every tensor maker uses. Tensors made by ops live in a graph's
 * arena instead (graph.c). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "bptt.h"

bt_status bt_shape_size(int ndim, const int *shape, size_t *size, char *err, size_t errlen)
{
    if (ndim < 0 || ndim > BT_MAX_DIMS)
        return bt_error(err, errlen, BT_ERR_SHAPE,
                        "a tensor of %d dimensions: 0 to %d are supported", ndim, BT_MAX_DIMS);
    if (ndim > 0 && !shape)
        return bt_error(err, errlen, BT_ERR_ARG, "a tensor of %d dimensions needs a shape", ndim);
    /* The product must count bytes too: size * sizeof(bt_real) may not wrap. */
    const size_t max = SIZE_MAX / sizeof(bt_real);
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] <= 0)
            return bt_error(err, errlen, BT_ERR_SHAPE,
                            "dimension %d has size %d: sizes must be positive", i, shape[i]);
        if (n > max / (size_t)shape[i])
            return bt_error(err, errlen, BT_ERR_SHAPE,
                            "a tensor with dimension %d of size %d has more values than memory "
                            "can address", i, shape[i]);
        n *= (size_t)shape[i];
    }
    *size = n;
    return BT_OK;
}

bt_status bt_tensor_new(int ndim, const int *shape, bool requires_grad, bt_tensor **out,
                        char *err, size_t errlen)
{
    if (!out)
        return bt_error(err, errlen, BT_ERR_ARG, "bt_tensor_new: out is required");
    *out = NULL;
    size_t size;
    bt_status st = bt_shape_size(ndim, shape, &size, err, errlen);
    if (st != BT_OK)
        return st;
    bt_tensor *t = bt_calloc(1, sizeof *t);
    if (!t)
        return bt_error(err, errlen, BT_ERR_NOMEM, "out of memory for a tensor");
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
        return bt_error(err, errlen, BT_ERR_NOMEM, "out of memory for a tensor of %zu values",
                        size);
    }
    *out = t;
    return BT_OK;
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
