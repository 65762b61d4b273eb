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

typedef struct gen_opts {
    const char *model, *prefix;
    long length, seed;
    double temperature;
} gen_opts;

static bool read_options(cli_args *a, void *vo)
{
    gen_opts *o = vo;
    o->model = cli_get(a, "model");
    o->prefix = cli_get(a, "prefix");
    if (!o->prefix)
        o->prefix = "time traveller";
    return cli_int(a, "length", 100, 0, 100000000, &o->length) &&
           cli_double(a, "temperature", 0, 0, 1e6, &o->temperature) &&
           cli_int(a, "seed", 0, 0, 0x7fffffffffffffffL, &o->seed);
}

/* The checkpoint's model, when it is a text model; NULL with the message printed. */
static bt_model *text_model(const bt_registry *reg, const char *path, bt_checkpoint **ck)
{
    char err[2048] = "";
    bt_model *m = NULL;
    if (bt_checkpoint_read(path, ck, err, sizeof err) != BT_OK)
        cli_fail(CMD, "%s", err);
    else if ((*ck)->task[0])
        cli_fail(CMD, "%s: this model was trained on task %s, not a text: generate needs a text "
                 "model (bptt analyze --model takes task models)", path, (*ck)->task);
    else if (!(*ck)->vocab)
        cli_fail(CMD, "%s has no vocabulary: it was not trained on text", path);
    else if (bt_checkpoint_model(*ck, reg, &m, err, sizeof err) != BT_OK)
        cli_fail(CMD, "%s", err);
    return m;
}

int cmd_generate(int argc, char **argv)
{
    gen_opts o;
    bt_registry *reg;
    int rc;
    if (!cli_begin(&cmd_generate_spec, argc, argv, read_options, &o, &reg, &rc))
        return rc;
    bt_checkpoint *ck = NULL;
    bt_model *m = NULL;
    char err[2048] = "", *text = NULL;
    if (!o.model)
        rc = cli_usage(CMD, "--model FILE is required (a checkpoint from bptt train --save)");
    else if (!(m = text_model(reg, o.model, &ck)))
        rc = 1;
    else if (bt_generate_text(m, ck->vocab, o.prefix, (int)o.length, o.temperature,
                              (uint64_t)o.seed, &text, err, sizeof err) != BT_OK)
        rc = cli_fail(CMD, "--prefix: %s", err);
    else {
        printf("%s\n", text);
        rc = 0;
    }
    bt_free(text);
    bt_model_free(m);
    bt_checkpoint_free(ck);
    bt_registry_free(reg);
    return rc;
}
