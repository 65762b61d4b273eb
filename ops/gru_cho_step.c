/* gru_cho_step.c: the GRU step in the form of Cho et al. (2014) and d2l.ai,
 * where the reset gate multiplies h before the candidate's product, in three
 * fused ops. xw [B,3H] is the input's product or row lookup and b [3H] the
 * one bias, both in blocks z | r | n of H columns:
 *   gru_cho_gates   zr[B,2H] = sigmoid((xw + b)'s z, r blocks + h W_hzr)
 *   gru_cho_reset   rh[B,H]  = r h
 *   gru_cho_hidden  h'[B,H]  = n + z (h - n),   n = tanh((xw + b)'s n block + rh W_hh)
 * The same cell from primitive ops (four sums, four slices, two products, a
 * sigmoid, a tanh, two elementwise products and a difference: cell_gru.c
 * before) kept a buffer per op and step; these keep zr, rh, n and
 * h', which is all their backward needs (s (1 - s) and 1 - tanh^2 of saved
 * outputs; W_hh's gradient reads rh). rh is an op of its own so that its
 * gradient buffer carries dL/d(rh) from the candidate's product back to r
 * and h, and so that gru_cho_hidden's tangent rule writes its product's
 * tangent straight into its own (no scratch per sweep). Each product writes
 * a dense output (a backend runs it on its packed weights). The sums run in
 * the order the primitive ops ran them, so the forward values are theirs,
 * bit for bit (tests/test_grad.c). */
#include "activations.h"
#include "bptt_op.h"
#include "packed.h"
#include "recurrent_grad.h"

/* ---- gru_cho_gates: zr = sigmoid((xw + b)_zr + h W_hzr) -------------------------- */

/* One row: a holds h W_hzr on entry and [z r] on return. restrict: the
 * buffers do not overlap, so the loop vectorises. */
static inline void gates_row(bt_real *restrict a, const bt_real *restrict xw,
                             const bt_real *restrict b, int H)
{
    for (int j = 0; j < 2 * H; j++)
        a[j] = R_SIGMOID((xw[j] + b[j]) + a[j]);
}

BT_VECTOR_CLONES static void gates_rows(bt_real *zr, const bt_real *xw, const bt_real *b, int B,
                                        int H)
{
    for (size_t r = 0; r < (size_t)B; r++)
        gates_row(zr + r * 2 * H, xw + r * 3 * H, b, H);
}

static void gates_forward(bt_node *n)
{
    bt_tensor *xw = n->in[0], *h = n->in[1], *w = n->in[2], *b = n->in[3], *out = n->out;
    int B = out->shape[0], H = h->shape[1];
    /* W_hzr packed once per window where the backend keeps packs (packed.c) */
    bt_gemm_weight(n->graph, B, h->data, w, false, 0, out->data);
    gates_rows(out->data, xw->data, b->data, B, H);
}

/* d = dzr zr (1 - zr), the gradient of the gates' sum (d may be dzr itself:
 * each entry is read before it is written); xw's z, r blocks and b's get it
 * where given. */
BT_VECTOR_CLONES static void gates_drows(bt_real *d, const bt_real *dzr, const bt_real *zr,
                                         bt_real *dxw, bt_real *db, int B, int H)
{
    for (size_t r = 0; r < (size_t)B; r++) {
        bt_real *dr = d + r * 2 * H;
        const bt_real *g = dzr + r * 2 * H, *y = zr + r * 2 * H;
        for (int j = 0; j < 2 * H; j++)
            dr[j] = g[j] * (y[j] * (1 - y[j]));
        for (int j = 0; dxw && j < 2 * H; j++)
            dxw[r * 3 * H + j] += dr[j];
        for (int j = 0; db && j < 2 * H; j++)
            db[j] += dr[j];
    }
}

static void gates_backward(bt_node *n)
{
    bt_tensor *xw = n->in[0], *h = n->in[1], *w = n->in[2], *b = n->in[3];
    int B = n->out->shape[0], H = h->shape[1];
    bt_real *d = bt_recurrent_d(n, w, B, true);
    if (!d)
        return;
    gates_drows(d, n->out->grad, n->out->data, xw->requires_grad ? xw->grad : NULL,
                b->requires_grad ? b->grad : NULL, B, H);
    bt_recurrent_backward(n, h, w, d, B);
}

/* Tangents: a prime marks one, u is h's. zr' = zr (1 - zr) (xw_zr' + b_zr' +
 * u W_hzr + h W_hzr') */
static void gates_jvp(bt_node *n)
{
    bt_tensor *xw = n->in[0], *h = n->in[1], *w = n->in[2], *b = n->in[3];
    int B = n->out->shape[0], H = h->shape[1], N = 2 * H;
    bt_real *t = bt_node_tangent(n); /* the product's tangent, then zr' in place */
    if (!t)
        return;
    bt_recurrent_tangent(h, w, B, H, N, t);
    for (size_t r = 0; r < (size_t)B; r++) {
        bt_real *tr = t + r * N;
        const bt_real *y = n->out->data + r * N;
        const bt_real *tx = xw->tangent ? xw->tangent + r * 3 * H : NULL;
        for (int j = 0; j < N; j++)
            tr[j] = ((tx ? tx[j] : 0) + (b->tangent ? b->tangent[j] : 0) + tr[j]) *
                    (y[j] * (1 - y[j]));
    }
}

static const bt_op op_gru_cho_gates = {"gru_cho_gates", 4, gates_forward, gates_backward,
                                       gates_jvp};

bt_tensor *bt_gru_cho_gates(bt_graph *g, bt_tensor *xw, bt_tensor *h, bt_tensor *w_hzr,
                            bt_tensor *b)
{
    bt_tensor *in[4] = {xw, h, w_hzr, b};
    if (!bt_op_begin(g, in, 4))
        return NULL;
    int B = h->ndim == 2 ? h->shape[0] : 0, H = h->ndim == 2 ? h->shape[1] : 0;
    if (h->ndim != 2 || w_hzr->ndim != 2 || w_hzr->shape[0] != H || w_hzr->shape[1] != 2 * H ||
        b->size != (size_t)3 * H || xw->ndim != 2 || xw->shape[0] != B || xw->shape[1] != 3 * H) {
        bt_graph_fail(g, BT_ERR_SHAPE, "gru_cho_gates: needs xw [B,3H], h [B,H], W_hzr [H,2H], "
                      "b [3H]; got xw %s, h %s, W_hzr %s, b %s", bt_shp(xw), bt_shp(h),
                      bt_shp(w_hzr), bt_shp(b));
        return NULL;
    }
    bt_tensor *out = bt_op_output(g, 2, (int[]){B, 2 * H});
    bt_node *n = out ? bt_graph_record(g, &op_gru_cho_gates, out, in, 4) : NULL;
    if (!n)
        return NULL;
    op_gru_cho_gates.forward(n);
    return out;
}

/* ---- gru_cho_reset: rh = r h, r read in place from zr --------------------------- */

BT_VECTOR_CLONES static void reset_forward(bt_node *n)
{
    const bt_real *zr = n->in[0]->data, *h = n->in[1]->data;
    bt_real *rh = n->out->data;
    int B = n->out->shape[0], H = n->out->shape[1];
    for (size_t r = 0; r < (size_t)B; r++)
        for (int j = 0; j < H; j++)
            rh[r * H + j] = zr[r * 2 * H + H + j] * h[r * H + j];
}

/* dr += d h, dh += d r, each where wanted (dr: zr's gradient's r block) */
BT_VECTOR_CLONES static void reset_backward(bt_node *n)
{
    bt_tensor *zr = n->in[0], *h = n->in[1];
    const bt_real *d = n->out->grad, *hv = h->data, *rv = zr->data + h->shape[1];
    bt_real *dr = zr->requires_grad ? zr->grad + h->shape[1] : NULL;
    bt_real *dh = h->requires_grad ? h->grad : NULL;
    int B = n->out->shape[0], H = n->out->shape[1];
    for (size_t r = 0; dr && r < (size_t)B; r++)
        for (int j = 0; j < H; j++)
            dr[r * 2 * H + j] += d[r * H + j] * hv[r * H + j];
    for (size_t r = 0; dh && r < (size_t)B; r++)
        for (int j = 0; j < H; j++)
            dh[r * H + j] += d[r * H + j] * rv[r * 2 * H + j];
}

/* (r h)' = r' h + r u   (u: h's tangent) */
static void reset_jvp(bt_node *n)
{
    bt_tensor *zr = n->in[0], *h = n->in[1];
    bt_real *t = bt_node_tangent(n);
    int B = n->out->shape[0], H = n->out->shape[1];
    for (size_t r = 0; t && r < (size_t)B; r++)
        for (int j = 0; j < H; j++) {
            size_t i = r * H + j, k = r * 2 * H + H + j;
            if (zr->tangent)
                t[i] += zr->tangent[k] * h->data[i];
            if (h->tangent)
                t[i] += zr->data[k] * h->tangent[i];
        }
}

static const bt_op op_gru_cho_reset = {"gru_cho_reset", 2, reset_forward, reset_backward,
                                       reset_jvp};

bt_tensor *bt_gru_cho_reset(bt_graph *g, bt_tensor *zr, bt_tensor *h)
{
    bt_tensor *in[2] = {zr, h};
    if (!bt_op_begin(g, in, 2))
        return NULL;
    if (zr->ndim != 2 || h->ndim != 2 || zr->shape[0] != h->shape[0] ||
        zr->shape[1] != 2 * h->shape[1]) {
        bt_graph_fail(g, BT_ERR_SHAPE, "gru_cho_reset: needs zr [B,2H] and h [B,H]; got zr %s, h %s",
                      bt_shp(zr), bt_shp(h));
        return NULL;
    }
    bt_tensor *out = bt_op_output(g, 2, h->shape);
    bt_node *n = out ? bt_graph_record(g, &op_gru_cho_reset, out, in, 2) : NULL;
    if (!n)
        return NULL;
    op_gru_cho_reset.forward(n);
    return out;
}

/* ---- gru_cho_hidden: h' = n + z (h - n), n = tanh((xw + b)_n + rh W_hh) ------------ */

/* One row: o holds rh W_hh on entry and h' on return; nv gets n. */
static inline void hidden_row(bt_real *restrict o, bt_real *restrict nv,
                              const bt_real *restrict xn, const bt_real *restrict bn,
                              const bt_real *restrict z, const bt_real *restrict h, int H)
{
    for (int j = 0; j < H; j++) {
        nv[j] = R_TANH((xn[j] + bn[j]) + o[j]);
        o[j] = nv[j] + z[j] * (h[j] - nv[j]);
    }
}

BT_VECTOR_CLONES static void hidden_rows(bt_real *out, bt_real *nv, const bt_real *xw,
                                         const bt_real *b, const bt_real *zr, const bt_real *h,
                                         int B, int H)
{
    for (size_t r = 0; r < (size_t)B; r++)
        hidden_row(out + r * H, nv + r * H, xw + r * 3 * H + 2 * H, b + 2 * H, zr + r * 2 * H,
                   h + r * H, H);
}

static void hidden_forward(bt_node *n)
{
    bt_tensor *xw = n->in[0], *h = n->in[1], *zr = n->in[2], *rh = n->in[3], *w = n->in[4];
    int B = n->out->shape[0], H = n->out->shape[1];
    bt_gemm_weight(n->graph, B, rh->data, w, false, 0, n->out->data);
    hidden_rows(n->out->data, n->saved, xw->data, n->in[5]->data, zr->data, h->data, B, H);
}

/* One row of the backward from g = dL/dh': dz += g (h - n), dh += g z where
 * given, and d = g (1 - z) (1 - n^2), the gradient of the candidate's sum (d
 * may be g itself: each entry is read before it is written), added to xw's
 * and b's n blocks where given. */
static inline void hidden_drow(bt_real *d, const bt_real *g, bt_real *restrict dz,
                               bt_real *restrict dh, bt_real *restrict dxn,
                               bt_real *restrict dbn, const bt_real *restrict z,
                               const bt_real *restrict nv, const bt_real *restrict h, int H)
{
    for (int j = 0; j < H; j++) {
        bt_real gj = g[j];
        if (dz)
            dz[j] += gj * (h[j] - nv[j]);
        if (dh)
            dh[j] += gj * z[j];
        d[j] = gj * (1 - z[j]) * (1 - nv[j] * nv[j]);
        if (dxn)
            dxn[j] += d[j];
        if (dbn)
            dbn[j] += d[j];
    }
}

BT_VECTOR_CLONES static void hidden_drows(bt_node *n, bt_real *d)
{
    bt_tensor *xw = n->in[0], *h = n->in[1], *zr = n->in[2], *b = n->in[5];
    int B = n->out->shape[0], H = n->out->shape[1];
    for (size_t r = 0; r < (size_t)B; r++)
        hidden_drow(d + r * H, n->out->grad + r * H,
                    zr->requires_grad ? zr->grad + r * 2 * H : NULL,
                    h->requires_grad ? h->grad + r * H : NULL,
                    xw->requires_grad ? xw->grad + r * 3 * H + 2 * H : NULL,
                    b->requires_grad ? b->grad + 2 * H : NULL, zr->data + r * 2 * H,
                    n->saved + r * H, h->data + r * H, H);
}

static void hidden_backward(bt_node *n)
{
    bt_tensor *rh = n->in[3], *w = n->in[4];
    bt_real *d = bt_recurrent_d(n, w, n->out->shape[0], true);
    if (!d)
        return;
    hidden_drows(n, d);
    bt_recurrent_backward(n, rh, w, d, n->out->shape[0]); /* d(rh) += d W_hh^T, dW_hh += rh^T d */
}

/* With h_t the output and u h's tangent: n' = (1 - n^2) (xw_n' + b_n' +
 * (r h)' W_hh + r h W_hh'), h_t' = n' + z' (h - n) + z (u - n') */
static void hidden_jvp(bt_node *n)
{
    bt_tensor *xw = n->in[0], *h = n->in[1], *zr = n->in[2], *rh = n->in[3], *w = n->in[4];
    bt_tensor *b = n->in[5];
    int B = n->out->shape[0], H = n->out->shape[1];
    bt_real *t = bt_node_tangent(n); /* the product's tangent, then h_t' in place */
    if (!t)
        return;
    bt_recurrent_tangent(rh, w, B, H, H, t);
    for (size_t r = 0; r < (size_t)B; r++)
        for (int j = 0; j < H; j++) {
            size_t i = r * H + j;
            bt_real z = zr->data[r * 2 * H + j], nv = n->saved[i];
            bt_real sum = t[i] + (xw->tangent ? xw->tangent[r * 3 * H + 2 * H + j] : 0) +
                          (b->tangent ? b->tangent[2 * H + j] : 0);
            bt_real tn = (1 - nv * nv) * sum;
            bt_real tz = zr->tangent ? zr->tangent[r * 2 * H + j] : 0;
            t[i] = tn + tz * (h->data[i] - nv) + z * ((h->tangent ? h->tangent[i] : 0) - tn);
        }
}

static const bt_op op_gru_cho_hidden = {"gru_cho_hidden", 6, hidden_forward, hidden_backward,
                                        hidden_jvp};

bt_tensor *bt_gru_cho_hidden(bt_graph *g, bt_tensor *xw, bt_tensor *h, bt_tensor *zr,
                             bt_tensor *rh, bt_tensor *w_hh, bt_tensor *b)
{
    bt_tensor *in[6] = {xw, h, zr, rh, w_hh, b};
    if (!bt_op_begin(g, in, 6))
        return NULL;
    int B = h->ndim == 2 ? h->shape[0] : 0, H = h->ndim == 2 ? h->shape[1] : 0;
    if (h->ndim != 2 || xw->ndim != 2 || xw->shape[0] != B || xw->shape[1] != 3 * H ||
        zr->ndim != 2 || zr->shape[0] != B || zr->shape[1] != 2 * H || rh->ndim != 2 ||
        rh->shape[0] != B || rh->shape[1] != H || w_hh->ndim != 2 || w_hh->shape[0] != H ||
        w_hh->shape[1] != H || b->size != (size_t)3 * H) {
        bt_graph_fail(g, BT_ERR_SHAPE, "gru_cho_hidden: needs xw [B,3H], h [B,H], zr [B,2H], "
                      "rh [B,H], W_hh [H,H], b [3H]; got xw %s, h %s, zr %s, rh %s, W_hh %s, b %s",
                      bt_shp(xw), bt_shp(h), bt_shp(zr), bt_shp(rh), bt_shp(w_hh), bt_shp(b));
        return NULL;
    }
    bt_tensor *out = bt_op_output(g, 2, h->shape);
    bt_real *nv = out ? bt_op_scratch(g, sizeof(bt_real) * (size_t)B * H) : NULL;
    bt_node *n = nv ? bt_graph_record(g, &op_gru_cho_hidden, out, in, 6) : NULL;
    if (!n)
        return NULL;
    n->saved = nv;
    op_gru_cho_hidden.forward(n);
    return out;
}
