/* graph.c: the tape. Op constructors record nodes in creation order; backward
 * walks them in reverse and forward mode (bt_jvp) in order, so no topological
 * sort is ever needed. Everything a window creates (tensors, nodes, gradients,
 * tangents) lives in one arena. What makes
 * the walk fast (batched weight gradients, recycled gradient buffers) is in
 * wgrad.c, so this file reads as the algorithm. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "bt_assert.h"
#include "first_error.h"
#include "packed.h"
#include "wgrad.h"

/* A node on the tape: what the op sees, and the links to its neighbours. */
typedef struct tape_node {
    bt_node node; /* first, so an op's bt_node * is its tape node */
    struct tape_node *prev, *next;
    bt_real *tangent; /* its output's tangent buffer, kept across forward-mode sweeps */
} tape_node;

/* The outputs of one recurrent op (key: its recurrent weight) for the steps
 * the unroller planned, side by side in one block of the arena, so that the
 * batched weight gradients read them in place (wgrad.c) instead of stacking
 * a copy. */
#define MAX_LANES 4
typedef struct lane {
    const void *key;
    bt_real *base;
    size_t slot; /* values per output */
    int used;
} lane;

struct bt_graph {
    bt_arena *arena;
    bt_wgrad *wgrad;
    bt_packs *packs;         /* weights packed for this window's products, or NULL */
    tape_node *first, *last; /* oldest and newest node; ->prev walks back in time */
    tape_node *jvp_running;  /* the node whose tangent rule runs, inside bt_jvp */
    int planned_steps;       /* bt_graph_plan_steps since the last rewind, or 0 */
    lane lanes[MAX_LANES];
    int n_lanes;
    size_t n_nodes;
    bool grad_enabled;
    bool grads_given;        /* a tensor got a gradient buffer here since the last rewind */
    bt_status status;
    char error[BT_ERRMSG_LEN];
};

bt_graph *bt_graph_new(void)
{
    bt_graph *g = bt_calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->arena = bt_arena_new((size_t)1 << 20);
    g->wgrad = g->arena ? bt_wgrad_new(g->arena) : NULL;
    if (!g->wgrad) {
        bt_arena_free(g->arena);
        bt_free(g);
        return NULL;
    }
    g->packs = bt_packs_new(); /* NULL (no backend, or no memory): plain products */
    g->grad_enabled = true;
    return g;
}

void bt_graph_free(bt_graph *g)
{
    if (!g)
        return;
    bt_packs_free(g->packs);
    bt_wgrad_free(g->wgrad);
    bt_arena_free(g->arena);
    bt_free(g);
}

/* Everything of the window but the packed weights. */
void bt_graph_rewind(bt_graph *g)
{
    BT_ASSERT(g, "bt_graph_rewind: no graph (a window needs the graph it was built on)");
    bt_arena_reset(g->arena);
    bt_wgrad_reset(g->wgrad);
    g->first = g->last = NULL;
    g->n_nodes = 0;
    g->planned_steps = 0;
    g->n_lanes = 0;
    g->grads_given = false;
    bt_graph_clear_error(g);
}

void bt_graph_reset(bt_graph *g)
{
    BT_ASSERT(g, "bt_graph_reset: no graph (a window needs the graph it was built on)");
    bt_graph_rewind(g);
    bt_packs_reset(g->packs); /* parameters may change between windows */
}

void bt_graph_set_grad(bt_graph *g, bool enabled) { g->grad_enabled = enabled; }
bool bt_graph_grad_enabled(const bt_graph *g) { return g->grad_enabled; }
size_t bt_graph_node_count(const bt_graph *g) { return g->n_nodes; }
bt_arena *bt_graph_arena(bt_graph *g) { return g->arena; }
bt_wgrad *bt_graph_wgrad(bt_graph *g) { return g->wgrad; }
bt_packs *bt_graph_packs(bt_graph *g) { return g->packs; }
bt_status bt_graph_status(const bt_graph *g) { return g ? g->status : BT_ERR_ARG; }
const char *bt_graph_error(const bt_graph *g) { return g ? g->error : "no graph"; }

void bt_graph_clear_error(bt_graph *g)
{
    g->status = BT_OK;
    g->error[0] = '\0';
}

bt_status bt_graph_fail(bt_graph *g, bt_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bt_status first = bt_first_error(&g->status, g->error, sizeof g->error, s, fmt, ap);
    va_end(ap);
    return first;
}

/* ---- tensors in the arena ------------------------------------------------------ */

static bt_real *lane_slot(bt_graph *g, const void *key, size_t size);

/* lane_key: the recurrent weight whose lane holds the data, if it has room
 * (bt_op_output_lane); NULL for an ordinary place in the arena. */
static bt_tensor *tensor_at(bt_graph *g, int ndim, const int *shape, bool zero, const void *lane_key)
{
    size_t size;
    char why[BT_ERRMSG_LEN];
    bt_status st = bt_shape_size(ndim, shape, &size, why, sizeof why);
    if (st != BT_OK) {
        bt_graph_fail(g, st, "%s", why);
        return NULL;
    }
    bt_tensor *t = bt_arena_alloc(g->arena, sizeof *t);
    bt_real *data = t && lane_key ? lane_slot(g, lane_key, size) : NULL;
    if (t && !data)
        data = (zero ? bt_arena_calloc : bt_arena_alloc)(g->arena, size * sizeof(bt_real));
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

static bt_tensor *tensor_in_arena(bt_graph *g, int ndim, const int *shape, bool zero)
{
    return tensor_at(g, ndim, shape, zero, NULL);
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

bt_tensor *bt_op_output(bt_graph *g, int ndim, const int *shape)
{
    return tensor_in_arena(g, ndim, shape, false);
}

/* ---- lanes: one recurrent op's outputs side by side ------------------------------ */

void bt_graph_plan_steps(bt_graph *g, int steps)
{
    g->planned_steps = steps;
    g->n_lanes = 0;
}

/* The next free slot of size values in key's lane (made, planned_steps slots
 * long, on key's first output); NULL when nothing was planned, the lane is
 * full or holds another size, there are MAX_LANES lanes already, or the arena
 * has no room for one (then the output goes where any other would). */
static bt_real *lane_slot(bt_graph *g, const void *key, size_t size)
{
    if (g->planned_steps < 2 || size == 0)
        return NULL;
    lane *l = NULL;
    for (int i = 0; i < g->n_lanes && !l; i++)
        if (g->lanes[i].key == key)
            l = &g->lanes[i];
    if (!l) {
        bt_real *base = g->n_lanes < MAX_LANES
                            ? bt_arena_alloc(g->arena, sizeof(bt_real) * size * (size_t)g->planned_steps)
                            : NULL;
        if (!base) {
            if (g->n_lanes < MAX_LANES)
                g->planned_steps = 0; /* no room for a block: not again at every step */
            return NULL;
        }
        l = &g->lanes[g->n_lanes++];
        *l = (lane){.key = key, .base = base, .slot = size, .used = 0};
    }
    if (l->slot != size || l->used == g->planned_steps)
        return NULL;
    return l->base + size * (size_t)l->used++;
}

bt_tensor *bt_op_output_lane(bt_graph *g, int ndim, const int *shape, const void *key)
{
    return tensor_at(g, ndim, shape, false, key);
}

void *bt_op_scratch(bt_graph *g, size_t bytes)
{
    void *p = bt_arena_alloc(g->arena, bytes);
    if (!p)
        bt_graph_fail(g, BT_ERR_NOMEM, "out of memory for %zu bytes of op scratch", bytes);
    return p;
}

bt_real *bt_graph_grad_of(bt_graph *g, bt_tensor *t)
{
    if (!t->grad) {
        g->grads_given = true;
        t->grad = bt_wgrad_buffer(g->wgrad, t->size);
        if (!t->grad)
            bt_graph_fail(g, BT_ERR_NOMEM, "out of memory for a gradient of %zu values", t->size);
    }
    return t->grad;
}

/* ---- recording ------------------------------------------------------------------- */

bt_node *bt_graph_record(bt_graph *g, const bt_op *op, bt_tensor *out, bt_tensor *const *in,
                         int n_in)
{
    bool needs_grad = false;
    for (int i = 0; i < n_in; i++)
        needs_grad |= in[i]->requires_grad;
    bt_node *n;
    if (g->grad_enabled && needs_grad) {
        tape_node *t = bt_arena_alloc(g->arena, sizeof *t);
        bt_tensor **ins = t ? bt_arena_alloc(g->arena, sizeof(bt_tensor *) * (size_t)n_in) : NULL;
        if (!ins) {
            bt_graph_fail(g, BT_ERR_NOMEM, "out of memory recording op %s", op->name);
            return NULL;
        }
        memcpy(ins, in, sizeof(bt_tensor *) * (size_t)n_in);
        memset(t, 0, sizeof *t);
        t->prev = g->last;
        if (g->last)
            g->last->next = t;
        else
            g->first = t;
        g->last = t;
        g->n_nodes++;
        n = &t->node;
        n->in = ins;
        out->requires_grad = true;
        out->node = n;
    } else {
        /* No grad: a node that only carries the arguments to forward, off the tape. */
        n = bt_arena_alloc(g->arena, sizeof *n);
        if (!n) {
            bt_graph_fail(g, BT_ERR_NOMEM, "out of memory running op %s", op->name);
            return NULL;
        }
        memset(n, 0, sizeof *n);
        n->in = (bt_tensor **)in;
    }
    n->n_in = n_in;
    n->op = op;
    n->graph = g;
    n->out = out;
    return n;
}

/* ---- backward ---------------------------------------------------------------------- */

/* Every input that wants a gradient has a buffer before n's backward runs. */
static bool input_grads(bt_graph *g, bt_node *n)
{
    for (int i = 0; i < n->n_in; i++)
        if (n->in[i]->requires_grad && !bt_graph_grad_of(g, n->in[i]))
            return false;
    return true;
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
     * gradients (parameters) are not node outputs and keep accumulating. On a
     * tape that has given none out since its rewind (a window's one sweep)
     * the walk is skipped: it touches every node once more, and on a long
     * checkpointed stretch (hundreds of steps, megabytes of tape) each of
     * them comes from memory (bt_backward_from was 1.75% of such a run at
     * T = 100,000 with this walk, 1.35% without: perf, Zen 5). */
    if (g->grads_given)
        for (tape_node *t = g->last; t; t = t->prev)
            t->node.out->grad = NULL;
    bt_real *seed = bt_graph_grad_of(g, out);
    if (!seed)
        return g->status;
    for (size_t i = 0; i < out->size; i++)
        seed[i] += dout[i];
    /* Every consumer of a node's output was recorded after it, so walking the
     * tape backwards finds each gradient complete when its node runs. */
    for (tape_node *t = g->last; t; t = t->prev) {
        bt_node *n = &t->node;
        if (!n->out->grad)
            continue; /* nothing flows back through this node */
        if (!input_grads(g, n))
            break;
        bt_wgrad_enter(g->wgrad, n);
        n->op->backward(n);
        bt_wgrad_leave(g->wgrad); /* n's output gradient is consumed: recycle it */
    }
    bt_wgrad_flush(g->wgrad); /* the batched weight gradients */
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

/* ---- forward mode ------------------------------------------------------------------ */

bt_real *bt_node_tangent(bt_node *n)
{
    bt_graph *g = n->graph;
    tape_node *t = (tape_node *)n;
    BT_ASSERT(g->jvp_running == t, "bt_node_tangent for op %s outside its tangent rule",
              n->op->name);
    size_t bytes = n->out->size * sizeof(bt_real);
    if (!t->tangent) {
        t->tangent = bt_arena_alloc(g->arena, bytes);
        if (!t->tangent) {
            bt_graph_fail(g, BT_ERR_NOMEM, "out of memory for a tangent of %zu values",
                          n->out->size);
            return NULL;
        }
    }
    n->out->tangent = memset(t->tangent, 0, bytes);
    return t->tangent;
}

static bool has_tangent_input(const bt_node *n)
{
    for (int i = 0; i < n->n_in; i++)
        if (n->in[i]->tangent)
            return true;
    return false;
}

bt_status bt_jvp(bt_graph *g)
{
    if (!g)
        return BT_ERR_ARG;
    if (g->status != BT_OK)
        return g->status;
    /* Every input of a node is a leaf or the output of an older node, so walking
     * in creation order finds each input's tangent final when its node runs. */
    for (tape_node *t = g->first; t; t = t->next) {
        bt_node *n = &t->node;
        n->out->tangent = NULL; /* a sweep owes nothing to the one before */
        if (!has_tangent_input(n))
            continue; /* zero in, zero out: most of a sweep seeded on one weight */
        if (!n->op->jvp)
            return bt_graph_fail(g, BT_ERR_ARG,
                                 "op %s has no tangent rule (jvp): forward mode cannot pass "
                                 "through it; give its bt_op a jvp",
                                 n->op->name);
        g->jvp_running = t;
        n->op->jvp(n);
        g->jvp_running = NULL;
        if (g->status != BT_OK)
            return g->status;
    }
    return BT_OK;
}
