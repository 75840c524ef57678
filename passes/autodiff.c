/* Reverse-mode automatic differentiation as an IR-to-IR transformation.
 *
 * Walking the nodes that lie between the inputs of interest and the output,
 * last to first, each node's adjoint is handed to its op's gradient rule,
 * which emits the operands' adjoint contributions as ordinary IR.  Rules use
 * only ops of ir/ops.def that have rules of their own, so the output can be
 * differentiated again: MAML's second-order meta-gradient is ad_grad applied
 * to a function that already contains ad_grad's output.  Each adjoint op
 * gets the location of the op it differentiates and the phase that the
 * module maps that op's phase to (IrModule.adjoint), and each gradient the
 * name "d." + the name of the value it is taken with respect to. */
#include "passes.h"

#include <stdlib.h>
#include <string.h>

/* A rule gets node v (a copy), its adjoint g, and sets dx[i] to the adjoint
 * contribution for operand i, or leaves IR_NONE for zero. */
typedef void GradRule(IrFunc *f, ValueId v, const IrNode *n, ValueId g, ValueId *dx);

#define X(i) (n->arg[i])
#define LOC (n->loc)
static ValueId mul(IrFunc *f, ValueId a, ValueId b, SrcLoc l) { return ir_binary(f, OP_MUL, a, b, l, NULL); }
static ValueId divide(IrFunc *f, ValueId a, ValueId b, SrcLoc l) { return ir_binary(f, OP_DIV, a, b, l, NULL); }
static ValueId neg(IrFunc *f, ValueId a, SrcLoc l) { return ir_unary(f, OP_NEG, a, l, NULL); }
static ValueId unop(IrFunc *f, IrOp op, ValueId a, SrcLoc l) { return ir_unary(f, op, a, l, NULL); }
static ValueId scaled(IrFunc *f, ValueId a, double c, SrcLoc l) { return ir_binary_scalar(f, OP_MUL, a, c, false, l, NULL); }
static ValueId one_minus(IrFunc *f, ValueId a, SrcLoc l) { return ir_binary_scalar(f, OP_SUB, a, 1, true, l, NULL); }

/* Ops whose gradient is zero everywhere (or undefined and taken as zero). */
static void no_grad(IrFunc *f, ValueId v, const IrNode *n, ValueId g, ValueId *dx) {}
#define grad_INPUT no_grad
#define grad_CONST no_grad
#define grad_SIGN no_grad
#define grad_STEP no_grad
#define grad_STOP_GRAD no_grad
#define grad_EQ no_grad
#define grad_ARGMAX no_grad
#define grad_ONEHOT no_grad

/* d(-x) = -g */
static void grad_NEG(IrFunc *f, ValueId v, const IrNode *n, ValueId g, ValueId *dx) { dx[0] = neg(f, g, LOC); }
/* d exp(x) = g * y */
static void grad_EXP(IrFunc *f, ValueId v, const IrNode *n, ValueId g, ValueId *dx) { dx[0] = mul(f, g, v, LOC); }
/* d log(x) = g / x */
static void grad_LOG(IrFunc *f, ValueId v, const IrNode *n, ValueId g, ValueId *dx) { dx[0] = divide(f, g, X(0), LOC); }
/* d sqrt(x) = (g/2) / y */
static void grad_SQRT(IrFunc *f, ValueId v, const IrNode *n, ValueId g, ValueId *dx) {
    dx[0] = divide(f, scaled(f, g, 0.5, LOC), v, LOC);
}
/* d tanh(x) = g * (1 - y*y) */
static void grad_TANH(IrFunc *f, ValueId v, const IrNode *n, ValueId g, ValueId *dx) {
    dx[0] = mul(f, g, one_minus(f, mul(f, v, v, LOC), LOC), LOC);
}
/* d sigmoid(x) = g * y * (1 - y) */
static void grad_SIGMOID(IrFunc *f, ValueId v, const IrNode *n, ValueId g, ValueId *dx) {
    dx[0] = mul(f, mul(f, g, v, LOC), one_minus(f, v, LOC), LOC);
}
/* d relu(x) = g * step(y): y > 0 exactly where x > 0 (a NaN gives 0 both
 * ways), and the backward pass then reads only y, so that x, read by the
 * relu alone, can be computed in its loop instead of kept */
static void grad_RELU(IrFunc *f, ValueId v, const IrNode *n, ValueId g, ValueId *dx) {
    dx[0] = mul(f, g, unop(f, OP_STEP, v, LOC), LOC);
}
/* d softplus(x) = g * sigmoid(x) */
static void grad_SOFTPLUS(IrFunc *f, ValueId v, const IrNode *n, ValueId g, ValueId *dx) {
    dx[0] = mul(f, g, unop(f, OP_SIGMOID, X(0), LOC), LOC);
}
/* d sin(x) = g * cos(x) */
static void grad_SIN(IrFunc *f, ValueId v, const IrNode *n, ValueId g, ValueId *dx) {
    dx[0] = mul(f, g, unop(f, OP_COS, X(0), LOC), LOC);
}
/* d cos(x) = -(g * sin(x)) */
static void grad_COS(IrFunc *f, ValueId v, const IrNode *n, ValueId g, ValueId *dx) {
    dx[0] = neg(f, mul(f, g, unop(f, OP_SIN, X(0), LOC), LOC), LOC);
}
/* d |x| = g * sign(x) */
static void grad_ABS(IrFunc *f, ValueId v, const IrNode *n, ValueId g, ValueId *dx) {
    dx[0] = mul(f, g, unop(f, OP_SIGN, X(0), LOC), LOC);
}
/* d erf(x) = g * (2/sqrt(pi)) * exp(-(x*x)) */
static void grad_ERF(IrFunc *f, ValueId v, const IrNode *n, ValueId g, ValueId *dx) {
    ValueId e = unop(f, OP_EXP, neg(f, mul(f, X(0), X(0), LOC), LOC), LOC);
    dx[0] = mul(f, scaled(f, g, 1.1283791670955126, LOC), e, LOC);
}
/* d x^c = g * c * x^(c-1) */
static void grad_POWC(IrFunc *f, ValueId v, const IrNode *n, ValueId g, ValueId *dx) {
    ValueId p = ir_powc(f, X(0), n->value - 1, LOC, NULL);
    dx[0] = mul(f, scaled(f, g, n->value, LOC), p, LOC);
}
/* d(a+b) = (g, g) */
static void grad_ADD(IrFunc *f, ValueId v, const IrNode *n, ValueId g, ValueId *dx) { dx[0] = dx[1] = g; }
/* d(a-b) = (g, -g) */
static void grad_SUB(IrFunc *f, ValueId v, const IrNode *n, ValueId g, ValueId *dx) {
    dx[0] = g;
    dx[1] = neg(f, g, LOC);
}
/* d(a*b) = (g*b, g*a) */
static void grad_MUL(IrFunc *f, ValueId v, const IrNode *n, ValueId g, ValueId *dx) {
    dx[0] = mul(f, g, X(1), LOC);
    dx[1] = mul(f, g, X(0), LOC);
}
/* d(a/b) = (g/b, -(g*y)/b) */
static void grad_DIV(IrFunc *f, ValueId v, const IrNode *n, ValueId g, ValueId *dx) {
    dx[0] = divide(f, g, X(1), LOC);
    dx[1] = neg(f, divide(f, mul(f, g, v, LOC), X(1), LOC), LOC);
}

/* x's type with the reduced axes kept as extent 1. */
static IrType keepdims(IrType x, const IrNode *n) {
    IrType t = x;
    for (int i = 0; i < n->nlist; i++)
        t.dim[n->list[i]] = 1;
    return t;
}

/* g of a reduction, spread back over x's shape. */
static ValueId spread(IrFunc *f, const IrNode *n, ValueId g) {
    IrType x = ir_value_type(f, X(0)), k = keepdims(x, n);
    k.dtype = ir_value_type(f, g).dtype;
    return ir_broadcast(f, ir_reshape(f, g, k, LOC, NULL), x, LOC, NULL);
}

/* d sum(x, axes) = broadcast(g) */
static void grad_REDUCE_SUM(IrFunc *f, ValueId v, const IrNode *n, ValueId g, ValueId *dx) {
    dx[0] = spread(f, n, g);
}
/* d max(x, axes) = broadcast(g / c) * m,  m = (x == broadcast(y)),
 * c = sum(m, axes): tied maxima share the adjoint evenly (as PyTorch's amax
 * does), which is the true derivative wherever one exists.  Without a tie
 * c = 1 and g / 1 = g exactly.  m and c are piecewise constant (eq has no
 * gradient), so the rule differentiates again. */
static void grad_REDUCE_MAX(IrFunc *f, ValueId v, const IrNode *n, ValueId g, ValueId *dx) {
    ValueId mask = ir_binary(f, OP_EQ, X(0), spread(f, n, v), LOC, NULL);
    ValueId ties = ir_reduce(f, OP_REDUCE_SUM, mask, n->nlist, n->list, LOC, NULL);
    dx[0] = mul(f, spread(f, n, divide(f, g, ties, LOC)), mask, LOC);
}
/* d reshape(x) = reshape(g) back */
static void grad_RESHAPE(IrFunc *f, ValueId v, const IrNode *n, ValueId g, ValueId *dx) {
    dx[0] = ir_reshape(f, g, ir_value_type(f, X(0)), LOC, NULL);
}
/* d broadcast(x) = sum_to(g, x) */
static void grad_BROADCAST(IrFunc *f, ValueId v, const IrNode *n, ValueId g, ValueId *dx) {
    dx[0] = ir_sum_to(f, g, ir_value_type(f, X(0)), LOC, NULL);
}
/* d transpose(x, p) = transpose(g, p^-1) */
static void grad_TRANSPOSE(IrFunc *f, ValueId v, const IrNode *n, ValueId g, ValueId *dx) {
    int inv[IR_MAX_RANK];
    for (int i = 0; i < n->nlist; i++)
        inv[n->list[i]] = i;
    dx[0] = ir_transpose(f, g, inv, LOC, NULL);
}
/* d slice(x) = g padded with zeros back to x's shape: a concat with a
 * zero constant on each side of each axis where the window leaves some */
static void grad_SLICE(IrFunc *f, ValueId v, const IrNode *n, ValueId g, ValueId *dx) {
    IrType x = ir_value_type(f, X(0));
    for (int k = 0; k < x.rank; k++) {
        IrType t = ir_value_type(f, g);
        int before = n->list[k], after = x.dim[k] - n->list[k] - t.dim[k];
        if (before) {
            t.dim[k] = before;
            g = ir_concat(f, ir_const(f, 0, t, LOC), g, k, LOC, NULL);
        }
        if (after) {
            t = ir_value_type(f, g);
            t.dim[k] = after;
            g = ir_concat(f, g, ir_const(f, 0, t, LOC), k, LOC, NULL);
        }
    }
    dx[0] = g;
}
/* d concat(a, b, axis) = (slice of g where a is, slice of g where b is) */
static void grad_CONCAT(IrFunc *f, ValueId v, const IrNode *n, ValueId g, ValueId *dx) {
    int start[IR_MAX_RANK] = {0};
    dx[0] = ir_slice(f, g, start, ir_value_type(f, X(0)), LOC, NULL);
    start[n->list[0]] = ir_value_type(f, X(0)).dim[n->list[0]];
    dx[1] = ir_slice(f, g, start, ir_value_type(f, X(1)), LOC, NULL);
}
/* d(a@b) = (g @ b^T, a^T @ g) */
static void grad_MATMUL(IrFunc *f, ValueId v, const IrNode *n, ValueId g, ValueId *dx) {
    static const int swap[2] = {1, 0};
    dx[0] = ir_matmul(f, g, ir_transpose(f, X(1), swap, LOC, NULL), LOC, NULL);
    dx[1] = ir_matmul(f, ir_transpose(f, X(0), swap, LOC, NULL), g, LOC, NULL);
}

/* Convolutions.  conv2d, conv2d_grad_x and conv2d_grad_w are the one
 * trilinear form T(x, g, w) = <g, conv2d(x, w)> = <conv2d_grad_x(g, w), x>
 * = <conv2d_grad_w(x, g), w> with one argument left open, so each op's
 * adjoints are the other two (bilinear: linear in each operand), with the
 * same stride and pad. */
static ValueId conv(IrFunc *f, const IrNode *n, IrOp op, ValueId a, ValueId b, IrType t) {
    return ir_conv(f, op, a, b, n->list[IR_CONV_STRIDE], n->list[IR_CONV_PAD], t, n->loc, NULL);
}
/* y = conv2d(x, w):  d/dx <g, y> = conv2d_grad_x(g, w),  d/dw <g, y> = conv2d_grad_w(x, g) */
static void grad_CONV2D(IrFunc *f, ValueId v, const IrNode *n, ValueId g, ValueId *dx) {
    dx[0] = conv(f, n, OP_CONV2D_GRAD_X, g, X(1), ir_value_type(f, X(0)));
    dx[1] = conv(f, n, OP_CONV2D_GRAD_W, X(0), g, ir_value_type(f, X(1)));
}
/* z = conv2d_grad_x(g, w), adjoint h of x's shape: <h, z> = T(h, g, w), so
 * d/dg = conv2d(h, w),  d/dw = conv2d_grad_w(h, g) */
static void grad_CONV2D_GRAD_X(IrFunc *f, ValueId v, const IrNode *n, ValueId h, ValueId *dx) {
    dx[0] = conv(f, n, OP_CONV2D, h, X(1), ir_value_type(f, X(0)));
    dx[1] = conv(f, n, OP_CONV2D_GRAD_W, h, X(0), ir_value_type(f, X(1)));
}
/* z = conv2d_grad_w(x, g), adjoint h of w's shape: <h, z> = T(x, g, h), so
 * d/dx = conv2d_grad_x(g, h),  d/dg = conv2d(x, h) */
static void grad_CONV2D_GRAD_W(IrFunc *f, ValueId v, const IrNode *n, ValueId h, ValueId *dx) {
    dx[0] = conv(f, n, OP_CONV2D_GRAD_X, X(1), h, ir_value_type(f, X(0)));
    dx[1] = conv(f, n, OP_CONV2D, X(0), h, ir_value_type(f, X(1)));
}

static GradRule *const grad_rule[OP_COUNT] = {
#define OP(id, name, arity, kind) [OP_##id] = grad_##id,
#include "../ir/ops.def"
#undef OP
};

static bool is_real(DType dt) { return dt == DT_F32 || dt == DT_F64; }

/* on[v - lo]: v depends on some wrt value and y depends on v, for v in
 * [lo, y].  Only these nodes carry adjoints. */
static bool *on_path(const IrFunc *f, ValueId lo, ValueId y, int n, const ValueId *wrt) {
    size_t span = (size_t)(y - lo) + 1;
    bool *from = calloc(span, sizeof *from), *to = calloc(span, sizeof *to);
    for (int i = 0; i < n; i++)
        if (wrt[i] <= y)
            from[wrt[i] - lo] = true;
    for (ValueId v = lo; v <= y; v++) {
        const IrNode *nd = &f->node[v];
        for (int i = 0; i < ir_op_info[nd->op].arity; i++)
            from[v - lo] |= nd->arg[i] >= lo && from[nd->arg[i] - lo] && nd->op != OP_STOP_GRAD;
    }
    to[y - lo] = true;
    for (ValueId v = y; v >= lo; v--) {
        const IrNode *nd = &f->node[v];
        if (to[v - lo])
            for (int i = 0; i < ir_op_info[nd->op].arity; i++)
                if (nd->arg[i] >= lo)
                    to[nd->arg[i] - lo] = true;
        to[v - lo] &= from[v - lo];
    }
    free(from);
    return to;
}

/* Nodes only depend on earlier ones, so none before the first wrt value
 * lies on a path from it: the walk covers [lo, y] alone, and an inner
 * step's gradient costs the step's nodes, not the whole function's. */
bool ad_grad(IrFunc *f, ValueId y, int n, const ValueId *wrt, ValueId *grads) {
    if (y < 0 || y >= f->nnode)
        return false;
    IrType ty = ir_value_type(f, y);
    if (ty.rank != 0 || !is_real(ty.dtype))
        return false;
    int errors = f->mod->internal_errors;
    ValueId lo = y;
    for (int i = 0; i < n; i++)
        if (wrt[i] < lo)
            lo = wrt[i];
    bool *on = on_path(f, lo, y, n, wrt);
    size_t span = (size_t)(y - lo) + 1;
    ValueId *adj = malloc(span * sizeof *adj);
    for (size_t v = 0; v < span; v++)
        adj[v] = IR_NONE;
    /* a value that is also a wrt stops the walk: its adjoint is the answer */
    bool *stop = calloc(span, sizeof *stop);
    for (int i = 0; i < n; i++)
        if (wrt[i] <= y)
            stop[wrt[i] - lo] = true;
    adj[y - lo] = ir_const(f, 1, ty, f->node[y].loc);
    int phase = f->cur_phase;
    for (ValueId v = y; v >= lo; v--) {
        if (!on[v - lo] || adj[v - lo] == IR_NONE || (stop[v - lo] && v != y))
            continue;
        IrNode nd = f->node[v];     /* copy: rules append and may move nodes */
        f->cur_phase = f->mod->nphase && f->mod->adjoint[nd.phase] ? f->mod->adjoint[nd.phase] : phase;
        ValueId dx[2] = {IR_NONE, IR_NONE};
        grad_rule[nd.op](f, v, &nd, adj[v - lo], dx);
        for (int i = 0; i < ir_op_info[nd.op].arity; i++) {
            ValueId a = nd.arg[i];
            if (dx[i] == IR_NONE || a < lo || !on[a - lo])
                continue;
            adj[a - lo] = adj[a - lo] == IR_NONE ? dx[i] : ir_binary(f, OP_ADD, adj[a - lo], dx[i], nd.loc, NULL);
        }
    }
    for (int i = 0; i < n; i++) {
        ValueId w = wrt[i];
        grads[i] = w <= y && adj[w - lo] != IR_NONE ? adj[w - lo]
                                                  : ir_const(f, 0, ir_value_type(f, w), f->node[w].loc);
        if (f->node[w].name) {
            char name[256];
            snprintf(name, sizeof name, "d.%s", f->node[w].name);
            ir_name(f, grads[i], name);
        }
    }
    f->cur_phase = phase;
    free(adj);
    free(stop);
    free(on);
    return f->mod->internal_errors == errors;
}

bool pass_grad(IrFunc *f) {
    if (f->noutput != 1 || f->ninput == 0)
        return false;
    ValueId *wrt = calloc((size_t)f->ninput, sizeof *wrt), *g = calloc((size_t)f->ninput, sizeof *g);
    int n = 0;
    for (int i = 0; i < f->ninput; i++)
        if (is_real(ir_value_type(f, f->input[i]).dtype))
            wrt[n++] = f->input[i];
    bool ok = ad_grad(f, f->output[0], n, wrt, g);
    for (int i = 0; ok && i < n; i++)
        ir_output(f, g[i]);
    free(wrt);
    free(g);
    return ok;
}
