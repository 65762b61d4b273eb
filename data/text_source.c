/* text_source.c: a bt_corpus presented as a bt_source. Training batches come
 * from a bt_batcher over the first part of the ids; validation walks the held
 * out end of the text in vB rows with the state carried, so every held-out
 * token but the last few of each row is scored once.
 *
 * Dimension letters: B rows, T steps, vB validation rows. */
#include <stdio.h>
#include <string.h>

#include "text_source.h"

typedef struct text_source {
    const bt_corpus *c;
    bt_batcher *batcher;
    int B, T;
    long n_train, n_val;
    int32_t *X, *Y;    /* [B*T] the current training minibatch */
    /* Validation: ids[n_train, n) as vB rows of val_row tokens (plus a target). */
    int vB;
    long val_row;
    int val_count;     /* minibatches; the last may have fewer than T steps */
    int32_t *vX, *vY;  /* [vB*T] */
    char name[64];
} text_source;

static void ts_epoch(void *ctx, bt_rng *rng)
{
    text_source *s = ctx;
    bt_batcher_epoch(s->batcher, rng);
}

static int ts_count(void *ctx) { return bt_batcher_count(((text_source *)ctx)->batcher); }

static bool ts_next(void *ctx, bt_sequence *seq)
{
    text_source *s = ctx;
    if (!bt_batcher_next(s->batcher, s->X, s->Y))
        return false;
    *seq = (bt_sequence){.B = s->B, .T = s->T, .ids = s->X, .targets = s->Y};
    return true;
}

/* Batch i covers columns [i*T, i*T + Ti) of each validation row. */
static bool ts_validation(void *ctx, int i, bt_sequence *seq)
{
    text_source *s = ctx;
    if (i < 0 || i >= s->val_count)
        return false;
    long col = (long)i * s->T;
    int Ti = (int)(s->val_row - col < s->T ? s->val_row - col : s->T);
    const int32_t *ids = s->c->ids + s->n_train;
    for (int r = 0; r < s->vB; r++)
        for (int t = 0; t < Ti; t++) {
            long at = (long)r * s->val_row + col + t;
            s->vX[r * Ti + t] = ids[at];
            s->vY[r * Ti + t] = ids[at + 1];
        }
    *seq = (bt_sequence){.B = s->vB, .T = Ti, .ids = s->vX, .targets = s->vY};
    return true;
}

static void ts_destroy(void *ctx)
{
    text_source *s = ctx;
    if (!s)
        return;
    bt_batcher_free(s->batcher);
    bt_free(s->X);
    bt_free(s->vX);
    bt_free(s);
}

bt_status bt_text_source_new(const bt_corpus *c, int B, int T, bt_batch_mode mode,
                             double val_fraction, bt_source *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!c || !c->vocab) {
        snprintf(err, errlen, "text source: no corpus");
        return BT_ERR_ARG;
    }
    if (!(val_fraction >= 0 && val_fraction <= 0.5)) {
        snprintf(err, errlen, "--val-fraction %g: expected a number in [0, 0.5]", val_fraction);
        return BT_ERR_ARG;
    }
    if (B < 1 || T < 1) {
        snprintf(err, errlen, "--batch %d, --steps %d: both must be at least 1", B, T);
        return BT_ERR_ARG;
    }
    text_source *s = bt_calloc(1, sizeof *s);
    if (!s)
        return BT_ERR_NOMEM;
    s->c = c;
    s->B = B;
    s->T = T;
    s->n_val = (long)((double)c->n * val_fraction);
    if (val_fraction > 0 && s->n_val < 2) {
        snprintf(err, errlen, "--val-fraction %g of %ld tokens leaves %ld for validation: "
                 "use a larger fraction or a longer text", val_fraction, c->n, s->n_val);
        ts_destroy(s);
        return BT_ERR_SHAPE;
    }
    s->n_train = c->n - s->n_val;
    bt_status st = bt_batcher_new(c->ids, 0, s->n_train, B, T, mode, &s->batcher, err, errlen);
    if (st != BT_OK) {
        if (s->n_val > 0) { /* say that the held-out part counts too */
            size_t used = strlen(err);
            snprintf(err + used, errlen > used ? errlen - used : 0,
                     " (%ld of %ld tokens are held out by --val-fraction)", s->n_val, c->n);
        }
        ts_destroy(s);
        return st;
    }
    if (s->n_val > 0) {
        long steps = s->n_val - 1; /* the last token is only a target */
        s->vB = (int)(steps / T < B ? steps / T : B);
        if (s->vB < 1)
            s->vB = 1;
        s->val_row = steps / s->vB;
        s->val_count = (int)((s->val_row + T - 1) / T);
    }
    s->X = bt_malloc(sizeof(int32_t) * (size_t)B * T * 2);
    s->vX = bt_malloc(sizeof(int32_t) * (size_t)(s->vB > 0 ? s->vB : 1) * T * 2);
    if (!s->X || !s->vX) {
        ts_destroy(s);
        snprintf(err, errlen, "text source: out of memory");
        return BT_ERR_NOMEM;
    }
    s->Y = s->X + (size_t)B * T;
    s->vY = s->vX + (size_t)(s->vB > 0 ? s->vB : 1) * T;
    snprintf(s->name, sizeof s->name, "text:%s", bt_tokens_kind_name(c->kind));

    int V = bt_vocab_size(c->vocab);
    *out = (bt_source){
        .name = s->name,
        .tokens_in = true,
        .tokens_out = true,
        .input_size = V,
        .output_size = V,
        .B = B,
        .T = T,
        .carry_state = mode == BT_BATCH_SEQUENTIAL,
        .val_carry_state = true, /* the held-out text is read once, whatever the sampling */
        .vocab = c->vocab,
        .epoch = ts_epoch,
        .count = ts_count,
        .next = ts_next,
        .validation = ts_validation,
        .destroy = ts_destroy,
        .ctx = s,
    };
    return BT_OK;
}

/* The text source behind s, or NULL when s is another kind of source. */
static const text_source *text_of(const bt_source *s)
{
    return s && s->destroy == ts_destroy ? s->ctx : NULL;
}

long bt_text_source_train_tokens(const bt_source *s) { return text_of(s) ? text_of(s)->n_train : 0; }
long bt_text_source_val_tokens(const bt_source *s) { return text_of(s) ? text_of(s)->n_val : 0; }
