/* paths.h: the files one command reads and writes, claimed together before
 * anything is read or written: no two of them may be the same file (a
 * checkpoint replacing the text it trains on, a chart replacing the
 * checkpoint), every output must be writable the way atomic.h writes it, and
 * every output stays locked (filelock.h) until the command releases it.
 *
 * "The same file" is decided by what the names reach, not how they are
 * spelt: existing files by device and inode (hard links and symbolic links
 * included); a file not there yet by its folder's device and inode and its
 * own name, so "./m.st", "dir/../m.st" and "linked-dir/m.st" all match. */
#ifndef BPTT_PATHS_H
#define BPTT_PATHS_H

#include <stdbool.h>
#include <stddef.h>

#include "bptt.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One file a command uses. */
typedef struct bt_file_use {
    const char *option; /* how messages name it: "--save" */
    const char *path;   /* NULL: not given (skipped) */
    bool output;        /* written: checked writable, then locked */
    int share;          /* 0, or a group: uses of one group may be one file (--resume and --save) */
} bt_file_use;

typedef struct bt_files bt_files;

/* Checks uses[n] and locks the outputs. BT_ERR_ARG when two uses (outside
 * one share group) are the same file, naming both options and paths;
 * BT_ERR_IO when an output cannot be written (bt_atomic_check_writable) or
 * another process is writing it (bt_file_lock_acquire). Nothing is locked
 * on failure. *out is NULL when nothing needed a lock. */
BT_API bt_status bt_files_claim(const bt_file_use *uses, int n, bt_files **out, char *err,
                                size_t errlen);
/* Releases the locks of a claim (NULL is fine). */
BT_API void bt_files_release(bt_files *files);

/* Do a and b name the same file (existing or not), by the rules above? */
BT_API bool bt_path_same(const char *a, const char *b);

#ifdef __cplusplus
}
#endif
#endif
