/* Lowering: a call of a model function into IR, by inlining.
 *
 * Every call of a `def` lowers its body afresh with the argument values, so
 * each call site sees its own shapes (shape polymorphism by
 * specialisation).  Every op gets the location of the AST node it comes
 * from, so the IR builder's shape errors point into the .mdl file, and a
 * value assigned to a local, or a def's result, bears that name in the IR
 * (the first it gets).  Errors return IR_NONE, which later ops pass on
 * without a second report. */
#include "model_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Most nested expression levels, inlined calls included (bounds the C
 * stack), and most expressions lowered by one model_lower_call (bounds the
 * time an exponential inlining can take). */
#define LOWER_MAX_DEPTH 1000
#define LOWER_MAX_STEPS (1L << 21)

struct Lower {
    const ModelImpl *mi;
    const Model *m;
    IrFunc *f;
    const ValueId *params;      /* params[i] stands for the i-th param */
    bool differentiable;        /* lowering (part of) the loss */
    Diag *d;
    AstMap *scope;              /* names of the def being lowered -> values */
    ModelDrawFn *draw;          /* lowers the draws of a task family's line, or NULL */
    void *draw_ctx;
    bool *active;               /* per def: being inlined right now */
    int depth;
    long steps;
    bool limit_reported;
    /* batch norm's running statistics (MAML++'s BNRS, model_lower_bn) */
    ModelBnMode bn_mode;
    ValueId bn_in;              /* BN_RUNNING: the statistics, [L] */
    ValueId bn_out;             /* BN_STATS: the batch statistics so far */
    int bn_at;                  /* reals of the statistics used or made so far */
    ModelBn *bn;                /* BN_STATS: each batch_norm's name and features */
    int nbn;
};

static ValueId lower_expr(Lower *L, const Ast *e);

static IrType type_of(const Lower *L, ValueId v) { return ir_value_type(L->f, v); }

static const char *type_str(const Lower *L, ValueId v, char *buf) { return ir_type_str(type_of(L, v), buf, 64); }

static ValueId real_const(Lower *L, double v, SrcLoc loc) { return ir_const(L->f, v, ir_scalar(L->m->real), loc); }

static ValueId nondiff_error(Lower *L, const Ast *e, const char *what) {
    diag_error(L->d, e->loc, "'%s' is not differentiable and may only be used in 'metric'", what);
    return IR_NONE;
}

/* axis argument i of call, normalised against rank. */
static bool axis_arg(Lower *L, const Ast *call, int i, int rank, int *axis) {
    const Ast *a = call->call.arg.item[i];
    int64_t v;
    if (!model_int_literal(a, &v)) {
        diag_error(L->d, a->loc, "the axis of '%s' must be an integer literal", call->call.callee);
        return false;
    }
    if (v < -rank || v >= rank) {
        diag_error(L->d, a->loc, "axis %lld is out of range for a value of rank %d", (long long)v, rank);
        return false;
    }
    *axis = (int)(v < 0 ? v + rank : v);
    return true;
}

/* v, reduced over `axis` of type t, reshaped to t with extent 1 there, so
 * that it broadcasts back against t (keepdims). */
static ValueId keep_dims(Lower *L, ValueId v, IrType t, int axis, SrcLoc loc) {
    t.dim[axis] = 1;
    return ir_reshape(L->f, v, t, loc, L->d);
}

bool model_const_expr(const ModelImpl *mi, const AstMap *scope, const Ast *e, double *out) {
    double a, b;
    const int *at;
    switch (e->kind) {
    case AST_NUM: *out = e->num.value; break;
    case AST_NAME:
        if ((scope && ast_map_get(scope, e->name.id)) || ast_map_get(&mi->params, e->name.id) ||
            !(at = ast_map_get(&mi->dims, e->name.id)))
            return false;
        *out = (double)mi->pub.dim[*at].value;
        break;
    case AST_NEG:
        if (!model_const_expr(mi, scope, e->neg.operand, &a))
            return false;
        *out = -a;
        break;
    case AST_BINARY:
        if (!model_const_expr(mi, scope, e->binary.lhs, &a) || !model_const_expr(mi, scope, e->binary.rhs, &b))
            return false;
        switch (e->binary.op) {
        case BIN_ADD: *out = a + b; break;
        case BIN_SUB: *out = a - b; break;
        case BIN_MUL: *out = a * b; break;
        case BIN_DIV: *out = a / b; break;
        case BIN_POW: *out = pow(a, b); break;
        default: return false;
        }
        break;
    default: return false;
    }
    return isfinite(*out);
}

/* Axes argument i of call, an axis or a list of them, normalised against
 * rank and sorted into axes[0..*n); each at most once. */
static bool axes_arg(Lower *L, const Ast *call, int i, int rank, int *axes, int *n) {
    const Ast *a = call->call.arg.item[i];
    const Ast *const *item = &a;
    int count = 1;
    bool seen[IR_MAX_RANK] = {0};
    if (a->kind == AST_LIST) {
        item = (const Ast *const *)a->list.item.item;
        count = a->list.item.n;
    }
    if (count < 1 || count > rank) {
        diag_error(L->d, a->loc, "'%s' needs from 1 to %d axes of its rank-%d operand, not %d", call->call.callee,
                   rank, rank, count);
        return false;
    }
    *n = 0;
    for (int k = 0; k < count; k++) {
        int64_t v;
        if (!model_int_literal(item[k], &v)) {
            diag_error(L->d, item[k]->loc, "the axis of '%s' must be an integer literal", call->call.callee);
            return false;
        }
        if (v < -rank || v >= rank) {
            diag_error(L->d, item[k]->loc, "axis %lld is out of range for a value of rank %d", (long long)v, rank);
            return false;
        }
        int ax = (int)(v < 0 ? v + rank : v);
        if (seen[ax]) {
            diag_error(L->d, item[k]->loc, "axis %d appears twice in a call of '%s'", ax, call->call.callee);
            return false;
        }
        seen[ax] = true;
    }
    for (int ax = 0; ax < rank; ax++)
        if (seen[ax])
            axes[(*n)++] = ax;
    return true;
}

/* --- builtins --- */

static ValueId lower_unary(Lower *L, const Ast *call, const ModelBuiltin *b, const ValueId *v) {
    return ir_unary(L->f, b->op, v[0], call->loc, L->d);
}

/* The axes of a reduction: all of x's, or those of argument 1 (an axis or
 * a list of them); false after an error. */
static bool reduce_axes(Lower *L, const Ast *call, IrType t, int *axes, int *n) {
    *n = t.rank;
    for (int i = 0; i < t.rank; i++)
        axes[i] = i;
    return call->call.arg.n != 2 || axes_arg(L, call, 1, t.rank, axes, n);
}

/* sum, max: over all axes, over one, or over a list of them. */
static ValueId lower_reduce(Lower *L, const Ast *call, const ModelBuiltin *b, const ValueId *v) {
    int axes[IR_MAX_RANK], n;
    if (!reduce_axes(L, call, type_of(L, v[0]), axes, &n))
        return IR_NONE;
    return n ? ir_reduce(L->f, b->op, v[0], n, axes, call->loc, L->d) : v[0];
}

/* mean(x) = sum(x) / numel(x); mean(x, axes) = sum(x, axes) / the product
 * of their extents */
static ValueId lower_mean(Lower *L, const Ast *call, const ModelBuiltin *b, const ValueId *v) {
    IrType t = type_of(L, v[0]);
    int axes[IR_MAX_RANK], n;
    if (!reduce_axes(L, call, t, axes, &n))
        return IR_NONE;
    double count = 1;
    for (int i = 0; i < n; i++)
        count *= t.dim[axes[i]];
    ValueId s = n ? ir_reduce(L->f, b->op, v[0], n, axes, call->loc, L->d) : v[0];
    return count == 1 ? s : ir_binary_scalar(L->f, OP_DIV, s, count, false, call->loc, L->d);
}

/* transpose(x): the axes reversed. */
static ValueId lower_transpose(Lower *L, const Ast *call, const ModelBuiltin *b, const ValueId *v) {
    int rank = type_of(L, v[0]).rank, perm[IR_MAX_RANK];
    for (int i = 0; i < rank; i++)
        perm[i] = rank - 1 - i;
    return ir_transpose(L->f, v[0], perm, call->loc, L->d);
}

/* reshape(x, [d1, ..., dn]): one di may be -1, inferred from the count. */
static ValueId lower_reshape(Lower *L, const Ast *call, const ModelBuiltin *b, const ValueId *v) {
    const Ast *shape = call->call.arg.item[1];
    IrType from = type_of(L, v[0]), to = {.dtype = from.dtype};
    int64_t n = ir_numel(from), known = 1;
    int infer = -1;
    if (shape->kind != AST_LIST || shape->list.item.n > IR_MAX_RANK) {
        diag_error(L->d, shape->loc, "the shape of 'reshape' must be a list of at most %d sizes", IR_MAX_RANK);
        return IR_NONE;
    }
    to.rank = shape->list.item.n;
    for (int i = 0; i < to.rank; i++) {
        const Ast *x = shape->list.item.item[i];
        if (model_is_minus_one(x) && infer < 0) {
            infer = i;
            to.dim[i] = -1;
            continue;
        }
        if (!model_extent(L->mi, x, &to.dim[i], L->d))
            return IR_NONE;
        known *= to.dim[i];
        if (known > IR_MAX_NUMEL)
            known = IR_MAX_NUMEL + 1;   /* saturate: stays below 2^55 */
    }
    if (infer >= 0 ? n % known != 0 || n / known > IR_MAX_DIM : known != n) {
        char a[64], want[96];
        size_t used = (size_t)snprintf(want, sizeof want, "[");
        for (int i = 0; i < to.rank; i++)
            used += (size_t)snprintf(want + used, sizeof want - used, i ? ",%d" : "%d", to.dim[i]);
        snprintf(want + used, sizeof want - used, "]");
        diag_error(L->d, call->loc, "cannot reshape %s (%lld elements) to %s", type_str(L, v[0], a),
                   (long long)n, want);
        return IR_NONE;
    }
    if (infer >= 0)
        to.dim[infer] = (int)(n / known);
    return ir_reshape(L->f, v[0], to, call->loc, L->d);
}

/* linear(x, W, b) = x @ transpose(W) + b      x [N, in], W [out, in], b [out] */
static ValueId lower_linear(Lower *L, const Ast *call, const ModelBuiltin *b, const ValueId *v) {
    IrType x = type_of(L, v[0]), w = type_of(L, v[1]);
    if (x.rank != 2 || w.rank != 2 || x.dim[1] != w.dim[1]) {
        char a[64], c[64];
        diag_error(L->d, call->loc, "'linear(x, W, b)' needs x [N, in] and W [out, in], got x %s and W %s",
                   type_str(L, v[0], a), type_str(L, v[1], c));
        return IR_NONE;
    }
    int perm[2] = {1, 0};
    ValueId wt = ir_transpose(L->f, v[1], perm, call->loc, L->d);
    ValueId xw = ir_matmul(L->f, v[0], wt, call->loc, L->d);
    return ir_binary_bcast(L->f, OP_ADD, xw, v[2], call->loc, L->d);
}

/* log_softmax(x, a) = z - log(sum(exp(z), a)),  z = x - stop_grad(max(x, a))
 * (the shift cancels, so stopping its gradient is exact). */
static ValueId log_softmax(Lower *L, ValueId x, int axis, SrcLoc loc) {
    IrType t = type_of(L, x);
    IrFunc *f = L->f;
    ValueId m = ir_unary(f, OP_STOP_GRAD, ir_reduce(f, OP_REDUCE_MAX, x, 1, &axis, loc, L->d), loc, L->d);
    ValueId z = ir_binary_bcast(f, OP_SUB, x, keep_dims(L, m, t, axis, loc), loc, L->d);
    ValueId s = ir_reduce(f, OP_REDUCE_SUM, ir_unary(f, OP_EXP, z, loc, L->d), 1, &axis, loc, L->d);
    ValueId lse = keep_dims(L, ir_unary(f, OP_LOG, s, loc, L->d), t, axis, loc);
    return ir_binary_bcast(f, OP_SUB, z, lse, loc, L->d);
}

static ValueId lower_log_softmax(Lower *L, const Ast *call, const ModelBuiltin *b, const ValueId *v) {
    int axis;
    if (!axis_arg(L, call, 1, type_of(L, v[0]).rank, &axis))
        return IR_NONE;
    return log_softmax(L, v[0], axis, call->loc);
}

/* cross_entropy(z, l) = -mean_n sum_c onehot(l, C)[n,c] * log_softmax(z, 1)[n,c]
 * for logits z [N, C] and labels l i32[N]. */
static ValueId lower_cross_entropy(Lower *L, const Ast *call, const ModelBuiltin *b, const ValueId *v) {
    IrType z = type_of(L, v[0]), l = type_of(L, v[1]);
    if (z.rank != 2 || z.dtype == DT_I32 || l.rank != 1 || l.dtype != DT_I32 || l.dim[0] != z.dim[0]) {
        char a[64], c[64];
        diag_error(L->d, call->loc, "'cross_entropy(logits, labels)' needs real logits [N, C] and labels "
                   "i32[N], got %s and %s", type_str(L, v[0], a), type_str(L, v[1], c));
        return IR_NONE;
    }
    IrFunc *f = L->f;
    SrcLoc loc = call->loc;
    int one = 1, zero = 0;
    ValueId hot = ir_onehot(f, v[1], z.dim[1], loc, L->d);
    ValueId picked = ir_binary(f, OP_MUL, hot, log_softmax(L, v[0], 1, loc), loc, L->d);
    ValueId per_row = ir_reduce(f, OP_REDUCE_SUM, picked, 1, &one, loc, L->d);
    ValueId total = ir_reduce(f, OP_REDUCE_SUM, per_row, 1, &zero, loc, L->d);
    ValueId mean = z.dim[0] == 1 ? total : ir_binary_scalar(f, OP_DIV, total, z.dim[0], false, loc, L->d);
    return ir_unary(f, OP_NEG, mean, loc, L->d);
}

/* softmax(x, a) = e / sum(e, a),  e = exp(x - stop_grad(max(x, a))) (the
 * shift cancels, so stopping its gradient is exact). */
static ValueId lower_softmax(Lower *L, const Ast *call, const ModelBuiltin *b, const ValueId *v) {
    IrType t = type_of(L, v[0]);
    IrFunc *f = L->f;
    SrcLoc loc = call->loc;
    int axis;
    if (!axis_arg(L, call, 1, t.rank, &axis))
        return IR_NONE;
    ValueId m = ir_unary(f, OP_STOP_GRAD, ir_reduce(f, OP_REDUCE_MAX, v[0], 1, &axis, loc, L->d), loc, L->d);
    ValueId e = ir_unary(f, OP_EXP, ir_binary_bcast(f, OP_SUB, v[0], keep_dims(L, m, t, axis, loc), loc, L->d), loc,
                         L->d);
    ValueId s = ir_reduce(f, OP_REDUCE_SUM, e, 1, &axis, loc, L->d);
    return ir_binary_bcast(f, OP_DIV, e, keep_dims(L, s, t, axis, loc), loc, L->d);
}

/* leaky_relu(x, s) = relu(x) + s * (x - relu(x)): x where x > 0, else s*x
 * (both exact); its gradient is 1 where x > 0, else s (s at 0, as PyTorch). */
static ValueId lower_leaky_relu(Lower *L, const Ast *call, const ModelBuiltin *b, const ValueId *v) {
    double slope = 0.01;
    if (call->call.arg.n == 2 && !model_const_expr(L->mi, L->scope, call->call.arg.item[1], &slope)) {
        diag_error(L->d, call->call.arg.item[1]->loc, "the slope of 'leaky_relu' must be a constant (numbers and "
                   "dims)");
        return IR_NONE;
    }
    IrFunc *f = L->f;
    SrcLoc loc = call->loc;
    ValueId r = ir_unary(f, OP_RELU, v[0], loc, L->d);
    ValueId neg = ir_binary_scalar(f, OP_MUL, ir_binary(f, OP_SUB, v[0], r, loc, L->d), slope, true, loc, L->d);
    return ir_binary(f, OP_ADD, r, neg, loc, L->d);
}

/* elu(x) = relu(x) + (exp(x - relu(x)) - 1): x where x > 0, else
 * exp(x) - 1 (alpha 1); its gradient is 1 where x >= 0 (as PyTorch's),
 * else exp(x). */
static ValueId lower_elu(Lower *L, const Ast *call, const ModelBuiltin *b, const ValueId *v) {
    IrFunc *f = L->f;
    SrcLoc loc = call->loc;
    ValueId r = ir_unary(f, OP_RELU, v[0], loc, L->d);
    ValueId e = ir_unary(f, OP_EXP, ir_binary(f, OP_SUB, v[0], r, loc, L->d), loc, L->d);
    return ir_binary(f, OP_ADD, r, ir_binary_scalar(f, OP_SUB, e, 1, false, loc, L->d), loc, L->d);
}

/* gelu(x) = (x * 0.5) * (1 + erf(x * (1/sqrt 2))), the erf form, computed
 * as PyTorch computes it. */
static ValueId lower_gelu(Lower *L, const Ast *call, const ModelBuiltin *b, const ValueId *v) {
    IrFunc *f = L->f;
    SrcLoc loc = call->loc;
    ValueId half = ir_binary_scalar(f, OP_MUL, v[0], 0.5, false, loc, L->d);
    ValueId t = ir_unary(f, OP_ERF, ir_binary_scalar(f, OP_MUL, v[0], 0.70710678118654752440, false, loc, L->d), loc,
                         L->d);
    return ir_binary(f, OP_MUL, half, ir_binary_scalar(f, OP_ADD, t, 1, true, loc, L->d), loc, L->d);
}

/* layer_norm(x, g, b) = g * (x - m) / sqrt(s2 + 1e-5) + b, with m and s2
 * the mean and the (biased) variance of each row of x's last axis, g and
 * b of that axis's extent [D]. */
static ValueId lower_layer_norm(Lower *L, const Ast *call, const ModelBuiltin *b, const ValueId *v) {
    IrType x = type_of(L, v[0]), g = type_of(L, v[1]), e = type_of(L, v[2]);
    if (x.rank < 1 || g.rank != 1 || e.rank != 1 || g.dim[0] != x.dim[x.rank - 1] || e.dim[0] != x.dim[x.rank - 1]) {
        char sx[64], sg[64], se[64];
        diag_error(L->d, call->loc, "'layer_norm(x, g, b)' needs x [..., D] and g, b of its last extent [D], got x "
                   "%s, g %s and b %s", type_str(L, v[0], sx), type_str(L, v[1], sg), type_str(L, v[2], se));
        return IR_NONE;
    }
    IrFunc *f = L->f;
    SrcLoc loc = call->loc;
    int axis = x.rank - 1;
    const double count = x.dim[axis], eps = 1e-5;
    ValueId mean = ir_binary_scalar(f, OP_DIV, ir_reduce(f, OP_REDUCE_SUM, v[0], 1, &axis, loc, L->d), count, false,
                                    loc, L->d);
    ValueId centred = ir_binary_bcast(f, OP_SUB, v[0], keep_dims(L, mean, x, axis, loc), loc, L->d);
    ValueId sq = ir_reduce(f, OP_REDUCE_SUM, ir_binary(f, OP_MUL, centred, centred, loc, L->d), 1, &axis, loc, L->d);
    ValueId variance = ir_binary_scalar(f, OP_DIV, sq, count, false, loc, L->d);
    ValueId inv = ir_powc(f, ir_binary_scalar(f, OP_ADD, variance, eps, false, loc, L->d), -0.5, loc, L->d);
    ValueId norm = ir_binary_bcast(f, OP_MUL, centred, keep_dims(L, inv, x, axis, loc), loc, L->d);
    return ir_binary_bcast(f, OP_ADD, ir_binary_bcast(f, OP_MUL, norm, v[1], loc, L->d), v[2], loc, L->d);
}

/* concat(a, b, axis): a then b along the axis (of a's rank). */
static ValueId lower_concat(Lower *L, const Ast *call, const ModelBuiltin *b, const ValueId *v) {
    int axis;
    if (!axis_arg(L, call, 2, type_of(L, v[0]).rank, &axis))
        return IR_NONE;
    return ir_concat(L->f, v[0], v[1], axis, call->loc, L->d);
}

/* permute(x, [p0, ..., pn-1]): result axis i is x's axis pi. */
static ValueId lower_permute(Lower *L, const Ast *call, const ModelBuiltin *b, const ValueId *v) {
    const Ast *a = call->call.arg.item[1];
    int rank = type_of(L, v[0]).rank, perm[IR_MAX_RANK], sorted[IR_MAX_RANK], n;
    if (a->kind != AST_LIST || a->list.item.n != rank) {
        char sx[64];
        diag_error(L->d, a->loc, "'permute' of %s needs a list of its %d axes in their new order, such as [%s]",
                   type_str(L, v[0], sx), rank, rank == 2 ? "1, 0" : rank == 3 ? "0, 2, 1" : "1, 0, ...");
        return IR_NONE;
    }
    if (!axes_arg(L, call, 1, rank, sorted, &n))
        return IR_NONE;
    for (int i = 0; i < rank; i++) {
        int64_t p;
        model_int_literal(a->list.item.item[i], &p);
        perm[i] = (int)(p < 0 ? p + rank : p);
    }
    return ir_transpose(L->f, v[0], perm, call->loc, L->d);
}

/* Operands a and b of one shape, for the losses. */
static bool same_shape(Lower *L, const Ast *call, const char *what, const ValueId *v) {
    IrType a = type_of(L, v[0]), c = type_of(L, v[1]);
    if (ir_type_eq(a, c) && a.dtype != DT_I32)
        return true;
    char sa[64], sc[64];
    diag_error(L->d, call->loc, "'%s' needs two real operands of one shape, got %s and %s", what, type_str(L, v[0], sa),
               type_str(L, v[1], sc));
    return false;
}

/* The mean of every element of x. */
static ValueId mean_all(Lower *L, ValueId x, SrcLoc loc) {
    IrType t = type_of(L, x);
    int axes[IR_MAX_RANK];
    for (int i = 0; i < t.rank; i++)
        axes[i] = i;
    ValueId s = t.rank ? ir_reduce(L->f, OP_REDUCE_SUM, x, t.rank, axes, loc, L->d) : x;
    return ir_numel(t) == 1 ? s : ir_binary_scalar(L->f, OP_DIV, s, (double)ir_numel(t), false, loc, L->d);
}

/* mse(a, b) = mean((a - b)^2), lowered as that expression is. */
static ValueId lower_mse(Lower *L, const Ast *call, const ModelBuiltin *b, const ValueId *v) {
    if (!same_shape(L, call, "mse(a, b)", v))
        return IR_NONE;
    ValueId d = ir_binary(L->f, OP_SUB, v[0], v[1], call->loc, L->d);
    return mean_all(L, ir_powc(L->f, d, 2, call->loc, L->d), call->loc);
}

/* binary_cross_entropy(z, y) = mean(softplus(z) - z * y) for logits z and
 * real targets y of z's shape: softplus(z) = max(z, 0) + log(1 + exp(-|z|)),
 * so this is PyTorch's binary_cross_entropy_with_logits in its stable form;
 * its gradient is (sigmoid(z) - y) / numel. */
static ValueId lower_bce(Lower *L, const Ast *call, const ModelBuiltin *b, const ValueId *v) {
    if (!same_shape(L, call, "binary_cross_entropy(logits, y)", v))
        return IR_NONE;
    IrFunc *f = L->f;
    SrcLoc loc = call->loc;
    ValueId sp = ir_unary(f, OP_SOFTPLUS, v[0], loc, L->d);
    return mean_all(L, ir_binary(f, OP_SUB, sp, ir_binary(f, OP_MUL, v[0], v[1], loc, L->d), loc, L->d), loc);
}

static ValueId lower_argmax(Lower *L, const Ast *call, const ModelBuiltin *b, const ValueId *v) {
    int axis;
    if (!axis_arg(L, call, 1, type_of(L, v[0]).rank, &axis))
        return IR_NONE;
    return ir_argmax(L->f, v[0], axis, call->loc, L->d);
}

/* x with zeros before (`lo`) and after (`hi`) it along `axis`. */
static ValueId zero_pad(Lower *L, ValueId x, int axis, int lo, int hi, SrcLoc loc) {
    IrType t = type_of(L, x);
    if (lo) {
        t.dim[axis] = lo;
        x = ir_concat(L->f, ir_const(L->f, 0, t, loc), x, axis, loc, L->d);
    }
    if (hi) {
        t = type_of(L, x);
        t.dim[axis] = hi;
        x = ir_concat(L->f, x, ir_const(L->f, 0, t, loc), axis, loc, L->d);
    }
    return x;
}

/* pad = same for a KH x KW kernel (stride 1), as PyTorch pads: KH - 1 rows
 * in all, (KH - 1) / 2 (rounded down) above and the rest below, likewise
 * columns.  The convolution pads every side by *pad, the least of the
 * four; x gets the rest as explicit zeros (none for a square odd kernel). */
static ValueId pad_same(Lower *L, ValueId x, IrType w, int *pad, SrcLoc loc) {
    int top = (w.dim[2] - 1) / 2, bottom = w.dim[2] - 1 - top;
    int left = (w.dim[3] - 1) / 2, right = w.dim[3] - 1 - left;
    *pad = top < left ? top : left;
    x = zero_pad(L, x, 2, top - *pad, bottom - *pad, loc);
    return zero_pad(L, x, 3, left - *pad, right - *pad, loc);
}

/* conv2d(x, W, b, stride = s, pad = p) = conv2d(x, W) + b, broadcast over
 * [N, O, Ho, Wo]: x [N, C, H, W], W [O, C, KH, KW], b [O]; zero padding,
 * Ho = (H + 2p - KH) / s + 1 rounded down, likewise Wo. */
static ValueId lower_conv2d(Lower *L, const Ast *call, const ModelBuiltin *b, const ValueId *v) {
    IrType x = type_of(L, v[0]), w = type_of(L, v[1]), bias = type_of(L, v[2]);
    char sx[64], sw[64], sb[64];
    int64_t kw[BUILTIN_MAX_KWARGS];
    if (!model_builtin_kwargs(L->mi, call, b, kw, L->d))
        return IR_NONE;
    int stride = (int)kw[0], pad = (int)kw[1];
    if (pad == BUILTIN_SAME && stride != 1) {
        diag_error(L->d, call->loc, "'conv2d' with pad = same needs stride 1 (as in PyTorch), not stride %d",
                   stride);
        return IR_NONE;
    }
    if (x.rank != 4 || w.rank != 4 || bias.rank != 1) {
        diag_error(L->d, call->loc, "'conv2d(x, W, b)' needs x [N, C, H, W], W [O, C, KH, KW] and b [O], got x %s, "
                   "W %s and b %s", type_str(L, v[0], sx), type_str(L, v[1], sw), type_str(L, v[2], sb));
        return IR_NONE;
    }
    if (x.dim[1] != w.dim[1]) {
        diag_error(L->d, call->loc, "'conv2d': x %s has %d channels, but W %s [O, C, KH, KW] takes %d",
                   type_str(L, v[0], sx), x.dim[1], type_str(L, v[1], sw), w.dim[1]);
        return IR_NONE;
    }
    if (bias.dim[0] != w.dim[0]) {
        diag_error(L->d, call->loc, "'conv2d': b %s needs one element per output channel of W %s (%d)",
                   type_str(L, v[2], sb), type_str(L, v[1], sw), w.dim[0]);
        return IR_NONE;
    }
    ValueId in = v[0];
    if (pad == BUILTIN_SAME) {
        in = pad_same(L, v[0], w, &pad, call->loc);
        x = type_of(L, in);
    }
    if ((int64_t)x.dim[2] + 2 * (int64_t)pad < w.dim[2] || (int64_t)x.dim[3] + 2 * (int64_t)pad < w.dim[3]) {
        diag_error(L->d, call->loc, "'conv2d': the %dx%d kernel of W %s does not fit the %dx%d image of x %s padded "
                   "by %d", w.dim[2], w.dim[3], type_str(L, v[1], sw), x.dim[2], x.dim[3], type_str(L, v[0], sx),
                   pad);
        return IR_NONE;
    }
    ValueId y = ir_conv(L->f, OP_CONV2D, in, v[1], stride, pad, x, call->loc, L->d);
    IrType column = {.dtype = bias.dtype, .rank = 3, .dim = {bias.dim[0], 1, 1}};
    return ir_binary_bcast(L->f, OP_ADD, y, ir_reshape(L->f, v[2], column, call->loc, L->d), call->loc, L->d);
}

/* The k x k windows of x [N, C, H, W], stride k, as axes 3 and 5 of
 * [N, C, H/k, k, W/k, k] (H/k and W/k rounded down: the rows and columns
 * past the last whole window are sliced off first, as PyTorch drops them). */
static ValueId pool_windows(Lower *L, const Ast *call, ValueId v, int *k) {
    IrType x = type_of(L, v);
    char sx[64];
    const char *fn = call->call.callee;
    if (!model_extent(L->mi, call->call.arg.item[1], k, L->d))
        return IR_NONE;
    if (x.rank != 4) {
        diag_error(L->d, call->loc, "'%s(x, k)' needs x [N, C, H, W], got %s", fn, type_str(L, v, sx));
        return IR_NONE;
    }
    if (*k > x.dim[2] || *k > x.dim[3]) {
        diag_error(L->d, call->loc, "'%s': the %dx%d window does not fit the %dx%d image of x %s", fn, *k, *k,
                   x.dim[2], x.dim[3], type_str(L, v, sx));
        return IR_NONE;
    }
    int ho = x.dim[2] / *k, wo = x.dim[3] / *k;
    IrType whole = {.dtype = x.dtype, .rank = 4, .dim = {x.dim[0], x.dim[1], ho * *k, wo * *k}};
    static const int origin[4] = {0, 0, 0, 0};
    ValueId cut = ir_slice(L->f, v, origin, whole, call->loc, L->d);
    IrType windows = {.dtype = x.dtype, .rank = 6, .dim = {x.dim[0], x.dim[1], ho, *k, wo, *k}};
    return ir_reshape(L->f, cut, windows, call->loc, L->d);
}

static const int pool_axes[2] = {3, 5};

/* max_pool2d(x, k) = the max of each k x k window, stride k: reduce_max
 * over the window axes of pool_windows. */
static ValueId lower_max_pool2d(Lower *L, const Ast *call, const ModelBuiltin *b, const ValueId *v) {
    int k;
    ValueId w = pool_windows(L, call, v[0], &k);
    return w == IR_NONE ? IR_NONE : ir_reduce(L->f, OP_REDUCE_MAX, w, 2, pool_axes, call->loc, L->d);
}

/* avg_pool2d(x, k) = the mean of each k x k window, stride k: the sum over
 * the window axes of pool_windows, divided by k*k. */
static ValueId lower_avg_pool2d(Lower *L, const Ast *call, const ModelBuiltin *b, const ValueId *v) {
    int k;
    ValueId w = pool_windows(L, call, v[0], &k);
    if (w == IR_NONE)
        return IR_NONE;
    ValueId s = ir_reduce(L->f, OP_REDUCE_SUM, w, 2, pool_axes, call->loc, L->d);
    return k == 1 ? s : ir_binary_scalar(L->f, OP_DIV, s, (double)k * k, false, call->loc, L->d);
}

/* A name for batch_norm's running statistics: its gamma's, which must be a
 * param (an argument of the function lowered) used by no other batch_norm;
 * NULL after reporting. */
static const char *bn_name(Lower *L, const Ast *call, ValueId gamma) {
    const IrNode *g = &L->f->node[gamma];
    if (g->op != OP_INPUT) {
        diag_error(L->d, call->loc, "running statistics are named after batch_norm's gamma, which must be a param "
                   "here");
        return NULL;
    }
    for (int i = 0; i < L->nbn; i++)
        if (strcmp(L->bn[i].name, g->name) == 0) {
            diag_error(L->d, call->loc, "a second batch_norm with gamma '%s': running statistics are named after "
                       "gamma, so each batch_norm needs its own", g->name);
            return NULL;
        }
    return g->name;
}

/* batch_norm(x, gamma, beta) = gamma * (x - m) / sqrt(s2 + 1e-5) + beta,
 * with m and s2 the mean and the (biased) variance of each feature over
 * the batch: over axis 0 of x [N, F] (gamma, beta [F]), over axes 0, 2, 3
 * of x [N, C, H, W] (gamma, beta [C]).  Statistics of this call's batch,
 * no running averages (as MAML).  In the lowerings of model_lower_bn:
 * BN_STATS also appends m and the unbiased variance (n / (n - 1)) s2, n
 * the count per feature, to the statistics; BN_RUNNING takes m and s2 from
 * the statistics input instead (inference form). */
static ValueId lower_batch_norm(Lower *L, const Ast *call, const ModelBuiltin *b, const ValueId *v) {
    static const int axes2[1] = {0}, axes4[3] = {0, 2, 3};
    IrType x = type_of(L, v[0]), gamma = type_of(L, v[1]), beta = type_of(L, v[2]);
    if ((x.rank != 2 && x.rank != 4) || gamma.rank != 1 || beta.rank != 1 || gamma.dim[0] != x.dim[1] ||
        beta.dim[0] != x.dim[1]) {
        char sx[64], sg[64], sb[64];
        diag_error(L->d, call->loc, "'batch_norm(x, gamma, beta)' needs x [N, F] or [N, C, H, W] and gamma, beta of "
                   "its features ([F] or [C]), got x %s, gamma %s and beta %s", type_str(L, v[0], sx),
                   type_str(L, v[1], sg), type_str(L, v[2], sb));
        return IR_NONE;
    }
    IrFunc *f = L->f;
    SrcLoc loc = call->loc;
    const int *axes = x.rank == 2 ? axes2 : axes4;
    int naxes = x.rank == 2 ? 1 : 3;
    double count = (double)(ir_numel(x) / x.dim[1]);
    IrType keep = x, feature = {.dtype = gamma.dtype, .rank = x.rank - 1, .dim = {x.dim[1], 1, 1}};
    for (int i = 0; i < naxes; i++)
        keep.dim[axes[i]] = 1;
    ValueId mean, centred, var;
    if (L->bn_mode == BN_RUNNING) {
        int at[2] = {L->bn_at, L->bn_at + x.dim[1]};
        mean = ir_slice(f, L->bn_in, &at[0], gamma, loc, L->d);
        var = ir_slice(f, L->bn_in, &at[1], gamma, loc, L->d);
        L->bn_at += 2 * x.dim[1];
        centred = ir_binary_bcast(f, OP_SUB, v[0], ir_reshape(f, mean, keep, loc, L->d), loc, L->d);
    } else {
        ValueId sum = ir_reduce(f, OP_REDUCE_SUM, v[0], naxes, axes, loc, L->d);
        mean = ir_binary_scalar(f, OP_DIV, sum, count, false, loc, L->d);
        centred = ir_binary_bcast(f, OP_SUB, v[0], ir_reshape(f, mean, keep, loc, L->d), loc, L->d);
        ValueId sq = ir_reduce(f, OP_REDUCE_SUM, ir_binary(f, OP_MUL, centred, centred, loc, L->d), naxes, axes,
                               loc, L->d);
        var = ir_binary_scalar(f, OP_DIV, sq, count, false, loc, L->d);
        if (L->bn_mode == BN_STATS) {
            const char *name = bn_name(L, call, v[1]);
            if (!name)
                return IR_NONE;
            L->bn = realloc(L->bn, ((size_t)L->nbn + 1) * sizeof *L->bn);
            if (!L->bn)
                abort();
            L->bn[L->nbn++] = (ModelBn){name, x.dim[1]};
            ValueId unbiased = ir_binary_scalar(f, OP_DIV, sq, count > 1 ? count - 1 : 1, false, loc, L->d);
            ValueId both = ir_concat(f, mean, unbiased, 0, loc, L->d);
            L->bn_out = L->bn_out == IR_NONE ? both : ir_concat(f, L->bn_out, both, 0, loc, L->d);
            L->bn_at += 2 * x.dim[1];
        }
    }
    ValueId inv = ir_powc(f, ir_binary_scalar(f, OP_ADD, var, 1e-5, false, loc, L->d), -0.5, loc, L->d);
    ValueId norm = ir_binary_bcast(f, OP_MUL, centred, ir_reshape(f, inv, keep, loc, L->d), loc, L->d);
    ValueId scaled = ir_binary_bcast(f, OP_MUL, norm, ir_reshape(f, v[1], feature, loc, L->d), loc, L->d);
    return ir_binary_bcast(f, OP_ADD, scaled, ir_reshape(f, v[2], feature, loc, L->d), loc, L->d);
}

/* flatten(x) = x reshaped from [N, d1, ..., dk] to [N, d1*...*dk]. */
static ValueId lower_flatten(Lower *L, const Ast *call, const ModelBuiltin *b, const ValueId *v) {
    IrType x = type_of(L, v[0]);
    if (x.rank < 2) {
        char sx[64];
        diag_error(L->d, call->loc, "'flatten(x)' needs x [N, d1, ...] of rank 2 or more, got %s",
                   type_str(L, v[0], sx));
        return IR_NONE;
    }
    IrType t = {.dtype = x.dtype, .rank = 2, .dim = {x.dim[0], (int)(ir_numel(x) / x.dim[0])}};
    return ir_reshape(L->f, v[0], t, call->loc, L->d);
}

#define V BARG_VALUE
#define NO_KW {{NULL, 0, 0, false}, {NULL, 0, 0, false}}
#define UNARY(name, op) {name, 1, 1, {V}, false, op, lower_unary, NO_KW}
static const ModelBuiltin builtins[] = {
    UNARY("relu", OP_RELU), UNARY("tanh", OP_TANH), UNARY("sigmoid", OP_SIGMOID),
    UNARY("exp", OP_EXP), UNARY("log", OP_LOG), UNARY("sqrt", OP_SQRT),
    UNARY("softplus", OP_SOFTPLUS), UNARY("sin", OP_SIN), UNARY("cos", OP_COS),
    UNARY("abs", OP_ABS),
    {"elu", 1, 1, {V}, false, OP_EXP, lower_elu, NO_KW},
    {"gelu", 1, 1, {V}, false, OP_ERF, lower_gelu, NO_KW},
    {"sum", 1, 2, {V, BARG_AXES}, false, OP_REDUCE_SUM, lower_reduce, NO_KW},
    {"mean", 1, 2, {V, BARG_AXES}, false, OP_REDUCE_SUM, lower_mean, NO_KW},
    {"max", 1, 2, {V, BARG_AXES}, false, OP_REDUCE_MAX, lower_reduce, NO_KW},
    {"transpose", 1, 1, {V}, false, OP_TRANSPOSE, lower_transpose, NO_KW},
    {"reshape", 2, 2, {V, BARG_SHAPE}, false, OP_RESHAPE, lower_reshape, NO_KW},
    {"linear", 3, 3, {V, V, V}, false, OP_MATMUL, lower_linear, NO_KW},
    {"log_softmax", 2, 2, {V, BARG_AXIS}, false, OP_EXP, lower_log_softmax, NO_KW},
    {"cross_entropy", 2, 2, {V, V}, false, OP_ONEHOT, lower_cross_entropy, NO_KW},
    {"argmax", 2, 2, {V, BARG_AXIS}, true, OP_ARGMAX, lower_argmax, NO_KW},
    {"conv2d", 3, 3, {V, V, V}, false, OP_CONV2D, lower_conv2d, {{"stride", 1, 1, false}, {"pad", 0, 0, true}}},
    {"max_pool2d", 2, 2, {V, BARG_SIZE}, false, OP_REDUCE_MAX, lower_max_pool2d, NO_KW},
    {"avg_pool2d", 2, 2, {V, BARG_SIZE}, false, OP_REDUCE_SUM, lower_avg_pool2d, NO_KW},
    {"softmax", 2, 2, {V, BARG_AXIS}, false, OP_EXP, lower_softmax, NO_KW},
    {"leaky_relu", 1, 2, {V, BARG_NUMBER}, false, OP_RELU, lower_leaky_relu, NO_KW},
    {"layer_norm", 3, 3, {V, V, V}, false, OP_REDUCE_SUM, lower_layer_norm, NO_KW},
    {"concat", 3, 3, {V, V, BARG_AXIS}, false, OP_CONCAT, lower_concat, NO_KW},
    {"permute", 2, 2, {V, BARG_AXES}, false, OP_TRANSPOSE, lower_permute, NO_KW},
    {"mse", 2, 2, {V, V}, false, OP_SUB, lower_mse, NO_KW},
    {"binary_cross_entropy", 2, 2, {V, V}, false, OP_SOFTPLUS, lower_bce, NO_KW},
    {"batch_norm", 3, 3, {V, V, V}, false, OP_REDUCE_SUM, lower_batch_norm, NO_KW},
    {"flatten", 1, 1, {V}, false, OP_RESHAPE, lower_flatten, NO_KW},
};
#undef UNARY
#undef NO_KW
#undef V

const ModelBuiltin *model_builtin(const char *name) {
    for (size_t i = 0; i < sizeof builtins / sizeof builtins[0]; i++)
        if (strcmp(builtins[i].name, name) == 0)
            return &builtins[i];
    return NULL;
}

int model_call_positional(const Ast *call) {
    int n = 0;
    while (n < call->call.arg.n && call->call.arg.item[n]->kind != AST_KWARG)
        n++;
    return n;
}

bool model_builtin_kwargs(const ModelImpl *mi, const Ast *call, const ModelBuiltin *b, int64_t *out, Diag *d) {
    const Ast *given[BUILTIN_MAX_KWARGS] = {0};
    const char *fn = call->call.callee;
    char names[64] = "";
    int nkw = 0;
    while (nkw < BUILTIN_MAX_KWARGS && b->kw[nkw].name)
        nkw++;
    for (int i = 0; i < nkw; i++) {
        size_t used = strlen(names);
        snprintf(names + used, sizeof names - used, "%s%s", i ? ", " : "", b->kw[i].name);
        out[i] = b->kw[i].def;
    }
    bool ok = true;
    for (int i = model_call_positional(call); i < call->call.arg.n; i++) {
        const Ast *a = call->call.arg.item[i];
        if (a->kind != AST_KWARG) {
            diag_error(d, a->loc, "positional argument after a keyword argument in a call of '%s'", fn);
            ok = false;
            continue;
        }
        int k = 0;
        while (k < nkw && strcmp(b->kw[k].name, a->kwarg.key) != 0)
            k++;
        if (k == nkw) {
            diag_error(d, a->loc, "'%s' has no argument '%s' (its keyword arguments: %s)", fn, a->kwarg.key, names);
            ok = false;
            continue;
        }
        if (given[k]) {
            diag_error(d, a->loc, "argument '%s' of '%s' is given twice", a->kwarg.key, fn);
            diag_note(d, given[k]->loc, "first given here");
            ok = false;
            continue;
        }
        given[k] = a;
        int64_t value;
        if (b->kw[k].same && a->kwarg.value->kind == AST_NAME && strcmp(a->kwarg.value->name.id, "same") == 0) {
            out[k] = BUILTIN_SAME;
            continue;
        }
        if (!model_dim_expr(mi, a->kwarg.value, &value, d)) {
            ok = false;
            continue;
        }
        if (value < b->kw[k].min || value > IR_MAX_DIM) {
            diag_error(d, a->kwarg.value->loc, "'%s' of '%s' must be from %lld to %d, not %lld", a->kwarg.key, fn,
                       (long long)b->kw[k].min, IR_MAX_DIM, (long long)value);
            ok = false;
            continue;
        }
        out[k] = value;
    }
    return ok;
}

/* --- calls --- */

static ValueId call_builtin(Lower *L, const Ast *call, const ModelBuiltin *b) {
    const AstList *args = &call->call.arg;
    int npos = model_call_positional(call);
    if (b->metric_only && L->differentiable)
        return nondiff_error(L, call, b->name);
    if (npos < b->min_args || npos > b->max_args) {
        diag_error(L->d, call->loc, "'%s' takes %d to %d arguments, but %d were given", b->name, b->min_args,
                   b->max_args, npos);
        return IR_NONE;
    }
    ValueId v[3] = {IR_NONE, IR_NONE, IR_NONE};
    bool ok = true;
    for (int i = 0; i < npos; i++)
        if (b->arg[i] == BARG_VALUE)
            ok &= (v[i] = lower_expr(L, args->item[i])) != IR_NONE;
    return ok ? b->lower(L, call, b, v) : IR_NONE;
}

static ValueId lower_body(Lower *L, int index, const ValueId *args);

static ValueId call_def(Lower *L, const Ast *call) {
    const int *at = ast_map_get(&L->mi->defs, call->call.callee);
    if (!at) {
        diag_error(L->d, call->loc, "unknown function '%s'", call->call.callee);
        return IR_NONE;
    }
    const Ast *def = L->mi->def[*at];
    const AstList *args = &call->call.arg;
    if (args->n != def->def.arg.n) {
        diag_error(L->d, call->loc, "'%s' takes %d arguments, but %d were given", def->def.name, def->def.arg.n,
                   args->n);
        return IR_NONE;
    }
    if (L->active[*at]) {
        diag_error(L->d, call->loc, "recursive call of '%s'; recursion is not supported", def->def.name);
        return IR_NONE;
    }
    ValueId *v = malloc(((size_t)args->n + 1) * sizeof *v);
    if (!v)
        abort();
    bool ok = true;
    for (int i = 0; i < args->n; i++)
        ok &= (v[i] = lower_expr(L, args->item[i])) != IR_NONE;
    int errors = L->d->nerrors;
    ValueId r = ok ? lower_body(L, *at, v) : IR_NONE;
    if (L->d->nerrors != errors && !L->limit_reported)
        diag_note(L->d, call->loc, "in this call of '%s'", def->def.name);
    free(v);
    return r;
}

static ValueId lower_call(Lower *L, const Ast *call) {
    DrawKind kind;
    if (L->draw && model_draw_kind(call->call.callee, &kind))
        return L->draw(L->draw_ctx, call);
    const ModelBuiltin *b = model_builtin(call->call.callee);
    int npos = model_call_positional(call);
    if (npos < call->call.arg.n && (!b || !b->kw[0].name)) {
        diag_error(L->d, call->call.arg.item[npos]->loc, "keyword argument in a call of '%s'", call->call.callee);
        return IR_NONE;
    }
    return b ? call_builtin(L, call, b) : call_def(L, call);
}

/* --- expressions --- */

static ValueId lower_name(Lower *L, const Ast *e) {
    const char *id = e->name.id;
    const int *at = ast_map_get(L->scope, id);
    if (at)
        return *at;
    if ((at = ast_map_get(&L->mi->params, id))) {
        if (L->params)
            return L->params[*at];
        diag_error(L->d, e->loc, "'%s' is a param; a task family cannot read params", id);
        return IR_NONE;
    }
    if ((at = ast_map_get(&L->mi->dims, id)))
        return real_const(L, L->m->dim[*at].value, e->loc);
    diag_error(L->d, e->loc, "unknown name '%s'", id);
    return IR_NONE;
}

/* An operand; a number literal next to an i32 value becomes an i32
 * constant when it is a whole number, so `argmax(z, 1) == 3` works. */
static ValueId lower_operand(Lower *L, const Ast *e, ValueId other) {
    double v;
    if (other != IR_NONE && type_of(L, other).dtype == DT_I32 && model_number_literal(e, &v) &&
        fabs(v) <= INT32_MAX && v == (int32_t)v)
        return ir_const(L->f, v, ir_scalar(DT_I32), e->loc);
    return lower_expr(L, e);
}

static ValueId lower_binary(Lower *L, const Ast *e) {
    static const IrOp op[] = {[BIN_ADD] = OP_ADD, [BIN_SUB] = OP_SUB, [BIN_MUL] = OP_MUL, [BIN_DIV] = OP_DIV,
                              [BIN_EQ] = OP_EQ};
    const Ast *lhs = e->binary.lhs, *rhs = e->binary.rhs;
    double k;
    if (e->binary.op == BIN_EQ && L->differentiable)
        return nondiff_error(L, e, "==");
    if (e->binary.op == BIN_POW) {
        if (!model_const_expr(L->mi, L->scope, rhs, &k)) {
            diag_error(L->d, rhs->loc, "the exponent of '^' must be a constant (numbers and dims)");
            return IR_NONE;
        }
        return ir_powc(L->f, lower_expr(L, lhs), k, e->loc, L->d);
    }
    bool lit = model_number_literal(lhs, &k);
    ValueId b = lit ? lower_expr(L, rhs) : IR_NONE;
    ValueId a = lower_operand(L, lhs, b);
    if (!lit)
        b = lower_operand(L, rhs, a);
    if (a == IR_NONE || b == IR_NONE)
        return IR_NONE;
    if (e->binary.op == BIN_MATMUL)
        return ir_matmul(L->f, a, b, e->loc, L->d);
    if (e->binary.op == BIN_EQ && type_of(L, a).dtype != type_of(L, b).dtype) {
        char sa[64], sb[64];
        diag_error(L->d, e->loc, "'==' compares %s with %s; both sides need the same element type",
                   type_str(L, a, sa), type_str(L, b, sb));
        return IR_NONE;
    }
    return ir_binary_bcast(L->f, op[e->binary.op], a, b, e->loc, L->d);
}

static bool enter(Lower *L) {
    if (++L->steps <= LOWER_MAX_STEPS && L->depth < LOWER_MAX_DEPTH) {
        L->depth++;
        return true;
    }
    return false;
}

static ValueId limit_error(Lower *L, const Ast *e) {
    if (!L->limit_reported) {
        if (L->depth >= LOWER_MAX_DEPTH)
            diag_error(L->d, e->loc, "expression nested too deeply after inlining calls (more than %d levels)",
                       LOWER_MAX_DEPTH);
        else
            diag_error(L->d, e->loc, "model too large: more than %ld expressions after inlining calls",
                       LOWER_MAX_STEPS);
    }
    L->limit_reported = true;
    return IR_NONE;
}

static ValueId lower_expr(Lower *L, const Ast *e) {
    if (!enter(L))
        return limit_error(L, e);
    ValueId v = IR_NONE;
    switch (e->kind) {
    case AST_NUM: v = real_const(L, e->num.value, e->loc); break;
    case AST_NAME: v = lower_name(L, e); break;
    case AST_NEG: v = ir_unary(L->f, OP_NEG, lower_expr(L, e->neg.operand), e->loc, L->d); break;
    case AST_BINARY: v = lower_binary(L, e); break;
    case AST_CALL: v = lower_call(L, e); break;
    case AST_STR: diag_error(L->d, e->loc, "a string cannot be used in an expression"); break;
    case AST_LIST: diag_error(L->d, e->loc, "a list [...] can only be the shape of 'reshape' or the axes of a builtin"); break;
    default: diag_error(L->d, e->loc, "expected an expression"); break;
    }
    L->depth--;
    return v;
}

/* Inline def `index` with its arguments bound to args. */
static ValueId lower_body(Lower *L, int index, const ValueId *args) {
    const Ast *def = L->mi->def[index];
    AstMap scope = {0}, *outer = L->scope;
    for (int i = 0; i < def->def.arg.n; i++)
        ast_map_put(&scope, def->def.arg.item[i]->name.id, args[i]);
    L->scope = &scope;
    L->active[index] = true;
    ValueId r = IR_NONE;
    const AstList *body = &def->def.body;
    for (int i = 0; i < body->n; i++) {
        const Ast *s = body->item[i];
        if (s->kind == AST_ASSIGN) {
            ValueId v = lower_expr(L, s->assign.value);
            ir_name(L->f, v, s->assign.name);
            ast_map_put(&scope, s->assign.name, v);
        } else
            r = lower_expr(L, s->ret.value);
    }
    ir_name(L->f, r, def->def.name);    /* a def's result bears its name */
    L->active[index] = false;
    L->scope = outer;
    ast_map_free(&scope);
    return r;
}

/* A call of the model's function fn with L set up (its batch-norm mode
 * included). */
static ValueId lower_top(Lower *L, const char *fn, const ValueId *args, int nargs);

ValueId model_lower_call(const Model *m, IrFunc *f, const char *fn, const ValueId *params, const ValueId *args,
                         int nargs, bool differentiable, Diag *d) {
    Lower L = {.mi = model_impl(m), .m = m, .f = f, .params = params, .differentiable = differentiable, .d = d};
    return lower_top(&L, fn, args, nargs);
}

ValueId model_lower_bn(const Model *m, IrFunc *f, const char *fn, const ValueId *params, const ValueId *args,
                       int nargs, ModelBnMode mode, ValueId stats, ModelBn **bn, int *nbn, Diag *d) {
    Lower L = {.mi = model_impl(m), .m = m, .f = f, .params = params, .d = d,
               .bn_mode = mode, .bn_in = stats, .bn_out = IR_NONE};
    ValueId r = lower_top(&L, fn, args, nargs);
    if (mode == BN_STATS)
        r = r == IR_NONE ? IR_NONE : L.bn_out;
    if (bn) {
        *bn = L.bn;
        *nbn = L.nbn;
    } else
        free(L.bn);
    return r;
}

static ValueId lower_top(Lower *L, const char *fn, const ValueId *args, int nargs) {
    const Model *m = L->m;
    Diag *d = L->d;
    const ModelImpl *mi = model_impl(m);
    const int *at = ast_map_get(&mi->defs, fn);
    if (!at) {
        diag_error(d, (SrcLoc){m->file, 0, 0}, "the model has no function '%s'", fn);
        return IR_NONE;
    }
    const Ast *def = mi->def[*at];
    if (nargs != def->def.arg.n) {
        diag_error(d, def->loc, "'%s' takes %d arguments, but is called with %d", fn, def->def.arg.n, nargs);
        return IR_NONE;
    }
    for (int i = 0; i < nargs; i++)
        if (args[i] == IR_NONE)
            return IR_NONE;
    L->active = calloc((size_t)mi->ndef, sizeof *L->active);
    if (!L->active)
        abort();
    ValueId r = lower_body(L, *at, args);
    free(L->active);
    return r;
}

ValueId model_lower_family_expr(const ModelImpl *mi, IrFunc *f, AstMap *scope, const Ast *e, ModelDrawFn *draw,
                                void *ctx, Diag *d) {
    Lower L = {.mi = mi, .m = &mi->pub, .f = f, .d = d, .scope = scope, .draw = draw, .draw_ctx = ctx};
    L.active = calloc((size_t)mi->ndef + 1, sizeof *L.active);
    if (!L.active)
        abort();
    ValueId r = lower_expr(&L, e);
    free(L.active);
    return r;
}

/* fn lowered into a new function `name` of mod that takes the params and
 * then data arguments x (and y) of the types data[0..ndata). */
static bool lower_function(const Model *m, IrModule *mod, const char *name, const char *fn, const IrType *data,
                           int ndata, bool differentiable, Diag *d) {
    static const char *const data_name[] = {"x", "y"};
    IrFunc *f = ir_func_new(mod, name);
    ValueId *params = malloc(((size_t)m->nparam + 1) * sizeof *params), args[2];
    if (!params)
        abort();
    for (int i = 0; i < m->nparam; i++)
        params[i] = ir_input(f, m->param[i].decl, m->param[i].type, m->param[i].loc);
    for (int i = 0; i < ndata; i++)
        args[i] = ir_input(f, data_name[i], data[i], m->task.loc);
    ValueId r = model_lower_call(m, f, fn, params, args, ndata, differentiable, d);
    free(params);
    if (r != IR_NONE)
        ir_output(f, r);
    return r != IR_NONE;
}

/* The functions of batch norm's running statistics (model_lower_module):
 * fn lowered in `mode` into `name`, taking the params, then (BN_RUNNING)
 * the statistics `bn` [L], then x and y of the types data[0..2). */
static bool lower_bn_function(const Model *m, IrModule *mod, const char *name, const char *fn, const IrType *data,
                              ModelBnMode mode, Diag *d) {
    IrFunc *f = ir_func_new(mod, name);
    ValueId *params = malloc(((size_t)m->nparam + 1) * sizeof *params), args[2], bn = IR_NONE;
    if (!params)
        abort();
    for (int i = 0; i < m->nparam; i++)
        params[i] = ir_input(f, m->param[i].decl, m->param[i].type, m->param[i].loc);
    int L = 0;
    for (int i = 0; i < m->nbn; i++)
        L += 2 * m->bn[i].channels;
    if (mode == BN_RUNNING)
        bn = ir_input(f, "bn", (IrType){.dtype = m->real, .rank = 1, .dim = {L}}, m->meta.loc);
    args[0] = ir_input(f, "x", data[0], m->task.loc);
    args[1] = ir_input(f, "y", data[1], m->task.loc);
    ValueId r = model_lower_bn(m, f, fn, params, args, 2, mode, bn, NULL, NULL, d);
    free(params);
    if (r != IR_NONE)
        ir_output(f, r);
    return r != IR_NONE;
}

IrModule *model_lower_module(const Model *m, Diag *d) {
    const ModelTask *t = &m->task;
    IrType support[2] = {t->support_x, t->support_y}, query[2] = {t->query_x, t->query_y};
    bool same = ir_type_eq(support[0], query[0]) && ir_type_eq(support[1], query[1]);
    IrModule *mod = ir_module_new(m->real);
    ir_module_set_meta(mod, &m->meta);
    bool ok = lower_function(m, mod, "loss", "loss", support, 2, true, d) &&
              (same || lower_function(m, mod, "loss.query", "loss", query, 2, true, d)) &&
              (!m->has_metric || lower_function(m, mod, "metric", "metric", query, 2, false, d)) &&
              (!model_has_func(m, "net") || lower_function(m, mod, "net", "net", query, 1, false, d));
    if (ok && m->nbn)   /* running statistics (MAML++'s BNRS) */
        ok = lower_bn_function(m, mod, "bn.stats", "loss", support, BN_STATS, d) &&
             lower_bn_function(m, mod, "loss.running", "loss", support, BN_RUNNING, d) &&
             (same || lower_bn_function(m, mod, "loss.query.running", "loss", query, BN_RUNNING, d)) &&
             (!m->has_metric || lower_bn_function(m, mod, "metric.running", "metric", query, BN_RUNNING, d));
    if (!ok) {
        ir_module_free(mod);
        return NULL;
    }
    return mod;
}
