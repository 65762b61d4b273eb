/* cmd_selfcheck.c: `bptt selfcheck`, the first thing to run after building:
 * trains a tiny tanh RNN on a built-in repetitive text (its perplexity must
 * fall below a stated bound) and gradient-checks the cell under full and
 * fixed:2 truncation. The training loop is deliberately minimal (unroller plus
 * an sgd optimizer), so this check depends on nothing but the engine. */
#include <math.h>
#include <string.h>

#include "batcher.h"
#include "bt_clock.h"
#include "cli_cell.h"
#include "corpus.h"
#include "unroll.h"

/* A few sentences repeated: a model that learns anything beats the unigram
 * perplexity (about 14 for this text) by a wide margin. */
static const char *const SENTENCES[] = {
    "the cat sat on the mat. ",
    "a dog ran in the park. ",
    "time flies like an arrow. ",
    "we train the net through time. ",
};
#define TEXT_LEN 2000
#define HIDDEN 32
#define BATCH 8
#define STEPS 16
#define PPL_BOUND 1.5
#define TIME_BUDGET 20 /* seconds: a slow sanitizer build still finishes */
#define MAX_EPOCHS 400

static void make_text(char *buf, size_t len)
{
    size_t u = 0, n = sizeof SENTENCES / sizeof *SENTENCES;
    for (size_t i = 0; u + 1 < len; i++) {
        const char *s = SENTENCES[i % n];
        size_t k = strlen(s);
        if (u + k >= len)
            k = len - 1 - u;
        memcpy(buf + u, s, k);
        u += k;
    }
    buf[u] = '\0';
}

/* Everything the training check owns. */
typedef struct train {
    bt_corpus *corpus;
    bt_model *m;
    bt_batcher *batches;
    bt_unroller *u;
    bt_optimizer *opt;
    cli_policy pol;
} train;

static void train_free(train *t)
{
    cli_policy_free(&t->pol);
    bt_optimizer_free(t->opt);
    bt_unroller_free(t->u);
    bt_batcher_free(t->batches);
    bt_model_free(t->m);
    bt_corpus_free(t->corpus);
}

/* Returns 0 pass, 1 fail, 2 could not run. */
static int check_training(const bt_registry *reg)
{
    static char text[TEXT_LEN + 1];
    make_text(text, sizeof text);
    char err[1024] = "";
    train t = {0};
    int32_t X[BATCH * STEPS], Y[BATCH * STEPS];
    bt_real h[BATCH * HIDDEN] = {0};
    bt_real *state[1] = {h};
    bt_rng rng;
    bt_rng_seed(&rng, 42);
    const bt_cell_def *cell = cli_cell_find(reg, "rnn_tanh", "selfcheck");
    bt_status st = cell ? BT_OK : BT_ERR_NOT_FOUND;
    if (st == BT_OK)
        st = bt_corpus_from_string(text, strlen(text), BT_TOKENS_CHARS, 0, &t.corpus, err, sizeof err);
    int V = st == BT_OK ? bt_vocab_size(t.corpus->vocab) : 0;
    if (st == BT_OK)
        st = bt_model_new(cell, (bt_cell_dims){V, HIDDEN, V}, &t.m, err, sizeof err);
    if (st == BT_OK)
        st = bt_model_init(t.m, NULL, &rng, err, sizeof err);
    if (st == BT_OK)
        st = bt_batcher_new(t.corpus->ids, 0, t.corpus->n, BATCH, STEPS, BT_BATCH_SEQUENTIAL,
                            &t.batches, err, sizeof err);
    if (st == BT_OK)
        st = bt_unroller_new(t.m, BATCH, STEPS, &t.u, err, sizeof err);
    if (st == BT_OK)
        st = bt_optimizer_new(reg, "sgd:lr=1", t.m->params, &t.opt, err, sizeof err);
    if (st == BT_OK && !cli_policy_new(reg, "full", &t.pol, "selfcheck"))
        st = BT_ERR_NOT_FOUND;
    if (st != BT_OK) {
        if (err[0])
            printf("FAIL  training could not start: %s\n", err);
        train_free(&t);
        return 2;
    }
    printf("training rnn_tanh (H=%d, V=%d) on %zu characters of built-in text: B=%d T=%d, "
           "sgd lr=1, clip 1, full BPTT per minibatch, state carried\n",
           HIDDEN, V, strlen(text), BATCH, STEPS);

    bt_unroll_opts opts = {.policy = t.pol.def, .policy_state = t.pol.state,
                           .optimizer = t.opt, .clip = 1};
    double start = bt_monotonic_s(), ppl = INFINITY;
    int epoch = 0;
    while (epoch < MAX_EPOCHS && ppl >= PPL_BOUND && bt_monotonic_s() - start < TIME_BUDGET) {
        bt_batcher_epoch(t.batches, &rng);
        memset(h, 0, sizeof h); /* a new offset: the carried state no longer matches */
        double sum = 0;
        long terms = 0;
        while (bt_batcher_next(t.batches, X, Y)) {
            bt_sequence seq = {.B = BATCH, .T = STEPS, .ids = X, .targets = Y};
            bt_unroll_result res;
            opts.policy_seed = bt_rng_next(&rng);
            st = bt_unroll_run(t.u, &seq, state, &opts, NULL, NULL, NULL, &res, err, sizeof err);
            if (st != BT_OK) {
                printf("FAIL  training: %s\n", err);
                train_free(&t);
                return 1;
            }
            sum += res.loss_sum;
            terms += res.loss_terms;
        }
        epoch++;
        ppl = terms ? exp(sum / (double)terms) : INFINITY;
        if (epoch % 5 == 0 || ppl < PPL_BOUND)
            printf("  epoch %3d  perplexity %7.3f  (%.1f s)\n", epoch, ppl, bt_monotonic_s() - start);
        fflush(stdout);
    }
    bool pass = ppl < PPL_BOUND;
    printf("%s  training: perplexity %.3f %s %.2f after %d epochs (%.1f s)\n",
           pass ? "PASS" : "FAIL", ppl, pass ? "<" : ">=", PPL_BOUND, epoch, bt_monotonic_s() - start);
    train_free(&t);
    return pass ? 0 : 1;
}

static int check_gradients(const bt_registry *reg, const char *spec)
{
    const bt_cell_def *cell = cli_cell_find(reg, "rnn_tanh", "selfcheck");
    cli_policy pol;
    if (!cell || !cli_policy_new(reg, spec, &pol, "selfcheck")) {
        printf("FAIL  gradcheck rnn_tanh under %s: could not run\n", spec);
        return 2;
    }
    cli_check_tol tol = cli_check_tol_default();
    int rc = cli_cell_gradcheck(stdout, cell, &pol, (cli_check_size){2, 6, 4, 5, 0}, 1, tol, false,
                                "selfcheck");
    printf("%s  gradcheck rnn_tanh under %s (B=2 T=6 H=4 V=5, relative tolerance %g)\n",
           rc == 0 ? "PASS" : "FAIL", pol.desc, tol.tol);
    cli_policy_free(&pol);
    return rc;
}

static const cli_option options[] = {
    CLI_PLUGIN_OPTION,
    {NULL, NULL, NULL},
};

#define STR_(x) #x
#define STR(x) STR_(x)
/* The matrix products every other check relies on, and which kernel runs them. */
static int check_blas(void)
{
    char what[256], err[512];
    bool ok = bt_blas_selftest(err, sizeof err) == BT_OK;
    printf("%s  matrix products: %s\n", ok ? "ok  " : "FAIL", cli_blas_describe(what, sizeof what));
    if (!ok)
        printf("      %s\n", err);
    return ok ? 0 : 1;
}

const cli_command cmd_selfcheck_spec = {
    .name = "selfcheck",
    .summary = "train a tiny model and check its gradients",
    .usage = "[--plugin PATH]",
    .about = "Checks the matrix products against a plain loop (and says which BLAS kernel\n"
             "runs them), trains a tiny tanh RNN on a built-in text until its perplexity\n"
             "falls below " STR(PPL_BOUND) " (at most " STR(TIME_BUDGET) " s), and gradient-checks "
             "it under full and\nfixed:2 truncation. Exit status 0 when everything passes.",
    .options = {options},
};

int cmd_selfcheck(int argc, char **argv)
{
    bt_registry *reg;
    int rc;
    if (!cli_begin(&cmd_selfcheck_spec, argc, argv, NULL, NULL, &reg, &rc))
        return rc;
    printf("bptt selfcheck: bptt %s, %s precision%s\n", bt_version(),
           BT_REAL_DOUBLE ? "double" : "float",
           BT_REAL_DOUBLE ? "" : " (gradient checks use float tolerances; the double build is strict)");
    int fails = 0;
    fails += check_blas() != 0;
    fails += check_training(reg) != 0;
    fails += check_gradients(reg, "full") != 0;
    fails += check_gradients(reg, "fixed:2") != 0;
    printf(fails ? "selfcheck FAILED (%d of 4 checks)\n" : "selfcheck passed\n", fails);
    bt_registry_free(reg);
    return fails ? 1 : 0;
}
