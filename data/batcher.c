/* batcher.c: d2l's seq_data_iter_sequential and seq_data_iter_random over a
 * range of token ids (batcher.h), with the epoch offset and shuffle drawn from
 * the run's RNG so that a resumed run draws the same.
 *
 * Dimension letters: B rows (batch), T steps. */
#include "batcher.h"

struct bt_batcher {
    const int32_t *ids; /* [n], the range's first token */
    long n;
    int B, T;
    bt_batch_mode mode;
    int offset;     /* this epoch's skipped prefix */
    long row_len;   /* sequential: tokens per row this epoch */
    long *starts;   /* random: [n / T] subsequence starts (after the offset), in visiting order */
    long nsub;      /* random: subsequences this epoch */
    int count, next;
};

/* Uniform in [0, k), k >= 1: rejection removes the modulo bias. */
static uint64_t rand_below(bt_rng *rng, uint64_t k)
{
    uint64_t lim = UINT64_MAX - UINT64_MAX % k, x;
    do
        x = bt_rng_next(rng);
    while (x >= lim);
    return x % k;
}

static void batcher_setup(bt_batcher *b, int offset, bt_rng *rng)
{
    long n = b->n - offset;
    b->offset = offset;
    b->next = 0;
    if (b->mode == BT_BATCH_SEQUENTIAL) {
        /* num_tokens = ((len - offset - 1) // B) * B; Xs.reshape(B, -1) */
        b->row_len = (n - 1) / b->B;
        b->count = (int)(b->row_len / b->T);
    } else {
        b->nsub = (n - 1) / b->T;
        for (long k = 0; k < b->nsub; k++)
            b->starts[k] = k * b->T;
        if (rng) /* Fisher-Yates from the end, as Python's random.shuffle */
            for (long k = b->nsub - 1; k > 0; k--) {
                long j = (long)rand_below(rng, (uint64_t)k + 1);
                long t = b->starts[k]; b->starts[k] = b->starts[j]; b->starts[j] = t;
            }
        b->count = (int)(b->nsub / b->B);
    }
}

bt_status bt_batcher_new(const int32_t *ids, long begin, long end, int B, int T, bt_batch_mode mode,
                         bt_batcher **out, char *err, size_t errlen)
{
    if (!ids || !out)
        return bt_error(err, errlen, BT_ERR_ARG, "bt_batcher_new: NULL argument");
    *out = NULL;
    if (B < 1 || T < 1)
        return bt_error(err, errlen, BT_ERR_ARG, "batch %d x %d steps: both must be at least 1", B, T);
    if (begin < 0 || end < begin)
        return bt_error(err, errlen, BT_ERR_ARG, "bad token range [%ld, %ld)", begin, end);
    if (mode != BT_BATCH_SEQUENTIAL && mode != BT_BATCH_RANDOM)
        return bt_error(err, errlen, BT_ERR_ARG, "unknown batch mode %d", (int)mode);
    long n = end - begin;
    /* Every epoch must yield a minibatch, so size for the largest offset:
     * sequential T, which leaves (n - T - 1) / B >= T per row; random T - 1,
     * which leaves (n - T) / T >= B subsequences. */
    long long need = (long long)(B + 1) * T + (mode == BT_BATCH_SEQUENTIAL ? 1 : 0);
    if ((long long)n < need)
        return bt_error(err, errlen, BT_ERR_SHAPE,
                    "the text has %ld tokens: too few for batch %d x %d steps (%s batching needs "
                    "at least %lld); use --batch/--steps smaller or a longer text",
                    n, B, T, mode == BT_BATCH_SEQUENTIAL ? "sequential" : "random", need);
    if ((n - 1) / ((long long)B * T) > 0x7fffffff)
        return bt_error(err, errlen, BT_ERR_ARG,
                    "the text has %ld tokens: more than 2^31 minibatches of %d x %d; use larger "
                    "batches or --max-tokens", n, B, T);
    bt_batcher *b = bt_calloc(1, sizeof *b);
    if (!b)
        return bt_error(err, errlen, BT_ERR_NOMEM, "out of memory making a batcher");
    b->ids = ids + begin;
    b->n = n;
    b->B = B;
    b->T = T;
    b->mode = mode;
    if (mode == BT_BATCH_RANDOM) {
        b->starts = bt_malloc((size_t)(n / T + 1) * sizeof *b->starts);
        if (!b->starts) {
            bt_free(b);
            return bt_error(err, errlen, BT_ERR_NOMEM, "out of memory making a batcher");
        }
    }
    batcher_setup(b, 0, NULL);
    *out = b;
    return BT_OK;
}

void bt_batcher_epoch(bt_batcher *b, bt_rng *rng)
{
    /* d2l: random.randint(0, num_steps) for sequential (inclusive), and
     * random.randint(0, num_steps - 1) for random sampling. */
    int span = b->mode == BT_BATCH_SEQUENTIAL ? b->T + 1 : b->T;
    int offset = rng ? (int)rand_below(rng, (uint64_t)span) : 0;
    batcher_setup(b, offset, rng);
}

bt_status bt_batcher_epoch_at(bt_batcher *b, int offset, bt_rng *rng, char *err, size_t errlen)
{
    int max = b->mode == BT_BATCH_SEQUENTIAL ? b->T : b->T - 1;
    if (offset < 0 || offset > max)
        return bt_error(err, errlen, BT_ERR_ARG, "epoch offset %d is outside [0, %d]", offset, max);
    batcher_setup(b, offset, rng);
    return BT_OK;
}

int bt_batcher_offset(const bt_batcher *b) { return b->offset; }
int bt_batcher_count(const bt_batcher *b) { return b->count; }

bool bt_batcher_next(bt_batcher *b, int32_t *X, int32_t *Y)
{
    if (b->next >= b->count)
        return false;
    const int B = b->B, T = b->T;
    const int32_t *ids = b->ids + b->offset;
    for (int r = 0; r < B; r++) {
        /* Row r of batch i: sequential, columns [i*T, i*T + T) of Xs row r;
         * random, the (i*B + r)-th subsequence in this epoch's order. */
        long base = b->mode == BT_BATCH_SEQUENTIAL ? r * b->row_len + (long)b->next * T
                                                   : b->starts[(long)b->next * B + r];
        for (int t = 0; t < T; t++) {
            if (X)
                X[r * T + t] = ids[base + t];
            if (Y)
                Y[r * T + t] = ids[base + t + 1];
        }
    }
    b->next++;
    return true;
}

void bt_batcher_free(bt_batcher *b)
{
    if (!b)
        return;
    bt_free(b->starts);
    bt_free(b);
}
