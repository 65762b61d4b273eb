/* check_model.h: a model of a registered cell with seeded random weights, the
 * start of every test that unrolls one (check.h stays free of models/). */
#ifndef BPTT_TEST_CHECK_MODEL_H
#define BPTT_TEST_CHECK_MODEL_H

#include "check.h"
#include "model.h"

/* Cell `cell` of reg at dims, its weights N(0, scale^2) from r seeded with
 * seed; r goes on from there (for the tokens). */
static inline bt_model *test_model(bt_registry *reg, const char *cell, bt_cell_dims dims,
                                   uint64_t seed, double scale, bt_rng *r)
{
    bt_model *m = NULL;
    char err[256];
    const bt_cell_def *def = bt_registry_cell(reg, cell);
    cr_assert_not_null(def, "no cell %s", cell);
    cr_assert_eq(bt_model_new(def, dims, &m, err, sizeof err), BT_OK, "%s", err);
    bt_rng_seed(r, seed);
    fill_params_normal(m->params, scale, r);
    return m;
}

#endif
