/* gradcheck_example.c: the examples of docs/gradcheck.md, built and run by
 * `meson test` so they stay true. bt_gradcheck on models built by hand:
 *   1. the README's RNN, which detaches its state before step 2: checked as
 *      written (central differences see through the detach: FAIL), then with
 *      the detached value frozen as a constant (PASS);
 *   2. a ReLU layer near its kink: a step that crosses the kink fails, a step
 *      that stays on one side passes; at the kink itself no step helps.
 * Exit status 0 when each check comes out as the page says.
 * Dimension letters: H hidden (3), D input (2), N units (2). */
#include <stdio.h>
#include <string.h>

#include <bptt.h>

#if BT_REAL_DOUBLE
#define EPS 1e-5       /* the step: about the cube root of double's rounding unit */
#define TOL 1e-6       /* largest relative error that passes */
#define REL_FLOOR 1e-3 /* gradients smaller than this are compared absolutely */
#else
#define EPS 3e-3
#define TOL 3e-2
#define REL_FLOOR 1e-1
#endif

/* ---- 1. a graph with detach ------------------------------------------------------- */

/* The value a detach passes on, recorded once at the point being checked. */
typedef struct freeze {
    bool ready;    /* false: detach as usual (and record); true: use the recorded value */
    bt_real h[3];  /* [1,H] */
} freeze;

/* detach(x), or, once the freeze is ready, the constant x had when it was recorded. */
static bt_tensor *detach_or_frozen(bt_graph *g, bt_tensor *x, freeze *f)
{
    if (f && f->ready)
        return bt_graph_input(g, x->ndim, x->shape, f->h);
    if (f)
        memcpy(f->h, x->data, sizeof f->h);
    return bt_detach(g, x);
}

/* The README's RNN: h = tanh(h W) four times, the state detached before step 2;
 * loss = mean(h * h). inputs[0] is W [H,H]; ctx is a freeze or NULL. */
static bt_tensor *rnn_loss(bt_graph *g, bt_tensor *const *inputs, int n, void *ctx)
{
    (void)n;
    bt_tensor *W = inputs[0];
    bt_tensor *h = bt_graph_input(g, 2, (int[]){1, 3}, (bt_real[]){1, -1, 0.5f});
    for (int t = 0; t < 4; t++)
        h = bt_tanh(g, bt_matmul(g, t == 2 ? detach_or_frozen(g, h, ctx) : h, W));
    return bt_mean(g, bt_mul(g, h, h));
}

/* ---- 2. a ReLU near its kink --------------------------------------------------------- */

/* loss = sum(relu(x W)), x = [1, 2] a constant row, inputs[0] is W [D,N]. */
static bt_tensor *relu_loss(bt_graph *g, bt_tensor *const *inputs, int n, void *ctx)
{
    (void)n;
    (void)ctx;
    bt_tensor *x = bt_graph_input(g, 2, (int[]){1, 2}, (bt_real[]){1, 2});
    return bt_sum(g, bt_relu(g, bt_matmul(g, x, inputs[0])));
}

/* ---- running a check --------------------------------------------------------------- */

/* Checks fn at W with step eps; prints the outcome; returns whether it passed,
 * or -1 when the check could not run. */
static int check(const char *what, bt_loss_fn fn, void *ctx, bt_tensor *W, double eps)
{
    bt_gradcheck_result res[1];
    char err[BT_ERRMSG_LEN];
    if (bt_gradcheck(fn, ctx, &W, 1, eps, REL_FLOOR, res, err, sizeof err) != BT_OK) {
        fprintf(stderr, "%s: %s\n", what, err);
        return -1;
    }
    bool pass = res[0].max_rel <= TOL; /* "within", so that a NaN fails */
    printf("%-44s eps %-6g max rel err %-9.3g (W[%zu]: analytic %.6g, numeric %.6g)  %s\n",
           what, eps, res[0].max_rel, res[0].worst, res[0].analytic, res[0].numeric,
           pass ? "PASS" : "FAIL");
    return pass;
}

int main(void)
{
    char err[BT_ERRMSG_LEN];
    bt_tensor *W = NULL, *V = NULL;
    if (bt_tensor_new(2, (int[]){3, 3}, true, &W, err, sizeof err) != BT_OK ||
        bt_tensor_new(2, (int[]){2, 2}, true, &V, err, sizeof err) != BT_OK) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    for (int i = 0; i < 9; i++)
        W->data[i] = 0.4f * (i % 4) - 0.5f; /* the README's W */
    int wrong = 0;

    /* 1a. As written: every perturbed W also changes the value the detach
     * passes on, which the tape's gradient (rightly) ignores. */
    wrong += check("detach, checked as written", rnn_loss, NULL, W, EPS) != 0;
    /* 1b. Record the detached value at this W, then check with it frozen. */
    freeze fz = {.ready = false};
    bt_graph *g = bt_graph_new();
    if (!g || !rnn_loss(g, &W, 1, &fz)) {
        fprintf(stderr, "cannot evaluate the loss: %s\n", g ? bt_graph_error(g) : "out of memory");
        return 1;
    }
    bt_graph_free(g);
    fz.ready = true;
    wrong += check("detach, the detached value frozen", rnn_loss, &fz, W, EPS) != 1;

    /* 2. x W's first column is 1 * 0.501 + 2 * (-0.25) = 0.001: just right of the kink. */
    const bt_real near[4] = {0.501f, 0.3f, -0.25f, 0.2f}, at[4] = {0.5f, 0.3f, -0.25f, 0.2f};
    memcpy(V->data, near, sizeof near);
    wrong += check("relu 0.001 from its kink, a step across it", relu_loss, NULL, V, 1e-2) != 0;
    wrong += check("relu 0.001 from its kink, a step short of it", relu_loss, NULL, V, 1e-4) != 1;
    /* At the kink (0.5 - 2 * 0.25 = 0 exactly) relu' is taken as 0 and every
     * central difference gives 1/2: move the point, not the step. */
    memcpy(V->data, at, sizeof at);
    wrong += check("relu exactly at its kink", relu_loss, NULL, V, 1e-4) != 0;

    bt_tensor_free(W);
    bt_tensor_free(V);
    if (wrong) {
        printf("%d check(s) did not come out as docs/gradcheck.md says\n", wrong);
        return 1;
    }
    printf("every check came out as docs/gradcheck.md says\n");
    return 0;
}
