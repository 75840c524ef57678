/* The GPU side of the C ABI (docs/abi.md, "Libraries built with --device
 * cuda"): only a library built with `-o --device cuda` links this file,
 * and defines `mamlc__gpu`, the meta-step's PTX.  The driver is opened at
 * the first call that needs it and kept for the process; calls are
 * serialised (one context, one stream).  mamlc_meta_grad and mamlc_meta_step copy their
 * host arrays in and out; mamlc_cuda_meta_grad and mamlc_cuda_meta_step
 * take device pointers of the primary context (PyTorch's CUDA tensors'). */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "abi.h"
#include "abi_cuda.h"
#include "cuda.h"

#ifdef MAMLC_F64
typedef double mamlc_real;
#else
typedef float mamlc_real;
#endif

#define EXPORT __attribute__((visibility("default")))

extern const MamlcModel mamlc__model;
extern const MamlcGpu mamlc__gpu;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static RtCuda *gpu;
static char gpu_error[1024] = "";
static size_t offset[1024], count[1024];

/* The open GPU, opened now if need be; NULL with gpu_error set.  Under lock. */
static RtCuda *open_gpu(void)
{
    if (gpu)
        return gpu;
    const MamlcModel *m = &mamlc__model;
    if (m->ntensor > 1024) {
        snprintf(gpu_error, sizeof gpu_error, "a model of %d tensors has too many for the GPU", m->ntensor);
        return NULL;
    }
    for (int i = 0; i < m->ntensor; i++) {
        offset[i] = m->tensor[i].offset;
        count[i] = m->tensor[i].count;
    }
    RtCudaModel cm = {.real = m->f64 ? RT_F64 : RT_F32, .nreal = m->nreal, .ntensor = m->ntensor,
                      .offset = offset, .count = count,
                      .data_bytes = {m->sx_bytes, m->sy_bytes, m->qx_bytes, m->qy_bytes},
                      .task_bytes = mamlc__gpu.task_bytes, .stage_elems = mamlc__gpu.stage_elems};
    gpu = rt_cuda_open(mamlc__gpu.ptx, mamlc__gpu.kernel, &cm, gpu_error, sizeof gpu_error);
    return gpu;
}

double mamlc__gpu_step(const void *params, void *state, int B, const void *sx, const void *sy, const void *qx,
                       const void *qy, void *grad)
{
    pthread_mutex_lock(&lock);
    RtCuda *c = open_gpu();
    double loss = NAN;
    RtOptimizer o = mamlc__model_optimizer();
    const void *data[4] = {sx, sy, qx, qy};
    size_t n = mamlc__model.nreal, moments = rt_opt_state_count(&o, n);
    mamlc_real *t = state ? (mamlc_real *)state + moments : NULL;
    if (c && !rt_cuda_step_host(c, B, (void *)params, data, grad, &loss, state ? &o : NULL, state,
                                t ? (long)*t + 1 : 0, gpu_error, sizeof gpu_error))
        loss = NAN;
    else if (c && t)
        *t += 1;
    pthread_mutex_unlock(&lock);
    return loss;
}

/* Why the last GPU call failed ("" if none has). */
EXPORT const char *mamlc_cuda_error(void) { return gpu_error; }

static double device_step(const mamlc_real *params, mamlc_real *state, long step, int B, const mamlc_real *sx,
                          const void *sy, const mamlc_real *qx, const void *qy, mamlc_real *grad)
{
    pthread_mutex_lock(&lock);
    RtCuda *c = open_gpu();
    double loss = NAN;
    RtOptimizer o = mamlc__model_optimizer();
    uint64_t data[4] = {(uintptr_t)sx, (uintptr_t)sy, (uintptr_t)qx, (uintptr_t)qy};
    if (c && !rt_cuda_step_device(c, B, (uintptr_t)params, data, (uintptr_t)grad, &loss, step > 0 ? &o : NULL,
                                  (uintptr_t)state, step, gpu_error, sizeof gpu_error))
        loss = NAN;
    pthread_mutex_unlock(&lock);
    return loss;
}

EXPORT mamlc_real mamlc_cuda_meta_grad(const mamlc_real *params, int B, const mamlc_real *sx, const void *sy,
                                       const mamlc_real *qx, const void *qy, mamlc_real *grad)
{
    if (B < 1 || B > RT_MAX_BATCH || !params || !sx || !sy || !qx || !qy || !grad)
        return NAN;
    return (mamlc_real)device_step(params, NULL, 0, B, sx, sy, qx, qy, grad);
}

EXPORT mamlc_real mamlc_cuda_meta_step(mamlc_real *params, mamlc_real *state, long step, int B,
                                       const mamlc_real *sx, const void *sy, const mamlc_real *qx, const void *qy,
                                       mamlc_real *grad)
{
    RtOptimizer o = mamlc__model_optimizer();
    if (B < 1 || B > RT_MAX_BATCH || !params || (!state && rt_opt_state_count(&o, 1)) || step < 1 || !sx || !sy ||
        !qx || !qy || !grad)
        return NAN;
    return (mamlc_real)device_step(params, state, step, B, sx, sy, qx, qy, grad);
}
