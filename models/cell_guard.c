/* cell_guard.c: the host does not trust a cell plugin. What a cell declares for
 * given sizes (parameter specs, state widths) is checked before a model is
 * built on it, and what every step returns (an output [B,Q] and next states
 * [B,W_k] as declared) before anything reads it: a wrong shape used to
 * overflow the unroller's state buffers, and a NULL without a message used to
 * pass a gradient check. Messages name the cell and the plugin file.
 *
 * Dimension letters: B rows, Q output width, W_k width of state k. */
#define _GNU_SOURCE /* dladdr, to name the plugin file a cell's code lives in */
#include <dlfcn.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "model.h"
#include "registry.h"

const char *bt_cell_origin(const bt_cell_def *cell, char *buf, size_t len)
{
    Dl_info info;
    void *code;
    memcpy(&code, &cell->step, sizeof code); /* where the cell's code lives */
    char name[BT_NAME_LEN];
    bt_plugin_text_copy(name, sizeof name, cell->name);
    if (code && dladdr(code, &info) && info.dli_fname && info.dli_fname[0])
        snprintf(buf, len, "cell '%s' (%s %s)", name,
                 strstr(info.dli_fname, ".so") ? "plugin" : "built into", info.dli_fname);
    else
        snprintf(buf, len, "cell '%s'", name);
    return buf;
}

size_t bt_memory_limit(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    double limit = pages > 0 && page > 0 ? (double)pages * (double)page : 0x1p62;
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        limit = fmin(limit, (double)rl.rlim_cur);
    if (getrlimit(RLIMIT_DATA, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        limit = fmin(limit, (double)rl.rlim_cur);
    return limit >= 0x1p62 ? (size_t)1 << 62 : (size_t)limit;
}

/* ---- what a cell declares ---------------------------------------------------------- */

/* Why a spec cannot be a parameter (NULL when it can, adding its count to *values). */
static const char *spec_problem(bt_param_spec *s, double *values, char *why, size_t len)
{
    size_t n = bt_plugin_text_len(s->name, sizeof s->name);
    if (n == sizeof s->name)
        return "has a name that does not end within 31 bytes (is it NUL-terminated?)";
    if (n == 0 || !bt_plugin_text_printable(s->name, n))
        return "has an empty name or one with control characters";
    size_t size;
    if (bt_shape_size(s->ndim, s->shape, &size, why, len) != BT_OK)
        return why;
    if (s->init < BT_INIT_ZERO || s->init > BT_INIT_CONSTANT)
        return "has an unknown init kind";
    if (!isfinite(s->scale))
        return "has a non-finite init scale";
    *values += (double)size;
    return NULL;
}

static bt_status declare_fail(bt_model *m, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static bt_status declare_fail(bt_model *m, char *err, size_t errlen, const char *fmt, ...)
{
    char who[BT_ERRMSG_LEN / 2], what[BT_ERRMSG_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    bt_errorf(err, errlen, "%s, for input %d, hidden %d, output %d: %s",
              bt_cell_origin(m->cell, who, sizeof who), m->dims.input, m->dims.hidden,
              m->dims.output, what);
    return BT_ERR_PLUGIN;
}

/* Parameter specs: 1 to BT_MAX_CELL_PARAMS, each named, shaped and initialised sanely. */
static bt_status declare_params(bt_model *m, double *values, char *err, size_t errlen)
{
    char cerr[BT_ERRMSG_LEN];
    memset(cerr, 0, sizeof cerr);
    memset(m->specs, 0, sizeof m->specs);
    m->n_params = m->cell->params(&m->dims, m->specs, BT_MAX_CELL_PARAMS, cerr, sizeof cerr);
    bt_plugin_text_clean(cerr, sizeof cerr); /* the cell may have left it unterminated */
    if (m->n_params < 0)
        return declare_fail(m, err, errlen, "params() refused these sizes: %s",
                            cerr[0] ? cerr : "(the cell gave no message)");
    if (m->n_params < 1 || m->n_params > BT_MAX_CELL_PARAMS)
        return declare_fail(m, err, errlen, "params() declared %d parameters; a cell has 1 to %d",
                            m->n_params, BT_MAX_CELL_PARAMS);
    *values = 0;
    for (int i = 0; i < m->n_params; i++) {
        char why[BT_ERRMSG_LEN / 2], name[BT_NAME_LEN];
        const char *problem = spec_problem(&m->specs[i], values, why, sizeof why);
        if (problem)
            return declare_fail(m, err, errlen, "parameter %d ('%s') %s", i,
                                bt_plugin_text_copy(name, sizeof name, m->specs[i].name), problem);
    }
    return BT_OK;
}

/* State widths: 1 to BT_MAX_CELL_STATES states, each at least 1 wide. */
static bt_status declare_states(bt_model *m, double *per_row, char *err, size_t errlen)
{
    memset(m->state_width, 0, sizeof m->state_width);
    m->n_states = m->cell->states(&m->dims, m->state_width, BT_MAX_CELL_STATES);
    if (m->n_states < 1 || m->n_states > BT_MAX_CELL_STATES)
        return declare_fail(m, err, errlen, "states() declared %d states; a cell has 1 to %d",
                            m->n_states, BT_MAX_CELL_STATES);
    *per_row = 0;
    for (int k = 0; k < m->n_states; k++) {
        if (m->state_width[k] < 1)
            return declare_fail(m, err, errlen, "states() declared state %d of width %d; widths "
                                "are at least 1", k, m->state_width[k]);
        *per_row += m->state_width[k];
    }
    return BT_OK;
}

bt_status bt_model_declare(bt_model *m, char *err, size_t errlen)
{
    double values = 0, per_row = 0;
    bt_status st = declare_params(m, &values, err, errlen);
    if (st == BT_OK)
        st = declare_states(m, &per_row, err, errlen);
    if (st != BT_OK)
        return st;
    /* Parameters and their gradients, plus one step at batch 1 (the state in, a
     * few intermediates of its width, the state out): the least any command needs. */
    double need = (2 * values + 4 * per_row) * (double)sizeof(bt_real);
    double have = (double)bt_memory_limit();
    if (need > have)
        return declare_fail(m, err, errlen, "%.0f parameter values and states %.0f wide need "
                            "at least %.1f GiB, more than the %.1f GiB this process may use: "
                            "check the sizes the cell declares", values, per_row,
                            need / 0x1p30, have / 0x1p30);
    return BT_OK;
}

/* ---- what a step returns --------------------------------------------------------------- */

static bool is_matrix(const bt_tensor *t, int rows, int cols)
{
    return t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols &&
           t->size == (size_t)rows * (size_t)cols && t->data;
}

static void shape_of(const bt_tensor *t, char *buf, size_t len)
{
    if (t->ndim < 0 || t->ndim > BT_MAX_DIMS)
        snprintf(buf, len, "%d dimensions", t->ndim);
    else
        bt_shape_str(t, buf, len);
}

static bt_tensor *step_fail(bt_graph *g, const bt_model *m, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bt_tensor *step_fail(bt_graph *g, const bt_model *m, const char *fmt, ...)
{
    char who[BT_ERRMSG_LEN / 2], what[BT_ERRMSG_LEN / 2];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    bt_graph_fail(g, BT_ERR_PLUGIN, "the step of %s %s: fix the cell",
                  bt_cell_origin(m->cell, who, sizeof who), what);
    return NULL;
}

/* One cell's step, checked; a stack's layers come here one by one (stack.c). */
static bt_tensor *cell_step(bt_graph *g, const bt_model *m, const bt_step_input *in,
                            bt_tensor *const *state, bt_tensor **next)
{
    for (int k = 0; k < m->n_states; k++) /* next may hold just n_states */
        next[k] = NULL; /* so a state the cell left unset shows */
    bt_tensor *o = m->cell->step(bt_host_table(), g, m->ptab, in, state, next);
    if (bt_graph_status(g) != BT_OK)
        return NULL; /* the cell or an op reported the problem itself */
    if (!o)
        return step_fail(g, m, "returned no output and reported no error (a cell reports a "
                         "failure with host->graph_fail)");
    int B = in->batch, Q = m->dims.output ? m->dims.output : m->state_width[0]; /* a layer: h */
    char got[64];
    /* Asked for the state only, a cell returns its output or next_state[0]:
     * the host reads neither. */
    if (!in->state_only && !is_matrix(o, B, Q)) {
        shape_of(o, got, sizeof got);
        return step_fail(g, m, "returned an output of shape %s where [%d,%d] (rows, output "
                         "width) is due", got, B, Q);
    }
    for (int k = 0; k < m->n_states; k++) {
        if (!next[k])
            return step_fail(g, m, "left next_state[%d] unset", k);
        if (!is_matrix(next[k], B, m->state_width[k])) {
            shape_of(next[k], got, sizeof got);
            return step_fail(g, m, "returned next_state[%d] of shape %s, but states() declared "
                             "[%d,%d]", k, got, B, m->state_width[k]);
        }
    }
    return o;
}

bt_tensor *bt_model_step(bt_graph *g, const bt_model *m, const bt_step_input *in,
                         bt_tensor *const *state, bt_tensor **next)
{
    return m->n_layers ? bt_model_step_at(g, m, in, 0, state, next) /* a stack: stack.c */
                       : cell_step(g, m, in, state, next);
}
