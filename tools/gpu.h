/* --device cuda and the GPU stages of --emit (tools/gpu.c). */
#ifndef MAMLC_TOOLS_GPU_H
#define MAMLC_TOOLS_GPU_H

#include <stdio.h>

#include "../backend/gpu.h"
#include "../frontend/model.h"
#include "run.h"

/* Print the meta-step's PTX (ptx) or its NVPTX LLVM IR. */
bool gpu_emit(FILE *out, const IrModule *m, bool ptx, const BeGpuOptions *o, Diag *d);

/* mamlc FILE.mdl -o LIB.so --device cuda: lib_build's library, with the
 * meta-step's PTX embedded as `mamlc__gpu` (runtime/abi_cuda.c). */
bool gpu_lib_build(const Model *md, const IrModule *m, const char *path, const char *header, const BeOptions *be,
                   const BeGpuOptions *o, Diag *d);

/* mamlc run --device cuda: meta-train md on the GPU.  Returns the exit
 * status (1 after reporting through d: no driver, no GPU, a task source
 * the GPU run does not take). */
int gpu_run_model(const Model *md, IrModule *m, const BeGpuOptions *o, const RunOptions *r, Diag *d);

#endif
