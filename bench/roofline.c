/* roofline.c: the classic step's GEMM ceiling on this machine. Times, in this
 * process and through bt_gemm (the CBLAS bptt itself calls), every matrix
 * product shape one training step of `bench step` runs, and turns the rates
 * into the most tokens/s the step could reach if its products were all it did.
 *
 *   build/bench/roofline [--hidden 64,256,512,1024] [--batch 32] [--steps-per-seq 35]
 *                        [--reps 7] [--min-ms 20] [--threads N]
 *                        [--bench build/bench/bench [--bench-steps 50] [--bench-warmup 10]]
 *                        [--measured TOKENS_PER_S]   (only with a single --hidden)
 *
 * One JSON line per measurement on stdout: "kind":"blas" (the kernel OpenBLAS
 * picked, its config and thread count), then per hidden size one "kind":"shape"
 * line per product shape and one "kind":"ceiling" line (with bptt's tokens/s
 * and the fraction of the ceiling when --bench or --measured gives them).
 * OpenBLAS reads OPENBLAS_CORETYPE and OPENBLAS_NUM_THREADS when it loads, so
 * set them in the environment; --bench runs its child under the same ones.
 * Besides wall-clock medians (comparable with `bench step`'s), every rate is
 * also given per CPU second ("_cpu"): on a shared machine those do not count
 * the time the process waited for a core (one thread only). bptt's CPU figure
 * is the whole child run's (warm-up and setup included), a slight underestimate.
 *
 * When oneDNN is found at build time (bench/meson.build), every shape is also
 * timed with oneDNN's matmul ("gflops_onednn..."): the per-step products
 * (op(A) plain) on weights packed once in the layout it prefers, as
 * -Dblas=dnnl runs them (framework/packed.c; the packing, twice per window, is
 * left out: a ceiling is a best case), the weight gradients on plain operands.
 * The ceiling then takes the faster library per shape ("ceiling_*"), and
 * "ceiling_openblas_*" keeps the OpenBLAS-only figure: what this machine can
 * do with the libraries it has, whichever build of bptt is measured.
 *
 * The shapes are those bptt calls (checked once by logging cblas_sgemm under
 * `bench step`): per step h W_hh, h_t W_hq, dlogits W_hq^T, dA W_hh^T (T - 1
 * times: the window's first state is a detached leaf), and once per window the
 * deferred weight gradients h^T dA for W_hh and W_hq (split where a group is
 * full, by the library's own rule: bt_wgrad_group_full, framework/wgrad.h).
 * W_xh is a row lookup and scatter, no product. Rates are the median of
 * --reps timed batches of repeated calls on warm operands: a best case, as a
 * ceiling should be.
 * Dimension letters: B batch, T steps, H hidden, V vocabulary (28). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bptt.h"
#include "bt_clock.h"
#include "wgrad.h"

#if BT_HAVE_CBLAS
#include <cblas.h>
#endif
#if BENCH_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
#endif

#define MAX_SHAPES 16
#define MAX_HIDDEN 16

typedef struct shape {
    const char *name;   /* what the product is in the step */
    bool ta, tb;        /* op(A), op(B) as bt_gemm receives them */
    int m, n, k;
    bt_real beta;
    int per_window;     /* calls per training window of T steps */
    double gflops;      /* measured rate: median of the timed batches */
    double best;        /* the fastest batch (what an idle machine gives) */
    double cpu;         /* median by process CPU time: blind to time spent
                           descheduled on a shared machine (1 thread only) */
    double d_gflops, d_best, d_cpu; /* the same with oneDNN's matmul (0: not timed) */
} shape;

typedef struct opts {
    int hidden[MAX_HIDDEN], n_hidden, B, T, V, reps, threads, bench_steps, bench_warmup;
    double min_ms, measured;
    const char *bench;
} opts;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static shape shape_of(const char *name, bool ta, bool tb, int m, int n, int k, bt_real beta, int per)
{
    return (shape){name, ta, tb, m, n, k, beta, per, 0, 0, 0, 0, 0, 0};
}

/* The deferred weight gradient dW[K,N] += A^T D over R stacked rows, split
 * the way framework/wgrad.c flushes it: full chunks, then the rest. */
static int add_wgrad(shape *s, int ns, const char *name, const char *rest, int K, int N, int rows,
                     int step_rows)
{
    /* Each step defers step_rows rows; a group runs at the first full count
     * (the library's own rule, framework/wgrad.h). */
    int chunk = step_rows;
    while (chunk < rows && !bt_wgrad_group_full((size_t)chunk, (size_t)(K + N)))
        chunk += step_rows;
    if (chunk >= rows) /* never flushed early: one product over the window */
        chunk = rows;
    s[ns++] = shape_of(name, true, false, K, N, chunk, 1, rows / chunk);
    if (rows % chunk)
        s[ns++] = shape_of(rest, true, false, K, N, rows % chunk, 1, 1);
    return ns;
}

/* Every product of one window at hidden H, as bptt runs it. */
static int step_shapes(shape *s, int B, int T, int H, int V)
{
    int ns = 0;
    s[ns++] = shape_of("fwd h*W_hh", false, false, B, H, H, 1, T);
    s[ns++] = shape_of("fwd h*W_hq", false, false, B, V, H, 0, T);
    s[ns++] = shape_of("bwd dlogits*W_hq^T", false, true, B, H, V, 1, T);
    s[ns++] = shape_of("bwd dA*W_hh^T", false, true, B, H, H, 1, T - 1);
    ns = add_wgrad(s, ns, "wgrad W_hh", "wgrad W_hh (rest)", H, H, T * B, B);
    ns = add_wgrad(s, ns, "wgrad W_hq", "wgrad W_hq (rest)", H, V, T * B, B);
    return ns;
}

/* The output layer over the whole window at once, which bptt does not do
 * (its loss is per step): what batching it would be worth. */
static int batched_output_shapes(shape *s, int B, int T, int H, int V)
{
    int ns = step_shapes(s, B, T, H, V);
    s[1] = shape_of("fwd H*W_hq (window)", false, false, T * B, V, H, 0, 1);
    s[2] = shape_of("bwd dlogits*W_hq^T (window)", false, true, T * B, H, V, 1, 1);
    return ns;
}

/* 64-byte aligned, as bptt's arena hands out activations and gradients. */
static bt_real *random_buffer(size_t n, unsigned *seed)
{
    size_t bytes = (sizeof(bt_real) * (n ? n : 1) + 63) & ~(size_t)63;
    bt_real *p = aligned_alloc(64, bytes);
    if (!p) {
        fprintf(stderr, "roofline: out of memory for %zu values\n", n);
        exit(1);
    }
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1103515245u + 12345u;
        p[i] = (bt_real)((double)(*seed >> 8) / 16777216.0 - 0.5) * (bt_real)0.1;
    }
    return p;
}

typedef void (*product_fn)(void *ctx);

/* GFLOP/s of `reps` batches of fn(ctx), each long enough to last min_ms:
 * the median into *med, the fastest into *best, the median by CPU time into *cpu. */
static void time_batches(product_fn fn, void *ctx, double flops, int reps, double min_ms,
                         double *med, double *best, double *cpu_med)
{
    double *rate = malloc(sizeof(double) * 2 * (size_t)reps), *cpu = rate + reps;
    long calls = 1;
    for (;;) { /* warm up and size a batch */
        double t0 = bt_monotonic_s();
        for (long i = 0; i < calls; i++)
            fn(ctx);
        if (bt_monotonic_s() - t0 >= min_ms * 1e-3 || calls > (1L << 24))
            break;
        calls *= 2;
    }
    for (int r = 0; r < reps; r++) {
        double t0 = bt_monotonic_s(), c0 = bt_process_cpu_s();
        for (long i = 0; i < calls; i++)
            fn(ctx);
        rate[r] = flops * (double)calls / (bt_monotonic_s() - t0) * 1e-9;
        cpu[r] = flops * (double)calls / (bt_process_cpu_s() - c0) * 1e-9;
    }
    qsort(rate, (size_t)reps, sizeof *rate, cmp_double);
    qsort(cpu, (size_t)reps, sizeof *cpu, cmp_double);
    *med = rate[reps / 2];
    *best = rate[reps - 1];
    *cpu_med = cpu[reps / 2];
    free(rate);
}

/* One shape's operands. Stored layouts: A is [m,k] or [k,m] (ta); B is [k,n]
 * or [n,k] (tb). */
typedef struct operands {
    const shape *sh;
    bt_real *a, *b, *c;
    int lda, ldb;
} operands;

static void product_blas(void *ctx)
{
    operands *o = ctx;
    const shape *sh = o->sh;
    bt_gemm(sh->ta, sh->tb, sh->m, sh->n, sh->k, 1, o->a, o->lda, o->b, o->ldb, sh->beta, o->c, sh->n);
}

#if BENCH_HAVE_DNNL
static void time_shape_dnnl(shape *sh, operands *o, int reps, double min_ms);
#endif

/* Times one shape through bt_gemm (and oneDNN when built with it). */
static void time_shape(shape *sh, int reps, double min_ms)
{
    unsigned seed = 7;
    operands o = {sh, random_buffer((size_t)sh->m * sh->k, &seed),
                  random_buffer((size_t)sh->k * sh->n, &seed),
                  random_buffer((size_t)sh->m * sh->n, &seed), sh->ta ? sh->m : sh->k,
                  sh->tb ? sh->k : sh->n};
    double flops = 2.0 * sh->m * sh->n * sh->k;
    time_batches(product_blas, &o, flops, reps, min_ms, &sh->gflops, &sh->best, &sh->cpu);
#if BENCH_HAVE_DNNL
    time_shape_dnnl(sh, &o, reps, min_ms);
#endif
    free(o.a); free(o.b); free(o.c);
}

#if BENCH_HAVE_DNNL
#define DN(call)                                                                              \
    do {                                                                                      \
        if ((call) != dnnl_success) {                                                         \
            fprintf(stderr, "roofline: %s:%d: %s failed\n", __FILE__, __LINE__, #call);       \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

typedef struct dnnl_product {
    dnnl_stream_t stream;
    dnnl_primitive_t mm;
    dnnl_exec_arg_t args[3];
} dnnl_product;

static void product_dnnl(void *ctx)
{
    dnnl_product *d = ctx;
    DN(dnnl_primitive_execute(d->mm, d->stream, 3, d->args));
    DN(dnnl_stream_wait(d->stream));
}

static dnnl_memory_desc_t md2(int rows, int cols, bool trans)
{
    dnnl_memory_desc_t md; /* rows x cols, stored transposed when trans */
    DN(dnnl_memory_desc_init_by_strides(&md, 2, (dnnl_dims_t){rows, cols}, dnnl_f32,
                                        trans ? (dnnl_dims_t){1, rows} : (dnnl_dims_t){cols, 1}));
    return md;
}

/* oneDNN's matmul on the same operands: the weight (B) of a per-step product
 * (A plain) packed once in oneDNN's layout, a weight gradient (A^T) plain. */
static void time_shape_dnnl(shape *sh, operands *o, int reps, double min_ms)
{
    static dnnl_engine_t eng;
    static dnnl_stream_t stream;
    if (!eng) {
        DN(dnnl_engine_create(&eng, dnnl_cpu, 0));
        DN(dnnl_stream_create(&stream, eng, dnnl_stream_default_flags));
    }
    bool pack = !sh->ta;
    dnnl_memory_desc_t a = md2(sh->m, sh->k, sh->ta), b = md2(sh->k, sh->n, sh->tb);
    dnnl_memory_desc_t c = md2(sh->m, sh->n, false), b_any;
    DN(dnnl_memory_desc_init_by_tag(&b_any, 2, (dnnl_dims_t){sh->k, sh->n}, dnnl_f32, dnnl_format_tag_any));
    dnnl_primitive_attr_t attr;
    dnnl_post_ops_t po;
    DN(dnnl_primitive_attr_create(&attr));
    DN(dnnl_post_ops_create(&po));
    if (sh->beta != 0)
        DN(dnnl_post_ops_append_sum(po, 1.0f));
    DN(dnnl_primitive_attr_set_post_ops(attr, po));
    dnnl_matmul_desc_t desc;
    dnnl_primitive_desc_t pd;
    DN(dnnl_matmul_desc_init(&desc, &a, pack ? &b_any : &b, NULL, &c));
    DN(dnnl_primitive_desc_create(&pd, &desc, attr, eng, NULL));
    const dnnl_memory_desc_t *wmd = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    dnnl_memory_t ma, mb, mc, mw;
    DN(dnnl_memory_create(&ma, &a, eng, o->a));
    DN(dnnl_memory_create(&mb, &b, eng, o->b));
    DN(dnnl_memory_create(&mc, &c, eng, o->c));
    mw = mb;
    if (pack) { /* once: a window packs its weight once for all its steps */
        dnnl_primitive_desc_t rpd;
        dnnl_primitive_t r;
        DN(dnnl_memory_create(&mw, wmd, eng, DNNL_MEMORY_ALLOCATE));
        DN(dnnl_reorder_primitive_desc_create(&rpd, &b, eng, wmd, eng, NULL));
        DN(dnnl_primitive_create(&r, rpd));
        DN(dnnl_primitive_execute(r, stream, 2, (dnnl_exec_arg_t[]){{DNNL_ARG_FROM, mb}, {DNNL_ARG_TO, mw}}));
        DN(dnnl_stream_wait(stream));
        dnnl_primitive_destroy(r);
        dnnl_primitive_desc_destroy(rpd);
    }
    dnnl_product d = {stream, NULL, {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, mc}}};
    DN(dnnl_primitive_create(&d.mm, pd));
    time_batches(product_dnnl, &d, 2.0 * sh->m * sh->n * sh->k, reps, min_ms, &sh->d_gflops,
                 &sh->d_best, &sh->d_cpu);
    dnnl_primitive_destroy(d.mm);
    if (pack)
        dnnl_memory_destroy(mw);
    dnnl_memory_destroy(ma); dnnl_memory_destroy(mb); dnnl_memory_destroy(mc);
    dnnl_primitive_desc_destroy(pd);
    dnnl_post_ops_destroy(po);
    dnnl_primitive_attr_destroy(attr);
}
#endif

enum rate_kind { RATE_MEDIAN, RATE_BEST, RATE_CPU, OPENBLAS_ONLY = 4 };

static double rate_of(const shape *s, enum rate_kind kind)
{
    int k = kind & 3;
    double blas = k == RATE_BEST ? s->best : k == RATE_CPU ? s->cpu : s->gflops;
    double dnnl = k == RATE_BEST ? s->d_best : k == RATE_CPU ? s->d_cpu : s->d_gflops;
    return kind & OPENBLAS_ONLY || dnnl < blas ? blas : dnnl;
}

/* Tokens/s if the window's products ran at the measured rates (the faster
 * library per shape, unless OPENBLAS_ONLY) and nothing else ran. */
static double ceiling(const shape *s, int ns, int B, int T, enum rate_kind kind, double *flops_per_token)
{
    double secs = 0, flops = 0;
    for (int i = 0; i < ns; i++) {
        double f = 2.0 * s[i].m * s[i].n * s[i].k * s[i].per_window;
        double rate = rate_of(&s[i], kind);
        flops += f;
        secs += f / (rate * 1e9);
    }
    *flops_per_token = flops / ((double)B * T);
    return (double)B * T / secs;
}

/* The kernel set OpenBLAS chose (it falls back to generic ones on CPUs it
 * does not know, unless OPENBLAS_CORETYPE names one). */
static void print_blas(void)
{
    const char *env = getenv("OPENBLAS_CORETYPE");
#if BT_HAVE_CBLAS
    char config[256];
    size_t j = 0;
    for (const char *p = openblas_get_config(); *p && j + 2 < sizeof config; p++) {
        if (*p == '"' || *p == '\\')
            config[j++] = '\\';
        config[j++] = *p;
    }
    config[j] = 0;
    printf("{\"kind\": \"blas\", \"blas\": \"openblas\", \"corename\": \"%s\", \"config\": \"%s\", "
           "\"threads\": %d, \"parallel\": %d, \"OPENBLAS_CORETYPE\": \"%s\", \"precision\": \"%s\"}\n",
           openblas_get_corename(), config, openblas_get_num_threads(), openblas_get_parallel(),
           env ? env : "", BT_REAL_DOUBLE ? "double" : "float");
#else
    printf("{\"kind\": \"blas\", \"blas\": \"portable\", \"corename\": \"none\", \"threads\": 1, "
           "\"OPENBLAS_CORETYPE\": \"%s\", \"precision\": \"%s\"}\n",
           env ? env : "", BT_REAL_DOUBLE ? "double" : "float");
#endif
}

static const char *corename(void)
{
#if BT_HAVE_CBLAS
    return openblas_get_corename();
#else
    return "none";
#endif
}

/* bptt's speed at one hidden size: wall-clock median of `bench step`, and
 * tokens per CPU second of the whole child run (warm-up and setup included;
 * blind to time descheduled, so steadier on a shared machine; 1 thread). */
typedef struct measured {
    double tok, tok_cpu;
} measured;

static double children_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
           (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
}

/* Runs `bench step` at hidden H and echoes its JSON line; zeros when it
 * fails or prints no figure. */
static measured run_bench(const opts *o, int H)
{
    measured m = {0, 0};
    char cmd[4096];
    if (strchr(o->bench, '\'')) {
        fprintf(stderr, "roofline: --bench path must not contain a quote: %s\n", o->bench);
        return m;
    }
    snprintf(cmd, sizeof cmd, "'%s' step --hidden %d --batch %d --steps-per-seq %d --warmup %d --steps %d",
             o->bench, H, o->B, o->T, o->bench_warmup, o->bench_steps);
    fflush(stdout);
    double cpu0 = children_cpu_s();
    FILE *f = popen(cmd, "r");
    char line[4096];
    while (f && fgets(line, sizeof line, f)) {
        const char *at = strstr(line, "\"tokens_per_s\": ");
        if (at && strstr(line, "\"impl\": \"bptt\"")) {
            m.tok = atof(at + strlen("\"tokens_per_s\": "));
            fputs(line, stdout);
        }
    }
    if (!f || pclose(f) != 0 || m.tok <= 0) {
        fprintf(stderr, "roofline: `%s` failed or printed no tokens_per_s\n", cmd);
        return (measured){0, 0};
    }
    m.tok_cpu = (double)o->B * o->T * (o->bench_warmup + o->bench_steps) / (children_cpu_s() - cpu0);
    return m;
}

static void print_shape(const shape *s, int H, int B, int T)
{
    double f = 2.0 * s->m * s->n * s->k;
    printf("{\"kind\": \"shape\", \"hidden\": %d, \"name\": \"%s\", \"trans_a\": %d, \"trans_b\": %d, "
           "\"m\": %d, \"n\": %d, \"k\": %d, \"beta\": %g, \"per_window\": %d, "
           "\"flops_per_token\": %.1f, \"gflops\": %.2f, \"gflops_best\": %.2f, \"gflops_cpu\": %.2f, "
           "\"us_per_call\": %.3f, \"gflops_onednn\": %.2f, \"gflops_onednn_best\": %.2f, "
           "\"gflops_onednn_cpu\": %.2f, \"corename\": \"%s\"}\n",
           H, s->name, s->ta, s->tb, s->m, s->n, s->k, (double)s->beta, s->per_window,
           f * s->per_window / ((double)B * T), s->gflops, s->best, s->cpu, f / (s->gflops * 1e3),
           s->d_gflops, s->d_best, s->d_cpu, corename());
}

static void fmt_or_null(char *buf, size_t len, double v, const char *fmt)
{
    if (v > 0)
        snprintf(buf, len, fmt, v);
    else
        snprintf(buf, len, "null");
}

static void print_ceiling(const opts *o, int H, const shape *s, const shape *w, int ns, measured m)
{
    double fpt, skinny = 0, total = 0;
    double ceil_tok = ceiling(s, ns, o->B, o->T, RATE_MEDIAN, &fpt);
    double ceil_best = ceiling(s, ns, o->B, o->T, RATE_BEST, &fpt);
    double ceil_cpu = ceiling(s, ns, o->B, o->T, RATE_CPU, &fpt);
    double ceil_w = ceiling(w, ns, o->B, o->T, RATE_MEDIAN, &fpt);
    double ob_tok = ceiling(s, ns, o->B, o->T, RATE_MEDIAN | OPENBLAS_ONLY, &fpt);
    double ob_cpu = ceiling(s, ns, o->B, o->T, RATE_CPU | OPENBLAS_ONLY, &fpt);
    for (int i = 0; i < ns; i++) { /* time share of the per-step [B,*] products */
        double t = 2.0 * s[i].m * s[i].n * s[i].k * s[i].per_window / rate_of(&s[i], RATE_MEDIAN);
        total += t;
        skinny += s[i].m == o->B ? t : 0;
    }
    char tok[32], frac[32], tok_cpu[32], frac_cpu[32];
    fmt_or_null(tok, sizeof tok, m.tok, "%.1f");
    fmt_or_null(frac, sizeof frac, m.tok / ceil_tok, "%.4f");
    fmt_or_null(tok_cpu, sizeof tok_cpu, m.tok_cpu, "%.1f");
    fmt_or_null(frac_cpu, sizeof frac_cpu, m.tok_cpu / ceil_cpu, "%.4f");
    const char *env = getenv("OPENBLAS_CORETYPE");
    printf("{\"kind\": \"ceiling\", \"hidden\": %d, \"batch\": %d, \"T\": %d, \"vocab\": %d, "
           "\"gemm_flops_per_token\": %.1f, \"formula_6H2_10VH\": %.1f, "
           "\"ceiling_tokens_per_s\": %.1f, \"ceiling_best_tokens_per_s\": %.1f, "
           "\"ceiling_cpu_tokens_per_s\": %.1f, \"ceiling_gflops\": %.2f, \"per_step_time_share\": %.3f, "
           "\"ceiling_batched_output_tokens_per_s\": %.1f, \"bptt_tokens_per_s\": %s, "
           "\"fraction_of_ceiling\": %s, \"bptt_tokens_per_cpu_s\": %s, \"fraction_of_ceiling_cpu\": %s, "
           "\"ceiling_openblas_tokens_per_s\": %.1f, \"ceiling_openblas_cpu_tokens_per_s\": %.1f, "
           "\"libraries\": \"%s\", "
           "\"corename\": \"%s\", \"OPENBLAS_CORETYPE\": \"%s\", \"precision\": \"%s\"}\n",
           H, o->B, o->T, o->V, fpt, 6.0 * H * H + 10.0 * o->V * H, ceil_tok, ceil_best, ceil_cpu,
           ceil_tok * fpt * 1e-9, skinny / total, ceil_w, tok, frac, tok_cpu, frac_cpu, ob_tok, ob_cpu,
           BENCH_HAVE_DNNL ? "faster of OpenBLAS and oneDNN per shape" : "OpenBLAS", corename(),
           env ? env : "", BT_REAL_DOUBLE ? "double" : "float");
    fflush(stdout);
}

/* All shapes at one hidden size, the ceilings, and bptt's fraction of them. */
static void measure_hidden(const opts *o, int H)
{
    shape s[MAX_SHAPES], w[MAX_SHAPES];
    int ns = step_shapes(s, o->B, o->T, H, o->V);
    batched_output_shapes(w, o->B, o->T, H, o->V);
    for (int i = 0; i < ns; i++) {
        time_shape(&s[i], o->reps, o->min_ms);
        print_shape(&s[i], H, o->B, o->T);
        if (i == 1 || i == 2) { /* the output layer batched over the window */
            time_shape(&w[i], o->reps, o->min_ms);
            print_shape(&w[i], H, o->B, o->T);
        } else
            w[i] = s[i];
    }
    measured m = {o->measured, 0};
    if (o->bench)
        m = run_bench(o, H);
    print_ceiling(o, H, s, w, ns, m);
}

static int usage(const char *why)
{
    fprintf(stderr, "roofline: %s\nusage: roofline [--hidden 64,256,512,1024] [--batch 32] "
                    "[--steps-per-seq 35] [--reps 7] [--min-ms 20] [--threads N] "
                    "[--bench PATH [--bench-steps 50] [--bench-warmup 10]] [--measured TOKENS_PER_S]\n",
            why);
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

static int parse_hidden(opts *o, const char *list)
{
    char buf[256], *save = NULL;
    snprintf(buf, sizeof buf, "%s", list);
    o->n_hidden = 0;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
        if (o->n_hidden == MAX_HIDDEN || !positive_int(t, &o->hidden[o->n_hidden++]))
            return -1;
    return o->n_hidden ? 0 : -1;
}

static int parse_args(opts *o, int argc, char **argv)
{
    for (int i = 1; i < argc; i += 2) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = !v;
        if (!v)
            ;
        else if (!strcmp(k, "--hidden"))
            bad = parse_hidden(o, v) != 0;
        else if (!strcmp(k, "--batch"))
            bad = !positive_int(v, &o->B);
        else if (!strcmp(k, "--steps-per-seq"))
            bad = !positive_int(v, &o->T);
        else if (!strcmp(k, "--reps"))
            bad = !positive_int(v, &o->reps);
        else if (!strcmp(k, "--threads"))
            bad = !positive_int(v, &o->threads);
        else if (!strcmp(k, "--bench-steps"))
            bad = !positive_int(v, &o->bench_steps);
        else if (!strcmp(k, "--bench-warmup"))
            bad = !positive_int(v, &o->bench_warmup);
        else if (!strcmp(k, "--min-ms"))
            bad = (o->min_ms = atof(v)) <= 0;
        else if (!strcmp(k, "--measured"))
            bad = (o->measured = atof(v)) <= 0;
        else if (!strcmp(k, "--bench"))
            o->bench = v;
        else {
            fprintf(stderr, "roofline: not an option: %s\n", k);
            return usage("unknown option");
        }
        if (bad) {
            fprintf(stderr, "roofline: %s needs a positive value (a list for --hidden)\n", k);
            return usage("bad arguments");
        }
    }
    if (o->measured > 0 && (o->n_hidden != 1 || o->bench))
        return usage("--measured goes with a single --hidden and no --bench");
    return 0;
}

int main(int argc, char **argv)
{
    opts o = {.hidden = {64, 256, 512, 1024}, .n_hidden = 4, .B = 32, .T = 35, .V = 28, .reps = 7,
              .bench_steps = 50, .bench_warmup = 10, .min_ms = 20};
    if (parse_args(&o, argc, argv) != 0)
        return 2;
    if (o.threads) {
        char n[16];
        snprintf(n, sizeof n, "%d", o.threads);
        setenv("OPENBLAS_NUM_THREADS", n, 1); /* for the --bench child */
#if BT_HAVE_CBLAS
        openblas_set_num_threads(o.threads);
#endif
    }
    print_blas();
    for (int i = 0; i < o.n_hidden; i++)
        measure_hidden(&o, o.hidden[i]);
    return 0;
}
