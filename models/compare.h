/* compare.h: the same model trained once per truncation policy or online
 * estimator, from the same initialisation on the same minibatches (what
 * `bptt compare` and the demo run), a summary of each run, and where a
 * policy cuts a sequence. */
#ifndef BPTT_COMPARE_H
#define BPTT_COMPARE_H

#include "lm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A run's figures over all its epochs. */
typedef struct bt_lm_summary {
    int epochs;
    double tokens_per_s;    /* tokens over training seconds, all epochs */
    double grad_norm_mean;  /* over the updates taken (skipped ones excluded) */
    double grad_norm_max;
    long skipped;           /* updates skipped for a non-finite gradient norm */
    size_t memory;          /* bt_lm_memory */
} bt_lm_summary;
BT_API void bt_lm_summarize(const bt_lm *lm, bt_lm_summary *s);

/* One policy's (or estimator's) run. */
typedef struct bt_compare_run {
    char spec[256];         /* the policy or estimator as given */
    char desc[128];         /* its canonical description ("fixed:35") */
    bt_source src;          /* the run's own source (made by the caller's function) */
    bt_lm *lm;
    bool diverged;          /* the loss or the parameters became non-finite */
    char why[BT_ERRMSG_LEN]; /* why it diverged */
    bt_lm_summary summary;  /* after bt_compare_train */
} bt_compare_run;

/* Does spec name an online estimator ("uoro,seed=3", "rtrl:max_mb=64"), not
 * a truncation policy? */
BT_API bool bt_compare_is_estimator(const bt_registry *reg, const char *spec);

/* Makes a run's source for cfg; may set cfg->steps (a task fixes its length).
 * BT_OK, or a status with the message in err. */
typedef bt_status (*bt_compare_source_fn)(void *ctx, bt_lm_config *cfg, bt_source *src, char *err,
                                          size_t errlen);

/* One run per spec: cfg with that truncation (or, when the spec names an
 * estimator, with that estimator and cfg's update_every), a fresh source from make_source
 * (so a task with the same seed gives every run the same minibatches), the
 * model initialised from cfg->seed. Every run is built before any trains, so
 * a bad setting fails first. cfg->steps takes the sources' length. On failure
 * nothing is left allocated. */
BT_API bt_status bt_compare_new(const bt_registry *reg, bt_lm_config *cfg, const char (*specs)[256],
                                int n, bt_compare_source_fn make_source, void *ctx,
                                bt_compare_run **out, char *err, size_t errlen);
/* Trains run r to `epochs` (hooks may be NULL) and summarises it. A run that
 * diverges is marked (diverged, why) and BT_OK returned, so a comparison
 * goes on; any other failure is returned. */
BT_API bt_status bt_compare_train(bt_compare_run *r, int epochs, const bt_lm_hooks *hooks,
                                  char *err, size_t errlen);
BT_API void bt_compare_free(bt_compare_run *runs, int n);

/* Where policy `spec` cuts the first n steps when they are trained as
 * sequences of T steps from seed: cut[i] = 1 at every sequence start, at each
 * xi == 0 edge and after each update (TBPTT's K1 boundaries), else 0. */
BT_API bt_status bt_policy_cuts(const bt_registry *r, const char *spec, int T, uint64_t seed,
                                int *cut, int n, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
