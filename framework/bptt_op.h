/* bptt_op.h: what it takes to add an op, for ops/ and anyone writing their own.
 * An op is a descriptor (name, arity, forward, backward, jvp, side by side in
 * one file) and a constructor that checks its inputs, makes its output, records
 * a node on the tape and runs forward. Backward reads out->grad and accumulates
 * (+=) into in[i]->grad for every input with requires_grad; the tape has made
 * those buffers before it runs. The tangent rule (jvp) is the forward-mode
 * twin: it runs only when some input has a tangent, finds out->tangent NULL,
 * takes a zeroed buffer with bt_node_tangent(n) and accumulates (+=) the
 * contribution of every input whose tangent is not NULL (NULL is zero); or
 * leaves out->tangent NULL (zero), or points it at an input's tangent (an
 * alias). It reads only data, saved scratch and tangents, never gradients, so
 * a graph can be swept forward before or after backward. Users of ops need
 * only bptt.h.
 *
 * A constructor, in order (see ops/unary.c for the shortest):
 *   if (!bt_op_begin(g, in, n_in)) return NULL;      NULL input or failed graph
 *   check shapes, bt_graph_fail(g, BT_ERR_SHAPE, "...%s", bt_shp(a)) on a mismatch
 *   out = bt_op_output(g, ndim, shape);              NULL on failure
 *   n = bt_graph_record(g, &op, out, in, n_in);      NULL on failure
 *   set n's arguments, op.forward(n), return out
 */
#ifndef BPTT_OP_H
#define BPTT_OP_H

#include <math.h>

#include "bptt.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bt_op {
    const char *name;
    int arity;                    /* -1: variadic */
    void (*forward)(bt_node *n);  /* out->data = f(in) */
    void (*backward)(bt_node *n); /* in->grad += ... for inputs with requires_grad */
    void (*jvp)(bt_node *n);      /* out->tangent = sum_i df/din_i in_i->tangent; NULL: the
                                     op has no tangent rule (bt_jvp refuses the graph) */
} bt_op;

/* One op application, as its forward and backward see it. */
struct bt_node {
    const bt_op *op;
    bt_graph *graph; /* the tape it belongs to: scratch and gradient buffers in backward */
    bt_tensor *out;
    bt_tensor **in;
    int n_in;
    double scalar;   /* scale factor, xi */
    int iarg[4];     /* slice start/len, matmul transposes */
    int32_t *ids;    /* embedding ids, xent targets (copied into the arena) */
    bt_real *saved;  /* op-owned scratch in the arena (softmax probabilities, gru_gates' hn,
                        gru_cho_hidden's n) */
};

/* Records an op: makes a node for out (put on the tape if grad is enabled and
 * some input requires grad, which also sets out->requires_grad and out->node;
 * otherwise a node that only carries the arguments to forward). Does not run
 * forward. NULL (and the graph's error) when out of memory. */
BT_API bt_node *bt_graph_record(bt_graph *g, const bt_op *op, bt_tensor *out,
                                bt_tensor *const *in, int n_in);
/* A tensor's gradient buffer, zeroed on first use (from the graph's arena or
 * its pool of consumed gradients); NULL (and the graph's error) without memory. */
BT_API bt_real *bt_graph_grad_of(bt_graph *g, bt_tensor *t);
/* For a tangent rule: n's output tangent, zeroed, set as n->out->tangent. The
 * buffer is made once per recorded node (graph's arena) and reused by every
 * later sweep; NULL (and the graph's error) without memory. Only inside bt_jvp. */
BT_API bt_real *bt_node_tangent(bt_node *n);
/* An op's output tensor in the graph's arena (data not zeroed). */
BT_API bt_tensor *bt_op_output(bt_graph *g, int ndim, const int *shape);
/* bt_op_output for an op that runs once per step on the same recurrent weight
 * (key): within the steps planned by bt_graph_plan_steps, its outputs lie side
 * by side in one block, in step order, so batched weight gradients that read
 * them read them in place. Anything else (nothing planned, the lane full, a
 * different size) gets an ordinary output: the place changes, not the result. */
BT_API bt_tensor *bt_op_output_lane(bt_graph *g, int ndim, const int *shape, const void *key);
/* Scratch memory in the graph's arena, alive until bt_graph_reset. */
BT_API void *bt_op_scratch(bt_graph *g, size_t bytes);

/* Starts an op: false (and nothing recorded) when g is NULL, has already
 * failed, or an input is NULL; the constructor then returns NULL, which is
 * how errors stay sticky through a whole cell. */
static inline bool bt_op_begin(bt_graph *g, bt_tensor *const *in, int n_in)
{
    if (!g || bt_graph_status(g) != BT_OK)
        return false;
    for (int i = 0; i < n_in; i++)
        if (!in[i]) {
            bt_graph_fail(g, BT_ERR_ARG, "input %d of an op is NULL", i);
            return false;
        }
    return true;
}

/* A scalar argument (a scale, a factor) must be finite: false after failing
 * the graph with "<what> (<v>)" when it is not. A NULL or failed graph passes,
 * for bt_op_begin to refuse. */
static inline bool bt_op_finite(bt_graph *g, double v, const char *what)
{
    if (g && bt_graph_status(g) == BT_OK && !isfinite(v)) {
        bt_graph_fail(g, BT_ERR_NUMERIC, "%s (%g)", what, v);
        return false;
    }
    return true;
}

/* "[2,3]" for an error message: eight rotating buffers, so one message can
 * name up to eight shapes (gru_cho_hidden's names six).
 * Inline, so it is the op file's own. */
static inline const char *bt_shp(const bt_tensor *t)
{
    static __thread char bufs[8][64]; /* __thread: C and C++ alike (GCC, Clang) */
    static __thread unsigned next;
    return bt_shape_str(t, bufs[next++ & 7], sizeof bufs[0]);
}

#ifdef __cplusplus
}
#endif
#endif
