/* packed.c: the per-step products of a window with their weights packed once.
 * OpenBLAS re-packs W_hh on every [B,H]x[H,H] product of a step (forward h W,
 * backward dA W^T); a window runs 2T - 1 of them on the same weight. With
 * -Dblas=dnnl a weight's product goes through a oneDNN matmul primitive whose
 * weights sit in the layout it prefers: packed by a reorder on the weight's
 * first product after a graph reset (parameters change only between windows),
 * then read in that layout by every later product of the window. Primitives
 * are made once per shape and kept across windows, so a steady window creates
 * nothing. Only shapes where oneDNN measured faster go this way (bench/run.py,
 * bench/dnnl_rnn skinny); everything else, and every build without oneDNN,
 * runs bt_gemm. BPTT_DNNL=off in the environment sends every product to
 * bt_gemm (to compare both in one build).
 * Dimension letters: M rows of a, K and N the shape of op(W). */
#include <stdlib.h>
#include <string.h>

#include "bt_assert.h"
#include "packed.h"

#if BT_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>

/* One matmul primitive: c[M,N] = a[M,K] W (+ c when acc), W in its own layout. */
typedef struct prim {
    int m, k, n;
    bool acc;
    dnnl_primitive_t mm;
    const dnnl_memory_desc_t *wmd; /* the packed layout (owned by pd) */
    dnnl_primitive_desc_t pd;
    dnnl_memory_t src, dst;        /* handles set per call */
} prim;

/* A weight as one primitive reads it: w (or w^T) packed into wmd's layout. */
typedef struct packed {
    const bt_tensor *w;
    const bt_real *data;  /* w->data when packed: a moved tensor is another weight */
    bool trans, fresh;    /* fresh: packed since the last reset */
    dnnl_memory_desc_t md; /* the layout it is packed in (its primitive's) */
    dnnl_memory_t user, mem;
    dnnl_primitive_t reorder;
} packed;

struct bt_packs {
    dnnl_engine_t eng;
    dnnl_stream_t stream;
    prim *prims;
    packed *ws;
    int n_prims, cap_prims, n_ws, cap_ws;
    bool all;    /* BPTT_DNNL=all: every weight product, whatever its shape */
    bool broken; /* a oneDNN call failed: bt_gemm from now on (same results) */
};

bt_packs *bt_packs_new(void)
{
    const char *env = getenv("BPTT_DNNL");
    if (env && !strcmp(env, "off"))
        return NULL;
    bt_packs *p = bt_calloc(1, sizeof *p);
    if (p)
        p->all = env && !strcmp(env, "all");
    return p;
}

void bt_packs_free(bt_packs *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->n_ws; i++) {
        dnnl_memory_destroy(p->ws[i].user);
        dnnl_memory_destroy(p->ws[i].mem);
        dnnl_primitive_destroy(p->ws[i].reorder);
    }
    for (int i = 0; i < p->n_prims; i++) {
        dnnl_primitive_destroy(p->prims[i].mm);
        dnnl_primitive_desc_destroy(p->prims[i].pd);
        dnnl_memory_destroy(p->prims[i].src);
        dnnl_memory_destroy(p->prims[i].dst);
    }
    if (p->stream)
        dnnl_stream_destroy(p->stream);
    if (p->eng)
        dnnl_engine_destroy(p->eng);
    bt_free(p->prims);
    bt_free(p->ws);
    bt_free(p);
}

void bt_packs_reset(bt_packs *p)
{
    for (int i = 0; p && i < p->n_ws; i++)
        p->ws[i].fresh = false;
}

/* Where oneDNN's matmul on packed weights beat OpenBLAS's sgemm (one thread,
 * AVX-512, best of 5 by CPU time, rows M = 4, 32, 128, 512): every weight
 * product from [M,64]x[64,28] up to [M,1024]x[1024,1024], forward and
 * transposed, by 1.1-2x at M = 32 (more at M = 4, less at 512), except the
 * smallest: a weight of at most 64x64 values not transposed (0.75-0.85x at
 * M = 32: OpenBLAS's small-matrix kernels), or transposed with under 32 rows.
 * Measured with a throwaway program timing both on the same operands; the
 * whole step agrees (bench/run.py with BPTT_DNNL=off against the default). */
static bool worth_packing(const bt_packs *p, int m, int k, int n, bool trans)
{
    bool tiny = (size_t)k * (size_t)n <= 64 * 64 && (!trans || m < 32);
    return p->all || !tiny;
}

static bool ok(bt_packs *p, dnnl_status_t s)
{
    if (s != dnnl_success)
        p->broken = true;
    return s == dnnl_success;
}

static bool md_strided(bt_packs *p, dnnl_memory_desc_t *md, int rows, int cols, int rs, int cs)
{
    return ok(p, dnnl_memory_desc_init_by_strides(md, 2, (dnnl_dims_t){rows, cols}, dnnl_f32,
                                                  (dnnl_dims_t){rs, cs}));
}

/* Slots grow by doubling; false without memory. */
static bool grow(void **arr, int *cap, int n, size_t elem)
{
    if (n < *cap)
        return true;
    int c = *cap ? 2 * *cap : 4;
    void *a = bt_realloc(*arr, elem * (size_t)c);
    if (!a)
        return false;
    *arr = a;
    *cap = c;
    return true;
}

/* The primitive desc of c[M,N] = a[M,K] W (+ c), W in the layout oneDNN picks. */
static bool prim_desc(bt_packs *p, prim *q)
{
    dnnl_memory_desc_t a, w, c;
    if (!md_strided(p, &a, q->m, q->k, q->k, 1) || !md_strided(p, &c, q->m, q->n, q->n, 1) ||
        !ok(p, dnnl_memory_desc_init_by_tag(&w, 2, (dnnl_dims_t){q->k, q->n}, dnnl_f32,
                                            dnnl_format_tag_any)))
        return false;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_matmul_desc_t d;
    bool good = ok(p, dnnl_primitive_attr_create(&attr)) && ok(p, dnnl_post_ops_create(&po)) &&
                (!q->acc || ok(p, dnnl_post_ops_append_sum(po, 1.0f))) &&
                ok(p, dnnl_primitive_attr_set_post_ops(attr, po)) &&
                ok(p, dnnl_matmul_desc_init(&d, &a, &w, NULL, &c)) &&
                ok(p, dnnl_primitive_desc_create(&q->pd, &d, attr, p->eng, NULL));
    if (po)
        dnnl_post_ops_destroy(po);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    return good && (q->wmd = dnnl_primitive_desc_query_md(q->pd, dnnl_query_weights_md, 0)) &&
           ok(p, dnnl_memory_create(&q->src, &a, p->eng, DNNL_MEMORY_NONE)) &&
           ok(p, dnnl_memory_create(&q->dst, &c, p->eng, DNNL_MEMORY_NONE)) &&
           ok(p, dnnl_primitive_create(&q->mm, q->pd));
}

/* The primitive for this shape: made on first use, kept for good. */
static prim *prim_for(bt_packs *p, int m, int k, int n, bool acc)
{
    for (int i = 0; i < p->n_prims; i++) {
        prim *q = &p->prims[i];
        if (q->m == m && q->k == k && q->n == n && q->acc == acc)
            return q;
    }
    if ((!p->eng && (!ok(p, dnnl_engine_create(&p->eng, dnnl_cpu, 0)) ||
                     !ok(p, dnnl_stream_create(&p->stream, p->eng, dnnl_stream_default_flags)))) ||
        !grow((void **)&p->prims, &p->cap_prims, p->n_prims, sizeof *p->prims)) {
        p->broken = true;
        return NULL;
    }
    prim *q = &p->prims[p->n_prims];
    *q = (prim){.m = m, .k = k, .n = n, .acc = acc};
    if (!prim_desc(p, q))
        return NULL; /* broken: what was made leaks once, never again */
    p->n_prims++;
    return q;
}

/* w as q reads it: its packed copy, packed now if stale. */
static packed *packed_for(bt_packs *p, const prim *q, const bt_tensor *w, bool trans)
{
    packed *e = NULL;
    for (int i = 0; i < p->n_ws && !e; i++)
        if (p->ws[i].w == w && p->ws[i].trans == trans && p->ws[i].data == w->data &&
            dnnl_memory_desc_equal(&p->ws[i].md, q->wmd))
            e = &p->ws[i];
    if (!e) { /* a new weight: its buffers and reorder, once */
        dnnl_memory_desc_t user;
        if (!grow((void **)&p->ws, &p->cap_ws, p->n_ws, sizeof *p->ws) ||
            !md_strided(p, &user, q->k, q->n, trans ? 1 : q->n, trans ? q->k : 1))
            return NULL;
        e = &p->ws[p->n_ws];
        *e = (packed){.w = w, .data = w->data, .trans = trans, .md = *q->wmd};
        dnnl_primitive_desc_t rpd;
        if (!ok(p, dnnl_memory_create(&e->user, &user, p->eng, (void *)w->data)) ||
            !ok(p, dnnl_memory_create(&e->mem, q->wmd, p->eng, DNNL_MEMORY_ALLOCATE)) ||
            !ok(p, dnnl_reorder_primitive_desc_create(&rpd, &user, p->eng, q->wmd, p->eng, NULL)))
            return NULL;
        bool made = ok(p, dnnl_primitive_create(&e->reorder, rpd));
        dnnl_primitive_desc_destroy(rpd);
        if (!made)
            return NULL;
        p->n_ws++;
    }
    if (!e->fresh) {
        dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, e->user}, {DNNL_ARG_TO, e->mem}};
        if (!ok(p, dnnl_primitive_execute(e->reorder, p->stream, 2, args)) ||
            !ok(p, dnnl_stream_wait(p->stream)))
            return NULL;
        e->fresh = true;
    }
    return e;
}

/* c = a op(w) + beta c through oneDNN; false (nothing written) when this
 * product is not one for it or oneDNN failed. */
static bool gemm_dnnl(bt_packs *p, int m, const bt_real *a, const bt_tensor *w, bool trans,
                      bt_real beta, bt_real *c)
{
    int k = trans ? w->shape[1] : w->shape[0], n = trans ? w->shape[0] : w->shape[1];
    if (!p || p->broken || !w->param || (beta != 0 && beta != 1) || !worth_packing(p, m, k, n, trans))
        return false;
    prim *q = prim_for(p, m, k, n, beta == 1);
    packed *e = q ? packed_for(p, q, w, trans) : NULL;
    if (!e)
        return false;
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, q->src}, {DNNL_ARG_WEIGHTS, e->mem},
                               {DNNL_ARG_DST, q->dst}};
    return ok(p, dnnl_memory_set_data_handle(q->src, (void *)a)) &&
           ok(p, dnnl_memory_set_data_handle(q->dst, c)) &&
           ok(p, dnnl_primitive_execute(q->mm, p->stream, 3, args)) &&
           ok(p, dnnl_stream_wait(p->stream));
}

#else /* no backend: every product is bt_gemm's */

bt_packs *bt_packs_new(void) { return NULL; }
void bt_packs_free(bt_packs *p) { (void)p; }
void bt_packs_reset(bt_packs *p) { (void)p; }

static bool gemm_dnnl(bt_packs *p, int m, const bt_real *a, const bt_tensor *w, bool trans,
                      bt_real beta, bt_real *c)
{
    (void)p, (void)m, (void)a, (void)w, (void)trans, (void)beta, (void)c;
    return false;
}
#endif

void bt_gemm_weight(bt_graph *g, int m, const bt_real *a, const bt_tensor *w, bool trans_w,
                    bt_real beta, bt_real *c)
{
    BT_ASSERT(w->ndim == 2, "a weight product with a %d-D weight", w->ndim);
    int k = trans_w ? w->shape[1] : w->shape[0], n = trans_w ? w->shape[0] : w->shape[1];
    if (!gemm_dnnl(bt_graph_packs(g), m, a, w, trans_w, beta, c))
        bt_gemm(false, trans_w, m, n, k, 1, a, k, w->data, w->shape[1], beta, c, n);
}
