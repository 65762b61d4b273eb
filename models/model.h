/* model.h: a recurrent cell bound to its parameters. The cell (a plugin)
 * declares parameter shapes and initialisations; the model owns the one
 * parameter block and applies --init to the recurrent matrices. */
#ifndef BPTT_MODEL_H
#define BPTT_MODEL_H

#include "bptt_plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BT_MAX_PARAMS 16
#define BT_MAX_STATES 4

typedef struct bt_model {
    const bt_cell_def *cell;
    bt_cell_dims dims;
    bt_params *params;
    int n_params;
    bt_param_spec specs[BT_MAX_PARAMS];
    bt_tensor *ptab[BT_MAX_PARAMS]; /* in spec order, what cell->step receives */
    int n_states;
    int state_width[BT_MAX_STATES];
} bt_model;

BT_API bt_status bt_model_new(const bt_cell_def *cell, bt_cell_dims dims, bt_model **out, char *err,
                              size_t errlen);
BT_API void bt_model_free(bt_model *m);

/* ---- the host's checks on a cell plugin (cell_guard.c) ---------------------------------- */

/* Asks m->cell for its parameter specs and state widths at m->dims (into m) and
 * checks them: 1 to BT_MAX_PARAMS specs with terminated names, valid shapes,
 * known init kinds and finite scales; 1 to BT_MAX_STATES widths >= 1; and all
 * of it within the memory this process may use. BT_OK, or BT_ERR_PLUGIN with a
 * message naming the cell and its plugin file. bt_model_new calls it. */
BT_API bt_status bt_model_declare(bt_model *m, char *err, size_t errlen);
/* One step of the cell: the only way the host runs cell->step. next has room
 * for n_states tensors. Checks what it returned: an output [B, dims.output] and each next_state[k] [B, state_width[k]]
 * (B = in->batch). NULL on any failure, with the graph's error set (the cell's
 * own, or one naming the cell, its plugin file and the broken promise). */
BT_API bt_tensor *bt_model_step(bt_graph *g, const bt_model *m, const bt_step_input *in,
                                bt_tensor *const *state, bt_tensor **next);
/* "cell 'gru' (plugin /path/cell_gru.so)", found from the address of its code. */
BT_API const char *bt_cell_origin(const bt_cell_def *cell, char *buf, size_t len);
/* Bytes this process may use: physical memory, or less under RLIMIT_AS / RLIMIT_DATA. */
BT_API size_t bt_memory_limit(void);

/* Initialises every parameter from its spec with rng, then applies spec: NULL
 * or "" (the cell's defaults); "normal:SIGMA" (N(0, SIGMA^2) for the normally
 * drawn weights and the recurrent matrices); "orthogonal", "identity[:SCALE]"
 * (the recurrent matrices; a [H, kH] one gets orthonormal rows, or SCALE * I
 * in each H x H block); "spectral:RHO" (each square recurrent matrix, drawn
 * as the cell does, rescaled to spectral radius RHO). BT_ERR_ARG with a
 * message naming the cell when the cell has recurrent matrices but the spec
 * can act on none of them (spectral on lstm's W_h [H,4H]); a cell with no
 * recurrent matrix at all (influence) keeps its own initialisation
 * (bt_init_count tells). */
BT_API bt_status bt_model_init(bt_model *m, const char *spec, bt_rng *rng, char *err, size_t errlen);
/* How many of m's parameters spec sets (0 for NULL or "": the cell's own
 * initialisation stands; -1 for a spec that does not parse). */
BT_API int bt_init_count(const bt_model *m, const char *spec);
/* Checks an --init spec without a model. */
BT_API bt_status bt_init_spec_check(const char *spec, char *err, size_t errlen);

/* Spectral radius of a square row-major matrix (LAPACK dgeev when available).
 * Eigenvalues (re, im) go to re/im if not NULL, sorted by modulus, largest first. */
BT_API bt_status bt_eigenvalues(const bt_real *a, int n, double *re, double *im, double *radius);

#ifdef __cplusplus
}
#endif
#endif
