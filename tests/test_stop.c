/* test_stop.c: a run stopped within an epoch (bt_lm_request_stop, as a
 * SIGINT handler calls it) and continued from its checkpoint ends bit for
 * bit where the run never stopped would (issue 12, defect 15): parameters,
 * optimizer state and steps, RNG, carried state, counters and every epoch's
 * figures. Under sequential and random sampling, every policy kind (full,
 * fixed, random draws, tbptt), the online estimators (rtrl, uoro: their own
 * state and RNG), a generated task (its own RNG), stops at
 * several minibatches, twice in one epoch, at an epoch's last minibatch
 * (the epoch then finishes), before any work; a damaged position is refused. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "checkpoint.h"
#include "lm.h"
#include "tasks.h"
#include "text_source.h"

static bt_registry *reg;
static char dir[64];
static char err[2048];
static bt_corpus *corpus;

static void setup(void)
{
    reg = test_registry();
    test_tmpdir(dir, "stop");
    static const char *unit = "the cat sat on the mat. a dog ran to the log.\n";
    char text[47 * 16 + 1] = "";
    for (int i = 0; i < 16; i++)
        strcat(text, unit);
    cr_assert_eq(bt_corpus_from_string(text, strlen(text), BT_TOKENS_CHARS, 0, &corpus, err,
                                       sizeof err), BT_OK, "%s", err);
}

static void teardown(void)
{
    test_rmdir(dir);
    bt_corpus_free(corpus);
    bt_registry_free(reg);
}

TestSuite(stop, .init = setup, .fini = teardown);

/* What a run trains on: a text, or a task spec. */
typedef struct kind {
    const char *task; /* NULL: the text */
    bt_lm_config cfg;
} kind;

typedef struct run {
    bt_source src;
    bt_lm *lm;
} run;

static void run_new(run *r, const kind *k, const bt_lm_config *cfg)
{
    if (k->task)
        cr_assert_eq(bt_task_source_new(k->task, cfg->batch, cfg->seed, &r->src, err, sizeof err),
                     BT_OK, "%s", err);
    else
        cr_assert_eq(bt_text_source_new(corpus, cfg->batch, cfg->steps, cfg->sampling,
                                        cfg->val_fraction, &r->src, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_lm_new(reg, cfg, &r->src, &r->lm, err, sizeof err), BT_OK, "%s", err);
}

static void run_free(run *r)
{
    bt_lm_free(r->lm);
    bt_source_free(&r->src);
}

/* The progress hook asks for a stop after minibatch `batch` of epoch `epoch`. */
typedef struct stopper {
    bt_lm *lm;
    int epoch, batch;
} stopper;

static void stop_at(void *ctx, const bt_lm_progress *p)
{
    stopper *s = ctx;
    if (p->epoch == s->epoch && p->batch == s->batch)
        bt_lm_request_stop(s->lm);
}

/* Trains r towards `epochs`, stopping after (epoch, batch); saves, frees r,
 * and makes r again from the checkpoint. */
static void stop_save_restore(run *r, const kind *k, int epochs, int epoch, int batch)
{
    stopper s = {r->lm, epoch, batch};
    bt_lm_hooks hooks = {.progress = stop_at, .ctx = &s};
    cr_assert_eq(bt_lm_train(r->lm, epochs, &hooks, err, sizeof err), BT_OK, "%s", err);
    cr_assert(bt_lm_stopped(r->lm), "the run did not stop after minibatch %d of epoch %d", batch,
              epoch);
    bt_lm_position where;
    bt_lm_position_get(r->lm, &where); /* batch, or 0 when that was the epoch's last */
    char path[128];
    snprintf(path, sizeof path, "%s/stopped.st", dir);
    cr_assert_eq(bt_checkpoint_save(r->lm, path, "tiny.txt", err, sizeof err), BT_OK, "%s", err);
    run_free(r);
    bt_checkpoint *ck;
    cr_assert_eq(bt_checkpoint_read(path, &ck, err, sizeof err), BT_OK, "%s", err);
    cr_assert(ck->verified);
    cr_assert_eq(ck->position.batches_done, where.batches_done, "the checkpoint's position");
    cr_assert(where.batches_done == batch || where.batches_done == 0);
    run_new(r, k, &ck->cfg);
    cr_assert_eq(bt_checkpoint_restore(ck, r->lm, err, sizeof err), BT_OK, "%s", err);
    bt_checkpoint_free(ck);
}

static void assert_same_run(bt_lm *a, bt_lm *b, const char *what)
{
    bt_params *pa = bt_lm_model(a)->params, *pb = bt_lm_model(b)->params;
    size_t n = bt_params_total(pa);
    cr_assert(memcmp(bt_params_data(pa), bt_params_data(pb), n * sizeof(bt_real)) == 0,
              "%s: parameters differ", what);
    bt_optimizer *oa = bt_lm_optimizer(a), *ob = bt_lm_optimizer(b);
    for (int i = 0; i < bt_optimizer_state_count(oa); i++)
        cr_assert(memcmp(bt_optimizer_state(oa, i), bt_optimizer_state(ob, i),
                         n * sizeof(bt_real)) == 0, "%s: optimizer state %d differs", what, i);
    cr_assert_eq(bt_optimizer_steps(oa), bt_optimizer_steps(ob), "%s: optimizer steps", what);
    cr_assert(memcmp(bt_lm_rng(a)->s, bt_lm_rng(b)->s, sizeof bt_lm_rng(a)->s) == 0,
              "%s: RNG differs", what);
    const bt_model *m = bt_lm_model(a);
    for (int k = 0; k < m->n_states; k++)
        cr_assert(memcmp(bt_lm_state(a)[k], bt_lm_state(b)[k], sizeof(bt_real) *
                         (size_t)bt_lm_config_of(a)->batch * (size_t)m->state_width[k]) == 0,
                  "%s: carried state %d differs", what, k);
    cr_assert_eq(bt_lm_epochs_done(a), bt_lm_epochs_done(b), "%s", what);
    cr_assert_eq(bt_lm_updates(a), bt_lm_updates(b), "%s: updates", what);
    const bt_lm_epoch *ha, *hb;
    int na = bt_lm_history(a, &ha);
    cr_assert_eq(na, bt_lm_history(b, &hb), "%s: history rows", what);
    for (int i = 0; i < na; i++) {
        cr_assert(ha[i].train_loss == hb[i].train_loss &&
                  (ha[i].val_loss == hb[i].val_loss || (ha[i].val_loss != ha[i].val_loss &&
                                                        hb[i].val_loss != hb[i].val_loss)),
                  "%s: epoch %d's losses differ", what, i + 1);
        cr_assert(ha[i].updates == hb[i].updates && ha[i].skipped == hb[i].skipped &&
                  ha[i].grad_norm_mean == hb[i].grad_norm_mean &&
                  ha[i].grad_norm_max == hb[i].grad_norm_max, "%s: epoch %d's figures differ",
                  what, i + 1);
    }
}

/* The run of k over `epochs`, straight and stopped at each (epoch, batch) of stops. */
static void check(const kind *k, int epochs, const int (*stops)[2], int n_stops, const char *what)
{
    run whole, part;
    run_new(&whole, k, &k->cfg);
    cr_assert_eq(bt_lm_train(whole.lm, epochs, NULL, err, sizeof err), BT_OK, "%s", err);
    run_new(&part, k, &k->cfg);
    for (int i = 0; i < n_stops; i++)
        stop_save_restore(&part, k, epochs, stops[i][0], stops[i][1]);
    cr_assert_eq(bt_lm_train(part.lm, epochs, NULL, err, sizeof err), BT_OK, "%s", err);
    cr_assert_not(bt_lm_stopped(part.lm));
    assert_same_run(whole.lm, part.lm, what);
    run_free(&whole);
    run_free(&part);
}

static kind text_kind(const char *optimizer, const char *truncation, bt_batch_mode sampling)
{
    kind k = {NULL, {0}};
    bt_lm_config_default(&k.cfg);
    k.cfg.hidden = 12, k.cfg.batch = 3, k.cfg.steps = 7, k.cfg.seed = 5;
    k.cfg.optimizer = optimizer, k.cfg.truncation = truncation, k.cfg.sampling = sampling;
    k.cfg.val_fraction = 0.1;
    return k;
}

/* The text gives about 30 minibatches per epoch at batch 3 x 7 steps. */
Test(stop, sequential_sgd_full)
{
    kind k = text_kind("sgd:lr=1", "full", BT_BATCH_SEQUENTIAL);
    check(&k, 3, (const int[][2]){{2, 5}}, 1, "sequential, sgd, full");
}

Test(stop, random_sampling_adam_tbptt)
{
    kind k = text_kind("adam:lr=0.01", "tbptt:2,5", BT_BATCH_RANDOM);
    check(&k, 3, (const int[][2]){{1, 1}}, 1, "random sampling, adam, tbptt");
}

Test(stop, random_policy_draws_momentum_checkpointed)
{
    kind k = text_kind("momentum:lr=0.1,mu=0.9", "random:0.6", BT_BATCH_SEQUENTIAL);
    k.cfg.checkpoint_every = 3;
    check(&k, 2, (const int[][2]){{2, 17}}, 1, "random:0.6, momentum, --checkpoint 3");
}

Test(stop, twice_in_one_epoch_and_again_in_the_next)
{
    kind k = text_kind("adam:lr=0.01", "fixed:3", BT_BATCH_RANDOM);
    check(&k, 3, (const int[][2]){{2, 4}, {2, 20}, {3, 2}}, 3, "three stops");
}

Test(stop, a_task_with_its_own_rng)
{
    kind k = {"adding:12,batches=9", {0}};
    bt_lm_config_default(&k.cfg);
    k.cfg.cell = "linear", k.cfg.hidden = 6, k.cfg.batch = 4, k.cfg.steps = 12, k.cfg.seed = 3;
    k.cfg.optimizer = "adam:lr=0.01", k.cfg.truncation = "random:0.6";
    check(&k, 3, (const int[][2]){{2, 4}}, 1, "task adding");
}

/* The influence task carries its state between the minibatches of an epoch,
 * so a stop within one must keep the online estimator's own state (its
 * buffers and RNG) as well as the run's. */
static kind online_kind(const char *estimator)
{
    kind k = {"influence:6,3,len=12,batches=7", {0}};
    bt_lm_config_default(&k.cfg);
    k.cfg.cell = "influence", k.cfg.hidden = 6, k.cfg.batch = 1, k.cfg.steps = 12, k.cfg.seed = 4;
    k.cfg.optimizer = "sgd:lr=0.01", k.cfg.clip = 0.5, k.cfg.estimator = estimator;
    k.cfg.update_every = 5;
    return k;
}

Test(stop, online_estimators_rtrl_and_uoro)
{
    kind r = online_kind("rtrl"), u = online_kind("uoro,seed=2");
    check(&r, 3, (const int[][2]){{2, 3}}, 1, "rtrl");
    check(&u, 3, (const int[][2]){{1, 5}, {3, 2}}, 2, "uoro");
}

Test(stop, at_the_last_minibatch_the_epoch_finishes)
{
    kind k = text_kind("sgd:lr=1", "full", BT_BATCH_SEQUENTIAL);
    run r;
    run_new(&r, &k, &k.cfg);
    int batches = r.src.count(r.src.ctx);
    stopper s = {r.lm, 1, batches};
    bt_lm_hooks hooks = {.progress = stop_at, .ctx = &s};
    cr_assert_eq(bt_lm_train(r.lm, 3, &hooks, err, sizeof err), BT_OK, "%s", err);
    cr_assert(bt_lm_stopped(r.lm));
    cr_assert_eq(bt_lm_epochs_done(r.lm), 1, "the epoch whose last minibatch ran is finished");
    bt_lm_position p;
    bt_lm_position_get(r.lm, &p);
    cr_assert_eq(p.batches_done, 0, "stopped at an epoch's end");
    run_free(&r);
    check(&k, 3, (const int[][2]){{1, batches}}, 1, "stopped after an epoch's last minibatch");
}

Test(stop, a_stop_before_any_work_changes_nothing)
{
    kind k = text_kind("sgd:lr=1", "full", BT_BATCH_SEQUENTIAL);
    run r;
    run_new(&r, &k, &k.cfg);
    bt_rng before = *bt_lm_rng(r.lm);
    bt_lm_request_stop(r.lm);
    bt_lm_epoch e = {.epoch = -7};
    cr_assert_eq(bt_lm_train_epoch(r.lm, 2, NULL, &e, err, sizeof err), BT_OK, "%s", err);
    cr_assert(bt_lm_stopped(r.lm));
    cr_assert_eq(e.epoch, -7, "a stopped epoch reports nothing");
    cr_assert_eq(bt_lm_epochs_done(r.lm), 0);
    cr_assert(memcmp(&before, bt_lm_rng(r.lm), sizeof before) == 0, "the RNG moved");
    run_free(&r);
}

Test(stop, a_damaged_position_is_refused)
{
    kind k = text_kind("sgd:lr=1", "full", BT_BATCH_SEQUENTIAL);
    run r;
    run_new(&r, &k, &k.cfg);
    stop_save_restore(&r, &k, 2, 1, 6);
    bt_lm_position p;
    bt_lm_position_get(r.lm, &p);
    cr_assert_eq(p.batches_done, 6);
    p.epoch_rng[2] ^= 1; /* another epoch order: the replay cannot reach the run's RNG */
    cr_assert_eq(bt_lm_position_set(r.lm, &p, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_lm_train(r.lm, 2, NULL, err, sizeof err), BT_ERR_FORMAT);
    cr_assert_not_null(strstr(err, "does not reach the run's RNG"), "%s", err);
    p.epoch_rng[2] ^= 1;
    p.batches_done = 1000;
    cr_assert_eq(bt_lm_position_set(r.lm, &p, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_lm_train(r.lm, 2, NULL, err, sizeof err), BT_ERR_FORMAT);
    cr_assert_not_null(strstr(err, "minibatch 1000"), "%s", err);
    p.batches_done = 3;
    p.sums[BT_LM_SUM_TERMS] = -1;
    cr_assert_eq(bt_lm_position_set(r.lm, &p, err, sizeof err), BT_ERR_FORMAT);
    run_free(&r);
}
