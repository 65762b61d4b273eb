/* graph.c: the tape. Op constructors record nodes in creation order; backward
 * walks them in reverse, so no topological sort is ever needed. Everything a
 * window creates (tensors, nodes, gradients) lives in one arena. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "graph_internal.h"

/* A deferred weight-gradient product, see bt_graph_defer_wgrad. */
typedef struct deferred {
    bt_tensor *w;
    const bt_real *a, *d;
    int m;
    struct deferred *next;
} deferred;

struct bt_graph {
    bt_arena *arena;
    deferred *deferred; /* newest first */
    bt_node *last; /* newest node; ->prev walks back in time */
    size_t n_nodes;
    bool grad_enabled;
    bt_status status;
    char error[BT_ERRMSG_LEN];
};

bt_graph *bt_graph_new(void)
{
    bt_graph *g = bt_calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->arena = bt_arena_new((size_t)1 << 20);
    if (!g->arena) {
        bt_free(g);
        return NULL;
    }
    g->grad_enabled = true;
    return g;
}

void bt_graph_free(bt_graph *g)
{
    if (!g)
        return;
    bt_arena_free(g->arena);
    bt_free(g);
}

void bt_graph_reset(bt_graph *g)
{
    bt_arena_reset(g->arena);
    g->last = NULL;
    g->n_nodes = 0;
    g->deferred = NULL;
    bt_graph_clear_error(g);
}

void bt_graph_set_grad(bt_graph *g, bool enabled) { g->grad_enabled = enabled; }
bool bt_graph_grad_enabled(const bt_graph *g) { return g->grad_enabled; }
size_t bt_graph_node_count(const bt_graph *g) { return g->n_nodes; }
bt_arena *bt_graph_arena(bt_graph *g) { return g->arena; }
bt_status bt_graph_status(const bt_graph *g) { return g ? g->status : BT_ERR_ARG; }
const char *bt_graph_error(const bt_graph *g) { return g ? g->error : "no graph"; }

void bt_graph_clear_error(bt_graph *g)
{
    g->status = BT_OK;
    g->error[0] = '\0';
}

bt_status bt_graph_fail(bt_graph *g, bt_status s, const char *fmt, ...)
{
    if (g->status != BT_OK)
        return g->status; /* the first error is the one worth reading */
    g->status = s;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->error, sizeof g->error, fmt, ap);
    va_end(ap);
    return s;
}

const char *bt_shp(const bt_tensor *t)
{
    static _Thread_local char bufs[4][64];
    static _Thread_local int next;
    char *b = bufs[next++ & 3];
    return bt_shape_str(t, b, 64);
}

static bt_tensor *tensor_in_arena(bt_graph *g, int ndim, const int *shape, bool zero)
{
    if (ndim < 0 || ndim > BT_MAX_DIMS) {
        bt_graph_fail(g, BT_ERR_SHAPE, "tensor of %d dimensions: at most %d are supported",
                      ndim, BT_MAX_DIMS);
        return NULL;
    }
    size_t size = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] <= 0) {
            bt_graph_fail(g, BT_ERR_SHAPE, "dimension %d has size %d: sizes must be positive",
                          i, shape[i]);
            return NULL;
        }
        size *= (size_t)shape[i];
    }
    bt_tensor *t = bt_arena_alloc(g->arena, sizeof *t);
    bt_real *data = t ? (zero ? bt_arena_calloc : bt_arena_alloc)(g->arena, size * sizeof(bt_real)) : NULL;
    if (!data) {
        bt_graph_fail(g, BT_ERR_NOMEM, "out of memory for a tensor of %zu values", size);
        return NULL;
    }
    memset(t, 0, sizeof *t);
    t->ndim = ndim;
    if (ndim)
        memcpy(t->shape, shape, sizeof(int) * (size_t)ndim);
    t->size = size;
    t->data = data;
    return t;
}

bt_tensor *bt_graph_tensor(bt_graph *g, int ndim, const int *shape)
{
    return tensor_in_arena(g, ndim, shape, true);
}

bt_tensor *bt_graph_tensor2(bt_graph *g, int rows, int cols)
{
    int shape[2] = {rows, cols};
    return tensor_in_arena(g, 2, shape, true);
}

bt_tensor *bt_graph_input(bt_graph *g, int ndim, const int *shape, const bt_real *data)
{
    bt_tensor *t = tensor_in_arena(g, ndim, shape, false);
    if (t)
        memcpy(t->data, data, t->size * sizeof(bt_real));
    return t;
}

bool bt_op_begin(bt_graph *g, bt_tensor *const *in, int n_in)
{
    if (!g || g->status != BT_OK)
        return false;
    for (int i = 0; i < n_in; i++)
        if (!in[i]) {
            bt_graph_fail(g, BT_ERR_ARG, "input %d of an op is NULL", i);
            return false;
        }
    return true;
}

bt_tensor *bt_op_output(bt_graph *g, int ndim, const int *shape)
{
    return tensor_in_arena(g, ndim, shape, false);
}

void *bt_op_scratch(bt_graph *g, size_t bytes)
{
    void *p = bt_arena_alloc(g->arena, bytes);
    if (!p)
        bt_graph_fail(g, BT_ERR_NOMEM, "out of memory for %zu bytes of op scratch", bytes);
    return p;
}

bt_node *bt_graph_record(bt_graph *g, const bt_op *op, bt_tensor *out, bt_tensor *const *in,
                         int n_in)
{
    bool needs_grad = false;
    for (int i = 0; i < n_in; i++)
        needs_grad |= in[i]->requires_grad;
    bt_node *n = NULL;
    if (g->grad_enabled && needs_grad) {
        n = bt_arena_alloc(g->arena, sizeof *n);
        bt_tensor **ins = n ? bt_arena_alloc(g->arena, sizeof(bt_tensor *) * (size_t)n_in) : NULL;
        if (!ins) {
            bt_graph_fail(g, BT_ERR_NOMEM, "out of memory recording op %s", op->name);
            return NULL;
        }
        memcpy(ins, in, sizeof(bt_tensor *) * (size_t)n_in);
        memset(n, 0, sizeof *n);
        n->in = ins;
        n->n_in = n_in;
        n->prev = g->last;
        g->last = n;
        g->n_nodes++;
        out->requires_grad = true;
        out->node = n;
    } else {
        /* No-grad: a transient node on the stack-like arena tail carries the
         * arguments to forward; it is not linked into the tape. */
        n = bt_arena_alloc(g->arena, sizeof *n);
        if (!n) {
            bt_graph_fail(g, BT_ERR_NOMEM, "out of memory running op %s", op->name);
            return NULL;
        }
        memset(n, 0, sizeof *n);
        n->in = (bt_tensor **)in;
        n->n_in = n_in;
    }
    n->op = op;
    n->graph = g;
    n->out = out;
    return n;
}

bt_real *bt_graph_grad_of(bt_graph *g, bt_tensor *t)
{
    if (!t->grad) {
        t->grad = bt_arena_calloc(g->arena, t->size * sizeof(bt_real));
        if (!t->grad)
            bt_graph_fail(g, BT_ERR_NOMEM, "out of memory for a gradient of %zu values", t->size);
    }
    return t->grad;
}

void bt_graph_defer_wgrad(bt_graph *g, bt_tensor *w, const bt_real *a, const bt_real *d, int m)
{
    deferred *r = bt_arena_alloc(g->arena, sizeof *r);
    if (!r) {
        /* No room to defer: do the product now, which is always correct. */
        bt_gemm(true, false, w->shape[0], w->shape[1], m, 1, a, w->shape[0], d, w->shape[1], 1,
                w->grad, w->shape[1]);
        return;
    }
    *r = (deferred){w, a, d, m, g->deferred};
    g->deferred = r;
}

/* Runs the deferred products, one GEMM per weight over all its rows. Records
 * are newest first; stacking them oldest first keeps the order of the terms
 * that a per-step accumulation would have used. Linear in the records. */
#define MAX_DEFERRED_WEIGHTS 32
static void flush_deferred(bt_graph *g)
{
    typedef struct group { bt_tensor *w; size_t rows, at; bt_real *a, *d; } group;
    group grp[MAX_DEFERRED_WEIGHTS];
    int n_grp = 0;
    for (deferred *r = g->deferred; r; r = r->next) {
        int i = 0;
        while (i < n_grp && grp[i].w != r->w)
            i++;
        if (i == n_grp) {
            if (n_grp == MAX_DEFERRED_WEIGHTS) { /* unusual: more weights than slots */
                bt_gemm(true, false, r->w->shape[0], r->w->shape[1], r->m, 1, r->a,
                        r->w->shape[0], r->d, r->w->shape[1], 1, r->w->grad, r->w->shape[1]);
                r->w = NULL;
                continue;
            }
            grp[n_grp++] = (group){r->w, 0, 0, NULL, NULL};
        }
        grp[i].rows += (size_t)r->m;
    }
    for (int i = 0; i < n_grp; i++) {
        size_t k = (size_t)grp[i].w->shape[0], n = (size_t)grp[i].w->shape[1];
        grp[i].a = bt_arena_alloc(g->arena, sizeof(bt_real) * grp[i].rows * k);
        grp[i].d = grp[i].a ? bt_arena_alloc(g->arena, sizeof(bt_real) * grp[i].rows * n) : NULL;
        grp[i].at = grp[i].rows;
    }
    for (deferred *r = g->deferred; r; r = r->next) {
        if (!r->w)
            continue;
        int i = 0;
        while (grp[i].w != r->w)
            i++;
        size_t k = (size_t)r->w->shape[0], n = (size_t)r->w->shape[1];
        if (!grp[i].d) { /* no memory to stack: one product each, still correct */
            bt_gemm(true, false, (int)k, (int)n, r->m, 1, r->a, (int)k, r->d, (int)n, 1,
                    r->w->grad, (int)n);
            continue;
        }
        grp[i].at -= (size_t)r->m; /* newest first: fill from the bottom up */
        memcpy(grp[i].a + grp[i].at * k, r->a, sizeof(bt_real) * (size_t)r->m * k);
        memcpy(grp[i].d + grp[i].at * n, r->d, sizeof(bt_real) * (size_t)r->m * n);
    }
    for (int i = 0; i < n_grp; i++)
        if (grp[i].d) {
            int k = grp[i].w->shape[0], n = grp[i].w->shape[1];
            bt_gemm(true, false, k, n, (int)grp[i].rows, 1, grp[i].a, k, grp[i].d, n, 1,
                    grp[i].w->grad, n);
        }
    g->deferred = NULL;
}

bt_status bt_backward_from(bt_graph *g, bt_tensor *out, const bt_real *dout)
{
    if (!g)
        return BT_ERR_ARG;
    if (g->status != BT_OK)
        return g->status;
    if (!out)
        return bt_graph_fail(g, BT_ERR_ARG, "backward from a NULL tensor");
    if (!out->requires_grad)
        return bt_graph_fail(g, BT_ERR_ARG,
                             "backward from a tensor that does not depend on anything that "
                             "requires a gradient");
    /* Intermediate gradients of an earlier sweep are stale: forget them. Leaf
     * gradients (parameters) are not node outputs and keep accumulating. */
    for (bt_node *n = g->last; n; n = n->prev)
        n->out->grad = NULL;
    bt_real *seed = bt_graph_grad_of(g, out);
    if (!seed)
        return g->status;
    for (size_t i = 0; i < out->size; i++)
        seed[i] += dout[i];
    for (bt_node *n = g->last; n; n = n->prev) {
        if (!n->out->grad)
            continue; /* nothing flows back through this node */
        for (int i = 0; i < n->n_in; i++)
            if (n->in[i]->requires_grad && !bt_graph_grad_of(g, n->in[i]))
                return g->status;
        n->op->backward(n);
    }
    flush_deferred(g);
    return g->status;
}

bt_status bt_backward(bt_graph *g, bt_tensor *loss)
{
    if (!g)
        return BT_ERR_ARG;
    if (loss && loss->size != 1)
        return bt_graph_fail(g, BT_ERR_SHAPE,
                             "backward needs a scalar loss, got shape %s: reduce it with "
                             "bt_sum or bt_mean first",
                             bt_shp(loss));
    bt_real one = 1;
    return bt_backward_from(g, loss, &one);
}
