/* lstm_step.c: the LSTM step in three fused ops, torch.nn.LSTM's gate order
 * i, f, g, o in blocks of H columns:
 *   lstm_gates   act[B,4H] = [s(a_i) s(a_f) tanh(a_g) s(a_o)],
 *                a = xw + h W_h + b   (xw: the input's product or row lookup)
 *   lstm_cell    c'[B,H] = f c + i g
 *   lstm_hidden  h'[B,H] = o tanh(c')
 * The same cell from primitive ops (a matrix product, six slices, a concat,
 * a sigmoid, two tanh, three elementwise products and three sums: 17 ops,
 * cell_lstm.c before) kept a buffer per op and step and spent a third of a
 * training step on them and their copies; these keep the activations, c'
 * and h', which is all their backward needs (the derivatives are s (1 - s)
 * and 1 - tanh^2 of saved outputs; lstm_hidden recomputes tanh(c')). Added
 * because the profile said so (docs/speed.md, section 6); each op is
 * gradient-checked and has its tangent rule, like every other. */
#include <string.h>

#include "activations.h"
#include "bptt_op.h"
#include "packed.h"
#include "recurrent_grad.h"

/* The derivative of gate column j's activation at its output y: tanh on the
 * g block [2H, 3H), the logistic function elsewhere. (dactivate_rows applies
 * the same rule block by block, so that its loops vectorise.) */
static inline bt_real gate_derivative(bt_real y, int j, int H)
{
    return j >= 2 * H && j < 3 * H ? 1 - y * y : y * (1 - y);
}

/* ---- lstm_gates ----------------------------------------------------------------- */

/* act = activations of act + xw + b, in place, row by row. */
BT_VECTOR_CLONES static void activate_rows(bt_real *act, const bt_real *xw, const bt_real *b,
                                           int B, int H)
{
    for (int r = 0; r < B; r++) {
        bt_real *row = act + (size_t)r * 4 * H;
        const bt_real *x = xw + (size_t)r * 4 * H;
        for (int j = 0; j < 2 * H; j++)
            row[j] = R_SIGMOID(row[j] + x[j] + b[j]);
        for (int j = 2 * H; j < 3 * H; j++)
            row[j] = R_TANH(row[j] + x[j] + b[j]);
        for (int j = 3 * H; j < 4 * H; j++)
            row[j] = R_SIGMOID(row[j] + x[j] + b[j]);
    }
}

/* da = dact * act'(act) (gate_derivative, block by block); dxw += da and
 * db += its column sums where given. da may be dact itself (in place). */
BT_VECTOR_CLONES static void dactivate_rows(bt_real *da, const bt_real *dact, const bt_real *act,
                                            bt_real *dxw, bt_real *db, int B, int H)
{
    for (int r = 0; r < B; r++) {
        size_t o = (size_t)r * 4 * H;
        const bt_real *y = act + o, *dy = dact + o;
        bt_real *d = da + o;
        for (int j = 0; j < 2 * H; j++)
            d[j] = dy[j] * (y[j] * (1 - y[j]));
        for (int j = 2 * H; j < 3 * H; j++)
            d[j] = dy[j] * (1 - y[j] * y[j]);
        for (int j = 3 * H; j < 4 * H; j++)
            d[j] = dy[j] * (y[j] * (1 - y[j]));
        for (int j = 0; dxw && j < 4 * H; j++)
            dxw[o + j] += d[j];
        for (int j = 0; db && j < 4 * H; j++)
            db[j] += d[j];
    }
}

static void gates_forward(bt_node *n)
{
    bt_tensor *xw = n->in[0], *h = n->in[1], *wh = n->in[2], *b = n->in[3], *out = n->out;
    int B = out->shape[0], H = h->shape[1];
    /* W_h packed once per window where the backend keeps packs (packed.c) */
    bt_gemm_weight(n->graph, B, h->data, wh, false, 0, out->data);
    activate_rows(out->data, xw->data, b->data, B, H);
}

static void gates_backward(bt_node *n)
{
    bt_tensor *xw = n->in[0], *h = n->in[1], *wh = n->in[2], *b = n->in[3], *out = n->out;
    int B = out->shape[0], H = h->shape[1];
    bt_real *da = bt_recurrent_d(n, wh, B, true);
    if (!da)
        return;
    dactivate_rows(da, out->grad, out->data, xw->requires_grad ? xw->grad : NULL,
                   b->requires_grad ? b->grad : NULL, B, H);
    bt_recurrent_backward(n, h, wh, da, B);
}

/* act' = act'(act) * (xw' + h' W_h + h W_h' + b') */
static void gates_jvp(bt_node *n)
{
    bt_tensor *xw = n->in[0], *h = n->in[1], *wh = n->in[2], *b = n->in[3], *out = n->out;
    int B = out->shape[0], H = h->shape[1], N = 4 * H;
    bt_real *ta = bt_node_tangent(n);
    if (!ta)
        return;
    if (xw->tangent)
        memcpy(ta, xw->tangent, sizeof(bt_real) * out->size);
    bt_recurrent_tangent(h, wh, B, H, N, ta);
    for (int r = 0; r < B; r++)
        for (int j = 0; j < N; j++) {
            size_t i = (size_t)r * N + j;
            ta[i] = (ta[i] + (b->tangent ? b->tangent[j] : 0)) * gate_derivative(out->data[i], j, H);
        }
}

static const bt_op op_lstm_gates = {"lstm_gates", 4, gates_forward, gates_backward, gates_jvp};

bt_tensor *bt_lstm_gates(bt_graph *g, bt_tensor *xw, bt_tensor *h, bt_tensor *w_h, bt_tensor *b)
{
    bt_tensor *in[4] = {xw, h, w_h, b};
    if (!bt_op_begin(g, in, 4))
        return NULL;
    int B = h->ndim == 2 ? h->shape[0] : 0, H = h->ndim == 2 ? h->shape[1] : 0;
    if (h->ndim != 2 || w_h->ndim != 2 || w_h->shape[0] != H || w_h->shape[1] != 4 * H ||
        b->size != (size_t)4 * H || xw->ndim != 2 || xw->shape[0] != B || xw->shape[1] != 4 * H) {
        bt_graph_fail(g, BT_ERR_SHAPE, "lstm_gates: needs xw [B,4H], h [B,H], W_h [H,4H], b [4H]; "
                      "got xw %s, h %s, W_h %s, b %s", bt_shp(xw), bt_shp(h), bt_shp(w_h), bt_shp(b));
        return NULL;
    }
    bt_tensor *out = bt_op_output(g, 2, (int[]){B, 4 * H});
    if (!out)
        return NULL;
    bt_node *n = bt_graph_record(g, &op_lstm_gates, out, in, 4);
    if (!n)
        return NULL;
    op_lstm_gates.forward(n);
    return out;
}

/* ---- lstm_cell and lstm_hidden: act's blocks read in place ------------------------ */

/* Both take act [B,4H] and a state [B,H]; false after failing the graph otherwise. */
static bool state_op_shapes(bt_graph *g, const char *name, bt_tensor *act, bt_tensor *s)
{
    if (act->ndim == 2 && s->ndim == 2 && act->shape[0] == s->shape[0] &&
        act->shape[1] == 4 * s->shape[1])
        return true;
    bt_graph_fail(g, BT_ERR_SHAPE, "%s: needs act [B,4H] and a state [B,H]; got act %s, state %s",
                  name, bt_shp(act), bt_shp(s));
    return false;
}

static bt_tensor *state_op(bt_graph *g, const bt_op *op, bt_tensor *act, bt_tensor *s)
{
    bt_tensor *in[2] = {act, s};
    if (!bt_op_begin(g, in, 2) || !state_op_shapes(g, op->name, act, s))
        return NULL;
    bt_tensor *out = bt_op_output(g, 2, s->shape);
    if (!out)
        return NULL;
    bt_node *n = bt_graph_record(g, op, out, in, 2);
    if (!n)
        return NULL;
    op->forward(n);
    return out;
}

/* c' = f c + i g */
BT_VECTOR_CLONES static void cell_forward(bt_node *n)
{
    const bt_real *act = n->in[0]->data, *c = n->in[1]->data;
    bt_real *out = n->out->data;
    int B = n->out->shape[0], H = n->out->shape[1];
    for (int r = 0; r < B; r++) {
        const bt_real *a = act + (size_t)r * 4 * H, *cr = c + (size_t)r * H;
        bt_real *o = out + (size_t)r * H;
        for (int j = 0; j < H; j++)
            o[j] = a[H + j] * cr[j] + a[j] * a[2 * H + j];
    }
}

/* One row of lstm_cell's backward: di += d g, df += d c, dg += d i (da, when
 * given) and dc += d f (dc, when given). restrict: the gradients are other
 * buffers than the values, which lets the compiler vectorise without
 * checking every pair of the five pointers for overlap. */
static inline void cell_backward_row(bt_real *restrict da, bt_real *restrict dc,
                                     const bt_real *restrict a, const bt_real *restrict c,
                                     const bt_real *restrict d, int H)
{
    for (int j = 0; da && j < H; j++) {
        da[j] += d[j] * a[2 * H + j];
        da[H + j] += d[j] * c[j];
        da[2 * H + j] += d[j] * a[j];
    }
    for (int j = 0; dc && j < H; j++)
        dc[j] += d[j] * a[H + j];
}

BT_VECTOR_CLONES static void cell_backward(bt_node *n)
{
    bt_tensor *act = n->in[0], *c = n->in[1];
    int B = n->out->shape[0], H = n->out->shape[1];
    for (size_t r = 0; r < (size_t)B; r++)
        cell_backward_row(act->requires_grad ? act->grad + r * 4 * H : NULL,
                          c->requires_grad ? c->grad + r * H : NULL, act->data + r * 4 * H,
                          c->data + r * H, n->out->grad + r * H, H);
}

/* c'' = f' c + f c~ + i' g + i g'  (c~: c's tangent) */
static void cell_jvp(bt_node *n)
{
    bt_tensor *act = n->in[0], *c = n->in[1];
    bt_real *t = bt_node_tangent(n);
    int B = n->out->shape[0], H = n->out->shape[1];
    for (int r = 0; t && r < B; r++) {
        const bt_real *a = act->data + (size_t)r * 4 * H, *cr = c->data + (size_t)r * H;
        const bt_real *ta = act->tangent ? act->tangent + (size_t)r * 4 * H : NULL;
        const bt_real *tc = c->tangent ? c->tangent + (size_t)r * H : NULL;
        bt_real *o = t + (size_t)r * H;
        for (int j = 0; j < H; j++) {
            if (ta)
                o[j] += ta[H + j] * cr[j] + ta[j] * a[2 * H + j] + a[j] * ta[2 * H + j];
            if (tc)
                o[j] += a[H + j] * tc[j];
        }
    }
}

static const bt_op op_lstm_cell = {"lstm_cell", 2, cell_forward, cell_backward, cell_jvp};

bt_tensor *bt_lstm_cell(bt_graph *g, bt_tensor *act, bt_tensor *c)
{
    return state_op(g, &op_lstm_cell, act, c);
}

/* h' = o tanh(c') */
BT_VECTOR_CLONES static void hidden_forward(bt_node *n)
{
    const bt_real *act = n->in[0]->data, *c = n->in[1]->data;
    bt_real *out = n->out->data;
    int B = n->out->shape[0], H = n->out->shape[1];
    for (int r = 0; r < B; r++) {
        const bt_real *o = act + (size_t)r * 4 * H + 3 * H, *cr = c + (size_t)r * H;
        bt_real *y = out + (size_t)r * H;
        for (int j = 0; j < H; j++)
            y[j] = o[j] * R_TANH(cr[j]);
    }
}

/* One row of lstm_hidden's backward: do += d tanh(c) (dao, when given) and
 * dc += d o (1 - tanh(c)^2) (dc, when given); restrict as above. */
static inline void hidden_backward_row(bt_real *restrict dao, bt_real *restrict dc,
                                       const bt_real *restrict o, const bt_real *restrict c,
                                       const bt_real *restrict d, int H)
{
    for (int j = 0; j < H; j++) {
        bt_real th = R_TANH(c[j]);
        if (dao)
            dao[j] += d[j] * th;
        if (dc)
            dc[j] += d[j] * o[j] * (1 - th * th);
    }
}

BT_VECTOR_CLONES static void hidden_backward(bt_node *n)
{
    bt_tensor *act = n->in[0], *c = n->in[1];
    int B = n->out->shape[0], H = n->out->shape[1];
    for (size_t r = 0; r < (size_t)B; r++)
        hidden_backward_row(act->requires_grad ? act->grad + r * 4 * H + 3 * H : NULL,
                            c->requires_grad ? c->grad + r * H : NULL,
                            act->data + r * 4 * H + 3 * H, c->data + r * H, n->out->grad + r * H, H);
}

/* h'' = o' tanh(c') + o (1 - tanh(c')^2) c~ */
static void hidden_jvp(bt_node *n)
{
    bt_tensor *act = n->in[0], *c = n->in[1];
    bt_real *t = bt_node_tangent(n);
    int B = n->out->shape[0], H = n->out->shape[1];
    for (int r = 0; t && r < B; r++) {
        const bt_real *o = act->data + (size_t)r * 4 * H + 3 * H, *cr = c->data + (size_t)r * H;
        const bt_real *to = act->tangent ? act->tangent + (size_t)r * 4 * H + 3 * H : NULL;
        const bt_real *tc = c->tangent ? c->tangent + (size_t)r * H : NULL;
        bt_real *y = t + (size_t)r * H;
        for (int j = 0; j < H; j++) {
            bt_real th = R_TANH(cr[j]);
            if (to)
                y[j] += to[j] * th;
            if (tc)
                y[j] += o[j] * (1 - th * th) * tc[j];
        }
    }
}

static const bt_op op_lstm_hidden = {"lstm_hidden", 2, hidden_forward, hidden_backward, hidden_jvp};

bt_tensor *bt_lstm_hidden(bt_graph *g, bt_tensor *act, bt_tensor *c)
{
    return state_op(g, &op_lstm_hidden, act, c);
}
