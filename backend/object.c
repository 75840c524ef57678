/* Object files: the same LLVM module the JIT compiles (codegen.c, then the
 * same optimisation pipeline for the same CPU), written as position-
 * independent machine code for linking into a shared library. */
#include "codegen.h"
#include "target.h"

#include <stdlib.h>
#include <string.h>

/* Give every public function of mod the prefix and hidden visibility, so
 * the library exports only what its ABI layer chooses to. */
static bool rename_public(LLVMModuleRef mod, const IrModule *m, const char *prefix, Diag *d) {
    for (int i = 0; i < m->nfunc; i++) {
        LLVMValueRef fn = LLVMGetNamedFunction(mod, m->func[i]->name);
        if (!fn) {
            diag_error(d, (SrcLoc){0}, "object emission: function '%s' is missing", m->func[i]->name);
            return false;
        }
        size_t n = strlen(prefix) + strlen(m->func[i]->name) + 1;
        char *name = malloc(n);
        if (!name)
            return false;
        snprintf(name, n, "%s%s", prefix, m->func[i]->name);
        LLVMSetValueName2(fn, name, strlen(name));
        LLVMSetVisibility(fn, LLVMHiddenVisibility);
        free(name);
    }
    return true;
}

bool be_emit_object(const IrModule *m, const char *path, const char *prefix, const BeOptions *o, Diag *d) {
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMModuleRef mod = be_codegen_module(m, ctx, d);
    LLVMTargetMachineRef tm = mod ? be_target_machine(o, LLVMRelocPIC, LLVMCodeModelDefault, d) : NULL;
    bool ok = tm && rename_public(mod, m, prefix, d) && be_optimize(mod, tm, o, d);
    char *msg = NULL;
    if (ok && LLVMTargetMachineEmitToFile(tm, mod, (char *)path, LLVMObjectFile, &msg)) {
        diag_error(d, (SrcLoc){path, 0, 0}, "cannot write the object file: %s", msg ? msg : "unknown error");
        ok = false;
    }
    LLVMDisposeMessage(msg);
    if (tm)
        LLVMDisposeTargetMachine(tm);
    if (mod)
        LLVMDisposeModule(mod);
    LLVMContextDispose(ctx);
    return ok;
}
