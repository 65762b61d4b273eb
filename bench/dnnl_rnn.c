/* dnnl_rnn.c: oneDNN as a second anchor for bptt's classic step (issue 17).
 * The same training step as `bench step` (tanh RNN, vocabulary 28, batch 32,
 * 35 steps, mean cross-entropy, state carried and detached between windows,
 * global-norm clip 1, SGD lr 1) built from oneDNN's vanilla RNN primitive
 * (forward training + backward) and its matmul for the output layer; softmax
 * cross-entropy, clipping and SGD by hand (flat loops, as bptt's are).
 *
 *   build/bench/dnnl_rnn step   [--hidden 64,256,512,1024] [--batch 32] [--steps-per-seq 35]
 *                               [--warmup 10] [--steps 50] [--input onehot|narrow] [--threads 1]
 *   build/bench/dnnl_rnn check  (oneDNN against a plain C reference, small case; exit 1 if off)
 *   build/bench/dnnl_rnn skinny [--hidden ...] [--reps 7] [--min-ms 20] [--threads 1]
 *
 * One JSON line per measurement on stdout. --threads sets OpenMP's and
 * OpenBLAS's thread counts (Debian's oneDNN 2.6 runs on OpenMP). Wall-clock
 * medians, plus rates per CPU second ("_cpu", one thread only), which do not
 * count the time spent waiting for a core on a shared machine.
 *
 * Input, and why two modes: bptt adds row W_xh[id] (a lookup, no FLOPs).
 * oneDNN's RNN has no lookup, so `onehot` feeds the one-hot vectors as a dense
 * [T,B,V] input: the same model, verified by `check`, but 6VH more FLOPs per
 * token than bptt (x W_xh forward, dW_xh, and the input gradient oneDNN always
 * computes). `narrow` feeds a zero input of width 1 instead: the same FLOPs as
 * bptt minus the lookup, a timing proxy only (the embedding is not added).
 * oneDNN also computes dh_0 (one more [B,H]x[H,H] product per window than bptt).
 *
 * `skinny` times the per-step product [B,H]x[H,H] (accumulating, as bptt's
 * does) with oneDNN's matmul on weights packed once in its preferred layout
 * (format_tag_any), on plain weights (as stored and transposed), and with
 * OpenBLAS's sgemm: whether a `-Dblas=dnnl` backend could pay off.
 * Dimension letters: B batch, T steps, H hidden, V vocabulary (28), D input width. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

#if BENCH_HAVE_OPENMP
#include <omp.h>
#endif
#if BENCH_HAVE_OPENBLAS
#include <cblas.h>
#endif

#define MAX_HIDDEN 16

/* A oneDNN call that fails is a bug in this program or a missing feature of
 * the installed oneDNN: say which call and stop. */
#define DN(call)                                                                              \
    do {                                                                                      \
        dnnl_status_t st_ = (call);                                                           \
        if (st_ != dnnl_success) {                                                            \
            fprintf(stderr, "dnnl_rnn: %s:%d: %s failed: %s\n", __FILE__, __LINE__, #call,    \
                    dnnl_status2str(st_));                                                    \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

typedef struct opts {
    int hidden[MAX_HIDDEN], n_hidden, B, T, V, warmup, steps, reps, threads;
    double min_ms;
    bool narrow;
} opts;

static dnnl_engine_t eng;
static dnnl_stream_t stream;

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double now(void) { return clock_s(CLOCK_MONOTONIC); }
/* Process CPU time: blind to time spent descheduled on a shared machine
 * (meaningful with one thread only). */
static double cpu_now(void) { return clock_s(CLOCK_PROCESS_CPUTIME_ID); }

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p) {
        fprintf(stderr, "dnnl_rnn: out of memory for %zu x %zu bytes\n", n, size);
        exit(1);
    }
    return p;
}

static float uniform(unsigned *seed, float scale)
{
    *seed = *seed * 1103515245u + 12345u;
    return ((float)(*seed >> 8) / 16777216.0f * 2 - 1) * scale;
}

/* ---- small oneDNN helpers ---- */

static dnnl_memory_desc_t md_tag(int nd, const dnnl_dim_t *dims, dnnl_format_tag_t tag)
{
    dnnl_memory_desc_t md;
    DN(dnnl_memory_desc_init_by_tag(&md, nd, dims, dnnl_f32, tag));
    return md;
}

/* A 2-D matrix of rows x cols stored with the given row and column strides. */
static dnnl_memory_desc_t md_2d(dnnl_dim_t rows, dnnl_dim_t cols, dnnl_dim_t rs, dnnl_dim_t cs)
{
    dnnl_memory_desc_t md;
    DN(dnnl_memory_desc_init_by_strides(&md, 2, (dnnl_dims_t){rows, cols}, dnnl_f32,
                                        (dnnl_dims_t){rs, cs}));
    return md;
}

static dnnl_memory_t mem_on(const dnnl_memory_desc_t *md, void *data)
{
    dnnl_memory_t m;
    DN(dnnl_memory_create(&m, md, eng, data ? data : DNNL_MEMORY_ALLOCATE));
    return m;
}

static dnnl_primitive_t prim_from(dnnl_primitive_desc_t pd)
{
    dnnl_primitive_t p;
    DN(dnnl_primitive_create(&p, pd));
    return p;
}

static void run(dnnl_primitive_t p, int n, const dnnl_exec_arg_t *args)
{
    DN(dnnl_primitive_execute(p, stream, n, args));
    DN(dnnl_stream_wait(stream));
}

static const char *impl_of(const_dnnl_primitive_desc_t pd)
{
    const char *s = "?";
    DN(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &s));
    return s;
}

static dnnl_primitive_t reorder_new(const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to)
{
    dnnl_primitive_desc_t pd;
    DN(dnnl_reorder_primitive_desc_create(&pd, from, eng, to, eng, NULL));
    dnnl_primitive_t p = prim_from(pd);
    DN(dnnl_primitive_desc_destroy(pd));
    return p;
}

static void reorder_run(dnnl_primitive_t r, dnnl_memory_t from, dnnl_memory_t to)
{
    run(r, 2, (dnnl_exec_arg_t[]){{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}});
}

/* A primitive's view of a plain user buffer: the buffer itself when the
 * primitive takes its layout, else its own buffer and reorders both ways. */
typedef struct view {
    dnnl_memory_t user, prim;
    dnnl_primitive_t in, out; /* user -> prim, prim -> user */
    bool packed;
} view;

/* Plain layouts that differ only in the strides of size-1 dimensions (which
 * memory_desc_equal counts as a difference) are the same bytes. */
static bool same_layout(const dnnl_memory_desc_t *a, const dnnl_memory_desc_t *b)
{
    if (dnnl_memory_desc_equal(a, b))
        return true;
    if (a->format_kind != dnnl_blocked || b->format_kind != dnnl_blocked || a->ndims != b->ndims ||
        a->format_desc.blocking.inner_nblks || b->format_desc.blocking.inner_nblks ||
        a->offset0 != b->offset0 || a->extra.flags || b->extra.flags ||
        dnnl_memory_desc_get_size(a) != dnnl_memory_desc_get_size(b))
        return false;
    for (int i = 0; i < a->ndims; i++)
        if (a->dims[i] != b->dims[i] || a->padded_dims[i] != b->padded_dims[i] ||
            (a->dims[i] > 1 && a->format_desc.blocking.strides[i] != b->format_desc.blocking.strides[i]))
            return false;
    return true;
}

static view view_new(float *data, const dnnl_memory_desc_t *user_md, const dnnl_memory_desc_t *want)
{
    if (same_layout(user_md, want)) { /* the primitive reads and writes the user's buffer */
        view v = {.user = mem_on(want, data)};
        v.prim = v.user;
        return v;
    }
    view v = {.user = mem_on(user_md, data)};
    v.prim = mem_on(want, NULL);
    v.in = reorder_new(user_md, want);
    v.out = reorder_new(want, user_md);
    v.packed = true;
    return v;
}

static void view_to_prim(view *v)
{
    if (v->packed)
        reorder_run(v->in, v->user, v->prim);
}

static void view_to_user(view *v)
{
    if (v->packed)
        reorder_run(v->out, v->prim, v->user);
}

/* Diff weights accumulate in oneDNN's RNN backward: zero the primitive's copy. */
static void view_zero(view *v)
{
    void *p;
    DN(dnnl_memory_get_data_handle(v->prim, &p));
    const dnnl_memory_desc_t *md;
    DN(dnnl_memory_get_memory_desc(v->prim, &md));
    memset(p, 0, dnnl_memory_desc_get_size(md));
}

static void view_free(view *v)
{
    if (v->packed) {
        dnnl_memory_destroy(v->prim);
        dnnl_primitive_destroy(v->in);
        dnnl_primitive_destroy(v->out);
    }
    dnnl_memory_destroy(v->user);
}

/* ---- the classic step on oneDNN ---- */

/* Parameters and gradients share one layout (one flat loop clips and updates).
 * W_xh and W_hh are [in,out] row-major with a row stride ld (oneDNN pads rows
 * of its RNN weights; the block uses its forward layout, so neither the
 * forward pass nor the gradients need a reorder, only the backward's copy). */
enum { P_WXH, P_WHH, P_BH, P_WHQ, P_BQ, N_PARAMS };

typedef struct net {
    int B, T, H, V, D;                /* D: input width (V one-hot, 1 narrow) */
    float *par, *grad, *p[N_PARAMS], *g[N_PARAMS];
    size_t n_par;
    int ld_xh, ld_hh;                 /* row strides of W_xh, W_hh (and their gradients) */
    float *x;                         /* [T,B,D] input */
    float *h0, *hT, *zero_bh;         /* [B,H] carried state, next state, zero dhT */
    float *hs, *dhs;                  /* [T,B,H] hidden states and their gradient */
    float *dx, *dh0;                  /* [T,B,D], [B,H] input gradients oneDNN computes */
    float *logits, *dlogits;          /* [T*B,V] */
    dnnl_memory_t m_x, m_h0, m_hT, m_bh, m_hs, m_ws, m_dx, m_dh0, m_dbh, m_dhs, m_dhT;
    dnnl_memory_t m_whq, m_bq, m_logits, m_dlogits, m_whq_t, m_hs_t, m_dwhq;
    view f_wl, f_wi, b_wl, b_wi, b_dwl, b_dwi;
    dnnl_primitive_t rnn_f, rnn_b, out_f, out_bd, out_bw;
    const char *impl_f, *impl_b, *impl_out;
} net;

static void net_buffers(net *n)
{
    size_t B = (size_t)n->B, T = (size_t)n->T, H = (size_t)n->H, V = (size_t)n->V, D = (size_t)n->D;
    n->x = xcalloc(T * B * D, sizeof(float));
    n->h0 = xcalloc(B * H, sizeof(float));
    n->hT = xcalloc(B * H, sizeof(float));
    n->zero_bh = xcalloc(B * H, sizeof(float));
    n->hs = xcalloc(T * B * H, sizeof(float));
    n->dhs = xcalloc(T * B * H, sizeof(float));
    n->dx = xcalloc(T * B * D, sizeof(float));
    n->dh0 = xcalloc(B * H, sizeof(float));
    n->logits = xcalloc(T * B * V, sizeof(float));
    n->dlogits = xcalloc(T * B * V, sizeof(float));
}

/* The layout W_xh or W_hh is kept in: the forward primitive's when it is
 * row-major [in,out] with padded rows, else plain ldigo (then reorders). */
static dnnl_memory_desc_t param_md(const dnnl_memory_desc_t *want, const dnnl_memory_desc_t *plain,
                                   int *ld)
{
    const dnnl_blocking_desc_t *bl = &want->format_desc.blocking;
    bool rows = want->format_kind == dnnl_blocked && bl->inner_nblks == 0 && bl->strides[4] == 1 &&
                bl->strides[2] >= want->dims[4] && want->offset0 == 0 && want->extra.flags == 0;
    *ld = (int)(rows ? bl->strides[2] : plain->dims[4]);
    return rows ? *want : *plain;
}

/* One block for all parameters, one for their gradients; small random weights. */
static void net_params(net *n, const dnnl_memory_desc_t *wl, const dnnl_memory_desc_t *wi, unsigned seed)
{
    int H = n->H, V = n->V;
    size_t sizes[N_PARAMS] = {dnnl_memory_desc_get_size(wl) / sizeof(float),
                              dnnl_memory_desc_get_size(wi) / sizeof(float), (size_t)H,
                              (size_t)H * V, (size_t)V};
    n->n_par = 0;
    for (int i = 0; i < N_PARAMS; i++)
        n->n_par += sizes[i];
    n->par = xcalloc(n->n_par, sizeof(float));
    n->grad = xcalloc(n->n_par, sizeof(float));
    for (size_t i = 0, at = 0; i < N_PARAMS; at += sizes[i++]) {
        n->p[i] = n->par + at;
        n->g[i] = n->grad + at;
    }
    for (int r = 0; r < n->D; r++) /* the padding of padded rows stays zero */
        for (int j = 0; j < H; j++)
            n->p[P_WXH][(size_t)r * n->ld_xh + j] = uniform(&seed, 0.017f);
    for (int r = 0; r < H; r++)
        for (int j = 0; j < H; j++)
            n->p[P_WHH][(size_t)r * n->ld_hh + j] = uniform(&seed, 0.017f);
    for (size_t i = (size_t)(n->p[P_BH] - n->par); i < n->n_par; i++)
        n->par[i] = uniform(&seed, 0.017f);
}

static void net_rnn_memories(net *n, dnnl_primitive_desc_t fpd, dnnl_primitive_desc_t bpd,
                             const dnnl_memory_desc_t *wl, const dnnl_memory_desc_t *wi)
{
    int B = n->B, T = n->T, H = n->H, D = n->D;
    dnnl_memory_desc_t x = md_tag(3, (dnnl_dims_t){T, B, D}, dnnl_tnc);
    dnnl_memory_desc_t hs = md_tag(3, (dnnl_dims_t){T, B, H}, dnnl_tnc);
    dnnl_memory_desc_t h = md_tag(4, (dnnl_dims_t){1, 1, B, H}, dnnl_ldnc);
    dnnl_memory_desc_t b = md_tag(4, (dnnl_dims_t){1, 1, 1, H}, dnnl_ldgo);
    n->f_wl = view_new(n->p[P_WXH], wl, dnnl_primitive_desc_query_md(fpd, dnnl_query_weights_md, 0));
    n->f_wi = view_new(n->p[P_WHH], wi, dnnl_primitive_desc_query_md(fpd, dnnl_query_weights_md, 1));
    n->b_wl = view_new(n->p[P_WXH], wl, dnnl_primitive_desc_query_md(bpd, dnnl_query_weights_md, 0));
    n->b_wi = view_new(n->p[P_WHH], wi, dnnl_primitive_desc_query_md(bpd, dnnl_query_weights_md, 1));
    n->b_dwl = view_new(n->g[P_WXH], wl, dnnl_primitive_desc_query_md(bpd, dnnl_query_diff_weights_md, 0));
    n->b_dwi = view_new(n->g[P_WHH], wi, dnnl_primitive_desc_query_md(bpd, dnnl_query_diff_weights_md, 1));
    n->m_x = mem_on(&x, n->x);
    n->m_h0 = mem_on(&h, n->h0);
    n->m_hT = mem_on(&h, n->hT);
    n->m_bh = mem_on(&b, n->p[P_BH]);
    n->m_hs = mem_on(&hs, n->hs);
    n->m_ws = mem_on(dnnl_primitive_desc_query_md(fpd, dnnl_query_workspace_md, 0), NULL);
    n->m_dx = mem_on(&x, n->dx);
    n->m_dh0 = mem_on(&h, n->dh0);
    n->m_dbh = mem_on(&b, n->g[P_BH]);
    n->m_dhs = mem_on(&hs, n->dhs);
    n->m_dhT = mem_on(&h, n->zero_bh);
}

/* The vanilla RNN forward-training and backward primitives, weights in the
 * layouts oneDNN prefers (format_tag_any). */
static void net_rnn(net *n, unsigned seed)
{
    int B = n->B, T = n->T, H = n->H, D = n->D;
    dnnl_memory_desc_t x = md_tag(3, (dnnl_dims_t){T, B, D}, dnnl_tnc);
    dnnl_memory_desc_t hs = md_tag(3, (dnnl_dims_t){T, B, H}, dnnl_tnc);
    dnnl_memory_desc_t h = md_tag(4, (dnnl_dims_t){1, 1, B, H}, dnnl_ldnc);
    dnnl_memory_desc_t wl = md_tag(5, (dnnl_dims_t){1, 1, D, 1, H}, dnnl_ldigo);
    dnnl_memory_desc_t wi = md_tag(5, (dnnl_dims_t){1, 1, H, 1, H}, dnnl_ldigo);
    dnnl_memory_desc_t wl_any = md_tag(5, (dnnl_dims_t){1, 1, D, 1, H}, dnnl_format_tag_any);
    dnnl_memory_desc_t wi_any = md_tag(5, (dnnl_dims_t){1, 1, H, 1, H}, dnnl_format_tag_any);
    dnnl_memory_desc_t b = md_tag(4, (dnnl_dims_t){1, 1, 1, H}, dnnl_ldgo);
    dnnl_rnn_desc_t fd, bd;
    DN(dnnl_vanilla_rnn_forward_desc_init(&fd, dnnl_forward_training, dnnl_eltwise_tanh,
                                          dnnl_unidirectional_left2right, &x, &h, &wl_any, &wi_any,
                                          &b, &hs, &h, 0, 0, 0));
    dnnl_primitive_desc_t fpd, bpd;
    DN(dnnl_primitive_desc_create(&fpd, &fd, NULL, eng, NULL));
    DN(dnnl_vanilla_rnn_backward_desc_init(&bd, dnnl_backward, dnnl_eltwise_tanh,
                                           dnnl_unidirectional_left2right, &x, &h, &wl_any,
                                           &wi_any, &b, &hs, &h, &x, &h, &wl_any, &wi_any, &b, &hs,
                                           &h, 0, 0, 0));
    DN(dnnl_primitive_desc_create(&bpd, &bd, NULL, eng, fpd));
    wl = param_md(dnnl_primitive_desc_query_md(fpd, dnnl_query_weights_md, 0), &wl, &n->ld_xh);
    wi = param_md(dnnl_primitive_desc_query_md(fpd, dnnl_query_weights_md, 1), &wi, &n->ld_hh);
    net_params(n, &wl, &wi, seed);
    net_rnn_memories(n, fpd, bpd, &wl, &wi);
    n->rnn_f = prim_from(fpd);
    n->rnn_b = prim_from(bpd);
    n->impl_f = impl_of(fpd);
    n->impl_b = impl_of(bpd);
    DN(dnnl_primitive_desc_destroy(fpd));
    DN(dnnl_primitive_desc_destroy(bpd));
}

static dnnl_primitive_t matmul_new(const dnnl_memory_desc_t *src, const dnnl_memory_desc_t *w,
                                   const dnnl_memory_desc_t *bias, const dnnl_memory_desc_t *dst,
                                   const_dnnl_primitive_attr_t attr, const char **impl)
{
    dnnl_matmul_desc_t d;
    dnnl_primitive_desc_t pd;
    DN(dnnl_matmul_desc_init(&d, src, w, bias, dst));
    DN(dnnl_primitive_desc_create(&pd, &d, attr, eng, NULL));
    dnnl_primitive_t p = prim_from(pd);
    if (impl)
        *impl = impl_of(pd);
    DN(dnnl_primitive_desc_destroy(pd));
    return p;
}

/* Output layer over the whole window: logits = hs W_hq + b_q, and its
 * backward dhs = dlogits W_hq^T, dW_hq = hs^T dlogits (plain layouts: W_hq
 * changes every window, so packing it would cost a reorder each time). */
static void net_output(net *n)
{
    dnnl_dim_t R = (dnnl_dim_t)n->T * n->B, H = n->H, V = n->V;
    dnnl_memory_desc_t hs = md_2d(R, H, H, 1), whq = md_2d(H, V, V, 1), bq = md_2d(1, V, V, 1);
    dnnl_memory_desc_t lg = md_2d(R, V, V, 1), whq_t = md_2d(V, H, 1, V), hs_t = md_2d(H, R, 1, H);
    n->out_f = matmul_new(&hs, &whq, &bq, &lg, NULL, &n->impl_out);
    n->out_bd = matmul_new(&lg, &whq_t, NULL, &hs, NULL, NULL);
    n->out_bw = matmul_new(&hs_t, &lg, NULL, &whq, NULL, NULL);
    n->m_whq = mem_on(&whq, n->p[P_WHQ]);
    n->m_bq = mem_on(&bq, n->p[P_BQ]);
    n->m_logits = mem_on(&lg, n->logits);
    n->m_dlogits = mem_on(&lg, n->dlogits);
    n->m_whq_t = mem_on(&whq_t, n->p[P_WHQ]);
    n->m_hs_t = mem_on(&hs_t, n->hs);
    n->m_dwhq = mem_on(&whq, n->g[P_WHQ]);
}

static void net_new(net *n, int B, int T, int H, int V, int D, unsigned seed)
{
    *n = (net){.B = B, .T = T, .H = H, .V = V, .D = D};
    net_buffers(n);
    net_rnn(n, seed);
    net_output(n);
}

static void net_free(net *n)
{
    view *views[] = {&n->f_wl, &n->f_wi, &n->b_wl, &n->b_wi, &n->b_dwl, &n->b_dwi};
    for (size_t i = 0; i < sizeof views / sizeof *views; i++)
        view_free(views[i]);
    dnnl_memory_t mems[] = {n->m_x, n->m_h0, n->m_hT, n->m_bh, n->m_hs, n->m_ws, n->m_dx,
                            n->m_dh0, n->m_dbh, n->m_dhs, n->m_dhT, n->m_whq, n->m_bq,
                            n->m_logits, n->m_dlogits, n->m_whq_t, n->m_hs_t, n->m_dwhq};
    for (size_t i = 0; i < sizeof mems / sizeof *mems; i++)
        dnnl_memory_destroy(mems[i]);
    dnnl_primitive_t prims[] = {n->rnn_f, n->rnn_b, n->out_f, n->out_bd, n->out_bw};
    for (size_t i = 0; i < sizeof prims / sizeof *prims; i++)
        dnnl_primitive_destroy(prims[i]);
    float *bufs[] = {n->par, n->grad, n->x, n->h0, n->hT, n->zero_bh, n->hs, n->dhs, n->dx,
                     n->dh0, n->logits, n->dlogits};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        free(bufs[i]);
}

/* Softmax cross-entropy over the window's T*B rows, each weighing 1/(T*B)
 * (bptt: mean over the batch, 1/T per step); dlogits and db_q as it goes. */
static double net_xent(net *n, const int *targets)
{
    int B = n->B, T = n->T, V = n->V;
    double loss = 0, inv = 1.0 / ((double)T * B);
    for (int t = 0; t < T; t++)
        for (int b = 0; b < B; b++) {
            const float *z = n->logits + ((size_t)t * B + b) * V;
            float *dz = n->dlogits + ((size_t)t * B + b) * V, mx = z[0], sum = 0;
            for (int j = 1; j < V; j++)
                mx = z[j] > mx ? z[j] : mx;
            for (int j = 0; j < V; j++)
                sum += (dz[j] = expf(z[j] - mx));
            int y = targets[(size_t)b * T + t];
            loss -= (double)(z[y] - mx - logf(sum)) * inv;
            for (int j = 0; j < V; j++) {
                dz[j] = (dz[j] / sum - (j == y)) * (float)inv;
                n->g[P_BQ][j] += dz[j];
            }
        }
    return loss;
}

/* Forward and backward of one window: gradients into n->grad (zeroed first),
 * the next carried state into n->hT. ids and targets are [B,T]. */
static double net_grad(net *n, const int *ids, const int *targets)
{
    int B = n->B, T = n->T, D = n->D;
    memset(n->grad, 0, sizeof(float) * n->n_par);
    view_zero(&n->b_dwl);
    view_zero(&n->b_dwi);
    if (D > 1) { /* one-hot rows; the narrow proxy keeps its zero input */
        memset(n->x, 0, sizeof(float) * (size_t)T * B * D);
        for (int t = 0; t < T; t++)
            for (int b = 0; b < B; b++)
                n->x[((size_t)t * B + b) * D + ids[(size_t)b * T + t]] = 1;
    }
    view_to_prim(&n->f_wl);
    view_to_prim(&n->f_wi);
    run(n->rnn_f, 8, (dnnl_exec_arg_t[]){
        {DNNL_ARG_SRC_LAYER, n->m_x}, {DNNL_ARG_SRC_ITER, n->m_h0},
        {DNNL_ARG_WEIGHTS_LAYER, n->f_wl.prim}, {DNNL_ARG_WEIGHTS_ITER, n->f_wi.prim},
        {DNNL_ARG_BIAS, n->m_bh}, {DNNL_ARG_DST_LAYER, n->m_hs}, {DNNL_ARG_DST_ITER, n->m_hT},
        {DNNL_ARG_WORKSPACE, n->m_ws}});
    run(n->out_f, 4, (dnnl_exec_arg_t[]){{DNNL_ARG_SRC, n->m_hs}, {DNNL_ARG_WEIGHTS, n->m_whq},
                                         {DNNL_ARG_BIAS, n->m_bq}, {DNNL_ARG_DST, n->m_logits}});
    double loss = net_xent(n, targets);
    run(n->out_bd, 3, (dnnl_exec_arg_t[]){{DNNL_ARG_SRC, n->m_dlogits},
                                          {DNNL_ARG_WEIGHTS, n->m_whq_t}, {DNNL_ARG_DST, n->m_dhs}});
    run(n->out_bw, 3, (dnnl_exec_arg_t[]){{DNNL_ARG_SRC, n->m_hs_t},
                                          {DNNL_ARG_WEIGHTS, n->m_dlogits}, {DNNL_ARG_DST, n->m_dwhq}});
    view_to_prim(&n->b_wl);
    view_to_prim(&n->b_wi);
    run(n->rnn_b, 15, (dnnl_exec_arg_t[]){
        {DNNL_ARG_SRC_LAYER, n->m_x}, {DNNL_ARG_SRC_ITER, n->m_h0},
        {DNNL_ARG_WEIGHTS_LAYER, n->b_wl.prim}, {DNNL_ARG_WEIGHTS_ITER, n->b_wi.prim},
        {DNNL_ARG_BIAS, n->m_bh}, {DNNL_ARG_DST_LAYER, n->m_hs}, {DNNL_ARG_DST_ITER, n->m_hT},
        {DNNL_ARG_WORKSPACE, n->m_ws}, {DNNL_ARG_DIFF_SRC_LAYER, n->m_dx},
        {DNNL_ARG_DIFF_SRC_ITER, n->m_dh0}, {DNNL_ARG_DIFF_WEIGHTS_LAYER, n->b_dwl.prim},
        {DNNL_ARG_DIFF_WEIGHTS_ITER, n->b_dwi.prim}, {DNNL_ARG_DIFF_BIAS, n->m_dbh},
        {DNNL_ARG_DIFF_DST_LAYER, n->m_dhs}, {DNNL_ARG_DIFF_DST_ITER, n->m_dhT}});
    view_to_user(&n->b_dwl);
    view_to_user(&n->b_dwi);
    return loss;
}

/* Global-norm clip to `clip`, SGD with rate lr, and the state carried on. */
static void net_update(net *n, float lr, float clip)
{
    double sq = 0;
    for (size_t i = 0; i < n->n_par; i++)
        sq += (double)n->grad[i] * n->grad[i];
    double norm = sqrt(sq);
    float scale = lr * (float)(norm > clip ? clip / norm : 1.0);
    for (size_t i = 0; i < n->n_par; i++)
        n->par[i] -= scale * n->grad[i];
    memcpy(n->h0, n->hT, sizeof(float) * (size_t)n->B * n->H);
}

/* ---- check: oneDNN against a plain C reference in double ---- */

typedef struct ref {
    double *hs, *dwxh, *dwhh, *dbh, *dwhq, loss; /* hs [T+1,B,H] with h_0 first */
} ref;

/* The same window as net_grad in plain loops: h_t = tanh(W_xh[id] + h_{t-1} W_hh + b_h),
 * logits = h_t W_hq + b_q, loss = mean cross-entropy; full BPTT back to h_0. */
static void ref_grad(const net *n, const int *ids, const int *tg, ref *r)
{
    int B = n->B, T = n->T, H = n->H, V = n->V;
    const float *wxh = n->p[P_WXH], *whh = n->p[P_WHH], *bh = n->p[P_BH], *whq = n->p[P_WHQ];
    double *dh = xcalloc((size_t)B * H, sizeof(double)), *dn = xcalloc((size_t)B * H, sizeof(double));
    double *z = xcalloc((size_t)V, sizeof(double)), inv = 1.0 / ((double)T * B);
    for (int i = 0; i < B * H; i++)
        r->hs[i] = n->h0[i];
    for (int t = 0; t < T; t++)
        for (int b = 0; b < B; b++)
            for (int j = 0; j < H; j++) {
                double a = (double)wxh[(size_t)ids[b * T + t] * n->ld_xh + j] + bh[j];
                for (int k = 0; k < H; k++)
                    a += r->hs[((size_t)t * B + b) * H + k] * whh[(size_t)k * n->ld_hh + j];
                r->hs[((size_t)(t + 1) * B + b) * H + j] = tanh(a);
            }
    r->loss = 0;
    for (int t = T - 1; t >= 0; t--) {
        for (int b = 0; b < B; b++) {
            const double *h = r->hs + ((size_t)(t + 1) * B + b) * H;
            double mx = -1e300, sum = 0;
            for (int v = 0; v < V; v++) {
                z[v] = n->p[P_BQ][v];
                for (int k = 0; k < H; k++)
                    z[v] += h[k] * whq[(size_t)k * V + v];
                mx = fmax(mx, z[v]);
            }
            for (int v = 0; v < V; v++)
                sum += exp(z[v] - mx);
            int y = tg[b * T + t];
            r->loss -= (z[y] - mx - log(sum)) * inv;
            for (int v = 0; v < V; v++) { /* dlogits, then into dW_hq and dh_t */
                double d = (exp(z[v] - mx) / sum - (v == y)) * inv;
                for (int k = 0; k < H; k++) {
                    r->dwhq[(size_t)k * V + v] += h[k] * d;
                    dh[(size_t)b * H + k] += d * whq[(size_t)k * V + v];
                }
            }
            for (int j = 0; j < H; j++) { /* dA = dh (1 - h^2) */
                double da = dh[(size_t)b * H + j] * (1 - h[j] * h[j]);
                const double *hp = r->hs + ((size_t)t * B + b) * H;
                r->dbh[j] += da;
                r->dwxh[(size_t)ids[b * T + t] * H + j] += da;
                for (int k = 0; k < H; k++) {
                    r->dwhh[(size_t)k * H + j] += hp[k] * da;
                    dn[(size_t)b * H + k] += da * whh[(size_t)k * n->ld_hh + j];
                }
            }
        }
        memcpy(dh, dn, sizeof(double) * (size_t)B * H); /* dh_{t-1} from the step above */
        memset(dn, 0, sizeof(double) * (size_t)B * H);
    }
    free(dh); free(dn); free(z);
}

/* Largest |a - b| over a rows x cols matrix (a with row stride lda, b dense),
 * relative to the largest |b|. */
static double rel_diff(const float *a, int lda, const double *b, int rows, int cols)
{
    double worst = 0, scale = 0;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            double x = a[(size_t)r * lda + c], y = b[(size_t)r * cols + c];
            worst = fmax(worst, fabs(x - y));
            scale = fmax(scale, fabs(y));
        }
    return scale > 0 ? worst / scale : worst;
}

/* A small window with large weights (so tanh saturates and the recursion
 * matters): hidden states and every weight gradient within float tolerance. */
static int cmd_check(void)
{
    const int B = 3, T = 5, H = 7, V = 6;
    net n;
    net_new(&n, B, T, H, V, V, 11);
    unsigned seed = 5;
    for (size_t i = 0; i < n.n_par; i++)
        n.par[i] = uniform(&seed, 0.8f);
    for (int i = 0; i < B * H; i++)
        n.h0[i] = uniform(&seed, 0.9f);
    int ids[B * T], tg[B * T];
    for (int i = 0; i < B * T; i++) {
        ids[i] = (int)(uniform(&seed, 1) * 1e4 + 1e4) % V;
        tg[i] = (int)(uniform(&seed, 1) * 1e4 + 1e4) % V;
    }
    net_grad(&n, ids, tg); /* twice: the second shows the gradients do not pile up */
    double loss = net_grad(&n, ids, tg);
    ref r = {xcalloc((size_t)(T + 1) * B * H, sizeof(double)), xcalloc((size_t)V * H, sizeof(double)),
             xcalloc((size_t)H * H, sizeof(double)), xcalloc((size_t)H, sizeof(double)),
             xcalloc((size_t)H * V, sizeof(double)), 0};
    ref_grad(&n, ids, tg, &r);
    double d[6] = {rel_diff(n.hs, H, r.hs + (size_t)B * H, T * B, H),
                   rel_diff(n.g[P_WHH], n.ld_hh, r.dwhh, H, H), rel_diff(n.g[P_WXH], n.ld_xh, r.dwxh, V, H),
                   rel_diff(n.g[P_BH], H, r.dbh, 1, H), rel_diff(n.g[P_WHQ], V, r.dwhq, H, V),
                   fabs(loss - r.loss) / fabs(r.loss)};
    const double tol = 1e-4; /* float against double over T = 5 steps */
    bool ok = true;
    for (int i = 0; i < 6; i++)
        ok = ok && d[i] <= tol;
    printf("{\"impl\": \"onednn\", \"mode\": \"check\", \"B\": %d, \"T\": %d, \"H\": %d, \"V\": %d, "
           "\"rel_diff_hidden_states\": %.3g, \"rel_diff_dW_hh\": %.3g, \"rel_diff_dW_xh\": %.3g, "
           "\"rel_diff_db_h\": %.3g, \"rel_diff_dW_hq\": %.3g, \"rel_diff_loss\": %.3g, "
           "\"tolerance\": %g, \"ok\": %s}\n",
           B, T, H, V, d[0], d[1], d[2], d[3], d[4], d[5], tol, ok ? "true" : "false");
    free(r.hs); free(r.dwxh); free(r.dwhh); free(r.dbh); free(r.dwhq);
    net_free(&n);
    if (!ok)
        fprintf(stderr, "dnnl_rnn: oneDNN's step differs from the reference by more than %g\n", tol);
    return ok ? 0 : 1;
}

/* ---- step: tokens/s of the whole training step ---- */

static int threads_now(void)
{
#if BENCH_HAVE_OPENMP
    return omp_get_max_threads();
#else
    return -1; /* unknown: OMP_NUM_THREADS decides */
#endif
}

static const char *isa(void)
{
    return dnnl_cpu_isa2str(dnnl_get_effective_cpu_isa());
}

static void step_hidden(const opts *o, int H)
{
    int B = o->B, T = o->T, V = o->V, D = o->narrow ? 1 : V, n = o->warmup + o->steps;
    net m;
    net_new(&m, B, T, H, V, D, 1);
    unsigned seed = 3;
    size_t len = (size_t)B * T * (size_t)(n + 1) + 1;
    int *stream_ids = xcalloc(len, sizeof(int)), *X = xcalloc((size_t)B * T, sizeof(int));
    int *Y = xcalloc((size_t)B * T, sizeof(int));
    for (size_t i = 0; i < len; i++)
        stream_ids[i] = (int)((uniform(&seed, 1) + 1) * 1e6) % V;
    double *times = xcalloc(2 * (size_t)o->steps, sizeof(double)), *cpu = times + o->steps;
    for (int it = 0; it < n; it++) {
        for (int b = 0; b < B; b++) /* row b continues row b of the last window */
            for (int t = 0; t < T; t++) {
                size_t pos = ((size_t)b * n + it) * T + t;
                X[b * T + t] = stream_ids[pos];
                Y[b * T + t] = stream_ids[pos + 1];
            }
        double t0 = now(), c0 = cpu_now();
        net_grad(&m, X, Y);
        net_update(&m, 1, 1);
        if (it >= o->warmup) {
            times[it - o->warmup] = now() - t0;
            cpu[it - o->warmup] = cpu_now() - c0;
        }
    }
    qsort(times, (size_t)o->steps, sizeof *times, cmp_double);
    qsort(cpu, (size_t)o->steps, sizeof *cpu, cmp_double);
    double med = times[o->steps / 2], tok = (double)B * T;
    printf("{\"impl\": \"onednn\", \"mode\": \"step\", \"hidden\": %d, \"batch\": %d, \"T\": %d, "
           "\"input\": \"%s\", \"extra_input_flops_per_token\": %d, \"tokens_per_s\": %.1f, "
           "\"tokens_per_s_min\": %.1f, \"tokens_per_s_max\": %.1f, \"tokens_per_cpu_s\": %.1f, "
           "\"us_per_token\": %.3f, "
           "\"threads\": %d, \"isa\": \"%s\", \"rnn_fwd_impl\": \"%s\", \"rnn_bwd_impl\": \"%s\", "
           "\"matmul_impl\": \"%s\", \"weight_reorders\": %d, \"dnnl_version\": \"%d.%d.%d\"}\n",
           H, B, T, o->narrow ? "narrow" : "onehot", o->narrow ? 0 : 6 * V * H, tok / med,
           tok / times[o->steps - 1], tok / times[0], tok / cpu[o->steps / 2], med / tok * 1e6, threads_now(), isa(),
           m.impl_f, m.impl_b, m.impl_out,
           m.f_wl.packed + m.f_wi.packed + m.b_wl.packed + m.b_wi.packed + m.b_dwl.packed + m.b_dwi.packed,
           dnnl_version()->major, dnnl_version()->minor, dnnl_version()->patch);
    fflush(stdout);
    free(times); free(stream_ids); free(X); free(Y);
    net_free(&m);
}

/* ---- skinny: the per-step product [B,H] x [H,H], accumulating ---- */

typedef struct rates {
    double med, best, cpu; /* GFLOP/s: median, fastest batch, median by CPU time */
} rates;

/* The rates of `reps` batches of fn(ctx), each lasting min_ms. */
static rates time_calls(void (*fn)(void *), void *ctx, double flops, const opts *o)
{
    long calls = 1;
    for (;;) { /* warm up and size a batch */
        double t0 = now();
        for (long i = 0; i < calls; i++)
            fn(ctx);
        if (now() - t0 >= o->min_ms * 1e-3 || calls > (1L << 24))
            break;
        calls *= 2;
    }
    double *rate = xcalloc(2 * (size_t)o->reps, sizeof(double)), *cpu = rate + o->reps;
    for (int r = 0; r < o->reps; r++) {
        double t0 = now(), c0 = cpu_now();
        for (long i = 0; i < calls; i++)
            fn(ctx);
        rate[r] = flops * (double)calls / (now() - t0) * 1e-9;
        cpu[r] = flops * (double)calls / (cpu_now() - c0) * 1e-9;
    }
    qsort(rate, (size_t)o->reps, sizeof *rate, cmp_double);
    qsort(cpu, (size_t)o->reps, sizeof *cpu, cmp_double);
    rates r = {rate[o->reps / 2], rate[o->reps - 1], cpu[o->reps / 2]};
    free(rate);
    return r;
}

typedef struct skinny {
    int B, H;
    bool trans;                       /* h W^T (backward) instead of h W */
    float *h, *w, *c;
    dnnl_primitive_t mm;
    dnnl_memory_t m_h, m_w, m_c;
} skinny;

static void skinny_dnnl(void *p)
{
    skinny *s = p;
    run(s->mm, 3, (dnnl_exec_arg_t[]){{DNNL_ARG_SRC, s->m_h}, {DNNL_ARG_WEIGHTS, s->m_w},
                                      {DNNL_ARG_DST, s->m_c}});
}

#if BENCH_HAVE_OPENBLAS
static void skinny_openblas(void *p)
{
    skinny *s = p;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, s->trans ? CblasTrans : CblasNoTrans, s->B, s->H, s->H,
                1, s->h, s->H, s->w, s->H, 1, s->c, s->H);
}
#endif

static void skinny_print(const skinny *s, const char *impl, const char *weights, rates r,
                         double pack_us, const char *kernel)
{
    printf("{\"impl\": \"%s\", \"mode\": \"skinny\", \"hidden\": %d, \"m\": %d, \"n\": %d, \"k\": %d, "
           "\"op\": \"%s\", \"weights\": \"%s\", \"gflops\": %.2f, \"gflops_best\": %.2f, "
           "\"gflops_cpu\": %.2f, \"us_per_call\": %.3f, \"pack_us\": %.2f, \"kernel\": \"%s\", "
           "\"threads\": %d}\n",
           impl, s->H, s->B, s->H, s->H, s->trans ? "h*W^T" : "h*W", weights, r.med, r.best, r.cpu,
           2.0 * s->B * s->H * s->H / (r.med * 1e3), pack_us, kernel, threads_now());
    fflush(stdout);
}

/* oneDNN's matmul c += h op(W) with W as stored (plain) or packed once in the
 * layout oneDNN picks; returns the time of one packing in microseconds. */
static double skinny_dnnl_setup(skinny *s, bool packed, const char **impl)
{
    dnnl_dim_t B = s->B, H = s->H;
    dnnl_memory_desc_t h = md_2d(B, H, H, 1), c = md_2d(B, H, H, 1);
    dnnl_memory_desc_t w = s->trans ? md_2d(H, H, 1, H) : md_2d(H, H, H, 1);
    dnnl_memory_desc_t w_any = md_tag(2, (dnnl_dims_t){H, H}, dnnl_format_tag_any);
    dnnl_post_ops_t po;
    dnnl_primitive_attr_t attr;
    DN(dnnl_post_ops_create(&po));
    DN(dnnl_post_ops_append_sum(po, 1.0f)); /* accumulate, as bptt's beta = 1 */
    DN(dnnl_primitive_attr_create(&attr));
    DN(dnnl_primitive_attr_set_post_ops(attr, po));
    dnnl_matmul_desc_t d;
    dnnl_primitive_desc_t pd;
    DN(dnnl_matmul_desc_init(&d, &h, packed ? &w_any : &w, NULL, &c));
    DN(dnnl_primitive_desc_create(&pd, &d, attr, eng, NULL));
    s->mm = prim_from(pd);
    *impl = impl_of(pd);
    s->m_h = mem_on(&h, s->h);
    s->m_c = mem_on(&c, s->c);
    double pack_us = 0;
    if (packed) { /* W_hh changes once per window: one packing serves 2T - 1 products */
        dnnl_memory_t user = mem_on(&w, s->w);
        s->m_w = mem_on(dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0), NULL);
        dnnl_primitive_t r = reorder_new(&w, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0));
        reorder_run(r, user, s->m_w);
        double t0 = now();
        for (int i = 0; i < 20; i++)
            reorder_run(r, user, s->m_w);
        pack_us = (now() - t0) / 20 * 1e6;
        dnnl_primitive_destroy(r);
        dnnl_memory_destroy(user);
    } else
        s->m_w = mem_on(&w, s->w);
    DN(dnnl_primitive_desc_destroy(pd));
    DN(dnnl_primitive_attr_destroy(attr));
    DN(dnnl_post_ops_destroy(po));
    return pack_us;
}

static void skinny_dnnl_free(skinny *s)
{
    dnnl_primitive_destroy(s->mm);
    dnnl_memory_destroy(s->m_h);
    dnnl_memory_destroy(s->m_w);
    dnnl_memory_destroy(s->m_c);
}

static void skinny_hidden(const opts *o, int H)
{
    unsigned seed = 9;
    skinny s = {.B = o->B, .H = H, .h = xcalloc((size_t)o->B * H, sizeof(float)),
                .w = xcalloc((size_t)H * H, sizeof(float)), .c = xcalloc((size_t)o->B * H, sizeof(float))};
    for (int i = 0; i < o->B * H; i++)
        s.h[i] = uniform(&seed, 0.5f);
    for (int i = 0; i < H * H; i++)
        s.w[i] = uniform(&seed, 0.05f);
    double flops = 2.0 * o->B * H * H;
    for (int trans = 0; trans < 2; trans++) {
        s.trans = trans;
#if BENCH_HAVE_OPENBLAS
        skinny_print(&s, "openblas", "plain", time_calls(skinny_openblas, &s, flops, o), 0,
                     openblas_get_corename());
#endif
        for (int packed = 0; packed < 2; packed++) {
            const char *impl;
            double pack_us = skinny_dnnl_setup(&s, packed, &impl);
            skinny_print(&s, "onednn", packed ? "packed" : "plain", time_calls(skinny_dnnl, &s, flops, o),
                         pack_us, impl);
            skinny_dnnl_free(&s);
        }
    }
    free(s.h); free(s.w); free(s.c);
}

/* ---- command line ---- */

static int usage(const char *why)
{
    fprintf(stderr, "dnnl_rnn: %s\nusage: dnnl_rnn step|check|skinny [--hidden 64,256,512,1024] "
                    "[--batch 32] [--steps-per-seq 35] [--warmup 10] [--steps 50] "
                    "[--input onehot|narrow] [--reps 7] [--min-ms 20] [--threads 1]\n", why);
    return 2;
}

static bool positive_int(const char *s, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == 0 || *end || v < 1 || v > 1 << 20)
        return false;
    *out = (int)v;
    return true;
}

static bool parse_hidden(opts *o, const char *list)
{
    char buf[256], *save = NULL;
    snprintf(buf, sizeof buf, "%s", list);
    o->n_hidden = 0;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
        if (o->n_hidden == MAX_HIDDEN || !positive_int(t, &o->hidden[o->n_hidden++]))
            return false;
    return o->n_hidden > 0;
}

static int parse_args(opts *o, int argc, char **argv)
{
    for (int i = 2; i < argc; i += 2) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = v != NULL;
        if (!ok)
            ;
        else if (!strcmp(k, "--hidden"))
            ok = parse_hidden(o, v);
        else if (!strcmp(k, "--batch"))
            ok = positive_int(v, &o->B);
        else if (!strcmp(k, "--steps-per-seq"))
            ok = positive_int(v, &o->T);
        else if (!strcmp(k, "--warmup"))
            ok = positive_int(v, &o->warmup);
        else if (!strcmp(k, "--steps"))
            ok = positive_int(v, &o->steps);
        else if (!strcmp(k, "--reps"))
            ok = positive_int(v, &o->reps);
        else if (!strcmp(k, "--threads"))
            ok = positive_int(v, &o->threads);
        else if (!strcmp(k, "--min-ms"))
            ok = (o->min_ms = atof(v)) > 0;
        else if (!strcmp(k, "--input"))
            ok = (o->narrow = !strcmp(v, "narrow")) || !strcmp(v, "onehot");
        else {
            fprintf(stderr, "dnnl_rnn: not an option: %s\n", k);
            return usage("unknown option");
        }
        if (!ok) {
            fprintf(stderr, "dnnl_rnn: %s needs a valid value\n", k);
            return usage("bad arguments");
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    opts o = {.hidden = {64, 256, 512, 1024}, .n_hidden = 4, .B = 32, .T = 35, .V = 28,
              .warmup = 10, .steps = 50, .reps = 7, .threads = 1, .min_ms = 20};
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "step") && strcmp(mode, "check") && strcmp(mode, "skinny"))
        return usage("first argument: step, check or skinny");
    if (parse_args(&o, argc, argv) != 0)
        return 2;
#if BENCH_HAVE_OPENMP
    omp_set_num_threads(o.threads);
#endif
#if BENCH_HAVE_OPENBLAS
    openblas_set_num_threads(o.threads);
#endif
    DN(dnnl_engine_create(&eng, dnnl_cpu, 0));
    DN(dnnl_stream_create(&stream, eng, dnnl_stream_default_flags));
    int status = 0;
    if (!strcmp(mode, "check"))
        status = cmd_check();
    for (int i = 0; !strcmp(mode, "step") && i < o.n_hidden; i++)
        step_hidden(&o, o.hidden[i]);
    for (int i = 0; !strcmp(mode, "skinny") && i < o.n_hidden; i++)
        skinny_hidden(&o, o.hidden[i]);
    dnnl_stream_destroy(stream);
    dnnl_engine_destroy(eng);
    return status;
}
