/* cmd_generate.c: `bptt generate`, text from a checkpoint written by `bptt
 * train`: the prefix warms the state up, then greedy (temperature 0) or
 * sampled tokens follow. */
#include <string.h>

#include "checkpoint.h"
#include "cli.h"
#include "generate.h"

#define CMD "generate"

static const cli_option options[] = {
    {"model", "FILE", "a checkpoint written by bptt train --save"},
    {"prefix", "TEXT", "what the text starts with (default \"time traveller\")"},
    {"length", "N", "tokens to generate (default 100)"},
    {"temperature", "T", "0 picks the most likely token (default); > 0 samples from "
                         "softmax(logits / T): below 1 safer, above 1 wilder"},
    {"seed", "S", "for sampling (default 0)"},
    {"plugin", "PATH", "load the plugin that provides the model's cell (repeatable)"},
    {NULL, NULL, NULL},
};

const cli_command cmd_generate_spec = {
    .name = "generate",
    .summary = "sample text from a trained model",
    .usage = "--model FILE [options]",
    .options = {options},
};

int cmd_generate(int argc, char **argv)
{
    cli_args a;
    int rc;
    if (!cli_args_begin(&a, &cmd_generate_spec, argc, argv, &rc))
        return rc;
    rc = 2;
    bt_registry *reg = NULL;
    bt_checkpoint *ck = NULL;
    bt_model *m = NULL;
    char err[2048] = "";
    long length, seed;
    double temperature;
    const char *model = cli_get(&a, "model");
    const char *prefix = cli_get(&a, "prefix");
    if (!prefix)
        prefix = "time traveller";
    if (!cli_int(&a, "length", 100, 0, 100000000, &length) ||
        !cli_double(&a, "temperature", 0, 0, 1e6, &temperature) ||
        !cli_int(&a, "seed", 0, 0, 0x7fffffffffffffffL, &seed))
        goto out;
    if (!(reg = cli_load_plugins(&a))) {
        rc = 1;
        goto out;
    }
    cli_args_check_read(&a);
    if (!model) {
        cli_fail(CMD, "--model FILE is required (a checkpoint from bptt train --save)");
        goto out;
    }
    rc = 1;
    if (bt_checkpoint_read(model, &ck, err, sizeof err) != BT_OK) {
        cli_fail(CMD, "%s", err);
        goto out;
    }
    if (ck->task[0]) {
        cli_fail(CMD, "%s: this model was trained on task %s, not a text: generate needs a text "
                 "model (bptt analyze --model takes task models)", model, ck->task);
        goto out;
    }
    if (!ck->vocab) {
        cli_fail(CMD, "%s has no vocabulary: it was not trained on text", model);
        goto out;
    }
    if (bt_checkpoint_model(ck, reg, &m, err, sizeof err) != BT_OK) {
        cli_fail(CMD, "%s", err);
        goto out;
    }
    char *text = NULL;
    if (bt_generate_text(m, ck->vocab, prefix, (int)length, temperature, (uint64_t)seed, &text,
                         err, sizeof err) != BT_OK) {
        cli_fail(CMD, "--prefix: %s", err);
        goto out;
    }
    printf("%s\n", text);
    bt_free(text);
    rc = 0;
out:
    bt_model_free(m);
    bt_checkpoint_free(ck);
    bt_registry_free(reg);
    cli_args_free(&a);
    return rc;
}
