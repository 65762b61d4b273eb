/* options.c: the option grammar of plugin specs, "adam:lr=0.002,beta2=0.98" or
 * positional "tbptt:5,35", behind bt_host.parse_options. Kept by hand: it is a
 * dozen rules (key=value or positional, bounds, integers, every error naming
 * the option), smaller than any library's interface to them. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "options.h"
#include "registry.h" /* bt_plugin_text_*: option names come from plugins */

#define BT_OPTION_MAX 64 /* options one parse_options call can describe */
#define BT_VALUE_LEN 128 /* longest single "key=value" item */

/* One parse in progress: values wait here until the whole text is valid. */
typedef struct parse {
    const bt_option *opts;
    int n;
    const char *what, *text;
    double vals[BT_OPTION_MAX];
    bool given[BT_OPTION_MAX];
    int next_positional;
    char known[512]; /* "lr, beta1, ..." for messages */
    char *err;
    size_t errlen;
} parse;

static void options_known(const bt_option *opts, int n, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && used + 1 < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%s", i ? ", " : "", opts[i].name);
    if (n == 0)
        snprintf(buf, len, "none");
}

/* Copies [s, e) without surrounding blanks into buf; false if it does not fit. */
static bool trim_copy(const char *s, const char *e, char *buf, size_t len)
{
    while (s < e && (*s == ' ' || *s == '\t'))
        s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    if ((size_t)(e - s) >= len)
        return false;
    memcpy(buf, s, (size_t)(e - s));
    buf[e - s] = '\0';
    return true;
}

/* A bound as people write it: 1000000 rather than %g's 1e+06. */
static void fmt_bound(char *buf, size_t len, double v)
{
    if (v == floor(v) && fabs(v) < 1e15)
        snprintf(buf, len, "%.0f", v);
    else
        snprintf(buf, len, "%g", v);
}

/* Parses and checks one value for option o into *out. */
static bt_status option_value(const parse *ps, const bt_option *o, const char *text, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (!text[0] || end == text || *end != '\0')
        return bt_error(ps->err, ps->errlen, BT_ERR_ARG, "%s: %s = '%s' is not a number",
                        ps->what, o->name, text);
    if (!isfinite(v))
        return bt_error(ps->err, ps->errlen, BT_ERR_ARG, "%s: %s = '%s' is not a finite number",
                        ps->what, o->name, text);
    if (o->integer && v != floor(v))
        return bt_error(ps->err, ps->errlen, BT_ERR_ARG, "%s: %s = '%s' is not an integer",
                        ps->what, o->name, text);
    /* min == max == 0 (an option declared without bounds) means unbounded. */
    if (!(o->min == 0 && o->max == 0) && (v < o->min || v > o->max)) {
        char lo[32], hi[32];
        fmt_bound(lo, sizeof lo, o->min);
        fmt_bound(hi, sizeof hi, o->max);
        return bt_error(ps->err, ps->errlen, BT_ERR_ARG, "%s: value %s for %s is outside [%s, %s]",
                        ps->what, text, o->name, lo, hi);
    }
    *out = v;
    return BT_OK;
}

/* The option an item names: by key for "key=value" (*value after the '='),
 * else the next positional one. -1 with a message when there is none. */
static int option_of(parse *ps, char *item, const char **value)
{
    char *eq = strchr(item, '=');
    if (eq) {
        char key[BT_VALUE_LEN];
        trim_copy(item, eq, key, sizeof key);
        for (*value = eq + 1; **value == ' ' || **value == '\t'; ++*value) {
        }
        for (int i = 0; i < ps->n; i++)
            if (ps->opts[i].name && strcmp(ps->opts[i].name, key) == 0)
                return i;
        bt_errorf(ps->err, ps->errlen, "%s: unknown option '%s' (known: %s)", ps->what, key,
                  ps->known);
        return -1;
    }
    *value = item;
    for (int i = ps->next_positional; i < ps->n; i++)
        if (ps->opts[i].positional) {
            ps->next_positional = i + 1;
            return i;
        }
    bt_errorf(ps->err, ps->errlen, "%s: unexpected value '%s' (no more positional options; give "
              "options as key=value, known: %s)", ps->what, item, ps->known);
    return -1;
}

/* One comma-separated item, [s, e). */
static bt_status parse_item(parse *ps, const char *s, const char *e)
{
    char item[BT_VALUE_LEN];
    if (!trim_copy(s, e, item, sizeof item))
        return bt_error(ps->err, ps->errlen, BT_ERR_ARG, "%s: option '%.40s...' is too long",
                        ps->what, s);
    if (!item[0])
        return bt_error(ps->err, ps->errlen, BT_ERR_ARG,
                        "%s: empty option in '%s' (options are separated by single commas)",
                        ps->what, ps->text);
    const char *value;
    int k = option_of(ps, item, &value);
    if (k < 0)
        return BT_ERR_ARG;
    if (ps->given[k])
        return bt_error(ps->err, ps->errlen, BT_ERR_ARG, "%s: option %s is given twice", ps->what,
                        ps->opts[k].name);
    bt_status st = option_value(ps, &ps->opts[k], value, &ps->vals[k]);
    ps->given[k] = st == BT_OK;
    return st;
}

/* "lr=0.1,mu=0.9" or positional "5,35" (blanks around items are ignored). Values
 * are written only when the whole text is valid; `set` says which were given. */
bt_status bt_parse_options(const char *text, bt_option *opts, int n, const char *what, char *err,
                           size_t errlen)
{
    /* A plugin calls this: its `what` and option names are read with a bound. */
    char what_copy[96];
    parse ps = {.opts = opts, .n = n, .text = text ? text : "", .err = err, .errlen = errlen,
                .what = what ? bt_plugin_text_copy(what_copy, sizeof what_copy, what) : "options"};
    if (n < 0 || n > BT_OPTION_MAX || (n > 0 && !opts))
        return bt_error(err, errlen, BT_ERR_ARG, "%s: bad option table (%d entries)", ps.what, n);
    for (int i = 0; i < n; i++) {
        size_t len = bt_plugin_text_len(opts[i].name, BT_NAME_LEN);
        if (len == 0 || len == BT_NAME_LEN || !bt_plugin_text_printable(opts[i].name, len))
            return bt_error(err, errlen, BT_ERR_ARG, "%s: bad option table: option %d needs a "
                            "name of 1 to %d plain characters", ps.what, i, BT_NAME_LEN - 1);
    }
    options_known(opts, n, ps.known, sizeof ps.known);
    const char *s = ps.text;
    if (s[strspn(s, " \t")] != '\0') /* "" and blanks mean no options at all */
        for (;;) {
            const char *comma = strchr(s, ',');
            bt_status st = parse_item(&ps, s, comma ? comma : s + strlen(s));
            if (st != BT_OK)
                return st;
            if (!comma)
                break;
            s = comma + 1;
        }
    for (int i = 0; i < n; i++)
        if (opts[i].required && !ps.given[i])
            return bt_error(err, errlen, BT_ERR_ARG, "%s: %s is required", ps.what, opts[i].name);
    for (int i = 0; i < n; i++) {
        opts[i].set = ps.given[i];
        if (ps.given[i] && opts[i].value)
            *opts[i].value = ps.vals[i];
    }
    return BT_OK;
}

bool bt_split_spec(const char *spec, char *name, size_t name_len, const char **options)
{
    if (!spec)
        spec = "";
    const char *colon = strchr(spec, ':');
    size_t len = colon ? (size_t)(colon - spec) : strlen(spec);
    bool fits = len < name_len;
    if (name && name_len) {
        /* Never a prefix: a name cut short could be another registered name. */
        if (!fits)
            len = 0;
        memcpy(name, spec, len);
        name[len] = '\0';
    }
    if (options)
        *options = colon ? colon + 1 : "";
    return fits;
}
