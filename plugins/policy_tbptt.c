/* policy_tbptt.c: TBPTT(K1, K2) of Williams & Peng (1990), tbptt:K1,K2.
 * Every K1 steps, the losses of the last K1 steps are backpropagated through
 * the last K2 steps (K2 >= K1), so the loss at step t - j (0 <= j < K1)
 * reaches back K2 - j steps. K1 = K2 is fixed:K1; K2 > K1 gives overlapping
 * windows, which the unroller rebuilds from its ring of stored states. */
#include <stdio.h>
#include <stdlib.h>

#include "bptt_plugin.h"

typedef struct tbptt { long k1, k2; } tbptt;

static int tbptt_create(const bt_host *h, const char *options, void **state, char *err,
                        size_t errlen)
{
    double k1 = 0, k2 = 0;
    bt_option opts[2] = {
        {.name = "k1", .value = &k1, .min = 1, .max = 1e6, .integer = true, .positional = true, .required = true},
        {.name = "k2", .value = &k2, .min = 1, .max = 1e6, .integer = true, .positional = true, .required = true},
    };
    if (h->parse_options(options, opts, 2, "policy tbptt", err, errlen) != BT_OK)
        return -1;
    if (k2 < k1) {
        snprintf(err, errlen, "policy tbptt: K2 (%.0f) must be >= K1 (%.0f): every loss needs "
                 "at least its own K1 window", k2, k1);
        return -1;
    }
    tbptt *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "policy tbptt: out of memory");
        return -1;
    }
    p->k1 = (long)k1;
    p->k2 = (long)k2;
    *state = p;
    return 0;
}

static void tbptt_destroy(void *s) { free(s); }
static void tbptt_begin(void *s, uint64_t seed) { (void)s; (void)seed; }

static void tbptt_decide(void *s, long t, bt_policy_decision *d)
{
    const tbptt *p = s;
    /* Windows overlap, so no single edge is cut for good: xi stays 1 and the
     * cut is where each window starts (reach). */
    d->xi = 1;
    d->update = (t + 1) % p->k1 == 0;
    d->reach = (int)p->k2;
}

static int tbptt_max_reach(void *s) { return (int)((const tbptt *)s)->k2; }

static const char *tbptt_describe(void *s, char *buf, size_t len)
{
    const tbptt *p = s;
    snprintf(buf, len, "tbptt:%ld,%ld", p->k1, p->k2);
    return buf;
}

static const char doc[] =
    "TBPTT(K1, K2) of Williams & Peng (1990), tbptt:K1,K2. Every K1 steps (and\n"
    "at the end of a sequence) the losses of the steps since the last update are\n"
    "backpropagated through the last K2 steps, from the stored state at the\n"
    "window's start (a detached leaf). The loss at step t - j (0 <= j < K1)\n"
    "reaches back K2 - j steps. K1 = K2 is fixed:K1; K2 > K1 gives overlapping\n"
    "windows. xi stays 1: no single edge is cut for good.\n"
    "Options: K1 and K2 (positional, required, integers with 1 <= K1 <= K2).\n";

static const bt_policy_def tbptt_def = {
    .size = sizeof(bt_policy_def),
    .name = "tbptt",
    .summary = "TBPTT(K1,K2): every K1 steps, backprop the last K1 losses through K2 steps",
    .create = tbptt_create,
    .destroy = tbptt_destroy,
    .begin = tbptt_begin,
    .decide = tbptt_decide,
    .max_reach = tbptt_max_reach,
    .describe = tbptt_describe,
    .doc = doc,
};

static int init(const bt_host *host, bt_registrar *reg, char *err, size_t errlen)
{
    (void)err; (void)errlen;
    return host->register_policy(reg, &tbptt_def);
}

BT_PLUGIN("policy_tbptt", "1.0.0", init)
