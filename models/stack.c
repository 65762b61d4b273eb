/* stack.c: stacked layers (stack.h). Each layer is a model of its own,
 * declared and checked by cell_guard at output 0, without a parameter block:
 * the stack owns one block, and each layer's ptab points into it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stack.h"

static bool stackable(const bt_cell_def *c)
{
    return c->size >= offsetof(bt_cell_def, flags) + sizeof c->flags &&
           (c->flags & BT_CELL_STACKABLE);
}

/* Layer l at input width in_w, declared and checked (cell_guard), its specs
 * (prefixed) and state widths appended to the stack's. */
static bt_status add_layer(bt_model *m, int l, const bt_layer_def *d, int in_w, char *err,
                           size_t errlen)
{
    if (!d->cell)
        return bt_error(err, errlen, BT_ERR_ARG, "layer %d: no cell (is its plugin loaded?)", l + 1);
    if (!stackable(d->cell))
        return bt_error(err, errlen, BT_ERR_ARG, "layer %d: cell %s cannot be a layer of a stack "
                        "(it does not declare BT_CELL_STACKABLE: a form without its own output "
                        "layer); use it alone, or another cell", l + 1, d->cell->name);
    if (d->hidden < 1)
        return bt_error(err, errlen, BT_ERR_ARG, "layer %d: width %d must be at least 1", l + 1,
                        d->hidden);
    bt_model *s = bt_calloc(1, sizeof *s);
    if (!s)
        return BT_ERR_NOMEM;
    m->layer[l] = s;
    m->n_layers = l + 1; /* freed with the stack from here */
    s->cell = d->cell;
    s->dims = (bt_cell_dims){in_w, d->hidden, 0};
    bt_status st = bt_model_declare(s, err, errlen);
    if (st != BT_OK)
        return st;
    if (m->n_params + s->n_params + 2 > BT_MAX_PARAMS || m->n_states + s->n_states > BT_MAX_STATES)
        return bt_error(err, errlen, BT_ERR_ARG, "a stack holds at most %d parameters and %d "
                        "states: layer %d (%s) goes beyond; use fewer layers", BT_MAX_PARAMS,
                        BT_MAX_STATES, l + 1, d->cell->name);
    m->layer_param0[l] = m->n_params;
    m->layer_state0[l] = m->n_states;
    for (int i = 0; i < s->n_params; i++) {
        bt_param_spec *p = &m->specs[m->n_params++];
        *p = s->specs[i];
        int n = snprintf(p->name, sizeof p->name, "l%d.%s", l + 1, s->specs[i].name);
        if (n < 0 || (size_t)n >= sizeof p->name)
            return bt_error(err, errlen, BT_ERR_PLUGIN, "layer %d: parameter name '%s' of cell %s "
                            "is too long for its layer prefix (at most %d bytes)", l + 1,
                            s->specs[i].name, d->cell->name, (int)sizeof p->name - 5);
    }
    for (int k = 0; k < s->n_states; k++)
        m->state_width[m->n_states++] = s->state_width[k];
    return BT_OK;
}

static void out_spec(bt_param_spec *p, const char *name, int rows, int cols, bt_init_kind k,
                     double scale)
{
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = cols > 0 ? 2 : 1;
    p->shape[0] = rows;
    p->shape[1] = cols > 0 ? cols : 0;
    p->init = k;
    p->scale = scale;
}

/* The one block, and each layer's table pointing into it. */
static bt_status stack_params(bt_model *m, char *err, size_t errlen)
{
    m->params = bt_params_new();
    if (!m->params)
        return bt_error(err, errlen, BT_ERR_NOMEM, "out of memory for the parameters of a stack");
    for (int i = 0; i < m->n_params; i++)
        m->ptab[i] = bt_params_add(m->params, m->specs[i].name, m->specs[i].ndim,
                                   m->specs[i].shape);
    bt_status st = bt_params_finalize(m->params);
    if (st != BT_OK)
        return bt_error(err, errlen, st == BT_ERR_NOMEM ? BT_ERR_NOMEM : BT_ERR_PLUGIN, "stack: %s",
                        bt_params_error(m->params));
    for (int l = 0; l < m->n_layers; l++)
        for (int i = 0; i < m->layer[l]->n_params; i++)
            m->layer[l]->ptab[i] = m->ptab[m->layer_param0[l] + i];
    return BT_OK;
}

bt_status bt_model_new_stack(const bt_layer_def *layers, int n, int input, int output,
                             double dropout, bool variational, bt_model **out, char *err,
                             size_t errlen)
{
    *out = NULL;
    if (n < 1 || n > BT_MAX_LAYERS)
        return bt_error(err, errlen, BT_ERR_ARG, "a stack has 1 to %d layers, not %d",
                        BT_MAX_LAYERS, n);
    if (!(dropout >= 0 && dropout < 1))
        return bt_error(err, errlen, BT_ERR_ARG, "dropout %g is not a probability in [0, 1)",
                        dropout);
    if (n == 1 && dropout == 0)
        return bt_model_new(layers[0].cell, (bt_cell_dims){input, layers[0].hidden, output}, out,
                            err, errlen);
    if (input <= 0 || output <= 0)
        return bt_error(err, errlen, BT_ERR_ARG, "stack: sizes must be positive (input %d, "
                        "output %d)", input, output);
    bt_model *m = bt_calloc(1, sizeof *m);
    if (!m)
        return BT_ERR_NOMEM;
    m->cell = layers[0].cell;
    m->dims = (bt_cell_dims){input, layers[0].hidden, output};
    m->dropout = dropout;
    m->variational = variational;
    bt_status st = BT_OK;
    int in_w = input;
    for (int l = 0; l < n && st == BT_OK; l++) {
        st = add_layer(m, l, &layers[l], in_w, err, errlen);
        if (st == BT_OK)
            in_w = m->layer[l]->state_width[0]; /* the layer's h, the next one's input */
    }
    if (st == BT_OK) {
        out_spec(&m->specs[m->n_params++], "out.W_hq", in_w, output, BT_INIT_NORMAL, 0.01);
        out_spec(&m->specs[m->n_params++], "out.b_q", output, 0, BT_INIT_ZERO, 0);
        st = stack_params(m, err, errlen);
    }
    if (st != BT_OK) {
        bt_model_free(m);
        return st;
    }
    *out = m;
    return BT_OK;
}

bt_tensor *bt_model_step_at(bt_graph *g, const bt_model *m, const bt_step_input *in, long t,
                            bt_tensor *const *state, bt_tensor **next)
{
    if (!m->n_layers)
        return bt_model_step(g, m, in, state, next);
    /* A stack: layer l reads layer l-1's h at the same step (dropped out in
     * training), the output layer reads the top layer's. */
    bt_step_input li = *in;
    bt_tensor *h = NULL;
    for (int l = 0; l < m->n_layers; l++) {
        int s0 = m->layer_state0[l];
        if (l > 0)
            li = (bt_step_input){.batch = in->batch, .x = h};
        /* A lower layer's output is the next layer's input: only the top
         * layer's may be skipped. */
        li.state_only = in->state_only && l == m->n_layers - 1;
        h = bt_model_step(g, m->layer[l], &li, state + s0, next + s0); /* checked there */
        if (!h)
            return NULL;
        if (m->dropout_on && m->dropout > 0)
            h = bt_dropout(g, h, m->dropout, bt_stack_mask_seed(m, l, t));
    }
    if (in->state_only) /* the next states are all that is read */
        return h;
    int o = m->n_params - 2; /* out.W_hq, out.b_q */
    return bt_add(g, bt_matmul(g, h, m->ptab[o]), m->ptab[o + 1]);
}

/* One "C[:H]" entry into d. */
static bool parse_layer(const bt_registry *reg, const char *s, size_t len, int hidden,
                        bt_layer_def *d, char *err, size_t errlen)
{
    char name[BT_NAME_LEN] = "", known[512];
    const char *colon = memchr(s, ':', len);
    size_t nlen = colon ? (size_t)(colon - s) : len;
    if (nlen == 0 || nlen >= sizeof name) {
        bt_error(err, errlen, BT_ERR_ARG, "--layers: '%.*s' is not CELL[:WIDTH]", (int)len, s);
        return false;
    }
    memcpy(name, s, nlen);
    d->cell = bt_registry_cell(reg, name);
    if (!d->cell) {
        bt_error(err, errlen, BT_ERR_NOT_FOUND, "--layers: unknown cell '%s' (known: %s)", name,
                 bt_registry_names(reg, BT_KIND_CELL, known, sizeof known));
        return false;
    }
    d->hidden = hidden;
    if (colon) {
        char num[32] = "", *end;
        size_t wl = len - nlen - 1;
        if (wl == 0 || wl >= sizeof num) {
            bt_error(err, errlen, BT_ERR_ARG, "--layers: '%.*s' has no width after ':'", (int)len, s);
            return false;
        }
        memcpy(num, colon + 1, wl);
        long v = strtol(num, &end, 10);
        if (*end || v < 1 || v > 1 << 16) {
            bt_error(err, errlen, BT_ERR_ARG, "--layers: width '%s' of layer %s is not a number "
                     "from 1 to 65536", num, name);
            return false;
        }
        d->hidden = (int)v;
    }
    return true;
}

int bt_layers_parse(const bt_registry *reg, const char *layers, const char *cell, int hidden,
                    bt_layer_def *out, char *err, size_t errlen)
{
    char *end;
    long n = layers && *layers ? strtol(layers, &end, 10) : 1;
    if (!layers || !*layers || (*end == '\0' && end != layers)) { /* "" or "N": all alike */
        if (n < 1 || n > BT_MAX_LAYERS) {
            bt_error(err, errlen, BT_ERR_ARG, "--layers %s: a stack has 1 to %d layers", layers,
                     BT_MAX_LAYERS);
            return -1;
        }
        char spec[BT_NAME_LEN + 16];
        snprintf(spec, sizeof spec, "%s:%d", cell ? cell : "", hidden);
        for (int l = 0; l < n; l++)
            if (!parse_layer(reg, spec, strlen(spec), hidden, &out[l], err, errlen))
                return -1;
        return (int)n;
    }
    int count = 0;
    for (const char *s = layers; ; ) {
        const char *comma = strchr(s, ',');
        size_t len = comma ? (size_t)(comma - s) : strlen(s);
        if (count == BT_MAX_LAYERS) {
            bt_error(err, errlen, BT_ERR_ARG, "--layers %s: a stack has at most %d layers",
                     layers, BT_MAX_LAYERS);
            return -1;
        }
        if (!parse_layer(reg, s, len, hidden, &out[count++], err, errlen))
            return -1;
        if (!comma)
            break;
        s = comma + 1;
    }
    return count;
}

const char *bt_layers_format(const bt_layer_def *layers, int n, char *buf, size_t len)
{
    size_t u = 0;
    buf[0] = '\0';
    for (int l = 0; l < n && u < len; l++)
        u += (size_t)snprintf(buf + u, len - u, "%s%s:%d", l ? "," : "", layers[l].cell->name,
                              layers[l].hidden);
    return buf;
}

bt_status bt_model_from_arch(const bt_registry *reg, const char *layers, const char *cell,
                             int hidden, double dropout, bool variational, int input, int output,
                             bt_model **out, char *err, size_t errlen)
{
    bt_layer_def defs[BT_MAX_LAYERS];
    *out = NULL;
    int n = bt_layers_parse(reg, layers, cell, hidden, defs, err, errlen);
    if (n < 0)
        return BT_ERR_ARG;
    return bt_model_new_stack(defs, n, input, output, dropout, variational, out, err, errlen);
}

bt_status bt_model_replica(bt_model *m, bt_model **out, char *err, size_t errlen)
{
    *out = NULL;
    bt_layer_def defs[BT_MAX_LAYERS];
    int n = m->n_layers ? m->n_layers : 1;
    for (int l = 0; l < n; l++)
        defs[l] = m->n_layers ? (bt_layer_def){m->layer[l]->cell, m->layer[l]->dims.hidden}
                              : (bt_layer_def){m->cell, m->dims.hidden};
    bt_status st = bt_model_new_stack(defs, n, m->dims.input, m->dims.output, m->dropout,
                                      m->variational, out, err, errlen);
    if (st != BT_OK)
        return st;
    if (bt_params_share_values((*out)->params, m->params) != BT_OK) {
        bt_model_free(*out);
        *out = NULL;
        return bt_error(err, errlen, BT_ERR_PLUGIN, "cell %s declared other parameters for a "
                        "second copy of the same model", m->cell->name);
    }
    return BT_OK;
}

int bt_model_state_layer(const bt_model *m, int k)
{
    int l = 0;
    while (l + 1 < m->n_layers && m->layer_state0[l + 1] <= k)
        l++;
    return l;
}

static void classic_state_name(int k, char *buf, size_t len)
{
    if (k < 2)
        snprintf(buf, len, "%c0", k == 0 ? 'h' : 'c');
    else
        snprintf(buf, len, "s%d_0", k);
}

const char *bt_model_state_name(const bt_model *m, int k, char *buf, size_t len)
{
    if (!m->n_layers) {
        classic_state_name(k, buf, len);
        return buf;
    }
    int l = bt_model_state_layer(m, k);
    char own[16];
    classic_state_name(k - m->layer_state0[l], own, sizeof own);
    snprintf(buf, len, "l%d.%s", l + 1, own);
    return buf;
}

static uint64_t mix(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t bt_stack_mask_seed(const bt_model *m, int l, long t)
{
    uint64_t step = m->variational ? 0 : (uint64_t)t + 1;
    return mix(mix(m->dropout_seed ^ mix((uint64_t)l + 1)) ^ step);
}

uint64_t bt_dropout_sequence_seed(uint64_t policy_seed)
{
    return mix(policy_seed ^ 0x64726f706f7574ULL); /* "dropout" */
}

/* Entry "C[:H]" of a spec into name and width (hidden when left off). */
static bool canonical_entry(const char *s, size_t len, const char *cell, int hidden, char *name,
                            int *width)
{
    const char *colon = memchr(s, ':', len);
    size_t nlen = colon ? (size_t)(colon - s) : len;
    if (nlen >= BT_NAME_LEN)
        return false;
    memcpy(name, nlen ? s : cell, nlen ? nlen : strlen(cell) + 1);
    name[nlen ? nlen : strlen(cell)] = '\0';
    *width = hidden;
    if (colon) {
        char num[16] = "", *end;
        size_t wl = len - nlen - 1;
        if (wl == 0 || wl >= sizeof num)
            return false;
        memcpy(num, colon + 1, wl);
        long v = strtol(num, &end, 10);
        if (*end || v < 1 || v > 1 << 16)
            return false;
        *width = (int)v;
    }
    return name[0] != '\0';
}

bt_status bt_layers_canonical(char *layers, size_t len, char *cell, size_t cell_len, int *hidden,
                              char *err, size_t errlen)
{
    if (!layers[0])
        return BT_OK;
    char names[BT_MAX_LAYERS][BT_NAME_LEN], *end;
    int widths[BT_MAX_LAYERS], n = 0;
    long count = strtol(layers, &end, 10);
    if (*end == '\0' && end != layers) { /* "N": N layers of cell at hidden */
        if (count < 1 || count > BT_MAX_LAYERS)
            return bt_error(err, errlen, BT_ERR_ARG, "--layers %s: a stack has 1 to %d layers",
                            layers, BT_MAX_LAYERS);
        for (n = 0; n < count; n++) {
            snprintf(names[n], sizeof names[n], "%s", cell);
            widths[n] = *hidden;
        }
    } else
        for (const char *s = layers; ; n++) {
            const char *comma = strchr(s, ',');
            size_t l = comma ? (size_t)(comma - s) : strlen(s);
            if (n == BT_MAX_LAYERS)
                return bt_error(err, errlen, BT_ERR_ARG, "--layers %s: a stack has at most %d "
                                "layers", layers, BT_MAX_LAYERS);
            if (!canonical_entry(s, l, cell, *hidden, names[n], &widths[n]))
                return bt_error(err, errlen, BT_ERR_ARG, "--layers %s: '%.*s' is not CELL[:WIDTH] "
                                "(a cell name, a width from 1 to 65536)", layers, (int)l, s);
            if (!comma) {
                n++;
                break;
            }
            s = comma + 1;
        }
    snprintf(cell, cell_len, "%s", names[0]);
    *hidden = widths[0];
    size_t u = 0;
    layers[0] = '\0';
    for (int l = 0; n > 1 && l < n; l++) {
        int w = snprintf(layers + u, len - u, "%s%s:%d", l ? "," : "", names[l], widths[l]);
        if (w < 0 || (size_t)w >= len - u)
            return bt_error(err, errlen, BT_ERR_ARG, "--layers: the stack's text is longer than "
                            "%zu characters", len - 1);
        u += (size_t)w;
    }
    return BT_OK;
}

const char *bt_model_layers_text(const bt_model *m, char *buf, size_t len)
{
    bt_layer_def d[BT_MAX_LAYERS];
    for (int l = 0; l < m->n_layers; l++)
        d[l] = (bt_layer_def){m->layer[l]->cell, m->layer[l]->dims.hidden};
    return bt_layers_format(d, m->n_layers, buf, len);
}
