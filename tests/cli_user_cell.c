/* cli_user_cell.c: a cell as a user would write it outside the tree, for the
 * CLI test: `bptt plugins --plugin` must list it and `bptt gradcheck --plugin`
 * must check it. Real input, squared-error loss, a gated update:
 *   [u z] = x_t A,  z = sigmoid(z),  h_t = h + z * (tanh(u + h U) - h),  o_t = h_t C
 * Shapes: A [D,2H], U [H,H], C [H,Q]. */
#include <stdio.h>
#include <string.h>

#include "bptt_plugin.h"

static void spec(bt_param_spec *s, const char *name, int rows, int cols, bool recurrent)
{
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->ndim = 2;
    s->shape[0] = rows;
    s->shape[1] = cols;
    s->init = BT_INIT_NORMAL;
    s->scale = 0.1;
    s->recurrent = recurrent;
}

static int user_params(const bt_cell_dims *d, bt_param_spec *s, int max, char *err, size_t errlen)
{
    if (max < 3) {
        snprintf(err, errlen, "user_gated: needs room for 3 parameters");
        return -1;
    }
    spec(&s[0], "A", d->input, 2 * d->hidden, false);
    spec(&s[1], "U", d->hidden, d->hidden, true);
    spec(&s[2], "C", d->hidden, d->output, false);
    return 3;
}

static int user_states(const bt_cell_dims *d, int *widths, int max)
{
    if (max < 1)
        return -1;
    widths[0] = d->hidden;
    return 1;
}

static bt_tensor *user_step(const bt_host *H, bt_graph *g, bt_tensor *const *p,
                            const bt_step_input *in, bt_tensor *const *state, bt_tensor **next)
{
    if (!in->x) {
        H->graph_fail(g, BT_ERR_ARG, "user_gated takes real inputs x [B,D]");
        return NULL;
    }
    int h = p[1]->shape[0];
    bt_tensor *uz = H->matmul(g, in->x, p[0]);                               /* [B,2H] */
    bt_tensor *z = H->sigmoid(g, H->slice(g, uz, h, h));                      /* [B,H] */
    bt_tensor *cand = H->tanh(g, H->add(g, H->slice(g, uz, 0, h), H->matmul(g, state[0], p[1])));
    next[0] = H->add(g, state[0], H->mul(g, z, H->sub(g, cand, state[0])));  /* [B,H] */
    return H->matmul(g, next[0], p[2]);                                       /* [B,Q] */
}

static const bt_cell_def user_gated = {
    .size = sizeof(bt_cell_def),
    .name = "user_gated",
    .summary = "a user's gated cell (test of --plugin)",
    .input = BT_INPUT_REAL,
    .loss = BT_LOSS_MSE,
    .params = user_params,
    .states = user_states,
    .step = user_step,
};

static int init(const bt_host *host, bt_registrar *reg, char *err, size_t errlen)
{
    (void)err; (void)errlen;
    return host->register_cell(reg, &user_gated);
}

BT_PLUGIN("cli_user_cell", "0.3.1", init)
