/* cell_influence.c: the influence-balancing system of Tallec & Ollivier's UORO
 * paper as a cell, so policies and optimizers can be compared on it:
 *   s_{t+1} = A s_t + theta * (1, ..., 1, -1, ..., -1),   o_t = s_{t+1}[0]
 * A has 1/2 on its diagonal and 1/2 just above it; the sign vector has P
 * positive entries. theta's one-step effect on s[0] is +theta, its long-run
 * effect 2 (2P - N) theta: with 2P < N they have opposite signs, so a gradient
 * truncated too early pushes theta the wrong way.
 * Dims: hidden = N (state width), input = P (the cell ignores x, which only has
 * to be there: the task source influence:N,P feeds zeros of width P), output = 1.
 * Shapes: theta [1]; state s [B,N]; x [B,P]; o [B,1]. */
#include "cell_common.h"

static int influence_params(const bt_cell_dims *d, bt_param_spec *s, int max, char *err,
                            size_t errlen)
{
    if (max < 1)
        return -1;
    if (d->input < 1 || d->input > d->hidden || d->output != 1) {
        snprintf(err, errlen,
                 "cell influence: input is P (positive signs, 1..N), hidden is N, output is 1; "
                 "got input %d, hidden %d, output %d",
                 d->input, d->hidden, d->output);
        return -1;
    }
    /* theta starts at 0 (where the demo starts it), whatever --init says. */
    cell_param(&s[0], "theta", 1, 0, BT_INIT_ZERO, 0, false);
    return 1;
}

static bt_tensor *influence_step(const bt_host *H, bt_graph *g, bt_tensor *const *p,
                                 const bt_step_input *in, bt_tensor *const *state,
                                 bt_tensor **next)
{
    bt_tensor *s = state[0]; /* [B,N] */
    int B = in->batch, N = s->shape[1], P = in->x ? in->x->shape[1] : 0;
    if (!in->x || P < 1 || P > N) {
        H->graph_fail(g, BT_ERR_ARG,
                      "cell influence takes real inputs x [B,P] with 1 <= P <= N (task influence:N,P)");
        return NULL;
    }
    /* s A^T without an N x N matrix: row i of A s is (s_i + s_{i+1}) / 2, so add s
     * shifted left by one column (a zero enters at the right end). */
    bt_tensor *shifted = H->graph_tensor(g, 2, (int[]){B, 1}); /* zeros [B,1] */
    if (N > 1) {
        bt_tensor *parts[2] = {H->slice(g, s, 1, N - 1), shifted};
        shifted = H->concat(g, parts, 2); /* [B,N] */
    }
    bt_tensor *as = N > 1 ? H->scale(g, H->add(g, s, shifted), 0.5) : H->scale(g, s, 0.5);
    bt_tensor *signs = H->graph_tensor(g, 1, (int[]){N}); /* [N], a constant */
    if (!signs)
        return NULL;
    for (int i = 0; i < N; i++)
        signs->data[i] = i < P ? 1 : -1;
    next[0] = H->add(g, as, H->mul(g, signs, p[0])); /* [B,N] + [N] */
    return H->slice(g, next[0], 0, 1);                /* [B,1] */
}

static const char doc[] =
    "The influence-balancing system of Tallec & Ollivier's UORO paper: one\n"
    "parameter, a known truncation bias; for comparing policies and optimizers.\n"
    "  s_t = A s_{t-1} + theta * signs\n"
    "  out_t = s_t[0]\n"
    "A [N,N] has 1/2 on its diagonal and 1/2 just above it; signs has +1 on the\n"
    "first P units and -1 on the other N - P.\n"
    "Sizes: hidden = N (the state's width), input = P (x_t [B,P] only sets P: its\n"
    "values are ignored), output = 1.\n"
    "Parameters:\n"
    "  theta [1]               starts at 0, whatever --init says\n"
    "State: s [B,N]. Loss: 1/2 (out_t - y_t)^2 (mse).\n"
    "theta's one-step effect on s[0] is +theta, its long-run effect\n"
    "2 (2P - N) theta: with 2P < N they have opposite signs, so a gradient\n"
    "truncated too early (fixed:1) moves theta the wrong way.\n"
    "PyTorch: no torch.nn module; a few lines of tensor code\n"
    "(influence_step in tests/torch/reference.py).\n";

static const bt_cell_def influence = {
    .size = sizeof(bt_cell_def),
    .name = "influence",
    .summary = "influence balancing (UORO paper): s' = A s + theta*signs, o = s'[0]; "
               "input = P, hidden = N",
    .input = BT_INPUT_REAL,
    .loss = BT_LOSS_MSE,
    .params = influence_params,
    .states = one_state,
    .step = influence_step,
    .doc = doc,
};

static int init(const bt_host *host, bt_registrar *reg, char *err, size_t errlen)
{
    (void)err; (void)errlen;
    return host->register_cell(reg, &influence);
}

BT_PLUGIN("cell_influence", "1.0.0", init)
