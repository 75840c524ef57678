/* Emitting compiled modules as text: LLVM IR. */
#include "codegen.h"
#include "target.h"

bool be_emit_llvm(FILE *out, const IrModule *m, const BeOptions *o, Diag *d)
{
    o = be_options(o);
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMModuleRef mod = be_codegen_module(m, ctx, d);
    LLVMTargetMachineRef tm = mod ? be_target_machine(o, LLVMRelocDefault, LLVMCodeModelDefault, d) : NULL;
    bool ok = tm && be_optimize(mod, tm, o, d);
    if (ok) {
        char *text = LLVMPrintModuleToString(mod);
        ok = fputs(text, out) >= 0;
        LLVMDisposeMessage(text);
        if (!ok)
            diag_error(d, (SrcLoc){0}, "cannot write the LLVM IR");
    }
    if (tm)
        LLVMDisposeTargetMachine(tm);
    if (mod)
        LLVMDisposeModule(mod);
    LLVMContextDispose(ctx);
    return ok;
}
