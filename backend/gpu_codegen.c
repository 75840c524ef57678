/* IR functions to GPU kernels (gpu.h): the stages of each function and the
 * batch mean and optimiser stage; gpu_sched.c groups them between grid
 * barriers and gpu_entry.c builds the two entries that run them: the
 * kernel (nvptx64) and the host entry that runs the grid serially (the
 * CPU check).
 *
 * For IR function F with plan P (plan.h, the CPU target's own):
 *
 *   internal void @F.sK(ptr %ctx, i64 %team, i64 %teams, i64 %tid, i64 %tsize)
 *
 * is stage K: the K-th value P computes (node order), then each output P
 * copies, then the batch mean.  A team's threads take the pairs (task t,
 * element i) of its value over the team's tasks, pair w = tid, tid +
 * tsize, ...: all its tasks and every element in one sweep, whatever their
 * shape, and each element computed by one thread (gpu_elem.c), so the bits
 * do not depend on the grid.  The kernel
 *
 *   define void @F(ptr %ctx)              ; nvvm.annotations: kernel
 *
 * calls the stages in their groups' order with a team barrier before each
 * group but the first, and the batch mean after a grid barrier
 * (gpu_entry.c); the host entry @F(ptr %ctx, i64 %teams, i64 %threads)
 * runs each group for every team and thread id in turn.  Both run the
 * same stage code. */
#include "gpu_impl.h"

#include <llvm-c/Analysis.h>

#include <stdlib.h>
#include <string.h>

static const SrcLoc no_loc = {0};

static LLVMValueRef byte_gep(Gpu *g, LLVMValueRef base, LLVMValueRef off)
{
    return LLVMBuildGEP2(g->b, g->i8, base, &off, 1, "");
}

/* --- stages --- */

typedef struct {
    LLVMValueRef ctx, tasks, n, total;
    LLVMValueRef *in_base, *in_stride, *out_base, *out_stride, work;
    GpuLoop loop;
    LLVMValueRef t, i;          /* the task and element of the pair being computed */
} Stage;

/* A stage's function, kept out of line (a .func of the PTX): a meta-step
 * has hundreds of stages, and the driver's PTX compiler (at
 * cuModuleLoadData) is then given hundreds of small functions rather than
 * one kernel of all of them inlined, a megabyte of PTX for the conv net.
 * A call per stage is nothing beside a stage's work.  (Not yet timed on a
 * GPU: docs/gpu.md.) */
static LLVMValueRef stage_fn(Gpu *g, const char *name)
{
    LLVMValueRef fn = LLVMAddFunction(g->mod, name, gpu_stage_type(g));
    LLVMSetLinkage(fn, LLVMInternalLinkage);
    unsigned kind = LLVMGetEnumAttributeKindForName("noinline", 8);
    LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(g->ctx, kind, 0));
    g->fn = fn;
    LLVMPositionBuilderAtEnd(g->eb, LLVMAppendBasicBlockInContext(g->ctx, fn, "entry"));
    LLVMPositionBuilderAtEnd(g->b, LLVMAppendBasicBlockInContext(g->ctx, fn, "start"));
    return fn;
}

static void stage_end(Gpu *g)
{
    LLVMBuildRetVoid(g->b);
    LLVMBuildBr(g->eb, LLVMGetNextBasicBlock(LLVMGetEntryBasicBlock(g->fn)));
}

/* Open stage fn's loop over the (task, element) pairs of n elements a
 * task of its team's tasks (team, team + teams, ...), the team's thread
 * tid taking pairs tid, tid + tsize, ... (n NULL: the leaf vector's
 * MEAN_N elements, no task), with g->in, g->out and g->work the pair's
 * task's. */
static void pairs_open(Gpu *g, Stage *s, LLVMValueRef fn, LLVMValueRef n)
{
    const IrFunc *f = g->f;
    s->ctx = LLVMGetParam(fn, 0);
    s->tasks = gpu_slot(g, s->ctx, BE_GPU_TASKS, g->i64);
    s->n = n;
    LLVMValueRef team = LLVMGetParam(fn, 1), teams = LLVMGetParam(fn, 2);
    if (n) {
        /* this team's tasks: team, team + teams, ... below B */
        LLVMValueRef left = LLVMBuildSub(g->b, s->tasks, team, "");
        LLVMValueRef owned = LLVMBuildSDiv(g->b, LLVMBuildAdd(g->b, left, LLVMBuildSub(g->b, teams, gpu_c64(g, 1), ""), ""),
                                           teams, "");
        owned = LLVMBuildSelect(g->b, LLVMBuildICmp(g->b, LLVMIntSGT, left, gpu_c64(g, 0), ""), owned, gpu_c64(g, 0), "owned");
        s->total = LLVMBuildMul(g->b, owned, n, "");
    } else {
        s->total = gpu_slot(g, s->ctx, BE_GPU_MEAN_N, g->i64);
    }
    for (int i = 0; n && i < f->ninput + f->noutput; i++) {
        bool is_in = i < f->ninput;
        int k = BE_GPU_ARGS + 2 * i;
        (is_in ? s->in_base : s->out_base)[is_in ? i : i - f->ninput] = gpu_slot(g, s->ctx, k, g->ptr);
        (is_in ? s->in_stride : s->out_stride)[is_in ? i : i - f->ninput] = gpu_slot(g, s->ctx, k + 1, g->i64);
    }
    s->work = gpu_slot(g, s->ctx, BE_GPU_WORK, g->ptr);
    LLVMValueRef w = gpu_loop_open(g, &s->loop, LLVMGetParam(fn, 3), s->total, LLVMGetParam(fn, 4));
    if (!n) {
        s->i = w;
        return;
    }
    s->t = LLVMBuildAdd(g->b, team, LLVMBuildMul(g->b, LLVMBuildUDiv(g->b, w, n, ""), teams, ""), "task");
    s->i = LLVMBuildURem(g->b, w, n, "elem");
    for (int i = 0; i < f->ninput; i++)
        g->in[i] = byte_gep(g, s->in_base[i], LLVMBuildMul(g->b, s->t, s->in_stride[i], ""));
    for (int j = 0; j < f->noutput; j++)
        g->out[j] = byte_gep(g, s->out_base[j], LLVMBuildMul(g->b, s->t, s->out_stride[j], ""));
    g->work = byte_gep(g, s->work, LLVMBuildMul(g->b, s->t, gpu_c64(g, g->task_bytes), ""));
}

/* The stage of computed value v: each element from its operands, stored
 * where the plan puts v (a buffer, an output, or its slot). */
static void value_stage(Gpu *g, Stage *s, const char *name, ValueId v)
{
    const IrNode *n = &g->f->node[v];
    const BeAccess *a = &g->plan->acc[v];
    IrType t = n->type;
    if (a->base == BE_REG)
        t.rank = 0;
    LLVMValueRef fn = stage_fn(g, name);
    pairs_open(g, s, fn, gpu_c64(g, ir_numel(t)));
    LLVMValueRef idx[IR_MAX_RANK];
    gpu_unravel(g, t, s->i, idx);
    for (int k = t.rank; k < n->type.rank; k++)
        idx[k] = gpu_c64(g, 0);
    LLVMValueRef y = gpu_compute(g, v, idx);
    if (y)
        LLVMBuildStore(g->b, y, gpu_addr(g, a, idx));
    gpu_loop_close(g, &s->loop);
    stage_end(g);
}

/* The stage copying value x into output j (dense). */
static void copy_stage(Gpu *g, Stage *s, const char *name, int j)
{
    ValueId x = g->f->output[j];
    IrType t = g->f->node[x].type;
    LLVMValueRef fn = stage_fn(g, name);
    pairs_open(g, s, fn, gpu_c64(g, ir_numel(t)));
    LLVMValueRef idx[IR_MAX_RANK];
    gpu_unravel(g, t, s->i, idx);
    LLVMValueRef y = gpu_elem(g, x, idx);
    BeAccess dst = be_access_dense(t, BE_OUTPUT, j, 0);
    if (y)
        LLVMBuildStore(g->b, y, gpu_addr(g, &dst, idx));
    gpu_loop_close(g, &s->loop);
    stage_end(g);
}

/* --- the batch mean and the optimiser --- */

enum { TREE_STACK = 64 };       /* > 2 levels per bit of a task count */

static LLVMValueRef at(Gpu *g, LLVMValueRef arr, LLVMTypeRef t, LLVMValueRef i)
{
    LLVMValueRef idx[2] = {gpu_c64(g, 0), i};
    return LLVMBuildInBoundsGEP2(g->b, LLVMArrayType2(t, TREE_STACK), arr, idx, 2, "");
}

/* Element e of the tasks' leaf vectors summed along runtime/batch.c's
 * tree over [0, B): node [lo, hi) is node [lo, mid) + node [mid, hi),
 * mid = lo + (hi - lo) / 2, a leaf its task's element in double.  Walked
 * depth first with an explicit stack (no recursion on the GPU). */
static LLVMValueRef tree_sum(Gpu *g, Stage *s, LLVMValueRef e)
{
    LLVMTypeRef real = gpu_elem_type(g, g->f->mod->real);
    LLVMValueRef lo = gpu_alloca(g, LLVMArrayType2(g->i64, TREE_STACK), "lo");
    LLVMValueRef hi = gpu_alloca(g, LLVMArrayType2(g->i64, TREE_STACK), "hi");
    LLVMValueRef ph = gpu_alloca(g, LLVMArrayType2(g->i64, TREE_STACK), "phase");
    LLVMValueRef val = gpu_alloca(g, LLVMArrayType2(g->f64, TREE_STACK), "val");
    LLVMValueRef sp = gpu_alloca(g, g->i64, "sp"), vsp = gpu_alloca(g, g->i64, "vsp");
    LLVMValueRef zero = gpu_c64(g, 0), one = gpu_c64(g, 1);
    LLVMBuildStore(g->b, one, sp);
    LLVMBuildStore(g->b, zero, vsp);
    LLVMBuildStore(g->b, zero, at(g, lo, g->i64, zero));
    LLVMBuildStore(g->b, s->tasks, at(g, hi, g->i64, zero));
    LLVMBuildStore(g->b, zero, at(g, ph, g->i64, zero));
    LLVMValueRef leaf = gpu_slot(g, s->ctx, BE_GPU_LEAF, g->ptr), stride = gpu_slot(g, s->ctx, BE_GPU_LEAF_STRIDE, g->i64);

    LLVMBasicBlockRef head = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "tree");
    LLVMBasicBlockRef node = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "node");
    LLVMBasicBlockRef isleaf = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "leaf");
    LLVMBasicBlockRef inner = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "inner");
    LLVMBasicBlockRef push = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "push");
    LLVMBasicBlockRef join = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "join");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "summed");
    LLVMBuildBr(g->b, head);

    LLVMPositionBuilderAtEnd(g->b, head);
    LLVMValueRef n_sp = LLVMBuildLoad2(g->b, g->i64, sp, "");
    LLVMBuildCondBr(g->b, LLVMBuildICmp(g->b, LLVMIntEQ, n_sp, zero, ""), done, node);

    LLVMPositionBuilderAtEnd(g->b, node);
    LLVMValueRef top = LLVMBuildSub(g->b, n_sp, one, "top");
    LLVMValueRef l = LLVMBuildLoad2(g->b, g->i64, at(g, lo, g->i64, top), "");
    LLVMValueRef h = LLVMBuildLoad2(g->b, g->i64, at(g, hi, g->i64, top), "");
    LLVMValueRef width = LLVMBuildSub(g->b, h, l, "");
    LLVMBuildCondBr(g->b, LLVMBuildICmp(g->b, LLVMIntEQ, width, one, ""), isleaf, inner);

    /* a leaf: push task l's element, pop the node */
    LLVMPositionBuilderAtEnd(g->b, isleaf);
    LLVMValueRef p = byte_gep(g, leaf, LLVMBuildMul(g->b, l, stride, ""));
    LLVMValueRef x = LLVMBuildLoad2(g->b, real, LLVMBuildInBoundsGEP2(g->b, real, p, &e, 1, ""), "");
    if (real != g->f64)
        x = LLVMBuildFPExt(g->b, x, g->f64, "");
    LLVMValueRef n_vsp = LLVMBuildLoad2(g->b, g->i64, vsp, "");
    LLVMBuildStore(g->b, x, at(g, val, g->f64, n_vsp));
    LLVMBuildStore(g->b, LLVMBuildAdd(g->b, n_vsp, one, ""), vsp);
    LLVMBuildStore(g->b, top, sp);
    LLVMBuildBr(g->b, head);

    /* an inner node: its phase says which child is next, or that both are summed */
    LLVMPositionBuilderAtEnd(g->b, inner);
    LLVMValueRef phase = LLVMBuildLoad2(g->b, g->i64, at(g, ph, g->i64, top), "");
    LLVMValueRef mid = LLVMBuildAdd(g->b, l, LLVMBuildSDiv(g->b, width, gpu_c64(g, 2), ""), "mid");
    LLVMBuildCondBr(g->b, LLVMBuildICmp(g->b, LLVMIntULT, phase, gpu_c64(g, 2), ""), push, join);

    LLVMPositionBuilderAtEnd(g->b, push);
    LLVMValueRef first = LLVMBuildICmp(g->b, LLVMIntEQ, phase, zero, "");
    LLVMBuildStore(g->b, LLVMBuildAdd(g->b, phase, one, ""), at(g, ph, g->i64, top));
    LLVMBuildStore(g->b, LLVMBuildSelect(g->b, first, l, mid, ""), at(g, lo, g->i64, n_sp));
    LLVMBuildStore(g->b, LLVMBuildSelect(g->b, first, mid, h, ""), at(g, hi, g->i64, n_sp));
    LLVMBuildStore(g->b, zero, at(g, ph, g->i64, n_sp));
    LLVMBuildStore(g->b, LLVMBuildAdd(g->b, n_sp, one, ""), sp);
    LLVMBuildBr(g->b, head);

    /* both children done: left + right, as the CPU adds them */
    LLVMPositionBuilderAtEnd(g->b, join);
    LLVMValueRef v2 = LLVMBuildLoad2(g->b, g->i64, vsp, "");
    LLVMValueRef ri = LLVMBuildSub(g->b, v2, one, ""), li = LLVMBuildSub(g->b, v2, gpu_c64(g, 2), "");
    LLVMValueRef sum = LLVMBuildFAdd(g->b, LLVMBuildLoad2(g->b, g->f64, at(g, val, g->f64, li), ""),
                                     LLVMBuildLoad2(g->b, g->f64, at(g, val, g->f64, ri), ""), "");
    LLVMBuildStore(g->b, sum, at(g, val, g->f64, li));
    LLVMBuildStore(g->b, ri, vsp);
    LLVMBuildStore(g->b, top, sp);
    LLVMBuildBr(g->b, head);

    LLVMPositionBuilderAtEnd(g->b, done);
    return LLVMBuildLoad2(g->b, g->f64, at(g, val, g->f64, zero), "");
}

/* Adam or SGD on element e with gradient gr (runtime/optim.c, operation
 * for operation, in the real type). */
static void update(Gpu *g, Stage *s, LLVMValueRef e, LLVMValueRef gr, LLVMValueRef nreal)
{
    LLVMTypeRef t = LLVMTypeOf(gr);
    LLVMValueRef kind = gpu_slot(g, s->ctx, BE_GPU_UPDATE, g->i64);
    LLVMValueRef params = gpu_slot(g, s->ctx, BE_GPU_PARAMS, g->ptr), state = gpu_slot(g, s->ctx, BE_GPU_STATE, g->ptr);
    LLVMValueRef sc[6];
    for (int k = 0; k < 6; k++)
        sc[k] = LLVMBuildFPCast(g->b, gpu_slot(g, s->ctx, BE_GPU_OPT_W + k, g->f64), t, "");
    LLVMValueRef w = sc[0], b2 = sc[1], c2 = sc[2], eps = sc[3], bc2 = sc[4], step = sc[5];
    LLVMBasicBlockRef adam = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "adam");
    LLVMBasicBlockRef sgd = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "sgd");
    LLVMBasicBlockRef next = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "updated");
    LLVMBasicBlockRef other = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "not_adam");
    LLVMBuildCondBr(g->b, LLVMBuildICmp(g->b, LLVMIntEQ, kind, gpu_c64(g, 1), ""), adam, other);
    LLVMPositionBuilderAtEnd(g->b, other);
    LLVMBuildCondBr(g->b, LLVMBuildICmp(g->b, LLVMIntEQ, kind, gpu_c64(g, 2), ""), sgd, next);

    LLVMPositionBuilderAtEnd(g->b, adam);
    LLVMValueRef pp = LLVMBuildInBoundsGEP2(g->b, t, params, &e, 1, "");
    LLVMValueRef mp = LLVMBuildInBoundsGEP2(g->b, t, state, &e, 1, "");
    LLVMValueRef vi = LLVMBuildAdd(g->b, e, nreal, "");
    LLVMValueRef vp = LLVMBuildInBoundsGEP2(g->b, t, state, &vi, 1, "");
    LLVMValueRef m = LLVMBuildLoad2(g->b, t, mp, ""), v = LLVMBuildLoad2(g->b, t, vp, "");
    LLVMValueRef d = LLVMBuildFSub(g->b, gr, m, "");
    LLVMValueRef m1 = LLVMBuildFAdd(g->b, m, LLVMBuildFMul(g->b, w, d, ""), "");
    LLVMValueRef m2 = LLVMBuildFSub(g->b, gr, LLVMBuildFMul(g->b, d, LLVMBuildFSub(g->b, LLVMConstReal(t, 1), w, ""), ""), "");
    m = LLVMBuildSelect(g->b, LLVMBuildFCmp(g->b, LLVMRealOLT, w, LLVMConstReal(t, 0.5), ""), m1, m2, "");
    v = LLVMBuildFAdd(g->b, LLVMBuildFMul(g->b, v, b2, ""), LLVMBuildFMul(g->b, LLVMBuildFMul(g->b, c2, gr, ""), gr, ""), "");
    LLVMBuildStore(g->b, m, mp);
    LLVMBuildStore(g->b, v, vp);
    LLVMValueRef denom = LLVMBuildFAdd(g->b, LLVMBuildFDiv(g->b, gpu_intrinsic(g, "llvm.sqrt", t, &v, 1), bc2, ""), eps, "");
    LLVMValueRef p = LLVMBuildLoad2(g->b, t, pp, "");
    LLVMBuildStore(g->b, LLVMBuildFAdd(g->b, p, LLVMBuildFDiv(g->b, LLVMBuildFMul(g->b, step, m, ""), denom, ""), ""), pp);
    LLVMBuildBr(g->b, next);

    LLVMPositionBuilderAtEnd(g->b, sgd);
    pp = LLVMBuildInBoundsGEP2(g->b, t, params, &e, 1, "");
    p = LLVMBuildLoad2(g->b, t, pp, "");
    LLVMBuildStore(g->b, LLVMBuildFAdd(g->b, p, LLVMBuildFMul(g->b, step, gr, ""), ""), pp);
    LLVMBuildBr(g->b, next);
    LLVMPositionBuilderAtEnd(g->b, next);
}

/* The last stage: per element of the leaf vectors, the tree sum over the
 * tasks and its mean; the gradient's elements rounded to the real type
 * into GRAD (and the optimiser's update), the loss into LOSS. */
static void mean_stage(Gpu *g, Stage *s, const char *name)
{
    LLVMTypeRef real = gpu_elem_type(g, g->f->mod->real);
    LLVMValueRef fn = stage_fn(g, name);
    pairs_open(g, s, fn, NULL);
    LLVMValueRef e = s->i;
    LLVMValueRef nreal = LLVMBuildSub(g->b, s->total, gpu_c64(g, 1), "nreal");
    LLVMValueRef inv = LLVMBuildFDiv(g->b, LLVMConstReal(g->f64, 1), LLVMBuildSIToFP(g->b, s->tasks, g->f64, ""), "");
    LLVMValueRef mean = LLVMBuildFMul(g->b, tree_sum(g, s, e), inv, "mean");
    LLVMBasicBlockRef gb = LLVMAppendBasicBlockInContext(g->ctx, fn, "grad");
    LLVMBasicBlockRef lb = LLVMAppendBasicBlockInContext(g->ctx, fn, "loss");
    LLVMBasicBlockRef nb = LLVMAppendBasicBlockInContext(g->ctx, fn, "next");
    LLVMBuildCondBr(g->b, LLVMBuildICmp(g->b, LLVMIntSLT, e, nreal, ""), gb, lb);
    LLVMPositionBuilderAtEnd(g->b, gb);
    LLVMValueRef gr = real == g->f64 ? mean : LLVMBuildFPTrunc(g->b, mean, real, "");
    LLVMBuildStore(g->b, gr, LLVMBuildInBoundsGEP2(g->b, real, gpu_slot(g, s->ctx, BE_GPU_GRAD, g->ptr), &e, 1, ""));
    update(g, s, e, gr, nreal);
    LLVMBuildBr(g->b, nb);
    LLVMPositionBuilderAtEnd(g->b, lb);
    LLVMBuildStore(g->b, mean, gpu_slot(g, s->ctx, BE_GPU_LOSS, g->ptr));
    LLVMBuildBr(g->b, nb);
    LLVMPositionBuilderAtEnd(g->b, nb);
    gpu_loop_close(g, &s->loop);
    stage_end(g);
}

/* The slots after f's arena of the values the plan keeps in registers. */
static int reg_slots(const IrFunc *f, const BePlan *p, int *slot_of)
{
    int n = 0;
    for (ValueId v = 0; v < f->nnode; v++)
        slot_of[v] = p->computed[v] && p->acc[v].base == BE_REG ? n++ : -1;
    return n;
}

size_t be_gpu_task_bytes(const IrFunc *f)
{
    BePlan p;
    be_plan(f, &p);
    int *slot_of = malloc(((size_t)f->nnode + 1) * sizeof *slot_of);
    size_t n = slot_of ? (size_t)reg_slots(f, &p, slot_of) : (size_t)f->nnode;
    free(slot_of);
    size_t bytes = (p.arena_bytes + 63) / 64 * 64 + (8 * n + 63) / 64 * 64;
    be_plan_free(&p);
    return bytes ? bytes : 64;
}

size_t be_gpu_stage_elems(const IrFunc *f)
{
    BePlan p;
    be_plan(f, &p);
    int64_t most = 1;
    for (ValueId v = 0; v < f->nnode; v++)
        if (p.computed[v] && ir_numel(f->node[v].type) > most)
            most = ir_numel(f->node[v].type);
    be_plan_free(&p);
    return (size_t)most;
}

static bool emit_function(Gpu *g, const IrFunc *f)
{
    BePlan plan;
    be_plan(f, &plan);
    g->f = f;
    g->plan = &plan;
    g->reg_slot = malloc(((size_t)f->nnode + 1) * sizeof *g->reg_slot);
    g->in = calloc((size_t)f->ninput + 1, sizeof *g->in);
    g->out = calloc((size_t)f->noutput + 1, sizeof *g->out);
    size_t most = (size_t)f->nnode + (size_t)f->noutput + 2;
    LLVMValueRef *stage = calloc(most, sizeof *stage);
    LLVMValueRef *run = calloc(most, sizeof *run);
    GpuStage *info = calloc(most, sizeof *info);
    bool *starts = calloc(most, sizeof *starts);
    int *order = calloc(most, sizeof *order);
    Stage s = {0};
    s.in_base = calloc((size_t)f->ninput + 1, sizeof *s.in_base);
    s.in_stride = calloc((size_t)f->ninput + 1, sizeof *s.in_stride);
    s.out_base = calloc((size_t)f->noutput + 1, sizeof *s.out_base);
    s.out_stride = calloc((size_t)f->noutput + 1, sizeof *s.out_stride);
    bool ok = g->reg_slot && g->in && g->out && stage && run && info && starts && order && s.in_base && s.in_stride && s.out_base && s.out_stride;
    if (!ok)
        diag_error(g->d, no_loc, "out of memory compiling '@%s' for the GPU", f->name);
    int nstage = 0;
    char name[256];
    if (ok) {
        reg_slots(f, &plan, g->reg_slot);
        g->reg_off = (int64_t)(plan.arena_bytes + 63) / 64 * 64;
        g->task_bytes = (int64_t)be_gpu_task_bytes(f);
        for (ValueId v = 0; g->ok && v < f->nnode; v++) {
            if (!plan.computed[v] || plan.acc[v].base == BE_IMM || plan.acc[v].base == BE_NONE)
                continue;
            snprintf(name, sizeof name, "%s.s%d.%s", f->name, nstage, ir_op_info[f->node[v].op].name);
            value_stage(g, &s, name, v);
            info[nstage] = (GpuStage){GPU_STAGE_VALUE, v};
            stage[nstage++] = g->fn;
        }
        for (int j = 0; g->ok && j < f->noutput; j++) {
            if (!plan.out_copy[j])
                continue;
            snprintf(name, sizeof name, "%s.s%d.out", f->name, nstage);
            copy_stage(g, &s, name, j);
            info[nstage] = (GpuStage){GPU_STAGE_COPY, j};
            stage[nstage++] = g->fn;
        }
        snprintf(name, sizeof name, "%s.s%d.mean", f->name, nstage);
        mean_stage(g, &s, name);
        info[nstage] = (GpuStage){GPU_STAGE_MEAN, 0};
        stage[nstage++] = g->fn;
        ok = g->ok;
    }
    if (ok) {
        gpu_stage_groups(g, info, nstage, order, starts);
        for (int k = 0; k < nstage; k++)
            run[k] = stage[order[k]];
        (g->device ? gpu_kernel_entry : gpu_host_entry)(g, f->name, run, starts, nstage);
    }
    free(stage);
    free(run);
    free(info);
    free(starts);
    free(order);
    free(s.in_base);
    free(s.in_stride);
    free(s.out_base);
    free(s.out_stride);
    free(g->reg_slot);
    free(g->in);
    free(g->out);
    g->reg_slot = NULL;
    g->in = g->out = NULL;
    be_plan_free(&plan);
    g->plan = NULL;
    return ok;
}

LLVMModuleRef be_gpu_module(const IrModule *m, const char *only, LLVMContextRef ctx, bool device, Diag *d)
{
    if (!ir_verify_module(m, d))
        return NULL;
    Gpu g = {.ctx = ctx, .d = d, .ok = true, .device = device};
    g.mod = LLVMModuleCreateWithNameInContext("mamlc.gpu", ctx);
    g.b = LLVMCreateBuilderInContext(ctx);
    g.eb = LLVMCreateBuilderInContext(ctx);
    g.i1 = LLVMInt1TypeInContext(ctx);
    g.i8 = LLVMInt8TypeInContext(ctx);
    g.i32 = LLVMInt32TypeInContext(ctx);
    g.i64 = LLVMInt64TypeInContext(ctx);
    g.f32 = LLVMFloatTypeInContext(ctx);
    g.f64 = LLVMDoubleTypeInContext(ctx);
    g.ptr = LLVMPointerTypeInContext(ctx, 0);
    g.void_ = LLVMVoidTypeInContext(ctx);
    bool ok = true;
    if (only && !ir_module_find(m, only)) {
        diag_error(d, no_loc, "no function '@%s' to compile for the GPU", only);
        ok = false;
    }
    for (int i = 0; ok && i < m->nfunc; i++) {
        if (only && strcmp(m->func[i]->name, only))
            continue;
        if (LLVMGetNamedFunction(g.mod, m->func[i]->name)) {
            diag_error(d, no_loc, "function name '@%s' clashes with a function of the GPU code", m->func[i]->name);
            ok = false;
            break;
        }
        ok = emit_function(&g, m->func[i]);
    }
    LLVMDisposeBuilder(g.b);
    LLVMDisposeBuilder(g.eb);
    char *msg = NULL;
    if (ok && LLVMVerifyModule(g.mod, LLVMReturnStatusAction, &msg)) {
        diag_error(d, no_loc, "internal error: the generated GPU LLVM IR is invalid: %s", msg);
        ok = false;
    }
    LLVMDisposeMessage(msg);
    if (!ok) {
        LLVMDisposeModule(g.mod);
        return NULL;
    }
    return g.mod;
}
