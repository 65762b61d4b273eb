/* bad_cell.c: one source for cells that load cleanly and misbehave when used
 * (tests/test_plugins.c, tests/test_cli_plugins.sh). meson builds it once per
 * VARIANT_* define into its own .so; the cell is a tanh RNN on tokens named
 * CELL_NAME, and each variant breaks exactly one promise of bt_cell_def.
 *   h_t = tanh(E[x_t] + h_{t-1} U + b),  o_t = h_t C
 * Shapes: E [V,H], U [H,H], b [H], C [H,Q]; B rows. */
#include <stdio.h>
#include <string.h>

#include "bptt_plugin.h"

#ifndef CELL_NAME
#error "define CELL_NAME"
#endif

static void spec(bt_param_spec *s, const char *name, int rows, int cols, bool recurrent)
{
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->ndim = cols ? 2 : 1;
    s->shape[0] = rows;
    s->shape[1] = cols;
    s->init = BT_INIT_NORMAL;
    s->scale = 0.1;
    s->recurrent = recurrent;
}

static int bad_params(const bt_cell_dims *d, bt_param_spec *s, int max, char *err, size_t errlen)
{
    (void)err, (void)errlen;
    if (max < 4)
        return -1;
    spec(&s[0], "E", d->input, d->hidden, false);
    spec(&s[1], "U", d->hidden, d->hidden, true);
    spec(&s[2], "b", d->hidden, 0, false);
    spec(&s[3], "C", d->hidden, d->output, false);
#if defined(VARIANT_PARAM_NEGATIVE)
    s[3].shape[1] = -d->output; /* a sign slip in a shape */
#elif defined(VARIANT_PARAM_NDIM)
    s[2].ndim = 0;
#elif defined(VARIANT_PARAM_NAME_UNTERMINATED)
    memset(s[1].name, 'U', sizeof s[1].name); /* all 32 bytes, no NUL */
#elif defined(VARIANT_PARAM_HUGE)
    s[1].shape[0] = s[1].shape[1] = 1 << 20; /* 2^40 values: 4 TB in float */
#elif defined(VARIANT_PARAM_COUNT)
    return max + 1; /* more specs than the room it was given */
#elif defined(VARIANT_PARAM_ERROR_UNTERMINATED)
    memset(err, '!', errlen); /* fills the host's error buffer without a NUL */
    return -1;
#endif
    return 4;
}

static int bad_states(const bt_cell_dims *d, int *widths, int max)
{
    if (max < 1)
        return -1;
    widths[0] = d->hidden;
#if defined(VARIANT_STATE_HUGE)
    widths[0] = 1 << 30;
#elif defined(VARIANT_STATE_ZERO)
    widths[0] = 0;
#elif defined(VARIANT_STATE_COUNT)
    return max + 3;
#endif
    return 1;
}

static bt_tensor *bad_step(const bt_host *H, bt_graph *g, bt_tensor *const *p,
                           const bt_step_input *in, bt_tensor *const *state, bt_tensor **next)
{
    bt_tensor *h = H->tanh(g, H->add(g, H->add(g, H->embedding(g, p[0], in->ids, in->batch),
                                                H->matmul(g, state[0], p[1])), p[2]));
    bt_tensor *o = H->matmul(g, h, p[3]);
#if defined(VARIANT_STEP_NULL)
    (void)o;
    next[0] = h;
    return NULL; /* "failed", but told nobody why */
#elif defined(VARIANT_NEXT_UNSET)
    (void)next;
    return o;
#elif defined(VARIANT_NEXT_WIDE)
    /* Twice the declared width: the unroller used to copy it into a slot of
     * [B, H] values. */
    bt_tensor *parts[2] = {h, h};
    next[0] = H->concat(g, parts, 2);
    return o;
#elif defined(VARIANT_NEXT_IS_OUTPUT)
    next[0] = o; /* a common slip: the output [B,Q] handed back as the state */
    return o;
#elif defined(VARIANT_OUTPUT_WIDTH)
    (void)o;
    next[0] = h;
    return h; /* [B,H] where [B,Q] is due */
#else
    next[0] = h;
    return o;
#endif
}

static const bt_cell_def cell = {
    .size = sizeof(bt_cell_def),
    .name = CELL_NAME,
    .summary = "a tanh RNN that breaks one promise (test)",
    .input = BT_INPUT_TOKENS,
    .loss = BT_LOSS_XENT,
    .params = bad_params,
    .states = bad_states,
    .step = bad_step,
};

static int init(const bt_host *host, bt_registrar *reg, char *err, size_t errlen)
{
    (void)err, (void)errlen;
    return host->register_cell(reg, &cell);
}

BT_PLUGIN(CELL_NAME, "0.1", init)
