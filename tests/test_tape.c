/* test_tape.c: the tape's contract: exact detach and grad_scale, fan-out,
 * no-grad mode, sticky errors, O(1) reset with a flat arena, and no heap
 * allocation in a steady-state window. */
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bptt_op.h"
#include "check.h"

Test(tape, fan_out_accumulates)
{
    /* y = x*w + x*w2 + x : dy/dx = w + w2 + 1 (x used three times) */
    bt_graph *g = bt_graph_new();
    bt_tensor *x = test_tensor2(1, 1, true);
    bt_tensor *w = test_tensor2(1, 1, false), *w2 = test_tensor2(1, 1, false);
    x->data[0] = 2; w->data[0] = 3; w2->data[0] = 5;
    bt_tensor *y = bt_add(g, bt_add(g, bt_mul(g, x, w), bt_mul(g, x, w2)), x);
    cr_assert_eq(bt_backward(g, bt_sum(g, y)), BT_OK, "%s", bt_graph_error(g));
    cr_assert_eq(x->grad[0], 9);
    /* A second backward on a new window accumulates into the leaf. */
    bt_graph_reset(g);
    y = bt_mul(g, x, w);
    cr_assert_eq(bt_backward(g, bt_sum(g, y)), BT_OK);
    cr_assert_eq(x->grad[0], 12);
    bt_tensor_free(x); bt_tensor_free(w); bt_tensor_free(w2);
    bt_graph_free(g);
}

Test(tape, detach_stops_gradient_exactly)
{
    bt_graph *g = bt_graph_new();
    bt_tensor *x = test_tensor2(2, 2, true);
    for (int i = 0; i < 4; i++) x->data[i] = (bt_real)(i + 1);
    /* loss = sum(x * detach(x)): only the direct path reaches x, so dx = x. */
    bt_tensor *d = bt_detach(g, x);
    cr_assert_not_null(d);
    cr_assert_eq(d->requires_grad, false);
    cr_assert_eq(memcmp(d->data, x->data, 4 * sizeof(bt_real)), 0, "detach is the identity");
    cr_assert_eq(bt_backward(g, bt_sum(g, bt_mul(g, x, d))), BT_OK, "%s", bt_graph_error(g));
    for (int i = 0; i < 4; i++)
        cr_assert_eq(x->grad[i], x->data[i], "dx[%d] = %g, expected %g", i, x->grad[i], x->data[i]);
    /* A loss that reaches x only through detach cannot be differentiated. */
    bt_graph_reset(g);
    bt_tensor *only = bt_sum(g, bt_detach(g, x));
    cr_assert_neq(bt_backward(g, only), BT_OK);
    cr_assert(strstr(bt_graph_error(g), "does not depend") != NULL, "%s", bt_graph_error(g));
    bt_tensor_free(x);
    bt_graph_free(g);
}

Test(tape, grad_scale_multiplies_exactly)
{
    const double xis[] = {1.0, 0.5, 2.0, 1.0 / 0.3, -1.25};
    bt_graph *g = bt_graph_new();
    bt_tensor *x = test_tensor2(1, 3, true);
    for (int i = 0; i < 3; i++) x->data[i] = (bt_real)(0.1 * (i + 1));
    for (size_t k = 0; k < sizeof xis / sizeof *xis; k++) {
        bt_graph_reset(g);
        bt_tensor_zero_grad(x);
        bt_tensor *y = bt_grad_scale(g, x, xis[k]);
        cr_assert_eq(y->data, x->data, "identity forward shares data");
        cr_assert_eq(bt_backward(g, weighted_sum(g, y)), BT_OK);
        for (int i = 0; i < 3; i++) {
            bt_real w = (bt_real)(0.3 + 0.7 * sin(1.7 * i + 0.4));
            cr_assert_eq(x->grad[i], (bt_real)xis[k] * w, "xi=%g: dx[%d]=%.17g", xis[k], i,
                         (double)x->grad[i]);
        }
    }
    bt_tensor_free(x);
    bt_graph_free(g);
}

Test(tape, grad_scale_zero_blocks_infinity)
{
    /* Upstream gradient is infinite (d exp at a huge value); xi = 0 must give 0, not NaN. */
    bt_graph *g = bt_graph_new();
    bt_tensor *x = test_tensor2(1, 2, true);
    bt_tensor *big = test_tensor2(1, 2, true);
    x->data[0] = 1; x->data[1] = 2;
    big->data[0] = 1000; big->data[1] = 1000;
    bt_tensor *y = bt_mul(g, bt_grad_scale(g, x, 0.0), bt_exp(g, big));
    cr_assert_eq(bt_backward(g, bt_sum(g, y)), BT_OK);
    cr_assert_eq(x->grad[0], 0);
    cr_assert_eq(x->grad[1], 0);
    cr_assert(isinf(big->grad[0]), "the other path does see the infinity");
    bt_tensor_free(x); bt_tensor_free(big);
    bt_graph_free(g);
}

Test(tape, no_grad_records_nothing)
{
    bt_graph *g = bt_graph_new();
    bt_tensor *x = test_tensor2(2, 2, true);
    bt_graph_set_grad(g, false);
    bt_tensor *y = bt_tanh(g, bt_matmul(g, x, x));
    cr_assert_not_null(y);
    cr_assert_eq(bt_graph_node_count(g), 0);
    cr_assert_eq(y->requires_grad, false);
    bt_graph_set_grad(g, true);
    y = bt_tanh(g, bt_matmul(g, x, x));
    cr_assert_eq(bt_graph_node_count(g), 2);
    bt_tensor_free(x);
    bt_graph_free(g);
}

Test(tape, errors_are_sticky_and_named)
{
    bt_graph *g = bt_graph_new();
    bt_tensor *a = test_tensor2(2, 3, true), *b = test_tensor2(2, 3, true);
    bt_tensor *bad = bt_matmul(g, a, b);
    cr_assert_null(bad);
    cr_assert_eq(bt_graph_status(g), BT_ERR_SHAPE);
    cr_assert(strstr(bt_graph_error(g), "[2,3]") != NULL, "%s", bt_graph_error(g));
    /* Later ops pass the NULL along and keep the first message. */
    cr_assert_null(bt_tanh(g, bad));
    cr_assert(strstr(bt_graph_error(g), "matmul") != NULL, "%s", bt_graph_error(g));
    cr_assert_neq(bt_backward(g, bad), BT_OK);
    bt_graph_reset(g);
    cr_assert_eq(bt_graph_status(g), BT_OK);
    bt_tensor *s = bt_sum(g, a);
    bt_tensor *nonscalar = bt_tanh(g, a);
    cr_assert_eq(bt_backward(g, nonscalar), BT_ERR_SHAPE);
    cr_assert(strstr(bt_graph_error(g), "scalar") != NULL);
    (void)s;
    bt_tensor_free(a); bt_tensor_free(b);
    bt_graph_free(g);
}

/* One window of a small RNN: the steady-state shape of training. */
static bt_tensor *window(bt_graph *g, bt_params *p, const int32_t *ids, int steps)
{
    bt_tensor *wx = bt_params_find(p, "W_xh"), *wh = bt_params_find(p, "W_hh"),
              *b = bt_params_find(p, "b_h"), *wq = bt_params_find(p, "W_hq");
    bt_tensor *h = bt_graph_tensor2(g, 4, 8), *loss = NULL;
    for (int t = 0; t < steps; t++) {
        bt_tensor *x = bt_embedding(g, wx, ids + 4 * t, 4);
        h = bt_tanh(g, bt_add(g, bt_add(g, x, bt_matmul(g, h, wh)), b));
        bt_tensor *l = bt_softmax_xent(g, bt_matmul(g, h, wq), ids + 4 * (t + 1));
        loss = loss ? bt_add(g, loss, l) : l;
    }
    return loss;
}

static bt_params *small_model(void)
{
    bt_params *p = bt_params_new();
    bt_params_add(p, "W_xh", 2, (int[]){5, 8});
    bt_params_add(p, "W_hh", 2, (int[]){8, 8});
    bt_params_add(p, "b_h", 1, (int[]){8});
    bt_params_add(p, "W_hq", 2, (int[]){8, 5});
    cr_assert_eq(bt_params_finalize(p), BT_OK);
    bt_rng r;
    bt_rng_seed(&r, 3);
    for (size_t i = 0; i < bt_params_total(p); i++)
        bt_params_data(p)[i] = (bt_real)(0.3 * bt_rng_normal(&r));
    return p;
}

Test(tape, reset_keeps_arena_flat_over_1000_windows)
{
    bt_graph *g = bt_graph_new();
    bt_params *p = small_model();
    int32_t ids[4 * 11];
    for (int i = 0; i < 44; i++) ids[i] = (i * 7) % 5;
    size_t hw_after_first = 0, reserved_after_first = 0;
    for (int k = 0; k < 1000; k++) {
        bt_graph_reset(g);
        bt_tensor *loss = window(g, p, ids, 10);
        cr_assert_eq(bt_backward(g, loss), BT_OK, "%s", bt_graph_error(g));
        if (k == 0) {
            hw_after_first = bt_arena_high_water(bt_graph_arena(g));
            reserved_after_first = bt_arena_reserved(bt_graph_arena(g));
        }
    }
    cr_assert_gt(hw_after_first, 0);
    cr_assert_eq(bt_arena_high_water(bt_graph_arena(g)), hw_after_first,
                 "arena high-water grew from %zu to %zu", hw_after_first,
                 bt_arena_high_water(bt_graph_arena(g)));
    cr_assert_eq(bt_arena_reserved(bt_graph_arena(g)), reserved_after_first);
    bt_params_free(p);
    bt_graph_free(g);
}

Test(tape, steady_state_window_makes_no_heap_allocation)
{
    bt_graph *g = bt_graph_new();
    bt_params *p = small_model();
    int32_t ids[4 * 11];
    for (int i = 0; i < 44; i++) ids[i] = (i * 3) % 5;
    for (int warm = 0; warm < 2; warm++) {
        bt_graph_reset(g);
        bt_backward(g, window(g, p, ids, 10));
    }
    uint64_t before = bt_alloc_count();
    for (int k = 0; k < 50; k++) {
        bt_graph_reset(g);
        bt_params_zero_grad(p);
        cr_assert_eq(bt_backward(g, window(g, p, ids, 10)), BT_OK);
    }
    cr_assert_eq(bt_alloc_count(), before, "%llu heap allocations in 50 steady windows",
                 (unsigned long long)(bt_alloc_count() - before));
    bt_params_free(p);
    bt_graph_free(g);
}

Test(tape, params_share_one_block)
{
    bt_params *p = small_model();
    cr_assert_eq(bt_params_count(p), 4);
    cr_assert_eq(bt_params_total(p), 5 * 8 + 64 + 8 + 40);
    cr_assert_eq(bt_params_at(p, 1)->data, bt_params_data(p) + 40);
    cr_assert_eq(bt_params_at(p, 3)->grad, bt_params_grad(p) + 40 + 64 + 8);
    cr_assert_null(bt_params_find(p, "nope"));
    bt_params_free(p);
}

Test(tape, arena_reuses_chunks)
{
    bt_arena *a = bt_arena_new(1024);
    for (int k = 0; k < 100; k++) {
        bt_arena_reset(a);
        for (int i = 0; i < 10; i++)
            cr_assert_not_null(bt_arena_alloc(a, 700));
    }
    cr_assert_eq(bt_arena_reserved(a), 10 * 1024);
    cr_assert_eq(((uintptr_t)bt_arena_alloc(a, 3)) % 64, 0);
    bt_arena_free(a);
}

/* Whether `bytes` at p still hold v everywhere: blocks of one window, each
 * filled with a value of its own, must not overlap. */
static bool stamped(const unsigned char *p, size_t bytes, unsigned char v)
{
    for (size_t i = 0; i < bytes; i++)
        if (p[i] != v)
            return false;
    return true;
}

/* Two kinds of window in turn on one arena, as a checkpointed run's stretches
 * after a long plain window on the same graph (or a memory budget mixing
 * both): a long one (a small block, an own block of lf chunks, a chain of 40
 * chunks, an own block of ll) and a short one (a small block, own blocks of
 * sf and sl chunks). Once both have run, each window takes blocks the arena
 * keeps: no heap allocation, and no more memory than the 41 chunks and the
 * own blocks the windows need (`own`, in chunks). Every block is stamped and
 * checked after all are out: none overlaps another. */
static void check_two_kinds(size_t lf, size_t ll, size_t sf, size_t sl, size_t own)
{
    const size_t K = 4096, small_need = 128, chain_block = K - 64;
    bt_arena *a = bt_arena_new(K);
    unsigned char *blk[43];
    size_t len[43];
    uint64_t before = 0;
    for (int w = 0; w < 12; w++) {
        if (w == 4)
            before = bt_alloc_count();
        bt_arena_reset(a);
        bool is_long = w % 2 == 0;
        int n = 0;
        blk[n] = bt_arena_alloc(a, len[n] = 100), n++;
        blk[n] = bt_arena_alloc(a, len[n] = (is_long ? lf : sf) * K), n++;
        for (int i = 0; is_long && i < 40; i++)
            blk[n] = bt_arena_alloc(a, len[n] = chain_block), n++;
        blk[n] = bt_arena_alloc(a, len[n] = (is_long ? ll : sl) * K), n++;
        for (int i = 0; i < n; i++) {
            cr_assert_not_null(blk[i], "window %d, block %d", w, i);
            cr_assert_eq((uintptr_t)blk[i] % 64, 0);
            memset(blk[i], i + 1, len[i]);
        }
        for (int i = 0; i < n; i++)
            cr_assert(stamped(blk[i], len[i], (unsigned char)(i + 1)),
                      "window %d: block %d overlaps a later one", w, i);
        size_t used = small_need + (is_long ? 40 * chain_block + (lf + ll) * K : (sf + sl) * K);
        cr_assert_eq(bt_arena_used(a), used, "window %d", w);
    }
    cr_expect_eq(bt_alloc_count(), before, "%llu heap allocations in 8 windows after the first 4",
                 (unsigned long long)(bt_alloc_count() - before));
    cr_expect_eq(bt_arena_reserved(a), (41 + own) * K, "reserved %zu chunks, need %zu",
                 bt_arena_reserved(a) / K, 41 + own);
    cr_expect_eq(bt_arena_high_water(a), small_need + 40 * chain_block + (lf + ll) * K);
    bt_arena_free(a);
}

/* The smallest fit: the first fit hands the short window's 2-chunk block the
 * 8-chunk one, finds nothing for its 8-chunk block and makes a second (16
 * own chunks held, not 11). And nothing freed and made again: the old
 * arena freed a kept block whenever a larger one was wanted, so with 8 then
 * 2 in the long window and 3 then 2 in the short one it freed the 2-chunk
 * block in every short window and made it again in every long one (4 heap
 * allocations in 8 windows). */
Test(tape, arena_own_blocks_are_kept_across_windows_of_two_kinds)
{
    check_two_kinds(3, 8, 2, 8, 11);
    check_two_kinds(8, 2, 3, 2, 10);
}

/* ---- errors: one convention (status + message), and BT_ASSERT for our bugs ---- */

Test(tape, params_report_duplicate_names_and_bad_shapes)
{
    bt_params *p = bt_params_new();
    cr_assert_not_null(bt_params_add(p, "W", 2, (int[]){3, 3}));
    cr_expect_str_eq(bt_params_error(p), "");
    cr_expect_null(bt_params_add(p, "W", 1, (int[]){3}), "a duplicate name was accepted");
    /* Later errors do not overwrite the first; later good declarations still work. */
    cr_expect_null(bt_params_add(p, "b", 1, (int[]){0}));
    cr_expect_not_null(bt_params_add(p, "c", 1, (int[]){2}));
    cr_expect_eq(bt_params_finalize(p), BT_ERR_ARG);
    cr_expect_eq(bt_params_status(p), BT_ERR_ARG);
    cr_expect_str_eq(bt_params_error(p), "parameter 'W' is declared twice");
    cr_expect_null(bt_params_data(p), "a block with an error must not be finalized");
    bt_params_free(p);

    p = bt_params_new();
    cr_expect_null(bt_params_add(p, "b", 1, (int[]){0}));
    cr_expect_eq(bt_params_finalize(p), BT_ERR_SHAPE);
    cr_expect_str_eq(bt_params_error(p),
                     "parameter 'b': dimension 0 has size 0: sizes must be positive");
    bt_params_free(p);

    p = bt_params_new();
    cr_expect_null(bt_params_add(p, "t", 5, (int[]){1, 1, 1, 1, 1}));
    cr_expect_null(bt_params_add(p, NULL, 1, (int[]){1}));
    cr_expect_eq(bt_params_finalize(p), BT_ERR_SHAPE);
    cr_expect(strstr(bt_params_error(p), "parameter 't': a tensor of 5 dimensions") != NULL, "%s",
              bt_params_error(p));
    bt_params_free(p);

    p = bt_params_new();
    cr_assert_not_null(bt_params_add(p, "w", 1, (int[]){2}));
    cr_assert_eq(bt_params_finalize(p), BT_OK);
    cr_expect_null(bt_params_add(p, "late", 1, (int[]){2}));
    cr_expect_str_eq(bt_params_error(p), "parameter 'late' is declared after bt_params_finalize");
    bt_params_free(p);
}

Test(tape, shape_sizes_are_checked_once_for_every_maker)
{
    size_t n = 0;
    char err[BT_ERRMSG_LEN] = "";
    cr_expect_eq(bt_shape_size(0, NULL, &n, err, sizeof err), BT_OK);
    cr_expect_eq(n, 1, "a scalar has one value");
    cr_expect_eq(bt_shape_size(3, (int[]){2, 3, 4}, &n, err, sizeof err), BT_OK);
    cr_expect_eq(n, 24);
    /* The product overflows size_t bytes long before it overflows the ints. */
    int huge[4] = {INT32_MAX, INT32_MAX, INT32_MAX, INT32_MAX};
    cr_expect_eq(bt_shape_size(4, huge, &n, err, sizeof err), BT_ERR_SHAPE);
    cr_expect(strstr(err, "more values than memory can address") != NULL, "%s", err);
    cr_expect_eq(bt_shape_size(2, (int[]){4, -1}, &n, err, sizeof err), BT_ERR_SHAPE);
    cr_expect_str_eq(err, "dimension 1 has size -1: sizes must be positive");

    bt_tensor *t = (bt_tensor *)1;
    cr_expect_eq(bt_tensor_new(4, huge, true, &t, err, sizeof err), BT_ERR_SHAPE);
    cr_expect_null(t);
    cr_expect(strstr(err, "more values than memory can address") != NULL, "%s", err);
    cr_expect_eq(bt_tensor_new(-1, NULL, false, &t, err, sizeof err), BT_ERR_SHAPE);
    cr_expect_str_eq(err, "a tensor of -1 dimensions: 0 to 4 are supported");

    bt_graph *g = bt_graph_new();
    cr_expect_null(bt_graph_tensor(g, 4, huge));
    cr_expect_eq(bt_graph_status(g), BT_ERR_SHAPE);
    cr_expect(strstr(bt_graph_error(g), "more values than memory can address") != NULL, "%s",
              bt_graph_error(g));
    bt_graph_free(g);
}

/* Runs fn in a child whose stderr is captured; the child must die of SIGABRT
 * after printing "<file>:<line>: bptt internal error: ...". */
static void expect_internal_error(void (*fn)(void), const char *file, const char *needle)
{
    int fd[2];
    cr_assert_eq(pipe(fd), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        dup2(fd[1], 2);
        close(fd[0]);
        fn();
        _exit(0); /* only reached when the assertion did not fire */
    }
    close(fd[1]);
    char out[1024];
    size_t n = 0;
    ssize_t k;
    while (n + 1 < sizeof out && (k = read(fd[0], out + n, sizeof out - 1 - n)) > 0)
        n += (size_t)k;
    out[n] = '\0';
    close(fd[0]);
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_expect(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
              "the child did not abort (status %#x); stderr: %s", status, out);
    const char *at = strstr(out, file);
    cr_assert_not_null(at, "stderr does not name %s: %s", file, out);
    int line = 0;
    cr_expect_eq(sscanf(at + strlen(file), ":%d: bptt internal error", &line), 1,
                 "no file:line before the message: %s", out);
    cr_expect_gt(line, 0);
    cr_expect(strstr(out, needle) != NULL, "stderr lacks '%s': %s", needle, out);
}

static void reset_no_graph(void) { bt_graph_reset(NULL); }

/* A rewind releases the tape, the activations and the error as a reset
 * does (it only keeps a backend's packed weights, which no build without one
 * has to show). */
Test(tape, rewind_releases_the_window)
{
    bt_graph *g = bt_graph_new();
    bt_tensor *x = test_tensor2(4, 4, true);
    for (size_t i = 0; i < x->size; i++)
        x->data[i] = (bt_real)(0.1 * (double)i - 0.5);
    bt_tensor *y = bt_tanh(g, bt_mul(g, x, x));
    cr_assert_not_null(y);
    bt_graph_fail(g, BT_ERR_ARG, "a sticky error");
    cr_assert_gt(bt_graph_node_count(g), 0);
    cr_assert_gt(bt_arena_used(bt_graph_arena(g)), 0);
    bt_graph_rewind(g);
    cr_expect_eq(bt_graph_node_count(g), 0);
    cr_expect_eq(bt_arena_used(bt_graph_arena(g)), 0);
    cr_expect_eq(bt_graph_status(g), BT_OK, "%s", bt_graph_error(g));
    /* The graph takes a new window: its backward sees only the new nodes. */
    y = bt_mul(g, x, x);
    cr_assert_eq(bt_backward(g, bt_sum(g, y)), BT_OK, "%s", bt_graph_error(g));
    for (size_t i = 0; i < x->size; i++)
        cr_expect_float_eq(x->grad[i], 2 * x->data[i], 1e-6);
    bt_tensor_free(x);
    bt_graph_free(g);
}

Test(tape, reset_of_no_graph_is_an_internal_error)
{
    expect_internal_error(reset_no_graph, "graph.c", "bt_graph_reset: no graph");
}

/* ---- weights are marked: only params have their gradient batched ---------------- */

/* An op written with bptt_op.h alone: identity forward; its backward notes
 * W's gradient as it finds it, then passes dout through. */
static bt_real probe_seen;

static void probe_forward(bt_node *n)
{
    memcpy(n->out->data, n->in[0]->data, n->out->size * sizeof(bt_real));
}

static void probe_backward(bt_node *n)
{
    probe_seen = n->in[0]->grad[0];
    for (size_t i = 0; i < n->out->size; i++)
        n->in[0]->grad[i] += n->out->grad[i];
}

static const bt_op op_probe = {"probe", 1, probe_forward, probe_backward, NULL}; /* no jvp */

static bt_tensor *probe(bt_graph *g, bt_tensor *w)
{
    if (!bt_op_begin(g, &w, 1))
        return NULL;
    bt_tensor *out = bt_op_output(g, w->ndim, w->shape);
    bt_node *n = out ? bt_graph_record(g, &op_probe, out, &w, 1) : NULL;
    if (!n)
        return NULL;
    op_probe.forward(n);
    return out;
}

/* loss = sum(probe(W)) + sum(x W), x [2,3], W [3,2]. The probe is recorded
 * first, so its backward runs after matmul's: it sees dW[0][0] = x00 + x10 if
 * matmul added its product at once, 0 if the product waits for the end of
 * the sweep. Returns what the probe saw; W->grad holds the final gradient. */
static bt_real grad_seen_after_matmul(bt_tensor *w)
{
    bt_graph *g = bt_graph_new();
    bt_tensor *x = bt_graph_input(g, 2, (int[]){2, 3}, (bt_real[]){1, 2, 3, 4, 5, 6});
    bt_tensor *p = probe(g, w);
    bt_tensor *loss = bt_add(g, bt_sum(g, p), bt_sum(g, bt_matmul(g, x, w)));
    probe_seen = -1;
    cr_assert_eq(bt_backward(g, loss), BT_OK, "%s", bt_graph_error(g));
    bt_graph_free(g);
    return probe_seen;
}

Test(tape, only_parameters_have_their_weight_gradient_batched)
{
    /* dW[k][j] = sum_i x[i][k] from the product, + 1 from the probe. */
    const bt_real want[6] = {1 + 5, 1 + 5, 1 + 7, 1 + 7, 1 + 9, 1 + 9};
    bt_tensor *leaf = test_tensor2(3, 2, true); /* a leaf, but not a parameter */
    cr_expect_eq(leaf->param, false);
    cr_expect_eq(grad_seen_after_matmul(leaf), 5, "a plain leaf's product must run at once");

    bt_params *p = bt_params_new();
    bt_tensor *w = bt_params_add(p, "W", 2, (int[]){3, 2});
    cr_assert_eq(bt_params_finalize(p), BT_OK, "%s", bt_params_error(p));
    cr_expect_eq(w->param, true, "bt_params_add marks its tensors");
    cr_expect_eq(grad_seen_after_matmul(w), 0, "a parameter's product waits for the sweep's end");
    for (int i = 0; i < 6; i++) {
        cr_expect_eq(leaf->grad[i], want[i], "leaf dW[%d] = %g", i, (double)leaf->grad[i]);
        cr_expect_eq(w->grad[i], want[i], "param dW[%d] = %g", i, (double)w->grad[i]);
    }
    bt_tensor_free(leaf);
    bt_params_free(p);
}

/* The larger error, infinite for a NaN (fmax would drop it, and a NaN
 * gradient would pass). */
static double worst_of(double worst, double err)
{
    return err <= worst ? worst : err == err ? err : INFINITY;
}

/* dW of y = sum_s x_s W backward from dy is sum_s x_s^T dy, whatever chunks
 * the sweep's batched products (framework/wgrad.c) split it into: one GEMM
 * (small), at the cache bound (1,280 rows of 256 + 256), at the memory bound
 * before the row floor ([1536, 1024]: 832 rows, then 128). Checked against
 * double sums along two random vectors (Freivalds): dW v and u^T dW, so a
 * chunk lost, doubled or overwritten shows. With `lane`, the steps' inputs
 * are placed side by side (bt_op_output_lane), as a recurrent op's outputs
 * are, so the products read them in place; lane 2 leaves the first step's
 * input outside (a window's start state), so the group holding it copies. */
static void check_chunked_wgrad(int K, int N, int B, int S, int lane)
{
    bt_rng r;
    bt_rng_seed(&r, (uint64_t)(K + N + S));
    bt_params *p = bt_params_new();
    bt_tensor *w = bt_params_add(p, "W", 2, (int[]){K, N});
    cr_assert_eq(bt_params_finalize(p), BT_OK, "%s", bt_params_error(p));
    fill_params_normal(p, 0.1, &r);
    bt_real *x = malloc(sizeof(bt_real) * (size_t)S * B * K), *dy = malloc(sizeof(bt_real) * (size_t)B * N);
    double *u = malloc(sizeof(double) * (size_t)(K + N + 2 * B + K + N)), *v = u + K;
    double *dyv = v + N, *xu = dyv + B, *want_v = xu + B, *want_u = want_v + K;
    for (size_t i = 0; i < (size_t)S * B * K; i++)
        x[i] = (bt_real)(bt_rng_uniform(&r) - 0.5);
    for (int i = 0; i < B * N; i++)
        dy[i] = (bt_real)(bt_rng_uniform(&r) - 0.5);
    for (int i = 0; i < K + N; i++)
        u[i] = bt_rng_uniform(&r) - 0.5; /* u [K] then v [N] */
    bt_graph *g = bt_graph_new();
    bt_tensor *y = NULL, *prev = NULL;
    if (lane)
        bt_graph_plan_steps(g, S);
    for (int s = 0; s < S; s++) {
        const bt_real *xs = x + (size_t)s * B * K;
        bt_tensor *in = lane && !(lane == 2 && s == 0)
                            ? bt_op_output_lane(g, 2, (int[]){B, K}, w)
                            : bt_graph_input(g, 2, (int[]){B, K}, xs);
        cr_assert(in, "step %d's input", s);
        if (in->data != xs)
            memcpy(in->data, xs, sizeof(bt_real) * (size_t)B * K);
        if (lane && prev && (lane == 1 || s > 1))
            cr_assert_eq(in->data, prev->data + (size_t)B * K, "step %d's input is not beside step %d's",
                         s, s - 1);
        prev = in;
        bt_tensor *xw = bt_matmul(g, in, w);
        y = y ? bt_add(g, y, xw) : xw;
    }
    cr_assert_eq(bt_backward_from(g, y, dy), BT_OK, "%s", bt_graph_error(g));
    /* want dW v = sum_s x_s^T (dy v), u^T dW = sum_s (u^T x_s^T) dy */
    for (int b = 0; b < B; b++) {
        dyv[b] = 0;
        for (int j = 0; j < N; j++)
            dyv[b] += (double)dy[b * N + j] * v[j];
    }
    memset(want_v, 0, sizeof(double) * (size_t)(K + N));
    for (int s = 0; s < S; s++)
        for (int b = 0; b < B; b++) {
            const bt_real *row = x + ((size_t)s * B + b) * K;
            xu[b] = 0;
            for (int k = 0; k < K; k++) {
                want_v[k] += (double)row[k] * dyv[b];
                xu[b] += (double)row[k] * u[k];
            }
            for (int j = 0; j < N; j++)
                want_u[j] += xu[b] * (double)dy[b * N + j];
        }
    double worst = 0, scale = 0;
    for (int k = 0; k < K; k++) {
        double got = 0;
        for (int j = 0; j < N; j++)
            got += (double)w->grad[(size_t)k * N + j] * v[j];
        worst = worst_of(worst, fabs(got - want_v[k]));
        scale = fmax(scale, fabs(want_v[k]));
    }
    for (int j = 0; j < N; j++) {
        double got = 0;
        for (int k = 0; k < K; k++)
            got += u[k] * (double)w->grad[(size_t)k * N + j];
        worst = worst_of(worst, fabs(got - want_u[j]));
        scale = fmax(scale, fabs(want_u[j]));
    }
    double tol = BT_REAL_DOUBLE ? 1e-12 : 1e-5;
    cr_expect_leq(worst / scale, tol, "W [%d,%d], %d steps of %d rows (lane %d): dW off by %.3g of %.3g",
                  K, N, S, B, lane, worst, scale);
    bt_graph_free(g);
    bt_params_free(p);
    free(x);
    free(dy);
    free(u);
}

Test(tape, weight_gradients_of_long_sweeps_sum_every_chunk)
{
    for (int lane = 0; lane <= 2; lane++) {
        check_chunked_wgrad(64, 48, 32, 10, lane);     /* 320 rows: one GEMM */
        check_chunked_wgrad(256, 256, 32, 40, lane);   /* 1,280 rows: 1,024 at the cache bound, then 256 */
        check_chunked_wgrad(1536, 1024, 32, 30, lane); /* 960 rows: 832 at the memory bound, then 128 */
    }
}

/* Windows that grow (a policy's first windows, capped by the steps seen so
 * far) each plan a longer lane, a block of its own past the arena's chunk
 * size. The arena frees the dead smaller blocks instead of keeping one per
 * length: its reserved memory stays within twice its high-water mark (it was
 * 12x here before the fix). */
Test(tape, growing_windows_keep_no_dead_lane_blocks)
{
    bt_params *p = bt_params_new();
    bt_tensor *w = bt_params_add(p, "W", 2, (int[]){128, 128});
    cr_assert_eq(bt_params_finalize(p), BT_OK, "%s", bt_params_error(p));
    bt_graph *g = bt_graph_new();
    for (int steps = 64; steps <= 200; steps += 8) {
        bt_graph_reset(g);
        bt_graph_plan_steps(g, steps);
        bt_tensor *prev = NULL;
        for (int s = 0; s < steps; s++) {
            bt_tensor *h = bt_op_output_lane(g, 2, (int[]){32, 128}, w);
            cr_assert(h && bt_op_scratch(g, 256), "window of %d steps, step %d", steps, s);
            cr_assert(!prev || h->data == prev->data + 32 * 128, "step %d not beside step %d", s, s - 1);
            prev = h;
        }
    }
    bt_arena *a = bt_graph_arena(g);
    cr_expect_leq(bt_arena_reserved(a), 2 * bt_arena_high_water(a),
                  "arena holds %zu bytes for a high-water mark of %zu", bt_arena_reserved(a),
                  bt_arena_high_water(a));
    bt_graph_free(g);
    bt_params_free(p);
}

/* A second sweep over the same tape (no rewind between) starts from fresh
 * intermediate gradients: the leaf's gradient doubles, exactly, and the
 * first sweep's gradient of h (kept: retain_grad) is not added into the
 * second's. The sweep after a reset skips the forgetting walk (graph.c): the
 * second window's sweeps must give the first window's figures. */
Test(tape, a_second_sweep_forgets_the_first_ones_intermediate_gradients)
{
    bt_tensor *x = test_tensor2(2, 3, true);
    for (int i = 0; i < 6; i++)
        x->data[i] = (bt_real)(0.1 * i - 0.2);
    bt_graph *g = bt_graph_new();
    bt_real once[6], dh_once[6]; /* window 0's first sweep */
    for (int window = 0; window < 2; window++) {
        bt_graph_reset(g);
        bt_tensor_zero_grad(x);
        bt_tensor *h = bt_tanh(g, x), *y = bt_sum(g, bt_mul(g, h, h));
        h->retain_grad = true; /* read after backward, as the unroller reads dh */
        for (int sweep = 0; sweep < 3; sweep++) {
            cr_assert_eq(bt_backward(g, y), BT_OK, "%s", bt_graph_error(g));
            for (int i = 0; i < 6; i++) {
                if (window == 0 && sweep == 0) {
                    once[i] = x->grad[i];
                    dh_once[i] = h->grad[i];
                }
                cr_expect_eq(h->grad[i], dh_once[i], "window %d, sweep %d: dh[%d] = %g, want %g",
                             window, sweep, i, (double)h->grad[i], (double)dh_once[i]);
                cr_expect_eq(x->grad[i], (bt_real)(sweep + 1) * once[i],
                             "window %d, sweep %d: dx[%d] = %g, want %d x %g", window, sweep, i,
                             (double)x->grad[i], sweep + 1, (double)once[i]);
            }
        }
    }
    bt_graph_free(g);
    bt_tensor_free(x);
}

/* ---- weight products (framework/packed.c) ------------------------------------ */

/* Largest |got - want| relative to the largest |want|; infinite when any
 * value is NaN. */
static double rel_err(const bt_real *got, const double *want, int n)
{
    double worst = 0, scale = 0;
    for (int i = 0; i < n; i++) {
        worst = worst_of(worst, fabs((double)got[i] - want[i]));
        scale = fmax(scale, fabs(want[i]));
    }
    return scale > 0 ? worst / scale : worst;
}

/* A backend may pack a weight on its first product after a reset and read
 * the packed copy for the rest of the window (-Dblas=dnnl; every build runs
 * this). The weights change between windows, as an optimizer changes them:
 * each window's products (x W, x U^T) and input gradient (dy W^T + dy U)
 * must follow, against a triple loop in double. Big enough to be packed:
 * [32,96] x [96,80]. */
Test(tape, weight_products_follow_the_weight_between_windows)
{
    enum { B = 32, K = 96, N = 80 };
    bt_params *p = bt_params_new();
    bt_tensor *w = bt_params_add(p, "W", 2, (int[]){K, N}), *u = bt_params_add(p, "U", 2, (int[]){N, K});
    cr_assert_eq(bt_params_finalize(p), BT_OK, "%s", bt_params_error(p));
    bt_tensor *x = test_tensor2(B, K, true);
    static bt_real dy[B * N];
    static double y_ref[B * N], dx_ref[B * K];
    for (int i = 0; i < B * K; i++)
        x->data[i] = (bt_real)sin(0.1 * i);
    for (int i = 0; i < B * N; i++)
        dy[i] = (bt_real)cos(0.07 * i);
    bt_graph *g = bt_graph_new();
    for (int win = 0; win < 3; win++) {
        for (int i = 0; i < K * N; i++) { /* new weights, as after an optimizer step */
            w->data[i] = (bt_real)sin(0.37 * i + win);
            u->data[i] = (bt_real)cos(0.23 * i - 2 * win);
        }
        bt_graph_reset(g);
        bt_tensor_zero_grad(x);
        /* y = x W + x U^T, with x W twice: the second reads the packed copy */
        bt_tensor *xw = bt_matmul(g, x, w);
        bt_tensor *y = bt_add(g, bt_add(g, xw, bt_matmul_t(g, x, false, u, true)), bt_matmul(g, x, w));
        cr_assert_eq(bt_backward_from(g, y, dy), BT_OK, "%s", bt_graph_error(g));
        for (int r = 0; r < B; r++)
            for (int c = 0; c < N; c++) {
                double s = 0;
                for (int k = 0; k < K; k++)
                    s += (double)x->data[r * K + k] * (2 * (double)w->data[k * N + c] + (double)u->data[c * K + k]);
                y_ref[r * N + c] = s;
            }
        for (int r = 0; r < B; r++)
            for (int k = 0; k < K; k++) {
                double s = 0;
                for (int c = 0; c < N; c++)
                    s += (double)dy[r * N + c] * (2 * (double)w->data[k * N + c] + (double)u->data[c * K + k]);
                dx_ref[r * K + k] = s;
            }
        double tol = BT_REAL_DOUBLE ? 1e-12 : 1e-5;
        cr_expect_leq(rel_err(y->data, y_ref, B * N), tol, "window %d: y = x W + x U^T + x W off by %.3g", win,
                      rel_err(y->data, y_ref, B * N));
        cr_expect_leq(rel_err(x->grad, dx_ref, B * K), tol, "window %d: dx off by %.3g", win,
                      rel_err(x->grad, dx_ref, B * K));
    }
    bt_tensor_free(x);
    bt_params_free(p);
    bt_graph_free(g);
}

/* ---- dA slots (bt_wgrad_slot) ------------------------------------------------ */

/* One chain of fused tanh steps from token ids, as the unroller records it,
 * and its textbook BPTT in double: h_t = tanh(W_x[ids_t] + h_{t-1} W_hh + b),
 * loss = sum_t <h_t, c_t>. The reference sums its gradients into ref_*. */
typedef struct {
    int rows, steps;
    int32_t *ids;    /* [steps, rows] */
    bt_real *h0, *c; /* [rows, H], [steps, rows, H] */
    bt_tensor *h;    /* the graph's running state */
} slot_chain;

static void slot_chain_init(slot_chain *ch, int rows, int steps, int V, int H, bt_rng *r)
{
    ch->rows = rows;
    ch->steps = steps;
    ch->ids = malloc(sizeof(int32_t) * (size_t)steps * rows);
    ch->h0 = malloc(sizeof(bt_real) * (size_t)rows * H * (1 + (size_t)steps));
    ch->c = ch->h0 + (size_t)rows * H;
    for (int i = 0; i < steps * rows; i++)
        ch->ids[i] = (int32_t)(bt_rng_uniform(r) * V);
    for (size_t i = 0; i < (size_t)rows * H * (1 + (size_t)steps); i++)
        ch->h0[i] = (bt_real)(bt_rng_uniform(r) - 0.5);
}

static void slot_chain_reference(const slot_chain *ch, const bt_params *p, int H, double *ref)
{
    const bt_real *wx = bt_params_find((bt_params *)p, "W_x")->data;
    const bt_real *whh = bt_params_find((bt_params *)p, "W_hh")->data;
    const bt_real *b = bt_params_find((bt_params *)p, "b")->data;
    int R = ch->rows, S = ch->steps, V = bt_params_find((bt_params *)p, "W_x")->shape[0];
    double *hs = calloc((size_t)(S + 1) * R * H, sizeof(double));
    double *dh = calloc((size_t)2 * R * H, sizeof(double)), *da = dh + (size_t)R * H;
    double *d_wx = ref, *d_whh = ref + (size_t)V * H, *d_b = d_whh + (size_t)H * H;
    for (int i = 0; i < R * H; i++)
        hs[i] = ch->h0[i];
    for (int t = 0; t < S; t++)
        for (int r = 0; r < R; r++) {
            const double *hp = hs + ((size_t)t * R + r) * H;
            double *a = hs + ((size_t)(t + 1) * R + r) * H;
            for (int j = 0; j < H; j++)
                a[j] = (double)wx[(size_t)ch->ids[t * R + r] * H + j] + (double)b[j];
            for (int k = 0; k < H; k++)
                for (int j = 0; j < H; j++)
                    a[j] += hp[k] * (double)whh[(size_t)k * H + j];
            for (int j = 0; j < H; j++)
                a[j] = tanh(a[j]);
        }
    for (int t = S - 1; t >= 0; t--) {
        const double *h = hs + (size_t)(t + 1) * R * H, *hp = hs + (size_t)t * R * H;
        for (int i = 0; i < R * H; i++)
            da[i] = (dh[i] + (double)ch->c[(size_t)t * R * H + i]) * (1 - h[i] * h[i]);
        for (int r = 0; r < R; r++) {
            for (int j = 0; j < H; j++) {
                d_wx[(size_t)ch->ids[t * R + r] * H + j] += da[r * H + j];
                d_b[j] += da[r * H + j];
            }
            for (int k = 0; k < H; k++)
                for (int j = 0; j < H; j++)
                    d_whh[(size_t)k * H + j] += hp[r * H + k] * da[r * H + j];
        }
        for (int r = 0; r < R; r++)
            for (int k = 0; k < H; k++) {
                double s = 0;
                for (int j = 0; j < H; j++)
                    s += da[r * H + j] * (double)whh[(size_t)k * H + j];
                dh[r * H + k] = s;
            }
    }
    free(hs);
    free(dh);
}

/* The fused step's backward writes dA into W_hh's slot, where the batched
 * product reads it in place. Long sweeps fill several groups (the cache
 * bound); two chains of different row counts share the weights, stepping in
 * turn, so a slot sized for one count meets the other (the op then uses a
 * buffer of its own); with `plan` the states lie in lanes. dW_x, dW_hh and
 * db against the double reference: a slot one row off, or a group that reads
 * a slot after it was reused, shows here. */
static void check_slots(int H, int rows_a, int steps_a, int rows_b, int steps_b, bool plan)
{
    enum { V = 11 };
    bt_rng r;
    bt_rng_seed(&r, (uint64_t)(H + rows_a + steps_a + rows_b + steps_b + plan));
    bt_params *p = bt_params_new();
    bt_tensor *wx = bt_params_add(p, "W_x", 2, (int[]){V, H});
    bt_tensor *whh = bt_params_add(p, "W_hh", 2, (int[]){H, H});
    bt_tensor *b = bt_params_add(p, "b", 1, (int[]){H});
    cr_assert_eq(bt_params_finalize(p), BT_OK, "%s", bt_params_error(p));
    fill_params_normal(p, 1.0 / sqrt(H), &r);
    slot_chain ch[2];
    slot_chain_init(&ch[0], rows_a, steps_a, V, H, &r);
    slot_chain_init(&ch[1], rows_b, steps_b, V, H, &r);
    bt_graph *g = bt_graph_new();
    if (plan)
        bt_graph_plan_steps(g, steps_a);
    bt_tensor *loss = NULL;
    for (int c = 0; c < 2; c++)
        ch[c].h = ch[c].steps ? bt_graph_input(g, 2, (int[]){ch[c].rows, H}, ch[c].h0) : NULL;
    for (int t = 0; t < steps_a || t < steps_b; t++)
        for (int c = 0; c < 2; c++) {
            slot_chain *k = &ch[c];
            if (t >= k->steps)
                continue;
            k->h = bt_rnn_tanh_step(g, wx, k->ids + (size_t)t * k->rows, NULL, k->h, whh, b);
            bt_tensor *ct = bt_graph_input(g, 2, (int[]){k->rows, H}, k->c + (size_t)t * k->rows * H);
            bt_tensor *l = bt_sum(g, bt_mul(g, k->h, ct));
            loss = loss ? bt_add(g, loss, l) : l;
        }
    cr_assert(loss, "%s", bt_graph_error(g));
    cr_assert_eq(bt_backward_from(g, loss, (bt_real[]){1}), BT_OK, "%s", bt_graph_error(g));
    size_t n = bt_params_total(p);
    double *ref = calloc(n, sizeof(double));
    for (int c = 0; c < 2; c++)
        slot_chain_reference(&ch[c], p, H, ref);
    double tol = BT_REAL_DOUBLE ? 1e-12 : 2e-5;
    const char *names[] = {"dW_x", "dW_hh", "db"};
    bt_tensor *ts[] = {wx, whh, b};
    for (int i = 0, off = 0; i < 3; off += (int)ts[i]->size, i++)
        cr_expect_leq(rel_err(ts[i]->grad, ref + off, (int)ts[i]->size), tol,
                      "H %d, chains %dx%d and %dx%d%s: %s off by %.3g", H, rows_a, steps_a, rows_b,
                      steps_b, plan ? ", planned" : "", names[i],
                      rel_err(ts[i]->grad, ref + off, (int)ts[i]->size));
    free(ref);
    for (int c = 0; c < 2; c++) {
        free(ch[c].ids);
        free(ch[c].h0);
    }
    bt_graph_free(g);
    bt_params_free(p);
}

Test(tape, weight_gradient_slots_hold_every_step_of_a_tanh_sweep)
{
    for (int plan = 0; plan <= 1; plan++) {
        check_slots(64, 32, 10, 0, 0, plan);   /* one group */
        check_slots(256, 32, 40, 0, 0, plan);  /* 1,280 rows: 1,024, then 256 */
        check_slots(256, 32, 40, 7, 25, plan); /* 7-row steps between the 32-row ones */
        check_slots(96, 5, 30, 32, 12, plan);  /* the short chain has the larger rows */
    }
}
