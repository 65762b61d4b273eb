/* try_plugin.c: loads one plugin file with the installed libbptt, lists what it
 * registered, and tries what it offers. An optimizer runs 200 steps on a small
 * quadratic and must lower the loss. A truncation policy (given as a spec, since
 * its options may be required) decides 100,000 steps of one long sequence: its
 * xi must be finite, its reach within max_reach (0 when max_reach is 0), the same seed
 * must replay the same decisions, and its describe() text must create the same
 * policy again; the steps between updates are summarised. Cells are checked
 * with `bptt gradcheck --plugin FILE.so --cell NAME`. Exit status 0: it works.
 * Usage: try_plugin FILE.so [optimizer-or-policy-spec]
 *   e.g. try_plugin ./signsgd.so signsgd:0.01    try_plugin ./geoseg.so geoseg:mean=6,min=2 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <registry.h>

/* 0.5 * ||w - target||^2 and its gradient, target[i] = sin(i). */
static double quadratic(bt_params *p)
{
    size_t n = bt_params_total(p);
    bt_real *w = bt_params_data(p), *g = bt_params_grad(p);
    double loss = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)w[i] - sin((double)i);
        g[i] = (bt_real)d;
        loss += 0.5 * d * d;
    }
    return loss;
}

static int try_optimizer(const bt_registry *r, const char *spec)
{
    char err[BT_ERRMSG_LEN];
    bt_params *p = bt_params_new();
    int shape[1] = {16};
    bt_params_add(p, "w", 1, shape);
    if (bt_params_finalize(p) != BT_OK) {
        fprintf(stderr, "try_plugin: out of memory\n");
        return 1;
    }
    bt_optimizer *o;
    if (bt_optimizer_new(r, spec, p, &o, err, sizeof err) != BT_OK) {
        fprintf(stderr, "try_plugin: %s\n", err);
        bt_params_free(p);
        return 1;
    }
    double first = quadratic(p), last = first;
    for (int t = 0; t < 200; t++) {
        bt_optimizer_step(o);
        last = quadratic(p);
    }
    char desc[256];
    printf("  %s: loss %.4g -> %.4g after 200 steps\n", bt_optimizer_describe(o, desc, sizeof desc),
           first, last);
    bt_optimizer_free(o);
    bt_params_free(p);
    if (!(last < first)) {
        fprintf(stderr, "try_plugin: %s did not reduce the loss\n", spec);
        return 1;
    }
    return 0;
}

/* A created policy and its describe() text. */
typedef struct made_policy {
    const bt_policy_def *def;
    void *state;
    char desc[256];
} made_policy;

static int make_policy(const bt_registry *r, const char *spec, made_policy *p)
{
    char name[BT_NAME_LEN + 1], err[BT_ERRMSG_LEN] = "";
    const char *opts;
    bt_split_spec(spec, name, sizeof name, &opts);
    p->def = bt_registry_policy(r, name);
    if (!p->def || p->def->create(bt_host_table(), opts, &p->state, err, sizeof err) != 0) {
        fprintf(stderr, "try_plugin: %s: %s\n", spec, p->def ? err : "no such policy");
        return 1;
    }
    p->def->describe(p->state, p->desc, sizeof p->desc);
    return 0;
}

#define POLICY_STEPS 100000L

/* One sequence of POLICY_STEPS decisions from seed: 1 on a broken contract.
 * Fills the update count, the steps between updates and a hash to compare replays. */
typedef struct policy_run {
    long updates, shortest, longest, cuts, cuts_off_update;
    uint64_t hash;
} policy_run;

static int run_policy(const made_policy *p, uint64_t seed, policy_run *out)
{
    memset(out, 0, sizeof *out);
    out->shortest = POLICY_STEPS;
    int max_reach = p->def->max_reach(p->state);
    p->def->begin(p->state, seed);
    long last = -1;
    bool updated = false;
    for (long t = 0; t < POLICY_STEPS; t++) {
        bt_policy_decision d = {1, false, 0};
        p->def->decide(p->state, t, &d);
        if (!isfinite(d.xi) || d.reach < 0 ||
            (max_reach > 0 && d.reach > max_reach) || (max_reach == 0 && d.reach != 0)) {
            fprintf(stderr, "try_plugin: %s at step %ld: xi %g, reach %d (max_reach %d): xi must be "
                    "finite, reach within 0..max_reach\n",
                    p->desc, t, d.xi, d.reach, max_reach);
            return 1;
        }
        if (d.xi == 0) {
            out->cuts++;
            out->cuts_off_update += !updated;
        }
        updated = d.update;
        uint64_t xi_bits;
        memcpy(&xi_bits, &d.xi, sizeof xi_bits);
        out->hash = (out->hash * 1000003u) ^ xi_bits ^ ((uint64_t)d.update << 1) ^
                    ((uint64_t)d.reach << 2);
        if (d.update) {
            long len = t - last;
            out->shortest = len < out->shortest ? len : out->shortest;
            out->longest = len > out->longest ? len : out->longest;
            out->updates++;
            last = t;
        }
    }
    return 0;
}

static int try_policy(const bt_registry *r, const char *spec)
{
    made_policy p, q;
    if (make_policy(r, spec, &p))
        return 1;
    int failed = make_policy(r, p.desc, &q);
    if (!failed && strcmp(p.desc, q.desc) != 0) {
        fprintf(stderr, "try_plugin: %s describes itself as '%s', which creates '%s'\n", spec,
                p.desc, q.desc);
        failed = 1;
    }
    if (!failed)
        q.def->destroy(q.state);
    policy_run a, b;
    failed = failed || run_policy(&p, 12345, &a) || run_policy(&p, 12345, &b);
    if (!failed && memcmp(&a, &b, sizeof a) != 0) {
        fprintf(stderr, "try_plugin: %s does not replay: the same seed gave other decisions\n", spec);
        failed = 1;
    }
    if (!failed) {
        printf("  %s: %ld steps, %ld updates; steps between updates: mean %.4f, shortest %ld, "
               "longest %ld; %ld cut edges (xi = 0), %ld not right after an update; replays\n",
               p.desc, POLICY_STEPS, a.updates, a.updates ? (double)POLICY_STEPS / a.updates : 0.0,
               a.shortest, a.longest, a.cuts, a.cuts_off_update);
    }
    p.def->destroy(p.state);
    return failed;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: try_plugin FILE.so [optimizer-or-policy-spec]\n");
        return 2;
    }
    char err[BT_ERRMSG_LEN];
    bt_registry *r = bt_registry_new();
    if (!r || bt_registry_load(r, argv[1], err, sizeof err) != BT_OK) {
        fprintf(stderr, "try_plugin: %s\n", r ? err : "out of memory");
        bt_registry_free(r);
        return 1;
    }
    int failed = 0;
    printf("bptt %s loaded %s:\n", bt_version(), argv[1]);
    for (int i = 0; i < bt_registry_count(r); i++) {
        const bt_registry_entry *e = bt_registry_at(r, i);
        printf("  %-9s %-12s plugin %s %s  %s\n", bt_plugin_kind_name(e->kind), e->name, e->plugin,
               e->plugin_version, e->summary);
    }
    if (argc == 3) {
        char name[BT_NAME_LEN + 1];
        const char *opts;
        bt_split_spec(argv[2], name, sizeof name, &opts);
        failed |= bt_registry_policy(r, name) ? try_policy(r, argv[2]) : try_optimizer(r, argv[2]);
    } else {
        for (int i = 0; i < bt_registry_count(r); i++) {
            const bt_registry_entry *e = bt_registry_at(r, i);
            if (e->kind == BT_KIND_OPTIMIZER)
                failed |= try_optimizer(r, e->name);
            else if (e->kind == BT_KIND_POLICY)
                printf("  policy %s: give a spec to try it (try_plugin %s %s:OPTIONS)\n", e->name,
                       argv[1], e->name);
            else if (e->kind == BT_KIND_ESTIMATOR)
                printf("  estimator %s: compare it with full BPTT: bptt grad --plugin %s "
                       "--estimator %s (docs/estimators.md)\n", e->name, argv[1], e->name);
            else
                printf("  cell %s: check it with bptt gradcheck --plugin %s --cell %s\n", e->name,
                       argv[1], e->name);
        }
    }
    bt_registry_free(r);
    return failed;
}
