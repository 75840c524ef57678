/* Emitting compiled modules: LLVM IR as text, and object files.  Both run
 * the module the JIT compiles (codegen.c) through the same optimisation
 * pipeline for the same CPU (target.c); object files come in the JIT's
 * parts (parts.c), so they compute the same bits as be_jit_compile's
 * machine code for the same options. */
#include "codegen.h"
#include "parts.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

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

void be_object_path(char *buf, size_t size, const char *base, int k)
{
    snprintf(buf, size, "%s.%d.o", base, k);
}

int be_emit_objects(const IrModule *m, const char *base, const char *prefix, const BeOptions *o, Diag *d)
{
    BeParts parts;
    if (!be_compile_parts(m, o, LLVMRelocPIC, LLVMCodeModelDefault, prefix, &parts, d))
        return 0;
    int written = 0;
    for (int q = 0; q < parts.n; q++) {
        char path[4096];
        be_object_path(path, sizeof path, base, q);
        size_t n = LLVMGetBufferSize(parts.object[q]);
        FILE *f = fopen(path, "wb");
        bool ok = f && fwrite(LLVMGetBufferStart(parts.object[q]), 1, n, f) == n;
        if (f && fclose(f) != 0)
            ok = false;
        if (!ok) {
            diag_error(d, (SrcLoc){path, 0, 0}, "cannot write the object file: %s", strerror(errno));
            break;
        }
        written++;
    }
    int n = parts.n;
    be_parts_free(&parts);
    return written == n ? n : 0;
}
