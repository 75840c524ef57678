/* One element of a value, for the GPU target (gpu_impl.h): every kind of
 * op, from its operands' elements.  A thread of a stage computes one
 * element of its value this way: a map from its operands' elements at the
 * same index, a reduction, product or convolution by a loop over its
 * terms in index order.  An operand the plan fuses into its reader (an
 * elementwise value, a product read by a loop, an operand of a blocked
 * sum: BePlan's fused_into) has no buffer, and is computed here in its
 * reader's code at the index the reader needs, so the plan's fusion
 * decisions hold on the GPU unchanged.  Layout ops are the plan's views;
 * one the plan computes (a reshape it could not view, a one-element
 * value) maps the index to its operand's. */
#include "gpu_impl.h"

#include <math.h>

#include "powc.h"

static const SrcLoc no_loc = {0};

static LLVMValueRef fcmp(Gpu *g, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b)
{
    return LLVMBuildFCmp(g->b, p, a, b, "");
}

static LLVMValueRef select01(Gpu *g, LLVMTypeRef t, LLVMValueRef cond)
{
    return LLVMBuildSelect(g->b, cond, LLVMConstReal(t, 1), LLVMConstReal(t, 0), "");
}

static LLVMValueRef call1(Gpu *g, const char *name, LLVMValueRef x)
{
    return gpu_intrinsic(g, name, LLVMTypeOf(x), &x, 1);
}

static LLVMValueRef call2(Gpu *g, const char *name, LLVMValueRef x, LLVMValueRef y)
{
    LLVMValueRef args[2] = {x, y};
    return gpu_intrinsic(g, name, LLVMTypeOf(x), args, 2);
}

/* 1 / (1 + e^-x) without overflow, as the CPU computes it. */
static LLVMValueRef sigmoid(Gpu *g, LLVMTypeRef t, LLVMValueRef x)
{
    LLVMValueRef one = LLVMConstReal(t, 1);
    LLVMValueRef e = gpu_exp(g, LLVMBuildFNeg(g->b, call1(g, "llvm.fabs", x), ""));
    LLVMValueRef r = LLVMBuildFDiv(g->b, one, LLVMBuildFAdd(g->b, one, e, ""), "");
    return LLVMBuildSelect(g->b, fcmp(g, LLVMRealOGE, x, LLVMConstReal(t, 0)), r, LLVMBuildFMul(g->b, e, r, ""), "");
}

/* max(x, 0) + log1p(e^-|x|). */
static LLVMValueRef softplus(Gpu *g, LLVMTypeRef t, LLVMValueRef x)
{
    LLVMValueRef e = gpu_exp(g, LLVMBuildFNeg(g->b, call1(g, "llvm.fabs", x), ""));
    return LLVMBuildFAdd(g->b, call2(g, "llvm.maxnum", x, LLVMConstReal(t, 0)), gpu_log1p(g, e), "");
}

/* The general x^c: the module's own pow (gpu_math.c). */
static LLVMValueRef module_pow(void *g, LLVMValueRef x, double c) { return gpu_pow(g, x, c); }

/* The element of elementwise node n from its operands' elements x[]. */
static LLVMValueRef map_value(Gpu *g, const IrNode *n, const LLVMValueRef *x)
{
    LLVMTypeRef t = gpu_elem_type(g, n->type.dtype);
    LLVMValueRef zero = LLVMConstReal(t, 0), a = x[0], b = x[1];
    switch (n->op) {
    case OP_NEG: return LLVMBuildFNeg(g->b, a, "");
    case OP_EXP: return gpu_exp(g, a);
    case OP_LOG: return gpu_log(g, a);
    case OP_SQRT: return call1(g, "llvm.sqrt", a);
    case OP_TANH: return gpu_tanh(g, a);
    case OP_SIGMOID: return sigmoid(g, t, a);
    case OP_RELU: return LLVMBuildSelect(g->b, fcmp(g, LLVMRealOGT, a, zero), a, zero, "");
    case OP_SOFTPLUS: return softplus(g, t, a);
    case OP_ABS: return call1(g, "llvm.fabs", a);
    case OP_SIGN:
        return LLVMBuildSelect(g->b, fcmp(g, LLVMRealOGT, a, zero), LLVMConstReal(t, 1),
                               LLVMBuildSelect(g->b, fcmp(g, LLVMRealOLT, a, zero), LLVMConstReal(t, -1), zero, ""),
                               "");
    case OP_STEP: return select01(g, t, fcmp(g, LLVMRealOGT, a, zero));
    case OP_POWC: return be_build_powc(g->b, t, a, n->value, module_pow, g);
    case OP_STOP_GRAD: return a;
    case OP_ADD: return LLVMBuildFAdd(g->b, a, b, "");
    case OP_SUB: return LLVMBuildFSub(g->b, a, b, "");
    case OP_MUL: return LLVMBuildFMul(g->b, a, b, "");
    case OP_DIV: return LLVMBuildFDiv(g->b, a, b, "");
    case OP_EQ:
        if (LLVMTypeOf(a) == g->i32)
            return select01(g, t, LLVMBuildICmp(g->b, LLVMIntEQ, a, b, ""));
        return select01(g, t, fcmp(g, LLVMRealOEQ, a, b));
    default:
        /* sin, cos, erf: no GPU code yet (docs/gpu.md) */
        return NULL;
    }
}

/* --- reductions, products, convolutions: loops over terms --- */

static LLVMValueRef load_slot(Gpu *g, LLVMValueRef slot)
{
    return LLVMBuildLoad2(g->b, LLVMGetAllocatedType(slot), slot, "");
}

/* sum, max or argmax of x over n->list's axes, at the result index idx. */
static LLVMValueRef reduce(Gpu *g, const IrNode *n, const LLVMValueRef *idx)
{
    ValueId x = n->arg[0];
    IrType tx = g->f->node[x].type;
    LLVMTypeRef t = gpu_elem_type(g, tx.dtype);
    bool reduced[IR_MAX_RANK] = {0};
    for (int i = 0; i < n->nlist; i++)
        reduced[n->list[i]] = true;
    LLVMValueRef acc = gpu_alloca(g, t, "acc"), best = gpu_alloca(g, g->i32, "best");
    LLVMBuildStore(g->b, LLVMConstReal(t, n->op == OP_REDUCE_SUM ? 0 : -INFINITY), acc);
    LLVMBuildStore(g->b, LLVMConstInt(g->i32, 0, 0), best);
    LLVMValueRef xi[IR_MAX_RANK], pos = NULL;
    GpuLoop loop[IR_MAX_RANK];
    int k = 0;
    for (int i = 0; i < tx.rank; i++) {
        if (reduced[i]) {
            xi[i] = gpu_loop_open(g, &loop[i], gpu_c64(g, 0), gpu_c64(g, tx.dim[i]), gpu_c64(g, 1));
            pos = xi[i];
        } else {
            xi[i] = idx[k++];
        }
    }
    LLVMValueRef v = gpu_elem(g, x, xi);
    if (!v)
        return NULL;
    LLVMValueRef cur = load_slot(g, acc);
    if (n->op == OP_REDUCE_SUM) {
        LLVMBuildStore(g->b, LLVMBuildFAdd(g->b, cur, v, ""), acc);
    } else {
        /* x > y, or x NaN and y not: the first maximum, NaN winning (ir/eval.c) */
        LLVMValueRef take = LLVMBuildOr(g->b, fcmp(g, LLVMRealOGT, v, cur),
                                        LLVMBuildAnd(g->b, fcmp(g, LLVMRealUNO, v, v), fcmp(g, LLVMRealORD, cur, cur), ""),
                                        "");
        LLVMBuildStore(g->b, LLVMBuildSelect(g->b, take, v, cur, ""), acc);
        LLVMValueRef p = LLVMBuildTrunc(g->b, pos ? pos : gpu_c64(g, 0), g->i32, "");
        LLVMBuildStore(g->b, LLVMBuildSelect(g->b, take, p, load_slot(g, best), ""), best);
    }
    for (int i = tx.rank - 1; i >= 0; i--)
        if (reduced[i])
            gpu_loop_close(g, &loop[i]);
    return load_slot(g, n->op == OP_ARGMAX ? best : acc);
}

static LLVMValueRef fmuladd(Gpu *g, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c)
{
    LLVMValueRef args[3] = {a, b, c};
    return gpu_intrinsic(g, "llvm.fmuladd", LLVMTypeOf(a), args, 3);
}

/* c[i, j] = sum_k a[i, k] b[k, j], k ascending. */
static LLVMValueRef matmul(Gpu *g, const IrNode *n, const LLVMValueRef *idx)
{
    LLVMTypeRef t = gpu_elem_type(g, n->type.dtype);
    int kd = g->f->node[n->arg[0]].type.dim[1];
    LLVMValueRef acc = gpu_alloca(g, t, "acc");
    LLVMBuildStore(g->b, LLVMConstReal(t, 0), acc);
    GpuLoop l;
    LLVMValueRef k = gpu_loop_open(g, &l, gpu_c64(g, 0), gpu_c64(g, kd), gpu_c64(g, 1));
    LLVMValueRef ai[2] = {idx[0], k}, bi[2] = {k, idx[1]};
    LLVMValueRef a = gpu_elem(g, n->arg[0], ai), b = a ? gpu_elem(g, n->arg[1], bi) : NULL;
    if (!b)
        return NULL;
    LLVMBuildStore(g->b, fmuladd(g, a, b, load_slot(g, acc)), acc);
    gpu_loop_close(g, &l);
    return load_slot(g, acc);
}

/* Whether 0 <= i < n (i64). */
static LLVMValueRef in_range(Gpu *g, LLVMValueRef i, int64_t n)
{
    return LLVMBuildICmp(g->b, LLVMIntULT, i, gpu_c64(g, n), "");
}

/* i clamped into [0, n). */
static LLVMValueRef clamp(Gpu *g, LLVMValueRef i, int64_t n)
{
    LLVMValueRef lo = LLVMBuildSelect(g->b, LLVMBuildICmp(g->b, LLVMIntSLT, i, gpu_c64(g, 0), ""), gpu_c64(g, 0), i, "");
    return LLVMBuildSelect(g->b, LLVMBuildICmp(g->b, LLVMIntSGE, lo, gpu_c64(g, n), ""), gpu_c64(g, n - 1), lo, "");
}

/* The element of x at idx where `ok`, else 0 (a padding zero): read at a
 * clamped index, so that no thread reads outside x. */
static LLVMValueRef elem_or_zero(Gpu *g, ValueId x, LLVMValueRef *idx, LLVMValueRef ok)
{
    IrType t = g->f->node[x].type;
    LLVMValueRef ci[IR_MAX_RANK];
    for (int i = 0; i < t.rank; i++)
        ci[i] = clamp(g, idx[i], t.dim[i]);
    LLVMValueRef v = gpu_elem(g, x, ci);
    return v ? LLVMBuildSelect(g->b, ok, v, LLVMConstReal(LLVMTypeOf(v), 0), "") : NULL;
}

/* The three convolutions (ir/ops.def), one result element each, summing
 * their terms with fmuladd over the loops below in index order. */
static LLVMValueRef conv(Gpu *g, const IrNode *n, const LLVMValueRef *idx)
{
    const IrFunc *f = g->f;
    IrType ta = f->node[n->arg[0]].type, tb = f->node[n->arg[1]].type, ty = n->type;
    int64_t s = n->list[IR_CONV_STRIDE], pad = n->list[IR_CONV_PAD];
    LLVMTypeRef t = gpu_elem_type(g, ty.dtype);
    LLVMValueRef acc = gpu_alloca(g, t, "acc");
    LLVMBuildStore(g->b, LLVMConstReal(t, 0), acc);
    GpuLoop l0, l1, l2;
    LLVMValueRef S = gpu_c64(g, s), P = gpu_c64(g, pad), one = gpu_c64(g, 1), zero = gpu_c64(g, 0);
    LLVMValueRef a = NULL, b = NULL;
    if (n->op == OP_CONV2D) {
        /* y[n,o,i,j] = sum_{c,p,q} x[n,c,i s+p-pad,j s+q-pad] w[o,c,p,q] */
        LLVMValueRef c = gpu_loop_open(g, &l0, zero, gpu_c64(g, ta.dim[1]), one);
        LLVMValueRef p = gpu_loop_open(g, &l1, zero, gpu_c64(g, tb.dim[2]), one);
        LLVMValueRef q = gpu_loop_open(g, &l2, zero, gpu_c64(g, tb.dim[3]), one);
        LLVMValueRef h = LLVMBuildSub(g->b, LLVMBuildAdd(g->b, LLVMBuildMul(g->b, idx[2], S, ""), p, ""), P, "");
        LLVMValueRef w = LLVMBuildSub(g->b, LLVMBuildAdd(g->b, LLVMBuildMul(g->b, idx[3], S, ""), q, ""), P, "");
        LLVMValueRef xi[4] = {idx[0], c, h, w}, wi[4] = {idx[1], c, p, q};
        a = elem_or_zero(g, n->arg[0], xi, LLVMBuildAnd(g->b, in_range(g, h, ta.dim[2]), in_range(g, w, ta.dim[3]), ""));
        b = a ? gpu_elem(g, n->arg[1], wi) : NULL;
    } else if (n->op == OP_CONV2D_GRAD_X) {
        /* dx[n,c,h,w] = sum_{o,p,q} g[n,o,(h+pad-p)/s,(w+pad-q)/s] w[o,c,p,q]
         * over the terms where those divide evenly and land inside g */
        LLVMValueRef o = gpu_loop_open(g, &l0, zero, gpu_c64(g, ta.dim[1]), one);
        LLVMValueRef p = gpu_loop_open(g, &l1, zero, gpu_c64(g, tb.dim[2]), one);
        LLVMValueRef q = gpu_loop_open(g, &l2, zero, gpu_c64(g, tb.dim[3]), one);
        LLVMValueRef hh = LLVMBuildSub(g->b, LLVMBuildAdd(g->b, idx[2], P, ""), p, "");
        LLVMValueRef ww = LLVMBuildSub(g->b, LLVMBuildAdd(g->b, idx[3], P, ""), q, "");
        LLVMValueRef ok = LLVMBuildAnd(g->b, LLVMBuildICmp(g->b, LLVMIntSGE, hh, zero, ""),
                                       LLVMBuildICmp(g->b, LLVMIntSGE, ww, zero, ""), "");
        ok = LLVMBuildAnd(g->b, ok, LLVMBuildICmp(g->b, LLVMIntEQ, LLVMBuildSRem(g->b, hh, S, ""), zero, ""), "");
        ok = LLVMBuildAnd(g->b, ok, LLVMBuildICmp(g->b, LLVMIntEQ, LLVMBuildSRem(g->b, ww, S, ""), zero, ""), "");
        LLVMValueRef i = LLVMBuildSDiv(g->b, hh, S, ""), j = LLVMBuildSDiv(g->b, ww, S, "");
        ok = LLVMBuildAnd(g->b, ok, LLVMBuildAnd(g->b, in_range(g, i, ta.dim[2]), in_range(g, j, ta.dim[3]), ""), "");
        LLVMValueRef gi[4] = {idx[0], o, i, j}, wi[4] = {o, idx[1], p, q};
        a = elem_or_zero(g, n->arg[0], gi, ok);
        b = a ? gpu_elem(g, n->arg[1], wi) : NULL;
    } else {
        /* dw[o,c,p,q] = sum_{n,i,j} x[n,c,i s+p-pad,j s+q-pad] g[n,o,i,j] */
        LLVMValueRef m = gpu_loop_open(g, &l0, zero, gpu_c64(g, ta.dim[0]), one);
        LLVMValueRef i = gpu_loop_open(g, &l1, zero, gpu_c64(g, tb.dim[2]), one);
        LLVMValueRef j = gpu_loop_open(g, &l2, zero, gpu_c64(g, tb.dim[3]), one);
        LLVMValueRef h = LLVMBuildSub(g->b, LLVMBuildAdd(g->b, LLVMBuildMul(g->b, i, S, ""), idx[2], ""), P, "");
        LLVMValueRef w = LLVMBuildSub(g->b, LLVMBuildAdd(g->b, LLVMBuildMul(g->b, j, S, ""), idx[3], ""), P, "");
        LLVMValueRef xi[4] = {m, idx[1], h, w}, gi[4] = {m, idx[0], i, j};
        a = elem_or_zero(g, n->arg[0], xi, LLVMBuildAnd(g->b, in_range(g, h, ta.dim[2]), in_range(g, w, ta.dim[3]), ""));
        b = a ? gpu_elem(g, n->arg[1], gi) : NULL;
    }
    if (!b)
        return NULL;
    LLVMBuildStore(g->b, fmuladd(g, a, b, load_slot(g, acc)), acc);
    gpu_loop_close(g, &l2);
    gpu_loop_close(g, &l1);
    gpu_loop_close(g, &l0);
    return load_slot(g, acc);
}

/* --- layout and the rest --- */

/* The operand index that layout node n reads for its result index idx. */
static void layout_index(Gpu *g, const IrNode *n, const LLVMValueRef *idx, LLVMValueRef *xi)
{
    IrType tx = g->f->node[n->arg[0]].type, ty = n->type;
    switch (n->op) {
    case OP_BROADCAST: {
        int lead = ty.rank - tx.rank;
        for (int i = 0; i < tx.rank; i++)
            xi[i] = tx.dim[i] == 1 ? gpu_c64(g, 0) : idx[i + lead];
        break;
    }
    case OP_TRANSPOSE:
        for (int i = 0; i < ty.rank; i++)
            xi[n->list[i]] = idx[i];
        break;
    case OP_SLICE:
        for (int i = 0; i < ty.rank; i++)
            xi[i] = LLVMBuildAdd(g->b, idx[i], gpu_c64(g, n->list[i]), "");
        break;
    default: /* RESHAPE: the same row-major position */
        gpu_unravel(g, tx, gpu_ravel(g, ty, idx), xi);
        break;
    }
}

/* a then b along axis list[0]: both read at clamped indices, one chosen. */
static LLVMValueRef concat(Gpu *g, const IrNode *n, const LLVMValueRef *idx)
{
    int ax = n->list[0], rank = n->type.rank;
    int64_t da = g->f->node[n->arg[0]].type.dim[ax], db = g->f->node[n->arg[1]].type.dim[ax];
    LLVMValueRef ia[IR_MAX_RANK], ib[IR_MAX_RANK];
    for (int i = 0; i < rank; i++)
        ia[i] = ib[i] = idx[i];
    ia[ax] = clamp(g, idx[ax], da);
    ib[ax] = clamp(g, LLVMBuildSub(g->b, idx[ax], gpu_c64(g, da), ""), db);
    LLVMValueRef a = gpu_elem(g, n->arg[0], ia), b = a ? gpu_elem(g, n->arg[1], ib) : NULL;
    if (!b)
        return NULL;
    return LLVMBuildSelect(g->b, LLVMBuildICmp(g->b, LLVMIntSLT, idx[ax], gpu_c64(g, da), ""), a, b, "");
}

LLVMValueRef gpu_compute(Gpu *g, ValueId v, const LLVMValueRef *idx)
{
    const IrNode *n = &g->f->node[v];
    LLVMValueRef x[2] = {NULL, NULL}, y = NULL, xi[IR_MAX_RANK];
    switch (ir_op_info[n->op].kind) {
    case KIND_UNARY:
    case KIND_BINARY:
        for (int i = 0; i < ir_op_info[n->op].arity; i++)
            if (!(x[i] = gpu_elem(g, n->arg[i], idx)))
                return NULL;
        y = map_value(g, n, x);
        break;
    case KIND_REDUCE: y = reduce(g, n, idx); break;
    case KIND_MATMUL: y = matmul(g, n, idx); break;
    case KIND_CONV: y = conv(g, n, idx); break;
    case KIND_LAYOUT:
        layout_index(g, n, idx, xi);
        return gpu_elem(g, n->arg[0], xi);
    case KIND_OTHER:
        if (n->op == OP_CONCAT) {
            y = concat(g, n, idx);
        } else if ((x[0] = gpu_elem(g, n->arg[0], idx))) {
            /* ONEHOT: label == the index along the class dim */
            LLVMValueRef cls = idx[n->type.rank - 1];
            y = select01(g, gpu_elem_type(g, n->type.dtype),
                         LLVMBuildICmp(g->b, LLVMIntEQ, LLVMBuildSExt(g->b, x[0], g->i64, ""), cls, ""));
        }
        break;
    case KIND_LEAF:
        if (n->op == OP_CONST)
            y = n->type.dtype == DT_I32 ? LLVMConstInt(g->i32, (unsigned long long)(long long)n->value, 1)
                                        : LLVMConstReal(gpu_elem_type(g, n->type.dtype), n->value);
        break;
    }
    if (!y && g->ok) {
        diag_error(g->d, no_loc, "the GPU target has no code for '%s' yet (in '@%s')", ir_op_info[n->op].name,
                   g->f->name);
        g->ok = false;
    }
    return y;
}

LLVMValueRef gpu_elem(Gpu *g, ValueId x, const LLVMValueRef *idx)
{
    const BeAccess *a = &g->plan->acc[x];
    switch (a->base) {
    case BE_NONE: return gpu_compute(g, x, idx);
    case BE_IMM:
        if (a->dtype == DT_I32)
            return LLVMConstInt(g->i32, (unsigned long long)(long long)a->imm, 1);
        return LLVMConstReal(gpu_elem_type(g, a->dtype), a->imm);
    default: return LLVMBuildLoad2(g->b, gpu_elem_type(g, a->dtype), gpu_addr(g, a, idx), "");
    }
}
