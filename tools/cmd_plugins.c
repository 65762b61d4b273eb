/* cmd_plugins.c: `bptt plugins`, every registered cell, truncation policy and
 * optimizer with the plugin that brought it, as a table or (--json) a JSON
 * array a script can read. */
#include <string.h>

#include <jansson.h>

#include "cli.h"

static const cli_option options[] = {
    {"json", NULL, "print a JSON array (kind, name, plugin, version, file, summary)"},
    CLI_PLUGIN_OPTION,
    {NULL, NULL, NULL},
};

const cli_command cmd_plugins_spec = {
    .name = "plugins",
    .summary = "list registered cells, truncation policies and optimizers",
    .usage = "[--json] [--plugin PATH]...",
    .about = "Lists what the default plugin folders (BPTT_PLUGIN_PATH, the build tree, the\n"
             "install folder) and each --plugin file registered: kind, name, plugin, its\n"
             "version, file and summary.",
    .options = {options},
};

/* A JSON array with one object per line, so that `grep` finds an entry: the
 * layout is ours, every object is written by jansson. A missing string is "". */
static bool print_json(const bt_registry *r)
{
    int n = bt_registry_count(r);
    bool ok = true;
    fputs("[", stdout);
    for (int i = 0; ok && i < n; i++) {
        const bt_registry_entry *e = bt_registry_at(r, i);
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "kind", bt_plugin_kind_name(e->kind),
                              "name", e->name ? e->name : "", "plugin", e->plugin ? e->plugin : "",
                              "version", e->plugin_version ? e->plugin_version : "",
                              "file", e->file ? e->file : "", "summary", e->summary ? e->summary : "");
        fputs(i ? ",\n " : "\n ", stdout);
        ok = o && json_dumpf(o, stdout, JSON_INDENT(0)) == 0;
        json_decref(o);
    }
    fputs(n ? "\n]\n" : "]\n", stdout);
    return ok;
}

static void print_table(const bt_registry *r)
{
    int n = bt_registry_count(r);
    if (n == 0) {
        printf("no plugins registered: set BPTT_PLUGIN_PATH to a folder of plugins, or pass --plugin PATH\n");
        return;
    }
    printf("%-9s  %-12s  %-16s  %-8s  %s\n", "kind", "name", "plugin", "version", "summary");
    for (int i = 0; i < n; i++) {
        const bt_registry_entry *e = bt_registry_at(r, i);
        printf("%-9s  %-12s  %-16s  %-8s  %s\n", bt_plugin_kind_name(e->kind), e->name,
               e->plugin ? e->plugin : "", e->plugin_version ? e->plugin_version : "",
               e->summary ? e->summary : "");
        printf("%-9s  %-12s  file: %s\n", "", "", e->file ? e->file : "(built in)");
    }
}

int cmd_plugins(int argc, char **argv)
{
    cli_args a;
    int rc;
    if (!cli_args_begin(&a, &cmd_plugins_spec, argc, argv, &rc))
        return rc;
    bool json = cli_flag(&a, "json");
    bt_registry *r = cli_load_plugins(&a);
    cli_args_check_read(&a);
    rc = r ? 0 : 1;
    if (r && json && !print_json(r))
        rc = cli_fail("plugins", "out of memory");
    else if (r && !json)
        print_table(r);
    bt_registry_free(r);
    cli_args_free(&a);
    return rc;
}
