/* graph_internal.h: what the ops need from the tape beyond the public API. */
#ifndef BPTT_GRAPH_INTERNAL_H
#define BPTT_GRAPH_INTERNAL_H

#include "bptt.h"

/* Starts an op: returns false (and records nothing) when g is NULL, already
 * failed, or any input is NULL; the op constructor then returns NULL. */
bool bt_op_begin(bt_graph *g, bt_tensor *const *in, int n_in);
/* Output tensor of an op in the arena (data not zeroed). */
bt_tensor *bt_op_output(bt_graph *g, int ndim, const int *shape);
/* A node's scratch buffer in the arena. */
void *bt_op_scratch(bt_graph *g, size_t bytes);
/* Defers dW[K,N] += A[M,K]^T D[M,N] to the end of the backward sweep, where
 * all deferred products of one W run as a single GEMM over their stacked rows
 * (the weight gradient of a whole window in one large product instead of one
 * small product per step). a and d must live in the arena until then. */
void bt_graph_defer_wgrad(bt_graph *g, bt_tensor *w, const bt_real *a, const bt_real *d, int m);
/* "[2,3]" for messages (uses a small rotating buffer: valid for one message). */
const char *bt_shp(const bt_tensor *t);

#endif
