/* x^c for a constant c, as both targets emit it (cg_elementwise.c for the
 * CPU, gpu_elem.c for NVPTX): the cases that need no pow, and the target's
 * own pow for the rest. */
#ifndef MAMLC_BACKEND_POWC_H
#define MAMLC_BACKEND_POWC_H

#include <llvm-c/Core.h>

/* The target's general x^c (libm's pow on the CPU, the module's own on
 * the GPU), given back the target it was passed. */
typedef LLVMValueRef (*BePow)(void *target, LLVMValueRef x, double c);

/* x^c emitted at b, x of type t: repeated squaring for integer c up to 16;
 * for c = +-(k + 1/2) up to 16.5, |x|^k (sqrt(x) + 0), in double for f32
 * when k > 0 (then within an ulp of pow), with pow's answers at -0 (the + 0
 * and |x|) and at -inf; pow(target, x, c) otherwise. */
LLVMValueRef be_build_powc(LLVMBuilderRef b, LLVMTypeRef t, LLVMValueRef x, double c, BePow pow, void *target);

#endif
