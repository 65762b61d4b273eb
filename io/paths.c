/* paths.c: the files of one command, claimed together (paths.h): pairwise
 * identity, then each output checked writable and locked. */
#include <string.h>
#include <sys/stat.h>

#include "atomic.h"
#include "filelock.h"
#include "paths.h"

struct bt_files {
    int n;
    bt_file_lock *locks[];
};

/* What a name reaches: a file (device, inode), or the name it would have in
 * an existing folder (the folder's device and inode, and the last component). */
typedef struct path_id {
    bool exists, in_folder;
    dev_t dev;
    ino_t ino;
    const char *name; /* the last component, for a file not there yet */
    size_t name_len;
} path_id;

static path_id identify(const char *path)
{
    path_id id = {0};
    struct stat sb;
    if (stat(path, &sb) == 0) {
        id.exists = true;
        id.dev = sb.st_dev, id.ino = sb.st_ino;
        return id;
    }
    const char *slash = strrchr(path, '/');
    id.name = slash ? slash + 1 : path;
    id.name_len = strlen(id.name);
    size_t n = !slash ? 0 : slash == path ? 1 : (size_t)(slash - path);
    char *dir = bt_malloc(n + 2);
    if (!dir)
        return id;
    memcpy(dir, slash ? path : ".", slash ? n : 1);
    dir[slash ? n : 1] = '\0';
    if (stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        id.in_folder = true;
        id.dev = sb.st_dev, id.ino = sb.st_ino;
    }
    bt_free(dir);
    return id;
}

bool bt_path_same(const char *a, const char *b)
{
    if (!a || !b)
        return false;
    if (strcmp(a, b) == 0)
        return true;
    path_id x = identify(a), y = identify(b);
    if (x.exists || y.exists)
        return x.exists && y.exists && x.dev == y.dev && x.ino == y.ino;
    /* Neither there yet: one name in one folder (a folder we cannot see
     * makes the names unwritable anyway; spelt alike they were caught above). */
    return x.in_folder && y.in_folder && x.dev == y.dev && x.ino == y.ino &&
           x.name_len == y.name_len && memcmp(x.name, y.name, x.name_len) == 0;
}

void bt_files_release(bt_files *files)
{
    if (!files)
        return;
    for (int i = 0; i < files->n; i++)
        bt_file_lock_release(files->locks[i]);
    bt_free(files);
}

/* The first two uses that are one file, as an error. */
static bt_status check_distinct(const bt_file_use *u, int n, char *err, size_t errlen)
{
    for (int i = 0; i < n; i++)
        for (int j = i + 1; u[i].path && j < n; j++) {
            if (!u[j].path || (u[i].share && u[i].share == u[j].share) ||
                !bt_path_same(u[i].path, u[j].path))
                continue;
            const bt_file_use *w = u[j].output ? &u[j] : &u[i], *o = w == &u[j] ? &u[i] : &u[j];
            return bt_error(err, errlen, BT_ERR_ARG, "%s %s and %s %s are the same file: writing "
                            "%s would replace %s; give each its own file", u[i].option, u[i].path,
                            u[j].option, u[j].path, w->option,
                            o->output ? "the other output" : "what is read from it");
        }
    return BT_OK;
}

/* Is `path` one of the working files bptt keeps beside output `target`: its
 * lock file (removed when the run ends) or a temporary of its atomic writes
 * (removed as stale once its writer is gone)? */
static bool working_file_of(const char *path, const char *target)
{
    size_t n = strlen(target);
    if (strncmp(path, target, n) == 0 && strncmp(path + n, ".tmp.", 5) == 0)
        return true;
    char *lock = bt_file_lock_path(target);
    bool same = lock && bt_path_same(path, lock);
    bt_free(lock);
    return same;
}

/* An output that names another output's working file, as an error. */
static bt_status check_working_files(const bt_file_use *u, int n, char *err, size_t errlen)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; u[i].path && j < n; j++)
            if (i != j && u[j].path && u[j].output && working_file_of(u[i].path, u[j].path))
                return bt_error(err, errlen, BT_ERR_ARG, "%s %s is a working file bptt keeps "
                                "beside %s %s (its lock, or a temporary of its writes): give %s "
                                "another name", u[i].option, u[i].path, u[j].option, u[j].path,
                                u[i].option);
    return BT_OK;
}

bt_status bt_files_claim(const bt_file_use *uses, int n, bt_files **out, char *err, size_t errlen)
{
    *out = NULL;
    bt_status st = check_distinct(uses, n, err, errlen);
    if (st == BT_OK)
        st = check_working_files(uses, n, err, errlen);
    if (st != BT_OK)
        return st;
    bt_files *f = bt_calloc(1, sizeof *f + sizeof(bt_file_lock *) * (size_t)(n > 0 ? n : 1));
    if (!f)
        return bt_error(err, errlen, BT_ERR_NOMEM, "out of memory");
    char why[BT_ERRMSG_LEN + 1024];
    for (int i = 0; i < n && st == BT_OK; i++) {
        if (!uses[i].output || !uses[i].path)
            continue;
        st = bt_atomic_check_writable(uses[i].path, why, sizeof why);
        if (st == BT_OK)
            st = bt_file_lock_acquire(uses[i].path, &f->locks[f->n], why, sizeof why);
        if (st == BT_OK)
            f->n++;
        else
            bt_error(err, errlen, st, "%s: %s", uses[i].option, why);
    }
    if (st != BT_OK || f->n == 0) {
        bt_files_release(f);
        return st;
    }
    *out = f;
    return BT_OK;
}
