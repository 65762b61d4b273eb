/* bad_plugin.c: one source for the deliberately broken plugins of
 * tests/test_plugins.c; meson builds it once per VARIANT_* define, each into its
 * own .so named PLUGIN_NAME, and each variant breaks exactly one rule. Some only
 * break the ABI's rules (refused with a message); others crash, hang or exit
 * while registering, or hand over strings that never end (issue 12). */
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bptt_plugin.h"

/* Each variant uses only some of the stubs below. */
#define UNUSED __attribute__((unused))

#ifndef PLUGIN_NAME
#error "define PLUGIN_NAME"
#endif

UNUSED static int opt_create(const bt_host *h, const char *o, void **cfg, char *e, size_t n)
{
    (void)h, (void)o, (void)e, (void)n;
    *cfg = NULL;
    return 0;
}
UNUSED static void opt_destroy(void *cfg) { (void)cfg; }
UNUSED static void opt_step(void *cfg, uint64_t t, bt_real *p, const bt_real *g, bt_real *const *s, size_t n)
{
    (void)cfg, (void)t, (void)p, (void)g, (void)s, (void)n;
}
/* Writes how many scalars its call received into each of their parameters,
 * so a test sees how the host split the step; a call with none aborts. */
UNUSED static void probe_step(void *cfg, uint64_t t, bt_real *p, const bt_real *g,
                              bt_real *const *s, size_t n)
{
    (void)cfg, (void)t, (void)g, (void)s;
    if (n == 0)
        abort();
    for (size_t i = 0; i < n; i++)
        p[i] = (bt_real)n;
}
UNUSED static const char *opt_describe(void *cfg, char *buf, size_t len)
{
    (void)cfg;
    snprintf(buf, len, "%s", PLUGIN_NAME);
    return buf;
}

/* Bytes that never reach a NUL within their bounds: a string the plugin forgot
 * to terminate, followed by more non-NUL data (as in a real binary), all one
 * object so the host's bounded reads stay inside it. */
UNUSED static struct {
    char text[40];
    char more[600];
} endless;

UNUSED static const char *endless_text(void)
{
    memset(&endless, 'x', sizeof endless);
    return endless.text;
}

/* Fills the host's buffer to its last byte, leaving no NUL. */
UNUSED static const char *unterminated_describe(void *cfg, char *buf, size_t len)
{
    (void)cfg;
    memset(buf, 'd', len);
    return buf;
}

/* Refuses "fail" with an error buffer filled to its last byte. */
UNUSED static int unterminated_create(const bt_host *h, const char *o, void **cfg, char *e,
                                      size_t n)
{
    (void)h;
    *cfg = NULL;
    if (strcmp(o, "fail") == 0) {
        memset(e, 'e', n);
        return -1;
    }
    return 0;
}

UNUSED static int pol_create(const bt_host *h, const char *o, void **st, char *e, size_t n)
{
    return opt_create(h, o, st, e, n);
}
UNUSED static void pol_begin(void *st, uint64_t seed) { (void)st, (void)seed; }

UNUSED static void pol_decide(void *st, long t, bt_policy_decision *d)
{
    (void)st, (void)t;
    d->xi = 1, d->update = true, d->reach = 0;
}
UNUSED static int pol_reach(void *st) { return (void)st, 0; }
UNUSED static int cell_params(const bt_cell_dims *d, bt_param_spec *s, int max, char *e, size_t n)
{
    (void)d, (void)s, (void)max, (void)e, (void)n;
    return 0;
}
UNUSED static int cell_states(const bt_cell_dims *d, int *w, int max)
{
    (void)max;
    w[0] = d->hidden;
    return 1;
}
UNUSED static bt_tensor *cell_step(const bt_host *h, bt_graph *g, bt_tensor *const *p,
                                   const bt_step_input *in, bt_tensor *const *s, bt_tensor **ns)
{
    (void)h, (void)g, (void)p, (void)in;
    ns[0] = s[0];
    return s[0];
}

UNUSED static int est_buffers(void *cfg, const bt_estimator_dims *d, bt_estimator_buffer *out,
                              int max, char *e, size_t n)
{
    (void)cfg, (void)d, (void)out, (void)max, (void)e, (void)n;
    return 0;
}
UNUSED static void est_begin(void *cfg, const bt_estimator_ctx *c, uint64_t seed)
{
    (void)cfg, (void)c, (void)seed;
}
UNUSED static int est_step(void *cfg, const bt_estimator_ctx *c, char *e, size_t n)
{
    (void)cfg, (void)c, (void)e, (void)n;
    return 0;
}

/* A complete optimizer def under a given name. */
#define OPT(NAME) \
    {sizeof(bt_optimizer_def), NAME, "test optimizer", 0, opt_create, opt_destroy, opt_step, \
     opt_describe, NULL, 0}

UNUSED static int test_init(const bt_host *host, bt_registrar *reg, char *err, size_t errlen)
{
    (void)err, (void)errlen;
#if defined(VARIANT_INIT_FAILS)
    /* Registers first, then fails: the registration must not survive. */
    static const bt_optimizer_def d = OPT("staged_opt");
    host->register_optimizer(reg, &d);
    snprintf(err, errlen, "cannot find the frobnicator");
    return 1;
#elif defined(VARIANT_DUP_A)
    static const bt_optimizer_def d = OPT("dupopt");
    return host->register_optimizer(reg, &d) != 0;
#elif defined(VARIANT_DUP_B)
    static const bt_optimizer_def first = OPT("onlyb"), d = OPT("dupopt");
    if (host->register_optimizer(reg, &first) != 0)
        return 1;
    /* The host reports the duplicate itself; returning failure is what a plugin does. */
    if (host->register_optimizer(reg, &d) != 0) {
        snprintf(err, errlen, "registration refused");
        return 1;
    }
    return 0;
#elif defined(VARIANT_DUP_SELF)
    static const bt_optimizer_def d = OPT("twice");
    host->register_optimizer(reg, &d);
    return host->register_optimizer(reg, &d) != 0;
#elif defined(VARIANT_NULL_STEP)
    bt_optimizer_def d = OPT("nostep"); /* from the stack: the host copies defs */
    d.step = NULL;
    return host->register_optimizer(reg, &d) != 0;
#elif defined(VARIANT_MANY_STATES)
    bt_optimizer_def d = OPT("hoarder"); /* one state buffer more than the host keeps */
    d.n_state = BT_OPTIMIZER_MAX_STATE + 1;
    return host->register_optimizer(reg, &d) != 0;
#elif defined(VARIANT_POLICY_NO_DECIDE)
    static const bt_policy_def d = {.size = sizeof d, .name = "nodecide", .summary = "",
                                    .create = pol_create, .destroy = opt_destroy, .begin = pol_begin};
    return host->register_policy(reg, &d) != 0;
#elif defined(VARIANT_CELL_NO_STEP)
    static const bt_cell_def d = {.size = sizeof d, .name = "nostepcell", .summary = ""};
    return host->register_cell(reg, &d) != 0;
#elif defined(VARIANT_EMPTY_NAME)
    static const bt_optimizer_def d = OPT("");
    return host->register_optimizer(reg, &d) != 0;
#elif defined(VARIANT_LONG_NAME)
    static const bt_optimizer_def d = OPT("a_name_that_is_much_too_long_for_bptt_names");
    return host->register_optimizer(reg, &d) != 0;
#elif defined(VARIANT_GOOD_MIXED)
    /* A valid plugin with one of each kind, to check the listing order. */
    static const bt_optimizer_def o = OPT("mixed_opt");
    static const bt_policy_def p = {sizeof p, "zz_policy", "", pol_create, opt_destroy, pol_begin,
                                    pol_decide, pol_reach, opt_describe, NULL};
    static const bt_cell_def c = {sizeof c, "aa_cell", "", BT_INPUT_REAL, BT_LOSS_MSE, cell_params,
                                  cell_states, cell_step, NULL, 0};
    static const bt_estimator_def e = {sizeof e, "aa_est", "", opt_create, opt_destroy,
                                       est_buffers, est_begin, est_step, opt_describe, NULL, 0};
    return host->register_optimizer(reg, &o) || host->register_policy(reg, &p) ||
           host->register_cell(reg, &c) || host->register_estimator(reg, &e);
#elif defined(VARIANT_ESTIMATOR_NO_STEP)
    static const bt_estimator_def d = {.size = sizeof d, .name = "nostepest", .summary = "",
                                       .create = opt_create, .destroy = opt_destroy,
                                       .buffers = est_buffers, .begin = est_begin,
                                       .describe = opt_describe};
    return host->register_estimator(reg, &d) != 0;
#elif defined(VARIANT_ESTIMATOR_SMALL)
    /* A def cut before describe: less than the least an estimator (ABI 2.3) has. */
    bt_estimator_def d = {sizeof d, "smallest", "", opt_create, opt_destroy, est_buffers,
                          est_begin, est_step, opt_describe, NULL, 0};
    d.size = offsetof(bt_estimator_def, describe);
    return host->register_estimator(reg, &d) != 0;
#elif defined(VARIANT_SMALL_DEF)
    /* A def whose size was never set: what forgetting .size = sizeof looks like. */
    bt_optimizer_def d = OPT("unsized");
    d.size = 0;
    return host->register_optimizer(reg, &d) != 0;
#elif defined(VARIANT_CRASH_INIT)
    /* init dereferences NULL. */
    (void)host, (void)reg;
    volatile int *nowhere = NULL;
    return *nowhere;
#elif defined(VARIANT_HANG_INIT)
    /* init never returns. */
    (void)host, (void)reg;
    for (volatile unsigned long spin = 0;; spin++)
        ;
    return 0;
#elif defined(VARIANT_TERM_INIT)
    /* Dies of the signal a user would send: refused, but not remembered. */
    (void)host, (void)reg;
    raise(SIGTERM);
    return 0;
#elif defined(VARIANT_ABORT_INIT)
    (void)host, (void)reg;
    abort();
#elif defined(VARIANT_EXIT_INIT)
    /* Ends the whole process: in the host, bptt would vanish with status 3. */
    (void)host, (void)reg;
    exit(3);
#elif defined(VARIANT_BAD_DEF_POINTER)
    /* A definition pointer that points nowhere: the host faults reading it. */
    return host->register_cell(reg, (const bt_cell_def *)(uintptr_t)0x18) != 0;
#elif defined(VARIANT_NAME_UNTERMINATED)
    bt_optimizer_def d = OPT("x");
    d.name = endless_text();
    return host->register_optimizer(reg, &d) != 0;
#elif defined(VARIANT_SUMMARY_UNTERMINATED)
    bt_optimizer_def d = OPT("endless_summary");
    d.summary = endless_text();
    return host->register_optimizer(reg, &d) != 0;
#elif defined(VARIANT_SUMMARY_CONTROL)
    bt_optimizer_def d = OPT("escape_summary");
    d.summary = "two\nlines \033[2J and a terminal escape";
    return host->register_optimizer(reg, &d) != 0;
#elif defined(VARIANT_INIT_ERR_UNTERMINATED)
    (void)host, (void)reg;
    memset(err, 'e', errlen);
    return 1;
#elif defined(VARIANT_DESCRIBE_UNTERMINATED)
    /* Loads fine; describe and create's error misbehave when called. */
    bt_optimizer_def o = OPT("endless_opt");
    o.create = unterminated_create;
    o.describe = unterminated_describe;
    static const bt_policy_def p = {sizeof p, "endless_policy", "", unterminated_create,
                                    opt_destroy, pol_begin, pol_decide, pol_reach,
                                    unterminated_describe, NULL};
    return host->register_optimizer(reg, &o) || host->register_policy(reg, &p);
#elif defined(VARIANT_BIG_DEF)
    /* A def from a newer bptt with fields this host does not know: accepted, the
     * extra fields ignored. Poison in them must not matter. */
    static struct {
        bt_cell_def def;
        void *newer_fields[3];
    } big = {{sizeof big, "big_cell", "", BT_INPUT_REAL, BT_LOSS_MSE, cell_params, cell_states,
              cell_step, NULL, 0},
             {(void *)1, (void *)2, (void *)3}};
    return host->register_cell(reg, &big.def) != 0;
#elif defined(VARIANT_DEF_2_0)
    /* Defs of a plugin built for ABI 2.0, before `doc` was appended: their size
     * ends at `describe`/`step`. What lies beyond belongs to whatever follows
     * the def in the plugin's memory; here a string the host must not read. */
    static struct {
        bt_optimizer_def def;
    } o = {OPT("old_opt")};
    static struct {
        bt_cell_def def;
    } c = {{0, "old_cell", "", BT_INPUT_REAL, BT_LOSS_MSE, cell_params, cell_states, cell_step,
            "not this plugin's doc", 0}};
    o.def.size = offsetof(bt_optimizer_def, doc);
    o.def.doc = "not this plugin's doc";
    c.def.size = offsetof(bt_cell_def, doc);
    return host->register_optimizer(reg, &o.def) || host->register_cell(reg, &c.def);
#elif defined(VARIANT_PROBE_OPTIM)
    /* ABI 2.5 flags (tests/test_optim.c): the same step elementwise, not, and
     * flagged in a def sized for ABI 2.4, whose flags the host must not read. */
    static bt_optimizer_def each = OPT("probe_each"), whole = OPT("probe_whole"),
                            old = OPT("probe_old");
    each.step = whole.step = old.step = probe_step;
    each.flags = old.flags = BT_OPTIMIZER_ELEMENTWISE;
    old.size = offsetof(bt_optimizer_def, flags);
    return host->register_optimizer(reg, &each) || host->register_optimizer(reg, &whole) ||
           host->register_optimizer(reg, &old);
#elif defined(VARIANT_DOC)
    /* ABI 2.1 defs with a description. */
    static const bt_policy_def p = {sizeof p, "doc_policy", "", pol_create, opt_destroy,
                                    pol_begin, pol_decide, pol_reach, opt_describe,
                                    "line one\nline two\n"};
    return host->register_policy(reg, &p);
#else
    (void)host, (void)reg;
    return 0;
#endif
}

#if defined(VARIANT_WRONG_MAJOR) || defined(VARIANT_NEWER_MINOR) || defined(VARIANT_WRONG_REAL) || \
    defined(VARIANT_NULL_DESC) || defined(VARIANT_NO_INIT) || defined(VARIANT_ABI_1)
#if defined(VARIANT_WRONG_MAJOR)
#define DESC_VERSION BT_ABI_MAJOR + 1, 0, sizeof(bt_real)
#elif defined(VARIANT_ABI_1)
/* A plugin built against bptt 1.1 (its descriptor opens the same way). */
#define DESC_VERSION 1, 1, sizeof(bt_real)
#elif defined(VARIANT_NEWER_MINOR)
#define DESC_VERSION BT_ABI_MAJOR, BT_ABI_MINOR + 1, sizeof(bt_real)
#else
/* The other precision: what a plugin built with the other -Dreal reports. */
#define DESC_VERSION BT_ABI_MAJOR, BT_ABI_MINOR, sizeof(bt_real) == 4 ? 8 : 4
#endif
BT_PLUGIN_EXPORT const bt_plugin_desc *bt_plugin_entry(void);
const bt_plugin_desc *bt_plugin_entry(void)
{
#if defined(VARIANT_NO_INIT)
    static const bt_plugin_desc desc = {BT_ABI_MAJOR, BT_ABI_MINOR, sizeof(bt_real), PLUGIN_NAME,
                                        "0.1", NULL, {0}};
#else
    static const bt_plugin_desc desc = {DESC_VERSION, PLUGIN_NAME, "0.1", test_init, {0}};
#endif
#if defined(VARIANT_NULL_DESC)
    (void)desc;
    return NULL;
#else
    return &desc;
#endif
}
#elif defined(VARIANT_ENTRY_DATA)
/* The entry symbol is data, not a function: calling it jumps into a page that
 * is not executable. */
BT_PLUGIN_EXPORT unsigned char bt_plugin_entry[64] = {0xff, 0xff, 0xff, 0xff};
#elif defined(VARIANT_BAD_DESC)
/* The entry returns a pointer that points nowhere. */
BT_PLUGIN_EXPORT const bt_plugin_desc *bt_plugin_entry(void);
const bt_plugin_desc *bt_plugin_entry(void) { return (const bt_plugin_desc *)(uintptr_t)0x10; }
#elif defined(VARIANT_CTOR_CRASH)
/* A constructor that crashes: it runs inside dlopen, before bptt sees anything. */
__attribute__((constructor)) static void crash_on_load(void) { raise(SIGBUS); }
BT_PLUGIN(PLUGIN_NAME, "0.1", test_init)
#elif defined(VARIANT_PLUGIN_NAME_UNTERMINATED) || defined(VARIANT_VERSION_UNTERMINATED)
BT_PLUGIN_EXPORT const bt_plugin_desc *bt_plugin_entry(void);
const bt_plugin_desc *bt_plugin_entry(void)
{
    static bt_plugin_desc desc = {BT_ABI_MAJOR, BT_ABI_MINOR, sizeof(bt_real), PLUGIN_NAME,
                                  "0.1", test_init, {0}};
#if defined(VARIANT_PLUGIN_NAME_UNTERMINATED)
    desc.name = endless_text();
#else
    desc.version = endless_text();
#endif
    return &desc;
}
#elif defined(VARIANT_NO_ENTRY)
/* Exports something, just not the entry symbol. */
BT_PLUGIN_EXPORT int bt_plugin_entry_typo(void);
int bt_plugin_entry_typo(void) { return test_init(NULL, NULL, NULL, 0); }
#else
BT_PLUGIN(PLUGIN_NAME, "0.1", test_init)
#endif
