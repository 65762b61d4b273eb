/* test_atomic.c: the one atomic file writer (io/atomic.h), on its own:
 * - a new file gets 0666 & ~umask, a replaced one keeps its mode;
 * - written in pieces, the target changes only at commit;
 * - abort, a failed write (a file size limit: EFBIG) and a failed rename
 *   (onto a folder made meanwhile) leave the old file whole and no temporary
 *   behind, with a message naming the file and the cause;
 * - the early check refuses a folder, a missing folder, and leaves nothing;
 * - only regular files are replaced: a symlink, FIFO or folder is refused
 *   and left as it was (issue 12, defect 2);
 * - the target's lock (io/filelock.h): a second process is refused with a
 *   message naming it, its death frees the lock, one process holds it
 *   counted (defect 3); the first taker removes the temporaries of dead
 *   writers and nothing else (defect 6);
 * - claims of a command's files (io/paths.h): the same file by inode or by
 *   folder and name, however spelt (defect 1). */
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
#include "filelock.h"
#include "paths.h"
#include <sys/wait.h>

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
    cr_assert_eq(count_entries(dir), 3, "the temporary file and the lock sit next to the target");
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
    bt_atomic_file *f;
    cr_assert_eq(bt_atomic_open(path, &f, err, sizeof err), BT_OK, "%s", err);
    cr_assert(bt_atomic_write(f, "x", 1));
    cr_assert_eq(mkdir(path, 0755), 0); /* a folder appears before the commit */
    cr_assert_eq(bt_atomic_write_file(in_dir("taken/keep"), "keep", 4, err, sizeof err), BT_OK);
    cr_assert_eq(bt_atomic_commit(f, err, sizeof err), BT_ERR_IO);
    cr_assert_not_null(strstr(err, path), "%s", err);
    cr_assert_not_null(strstr(err, "it is a folder"), "%s", err);
    assert_file_is(in_dir("taken/keep"), "keep");
    cr_assert_eq(count_entries(dir), 1, "a temporary file or a lock was left behind");
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

/* ---- only regular files are replaced (defect 2) ----------------------------------------- */

Test(atomic, a_symlink_fifo_or_folder_is_never_replaced)
{
    const char *target = in_dir("target.txt"), *link = in_dir("link"), *fifo = in_dir("fifo");
    cr_assert_eq(bt_atomic_write_file(target, "keep", 4, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(symlink("target.txt", link), 0);
    cr_assert_eq(mkfifo(fifo, 0644), 0);
    const struct { const char *path, *kind; } cases[] = {
        {link, "a symbolic link"}, {fifo, "a FIFO"}, {dir, "a folder"}};
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(bt_atomic_write_file(cases[i].path, "new", 3, err, sizeof err), BT_ERR_IO,
                     "%s was replaced", cases[i].kind);
        cr_assert_not_null(strstr(err, cases[i].kind), "%s", err);
        cr_assert_eq(bt_atomic_check_writable(cases[i].path, err, sizeof err), BT_ERR_IO);
        cr_assert_not_null(strstr(err, cases[i].kind), "%s", err);
    }
    struct stat sb;
    cr_assert(lstat(link, &sb) == 0 && S_ISLNK(sb.st_mode), "the link is gone");
    cr_assert(lstat(fifo, &sb) == 0 && S_ISFIFO(sb.st_mode), "the FIFO is gone");
    assert_file_is(target, "keep");
    cr_assert_eq(count_entries(dir), 3, "a temporary file or a lock was left behind");
}

/* ---- the lock (defects 3 and 6) ------------------------------------------------------------ */

/* A child process that holds path's lock until it reads a byte from *wfd's pipe. */
static pid_t child_holding(const char *path, int *wfd)
{
    int go[2], ready[2];
    cr_assert_eq(pipe(go), 0);
    cr_assert_eq(pipe(ready), 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        close(go[1]); /* the parent's death ends the read below */
        close(ready[0]);
        bt_file_lock *l;
        char e[512];
        char ok = bt_file_lock_acquire(path, &l, e, sizeof e) == BT_OK ? 'y' : 'n';
        if (write(ready[1], &ok, 1) != 1 || read(go[0], &ok, 1) < 0)
            _exit(2);
        _exit(0); /* dies holding it: the kernel drops the flock */
    }
    char ok = 0;
    cr_assert_eq(read(ready[0], &ok, 1), 1);
    cr_assert_eq(ok, 'y', "the child could not take the lock");
    close(go[0]);
    close(ready[0]);
    close(ready[1]);
    *wfd = go[1];
    return pid;
}

Test(atomic, a_second_process_is_refused_until_the_first_dies)
{
    const char *path = in_dir("m.st");
    int wfd;
    pid_t pid = child_holding(path, &wfd);
    bt_file_lock *l = NULL;
    cr_assert_eq(bt_file_lock_acquire(path, &l, err, sizeof err), BT_ERR_IO);
    char want[64];
    snprintf(want, sizeof want, "pid %ld, ", (long)pid); /* then its command line */
    const char *who = strstr(err, want);
    cr_assert_not_null(who, "the message does not name the holder: %s", err);
    cr_assert(who[strlen(want)] != ')' && who[strlen(want)] != '\0', "no command: %s", err);
    cr_assert_eq(bt_atomic_write_file(path, "x", 1, err, sizeof err), BT_ERR_IO,
                 "a write went through another process's lock");
    cr_assert_null(l);
    cr_assert_eq(write(wfd, "x", 1), 1);
    close(wfd);
    cr_assert_eq(waitpid(pid, NULL, 0), pid);
    cr_assert_eq(access(in_dir("m.st.lock"), F_OK), 0, "a killed holder leaves its lock file");
    cr_assert_eq(bt_file_lock_acquire(path, &l, err, sizeof err), BT_OK, "the dead holder's "
                 "lock still blocks: %s", err);
    bt_file_lock_release(l);
    cr_assert_eq(count_entries(dir), 0, "the lock file outlived its last holder");
}

Test(atomic, one_process_holds_a_lock_counted)
{
    const char *path = in_dir("c.st");
    bt_file_lock *a, *b;
    cr_assert_eq(bt_file_lock_acquire(path, &a, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_file_lock_acquire(path, &b, err, sizeof err), BT_OK, "%s", err);
    /* Saves under the run's lock. */
    cr_assert_eq(bt_atomic_write_file(path, "one", 3, err, sizeof err), BT_OK, "%s", err);
    bt_file_lock_release(a);
    cr_assert_eq(access(in_dir("c.st.lock"), F_OK), 0, "released while still held once");
    int wfd;
    int go[2];
    cr_assert_eq(pipe(go), 0);
    pid_t pid = fork();
    if (pid == 0) { /* another process is still refused */
        bt_file_lock *l;
        char e[512];
        _exit(bt_file_lock_acquire(path, &l, e, sizeof e) == BT_ERR_IO ? 0 : 1);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the lock was free while held");
    (void)wfd;
    close(go[0]);
    close(go[1]);
    bt_file_lock_release(b);
    cr_assert_eq(count_entries(dir), 1, "only c.st should remain");
}

Test(atomic, the_first_taker_removes_dead_writers_temporaries_only)
{
    /* 999999999 is above any pid Linux gives (at most 2^22): a dead writer's.
     * The test's own parent is alive: its temporaries stay. */
    char live[64];
    snprintf(live, sizeof live, "m.st.tmp.%ld.abc123", (long)getppid());
    const char *keep[] = {"m.st", "m.st.tmp.backup", "m.st.tmp.999999999.abc1234",
                          "m.st.tmp.999999999.ab-123", "x.st.tmp.999999999.abc123",
                          "m.st.tmp999999999.abc123", "m.st.tmp..abc123", live};
    const char *stale[] = {"m.st.tmp.999999999.abc123", "m.st.tmp.999999998.ZZ90zz"};
    for (size_t i = 0; i < sizeof keep / sizeof *keep; i++)
        cr_assert_eq(bt_atomic_write_file(in_dir(keep[i]), "k", 1, err, sizeof err), BT_OK, "%s", err);
    for (size_t i = 0; i < sizeof stale / sizeof *stale; i++) {
        FILE *f = fopen(in_dir(stale[i]), "w");
        cr_assert_not_null(f);
        fclose(f);
    }
    cr_assert_eq(symlink("m.st", in_dir("m.st.tmp.999999999.link00")), 0); /* never a link */
    cr_assert_eq(bt_atomic_write_file(in_dir("m.st"), "new", 3, err, sizeof err), BT_OK, "%s", err);
    for (size_t i = 0; i < sizeof stale / sizeof *stale; i++)
        cr_assert_neq(access(in_dir(stale[i]), F_OK), 0, "%s was left", stale[i]);
    for (size_t i = 0; i < sizeof keep / sizeof *keep; i++)
        cr_assert_eq(access(in_dir(keep[i]), F_OK), 0, "%s was removed", keep[i]);
    struct stat sb;
    cr_assert_eq(lstat(in_dir("m.st.tmp.999999999.link00"), &sb), 0, "a symbolic link was removed");
}

/* ---- one file, however it is spelt (defect 1) --------------------------------------------- */

Test(atomic, the_same_file_however_spelt)
{
    cr_assert_eq(bt_atomic_write_file(in_dir("a.txt"), "a", 1, err, sizeof err), BT_OK);
    cr_assert_eq(mkdir(in_dir("sub"), 0755), 0);
    cr_assert_eq(symlink("sub", in_dir("alias")), 0);
    cr_assert_eq(link(in_dir("a.txt"), in_dir("hard.txt")), 0);
    cr_assert_eq(symlink("a.txt", in_dir("soft.txt")), 0);
    char dotted[128];
    snprintf(dotted, sizeof dotted, "%s/./sub/../a.txt", dir);
    cr_assert(bt_path_same(in_dir("a.txt"), dotted), "an existing file through . and ..");
    cr_assert(bt_path_same(in_dir("a.txt"), in_dir("hard.txt")), "a hard link");
    cr_assert(bt_path_same(in_dir("a.txt"), in_dir("soft.txt")), "a symbolic link");
    cr_assert(bt_path_same(in_dir("sub/new.st"), in_dir("alias/new.st")), "a new file through "
              "a linked folder");
    cr_assert(bt_path_same(in_dir("sub/new.st"), in_dir("alias/../sub/new.st")));
    cr_assert_not(bt_path_same(in_dir("sub/new.st"), in_dir("sub/new.st2")));
    cr_assert_not(bt_path_same(in_dir("sub/new.st"), in_dir("a.txt")));
    cr_assert_not(bt_path_same(in_dir("a.txt"), in_dir("sub/a.txt")));

    bt_files *files = NULL;
    char p[6][128];
    const char *names[] = {"a.txt", "c.st", "alias/c.st", "hard.txt", "sub/c.st", "plot.svg"};
    for (int i = 0; i < 6; i++)
        snprintf(p[i], sizeof p[i], "%s/%s", dir, names[i]);
    bt_file_use uses[] = {{"--data", p[0], false, 0}, {"--resume", p[1], false, 1},
                          {"--save", p[2], true, 1}, {"--plot", p[3], true, 0}};
    cr_assert_eq(bt_files_claim(uses, 4, &files, err, sizeof err), BT_ERR_ARG);
    cr_assert_not_null(strstr(err, "--data"), "%s", err);
    cr_assert_not_null(strstr(err, "--plot"), "%s", err);
    cr_assert_null(files);
    uses[3].path = p[4]; /* the same file as --save, outside its share group */
    cr_assert_eq(bt_files_claim(uses, 4, &files, err, sizeof err), BT_ERR_ARG);
    cr_assert_not_null(strstr(err, "--save"), "%s", err);
    uses[3].path = p[5];
    uses[1].path = p[4]; /* --resume and --save may be one file */
    cr_assert_eq(bt_files_claim(uses, 4, &files, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(access(in_dir("sub/c.st.lock"), F_OK), 0, "the outputs are locked while claimed");
    bt_files_release(files);
    cr_assert_neq(access(in_dir("sub/c.st.lock"), F_OK), 0, "released, the lock file is gone");
}
