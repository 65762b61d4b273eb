/* policy_fixed.c: regular truncation, fixed:TAU. The edge into every step
 * t = TAU, 2 TAU, ... is cut (xi_t = 0) and the model updates at each cut. */
#include <stdio.h>
#include <stdlib.h>

#include "bptt_plugin.h"

typedef struct fixed { long tau; } fixed;

static int fixed_create(const bt_host *h, const char *options, void **state, char *err, size_t errlen)
{
    double tau = 0;
    bt_option opt = {.name = "tau", .value = &tau, .min = 1, .max = 1e9, .integer = true,
                     .positional = true, .required = true};
    if (h->parse_options(options, &opt, 1, "policy fixed", err, errlen) != BT_OK)
        return -1;
    fixed *p = (fixed *)calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "policy fixed: out of memory");
        return -1;
    }
    p->tau = (long)tau;
    *state = p;
    return 0;
}

static void fixed_destroy(void *s) { free(s); }
static void fixed_begin(void *s, uint64_t seed) { (void)s; (void)seed; }

static void fixed_decide(void *s, long t, bt_policy_decision *d)
{
    const fixed *f = s;
    d->xi = (t > 0 && t % f->tau == 0) ? 0 : 1;
    d->update = (t + 1) % f->tau == 0;
    d->reach = 0;
}

static int fixed_max_reach(void *s) { (void)s; return 0; }

static const char *fixed_describe(void *s, char *buf, size_t len)
{
    snprintf(buf, len, "fixed:%ld", ((const fixed *)s)->tau);
    return buf;
}

static const char doc[] =
    "Regular truncation, fixed:TAU. The edge into every step t = TAU, 2 TAU, ...\n"
    "is cut (xi_t = 0; 1 elsewhere), and the model updates after the last step\n"
    "of each stretch of TAU steps: a loss reaches back at most to the start of\n"
    "its stretch.\n"
    "Options: TAU (positional, required, an integer >= 1).\n"
    "Example: fixed:2 over T = 5 steps has xi = [1, 1, 0, 1, 0].\n";

static const bt_policy_def fixed_def = {
    .size = sizeof(bt_policy_def),
    .name = "fixed",
    .summary = "regular truncation: cut and update every TAU steps (fixed:TAU)",
    .create = fixed_create,
    .destroy = fixed_destroy,
    .begin = fixed_begin,
    .decide = fixed_decide,
    .max_reach = fixed_max_reach,
    .describe = fixed_describe,
    .doc = doc,
};

static int init(const bt_host *host, bt_registrar *reg, char *err, size_t errlen)
{
    (void)err; (void)errlen;
    return host->register_policy(reg, &fixed_def);
}

BT_PLUGIN("policy_fixed", "1.0.0", init)
