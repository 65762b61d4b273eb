/* gradfile.h: the files of `bptt grad` as library calls (docs/grad-files.md).
 * A parameters file P (every parameter of a cell by name, the batch X and Y,
 * optional initial states h0/c0 and factors xi) is read and checked against a
 * cell; the gradients of that batch under a truncation policy are computed
 * with the unroller, or estimated online by an estimator (online.h); the
 * gradients file G is written with its metadata.
 *
 * Dimension letters: B rows, T steps, H hidden, V vocabulary, D input width,
 * Q output width. Token inputs are ids [B,T]; real inputs x [B,T,D]. */
#ifndef BPTT_GRADFILE_H
#define BPTT_GRADFILE_H

#include "online.h"
#include "safetensors.h"
#include "unroll.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BT_GRAD_FORMAT "bptt-grad/1"

/* What P gives, checked against the cell. */
typedef struct bt_grad_input {
    bt_st_file *file;                 /* P itself */
    bt_model *model;                  /* the cell at the sizes P's shapes give, with P's values */
    bt_sequence seq;                  /* B rows of T steps: ids/targets or x/y */
    bt_real *state[BT_MAX_STATES];    /* [B, width]: h0 (c0, ...) from P, or zeros */
    double *xi;                       /* [T]: P's factors, or NULL (the policy draws) */
    char dim_from[3][BT_NAME_LEN + 8]; /* the tensor each size came from, for messages */
} bt_grad_input;

/* Checks P's tensors against cell: sizes from the parameter shapes (a size no
 * parameter shows from X, Y or h0), every parameter, X, Y, h0/c0 and xi with
 * its dtype and shape, ids within the vocabulary. Takes ownership of f, even
 * on failure. A message names the tensor and the shape it should have. */
BT_API bt_status bt_grad_input_new(const bt_cell_def *cell, bt_st_file *f, bt_grad_input **out,
                                   char *err, size_t errlen);
/* bt_st_read, then bt_grad_input_new. */
BT_API bt_status bt_grad_input_read(const bt_cell_def *cell, const char *path,
                                    bt_grad_input **out, char *err, size_t errlen);
BT_API void bt_grad_input_free(bt_grad_input *in);
/* P's tensors that nothing reads (most likely misspelt names), up to max of
 * them into names (pointers into P); returns how many there are. */
BT_API int bt_grad_input_unused(const bt_grad_input *in, const char **names, int max);

/* How the gradients are computed: the policy (created by the caller, e.g.
 * from the registry) and its seed; how the windows are stored (as
 * bt_unroll_opts: checkpoint spacing -1 sqrt, 0 none, and a budget). */
typedef struct bt_grad_options {
    const bt_policy_def *policy;
    void *policy_state;
    const char *policy_desc;          /* its canonical description, for G and messages */
    uint64_t seed;
    int checkpoint_every;
    double memory_budget_mb;
    /* An online gradient estimator instead of the policy (docs/estimators.md):
     * its spec ("rtrl", "uoro,seed=3") and the registry that has it. The
     * policy, xi and the checkpoint options are then unused (xi in P is an
     * error); seed seeds the estimator. NULL: the policy. */
    const char *estimator;
    const bt_registry *registry;
} bt_grad_options;

/* What G holds besides the parameter gradients (those are in the model's
 * parameter block, in->model->params). */
typedef struct bt_grad_output {
    double loss;                      /* mean step loss */
    bt_real *dstate[BT_MAX_STATES];   /* [B, width]: dL/dh0 (dc0, ...); NULL from an
                                         estimator that does not compute it (uoro) */
    double *xi_used;                  /* [T]: the factors used; NULL with an estimator */
    double *dh_norms;                 /* [T]: ||dL/dh_t|| summed over windows; NULL with an
                                         estimator (it needs the future's gradient) */
    char estimator[128];              /* the estimator's canonical spec, "" for a policy */
} bt_grad_output;

/* The gradients of in's batch under the policy, summed over its windows with
 * no optimizer step between them; or, with o->estimator, the estimator's
 * estimate summed over the steps with the parameters fixed. The states in
 * `in` are advanced in place to the final state. */
BT_API bt_status bt_grad_compute(bt_grad_input *in, const bt_grad_options *o, bt_grad_output *out,
                                 char *err, size_t errlen);
BT_API void bt_grad_output_free(bt_grad_output *out);
/* G, atomically: loss, grad.<param>, grad.h0 (c0...), xi, grad_norm_h (those
 * of out that are not NULL) and the metadata (format, cell, policy or
 * estimator, sizes, seed, version, precision). */
BT_API bt_status bt_grad_output_write(const bt_grad_input *in, const bt_grad_options *o,
                                      const bt_grad_output *out, const char *path, char *err,
                                      size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
