/* libFuzzer target: the whole frontend on arbitrary bytes.
 *
 * Every input must either load or be rejected with diagnostics, without a
 * crash, a leak, undefined behaviour or a hang.  A model that loads must
 * also lower: its `loss` (and `metric`) into a scratch module with the
 * task's support shapes, giving IR that the verifier accepts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "model.h"

static FILE *sink(void) {
    static FILE *devnull;
    if (!devnull)
        devnull = fopen("/dev/null", "w");
    if (!devnull)
        abort();
    return devnull;
}

/* fn(x, y) lowered with the support shapes; aborts if a loaded model fails. */
static void lower(const Model *m, const char *fn, bool differentiable, Diag *d) {
    IrModule *mod = ir_module_new(m->real);
    IrFunc *f = ir_func_new(mod, fn);
    ValueId *params = calloc((size_t)m->nparam + 1, sizeof *params);
    if (!params)
        abort();
    for (int i = 0; i < m->nparam; i++)
        params[i] = ir_input(f, m->param[i].name, m->param[i].type, m->param[i].loc);
    ValueId args[2] = {ir_input(f, "x", m->task.support_x, m->task.loc),
                       ir_input(f, "y", m->task.support_y, m->task.loc)};
    ValueId r = model_lower_call(m, f, fn, params, args, 2, differentiable, d);
    if (r == IR_NONE)
        abort();
    ir_output(f, r);
    if (!ir_verify_func(f, d))
        abort();
    free(params);
    ir_module_free(mod);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Diag d;
    diag_init(&d, sink());
    ModelOptions opt = {.real = size % 2 ? DT_F64 : DT_F32};
    Model *m = model_load_text("fuzz.mdl", (const char *)data, size, &opt, &d);
    if (m) {
        model_dump_ast(sink(), m);
        lower(m, "loss", true, &d);
        if (m->has_metric)
            lower(m, "metric", false, &d);
        model_free(m);
    }
    diag_free(&d);
    return 0;
}
