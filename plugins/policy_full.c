/* policy_full.c: full backpropagation through time: no cut inside a
 * sequence; one update at its end. */
#include <stdio.h>

#include "bptt_plugin.h"

static int full_create(const bt_host *h, const char *options, void **state, char *err, size_t errlen)
{
    *state = NULL;
    return h->parse_options(options, NULL, 0, "policy full", err, errlen) == BT_OK ? 0 : -1;
}

static void full_destroy(void *s) { (void)s; }
static void full_begin(void *s, uint64_t seed) { (void)s; (void)seed; }

static void full_decide(void *s, long t, bt_policy_decision *d)
{
    (void)s; (void)t;
    d->xi = 1;
    d->update = false; /* the unroller always updates at the end of a sequence */
    d->reach = 0;
}

static int full_max_reach(void *s) { (void)s; return 0; }

static const char *full_describe(void *s, char *buf, size_t len)
{
    (void)s;
    snprintf(buf, len, "full");
    return buf;
}

static const char doc[] =
    "Full backpropagation through time: xi_t = 1 on every recurrent edge, one\n"
    "update at the end of each sequence, whose gradient reaches back to its first\n"
    "step. No options.\n";

static const bt_policy_def full = {
    .size = sizeof(bt_policy_def),
    .name = "full",
    .summary = "full BPTT: no cut inside a sequence",
    .create = full_create,
    .destroy = full_destroy,
    .begin = full_begin,
    .decide = full_decide,
    .max_reach = full_max_reach,
    .describe = full_describe,
    .doc = doc,
};

static int init(const bt_host *host, bt_registrar *reg, char *err, size_t errlen)
{
    (void)err; (void)errlen;
    return host->register_policy(reg, &full);
}

BT_PLUGIN("policy_full", "1.0.0", init)
