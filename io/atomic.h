/* atomic.h: the one way bptt writes a file. Bytes go to a temporary file in
 * the target's folder, which is fsync'ed and renamed over the target, then
 * the folder is fsync'ed: a reader, or a crash, sees the old file or the new
 * one, never a mix. A file being replaced keeps its permissions; a new one
 * gets 0666 & ~umask, as fopen would give it. */
#ifndef BPTT_ATOMIC_H
#define BPTT_ATOMIC_H

#include <stdbool.h>
#include <stddef.h>

#include "bptt.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bt_atomic_file bt_atomic_file;

/* Creates the temporary file (path.tmp.XXXXXX). BT_ERR_IO naming path and the
 * cause when the folder is missing or not writable. */
BT_API bt_status bt_atomic_open(const char *path, bt_atomic_file **out, char *err, size_t errlen);
/* Appends n bytes. False once a write has failed; bt_atomic_commit then
 * reports why, and the target is untouched. */
BT_API bool bt_atomic_write(bt_atomic_file *f, const void *data, size_t n);
/* fsync, rename over the target, fsync the folder; frees f either way, and on
 * failure removes the temporary file and leaves the target as it was. */
BT_API bt_status bt_atomic_commit(bt_atomic_file *f, char *err, size_t errlen);
/* Removes the temporary file and frees f (NULL is fine). */
BT_API void bt_atomic_abort(bt_atomic_file *f);

/* The whole file at once: open, write, commit. */
BT_API bt_status bt_atomic_write_file(const char *path, const void *data, size_t n, char *err,
                                      size_t errlen);

/* Fails now, not after an hour of training, when path cannot be written the
 * way bt_atomic_open writes it: a folder, a missing folder, no permission to
 * create files there. Leaves nothing behind. */
BT_API bt_status bt_atomic_check_writable(const char *path, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
