/* params.c: the model-lifetime block. Every parameter's values sit in one
 * allocation and every gradient in a second with the same layout (llm.c's
 * habit), so optimizers, clipping and checkpoints are flat loops. */
#include <math.h>
#include <string.h>

#include "bptt.h"

struct bt_params {
    bt_tensor **tensors;
    char **names;
    int count, cap;
    size_t total;
    bt_real *data, *grad;
    bool finalized;
};

bt_params *bt_params_new(void) { return bt_calloc(1, sizeof(bt_params)); }

void bt_params_free(bt_params *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->count; i++) {
        bt_free(p->tensors[i]);
        bt_free(p->names[i]);
    }
    bt_free(p->tensors);
    bt_free(p->names);
    bt_free(p->data);
    bt_free(p->grad);
    bt_free(p);
}

bt_tensor *bt_params_add(bt_params *p, const char *name, int ndim, const int *shape)
{
    if (!p || p->finalized || !name || ndim < 0 || ndim > BT_MAX_DIMS || bt_params_find(p, name))
        return NULL;
    size_t size = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] <= 0)
            return NULL;
        size *= (size_t)shape[i];
    }
    if (p->count == p->cap) {
        int cap = p->cap ? 2 * p->cap : 8;
        bt_tensor **t = bt_realloc(p->tensors, sizeof(*t) * (size_t)cap);
        if (!t)
            return NULL;
        p->tensors = t;
        char **n = bt_realloc(p->names, sizeof(*n) * (size_t)cap);
        if (!n)
            return NULL;
        p->names = n;
        p->cap = cap;
    }
    bt_tensor *t = bt_calloc(1, sizeof *t);
    char *copy = bt_malloc(strlen(name) + 1);
    if (!t || !copy) {
        bt_free(t);
        bt_free(copy);
        return NULL;
    }
    strcpy(copy, name);
    t->ndim = ndim;
    if (ndim)
        memcpy(t->shape, shape, sizeof(int) * (size_t)ndim);
    t->size = size;
    t->requires_grad = true;
    t->name = copy;
    p->tensors[p->count] = t;
    p->names[p->count] = copy;
    p->count++;
    p->total += size;
    return t;
}

bt_status bt_params_finalize(bt_params *p)
{
    if (!p || p->finalized)
        return BT_ERR_ARG;
    p->data = bt_calloc(p->total, sizeof(bt_real));
    p->grad = bt_calloc(p->total, sizeof(bt_real));
    if (!p->data || !p->grad)
        return BT_ERR_NOMEM;
    size_t off = 0;
    for (int i = 0; i < p->count; i++) {
        p->tensors[i]->data = p->data + off;
        p->tensors[i]->grad = p->grad + off;
        off += p->tensors[i]->size;
    }
    p->finalized = true;
    return BT_OK;
}

int bt_params_count(const bt_params *p) { return p->count; }
bt_tensor *bt_params_at(bt_params *p, int i) { return (i >= 0 && i < p->count) ? p->tensors[i] : NULL; }

bt_tensor *bt_params_find(bt_params *p, const char *name)
{
    for (int i = 0; i < p->count; i++)
        if (strcmp(p->names[i], name) == 0)
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
