/* filelock.c: the advisory lock a writer holds on NAME.lock (filelock.h).
 *
 * Taking it: open NAME.lock (created if missing, never through a symlink),
 * flock it without waiting, then check that the path still names the file we
 * locked: a holder that finishes removes the lock file while it still holds
 * it, so a taker that opened the old file before the removal must start
 * again with the new one. Flock locks belong to the open file, not to the
 * process, so this process remembers the locks it holds (a list, counted)
 * and a second hold on the same target is a count, not a second flock that
 * would conflict with the first. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomic.h"
#include "filelock.h"

struct bt_file_lock {
    int fd;
    int holds;
    pid_t pid;  /* the process that took it: a child after fork holds none of them */
    dev_t dev;
    ino_t ino;
    char *path; /* the lock file */
    bt_file_lock *next;
};

static pthread_mutex_t held_mutex = PTHREAD_MUTEX_INITIALIZER;
static bt_file_lock *held; /* the locks this process holds */

char *bt_file_lock_path(const char *target)
{
    size_t n = strlen(target);
    char *p = bt_malloc(n + 6);
    if (p) {
        memcpy(p, target, n);
        memcpy(p + n, ".lock", 6);
    }
    return p;
}

/* "pid 4242, bptt train --data a.txt --save m.st": who holds the lock file at
 * fd, from the pid it wrote and that process's command line (Linux /proc),
 * or the command the holder wrote itself. */
static void describe_holder(int fd, char *buf, size_t len)
{
    char text[512] = "";
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    text[n > 0 ? n : 0] = '\0';
    long pid = 0;
    int used = 0;
    if (sscanf(text, "%ld %n", &pid, &used) < 1 || pid <= 0) {
        snprintf(buf, len, "a process that has not written its pid yet");
        return;
    }
    char proc[64], cmd[400] = "";
    snprintf(proc, sizeof proc, "/proc/%ld/cmdline", pid);
    int cf = open(proc, O_RDONLY | O_CLOEXEC);
    ssize_t c = cf >= 0 ? read(cf, cmd, sizeof cmd - 1) : -1;
    if (cf >= 0)
        close(cf);
    if (c > 0) {
        for (ssize_t i = 0; i < c - 1; i++) /* arguments are separated by NULs */
            if (cmd[i] == '\0')
                cmd[i] = ' ';
        cmd[c] = '\0';
    } else
        snprintf(cmd, sizeof cmd, "%s", text + used);
    cmd[strcspn(cmd, "\n")] = '\0';
    snprintf(buf, len, "pid %ld%s%s", pid, cmd[0] ? ", " : "", cmd);
}

/* "4242 bptt train ...\n" into the lock file: for the message a second writer gets. */
static void write_owner(int fd)
{
    char line[512], cmd[400] = "";
    int cf = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    ssize_t c = cf >= 0 ? read(cf, cmd, sizeof cmd - 1) : -1;
    if (cf >= 0)
        close(cf);
    for (ssize_t i = 0; i < c - 1; i++)
        if (cmd[i] == '\0')
            cmd[i] = ' ';
    cmd[c > 0 ? c : 0] = '\0';
    int n = snprintf(line, sizeof line, "%ld %s\n", (long)getpid(), cmd);
    if (ftruncate(fd, 0) == 0 && pwrite(fd, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1, 0) < 0)
        (void)0; /* the pid is for messages only: a lock without it still locks */
}

/* One attempt: 1 locked into *fd, 0 the file changed under us (try again),
 * -1 failed with the message in err. */
static int try_lock(const char *path, const char *target, int *fd, char *err, size_t errlen)
{
    *fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (*fd < 0) {
        bt_error(err, errlen, BT_ERR_IO, "%s: cannot create its lock file %s: %s", target, path,
                 errno == ELOOP ? "it is a symbolic link" : strerror(errno));
        return -1;
    }
    struct stat a, b;
    while (flock(*fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EINTR)
            continue;
        char who[512];
        int e = errno;
        if (e == EWOULDBLOCK)
            describe_holder(*fd, who, sizeof who);
        close(*fd);
        if (e == EWOULDBLOCK)
            bt_error(err, errlen, BT_ERR_IO, "%s is being written by another process (%s): wait "
                     "for it to finish, or write to another file", target, who);
        else
            bt_error(err, errlen, BT_ERR_IO, "%s: cannot lock %s: %s", target, path, strerror(e));
        return -1;
    }
    if (fstat(*fd, &a) == 0 && lstat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
        return 1;
    close(*fd); /* released and removed by its holder while we waited: the next one */
    return 0;
}

/* This process's lock on the lock file path, or NULL. Called with held_mutex. */
static bt_file_lock *find_held(const char *path)
{
    struct stat sb;
    if (lstat(path, &sb) != 0)
        return NULL;
    for (bt_file_lock *l = held; l; l = l->next)
        if (l->dev == sb.st_dev && l->ino == sb.st_ino && l->pid == getpid())
            return l;
    return NULL;
}

/* A new lock on path for target, into the list; NULL with the message in err. */
static bt_file_lock *lock_new(char *path, const char *target, char *err, size_t errlen)
{
    int fd = -1, got = 0;
    for (int attempt = 0; attempt < 100 && got == 0; attempt++)
        got = try_lock(path, target, &fd, err, errlen);
    if (got == 0)
        bt_error(err, errlen, BT_ERR_IO, "%s: its lock file %s keeps changing", target, path);
    bt_file_lock *l = got > 0 ? bt_calloc(1, sizeof *l) : NULL;
    if (got > 0 && !l) {
        close(fd);
        bt_error(err, errlen, BT_ERR_NOMEM, "%s: out of memory", target);
    }
    if (!l)
        return NULL;
    struct stat sb;
    if (fstat(fd, &sb) == 0)
        l->dev = sb.st_dev, l->ino = sb.st_ino;
    l->fd = fd;
    l->holds = 1;
    l->pid = getpid();
    l->path = path;
    write_owner(fd);
    l->next = held;
    held = l;
    return l;
}

bt_status bt_file_lock_acquire(const char *target, bt_file_lock **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!target || !*target)
        return bt_error(err, errlen, BT_ERR_ARG, "bt_file_lock_acquire: no file name");
    char *path = bt_file_lock_path(target);
    if (!path)
        return bt_error(err, errlen, BT_ERR_NOMEM, "%s: out of memory", target);
    pthread_mutex_lock(&held_mutex);
    bt_file_lock *l = find_held(path);
    bool fresh = !l;
    if (l) {
        l->holds++;
        bt_free(path);
    } else if (!(l = lock_new(path, target, err, errlen)))
        bt_free(path);
    pthread_mutex_unlock(&held_mutex);
    if (!l)
        return BT_ERR_IO;
    /* Every temporary of target now belongs to a writer that died. */
    if (fresh)
        bt_atomic_clean_stale(target);
    *out = l;
    return BT_OK;
}

void bt_file_lock_release(bt_file_lock *lock)
{
    if (!lock)
        return;
    pthread_mutex_lock(&held_mutex);
    if (--lock->holds > 0) {
        pthread_mutex_unlock(&held_mutex);
        return;
    }
    for (bt_file_lock **p = &held; *p; p = &(*p)->next)
        if (*p == lock) {
            *p = lock->next;
            break;
        }
    pthread_mutex_unlock(&held_mutex);
    /* Removed while still locked: a taker that opened it meanwhile sees the
     * path gone (or a new file) after its flock succeeds, and starts again. */
    unlink(lock->path);
    close(lock->fd);
    bt_free(lock->path);
    bt_free(lock);
}
