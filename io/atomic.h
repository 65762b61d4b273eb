/* atomic.h: the one way bptt writes a file. Bytes go to a temporary file in
 * the target's folder, which is fsync'ed and renamed over the target, then
 * the folder is fsync'ed: a reader, or a crash, sees the old file or the new
 * one, never a mix. A file being replaced keeps its permissions; a new one
 * gets 0666 & ~umask, as fopen would give it.
 *
 * Only a regular file is ever replaced: an existing target that is a folder,
 * a symbolic link, a FIFO, a device or a socket is refused (a rename would
 * replace /dev/null itself, or the link rather than what it points to). A
 * write holds the target's lock (filelock.h) from open to commit, so two
 * processes never write one target at once; the temporaries a killed writer
 * left (NAME.tmp.PID.XXXXXX) are removed when the lock is next taken. */
#ifndef BPTT_ATOMIC_H
#define BPTT_ATOMIC_H

#include <stdbool.h>
#include <stddef.h>

#include "bptt.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bt_atomic_file bt_atomic_file;

/* Creates the temporary file (path.tmp.PID.XXXXXX). BT_ERR_IO naming path and the
 * cause when the folder is missing or not writable, when path exists and is
 * not a regular file, or when another process holds its lock. */
BT_API bt_status bt_atomic_open(const char *path, bt_atomic_file **out, char *err, size_t errlen);
/* Appends n bytes. False once a write has failed; bt_atomic_commit then
 * reports why, and the target is untouched. */
BT_API bool bt_atomic_write(bt_atomic_file *f, const void *data, size_t n);
/* fsync, rename over the target, fsync the folder; frees f either way, and on
 * failure (a target that became something other than a regular file
 * included) removes the temporary file and leaves the target as it was. */
BT_API bt_status bt_atomic_commit(bt_atomic_file *f, char *err, size_t errlen);
/* Removes the temporary file and frees f (NULL is fine). */
BT_API void bt_atomic_abort(bt_atomic_file *f);

/* The whole file at once: open, write, commit. */
BT_API bt_status bt_atomic_write_file(const char *path, const void *data, size_t n, char *err,
                                      size_t errlen);

/* Fails now, not after an hour of training, when path cannot be written the
 * way bt_atomic_open writes it: not a regular file, a missing folder, no
 * permission to create files there. Leaves nothing behind. */
BT_API bt_status bt_atomic_check_writable(const char *path, char *err, size_t errlen);

/* Removes the temporaries of path that writers which died left behind:
 * regular files of this user named exactly path.tmp.PID.XXXXXX (six of
 * [A-Za-z0-9]) whose PID is not running. Only for a caller holding path's
 * lock; bt_file_lock_acquire calls it when it takes a lock. Returns how many. */
BT_API int bt_atomic_clean_stale(const char *path);

#ifdef __cplusplus
}
#endif
#endif
