/* est_uoro.c: Unbiased Online Recurrent Optimization (Tallec & Ollivier, ICLR
 * 2018) as an online gradient estimator, uoro[,seed=S][,eps=E]. It keeps a
 * rank-one stand-in for RTRL's influence matrix, M_t ~ s~_t theta~_t^T
 * (s~ [S], theta~ [P]), unbiased: E[s~_t theta~_t^T] = M_t. Per step t:
 *   estimate   g_t = (dl_t/ds_{t-1} . s~_{t-1}) theta~_{t-1} + dl_t/dtheta (direct)
 *   forward    s' = (dF/ds) s~_{t-1}                       (one bt_jvp sweep)
 *   backward   d = nu^T dF/dtheta, nu random signs [S]      (one reverse sweep per state)
 *   rho0 = sqrt(|theta~| / (|s'| + eps)) + eps,  rho1 = sqrt(|d| / (|nu| + eps)) + eps
 *   s~_t = rho0 s' + rho1 nu,   theta~_t = theta~_{t-1} / rho0 + d / rho1
 * E[nu nu^T] = I and E[nu] = 0 make the update unbiased whatever rho0, rho1
 * are (rho1 depends on nu only through |nu^T dF/dtheta|, which a sign flip of
 * nu leaves alone); these two minimise the variance the step adds.
 * Memory O(S + P); time about four forward steps.
 * Letters: S state numbers (sum over states of B x width), P parameters. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bptt_plugin.h"

typedef struct uoro_cfg {
    double seed, eps;
    double rho; /* 1: the paper's variance-minimising rho0, rho1; 0: both 1 (for comparison) */
    bool seed_set;
} uoro_cfg;

static int uoro_create(const bt_host *host, const char *options, void **cfg, char *err,
                       size_t errlen)
{
    uoro_cfg c = {0, 1e-7, 1, false};
    bt_option opts[] = {
        {.name = "seed", .value = &c.seed, .min = 0, .max = 9007199254740992.0, .integer = true},
        {.name = "eps", .value = &c.eps, .min = 0, .max = 1},
        {.name = "rho", .value = &c.rho, .min = 0, .max = 1, .integer = true},
    };
    if (host->parse_options(options, opts, 3, "estimator uoro", err, errlen) != BT_OK)
        return -1;
    c.seed_set = opts[0].set;
    uoro_cfg *p = malloc(sizeof *p); /* plugins allocate with the C heap */
    if (!p) {
        snprintf(err, errlen, "estimator uoro: out of memory");
        return -1;
    }
    *p = c;
    *cfg = p;
    return 0;
}

static void uoro_destroy(void *cfg) { free(cfg); }

static int uoro_buffers(void *cfg, const bt_estimator_dims *d, bt_estimator_buffer *out, int max,
                        char *err, size_t errlen)
{
    (void)cfg;
    if (max < 2) {
        snprintf(err, errlen, "estimator uoro: needs 2 state buffers");
        return -1;
    }
    snprintf(out[0].name, sizeof out[0].name, "s_tilde");
    out[0].count = d->S;
    snprintf(out[1].name, sizeof out[1].name, "theta_tilde");
    out[1].count = d->P;
    return 2;
}

/* s~ = 0, theta~ = 0: the initial state does not depend on theta. The signs' stream is the
 * host's seed, mixed with the option's when given (as policy random does). */
static void uoro_begin(void *cfg, const bt_estimator_ctx *c, uint64_t seed)
{
    const uoro_cfg *u = cfg;
    memset(c->buf[0], 0, sizeof(bt_real) * c->dims.S);
    memset(c->buf[1], 0, sizeof(bt_real) * c->dims.P);
    uint64_t mixed = seed;
    if (u->seed_set)
        mixed ^= (uint64_t)u->seed * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL;
    c->host->rng_seed(c->rng, mixed);
}

static double norm2(const bt_real *v, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)v[i] * (double)v[i];
    return sqrt(s);
}

/* The parameters' gradients, flat [P] (tensor q at the sum of the earlier
 * sizes), into out; then zeroed for the next reverse sweep. */
static void take_param_grads(const bt_estimator_ctx *c, bt_real *out)
{
    for (int q = 0; q < c->n_params; q++) {
        bt_tensor *p = c->params[q];
        if (p->grad) {
            memcpy(out, p->grad, sizeof(bt_real) * p->size);
            memset(p->grad, 0, sizeof(bt_real) * p->size);
        } else
            memset(out, 0, sizeof(bt_real) * p->size);
        out += p->size;
    }
}

/* g_t = (dl_t/ds_{t-1} . s~) theta~ + dl_t/dtheta, weighted, into c->grad
 * (one reverse sweep from the loss; d [P] is scratch). */
static int uoro_estimate(const bt_estimator_ctx *c, bt_real *d, char *err, size_t errlen)
{
    const bt_host *H = c->host;
    const bt_real *st = c->buf[0], *th = c->buf[1];
    if (c->weight == 0 || !c->loss->requires_grad)
        return 0;
    bt_real one = 1;
    if (H->backward_from(c->g, c->loss, &one) != BT_OK) {
        snprintf(err, errlen, "the reverse sweep from the loss failed");
        return -1;
    }
    double dot = 0; /* dl_t/ds_{t-1} . s~_{t-1} */
    for (int k = 0; k < c->dims.n_states; k++) {
        const bt_tensor *s = c->state[k];
        for (size_t i = 0; s->grad && i < s->size; i++)
            dot += (double)s->grad[i] * (double)st[i];
        st += s->size;
    }
    take_param_grads(c, d);
    for (size_t j = 0; j < c->dims.P; j++)
        c->grad[j] += (bt_real)(c->weight * ((double)d[j] + dot * (double)th[j]));
    return 0;
}

/* nu: S independent random signs, 64 from each draw. */
static void draw_signs(const bt_estimator_ctx *c, bt_real *nu)
{
    uint64_t bits = 0;
    for (size_t i = 0; i < c->dims.S; i++) {
        if (i % 64 == 0)
            bits = c->host->rng_next(c->rng);
        nu[i] = (bits >> (i % 64)) & 1 ? 1 : -1;
    }
}

/* s' = (dF/ds) s~ into js: one forward sweep, the states seeded with s~. */
static int forward_sweep(const bt_estimator_ctx *c, bt_real *js, char *err, size_t errlen)
{
    bt_real *st = c->buf[0];
    for (int q = 0; q < c->n_params; q++)
        c->params[q]->tangent = NULL;
    for (int k = 0; k < c->dims.n_states; k++) {
        c->state[k]->tangent = st;
        st += c->state[k]->size;
    }
    if (c->host->jvp(c->g) != BT_OK) {
        snprintf(err, errlen, "the forward sweep failed");
        return -1;
    }
    for (int k = 0; k < c->dims.n_states; k++) {
        const bt_tensor *nx = c->next[k];
        if (nx->tangent)
            memcpy(js, nx->tangent, sizeof(bt_real) * nx->size);
        else
            memset(js, 0, sizeof(bt_real) * nx->size);
        js += nx->size;
        c->state[k]->tangent = NULL;
    }
    return 0;
}

/* d = nu^T dF/dtheta: a reverse sweep from each next state seeded with its
 * part of nu (the parameters' gradients add up over the sweeps). */
static int reverse_sweeps(const bt_estimator_ctx *c, const bt_real *nu, bt_real *d, char *err,
                          size_t errlen)
{
    for (int k = 0; k < c->dims.n_states; k++) {
        bt_tensor *nx = c->next[k];
        if (nx->requires_grad && c->host->backward_from(c->g, nx, nu) != BT_OK) {
            snprintf(err, errlen, "the reverse sweep from state %d failed", k);
            return -1;
        }
        nu += nx->size;
    }
    take_param_grads(c, d);
    return 0;
}

static int uoro_step(void *cfg, const bt_estimator_ctx *c, char *err, size_t errlen)
{
    const uoro_cfg *u = cfg;
    const bt_host *H = c->host;
    size_t S = c->dims.S, P = c->dims.P;
    bt_tensor *scratch = H->graph_tensor(c->g, 1, (int[]){(int)(2 * S + P + 1)});
    if (!scratch) {
        snprintf(err, errlen, "out of memory for the step's scratch");
        return -1;
    }
    bt_real *js = scratch->data, *nu = js + S, *d = nu + S;
    if (uoro_estimate(c, d, err, errlen) || forward_sweep(c, js, err, errlen))
        return -1;
    draw_signs(c, nu);
    if (reverse_sweeps(c, nu, d, err, errlen))
        return -1;
    bt_real *st = c->buf[0], *th = c->buf[1];
    double rho0 = 1, rho1 = 1;
    if (u->rho != 0) {
        rho0 = sqrt(norm2(th, P) / (norm2(js, S) + u->eps)) + u->eps;
        rho1 = sqrt(norm2(d, P) / (norm2(nu, S) + u->eps)) + u->eps;
    }
    for (size_t i = 0; i < S; i++)
        st[i] = (bt_real)(rho0 * (double)js[i] + rho1 * (double)nu[i]);
    for (size_t j = 0; j < P; j++)
        th[j] = (bt_real)((double)th[j] / rho0 + (double)d[j] / rho1);
    return 0;
}

/* Shortest of %.15g / %.17g that reads back as the same double, so a
 * checkpoint's description restores the exact options. */
static void uoro_fmt(char *buf, size_t len, double v)
{
    snprintf(buf, len, "%.15g", v);
    if (strtod(buf, NULL) != v)
        snprintf(buf, len, "%.17g", v);
}

static const char *uoro_describe(void *cfg, char *buf, size_t len)
{
    const uoro_cfg *u = cfg;
    char seed[48] = "", eps[32];
    if (u->seed_set)
        snprintf(seed, sizeof seed, ",seed=%.0f", u->seed);
    uoro_fmt(eps, sizeof eps, u->eps);
    snprintf(buf, len, "uoro%s,eps=%s%s", seed, eps, u->rho != 0 ? "" : ",rho=0");
    return buf;
}

static const char doc[] =
    "Unbiased Online Recurrent Optimization (Tallec & Ollivier, ICLR 2018): an\n"
    "unbiased rank-one estimate of RTRL's influence matrix ds_t/dtheta ~ s~ theta~^T,\n"
    "carried forward with a vector s~ [S] and a vector theta~ [P]. Per step t:\n"
    "  g_t    = (dl_t/ds_{t-1} . s~) theta~ + dl_t/dtheta (direct, this step)\n"
    "  s'     = (dF/ds) s~                 one forward sweep (bt_jvp)\n"
    "  d      = nu^T dF/dtheta             nu: S random signs; one reverse sweep\n"
    "  rho0   = sqrt(|theta~| / (|s'| + eps)) + eps\n"
    "  rho1   = sqrt(|d| / (|nu| + eps)) + eps\n"
    "  s~     = rho0 s' + rho1 nu,   theta~ = theta~ / rho0 + d / rho1\n"
    "The sum of w_t g_t (w_t = 1/T) is an unbiased estimate of full BPTT's\n"
    "gradient: E[nu] = 0 and E[nu nu^T] = I; rho0 and rho1 minimise the variance\n"
    "each step adds. Cost per step: one recording, one forward and two reverse\n"
    "sweeps (one more per extra state: lstm), about four forward steps; memory\n"
    "O(S + P). No dL/dh0 (an estimate of it would add variance to theta's).\n"
    "Options: seed (mixed with the run's seed; default: the run's), eps\n"
    "(default 1e-7), rho (1, the default: rho0 and rho1 as above; 0: both 1, the\n"
    "plain rank-one update, still unbiased but noisier, for comparison).\n"
    "State (saved by checkpoints): s_tilde [S], theta_tilde [P], the RNG.\n";

static const bt_estimator_def uoro_def = {
    .size = sizeof(bt_estimator_def),
    .name = "uoro",
    .summary = "unbiased online recurrent optimization: a rank-one unbiased estimate (S + P memory)",
    .create = uoro_create,
    .destroy = uoro_destroy,
    .buffers = uoro_buffers,
    .begin = uoro_begin,
    .step = uoro_step,
    .describe = uoro_describe,
    .doc = doc,
    .flags = 0,
};

static int uoro_init(const bt_host *host, bt_registrar *reg, char *err, size_t errlen)
{
    if (host->register_estimator(reg, &uoro_def) != BT_OK) {
        snprintf(err, errlen, "could not register estimator uoro");
        return -1;
    }
    return 0;
}

BT_PLUGIN("est_uoro", "1.0.0", uoro_init)
