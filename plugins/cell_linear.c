/* cell_linear.c: the linear RNN of the BPTT analysis (no bias, identity
 * activation), written in its column-vector notation:
 *   h_t = W_hx x_t + W_hh h_{t-1},  o_t = W_qh h_t
 * With rows of a batch as row vectors this is h = x W_hx^T + h W_hh^T.
 * Shapes: W_hx [H,D], W_hh [H,H], W_qh [Q,H]; loss 0.5 ||o_t - y_t||^2. */
#include "cell_common.h"

static int linear_params(const bt_cell_dims *d, bt_param_spec *s, int max, char *err,
                         size_t errlen)
{
    (void)err; (void)errlen;
    if (max < 3)
        return -1;
    cell_param(&s[0], "W_hx", d->hidden, d->input, BT_INIT_NORMAL, 0.3, false);
    cell_param(&s[1], "W_hh", d->hidden, d->hidden, BT_INIT_NORMAL, 0.3, true);
    if (d->output == 0) /* a layer of a stack: the host's output layer reads h */
        return 2;
    cell_param(&s[2], "W_qh", d->output, d->hidden, BT_INIT_NORMAL, 0.3, false);
    return 3;
}

static bt_tensor *linear_step(const bt_host *H, bt_graph *g, bt_tensor *const *p,
                              const bt_step_input *in, bt_tensor *const *state, bt_tensor **next)
{
    if (!in->x) {
        H->graph_fail(g, BT_ERR_ARG, "cell linear takes real inputs x [B,D], not token ids");
        return NULL;
    }
    bt_tensor *xh = H->matmul_t(g, in->x, false, p[0], true);        /* [B,H] */
    bt_tensor *hh = H->matmul_t(g, state[0], false, p[1], true);     /* [B,H] */
    next[0] = H->add(g, xh, hh);
    if (!p[2] || in->state_only) /* no output layer (output 0), or no output read */
        return next[0];
    return H->matmul_t(g, next[0], false, p[2], true);               /* [B,Q] */
}

static const char doc[] =
    "The linear RNN of the BPTT analysis: no bias, identity activation, written\n"
    "in its column-vector notation.\n"
    "  h_t = W_hx x_t + W_hh h_{t-1}\n"
    "  out_t = W_qh h_t\n"
    "Per row of a batch: h_t = x_t W_hx^T + h_{t-1} W_hh^T, out_t = h_t W_qh^T.\n"
    "Input: real rows x_t [B,D] only.\n"
    "Parameters (layout [out, in], as PyTorch's):\n"
    "  W_hx [H,D]\n"
    "  W_hh [H,H]\n"
    "  W_qh [Q,H]\n"
    "State: h [B,H]. Loss: 1/2 ||out_t - y_t||^2 (mse), summed over the Q\n"
    "outputs, averaged over rows and steps.\n"
    "PyTorch: no nn.RNN mapping (nn.RNN's nonlinearity is tanh or relu, never the\n"
    "identity). The same cell in PyTorch is three bias-free nn.Linear layers,\n"
    "whose .weight are W_hx, W_hh and W_qh as they are (no transpose):\n"
    "h = lin_x(x) + lin_h(h), out = lin_q(h).\n";

static const bt_cell_def linear = {
    .size = sizeof(bt_cell_def),
    .name = "linear",
    .summary = "linear RNN h = W_hx x + W_hh h, o = W_qh h (the BPTT analysis)",
    .input = BT_INPUT_REAL,
    .loss = BT_LOSS_MSE,
    .params = linear_params,
    .states = one_state,
    .step = linear_step,
    .doc = doc,
    .flags = BT_CELL_STACKABLE,
};

static int init(const bt_host *host, bt_registrar *reg, char *err, size_t errlen)
{
    (void)err; (void)errlen;
    return host->register_cell(reg, &linear);
}

BT_PLUGIN("cell_linear", "1.0.0", init)
