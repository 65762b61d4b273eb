/* bptt_plugin.h: the plugin ABI. A plugin is one shared object exporting one
 * symbol, bt_plugin_entry, which returns a versioned descriptor. Its init
 * receives a table of host functions (append-only: new entries only ever go
 * at the end) and registers cells, truncation policies, optimizers and (ABI
 * 2.3) online gradient estimators by name.
 * Plugins include this header for types but never link against libbptt.
 *
 * Versioning: the host accepts a plugin whose ABI major equals its own and
 * whose minor is not newer. Append to bt_host -> bump the minor; change or
 * remove anything -> bump the major. Cell, policy, optimizer and estimator
 * definitions start with their own size (set it to sizeof the struct, as below), so fields
 * can be appended to them too: the host reads a field only when the plugin's
 * size covers it, and ignores fields beyond its own struct.
 *
 * Dimension letters: B batch, H hidden, V vocabulary, D input size, Q output size.
 */
#ifndef BPTT_PLUGIN_H
#define BPTT_PLUGIN_H

#include "bptt.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BT_ABI_MAJOR 2
#define BT_ABI_MINOR 8
#define BT_PLUGIN_ENTRY_SYMBOL "bt_plugin_entry"
#define BT_PLUGIN_EXPORT __attribute__((visibility("default")))
/* Strings a plugin hands over end with a NUL within these many bytes (NUL
 * included) and hold no control characters; the host reads them with these
 * bounds and refuses one that runs on. Buffers the host hands to a plugin
 * (err, describe's buf) may be filled to the end: the host terminates them. */
#define BT_NAME_LEN 32
#define BT_SUMMARY_LEN 256
#define BT_VERSION_LEN 64
#define BT_DOC_LEN 16384 /* a definition's doc (ABI 2.1) may span lines */

typedef struct bt_host bt_host;
typedef struct bt_registrar bt_registrar; /* the host's handle on the plugin being loaded */

/* ---- cells ---------------------------------------------------------------- */

typedef enum { BT_INPUT_TOKENS, BT_INPUT_REAL } bt_input_kind;
typedef enum { BT_LOSS_XENT, BT_LOSS_MSE } bt_loss_kind;

/* How a parameter starts. `scale` is sigma for NORMAL, the half-width for
 * UNIFORM, the gain for ORTHOGONAL and IDENTITY, the value for CONSTANT. */
typedef enum {
    BT_INIT_ZERO, BT_INIT_NORMAL, BT_INIT_UNIFORM, BT_INIT_ORTHOGONAL, BT_INIT_IDENTITY,
    BT_INIT_CONSTANT
} bt_init_kind;

typedef struct bt_param_spec {
    char name[BT_NAME_LEN];
    int ndim;
    int shape[BT_MAX_DIMS];
    bt_init_kind init;
    double scale;
    bool recurrent; /* a hidden-to-hidden matrix: what --init orthogonal/identity/spectral act on */
} bt_param_spec;

typedef struct bt_cell_dims {
    int input;  /* V for token cells, D for real inputs */
    int hidden; /* H */
    int output; /* V or Q */
} bt_cell_dims;

/* One step's input: token ids [B] for token cells, x [B,D] for real cells. */
typedef struct bt_step_input {
    int batch;
    const int32_t *ids;
    bt_tensor *x;
    /* ABI 2.4: the host reads only next_state[] of this step (the forward
     * pass without a tape of a checkpointed window), so the cell may skip its
     * output layer and return next_state[0]; the next states must be those of
     * a full step. A cell may ignore it (one built before 2.4 does): the host
     * drops the output. */
    bool state_only;
    /* New fields go here, and only here. */
} bt_step_input;

typedef struct bt_cell_def {
    size_t size; /* sizeof(bt_cell_def) */
    const char *name;
    const char *summary;
    bt_input_kind input;
    bt_loss_kind loss; /* XENT: softmax cross-entropy on token targets; MSE: 0.5||o - y||^2 */
    /* Fills up to max specs for these dims; returns the count, or -1 with a message. */
    int (*params)(const bt_cell_dims *dims, bt_param_spec *specs, int max, char *err, size_t errlen);
    /* Widths of the state tensors (each [B, width]); returns the count (1 for h, 2 for LSTM's h, c). */
    int (*states)(const bt_cell_dims *dims, int *widths, int max);
    /* One step, built only from host ops: reads state[], writes next_state[] and
     * returns the output o_t [B, output]. NULL on error (the graph holds the message). */
    bt_tensor *(*step)(const bt_host *host, bt_graph *g, bt_tensor *const *params,
                       const bt_step_input *in, bt_tensor *const *state, bt_tensor **next_state);
    /* ABI 2.1: what `bptt plugins --describe` prints (equations, parameters,
     * states, loss; lines end with '\n'), or NULL. Read only from a def whose
     * size covers it. */
    const char *doc;
    /* BT_CELL_* below (appended after ABI 2.3's fields: read only from a def
     * whose size covers it; an older plugin's cells have none set). */
    unsigned flags;
    /* New fields go here, and only here. */
} bt_cell_def;

/* The cell can be a layer of a stack (models/stack.c): asked for dims.output
 * 0, params() declares no output layer and step returns next_state[0] (h_t,
 * [B, hidden]), which the next layer (or the host's output layer) reads. A
 * step tells the two forms apart by params[k] == NULL for its first output
 * parameter k (the host's table holds NULL past the declared parameters). */
#define BT_CELL_STACKABLE 1u

/* ---- truncation policies --------------------------------------------------- */

/* What the policy says before step t (0-based within a sequence). */
typedef struct bt_policy_decision {
    double xi;   /* factor on the recurrent edge h_{t-1} -> h_t: 1 keep, 0 detach, else grad_scale */
    bool update; /* after step t: backward over the losses since the last update, then step */
    int reach;   /* at an update: steps the graph spans back from t (>= steps since the last
                    update; TBPTT's K2). 0 means exactly the steps since the last update. */
} bt_policy_decision;

typedef struct bt_policy_def {
    size_t size; /* sizeof(bt_policy_def) */
    const char *name;
    const char *summary;
    /* Parses options ("35", "0.1,seed=3", "5,35"); returns 0 or -1 with a message. */
    int (*create)(const bt_host *host, const char *options, void **state, char *err, size_t errlen);
    void (*destroy)(void *state);
    /* A new sequence starts; seed comes from the host's RNG so runs replay. */
    void (*begin)(void *state, uint64_t seed);
    void (*decide)(void *state, long t, bt_policy_decision *d);
    /* The largest reach this policy will ask for (0: no more than the steps since the last update). */
    int (*max_reach)(void *state);
    /* Canonical option string for logs and checkpoints ("tbptt:5,35"). */
    const char *(*describe)(void *state, char *buf, size_t len);
    const char *doc; /* ABI 2.1: as bt_cell_def's (options, what xi it sets), or NULL */
    /* New fields go here, and only here. */
} bt_policy_def;

/* ---- optimizers ------------------------------------------------------------- */

/* The most state buffers an optimizer may ask for (n_state); a def asking for
 * more is refused when its plugin loads. */
#define BT_OPTIMIZER_MAX_STATE 16

typedef struct bt_optimizer_def {
    size_t size; /* sizeof(bt_optimizer_def) */
    const char *name;
    const char *summary;
    int n_state; /* state buffers per parameter (0 to BT_OPTIMIZER_MAX_STATE), each as long as the
                    parameters; owned by the host */
    int (*create)(const bt_host *host, const char *options, void **cfg, char *err, size_t errlen);
    void (*destroy)(void *cfg);
    /* One update of n scalars; step counts from 1 (Adam's bias correction). */
    void (*step)(void *cfg, uint64_t step, bt_real *param, const bt_real *grad,
                 bt_real *const *state, size_t n);
    const char *(*describe)(void *cfg, char *buf, size_t len);
    const char *doc; /* ABI 2.1: as bt_cell_def's (the update, options, state), or NULL */
    /* ABI 2.5: BT_OPTIMIZER_* below (read only from a def whose size covers
     * it; an older plugin's optimizers have none set). */
    unsigned flags;
    /* New fields go here, and only here. */
} bt_optimizer_def;

/* step updates each scalar from its own param, grad and state entries (and
 * cfg and step, which it only reads), so the host may call it on disjoint
 * slices of the parameters from several threads at once: training with
 * --threads N then runs the update on N threads. Without it, one call. */
#define BT_OPTIMIZER_ELEMENTWISE 1u

/* ---- online gradient estimators (ABI 2.3, docs/estimators.md) ------------------ */

/* An estimator replaces backpropagation through time: the host runs the model
 * forward one step at a time, records each step on a fresh graph, and hands
 * the recording to the estimator, which adds its estimate of the step loss's
 * gradient to a host buffer and carries what it needs forward (RTRL's
 * influence matrix, UORO's rank-one factors) in host-owned buffers, so a
 * checkpoint can save them. Notation: the model's states s = (s_1 ... s_K),
 * each [B, w_k], are S = sum_k B w_k numbers, flattened state after state,
 * each row-major; s_t is the state after step t, s_{-1} the initial state
 * (bptt grad's h0, c0); the parameters theta are P numbers, in the order of the
 * parameter tensors the host passes (tensor q holds theta[off_q ...], off_q
 * the sum of the earlier tensors' sizes). */

/* The sizes an estimator is bound to. */
typedef struct bt_estimator_dims {
    size_t S;            /* numbers in the states */
    size_t P;            /* parameters */
    int B;               /* rows */
    int n_states;        /* K */
    const int *widths;   /* [K]: w_k */
    bool want_dstate0;   /* the host asks for dL/ds_{-1} too (only of an estimator with
                            BT_ESTIMATOR_DSTATE0) */
} bt_estimator_dims;

/* One buffer of an estimator's state: `count` values, owned by the host
 * (zeroed when made), saved under `name` by checkpoints. Scratch that need
 * not survive a step comes from the step's graph (host->graph_tensor). */
typedef struct bt_estimator_buffer {
    char name[BT_NAME_LEN]; /* "M", "s_tilde": unique within the estimator */
    size_t count;
} bt_estimator_buffer;
#define BT_ESTIMATOR_MAX_BUFFERS 8

/* What the host hands an estimator in begin and step. */
typedef struct bt_estimator_ctx {
    size_t size;                 /* sizeof(bt_estimator_ctx) of the host */
    const bt_host *host;
    bt_estimator_dims dims;
    int n_buffers;
    bt_real *const *buf;         /* [n_buffers], as buffers() declared them */
    bt_rng *rng;                 /* the estimator's RNG: host-owned, saved by checkpoints */
    /* step only (NULL / 0 in begin): */
    bt_graph *g;                 /* the step's recording, fresh for this step */
    long t;                      /* the step, 0-based within the sequence */
    double weight;               /* w_t, the step loss's weight in L (1/T for plain
                                    sequences); 0: the loss does not count */
    bt_tensor *loss;             /* l_t, a scalar, unweighted */
    bt_tensor *const *state;     /* [K] leaves s_{t-1,k} [B, w_k], requires_grad set */
    bt_tensor *const *next;      /* [K] s_{t,k} = F_k(s_{t-1}, x_t; theta) */
    int n_params;
    bt_tensor *const *params;    /* the parameter tensors (leaves, requires_grad) */
    bt_real *grad;               /* [P]: add (+=) w_t times the estimate of dl_t/dtheta */
    bt_real *dstate0;            /* [S]: add w_t dl_t/ds_{-1}, or NULL (not asked) */
} bt_estimator_ctx;

/* flags of bt_estimator_def */
#define BT_ESTIMATOR_EXACT 1u   /* the estimate is the exact gradient (draws nothing) */
#define BT_ESTIMATOR_DSTATE0 2u /* computes dL/ds_{-1} when dims.want_dstate0 is set */

typedef struct bt_estimator_def {
    size_t size; /* sizeof(bt_estimator_def) */
    const char *name;
    const char *summary;
    /* Parses options ("seed=3", "max_mb=4096"); 0, or -1 with a message. */
    int (*create)(const bt_host *host, const char *options, void **cfg, char *err, size_t errlen);
    void (*destroy)(void *cfg);
    /* Its state at these sizes: fills up to max buffers, returns how many (0 to
     * BT_ESTIMATOR_MAX_BUFFERS), or -1 with a message (a state too large for
     * the limit its options set, say what to change). */
    int (*buffers)(void *cfg, const bt_estimator_dims *d, bt_estimator_buffer *out, int max,
                   char *err, size_t errlen);
    /* A sequence starts from states that do not depend on theta: put the
     * buffers in their start state and seed c->rng from seed (mixed with any
     * seed of its own options), so runs replay. */
    void (*begin)(void *cfg, const bt_estimator_ctx *c, uint64_t seed);
    /* Step c->t on its recording: add the weighted estimate to c->grad (and
     * to c->dstate0 when given), advance the buffers. On entry every
     * parameter's gradient is zero; on return the host ignores (and zeroes)
     * them and the parameters' tangents, so the estimator may use both as
     * scratch. 0, or -1 with a message. */
    int (*step)(void *cfg, const bt_estimator_ctx *c, char *err, size_t errlen);
    /* Canonical option string for logs and checkpoints ("uoro,seed=3"). */
    const char *(*describe)(void *cfg, char *buf, size_t len);
    const char *doc;  /* as bt_cell_def's (equations, options, costs, state), or NULL */
    unsigned flags;   /* BT_ESTIMATOR_EXACT, BT_ESTIMATOR_DSTATE0 */
    /* New fields go here, and only here. */
} bt_estimator_def;

/* ---- options ----------------------------------------------------------------- */

/* "lr=0.1,mu=0.9" or positional "5,35". Positional values fill, in order, the
 * options marked positional. Unknown names, bad numbers and values outside
 * [min, max] are errors that name the option. */
typedef struct bt_option {
    const char *name;
    double *value;
    double min, max;
    bool integer;
    bool positional;
    bool required;
    bool set; /* out: given by the user */
} bt_option;

/* ---- the host table ------------------------------------------------------------- */

struct bt_host {
    uint32_t abi_major, abi_minor;
    size_t size; /* sizeof(bt_host) of the host: entries beyond it are absent */

    /* BT_OK, or an error that the host reports itself when init returns. */
    bt_status (*register_cell)(bt_registrar *r, const bt_cell_def *def);
    bt_status (*register_policy)(bt_registrar *r, const bt_policy_def *def);
    bt_status (*register_optimizer)(bt_registrar *r, const bt_optimizer_def *def);
    /* BT_OK, or BT_ERR_ARG with "<what>: <problem>" in err (see bt_option). */
    bt_status (*parse_options)(const char *text, bt_option *opts, int n, const char *what,
                               char *err, size_t errlen);

    bt_tensor *(*matmul)(bt_graph *g, bt_tensor *a, bt_tensor *b);
    bt_tensor *(*matmul_t)(bt_graph *g, bt_tensor *a, bool ta, bt_tensor *b, bool tb);
    bt_tensor *(*add)(bt_graph *g, bt_tensor *a, bt_tensor *b);
    bt_tensor *(*sub)(bt_graph *g, bt_tensor *a, bt_tensor *b);
    bt_tensor *(*mul)(bt_graph *g, bt_tensor *a, bt_tensor *b);
    bt_tensor *(*neg)(bt_graph *g, bt_tensor *a);
    bt_tensor *(*scale)(bt_graph *g, bt_tensor *a, double c);
    bt_tensor *(*exp)(bt_graph *g, bt_tensor *a);
    bt_tensor *(*log)(bt_graph *g, bt_tensor *a);
    bt_tensor *(*tanh)(bt_graph *g, bt_tensor *a);
    bt_tensor *(*sigmoid)(bt_graph *g, bt_tensor *a);
    bt_tensor *(*relu)(bt_graph *g, bt_tensor *a);
    bt_tensor *(*sum)(bt_graph *g, bt_tensor *a);
    bt_tensor *(*mean)(bt_graph *g, bt_tensor *a);
    bt_tensor *(*concat)(bt_graph *g, bt_tensor *const *parts, int n);
    bt_tensor *(*slice)(bt_graph *g, bt_tensor *a, int start, int len);
    bt_tensor *(*embedding)(bt_graph *g, bt_tensor *table, const int32_t *ids, int m);
    bt_tensor *(*softmax_xent)(bt_graph *g, bt_tensor *logits, const int32_t *targets);
    bt_tensor *(*mse)(bt_graph *g, bt_tensor *o, bt_tensor *y);
    bt_tensor *(*detach)(bt_graph *g, bt_tensor *x);
    bt_tensor *(*grad_scale)(bt_graph *g, bt_tensor *x, double xi);
    bt_tensor *(*graph_tensor)(bt_graph *g, int ndim, const int *shape);
    bt_status (*graph_fail)(bt_graph *g, bt_status s, const char *fmt, ...);

    void (*rng_seed)(bt_rng *r, uint64_t seed);
    uint64_t (*rng_next)(bt_rng *r);
    double (*rng_uniform)(bt_rng *r);
    double (*rng_normal)(bt_rng *r);
    bt_tensor *(*rnn_tanh_step)(bt_graph *g, bt_tensor *w_x, const int32_t *ids, bt_tensor *x,
                                bt_tensor *h, bt_tensor *w_hh, bt_tensor *b);
    /* ABI 2.2: forward mode and reverse sweeps a plugin runs itself (online
     * estimators, docs/forward-mode.md). Tangents are set and read through
     * bt_tensor's `tangent` field (also 2.2): the plugin points a leaf's tangent
     * at a buffer it owns (or one from graph_tensor), runs jvp, and reads each
     * output's tangent, valid until the next sweep. */
    bt_status (*jvp)(bt_graph *g);
    bt_status (*backward_from)(bt_graph *g, bt_tensor *out, const bt_real *dout);
    /* ABI 2.3: online gradient estimators (bt_estimator_def above). */
    bt_status (*register_estimator)(bt_registrar *r, const bt_estimator_def *def);
    /* ABI 2.6: the LSTM step as three fused ops (bptt.h, bt_lstm_gates). */
    bt_tensor *(*lstm_gates)(bt_graph *g, bt_tensor *xw, bt_tensor *h, bt_tensor *w_h, bt_tensor *b);
    bt_tensor *(*lstm_cell)(bt_graph *g, bt_tensor *act, bt_tensor *c);
    bt_tensor *(*lstm_hidden)(bt_graph *g, bt_tensor *act, bt_tensor *c);
    /* ABI 2.7: torch.nn.GRU's step as two fused ops (bptt.h, bt_gru_gates). */
    bt_tensor *(*gru_gates)(bt_graph *g, bt_tensor *xw, bt_tensor *h, bt_tensor *w_hh,
                            bt_tensor *b_ih, bt_tensor *b_hh);
    bt_tensor *(*gru_hidden)(bt_graph *g, bt_tensor *act, bt_tensor *h);
    /* ABI 2.8: the GRU step of Cho et al. and d2l.ai as three fused ops (bptt.h,
     * bt_gru_cho_gates). */
    bt_tensor *(*gru_cho_gates)(bt_graph *g, bt_tensor *xw, bt_tensor *h, bt_tensor *w_hzr,
                                bt_tensor *b);
    bt_tensor *(*gru_cho_reset)(bt_graph *g, bt_tensor *zr, bt_tensor *h);
    bt_tensor *(*gru_cho_hidden)(bt_graph *g, bt_tensor *xw, bt_tensor *h, bt_tensor *zr,
                                 bt_tensor *rh, bt_tensor *w_hh, bt_tensor *b);
    /* New entries go here, and only here. */
};

/* ---- the descriptor a plugin exports -------------------------------------------- */

typedef struct bt_plugin_desc {
    uint32_t abi_major, abi_minor;
    uint32_t real_size; /* sizeof(bt_real) the plugin was built with */
    const char *name;
    const char *version;
    /* Registers what the plugin offers; returns 0, or non-zero with a message. */
    int (*init)(const bt_host *host, bt_registrar *reg, char *err, size_t errlen);
    void *reserved[4];
} bt_plugin_desc;

typedef const bt_plugin_desc *(*bt_plugin_entry_fn)(void);

/* In a plugin: BT_PLUGIN("name", "1.0", init_function) */
#define BT_PLUGIN(NAME, VERSION, INIT)                                                  \
    BT_PLUGIN_EXPORT const bt_plugin_desc *bt_plugin_entry(void);                       \
    const bt_plugin_desc *bt_plugin_entry(void)                                         \
    {                                                                                   \
        static const bt_plugin_desc desc = {BT_ABI_MAJOR, BT_ABI_MINOR, sizeof(bt_real), \
                                            NAME, VERSION, INIT, {0}};                  \
        return &desc;                                                                   \
    }

#ifdef __cplusplus
}
#endif
#endif
