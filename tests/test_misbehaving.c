/* test_misbehaving.c: plugins that crash, hang or exit while registering, hand
 * over strings that never end, or return what their cell did not promise
 * (tests/plugins/bad_plugin.c and bad_cell.c, issue 12). The host must survive
 * every one with a message that names the file and says what went wrong, and
 * leave its registry as it was. Also the scan cache: a known file forks no
 * scan process, a changed one is scanned again, and a missing or broken cache
 * only costs a new scan. */
#define _GNU_SOURCE /* dladdr */
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "generate.h"
#include "unroll.h"

#ifndef BT_TEST_PLUGIN_DIR
#error "BT_TEST_PLUGIN_DIR (build/tests/plugins) must be defined by tests/meson.build"
#endif

static char err[64 * BT_ERRMSG_LEN]; /* a whole folder's messages */
static char tmp[64], cache[128];
static bt_registry *reg;

static const char *broken(const char *file)
{
    static char buf[4][512];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, 512, "%s/%s", BT_TEST_PLUGIN_DIR, file);
    return p;
}

static const char *shipped(const char *file)
{
    static char buf[512];
    snprintf(buf, sizeof buf, "%s/%s", BT_BUILD_PLUGIN_DIR, file);
    return buf;
}

static void rm_tree(const char *path)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    cr_assert_eq(system(cmd), 0);
}

static void setup(void)
{
    err[0] = '\0';
    snprintf(tmp, sizeof tmp, "/tmp/bt_misbehave_XXXXXX");
    cr_assert_not_null(mkdtemp(tmp), "mkdtemp: %s", strerror(errno));
    /* Every test starts from an empty cache of its own, so scans are counted. */
    snprintf(cache, sizeof cache, "%s/scan.cache", tmp);
    setenv("BPTT_PLUGIN_CACHE", cache, 1);
    setenv("HOME", tmp, 1); /* whatever a test does, ~/.cache is the test's own */
    unsetenv("BPTT_PLUGIN_SCAN");
    unsetenv("BPTT_PLUGIN_SCAN_TIMEOUT");
    reg = bt_registry_new();
    cr_assert_not_null(reg);
}

static void teardown(void)
{
    bt_registry_free(reg);
    rm_tree(tmp);
}

TestSuite(misbehaving, .init = setup, .fini = teardown);

/* ---- crash, hang or exit while registering: refused after a scan process ---------- */

static int scans_for(const char *path, bt_status want); /* below, with the cache tests */

/* path is refused with both needles in a message naming it; nothing changes and
 * the host never mapped the file. */
static void expect_refused(const char *path, const char *needle1, const char *needle2)
{
    bt_status st = bt_registry_load(reg, path, err, sizeof err);
    cr_expect_eq(st, BT_ERR_PLUGIN, "loading %s: %s (%s)", path, bt_status_name(st), err);
    cr_expect(strstr(err, path) != NULL, "message does not name %s: %s", path, err);
    cr_expect(strstr(err, needle1) != NULL, "message lacks '%s': %s", needle1, err);
    if (needle2)
        cr_expect(strstr(err, needle2) != NULL, "message lacks '%s': %s", needle2, err);
    cr_expect_eq(bt_registry_count(reg), 0);
    void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    cr_expect_null(h, "%s was mapped into the host", path);
    if (h)
        dlclose(h);
}

Test(misbehaving, init_dereferencing_null)
{
    expect_refused(broken("crash_init.so"),
                   "registering it in a separate scan process, it crashed with SIGSEGV "
                   "(segmentation fault) in its init function", "bptt did not load it");
    cr_expect_eq(bt_registry_scans(reg), 1);
}

Test(misbehaving, entry_symbol_that_is_data)
{
    expect_refused(broken("crash_entry_data.so"), "crashed with SIGSEGV",
                   "in its entry symbol bt_plugin_entry (is it a function?)");
}

Test(misbehaving, descriptor_pointer_to_nowhere)
{
    expect_refused(broken("crash_bad_desc.so"), "crashed with SIGSEGV",
                   "while bptt read the descriptor bt_plugin_entry returned (a bad pointer?)");
}

Test(misbehaving, constructor_that_crashes_inside_dlopen)
{
    expect_refused(broken("crash_ctor.so"), "crashed with SIGBUS (bus error)",
                   "while dlopen ran its constructors");
}

Test(misbehaving, definition_pointer_to_nowhere)
{
    expect_refused(broken("crash_def_pointer.so"), "crashed with SIGSEGV",
                   "while bptt read a cell definition it registered (a bad pointer?)");
}

Test(misbehaving, init_that_aborts)
{
    expect_refused(broken("crash_abort.so"), "crashed with SIGABRT (abort)",
                   "in its init function");
}

/* SIGTERM (or Ctrl-C's SIGINT, which reaches the scan process too) may be the
 * user's, not the plugin's: refused for this process, scanned again next time. */
Test(misbehaving, init_that_raises_sigterm)
{
    expect_refused(broken("crash_term.so"), "that process was ended by SIGTERM (terminated) in "
                   "its init function", "it scans it again on the next run");
    cr_expect_eq(bt_registry_load(reg, broken("crash_term.so"), err, sizeof err), BT_ERR_PLUGIN);
    cr_expect_eq(bt_registry_scans(reg), 1, "refused for the rest of this process");
    cr_expect_eq(bt_registry_load(reg, shipped("optim_sgd.so"), err, sizeof err), BT_OK, "%s", err);
    cr_expect_eq(scans_for(broken("crash_term.so"), BT_ERR_PLUGIN), 1, "not written to the file");
    cr_expect_eq(scans_for(shipped("optim_sgd.so"), BT_OK), 0, "the file with it is still valid");
}

Test(misbehaving, init_that_calls_exit)
{
    expect_refused(broken("exit_init.so"),
                   "it ended the process with exit status 3 in its init function",
                   "a plugin must return from init, never exit");
}

Test(misbehaving, init_that_never_returns, .timeout = 60)
{
    setenv("BPTT_PLUGIN_SCAN_TIMEOUT", "1", 1);
    expect_refused(broken("hang_init.so"),
                   "it was still running in its init function after 1 s (a hang?), so bptt "
                   "killed it", "raise BPTT_PLUGIN_SCAN_TIMEOUT");
}

/* A folder with crashing and hanging plugins among good ones: every bad one is
 * reported, every good one loads, and the hangs cost one time-out together. */
Test(misbehaving, folder_with_crashing_and_hanging_plugins, .timeout = 120)
{
    setenv("BPTT_PLUGIN_SCAN_TIMEOUT", "2", 1);
    bt_status st = bt_registry_load_dir(reg, BT_TEST_PLUGIN_DIR, err, sizeof err);
    cr_expect_eq(st, BT_ERR_PLUGIN, "%s", err);
    const char *crashed[] = {"crash_init.so", "crash_entry_data.so", "crash_bad_desc.so",
                             "crash_ctor.so", "crash_def_pointer.so", "crash_abort.so"};
    for (size_t i = 0; i < sizeof crashed / sizeof *crashed; i++) {
        const char *line = strstr(err, broken(crashed[i]));
        cr_expect(line && strstr(line, "crashed with"), "%s not reported: %s", crashed[i], err);
    }
    cr_expect(strstr(err, "still running in its init function after 2 s") != NULL, "%s", err);
    cr_expect(strstr(err, "exit status 3") != NULL, "%s", err);
    cr_expect_not_null(bt_registry_cell(reg, "cell_good"), "%s", err);
    cr_expect_not_null(bt_registry_optimizer(reg, "mixed_opt"), "%s", err);
    cr_expect_not_null(bt_registry_policy(reg, "endless_policy"), "%s", err);
}

/* ---- the scan cache ------------------------------------------------------------------- */

static int scans_for(const char *path, bt_status want)
{
    bt_registry *r = bt_registry_new();
    cr_assert_not_null(r);
    bt_status st = bt_registry_load(r, path, err, sizeof err);
    cr_expect_eq(st, want, "%s: %s", path, err);
    int n = bt_registry_scans(r);
    bt_registry_free(r);
    return n;
}

static void copy_file(const char *from, const char *to)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", from, to);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
}

Test(misbehaving, a_known_file_is_not_scanned_again)
{
    cr_expect_eq(scans_for(shipped("optim_sgd.so"), BT_OK), 1, "a new file is scanned");
    cr_expect_eq(scans_for(shipped("optim_sgd.so"), BT_OK), 0, "a known file is not");
    cr_expect_eq(scans_for(broken("crash_init.so"), BT_ERR_PLUGIN), 1);
    cr_expect_eq(scans_for(broken("crash_init.so"), BT_ERR_PLUGIN), 0);
    cr_expect(strstr(err, "crashed with SIGSEGV") != NULL, "the cached verdict says how: %s", err);
    struct stat sb;
    cr_expect_eq(stat(cache, &sb), 0, "no cache file %s", cache);
}

/* The verdict is keyed by path, size and times: a changed file is scanned again. */
Test(misbehaving, a_changed_file_is_scanned_again)
{
    char path[256];
    snprintf(path, sizeof path, "%s/plugin.so", tmp);
    copy_file(broken("crash_init.so"), path);
    cr_expect_eq(scans_for(path, BT_ERR_PLUGIN), 1);
    cr_expect_eq(scans_for(path, BT_ERR_PLUGIN), 0);
    copy_file(shipped("optim_sgd.so"), path); /* fixed: same path, new contents */
    cr_expect_eq(scans_for(path, BT_OK), 1, "%s", err);
    cr_expect_eq(scans_for(path, BT_OK), 0);
    struct timespec times[2] = {{0, UTIME_OMIT}, {12345, 0}}; /* touch: mtime only */
    cr_assert_eq(utimensat(AT_FDCWD, path, times, 0), 0);
    cr_expect_eq(scans_for(path, BT_OK), 1, "a touched file is scanned again");
}

/* No cache file (unwritable place, or turned off): every run scans, nothing fails. */
Test(misbehaving, an_unwritable_cache_only_costs_scans)
{
    char file[128], place[160];
    snprintf(file, sizeof file, "%s/a_file", tmp); /* no folder can be made under a file */
    FILE *f = fopen(file, "w");
    cr_assert_not_null(f);
    fclose(f);
    snprintf(place, sizeof place, "%s/sub/scan.cache", file);
    setenv("BPTT_PLUGIN_CACHE", place, 1);
    cr_expect_eq(scans_for(shipped("optim_sgd.so"), BT_OK), 1, "%s", err);
    cr_expect_eq(scans_for(shipped("optim_sgd.so"), BT_OK), 1, "%s", err);
    setenv("BPTT_PLUGIN_CACHE", "", 1);
    cr_expect_eq(scans_for(shipped("optim_sgd.so"), BT_OK), 1, "%s", err);
    /* Within one registry a verdict is remembered even without a file. */
    cr_expect_eq(bt_registry_load(reg, broken("crash_init.so"), err, sizeof err), BT_ERR_PLUGIN);
    cr_expect_eq(bt_registry_load(reg, broken("crash_init.so"), err, sizeof err), BT_ERR_PLUGIN);
    cr_expect_eq(bt_registry_scans(reg), 1);
}

/* A cache file damaged anywhere (a torn write, a stray edit) is ignored as a
 * whole: here a line that would condemn optim_sgd.so, with the file's true key,
 * is followed by garbage, so it must not be believed. */
Test(misbehaving, a_damaged_cache_is_ignored_and_rewritten)
{
    const char *sgd = shipped("optim_sgd.so");
    char *real = realpath(sgd, NULL);
    struct stat sb;
    cr_assert(real && stat(real, &sb) == 0);
    for (int damaged = 1; damaged >= 0; damaged--) {
        FILE *f = fopen(cache, "w");
        cr_assert_not_null(f);
        fprintf(f, "bptt plugin scan cache 1\n%s\t%lld\t%lld\t%lld\t%lld\t%lld\t2\t11\t4\n",
                real, (long long)sb.st_dev, (long long)sb.st_ino, (long long)sb.st_size,
                (long long)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec,
                (long long)sb.st_ctim.tv_sec * 1000000000 + sb.st_ctim.tv_nsec);
        if (damaged)
            fprintf(f, "%s\t1\t2\tgarbage\n", sgd);
        fclose(f);
        if (!damaged)
            break;
        cr_expect_eq(scans_for(sgd, BT_OK), 1, "%s", err);
        cr_expect_eq(scans_for(sgd, BT_OK), 0, "the rewritten cache answers");
    }
    /* The same line alone is believed: the test above is not vacuous. */
    cr_expect_eq(scans_for(sgd, BT_ERR_PLUGIN), 0);
    cr_expect(strstr(err, "crashed with SIGSEGV") != NULL, "%s", err);
    free(real);
}

/* A verdict belongs to one file: a copy at another path is scanned on its own. */
Test(misbehaving, a_verdict_for_another_file_does_not_apply)
{
    cr_expect_eq(scans_for(shipped("optim_sgd.so"), BT_OK), 1);
    char path[256];
    snprintf(path, sizeof path, "%s/optim_sgd.so", tmp); /* same name, another file */
    copy_file(shipped("optim_sgd.so"), path);
    cr_expect_eq(scans_for(path, BT_OK), 1);
}

Test(misbehaving, scanning_can_be_turned_off_for_a_debugger)
{
    setenv("BPTT_PLUGIN_SCAN", "0", 1);
    cr_expect_eq(scans_for(shipped("optim_sgd.so"), BT_OK), 0, "%s", err);
    struct stat sb;
    cr_expect_neq(stat(cache, &sb), 0, "no scan, no cache file");
}

/* Without BPTT_PLUGIN_CACHE the cache lives under $XDG_CACHE_HOME/bptt, else
 * ~/.cache/bptt (which the test points at its own folder). */
Test(misbehaving, cache_under_xdg_cache_home_or_home)
{
    char xdg[128], home[128], want[300];
    const char *real = sizeof(bt_real) == sizeof(double) ? "double" : "float";
    unsetenv("BPTT_PLUGIN_CACHE");
    snprintf(xdg, sizeof xdg, "%s/xdg", tmp);
    setenv("XDG_CACHE_HOME", xdg, 1);
    cr_expect_eq(scans_for(shipped("optim_sgd.so"), BT_OK), 1, "%s", err);
    snprintf(want, sizeof want, "%s/bptt/plugins-abi%d.%d-%s.cache", xdg, BT_ABI_MAJOR,
             BT_ABI_MINOR, real);
    struct stat sb;
    cr_expect_eq(stat(want, &sb), 0, "no %s", want);
    cr_expect_eq(sb.st_mode & 0777, 0600, "the cache is private");
    unsetenv("XDG_CACHE_HOME");
    snprintf(home, sizeof home, "%s/home", tmp);
    setenv("HOME", home, 1);
    cr_expect_eq(scans_for(shipped("optim_sgd.so"), BT_OK), 1, "%s", err);
    snprintf(want, sizeof want, "%s/.cache/bptt/plugins-abi%d.%d-%s.cache", home, BT_ABI_MAJOR,
             BT_ABI_MINOR, real);
    cr_expect_eq(stat(want, &sb), 0, "no %s", want);
}

/* A relative BPTT_PLUGIN_PATH entry is resolved once, against the folder the
 * process is in when it loads the default plugins: files show absolute paths. */
Test(misbehaving, relative_plugin_path_is_resolved_against_the_current_folder)
{
    char dir[128], path[256], want[256], cwd[512];
    snprintf(dir, sizeof dir, "%s/mine", tmp);
    cr_assert_eq(mkdir(dir, 0755), 0);
    snprintf(path, sizeof path, "%s/optim_sgd.so", dir);
    copy_file(shipped("optim_sgd.so"), path);
    cr_assert_not_null(getcwd(cwd, sizeof cwd));
    cr_assert_eq(chdir(tmp), 0);
    setenv("BPTT_PLUGIN_PATH", "mine", 1);
    bt_registry_load_default(reg, err, sizeof err);
    cr_assert_eq(chdir(cwd), 0);
    const bt_registry_entry *e = bt_registry_find(reg, BT_KIND_OPTIMIZER, "sgd");
    cr_assert_not_null(e, "%s", err);
    snprintf(want, sizeof want, "%s/mine/optim_sgd.so", tmp);
    cr_expect_str_eq(e->file, want);
}

/* ---- strings that never end (each plugin's string runs on past the bound) ------------ */

static void expect_string_refused(const char *file, const char *needle)
{
    const char *path = broken(file);
    bt_status st = bt_registry_load(reg, path, err, sizeof err);
    cr_expect_eq(st, BT_ERR_PLUGIN, "%s: %s", path, err);
    cr_expect(strstr(err, path) != NULL, "message does not name %s: %s", path, err);
    cr_expect(strstr(err, needle) != NULL, "message lacks '%s': %s", needle, err);
    cr_expect_eq(bt_registry_count(reg), 0);
}

Test(misbehaving, unterminated_names_summaries_and_versions)
{
    expect_string_refused("str_name.so", "optimizer name 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                                         "...' is invalid (longer than 31 bytes, or not "
                                         "NUL-terminated)");
    expect_string_refused("str_summary.so", "optimizer 'endless_summary' has a summary that does "
                                            "not end within 255 bytes (is it NUL-terminated?)");
    expect_string_refused("str_summary_escape.so", "optimizer 'escape_summary' has a summary with "
                                                   "control characters");
    expect_string_refused("str_plugin_name.so", "has an invalid name 'xxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                                                "xxxxxxxxxxxx...' (longer than 31 bytes, or not "
                                                "NUL-terminated)");
    expect_string_refused("str_version.so", "has a version string that does not end within 63 "
                                            "bytes");
}

Test(misbehaving, init_error_buffer_without_a_nul)
{
    char small[64];
    memset(small, '#', sizeof small);
    cr_expect_eq(bt_registry_load(reg, broken("str_init_err.so"), err, sizeof err),
                 BT_ERR_PLUGIN);
    cr_expect(strstr(err, "init failed: eeee") != NULL, "%s", err);
    cr_expect_lt(strlen(err), sizeof err);
    /* The host's copy of the plugin's 512 bytes stops at its own buffer. */
    cr_expect_eq(bt_registry_load(reg, broken("str_init_err.so"), small, sizeof small),
                 BT_ERR_PLUGIN);
    cr_expect_eq(strlen(small), sizeof small - 1);
}

/* The registry keeps its own copies: a def's name and summary are the entry's. */
Test(misbehaving, registered_strings_are_host_copies)
{
    cr_assert_eq(bt_registry_load(reg, broken("good_mixed.so"), err, sizeof err), BT_OK, "%s", err);
    const bt_registry_entry *e = bt_registry_find(reg, BT_KIND_OPTIMIZER, "mixed_opt");
    cr_assert_not_null(e);
    const bt_optimizer_def *d = e->def;
    cr_expect_eq(d->name, e->name);
    cr_expect_eq(d->summary, e->summary);
    cr_expect_str_eq(d->summary, "test optimizer");
    Dl_info info;
    cr_expect(!dladdr(d->summary, &info) || !strstr(info.dli_fname, "good_mixed"),
              "the summary still points into the plugin");
}

/* describe() filling the host's buffer to its last byte, and create() doing the
 * same with its error buffer: the host reads a terminated, bounded string. */
Test(misbehaving, describe_and_create_without_a_nul)
{
    cr_assert_eq(bt_registry_load(reg, broken("str_describe.so"), err, sizeof err), BT_OK, "%s",
                 err);
    bt_params *p = bt_params_new();
    cr_assert(bt_params_add(p, "w", 1, (int[]){3}) && bt_params_finalize(p) == BT_OK);
    bt_optimizer *o = NULL;
    cr_assert_eq(bt_optimizer_new(reg, "endless_opt", p, &o, err, sizeof err), BT_OK, "%s", err);
    char buf[16];
    cr_expect_eq(strlen(bt_optimizer_describe(o, buf, sizeof buf)), sizeof buf - 1);
    cr_expect_str_eq(buf, "ddddddddddddddd");
    bt_optimizer_free(o);
    cr_expect_eq(bt_optimizer_new(reg, "endless_opt:fail", p, &o, err, sizeof err), BT_ERR_ARG);
    cr_expect_lt(strlen(err), sizeof err);
    cr_expect(strncmp(err, "eeee", 4) == 0, "%s", err);
    bt_params_free(p);

    const bt_policy_def *pd = bt_registry_policy(reg, "endless_policy");
    cr_assert_not_null(pd);
    void *ps = NULL;
    cr_assert_eq(bt_policy_create(pd, "", &ps, err, sizeof err), BT_OK, "%s", err);
    cr_expect_not_null(bt_policy_describe(pd, ps, buf, sizeof buf));
    cr_expect_str_eq(buf, "ddddddddddddddd");
    pd->destroy(ps);
    cr_expect_eq(bt_policy_create(pd, "fail", &ps, err, sizeof err), BT_ERR_ARG);
    cr_expect_null(ps);
    cr_expect_lt(strlen(err), sizeof err);
    cr_expect(strncmp(err, "eeee", 4) == 0, "%s", err);
}

/* parse_options, called by plugins: an option name or `what` that never ends
 * is read with a bound (an option table is refused, `what` is cut). */
Test(misbehaving, option_names_without_a_nul)
{
    static struct {
        char name[40];
        char more[200];
    } endless;
    memset(&endless, 'o', sizeof endless);
    double v = 0;
    bt_option opts[] = {{"lr", &v, 0, 1, false, true, false, false},
                        {endless.name, &v, 0, 1, false, false, false, false}};
    cr_expect_eq(bt_parse_options("0.5", opts, 2, "optimizer x", err, sizeof err), BT_ERR_ARG);
    cr_expect_str_eq(err, "optimizer x: bad option table: option 1 needs a name of 1 to 31 plain "
                          "characters");
    cr_expect_eq(bt_parse_options("nope=1", opts, 1, endless.name, err, sizeof err), BT_ERR_ARG);
    cr_expect_lt(strlen(err), 150, "what is cut to 95 bytes: %s", err);
    cr_expect(strstr(err, "unknown option 'nope'") != NULL, "%s", err);
}

/* ---- cells that break their promises (bad_cell.c) ------------------------------------- */

enum { V = 5, H = 8, B = 2, T = 3 };

/* The model of cell NAME from tests/plugins/NAME.so, or the refusal in err. */
static bt_status cell_model(const char *name, bt_model **m)
{
    char file[64];
    snprintf(file, sizeof file, "%s.so", name);
    cr_assert_eq(bt_registry_load(reg, broken(file), err, sizeof err), BT_OK, "%s", err);
    const bt_cell_def *def = bt_registry_cell(reg, name);
    cr_assert_not_null(def);
    *m = NULL;
    return bt_model_new(def, (bt_cell_dims){V, H, V}, m, err, sizeof err);
}

/* "cell 'NAME' (plugin .../NAME.so)": every message names the cell and its file. */
static void expect_names_cell(const char *name, const char *msg)
{
    char who[600];
    snprintf(who, sizeof who, "cell '%s' (plugin %s/%s.so)", name, BT_TEST_PLUGIN_DIR, name);
    cr_expect(strstr(msg, who) != NULL, "message does not say '%s': %s", who, msg);
}

static void expect_declaration_refused(const char *name, const char *needle)
{
    bt_model *m = NULL;
    cr_expect_eq(cell_model(name, &m), BT_ERR_PLUGIN, "%s: %s", name, err);
    cr_expect_null(m);
    expect_names_cell(name, err);
    cr_expect(strstr(err, needle) != NULL, "%s: message lacks '%s': %s", name, needle, err);
}

Test(misbehaving, cells_declaring_what_cannot_be)
{
    expect_declaration_refused("cell_state_zero", "states() declared state 0 of width 0");
    expect_declaration_refused("cell_state_count", "states() declared 7 states; a cell has 1 to 4");
    expect_declaration_refused("cell_param_negative",
                               "parameter 3 ('C') dimension 1 has size -5: sizes must be positive");
    expect_declaration_refused("cell_param_name",
                               "parameter 1 ('UUUUUUUUUUUUUUUUUUUUUUUUUUUUUUU') has a name that "
                               "does not end within 31 bytes");
    expect_declaration_refused("cell_param_count", "params() declared 17 parameters; a cell has "
                                                   "1 to 16");
    expect_declaration_refused("cell_param_huge", "more than the");
    expect_declaration_refused("cell_param_error", "params() refused these sizes: !!!!");
    cr_expect_lt(strlen(err), sizeof err);
}

/* A state width of 2^30 passes as a declaration on a large machine, but no
 * batch of it fits: the unroller refuses before allocating. */
Test(misbehaving, absurd_state_width_is_refused_before_allocating)
{
    bt_model *m = NULL;
    bt_status st = cell_model("cell_state_huge", &m);
    if (st != BT_OK) { /* a machine under 16 GiB refuses it at once */
        expect_names_cell("cell_state_huge", err);
        cr_expect(strstr(err, "states 1073741824 wide") != NULL, "%s", err);
        return;
    }
    bt_unroller *u = NULL;
    cr_expect_eq(bt_unroller_new(m, 32, T, &u, err, sizeof err), BT_ERR_NOMEM);
    cr_expect_null(u);
    expect_names_cell("cell_state_huge", err);
    cr_expect(strstr(err, "states of 34359738368 values at batch 32") != NULL, "%s", err);
    bt_model_free(m);
}

/* One step of the cell through bt_unroll_step (what every window, validation,
 * gradient check and analysis runs): NULL, and the graph says why. */
static void expect_step_refused(const char *name, const char *needle)
{
    bt_model *m = NULL;
    cr_assert_eq(cell_model(name, &m), BT_OK, "%s: %s", name, err);
    bt_graph *g = bt_graph_new();
    int32_t ids[B * T] = {0, 1, 2, 3, 4, 0}, targets[B * T] = {1, 2, 3, 4, 0, 1};
    bt_sequence seq = {.B = B, .T = T, .ids = ids, .targets = targets};
    bt_real zero[B * H] = {0};
    bt_tensor *state[BT_MAX_STATES] = {bt_graph_input(g, 2, (int[]){B, H}, zero)};
    bt_tensor *next[BT_MAX_STATES];
    cr_expect_null(bt_unroll_step(g, m, &seq, 0, state, next), "%s: the step was accepted", name);
    cr_expect_eq(bt_graph_status(g), BT_ERR_PLUGIN, "%s: %s", name, bt_graph_error(g));
    expect_names_cell(name, bt_graph_error(g));
    cr_expect(strstr(bt_graph_error(g), needle) != NULL, "%s: message lacks '%s': %s", name,
              needle, bt_graph_error(g));
    bt_graph_free(g);
    bt_model_free(m);
}

Test(misbehaving, steps_that_break_their_promises)
{
    expect_step_refused("cell_step_null", "returned no output and reported no error");
    expect_step_refused("cell_next_unset", "left next_state[0] unset");
    expect_step_refused("cell_next_wide", "returned next_state[0] of shape [2,16], but states() "
                                          "declared [2,8]");
    expect_step_refused("cell_next_is_output", "returned next_state[0] of shape [2,5], but "
                                               "states() declared [2,8]");
    expect_step_refused("cell_output_width", "returned an output of shape [2,8] where [2,5] "
                                             "(rows, output width) is due");
}

/* Training windows: the unroller used to copy a too-wide next state over its
 * ring (a heap overflow under ASan), and to train on through a NULL step. */
static void expect_run_refused(const char *name, const char *needle)
{
    bt_model *m = NULL;
    cr_assert_eq(cell_model(name, &m), BT_OK, "%s: %s", name, err);
    cr_assert_eq(bt_registry_load(reg, shipped("policy_full.so"), err, sizeof err), BT_OK, "%s",
                 err);
    const bt_policy_def *pd = bt_registry_policy(reg, "full");
    void *ps = NULL;
    cr_assert_eq(bt_policy_create(pd, "", &ps, err, sizeof err), BT_OK, "%s", err);
    bt_unroller *u = NULL;
    cr_assert_eq(bt_unroller_new(m, B, T, &u, err, sizeof err), BT_OK, "%s", err);
    int32_t ids[B * T] = {0, 1, 2, 3, 4, 0}, targets[B * T] = {1, 2, 3, 4, 0, 1};
    bt_sequence seq = {.B = B, .T = T, .ids = ids, .targets = targets};
    bt_real h[B * H] = {0};
    bt_real *state[1] = {h};
    bt_unroll_opts opts = {.policy = pd, .policy_state = ps, .accumulate = true};
    bt_unroll_result res = {0};
    bt_status st = bt_unroll_run(u, &seq, state, &opts, NULL, NULL, NULL, &res, err, sizeof err);
    cr_expect_eq(st, BT_ERR_PLUGIN, "%s: %s (%s)", name, bt_status_name(st), err);
    expect_names_cell(name, err);
    cr_expect(strstr(err, needle) != NULL, "%s: message lacks '%s': %s", name, needle, err);
    bt_unroller_free(u);
    pd->destroy(ps);
    bt_model_free(m);
}

Test(misbehaving, training_windows_refuse_broken_steps)
{
    expect_run_refused("cell_next_wide", "returned next_state[0] of shape [2,16]");
    expect_run_refused("cell_step_null", "returned no output and reported no error");
}

Test(misbehaving, generation_refuses_a_broken_step)
{
    bt_model *m = NULL;
    cr_assert_eq(cell_model("cell_next_unset", &m), BT_OK, "%s", err);
    int32_t prefix[2] = {1, 2}, out[4];
    bt_status st = bt_generate(m, prefix, 2, 4, 0, NULL, out, err, sizeof err);
    cr_expect_eq(st, BT_ERR_PLUGIN, "%s", err);
    expect_names_cell("cell_next_unset", err);
    cr_expect(strstr(err, "left next_state[0] unset") != NULL, "%s", err);
    bt_model_free(m);
}

/* The control: the same cell keeping its promises works through all of it. */
Test(misbehaving, the_well_behaved_cell_runs)
{
    bt_model *m = NULL;
    cr_assert_eq(cell_model("cell_good", &m), BT_OK, "%s", err);
    int32_t prefix[2] = {1, 2}, out[4];
    cr_expect_eq(bt_generate(m, prefix, 2, 4, 0, NULL, out, err, sizeof err), BT_OK, "%s", err);
    bt_model_free(m);
}
