/* optim_adam.c: Adam with decoupled weight decay (AdamW) as a plugin, with
 * PyTorch's torch.optim.AdamW update (amsgrad off) for each scalar at step t >= 1:
 *     p = p * (1 - lr * weight_decay)    (decoupled: the decay never enters m or v)
 *     m = beta1 * m + (1 - beta1) * g
 *     v = beta2 * v + (1 - beta2) * g^2
 *     p = p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 * With weight_decay 0 (the default) this is torch.optim.Adam exactly.
 * Options: lr (positional, default 1e-3), beta1 (0.9), beta2 (0.999), eps (1e-8),
 * weight_decay (0). State: two buffers, m and v. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "bptt_plugin.h"
#include "vector_clones.h" /* the step runs in AVX-512 or AVX2 where the CPU has it */

typedef struct adam_cfg {
    double lr, beta1, beta2, eps, weight_decay;
} adam_cfg;

static int adam_create(const bt_host *host, const char *options, void **cfg, char *err, size_t errlen)
{
    adam_cfg c = {1e-3, 0.9, 0.999, 1e-8, 0};
    bt_option opts[] = {
        {"lr", &c.lr, 0, 1e6, false, true, false, false},
        {"beta1", &c.beta1, 0, 1, false, false, false, false},
        {"beta2", &c.beta2, 0, 1, false, false, false, false},
        {"eps", &c.eps, 0, 1, false, false, false, false},
        {"weight_decay", &c.weight_decay, 0, 1e6, false, false, false, false},
    };
    if (host->parse_options(options, opts, 5, "optimizer adam", err, errlen) != BT_OK)
        return -1;
    /* A beta of 1 would divide by a zero bias correction. */
    if (c.beta1 >= 1 || c.beta2 >= 1) {
        snprintf(err, errlen, "optimizer adam: %s must be below 1", c.beta1 >= 1 ? "beta1" : "beta2");
        return -1;
    }
    if (c.lr * c.weight_decay > 1) {
        snprintf(err, errlen, "optimizer adam: lr * weight_decay = %g would flip the parameters' "
                 "sign each step (keep it at most 1)", c.lr * c.weight_decay);
        return -1;
    }
    adam_cfg *p = malloc(sizeof *p);
    if (!p) {
        snprintf(err, errlen, "optimizer adam: out of memory");
        return -1;
    }
    *p = c;
    *cfg = p;
    return 0;
}

static void adam_destroy(void *cfg) { free(cfg); }

BT_VECTOR_CLONES
static void adam_step(void *cfg, uint64_t step, bt_real *param, const bt_real *grad,
                      bt_real *const *state, size_t n)
{
    const adam_cfg *c = cfg;
    bt_real *m = state[0], *v = state[1]; /* [n] each */
    double t = (double)step;
    double bias1 = 1 - pow(c->beta1, t), bias2 = 1 - pow(c->beta2, t);
    double step_size = c->lr / bias1, bias2_sqrt = sqrt(bias2);
    double decay = 1 - c->lr * c->weight_decay;
    for (size_t i = 0; i < n; i++) {
        double g = (double)grad[i];
        m[i] = (bt_real)(c->beta1 * (double)m[i] + (1 - c->beta1) * g);
        v[i] = (bt_real)(c->beta2 * (double)v[i] + (1 - c->beta2) * g * g);
        double denom = sqrt((double)v[i]) / bias2_sqrt + c->eps;
        param[i] = (bt_real)((double)param[i] * decay - step_size * (double)m[i] / denom);
    }
}

static int adam_fmt(char *buf, size_t len, double v)
{
    int n = snprintf(buf, len, "%.15g", v);
    if (strtod(buf, NULL) != v)
        n = snprintf(buf, len, "%.17g", v);
    return n;
}

static const char *adam_describe(void *cfg, char *buf, size_t len)
{
    const adam_cfg *c = cfg;
    char lr[32], b1[32], b2[32], eps[32], wd[32];
    adam_fmt(lr, sizeof lr, c->lr);
    adam_fmt(b1, sizeof b1, c->beta1);
    adam_fmt(b2, sizeof b2, c->beta2);
    adam_fmt(eps, sizeof eps, c->eps);
    adam_fmt(wd, sizeof wd, c->weight_decay);
    snprintf(buf, len, "adam:lr=%s,beta1=%s,beta2=%s,eps=%s,weight_decay=%s", lr, b1, b2, eps, wd);
    return buf;
}

static const char doc[] =
    "Adam with decoupled weight decay, PyTorch's torch.optim.AdamW (amsgrad off);\n"
    "with weight_decay 0, torch.optim.Adam exactly. For each scalar at step\n"
    "t >= 1:\n"
    "  p = p * (1 - lr * weight_decay)   (decoupled: never enters m or v)\n"
    "  m = beta1 * m + (1 - beta1) * g\n"
    "  v = beta2 * v + (1 - beta2) * g^2\n"
    "  p = p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)\n"
    "Options: lr (positional, default 1e-3), beta1 (0.9), beta2 (0.999),\n"
    "eps (1e-8), weight_decay (0).\n"
    "State: two buffers per parameter, m and v.\n";

static const bt_optimizer_def adam_def = {
    .size = sizeof(bt_optimizer_def),
    .name = "adam",
    .summary = "Adam with decoupled weight decay (PyTorch's AdamW; Adam when weight_decay=0)",
    .n_state = 2,
    .create = adam_create,
    .destroy = adam_destroy,
    .step = adam_step,
    .describe = adam_describe,
    .doc = doc,
    .flags = BT_OPTIMIZER_ELEMENTWISE,
};

static int adam_init(const bt_host *host, bt_registrar *reg, char *err, size_t errlen)
{
    if (host->register_optimizer(reg, &adam_def) != BT_OK) {
        snprintf(err, errlen, "could not register optimizer adam");
        return -1;
    }
    return 0;
}

BT_PLUGIN("optim_adam", "1.0.0", adam_init)
