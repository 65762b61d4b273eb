/* policy_random.c: randomized truncation (Tallec & Ollivier 2017),
 * random:PI[,seed=S]. Each recurrent edge gets xi_t = 0 with probability
 * 1 - PI, else 1/PI. Since E[xi_t] = 1 and the draws are independent, the
 * expected gradient equals the full-BPTT gradient: unbiased, while segments
 * (which end at the zeros, where the model updates) stay short on average.
 * The edge into the first step keeps xi = 1 (it leads to the initial state). */
#include <stdio.h>
#include <stdlib.h>

#include "bptt_plugin.h"

typedef struct randtrunc {
    const bt_host *host;
    double pi;
    double seed; /* user seed, mixed with the host's per-sequence seed */
    bool seed_set;
    bt_rng rng;
    double next; /* xi of the coming step, drawn one step ahead to know when to update */
} randtrunc;

static double draw(randtrunc *r)
{
    return r->host->rng_uniform(&r->rng) < r->pi ? 1.0 / r->pi : 0.0;
}

static int random_create(const bt_host *h, const char *options, void **state, char *err,
                         size_t errlen)
{
    randtrunc *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "policy random: out of memory");
        return -1;
    }
    bt_option opts[2] = {
        {.name = "pi", .value = &r->pi, .min = 1e-6, .max = 1, .positional = true, .required = true},
        {.name = "seed", .value = &r->seed, .min = 0, .max = 9007199254740992.0, .integer = true},
    };
    if (h->parse_options(options, opts, 2, "policy random", err, errlen) != BT_OK) {
        free(r);
        return -1;
    }
    r->seed_set = opts[1].set;
    r->host = h;
    *state = r;
    return 0;
}

static void random_destroy(void *s) { free(s); }

static void random_begin(void *s, uint64_t seed)
{
    randtrunc *r = s;
    uint64_t mixed = seed;
    if (r->seed_set)
        mixed ^= (uint64_t)r->seed * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL;
    r->host->rng_seed(&r->rng, mixed);
    r->next = draw(r); /* xi of step 1 */
}

static void random_decide(void *s, long t, bt_policy_decision *d)
{
    randtrunc *r = s;
    d->xi = 1;
    if (t > 0) {
        d->xi = r->next;
        r->next = draw(r);
    }
    d->update = r->next == 0; /* the next edge is cut: this segment is complete */
    d->reach = 0;
}

static int random_max_reach(void *s) { (void)s; return 0; }

static const char *random_describe(void *s, char *buf, size_t len)
{
    const randtrunc *r = s;
    if (r->seed_set)
        snprintf(buf, len, "random:%g,seed=%.0f", r->pi, r->seed);
    else
        snprintf(buf, len, "random:%g", r->pi);
    return buf;
}

static const char doc[] =
    "Randomized truncation (Tallec & Ollivier 2017), random:PI[,seed=S]. The\n"
    "edge into each step t >= 1 gets xi_t = 0 with probability 1 - PI, else\n"
    "1/PI; the edge into step 0 keeps 1. E[xi_t] = 1 and the draws are\n"
    "independent, so the expected gradient is the full-BPTT gradient (unbiased).\n"
    "The model updates before each cut and at the end of a sequence, so the\n"
    "stretches between updates stay short on average.\n"
    "Options: PI (positional, required, in (0, 1]); seed=S (optional, an integer\n"
    "mixed with the run's per-sequence seed, so runs replay).\n";

static const bt_policy_def random_def = {
    .size = sizeof(bt_policy_def),
    .name = "random",
    .summary = "randomized truncation: xi = 0 w.p. 1-PI else 1/PI, unbiased (random:PI[,seed=S])",
    .create = random_create,
    .destroy = random_destroy,
    .begin = random_begin,
    .decide = random_decide,
    .max_reach = random_max_reach,
    .describe = random_describe,
    .doc = doc,
};

static int init(const bt_host *host, bt_registrar *reg, char *err, size_t errlen)
{
    (void)err; (void)errlen;
    return host->register_policy(reg, &random_def);
}

BT_PLUGIN("policy_random", "1.0.0", init)
