/* cell_lstm.c: long short-term memory, from the host's fused LSTM ops
 * (ops/lstm_step.c). Its state is (h, c):
 * truncation acts on both, since the unroller treats every state alike.
 *   [i f g o] = x_t W_x + h W_h + b   (sigmoid on i, f, o; tanh on g)
 *   c_t = sigmoid(f) * c + sigmoid(i) * tanh(g),  h_t = sigmoid(o) * tanh(c_t)
 *   o_t = h_t W_hq + b_q
 * Shapes: W_x [V,4H], W_h [H,4H], b [4H], W_hq [H,V], b_q [V]. */
#include "cell_common.h"

static int lstm_params(const bt_cell_dims *d, bt_param_spec *s, int max, char *err,
                       size_t errlen)
{
    (void)err; (void)errlen;
    int h = d->hidden;
    if (max < 5)
        return -1;
    cell_param(&s[0], "W_x", d->input, 4 * h, BT_INIT_NORMAL, CELL_SIGMA, false);
    cell_param(&s[1], "W_h", h, 4 * h, BT_INIT_NORMAL, CELL_SIGMA, true);
    cell_param(&s[2], "b", 4 * h, 0, BT_INIT_ZERO, 0, false);
    if (d->output == 0) /* a layer of a stack: the host's output layer reads h */
        return 3;
    cell_param(&s[3], "W_hq", h, d->output, BT_INIT_NORMAL, CELL_SIGMA, false);
    cell_param(&s[4], "b_q", d->output, 0, BT_INIT_ZERO, 0, false);
    return 5;
}

static int lstm_states(const bt_cell_dims *d, int *widths, int max)
{
    if (max < 2)
        return -1;
    widths[0] = widths[1] = d->hidden;
    return 2;
}

static bt_tensor *lstm_step(const bt_host *H, bt_graph *g, bt_tensor *const *p,
                            const bt_step_input *in, bt_tensor *const *state, bt_tensor **next)
{
    /* the host's fused ops (ABI 2.6): the same cell as slices, a concat,
     * sigmoid, tanh, products and sums, in three ops instead of seventeen */
    bt_tensor *act = H->lstm_gates(g, cell_input(H, g, p[0], in), state[0], p[1], p[2]);
    next[1] = H->lstm_cell(g, act, state[1]);   /* c_t = f c + i g */
    next[0] = H->lstm_hidden(g, act, next[1]);  /* h_t = o tanh(c_t) */
    if (!p[3] || in->state_only) /* no output layer (output 0), or no output read */
        return next[0];
    return H->add(g, H->matmul(g, next[0], p[3]), p[4]);
}

static const char doc[] =
    "Long short-term memory with torch.nn.LSTM's gate order i, f, g, o.\n"
    "Row vectors: a product reads x W.\n"
    "  [a_i a_f a_g a_o] = x_t W_x + h_{t-1} W_h + b    [B,4H]\n"
    "  i = sigmoid(a_i)  f = sigmoid(a_f)  g = tanh(a_g)  o = sigmoid(a_o)\n"
    "  c_t = f * c_{t-1} + i * g\n"
    "  h_t = o * tanh(c_t)\n"
    "  out_t = h_t W_hq + b_q\n"
    "Input: token ids (x_t one-hot: x_t W_x is row x_t of W_x) or real rows\n"
    "x_t [B,D].\n"
    "Parameters:\n"
    "  W_x [V,4H] or [D,4H]    columns in blocks i | f | g | o\n"
    "  W_h [H,4H]              columns in blocks i | f | g | o\n"
    "  b   [4H]                one bias, entries in blocks i | f | g | o\n"
    "  W_hq [H,V], b_q [V]     the output layer\n"
    "State: h [B,H] and c [B,H]; truncation acts on both. Loss: softmax\n"
    "cross-entropy (xent) of out_t.\n"
    "PyTorch, exact: nn.LSTM(V, H) fed one-hot rows, then nn.Linear(H, V):\n"
    "  weight_ih_l0 [4H,V] = W_x^T      weight_hh_l0 [4H,H] = W_h^T\n"
    "  bias_ih_l0 + bias_hh_l0 = b      (bptt to torch: bias_ih_l0 = b,\n"
    "                                    bias_hh_l0 = 0)\n"
    "  Linear.weight [V,H] = W_hq^T     Linear.bias [V] = b_q\n"
    "  Only the sum of nn.LSTM's two biases matters: both have b's gradient.\n"
    "  nn.LSTM's proj_size (weight_hr_l0) has no counterpart.\n"
    "(tools/torch_convert.py --module lstm does this.)\n";

static const bt_cell_def lstm = {
    .size = sizeof(bt_cell_def),
    .name = "lstm",
    .summary = "long short-term memory with token (one-hot) or real input; state (h, c)",
    .input = BT_INPUT_TOKENS,
    .loss = BT_LOSS_XENT,
    .params = lstm_params,
    .states = lstm_states,
    .step = lstm_step,
    .doc = doc,
    .flags = BT_CELL_STACKABLE,
};

static int init(const bt_host *host, bt_registrar *reg, char *err, size_t errlen)
{
    (void)err; (void)errlen;
    return host->register_cell(reg, &lstm);
}

BT_PLUGIN("cell_lstm", "1.0.0", init)
