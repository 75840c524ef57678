/* What the GPU files share (gpu_impl.h): constants, intrinsic calls,
 * counted loops, addresses through the plan's accesses, and the kernel's
 * context slots. */
#include "gpu_impl.h"

#include <string.h>

LLVMValueRef gpu_c64(const Gpu *g, int64_t v)
{
    return LLVMConstInt(g->i64, (unsigned long long)v, 1);
}

LLVMTypeRef gpu_elem_type(const Gpu *g, DType dt)
{
    return dt == DT_F32 ? g->f32 : dt == DT_F64 ? g->f64 : g->i32;
}

LLVMValueRef gpu_alloca(Gpu *g, LLVMTypeRef t, const char *name)
{
    return LLVMBuildAlloca(g->eb, t, name);
}

LLVMValueRef gpu_intrinsic(Gpu *g, const char *name, LLVMTypeRef t, LLVMValueRef *args, unsigned n)
{
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    LLVMTypeRef fty = LLVMIntrinsicGetType(g->ctx, id, &t, t ? 1 : 0);
    return LLVMBuildCall2(g->b, fty, LLVMGetIntrinsicDeclaration(g->mod, id, &t, t ? 1 : 0), args, n, "");
}

LLVMValueRef gpu_loop_open(Gpu *g, GpuLoop *l, LLVMValueRef start, LLVMValueRef end, LLVMValueRef step)
{
    LLVMBasicBlockRef pre = LLVMGetInsertBlock(g->b);
    l->head = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "head");
    l->body = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "body");
    l->exit = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "exit");
    l->step = step;
    LLVMBuildBr(g->b, l->head);
    LLVMPositionBuilderAtEnd(g->b, l->head);
    l->iv = LLVMBuildPhi(g->b, g->i64, "i");
    LLVMAddIncoming(l->iv, &start, &pre, 1);
    LLVMBuildCondBr(g->b, LLVMBuildICmp(g->b, LLVMIntSLT, l->iv, end, ""), l->body, l->exit);
    LLVMPositionBuilderAtEnd(g->b, l->body);
    return l->iv;
}

void gpu_loop_close(Gpu *g, GpuLoop *l)
{
    LLVMValueRef next = LLVMBuildAdd(g->b, l->iv, l->step, "");
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(g->b);
    LLVMAddIncoming(l->iv, &next, &latch, 1);
    LLVMBuildBr(g->b, l->head);
    LLVMPositionBuilderAtEnd(g->b, l->exit);
}

LLVMValueRef gpu_addr(Gpu *g, const BeAccess *a, const LLVMValueRef *idx)
{
    if (a->base == BE_REG) {
        LLVMValueRef off = gpu_c64(g, g->reg_off + 8 * (int64_t)g->reg_slot[a->index]);
        return LLVMBuildInBoundsGEP2(g->b, g->i8, g->work, &off, 1, "");
    }
    LLVMValueRef base = a->base == BE_INPUT ? g->in[a->index] : a->base == BE_OUTPUT ? g->out[a->index] : g->work;
    if (a->base == BE_ARENA) {
        LLVMValueRef off = gpu_c64(g, a->byte_off);
        base = LLVMBuildInBoundsGEP2(g->b, g->i8, base, &off, 1, "");
    }
    LLVMValueRef lin = gpu_c64(g, a->offset);
    for (int k = 0; k < a->rank; k++)
        if (a->stride[k])
            lin = LLVMBuildAdd(g->b, lin, LLVMBuildMul(g->b, idx[k], gpu_c64(g, a->stride[k]), ""), "");
    return LLVMBuildInBoundsGEP2(g->b, gpu_elem_type(g, a->dtype), base, &lin, 1, "");
}

LLVMValueRef gpu_ravel(Gpu *g, IrType t, const LLVMValueRef *idx)
{
    LLVMValueRef lin = gpu_c64(g, 0);
    for (int k = 0; k < t.rank; k++)
        lin = LLVMBuildAdd(g->b, LLVMBuildMul(g->b, lin, gpu_c64(g, t.dim[k]), ""), idx[k], "");
    return lin;
}

void gpu_unravel(Gpu *g, IrType t, LLVMValueRef lin, LLVMValueRef *idx)
{
    for (int k = t.rank - 1; k >= 0; k--) {
        LLVMValueRef d = gpu_c64(g, t.dim[k]);
        idx[k] = k ? LLVMBuildURem(g->b, lin, d, "") : lin;
        if (k)
            lin = LLVMBuildUDiv(g->b, lin, d, "");
    }
}

LLVMValueRef gpu_slot(Gpu *g, LLVMValueRef ctx, int k, LLVMTypeRef t)
{
    LLVMValueRef idx = gpu_c64(g, k);
    LLVMValueRef p = LLVMBuildInBoundsGEP2(g->b, g->i64, ctx, &idx, 1, "");
    LLVMValueRef v = LLVMBuildLoad2(g->b, t, p, "");
    LLVMSetAlignment(v, 8);
    return v;
}


LLVMTypeRef gpu_stage_type(const Gpu *g)
{
    LLVMTypeRef pt[5] = {g->ptr, g->i64, g->i64, g->i64, g->i64};
    return LLVMFunctionType(g->void_, pt, 5, 0);
}
