/* A value that a pass fails to build (its builder passed no Diag, so the
 * failure is an internal error) fails the whole compile: the module counts
 * it and the verifier, which the backend runs before emitting anything,
 * refuses the module.  ad_grad, pass_run and meta_build fail likewise when
 * the count grows under them. */
#include "../../passes/passes.h"
#include "check.h"

static const SrcLoc L = {0};
#define T(...) ((IrType){DT_F64, sizeof((int[]){__VA_ARGS__}) / sizeof(int), {__VA_ARGS__}})

/* An ill-typed node built without a Diag is counted and fails verification. */
static void test_counted(void) {
    IrModule *m = ir_module_new(DT_F64);
    IrFunc *f = ir_func_new(m, "f");
    ValueId a = ir_input(f, "a", T(3), L), b = ir_input(f, "b", T(4), L);
    ir_output(f, a);
    Diag d;
    diag_init(&d, NULL);
    CHECK(ir_verify_module(m, &d), "a well-formed module verifies");
    fputs("expected below: mamlc: internal error: shape mismatch ...\n", stderr);
    CHECK(ir_binary(f, OP_ADD, a, b, L, NULL) == IR_NONE, "a shape mismatch builds nothing");
    CHECK(m->internal_errors == 1, "the module counts the internal error (%d)", m->internal_errors);
    CHECK(!ir_verify_module(m, &d), "a module with an internal error does not verify");
    diag_free(&d);
    ir_module_free(m);
}

int main(void) {
    test_counted();
    return check_summary();
}
