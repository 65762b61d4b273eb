/* plugin_scan.c: the plugin scanner. A plugin file the cache does not know is
 * registered first in a forked child, which reports the stage it has reached
 * one byte at a time through a pipe and ends with 'D' when registration ran to
 * its end. The parent waits with a time-out; a child killed by a signal, still
 * running at the time-out, or ending itself, condemns the file until it
 * changes. Verdicts are cached in one small text file keyed by path, size,
 * times and inode, written atomically.
 *
 * Why a fork per unknown file rather than one scanner process: after a fork
 * the child already holds the host table and the loader, so it needs no
 * executable to find and no protocol beyond stage bytes; a crash ends only the
 * one file's scan; files scan in parallel (a hang costs one time-out, not one
 * per file); and the cost is paid once per new or changed file, since a cache
 * hit forks nothing. The child only opens, registers and reports, then leaves
 * with _exit: it touches nothing the host's other threads (OpenBLAS) may have
 * held locked at the fork beyond what glibc makes fork-safe (malloc, dlopen). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "plugin_scan.h"
#include "bptt_plugin.h"

#define BT_SCAN_PARALLEL 16
#define BT_SCAN_DEFAULT_TIMEOUT 10.0
#define BT_CACHE_MAX_BYTES (1 << 20)
#define BT_CACHE_MAX_ENTRIES 4096
#define BT_CACHE_HEADER "bptt plugin scan cache 1\n"

/* ---- settings ------------------------------------------------------------------------ */

double bt_scan_timeout(void)
{
    const char *e = getenv("BPTT_PLUGIN_SCAN_TIMEOUT");
    if (!e || !*e)
        return BT_SCAN_DEFAULT_TIMEOUT;
    char *end;
    double s = strtod(e, &end);
    return (*end == '\0' && isfinite(s) && s > 0 && s <= 3600) ? s : BT_SCAN_DEFAULT_TIMEOUT;
}

bool bt_scan_enabled(void)
{
    const char *e = getenv("BPTT_PLUGIN_SCAN");
    return !(e && strcmp(e, "0") == 0);
}

bool bt_scan_key_of(const char *path, bt_scan_key *key)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return false;
    *key = (bt_scan_key){(int64_t)st.st_dev, (int64_t)st.st_ino, (int64_t)st.st_size,
                         (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec,
                         (int64_t)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec};
    return true;
}

/* ---- messages -------------------------------------------------------------------------- */

static const char *stage_text(bt_scan_stage s)
{
    static const char *const text[BT_STAGE_COUNT] = {
        [BT_STAGE_START] = "before it was opened",
        [BT_STAGE_DLOPEN] = "while dlopen ran its constructors",
        [BT_STAGE_ENTRY] = "in its entry symbol " BT_PLUGIN_ENTRY_SYMBOL " (is it a function?)",
        [BT_STAGE_DESCRIPTOR] = "while bptt read the descriptor " BT_PLUGIN_ENTRY_SYMBOL
                                " returned (a bad pointer?)",
        [BT_STAGE_INIT] = "in its init function",
        [BT_STAGE_CELL] = "while bptt read a cell definition it registered (a bad pointer?)",
        [BT_STAGE_POLICY] = "while bptt read a policy definition it registered (a bad pointer?)",
        [BT_STAGE_OPTIMIZER] = "while bptt read an optimizer definition it registered "
                               "(a bad pointer?)",
        [BT_STAGE_ESTIMATOR] = "while bptt read an estimator definition it registered "
                               "(a bad pointer?)",
        [BT_STAGE_COMMIT] = "after its init function returned",
    };
    return (s >= 0 && s < BT_STAGE_COUNT) ? text[s] : "at an unknown step";
}

static const char *signal_text(int sig, char *buf, size_t len)
{
    static const struct { int sig; const char *name, *what; } known[] = {
        {SIGSEGV, "SIGSEGV", "segmentation fault"}, {SIGBUS, "SIGBUS", "bus error"},
        {SIGILL, "SIGILL", "illegal instruction"},  {SIGFPE, "SIGFPE", "arithmetic exception"},
        {SIGABRT, "SIGABRT", "abort"},              {SIGTRAP, "SIGTRAP", "trap"},
        {SIGSYS, "SIGSYS", "bad system call"},      {SIGKILL, "SIGKILL", "killed"},
        {SIGTERM, "SIGTERM", "terminated"},         {SIGALRM, "SIGALRM", "alarm"},
        {SIGPIPE, "SIGPIPE", "broken pipe"},        {SIGXCPU, "SIGXCPU", "CPU time limit"},
    };
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        if (known[i].sig == sig) {
            snprintf(buf, len, "%s (%s)", known[i].name, known[i].what);
            return buf;
        }
    snprintf(buf, len, "signal %d", sig);
    return buf;
}

void bt_verdict_message(const bt_verdict *v, const char *path, char *err, size_t errlen)
{
    const char *where = stage_text(v->stage);
    char sig[64];
    switch (v->kind) {
    case BT_VERDICT_CRASHED:
        bt_errorf(err, errlen, "cannot load plugin %s: registering it in a separate scan process, "
                  "it crashed with %s %s; bptt did not load it. Fix the plugin (bptt scans it "
                  "again when the file changes)", path, signal_text(v->code, sig, sizeof sig),
                  where);
        break;
    case BT_VERDICT_TIMEOUT:
        bt_errorf(err, errlen, "cannot load plugin %s: registering it in a separate scan process, "
                  "it was still running %s after %g s (a hang?), so bptt killed it and did not "
                  "load it. Fix the plugin; if the machine was only busy, raise "
                  "BPTT_PLUGIN_SCAN_TIMEOUT and touch the file to scan it again", path, where,
                  v->code / 1000.0);
        break;
    case BT_VERDICT_EXITED:
        if (v->code < 0) /* reaped by someone else (a SIGCHLD handler): no status to show */
            bt_errorf(err, errlen, "cannot load plugin %s: registering it in a separate scan "
                      "process, it ended that process %s without finishing; bptt did not load "
                      "it. Fix the plugin (bptt scans it again when the file changes)", path,
                      where);
        else
            bt_errorf(err, errlen, "cannot load plugin %s: registering it in a separate scan "
                      "process, it ended the process with exit status %d %s (a plugin must "
                      "return from init, never exit); bptt did not load it. Fix the plugin "
                      "(bptt scans it again when the file changes)", path, v->code, where);
        break;
    case BT_VERDICT_STOPPED:
        bt_errorf(err, errlen, "cannot load plugin %s: registering it in a separate scan process, "
                  "that process was ended by %s %s; bptt did not load it this time (it scans "
                  "it again on the next run)", path, signal_text(v->code, sig, sizeof sig), where);
        break;
    default:
        bt_errorf(err, errlen, "cannot load plugin %s: no verdict", path);
    }
}

/* ---- the child ------------------------------------------------------------------------- */

void bt_scan_report(int stage_fd, bt_scan_stage stage)
{
    char c = (char)('0' + stage);
    if (stage_fd >= 0)
        while (write(stage_fd, &c, 1) < 0 && errno == EINTR)
            ;
}

/* A crash must end the child by its signal: a sanitizer's handler would turn
 * it into exit status 1, and an inherited handler into anything at all. */
static void child_setup(double timeout)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    const int fatal[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS, SIGALRM,
                         SIGPIPE, SIGTERM, SIGINT};
    for (size_t i = 0; i < sizeof fatal / sizeof *fatal; i++)
        sigaction(fatal[i], &sa, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core); /* a crashing plugin leaves no core file per scan */
    /* The host's unwritten stdout buffer came along with the fork: if the plugin
     * calls exit(), it is flushed to /dev/null, not printed twice. */
    int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (null >= 0) {
        dup2(null, STDOUT_FILENO);
        close(null);
    }
    alarm((unsigned)ceil(timeout) + 2); /* should the host die first, the child still ends */
}

static void child_main(const char *path, int fd, bt_scan_child_fn fn, void *ctx, double timeout)
{
    child_setup(timeout);
    bt_scan_report(fd, BT_STAGE_START);
    fn(ctx, path, fd);
    while (write(fd, "D", 1) < 0 && errno == EINTR)
        ;
    _exit(0);
}

/* ---- the parent ------------------------------------------------------------------------ */

typedef struct scan_job {
    pid_t pid;
    int fd;               /* read end, -1 once at EOF */
    bool done, reaped, killed, timed_out;
    int wstatus;
    bt_scan_stage stage;
    struct timespec deadline;
} scan_job;

static double seconds_until(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(t->tv_sec - now.tv_sec) + (double)(t->tv_nsec - now.tv_nsec) * 1e-9;
}

static bool job_start(scan_job *j, const char *path, bt_scan_child_fn fn, void *ctx,
                      double timeout)
{
    *j = (scan_job){.pid = -1, .fd = -1, .reaped = true};
    int p[2];
    if (pipe(p) != 0)
        return false;
    fcntl(p[0], F_SETFD, FD_CLOEXEC); /* later children must not hold this job's pipe */
    fcntl(p[1], F_SETFD, FD_CLOEXEC);
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return false;
    }
    if (pid == 0) {
        close(p[0]);
        child_main(path, p[1], fn, ctx, timeout); /* does not return */
    }
    close(p[1]);
    fcntl(p[0], F_SETFL, fcntl(p[0], F_GETFL) | O_NONBLOCK);
    struct timespec d;
    clock_gettime(CLOCK_MONOTONIC, &d);
    double whole = floor(timeout);
    d.tv_sec += (time_t)whole;
    d.tv_nsec += (long)((timeout - whole) * 1e9);
    if (d.tv_nsec >= 1000000000L) {
        d.tv_sec++;
        d.tv_nsec -= 1000000000L;
    }
    *j = (scan_job){.pid = pid, .fd = p[0], .stage = BT_STAGE_START, .deadline = d};
    return true;
}

/* Reads what the child reported so far; closes the pipe at EOF. */
static void job_read(scan_job *j)
{
    char buf[256];
    for (;;) {
        ssize_t n = read(j->fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return; /* EAGAIN: nothing more for now */
        if (n == 0) {
            close(j->fd);
            j->fd = -1;
            return;
        }
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == 'D')
                j->done = true;
            else if (buf[i] >= '0' && buf[i] < '0' + BT_STAGE_COUNT)
                j->stage = (bt_scan_stage)(buf[i] - '0');
        }
    }
}

/* Kills a job past its deadline, reaps one that ended; true while it runs. */
static bool job_poll(scan_job *j)
{
    if (j->reaped)
        return false;
    if (!j->killed && seconds_until(&j->deadline) <= 0) {
        kill(j->pid, SIGKILL);
        j->killed = true;
        j->timed_out = !j->done; /* a child that said 'D' but lingers is still clean */
    }
    pid_t r = waitpid(j->pid, &j->wstatus, WNOHANG);
    if (r == j->pid || (r < 0 && errno == ECHILD)) { /* ECHILD: SIGCHLD is ignored */
        if (r < 0)
            j->wstatus = -1;
        j->reaped = true;
        if (j->fd >= 0)
            job_read(j); /* the last bytes may still be in the pipe */
        if (j->fd >= 0) {
            close(j->fd);
            j->fd = -1;
        }
        return false;
    }
    return true;
}

static void jobs_wait(scan_job *jobs, int n)
{
    for (;;) {
        struct pollfd pfd[BT_SCAN_PARALLEL];
        int k = 0, running = 0;
        double wait = 1.0;
        for (int i = 0; i < n; i++) {
            if (!job_poll(&jobs[i]))
                continue;
            running++;
            double left = seconds_until(&jobs[i].deadline);
            wait = fmin(wait, left > 0 ? left : 0);
            if (jobs[i].fd >= 0)
                pfd[k++] = (struct pollfd){.fd = jobs[i].fd, .events = POLLIN};
            else
                wait = fmin(wait, 0.001); /* pipe closed, process not yet reaped */
        }
        if (!running)
            return;
        int ms = (int)ceil(wait * 1000);
        if (poll(pfd, (nfds_t)k, ms > 0 ? ms : 1) > 0)
            for (int i = 0; i < n; i++)
                if (jobs[i].fd >= 0)
                    job_read(&jobs[i]);
    }
}

static bt_verdict job_verdict(const scan_job *j, double timeout)
{
    bt_verdict v = {BT_VERDICT_CLEAN, 0, j->stage};
    if (j->done)
        return v; /* registration ran to its end; what happens after is not the plugin's */
    if (j->timed_out) {
        v.kind = BT_VERDICT_TIMEOUT;
        v.code = (int)lround(timeout * 1000);
    } else if (j->wstatus != -1 && WIFSIGNALED(j->wstatus)) {
        int sig = WTERMSIG(j->wstatus);
        /* Ctrl-C reaches the whole process group, the scan included: that is
         * not the plugin's fault, but it may be the plugin's own raise(). */
        bool user = sig == SIGINT || sig == SIGTERM || sig == SIGHUP || sig == SIGQUIT;
        v.kind = user ? BT_VERDICT_STOPPED : BT_VERDICT_CRASHED;
        v.code = sig;
    } else {
        v.kind = BT_VERDICT_EXITED;
        v.code = j->wstatus != -1 && WIFEXITED(j->wstatus) ? WEXITSTATUS(j->wstatus) : -1;
    }
    return v;
}

void bt_scan_run(const char *const *paths, int n, bt_scan_child_fn fn, void *ctx,
                 bt_verdict *out)
{
    if (n <= 0)
        return;
    double timeout = bt_scan_timeout();
    fflush(NULL); /* nothing the host wrote may sit in a buffer the child copies */
    for (int base = 0; base < n; base += BT_SCAN_PARALLEL) {
        int m = n - base < BT_SCAN_PARALLEL ? n - base : BT_SCAN_PARALLEL;
        scan_job jobs[BT_SCAN_PARALLEL];
        bool started[BT_SCAN_PARALLEL];
        for (int i = 0; i < m; i++)
            started[i] = job_start(&jobs[i], paths[base + i], fn, ctx, timeout);
        jobs_wait(jobs, m);
        for (int i = 0; i < m; i++)
            out[base + i] = started[i] ? job_verdict(&jobs[i], timeout)
                                       : (bt_verdict){BT_VERDICT_UNKNOWN, 0, BT_STAGE_START};
    }
}

/* ---- the cache ------------------------------------------------------------------------- */

typedef struct cache_entry {
    char *path; /* absolute, resolved */
    bt_scan_key key;
    bt_verdict v;
} cache_entry;

struct bt_scan_cache {
    char *file; /* NULL: no file, verdicts live in memory only */
    bool read, dirty;
    cache_entry *e;
    int n, cap;
};

static char *str_join(const char *a, const char *b, const char *c)
{
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
    char *s = bt_malloc(la + lb + lc + 1);
    if (s) {
        memcpy(s, a, la);
        memcpy(s + la, b, lb);
        memcpy(s + la + lb, c, lc + 1);
    }
    return s;
}

/* One file per ABI and precision: a float and a double build on one machine
 * do not overwrite each other's verdicts. */
static char *cache_file_name(void)
{
    const char *set = getenv("BPTT_PLUGIN_CACHE");
    if (set)
        return set[0] ? str_join(set, "", "") : NULL;
    char name[96];
    snprintf(name, sizeof name, "/bptt/plugins-abi%d.%d-%s.cache", BT_ABI_MAJOR, BT_ABI_MINOR,
             sizeof(bt_real) == sizeof(double) ? "double" : "float");
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (xdg && xdg[0] == '/') /* the XDG spec: a relative value is to be ignored */
        return str_join(xdg, name, "");
    if (home && home[0] == '/')
        return str_join(home, "/.cache", name);
    return NULL;
}

bt_scan_cache *bt_scan_cache_new(void)
{
    bt_scan_cache *c = bt_calloc(1, sizeof *c);
    if (c)
        c->file = cache_file_name();
    return c;
}

static void cache_clear(bt_scan_cache *c)
{
    for (int i = 0; i < c->n; i++)
        bt_free(c->e[i].path);
    c->n = 0;
}

void bt_scan_cache_free(bt_scan_cache *c)
{
    if (!c)
        return;
    cache_clear(c);
    bt_free(c->e);
    bt_free(c->file);
    bt_free(c);
}

static cache_entry *cache_find(bt_scan_cache *c, const char *path)
{
    for (int i = 0; i < c->n; i++)
        if (strcmp(c->e[i].path, path) == 0)
            return &c->e[i];
    return NULL;
}

/* Adds or replaces path's entry; takes ownership of path. */
static bool cache_set(bt_scan_cache *c, char *path, const bt_scan_key *key, const bt_verdict *v)
{
    cache_entry *e = cache_find(c, path);
    if (e) {
        bt_free(path);
    } else {
        if (c->n == c->cap) {
            int cap = c->cap ? 2 * c->cap : 32;
            cache_entry *ne = bt_realloc(c->e, sizeof *ne * (size_t)cap);
            if (!ne) {
                bt_free(path);
                return false;
            }
            c->e = ne;
            c->cap = cap;
        }
        e = &c->e[c->n++];
        e->path = path;
    }
    e->key = *key;
    e->v = *v;
    return true;
}

/* Paths may hold any byte but NUL: tabs, newlines, control bytes and the
 * backslash itself are written as \xHH so that one entry stays one line. */
static void path_write(FILE *f, const char *p)
{
    for (const unsigned char *s = (const unsigned char *)p; *s; s++)
        if (*s < 0x20 || *s == 0x7f || *s == '\\')
            fprintf(f, "\\x%02x", *s);
        else
            fputc(*s, f);
}

static int hex_digit(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static char *path_read(const char *s, size_t n)
{
    char *out = bt_malloc(n + 1), *o = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\') {
            *o++ = s[i];
            continue;
        }
        int hi = i + 3 < n && s[i + 1] == 'x' ? hex_digit(s[i + 2]) : -1;
        int lo = hi >= 0 ? hex_digit(s[i + 3]) : -1;
        if (lo < 0 || (hi | lo) == 0) {
            bt_free(out);
            return NULL;
        }
        *o++ = (char)(hi * 16 + lo);
        i += 3;
    }
    *o = '\0';
    return out;
}

/* One line: PATH \t dev ino size mtime ctime kind code stage (tab-separated). */
static bool entry_parse(bt_scan_cache *c, const char *line, size_t len, bool keep_existing)
{
    const char *tab = memchr(line, '\t', len);
    if (!tab || tab == line)
        return false;
    long long dev, ino, size, mt, ct;
    int kind, code, stage, used = 0;
    char tail[512];
    size_t rest = len - (size_t)(tab - line);
    if (rest >= sizeof tail)
        return false;
    memcpy(tail, tab, rest);
    tail[rest] = '\0';
    if (sscanf(tail, "\t%lld\t%lld\t%lld\t%lld\t%lld\t%d\t%d\t%d%n", &dev, &ino, &size, &mt, &ct,
               &kind, &code, &stage, &used) != 8 || (size_t)used != rest)
        return false;
    if (kind < BT_VERDICT_CLEAN || kind > BT_VERDICT_EXITED || stage < 0 || stage >= BT_STAGE_COUNT)
        return false;
    char *path = path_read(line, (size_t)(tab - line));
    if (!path || path[0] != '/') {
        bt_free(path);
        return false;
    }
    if (keep_existing && cache_find(c, path)) {
        bt_free(path);
        return true;
    }
    bt_scan_key key = {dev, ino, size, mt, ct};
    bt_verdict v = {(bt_verdict_kind)kind, code, (bt_scan_stage)stage};
    return cache_set(c, path, &key, &v);
}

/* Reads the file into the cache. A file that is missing, too big or damaged in
 * any line adds nothing (its verdicts are simply made again). */
static void cache_load(bt_scan_cache *c, bool keep_existing)
{
    FILE *f = c->file ? fopen(c->file, "rb") : NULL;
    if (!f)
        return;
    char *buf = bt_malloc(BT_CACHE_MAX_BYTES + 1);
    size_t n = buf ? fread(buf, 1, BT_CACHE_MAX_BYTES + 1, f) : 0;
    fclose(f);
    if (buf)
        buf[n < BT_CACHE_MAX_BYTES ? n : BT_CACHE_MAX_BYTES] = '\0';
    size_t hl = strlen(BT_CACHE_HEADER);
    if (!buf || n > BT_CACHE_MAX_BYTES || n < hl || memcmp(buf, BT_CACHE_HEADER, hl) != 0) {
        bt_free(buf);
        return;
    }
    int had = c->n, lines = 0;
    bool ok = true;
    for (size_t at = hl; at < n && ok;) {
        const char *nl = memchr(buf + at, '\n', n - at);
        if (!nl || ++lines > BT_CACHE_MAX_ENTRIES) {
            ok = false;
            break;
        }
        ok = entry_parse(c, buf + at, (size_t)(nl - (buf + at)), keep_existing);
        at = (size_t)(nl - buf) + 1;
    }
    if (!ok) { /* drop what this file added */
        for (int i = had; i < c->n; i++)
            bt_free(c->e[i].path);
        c->n = had;
    }
    bt_free(buf);
}

const bt_verdict *bt_scan_cache_get(bt_scan_cache *c, const char *real, const bt_scan_key *key)
{
    if (!c)
        return NULL;
    if (!c->read) {
        c->read = true;
        cache_load(c, true);
    }
    cache_entry *e = cache_find(c, real);
    return e && memcmp(&e->key, key, sizeof *key) == 0 ? &e->v : NULL;
}

void bt_scan_cache_put(bt_scan_cache *c, const char *real, const bt_scan_key *key,
                       const bt_verdict *v)
{
    char *path = c ? str_join(real, "", "") : NULL;
    if (path && cache_set(c, path, key, v))
        c->dirty = true;
}

/* mkdir -p for the folder that holds file, private to the user (XDG asks 0700). */
static void make_parent_dirs(const char *file)
{
    char *d = str_join(file, "", "");
    if (!d)
        return;
    char *slash = strrchr(d, '/');
    if (slash && slash != d) {
        *slash = '\0';
        for (char *p = d + 1; *p; p++)
            if (*p == '/') {
                *p = '\0';
                mkdir(d, 0700);
                *p = '/';
            }
        mkdir(d, 0700);
    }
    bt_free(d);
}

/* Entries whose file is gone or changed are dropped: the cache holds only
 * what it could still answer. */
static void cache_prune(bt_scan_cache *c)
{
    int k = 0;
    for (int i = 0; i < c->n; i++) {
        bt_scan_key now;
        if (bt_scan_key_of(c->e[i].path, &now) && memcmp(&now, &c->e[i].key, sizeof now) == 0)
            c->e[k++] = c->e[i];
        else
            bt_free(c->e[i].path);
    }
    c->n = k;
}

void bt_scan_cache_save(bt_scan_cache *c)
{
    if (!c || !c->file || !c->dirty)
        return;
    c->dirty = false;
    cache_load(c, true); /* verdicts another process wrote meanwhile */
    cache_prune(c);
    make_parent_dirs(c->file);
    char suffix[48];
    snprintf(suffix, sizeof suffix, ".tmp.%ld", (long)getpid());
    char *tmp = str_join(c->file, suffix, "");
    int fd = tmp ? open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600) : -1;
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!f) {
        if (fd >= 0)
            close(fd);
        bt_free(tmp);
        return;
    }
    fputs(BT_CACHE_HEADER, f);
    for (int i = 0; i < c->n && i < BT_CACHE_MAX_ENTRIES; i++) {
        const cache_entry *e = &c->e[i];
        if (e->v.kind == BT_VERDICT_STOPPED)
            continue; /* this process's business only */
        path_write(f, e->path);
        fprintf(f, "\t%lld\t%lld\t%lld\t%lld\t%lld\t%d\t%d\t%d\n", (long long)e->key.dev,
                (long long)e->key.ino, (long long)e->key.size, (long long)e->key.mtime_ns,
                (long long)e->key.ctime_ns, (int)e->v.kind, e->v.code, (int)e->v.stage);
    }
    bool ok = !ferror(f);
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, c->file) != 0)
        unlink(tmp);
    bt_free(tmp);
}
