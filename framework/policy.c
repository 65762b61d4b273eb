/* policy.c: the host's calls into a truncation policy that hand strings back:
 * create fills an error buffer, describe fills (or returns) the canonical
 * option string that goes into logs and checkpoints. Neither is trusted to
 * end its string; both come back terminated and one line long. */
#include <string.h>

#include "registry.h"

bt_status bt_policy_create(const bt_policy_def *def, const char *options, void **state,
                           char *err, size_t errlen)
{
    char perr[BT_ERRMSG_LEN];
    memset(perr, 0, sizeof perr);
    *state = NULL;
    if (def->create(bt_host_table(), options ? options : "", state, perr, sizeof perr) == 0)
        return BT_OK;
    *state = NULL; /* a failed create owns nothing */
    bt_plugin_text_clean(perr, sizeof perr);
    if (perr[0])
        return bt_error(err, errlen, BT_ERR_ARG, "%s", perr);
    return bt_error(err, errlen, BT_ERR_ARG, "policy %s: invalid options '%s'", def->name,
                    options ? options : "");
}

const char *bt_policy_describe(const bt_policy_def *def, void *state, char *buf, size_t len)
{
    if (!buf || !len)
        return NULL;
    memset(buf, 0, len);
    const char *s = def->describe(state, buf, len);
    buf[len - 1] = '\0';
    if (!s) {
        buf[0] = '\0';
        return NULL;
    }
    return bt_plugin_text_copy(buf, len, s); /* s may be buf itself, or the plugin's own */
}
