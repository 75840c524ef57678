/* IR to LLVM IR (backend/codegen.c), shared by the JIT and the emitters.
 * Nothing here touches a target machine or ORC. */
#ifndef MAMLC_BACKEND_CODEGEN_H
#define MAMLC_BACKEND_CODEGEN_H

#include <llvm-c/Core.h>

#include "backend.h"

/* An LLVM module in ctx with one public function per function of m, of
 * backend.h's calling convention, named as in m.  The module has no target
 * triple or data layout yet.  m is verified first.  Returns NULL after
 * reporting through d; the caller owns the module. */
LLVMModuleRef be_codegen_module(const IrModule *m, LLVMContextRef ctx, Diag *d);

#endif
