/* mamlc FILE.mdl -o LIB.so: a self-contained shared library with the
 * stable C ABI of docs/abi.md, and its header. */
#ifndef MAMLC_TOOLS_LIBRARY_H
#define MAMLC_TOOLS_LIBRARY_H

#include <stdio.h>

#include "../backend/backend.h"
#include "../frontend/model.h"

/* The model's description as JSON (mamlc_model_json()); malloc'd. */
char *lib_model_json(const Model *md);

/* The C header of the library (mamlc --emit=header). */
void lib_write_header(FILE *out, const Model *md);

/* Where -o LIB writes the header by default: LIB with its extension (if
 * any) replaced by .h; malloc'd. */
char *lib_header_path(const char *lib);

/* Build the library at `path` from md and its optimised functions m: the
 * functions as an object file, a generated description of the model, and
 * the ABI layer (libmamlc_abi_*.a beside the mamlc executable), linked by
 * the system's C compiler ($CC, else cc), then its header at `header`.
 * With gpu_source (--device cuda, tools/gpu.c), that C source (the
 * kernel) is appended to the description and the ABI's GPU half
 * (libmamlc_abi_cuda_*.a) linked too.  Returns false after reporting
 * through d. */
bool lib_build(const Model *md, const IrModule *m, const char *path, const char *header,
               const BeOptions *o, const char *gpu_source, Diag *d);

#endif
