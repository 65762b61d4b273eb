/* cell_gru.c: gated recurrent unit in the form of Cho et al. and d2l.ai, from
 * the host's three fused ops (ops/gru_cho_step.c; no backward of its own).
 *   [xz xr xh] = x_t W_x              (one lookup for the three gates; b is
 *                                      added inside the ops, as x W_x + b)
 *   [z r] = sigmoid([xz xr] + b_zr + h W_hzr)
 *   h~ = tanh(xh + b_h + (r * h) W_hh),   h_t = z * h + (1 - z) * h~ = h~ + z * (h - h~)
 *   o_t = h_t W_hq + b_q
 * Shapes: W_x [V,3H], b [3H], W_hzr [H,2H], W_hh [H,H], W_hq [H,V], b_q [V]. */
#include "cell_common.h"

static int gru_params(const bt_cell_dims *d, bt_param_spec *s, int max, char *err, size_t errlen)
{
    (void)err; (void)errlen;
    int h = d->hidden;
    if (max < 6)
        return -1;
    cell_param(&s[0], "W_x", d->input, 3 * h, BT_INIT_NORMAL, CELL_SIGMA, false);
    cell_param(&s[1], "b", 3 * h, 0, BT_INIT_ZERO, 0, false);
    cell_param(&s[2], "W_hzr", h, 2 * h, BT_INIT_NORMAL, CELL_SIGMA, true);
    cell_param(&s[3], "W_hh", h, h, BT_INIT_NORMAL, CELL_SIGMA, true);
    if (d->output == 0) /* a layer of a stack: the host's output layer reads h */
        return 4;
    cell_param(&s[4], "W_hq", h, d->output, BT_INIT_NORMAL, CELL_SIGMA, false);
    cell_param(&s[5], "b_q", d->output, 0, BT_INIT_ZERO, 0, false);
    return 6;
}

static bt_tensor *gru_step(const bt_host *H, bt_graph *g, bt_tensor *const *p,
                           const bt_step_input *in, bt_tensor *const *state, bt_tensor **next)
{
    /* the host's fused ops (ABI 2.8): the same cell as four sums, four slices,
     * two products, a sigmoid, a tanh, two elementwise products and a
     * difference, in three ops instead of fifteen */
    bt_tensor *hp = state[0];
    bt_tensor *xw = cell_input(H, g, p[0], in);                      /* [B,3H] */
    bt_tensor *zr = H->gru_cho_gates(g, xw, hp, p[2], p[1]);         /* [B,2H] */
    bt_tensor *rh = H->gru_cho_reset(g, zr, hp);                     /* r * h */
    next[0] = H->gru_cho_hidden(g, xw, hp, zr, rh, p[3], p[1]);      /* h~ + z (h - h~) */
    if (!p[4] || in->state_only) /* no output layer (output 0), or no output read */
        return next[0];
    return H->add(g, H->matmul(g, next[0], p[4]), p[5]);
}

static const char doc[] =
    "Gated recurrent unit in the form of Cho et al. (2014) and d2l.ai: gates in\n"
    "the order z, r; the reset gate multiplies h before the product; one bias.\n"
    "Row vectors: a product reads x W.\n"
    "  [a_z a_r a_n] = x_t W_x + b                  [B,3H]\n"
    "  [z r] = sigmoid([a_z a_r] + h_{t-1} W_hzr)   [B,2H]\n"
    "  n = tanh(a_n + (r * h_{t-1}) W_hh)\n"
    "  h_t = z * h_{t-1} + (1 - z) * n              (computed as n + z * (h_{t-1} - n))\n"
    "  out_t = h_t W_hq + b_q\n"
    "Input: token ids (x_t one-hot: x_t W_x is row x_t of W_x) or real rows\n"
    "x_t [B,D].\n"
    "Parameters:\n"
    "  W_x   [V,3H] or [D,3H]   columns in blocks z | r | n\n"
    "  b     [3H]               entries in blocks z | r | n\n"
    "  W_hzr [H,2H]             columns in blocks z | r\n"
    "  W_hh  [H,H]              the candidate's recurrent matrix\n"
    "  W_hq  [H,V], b_q [V]     the output layer\n"
    "State: h [B,H]. Loss: softmax cross-entropy (xent) of out_t.\n"
    "d2l's GRU from scratch is this cell: W_x = [W_xz | W_xr | W_xh],\n"
    "b = [b_z | b_r | b_h], W_hzr = [W_hz | W_hr], W_hh = W_hh.\n"
    "PyTorch: no exact mapping to nn.GRU, which computes\n"
    "n = tanh(W_in x + b_in + r * (W_hn h + b_hn)): its reset gate multiplies\n"
    "the product W_hn h, this cell's multiplies h before it, and\n"
    "(r * h) W_hh differs from r * (h W_hh) unless r is the same for every unit.\n"
    "The gates r and z would map (blocks reordered, transposed), the candidate\n"
    "cannot. For nn.GRU weights use the cell gru_torch.\n";

static const bt_cell_def gru = {
    .size = sizeof(bt_cell_def),
    .name = "gru",
    .summary = "GRU in the d2l/Cho form (reset gate before the product, one bias); token or real input",
    .input = BT_INPUT_TOKENS,
    .loss = BT_LOSS_XENT,
    .params = gru_params,
    .states = one_state,
    .step = gru_step,
    .doc = doc,
    .flags = BT_CELL_STACKABLE,
};

static int init(const bt_host *host, bt_registrar *reg, char *err, size_t errlen)
{
    (void)err; (void)errlen;
    return host->register_cell(reg, &gru);
}

BT_PLUGIN("cell_gru", "1.0.0", init)
