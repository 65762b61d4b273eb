/* unroll.c: backpropagation through time from ordinary graph nodes.
 *
 * The policy decides, before each step t, the factor xi_t on the edge
 * h_{t-1} -> h_t and whether to update after t. A window is built when an
 * update is due: from the stored state at g = t - reach + 1 (a detached leaf),
 * through steps g..t, with losses only for the steps since the last update.
 * For TBPTT(K1, K2) that is reach = K2 > K1: the loss at step t - j reaches
 * back K2 - j steps. Every other policy has reach = steps since the update.
 * States at step starts are kept in a ring of max_reach + 1 entries, so memory
 * is bounded by the window, never by the length of the stream.
 *
 * Dimension letters: B rows, T steps, H (state width), D input, Q output. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bt_assert.h"
#include "bt_clock.h"
#include "dist.h"
#include "stack.h"
#include "unroll.h"

struct bt_unroller {
    bt_model *m;
    int B;
    bt_graph *g;
    size_t state_len;   /* sum over states of B * width */
    int ring_n;         /* entries in the ring */
    bt_real *ring;      /* [ring_n][state_len]: state at the start of step s in s % ring_n */
    int cap_T;          /* capacity of the per-step buffers */
    double *xi;         /* [cap_T] */
    bt_tensor **h_of;   /* [cap_T] state-0 tensor after step s in the current window */
    bt_real *dh;        /* [cap_T][B * width0], only for dh norms */
    bt_real *ckpt;      /* checkpointed states, then two gradient buffers */
    size_t ckpt_cap;
    bt_real *dh0_flat;  /* [state_len] gradient of the initial state */
    double bytes_per_step; /* largest measured arena bytes per step of a stretch */
    bool want_dh0;         /* this run accumulates dL/dh0 (accumulate mode, asked, a buffer) */
    int dh_state;          /* the state whose gradient norms this run reports */
    long failed_at;        /* the step a failed window stopped at (lanes report the earliest) */
    int n_lanes;           /* > 1: the rows run split over threads (bt_unroller_set_threads) */
    struct lane *lanes;    /* [n_lanes] */
};

/* One thread's share of the rows (see "Lanes" below). */
typedef struct lane {
    bt_unroller *u;       /* over rows row0 .. row0 + u->B - 1 */
    bt_model *replica;    /* its model, beyond lane 0 (which runs on the model itself) */
    int row0;
    bt_sequence part;     /* its rows of the running sequence */
    bt_unroll_result res; /* of the running window */
    bt_status st;
    char err[BT_ERRMSG_LEN];
} lane;

static void lanes_free(bt_unroller *u);

/* The widest state: the per-step gradient buffer fits any of them. */
static int max_width(const bt_model *m)
{
    int w = 0;
    for (int k = 0; k < m->n_states; k++)
        w = m->state_width[k] > w ? m->state_width[k] : w;
    return w;
}

bt_status bt_unroller_new(bt_model *m, int B, int max_T, bt_unroller **out, char *err,
                          size_t errlen)
{
    *out = NULL;
    if (B <= 0 || max_T <= 0) {
        snprintf(err, errlen, "unroll: batch (%d) and steps (%d) must be positive", B, max_T);
        return BT_ERR_ARG;
    }
    bt_unroller *u = bt_calloc(1, sizeof *u);
    if (!u)
        return BT_ERR_NOMEM;
    u->m = m;
    u->B = B;
    for (int k = 0; k < m->n_states; k++)
        u->state_len += (size_t)B * (size_t)m->state_width[k];
    /* The ring holds at least two states, and a step's graph a few tensors of
     * the state's size: refuse before a cell's widths run the machine dry. */
    double need = 6.0 * (double)u->state_len * sizeof(bt_real), have = (double)bt_memory_limit();
    if (need > have) {
        char who[BT_ERRMSG_LEN / 2];
        snprintf(err, errlen, "unroll: %s has states of %zu values at batch %d, which need at "
                 "least %.1f GiB, more than the %.1f GiB this process may use: use a smaller "
                 "batch or hidden size, or check the widths the cell's states() declares", bt_cell_origin(m->cell, who, sizeof who),
                 u->state_len, B, need / 0x1p30, have / 0x1p30);
        bt_free(u);
        return BT_ERR_NOMEM;
    }
    u->g = bt_graph_new();
    if (!u->g) {
        bt_free(u);
        return BT_ERR_NOMEM;
    }
    *out = u;
    return BT_OK;
}

void bt_unroller_free(bt_unroller *u)
{
    if (!u)
        return;
    lanes_free(u);
    bt_graph_free(u->g);
    bt_free(u->ring);
    bt_free(u->xi);
    bt_free(u->h_of);
    bt_free(u->dh);
    bt_free(u->ckpt);
    bt_free(u->dh0_flat);
    bt_free(u);
}

bt_graph *bt_unroller_graph(bt_unroller *u) { return u->g; }

const bt_sequence *bt_sequence_rows(const bt_sequence *seq, int first, int count, int D, int Q,
                                    bt_sequence *part)
{
    size_t at = (size_t)first * (size_t)seq->T;
    *part = *seq;
    part->B = count;
    part->ids = seq->ids ? seq->ids + at : NULL;
    part->targets = seq->targets ? seq->targets + at : NULL;
    part->x = seq->x ? seq->x + at * (size_t)D : NULL;
    part->y = seq->y ? seq->y + at * (size_t)Q : NULL;
    return part;
}

/* Buffers grow to the largest sequence and policy seen, then stay: steady
 * state allocates nothing. */
static bt_status reserve(bt_unroller *u, int T, int ring_n, bool dh)
{
    if (T > u->cap_T) {
        double *xi = bt_realloc(u->xi, sizeof(double) * (size_t)T);
        if (!xi)
            return BT_ERR_NOMEM;
        u->xi = xi;
        bt_tensor **h = bt_realloc(u->h_of, sizeof(bt_tensor *) * (size_t)T);
        if (!h)
            return BT_ERR_NOMEM;
        u->h_of = h;
        bt_free(u->dh);
        u->dh = NULL;
        u->cap_T = T;
    }
    if (ring_n > u->ring_n) {
        bt_real *r = bt_realloc(u->ring, sizeof(bt_real) * u->state_len * (size_t)ring_n);
        if (!r)
            return BT_ERR_NOMEM;
        u->ring = r;
        u->ring_n = ring_n;
    }
    if (dh && !u->dh) {
        u->dh = bt_calloc((size_t)u->cap_T * (size_t)u->B * (size_t)max_width(u->m),
                          sizeof(bt_real));
        if (!u->dh)
            return BT_ERR_NOMEM;
    }
    return BT_OK;
}

static bt_real *ring_at(bt_unroller *u, long s) { return u->ring + u->state_len * (size_t)(s % u->ring_n); }

/* Step s of seq: gathers column s of the inputs, runs the cell and returns
 * its output. With tg, the step's targets too (*tg token ids, or *target the
 * rows of y), for its loss; without, none are gathered and only next[] may
 * be read (the cell was asked for the state only: the returned tensor is
 * not its output). */
static bt_tensor *step_output(bt_graph *g, const bt_model *m, const bt_sequence *seq, long s,
                              bt_tensor *const *state, bt_tensor **next, int32_t **tg,
                              bt_tensor **target)
{
    int B = seq->B, T = seq->T, D = m->dims.input, Q = m->dims.output;
    bt_step_input in = {.batch = B, .state_only = !tg}; /* the cell may skip its output layer */
    bool want_tg = tg && seq->targets, want_y = tg && seq->y;
    if (seq->ids || want_tg) {
        int32_t *ids = bt_arena_alloc(bt_graph_arena(g), sizeof(int32_t) * (size_t)B * 2);
        if (!ids) {
            bt_graph_fail(g, BT_ERR_NOMEM, "out of memory for step inputs");
            return NULL;
        }
        for (int b = 0; seq->ids && b < B; b++)
            ids[b] = seq->ids[(size_t)b * T + s];
        for (int b = 0; want_tg && b < B; b++)
            ids[B + b] = seq->targets[(size_t)b * T + s];
        in.ids = seq->ids ? ids : NULL;
        if (want_tg)
            *tg = ids + B;
    }
    if (seq->x) {
        in.x = bt_graph_tensor2(g, B, D);
        if (!in.x)
            return NULL;
        for (int b = 0; b < B; b++)
            memcpy(in.x->data + (size_t)b * D, seq->x + ((size_t)b * T + s) * D,
                   sizeof(bt_real) * D);
    }
    if (want_y) {
        *target = bt_graph_tensor2(g, B, Q);
        if (!*target)
            return NULL;
        for (int b = 0; b < B; b++)
            memcpy((*target)->data + (size_t)b * Q, seq->y + ((size_t)b * T + s) * Q,
                   sizeof(bt_real) * Q);
    }
    return bt_model_step_at(g, m, &in, s, state, next);
}

/* Step s of seq: the cell's step and the step loss (mean over rows). */
bt_tensor *bt_unroll_step(bt_graph *g, const bt_model *m, const bt_sequence *seq, long s,
                          bt_tensor *const *state, bt_tensor **next)
{
    int32_t *tg = NULL;
    bt_tensor *target = NULL;
    bt_tensor *o = step_output(g, m, seq, s, state, next, &tg, &target);
    if (!o)
        return NULL;
    return seq->targets ? bt_softmax_xent(g, o, tg) : bt_mse(g, o, target);
}

/* The step's loss if it counts toward this window (weighted), else NULL;
 * a non-finite loss is an error that says what to try. */
static bt_status take_loss(const bt_sequence *seq, long s, long loss_from, const bt_tensor *l,
                           double *value, double *weight, char *err, size_t errlen)
{
    *weight = seq->loss_weight ? (double)seq->loss_weight[s] : 1.0;
    *value = (double)l->data[0];
    if (s < loss_from || *weight == 0) {
        *weight = 0;
        return BT_OK;
    }
    if (!isfinite(*value)) {
        snprintf(err, errlen, "the loss became %s at step %ld: lower the learning rate, "
                 "clip gradients, or check the data", isnan(*value) ? "NaN" : "infinite", s);
        return BT_ERR_NUMERIC;
    }
    return BT_OK;
}

/* The state after step s is the state at the start of step s + 1. */
static void store_state(bt_unroller *u, long s, bt_tensor *const *next)
{
    bt_real *dst = ring_at(u, s + 1);
    for (int k = 0; k < u->m->n_states; k++) {
        memcpy(dst, next[k]->data, sizeof(bt_real) * next[k]->size);
        dst += next[k]->size;
    }
}

/* One stretch a..b of the window [g0, t], built on a fresh graph from the
 * flat state `from`. The edge into step s carries xi_s when s > g0 (or at the
 * sequence start); a window's first step starts from a detached leaf. Losses
 * of steps >= loss_from, weighted, are backpropagated. When dnext is given,
 * <final state, dnext> joins the loss, so the gradient of the later stretch
 * (checkpointing) flows in exactly. With leaf_grad, dL/d(from) is added to dfrom. */
typedef struct segment {
    long g0, a, b, loss_from;
    double weight;
    const bt_real *from;
    bool leaf_grad, count_losses;
    bool rewind; /* a later stretch of the window: the weights and their packs are as they were */
    /* Store each step's state in the ring. A checkpointed window's forward
     * pass stored those before its last stretch, which stores its own; the
     * other rebuilt stretches run after it and must not overwrite the ring
     * (the slot of h_T would end up holding the state of an earlier stretch). */
    bool store_states;
    bt_real *dfrom;       /* [state_len] accumulated, or NULL */
    const bt_real *dnext; /* [state_len] or NULL */
} segment;

/* The stretch's start state: leaves of a fresh graph, requiring a gradient
 * when the stretch hands one back (leaf_grad). */
static void segment_leaves(bt_unroller *u, const segment *sg, bt_tensor **state,
                           bt_tensor **leaves)
{
    const bt_real *src = sg->from;
    for (int k = 0; k < u->m->n_states; k++) {
        int w = u->m->state_width[k];
        state[k] = leaves[k] = bt_graph_input(u->g, 2, (int[]){u->B, w}, src);
        if (state[k] && sg->leaf_grad)
            state[k]->requires_grad = true;
        src += (size_t)u->B * w;
    }
}

/* Steps a..b on the graph: xi_s on each recurrent edge, the step losses summed
 * into *total (weighted), states stored when asked. state ends as the last
 * step's next state. */
static bt_status segment_forward(bt_unroller *u, const bt_sequence *seq, const segment *sg,
                                 const bt_unroll_opts *opts, bt_unroll_result *res,
                                 bt_tensor **state, bt_tensor **total, char *err, size_t errlen)
{
    bt_model *m = u->m;
    bt_graph *g = u->g;
    bt_tensor *next[BT_MAX_STATES];
    for (long s = sg->a; s <= sg->b; s++) {
        double xi = u->xi[s];
        if (s > sg->g0 || s == 0)
            for (int k = 0; k < m->n_states; k++)
                state[k] = xi == 1 ? state[k]
                         : xi == 0 ? bt_detach(g, state[k])
                                   : bt_grad_scale(g, state[k], xi);
        bt_tensor *l = bt_unroll_step(g, m, seq, s, state, next);
        u->failed_at = s;
        if (!l)
            return BT_OK; /* the graph holds the error */
        double lv, lw;
        bt_status lst = take_loss(seq, s, sg->loss_from, l, &lv, &lw, err, errlen);
        if (lst != BT_OK)
            return lst;
        if (lw != 0) {
            if (sg->count_losses) {
                res->loss_sum += lv * lw;
                res->loss_terms++;
            }
            if (lw != 1)
                l = bt_scale(g, l, lw);
            *total = *total ? bt_add(g, *total, l) : l;
        }
        u->h_of[s] = next[u->dh_state];
        if (u->dh && opts->want_dh_norms && next[u->dh_state])
            next[u->dh_state]->retain_grad = true; /* read after backward */
        if (sg->store_states)
            store_state(u, s, next);
        memcpy(state, next, sizeof next);
    }
    return BT_OK;
}

/* <final state, dnext> joins the loss, so the gradient the later stretch
 * computed for this stretch's end state flows in exactly (checkpointing). */
static bt_tensor *segment_couple(bt_unroller *u, const segment *sg, bt_tensor *const *state,
                                 bt_tensor *total)
{
    const bt_real *d = sg->dnext;
    for (int k = 0; d && k < u->m->n_states; k++) {
        int w = u->m->state_width[k];
        bt_tensor *dn = bt_graph_input(u->g, 2, (int[]){u->B, w}, d);
        d += (size_t)u->B * w;
        bt_tensor *inner = bt_sum(u->g, bt_mul(u->g, state[k], dn));
        if (inner && inner->requires_grad)
            total = total ? bt_add(u->g, total, inner) : inner;
    }
    return total;
}

/* After backward: the arena measured, dL/d(start state) into dfrom, and the
 * per-step state gradients into dh for their norms. */
static void segment_collect(bt_unroller *u, const segment *sg, const bt_unroll_opts *opts,
                            bt_tensor *const *leaves, bt_unroll_result *res)
{
    size_t used = bt_arena_used(bt_graph_arena(u->g)); /* forward and backward of this stretch */
    if (used > res->peak_arena)
        res->peak_arena = used;
    double per_step = (double)used / (double)(sg->b - sg->a + 1);
    if (per_step > u->bytes_per_step)
        u->bytes_per_step = per_step;
    if (sg->leaf_grad && sg->dfrom) {
        bt_real *d = sg->dfrom;
        for (int k = 0; k < u->m->n_states; k++) {
            if (leaves[k]->grad)
                for (size_t i = 0; i < leaves[k]->size; i++)
                    d[i] += leaves[k]->grad[i];
            d += leaves[k]->size;
        }
    }
    if (u->dh && opts->want_dh_norms) {
        size_t w = (size_t)u->B * (size_t)u->m->state_width[u->dh_state];
        for (long s = sg->a; s <= sg->b; s++)
            if (u->h_of[s] && u->h_of[s]->grad)
                for (size_t i = 0; i < w; i++)
                    u->dh[(size_t)s * w + i] += u->h_of[s]->grad[i];
    }
}

/* One stretch: build it on a fresh graph, backpropagate its losses (and the
 * coupling to the later stretch), collect what the caller asked for. */
static bt_status run_segment(bt_unroller *u, const bt_sequence *seq, const segment *sg,
                             const bt_unroll_opts *opts, bt_unroll_result *res, char *err,
                             size_t errlen)
{
    bt_graph *g = u->g;
    (sg->rewind ? bt_graph_rewind : bt_graph_reset)(g);
    bt_graph_plan_steps(g, (int)(sg->b - sg->a + 1)); /* states side by side for wgrad */
    bt_tensor *state[BT_MAX_STATES], *leaves[BT_MAX_STATES], *total = NULL;
    segment_leaves(u, sg, state, leaves);
    bt_status st = segment_forward(u, seq, sg, opts, res, state, &total, err, errlen);
    if (st != BT_OK)
        return st;
    if (total)
        total = bt_scale(g, total, sg->weight);
    total = segment_couple(u, sg, state, total);
    if (bt_graph_status(g) != BT_OK) {
        snprintf(err, errlen, "cell %s: %s", u->m->cell->name, bt_graph_error(g));
        return bt_graph_status(g);
    }
    if (!total || !total->requires_grad)
        return BT_OK; /* nothing to learn from this stretch */
    st = bt_backward(g, total);
    if (st != BT_OK) {
        snprintf(err, errlen, "backward: %s", bt_graph_error(g));
        return st;
    }
    segment_collect(u, sg, opts, leaves, res);
    return BT_OK;
}

/* Plain window: one graph over g0..t. */
static bt_status run_window(bt_unroller *u, const bt_sequence *seq, long g0, long t,
                            long loss_from, double weight, const bt_unroll_opts *opts,
                            bt_real *dh0, bt_unroll_result *res, char *err, size_t errlen)
{
    segment sg = {.g0 = g0, .a = g0, .b = t, .loss_from = loss_from, .weight = weight,
                  .from = ring_at(u, g0), .count_losses = true, .store_states = true,
                  .leaf_grad = g0 == 0 && opts->accumulate && opts->want_dh0 && dh0, .dfrom = dh0};
    return run_segment(u, seq, &sg, opts, res, err, errlen);
}

/* Steps a..b of the window from g0 without a tape, each on the graph
 * rewound (its arena stays one step small and in cache; a backend keeps the
 * window's packed weights). Each state goes through the ring; a stretch of C
 * steps starts at each s = g0 + kC from ckpt[k]. Two uses:
 * - states (!check): ckpt[k] copied from the ring first, and the state at
 *   b + 1 too if a stretch starts there. No losses.
 * - check (a failed window): the losses of steps >= loss_from computed as the
 *   plain window does, for the first failure (a graph error or a non-finite
 *   loss). The ring is scratch then: the run stops. */
static bt_status forward_untaped(bt_unroller *u, const bt_sequence *seq, long g0, long a, long b,
                                 int C, long loss_from, bool check, char *err, size_t errlen)
{
    bt_model *m = u->m;
    bt_graph *g = u->g;
    bt_tensor *state[BT_MAX_STATES], *next[BT_MAX_STATES];
    bt_status st = BT_OK;
    BT_ASSERT((a - g0) % C == 0, "an untaped pass starts at a stretch, not at step %ld", a);
    bt_graph_set_grad(g, false);
    for (long s = a; s <= b + 1 && st == BT_OK; s++) {
        bool start = (s - g0) % C == 0;
        bt_real *src = start ? u->ckpt + (size_t)((s - g0) / C) * u->state_len : ring_at(u, s);
        if (start && !check)
            memcpy(src, ring_at(u, s), sizeof(bt_real) * u->state_len);
        if (s > b)
            break;
        (s == a ? bt_graph_reset : bt_graph_rewind)(g); /* parameters are as they were */
        for (int k = 0; k < m->n_states; k++) {
            state[k] = bt_graph_input(g, 2, (int[]){u->B, m->state_width[k]}, src);
            src += (size_t)u->B * m->state_width[k];
        }
        bt_tensor *o = check ? bt_unroll_step(g, m, seq, s, state, next)
                             : step_output(g, m, seq, s, state, next, NULL, NULL);
        u->failed_at = s;
        if (!o) {
            snprintf(err, errlen, "cell %s: %s", m->cell->name, bt_graph_error(g));
            st = bt_graph_status(g);
            break;
        }
        double lv, lw;
        if (check)
            st = take_loss(seq, s, loss_from, o, &lv, &lw, err, errlen);
        store_state(u, s, next);
    }
    bt_graph_set_grad(g, true);
    return st;
}

/* A rebuilt stretch ending at b failed (st, err). The plain window would
 * have stopped at the first failing step, before any backward: its error is
 * found again by checking the losses from g0 on. (run_update clears what a
 * failed training window left; in accumulate mode the later stretches' terms
 * stay added, as any earlier window's do when a run fails.) */
static bt_status window_failed(bt_unroller *u, const bt_sequence *seq, long g0, long b, int C,
                               long loss_from, bt_status st, char *err, size_t errlen)
{
    char why[BT_ERRMSG_LEN];
    bt_status first = forward_untaped(u, seq, g0, g0, b, C, loss_from, true, why, sizeof why);
    if (first != BT_OK) {
        snprintf(err, errlen, "%s", why);
        st = first;
    }
    return st;
}

/* Checkpointed window: a forward pass without a tape keeps the state every C
 * steps; backward then rebuilds one stretch of C steps at a time, last first,
 * handing the gradient of each stretch's start state to the stretch before.
 * Memory: L/C states plus one stretch's graph; C = sqrt(L) gives O(sqrt L).
 * The gradients are those of the plain window (the same terms, added in the
 * same reverse order). The forward pass computes no losses, asks the cell
 * for its state only, and stops before the last stretch (built with its tape
 * right away): the rebuilt stretches count the losses (the same terms as the
 * plain window, summed stretch by stretch) and check them before any backward
 * of theirs; a failure is traced back to the first step that fails, as the
 * plain window reports it, before any optimizer step. */
static bt_status run_window_checkpointed(bt_unroller *u, const bt_sequence *seq, long g0, long t,
                                         long loss_from, double weight, int C,
                                         const bt_unroll_opts *opts, bt_real *dh0,
                                         bt_unroll_result *res, char *err, size_t errlen)
{
    long L = t - g0 + 1, nseg = (L + C - 1) / C;
    size_t need = (size_t)(nseg + 2) * u->state_len;
    if (need > u->ckpt_cap) {
        bt_real *c = bt_realloc(u->ckpt, sizeof(bt_real) * need);
        if (!c) {
            snprintf(err, errlen, "unroll: out of memory for %ld checkpoints", nseg);
            return BT_ERR_NOMEM;
        }
        u->ckpt = c;
        u->ckpt_cap = need;
    }
    bt_real *dnext = u->ckpt + (size_t)nseg * u->state_len, *dfrom = dnext + u->state_len;

    /* Forward: the states at every stretch start (ring and checkpoints). */
    long last = g0 + (nseg - 1) * C;
    double t0 = bt_monotonic_s();
    bt_status st = forward_untaped(u, seq, g0, g0, last - 1, C, loss_from, false, err, errlen);
    res->untaped_s += bt_monotonic_s() - t0;
    res->untaped_steps += last - g0;
    if (st != BT_OK) /* an earlier step's loss may fail first, as the plain window reports */
        return window_failed(u, seq, g0, u->failed_at < last ? u->failed_at : last - 1, C,
                             loss_from, st, err, errlen);

    /* Backward, one stretch at a time from the last. */
    for (long k = nseg - 1; k >= 0; k--) {
        long a = g0 + k * C, b = a + C - 1 < t ? a + C - 1 : t;
        bool first = k == 0;
        bool want_from = !first || (g0 == 0 && opts->accumulate && opts->want_dh0 && dh0);
        memset(dfrom, 0, sizeof(bt_real) * u->state_len);
        segment sg = {.g0 = g0, .a = a, .b = b, .loss_from = loss_from, .weight = weight,
                      .from = u->ckpt + (size_t)k * u->state_len, .leaf_grad = want_from,
                      .count_losses = true, .store_states = k == nseg - 1, .rewind = true,
                      .dfrom = dfrom, .dnext = k < nseg - 1 ? dnext : NULL};
        st = run_segment(u, seq, &sg, opts, res, err, errlen);
        if (st != BT_OK)
            return window_failed(u, seq, g0, b, C, loss_from, st, err, errlen);
        if (first && want_from)
            for (size_t i = 0; i < u->state_len; i++)
                dh0[i] += dfrom[i];
        memcpy(dnext, dfrom, sizeof(bt_real) * u->state_len);
    }
    return BT_OK;
}

static bt_status optimizer_update(bt_unroller *u, const bt_unroll_opts *opts,
                                  bt_unroll_result *res)
{
    double norm = 0;
    /* on the lanes' threads: the same update, bit for bit, as on one */
    if (bt_optimizer_update(opts->optimizer, opts->clip, bt_unroller_threads(u), &norm) != BT_OK)
        res->skipped++; /* non-finite gradient: no step, as promised by clipping */
    else {
        res->grad_norm_sum += norm;
        if (norm > res->grad_norm_max)
            res->grad_norm_max = norm;
    }
    res->updates++;
    return BT_OK;
}

/* The checkpoint spacing for a window of L steps under a memory budget: none
 * if the plain window fits, else the largest C with
 * (L/C + 2) states + C steps <= budget (every spacing recomputes each step
 * once, so a larger C only saves bookkeeping). Before any step has been
 * measured, sqrt(L) is the safe choice. */
bt_status bt_unroll_budget_bytes(double mb, size_t *bytes, char *err, size_t errlen)
{
    *bytes = 0;
    double b = mb * 1048576.0;
    if (mb == 0)
        return BT_OK;
    if (!(b >= 1) || !(b < 0x1p63))
        return bt_error(err, errlen, BT_ERR_ARG, "memory budget %g MB is %s: give at least one "
                        "byte (%.3g MB), or 0 for none", mb, b < 1 && b >= 0 ? "below one byte"
                        : "not a size", 1 / 1048576.0);
    *bytes = (size_t)b;
    return BT_OK;
}

static bt_status budget_spacing(double p, double s, long L, size_t budget, int *C, char *err,
                                size_t errlen)
{
    double b = (double)budget; /* p: bytes per step (0: none measured yet), s: per state */
    *C = 0;
    if (p <= 0) {
        *C = (int)ceil(sqrt((double)L));
        return BT_OK;
    }
    if (p * (double)L <= b)
        return BT_OK;
    double disc = (b - 2 * s) * (b - 2 * s) - 4 * p * (double)L * s;
    if (disc < 0 || b <= 2 * s) {
        double need = 2 * sqrt(p * (double)L * s) + 2 * s;
        snprintf(err, errlen, "memory budget %.3g MB is too small for a window of %ld steps: "
                 "checkpointing needs at least %.3g MB here", b / 1048576.0, L, need / 1048576.0);
        return BT_ERR_ARG;
    }
    double c = ((b - 2 * s) + sqrt(disc)) / (2 * p);
    *C = c >= (double)L ? 0 : (int)(c < 1 ? 1 : c);
    return BT_OK;
}

static bt_status check_run(const bt_unroller *u, const bt_sequence *seq,
                           const bt_unroll_opts *opts, char *err, size_t errlen)
{
    if (seq->B != u->B || seq->T <= 0)
        return bt_error(err, errlen, BT_ERR_SHAPE, "unroll: sequence has %d rows and %d steps; "
                        "this unroller takes %d rows", seq->B, seq->T, u->B);
    if ((!seq->ids && !seq->x) || (!seq->targets && !seq->y))
        return bt_error(err, errlen, BT_ERR_ARG, "unroll: the sequence needs inputs (token ids "
                        "or x) and targets (token ids or y)");
    if (!opts->policy && !opts->xi)
        return bt_error(err, errlen, BT_ERR_ARG, "unroll: no truncation policy");
    if (!opts->accumulate && !opts->optimizer)
        return bt_error(err, errlen, BT_ERR_ARG, "unroll: training needs an optimizer");
    if (!opts->accumulate && bt_optimizer_params(opts->optimizer) != u->m->params)
        return bt_error(err, errlen, BT_ERR_ARG, "unroll: the optimizer is bound to other "
                        "parameters than the model's");
    return BT_OK;
}

/* Buffers sized and cleared, and rows row0.. of the start state in ring slot 0. */
static bt_status begin_rows(bt_unroller *u, int T, int ring_n, bool want_dh,
                            bt_real *const *state, int row0)
{
    if (reserve(u, T, ring_n, want_dh) != BT_OK ||
        (!u->dh0_flat && !(u->dh0_flat = bt_calloc(u->state_len, sizeof(bt_real)))))
        return BT_ERR_NOMEM;
    memset(u->dh0_flat, 0, sizeof(bt_real) * u->state_len);
    if (want_dh)
        memset(u->dh, 0, sizeof(bt_real) * (size_t)T * (size_t)u->B * (size_t)max_width(u->m));
    bt_real *r0 = ring_at(u, 0);
    for (int k = 0; k < u->m->n_states; k++) {
        size_t len = (size_t)u->B * (size_t)u->m->state_width[k];
        memcpy(r0, state[k] + (size_t)row0 * (size_t)u->m->state_width[k], sizeof(bt_real) * len);
        r0 += len;
    }
    return BT_OK;
}

/* Every lane's buffers and rows (of the sequence and the start state), then
 * the unroller's own, and the policy begun. */
static bt_status begin_run(bt_unroller *u, const bt_sequence *seq, bt_real *const *state,
                           const bt_unroll_opts *opts, int max_reach, bool want_dh, char *err,
                           size_t errlen)
{
    int ring_n = (max_reach > 0 ? max_reach : 1) + 1;
    bt_status st = BT_OK;
    for (int l = 0; l < u->n_lanes && st == BT_OK; l++) {
        lane *ln = &u->lanes[l];
        ln->u->dh_state = u->dh_state;
        ln->u->want_dh0 = u->want_dh0;
        bt_sequence_rows(seq, ln->row0, ln->u->B, u->m->dims.input, u->m->dims.output, &ln->part);
        st = begin_rows(ln->u, seq->T, ring_n, want_dh, state, ln->row0);
    }
    /* With lanes, the unroller itself keeps only the factors xi. */
    st = st != BT_OK ? st
       : u->n_lanes ? reserve(u, seq->T, 0, false) : begin_rows(u, seq->T, ring_n, want_dh, state, 0);
    if (st != BT_OK)
        return bt_error(err, errlen, BT_ERR_NOMEM, "unroll: out of memory for %d steps", seq->T);
    if (opts->policy && opts->policy->begin)
        opts->policy->begin(opts->policy_state, opts->policy_seed);
    return BT_OK;
}

/* What happens before step t: the policy's decision, or a replayed xi (cut
 * and update at its zeros). */
static bt_status decide(bt_unroller *u, const bt_sequence *seq, const bt_unroll_opts *opts,
                        long t, double *xi_used, bt_policy_decision *d, char *err, size_t errlen)
{
    *d = (bt_policy_decision){.xi = 1, .update = false, .reach = 0};
    if (opts->policy)
        opts->policy->decide(opts->policy_state, t, d);
    if (opts->xi) {
        d->xi = opts->xi[t];
        d->update = t + 1 < seq->T && opts->xi[t + 1] == 0;
        d->reach = 0;
    }
    if (!isfinite(d->xi))
        return bt_error(err, errlen, BT_ERR_NUMERIC, "policy gave a non-finite xi at step %ld", t);
    u->xi[t] = d->xi;
    if (xi_used)
        xi_used[t] = d->xi;
    return BT_OK;
}

/* The window of an update at step t: the steps since the last update, or the
 * policy's reach (TBPTT's K2) if longer, but never beyond the bound the policy
 * declared (max_reach; 0 declares none, so the ring holds no more), nor
 * before step 0. Returns its length. */
static long window_reach(long t, long last_update, const bt_policy_decision *d, int max_reach)
{
    long since = t - last_update;
    long want = d->reach < max_reach ? d->reach : max_reach;
    long reach = want > since ? want : since;
    return reach > t + 1 ? t + 1 : reach;
}

/* What the update at step t is: its window (start g0, losses from loss_from)
 * and the factors on its steps, as one checksum (dist.h's). */
static uint64_t update_digest(const bt_unroller *u, long t, long g0, long loss_from)
{
    long at[3] = {t, g0, loss_from};
    uint64_t h = bt_dist_checksum(0, at, sizeof at);
    return bt_dist_checksum(h, u->xi + g0, sizeof(double) * (size_t)(t - g0 + 1));
}

/* The checkpoint spacing of a window of `reach` steps: --checkpoint, or the
 * memory budget's; 0 for a plain window. With lanes, whose windows are alive
 * at once, their bytes per step and states add up against the one budget,
 * and all use one spacing. */
static bt_status window_spacing(bt_unroller *u, const bt_unroll_opts *opts, long reach, int *C,
                                char *err, size_t errlen)
{
    *C = opts->checkpoint_every > 0 ? opts->checkpoint_every
       : opts->checkpoint_every < 0 ? (int)ceil(sqrt((double)reach)) : 0;
    if (*C || !opts->memory_budget)
        return BT_OK;
    double per_step = u->n_lanes ? 0 : u->bytes_per_step;
    for (int l = 0; l < u->n_lanes; l++) {
        double p = u->lanes[l].u->bytes_per_step;
        if (p <= 0) { /* a lane not measured yet: sqrt spacing */
            per_step = 0;
            break;
        }
        per_step += p;
    }
    return budget_spacing(per_step, (double)u->state_len * sizeof(bt_real), reach,
                          opts->memory_budget, C, err, errlen);
}

/* The window of steps t - reach + 1 .. t on this unroller's rows, its losses
 * from last_update + 1: checkpointed every C steps, or plain. */
static bt_status window_on_rows(bt_unroller *u, const bt_sequence *seq,
                                const bt_unroll_opts *opts, long t, long last_update, long reach,
                                int C, double weight, bt_unroll_result *res, char *err,
                                size_t errlen)
{
    bt_real *d0 = u->want_dh0 ? u->dh0_flat : NULL;
    if (C > 0 && reach > C)
        return run_window_checkpointed(u, seq, t - reach + 1, t, last_update + 1, weight, C, opts,
                                       d0, res, err, errlen);
    return run_window(u, seq, t - reach + 1, t, last_update + 1, weight, opts, d0, res, err,
                      errlen);
}

/* ---- Lanes: a batch's rows split over threads ----------------------------
 * An RNN's rows never meet before the loss, so each lane runs the whole
 * window, forward and backward, over its own rows on its own graph, with a
 * replica of the model that reads the same weights and keeps its own
 * gradients. The policy decides once for all rows; each lane's losses weigh
 * by its share of the rows, so after a window the sum of the lanes'
 * gradients (in lane order: the same sum every run) is the batch's, and the
 * update hook, clipping and the optimizer run once, as with one lane. Only
 * the rounding of the split products differs from one lane. */

static void lanes_free(bt_unroller *u)
{
    for (int l = 0; l < u->n_lanes; l++) {
        bt_unroller_free(u->lanes[l].u);
        bt_model_free(u->lanes[l].replica);
    }
    bt_free(u->lanes);
    u->lanes = NULL;
    u->n_lanes = 0;
}

bt_status bt_unroller_set_threads(bt_unroller *u, int n, char *err, size_t errlen)
{
    if (n < 1)
        return bt_error(err, errlen, BT_ERR_ARG, "%d threads: at least one is needed", n);
    if (n > u->B)
        return bt_error(err, errlen, BT_ERR_ARG, "%d threads for %d row%s: each thread takes at "
                        "least one row of the batch (use at most %d threads, or a larger batch)",
                        n, u->B, u->B == 1 ? "" : "s", u->B);
    lanes_free(u);
    if (n == 1)
        return BT_OK;
    if (!(u->lanes = bt_calloc((size_t)n, sizeof *u->lanes)))
        return bt_error(err, errlen, BT_ERR_NOMEM, "unroll: out of memory for %d threads", n);
    u->n_lanes = n;
    bt_status st = BT_OK;
    for (int l = 0; l < n && st == BT_OK; l++) {
        lane *ln = &u->lanes[l];
        ln->row0 = (int)((long)u->B * l / n);
        int rows = (int)((long)u->B * (l + 1) / n) - ln->row0;
        if (l > 0)
            st = bt_model_replica(u->m, &ln->replica, err, errlen);
        if (st == BT_OK)
            st = bt_unroller_new(l > 0 ? ln->replica : u->m, rows, 1, &ln->u, err, errlen);
    }
    if (st != BT_OK)
        lanes_free(u);
    return st;
}

int bt_unroller_threads(const bt_unroller *u) { return u->n_lanes ? u->n_lanes : 1; }

/* A failed lanes' window: the failure at the earliest step (the one a single
 * graph would have stopped at), its rows named; the replicas' gradients
 * cleared (run_update clears the model's in training, as with one lane). */
static bt_status lanes_failed(bt_unroller *u, char *err, size_t errlen)
{
    const lane *first = NULL;
    for (int l = 0; l < u->n_lanes; l++) {
        const lane *ln = &u->lanes[l];
        if (ln->st != BT_OK && (!first || ln->u->failed_at < first->u->failed_at))
            first = ln;
        if (ln->replica)
            bt_params_zero_grad(ln->replica->params);
    }
    int r0 = first->row0, r1 = first->row0 + first->u->B - 1;
    if (r0 == r1)
        return bt_error(err, errlen, first->st, "row %d of %d: %s", r0, u->B, first->err);
    return bt_error(err, errlen, first->st, "rows %d-%d of %d: %s", r0, r1, u->B, first->err);
}

/* After the lanes' window: their gradients summed into the model's (and
 * cleared), losses weighed by rows, arenas added up (they are alive at once). */
static bt_status lanes_gather(bt_unroller *u, bt_unroll_result *res, char *err, size_t errlen)
{
    for (int l = 0; l < u->n_lanes; l++)
        if (u->lanes[l].st != BT_OK)
            return lanes_failed(u, err, errlen);
    bt_real *g = bt_params_grad(u->m->params);
    size_t P = bt_params_total(u->m->params), arenas = 0;
    int n = u->n_lanes;
    /* Each thread sums a slice of the parameters over the lanes, in lane
     * order: the same sum as one thread's, and no core idles through it (it
     * reads and writes every gradient: 4 MB per lane at hidden 1024). */
#ifdef _OPENMP
#pragma omp parallel for num_threads(n) schedule(static, 1)
#endif
    for (int c = 0; c < n; c++) {
        size_t lo = P * (size_t)c / (size_t)n, hi = P * (size_t)(c + 1) / (size_t)n;
        for (int l = 1; l < n; l++) {
            bt_real *gl = bt_params_grad(u->lanes[l].replica->params);
            for (size_t i = lo; i < hi; i++)
                g[i] += gl[i];
            memset(gl + lo, 0, sizeof *gl * (hi - lo));
        }
    }
    for (int l = 0; l < u->n_lanes; l++) {
        const lane *ln = &u->lanes[l];
        res->loss_sum += ln->res.loss_sum * ((double)ln->u->B / (double)u->B);
        arenas += ln->res.peak_arena;
    }
    res->loss_terms += u->lanes[0].res.loss_terms;
    if (arenas > res->peak_arena)
        res->peak_arena = arenas;
    /* every lane runs the same steps; the window waits for the slowest pass
     * (without OpenMP the lanes run one after another: for all of them) */
    double untaped = 0;
    for (int l = 0; l < u->n_lanes; l++)
#ifdef _OPENMP
        untaped = fmax(untaped, u->lanes[l].res.untaped_s);
#else
        untaped += u->lanes[l].res.untaped_s;
#endif
    res->untaped_s += untaped;
    res->untaped_steps += u->lanes[0].res.untaped_steps;
    return BT_OK;
}

/* One window on every lane at once, each on its own thread. */
static bt_status lanes_window(bt_unroller *u, const bt_unroll_opts *opts, long t,
                              long last_update, long reach, int C, double weight,
                              bt_unroll_result *res, char *err, size_t errlen)
{
    long g0 = t - reach + 1;
#ifdef _OPENMP
#pragma omp parallel for num_threads(u->n_lanes) schedule(static, 1)
#endif
    for (int l = 0; l < u->n_lanes; l++) {
        lane *ln = &u->lanes[l];
        memcpy(ln->u->xi + g0, u->xi + g0, sizeof(double) * (size_t)reach);
        memset(&ln->res, 0, sizeof ln->res);
        ln->err[0] = '\0';
        ln->u->failed_at = LONG_MAX;
        double share = (double)ln->u->B / (double)u->B;
        ln->st = window_on_rows(ln->u, &ln->part, opts, t, last_update, reach, C, weight * share,
                                &ln->res, ln->err, sizeof ln->err);
    }
    return lanes_gather(u, res, err, errlen);
}

/* The update at step t: one window, plain or checkpointed, then (training)
 * the optimizer step. */
static bt_status run_update(bt_unroller *u, const bt_sequence *seq, const bt_unroll_opts *opts,
                            long t, long last_update, long reach, double weight,
                            bt_unroll_result *res, char *err, size_t errlen)
{
    if (opts->windows && res->n_windows < opts->windows_cap)
        opts->windows[res->n_windows] = (bt_window){t - reach + 1, t, last_update + 1};
    res->n_windows++;
    int C;
    bt_status st = window_spacing(u, opts, reach, &C, err, errlen);
    if (st != BT_OK)
        return st;
    double loss_before = res->loss_sum;
    st = u->n_lanes ? lanes_window(u, opts, t, last_update, reach, C, weight, res, err, errlen)
                    : window_on_rows(u, seq, opts, t, last_update, reach, C, weight, res, err,
                                     errlen);
    if (st != BT_OK && !opts->accumulate) /* a failed window teaches nothing, whatever ran */
        bt_params_zero_grad(u->m->params);
    if (opts->on_update && !opts->accumulate) {
        double loss = res->loss_sum - loss_before;
        st = opts->on_update(opts->update_ctx, u->m->params, st,
                             update_digest(u, t, t - reach + 1, last_update + 1), &loss, err,
                             errlen);
        if (st == BT_OK)
            res->loss_sum = loss_before + loss;
    }
    if (st == BT_OK && !opts->accumulate)
        optimizer_update(u, opts, res);
    return st;
}

/* Rows row0.. of the final state carried out in value, dL/dh0 added in, and
 * the squares of the per-step state gradients added to dh2 (if not NULL). */
static void finish_rows(bt_unroller *u, int T, bt_real *const *state, bt_real *const *dh0,
                        double *dh2, int row0)
{
    const bt_real *d = u->dh0_flat, *rT = ring_at(u, T);
    for (int k = 0; k < u->m->n_states; k++) {
        size_t len = (size_t)u->B * (size_t)u->m->state_width[k];
        size_t at = (size_t)row0 * (size_t)u->m->state_width[k];
        for (size_t i = 0; dh0 && i < len; i++)
            dh0[k][at + i] += d[i];
        memcpy(state[k] + at, rT, sizeof(bt_real) * len);
        d += len;
        rT += len;
    }
    size_t w = (size_t)u->B * (size_t)u->m->state_width[u->dh_state];
    for (int s = 0; dh2 && s < T; s++)
        for (size_t i = 0; i < w; i++)
            dh2[s] += (double)u->dh[(size_t)s * w + i] * (double)u->dh[(size_t)s * w + i];
}

/* The final state, dL/dh0 and the norms of the per-step state gradients,
 * from every lane's rows. */
static void finish_run(bt_unroller *u, int T, bt_real *const *state, bt_real *const *dh0,
                       double *dh_norms, bool want_dh)
{
    for (int s = 0; want_dh && s < T; s++)
        dh_norms[s] = 0;
    int n = u->n_lanes ? u->n_lanes : 1;
    for (int l = 0; l < n; l++)
        finish_rows(u->n_lanes ? u->lanes[l].u : u, T, state, dh0, want_dh ? dh_norms : NULL,
                    u->n_lanes ? u->lanes[l].row0 : 0);
    for (int s = 0; want_dh && s < T; s++)
        dh_norms[s] = sqrt(dh_norms[s]);
}

static bt_status unroll_run(bt_unroller *u, const bt_sequence *seq, bt_real *const *state,
                            const bt_unroll_opts *opts, double *xi_used, bt_real *const *dh0,
                            double *dh_norms, bt_unroll_result *res, char *err, size_t errlen)
{
    memset(res, 0, sizeof *res);
    bt_status st = check_run(u, seq, opts, err, errlen);
    if (st != BT_OK)
        return st;
    int T = seq->T;
    int max_reach = opts->policy && opts->policy->max_reach
                  ? opts->policy->max_reach(opts->policy_state) : 0;
    if (max_reach < 0)
        max_reach = 0;
    bool want_dh = opts->accumulate && opts->want_dh_norms && dh_norms;
    u->want_dh0 = opts->accumulate && opts->want_dh0 && dh0;
    if ((st = begin_run(u, seq, state, opts, max_reach, want_dh, err, errlen)) != BT_OK)
        return st;
    /* Every step's loss weighs 1/T of the sequence (1/sum of the loss weights),
     * whatever the policy: the updates of a sequence then add up to the
     * gradient that accumulate mode reports, full BPTT is the classic mean,
     * and random truncation stays unbiased (a per-window mean would give the
     * long windows, the only ones that see long lags, too little weight). */
    double seq_weight = 0;
    for (long s = 0; s < T; s++)
        seq_weight += seq->loss_weight ? (double)seq->loss_weight[s] : 1.0;
    double weight = seq_weight > 0 ? 1.0 / seq_weight : 0;
    long last_update = -1;
    for (long t = 0; t < T; t++) {
        bt_policy_decision d;
        if ((st = decide(u, seq, opts, t, xi_used, &d, err, errlen)) != BT_OK)
            return st;
        if (!d.update && t != T - 1)
            continue;
        long reach = window_reach(t, last_update, &d, max_reach);
        if ((st = run_update(u, seq, opts, t, last_update, reach, weight, res, err, errlen)) != BT_OK)
            return st;
        last_update = t;
    }
    finish_run(u, T, state, u->want_dh0 ? dh0 : NULL, dh_norms, want_dh);
    return BT_OK;
}

bt_status bt_unroll_run(bt_unroller *u, const bt_sequence *seq, bt_real *const *state,
                        const bt_unroll_opts *opts, double *xi_used, bt_real *const *dh0,
                        double *dh_norms, bt_unroll_result *res, char *err, size_t errlen)
{
    /* A stack's dropout acts for this run only, its masks from the sequence's
     * seed: every window that rebuilds a step draws that step's mask again. */
    if (opts->dh_state < 0 || opts->dh_state >= u->m->n_states)
        return bt_error(err, errlen, BT_ERR_ARG, "unroll: dh_state %d is not one of the model's "
                        "%d states", opts->dh_state, u->m->n_states);
    u->dh_state = opts->dh_state;
    if (u->n_lanes && opts->dropout && u->m->dropout > 0)
        return bt_error(err, errlen, BT_ERR_ARG, "dropout with %d threads: a mask follows its "
                        "rows' places in the batch, so split rows would draw other masks (use "
                        "one thread)", u->n_lanes);
    u->m->dropout_on = opts->dropout && u->m->dropout > 0;
    u->m->dropout_seed = bt_dropout_sequence_seed(opts->policy_seed);
    bt_status st = unroll_run(u, seq, state, opts, xi_used, dh0, dh_norms, res, err, errlen);
    u->m->dropout_on = false;
    return st;
}
