/* Emitting compiled modules: LLVM IR as text, and object files.  Both run
 * the module the JIT compiles (codegen.c) through the same optimisation
 * pipeline for the same CPU (target.c), whole where the JIT compiles it in
 * parts, so an object file computes the same bits as be_jit_compile's
 * machine code for the same options. */
#include "codegen.h"
#include "target.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    LLVMContextRef ctx;
    LLVMModuleRef mod;
    LLVMTargetMachineRef tm;
} Emission;

static void release(Emission *e)
{
    if (e->tm)
        LLVMDisposeTargetMachine(e->tm);
    if (e->mod)
        LLVMDisposeModule(e->mod);
    LLVMContextDispose(e->ctx);
}

/* m's LLVM module and a target machine for o with relocation model reloc;
 * false after reporting (release e either way). */
static bool prepare(Emission *e, const IrModule *m, const BeOptions *o, LLVMRelocMode reloc, Diag *d)
{
    e->ctx = LLVMContextCreate();
    e->mod = be_codegen_module(m, e->ctx, d);
    e->tm = e->mod ? be_target_machine(o, reloc, LLVMCodeModelDefault, d) : NULL;
    return e->tm != NULL;
}

bool be_emit_llvm(FILE *out, const IrModule *m, const BeOptions *o, Diag *d)
{
    o = be_options(o);
    Emission e;
    bool ok = prepare(&e, m, o, LLVMRelocDefault, d) && be_optimize(e.mod, e.tm, o, d);
    if (ok) {
        char *text = LLVMPrintModuleToString(e.mod);
        ok = fputs(text, out) >= 0;
        LLVMDisposeMessage(text);
        if (!ok)
            diag_error(d, (SrcLoc){0}, "cannot write the LLVM IR");
    }
    release(&e);
    return ok;
}

/* Give every public function of mod the prefix and hidden visibility, so
 * the library exports only what its ABI layer chooses to. */
static bool rename_public(LLVMModuleRef mod, const IrModule *m, const char *prefix, Diag *d)
{
    for (int i = 0; i < m->nfunc; i++) {
        LLVMValueRef fn = LLVMGetNamedFunction(mod, m->func[i]->name);
        size_t n = strlen(prefix) + strlen(m->func[i]->name) + 1;
        char *name = fn ? malloc(n) : NULL;
        if (!name) {
            diag_error(d, (SrcLoc){0}, "object emission: cannot rename function '%s'", m->func[i]->name);
            return false;
        }
        snprintf(name, n, "%s%s", prefix, m->func[i]->name);
        LLVMSetValueName2(fn, name, strlen(name));
        LLVMSetVisibility(fn, LLVMHiddenVisibility);
        free(name);
    }
    return true;
}

bool be_emit_object(const IrModule *m, const char *path, const char *prefix, const BeOptions *o, Diag *d)
{
    o = be_options(o);
    Emission e;
    bool ok = prepare(&e, m, o, LLVMRelocPIC, d) && rename_public(e.mod, m, prefix, d) &&
              be_optimize(e.mod, e.tm, o, d);
    char *msg = NULL;
    if (ok && LLVMTargetMachineEmitToFile(e.tm, e.mod, (char *)path, LLVMObjectFile, &msg)) {
        diag_error(d, (SrcLoc){path, 0, 0}, "cannot write the object file: %s", msg ? msg : "unknown error");
        ok = false;
    }
    LLVMDisposeMessage(msg);
    release(&e);
    return ok;
}
