/* tasks.c: the generated long-range tasks (adding, copy, influence balancing)
 * behind the bt_source interface. Every minibatch is drawn fresh from the
 * task's own RNG; validation minibatch i is drawn from a seed derived from the
 * task seed and i, so it is the same in every epoch and every run.
 *
 * Dimension letters: B rows, T steps, D input size, Q output size, V vocabulary. */
#include <stdio.h>
#include <string.h>

#include "options.h"
#include "tasks.h"

enum { TASK_ADDING, TASK_COPY, TASK_INFLUENCE };
enum { N_VALID = 4 }; /* validation minibatches of the tasks with held-out draws */
enum { TASK_MAX_VALUES = 1 << 28 }; /* per minibatch buffer: 1 GB of float */

typedef struct task {
    int kind;
    int B, T;        /* T is the sequence length the source reports */
    int D, Q, V;     /* D: real input width, Q: real output width, V: vocabulary (copy) */
    int len, k;      /* adding: len = T; copy: len = T blanks, k symbols; influence: N, P */
    int alphabet;
    int batches, pos;
    uint64_t seed;
    bt_rng rng;
    int32_t *ids, *targets; /* [B*T] */
    bt_real *x, *y;         /* [B*T*D], [B*T*Q] */
    bt_real *weight;        /* [T] */
    char *name;             /* the spec as given, whatever its length: it recreates the task */
} task;

/* One minibatch of the task from rng into the task's buffers. */
static void generate(task *k, bt_rng *rng, bt_sequence *seq)
{
    int B = k->B, T = k->T;
    *seq = (bt_sequence){.B = B, .T = T};
    switch (k->kind) {
    case TASK_ADDING: {
        /* x[b,t] = (value, marker); y only at the last step. */
        memset(k->y, 0, sizeof(bt_real) * (size_t)B * T);
        for (int b = 0; b < B; b++) {
            bt_real *xb = k->x + (size_t)b * T * 2;
            for (int t = 0; t < T; t++) {
                xb[2 * t] = (bt_real)bt_rng_uniform(rng);
                xb[2 * t + 1] = 0;
            }
            int half = T / 2;
            int m1 = (int)(bt_rng_next(rng) % (uint64_t)half);
            int m2 = half + (int)(bt_rng_next(rng) % (uint64_t)(T - half));
            xb[2 * m1 + 1] = 1;
            xb[2 * m2 + 1] = 1;
            k->y[(size_t)b * T + T - 1] = xb[2 * m1] + xb[2 * m2];
        }
        for (int t = 0; t < T; t++)
            k->weight[t] = t == T - 1;
        seq->x = k->x;
        seq->y = k->y;
        seq->loss_weight = k->weight;
        break;
    }
    case TASK_COPY: {
        /* K symbols | len blanks | delimiter | K blanks; targets are blanks
         * except on the last K steps, which must repeat the symbols. */
        int K = k->k, A = k->alphabet, blank = bt_copy_blank(A), delim = bt_copy_delimiter(A);
        int out0 = K + k->len + 1;
        for (int b = 0; b < B; b++) {
            int32_t *ib = k->ids + (size_t)b * T, *tb = k->targets + (size_t)b * T;
            for (int t = 0; t < T; t++) {
                ib[t] = t < K ? (int32_t)(bt_rng_next(rng) % (uint64_t)A) : blank;
                tb[t] = blank;
            }
            ib[out0 - 1] = delim;
            for (int j = 0; j < K; j++)
                tb[out0 + j] = ib[j];
        }
        for (int t = 0; t < T; t++)
            k->weight[t] = t >= out0;
        seq->ids = k->ids;
        seq->targets = k->targets;
        seq->loss_weight = k->weight;
        break;
    }
    case TASK_INFLUENCE: /* constant: zero inputs, target 1 everywhere, every step weighs 1 */
        memset(k->x, 0, sizeof(bt_real) * (size_t)B * T * k->D);
        for (size_t i = 0; i < (size_t)B * T; i++)
            k->y[i] = 1;
        seq->x = k->x;
        seq->y = k->y;
        break;
    }
}

static void task_epoch(void *ctx, bt_rng *rng)
{
    task *k = ctx;
    bt_rng_seed(&k->rng, bt_rng_next(rng));
    k->pos = 0;
}

static int task_count(void *ctx) { return ((task *)ctx)->batches; }

static bool task_next(void *ctx, bt_sequence *seq)
{
    task *k = ctx;
    if (k->pos >= k->batches)
        return false;
    k->pos++;
    generate(k, &k->rng, seq);
    return true;
}

static bool task_validation(void *ctx, int i, bt_sequence *seq)
{
    task *k = ctx;
    /* Influence balancing has no held-out data: the stream is the task. */
    if (k->kind == TASK_INFLUENCE || i < 0 || i >= N_VALID)
        return false;
    bt_rng r;
    bt_rng_seed(&r, k->seed * 0x9e3779b97f4a7c15ULL + 0x5eed0000ULL + (uint64_t)i);
    generate(k, &r, seq);
    return true;
}

static void task_destroy(void *ctx)
{
    task *k = ctx;
    if (!k)
        return;
    bt_free(k->ids);
    bt_free(k->x);
    bt_free(k->y);
    bt_free(k->weight);
    bt_free(k->name);
    bt_free(k);
}

bool bt_task_spec_is_task(const char *spec)
{
    if (!spec)
        return false;
    char name[32];
    const char *opts;
    bt_split_spec(spec, name, sizeof name, &opts);
    return strcmp(name, "adding") == 0 || strcmp(name, "copy") == 0 ||
           strcmp(name, "influence") == 0;
}

/* Each task's options into k (kind and sizes) and *batches; BT_OK, or
 * BT_ERR_ARG with a message naming the spec. */
static bt_status parse_adding(task *k, const char *opts, const char *what, double *batches,
                              char *err, size_t errlen)
{
    double a = 0;
    bt_option o[] = {
        {.name = "T", .value = &a, .min = 2, .max = 1e6, .integer = true, .positional = true,
         .required = true},
        {.name = "batches", .value = batches, .min = 1, .max = 1e9, .integer = true},
    };
    bt_status rc = bt_parse_options(opts, o, 2, what, err, errlen);
    k->kind = TASK_ADDING;
    k->T = k->len = (int)a;
    k->D = 2;
    k->Q = 1;
    return rc;
}

static bt_status parse_copy(task *k, const char *opts, const char *what, double *batches,
                            char *err, size_t errlen)
{
    double a = 0, b = 0, alphabet = 8;
    bt_option o[] = {
        {.name = "T", .value = &a, .min = 0, .max = 1e6, .integer = true, .positional = true,
         .required = true},
        {.name = "K", .value = &b, .min = 1, .max = 1e5, .integer = true, .positional = true,
         .required = true},
        {.name = "alphabet", .value = &alphabet, .min = 2, .max = 1e4, .integer = true},
        {.name = "batches", .value = batches, .min = 1, .max = 1e9, .integer = true},
    };
    bt_status rc = bt_parse_options(opts, o, 4, what, err, errlen);
    k->kind = TASK_COPY;
    k->len = (int)a;
    k->k = (int)b;
    k->alphabet = (int)alphabet;
    k->V = k->alphabet + 2;
    k->T = 2 * k->k + k->len + 1;
    return rc;
}

static bt_status parse_influence(task *k, const char *opts, const char *what, double *batches,
                                 char *err, size_t errlen)
{
    double a = 0, b = 0, len = 200;
    *batches = 50;
    bt_option o[] = {
        {.name = "N", .value = &a, .min = 1, .max = 1e5, .integer = true, .positional = true,
         .required = true},
        {.name = "P", .value = &b, .min = 1, .max = 1e5, .integer = true, .positional = true,
         .required = true},
        {.name = "len", .value = &len, .min = 1, .max = 1e6, .integer = true},
        {.name = "batches", .value = batches, .min = 1, .max = 1e9, .integer = true},
    };
    bt_status rc = bt_parse_options(opts, o, 4, what, err, errlen);
    if (rc == BT_OK && b > a) {
        snprintf(err, errlen, "task influence:%g,%g: P (positive signs) must be at most N", a, b);
        rc = BT_ERR_ARG;
    }
    k->kind = TASK_INFLUENCE;
    k->len = (int)a;
    k->k = (int)b;
    k->T = (int)len;
    k->D = k->k;
    k->Q = 1;
    return rc;
}

/* The minibatch buffers: ids and targets for copy, real x and y otherwise. */
static bool task_buffers(task *k)
{
    size_t bt = (size_t)k->B * (size_t)k->T;
    if (k->kind == TASK_COPY)
        k->ids = bt_malloc(sizeof(int32_t) * bt * 2);
    else {
        k->x = bt_malloc(sizeof(bt_real) * bt * (size_t)k->D);
        k->y = bt_malloc(sizeof(bt_real) * bt * (size_t)k->Q);
    }
    k->weight = bt_malloc(sizeof(bt_real) * (size_t)k->T);
    k->targets = k->ids ? k->ids + bt : NULL;
    return (k->kind == TASK_COPY ? k->ids != NULL : (k->x && k->y)) && k->weight;
}

bt_status bt_task_source_new(const char *spec, int B, uint64_t seed, bt_source *out, char *err,
                             size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!spec || B <= 0) {
        snprintf(err, errlen, "task: needs a spec and a positive batch size");
        return BT_ERR_ARG;
    }
    char name[32];
    const char *opts;
    bt_split_spec(spec, name, sizeof name, &opts);
    double batches = 100;
    task *k = bt_calloc(1, sizeof *k);
    if (!k)
        return BT_ERR_NOMEM;
    char what[64];
    snprintf(what, sizeof what, "task %s", name);
    bt_status rc = BT_ERR_ARG;
    if (strcmp(name, "adding") == 0)
        rc = parse_adding(k, opts, what, &batches, err, errlen);
    else if (strcmp(name, "copy") == 0)
        rc = parse_copy(k, opts, what, &batches, err, errlen);
    else if (strcmp(name, "influence") == 0)
        rc = parse_influence(k, opts, what, &batches, err, errlen);
    else
        snprintf(err, errlen,
                 "unknown task '%s': use adding:T, copy:T,K or influence:N,P (or a text file "
                 "with --data)",
                 spec);
    if (rc != BT_OK) {
        bt_free(k);
        return BT_ERR_ARG;
    }
    /* The buffers of one minibatch, per value: B x T x the widest of input
     * and output. A spec asking for more is refused by name, not left to an
     * allocation that would fail, or succeed and exhaust memory later. */
    size_t width = k->kind == TASK_COPY ? 2 : (size_t)(k->D > k->Q ? k->D : k->Q);
    if ((double)B * k->T * (double)width > TASK_MAX_VALUES) {
        snprintf(err, errlen, "task %s: a minibatch of %d x %d steps x %zu values is too large "
                 "(at most %d values): use a smaller batch or a shorter task", spec, B, k->T,
                 width, TASK_MAX_VALUES);
        bt_free(k);
        return BT_ERR_ARG;
    }
    k->B = B;
    k->batches = (int)batches;
    k->seed = seed;
    bt_rng_seed(&k->rng, seed);
    size_t len = strlen(spec) + 1;
    if (!task_buffers(k) || !(k->name = bt_malloc(len))) {
        snprintf(err, errlen, "task %s: out of memory for %d x %d steps", spec, B, k->T);
        task_destroy(k); /* after the message, which reads k->T */
        return BT_ERR_NOMEM;
    }
    memcpy(k->name, spec, len); /* as given: it recreates the task */
    *out = (bt_source){
        .name = k->name,
        .tokens_in = k->kind == TASK_COPY,
        .tokens_out = k->kind == TASK_COPY,
        .input_size = k->kind == TASK_COPY ? k->V : k->D,
        .output_size = k->kind == TASK_COPY ? k->V : k->Q,
        .B = B,
        .T = k->T,
        .carry_state = k->kind == TASK_INFLUENCE,
        .val_carry_state = false, /* held-out draws are independent sequences */
        .vocab = NULL,
        .epoch = task_epoch,
        .count = task_count,
        .next = task_next,
        .validation = task_validation,
        .destroy = task_destroy,
        .ctx = k,
    };
    return BT_OK;
}
