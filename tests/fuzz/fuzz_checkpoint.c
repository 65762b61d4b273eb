/* fuzz_checkpoint.c: the checkpoint loader on arbitrary bytes, through
 * building the model and generating from it, with the shipped plugins.
 *
 * Invariants beyond "no crash": a refusal at any stage carries a message; a
 * checkpoint that reads has consistent sizes (its vocabulary, if any, as
 * large as the model's input and output); a model that loads has the sizes
 * the checkpoint states and only finite parameters; a token model then
 * generates a few tokens (greedy, and sampled) whose ids are in its
 * vocabulary, or refuses with a message. */
#include <math.h>

#include "checkpoint.h"
#include "fuzz.h"
#include "generate.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_registry();
    return 0;
}

static void check_model(const bt_checkpoint *c, const bt_model *m)
{
    FUZZ_CHECK(m->dims.input == c->input_size && m->dims.hidden == c->cfg.hidden &&
               m->dims.output == c->output_size, "model sizes differ from the checkpoint's");
    FUZZ_CHECK(strcmp(m->cell->name, c->cfg.cell) == 0, "cell %s loaded for %s", m->cell->name,
               c->cfg.cell);
    const bt_real *p = bt_params_data(m->params);
    for (size_t i = 0; i < bt_params_total(m->params); i++)
        FUZZ_CHECK(isfinite((double)p[i]), "parameter %zu is not finite after loading", i);
}

/* A few tokens from the model: ids within the vocabulary, or a message. */
static void generate_from(const bt_checkpoint *c, const bt_model *m, double temperature)
{
    enum { LEN = 4 };
    char err[512] = "";
    if (c->vocab) {
        /* The prefix is a token of the vocabulary, so encoding cannot fail. */
        int V = bt_vocab_size(c->vocab);
        const char *tok = bt_vocab_token(c->vocab, V - 1);
        FUZZ_CHECK(tok, "vocabulary of %d tokens has no token %d", V, V - 1);
        char *text = NULL;
        bt_status st = bt_generate_text(m, c->vocab, tok, LEN, temperature, 7, &text, err,
                                        sizeof err);
        FUZZ_CHECK(st == BT_OK ? text != NULL : err[0] != '\0', "generate_text: status %s, no %s",
                   bt_status_name(st), st == BT_OK ? "text" : "message");
        bt_free(text);
    }
    int32_t prefix[2] = {0, m->dims.input - 1}, out[LEN];
    bt_rng rng;
    bt_rng_seed(&rng, 3);
    for (int i = 0; i < LEN; i++)
        out[i] = -1;
    bt_status st = bt_generate(m, prefix, 2, LEN, temperature, &rng, out, err, sizeof err);
    if (st != BT_OK) {
        FUZZ_CHECK(err[0], "generate failed (%s) without a message", bt_status_name(st));
        return;
    }
    FUZZ_CHECK(m->cell->input == BT_INPUT_TOKENS && m->cell->loss == BT_LOSS_XENT,
               "generated from cell %s, which does not read and predict tokens", m->cell->name);
    for (int i = 0; i < LEN; i++)
        FUZZ_CHECK(out[i] >= 0 && out[i] < m->dims.output, "generated id %d of %d outputs",
                   (int)out[i], m->dims.output);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[2048] = "";
    bt_checkpoint *c = NULL;
    if (bt_checkpoint_read_buffer(data, size, "fuzz.safetensors", &c, err, sizeof err) != BT_OK) {
        FUZZ_CHECK(!c && err[0], "a refused checkpoint gets no message");
        return 0;
    }
    FUZZ_CHECK(c->input_size >= 1 && c->output_size >= 1 && c->cfg.hidden >= 1,
               "read sizes %d/%d/%d", c->input_size, c->cfg.hidden, c->output_size);
    if (c->vocab)
        FUZZ_CHECK(bt_vocab_size(c->vocab) == c->input_size &&
                   bt_vocab_size(c->vocab) == c->output_size, "vocabulary size %d, model %d/%d",
                   bt_vocab_size(c->vocab), c->input_size, c->output_size);
    bt_model *m = NULL;
    err[0] = '\0';
    bt_status st = bt_checkpoint_model(c, fuzz_registry(), &m, err, sizeof err);
    if (st != BT_OK) {
        FUZZ_CHECK(!m && err[0], "refused model (%s) without a message", bt_status_name(st));
        bt_checkpoint_free(c);
        return 0;
    }
    check_model(c, m);
    generate_from(c, m, 0);
    generate_from(c, m, 1);
    bt_model_free(m);
    bt_checkpoint_free(c);
    return 0;
}
