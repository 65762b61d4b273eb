/* checkpoint.c: saving a run to safetensors and loading it back, with every
 * tensor and setting checked, so a damaged or foreign file gets a message
 * and never a crash or a silently wrong model. Numbers in the metadata are
 * written with 17 significant digits, so they read back exactly. The
 * settings are checked against the tensors' shapes (check_shapes) before
 * anything is allocated from them: a small file claiming hidden 20000 is
 * refused as what it is, not after gigabytes of model are made. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "stack.h"
#include "tasks.h"
#include "text_source.h"
#include "utf8.h"

#define HIST_COLS 11 /* epoch, train_loss, val_loss, tok/s, gmean, gmax, updates, skipped, s, elapsed, arena */

static const char *precision_name(void) { return BT_REAL_DOUBLE ? "double" : "float"; }
static bt_st_dtype real_dtype(void) { return BT_REAL_DOUBLE ? BT_ST_F64 : BT_ST_F32; }

/* ---- writing ------------------------------------------------------------------ */

static bt_status meta_printf(bt_st_file *f, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bt_status meta_printf(bt_st_file *f, const char *key, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return bt_st_set_meta(f, key, buf);
}

/* A stack's layers and dropout (models/stack.h); a one-cell model without
 * dropout writes none of them, so its file is what it was before stacks. */
static bt_status add_arch(bt_st_file *f, const bt_lm_config *c)
{
    bt_status st = BT_OK;
    if (c->layers[0])
        st |= bt_st_set_meta(f, "layers", c->layers);
    if (c->dropout > 0) {
        st |= meta_printf(f, "dropout", "%.17g", c->dropout);
        st |= bt_st_set_meta(f, "variational", c->variational ? "1" : "0");
    }
    return st;
}

/* The data path in the metadata, which must be UTF-8: as it is when it is;
 * otherwise losslessly as hex in data_hex (read back byte for byte) with a
 * readable form in data, the invalid bytes shown as \xNN. */
static bt_status set_path(bt_st_file *f, const char *path)
{
    size_t n = strlen(path);
    if (bt_utf8_valid(path, n))
        return bt_st_set_meta(f, "data", path);
    char *hex = bt_malloc(2 * n + 1), *shown = bt_malloc(4 * n + 1);
    bt_status st = BT_ERR_NOMEM;
    if (hex && shown) {
        for (size_t i = 0; i < n; i++)
            snprintf(hex + 2 * i, 3, "%02x", (unsigned char)path[i]);
        size_t k = 0;
        for (size_t i = 0; i < n;) {
            size_t len = 0; /* the character at i, if it is one */
            for (size_t l = 1; !len && l <= 4 && i + l <= n; l++)
                len = bt_utf8_valid(path + i, l) ? l : 0;
            if (len)
                memcpy(shown + k, path + i, len), k += len, i += len;
            else
                k += (size_t)snprintf(shown + k, 5, "\\x%02x", (unsigned char)path[i]), i++;
        }
        shown[k] = '\0';
        st = bt_st_set_meta(f, "data", shown);
        if (st == BT_OK)
            st = bt_st_set_meta(f, "data_hex", hex);
    }
    bt_free(hex);
    bt_free(shown);
    return st;
}

/* Where the run is within an epoch it stopped in: nothing at an epoch's end. */
static bt_status add_position(bt_st_file *f, bt_lm *lm, char *aerr, size_t alen)
{
    bt_lm_position p;
    bt_lm_position_get(lm, &p);
    if (p.batches_done == 0)
        return BT_OK;
    int64_t four = 4, nsums = BT_LM_SUMS;
    bt_status st = meta_printf(f, "epoch_batches", "%d", p.batches_done);
    if (st == BT_OK)
        st = bt_st_add(f, "epoch_rng", BT_ST_I64, 1, &four, p.epoch_rng, aerr, alen);
    if (st == BT_OK)
        st = bt_st_add(f, "epoch_sums", BT_ST_F64, 1, &nsums, p.sums, aerr, alen);
    return st;
}

static bt_status add_settings(bt_st_file *f, bt_lm *lm, const char *data_path)
{
    const bt_lm_config *c = bt_lm_config_of(lm);
    bt_model *m = bt_lm_model(lm);
    bt_source *src = bt_lm_source(lm);
    char buf[512];
    bt_status st = BT_OK;
    st |= bt_st_set_meta(f, "format", BT_CHECKPOINT_FORMAT);
    st |= bt_st_set_meta(f, "bptt_version", bt_version());
    st |= bt_st_set_meta(f, "precision", precision_name());
    st |= bt_st_set_meta(f, "cell", c->cell);
    st |= meta_printf(f, "hidden", "%d", c->hidden);
    st |= meta_printf(f, "input_size", "%d", m->dims.input);
    st |= meta_printf(f, "output_size", "%d", m->dims.output);
    st |= meta_printf(f, "batch", "%d", c->batch);
    st |= meta_printf(f, "steps", "%d", c->steps);
    st |= bt_st_set_meta(f, "optimizer", c->optimizer);
    st |= bt_st_set_meta(f, "optimizer_canonical", bt_lm_optimizer_describe(lm, buf, sizeof buf));
    st |= meta_printf(f, "clip", "%.17g", c->clip);
    st |= bt_st_set_meta(f, "truncation", c->truncation);
    st |= bt_st_set_meta(f, "truncation_canonical", bt_lm_policy_describe(lm, buf, sizeof buf));
    st |= bt_st_set_meta(f, "init", c->init);
    st |= meta_printf(f, "seed", "%llu", (unsigned long long)c->seed);
    st |= bt_st_set_meta(f, "tokens", bt_tokens_kind_name(c->tokens));
    st |= bt_st_set_meta(f, "sampling", c->sampling == BT_BATCH_RANDOM ? "random" : "sequential");
    st |= meta_printf(f, "max_tokens", "%ld", c->max_tokens);
    st |= meta_printf(f, "val_fraction", "%.17g", c->val_fraction);
    st |= add_arch(f, c);
    st |= meta_printf(f, "checkpoint_every", "%d", c->checkpoint_every);
    st |= meta_printf(f, "memory_budget_mb", "%.17g", c->memory_budget_mb);
    st |= meta_printf(f, "epoch", "%d", bt_lm_epochs_done(lm));
    st |= meta_printf(f, "updates", "%llu", (unsigned long long)bt_lm_updates(lm));
    st |= meta_printf(f, "optimizer_steps", "%llu",
                      (unsigned long long)bt_optimizer_steps(bt_lm_optimizer(lm)));
    if (bt_lm_config_online(c)) { /* absent for BPTT, so older bptt reads the file as before */
        st |= bt_st_set_meta(f, "estimator", c->estimator);
        st |= bt_st_set_meta(f, "estimator_canonical", bt_lm_policy_describe(lm, buf, sizeof buf));
        st |= meta_printf(f, "update_every", "%d", c->update_every);
    }
    st |= bt_st_set_meta(f, "source", src->name ? src->name : "");
    st |= set_path(f, data_path ? data_path : "");
    if (src->name && bt_task_spec_is_task(src->name)) /* the spec recreates the task */
        st |= bt_st_set_meta(f, "task", src->name);
    if (src->vocab) {
        char *json = bt_vocab_to_json(src->vocab);
        if (!json)
            return BT_ERR_NOMEM;
        st |= bt_st_set_meta(f, "vocab", json);
        bt_free(json);
    }
    return st == BT_OK ? BT_OK : BT_ERR_ARG;
}

/* The model, the optimizer state, the RNG and the carried state. */
static bt_status add_run_tensors(bt_st_file *f, bt_lm *lm, char *aerr, size_t alen)
{
    bt_model *m = bt_lm_model(lm);
    bt_optimizer *o = bt_lm_optimizer(lm);
    char name[BT_NAME_LEN + 16];
    bt_status st = BT_OK;
    for (int i = 0; i < m->n_params && st == BT_OK; i++) {
        const bt_tensor *t = m->ptab[i];
        int64_t shape[BT_MAX_DIMS];
        for (int d = 0; d < t->ndim; d++)
            shape[d] = t->shape[d];
        snprintf(name, sizeof name, "param.%s", m->specs[i].name);
        st = bt_st_add_real(f, name, t->ndim, shape, t->data, aerr, alen);
    }
    int64_t total = (int64_t)bt_params_total(m->params);
    for (int i = 0; i < bt_optimizer_state_count(o) && st == BT_OK; i++) {
        snprintf(name, sizeof name, "opt.%d", i);
        st = bt_st_add_real(f, name, 1, &total, bt_optimizer_state(o, i), aerr, alen);
    }
    if (st == BT_OK) {
        int64_t four = 4, words[4];
        memcpy(words, bt_lm_rng(lm)->s, sizeof words); /* bit pattern; I64 is signed */
        st = bt_st_add(f, "rng", BT_ST_I64, 1, &four, words, aerr, alen);
    }
    bt_real *const *state = bt_lm_state(lm);
    for (int k = 0; k < m->n_states && st == BT_OK; k++) {
        snprintf(name, sizeof name, "state.%d", k);
        int64_t shape[2] = {bt_lm_config_of(lm)->batch, m->state_width[k]};
        st = bt_st_add_real(f, name, 2, shape, state[k], aerr, alen);
    }
    return st;
}

/* The online estimator's state, when the run has one: each buffer it
 * declared as estimator.<name> [count], and its RNG as estimator.rng. */
static bt_status add_estimator(bt_st_file *f, bt_lm *lm, char *aerr, size_t len)
{
    bt_estimator *e = bt_lm_estimator(lm);
    bt_status st = BT_OK;
    char name[BT_NAME_LEN + 16];
    for (int i = 0; e && i < bt_estimator_buffer_count(e) && st == BT_OK; i++) {
        const char *bname;
        size_t count;
        bt_real *v = bt_estimator_buffer_at(e, i, &bname, &count);
        int64_t n = (int64_t)count;
        snprintf(name, sizeof name, "estimator.%s", bname);
        st = bt_st_add_real(f, name, 1, &n, v, aerr, len);
    }
    if (e && st == BT_OK) {
        int64_t four = 4, words[4];
        memcpy(words, bt_estimator_rng(e)->s, sizeof words);
        st = bt_st_add(f, "estimator.rng", BT_ST_I64, 1, &four, words, aerr, len);
    }
    return st;
}

/* The per-epoch history as an [epochs, HIST_COLS] F64 table. */
static bt_status add_history(bt_st_file *f, bt_lm *lm, char *aerr, size_t alen)
{
    const bt_lm_epoch *h;
    int n = bt_lm_history(lm, &h);
    double *rows = bt_malloc(sizeof(double) * HIST_COLS * (size_t)(n ? n : 1));
    if (!rows)
        return bt_error(aerr, alen, BT_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        double *r = rows + (size_t)i * HIST_COLS;
        r[0] = h[i].epoch, r[1] = h[i].train_loss, r[2] = h[i].val_loss;
        r[3] = h[i].tokens_per_s, r[4] = h[i].grad_norm_mean, r[5] = h[i].grad_norm_max;
        r[6] = h[i].updates, r[7] = h[i].skipped, r[8] = h[i].seconds;
        r[9] = h[i].elapsed, r[10] = (double)h[i].peak_arena;
    }
    int64_t shape[2] = {n, HIST_COLS};
    bt_status st = bt_st_add(f, "history", BT_ST_F64, 2, shape, rows, aerr, alen);
    bt_free(rows);
    return st;
}

bt_status bt_checkpoint_save(bt_lm *lm, const char *path, const char *data_path, char *err,
                             size_t errlen)
{
    if (!bt_lm_params_finite(lm))
        return bt_error(err, errlen, BT_ERR_NUMERIC,
                    "not saving %s: the parameters are not finite (the previous checkpoint is kept)",
                    path);
    bt_st_file *f = bt_st_new();
    if (!f)
        return bt_error(err, errlen, BT_ERR_NOMEM, "out of memory writing %s", path);
    char aerr[256] = "";
    bt_status st = add_settings(f, lm, data_path);
    if (st != BT_OK)
        snprintf(aerr, sizeof aerr, "%s", st == BT_ERR_NOMEM ? "out of memory" : "bad metadata");
    if (st == BT_OK)
        st = add_run_tensors(f, lm, aerr, sizeof aerr);
    if (st == BT_OK)
        st = add_estimator(f, lm, aerr, sizeof aerr);
    if (st == BT_OK)
        st = add_history(f, lm, aerr, sizeof aerr);
    if (st == BT_OK)
        st = add_position(f, lm, aerr, sizeof aerr);
    if (st == BT_OK)
        st = bt_st_write(f, path, err, errlen);
    else
        bt_error(err, errlen, st, "cannot save %s: %s", path, aerr);
    bt_st_free(f);
    return st;
}

/* ---- reading -------------------------------------------------------------------- */

void bt_checkpoint_free(bt_checkpoint *c)
{
    if (!c)
        return;
    bt_st_free(c->file);
    bt_vocab_free(c->vocab);
    bt_free(c->path);
    bt_free(c->data);
    bt_free(c);
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = bt_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static const char *meta_req(const bt_checkpoint *c, const char *key, char *err, size_t errlen)
{
    const char *v = bt_st_meta(c->file, key);
    if (!v)
        bt_error(err, errlen, BT_ERR_FORMAT, "checkpoint %s: the setting '%s' is missing from its "
             "metadata (damaged file, or not written by bptt train)", c->path, key);
    return v;
}

/* A text setting: a pointer into the file's metadata, which c keeps. */
static bt_status meta_str(const bt_checkpoint *c, const char *key, const char **out, char *err,
                          size_t errlen)
{
    *out = meta_req(c, key, err, errlen);
    return *out ? BT_OK : BT_ERR_FORMAT;
}

/* A number setting; an optional one (def not NULL) takes *def when absent. */
static bt_status meta_num(const bt_checkpoint *c, const char *key, double min, double max,
                          const double *def, double *out, char *err, size_t errlen)
{
    if (def && !bt_st_meta(c->file, key)) {
        *out = *def;
        return BT_OK;
    }
    const char *v = meta_req(c, key, err, errlen);
    if (!v)
        return BT_ERR_FORMAT;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !(x >= min && x <= max))
        return bt_error(err, errlen, BT_ERR_FORMAT, "checkpoint %s: the setting '%s' is '%s', "
                    "expected a number in [%g, %g]", c->path, key, v, min, max);
    *out = x;
    return BT_OK;
}

static bt_status meta_int(const bt_checkpoint *c, const char *key, long min, long max,
                          const long *def, long *out, char *err, size_t errlen)
{
    if (def && !bt_st_meta(c->file, key)) {
        *out = *def;
        return BT_OK;
    }
    const char *v = meta_req(c, key, err, errlen);
    if (!v)
        return BT_ERR_FORMAT;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < min || x > max)
        return bt_error(err, errlen, BT_ERR_FORMAT, "checkpoint %s: the setting '%s' is '%s', "
                    "expected a whole number in [%ld, %ld]", c->path, key, v, min, max);
    *out = x;
    return BT_OK;
}

static bt_status meta_u64(const bt_checkpoint *c, const char *key, uint64_t *out, char *err,
                          size_t errlen)
{
    const char *v = meta_req(c, key, err, errlen);
    if (!v)
        return BT_ERR_FORMAT;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || end == v || *end || v[0] == '-')
        return bt_error(err, errlen, BT_ERR_FORMAT, "checkpoint %s: the setting '%s' is '%s', "
                    "expected a whole number >= 0", c->path, key, v);
    *out = x;
    return BT_OK;
}

/* A bptt checkpoint of this build's precision, with checksums unless it
 * predates them (format 1)? */
static bt_status check_kind(bt_checkpoint *c, char *err, size_t errlen)
{
    const char *fmt = bt_st_meta(c->file, "format");
    bool v1 = fmt && strcmp(fmt, BT_CHECKPOINT_FORMAT_V1) == 0;
    if (!fmt || (!v1 && strcmp(fmt, BT_CHECKPOINT_FORMAT) != 0))
        return bt_error(err, errlen, BT_ERR_FORMAT, "%s is a safetensors file but not a bptt model "
                        "checkpoint (format '%s', expected '%s')", c->path, fmt ? fmt : "none",
                        BT_CHECKPOINT_FORMAT);
    c->verified = bt_st_checksummed(c->file);
    if (!v1 && !c->verified)
        return bt_error(err, errlen, BT_ERR_FORMAT, "checkpoint %s has lost its checksums "
                        "(format %s always has them): the file was damaged or changed after it "
                        "was written", c->path, fmt);
    const char *prec = meta_req(c, "precision", err, errlen);
    if (!prec)
        return BT_ERR_FORMAT;
    if (strcmp(prec, precision_name()) != 0)
        return bt_error(err, errlen, BT_ERR_FORMAT, "checkpoint %s holds %s parameters, but this bptt "
                        "is built with %s (-Dreal=%s): use a bptt built with -Dreal=%s", c->path,
                        prec, precision_name(), precision_name(), prec);
    return BT_OK;
}

/* The stack's settings if the file has them (absent: one cell, no dropout). */
static bt_status read_arch(bt_checkpoint *c, char *err, size_t errlen)
{
    bt_lm_config *cfg = &c->cfg;
    const char *layers = bt_st_meta(c->file, "layers"), *var = bt_st_meta(c->file, "variational");
    bt_status st = BT_OK;
    if (layers && strlen(layers) >= sizeof cfg->layers)
        st = bt_error(err, errlen, BT_ERR_FORMAT, "checkpoint %s: the setting 'layers' is longer "
                      "than %zu bytes", c->path, sizeof cfg->layers - 1);
    else if (layers)
        memcpy(cfg->layers, layers, strlen(layers) + 1);
    if (st == BT_OK && bt_st_meta(c->file, "dropout"))
        st = meta_num(c, "dropout", 0, 0.99, NULL, &cfg->dropout, err, errlen);
    cfg->variational = var && !strcmp(var, "1");
    return st;
}

/* The online estimator and its update interval: only a run with one writes them. */
static bt_status read_estimator_settings(bt_checkpoint *c, char *err, size_t errlen)
{
    bt_lm_config *cfg = &c->cfg;
    if (!bt_st_meta(c->file, "estimator"))
        return BT_OK;
    long every = 1;
    bt_status st = meta_str(c, "estimator", &cfg->estimator, err, errlen);
    if (st == BT_OK)
        st = meta_int(c, "update_every", 1, 0x7fffffff, NULL, &every, err, errlen);
    if (st == BT_OK && !cfg->estimator[0])
        st = bt_error(err, errlen, BT_ERR_FORMAT, "checkpoint %s: the setting 'estimator' is "
                      "empty", c->path);
    cfg->update_every = (int)every;
    return st;
}

/* Every setting add_settings wrote, each checked against its range (those
 * added since format 1 are optional, with the defaults of that time). */
static bt_status read_settings(bt_checkpoint *c, const char **tok, const char **smp, char *err,
                               size_t errlen)
{
    bt_lm_config *cfg = &c->cfg;
    const struct { const char *key; const char **out; } strs[] = {
        {"cell", &cfg->cell}, {"optimizer", &cfg->optimizer}, {"truncation", &cfg->truncation},
        {"init", &cfg->init}, {"tokens", tok}, {"sampling", smp}, {"bptt_version", &c->version},
    };
    long v[8] = {0}, none = 0;
    const struct { const char *key; long min, max; const long *def; long *out; } ints[] = {
        {"hidden", 1, 1L << 20, NULL, &v[0]}, {"batch", 1, 1L << 24, NULL, &v[1]},
        {"steps", 1, 1L << 24, NULL, &v[2]}, {"input_size", 1, 1L << 24, NULL, &v[3]},
        {"output_size", 1, 1L << 24, NULL, &v[4]}, {"epoch", 0, 0x7fffffff, NULL, &v[5]},
        {"max_tokens", 0, 0x7fffffffffffffffL, NULL, &cfg->max_tokens},
        {"checkpoint_every", -1, 100000000, &none, &v[6]},
        {"epoch_batches", 0, 0x7fffffff, &none, &v[7]},
    };
    const struct { const char *key; uint64_t *out; } u64s[] = {
        {"seed", &cfg->seed}, {"updates", &c->updates}, {"optimizer_steps", &c->opt_steps},
    };
    const double no_budget = 0;
    bt_status st = BT_OK;
    for (size_t i = 0; st == BT_OK && i < sizeof strs / sizeof *strs; i++)
        st = meta_str(c, strs[i].key, strs[i].out, err, errlen);
    for (size_t i = 0; st == BT_OK && i < sizeof ints / sizeof *ints; i++)
        st = meta_int(c, ints[i].key, ints[i].min, ints[i].max, ints[i].def, ints[i].out, err,
                      errlen);
    for (size_t i = 0; st == BT_OK && i < sizeof u64s / sizeof *u64s; i++)
        st = meta_u64(c, u64s[i].key, u64s[i].out, err, errlen);
    if (st == BT_OK)
        st = meta_num(c, "clip", 0, INFINITY, NULL, &cfg->clip, err, errlen);
    if (st == BT_OK)
        st = meta_num(c, "val_fraction", 0, 0.5, NULL, &cfg->val_fraction, err, errlen);
    if (st == BT_OK)
        st = meta_num(c, "memory_budget_mb", 0, 1e9, &no_budget, &cfg->memory_budget_mb, err,
                      errlen);
    if (st == BT_OK)
        st = read_arch(c, err, errlen);
    cfg->hidden = (int)v[0], cfg->batch = (int)v[1], cfg->steps = (int)v[2];
    c->input_size = (int)v[3], c->output_size = (int)v[4], c->epoch = (int)v[5];
    cfg->checkpoint_every = (int)v[6], c->position.batches_done = (int)v[7];
    return st == BT_OK ? read_estimator_settings(c, err, errlen) : st;
}

/* The text it was trained on, byte for byte: data_hex when the path is not
 * UTF-8 (set_path), else data. */
static bt_status read_data_path(bt_checkpoint *c, char *err, size_t errlen)
{
    const char *hex = bt_st_meta(c->file, "data_hex"), *data = bt_st_meta(c->file, "data");
    if (!hex) {
        c->data = dup_str(data ? data : "");
        return c->data ? BT_OK : bt_error(err, errlen, BT_ERR_NOMEM, "out of memory");
    }
    size_t n = strlen(hex);
    if (n % 2 || strspn(hex, "0123456789abcdef") != n)
        return bt_error(err, errlen, BT_ERR_FORMAT, "checkpoint %s: the setting 'data_hex' is not "
                        "hex", c->path);
    if (!(c->data = bt_malloc(n / 2 + 1)))
        return bt_error(err, errlen, BT_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n / 2; i++) {
        unsigned x;
        sscanf(hex + 2 * i, "%2x", &x);
        if (x == 0)
            return bt_error(err, errlen, BT_ERR_FORMAT, "checkpoint %s: the setting 'data_hex' "
                            "holds a NUL byte", c->path);
        c->data[i] = (char)x;
    }
    c->data[n / 2] = '\0';
    return BT_OK;
}

/* What it was trained on: tokens and sampling, the text or task, the vocabulary. */
static bt_status read_source(bt_checkpoint *c, const char *tok, const char *smp, char *err,
                             size_t errlen)
{
    bt_lm_config *cfg = &c->cfg;
    if (bt_tokens_kind_parse(tok, &cfg->tokens, NULL, 0) != BT_OK ||
        (strcmp(smp, "sequential") != 0 && strcmp(smp, "random") != 0))
        return bt_error(err, errlen, BT_ERR_FORMAT, "checkpoint %s: unknown tokens '%.32s' or "
                        "sampling '%.32s'", c->path, tok, smp);
    cfg->sampling = strcmp(smp, "random") == 0 ? BT_BATCH_RANDOM : BT_BATCH_SEQUENTIAL;
    bt_status st = read_data_path(c, err, errlen);
    if (st != BT_OK)
        return st;
    const char *task = bt_st_meta(c->file, "task"); /* absent for a text */
    if (task && !bt_task_spec_is_task(task))
        return bt_error(err, errlen, BT_ERR_FORMAT, "checkpoint %s: the setting 'task' is '%.64s', "
                        "not a task spec", c->path, task);
    c->task = task ? task : "";
    const char *vocab = bt_st_meta(c->file, "vocab");
    if (!vocab)
        return BT_OK;
    char verr[256] = "";
    if (bt_vocab_from_json(vocab, cfg->tokens, &c->vocab, verr, sizeof verr) != BT_OK)
        return bt_error(err, errlen, BT_ERR_FORMAT, "checkpoint %s: bad vocabulary: %s", c->path, verr);
    if (bt_vocab_size(c->vocab) != c->input_size || bt_vocab_size(c->vocab) != c->output_size)
        return bt_error(err, errlen, BT_ERR_FORMAT, "checkpoint %s: the vocabulary has %d tokens but "
                        "the model takes %d and predicts %d", c->path, bt_vocab_size(c->vocab),
                        c->input_size, c->output_size);
    return BT_OK;
}

/* Where a run stopped within an epoch: epoch_rng and epoch_sums (with
 * epoch_batches > 0 only). Checked further when the run replays it. */
static bt_status read_position(bt_checkpoint *c, char *err, size_t errlen)
{
    const bt_st_tensor *r = bt_st_find(c->file, "epoch_rng"), *v = bt_st_find(c->file, "epoch_sums");
    if (c->position.batches_done == 0)
        return r || v ? bt_error(err, errlen, BT_ERR_FORMAT, "checkpoint %s: tensors epoch_rng "
                                 "and epoch_sums without epoch_batches", c->path) : BT_OK;
    if (!r || r->dtype != BT_ST_I64 || r->count != 4 || !v || v->dtype != BT_ST_F64 ||
        v->count != BT_LM_SUMS)
        return bt_error(err, errlen, BT_ERR_FORMAT, "checkpoint %s: stopped within an epoch, but "
                        "'epoch_rng' [4] I64 or 'epoch_sums' [%d] F64 is missing", c->path,
                        BT_LM_SUMS);
    memcpy(c->position.epoch_rng, r->data, sizeof c->position.epoch_rng);
    memcpy(c->position.sums, v->data, sizeof c->position.sums);
    return BT_OK;
}

/* From the bytes of a file (path) or of a buffer (data, n, named path). */
static bt_status checkpoint_read(const char *path, const void *data, size_t n, bt_checkpoint **out,
                                 char *err, size_t errlen)
{
    *out = NULL;
    bt_checkpoint *c = bt_calloc(1, sizeof *c);
    if (!c || !(c->path = dup_str(path))) {
        bt_free(c);
        return bt_error(err, errlen, BT_ERR_NOMEM, "out of memory reading %s", path);
    }
    bt_lm_config_default(&c->cfg);
    c->task = "";
    const char *tok = NULL, *smp = NULL;
    bt_status st = data ? bt_st_read_buffer(data, n, path, &c->file, err, errlen)
                        : bt_st_read(path, &c->file, err, errlen);
    if (st == BT_OK)
        st = check_kind(c, err, errlen);
    if (st == BT_OK)
        st = read_settings(c, &tok, &smp, err, errlen);
    if (st == BT_OK)
        st = read_source(c, tok, smp, err, errlen);
    if (st == BT_OK)
        st = read_position(c, err, errlen);
    if (st != BT_OK) {
        bt_checkpoint_free(c);
        return st;
    }
    *out = c;
    return BT_OK;
}

bt_status bt_checkpoint_read(const char *path, bt_checkpoint **out, char *err, size_t errlen)
{
    return checkpoint_read(path, NULL, 0, out, err, errlen);
}

bt_status bt_checkpoint_read_buffer(const void *data, size_t n, const char *name,
                                    bt_checkpoint **out, char *err, size_t errlen)
{
    static const char empty[1];
    return checkpoint_read(name ? name : "(buffer)", data ? data : empty, n, out, err, errlen);
}

/* The tensor `name` as bt_real of exactly this shape, into dst. */
static bt_status load_real(const bt_checkpoint *c, const char *name, int ndim, const int *shape,
                           bt_real *dst, char *err, size_t errlen)
{
    const bt_st_tensor *t = bt_st_find(c->file, name);
    if (!t)
        return bt_error(err, errlen, BT_ERR_FORMAT, "checkpoint %s: tensor '%s' is missing", c->path,
                    name);
    if (t->dtype != real_dtype())
        return bt_error(err, errlen, BT_ERR_FORMAT, "checkpoint %s: tensor '%s' is %s; this bptt "
                    "(%s precision) expects %s", c->path, name, bt_st_dtype_name(t->dtype),
                    precision_name(), bt_st_dtype_name(real_dtype()));
    bool same = t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++)
        same = t->shape[d] == shape[d];
    if (!same) {
        char got[128] = "[", want[128] = "[";
        for (int d = 0; d < t->ndim; d++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? "," : "",
                     (long long)t->shape[d]);
        for (int d = 0; d < ndim; d++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%d", d ? "," : "",
                     shape[d]);
        strcat(got, "]");
        strcat(want, "]");
        return bt_error(err, errlen, BT_ERR_SHAPE, "checkpoint %s: tensor '%s' has shape %s, the "
                    "model expects %s", c->path, name, got, want);
    }
    char gerr[256] = "";
    bt_status st = bt_st_get_real(t, dst, t->count, gerr, sizeof gerr);
    if (st != BT_OK)
        return bt_error(err, errlen, st, "checkpoint %s: tensor '%s': %s", c->path, name, gerr);
    for (size_t i = 0; i < t->count; i++)
        if (!isfinite((double)dst[i]))
            return bt_error(err, errlen, BT_ERR_NUMERIC, "checkpoint %s: tensor '%s' holds a "
                        "non-finite value at %zu", c->path, name, i);
    return BT_OK;
}

/* The online estimator's buffers and RNG (a run with one): every buffer it
 * declares, of the size it declares, and no buffer it does not. */
static bt_status load_estimator(const bt_checkpoint *c, bt_lm *lm, char *err, size_t errlen)
{
    bt_estimator *e = bt_lm_estimator(lm);
    char name[BT_NAME_LEN + 16];
    size_t found = 0;
    for (int i = 0; i < bt_st_count(c->file); i++)
        found += strncmp(bt_st_at(c->file, i)->name, "estimator.", 10) == 0;
    if (!e)
        return found ? bt_error(err, errlen, BT_ERR_FORMAT, "checkpoint %s holds an estimator's "
                                "state but names no estimator (damaged file)", c->path) : BT_OK;
    int n = bt_estimator_buffer_count(e);
    if (found != (size_t)n + 1)
        return bt_error(err, errlen, BT_ERR_FORMAT, "checkpoint %s: it holds %zu estimator "
                        "tensors; estimator %s keeps %d buffers and an RNG", c->path, found,
                        bt_estimator_name(e), n);
    for (int i = 0; i < n; i++) {
        const char *bname;
        size_t count;
        bt_real *v = bt_estimator_buffer_at(e, i, &bname, &count);
        int shape = (int)count;
        snprintf(name, sizeof name, "estimator.%s", bname);
        if (count > 0x7fffffff)
            return bt_error(err, errlen, BT_ERR_FORMAT, "checkpoint %s: estimator buffer %s is too "
                            "large", c->path, bname);
        bt_status st = load_real(c, name, 1, &shape, v, err, errlen);
        if (st != BT_OK)
            return st;
    }
    const bt_st_tensor *r = bt_st_find(c->file, "estimator.rng");
    if (!r || r->dtype != BT_ST_I64 || r->count != 4)
        return bt_error(err, errlen, BT_ERR_FORMAT, "checkpoint %s: tensor 'estimator.rng' is "
                        "missing or is not 4 x I64", c->path);
    memcpy(bt_estimator_rng(e)->s, r->data, sizeof(uint64_t) * 4);
    return BT_OK;
}

/* A count from the history table; a damaged value becomes -1, not undefined behaviour. */
static int to_int(double x) { return x >= -1 && x <= 2147483647.0 ? (int)x : -1; }

static bt_status load_params(const bt_checkpoint *c, bt_model *m, char *err, size_t errlen)
{
    if (m->dims.input != c->input_size || m->dims.output != c->output_size ||
        m->dims.hidden != c->cfg.hidden)
        return bt_error(err, errlen, BT_ERR_SHAPE, "checkpoint %s: sizes %d/%d/%d (input/hidden/"
                    "output) do not match the model's %d/%d/%d", c->path, c->input_size,
                    c->cfg.hidden, c->output_size, m->dims.input, m->dims.hidden, m->dims.output);
    char name[BT_NAME_LEN + 16];
    for (int i = 0; i < m->n_params; i++) {
        snprintf(name, sizeof name, "param.%s", m->specs[i].name);
        bt_tensor *t = m->ptab[i];
        bt_status st = load_real(c, name, t->ndim, t->shape, t->data, err, errlen);
        if (st != BT_OK)
            return st;
    }
    return BT_OK;
}

/* "[20000,20000]" */
static const char *shape_text(int ndim, const int64_t *shape, char *buf, size_t len)
{
    size_t u = (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < ndim && u < len; d++)
        u += (size_t)snprintf(buf + u, len - u, "%s%lld", d ? "," : "", (long long)shape[d]);
    if (u < len)
        snprintf(buf + u, len - u, "]");
    return buf;
}

/* Is tensor `name` of c missing, or not of this shape? The message if so. */
static bool misfit(const bt_checkpoint *c, const char *name, int ndim, const int64_t *shape,
                   char *err, size_t errlen)
{
    const bt_st_tensor *t = bt_st_find(c->file, name);
    bool same = t && t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++)
        same = t->shape[d] == shape[d];
    if (same)
        return false;
    char got[96] = "(missing)", want[96];
    if (t)
        shape_text(t->ndim, t->shape, got, sizeof got);
    bt_error(err, errlen, BT_ERR_FORMAT, "checkpoint %s: its settings (cell %s, input %d, hidden "
             "%d, output %d, batch %d) do not fit tensor '%s' %s, which they make %s: the file "
             "is damaged, or was not written by bptt", c->path, c->cfg.cell, c->input_size,
             c->cfg.hidden, c->output_size, c->cfg.batch, name, got,
             shape_text(ndim, shape, want, sizeof want));
    return true;
}

/* Every setting the tensors show, checked against them before anything is
 * allocated from the settings: the cell's parameters at c's sizes (param.*,
 * no more and no fewer), the optimizer state's length (opt.*) and the carried
 * state's rows and widths (state.*). Only the cell's declaration is asked
 * for, which allocates nothing. */
/* A stack (or a one-layer model with dropout): check_stack_shapes, not
 * check_shapes, holds its tensors to its layers. */
static bool is_stack(const bt_lm_config *cfg)
{
    return cfg->layers[0] || cfg->dropout > 0;
}

/* A stack's layers declared (no parameter block yet) and every l<k>.* tensor
 * and the output layer's held to them, before anything is built: a file
 * claiming a wide layer is refused before its memory is asked for. */
static bt_status check_stack_shapes(const bt_checkpoint *c, const bt_registry *reg, char *err,
                                    size_t errlen)
{
    bt_layer_def defs[BT_MAX_LAYERS];
    const bt_lm_config *cfg = &c->cfg;
    int n = bt_layers_parse(reg, cfg->layers, cfg->cell, cfg->hidden, defs, err, errlen);
    if (n < 0)
        return BT_ERR_FORMAT;
    char name[BT_NAME_LEN + 24];
    int64_t shape[BT_MAX_DIMS];
    int in_w = c->input_size;
    for (int l = 0; l < n; l++) {
        bt_model probe = {.cell = defs[l].cell, .dims = {in_w, defs[l].hidden, 0}};
        bt_status st = bt_model_declare(&probe, err, errlen);
        if (st != BT_OK)
            return st;
        for (int i = 0; i < probe.n_params; i++) {
            for (int d = 0; d < probe.specs[i].ndim; d++)
                shape[d] = probe.specs[i].shape[d];
            snprintf(name, sizeof name, "param.l%d.%s", l + 1, probe.specs[i].name);
            if (misfit(c, name, probe.specs[i].ndim, shape, err, errlen))
                return BT_ERR_FORMAT;
        }
        in_w = probe.state_width[0]; /* the layer's h, the next one's input */
    }
    return misfit(c, "param.out.W_hq", 2, (int64_t[]){in_w, c->output_size}, err, errlen)
               ? BT_ERR_FORMAT : BT_OK;
}

static bt_status check_shapes(const bt_checkpoint *c, const bt_cell_def *cell, char *err,
                              size_t errlen)
{
    bt_model probe = {.cell = cell, .dims = {c->input_size, c->cfg.hidden, c->output_size}};
    char why[BT_ERRMSG_LEN];
    bt_status declared = bt_model_declare(&probe, why, sizeof why);
    if (declared != BT_OK && (probe.n_states < 1 || probe.n_states > BT_MAX_STATES))
        return bt_error(err, errlen, declared, "%s", why); /* not a memory limit: the cell's word */
    char name[BT_NAME_LEN + 16];
    int64_t shape[BT_MAX_DIMS], total = 0;
    int params = 0;
    for (int i = 0; i < probe.n_params; i++) {
        int64_t size = 1;
        for (int d = 0; d < probe.specs[i].ndim; d++)
            size *= shape[d] = probe.specs[i].shape[d];
        total += size;
        snprintf(name, sizeof name, "param.%s", probe.specs[i].name);
        if (misfit(c, name, probe.specs[i].ndim, shape, err, errlen))
            return BT_ERR_FORMAT;
    }
    for (int i = 0; i < bt_st_count(c->file); i++) {
        const char *t = bt_st_at(c->file, i)->name;
        params += strncmp(t, "param.", 6) == 0;
        if (strncmp(t, "opt.", 4) == 0 && misfit(c, t, 1, &total, err, errlen))
            return BT_ERR_FORMAT;
    }
    if (params != probe.n_params)
        return bt_error(err, errlen, BT_ERR_FORMAT, "checkpoint %s has %d param.* tensors; cell %s "
                        "has %d parameters: the file is damaged, or not of this cell", c->path,
                        params, cell->name, probe.n_params);
    for (int k = 0; k < probe.n_states; k++) {
        snprintf(name, sizeof name, "state.%d", k);
        if (misfit(c, name, 2, (int64_t[]){c->cfg.batch, probe.state_width[k]}, err, errlen))
            return BT_ERR_FORMAT;
    }
    return declared == BT_OK ? BT_OK : bt_error(err, errlen, declared, "%s", why);
}

/* The cell of c, registered in reg; NULL with the message otherwise. */
static const bt_cell_def *cell_of(const bt_checkpoint *c, const bt_registry *reg, char *err,
                                  size_t errlen)
{
    const bt_cell_def *cell = bt_registry_cell(reg, c->cfg.cell);
    char known[512];
    if (!cell)
        bt_error(err, errlen, BT_ERR_NOT_FOUND, "checkpoint %s uses cell '%s', which is not "
                 "registered (known: %s): load the plugin that provides it with --plugin PATH",
                 c->path, c->cfg.cell, bt_registry_names(reg, BT_KIND_CELL, known, sizeof known));
    return cell;
}

bt_status bt_checkpoint_model(const bt_checkpoint *c, const bt_registry *reg, bt_model **out,
                              char *err, size_t errlen)
{
    *out = NULL;
    const bt_cell_def *cell = cell_of(c, reg, err, errlen);
    if (!cell)
        return BT_ERR_NOT_FOUND;
    const bt_lm_config *cfg = &c->cfg;
    bool stack = is_stack(cfg);
    bt_status st = is_stack(&c->cfg) ? check_stack_shapes(c, reg, err, errlen)
                                     : check_shapes(c, cell, err, errlen);
    if (st != BT_OK)
        return st;
    bt_cell_dims dims = {c->input_size, c->cfg.hidden, c->output_size};
    bt_model *m;
    /* A stack's layers are checked by the model and each tensor by load_params. */
    st = stack ? bt_model_from_arch(reg, cfg->layers, cfg->cell, cfg->hidden, cfg->dropout,
                                    cfg->variational, dims.input, dims.output, &m, err, errlen)
               : bt_model_new(cell, dims, &m, err, errlen);
    if (st != BT_OK)
        return st;
    if ((st = load_params(c, m, err, errlen)) != BT_OK) {
        bt_model_free(m);
        return st;
    }
    *out = m;
    return BT_OK;
}

/* The per-epoch history into the run, with its counters. */
static bt_status restore_history(const bt_checkpoint *c, bt_lm *lm, char *err, size_t errlen)
{
    bt_source *src = bt_lm_source(lm);
    const bt_st_tensor *h = bt_st_find(c->file, "history");
    if (!h || h->dtype != BT_ST_F64 || h->ndim != 2 || h->shape[1] != HIST_COLS ||
        h->shape[0] > c->epoch)
        return bt_error(err, errlen, BT_ERR_FORMAT, "checkpoint %s: tensor 'history' is missing or "
                    "is not [epochs <= %d, %d] F64", c->path, c->epoch, HIST_COLS);
    int n = (int)h->shape[0];
    bt_lm_epoch *rows = bt_calloc((size_t)(n ? n : 1), sizeof *rows);
    if (!rows)
        return bt_error(err, errlen, BT_ERR_NOMEM, "out of memory");
    const double *v = h->data;
    for (int i = 0; i < n; i++, v += HIST_COLS) {
        bt_lm_epoch *e = &rows[i];
        e->epoch = to_int(v[0]), e->train_loss = v[1], e->val_loss = v[2];
        e->train_ppl = src->tokens_out ? exp(v[1]) : NAN;
        e->val_ppl = src->tokens_out ? exp(v[2]) : NAN;
        e->tokens_per_s = v[3], e->grad_norm_mean = v[4], e->grad_norm_max = v[5];
        e->updates = to_int(v[6]), e->skipped = to_int(v[7]), e->seconds = v[8], e->elapsed = v[9];
        e->peak_arena = v[10] >= 0 && v[10] < 1e18 ? (size_t)v[10] : 0;
    }
    bt_status st = bt_lm_set_progress(lm, c->epoch, c->updates, rows, n, err, errlen);
    bt_free(rows);
    return st;
}

/* The run is of c's kind: its task or a text of its vocabulary, its sizes. */
static bt_status check_run_fits(const bt_checkpoint *c, bt_lm *lm, char *err, size_t errlen)
{
    bt_source *src = bt_lm_source(lm);
    const bt_lm_config *cfg = bt_lm_config_of(lm);
    bool src_task = src->name && bt_task_spec_is_task(src->name);
    if ((c->task[0] || src_task) && strcmp(c->task, src_task ? src->name : "") != 0)
        return bt_error(err, errlen, BT_ERR_ARG, "checkpoint %s was trained on %s%s, but this run "
                    "reads %s%s: resume on the %s it was trained on", c->path,
                    c->task[0] ? "task " : "a text", c->task, src_task ? "task " : "a text",
                    src_task ? src->name : "", c->task[0] ? "task" : "text");
    if (c->vocab && src->vocab && !bt_vocab_equal(c->vocab, src->vocab))
        return bt_error(err, errlen, BT_ERR_ARG, "checkpoint %s: its vocabulary (%d tokens) is not "
                    "the one of this text (%d tokens): resume on the text the model was "
                    "trained on%s%s%s", c->path, bt_vocab_size(c->vocab),
                    bt_vocab_size(src->vocab), c->data[0] ? " (" : "", c->data,
                    c->data[0] ? ")" : "");
    if (cfg->batch != c->cfg.batch || cfg->steps != c->cfg.steps)
        return bt_error(err, errlen, BT_ERR_FORMAT, "checkpoint %s: batch %d x %d steps, but the "
                        "run has %d x %d (a task whose length is not the checkpoint's?)", c->path,
                        c->cfg.batch, c->cfg.steps, cfg->batch, cfg->steps);
    return BT_OK;
}

bt_status bt_checkpoint_restore(const bt_checkpoint *c, bt_lm *lm, char *err, size_t errlen)
{
    bt_model *m = bt_lm_model(lm);
    bt_optimizer *o = bt_lm_optimizer(lm);
    const bt_lm_config *cfg = bt_lm_config_of(lm);
    bt_status st = check_run_fits(c, lm, err, errlen);
    if (st == BT_OK)
        st = load_params(c, m, err, errlen);
    if (st != BT_OK)
        return st;
    char name[32];
    int total = (int)bt_params_total(m->params);
    int n_opt = bt_optimizer_state_count(o);
    for (int i = 0; i < n_opt; i++) {
        snprintf(name, sizeof name, "opt.%d", i);
        if ((st = load_real(c, name, 1, &total, bt_optimizer_state(o, i), err, errlen)) != BT_OK)
            return st;
    }
    snprintf(name, sizeof name, "opt.%d", n_opt);
    if (bt_st_find(c->file, name))
        return bt_error(err, errlen, BT_ERR_FORMAT, "checkpoint %s: it has more optimizer state "
                    "than optimizer %s keeps", c->path, cfg->optimizer);
    bt_optimizer_set_steps(o, c->opt_steps);
    const bt_st_tensor *r = bt_st_find(c->file, "rng");
    if (!r || r->dtype != BT_ST_I64 || r->count != 4)
        return bt_error(err, errlen, BT_ERR_FORMAT, "checkpoint %s: tensor 'rng' is missing or is "
                    "not 4 x I64", c->path);
    memcpy(bt_lm_rng(lm)->s, r->data, sizeof(uint64_t) * 4);
    bt_real *const *state = bt_lm_state(lm);
    for (int k = 0; k < m->n_states; k++) {
        snprintf(name, sizeof name, "state.%d", k);
        int shape[2] = {cfg->batch, m->state_width[k]};
        if ((st = load_real(c, name, 2, shape, state[k], err, errlen)) != BT_OK)
            return st;
    }
    if ((st = load_estimator(c, lm, err, errlen)) != BT_OK)
        return st;
    if ((st = restore_history(c, lm, err, errlen)) != BT_OK)
        return st;
    return bt_lm_position_set(lm, &c->position, err, errlen); /* after the RNG: it checks the replay */
}

/* ---- what a resumed run may change ---------------------------------------------- */

/* Same optimizer settings written two ways ("sgd:1" and "sgd:lr=1")? Made on a one-value block. */
static bool same_optimizer(const bt_registry *r, const char *a, const char *b)
{
    if (strcmp(a, b) == 0)
        return true;
    bt_params *p = bt_params_new();
    bt_optimizer *oa = NULL, *ob = NULL;
    char ea[256], eb[256], da[256] = "a", db[256] = "b";
    if (p && bt_params_add(p, "x", 1, (int[]){1}) && bt_params_finalize(p) == BT_OK &&
        bt_optimizer_new(r, a, p, &oa, ea, sizeof ea) == BT_OK &&
        bt_optimizer_new(r, b, p, &ob, eb, sizeof eb) == BT_OK) {
        bt_optimizer_describe(oa, da, sizeof da);
        bt_optimizer_describe(ob, db, sizeof db);
    }
    bt_optimizer_free(oa);
    bt_optimizer_free(ob);
    bt_params_free(p);
    return strcmp(da, db) == 0;
}

/* The same for truncation policies, through their canonical descriptions. */
static bool same_policy(const bt_registry *r, const char *a, const char *b)
{
    if (strcmp(a, b) == 0)
        return true;
    char d[2][256] = {"a", "b"};
    const char *spec[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        char name[BT_NAME_LEN + 1], err[256];
        const char *opts;
        bt_split_spec(spec[i], name, sizeof name, &opts);
        const bt_policy_def *def = bt_registry_policy(r, name);
        void *st = NULL;
        if (!def || bt_policy_create(def, opts, &st, err, sizeof err) != BT_OK)
            return false;
        if (!bt_policy_describe(def, st, d[i], sizeof d[i]))
            snprintf(d[i], sizeof d[i], "%c", 'a' + i); /* no description: never equal */
        def->destroy(st);
    }
    return strcmp(d[0], d[1]) == 0;
}

/* The same estimator spec, its options after a ':' or a ',' ("uoro:seed=3",
 * "uoro,seed=3"); NULL is "" (none: BPTT). */
static bool same_estimator(const char *a, const char *b)
{
    a = a ? a : "", b = b ? b : "";
    size_t na = strcspn(a, ":,"), nb = strcspn(b, ":,");
    return na == nb && strncmp(a, b, na) == 0 && !a[na] == !b[nb] &&
           (!a[na] || strcmp(a + na + 1, b + nb + 1) == 0);
}

/* Does setting s of u agree with the checkpoint's c? Its value in c as text into theirs. */
static bool same_setting(const bt_registry *r, bt_lm_setting s, const bt_lm_config *u,
                         const bt_lm_config *c, char *theirs, size_t len)
{
    switch (s) {
    case BT_LM_CELL: snprintf(theirs, len, "%s", c->cell); return !strcmp(u->cell, c->cell);
    case BT_LM_HIDDEN: snprintf(theirs, len, "%d", c->hidden); return u->hidden == c->hidden;
    case BT_LM_BATCH: snprintf(theirs, len, "%d", c->batch); return u->batch == c->batch;
    case BT_LM_STEPS: snprintf(theirs, len, "%d", c->steps); return u->steps == c->steps;
    case BT_LM_OPTIMIZER:
        snprintf(theirs, len, "%s", c->optimizer);
        return same_optimizer(r, u->optimizer, c->optimizer);
    case BT_LM_CLIP: snprintf(theirs, len, "%g", c->clip); return u->clip == c->clip;
    case BT_LM_TRUNCATION:
        snprintf(theirs, len, "%s", c->truncation);
        return same_policy(r, u->truncation, c->truncation);
    case BT_LM_INIT:
        snprintf(theirs, len, "'%s'", c->init ? c->init : "");
        return !strcmp(u->init ? u->init : "", c->init ? c->init : "");
    case BT_LM_SEED:
        snprintf(theirs, len, "%llu", (unsigned long long)c->seed);
        return u->seed == c->seed;
    case BT_LM_TOKENS:
        snprintf(theirs, len, "%s", bt_tokens_kind_name(c->tokens));
        return u->tokens == c->tokens;
    case BT_LM_SAMPLING:
        snprintf(theirs, len, "%s", c->sampling == BT_BATCH_RANDOM ? "random" : "sequential");
        return u->sampling == c->sampling;
    case BT_LM_MAX_TOKENS:
        snprintf(theirs, len, "%ld", c->max_tokens);
        return u->max_tokens == c->max_tokens;
    case BT_LM_VAL_FRACTION:
        snprintf(theirs, len, "%g", c->val_fraction);
        return u->val_fraction == c->val_fraction;
    case BT_LM_LAYERS:
        snprintf(theirs, len, "'%s'", c->layers);
        return !strcmp(u->layers, c->layers);
    case BT_LM_DROPOUT:
        snprintf(theirs, len, "%g%s", c->dropout, c->variational ? " (variational)" : "");
        return u->dropout == c->dropout && u->variational == c->variational;
    case BT_LM_ESTIMATOR:
        snprintf(theirs, len, "%s", bt_lm_config_online(c) ? c->estimator : "(none: BPTT)");
        return same_estimator(u->estimator, c->estimator);
    case BT_LM_UPDATE_EVERY:
        snprintf(theirs, len, "%d", c->update_every);
        return u->update_every == c->update_every;
    case BT_LM_CHECKPOINT: /* how backward runs: a resume may change it */
    case BT_LM_MEMORY_BUDGET:
    case BT_LM_SETTING_COUNT: break;
    }
    return true;
}

bt_status bt_checkpoint_check_resume(const bt_checkpoint *c, const bt_registry *reg,
                                     const bt_lm_given *given, const char **data,
                                     const char **task, bt_lm_config *run, char *err,
                                     size_t errlen)
{
    char theirs[300];
    const bt_cell_def *cell = cell_of(c, reg, err, errlen);
    if (!cell)
        return BT_ERR_NOT_FOUND;
    bt_status st = is_stack(&c->cfg) ? check_stack_shapes(c, reg, err, errlen)
                                     : check_shapes(c, cell, err, errlen);
    if (st != BT_OK)
        return st;
    for (int s = 0; s < BT_LM_SETTING_COUNT; s++) {
        if (!given->given[s] || same_setting(reg, s, &given->cfg, &c->cfg, theirs, sizeof theirs))
            continue;
        const char *name = bt_lm_setting_name(s);
        return bt_error(err, errlen, BT_ERR_ARG,
                        "--%s %s conflicts with the checkpoint's %s %s: a resumed run keeps the "
                        "settings it was started with (drop --%s, or start a new run without "
                        "--resume)", name, given->raw[s], name, theirs, name);
    }
    /* A task checkpoint resumes on its task; a text one on a text. */
    if ((c->task[0] && *data) || (*task && strcmp(*task, c->task) != 0))
        return bt_error(err, errlen, BT_ERR_ARG,
                        "--%s %s conflicts with the checkpoint, which was trained on %s%s: drop "
                        "--%s (a resumed run keeps its data)", *data ? "data" : "task",
                        *data ? *data : *task, c->task[0] ? "task " : "a text", c->task,
                        *data ? "data" : "task");
    if (c->task[0])
        *task = c->task;
    else if (!*data)
        *data = c->data[0] ? c->data : NULL;
    /* Either of the two given: both as a fresh run would take them (a budget
     * alone means no fixed spacing), else both stored. */
    *run = c->cfg;
    if (given->given[BT_LM_CHECKPOINT] || given->given[BT_LM_MEMORY_BUDGET]) {
        run->checkpoint_every = given->cfg.checkpoint_every;
        run->memory_budget_mb = given->cfg.memory_budget_mb;
    }
    return BT_OK;
}
