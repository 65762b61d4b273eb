/* mpi_fault_plugin.c: plugins that fail on one process only, for the MPI
 * test (tests/test_mpi.sh): a job must end with one message and one exit
 * status whichever process fails.
 *   fault_nan  a char RNN whose output is NaN for rows reading the last token
 *              of the vocabulary (the rarest character): a non-finite loss in
 *              the rows of the process that holds them;
 *   fault_fail the same RNN failing with a cell error on those rows;
 *   fault_kill the same RNN whose process is killed (SIGKILL, as by the
 *              kernel's out-of-memory killer) on those rows: a process that
 *              dies without a word, which mpirun must turn into the job's end;
 *   fault_skew SGD whose learning rate is 1e-6 larger on every process but
 *              the first (a plugin that computes differently on one host):
 *              the parameters drift apart, which the per-epoch check stops.
 * Shapes: W_xh [V,H], W_hh [H,H], b_h [H], W_hq [H,V]. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bptt_plugin.h"

static void param(bt_param_spec *s, const char *name, int rows, int cols, bool recurrent)
{
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->ndim = cols ? 2 : 1;
    s->shape[0] = rows;
    s->shape[1] = cols;
    s->init = cols ? BT_INIT_NORMAL : BT_INIT_ZERO;
    s->scale = 0.1;
    s->recurrent = recurrent;
}

static int fault_params(const bt_cell_dims *d, bt_param_spec *s, int max, char *err, size_t errlen)
{
    (void)err, (void)errlen;
    if (max < 4)
        return -1;
    param(&s[0], "W_xh", d->input, d->hidden, false);
    param(&s[1], "W_hh", d->hidden, d->hidden, true);
    param(&s[2], "b_h", d->hidden, 0, false);
    param(&s[3], "W_hq", d->hidden, d->output, false);
    return 4;
}

static int fault_states(const bt_cell_dims *d, int *widths, int max)
{
    if (max < 1)
        return -1;
    widths[0] = d->hidden;
    return 1;
}

/* The RNN's output [B,V], and the first row reading the last token (or -1). */
static bt_tensor *rnn_out(const bt_host *H, bt_graph *g, bt_tensor *const *p,
                          const bt_step_input *in, bt_tensor *const *state, bt_tensor **next,
                          int *row)
{
    int last = p[0]->shape[0] - 1;
    *row = -1;
    for (int b = 0; in->ids && b < in->batch && *row < 0; b++)
        if (in->ids[b] == last)
            *row = b;
    next[0] = H->rnn_tanh_step(g, p[0], in->ids, in->x, state[0], p[1], p[2]); /* [B,H] */
    return H->matmul(g, next[0], p[3]);                                       /* [B,V] */
}

static bt_tensor *nan_step(const bt_host *H, bt_graph *g, bt_tensor *const *p,
                           const bt_step_input *in, bt_tensor *const *state, bt_tensor **next)
{
    int row;
    bt_tensor *o = rnn_out(H, g, p, in, state, next, &row);
    if (!o || row < 0)
        return o;
    int V = o->shape[1];
    bt_tensor *mask = H->graph_tensor(g, 2, (int[]){in->batch, V});
    if (!mask)
        return NULL;
    for (int b = 0; b < in->batch; b++)
        for (int v = 0; v < V; v++)
            mask->data[(size_t)b * V + v] = in->ids[b] == p[0]->shape[0] - 1 ? (bt_real)NAN : 1;
    return H->mul(g, o, mask);
}

static bt_tensor *fail_step(const bt_host *H, bt_graph *g, bt_tensor *const *p,
                            const bt_step_input *in, bt_tensor *const *state, bt_tensor **next)
{
    int row;
    bt_tensor *o = rnn_out(H, g, p, in, state, next, &row);
    if (o && row >= 0) {
        H->graph_fail(g, BT_ERR_ARG, "fault_fail: row %d reads token %d, which this cell "
                      "refuses", row, in->ids[row]);
        return NULL;
    }
    return o;
}

static bt_tensor *kill_step(const bt_host *H, bt_graph *g, bt_tensor *const *p,
                            const bt_step_input *in, bt_tensor *const *state, bt_tensor **next)
{
    int row;
    bt_tensor *o = rnn_out(H, g, p, in, state, next, &row);
    if (o && row >= 0)
        raise(SIGKILL);
    return o;
}

static const bt_cell_def fault_nan = {
    .size = sizeof(bt_cell_def), .name = "fault_nan",
    .summary = "test: NaN output on rows reading the last token",
    .input = BT_INPUT_TOKENS, .loss = BT_LOSS_XENT,
    .params = fault_params, .states = fault_states, .step = nan_step,
};

static const bt_cell_def fault_fail = {
    .size = sizeof(bt_cell_def), .name = "fault_fail",
    .summary = "test: a cell error on rows reading the last token",
    .input = BT_INPUT_TOKENS, .loss = BT_LOSS_XENT,
    .params = fault_params, .states = fault_states, .step = fail_step,
};

static const bt_cell_def fault_kill = {
    .size = sizeof(bt_cell_def), .name = "fault_kill",
    .summary = "test: the process is killed on rows reading the last token",
    .input = BT_INPUT_TOKENS, .loss = BT_LOSS_XENT,
    .params = fault_params, .states = fault_states, .step = kill_step,
};

static int skew_create(const bt_host *host, const char *options, void **cfg, char *err,
                       size_t errlen)
{
    (void)host, (void)options, (void)err, (void)errlen;
    double *lr = malloc(sizeof *lr);
    if (!lr)
        return -1;
    const char *rank = getenv("OMPI_COMM_WORLD_RANK");
    *lr = 0.1 * (rank && atoi(rank) > 0 ? 1 + 1e-6 : 1);
    *cfg = lr;
    return 0;
}

static void skew_step(void *cfg, uint64_t step, bt_real *param, const bt_real *grad,
                      bt_real *const *state, size_t n)
{
    (void)step, (void)state;
    double lr = *(const double *)cfg;
    for (size_t i = 0; i < n; i++)
        param[i] = (bt_real)((double)param[i] - lr * (double)grad[i]);
}

static const char *skew_describe(void *cfg, char *buf, size_t len)
{
    (void)cfg;
    snprintf(buf, len, "fault_skew");
    return buf;
}

static const bt_optimizer_def fault_skew = {
    .size = sizeof(bt_optimizer_def), .name = "fault_skew",
    .summary = "test: SGD lr 0.1, 1e-6 larger on processes other than the first",
    .create = skew_create, .destroy = free, .step = skew_step, .describe = skew_describe,
};

static int init(const bt_host *host, bt_registrar *reg, char *err, size_t errlen)
{
    (void)err, (void)errlen;
    if (host->register_cell(reg, &fault_nan) != BT_OK || host->register_cell(reg, &fault_fail) != BT_OK ||
        host->register_cell(reg, &fault_kill) != BT_OK)
        return -1;
    return host->register_optimizer(reg, &fault_skew);
}

BT_PLUGIN("mpi_fault_plugin", "1.0.0", init)
