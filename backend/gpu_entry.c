/* The kernel's entries (gpu_impl.h): the barrier of a team of blocks (or
 * of the grid), the kernel that calls the stages with a barrier before each
 * group of them (gpu_sched.c), and the host entry that runs the same
 * groups serially.
 *
 * The grid is split into teams of P blocks (the context's TEAM_BLOCKS):
 * team k computes tasks k, k + teams, ... of the batch, its threads
 * numbered across its blocks, and synchronises alone between groups, with
 * bar.sync alone when P = 1, so that a meta-step's hundreds of dependent
 * stages cost no grid-wide barrier; the batch mean, after one grid
 * barrier, runs over the whole grid. */
#include "gpu_impl.h"

/* --- the grid barrier --- */

static LLVMValueRef sreg(Gpu *g, const char *name)
{
    return gpu_intrinsic(g, name, NULL, NULL, 0);
}

/* Every thread of `blocks` blocks waits here for all the others: a
 * block's threads meet (bar.sync), then, if other blocks take part, its
 * thread 0 arrives at the counter bar[0] and waits until the last block
 * to arrive resets it and advances the generation bar[1]; fences
 * (membar.gl, CUDA's __threadfence) order each block's writes before its
 * arrival and everyone's reads after the release.  The blocks must be
 * resident at once (a cooperative launch). */
static LLVMValueRef sync_fn(Gpu *g)
{
    LLVMValueRef fn = LLVMGetNamedFunction(g->mod, "mamlc.sync");
    if (fn)
        return fn;
    LLVMTypeRef pt[2] = {g->ptr, g->i32};
    fn = LLVMAddFunction(g->mod, "mamlc.sync", LLVMFunctionType(g->void_, pt, 2, 0));
    LLVMSetLinkage(fn, LLVMInternalLinkage);
    LLVMValueRef saved_fn = g->fn;
    LLVMBasicBlockRef saved = LLVMGetInsertBlock(g->b);
    g->fn = fn;
    LLVMValueRef bar = LLVMGetParam(fn, 0), blocks = LLVMGetParam(fn, 1);
    LLVMValueRef one = LLVMConstInt(g->i32, 1, 0), zero = LLVMConstInt(g->i32, 0, 0), gidx = gpu_c64(g, 1);
    LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(g->ctx, fn, "entry");
    LLVMBasicBlockRef arrive = LLVMAppendBasicBlockInContext(g->ctx, fn, "arrive");
    LLVMBasicBlockRef release = LLVMAppendBasicBlockInContext(g->ctx, fn, "release");
    LLVMBasicBlockRef wait = LLVMAppendBasicBlockInContext(g->ctx, fn, "wait");
    LLVMBasicBlockRef waited = LLVMAppendBasicBlockInContext(g->ctx, fn, "waited");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(g->ctx, fn, "done");
    LLVMPositionBuilderAtEnd(g->b, entry);
    gpu_intrinsic(g, "llvm.nvvm.barrier0", NULL, NULL, 0);
    LLVMValueRef tid = sreg(g, "llvm.nvvm.read.ptx.sreg.tid.x");
    LLVMValueRef first = LLVMBuildICmp(g->b, LLVMIntEQ, tid, zero, "");
    LLVMValueRef others = LLVMBuildICmp(g->b, LLVMIntUGT, blocks, one, "");
    LLVMBuildCondBr(g->b, LLVMBuildAnd(g->b, first, others, ""), arrive, done);

    LLVMPositionBuilderAtEnd(g->b, arrive);
    LLVMValueRef genp = LLVMBuildInBoundsGEP2(g->b, g->i32, bar, &gidx, 1, "");
    LLVMValueRef gen = LLVMBuildLoad2(g->b, g->i32, genp, "gen");
    LLVMSetVolatile(gen, 1);
    gpu_intrinsic(g, "llvm.nvvm.membar.gl", NULL, NULL, 0);
    LLVMValueRef old = LLVMBuildAtomicRMW(g->b, LLVMAtomicRMWBinOpAdd, bar, one, LLVMAtomicOrderingMonotonic, 0);
    LLVMValueRef last = LLVMBuildSub(g->b, blocks, one, "");
    LLVMBuildCondBr(g->b, LLVMBuildICmp(g->b, LLVMIntEQ, old, last, ""), release, wait);

    LLVMPositionBuilderAtEnd(g->b, release);
    LLVMValueRef st = LLVMBuildStore(g->b, zero, bar);
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

static void call_sync(Gpu *g, LLVMValueRef bar, LLVMValueRef blocks)
{
    LLVMTypeRef pt[2] = {g->ptr, g->i32};
    LLVMValueRef args[2] = {bar, LLVMBuildTrunc(g->b, blocks, g->i32, "")};
    LLVMBuildCall2(g->b, LLVMFunctionType(g->void_, pt, 2, 0), sync_fn(g), args, 2, "");
}

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
    /* teams of P blocks: team bid / P of nbid / P, its threads numbered
     * across its blocks, its barrier the pair of counters after the grid's */
    LLVMValueRef P = gpu_slot(g, ctx, BE_GPU_TEAM_BLOCKS, g->i64);
    LLVMValueRef team = LLVMBuildUDiv(g->b, bid, P, "team"), teams = LLVMBuildUDiv(g->b, nbid, P, "teams");
    LLVMValueRef ttid = LLVMBuildAdd(g->b, LLVMBuildMul(g->b, LLVMBuildURem(g->b, bid, P, ""), ntid, ""), tid, "ttid");
    LLVMValueRef tsize = LLVMBuildMul(g->b, P, ntid, "tsize");
    LLVMValueRef bar = gpu_slot(g, ctx, BE_GPU_BARRIER, g->ptr);
    LLVMValueRef off = LLVMBuildMul(g->b, LLVMBuildAdd(g->b, team, gpu_c64(g, 1), ""), gpu_c64(g, 8), "");
    LLVMValueRef team_bar = LLVMBuildGEP2(g->b, g->i8, bar, &off, 1, "team_bar");
    for (int k = 0; k < nstage; k++) {
        bool last = k + 1 == nstage;        /* the batch mean, over the whole grid */
        if (last)
            call_sync(g, bar, nbid);
        else if (k > 0 && starts[k])
            call_sync(g, team_bar, P);
        LLVMValueRef args[5] = {ctx, last ? gpu_c64(g, 0) : team, last ? gpu_c64(g, 1) : teams, last ? gtid : ttid,
                                last ? threads : tsize};
        LLVMBuildCall2(g->b, gpu_stage_type(g), stage[k], args, 5, "");
    }
    LLVMBuildRetVoid(g->b);
    LLVMMetadataRef md[3] = {LLVMValueAsMetadata(fn), LLVMMDStringInContext2(g->ctx, "kernel", 6),
                             LLVMValueAsMetadata(LLVMConstInt(g->i32, 1, 0))};
    LLVMAddNamedMetadataOperand(g->mod, "nvvm.annotations",
                                LLVMMetadataAsValue(g->ctx, LLVMMDNodeInContext2(g->ctx, md, 3)));
}

/* Call stages [k, end) for each of `teams` teams and each of its tsize
 * thread ids, highest first. */
static void host_group(Gpu *g, LLVMValueRef ctx, const LLVMValueRef *stage, int k, int end, LLVMValueRef teams,
                       LLVMValueRef tsize)
{
    LLVMValueRef one = gpu_c64(g, 1);
    GpuLoop lt, li;
    LLVMValueRef team = gpu_loop_open(g, &lt, gpu_c64(g, 0), teams, one);
    LLVMValueRef i = gpu_loop_open(g, &li, gpu_c64(g, 0), tsize, one);
    LLVMValueRef id = LLVMBuildSub(g->b, LLVMBuildSub(g->b, tsize, one, ""), i, "id");
    for (int s = k; s < end; s++) {
        LLVMValueRef args[5] = {ctx, team, teams, id, tsize};
        LLVMBuildCall2(g->b, gpu_stage_type(g), stage[s], args, 5, "");
    }
    gpu_loop_close(g, &li);
    gpu_loop_close(g, &lt);
}

void gpu_host_entry(Gpu *g, const char *name, const LLVMValueRef *stage, const bool *starts, int nstage)
{
    LLVMTypeRef pt[3] = {g->ptr, g->i64, g->i64};
    LLVMValueRef fn = LLVMAddFunction(g->mod, name, LLVMFunctionType(g->void_, pt, 3, 0));
    g->fn = fn;
    LLVMPositionBuilderAtEnd(g->b, LLVMAppendBasicBlockInContext(g->ctx, fn, "entry"));
    LLVMValueRef ctx = LLVMGetParam(fn, 0), teams = LLVMGetParam(fn, 1), tsize = LLVMGetParam(fn, 2);
    for (int k = 0; k + 1 < nstage;) {
        int end = k + 1;
        while (end + 1 < nstage && !starts[end])
            end++;
        host_group(g, ctx, stage, k, end, teams, tsize);
        k = end;
    }
    host_group(g, ctx, stage, nstage - 1, nstage, gpu_c64(g, 1), LLVMBuildMul(g->b, teams, tsize, "threads"));
    LLVMBuildRetVoid(g->b);
}
