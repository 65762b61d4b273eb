/* compare.c: one run per truncation policy (or online estimator) over the
 * same model and data, the figures of each, and a policy's cuts replayed
 * outside any graph. */
#include <stdio.h>
#include <string.h>

#include "compare.h"

void bt_lm_summarize(const bt_lm *lm, bt_lm_summary *s)
{
    const bt_lm_epoch *h;
    int n = bt_lm_history(lm, &h);
    double tok = 0, secs = 0, gsum = 0;
    long upd = 0;
    memset(s, 0, sizeof *s);
    s->epochs = n;
    for (int i = 0; i < n; i++) {
        if (h[i].tokens_per_s > 0)
            tok += h[i].tokens_per_s * h[i].seconds, secs += h[i].seconds;
        gsum += h[i].grad_norm_mean * (h[i].updates - h[i].skipped);
        upd += h[i].updates - h[i].skipped;
        s->skipped += h[i].skipped;
        if (h[i].grad_norm_max > s->grad_norm_max)
            s->grad_norm_max = h[i].grad_norm_max;
    }
    s->tokens_per_s = secs > 0 ? tok / secs : 0;
    s->grad_norm_mean = upd ? gsum / (double)upd : 0;
    s->memory = bt_lm_memory(lm);
}

void bt_compare_free(bt_compare_run *runs, int n)
{
    for (int k = 0; runs && k < n; k++) {
        bt_lm_free(runs[k].lm);
        bt_source_free(&runs[k].src);
    }
    bt_free(runs);
}

bool bt_compare_is_estimator(const bt_registry *reg, const char *spec)
{
    size_t n = strcspn(spec, ",:"); /* an estimator's options may follow ',' or ':' */
    char name[BT_NAME_LEN + 1];
    if (n == 0 || n > BT_NAME_LEN)
        return false;
    memcpy(name, spec, n);
    name[n] = '\0';
    return bt_registry_estimator(reg, name) != NULL;
}

bt_status bt_compare_new(const bt_registry *reg, bt_lm_config *cfg, const char (*specs)[256],
                         int n, bt_compare_source_fn make_source, void *ctx,
                         bt_compare_run **out, char *err, size_t errlen)
{
    *out = NULL;
    bt_compare_run *runs = bt_calloc(n > 0 ? (size_t)n : 1, sizeof *runs);
    if (!runs)
        return bt_error(err, errlen, BT_ERR_NOMEM, "out of memory for %d runs", n);
    bt_status st = BT_OK;
    for (int k = 0; k < n && st == BT_OK; k++) {
        bt_compare_run *r = &runs[k];
        bt_lm_config c = *cfg;
        snprintf(r->spec, sizeof r->spec, "%s", specs[k]);
        bool online = bt_compare_is_estimator(reg, specs[k]); /* else a truncation policy */
        c.estimator = online ? specs[k] : "";
        c.truncation = online ? "full" : specs[k];
        if ((st = make_source(ctx, &c, &r->src, err, errlen)) != BT_OK)
            break;
        cfg->steps = c.steps; /* a task's length */
        if ((st = bt_lm_new(reg, &c, &r->src, &r->lm, err, errlen)) == BT_OK)
            bt_lm_policy_describe(r->lm, r->desc, sizeof r->desc);
    }
    if (st != BT_OK) {
        bt_compare_free(runs, n);
        return st;
    }
    *out = runs;
    return BT_OK;
}

bt_status bt_compare_train(bt_compare_run *r, int epochs, const bt_lm_hooks *hooks, char *err,
                           size_t errlen)
{
    bt_status st = bt_lm_train(r->lm, epochs, hooks, r->why, sizeof r->why);
    if (st == BT_ERR_NUMERIC)
        r->diverged = true;
    else if (st != BT_OK)
        return bt_error(err, errlen, st, "%s", r->why);
    bt_lm_summarize(r->lm, &r->summary);
    return BT_OK;
}

bt_status bt_policy_cuts(const bt_registry *r, const char *spec, int T, uint64_t seed, int *cut,
                         int n, char *err, size_t errlen)
{
    char name[BT_NAME_LEN + 1], why[256] = "";
    const char *opts;
    bt_split_spec(spec, name, sizeof name, &opts);
    const bt_policy_def *def = bt_registry_policy(r, name);
    void *st = NULL;
    if (!def)
        return bt_error(err, errlen, BT_ERR_NOT_FOUND, "unknown truncation policy '%.*s'",
                        (int)strcspn(spec, ":"), spec);
    if (bt_policy_create(def, opts, &st, why, sizeof why) != BT_OK)
        return bt_error(err, errlen, BT_ERR_ARG, "%s: %s", spec, why);
    bt_rng rng;
    bt_rng_seed(&rng, seed);
    bool updated = false;
    for (int i = 0; i < n; i++) {
        long t = i % T;
        if (t == 0 && def->begin)
            def->begin(st, bt_rng_next(&rng));
        bt_policy_decision d = {.xi = 1, .update = false, .reach = 0};
        def->decide(st, t, &d);
        cut[i] = t == 0 || d.xi == 0 || updated;
        updated = d.update;
    }
    def->destroy(st);
    return BT_OK;
}
