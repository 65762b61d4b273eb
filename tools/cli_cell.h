/* cli_cell.h: what `grad`, `gradcheck` and `selfcheck` share: finding a cell
 * and a truncation policy by the names a user typed (with the registered names
 * in the error), and a cell gradient check on random data printed as a table.
 *
 * Dimension letters: B rows, T steps, H hidden, V vocabulary (or D/Q for real cells). */
#ifndef BPTT_CLI_CELL_H
#define BPTT_CLI_CELL_H

#include <stdint.h>
#include <stdio.h>

#include "cli.h"
#include "model.h"

/* A created truncation policy and its canonical description ("fixed:2"). */
typedef struct cli_policy {
    const bt_policy_def *def;
    void *state;
    char desc[96];
} cli_policy;

/* NULL (with a message naming the registered cells) when name is unknown. */
const bt_cell_def *cli_cell_find(const bt_registry *r, const char *name, const char *command);
/* "fixed:2" -> created policy; false with a message on an unknown name or bad options. */
bool cli_policy_new(const bt_registry *r, const char *spec, cli_policy *out, const char *command);
void cli_policy_free(cli_policy *p);

/* Central differences: step eps, relative error against max(|a|, |n|, floor), pass at tol.
 * Tight in the double build; in float a tolerance a wrong sign or index still breaks. */
typedef struct cli_check_tol {
    double eps, tol, floor;
} cli_check_tol;
cli_check_tol cli_check_tol_default(void);

typedef struct cli_check_size {
    int B, T, H, V; /* V: vocabulary for token cells, input width for real ones */
    int Q;          /* output width (0: V) */
} cli_check_size;

/* Builds random parameters (0.5 N(0,1), large enough that gradients through
 * time matter), a random batch of the cell's input kind and a random initial
 * state, runs bt_cell_gradcheck under the policy and prints one line per
 * parameter (the full table when `table`). Returns 0 when every gradient
 * passes, 1 on a failed comparison, 2 when the check could not run. */
int cli_cell_gradcheck(FILE *out, const bt_cell_def *cell, const cli_policy *pol,
                       cli_check_size size, uint64_t seed, cli_check_tol tol, bool table,
                       const char *command);
/* The same on a model built by the caller (a stack, stack.h; its sizes are
 * m's, size gives B and T), which it frees. */
int cli_model_gradcheck(FILE *out, bt_model *m, const cli_policy *pol, cli_check_size size,
                        uint64_t seed, cli_check_tol tol, bool table, const char *command);

#endif
