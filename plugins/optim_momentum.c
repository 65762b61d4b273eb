/* optim_momentum.c: SGD with heavy-ball or Nesterov momentum as a plugin, with
 * PyTorch's torch.optim.SGD update (dampening 0) for each scalar:
 *     g = grad + weight_decay * p
 *     b = mu * b + g                     (b starts at 0, so step 1 gives b = g as in PyTorch)
 *     g = nesterov ? g + mu * b : b
 *     p = p - lr * g
 * Options: lr (positional, default 1e-3), mu (default 0.9), nesterov (0 or 1),
 * weight_decay (default 0). State: one buffer, the momentum b. */
#include <stdio.h>
#include <stdlib.h>

#include "bptt_plugin.h"
#include "vector_clones.h" /* the step runs in AVX-512 or AVX2 where the CPU has it */

typedef struct momentum_cfg {
    double lr, mu, nesterov, weight_decay;
} momentum_cfg;

static int momentum_create(const bt_host *host, const char *options, void **cfg, char *err,
                           size_t errlen)
{
    momentum_cfg c = {1e-3, 0.9, 0, 0};
    bt_option opts[] = {
        {"lr", &c.lr, 0, 1e6, false, true, false, false},
        {"mu", &c.mu, 0, 1, false, false, false, false},
        {"nesterov", &c.nesterov, 0, 1, true, false, false, false},
        {"weight_decay", &c.weight_decay, 0, 1e6, false, false, false, false},
    };
    if (host->parse_options(options, opts, 4, "optimizer momentum", err, errlen) != BT_OK)
        return -1;
    if (c.nesterov != 0 && c.mu <= 0) {
        /* As in PyTorch: Nesterov momentum needs a momentum to look ahead with. */
        snprintf(err, errlen, "optimizer momentum: nesterov=1 needs mu > 0");
        return -1;
    }
    momentum_cfg *p = malloc(sizeof *p);
    if (!p) {
        snprintf(err, errlen, "optimizer momentum: out of memory");
        return -1;
    }
    *p = c;
    *cfg = p;
    return 0;
}

static void momentum_destroy(void *cfg) { free(cfg); }

BT_VECTOR_CLONES
static void momentum_step(void *cfg, uint64_t step, bt_real *param, const bt_real *grad,
                          bt_real *const *state, size_t n)
{
    (void)step;
    const momentum_cfg *c = cfg;
    bt_real *buf = state[0]; /* [n] */
    for (size_t i = 0; i < n; i++) {
        double g = (double)grad[i] + c->weight_decay * (double)param[i];
        double b = c->mu * (double)buf[i] + g;
        buf[i] = (bt_real)b;
        /* Use the stored b, so a run restored from its state buffer steps identically. */
        b = (double)buf[i];
        double d = c->nesterov != 0 ? g + c->mu * b : b;
        param[i] = (bt_real)((double)param[i] - c->lr * d);
    }
}

static int momentum_fmt(char *buf, size_t len, double v)
{
    int n = snprintf(buf, len, "%.15g", v);
    if (strtod(buf, NULL) != v)
        n = snprintf(buf, len, "%.17g", v);
    return n;
}

static const char *momentum_describe(void *cfg, char *buf, size_t len)
{
    const momentum_cfg *c = cfg;
    char lr[32], mu[32], wd[32];
    momentum_fmt(lr, sizeof lr, c->lr);
    momentum_fmt(mu, sizeof mu, c->mu);
    momentum_fmt(wd, sizeof wd, c->weight_decay);
    snprintf(buf, len, "momentum:lr=%s,mu=%s,nesterov=%d,weight_decay=%s", lr, mu,
             c->nesterov != 0, wd);
    return buf;
}

static const char doc[] =
    "SGD with heavy-ball or Nesterov momentum, PyTorch's torch.optim.SGD with\n"
    "dampening 0. For each scalar:\n"
    "  g = grad + weight_decay * p\n"
    "  b = mu * b + g                    (b starts at 0: step 1 gives b = g)\n"
    "  g = nesterov ? g + mu * b : b\n"
    "  p = p - lr * g\n"
    "Options: lr (positional, default 1e-3), mu (default 0.9), nesterov (0 or 1,\n"
    "default 0), weight_decay (default 0).\n"
    "State: one buffer per parameter, the momentum b.\n";

static const bt_optimizer_def momentum_def = {
    .size = sizeof(bt_optimizer_def),
    .name = "momentum",
    .summary = "SGD with heavy-ball or Nesterov momentum (PyTorch's SGD, dampening 0)",
    .n_state = 1,
    .create = momentum_create,
    .destroy = momentum_destroy,
    .step = momentum_step,
    .describe = momentum_describe,
    .doc = doc,
    .flags = BT_OPTIMIZER_ELEMENTWISE,
};

static int momentum_init(const bt_host *host, bt_registrar *reg, char *err, size_t errlen)
{
    if (host->register_optimizer(reg, &momentum_def) != BT_OK) {
        snprintf(err, errlen, "could not register optimizer momentum");
        return -1;
    }
    return 0;
}

BT_PLUGIN("optim_momentum", "1.0.0", momentum_init)
