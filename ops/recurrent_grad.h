/* recurrent_grad.h: the backward a fused recurrent op shares (rnn_tanh_step,
 * lstm_gates, gru_gates, gru_cho_gates, gru_cho_hidden): where the gradient
 * of its product h W goes, and the two products that read it; and the
 * product's forward tangent. Written once
 * here so that the five ops keep one rule for reusing buffers. Internal to
 * ops/. */
#ifndef BPTT_RECURRENT_GRAD_H
#define BPTT_RECURRENT_GRAD_H

#include "bt_assert.h"
#include "bptt_op.h"
#include "packed.h"
#include "wgrad.h"

/* Where node n writes D [m, N], the gradient of its product h W (W [K,N],
 * and n's output has as many values): W's slot when use_slot, so W's batched
 * product reads D in place and n's output gradient can go at once; else in
 * place of that gradient, which nothing reads after this node unless the
 * caller keeps it (retain_grad); else scratch. NULL without memory (the
 * graph holds the error). */
static inline bt_real *bt_recurrent_d(bt_node *n, bt_tensor *w, int m, bool use_slot)
{
    BT_ASSERT(n->out->size == (size_t)m * (size_t)w->shape[1],
              "op %s: its output is not the shape of its product's gradient", n->op->name);
    bt_real *d = use_slot && w->requires_grad ? bt_wgrad_slot(n->graph, w, m) : NULL;
    if (!d && !n->out->retain_grad)
        d = n->out->grad;
    else if (!d)
        d = bt_op_scratch(n->graph, sizeof(bt_real) * n->out->size);
    return d;
}

/* dh += D W^T (the recursion through time) and dW += h^T D (batched over
 * the sweep for a weight), each where it is wanted. */
static inline void bt_recurrent_backward(bt_node *n, bt_tensor *h, bt_tensor *w, bt_real *d,
                                         int m)
{
    if (h->requires_grad)
        bt_gemm_weight(n->graph, m, d, w, true, 1, h->grad);
    if (w->requires_grad)
        bt_wgrad_add(n->graph, w, h->data, d, m);
}

/* The forward tangent of the product h W (h [B,K], W [K,N]) added into t
 * [B,N]: h' W + h W', each where that input has a tangent. */
static inline void bt_recurrent_tangent(const bt_tensor *h, const bt_tensor *w, int B, int K, int N,
                                        bt_real *t)
{
    if (h->tangent)
        bt_gemm(false, false, B, N, K, 1, h->tangent, K, w->data, N, 1, t, N);
    if (w->tangent)
        bt_gemm(false, false, B, N, K, 1, h->data, K, w->tangent, N, 1, t, N);
}

#endif
