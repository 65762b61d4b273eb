/* optim_sgd.c: plain stochastic gradient descent as a plugin, with PyTorch's
 * torch.optim.SGD update (momentum 0) for each scalar:
 *     g = grad + weight_decay * p        (L2 weight decay, coupled as in PyTorch)
 *     p = p - lr * g
 * Options: lr (positional, default 1e-3), weight_decay (default 0). No state. */
#include <stdio.h>
#include <stdlib.h>

#include "bptt_plugin.h"
#include "vector_clones.h" /* the step runs in AVX-512 or AVX2 where the CPU has it */

typedef struct sgd_cfg {
    double lr, weight_decay;
} sgd_cfg;

static int sgd_create(const bt_host *host, const char *options, void **cfg, char *err, size_t errlen)
{
    sgd_cfg c = {1e-3, 0};
    bt_option opts[] = {
        {"lr", &c.lr, 0, 1e6, false, true, false, false},
        {"weight_decay", &c.weight_decay, 0, 1e6, false, false, false, false},
    };
    if (host->parse_options(options, opts, 2, "optimizer sgd", err, errlen) != BT_OK)
        return -1;
    /* Plugins allocate with the C heap: they do not link libbptt. */
    sgd_cfg *p = malloc(sizeof *p);
    if (!p) {
        snprintf(err, errlen, "optimizer sgd: out of memory");
        return -1;
    }
    *p = c;
    *cfg = p;
    return 0;
}

static void sgd_destroy(void *cfg) { free(cfg); }

BT_VECTOR_CLONES
static void sgd_step(void *cfg, uint64_t step, bt_real *param, const bt_real *grad,
                     bt_real *const *state, size_t n)
{
    (void)step;
    (void)state;
    const sgd_cfg *c = cfg;
    for (size_t i = 0; i < n; i++) {
        double g = (double)grad[i] + c->weight_decay * (double)param[i];
        param[i] = (bt_real)((double)param[i] - c->lr * g);
    }
}

/* Shortest of %.15g / %.17g that reads back as the same double, so a
 * checkpoint's description restores the exact options. */
static int sgd_fmt(char *buf, size_t len, double v)
{
    int n = snprintf(buf, len, "%.15g", v);
    if (strtod(buf, NULL) != v)
        n = snprintf(buf, len, "%.17g", v);
    return n;
}

static const char *sgd_describe(void *cfg, char *buf, size_t len)
{
    const sgd_cfg *c = cfg;
    char lr[32], wd[32];
    sgd_fmt(lr, sizeof lr, c->lr);
    sgd_fmt(wd, sizeof wd, c->weight_decay);
    snprintf(buf, len, "sgd:lr=%s,weight_decay=%s", lr, wd);
    return buf;
}

static const char doc[] =
    "Plain stochastic gradient descent, PyTorch's torch.optim.SGD with momentum 0.\n"
    "For each scalar:\n"
    "  g = grad + weight_decay * p       (L2 weight decay, coupled)\n"
    "  p = p - lr * g\n"
    "Options: lr (positional, default 1e-3), weight_decay (default 0).\n"
    "State: none.\n";

static const bt_optimizer_def sgd_def = {
    .size = sizeof(bt_optimizer_def),
    .name = "sgd",
    .summary = "stochastic gradient descent: p -= lr * (g + weight_decay * p)",
    .n_state = 0,
    .create = sgd_create,
    .destroy = sgd_destroy,
    .step = sgd_step,
    .describe = sgd_describe,
    .doc = doc,
    .flags = BT_OPTIMIZER_ELEMENTWISE,
};

static int sgd_init(const bt_host *host, bt_registrar *reg, char *err, size_t errlen)
{
    if (host->register_optimizer(reg, &sgd_def) != BT_OK) {
        snprintf(err, errlen, "could not register optimizer sgd");
        return -1;
    }
    return 0;
}

BT_PLUGIN("optim_sgd", "1.0.0", sgd_init)
