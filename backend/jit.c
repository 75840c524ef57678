/* The JIT: every ORC call of the compiler is in this file.
 *
 * be_jit_compile compiles the module in parts, one per compile thread
 * (parts.c), for the host.  An LLJIT with part 0's target machine (so the
 * same CPU and features) links the parts' objects, resolving calls between
 * parts among them and C library symbols (expf, tanh, log1p, ...) in the
 * running process, and every function is looked up at once, so all
 * machine code exists when it returns.  Only linkage differs from one
 * module compiled whole, so the results are the same bits for any number
 * of threads. */
#include "parts.h"

#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct BeJit {
    LLVMOrcLLJITRef jit;
    Diag *d;                    /* where the JIT's own errors go while compiling; NULL after */
    int nfn;
    char **name;                /* the functions, as named in the IR module */
    BeFn *fn;                   /* their machine code */
    BeTimes times;
};

static const SrcLoc no_loc = {0};

void be_jit_free(BeJit *j)
{
    if (!j)
        return;
    if (j->jit) {
        LLVMErrorRef err = LLVMOrcDisposeLLJIT(j->jit);
        if (err) {
            /* No Diag here: the machine code is gone either way. */
            char *msg = LLVMGetErrorMessage(err);
            fprintf(stderr, "mamlc: error: releasing the JIT: %s\n", msg);
            LLVMDisposeErrorMessage(msg);
        }
    }
    for (int i = 0; i < j->nfn; i++)
        free(j->name[i]);
    free(j->name);
    free(j->fn);
    free(j);
}

/* Errors the JIT session reports on its own (a symbol that does not
 * resolve while materialising, say): through the Diag of the compilation
 * in progress, else to stderr. */
static void report_session_error(void *ctx, LLVMErrorRef err)
{
    BeJit *j = ctx;
    if (j->d) {
        be_llvm_error(j->d, err, "JIT session error");
        return;
    }
    char *msg = LLVMGetErrorMessage(err);
    fprintf(stderr, "mamlc: error: JIT session error: %s\n", msg);
    LLVMDisposeErrorMessage(msg);
}

/* An LLJIT generating code like tm (which it takes), resolving what the
 * module does not define in this process, reporting its errors for j. */
static LLVMOrcLLJITRef create_lljit(LLVMTargetMachineRef tm, BeJit *j, Diag *d)
{
    LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
    LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(builder, LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(tm));
    LLVMOrcLLJITRef jit = NULL;
    if (be_llvm_error(d, LLVMOrcCreateLLJIT(&jit, builder), "cannot create the JIT"))
        return NULL;
    LLVMOrcDefinitionGeneratorRef gen = NULL;
    LLVMErrorRef err = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, LLVMOrcLLJITGetGlobalPrefix(jit), NULL, NULL);
    if (be_llvm_error(d, err, "cannot make the process's symbols visible to the JIT")) {
        be_llvm_error(d, LLVMOrcDisposeLLJIT(jit), "releasing the JIT");
        return NULL;
    }
    LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(jit), gen);
    LLVMOrcExecutionSessionSetErrorReporter(LLVMOrcLLJITGetExecutionSession(jit), report_session_error, j);
    return jit;
}

BeJit *be_jit_compile(const IrModule *m, const BeOptions *o, Diag *d)
{
    o = be_options(o);
    BeJit *j = calloc(1, sizeof *j);
    if (j) {
        j->name = calloc((size_t)m->nfunc + 1, sizeof *j->name);
        j->fn = calloc((size_t)m->nfunc + 1, sizeof *j->fn);
    }
    if (!j || !j->name || !j->fn) {
        diag_error(d, no_loc, "out of memory starting the JIT");
        be_jit_free(j);
        return NULL;
    }

    double t0 = be_now();
    BeParts parts;
    if (!be_compile_parts(m, o, LLVMRelocDefault, LLVMCodeModelJITDefault, NULL, &parts, d)) {
        be_jit_free(j);
        return NULL;
    }
    j->times.codegen_s = parts.built - t0;
    j->times.optimize_s = parts.optimized - parts.built;
    double t2 = parts.optimized;
    /* part 0's target machine goes on to the LLJIT, which links for the same CPU */
    LLVMTargetMachineRef tm = parts.tm;
    parts.tm = NULL;
    j->d = d;
    j->jit = create_lljit(tm, j, d);
    bool ok = j->jit != NULL;
    for (int q = 0; ok && q < parts.n; q++) {
        LLVMErrorRef err = LLVMOrcLLJITAddObjectFile(j->jit, LLVMOrcLLJITGetMainJITDylib(j->jit), parts.object[q]);
        parts.object[q] = NULL;         /* the JIT owns it now, even on error */
        ok = !be_llvm_error(d, err, "cannot add machine code to the JIT");
    }
    be_parts_free(&parts);
    for (int i = 0; ok && i < m->nfunc; i++) {
        const char *name = m->func[i]->name;
        LLVMOrcExecutorAddress addr = 0;
        LLVMErrorRef err = LLVMOrcLLJITLookup(j->jit, &addr, name);
        if (be_llvm_error(d, err, "cannot compile a function")) {
            diag_note(d, no_loc, "while compiling '@%s'", name);
            ok = false;
            break;
        }
        j->name[i] = strdup(name);
        if (!j->name[i]) {
            diag_error(d, no_loc, "out of memory starting the JIT");
            ok = false;
            break;
        }
        j->fn[i] = (BeFn)(uintptr_t)addr;
        j->nfn = i + 1;
    }
    j->d = NULL;
    if (!ok) {
        be_jit_free(j);
        return NULL;
    }
    j->times.jit_s = be_now() - t2;
    return j;
}

BeFn be_jit_lookup(BeJit *j, const char *name)
{
    for (int i = 0; i < j->nfn; i++)
        if (!strcmp(j->name[i], name))
            return j->fn[i];
    return NULL;
}

const BeTimes *be_jit_times(const BeJit *j)
{
    return &j->times;
}
