/* test_plugins.c: the loader against the shipped optimizer plugins and against
 * deliberately broken ones (tests/plugins/): every failure returns a status and
 * a message naming the file and the cause, closes the handle, and leaves the
 * registry exactly as it was. Also the host table and the option parser. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "registry.h"

#ifndef BT_TEST_PLUGIN_DIR
#error "BT_TEST_PLUGIN_DIR (build/tests/plugins) must be defined by tests/meson.build"
#endif

static char err[64 * BT_ERRMSG_LEN]; /* a whole folder's messages */
static char tmp[64];
static bt_registry *reg;

static const char *shipped(const char *file)
{
    static char buf[4][512];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, 512, "%s/%s", BT_BUILD_PLUGIN_DIR, file);
    return p;
}

static const char *broken(const char *file)
{
    static char buf[4][512];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, 512, "%s/%s", BT_TEST_PLUGIN_DIR, file);
    return p;
}

static void load_ok(const char *path)
{
    bt_status st = bt_registry_load(reg, path, err, sizeof err);
    cr_assert_eq(st, BT_OK, "loading %s: %s: %s", path, bt_status_name(st), err);
}

static void rm_tree(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char sub[512];
        snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
        unlink(sub);
    }
    closedir(d);
    rmdir(path);
}

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb");
    cr_assert_not_null(in, "open %s: %s", from, strerror(errno));
    FILE *out = fopen(to, "wb");
    cr_assert_not_null(out, "create %s: %s", to, strerror(errno));
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        cr_assert_eq(fwrite(buf, 1, n, out), n);
    fclose(in);
    cr_assert_eq(fclose(out), 0);
}

static void setup(void)
{
    err[0] = '\0';
    snprintf(tmp, sizeof tmp, "/tmp/bt_plug_test_XXXXXX");
    cr_assert_not_null(mkdtemp(tmp), "mkdtemp: %s", strerror(errno));
    reg = bt_registry_new();
    cr_assert_not_null(reg);
}

static void teardown(void)
{
    bt_registry_free(reg);
    rm_tree(tmp);
}

TestSuite(plugins, .init = setup, .fini = teardown);

/* ---- snapshots: "the registry is unchanged" made checkable ----------------------- */

typedef struct snapshot {
    int count;
    char rows[32][256];
} snapshot;

static void snapshot_take(snapshot *s)
{
    s->count = bt_registry_count(reg);
    cr_assert_leq(s->count, 32);
    for (int i = 0; i < s->count; i++) {
        const bt_registry_entry *e = bt_registry_at(reg, i);
        snprintf(s->rows[i], sizeof s->rows[i], "%s|%s|%s|%s|%s|%p",
                 bt_plugin_kind_name(e->kind), e->name, e->plugin, e->plugin_version, e->file,
                 e->def);
    }
}

static void snapshot_expect_equal(const snapshot *a, const snapshot *b, const char *what)
{
    cr_expect_eq(a->count, b->count, "%s: registry count changed %d -> %d", what, a->count, b->count);
    for (int i = 0; i < a->count && i < b->count; i++)
        cr_expect_str_eq(a->rows[i], b->rows[i], "%s: entry %d changed", what, i);
}

/* A registry with something in it, so "unchanged" means more than "still empty". */
static void load_baseline(void)
{
    load_ok(shipped("optim_sgd.so"));
    load_ok(shipped("optim_adam.so"));
    load_ok(broken("dup_a.so"));
}

/* The common shape of every failure test. needle2 may be NULL. */
static void expect_load_fails(const char *path, bt_status want, const char *needle1,
                              const char *needle2)
{
    load_baseline();
    snapshot before, after;
    snapshot_take(&before);
    bt_status st = bt_registry_load(reg, path, err, sizeof err);
    cr_expect_eq(st, want, "loading %s: want %s, got %s (%s)", path, bt_status_name(want),
                 bt_status_name(st), err);
    cr_expect(strstr(err, path) != NULL, "message does not name the file %s: %s", path, err);
    cr_expect(strstr(err, needle1) != NULL, "message lacks '%s': %s", needle1, err);
    if (needle2)
        cr_expect(strstr(err, needle2) != NULL, "message lacks '%s': %s", needle2, err);
    snapshot_take(&after);
    snapshot_expect_equal(&before, &after, path);
    /* The handle was closed: the object is no longer mapped. */
    void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    cr_expect_null(h, "%s is still loaded after a failed load", path);
    if (h)
        dlclose(h);
}

/* ---- the shipped plugins ---------------------------------------------------------- */

Test(plugins, shipped_optimizers_load_with_file_and_version)
{
    const char *files[] = {"optim_sgd.so", "optim_momentum.so", "optim_adam.so"};
    const char *names[] = {"sgd", "momentum", "adam"};
    for (int i = 0; i < 3; i++)
        load_ok(shipped(files[i]));
    cr_assert_eq(bt_registry_count(reg), 3);
    for (int i = 0; i < 3; i++) {
        const bt_registry_entry *e = bt_registry_find(reg, BT_KIND_OPTIMIZER, names[i]);
        cr_assert_not_null(e, "optimizer %s not registered", names[i]);
        cr_expect_str_eq(e->file, shipped(files[i]));
        char plugin[64];
        snprintf(plugin, sizeof plugin, "optim_%s", names[i]);
        cr_expect_str_eq(e->plugin, plugin);
        cr_expect_str_eq(e->plugin_version, "1.0.0");
        cr_expect(e->summary && e->summary[0], "%s has no summary", names[i]);
        cr_expect_eq(e->def, (const void *)bt_registry_optimizer(reg, names[i]));
    }
    /* Sorted by name within the kind. */
    cr_expect_str_eq(bt_registry_at(reg, 0)->name, "adam");
    cr_expect_str_eq(bt_registry_at(reg, 1)->name, "momentum");
    cr_expect_str_eq(bt_registry_at(reg, 2)->name, "sgd");
    cr_expect_null(bt_registry_at(reg, 3));
    cr_expect_null(bt_registry_at(reg, -1));
    cr_expect_null(bt_registry_optimizer(reg, "nadam"));
    cr_expect_null(bt_registry_cell(reg, "sgd"), "lookups are per kind");
}

Test(plugins, entries_sorted_by_kind_then_name)
{
    load_ok(shipped("optim_sgd.so"));
    load_ok(broken("good_mixed.so"));
    load_ok(shipped("optim_adam.so"));
    const char *want[][2] = {{"cell", "aa_cell"}, {"policy", "zz_policy"}, {"optimizer", "adam"},
                             {"optimizer", "mixed_opt"}, {"optimizer", "sgd"},
                             {"estimator", "aa_est"}};
    cr_assert_eq(bt_registry_count(reg), 6);
    for (int i = 0; i < 6; i++) {
        const bt_registry_entry *e = bt_registry_at(reg, i);
        cr_expect_str_eq(bt_plugin_kind_name(e->kind), want[i][0], "entry %d", i);
        cr_expect_str_eq(e->name, want[i][1], "entry %d", i);
    }
    cr_expect_not_null(bt_registry_cell(reg, "aa_cell"));
    cr_expect_not_null(bt_registry_policy(reg, "zz_policy"));
    cr_expect_not_null(bt_registry_estimator(reg, "aa_est"));
    cr_expect_null(bt_registry_estimator(reg, "aa_cell"), "names are per kind");
}

/* The one list of names per kind that every "unknown ..." message uses. */
Test(plugins, registry_names_per_kind)
{
    char buf[128];
    cr_expect_str_eq(bt_registry_names(reg, BT_KIND_POLICY, buf, sizeof buf),
                     "none: no policy plugin is loaded");
    load_ok(shipped("optim_sgd.so"));
    load_ok(broken("good_mixed.so"));
    load_ok(shipped("optim_adam.so"));
    cr_expect_str_eq(bt_registry_names(reg, BT_KIND_OPTIMIZER, buf, sizeof buf),
                     "adam, mixed_opt, sgd");
    cr_expect_str_eq(bt_registry_names(reg, BT_KIND_CELL, buf, sizeof buf), "aa_cell");
    cr_expect_str_eq(bt_registry_names(reg, BT_KIND_POLICY, buf, sizeof buf), "zz_policy");
    cr_expect_str_eq(bt_registry_names(reg, BT_KIND_ESTIMATOR, buf, sizeof buf), "aa_est");
    char small[8];
    cr_expect_str_eq(bt_registry_names(reg, BT_KIND_OPTIMIZER, small, sizeof small), "adam, m");
}

Test(plugins, only_the_entry_symbol_is_exported)
{
    const char *files[] = {"optim_sgd.so", "optim_momentum.so", "optim_adam.so"};
    for (int i = 0; i < 3; i++) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "nm -D --defined-only '%s' 2>/dev/null", shipped(files[i]));
        FILE *p = popen(cmd, "r");
        cr_assert_not_null(p);
        char line[512];
        int entries = 0, others = 0;
        while (fgets(line, sizeof line, p)) {
            line[strcspn(line, "\n")] = '\0';
            const char *sym = strrchr(line, ' ');
            sym = sym ? sym + 1 : line;
            if (strcmp(sym, "bt_plugin_entry") == 0)
                entries++;
            else if (strncmp(sym, "__", 2) != 0 && strcmp(sym, "_init") && strcmp(sym, "_fini")) {
                others++; /* sanitizer builds add __asan_* / __ubsan_* helpers; those are not ours */
                cr_expect_fail("%s exports %s", files[i], sym);
            }
        }
        int rc = pclose(p);
        if (rc != 0 && entries == 0)
            cr_skip_test("nm is not available");
        cr_expect_eq(entries, 1, "%s: bt_plugin_entry exported %d times", files[i], entries);
        cr_expect_eq(others, 0);
    }
}

Test(plugins, load_dir_skips_a_plugin_already_loaded)
{
    char a[128], b[128], path[256];
    snprintf(a, sizeof a, "%s/a", tmp);
    snprintf(b, sizeof b, "%s/b", tmp);
    cr_assert_eq(mkdir(a, 0755), 0);
    cr_assert_eq(mkdir(b, 0755), 0);
    snprintf(path, sizeof path, "%s/optim_sgd.so", a);
    copy_file(shipped("optim_sgd.so"), path);
    snprintf(path, sizeof path, "%s/optim_adam.so", a);
    copy_file(shipped("optim_adam.so"), path);
    snprintf(path, sizeof path, "%s/optim_sgd.so", b);
    copy_file(shipped("optim_sgd.so"), path);
    snprintf(path, sizeof path, "%s/README.txt", b); /* not *.so: ignored */
    copy_file(shipped("optim_sgd.so"), path);

    cr_assert_eq(bt_registry_load_dir(reg, a, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_registry_count(reg), 2);
    snapshot before, after;
    snapshot_take(&before);
    cr_assert_eq(bt_registry_load_dir(reg, b, err, sizeof err), BT_OK, "%s", err);
    cr_expect_str_eq(err, "", "a skipped copy is silent");
    cr_assert_eq(bt_registry_load_dir(reg, a, err, sizeof err), BT_OK, "%s", err);
    snapshot_take(&after);
    snapshot_expect_equal(&before, &after, "second copy");
    /* The earlier folder wins. */
    char want[256];
    snprintf(want, sizeof want, "%s/optim_sgd.so", a);
    const bt_registry_entry *e = bt_registry_find(reg, BT_KIND_OPTIMIZER, "sgd");
    cr_assert_not_null(e);
    cr_expect_str_eq(e->file, want);
}

Test(plugins, load_twice_by_file_is_refused)
{
    load_baseline();
    char copy[256];
    snprintf(copy, sizeof copy, "%s/optim_sgd.so", tmp);
    copy_file(shipped("optim_sgd.so"), copy);
    snapshot before, after;
    snapshot_take(&before);
    cr_expect_eq(bt_registry_load(reg, copy, err, sizeof err), BT_ERR_PLUGIN);
    cr_expect(strstr(err, "already loaded") && strstr(err, copy) &&
              strstr(err, shipped("optim_sgd.so")), "%s", err);
    snapshot_take(&after);
    snapshot_expect_equal(&before, &after, copy);
}

Test(plugins, load_dir_reports_every_error_and_loads_the_rest, .timeout = 120)
{
    setenv("BPTT_PLUGIN_SCAN_TIMEOUT", "2", 1); /* hang_init.so is among them */
    bt_status st = bt_registry_load_dir(reg, BT_TEST_PLUGIN_DIR, err, sizeof err);
    cr_expect_eq(st, BT_ERR_PLUGIN, "%s", err);
    /* Sorted order: bad_cell.so fails first; its message opens err. */
    const char *nl = strchr(err, '\n'), *cell = strstr(err, broken("bad_cell.so"));
    cr_expect(cell && nl && cell < nl, "first message: %s", err);
    cr_expect(strstr(err, broken("bad_major.so")) != NULL, "%s", err);
    cr_expect(strstr(err, broken("bad_not_elf.so")) != NULL, "%s", err);
    cr_expect(strstr(err, "\n") != NULL, "one line per failure: %s", err);
    /* The good ones loaded; dup_b lost the race to dup_a and left nothing behind. */
    const bt_registry_entry *e = bt_registry_find(reg, BT_KIND_OPTIMIZER, "dupopt");
    cr_assert_not_null(e, "%s", err);
    cr_expect_str_eq(e->plugin, "dup_a");
    cr_expect_not_null(bt_registry_optimizer(reg, "mixed_opt"));
    cr_expect_null(bt_registry_optimizer(reg, "onlyb"));
    cr_expect_null(bt_registry_optimizer(reg, "staged_opt"));
    cr_expect_not_null(bt_registry_cell(reg, "big_cell"));
    /* dupopt, good_mixed's four, big_cell, good_def_2_0's two, doc_policy, the
     * 15 cells of bad_cell.c (they misbehave only when used), str_describe's
     * optimizer and policy, and probe_optim's three optimizers. */
    cr_expect_eq(bt_registry_count(reg), 29);
    cr_expect_not_null(bt_registry_optimizer(reg, "probe_old"));
}

Test(plugins, load_dir_missing_folder)
{
    char path[128];
    snprintf(path, sizeof path, "%s/nowhere", tmp);
    cr_expect_eq(bt_registry_load_dir(reg, path, err, sizeof err), BT_ERR_IO);
    cr_expect(strstr(err, path) != NULL, "%s", err);
    cr_expect_eq(bt_registry_count(reg), 0);
}

Test(plugins, load_default_searches_BPTT_PLUGIN_PATH_first)
{
    char path[256], env[600];
    snprintf(path, sizeof path, "%s/optim_sgd.so", tmp);
    copy_file(shipped("optim_sgd.so"), path);
    /* Folders in order; a missing one is skipped. (The library never looks
     * into a build tree by itself: only `bptt` run from one adds it.) */
    snprintf(env, sizeof env, "%s/missing:%s:%s", tmp, tmp, BT_BUILD_PLUGIN_DIR);
    setenv("BPTT_PLUGIN_PATH", env, 1);
    bt_registry_load_default(reg, err, sizeof err); /* other plugins' state is not this test's */
    const bt_registry_entry *e = bt_registry_find(reg, BT_KIND_OPTIMIZER, "sgd");
    cr_assert_not_null(e, "%s", err);
    cr_expect_str_eq(e->file, path, "an earlier folder shadows a later one");
    cr_expect_not_null(bt_registry_optimizer(reg, "adam"), "the later folder comes next: %s", err);
}

/* ---- every failure has its own message ---------------------------------------------- */

Test(plugins, missing_file)
{
    char path[128];
    snprintf(path, sizeof path, "%s/no_such_plugin.so", tmp);
    expect_load_fails(path, BT_ERR_IO, "no such file", NULL);
}

Test(plugins, folder_instead_of_file) { expect_load_fails(tmp, BT_ERR_IO, "folder", NULL); }

Test(plugins, text_file_named_so)
{
    expect_load_fails(broken("bad_not_elf.so"), BT_ERR_PLUGIN, "not a shared object", NULL);
}

/* ---- a file cut short or built for another machine: refused before dlopen ---------- */

/* The first n bytes of a shipped plugin as tmp/NAME, or the whole file with
 * one header field overwritten (at offset `at`, `len` bytes of `value`). */
static const char *damaged_copy(const char *name, long n, size_t at, const void *value, size_t len)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", tmp, name);
    FILE *in = fopen(shipped("optim_sgd.so"), "rb");
    cr_assert_not_null(in);
    static unsigned char buf[1 << 20];
    size_t size = fread(buf, 1, sizeof buf, in);
    fclose(in);
    cr_assert(size > 4000 && size < sizeof buf, "optim_sgd.so has %zu bytes", size);
    if (len)
        memcpy(buf + at, value, len);
    FILE *out = fopen(path, "wb");
    cr_assert_not_null(out);
    size_t keep = n < 0 ? size : (size_t)n;
    cr_assert_eq(fwrite(buf, 1, keep, out), keep);
    cr_assert_eq(fclose(out), 0);
    return path;
}

static long shipped_size(void)
{
    struct stat sb;
    cr_assert_eq(stat(shipped("optim_sgd.so"), &sb), 0);
    return (long)sb.st_size;
}

/* An interrupted copy used to die of SIGBUS inside dlopen (past the end of a
 * mapped file); every cut, from inside the ELF header to the last byte, is
 * refused with the file's name and size, and nothing changes. */
Test(plugins, truncated_copies_are_refused_before_dlopen)
{
    long size = shipped_size();
    long cuts[] = {0, 2, 16, 64, 3000, size / 2, size - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        char name[64], has[64];
        snprintf(name, sizeof name, "cut_%ld.so", cuts[i]);
        const char *path = damaged_copy(name, cuts[i], 0, NULL, 0);
        snprintf(has, sizeof has, cuts[i] ? "but the file has %ld bytes" : "the file is empty",
                 cuts[i]);
        expect_load_fails(path, BT_ERR_PLUGIN, has, "(an interrupted copy?)");
        if (cuts[i] > 2)
            cr_expect(strstr(err, "truncated file: ") != NULL, "%ld bytes: %s", cuts[i], err);
    }
    /* The whole file still loads: the check is not refusing everything. */
    const char *whole = damaged_copy("whole.so", -1, 0, NULL, 0);
    bt_registry *fresh = bt_registry_new();
    cr_expect_eq(bt_registry_load(fresh, whole, err, sizeof err), BT_OK, "%s", err);
    bt_registry_free(fresh);
}

/* A header for another machine or a damaged one: what is wrong, in words. */
Test(plugins, foreign_or_damaged_elf_headers)
{
    unsigned char c32 = ELFCLASS32, msb = ELFDATA2MSB;
    uint16_t exec = ET_EXEC, rel = ET_REL, phent = 7;
#if defined(__x86_64__)
    uint16_t other = EM_AARCH64;
#else
    uint16_t other = EM_X86_64;
#endif
    struct {
        const char *name, *needle;
        size_t at, len;
        const void *value;
    } cases[] = {
        {"class32.so", "32-bit ELF object", EI_CLASS, 1, &c32},
        {"bigendian.so", "byte order is big-endian", EI_DATA, 1, &msb},
        {"exec.so", "it is an executable", offsetof(ElfW(Ehdr), e_type), 2, &exec},
        {"object.so", "an object file (.o)", offsetof(ElfW(Ehdr), e_type), 2, &rel},
        {"machine.so", "build the plugin for this machine", offsetof(ElfW(Ehdr), e_machine), 2,
         &other},
        {"phentsize.so", "damaged ELF header", offsetof(ElfW(Ehdr), e_phentsize), 2, &phent},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        expect_load_fails(damaged_copy(cases[i].name, -1, cases[i].at, cases[i].value,
                                       cases[i].len),
                          BT_ERR_PLUGIN, "cannot load plugin", cases[i].needle);
}

Test(plugins, no_entry_symbol)
{
    expect_load_fails(broken("bad_no_entry.so"), BT_ERR_PLUGIN, "not a bptt plugin",
                      "bt_plugin_entry");
}

Test(plugins, entry_returns_null)
{
    expect_load_fails(broken("bad_null_desc.so"), BT_ERR_PLUGIN, "not a bptt plugin", "NULL");
}

Test(plugins, no_init_function)
{
    expect_load_fails(broken("bad_no_init.so"), BT_ERR_PLUGIN, "no init", "bad_no_init");
}

Test(plugins, wrong_abi_major)
{
    char want[160];
    snprintf(want, sizeof want, "was built for bptt ABI %d.0, this bptt has ABI %d.%d: rebuild "
             "the plugin against this bptt", BT_ABI_MAJOR + 1, BT_ABI_MAJOR, BT_ABI_MINOR);
    expect_load_fails(broken("bad_major.so"), BT_ERR_PLUGIN, "plugin 'bad_major'", want);
}

Test(plugins, abi_1_plugin_is_refused_with_rebuild_advice)
{
    char want[160];
    snprintf(want, sizeof want, "was built for bptt ABI 1.1, this bptt has ABI %d.%d: rebuild "
             "the plugin against this bptt", BT_ABI_MAJOR, BT_ABI_MINOR);
    expect_load_fails(broken("bad_major_1.so"), BT_ERR_PLUGIN, "plugin 'bad_major_1'", want);
}

Test(plugins, definition_smaller_than_abi_2_0_is_refused)
{
    char want[200];
    snprintf(want, sizeof want, "optimizer 'unsized' has a definition of size 0, smaller than ABI "
             "2.0's %zu bytes: set .size = sizeof(bt_optimizer_def) and rebuild",
             offsetof(bt_optimizer_def, describe) + sizeof(void *));
    expect_load_fails(broken("bad_small_def.so"), BT_ERR_PLUGIN, "plugin 'bad_small_def'", want);
}

/* A def from a newer bptt (larger than this host's struct) loads; the host
 * copies only the fields it knows and the cell works through them. */
Test(plugins, definition_larger_than_the_host_is_accepted)
{
    load_ok(broken("good_big_def.so"));
    const bt_cell_def *c = bt_registry_cell(reg, "big_cell");
    cr_assert_not_null(c);
    cr_expect_eq(c->size, sizeof(bt_cell_def), "the copy keeps the host's fields only");
    bt_cell_dims dims = {2, 3, 2};
    int widths[4];
    cr_expect_eq(c->states(&dims, widths, 4), 1);
    cr_expect_eq(widths[0], 3);
}

/* `doc` came with ABI 2.1: a def whose size ends before it (an ABI 2.0 plugin)
 * loads with no description, whatever lies in memory after its def. */
Test(plugins, definition_of_abi_2_0_has_no_description)
{
    load_ok(broken("good_def_2_0.so"));
    const char *names[] = {"old_cell", "old_opt"};
    bt_plugin_kind kinds[] = {BT_KIND_CELL, BT_KIND_OPTIMIZER};
    for (int i = 0; i < 2; i++) {
        const bt_registry_entry *e = bt_registry_find(reg, kinds[i], names[i]);
        cr_assert_not_null(e, "%s not registered", names[i]);
        cr_expect_null(e->doc, "%s: the host read a doc beyond the def's size: %s", names[i],
                       e->doc);
    }
    cr_expect_null(bt_registry_cell(reg, "old_cell")->doc, "the copy holds no doc either");
}

Test(plugins, definition_with_a_description)
{
    load_ok(broken("good_doc.so"));
    const bt_registry_entry *e = bt_registry_find(reg, BT_KIND_POLICY, "doc_policy");
    cr_assert_not_null(e);
    cr_expect_str_eq(e->doc, "line one\nline two\n");
}

/* Every shipped cell, policy and optimizer says what it is (`plugins --describe`). */
Test(plugins, every_shipped_definition_has_a_description)
{
    cr_assert_eq(bt_registry_load_dir(reg, BT_BUILD_PLUGIN_DIR, err, sizeof err), BT_OK, "%s", err);
    cr_assert_gt(bt_registry_count(reg), 10);
    for (int i = 0; i < bt_registry_count(reg); i++) {
        const bt_registry_entry *e = bt_registry_at(reg, i);
        cr_expect(e->doc && strlen(e->doc) > 40, "%s %s has no description",
                  bt_plugin_kind_name(e->kind), e->name);
        if (e->doc && e->doc[0])
            cr_expect_eq(e->doc[strlen(e->doc) - 1], '\n', "%s: the doc's last line has no '\\n'",
                         e->name);
    }
}

Test(plugins, newer_abi_minor)
{
    expect_load_fails(broken("bad_minor.so"), BT_ERR_PLUGIN, "plugin 'bad_minor'", "needs a newer bptt");
}

Test(plugins, wrong_precision)
{
    const char *mine = sizeof(bt_real) == 4 ? "float" : "double";
    const char *other = sizeof(bt_real) == 4 ? "double" : "float";
    char want[96];
    snprintf(want, sizeof want, "built with %s reals", other);
    expect_load_fails(broken("bad_real.so"), BT_ERR_PLUGIN, want, mine);
}

Test(plugins, init_fails_with_its_message)
{
    expect_load_fails(broken("bad_init.so"), BT_ERR_PLUGIN, "init failed",
                      "cannot find the frobnicator");
    cr_expect_null(bt_registry_optimizer(reg, "staged_opt"), "a failed init's registration survived");
}

Test(plugins, duplicate_name_across_plugins)
{
    char first[600];
    snprintf(first, sizeof first, "already registered by plugin 'dup_a' (%s)", broken("dup_a.so"));
    expect_load_fails(broken("dup_b.so"), BT_ERR_PLUGIN, "optimizer 'dupopt'", first);
    cr_expect_null(bt_registry_optimizer(reg, "onlyb"), "dup_b's other registration survived");
}

Test(plugins, duplicate_name_within_a_plugin)
{
    expect_load_fails(broken("bad_dup_self.so"), BT_ERR_PLUGIN, "optimizer 'twice'", "twice");
}

Test(plugins, optimizer_with_null_callback)
{
    expect_load_fails(broken("bad_null_step.so"), BT_ERR_PLUGIN, "plugin 'bad_null_step'",
                      "optimizer 'nostep' has no step callback");
}

/* The host keeps BT_OPTIMIZER_MAX_STATE buffers per parameter (optimizer.c);
 * the message names the limit the host was built with. */
Test(plugins, optimizer_asking_for_too_many_state_buffers)
{
    char needle[96];
    snprintf(needle, sizeof needle, "optimizer 'hoarder' asks for a number of state buffers "
             "outside 0 to %d", BT_OPTIMIZER_MAX_STATE);
    expect_load_fails(broken("bad_many_states.so"), BT_ERR_PLUGIN, "plugin 'bad_many_states'",
                      needle);
}

Test(plugins, policy_missing_callback)
{
    expect_load_fails(broken("bad_policy.so"), BT_ERR_PLUGIN, "plugin 'bad_policy'",
                      "policy 'nodecide' has no decide callback");
}

Test(plugins, cell_missing_callback)
{
    expect_load_fails(broken("bad_cell.so"), BT_ERR_PLUGIN, "plugin 'bad_cell'",
                      "cell 'nostepcell' has no params callback");
}

Test(plugins, estimator_missing_callback)
{
    expect_load_fails(broken("bad_estimator.so"), BT_ERR_PLUGIN, "plugin 'bad_estimator'",
                      "estimator 'nostepest' has no step callback");
}

Test(plugins, estimator_def_smaller_than_its_first_abi)
{
    expect_load_fails(broken("bad_small_estimator.so"), BT_ERR_PLUGIN,
                      "estimator 'smallest' has a definition of size",
                      "set .size = sizeof(bt_estimator_def)");
}

Test(plugins, empty_name)
{
    expect_load_fails(broken("bad_empty_name.so"), BT_ERR_PLUGIN, "plugin 'bad_empty_name'",
                      "optimizer name '' is invalid");
}

Test(plugins, long_name)
{
    expect_load_fails(broken("bad_long_name.so"), BT_ERR_PLUGIN, "plugin 'bad_long_name'",
                      "is invalid");
}

Test(plugins, free_null_and_empty)
{
    bt_registry_free(NULL);
    cr_expect_eq(bt_registry_count(NULL), 0);
    cr_expect_eq(bt_registry_load(reg, NULL, err, sizeof err),
                 BT_ERR_ARG);
}

/* ---- the host table ----------------------------------------------------------------- */

Test(plugins, host_table_is_complete)
{
    const bt_host *h = bt_host_table();
    cr_assert_not_null(h);
    cr_expect_eq(h->abi_major, (uint32_t)BT_ABI_MAJOR);
    cr_expect_eq(h->abi_minor, (uint32_t)BT_ABI_MINOR);
    cr_expect_eq(h->size, sizeof(bt_host));
    /* Every entry from register_cell to the end is a function pointer. */
    typedef void (*fn)(void);
    size_t first = offsetof(bt_host, register_cell);
    for (size_t off = first; off + sizeof(fn) <= sizeof(bt_host); off += sizeof(fn)) {
        fn f;
        memcpy(&f, (const char *)h + off, sizeof f);
        cr_expect_not_null((void *)(uintptr_t)f, "host table entry %zu is NULL",
                           (off - first) / sizeof(fn));
    }
    cr_expect_eq((void *)(uintptr_t)h->matmul, (void *)(uintptr_t)bt_matmul);
    cr_expect_eq((void *)(uintptr_t)h->rng_normal, (void *)(uintptr_t)bt_rng_normal);
    cr_expect_eq((void *)(uintptr_t)h->parse_options, (void *)(uintptr_t)bt_parse_options);
    cr_expect_eq((void *)(uintptr_t)h->graph_fail, (void *)(uintptr_t)bt_graph_fail);
    cr_expect_eq((void *)(uintptr_t)h->lstm_gates, (void *)(uintptr_t)bt_lstm_gates);
    cr_expect_eq((void *)(uintptr_t)h->lstm_cell, (void *)(uintptr_t)bt_lstm_cell);
    cr_expect_eq((void *)(uintptr_t)h->lstm_hidden, (void *)(uintptr_t)bt_lstm_hidden);
    cr_expect_eq((void *)(uintptr_t)h->gru_gates, (void *)(uintptr_t)bt_gru_gates);
    cr_expect_eq((void *)(uintptr_t)h->gru_hidden, (void *)(uintptr_t)bt_gru_hidden);
    cr_expect_eq((void *)(uintptr_t)h->gru_cho_gates, (void *)(uintptr_t)bt_gru_cho_gates);
    cr_expect_eq((void *)(uintptr_t)h->gru_cho_reset, (void *)(uintptr_t)bt_gru_cho_reset);
    /* ABI 2.8 appended the Cho GRU ops: gru_cho_hidden is the last entry. */
    cr_expect_eq((void *)(uintptr_t)h->gru_cho_hidden, (void *)(uintptr_t)bt_gru_cho_hidden);
    cr_expect_eq(offsetof(bt_host, gru_cho_hidden) + sizeof h->gru_cho_hidden, sizeof(bt_host));
}

/* Plugin authors copy from docs/writing-a-plugin.md: its descriptor line must
 * name the ABI this header defines. */
Test(plugins, plugin_guide_names_this_abi)
{
    char path[600], line[512], want[64];
    snprintf(path, sizeof path, "%s/docs/writing-a-plugin.md", BT_SOURCE_ROOT);
    snprintf(want, sizeof want, "{ ABI %d.%d,", BT_ABI_MAJOR, BT_ABI_MINOR);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "open %s: %s", path, strerror(errno));
    int lines = 0, right = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "bt_plugin_entry()  ->")) {
            lines++;
            right += strstr(line, want) != NULL;
        }
    fclose(f);
    cr_expect_gt(lines, 0, "%s has no descriptor line", path);
    cr_expect_eq(right, lines, "%s: the descriptor line does not say %s", path, want);
}

Test(plugins, kind_names)
{
    cr_expect_str_eq(bt_plugin_kind_name(BT_KIND_CELL), "cell");
    cr_expect_str_eq(bt_plugin_kind_name(BT_KIND_POLICY), "policy");
    cr_expect_str_eq(bt_plugin_kind_name(BT_KIND_OPTIMIZER), "optimizer");
    cr_expect_str_eq(bt_plugin_kind_name(BT_KIND_ESTIMATOR), "estimator");
}

/* ---- options ------------------------------------------------------------------------- */

typedef struct adam_like {
    double lr, beta1, beta2, eps, wd;
    bt_option opts[5];
} adam_like;

static void adam_like_init(adam_like *a)
{
    *a = (adam_like){1e-3, 0.9, 0.999, 1e-8, 0, {{0}}};
    a->opts[0] = (bt_option){"lr", &a->lr, 0, 10, false, true, false, false};
    a->opts[1] = (bt_option){"beta1", &a->beta1, 0, 1, false, false, false, false};
    a->opts[2] = (bt_option){"beta2", &a->beta2, 0, 1, false, false, false, false};
    a->opts[3] = (bt_option){"eps", &a->eps, 0, 1, false, false, false, false};
    a->opts[4] = (bt_option){"weight_decay", &a->wd, 0, 1, false, false, false, false};
}

Test(plugins, options_key_value_and_positional)
{
    adam_like a;
    adam_like_init(&a);
    cr_assert_eq(bt_parse_options(" 0.01 , beta2=0.98,eps = 1e-6", a.opts, 5, "optimizer adam",
                                  err, sizeof err), BT_OK, "%s", err);
    cr_expect_eq(a.lr, 0.01);
    cr_expect_eq(a.beta2, 0.98);
    cr_expect_eq(a.eps, 1e-6);
    cr_expect_eq(a.beta1, 0.9, "defaults stay");
    cr_expect(a.opts[0].set && !a.opts[1].set && a.opts[2].set && a.opts[3].set && !a.opts[4].set);
    adam_like_init(&a);
    cr_expect_eq(bt_parse_options("", a.opts, 5, "optimizer adam", err, sizeof err), BT_OK);
    cr_expect_eq(bt_parse_options(NULL, a.opts, 5, "optimizer adam", err, sizeof err), BT_OK);
    cr_expect_eq(a.lr, 1e-3);
}

Test(plugins, options_unknown_name_lists_known)
{
    adam_like a;
    adam_like_init(&a);
    cr_expect_eq(bt_parse_options("lr=0.1,bta2=0.9", a.opts, 5, "optimizer adam", err, sizeof err),
                 BT_ERR_ARG);
    cr_expect_str_eq(err, "optimizer adam: unknown option 'bta2' (known: lr, beta1, beta2, eps, "
                          "weight_decay)");
    cr_expect_eq(a.lr, 1e-3, "nothing is written when the text is invalid");
    cr_expect(!a.opts[0].set);
}

Test(plugins, options_not_a_number)
{
    adam_like a;
    adam_like_init(&a);
    cr_expect_eq(bt_parse_options("lr=abc", a.opts, 5, "optimizer sgd", err, sizeof err),
                 BT_ERR_ARG);
    cr_expect_str_eq(err, "optimizer sgd: lr = 'abc' is not a number");
    cr_expect_eq(bt_parse_options("lr=0.1x", a.opts, 5, "optimizer sgd", err, sizeof err),
                 BT_ERR_ARG);
    cr_expect_eq(bt_parse_options("lr=", a.opts, 5, "optimizer sgd", err, sizeof err),
                 BT_ERR_ARG);
    cr_expect_str_eq(err, "optimizer sgd: lr = '' is not a number");
    cr_expect_eq(bt_parse_options("lr=nan", a.opts, 5, "optimizer sgd", err, sizeof err),
                 BT_ERR_ARG);
    cr_expect(strstr(err, "finite") != NULL, "%s", err);
}

Test(plugins, options_range_integer_required)
{
    double tau = 35, seed = 0;
    bt_option o[] = {
        {"tau", &tau, 1, 1000000, true, true, true, false},
        {"seed", &seed, 0, 0, true, false, false, false}, /* no bounds */
    };
    cr_expect_eq(bt_parse_options("0", o, 2, "policy fixed", err, sizeof err),
                 BT_ERR_ARG);
    cr_expect_str_eq(err, "policy fixed: value 0 for tau is outside [1, 1000000]");
    cr_expect_eq(bt_parse_options("2.5", o, 2, "policy fixed", err, sizeof err),
                 BT_ERR_ARG);
    cr_expect_str_eq(err, "policy fixed: tau = '2.5' is not an integer");
    cr_expect_eq(bt_parse_options("seed=3", o, 2, "policy fixed", err, sizeof err),
                 BT_ERR_ARG);
    cr_expect_str_eq(err, "policy fixed: tau is required");
    cr_expect_eq(bt_parse_options("5,seed=-12", o, 2, "policy fixed", err, sizeof err), BT_OK, "%s",
                 err);
    cr_expect_eq(tau, 5);
    cr_expect_eq(seed, -12);
    cr_expect_eq(bt_parse_options("5,tau=6", o, 2, "policy fixed", err, sizeof err),
                 BT_ERR_ARG);
    cr_expect(strstr(err, "tau is given twice") != NULL, "%s", err);
    cr_expect_eq(bt_parse_options("5,6", o, 2, "policy fixed", err, sizeof err),
                 BT_ERR_ARG);
    cr_expect(strstr(err, "unexpected value '6'") != NULL, "%s", err);
    cr_expect_eq(bt_parse_options("5,,seed=1", o, 2, "policy fixed", err, sizeof err),
                 BT_ERR_ARG);
    cr_expect(strstr(err, "empty option") != NULL, "%s", err);
}

Test(plugins, options_two_positionals)
{
    double k1 = 0, k2 = 0;
    bt_option o[] = {
        {"k1", &k1, 1, 100, true, true, true, false},
        {"k2", &k2, 1, 100, true, true, false, false},
    };
    cr_expect_eq(bt_parse_options("5,35", o, 2, "policy tbptt", err, sizeof err), BT_OK, "%s", err);
    cr_expect_eq(k1, 5);
    cr_expect_eq(k2, 35);
}

Test(plugins, split_spec)
{
    char name[BT_NAME_LEN];
    const char *opts = NULL;
    bt_split_spec("adam:lr=0.1,beta2=0.98", name, sizeof name, &opts);
    cr_expect_str_eq(name, "adam");
    cr_expect_str_eq(opts, "lr=0.1,beta2=0.98");
    bt_split_spec("sgd", name, sizeof name, &opts);
    cr_expect_str_eq(name, "sgd");
    cr_expect_str_eq(opts, "");
    bt_split_spec("tbptt:5:35", name, sizeof name, &opts);
    cr_expect_str_eq(name, "tbptt");
    cr_expect_str_eq(opts, "5:35");
    char small[4];
    cr_expect_not(bt_split_spec("momentum:0.1", small, sizeof small, &opts),
                  "a name that does not fit is reported");
    cr_expect_str_eq(small, "", "a name that does not fit is never cut to a prefix");
    cr_expect_str_eq(opts, "0.1");
    cr_expect(bt_split_spec("sgd:lr=1", small, sizeof small, &opts));
}

Test(plugins, optimizer_unknown_name_lists_known)
{
    load_ok(shipped("optim_sgd.so"));
    load_ok(shipped("optim_adam.so"));
    bt_params *p = bt_params_new();
    int shape[1] = {3};
    bt_params_add(p, "w", 1, shape);
    cr_assert_eq(bt_params_finalize(p), BT_OK);
    bt_optimizer *o = (bt_optimizer *)1;
    cr_expect_eq(bt_optimizer_new(reg, "nadam:lr=1", p, &o, err, sizeof err), BT_ERR_NOT_FOUND);
    cr_expect_null(o);
    cr_expect_str_eq(err, "unknown optimizer 'nadam' (known: adam, sgd)");
    bt_params_free(p);
}

/* Naming a file that is already loaded (say --plugin on a shipped plugin) is a
 * no-op; a different file with the same plugin name is still refused (above). */
Test(plugins, loading_the_same_file_again_is_a_no_op)
{
    load_baseline();
    snapshot before, after;
    snapshot_take(&before);
    cr_expect_eq(bt_registry_load(reg, shipped("optim_sgd.so"), err, sizeof err), BT_OK, "%s", err);
    snapshot_take(&after);
    snapshot_expect_equal(&before, &after, shipped("optim_sgd.so"));
}
