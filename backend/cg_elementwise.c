/* Elementwise code (cg.h): each op's element from its operands'
 * (elem_value), the loop nest of a map, the operands the plan fuses into
 * their reader's loop (computed there, element by element), and copies,
 * transposing ones through registers. */
#include "cg.h"

#include <math.h>
#include <string.h>

#include "powc.h"

static const SrcLoc no_loc = {0};

/* --- elementwise math --- */

/* A C math library function of one argument with no intrinsic (log1p, erf).
 * Declared as touching no memory: callers only pass arguments in the
 * function's domain, where it sets no errno. */
static LLVMValueRef libm1(Cg *cg, const char *name64, const char *name32, LLVMTypeRef t, LLVMValueRef x)
{
    const char *name = t == cg->f32 ? name32 : name64;
    LLVMTypeRef fty = LLVMFunctionType(t, &t, 1, 0);
    LLVMValueRef fn = LLVMGetNamedFunction(cg->mod, name);
    if (!fn) {
        fn = LLVMAddFunction(cg->mod, name, fty);
        cg_add_attr(cg, fn, LLVMAttributeFunctionIndex, "nounwind", 0);
        cg_add_attr(cg, fn, LLVMAttributeFunctionIndex, "willreturn", 0);
        cg_add_attr(cg, fn, LLVMAttributeFunctionIndex, "memory", 0);
    }
    return LLVMBuildCall2(cg->b, fty, fn, &x, 1, "");
}

/* 1 / (1 + e^-x), computed as r = 1/(1 + e^-|x|) and e^-|x| * r for x < 0
 * so that no exp overflows. */
static LLVMValueRef build_sigmoid(Cg *cg, LLVMTypeRef t, LLVMValueRef x)
{
    LLVMValueRef one = LLVMConstReal(t, 1);
    LLVMValueRef e = cg_call1(cg, "llvm.exp", t, LLVMBuildFNeg(cg->b, cg_call1(cg, "llvm.fabs", t, x), ""));
    LLVMValueRef r = LLVMBuildFDiv(cg->b, one, LLVMBuildFAdd(cg->b, one, e, ""), "");
    return LLVMBuildSelect(cg->b, cg_fcmp(cg, LLVMRealOGE, x, LLVMConstReal(t, 0)), r,
                           LLVMBuildFMul(cg->b, e, r, ""), "");
}

/* max(x, 0) + log1p(e^-|x|): no overflow for large |x|. */
static LLVMValueRef build_softplus(Cg *cg, LLVMTypeRef t, LLVMValueRef x)
{
    LLVMValueRef e = cg_call1(cg, "llvm.exp", t, LLVMBuildFNeg(cg->b, cg_call1(cg, "llvm.fabs", t, x), ""));
    LLVMValueRef l = libm1(cg, "log1p", "log1pf", t, e);
    return LLVMBuildFAdd(cg->b, cg_call2(cg, "llvm.maxnum", t, x, LLVMConstReal(t, 0)), l, "");
}

/* The general x^c: llvm.pow, one libm call per element. */
static LLVMValueRef libm_pow(void *cg, LLVMValueRef x, double c)
{
    LLVMTypeRef t = LLVMTypeOf(x);
    return cg_call2(cg, "llvm.pow", t, x, LLVMConstReal(t, c));
}

/* The constant c of type t: a real, or a vector of reals all c. */
static LLVMValueRef real_const(LLVMTypeRef t, double c)
{
    if (LLVMGetTypeKind(t) != LLVMVectorTypeKind)
        return LLVMConstReal(t, c);
    LLVMValueRef e[64], x = LLVMConstReal(LLVMGetElementType(t), c);
    unsigned n = LLVMGetVectorSize(t);
    for (unsigned i = 0; i < n; i++)
        e[i] = x;
    return LLVMConstVector(e, n);
}

static LLVMValueRef select01(Cg *cg, LLVMTypeRef t, LLVMValueRef cond)
{
    return LLVMBuildSelect(cg->b, cond, real_const(t, 1), real_const(t, 0), "");
}

/* The element of n's result from its operands' elements x[] (for ONEHOT,
 * from the label and `cls`, the index along the class dim), or the vector
 * of elements from operands' vectors (cg_vector_op's ops).  NULL for an op
 * that is not elementwise. */
static LLVMValueRef elem_value(Cg *cg, const IrNode *n, const LLVMValueRef *x, LLVMValueRef cls)
{
    LLVMTypeRef t = cg_elem_type(cg, n->type.dtype), xt = LLVMTypeOf(x[0]);
    if (LLVMGetTypeKind(xt) == LLVMVectorTypeKind)
        t = LLVMVectorType(t, LLVMGetVectorSize(xt));
    LLVMValueRef zero = real_const(t, 0);
    LLVMValueRef a = x[0], b = x[1];
    switch (n->op) {
    case OP_NEG: return LLVMBuildFNeg(cg->b, a, "");
    case OP_EXP: return cg_call1(cg, "llvm.exp", t, a);
    case OP_LOG: return cg_call1(cg, "llvm.log", t, a);
    case OP_SQRT: return cg_call1(cg, "llvm.sqrt", t, a);
    case OP_TANH: return cg_call1(cg, "llvm.tanh", t, a);
    case OP_SIGMOID: return build_sigmoid(cg, t, a);
    case OP_RELU: return LLVMBuildSelect(cg->b, cg_fcmp(cg, LLVMRealOGT, a, zero), a, zero, "");
    case OP_SOFTPLUS: return build_softplus(cg, t, a);
    case OP_SIN: return cg_call1(cg, "llvm.sin", t, a);
    case OP_COS: return cg_call1(cg, "llvm.cos", t, a);
    case OP_ABS: return cg_call1(cg, "llvm.fabs", t, a);
    case OP_ERF: return libm1(cg, "erf", "erff", t, a);
    case OP_SIGN:
        return LLVMBuildSelect(cg->b, cg_fcmp(cg, LLVMRealOGT, a, zero), LLVMConstReal(t, 1),
                               LLVMBuildSelect(cg->b, cg_fcmp(cg, LLVMRealOLT, a, zero),
                                               LLVMConstReal(t, -1), zero, ""), "");
    case OP_STEP: return select01(cg, t, cg_fcmp(cg, LLVMRealOGT, a, zero));
    case OP_POWC: return be_build_powc(cg->b, t, a, n->value, libm_pow, cg);
    case OP_STOP_GRAD: return a;
    case OP_ADD: return LLVMBuildFAdd(cg->b, a, b, "");
    case OP_SUB: return LLVMBuildFSub(cg->b, a, b, "");
    case OP_MUL: return LLVMBuildFMul(cg->b, a, b, "");
    case OP_DIV: return LLVMBuildFDiv(cg->b, a, b, "");
    case OP_EQ:
        if (LLVMTypeOf(a) == cg->i32)
            return select01(cg, t, LLVMBuildICmp(cg->b, LLVMIntEQ, a, b, ""));
        return select01(cg, t, cg_fcmp(cg, LLVMRealOEQ, a, b));
    case OP_ONEHOT:
        return select01(cg, t, LLVMBuildICmp(cg->b, LLVMIntEQ, LLVMBuildSExt(cg->b, a, cg->i64, ""), cls, ""));
    default:
        return NULL;
    }
}

/* --- fused operands, and the loops of maps --- */

bool cg_fused(const Cg *cg, ValueId x)
{
    return cg->plan->fused_into[x] >= 0;
}

/* Append to o, from o[*no] on, the operands the loop of v reads: its own
 * (in order), or with fused ones, each fused one's in its place, each
 * operand once (be_loop_leaves; a fused product's none: they come
 * first). */
void cg_fused_operands(const Cg *cg, ValueId v, Opnd *o, int *no)
{
    const IrNode *nd = &cg->f->node[v];
    bool fuses = false;
    for (int a = 0; a < ir_op_info[nd->op].arity; a++)
        fuses |= cg_fused(cg, nd->arg[a]);
    if (!fuses) {
        for (int a = 0; a < ir_op_info[nd->op].arity; a++)
            o[(*no)++] = (Opnd){.a = cg->plan->acc[nd->arg[a]], .t = cg->f->node[nd->arg[a]].type};
        return;
    }
    ValueId leaf[BE_FUSE_LEAVES];
    int nodes, n = be_loop_leaves(cg->f, cg->plan, v, leaf, BE_FUSE_LEAVES, &nodes);
    for (int i = 0; i < n; i++)
        if (!cg_fused(cg, leaf[i]))
            o[(*no)++] = (Opnd){.a = cg->plan->acc[leaf[i]], .t = cg->f->node[leaf[i]].type};
}

int cg_leaf_index(const Cg *cg, ValueId x)
{
    ValueId leaf[BE_FUSE_LEAVES];
    int nodes, n = be_loop_leaves(cg->f, cg->plan, cg->root, leaf, BE_FUSE_LEAVES, &nodes), k = 0;
    for (int i = 0; i < n && leaf[i] != x; i++)
        k += !cg_fused(cg, leaf[i]);
    return k;
}

/* v's element (or vector) from the operands the loop of cg->root reads,
 * x[] in cg_fused_operands' order, and the fused product's `prod` (the
 * sum of two products summed in its tiles); NULL for an op that is not
 * elementwise. */
LLVMValueRef cg_fused_value(Cg *cg, ValueId v, const LLVMValueRef *x, LLVMValueRef prod, LLVMValueRef cls)
{
    const IrNode *n = &cg->f->node[v];
    ValueId main, other;
    if (be_product_pair(cg->f, cg->plan, v, &main, &other))
        return prod;
    LLVMValueRef arg[2] = {NULL, NULL};
    for (int a = 0; a < ir_op_info[n->op].arity; a++) {
        ValueId y = n->arg[a];
        if (!cg_fused(cg, y))
            arg[a] = x[cg_leaf_index(cg, y)];
        else
            arg[a] = cg->f->node[y].op == OP_MATMUL ? prod : cg_fused_value(cg, y, x, prod, cls);
        if (!arg[a])
            return NULL;
    }
    return elem_value(cg, n, arg, cls);
}

/* dst = n(src...) elementwise over the shape (rank, dim), or a copy when n
 * is NULL; every access is over that shape.  When n is cg->root, its fused
 * operands are computed in the loop from theirs (cg_fused_operands). */
bool cg_emit_map(Cg *cg, const IrNode *n, int rank, const int *dim, Opnd *dst, int nsrc, const Opnd *src)
{
    Iter it = {.nacc = 1 + nsrc};
    for (int k = 0; k < rank; k++) {
        int64_t s[CG_MAX_ACC] = {dst->a.stride[k]};
        for (int i = 0; i < nsrc; i++)
            s[1 + i] = src[i].a.stride[k];
        cg_iter_add_dim(&it, dim[k], s);
    }
    int last = cg_iter_coalesce(&it, n && n->op == OP_ONEHOT);
    Loop loop[IR_MAX_RANK + 1];
    LLVMValueRef iv[IR_MAX_RANK + 1], x[CG_MAX_ACC] = {NULL};
    cg_nest_open(cg, &it, loop, iv);
    /* Element indices, one per distinct stride vector in memory. */
    LLVMValueRef idx[CG_MAX_ACC] = {NULL};
    for (int a = 0; a < it.nacc; a++) {
        if (!be_in_memory(a ? &src[a - 1].a : &dst->a))
            continue;
        for (int b = 0; b < a && !idx[a]; b++)
            if (idx[b] && !memcmp(it.stride[a], it.stride[b], sizeof(int64_t) * (size_t)it.rank))
                idx[a] = idx[b];
        if (!idx[a])
            idx[a] = cg_iter_index(cg, &it, a, iv);
    }
    for (int i = 0; i < nsrc; i++)
        x[i] = cg_load_at(cg, &src[i], idx[1 + i]);
    LLVMValueRef cls = last >= 0 ? iv[last] : cg_c64(cg, 0), y = x[0];
    if (n && cg->root >= 0 && n == &cg->f->node[cg->root]) {
        y = cg_fused_value(cg, cg->root, x, NULL, cls);
    } else if (n) {
        y = elem_value(cg, n, x, cls);
    }
    if (!y) {
        diag_error(cg->d, no_loc, "internal error: no elementwise code for '%s'", ir_op_info[n->op].name);
        return false;
    }
    cg_store_at(cg, dst, idx[0], y);
    cg_nest_close(cg, &it, loop);
    return true;
}

/* --- copies --- */

/* One round of emit_transpose's and emit_dot's, on rows a and b of w
 * lanes (r and r + h of a block): *lo gets, in each 2h lanes, a's first h
 * then b's first h; *hi a's last h then b's last h. */
void cg_shuffle_halves(Cg *cg, LLVMValueRef a, LLVMValueRef b, int h, int w, LLVMValueRef *lo, LLVMValueRef *hi)
{
    LLVMValueRef ml[8], mh[8];
    for (int c = 0; c < w; c++) {
        ml[c] = LLVMConstInt(cg->i32, (unsigned long long)(c & h ? w + c - h : c), 0);
        mh[c] = LLVMConstInt(cg->i32, (unsigned long long)(c & h ? w + c : c + h), 0);
    }
    *lo = LLVMBuildShuffleVector(cg->b, a, b, LLVMConstVector(ml, (unsigned)w), "");
    *hi = LLVMBuildShuffleVector(cg->b, a, b, LLVMConstVector(mh, (unsigned)w), "");
}

/* The copy dst[i, j] = src[i, j] over [I, J], dst at element i + j*ds and
 * src at i*ss + j: a transposition, with src dense along j and dst along
 * i.  Blocks of W x W elements (W: 32 bytes of them) go through registers:
 * W rows of src loaded as vectors, transposed by log2(W) rounds of
 * shuffles, each swapping one bit of the row index with the same bit of
 * the column index (the off-diagonal h x h blocks of every 2h x 2h one),
 * and stored as W rows of dst.  The edges past the last whole block are
 * copied element by element.  A scalar copy moves one element per
 * inserted or extracted lane instead. */
static void emit_transpose(Cg *cg, const Opnd *dst, const Opnd *src, int64_t I, int64_t J, int64_t ds, int64_t ss)
{
    int w = be_vector_lanes(src->a.dtype);
    int64_t ib = I / w * w, jb = J / w * w;
    LLVMTypeRef vt = LLVMVectorType(cg_elem_type(cg, src->a.dtype), (unsigned)w);
    Loop li, lj;
    LLVMValueRef i0 = LLVMBuildNSWMul(cg->b, cg_range_open(cg, &li, 0, ib / w), cg_c64(cg, w), "");
    LLVMValueRef j0 = LLVMBuildNSWMul(cg->b, cg_range_open(cg, &lj, 0, jb / w), cg_c64(cg, w), "");
    li.scalar = lj.scalar = true;           /* vectors already */
    LLVMValueRef v[8];
    for (int r = 0; r < w; r++)
        v[r] = cg_load_mem(cg, src, cg_idx_add(cg, cg_linear(cg, 1, &i0, &ss), cg_idx_add(cg, cg_c64(cg, r * ss), j0)),
                           vt);
    for (int h = w / 2; h >= 1; h /= 2)
        for (int r = 0; r < w; r++)
            if (!(r & h))
                cg_shuffle_halves(cg, v[r], v[r + h], h, w, &v[r], &v[r + h]);
    for (int c = 0; c < w; c++) {
        Opnd d = *dst;
        cg_store_at(cg, &d, cg_idx_add(cg, cg_linear(cg, 1, &j0, &ds), cg_idx_add(cg, cg_c64(cg, c * ds), i0)), v[c]);
    }
    cg_range_close(cg, &lj);
    cg_range_close(cg, &li);
    /* rows [ib, I), then columns [jb, J) of rows [0, ib) */
    Opnd de = *dst, se = *src;
    de.a.rank = se.a.rank = 2;
    de.a.stride[0] = 1, de.a.stride[1] = ds;
    se.a.stride[0] = ss, se.a.stride[1] = 1;
    Opnd d1 = de, s1 = se;
    d1.a.offset += ib, s1.a.offset += ib * ss;
    if (ib < I)
        cg_emit_map(cg, NULL, 2, (int[]){(int)(I - ib), (int)J}, &d1, 1, &s1);
    de.a.offset += jb * ds, se.a.offset += jb;
    if (ib > 0 && jb < J)
        cg_emit_map(cg, NULL, 2, (int[]){(int)ib, (int)(J - jb)}, &de, 1, &se);
}

/* dst = src elementwise over src's shape, dst written through `stride`
 * (a permuting copy). */
void cg_emit_copy_to(Cg *cg, const Opnd *dst, const int64_t *stride, const Opnd *src)
{
    Opnd d = *dst;
    d.t = src->t;
    d.a.rank = src->t.rank;
    memcpy(d.a.stride, stride, sizeof(int64_t) * (size_t)src->t.rank);
    Iter it = {.nacc = 2};
    for (int k = 0; k < src->t.rank; k++)
        cg_iter_add_dim(&it, src->t.dim[k], (int64_t[]){d.a.stride[k], src->a.stride[k]});
    cg_iter_coalesce(&it, false);
    int w = be_vector_lanes(src->a.dtype);
    if (it.rank == 2 && be_in_memory(&src->a) && be_in_memory(&d.a) && it.dim[0] >= w && it.dim[1] >= w) {
        int p = it.stride[1][1] == 1 ? 1 : it.stride[1][0] == 1 ? 0 : -1;     /* src dense along p */
        if (p >= 0 && it.stride[0][1 - p] == 1) {
            emit_transpose(cg, &d, src, it.dim[1 - p], it.dim[p], it.stride[0][p], it.stride[1][1 - p]);
            return;
        }
    }
    cg_emit_map(cg, NULL, src->t.rank, src->t.dim, &d, 1, src);
}

/* Zero all of o (in memory). */
void cg_emit_zero(Cg *cg, Opnd *o)
{
    Opnd zero = {.a = {.base = BE_IMM, .dtype = o->a.dtype, .imm = 0, .rank = o->t.rank}};
    cg_emit_map(cg, NULL, o->t.rank, o->t.dim, o, 1, &zero);
}
