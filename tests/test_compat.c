/* test_compat.c: checkpoints written by bptt 0.1.0 before the I/O redesign
 * (tests/fixtures/ckpt_v1_*.safetensors, made at 9785b68 from
 * tests/fixtures/ckpt_v1.txt; the commands are in the commit that added them)
 * still load, resume and re-save unchanged (suite io):
 * - every setting reads back as given on that command line;
 * - the stored vocabulary is the one this code builds from the same text;
 * - the model, optimizer state, RNG, carried state and history restored into
 *   a run are the tensors in the file;
 * - reading a fixture and writing it again gives the same tensors and
 *   metadata, plus the checksums it did not have (then the same bytes again);
 * - they load unverified (no checksums), and say so (bt_checkpoint.verified);
 * - a file of the other precision is refused with a message saying why. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "checkpoint.h"
#include "lm.h"
#include "text_source.h"

#ifndef BT_FIXTURES
#error "BT_FIXTURES must name tests/fixtures"
#endif

static bt_registry *reg;
static char dir[64];
static char err[2048];

static void setup(void)
{
    reg = test_registry();
    test_tmpdir(dir, "compat");
}

static void teardown(void)
{
    test_rmdir(dir);
    bt_registry_free(reg);
}

TestSuite(compat, .init = setup, .fini = teardown);

static const char *fixture(const char *name)
{
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", BT_FIXTURES, name);
    return buf[k];
}

static const char *own_precision(void)
{
    return BT_REAL_DOUBLE ? "ckpt_v1_chars_double.safetensors" : "ckpt_v1_chars_float.safetensors";
}


/* The vocabulary this code builds from the fixture's text equals the stored one. */
static void assert_vocab_of_text(const bt_vocab *stored, bt_tokens_kind kind)
{
    bt_corpus *c = NULL;
    cr_assert_eq(bt_corpus_load(fixture("ckpt_v1.txt"), kind, 0, &c, err, sizeof err), BT_OK,
                 "%s", err);
    cr_assert_not_null(stored);
    cr_assert_eq(bt_vocab_size(stored), bt_vocab_size(c->vocab));
    for (int id = 0; id < bt_vocab_size(stored); id++)
        cr_assert_str_eq(bt_vocab_token(stored, id), bt_vocab_token(c->vocab, id), "token %d", id);
    bt_corpus_free(c);
}

/* Tensor `name` of the file equals n reals at p, bit for bit. */
static void assert_tensor_is(const bt_st_file *f, const char *name, const void *p, size_t bytes)
{
    const bt_st_tensor *t = bt_st_find(f, name);
    cr_assert_not_null(t, "tensor %s missing", name);
    cr_assert_eq(t->count * bt_st_dtype_size(t->dtype), bytes, "%s: size", name);
    cr_assert(memcmp(t->data, p, bytes) == 0, "%s: restored values differ from the file", name);
}

Test(compat, chars_checkpoint_reads_resumes_and_matches_the_file)
{
    const char *path = fixture(own_precision());
    bt_checkpoint *ck = NULL;
    cr_assert_eq(bt_checkpoint_read(path, &ck, err, sizeof err), BT_OK, "%s", err);
    /* The command line that wrote it: --hidden 8 --batch 2 --steps 6 --epochs 2
     * --optimizer adam:lr=0.01 --seed 3 --val-fraction 0.1. */
    cr_assert_str_eq(ck->cfg.cell, "rnn_tanh");
    cr_assert_eq(ck->cfg.hidden, 8);
    cr_assert_eq(ck->cfg.batch, 2);
    cr_assert_eq(ck->cfg.steps, 6);
    cr_assert_str_eq(ck->cfg.optimizer, "adam:lr=0.01");
    cr_assert_eq(ck->cfg.seed, 3);
    cr_assert_eq(ck->cfg.val_fraction, 0.1);
    cr_assert_eq(ck->cfg.tokens, BT_TOKENS_CHARS);
    cr_assert_eq(ck->epoch, 2);
    cr_assert_str_eq(ck->version, "0.1.0");
    cr_assert_not(ck->verified, "a file from before checksums cannot be verified");
    assert_vocab_of_text(ck->vocab, BT_TOKENS_CHARS);

    bt_corpus *c = NULL;
    cr_assert_eq(bt_corpus_load(fixture("ckpt_v1.txt"), BT_TOKENS_CHARS, 0, &c, err, sizeof err),
                 BT_OK, "%s", err);
    bt_source src;
    bt_lm *lm = NULL;
    cr_assert_eq(bt_text_source_new(c, ck->cfg.batch, ck->cfg.steps, ck->cfg.sampling,
                                    ck->cfg.val_fraction, &src, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_lm_new(reg, &ck->cfg, &src, &lm, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_checkpoint_restore(ck, lm, err, sizeof err), BT_OK, "%s", err);

    bt_model *m = bt_lm_model(lm);
    char name[64];
    for (int i = 0; i < m->n_params; i++) {
        snprintf(name, sizeof name, "param.%s", m->specs[i].name);
        assert_tensor_is(ck->file, name, m->ptab[i]->data, m->ptab[i]->size * sizeof(bt_real));
    }
    bt_optimizer *o = bt_lm_optimizer(lm);
    cr_assert_eq(bt_optimizer_state_count(o), 2, "adam keeps two moments");
    size_t total = bt_params_total(m->params);
    for (int i = 0; i < 2; i++) {
        snprintf(name, sizeof name, "opt.%d", i);
        assert_tensor_is(ck->file, name, bt_optimizer_state(o, i), total * sizeof(bt_real));
    }
    assert_tensor_is(ck->file, "rng", bt_lm_rng(lm)->s, sizeof bt_lm_rng(lm)->s);
    assert_tensor_is(ck->file, "state.0", bt_lm_state(lm)[0],
                     (size_t)ck->cfg.batch * (size_t)m->state_width[0] * sizeof(bt_real));
    cr_assert_eq(bt_optimizer_steps(o), ck->opt_steps);
    cr_assert_eq(bt_lm_epochs_done(lm), 2);
    const bt_lm_epoch *h;
    cr_assert_eq(bt_lm_history(lm, &h), 2);

    /* It trains on: a third epoch runs and its checkpoint reads back. */
    cr_assert_eq(bt_lm_train(lm, 3, NULL, err, sizeof err), BT_OK, "%s", err);
    char out[128];
    snprintf(out, sizeof out, "%s/resumed.safetensors", dir);
    cr_assert_eq(bt_checkpoint_save(lm, out, "ckpt_v1.txt", err, sizeof err), BT_OK, "%s", err);
    bt_checkpoint *again = NULL;
    cr_assert_eq(bt_checkpoint_read(out, &again, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(again->epoch, 3);
    cr_assert_str_eq(bt_st_meta(again->file, "vocab"), bt_st_meta(ck->file, "vocab"),
                     "the vocabulary is written as before");
    bt_checkpoint_free(again);

    bt_lm_free(lm);
    bt_source_free(&src);
    bt_corpus_free(c);
    bt_checkpoint_free(ck);
}

Test(compat, letters_and_task_checkpoints_load)
{
    /* The vocabulary through the file layer: any precision can read it. */
    bt_st_file *f = NULL;
    bt_vocab *v = NULL;
    cr_assert_eq(bt_st_read(fixture("ckpt_v1_letters_float.safetensors"), &f, err, sizeof err),
                 BT_OK, "%s", err);
    cr_assert_eq(bt_vocab_from_json(bt_st_meta(f, "vocab"), BT_TOKENS_LETTERS, &v, err, sizeof err),
                 BT_OK, "%s", err);
    cr_assert_eq(bt_vocab_unk(v), 0);
    assert_vocab_of_text(v, BT_TOKENS_LETTERS);
    bt_vocab_free(v);
    bt_st_free(f);
    if (BT_REAL_DOUBLE) /* float files: refused by a double build (the test below) */
        return;

    bt_checkpoint *ck = NULL;
    bt_model *m = NULL;
    cr_assert_eq(bt_checkpoint_read(fixture("ckpt_v1_letters_float.safetensors"), &ck, err,
                                    sizeof err), BT_OK, "%s", err);
    cr_assert_eq(ck->cfg.tokens, BT_TOKENS_LETTERS);
    cr_assert_str_eq(ck->cfg.cell, "gru");
    assert_vocab_of_text(ck->vocab, BT_TOKENS_LETTERS);
    cr_assert_eq(bt_checkpoint_model(ck, reg, &m, err, sizeof err), BT_OK, "%s", err);
    bt_model_free(m);
    bt_checkpoint_free(ck);

    cr_assert_eq(bt_checkpoint_read(fixture("ckpt_v1_task_float.safetensors"), &ck, err,
                                    sizeof err), BT_OK, "%s", err);
    cr_assert_str_eq(ck->task, "adding:8");
    cr_assert_null(ck->vocab);
    cr_assert_eq(bt_checkpoint_model(ck, reg, &m, err, sizeof err), BT_OK, "%s", err);
    bt_model_free(m);
    bt_checkpoint_free(ck);
}

/* a and b hold the same tensors (bytes) and the same metadata, checksums aside. */
static void assert_same_content(const bt_st_file *a, const bt_st_file *b, const char *what)
{
    cr_assert_eq(bt_st_count(a), bt_st_count(b), "%s: tensor count", what);
    for (int i = 0; i < bt_st_count(a); i++) {
        const bt_st_tensor *t = bt_st_at(a, i), *u = bt_st_find(b, t->name);
        cr_assert_not_null(u, "%s: %s lost", what, t->name);
        cr_assert(t->dtype == u->dtype && t->count == u->count &&
                  memcmp(t->data, u->data, t->count * bt_st_dtype_size(t->dtype)) == 0,
                  "%s: %s differs", what, t->name);
    }
    static const char *const keys[] = {"format", "bptt_version", "cell", "hidden", "optimizer",
                                       "truncation", "seed", "epoch", "data", "vocab", "task"};
    for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
        const char *x = bt_st_meta(a, keys[k]), *y = bt_st_meta(b, keys[k]);
        cr_assert((!x && !y) || (x && y && strcmp(x, y) == 0), "%s: metadata %s", what, keys[k]);
    }
}

Test(compat, rewriting_an_old_file_keeps_its_content_and_adds_checksums)
{
    static const char *const names[] = {
        "ckpt_v1_chars_float.safetensors", "ckpt_v1_chars_double.safetensors",
        "ckpt_v1_letters_float.safetensors", "ckpt_v1_task_float.safetensors",
    };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        bt_st_file *f = NULL, *g = NULL;
        cr_assert_eq(bt_st_read(fixture(names[i]), &f, err, sizeof err), BT_OK, "%s", err);
        cr_assert_not(bt_st_checksummed(f), "%s: a file from before checksums", names[i]);
        char out[128], again[128];
        snprintf(out, sizeof out, "%s/%zu.safetensors", dir, i);
        snprintf(again, sizeof again, "%s/%zu.again.safetensors", dir, i);
        cr_assert_eq(bt_st_write(f, out, err, sizeof err), BT_OK, "%s", err);
        cr_assert_eq(bt_st_read(out, &g, err, sizeof err), BT_OK, "%s", err);
        cr_assert(bt_st_checksummed(g), "%s: rewritten without checksums", names[i]);
        assert_same_content(f, g, names[i]);
        cr_assert_eq(bt_st_write(g, again, err, sizeof err), BT_OK, "%s", err);
        bt_st_free(f);
        bt_st_free(g);
        size_t na, nb;
        unsigned char *a = slurp(out, &na), *b = slurp(again, &nb);
        cr_assert(na == nb && memcmp(a, b, na) == 0, "%s: a second rewrite differs", names[i]);
        free(a);
        free(b);
    }
}

Test(compat, the_other_precision_is_refused_with_the_reason)
{
    const char *other = BT_REAL_DOUBLE ? "ckpt_v1_chars_float.safetensors"
                                       : "ckpt_v1_chars_double.safetensors";
    bt_checkpoint *ck = NULL;
    cr_assert_eq(bt_checkpoint_read(fixture(other), &ck, err, sizeof err), BT_ERR_FORMAT);
    cr_assert_null(ck);
    cr_assert_not_null(strstr(err, "-Dreal="), "%s", err);
}

static bool same_str(const char *a, const char *b) { return !strcmp(a ? a : "", b ? b : ""); }

/* Every setting equal (the strings by value: each checkpoint owns its own). */
static bool same_config(const bt_lm_config *a, const bt_lm_config *b)
{
    return same_str(a->cell, b->cell) && same_str(a->optimizer, b->optimizer) &&
           same_str(a->truncation, b->truncation) && same_str(a->init, b->init) &&
           a->hidden == b->hidden && a->batch == b->batch && a->steps == b->steps &&
           a->clip == b->clip && a->seed == b->seed && a->tokens == b->tokens &&
           a->sampling == b->sampling && a->max_tokens == b->max_tokens &&
           a->val_fraction == b->val_fraction && a->checkpoint_every == b->checkpoint_every &&
           a->memory_budget_mb == b->memory_budget_mb;
}

/* bt_checkpoint_read_buffer on a file's bytes reads what bt_checkpoint_read
 * reads from the file, and refuses every truncation of them by name. */
Test(compat, a_buffer_reads_like_the_file)
{
    size_t n;
    unsigned char *bytes = slurp(fixture(own_precision()), &n);
    bt_checkpoint *a = NULL, *b = NULL;
    cr_assert_eq(bt_checkpoint_read(fixture(own_precision()), &a, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_checkpoint_read_buffer(bytes, n, "mem", &b, err, sizeof err), BT_OK, "%s", err);
    cr_expect_str_eq(b->path, "mem");
    cr_expect(same_config(&a->cfg, &b->cfg), "settings differ");
    cr_expect(a->input_size == b->input_size && a->output_size == b->output_size &&
              a->epoch == b->epoch && a->updates == b->updates && a->opt_steps == b->opt_steps);
    cr_expect(bt_vocab_equal(a->vocab, b->vocab));
    cr_expect_str_eq(a->data, b->data);
    cr_expect_eq(bt_st_count(a->file), bt_st_count(b->file));
    bt_checkpoint_free(a);
    bt_checkpoint_free(b);
    for (size_t len = 0; len < n; len += 97) {
        b = (bt_checkpoint *)1;
        cr_assert_neq(bt_checkpoint_read_buffer(bytes, len, "cut", &b, err, sizeof err), BT_OK);
        cr_assert_null(b);
        cr_assert(strstr(err, "cut"), "%s", err);
    }
    free(bytes);
}
