/* cell_common.h: small helpers shared by the cell plugins (header-only, so
 * each plugin stays one self-contained shared object). */
#ifndef BPTT_CELL_COMMON_H
#define BPTT_CELL_COMMON_H

#include <stdio.h>
#include <string.h>

#include "bptt_plugin.h"

static inline void cell_param(bt_param_spec *s, const char *name, int rows, int cols,
                              bt_init_kind init, double scale, bool recurrent)
{
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->ndim = cols > 0 ? 2 : 1;
    s->shape[0] = rows;
    s->shape[1] = cols > 0 ? cols : 0;
    s->init = init;
    s->scale = scale;
    s->recurrent = recurrent;
}

/* x_t W for one step: a row lookup for token ids (one-hot x_t), a matrix
 * product for real inputs [B,D]. W is [V,N] or [D,N]. */
static inline bt_tensor *cell_input(const bt_host *H, bt_graph *g, bt_tensor *w,
                                    const bt_step_input *in)
{
    return in->ids ? H->embedding(g, w, in->ids, in->batch) : H->matmul(g, in->x, w);
}

/* The classic char-RNN initialisation: weights N(0, 0.01^2), biases zero. */
#define CELL_SIGMA 0.01

static inline int one_state(const bt_cell_dims *d, int *widths, int max)
{
    if (max < 1)
        return -1;
    widths[0] = d->hidden;
    return 1;
}

#endif
