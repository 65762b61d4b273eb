/* plugin_scan.h: a plugin's registration tried in a child process before the
 * host runs it, as GStreamer's plugin scanner does, so that a plugin that
 * crashes, hangs or exits while registering costs a message, not the host;
 * and the verdict, cached by file, so a known plugin costs no process at all.
 * Internal to the loader (framework/registry.c); not installed. */
#ifndef BPTT_PLUGIN_SCAN_H
#define BPTT_PLUGIN_SCAN_H

#include <stdint.h>

#include "bptt.h"

/* Where the scan process was when it ended: the loader reports each step. */
typedef enum {
    BT_STAGE_START,      /* before the plugin was opened */
    BT_STAGE_DLOPEN,     /* dlopen, which runs the plugin's constructors */
    BT_STAGE_ENTRY,      /* calling bt_plugin_entry */
    BT_STAGE_DESCRIPTOR, /* reading the descriptor it returned */
    BT_STAGE_INIT,       /* the plugin's init */
    BT_STAGE_CELL,       /* the host reading a cell definition the plugin registered */
    BT_STAGE_POLICY,
    BT_STAGE_OPTIMIZER,
    BT_STAGE_ESTIMATOR,  /* ABI 2.3 */
    BT_STAGE_COMMIT,     /* init returned; the host files what it registered */
    BT_STAGE_COUNT
} bt_scan_stage;

typedef enum {
    BT_VERDICT_UNKNOWN, /* not scanned (no process could be made): load it in-process */
    BT_VERDICT_CLEAN,   /* registration ran to its end, refused or not: safe to repeat here */
    BT_VERDICT_CRASHED, /* killed by signal `code` */
    BT_VERDICT_TIMEOUT, /* still running after `code` milliseconds, then killed */
    BT_VERDICT_EXITED,  /* ended the process itself, exit status `code` (exit() in init) */
    BT_VERDICT_STOPPED, /* ended by signal `code` that a user sends (SIGINT, SIGTERM, ...):
                           refused for now, never written to the cache file */
} bt_verdict_kind;

typedef struct bt_verdict {
    bt_verdict_kind kind;
    int code;
    bt_scan_stage stage;
} bt_verdict;

/* What identifies a file's contents without reading it. */
typedef struct bt_scan_key {
    int64_t dev, ino, size, mtime_ns, ctime_ns;
} bt_scan_key;

/* The key of the file at path (following symbolic links). */
bool bt_scan_key_of(const char *path, bt_scan_key *key);

/* ---- the cache: verdicts by absolute path and key --------------------------------- */

typedef struct bt_scan_cache bt_scan_cache;
/* The file is $BPTT_PLUGIN_CACHE (empty: no file), else
 * $XDG_CACHE_HOME/bptt/plugins-abiM.m-REAL.cache, else ~/.cache/bptt/...;
 * it is read on the first lookup. Without a file, verdicts last as long as the cache. */
bt_scan_cache *bt_scan_cache_new(void);
void bt_scan_cache_free(bt_scan_cache *c);
const bt_verdict *bt_scan_cache_get(bt_scan_cache *c, const char *real, const bt_scan_key *key);
void bt_scan_cache_put(bt_scan_cache *c, const char *real, const bt_scan_key *key,
                       const bt_verdict *v);
/* Writes the file (atomically, by rename) when a verdict was added; a file that
 * cannot be written is left alone: the next run scans again. */
void bt_scan_cache_save(bt_scan_cache *c);

/* ---- scanning ------------------------------------------------------------------------ */

/* What a scan process runs: registers the plugin at path into a fresh registry,
 * reporting each stage to stage_fd with bt_scan_report. Its result does not
 * matter: returning at all is the clean verdict. */
typedef void (*bt_scan_child_fn)(void *ctx, const char *path, int stage_fd);
void bt_scan_report(int stage_fd, bt_scan_stage stage);

/* Scans n files, each in its own child process (up to 16 at once), each within
 * the time-out; out[i] gets the verdict on paths[i]. */
void bt_scan_run(const char *const *paths, int n, bt_scan_child_fn fn, void *ctx,
                 bt_verdict *out);
/* $BPTT_PLUGIN_SCAN_TIMEOUT in seconds (0 < s <= 3600), else 10. */
double bt_scan_timeout(void);
/* False when BPTT_PLUGIN_SCAN=0: plugins register in-process (for a debugger). */
bool bt_scan_enabled(void);

/* "cannot load plugin PATH: ..." for a verdict other than CLEAN or UNKNOWN. */
void bt_verdict_message(const bt_verdict *v, const char *path, char *err, size_t errlen);

#endif
