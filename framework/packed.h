/* packed.h: products with a weight operand, c = a op(W) + beta c, through a
 * backend that keeps W packed across the steps of a window (oneDNN's matmul
 * with -Dblas=dnnl), else bt_gemm. Internal to libbptt (graph.c and the ops
 * whose per-step products read a weight); not installed, not exported.
 * Dimension letters: M rows of a, K and N the shape of op(W). */
#ifndef BPTT_PACKED_H
#define BPTT_PACKED_H

#include "bptt_op.h"

typedef struct bt_packs bt_packs;

/* c[M,N] = a[M,K] op(w) + beta c, with op(w) = w [K,N], or w^T for w stored
 * [N,K] (trans_w); a, c dense rows, beta 0 or 1. A weight (w->param) of a
 * shape the backend runs faster is packed on its first product after a
 * bt_graph_reset and read from the packed copy until the next one: a graph's
 * products see a weight as it was at that first product. */
void bt_gemm_weight(bt_graph *g, int m, const bt_real *a, const bt_tensor *w, bool trans_w,
                    bt_real beta, bt_real *c);

/* ---- for graph.c ---- */
bt_packs *bt_packs_new(void);          /* NULL: no backend (every product goes to bt_gemm) */
void bt_packs_free(bt_packs *p);
void bt_packs_reset(bt_packs *p);      /* a new window: every packed copy is stale */
bt_packs *bt_graph_packs(bt_graph *g); /* graph.c: the graph's packs, or NULL */

#endif
