/* test_atomic.c: the one atomic file writer (io/atomic.h), on its own:
 * - a new file gets 0666 & ~umask, a replaced one keeps its mode;
 * - written in pieces, the target changes only at commit;
 * - abort, a failed write (a file size limit: EFBIG) and a failed rename
 *   (onto a folder) leave the old file whole and no temporary behind, with a
 *   message naming the file and the cause;
 * - the early check refuses a folder, a missing folder, and leaves nothing. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomic.h"

static char dir[64];
static char err[BT_ERRMSG_LEN];

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/bt_atomic_XXXXXX");
    cr_assert_not_null(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
    err[0] = '\0';
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

TestSuite(atomic, .init = setup, .fini = teardown);

static const char *in_dir(const char *name)
{
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static int count_entries(const char *path)
{
    DIR *d = opendir(path);
    cr_assert_not_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
    closedir(d);
    return n;
}

static void assert_file_is(const char *path, const char *text)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    char buf[256] = "";
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    cr_assert_eq(n, strlen(text), "%s has %zu bytes, expected %zu", path, n, strlen(text));
    cr_assert_eq(memcmp(buf, text, n), 0, "%s holds '%s'", path, buf);
}

Test(atomic, new_and_replaced_files_get_the_usual_modes)
{
    mode_t mask = umask(022);
    const char *path = in_dir("a.txt");
    cr_assert_eq(bt_atomic_write_file(path, "one", 3, err, sizeof err), BT_OK, "%s", err);
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_eq(sb.st_mode & 0777, 0644, "a new file is 0666 & ~umask");
    cr_assert_eq(chmod(path, 0600), 0);
    cr_assert_eq(bt_atomic_write_file(path, "two", 3, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_eq(sb.st_mode & 0777, 0600, "a replaced file keeps its mode");
    assert_file_is(path, "two");
    cr_assert_eq(count_entries(dir), 1, "a temporary file was left behind");
    umask(mask);
}

Test(atomic, the_target_changes_only_at_commit)
{
    const char *path = in_dir("b.txt");
    cr_assert_eq(bt_atomic_write_file(path, "old", 3, err, sizeof err), BT_OK, "%s", err);
    bt_atomic_file *f;
    cr_assert_eq(bt_atomic_open(path, &f, err, sizeof err), BT_OK, "%s", err);
    cr_assert(bt_atomic_write(f, "ne", 2));
    cr_assert(bt_atomic_write(f, "w!", 2));
    assert_file_is(path, "old");
    cr_assert_eq(count_entries(dir), 2, "the temporary file sits next to the target");
    cr_assert_eq(bt_atomic_commit(f, err, sizeof err), BT_OK, "%s", err);
    assert_file_is(path, "new!");
    cr_assert_eq(count_entries(dir), 1);

    cr_assert_eq(bt_atomic_open(path, &f, err, sizeof err), BT_OK, "%s", err);
    cr_assert(bt_atomic_write(f, "lost", 4));
    bt_atomic_abort(f);
    assert_file_is(path, "new!");
    cr_assert_eq(count_entries(dir), 1, "abort left a temporary file");
}

Test(atomic, a_failed_write_keeps_the_old_file)
{
    const char *path = in_dir("big.bin");
    cr_assert_eq(bt_atomic_write_file(path, "old", 3, err, sizeof err), BT_OK, "%s", err);
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {.rlim_cur = 4096, .rlim_max = RLIM_INFINITY};
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    static char big[100000];
    cr_assert_eq(bt_atomic_write_file(path, big, sizeof big, err, sizeof err), BT_ERR_IO);
    cr_assert_not_null(strstr(err, path), "%s", err);
    cr_assert_not_null(strstr(err, strerror(EFBIG)), "%s", err);
    cr_assert_not_null(strstr(err, "untouched"), "%s", err);
    assert_file_is(path, "old");
    cr_assert_eq(count_entries(dir), 1, "a temporary file was left behind");
}

Test(atomic, a_failed_rename_keeps_the_folder)
{
    const char *path = in_dir("taken");
    cr_assert_eq(mkdir(path, 0755), 0);
    cr_assert_eq(bt_atomic_write_file(in_dir("taken/keep"), "keep", 4, err, sizeof err), BT_OK);
    cr_assert_eq(bt_atomic_write_file(path, "x", 1, err, sizeof err), BT_ERR_IO);
    cr_assert_not_null(strstr(err, path), "%s", err);
    cr_assert_not_null(strstr(err, strerror(EISDIR)), "%s", err);
    assert_file_is(in_dir("taken/keep"), "keep");
    cr_assert_eq(count_entries(dir), 1, "a temporary file was left behind");
}

Test(atomic, the_early_check_says_what_is_wrong)
{
    cr_assert_eq(bt_atomic_check_writable(in_dir("fine.txt"), err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(count_entries(dir), 0, "the check left a file behind");
    cr_assert_eq(bt_atomic_check_writable(in_dir("no/such/x.txt"), err, sizeof err), BT_ERR_IO);
    cr_assert_not_null(strstr(err, "does not exist"), "%s", err);
    cr_assert_eq(bt_atomic_check_writable(dir, err, sizeof err), BT_ERR_IO);
    cr_assert_not_null(strstr(err, "it is a folder"), "%s", err);
    cr_assert_eq(bt_atomic_open(in_dir("no/such/y.txt"), &(bt_atomic_file *){NULL}, err, sizeof err),
                 BT_ERR_IO);
    cr_assert_not_null(strstr(err, strerror(ENOENT)), "%s", err);
}
