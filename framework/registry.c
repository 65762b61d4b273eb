/* registry.c: the host side of plugins. Opens shared objects with libdl, checks
 * their descriptor, hands them the host table, stages what they register and
 * commits it only when the whole plugin loaded cleanly. A file not seen before
 * registers first in a scan process (plugin_scan.c); every string a plugin
 * hands over is measured with a bound and copied. */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "elf_check.h"
#include "plugin_scan.h"
#include "registry.h"

/* uthash allocates through the library's counted heap, and an allocation
 * failure marks the item instead of calling exit(). */
#define uthash_malloc(sz) bt_malloc(sz)
#define uthash_free(ptr, sz) bt_free(ptr)
#define HASH_NONFATAL_OOM 1
#define uthash_nonfatal_oom(obj) ((obj)->oom = true)
#include <uthash.h>

/* ---- the table ------------------------------------------------------------------ */

typedef struct bt_reg_key {
    int kind;
    char name[BT_NAME_LEN]; /* zero-padded so the key compares as bytes */
} bt_reg_key;

/* A loaded plugin: the handle and owned copies of its identity. */
typedef struct bt_plugin_rec {
    void *handle;
    char *name, *version, *file; /* one allocation, name first */
    int64_t dev, ino;            /* the file, so a second load of it needs no scan */
    struct bt_plugin_rec *next;
} bt_plugin_rec;

/* One registered def. The def is copied, so a plugin may register from the stack;
 * its name and summary are copied too (the copy's pointers point here), so no
 * string the host reads later is the plugin's own. */
typedef struct bt_reg_item {
    bt_reg_key key;
    char summary[BT_SUMMARY_LEN];
    bt_registry_entry entry;
    union {
        bt_cell_def cell;
        bt_policy_def policy;
        bt_optimizer_def optimizer;
        bt_estimator_def estimator;
    } def;
    bool oom;
    UT_hash_handle hh;
} bt_reg_item;

struct bt_registry {
    bt_reg_item *table;     /* uthash on (kind, name) */
    bt_reg_item **sorted;   /* [count], by kind then name, rebuilt on each commit */
    int count;
    bt_plugin_rec *plugins; /* newest first */
    bt_scan_cache *cache;   /* verdicts on files, made on first use */
    int scans;              /* files scanned in a child process */
    int stage_fd;           /* in a scan process: where each loading stage is reported */
};

/* The plugin being loaded: registrations wait here until init has returned. */
struct bt_registrar {
    bt_registry *reg;
    const bt_plugin_rec *plugin;
    bt_reg_item **staged;
    int n_staged, cap;
    bt_status status; /* first registration error, reported instead of init's own */
    char err[2 * BT_ERRMSG_LEN];
};

const char *bt_plugin_kind_name(bt_plugin_kind k)
{
    switch (k) {
    case BT_KIND_CELL: return "cell";
    case BT_KIND_POLICY: return "policy";
    case BT_KIND_OPTIMIZER: return "optimizer";
    case BT_KIND_ESTIMATOR: return "estimator";
    }
    return "unknown";
}

bt_registry *bt_registry_new(void)
{
    bt_registry *r = bt_calloc(1, sizeof(bt_registry));
    if (r)
        r->stage_fd = -1;
    return r;
}

int bt_registry_scans(const bt_registry *r) { return r ? r->scans : 0; }

/* In a scan process, tells the parent where loading has got to. */
static void bt_stage(const bt_registry *r, bt_scan_stage s)
{
    if (r->stage_fd >= 0)
        bt_scan_report(r->stage_fd, s);
}

void bt_registry_free(bt_registry *r)
{
    if (!r)
        return;
    bt_reg_item *it, *tmp;
    HASH_ITER(hh, r->table, it, tmp) {
        HASH_DELETE(hh, r->table, it);
        bt_free(it);
    }
    bt_free(r->sorted);
    /* Entries point into the plugins, so handles close only after the table is gone. */
    for (bt_plugin_rec *p = r->plugins, *next; p; p = next) {
        next = p->next;
        dlclose(p->handle);
        bt_free(p->name);
        bt_free(p);
    }
    bt_scan_cache_free(r->cache);
    bt_free(r);
}

int bt_registry_count(const bt_registry *r) { return r ? r->count : 0; }

const bt_registry_entry *bt_registry_at(const bt_registry *r, int i)
{
    return (r && i >= 0 && i < r->count) ? &r->sorted[i]->entry : NULL;
}

const char *bt_registry_names(const bt_registry *r, bt_plugin_kind kind, char *buf, size_t len)
{
    if (!buf || !len)
        return buf;
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < bt_registry_count(r) && used + 1 < len; i++) {
        const bt_registry_entry *e = bt_registry_at(r, i);
        if (e->kind == kind)
            used += (size_t)snprintf(buf + used, len - used, "%s%s", used ? ", " : "", e->name);
    }
    if (!used)
        snprintf(buf, len, "none: no %s plugin is loaded", bt_plugin_kind_name(kind));
    return buf;
}

static void bt_reg_key_make(bt_reg_key *k, bt_plugin_kind kind, const char *name)
{
    memset(k, 0, sizeof *k);
    k->kind = (int)kind;
    snprintf(k->name, sizeof k->name, "%s", name);
}

const bt_registry_entry *bt_registry_find(const bt_registry *r, bt_plugin_kind k, const char *name)
{
    if (!r || !name || strlen(name) >= BT_NAME_LEN)
        return NULL;
    bt_reg_key key;
    bt_reg_key_make(&key, k, name);
    bt_reg_item *it = NULL;
    HASH_FIND(hh, r->table, &key, sizeof key, it);
    return it ? &it->entry : NULL;
}

const bt_cell_def *bt_registry_cell(const bt_registry *r, const char *name)
{
    const bt_registry_entry *e = bt_registry_find(r, BT_KIND_CELL, name);
    return e ? e->def : NULL;
}

const bt_policy_def *bt_registry_policy(const bt_registry *r, const char *name)
{
    const bt_registry_entry *e = bt_registry_find(r, BT_KIND_POLICY, name);
    return e ? e->def : NULL;
}

const bt_optimizer_def *bt_registry_optimizer(const bt_registry *r, const char *name)
{
    const bt_registry_entry *e = bt_registry_find(r, BT_KIND_OPTIMIZER, name);
    return e ? e->def : NULL;
}

const bt_estimator_def *bt_registry_estimator(const bt_registry *r, const char *name)
{
    const bt_registry_entry *e = bt_registry_find(r, BT_KIND_ESTIMATOR, name);
    return e ? e->def : NULL;
}

static int bt_reg_item_cmp(const void *a, const void *b)
{
    const bt_reg_item *x = *(bt_reg_item *const *)a, *y = *(bt_reg_item *const *)b;
    if (x->key.kind != y->key.kind)
        return x->key.kind < y->key.kind ? -1 : 1;
    return strcmp(x->key.name, y->key.name);
}

/* ---- registration (called by plugins through the host table) --------------------- */

/* Names are used in specs like "adam:lr=0.1", so ':' ',' '=' and spaces are out.
 * A name is read with a bound: one that does not end within BT_NAME_LEN bytes
 * is invalid, however far the plugin's bytes go on. */
static bool bt_name_valid(const char *s)
{
    size_t n = bt_plugin_text_len(s, BT_NAME_LEN);
    if (n == 0 || n >= BT_NAME_LEN)
        return false;
    if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')))
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return false;
    }
    return true;
}

/* A plugin's name for a message: at most 40 bytes of it, control bytes shown as
 * '?', and "..." when it went on (or never ended). */
static const char *bt_name_shown(const char *s, char buf[48])
{
    bt_plugin_text_copy(buf, 41, s);
    if (bt_plugin_text_len(s, 41) > 40)
        strcat(buf, "...");
    return buf;
}

/* Why a name is invalid, for the message: too long (or unterminated) or a bad byte. */
static const char *bt_name_problem(const char *s)
{
    size_t n = bt_plugin_text_len(s, BT_NAME_LEN);
    return n == 0 ? "empty" : n >= BT_NAME_LEN ? "longer than 31 bytes, or not NUL-terminated"
                                               : "it holds a character that is not allowed";
}

/* Records the first registration error; later ones are dropped. */
static bt_status bt_registrar_fail(bt_registrar *g, bt_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bt_status bt_registrar_fail(bt_registrar *g, bt_status s, const char *fmt, ...)
{
    if (g->status == BT_OK) {
        char msg[BT_ERRMSG_LEN];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        g->status = s;
        snprintf(g->err, sizeof g->err, "plugin '%s' (%s): %s", g->plugin->name, g->plugin->file, msg);
    }
    return s;
}

/* The sizes of the definitions in ABI 2.0, the first ABI where they carry one:
 * the least a plugin may give. Each ends at 2.0's last field, so it stays put
 * when fields are appended. */
#define BT_SIZE_THROUGH(type, field) (offsetof(type, field) + sizeof(((type *)0)->field))
#define BT_CELL_DEF_2_0 BT_SIZE_THROUGH(bt_cell_def, step)
#define BT_POLICY_DEF_2_0 BT_SIZE_THROUGH(bt_policy_def, describe)
#define BT_OPTIMIZER_DEF_2_0 BT_SIZE_THROUGH(bt_optimizer_def, describe)
/* Estimators arrived with ABI 2.3: the least is everything up to describe. */
#define BT_ESTIMATOR_DEF_2_3 BT_SIZE_THROUGH(bt_estimator_def, describe)
/* A field appended after 2.0, read only when the plugin's def reaches it (an
 * ABI 2.0 plugin's def ends before it: what lies there is not the plugin's). */
#define BT_FIELD_IF_COVERED(d, type, field) \
    ((d)->size >= BT_SIZE_THROUGH(type, field) ? (d)->field : NULL)

/* What every kind checks before its own fields: a def, a size covering the
 * fields of the ABI the kind arrived with (2.0; estimators 2.3), a valid name. The name sits at the same offset in every ABI 2
 * def (the descriptor's major says the plugin has them), so a def with a bad
 * size can still be named. */
static bt_status bt_registrar_check(bt_registrar *g, bt_plugin_kind kind, const void *def,
                                    size_t size, size_t min, const char *name)
{
    int since = kind == BT_KIND_ESTIMATOR ? 3 : 0; /* the ABI minor the kind arrived with */
    const char *what = bt_plugin_kind_name(kind);
    if (!g || !g->reg)
        return BT_ERR_ARG; /* called outside init: nothing to report to */
    if (!def)
        return bt_registrar_fail(g, BT_ERR_PLUGIN, "registered a NULL %s definition", what);
    if (!name)
        return bt_registrar_fail(g, BT_ERR_PLUGIN, "registered a %s with no name", what);
    char shown[48];
    if (!bt_name_valid(name))
        return bt_registrar_fail(g, BT_ERR_PLUGIN,
                                 "%s name '%s' is invalid (%s): use 1 to %d letters, digits, "
                                 "'_', '-' or '.', starting with a letter",
                                 what, bt_name_shown(name, shown), bt_name_problem(name),
                                 BT_NAME_LEN - 1);
    if (size < min)
        return bt_registrar_fail(g, BT_ERR_PLUGIN,
                                 "%s '%s' has a definition of size %zu, smaller than ABI %d.%d's %zu "
                                 "bytes: set .size = sizeof(bt_%s_def) and rebuild the plugin "
                                 "against this bptt", what, name, size, BT_ABI_MAJOR, since, min,
                                 what);
    return BT_OK;
}

/* A summary is one plain line that ends within BT_SUMMARY_LEN bytes (or NULL). */
static const char *bt_summary_problem(const char *summary)
{
    size_t n = bt_plugin_text_len(summary, BT_SUMMARY_LEN);
    if (n == BT_SUMMARY_LEN)
        return "has a summary that does not end within 255 bytes (is it NUL-terminated?)";
    if (!bt_plugin_text_printable(summary, n))
        return "has a summary with control characters (a newline or an escape): make it one "
               "plain line";
    return NULL;
}

/* A description (ABI 2.1) may span lines but must end within BT_DOC_LEN bytes:
 * it is printed by `bptt plugins --describe`, so it is bounded like the rest. */
static const char *bt_doc_problem(const char *doc)
{
    if (bt_plugin_text_len(doc, BT_DOC_LEN) == BT_DOC_LEN)
        return "has a description (doc) that does not end within 16384 bytes (is it "
               "NUL-terminated?)";
    return NULL;
}

/* The def copy's name and summary point at the item's own copies. Every kind's
 * def opens with size, name, summary (checked below), so one assignment fits all. */
_Static_assert(offsetof(bt_cell_def, name) == offsetof(bt_policy_def, name) &&
               offsetof(bt_cell_def, name) == offsetof(bt_optimizer_def, name) &&
               offsetof(bt_cell_def, name) == offsetof(bt_estimator_def, name) &&
               offsetof(bt_cell_def, summary) == offsetof(bt_policy_def, summary) &&
               offsetof(bt_cell_def, summary) == offsetof(bt_optimizer_def, summary) &&
               offsetof(bt_cell_def, summary) == offsetof(bt_estimator_def, summary),
               "every def opens with size, name, summary");

/* Stages a checked def; `problem` says what is wrong with this kind's own
 * fields (NULL when nothing is). Only the fields this host knows are copied:
 * a newer plugin's extra fields are ignored, an older one's missing ones stay 0. */
static bt_status bt_registrar_stage(bt_registrar *g, bt_plugin_kind kind, const char *name,
                                    const char *summary, const char *doc, const char *problem,
                                    const void *def, size_t size, size_t host_size)
{
    const char *what = bt_plugin_kind_name(kind);
    if (problem)
        return bt_registrar_fail(g, BT_ERR_PLUGIN, "%s '%s' %s", what, name, problem);
    bt_reg_key key;
    bt_reg_key_make(&key, kind, name);
    bt_reg_item *old = NULL;
    HASH_FIND(hh, g->reg->table, &key, sizeof key, old);
    if (old)
        return bt_registrar_fail(g, BT_ERR_PLUGIN,
                                 "%s '%s' is already registered by plugin '%s' (%s)", what, name,
                                 old->entry.plugin, old->entry.file);
    for (int i = 0; i < g->n_staged; i++)
        if (memcmp(&g->staged[i]->key, &key, sizeof key) == 0)
            return bt_registrar_fail(g, BT_ERR_PLUGIN, "registers %s '%s' twice", what, name);
    if (g->n_staged == g->cap) {
        int cap = g->cap ? 2 * g->cap : 8;
        bt_reg_item **s = bt_realloc(g->staged, sizeof(*s) * (size_t)cap);
        if (!s)
            return bt_registrar_fail(g, BT_ERR_NOMEM, "out of memory registering %s '%s'", what, name);
        g->staged = s;
        g->cap = cap;
    }
    bt_reg_item *it = bt_calloc(1, sizeof *it);
    if (!it)
        return bt_registrar_fail(g, BT_ERR_NOMEM, "out of memory registering %s '%s'", what, name);
    it->key = key;
    bt_plugin_text_copy(it->summary, sizeof it->summary, summary); /* checked to fit */
    size_t kept = size < host_size ? size : host_size;
    memcpy(&it->def, def, kept);
    it->def.cell.size = kept; /* the copy's own size (size opens every kind's def) */
    it->def.cell.name = it->key.name;
    it->def.cell.summary = it->summary;
    it->entry = (bt_registry_entry){kind, it->key.name, g->plugin->name, g->plugin->version,
                                    g->plugin->file, it->summary, &it->def, doc};
    g->staged[g->n_staged++] = it;
    return BT_OK;
}

#define BT_MISSING(fn) "has no " #fn " callback (it is required)"

/* In a scan process, what the host is reading for the plugin; plugins call the
 * register functions, so g is theirs and checked before use. */
static void bt_registrar_stage_report(const bt_registrar *g, bt_scan_stage s)
{
    if (g && g->reg)
        bt_stage(g->reg, s);
}

/* The head every kind's def opens with (bt_registrar_check relies on it too). */
typedef struct def_head {
    size_t size;
    const char *name;
    const char *summary;
} def_head;

/* What a def of one kind lacks (a required callback, a field out of range),
 * and its doc (NULL when the plugin's def ends before the field): read only
 * after bt_registrar_check has accepted the def's size. */
typedef struct def_facts {
    const char *problem;
    const char *doc;
} def_facts;

/* Every kind registers alike: report the stage (to a scan process), check the
 * head, then the kind's own facts, the summary and the doc, and stage it. */
static bt_status register_def(bt_registrar *g, bt_plugin_kind kind, bt_scan_stage stage,
                              const void *def, size_t least, size_t host_size,
                              def_facts (*facts)(const void *def))
{
    bt_registrar_stage_report(g, stage);
    const def_head *h = def;
    bt_status st = bt_registrar_check(g, kind, def, h ? h->size : 0, least, h ? h->name : NULL);
    if (st == BT_OK) {
        def_facts f = facts(def);
        const char *problem = f.problem ? f.problem : bt_summary_problem(h->summary);
        if (!problem)
            problem = bt_doc_problem(f.doc);
        st = bt_registrar_stage(g, kind, h->name, h->summary, f.doc, problem, def, h->size,
                                host_size);
    }
    bt_registrar_stage_report(g, BT_STAGE_INIT);
    return st;
}

static def_facts cell_facts(const void *def)
{
    const bt_cell_def *d = def;
    return (def_facts){
        !d->params ? BT_MISSING(params) : !d->states ? BT_MISSING(states)
        : !d->step ? BT_MISSING(step) : NULL,
        BT_FIELD_IF_COVERED(d, bt_cell_def, doc)};
}

static def_facts policy_facts(const void *def)
{
    const bt_policy_def *d = def;
    return (def_facts){
        !d->create ? BT_MISSING(create) : !d->destroy ? BT_MISSING(destroy)
        : !d->begin ? BT_MISSING(begin) : !d->decide ? BT_MISSING(decide)
        : !d->max_reach ? BT_MISSING(max_reach) : !d->describe ? BT_MISSING(describe) : NULL,
        BT_FIELD_IF_COVERED(d, bt_policy_def, doc)};
}

/* A constant's value as a string literal, so the message follows the limit. */
#define BT_DIGITS_(x) #x
#define BT_DIGITS(x) BT_DIGITS_(x)

static def_facts optimizer_facts(const void *def)
{
    const bt_optimizer_def *d = def;
    return (def_facts){
        !d->create ? BT_MISSING(create) : !d->destroy ? BT_MISSING(destroy)
        : !d->step ? BT_MISSING(step) : !d->describe ? BT_MISSING(describe)
        : (d->n_state < 0 || d->n_state > BT_OPTIMIZER_MAX_STATE)
            ? "asks for a number of state buffers outside 0 to " BT_DIGITS(BT_OPTIMIZER_MAX_STATE)
        : NULL,
        BT_FIELD_IF_COVERED(d, bt_optimizer_def, doc)};
}

static def_facts estimator_facts(const void *def)
{
    const bt_estimator_def *d = def;
    return (def_facts){
        !d->create ? BT_MISSING(create) : !d->destroy ? BT_MISSING(destroy)
        : !d->buffers ? BT_MISSING(buffers) : !d->begin ? BT_MISSING(begin)
        : !d->step ? BT_MISSING(step) : !d->describe ? BT_MISSING(describe) : NULL,
        BT_FIELD_IF_COVERED(d, bt_estimator_def, doc)};
}

static bt_status bt_host_register_cell(bt_registrar *g, const bt_cell_def *d)
{
    return register_def(g, BT_KIND_CELL, BT_STAGE_CELL, d, BT_CELL_DEF_2_0, sizeof *d, cell_facts);
}

static bt_status bt_host_register_policy(bt_registrar *g, const bt_policy_def *d)
{
    return register_def(g, BT_KIND_POLICY, BT_STAGE_POLICY, d, BT_POLICY_DEF_2_0, sizeof *d,
                        policy_facts);
}

static bt_status bt_host_register_optimizer(bt_registrar *g, const bt_optimizer_def *d)
{
    return register_def(g, BT_KIND_OPTIMIZER, BT_STAGE_OPTIMIZER, d, BT_OPTIMIZER_DEF_2_0,
                        sizeof *d, optimizer_facts);
}

static bt_status bt_host_register_estimator(bt_registrar *g, const bt_estimator_def *d)
{
    return register_def(g, BT_KIND_ESTIMATOR, BT_STAGE_ESTIMATOR, d, BT_ESTIMATOR_DEF_2_3,
                        sizeof *d, estimator_facts);
}

/* ---- the host table ------------------------------------------------------------- */

static const bt_host bt_host_v2 = {
    .abi_major = BT_ABI_MAJOR,
    .abi_minor = BT_ABI_MINOR,
    .size = sizeof(bt_host),
    .register_cell = bt_host_register_cell,
    .register_policy = bt_host_register_policy,
    .register_optimizer = bt_host_register_optimizer,
    .parse_options = bt_parse_options,
    .matmul = bt_matmul,
    .matmul_t = bt_matmul_t,
    .add = bt_add,
    .sub = bt_sub,
    .mul = bt_mul,
    .neg = bt_neg,
    .scale = bt_scale,
    .exp = bt_exp,
    .log = bt_log,
    .tanh = bt_tanh,
    .sigmoid = bt_sigmoid,
    .relu = bt_relu,
    .sum = bt_sum,
    .mean = bt_mean,
    .concat = bt_concat,
    .slice = bt_slice,
    .embedding = bt_embedding,
    .softmax_xent = bt_softmax_xent,
    .mse = bt_mse,
    .detach = bt_detach,
    .grad_scale = bt_grad_scale,
    .graph_tensor = bt_graph_tensor,
    .graph_fail = bt_graph_fail,
    .rng_seed = bt_rng_seed,
    .rng_next = bt_rng_next,
    .rng_uniform = bt_rng_uniform,
    .rng_normal = bt_rng_normal,
    .rnn_tanh_step = bt_rnn_tanh_step,
    .jvp = bt_jvp,                     /* ABI 2.2 */
    .backward_from = bt_backward_from, /* ABI 2.2 */
    .register_estimator = bt_host_register_estimator, /* ABI 2.3 */
    .lstm_gates = bt_lstm_gates,   /* ABI 2.6 */
    .lstm_cell = bt_lstm_cell,     /* ABI 2.6 */
    .lstm_hidden = bt_lstm_hidden, /* ABI 2.6 */
    .gru_gates = bt_gru_gates,     /* ABI 2.7 */
    .gru_hidden = bt_gru_hidden,   /* ABI 2.7 */
    .gru_cho_gates = bt_gru_cho_gates,   /* ABI 2.8 */
    .gru_cho_reset = bt_gru_cho_reset,   /* ABI 2.8 */
    .gru_cho_hidden = bt_gru_cho_hidden, /* ABI 2.8 */
};

const bt_host *bt_host_table(void) { return &bt_host_v2; }

/* ---- the loader ----------------------------------------------------------------- */

static const bt_plugin_rec *bt_registry_plugin_named(const bt_registry *r, const char *name)
{
    for (const bt_plugin_rec *p = r->plugins; p; p = p->next)
        if (strcmp(p->name, name) == 0)
            return p;
    return NULL;
}

static void bt_registrar_drop(bt_registrar *g)
{
    for (int i = 0; i < g->n_staged; i++)
        bt_free(g->staged[i]);
    bt_free(g->staged);
    g->staged = NULL;
    g->n_staged = g->cap = 0;
}

/* Moves the staged items into the table. Everything that can fail is done first
 * or undone, so a failure leaves the registry as it was. */
static bt_status bt_registry_commit(bt_registry *r, bt_registrar *g, bt_plugin_rec *rec)
{
    int n = r->count + g->n_staged;
    bt_reg_item **sorted = bt_malloc(sizeof(*sorted) * (size_t)(n ? n : 1));
    if (!sorted)
        return BT_ERR_NOMEM;
    for (int i = 0; i < g->n_staged; i++) {
        bt_reg_item *it = g->staged[i];
        HASH_ADD(hh, r->table, key, sizeof(bt_reg_key), it);
        if (it->oom) {
            for (int j = 0; j < i; j++)
                HASH_DELETE(hh, r->table, g->staged[j]);
            bt_free(sorted);
            return BT_ERR_NOMEM;
        }
    }
    if (r->count)
        memcpy(sorted, r->sorted, sizeof(*sorted) * (size_t)r->count);
    memcpy(sorted + r->count, g->staged, sizeof(*sorted) * (size_t)g->n_staged);
    qsort(sorted, (size_t)n, sizeof(*sorted), bt_reg_item_cmp);
    bt_free(r->sorted);
    r->sorted = sorted;
    r->count = n;
    rec->next = r->plugins;
    r->plugins = rec;
    bt_free(g->staged); /* the items now belong to the table */
    g->staged = NULL;
    g->n_staged = g->cap = 0;
    return BT_OK;
}

static const char *bt_real_name(uint32_t size)
{
    return size == sizeof(float) ? "float" : size == sizeof(double) ? "double" : "unknown";
}

/* Why a file that is not there, not ELF, not for this machine or cut short
 * cannot be loaded, before dlopen (which dies of SIGBUS on a truncated file):
 * BT_OK when it looks like a whole shared object. */
static bt_status bt_registry_precheck(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            bt_errorf(err, errlen, "cannot open plugin %s: no such file", path);
        else
            bt_errorf(err, errlen, "cannot open plugin %s: %s", path, strerror(errno));
        return BT_ERR_IO;
    }
    if (S_ISDIR(st.st_mode)) {
        bt_errorf(err, errlen, "cannot open plugin %s: it is a folder (use a plugin folder "
                "option or bt_registry_load_dir for folders)", path);
        return BT_ERR_IO;
    }
    return bt_elf_check(path, err, errlen);
}

/* Step 1: dlopen takes the file (checked by bt_registry_precheck first). */
static bt_status bt_plugin_open(const bt_registry *r, const char *path, void **handle, char *err,
                                size_t errlen)
{
    bt_stage(r, BT_STAGE_DLOPEN);
    /* dlopen searches the library path for a name without '/': make it a path. */
    char *open_path = bt_malloc(strlen(path) + 3);
    if (!open_path)
        return bt_error(err, errlen, BT_ERR_NOMEM, "cannot load plugin %s: out of memory", path);
    sprintf(open_path, "%s%s", strchr(path, '/') ? "" : "./", path);
    dlerror();
    *handle = dlopen(open_path, RTLD_NOW | RTLD_LOCAL);
    bt_free(open_path);
    if (!*handle) {
        const char *why = dlerror();
        return bt_error(err, errlen, BT_ERR_PLUGIN, "cannot open plugin %s: %s", path,
                        why ? why : "dlopen failed");
    }
    return BT_OK;
}

/* Step 2: the entry symbol gives a descriptor. */
static bt_status bt_plugin_descriptor(const bt_registry *r, void *h, const char *path,
                                      const bt_plugin_desc **out, char *err, size_t errlen)
{
    bt_plugin_entry_fn entry;
    /* POSIX's sanctioned way to turn dlsym's void * into a function pointer. */
    *(void **)&entry = dlsym(h, BT_PLUGIN_ENTRY_SYMBOL);
    if (!entry)
        return bt_error(err, errlen, BT_ERR_PLUGIN,
                        "cannot load plugin %s: not a bptt plugin (it has no entry symbol '%s'; "
                        "declare it with BT_PLUGIN(name, version, init))", path,
                        BT_PLUGIN_ENTRY_SYMBOL);
    bt_stage(r, BT_STAGE_ENTRY);
    *out = entry();
    bt_stage(r, BT_STAGE_DESCRIPTOR);
    if (!*out)
        return bt_error(err, errlen, BT_ERR_PLUGIN,
                        "cannot load plugin %s: not a bptt plugin (%s returned NULL)", path,
                        BT_PLUGIN_ENTRY_SYMBOL);
    return BT_OK;
}

/* Step 3: the descriptor fits this bptt (ABI, precision) and is complete. */
static bt_status bt_plugin_check(const bt_plugin_desc *d, const char *path, char *err,
                                 size_t errlen)
{
    /* abi_major, abi_minor, real_size and name open the descriptor in every ABI.
     * The name is shown from a bounded copy until it is known to be valid. */
    char shown[48];
    const char *pname = d->name ? bt_name_shown(d->name, shown) : "?";
    if (d->abi_major != BT_ABI_MAJOR)
        return bt_error(err, errlen, BT_ERR_PLUGIN,
                        "plugin '%s' (%s) was built for bptt ABI %u.%u, this bptt has ABI %d.%d: "
                        "rebuild the plugin against this bptt", pname, path, d->abi_major,
                        d->abi_minor, BT_ABI_MAJOR, BT_ABI_MINOR);
    if (d->abi_minor > BT_ABI_MINOR)
        return bt_error(err, errlen, BT_ERR_PLUGIN,
                        "plugin '%s' (%s) was built for bptt ABI %u.%u, this bptt has ABI %d.%d: "
                        "the plugin needs a newer bptt (upgrade bptt, or rebuild the plugin "
                        "against this one)", pname, path, d->abi_major, d->abi_minor,
                        BT_ABI_MAJOR, BT_ABI_MINOR);
    if (d->real_size != sizeof(bt_real))
        return bt_error(err, errlen, BT_ERR_PLUGIN,
                        "plugin '%s' (%s) was built with %s reals (%u bytes), this bptt uses %s "
                        "(%zu bytes): rebuild the plugin against this bptt", pname, path,
                        bt_real_name(d->real_size), d->real_size, bt_real_name(sizeof(bt_real)),
                        sizeof(bt_real));
    if (!d->name || !bt_name_valid(d->name))
        return bt_error(err, errlen, BT_ERR_PLUGIN,
                        "plugin %s has an invalid name '%s' (%s): use 1 to %d letters, digits, "
                        "'_', '-' or '.', starting with a letter", path, pname,
                        d->name ? bt_name_problem(d->name) : "none given", BT_NAME_LEN - 1);
    size_t vl = bt_plugin_text_len(d->version, BT_VERSION_LEN);
    if (vl == BT_VERSION_LEN || !bt_plugin_text_printable(d->version, vl))
        return bt_error(err, errlen, BT_ERR_PLUGIN,
                        "plugin '%s' (%s) has a version string that %s: give a short plain one "
                        "such as \"1.0.2\"", pname, path,
                        vl == BT_VERSION_LEN ? "does not end within 63 bytes (is it "
                                               "NUL-terminated?)" : "holds control characters");
    if (!d->init)
        return bt_error(err, errlen, BT_ERR_PLUGIN, "plugin '%s' (%s) has no init function",
                        pname, path);
    return BT_OK;
}

/* Step 4: the record of a loaded plugin, with owned copies of its strings. */
static bt_plugin_rec *bt_plugin_rec_new(const bt_plugin_desc *d, void *h, const char *path)
{
    bt_scan_key key = {0};
    bt_scan_key_of(path, &key);
    const char *version = d->version ? d->version : "";
    size_t nl = strlen(d->name) + 1, vl = strlen(version) + 1, fl = strlen(path) + 1;
    bt_plugin_rec *rec = bt_calloc(1, sizeof *rec);
    char *strings = bt_malloc(nl + vl + fl);
    if (!rec || !strings) {
        bt_free(rec);
        bt_free(strings);
        return NULL;
    }
    rec->handle = h;
    rec->dev = key.dev;
    rec->ino = key.ino;
    rec->name = memcpy(strings, d->name, nl);
    rec->version = memcpy(strings + nl, version, vl);
    rec->file = memcpy(strings + nl + vl, path, fl);
    return rec;
}

/* Step 5: init registers into a staging area, committed only if all went well. */
static bt_status bt_plugin_init(bt_registry *r, const bt_plugin_desc *d, bt_plugin_rec *rec,
                                char *err, size_t errlen)
{
    bt_registrar g = {.reg = r, .plugin = rec};
    char perr[BT_ERRMSG_LEN] = "";
    bt_stage(r, BT_STAGE_INIT);
    int rc = d->init(bt_host_table(), &g, perr, sizeof perr);
    bt_stage(r, BT_STAGE_COMMIT);
    bt_plugin_text_clean(perr, sizeof perr); /* init may leave it unterminated */
    bt_status st = g.status;
    if (st != BT_OK) { /* the host's own message about a registration beats init's */
        bt_errorf(err, errlen, "%s", g.err);
    } else if (rc != 0) {
        st = bt_error(err, errlen, BT_ERR_PLUGIN, "plugin '%s' (%s): init failed: %s", rec->name,
                      rec->file, perr[0] ? perr : "(the plugin gave no message)");
    } else if ((st = bt_registry_commit(r, &g, rec)) != BT_OK) {
        bt_errorf(err, errlen, "cannot load plugin %s: out of memory", rec->file);
    }
    bt_registrar_drop(&g); /* after a commit, nothing is left to drop */
    return st;
}

/* ---- isolation: a scan process before the load ------------------------------------- */

static bt_status bt_registry_load_one(bt_registry *r, const char *path, bool skip_loaded,
                                      bool *skipped, char *err, size_t errlen);

/* What a scan process runs: the very load the host would do, into a registry of
 * its own. Nothing is freed: the process ends when this returns. */
static void bt_registry_scan_child(void *ctx, const char *path, int stage_fd)
{
    (void)ctx;
    bt_registry *r = bt_registry_new();
    if (!r)
        return;
    r->stage_fd = stage_fd;
    char err[BT_ERRMSG_LEN];
    bt_registry_load_one(r, path, false, NULL, err, sizeof err);
}

static bool bt_registry_has_file(const bt_registry *r, const bt_scan_key *k)
{
    for (const bt_plugin_rec *p = r->plugins; p; p = p->next)
        if (p->dev == k->dev && p->ino == k->ino)
            return true;
    return false;
}

static bool bt_registry_isolates(bt_registry *r)
{
    if (r->stage_fd >= 0 || !bt_scan_enabled())
        return false; /* a scan process itself, or isolation turned off */
    if (!r->cache)
        r->cache = bt_scan_cache_new();
    return r->cache != NULL;
}

/* Gives each of paths a verdict if it has none: files that are already loaded
 * here, known to the cache, or refused before dlopen need no scan; the others
 * are scanned together, in parallel. */
static void bt_registry_vet(bt_registry *r, const char *const *paths, int n)
{
    if (n <= 0 || !bt_registry_isolates(r))
        return;
    const char **todo = bt_malloc(sizeof(*todo) * (size_t)n);
    char **real = bt_calloc((size_t)n, sizeof(*real));
    bt_scan_key *keys = bt_malloc(sizeof(*keys) * (size_t)n);
    bt_verdict *v = bt_malloc(sizeof(*v) * (size_t)n);
    int m = 0;
    for (int i = 0; todo && real && keys && v && i < n; i++) {
        char msg[BT_ERRMSG_LEN];
        char *rp = realpath(paths[i], NULL);
        if (rp && bt_scan_key_of(rp, &keys[m]) && !bt_registry_has_file(r, &keys[m]) &&
            !bt_scan_cache_get(r->cache, rp, &keys[m]) &&
            bt_registry_precheck(paths[i], msg, sizeof msg) == BT_OK) {
            todo[m] = paths[i];
            real[m++] = rp;
        } else {
            free(rp);
        }
    }
    bt_scan_run(todo, m, bt_registry_scan_child, NULL, v);
    for (int i = 0; i < m; i++) {
        if (v[i].kind != BT_VERDICT_UNKNOWN) { /* no process: load in-process, unrecorded */
            bt_scan_cache_put(r->cache, real[i], &keys[i], &v[i]);
            r->scans++;
        }
        free(real[i]);
    }
    bt_free(todo);
    bt_free(real);
    bt_free(keys);
    bt_free(v);
}

/* BT_OK when path may be opened in this process: it registered cleanly in a
 * scan process (now or before), or it was not scanned. Otherwise how it
 * misbehaved there. */
static bt_status bt_registry_vetted(bt_registry *r, const char *path, char *err, size_t errlen)
{
    if (!bt_registry_isolates(r))
        return BT_OK;
    char *rp = realpath(path, NULL);
    bt_scan_key key;
    bool known = rp && bt_scan_key_of(rp, &key);
    const bt_verdict *v = known ? bt_scan_cache_get(r->cache, rp, &key) : NULL;
    if (known && !v) { /* not yet scanned (a single file, not a folder's) */
        bt_registry_vet(r, &path, 1);
        v = bt_scan_cache_get(r->cache, rp, &key);
    }
    free(rp);
    if (!v || v->kind == BT_VERDICT_CLEAN || v->kind == BT_VERDICT_UNKNOWN)
        return BT_OK;
    bt_verdict_message(v, path, err, errlen);
    return BT_ERR_PLUGIN;
}

/* Loads one file. With skip_loaded, a plugin whose name is already loaded is
 * closed again and *skipped is set; without it that is an error. */
static bt_status bt_registry_load_one(bt_registry *r, const char *path, bool skip_loaded,
                                      bool *skipped, char *err, size_t errlen)
{
    if (skipped)
        *skipped = false;
    if (!r || !path)
        return bt_error(err, errlen, BT_ERR_ARG, "bt_registry_load: no registry or no path");
    bt_status st = bt_registry_precheck(path, err, errlen);
    if (st == BT_OK)
        st = bt_registry_vetted(r, path, err, errlen);
    void *h = NULL;
    if (st == BT_OK)
        st = bt_plugin_open(r, path, &h, err, errlen);
    if (st != BT_OK)
        return st;
    const bt_plugin_desc *d = NULL;
    st = bt_plugin_descriptor(r, h, path, &d, err, errlen);
    if (st == BT_OK)
        st = bt_plugin_check(d, path, err, errlen);
    const bt_plugin_rec *prev = st == BT_OK ? bt_registry_plugin_named(r, d->name) : NULL;
    /* The very file already loaded (dlopen handed back its handle, e.g.
     * --plugin naming a shipped plugin), or a shadowed copy in a later folder. */
    if (prev && (prev->handle == h || skip_loaded)) {
        if (skipped)
            *skipped = true;
        dlclose(h);
        return BT_OK;
    }
    if (prev)
        st = bt_error(err, errlen, BT_ERR_PLUGIN, "plugin '%s' (%s) is already loaded from %s",
                      d->name, path, prev->file);
    bt_plugin_rec *rec = st == BT_OK ? bt_plugin_rec_new(d, h, path) : NULL;
    if (st == BT_OK && !rec)
        st = bt_error(err, errlen, BT_ERR_NOMEM, "cannot load plugin %s: out of memory", path);
    if (st == BT_OK)
        st = bt_plugin_init(r, d, rec, err, errlen);
    if (st != BT_OK) { /* the registry is as before: close what this call opened */
        if (rec)
            bt_free(rec->name);
        bt_free(rec);
        dlclose(h);
    }
    return st;
}

bt_status bt_registry_load(bt_registry *r, const char *path, char *err, size_t errlen)
{
    bt_status st = bt_registry_load_one(r, path, false, NULL, err, errlen);
    if (r)
        bt_scan_cache_save(r->cache);
    return st;
}

static int bt_strcmp_ptr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool bt_ends_with_so(const char *s)
{
    size_t n = strlen(s);
    return n > 3 && strcmp(s + n - 3, ".so") == 0;
}

/* Appends one message as a new line of err (dropped when err is full). */
static void bt_err_append(char *err, size_t errlen, const char *msg)
{
    if (!err || !errlen)
        return;
    size_t used = strnlen(err, errlen);
    if (used + 1 >= errlen)
        return;
    snprintf(err + used, errlen - used, "%s%s", used ? "\n" : "", msg);
}

/* Every *.so in dir, sorted by name. A file that fails does not stop the others:
 * the status is the first failure's, and err holds every failure's message, one
 * per line, in file order (truncated to errlen). */
static bt_status bt_registry_load_dir_in(bt_registry *r, const char *dir, char *err,
                                         size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!r || !dir) {
        bt_errorf(err, errlen, "bt_registry_load_dir: no registry or no folder");
        return BT_ERR_ARG;
    }
    DIR *dh = opendir(dir);
    if (!dh) {
        bt_errorf(err, errlen, "cannot open plugin folder %s: %s", dir, strerror(errno));
        return BT_ERR_IO;
    }
    char **names = NULL;
    int n = 0, cap = 0;
    bt_status first = BT_OK;
    struct dirent *de;
    while ((de = readdir(dh))) {
        if (de->d_name[0] == '.' || !bt_ends_with_so(de->d_name))
            continue;
        if (n == cap) {
            int nc = cap ? 2 * cap : 16;
            char **nn = bt_realloc(names, sizeof(*nn) * (size_t)nc);
            if (!nn) {
                first = BT_ERR_NOMEM;
                break;
            }
            names = nn;
            cap = nc;
        }
        size_t len = strlen(dir) + strlen(de->d_name) + 2;
        names[n] = bt_malloc(len);
        if (!names[n]) {
            first = BT_ERR_NOMEM;
            break;
        }
        snprintf(names[n], len, "%s/%s", dir, de->d_name);
        n++;
    }
    closedir(dh);
    if (first != BT_OK) {
        bt_errorf(err, errlen, "cannot list plugin folder %s: out of memory", dir);
    } else {
        qsort(names, (size_t)n, sizeof(*names), bt_strcmp_ptr);
        bt_registry_vet(r, (const char *const *)names, n); /* unknown files, in parallel */
        for (int i = 0; i < n; i++) {
            char msg[BT_ERRMSG_LEN];
            bool skipped;
            bt_status st = bt_registry_load_one(r, names[i], true, &skipped, msg, sizeof msg);
            if (st != BT_OK) {
                bt_err_append(err, errlen, msg);
                if (first == BT_OK)
                    first = st;
            }
        }
    }
    for (int i = 0; i < n; i++)
        bt_free(names[i]);
    bt_free(names);
    return first;
}

bt_status bt_registry_load_dir(bt_registry *r, const char *dir, char *err, size_t errlen)
{
    bt_status st = bt_registry_load_dir_in(r, dir, err, errlen);
    if (r)
        bt_scan_cache_save(r->cache);
    return st;
}

/* One folder of the default search; a folder that does not exist is skipped. */
static bt_status bt_registry_load_default_dir(bt_registry *r, const char *dir, bt_status first,
                                              char *err, size_t errlen)
{
    struct stat st;
    if (!dir[0] || stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return first;
    char msg[BT_ERRMSG_LEN * 2];
    bt_status s = bt_registry_load_dir_in(r, dir, msg, sizeof msg);
    if (s != BT_OK) {
        bt_err_append(err, errlen, msg);
        if (first == BT_OK)
            first = s;
    }
    return first;
}

bt_status bt_registry_load_default(bt_registry *r, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!r) {
        bt_errorf(err, errlen, "bt_registry_load_default: no registry");
        return BT_ERR_ARG;
    }
    bt_status first = BT_OK;
    const char *path = getenv("BPTT_PLUGIN_PATH");
    char *cwd = NULL;
    while (path && *path) {
        const char *colon = strchr(path, ':');
        size_t len = colon ? (size_t)(colon - path) : strlen(path);
        /* A relative entry is resolved once, here, against the folder bptt started
         * in (an empty one is skipped: unlike PATH, it does not mean "."). */
        if (len && path[0] != '/' && !cwd)
            cwd = getcwd(NULL, 0);
        const char *base = len && path[0] != '/' ? (cwd ? cwd : ".") : NULL;
        size_t blen = base ? strlen(base) + 1 : 0;
        char *dir = bt_malloc(blen + len + 1);
        if (!dir) {
            free(cwd);
            bt_errorf(err, errlen, "cannot read BPTT_PLUGIN_PATH: out of memory");
            return BT_ERR_NOMEM;
        }
        if (base)
            snprintf(dir, blen + 1, "%s/", base);
        memcpy(dir + blen, path, len);
        dir[blen + len] = '\0';
        first = bt_registry_load_default_dir(r, dir, first, err, errlen);
        bt_free(dir);
        path = colon ? colon + 1 : NULL;
    }
    free(cwd);
    first = bt_registry_load_default_dir(r, BT_INSTALLED_PLUGIN_DIR, first, err, errlen);
    bt_scan_cache_save(r->cache);
    return first;
}
