/* test_gradfile.c: the grad-file format as a C user calls it (io/gradfile.h):
 * P read, gradients computed and G written through the library, checked
 * against the fixtures of tests/grad_reference.c (explicit-loop BPTT in
 * double, no bptt ops); P's faults reported with the tensor named; unused
 * tensors listed; G's metadata and tensors read back. */
#include <criterion/criterion.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gradfile.h"
#include "registry.h"

#if BT_REAL_DOUBLE
#define ATOL 1e-10
#define RTOL 1e-8
#else
#define ATOL 1e-5
#define RTOL 1e-4
#endif

static bt_registry *reg;

static void load_plugins(void)
{
    char err[1024] = "";
    reg = bt_registry_new();
    cr_assert_not_null(reg);
    cr_assert_eq(bt_registry_load_default(reg, err, sizeof err), BT_OK, "%s", err);
}

static void unload_plugins(void) { bt_registry_free(reg); }

TestSuite(gradfile, .init = load_plugins, .fini = unload_plugins);

static const char *fixture(const char *name)
{
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", BT_FIXTURES, name);
    return path;
}

/* A created policy and the options bt_grad_compute takes. */
typedef struct policy {
    const bt_policy_def *def;
    void *state;
    char desc[64];
} policy;

static bt_grad_options options_for(policy *p, const char *spec)
{
    char name[BT_NAME_LEN + 1], err[256] = "";
    const char *opts;
    bt_split_spec(spec, name, sizeof name, &opts);
    p->def = bt_registry_policy(reg, name);
    cr_assert_not_null(p->def, "policy %s", name);
    cr_assert_eq(p->def->create(bt_host_table(), opts, &p->state, err, sizeof err), 0, "%s", err);
    p->def->describe(p->state, p->desc, sizeof p->desc);
    return (bt_grad_options){.policy = p->def, .policy_state = p->state, .policy_desc = p->desc,
                             .seed = 1};
}

/* Every element of tensor `name` of the expected file against got[n]. */
static void expect_close(const bt_st_file *exp, const char *name, const bt_real *got, size_t n)
{
    const bt_st_tensor *e = bt_st_find(exp, name);
    cr_assert_not_null(e, "expected file has no %s", name);
    cr_assert_eq(e->count, n, "%s: %zu values, expected %zu", name, n, e->count);
    double *want = malloc(sizeof(double) * n);
    bt_real *tmp = malloc(sizeof(bt_real) * n);
    char err[256];
    cr_assert_eq(bt_st_get_real(e, tmp, n, err, sizeof err), BT_OK, "%s", err);
    for (size_t i = 0; i < n; i++)
        want[i] = (double)tmp[i];
    for (size_t i = 0; i < n; i++)
        cr_assert(fabs((double)got[i] - want[i]) <= ATOL + RTOL * fabs(want[i]),
                  "%s[%zu]: library %.12g, reference %.12g", name, i, (double)got[i], want[i]);
    free(want);
    free(tmp);
}

/* P through the library under spec, every gradient against the reference G. */
static void check_case(const char *cell_name, const char *params, const char *spec,
                       const char *expected)
{
    char err[1024] = "";
    const bt_cell_def *cell = bt_registry_cell(reg, cell_name);
    cr_assert_not_null(cell);
    bt_grad_input *in = NULL;
    cr_assert_eq(bt_grad_input_read(cell, fixture(params), &in, err, sizeof err), BT_OK, "%s", err);
    policy p;
    bt_grad_options o = options_for(&p, spec);
    bt_grad_output out;
    cr_assert_eq(bt_grad_compute(in, &o, &out, err, sizeof err), BT_OK, "%s", err);
    bt_st_file *exp = NULL;
    cr_assert_eq(bt_st_read(fixture(expected), &exp, err, sizeof err), BT_OK, "%s", err);
    bt_real loss = (bt_real)out.loss;
    expect_close(exp, "loss", &loss, 1);
    char name[BT_NAME_LEN + 8];
    for (int i = 0; i < in->model->n_params; i++) {
        snprintf(name, sizeof name, "grad.%s", in->model->specs[i].name);
        expect_close(exp, name, in->model->ptab[i]->grad, in->model->ptab[i]->size);
    }
    expect_close(exp, "grad.h0", out.dstate[0], (size_t)in->seq.B * in->model->state_width[0]);
    bt_st_free(exp);
    bt_grad_output_free(&out);
    bt_grad_input_free(in);
    p.def->destroy(p.state);
}

Test(gradfile, matches_the_reference_under_full_and_fixed)
{
    check_case("rnn_tanh", "rnn_tanh_params.safetensors", "full", "rnn_tanh_full.expected.safetensors");
    check_case("rnn_tanh", "rnn_tanh_params.safetensors", "fixed:2",
               "rnn_tanh_fixed2.expected.safetensors");
    check_case("linear", "linear_xi_params.safetensors", "full", "linear_xi.expected.safetensors");
}

Test(gradfile, writes_g_with_its_metadata)
{
    char err[1024] = "", path[] = "/tmp/bptt_gradfile_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    const bt_cell_def *cell = bt_registry_cell(reg, "rnn_tanh");
    bt_grad_input *in = NULL;
    cr_assert_eq(bt_grad_input_read(cell, fixture("rnn_tanh_params.safetensors"), &in, err,
                                    sizeof err), BT_OK, "%s", err);
    policy p;
    bt_grad_options o = options_for(&p, "fixed:2");
    bt_grad_output out;
    cr_assert_eq(bt_grad_compute(in, &o, &out, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_grad_output_write(in, &o, &out, path, err, sizeof err), BT_OK, "%s", err);
    bt_st_file *g = NULL;
    cr_assert_eq(bt_st_read(path, &g, err, sizeof err), BT_OK, "%s", err);
    cr_assert_str_eq(bt_st_meta(g, "format"), BT_GRAD_FORMAT);
    cr_assert_str_eq(bt_st_meta(g, "cell"), "rnn_tanh");
    cr_assert_str_eq(bt_st_meta(g, "policy"), "fixed:2");
    cr_assert_str_eq(bt_st_meta(g, "xi_source"), "policy");
    cr_assert_str_eq(bt_st_meta(g, "T"), "5");
    /* fixed:2 over 5 steps cuts the edges into steps 2 and 4. */
    expect_close(g, "xi", (bt_real[]){1, 1, 0, 1, 0}, 5);
    expect_close(g, "grad.W_hh", in->model->ptab[1]->grad, in->model->ptab[1]->size);
    bt_st_free(g);
    unlink(path);
    bt_grad_output_free(&out);
    bt_grad_input_free(in);
    p.def->destroy(p.state);
}

Test(gradfile, names_the_faulty_tensor)
{
    char err[1024] = "";
    const bt_cell_def *cell = bt_registry_cell(reg, "rnn_tanh");
    bt_grad_input *in = NULL;
    cr_assert_eq(bt_grad_input_read(cell, fixture("bad_shape_params.safetensors"), &in, err,
                                    sizeof err), BT_ERR_FORMAT);
    cr_assert_null(in);
    cr_assert(strstr(err, "tensor 'b_q' is F32 [5]") && strstr(err, "[V] = [4]"), "%s", err);
    cr_assert_eq(bt_grad_input_read(cell, fixture("bad_id_params.safetensors"), &in, err,
                                    sizeof err), BT_ERR_FORMAT);
    cr_assert(strstr(err, "X[1][4] = 4 is out of range"), "%s", err);
    cr_assert_eq(bt_grad_input_read(cell, fixture("no_such_file.safetensors"), &in, err,
                                    sizeof err), BT_ERR_IO);
}

Test(gradfile, lists_the_tensors_nothing_reads)
{
    char err[1024] = "";
    bt_st_file *f = NULL;
    cr_assert_eq(bt_st_read(fixture("rnn_tanh_params.safetensors"), &f, err, sizeof err), BT_OK);
    cr_assert_eq(bt_st_add_real(f, "W_hhh", 1, (int64_t[]){2}, (bt_real[]){1, 2}, err, sizeof err),
                 BT_OK, "%s", err);
    bt_grad_input *in = NULL;
    cr_assert_eq(bt_grad_input_new(bt_registry_cell(reg, "rnn_tanh"), f, &in, err, sizeof err),
                 BT_OK, "%s", err);
    const char *names[4];
    cr_assert_eq(bt_grad_input_unused(in, names, 4), 1);
    cr_assert_str_eq(names[0], "W_hhh");
    bt_grad_input_free(in);
}
