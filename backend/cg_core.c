/* What every emitter of the CPU code generator uses (cg.h): element types
 * and constants, intrinsic calls, counted loops with their hints,
 * iteration spaces, and loads and stores through the plan's accesses. */
#include "cg.h"

#include <llvm-c/DebugInfo.h>

#include <string.h>

/* --- types and constants --- */

LLVMTypeRef cg_elem_type(const Cg *cg, DType dt)
{
    return dt == DT_F32 ? cg->f32 : dt == DT_F64 ? cg->f64 : cg->i32;
}

LLVMValueRef cg_c64(const Cg *cg, int64_t v)
{
    return LLVMConstInt(cg->i64, (unsigned long long)v, 1);
}

LLVMValueRef cg_imm(const Cg *cg, DType dt, double v)
{
    if (dt == DT_I32)
        return LLVMConstInt(cg->i32, (unsigned long long)(long long)v, 1);
    return LLVMConstReal(cg_elem_type(cg, dt), v);
}

/* --- calls --- */

LLVMValueRef cg_intrinsic(Cg *cg, const char *name, LLVMTypeRef t, LLVMValueRef *args, unsigned n)
{
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    LLVMValueRef fn = LLVMGetIntrinsicDeclaration(cg->mod, id, &t, 1);
    LLVMTypeRef fty = LLVMIntrinsicGetType(cg->ctx, id, &t, 1);
    return LLVMBuildCall2(cg->b, fty, fn, args, n, "");
}

LLVMValueRef cg_call1(Cg *cg, const char *name, LLVMTypeRef t, LLVMValueRef x)
{
    return cg_intrinsic(cg, name, t, &x, 1);
}

LLVMValueRef cg_call2(Cg *cg, const char *name, LLVMTypeRef t, LLVMValueRef x, LLVMValueRef y)
{
    LLVMValueRef args[2] = {x, y};
    return cg_intrinsic(cg, name, t, args, 2);
}

void cg_add_attr(Cg *cg, LLVMValueRef fn, LLVMAttributeIndex at, const char *name, uint64_t val)
{
    unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
    LLVMAddAttributeAtIndex(fn, at, LLVMCreateEnumAttribute(cg->ctx, kind, val));
}

LLVMValueRef cg_fcmp(Cg *cg, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b)
{
    return LLVMBuildFCmp(cg->b, p, a, b, "");
}

/* --- loops --- */

/* Opens `for (iv = start; iv < end; iv++)` (end an i64 value, start <
 * end), in a fresh block. */
LLVMValueRef cg_loop_open_to(Cg *cg, Loop *l, int64_t start, LLVMValueRef end)
{
    LLVMBasicBlockRef pre = LLVMGetInsertBlock(cg->b);
    l->head = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "loop");
    l->end = end;
    l->scalar = false;
    l->unroll = 0;
    LLVMBuildBr(cg->b, l->head);
    LLVMPositionBuilderAtEnd(cg->b, l->head);
    l->iv = LLVMBuildPhi(cg->b, cg->i64, "i");
    LLVMValueRef s = cg_c64(cg, start);
    LLVMAddIncoming(l->iv, &s, &pre, 1);
    return l->iv;
}

LLVMValueRef cg_loop_open(Cg *cg, Loop *l, int64_t start, int64_t end)
{
    return cg_loop_open_to(cg, l, start, cg_c64(cg, end));
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

void cg_loop_close(Cg *cg, Loop *l)
{
    LLVMValueRef next = LLVMBuildNUWAdd(cg->b, l->iv, cg_c64(cg, 1), "i.next");
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
 * one value, else the constant start.  Close it with cg_range_close. */
LLVMValueRef cg_range_open(Cg *cg, Loop *l, int64_t start, int64_t end)
{
    l->head = NULL;
    return end - start > 1 ? cg_loop_open(cg, l, start, end) : cg_c64(cg, start);
}

void cg_range_close(Cg *cg, Loop *l)
{
    if (l->head)
        cg_loop_close(cg, l);
}

void cg_nest_open(Cg *cg, const Iter *it, Loop *loop, LLVMValueRef *iv)
{
    for (int i = 0; i < it->rank; i++)
        iv[i] = cg_loop_open(cg, &loop[i], 0, it->dim[i]);
}

void cg_nest_close(Cg *cg, const Iter *it, Loop *loop)
{
    for (int i = it->rank - 1; i >= 0; i--)
        cg_loop_close(cg, &loop[i]);
}

/* --- iteration spaces --- */

void cg_iter_add_dim(Iter *it, int64_t dim, const int64_t *stride)
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
int cg_iter_coalesce(Iter *it, bool keep_last)
{
    int64_t dim[IR_MAX_RANK + 1], st[CG_MAX_ACC][IR_MAX_RANK + 1];
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
LLVMValueRef cg_idx_add(Cg *cg, LLVMValueRef a, LLVMValueRef b)
{
    if (LLVMIsAConstantInt(a) && !LLVMConstIntGetSExtValue(a))
        return b;
    if (LLVMIsAConstantInt(b) && !LLVMConstIntGetSExtValue(b))
        return a;
    return LLVMBuildNSWAdd(cg->b, a, b, "");
}

/* sum of iv[i] * stride[i], outer terms first so that LICM can hoist them. */
LLVMValueRef cg_linear(Cg *cg, int n, const LLVMValueRef *iv, const int64_t *stride)
{
    LLVMValueRef idx = NULL;
    for (int i = 0; i < n; i++) {
        if (stride[i] == 0)
            continue;
        LLVMValueRef t = stride[i] == 1 ? iv[i] : LLVMBuildNSWMul(cg->b, iv[i], cg_c64(cg, stride[i]), "");
        idx = idx ? cg_idx_add(cg, idx, t) : t;
    }
    return idx ? idx : cg_c64(cg, 0);
}

/* --- element access --- */

/* A value of type ty (an element or a vector of them) from o's memory at
 * element index idx. */
LLVMValueRef cg_load_mem(Cg *cg, const Opnd *o, LLVMValueRef idx, LLVMTypeRef ty)
{
    LLVMTypeRef t = cg_elem_type(cg, o->a.dtype);
    if (o->a.offset)
        idx = cg_idx_add(cg, idx, cg_c64(cg, o->a.offset));
    LLVMValueRef v = LLVMBuildLoad2(cg->b, ty, LLVMBuildInBoundsGEP2(cg->b, t, o->v, &idx, 1, ""), "");
    LLVMSetAlignment(v, (unsigned)ir_dtype_size(o->a.dtype));
    return v;
}

/* The element of o at element index idx (built only for memory). */
LLVMValueRef cg_load_at(Cg *cg, const Opnd *o, LLVMValueRef idx)
{
    if (o->a.base == BE_IMM)
        return cg_imm(cg, o->a.dtype, o->a.imm);
    if (o->a.base == BE_REG)
        return o->v;
    return cg_load_mem(cg, o, idx, cg_elem_type(cg, o->a.dtype));
}

void cg_store_at(Cg *cg, Opnd *o, LLVMValueRef idx, LLVMValueRef v)
{
    if (o->a.base == BE_REG) {
        o->v = v;
        return;
    }
    LLVMTypeRef t = cg_elem_type(cg, o->a.dtype);
    if (o->a.offset)
        idx = cg_idx_add(cg, idx, cg_c64(cg, o->a.offset));
    LLVMValueRef s = LLVMBuildStore(cg->b, v, LLVMBuildInBoundsGEP2(cg->b, t, o->v, &idx, 1, ""));
    LLVMSetAlignment(s, (unsigned)ir_dtype_size(o->a.dtype));
}

/* Access number `a` of it at the loop's induction variables. */
LLVMValueRef cg_iter_index(Cg *cg, const Iter *it, int a, const LLVMValueRef *iv)
{
    return cg_linear(cg, it->rank, iv, it->stride[a]);
}

/* A vector of n copies of x (x itself when n is 1). */
LLVMValueRef cg_splat(Cg *cg, LLVMValueRef x, int n)
{
    if (n == 1)
        return x;
    LLVMTypeRef vt = LLVMVectorType(LLVMTypeOf(x), (unsigned)n);
    LLVMValueRef v = LLVMBuildInsertElement(cg->b, LLVMGetPoison(vt), x, cg_c64(cg, 0), "");
    return LLVMBuildShuffleVector(cg->b, v, LLVMGetPoison(vt), LLVMConstNull(LLVMVectorType(cg->i32, (unsigned)n)), "");
}

/* The nr elements of o from element index idx on, contiguous, as a vector
 * (nr = 1: the element); o's one element repeated when it is not in
 * memory. */
LLVMValueRef cg_load_vec_at(Cg *cg, const Opnd *o, LLVMValueRef idx, int nr)
{
    if (nr == 1 || !be_in_memory(&o->a))
        return cg_splat(cg, cg_load_at(cg, o, idx), nr);
    return cg_load_mem(cg, o, idx, LLVMVectorType(cg_elem_type(cg, o->a.dtype), (unsigned)nr));
}

LLVMValueRef cg_entry_alloca(Cg *cg, LLVMTypeRef t, const char *name)
{
    return LLVMBuildAlloca(cg->eb, t, name);
}

/* A region of the node's scratch at byte offset off, as a dense value of
 * `rank` dims `dim` (rank 0: read and written through views only). */
Opnd cg_scratch(Cg *cg, DType dt, int64_t off, int rank, const int *dim)
{
    IrType t = {.dtype = dt, .rank = rank};
    for (int k = 0; k < rank; k++)
        t.dim[k] = dim[k];
    Opnd o = {.a = be_access_dense(t, BE_ARENA, 0, 0), .t = t};
    LLVMValueRef at = cg_c64(cg, off);
    o.v = off ? LLVMBuildInBoundsGEP2(cg->b, LLVMInt8TypeInContext(cg->ctx), cg->scratch, &at, 1, "scratch")
              : cg->scratch;
    return o;
}
