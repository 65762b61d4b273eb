/* estimator.c: the host's half of an online gradient estimator. Finds the
 * plugin's def by name, parses its options, asks it for the state buffers it
 * needs at the model's sizes, checks them (names, counts, memory) and owns
 * them and the estimator's RNG, so a checkpoint can save both; passes every
 * string the plugin hands back through the bounded text helpers.
 *
 * Dimension letters: B rows, S state numbers, P parameters. */
#include <stdio.h>
#include <string.h>

#include "estimator.h"

struct bt_estimator {
    const bt_estimator_def *def; /* owned by the registry, which must outlive this */
    void *cfg;                   /* the plugin's parsed options */
    bt_estimator_dims dims;
    int widths[BT_MAX_STATES];
    int n_buffers;
    bt_estimator_buffer decl[BT_ESTIMATOR_MAX_BUFFERS]; /* as declared, names cleaned */
    bt_real *buf[BT_ESTIMATOR_MAX_BUFFERS];
    size_t bytes;
    bt_rng rng;
    char name[BT_NAME_LEN];
};

/* "uoro,seed=3" or "uoro:seed=3": the name ends at the first ',' or ':'. */
static void split_spec(const char *spec, char *name, size_t len, const char **options)
{
    size_t n = strcspn(spec, ",:");
    snprintf(name, len, "%.*s", (int)(n < len ? n : len - 1), spec);
    *options = spec[n] ? spec + n + 1 : "";
}

static const bt_estimator_def *find_def(const bt_registry *r, const char *spec, char *name,
                                        size_t len, const char **options, char *err,
                                        size_t errlen)
{
    split_spec(spec, name, len, options);
    const bt_estimator_def *def = bt_registry_estimator(r, name);
    if (!def) {
        char known[256];
        bt_errorf(err, errlen, "unknown estimator '%s' (registered estimators: %s)", name,
                  bt_registry_names(r, BT_KIND_ESTIMATOR, known, sizeof known));
    }
    return def;
}

/* The buffers the plugin declared: a count in range, names that end within
 * BT_NAME_LEN, are printable and unique; the total within this process's memory. */
static bt_status check_buffers(bt_estimator *e, int n, char *err, size_t errlen)
{
    if (n < 0 || n > BT_ESTIMATOR_MAX_BUFFERS)
        return bt_error(err, errlen, BT_ERR_PLUGIN, "estimator %s declared %d state buffers "
                        "(0 to %d allowed): a bug in the plugin", e->name, n,
                        BT_ESTIMATOR_MAX_BUFFERS);
    double bytes = 0;
    for (int i = 0; i < n; i++) {
        bt_estimator_buffer *b = &e->decl[i];
        size_t len = bt_plugin_text_len(b->name, BT_NAME_LEN);
        if (len == 0 || len == BT_NAME_LEN || !bt_plugin_text_printable(b->name, len))
            return bt_error(err, errlen, BT_ERR_PLUGIN, "estimator %s declared state buffer %d "
                            "with an empty, unterminated or unprintable name: a bug in the "
                            "plugin", e->name, i);
        for (int j = 0; j < i; j++)
            if (strcmp(e->decl[j].name, b->name) == 0)
                return bt_error(err, errlen, BT_ERR_PLUGIN, "estimator %s declared two state "
                                "buffers named '%s': a bug in the plugin", e->name, b->name);
        bytes += (double)b->count * sizeof(bt_real);
    }
    double have = (double)bt_memory_limit();
    if (bytes > have)
        return bt_error(err, errlen, BT_ERR_NOMEM, "estimator %s needs %.1f MB of state at "
                        "S=%zu, P=%zu, more than the %.1f MB this process may use: use a "
                        "smaller model or batch, or another estimator", e->name, bytes / 1048576.0,
                        e->dims.S, e->dims.P, have / 1048576.0);
    e->bytes = (size_t)bytes;
    return BT_OK;
}

/* Asks the plugin for its buffers at e->dims and makes them (zeroed). */
static bt_status make_buffers(bt_estimator *e, char *err, size_t errlen)
{
    char perr[BT_ERRMSG_LEN] = "";
    memset(e->decl, 0, sizeof e->decl);
    int n = e->def->buffers(e->cfg, &e->dims, e->decl, BT_ESTIMATOR_MAX_BUFFERS, perr, sizeof perr);
    if (n == -1) {
        bt_plugin_text_clean(perr, sizeof perr);
        return bt_error(err, errlen, BT_ERR_ARG, "%s", perr[0] ? perr : "estimator: its state "
                        "cannot be made at these sizes (the plugin gave no reason)");
    }
    bt_status st = check_buffers(e, n, err, errlen);
    if (st != BT_OK)
        return st;
    e->n_buffers = n;
    for (int i = 0; i < n; i++)
        if (!(e->buf[i] = bt_calloc(e->decl[i].count ? e->decl[i].count : 1, sizeof(bt_real))))
            return bt_error(err, errlen, BT_ERR_NOMEM, "estimator %s: out of memory for its "
                            "state buffer '%s' (%zu values)", e->name, e->decl[i].name,
                            e->decl[i].count);
    return BT_OK;
}

static void bind_dims(bt_estimator *e, const bt_model *m, int B, bool want_dstate0)
{
    e->dims.B = B;
    e->dims.n_states = m->n_states;
    for (int k = 0; k < m->n_states; k++) {
        e->widths[k] = m->state_width[k];
        e->dims.S += (size_t)B * (size_t)m->state_width[k];
    }
    e->dims.widths = e->widths;
    e->dims.P = bt_params_total(m->params);
    e->dims.want_dstate0 = want_dstate0 && (e->def->flags & BT_ESTIMATOR_DSTATE0);
}

bt_status bt_estimator_new(const bt_registry *r, const char *spec, const bt_model *m, int B,
                           bool want_dstate0, bt_estimator **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!r || !spec || !m || B <= 0)
        return bt_error(err, errlen, BT_ERR_ARG, "bt_estimator_new: registry, spec, model and "
                        "a positive batch are required");
    char name[BT_NAME_LEN];
    const char *options;
    const bt_estimator_def *def = find_def(r, spec, name, sizeof name, &options, err, errlen);
    if (!def)
        return BT_ERR_NOT_FOUND;
    bt_estimator *e = bt_calloc(1, sizeof *e);
    if (!e)
        return bt_error(err, errlen, BT_ERR_NOMEM, "estimator %s: out of memory", name);
    e->def = def;
    snprintf(e->name, sizeof e->name, "%s", name);
    char perr[BT_ERRMSG_LEN] = "";
    if (def->create(bt_host_table(), options, &e->cfg, perr, sizeof perr) != 0) {
        e->cfg = NULL; /* a failed create owns nothing */
        bt_estimator_free(e);
        bt_plugin_text_clean(perr, sizeof perr);
        return bt_error(err, errlen, BT_ERR_ARG, "%s", perr[0] ? perr : "estimator: invalid options");
    }
    bind_dims(e, m, B, want_dstate0);
    bt_status st = make_buffers(e, err, errlen);
    if (st != BT_OK) {
        bt_estimator_free(e);
        return st;
    }
    /* Never a state the plugin did not set (an all-zero RNG draws zeros forever). */
    bt_estimator_begin(e, 0);
    *out = e;
    return BT_OK;
}

bt_status bt_estimator_check_spec(const bt_registry *r, const char *spec, char *err,
                                  size_t errlen)
{
    char name[BT_NAME_LEN], perr[BT_ERRMSG_LEN] = "";
    const char *options;
    const bt_estimator_def *def = find_def(r, spec, name, sizeof name, &options, err, errlen);
    if (!def)
        return BT_ERR_NOT_FOUND;
    void *cfg = NULL;
    if (def->create(bt_host_table(), options, &cfg, perr, sizeof perr) != 0) {
        bt_plugin_text_clean(perr, sizeof perr);
        return bt_error(err, errlen, BT_ERR_ARG, "%s", perr[0] ? perr : "estimator: invalid options");
    }
    def->destroy(cfg);
    return BT_OK;
}

void bt_estimator_free(bt_estimator *e)
{
    if (!e)
        return;
    if (e->cfg)
        e->def->destroy(e->cfg);
    for (int i = 0; i < BT_ESTIMATOR_MAX_BUFFERS; i++)
        bt_free(e->buf[i]);
    bt_free(e);
}

/* What every call hands the plugin: the binding. */
static void ctx_binding(bt_estimator *e, bt_estimator_ctx *c)
{
    c->size = sizeof *c;
    c->host = bt_host_table();
    c->dims = e->dims;
    c->n_buffers = e->n_buffers;
    c->buf = e->buf;
    c->rng = &e->rng;
}

void bt_estimator_begin(bt_estimator *e, uint64_t seed)
{
    bt_estimator_ctx c = {0};
    ctx_binding(e, &c);
    e->def->begin(e->cfg, &c, seed);
}

bt_status bt_estimator_step(bt_estimator *e, bt_estimator_ctx *ctx, char *err, size_t errlen)
{
    ctx_binding(e, ctx);
    if (!e->dims.want_dstate0)
        ctx->dstate0 = NULL;
    char perr[BT_ERRMSG_LEN] = "";
    if (e->def->step(e->cfg, ctx, perr, sizeof perr) == 0)
        return BT_OK;
    bt_plugin_text_clean(perr, sizeof perr);
    return bt_error(err, errlen, BT_ERR_ARG, "estimator %s at step %ld: %s", e->name, ctx->t,
                    perr[0] ? perr : "failed (the plugin gave no message)");
}

const char *bt_estimator_name(const bt_estimator *e) { return e->name; }
const bt_estimator_def *bt_estimator_def_of(const bt_estimator *e) { return e->def; }
bool bt_estimator_exact(const bt_estimator *e) { return e->def->flags & BT_ESTIMATOR_EXACT; }
bool bt_estimator_has_dstate0(const bt_estimator *e) { return e->dims.want_dstate0; }
const bt_estimator_dims *bt_estimator_dims_of(const bt_estimator *e) { return &e->dims; }
int bt_estimator_buffer_count(const bt_estimator *e) { return e->n_buffers; }
bt_rng *bt_estimator_rng(bt_estimator *e) { return &e->rng; }
size_t bt_estimator_bytes(const bt_estimator *e) { return e->bytes; }

bt_real *bt_estimator_buffer_at(bt_estimator *e, int i, const char **name, size_t *count)
{
    if (i < 0 || i >= e->n_buffers)
        return NULL;
    if (name)
        *name = e->decl[i].name;
    if (count)
        *count = e->decl[i].count;
    return e->buf[i];
}

const char *bt_estimator_describe(const bt_estimator *e, char *buf, size_t len)
{
    if (!buf || !len)
        return buf;
    memset(buf, 0, len);
    const char *s = e->def->describe(e->cfg, buf, len);
    buf[len - 1] = '\0'; /* a describe that filled buf to the end left no NUL */
    return bt_plugin_text_copy(buf, len, s ? s : e->name); /* s may be the plugin's own string */
}
