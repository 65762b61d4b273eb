/* model_file.c: the JSON model description (model_file.h), read with jansson
 * and checked key by key; the layers come out in stack.h's canonical form. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "model_file.h"
#include "stack.h"

#define FAIL(...) (bt_error(err, errlen, BT_ERR_FORMAT, __VA_ARGS__), false)

static bool get_int(const json_t *v, const char *what, const char *key, int *out, char *err,
                    size_t errlen)
{
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 1 << 16)
        return FAIL("%s: \"%s\" must be an integer from 1 to 65536", what, key);
    *out = (int)json_integer_value(v);
    return true;
}

static bool get_str(const json_t *v, const char *what, const char *key, char *out, size_t len,
                    char *err, size_t errlen)
{
    if (!json_is_string(v) || !json_string_length(v) || json_string_length(v) >= len)
        return FAIL("%s: \"%s\" must be a non-empty string of at most %zu characters", what, key,
                    len - 1);
    /* A cell name goes into the canonical "C:H,C:H" form: its separators
     * (or a NUL inside the JSON string) would make other layers. */
    if (!strcmp(key, "cell") && (strpbrk(json_string_value(v), ":,") ||
                                 strlen(json_string_value(v)) != json_string_length(v)))
        return FAIL("%s: \"cell\" must be a cell's name (no ':' or ','), not \"%s\"", what,
                    json_string_value(v));
    snprintf(out, len, "%s", json_string_value(v));
    return true;
}

/* "layers": [{"cell": C, "hidden": H}, ...] into "C:H,C:H". */
static bool layer_list(const json_t *a, const char *what, bt_model_file *m, char *err,
                       size_t errlen)
{
    size_t n = json_array_size(a), u = 0;
    if (n < 1 || n > BT_MAX_LAYERS)
        return FAIL("%s: \"layers\" lists 1 to %d layers, not %zu", what, BT_MAX_LAYERS, n);
    for (size_t i = 0; i < n; i++) {
        const json_t *l = json_array_get(a, i), *v;
        const char *key;
        char cell[64] = "", at[32];
        int hidden = m->hidden;
        snprintf(at, sizeof at, "layers[%zu]", i);
        if (!json_is_object(l))
            return FAIL("%s: %s must be an object {\"cell\": C, \"hidden\": H}", what, at);
        snprintf(cell, sizeof cell, "%s", m->cell);
        json_object_foreach((json_t *)l, key, v) {
            if (!strcmp(key, "cell") && !get_str(v, what, "cell", cell, sizeof cell, err, errlen))
                return false;
            if (!strcmp(key, "hidden") && !get_int(v, what, "hidden", &hidden, err, errlen))
                return false;
            if (strcmp(key, "cell") && strcmp(key, "hidden"))
                return FAIL("%s: %s has an unknown key \"%s\" (a layer has \"cell\" and "
                            "\"hidden\")", what, at, key);
        }
        if (!cell[0] || hidden < 1)
            return FAIL("%s: %s needs a \"cell\" and a \"hidden\" width (or the file's own)",
                        what, at);
        u += (size_t)snprintf(m->layers + u, u < sizeof m->layers ? sizeof m->layers - u : 0,
                              "%s%s:%d", i ? "," : "", cell, hidden);
        if (u >= sizeof m->layers)
            return FAIL("%s: the layers are too long a description", what);
    }
    return true;
}

/* One top-level key into m; "layers" is read after the others (it may use them). */
static bool top_key(const char *key, const json_t *v, const char *what, bt_model_file *m,
                    char *err, size_t errlen)
{
    if (!strcmp(key, "cell"))
        return get_str(v, what, key, m->cell, sizeof m->cell, err, errlen);
    if (!strcmp(key, "hidden"))
        return get_int(v, what, key, &m->hidden, err, errlen);
    if (!strcmp(key, "init"))
        return get_str(v, what, key, m->init, sizeof m->init, err, errlen);
    if (!strcmp(key, "variational")) {
        if (!json_is_boolean(v))
            return FAIL("%s: \"variational\" must be true or false", what);
        m->variational = json_is_true(v);
        return true;
    }
    if (!strcmp(key, "dropout")) {
        if (!json_is_number(v) || !(json_number_value(v) >= 0 && json_number_value(v) < 1))
            return FAIL("%s: \"dropout\" must be a probability in [0, 1)", what);
        m->dropout = json_number_value(v);
        return true;
    }
    if (!strcmp(key, "layers"))
        return true;
    return FAIL("%s: unknown key \"%s\" (known: cell, hidden, layers, dropout, variational, "
                "init)", what, key);
}

bt_status bt_model_file_parse(const char *text, const char *what, bt_model_file *m, char *err,
                              size_t errlen)
{
    memset(m, 0, sizeof *m);
    json_error_t je;
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &je), *v;
    const char *key;
    bool ok = root && json_is_object(root);
    if (!root)
        bt_error(err, errlen, BT_ERR_FORMAT, "%s: not JSON (line %d: %s)", what, je.line, je.text);
    else if (!ok)
        bt_error(err, errlen, BT_ERR_FORMAT, "%s: a model file is one JSON object", what);
    json_object_foreach(ok ? root : NULL, key, v) {
        if (!(ok = top_key(key, v, what, m, err, errlen)))
            break;
    }
    const json_t *layers = ok ? json_object_get(root, "layers") : NULL;
    if (ok && json_is_integer(layers)) {
        int n = 0;
        if ((ok = get_int(layers, what, "layers", &n, err, errlen)))
            snprintf(m->layers, sizeof m->layers, "%d", n);
    } else if (ok && json_is_array(layers))
        ok = layer_list(layers, what, m, err, errlen);
    else if (ok && layers)
        ok = FAIL("%s: \"layers\" is a count or a list of {\"cell\": C, \"hidden\": H}", what);
    json_decref(root);
    if (!ok)
        return BT_ERR_FORMAT;
    if (!m->cell[0] && !strchr(m->layers, ':'))
        return bt_error(err, errlen, BT_ERR_FORMAT, "%s: no cell: give \"cell\" or a cell per "
                        "layer", what);
    if (m->variational && !(m->dropout > 0))
        return bt_error(err, errlen, BT_ERR_FORMAT, "%s: \"variational\" needs a \"dropout\" "
                        "above 0", what);
    char why[256];
    if (bt_layers_canonical(m->layers, sizeof m->layers, m->cell, sizeof m->cell, &m->hidden, why,
                            sizeof why) != BT_OK)
        return bt_error(err, errlen, BT_ERR_FORMAT, "%s: %s", what, why);
    if (m->hidden < 1)
        return bt_error(err, errlen, BT_ERR_FORMAT, "%s: no width: give \"hidden\" or one per "
                        "layer", what);
    return BT_OK;
}

bt_status bt_model_file_read(const char *path, bt_model_file *m, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return bt_error(err, errlen, BT_ERR_IO, "model file %s: cannot open it", path);
    char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    bool too_long = n == sizeof buf - 1 && fgetc(f) != EOF;
    fclose(f);
    if (too_long)
        return bt_error(err, errlen, BT_ERR_FORMAT, "model file %s: longer than 64 KiB", path);
    buf[n] = '\0';
    char what[512];
    snprintf(what, sizeof what, "model file %s", path);
    return bt_model_file_parse(buf, what, m, err, errlen);
}
