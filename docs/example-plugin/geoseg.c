/* geoseg.c: a truncation policy plugin built outside the bptt tree, the policy
 * example of docs/writing-a-plugin.md. geoseg:mean=M[,min=N][,seed=S] cuts the
 * sequence into segments of random length and backpropagates within each:
 * a segment has N steps, then ends after each further step with probability
 * p = 1 / (M - N + 1), so its length is N + a geometric number of steps with
 * mean M. Like fixed:TAU the cut edges get xi = 0 (a biased gradient: lags
 * beyond a cut are lost), but the cuts move from minibatch to minibatch, so no
 * position of the text is always cut at the same place (the idea behind the
 * variable-length BPTT of Merity et al. 2017). mean = min is fixed:min.
 * Randomness comes from the policy's own bt_rng, seeded in begin() from the
 * seed the host draws for every minibatch, so runs replay.
 * Build: cc -shared -fPIC -fvisibility=hidden $(pkg-config --cflags bptt) geoseg.c -o geoseg.so */
#include <stdio.h>
#include <stdlib.h>

#include <bptt_plugin.h>

typedef struct geoseg {
    const bt_host *host; /* for the RNG functions in begin and decide */
    double mean, min;    /* options, as given */
    double seed;         /* user seed, mixed into the host's */
    bool seed_set;
    double p;            /* chance that a segment of at least min steps ends after a step */
    bt_rng rng;          /* this minibatch's draws */
    long len;            /* steps of the current segment so far */
    bool cut_next;       /* the last step ended a segment: cut the edge into the next */
} geoseg;

static int geoseg_create(const bt_host *host, const char *options, void **state, char *err,
                         size_t errlen)
{
    double mean = 0, min = 1, seed = 0;
    bt_option opts[] = {
        /* name, where, min, max, integer, positional, required, set */
        {"mean", &mean, 1, 1e9, false, true, true, false},
        {"min", &min, 1, 1e9, true, false, false, false},
        {"seed", &seed, 0, 9007199254740992.0, true, false, false, false},
    };
    if (host->parse_options(options, opts, 3, "policy geoseg", err, errlen) != BT_OK)
        return -1;
    if (mean < min) {
        snprintf(err, errlen, "policy geoseg: mean (%g) must be >= min (%g): every segment has "
                 "at least min steps", mean, min);
        return -1;
    }
    geoseg *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "policy geoseg: out of memory");
        return -1;
    }
    s->host = host;
    s->mean = mean;
    s->min = min;
    s->seed = seed;
    s->seed_set = opts[2].set;
    s->p = 1.0 / (mean - min + 1);
    *state = s;
    return 0;
}

static void geoseg_destroy(void *state) { free(state); }

/* Called before every minibatch (every sequence the unroller runs). The host's
 * seed differs between minibatches and replays with the run's --seed; a user
 * seed shifts every draw without losing that. */
static void geoseg_begin(void *state, uint64_t seed)
{
    geoseg *s = state;
    if (s->seed_set)
        seed ^= (uint64_t)s->seed * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL;
    s->host->rng_seed(&s->rng, seed);
    s->len = 0;
    s->cut_next = false;
}

/* Before step t: cut the edge into t when step t - 1 ended a segment; update
 * after t when t ends one. The edge into step 0 keeps xi = 1: it comes from the
 * minibatch's initial state, which the host has detached already. The host
 * closes the last segment at the end of the minibatch whatever we say. */
static void geoseg_decide(void *state, long t, bt_policy_decision *d)
{
    geoseg *s = state;
    d->xi = t > 0 && s->cut_next ? 0 : 1;
    s->len++;
    bool end = s->len >= (long)s->min && s->host->rng_uniform(&s->rng) < s->p;
    d->update = end;
    d->reach = 0; /* a window spans exactly the steps since the last update */
    s->cut_next = end;
    if (end)
        s->len = 0;
}

/* The longest reach decide() asks for: 0 means no more than the steps since
 * the last update (the host keeps no extra states for us). */
static int geoseg_max_reach(void *state)
{
    (void)state;
    return 0;
}

/* The canonical spec, for logs, figure labels and checkpoints: creating the
 * policy from it gives the same policy. */
static const char *geoseg_describe(void *state, char *buf, size_t len)
{
    const geoseg *s = state;
    if (s->seed_set)
        snprintf(buf, len, "geoseg:mean=%.15g,min=%.0f,seed=%.0f", s->mean, s->min, s->seed);
    else
        snprintf(buf, len, "geoseg:mean=%.15g,min=%.0f", s->mean, s->min);
    return buf;
}

static const bt_policy_def geoseg_def = {
    .size = sizeof(bt_policy_def),
    .name = "geoseg",
    .summary = "segments of geometric length, mean M, at least N steps (geoseg:mean=M,min=N)",
    .create = geoseg_create,
    .destroy = geoseg_destroy,
    .begin = geoseg_begin,
    .decide = geoseg_decide,
    .max_reach = geoseg_max_reach,
    .describe = geoseg_describe,
    .doc = "Segments of random length, geoseg:mean=M[,min=N][,seed=S]. A segment has\n"
           "N steps, then ends after each further step with probability\n"
           "p = 1/(M - N + 1): its length is N + a geometric count, mean M. The model\n"
           "updates at the end of each segment (and of the minibatch, which cuts the\n"
           "last segment short); the edge into the next segment is cut (xi = 0, 1\n"
           "elsewhere). Biased like fixed:TAU, but the cuts move between minibatches.\n"
           "mean = min is fixed:min.\n"
           "Options: M (mean, positional, required, >= N); N (min, an integer >= 1,\n"
           "default 1); seed=S (an integer mixed with the run's per-minibatch seed).\n",
};

static int geoseg_init(const bt_host *host, bt_registrar *reg, char *err, size_t errlen)
{
    if (host->register_policy(reg, &geoseg_def) != BT_OK) {
        snprintf(err, errlen, "could not register policy geoseg");
        return -1;
    }
    return 0;
}

BT_PLUGIN("geoseg", "0.1.0", geoseg_init)
