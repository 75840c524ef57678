/* The GPU target: IR functions to one NVPTX module (PTX), through the same
 * LLVM C API and the same plan (plan.h) as the CPU target.
 *
 * Every IR function F becomes one persistent kernel
 *
 *     .entry F(.param .u64 ctx)
 *
 * that computes F for B independent calls ("tasks") at once: the meta-step
 * of a whole meta-batch.  Its stages are the plan's computed values in node
 * order (then the outputs the plan copies, then the batch mean), in groups
 * of independent stages (gpu_sched.c).  The grid is split into teams of
 * TEAM_BLOCKS blocks each (their number dividing the grid's); team k
 * computes tasks k, k + teams, ..., each stage spreading its (task,
 * element) pairs over the team's threads, and synchronises alone between
 * groups; one grid-wide barrier precedes the batch mean, which runs on the
 * whole grid.  Each element is computed by one thread in an order fixed by
 * the shapes, so a run gives the same bits every time, whatever the grid
 * and the teams.  The kernel must be launched cooperatively (every block
 * resident), with a one-dimensional grid and blocks.  docs/gpu.md
 * describes it.
 *
 * The kernel reads everything through ctx, an array of 64-bit slots in
 * device memory, laid out below (runtime/cuda.c fills it; both sides name
 * the same slots).  Task t of input i is at in_ptr[i] + t * in_stride[i]
 * bytes (stride 0: every task reads the same tensor, the parameters), and
 * likewise for outputs; task t's working memory is the WORK slot plus
 * t * be_gpu_task_bytes(F).  With MEAN_N = n > 0 the last stage sums the
 * tasks' n-element "leaf" vectors (LEAF + t * LEAF_STRIDE bytes, in the
 * real type: a meta-gradient followed by its loss) along runtime/batch.c's
 * fixed binary tree in double, writes the mean of the first n - 1 into
 * GRAD (reals) and of the last into LOSS (a double), and with UPDATE set
 * applies the outer optimiser to PARAMS and STATE (runtime/optim.c's
 * arithmetic, its scalars in the OPT_* slots as doubles). */
#ifndef MAMLC_BACKEND_GPU_H
#define MAMLC_BACKEND_GPU_H

#include "backend.h"

enum {
    BE_GPU_TASKS,               /* i64: B, the calls computed */
    BE_GPU_WORK,                /* ptr: B * be_gpu_task_bytes(F) bytes, 64-byte aligned */
    BE_GPU_BARRIER,             /* ptr: two u32 for the grid, then two per team; zero before the
                                   first launch (the barriers leave them so) */
    BE_GPU_MEAN_N,              /* i64: elements of a leaf vector; 0: no batch mean */
    BE_GPU_LEAF,                /* ptr: task 0's leaf vector */
    BE_GPU_LEAF_STRIDE,         /* i64: bytes from one task's leaf vector to the next */
    BE_GPU_GRAD,                /* ptr: MEAN_N - 1 reals, the mean gradient */
    BE_GPU_LOSS,                /* ptr: one double, the mean loss */
    BE_GPU_UPDATE,              /* i64: 0 none, 1 Adam, 2 SGD */
    BE_GPU_PARAMS,              /* ptr: MEAN_N - 1 reals, updated in place */
    BE_GPU_STATE,               /* ptr: Adam's first then second moments, 2 (MEAN_N - 1) reals */
    BE_GPU_OPT_W,               /* double: Adam's 1 - beta1 (lerp weight) */
    BE_GPU_OPT_B2,              /* double: beta2 */
    BE_GPU_OPT_C2,              /* double: 1 - beta2 */
    BE_GPU_OPT_EPS,             /* double: eps */
    BE_GPU_OPT_BC2,             /* double: sqrt(1 - beta2^t) */
    BE_GPU_OPT_STEP,            /* double: Adam -lr / (1 - beta1^t); SGD -lr */
    BE_GPU_TEAM_BLOCKS,         /* i64: P, the blocks of a team (>= 1, dividing the grid's) */
    BE_GPU_ARGS = 20            /* then per input: ptr, stride; then per output: ptr, stride */
};

typedef struct {
    const char *arch;           /* "sm_80" (NULL) or "sm_90" */
    int opt_level;              /* 0..3 as BeOptions's */
    const char *only;           /* the one function to compile; NULL: every function */
} BeGpuOptions;

/* Whether arch is a --gpu-arch the GPU target takes. */
bool be_gpu_arch_ok(const char *arch);

/* Bytes of working memory one task of F's kernel needs: F's arena
 * (be_arena_bytes) and a slot for each one-element value the CPU keeps in a
 * register; a multiple of 64. */
size_t be_gpu_task_bytes(const IrFunc *f);

/* The most elements of one stage of F for one task: how many threads a
 * team can keep busy (runtime/cuda.c sizes its teams by it). */
size_t be_gpu_stage_elems(const IrFunc *f);

/* Print the LLVM IR of m's kernels for nvptx64-nvidia-cuda (optimised
 * unless opt_level is 0). */
bool be_gpu_emit_llvm(FILE *out, const IrModule *m, const BeGpuOptions *o, Diag *d);
/* The PTX of m's kernels, a NUL-terminated string the caller frees (free),
 * or NULL after reporting through d.  Needs no GPU and no driver. */
char *be_gpu_ptx(const IrModule *m, const BeGpuOptions *o, Diag *d);

/* The same kernels compiled for this machine, their grid executed
 * serially (the arithmetic check of the GPU code on a CPU): for F,
 * `void F(void *ctx, int64_t teams, int64_t threads)` runs each group of
 * stages for each of `teams` teams and each of their `threads` thread ids,
 * highest first, a group ending where the kernel's barrier is, then the
 * batch mean over teams * threads ids.  ctx as above (host pointers;
 * TEAM_BLOCKS unused). */
typedef void (*BeGpuHostFn)(void *ctx, int64_t teams, int64_t threads);
typedef struct BeGpuHost BeGpuHost;
BeGpuHost *be_gpu_host_compile(const IrModule *m, Diag *d);
BeGpuHostFn be_gpu_host_lookup(BeGpuHost *h, const char *name);
void be_gpu_host_free(BeGpuHost *h);

#endif
