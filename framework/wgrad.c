/* wgrad.c: two things that make a backward sweep fast without changing what
 * it computes, kept out of the tape (graph.c) so that stays a plain walk.
 *
 * Weight gradients in batches: a weight W used at every step of a window gets
 * dW += A_t^T D_t once per step, each a thin GEMM. The products of one weight
 * wait in a group and run as one GEMM over their stacked rows (oldest step
 * first, the order of a lane: see below) at the end of the sweep, or earlier
 * once the group is full
 * (bt_wgrad_group_full, wgrad.h), so long windows keep a bounded number of
 * gradients alive and their stacks in cache. Only weights (tensors marked
 * param by bt_params_add) wait: their gradients are read after backward,
 * never during it. Stacking copies the rows, except where they already lie
 * side by side in step order: a recurrent op's outputs within the steps the
 * unroller planned (bt_op_output_lane), which the GEMM then reads in place.
 *
 * The pool: a node's output gradient is dead once its backward has run and no
 * waiting product reads it; it goes to a free list by byte size, and the next
 * gradient of that size reuses it instead of growing the arena.
 *
 * Dimension letters: M stacked rows, K and N the weight's [K,N]. */
#include <string.h>

#include "bt_assert.h"
#include "wgrad.h"

#define POOL_CLASSES 16

/* A node's output gradient that waiting products still read. */
typedef struct hold {
    bt_tensor *t;
    int readers; /* its running backward (until leave) + its waiting products */
} hold;

/* dW += A^T D, waiting. */
typedef struct product {
    const bt_real *a, *d; /* [m,K], [m,N] */
    int m;
    hold *h;              /* on the gradient of the node that deferred it */
    struct product *next; /* added before it: the next newer step */
    hold own;             /* that hold, in the node's first product (the arena's
                             64-byte blocks have room for it anyway) */
} product;
_Static_assert(sizeof(product) <= 64, "a product with its hold fits one 64-byte arena block");

/* The waiting products of one weight, last added (the oldest step) first. */
typedef struct group {
    bt_tensor *w;
    product *head;
    size_t rows;
    /* Where ops write the d rows of w's products (bt_wgrad_slot), filled from
     * the top down as the sweep goes back in time, so that they lie oldest
     * step first, side by side. Heap, kept with this slot of the array. */
    bt_real *region;
    size_t region_values;
    const bt_tensor *region_of; /* the weight it was made for */
} group;

struct bt_wgrad {
    bt_arena *arena;    /* the graph's: holds, products and new gradient buffers */
    group *groups;      /* heap, kept across sweeps so steady state allocates nothing */
    int n_groups, cap_groups;
    bt_real *stack;     /* the stacked operands of one group (heap, kept) */
    size_t stack_cap;
    struct { size_t bytes; void *head; } pool[POOL_CLASSES];
    bt_node *running;   /* between enter and leave */
    hold *held;         /* the running node's hold, made by its first waiting product */
    size_t waiting;     /* products deferred and not yet run */
};

bt_wgrad *bt_wgrad_new(bt_arena *arena)
{
    bt_wgrad *wg = bt_calloc(1, sizeof *wg);
    if (wg)
        wg->arena = arena;
    return wg;
}

void bt_wgrad_free(bt_wgrad *wg)
{
    if (!wg)
        return;
    for (int i = 0; i < wg->cap_groups; i++)
        bt_free(wg->groups[i].region);
    bt_free(wg->groups);
    bt_free(wg->stack);
    bt_free(wg);
}

void bt_wgrad_reset(bt_wgrad *wg)
{
    BT_ASSERT(!wg->running && wg->waiting == 0, "window reset during a backward sweep");
    memset(wg->pool, 0, sizeof wg->pool);
}

/* ---- the pool ---------------------------------------------------------------- */

static void pool_put(bt_wgrad *wg, void *buf, size_t bytes)
{
    for (int i = 0; i < POOL_CLASSES; i++)
        if (wg->pool[i].bytes == bytes || !wg->pool[i].head) {
            wg->pool[i].bytes = bytes;
            *(void **)buf = wg->pool[i].head; /* arena blocks hold at least 64 bytes */
            wg->pool[i].head = buf;
            return;
        }
    /* More sizes than classes: this one waits for the arena reset (bounded, correct). */
}

bt_real *bt_wgrad_buffer(bt_wgrad *wg, size_t n)
{
    size_t bytes = n * sizeof(bt_real);
    for (int i = 0; i < POOL_CLASSES; i++)
        if (wg->pool[i].bytes == bytes && wg->pool[i].head) {
            void *buf = wg->pool[i].head;
            wg->pool[i].head = *(void **)buf;
            return memset(buf, 0, bytes);
        }
    return bt_arena_calloc(wg->arena, bytes);
}

/* A consumed gradient goes back to the pool unless the caller keeps it. */
static void release(bt_wgrad *wg, bt_tensor *t)
{
    if (t->grad && !t->retain_grad) {
        pool_put(wg, t->grad, t->size * sizeof(bt_real));
        t->grad = NULL;
    }
}

static void unhold(bt_wgrad *wg, hold *h)
{
    BT_ASSERT(h->readers > 0, "a gradient of %zu values is released more often than held",
              h->t->size);
    if (--h->readers == 0)
        release(wg, h->t);
}

/* ---- one node's backward ---------------------------------------------------- */

void bt_wgrad_enter(bt_wgrad *wg, bt_node *n)
{
    BT_ASSERT(!wg->running, "op %s's backward starts inside op %s's", n->op->name,
              wg->running->op->name);
    wg->running = n;
    wg->held = NULL;
}

void bt_wgrad_leave(bt_wgrad *wg)
{
    BT_ASSERT(wg->running, "leave without enter");
    if (wg->held)
        unhold(wg, wg->held); /* the products still read it: the last one releases it */
    else
        release(wg, wg->running->out);
    wg->running = NULL;
    wg->held = NULL;
}

/* ---- the batches ------------------------------------------------------------- */

static void gemm_now(bt_tensor *w, const bt_real *a, const bt_real *d, int m)
{
    int k = w->shape[0], n = w->shape[1];
    bt_gemm(true, false, k, n, m, 1, a, k, d, n, 1, w->grad, n);
}

/* Room to stack rows * (K + N) values; false (and no change) without memory. */
static bool stack_room(bt_wgrad *wg, size_t values)
{
    if (values <= wg->stack_cap)
        return true;
    bt_real *s = bt_realloc(wg->stack, values * sizeof(bt_real));
    if (!s)
        return false;
    wg->stack = s;
    wg->stack_cap = values;
    return true;
}

/* Whether consecutive products' rows of one operand (a when `a`, else d;
 * width values each) lie side by side, oldest step first: an op's outputs in
 * a lane (bt_op_output_lane), or d rows in the group's region (bt_wgrad_slot). */
static bool side_by_side(const product *head, bool a, size_t width)
{
    for (const product *p = head; p && p->next; p = p->next)
        if ((a ? p->a : p->d) + (size_t)p->m * width != (a ? p->next->a : p->next->d))
            return false;
    return true;
}

/* That operand's rows, oldest step first: in place where they lie side by
 * side (in_place, from side_by_side), else copied into dst. */
static const bt_real *stacked(const product *head, bool a, bool in_place, size_t width,
                              size_t rows, bt_real *dst)
{
    if (in_place)
        return a ? head->a : head->d;
    size_t at = 0;
    for (const product *p = head; p; p = p->next) {
        memcpy(dst + at * width, a ? p->a : p->d, sizeof(bt_real) * (size_t)p->m * width);
        at += (size_t)p->m;
    }
    BT_ASSERT(at == rows, "a group counted %zu rows and stacked %zu", rows, at);
    return dst;
}

/* Runs one group's products as a single GEMM over the stacked rows, then lets
 * go of the gradients they read. */
static void flush_group(bt_wgrad *wg, group *grp)
{
    bt_tensor *w = grp->w;
    size_t k = (size_t)w->shape[0], n = (size_t)w->shape[1];
    bool several = grp->head && grp->head->next;
    bool a_in_place = side_by_side(grp->head, true, k), d_in_place = side_by_side(grp->head, false, n);
    size_t copied = (a_in_place ? 0 : k) + (d_in_place ? 0 : n);
    if (several && stack_room(wg, grp->rows * copied)) {
        const bt_real *a = stacked(grp->head, true, a_in_place, k, grp->rows, wg->stack);
        const bt_real *d = stacked(grp->head, false, d_in_place, n, grp->rows,
                                   a_in_place ? wg->stack : wg->stack + grp->rows * k);
        gemm_now(w, a, d, (int)grp->rows);
    } else { /* one product, or no memory to stack: each as it is (same sum) */
        for (product *p = grp->head; p; p = p->next)
            gemm_now(w, p->a, p->d, p->m);
    }
    for (product *p = grp->head; p; p = p->next) {
        if (p->h) /* none for d rows in the region */
            unhold(wg, p->h);
        wg->waiting--;
    }
    grp->head = NULL;
    grp->rows = 0;
}

/* The group of w, added if new; NULL without memory. */
static group *group_of(bt_wgrad *wg, bt_tensor *w)
{
    for (int i = 0; i < wg->n_groups; i++)
        if (wg->groups[i].w == w)
            return &wg->groups[i];
    if (wg->n_groups == wg->cap_groups) {
        int cap = wg->cap_groups ? 2 * wg->cap_groups : 8;
        group *grown = bt_realloc(wg->groups, sizeof *grown * (size_t)cap);
        if (!grown)
            return NULL;
        memset(grown + wg->cap_groups, 0, sizeof *grown * (size_t)(cap - wg->cap_groups));
        wg->groups = grown;
        wg->cap_groups = cap;
    }
    /* A region made for w in an earlier sweep comes back to w, wherever w
     * now comes in the order (a stretch without losses meets W_hh first). */
    for (int i = wg->n_groups + 1; i < wg->cap_groups; i++)
        if (wg->groups[i].region_of == w) {
            group t = wg->groups[i];
            wg->groups[i] = wg->groups[wg->n_groups];
            wg->groups[wg->n_groups] = t;
            break;
        }
    group *grp = &wg->groups[wg->n_groups++];
    grp->w = w, grp->head = NULL, grp->rows = 0;
    return grp;
}

static bool in_region(const group *grp, const bt_real *d)
{
    return grp->region && d >= grp->region && d < grp->region + grp->region_values;
}

/* The most rows a group of this width holds: it runs at the first product
 * that makes it full (wgrad.h's rule), which has m rows. */
static size_t most_rows(size_t width, size_t m)
{
    return bt_wgrad_rows_when_full(width) - 1 + m;
}

bt_real *bt_wgrad_slot(bt_graph *g, bt_tensor *w, int m)
{
    bt_wgrad *wg = bt_graph_wgrad(g);
    group *grp = w->param && w->ndim == 2 && m > 0 && wg->running ? group_of(wg, w) : NULL;
    if (!grp)
        return NULL;
    size_t n = (size_t)w->shape[1], need = n * most_rows((size_t)w->shape[0] + n, (size_t)m);
    if (grp->region_values < need && grp->rows == 0) { /* none of its rows is waiting there */
        bt_free(grp->region);
        grp->region_values = 0;
        grp->region = bt_malloc(sizeof(bt_real) * need);
        if (!grp->region)
            return NULL;
        grp->region_values = need;
    }
    grp->region_of = w;
    size_t top = grp->region_values / n; /* rows; fixed while the group waits */
    if (grp->rows + (size_t)m > top)
        return NULL;
    return grp->region + (top - grp->rows - (size_t)m) * n;
}

/* Queues the product in w's group; false (nothing queued) without memory. */
static bool defer(bt_wgrad *wg, bt_tensor *w, const bt_real *a, const bt_real *d, int m)
{
    group *grp = group_of(wg, w);
    product *p = grp ? bt_arena_alloc(wg->arena, sizeof *p) : NULL;
    if (!p)
        return false;
    p->h = NULL; /* d in w's region: no gradient to hold */
    if (!in_region(grp, d)) {
        if (!wg->held) {
            p->own = (hold){wg->running->out, 1}; /* 1: the running backward */
            wg->held = &p->own;
        }
        wg->held->readers++;
        p->h = wg->held;
    }
    p->a = a, p->d = d, p->m = m, p->next = grp->head;
    grp->head = p;
    grp->rows += (size_t)m;
    wg->waiting++;
    if (bt_wgrad_group_full(grp->rows, (size_t)(w->shape[0] + w->shape[1])))
        flush_group(wg, grp);
    return true;
}

void bt_wgrad_add(bt_graph *g, bt_tensor *w, const bt_real *a, const bt_real *d, int m)
{
    bt_wgrad *wg = bt_graph_wgrad(g);
    BT_ASSERT(wg->running, "a weight gradient outside a backward sweep");
    BT_ASSERT(w->ndim == 2 && w->grad && m > 0, "weight gradient of %s for %d rows",
              w->name ? w->name : "a tensor", m);
    for (int i = 0; i < wg->n_groups; i++)
        BT_ASSERT(wg->groups[i].w == w || !in_region(&wg->groups[i], d),
                  "a product of %s reads rows from another weight's slot", w->name ? w->name : "a weight");
    /* Without memory to wait, the product now is just as correct. */
    if (!w->param || !defer(wg, w, a, d, m))
        gemm_now(w, a, d, m);
}

void bt_wgrad_flush(bt_wgrad *wg)
{
    BT_ASSERT(!wg->running, "flush inside op %s's backward", wg->running->op->name);
    for (int i = 0; i < wg->n_groups; i++)
        if (wg->groups[i].head)
            flush_group(wg, &wg->groups[i]);
    wg->n_groups = 0;
    BT_ASSERT(wg->waiting == 0, "%zu weight-gradient products never ran", wg->waiting);
}
