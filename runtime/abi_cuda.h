/* The GPU side of a library built with --device cuda (runtime/abi_cuda.c,
 * in libmamlc_abi_cuda_*.a, which only such a library links), as
 * runtime/abi.c calls it: a weak reference, NULL in every other library.
 * Internal to the ABI layer, as is what runtime/abi.c gives it. */
#ifndef MAMLC_ABI_CUDA_H
#define MAMLC_ABI_CUDA_H

#include "runtime.h"

/* The meta-step of B tasks on host memory, on the GPU: the mean loss,
 * returned, and the mean meta-gradient into grad (if not NULL); with
 * state, the outer optimiser's update of params and state (whose last real
 * counts the steps) instead.  Arguments already checked.  NaN on failure,
 * which mamlc_cuda_error() explains. */
double mamlc__gpu_step(const void *params, void *state, int B, const void *sx, const void *sy, const void *qx,
                       const void *qy, void *grad) __attribute__((weak));

/* The model's outer optimiser (runtime/abi.c), for both sides. */
RtOptimizer mamlc__model_optimizer(void);

#endif
