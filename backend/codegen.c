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
 * true: LLVM vectorises without runtime overlap checks.  An operand the
 * plan fuses into its elementwise reader (or into a blocked sum) has no
 * buffer: the reader's function takes that operand's operands instead and
 * computes it in its own loop, element by element, or, for a fused
 * product, runs the product's register tiles and computes the loop's
 * value from each sum before its store.  Small functions keep LLVM's loop
 * analyses cheap (compile time grows linearly with the nodes), and values
 * whose code would be the same share one function (a convolution's takes
 * its image count as a parameter, so that the support and query sets
 * share it too).  A long function's calls go into chunk functions of
 * BE_CHUNK_CALLS calls each, which the public entry calls in turn:
 *
 *   internal void @f.chunk.K(ptr %in, ptr %out, ptr %arena, ptr %regs)
 *
 * so that no value lives across more than a chunk's calls in registers
 * (a one-element value that a later chunk reads goes through a slot of
 * the entry's stack array %regs), and the time LLVM takes to allocate
 * registers grows linearly with the calls.  Chunks are `optnone`: they
 * only make the calls, so optimising them gains no run time, and costs
 * a third of a long function's compile time (sharing each arena address
 * across a chunk's calls, then spilling it around them).
 *
 * The plan (plan.c) says where each value's elements are; this file only
 * walks it.  Loops are plain counted loops with i64 induction variables and
 * static trip counts (but a convolution's images), dims merged where every
 * access steps evenly across them, so that elementwise code over dense
 * data is one flat loop.  Reductions sum in an order fixed by the shapes:
 * index order, or, over long dense runs, in blocks (emit_reduce_blocked);
 * matmul and the convolutions work on register tiles of their
 * result (emit_gemm).  No fast-math flags are set: results must match the
 * reference evaluator and be reproducible; only the products use
 * llvm.fmuladd (contraction). */
#include "codegen.h"
#include "plan.h"

#include <llvm-c/Analysis.h>
#include <llvm-c/DebugInfo.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ACC (3 + BE_FUSE_LEAVES)    /* a destination and operands: two products' two each and the loop's others */

enum { BE_CHUNK_CALLS = 256 };          /* calls of value functions per chunk of a public entry */

typedef struct {
    LLVMContextRef ctx;
    LLVMModuleRef mod;
    LLVMBuilderRef b;           /* code of the value function being built */
    LLVMBuilderRef eb;          /* its entry block: allocas */
    LLVMBuilderRef top;         /* the public entry being built: the calls */
    LLVMValueRef fn;            /* the value function being built */
    LLVMValueRef scratch;       /* its scratch parameter (convolutions), or NULL */
    LLVMValueRef images;        /* a convolution's image count parameter (i64), or NULL */
    const IrModule *m;
    const IrFunc *f;
    const BePlan *plan;
    LLVMValueRef *in, *out;     /* in the public entry: in[i] and out[j] */
    LLVMValueRef arena;
    LLVMValueRef *reg;          /* in the chunk being built: each BE_REG value's element */
    /* Chunks (a public entry of more than BE_CHUNK_CALLS calls): */
    LLVMValueRef entry;         /* the public entry being built */
    LLVMValueRef *chunk_fn;     /* its chunk functions so far, or NULL: the entry is one */
    int nchunk, chunk_cap;
    int calls;                  /* calls in the chunk being built */
    LLVMValueRef regs;          /* its slots parameter */
    int *reg_chunk;             /* the chunk in which reg[v] is valid */
    LLVMValueRef *reg_call;     /* the call that returned BE_REG value v */
    int *reg_slot;              /* v's slot in regs, or -1: none yet */
    int nslot;
    LLVMBuilderRef slot_b;      /* stores into slots, behind their calls */
    ValueId root;               /* the value being built when its loop computes fused operands
                                   (BePlan's fused_into), else -1 */
    ValueId product;            /* the product fused into root's loop, or -1 */
    ValueId other;              /* a second product summed in its tiles (be_product_pair), or -1 */
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
    LLVMValueRef end;           /* i64 */
    bool scalar;                /* no use vectorising it: tell LLVM not to try */
    int unroll;                 /* > 1: ask LLVM to unroll it this many times */
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

/* Opens `for (iv = start; iv < end; iv++)` (end an i64 value, start <
 * end), in a fresh block. */
static LLVMValueRef loop_open_to(Cg *cg, Loop *l, int64_t start, LLVMValueRef end)
{
    LLVMBasicBlockRef pre = LLVMGetInsertBlock(cg->b);
    l->head = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "loop");
    l->end = end;
    l->scalar = false;
    l->unroll = 0;
    LLVMBuildBr(cg->b, l->head);
    LLVMPositionBuilderAtEnd(cg->b, l->head);
    l->iv = LLVMBuildPhi(cg->b, cg->i64, "i");
    LLVMValueRef s = c64(cg, start);
    LLVMAddIncoming(l->iv, &s, &pre, 1);
    return l->iv;
}

static LLVMValueRef loop_open(Cg *cg, Loop *l, int64_t start, int64_t end)
{
    return loop_open_to(cg, l, start, c64(cg, end));
}

/* Loop metadata that turns LLVM's loop vectoriser off for one loop, and
 * with unroll > 1 asks for that unroll count: a distinct self-referencing
 * loop ID holding llvm.loop.vectorize.enable (and llvm.loop.unroll.count). */
static LLVMValueRef loop_hints(Cg *cg, int unroll)
{
    static const char hint[] = "llvm.loop.vectorize.enable", count[] = "llvm.loop.unroll.count";
    LLVMMetadataRef ops[2] = {
        LLVMMDStringInContext2(cg->ctx, hint, sizeof hint - 1),
        LLVMValueAsMetadata(LLVMConstInt(LLVMInt1TypeInContext(cg->ctx), 0, 0)),
    };
    LLVMMetadataRef uops[2] = {
        LLVMMDStringInContext2(cg->ctx, count, sizeof count - 1),
        LLVMValueAsMetadata(LLVMConstInt(LLVMInt32TypeInContext(cg->ctx), (unsigned)unroll, 0)),
    };
    LLVMMetadataRef self = LLVMTemporaryMDNode(cg->ctx, NULL, 0);
    LLVMMetadataRef id_ops[3] = {self, LLVMMDNodeInContext2(cg->ctx, ops, 2), LLVMMDNodeInContext2(cg->ctx, uops, 2)};
    LLVMMetadataRef id = LLVMMDNodeInContext2(cg->ctx, id_ops, unroll > 1 ? 3 : 2);
    LLVMMetadataReplaceAllUsesWith(self, id);
    return LLVMMetadataAsValue(cg->ctx, id);
}

static void loop_close(Cg *cg, Loop *l)
{
    LLVMValueRef next = LLVMBuildNUWAdd(cg->b, l->iv, c64(cg, 1), "i.next");
    LLVMSetNSW(next, 1);
    LLVMValueRef more = LLVMBuildICmp(cg->b, LLVMIntULT, next, l->end, "");
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(cg->b);
    LLVMBasicBlockRef exit = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "done");
    LLVMValueRef br = LLVMBuildCondBr(cg->b, more, l->head, exit);
    if (l->scalar)
        LLVMSetMetadata(br, LLVMGetMDKindIDInContext(cg->ctx, "llvm.loop", 9), loop_hints(cg, l->unroll));
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

/* A value of type ty (an element or a vector of them) from o's memory at
 * element index idx. */
static LLVMValueRef load_mem(Cg *cg, const Opnd *o, LLVMValueRef idx, LLVMTypeRef ty)
{
    LLVMTypeRef t = elem_type(cg, o->a.dtype);
    if (o->a.offset)
        idx = idx_add(cg, idx, c64(cg, o->a.offset));
    LLVMValueRef v = LLVMBuildLoad2(cg->b, ty, LLVMBuildInBoundsGEP2(cg->b, t, o->v, &idx, 1, ""), "");
    LLVMSetAlignment(v, (unsigned)ir_dtype_size(o->a.dtype));
    return v;
}

/* The element of o at element index idx (built only for memory). */
static LLVMValueRef load_at(Cg *cg, const Opnd *o, LLVMValueRef idx)
{
    if (o->a.base == BE_IMM)
        return imm(cg, o->a.dtype, o->a.imm);
    if (o->a.base == BE_REG)
        return o->v;
    return load_mem(cg, o, idx, elem_type(cg, o->a.dtype));
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
    return load_at(cg, o, be_in_memory(&o->a) ? iter_index(cg, it, a, iv) : NULL);
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

/* The nr elements of o from element index idx on, contiguous, as a vector
 * (nr = 1: the element); o's one element repeated when it is not in
 * memory. */
static LLVMValueRef load_vec_at(Cg *cg, const Opnd *o, LLVMValueRef idx, int nr)
{
    if (nr == 1 || !be_in_memory(&o->a))
        return splat(cg, load_at(cg, o, idx), nr);
    return load_mem(cg, o, idx, LLVMVectorType(elem_type(cg, o->a.dtype), (unsigned)nr));
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

/* x^k for k >= 1 by repeated squaring. */
static LLVMValueRef build_ipow(Cg *cg, LLVMValueRef x, int k)
{
    LLVMValueRef y = NULL, p = x;
    while (k) {
        if (k & 1)
            y = y ? LLVMBuildFMul(cg->b, y, p, "") : p;
        k >>= 1;
        if (k)
            p = LLVMBuildFMul(cg->b, p, p, "");
    }
    return y;
}

/* x^c: repeated squaring for integer c up to 16; for c = +-(k + 1/2) up to
 * 16.5, |x|^k (sqrt(x) + 0), in double for f32 when k > 0 (then within
 * an ulp of pow), with pow's answers at -0 (the + 0 and |x|) and at -inf;
 * llvm.pow, one libm call per element, otherwise. */
static LLVMValueRef build_powc(Cg *cg, LLVMTypeRef t, LLVMValueRef x, double c)
{
    LLVMValueRef one = LLVMConstReal(t, 1);
    double a = fabs(c);
    int k = (int)floor(a);
    if (a == k && a <= 16) {
        if (k == 0)
            return one;
        LLVMValueRef y = build_ipow(cg, x, k);
        return c < 0 ? LLVMBuildFDiv(cg->b, one, y, "") : y;
    }
    if (a != k + 0.5 || a > 16.5)
        return call2(cg, "llvm.pow", t, x, LLVMConstReal(t, c));
    LLVMTypeRef w = k > 0 && LLVMGetTypeKind(t) == LLVMFloatTypeKind ? LLVMDoubleTypeInContext(cg->ctx) : t;
    LLVMValueRef xw = w != t ? LLVMBuildFPExt(cg->b, x, w, "") : x;
    LLVMValueRef y = LLVMBuildFAdd(cg->b, call1(cg, "llvm.sqrt", w, xw), LLVMConstReal(w, 0), "");
    if (k > 0)
        y = LLVMBuildFMul(cg->b, build_ipow(cg, call1(cg, "llvm.fabs", w, xw), k), y, "");
    y = LLVMBuildSelect(cg->b, fcmp(cg, LLVMRealOEQ, xw, LLVMConstReal(w, -INFINITY)), LLVMConstReal(w, INFINITY),
                        y, "");
    if (c < 0)
        y = LLVMBuildFDiv(cg->b, LLVMConstReal(w, 1), y, "");
    return w != t ? LLVMBuildFPTrunc(cg->b, y, t, "") : y;
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

static bool fused(const Cg *cg, ValueId x)
{
    return cg->plan->fused_into[x] >= 0;
}

/* Append to o, from o[*no] on, the operands the loop of v reads: its own,
 * each fused one's in its place (a fused product's none: they come first). */
static void fused_operands(const Cg *cg, ValueId v, Opnd *o, int *no)
{
    const IrNode *n = &cg->f->node[v];
    for (int a = 0; a < ir_op_info[n->op].arity; a++) {
        ValueId x = n->arg[a];
        if (!fused(cg, x))
            o[(*no)++] = (Opnd){.a = cg->plan->acc[x], .t = cg->f->node[x].type};
        else if (cg->f->node[x].op != OP_MATMUL)
            fused_operands(cg, x, o, no);
    }
}

/* v's element (or vector) from the operands its loop reads, x[*j] on in
 * fused_operands' order, and the fused product's `prod` (the sum of two
 * products summed in its tiles); NULL for an op that is not elementwise. */
static LLVMValueRef fused_value(Cg *cg, ValueId v, const LLVMValueRef *x, int *j, LLVMValueRef prod,
                                LLVMValueRef cls)
{
    const IrNode *n = &cg->f->node[v];
    ValueId main, other;
    if (be_product_pair(cg->f, cg->plan, v, &main, &other))
        return prod;
    LLVMValueRef arg[2] = {NULL, NULL};
    for (int a = 0; a < ir_op_info[n->op].arity; a++) {
        ValueId y = n->arg[a];
        if (!fused(cg, y))
            arg[a] = x[(*j)++];
        else
            arg[a] = cg->f->node[y].op == OP_MATMUL ? prod : fused_value(cg, y, x, j, prod, cls);
        if (!arg[a])
            return NULL;
    }
    return elem_value(cg, n, arg, cls);
}

/* dst = n(src...) elementwise over the shape (rank, dim), or a copy when n
 * is NULL; every access is over that shape.  When n is cg->root, its fused
 * operands are computed in the loop from theirs (fused_operands). */
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
    LLVMValueRef iv[IR_MAX_RANK + 1], x[MAX_ACC] = {NULL};
    nest_open(cg, &it, loop, iv);
    /* Element indices, one per distinct stride vector in memory. */
    LLVMValueRef idx[MAX_ACC] = {NULL};
    for (int a = 0; a < it.nacc; a++) {
        if (!be_in_memory(a ? &src[a - 1].a : &dst->a))
            continue;
        for (int b = 0; b < a && !idx[a]; b++)
            if (idx[b] && !memcmp(it.stride[a], it.stride[b], sizeof(int64_t) * (size_t)it.rank))
                idx[a] = idx[b];
        if (!idx[a])
            idx[a] = iter_index(cg, &it, a, iv);
    }
    for (int i = 0; i < nsrc; i++)
        x[i] = load_at(cg, &src[i], idx[1 + i]);
    LLVMValueRef cls = last >= 0 ? iv[last] : c64(cg, 0), y = x[0];
    if (n && cg->root >= 0 && n == &cg->f->node[cg->root]) {
        int j = 0;
        y = fused_value(cg, cg->root, x, &j, NULL, cls);
    } else if (n) {
        y = elem_value(cg, n, x, cls);
    }
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

/* w results of a sum or max with a reduced dim innermost, at kept indices
 * yo (result) and xo (operand) and the next w - 1 along the innermost kept
 * dim (strides ys, xs): w independent accumulators in the lanes of a
 * vector, each running over the reduced indices in row-major order. */
static void emit_reduce_lanes(Cg *cg, const IrNode *n, Opnd *y, const Opnd *x, const Iter *over, LLVMValueRef yo,
                              LLVMValueRef xo, int64_t ys, int64_t xs, int w)
{
    LLVMTypeRef t = elem_type(cg, x->a.dtype), vt = w > 1 ? LLVMVectorType(t, (unsigned)w) : t;
    bool sum = n->op == OP_REDUCE_SUM;
    LLVMValueRef acc = entry_alloca(cg, vt, "acc");
    LLVMBuildStore(cg->b, splat(cg, LLVMConstReal(t, sum ? 0 : -INFINITY), w), acc);
    Loop lr[IR_MAX_RANK + 1];
    LLVMValueRef ir[IR_MAX_RANK + 1];
    nest_open(cg, over, lr, ir);
    LLVMValueRef xi = be_in_memory(&x->a) ? idx_add(cg, xo, iter_index(cg, over, 0, ir)) : NULL;
    LLVMValueRef e;
    if (w == 1 || !be_in_memory(&x->a) || xs == 0) {
        e = splat(cg, load_at(cg, x, xi), w);
    } else {
        e = LLVMGetPoison(vt);
        for (int l = 0; l < w; l++)
            e = LLVMBuildInsertElement(cg->b, e, load_at(cg, x, idx_add(cg, xi, c64(cg, l * xs))), c64(cg, l), "");
    }
    LLVMValueRef m = LLVMBuildLoad2(cg->b, vt, acc, "");
    LLVMBuildStore(cg->b, sum ? LLVMBuildFAdd(cg->b, m, e, "") : LLVMBuildSelect(cg->b, max_takes(cg, e, m), e, m, ""),
                   acc);
    for (int i = 0; i < over->rank; i++)
        lr[i].scalar = true;        /* running sums or maxima: sequential */
    nest_close(cg, over, lr);
    LLVMValueRef r = LLVMBuildLoad2(cg->b, vt, acc, "");
    for (int l = 0; l < w; l++)
        store_at(cg, y, idx_add(cg, yo, c64(cg, l * ys)),
                 w == 1 ? r : LLVMBuildExtractElement(cg->b, r, c64(cg, l), ""));
}

/* A sum over a dense run of at least SUM_LANES elements in its reduced dims
 * is summed in SUM_LANES partial sums (SUM_VECS vectors of SUM_WIDTH lanes)
 * over segments of at most SUM_SEGMENT elements, which are added into as
 * many running totals: a fixed order that runs as fast as the loads and
 * rounds far less than one running sum. */
enum { SUM_WIDTH = 8, SUM_LANES = BE_SUM_LANES, SUM_VECS = SUM_LANES / SUM_WIDTH, SUM_SEGMENT = 32 * SUM_LANES };

/* What a blocked sum adds up: its operand x[0], or (fused >= 0) the value
 * fused computed from its operands x[0, n), each dense over its shape or
 * one element (the plan's sum_fuses). */
typedef struct {
    const Opnd *x;
    int n;
    ValueId fused;
    DType dtype;
} SumSource;

/* The w = SUM_WIDTH elements, or the one element (w = 1), of the source
 * from element index at on. */
static LLVMValueRef sum_source(Cg *cg, const SumSource *s, LLVMValueRef at, int w)
{
    LLVMValueRef v[BE_FUSE_LEAVES];
    for (int i = 0; i < s->n; i++)
        v[i] = load_vec_at(cg, &s->x[i], at, w);
    int j = 0;
    return s->fused < 0 ? v[0] : fused_value(cg, s->fused, v, &j, NULL, NULL);
}

/* *acc += e (vectors kept in allocas). */
static void add_into(Cg *cg, LLVMValueRef acc, LLVMValueRef e)
{
    LLVMTypeRef vt = LLVMTypeOf(e);
    LLVMBuildStore(cg->b, LLVMBuildFAdd(cg->b, LLVMBuildLoad2(cg->b, vt, acc, ""), e, ""), acc);
}

/* total[v] += the sums of the n elements of s from index at on: element j
 * into lane j mod SUM_LANES of a partial sum, the last n mod SUM_WIDTH
 * into the low lanes of one vector. */
static void sum_segment(Cg *cg, const SumSource *s, LLVMValueRef at, int64_t n, LLVMValueRef *part,
                        LLVMValueRef *total)
{
    LLVMTypeRef vt = LLVMVectorType(elem_type(cg, s->dtype), SUM_WIDTH);
    LLVMValueRef zero = LLVMConstNull(vt);
    for (int v = 0; v < SUM_VECS; v++)
        LLVMBuildStore(cg->b, zero, part[v]);
    if (n >= SUM_LANES) {
        Loop lb;
        LLVMValueRef c = range_open(cg, &lb, 0, n / SUM_LANES);
        LLVMValueRef block = idx_add(cg, at, LLVMBuildNUWMul(cg->b, c, c64(cg, SUM_LANES), ""));
        for (int v = 0; v < SUM_VECS; v++)
            add_into(cg, part[v], sum_source(cg, s, idx_add(cg, block, c64(cg, v * SUM_WIDTH)), SUM_WIDTH));
        lb.scalar = true;
        range_close(cg, &lb);
    }
    int64_t j = n / SUM_LANES * SUM_LANES;
    for (int v = 0; j + SUM_WIDTH <= n; v++, j += SUM_WIDTH)
        add_into(cg, part[v], sum_source(cg, s, idx_add(cg, at, c64(cg, j)), SUM_WIDTH));
    if (j < n) {
        LLVMValueRef e = zero;
        for (int l = 0; j + l < n; l++) {
            LLVMValueRef x = sum_source(cg, s, idx_add(cg, at, c64(cg, j + l)), 1);
            e = LLVMBuildInsertElement(cg->b, e, x, c64(cg, l), "");
        }
        add_into(cg, part[n % SUM_LANES / SUM_WIDTH], e);
    }
    for (int v = 0; v < SUM_VECS; v++)
        add_into(cg, total[v], LLVMBuildLoad2(cg->b, vt, part[v], ""));
}

/* The sum of the vector's w lanes, halves added pairwise. */
static LLVMValueRef sum_lanes(Cg *cg, LLVMValueRef v, int w)
{
    for (; w > 1; w /= 2) {
        LLVMValueRef lo[SUM_WIDTH], hi[SUM_WIDTH];
        for (int l = 0; l < w / 2; l++) {
            lo[l] = LLVMConstInt(cg->i32, (unsigned)l, 0);
            hi[l] = LLVMConstInt(cg->i32, (unsigned)(l + w / 2), 0);
        }
        LLVMValueRef a = LLVMBuildShuffleVector(cg->b, v, v, LLVMConstVector(lo, (unsigned)(w / 2)), "");
        LLVMValueRef b = LLVMBuildShuffleVector(cg->b, v, v, LLVMConstVector(hi, (unsigned)(w / 2)), "");
        v = w / 2 > 1 ? LLVMBuildFAdd(cg->b, a, b, "") :
            LLVMBuildFAdd(cg->b, LLVMBuildExtractElement(cg->b, a, c64(cg, 0), ""),
                          LLVMBuildExtractElement(cg->b, b, c64(cg, 0), ""), "");
    }
    return v;
}

/* A sum whose innermost reduced dim (after merging) is a dense run of n >=
 * SUM_LANES elements: for each kept index, each run (in row-major order of
 * the reduced dims outside it) is summed segment by segment (sum_segment)
 * into SUM_LANES running totals; at the end the totals' vectors are added
 * pairwise, then their lanes.  Each lane of a partial sum adds at most 32
 * elements, each total one partial per segment. */
static void emit_reduce_blocked(Cg *cg, Opnd *y, const SumSource *src, const Iter *kept, const Iter *over)
{
    LLVMTypeRef vt = LLVMVectorType(elem_type(cg, src->dtype), SUM_WIDTH);
    Iter outer = *over;
    int64_t n = outer.dim[--outer.rank];
    LLVMValueRef total[SUM_VECS], part[SUM_VECS];
    for (int v = 0; v < SUM_VECS; v++) {
        total[v] = entry_alloca(cg, vt, "total");
        part[v] = entry_alloca(cg, vt, "part");
    }
    Loop lk[IR_MAX_RANK + 1], lo[IR_MAX_RANK + 1], ls;
    LLVMValueRef ik[IR_MAX_RANK + 1], io[IR_MAX_RANK + 1];
    nest_open(cg, kept, lk, ik);
    LLVMValueRef yo = iter_index(cg, kept, 0, ik), xo = iter_index(cg, kept, 1, ik);
    for (int v = 0; v < SUM_VECS; v++)
        LLVMBuildStore(cg->b, LLVMConstNull(vt), total[v]);
    nest_open(cg, &outer, lo, io);
    LLVMValueRef run = idx_add(cg, xo, iter_index(cg, &outer, 0, io));
    if (n >= SUM_SEGMENT) {
        LLVMValueRef sg = range_open(cg, &ls, 0, n / SUM_SEGMENT);
        sum_segment(cg, src, idx_add(cg, run, LLVMBuildNUWMul(cg->b, sg, c64(cg, SUM_SEGMENT), "")), SUM_SEGMENT,
                    part, total);
        ls.scalar = true;
        range_close(cg, &ls);
    }
    if (n % SUM_SEGMENT)
        sum_segment(cg, src, idx_add(cg, run, c64(cg, n / SUM_SEGMENT * SUM_SEGMENT)), n % SUM_SEGMENT, part,
                    total);
    for (int i = 0; i < outer.rank; i++)
        lo[i].scalar = true;
    nest_close(cg, &outer, lo);
    LLVMValueRef s[SUM_VECS];
    for (int v = 0; v < SUM_VECS; v++)
        s[v] = LLVMBuildLoad2(cg->b, vt, total[v], "");
    for (int w = SUM_VECS; w > 1; w /= 2)
        for (int v = 0; v < w / 2; v++)
            s[v] = LLVMBuildFAdd(cg->b, s[2 * v], s[2 * v + 1], "");
    store_at(cg, y, yo, sum_lanes(cg, s[0], SUM_WIDTH));
    nest_close(cg, kept, lk);
}

/* Reduction with a reduced dim innermost (and every ARGMAX): a sum over a
 * long dense run is blocked (above); otherwise, for each kept index, an
 * accumulator runs over the reduced indices in row-major order.  Sums and
 * maxima take 8 kept indices at a time along the innermost kept
 * dim (then 4, 2, 1 at its end), so that 8 independent chains overlap
 * instead of one waiting on the last; each result's order is the same.
 * ys: the result's strides over the operand's dims. */
static bool emit_reduce_inner(Cg *cg, const IrNode *n, Opnd *y, const Opnd *x, const int64_t *ys, const bool *red,
                              const SumSource *src)
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
    if (n->op == OP_REDUCE_SUM && be_in_memory(&x->a) && over.rank && over.stride[0][over.rank - 1] == 1 &&
        over.dim[over.rank - 1] >= SUM_LANES) {
        emit_reduce_blocked(cg, y, src, &kept, &over);
        return true;
    }
    if (src->fused >= 0)
        return false;           /* a fused operand needs the blocked sum */
    Loop lk[IR_MAX_RANK + 1], lr[IR_MAX_RANK + 1];
    LLVMValueRef ik[IR_MAX_RANK + 1], ir[IR_MAX_RANK + 1];
    if (!is_arg) {
        /* the kept dims but the innermost as loops; that one in blocks */
        int inner = kept.rank - 1;
        int64_t ext = inner >= 0 ? kept.dim[inner] : 1;
        int64_t ysi = inner >= 0 ? kept.stride[0][inner] : 0, xsi = inner >= 0 ? kept.stride[1][inner] : 0;
        kept.rank = inner >= 0 ? inner : 0;
        nest_open(cg, &kept, lk, ik);
        LLVMValueRef yo = iter_index(cg, &kept, 0, ik), xo = iter_index(cg, &kept, 1, ik);
        int64_t j0 = 0;
        for (int w = 8; w >= 1; w /= 2) {
            int64_t count = (ext - j0) / w;
            if (!count)
                continue;
            Loop lb;
            LLVMValueRef b = range_open(cg, &lb, 0, count);
            LLVMValueRef j = idx_add(cg, c64(cg, j0), LLVMBuildNUWMul(cg->b, b, c64(cg, w), ""));
            emit_reduce_lanes(cg, n, y, x, &over, idx_add(cg, yo, LLVMBuildNSWMul(cg->b, j, c64(cg, ysi), "")),
                              idx_add(cg, xo, LLVMBuildNSWMul(cg->b, j, c64(cg, xsi), "")), ysi, xsi, w);
            range_close(cg, &lb);
            j0 += count * w;
        }
        nest_close(cg, &kept, lk);
        return true;
    }
    LLVMValueRef acc = entry_alloca(cg, t, "acc");
    LLVMValueRef pos = entry_alloca(cg, cg->i32, "pos");
    nest_open(cg, &kept, lk, ik);
    LLVMValueRef yo = iter_index(cg, &kept, 0, ik), xo = iter_index(cg, &kept, 1, ik);
    LLVMBuildStore(cg->b, LLVMConstReal(t, -INFINITY), acc);
    LLVMBuildStore(cg->b, LLVMConstInt(cg->i32, 0, 0), pos);
    nest_open(cg, &over, lr, ir);
    LLVMValueRef xi = be_in_memory(&x->a) ? idx_add(cg, xo, iter_index(cg, &over, 0, ir)) : NULL;
    LLVMValueRef e = load_at(cg, x, xi);
    LLVMValueRef m = LLVMBuildLoad2(cg->b, t, acc, "");
    LLVMValueRef take = max_takes(cg, e, m);
    LLVMBuildStore(cg->b, LLVMBuildSelect(cg->b, take, e, m, ""), acc);
    /* The axis is the one reduced dim: its loop (if any) counts the position. */
    LLVMValueRef here = over.rank ? LLVMBuildTrunc(cg->b, ir[0], cg->i32, "") : LLVMConstInt(cg->i32, 0, 0);
    LLVMValueRef p = LLVMBuildLoad2(cg->b, cg->i32, pos, "");
    LLVMBuildStore(cg->b, LLVMBuildSelect(cg->b, take, here, p, ""), pos);
    for (int i = 0; i < over.rank; i++)
        lr[i].scalar = true;        /* a running max: sequential */
    nest_close(cg, &over, lr);
    store_at(cg, y, yo, LLVMBuildLoad2(cg->b, cg->i32, pos, ""));
    nest_close(cg, &kept, lk);
    return true;
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

/* Reduction n into y of its operand x, or, when the operand is fused into
 * the sum, of the value computed from its operands x[0, nx). */
static bool emit_reduce(Cg *cg, const IrNode *n, Opnd *y, const Opnd *x, int nx)
{
    SumSource src = {x, 1, -1, x->a.dtype};
    Opnd shape;
    if (fused(cg, n->arg[0])) {
        IrType t = cg->f->node[n->arg[0]].type;
        src = (SumSource){x, nx, n->arg[0], t.dtype};
        shape = (Opnd){.a = be_access_dense(t, BE_ARENA, 0, 0), .t = t};
        x = &shape;             /* the index space of the dense operands */
    }
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
    if (n->op == OP_ARGMAX || last < 0 || red[last]) {
        if (emit_reduce_inner(cg, n, y, x, ys, red, &src))
            return true;
    } else if (src.fused < 0) {
        emit_reduce_outer(cg, n, y, x, ys);
        return true;
    }
    diag_error(cg->d, no_loc, "internal error: a fused sum that is not blocked");
    return false;
}

/* --- convolutions ---
 *
 * With K = C*KH*KW (the elements of one window) and P = Ho*Wo (the
 * positions of one output image), each convolution op is a matrix product
 * per image n:
 *
 *   conv2d         y[n] (O x P)  = w (O x K) @ xc[n] (K x P)
 *   conv2d_grad_x  dx[n]         = col2im(g[n]^T (P x O) @ w (O x K))
 *   conv2d_grad_w  dw (O x K)   += g[n] (O x P) @ xc[n]^T (P x K), n in order
 *
 * xc[n] is the im2col matrix: xc[n][k, p] = xp[n, c, oh*stride + kh,
 * ow*stride + kw] for k = (c, kh, kw) and p = (oh, ow), xp being x padded
 * with zeros; col2im adds each element of a K x P (or P x K) matrix into
 * the dx element its window position reaches (none in the padding).
 *
 * Products run in register tiles of BE_TILE_ROWS rows by one vector of
 * be_tile_cols() columns (emit_gemm).  Each operand is a view whose rows
 * and columns split into factors with a stride each (Split), so xc is read
 * straight from x, or from a zero-padded copy of one image in the scratch,
 * as long as it is the operand read as scalars (A): conv2d tiles y[n]^T = xc[n]^T @ w^T and
 * conv2d_grad_w dw^T = xc[n] @ g[n]^T that way, with the channels as the
 * vector columns.  Where that costs more (be_gemm_cost: few channels, short
 * sums), the products run as written above instead, with xc packed.
 * conv2d_grad_x runs without col2im where it can, as one product per phase
 * of dx's positions (emit_conv2d_grad_x_phased); else as written above,
 * with the positions or the window elements as the columns, whichever is
 * cheaper.  The operand read as row vectors (B) is packed contiguous into
 * the scratch (be_conv_scratch) unless it already is.  matmul runs on the
 * same tiles (emit_matmul).
 *
 * Each result element sums its terms in an order that depends only on the
 * op and its shapes: conv2d over (c, kh, kw) in order; conv2d_grad_w over
 * n, then (oh, ow); conv2d_grad_x by phases over (o, kh, kw), else over o
 * for each (c, kh, kw, oh, ow) in order (col2im).  Tiles start from zero
 * and take llvm.fmuladd (which may fuse, as in matmul); no other
 * reassociation, so results are the same on every run. */

typedef struct {
    int64_t C, H, W, O, KH, KW, Ho, Wo, stride, pad;    /* the images: cg->images */
    int64_t K, P;               /* C*KH*KW and Ho*Wo */
    int64_t Hp, Wp;             /* H and W padded */
} ConvDims;

/* The sizes of n from its result o[0] and operands o[1], o[2]. */
static ConvDims conv_dims(const IrNode *n, const Opnd *o)
{
    const IrType *x, *w, *y;
    if (n->op == OP_CONV2D)
        x = &o[1].t, w = &o[2].t, y = &o[0].t;
    else if (n->op == OP_CONV2D_GRAD_X)
        x = &o[0].t, w = &o[2].t, y = &o[1].t;
    else
        x = &o[1].t, w = &o[0].t, y = &o[2].t;
    ConvDims d = {
        .C = x->dim[1], .H = x->dim[2], .W = x->dim[3], .O = w->dim[0], .KH = w->dim[2],
        .KW = w->dim[3], .Ho = y->dim[2], .Wo = y->dim[3], .stride = n->list[IR_CONV_STRIDE],
        .pad = n->list[IR_CONV_PAD],
    };
    d.K = d.C * d.KH * d.KW;
    d.P = d.Ho * d.Wo;
    d.Hp = d.H + 2 * d.pad;
    d.Wp = d.W + 2 * d.pad;
    return d;
}

/* An index split row-major into up to three factors, each with a stride:
 * i = (i0*dim[1] + i1)*dim[2] + i2 is at i0*stride[0] + i1*stride[1] +
 * i2*stride[2]. */
typedef struct {
    int n;
    int64_t dim[3], stride[3];
} Split;

static Split split1(int64_t d0, int64_t s0) { return (Split){1, {d0, 1, 1}, {s0, 0, 0}}; }
static Split split2(int64_t d0, int64_t s0, int64_t d1, int64_t s1) { return (Split){2, {d0, d1, 1}, {s0, s1, 0}}; }
static Split split3(int64_t d0, int64_t s0, int64_t d1, int64_t s1, int64_t d2, int64_t s2)
{
    return (Split){3, {d0, d1, d2}, {s0, s1, s2}};
}

/* Drop the extent-1 factors of a (and of b, which has a's dims, if not
 * NULL) and merge each factor into the next where both step evenly. */
static void split_simplify(Split *a, Split *b)
{
    Split na = {0}, nb = {0};
    for (int f = 0; f < a->n; f++) {
        if (a->dim[f] == 1 && (f < a->n - 1 || na.n > 0))
            continue;
        if (na.n > 0) {
            int l = na.n - 1;
            bool even = na.stride[l] == a->dim[f] * a->stride[f] && (!b || nb.stride[l] == b->dim[f] * b->stride[f]);
            if (even) {
                na.dim[l] *= a->dim[f];
                na.stride[l] = a->stride[f];
                if (b) {
                    nb.dim[l] *= b->dim[f];
                    nb.stride[l] = b->stride[f];
                }
                continue;
            }
        }
        na.dim[na.n] = a->dim[f];
        na.stride[na.n++] = a->stride[f];
        if (b) {
            nb.dim[nb.n] = b->dim[f];
            nb.stride[nb.n++] = b->stride[f];
        }
    }
    *a = na;
    if (b)
        *b = nb;
}

/* The offset of index i (digits by division by constant extents). */
static LLVMValueRef split_offset(Cg *cg, const Split *s, LLVMValueRef i)
{
    LLVMValueRef off = NULL, q = i;
    for (int f = s->n - 1; f >= 0; f--) {
        LLVMValueRef digit = q;
        if (f > 0) {
            LLVMValueRef d = c64(cg, s->dim[f]);
            digit = LLVMBuildURem(cg->b, q, d, "");
            q = LLVMBuildUDiv(cg->b, q, d, "");
        }
        if (s->stride[f]) {
            LLVMValueRef t = LLVMBuildNSWMul(cg->b, digit, c64(cg, s->stride[f]), "");
            off = off ? idx_add(cg, off, t) : t;
        }
    }
    return off ? off : c64(cg, 0);
}

/* A matrix view for a product: element (i, j) is element base + r(i) +
 * c(j) of o (base an i64 value: an image's offset).  The columns of a
 * result or of an operand read as row vectors have one factor. */
typedef struct {
    Opnd o;
    LLVMValueRef base;
    Split r, c;
} Mat;

/* The view of o with rows r and columns c from element 0.  A product's
 * A columns and B rows are one index: their splits have the same dims. */
static Mat mat(Cg *cg, const Opnd *o, Split r, Split c) { return (Mat){*o, c64(cg, 0), r, c}; }

static LLVMValueRef view_load(Cg *cg, const Mat *m, LLVMValueRef idx)
{
    return load_at(cg, &m->o, be_in_memory(&m->o.a) ? idx : NULL);
}

/* The nr elements idx, idx + cs, ... (cs: the column stride) as a vector
 * (nr = 1: a scalar). */
static LLVMValueRef view_load_vec(Cg *cg, const Mat *m, LLVMValueRef idx, int nr)
{
    int64_t cs = m->c.stride[0];
    if (nr == 1 || !be_in_memory(&m->o.a) || cs == 0)
        return splat(cg, view_load(cg, m, idx), nr);
    if (cs == 1)
        return load_vec_at(cg, &m->o, idx, nr);
    LLVMValueRef v = LLVMGetPoison(LLVMVectorType(elem_type(cg, m->o.a.dtype), (unsigned)nr));
    for (int l = 0; l < nr; l++)
        v = LLVMBuildInsertElement(cg->b, v, view_load(cg, m, idx_add(cg, idx, c64(cg, l * cs))), c64(cg, l), "");
    return v;
}

/* Store the first `ns` of the nr elements of v at idx, idx + cs, ... of m. */
static void view_store_vec(Cg *cg, Mat *m, LLVMValueRef idx, int nr, int ns, LLVMValueRef v)
{
    int64_t cs = m->c.stride[0];
    if (nr > 1 && cs == 1 && ns == nr) {
        LLVMTypeRef t = elem_type(cg, m->o.a.dtype);
        if (m->o.a.offset)
            idx = idx_add(cg, idx, c64(cg, m->o.a.offset));
        LLVMValueRef s = LLVMBuildStore(cg->b, v, LLVMBuildInBoundsGEP2(cg->b, t, m->o.v, &idx, 1, ""));
        LLVMSetAlignment(s, (unsigned)ir_dtype_size(m->o.a.dtype));
        return;
    }
    for (int l = 0; l < ns; l++)
        store_at(cg, &m->o, idx_add(cg, idx, c64(cg, l * cs)),
                 nr == 1 ? v : LLVMBuildExtractElement(cg->b, v, c64(cg, l), ""));
}

/* What a product's tiles apply to their results before storing them: the
 * loop of cg->root, the product being cg->product, with its other
 * operands z[] (in fused_operands' order) as views over the result's
 * indices; with `sum2`, cg->other's terms a2 @ b2 first, into the same
 * accumulators. */
typedef struct {
    int n;
    Mat z[BE_FUSE_LEAVES];
    bool sum2;
    Mat a2, b2;
} Epilogue;

/* The first ns of the nr elements idx, idx + cs, ... of m as a vector
 * (the others zero), reading no element past them. */
static LLVMValueRef view_load_lanes(Cg *cg, const Mat *m, LLVMValueRef idx, int nr, int ns)
{
    if (ns == nr || !be_in_memory(&m->o.a) || m->c.stride[0] == 0)
        return view_load_vec(cg, m, idx, nr);
    LLVMValueRef v = LLVMConstNull(LLVMVectorType(elem_type(cg, m->o.a.dtype), (unsigned)nr));
    for (int l = 0; l < ns; l++)
        v = LLVMBuildInsertElement(cg->b, v, view_load(cg, m, idx_add(cg, idx, c64(cg, l * m->c.stride[0]))),
                                   c64(cg, l), "");
    return v;
}

/* How many times to unroll a tile's innermost loop of n terms: its
 * largest divisor up to 4 (no remainder loop) once n is at least 64.  A
 * term is 12 FMAs (6 rows by 2 vectors) against 11 other instructions,
 * the loop's increments and branch among them; unrolled, the loads take
 * constant offsets instead.  The Omniglot MLP's x W1^T (784 terms) and
 * dW1 (75) ran 5-7% faster; sine's terms are fewer than 64.  A loop whose
 * body holds written-out terms (emit_tile_terms) is long enough: the conv
 * net's forward products ran slower unrolled. */
static int terms_unroll(int64_t n)
{
    for (int u = 4; n >= 64 && u > 1; u--)
        if (n % u == 0)
            return u;
    return 0;
}

/* acc[r] += A[irow[r], k] * B[k, j0 ..] for r < mr, k over the factors of
 * A's columns in order: the inner loop of a register tile. */
static void emit_tile_terms(Cg *cg, const Mat *A, const Mat *B, const LLVMValueRef *irow, LLVMValueRef j0, int mr,
                            int nr, LLVMTypeRef vt, LLVMValueRef *acc)
{
    LLVMValueRef arow[BE_TILE_ROWS];
    LLVMValueRef bcol = idx_add(cg, B->base, LLVMBuildNSWMul(cg->b, j0, c64(cg, B->c.stride[0]), ""));
    for (int r = 0; r < mr; r++)
        arow[r] = idx_add(cg, A->base, split_offset(cg, &A->r, irow[r]));
    /* The innermost factors written out, when the last is as short as a
     * window's row (kw = 3), or at most 8 with other factors' loops around
     * it (a weight gradient's 7 positions of a row, in loops over rows and
     * images), for up to 16 terms (a 3 x 3 window): as loops, their
     * branches and the pointer updates around them cost as much as the
     * terms.  The terms keep their order. */
    int loops = A->c.n;
    int64_t run = 1;            /* terms written out */
    if (A->c.dim[loops - 1] <= (loops > 1 ? 8 : 4))
        while (loops > 0 && run * A->c.dim[loops - 1] <= 16)
            run *= A->c.dim[--loops];
    Loop lk[3];
    LLVMValueRef kv[3];
    for (int f = 0; f < loops; f++)
        kv[f] = range_open(cg, &lk[f], 0, A->c.dim[f]);
    for (int64_t u = 0; u < run; u++) {
        for (int f = A->c.n - 1, rest = (int)u; f >= loops; f--) {
            kv[f] = c64(cg, rest % A->c.dim[f]);
            rest /= (int)A->c.dim[f];
        }
        LLVMValueRef ak = linear(cg, A->c.n, kv, A->c.stride), bk = linear(cg, B->r.n, kv, B->r.stride);
        LLVMValueRef b = view_load_vec(cg, B, idx_add(cg, bcol, bk), nr);
        for (int r = 0; r < mr; r++) {
            LLVMValueRef args[3] = {splat(cg, view_load(cg, A, idx_add(cg, arow[r], ak)), nr), b,
                                    LLVMBuildLoad2(cg->b, vt, acc[r], "")};
            LLVMBuildStore(cg->b, intrinsic(cg, "llvm.fmuladd", vt, args, 3), acc[r]);
        }
    }
    for (int f = loops - 1; f >= 0; f--) {
        lk[f].scalar = true;        /* already vectors, and sequential in k */
        if (f == loops - 1 && run == 1)
            lk[f].unroll = terms_unroll(A->c.dim[f]);
        range_close(cg, &lk[f]);
    }
}

/* Row i of a tile, the sums v of C's columns j0 .. j0+nr (element index
 * crow in C), stored: its first ns lanes, and with an epilogue e, e's
 * value at each element instead of the sum. */
static void tile_store(Cg *cg, Mat *C, const Epilogue *e, LLVMValueRef i, LLVMValueRef crow, LLVMValueRef j0, int nr,
                       int ns, LLVMValueRef v)
{
    if (e) {
        LLVMValueRef x[BE_FUSE_LEAVES];
        for (int q = 0; q < e->n; q++) {
            const Mat *z = &e->z[q];
            LLVMValueRef zc = LLVMBuildNSWMul(cg->b, j0, c64(cg, z->c.stride[0]), "");
            x[q] = view_load_lanes(cg, z, idx_add(cg, idx_add(cg, z->base, split_offset(cg, &z->r, i)), zc), nr, ns);
        }
        int j = 0;
        v = fused_value(cg, cg->root, x, &j, v, NULL);
    }
    view_store_vec(cg, C, crow, nr, ns, v);
}

/* One register tile of C (+)= A @ B: rows i0 .. i0+mr, columns j0 ..
 * j0+nr, over the factors of A's columns (B's rows: the same dims).  Each
 * element starts from 0 (with `accumulate`, from C) and takes fmuladd(A[i,
 * k], B[k, j], .) for k in order (with e->sum2, e->a2 @ e->b2's terms
 * first); the mr accumulators are independent vectors, held in registers.
 * Only the first ns columns are stored (the others are B's padding); with
 * an epilogue e, its value at each element instead of the sum. */
static void emit_gemm_tile(Cg *cg, Mat *C, const Mat *A, const Mat *B, LLVMValueRef i0, LLVMValueRef j0, int mr,
                           int nr, int ns, bool accumulate, const Epilogue *e)
{
    LLVMTypeRef t = elem_type(cg, C->o.a.dtype), vt = nr > 1 ? LLVMVectorType(t, (unsigned)nr) : t;
    LLVMValueRef crow[BE_TILE_ROWS], acc[BE_TILE_ROWS], irow[BE_TILE_ROWS] = {NULL};
    LLVMValueRef ccol = LLVMBuildNSWMul(cg->b, j0, c64(cg, C->c.stride[0]), "");
    for (int r = 0; r < mr; r++) {
        LLVMValueRef i = r ? LLVMBuildNUWAdd(cg->b, i0, c64(cg, r), "") : i0;
        irow[r] = i;
        crow[r] = idx_add(cg, idx_add(cg, C->base, split_offset(cg, &C->r, i)), ccol);
        acc[r] = entry_alloca(cg, vt, "acc");
        LLVMBuildStore(cg->b, accumulate ? view_load_vec(cg, C, crow[r], nr) : LLVMConstNull(vt), acc[r]);
    }
    if (e && e->sum2)
        emit_tile_terms(cg, &e->a2, &e->b2, irow, j0, mr, nr, vt, acc);
    emit_tile_terms(cg, A, B, irow, j0, mr, nr, vt, acc);
    for (int r = 0; r < mr; r++)
        tile_store(cg, C, e, irow[r], crow[r], j0, nr, ns, LLVMBuildLoad2(cg->b, vt, acc[r], ""));
}

/* C (+)= A @ B for C m x n by register tiles (smaller at the edges: the
 * last columns in tiles of halving widths, so that every vector is a power
 * of two, or with `padded`, where B's rows have zeros up to be_tile_pad
 * columns, in one tile of that width): column blocks outside, so that a
 * block of B stays in cache while every row block of A passes.  Simplifies
 * the views' splits first. */
static void emit_gemm(Cg *cg, Mat *C, Mat *A, Mat *B, int64_t m, int64_t n, bool accumulate, bool padded,
                      const Epilogue *e)
{
    split_simplify(&C->r, NULL);
    split_simplify(&A->r, NULL);
    split_simplify(&A->c, &B->r);
    DType dt = C->o.a.dtype;
    int nr = be_tile_cols(dt);
    /* column groups: count tiles of width w storing ns columns each */
    int ng = 0, w[8], ns[8];
    int64_t count[8], j0 = 0;
    for (int wi = nr; wi >= 1; wi /= 2) {
        int64_t c = wi == nr || !padded ? (n - j0) / wi : 0;
        if (c) {
            w[ng] = ns[ng] = wi, count[ng++] = c;
            j0 += c * wi;
        }
    }
    if (padded && n > j0)               /* the rest in one tile */
        w[ng] = (int)(be_tile_pad(n, dt) - j0), ns[ng] = (int)(n - j0), count[ng++] = 1;
    int64_t mb = m / BE_TILE_ROWS;
    j0 = 0;
    for (int g = 0; g < ng; g++) {
        Loop lj, li;
        LLVMValueRef j = range_open(cg, &lj, 0, count[g]);
        j = idx_add(cg, c64(cg, j0), LLVMBuildNUWMul(cg->b, j, c64(cg, w[g]), ""));
        for (int rows = 0; rows < 2; rows++) {
            int h = rows ? (int)(m % BE_TILE_ROWS) : BE_TILE_ROWS;
            if (h == 0 || (!rows && mb == 0))
                continue;
            LLVMValueRef i = range_open(cg, &li, 0, rows ? 1 : mb);
            i = rows ? c64(cg, mb * BE_TILE_ROWS) : LLVMBuildNUWMul(cg->b, i, c64(cg, BE_TILE_ROWS), "");
            emit_gemm_tile(cg, C, A, B, i, j, h, w[g], ns[g], accumulate, e);
            range_close(cg, &li);
        }
        range_close(cg, &lj);
        j0 += count[g] * w[g];
    }
}

/* Operand o restricted to image n (its dim 0 dropped). */
static Opnd conv_image(Cg *cg, const Opnd *o, LLVMValueRef n)
{
    Opnd r = *o;
    r.t.rank = r.a.rank = o->t.rank - 1;
    for (int k = 0; k < r.t.rank; k++) {
        r.t.dim[k] = o->t.dim[k + 1];
        r.a.stride[k] = o->a.stride[k + 1];
    }
    if (be_in_memory(&o->a) && o->a.stride[0]) {
        LLVMValueRef off = LLVMBuildNSWMul(cg->b, n, c64(cg, o->a.stride[0]), "");
        r.v = LLVMBuildInBoundsGEP2(cg->b, elem_type(cg, o->a.dtype), o->v, &off, 1, "img");
    }
    return r;
}

/* A region of the node's scratch at byte offset off, as a dense value of
 * `rank` dims `dim` (rank 0: read and written through views only). */
static Opnd conv_scratch(Cg *cg, DType dt, int64_t off, int rank, const int *dim)
{
    IrType t = {.dtype = dt, .rank = rank};
    for (int k = 0; k < rank; k++)
        t.dim[k] = dim[k];
    Opnd o = {.a = be_access_dense(t, BE_ARENA, 0, 0), .t = t};
    LLVMValueRef at = c64(cg, off);
    o.v = off ? LLVMBuildInBoundsGEP2(cg->b, LLVMInt8TypeInContext(cg->ctx), cg->scratch, &at, 1, "scratch")
              : cg->scratch;
    return o;
}

/* One round of emit_transpose's and emit_dot's, on rows a and b of w
 * lanes (r and r + h of a block): *lo gets, in each 2h lanes, a's first h
 * then b's first h; *hi a's last h then b's last h. */
static void shuffle_halves(Cg *cg, LLVMValueRef a, LLVMValueRef b, int h, int w, LLVMValueRef *lo, LLVMValueRef *hi)
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
    LLVMTypeRef vt = LLVMVectorType(elem_type(cg, src->a.dtype), (unsigned)w);
    Loop li, lj;
    LLVMValueRef i0 = LLVMBuildNSWMul(cg->b, range_open(cg, &li, 0, ib / w), c64(cg, w), "");
    LLVMValueRef j0 = LLVMBuildNSWMul(cg->b, range_open(cg, &lj, 0, jb / w), c64(cg, w), "");
    li.scalar = lj.scalar = true;           /* vectors already */
    LLVMValueRef v[8];
    for (int r = 0; r < w; r++)
        v[r] = load_mem(cg, src, idx_add(cg, linear(cg, 1, &i0, &ss), idx_add(cg, c64(cg, r * ss), j0)), vt);
    for (int h = w / 2; h >= 1; h /= 2)
        for (int r = 0; r < w; r++)
            if (!(r & h))
                shuffle_halves(cg, v[r], v[r + h], h, w, &v[r], &v[r + h]);
    for (int c = 0; c < w; c++) {
        Opnd d = *dst;
        store_at(cg, &d, idx_add(cg, linear(cg, 1, &j0, &ds), idx_add(cg, c64(cg, c * ds), i0)), v[c]);
    }
    range_close(cg, &lj);
    range_close(cg, &li);
    /* rows [ib, I), then columns [jb, J) of rows [0, ib) */
    Opnd de = *dst, se = *src;
    de.a.rank = se.a.rank = 2;
    de.a.stride[0] = 1, de.a.stride[1] = ds;
    se.a.stride[0] = ss, se.a.stride[1] = 1;
    Opnd d1 = de, s1 = se;
    d1.a.offset += ib, s1.a.offset += ib * ss;
    if (ib < I)
        emit_map(cg, NULL, 2, (int[]){(int)(I - ib), (int)J}, &d1, 1, &s1);
    de.a.offset += jb * ds, se.a.offset += jb;
    if (ib > 0 && jb < J)
        emit_map(cg, NULL, 2, (int[]){(int)ib, (int)(J - jb)}, &de, 1, &se);
}

/* dst = src elementwise over src's shape, dst written through `stride`
 * (a permuting copy). */
static void emit_copy_to(Cg *cg, const Opnd *dst, const int64_t *stride, const Opnd *src)
{
    Opnd d = *dst;
    d.t = src->t;
    d.a.rank = src->t.rank;
    memcpy(d.a.stride, stride, sizeof(int64_t) * (size_t)src->t.rank);
    Iter it = {.nacc = 2};
    for (int k = 0; k < src->t.rank; k++)
        iter_add_dim(&it, src->t.dim[k], (int64_t[]){d.a.stride[k], src->a.stride[k]});
    iter_coalesce(&it, false);
    int w = be_vector_lanes(src->a.dtype);
    if (it.rank == 2 && be_in_memory(&src->a) && be_in_memory(&d.a) && it.dim[0] >= w && it.dim[1] >= w) {
        int p = it.stride[1][1] == 1 ? 1 : it.stride[1][0] == 1 ? 0 : -1;     /* src dense along p */
        if (p >= 0 && it.stride[0][1 - p] == 1) {
            emit_transpose(cg, &d, src, it.dim[1 - p], it.dim[p], it.stride[0][p], it.stride[1][1 - p]);
            return;
        }
    }
    emit_map(cg, NULL, src->t.rank, src->t.dim, &d, 1, src);
}

/* Zero all of o (in memory). */
static void emit_zero(Cg *cg, Opnd *o)
{
    Opnd zero = {.a = {.base = BE_IMM, .dtype = o->a.dtype, .imm = 0, .rank = o->t.rank}};
    emit_map(cg, NULL, o->t.rank, o->t.dim, o, 1, &zero);
}

/* Image x (rank 3, [C,H,W]) with its padding: itself when there is none,
 * else the padded copy `pad` in the scratch (its border zeroed once by the
 * caller) with x copied into its middle.  Sets *padded to whether it is
 * the copy, whose positions are then shifted by the pad. */
static Opnd conv_padded(Cg *cg, const ConvDims *d, const Opnd *x, const Opnd *pad, bool *padded)
{
    *padded = d->pad > 0;
    if (!*padded)
        return *x;
    Opnd mid = *pad;
    mid.a.offset = d->pad * d->Wp + d->pad;
    emit_copy_to(cg, &mid, pad->a.stride, x);
    return *pad;
}

/* The loops over every window element k = (c, kh, kw) at every output
 * position p = (oh, ow), in that order (x's), setting iv[0..5) to c, kh,
 * kw, oh, ow. */
static void window_open(Cg *cg, const ConvDims *d, Loop *l, LLVMValueRef *iv)
{
    const int64_t ext[5] = {d->C, d->KH, d->KW, d->Ho, d->Wo};
    for (int i = 0; i < 5; i++)
        iv[i] = range_open(cg, &l[i], 0, ext[i]);
}

static void window_close(Cg *cg, Loop *l)
{
    for (int i = 4; i >= 0; i--)
        range_close(cg, &l[i]);
}

/* The index in image x (rank 3) of window element iv: at (c, oh*stride +
 * kh - pad, ow*stride + kw - pad), or without the "- pad" in a padded
 * copy.  Sets *inside to whether that is inside x (NULL when it always is),
 * and where it is not, the index is one that is (so that an access there
 * stays in bounds). */
static LLVMValueRef window_index(Cg *cg, const ConvDims *d, const Opnd *x, bool padded, const LLVMValueRef *iv,
                                 LLVMValueRef *inside)
{
    LLVMValueRef s = c64(cg, d->stride);
    LLVMValueRef at[3] = {iv[0], idx_add(cg, LLVMBuildNSWMul(cg->b, iv[3], s, ""), iv[1]),
                          idx_add(cg, LLVMBuildNSWMul(cg->b, iv[4], s, ""), iv[2])};
    *inside = NULL;
    if (d->pad && !padded) {
        LLVMValueRef pad = c64(cg, d->pad), zero = c64(cg, 0);
        at[1] = LLVMBuildNSWSub(cg->b, at[1], pad, "");
        at[2] = LLVMBuildNSWSub(cg->b, at[2], pad, "");
        *inside = LLVMBuildAnd(cg->b, LLVMBuildICmp(cg->b, LLVMIntULT, at[1], c64(cg, d->H), ""),
                               LLVMBuildICmp(cg->b, LLVMIntULT, at[2], c64(cg, d->W), ""), "inside");
        at[1] = LLVMBuildSelect(cg->b, *inside, at[1], zero, "");
        at[2] = LLVMBuildSelect(cg->b, *inside, at[2], zero, "");
    }
    return linear(cg, 3, at, x->a.stride);
}

/* k*ks + p*ps for window element iv. */
static LLVMValueRef window_col(Cg *cg, const ConvDims *d, const LLVMValueRef *iv, int64_t ks, int64_t ps)
{
    int64_t st[5] = {d->KH * d->KW * ks, d->KW * ks, ks, d->Wo * ps, ps};
    return linear(cg, 5, iv, st);
}

/* im2col: dst(k, p) at k*ks + p*ps = xc of image x (rank 3; `padded`: a
 * padded copy), 0 in the padding. */
static void emit_im2col(Cg *cg, const ConvDims *d, const Opnd *x, bool padded, Opnd *dst, int64_t ks, int64_t ps)
{
    Loop l[5];
    LLVMValueRef iv[5], inside;
    window_open(cg, d, l, iv);
    LLVMValueRef idx = window_index(cg, d, x, padded, iv, &inside);
    LLVMValueRef e = load_at(cg, x, be_in_memory(&x->a) ? idx : NULL);
    if (inside)
        e = LLVMBuildSelect(cg->b, inside, e, LLVMConstNull(elem_type(cg, x->a.dtype)), "");
    store_at(cg, dst, window_col(cg, d, iv, ks, ps), e);
    window_close(cg, l);
}

/* col2im: image dx (rank 3, in memory; `padded`: a padded copy) +=
 * src(k, p) at k*ks + p*ps for every window element, those in the
 * padding dropped. */
static void emit_col2im(Cg *cg, const ConvDims *d, Opnd *dx, bool padded, const Opnd *src, int64_t ks, int64_t ps)
{
    Loop l[5];
    LLVMValueRef iv[5], inside;
    window_open(cg, d, l, iv);
    LLVMValueRef idx = window_index(cg, d, dx, padded, iv, &inside);
    LLVMValueRef e = load_at(cg, src, window_col(cg, d, iv, ks, ps));
    if (inside)
        e = LLVMBuildSelect(cg->b, inside, e, LLVMConstNull(elem_type(cg, src->a.dtype)), "");
    store_at(cg, dx, idx, LLVMBuildFAdd(cg->b, load_at(cg, dx, idx), e, ""));
    window_close(cg, l);
}

/* The stride of w's window elements k = (c, kh, kw) as one dim, or -1
 * when they do not step evenly. */
static int64_t w_k_stride(const Opnd *w)
{
    Split k = split3(w->t.dim[1], w->a.stride[1], w->t.dim[2], w->a.stride[2], w->t.dim[3], w->a.stride[3]);
    split_simplify(&k, NULL);
    return k.n == 1 ? k.stride[0] : -1;
}

/* The stride of image g's positions p = (oh, ow) as one dim, or -1. */
static int64_t g_p_stride(const Opnd *g)
{
    Split p = split2(g->t.dim[1], g->a.stride[1], g->t.dim[2], g->a.stride[2]);
    split_simplify(&p, NULL);
    return p.n == 1 ? p.stride[0] : -1;
}

/* The scratch regions of a node (be_conv_scratch). */
typedef struct {
    Opnd w;                     /* [C,KH,KW,O]: w^T packed, or conv2d_grad_w's sums dw^T; read as (o, k) views too */
    Opnd x, g;                  /* read and written through views */
    Opnd pad;                   /* [C,Hp,Wp]: a padded image, when direct and pad > 0 */
    bool padded;                /* pad is there */
    Opnd gpad;                  /* [O,gpad_h,gpad_w]: conv2d_grad_x's padded g, when phased */
} ConvScratch;

static ConvScratch conv_scratch_regions(Cg *cg, const ConvDims *d, DType dt, const BeConvScratch *s)
{
    ConvScratch r;
    r.w = conv_scratch(cg, dt, s->w, 4, (int[]){(int)d->C, (int)d->KH, (int)d->KW, (int)d->O});
    r.x = conv_scratch(cg, dt, s->x, 0, NULL);
    r.g = conv_scratch(cg, dt, s->g, 0, NULL);
    r.padded = s->direct && d->pad;
    r.pad = conv_scratch(cg, dt, s->pad, r.padded ? 3 : 0, (int[]){(int)d->C, (int)d->Hp, (int)d->Wp});
    r.gpad = conv_scratch(cg, dt, s->gpad, s->phased ? 3 : 0, (int[]){(int)d->O, (int)s->gpad_h, (int)s->gpad_w});
    return r;
}

/* Image x as read by a product: in place, or its padded copy (made here;
 * the caller zeroed the copy's border before the image loop). */
static Opnd conv_source(Cg *cg, const ConvDims *d, const Opnd *x, const ConvScratch *s, bool *padded)
{
    if (s->padded)
        return conv_padded(cg, d, x, &s->pad, padded);
    *padded = false;
    return *x;
}

/* y = conv2d(x, w): y[n]^T = xc[n]^T @ w^T with x's windows read in place
 * (columns: channels), or y[n] = w @ xc[n] with xc packed (columns:
 * positions). */
static void emit_conv2d(Cg *cg, const ConvDims *d, Opnd *o, ConvScratch *s, bool direct)
{
    const Opnd *w = &o[2];
    const int64_t *ws = w->a.stride;
    DType dt = o[0].a.dtype;
    bool by_o = direct && be_gemm_cost(d->P, d->O, d->K, true, false, false, dt) <=
                              be_gemm_cost(d->O, d->P, d->K, false, false, false, dt) + 1.5 * (double)(d->K * d->P);
    Mat wt = mat(cg, w, split3(d->C, ws[1], d->KH, ws[2], d->KW, ws[3]), split1(d->O, ws[0]));
    if (by_o && be_in_memory(&w->a) && ws[0] != 1) {       /* w^T packed: K x O */
        emit_copy_to(cg, &s->w, (int64_t[]){1, d->KH * d->KW * d->O, d->KW * d->O, d->O}, w);
        wt = mat(cg, &s->w, split3(d->C, d->KH * d->KW * d->O, d->KH, d->KW * d->O, d->KW, d->O), split1(d->O, 1));
    }
    if (s->padded)
        emit_zero(cg, &s->pad);
    Loop ln;
    LLVMValueRef n = loop_open_to(cg, &ln, 0, cg->images);
    Opnd x = conv_image(cg, &o[1], n), y = conv_image(cg, &o[0], n);
    bool padded;
    Opnd xs = conv_source(cg, d, &x, s, &padded);
    if (by_o) {
        const int64_t *st = xs.a.stride;
        Mat a = mat(cg, &xs, split2(d->Ho, d->stride * st[1], d->Wo, d->stride * st[2]),
                    split3(d->C, st[0], d->KH, st[1], d->KW, st[2]));
        Mat c = mat(cg, &y, split1(d->P, 1), split1(d->O, d->P));
        emit_gemm(cg, &c, &a, &wt, d->P, d->O, false, false, NULL);
    } else {
        emit_im2col(cg, d, &xs, padded, &s->x, d->P, 1);
        Mat a = mat(cg, w, split1(d->O, ws[0]), split3(d->C, ws[1], d->KH, ws[2], d->KW, ws[3]));
        Mat b = mat(cg, &s->x, split3(d->C, d->KH * d->KW * d->P, d->KH, d->KW * d->P, d->KW, d->P),
                    split1(d->P, 1));
        Mat c = mat(cg, &y, split1(d->O, d->P), split1(d->P, 1));
        emit_gemm(cg, &c, &a, &b, d->O, d->P, false, false, NULL);
    }
    range_close(cg, &ln);
}

/* conv2d_grad_x by phases.  A dx position (h, v) is reached by the
 * kernel rows kh = rh + stride*jh and columns kw = rv + stride*jv of its
 * phase (rh, rv) = ((h + pad) % stride, (v + pad) % stride), from g's
 * position (qh - jh, qv - jv) with (qh, qv) = ((h + pad) / stride, (v + pad)
 * / stride).  So each phase of dx's positions is one product: dx_phase^T
 * (positions x C) = gp (positions x (o, jh, jv)) @ w_phase ((o, jh, jv) x
 * C), gp read in place from g padded with zeros (gpad), w_phase w's
 * elements of the phase, packed.  No column sums, no col2im: each element
 * sums over (o, jh, jv) in order. */
typedef struct {
    int64_t jh, jv;             /* kernel rows and columns of the phase */
    int64_t qh0, mh, qv0, mv;   /* its dx positions: qh in [qh0, qh0 + mh), ... */
} ConvPhase;

/* floor(a / b) for b > 0 */
static int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

static ConvPhase conv_phase(const ConvDims *d, int64_t rh, int64_t rv)
{
    int64_t s = d->stride;
    ConvPhase p;
    p.jh = rh < d->KH ? (d->KH - rh + s - 1) / s : 0;
    p.jv = rv < d->KW ? (d->KW - rv + s - 1) / s : 0;
    p.qh0 = (d->pad - rh + s - 1) / s;      /* h >= 0; pad - rh > -s */
    p.qv0 = (d->pad - rv + s - 1) / s;
    p.mh = floor_div(d->H - 1 + d->pad - rh, s) + 1 - p.qh0;
    p.mv = floor_div(d->W - 1 + d->pad - rv, s) + 1 - p.qv0;
    p.mh = p.mh > 0 ? p.mh : 0;
    p.mv = p.mv > 0 ? p.mv : 0;
    return p;
}

/* The cost (be_gemm_cost's) of conv2d_grad_x by phases, per image. */
static double phased_cost(const ConvDims *d, const BeConvScratch *bs, DType dt)
{
    double cost = (double)(d->O * bs->gpad_h * bs->gpad_w);
    for (int64_t rh = 0; rh < d->stride; rh++)
        for (int64_t rv = 0; rv < d->stride; rv++) {
            ConvPhase p = conv_phase(d, rh, rv);
            if (p.jh && p.jv && p.mh && p.mv)
                cost += be_gemm_cost(p.mh * p.mv, d->C, d->O * p.jh * p.jv, true, false, false, dt);
        }
    return cost;
}

static void emit_conv2d_grad_x_phased(Cg *cg, const ConvDims *d, Opnd *o, ConvScratch *s, const BeConvScratch *bs)
{
    const Opnd *w = &o[2];
    const int64_t *ws = w->a.stride;
    int64_t S = d->stride, at = 0, start[BE_CONV_MAX_PHASES] = {0};
    bool gaps = false;
    for (int64_t rh = 0; rh < S; rh++)
        for (int64_t rv = 0; rv < S; rv++) {
            ConvPhase p = conv_phase(d, rh, rv);
            start[rh * S + rv] = at;
            gaps |= p.mh && p.mv && !(p.jh && p.jv);
            if (!p.jh || !p.jv)
                continue;
            /* w[o, c, rh + S*jh, rv + S*jv] as [O,C,JH,JV] into rows (o, jh, jv), columns c */
            Opnd src = *w, dst = s->w;
            src.t.dim[2] = (int)p.jh;
            src.t.dim[3] = (int)p.jv;
            src.a.stride[2] = S * ws[2];
            src.a.stride[3] = S * ws[3];
            src.a.offset += rh * ws[2] + rv * ws[3];
            dst.a.offset = at;
            emit_copy_to(cg, &dst, (int64_t[]){p.jh * p.jv * d->C, 1, p.jv * d->C, d->C}, &src);
            at += d->O * d->C * p.jh * p.jv;
        }
    if (gaps)                           /* positions no kernel element reaches */
        emit_zero(cg, &o[0]);
    emit_zero(cg, &s->gpad);
    int64_t gh = bs->gpad_h * bs->gpad_w, gw = bs->gpad_w;     /* gpad's strides of o and a row */
    Loop ln;
    LLVMValueRef n = loop_open_to(cg, &ln, 0, cg->images);
    Opnd g = conv_image(cg, &o[1], n), dx = conv_image(cg, &o[0], n), mid = s->gpad;
    mid.a.offset = bs->gpad_top * gw + bs->gpad_left;
    emit_copy_to(cg, &mid, s->gpad.a.stride, &g);
    const int64_t *xs = dx.a.stride;
    for (int64_t rh = 0; rh < S; rh++)
        for (int64_t rv = 0; rv < S; rv++) {
            ConvPhase p = conv_phase(d, rh, rv);
            if (!p.jh || !p.jv || !p.mh || !p.mv)
                continue;
            Mat a = mat(cg, &s->gpad, split2(p.mh, gw, p.mv, 1), split3(d->O, gh, p.jh, -gw, p.jv, -1));
            a.base = c64(cg, (p.qh0 + bs->gpad_top) * gw + p.qv0 + bs->gpad_left);
            Mat b = mat(cg, &s->w, split3(d->O, p.jh * p.jv * d->C, p.jh, p.jv * d->C, p.jv, d->C), split1(d->C, 1));
            b.base = c64(cg, start[rh * S + rv]);
            Mat c = mat(cg, &dx, split2(p.mh, S * xs[1], p.mv, S * xs[2]), split1(d->C, xs[0]));
            c.base = c64(cg, (S * p.qh0 + rh - d->pad) * xs[1] + (S * p.qv0 + rv - d->pad) * xs[2]);
            emit_gemm(cg, &c, &a, &b, p.mh * p.mv, d->C, false, false, NULL);
        }
    range_close(cg, &ln);
}

/* dx = conv2d_grad_x(g, w): per image, the window sums dc = g[n]^T @ w
 * (columns: window elements) or dc^T = w^T @ g[n] (columns: positions) into
 * the scratch, then added up by col2im into dx, or into a padded copy of
 * the image whose middle is then copied into dx. */
static void emit_conv2d_grad_x(Cg *cg, const ConvDims *d, Opnd *o, ConvScratch *s, const BeConvScratch *bs)
{
    const Opnd *w = &o[2];
    const int64_t *ws = w->a.stride;
    DType dt = o[0].a.dtype;
    double cost_k = be_gemm_cost(d->P, d->K, d->O, false, false, false, dt) + (double)(d->K * d->P);  /* + strided reads */
    double cost_p = be_gemm_cost(d->K, d->P, d->O, false, false, false, dt);
    if (bs->phased && phased_cost(d, bs, dt) <= fmin(cost_k, cost_p) + 2 * (double)(d->K * d->P)) {
        emit_conv2d_grad_x_phased(cg, d, o, s, bs);
        return;
    }
    bool by_k = cost_k <= cost_p;
    if (!s->padded)
        emit_zero(cg, &o[0]);
    int64_t ks = w_k_stride(w);
    Mat wm = mat(cg, w, split1(d->O, ws[0]), split1(d->K, ks));         /* O x K, rows read as vectors */
    if (by_k && be_in_memory(&w->a) && ks != 1) {
        emit_copy_to(cg, &s->w, (int64_t[]){d->K, d->KH * d->KW, d->KW, 1}, w);
        wm = mat(cg, &s->w, split1(d->O, d->K), split1(d->K, 1));
    }
    Loop ln;
    LLVMValueRef n = loop_open_to(cg, &ln, 0, cg->images);
    Opnd g = conv_image(cg, &o[1], n), dx = conv_image(cg, &o[0], n);
    const int64_t *gs = g.a.stride;
    int64_t cks = by_k ? 1 : d->P, cps = by_k ? d->K : 1;   /* dc's strides */
    if (by_k) {
        Mat a = mat(cg, &g, split2(d->Ho, gs[1], d->Wo, gs[2]), split1(d->O, gs[0]));
        Mat c = mat(cg, &s->x, split1(d->P, d->K), split1(d->K, 1));
        emit_gemm(cg, &c, &a, &wm, d->P, d->K, false, false, NULL);
    } else {
        int64_t ps = g_p_stride(&g);
        Mat b = mat(cg, &g, split1(d->O, gs[0]), split1(d->P, ps));
        if (be_in_memory(&g.a) && ps != 1) {
            emit_copy_to(cg, &s->g, (int64_t[]){d->P, d->Wo, 1}, &g);
            b = mat(cg, &s->g, split1(d->O, d->P), split1(d->P, 1));
        }
        Mat a = mat(cg, w, split3(d->C, ws[1], d->KH, ws[2], d->KW, ws[3]), split1(d->O, ws[0]));
        Mat c = mat(cg, &s->x, split1(d->K, d->P), split1(d->P, 1));
        emit_gemm(cg, &c, &a, &b, d->K, d->P, false, false, NULL);
    }
    if (s->padded) {
        emit_zero(cg, &s->pad);
        emit_col2im(cg, d, &s->pad, true, &s->x, cks, cps);
        Opnd mid = s->pad;
        mid.a.offset = d->pad * d->Wp + d->pad;
        mid.t = dx.t;
        emit_map(cg, NULL, 3, dx.t.dim, &dx, 1, &mid);
    } else {
        emit_col2im(cg, d, &dx, false, &s->x, cks, cps);
    }
    range_close(cg, &ln);
}

/* dw = conv2d_grad_w(x, g): dw^T += xc[n] @ g[n]^T with x's windows read in
 * place (columns: channels; summed in the scratch, then transposed into
 * dw), or dw += g[n] @ xc[n]^T with xc packed (columns: window elements). */
static void emit_conv2d_grad_w(Cg *cg, const ConvDims *d, Opnd *o, ConvScratch *s, bool direct)
{
    DType dt = o[0].a.dtype;
    bool by_o = direct && be_gemm_cost(d->K, d->O, d->P, false, true, false, dt) + (double)(d->O * d->P) <=
                              be_gemm_cost(d->O, d->K, d->P, false, true, false, dt) + 1.5 * (double)(d->K * d->P);
    Opnd *sum = &s->w;                  /* dw^T: [C,KH,KW,O] */
    emit_zero(cg, by_o ? sum : &o[0]);
    if (by_o && s->padded)
        emit_zero(cg, &s->pad);
    Loop ln;
    LLVMValueRef n = loop_open_to(cg, &ln, 0, cg->images);
    Opnd x = conv_image(cg, &o[1], n), g = conv_image(cg, &o[2], n);
    const int64_t *gs = g.a.stride;
    if (by_o) {
        bool padded;
        Opnd xs = conv_source(cg, d, &x, s, &padded);
        const int64_t *st = xs.a.stride;
        Mat a = mat(cg, &xs, split3(d->C, st[0], d->KH, st[1], d->KW, st[2]),
                    split2(d->Ho, d->stride * st[1], d->Wo, d->stride * st[2]));
        Mat b = mat(cg, &g, split2(d->Ho, gs[1], d->Wo, gs[2]), split1(d->O, gs[0]));      /* g^T, P x O */
        if (be_in_memory(&g.a) && gs[0] != 1) {
            emit_copy_to(cg, &s->g, (int64_t[]){1, d->Wo * d->O, d->O}, &g);
            b = mat(cg, &s->g, split2(d->Ho, d->Wo * d->O, d->Wo, d->O), split1(d->O, 1));
        }
        Mat c = mat(cg, sum, split1(d->K, d->O), split1(d->O, 1));
        emit_gemm(cg, &c, &a, &b, d->K, d->O, true, false, NULL);
    } else {
        emit_im2col(cg, d, &x, false, &s->x, 1, d->K);
        Mat a = mat(cg, &g, split1(d->O, gs[0]), split2(d->Ho, gs[1], d->Wo, gs[2]));
        Mat b = mat(cg, &s->x, split2(d->Ho, d->Wo * d->K, d->Wo, d->K), split1(d->K, 1));
        Mat c = mat(cg, &o[0], split1(d->O, d->K), split1(d->K, 1));
        emit_gemm(cg, &c, &a, &b, d->O, d->K, true, false, NULL);
    }
    range_close(cg, &ln);
    if (by_o)
        emit_copy_to(cg, &o[0], (int64_t[]){d->KH * d->KW, d->KW, 1, d->K}, sum);
}

/* C = A @ B (m x n, K terms) as dot products along k, A's rows and B's
 * columns both dense along k (be_matmul_plan's `dot`).  A tile is row i of
 * C by w columns (w: 32 bytes of elements), w accumulators of w lanes:
 * lane l of column j's sums A[i, k] * B[k, j] over the whole vectors of k
 * with k = l mod w, in order.  log2(w) rounds add the lanes in halves (the
 * rounds of emit_transpose, with adds: lanes l and l + w/2, then l + w/4,
 * and so on), which leaves column j0 + c's sum in lane c of one vector;
 * the last K mod w terms follow in order.  The last n mod w columns run in
 * one tile that stores fewer.  With an epilogue e, its value at each
 * element instead. */
static void emit_dot(Cg *cg, Mat *C, Mat *A, Mat *B, int64_t m, int64_t n, int64_t K, const Epilogue *e)
{
    split_simplify(&C->r, NULL);
    split_simplify(&A->r, NULL);
    split_simplify(&A->c, &B->r);
    DType dt = C->o.a.dtype;
    int w = be_vector_lanes(dt);
    int64_t kb = K / w * w;
    LLVMTypeRef t = elem_type(cg, dt), vt = LLVMVectorType(t, (unsigned)w);
    for (int last = 0; last < 2; last++) {
        int cols = last ? (int)(n % w) : w;
        int64_t count = last ? cols > 0 : n / w;
        if (count == 0)
            continue;
        Loop lj, li, lk;
        LLVMValueRef j0 = last ? c64(cg, n / w * w)
                               : LLVMBuildNUWMul(cg->b, range_open(cg, &lj, 0, count), c64(cg, w), "");
        LLVMValueRef i = range_open(cg, &li, 0, m);
        LLVMValueRef arow = idx_add(cg, A->base, split_offset(cg, &A->r, i)), bcol[8], acc[8], v[8];
        for (int c = 0; c < cols; c++) {
            bcol[c] = idx_add(cg, B->base, split_offset(cg, &B->c, idx_add(cg, j0, c64(cg, c))));
            acc[c] = entry_alloca(cg, vt, "acc");
            LLVMBuildStore(cg->b, LLVMConstNull(vt), acc[c]);
        }
        if (kb > 0) {
            LLVMValueRef k0 = LLVMBuildNUWMul(cg->b, range_open(cg, &lk, 0, kb / w), c64(cg, w), "");
            LLVMValueRef a = load_vec_at(cg, &A->o, idx_add(cg, arow, k0), w);
            for (int c = 0; c < cols; c++) {
                LLVMValueRef args[3] = {a, load_vec_at(cg, &B->o, idx_add(cg, bcol[c], k0), w),
                                        LLVMBuildLoad2(cg->b, vt, acc[c], "")};
                LLVMBuildStore(cg->b, intrinsic(cg, "llvm.fmuladd", vt, args, 3), acc[c]);
            }
            lk.scalar = true;       /* vectors already, and sequential in k */
            range_close(cg, &lk);
        }
        for (int c = 0; c < w; c++)
            v[c] = c < cols ? LLVMBuildLoad2(cg->b, vt, acc[c], "") : LLVMConstNull(vt);
        for (int h = w / 2; h >= 1; h /= 2) {
            for (int r = 0; r < h; r++) {
                LLVMValueRef lo, hi;
                shuffle_halves(cg, v[r], v[r + h], h, w, &lo, &hi);
                v[r] = LLVMBuildFAdd(cg->b, lo, hi, "");
            }
        }
        for (int64_t k = kb; k < K; k++) {
            LLVMValueRef b = LLVMConstNull(vt);
            for (int c = 0; c < cols; c++)
                b = LLVMBuildInsertElement(cg->b, b, load_at(cg, &B->o, idx_add(cg, bcol[c], c64(cg, k))), c64(cg, c),
                                           "");
            LLVMValueRef args[3] = {splat(cg, load_at(cg, &A->o, idx_add(cg, arow, c64(cg, k))), w), b, v[0]};
            v[0] = intrinsic(cg, "llvm.fmuladd", vt, args, 3);
        }
        LLVMValueRef crow = idx_add(cg, idx_add(cg, C->base, split_offset(cg, &C->r, i)),
                                    LLVMBuildNSWMul(cg->b, j0, c64(cg, C->c.stride[0]), ""));
        tile_store(cg, C, e, i, crow, j0, w, cols, v[0]);
        range_close(cg, &li);
        if (!last)
            range_close(cg, &lj);
    }
}

/* The views of product A @ B's operands for its tiles: a's rows and b's
 * columns the result's, b's rows read as vectors (swapped: C^T = B^T @
 * A^T, A's columns read as vectors). */
static void product_views(Cg *cg, const Opnd *A, const Opnd *B, bool swap, Mat *a, Mat *b)
{
    int64_t M = A->t.dim[0], K = A->t.dim[1], N = B->t.dim[1];
    const int64_t *as = A->a.stride, *bs = B->a.stride;
    *a = swap ? mat(cg, B, split1(N, bs[1]), split1(K, bs[0])) : mat(cg, A, split1(M, as[0]), split1(K, as[1]));
    *b = swap ? mat(cg, A, split1(K, as[1]), split1(M, as[0])) : mat(cg, B, split1(K, bs[0]), split1(N, bs[1]));
}

/* C = A @ B in emit_gemm's tiles, as be_matmul_plan says: B's rows as
 * vectors, or C^T = B^T @ A^T with A's columns as vectors; the vector
 * operand packed dense into the scratch first where its vectors are not
 * contiguous, the other copied into rows dense along k where tiles would
 * read it a cache line per term.  Every element of C sums over k in order
 * either way.  Or, with both operands dense along k, as emit_dot's dot
 * products, in either orientation.  With nz > 0 the product is fused into
 * cg->root's loop, whose other operands are z[0, nz), and C is that loop's
 * result; with `sum2`, the loop's other product, A2 @ B2 (cg->other), runs
 * in the same tiles, its terms first. */
static void emit_matmul(Cg *cg, Opnd *C, const Opnd *A, const Opnd *B, const Opnd *z, int nz, const Opnd *A2,
                        const Opnd *B2)
{
    int64_t M = A->t.dim[0], K = A->t.dim[1], N = B->t.dim[1];
    BeMatmulPlan mp = be_matmul_plan(C->t, &A->a, A->t, &B->a, B->t);
    const Opnd *vec = mp.swap ? A : B;              /* the operand read as vectors */
    const int64_t *cs = C->a.stride;
    int64_t m = mp.swap ? N : M, n = mp.swap ? M : N;
    Mat a, b;
    product_views(cg, A, B, mp.swap, &a, &b);
    Mat c = mp.swap ? mat(cg, C, split1(N, cs[1]), split1(M, cs[0])) : mat(cg, C, split1(M, cs[0]), split1(N, cs[1]));
    Epilogue e = {.n = nz, .sum2 = A2 != NULL};
    if (A2) {
        product_views(cg, A2, B2, mp.swap, &e.a2, &e.b2);
        split_simplify(&e.a2.r, NULL);
        split_simplify(&e.a2.c, &e.b2.r);
    }
    for (int q = 0; q < nz; q++) {
        const int64_t *zs = z[q].a.stride;
        e.z[q] = mp.swap ? mat(cg, &z[q], split1(N, zs[1]), split1(M, zs[0]))
                         : mat(cg, &z[q], split1(M, zs[0]), split1(N, zs[1]));
    }
    if (mp.dot) {
        emit_dot(cg, &c, &a, &b, m, n, K, cg->product >= 0 ? &e : NULL);
        C->v = c.o.v;
        return;
    }
    if (mp.pack) {
        /* K x n with rows of be_tile_pad(n) elements, zeros past n */
        int64_t np = be_tile_pad(n, vec->a.dtype);
        Opnd p = conv_scratch(cg, vec->a.dtype, 0, 2, (int[]){(int)K, (int)np});
        if (np > n) {
            Opnd pad = p;           /* columns [n, np) of every row */
            pad.t.dim[1] = (int)(np - n);
            pad.a.offset += n;
            emit_zero(cg, &pad);
        }
        emit_copy_to(cg, &p, mp.swap ? (int64_t[]){1, np} : (int64_t[]){np, 1}, vec);
        b = mat(cg, &p, split1(K, np), split1(n, 1));
    }
    if (mp.pack_rows) {
        /* m x K, dense along k; the copy walks the operand along k
         * outside, so that it reads in memory order */
        const Opnd *sc = mp.swap ? B : A;
        Opnd p = conv_scratch(cg, sc->a.dtype, mp.rows_at, 2, (int[]){(int)m, (int)K});
        Opnd by_k = *sc;
        by_k.t.dim[0] = K, by_k.t.dim[1] = m;
        by_k.a.stride[0] = a.c.stride[0], by_k.a.stride[1] = a.r.stride[0];
        emit_copy_to(cg, &p, (int64_t[]){1, K}, &by_k);
        a = mat(cg, &p, split1(m, K), split1(K, 1));
    }
    emit_gemm(cg, &c, &a, &b, m, n, false, mp.pack, cg->product >= 0 ? &e : NULL);
    C->v = c.o.v;           /* a register result: its element */
}

static bool emit_conv(Cg *cg, const IrNode *n, Opnd *o)
{
    ConvDims d = conv_dims(n, o);
    BeConvScratch bs = be_conv_scratch(cg->f, n);
    ConvScratch s = conv_scratch_regions(cg, &d, o[0].a.dtype, &bs);
    if (n->op == OP_CONV2D)
        emit_conv2d(cg, &d, o, &s, bs.direct);
    else if (n->op == OP_CONV2D_GRAD_X)
        emit_conv2d_grad_x(cg, &d, o, &s, &bs);
    else
        emit_conv2d_grad_w(cg, &d, o, &s, bs.direct);
    return true;
}

/* The code of node n: o[0] is its result, o[1..no) its operands (with a
 * fused product, its two operands, those of a second one summed in its
 * tiles, then the other operands of the loop). */
static bool emit_node(Cg *cg, const IrNode *n, Opnd *o, int no)
{
    switch (ir_op_info[n->op].kind) {
    case KIND_UNARY:
    case KIND_BINARY:
        if (cg->product < 0)
            return emit_map(cg, n, n->type.rank, n->type.dim, &o[0], no - 1, &o[1]);
        if (cg->other >= 0)
            emit_matmul(cg, &o[0], &o[1], &o[2], &o[5], no - 5, &o[3], &o[4]);
        else
            emit_matmul(cg, &o[0], &o[1], &o[2], &o[3], no - 3, NULL, NULL);
        return true;
    case KIND_REDUCE:
        return emit_reduce(cg, n, &o[0], &o[1], no - 1);
    case KIND_MATMUL:
        emit_matmul(cg, &o[0], &o[1], &o[2], NULL, 0, NULL, NULL);
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
    case KIND_CONV:
        return emit_conv(cg, n, o);
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

/* Whether o[i] of node's value function is a convolution's batch of
 * images, whose count (dim 0) the function takes as a parameter, so that
 * the support and query sets share one function. */
static bool images_dim(const IrNode *node, int i)
{
    return node && ir_op_info[node->op].kind == KIND_CONV && i != (node->op == OP_CONV2D_GRAD_W ? 0 : 2);
}

/* Whether operand i (> 0) is the result's own buffer: a value computed in
 * place of an operand it reads last (BePlan), which gets no parameter of its
 * own (two noalias pointers must not meet). */
static bool result_buffer(const Opnd *o, int i)
{
    return i > 0 && o[i].a.base == BE_ARENA && o[0].a.base == BE_ARENA && o[i].a.byte_off == o[0].a.byte_off;
}

/* Whether operand i of a value function is one of its parameters. */
static bool is_param(const Opnd *o, int i)
{
    return (be_in_memory(&o[i].a) || (i > 0 && o[i].a.base == BE_REG)) && !result_buffer(o, i);
}

/* Start the value function `name` for the result o[0] and operands o[1..n)
 * of node (NULL: a copy): one noalias pointer parameter per operand in
 * memory, the element of each operand in a register, then a noalias
 * pointer to `scratch` bytes of the arena if that is not 0, then for a
 * convolution the image count (i64); the element of a register result
 * returned.  Binds each o[i].v (and cg->scratch, cg->images) to its
 * parameter and leaves cg->b at the function's start. */
static void value_fn_begin(Cg *cg, const char *name, const IrNode *node, Opnd *o, int n, int64_t scratch)
{
    static const char *const pname[MAX_ACC] = {"y", "a", "b", "c", "d", "e"};
    LLVMTypeRef pt[MAX_ACC + 2];
    int np = 0;
    for (int i = 0; i < n; i++)
        if (is_param(o, i))
            pt[np++] = be_in_memory(&o[i].a) ? cg->ptr : elem_type(cg, o[i].a.dtype);
    if (scratch)
        pt[np++] = cg->ptr;
    bool conv = images_dim(node, 1);
    if (conv)
        pt[np++] = cg->i64;
    LLVMTypeRef rt = o[0].a.base == BE_REG ? elem_type(cg, o[0].a.dtype) : cg->void_;
    cg->fn = LLVMAddFunction(cg->mod, name, LLVMFunctionType(rt, pt, (unsigned)np, 0));
    LLVMSetLinkage(cg->fn, LLVMInternalLinkage);
    add_attr(cg, cg->fn, LLVMAttributeFunctionIndex, "nounwind", 0);
    add_attr(cg, cg->fn, LLVMAttributeFunctionIndex, "noinline", 0);
    unsigned p = 0;
    for (int i = 0; i < n; i++) {
        if (!is_param(o, i))
            continue;
        o[i].v = LLVMGetParam(cg->fn, p);
        LLVMSetValueName2(o[i].v, pname[i], 1);
        if (be_in_memory(&o[i].a)) {
            add_attr(cg, cg->fn, p + 1, "noalias", 0);
            add_attr(cg, cg->fn, p + 1, "nocapture", 0);
            add_attr(cg, cg->fn, p + 1, "noundef", 0);
            add_attr(cg, cg->fn, p + 1, "nonnull", 0);
            if (i > 0)
                add_attr(cg, cg->fn, p + 1, "readonly", 0);
            add_attr(cg, cg->fn, p + 1, "align", ir_dtype_size(o[i].a.dtype));
            Opnd one = o[i];            /* of a batch of images, the first is there */
            if (images_dim(node, i))
                one.t.dim[0] = 1;
            add_attr(cg, cg->fn, p + 1, "dereferenceable", span_bytes(&one));
        }
        p++;
    }
    for (int i = 1; i < n; i++)
        if (result_buffer(o, i))
            o[i].v = o[0].v;
    cg->scratch = NULL;
    if (scratch) {
        static const char *const attrs[] = {"noalias", "nocapture", "noundef", "nonnull"};
        cg->scratch = LLVMGetParam(cg->fn, p);
        LLVMSetValueName2(cg->scratch, "scratch", 7);
        for (size_t a = 0; a < sizeof attrs / sizeof *attrs; a++)
            add_attr(cg, cg->fn, p + 1, attrs[a], 0);
        add_attr(cg, cg->fn, p + 1, "align", 64);
        add_attr(cg, cg->fn, p + 1, "dereferenceable", (uint64_t)scratch);
        p++;
    }
    cg->images = conv ? LLVMGetParam(cg->fn, p) : NULL;
    if (conv)
        LLVMSetValueName2(cg->images, "images", 6);
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

/* In the chunk being built: the element of BE_REG value v.  From an
 * earlier chunk it comes through a slot of regs, which the call that
 * returned it is made to fill. */
static LLVMValueRef reg_arg(Cg *cg, ValueId v)
{
    if (cg->reg_chunk[v] == cg->nchunk)
        return cg->reg[v];
    LLVMValueRef call = cg->reg_call[v];
    LLVMTypeRef t = LLVMTypeOf(call);
    if (cg->reg_slot[v] < 0) {
        cg->reg_slot[v] = cg->nslot++;
        LLVMValueRef regs = LLVMGetParam(LLVMGetBasicBlockParent(LLVMGetInstructionParent(call)), 3);
        LLVMPositionBuilderBefore(cg->slot_b, LLVMGetNextInstruction(call));
        LLVMValueRef idx = c64(cg, cg->reg_slot[v]);
        LLVMBuildStore(cg->slot_b, call, LLVMBuildInBoundsGEP2(cg->slot_b, cg->i64, regs, &idx, 1, ""));
    }
    LLVMValueRef idx = c64(cg, cg->reg_slot[v]);
    cg->reg[v] = LLVMBuildLoad2(cg->top, t, LLVMBuildInBoundsGEP2(cg->top, cg->i64, cg->regs, &idx, 1, ""), "");
    cg->reg_chunk[v] = cg->nchunk;
    return cg->reg[v];
}

/* In the chunk being built: the argument that passes access a to a value
 * function (the buffer's address, or the register's element). */
static LLVMValueRef entry_arg(Cg *cg, const BeAccess *a)
{
    switch (a->base) {
    case BE_INPUT: return cg->in[a->index];
    case BE_OUTPUT: return cg->out[a->index];
    case BE_REG: return reg_arg(cg, a->index);
    default: break;
    }
    if (!a->byte_off)
        return cg->arena;
    LLVMValueRef off = c64(cg, a->byte_off);
    return LLVMBuildInBoundsGEP2(cg->top, LLVMInt8TypeInContext(cg->ctx), cg->arena, &off, 1, "buf");
}

/* What the code of a value function depends on: the op and its attributes,
 * those of the operands computed in its loop, and, for the result and each
 * operand, how it is reached (memory, an immediate, a register), its
 * element type, shape (but a convolution's image count), offset and
 * strides.  Equal keys give the same function, so it is built once: a
 * meta-step repeats the same shapes many times.  (Whether a buffer is in
 * the arena, and so 64-byte aligned, is left out on purpose: it would
 * split functions for the sake of an alignment that AVX code does not
 * need.) */
typedef struct {
    /* op, scratch bytes, value, ival, nlist, list; the fused operands'
     * op, value and ival (fused_key); per access: class, dtype,
     * rank, dims, imm or offset, strides (8 bytes each) */
    unsigned char b[8 * (5 + IR_MAX_RANK + 3 * 2 * MAX_ACC + MAX_ACC * (5 + 2 * IR_MAX_RANK))];
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

/* For each operand of v: -1, or the fused op, value, ival (and its own). */
static void fused_key(const Cg *cg, Key *k, ValueId v)
{
    const IrNode *n = &cg->f->node[v];
    for (int a = 0; a < ir_op_info[n->op].arity; a++) {
        const IrNode *x = &cg->f->node[n->arg[a]];
        if (!fused(cg, n->arg[a])) {
            key_i64(k, -1);
            continue;
        }
        key_i64(k, x->op);
        key_f64(k, x->value);
        key_i64(k, x->ival);
        if (x->op != OP_MATMUL)
            fused_key(cg, k, n->arg[a]);
    }
}

static void value_key(const Cg *cg, Key *k, const IrNode *node, const Opnd *o, int n, int64_t scratch)
{
    k->n = 0;
    key_i64(k, node ? (int64_t)node->op : -1);
    key_i64(k, scratch);
    if (node) {
        key_f64(k, node->value);
        key_i64(k, node->ival);
        key_i64(k, node->nlist);
        for (int i = 0; i < node->nlist; i++)
            key_i64(k, node->list[i]);
        if (cg->root >= 0)
            fused_key(cg, k, cg->root);
    }
    for (int i = 0; i < n; i++) {
        const BeAccess *a = &o[i].a;
        int cls = a->base == BE_IMM ? 0 : a->base == BE_REG ? 1 : 2;
        key_i64(k, cls);
        key_i64(k, result_buffer(o, i));
        key_i64(k, a->dtype);
        key_i64(k, o[i].t.rank);
        for (int d = 0; d < o[i].t.rank; d++)
            key_i64(k, d == 0 && images_dim(node, i) ? 0 : o[i].t.dim[d]);
        if (a->base == BE_IMM)
            key_f64(k, a->imm);
        if (be_in_memory(a)) {
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
 * (node NULL: a copy), building it as `name` unless an equal one exists;
 * with `scratch` bytes of arena at byte offset scratch_off when that is not
 * 0.  Returns the call. */
static LLVMValueRef emit_value_fn(Cg *cg, const char *name, const IrNode *node, Opnd *o, int n, int64_t scratch,
                                  int64_t scratch_off, bool *ok)
{
    LLVMValueRef args[MAX_ACC + 2];
    int na = 0;
    for (int i = 0; i < n; i++)
        if (is_param(o, i))
            args[na++] = entry_arg(cg, &o[i].a);
    if (scratch)
        args[na++] = entry_arg(cg, &(BeAccess){.base = BE_ARENA, .byte_off = scratch_off});
    if (images_dim(node, 1))
        args[na++] = c64(cg, o[1].t.dim[0]);
    Key k;
    value_key(cg, &k, node, o, n, scratch);
    uint64_t h = key_hash(&k);
    LLVMValueRef fn = cg->fn_cap ? cg->fn_done[fn_slot(cg, &k, h)] : NULL;
    *ok = true;
    if (!fn) {
        value_fn_begin(cg, name, node, o, n, scratch);
        *ok = node ? emit_node(cg, node, o, n) : emit_map(cg, NULL, o[0].t.rank, o[0].t.dim, &o[0], 1, &o[1]);
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

/* Name the first n (3 or 4) pointer parameters of an entry or chunk
 * function in, out, arena and regs: never captured, defined, in and out
 * only read, the arena aligned to 64. */
static void pointer_params(Cg *cg, LLVMValueRef fn, unsigned n)
{
    static const char *const pname[4] = {"in", "out", "arena", "regs"};
    for (unsigned i = 0; i < n; i++) {
        LLVMSetValueName2(LLVMGetParam(fn, i), pname[i], strlen(pname[i]));
        add_attr(cg, fn, i + 1, "nocapture", 0);
        add_attr(cg, fn, i + 1, "noundef", 0);
        if (i < 2)
            add_attr(cg, fn, i + 1, "readonly", 0);
    }
    add_attr(cg, fn, 3, "align", 64);
}

/* Begin chunk cg->nchunk of the public entry (its whole body when
 * cg->chunk_fn is NULL): position cg->top in it and load in[i], out[j]. */
static void chunk_begin(Cg *cg)
{
    LLVMValueRef fn = cg->entry;
    if (cg->chunk_fn) {
        char name[256];
        value_fn_name(cg, name, sizeof name, "chunk", cg->nchunk);
        LLVMTypeRef pt[4] = {cg->ptr, cg->ptr, cg->ptr, cg->ptr};
        fn = LLVMAddFunction(cg->mod, name, LLVMFunctionType(cg->void_, pt, 4, 0));
        LLVMSetLinkage(fn, LLVMInternalLinkage);
        add_attr(cg, fn, LLVMAttributeFunctionIndex, "nounwind", 0);
        add_attr(cg, fn, LLVMAttributeFunctionIndex, "noinline", 0);
        add_attr(cg, fn, LLVMAttributeFunctionIndex, "optnone", 0);
        pointer_params(cg, fn, 4);
        add_attr(cg, fn, 4, "noalias", 0);
        cg->chunk_fn = arena_grow(&cg->mem, cg->chunk_fn, &cg->chunk_cap, cg->nchunk + 1, sizeof *cg->chunk_fn);
        cg->chunk_fn[cg->nchunk] = fn;
        cg->regs = LLVMGetParam(fn, 3);
    }
    LLVMPositionBuilderAtEnd(cg->top, LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry"));
    entry_params(cg, cg->f, fn);
    cg->calls = 0;
}

/* Room for one more call in the chunk being built: the next chunk when
 * this one is full. */
static void chunk_room(Cg *cg)
{
    if (cg->chunk_fn && cg->calls == BE_CHUNK_CALLS) {
        LLVMBuildRetVoid(cg->top);
        cg->nchunk++;
        chunk_begin(cg);
    }
    cg->calls++;
}

/* The public entry of a chunked function: its slots, and each chunk
 * called in turn. */
static void chunks_call(Cg *cg)
{
    LLVMBuildRetVoid(cg->top);
    LLVMPositionBuilderAtEnd(cg->top, LLVMAppendBasicBlockInContext(cg->ctx, cg->entry, "entry"));
    LLVMValueRef regs = LLVMBuildArrayAlloca(cg->top, cg->i64, c64(cg, cg->nslot ? cg->nslot : 1), "regs");
    LLVMValueRef args[4] = {LLVMGetParam(cg->entry, 0), LLVMGetParam(cg->entry, 1), LLVMGetParam(cg->entry, 2), regs};
    for (int k = 0; k <= cg->nchunk; k++)
        LLVMBuildCall2(cg->top, LLVMGlobalGetValueType(cg->chunk_fn[k]), cg->chunk_fn[k], args, 4, "");
}

/* The body of the public entry of f: a value function per computed value
 * in node order, then a copy function per output not computed in place;
 * in chunks, past BE_CHUNK_CALLS calls. */
static bool emit_func(Cg *cg, const IrFunc *f, LLVMValueRef fn)
{
    BePlan plan;
    be_plan(f, &plan);
    cg->f = f;
    cg->plan = &plan;
    cg->entry = fn;
    cg->in = calloc((size_t)f->ninput + 1, sizeof *cg->in);
    cg->out = calloc((size_t)f->noutput + 1, sizeof *cg->out);
    cg->reg = calloc((size_t)f->nnode + 1, sizeof *cg->reg);
    cg->reg_chunk = calloc((size_t)f->nnode + 1, sizeof *cg->reg_chunk);
    cg->reg_call = calloc((size_t)f->nnode + 1, sizeof *cg->reg_call);
    cg->reg_slot = malloc(((size_t)f->nnode + 1) * sizeof *cg->reg_slot);
    bool ok = cg->in && cg->out && cg->reg && cg->reg_chunk && cg->reg_call && cg->reg_slot;
    if (!ok)
        diag_error(cg->d, no_loc, "out of memory compiling '@%s'", f->name);
    int calls = 0;
    for (ValueId v = 0; ok && v < f->nnode; v++) {
        calls += plan.computed[v];
        cg->reg_slot[v] = -1;
    }
    for (int j = 0; j < f->noutput; j++)
        calls += plan.out_copy[j];
    cg->chunk_fn = NULL;
    cg->nchunk = cg->chunk_cap = cg->nslot = 0;
    if (ok && calls > BE_CHUNK_CALLS)
        cg->chunk_fn = arena_grow(&cg->mem, NULL, &cg->chunk_cap, 1, sizeof *cg->chunk_fn);
    if (ok)
        chunk_begin(cg);
    char name[256];
    for (ValueId v = 0; ok && v < f->nnode; v++) {
        if (!plan.computed[v])
            continue;
        const IrNode *n = &f->node[v];
        Opnd o[MAX_ACC] = {{.a = plan.acc[v], .t = n->type}};
        int no = 1;
        bool loop_fuses = false;
        for (int i = 0; i < ir_op_info[n->op].arity; i++)
            loop_fuses |= plan.fused_into[n->arg[i]] >= 0;
        cg->root = loop_fuses ? v : -1;
        cg->product = cg->other = -1;
        if (loop_fuses)
            cg->product = be_fused_product(f, &plan, v, &cg->other);
        ValueId product[2] = {cg->product, cg->other};
        for (int q = 0; q < 2 && product[q] >= 0; q++)
            for (int i = 0; i < 2; i++) {
                ValueId x = f->node[product[q]].arg[i];
                o[no++] = (Opnd){.a = plan.acc[x], .t = f->node[x].type};
            }
        fused_operands(cg, v, o, &no);
        value_fn_name(cg, name, sizeof name, ir_op_info[n->op].name, v);
        chunk_room(cg);
        LLVMValueRef call = emit_value_fn(cg, name, n, o, no, plan.scratch_bytes[v], plan.scratch_off[v], &ok);
        cg->root = cg->product = cg->other = -1;
        if (plan.acc[v].base == BE_REG) {
            cg->reg[v] = cg->reg_call[v] = call;
            cg->reg_chunk[v] = cg->nchunk;
        }
    }
    for (int j = 0; ok && j < f->noutput; j++) {
        if (!plan.out_copy[j])
            continue;
        IrType t = f->node[f->output[j]].type;
        Opnd o[2] = {{.a = be_access_dense(t, BE_OUTPUT, j, 0), .t = t}, {.a = plan.acc[f->output[j]], .t = t}};
        value_fn_name(cg, name, sizeof name, "out", j);
        chunk_room(cg);
        emit_value_fn(cg, name, NULL, o, 2, 0, 0, &ok);
    }
    if (ok && cg->chunk_fn)
        chunks_call(cg);
    if (ok)
        LLVMBuildRetVoid(cg->top);
    free(cg->in);
    free(cg->out);
    free(cg->reg);
    free(cg->reg_chunk);
    free(cg->reg_call);
    free(cg->reg_slot);
    cg->in = cg->out = cg->reg = cg->reg_call = NULL;
    cg->reg_chunk = cg->reg_slot = NULL;
    cg->chunk_fn = NULL;
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
    pointer_params(cg, fn, 3);
    return fn;
}

LLVMModuleRef be_codegen_module(const IrModule *m, LLVMContextRef ctx, Diag *d)
{
    if (!ir_verify_module(m, d))
        return NULL;
    Cg cg = {.ctx = ctx, .d = d, .root = -1, .product = -1, .other = -1};
    cg.mod = LLVMModuleCreateWithNameInContext("mamlc", ctx);
    cg.b = LLVMCreateBuilderInContext(ctx);
    cg.eb = LLVMCreateBuilderInContext(ctx);
    cg.top = LLVMCreateBuilderInContext(ctx);
    cg.slot_b = LLVMCreateBuilderInContext(ctx);
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
    LLVMDisposeBuilder(cg.slot_b);
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
