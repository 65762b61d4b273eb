/* bptt.h: the public API of the bptt autodiff engine.
 *
 * A graph (tape) records every op in creation order; bt_backward walks it in
 * reverse and accumulates gradients; bt_jvp walks it forward and pushes
 * tangents (forward mode, docs/forward-mode.md). Parameters live in a model-lifetime block
 * (bt_params); activations and tape nodes live in the graph's arena, which
 * bt_graph_reset releases in O(1).
 *
 * Errors: a call that can fail returns a bt_status (or NULL) and leaves a
 * message where the caller reads it: ops and graph calls in the graph
 * (bt_graph_error), parameter declarations in the block (bt_params_error),
 * everything else in the err/errlen buffer it is given. Graph and block errors
 * are sticky: an op given a NULL input returns NULL, so a whole cell can be
 * written without checks and the first error is reported at the end. The
 * library never calls exit() or abort() on user input; only a bug in bptt
 * itself aborts, naming its file and line.
 *
 * Dimension letters: M rows (batch), N/K columns, V vocabulary, H hidden.
 */
#ifndef BPTT_H
#define BPTT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bptt_config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Marks a public function: with hidden visibility by default, the functions
 * declared with BT_API in installed headers are all a library exports. */
#ifndef BT_API
#define BT_API __attribute__((visibility("default")))
#endif

#if BT_REAL_DOUBLE
typedef double bt_real;
#else
typedef float bt_real;
#endif

#define BT_MAX_DIMS 4
#define BT_ERRMSG_LEN 512

typedef enum bt_status {
    BT_OK = 0,
    BT_ERR_ARG,      /* invalid argument (bad option, NULL where a value is needed) */
    BT_ERR_SHAPE,    /* shapes do not fit the op */
    BT_ERR_NOMEM,    /* allocation failed */
    BT_ERR_IO,       /* file could not be read or written */
    BT_ERR_FORMAT,   /* malformed file */
    BT_ERR_PLUGIN,   /* plugin could not be loaded or registered */
    BT_ERR_NUMERIC,  /* NaN or infinity where a finite value is required */
    BT_ERR_NOT_FOUND /* unknown name */
} bt_status;

BT_API const char *bt_status_name(bt_status s);
/* Writes a message into err (if err and errlen); bt_error also returns s, so
 * a failure path is one line: return bt_error(err, errlen, BT_ERR_IO, ...). */
BT_API void bt_errorf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
BT_API bt_status bt_error(char *err, size_t errlen, bt_status s, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
BT_API const char *bt_version(void);

/* ---- tensors ------------------------------------------------------------ */

/* A recorded op application; its fields are for op authors (bptt_op.h). */
typedef struct bt_node bt_node;

/* Dense row-major tensor. ndim 0 is a scalar (size 1). */
typedef struct bt_tensor {
    int ndim;
    int shape[BT_MAX_DIMS];
    size_t size;          /* product of shape */
    bt_real *data;        /* [size] */
    bt_real *grad;        /* [size] or NULL; accumulated by bt_backward. An op output's
                             belongs to its graph's tape: read it, never set it */
    bool requires_grad;   /* leaf: wants a gradient; op output: some input does */
    bool retain_grad;     /* op output: keep grad readable after backward (ops may
                             otherwise reuse it in place once it has been consumed) */
    bool param;           /* set by bt_params_add, not by hand: a weight, whose gradient
                             ops may batch over a backward sweep (complete when it returns) */
    bt_node *node;        /* op that produced it, NULL for a leaf */
    const char *name;     /* optional, for messages */
    bt_real *tangent;     /* [size] or NULL (a zero tangent): forward mode (bt_jvp).
                             Leaf: set by the caller, who owns the buffer; op output:
                             written by bt_jvp, valid until the next sweep or reset */
} bt_tensor;

/* The one shape check: 0 to BT_MAX_DIMS dims, each size positive, and a
 * product (written to *size) whose bytes do not overflow a size_t. */
BT_API bt_status bt_shape_size(int ndim, const int *shape, size_t *size, char *err, size_t errlen);
/* A standalone tensor on the heap (zeroed, with a zeroed grad when
 * requires_grad), for users and tests. */
BT_API bt_status bt_tensor_new(int ndim, const int *shape, bool requires_grad, bt_tensor **out,
                               char *err, size_t errlen);
BT_API void bt_tensor_free(bt_tensor *t);
BT_API void bt_tensor_zero_grad(bt_tensor *t);
/* "[2,3]" into buf. */
BT_API const char *bt_shape_str(const bt_tensor *t, char *buf, size_t len);
BT_API bool bt_shape_equal(const bt_tensor *a, const bt_tensor *b);

/* ---- heap allocation accounting ------------------------------------------ */

/* Every heap allocation the library makes goes through these, so a test can
 * count them (bt_alloc_count) and prove a steady-state step allocates nothing. */
BT_API void *bt_malloc(size_t n);
BT_API void *bt_calloc(size_t n, size_t size);
BT_API void *bt_realloc(void *p, size_t n);
BT_API void bt_free(void *p);
BT_API uint64_t bt_alloc_count(void);

/* ---- arena ---------------------------------------------------------------- */

/* Bump allocator made of chunks. Reset rewinds to the first chunk and keeps
 * every chunk, so a window that fits once never allocates again. */
typedef struct bt_arena bt_arena;
BT_API bt_arena *bt_arena_new(size_t chunk_bytes);
BT_API void bt_arena_free(bt_arena *a);
BT_API void *bt_arena_alloc(bt_arena *a, size_t bytes);  /* 64-byte aligned, not zeroed */
BT_API void *bt_arena_calloc(bt_arena *a, size_t bytes); /* zeroed */
BT_API void bt_arena_reset(bt_arena *a);
BT_API size_t bt_arena_used(const bt_arena *a);
BT_API size_t bt_arena_high_water(const bt_arena *a); /* most bytes ever in use */
BT_API size_t bt_arena_reserved(const bt_arena *a);   /* bytes held in chunks */

/* ---- graph (tape) ---------------------------------------------------------- */

typedef struct bt_graph bt_graph;

BT_API bt_graph *bt_graph_new(void);
BT_API void bt_graph_free(bt_graph *g);
/* Releases every node and activation of the window in O(1) (arena reset).
 * Tensors made by this graph are invalid afterwards. Clears the error. */
BT_API void bt_graph_reset(bt_graph *g);
/* bt_graph_reset, except that weights packed for this window's products stay
 * packed (-Dblas=dnnl): for a pass that releases every step's activations
 * while the parameters stay as they are (a checkpointed window's forward pass
 * without a tape). After a parameter changes, call bt_graph_reset. */
BT_API void bt_graph_rewind(bt_graph *g);
/* A hint: the graph is about to run `steps` steps of a recurrent cell (until
 * the next reset or rewind). Ops that run once per step may then place their
 * outputs side by side (bt_op_output_lane), in a block the arena gives at the
 * first step, which the weight gradients read without copying. Results are the
 * same with or without it. */
BT_API void bt_graph_plan_steps(bt_graph *g, int steps);
/* With grad disabled, ops compute their outputs but record nothing. */
BT_API void bt_graph_set_grad(bt_graph *g, bool enabled);
BT_API bool bt_graph_grad_enabled(const bt_graph *g);
BT_API size_t bt_graph_node_count(const bt_graph *g);
BT_API bt_arena *bt_graph_arena(bt_graph *g);

/* Sticky error state: first error wins until reset or clear. */
BT_API bt_status bt_graph_status(const bt_graph *g);
BT_API const char *bt_graph_error(const bt_graph *g);
BT_API void bt_graph_clear_error(bt_graph *g);
BT_API bt_status bt_graph_fail(bt_graph *g, bt_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A tensor in the graph's arena: zeroed (bt_graph_tensor) or a copy of data. */
BT_API bt_tensor *bt_graph_tensor(bt_graph *g, int ndim, const int *shape);
BT_API bt_tensor *bt_graph_tensor2(bt_graph *g, int rows, int cols);
BT_API bt_tensor *bt_graph_input(bt_graph *g, int ndim, const int *shape, const bt_real *data);

/* Reverse-mode sweep from a scalar loss: seeds dloss = 1, walks the tape in
 * reverse and accumulates (+=) into the grad of every tensor that requires one.
 * Leaf gradients accumulate across calls; intermediate gradients are fresh. */
BT_API bt_status bt_backward(bt_graph *g, bt_tensor *loss);
/* Same, seeding dloss with a given gradient of loss's shape. */
BT_API bt_status bt_backward_from(bt_graph *g, bt_tensor *out, const bt_real *dout);

/* Forward-mode sweep (docs/forward-mode.md): walks the tape in creation order
 * and sets the tangent of every recorded op's output, out' = sum_i df/din_i
 * in_i', from the tangents the caller put on leaves (t->tangent, NULL = zero).
 * Only recorded nodes carry tangents, and a node is recorded only when an
 * input requires grad: a leaf with a tangent must have requires_grad set (a
 * tangent on a leaf that does not is ignored, as are tangents a caller puts
 * on op outputs). detach and grad_scale(0) pass a zero tangent (a constant,
 * as in backward); grad_scale(xi != 0) passes it unchanged (xi scales only
 * backward). A sweep can be repeated on the same recorded graph with other
 * leaf tangents, before or after bt_backward, any number of times: each
 * recomputes every output tangent, reusing its buffers (in the graph's arena,
 * made by the first sweep that reaches a node), so later sweeps allocate
 * nothing. BT_ERR_ARG if the tape holds an op without a tangent rule. */
BT_API bt_status bt_jvp(bt_graph *g);

/* ---- ops (in ops/, forward and backward side by side) ---------------------- */

/* out[M,N] = op(a)[M,K] x op(b)[K,N], op = transpose when the flag is set. */
BT_API bt_tensor *bt_matmul(bt_graph *g, bt_tensor *a, bt_tensor *b);
BT_API bt_tensor *bt_matmul_t(bt_graph *g, bt_tensor *a, bool trans_a, bt_tensor *b, bool trans_b);
/* Elementwise with broadcasting: b's shape, aligned to the right, has each dim
 * equal to a's or 1 (a row bias [N] on [M,N] is the common case), or a
 * broadcasts to b the same way. */
BT_API bt_tensor *bt_add(bt_graph *g, bt_tensor *a, bt_tensor *b);
BT_API bt_tensor *bt_sub(bt_graph *g, bt_tensor *a, bt_tensor *b);
BT_API bt_tensor *bt_mul(bt_graph *g, bt_tensor *a, bt_tensor *b);
BT_API bt_tensor *bt_neg(bt_graph *g, bt_tensor *a);
BT_API bt_tensor *bt_scale(bt_graph *g, bt_tensor *a, double c);
BT_API bt_tensor *bt_exp(bt_graph *g, bt_tensor *a);
BT_API bt_tensor *bt_log(bt_graph *g, bt_tensor *a);
BT_API bt_tensor *bt_tanh(bt_graph *g, bt_tensor *a);
BT_API bt_tensor *bt_sigmoid(bt_graph *g, bt_tensor *a);
BT_API bt_tensor *bt_relu(bt_graph *g, bt_tensor *a);
BT_API bt_tensor *bt_sum(bt_graph *g, bt_tensor *a);  /* scalar */
BT_API bt_tensor *bt_mean(bt_graph *g, bt_tensor *a); /* scalar */
/* Along the last (feature) axis of 2-D tensors with equal row counts. */
BT_API bt_tensor *bt_concat(bt_graph *g, bt_tensor *const *parts, int n);
BT_API bt_tensor *bt_slice(bt_graph *g, bt_tensor *a, int start, int len);
/* out[M,N] = table[ids[i], :]: one-hot(ids) x table[V,N] without the one-hot. */
BT_API bt_tensor *bt_embedding(bt_graph *g, bt_tensor *table, const int32_t *ids, int m);
/* mean over rows of -log softmax(logits)[row, target[row]]; scalar. */
BT_API bt_tensor *bt_softmax_xent(bt_graph *g, bt_tensor *logits, const int32_t *targets);
/* mean over rows of 0.5 * ||o - y||^2; scalar. */
BT_API bt_tensor *bt_mse(bt_graph *g, bt_tensor *o, bt_tensor *y);
/* Identity forward; no gradient reaches x. */
BT_API bt_tensor *bt_detach(bt_graph *g, bt_tensor *x);
/* Identity forward; backward multiplies the gradient by xi (xi = 0 is a detach). */
BT_API bt_tensor *bt_grad_scale(bt_graph *g, bt_tensor *x, double xi);
/* Inverted dropout: x * m / (1 - p), m_i = 1 when bt_dropout_uniform(seed, i)
 * >= p (i the flat index), so a seed fixes the mask; p in [0, 1). */
BT_API bt_tensor *bt_dropout(bt_graph *g, bt_tensor *x, double p, uint64_t seed);
/* The uniform in [0, 1) that decides element i of seed's mask. */
BT_API double bt_dropout_uniform(uint64_t seed, uint64_t i);

/* Fused tanh RNN step: tanh(x W_x + h W_hh + b), x given as token ids (a row
 * lookup in W_x [V,H]) or as a real x [B,D] (ids NULL; W_x [D,H]). Keeps only
 * its output, so it is the memory- and time-lean form of the classic cell. */
BT_API bt_tensor *bt_rnn_tanh_step(bt_graph *g, bt_tensor *w_x, const int32_t *ids,
                                   bt_tensor *x, bt_tensor *h, bt_tensor *w_hh, bt_tensor *b);

/* The LSTM step in three fused ops (torch.nn.LSTM's gate order i, f, g, o,
 * blocks of H columns): act [B,4H] = [s(a_i) s(a_f) tanh(a_g) s(a_o)] with
 * a = xw + h W_h + b (xw [B,4H]: the input's x W_x or its row lookup, W_h
 * [H,4H], b [4H]); then c' = f c + i g and h' = o tanh(c'), each reading
 * act's blocks in place (c, c', h' [B,H]). */
BT_API bt_tensor *bt_lstm_gates(bt_graph *g, bt_tensor *xw, bt_tensor *h, bt_tensor *w_h,
                                bt_tensor *b);
BT_API bt_tensor *bt_lstm_cell(bt_graph *g, bt_tensor *act, bt_tensor *c);
BT_API bt_tensor *bt_lstm_hidden(bt_graph *g, bt_tensor *act, bt_tensor *c);

/* The GRU step of torch.nn.GRU in two fused ops (gates r, z, n, blocks of H
 * columns): act [B,3H] = [r z n] with r, z = sigmoid((xw + b_ih) +
 * (h W_hh + b_hh)) on their blocks and n = tanh((xw + b_ih)'s n block + r hn),
 * hn = (h W_hh + b_hh)'s n block (xw [B,3H]: the input's x W_ih or its row
 * lookup, W_hh [H,3H], b_ih and b_hh [3H]); then h' = n + z (h - n), reading
 * act's blocks in place (h, h' [B,H]). */
BT_API bt_tensor *bt_gru_gates(bt_graph *g, bt_tensor *xw, bt_tensor *h, bt_tensor *w_hh,
                               bt_tensor *b_ih, bt_tensor *b_hh);
BT_API bt_tensor *bt_gru_hidden(bt_graph *g, bt_tensor *act, bt_tensor *h);

/* The GRU step of Cho et al. (2014) and d2l.ai, where the reset gate multiplies
 * h before the candidate's product, in three fused ops (xw [B,3H]: the
 * input's x W_x or its row lookup, and b [3H], both in blocks z | r | n):
 * zr [B,2H] = sigmoid((xw + b)'s z, r blocks + h W_hzr) (W_hzr [H,2H], blocks
 * z | r); rh = r h (r read in place from zr); h' = n + z (h - n) with
 * n = tanh((xw + b)'s n block + rh W_hh) (W_hh [H,H]; h, rh, h' [B,H]). */
BT_API bt_tensor *bt_gru_cho_gates(bt_graph *g, bt_tensor *xw, bt_tensor *h, bt_tensor *w_hzr,
                                   bt_tensor *b);
BT_API bt_tensor *bt_gru_cho_reset(bt_graph *g, bt_tensor *zr, bt_tensor *h);
BT_API bt_tensor *bt_gru_cho_hidden(bt_graph *g, bt_tensor *xw, bt_tensor *h, bt_tensor *zr,
                                    bt_tensor *rh, bt_tensor *w_hh, bt_tensor *b);

/* ---- parameters: the model-lifetime block -------------------------------- */

/* All parameters in one allocation, their gradients in a second with the same
 * layout, so an optimizer is one flat loop. Declare, then finalize. */
typedef struct bt_params bt_params;

BT_API bt_params *bt_params_new(void);
BT_API void bt_params_free(bt_params *p);
/* Declares a parameter (marked param); its data/grad are valid after
 * bt_params_finalize. NULL on a duplicate name, a bad shape or no memory, with
 * the reason kept in the block: errors are sticky, the first one wins. */
BT_API bt_tensor *bt_params_add(bt_params *p, const char *name, int ndim, const int *shape);
/* Allocates the block; returns the first error of any bt_params_add instead. */
BT_API bt_status bt_params_finalize(bt_params *p);
BT_API bt_status bt_params_status(const bt_params *p);
BT_API const char *bt_params_error(const bt_params *p); /* "" when there is none */
BT_API int bt_params_count(const bt_params *p);
BT_API bt_tensor *bt_params_at(bt_params *p, int i);
BT_API bt_tensor *bt_params_find(bt_params *p, const char *name);
BT_API size_t bt_params_total(const bt_params *p); /* number of scalars */
BT_API bt_real *bt_params_data(bt_params *p);      /* [total] */
BT_API bt_real *bt_params_grad(bt_params *p);      /* [total] */
BT_API void bt_params_zero_grad(bt_params *p);
/* Makes p a replica of `from` (the same names and sizes, both finalized): its
 * values become from's, read and stepped through from, while its gradients
 * stay its own. Threads that each backpropagate part of a batch (unroll.h's
 * lanes) accumulate apart and are summed once. BT_ERR_ARG if the layouts
 * differ or p already shares. from must outlive p. */
BT_API bt_status bt_params_share_values(bt_params *p, bt_params *from);
/* sqrt(sum grad^2) over every parameter; may be inf or nan. */
BT_API double bt_params_grad_norm(const bt_params *p);

/* ---- gradient check ------------------------------------------------------- */

/* Builds a scalar loss from inputs on graph g. Must be deterministic. */
typedef bt_tensor *(*bt_loss_fn)(bt_graph *g, bt_tensor *const *inputs, int n, void *ctx);

typedef struct bt_gradcheck_result {
    double max_abs;    /* largest |analytic - numeric| */
    double max_rel;    /* largest |a - n| / max(|a|, |n|, rel_floor) */
    size_t worst;      /* index of the element with the largest relative error */
    double analytic;   /* values at that element */
    double numeric;
} bt_gradcheck_result;

/* Compares the tape's gradient of fn with central differences (step eps) for
 * every element of every input that requires grad. results[i] for inputs[i]. */
BT_API bt_status bt_gradcheck(bt_loss_fn fn, void *ctx, bt_tensor *const *inputs, int n,
                              double eps, double rel_floor, bt_gradcheck_result *results,
                              char *err, size_t errlen);

/* ---- small numeric helpers -------------------------------------------------- */

/* C[M,N] (+)= op(A) op(B); beta 0 overwrites, 1 accumulates. CBLAS or fallback. */
BT_API void bt_gemm(bool trans_a, bool trans_b, int m, int n, int k, bt_real alpha,
                    const bt_real *a, int lda, const bt_real *b, int ldb, bt_real beta,
                    bt_real *c, int ldc);

/* The BLAS behind bt_gemm: library ("OpenBLAS" or "portable"), the kernel it
 * runs ("SkylakeX", "Haswell", "Prescott", ...) and its thread count. */
typedef struct bt_blas_info {
    const char *library, *kernel;
    int threads;
} bt_blas_info;
BT_API void bt_blas_info_get(bt_blas_info *out);
BT_API void bt_blas_set_threads(int n);
/* When OpenBLAS fell back to a generic pre-AVX kernel on a CPU that has AVX,
 * AVX2 or AVX-512, the kernel to ask for instead (for OPENBLAS_CORETYPE, which
 * OpenBLAS reads when it loads); NULL when the kernel in use is fine. */
BT_API const char *bt_blas_better_kernel(void);
/* Compares bt_gemm against a plain triple loop on a few shapes (both
 * transposes, odd sizes): BT_ERR_NUMERIC with a message naming the kernel
 * when a product is wrong. Takes well under a millisecond. */
BT_API bt_status bt_blas_selftest(char *err, size_t errlen);

/* Deterministic RNG (xoshiro256**), state is 4 words so checkpoints can save it. */
typedef struct bt_rng { uint64_t s[4]; } bt_rng;
BT_API void bt_rng_seed(bt_rng *r, uint64_t seed);
BT_API uint64_t bt_rng_next(bt_rng *r);
BT_API double bt_rng_uniform(bt_rng *r); /* [0, 1) */
BT_API double bt_rng_normal(bt_rng *r);  /* N(0, 1) */

#ifdef __cplusplus
}
#endif
#endif
