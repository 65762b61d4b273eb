/* example.c: the README's example, built and run by `meson test` so it stays true.
 * One tanh RNN step, a loss, backward, and a gradient read back. */
#include <stdio.h>
#include <bptt.h>

int main(void)
{
    bt_params *p = bt_params_new();
    bt_tensor *W = bt_params_add(p, "W", 2, (int[]){3, 3});      /* [H,H] */
    if (bt_params_finalize(p) != BT_OK) {                         /* one block for all */
        fprintf(stderr, "%s\n", bt_params_error(p));               /* errors carry a message */
        return 1;
    }
    for (int i = 0; i < 9; i++) W->data[i] = 0.4f * (i % 4) - 0.5f;

    bt_graph *g = bt_graph_new();
    bt_tensor *h = bt_graph_input(g, 2, (int[]){1, 3}, (bt_real[]){1, -1, 0.5f});
    for (int t = 0; t < 4; t++)                                   /* W is used at every step */
        h = bt_tanh(g, bt_matmul(g, t == 2 ? bt_detach(g, h) : h, W));
    bt_tensor *loss = bt_mean(g, bt_mul(g, h, h));
    if (bt_backward(g, loss) != BT_OK) {
        fprintf(stderr, "%s\n", bt_graph_error(g));
        return 1;
    }
    printf("loss %.6f  dL/dW[0][1] %.6f\n", loss->data[0], W->grad[1]);
    bt_graph_free(g);
    bt_params_free(p);
    return 0;
}
