/* Simplification: constant folding and algebraic identities, applied while
 * the body is rebuilt (so each rule sees already simplified operands).
 * Autodiff output is full of multiplications by one, additions of zero and
 * layout changes of constants; this is where they go. */
#include "passes.h"

#include <math.h>

static bool is(IrFunc *g, ValueId v, double c) {
    double x;
    return pass_constant(g, v, &x) && x == c;
}

static bool foldable_unary(IrOp op) {
    return op != OP_STOP_GRAD && ir_op_info[op].kind == KIND_UNARY;
}

static double fold_unary(IrOp op, double x, double c) {
    switch (op) {
    case OP_NEG: return -x;
    case OP_EXP: return exp(x);
    case OP_LOG: return log(x);
    case OP_SQRT: return sqrt(x);
    case OP_TANH: return tanh(x);
    case OP_SIGMOID: return 1 / (1 + exp(-x));
    case OP_RELU: return x > 0 ? x : 0;
    case OP_SOFTPLUS: return fmax(x, 0) + log1p(exp(-fabs(x)));
    case OP_SIN: return sin(x);
    case OP_COS: return cos(x);
    case OP_ABS: return fabs(x);
    case OP_ERF: return erf(x);
    case OP_SIGN: return x > 0 ? 1 : x < 0 ? -1 : 0;
    case OP_STEP: return x > 0 ? 1 : 0;
    case OP_POWC: return pow(x, c);
    default: return x;
    }
}

static double fold_binary(IrOp op, double a, double b) {
    switch (op) {
    case OP_ADD: return a + b;
    case OP_SUB: return a - b;
    case OP_MUL: return a * b;
    case OP_DIV: return a / b;
    default: return a == b;
    }
}

/* The constant c with n's type, rounded as the type stores it. */
static ValueId splat(IrFunc *g, const IrNode *n, double c) {
    if (n->type.dtype == DT_F32)
        c = (float)c;
    return ir_const(g, c, n->type, n->loc);
}

static ValueId fold(IrFunc *g, const IrNode *n) {
    double a = 0, b = 0;
    IrKind kind = ir_op_info[n->op].kind;
    bool ca = pass_constant(g, n->arg[0], &a), cb = pass_constant(g, n->arg[1], &b);
    if (kind == KIND_UNARY && ca && foldable_unary(n->op))
        return splat(g, n, fold_unary(n->op, a, n->value));
    if (kind == KIND_BINARY && ca && cb)
        return splat(g, n, fold_binary(n->op, a, b));
    if (ca && (kind == KIND_LAYOUT || n->op == OP_STOP_GRAD || n->op == OP_REDUCE_MAX))
        return splat(g, n, a);
    if (ca && n->op == OP_REDUCE_SUM) {
        int64_t count = ir_numel(ir_value_type(g, n->arg[0])) / ir_numel(n->type);
        return splat(g, n, a * (double)count);
    }
    return IR_NONE;
}

/* v as c * w for a constant c: through multiplications by a constant,
 * negations and transposes (of which w takes new ones); IR_NONE if v is
 * none of these. */
static ValueId unscaled(IrFunc *g, ValueId v, double *c) {
    const IrNode *n = &g->node[v];
    double k;
    ValueId w;
    if (n->op == OP_MUL && pass_constant(g, n->arg[0], &k))
        w = n->arg[1];
    else if (n->op == OP_MUL && pass_constant(g, n->arg[1], &k))
        w = n->arg[0];
    else if (n->op == OP_NEG)
        w = n->arg[0], k = -1;
    else if (n->op == OP_TRANSPOSE && (w = unscaled(g, n->arg[0], &k)) != IR_NONE)
        return *c = k, ir_transpose(g, w, n->list, n->loc, NULL);
    else
        return IR_NONE;
    ValueId inner = unscaled(g, w, c);
    if (inner == IR_NONE)
        return *c = k, w;
    *c *= k;
    return inner;
}

/* a (c b) = c (a b) (and so for a), where the product has fewer elements
 * than the scaled operand: the scaling moves to the smaller tensor. */
static ValueId scale_product(IrFunc *g, const IrNode *n) {
    for (int side = 0; side < 2; side++) {
        ValueId v = n->arg[side];
        if (ir_numel(n->type) >= ir_numel(ir_value_type(g, v)))
            continue;
        double c;
        ValueId w = unscaled(g, v, &c);
        if (w == IR_NONE)
            continue;
        ValueId p = side ? ir_matmul(g, n->arg[0], w, n->loc, NULL) : ir_matmul(g, w, n->arg[1], n->loc, NULL);
        return ir_binary(g, OP_MUL, splat(g, n, c), p, n->loc, NULL);
    }
    return IR_NONE;
}

static ValueId identity(IrFunc *g, const IrNode *n) {
    ValueId x = n->arg[0], y = n->arg[1];
    const IrNode *nx = x != IR_NONE ? &g->node[x] : NULL;
    const IrNode *ny = y != IR_NONE ? &g->node[y] : NULL;
    double c;
    switch (n->op) {
    case OP_ADD:                                    /* x+0 = 0+x = x */
        if (is(g, y, 0)) return x;
        if (is(g, x, 0)) return y;
        if (ny->op == OP_NEG) return ir_binary(g, OP_SUB, x, ny->arg[0], n->loc, NULL);
        if (nx->op == OP_NEG) return ir_binary(g, OP_SUB, y, nx->arg[0], n->loc, NULL);
        break;
    case OP_SUB:                                    /* x-0 = x, 0-x = -x, x-(-y) = x+y */
        if (is(g, y, 0)) return x;
        if (is(g, x, 0)) return ir_unary(g, OP_NEG, y, n->loc, NULL);
        if (ny->op == OP_NEG) return ir_binary(g, OP_ADD, x, ny->arg[0], n->loc, NULL);
        break;
    case OP_MUL:                                    /* x*1 = x, x*0 = 0, x*-1 = -x */
        if (is(g, y, 1)) return x;
        if (is(g, x, 1)) return y;
        if (is(g, x, 0) || is(g, y, 0)) return splat(g, n, 0);
        if (is(g, y, -1)) return ir_unary(g, OP_NEG, x, n->loc, NULL);
        if (is(g, x, -1)) return ir_unary(g, OP_NEG, y, n->loc, NULL);
        if (nx->op == OP_NEG && ny->op == OP_NEG)   /* (-a)(-b) = ab */
            return ir_binary(g, OP_MUL, nx->arg[0], ny->arg[0], n->loc, NULL);
        break;
    case OP_DIV:                                    /* x/1 = x, 0/x = 0 */
        if (is(g, y, 1)) return x;
        if (is(g, x, 0)) return splat(g, n, 0);
        break;
    case OP_NEG:                                    /* --x = x */
        if (nx->op == OP_NEG) return nx->arg[0];
        break;
    case OP_POWC:                                   /* x^1 = x, x^0 = 1, x^2 = x*x */
        if (n->value == 1) return x;
        if (n->value == 0) return splat(g, n, 1);
        if (n->value == 2) return ir_binary(g, OP_MUL, x, x, n->loc, NULL);
        break;
    case OP_STOP_GRAD:
        if (nx->op == OP_STOP_GRAD) return x;
        break;
    case OP_MATMUL:
        return scale_product(g, n);
    case OP_REDUCE_SUM:                             /* sum(-x) = -sum(x), the same bits */
        if (nx->op == OP_NEG)
            return ir_unary(g, OP_NEG, ir_reduce(g, OP_REDUCE_SUM, nx->arg[0], n->nlist, n->list, n->loc, NULL),
                            n->loc, NULL);
        break;
    case OP_CONV2D:                                 /* bilinear: conv(0, b) = conv(a, 0) = 0 */
    case OP_CONV2D_GRAD_X:
    case OP_CONV2D_GRAD_W:
        if (is(g, x, 0) || is(g, y, 0)) return splat(g, n, 0);
        break;
    case OP_SLICE:                                  /* slices compose; a slice of a concat that */
        if (nx->op == OP_SLICE) {                   /* is one of its operands is that operand */
            int start[IR_MAX_RANK];
            for (int i = 0; i < n->nlist; i++)
                start[i] = n->list[i] + nx->list[i];
            return ir_slice(g, nx->arg[0], start, n->type, n->loc, NULL);
        }
        if (nx->op == OP_CONCAT) {
            int axis = nx->list[0], split = ir_value_type(g, nx->arg[0]).dim[axis];
            bool at0 = true;
            for (int i = 0; i < n->nlist; i++)
                at0 &= n->list[i] == 0 || (i == axis && n->list[i] == split);
            ValueId part = n->list[axis] == 0 ? nx->arg[0] : nx->arg[1];
            if (at0 && ir_type_eq(ir_value_type(g, part), n->type))
                return part;
        }
        break;
    case OP_CONCAT:                                 /* concat(c, c) = c */
        if (pass_constant(g, x, &c) && is(g, y, c)) return splat(g, n, c);
        break;
    case OP_RESHAPE:                                /* reshape(reshape(x)) = reshape(x) */
        if (nx->op == OP_RESHAPE) return ir_reshape(g, nx->arg[0], n->type, n->loc, NULL);
        break;
    case OP_BROADCAST:                              /* broadcasts compose */
        if (nx->op == OP_BROADCAST) return ir_broadcast(g, nx->arg[0], n->type, n->loc, NULL);
        break;
    case OP_TRANSPOSE:                              /* transposes compose */
        if (nx->op == OP_TRANSPOSE) {
            int perm[IR_MAX_RANK];
            for (int i = 0; i < n->nlist; i++)
                perm[i] = nx->list[n->list[i]];
            return ir_transpose(g, nx->arg[0], perm, n->loc, NULL);
        }
        break;
    default:
        break;
    }
    return IR_NONE;
}

static ValueId simplify_node(IrFunc *g, const IrNode *n, const RebuildAt *at, bool *fired) {
    ValueId r = fold(g, n);
    if (r == IR_NONE)
        r = identity(g, n);
    *fired = r != IR_NONE;
    return r;
}

bool pass_simplify(IrFunc *f) { return pass_rebuild(f, simplify_node, NULL, NULL, true); }
