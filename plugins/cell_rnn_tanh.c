/* cell_rnn_tanh.c: the classic char-RNN cell.
 *   h_t = tanh(x_t W_xh + h_{t-1} W_hh + b_h),  o_t = h_t W_hq + b_q
 * For token input x_t is one-hot, so x_t W_xh is a lookup of the token's row;
 * real inputs [B,D] use a matrix product with W_xh [D,H].
 * Shapes: W_xh [V,H], W_hh [H,H], b_h [H], W_hq [H,V], b_q [V]. */
#include "cell_common.h"

static int rnn_params(const bt_cell_dims *d, bt_param_spec *s, int max, char *err, size_t errlen)
{
    (void)err; (void)errlen;
    if (max < 5)
        return -1;
    cell_param(&s[0], "W_xh", d->input, d->hidden, BT_INIT_NORMAL, CELL_SIGMA, false);
    cell_param(&s[1], "W_hh", d->hidden, d->hidden, BT_INIT_NORMAL, CELL_SIGMA, true);
    cell_param(&s[2], "b_h", d->hidden, 0, BT_INIT_ZERO, 0, false);
    if (d->output == 0) /* a layer of a stack: the host's output layer reads h */
        return 3;
    cell_param(&s[3], "W_hq", d->hidden, d->output, BT_INIT_NORMAL, CELL_SIGMA, false);
    cell_param(&s[4], "b_q", d->output, 0, BT_INIT_ZERO, 0, false);
    return 5;
}

static bt_tensor *rnn_step(const bt_host *H, bt_graph *g, bt_tensor *const *p,
                           const bt_step_input *in, bt_tensor *const *state, bt_tensor **next)
{
    /* One fused op (keeps only h_t); the same as
     * tanh(add(add(cell_input(W_xh), matmul(h, W_hh)), b_h)). */
    next[0] = H->rnn_tanh_step(g, p[0], in->ids, in->x, state[0], p[1], p[2]); /* [B,H] */
    if (!p[3] || in->state_only) /* no output layer (output 0), or no output read */
        return next[0];
    return H->add(g, H->matmul(g, next[0], p[3]), p[4]);              /* [B,V] */
}

static const char doc[] =
    "The classic char-RNN (Elman) cell. Row vectors: a product reads x W.\n"
    "  h_t = tanh(x_t W_xh + h_{t-1} W_hh + b_h)\n"
    "  out_t = h_t W_hq + b_q\n"
    "Input: token ids (x_t one-hot: x_t W_xh is row x_t of W_xh) or real rows\n"
    "x_t [B,D].\n"
    "Parameters:\n"
    "  W_xh [V,H] or [D,H]\n"
    "  W_hh [H,H]\n"
    "  b_h  [H]                 one bias\n"
    "  W_hq [H,V], b_q [V]      the output layer\n"
    "State: h [B,H]. Loss: softmax cross-entropy (xent) of out_t.\n"
    "PyTorch, exact: nn.RNN(V, H, nonlinearity='tanh') fed one-hot rows, then\n"
    "nn.Linear(H, V):\n"
    "  weight_ih_l0 [H,V] = W_xh^T      weight_hh_l0 [H,H] = W_hh^T\n"
    "  bias_ih_l0 + bias_hh_l0 = b_h    (bptt to torch: bias_ih_l0 = b_h,\n"
    "                                    bias_hh_l0 = 0)\n"
    "  Linear.weight [V,H] = W_hq^T     Linear.bias [V] = b_q\n"
    "  Only the sum of nn.RNN's two biases matters: both have b_h's gradient.\n"
    "(tools/torch_convert.py --module rnn does this.)\n";

static const bt_cell_def rnn_tanh = {
    .size = sizeof(bt_cell_def),
    .name = "rnn_tanh",
    .summary = "tanh RNN with token (one-hot) or real input (the classic char-RNN)",
    .input = BT_INPUT_TOKENS,
    .loss = BT_LOSS_XENT,
    .params = rnn_params,
    .states = one_state,
    .step = rnn_step,
    .doc = doc,
    .flags = BT_CELL_STACKABLE,
};

static int init(const bt_host *host, bt_registrar *reg, char *err, size_t errlen)
{
    (void)err; (void)errlen;
    return host->register_cell(reg, &rnn_tanh);
}

BT_PLUGIN("cell_rnn_tanh", "1.0.0", init)
