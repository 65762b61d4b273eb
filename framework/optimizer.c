/* optimizer.c: the host's half of an optimizer step. A registered optimizer def
 * supplies the update rule; this file owns its state buffers (one block, laid
 * out like the parameters, so checkpoints can save it) and the step counter.
 * Also global-norm gradient clipping, which runs just before the step. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "registry.h"

struct bt_optimizer {
    const bt_optimizer_def *def; /* owned by the registry, which must outlive this */
    void *cfg;                   /* the plugin's parsed options */
    bt_params *params;
    uint64_t steps;
    bt_real *block;   /* [n_state * total], zeroed at creation */
    bt_real **state;  /* [n_state] pointers into block */
    char name[BT_NAME_LEN];
};

bt_status bt_optimizer_new(const bt_registry *r, const char *spec, bt_params *p,
                           bt_optimizer **out, char *err, size_t errlen)
{
    if (out)
        *out = NULL;
    if (!r || !spec || !p || !out) {
        bt_errorf(err, errlen, "bt_optimizer_new: registry, spec, parameters and out are required");
        return BT_ERR_ARG;
    }
    char name[BT_NAME_LEN + 1];
    const char *options;
    bt_split_spec(spec, name, sizeof name, &options);
    const bt_optimizer_def *def = bt_registry_optimizer(r, name);
    if (!def) {
        char known[256];
        bt_errorf(err, errlen, "unknown optimizer '%.*s' (known: %s)", (int)strcspn(spec, ":"),
                  spec, bt_registry_names(r, BT_KIND_OPTIMIZER, known, sizeof known));
        return BT_ERR_NOT_FOUND;
    }
    size_t total = bt_params_total(p);
    if (total && !bt_params_data(p)) {
        bt_errorf(err, errlen, "optimizer %s: the parameters are not finalized", name);
        return BT_ERR_ARG;
    }
    bt_optimizer *o = bt_calloc(1, sizeof *o);
    if (!o) {
        bt_errorf(err, errlen, "optimizer %s: out of memory", name);
        return BT_ERR_NOMEM;
    }
    o->def = def;
    o->params = p;
    memcpy(o->name, name, strlen(name) + 1); /* registered names fit BT_NAME_LEN */
    if (def->n_state > 0) {
        size_t n = (size_t)def->n_state;
        o->block = bt_calloc(n * total, sizeof(bt_real));
        o->state = bt_calloc(n, sizeof(bt_real *));
        if (!o->block || !o->state) {
            bt_optimizer_free(o);
            bt_errorf(err, errlen, "optimizer %s: out of memory for %zu state values", name, n * total);
            return BT_ERR_NOMEM;
        }
        for (size_t i = 0; i < n; i++)
            o->state[i] = o->block + i * total;
    }
    char perr[BT_ERRMSG_LEN] = "";
    if (def->create(bt_host_table(), options, &o->cfg, perr, sizeof perr) != 0) {
        o->cfg = NULL; /* a failed create owns nothing */
        bt_optimizer_free(o);
        bt_plugin_text_clean(perr, sizeof perr); /* the plugin may have left it unterminated */
        bt_errorf(err, errlen, "%s", perr[0] ? perr : "optimizer: invalid options");
        return BT_ERR_ARG;
    }
    *out = o;
    return BT_OK;
}

void bt_optimizer_free(bt_optimizer *o)
{
    if (!o)
        return;
    if (o->cfg)
        o->def->destroy(o->cfg);
    bt_free(o->block);
    bt_free(o->state);
    bt_free(o);
}

void bt_optimizer_step(bt_optimizer *o)
{
    o->steps++;
    o->def->step(o->cfg, o->steps, bt_params_data(o->params), bt_params_grad(o->params),
                 o->state, bt_params_total(o->params));
}

int bt_optimizer_state_count(const bt_optimizer *o) { return o->def->n_state; }

bt_real *bt_optimizer_state(bt_optimizer *o, int i)
{
    return (i >= 0 && i < o->def->n_state) ? o->state[i] : NULL;
}

uint64_t bt_optimizer_steps(const bt_optimizer *o) { return o->steps; }
void bt_optimizer_set_steps(bt_optimizer *o, uint64_t steps) { o->steps = steps; }

const char *bt_optimizer_describe(const bt_optimizer *o, char *buf, size_t len)
{
    if (!buf || !len)
        return buf;
    memset(buf, 0, len);
    const char *s = o->def->describe(o->cfg, buf, len);
    buf[len - 1] = '\0'; /* a describe that filled buf to the end left no NUL */
    return bt_plugin_text_copy(buf, len, s ? s : o->name); /* s may be the plugin's own string */
}

const char *bt_optimizer_name(const bt_optimizer *o) { return o->name; }
bt_params *bt_optimizer_params(const bt_optimizer *o) { return o->params; }

/* ---- clipping and the update ----------------------------------------------- */

/* Gradients are walked in BLOCKS fixed pieces, so that threads can take them
 * in any split and the sums (added in block order) come out the same. */
#define BLOCKS 64

/* Block b of n values: [*lo, *hi), starting at a multiple of 16 values. */
static void block_of(size_t n, int b, size_t *lo, size_t *hi)
{
    size_t w = ((n + BLOCKS - 1) / BLOCKS + 15) & ~(size_t)15;
    *lo = (size_t)b * w < n ? (size_t)b * w : n;
    *hi = *lo + w < n ? *lo + w : n;
}

/* sum g_i^2 in double, in 8 partial sums: a single chain of n dependent adds
 * ran 2.8x slower (about 1% of the classic step at hidden 256). */
static double sum_squares(const bt_real *g, size_t n)
{
    double lane[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++)
            lane[l] += (double)g[i + l] * (double)g[i + l];
    for (; i < n; i++)
        lane[i % 8] += (double)g[i] * (double)g[i];
    double ss = 0;
    for (int l = 0; l < 8; l++)
        ss += lane[l];
    return ss;
}

/* ||g||: the blocks' sums of squares on `threads` threads, added in order. */
static double grad_norm(const bt_real *g, size_t n, int threads)
{
    double part[BLOCKS];
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
#endif
    for (int b = 0; b < BLOCKS; b++) {
        size_t lo, hi;
        block_of(n, b, &lo, &hi);
        part[b] = sum_squares(g + lo, hi - lo);
    }
    (void)threads;
    double ss = 0;
    for (int b = 0; b < BLOCKS; b++)
        ss += part[b];
    double nrm = sqrt(ss);
    if (isinf(nrm)) {
        /* Finite gradients whose squares overflow (double reals above ~1e154):
         * measure again relative to the largest magnitude. */
        double big = 0;
        for (size_t i = 0; i < n && isfinite(big); i++)
            big = fmax(big, fabs((double)g[i]));
        if (isfinite(big) && big > 0) {
            ss = 0;
            for (size_t i = 0; i < n; i++)
                ss += ((double)g[i] / big) * ((double)g[i] / big);
            nrm = big * sqrt(ss);
        }
    }
    return nrm;
}

/* The factor that clips a gradient of norm nrm to theta (1: none). */
static double clip_factor(double nrm, double theta)
{
    return theta > 0 && nrm > theta ? theta / nrm : 1;
}

static void scale(bt_real *g, size_t n, double c)
{
    if (c == 1)
        return;
    for (size_t i = 0; i < n; i++)
        g[i] = (bt_real)((double)g[i] * c);
}

bt_status bt_clip_grad_norm(bt_params *p, double theta, double *norm)
{
    size_t n = bt_params_total(p);
    bt_real *g = bt_params_grad(p);
    double nrm = grad_norm(g, n, 1);
    if (norm)
        *norm = nrm;
    if (!isfinite(nrm))
        return BT_ERR_NUMERIC;
    scale(g, n, clip_factor(nrm, theta));
    return BT_OK;
}

static bool elementwise(const bt_optimizer *o)
{
    const bt_optimizer_def *d = o->def;
    return d->size >= offsetof(bt_optimizer_def, flags) + sizeof d->flags &&
           (d->flags & BT_OPTIMIZER_ELEMENTWISE);
}

/* Block b of the update: clipped by c, stepped when `step` (an elementwise
 * optimizer's slice), zeroed when `zero`. */
static void update_block(bt_optimizer *o, int b, double c, bool step, bool zero)
{
    size_t n = bt_params_total(o->params), lo, hi;
    block_of(n, b, &lo, &hi);
    if (hi == lo) /* fewer values than blocks: no call with nothing to do */
        return;
    bt_real *g = bt_params_grad(o->params) + lo;
    scale(g, hi - lo, c);
    if (step) {
        bt_real *st[BT_OPTIMIZER_MAX_STATE]; /* the registry refuses more */
        for (int i = 0; i < o->def->n_state; i++)
            st[i] = o->state[i] + lo;
        o->def->step(o->cfg, o->steps, bt_params_data(o->params) + lo, g, st, hi - lo);
    }
    if (zero)
        memset(g, 0, sizeof *g * (hi - lo));
}

/* update_block over every block, on `threads` threads. */
static void update_blocks(bt_optimizer *o, int threads, double c, bool step, bool zero)
{
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
#endif
    for (int b = 0; b < BLOCKS; b++)
        update_block(o, b, c, step, zero);
    (void)threads;
}

/* Why threads: with --threads N the rest of a window runs on N threads, and
 * one thread clipping, stepping and zeroing 4 MB of gradients (hidden 1024)
 * left the others idle (OpenMP's spin-wait in a two-thread profile). */
bt_status bt_optimizer_update(bt_optimizer *o, double theta, int threads, double *norm)
{
    size_t n = bt_params_total(o->params);
    double nrm = grad_norm(bt_params_grad(o->params), n, threads);
    if (norm)
        *norm = nrm;
    bool ok = isfinite(nrm), sliced = ok && threads > 1 && elementwise(o);
    double c = ok ? clip_factor(nrm, theta) : 1;
    o->steps += ok;
    if (!ok || sliced || c != 1) /* clip; step and zero, or zero alone */
        update_blocks(o, threads, c, sliced, !ok || sliced);
    if (ok && !sliced) { /* one call, then the zeroing */
        o->def->step(o->cfg, o->steps, bt_params_data(o->params), bt_params_grad(o->params),
                     o->state, n);
        update_blocks(o, threads, 1, false, true);
    }
    return ok ? BT_OK : BT_ERR_NUMERIC;
}
