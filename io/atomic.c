/* atomic.c: atomic file replacement (atomic.h), the only place bptt creates,
 * renames and syncs files; checkpoints, grad files, metrics and charts all
 * come through here. */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "atomic.h"

struct bt_atomic_file {
    int fd;
    int error;        /* errno of the first failed write, 0 if none */
    char *path, *tmp; /* bt_malloc'd */
};

/* Creates path.tmp.XXXXXX with O_EXCL into tmp[tmplen]. Not mkstemp: mkstemp
 * forces mode 0600, while a checkpoint or chart should get the usual
 * 0666 & ~umask, like fopen would give. */
static int open_temp(const char *path, char *tmp, size_t tmplen)
{
    static atomic_uint counter;
    static const char digits[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    for (int attempt = 0; attempt < 100; attempt++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ULL ^ (uint64_t)getpid() << 32 ^
                     atomic_fetch_add(&counter, 1) ^ (uint64_t)ts.tv_sec;
        x ^= x >> 31;
        x *= 0xBF58476D1CE4E5B9ULL;
        x ^= x >> 29;
        char suffix[7];
        for (int i = 0; i < 6; i++, x /= 62)
            suffix[i] = digits[x % 62];
        suffix[6] = '\0';
        if ((size_t)snprintf(tmp, tmplen, "%s.tmp.%s", path, suffix) >= tmplen) {
            errno = ENAMETOOLONG;
            return -1;
        }
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0 || errno != EEXIST)
            return fd;
    }
    return -1;
}

/* The folder holding path, into dir[dirlen]. */
static void folder_of(const char *path, char *dir, size_t dirlen)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, dirlen, ".");
    else if (slash == path)
        snprintf(dir, dirlen, "/");
    else
        snprintf(dir, dirlen, "%.*s", (int)(slash - path), path);
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
    size_t n = strlen(path);
    bt_atomic_file *f = bt_calloc(1, sizeof *f);
    if (f) {
        f->path = bt_malloc(n + 1);
        f->tmp = bt_malloc(n + 16);
    }
    if (!f || !f->path || !f->tmp) {
        if (f)
            atomic_free(f);
        return bt_error(err, errlen, BT_ERR_NOMEM, "%s: out of memory", path);
    }
    memcpy(f->path, path, n + 1);
    f->fd = open_temp(path, f->tmp, n + 16);
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
    char dir[4096];
    folder_of(f->path, dir, sizeof dir);
    if (sync_folder(dir) < 0)
        st = bt_error(err, errlen, BT_ERR_IO,
                      "%s: written, but syncing its folder %s failed: %s; it may not survive a crash",
                      f->path, dir, strerror(errno));
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
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
        return bt_error(err, errlen, BT_ERR_IO, "cannot save to %s: it is a folder; give a file name",
                        path);
    char dir[4096];
    folder_of(path, dir, sizeof dir);
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return bt_error(err, errlen, BT_ERR_IO, "cannot save to %s: folder %s does not exist", path,
                        dir);
    /* Exactly what a write does first: create the temporary file. */
    size_t tmplen = strlen(path) + 16;
    char *tmp = bt_malloc(tmplen);
    if (!tmp)
        return bt_error(err, errlen, BT_ERR_NOMEM, "%s: out of memory", path);
    int fd = open_temp(path, tmp, tmplen);
    int e = errno;
    if (fd >= 0) {
        close(fd);
        unlink(tmp);
    }
    bt_free(tmp);
    if (fd < 0)
        return bt_error(err, errlen, BT_ERR_IO, "cannot save to %s: cannot create files in %s (%s)",
                        path, dir, strerror(e));
    return BT_OK;
}
