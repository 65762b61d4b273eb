/* registry.h: the host side of plugins. The loader opens shared objects,
 * checks their ABI, runs their init and keeps what they register in a table
 * keyed by kind and name. Also the optimizer runner and gradient clipping,
 * which are the host's half of an optimizer step. */
#ifndef BPTT_REGISTRY_H
#define BPTT_REGISTRY_H

#include "bptt_plugin.h"
#include "options.h" /* bt_parse_options, bt_split_spec: the spec grammar */

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { BT_KIND_CELL, BT_KIND_POLICY, BT_KIND_OPTIMIZER, BT_KIND_ESTIMATOR } bt_plugin_kind;
/* "cell", "policy", "optimizer", "estimator" */
BT_API const char *bt_plugin_kind_name(bt_plugin_kind k);

typedef struct bt_registry bt_registry;

typedef struct bt_registry_entry {
    bt_plugin_kind kind;
    const char *name;           /* cell/policy/optimizer/estimator name */
    const char *plugin;         /* plugin name */
    const char *plugin_version;
    const char *file;           /* path of the shared object */
    const char *summary;
    const void *def;            /* bt_cell_def / bt_policy_def / bt_optimizer_def /
                                   bt_estimator_def */
    const char *doc;            /* the def's multi-line description; NULL when the plugin
                                   gives none (or predates ABI 2.1, which added it) */
} bt_registry_entry;

BT_API bt_registry *bt_registry_new(void);
BT_API void bt_registry_free(bt_registry *r); /* closes every handle */

/* Loads one shared object. On failure the registry is exactly as before, the
 * handle is closed, and err names the file and the cause. A file the scan
 * cache does not know registers first in a child process (plugin_scan.h);
 * one that crashed, hung or exited there is refused without being opened. */
BT_API bt_status bt_registry_load(bt_registry *r, const char *path, char *err, size_t errlen);
/* Loads every *.so in dir (sorted by name). Files whose plugin name is already
 * loaded are skipped (an earlier folder shadows a later one). Files the scan
 * cache does not know are scanned together, in parallel. */
BT_API bt_status bt_registry_load_dir(bt_registry *r, const char *dir, char *err, size_t errlen);
/* The folders of BPTT_PLUGIN_PATH (':'-separated; a relative entry is resolved
 * against the current folder, once, here; empty ones are skipped), then the
 * build tree's plugin folder, then the installed one; folders that do not
 * exist are skipped. */
BT_API bt_status bt_registry_load_default(bt_registry *r, char *err, size_t errlen);
/* The host table handed to plugins (also usable by in-process code). */
BT_API const bt_host *bt_host_table(void);

BT_API int bt_registry_count(const bt_registry *r);
/* sorted by kind, name */
BT_API const bt_registry_entry *bt_registry_at(const bt_registry *r, int i);
BT_API const bt_registry_entry *bt_registry_find(const bt_registry *r, bt_plugin_kind k,
                                                const char *name);
BT_API const bt_cell_def *bt_registry_cell(const bt_registry *r, const char *name);
BT_API const bt_policy_def *bt_registry_policy(const bt_registry *r, const char *name);
BT_API const bt_optimizer_def *bt_registry_optimizer(const bt_registry *r, const char *name);
BT_API const bt_estimator_def *bt_registry_estimator(const bt_registry *r, const char *name);
/* "adam, momentum, sgd": the names registered for kind, sorted, into buf (cut
 * to len), or "none: no optimizer plugin is loaded"; returns buf. For messages
 * that list what the user could have typed. */
BT_API const char *bt_registry_names(const bt_registry *r, bt_plugin_kind kind, char *buf,
                                     size_t len);

/* How many plugin files this registry registered in a scan process (a fork)
 * because the scan cache had no verdict for them; 0 when every file was known. */
BT_API int bt_registry_scans(const bt_registry *r);

/* ---- strings from plugins (plugin_text.c) ----------------------------------------- */

/* strnlen that accepts NULL: a result equal to bound means "no NUL within bound". */
BT_API size_t bt_plugin_text_len(const char *s, size_t bound);
/* No control bytes (< 0x20, 0x7f) among the n bytes of s. */
BT_API bool bt_plugin_text_printable(const char *s, size_t n);
/* For a buffer a plugin filled: terminates it at len - 1 and turns control
 * bytes into '?'; returns buf. */
BT_API char *bt_plugin_text_clean(char *buf, size_t len);
/* Copies at most dstlen - 1 bytes of src (which need not end within them),
 * terminated and cleaned; NULL src gives "". Returns dst. */
BT_API char *bt_plugin_text_copy(char *dst, size_t dstlen, const char *src);

/* ---- calls into a policy, with their strings bounded ------------------------------- */

/* def->create with err terminated and cleaned: BT_OK, or BT_ERR_ARG with the
 * policy's message (or "policy NAME: invalid options '...'" when it gave none). */
BT_API bt_status bt_policy_create(const bt_policy_def *def, const char *options, void **state,
                                  char *err, size_t errlen);
/* def->describe into buf, always terminated within len and free of control
 * bytes, whatever the plugin wrote or returned; NULL (buf "") when the policy
 * returned NULL. */
BT_API const char *bt_policy_describe(const bt_policy_def *def, void *state, char *buf,
                                      size_t len);

/* ---- optimizer runner ----------------------------------------------------------- */

/* An optimizer bound to a parameter block; its state buffers are host-owned,
 * n_state blocks laid out like the parameters, so checkpoints can save them. */
typedef struct bt_optimizer bt_optimizer;
/* spec: "adam:lr=0.002,beta2=0.98" */
BT_API bt_status bt_optimizer_new(const bt_registry *r, const char *spec, bt_params *p,
                                  bt_optimizer **out, char *err, size_t errlen);
BT_API void bt_optimizer_free(bt_optimizer *o);
/* One update from the gradients in p (does not zero them). */
BT_API void bt_optimizer_step(bt_optimizer *o);
BT_API int bt_optimizer_state_count(const bt_optimizer *o);
BT_API bt_real *bt_optimizer_state(bt_optimizer *o, int i); /* [bt_params_total] */
BT_API uint64_t bt_optimizer_steps(const bt_optimizer *o);
BT_API void bt_optimizer_set_steps(bt_optimizer *o, uint64_t steps);
/* The optimizer's describe, terminated within len and free of control bytes. */
BT_API const char *bt_optimizer_describe(const bt_optimizer *o, char *buf, size_t len);
BT_API const char *bt_optimizer_name(const bt_optimizer *o);
BT_API bt_params *bt_optimizer_params(const bt_optimizer *o); /* the block it updates */

/* ---- clipping ------------------------------------------------------------------- */

/* Global-norm clipping: if ||g|| > theta, g *= theta / ||g||. Writes the norm
 * before clipping to *norm. A non-finite norm leaves the gradients untouched
 * and returns BT_ERR_NUMERIC: the caller skips the step and counts it.
 * theta <= 0 disables clipping (the norm is still checked). */
BT_API bt_status bt_clip_grad_norm(bt_params *p, double theta, double *norm);

/* A training update: clipping as bt_clip_grad_norm (theta), then the step
 * unless the norm is not finite (BT_ERR_NUMERIC: the caller counts it), then
 * the gradients zeroed. threads > 1 splits the work over that many OpenMP
 * threads (the step only for a BT_OPTIMIZER_ELEMENTWISE optimizer); the result
 * is the same for every thread count, bit for bit. */
BT_API bt_status bt_optimizer_update(bt_optimizer *o, double theta, int threads, double *norm);

#ifdef __cplusplus
}
#endif
#endif
