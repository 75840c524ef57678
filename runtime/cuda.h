/* Meta-steps on an NVIDIA GPU (runtime/cuda.c): the CUDA driver API,
 * loaded with dlopen("libcuda.so.1") only when a GPU is asked for, runs
 * the persistent kernel of the GPU target (backend/gpu.h) on device 0's
 * primary context.  No CUDA toolkit is needed anywhere: the driver
 * compiles the PTX (cuModuleLoadData).  Without a driver or a GPU,
 * rt_cuda_open fails with a message that says which. */
#ifndef MAMLC_RUNTIME_CUDA_H
#define MAMLC_RUNTIME_CUDA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime.h"

/* The kernel's context slots, as backend/gpu.h lays them out (the
 * compiler checks that both agree: tools/gpu.c). */
enum {
    RT_GPU_TASKS, RT_GPU_WORK, RT_GPU_BARRIER, RT_GPU_MEAN_N, RT_GPU_LEAF, RT_GPU_LEAF_STRIDE,
    RT_GPU_GRAD, RT_GPU_LOSS, RT_GPU_UPDATE, RT_GPU_PARAMS, RT_GPU_STATE, RT_GPU_OPT_W,
    RT_GPU_OPT_B2, RT_GPU_OPT_C2, RT_GPU_OPT_EPS, RT_GPU_OPT_BC2, RT_GPU_OPT_STEP, RT_GPU_TEAM_BLOCKS,
    RT_GPU_ARGS = 20
};

/* What a meta-step kernel computes: the flat parameter vector split into
 * ntensor tensors (the kernel's first inputs), then one task's data (its
 * last four inputs); outputs the query loss and a gradient per tensor. */
typedef struct {
    RtReal real;
    size_t nreal;
    int ntensor;
    const size_t *offset, *count;   /* per tensor, in reals */
    size_t data_bytes[4];           /* sx, sy, qx, qy of one task */
    size_t task_bytes;              /* the kernel's working memory per task (be_gpu_task_bytes) */
    size_t stage_elems;             /* the most elements of one task in a stage (be_gpu_stage_elems) */
} RtCudaModel;

typedef struct RtCuda RtCuda;

/* Load the driver, take device 0's primary context and load ptx, whose
 * kernel `kernel` computes m.  NULL, with the reason in err, when there is
 * no driver, no GPU, or the driver refuses the PTX. */
RtCuda *rt_cuda_open(const char *ptx, const char *kernel, const RtCudaModel *m, char *err, size_t errsize);
void rt_cuda_close(RtCuda *c);
/* The device's name, and the grid a launch for B tasks uses: its teams
 * (backend/gpu.h), blocks and threads a block. */
const char *rt_cuda_device(const RtCuda *c);
void rt_cuda_grid(const RtCuda *c, int B, int *teams, int *blocks, int *threads);

/* A meta-step of B tasks on device memory (addresses as uint64_t, CUDA's
 * CUdeviceptr): the mean meta-gradient into grad (nreal reals) and the
 * mean loss into *loss; with opt not NULL, then the update of params and
 * state (rt_opt_step's arithmetic; t the 1-based step).  params is read
 * as the kernel's inputs and, with opt, updated in place after the
 * gradient is complete.  False with the reason in err. */
bool rt_cuda_step_device(RtCuda *c, int B, uint64_t params, const uint64_t data[4], uint64_t grad, double *loss,
                         const RtOptimizer *opt, uint64_t state, long t, char *err, size_t errsize);
/* The same on host memory, copied in and out (state: 2 nreal reals for
 * Adam, none for SGD). */
bool rt_cuda_step_host(RtCuda *c, int B, void *params, const void *const data[4], void *grad, double *loss,
                       const RtOptimizer *opt, void *state, long t, char *err, size_t errsize);

#endif
