/* cellcheck.h: finite-difference check of a cell unrolled under a truncation
 * policy, including a user's own cell. A truncated gradient is not the
 * derivative of the plain loss, but it is exactly the derivative of a
 * surrogate: each window's loss with the state at the window start frozen at
 * its value, a detached edge frozen likewise, and a grad_scale edge written as
 * xi * h + (1 - xi) * frozen(h). The check compares the unroller's gradients
 * with central differences of that surrogate, so it holds for every policy. */
#ifndef BPTT_CELLCHECK_H
#define BPTT_CELLCHECK_H

#include "unroll.h"

typedef struct bt_cellcheck_result {
    char name[BT_NAME_LEN]; /* parameter name, or "h0", "c0" for initial states */
    double max_abs, max_rel;
    size_t worst;
    double analytic, numeric;
} bt_cellcheck_result;

/* res has room for n_params + n_states entries; *n_res receives the count.
 * h0: initial states (n_states buffers [B, width]). xi (may be NULL) replaces
 * the policy's draws; xi_used [T] (may be NULL) receives the factors. */
BT_API bt_status bt_cell_gradcheck(bt_model *m, const bt_sequence *seq, bt_real *const *h0,
                                   const bt_policy_def *policy, void *policy_state, uint64_t seed,
                                   const double *xi, double eps, double rel_floor,
                                   bt_cellcheck_result *res, int *n_res, double *xi_used, char *err,
                                   size_t errlen);

#endif
