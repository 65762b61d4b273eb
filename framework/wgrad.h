/* wgrad.h: the tape's performance half (graph.c is the plain half): weight
 * gradients batched over a backward sweep, and a pool that recycles consumed
 * gradient buffers. Internal to libbptt (graph.c and the ops that accumulate
 * weight gradients); not installed, not exported. */
#ifndef BPTT_WGRAD_H
#define BPTT_WGRAD_H

#include "bptt_op.h"

typedef struct bt_wgrad bt_wgrad;

#define BT_WGRAD_FLUSH_VALUES ((size_t)1 << 21)
#define BT_WGRAD_CACHE_VALUES ((size_t)1 << 19)
#define BT_WGRAD_MIN_ROWS 1024

/* A group of `rows` stacked rows of K + N (`width`) values runs now: at
 * BT_WGRAD_FLUSH_VALUES (memory), or at BT_WGRAD_CACHE_VALUES (2 MB in float,
 * about one core's L2) once it has BT_WGRAD_MIN_ROWS rows. Why the cache
 * bound: the stack is copied from the sweep's most recent gradients and
 * states, and a stack larger than the cache copies them cold. A checkpointed
 * stretch of 100-400 steps at hidden 256 ran 7-12% faster with it (bench
 * fullbptt --checkpoint-every). Why the row floor: a GEMM over fewer rows
 * re-reads dW more often per product; splitting hidden 1024's window at 256
 * rows slowed the classic step by 5%. Here, not in wgrad.c, so that the
 * benchmark's roofline (bench/roofline.c) splits its shapes by the same rule. */
static inline bool bt_wgrad_group_full(size_t rows, size_t width)
{
    size_t values = rows * width;
    return values >= BT_WGRAD_FLUSH_VALUES ||
           (rows >= BT_WGRAD_MIN_ROWS && values >= BT_WGRAD_CACHE_VALUES);
}

/* The rows at which a group of this width is first full (the rule above). */
static inline size_t bt_wgrad_rows_when_full(size_t width)
{
    size_t by_memory = (BT_WGRAD_FLUSH_VALUES + width - 1) / width;
    size_t by_cache = (BT_WGRAD_CACHE_VALUES + width - 1) / width;
    if (by_cache < BT_WGRAD_MIN_ROWS)
        by_cache = BT_WGRAD_MIN_ROWS;
    return by_memory < by_cache ? by_memory : by_cache;
}

/* dW[K,N] += A[M,K]^T D[M,N], called from an op's backward. For a weight
 * (w->param) the product waits and runs with the sweep's other products of w
 * as one GEMM over their stacked rows; a and d must stay valid until backward
 * returns (arena memory, the running node's output gradient, which is kept
 * for it, or d in w's slot from bt_wgrad_slot). Any other w gets the product at once. */
void bt_wgrad_add(bt_graph *g, bt_tensor *w, const bt_real *a, const bt_real *d, int m);

/* Where the d rows (m of them) of w's next product go: write them there and
 * pass that pointer to bt_wgrad_add(g, w, a, it, m) before another product
 * of w is added. The GEMM then reads them in place, and the op's output
 * gradient need not be held until it runs. Only this backward and that
 * product may read the slot: never pass it to another weight's product (it
 * is overwritten once w's group has run). NULL when w waits for nothing
 * (not a weight), when w's waiting rows leave no room for m more (m changed
 * within the sweep) or without memory: use a buffer of your own. */
bt_real *bt_wgrad_slot(bt_graph *g, bt_tensor *w, int m);

/* ---- for graph.c ---- */
bt_wgrad *bt_wgrad_new(bt_arena *arena);
void bt_wgrad_free(bt_wgrad *wg);
void bt_wgrad_reset(bt_wgrad *wg);          /* the arena was reset: pooled buffers are gone */
bt_real *bt_wgrad_buffer(bt_wgrad *wg, size_t n); /* n zeroed values: pooled or new; NULL */
void bt_wgrad_enter(bt_wgrad *wg, bt_node *n); /* n's backward is about to run */
void bt_wgrad_leave(bt_wgrad *wg);          /* it has run: its output gradient is consumed */
void bt_wgrad_flush(bt_wgrad *wg);          /* end of the sweep: run every waiting product */
bt_wgrad *bt_graph_wgrad(bt_graph *g);      /* graph.c: the graph's batcher */

#endif
