/* graph.c: the tape. Op constructors record nodes in creation order; backward
 * walks them in reverse, so no topological sort is ever needed. Everything a
 * window creates (tensors, nodes, gradients) lives in one arena. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "bt_assert.h"
#include "graph_internal.h"

/* A deferred weight-gradient product dW += A^T D (see bt_graph_defer_wgrad).
 * D is the gradient buffer of `owner`'s output, which stays pinned until the
 * product has run. */
typedef struct deferred {
    const bt_real *a, *d;
    int m;
    bt_node *owner;
    struct deferred *next;
} deferred;

/* The deferred products of one weight, newest first. */
typedef struct wgroup {
    bt_tensor *w;
    deferred *head;
    size_t rows;
} wgroup;

#define MAX_WGROUPS 32
#define POOL_CLASSES 16
/* A group runs once its stacked operands would exceed this many values, so
 * long windows keep a bounded number of gradients pinned. */
#define FLUSH_VALUES ((size_t)1 << 21)

struct bt_graph {
    bt_arena *arena;
    wgroup groups[MAX_WGROUPS];
    int n_groups;
    bt_node *running;   /* node whose backward is running */
    bt_real *scratch;   /* stacking buffer for the grouped products (heap, kept) */
    size_t scratch_cap;
    /* Gradient buffers already consumed in this sweep, by byte size: backward
     * reuses them instead of growing the arena. */
    struct { size_t bytes; void *head; } pool[POOL_CLASSES];
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
    bt_free(g->scratch);
    bt_free(g);
}

void bt_graph_reset(bt_graph *g)
{
    BT_ASSERT(g, "bt_graph_reset: no graph (a window needs the graph it was built on)");
    bt_arena_reset(g->arena);
    g->last = NULL;
    g->n_nodes = 0;
    g->n_groups = 0;
    memset(g->pool, 0, sizeof g->pool);
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
    size_t size;
    char why[BT_ERRMSG_LEN];
    bt_status st = bt_shape_size(ndim, shape, &size, why, sizeof why);
    if (st != BT_OK) {
        bt_graph_fail(g, st, "%s", why);
        return NULL;
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

static void pool_put(bt_graph *g, void *buf, size_t bytes)
{
    for (int i = 0; i < POOL_CLASSES; i++)
        if (g->pool[i].bytes == bytes || !g->pool[i].head) {
            g->pool[i].bytes = bytes;
            *(void **)buf = g->pool[i].head; /* arena blocks hold at least 64 bytes */
            g->pool[i].head = buf;
            return;
        }
    /* Too many distinct sizes: leave this one to the arena reset. */
}

static void *pool_get(bt_graph *g, size_t bytes)
{
    for (int i = 0; i < POOL_CLASSES; i++)
        if (g->pool[i].bytes == bytes && g->pool[i].head) {
            void *buf = g->pool[i].head;
            g->pool[i].head = *(void **)buf;
            return buf;
        }
    return NULL;
}

bt_real *bt_graph_grad_of(bt_graph *g, bt_tensor *t)
{
    if (!t->grad) {
        size_t bytes = t->size * sizeof(bt_real);
        void *buf = pool_get(g, bytes);
        if (buf)
            memset(buf, 0, bytes);
        else
            buf = bt_arena_calloc(g->arena, bytes);
        t->grad = buf;
        if (!t->grad)
            bt_graph_fail(g, BT_ERR_NOMEM, "out of memory for a gradient of %zu values", t->size);
    }
    return t->grad;
}

/* A consumed gradient goes back to the pool, unless the caller keeps it or a
 * deferred product still reads it. */
static void release_grad(bt_graph *g, bt_node *n)
{
    if (n->pins == 0 && n->out->grad && !n->out->retain_grad) {
        pool_put(g, n->out->grad, n->out->size * sizeof(bt_real));
        n->out->grad = NULL;
    }
}

/* Runs one group's products as a single GEMM over the stacked rows (oldest
 * first, the order a per-step accumulation would have used), then unpins. */
static void flush_group(bt_graph *g, wgroup *grp)
{
    bt_tensor *w = grp->w;
    size_t k = (size_t)w->shape[0], n = (size_t)w->shape[1];
    size_t need = grp->rows * (k + n);
    if (grp->head && grp->head->next && need > g->scratch_cap) {
        bt_real *s = bt_realloc(g->scratch, need * sizeof(bt_real));
        if (s) {
            g->scratch = s;
            g->scratch_cap = need;
        }
    }
    bool stack = grp->head && grp->head->next && need <= g->scratch_cap;
    bt_real *a = g->scratch, *d = g->scratch + grp->rows * k;
    size_t at = grp->rows;
    for (deferred *r = grp->head; r; r = r->next) {
        if (stack) { /* newest first: fill from the bottom up */
            at -= (size_t)r->m;
            memcpy(a + at * k, r->a, sizeof(bt_real) * (size_t)r->m * k);
            memcpy(d + at * n, r->d, sizeof(bt_real) * (size_t)r->m * n);
        } else /* one record, or no memory to stack: the product as it is */
            bt_gemm(true, false, (int)k, (int)n, r->m, 1, r->a, (int)k, r->d, (int)n, 1, w->grad,
                    (int)n);
    }
    if (stack)
        bt_gemm(true, false, (int)k, (int)n, (int)grp->rows, 1, a, (int)k, d, (int)n, 1, w->grad,
                (int)n);
    for (deferred *r = grp->head; r; r = r->next)
        if (r->owner && --r->owner->pins == 0 && r->owner != g->running)
            release_grad(g, r->owner);
    grp->head = NULL;
    grp->rows = 0;
}

void bt_graph_defer_wgrad(bt_graph *g, bt_tensor *w, const bt_real *a, const bt_real *d, int m)
{
    int i = 0;
    while (i < g->n_groups && g->groups[i].w != w)
        i++;
    deferred *r = i < MAX_WGROUPS ? bt_arena_alloc(g->arena, sizeof *r) : NULL;
    if (!r) { /* no room to defer: the product now is always correct */
        bt_gemm(true, false, w->shape[0], w->shape[1], m, 1, a, w->shape[0], d, w->shape[1], 1,
                w->grad, w->shape[1]);
        return;
    }
    if (i == g->n_groups)
        g->groups[g->n_groups++] = (wgroup){w, NULL, 0};
    wgroup *grp = &g->groups[i];
    *r = (deferred){a, d, m, g->running, grp->head};
    if (g->running)
        g->running->pins++;
    grp->head = r;
    grp->rows += (size_t)m;
    if (grp->rows * (size_t)(w->shape[0] + w->shape[1]) >= FLUSH_VALUES)
        flush_group(g, grp);
}

static void flush_deferred(bt_graph *g)
{
    for (int i = 0; i < g->n_groups; i++)
        if (g->groups[i].head)
            flush_group(g, &g->groups[i]);
    g->n_groups = 0;
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
    for (bt_node *n = g->last; n; n = n->prev)
        n->pins = 0;
    for (bt_node *n = g->last; n; n = n->prev) {
        if (!n->out->grad)
            continue; /* nothing flows back through this node */
        for (int i = 0; i < n->n_in; i++)
            if (n->in[i]->requires_grad && !bt_graph_grad_of(g, n->in[i])) {
                flush_deferred(g);
                return g->status;
            }
        g->running = n;
        n->op->backward(n);
        g->running = NULL;
        release_grad(g, n); /* its consumers all ran before it: nobody reads it again */
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
