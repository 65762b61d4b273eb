/* fuzz_spec.c: every parser of a spec a user types, one per input. The first
 * byte picks the parser (one of the letters below, or any byte modulo their
 * count), the rest is the text:
 *   O  bt_parse_options over a table of every kind of option
 *   P  a truncation policy, "random:0.1,seed=3", through the plugin's create
 *   X  an optimizer, "adam:lr=0.002", through bt_optimizer_new
 *   I  an --init spec: bt_init_spec_check and bt_model_init
 *   T  a task spec, "copy:10,3": bt_task_source_new and its minibatches
 *   L  a truncation list, "full,fixed:35,tbptt:5,35": bt_lm_split_policies
 *   C  the command line of `bptt train` (words separated by newlines or
 *      NULs) through the CLI's parser, lm_cli_parse and lm_cli_validate
 * Invariants beyond "no crash": a refusal carries a message; what a policy
 * or optimizer describes itself as is a spec that creates it again with the
 * same description; a policy's decisions are sane (finite xi, reach within
 * what it announced); the init check and model initialisation agree, and an
 * accepted init leaves finite parameters; a task's minibatches have the
 * sizes it reports and ids in range; a truncation list splits into specs
 * that join back into the list. */
#include <math.h>
#include <unistd.h>

#include "fuzz.h"
#include "lm.h"
#include "lm_cli.h"
#include "model.h"
#include "tasks.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_registry();
    bt_blas_set_threads(1);
    return 0;
}

static void fuzz_options(const char *text)
{
    double a = -1, b = -1, c = -1, d = -1;
    bt_option opts[] = {
        {.name = "k", .value = &a, .min = 1, .max = 1e6, .integer = true, .positional = true,
         .required = true},
        {.name = "lr", .value = &b, .min = 0, .max = 10, .positional = true},
        {.name = "seed", .value = &c, .min = 0, .max = 9007199254740992.0, .integer = true},
        {.name = "free", .value = &d},
    };
    char err[512] = "";
    if (bt_parse_options(text, opts, 4, "fuzz", err, sizeof err) != BT_OK) {
        FUZZ_CHECK(err[0], "options refused without a message");
        FUZZ_CHECK(a == -1 && b == -1 && c == -1 && d == -1, "a refused parse wrote a value");
        return;
    }
    FUZZ_CHECK(opts[0].set && a >= 1 && a <= 1e6 && a == floor(a), "k = %g", a);
    FUZZ_CHECK(!opts[1].set ? b == -1 : b >= 0 && b <= 10, "lr = %g", b);
    FUZZ_CHECK(!opts[2].set ? c == -1 : c >= 0 && c == floor(c), "seed = %g", c);
    FUZZ_CHECK(!opts[3].set ? d == -1 : isfinite(d), "free = %g", d);
}

/* The policy named in spec, created into *state (which may stay NULL: full
 * keeps none); false, with a message, when refused. */
static bool policy_new(const char *spec, const bt_policy_def **def, void **state, char *err,
                       size_t errlen)
{
    char name[BT_NAME_LEN + 1];
    const char *opts;
    bt_split_spec(spec, name, sizeof name, &opts);
    *def = bt_registry_policy(fuzz_registry(), name);
    *state = NULL;
    if (!*def) {
        snprintf(err, errlen, "unknown policy");
        return false;
    }
    if ((*def)->create(bt_host_table(), opts, state, err, errlen) != 0) {
        FUZZ_CHECK(err[0], "policy %s refused '%s' without a message", name, opts);
        return false;
    }
    return true;
}

static void fuzz_policy(const char *spec)
{
    const bt_policy_def *def;
    void *s;
    char err[512] = "", desc[256] = "", again[256] = "";
    if (!policy_new(spec, &def, &s, err, sizeof err))
        return;
    def->describe(s, desc, sizeof desc);
    int max_reach = def->max_reach(s);
    FUZZ_CHECK(max_reach >= 0, "%s: max_reach %d", spec, max_reach);
    def->begin(s, 12345);
    long last = -1;
    for (long t = 0; t < 64; t++) {
        bt_policy_decision d = {0};
        def->decide(s, t, &d);
        FUZZ_CHECK(isfinite(d.xi), "%s: xi %g at step %ld", spec, d.xi, t);
        FUZZ_CHECK(d.reach >= 0 && (d.reach <= max_reach || d.reach <= t - last),
                   "%s: reach %d at step %ld, max_reach %d", spec, d.reach, t, max_reach);
        if (d.update)
            last = t;
    }
    def->destroy(s);
    /* The description is itself a spec, and describes itself the same. */
    const bt_policy_def *def2;
    void *s2;
    FUZZ_CHECK(policy_new(desc, &def2, &s2, err, sizeof err) && def2 == def,
               "'%s' describes itself as '%s', which does not create it: %s", spec, desc, err);
    def2->describe(s2, again, sizeof again);
    FUZZ_CHECK(strcmp(desc, again) == 0, "'%s' describes as '%s', then as '%s'", spec, desc, again);
    def2->destroy(s2);
}

static void fuzz_optimizer(const char *spec)
{
    bt_params *p = bt_params_new();
    FUZZ_CHECK(p && bt_params_add(p, "w", 1, (int[]){3}) && bt_params_finalize(p) == BT_OK,
               "a 3-value block");
    char err[512] = "", desc[512] = "", again[512] = "";
    bt_optimizer *o = NULL;
    if (bt_optimizer_new(fuzz_registry(), spec, p, &o, err, sizeof err) != BT_OK) {
        FUZZ_CHECK(!o && err[0], "optimizer refused without a message");
        bt_params_free(p);
        return;
    }
    bt_optimizer_describe(o, desc, sizeof desc);
    bt_real *w = bt_params_data(p), *g = bt_params_grad(p);
    for (int i = 0; i < 3; i++)
        w[i] = (bt_real)(i - 1), g[i] = (bt_real)(0.5 * i - 0.25);
    bt_optimizer_step(o);
    bt_optimizer_step(o);
    FUZZ_CHECK(bt_optimizer_steps(o) == 2, "two steps counted as %llu",
               (unsigned long long)bt_optimizer_steps(o));
    bt_optimizer_free(o);
    o = NULL;
    FUZZ_CHECK(bt_optimizer_new(fuzz_registry(), desc, p, &o, err, sizeof err) == BT_OK,
               "'%s' describes itself as '%s', which does not create it: %s", spec, desc, err);
    bt_optimizer_describe(o, again, sizeof again);
    FUZZ_CHECK(strcmp(desc, again) == 0, "'%s' describes as '%s', then as '%s'", spec, desc, again);
    bt_optimizer_free(o);
    bt_params_free(p);
}

/* The check and the initialisation agree, on every shipped token cell. */
static void fuzz_init(const char *spec)
{
    char err[512] = "", err2[512] = "";
    bt_status checked = bt_init_spec_check(spec, err, sizeof err);
    FUZZ_CHECK(checked == BT_OK || err[0], "init '%s' refused without a message", spec);
    static const char *const cells[] = {"rnn_tanh", "gru", "lstm", "linear"};
    for (size_t i = 0; i < sizeof cells / sizeof *cells; i++) {
        const bt_cell_def *cell = bt_registry_cell(fuzz_registry(), cells[i]);
        if (!cell)
            continue;
        bt_model *m;
        FUZZ_CHECK(bt_model_new(cell, (bt_cell_dims){5, 4, 5}, &m, err2, sizeof err2) == BT_OK,
                   "model %s: %s", cells[i], err2);
        bt_rng rng;
        bt_rng_seed(&rng, 1);
        err2[0] = '\0';
        bt_status st = bt_model_init(m, spec, &rng, err2, sizeof err2);
        /* A valid spec may still not fit a cell (spectral needs a square
         * recurrent matrix): then it is refused with a message, never accepted
         * when the check refuses it. */
        bool unfit = checked == BT_OK && st == BT_ERR_ARG && strstr(err2, "no square") != NULL;
        FUZZ_CHECK(st == checked || unfit, "init '%s': the check says %s, %s's init %s (%s)", spec,
                   bt_status_name(checked), cells[i], bt_status_name(st), err2);
        const bt_real *w = bt_params_data(m->params);
        for (size_t k = 0; st == BT_OK && k < bt_params_total(m->params); k++)
            FUZZ_CHECK(isfinite((double)w[k]), "init '%s' on %s: parameter %zu is %g", spec,
                       cells[i], k, (double)w[k]);
        bt_model_free(m);
    }
}

/* One minibatch against the sizes the source reports. */
static void check_sequence(const bt_source *s, const bt_sequence *q, const char *spec)
{
    FUZZ_CHECK(q->B == s->B && q->T == s->T, "task %s: minibatch %dx%d, source %dx%d", spec, q->B,
               q->T, s->B, s->T);
    size_t n = (size_t)q->B * (size_t)q->T;
    FUZZ_CHECK(s->tokens_in ? q->ids != NULL : q->x != NULL, "task %s: inputs missing", spec);
    FUZZ_CHECK(s->tokens_out ? q->targets != NULL : q->y != NULL, "task %s: targets missing", spec);
    for (size_t i = 0; s->tokens_in && i < n; i++)
        FUZZ_CHECK(q->ids[i] >= 0 && q->ids[i] < s->input_size, "task %s: id %d of %d", spec,
                   (int)q->ids[i], s->input_size);
    for (size_t i = 0; s->tokens_out && i < n; i++)
        FUZZ_CHECK(q->targets[i] >= 0 && q->targets[i] < s->output_size, "task %s: target %d of %d",
                   spec, (int)q->targets[i], s->output_size);
    for (size_t i = 0; !s->tokens_in && i < n * (size_t)s->input_size; i++)
        FUZZ_CHECK(isfinite((double)q->x[i]), "task %s: x[%zu] not finite", spec, i);
    for (size_t i = 0; !s->tokens_out && i < n * (size_t)s->output_size; i++)
        FUZZ_CHECK(isfinite((double)q->y[i]), "task %s: y[%zu] not finite", spec, i);
    for (int t = 0; q->loss_weight && t < q->T; t++)
        FUZZ_CHECK(q->loss_weight[t] >= 0, "task %s: loss weight %g", spec,
                   (double)q->loss_weight[t]);
}

static void fuzz_task(const char *spec, int B)
{
    char err[512] = "";
    bt_source s;
    if (bt_task_source_new(spec, B, 99, &s, err, sizeof err) != BT_OK) {
        FUZZ_CHECK(err[0], "task '%s' refused without a message", spec);
        return;
    }
    FUZZ_CHECK(bt_task_spec_is_task(spec), "'%s' made a task but is not a task spec", spec);
    FUZZ_CHECK(s.name && strcmp(s.name, spec) == 0, "task '%s' calls itself '%s': the name must "
               "recreate it", spec, s.name ? s.name : "(null)");
    FUZZ_CHECK(s.B == B && s.T >= 1 && s.input_size >= 1 && s.output_size >= 1,
               "task %s: B %d T %d sizes %d/%d", spec, s.B, s.T, s.input_size, s.output_size);
    bt_rng rng;
    bt_rng_seed(&rng, 5);
    s.epoch(s.ctx, &rng);
    int count = s.count(s.ctx);
    FUZZ_CHECK(count >= 1, "task %s: %d minibatches", spec, count);
    bt_sequence q;
    /* The first two of possibly a billion minibatches, then validation. */
    for (int i = 0; i < 2 && i < count; i++) {
        FUZZ_CHECK(s.next(s.ctx, &q), "task %s: minibatch %d of %d missing", spec, i, count);
        check_sequence(&s, &q, spec);
    }
    for (int i = 0; i < 8 && s.validation(s.ctx, i, &q); i++)
        check_sequence(&s, &q, spec);
    bt_source_free(&s);
}

static void fuzz_list(const char *list)
{
    enum { MAX = 8 };
    char out[MAX][256], err[512] = "";
    int n = bt_lm_split_policies(fuzz_registry(), list, out, MAX, err, sizeof err);
    if (n < 0) {
        FUZZ_CHECK(err[0], "list refused without a message");
        return;
    }
    FUZZ_CHECK(n >= 1 && n <= MAX, "%d policies", n);
    char joined[MAX * 257] = "";
    for (int i = 0; i < n; i++) {
        /* A policy's name ends at ':', an estimator's at ':' or ','
         * ("uoro,seed=3"); an option with '=' may follow a ','. */
        char name[BT_NAME_LEN + 1];
        size_t len = strcspn(out[i], ":,");
        snprintf(name, sizeof name, "%.*s", (int)len, out[i]);
        FUZZ_CHECK(len <= BT_NAME_LEN && (bt_registry_policy(fuzz_registry(), name) ||
                                          bt_registry_estimator(fuzz_registry(), name)),
                   "entry %d '%s' does not start with a policy or estimator name", i, out[i]);
        if (i)
            strcat(joined, ",");
        strcat(joined, out[i]);
    }
    FUZZ_CHECK(strcmp(joined, list) == 0, "'%s' split into parts that join as '%s'", list, joined);
}

/* The options `train` takes from lm_cli_options, and --truncation and
 * --estimator, which each command declares itself (lm_cli_parse reads both). */
static const cli_option truncation_option[] = {
    {"truncation", "SPEC", "truncation policy"},
    {"estimator", "NAME[,OPTS]", "online gradient estimator"},
    {NULL, NULL, NULL},
};
static const cli_command train_like = {
    .name = "train",
    .summary = "fuzz",
    .usage = "[options]",
    .options = {lm_cli_options, truncation_option, NULL},
};

static void fuzz_cli(char *text, size_t len)
{
    char *argv[65] = {"train"};
    int argc = 1;
    char *word = text;
    for (size_t i = 0; i <= len && argc < 64; i++)
        if (i == len || text[i] == '\n' || text[i] == '\0') {
            text[i] = '\0';
            argv[argc++] = word;
            word = text + i + 1;
        }
    argv[argc] = NULL;
    cli_args a;
    int rc = -1;
    if (!cli_args_begin(&a, &train_like, argc, argv, &rc)) {
        FUZZ_CHECK(rc == 0 || rc == 2, "the parser stopped with status %d", rc);
        return;
    }
    lm_cli_opts o;
    if (lm_cli_parse(&a, &o) && lm_cli_validate("train", fuzz_registry(), &o.run.cfg) &&
        lm_cli_check_data("train", &o, o.data, o.task)) {
        const bt_lm_config *c = &o.run.cfg;
        FUZZ_CHECK(c->hidden >= 1 && c->batch >= 1 && c->steps >= 1 && c->clip >= 0 &&
                   c->val_fraction >= 0 && c->val_fraction <= 0.5, "accepted settings out of range");
        FUZZ_CHECK(bt_init_spec_check(c->init, NULL, 0) == BT_OK, "accepted --init %s", c->init);
        /* A task is built now (a text would be read from a file). Its buffers
         * are B x T: only small batches, so the fuzzer explores the parser
         * rather than the allocator. */
        bt_source src;
        bt_lm_config cfg = o.run.cfg;
        lm_cli_data d = {.o = &o, .data = NULL, .task = o.task};
        char err[1024];
        if (o.task && cfg.batch <= 8 && lm_cli_source(&d, &cfg, &src, err, sizeof err) == BT_OK)
            bt_source_free(&src);
    }
    cli_args_free(&a);
    bt_blas_set_threads(1); /* --threads N stays with the process: undo it */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char modes[] = "OPXITLC";
    if (size < 1)
        return 0;
    const char *m = memchr(modes, data[0], sizeof modes - 1);
    int mode = m ? (int)(m - modes) : data[0] % (int)(sizeof modes - 1);
    char *text = fuzz_cstr(data + 1, size - 1);
    switch (modes[mode]) {
    case 'O': fuzz_options(text); break;
    case 'P': fuzz_policy(text); break;
    case 'X': fuzz_optimizer(text); break;
    case 'I': fuzz_init(text); break;
    case 'T': fuzz_task(text, 1 + (int)(size % 4)); break;
    case 'L': fuzz_list(text); break;
    case 'C':
        memcpy(text, data + 1, size - 1); /* NULs separate words here */
        fuzz_cli(text, size - 1);
        break;
    }
    free(text);
    return 0;
}
