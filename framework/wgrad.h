/* wgrad.h: the tape's performance half (graph.c is the plain half): weight
 * gradients batched over a backward sweep, and a pool that recycles consumed
 * gradient buffers. Internal to libbptt (graph.c and the ops that accumulate
 * weight gradients); not installed, not exported. */
#ifndef BPTT_WGRAD_H
#define BPTT_WGRAD_H

#include "bptt_op.h"

typedef struct bt_wgrad bt_wgrad;

/* dW[K,N] += A[M,K]^T D[M,N], called from an op's backward. For a weight
 * (w->param) the product waits and runs with the sweep's other products of w
 * as one GEMM over their stacked rows; a and d must stay valid until backward
 * returns (arena memory, or the running node's output gradient, which is kept
 * for it). Any other w gets the product at once. */
void bt_wgrad_add(bt_graph *g, bt_tensor *w, const bt_real *a, const bt_real *d, int m);

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
