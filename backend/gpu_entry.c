/* The kernel's entries (gpu_impl.h): the grid barrier and the kernel that
 * calls the stages with a barrier before each group of them
 * (gpu_sched.c), and the host entry that runs the same groups serially. */
#include "gpu_impl.h"

/* --- the grid barrier --- */

static LLVMValueRef sreg(Gpu *g, const char *name)
{
    return gpu_intrinsic(g, name, NULL, NULL, 0);
}

/* Every thread of the grid waits here for all the others: a block's
 * threads meet (bar.sync), then its thread 0 arrives at the counter
 * bar[0] and waits until the last block to arrive resets it and advances
 * the generation bar[1]; fences (membar.gl, CUDA's __threadfence) order
 * each block's writes before its arrival and everyone's reads after the
 * release.  The grid must be resident at once (a cooperative launch). */
static LLVMValueRef grid_sync_fn(Gpu *g)
{
    LLVMValueRef fn = LLVMGetNamedFunction(g->mod, "mamlc.grid_sync");
    if (fn)
        return fn;
    fn = LLVMAddFunction(g->mod, "mamlc.grid_sync", LLVMFunctionType(g->void_, &g->ptr, 1, 0));
    LLVMSetLinkage(fn, LLVMInternalLinkage);
    LLVMValueRef saved_fn = g->fn;
    LLVMBasicBlockRef saved = LLVMGetInsertBlock(g->b);
    g->fn = fn;
    LLVMValueRef bar = LLVMGetParam(fn, 0), one = LLVMConstInt(g->i32, 1, 0), gidx = gpu_c64(g, 1);
    LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(g->ctx, fn, "entry");
    LLVMBasicBlockRef arrive = LLVMAppendBasicBlockInContext(g->ctx, fn, "arrive");
    LLVMBasicBlockRef release = LLVMAppendBasicBlockInContext(g->ctx, fn, "release");
    LLVMBasicBlockRef wait = LLVMAppendBasicBlockInContext(g->ctx, fn, "wait");
    LLVMBasicBlockRef waited = LLVMAppendBasicBlockInContext(g->ctx, fn, "waited");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(g->ctx, fn, "done");
    LLVMPositionBuilderAtEnd(g->b, entry);
    gpu_intrinsic(g, "llvm.nvvm.barrier0", NULL, NULL, 0);
    LLVMValueRef tid = sreg(g, "llvm.nvvm.read.ptx.sreg.tid.x");
    LLVMBuildCondBr(g->b, LLVMBuildICmp(g->b, LLVMIntEQ, tid, LLVMConstInt(g->i32, 0, 0), ""), arrive, done);

    LLVMPositionBuilderAtEnd(g->b, arrive);
    LLVMValueRef genp = LLVMBuildInBoundsGEP2(g->b, g->i32, bar, &gidx, 1, "");
    LLVMValueRef gen = LLVMBuildLoad2(g->b, g->i32, genp, "gen");
    LLVMSetVolatile(gen, 1);
    gpu_intrinsic(g, "llvm.nvvm.membar.gl", NULL, NULL, 0);
    LLVMValueRef old = LLVMBuildAtomicRMW(g->b, LLVMAtomicRMWBinOpAdd, bar, one, LLVMAtomicOrderingMonotonic, 0);
    LLVMValueRef last = LLVMBuildSub(g->b, sreg(g, "llvm.nvvm.read.ptx.sreg.nctaid.x"), one, "");
    LLVMBuildCondBr(g->b, LLVMBuildICmp(g->b, LLVMIntEQ, old, last, ""), release, wait);

    LLVMPositionBuilderAtEnd(g->b, release);
    LLVMValueRef st = LLVMBuildStore(g->b, LLVMConstInt(g->i32, 0, 0), bar);
    LLVMSetVolatile(st, 1);
    gpu_intrinsic(g, "llvm.nvvm.membar.gl", NULL, NULL, 0);
    LLVMBuildAtomicRMW(g->b, LLVMAtomicRMWBinOpAdd, genp, one, LLVMAtomicOrderingMonotonic, 0);
    LLVMBuildBr(g->b, done);

    LLVMPositionBuilderAtEnd(g->b, wait);
    LLVMValueRef now = LLVMBuildLoad2(g->b, g->i32, genp, "");
    LLVMSetVolatile(now, 1);
    LLVMBuildCondBr(g->b, LLVMBuildICmp(g->b, LLVMIntEQ, now, gen, ""), wait, waited);
    LLVMPositionBuilderAtEnd(g->b, waited);
    gpu_intrinsic(g, "llvm.nvvm.membar.gl", NULL, NULL, 0);
    LLVMBuildBr(g->b, done);

    LLVMPositionBuilderAtEnd(g->b, done);
    gpu_intrinsic(g, "llvm.nvvm.barrier0", NULL, NULL, 0);
    LLVMBuildRetVoid(g->b);
    g->fn = saved_fn;
    if (saved)
        LLVMPositionBuilderAtEnd(g->b, saved);
    return fn;
}

/* --- entries --- */

void gpu_kernel_entry(Gpu *g, const char *name, const LLVMValueRef *stage, const bool *starts, int nstage)
{
    LLVMValueRef fn = LLVMAddFunction(g->mod, name, LLVMFunctionType(g->void_, &g->ptr, 1, 0));
    g->fn = fn;
    LLVMPositionBuilderAtEnd(g->b, LLVMAppendBasicBlockInContext(g->ctx, fn, "entry"));
    LLVMValueRef ctx = LLVMGetParam(fn, 0);
    LLVMValueRef tid = LLVMBuildZExt(g->b, sreg(g, "llvm.nvvm.read.ptx.sreg.tid.x"), g->i64, "");
    LLVMValueRef ntid = LLVMBuildZExt(g->b, sreg(g, "llvm.nvvm.read.ptx.sreg.ntid.x"), g->i64, "");
    LLVMValueRef bid = LLVMBuildZExt(g->b, sreg(g, "llvm.nvvm.read.ptx.sreg.ctaid.x"), g->i64, "");
    LLVMValueRef nbid = LLVMBuildZExt(g->b, sreg(g, "llvm.nvvm.read.ptx.sreg.nctaid.x"), g->i64, "");
    LLVMValueRef gtid = LLVMBuildAdd(g->b, LLVMBuildMul(g->b, bid, ntid, ""), tid, "gtid");
    LLVMValueRef threads = LLVMBuildMul(g->b, nbid, ntid, "threads");
    LLVMValueRef sync = grid_sync_fn(g);
    LLVMValueRef bar = gpu_slot(g, ctx, BE_GPU_BARRIER, g->ptr);
    LLVMTypeRef pt[3] = {g->ptr, g->i64, g->i64};
    LLVMTypeRef st = LLVMFunctionType(g->void_, pt, 3, 0);
    for (int k = 0; k < nstage; k++) {
        LLVMValueRef args[3] = {ctx, gtid, threads};
        if (k > 0 && starts[k])
            LLVMBuildCall2(g->b, LLVMFunctionType(g->void_, &g->ptr, 1, 0), sync, &bar, 1, "");
        LLVMBuildCall2(g->b, st, stage[k], args, 3, "");
    }
    LLVMBuildRetVoid(g->b);
    LLVMMetadataRef md[3] = {LLVMValueAsMetadata(fn), LLVMMDStringInContext2(g->ctx, "kernel", 6),
                          LLVMValueAsMetadata(LLVMConstInt(g->i32, 1, 0))};
    LLVMAddNamedMetadataOperand(g->mod, "nvvm.annotations",
                                LLVMMetadataAsValue(g->ctx, LLVMMDNodeInContext2(g->ctx, md, 3)));
}

void gpu_host_entry(Gpu *g, const char *name, const LLVMValueRef *stage, const bool *starts, int nstage)
{
    LLVMTypeRef pt[3] = {g->ptr, g->i64, g->i64};
    LLVMValueRef fn = LLVMAddFunction(g->mod, name, LLVMFunctionType(g->void_, pt, 2, 0));
    g->fn = fn;
    LLVMPositionBuilderAtEnd(g->b, LLVMAppendBasicBlockInContext(g->ctx, fn, "entry"));
    LLVMValueRef ctx = LLVMGetParam(fn, 0), threads = LLVMGetParam(fn, 1), one = gpu_c64(g, 1);
    for (int k = 0; k < nstage;) {
        int end = k + 1;
        while (end < nstage && !starts[end])
            end++;
        GpuLoop l;
        LLVMValueRef i = gpu_loop_open(g, &l, gpu_c64(g, 0), threads, one);
        LLVMValueRef id = LLVMBuildSub(g->b, LLVMBuildSub(g->b, threads, one, ""), i, "id");
        for (int s = k; s < end; s++) {
            LLVMValueRef args[3] = {ctx, id, threads};
            LLVMBuildCall2(g->b, LLVMFunctionType(g->void_, pt, 3, 0), stage[s], args, 3, "");
        }
        gpu_loop_close(g, &l);
        k = end;
    }
    LLVMBuildRetVoid(g->b);
}
