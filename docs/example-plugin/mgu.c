/* mgu.c: a cell plugin built outside the bptt tree, the cell example of
 * docs/writing-a-plugin.md. The minimal gated unit (MGU, Zhou et al. 2016,
 * "Minimal gated unit for recurrent neural networks"): a GRU with one gate.
 * Row vectors, a product reads x W:
 *   f_t = sigmoid(x_t W_xf + h_{t-1} W_hf + b_f)          the gate
 *   c_t = tanh(x_t W_xc + (f_t * h_{t-1}) W_hc + b_c)      the candidate
 *   h_t = (1 - f_t) * h_{t-1} + f_t * c_t                  computed as h + f (c - h)
 *   o_t = h_t W_hq + b_q
 * Built from host ops only, so it needs no backward code. It registers two
 * cells with the same parameters and step: "mgu" (token ids, cross-entropy)
 * and "mgu_real" (real rows x_t [B,D], squared error).
 * Shapes: W_x [V,2H] (columns f | c), b_f [H], b_c [H], W_hf [H,H], W_hc [H,H],
 * W_hq [H,Q], b_q [Q]. B batch, H hidden, V vocabulary, D input, Q output.
 * Build: cc -shared -fPIC -fvisibility=hidden $(pkg-config --cflags bptt) mgu.c -o mgu.so */
#include <stdio.h>
#include <string.h>

#include <bptt_plugin.h>

enum { W_X, B_F, B_C, W_HF, W_HC, W_HQ, B_Q, N_PARAMS }; /* the order step() receives */

static void spec(bt_param_spec *s, const char *name, int rows, int cols, bt_init_kind init,
                 double scale, bool recurrent)
{
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->ndim = cols > 0 ? 2 : 1; /* cols 0: a vector [rows] */
    s->shape[0] = rows;
    s->shape[1] = cols;
    s->init = init;
    s->scale = scale;
    s->recurrent = recurrent;
}

static int mgu_params(const bt_cell_dims *d, bt_param_spec *s, int max, char *err, size_t errlen)
{
    if (max < N_PARAMS) {
        snprintf(err, errlen, "mgu: needs room for %d parameters, the host offers %d", N_PARAMS, max);
        return -1;
    }
    int h = d->hidden;
    spec(&s[W_X], "W_x", d->input, 2 * h, BT_INIT_NORMAL, 0.01, false);
    /* b_f = -1: sigmoid(-1) = 0.27, so a fresh cell keeps about three quarters
     * of its state each step (the role the forget-gate bias of +1 plays in an LSTM). */
    spec(&s[B_F], "b_f", h, 0, BT_INIT_CONSTANT, -1.0, false);
    spec(&s[B_C], "b_c", h, 0, BT_INIT_ZERO, 0, false);
    /* recurrent: the hidden-to-hidden matrices, which --init orthogonal,
     * identity and spectral:RHO act on. */
    spec(&s[W_HF], "W_hf", h, h, BT_INIT_NORMAL, 0.01, true);
    spec(&s[W_HC], "W_hc", h, h, BT_INIT_NORMAL, 0.01, true);
    spec(&s[W_HQ], "W_hq", h, d->output, BT_INIT_NORMAL, 0.01, false);
    spec(&s[B_Q], "b_q", d->output, 0, BT_INIT_ZERO, 0, false);
    return N_PARAMS;
}

/* One state, h [B,H]. */
static int mgu_states(const bt_cell_dims *d, int *widths, int max)
{
    if (max < 1)
        return -1;
    widths[0] = d->hidden;
    return 1;
}

/* x_t W_x [B,2H]: for token ids x_t is one-hot, so the product is a lookup of
 * the ids' rows of W_x [V,2H] (the host's embedding op, whose backward adds
 * into those rows only); real rows x_t [B,D] take a product with W_x [D,2H]. */
static bt_tensor *input_product(const bt_host *H, bt_graph *g, bt_tensor *w_x,
                                const bt_step_input *in)
{
    if (in->ids)
        return H->embedding(g, w_x, in->ids, in->batch);
    if (!in->x) {
        H->graph_fail(g, BT_ERR_ARG, "mgu: the step has neither token ids nor x");
        return NULL;
    }
    if (in->x->ndim != 2 || in->x->shape[1] != w_x->shape[0]) {
        H->graph_fail(g, BT_ERR_SHAPE, "mgu: x has %d columns, W_x has %d rows",
                      in->x->ndim == 2 ? in->x->shape[1] : -1, w_x->shape[0]);
        return NULL;
    }
    return H->matmul(g, in->x, w_x);
}

static bt_tensor *mgu_step(const bt_host *H, bt_graph *g, bt_tensor *const *p,
                           const bt_step_input *in, bt_tensor *const *state, bt_tensor **next)
{
    int h = p[W_HF]->shape[0];
    bt_tensor *hp = state[0];                                             /* [B,H] */
    bt_tensor *xw = input_product(H, g, p[W_X], in);                      /* [B,2H] */
    if (!xw)
        return NULL;
    /* Ops given a NULL input return NULL and the graph keeps the first error,
     * so the lines below need no checks of their own. */
    bt_tensor *f = H->sigmoid(g, H->add(g, H->add(g, H->slice(g, xw, 0, h),
                                                  H->matmul(g, hp, p[W_HF])), p[B_F]));
    bt_tensor *c = H->tanh(g, H->add(g, H->add(g, H->slice(g, xw, h, h),
                                               H->matmul(g, H->mul(g, f, hp), p[W_HC])), p[B_C]));
    next[0] = H->add(g, hp, H->mul(g, f, H->sub(g, c, hp)));              /* [B,H] */
    return H->add(g, H->matmul(g, next[0], p[W_HQ]), p[B_Q]);            /* [B,Q] */
}

/* What `bptt plugins --describe mgu` prints (ABI 2.1). */
#define MGU_DOC_BODY                                                                 \
    "Row vectors: a product reads x W.\n"                                            \
    "  f_t = sigmoid(x_t W_xf + h_{t-1} W_hf + b_f)        the gate\n"                \
    "  c_t = tanh(x_t W_xc + (f_t * h_{t-1}) W_hc + b_c)   the candidate\n"           \
    "  h_t = (1 - f_t) * h_{t-1} + f_t * c_t               (as h + f (c - h))\n"      \
    "  out_t = h_t W_hq + b_q\n"                                                      \
    "Parameters:\n"                                                                  \
    "  W_x  [V,2H] or [D,2H]   columns in blocks f | c: W_x = [W_xf | W_xc]\n"        \
    "  b_f  [H]                starts at -1 (sigmoid(-1) = 0.27: keep the state)\n"   \
    "  b_c  [H]\n"                                                                   \
    "  W_hf [H,H], W_hc [H,H]  recurrent\n"                                          \
    "  W_hq [H,Q], b_q [Q]     the output layer\n"                                   \
    "State: h [B,H].\n"                                                              \
    "PyTorch: no torch.nn module computes this cell.\n"

static const char mgu_doc[] =
    "Minimal gated unit (Zhou et al. 2016): a GRU with one gate f, which both\n"
    "resets h inside the candidate and mixes old and new state.\n"
    MGU_DOC_BODY
    "Input: token ids (x_t one-hot: x_t W_x is row x_t of W_x); real rows x_t [B,D]\n"
    "also work, through the same step (the cell mgu_real).\n"
    "Loss: softmax cross-entropy (xent) of out_t; Q = V.\n";

static const char mgu_real_doc[] =
    "Minimal gated unit (Zhou et al. 2016) on real inputs x_t [B,D] with squared\n"
    "error: the step and parameters of the cell mgu.\n"
    MGU_DOC_BODY
    "Loss: 0.5 ||out_t - y_t||^2 (mse).\n";

static const bt_cell_def mgu_def = {
    .size = sizeof(bt_cell_def),
    .name = "mgu",
    .summary = "minimal gated unit (Zhou et al. 2016), token input (example plugin)",
    .input = BT_INPUT_TOKENS,
    .loss = BT_LOSS_XENT,
    .params = mgu_params,
    .states = mgu_states,
    .step = mgu_step,
    .doc = mgu_doc,
};

static const bt_cell_def mgu_real_def = {
    .size = sizeof(bt_cell_def),
    .name = "mgu_real",
    .summary = "minimal gated unit, real input and squared error (example plugin)",
    .input = BT_INPUT_REAL,
    .loss = BT_LOSS_MSE,
    .params = mgu_params,
    .states = mgu_states,
    .step = mgu_step,
    .doc = mgu_real_doc,
};

static int mgu_init(const bt_host *host, bt_registrar *reg, char *err, size_t errlen)
{
    if (host->register_cell(reg, &mgu_def) != BT_OK ||
        host->register_cell(reg, &mgu_real_def) != BT_OK) {
        snprintf(err, errlen, "could not register the cells mgu and mgu_real");
        return -1;
    }
    return 0;
}

BT_PLUGIN("mgu", "0.1.0", mgu_init)
