/* est_rtrl.c: real-time recurrent learning (Williams & Zipser 1989) as an
 * online gradient estimator, rtrl[,max_mb=MB]. With s_t the state after step
 * t and s_{-1} the initial state, it carries the influence matrix
 * M_t = ds_t/dtheta forward,
 *     M_t = (dF/ds) M_{t-1} + dF/dtheta,   M_{-1} = 0 (s_{-1} does not depend on theta),
 * and the loss's total derivative through it, d l_t/dtheta = (dl_t/ds_{t-1})
 * M_{t-1} + (direct), is exactly BPTT's: summed with the steps' weights it is
 * dL/dtheta. Each step is one recording and P forward sweeps (bt_jvp) of it:
 * sweep j seeds theta with e_j and the state with column j of M, and reads
 * column j of M_t off the next state's tangent and dl_t/dtheta_j off the
 * loss's. With dL/ds_{-1} asked for, M also carries ds_t/ds_{-1} (S more
 * columns, starting at the identity) and S more sweeps give it.
 * Memory: M, S x P values (+ S x S), refused above max_mb (default 1024).
 * Letters: S state numbers (sum over states of B x width), P parameters. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bptt_plugin.h"

typedef struct rtrl_cfg {
    double max_mb;
} rtrl_cfg;

static int rtrl_create(const bt_host *host, const char *options, void **cfg, char *err,
                       size_t errlen)
{
    rtrl_cfg c = {1024};
    bt_option opts[] = {
        {.name = "max_mb", .value = &c.max_mb, .min = 0, .max = 1e12},
    };
    if (host->parse_options(options, opts, 1, "estimator rtrl", err, errlen) != BT_OK)
        return -1;
    rtrl_cfg *p = malloc(sizeof *p); /* plugins allocate with the C heap */
    if (!p) {
        snprintf(err, errlen, "estimator rtrl: out of memory");
        return -1;
    }
    *p = c;
    *cfg = p;
    return 0;
}

static void rtrl_destroy(void *cfg) { free(cfg); }

/* Rows of M (stored transposed: row j is column j of M, S values, state after
 * state): P for theta, and S more for s_{-1} when asked. */
static size_t rtrl_rows(const bt_estimator_dims *d) { return d->P + (d->want_dstate0 ? d->S : 0); }

static int rtrl_buffers(void *cfg, const bt_estimator_dims *d, bt_estimator_buffer *out, int max,
                        char *err, size_t errlen)
{
    const rtrl_cfg *c = cfg;
    double rows = (double)rtrl_rows(d), mb = rows * (double)d->S * sizeof(bt_real) / 1048576.0;
    if (mb > c->max_mb) {
        snprintf(err, errlen, "estimator rtrl: the influence matrix ds/dtheta has S x P = %zu x "
                 "%zu values%s (%.1f MB), above max_mb=%g: raise the limit (rtrl,max_mb=%.0f), "
                 "use a smaller hidden size or batch, or use uoro (memory O(S + P))", d->S, d->P,
                 d->want_dstate0 ? " plus S x S for dL/dh0" : "", mb, c->max_mb, ceil(mb));
        return -1;
    }
    if (max < 1)
        return -1;
    snprintf(out[0].name, sizeof out[0].name, "M");
    out[0].count = (size_t)rows * d->S;
    return 1;
}

/* M_{-1}: zero for theta (s_{-1} is given), the identity for s_{-1} itself. */
static void rtrl_begin(void *cfg, const bt_estimator_ctx *c, uint64_t seed)
{
    (void)cfg;
    (void)seed; /* exact: it draws nothing */
    size_t S = c->dims.S, P = c->dims.P, rows = rtrl_rows(&c->dims);
    bt_real *M = c->buf[0];
    memset(M, 0, sizeof(bt_real) * rows * S);
    for (size_t i = 0; P + i < rows; i++)
        M[(P + i) * S + i] = 1;
}

/* Sweep j's tangents: theta_j's parameter tensor gets e (holding e_j at
 * theta's offsets), the others none (their sweeps skip what does not depend
 * on them); the states get row j of M. */
static void rtrl_seed(const bt_estimator_ctx *c, size_t j, bt_real *e, bt_real *row)
{
    size_t off = 0;
    for (int q = 0; q < c->n_params; q++) {
        size_t n = c->params[q]->size;
        c->params[q]->tangent = j >= off && j < off + n ? e + off : NULL;
        off += n;
    }
    for (int k = 0; k < c->dims.n_states; k++) {
        c->state[k]->tangent = row;
        row += c->state[k]->size;
    }
}

/* Row j of M_t from the next states' tangents (NULL: zero), through tmp: a
 * next state's tangent may alias a state's, which is row j itself. */
static void rtrl_store(const bt_estimator_ctx *c, bt_real *row, bt_real *tmp)
{
    bt_real *p = tmp;
    for (int k = 0; k < c->dims.n_states; k++) {
        const bt_tensor *nx = c->next[k];
        if (nx->tangent)
            memcpy(p, nx->tangent, sizeof(bt_real) * nx->size);
        else
            memset(p, 0, sizeof(bt_real) * nx->size);
        p += nx->size;
    }
    memcpy(row, tmp, sizeof(bt_real) * c->dims.S);
}

static int rtrl_step(void *cfg, const bt_estimator_ctx *c, char *err, size_t errlen)
{
    (void)cfg;
    const bt_host *H = c->host;
    size_t S = c->dims.S, P = c->dims.P, rows = rtrl_rows(&c->dims);
    bt_tensor *e = H->graph_tensor(c->g, 1, (int[]){P ? (int)P : 1}); /* zeros */
    bt_tensor *tmp = H->graph_tensor(c->g, 1, (int[]){S ? (int)S : 1});
    if (!e || !tmp) {
        snprintf(err, errlen, "out of memory for the sweeps' tangents");
        return -1;
    }
    bt_real *M = c->buf[0];
    for (size_t j = 0; j < rows; j++) {
        if (j < P)
            e->data[j] = 1;
        rtrl_seed(c, j, e->data, M + j * S);
        if (H->jvp(c->g) != BT_OK) {
            snprintf(err, errlen, "forward sweep %zu failed", j);
            return -1;
        }
        /* The loss's tangent is d l_t / d theta_j (or / d s_{-1,j}), total. */
        double dl = c->loss->tangent ? (double)c->loss->tangent[0] : 0;
        if (c->weight != 0 && j < P)
            c->grad[j] += (bt_real)(c->weight * dl);
        else if (c->weight != 0 && c->dstate0)
            c->dstate0[j - P] += (bt_real)(c->weight * dl);
        rtrl_store(c, M + j * S, tmp->data);
        if (j < P)
            e->data[j] = 0;
    }
    for (int k = 0; k < c->dims.n_states; k++)
        c->state[k]->tangent = NULL;
    return 0;
}

static const char *rtrl_describe(void *cfg, char *buf, size_t len)
{
    const rtrl_cfg *c = cfg;
    snprintf(buf, len, "rtrl,max_mb=%.17g", c->max_mb);
    return buf;
}

static const char doc[] =
    "Real-time recurrent learning (Williams & Zipser 1989): the exact gradient,\n"
    "computed forward in time. With the states s (S numbers: B x width, summed\n"
    "over the cell's states) and the parameters theta (P numbers), it carries\n"
    "the influence matrix M_t = ds_t/dtheta [S x P]:\n"
    "  M_t = (dF/ds) M_{t-1} + dF/dtheta,   M_{-1} = 0\n"
    "  dL/dtheta = sum_t w_t (dl_t/ds_{t-1} M_{t-1} + dl_t/dtheta direct)\n"
    "(w_t = 1/T: every step's loss weighs 1/T of the sequence). Per step: one\n"
    "recording of the step and P forward sweeps (bt_jvp) of it, sweep j seeded\n"
    "with e_j on theta and column j of M on the state. The sum equals full BPTT's\n"
    "gradient (to rounding). With dL/dh0 asked for (bptt grad), M also carries\n"
    "ds_t/dh0 [S x S], starting at the identity: S more sweeps.\n"
    "Cost per step: P (+ S) sweeps, each about one forward step: O(P x B H^2)\n"
    "for a tanh RNN (P ~ H^2): O(B H^4). Memory: M, S x P values (+ S x S).\n"
    "Options: max_mb (default 1024): the largest M allowed, in MB; a larger\n"
    "one is refused with the size it would need.\n"
    "State (saved by checkpoints): M. Draws nothing.\n";

static const bt_estimator_def rtrl_def = {
    .size = sizeof(bt_estimator_def),
    .name = "rtrl",
    .summary = "real-time recurrent learning: the exact gradient, forward in time (S x P memory)",
    .create = rtrl_create,
    .destroy = rtrl_destroy,
    .buffers = rtrl_buffers,
    .begin = rtrl_begin,
    .step = rtrl_step,
    .describe = rtrl_describe,
    .doc = doc,
    .flags = BT_ESTIMATOR_EXACT | BT_ESTIMATOR_DSTATE0,
};

static int rtrl_init(const bt_host *host, bt_registrar *reg, char *err, size_t errlen)
{
    if (host->register_estimator(reg, &rtrl_def) != BT_OK) {
        snprintf(err, errlen, "could not register estimator rtrl");
        return -1;
    }
    return 0;
}

BT_PLUGIN("est_rtrl", "1.0.0", rtrl_init)
