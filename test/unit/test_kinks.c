/* Gradients where an op has no derivative, against the values that
 * docs/language.md ("Gradients at kinks and ties") promises: relu and abs
 * at 0 (and -0) give 0; tied maxima of max(x), max(x, a) and max_pool2d
 * share the adjoint evenly.  Each model goes through the whole compiler
 * (frontend, meta-step builder, optimiser, JIT in f64), and the compiled
 * inner gradient and meta-gradient are compared with the rule's exact
 * values; the reference evaluator (ir/eval.c) must give the same. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../backend/backend.h"
#include "../../passes/passes.h"
#include "compile_model.h"
#include "check.h"

typedef struct {
    IrModule *m;
    Model *md;
    BeJit *jit;
} Compiled;

static bool compile(Compiled *c, const char *text) {
    return compile_model(text, NULL, 2, &c->md, &c->m, &c->jit);
}

static void release(Compiled *c) {
    be_jit_free(c->jit);
    ir_module_free(c->m);
    model_free(c->md);
}

/* Output `which` of function `name` at the inputs `in`, compiled and by the
 * reference evaluator, into jit_out and ref_out (n elements each). */
static void run(Compiled *c, const char *name, double *const *in, int which, double *jit_out, double *ref_out,
                int64_t n) {
    const IrFunc *f = ir_module_find(c->m, name);
    double *out[32];
    void *outp[32];
    for (int j = 0; j < f->noutput; j++) {
        out[j] = calloc((size_t)ir_numel(f->node[f->output[j]].type), sizeof(double));
        outp[j] = out[j];
    }
    void *arena = aligned_alloc(64, (be_arena_bytes(f) + 64) / 64 * 64);
    be_jit_lookup(c->jit, name)((const void *const *)in, outp, arena);
    memcpy(jit_out, out[which], (size_t)n * sizeof *jit_out);
    ir_eval(f, (const double *const *)in, out);
    memcpy(ref_out, out[which], (size_t)n * sizeof *ref_out);
    for (int j = 0; j < f->noutput; j++)
        free(out[j]);
    free(arena);
}

/* got[i] == want[i] to rounding, for the compiled code and the evaluator. */
static void expect(const char *what, const double *jit, const double *ref, const double *want, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        CHECK(fabs(jit[i] - want[i]) <= 1e-15 * fmax(1, fabs(want[i])), "%s [%lld]: compiled %.17g, rule %.17g",
              what, (long long)i, jit[i], want[i]);
        CHECK(fabs(ref[i] - want[i]) <= 1e-15 * fmax(1, fabs(want[i])), "%s [%lld]: evaluator %.17g, rule %.17g",
              what, (long long)i, ref[i], want[i]);
    }
}

/* relu and abs at 0 and -0: gradient 0; elsewhere their derivatives. */
static void test_relu_abs_at_zero(void) {
    static const char text[] =
        "param b : [4] = zeros;\n"
        "def loss(x, y) = sum(relu(b) * y) + sum(abs(b) * x);\n"
        "task external { support x : [4], y : [4]; query x : [4], y : [4]; }\n"
        "meta { inner_lr = 0.1; }\n";
    Compiled c;
    if (!compile(&c, text)) {
        CHECK(false, "the relu/abs model compiles");
        return;
    }
    double b[4] = {0.0, -0.0, 2.0, -3.0}, x[4] = {0.5, 0.7, 0.9, 1.1}, y[4] = {1.3, 1.7, 1.9, 2.3};
    double *in[3] = {b, x, y}, jit[4], ref[4];
    /* d/db = y * (relu(b) > 0) + x * sign(b) */
    double want[4] = {0, 0, y[2] + x[2], -x[3]};
    run(&c, "grad", in, 1, jit, ref, 4);
    expect("relu and abs at 0: inner gradient", jit, ref, want, 4);
    release(&c);
}

/* max(x * 0 + b) over 10 points is b: its derivative is 1, through the
 * inner gradient and through the meta-gradient of both orders. */
static void test_max_of_equal_elements(void) {
    static const char tmpl[] =
        "dim K = 10;\n"
        "param b : [1] = zeros;\n"
        "def loss(x, y) = max(x * 0 + b);\n"
        "task external { support x : [K, 1], y : [K, 1]; query x : [K, 1], y : [K, 1]; }\n"
        "meta { inner_lr = 0.1; order = %s; }\n";
    static const char *const orders[2] = {"second", "first"};
    for (int o = 0; o < 2; o++) {
        char text[512];
        snprintf(text, sizeof text, tmpl, orders[o]);
        Compiled c;
        if (!compile(&c, text)) {
            CHECK(false, "the max model compiles (order %s)", orders[o]);
            continue;
        }
        double b[1] = {0.25}, x[10], y[10], jit[1], ref[1], one[1] = {1};
        for (int i = 0; i < 10; i++)
            x[i] = y[i] = 0.1 * i - 0.3;
        double *grad_in[3] = {b, x, y}, *meta_in[5] = {b, x, y, x, y};
        char what[96];
        run(&c, "grad", grad_in, 1, jit, ref, 1);
        snprintf(what, sizeof what, "max of 10 equal elements: inner gradient (order %s)", orders[o]);
        expect(what, jit, ref, one, 1);
        run(&c, "meta_step", meta_in, 1, jit, ref, 1);
        snprintf(what, sizeof what, "max of 10 equal elements: meta-gradient (order %s)", orders[o]);
        expect(what, jit, ref, one, 1);
        release(&c);
    }
}

/* max along an axis and max_pool2d with 2-, 3- and 4-way ties. */
static void test_max_axis_and_pool_ties(void) {
    static const char text[] =
        "param P : [2, 3] = zeros;\n"
        "param Q : [1, 1, 4, 4] = zeros;\n"
        "def loss(x, y) = sum(max(P, 1) * x) + sum(max_pool2d(Q, 2) * y);\n"
        "task external { support x : [2], y : [1, 1, 2, 2]; query x : [2], y : [1, 1, 2, 2]; }\n"
        "meta { inner_lr = 0.1; }\n";
    Compiled c;
    if (!compile(&c, text)) {
        CHECK(false, "the max-pool model compiles");
        return;
    }
    double P[6] = {2, 2, 1, 5, 1, 1};
    /* windows (top-left, top-right, bottom-left, bottom-right):
     * all 7 (4-way tie); 1 3 / 3 2 (2-way); 4 0 / 0 0 (none); 6 6 / 6 -1 (3-way) */
    double Q[16] = {7, 7, 1, 3,
                    7, 7, 3, 2,
                    4, 0, 6, 6,
                    0, 0, 6, -1};
    double x[2] = {0.6, 1.4}, y[4] = {1.2, 1.6, 2.0, 3.0};
    double *in[4] = {P, Q, x, y}, jit[16], ref[16];
    double wantP[6] = {x[0] / 2, x[0] / 2, 0, x[1], 0, 0};
    double wantQ[16] = {y[0] / 4, y[0] / 4, 0, y[1] / 2,
                        y[0] / 4, y[0] / 4, y[1] / 2, 0,
                        y[2], 0, y[3] / 3, y[3] / 3,
                        0, 0, y[3] / 3, 0};
    run(&c, "grad", in, 1, jit, ref, 6);
    expect("max(P, 1) with a 2-way tie: inner gradient", jit, ref, wantP, 6);
    run(&c, "grad", in, 2, jit, ref, 16);
    expect("max_pool2d with 2-, 3- and 4-way ties: inner gradient", jit, ref, wantQ, 16);
    release(&c);
}

int main(void) {
    test_relu_abs_at_zero();
    test_max_of_equal_elements();
    test_max_axis_and_pool_ties();
    return check_summary();
}
