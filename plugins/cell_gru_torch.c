/* cell_gru_torch.c: gated recurrent unit with torch.nn.GRU's equations, from
 * the host's two fused GRU ops (ops/gru_step.c; no backward of its own).
 * Gates in nn.GRU's order r, z, n; the reset gate multiplies the recurrent
 * product and its bias; two biases.
 *   [ir iz in] = x_t W_ih + b_ih,   [hr hz hn] = h W_hh + b_hh      [B,3H] each
 *   r = sigmoid(ir + hr),  z = sigmoid(iz + hz),  n = tanh(in + r * hn)
 *   h_t = (1 - z) * n + z * h = n + z * (h - n),   o_t = h_t W_hq + b_q
 * Shapes: W_ih [V,3H] (or [D,3H]), W_hh [H,3H], b_ih [3H], b_hh [3H],
 * W_hq [H,V], b_q [V]. nn.GRU's weight_ih_l0 [3H,V] is W_ih transposed (rows
 * there, columns here, in the same r | z | n blocks); see docs/cells.md. */
#include "cell_common.h"

static int gru_torch_params(const bt_cell_dims *d, bt_param_spec *s, int max, char *err,
                            size_t errlen)
{
    (void)err; (void)errlen;
    int h = d->hidden;
    if (max < 6)
        return -1;
    cell_param(&s[0], "W_ih", d->input, 3 * h, BT_INIT_NORMAL, CELL_SIGMA, false);
    cell_param(&s[1], "W_hh", h, 3 * h, BT_INIT_NORMAL, CELL_SIGMA, true);
    cell_param(&s[2], "b_ih", 3 * h, 0, BT_INIT_ZERO, 0, false);
    cell_param(&s[3], "b_hh", 3 * h, 0, BT_INIT_ZERO, 0, false);
    if (d->output == 0) /* a layer of a stack: the host's output layer reads h */
        return 4;
    cell_param(&s[4], "W_hq", h, d->output, BT_INIT_NORMAL, CELL_SIGMA, false);
    cell_param(&s[5], "b_q", d->output, 0, BT_INIT_ZERO, 0, false);
    return 6;
}

static bt_tensor *gru_torch_step(const bt_host *H, bt_graph *g, bt_tensor *const *p,
                                 const bt_step_input *in, bt_tensor *const *state,
                                 bt_tensor **next)
{
    /* the host's fused ops (ABI 2.7): the same cell as a product, sums,
     * slices, sigmoid, tanh and elementwise products, in two ops instead of
     * seventeen */
    bt_tensor *act = H->gru_gates(g, cell_input(H, g, p[0], in), state[0], p[1], p[2], p[3]);
    next[0] = H->gru_hidden(g, act, state[0]); /* h_t = n + z (h - n) */
    if (!p[4] || in->state_only) /* no output layer (output 0), or no output read */
        return next[0];
    return H->add(g, H->matmul(g, next[0], p[4]), p[5]);              /* [B,V] */
}

static const char doc[] =
    "Gated recurrent unit with torch.nn.GRU's equations: gates in the order\n"
    "r, z, n; the reset gate multiplies the recurrent product and its bias;\n"
    "two biases. Row vectors: a product reads x W.\n"
    "  [i_r i_z i_n] = x_t W_ih + b_ih            [B,3H]\n"
    "  [h_r h_z h_n] = h_{t-1} W_hh + b_hh        [B,3H]\n"
    "  r = sigmoid(i_r + h_r)    z = sigmoid(i_z + h_z)\n"
    "  n = tanh(i_n + r * h_n)\n"
    "  h_t = (1 - z) * n + z * h_{t-1}            (computed as n + z * (h_{t-1} - n))\n"
    "  out_t = h_t W_hq + b_q\n"
    "Input: token ids (x_t one-hot: x_t W_ih is row x_t of W_ih) or real rows\n"
    "x_t [B,D].\n"
    "Parameters:\n"
    "  W_ih [V,3H] or [D,3H]   columns in blocks r | z | n\n"
    "  W_hh [H,3H]             columns in blocks r | z | n\n"
    "  b_ih [3H], b_hh [3H]    entries in blocks r | z | n\n"
    "  W_hq [H,V], b_q [V]     the output layer\n"
    "State: h [B,H]. Loss: softmax cross-entropy (xent) of out_t.\n"
    "PyTorch, exact both ways: nn.GRU(V, H) fed one-hot rows, then nn.Linear(H, V):\n"
    "  weight_ih_l0 [3H,V] = W_ih^T    weight_hh_l0 [3H,H] = W_hh^T\n"
    "  bias_ih_l0   [3H]   = b_ih      bias_hh_l0   [3H]   = b_hh\n"
    "  Linear.weight [V,H] = W_hq^T    Linear.bias  [V]    = b_q\n"
    "(tools/torch_convert.py --module gru does this.)\n";

static const bt_cell_def gru_torch = {
    .size = sizeof(bt_cell_def),
    .name = "gru_torch",
    .summary = "GRU with torch.nn.GRU's equations (gates r z n, two biases); token or real input",
    .input = BT_INPUT_TOKENS,
    .loss = BT_LOSS_XENT,
    .params = gru_torch_params,
    .states = one_state,
    .step = gru_torch_step,
    .doc = doc,
    .flags = BT_CELL_STACKABLE,
};

static int init(const bt_host *host, bt_registrar *reg, char *err, size_t errlen)
{
    (void)err; (void)errlen;
    return host->register_cell(reg, &gru_torch);
}

BT_PLUGIN("cell_gru_torch", "1.0.0", init)
