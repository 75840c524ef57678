/* Every differentiable op's gradient rule, first and second order, against
 * central finite differences in f64 at random points, evaluated with the
 * reference evaluator (ir/eval.c).  The optimised gradient (simplify, cse,
 * dce) must give the same numbers as the raw one. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../frontend/model.h"
#include "../../passes/passes.h"
#include "check.h"

typedef ValueId Body(IrFunc *f, ValueId a, ValueId b);

typedef struct {
    const char *name;
    int nargs;                  /* differentiable operands: 1 or 2 */
    IrType ta, tb;
    double lo, hi;              /* |operand| range */
    bool signed_;               /* random sign on top of [lo, hi] */
    Body *body;
    const char *expr;           /* or, with body NULL: a builtin call of a and b, lowered by the frontend */
} Case;

static const SrcLoc L = {0};
#define T(...) ((IrType){DT_F64, sizeof((int[]){__VA_ARGS__}) / sizeof(int), {__VA_ARGS__}})
#define S ((IrType){DT_F64, 0, {0}})

#define UN(op) static ValueId b_##op(IrFunc *f, ValueId a, ValueId b) { return ir_unary(f, OP_##op, a, L, NULL); }
UN(NEG) UN(EXP) UN(LOG) UN(SQRT) UN(TANH) UN(SIGMOID) UN(RELU) UN(SOFTPLUS) UN(SIN) UN(COS) UN(ABS)
#define BIN(op) static ValueId b_##op(IrFunc *f, ValueId a, ValueId b) { return ir_binary(f, OP_##op, a, b, L, NULL); }
BIN(ADD) BIN(SUB) BIN(MUL) BIN(DIV)

static ValueId b_pow3(IrFunc *f, ValueId a, ValueId b) { return ir_powc(f, a, 3, L, NULL); }
static ValueId b_pow_frac(IrFunc *f, ValueId a, ValueId b) { return ir_powc(f, a, -1.5, L, NULL); }
static ValueId b_pow2(IrFunc *f, ValueId a, ValueId b) { return ir_powc(f, a, 2, L, NULL); }
static ValueId b_bcast_row(IrFunc *f, ValueId a, ValueId b) {
    return ir_binary(f, OP_MUL, ir_broadcast(f, a, T(3, 4), L, NULL), b, L, NULL);
}
static ValueId b_bcast_col(IrFunc *f, ValueId a, ValueId b) {
    return ir_binary_bcast(f, OP_MUL, a, b, L, NULL);   /* [3,1] * [3,4] */
}
static ValueId b_sum1(IrFunc *f, ValueId a, ValueId b) {
    ValueId s = ir_reduce(f, OP_REDUCE_SUM, a, 1, (int[]){1}, L, NULL);
    return ir_binary(f, OP_MUL, s, s, L, NULL);
}
static ValueId b_sum02(IrFunc *f, ValueId a, ValueId b) {
    ValueId s = ir_reduce(f, OP_REDUCE_SUM, a, 2, (int[]){0, 2}, L, NULL);
    return ir_unary(f, OP_SIN, s, L, NULL);
}
static ValueId b_max1(IrFunc *f, ValueId a, ValueId b) {
    ValueId m = ir_reduce(f, OP_REDUCE_MAX, a, 1, (int[]){1}, L, NULL);
    return ir_binary(f, OP_MUL, m, m, L, NULL);
}
static ValueId b_reshape(IrFunc *f, ValueId a, ValueId b) {
    return ir_binary(f, OP_MUL, ir_reshape(f, a, T(2, 6), L, NULL), b, L, NULL);
}
static ValueId b_transpose(IrFunc *f, ValueId a, ValueId b) {
    return ir_binary(f, OP_MUL, ir_transpose(f, a, (int[]){1, 0}, L, NULL), b, L, NULL);
}
static ValueId b_transpose3(IrFunc *f, ValueId a, ValueId b) {
    ValueId t = ir_transpose(f, a, (int[]){2, 0, 1}, L, NULL);
    return ir_binary(f, OP_MUL, t, t, L, NULL);
}
static ValueId b_matmul(IrFunc *f, ValueId a, ValueId b) { return ir_matmul(f, a, b, L, NULL); }
static ValueId b_matmul_t(IrFunc *f, ValueId a, ValueId b) {
    return ir_matmul(f, a, ir_transpose(f, b, (int[]){1, 0}, L, NULL), L, NULL);
}
/* log_softmax over axis 1, as the frontend lowers it */
static ValueId b_log_softmax(IrFunc *f, ValueId a, ValueId b) {
    IrType t = ir_value_type(f, a), k = T(3, 1);
    ValueId m = ir_unary(f, OP_STOP_GRAD, ir_reduce(f, OP_REDUCE_MAX, a, 1, (int[]){1}, L, NULL), L, NULL);
    ValueId z = ir_binary(f, OP_SUB, a, ir_broadcast(f, ir_reshape(f, m, k, L, NULL), t, L, NULL), L, NULL);
    ValueId s = ir_reduce(f, OP_REDUCE_SUM, ir_unary(f, OP_EXP, z, L, NULL), 1, (int[]){1}, L, NULL);
    ValueId lse = ir_broadcast(f, ir_reshape(f, ir_unary(f, OP_LOG, s, L, NULL), k, L, NULL), t, L, NULL);
    return ir_binary(f, OP_SUB, z, lse, L, NULL);
}
/* a tiny two-layer network: tanh(a @ b) @ a^T */
static ValueId b_mlp(IrFunc *f, ValueId a, ValueId b) {
    ValueId h = ir_unary(f, OP_TANH, ir_matmul(f, a, b, L, NULL), L, NULL);
    return ir_matmul(f, h, ir_transpose(f, b, (int[]){1, 0}, L, NULL), L, NULL);
}

/* convolutions: x [N,C,H,W] (a) and w [O,C,KH,KW] (b), or g and w, or x and g */
static ValueId b_conv_s1p1(IrFunc *f, ValueId a, ValueId b) { return ir_conv(f, OP_CONV2D, a, b, 1, 1, S, L, NULL); }
static ValueId b_conv_s2p1(IrFunc *f, ValueId a, ValueId b) { return ir_conv(f, OP_CONV2D, a, b, 2, 1, S, L, NULL); }
static ValueId b_conv_s2p0(IrFunc *f, ValueId a, ValueId b) { return ir_conv(f, OP_CONV2D, a, b, 2, 0, S, L, NULL); }
static ValueId b_conv_grad_x(IrFunc *f, ValueId a, ValueId b) {
    return ir_conv(f, OP_CONV2D_GRAD_X, a, b, 2, 1, T(2, 2, 6, 6), L, NULL);
}
static ValueId b_conv_grad_w(IrFunc *f, ValueId a, ValueId b) {
    return ir_conv(f, OP_CONV2D_GRAD_W, a, b, 2, 1, T(3, 2, 3, 3), L, NULL);
}
/* a small conv net: conv(relu(conv(x, w)), w), the same w in both layers */
static ValueId b_conv_net(IrFunc *f, ValueId a, ValueId b) {
    ValueId h = ir_unary(f, OP_RELU, ir_conv(f, OP_CONV2D, a, b, 1, 1, S, L, NULL), L, NULL);
    return ir_conv(f, OP_CONV2D, h, b, 2, 1, S, L, NULL);
}

static ValueId b_ERF(IrFunc *f, ValueId a, ValueId b) { return ir_unary(f, OP_ERF, a, L, NULL); }
/* a window of a [4,5] times b [2,3] */
static ValueId b_slice(IrFunc *f, ValueId a, ValueId b) {
    return ir_binary(f, OP_MUL, ir_slice(f, a, (int[]){1, 2}, T(2, 3), L, NULL), b, L, NULL);
}
/* a [2,3] then b [2,2] along axis 1, squared */
static ValueId b_concat(IrFunc *f, ValueId a, ValueId b) {
    ValueId c = ir_concat(f, a, b, 1, L, NULL);
    return ir_binary(f, OP_MUL, c, ir_unary(f, OP_SIN, c, L, NULL), L, NULL);
}

static const Case cases[] = {
    {"neg", 1, T(3, 4), S, 0.1, 2, true, b_NEG, NULL},
    {"exp", 1, T(3, 4), S, 0.1, 2, true, b_EXP, NULL},
    {"log", 1, T(3, 4), S, 0.5, 2, false, b_LOG, NULL},
    {"sqrt", 1, T(3, 4), S, 0.5, 2, false, b_SQRT, NULL},
    {"tanh", 1, T(3, 4), S, 0.1, 2, true, b_TANH, NULL},
    {"sigmoid", 1, T(3, 4), S, 0.1, 3, true, b_SIGMOID, NULL},
    {"relu", 1, T(3, 4), S, 0.1, 2, true, b_RELU, NULL},
    {"softplus", 1, T(3, 4), S, 0.1, 3, true, b_SOFTPLUS, NULL},
    {"sin", 1, T(3, 4), S, 0.1, 3, true, b_SIN, NULL},
    {"cos", 1, T(3, 4), S, 0.1, 3, true, b_COS, NULL},
    {"abs", 1, T(3, 4), S, 0.1, 2, true, b_ABS, NULL},
    {"powc 3", 1, T(3, 4), S, 0.1, 2, true, b_pow3, NULL},
    {"powc -1.5", 1, T(3, 4), S, 0.5, 2, false, b_pow_frac, NULL},
    {"powc 2", 1, T(3, 4), S, 0.1, 2, true, b_pow2, NULL},
    {"add", 2, T(3, 4), T(3, 4), 0.1, 2, true, b_ADD, NULL},
    {"sub", 2, T(3, 4), T(3, 4), 0.1, 2, true, b_SUB, NULL},
    {"mul", 2, T(3, 4), T(3, 4), 0.1, 2, true, b_MUL, NULL},
    {"div", 2, T(3, 4), T(3, 4), 0.5, 2, true, b_DIV, NULL},
    {"broadcast row", 2, T(4), T(3, 4), 0.1, 2, true, b_bcast_row, NULL},
    {"broadcast col", 2, T(3, 1), T(3, 4), 0.1, 2, true, b_bcast_col, NULL},
    {"reduce_sum axis 1", 1, T(3, 4), S, 0.1, 2, true, b_sum1, NULL},
    {"reduce_sum axes 0,2", 1, T(2, 3, 4), S, 0.1, 2, true, b_sum02, NULL},
    {"reduce_max", 1, T(3, 4), S, 0.1, 2, true, b_max1, NULL},
    {"reshape", 2, T(3, 4), T(2, 6), 0.1, 2, true, b_reshape, NULL},
    {"transpose", 2, T(3, 4), T(4, 3), 0.1, 2, true, b_transpose, NULL},
    {"transpose rank 3", 1, T(2, 3, 4), S, 0.1, 2, true, b_transpose3, NULL},
    {"matmul", 2, T(3, 4), T(4, 5), 0.1, 2, true, b_matmul, NULL},
    {"matmul transposed", 2, T(3, 4), T(5, 4), 0.1, 2, true, b_matmul_t, NULL},
    {"log_softmax", 1, T(3, 5), S, 0.1, 3, true, b_log_softmax, NULL},
    {"mlp", 2, T(3, 4), T(4, 4), 0.1, 1, true, b_mlp, NULL},
    {"conv2d stride 1 pad 1", 2, T(2, 3, 5, 5), T(4, 3, 3, 3), 0.1, 2, true, b_conv_s1p1, NULL},
    {"conv2d stride 2 pad 1", 2, T(2, 2, 6, 6), T(3, 2, 3, 3), 0.1, 2, true, b_conv_s2p1, NULL},
    {"conv2d stride 2 pad 0, odd sizes", 2, T(1, 2, 7, 5), T(3, 2, 2, 3), 0.1, 2, true, b_conv_s2p0, NULL},
    {"conv2d_grad_x", 2, T(2, 3, 3, 3), T(3, 2, 3, 3), 0.1, 2, true, b_conv_grad_x, NULL},
    {"conv2d_grad_w", 2, T(2, 2, 6, 6), T(2, 3, 3, 3), 0.1, 2, true, b_conv_grad_w, NULL},
    {"conv net: conv, relu, conv", 2, T(2, 3, 6, 6), T(3, 3, 3, 3), 0.1, 1, true, b_conv_net, NULL},
    {"erf", 1, T(3, 4), S, 0.05, 2.5, true, b_ERF, NULL},
    {"slice", 2, T(4, 5), T(2, 3), 0.1, 2, true, b_slice, NULL},
    {"concat", 2, T(2, 3), T(2, 2), 0.1, 2, true, b_concat, NULL},
    /* the builtins the frontend composes from ops, as it lowers them */
    {"softmax axis 1", 1, T(3, 5), S, 0.1, 3, true, NULL, "softmax(a, 1)"},
    {"softmax axis 0", 1, T(3, 5), S, 0.1, 3, true, NULL, "softmax(a, 0)"},
    {"leaky_relu", 1, T(3, 4), S, 0.1, 2, true, NULL, "leaky_relu(a, 0.1) ^ 2"},
    {"elu", 1, T(3, 4), S, 0.1, 2, true, NULL, "elu(a)"},
    {"gelu", 1, T(3, 4), S, 0.05, 3, true, NULL, "gelu(a)"},
    {"layer_norm", 2, T(3, 5), T(5), 0.1, 2, true, NULL, "layer_norm(a, b, sin(b))"},
    {"layer_norm rank 3", 2, T(2, 3, 4), T(4), 0.1, 2, true, NULL, "layer_norm(a, b, b * b)"},
    {"avg_pool2d, odd sizes (floor)", 1, T(2, 3, 5, 7), S, 0.1, 2, true, NULL, "avg_pool2d(a, 2) ^ 2"},
    {"max_pool2d, odd sizes (floor)", 1, T(2, 2, 5, 7), S, 0.1, 2, true, NULL, "max_pool2d(a, 2) ^ 2"},
    {"global average pool", 1, T(2, 3, 4, 5), S, 0.1, 2, true, NULL, "mean(a, [2, 3]) ^ 2"},
    {"sum over axes 0, 1", 1, T(2, 3, 4), S, 0.1, 2, true, NULL, "sin(sum(a, [0, 1]))"},
    {"max over axes 2, 0", 1, T(2, 3, 4), S, 0.1, 2, true, NULL, "max(a, [2, 0]) ^ 2"},
    {"concat builtin", 2, T(2, 3), T(2, 4), 0.1, 2, true, NULL, "tanh(concat(a, b, -1)) * concat(b, a, 1)"},
    {"permute", 1, T(2, 3, 4), S, 0.1, 2, true, NULL, "permute(a, [2, 0, 1]) * permute(sin(a), [-1, 0, 1])"},
    {"power of a dim expression", 1, T(3, 4), S, 0.5, 2, false, NULL, "a ^ (K - 1) + a ^ (K / 8)"},
    {"mse", 2, T(3, 4), T(3, 4), 0.1, 2, true, NULL, "mse(a, b)"},
    {"binary_cross_entropy", 2, T(3, 4), T(3, 4), 0.1, 3, true, NULL, "binary_cross_entropy(a, b)"},
    {"conv2d pad = same, 3x3", 2, T(2, 2, 5, 5), T(3, 2, 3, 3), 0.1, 2, true, NULL,
     "conv2d(a, b, mean(b, [1, 2, 3]), pad = same)"},
    {"conv2d pad = same, 2x2", 2, T(1, 2, 4, 5), T(3, 2, 2, 2), 0.1, 2, true, NULL,
     "conv2d(a, b, mean(b, [1, 2, 3]), pad = same)"},
    {"conv2d pad = same, 2x5", 2, T(1, 2, 4, 6), T(2, 2, 2, 5), 0.1, 2, true, NULL,
     "conv2d(a, b, mean(b, [1, 2, 3]), pad = same)"},
    /* points closer to the kink than the first step of the differences */
    {"relu within a step of its kink", 1, T(3, 4), S, 2e-6, 9e-6, true, b_RELU, NULL},
    {"abs within a step of its kink", 1, T(3, 4), S, 2e-6, 9e-6, true, b_ABS, NULL},
};

/* The case's expression of a (and b) lowered by the frontend into f, from
 * a model that holds it as a def (and dim K = 4). */
static ValueId lower_expr(IrFunc *f, const Case *c, ValueId a, ValueId b) {
    char text[512];
    snprintf(text, sizeof text,
             "dim K = 4;\ndef body(%s) = %s;\ndef loss(x, y) = sum(x);\n"
             "task external { support x : [1], y : [1]; query x : [1], y : [1]; }\n",
             c->nargs == 2 ? "a, b" : "a", c->expr);
    Diag d;
    diag_init(&d, stderr);
    ModelOptions mo = {.real = DT_F64};
    Model *m = model_load_text("body.mdl", text, strlen(text), &mo, &d);
    ValueId args[2] = {a, b};
    ValueId y = m ? model_lower_call(m, f, "body", NULL, args, c->nargs, true, &d) : IR_NONE;
    CHECK(y != IR_NONE, "%s: the frontend lowers %s", c->name, c->expr);
    model_free(m);
    diag_free(&d);
    return y;
}

static double urand(void) { return (rand() + 0.5) / ((double)RAND_MAX + 1); }

static void fill(double *x, int64_t n, double lo, double hi, bool sign) {
    for (int64_t i = 0; i < n; i++) {
        x[i] = lo + (hi - lo) * urand();
        if (sign && urand() < 0.5)
            x[i] = -x[i];
    }
}

/* The case's function: inputs a[, b], w, va[, vb]; outputs
 *   s = sum(body(a, b) * w),  ds/da[, ds/db],  F = sum(ds/da * va) [+ ...],  dF/da[, dF/db]. */
static IrFunc *build(IrModule *m, const Case *c, IrType *tw) {
    IrFunc *f = ir_func_new(m, c->name);
    ValueId x[2], v[2], g[2], h[2];
    x[0] = ir_input(f, "a", c->ta, L);
    x[1] = c->nargs == 2 ? ir_input(f, "b", c->tb, L) : IR_NONE;
    ValueId y = c->body ? c->body(f, x[0], x[1]) : lower_expr(f, c, x[0], x[1]);
    *tw = ir_value_type(f, y);
    ValueId w = ir_input(f, "w", *tw, L);
    for (int i = 0; i < c->nargs; i++)
        v[i] = ir_input(f, i ? "vb" : "va", i ? c->tb : c->ta, L);
    int all[IR_MAX_RANK] = {0, 1, 2, 3, 4, 5};
    ValueId p = ir_binary(f, OP_MUL, y, w, L, NULL);
    ValueId s = tw->rank ? ir_reduce(f, OP_REDUCE_SUM, p, tw->rank, all, L, NULL) : p;
    ad_grad(f, s, c->nargs, x, g);
    ValueId F = IR_NONE;
    for (int i = 0; i < c->nargs; i++) {
        IrType t = ir_value_type(f, g[i]);
        ValueId d = ir_binary(f, OP_MUL, g[i], v[i], L, NULL);
        d = t.rank ? ir_reduce(f, OP_REDUCE_SUM, d, t.rank, all, L, NULL) : d;
        F = F == IR_NONE ? d : ir_binary(f, OP_ADD, F, d, L, NULL);
    }
    ad_grad(f, F, c->nargs, x, h);
    ir_output(f, s);
    for (int i = 0; i < c->nargs; i++)
        ir_output(f, g[i]);
    ir_output(f, F);
    for (int i = 0; i < c->nargs; i++)
        ir_output(f, h[i]);
    return f;
}

/* ||a - b|| / max(||a||, ||b||), with a floor for all-zero vectors */
static double rel_err(const double *a, const double *b, int64_t n) {
    double d = 0, na = 0, nb = 0;
    for (int64_t i = 0; i < n; i++) {
        d += (a[i] - b[i]) * (a[i] - b[i]);
        na += a[i] * a[i];
        nb += b[i] * b[i];
    }
    return sqrt(d) / fmax(fmax(sqrt(na), sqrt(nb)), 1e-12);
}

/* Output `which` of f evaluated at `in` (a scalar), for check_central_diff. */
typedef struct {
    const IrFunc *f;
    double **in, **out;
    int which;
} Probe;

static double scalar_out(void *ctx) {
    Probe *p = ctx;
    ir_eval(p->f, (const double *const *)p->in, p->out);
    return p->out[p->which][0];
}

/* The norm of a (the scale of per-element tolerances) */
static double norm(const double *a, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += a[i] * a[i];
    return sqrt(s);
}

static void run_case(const Case *c) {
    IrModule *m = ir_module_new(DT_F64);
    IrType tw;
    IrFunc *f = build(m, c, &tw);
    CHECK(ir_verify_func(f, NULL), "%s: the gradient IR verifies", c->name);
    int n = c->nargs, nin = f->ninput;
    double *in[5], *out[6], *out2[6];
    for (int i = 0; i < nin; i++) {
        IrType t = ir_value_type(f, f->input[i]);
        in[i] = malloc((size_t)ir_numel(t) * sizeof(double));
        bool operand = i < n;
        fill(in[i], ir_numel(t), operand ? c->lo : 0.2, operand ? c->hi : 1.5, operand ? c->signed_ : true);
    }
    for (int j = 0; j < f->noutput; j++) {
        out[j] = malloc((size_t)ir_numel(ir_value_type(f, f->output[j])) * sizeof(double));
        out2[j] = malloc((size_t)ir_numel(ir_value_type(f, f->output[j])) * sizeof(double));
    }
    ir_eval(f, (const double *const *)in, out);
    int F = 1 + n;
    double worst[2] = {0, 0};
    for (int order = 1; order <= 2; order++) {
        Probe probe = {f, in, out2, order == 1 ? 0 : F};    /* the scalar being differentiated */
        for (int k = 0; k < n; k++) {
            int64_t cnt = ir_numel(k ? c->tb : c->ta);
            const double *ad = out[order == 1 ? 1 + k : F + 1 + k];
            double *fd = malloc((size_t)cnt * sizeof *fd), tol = 1e-7 * fmax(norm(ad, cnt), 1e-12);
            for (int64_t e = 0; e < cnt; e++)
                fd[e] = check_central_diff(scalar_out, &probe, &in[k][e], 1e-5, ad[e], tol);
            double err = rel_err(ad, fd, cnt);
            CHECK(err <= 1e-6, "%s: order %d gradient w.r.t. operand %d: relative error %.3g", c->name, order, k, err);
            worst[order - 1] = fmax(worst[order - 1], err);
            free(fd);
        }
    }
    printf("%-34s relative error vs finite differences: first order %.1e, second order %.1e\n", c->name,
           worst[0], worst[1]);
    /* optimised and raw agree */
    pass_optimize(f, NULL, NULL);
    CHECK(ir_verify_func(f, NULL), "%s: optimised IR verifies", c->name);
    ir_eval(f, (const double *const *)in, out2);
    for (int j = 0; j < f->noutput; j++) {
        int64_t cnt = ir_numel(ir_value_type(f, f->output[j]));
        double err = rel_err(out[j], out2[j], cnt);
        CHECK(err <= 1e-12, "%s: optimised output %d differs: relative error %.3g", c->name, j, err);
    }
    for (int i = 0; i < nin; i++)
        free(in[i]);
    for (int j = 0; j < f->noutput; j++) {
        free(out[j]);
        free(out2[j]);
    }
    ir_module_free(m);
}

/* A stop_grad operand gets exactly zero gradient. */
static void test_stop_grad_zero(void) {
    IrModule *m = ir_module_new(DT_F64);
    IrFunc *f = ir_func_new(m, "f");
    ValueId a = ir_input(f, "a", T(3), L);
    ValueId s = ir_reduce(f, OP_REDUCE_SUM, ir_unary(f, OP_STOP_GRAD, ir_unary(f, OP_EXP, a, L, NULL), L, NULL),
                          1, (int[]){0}, L, NULL);
    ValueId g;
    ad_grad(f, s, 1, &a, &g);
    CHECK(f->node[g].op == OP_CONST && f->node[g].value == 0, "gradient through stop_grad is a zero constant");
    ir_module_free(m);
}

/* The gradient the frontend's leaky_relu and elu take at 0 and -0, as
 * PyTorch's: the slope, and 1 (docs/language.md, gradients at kinks). */
static void test_new_kinks(void) {
    static const struct { const char *expr; double want; } kink[] = {{"leaky_relu(a, 0.1)", 0.1}, {"elu(a)", 1}};
    for (size_t k = 0; k < sizeof kink / sizeof *kink; k++) {
        Case c = {kink[k].expr, 1, T(2), S, 0, 0, false, NULL, kink[k].expr};
        IrModule *m = ir_module_new(DT_F64);
        IrFunc *f = ir_func_new(m, "f");
        ValueId a = ir_input(f, "a", T(2), L), g;
        ValueId s = ir_reduce(f, OP_REDUCE_SUM, lower_expr(f, &c, a, IR_NONE), 1, (int[]){0}, L, NULL);
        ad_grad(f, s, 1, &a, &g);
        ir_output(f, g);
        double x[2] = {0.0, -0.0}, y[2] = {0, 0}, *in[1] = {x}, *out[1] = {y};
        ir_eval(f, (const double *const *)in, out);
        CHECK(y[0] == kink[k].want && y[1] == kink[k].want, "%s: gradient %g at 0 and %g at -0, want %g",
              kink[k].expr, y[0], y[1], kink[k].want);
        ir_module_free(m);
    }
}

int main(void) {
    srand(12345);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        run_case(&cases[i]);
    test_stop_grad_zero();
    test_new_kinks();
    return check_summary();
}
