/* tasks.h: long-range tasks generated in the program (no files), each a
 * bt_source so `train`, `compare` and `analyze` take them with --task SPEC:
 *   adding:T[,batches=N]          x [B,T,2]: a number in [0,1) and a marker (two
 *                                 marked steps, one in each half); y [B,T,1] is
 *                                 their sum at the last step only (MSE)
 *   copy:T,K[,alphabet=A,batches=N]  tokens: K symbols, T blanks, a delimiter,
 *                                 then K steps that must reproduce the symbols
 *                                 (cross-entropy on those K steps only)
 *   influence:N,P[,len=L,batches=N]  the influence-balancing system (cell
 *                                 `influence`, hidden N, input P): zero inputs
 *                                 [B,L,P], target 1 at every step; the state
 *                                 carries over between sequences
 * Steps without a target have loss_weight 0 (adding, copy).
 *
 * Dimension letters: B rows, T steps, D input size, Q output size, V vocabulary. */
#ifndef BPTT_TASKS_H
#define BPTT_TASKS_H

#include "source.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Parses spec and fills *out (release with bt_source_free). The same seed
 * gives the same training stream and validation set. BT_ERR_ARG with a
 * message naming the spec when it is malformed. */
BT_API bt_status bt_task_source_new(const char *spec, int B, uint64_t seed, bt_source *out, char *err,
                                    size_t errlen);

/* True when spec names a generated task ("adding:...", "copy:...", "influence:..."). */
BT_API bool bt_task_spec_is_task(const char *spec);

/* The copy task's token ids: symbols are 0..A-1, then these two. */
static inline int bt_copy_blank(int alphabet) { return alphabet; }
static inline int bt_copy_delimiter(int alphabet) { return alphabet + 1; }

#ifdef __cplusplus
}
#endif
#endif
