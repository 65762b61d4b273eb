/* stack.h: a model that is a stack of recurrent layers, each a cell (any
 * registered one that declares BT_CELL_STACKABLE) of its own width: layer 1
 * reads the input (token ids or real rows), layer l+1 reads layer l's h_t at
 * the same step, and a host output layer maps the top h_t to the output:
 *   h_t^1 = cell_1(x_t, s_{t-1}^1),  h_t^l = cell_l(drop(h_t^{l-1}), s_{t-1}^l)
 *   o_t = drop(h_t^L) out.W_hq + out.b_q
 * Parameters are the layers' own, prefixed "l1.", "l2.", ..., then out.W_hq
 * [H_L,Q] and out.b_q [Q]; states are the layers' states in layer order, so
 * the unroller puts the policy's xi_t on every layer's recurrent edge. One
 * layer without dropout is the classic model (its cell's own output layer,
 * unprefixed names): files from before stacks read as they always did.
 *
 * Dimension letters: B rows, H_l width of layer l, Q output width. */
#ifndef BPTT_STACK_H
#define BPTT_STACK_H

#include "model.h"
#include "registry.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One layer: its cell and width. */
typedef struct bt_layer_def {
    const bt_cell_def *cell;
    int hidden;
} bt_layer_def;

/* A stack of n layers (1 to BT_MAX_LAYERS) between inputs of width `input`
 * (V for token ids) and outputs of width `output`, with dropout probability
 * `dropout` in [0, 1) on each layer's h (variational: one mask per sequence).
 * n == 1 without dropout gives the classic model (bt_model_new). */
BT_API bt_status bt_model_new_stack(const bt_layer_def *layers, int n, int input, int output,
                                    double dropout, bool variational, bt_model **out, char *err,
                                    size_t errlen);

/* The architecture as text. `layers` is "" (one layer: cell, hidden), "N"
 * (N layers of cell at width hidden) or "C:H,C:H,..." (per layer; ":H" may be
 * left off for width hidden). Fills up to BT_MAX_LAYERS defs; returns the
 * count, or -1 with a message (unknown cell, bad width, too many layers). */
BT_API int bt_layers_parse(const bt_registry *reg, const char *layers, const char *cell,
                           int hidden, bt_layer_def *out, char *err, size_t errlen);
/* A --layers spec in canonical form, in place and without the registry:
 * one layer becomes "" with *cell and *hidden set to it; more become
 * "C:H,C:H,..." with every cell and width written (cell and hidden fill what
 * the spec leaves out), and *cell, *hidden are then layer 1's. BT_ERR_ARG
 * with a message on a malformed spec. */
BT_API bt_status bt_layers_canonical(char *layers, size_t len, char *cell, size_t cell_len,
                                     int *hidden, char *err, size_t errlen);
/* "lstm:256,lstm:256": the canonical per-layer form. */
BT_API const char *bt_layers_format(const bt_layer_def *layers, int n, char *buf, size_t len);

/* m's layers as "lstm:4,gru:3" (canonical; "" for the classic model). */
BT_API const char *bt_model_layers_text(const bt_model *m, char *buf, size_t len);

/* bt_layers_parse, then bt_model_new_stack. */
BT_API bt_status bt_model_from_arch(const bt_registry *reg, const char *layers, const char *cell,
                                    int hidden, double dropout, bool variational, int input,
                                    int output, bt_model **out, char *err, size_t errlen);

/* A second model of m's architecture whose values are m's (bt_params_share_values):
 * its own gradients, for a thread that backpropagates part of a batch. m must
 * outlive it; free it with bt_model_free. */
BT_API bt_status bt_model_replica(bt_model *m, bt_model **out, char *err, size_t errlen);

/* The name of initial state k in grad files: "h0", "c0", "s2_0" (classic);
 * "l1.h0", "l1.c0", "l2.h0", ... (a stack, by the layer's own state index). */
BT_API const char *bt_model_state_name(const bt_model *m, int k, char *buf, size_t len);
/* The layer (0-based) state k belongs to; 0 for the classic model. */
BT_API int bt_model_state_layer(const bt_model *m, int k);

/* The dropout seed of a sequence whose policy draws from policy_seed (the
 * unroller's, and a gradient check's that replays it). */
BT_API uint64_t bt_dropout_sequence_seed(uint64_t policy_seed);
/* The seed of layer l's dropout mask at step t (t ignored when variational). */
BT_API uint64_t bt_stack_mask_seed(const bt_model *m, int l, long t);

#ifdef __cplusplus
}
#endif
#endif
