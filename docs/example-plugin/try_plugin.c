/* try_plugin.c: loads one plugin file with the installed libbptt, lists what it
 * registered, and runs every optimizer it offers for 200 steps on a small
 * quadratic, failing if the loss does not fall. Exit status 0 means it works.
 * Usage: try_plugin FILE.so [optimizer-spec]    e.g. try_plugin ./signsgd.so signsgd:0.01 */
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

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: try_plugin FILE.so [optimizer-spec]\n");
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
        failed |= try_optimizer(r, argv[2]);
    } else {
        for (int i = 0; i < bt_registry_count(r); i++)
            if (bt_registry_at(r, i)->kind == BT_KIND_OPTIMIZER)
                failed |= try_optimizer(r, bt_registry_at(r, i)->name);
    }
    bt_registry_free(r);
    return failed;
}
