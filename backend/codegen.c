/* IR functions to LLVM functions.
 *
 * Every IR function f becomes a public entry
 *
 *   void @f(ptr %in, ptr %out, ptr %arena)
 *
 * that loads in[i] and out[j] and then calls, in node order, one internal
 * noinline "value function" per computed value v, and one per output that
 * is copied in at the end:
 *
 *   internal void @f.OP.v(ptr noalias %y, ptr noalias readonly %a, ...)
 *
 * taking the address of its result's buffer and of each operand's buffer
 * (or an operand's element, for one-element values kept in registers; such
 * a result is returned instead).  A value's buffer and its operands' are
 * live at the same time, so the plan keeps them apart and `noalias` is
 * true: LLVM vectorises without runtime overlap checks.  Small functions
 * keep LLVM's loop analyses cheap (compile time grows linearly with the
 * nodes), and values whose code would be the same share one function.
 *
 * The plan (plan.c) says where each value's elements are; this file only
 * walks it.  Loops are plain counted loops with i64 induction variables and
 * static trip counts, dims merged where every access steps evenly across
 * them, so that elementwise code over dense data is one flat loop.
 * Reductions keep each result's sum in index order; matmul works on
 * register tiles of C.  No fast-math flags are set: results must match the
 * reference evaluator and be reproducible; only matmul uses llvm.fmuladd
 * (contraction). */
#include "codegen.h"
#include "plan.h"

#include <llvm-c/Analysis.h>
#include <llvm-c/DebugInfo.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ACC 3           /* accesses of one loop nest: a destination and two operands */
#define MM_ROWS 4           /* matmul register tile: rows of C */
#define MM_COLS 8           /* ... and columns, one vector */

typedef struct {
    LLVMContextRef ctx;
    LLVMModuleRef mod;
    LLVMBuilderRef b;           /* code of the value function being built */
    LLVMBuilderRef eb;          /* its entry block: allocas */
    LLVMBuilderRef top;         /* the public entry being built: the calls */
    LLVMValueRef fn;            /* the value function being built */
    const IrModule *m;
    const IrFunc *f;
    const BePlan *plan;
    LLVMValueRef *in, *out;     /* in the public entry: in[i] and out[j] */
    LLVMValueRef arena;
    LLVMValueRef *reg;          /* in the public entry: each BE_REG value's element */
    LLVMTypeRef i32, i64, f32, f64, ptr, void_;
    Diag *d;
    /* Value functions built so far, by what their code depends on (an
     * open-addressing table; keys live in `mem`). */
    Arena mem;
    uint64_t *fn_hash;
    unsigned char **fn_key;
    size_t *fn_klen;
    LLVMValueRef *fn_done;
    int fn_cap, fn_count;
} Cg;

/* The result (number 0) or an operand of one value function: the plan's
 * access over the shape it is read at, and where it is in the function
 * being built. */
typedef struct {
    BeAccess a;
    IrType t;                   /* the shape a is over */
    LLVMValueRef v;             /* memory: the buffer's address; BE_REG: the element */
} Opnd;

/* An iteration space: extents and, per access, the stride of each dim. */
typedef struct {
    int rank;
    int64_t dim[IR_MAX_RANK + 1];
    int nacc;
    int64_t stride[MAX_ACC][IR_MAX_RANK + 1];
} Iter;

typedef struct {
    LLVMBasicBlockRef head;
    LLVMValueRef iv;
    int64_t end;
    bool scalar;                /* no use vectorising it: tell LLVM not to try */
} Loop;

static const SrcLoc no_loc = {0};

/* --- types and constants --- */

static LLVMTypeRef elem_type(const Cg *cg, DType dt)
{
    return dt == DT_F32 ? cg->f32 : dt == DT_F64 ? cg->f64 : cg->i32;
}

static LLVMValueRef c64(const Cg *cg, int64_t v)
{
    return LLVMConstInt(cg->i64, (unsigned long long)v, 1);
}

static LLVMValueRef imm(const Cg *cg, DType dt, double v)
{
    if (dt == DT_I32)
        return LLVMConstInt(cg->i32, (unsigned long long)(long long)v, 1);
    return LLVMConstReal(elem_type(cg, dt), v);
}

/* --- calls --- */

static LLVMValueRef intrinsic(Cg *cg, const char *name, LLVMTypeRef t, LLVMValueRef *args, unsigned n)
{
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    LLVMValueRef fn = LLVMGetIntrinsicDeclaration(cg->mod, id, &t, 1);
    LLVMTypeRef fty = LLVMIntrinsicGetType(cg->ctx, id, &t, 1);
    return LLVMBuildCall2(cg->b, fty, fn, args, n, "");
}

static LLVMValueRef call1(Cg *cg, const char *name, LLVMTypeRef t, LLVMValueRef x)
{
    return intrinsic(cg, name, t, &x, 1);
}

static LLVMValueRef call2(Cg *cg, const char *name, LLVMTypeRef t, LLVMValueRef x, LLVMValueRef y)
{
    LLVMValueRef args[2] = {x, y};
    return intrinsic(cg, name, t, args, 2);
}

static void add_attr(Cg *cg, LLVMValueRef fn, LLVMAttributeIndex at, const char *name, uint64_t val)
{
    unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
    LLVMAddAttributeAtIndex(fn, at, LLVMCreateEnumAttribute(cg->ctx, kind, val));
}

/* A C math library function of one argument with no intrinsic (log1p).
 * Declared as touching no memory: callers only pass arguments in the
 * function's domain, where it sets no errno. */
static LLVMValueRef libm1(Cg *cg, const char *name64, const char *name32, LLVMTypeRef t, LLVMValueRef x)
{
    const char *name = t == cg->f32 ? name32 : name64;
    LLVMTypeRef fty = LLVMFunctionType(t, &t, 1, 0);
    LLVMValueRef fn = LLVMGetNamedFunction(cg->mod, name);
    if (!fn) {
        fn = LLVMAddFunction(cg->mod, name, fty);
        add_attr(cg, fn, LLVMAttributeFunctionIndex, "nounwind", 0);
        add_attr(cg, fn, LLVMAttributeFunctionIndex, "willreturn", 0);
        add_attr(cg, fn, LLVMAttributeFunctionIndex, "memory", 0);
    }
    return LLVMBuildCall2(cg->b, fty, fn, &x, 1, "");
}

/* --- loops --- */

/* Opens `for (iv = start; iv < end; iv++)`, start < end, in a fresh block. */
static LLVMValueRef loop_open(Cg *cg, Loop *l, int64_t start, int64_t end)
{
    LLVMBasicBlockRef pre = LLVMGetInsertBlock(cg->b);
    l->head = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "loop");
    l->end = end;
    l->scalar = false;
    LLVMBuildBr(cg->b, l->head);
    LLVMPositionBuilderAtEnd(cg->b, l->head);
    l->iv = LLVMBuildPhi(cg->b, cg->i64, "i");
    LLVMValueRef s = c64(cg, start);
    LLVMAddIncoming(l->iv, &s, &pre, 1);
    return l->iv;
}

/* Loop metadata that turns LLVM's loop vectoriser off for one loop: a
 * distinct self-referencing loop ID holding llvm.loop.vectorize.enable. */
static LLVMValueRef loop_no_vectorize(Cg *cg)
{
    static const char hint[] = "llvm.loop.vectorize.enable";
    LLVMMetadataRef ops[2] = {
        LLVMMDStringInContext2(cg->ctx, hint, sizeof hint - 1),
        LLVMValueAsMetadata(LLVMConstInt(LLVMInt1TypeInContext(cg->ctx), 0, 0)),
    };
    LLVMMetadataRef self = LLVMTemporaryMDNode(cg->ctx, NULL, 0);
    LLVMMetadataRef id_ops[2] = {self, LLVMMDNodeInContext2(cg->ctx, ops, 2)};
    LLVMMetadataRef id = LLVMMDNodeInContext2(cg->ctx, id_ops, 2);
    LLVMMetadataReplaceAllUsesWith(self, id);
    return LLVMMetadataAsValue(cg->ctx, id);
}

static void loop_close(Cg *cg, Loop *l)
{
    LLVMValueRef next = LLVMBuildNUWAdd(cg->b, l->iv, c64(cg, 1), "i.next");
    LLVMSetNSW(next, 1);
    LLVMValueRef more = LLVMBuildICmp(cg->b, LLVMIntULT, next, c64(cg, l->end), "");
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(cg->b);
    LLVMBasicBlockRef exit = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "done");
    LLVMValueRef br = LLVMBuildCondBr(cg->b, more, l->head, exit);
    if (l->scalar)
        LLVMSetMetadata(br, LLVMGetMDKindIDInContext(cg->ctx, "llvm.loop", 9), loop_no_vectorize(cg));
    LLVMAddIncoming(l->iv, &next, &latch, 1);
    LLVMPositionBuilderAtEnd(cg->b, exit);
}

/* An induction variable over [start, end): a loop when that holds more than
 * one value, else the constant start.  Close it with range_close. */
static LLVMValueRef range_open(Cg *cg, Loop *l, int64_t start, int64_t end)
{
    l->head = NULL;
    return end - start > 1 ? loop_open(cg, l, start, end) : c64(cg, start);
}

static void range_close(Cg *cg, Loop *l)
{
    if (l->head)
        loop_close(cg, l);
}

static void nest_open(Cg *cg, const Iter *it, Loop *loop, LLVMValueRef *iv)
{
    for (int i = 0; i < it->rank; i++)
        iv[i] = loop_open(cg, &loop[i], 0, it->dim[i]);
}

static void nest_close(Cg *cg, const Iter *it, Loop *loop)
{
    for (int i = it->rank - 1; i >= 0; i--)
        loop_close(cg, &loop[i]);
}

/* --- iteration spaces --- */

static void iter_add_dim(Iter *it, int64_t dim, const int64_t *stride)
{
    it->dim[it->rank] = dim;
    for (int a = 0; a < it->nacc; a++)
        it->stride[a][it->rank] = stride[a];
    it->rank++;
}

/* Drops extent-1 dims and merges each dim into the one inside it when every
 * access steps across both evenly (stride[k] == stride[k+1] * dim[k+1]),
 * so dense data becomes one flat loop.  With keep_last the original last
 * dim stays a loop of its own; returns its position then (or -1 when it
 * had extent 1). */
static int iter_coalesce(Iter *it, bool keep_last)
{
    int64_t dim[IR_MAX_RANK + 1], st[MAX_ACC][IR_MAX_RANK + 1];
    int n = 0, last = -1;     /* groups, innermost first */
    for (int k = it->rank - 1; k >= 0; k--) {
        if (it->dim[k] == 1)
            continue;
        bool merge = n > 0 && !(keep_last && last == n - 1);
        for (int a = 0; merge && a < it->nacc; a++)
            merge = it->stride[a][k] == st[a][n - 1] * dim[n - 1];
        if (merge) {
            dim[n - 1] *= it->dim[k];
            continue;
        }
        dim[n] = it->dim[k];
        for (int a = 0; a < it->nacc; a++)
            st[a][n] = it->stride[a][k];
        if (keep_last && k == it->rank - 1)
            last = n;
        n++;
    }
    it->rank = n;
    for (int i = 0; i < n; i++) {
        it->dim[i] = dim[n - 1 - i];
        for (int a = 0; a < it->nacc; a++)
            it->stride[a][i] = st[a][n - 1 - i];
    }
    return last < 0 ? -1 : n - 1 - last;
}

/* a + b for element indices, without adding a constant 0. */
static LLVMValueRef idx_add(Cg *cg, LLVMValueRef a, LLVMValueRef b)
{
    if (LLVMIsAConstantInt(a) && !LLVMConstIntGetSExtValue(a))
        return b;
    if (LLVMIsAConstantInt(b) && !LLVMConstIntGetSExtValue(b))
        return a;
    return LLVMBuildNSWAdd(cg->b, a, b, "");
}

/* sum of iv[i] * stride[i], outer terms first so that LICM can hoist them. */
static LLVMValueRef linear(Cg *cg, int n, const LLVMValueRef *iv, const int64_t *stride)
{
    LLVMValueRef idx = NULL;
    for (int i = 0; i < n; i++) {
        if (stride[i] == 0)
            continue;
        LLVMValueRef t = stride[i] == 1 ? iv[i] : LLVMBuildNSWMul(cg->b, iv[i], c64(cg, stride[i]), "");
        idx = idx ? idx_add(cg, idx, t) : t;
    }
    return idx ? idx : c64(cg, 0);
}

/* --- element access --- */

static bool in_memory(const BeAccess *a)
{
    return a->base == BE_INPUT || a->base == BE_OUTPUT || a->base == BE_ARENA;
}

/* The element of o at element index idx (built only for memory). */
static LLVMValueRef load_at(Cg *cg, const Opnd *o, LLVMValueRef idx)
{
    if (o->a.base == BE_IMM)
        return imm(cg, o->a.dtype, o->a.imm);
    if (o->a.base == BE_REG)
        return o->v;
    LLVMTypeRef t = elem_type(cg, o->a.dtype);
    if (o->a.offset)
        idx = idx_add(cg, idx, c64(cg, o->a.offset));
    LLVMValueRef v = LLVMBuildLoad2(cg->b, t, LLVMBuildInBoundsGEP2(cg->b, t, o->v, &idx, 1, ""), "");
    LLVMSetAlignment(v, (unsigned)ir_dtype_size(o->a.dtype));
    return v;
}

static void store_at(Cg *cg, Opnd *o, LLVMValueRef idx, LLVMValueRef v)
{
    if (o->a.base == BE_REG) {
        o->v = v;
        return;
    }
    LLVMTypeRef t = elem_type(cg, o->a.dtype);
    if (o->a.offset)
        idx = idx_add(cg, idx, c64(cg, o->a.offset));
    LLVMValueRef s = LLVMBuildStore(cg->b, v, LLVMBuildInBoundsGEP2(cg->b, t, o->v, &idx, 1, ""));
    LLVMSetAlignment(s, (unsigned)ir_dtype_size(o->a.dtype));
}

/* Access number `a` of it at the loop's induction variables. */
static LLVMValueRef iter_index(Cg *cg, const Iter *it, int a, const LLVMValueRef *iv)
{
    return linear(cg, it->rank, iv, it->stride[a]);
}

static LLVMValueRef iter_load(Cg *cg, const Iter *it, int a, const Opnd *o, const LLVMValueRef *iv)
{
    return load_at(cg, o, in_memory(&o->a) ? iter_index(cg, it, a, iv) : NULL);
}

static LLVMValueRef entry_alloca(Cg *cg, LLVMTypeRef t, const char *name)
{
    return LLVMBuildAlloca(cg->eb, t, name);
}

/* --- elementwise math --- */

static LLVMValueRef fcmp(Cg *cg, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b)
{
    return LLVMBuildFCmp(cg->b, p, a, b, "");
}

/* 1 / (1 + e^-x), computed as r = 1/(1 + e^-|x|) and e^-|x| * r for x < 0
 * so that no exp overflows. */
static LLVMValueRef build_sigmoid(Cg *cg, LLVMTypeRef t, LLVMValueRef x)
{
    LLVMValueRef one = LLVMConstReal(t, 1);
    LLVMValueRef e = call1(cg, "llvm.exp", t, LLVMBuildFNeg(cg->b, call1(cg, "llvm.fabs", t, x), ""));
    LLVMValueRef r = LLVMBuildFDiv(cg->b, one, LLVMBuildFAdd(cg->b, one, e, ""), "");
    return LLVMBuildSelect(cg->b, fcmp(cg, LLVMRealOGE, x, LLVMConstReal(t, 0)), r,
                           LLVMBuildFMul(cg->b, e, r, ""), "");
}

/* max(x, 0) + log1p(e^-|x|): no overflow for large |x|. */
static LLVMValueRef build_softplus(Cg *cg, LLVMTypeRef t, LLVMValueRef x)
{
    LLVMValueRef e = call1(cg, "llvm.exp", t, LLVMBuildFNeg(cg->b, call1(cg, "llvm.fabs", t, x), ""));
    LLVMValueRef l = libm1(cg, "log1p", "log1pf", t, e);
    return LLVMBuildFAdd(cg->b, call2(cg, "llvm.maxnum", t, x, LLVMConstReal(t, 0)), l, "");
}

/* x^c: repeated squaring for small integer c, sqrt for c = +-1/2 (with
 * pow's answers at -0 and -inf), llvm.pow otherwise. */
static LLVMValueRef build_powc(Cg *cg, LLVMTypeRef t, LLVMValueRef x, double c)
{
    LLVMValueRef one = LLVMConstReal(t, 1);
    LLVMValueRef y;
    if (fabs(c) == 0.5) {
        y = LLVMBuildFAdd(cg->b, call1(cg, "llvm.sqrt", t, x), LLVMConstReal(t, 0), "");
        y = LLVMBuildSelect(cg->b, fcmp(cg, LLVMRealOEQ, x, LLVMConstReal(t, -INFINITY)),
                            LLVMConstReal(t, INFINITY), y, "");
    } else if (c == nearbyint(c) && fabs(c) <= 16) {
        int k = (int)fabs(c);
        LLVMValueRef p = x;
        y = NULL;
        while (k) {
            if (k & 1)
                y = y ? LLVMBuildFMul(cg->b, y, p, "") : p;
            k >>= 1;
            if (k)
                p = LLVMBuildFMul(cg->b, p, p, "");
        }
        if (!y)
            return one;
    } else {
        return call2(cg, "llvm.pow", t, x, LLVMConstReal(t, c));
    }
    return c < 0 ? LLVMBuildFDiv(cg->b, one, y, "") : y;
}

static LLVMValueRef select01(Cg *cg, LLVMTypeRef t, LLVMValueRef cond)
{
    return LLVMBuildSelect(cg->b, cond, LLVMConstReal(t, 1), LLVMConstReal(t, 0), "");
}

/* The element of n's result from its operands' elements x[] (for ONEHOT,
 * from the label and `cls`, the index along the class dim).  NULL for an op
 * that is not elementwise. */
static LLVMValueRef elem_value(Cg *cg, const IrNode *n, const LLVMValueRef *x, LLVMValueRef cls)
{
    LLVMTypeRef t = elem_type(cg, n->type.dtype);
    LLVMValueRef zero = LLVMConstReal(t, 0);
    LLVMValueRef a = x[0], b = x[1];
    switch (n->op) {
    case OP_NEG: return LLVMBuildFNeg(cg->b, a, "");
    case OP_EXP: return call1(cg, "llvm.exp", t, a);
    case OP_LOG: return call1(cg, "llvm.log", t, a);
    case OP_SQRT: return call1(cg, "llvm.sqrt", t, a);
    case OP_TANH: return call1(cg, "llvm.tanh", t, a);
    case OP_SIGMOID: return build_sigmoid(cg, t, a);
    case OP_RELU: return LLVMBuildSelect(cg->b, fcmp(cg, LLVMRealOGT, a, zero), a, zero, "");
    case OP_SOFTPLUS: return build_softplus(cg, t, a);
    case OP_SIN: return call1(cg, "llvm.sin", t, a);
    case OP_COS: return call1(cg, "llvm.cos", t, a);
    case OP_ABS: return call1(cg, "llvm.fabs", t, a);
    case OP_SIGN:
        return LLVMBuildSelect(cg->b, fcmp(cg, LLVMRealOGT, a, zero), LLVMConstReal(t, 1),
                               LLVMBuildSelect(cg->b, fcmp(cg, LLVMRealOLT, a, zero),
                                               LLVMConstReal(t, -1), zero, ""), "");
    case OP_STEP: return select01(cg, t, fcmp(cg, LLVMRealOGT, a, zero));
    case OP_POWC: return build_powc(cg, t, a, n->value);
    case OP_STOP_GRAD: return a;
    case OP_ADD: return LLVMBuildFAdd(cg->b, a, b, "");
    case OP_SUB: return LLVMBuildFSub(cg->b, a, b, "");
    case OP_MUL: return LLVMBuildFMul(cg->b, a, b, "");
    case OP_DIV: return LLVMBuildFDiv(cg->b, a, b, "");
    case OP_EQ:
        if (LLVMTypeOf(a) == cg->i32)
            return select01(cg, t, LLVMBuildICmp(cg->b, LLVMIntEQ, a, b, ""));
        return select01(cg, t, fcmp(cg, LLVMRealOEQ, a, b));
    case OP_ONEHOT:
        return select01(cg, t, LLVMBuildICmp(cg->b, LLVMIntEQ, LLVMBuildSExt(cg->b, a, cg->i64, ""), cls, ""));
    default:
        return NULL;
    }
}

/* --- loop nests for each kind of op --- */

/* dst = n(src...) elementwise over the shape (rank, dim), or a copy when n
 * is NULL; every access is over that shape. */
static bool emit_map(Cg *cg, const IrNode *n, int rank, const int *dim, Opnd *dst, int nsrc, const Opnd *src)
{
    Iter it = {.nacc = 1 + nsrc};
    for (int k = 0; k < rank; k++) {
        int64_t s[MAX_ACC] = {dst->a.stride[k]};
        for (int i = 0; i < nsrc; i++)
            s[1 + i] = src[i].a.stride[k];
        iter_add_dim(&it, dim[k], s);
    }
    int last = iter_coalesce(&it, n && n->op == OP_ONEHOT);
    Loop loop[IR_MAX_RANK + 1];
    LLVMValueRef iv[IR_MAX_RANK + 1], x[2] = {NULL, NULL};
    nest_open(cg, &it, loop, iv);
    /* Element indices, one per distinct stride vector in memory. */
    LLVMValueRef idx[MAX_ACC] = {NULL};
    for (int a = 0; a < it.nacc; a++) {
        if (!in_memory(a ? &src[a - 1].a : &dst->a))
            continue;
        for (int b = 0; b < a && !idx[a]; b++)
            if (idx[b] && !memcmp(it.stride[a], it.stride[b], sizeof(int64_t) * (size_t)it.rank))
                idx[a] = idx[b];
        if (!idx[a])
            idx[a] = iter_index(cg, &it, a, iv);
    }
    for (int i = 0; i < nsrc; i++)
        x[i] = load_at(cg, &src[i], idx[1 + i]);
    LLVMValueRef y = n ? elem_value(cg, n, x, last >= 0 ? iv[last] : c64(cg, 0)) : x[0];
    if (!y) {
        diag_error(cg->d, no_loc, "internal error: no elementwise code for '%s'", ir_op_info[n->op].name);
        return false;
    }
    store_at(cg, dst, idx[0], y);
    nest_close(cg, &it, loop);
    return true;
}

/* The running max takes x when x > m or x is NaN, unless m is NaN already
 * (NaN wins, the first max and the first NaN stay). */
static LLVMValueRef max_takes(Cg *cg, LLVMValueRef x, LLVMValueRef m)
{
    return LLVMBuildAnd(cg->b, fcmp(cg, LLVMRealUGT, x, m), fcmp(cg, LLVMRealORD, m, m), "");
}

/* Reduction with a reduced dim innermost (and every ARGMAX): for each kept
 * index, a register accumulates over the reduced indices in row-major order.
 * ys: the result's strides over the operand's dims. */
static void emit_reduce_inner(Cg *cg, const IrNode *n, Opnd *y, const Opnd *x, const int64_t *ys, const bool *red)
{
    LLVMTypeRef t = elem_type(cg, x->a.dtype);
    Iter kept = {.nacc = 2}, over = {.nacc = 1};
    for (int k = 0; k < x->t.rank; k++) {
        int64_t s[2] = {ys[k], x->a.stride[k]};
        if (red[k])
            iter_add_dim(&over, x->t.dim[k], &s[1]);
        else
            iter_add_dim(&kept, x->t.dim[k], s);
    }
    iter_coalesce(&kept, false);
    iter_coalesce(&over, false);
    bool is_arg = n->op == OP_ARGMAX;
    LLVMValueRef acc = entry_alloca(cg, t, "acc");
    LLVMValueRef pos = is_arg ? entry_alloca(cg, cg->i32, "pos") : NULL;

    Loop lk[IR_MAX_RANK + 1], lr[IR_MAX_RANK + 1];
    LLVMValueRef ik[IR_MAX_RANK + 1], ir[IR_MAX_RANK + 1];
    nest_open(cg, &kept, lk, ik);
    LLVMValueRef yo = iter_index(cg, &kept, 0, ik), xo = iter_index(cg, &kept, 1, ik);
    LLVMBuildStore(cg->b, LLVMConstReal(t, n->op == OP_REDUCE_SUM ? 0 : -INFINITY), acc);
    if (is_arg)
        LLVMBuildStore(cg->b, LLVMConstInt(cg->i32, 0, 0), pos);
    nest_open(cg, &over, lr, ir);
    LLVMValueRef xi = in_memory(&x->a) ? idx_add(cg, xo, iter_index(cg, &over, 0, ir)) : NULL;
    LLVMValueRef e = load_at(cg, x, xi);
    LLVMValueRef m = LLVMBuildLoad2(cg->b, t, acc, "");
    if (n->op == OP_REDUCE_SUM) {
        LLVMBuildStore(cg->b, LLVMBuildFAdd(cg->b, m, e, ""), acc);
    } else {
        LLVMValueRef take = max_takes(cg, e, m);
        LLVMBuildStore(cg->b, LLVMBuildSelect(cg->b, take, e, m, ""), acc);
        if (is_arg) {
            /* The axis is the one reduced dim: its loop (if any) counts the position. */
            LLVMValueRef here = over.rank ? LLVMBuildTrunc(cg->b, ir[0], cg->i32, "") : LLVMConstInt(cg->i32, 0, 0);
            LLVMValueRef p = LLVMBuildLoad2(cg->b, cg->i32, pos, "");
            LLVMBuildStore(cg->b, LLVMBuildSelect(cg->b, take, here, p, ""), pos);
        }
    }
    for (int i = 0; i < over.rank; i++)
        lr[i].scalar = true;        /* a running sum or max: sequential */
    nest_close(cg, &over, lr);
    LLVMValueRef r = is_arg ? LLVMBuildLoad2(cg->b, cg->i32, pos, "") : LLVMBuildLoad2(cg->b, t, acc, "");
    store_at(cg, y, yo, r);
    nest_close(cg, &kept, lk);
}

/* Reduction with a kept dim innermost: the result starts at the identity and
 * each operand row is folded into it, so the inner loop runs over dense
 * independent lanes (vectorisable without reassociation; each result still
 * sums in row-major order of the reduced indices). */
static void emit_reduce_outer(Cg *cg, const IrNode *n, Opnd *y, const Opnd *x, const int64_t *ys)
{
    bool sum = n->op == OP_REDUCE_SUM;
    Opnd init = {.a = {.base = BE_IMM, .dtype = x->a.dtype, .imm = sum ? 0 : -INFINITY, .rank = y->t.rank}};
    emit_map(cg, NULL, y->t.rank, y->t.dim, y, 1, &init);

    Iter it = {.nacc = 2};
    for (int k = 0; k < x->t.rank; k++) {
        int64_t s[2] = {ys[k], x->a.stride[k]};
        iter_add_dim(&it, x->t.dim[k], s);
    }
    iter_coalesce(&it, false);
    Loop loop[IR_MAX_RANK + 1];
    LLVMValueRef iv[IR_MAX_RANK + 1];
    nest_open(cg, &it, loop, iv);
    LLVMValueRef yi = iter_index(cg, &it, 0, iv);
    LLVMValueRef e = iter_load(cg, &it, 1, x, iv);
    LLVMValueRef m = load_at(cg, y, yi);
    LLVMValueRef r = sum ? LLVMBuildFAdd(cg->b, m, e, "") : LLVMBuildSelect(cg->b, max_takes(cg, e, m), e, m, "");
    store_at(cg, y, yi, r);
    nest_close(cg, &it, loop);
}

static void emit_reduce(Cg *cg, const IrNode *n, Opnd *y, const Opnd *x)
{
    bool red[IR_MAX_RANK] = {false};
    for (int i = 0; i < n->nlist; i++)
        red[n->list[i]] = true;
    /* The result's strides over the operand's dims: 0 along reduced ones. */
    int64_t ys[IR_MAX_RANK];
    int last = -1;
    for (int k = 0, j = 0; k < x->t.rank; k++) {
        ys[k] = red[k] ? 0 : y->a.stride[j++];
        if (x->t.dim[k] != 1)
            last = k;
    }
    if (n->op == OP_ARGMAX || last < 0 || red[last])
        emit_reduce_inner(cg, n, y, x, ys, red);
    else
        emit_reduce_outer(cg, n, y, x, ys);
}

/* Element (i, j) of a matrix operand. */
static LLVMValueRef mat_load(Cg *cg, const Opnd *o, LLVMValueRef i, LLVMValueRef j)
{
    LLVMValueRef iv[2] = {i, j};
    return load_at(cg, o, in_memory(&o->a) ? linear(cg, 2, iv, o->a.stride) : NULL);
}

static LLVMValueRef mat_index(Cg *cg, const Opnd *o, LLVMValueRef i, LLVMValueRef j)
{
    LLVMValueRef iv[2] = {i, j};
    return in_memory(&o->a) ? linear(cg, 2, iv, o->a.stride) : NULL;
}

/* A vector of n copies of x (x itself when n is 1). */
static LLVMValueRef splat(Cg *cg, LLVMValueRef x, int n)
{
    if (n == 1)
        return x;
    LLVMTypeRef vt = LLVMVectorType(LLVMTypeOf(x), (unsigned)n);
    LLVMValueRef v = LLVMBuildInsertElement(cg->b, LLVMGetPoison(vt), x, c64(cg, 0), "");
    return LLVMBuildShuffleVector(cg->b, v, LLVMGetPoison(vt), LLVMConstNull(LLVMVectorType(cg->i32, (unsigned)n)), "");
}

/* Elements (i, j .. j+n) of a matrix operand as a vector (n = 1: a scalar):
 * one load where the row is dense, else one load per element. */
static LLVMValueRef mat_row(Cg *cg, const Opnd *o, LLVMValueRef i, LLVMValueRef j, int n)
{
    if (n == 1 || !in_memory(&o->a) || o->a.stride[1] == 0)
        return splat(cg, mat_load(cg, o, i, j), n);
    LLVMTypeRef t = elem_type(cg, o->a.dtype), vt = LLVMVectorType(t, (unsigned)n);
    if (o->a.stride[1] == 1) {
        LLVMValueRef idx = mat_index(cg, o, i, j);
        if (o->a.offset)
            idx = idx_add(cg, idx, c64(cg, o->a.offset));
        LLVMValueRef v = LLVMBuildLoad2(cg->b, vt, LLVMBuildInBoundsGEP2(cg->b, t, o->v, &idx, 1, ""), "");
        LLVMSetAlignment(v, (unsigned)ir_dtype_size(o->a.dtype));
        return v;
    }
    LLVMValueRef v = LLVMGetPoison(vt);
    for (int l = 0; l < n; l++) {
        LLVMValueRef jl = l ? LLVMBuildNUWAdd(cg->b, j, c64(cg, l), "") : j;
        v = LLVMBuildInsertElement(cg->b, v, mat_load(cg, o, i, jl), c64(cg, l), "");
    }
    return v;
}

/* Store v as elements (i, j .. j+n) of the dense (or register) result. */
static void mat_store_row(Cg *cg, Opnd *C, LLVMValueRef i, LLVMValueRef j, int n, LLVMValueRef v)
{
    if (n == 1) {
        store_at(cg, C, mat_index(cg, C, i, j), v);
        return;
    }
    LLVMValueRef idx = mat_index(cg, C, i, j);
    if (C->a.offset)
        idx = idx_add(cg, idx, c64(cg, C->a.offset));
    LLVMValueRef s = LLVMBuildStore(cg->b, v, LLVMBuildInBoundsGEP2(cg->b, elem_type(cg, C->a.dtype), C->v, &idx, 1, ""));
    LLVMSetAlignment(s, (unsigned)ir_dtype_size(C->a.dtype));
}

/* One tile of C = A @ B: rows i0 .. i0+mr, columns j0 .. j0+nr (nr is
 * MM_COLS, as vectors, or 1).  Each element starts as A[i,0] * B[0,j] and
 * takes fmuladd(A[i,k], B[k,j], .) for k = 1 .. K-1 in order; the mr
 * accumulators stay in registers and are independent, so the multiply-adds
 * overlap, and each row of B is loaded once for mr rows of A. */
static void emit_mm_tile(Cg *cg, Opnd *C, const Opnd *A, const Opnd *B, LLVMValueRef i0, LLVMValueRef j0,
                         int mr, int nr)
{
    int64_t K = A->t.dim[1];
    LLVMTypeRef t = elem_type(cg, C->a.dtype), vt = nr > 1 ? LLVMVectorType(t, (unsigned)nr) : t;
    LLVMValueRef i[MM_ROWS], s[MM_ROWS], acc[MM_ROWS], zero = c64(cg, 0);
    LLVMValueRef b = mat_row(cg, B, zero, j0, nr);
    for (int r = 0; r < mr; r++) {
        i[r] = r ? LLVMBuildNUWAdd(cg->b, i0, c64(cg, r), "") : i0;
        s[r] = LLVMBuildFMul(cg->b, splat(cg, mat_load(cg, A, i[r], zero), nr), b, "");
    }
    if (K > 1) {
        for (int r = 0; r < mr; r++) {
            acc[r] = entry_alloca(cg, vt, "acc");
            LLVMBuildStore(cg->b, s[r], acc[r]);
        }
        Loop lk;
        LLVMValueRef k = loop_open(cg, &lk, 1, K);
        b = mat_row(cg, B, k, j0, nr);
        for (int r = 0; r < mr; r++) {
            LLVMValueRef args[3] = {splat(cg, mat_load(cg, A, i[r], k), nr), b, LLVMBuildLoad2(cg->b, vt, acc[r], "")};
            LLVMBuildStore(cg->b, intrinsic(cg, "llvm.fmuladd", vt, args, 3), acc[r]);
        }
        lk.scalar = true;           /* already vectors, and sequential in k */
        loop_close(cg, &lk);
        for (int r = 0; r < mr; r++)
            s[r] = LLVMBuildLoad2(cg->b, vt, acc[r], "");
    }
    for (int r = 0; r < mr; r++)
        mat_store_row(cg, C, i[r], j0, nr, s[r]);
}

/* C = A @ B by register tiles of MM_ROWS x MM_COLS (smaller at the edges):
 * column blocks outside, so a block of B stays in cache while every row
 * block of A passes.  Operands are read through their accesses in place
 * (a transposed B is loaded element by element into vectors).  Every
 * element of C sums over k in order, so the tiling does not change it. */
static void emit_matmul(Cg *cg, Opnd *C, const Opnd *A, const Opnd *B)
{
    int64_t M = A->t.dim[0], N = B->t.dim[1];
    int64_t mb = M / MM_ROWS, nb = N / MM_COLS;
    Loop lj, li;
    for (int cols = 0; cols < 2; cols++) {
        int nr = cols ? 1 : MM_COLS;
        int64_t jlo = cols ? nb * MM_COLS : 0, jhi = cols ? N : nb;
        if (jlo >= jhi)
            continue;
        LLVMValueRef j = range_open(cg, &lj, jlo, jhi);
        if (!cols)
            j = LLVMBuildNUWMul(cg->b, j, c64(cg, MM_COLS), "");
        for (int rows = 0; rows < 2; rows++) {
            int mr = rows ? 1 : MM_ROWS;
            int64_t ilo = rows ? mb * MM_ROWS : 0, ihi = rows ? M : mb;
            if (ilo >= ihi)
                continue;
            LLVMValueRef i = range_open(cg, &li, ilo, ihi);
            if (!rows)
                i = LLVMBuildNUWMul(cg->b, i, c64(cg, MM_ROWS), "");
            emit_mm_tile(cg, C, A, B, i, j, mr, nr);
            range_close(cg, &li);
        }
        range_close(cg, &lj);
    }
}

/* The code of node n: o[0] is its result, o[1..] its operands. */
static bool emit_node(Cg *cg, const IrNode *n, Opnd *o)
{
    switch (ir_op_info[n->op].kind) {
    case KIND_UNARY:
    case KIND_BINARY:
        return emit_map(cg, n, n->type.rank, n->type.dim, &o[0], ir_op_info[n->op].arity, &o[1]);
    case KIND_REDUCE:
        emit_reduce(cg, n, &o[0], &o[1]);
        return true;
    case KIND_MATMUL:
        emit_matmul(cg, &o[0], &o[1], &o[2]);
        return true;
    case KIND_LAYOUT:
        if (n->op == OP_RESHAPE && o[0].a.base != BE_REG) {
            /* A reshape the plan could not express as a view: copy the
             * operand in its row-major order into the dense result. */
            Opnd dst = o[0];
            dst.a = be_access_dense(o[1].t, o[0].a.base, o[0].a.index, o[0].a.byte_off);
            return emit_map(cg, NULL, o[1].t.rank, o[1].t.dim, &dst, 1, &o[1]);
        }
        break;
    case KIND_OTHER: {
        /* ONEHOT: the label, repeated along the class dim. */
        Opnd lab = o[1];
        lab.a.rank = n->type.rank;
        lab.a.stride[lab.a.rank - 1] = 0;
        return emit_map(cg, n, n->type.rank, n->type.dim, &o[0], 1, &lab);
    }
    case KIND_LEAF:
        break;
    }
    diag_error(cg->d, no_loc, "internal error: no code for '%s' in '@%s'", ir_op_info[n->op].name, cg->f->name);
    return false;
}

/* --- value functions --- */

/* Bytes from the start of o's buffer to the end of the last element o reads. */
static uint64_t span_bytes(const Opnd *o)
{
    int64_t last = o->a.offset;
    for (int k = 0; k < o->t.rank; k++)
        last += (int64_t)(o->t.dim[k] - 1) * o->a.stride[k];
    return (uint64_t)(last + 1) * ir_dtype_size(o->a.dtype);
}

/* Start the value function `name` for the result o[0] and operands o[1..n):
 * one noalias pointer parameter per operand in memory, the element of each
 * operand in a register, the element of a register result returned.  Binds
 * each o[i].v to its parameter and leaves cg->b at the function's start. */
static void value_fn_begin(Cg *cg, const char *name, Opnd *o, int n)
{
    static const char *const pname[MAX_ACC] = {"y", "a", "b"};
    LLVMTypeRef pt[MAX_ACC];
    int np = 0;
    for (int i = 0; i < n; i++)
        if (in_memory(&o[i].a) || (i > 0 && o[i].a.base == BE_REG))
            pt[np++] = in_memory(&o[i].a) ? cg->ptr : elem_type(cg, o[i].a.dtype);
    LLVMTypeRef rt = o[0].a.base == BE_REG ? elem_type(cg, o[0].a.dtype) : cg->void_;
    cg->fn = LLVMAddFunction(cg->mod, name, LLVMFunctionType(rt, pt, (unsigned)np, 0));
    LLVMSetLinkage(cg->fn, LLVMInternalLinkage);
    add_attr(cg, cg->fn, LLVMAttributeFunctionIndex, "nounwind", 0);
    add_attr(cg, cg->fn, LLVMAttributeFunctionIndex, "noinline", 0);
    unsigned p = 0;
    for (int i = 0; i < n; i++) {
        if (!in_memory(&o[i].a) && !(i > 0 && o[i].a.base == BE_REG))
            continue;
        o[i].v = LLVMGetParam(cg->fn, p);
        LLVMSetValueName2(o[i].v, pname[i], 1);
        if (in_memory(&o[i].a)) {
            add_attr(cg, cg->fn, p + 1, "noalias", 0);
            add_attr(cg, cg->fn, p + 1, "nocapture", 0);
            add_attr(cg, cg->fn, p + 1, "noundef", 0);
            add_attr(cg, cg->fn, p + 1, "nonnull", 0);
            if (i > 0)
                add_attr(cg, cg->fn, p + 1, "readonly", 0);
            add_attr(cg, cg->fn, p + 1, "align", ir_dtype_size(o[i].a.dtype));
            add_attr(cg, cg->fn, p + 1, "dereferenceable", span_bytes(&o[i]));
        }
        p++;
    }
    LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "entry");
    LLVMPositionBuilderAtEnd(cg->eb, entry);
    LLVMPositionBuilderAtEnd(cg->b, LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "start"));
}

/* Finish the value function: return the result's element if it is a
 * register; branch from the allocas to the code. */
static void value_fn_end(Cg *cg, const Opnd *o)
{
    if (o[0].a.base == BE_REG)
        LLVMBuildRet(cg->b, o[0].v);
    else
        LLVMBuildRetVoid(cg->b);
    LLVMBuildBr(cg->eb, LLVMGetNextBasicBlock(LLVMGetEntryBasicBlock(cg->fn)));
}

/* In the public entry: the argument that passes access a to a value
 * function (the buffer's address, or the register's element). */
static LLVMValueRef entry_arg(Cg *cg, const BeAccess *a)
{
    switch (a->base) {
    case BE_INPUT: return cg->in[a->index];
    case BE_OUTPUT: return cg->out[a->index];
    case BE_REG: return cg->reg[a->index];
    default: break;
    }
    if (!a->byte_off)
        return cg->arena;
    LLVMValueRef off = c64(cg, a->byte_off);
    return LLVMBuildInBoundsGEP2(cg->top, LLVMInt8TypeInContext(cg->ctx), cg->arena, &off, 1, "buf");
}

/* What the code of a value function depends on: the op and its attributes
 * and, for the result and each operand, how it is reached (memory, an
 * immediate, a register), its element type, shape, offset and strides.
 * Equal keys give the same function, so it is built once: a meta-step
 * repeats the same shapes many times.  (Whether a buffer is in the arena,
 * and so 64-byte aligned, is left out on purpose: it would split functions
 * for the sake of an alignment that AVX code does not need.) */
typedef struct {
    /* op, value, ival, nlist, list; per access: class, dtype, rank, dims,
     * imm or offset, strides (8 bytes each) */
    unsigned char b[8 * (4 + IR_MAX_RANK + MAX_ACC * (5 + 2 * IR_MAX_RANK))];
    size_t n;
} Key;

static void key_i64(Key *k, int64_t v)
{
    memcpy(k->b + k->n, &v, sizeof v);
    k->n += sizeof v;
}

static void key_f64(Key *k, double v)
{
    memcpy(k->b + k->n, &v, sizeof v);
    k->n += sizeof v;
}

static void value_key(Key *k, const IrNode *node, const Opnd *o, int n)
{
    k->n = 0;
    key_i64(k, node ? (int64_t)node->op : -1);
    if (node) {
        key_f64(k, node->value);
        key_i64(k, node->ival);
        key_i64(k, node->nlist);
        for (int i = 0; i < node->nlist; i++)
            key_i64(k, node->list[i]);
    }
    for (int i = 0; i < n; i++) {
        const BeAccess *a = &o[i].a;
        int cls = a->base == BE_IMM ? 0 : a->base == BE_REG ? 1 : 2;
        key_i64(k, cls);
        key_i64(k, a->dtype);
        key_i64(k, o[i].t.rank);
        for (int d = 0; d < o[i].t.rank; d++)
            key_i64(k, o[i].t.dim[d]);
        if (a->base == BE_IMM)
            key_f64(k, a->imm);
        if (in_memory(a)) {
            key_i64(k, a->offset);
            for (int d = 0; d < o[i].t.rank; d++)
                key_i64(k, a->stride[d]);
        }
    }
}

static uint64_t key_hash(const Key *k)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < k->n; i++)
        h = (h ^ k->b[i]) * 0x100000001b3ULL;
    return h;
}

/* The slot of key k (hash h) in the table: its entry, or the empty slot
 * where it goes. */
static int fn_slot(const Cg *cg, const Key *k, uint64_t h)
{
    int mask = cg->fn_cap - 1;
    for (int i = (int)(h & (uint64_t)mask);; i = (i + 1) & mask)
        if (!cg->fn_done[i] || (cg->fn_hash[i] == h && cg->fn_klen[i] == k->n && !memcmp(cg->fn_key[i], k->b, k->n)))
            return i;
}

static void fn_remember(Cg *cg, const Key *k, uint64_t h, LLVMValueRef fn)
{
    if (2 * (cg->fn_count + 1) > cg->fn_cap) {
        int old_cap = cg->fn_cap;
        uint64_t *oh = cg->fn_hash;
        unsigned char **ok = cg->fn_key;
        size_t *ol = cg->fn_klen;
        LLVMValueRef *of = cg->fn_done;
        cg->fn_cap = old_cap ? 2 * old_cap : 256;
        cg->fn_hash = arena_alloc(&cg->mem, sizeof *oh * (size_t)cg->fn_cap);
        cg->fn_key = arena_alloc(&cg->mem, sizeof *ok * (size_t)cg->fn_cap);
        cg->fn_klen = arena_alloc(&cg->mem, sizeof *ol * (size_t)cg->fn_cap);
        cg->fn_done = arena_alloc(&cg->mem, sizeof *of * (size_t)cg->fn_cap);
        for (int i = 0; i < old_cap; i++) {
            if (!of[i])
                continue;
            int mask = cg->fn_cap - 1, j = (int)(oh[i] & (uint64_t)mask);
            while (cg->fn_done[j])
                j = (j + 1) & mask;
            cg->fn_hash[j] = oh[i];
            cg->fn_key[j] = ok[i];
            cg->fn_klen[j] = ol[i];
            cg->fn_done[j] = of[i];
        }
    }
    int i = fn_slot(cg, k, h);
    cg->fn_hash[i] = h;
    cg->fn_key[i] = arena_alloc(&cg->mem, k->n);
    memcpy(cg->fn_key[i], k->b, k->n);
    cg->fn_klen[i] = k->n;
    cg->fn_done[i] = fn;
    cg->fn_count++;
}

/* Call, from the public entry, the value function for o[0] = node(o[1..n))
 * (node NULL: a copy), building it as `name` unless an equal one exists.
 * Returns the call. */
static LLVMValueRef emit_value_fn(Cg *cg, const char *name, const IrNode *node, Opnd *o, int n, bool *ok)
{
    LLVMValueRef args[MAX_ACC];
    int na = 0;
    for (int i = 0; i < n; i++)
        if (in_memory(&o[i].a) || (i > 0 && o[i].a.base == BE_REG))
            args[na++] = entry_arg(cg, &o[i].a);
    Key k;
    value_key(&k, node, o, n);
    uint64_t h = key_hash(&k);
    LLVMValueRef fn = cg->fn_cap ? cg->fn_done[fn_slot(cg, &k, h)] : NULL;
    *ok = true;
    if (!fn) {
        value_fn_begin(cg, name, o, n);
        *ok = node ? emit_node(cg, node, o) : emit_map(cg, NULL, o[0].t.rank, o[0].t.dim, &o[0], 1, &o[1]);
        value_fn_end(cg, o);
        fn = cg->fn;
        fn_remember(cg, &k, h, fn);
    }
    return LLVMBuildCall2(cg->top, LLVMGlobalGetValueType(fn), fn, args, (unsigned)na, "");
}

/* --- functions --- */

/* Names the machine code may call (or LLVM's intrinsics): a function of
 * ours with one of them would take the C library's place. */
static bool reserved_name(const char *name)
{
    static const char *const names[] = {
        "exp", "expf", "log", "logf", "sqrt", "sqrtf", "tanh", "tanhf", "sin", "sinf", "cos",
        "cosf", "fabs", "fabsf", "pow", "powf", "log1p", "log1pf", "fmax", "fmaxf", "exp2",
        "exp2f", "memset", "memcpy", "memmove", "main",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(name, names[i]))
            return true;
    return !strncmp(name, "llvm.", 5);
}

/* The public entry's loads of in[i] and out[j], named after the arguments. */
static void entry_params(Cg *cg, const IrFunc *f, LLVMValueRef fn)
{
    for (int i = 0; i < f->ninput + f->noutput; i++) {
        bool is_in = i < f->ninput;
        int k = is_in ? i : i - f->ninput;
        char name[64];
        if (is_in)
            snprintf(name, sizeof name, "%s", f->node[f->input[k]].name ? f->node[f->input[k]].name : "in");
        else
            snprintf(name, sizeof name, "out%d", k);
        LLVMValueRef idx = c64(cg, k);
        LLVMValueRef slot = LLVMBuildInBoundsGEP2(cg->top, cg->ptr, LLVMGetParam(fn, is_in ? 0 : 1), &idx, 1, "");
        LLVMValueRef p = LLVMBuildLoad2(cg->top, cg->ptr, slot, name);
        LLVMSetAlignment(p, sizeof(void *));
        (is_in ? cg->in : cg->out)[k] = p;
    }
    cg->arena = LLVMGetParam(fn, 2);
}

/* The name of a value function of the function being built: NAME.WHAT.N,
 * with ".v" appended while that is the name of a function of the module
 * (whose public entry must keep it). */
static void value_fn_name(const Cg *cg, char *buf, size_t size, const char *what, int n)
{
    int len = snprintf(buf, size, "%s.%s.%d", cg->f->name, what, n);
    while (ir_module_find(cg->m, buf) && len >= 0 && (size_t)len + 2 < size)
        len += snprintf(buf + len, size - (size_t)len, ".v");
}

/* The body of the public entry of f: a value function per computed value
 * in node order, then a copy function per output not computed in place. */
static bool emit_func(Cg *cg, const IrFunc *f, LLVMValueRef fn)
{
    BePlan plan;
    be_plan(f, &plan);
    cg->f = f;
    cg->plan = &plan;
    cg->in = calloc((size_t)f->ninput + 1, sizeof *cg->in);
    cg->out = calloc((size_t)f->noutput + 1, sizeof *cg->out);
    cg->reg = calloc((size_t)f->nnode + 1, sizeof *cg->reg);
    bool ok = cg->in && cg->out && cg->reg;
    if (!ok)
        diag_error(cg->d, no_loc, "out of memory compiling '@%s'", f->name);
    if (ok) {
        LLVMPositionBuilderAtEnd(cg->top, LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry"));
        entry_params(cg, f, fn);
    }
    char name[256];
    for (ValueId v = 0; ok && v < f->nnode; v++) {
        if (!plan.computed[v])
            continue;
        const IrNode *n = &f->node[v];
        int arity = ir_op_info[n->op].arity;
        Opnd o[MAX_ACC] = {{.a = plan.acc[v], .t = n->type}};
        for (int i = 0; i < arity; i++)
            o[1 + i] = (Opnd){.a = plan.acc[n->arg[i]], .t = f->node[n->arg[i]].type};
        value_fn_name(cg, name, sizeof name, ir_op_info[n->op].name, v);
        LLVMValueRef call = emit_value_fn(cg, name, n, o, 1 + arity, &ok);
        if (plan.acc[v].base == BE_REG)
            cg->reg[v] = call;
    }
    for (int j = 0; ok && j < f->noutput; j++) {
        if (!plan.out_copy[j])
            continue;
        IrType t = f->node[f->output[j]].type;
        Opnd o[2] = {{.a = be_access_dense(t, BE_OUTPUT, j, 0), .t = t}, {.a = plan.acc[f->output[j]], .t = t}};
        value_fn_name(cg, name, sizeof name, "out", j);
        emit_value_fn(cg, name, NULL, o, 2, &ok);
    }
    if (ok)
        LLVMBuildRetVoid(cg->top);
    free(cg->in);
    free(cg->out);
    free(cg->reg);
    cg->in = cg->out = cg->reg = NULL;
    be_plan_free(&plan);
    cg->plan = NULL;
    cg->f = NULL;
    return ok;
}

/* Declare f's public entry: void NAME(ptr in, ptr out, ptr arena). */
static LLVMValueRef declare_entry(Cg *cg, const IrFunc *f)
{
    if (reserved_name(f->name) || LLVMGetNamedFunction(cg->mod, f->name)) {
        diag_error(cg->d, no_loc, "function name '@%s' clashes with a function of the generated code", f->name);
        return NULL;
    }
    LLVMTypeRef pt[3] = {cg->ptr, cg->ptr, cg->ptr};
    LLVMValueRef fn = LLVMAddFunction(cg->mod, f->name, LLVMFunctionType(cg->void_, pt, 3, 0));
    add_attr(cg, fn, LLVMAttributeFunctionIndex, "nounwind", 0);
    static const char *const pname[3] = {"in", "out", "arena"};
    for (unsigned i = 0; i < 3; i++) {
        LLVMSetValueName2(LLVMGetParam(fn, i), pname[i], strlen(pname[i]));
        add_attr(cg, fn, i + 1, "nocapture", 0);
        add_attr(cg, fn, i + 1, "noundef", 0);
        if (i < 2)
            add_attr(cg, fn, i + 1, "readonly", 0);
    }
    add_attr(cg, fn, 3, "align", 64);
    return fn;
}

LLVMModuleRef be_codegen_module(const IrModule *m, LLVMContextRef ctx, Diag *d)
{
    if (!ir_verify_module(m, d))
        return NULL;
    Cg cg = {.ctx = ctx, .d = d};
    cg.mod = LLVMModuleCreateWithNameInContext("mamlc", ctx);
    cg.b = LLVMCreateBuilderInContext(ctx);
    cg.eb = LLVMCreateBuilderInContext(ctx);
    cg.top = LLVMCreateBuilderInContext(ctx);
    cg.i32 = LLVMInt32TypeInContext(ctx);
    cg.i64 = LLVMInt64TypeInContext(ctx);
    cg.f32 = LLVMFloatTypeInContext(ctx);
    cg.f64 = LLVMDoubleTypeInContext(ctx);
    cg.ptr = LLVMPointerTypeInContext(ctx, 0);
    cg.void_ = LLVMVoidTypeInContext(ctx);
    cg.m = m;
    bool ok = true;
    for (int i = 0; ok && i < m->nfunc; i++) {
        LLVMValueRef entry = declare_entry(&cg, m->func[i]);
        ok = entry && emit_func(&cg, m->func[i], entry);
    }
    arena_free(&cg.mem);
    LLVMDisposeBuilder(cg.b);
    LLVMDisposeBuilder(cg.eb);
    LLVMDisposeBuilder(cg.top);
    char *msg = NULL;
    if (ok && LLVMVerifyModule(cg.mod, LLVMReturnStatusAction, &msg)) {
        diag_error(d, no_loc, "internal error: the generated LLVM IR is invalid: %s", msg);
        ok = false;
    }
    LLVMDisposeMessage(msg);
    if (!ok) {
        LLVMDisposeModule(cg.mod);
        return NULL;
    }
    return cg.mod;
}
