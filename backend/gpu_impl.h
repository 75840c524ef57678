/* The GPU code generator's shared context (internal to backend/):
 * gpu_codegen.c builds a kernel per IR function from its stages,
 * gpu_sched.c groups the stages between barriers, gpu_entry.c builds the
 * kernel (and the host entry) that runs the groups,
 * gpu_elem.c the code of one element of a value (every kind of op, fused
 * operands computed in place), gpu_math.c the functions that neither the
 * GPU nor LLVM's NVPTX target provides (exp, log, ...), gpu_target.c the
 * NVPTX target machine, the PTX, and the host build of the same kernels. */
#ifndef MAMLC_BACKEND_GPU_IMPL_H
#define MAMLC_BACKEND_GPU_IMPL_H

#include <llvm-c/Core.h>

#include "gpu.h"
#include "plan.h"

typedef struct {
    LLVMContextRef ctx;
    LLVMModuleRef mod;
    LLVMBuilderRef b;           /* the code being built */
    LLVMBuilderRef eb;          /* the entry block of the function being built: allocas */
    LLVMValueRef fn;            /* the function being built */
    LLVMTypeRef i1, i8, i32, i64, f32, f64, ptr, void_;
    bool device;                /* kernels for the GPU, else host entries that run the grid serially */
    const IrFunc *f;
    const BePlan *plan;
    int *reg_slot;              /* per value: its 8-byte slot after the arena (BE_REG values), or -1 */
    int64_t reg_off;            /* bytes from a task's working memory to its slots */
    int64_t task_bytes;         /* be_gpu_task_bytes(f) */
    /* In a stage's loop body, for the task it computes: */
    LLVMValueRef *in, *out;     /* each input's and output's address */
    LLVMValueRef work;          /* the task's working memory */
    Diag *d;
    bool ok;
} Gpu;

/* A counted loop: for (iv = start; iv < end; iv += step), i64. */
typedef struct {
    LLVMBasicBlockRef head, body, exit;
    LLVMValueRef iv, step;
} GpuLoop;

/* --- gpu_codegen.c --- */

/* An LLVM module in ctx with a kernel (device) or a host entry per
 * function of m (only the one named `only`, if not NULL), no triple yet,
 * or NULL after reporting through d. */
LLVMModuleRef be_gpu_module(const IrModule *m, const char *only, LLVMContextRef ctx, bool device, Diag *d);

LLVMValueRef gpu_c64(const Gpu *g, int64_t v);
LLVMTypeRef gpu_elem_type(const Gpu *g, DType dt);
LLVMValueRef gpu_alloca(Gpu *g, LLVMTypeRef t, const char *name);
LLVMValueRef gpu_intrinsic(Gpu *g, const char *name, LLVMTypeRef t, LLVMValueRef *args, unsigned n);
LLVMValueRef gpu_loop_open(Gpu *g, GpuLoop *l, LLVMValueRef start, LLVMValueRef end, LLVMValueRef step);
void gpu_loop_close(Gpu *g, GpuLoop *l);
/* The address of element idx (i64, one per dim of a's rank) of access a
 * in the current task; a in memory or a register's slot. */
LLVMValueRef gpu_addr(Gpu *g, const BeAccess *a, const LLVMValueRef *idx);
/* The i64 index of a multi-index of type t, row-major, and back. */
LLVMValueRef gpu_ravel(Gpu *g, IrType t, const LLVMValueRef *idx);
void gpu_unravel(Gpu *g, IrType t, LLVMValueRef lin, LLVMValueRef *idx);

/* A stage's type: void (ptr ctx, i64 team, i64 teams, i64 tid, i64 tsize):
 * the tasks team, team + teams, ... below B, shared by the team's tsize
 * threads, this one number tid among them (the batch mean: every element
 * for teams = 1, the whole grid a team). */
LLVMTypeRef gpu_stage_type(const Gpu *g);
/* Slot k of the kernel's context ctx (gpu.h), loaded as a t. */
LLVMValueRef gpu_slot(Gpu *g, LLVMValueRef ctx, int k, LLVMTypeRef t);

/* A stage of a kernel: a value the plan computes, an output it copies, or
 * the batch mean. */
typedef enum { GPU_STAGE_VALUE, GPU_STAGE_COPY, GPU_STAGE_MEAN } GpuStageKind;
typedef struct {
    GpuStageKind kind;
    int index;                  /* VALUE: the value; COPY: the output */
} GpuStage;

/* --- gpu_sched.c --- */

/* The order in which the stages st[0..nstage) of the function being built
 * run (order[i]: the stage i-th to run), and where a grid barrier goes
 * (starts[i]: before the i-th, which begins a group).  A stage that reads
 * what an earlier one writes, or writes what it reads or writes, runs in
 * a later group; the batch mean runs last, alone. */
void gpu_stage_groups(const Gpu *g, const GpuStage *st, int nstage, int *order, bool *starts);

/* --- gpu_entry.c --- */

/* The kernel @name(ptr ctx): the stages in order, a grid barrier before
 * each that starts a group; marked a kernel through nvvm.annotations. */
void gpu_kernel_entry(Gpu *g, const char *name, const LLVMValueRef *stage, const bool *starts, int nstage);
/* The host entry @name(ptr ctx, i64 threads): each group of stages for
 * every thread id in turn, the highest first, and within a group a
 * thread's stages one after another (an order the grid may take too, so
 * that a wrong grouping shows as a wrong result). */
void gpu_host_entry(Gpu *g, const char *name, const LLVMValueRef *stage, const bool *starts, int nstage);

/* --- gpu_elem.c --- */

/* The element at idx of value x as its readers see it: loaded through its
 * access, or computed in place when the plan fuses it into its reader. */
LLVMValueRef gpu_elem(Gpu *g, ValueId x, const LLVMValueRef *idx);
/* The element at idx of value v computed from its operands (v's own
 * stage, or a fused operand).  NULL after reporting an op with no code. */
LLVMValueRef gpu_compute(Gpu *g, ValueId v, const LLVMValueRef *idx);

/* --- gpu_math.c: f64 functions, f32 through f64 --- */

LLVMValueRef gpu_exp(Gpu *g, LLVMValueRef x);
LLVMValueRef gpu_log(Gpu *g, LLVMValueRef x);
LLVMValueRef gpu_log1p(Gpu *g, LLVMValueRef x);
LLVMValueRef gpu_tanh(Gpu *g, LLVMValueRef x);
LLVMValueRef gpu_pow(Gpu *g, LLVMValueRef x, double c);

#endif
