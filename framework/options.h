/* options.h: the option grammar of specs such as "adam:lr=0.002,beta2=0.98"
 * or "tbptt:5,35" (options.c): what plugins get as bt_host.parse_options, and
 * what the data and model layers use for their own specs (tasks, inits)
 * without needing the plugin registry. */
#ifndef BPTT_OPTIONS_H
#define BPTT_OPTIONS_H

#include "bptt_plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Parses text ("lr=0.1,mu=0.9", or positional "5,35") into opts[n] (see
 * bt_option): BT_OK, or BT_ERR_ARG with "<what>: <the problem>" in err;
 * values are written only on BT_OK. */
BT_API bt_status bt_parse_options(const char *text, bt_option *opts, int n, const char *what,
                                  char *err, size_t errlen);
/* Splits "name:options" at the first ':' (options "" when absent). A name
 * that does not fit name[name_len] is never cut short (a prefix could be
 * another name): name is then "" and the result false. Messages about an
 * unknown name can quote it from spec (its strcspn(spec, ":") bytes). */
BT_API bool bt_split_spec(const char *spec, char *name, size_t name_len, const char **options);

#ifdef __cplusplus
}
#endif
#endif
