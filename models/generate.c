/* generate.c: greedy or temperature sampling from a token model, one step
 * per graph window. The state lives in plain buffers between steps, so the
 * graph is reset each step and memory stays flat however long the text.
 *
 * Dimension letters: V vocabulary, W state width. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "generate.h"
#include "registry.h"

/* The id to emit from logits o[V]: argmax, or a draw at this temperature. */
static int32_t choose(const bt_real *o, int V, double temperature, bt_rng *rng)
{
    int best = 0;
    for (int i = 1; i < V; i++)
        if (o[i] > o[best])
            best = i;
    if (temperature <= 0)
        return best;
    double z = 0;
    for (int i = 0; i < V; i++)
        z += exp(((double)o[i] - (double)o[best]) / temperature);
    double u = bt_rng_uniform(rng) * z, acc = 0;
    for (int i = 0; i < V; i++) {
        acc += exp(((double)o[i] - (double)o[best]) / temperature);
        if (u < acc)
            return i;
    }
    return best; /* rounding left u at the very top */
}

bt_status bt_generate(const bt_model *m, const int32_t *prefix, long n_prefix, int length,
                      double temperature, bt_rng *rng, int32_t *out, char *err, size_t errlen)
{
    if (m->cell->input != BT_INPUT_TOKENS || m->cell->loss != BT_LOSS_XENT) {
        snprintf(err, errlen, "cell %s does not read and predict tokens: nothing to generate",
                 m->cell->name);
        return BT_ERR_ARG;
    }
    if (n_prefix < 1 || length < 0 || !(temperature >= 0) || !isfinite(temperature) ||
        (temperature > 0 && !rng)) {
        snprintf(err, errlen, "generate: need a prefix of at least one token, a length >= 0 and "
                 "a finite temperature >= 0");
        return BT_ERR_ARG;
    }
    int V = m->dims.output;
    for (long i = 0; i < n_prefix; i++)
        if (prefix[i] < 0 || prefix[i] >= m->dims.input) {
            snprintf(err, errlen, "generate: prefix token %ld has id %d, outside the vocabulary",
                     i, (int)prefix[i]);
            return BT_ERR_ARG;
        }
    size_t len = 0;
    for (int k = 0; k < m->n_states; k++)
        len += (size_t)m->state_width[k];
    bt_real *h = bt_calloc(len ? len : 1, sizeof(bt_real));
    bt_graph *g = bt_graph_new();
    if (!h || !g) {
        bt_free(h);
        bt_graph_free(g);
        snprintf(err, errlen, "generate: out of memory");
        return BT_ERR_NOMEM;
    }
    bt_graph_set_grad(g, false);
    bt_status st = BT_OK;
    /* Step s reads token s of prefix + output; the steps from the last prefix
     * token on each choose the next output, length in all. */
    long steps = length > 0 ? n_prefix + length - 1 : 0;
    int32_t tok = prefix[0];
    for (long s = 0; s < steps && st == BT_OK; s++) {
        bt_graph_reset(g);
        bt_tensor *state[BT_MAX_STATES], *next[BT_MAX_STATES];
        bt_real *src = h;
        for (int k = 0; k < m->n_states; k++) {
            state[k] = bt_graph_input(g, 2, (int[]){1, m->state_width[k]}, src);
            src += m->state_width[k];
        }
        bt_step_input in = {.batch = 1, .ids = &tok};
        bt_tensor *o = bt_model_step(g, m, &in, state, next);
        if (!o || bt_graph_status(g) != BT_OK) {
            snprintf(err, errlen, "cell %s: %s", m->cell->name, bt_graph_error(g));
            st = bt_graph_status(g) != BT_OK ? bt_graph_status(g) : BT_ERR_PLUGIN;
            break;
        }
        bt_real *dst = h;
        for (int k = 0; k < m->n_states; k++) {
            memcpy(dst, next[k]->data, sizeof(bt_real) * next[k]->size);
            dst += next[k]->size;
        }
        if (s + 1 < n_prefix) {
            tok = prefix[s + 1]; /* still reading the prefix */
            continue;
        }
        tok = choose(o->data, V, temperature, rng);
        out[s + 1 - n_prefix] = tok;
    }
    bt_graph_free(g);
    bt_free(h);
    return st;
}

char *bt_decode_ids(const bt_vocab *v, const int32_t *ids, long n)
{
    size_t len = 1;
    for (long i = 0; i < n; i++) {
        const char *t = bt_vocab_token(v, ids[i]);
        len += t ? strlen(t) : 3;
    }
    char *s = bt_malloc(len), *p = s;
    if (!s)
        return NULL;
    for (long i = 0; i < n; i++) {
        const char *t = bt_vocab_token(v, ids[i]);
        size_t k = t ? strlen(t) : 3;
        memcpy(p, t ? t : "\xEF\xBF\xBD", k); /* U+FFFD for an id outside the vocabulary */
        p += k;
    }
    *p = '\0';
    return s;
}

bt_status bt_generate_text(const bt_model *m, const bt_vocab *v, const char *prefix, int length,
                           double temperature, uint64_t seed, char **out, char *err,
                           size_t errlen)
{
    *out = NULL;
    int32_t *ids = NULL;
    long n = 0;
    bt_status st = bt_vocab_encode(v, bt_vocab_kind(v), prefix, &ids, &n, err, errlen);
    if (st != BT_OK)
        return st;
    if (n < 1) {
        bt_free(ids);
        snprintf(err, errlen, "the prefix is empty: give at least one character");
        return BT_ERR_ARG;
    }
    if (bt_vocab_size(v) != m->dims.input) {
        bt_free(ids);
        snprintf(err, errlen, "the vocabulary has %d tokens, the model takes %d",
                 bt_vocab_size(v), m->dims.input);
        return BT_ERR_SHAPE;
    }
    int32_t *all = bt_malloc(sizeof(int32_t) * (size_t)(n + length));
    if (!all) {
        bt_free(ids);
        snprintf(err, errlen, "generate: out of memory");
        return BT_ERR_NOMEM;
    }
    memcpy(all, ids, sizeof(int32_t) * (size_t)n);
    bt_free(ids);
    bt_rng rng;
    bt_rng_seed(&rng, seed);
    st = bt_generate(m, all, n, length, temperature, &rng, all + n, err, errlen);
    if (st == BT_OK) {
        *out = bt_decode_ids(v, all, n + length);
        if (!*out) {
            snprintf(err, errlen, "generate: out of memory");
            st = BT_ERR_NOMEM;
        }
    }
    bt_free(all);
    return st;
}
