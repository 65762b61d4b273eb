/* atomic.c: atomic file replacement (atomic.h), the only place bptt creates,
 * renames and syncs files; checkpoints, grad files, metrics and charts all
 * come through here. Each write holds the target's lock (filelock.h) from
 * the temporary file's creation to the rename, and never replaces anything
 * but a regular file. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "atomic.h"
#include "filelock.h"

struct bt_atomic_file {
    int fd;
    int error;        /* errno of the first failed write, 0 if none */
    char *path, *tmp; /* bt_malloc'd */
    bt_file_lock *lock;
};

/* The six characters that end a temporary's name, NAME.tmp.PID.XXXXXX. */
static const char digits[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
#define TMP_SUFFIX_LEN 6

/* Creates path.tmp.PID.XXXXXX with O_EXCL into tmp[tmplen]. Not mkstemp:
 * mkstemp forces mode 0600, while a checkpoint or chart should get the usual
 * 0666 & ~umask, like fopen would give. The pid tells a dead writer's
 * temporary from a live one's (bt_atomic_clean_stale). */
static int open_temp(const char *path, char *tmp, size_t tmplen)
{
    static atomic_uint counter;
    for (int attempt = 0; attempt < 100; attempt++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ULL ^ (uint64_t)getpid() << 32 ^
                     atomic_fetch_add(&counter, 1) ^ (uint64_t)ts.tv_sec;
        x ^= x >> 31;
        x *= 0xBF58476D1CE4E5B9ULL;
        x ^= x >> 29;
        char suffix[TMP_SUFFIX_LEN + 1];
        for (int i = 0; i < TMP_SUFFIX_LEN; i++, x /= 62)
            suffix[i] = digits[x % 62];
        suffix[TMP_SUFFIX_LEN] = '\0';
        if ((size_t)snprintf(tmp, tmplen, "%s.tmp.%ld.%s", path, (long)getpid(), suffix) >= tmplen) {
            errno = ENAMETOOLONG;
            return -1;
        }
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0 || errno != EEXIST)
            return fd;
    }
    return -1;
}

/* The folder holding path ("." or "/" included), bt_malloc'd; NULL when out of memory. */
static char *folder_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t n = !slash ? 1 : slash == path ? 1 : (size_t)(slash - path);
    char *dir = bt_malloc(n + 1);
    if (dir) {
        memcpy(dir, !slash ? "." : path, n);
        dir[n] = '\0';
    }
    return dir;
}

/* What path is when it exists and is not a regular file ("a FIFO"), or NULL
 * (a regular file, or nothing there). Not followed: a symbolic link is one. */
static const char *not_regular(const char *path)
{
    struct stat sb;
    if (lstat(path, &sb) != 0 || S_ISREG(sb.st_mode))
        return NULL;
    return S_ISDIR(sb.st_mode)    ? "a folder"
           : S_ISLNK(sb.st_mode)  ? "a symbolic link"
           : S_ISFIFO(sb.st_mode) ? "a FIFO (named pipe)"
           : S_ISCHR(sb.st_mode)  ? "a character device"
           : S_ISBLK(sb.st_mode)  ? "a block device"
           : S_ISSOCK(sb.st_mode) ? "a socket"
                                  : "not a regular file";
}

static bt_status refuse_target(const char *path, const char *kind, char *err, size_t errlen)
{
    return bt_error(err, errlen, BT_ERR_IO, "refusing to write %s: it is %s, and only a regular "
                    "file is ever replaced%s", path, kind,
                    strcmp(kind, "a folder") == 0 ? " (give a file name)"
                    : strcmp(kind, "a symbolic link") == 0 ? " (give the file it points to)" : "");
}

/* The pid of a temporary open_temp made for base (base.tmp.PID.XXXXXX, name
 * in the target's folder), or 0 when name is not one. */
static long temp_owner(const char *name, const char *base)
{
    size_t n = strlen(base);
    if (strncmp(name, base, n) != 0 || strncmp(name + n, ".tmp.", 5) != 0)
        return 0;
    const char *p = name + n + 5;
    size_t nd = strspn(p, "0123456789");
    const char *s = p + nd + 1;
    if (nd == 0 || nd > 10 || p[nd] != '.' || strlen(s) != TMP_SUFFIX_LEN ||
        strspn(s, digits) != TMP_SUFFIX_LEN)
        return 0;
    return strtol(p, NULL, 10);
}

/* A process with this pid is running (or one we may not signal). */
static bool alive(long pid)
{
    return pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

int bt_atomic_clean_stale(const char *path)
{
    char *dir = folder_of(path);
    const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
    DIR *d = dir ? opendir(dir) : NULL;
    int removed = 0;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        long pid = temp_owner(de->d_name, base);
        if (pid <= 0 || alive(pid))
            continue;
        /* Only our own regular files: never another user's, never a link. */
        struct stat sb;
        if (fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(sb.st_mode) &&
            sb.st_uid == geteuid() && unlinkat(dirfd(d), de->d_name, 0) == 0)
            removed++;
    }
    if (d)
        closedir(d);
    bt_free(dir);
    return removed;
}

/* fsync the folder, so the rename itself survives a crash. */
static int sync_folder(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    if (rc < 0 && errno == EINVAL)
        rc = 0; /* a file system that cannot sync folders: nothing more to do */
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

static void atomic_free(bt_atomic_file *f)
{
    bt_file_lock_release(f->lock);
    bt_free(f->path);
    bt_free(f->tmp);
    bt_free(f);
}

bt_status bt_atomic_open(const char *path, bt_atomic_file **out, char *err, size_t errlen)
{
    if (!out)
        return bt_error(err, errlen, BT_ERR_ARG, "bt_atomic_open: out is NULL");
    *out = NULL;
    if (!path || !*path)
        return bt_error(err, errlen, BT_ERR_ARG, "bt_atomic_open: no file name");
    const char *kind = not_regular(path);
    if (kind)
        return refuse_target(path, kind, err, errlen);
    size_t n = strlen(path);
    bt_atomic_file *f = bt_calloc(1, sizeof *f);
    if (f) {
        f->path = bt_malloc(n + 1);
        f->tmp = bt_malloc(n + 32);
    }
    if (!f || !f->path || !f->tmp) {
        if (f)
            atomic_free(f);
        return bt_error(err, errlen, BT_ERR_NOMEM, "%s: out of memory", path);
    }
    memcpy(f->path, path, n + 1);
    bt_status st = bt_file_lock_acquire(path, &f->lock, err, errlen);
    if (st != BT_OK) {
        atomic_free(f);
        return st;
    }
    f->fd = open_temp(path, f->tmp, n + 32);
    if (f->fd < 0) {
        int e = errno;
        atomic_free(f);
        return bt_error(err, errlen, BT_ERR_IO, "%s: cannot create a temporary file in its folder: %s",
                        path, strerror(e));
    }
    /* Keep the permissions of a file being replaced. */
    struct stat old;
    if (stat(path, &old) == 0 && S_ISREG(old.st_mode))
        (void)fchmod(f->fd, old.st_mode & 07777);
    *out = f;
    return BT_OK;
}

bool bt_atomic_write(bt_atomic_file *f, const void *data, size_t n)
{
    const char *p = data;
    while (f->error == 0 && n > 0) {
        ssize_t w = write(f->fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            f->error = w < 0 ? errno : EIO;
            break;
        }
        p += w;
        n -= (size_t)w;
    }
    return f->error == 0;
}

void bt_atomic_abort(bt_atomic_file *f)
{
    if (!f)
        return;
    if (f->fd >= 0)
        close(f->fd);
    unlink(f->tmp);
    atomic_free(f);
}

bt_status bt_atomic_commit(bt_atomic_file *f, char *err, size_t errlen)
{
    if (!f)
        return bt_error(err, errlen, BT_ERR_ARG, "bt_atomic_commit: no file");
    const char *step = "write";
    int e = f->error;
    if (!e) {
        step = "sync";
        e = fsync(f->fd) == 0 ? 0 : errno;
    }
    if (!e) {
        step = "close";
        e = close(f->fd) == 0 ? 0 : errno;
        f->fd = -1;
    }
    const char *kind = e ? NULL : not_regular(f->path); /* made since the open? */
    if (kind) {
        refuse_target(f->path, kind, err, errlen);
        bt_atomic_abort(f);
        return BT_ERR_IO;
    }
    if (!e) {
        step = "rename";
        e = rename(f->tmp, f->path) == 0 ? 0 : errno;
    }
    if (e) {
        bt_error(err, errlen, BT_ERR_IO, "%s: cannot %s (temporary %s): %s; the old file is untouched",
                 f->path, step, f->tmp, strerror(e));
        bt_atomic_abort(f);
        return BT_ERR_IO;
    }
    bt_status st = BT_OK;
    char *dir = folder_of(f->path);
    if (!dir || sync_folder(dir) < 0)
        st = bt_error(err, errlen, BT_ERR_IO,
                      "%s: written, but syncing its folder %s failed: %s; it may not survive a crash",
                      f->path, dir ? dir : "", dir ? strerror(errno) : "out of memory");
    bt_free(dir);
    atomic_free(f);
    return st;
}

bt_status bt_atomic_write_file(const char *path, const void *data, size_t n, char *err,
                               size_t errlen)
{
    bt_atomic_file *f;
    bt_status st = bt_atomic_open(path, &f, err, errlen);
    if (st != BT_OK)
        return st;
    bt_atomic_write(f, data, n);
    return bt_atomic_commit(f, err, errlen);
}

bt_status bt_atomic_check_writable(const char *path, char *err, size_t errlen)
{
    if (!path || !*path)
        return bt_error(err, errlen, BT_ERR_ARG, "no file name given");
    struct stat sb;
    const char *kind = not_regular(path);
    if (kind)
        return refuse_target(path, kind, err, errlen);
    char *dir = folder_of(path);
    size_t tmplen = strlen(path) + 32;
    char *tmp = bt_malloc(tmplen);
    bt_status st = BT_OK;
    if (!dir || !tmp)
        st = bt_error(err, errlen, BT_ERR_NOMEM, "%s: out of memory", path);
    else if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        st = bt_error(err, errlen, BT_ERR_IO, "cannot save to %s: folder %s does not exist", path,
                      dir);
    else { /* exactly what a write does first: create the temporary file */
        int fd = open_temp(path, tmp, tmplen), e = errno;
        if (fd >= 0) {
            close(fd);
            unlink(tmp);
        } else
            st = bt_error(err, errlen, BT_ERR_IO, "cannot save to %s: cannot create files in %s "
                          "(%s)", path, dir, strerror(e));
    }
    bt_free(dir);
    bt_free(tmp);
    return st;
}
