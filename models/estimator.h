/* estimator.h: an online gradient estimator (a plugin, bt_estimator_def) bound
 * to a model's sizes: its parsed options, the state buffers it declared (host
 * owned, so checkpoints can save them) and its RNG. The host's half of an
 * estimator, as bt_optimizer is of an optimizer; online.h runs it.
 *
 * Dimension letters: B rows, S state numbers (sum over states of B * width),
 * P parameters. */
#ifndef BPTT_ESTIMATOR_H
#define BPTT_ESTIMATOR_H

#include "model.h"
#include "registry.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bt_estimator bt_estimator;

/* spec: "rtrl", "rtrl,max_mb=4096", "uoro,seed=3" (the options may follow a
 * ':' as well as a ','). Binds the estimator to m's parameters and states at
 * batch B; want_dstate0 asks for dL/ds_{-1} too, which only an estimator that
 * computes it (bt_estimator_has_dstate0) gives: others ignore the request.
 * Refuses, with what to change, a state larger than its own limit or the
 * memory this process may use. The estimator starts begun with seed 0. */
BT_API bt_status bt_estimator_new(const bt_registry *r, const char *spec, const bt_model *m,
                                  int B, bool want_dstate0, bt_estimator **out, char *err,
                                  size_t errlen);
BT_API void bt_estimator_free(bt_estimator *e);
/* Checks a spec's name and options alone, before any model exists (a typo is
 * reported before data is read): BT_OK, BT_ERR_NOT_FOUND or BT_ERR_ARG. */
BT_API bt_status bt_estimator_check_spec(const bt_registry *r, const char *spec, char *err,
                                         size_t errlen);

/* A sequence starts from states that do not depend on the parameters: the
 * buffers go to the estimator's start state and its RNG is seeded from seed. */
BT_API void bt_estimator_begin(bt_estimator *e, uint64_t seed);

BT_API const char *bt_estimator_name(const bt_estimator *e);
/* The canonical spec ("uoro,seed=3"), terminated within len, no control bytes. */
BT_API const char *bt_estimator_describe(const bt_estimator *e, char *buf, size_t len);
BT_API const bt_estimator_def *bt_estimator_def_of(const bt_estimator *e);
BT_API bool bt_estimator_exact(const bt_estimator *e);      /* BT_ESTIMATOR_EXACT */
BT_API bool bt_estimator_has_dstate0(const bt_estimator *e); /* computes dL/ds_{-1} in this binding */
BT_API const bt_estimator_dims *bt_estimator_dims_of(const bt_estimator *e);

/* The state a checkpoint saves: the buffers (name, values) and the RNG. */
BT_API int bt_estimator_buffer_count(const bt_estimator *e);
BT_API bt_real *bt_estimator_buffer_at(bt_estimator *e, int i, const char **name, size_t *count);
BT_API bt_rng *bt_estimator_rng(bt_estimator *e);
BT_API size_t bt_estimator_bytes(const bt_estimator *e); /* of the buffers */

/* One step on its recording (online.c fills the step fields of ctx; this adds
 * the binding's). BT_OK, or the estimator's message naming it and the step. */
BT_API bt_status bt_estimator_step(bt_estimator *e, bt_estimator_ctx *ctx, char *err,
                                   size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
