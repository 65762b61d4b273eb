/* test_lm.c: the training loop, checkpoints and generation (suite lm).
 * - a tiny char model learns a repetitive text (perplexity far below V);
 * - N epochs, save, resume, M epochs == N + M epochs, bit for bit (sgd, adam,
 *   a random policy, random sampling, a generated task re-created from the
 *   checkpoint's `task` setting);
 * - a failed checkpoint write leaves the old file; NaN stops the run and the
 *   previous checkpoint survives; every truncation of a checkpoint and every
 *   bad content (missing tensor, shape, dtype, precision, cell) is refused;
 * - greedy generation is deterministic; a second epoch allocates nothing;
 *   two policies compare from the same initialisation (bt_compare_*), with
 *   summaries that agree with their epochs; a policy's cuts follow its
 *   definition; a resume names the setting it may not change. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "check.h"
#include "checkpoint.h"
#include "compare.h"
#include "generate.h"
#include "lm.h"
#include "tasks.h"
#include "text_source.h"

static bt_registry *reg;
static char dir[64];
static char err[2048];

static void setup(void)
{
    reg = test_registry();
    test_tmpdir(dir, "lm");
}

static void teardown(void)
{
    test_rmdir(dir);
    bt_registry_free(reg);
}

TestSuite(lm, .init = setup, .fini = teardown);

static const char *in_dir(const char *name)
{
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

/* A few sentences, repeated: easy to learn, 20-odd distinct characters. */
static bt_corpus *tiny_corpus(int repeats)
{
    static const char *unit = "the cat sat on the mat. a dog ran to the log.\n";
    size_t n = strlen(unit);
    char *text = malloc(n * (size_t)repeats + 1);
    for (int i = 0; i < repeats; i++)
        memcpy(text + n * (size_t)i, unit, n);
    text[n * (size_t)repeats] = '\0';
    bt_corpus *c = NULL;
    cr_assert_eq(bt_corpus_from_string(text, strlen(text), BT_TOKENS_CHARS, 0, &c, err, sizeof err),
                 BT_OK, "%s", err);
    free(text);
    return c;
}

static bt_lm_config tiny_config(const char *optimizer, const char *truncation)
{
    bt_lm_config c;
    bt_lm_config_default(&c);
    c.hidden = 16;
    c.batch = 4;
    c.steps = 8;
    c.seed = 7;
    c.optimizer = optimizer;
    c.truncation = truncation;
    return c;
}

typedef struct run {
    bt_source src;
    bt_lm *lm;
} run;

static void run_new(run *r, const bt_corpus *c, const bt_lm_config *cfg)
{
    cr_assert_eq(bt_text_source_new(c, cfg->batch, cfg->steps, cfg->sampling, cfg->val_fraction,
                                    &r->src, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_lm_new(reg, cfg, &r->src, &r->lm, err, sizeof err), BT_OK, "%s", err);
}

static void run_free(run *r)
{
    bt_lm_free(r->lm);
    bt_source_free(&r->src);
}

static void train(run *r, int epochs)
{
    cr_assert_eq(bt_lm_train(r->lm, epochs, NULL, err, sizeof err), BT_OK, "%s", err);
}

static const bt_lm_epoch *last_epoch(run *r)
{
    const bt_lm_epoch *h;
    int n = bt_lm_history(r->lm, &h);
    cr_assert_gt(n, 0);
    return &h[n - 1];
}

/* ---- learning ------------------------------------------------------------------- */

Test(lm, tiny_model_learns_a_repetitive_text)
{
    bt_corpus *c = tiny_corpus(40);
    int V = bt_vocab_size(c->vocab);
    bt_lm_config cfg = tiny_config("adam:lr=0.02", "full");
    cfg.val_fraction = 0.1;
    run r;
    run_new(&r, c, &cfg);
    train(&r, 1);
    double first = last_epoch(&r)->train_ppl;
    train(&r, 25);
    const bt_lm_epoch *e = last_epoch(&r);
    /* Uniform guessing is V (about 20); the text is nearly deterministic. */
    cr_assert_lt(e->train_ppl, 2.0, "train ppl %g after 25 epochs (first %g, V %d)", e->train_ppl,
                 first, V);
    cr_assert_lt(e->val_ppl, 2.5, "validation ppl %g (V %d)", e->val_ppl, V);
    cr_assert_gt(first, e->train_ppl * 2);
    cr_assert_eq(e->skipped, 0);
    cr_assert_gt(e->tokens_per_s, 0);
    run_free(&r);
    bt_corpus_free(c);
}

Test(lm, classic_sgd_setup_learns)
{
    bt_corpus *c = tiny_corpus(40);
    bt_lm_config cfg = tiny_config("sgd:lr=1", "full");
    run r;
    run_new(&r, c, &cfg);
    train(&r, 40);
    cr_assert_lt(last_epoch(&r)->train_ppl, 6.0, "sgd ppl %g (V %d)", last_epoch(&r)->train_ppl,
                 bt_vocab_size(c->vocab));
    run_free(&r);
    bt_corpus_free(c);
}

Test(lm, second_epoch_allocates_nothing)
{
    bt_corpus *c = tiny_corpus(20);
    bt_lm_config cfg = tiny_config("adam", "fixed:3"); /* windows of fixed size: epoch 1 sizes every buffer */
    cfg.val_fraction = 0.2;
    run r;
    run_new(&r, c, &cfg);
    train(&r, 1);
    uint64_t before = bt_alloc_count();
    train(&r, 3);
    cr_assert_eq(bt_alloc_count(), before, "%llu heap allocations in epochs 2-3",
                 (unsigned long long)(bt_alloc_count() - before));
    run_free(&r);
    bt_corpus_free(c);
}

Test(lm, validation_is_the_end_of_the_text)
{
    bt_corpus *c = tiny_corpus(20);
    bt_lm_config cfg = tiny_config("sgd:lr=1", "full");
    cfg.val_fraction = 0.25;
    run r;
    run_new(&r, c, &cfg);
    long nv = bt_text_source_val_tokens(&r.src), nt = bt_text_source_train_tokens(&r.src);
    cr_assert_eq(nv, (long)(c->n * 0.25));
    cr_assert_eq(nv + nt, c->n);
    double loss;
    cr_assert_eq(bt_lm_evaluate(r.lm, &loss, err, sizeof err), BT_OK, "%s", err);
    /* Untrained: close to uniform over the vocabulary. */
    cr_assert_lt(fabs(loss - log(bt_vocab_size(c->vocab))), 0.1, "loss %g", loss);
    /* The validation batches cover the held-out tokens and only those. */
    bt_sequence seq;
    long seen = 0;
    for (int i = 0; r.src.validation(r.src.ctx, i, &seq); i++) {
        for (int k = 0; k < seq.B * seq.T; k++)
            cr_assert(seq.ids[k] >= 0 && seq.ids[k] < bt_vocab_size(c->vocab));
        seen += (long)seq.B * seq.T;
    }
    cr_assert_leq(seen, nv - 1);
    cr_assert_gt(seen, nv - 1 - cfg.batch * cfg.steps);
    run_free(&r);
    bt_corpus_free(c);
}

Test(lm, errors_name_the_problem)
{
    bt_corpus *c = tiny_corpus(20);
    bt_source src;
    bt_lm *lm = NULL;
    cr_assert_eq(bt_text_source_new(c, 64, 35, BT_BATCH_SEQUENTIAL, 0, &src, err, sizeof err),
                 BT_ERR_SHAPE);
    cr_assert_not_null(strstr(err, "--batch"), "%s", err);
    cr_assert_eq(bt_text_source_new(c, 4, 8, BT_BATCH_SEQUENTIAL, 0.9, &src, err, sizeof err),
                 BT_ERR_ARG);
    bt_lm_config cfg = tiny_config("sgd:lr=1", "full");
    cr_assert_eq(bt_text_source_new(c, 4, 8, BT_BATCH_SEQUENTIAL, 0, &src, err, sizeof err), BT_OK);
    cfg.cell = "nosuchcell";
    cr_assert_eq(bt_lm_new(reg, &cfg, &src, &lm, err, sizeof err), BT_ERR_NOT_FOUND);
    cr_assert_not_null(strstr(err, "rnn_tanh"), "the known cells are listed: %s", err);
    cr_assert_not_null(strstr(err, "--plugin"), "%s", err);
    cfg = tiny_config("sgd:lr=1", "nosuchpolicy:3");
    cr_assert_eq(bt_lm_new(reg, &cfg, &src, &lm, err, sizeof err), BT_ERR_NOT_FOUND);
    cr_assert_not_null(strstr(err, "tbptt"), "%s", err);
    cfg = tiny_config("sgd:lr=-1", "full");
    cr_assert_neq(bt_lm_new(reg, &cfg, &src, &lm, err, sizeof err), BT_OK);
    cr_assert_not_null(strstr(err, "lr"), "%s", err);
    cfg = tiny_config("nosuchopt", "full");
    cr_assert_eq(bt_lm_new(reg, &cfg, &src, &lm, err, sizeof err), BT_ERR_NOT_FOUND);
    cr_assert_not_null(strstr(err, "adam"), "%s", err);
    cr_assert_null(lm);
    bt_source_free(&src);
    bt_corpus_free(c);
}

/* ---- resume, bit for bit ------------------------------------------------------------ */

static void assert_same_run(bt_lm *a, bt_lm *b, const char *what)
{
    bt_params *pa = bt_lm_model(a)->params, *pb = bt_lm_model(b)->params;
    size_t n = bt_params_total(pa);
    cr_assert_eq(n, bt_params_total(pb));
    cr_assert(memcmp(bt_params_data(pa), bt_params_data(pb), n * sizeof(bt_real)) == 0,
              "%s: parameters differ after resume", what);
    bt_optimizer *oa = bt_lm_optimizer(a), *ob = bt_lm_optimizer(b);
    for (int i = 0; i < bt_optimizer_state_count(oa); i++)
        cr_assert(memcmp(bt_optimizer_state(oa, i), bt_optimizer_state(ob, i),
                         n * sizeof(bt_real)) == 0, "%s: optimizer state %d differs", what, i);
    cr_assert_eq(bt_optimizer_steps(oa), bt_optimizer_steps(ob));
    cr_assert(memcmp(bt_lm_rng(a)->s, bt_lm_rng(b)->s, sizeof bt_lm_rng(a)->s) == 0);
    cr_assert_eq(bt_lm_epochs_done(a), bt_lm_epochs_done(b));
    cr_assert_eq(bt_lm_updates(a), bt_lm_updates(b));
}

static void check_resume(const char *optimizer, const char *truncation, bt_batch_mode sampling)
{
    const int N = 2, M = 2;
    bt_corpus *c = tiny_corpus(20);
    bt_lm_config cfg = tiny_config(optimizer, truncation);
    cfg.sampling = sampling;
    cfg.val_fraction = 0.1;
    run whole, first, second;
    run_new(&whole, c, &cfg);
    train(&whole, N + M);

    run_new(&first, c, &cfg);
    train(&first, N);
    const char *path = in_dir("ck.safetensors");
    cr_assert_eq(bt_checkpoint_save(first.lm, path, "tiny.txt", err, sizeof err), BT_OK, "%s", err);
    run_free(&first);

    bt_checkpoint *ck;
    cr_assert_eq(bt_checkpoint_read(path, &ck, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(ck->epoch, N);
    cr_assert_str_eq(ck->cfg.optimizer, optimizer);
    cr_assert_str_eq(ck->cfg.truncation, truncation);
    cr_assert_str_eq(ck->data, "tiny.txt");
    cr_assert_eq(ck->cfg.sampling, sampling);
    run_new(&second, c, &ck->cfg);
    cr_assert_eq(bt_checkpoint_restore(ck, second.lm, err, sizeof err), BT_OK, "%s", err);
    bt_checkpoint_free(ck);
    train(&second, N + M);
    char what[128];
    snprintf(what, sizeof what, "%s, %s", optimizer, truncation);
    assert_same_run(whole.lm, second.lm, what);
    /* The history came along: N + M rows, the first N from the checkpoint. */
    const bt_lm_epoch *hw, *hs;
    cr_assert_eq(bt_lm_history(whole.lm, &hw), N + M);
    cr_assert_eq(bt_lm_history(second.lm, &hs), N + M);
    for (int i = 0; i < N + M; i++) {
        cr_assert_eq(hs[i].epoch, i + 1);
        cr_assert_eq(hs[i].train_loss, hw[i].train_loss, "epoch %d loss", i + 1);
        cr_assert_eq(hs[i].val_loss, hw[i].val_loss, "epoch %d val loss", i + 1);
    }
    run_free(&whole);
    run_free(&second);
    bt_corpus_free(c);
}

Test(lm, resume_is_bitwise_sgd) { check_resume("sgd:lr=1", "full", BT_BATCH_SEQUENTIAL); }
Test(lm, resume_is_bitwise_adam) { check_resume("adam:lr=0.01", "fixed:3", BT_BATCH_SEQUENTIAL); }
Test(lm, resume_is_bitwise_random_policy) { check_resume("momentum:lr=0.1,mu=0.9", "random:0.6", BT_BATCH_SEQUENTIAL); }
Test(lm, resume_is_bitwise_random_sampling) { check_resume("adam", "tbptt:2,5", BT_BATCH_RANDOM); }

/* A task spec longer than any fixed name buffer (here 90 characters, blanks
 * between its options) is kept whole by the source and the checkpoint, so
 * a resume re-creates the very task. (Found by fuzz_spec: the source cut
 * its name to 63 characters.) */
Test(lm, long_task_spec_survives_the_checkpoint)
{
    char spec[128];
    snprintf(spec, sizeof spec, "adding:12,%70sbatches=3", "");
    cr_assert_gt(strlen(spec), 80);
    bt_lm_config cfg = tiny_config("sgd:lr=0.1", "full");
    cfg.cell = "linear";
    cfg.steps = 12;
    bt_source src;
    cr_assert_eq(bt_task_source_new(spec, cfg.batch, cfg.seed, &src, err, sizeof err), BT_OK, "%s", err);
    cr_expect_str_eq(src.name, spec);
    bt_lm *lm;
    cr_assert_eq(bt_lm_new(reg, &cfg, &src, &lm, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_lm_train(lm, 1, NULL, err, sizeof err), BT_OK, "%s", err);
    const char *path = in_dir("long.safetensors");
    cr_assert_eq(bt_checkpoint_save(lm, path, NULL, err, sizeof err), BT_OK, "%s", err);
    bt_checkpoint *ck;
    cr_assert_eq(bt_checkpoint_read(path, &ck, err, sizeof err), BT_OK, "%s", err);
    cr_expect_str_eq(ck->task, spec);
    bt_checkpoint_free(ck);
    bt_lm_free(lm);
    bt_source_free(&src);
}

/* A task run: the checkpoint names the task (no vocabulary), a source
 * re-created from that spec resumes bit for bit, and another source is refused. */
Test(lm, task_checkpoint_resumes_on_its_task)
{
    const char *spec = "adding:12,batches=6";
    bt_lm_config cfg = tiny_config("adam:lr=0.01", "random:0.6");
    cfg.cell = "linear";
    cfg.steps = 12;
    bt_source s_whole, s_first, s_second, s_other;
    cr_assert_eq(bt_task_source_new(spec, cfg.batch, cfg.seed, &s_whole, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_task_source_new(spec, cfg.batch, cfg.seed, &s_first, err, sizeof err), BT_OK, "%s", err);
    bt_lm *whole, *first, *second, *other;
    cr_assert_eq(bt_lm_new(reg, &cfg, &s_whole, &whole, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_lm_train(whole, 4, NULL, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_lm_new(reg, &cfg, &s_first, &first, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_lm_train(first, 2, NULL, err, sizeof err), BT_OK, "%s", err);
    const char *path = in_dir("task.safetensors");
    cr_assert_eq(bt_checkpoint_save(first, path, NULL, err, sizeof err), BT_OK, "%s", err);
    bt_lm_free(first);
    bt_source_free(&s_first);

    bt_checkpoint *ck;
    cr_assert_eq(bt_checkpoint_read(path, &ck, err, sizeof err), BT_OK, "%s", err);
    cr_assert_str_eq(ck->task, spec);
    cr_assert_null(ck->vocab);
    cr_assert_str_eq(ck->data, "");
    cr_assert_eq(bt_task_source_new(ck->task, ck->cfg.batch, ck->cfg.seed, &s_second, err,
                                    sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_lm_new(reg, &ck->cfg, &s_second, &second, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_checkpoint_restore(ck, second, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_lm_train(second, 4, NULL, err, sizeof err), BT_OK, "%s", err);
    assert_same_run(whole, second, spec);

    /* Same shapes, another task: refused with both names. */
    cr_assert_eq(bt_task_source_new("adding:12,batches=7", ck->cfg.batch, ck->cfg.seed, &s_other,
                                    err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_lm_new(reg, &ck->cfg, &s_other, &other, err, sizeof err), BT_OK, "%s", err);
    cr_assert_neq(bt_checkpoint_restore(ck, other, err, sizeof err), BT_OK);
    cr_expect(strstr(err, "adding:12,batches=6") && strstr(err, "adding:12,batches=7"), "%s", err);
    bt_lm_free(other);
    bt_source_free(&s_other);
    bt_checkpoint_free(ck);
    bt_lm_free(whole);
    bt_lm_free(second);
    bt_source_free(&s_whole);
    bt_source_free(&s_second);
}

/* ---- checkpoint safety ------------------------------------------------------------------ */


static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(data, 1, n, f), n);
    fclose(f);
}

static bool same_file(const char *path, const unsigned char *want, size_t n)
{
    size_t m;
    unsigned char *got = slurp(path, &m);
    bool same = m == n && memcmp(got, want, n) == 0;
    free(got);
    return same;
}

Test(lm, failed_write_keeps_the_old_checkpoint)
{
    bt_corpus *c = tiny_corpus(20);
    bt_lm_config cfg = tiny_config("adam", "full");
    run r;
    run_new(&r, c, &cfg);
    train(&r, 1);
    const char *path = in_dir("model.safetensors");
    cr_assert_eq(bt_checkpoint_save(r.lm, path, NULL, err, sizeof err), BT_OK, "%s", err);
    size_t n;
    unsigned char *old = slurp(path, &n);
    train(&r, 2);
    /* A file size limit makes the write fail halfway (works as root too). */
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {.rlim_cur = n / 2, .rlim_max = RLIM_INFINITY};
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    cr_assert_eq(bt_checkpoint_save(r.lm, path, NULL, err, sizeof err), BT_ERR_IO);
    cr_assert_not_null(strstr(err, path), "%s", err);
    cr_assert(same_file(path, old, n), "the old checkpoint was damaged");
    bt_checkpoint *ck;
    cr_assert_eq(bt_checkpoint_read(path, &ck, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(ck->epoch, 1);
    bt_checkpoint_free(ck);
    free(old);
    run_free(&r);
    bt_corpus_free(c);
}

Test(lm, unwritable_save_path_is_caught_before_training)
{
    cr_assert_eq(bt_atomic_check_writable(in_dir("ok.safetensors"), err, sizeof err), BT_OK,
                 "%s", err);
    cr_assert_eq(access(in_dir("ok.safetensors"), F_OK), -1, "the probe must not stay behind");
    cr_assert_eq(bt_atomic_check_writable(in_dir("no/such/dir/m.safetensors"), err, sizeof err),
                 BT_ERR_IO);
    cr_assert_not_null(strstr(err, "does not exist"), "%s", err);
    cr_assert_eq(bt_atomic_check_writable(dir, err, sizeof err), BT_ERR_IO);
    cr_assert_not_null(strstr(err, "folder"), "%s", err);
}

static bt_status epoch_saver(void *ctx, bt_lm *lm, const bt_lm_epoch *e, char *err, size_t errlen)
{
    (void)e;
    return bt_checkpoint_save(lm, ctx, NULL, err, errlen);
}

Test(lm, nan_stops_the_run_and_keeps_the_last_checkpoint)
{
    bt_corpus *c = tiny_corpus(20);
    bt_lm_config cfg = tiny_config("sgd:lr=1", "full");
    run r;
    run_new(&r, c, &cfg);
    const char *path = in_dir("good.safetensors");
    bt_lm_hooks hooks = {.epoch_done = epoch_saver, .ctx = (void *)path};
    cr_assert_eq(bt_lm_train(r.lm, 2, &hooks, err, sizeof err), BT_OK, "%s", err);
    size_t n;
    unsigned char *good = slurp(path, &n);
    /* Poison one weight: the next loss is NaN. */
    bt_params_data(bt_lm_model(r.lm)->params)[0] = (bt_real)NAN;
    cr_assert_eq(bt_lm_train(r.lm, 4, &hooks, err, sizeof err), BT_ERR_NUMERIC);
    /* The loss turns NaN, or (where tanh saturates a NaN to 1) the end-of-epoch
     * check finds the non-finite parameters: either way the run stops. */
    cr_assert(strstr(err, "NaN") || strstr(err, "non-finite"), "%s", err);
    cr_assert_eq(bt_lm_epochs_done(r.lm), 2);
    cr_assert(same_file(path, good, n), "the good checkpoint was overwritten");
    /* Saving non-finite parameters is refused outright. */
    cr_assert_eq(bt_checkpoint_save(r.lm, path, NULL, err, sizeof err), BT_ERR_NUMERIC);
    cr_assert(same_file(path, good, n));
    free(good);
    run_free(&r);
    bt_corpus_free(c);
}

Test(lm, huge_learning_rate_without_clipping_stops_cleanly)
{
    bt_corpus *c = tiny_corpus(20);
    bt_lm_config cfg = tiny_config("sgd:lr=1e6", "full");
    cfg.clip = 0;
    cfg.init = "";
    run r;
    run_new(&r, c, &cfg);
    bt_status st = bt_lm_train(r.lm, 5, NULL, err, sizeof err);
    /* Either the loss turns NaN/inf (stop) or every gradient is non-finite
     * (skipped): never a silent NaN model. */
    if (st == BT_OK) {
        cr_assert(bt_lm_params_finite(r.lm));
    } else {
        cr_assert_eq(st, BT_ERR_NUMERIC, "%s", err);
        cr_assert(strstr(err, "NaN") || strstr(err, "infinite") || strstr(err, "non-finite"), "%s",
                  err);
    }
    run_free(&r);
    bt_corpus_free(c);
}

/* A small valid checkpoint, for the rejection tests. */
static const char *small_checkpoint(void)
{
    bt_corpus *c = tiny_corpus(10);
    bt_lm_config cfg = tiny_config("adam", "full");
    cfg.hidden = 3;
    cfg.batch = 2;
    cfg.steps = 4;
    run r;
    run_new(&r, c, &cfg);
    train(&r, 1);
    const char *path = in_dir("small.safetensors");
    cr_assert_eq(bt_checkpoint_save(r.lm, path, NULL, err, sizeof err), BT_OK, "%s", err);
    run_free(&r);
    bt_corpus_free(c);
    return path;
}

Test(lm, every_truncation_is_rejected)
{
    char path[256];
    snprintf(path, sizeof path, "%s", small_checkpoint());
    size_t n;
    unsigned char *full = slurp(path, &n);
    const char *cut = in_dir("cut.safetensors");
    for (size_t len = 0; len < n; len++) {
        write_bytes(cut, full, len);
        bt_checkpoint *ck = NULL;
        bt_status st = bt_checkpoint_read(cut, &ck, err, sizeof err);
        cr_assert_neq(st, BT_OK, "length %zu of %zu was accepted", len, n);
        cr_assert_null(ck);
        cr_assert_not_null(strstr(err, cut), "%s", err);
    }
    free(full);
}

static const char *const meta_keys[] = {
    "format", "bptt_version", "precision", "cell", "hidden", "input_size", "output_size", "batch",
    "steps", "optimizer", "optimizer_canonical", "clip", "truncation", "truncation_canonical",
    "init", "seed", "tokens", "sampling", "max_tokens", "val_fraction", "epoch", "updates",
    "optimizer_steps", "source", "data", "vocab",
};

/* Rewrites the small checkpoint without tensor `drop`, with tensor `replace`
 * swapped for (dt, shape) zeros, and with metadata key = value. */
static const char *altered(const char *src, const char *drop, const char *replace, bt_st_dtype dt,
                           int ndim, const int64_t *shape, const char *key, const char *value)
{
    bt_st_file *in, *out = bt_st_new();
    cr_assert_eq(bt_st_read(src, &in, err, sizeof err), BT_OK, "%s", err);
    for (int i = 0; i < bt_st_count(in); i++) {
        const bt_st_tensor *t = bt_st_at(in, i);
        if (drop && strcmp(t->name, drop) == 0)
            continue;
        if (replace && strcmp(t->name, replace) == 0) {
            size_t count = 1;
            for (int d = 0; d < ndim; d++)
                count *= (size_t)shape[d];
            void *z = calloc(count ? count : 1, 8);
            cr_assert_eq(bt_st_add(out, t->name, dt, ndim, shape, z, err, sizeof err), BT_OK);
            free(z);
            continue;
        }
        cr_assert_eq(bt_st_add(out, t->name, t->dtype, t->ndim, t->shape, t->data, err, sizeof err),
                     BT_OK, "%s", err);
    }
    for (size_t k = 0; k < sizeof meta_keys / sizeof *meta_keys; k++) {
        const char *v = bt_st_meta(in, meta_keys[k]);
        if (key && strcmp(key, meta_keys[k]) == 0)
            v = value;
        if (v)
            cr_assert_eq(bt_st_set_meta(out, meta_keys[k], v), BT_OK);
    }
    const char *path = in_dir("altered.safetensors");
    cr_assert_eq(bt_st_write(out, path, err, sizeof err), BT_OK, "%s", err);
    bt_st_free(in);
    bt_st_free(out);
    return path;
}

/* Loading path as a model and as a resumed run fails with `status` and a
 * message containing `needle`. */
static void assert_rejected(const char *path, bt_status status, const char *needle)
{
    bt_checkpoint *ck = NULL;
    bt_status st = bt_checkpoint_read(path, &ck, err, sizeof err);
    if (st == BT_OK) {
        bt_model *m = NULL;
        st = bt_checkpoint_model(ck, reg, &m, err, sizeof err);
        bt_model_free(m);
        if (st == BT_OK) {
            bt_corpus *c = tiny_corpus(10);
            run r;
            run_new(&r, c, &ck->cfg);
            st = bt_checkpoint_restore(ck, r.lm, err, sizeof err);
            run_free(&r);
            bt_corpus_free(c);
        }
    }
    bt_checkpoint_free(ck);
    cr_assert_eq(st, status, "expected status %d, got %d: %s", status, st, err);
    cr_assert_not_null(strstr(err, needle), "message lacks '%s': %s", needle, err);
}

Test(lm, bad_content_is_rejected_with_a_reason)
{
    char good[256]; /* in_dir's buffers rotate: keep a copy */
    snprintf(good, sizeof good, "%s", small_checkpoint());
    bt_checkpoint *ck;
    cr_assert_eq(bt_checkpoint_read(good, &ck, err, sizeof err), BT_OK, "%s", err);
    bt_checkpoint_free(ck);
    bt_st_dtype other = BT_REAL_DOUBLE ? BT_ST_F32 : BT_ST_F64;

    /* The settings are checked against the tensors' shapes before anything is built. */
    assert_rejected(altered(good, "param.W_hh", NULL, 0, 0, NULL, NULL, NULL), BT_ERR_FORMAT,
                    "'param.W_hh' (missing)");
    assert_rejected(altered(good, NULL, "param.W_hh", BT_REAL_DOUBLE ? BT_ST_F64 : BT_ST_F32, 2,
                            (int64_t[]){3, 4}, NULL, NULL), BT_ERR_FORMAT,
                    "do not fit tensor 'param.W_hh' [3,4], which they make [3,3]");
    assert_rejected(altered(good, NULL, "param.b_h", other, 1, (int64_t[]){3}, NULL, NULL),
                    BT_ERR_FORMAT, "expects");
    assert_rejected(altered(good, NULL, NULL, 0, 0, NULL, "precision",
                            BT_REAL_DOUBLE ? "float" : "double"), BT_ERR_FORMAT, "-Dreal=");
    assert_rejected(altered(good, NULL, NULL, 0, 0, NULL, "cell", "mycell"), BT_ERR_NOT_FOUND,
                    "--plugin");
    assert_rejected(altered(good, NULL, NULL, 0, 0, NULL, "hidden", "x3"), BT_ERR_FORMAT, "hidden");
    assert_rejected(altered(good, NULL, NULL, 0, 0, NULL, "hidden", "4"), BT_ERR_FORMAT,
                    "hidden 4, output 16, batch 2) do not fit tensor 'param.W_xh' [16,3]");
    /* Settings claiming a model of terabytes are checked against the tensors
     * before anything is allocated (fuzz_checkpoint reported such a 2 KB
     * file, its seed claims_huge_hidden, as a 3.6 GB out-of-memory). */
    assert_rejected(altered(good, NULL, NULL, 0, 0, NULL, "hidden", "1048576"), BT_ERR_FORMAT,
                    "do not fit tensor 'param.");
    assert_rejected(altered(good, NULL, NULL, 0, 0, NULL, "batch", "5"), BT_ERR_FORMAT,
                    "batch 5) do not fit tensor 'state.0' [2,3], which they make [5,3]");
    assert_rejected(altered(good, NULL, "opt.1", BT_REAL_DOUBLE ? BT_ST_F64 : BT_ST_F32, 1,
                            (int64_t[]){7}, NULL, NULL), BT_ERR_FORMAT, "'opt.1' [7]");
    assert_rejected(altered(good, NULL, NULL, 0, 0, NULL, "format", "other"), BT_ERR_FORMAT,
                    "not a bptt model checkpoint");
    assert_rejected(altered(good, NULL, NULL, 0, 0, NULL, "vocab", "[\"a\",\"b\"]"), BT_ERR_FORMAT,
                    "vocabulary");
    assert_rejected(altered(good, "opt.1", NULL, 0, 0, NULL, NULL, NULL), BT_ERR_FORMAT,
                    "'opt.1' is missing");
    assert_rejected(altered(good, "rng", NULL, 0, 0, NULL, NULL, NULL), BT_ERR_FORMAT, "rng");
    assert_rejected(altered(good, NULL, NULL, 0, 0, NULL, "epoch", NULL), BT_ERR_FORMAT,
                    "'epoch' is missing");
    /* Not a safetensors file at all. */
    const char *junk = in_dir("junk.safetensors");
    write_bytes(junk, "hello, world", 12);
    assert_rejected(junk, BT_ERR_FORMAT, junk);
}

/* ---- generation ------------------------------------------------------------------- */

Test(lm, greedy_generation_is_deterministic)
{
    bt_corpus *c = tiny_corpus(40);
    bt_lm_config cfg = tiny_config("adam:lr=0.02", "full");
    run r;
    run_new(&r, c, &cfg);
    train(&r, 20);
    const char *path = in_dir("gen.safetensors");
    cr_assert_eq(bt_checkpoint_save(r.lm, path, NULL, err, sizeof err), BT_OK, "%s", err);
    run_free(&r);

    bt_checkpoint *ck;
    bt_model *m;
    cr_assert_eq(bt_checkpoint_read(path, &ck, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_checkpoint_model(ck, reg, &m, err, sizeof err), BT_OK, "%s", err);
    char *a, *b, *s1, *s2;
    cr_assert_eq(bt_generate_text(m, ck->vocab, "the cat", 40, 0, 1, &a, err, sizeof err), BT_OK,
                 "%s", err);
    cr_assert_eq(bt_generate_text(m, ck->vocab, "the cat", 40, 0, 2, &b, err, sizeof err), BT_OK);
    cr_assert_str_eq(a, b, "greedy does not depend on the seed");
    cr_assert_eq(strncmp(a, "the cat", 7), 0);
    cr_assert_eq(strlen(a), 47);
    /* A trained model continues the text it learned. */
    cr_assert_not_null(strstr(a, "the cat sat on the mat"), "'%s'", a);
    cr_assert_eq(bt_generate_text(m, ck->vocab, "the", 40, 1.0, 5, &s1, err, sizeof err), BT_OK);
    cr_assert_eq(bt_generate_text(m, ck->vocab, "the", 40, 1.0, 5, &s2, err, sizeof err), BT_OK);
    cr_assert_str_eq(s1, s2, "sampling replays with the same seed");
    /* chars: a character the text never had is an error naming it. */
    char *z = NULL;
    cr_assert_eq(bt_generate_text(m, ck->vocab, "the zebra", 10, 0, 1, &z, err, sizeof err),
                 BT_ERR_NOT_FOUND);
    cr_assert_null(z);
    cr_assert_not_null(strstr(err, "z"), "%s", err);
    bt_free(a), bt_free(b), bt_free(s1), bt_free(s2);
    bt_model_free(m);
    bt_checkpoint_free(ck);
    bt_corpus_free(c);
}

/* ---- compare ------------------------------------------------------------------------ */

Test(lm, policy_lists_split_at_policy_names)
{
    char out[8][256];
    int n = bt_lm_split_policies(reg, "full,fixed:35,random:0.1,seed=3,tbptt:5,35", out, 8, err,
                                 sizeof err);
    cr_assert_eq(n, 4, "%s", err);
    cr_assert_str_eq(out[0], "full");
    cr_assert_str_eq(out[1], "fixed:35");
    cr_assert_str_eq(out[2], "random:0.1,seed=3");
    cr_assert_str_eq(out[3], "tbptt:5,35");
    cr_assert_eq(bt_lm_split_policies(reg, "tbptt:5,35,full", out, 8, err, sizeof err), 2);
    cr_assert_str_eq(out[0], "tbptt:5,35");
    cr_assert_eq(bt_lm_split_policies(reg, "bogus:1,full", out, 8, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "bogus"), "%s", err);
    cr_assert_eq(bt_lm_split_policies(reg, "full,bogus:3", out, 8, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "'bogus' is not"), "%s", err);
    cr_assert_eq(bt_lm_split_policies(reg, "full,,fixed:3", out, 8, err, sizeof err), -1);
    /* An empty entry before an option-like word (found by fuzz_spec: it was
     * taken for a second entry ",lr=0.1"). */
    cr_assert_eq(bt_lm_split_policies(reg, "full,,lr=0.1", out, 8, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "empty entry"), "%s", err);
    cr_assert_eq(bt_lm_split_policies(reg, "", out, 8, err, sizeof err), -1);
}

/* A text source over the test's corpus (bt_compare_source_fn). */
static bt_status tiny_source(void *ctx, bt_lm_config *cfg, bt_source *src, char *e, size_t elen)
{
    return bt_text_source_new(ctx, cfg->batch, cfg->steps, cfg->sampling, cfg->val_fraction, src,
                              e, elen);
}

Test(lm, compare_two_policies_from_one_initialisation)
{
    bt_corpus *c = tiny_corpus(30);
    const char specs[2][256] = {"full", "fixed:2"};
    bt_lm_config cfg = tiny_config("sgd:lr=1", "full");
    cfg.val_fraction = 0.1;
    bt_compare_run *r = NULL;
    cr_assert_eq(bt_compare_new(reg, &cfg, specs, 2, tiny_source, c, &r, err, sizeof err), BT_OK,
                 "%s", err);
    cr_assert_str_eq(r[1].desc, "fixed:2");
    bt_params *p0 = bt_lm_model(r[0].lm)->params, *p1 = bt_lm_model(r[1].lm)->params;
    size_t n = bt_params_total(p0);
    cr_assert(memcmp(bt_params_data(p0), bt_params_data(p1), n * sizeof(bt_real)) == 0,
              "the same seed gives the same initialisation");
    for (int k = 0; k < 2; k++)
        cr_assert_eq(bt_compare_train(&r[k], 3, NULL, err, sizeof err), BT_OK, "%s", err);
    const bt_lm_epoch *h0, *h1;
    cr_assert_eq(bt_lm_history(r[0].lm, &h0), 3);
    cr_assert_eq(bt_lm_history(r[1].lm, &h1), 3);
    const bt_lm_epoch *e0 = &h0[2], *e1 = &h1[2];
    cr_assert(isfinite(e0->val_ppl) && isfinite(e1->val_ppl));
    cr_assert_neq(e0->train_loss, e1->train_loss, "different policies, different training");
    /* The same minibatches: fixed:2 makes four updates per 8-step minibatch. */
    cr_assert_eq(e1->updates, 4 * e0->updates);
    /* fixed:2 keeps a smaller window than full BPTT over 8 steps. */
    cr_assert_lt(e1->peak_arena, e0->peak_arena);
    cr_assert_lt(r[1].summary.memory, r[0].summary.memory);
    /* The summary against the epochs it summarises. */
    for (int k = 0; k < 2; k++) {
        const bt_lm_epoch *h = k ? h1 : h0;
        const bt_lm_summary *s = &r[k].summary;
        double lo = INFINITY, hi = 0;
        long skipped = 0;
        for (int i = 0; i < 3; i++) {
            lo = fmin(lo, h[i].grad_norm_mean);
            hi = fmax(hi, h[i].grad_norm_max);
            skipped += h[i].skipped;
        }
        cr_assert_eq(s->epochs, 3);
        cr_assert_eq(s->skipped, skipped);
        cr_assert_eq(s->grad_norm_max, hi);
        cr_assert(s->grad_norm_mean >= lo * (1 - 1e-12) && s->grad_norm_mean <= hi,
                  "mean %g outside [%g, %g]", s->grad_norm_mean, lo, hi);
        cr_assert(!r[k].diverged);
    }
    bt_compare_free(r, 2);
    bt_corpus_free(c);
}

/* cut[i] against the steps listed (every other step uncut). */
static void expect_cuts(const char *spec, int T, int n, const int *want, int n_want)
{
    int cut[32] = {0}, exp[32] = {0};
    cr_assert_eq(bt_policy_cuts(reg, spec, T, 1, cut, n, err, sizeof err), BT_OK, "%s", err);
    for (int i = 0; i < n_want; i++)
        exp[want[i]] = 1;
    for (int i = 0; i < n; i++)
        cr_assert_eq(cut[i], exp[i], "%s, T=%d: step %d is %scut", spec, T, i, cut[i] ? "" : "not ");
}

/* From the policies' definitions (docs/grad-files.md): a sequence start cuts;
 * fixed:TAU cuts the edges into t = TAU, 2 TAU, ...; tbptt:K1,K2 updates every
 * K1 steps and at the last step, and a segment starts after each update. */
Test(lm, policy_cuts_follow_the_definitions)
{
    expect_cuts("full", 5, 10, (int[]){0, 5}, 2);
    expect_cuts("fixed:3", 5, 10, (int[]){0, 3, 5, 8}, 4);
    expect_cuts("tbptt:2,3", 5, 10, (int[]){0, 2, 4, 5, 7, 9}, 6);
    int cut[4];
    cr_assert_eq(bt_policy_cuts(reg, "nope", 5, 1, cut, 4, err, sizeof err), BT_ERR_NOT_FOUND);
    cr_assert_eq(bt_policy_cuts(reg, "fixed:0", 5, 1, cut, 4, err, sizeof err), BT_ERR_ARG);
}

/* What a resumed run may change, as bt_checkpoint_check_resume decides it. */
Test(lm, resume_check_names_the_conflict)
{
    bt_corpus *c = tiny_corpus(20);
    bt_lm_config cfg = tiny_config("sgd:lr=1", "full");
    run r;
    run_new(&r, c, &cfg);
    train(&r, 1);
    const char *path = in_dir("ck.safetensors");
    cr_assert_eq(bt_checkpoint_save(r.lm, path, "tiny.txt", err, sizeof err), BT_OK, "%s", err);
    run_free(&r);
    bt_checkpoint *ck;
    cr_assert_eq(bt_checkpoint_read(path, &ck, err, sizeof err), BT_OK, "%s", err);
    bt_lm_given g = {.cfg = cfg};
    bt_lm_config run;
    const char *data = NULL, *task = NULL;
    cr_assert_eq(bt_checkpoint_check_resume(ck, reg, &g, &data, &task, &run, err, sizeof err), BT_OK,
                 "%s", err);
    cr_assert_str_eq(data, "tiny.txt", "the checkpoint's text when none is given");
    cr_assert_null(task);
    /* The same optimizer written another way is no conflict. */
    g.cfg.optimizer = "sgd:1";
    g.given[BT_LM_OPTIMIZER] = true;
    g.raw[BT_LM_OPTIMIZER] = "sgd:1";
    data = NULL;
    cr_assert_eq(bt_checkpoint_check_resume(ck, reg, &g, &data, &task, &run, err, sizeof err), BT_OK,
                 "%s", err);
    g.cfg.hidden = 32;
    g.given[BT_LM_HIDDEN] = true;
    g.raw[BT_LM_HIDDEN] = "32";
    cr_assert_eq(bt_checkpoint_check_resume(ck, reg, &g, &data, &task, &run, err, sizeof err), BT_ERR_ARG);
    cr_assert_not_null(strstr(err, "--hidden 32 conflicts with the checkpoint's hidden 16"), "%s",
                       err);
    g.given[BT_LM_HIDDEN] = false;
    task = "adding:5";
    cr_assert_eq(bt_checkpoint_check_resume(ck, reg, &g, &data, &task, &run, err, sizeof err), BT_ERR_ARG);
    cr_assert_not_null(strstr(err, "trained on a text"), "%s", err);
    bt_checkpoint_free(ck);
    bt_corpus_free(c);
}
