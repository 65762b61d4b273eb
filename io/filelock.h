/* filelock.h: who is writing a file. A writer holds an advisory lock on
 * NAME.lock, next to its target NAME, for as long as it writes it (a whole
 * training run for --save), so a second writer is refused with a message
 * naming the first (pid and command) instead of silently replacing its work.
 *
 * The lock is flock(2) on the lock file, which holds the owner's pid and
 * command line for messages. The kernel drops a flock when its holder dies
 * (kill -9 included), so the file left behind by a killed run is free and the
 * next writer takes it over. A lock is taken once per process and target and
 * counted: the run's lock covers each save it makes. Holding it also proves
 * that every NAME.tmp.* of the target is a dead writer's, so the first taker
 * removes them (atomic.c). */
#ifndef BPTT_FILELOCK_H
#define BPTT_FILELOCK_H

#include <stdbool.h>
#include <stddef.h>

#include "bptt.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bt_file_lock bt_file_lock;

/* Locks target (which need not exist) for this process. BT_OK when it was
 * free or this process already holds it; BT_ERR_IO naming the process that
 * holds it ("m.st is being written by another process: pid 4242, bptt train
 * ..."), or why the lock file cannot be made. *out is released with
 * bt_file_lock_release. */
BT_API bt_status bt_file_lock_acquire(const char *target, bt_file_lock **out, char *err,
                                      size_t errlen);
/* Drops one hold; the last one removes the lock file. NULL is fine. */
BT_API void bt_file_lock_release(bt_file_lock *lock);
/* The lock file of target: target + ".lock", bt_malloc'd (NULL when out of memory). */
BT_API char *bt_file_lock_path(const char *target);

#ifdef __cplusplus
}
#endif
#endif
