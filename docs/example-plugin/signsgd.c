/* signsgd.c: an optimizer plugin built outside the bptt tree, the example of
 * docs/writing-a-plugin.md. signSGD with momentum ("Signum", Bernstein et al. 2018):
 *     m = mu * m + (1 - mu) * g          (m starts at 0; mu = 0 is plain signSGD)
 *     p = p - lr * (sign(m) + weight_decay * p)
 * Options: lr (positional, default 1e-3), mu (default 0), weight_decay (default 0).
 * Build: cc -shared -fPIC -fvisibility=hidden $(pkg-config --cflags bptt) signsgd.c -o signsgd.so */
#include <stdio.h>
#include <stdlib.h>

#include <bptt_plugin.h>

typedef struct signsgd_cfg {
    double lr, mu, weight_decay;
} signsgd_cfg;

/* Parses "0.01,mu=0.9" with the host's parser, so errors read like bptt's own. */
static int signsgd_create(const bt_host *host, const char *options, void **cfg, char *err,
                          size_t errlen)
{
    signsgd_cfg c = {1e-3, 0, 0};
    bt_option opts[] = {
        /* name, where, min, max, integer, positional, required, set */
        {"lr", &c.lr, 0, 1e6, false, true, false, false},
        {"mu", &c.mu, 0, 1, false, false, false, false},
        {"weight_decay", &c.weight_decay, 0, 1e6, false, false, false, false},
    };
    if (host->parse_options(options, opts, 3, "optimizer signsgd", err, errlen) != BT_OK)
        return -1;
    signsgd_cfg *p = malloc(sizeof *p);
    if (!p) {
        snprintf(err, errlen, "optimizer signsgd: out of memory");
        return -1;
    }
    *p = c;
    *cfg = p;
    return 0;
}

static void signsgd_destroy(void *cfg) { free(cfg); }

/* state[0] is the momentum m: a host-owned buffer as long as the parameters, zeroed
 * at the start, saved in checkpoints. Keep all state there, never in cfg. */
static void signsgd_step(void *cfg, uint64_t step, bt_real *param, const bt_real *grad,
                         bt_real *const *state, size_t n)
{
    (void)step;
    const signsgd_cfg *c = cfg;
    bt_real *m = state[0];
    for (size_t i = 0; i < n; i++) {
        m[i] = (bt_real)(c->mu * (double)m[i] + (1 - c->mu) * (double)grad[i]);
        double s = (m[i] > 0) - (m[i] < 0);
        param[i] = (bt_real)((double)param[i] - c->lr * (s + c->weight_decay * (double)param[i]));
    }
}

static const char *signsgd_describe(void *cfg, char *buf, size_t len)
{
    const signsgd_cfg *c = cfg;
    /* What a log or checkpoint shows; %.17g would make it round-trip exactly. */
    snprintf(buf, len, "signsgd:lr=%g,mu=%g,weight_decay=%g", c->lr, c->mu, c->weight_decay);
    return buf;
}

static const bt_optimizer_def signsgd_def = {
    .size = sizeof(bt_optimizer_def),
    .name = "signsgd",
    .summary = "sign of the (momentum) gradient times lr; mu=0 is plain signSGD",
    .n_state = 1,
    .create = signsgd_create,
    .destroy = signsgd_destroy,
    .step = signsgd_step,
    .describe = signsgd_describe,
    .doc = "signSGD with momentum (Signum, Bernstein et al. 2018). For each scalar:\n"
           "  m = mu * m + (1 - mu) * g          (m starts at 0; mu = 0: plain signSGD)\n"
           "  p = p - lr * (sign(m) + weight_decay * p)\n"
           "Options: lr (positional, default 1e-3), mu (default 0), weight_decay (0).\n"
           "State: one buffer per parameter, m.\n",
    .flags = BT_OPTIMIZER_ELEMENTWISE, /* each scalar alone: --threads may split the step */
};

static int signsgd_init(const bt_host *host, bt_registrar *reg, char *err, size_t errlen)
{
    if (host->register_optimizer(reg, &signsgd_def) != BT_OK) {
        snprintf(err, errlen, "could not register optimizer signsgd");
        return -1;
    }
    return 0;
}

/* The one exported symbol: bt_plugin_entry, returning name, version and ABI. */
BT_PLUGIN("signsgd", "0.1.0", signsgd_init)
