/* params.c: the model-lifetime block. Every parameter's values sit in one
 * allocation and every gradient in a second with the same layout (llm.c's
 * habit), so optimizers, clipping and checkpoints are flat loops.
 * Errors are sticky, like the graph's: declare every parameter, then one check
 * of bt_params_finalize's status (and bt_params_error) covers them all. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "bptt.h"
#include "first_error.h"

struct bt_params {
    bt_tensor **tensors;
    int count, cap;
    size_t total;
    bt_real *data, *grad;
    bool finalized;
    bool shares;      /* data is another block's (bt_params_share_values) */
    bt_status status; /* the first error, kept until the block is freed */
    char error[BT_ERRMSG_LEN];
};

bt_params *bt_params_new(void) { return bt_calloc(1, sizeof(bt_params)); }

void bt_params_free(bt_params *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->count; i++) {
        bt_free((char *)p->tensors[i]->name);
        bt_free(p->tensors[i]);
    }
    bt_free(p->tensors);
    if (!p->shares)
        bt_free(p->data);
    bt_free(p->grad);
    bt_free(p);
}

bt_status bt_params_status(const bt_params *p) { return p ? p->status : BT_ERR_ARG; }
const char *bt_params_error(const bt_params *p) { return p ? p->error : "no parameter block"; }

__attribute__((format(printf, 3, 4))) static bt_status fail(bt_params *p, bt_status s,
                                                            const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bt_first_error(&p->status, p->error, sizeof p->error, s, fmt, ap);
    va_end(ap);
    return s;
}

/* Why name/shape cannot be added (BT_OK when they can); size gets the values. */
static bt_status check_new(bt_params *p, const char *name, int ndim, const int *shape,
                           size_t *size)
{
    if (!name)
        return fail(p, BT_ERR_ARG, "a parameter needs a name");
    if (p->finalized)
        return fail(p, BT_ERR_ARG, "parameter '%s' is declared after bt_params_finalize", name);
    if (bt_params_find(p, name))
        return fail(p, BT_ERR_ARG, "parameter '%s' is declared twice", name);
    char why[BT_ERRMSG_LEN / 2];
    bt_status st = bt_shape_size(ndim, shape, size, why, sizeof why);
    if (st != BT_OK)
        return fail(p, st, "parameter '%s': %s", name, why);
    if (p->count == p->cap) {
        int cap = p->cap ? 2 * p->cap : 8;
        bt_tensor **t = bt_realloc(p->tensors, sizeof(*t) * (size_t)cap);
        if (!t)
            return fail(p, BT_ERR_NOMEM, "out of memory declaring parameter '%s'", name);
        p->tensors = t;
        p->cap = cap;
    }
    return BT_OK;
}

bt_tensor *bt_params_add(bt_params *p, const char *name, int ndim, const int *shape)
{
    size_t size;
    if (!p || check_new(p, name, ndim, shape, &size) != BT_OK)
        return NULL;
    bt_tensor *t = bt_calloc(1, sizeof *t);
    char *copy = bt_malloc(strlen(name) + 1);
    if (!t || !copy) {
        bt_free(t);
        bt_free(copy);
        fail(p, BT_ERR_NOMEM, "out of memory declaring parameter '%s'", name);
        return NULL;
    }
    strcpy(copy, name);
    t->ndim = ndim;
    if (ndim)
        memcpy(t->shape, shape, sizeof(int) * (size_t)ndim);
    t->size = size;
    t->requires_grad = true;
    t->param = true; /* a weight: ops may batch its gradient (wgrad.c) */
    t->name = copy;
    p->tensors[p->count++] = t;
    p->total += size;
    return t;
}

bt_status bt_params_finalize(bt_params *p)
{
    if (!p)
        return BT_ERR_ARG;
    if (p->status != BT_OK)
        return p->status;
    if (p->finalized)
        return fail(p, BT_ERR_ARG, "bt_params_finalize is called twice");
    p->data = bt_calloc(p->total, sizeof(bt_real));
    p->grad = bt_calloc(p->total, sizeof(bt_real));
    if (!p->data || !p->grad)
        return fail(p, BT_ERR_NOMEM, "out of memory for %zu parameter values", p->total);
    size_t off = 0;
    for (int i = 0; i < p->count; i++) {
        p->tensors[i]->data = p->data + off;
        p->tensors[i]->grad = p->grad + off;
        off += p->tensors[i]->size;
    }
    p->finalized = true;
    return BT_OK;
}

bt_status bt_params_share_values(bt_params *p, bt_params *from)
{
    if (!p || !from || !p->finalized || !from->finalized || p->shares || p->count != from->count ||
        p->total != from->total)
        return BT_ERR_ARG;
    for (int i = 0; i < p->count; i++)
        if (p->tensors[i]->size != from->tensors[i]->size ||
            strcmp(p->tensors[i]->name, from->tensors[i]->name) != 0)
            return BT_ERR_ARG;
    bt_free(p->data);
    p->data = from->data;
    p->shares = true;
    for (int i = 0; i < p->count; i++)
        p->tensors[i]->data = from->tensors[i]->data;
    return BT_OK;
}

int bt_params_count(const bt_params *p) { return p->count; }
bt_tensor *bt_params_at(bt_params *p, int i) { return (i >= 0 && i < p->count) ? p->tensors[i] : NULL; }

bt_tensor *bt_params_find(bt_params *p, const char *name)
{
    for (int i = 0; i < p->count; i++)
        if (strcmp(p->tensors[i]->name, name) == 0)
            return p->tensors[i];
    return NULL;
}

size_t bt_params_total(const bt_params *p) { return p->total; }
bt_real *bt_params_data(bt_params *p) { return p->data; }
bt_real *bt_params_grad(bt_params *p) { return p->grad; }

void bt_params_zero_grad(bt_params *p)
{
    if (p->grad)
        memset(p->grad, 0, p->total * sizeof(bt_real));
}

double bt_params_grad_norm(const bt_params *p)
{
    double s = 0;
    for (size_t i = 0; i < p->total; i++)
        s += (double)p->grad[i] * (double)p->grad[i];
    return sqrt(s);
}
