/* Emitting compiled modules: LLVM IR as text, and object files.  Both run
 * the module the JIT compiles (codegen.c) through the same optimisation
 * pipeline for the same CPU (target.c); object files come in the JIT's
 * parts (parts.c), so they compute the same bits as be_jit_compile's
 * machine code for the same options. */
#include "codegen.h"
#include "parts.h"

#include <errno.h>
#include <stdio.h>
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

int be_emit_objects(const IrModule *m, const char *base, const char *prefix, const BeOptions *o, Diag *d)
{
    BeParts parts;
    if (!be_compile_parts(m, o, LLVMRelocPIC, LLVMCodeModelDefault, prefix, &parts, d))
        return 0;
    int written = 0;
    for (int q = 0; q < parts.n; q++) {
        char path[4096];
        snprintf(path, sizeof path, "%s.%d.o", base, q);
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
