/* Compiling a module in parts, one thread each (backend/parts.c), shared
 * by the JIT (jit.c) and the object emitter (emit.c). */
#ifndef MAMLC_BACKEND_PARTS_H
#define MAMLC_BACKEND_PARTS_H

#include "target.h"

typedef struct {
    int n;                                      /* parts */
    LLVMMemoryBufferRef object[BE_MAX_PARTS];   /* each part's object file */
    LLVMTargetMachineRef tm;                    /* part 0's target machine */
    double built, optimized;                    /* be_now() when the LLVM module
                                                   was built, and when every part
                                                   was optimised */
} BeParts;

/* m's LLVM module compiled to object files in parts: every function it
 * defines gets external linkage, so that the parts can call each other,
 * and a part, the largest functions first, each to the part with the
 * fewest instructions so far; one part per o->compile_threads (0: per
 * CPU), at most BE_MAX_PARTS.  Each part reads the module back from
 * bitcode into an LLVMContext of its own on a thread of its own, declares
 * the other parts' functions, optimises (be_optimize) with a target
 * machine for o, reloc and model, and emits an object file.  With a
 * prefix, m's functions are named prefix + their IR names first, and every
 * function the module defines gets hidden visibility.  Only names, linkage
 * and visibility differ from the module compiled whole, so the code
 * computes the same bits for any number of parts.  The caller disposes of
 * the objects and the target machine; false after reporting through d,
 * with nothing to dispose. */
bool be_compile_parts(const IrModule *m, const BeOptions *o, LLVMRelocMode reloc, LLVMCodeModel model,
                      const char *prefix, BeParts *out, Diag *d);

/* Dispose of what be_compile_parts gave (objects and target machine). */
void be_parts_free(BeParts *p);

#endif
