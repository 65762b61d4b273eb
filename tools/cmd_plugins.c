/* cmd_plugins.c: `bptt plugins`, every registered cell, truncation policy,
 * optimizer and online gradient estimator with the plugin that brought it, as a table or (--json) a JSON
 * array a script can read; --describe NAME prints one entry's description,
 * the text its plugin gives (docs/cells.md embeds those of the shipped ones). */
#include <string.h>

#include <jansson.h>

#include "cli.h"

static const cli_option options[] = {
    {"json", NULL, "print a JSON array (kind, name, plugin, version, file, summary)"},
    {"describe", "NAME", "print the description of the cell, policy, optimizer or estimator "
                         "NAME: equations, parameters and their PyTorch mapping, options"},
    CLI_PLUGIN_OPTION,
    {NULL, NULL, NULL},
};

const cli_command cmd_plugins_spec = {
    .name = "plugins",
    .summary = "list registered cells, truncation policies, optimizers and estimators",
    .usage = "[--json | --describe NAME] [--plugin PATH]...",
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

/* Every entry named `name` (a cell and a policy may share one): a header
 * line, then the plugin's text. Output: docs/cells.md embeds it verbatim. */
static int print_description(const bt_registry *r, const char *name)
{
    int found = 0;
    for (int i = 0; i < bt_registry_count(r); i++) {
        const bt_registry_entry *e = bt_registry_at(r, i);
        if (strcmp(e->name, name) != 0)
            continue;
        printf("%s%s %s (plugin %s %s): %s\n\n", found++ ? "\n" : "", bt_plugin_kind_name(e->kind),
               e->name, e->plugin, e->plugin_version, e->summary);
        fputs(e->doc ? e->doc : "no description: the plugin gives none (plugins built for bptt "
                                "ABI 2.0 cannot)\n", stdout);
    }
    if (found)
        return 0;
    char cells[256], policies[256], optimizers[256], estimators[256];
    return cli_fail("plugins", "--describe %s: no cell, policy, optimizer or estimator has that "
                    "name (cells: %s; policies: %s; optimizers: %s; estimators: %s)", name,
                    bt_registry_names(r, BT_KIND_CELL, cells, sizeof cells),
                    bt_registry_names(r, BT_KIND_POLICY, policies, sizeof policies),
                    bt_registry_names(r, BT_KIND_OPTIMIZER, optimizers, sizeof optimizers),
                    bt_registry_names(r, BT_KIND_ESTIMATOR, estimators, sizeof estimators));
}

int cmd_plugins(int argc, char **argv)
{
    cli_args a;
    int rc;
    if (!cli_args_begin(&a, &cmd_plugins_spec, argc, argv, &rc))
        return rc;
    bool json = cli_flag(&a, "json");
    const char *describe = cli_get(&a, "describe");
    if (json && describe) {
        cli_fail("plugins", "--json and --describe exclude each other");
        cli_args_free(&a);
        return 2;
    }
    bt_registry *r = cli_load_plugins(&a);
    cli_args_check_read(&a);
    if (r && describe) {
        rc = print_description(r, describe);
        bt_registry_free(r);
        cli_args_free(&a);
        return rc;
    }
    rc = r ? 0 : 1;
    if (r && json && !print_json(r))
        rc = cli_fail("plugins", "out of memory");
    else if (r && !json)
        print_table(r);
    bt_registry_free(r);
    cli_args_free(&a);
    return rc;
}
